/**
 * Directory and file utilities. Everything with an io_uring operation uses the ring (openat,
 * statx, mkdirat, unlinkat, renameat, linkat, close). Two calls have none and are synchronous
 * system calls, documented where they are used: getdents64 (listDirectory) and statfs (fsSpace).
 */
import { BufferPool, allocateAlignedBuffer, type NativeBuffer } from "../core/buffers.ts";
import { AbortError, InvalidArgumentError, SystemError } from "../core/errors.ts";
import { native } from "../core/native.ts";
import { IoOp, type OpOptions } from "../core/reactor.ts";
import {
  AT_REMOVEDIR, AT_SYMLINK_NOFOLLOW, O_CLOEXEC, O_DIRECTORY, O_RDONLY, RENAME_NOREPLACE,
} from "./constants.ts";
import { closeFd, mkdirat, openat, statx, twoPathOp, unlinkat } from "./ops.ts";
import { checkOpts, checkPath, describePath, type FsPath } from "./scratch.ts";
import type { FileStat, FileType } from "./stat.ts";
import { readFsInfoAt, type FsInfo } from "./fs-info.ts";
import { describeValue } from "../core/describe.ts";

const ENOENT = 2;
const EEXIST = 17;
const ENOTDIR = 20;
const EISDIR = 21;

/** One entry of a directory listing. */
export interface DirectoryEntry {
  /** The name (UTF-8 decoded; a name that is not valid UTF-8 has U+FFFD where bytes could not be decoded). */
  name: string;
  /** The name's bytes, present only when they are not valid UTF-8 (no string names such a file exactly). */
  rawName?: Uint8Array | undefined;
  /** From the directory itself (d_type); "unknown" on file systems that do not record it. */
  type: FileType;
}

const direntTypes: Record<number, FileType> = {
  1: "fifo", 2: "char-device", 4: "directory", 6: "block-device", 8: "file", 10: "symlink", 12: "socket",
};

function signalOnly(opts: OpOptions | undefined): OpOptions | undefined {
  return opts?.signal ? { signal: opts.signal } : undefined;
}

/** Directory batches: 32 KiB holds a few hundred entries per getdents64 call. */
const DIR_BATCH = 32 * 1024;
let dirBuffers: BufferPool | undefined;

const strictDecoder = new TextDecoder("utf-8", { fatal: true });
const lossyDecoder = new TextDecoder();

function parseBatch(bytes: Uint8Array, n: number, out: DirectoryEntry[]): void {
  // linux_dirent64: u64 d_ino, i64 d_off, u16 d_reclen (16), u8 d_type (18), name (19..) NUL.
  let pos = 0;
  while (pos < n) {
    const reclen = bytes[pos + 16]! | (bytes[pos + 17]! << 8);
    if (reclen < 20 || pos + reclen > n) throw new SystemError("getdents64", 5, "malformed directory record");
    const type = bytes[pos + 18]!;
    let end = pos + 19;
    const limit = pos + reclen;
    while (end < limit && bytes[end] !== 0) end++;
    const raw = bytes.subarray(pos + 19, end);
    pos += reclen;
    let name: string;
    try {
      name = strictDecoder.decode(raw);
    } catch {
      out.push({ name: lossyDecoder.decode(raw), rawName: raw.slice(), type: direntTypes[type] ?? "unknown" });
      continue;
    }
    if (name === "." || name === "..") continue;
    out.push({ name, type: direntTypes[type] ?? "unknown" });
  }
}

/**
 * Lists a directory's entries (without "." and ".."), in the file system's order, as an async
 * iterator: `for await (const e of listDirectory(dir))`. Leaving the loop early closes the
 * directory. io_uring has no getdents operation (IORING_OP_GETDENTS was proposed but never
 * merged), so each batch of a few hundred entries is one synchronous getdents64 call: fast on
 * a cached directory, but on a cold one the shard waits for the disk during that call.
 * Opening and closing go through the ring.
 * Throws InvalidArgumentError, SystemError (ENOENT, ENOTDIR, EACCES), AbortError.
 */
