//! The C ABI that bun:ffi loads. It only converts and forwards; logic lives in the modules.
const std = @import("std");
const reactor = @import("reactor.zig");
const memory = @import("memory.zig");
const probe = @import("probe.zig");

const Reactor = reactor.Reactor;

/// Bumped whenever an exported signature or shared struct layout changes.
export fn shoal_abi_version() u32 {
    return 8;
}

export fn shoal_probe(out_or_null: ?*probe.Result, extra_ops: ?[*]const u8, extra_len: u32) void {
    const out = out_or_null orelse return;
    const ops: []const u8 = if (extra_ops) |p| p[0..extra_len] else &.{};
    out.* = probe.run(ops);
}

/// Creates a reactor; on failure returns null and stores a reason code in `out_error`:
/// 1 unsupported, 2 permission, 3 memory (memlock), 4 fd limit, 5 invalid, 6 no EXT_ARG, 7 eventfd, 8 OOM.
export fn shoal_reactor_create(sq_entries: u32, cq_entries: u32, out_error_or_null: ?*i32) ?*Reactor {
    var ignored: i32 = 0;
    const out_error = out_error_or_null orelse &ignored;
    out_error.* = 0;
    if (sq_entries == 0 or sq_entries > 32768 or !std.math.isPowerOfTwo(sq_entries) or cq_entries < sq_entries) {
        out_error.* = 5;
        return null;
    }
    return Reactor.create(@intCast(sq_entries), cq_entries) catch |err| {
        out_error.* = switch (err) {
            error.IoUringUnsupported => 1,
            error.IoUringPermission => 2,
            error.IoUringMemory => 3,
            error.IoUringFdLimit => 4,
            error.IoUringInvalid => 5,
            error.IoUringNoExtArg => 6,
            error.EventFd => 7,
            error.OutOfMemory => 8,
        };
        return null;
    };
}

// Every export that takes a reactor checks the handle first (Reactor.live): a null, stray or
// destroyed one answers -EBADF (or null, or nothing) instead of touching unmapped memory. The
// handle arrives as an integer (the same register as a pointer): a pointer type would let the
// compiler assume it is aligned, which a stray one need not be.

fn ebadf() i32 {
    return -@as(i32, @intFromEnum(std.os.linux.E.BADF));
}

/// Destroying a handle that names no live reactor (twice, or a stray one) does nothing.
export fn shoal_reactor_destroy(handle: usize) void {
    const r = Reactor.live(handle) orelse return;
    r.destroy();
}

export fn shoal_reactor_ops(handle: usize) ?[*]reactor.Op {
    const r = Reactor.live(handle) orelse return null;
    return r.ops.ptr;
}

export fn shoal_reactor_completions(handle: usize) ?[*]reactor.Completion {
    const r = Reactor.live(handle) orelse return null;
    return r.out.ptr;
}

export fn shoal_reactor_counters(handle: usize) ?*reactor.Counters {
    const r = Reactor.live(handle) orelse return null;
    return &r.counters;
}

export fn shoal_reactor_info(handle: usize) ?*reactor.Info {
    const r = Reactor.live(handle) orelse return null;
    return &r.info;
}

export fn shoal_reactor_turn(handle: usize, submit_count: u32, wait_us: u32, now_us: f64) i32 {
    const r = Reactor.live(handle) orelse return ebadf();
    if (submit_count > r.ops.len) return -@as(i32, @intFromEnum(std.os.linux.E.INVAL));
    return r.turn(submit_count, wait_us, now_us);
}

export fn shoal_reactor_submit(handle: usize, count: u32) i32 {
    const r = Reactor.live(handle) orelse return ebadf();
    if (count > r.ops.len) return -@as(i32, @intFromEnum(std.os.linux.E.INVAL));
    return r.submit_now(count);
}

export fn shoal_reactor_msg_wake(handle: usize, target_ring: i32, target_eventfd: i32) i32 {
    const r = Reactor.live(handle) orelse return ebadf();
    if (target_ring < 0 or target_eventfd < 0 or target_eventfd >= (1 << 24)) return -@as(i32, @intFromEnum(std.os.linux.E.INVAL));
    return r.msg_wake(target_ring, target_eventfd);
}

