/** FFI signatures of the net layer's exports (zig/exports_net.zig). */
import { FFIType } from "bun:ffi";

const { u32, i32, u64, ptr: P } = FFIType;

export const netSymbols = {
  shoal_net_open_socket: { args: [u32, u32, u64, u32, u32, i32], returns: i32 },
  shoal_net_socket: { args: [u32, u32, u32], returns: i32 },
  shoal_net_bind: { args: [i32, u64, u32], returns: i32 },
  shoal_net_set_int: { args: [i32, i32, u32, i32], returns: i32 },
  shoal_net_get_int: { args: [i32, i32, u32], returns: i32 },
  shoal_net_local_address: { args: [i32, u64, u32], returns: i32 },
  shoal_net_peer_address: { args: [i32, u64, u32], returns: i32 },
  shoal_net_shutdown: { args: [i32, i32], returns: i32 },
  shoal_net_close: { args: [i32], returns: i32 },
  shoal_net_set_linger: { args: [i32, u32, i32], returns: i32 },
  shoal_net_linger_step: { args: [i32], returns: i32 },
  shoal_net_accept_pending: { args: [i32, u64, u32], returns: i32 },
  shoal_net_buf_ring_create: { args: [P, u32, u32, u32, u32, P], returns: P },
  shoal_net_buf_ring_destroy: { args: [P], returns: i32 },
} as const;
