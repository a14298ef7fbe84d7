/**
 * The receiving side of a stream connection, shared by every stack. A stack pushes received
 * chunks (a token naming a native receive buffer, and a length); the reader gets views of them
 * without copying. A chunk handed out by read() is leased until the next read-family call,
 * then released to the stack (which recycles the buffer). Buffered chunks are bounded: past the
 * pause mark the stack is told to stop receiving, and to resume once half are consumed.
 */
import { AbortError, InvalidArgumentError } from "../core/errors.ts";
import { currentSchedulingGroup, defaultSchedulingGroup, enqueue, singleGroup } from "../core/scheduler.ts";
import { now } from "../core/timer.ts";
import { UnexpectedEofError } from "./errors.ts";
import { signalOption } from "./options.ts";
import { CONSUME_ALL, STOP_RECEIVING, type ConnectionInput, type ReceiveRangesOptions, type ReceiverResult, type SignalOptions, type StreamConsumer, type StreamRangeReceiver, type StreamReceiver } from "./types.ts";
import { describeValue } from "../core/describe.ts";
import { isThenable } from "../core/future.ts";

/** What a stack provides to a StreamInput. */
export interface InputSource {
  /** The whole receive buffer named by `token` (a long-lived view). */
  chunkBase(token: number): Uint8Array;
  /** Drops the input's reference to `token`'s buffer. */
  releaseChunk(token: number): void;
  /** Buffered input reached the pause mark (true), or fell back to the resume mark (false). */
  inputPressure(paused: boolean): void;
  /** The reader saw the end of the stream (read returned null). */
  inputEnded(): void;
  /**
   * Fills bytes of this input's own memory that were just given up, when the stack poisons
   * recycled receive buffers (debug): a view of spilled bytes kept too long fails as loudly.
   */
  poisonReleased?(bytes: Uint8Array): void;
}

const WAIT_NONE = 0;
const WAIT_READ = 1;
const WAIT_EXACT = 2;
const WAIT_DATA = 3;
/** receive(): chunks go to a handler as they arrive. */
const WAIT_RECEIVE = 4;

const RESOLVED_NULL: Promise<null> = Promise.resolve(null);

/** Chunks leased to a receive() handler whose call ended, until its hold `gen` settles. */
interface Orphan {
  gen: number;
  tokens: number[];
}
// The lists most connections never use start as these shared empty ones (never pushed to).
const NO_ORPHANS: Orphan[] = [];
const NO_HEAP: (Uint8Array | undefined)[] = [];
const NO_FREE: number[] = [];
const EMPTY = new Uint8Array(0);

let capturedResolve: (v: any) => void = () => {};
let capturedReject: (e: unknown) => void = () => {};
function captureExecutor(resolve: (v: any) => void, reject: (e: unknown) => void): void {
  capturedResolve = resolve;
  capturedReject = reject;
}

/**
 * ConnectionInput over receive buffers a stack pushes. Costs per read: one view object, and a
 * promise when nothing is buffered; no copy unless readExactly/needBytes spans buffers.
 */
export class StreamInput implements ConnectionInput {
  private readonly src: InputSource;
  /**
   * The queue of buffered chunks, a ring of `cap` entries of four words (one array: an idle
   * connection's costs one object): the chunk's token, the offset and the length of its unread
   * bytes (the fourth word pads the stride to a shift).
   */
  private q = new Int32Array(8 * 4);
  private cap = 8;
  private head = 0;
  private n = 0;
  private bytes = 0;
  private readonly lease: number[] = [];
  private eof = false;
  private endRead = false;
  private err: Error | undefined;
  private paused = false;
  private readonly pauseChunks: number;
  private readonly resumeChunks: number;
  /** Buffered bytes at which the source is asked to stop receiving (pauseChunks full buffers). */
  private readonly pauseBytes: number;
  private waitKind = WAIT_NONE;
  private waitN = 0;
  /** Bytes a waiting reader needs before it can proceed (readExactly, consume's needBytes). */
  private need = 0;
  private resolveWait: (v: any) => void = capturedResolve;
  private rejectWait: (e: unknown) => void = capturedReject;
  private waitSignal: AbortSignal | undefined;
  /** The waiting read's abort listener, made on the first read given a signal. */
  private abortListener: (() => void) | undefined;
  private get onAbort(): () => void {
    return (this.abortListener ??= () => this.abortWait());
  }
  private assembly: Uint8Array | undefined;
  /** Bytes of `assembly` the last readExactly handed out: given up (and poisoned) at the next read. */
  private assembledOut = 0;
  /** receive(): the handler, while one is installed. */
  private receiver: StreamReceiver | undefined;
  /** receiveRanges(): the handler, while one is installed (then `receiver` is unset). */
  private rangeReceiver: StreamRangeReceiver | undefined;
  /** receiveRanges(): the lookahead, while one is installed. */
  private lookahead: ((buffer: Uint8Array, start: number, end: number) => void) | undefined;
  /** A lookahead saw new chunks: their delivery is queued behind the current batch. */
  private wakeQueued = false;
  /** Runs the queued delivery (made the first time one is queued: most connections never do). */
  private deferredWake: (() => void) | undefined;
  /** receive(): the handler's promise for the chunk it holds, while one is pending. */
  private holding = false;
  /** receive(): inside deliver() (a push from the handler's own actions must not recurse). */
  private delivering = false;
  /** Counts receive()/receiveRanges() calls: deliver() tells whether its handler's call is still the one running. */
  private receiveCalls = 0;
  /** Counts holds: a held promise settling for an older hold belongs to a receive() that ended. */
  private holdGen = 0;
  /**
   * Chunks a receive() handler still held when its call ended (aborted, failed, timed out):
   * they stay leased to that handler until its promise settles (even after the connection is
   * gone), and that promise no longer affects later receives.
   */
  private orphans: Orphan[] = NO_ORPHANS;
  /** The range of the chunk leaseHead() took last. */
  private leasedOff = 0;
  private leasedEnd = 0;
  /** now() when a read began waiting, 0 when none waits (read timeouts). */
  waitingSince = 0;

