/**
 * Shared memory between shards and the single-producer/single-consumer rings in it.
 *
 * The supervisor creates one SharedArrayBuffer and hands it to every shard at start:
 *
 *   control  one 128-byte block per shard (sleeping flag, eventfd, state, cpu, thread id),
 *            then a global block (the service start sequence)
 *   rings    one per ordered pair (from, to), from != to: a 256-byte header (tail, head and
 *            the producer's "waiting for room" flag, each on its own cache line) and
 *            `ringBytes` of data
 *
 * Records are [u32 length][u8 kind][...], 8-byte aligned, never split: a record that does
 * not fit before the end of the data is preceded by a PAD record that fills the rest.
 * Positions are free-running u32 byte counters (data index = position & mask), so
 * used = (tail - head) mod 2^32. The producer writes records past the published tail and
 * publishes the tail once per loop turn (Atomics.store: everything written before it is
 * visible to the consumer that Atomics.loads it); the consumer publishes its head once per
 * drain. Nothing else is shared, and no lock is taken.
 */
import { InvalidArgumentError } from "../core/errors.ts";
import { Reader, Writer, fastBuffer, type FastBuffer, type ForeignBufferFactory } from "./codec.ts";
import { describeValue } from "../core/describe.ts";

/** Record kind of the filler before a wrap. */
export const K_PAD = 0;

/** i32 words per shard control block (128 bytes, so shards never share a cache line). */
const CTL_WORDS = 32;
/** Control word: 1 while the shard sleeps in io_uring_enter (senders then write its eventfd). */
export const CTL_SLEEPING = 0;
/** Control word: the shard's reactor eventfd. */
export const CTL_EVENTFD = 1;
/** Control word: the CPU the shard is pinned to, or -1. */
export const CTL_CPU = 3;
/** Control word: the shard's kernel thread id. */
export const CTL_TID = 4;
/** Control word: the shard's io_uring fd (other shards wake it with ring messages). */
export const CTL_RINGFD = 5;
/** Global control words (after the shards' blocks). */
export const GLOBAL_START_SEQ = 0;

const RING_HEADER_BYTES = 256;
const TAIL_WORD = 0;
const HEAD_WORD = 16;
const WAITING_WORD = 32;

/** Default bytes of data per ring. */
export const DEFAULT_RING_BYTES = 256 * 1024;
/** Smallest accepted ring size. */
export const MIN_RING_BYTES = 4096;
/** Largest accepted ring size. */
export const MAX_RING_BYTES = 1 << 30;

/** Offsets inside the shared memory of `count` shards with rings of `ringBytes`. */
export class SmpLayout {
  readonly count: number;
  readonly ringBytes: number;
  readonly totalBytes: number;
  private readonly ringsAt: number;
  private readonly globalAt: number;

  constructor(count: number, ringBytes: number) {
    if (!Number.isInteger(count) || count < 1 || count > 4096) {
      throw new InvalidArgumentError(`shard count must be an integer in 1..4096, got ${describeValue(count)}`);
    }
    if (!Number.isInteger(ringBytes) || ringBytes < MIN_RING_BYTES || ringBytes > MAX_RING_BYTES || (ringBytes & (ringBytes - 1)) !== 0) {
      throw new InvalidArgumentError(`ringBytes must be a power of two in ${MIN_RING_BYTES}..${MAX_RING_BYTES}, got ${describeValue(ringBytes)}`);
    }
    this.count = count;
    this.ringBytes = ringBytes;
    this.globalAt = count * CTL_WORDS * 4;
    this.ringsAt = this.globalAt + 256;
    this.totalBytes = this.ringsAt + count * (count - 1) * (RING_HEADER_BYTES + ringBytes);
  }

  /** i32 word index of control word `word` of shard `k`. */
  ctl(k: number, word: number): number {
    return k * CTL_WORDS + word;
  }

  /** i32 word index of global word `word`. */
  global(word: number): number {
    return (this.globalAt >> 2) + word;
  }

  /** Byte offset of the ring from shard `from` to shard `to`. */
  ring(from: number, to: number): number {
    if (from === to) throw new InvalidArgumentError(`no ring from shard ${from} to itself`);
    const index = from * (this.count - 1) + (to < from ? to : to - 1);
    return this.ringsAt + index * (RING_HEADER_BYTES + this.ringBytes);
  }

  /** The largest record a ring accepts: half of it, so that a record always fits after a wrap. */
  get maxRecordBytes(): number {
    return this.ringBytes >>> 1;
  }
}

/** Creates the shared memory for `count` shards (the supervisor does this once). */
export function createSmpMemory(layout: SmpLayout): SharedArrayBuffer {
  return new SharedArrayBuffer(layout.totalBytes);
}

/** What both ends of one ring view: the shared control words and the data area. */
abstract class RingEnd {
  readonly from: number;
  readonly to: number;
  protected readonly mask: number;
  protected readonly i32: Int32Array;
  protected readonly tailWord: number;
  protected readonly headWord: number;
  protected readonly waitingWord: number;
  readonly u8: Uint8Array;
  readonly dv: DataView;
  /** Byte offset of the data area in the shared memory. */
  protected readonly dataAt: number;