export function listDirectory(path: string, opts?: OpOptions): AsyncGenerator<DirectoryEntry, void, undefined> {
  checkPath("listDirectory", path);
  checkOpts("listDirectory", opts);
  return entries(path, opts);
}

/** listDirectory for a checked path, which may be raw bytes (removeTree under a name that is not UTF-8). */
async function* entries(path: FsPath, opts?: OpOptions): AsyncGenerator<DirectoryEntry, void, undefined> {
  const op = "listDirectory";
  const signal = opts?.signal;
  const fd = await openat(`${op}: open`, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0, signalOnly(opts)).catch((e: unknown) => {
    throw e instanceof SystemError ? new SystemError(op, e.errno, describePath(path)) : e;
  });
  const pool = (dirBuffers ??= new BufferPool({ bufferSize: DIR_BATCH, count: 8, alignment: 4096 }));
  let buf: NativeBuffer | undefined;
  try {
    // Never waits: a recursive walk keeps every parent's listing open (with 8 shared buffers
    // the ninth level waited for good); past the pool, a listing maps its own.
    buf = pool.tryAcquire() ?? allocateAlignedBuffer(DIR_BATCH, 4096);
    const batch: DirectoryEntry[] = [];
    for (;;) {
      if (signal?.aborted) throw new AbortError(`${op} was aborted`, { cause: signal.reason });
      const n = native().shoal_fs_getdents(fd, buf.address, DIR_BATCH);
      if (n < 0) throw new SystemError(`${op}: getdents64`, -n, describePath(path));
      if (n === 0) break;
      batch.length = 0;
      parseBatch(buf.bytes, n, batch);
      // The batch is copied out of the buffer, so the next call may reuse it while the caller works.
      for (const e of batch) yield e;
    }
  } finally {
    buf?.release();
    await closeFd(fd);
  }
}

/**
 * Creates a directory (mkdirat through the ring). With `recursive`, creates missing parents
 * and accepts an existing directory. Throws InvalidArgumentError, SystemError (EEXIST,
 * ENOENT, EACCES).
 */
export async function mkdir(path: string, opts?: OpOptions & { mode?: number; recursive?: boolean }): Promise<void> {
  checkPath("mkdir", path);
  checkOpts("mkdir", opts);
  const mode = opts?.mode ?? 0o755;
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) throw new InvalidArgumentError(`mkdir: mode must be an integer in 0..0o7777, got ${describeValue(mode)}`);
  const s = signalOnly(opts);
  if (!opts?.recursive) {
    await mkdirat("mkdir", path, mode, s).catch((e: unknown) => rethrowWithPath(e, "mkdir", path));
    return;
  }
  try {
    await mkdirat("mkdir", path, mode, s);
  } catch (e) {
    if (!(e instanceof SystemError)) throw e;
    if (e.errno === EEXIST) {
      const st = await statx("mkdir: statx", -1, path, 0, s);
      if (st.type === "directory") return;
      throw new SystemError("mkdir", EEXIST, `${path} exists and is a ${st.type}`);
    }
    if (e.errno !== ENOENT) throw new SystemError("mkdir", e.errno, path);
    const parent = parentOf(path);
    if (parent === path) throw new SystemError("mkdir", ENOENT, path);
    await mkdir(parent, { ...opts, mode: opts.mode ?? 0o755 });
    await mkdirat("mkdir", path, mode, s).catch((e2: unknown) => {
      if (e2 instanceof SystemError && e2.errno === EEXIST) return; // created meanwhile
      rethrowWithPath(e2, "mkdir", path);
    });
  }
}

function parentOf(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  const i = trimmed.lastIndexOf("/");
  if (i < 0) return ".";
  if (i === 0) return "/";
  return trimmed.slice(0, i);
}

function rethrowWithPath(e: unknown, op: string, path: string): never {
  if (e instanceof SystemError) throw new SystemError(op, e.errno, path);
  throw e;
}

/**
 * Removes a file, a symlink or an empty directory (unlinkat through the ring).
 * Throws InvalidArgumentError, SystemError (ENOENT, ENOTEMPTY, EACCES).
 */
