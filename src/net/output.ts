/**
 * The sending side of a stream connection, shared by every stack. Writes append entries
 * (native address, length, owner) to a queue; small writes are copied into the open send
 * chunk and coalesced with what is already queued, so a turn's writes leave as one send.
 * The stack sends from the head of the queue (one send in flight per socket) and reports
 * how many bytes went; short sends just leave the rest queued. Back-pressure: write()'s
 * promise waits while more than writeHighWater bytes are queued.
 */
import { NativeBuffer } from "../core/buffers.ts";
import { copyBytes } from "../core/bytes.ts";
import { ClosedError, InvalidArgumentError } from "../core/errors.ts";
import { describeValue } from "../core/describe.ts";
import { markHandled, rejectedHandled } from "./errors.ts";
import { NativeSlab } from "./slab.ts";
import type { ConnectionOutput, WriteData } from "./types.ts";

/** Send chunk size: small writes are copied into (and coalesced within) chunks of this size. */
export const SEND_CHUNK = 16384;
/** Native send memory shared by every connection of this shard (mapped 1 MiB at a time). */
export const sendChunks = new NativeSlab("send buffers", SEND_CHUNK, 64);
/**
 * The open send chunk, shared by every connection of this shard: a turn's small writes from
 * all connections land one after another in the same few cache lines instead of each in its
 * own chunk. The tail holds one reference; every queue entry in it holds another, so a chunk
 * goes back to the slab once it is no longer the tail and every entry in it was sent.
 */
const tail = { chunk: -1, fill: 0 };

/** Idle shards hold no send memory: the tail goes back once no queue entry is in it. */
function releaseIdleTail(): void {
  if (tail.chunk >= 0 && sendChunks.refs[tail.chunk] === 1) {
    sendChunks.release(tail.chunk);
    tail.chunk = -1;
  }
}

/** Why `data` cannot be written (an error naming `what`), or undefined. */
function badData(data: unknown, what: string): Error | undefined {
  if (data instanceof Uint8Array || typeof data === "string") return undefined;
  if (data instanceof NativeBuffer) {
    return data.isReleased ? new ClosedError(`${what}: buffer was already released`, "ERR_BUFFER_RELEASED") : undefined;
  }
  return new InvalidArgumentError(`${what}: data must be a Uint8Array, a string or a NativeBuffer`);
}

/** Received views at least this long are sent in place instead of copied. */
export const FORWARD_MIN = 1024;

/**
 * At most this many received buffers are held by one output's queue (sent in place). A
 * range keeps its whole receive buffer (16 KiB) alive however short it is, while only its
 * length counts toward the high-water mark: past this, ranges are copied, so a peer that does
 * not read cannot pin more than this many of the shard's receive buffers.
 */
export const MAX_RECEIVED_HELD = 8;

const KIND_CHUNK = 1;
const KIND_RECEIVED = 2;
const KIND_NATIVE = 3;

/** What a stack provides to a StreamOutput. */
export interface OutputSink {
  /** Entries were queued: send them in this turn's batch. */
  outputReady(): void;
  /**
   * If `view` lies in one of the stack's held receive buffers, adds a reference to that buffer
   * and returns the view's native address; otherwise returns -1.
   */
  retainReceived(view: Uint8Array, start: number, length: number): number;
  /** Drops the reference retainReceived took (by the address it returned). */
  releaseReceived(address: number): void;
  /** Everything was sent after output.close(): shut down the sending side. */
  outputShutdown(): void;
  /**
   * A write could not be queued (send memory ran out part-way) and the output failed with `err`:
   * the stream misses that write, so nothing queued or written after it may reach the peer.
   * Reset the connection.
   */
  outputFailed(err: Error): void;
}

const RESOLVED: Promise<void> = Promise.resolve();
const encoder = new TextEncoder();

