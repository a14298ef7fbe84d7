//! Start-up checks: is io_uring usable here, and does the kernel have every operation and
//! feature Shoal uses? The result names the first problem so JS can explain the fix.
const std = @import("std");
const linux = std.os.linux;

pub const Result = extern struct {
    /// 0 when usable; otherwise the errno of io_uring_setup (ENOSYS, EPERM, ENOMEM, ...).
    setup_errno: i32 = 0,
    /// The first required IORING_OP the kernel lacks, or -1.
    missing_op: i32 = -1,
    /// 1 when IORING_FEAT_EXT_ARG (kernel-side wait timeouts) is missing.
    missing_ext_arg: i32 = 0,
    /// Contents of /proc/sys/kernel/io_uring_disabled, or -1 if unreadable.
    disabled_sysctl: i32 = -1,
    /// RLIMIT_MEMLOCK soft limit in KiB (-1 = unlimited).
    memlock_kib: i64 = 0,
    features: u32 = 0,
    _reserved: u32 = 0,
};

pub const required_ops = [_]linux.IORING_OP{
    .NOP, .TIMEOUT, .TIMEOUT_REMOVE, .READ, .WRITE, .READV, .WRITEV, .POLL_ADD, .ASYNC_CANCEL, .CLOSE,
};

fn read_sysctl() i32 {
    const path = "/proc/sys/kernel/io_uring_disabled";
    const fd = linux.open(path, .{ .ACCMODE = .RDONLY, .CLOEXEC = true }, 0);
    if (linux.E.init(fd) != .SUCCESS) return -1;
    defer _ = linux.close(@intCast(fd));
    var buf: [8]u8 = undefined;
    const n = linux.read(@intCast(fd), &buf, buf.len);
    if (linux.E.init(n) != .SUCCESS or n == 0) return -1;
    return std.fmt.parseInt(i32, std.mem.trim(u8, buf[0..n], " \n"), 10) catch -1;
}

pub fn run(extra_ops: []const u8) Result {
    var result: Result = .{};
    result.disabled_sysctl = read_sysctl();
    var lim: linux.rlimit = undefined;
    if (linux.E.init(linux.getrlimit(.MEMLOCK, &lim)) == .SUCCESS) {
        result.memlock_kib = if (lim.cur == linux.RLIM.INFINITY) -1 else @intCast(lim.cur / 1024);
    }
    var params = std.mem.zeroes(linux.io_uring_params);
    const fd_rc = linux.io_uring_setup(2, &params);
    switch (linux.E.init(fd_rc)) {
        .SUCCESS => {},
        else => |e| {
            result.setup_errno = @intCast(@intFromEnum(e));
            return result;
        },
    }
    const fd: i32 = @intCast(fd_rc);
    defer _ = linux.close(fd);
    result.features = params.features;
    if (params.features & linux.IORING_FEAT_EXT_ARG == 0) result.missing_ext_arg = 1;
    var probe = std.mem.zeroInit(linux.io_uring_probe, .{});
    const rc = linux.io_uring_register(fd, .REGISTER_PROBE, &probe, probe.ops.len);
    if (linux.E.init(rc) != .SUCCESS) {
        result.missing_op = @intFromEnum(linux.IORING_OP.NOP);
        return result;
    }
    for (required_ops) |op| {
        if (!probe.is_supported(op)) {
            result.missing_op = @intFromEnum(op);
            return result;
        }
    }
    for (extra_ops) |op| {
        if (!probe.is_supported(@enumFromInt(op))) {
            result.missing_op = op;
            return result;
        }
    }
    return result;
}

test "probe succeeds on the build machine" {
    const r = run(&.{});
    try std.testing.expectEqual(@as(i32, 0), r.setup_errno);
    try std.testing.expectEqual(@as(i32, -1), r.missing_op);
}
