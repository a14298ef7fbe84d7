//! Native memory that the kernel touches and JS views without copying: page-aligned
//! anonymous mappings. JS carves fixed-size, aligned buffers out of one region.
const std = @import("std");
const builtin = @import("builtin");
const linux = std.os.linux;
const assert = std.debug.assert;

pub const page_size: usize = 4096;

/// Maps `size_bytes` (rounded up to pages) of zeroed, page-aligned memory.
/// Returns the address, or a negative errno.
pub fn map(size_bytes: usize) isize {
    if (size_bytes == 0) return -@as(isize, @intFromEnum(linux.E.INVAL));
    const len = roundUp(size_bytes, page_size) orelse return -@as(isize, @intFromEnum(linux.E.NOMEM));
    const rc = linux.mmap(null, len, linux.PROT.READ | linux.PROT.WRITE, .{ .TYPE = .PRIVATE, .ANONYMOUS = true }, -1, 0);
    switch (linux.E.init(rc)) {
        .SUCCESS => return @intCast(rc),
        else => |e| return -@as(isize, @intFromEnum(e)),
    }
}

/// Size of a transparent huge page on x86-64 (one PMD).
pub const huge_page_size: usize = 2 * 1024 * 1024;

/// Maps `size_bytes` rounded up to whole 2 MiB huge pages and asks the kernel to back it with
/// transparent huge pages (MADV_HUGEPAGE). Large random-access tables (a hash table, an item
/// arena) then cost one TLB entry per 2 MiB instead of 512. The advice is best effort: with THP
/// set to "never" the mapping keeps 4 KiB pages. The mapping starts on a 2 MiB boundary (a huge
/// page needs one; kernels before 6.7 align only to 4 KiB, so one huge page more is reserved and
/// the unaligned ends are given back). Returns the address, or a negative errno.
/// Free it with `unmap(address, mappedLength(size_bytes, true))` (JS: NativeBuffer.mappedLength).
pub fn mapHuge(size_bytes: usize) isize {
    if (size_bytes == 0) return -@as(isize, @intFromEnum(linux.E.INVAL));
    const len = roundUp(size_bytes, huge_page_size) orelse return -@as(isize, @intFromEnum(linux.E.NOMEM));
    const reserve = std.math.add(usize, len, huge_page_size) catch return -@as(isize, @intFromEnum(linux.E.NOMEM));
    const rc = linux.mmap(null, reserve, linux.PROT.READ | linux.PROT.WRITE, .{ .TYPE = .PRIVATE, .ANONYMOUS = true }, -1, 0);
    switch (linux.E.init(rc)) {
        .SUCCESS => {},
        else => |e| return -@as(isize, @intFromEnum(e)),
    }
    const start = roundUp(rc, huge_page_size).?; // below reserve's end: cannot overflow
    const head = start - rc;
    const tail = reserve - head - len;
    if (head > 0) _ = linux.munmap(@ptrFromInt(rc), head);
    if (tail > 0) _ = linux.munmap(@ptrFromInt(start + len), tail);
    _ = linux.madvise(@ptrFromInt(start), len, linux.MADV.HUGEPAGE);
    return @intCast(start);
}

/// Length actually mapped for a request of `size_bytes` (huge: whole 2 MiB pages); 0 for a
/// size no mapping can have (its rounding would pass 2^64).
pub fn mappedLength(size_bytes: usize, huge: bool) usize {
    return roundUp(size_bytes, if (huge) huge_page_size else page_size) orelse 0;
}

/// `size_bytes` rounded up to a multiple of `alignment`, or null when that passes 2^64 (JS hands
/// over any u64: std.mem.alignForward overflowed there, a panic in Debug and a wrap to 0 in
/// ReleaseFast).
fn roundUp(size_bytes: usize, alignment: usize) ?usize {
    assert(std.math.isPowerOfTwo(alignment));
    const sum = std.math.add(usize, size_bytes, alignment - 1) catch return null;
    return sum & ~(alignment - 1);
}

/// Unmaps `size_bytes` (rounded up to pages) at `address`. 0 or a negative errno; a null or
/// unaligned address, or a length that no mapping can have, is refused and unmaps nothing.
pub fn unmap(address: usize, size_bytes: usize) i32 {
    if (address == 0 or address % page_size != 0) return -@as(i32, @intFromEnum(linux.E.INVAL));
    const len = roundUp(size_bytes, page_size) orelse return -@as(i32, @intFromEnum(linux.E.INVAL));
    const rc = linux.munmap(@ptrFromInt(address), len);
    return switch (linux.E.init(rc)) {
        .SUCCESS => 0,
        else => |e| -@as(i32, @intFromEnum(e)),
    };
}

/// Fills `len` bytes at `address` with `byte` (used to poison recycled buffers). An empty
/// fill, or one at the null address, does nothing (`@ptrFromInt(0)` is illegal).
pub fn fill(address: usize, len: usize, byte: u8) void {
    if (len == 0 or address == 0) return;
    const p: [*]u8 = @ptrFromInt(address);
    @memset(p[0..len], byte);
}

/// From this length, a copy that may run forwards uses `rep movsb`: with ERMS/FSRM (every x86-64
/// server core since Ivy Bridge) the CPU moves whole cache lines, about twice as fast as
/// compiler-rt's 16-byte loop that @memmove compiles to without libc (measured: 60 KB in 1.5 µs
/// against 3.0 µs, 4 KiB in 0.06 against 0.23 µs). Shorter copies keep @memmove (rep movsb has a
/// start-up cost of some tens of cycles).
const rep_movsb_min = 512;