export async function remove(path: string, opts?: OpOptions): Promise<void> {
  checkPath("remove", path);
  checkOpts("remove", opts);
  const s = signalOnly(opts);
  try {
    await unlinkat("remove", path, 0, s);
  } catch (e) {
    // unlink(2) on a directory answers EISDIR: retry as rmdir.
    if (e instanceof SystemError && e.errno === EISDIR) {
      await unlinkat("remove", path, AT_REMOVEDIR, s).catch((e2: unknown) => rethrowWithPath(e2, "remove", path));
      return;
    }
    rethrowWithPath(e, "remove", path);
  }
}

/**
 * Removes `path` and, if it is a directory, everything under it (symlinks are removed, never
 * followed). A missing path is not an error. Throws InvalidArgumentError, SystemError.
 */
export async function removeTree(path: string, opts?: OpOptions): Promise<void> {
  checkPath("removeTree", path);
  checkOpts("removeTree", opts);
  await removeTreeAt(path, signalOnly(opts));
}

const utf8 = new TextEncoder();

/** `dir`/`entry` as a path: a string while every part is UTF-8, else bytes. */
function childPath(dir: FsPath, e: DirectoryEntry): FsPath {
  if (typeof dir === "string" && e.rawName === undefined) return `${dir}/${e.name}`;
  const a = typeof dir === "string" ? utf8.encode(dir) : dir;
  const b = e.rawName ?? utf8.encode(e.name);
  const out = new Uint8Array(a.length + 1 + b.length);
  out.set(a);
  out[a.length] = 0x2f; // "/"
  out.set(b, a.length + 1);
  return out;
}

async function removeTreeAt(path: FsPath, s: OpOptions | undefined): Promise<void> {
  const shown = describePath(path);
  let st: FileStat;
  try {
    st = await statx("removeTree: statx", -1, path, AT_SYMLINK_NOFOLLOW, s);
  } catch (e) {
    if (e instanceof SystemError && e.errno === ENOENT) return;
    throw e;
  }
  if (st.type === "directory") {
    const names: DirectoryEntry[] = [];
    for await (const e of entries(path, s)) names.push(e);
    // A name that is not UTF-8 is removed by its bytes (by its decoded name it named nothing,
    // and the directory then failed with ENOTEMPTY).
    for (const e of names) await removeTreeAt(childPath(path, e), s);
    await unlinkat("removeTree", path, AT_REMOVEDIR, s).catch((e: unknown) => rethrowWithPath(e, "removeTree", shown));
  } else {
    await unlinkat("removeTree", path, 0, s).catch((e: unknown) => {
      if (e instanceof SystemError && e.errno === ENOENT) return;
      rethrowWithPath(e, "removeTree", shown);
    });
  }
}

/**
 * Renames `from` to `to` (renameat2 through the ring), replacing `to` unless `noReplace`
 * (then EEXIST). Atomic within one file system. Throws InvalidArgumentError, SystemError
 * (ENOENT, EXDEV across file systems, EEXIST).
 */
export async function rename(from: string, to: string, opts?: OpOptions & { noReplace?: boolean }): Promise<void> {
  checkPath("rename", from, "from");
  checkPath("rename", to, "to");
  checkOpts("rename", opts);
  const flags = opts?.noReplace ? RENAME_NOREPLACE : 0;
  await twoPathOp("rename", IoOp.RENAMEAT, from, to, flags, signalOnly(opts)).catch((e: unknown) =>
    rethrowWithPath(e, "rename", `${from} -> ${to}`),
  );
}

/**
 * Creates a hard link `newPath` to the existing file `existing` (linkat through the ring).
 * Throws InvalidArgumentError, SystemError (EEXIST, ENOENT, EXDEV, EPERM for directories).
 */
export async function link(existing: string, newPath: string, opts?: OpOptions): Promise<void> {
  checkPath("link", existing, "existing");
  checkPath("link", newPath, "newPath");
  checkOpts("link", opts);
  await twoPathOp("link", IoOp.LINKAT, existing, newPath, 0, signalOnly(opts)).catch((e: unknown) =>
    rethrowWithPath(e, "link", `${existing} -> ${newPath}`),
  );
}