interface Waiter {
  target: number;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/** The waiter list of an output nobody waits on (never pushed to). */
const NO_WAITERS: Waiter[] = [];

/** Queue entries a connection starts with (a power of two; most never need more). */
const INITIAL_ENTRIES = 4;

/** The longest queue entry (a NativeBuffer range is split into entries of at most this). */
const MAX_ENTRY_BYTES = 2 ** 30;

/**
 * ConnectionOutput as a queue of native (address, length) entries that a stack sends from.
 * Costs per write: a copy into the send chunk for JS bytes (none for NativeBuffers and large
 * received views), no native call; the send itself is issued once per loop turn.
 */
export class StreamOutput implements ConnectionOutput {
  private readonly sink: OutputSink;
  private readonly highWater: number;
  // A queue of INITIAL_ENTRIES, doubling when full (growQueue): an idle connection's costs ~0.3 KiB.
  // Each entry is four numbers in `e` (one array: an idle connection keeps one object, not four):
  // its native address, length, kind and ref (the send chunk it is in, for KIND_CHUNK).
  private e = new Float64Array(INITIAL_ENTRIES * 4);
  private cap = INITIAL_ENTRIES;
  private objs: (NativeBuffer | undefined)[] = new Array(INITIAL_ENTRIES);
  private head = 0;
  private n = 0;
  private queued = 0;
  private written = 0;
  private sentTotal = 0;
  private err: Error | undefined;
  private closing: Promise<void> | undefined;
  private shutdownDone = false;
  private sealed = false;
  // Waiters (none on most connections: both start as the shared empty list).
  private drainWaiters: Waiter[] = NO_WAITERS;
  private flushWaiters: Waiter[] = NO_WAITERS;
  /** The queue before the write in progress (mark, rollback). */
  private markEntries = 0;
  private markLastLength = 0;
  private markQueued = 0;
  private markWritten = 0;

  constructor(sink: OutputSink, highWater: number) {
    this.sink = sink;
    this.highWater = highWater;
  }

  get buffered(): number {
    return this.queued;
  }

  /** Queue entries waiting to be sent (the head ones may be in flight). */
  get entries(): number {
    return this.n;
  }

  /** True once close() was called and everything was sent and shut down. */
  get isShutDown(): boolean {
    return this.shutdownDone;
  }

  /** True once close() was called. */
  get isClosing(): boolean {
    return this.closing !== undefined;
  }

  /** The failure that ended this output, if any. */
  get error(): Error | undefined {
    return this.err;
  }

  /** Native address of the `i`-th queued entry. */
  entryAddress(i: number): number {
    return this.e[((this.head + i) & (this.cap - 1)) << 2]!;
  }

  /** Length of the `i`-th queued entry. */
  entryLength(i: number): number {
    return this.e[(((this.head + i) & (this.cap - 1)) << 2) + 1]!;
  }

  /** The NativeBuffer behind the `i`-th entry, if it is one. */
  entryNative(i: number): NativeBuffer | undefined {
    const j = (this.head + i) & (this.cap - 1);
    return this.e[(j << 2) + 2] === KIND_NATIVE ? this.objs[j] : undefined;
  }

  // ---- writer side --------------------------------------------------------------------------

  write(data: WriteData, start?: number, end?: number): Promise<void> {
    const e = this.refuse();
    if (e !== undefined) return rejectedHandled(e);
    this.mark();
    try {
      if (start === undefined && end === undefined) {
        const bad = badData(data, "write");
        if (bad !== undefined) return rejectedHandled(bad);
        this.append(data);
      } else {
        const r = this.appendRange(data, start, end);
        if (r !== undefined) return rejectedHandled(r);
      }
    } catch (err) {
      return this.failWrite(err);
    }
    this.sink.outputReady();
    return this.pressure();
  }

  /** write(data, start, end): bytes [start, end) of a Uint8Array or NativeBuffer, no view made. */
  private appendRange(data: WriteData, start: number | undefined, end: number | undefined): Error | undefined {
    if (typeof data === "string") return new InvalidArgumentError("write: a range applies to bytes, not to a string");
    // A released buffer rejects like write(buffer) does (its check threw out of write()).
    const bad = badData(data, "write");
    if (bad !== undefined) return bad;
    const isNative = data instanceof NativeBuffer;
    const length = data.length;
    const s = start ?? 0;
    const e = end ?? length;
    if (!Number.isSafeInteger(s) || !Number.isSafeInteger(e) || s < 0 || e < s || e > length) {
      return new InvalidArgumentError(`write: the range [${describeValue(start)}, ${describeValue(end)}) is not within 0..${length}`);
    }
    if (isNative) this.appendNative(data, s, e);
    else this.appendBytes(data, s, e);
    return undefined;
  }