  private readonly chunkBytes: number;
  /**
   * Chunks up to this long (a quarter buffer) are copied behind the previous queued chunk when
   * it has room: every queued buffer then holds at least a quarter buffer of bytes on average,
   * whatever the peer's segment sizes, and larger chunks stay zero-copy.
   */
  private readonly coalesceMax: number;
  /**
   * Bytes moved out of the source's receive buffers (spill): token -1-k names heap[k]. Such a
   * chunk is read like any other; dropping it frees the slot.
   */
  private heap: (Uint8Array | undefined)[] = NO_HEAP;
  private heapFree: number[] = NO_FREE;
  /** Times buffered bytes were dropped (shutdown, failure, dispose): consume() checks it. */
  private drops = 0;
  /** Inside consume(), the parser included: no other read may start. */
  private consuming = false;
  /**
   * Inside a consume() parser's call: the head chunk is the view it was shown, valid until it
   * returns; a shutdown or close from inside the parser leases it instead of releasing it.
   */
  private parsing = false;

  /**
   * `pauseChunks`: buffered chunks at which the source is asked to stop receiving (>= 2);
   * `chunkBytes`: the size of one receive buffer.
   */
  constructor(src: InputSource, pauseChunks: number, chunkBytes: number) {
    this.src = src;
    this.chunkBytes = chunkBytes;
    this.pauseChunks = Math.max(2, pauseChunks);
    this.coalesceMax = chunkBytes >> 2;
    this.resumeChunks = this.pauseChunks >> 1;
    this.pauseBytes = this.pauseChunks * chunkBytes;
  }

  get buffered(): number {
    return this.bytes;
  }

  get ended(): boolean {
    return this.endRead;
  }

  /** Chunks buffered (not leased). */
  get chunks(): number {
    return this.n;
  }

  /**
   * Bytes the input will take before it pauses: what fits below the pause mark, or what a
   * waiting reader still needs, whichever is more (0 while paused or finished).
   */
  get receiveBudget(): number {
    if (this.paused || this.finished) return 0;
    const belowMark = Math.min((this.pauseChunks - this.n) * this.chunkBytes, this.pauseBytes - this.bytes);
    return Math.max(belowMark, this.need - this.bytes, 0);
  }

  /** True while the stack was asked to stop receiving. */
  get isPaused(): boolean {
    return this.paused;
  }

  /** True once end of stream or an error was pushed. */
  get finished(): boolean {
    return this.eof || this.err !== undefined;
  }

  // ---- stack side ---------------------------------------------------------------------------

