/** FFI signatures of the smp layer's exports (zig/exports_smp.zig). */
// import { FFIType } from "bun:ffi";

export const smpSymbols = {} as const;