  writev(data: readonly WriteData[]): Promise<void> {
    if (!Array.isArray(data)) return rejectedHandled(new InvalidArgumentError("writev: expected an array"));
    // Each piece is read once, before anything is queued: an accessor (a getter, a Proxy) runs
    // no code of the caller's between the checks and the queueing. (Read twice, a getter that
    // threw escaped writev as a throw, and one that reset the connection left pieces queued on
    // a failed output and the promise waiting for a drain that never came.)
    // Reading stops at the first piece that is not data: the pieces after it are never read
    // (copied whole first, writev(new Array(2 ** 32 - 1)) took minutes and tens of GiB to fail).
    const pieces: WriteData[] = [];
    let bad: Error | undefined;
    try {
      const n = data.length;
      for (let i = 0; i < n; i++) {
        const piece = data[i]!;
        bad = badData(piece, `writev: piece ${i}`);
        if (bad !== undefined) break;
        pieces.push(piece);
      }
    } catch (err) {
      return rejectedHandled(err);
    }
    const e = this.refuse();
    if (e !== undefined) return rejectedHandled(e);
    if (bad !== undefined) return rejectedHandled(bad);
    // All or nothing: a bad piece must not leave the ones before it queued, to be glued onto
    // the next write. Checked again: a later piece's getter may have released an earlier one.
    for (let i = 0; i < pieces.length; i++) {
      const released = badData(pieces[i], `writev: piece ${i}`);
      if (released !== undefined) return rejectedHandled(released);
    }
    this.mark();
    try {
      for (let i = 0; i < pieces.length; i++) this.append(pieces[i]!);
    } catch (err) {
      return this.failWrite(err);
    }
    if (pieces.length > 0) this.sink.outputReady();
    return this.pressure();
  }

  flush(): Promise<void> {
    if (this.err !== undefined) return rejectedHandled(this.err);
    if (this.queued === 0) return RESOLVED;
    return this.waitFor(true, this.written);
  }

  close(): Promise<void> {
    if (this.closing === undefined && this.err === undefined && this.queued === 0) {
      // Nothing to flush: the FIN goes now. (A Connection.close() in the same tick tore the
      // socket down before a deferred shutdown ran, and this promise rejected although the FIN
      // had gone out.)
      this.closing = RESOLVED;
      this.shutdownDone = true;
      this.sink.outputShutdown();
    }
    if (this.closing === undefined) {
      this.closing = markHandled(
        this.flush().then(() => {
          // Shut down meanwhile by a graceful Connection.close() (closedAfterFlush): its FIN ends
          // the output as this one's would have.
          if (this.shutdownDone) return;
          if (this.err !== undefined) throw this.err;
          this.shutdownDone = true;
          this.sink.outputShutdown();
        }),
      );
    }
    return this.closing;
  }

  /**
   * The connection closes gracefully with everything sent (its close sends the FIN): the output
   * counts as shut down, so an output.close() whose flush completed with close()'s resolves
   * instead of failing with the ClosedError the teardown leaves behind. Before fail().
   */
  closedAfterFlush(): void {
    if (this.err === undefined && this.queued === 0) this.shutdownDone = true;
  }

  /** Refuses further writes (the connection is closing); queued bytes are still sent. */
  seal(): void {
    this.sealed = true;
  }

  /**
   * A write threw part-way (out of send memory: mmap failed): nothing of it stays queued, and
   * the output fails with the error, as after a failed send. Writes are not awaited one by one
   * (a server awaits only past the high-water mark, or a flush), and an answer is often several
   * writes: going on after the lost one sent the next answer glued to a cut one and resolved
   * flush() as if all had gone. Now that write, later calls and every waiting flush or drain
   * reject with the error, and the stack resets the connection (its queue is dropped with it).
   */
  private failWrite(thrown: unknown): Promise<void> {
    this.rollback();
    const err = thrown instanceof Error ? thrown : new Error(String(thrown));
    this.fail(err);
    this.sink.outputFailed(err);
    return rejectedHandled(err);
  }

  private refuse(): Error | undefined {
    if (this.err !== undefined) return this.err;
    if (this.closing !== undefined) return new ClosedError("write after output.close()", "ERR_OUTPUT_CLOSED");
    if (this.sealed) return new ClosedError("write after close()", "ERR_CONNECTION_CLOSED");
    return undefined;
  }

  private pressure(): Promise<void> {
    if (this.queued <= this.highWater) return RESOLVED;
    return this.waitFor(false, 0);
  }

  private waitFor(flush: boolean, target: number): Promise<void> {
    // A failed output settles no waiter again (fail() rejected those it had): none may start.
    if (this.err !== undefined) return rejectedHandled(this.err);
    let list = flush ? this.flushWaiters : this.drainWaiters;
    if (list === NO_WAITERS) {
      list = [];
      if (flush) this.flushWaiters = list;
      else this.drainWaiters = list;
    }
    return markHandled(
      new Promise<void>((resolve, reject) => {
        list.push({ target, resolve, reject });
      }),
    );
  }

