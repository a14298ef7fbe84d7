/**
 * Buffered byte streams over a DmaFile: unaligned reads and writes of any size on top of
 * aligned DMA. The input stream keeps `readAhead` reads in flight ahead of the reader; the
 * output stream keeps up to `writeBehind` full buffers being written while the writer fills
 * the next, pads the last block to the DMA alignment and truncates the padding away on close.
 */
import type { BufferPool, NativeBuffer } from "../core/buffers.ts";
import { ClosedError, InvalidArgumentError } from "../core/errors.ts";
import type { OpOptions } from "../core/reactor.ts";
import { DmaFile, alignDown, alignUp, dmaBufferPool } from "./dma-file.ts";
import { describeValue } from "../core/describe.ts";

const DEFAULT_BUFFER = 128 * 1024;

function checkStreamOptions(op: string, file: unknown, opts: unknown): void {
  if (!(file instanceof DmaFile)) {
    throw new InvalidArgumentError(`${op}: file must be a DmaFile from openFileDma()`);
  }
  if (opts !== undefined && (opts === null || typeof opts !== "object")) throw new InvalidArgumentError(`${op}: options must be an object`);
  const s = (opts as OpOptions | undefined)?.signal;
  if (s !== undefined && !(s instanceof AbortSignal)) throw new InvalidArgumentError(`${op}: signal must be an AbortSignal`);
}

function checkBufferSize(op: string, size: number, file: DmaFile, align: number): void {
  if (!Number.isSafeInteger(size) || size < 4096 || size % 4096 !== 0 || size % align !== 0 || size > 64 * 1024 * 1024) {
    throw new InvalidArgumentError(`${op}: bufferSize must be a multiple of 4096 (and of ${file.path}'s DMA alignment ${align}) up to 64 MiB, got ${describeValue(size)}`);
  }
}

function checkCount(op: string, name: string, v: number, min: number): void {
  if (!Number.isSafeInteger(v) || v < min || v > 64) throw new InvalidArgumentError(`${op}: ${name} must be an integer in ${min}..64, got ${describeValue(v)}`);
}

/** Options of FileInputStream. */
export interface FileInputStreamOptions extends OpOptions {
  /** Bytes per DMA read (multiple of 4096; default 128 KiB). */
  bufferSize?: number | undefined;
  /** Reads kept in flight ahead of the reader (default 2; 0 reads on demand). */
  readAhead?: number | undefined;
  /** First byte to read (any position; default 0). */
  offset?: number | undefined;
  /** Read at most this many bytes (default: to the end of the file). */
  length?: number | undefined;
  /** Close the file when the stream closes (default true: the stream owns the file). */
  closeFile?: boolean | undefined;
}

interface PendingRead {
  pos: number;
  len: number;
  buf: NativeBuffer;
  done: Promise<number>;
}

/**
 * Reads a file as a stream of byte chunks with read-ahead. Memory: (readAhead + 1) x bufferSize
 * of native buffers, allocated once. One call at a time: a read(), readExactly() or skip()
 * called while another is in progress is refused with InvalidArgumentError (await each first).
 */
export class FileInputStream implements AsyncDisposable, AsyncIterable<Uint8Array> {
  readonly file: DmaFile;
  readonly bufferSize: number;
  readonly readAhead: number;
  private readonly pool: BufferPool;
  private readonly end: number;
  private readonly signal: AbortSignal | undefined;
  private readonly closeFile: boolean;
  private nextIssue: number;
  /** Bytes to skip at the start of the first chunk (the offset was not aligned). */
  private skipFirst: number;
  private readonly pending: PendingRead[] = [];
  private current: NativeBuffer | undefined;
  /** Unconsumed bytes of the current chunk. */
  private view: Uint8Array = new Uint8Array(0);
  private eof = false;
  private error: unknown;
  private closed: Promise<void> | undefined;
  private consumed = 0;
  /** The chunk load in progress (read, readExactly, skip): close() waits for it. */
  private loading: Promise<boolean> | undefined;
  /**
   * A read(), readExactly() or skip() is in progress. Overlapping calls each loaded chunks and
   * took the other's bytes (both came back short, as at the end of the file, and read() gave
   * null mid-file); they cannot be queued either, as the next call recycles read()'s view.
   */
  private busy = false;