  /** A chunk arrived: `len` bytes at the start of `token`'s buffer. The input owns one reference. */
  push(token: number, len: number): void {
    if (this.eof || this.err !== undefined) {
      this.drop(token);
      return;
    }
    let base: Uint8Array;
    let start = 0;
    if (len <= this.coalesceMax && this.n > 0 && this.appendToTail(token, len)) {
      // Copied behind the queued bytes of the last chunk, and its own buffer given back: a
      // peer sending a byte per segment holds one buffer per buffer's worth of bytes, not one
      // per segment (a reader waiting for a whole line would otherwise pin the shard's pool).
      const t = (this.head + this.n - 1) & (this.cap - 1);
      base = this.base(this.q[t << 2]!);
      start = this.q[(t << 2) + 1]! + this.q[(t << 2) + 2]! - len;
    } else {
      if (this.n === this.cap) this.growQueue();
      const i = (this.head + this.n) & (this.cap - 1);
      this.q[i << 2] = token;
      this.q[(i << 2) + 1] = 0;
      this.q[(i << 2) + 2] = len;
      this.n++;
      base = EMPTY;
    }
    this.bytes += len;
    if (this.waitKind !== WAIT_NONE) {
      // A read timeout counts from the last arrival, not from when a long read began.
      if (this.waitingSince !== 0) this.waitingSince = now() || 1e-9;
      const la = this.lookahead;
      if (la === undefined) {
        this.wake();
      } else {
        // Look now, deliver after the rest of this batch of completions (same group).
        try {
          if (base === EMPTY) base = this.base(token);
          la(base, start, start + len);
        } catch {
          // A lookahead only warms caches: its failure changes nothing.
        }
        if (!this.wakeQueued) {
          this.wakeQueued = true;
          enqueue(singleGroup.value ? defaultSchedulingGroup : currentSchedulingGroup(), (this.deferredWake ??= () => {
            this.wakeQueued = false;
            if (this.waitKind !== WAIT_NONE) this.wake();
          }), 0, 0);
        }
      }
    }
    this.checkPause();
  }

  /**
   * Copies `len` bytes of `token`'s buffer behind the last queued chunk when its buffer has the
   * room, and releases `token`. The space behind a queued chunk's bytes is never in a view: views
   * handed out cover bytes before it (read, readExactly, consume), and the kernel no longer
   * writes into a buffer once it completed it.
   */
  private appendToTail(token: number, len: number): boolean {
    const t = (this.head + this.n - 1) & (this.cap - 1);
    const end = this.q[(t << 2) + 1]! + this.q[(t << 2) + 2]!;
    const base = this.base(this.q[t << 2]!);
    if (end + len > base.length) return false;
    base.set(this.base(token).subarray(0, len), end);
    this.q[(t << 2) + 2] = this.q[(t << 2) + 2]! + len;
    this.drop(token);
    return true;
  }

  /** The whole buffer of chunk `t`: a source buffer, or one of this input's spilled chunks. */
  private base(t: number): Uint8Array {
    return t >= 0 ? this.src.chunkBase(t) : this.heap[-1 - t]!;
  }

  /** Lets go of chunk `t`: back to the source, or a spilled chunk's slot freed. */
  private drop(t: number): void {
    if (t >= 0) {
      this.src.releaseChunk(t);
      return;
    }
    const k = -1 - t;
    this.src.poisonReleased?.(this.heap[k]!);
    this.heap[k] = undefined;
    this.heapFree.push(k);
  }

  /**
   * Moves the queued bytes out of the source's receive buffers into memory of this input's own
   * (one chunk, with room for `capacity` bytes and to double) and gives those buffers back. The
   * stack calls this when its pool is exhausted (queued partial messages must not keep every
   * other connection from receiving); consume() to show a parser contiguous bytes. A head chunk part
   * of which was already handed out (readExactly) stays leased until the next read, as its
   * view must stay valid. Returns the source buffers released or leased.
   */
  spill(capacity = 0): number {
    let sourced = 0;
    const mask = this.cap - 1;
    for (let k = 0; k < this.n; k++) if (this.q[((this.head + k) & mask) << 2]! >= 0) sourced++;
    if (sourced === 0) return 0;
    const total = this.bytes;
    const h0 = this.head;
    const t0 = this.q[h0 << 2]!;
    const headEnd = this.q[(h0 << 2) + 1]! + this.q[(h0 << 2) + 2]!;
    // The head is spilled already and has the room: the rest is appended behind it. Otherwise
    // one new chunk with room for what a waiting reader needs, and to double (later spills
    // append, not copy again).
    const appending = t0 < 0 && this.heap[-1 - t0]!.length - headEnd >= total - this.q[(h0 << 2) + 2]!;
    const out = appending ? this.heap[-1 - t0]! : new Uint8Array(Math.max(total * 2, capacity, 4096));
    let filled = appending ? headEnd : 0;
    for (let k = appending ? 1 : 0; k < this.n; k++) {
      const i = (h0 + k) & mask;
      const t = this.q[i << 2]!;
      const o = this.q[(i << 2) + 1]!;
      out.set(this.base(t).subarray(o, o + this.q[(i << 2) + 2]!), filled);
      filled += this.q[(i << 2) + 2]!;
      // A head partly handed out (readExactly) keeps its bytes until the next read.
      if (k === 0 && o > 0) this.lease.push(t);
      else this.drop(t);
    }
    if (appending) {
      this.q[(h0 << 2) + 2] = total;
    } else {
      if (this.heap === NO_HEAP) {
        this.heap = [];
        this.heapFree = [];
      }
      const slot = this.heapFree.length > 0 ? this.heapFree.pop()! : this.heap.length;
      this.heap[slot] = out;
      this.head = 0;
      this.q[0] = -1 - slot;
      this.q[1] = 0;
      this.q[2] = total;
    }
    this.n = 1;
    // A paused input stays paused (its reader has not asked for more): the spill only moved
    // its bytes, and it resumes when they are read, as before. One that was not may be past
    // the mark in bytes now.
    this.checkPause();
    return sourced;
  }