/// Wakes the reactor whose eventfd is `eventfd`: -EINVAL, writing nothing, for a number that is
/// no live reactor's eventfd (the 8-byte counter went into whatever file it named).
export fn shoal_eventfd_wake(eventfd: i32) i32 {
    if (!Reactor.owns_eventfd(eventfd)) return -@as(i32, @intFromEnum(std.os.linux.E.INVAL));
    return Reactor.wake(eventfd);
}

export fn shoal_bench_nops(handle: usize, total: u32, batch: u32) i32 {
    const r = Reactor.live(handle) orelse return ebadf();
    if (batch == 0 or batch > r.ops.len) return -@as(i32, @intFromEnum(std.os.linux.E.INVAL));
    return reactor.bench_nops(r, total, batch);
}

export fn shoal_mem_map(size_bytes: usize) isize {
    return memory.map(size_bytes);
}

export fn shoal_mem_map_huge(size_bytes: usize) isize {
    return memory.mapHuge(size_bytes);
}

export fn shoal_mem_unmap(address: usize, size_bytes: usize) i32 {
    return memory.unmap(address, size_bytes);
}

export fn shoal_mem_fill(address: usize, len: usize, byte: u8) void {
    memory.fill(address, len, byte);
}

/// dst[dst_off..][0..len] = src[src_off..][0..len] (the ranges may overlap). JS passes
/// Uint8Arrays (bun:ffi hands over their data pointers) and checks the ranges itself: a
/// 100-byte copy costs ~9 ns this way against ~45 ns in a JS loop.
export fn shoal_copy(dst: [*]u8, dst_off: u32, src: [*]const u8, src_off: u32, len: u32) void {
    memory.copy(dst + dst_off, src + src_off, len);
}

/// RLIMIT_NOFILE's soft (`hard` 0) or hard (`hard` 1) limit, or a negative errno. No limit
/// (RLIM_INFINITY, which Linux never gives NOFILE: it stops at fs.nr_open) reads maxInt(i64).
export fn shoal_nofile_limit(hard: u32) i64 {
    var lim: std.os.linux.rlimit = undefined;
    const rc = std.os.linux.getrlimit(.NOFILE, &lim);
    switch (std.os.linux.E.init(rc)) {
        .SUCCESS => {},
        else => |e| return -@as(i64, @intFromEnum(e)),
    }
    const value = if (hard != 0) lim.max else lim.cur;
    return @intCast(@min(value, @as(u64, std.math.maxInt(i64))));
}

/// Sets RLIMIT_NOFILE (process-wide): 0, or a negative errno (EPERM: a hard limit raised without
/// CAP_SYS_RESOURCE or past fs.nr_open; EINVAL: soft above hard).
export fn shoal_set_nofile_limit(soft: u64, hard: u64) i32 {
    const lim: std.os.linux.rlimit = .{ .cur = soft, .max = hard };
    const rc = std.os.linux.setrlimit(.NOFILE, &lim);
    return -@as(i32, @intFromEnum(std.os.linux.E.init(rc)));
}

comptime {
    // Each layer's exports live in its own file; importing them here exports them.
    _ = @import("exports_smp.zig");
    _ = @import("exports_fs.zig");
    _ = @import("exports_net.zig");
}

