/**
 * DmaFile: a file opened with O_DIRECT, read and written by DMA between the device and the
 * caller's aligned native buffers, with every operation on io_uring. Reads and writes go
 * through the shard's I/O scheduler (io-scheduler.ts); metadata operations go straight to the
 * ring. Every argument is checked in JS first: a bad call fails with a typed error and
 * nothing reaches the kernel.
 */
import { BufferPool, NativeBuffer, allocateAlignedBuffer } from "../core/buffers.ts";
import { ClosedError, InvalidArgumentError, SystemError } from "../core/errors.ts";
import { IoOp, type OpOptions } from "../core/reactor.ts";
import {
  FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, IORING_FSYNC_DATASYNC, O_CLOEXEC, O_CREAT, O_DIRECT,
  O_EXCL, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY, fsName, memoryBackedFs,
} from "./constants.ts";
import { closeFd, fallocate, fsync, ftruncate, openat, statx } from "./ops.ts";
import { checkPath, nativeIovecs, snapshotOpts } from "./scratch.ts";
import { ioScheduler, type IoOwner, type IoQueue } from "./io-scheduler.ts";
import type { FileStat } from "./stat.ts";
import { readFsInfo } from "./fs-info.ts";
import { describeValue } from "../core/describe.ts";

const EBADF = 9;
const EINVAL = 22;
const EIO = 5;
const EISDIR = 21;
/** The kernel moves at most this much in one read or write (MAX_RW_COUNT). */
const MAX_RW = 0x7fff_f000;
/** Alignment assumed where the file system does not report STATX_DIOALIGN (always safe). */
const FALLBACK_ALIGNMENT = 4096;
/** iovecs per readv/writev (one native iovec block). */
const MAX_IOVECS = 64;

/**
 * How to open: Node-style strings, or an object.
 * "r" read; "r+" read and write; "w" write, create, truncate; "w+" read, write, create,
 * truncate; "wx"/"w+x" like "w"/"w+" but fail with EEXIST if the file exists.
 */
export type OpenFlags = "r" | "r+" | "w" | "w+" | "wx" | "w+x" | OpenFlagsObject;

/** Open flags as an object, for combinations the strings lack (e.g. create without truncating). */
export interface OpenFlagsObject {
  access: "read" | "write" | "readWrite";
  create?: boolean | undefined;
  truncate?: boolean | undefined;
  exclusive?: boolean | undefined;
}

/** Options of openFileDma(). */
export interface OpenFileOptions extends OpOptions {
  /** Default "r". */
  flags?: OpenFlags | undefined;
  /** Permission bits for a created file (default 0o644, minus the umask). */
  mode?: number | undefined;
}

/** Options of a DMA read or write into/from a caller buffer. */
export interface DmaIoOptions extends OpOptions {
  /** Start within the buffer (default 0); the address there must be DMA-aligned. */
  bufferOffset?: number | undefined;
  /** Bytes to move (default: the rest of the buffer); a multiple of the disk alignment. */
  length?: number | undefined;
}

/** Options of DmaFile.dmaRead(). */
export interface DmaReadOptions extends OpOptions {
  /** Take the buffer from this pool (waiting for a free one) instead of mapping a new one. */
  pool?: BufferPool | undefined;
}

const namedFlags: Record<string, [number, boolean, boolean]> = {
  r: [O_RDONLY, true, false],
  "r+": [O_RDWR, true, true],
  w: [O_WRONLY | O_CREAT | O_TRUNC, false, true],
  "w+": [O_RDWR | O_CREAT | O_TRUNC, true, true],
  wx: [O_WRONLY | O_CREAT | O_EXCL, false, true],
  "w+x": [O_RDWR | O_CREAT | O_EXCL, true, true],
};

