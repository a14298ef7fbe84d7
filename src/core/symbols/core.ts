/** FFI signatures of the core exports (zig/exports.zig). */
import { FFIType } from "bun:ffi";

const { u32, i32, i64_fast, u64, ptr: P, void: V, u8 } = FFIType;

export const coreSymbols = {
  shoal_abi_version: { args: [], returns: u32 },
  shoal_probe: { args: [P, P, u32], returns: V },
  shoal_reactor_create: { args: [u32, u32, P], returns: P },
  shoal_reactor_destroy: { args: [P], returns: V },
  shoal_reactor_ops: { args: [P], returns: P },
  shoal_reactor_completions: { args: [P], returns: P },
  shoal_reactor_counters: { args: [P], returns: P },
  shoal_reactor_info: { args: [P], returns: P },
  shoal_reactor_turn: { args: [P, u32, u32, FFIType.f64], returns: i32 },
  shoal_reactor_submit: { args: [P, u32], returns: i32 },
  shoal_reactor_msg_wake: { args: [P, i32, i32], returns: i32 },
  shoal_eventfd_wake: { args: [i32], returns: i32 },
  shoal_bench_nops: { args: [P, u32, u32], returns: i32 },
  shoal_mem_map: { args: [u64], returns: i64_fast },
  shoal_mem_map_huge: { args: [u64], returns: i64_fast },
  shoal_mem_unmap: { args: [u64, u64], returns: i32 },
  shoal_mem_fill: { args: [u64, u64, u8], returns: V },
  shoal_copy: { args: [P, u32, P, u32, u32], returns: V },
  shoal_nofile_limit: { args: [u32], returns: i64_fast },
  shoal_set_nofile_limit: { args: [u64, u64], returns: i32 },
} as const;