test "reactor exports given a null, stray or destroyed handle answer -EBADF (or null), never touch it" {
    const linux = std.os.linux;
    const ebadf_rc = -@as(i32, @intFromEnum(linux.E.BADF));
    // No error slot: the create still works (it wrote through a null pointer).
    const r = @intFromPtr(shoal_reactor_create(8, 16, null) orelse return error.CreateFailed);
    try std.testing.expect(shoal_reactor_ops(r) != null);
    try std.testing.expectEqual(@as(i32, 0), shoal_reactor_turn(r, 0, 0, 0));
    shoal_reactor_destroy(r);
    // The same handle after destroy: its memory was unmapped, every use a SIGSEGV.
    try std.testing.expectEqual(ebadf_rc, shoal_reactor_turn(r, 0, 0, 0));
    try std.testing.expectEqual(ebadf_rc, shoal_reactor_submit(r, 1));
    try std.testing.expectEqual(ebadf_rc, shoal_reactor_msg_wake(r, 0, 0));
    try std.testing.expectEqual(ebadf_rc, shoal_bench_nops(r, 1, 1));
    try std.testing.expect(shoal_reactor_ops(r) == null);
    try std.testing.expect(shoal_reactor_completions(r) == null);
    try std.testing.expect(shoal_reactor_counters(r) == null);
    try std.testing.expect(shoal_reactor_info(r) == null);
    shoal_reactor_destroy(r); // twice: nothing
    // Null, and pointers that name no reactor (a stack address, one inside a live reactor).
    try std.testing.expectEqual(ebadf_rc, shoal_reactor_turn(0, 0, 0, 0));
    shoal_reactor_destroy(0);
    var not_a_reactor: [4096]u8 align(64) = undefined;
    try std.testing.expectEqual(ebadf_rc, shoal_reactor_turn(@intFromPtr(&not_a_reactor), 0, 0, 0));
    const other = @intFromPtr(shoal_reactor_create(8, 16, null) orelse return error.CreateFailed);
    defer shoal_reactor_destroy(other);
    try std.testing.expectEqual(ebadf_rc, shoal_reactor_turn(other + 64, 0, 0, 0));
    try std.testing.expectEqual(ebadf_rc, shoal_reactor_turn(other + 1, 0, 0, 0));
    try std.testing.expectEqual(@as(i32, 0), shoal_reactor_turn(other, 0, 0, 0));
    // The destroyed reactor's slot is not the new one's: the stale handle stays dead.
    try std.testing.expect(other != r);
    try std.testing.expectEqual(ebadf_rc, shoal_reactor_turn(r, 0, 0, 0));
    // No result slot for the probe: nothing written, no crash.
    shoal_probe(null, null, 0);
}

test "shoal_eventfd_wake writes only a live reactor's eventfd: a pipe, or a destroyed reactor's number, gets nothing" {
    const linux = std.os.linux;
    const einval = -@as(i32, @intFromEnum(linux.E.INVAL));
    var fds: [2]i32 = undefined;
    try std.testing.expectEqual(@as(usize, 0), linux.pipe2(&fds, .{ .CLOEXEC = true, .NONBLOCK = true }));
    defer _ = linux.close(fds[0]);
    defer _ = linux.close(fds[1]);
    // Not an eventfd: refused, and the pipe stays empty (it used to receive the 8-byte counter).
    try std.testing.expectEqual(einval, shoal_eventfd_wake(fds[1]));
    try std.testing.expectEqual(einval, shoal_eventfd_wake(-1));
    var byte: [16]u8 = undefined;
    try std.testing.expectEqual(linux.E.AGAIN, linux.E.init(linux.read(fds[0], &byte, byte.len)));
    // A live reactor's eventfd is woken.
    const h = @intFromPtr(shoal_reactor_create(8, 16, null) orelse return error.CreateFailed);
    const efd = shoal_reactor_info(h).?.eventfd;
    try std.testing.expectEqual(@as(i32, 0), shoal_eventfd_wake(efd));
    shoal_reactor_destroy(h);
    // Once it is destroyed its number is nobody's eventfd (it may be reused by any file).
    try std.testing.expectEqual(einval, shoal_eventfd_wake(efd));
}

test "shoal_nofile_limit reads what getrlimit reads; shoal_set_nofile_limit sets it and refuses soft above hard" {
    const linux = std.os.linux;
    var lim: linux.rlimit = undefined;
    try std.testing.expectEqual(@as(usize, 0), linux.getrlimit(.NOFILE, &lim));
    try std.testing.expectEqual(@as(i64, @intCast(lim.cur)), shoal_nofile_limit(0));
    try std.testing.expectEqual(@as(i64, @intCast(lim.max)), shoal_nofile_limit(1));
    try std.testing.expectEqual(-@as(i32, @intFromEnum(linux.E.INVAL)), shoal_set_nofile_limit(lim.max + 1, lim.max));
    defer _ = linux.setrlimit(.NOFILE, &lim);
    // Lowering the soft limit needs no privilege, and raising it back up to the hard one neither.
    try std.testing.expectEqual(@as(i32, 0), shoal_set_nofile_limit(lim.cur - 1, lim.max));
    try std.testing.expectEqual(@as(i64, @intCast(lim.cur - 1)), shoal_nofile_limit(0));
    try std.testing.expectEqual(@as(i32, 0), shoal_set_nofile_limit(lim.max, lim.max));
    try std.testing.expectEqual(@as(i64, @intCast(lim.max)), shoal_nofile_limit(0));
}