function decodeFlags(flags: unknown): [number, boolean, boolean] {
  if (flags === undefined) return namedFlags["r"]!;
  if (typeof flags === "string") {
    // Own keys only: "toString" or "__proto__" found Object.prototype's members here.
    const f = Object.hasOwn(namedFlags, flags) ? namedFlags[flags] : undefined;
    if (f === undefined) {
      throw new InvalidArgumentError(`openFileDma: flags must be one of ${Object.keys(namedFlags).map((k) => `"${k}"`).join(", ")} or an object; got "${flags}"`);
    }
    return f;
  }
  if (flags === null || typeof flags !== "object") throw new InvalidArgumentError(`openFileDma: flags must be a string or an object, got ${typeof flags}`);
  const o = flags as OpenFlagsObject;
  const accessModes: Record<string, [number, boolean, boolean]> = { read: [O_RDONLY, true, false], write: [O_WRONLY, false, true], readWrite: [O_RDWR, true, true] };
  // Own keys only: "constructor" opened a file neither readable nor writable.
  const access = typeof o.access === "string" && Object.hasOwn(accessModes, o.access) ? accessModes[o.access] : undefined;
  if (access === undefined) throw new InvalidArgumentError(`openFileDma: flags.access must be "read", "write" or "readWrite", got ${JSON.stringify(o.access)}`);
  for (const k of ["create", "truncate", "exclusive"] as const) {
    if (o[k] !== undefined && typeof o[k] !== "boolean") throw new InvalidArgumentError(`openFileDma: flags.${k} must be a boolean`);
  }
  if (o.truncate && !access[2]) throw new InvalidArgumentError("openFileDma: flags.truncate needs write access");
  if (o.exclusive && !o.create) throw new InvalidArgumentError("openFileDma: flags.exclusive needs create");
  let bits = access[0];
  if (o.create) bits |= O_CREAT;
  if (o.truncate) bits |= O_TRUNC;
  if (o.exclusive) bits |= O_EXCL;
  return [bits, access[1], access[2]];
}

function checkAlignment(op: string, alignment: unknown): void {
  // A zero or negative alignment answered Infinity, NaN or a "rounded up" value below `value`.
  if (typeof alignment !== "number" || !Number.isSafeInteger(alignment) || alignment < 1 || alignment > 2 ** 30 || (alignment & (alignment - 1)) !== 0) {
    throw new InvalidArgumentError(`${op}: alignment must be a power of two, got ${describeValue(alignment)}`);
  }
}

/** Rounds `value` up to a multiple of `alignment` (a power of two, else InvalidArgumentError). */
export function alignUp(value: number, alignment: number): number {
  checkAlignment("alignUp", alignment);
  return Math.ceil(value / alignment) * alignment;
}

/** Rounds `value` down to a multiple of `alignment` (a power of two, else InvalidArgumentError). */
export function alignDown(value: number, alignment: number): number {
  checkAlignment("alignDown", alignment);
  return Math.floor(value / alignment) * alignment;
}

/**
 * A pool of DMA buffers: `count` buffers of `bufferSize` bytes (a multiple of 4096), each
 * page-aligned, so they satisfy the alignment of every file system Shoal has met (ext4, xfs,
 * btrfs report 4..4096). acquire/release cost nanoseconds and no system call; creating the
 * pool costs one mmap. Throws InvalidArgumentError for a bad size or count.
 */
export function dmaBufferPool(opts: { bufferSize: number; count: number }): BufferPool {
  if (opts === null || typeof opts !== "object") throw new InvalidArgumentError("dmaBufferPool: options must be an object");
  const { bufferSize, count } = opts;
  if (!Number.isSafeInteger(bufferSize) || bufferSize < 4096 || bufferSize % 4096 !== 0) {
    throw new InvalidArgumentError(`dmaBufferPool: bufferSize must be a multiple of 4096, got ${describeValue(bufferSize)}`);
  }
  return new BufferPool({ bufferSize, count, alignment: 4096 });
}

/** A NativeBuffer that shows the first `n` bytes of `b` and releases `b` when released. */
function trimmed(b: NativeBuffer, n: number): NativeBuffer {
  // The handle's "pool" is this adapter: recycling the short view releases the whole buffer.
  const owner = { recycle: () => b.release() } as unknown as BufferPool;
  return new NativeBuffer(b.bytes.subarray(0, n), b.address, owner, -1);
}

