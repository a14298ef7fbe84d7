/**
 * Small native scratch memory for the metadata operations of the fs layer. The kernel reads
 * paths and writes statx structs after the submitting call has returned, so they must live in
 * native memory pinned for the operation's lifetime (never ptr() of a JS array): each comes from
 * a pool here and is passed to reactor().submit() as a pinned buffer, then released at once;
 * the release takes effect when the kernel's final completion arrives.
 */
import { BufferPool, type NativeBuffer } from "../core/buffers.ts";
import { InvalidArgumentError } from "../core/errors.ts";

/** Longest path the kernel accepts (PATH_MAX, including the terminating NUL). */
export const PATH_MAX = 4096;
/** sizeof(struct statx). */
export const STATX_SIZE = 256;

let paths: BufferPool | undefined;
let statxBufs: BufferPool | undefined;
let iovecs: BufferPool | undefined;
const encoder = new TextEncoder();

function pathPool(): BufferPool {
  // 64 paths are 256 KiB; more concurrent metadata operations wait for a free one.
  return (paths ??= new BufferPool({ bufferSize: PATH_MAX, count: 64, alignment: 64 }));
}

/**
 * A path for the kernel: a string (UTF-8 encoded), or raw bytes (internal: a directory entry
 * whose name is not valid UTF-8, which no string can name).
 */
export type FsPath = string | Uint8Array;

/** A path for messages (raw bytes decoded, invalid sequences as U+FFFD). */
export function describePath(path: FsPath): string {
  return typeof path === "string" ? path : new TextDecoder().decode(path);
}

/** Checks an operation's options: undefined or an object whose `signal`, if any, is an AbortSignal. */
export function checkOpts(op: string, opts: unknown): void {
  snapshotOpts(op, opts);
}

/**
 * Checks an operation's options (as checkOpts) and returns them with `signal` read once, as a
 * plain object (or undefined): a getter runs here, before any buffer is checked, and never again
 * (one that released a buffer after its check had the kernel use the buffer's next owner).
 */
export function snapshotOpts(op: string, opts: unknown): { signal: AbortSignal } | undefined {
  if (opts === undefined) return undefined;
  if (opts === null || typeof opts !== "object") throw new InvalidArgumentError(`${op}: options must be an object`);
  const s = (opts as { signal?: unknown }).signal;
  if (s === undefined) return undefined;
  if (!(s instanceof AbortSignal)) throw new InvalidArgumentError(`${op}: signal must be an AbortSignal`);
  return { signal: s };
}

/** Checks a path argument before anything reaches the kernel. */
export function checkPath(op: string, path: unknown, name = "path"): asserts path is string {
  if (typeof path !== "string" || path.length === 0) {
    throw new InvalidArgumentError(`${op}: ${name} must be a non-empty string, got ${typeof path === "string" ? '""' : typeof path}`);
  }
  if (path.includes("\0")) throw new InvalidArgumentError(`${op}: ${name} contains a NUL byte`);
  // UTF-8 takes at most 3 bytes per UTF-16 unit; only long paths need the exact count.
  if (path.length * 3 >= PATH_MAX && encoder.encode(path).length >= PATH_MAX) {
    throw new InvalidArgumentError(`${op}: ${name} is longer than PATH_MAX (${PATH_MAX - 1} bytes)`);
  }
}

/**
 * A NUL-terminated copy of `path` in native memory. The caller passes it to submit() as a
 * pinned buffer and releases it right after submitting. Waits if 64 paths are in use.
 */
export async function nativePath(path: FsPath): Promise<NativeBuffer> {
  const pool = pathPool();
  const b = pool.tryAcquire() ?? (await pool.acquireEventually());
  if (path instanceof Uint8Array) {
    // The bytes of a name that is not UTF-8 (from a directory listing), kept as they are.
    if (path.length >= b.bytes.length || path.includes(0)) {
      b.release();
      throw new InvalidArgumentError(`a path is longer than PATH_MAX (${PATH_MAX - 1} bytes) or contains a NUL byte`);
    }
    b.bytes.set(path);
    b.bytes[path.length] = 0;
    return b;
  }
  const { read, written } = encoder.encodeInto(path, b.bytes);
  // No room for the NUL (a path checkPath did not see): the kernel would read past the end.
  if (read < path.length || written >= b.bytes.length) {
    b.release();
    throw new InvalidArgumentError(`a path is longer than PATH_MAX (${PATH_MAX - 1} bytes)`);
  }
  b.bytes[written] = 0;
  return b;
}

/** A statx buffer in native memory (released like a path). */
export async function nativeStatx(): Promise<NativeBuffer> {
  const pool = (statxBufs ??= new BufferPool({ bufferSize: STATX_SIZE, count: 64, alignment: 64 }));
  return pool.tryAcquire() ?? (await pool.acquireEventually());
}

/** Room for one iovec array of up to 64 entries (readv/writev), in native memory. */
export function nativeIovecs(): Promise<NativeBuffer> | NativeBuffer {
  const pool = (iovecs ??= new BufferPool({ bufferSize: 64 * 16, count: 256, alignment: 64 }));
  return pool.tryAcquire() ?? pool.acquireEventually();
}

let syncScratch: { path: NativeBuffer; info: NativeBuffer } | undefined;
let syncPool: BufferPool | undefined;

/**
 * Scratch for synchronous native calls (statfs): the memory is only used during the call, so
 * one long-lived pair per thread suffices.
 */
export function syncBuffers(): { path: NativeBuffer; info: NativeBuffer } {
  if (syncScratch) return syncScratch;
  syncPool = new BufferPool({ bufferSize: PATH_MAX, count: 2, alignment: 64 });
  syncScratch = { path: syncPool.acquire(), info: syncPool.acquire() };
  return syncScratch;
}

/** Writes `path` NUL-terminated into `b` (checked with checkPath first). */
export function encodePathInto(path: string, b: NativeBuffer): void {
  const { written } = encoder.encodeInto(path, b.bytes);
  b.bytes[written] = 0;
}