  /**
   * Starts a stream over `file` (opened readable). Issues the first reads at once.
   * Throws InvalidArgumentError for bad options, ClosedError for a closed file.
   */
  constructor(file: DmaFile, opts?: FileInputStreamOptions) {
    const op = "FileInputStream";
    checkStreamOptions(op, file, opts);
    if (file.isClosed) throw new ClosedError(`${op}: ${file.path} is closed`, "ERR_FILE_CLOSED");
    if (!file.readable) throw new InvalidArgumentError(`${op}: ${file.path} was not opened for reading`);
    const align = file.diskReadDmaAlignment;
    this.bufferSize = opts?.bufferSize ?? Math.max(DEFAULT_BUFFER, alignUp(DEFAULT_BUFFER, align));
    checkBufferSize(op, this.bufferSize, file, align);
    this.readAhead = opts?.readAhead ?? 2;
    checkCount(op, "readAhead", this.readAhead, 0);
    const offset = opts?.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) throw new InvalidArgumentError(`${op}: offset must be an integer >= 0, got ${describeValue(offset)}`);
    const length = opts?.length ?? Infinity;
    if (length !== Infinity && (!Number.isSafeInteger(length) || length < 0)) throw new InvalidArgumentError(`${op}: length must be an integer >= 0, got ${describeValue(length)}`);
    this.file = file;
    this.signal = opts?.signal;
    this.closeFile = opts?.closeFile ?? true;
    this.end = offset + length;
    this.nextIssue = alignDown(offset, align);
    this.skipFirst = offset - this.nextIssue;
    this.pool = dmaBufferPool({ bufferSize: this.bufferSize, count: this.readAhead + 1 });
    this.fill();
  }

  /** Bytes handed to the reader so far. */
  get position(): number {
    return this.consumed;
  }

  private fill(): void {
    const limit = this.readAhead + 1 - (this.current ? 1 : 0);
    while (!this.eof && this.pending.length < limit && this.nextIssue < this.end) {
      const buf = this.pool.tryAcquire();
      if (buf === undefined) return;
      const pos = this.nextIssue;
      const len = Math.min(this.bufferSize, alignUp(this.end - pos, this.file.diskReadDmaAlignment));
      const done = this.file.dmaReadInto(pos, buf, { length: len, signal: this.signal });
      done.catch(() => {}); // observed when the reader reaches it
      this.pending.push({ pos, len, buf, done });
      this.nextIssue += len;
    }
  }

  private releaseCurrent(): void {
    if (this.current !== undefined) {
      this.current.release();
      this.current = undefined;
    }
  }

  private checkUsable(op: string): void {
    if (this.closed !== undefined) throw new ClosedError(`${op}: the stream is closed`);
    if (this.error !== undefined) throw this.error;
  }

  /** Checks the stream and claims it for one call (the caller clears `busy` when done). */
  private begin(op: string): void {
    this.checkUsable(op);
    if (this.busy) {
      throw new InvalidArgumentError(`${op}: another read(), readExactly() or skip() is in progress on this stream; await it first`);
    }
    this.busy = true;
  }

  /** next(), remembered so that close() can wait for it before freeing the buffers. */
  private advance(): Promise<boolean> {
    // A skip() or readExactly() looping over chunks resumes after close() began: no new reads.
    if (this.closed !== undefined) return Promise.reject(new ClosedError("the stream was closed during the read"));
    const p = this.next();
    this.loading = p;
    return p;
  }

  /** Loads the next chunk into `view`; false at the end. */
  private async next(): Promise<boolean> {
    this.releaseCurrent();
    this.view = new Uint8Array(0);
    if (this.eof && this.pending.length === 0) return false;
    this.fill();
    const r = this.pending.shift();
    if (r === undefined) {
      this.eof = true;
      return false;
    }
    let n: number;
    try {
      n = await r.done;
    } catch (e) {
      r.buf.release();
      this.error = e;
      throw e;
    }
    this.current = r.buf; // close() (which waits for this read) releases it
    if (n < r.len || r.pos + n >= this.end) this.eof = true; // a short read is the end of the file
    const start = this.skipFirst;
    this.skipFirst = 0;
    const stop = Math.min(n, this.end - r.pos);
    this.view = start < stop ? r.buf.bytes.subarray(start, stop) : new Uint8Array(0);
    if (this.eof) {
      // Reads issued past the end return nothing; give their buffers back.
      for (const p of this.pending.splice(0)) await p.done.then(() => p.buf.release(), () => p.buf.release());
    } else if (this.closed === undefined) {
      this.fill(); // no new reads once close() began
    }
    if (this.view.length === 0) {
      if (this.closed !== undefined) return false;
      if (this.eof || r.pos + n >= this.end) {
        this.eof = true;
        return false;
      }
      return this.next();
    }
    return true;
  }

  /**
   * The next chunk of bytes, or null at the end. Zero-copy: the view is valid until the next
   * call on this stream. Rejects with the read's SystemError/AbortError (and keeps failing),
   * or ClosedError after close().
   */
  async read(): Promise<Uint8Array | null> {
    this.begin("read");
    try {
      if (this.view.length === 0 && !(await this.advance())) return null;
      const v = this.view;
      this.view = new Uint8Array(0);
      this.consumed += v.length;
      return v;
    } finally {
      this.busy = false;
    }
  }

  /**
   * Exactly `n` bytes as a new Uint8Array, copied across chunk boundaries; fewer only at the
   * end of the file. Throws InvalidArgumentError for a bad `n`; rejects like read().
   */
  async readExactly(n: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`readExactly: n must be an integer >= 0, got ${describeValue(n)}`);
    this.begin("readExactly");
    try {
      // Grown as bytes arrive past 1 MiB, not allocated at `n`: readExactly(2 ** 53 - 1) ("the
      // rest") threw RangeError up front, and a large `n` mapped that much memory for a short
      // file. Up to 1 MiB (or a buffer) it is allocated once, as before.
      let out = new Uint8Array(Math.min(n, Math.max(this.bufferSize, 1 << 20)));
      let got = 0;
      while (got < n) {
        if (this.view.length === 0 && !(await this.advance())) break;
        const take = Math.min(n - got, this.view.length);
        if (got + take > out.length) {
          const grown = new Uint8Array(Math.min(n, Math.max(got + take, out.length * 2)));
          grown.set(out.subarray(0, got));
          out = grown;
        }
        out.set(this.view.subarray(0, take), got);
        this.view = this.view.subarray(take);
        got += take;
      }
      this.consumed += got;
      return got === out.length ? out : out.subarray(0, got);
    } finally {
      this.busy = false;
    }
  }

  /** Skips `n` bytes (fewer at the end of the file). Resolves with the bytes skipped. */
  async skip(n: number): Promise<number> {
    if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`skip: n must be an integer >= 0, got ${describeValue(n)}`);
    this.begin("skip");
    try {
      let left = n;
      while (left > 0) {
        if (this.view.length === 0 && !(await this.advance())) break;
        const take = Math.min(left, this.view.length);
        this.view = this.view.subarray(take);
        left -= take;
      }
      this.consumed += n - left;
      return n - left;
    } finally {
      this.busy = false;
    }
  }

  /** Chunks until the end (each view valid until the next iteration). */
  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    for (;;) {
      const v = await this.read();
      if (v === null) return;
      yield v;
    }
  }

  /**
   * Waits for reads in flight, frees the buffers and (by default) closes the file. Idempotent.
   * Rejects with SystemError if closing the file fails.
   */
  close(): Promise<void> {
    if (this.closed !== undefined) return this.closed;
    this.closed = (async () => {
      try {
        // A read in progress holds a buffer out of `pending`: let it finish first (its view,
        // like every view, is invalid once close() is called).
        for (let l = this.loading; l !== undefined; l = this.loading === l ? undefined : this.loading) {
          await l.catch(() => {});
        }
        this.releaseCurrent();
        this.view = new Uint8Array(0);
        for (const p of this.pending.splice(0)) await p.done.then(() => p.buf.release(), () => p.buf.release());
        this.pool.close();
      } finally {
        if (this.closeFile) await this.file.close();
      }
    })();
    return this.closed;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Options of FileOutputStream. */
export interface FileOutputStreamOptions extends OpOptions {
  /** Bytes per DMA write (multiple of 4096; default 128 KiB). */
  bufferSize?: number | undefined;
  /** Full buffers being written while the writer fills the next (default 2; at least 1). */
  writeBehind?: number | undefined;
  /** Where the stream starts writing (a multiple of the file's write alignment; default 0). */
  offset?: number | undefined;
  /** Close the file when the stream closes (default true: the stream owns the file). */
  closeFile?: boolean | undefined;
}

/**
 * Writes a byte stream to a file through aligned DMA writes with write-behind. write() copies
 * into the current buffer and returns at once unless `writeBehind` writes are already in
 * flight (back-pressure). close() writes the padded tail, truncates the file to the true size
 * and makes it durable. write() calls may overlap (they run in call order, each copying its
 * bytes when its turn comes: leave them unchanged until it resolves); flush() and close() wait
 * for the writes called before them. Other calls must not overlap: await each before the next.
 */
export class FileOutputStream implements AsyncDisposable {
  readonly file: DmaFile;
  readonly bufferSize: number;
  readonly writeBehind: number;
  private readonly pool: BufferPool;
  private readonly signal: AbortSignal | undefined;
  private readonly closeFile: boolean;
  private buf: NativeBuffer | undefined;
  private fillBytes = 0;
  /** File position of the current buffer's first byte. */
  private bufPos: number;
  private readonly inflight = new Set<Promise<void>>();
  private error: unknown;
  private closed: Promise<void> | undefined;
  private readonly start: number;
  /** The file's size just before the last padded tail write (see trimPadding). */
  private sizeBeforeTail = 0;
  /**
   * The last write() that has not finished. A write waiting for a free buffer lets the caller's
   * next call run: a second write then took a buffer of its own and replaced the first one's
   * (its bytes were lost, the buffer never came back: later writes hung, close() failed), and
   * close() wrote the tail without it. So writes queue behind it, and flush()/close() wait.
   */
  private writing: Promise<void> | undefined;

  /**
   * Starts a stream writing `file` (opened writable) from `opts.offset`.
   * Throws InvalidArgumentError for bad options or a read-only file, ClosedError for a closed file.
   */
  constructor(file: DmaFile, opts?: FileOutputStreamOptions) {
    const op = "FileOutputStream";
    checkStreamOptions(op, file, opts);
    if (file.isClosed) throw new ClosedError(`${op}: ${file.path} is closed`, "ERR_FILE_CLOSED");
    if (!file.writable) throw new InvalidArgumentError(`${op}: ${file.path} was opened read-only`);
    const align = file.diskWriteDmaAlignment;
    this.bufferSize = opts?.bufferSize ?? Math.max(DEFAULT_BUFFER, alignUp(DEFAULT_BUFFER, align));
    checkBufferSize(op, this.bufferSize, file, align);
    this.writeBehind = opts?.writeBehind ?? 2;
    checkCount(op, "writeBehind", this.writeBehind, 1);
    const offset = opts?.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset % align !== 0) {
      throw new InvalidArgumentError(`${op}: offset must be an integer >= 0 and a multiple of ${align}, got ${describeValue(offset)}`);
    }
    this.file = file;
    this.signal = opts?.signal;
    this.closeFile = opts?.closeFile ?? true;
    this.bufPos = offset;
    this.start = offset;
    this.pool = dmaBufferPool({ bufferSize: this.bufferSize, count: this.writeBehind + 1 });
  }

  /** Bytes written into the stream so far. */
  get position(): number {
    return this.bufPos + this.fillBytes - this.start;
  }

  private checkUsable(op: string): void {
    if (this.closed !== undefined) throw new ClosedError(`${op}: the stream is closed`);
    if (this.error !== undefined) throw this.error;
  }

  private issue(buf: NativeBuffer, pos: number, length: number): Promise<void> {
    const p: Promise<void> = this.file.dmaWrite(pos, buf, { length, signal: this.signal }).then(
      () => {
        buf.release();
        this.inflight.delete(p);
      },
      (e: unknown) => {
        buf.release();
        this.inflight.delete(p);
        this.error ??= e;
      },
    );
    this.inflight.add(p);
    return p;
  }

  /**
   * Appends `data` (bytes, or a string as UTF-8). Resolves at once when it fits the current
   * buffer; otherwise once a buffer is free for the rest. Rejects with the first failed
   * write's error (the stream then keeps failing), or ClosedError after close().
   */
  write(data: Uint8Array | string): Promise<void> {
    try {
      this.checkUsable("write");
    } catch (e) {
      return Promise.reject(e);
    }
    const prev = this.writing;
    const p = prev === undefined ? this.append(data) : prev.then(() => this.append(data), () => this.append(data));
    this.writing = p;
    const done = (): void => {
      if (this.writing === p) this.writing = undefined;
    };
    p.then(done, done);
    return p;
  }

  /** One write()'s turn. A close() called meanwhile waits for it, so only a failed write stops it. */
  private async append(data: Uint8Array | string): Promise<void> {
    if (this.error !== undefined) throw this.error;
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    if (!(bytes instanceof Uint8Array)) throw new InvalidArgumentError("write: data must be a Uint8Array or a string");
    let off = 0;
    while (off < bytes.length) {
      if (this.buf === undefined) {
        this.buf = this.pool.tryAcquire() ?? (await this.pool.acquireEventually({ signal: this.signal }));
        if (this.error !== undefined) throw this.error;
      }
      const take = Math.min(bytes.length - off, this.bufferSize - this.fillBytes);
      this.buf.bytes.set(bytes.subarray(off, off + take), this.fillBytes);
      this.fillBytes += take;
      off += take;
      if (this.fillBytes === this.bufferSize) {
        void this.issue(this.buf, this.bufPos, this.bufferSize);
        this.buf = undefined;
        this.bufPos += this.bufferSize;
        this.fillBytes = 0;
      }
    }
  }

  /**
   * Writes the partial tail padded to the alignment and waits for it. Returns the padded length.
   * The padding is zeros past the end of the file; where the file already has bytes there (a
   * stream over an existing file that ends before it), they are read first and written back
   * unchanged. A write-only file cannot be read: then that case fails (nothing is overwritten).
   */
  private async writeTail(): Promise<number> {
    if (this.buf === undefined || this.fillBytes === 0) return 0;
    const align = this.file.diskWriteDmaAlignment;
    const padded = alignUp(this.fillBytes, align);
    this.buf.bytes.fill(0, this.fillBytes, padded);
    if (padded > this.fillBytes) {
      const end = this.bufPos + this.fillBytes;
      const size = await this.file.size({ signal: this.signal });
      this.sizeBeforeTail = size;
      if (size > end) await this.keepExistingTail(end, padded);
    }
    await this.file.dmaWrite(this.bufPos, this.buf, { length: padded, signal: this.signal });
    return padded;
  }

  /** Copies the file's bytes under the tail block's padding into the buffer (read-modify-write). */
  private async keepExistingTail(end: number, padded: number): Promise<void> {
    const file = this.file;
    if (!file.readable) {
      throw new InvalidArgumentError(
        `FileOutputStream: the stream ends at ${end}, inside ${file.path}, which has bytes after it; ` +
          "its last block must be read to keep them, but the file was opened write-only",
      );
    }
    const align = Math.max(file.diskReadDmaAlignment, file.diskWriteDmaAlignment);
    const blockStart = alignDown(end, align);
    const block = await file.dmaRead(blockStart, align, { signal: this.signal });
    try {
      // Bytes [end, bufPos + padded) of the file go under the padding; a short read (the
      // file ends inside the block) leaves zeros past its end.
      const from = end - blockStart;
      const to = Math.min(block.length, this.bufPos + padded - blockStart);
      if (to > from) this.buf!.bytes.set(block.bytes.subarray(from, to), this.fillBytes);
    } finally {
      block.release();
    }
  }

  private async drain(): Promise<void> {
    while (this.inflight.size > 0) await Promise.all([...this.inflight]);
    if (this.error !== undefined) throw this.error;
  }

  /**
   * Cuts the padding off again: the file ends at the true end of the stream, or where it ended
   * before the padded tail was written if that is further (an existing longer file keeps its
   * bytes; the tail write carried them over, see keepExistingTail).
   */
  private async trimPadding(padded: number): Promise<void> {
    if (padded === this.fillBytes) return;
    const keepTo = Math.max(this.bufPos + this.fillBytes, this.sizeBeforeTail);
    if ((await this.file.size()) > keepTo) await this.file.truncate(keepTo);
  }

  /**
   * Makes everything written so far durable: writes the padded tail, waits for all writes,
   * trims the padding (ftruncate) and runs fdatasync. Later writes continue where the stream
   * was. Rejects with the first write error.
   */
  async flush(): Promise<void> {
    this.checkUsable("flush");
    await this.writing?.catch(() => {}); // a failed write's error is its own (and this.error)
    this.checkUsable("flush");
    const padded = await this.writeTail();
    await this.drain();
    await this.trimPadding(padded);
    await this.file.flush();
  }

  /**
   * Finishes the stream: writes the padded tail, waits for every write, truncates the file to
   * the true size, runs fdatasync and (by default) closes the file. Idempotent; rejects with the
   * first write error (after still closing the file).
   */
  close(): Promise<void> {
    if (this.closed !== undefined) return this.closed;
    this.closed = (async () => {
      try {
        // Writes called before close() finish first (new ones are refused from now on).
        await this.writing?.catch(() => {});
        if (this.error === undefined) {
          const padded = await this.writeTail();
          await this.drain();
          await this.trimPadding(padded);
          await this.file.flush();
        } else {
          await this.drain().catch(() => {});
          throw this.error;
        }
      } finally {
        await Promise.allSettled([...this.inflight]);
        this.buf?.release();
        this.buf = undefined;
        this.pool.close();
        if (this.closeFile) await this.file.close();
      }
    })();
    return this.closed;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** A FileInputStream over `file` (Seastar's make_file_input_stream). Throws like its constructor. */
export function makeFileInputStream(file: DmaFile, opts?: FileInputStreamOptions): FileInputStream {
  return new FileInputStream(file, opts);
}

/** A FileOutputStream over `file` (Seastar's make_file_output_stream). Throws like its constructor. */
export function makeFileOutputStream(file: DmaFile, opts?: FileOutputStreamOptions): FileOutputStream {
  return new FileOutputStream(file, opts);
}
