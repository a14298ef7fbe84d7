//! SMP support in the native layer: CPU affinity of shard threads. Each shard runs in its
//! own Bun Worker (an OS thread) and pins itself by calling `pin_current_thread` from that
//! thread; `sched_setaffinity(0, ...)` acts on the calling thread only.
//! Raw syscalls, no std.Thread (see DESIGN.md, "The boundary between TS and Zig").
const std = @import("std");
const linux = std.os.linux;
const assert = std.debug.assert;

/// CPUs a mask can describe (the kernel's default CPU_SETSIZE).
pub const max_cpus: u32 = 1024;
/// Bytes in an affinity mask: bit `c % 8` of byte `c / 8` is CPU `c`.
pub const mask_bytes: u32 = max_cpus / 8;

const Mask = [mask_bytes / @sizeOf(usize)]usize;

comptime {
    assert(@sizeOf(Mask) == mask_bytes);
}

fn errno(rc: usize) i32 {
    return -@as(i32, @intCast(@intFromEnum(linux.E.init(rc))));
}

fn einval() i32 {
    return -@as(i32, @intFromEnum(linux.E.INVAL));
}

/// Pins the calling thread to `cpu`. Returns 0, or a negative errno (EINVAL for a CPU that
/// does not exist or lies outside the cgroup's cpuset).
pub fn pin_current_thread(cpu: u32) i32 {
    if (cpu >= max_cpus) return einval();
    var mask: Mask = @splat(0);
    mask[cpu / @bitSizeOf(usize)] |= @as(usize, 1) << @intCast(cpu % @bitSizeOf(usize));
    return set_mask(&mask);
}

fn set_mask(mask: *const Mask) i32 {
    const rc = linux.syscall3(.sched_setaffinity, 0, @sizeOf(Mask), @intFromPtr(mask));
    if (linux.E.init(rc) != .SUCCESS) return errno(rc);
    return 0;
}

/// Copies the calling thread's affinity mask into `out` (zero-filled past what the kernel
/// wrote). Returns the number of CPUs in it, or a negative errno.
pub fn get_affinity(out: *[mask_bytes]u8) i32 {
    var mask: Mask = @splat(0);
    const rc = linux.syscall3(.sched_getaffinity, 0, @sizeOf(Mask), @intFromPtr(&mask));
    if (linux.E.init(rc) != .SUCCESS) return errno(rc);
    out.* = @bitCast(mask);
    var count: i32 = 0;
    for (mask) |word| count += @popCount(word);
    return count;
}

/// Replaces the calling thread's affinity mask with `mask`. Returns 0 or a negative errno.
pub fn set_affinity(mask: *const [mask_bytes]u8) i32 {
    const words: Mask = @bitCast(mask.*);
    for (words) |word| {
        if (word != 0) return set_mask(&words);
    }
    return einval(); // an empty mask is never what the caller meant
}

/// The CPU the calling thread runs on right now, or a negative errno.
pub fn current_cpu() i32 {
    var cpu: usize = 0;
    const rc = linux.syscall3(.getcpu, @intFromPtr(&cpu), 0, 0);
    if (linux.E.init(rc) != .SUCCESS) return errno(rc);
    return @intCast(cpu);
}

/// The kernel thread id of the calling thread.
pub fn thread_id() i32 {
    return linux.gettid();
}

fn first_cpu(mask: *const [mask_bytes]u8) ?u32 {
    for (mask, 0..) |byte, i| {
        if (byte != 0) return @as(u32, @intCast(i)) * 8 + @ctz(byte);
    }
    return null;
}

fn last_cpu(mask: *const [mask_bytes]u8) ?u32 {
    var i: usize = mask_bytes;
    while (i > 0) {
        i -= 1;
        const byte = mask[i];
        if (byte != 0) return @as(u32, @intCast(i)) * 8 + 7 - @clz(byte);
    }
    return null;
}

test "affinity mask lists at least one CPU and round-trips" {
    var mask: [mask_bytes]u8 = undefined;
    const count = get_affinity(&mask);
    try std.testing.expect(count >= 1);
    try std.testing.expect(first_cpu(&mask) != null);
    try std.testing.expectEqual(@as(i32, 0), set_affinity(&mask));
    var again: [mask_bytes]u8 = undefined;
    try std.testing.expectEqual(count, get_affinity(&again));
    try std.testing.expectEqualSlices(u8, &mask, &again);
}

test "pinning moves the calling thread to that CPU only, and can be undone" {
    var original: [mask_bytes]u8 = undefined;
    try std.testing.expect(get_affinity(&original) >= 1);
    defer _ = set_affinity(&original);
    const cpu = last_cpu(&original).?;
    try std.testing.expectEqual(@as(i32, 0), pin_current_thread(cpu));
    var pinned: [mask_bytes]u8 = undefined;
    try std.testing.expectEqual(@as(i32, 1), get_affinity(&pinned));
    try std.testing.expectEqual(cpu, first_cpu(&pinned).?);
    // The scheduler migrates the thread before sched_setaffinity returns.
    try std.testing.expectEqual(@as(i32, @intCast(cpu)), current_cpu());
    try std.testing.expectEqual(@as(i32, 0), set_affinity(&original));
    var restored: [mask_bytes]u8 = undefined;
    _ = get_affinity(&restored);
    try std.testing.expectEqualSlices(u8, &original, &restored);
}

test "bad CPUs and empty masks are refused with EINVAL, leaving the mask alone" {
    var before: [mask_bytes]u8 = undefined;
    const count = get_affinity(&before);
    try std.testing.expectEqual(einval(), pin_current_thread(max_cpus));
    try std.testing.expectEqual(einval(), pin_current_thread(max_cpus + 7));
    const empty: [mask_bytes]u8 = @splat(0);
    try std.testing.expectEqual(einval(), set_affinity(&empty));
    // A CPU beyond the machine's is refused by the kernel.
    try std.testing.expect(pin_current_thread(max_cpus - 1) < 0);
    var after: [mask_bytes]u8 = undefined;
    try std.testing.expectEqual(count, get_affinity(&after));
    try std.testing.expectEqualSlices(u8, &before, &after);
}

test "thread id is the process id on the main thread" {
    try std.testing.expectEqual(linux.getpid(), thread_id());
}