  /** Received buffers the queue holds (entries sent in place), at most MAX_RECEIVED_HELD. */
  private receivedHeld = 0;

  private append(data: WriteData): void {
    if (data instanceof Uint8Array) this.appendBytes(data, 0, data.length);
    else if (typeof data === "string") this.appendString(data);
    else if (data instanceof NativeBuffer) this.appendNative(data, 0, data.length);
    else throw new InvalidArgumentError("write: data must be a Uint8Array, a string or a NativeBuffer");
  }

  /** data[start, end): a received range of 1 KiB or more is sent in place, the rest copied. */
  private appendBytes(data: Uint8Array, start: number, end: number): void {
    if (end === start) return;
    if (end - start >= FORWARD_MIN && this.receivedHeld < MAX_RECEIVED_HELD) {
      const address = this.sink.retainReceived(data, start, end - start);
      if (address >= 0) {
        this.receivedHeld++;
        this.push(KIND_RECEIVED, address, end - start, -1, undefined);
        return;
      }
    }
    this.copyRange(data, start, end);
  }

  /** A NativeBuffer's [start, end), sent in place and pinned until the kernel is done with it. */
  private appendNative(data: NativeBuffer, start: number, end: number): void {
    data.check("write: buffer");
    // One entry per GiB, each pinned: an entry's length is an int32, and one send moves at
    // most 0x7ffff000 bytes (a 4 GiB buffer wrapped to 0 and spun; 2 GiB went negative).
    for (let at = start; at < end; at += MAX_ENTRY_BYTES) {
      const n = Math.min(MAX_ENTRY_BYTES, end - at);
      data.pin();
      this.push(KIND_NATIVE, data.address + at, n, -1, data);
    }
  }

  private appendString(s: string): void {
    if (s.length === 0) return;
    // Encode straight into the send chunk when it surely fits (3 bytes per UTF-16 unit at most).
    if (tail.chunk >= 0 && SEND_CHUNK - tail.fill >= s.length * 3) {
      const start = tail.fill;
      const r = encoder.encodeInto(s, sendChunks.view(tail.chunk).subarray(start));
      tail.fill += r.written;
      this.pushChunk(start, r.written);
      return;
    }
    this.copy(encoder.encode(s));
  }

  private copy(data: Uint8Array): void {
    const total = data.length;
    let done = 0;
    while (done < total) {
      if (tail.chunk < 0 || tail.fill === SEND_CHUNK) this.openChunk();
      const k = Math.min(total - done, SEND_CHUNK - tail.fill);
      const start = tail.fill;
      sendChunks.view(tail.chunk).set(k === total ? data : data.subarray(done, done + k), start);
      tail.fill += k;
      done += k;
      this.pushChunk(start, k);
    }
  }

  /**
   * Copies data[start, end) into send memory without a view object (copyBytes: a byte loop or
   * one native copy); ranges that straddle send chunks go through copy().
   */
  private copyRange(data: Uint8Array, start: number, end: number): void {
    const total = end - start;
    if (total > SEND_CHUNK || (tail.chunk >= 0 && SEND_CHUNK - tail.fill < total)) {
      this.copy(start === 0 && end === data.length ? data : data.subarray(start, end));
      return;
    }
    if (tail.chunk < 0 || tail.fill === SEND_CHUNK) this.openChunk();
    const at = tail.fill;
    copyBytes(sendChunks.view(tail.chunk), at, data, start, total);
    tail.fill += total;
    this.pushChunk(at, total);
  }

  private openChunk(): void {
    // Acquire first: a failed acquire (mmap) must leave the tail as it was, not naming a block
    // it already gave back (the next acquire handed that block out a second time).
    const chunk = sendChunks.acquire();
    if (tail.chunk >= 0) sendChunks.release(tail.chunk);
    tail.chunk = chunk;
    tail.fill = 0;
  }

  /** Notes where the queue stands (entries, the last one's length, byte counts) for rollback(). */
  private mark(): void {
    this.markEntries = this.n;
    this.markLastLength = this.n > 0 ? this.e[(((this.head + this.n - 1) & (this.cap - 1)) << 2) + 1]! : 0;
    this.markQueued = this.queued;
    this.markWritten = this.written;
  }