  constructor(sab: SharedArrayBuffer, layout: SmpLayout, from: number, to: number) {
    const at = layout.ring(from, to);
    this.from = from;
    this.to = to;
    this.mask = layout.ringBytes - 1;
    this.i32 = new Int32Array(sab);
    this.tailWord = (at >> 2) + TAIL_WORD;
    this.headWord = (at >> 2) + HEAD_WORD;
    this.waitingWord = (at >> 2) + WAITING_WORD;
    this.dataAt = at + RING_HEADER_BYTES;
    this.u8 = new Uint8Array(sab, this.dataAt, layout.ringBytes);
    this.dv = new DataView(sab, this.dataAt, layout.ringBytes);
  }
}

/** The producer's end of one ring: written only by shard `from`. */
export class OutRing extends RingEnd {
  readonly capacity: number;
  private readonly maxRecord: number;
  readonly buf: FastBuffer;
  /** Write position: records before it are written, not necessarily published. */
  tail = 0;
  private published = 0;
  private headCache = 0;
  /** Encoded messages waiting for room, oldest first (back-pressure, never dropped). */
  private backlog: Uint8Array[] = [];
  private backlogHead = 0;
  private drainedWaiters: (() => void)[] = [];
  /** @internal set while the runtime lists this ring as needing a flush */
  dirty = false;
  /** Most messages waiting in the backlog at once (a test and soak statistic). */
  maxBacklog = 0;
  /** Messages written (straight or from the backlog). */
  messages = 0;

  constructor(sab: SharedArrayBuffer, layout: SmpLayout, from: number, to: number) {
    super(sab, layout, from, to);
    this.capacity = layout.ringBytes;
    this.maxRecord = layout.maxRecordBytes;
    this.buf = fastBuffer(sab, this.dataAt, layout.ringBytes);
    // Start where the shared words say (zero for a fresh buffer): records already there and
    // not yet consumed keep their room.
    this.tail = this.published = Atomics.load(this.i32, this.tailWord) >>> 0;
    this.headCache = Atomics.load(this.i32, this.headWord) >>> 0;
  }

  /** Messages waiting for room. */
  get backlogLength(): number {
    return this.backlog.length - this.backlogHead;
  }

  /** Bytes written and not yet consumed, as far as this side knows. */
  get usedBytes(): number {
    return (this.tail - this.headCache) >>> 0;
  }

  private free(): number {
    return this.capacity - ((this.tail - this.headCache) >>> 0);
  }

  private refreshHead(): void {
    this.headCache = Atomics.load(this.i32, this.headWord) >>> 0;
  }

  /**
   * Points `w` at the free room after the tail so a message can be encoded in place. Returns
   * false when that cannot be done now (a backlog to keep ordered, or too little room).
   */
  direct(w: Writer): boolean {
    if (this.backlog.length !== this.backlogHead) return false;
    let free = this.free();
    if (free < 1024) {
      this.refreshHead();
      free = this.free();
    }
    let at = this.tail & this.mask;
    let room = this.capacity - at;
    if (room < 256 && free >= room + 256) {
      this.pad(at, room);
      at = 0;
      free -= room;
      room = this.capacity;
    }
    // Never more than the record limit: whether a message is too large must not depend on the ring's state.
    room = Math.min(room, free, this.maxRecord);
    if (room < 64) return false;
    w.target(this.u8, this.dv, this.buf, at, at + room);
    return true;
  }

  /** Accepts the record `w` encoded in place (its length field is set and 8-byte aligned). */
  commitDirect(w: Writer, start: number): void {
    this.tail = (this.tail + (w.pos - start)) >>> 0;
    this.messages++;
  }

  private pad(at: number, bytes: number): void {
    this.dv.setUint32(at, bytes, true);
    this.u8[at + 4] = K_PAD;
    this.tail = (this.tail + bytes) >>> 0;
  }

  /** Copies an encoded record (length field set, 8-byte aligned) into the ring; false if there is no room. */
  private tryCopy(src: Uint8Array, bytes: number): boolean {
    let at = this.tail & this.mask;
    const room = this.capacity - at;
    const need = bytes <= room ? bytes : room + bytes;
    if (need > this.free()) {
      this.refreshHead();
      if (need > this.free()) return false;
    }
    if (bytes > room) {
      this.pad(at, room);
      at = 0;
    }
    this.u8.set(bytes === src.length ? src : src.subarray(0, bytes), at);
    this.tail = (this.tail + bytes) >>> 0;
    this.messages++;
    return true;
  }

  /**
   * Writes an encoded record, or queues a copy of it behind the others when the ring is full.
   * Returns true if it went into the ring.
   */
  write(src: Uint8Array, bytes: number): boolean {
    if (bytes < 8 || (bytes & 7) !== 0 || bytes > this.maxRecord) {
      throw new Error(`OutRing.write: a record must be 8-byte aligned and 8..${this.maxRecord} bytes, got ${describeValue(bytes)}`);
    }
    if (this.backlog.length === this.backlogHead && this.tryCopy(src, bytes)) return true;
    if (this.backlog.length === this.backlogHead) Atomics.store(this.i32, this.waitingWord, 1);
    this.backlog.push(src.slice(0, bytes));
    const waiting = this.backlog.length - this.backlogHead;
    if (waiting > this.maxBacklog) this.maxBacklog = waiting;
    return false;
  }