  /**
   * At the pause mark: as many chunks as it allows (each holds a receive buffer), or as many
   * bytes as they would (chunks moved into this input's memory hold any number of bytes).
   */
  private overMark(): boolean {
    return this.n >= this.pauseChunks || this.bytes >= this.pauseBytes;
  }

  /** Back to half the pause mark, in chunks and in bytes. */
  private underResume(): boolean {
    return this.n <= this.resumeChunks && this.bytes <= this.pauseBytes >> 1;
  }

  /** Asks the source to stop receiving past the pause mark, unless a reader needs more bytes. */
  private checkPause(): void {
    if (!this.paused && this.overMark() && this.bytes >= this.need) {
      this.paused = true;
      this.src.inputPressure(true);
    }
  }

  /** The peer shut down its side: reads return null once buffered bytes are read. */
  pushEof(): void {
    if (this.eof || this.err !== undefined) return;
    this.eof = true;
    if (this.waitKind !== WAIT_NONE) this.wake();
  }

  /**
   * The connection failed. With `discard`, buffered bytes are dropped and waiting reads fail
   * now; otherwise they are read first.
   */
  pushError(err: Error, discard: boolean): void {
    if (this.err !== undefined) return;
    if (this.eof && !discard) return;
    this.err = err;
    if (discard) this.dropAll();
    if (this.waitKind !== WAIT_NONE) this.wake();
  }

  /** Drops buffered bytes and ends the stream (shutdownInput). */
  shutdown(): void {
    this.dropAll();
    this.pushEof();
  }

  /**
   * Releases every buffer the input holds (the connection is gone), except chunks a receive()
   * handler still has: its view stays valid until its promise settles (heldSettled releases
   * them then, orphaned or not), or, inside a synchronous handler that closed its own
   * connection, until it returns (deliver releases it). Recycling them now would let the
   * buffer be refilled with another connection's bytes under the handler.
   */
  dispose(): void {
    this.dropAll();
    if (!this.holding && !this.delivering && !this.parsing) this.releaseLease();
    if (this.err === undefined) this.eof = true;
    if (this.waitKind !== WAIT_NONE) this.wake();
  }

  private dropAll(): void {
    this.drops++;
    // A head chunk partly handed out (readExactly's view of its first bytes) stays valid until
    // the next read, and the one a consume() parser is looking at until it returns: leased,
    // not dropped.
    if (this.n > 0 && (this.q[(this.head << 2) + 1]! > 0 || this.parsing)) {
      this.lease.push(this.q[this.head << 2]!);
      this.head = (this.head + 1) & (this.cap - 1);
      this.n--;
    }
    while (this.n > 0) {
      this.drop(this.q[this.head << 2]!);
      this.head = (this.head + 1) & (this.cap - 1);
      this.n--;
    }
    this.bytes = 0;
    this.head = 0;
  }

  private growQueue(): void {
    const q = this.q;
    const mask = this.cap - 1;
    const next = new Int32Array(q.length * 2);
    for (let k = 0; k < this.n; k++) {
      const i = ((this.head + k) & mask) << 2;
      next[k << 2] = q[i]!;
      next[(k << 2) + 1] = q[i + 1]!;
      next[(k << 2) + 2] = q[i + 2]!;
    }
    this.q = next;
    this.cap *= 2;
    this.head = 0;
  }

  // ---- reader side --------------------------------------------------------------------------

  private releaseLease(): void {
    if (this.assembledOut > 0) {
      // An assembled readExactly view is as stale as a recycled receive buffer's: poisoned too.
      this.src.poisonReleased?.(this.assembly!.subarray(0, this.assembledOut));
      this.assembledOut = 0;
    }
    const l = this.lease;
    for (let i = 0; i < l.length; i++) this.drop(l[i]!);
    l.length = 0;
  }

  private popHead(): void {
    this.head = (this.head + 1) & (this.cap - 1);
    this.n--;
    if (this.paused && this.underResume()) {
      this.paused = false;
      this.src.inputPressure(false);
    }
  }

  /**
   * Takes the head chunk and leases its buffer: returns the token; its bytes are
   * chunkBase(token)[leasedOff, leasedEnd).
   */
  private leaseHead(): number {
    const h = this.head;
    const t = this.q[h << 2]!;
    const o = this.q[(h << 2) + 1]!;
    const l = this.q[(h << 2) + 2]!;
    this.leasedOff = o;
    this.leasedEnd = o + l;
    this.bytes -= l;
    this.popHead();
    this.lease.push(t);
    return t;
  }

