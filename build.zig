const std = @import("std");
const builtin = @import("builtin");

/// The one Zig version Shoal builds with, shared with scripts/setup.sh.
const required_zig = std.mem.trim(u8, @embedFile("ZIG_VERSION"), " \n\r\t");

comptime {
    if (!std.mem.eql(u8, builtin.zig_version_string, required_zig)) {
        @compileError("Shoal needs Zig " ++ required_zig ++ ", but this is Zig " ++
            builtin.zig_version_string ++ ". Run `scripts/setup.sh` (installs ziglang==" ++
            required_zig ++ " from PyPI into .venv) and build with `scripts/zig build`.");
    }
}

pub fn build(b: *std.Build) void {
    // Baseline CPU by default: the library ships prebuilt in the npm package.
    const target = b.standardTargetOptions(.{ .default_target = .{ .cpu_model = .baseline } });
    // The library is always built optimized unless asked otherwise; tests run in Debug.
    const optimize = b.option(std.builtin.OptimizeMode, "optimize", "Optimization mode (default ReleaseFast)") orelse .ReleaseFast;

    const root = b.createModule(.{
        .root_source_file = b.path("zig/exports.zig"),
        .target = target,
        .optimize = optimize,
        .link_libc = false,
        .strip = optimize != .Debug,
    });
    const lib = b.addLibrary(.{ .name = "shoal", .linkage = .dynamic, .root_module = root });
    b.installArtifact(lib);

    const test_module = b.createModule(.{
        .root_source_file = b.path("zig/tests.zig"),
        .target = target,
        .optimize = .Debug,
    });
    const tests = b.addTest(.{ .root_module = test_module });
    const run_tests = b.addRunArtifact(tests);
    const test_step = b.step("test", "Run the Zig unit tests");
    test_step.dependOn(&run_tests.step);
}