  /** Moves backlog records into the ring while they fit. Returns true if any moved. */
  pump(): boolean {
    if (this.backlog.length === this.backlogHead) return false;
    let moved = false;
    while (this.backlogHead < this.backlog.length) {
      const rec = this.backlog[this.backlogHead]!;
      if (!this.tryCopy(rec, rec.length)) break;
      this.backlog[this.backlogHead++] = undefined as unknown as Uint8Array;
      moved = true;
    }
    if (this.backlogHead === this.backlog.length) {
      this.backlog = [];
      this.backlogHead = 0;
      Atomics.store(this.i32, this.waitingWord, 0);
      const waiters = this.drainedWaiters;
      this.drainedWaiters = [];
      for (let i = 0; i < waiters.length; i++) waiters[i]!();
    } else if (this.backlogHead > 1024 && this.backlogHead * 2 > this.backlog.length) {
      this.backlog = this.backlog.slice(this.backlogHead);
      this.backlogHead = 0;
    }
    return moved;
  }

  /** True when backlog records could move now (checked before sleeping). */
  backlogCanMove(): boolean {
    if (this.backlog.length === this.backlogHead) return false;
    this.refreshHead();
    const rec = this.backlog[this.backlogHead]!;
    const room = this.capacity - (this.tail & this.mask);
    return (rec.length <= room ? rec.length : room + rec.length) <= this.free();
  }

  /** True while someone awaits whenDrained(). */
  get hasDrainWaiters(): boolean {
    return this.drainedWaiters.length > 0;
  }

  /** Resolves once the backlog is empty (every queued record is in the ring). */
  whenDrained(): Promise<void> {
    if (this.backlog.length === this.backlogHead) return Promise.resolve();
    return new Promise<void>((resolve) => this.drainedWaiters.push(resolve));
  }

  /** Bytes written since the last publish. */
  get unpublishedBytes(): number {
    return (this.tail - this.published) >>> 0;
  }

  /** Publishes the tail. Returns true if there was anything new. */
  publish(): boolean {
    if (this.tail === this.published) return false;
    Atomics.store(this.i32, this.tailWord, this.tail | 0);
    this.published = this.tail;
    return true;
  }

  /** Drops everything queued (the consumer is gone) and releases whoever waits on the backlog. */
  discard(): void {
    this.backlog = [];
    this.backlogHead = 0;
    const waiters = this.drainedWaiters;
    this.drainedWaiters = [];
    for (let i = 0; i < waiters.length; i++) waiters[i]!();
  }
}

/** Called for each record a consumer drains: the ring, and the record's data index. */
export type RecordHandler = (ring: InRing, at: number) => void;

/** The consumer's end of one ring: read only by shard `to`. */
export class InRing extends RingEnd {
  /** Decodes this ring's records in place. */
  readonly reader: Reader;
  /** Read position: records before it are consumed. */
  head = 0;
  /** Records consumed. */
  messages = 0;
  /** True inside drain(): a handler must not drain the same ring again (its loop holds the head). */
  draining = false;

  constructor(sab: SharedArrayBuffer, layout: SmpLayout, from: number, to: number, foreign?: ForeignBufferFactory) {
    super(sab, layout, from, to);
    this.reader = new Reader(this.u8, foreign);
    this.reader.from = from;
    this.head = Atomics.load(this.i32, this.headWord) >>> 0;
  }

  /** True when the producer has published records not yet consumed. */
  hasData(): boolean {
    return (Atomics.load(this.i32, this.tailWord) >>> 0) !== this.head;
  }

  /**
   * Hands up to `budget` published records to `handle`, in order, then publishes the head once.
   * Returns the number of records handled (PAD records are skipped and not counted).
   */
  drain(handle: RecordHandler, budget: number): number {
    const tail = Atomics.load(this.i32, this.tailWord) >>> 0;
    let head = this.head;
    let n = 0;
    this.draining = true;
    try {
      while (head !== tail && n < budget) {
        const at = head & this.mask;
        const bytes = this.dv.getUint32(at, true);
        if (bytes < 8 || (bytes & 7) !== 0 || bytes > ((tail - head) >>> 0)) {
          throw new Error(`corrupt ring from shard ${this.from}: a record of ${bytes} bytes at ${at}`);
        }
        head = (head + bytes) >>> 0;
        // Advance first: a record whose handler throws is not handled twice.
        this.head = head;
        if (this.u8[at + 4] === K_PAD) continue;
        n++;
        handle(this, at);
      }
    } finally {
      this.draining = false;
      this.messages += n;
      Atomics.store(this.i32, this.headWord, this.head | 0);
    }
    return n;
  }

  /** True when the producer is waiting for room (it should be woken after a drain). */
  producerWaiting(): boolean {
    return Atomics.load(this.i32, this.waitingWord) !== 0;
  }
}