/**
 * Metadata of `path` (statx through the ring); `followSymlinks: false` describes a symlink
 * itself. Throws InvalidArgumentError, SystemError (ENOENT, ENOTDIR, EACCES).
 */
export async function stat(path: string, opts?: OpOptions & { followSymlinks?: boolean }): Promise<FileStat> {
  checkPath("stat", path);
  checkOpts("stat", opts);
  const flags = opts?.followSymlinks === false ? AT_SYMLINK_NOFOLLOW : 0;
  return statx("stat", -1, path, flags, signalOnly(opts)).catch((e: unknown) => rethrowWithPath(e, "stat", path));
}

/**
 * True if `path` exists (following symlinks), false on ENOENT or ENOTDIR. One statx through
 * the ring. Throws InvalidArgumentError, SystemError for other failures (EACCES...).
 */
export async function fileExists(path: string, opts?: OpOptions): Promise<boolean> {
  checkPath("fileExists", path);
  checkOpts("fileExists", opts);
  try {
    await statx("fileExists", -1, path, 0, signalOnly(opts));
    return true;
  } catch (e) {
    if (e instanceof SystemError && (e.errno === ENOENT || e.errno === ENOTDIR)) return false;
    return rethrowWithPath(e, "fileExists", path);
  }
}

/** The size in bytes of the file at `path` (one statx). Throws InvalidArgumentError, SystemError. */
export async function fileSize(path: string, opts?: OpOptions): Promise<number> {
  checkPath("fileSize", path);
  checkOpts("fileSize", opts);
  return (await statx("fileSize", -1, path, 0, signalOnly(opts)).catch((e: unknown) => rethrowWithPath(e, "fileSize", path))).size;
}

/**
 * Space of the file system holding `path`: total, free and available bytes, inodes, its type.
 * io_uring has no statfs operation; this is one synchronous statfs(2), which reads in-memory
 * counters and does not wait for the device. Throws InvalidArgumentError, SystemError.
 */
export function fsSpace(path: string): FsInfo {
  checkPath("fsSpace", path);
  return readFsInfoAt("fsSpace", path);
}

let tempCounter = 0;

/**
 * Creates a fresh private directory (mode 0o700) under `parent` (default $TMPDIR or /tmp),
 * runs `fn` with its path, and removes it with everything in it afterwards, whether `fn`
 * succeeded or threw. For tests and scratch work. Returns fn's result.
 * Throws InvalidArgumentError, SystemError (from mkdir or the removal), or what fn threw (a
 * failed removal then rides on it as `cleanupError`).
 */
export async function withTempDir<T>(fn: (dir: string) => T | Promise<T>, opts?: { parent?: string; prefix?: string }): Promise<T> {
  if (typeof fn !== "function") throw new InvalidArgumentError("withTempDir: fn must be a function");
  const parent = opts?.parent ?? process.env["TMPDIR"] ?? "/tmp";
  const prefix = opts?.prefix ?? "shoal-";
  checkPath("withTempDir", parent, "parent");
  if (typeof prefix !== "string" || prefix.includes("/") || prefix.includes("\0")) {
    throw new InvalidArgumentError("withTempDir: prefix must be a string without '/' or NUL");
  }
  let dir = "";
  for (let attempt = 0; ; attempt++) {
    const rand = Math.floor(Math.random() * 0x1_0000_0000).toString(36);
    dir = `${parent.replace(/\/+$/, "") || "/"}/${prefix}${process.pid}-${++tempCounter}-${rand}`;
    try {
      await mkdirat("withTempDir: mkdir", dir, 0o700);
      break;
    } catch (e) {
      if (!(e instanceof SystemError) || e.errno !== EEXIST || attempt >= 16) rethrowWithPath(e, "withTempDir", dir);
    }
  }
  let result: T;
  try {
    result = await fn(dir);
  } catch (e) {
    // fn's error is what the caller sees; a failed cleanup rides on it (as `cleanupError`).
    try {
      await removeTree(dir);
    } catch (cleanup) {
      if (e !== null && typeof e === "object") Object.assign(e, { cleanupError: cleanup });
    }
    throw e;
  }
  await removeTree(dir);
  return result;
}