  /** Hands out the head chunk's remaining bytes as a view and leases its buffer. */
  private takeHead(): Uint8Array {
    const t = this.leaseHead();
    return this.base(t).subarray(this.leasedOff, this.leasedEnd);
  }

  /** Consumes `count` (<= buffered) bytes from the front, releasing emptied chunks at once. */
  private advance(count: number): void {
    this.bytes -= count;
    while (count > 0) {
      const h = this.head;
      const l = this.q[(h << 2) + 2]!;
      if (count < l) {
        this.q[(h << 2) + 1]! += count;
        this.q[(h << 2) + 2] = l - count;
        return;
      }
      count -= l;
      const t = this.q[h << 2]!;
      this.popHead();
      this.drop(t);
    }
  }

  /** Copies the first `count` (<= buffered) bytes into the assembly buffer, consuming nothing. */
  private assemble(count: number): Uint8Array {
    if (this.assembly === undefined || this.assembly.length < count) {
      this.assembly = new Uint8Array(Math.max(count, 4096, (this.assembly?.length ?? 0) * 2));
    }
    const out = this.assembly;
    let filled = 0;
    for (let k = 0; filled < count; k++) {
      const i = (this.head + k) & (this.cap - 1);
      const o = this.q[(i << 2) + 1]!;
      const take = Math.min(this.q[(i << 2) + 2]!, count - filled);
      out.set(this.base(this.q[i << 2]!).subarray(o, o + take), filled);
      filled += take;
    }
    return out.subarray(0, count);
  }

  private takeExactly(count: number): Uint8Array {
    const h = this.head;
    const l = this.q[(h << 2) + 2]!;
    if (l >= count) {
      const t = this.q[h << 2]!;
      const o = this.q[(h << 2) + 1]!;
      const view = this.base(t).subarray(o, o + count);
      this.bytes -= count;
      if (l === count) {
        this.popHead();
        this.lease.push(t);
      } else {
        this.q[(h << 2) + 1] = o + count;
        this.q[(h << 2) + 2] = l - count;
      }
      return view;
    }
    const view = this.assemble(count);
    this.assembledOut = count;
    this.advance(count);
    return view;
  }

  private markEnded(): void {
    if (this.endRead) return;
    this.endRead = true;
    this.src.inputEnded();
  }

  private checkIdle(op: string): void {
    if (this.waitKind !== WAIT_NONE || this.consuming) throw new InvalidArgumentError(`${op}: another read is pending on this input`);
  }

  read(opts?: SignalOptions): Promise<Uint8Array | null> {
    this.checkIdle("read");
    this.releaseLease();
    if (this.n > 0) return Promise.resolve(this.takeHead());
    if (this.err !== undefined) return Promise.reject(this.err);
    if (this.eof) {
      this.markEnded();
      return RESOLVED_NULL;
    }
    return this.wait(WAIT_READ, 0, opts);
  }

  tryRead(): Uint8Array | null | undefined {
    this.checkIdle("tryRead");
    this.releaseLease();
    if (this.n > 0) return this.takeHead();
    if (this.err !== undefined) throw this.err;
    if (this.eof) {
      this.markEnded();
      return null;
    }
    return undefined;
  }

  readExactly(count: number, opts?: SignalOptions): Promise<Uint8Array | null> {
    this.checkIdle("readExactly");
    if (!Number.isSafeInteger(count) || count < 0) {
      throw new InvalidArgumentError(`readExactly: n must be an integer >= 0, got ${describeValue(count)}`);
    }
    this.releaseLease();
    if (count === 0) return Promise.resolve(EMPTY);
    if (this.bytes >= count) return Promise.resolve(this.takeExactly(count));
    if (this.err !== undefined) return Promise.reject(this.err);
    if (this.eof) return this.endedEarly(count);
    return this.wait(WAIT_EXACT, count, opts);
  }

  private endedEarly(count: number): Promise<null> {
    if (this.bytes === 0) {
      this.markEnded();
      return RESOLVED_NULL;
    }
    return Promise.reject(new UnexpectedEofError("readExactly", this.bytes, count));
  }

  async consume(parser: StreamConsumer, opts?: SignalOptions): Promise<boolean> {
    if (typeof parser !== "function") throw new InvalidArgumentError("consume: parser must be a function");
    this.checkIdle("consume");
    this.releaseLease();
    // A read from inside the parser (or while consume waits) is refused: it would take the bytes
    // the parser is looking at.
    this.consuming = true;
    try {
      return await this.consumeLoop(parser, opts);
    } finally {
      this.consuming = false;
    }
  }

