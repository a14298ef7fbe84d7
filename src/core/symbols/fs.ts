/** FFI signatures of the fs layer's exports (zig/exports_fs.zig). */
import { FFIType } from "bun:ffi";

const { u32, i32, u64 } = FFIType;

export const fsSymbols = {
  /** statfs(2): (path address, FsInfo address) -> 0 or -errno. */
  shoal_fs_statfs: { args: [u64, u64], returns: i32 },
  /** fstatfs(2): (fd, FsInfo address) -> 0 or -errno. */
  shoal_fs_fstatfs: { args: [i32, u64], returns: i32 },
  /** getdents64(2): (dir fd, buffer address, length) -> bytes filled or -errno. */
  shoal_fs_getdents: { args: [i32, u64, u32], returns: i32 },
} as const;
