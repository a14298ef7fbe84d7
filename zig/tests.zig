test {
    _ = @import("reactor.zig");
    _ = @import("memory.zig");
    _ = @import("probe.zig");
    _ = @import("smp.zig");
    _ = @import("net.zig");
    _ = @import("file.zig");
    _ = @import("exports.zig");
}