  private async consumeLoop(parser: StreamConsumer, opts: SignalOptions | undefined): Promise<boolean> {
    let want = 0;
    for (;;) {
      while (this.bytes === 0 || this.bytes < want) {
        if (this.err !== undefined) throw this.err;
        if (this.eof) {
          if (this.bytes === 0) this.markEnded();
          return false;
        }
        await this.wait(WAIT_DATA, want, opts);
      }
      const h = this.head;
      const l = this.q[(h << 2) + 2]!;
      let view: Uint8Array;
      if (l >= want) {
        const o = this.q[(h << 2) + 1]!;
        view = this.base(this.q[h << 2]!).subarray(o, o + l);
      } else {
        // Show every buffered byte, not just `want`: a parser asking for one byte more than it
        // saw (a line parser looking for its end) then runs once per arrival, not once per byte.
        // The bytes are merged into one chunk of this input's memory, with room for what is
        // wanted: later arrivals are appended to it, so a message that arrives in many pieces
        // is copied about once, not once per arrival.
        this.spill(want);
        const t = this.q[this.head << 2]!;
        const o = this.q[(this.head << 2) + 1]!;
        view = this.base(t).subarray(o, o + this.q[(this.head << 2) + 2]!);
      }
      const drops = this.drops;
      let r: number;
      this.parsing = true;
      try {
        r = parser(view);
      } finally {
        this.parsing = false;
        // Its view was kept (leased) while it ran; it is given up now that the call is over.
        if (this.drops !== drops) this.releaseLease();
      }
      if (this.drops !== drops) {
        // The parser shut the input down or closed the connection: what it saw is gone, and
        // so is whatever it would have consumed.
        want = 0;
        continue;
      }
      if (r === CONSUME_ALL) {
        this.advance(view.length);
        want = 0;
        continue;
      }
      if (!Number.isInteger(r)) throw new InvalidArgumentError(`consume: the parser returned ${r}, not an integer`);
      if (r >= 0) {
        if (r > view.length) {
          throw new InvalidArgumentError(`consume: the parser consumed ${r} bytes of ${view.length}`);
        }
        this.advance(r);
        return true;
      }
      const k = -2 - r;
      if (k <= view.length) {
        throw new InvalidArgumentError(`consume: needBytes(${k}) must ask for more than the ${view.length} bytes shown`);
      }
      want = k;
    }
  }

  receive(receiver: StreamReceiver, opts?: SignalOptions): Promise<boolean> {
    if (typeof receiver !== "function") throw new InvalidArgumentError("receive: the receiver must be a function");
    return this.startReceive("receive", receiver, undefined, opts);
  }

  receiveRanges(receiver: StreamRangeReceiver, opts?: ReceiveRangesOptions): Promise<boolean> {
    if (typeof receiver !== "function") throw new InvalidArgumentError("receiveRanges: the receiver must be a function");
    const la = opts?.lookahead;
    if (la !== undefined && typeof la !== "function") throw new InvalidArgumentError("receiveRanges: lookahead must be a function");
    return this.startReceive("receiveRanges", undefined, receiver, opts, la);
  }

  private startReceive(
    op: string,
    receiver: StreamReceiver | undefined,
    rangeReceiver: StreamRangeReceiver | undefined,
    opts: SignalOptions | undefined,
    lookahead?: (buffer: Uint8Array, start: number, end: number) => void,
  ): Promise<boolean> {
    this.checkIdle(op);
    let signal: AbortSignal | undefined;
    try {
      signal = signalOption(op, opts);
    } catch (e) {
      return Promise.reject(e); // before anything changes: the input stays as it was
    }
    this.releaseLease();
    if (signal?.aborted) return Promise.reject(new AbortError(`${op} was aborted`, { cause: signal.reason }));
    const p = new Promise<boolean>(captureExecutor);
    this.resolveWait = capturedResolve;
    this.rejectWait = capturedReject;
    this.receiver = receiver;
    this.rangeReceiver = rangeReceiver;
    // Installed before the first delivery: set after it, it went to whichever call was running
    // by then (one the handler started after ending this one).
    this.lookahead = lookahead;
    this.receiveCalls++;
    this.waitKind = WAIT_RECEIVE;
    this.waitN = 0;
    this.need = 0;
    if (signal !== undefined) {
      this.waitSignal = signal;
      signal.addEventListener("abort", this.onAbort, { once: true });
    }
    if (this.paused && !this.overMark()) {
      this.paused = false;
      this.src.inputPressure(false);
    }
    this.deliver();
    return p;
  }

