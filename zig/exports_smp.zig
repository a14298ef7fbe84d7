//! C ABI exports of the smp layer (imported by exports.zig). They only convert and forward;
//! the logic is in smp.zig.
const smp = @import("smp.zig");

/// Bytes of the affinity masks below (1024 CPUs).
export fn shoal_smp_mask_bytes() u32 {
    return smp.mask_bytes;
}

/// Pins the calling thread (the shard's Worker) to `cpu`. 0 or a negative errno.
export fn shoal_smp_pin_thread(cpu: u32) i32 {
    return smp.pin_current_thread(cpu);
}

/// Copies the calling thread's affinity mask into `out` (`len` must be mask_bytes); returns
/// the number of CPUs in it or a negative errno.
export fn shoal_smp_get_affinity(out: [*]u8, len: u32) i32 {
    if (len != smp.mask_bytes) return -22; // EINVAL
    return smp.get_affinity(out[0..smp.mask_bytes]);
}

/// Replaces the calling thread's affinity mask (`len` must be mask_bytes). 0 or a negative errno.
export fn shoal_smp_set_affinity(mask: [*]const u8, len: u32) i32 {
    if (len != smp.mask_bytes) return -22; // EINVAL
    return smp.set_affinity(mask[0..smp.mask_bytes]);
}

/// The CPU the calling thread runs on now, or a negative errno.
export fn shoal_smp_current_cpu() i32 {
    return smp.current_cpu();
}

/// The calling thread's kernel thread id.
export fn shoal_smp_thread_id() i32 {
    return smp.thread_id();
}
