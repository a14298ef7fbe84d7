/**
 * Whole-file reads and writes of small text files (io-properties, sysfs attributes) through
 * the ring with buffered I/O: configuration, not data, so no alignment rules and no scheduler.
 */
import { allocateAlignedBuffer } from "../core/buffers.ts";
import { reactor } from "../core/reactor.ts";
import { InvalidArgumentError } from "../core/errors.ts";
import type { OpOptions } from "../core/reactor.ts";
import { threadId } from "node:worker_threads";
import { O_CLOEXEC, O_CREAT, O_EXCL, O_RDONLY, O_WRONLY } from "./constants.ts";
import { IoOp } from "../core/reactor.ts";
import { SystemError } from "../core/errors.ts";
import { closeFd, fsync, openat, twoPathOp, unlinkat } from "./ops.ts";
import { checkOpts, checkPath } from "./scratch.ts";

const CHUNK = 64 * 1024;
/** Larger files are refused: this helper is for configuration. */
const MAX_BYTES = 16 * 1024 * 1024;
/** Temporary names made by this thread (with pid, thread id and a random part: unique). */
let tmpCounter = 0;
const EEXIST = 17;

/**
 * Reads a whole small text file (UTF-8) through io_uring. Cost: one open, reads of 64 KiB,
 * one close. Throws SystemError (ENOENT...) or InvalidArgumentError past 16 MiB.
 */
export async function readSmallFile(path: string, opts?: OpOptions): Promise<string> {
  checkPath("readSmallFile", path);
  checkOpts("readSmallFile", opts);
  const fd = await openat("readSmallFile: open", path, O_RDONLY | O_CLOEXEC, 0, opts);
  const buf = allocateAlignedBuffer(CHUNK);
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const n = await reactor()
        .read(fd, buf, { offset: total, signal: opts?.signal })
        .catch((e: unknown) => {
          // Name this call and the file (a directory gives EISDIR here, not at open).
          throw e instanceof SystemError ? new SystemError(`readSmallFile: read ${path}`, e.errno) : e;
        });
      if (n === 0) break;
      chunks.push(buf.bytes.slice(0, n));
      total += n;
      if (total > MAX_BYTES) throw new InvalidArgumentError(`readSmallFile: ${path} is larger than ${MAX_BYTES} bytes`);
    }
  } finally {
    buf.release();
    await closeFd(fd);
  }
  return new TextDecoder().decode(Buffer.concat(chunks));
}

/**
 * Replaces `path` with `text` atomically: writes a new `path.tmp-<pid>-<thread>-<n>-<random>`
 * (created exclusively: concurrent writers of one path never share it), fdatasyncs it and renames it
 * over `path`, so a reader never sees half a file. Throws SystemError.
 */
export async function writeSmallFile(path: string, text: string, opts?: OpOptions & { mode?: number }): Promise<void> {
  checkPath("writeSmallFile", path);
  checkOpts("writeSmallFile", opts);
  if (typeof text !== "string") throw new InvalidArgumentError(`writeSmallFile: text must be a string, got ${typeof text}`);
  // Permission bits only: no setuid, setgid or sticky bit on a configuration file.
  const mode = opts?.mode ?? 0o644;
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) {
    throw new InvalidArgumentError(`writeSmallFile: mode must be an integer in 0..0o777 (permission bits), got ${typeof mode === "number" ? "0o" + mode.toString(8) : String(mode)}`);
  }
  const data = new TextEncoder().encode(text);
  if (data.length > MAX_BYTES) throw new InvalidArgumentError(`writeSmallFile: text is larger than ${MAX_BYTES} bytes`);
  // A name of its own per call, created exclusively: two writers of one path (two shards share
  // a pid) wrote into the same temporary file, and the first rename published the mix.
  let tmp = "";
  let fd = -1;
  for (let attempt = 0; fd < 0; attempt++) {
    tmp = `${path}.tmp-${process.pid}-${threadId}-${++tmpCounter}-${Math.floor(Math.random() * 0x1_0000_0000).toString(36)}`;
    checkPath("writeSmallFile", tmp, "path with its temporary suffix");
    try {
      fd = await openat("writeSmallFile: open", tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode, opts);
    } catch (e) {
      if (!(e instanceof SystemError && e.errno === EEXIST) || attempt >= 16) throw e;
    }
  }
  const buf = allocateAlignedBuffer(Math.max(1, data.length));
  try {
    try {
      buf.bytes.set(data);
      let done = 0;
      while (done < data.length) {
        const n = await reactor().write(fd, buf, { offset: done, bufferOffset: done, length: data.length - done, signal: opts?.signal });
        if (n === 0) throw new SystemError("writeSmallFile: write", 5, "the kernel wrote 0 bytes");
        done += n;
      }
      await fsync("writeSmallFile: fdatasync", fd, 1, opts);
    } finally {
      buf.release();
      await closeFd(fd);
    }
    await twoPathOp("writeSmallFile: rename", IoOp.RENAMEAT, tmp, path, 0, opts);
  } catch (e) {
    // Leave nothing behind: the temporary file goes (best effort; `path` is untouched).
    await unlinkat("writeSmallFile: unlink", tmp, 0).catch(() => {});
    throw e;
  }
}
