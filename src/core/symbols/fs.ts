/** FFI signatures of the fs layer's exports (zig/exports_fs.zig). */
// import { FFIType } from "bun:ffi";

export const fsSymbols = {} as const;