const warnedFs = new Set<number>();

/** A checked readv/writev call. */
interface VectorArgs {
  iov: NativeBuffer | Promise<NativeBuffer>;
  bufs: NativeBuffer[];
  total: number;
}

/**
 * A file opened for direct I/O. Positions, lengths and buffer addresses must be multiples of
 * the alignments below (checked before anything is submitted). Obtain one with openFileDma().
 * Reads and writes are scheduled by the I/O scheduler in the caller's scheduling group.
 * The asynchronous methods report every error, bad arguments included, by rejecting their
 * promise ("throws" below means the promise rejects); none of them throws synchronously.
 */
export class DmaFile implements AsyncDisposable, IoOwner {
  /** The path it was opened with. */
  readonly path: string;
  readonly readable: boolean;
  readonly writable: boolean;
  /** Buffer addresses must be multiples of this (stx_dio_mem_align). */
  readonly memoryDmaAlignment: number;
  /** Read positions and lengths must be multiples of this (stx_dio_read_offset_align or stx_dio_offset_align). */
  readonly diskReadDmaAlignment: number;
  /** Write positions and lengths must be multiples of this (stx_dio_offset_align). */
  readonly diskWriteDmaAlignment: number;
  /** The file system's preferred I/O size: writes of whole blocks avoid read-modify-write. */
  readonly blockSize: number;
  /** The file system's name ("ext4", "xfs", "tmpfs"...) from statfs's magic number. */
  readonly fileSystem: string;
  /**
   * False where O_DIRECT is accepted but served from memory (tmpfs, ramfs): data is copied
   * through the page cache, there is no DMA and no device to schedule. Alignment still applies.
   */
  readonly dmaIsReal: boolean;
  /** Device holding the file: the I/O scheduler queue it uses. */
  readonly deviceMajor: number;
  readonly deviceMinor: number;
  private fd: number;
  private readonly queue: IoQueue;
  private pending = 0;
  private closing: Promise<void> | undefined;
  private drained: (() => void) | undefined;
  private readonly untrack = (): void => this.ioFinished();

  /** @internal Use openFileDma(). */
  constructor(path: string, fd: number, readable: boolean, writable: boolean, st: FileStat, fsMagicNumber: number) {
    this.path = path;
    this.fd = fd;
    this.readable = readable;
    this.writable = writable;
    // Older kernels (and tmpfs) report no STATX_DIOALIGN: 4096 is safe for every device then.
    this.memoryDmaAlignment = st.dioMemoryAlignment || FALLBACK_ALIGNMENT;
    this.diskWriteDmaAlignment = st.dioOffsetAlignment || FALLBACK_ALIGNMENT;
    this.diskReadDmaAlignment = st.dioReadOffsetAlignment || this.diskWriteDmaAlignment;
    this.blockSize = st.blockSize;
    this.fileSystem = fsName(fsMagicNumber);
    this.dmaIsReal = !memoryBackedFs.has(fsMagicNumber);
    this.deviceMajor = st.deviceMajor;
    this.deviceMinor = st.deviceMinor;
    this.queue = ioScheduler().queueFor(st.deviceMajor, st.deviceMinor);
  }

  /** True once close() was called. */
  get isClosed(): boolean {
    return this.closing !== undefined;
  }

  /** The descriptor (for diagnostics; closing it behind the file's back breaks the file). */
  get descriptor(): number {
    return this.fd;
  }

  private checkOpen(op: string): void {
    if (this.closing !== undefined) throw new ClosedError(`${op}: ${this.path} is closed`, "ERR_FILE_CLOSED");
  }

  private checkAccess(op: string, write: boolean): void {
    this.checkOpen(op);
    if (write ? !this.writable : !this.readable) {
      // The kernel would answer EBADF; say so without asking it.
      throw new SystemError(op, EBADF, `${this.path} was opened ${write ? "read-only" : "write-only"}; nothing was submitted`);
    }
  }

