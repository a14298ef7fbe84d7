/** FFI signatures of the smp layer's exports (zig/exports_smp.zig). */
import { FFIType } from "bun:ffi";

const { u32, i32, ptr: P } = FFIType;

export const smpSymbols = {
  shoal_smp_mask_bytes: { args: [], returns: u32 },
  shoal_smp_pin_thread: { args: [u32], returns: i32 },
  shoal_smp_get_affinity: { args: [P, u32], returns: i32 },
  shoal_smp_set_affinity: { args: [P, u32], returns: i32 },
  shoal_smp_current_cpu: { args: [], returns: i32 },
  shoal_smp_thread_id: { args: [], returns: i32 },
} as const;