/// dst[0..len] = src[0..len]; the ranges may overlap.
pub fn copy(dst: [*]u8, src: [*]const u8, len: usize) void {
    // Forwards is safe unless dst lies inside (src, src + len): (dst - src) mod 2^64 >= len.
    const delta = @intFromPtr(dst) -% @intFromPtr(src);
    // rep movsb crawls when dst is a few bytes ahead of src modulo 4 KiB (its loads wait on
    // the stores just made to the same 4 KiB offsets): 256 KiB took 90 µs with dst - src = 1..8
    // (mod 4096) against 6.7 µs at 0, where the 16-byte loop takes 13 µs. Such copies keep the loop.
    const aliased = delta & 4095 != 0 and delta & 4095 < 64;
    if (builtin.cpu.arch == .x86_64 and len >= rep_movsb_min and delta >= len and !aliased) {
        var d = dst;
        var s = src;
        var n = len;
        asm volatile ("rep movsb"
            : [d] "+{rdi}" (d),
              [s] "+{rsi}" (s),
              [n] "+{rcx}" (n),
            :
            : .{ .memory = true });
        return;
    }
    @memmove(dst[0..len], src[0..len]);
}

test "copy: every length and overlap gives what a byte-by-byte copy gives" {
    var buf: [8192]u8 = undefined;
    var want: [8192]u8 = undefined;
    const lens = [_]usize{ 0, 1, 15, 511, 512, 513, 1000, 2048 };
    const offsets = [_]isize{ -700, -513, -1, 0, 1, 7, 512, 700, 1500 };
    for (lens) |len| {
        for (offsets) |delta| {
            for (&buf, 0..) |*b, i| b.* = @truncate(i *% 31 +% 7);
            want = buf;
            const src: usize = 1200;
            const dst: usize = @intCast(@as(isize, @intCast(src)) + delta);
            // The reference: a temporary copy of the source, then the write.
            var tmp: [8192]u8 = undefined;
            @memcpy(tmp[0..len], want[src..][0..len]);
            @memcpy(want[dst..][0..len], tmp[0..len]);
            copy(buf[dst..].ptr, buf[src..].ptr, len);
            try std.testing.expectEqualSlices(u8, &want, &buf);
        }
    }
}

test "mapHuge rounds to whole huge pages, starts on a huge-page boundary and is writable" {
    // A 4 KiB mapping first, so that a kernel that does not align large mappings itself (before
    // 6.7) is likely to place the next one off a 2 MiB boundary.
    const small = map(page_size);
    try std.testing.expect(small > 0);
    defer _ = unmap(@intCast(small), page_size);
    const a = mapHuge(3 * 1024 * 1024);
    try std.testing.expect(a > 0);
    const addr: usize = @intCast(a);
    try std.testing.expectEqual(@as(usize, 0), addr % huge_page_size);
    const p: [*]u8 = @ptrFromInt(addr);
    p[4 * 1024 * 1024 - 1] = 7; // the rounded-up tail belongs to the mapping
    try std.testing.expectEqual(@as(u8, 0), p[0]);
    try std.testing.expectEqual(@as(usize, 4 * 1024 * 1024), mappedLength(3 * 1024 * 1024, true));
    try std.testing.expectEqual(@as(i32, 0), unmap(addr, mappedLength(3 * 1024 * 1024, true)));
    try std.testing.expect(mapHuge(0) < 0);
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

test "sizes whose page rounding passes 2^64 are refused, not wrapped (a panic in Debug)" {
    const max = std.math.maxInt(usize);
    const nomem = -@as(isize, @intFromEnum(linux.E.NOMEM));
    try std.testing.expectEqual(nomem, map(max));
    try std.testing.expectEqual(nomem, map(max - page_size + 2));
    try std.testing.expectEqual(nomem, mapHuge(max));
    try std.testing.expectEqual(nomem, mapHuge(max - huge_page_size + 2));
    try std.testing.expectEqual(@as(usize, 0), mappedLength(max, true));
    try std.testing.expectEqual(@as(usize, 0), mappedLength(max, false));
    // The largest sizes that still round are refused by the kernel, not by an overflow.
    try std.testing.expect(map(max - page_size + 1) < 0);
    try std.testing.expect(mapHuge(max - huge_page_size + 1) < 0);
    // An unmap of an impossible length (or at address 0) refuses and leaves the mapping alone.
    const a = map(page_size);
    try std.testing.expect(a > 0);
    const addr: usize = @intCast(a);
    const einval = -@as(i32, @intFromEnum(linux.E.INVAL));
    try std.testing.expectEqual(einval, unmap(addr, max));
    try std.testing.expectEqual(einval, unmap(0, page_size));
    try std.testing.expectEqual(einval, unmap(addr + 1, page_size));
    const p: [*]u8 = @ptrFromInt(addr);
    p[0] = 1; // still mapped
    try std.testing.expectEqual(@as(i32, 0), unmap(addr, page_size));
    fill(0, 0, 0xAB); // an empty fill at address 0: nothing, not an illegal null pointer
    fill(0, 16, 0xAB);
}