  private checkPosition(op: string, pos: unknown, align: number): asserts pos is number {
    if (typeof pos !== "number" || !Number.isSafeInteger(pos) || pos < 0) {
      throw new InvalidArgumentError(`${op}: position must be an integer >= 0, got ${String(pos)}`);
    }
    if (pos % align !== 0) {
      throw new InvalidArgumentError(`${op}: position ${pos} is not a multiple of the DMA alignment of ${this.path} (${align} bytes)`);
    }
  }

  private checkLength(op: string, len: unknown, align: number): asserts len is number {
    if (typeof len !== "number" || !Number.isSafeInteger(len) || len <= 0 || len > MAX_RW) {
      throw new InvalidArgumentError(`${op}: length must be an integer in 1..${MAX_RW}, got ${String(len)}`);
    }
    if (len % align !== 0) {
      throw new InvalidArgumentError(`${op}: length ${len} is not a multiple of the DMA alignment of ${this.path} (${align} bytes)`);
    }
  }

  /**
   * Checks a caller buffer, with `bufferOffset` and `length` already read from the options (their
   * getters ran before: one that released the buffer is caught here); returns [address, length].
   */
  private checkBuffer(op: string, buf: unknown, bufferOffset: unknown, length: unknown, align: number): [number, number] {
    if (!(buf instanceof NativeBuffer)) {
      throw new InvalidArgumentError(`${op}: buffer must be a NativeBuffer in native memory (dmaBufferPool, allocateAlignedBuffer), not ${buf?.constructor?.name ?? typeof buf}`);
    }
    buf.check(`${op}: buffer`);
    const start = bufferOffset ?? 0;
    if (typeof start !== "number" || !Number.isSafeInteger(start) || start < 0 || start >= buf.length) {
      throw new InvalidArgumentError(`${op}: bufferOffset ${describeValue(start)} is outside a ${buf.length}-byte buffer`);
    }
    const len = length ?? buf.length - start;
    this.checkLength(op, len, align);
    if (start + len > buf.length) throw new InvalidArgumentError(`${op}: length ${len} at ${start} exceeds a ${buf.length}-byte buffer`);
    const address = buf.address + start;
    if (address % this.memoryDmaAlignment !== 0) {
      throw new InvalidArgumentError(
        `${op}: buffer address is not a multiple of the memory DMA alignment of ${this.path} (${this.memoryDmaAlignment} bytes); ` +
          "use a buffer from dmaBufferPool() or allocateAlignedBuffer()",
      );
    }
    return [address, len];
  }

  /** @internal The I/O scheduler reports each read or write piece it starts and finishes. */
  ioStarted(): void {
    this.pending++;
  }

  /** @internal */
  ioFinished(): void {
    if (--this.pending === 0 && this.drained !== undefined) this.drained();
  }

  /** Counts a metadata operation as pending until it settles (close() waits for it). */
  private track<T>(p: Promise<T>): Promise<T> {
    this.pending++;
    p.then(this.untrack, this.untrack);
    return p;
  }

  /**
   * Reads `len` bytes at `pos` into a new DMA buffer that the caller releases. The buffer is
   * shorter than `len` only at the end of the file. Cost: one mmap for the buffer unless
   * `opts.pool` is given (the pool's bufferSize must be >= len), plus the read.
   * Throws InvalidArgumentError (unaligned or negative position/length), ClosedError, SystemError.
   */
  async dmaRead(pos: number, len: number, opts?: DmaReadOptions): Promise<NativeBuffer> {
    const op = "dmaRead";
    const o = snapshotOpts(op, opts);
    this.checkAccess(op, false);
    this.checkPosition(op, pos, this.diskReadDmaAlignment);
    this.checkLength(op, len, this.diskReadDmaAlignment);
    const pool = opts?.pool;
    if (pool !== undefined && (!(pool instanceof BufferPool) || pool.bufferSize < len)) {
      throw new InvalidArgumentError(`${op}: pool must be a BufferPool with bufferSize >= ${len}`);
    }
    const buf = pool ? (pool.tryAcquire() ?? (await pool.acquireEventually(o))) : allocateAlignedBuffer(len, 4096);
    let n: number;
    try {
      if (buf.address % this.memoryDmaAlignment !== 0) {
        throw new InvalidArgumentError(`${op}: the pool's buffers are not aligned to ${this.memoryDmaAlignment} bytes; use dmaBufferPool()`);
      }
      this.checkOpen(op); // it may have closed while we waited for a pool buffer
      n = await this.queue.submitRw(op, false, this.fd, buf.address, len, pos, o, buf, this);
    } catch (e) {
      buf.release();
      throw e;
    }
    return n === buf.length ? buf : trimmed(buf, n);
  }