  /**
   * receive(): hands buffered chunks to the handler, one at a time, until it holds one (returns
   * a promise), the queue is empty, or the stream is over.
   */
  private deliver(): void {
    if (this.delivering || this.holding) return;
    this.delivering = true;
    try {
      while (this.n > 0 && this.waitKind === WAIT_RECEIVE) {
        const call = this.receiveCalls;
        let r: ReceiverResult;
        try {
          const ranges = this.rangeReceiver;
          if (ranges === undefined) {
            r = this.receiver!(this.takeHead());
          } else {
            // The whole receive buffer (a long-lived view) and the new bytes' range: no view made.
            const t = this.leaseHead();
            r = ranges(this.base(t), this.leasedOff, this.leasedEnd);
          }
        } catch (e) {
          // A handler that had ended its own call (and maybe started another) fails nobody's:
          // like a late rejection of its promise, its throw concerns a call that is over.
          if (this.waitKind === WAIT_RECEIVE && this.receiveCalls === call) {
            this.finishReceive(e instanceof Error ? e : new Error(String(e)), true);
          }
          this.releaseOrphan(this.holdGen + 1);
          if (this.waitKind !== WAIT_RECEIVE) return;
          continue;
        }
        if (this.waitKind !== WAIT_RECEIVE || this.receiveCalls !== call) {
          // The handler ended its own receive() (aborted its signal, closed the connection's
          // input): the chunk it was given was set aside for it (finishReceive); it is given
          // back when the handler's promise settles, or now if it returned none.
          if (isThenable(r)) {
            const gen = ++this.holdGen;
            Promise.resolve(r).then(
              () => this.releaseOrphan(gen),
              () => this.releaseOrphan(gen),
            );
          } else {
            this.releaseOrphan(this.holdGen + 1);
          }
          // A receive() the handler started after ending its own gets the chunks that follow.
          if (this.waitKind !== WAIT_RECEIVE) return;
          continue;
        }
        if (r === STOP_RECEIVING) {
          // This chunk was the last: the call ends, the connection and later bytes stay.
          this.releaseLease();
          this.finishStopped();
          return;
        }
        if (isThenable(r)) {
          // The handler is busy: further chunks wait (and pause the source past the mark).
          this.holding = true;
          this.waitingSince = 0;
          const gen = ++this.holdGen;
          // Through a native promise: a thenable's then() runs in a later job, so one that
          // throws rejects (it threw out of the delivery, into the completion that pushed the
          // chunk, and the hold never ended) and one that settles at once does so after this
          // delivery returned (it ran heldDone inside it, which could not deliver: the chunks
          // behind waited for the next arrival).
          Promise.resolve(r).then(
            (v) => this.heldSettled(gen, undefined, v === STOP_RECEIVING),
            (e: unknown) => this.heldSettled(gen, e instanceof Error ? e : new Error(String(e)), false),
          );
          this.checkPause();
          return;
        }
        this.releaseLease();
      }
      if (this.waitKind !== WAIT_RECEIVE) return;
      if (this.err !== undefined) this.finishReceive(this.err, false);
      else if (this.eof) this.finishReceive(undefined, false);
      else this.waitingSince = now() || 1e-9;
    } finally {
      this.delivering = false;
    }
  }

  /** The handler's call ended while it holds what it was leased: set aside under hold `gen`. */
  private orphan(gen: number): void {
    if (this.orphans === NO_ORPHANS) this.orphans = [];
    this.orphans.push({ gen, tokens: this.lease.splice(0) });
  }

  /** Gives back the chunks set aside for the handler call of hold generation `gen`. */
  private releaseOrphan(gen: number): void {
    if (this.orphans.length === 0) return;
    const i = this.orphans.findIndex((o) => o.gen === gen);
    if (i < 0) return;
    for (const t of this.orphans[i]!.tokens) this.drop(t);
    this.orphans.splice(i, 1);
  }

  /** A receive() handler's promise for the chunk it held settled. */
  private heldSettled(gen: number, err: Error | undefined, stop: boolean): void {
    if (!this.holding || gen !== this.holdGen) {
      // Its receive() already ended: give back what it held; its outcome concerns nobody now.
      this.releaseOrphan(gen);
      return;
    }
    if (err === undefined && stop) {
      this.holding = false;
      this.releaseLease();
      this.finishStopped();
      return;
    }
    if (err === undefined) {
      this.heldDone();
      return;
    }
    this.holding = false;
    this.finishReceive(err, true);
  }

  private heldDone(): void {
    this.holding = false;
    if (this.waitKind !== WAIT_RECEIVE) return;
    this.releaseLease();
    if (this.paused && this.underResume()) {
      this.paused = false;
      this.src.inputPressure(false);
    }
    this.deliver();
  }

