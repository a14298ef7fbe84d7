/**
 * Metadata operations on io_uring (openat, statx, close, unlinkat, mkdirat, renameat, linkat,
 * fallocate, fsync, ftruncate), each one descriptor through reactor().submit() with its path
 * and result structs in pinned native scratch memory. These bypass the I/O scheduler: they
 * move no data, and Seastar does not queue them either.
 */
import { reactor, IoOp } from "../core/reactor.ts";
import { probeIoUring } from "../core/probe.ts";
import type { OpOptions } from "../core/reactor.ts";
import { AT_FDCWD, AT_EMPTY_PATH, STATX_BASIC_STATS, STATX_DIOALIGN, STATX_DIO_READ_ALIGN } from "./constants.ts";
import { nativePath, nativeStatx, type FsPath } from "./scratch.ts";
import type { NativeBuffer } from "../core/buffers.ts";
import { parseStatx, type FileStat } from "./stat.ts";

let probed = false;
let ftruncateProbed = false;

/** Checks once per thread that the kernel has every io_uring op the fs layer uses. */
export function probeFsOps(): void {
  if (probed) return;
  probeIoUring([
    IoOp.OPENAT, IoOp.STATX, IoOp.FALLOCATE, IoOp.FSYNC, IoOp.READ, IoOp.WRITE, IoOp.READV,
    IoOp.WRITEV, IoOp.CLOSE, IoOp.RENAMEAT, IoOp.UNLINKAT, IoOp.MKDIRAT, IoOp.LINKAT,
  ]);
  probed = true;
}

/** openat(AT_FDCWD, path, flags, mode). Resolves with the new descriptor. */
export async function openat(op: string, path: FsPath, flags: number, mode: number, opts?: OpOptions): Promise<number> {
  probeFsOps();
  const p = await nativePath(path);
  try {
    return await reactor().submit(op, IoOp.OPENAT, AT_FDCWD, p.address, mode, 0, flags, opts, p);
  } finally {
    // Pinned by the submit until the kernel is done; released at once if submit threw (a path
    // buffer lost per refused call emptied the pool of 64, and every later path operation hung).
    p.release();
  }
}

const STATX_MASK = STATX_BASIC_STATS | STATX_DIOALIGN | STATX_DIO_READ_ALIGN;

/** statx of `path` (relative to the cwd), or of `fd` itself when `path` is "". */
export async function statx(op: string, fd: number, path: FsPath, flags: number, opts?: OpOptions): Promise<FileStat> {
  probeFsOps();
  const p = await nativePath(path);
  let out: NativeBuffer;
  try {
    out = await nativeStatx();
  } catch (e) {
    p.release();
    throw e;
  }
  try {
    const dirfd = path === "" ? fd : AT_FDCWD;
    const f = path === "" ? flags | AT_EMPTY_PATH : flags;
    let res: Promise<number>;
    try {
      res = reactor().submit(op, IoOp.STATX, dirfd, p.address, STATX_MASK, out.address, f, opts, [p, out]);
    } finally {
      p.release();
    }
    await res;
    return parseStatx(out);
  } finally {
    out.release();
  }
}

/** unlinkat(AT_FDCWD, path, flags). */
export async function unlinkat(op: string, path: FsPath, flags: number, opts?: OpOptions): Promise<void> {
  probeFsOps();
  const p = await nativePath(path);
  try {
    await reactor().submit(op, IoOp.UNLINKAT, AT_FDCWD, p.address, 0, 0, flags, opts, p);
  } finally {
    p.release();
  }
}

/** mkdirat(AT_FDCWD, path, mode). */
export async function mkdirat(op: string, path: string, mode: number, opts?: OpOptions): Promise<void> {
  probeFsOps();
  const p = await nativePath(path);
  try {
    await reactor().submit(op, IoOp.MKDIRAT, AT_FDCWD, p.address, mode, 0, 0, opts, p);
  } finally {
    p.release();
  }
}

/** renameat2 / linkat: two paths, both relative to the cwd. The new dirfd travels in `len`. */
export async function twoPathOp(op: string, opcode: number, from: string, to: string, flags: number, opts?: OpOptions): Promise<void> {
  probeFsOps();
  const a = await nativePath(from);
  const b = await nativePath(to).catch((e: unknown) => {
    a.release();
    throw e;
  });
  try {
    await reactor().submit(op, opcode, AT_FDCWD, a.address, AT_FDCWD >>> 0, b.address, flags, opts, [a, b]);
  } finally {
    a.release();
    b.release();
  }
}

/** fallocate(fd, mode, offset, length): the SQE carries the length in addr and the mode in len. */
export function fallocate(op: string, fd: number, mode: number, offset: number, length: number, opts?: OpOptions): Promise<number> {
  return reactor().submit(op, IoOp.FALLOCATE, fd, length, mode, offset, 0, opts);
}

/** fsync(fd), or fdatasync with IORING_FSYNC_DATASYNC in `flags`. */
export function fsync(op: string, fd: number, flags: number, opts?: OpOptions): Promise<number> {
  return reactor().submit(op, IoOp.FSYNC, fd, 0, 0, 0, flags, opts);
}

/** ftruncate(fd, length) (IORING_OP_FTRUNCATE, Linux 6.9+): the length travels in off. */
export function ftruncate(op: string, fd: number, length: number, opts?: OpOptions): Promise<number> {
  // Probed here, not with the rest: only truncation needs Linux 6.9 (the fs layer 6.1).
  if (!ftruncateProbed) {
    probeIoUring([IoOp.FTRUNCATE]);
    ftruncateProbed = true;
  }
  return reactor().submit(op, IoOp.FTRUNCATE, fd, 0, 0, length, 0, opts);
}

/** close(fd) through the ring. */
export function closeFd(fd: number): Promise<void> {
  return reactor().close(fd);
}