  /**
   * Reads into `buf` (a DMA-aligned NativeBuffer) at file position `pos`; resolves with the bytes
   * read (fewer only at the end of the file). The buffer stays pinned until the read finished.
   * Throws InvalidArgumentError, ClosedError (file closed, buffer released), SystemError.
   */
  dmaReadInto(pos: number, buf: NativeBuffer, opts?: DmaIoOptions): Promise<number> {
    const op = "dmaReadInto";
    let address: number;
    let len: number;
    let o: OpOptions | undefined;
    try {
      // Every option is read once, before the buffer is checked (a getter may release it).
      o = snapshotOpts(op, opts);
      const bufferOffset = opts?.bufferOffset;
      const length = opts?.length;
      this.checkAccess(op, false);
      this.checkPosition(op, pos, this.diskReadDmaAlignment);
      [address, len] = this.checkBuffer(op, buf, bufferOffset, length, this.diskReadDmaAlignment);
    } catch (e) {
      // Reject rather than throw, like every async call; no async wrapper on the hot path.
      return Promise.reject(e);
    }
    return this.queue.submitRw(op, false, this.fd, address, len, pos, o, buf, this);
  }

  /**
   * Writes `buf` (or `opts.length` bytes of it from `opts.bufferOffset`) at `pos`; resolves with
   * the bytes written, always the whole length: a short write is continued, and one that cannot
   * continue (ENOSPC...) rejects with SystemError. Does not make the data durable: see flush().
   * Throws InvalidArgumentError, ClosedError, SystemError (EBADF for a read-only file, before
   * anything is submitted).
   */
  dmaWrite(pos: number, buf: NativeBuffer, opts?: DmaIoOptions): Promise<number> {
    const op = "dmaWrite";
    let address: number;
    let len: number;
    let o: OpOptions | undefined;
    try {
      o = snapshotOpts(op, opts);
      const bufferOffset = opts?.bufferOffset;
      const length = opts?.length;
      this.checkAccess(op, true);
      this.checkPosition(op, pos, this.diskWriteDmaAlignment);
      [address, len] = this.checkBuffer(op, buf, bufferOffset, length, this.diskWriteDmaAlignment);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.queue.submitRw(op, true, this.fd, address, len, pos, o, buf, this, this.diskWriteDmaAlignment);
  }

  /**
   * Checks a readv/writev call (its options were read before, by snapshotOpts). The buffers are
   * copied out of the caller's array first and checked after: an element getter runs once, and
   * one that released a buffer is caught; the request uses the copy, never the array again.
   */
  private vector(op: string, write: boolean, pos: number, bufs: unknown): VectorArgs {
    this.checkAccess(op, write);
    const align = write ? this.diskWriteDmaAlignment : this.diskReadDmaAlignment;
    this.checkPosition(op, pos, align);
    if (!Array.isArray(bufs) || bufs.length === 0 || bufs.length > MAX_IOVECS) {
      throw new InvalidArgumentError(`${op}: expected an array of 1..${MAX_IOVECS} NativeBuffers`);
    }
    const list: unknown[] = [];
    for (let i = 0; i < bufs.length && i < MAX_IOVECS; i++) list.push(bufs[i]);
    let total = 0;
    for (let i = 0; i < list.length; i++) {
      total += this.checkBuffer(`${op}: buffers[${i}]`, list[i], undefined, undefined, align)[1];
    }
    if (total > MAX_RW) throw new InvalidArgumentError(`${op}: ${total} bytes is more than one request may move (${MAX_RW})`);
    return { iov: nativeIovecs(), bufs: list as NativeBuffer[], total };
  }

  private async submitVector(op: string, write: boolean, pos: number, bufs: NativeBuffer[], total: number, iovP: NativeBuffer | Promise<NativeBuffer>, opts: OpOptions | undefined): Promise<number> {
    const iov = iovP instanceof NativeBuffer ? iovP : await iovP;
    if (iov !== iovP) {
      // While waiting for an iovec array, a buffer may have been released (and reused):
      // refuse it now rather than let the kernel write into someone else's memory.
      for (let i = 0; i < bufs.length; i++) {
        if (bufs[i]!.isReleased) {
          iov.release();
          throw new ClosedError(`${op}: buffers[${i}] was released before the request was submitted`, "ERR_BUFFER_RELEASED");
        }
      }
    }
    // struct iovec { u64 base; u64 len; } as four u32 words, little endian, no BigInt.
    const w = new Uint32Array(iov.bytes.buffer, iov.bytes.byteOffset, bufs.length * 4);
    for (let i = 0; i < bufs.length; i++) {
      const a = bufs[i]!.address;
      w[i * 4] = a >>> 0;
      w[i * 4 + 1] = Math.floor(a / 0x1_0000_0000);
      w[i * 4 + 2] = bufs[i]!.length;
      w[i * 4 + 3] = 0;
    }
    const opcode = write ? IoOp.WRITEV : IoOp.READV;
    const p = this.queue.submit(op, opcode, this.fd, iov.address, bufs.length, pos, this.queue.cost(write, total), opts, [iov, ...bufs], this);
    iov.release(); // recycled once the kernel is done with it
    const n = await p;
    if (!write || n === total) return n;
    if (n === 0 || n % this.diskWriteDmaAlignment !== 0) {
      // The rest would start off the DMA alignment (the kernel would answer EINVAL): fail as a
      // short dmaWrite does (the I/O scheduler's continuation), naming what was written.
      throw new SystemError(op, EIO, `short write: ${n} of ${total} bytes, and the rest cannot be written by DMA`);
    }
    // A short gather write: finish the rest buffer by buffer.
    let done = n;
    let offset = 0;
    for (const b of bufs) {
      const end = offset + b.length;
      if (done < end) {
        // Straight to the queue, not through dmaWrite: a close() called meanwhile waits for this
        // writev (it is tracked), so the fd is still open, but dmaWrite would refuse a closing file.
        await this.queue.submitRw("writev", true, this.fd, b.address + (done - offset), end - done, pos + done, opts, b, this, this.diskWriteDmaAlignment);
        done = end;
      }
      offset = end;
    }
    return done;
  }

  /**
   * Scatter read into up to 64 DMA buffers (each wholly, in order) from `pos`; resolves with the
   * total bytes read (fewer only at the end of the file). One request, not split.
   * Throws InvalidArgumentError, ClosedError, SystemError.
   */
  readv(pos: number, bufs: NativeBuffer[], opts?: OpOptions): Promise<number> {
    let v: VectorArgs;
    let o: OpOptions | undefined;
    try {
      o = snapshotOpts("readv", opts);
      v = this.vector("readv", false, pos, bufs);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.track(this.submitVector("readv", false, pos, v.bufs, v.total, v.iov, o));
  }

  /**
   * Gather write of up to 64 DMA buffers (each wholly, in order) at `pos`; resolves with the
   * total bytes written (all of them, or it rejects). Throws like dmaWrite().
   */
  writev(pos: number, bufs: NativeBuffer[], opts?: OpOptions): Promise<number> {
    let v: VectorArgs;
    let o: OpOptions | undefined;
    try {
      o = snapshotOpts("writev", opts);
      v = this.vector("writev", true, pos, bufs);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.track(this.submitVector("writev", true, pos, v.bufs, v.total, v.iov, o));
  }

  /** The file's metadata (statx through the ring). Throws ClosedError, SystemError. */
  async stat(opts?: OpOptions): Promise<FileStat> {
    const o = snapshotOpts("stat", opts);
    this.checkOpen("stat");
    return this.track(statx("stat", this.fd, "", 0, o));
  }

  /** The file's size in bytes (one statx). Throws ClosedError, SystemError. */
  async size(opts?: OpOptions): Promise<number> {
    return (await this.stat(opts)).size;
  }

  /**
   * Sets the file's size to `length` bytes (any value: the size need not be aligned),
   * dropping or zero-extending the tail. Throws InvalidArgumentError, ClosedError, SystemError.
   */
  async truncate(length: number, opts?: OpOptions): Promise<void> {
    const o = snapshotOpts("truncate", opts);
    this.checkAccess("truncate", true);
    if (!Number.isSafeInteger(length) || length < 0) throw new InvalidArgumentError(`truncate: length must be an integer >= 0, got ${describeValue(length)}`);
    await this.track(ftruncate("truncate", this.fd, length, o));
  }

  private checkRange(op: string, pos: number, len: number): void {
    if (!Number.isSafeInteger(pos) || pos < 0) throw new InvalidArgumentError(`${op}: position must be an integer >= 0, got ${describeValue(pos)}`);
    if (!Number.isSafeInteger(len) || len <= 0) throw new InvalidArgumentError(`${op}: length must be an integer > 0, got ${describeValue(len)}`);
  }

  /**
   * Reserves disk blocks for `len` bytes at `pos` (fallocate), so later writes there cannot
   * fail with ENOSPC and need no block allocation. By default the file's size is unchanged
   * (FALLOC_FL_KEEP_SIZE); `{ keepSize: false }` extends it. Throws InvalidArgumentError,
   * ClosedError, SystemError (ENOSPC, EOPNOTSUPP).
   */
  async allocate(pos: number, len: number, opts?: OpOptions & { keepSize?: boolean }): Promise<void> {
    const o = snapshotOpts("allocate", opts);
    if (opts?.keepSize !== undefined && typeof opts.keepSize !== "boolean") {
      throw new InvalidArgumentError(`allocate: keepSize must be a boolean, got ${typeof opts.keepSize}`);
    }
    this.checkAccess("allocate", true);
    this.checkRange("allocate", pos, len);
    const mode = opts?.keepSize === false ? 0 : FALLOC_FL_KEEP_SIZE;
    await this.track(fallocate("allocate", this.fd, mode, pos, len, o));
  }

  /**
   * Frees the disk blocks of `len` bytes at `pos` (a hole: reads return zeros), keeping the
   * size (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE). Partial blocks at the ends are zeroed.
   * Throws InvalidArgumentError, ClosedError, SystemError (EOPNOTSUPP).
   */
  async discard(pos: number, len: number, opts?: OpOptions): Promise<void> {
    const o = snapshotOpts("discard", opts);
    this.checkAccess("discard", true);
    this.checkRange("discard", pos, len);
    await this.track(fallocate("discard", this.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, pos, len, o));
  }

  /**
   * Makes every completed write durable (fdatasync through the ring): after it resolves, the
   * data survives a crash. Writes still in flight are not covered. Throws ClosedError, SystemError.
   */
  async flush(opts?: OpOptions): Promise<void> {
    const o = snapshotOpts("flush", opts);
    this.checkOpen("flush");
    await this.track(fsync("flush", this.fd, IORING_FSYNC_DATASYNC, o));
  }

  /** A page-aligned buffer of at least `size` bytes, rounded up to the write alignment (one mmap). */
  allocateDmaBuffer(size: number): NativeBuffer {
    if (!Number.isSafeInteger(size) || size <= 0) throw new InvalidArgumentError(`allocateDmaBuffer: size must be an integer > 0, got ${describeValue(size)}`);
    return allocateAlignedBuffer(alignUp(size, this.diskWriteDmaAlignment), 4096);
  }

  /**
   * Closes the file: new calls fail with ClosedError at once, operations already issued finish
   * first, then the descriptor is closed through the ring. Calling it again returns the same
   * promise. Does not flush. Rejects with SystemError if close(2) fails.
   * The kernel may hold the file a little longer: an operation that ran on an io_uring worker
   * thread (a write that extends the file, an fsync) can leave the last reference to it with
   * that worker, whose release runs when this shard next enters its ring (its rings defer such
   * work to their owner), so unmounting the file system right after close() can find it busy
   * until the shard's loop turns once more (test/fs/fixtures/io-uring-release.ts waits for that).
   */
  close(): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    this.closing = (async () => {
      if (this.pending > 0) await new Promise<void>((resolve) => (this.drained = resolve));
      const fd = this.fd;
      this.fd = -1;
      await closeFd(fd);
    })();
    return this.closing;
  }

  /** `await using f = await openFileDma(...)` closes it at the end of the block. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Opens `path` for direct I/O (O_DIRECT) through io_uring (openat, then statx for the DMA
 * alignment and device, and statfs for the file system). On tmpfs and ramfs, which accept
 * O_DIRECT but serve it from memory, the file has `dmaIsReal === false` and a warning is
 * emitted once per file system type. Only regular files are supported.
 * Cost: three system calls (two through the ring).
 * Throws InvalidArgumentError (bad path, flags, mode), SystemError (ENOENT, EEXIST, EACCES,
 * EISDIR; EINVAL where the file system refuses O_DIRECT), AbortError.
 */
export async function openFileDma(path: string, opts?: OpenFileOptions): Promise<DmaFile> {
  const op = "openFileDma";
  checkPath(op, path);
  const signalOpts = snapshotOpts(op, opts);
  const [flags, readable, writable] = decodeFlags(opts?.flags);
  const mode = opts?.mode ?? 0o644;
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) throw new InvalidArgumentError(`${op}: mode must be an integer in 0..0o7777, got ${describeValue(mode)}`);
  let fd: number;
  try {
    fd = await openat(op, path, flags | O_DIRECT | O_CLOEXEC, mode, signalOpts);
  } catch (e) {
    if (e instanceof SystemError && e.errno === EINVAL) {
      // open(2) answers EINVAL for O_DIRECT on a directory too: tell the two apart.
      const st = await statx(`${op}: statx`, -1, path, 0).catch(() => undefined);
      if (st?.type === "directory") throw new SystemError(op, EISDIR, `${path} is a directory`);
      // A device, FIFO or socket refuses O_DIRECT for what it is, not for its file system.
      if (st !== undefined && st.type !== "file") throw new SystemError(op, EINVAL, `${path} is a ${st.type}, not a regular file`);
      throw new SystemError(op, EINVAL, `${path}: the file system refuses O_DIRECT (or the flags are invalid)`);
    }
    if (e instanceof SystemError) throw new SystemError(op, e.errno, path);
    throw e;
  }
  try {
    const st = await statx(`${op}: statx`, fd, "", 0, signalOpts);
    if (st.type !== "file") throw new SystemError(op, st.type === "directory" ? EISDIR : EINVAL, `${path} is a ${st.type}, not a regular file`);
    const magic = readFsInfo(fd).magic;
    if (memoryBackedFs.has(magic)) {
      if (!warnedFs.has(magic)) {
        warnedFs.add(magic);
        process.emitWarning(
          `${path} is on ${fsName(magic)}, which accepts O_DIRECT but serves it from memory: no DMA, and the I/O scheduler has no device to share`,
          { code: "SHOAL_DMA_NOT_REAL" },
        );
      }
    }
    const file = new DmaFile(path, fd, readable, writable, st, magic);
    await ioScheduler().queueFor(st.deviceMajor, st.deviceMinor).probeDevice();
    return file;
  } catch (e) {
    await closeFd(fd).catch(() => {});
    throw e;
  }
}
