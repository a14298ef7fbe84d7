//! Native memory that the kernel touches and JS views without copying: page-aligned
//! anonymous mappings. JS carves fixed-size, aligned buffers out of one region.
const std = @import("std");
const linux = std.os.linux;

pub const page_size: usize = 4096;

/// Maps `size_bytes` (rounded up to pages) of zeroed, page-aligned memory.
/// Returns the address, or a negative errno.
pub fn map(size_bytes: usize) isize {
    if (size_bytes == 0) return -@as(isize, @intFromEnum(linux.E.INVAL));
    const len = std.mem.alignForward(usize, size_bytes, page_size);
    const rc = linux.mmap(null, len, linux.PROT.READ | linux.PROT.WRITE, .{ .TYPE = .PRIVATE, .ANONYMOUS = true }, -1, 0);
    switch (linux.E.init(rc)) {
        .SUCCESS => return @intCast(rc),
        else => |e| return -@as(isize, @intFromEnum(e)),
    }
}

pub fn unmap(address: usize, size_bytes: usize) i32 {
    const len = std.mem.alignForward(usize, size_bytes, page_size);
    const rc = linux.munmap(@ptrFromInt(address), len);
    return switch (linux.E.init(rc)) {
        .SUCCESS => 0,
        else => |e| -@as(i32, @intFromEnum(e)),
    };
}

/// Fills `len` bytes at `address` with `byte` (used to poison recycled buffers).
pub fn fill(address: usize, len: usize, byte: u8) void {
    const p: [*]u8 = @ptrFromInt(address);
    @memset(p[0..len], byte);
}

test "map gives zeroed page-aligned memory" {
    const a = map(10_000);
    try std.testing.expect(a > 0);
    const addr: usize = @intCast(a);
    try std.testing.expectEqual(@as(usize, 0), addr % page_size);
    const p: [*]u8 = @ptrFromInt(addr);
    try std.testing.expectEqual(@as(u8, 0), p[9_999]);
    fill(addr, 16, 0xAB);
    try std.testing.expectEqual(@as(u8, 0xAB), p[15]);
    try std.testing.expectEqual(@as(i32, 0), unmap(addr, 10_000));
    try std.testing.expect(map(0) < 0);
}
