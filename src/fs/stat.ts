/**
 * FileStat: what statx(2) says about a file, read from the native struct at fixed offsets
 * (zig/file.zig `statx_offsets` pins them against the kernel layout in its tests).
 */
import type { NativeBuffer } from "../core/buffers.ts";
import { STATX_DIOALIGN, STATX_DIO_READ_ALIGN } from "./constants.ts";

/** The kind of a directory entry or file. */
export type FileType = "file" | "directory" | "symlink" | "fifo" | "socket" | "block-device" | "char-device" | "unknown";

/** File metadata from statx(2). Sizes are bytes; times are ms since the epoch. */
export interface FileStat {
  type: FileType;
  /** Permission bits (mode & 0o7777). */
  mode: number;
  size: number;
  /** Bytes allocated on disk (st_blocks x 512). */
  allocatedBytes: number;
  /** The file system's preferred I/O size (st_blksize). */
  blockSize: number;
  inode: number;
  links: number;
  mtimeMs: number;
  /** Device holding the file (major, minor): what the I/O scheduler keys its queues by. */
  deviceMajor: number;
  deviceMinor: number;
  /**
   * O_DIRECT alignment from STATX_DIOALIGN: buffer address alignment and file offset/length
   * alignment in bytes; 0 when the file system did not report it (or does not support O_DIRECT).
   */
  dioMemoryAlignment: number;
  dioOffsetAlignment: number;
  /** Offset alignment for reads when smaller than for writes (STATX_DIO_READ_ALIGN, Linux 6.14+); else dioOffsetAlignment. */
  dioReadOffsetAlignment: number;
}

const typeBits: Record<number, FileType> = {
  0o100000: "file",
  0o040000: "directory",
  0o120000: "symlink",
  0o010000: "fifo",
  0o140000: "socket",
  0o060000: "block-device",
  0o020000: "char-device",
};

function u64(v: Uint32Array, byteOffset: number): number {
  const i = byteOffset >>> 2;
  return v[i]! + v[i + 1]! * 0x1_0000_0000;
}

/** Decodes the statx struct in `b` (filled by the kernel). */
export function parseStatx(b: NativeBuffer): FileStat {
  const v = new Uint32Array(b.bytes.buffer, b.bytes.byteOffset, 64);
  const mask = v[0]!;
  const modeWord = v[7]! & 0xffff; // stx_mode at 28 (u16)
  const sec = (v[116 >>> 2]! | 0) * 0x1_0000_0000 + v[112 >>> 2]!; // stx_mtime.tv_sec is an i64
  const nsec = v[120 >>> 2]!;
  const dio = (mask & STATX_DIOALIGN) !== 0;
  const dioOffset = dio ? v[156 >>> 2]! : 0;
  const readAlign = (mask & STATX_DIO_READ_ALIGN) !== 0 ? v[180 >>> 2]! : 0;
  return {
    type: typeBits[modeWord & 0o170000] ?? "unknown",
    mode: modeWord & 0o7777,
    size: u64(v, 40),
    allocatedBytes: u64(v, 48) * 512,
    blockSize: v[1]!,
    inode: u64(v, 32),
    links: v[4]!,
    mtimeMs: sec * 1000 + Math.floor(nsec / 1e6),
    deviceMajor: v[136 >>> 2]!,
    deviceMinor: v[140 >>> 2]!,
    dioMemoryAlignment: dio ? v[152 >>> 2]! : 0,
    dioOffsetAlignment: dioOffset,
    dioReadOffsetAlignment: readAlign > 0 ? readAlign : dioOffset,
  };
}
