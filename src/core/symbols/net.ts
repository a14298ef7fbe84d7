/** FFI signatures of the net layer's exports (zig/exports_net.zig). */
// import { FFIType } from "bun:ffi";

export const netSymbols = {} as const;