  /** Ends receive(): resolves at end of stream, rejects with the connection's or handler's error. */
  private finishReceive(err: Error | undefined, fromHandler: boolean): void {
    if (this.waitKind !== WAIT_RECEIVE) return;
    if (this.holding) {
      // The call ends while its handler still holds a chunk: the chunk stays valid for the
      // handler until its promise settles, and the next read or receive leases its own.
      this.holding = false;
      if (this.lease.length > 0) this.orphan(this.holdGen);
    } else if (this.delivering) {
      // Ended from inside the handler, which still runs with the chunk it was given: set it
      // aside under the generation a hold by this call would take (deliver gives it back).
      if (this.lease.length > 0) this.orphan(this.holdGen + 1);
    } else {
      this.releaseLease();
    }
    this.receiver = undefined;
    this.rangeReceiver = undefined;
    this.clearWait();
    if (err !== undefined) {
      this.rejectWait(err);
      // A handler failure leaves the connection as it is (the caller decides); unread bytes stay.
      if (fromHandler) this.checkPause();
      return;
    }
    this.markEnded();
    this.resolveWait(false);
  }

  /** Ends receive() because its receiver returned STOP_RECEIVING: resolves true; later bytes stay. */
  private finishStopped(): void {
    if (this.waitKind !== WAIT_RECEIVE) return;
    this.clearWait();
    // Nobody reads now: past the pause mark the source stops until the next read.
    this.checkPause();
    this.resolveWait(true);
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return {
      next: async (): Promise<IteratorResult<Uint8Array>> => {
        const v = await this.read();
        return v === null ? { done: true, value: undefined } : { done: false, value: v };
      },
      return: async (): Promise<IteratorResult<Uint8Array>> => ({ done: true, value: undefined }),
    };
  }

  private wait(kind: number, count: number, opts: SignalOptions | undefined): Promise<any> {
    let signal: AbortSignal | undefined;
    try {
      signal = signalOption("read", opts);
    } catch (e) {
      return Promise.reject(e); // before anything changes: the input stays as it was
    }
    if (signal?.aborted) return Promise.reject(new AbortError("read was aborted", { cause: signal.reason }));
    const p = new Promise(captureExecutor);
    this.resolveWait = capturedResolve;
    this.rejectWait = capturedReject;
    this.waitKind = kind;
    this.waitN = count;
    this.waitingSince = now() || 1e-9;
    this.need = count;
    if (this.paused && this.bytes < count) {
      // The reader needs more than the pause mark allows: receive until it has it.
      this.paused = false;
      this.src.inputPressure(false);
    }
    if (signal !== undefined) {
      this.waitSignal = signal;
      signal.addEventListener("abort", this.onAbort, { once: true });
    }
    return p;
  }

  /** Clears the waiting read (its resolve/reject stay readable until the next wait). */
  private clearWait(): void {
    this.waitKind = WAIT_NONE;
    this.receiver = undefined;
    this.rangeReceiver = undefined;
    this.lookahead = undefined;
    this.waitingSince = 0;
    this.need = 0;
    if (this.waitSignal !== undefined) {
      this.waitSignal.removeEventListener("abort", this.onAbort);
      this.waitSignal = undefined;
    }
  }

  private abortWait(): void {
    if (this.waitKind === WAIT_NONE) return;
    const reason = this.waitSignal?.reason;
    if (this.waitKind === WAIT_RECEIVE) {
      this.finishReceive(new AbortError(`${this.rangeReceiver === undefined ? "receive" : "receiveRanges"} was aborted`, { cause: reason }), true);
      return;
    }
    this.clearWait();
    this.rejectWait(new AbortError("read was aborted", { cause: reason }));
  }

  /** Fails a waiting read with `err` (read timeouts); the stack then resets the connection. */
  failWait(err: Error): void {
    if (this.waitKind === WAIT_NONE) return;
    if (this.waitKind === WAIT_RECEIVE) {
      this.finishReceive(err, false);
      return;
    }
    this.clearWait();
    this.rejectWait(err);
  }

  private wake(): void {
    const kind = this.waitKind;
    if (kind === WAIT_RECEIVE) {
      this.deliver();
    } else if (kind === WAIT_READ) {
      if (this.n > 0) {
        this.clearWait();
        this.resolveWait(this.takeHead());
      } else if (this.err !== undefined) {
        this.clearWait();
        this.rejectWait(this.err);
      } else if (this.eof) {
        this.clearWait();
        this.resolveWait(null);
        this.markEnded();
      }
    } else if (kind === WAIT_EXACT) {
      const count = this.waitN;
      if (this.bytes >= count) {
        this.clearWait();
        this.resolveWait(this.takeExactly(count));
      } else if (this.err !== undefined) {
        this.clearWait();
        this.rejectWait(this.err);
      } else if (this.eof) {
        this.clearWait();
        this.endedEarly(count).then(this.resolveWait, this.rejectWait);
      }
    } else if (this.n > 0 || this.eof || this.err !== undefined) {
      // WAIT_DATA: consume() re-checks what arrived.
      this.clearWait();
      this.resolveWait(undefined);
    }
  }
}