  /** Drops what was queued since mark() (a write that failed part-way). */
  private rollback(): void {
    const mask = this.cap - 1;
    while (this.n > this.markEntries) {
      this.releaseEntry((this.head + this.n - 1) & mask);
      this.n--;
    }
    if (this.n > 0) this.e[(((this.head + this.n - 1) & mask) << 2) + 1] = this.markLastLength;
    this.queued = this.markQueued;
    this.written = this.markWritten;
  }

  private pushChunk(start: number, k: number): void {
    if (k === 0) return;
    const chunk = tail.chunk;
    const address = sendChunks.address(chunk) + start;
    if (this.n > 0) {
      const last = (this.head + this.n - 1) & (this.cap - 1);
      if (this.e[(last << 2) + 2] === KIND_CHUNK && this.e[(last << 2) + 3] === chunk && this.e[last << 2]! + this.e[(last << 2) + 1]! === address) {
        // Contiguous with the last entry: grow it (bytes past an in-flight send are not in it).
        this.e[(last << 2) + 1]! += k;
        this.queued += k;
        this.written += k;
        return;
      }
    }
    sendChunks.retain(chunk);
    this.push(KIND_CHUNK, address, k, chunk, undefined);
  }

  private push(kind: number, address: number, length: number, ref: number, obj: NativeBuffer | undefined): void {
    if (this.n === this.cap) this.growQueue();
    const i = (this.head + this.n) & (this.cap - 1);
    this.e[i << 2] = address;
    this.e[(i << 2) + 1] = length;
    this.e[(i << 2) + 2] = kind;
    this.e[(i << 2) + 3] = ref;
    this.objs[i] = obj;
    this.n++;
    this.queued += length;
    this.written += length;
  }

  private growQueue(): void {
    const e = this.e;
    const mask = this.cap - 1;
    const next = new Float64Array(e.length * 2);
    const objs: (NativeBuffer | undefined)[] = new Array(this.cap * 2);
    for (let k = 0; k < this.n; k++) {
      const i = (this.head + k) & mask;
      for (let w = 0; w < 4; w++) next[(k << 2) + w] = e[(i << 2) + w]!;
      objs[k] = this.objs[i];
    }
    this.e = next;
    this.objs = objs;
    this.cap *= 2;
    this.head = 0;
  }

  // ---- stack side ---------------------------------------------------------------------------

  /** The kernel took `count` bytes from the head of the queue. */
  sent(count: number): void {
    this.queued -= count;
    this.sentTotal += count;
    const mask = this.cap - 1;
    while (count > 0) {
      const h = this.head;
      const l = this.e[(h << 2) + 1]!;
      if (count < l) {
        this.e[h << 2]! += count;
        this.e[(h << 2) + 1] = l - count;
        break;
      }
      count -= l;
      this.releaseEntry(h);
      this.head = (h + 1) & mask;
      this.n--;
    }
    if (this.n === 0) {
      this.head = 0;
      releaseIdleTail();
    }
    if (this.drainWaiters.length > 0 && this.queued <= this.highWater) {
      const list = this.drainWaiters;
      this.drainWaiters = NO_WAITERS;
      for (const w of list) w.resolve();
    }
    if (this.flushWaiters.length > 0) {
      const list = this.flushWaiters;
      let keep = 0;
      for (let i = 0; i < list.length; i++) {
        const w = list[i]!;
        if (w.target <= this.sentTotal) w.resolve();
        else list[keep++] = w;
      }
      list.length = keep;
    }
  }

  private releaseEntry(i: number): void {
    const kind = this.e[(i << 2) + 2];
    if (kind === KIND_CHUNK) sendChunks.release(this.e[(i << 2) + 3]!);
    else if (kind === KIND_RECEIVED) {
      this.receivedHeld--;
      this.sink.releaseReceived(this.e[i << 2]!);
    }
    else {
      this.objs[i]!.unpin();
      this.objs[i] = undefined;
    }
  }

  /** The connection failed or closed: waiting and later calls fail with `err` (the first one wins). */
  fail(err: Error): void {
    if (this.err === undefined) this.err = err;
    const waiters = this.drainWaiters.concat(this.flushWaiters);
    this.drainWaiters = NO_WAITERS;
    this.flushWaiters = NO_WAITERS;
    for (const w of waiters) w.reject(this.err);
  }

  /** Drops everything queued and releases its memory. Only when no send is in flight. */
  discard(): void {
    const mask = this.cap - 1;
    while (this.n > 0) {
      this.releaseEntry(this.head);
      this.head = (this.head + 1) & mask;
      this.n--;
    }
    this.head = 0;
    this.queued = 0;
    releaseIdleTail();
  }
}
