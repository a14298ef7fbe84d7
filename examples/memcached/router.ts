/**
 * Per-key ownership across shards (Seastar's memcached design): the key's hash picks the shard
 * that stores it, and a command for another shard's key travels there as its own bytes (the
 * command line with its data block, or the binary packet), runs in a session on the owner,
 * and its response bytes come back to take their place in the client's response stream.
 *
 * Units for one shard are gathered for the whole loop turn (every connection of this shard)
 * into one batch, sent as one cross-shard call; the owner runs them in order and answers with
 * one buffer of responses. Per connection the order of responses is kept: the session leaves a
 * hole in its output for each forwarded unit, and the server fills the holes when the
 * batches come back, before it reads the connection again. Commands that concern every shard
 * (flush_all, stats, verbosity, ...) are forwarded to every other shard through the same
 * batches, so they stay ordered with the keyed commands around them.
 *
 * Large batches and answers (items up to -I) cross as native buffers handed over, not copied.
 */
import { copyBytes, BufferCache, foreignView, NativeBuffer, registerHandler, releaseForeignView, submitTo, Timer, type BufferHome } from "shoal";
import type { Engine } from "./engine.ts";
import { murmur3, shardOf } from "./hash.ts";
import { Out } from "./out.ts";
import { KEY_MAX_LENGTH } from "./text.ts";
import { parsed, parseI32, parseU32, parseU64 } from "./numbers.ts";
import { type GetCont, PAUSE_BYTES, Proto, READ_COST_MIN, Session } from "./session.ts";
import { base64Decode } from "./base64.ts";
import { BinarySink, binaryKeyedValid } from "./binary.ts";
import { renderStats, snapshot, type StatsSink, type StatsSnapshot } from "./stats.ts";
import { lookahead } from "./lookahead.ts";
import { Holds } from "./store.ts";

/** What a forwarded unit is. */
export const enum UnitKind {
  /** Text command (line + data): the answer as is. */
  TEXT = 0,
  /** Part of a multiget: the answer without its final "END\r\n". */
  TEXT_GET_PART = 1,
  /** Binary packet (header, extras, key, value). */
  BINARY = 2,
  /** Text command run for its effect everywhere (flush_all, verbosity...): no answer. */
  TEXT_SILENT = 3,
  /** Stats snapshot request: answered with the shard's counters (JSON). */
  STATS = 4,
  /** Text command whose raw answer is gathered (stats conns, metadump, detail dump). */
  TEXT_GATHER = 5,
  /** The sender reached a send point: items earlier units hold are free (no answer). */
  RELEASE = 6,
  /**
   * A storage command (TEXT or BINARY) whose value the sender had no room to buffer
   * (Engine.reserveForward): runs with its item allocation failing, answering and counting as
   * stock's out of memory (a failed set also unlinks the old value), without its value.
   */
  TEXT_NOMEM = 7,
  BINARY_NOMEM = 8,
  /** The batch ends here (a batch handed over in native memory may be followed by spare room). */
  END = 9,
  /** The sender is done with these items' values its answers lent (u32 refs; no answer). */
  UNLEND = 10,
}

const SHARD_FAILED = new TextEncoder().encode("SERVER_ERROR the shard owning this key is unavailable\r\n");

/**
 * A binary response for a request (its opcode and opaque) that needed a shard that could not
 * answer: status 0x84 (Internal error, of the binary protocol's status codes; stock, with one
 * process, never has this case) and the same words as the text protocol's SERVER_ERROR.
 */
function binaryShardFailed(opcode: number, opaque: number): Uint8Array {
  const msg = "the shard owning this key is unavailable";
  const b = new Uint8Array(24 + msg.length);
  b[0] = 0x81;
  b[1] = opcode;
  b[7] = 0x84;
  b[8] = msg.length >>> 24;
  b[9] = (msg.length >>> 16) & 0xff;
  b[10] = (msg.length >>> 8) & 0xff;
  b[11] = msg.length & 0xff;
  b[12] = opaque >>> 24;
  b[13] = (opaque >>> 16) & 0xff;
  b[14] = (opaque >>> 8) & 0xff;
  b[15] = opaque & 0xff;
  for (let i = 0; i < msg.length; i++) b[24 + i] = msg.charCodeAt(i);
  return b;
}

/** The answer of a batch with none (yet), or whose handed-over answer was read and given back. */
const NO_ANSWER = new Uint8Array(0);

/**
 * A forwarded unit's answer at least this long is sent from the buffer it was handed over in
 * (Session.splice) when the session allows it, instead of being copied into the output.
 */
const SPLICE_MIN = 8 * 1024;
/**
 * A splice keeps the whole handed-over buffer (other connections' answers too) until it is sent:
 * only from a buffer of at most this, or one its answer is an eighth of at least. A connection
 * that stops reading then holds at most that beyond its own answers (it splices only while
 * nothing of its output is queued, so one such buffer at a time).
 */
const SPLICE_SHARED_MAX = 1024 * 1024;

/** Batches bigger than this cross as handed-over native buffers. */
const INLINE_MAX = 32 * 1024;

/**
 * The native buffers large batches and answers cross in. A receiver's release hands each back
 * to this shard, which keeps its mapping for the next one: a fresh mapping per batch cost an
 * mmap, a page fault per 4 KiB and an munmap whose TLB shootdown interrupts the other CPUs
 * (2 shards forwarding 60 KB values spent more time there than serving them).
 */
const transferBuffers = new BufferCache({ retainBytes: 16 * 1024 * 1024 });

/**
 * Request buffers of sent batches. submitTo copies the payload into the ring (or its backlog)
 * before it returns, so a batch gives its buffer back as soon as it is sent: one buffer serves
 * every batch of a shard instead of a fresh 4 KiB array (allocated outside the GC's fast path,
 * zeroed, finalized) per destination per turn.
 */
const freeRequestBuffers: Uint8Array[] = [];
const EMPTY = new Uint8Array(0);
/** Request buffers that grew beyond this are dropped rather than kept. */
const REQUEST_BUFFER_KEEP = 64 * 1024;

function takeRequestBuffer(): Uint8Array {
  return freeRequestBuffers.pop() ?? new Uint8Array(4096);
}

/** Little-endian u32 at `p` (unit lengths; no DataView needed). */
function u32le(b: Uint8Array, p: number): number {
  return (b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24)) >>> 0;
}

/** Scratch for the f64s of a lend table (an arena's address and length), read and written. */
const f64Bytes = new Uint8Array(8);
const f64View = new DataView(f64Bytes.buffer);

/** Little-endian f64 at `p`. */
function f64le(b: Uint8Array, p: number): number {
  for (let k = 0; k < 8; k++) f64Bytes[k] = b[p + k]!;
  return f64View.getFloat64(0, true);
}

/**
 * Another shard's item arena as this shard sees it (all shards share one address space): one
 * view over the whole mapping, made once, from which the values it lends are read or sent
 * (a view per value cost ~1 µs each: bench/core/views.bench.ts). Lent values going back are
 * gathered and ride in the next batch to the owner (UnitKind.UNLEND).
 */
export class OwnerArena implements BufferHome {
  readonly owner: number;
  readonly address: number;
  readonly view: Uint8Array;

  constructor(owner: number, address: number, length: number) {
    this.owner = owner;
    this.address = address;
    this.view = foreignView(address, length);
  }

  /** A NativeBuffer over the lent value `view[offset, offset+len)` of item `ref`: released, it goes back. */
  lend(offset: number, len: number, ref: number): NativeBuffer {
    return NativeBuffer.lend(this.view.subarray(offset, offset + len), this.address + offset, this, ref);
  }

  /** @internal BufferHome: the value was sent (lend). */
  recycle(buffer: NativeBuffer): void {
    this.unlend(buffer.index);
  }

  /**
   * Item `ref`'s lent value is done with here: the owner may free or move it once told, in the
   * next batch this shard sends it (within UNLEND_DELAY_MS: a batch of its own only if no other
   * went; one per release doubled the batches between two shards under load).
   */
  unlend(ref: number): void {
    const pend = pendingUnlends[this.owner];
    if (pend !== undefined) {
      pend.push(ref);
      return;
    }
    pendingUnlends[this.owner] = [ref];
    if (unlendTimer === undefined) {
      unlendTimer = new Timer(() => {
        // (A shard that lends to this one has a router here: this one asked it.)
        const r = localEngine?.router;
        if (r == null) return;
        for (let d = 0; d < pendingUnlends.length; d++) if (pendingUnlends[d] !== undefined) r.batch(d);
      });
    }
    if (!unlendTimer.armed) unlendTimer.arm(UNLEND_DELAY_MS);
  }
}

/** Items other shards lent this one that it is done with, by owner, until a batch tells it (Batch.send). */
const pendingUnlends: (number[] | undefined)[] = [];
/** Sends a batch to an owner that releases are pending for and no other batch went to (OwnerArena.unlend). */
let unlendTimer: Timer | undefined;
/** How long a release may wait for a batch to ride in. */
const UNLEND_DELAY_MS = 2;

/** The arenas of other shards seen so far, by owner (a new one replaces the old: a new engine, in tests). */
const arenas: (OwnerArena | undefined)[] = [];

function ownerArena(owner: number, address: number, length: number): OwnerArena {
  const a = arenas[owner];
  if (a !== undefined && a.address === address && a.view.length === length) return a;
  if (a !== undefined) releaseForeignView(a.view);
  return (arenas[owner] = new OwnerArena(owner, address, length));
}

/** One turn's units for one shard, and (once sent) the answer. */
export class Batch {
  readonly dest: number;
  buf = takeRequestBuffer();
  len = 0;
  count = 0;
  /** Resolves once the answer arrived and was split into units (never rejects). */
  readonly reply: Promise<void>;
  /** True once `reply` resolved (awaiting it then would only cost a microtask). */
  replied = false;
  private resolveReply!: () => void;
  /** Why the batch failed (the shard is gone...), if it did. */
  failure: unknown;
  /** Answer bytes and where each unit's answer starts/ends. */
  answer: Uint8Array = NO_ANSWER;
  starts: number[] = [];
  ends: number[] = [];
  /**
   * A handed-over answer, read in place until settleNative runs (see split); which of its
   * units were read, and how many.
   */
  private native: NativeBuffer | undefined;
  private taken: Uint8Array | undefined;
  private takenCount = 0;
  /** Binary units' opcode and opaque ([unit, opcode, opaque]...): what a failed unit answers to. */
  private binary: number[] | undefined;
  /** The native memory `buf` views once the batch outgrew INLINE_MAX (see ensure). */
  private request: NativeBuffer | undefined;

  constructor(dest: number) {
    this.dest = dest;
    this.reply = new Promise<void>((resolve) => (this.resolveReply = resolve));
  }

  /**
   * Units whose answer nobody reads (RELEASE, UNLEND, a silent line without a hole): counted as
   * read when a handed-over answer arrives, which settleNative then gives back without copying.
   */
  private unread: number[] | undefined;

  /** Unit `index`'s answer is never read (see unread). */
  noteUnread(index: number): void {
    (this.unread ??= []).push(index);
  }

  /** Starts a unit; returns its index. */
  begin(kind: UnitKind | number, proto: Proto, bodyLength: number): number {
    if (kind === UnitKind.RELEASE || kind === UnitKind.UNLEND) this.noteUnread(this.count);
    this.ensure(6 + bodyLength);
    const buf = this.buf;
    const at = this.len;
    buf[at] = kind;
    buf[at + 1] = proto;
    buf[at + 2] = bodyLength & 0xff;
    buf[at + 3] = (bodyLength >>> 8) & 0xff;
    buf[at + 4] = (bodyLength >>> 16) & 0xff;
    buf[at + 5] = bodyLength >>> 24;
    this.len += 6;
    return this.count++;
  }

  /** Unit `index` is the binary request `packet` (its header first): noted for a failure's answer. */
  noteBinary(index: number, packet: Uint8Array): void {
    const opaque = ((packet[12]! << 24) | (packet[13]! << 16) | (packet[14]! << 8) | packet[15]!) >>> 0;
    (this.binary ??= []).push(index, packet[1]!, opaque);
  }

  /** Appends body bytes of the current unit. */
  append(src: Uint8Array, from: number, to: number): void {
    const n = to - from;
    this.ensure(n);
    copyBytes(this.buf, this.len, src, from, n);
    this.len += n;
  }

  /**
   * Room for `n` more bytes. Past INLINE_MAX the batch moves to native memory from the
   * transfer cache, where it goes on growing and is handed over as it is (copying a large
   * batch into a transfer buffer at send() was one more copy of every forwarded large value).
   */
  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = Math.max(this.buf.length * 2, 64);
    while (size < this.len + n) size *= 2;
    if (size > INLINE_MAX) {
      const nb = transferBuffers.take(size);
      if (this.len > 0) copyBytes(nb.bytes, 0, this.buf, 0, this.len);
      if (this.request !== undefined) this.request.release();
      else if (this.buf.length <= REQUEST_BUFFER_KEEP && this.buf !== EMPTY) freeRequestBuffers.push(this.buf);
      this.request = nb;
      this.buf = nb.bytes;
      return;
    }
    const b = new Uint8Array(size);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
  }

  /** Sends the batch; `reply` resolves once the answer is split into units. */
  send(from: number): void {
    // The destination's items this shard is done with ride along (see OwnerArena.unlend).
    const unlends = pendingUnlends[this.dest];
    if (unlends !== undefined) {
      pendingUnlends[this.dest] = undefined;
      this.begin(UnitKind.UNLEND, Proto.TEXT, 4 * unlends.length);
      for (const ref of unlends) {
        setU32le(this.buf, this.len, ref);
        this.len += 4;
      }
    }
    let payload: Uint8Array | NativeBuffer;
    const native = this.request !== undefined;
    if (native) {
      // Handed over whole: an END kind byte marks where the units stop in its spare room (the
      // receivers read a unit's kind before its length; no room is needed past that byte).
      if (this.len < this.buf.length) this.buf[this.len] = UnitKind.END;
      payload = this.request!;
      this.request = undefined;
    } else {
      payload = this.buf.subarray(0, this.len);
    }
    const sent = submitTo(this.dest, EXEC, from, payload) as Promise<Uint8Array | NativeBuffer>;
    // The bytes were copied (ring or backlog), or the native buffer handed over: a JS buffer
    // serves the next batch.
    if (!native && this.buf.length <= REQUEST_BUFFER_KEEP) freeRequestBuffers.push(this.buf);
    this.buf = EMPTY;
    this.len = 0;
    sent.then(
      (reply) => {
        this.split(reply);
        this.replied = true;
        this.resolveReply();
        // After the reactions resolveReply queued: the connections waiting for this batch.
        if (this.native !== undefined || this.lends !== undefined) queueMicrotask(() => this.settle());
      },
      (err: unknown) => {
        // Refused before it was handed over (the shard is gone...): the buffer is still ours.
        if (payload instanceof NativeBuffer && !payload.isReleased) payload.release();
        this.failure = err;
        this.replied = true;
        this.resolveReply();
      },
    );
  }

  /**
   * Indexes the answer's units. A handed-over answer is read in place: the connections waiting
   * for this batch wake in the microtasks its reply queues and copy their units into their
   * output; settleNative, queued after them, gives the buffer back (and copies whatever is still
   * unread, for a connection that gets to it later). Units are read only synchronously after
   * `reply` (fillHoles copies each at once; renders decode at once).
   */
  private split(answer: Uint8Array | NativeBuffer): void {
    let bytes: Uint8Array;
    if (answer instanceof NativeBuffer) {
      bytes = answer.bytes;
      this.native = answer;
    } else {
      bytes = answer;
    }
    // One record per unit sent; a handed-over answer is the owner's whole buffer (a power of
    // two), so its end is where the last record ends, not the buffer's.
    let p = 0;
    while (p < bytes.length && this.starts.length < this.count) {
      const h = u32le(bytes, p);
      const n = (h & ~LENDS_FLAG) >>> 0;
      this.starts.push(p + 4);
      this.ends.push(p + 4 + n);
      p += 4 + n;
      if (h >= LENDS_FLAG) {
        // The values this unit lends (see LENDS_FLAG): [at, len, offset, ref] each.
        const c = u32le(bytes, p);
        this.arena = ownerArena(this.dest, f64le(bytes, p + 8), f64le(bytes, p + 16));
        const t: number[] = [];
        for (let k = 0, q = p + 24; k < c; k++, q += 16) t.push(u32le(bytes, q), u32le(bytes, q + 4), u32le(bytes, q + 8), u32le(bytes, q + 12));
        (this.lends ??= [])[this.starts.length - 1] = t;
        p += 24 + c * 16;
      }
    }
    this.answer = p === bytes.length ? bytes : bytes.subarray(0, p);
    if (this.native !== undefined) {
      const taken = (this.taken = new Uint8Array(this.starts.length));
      for (const i of this.unread ?? []) {
        if (i < taken.length && taken[i] === 0) {
          taken[i] = 1;
          this.takenCount++;
        }
      }
    }
  }

  /**
   * After the connections this reply woke took their units: every lent value still here is
   * copied into its unit's answer and given back, then a handed-over answer goes back too.
   */
  private settle(): void {
    const lends = this.lends;
    if (lends !== undefined) {
      for (let i = 0; i < lends.length; i++) if (lends[i] !== undefined) this.assemble(i);
      this.lends = undefined;
    }
    if (this.native !== undefined) this.settleNative();
  }

  /** Gives a handed-over answer back: at no cost if every unit was read, else after a copy. */
  private settleNative(): void {
    const native = this.native!;
    this.native = undefined;
    this.answer = this.takenCount === this.starts.length ? NO_ANSWER : this.answer.slice();
    this.taken = undefined;
    if (this.nativeHolds > 0) this.settledHeld = native;
    else native.release();
  }

  /** The owner's arena the lent values lie in (see ownerArena). */
  private arena: OwnerArena | undefined;
  /** Per unit whose answer lends values: [at, len, offset, ref]... (see LENDS_FLAG); undefined once taken. */
  private lends: (number[] | undefined)[] | undefined;
  /** Units whose lent values were copied in (settle): their whole answer. */
  private assembled: (Uint8Array | undefined)[] | undefined;

  /** Unit `i`'s answer with its lent values copied in (each goes back to the owner). */
  private assemble(i: number): Uint8Array {
    const t = this.lends![i]!;
    this.lends![i] = undefined;
    const raw = this.rawUnit(i);
    const arena = this.arena!;
    let total = raw.length;
    for (let k = 0; k < t.length; k += 4) total += t[k + 1]!;
    const whole = new Uint8Array(total);
    let p = 0;
    let at = 0;
    for (let k = 0; k < t.length; k += 4) {
      const gap = t[k]! - at;
      if (gap > 0) copyBytes(whole, p, raw, at, gap);
      p += gap;
      at = t[k]!;
      copyBytes(whole, p, arena.view, t[k + 2]!, t[k + 1]!);
      p += t[k + 1]!;
      arena.unlend(t[k + 3]!);
    }
    if (raw.length > at) copyBytes(whole, p, raw, at, raw.length - at);
    (this.assembled ??= [])[i] = whole;
    return whole;
  }

  /**
   * fillHoles: unit `i`'s answer, whose values the owner lent (lendsValues), goes into the
   * output of `s`: each value spliced from the owner's memory (given back once sent), or copied
   * in and given back at once when the session cannot splice. Returns the bytes spliced. (Not
   * in fillHoles: the engine compiled that large function again when this path changed its
   * types.)
   */
  putLent(i: number, s: Session, splicing: boolean): number {
    const t = this.lends![i]!;
    this.lends![i] = undefined;
    const bytes = this.rawUnit(i);
    const arena = this.arena!;
    const out = s.out;
    let spliced = 0;
    let at = 0;
    for (let k = 0; k < t.length; k += 4) {
      out.copy(bytes, at, t[k]! - at);
      at = t[k]!;
      const len = t[k + 1]!;
      if (splicing) {
        s.spliceLent(arena.lend(t[k + 2]!, len, t[k + 3]!), len);
        spliced += len;
      } else {
        out.copy(arena.view, t[k + 2]!, len);
        arena.unlend(t[k + 3]!);
      }
    }
    out.copy(bytes, at, bytes.length - at);
    return spliced;
  }

  /** True if unit `i`'s answer lends values not yet taken (putLent) or copied in (unitAnswer). */
  lendsValues(i: number): boolean {
    const l = this.lends;
    return l !== undefined && l[i] !== undefined && this.failure === undefined;
  }

  /** Unit `i`'s record as it arrived (marked read for settleNative). */
  private rawUnit(i: number): Uint8Array {
    const taken = this.taken;
    if (taken !== undefined && taken[i] === 0) {
      taken[i] = 1;
      this.takenCount++;
    }
    return this.answer.subarray(this.starts[i]!, this.ends[i]!);
  }

  /**
   * The handed-over buffer the answers are read from in place, until settleNative gives it back
   * (undefined for an answer that crossed as bytes, after that, or for a failed batch): a unit's
   * answer (unitAnswer) lies in it at its byteOffset less the buffer's.
   */
  get handedOver(): NativeBuffer | undefined {
    return this.failure === undefined ? this.native : undefined;
  }

  /** Splices of the handed-over answer not yet queued for sending: it is given back after them. */
  private nativeHolds = 0;
  /** settleNative ran while splices held the handed-over answer: the last unhold gives it back. */
  private settledHeld: NativeBuffer | undefined;

  /** A session sends part of the handed-over answer in place (Session.splice): kept until unhold(). */
  hold(): void {
    this.nativeHolds++;
  }

  /** The splice was queued (the output pins what it sends) or dropped. */
  unhold(): void {
    if (--this.nativeHolds > 0 || this.settledHeld === undefined) return;
    const nb = this.settledHeld;
    this.settledHeld = undefined;
    nb.release();
  }

  /** Answer of unit `i` (after `reply` resolved); a SERVER_ERROR line if the batch failed. */
  unitAnswer(i: number): Uint8Array {
    if (this.failure !== undefined) {
      // A binary client gets a binary error for its request (a text line would desync it).
      const bin = this.binary;
      if (bin !== undefined) for (let k = 0; k < bin.length; k += 3) if (bin[k] === i) return binaryShardFailed(bin[k + 1]!, bin[k + 2]!);
      return SHARD_FAILED;
    }
    if (this.lends?.[i] !== undefined) return this.assemble(i);
    const whole = this.assembled?.[i];
    if (whole !== undefined) return whole;
    return this.rawUnit(i);
  }
}

/**
 * A place in a session's output waiting for other shards' answers: either a run of consecutive
 * units of one batch (`batch`, `first`, `count`: a pipeline of forwarded commands costs one hole),
 * or answers from several shards (`parts`) merged by `render`.
 */
export interface Hole {
  /** Position in the session's `out` where the answers go. */
  at: number;
  batch?: Batch;
  first: number;
  count: number;
  parts?: { batch: Batch; index: number }[];
  render?: (answers: Uint8Array[]) => Uint8Array;
  /** The answer when a shard of `parts` could not answer (default: the text SERVER_ERROR line). */
  failed?: () => Uint8Array;
  /** Its answer is not a send point even if a binary error (stock swallows a value first). */
  swallowed?: boolean;
}

/** A forwarded read's answer is bounded by the owner's largest item plus its VALUE line. */
const ANSWER_OVERHEAD = 64;

/** The shard's router: open batches per destination, flushed once per turn. */
export class Router {
  readonly engine: Engine;
  readonly shards: number;
  readonly self: number;
  private open: (Batch | undefined)[];
  private scheduled = false;

  constructor(engine: Engine) {
    this.engine = engine;
    this.shards = engine.shards;
    this.self = engine.shardId;
    this.open = new Array(this.shards);
  }

  /** What one key of a multiget read here may add to the output (a bound: the largest item). */
  localReadCost(): number {
    return Math.max(this.engine.store.itemBound() + ANSWER_OVERHEAD, READ_COST_MIN);
  }

  /** Owner shard of a key. */
  owner(buf: Uint8Array, off: number, len: number): number {
    return shardOf(murmur3(buf, off, len), this.shards);
  }

  /** The batch being filled for `dest` this turn. */
  batch(dest: number): Batch {
    let b = this.open[dest];
    if (b === undefined) {
      b = new Batch(dest);
      this.open[dest] = b;
      if (!this.scheduled) {
        this.scheduled = true;
        queueMicrotask(() => this.flush());
      }
    }
    return b;
  }

  /** Sends every open batch. */
  flush(): void {
    this.scheduled = false;
    for (let d = 0; d < this.shards; d++) {
      const b = this.open[d];
      if (b !== undefined) {
        this.open[d] = undefined;
        b.send(this.self);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------- owner side

/** This shard's engine, for units arriving from other shards. */
let localEngine: Engine | undefined;
/** Sessions that run other shards' units, per source shard and protocol. */
const remoteSessions = new Map<number, Session>();
/** Items the units of the batch being run hold: the batch's answers leave together. */
const remoteHolds = new Holds();
/**
 * What a batch's units render into: native memory from transferBuffers, so that a large answer
 * is handed over as it is (no copy, no garbage for the collector: 21 pipelined reads of 400 KB
 * values were 16 MB of JS arrays per batch, freed whenever the collector got to them).
 */
let answerOut: Out | undefined;
/** After a failed batch, an answer buffer larger than this is given up (a burst's size is not kept). */
const ANSWER_KEEP = 4 * 1024 * 1024;

/**
 * A unit's answer record whose length has this bit set is followed by a table of the values of
 * this shard's items it lends instead of copying (Seastar's foreign_ptr to the item): [u32
 * count][u32 0][f64 arena address][f64 arena length], then per value [u32 where in the
 * answer's bytes it goes][u32 length][u32 offset in the arena][u32 item ref], little-endian. A
 * get's value of ITEM_SPLICE_MIN or more is lent (Store.lend: the store keeps the item in
 * place); the requester sends it from there or copies it, and gives it back with an UNLEND
 * unit in a later batch (Store.unlendRef).
 */
const LENDS_FLAG = 0x80000000;

/** Appends a little-endian u32 to `out` (the answer's own framing; Out.u32 is big-endian). */
function outU32le(out: Out, v: number): void {
  out.byte(v & 0xff);
  out.byte((v >>> 8) & 0xff);
  out.byte((v >>> 16) & 0xff);
  out.byte(v >>> 24);
}

/** Appends a little-endian f64 to `out`. */
function outF64le(out: Out, v: number): void {
  f64View.setFloat64(0, v, true);
  out.copy(f64Bytes, 0, 8);
}

function remoteSession(from: number, proto: Proto): Session {
  const key = from * 4 + proto;
  let s = remoteSessions.get(key);
  if (s === undefined) {
    s = new Session(localEngine!, { protocol: proto, holds: remoteHolds });
    s.countBytes = false;
    s.routing = false;
    // Large values are lent to the requester rather than copied (see LENDS_FLAG).
    s.itemSpliceOk = true;
    remoteSessions.set(key, s);
  }
  return s;
}

/**
 * @internal Runs a batch of units from shard `from`; answers [u32 length][bytes] per unit.
 * The EXEC handler (exported for tests).
 */
export function execBatch(from: number, payload: Uint8Array | NativeBuffer): Uint8Array | NativeBuffer {
  const engine = localEngine;
  if (engine === undefined) {
    if (payload instanceof NativeBuffer) payload.release();
    throw new Error("memcached: a batch arrived before this shard's server started");
  }
  const bytes = payload instanceof NativeBuffer ? payload.bytes : payload;
  const out = (answerOut ??= new Out(64 * 1024, transferBuffers));
  out.reset();
  // Warm the caches for every text unit's keys first (their misses overlap), then run them.
  const store = engine.store;
  for (let q = 0; q < bytes.length && bytes[q] !== UnitKind.END; ) {
    const n = u32le(bytes, q + 2);
    if (bytes[q]! <= UnitKind.TEXT_GET_PART && bytes[q + 1]! === Proto.TEXT) lookahead(store, 1, 0, bytes, q + 6, q + 6 + n);
    // Lends the sender is done with end before any unit runs: it was done with them before it
    // sent any of this batch's commands (as stock, which let go of an item once its reply was
    // sent, before reading the next command), and a unit that fails cannot lose them.
    // (A ref not lent is ignored: the store stays as it is, whatever the sender says.)
    else if (bytes[q] === UnitKind.UNLEND) for (let r = q + 6; r + 4 <= q + 6 + n; r += 4) store.unlendRef(u32le(bytes, r));
    q += 6 + n;
  }
  store.warm();
  try {
    runUnits(from, bytes, out);
  } catch (e) {
    out.reset();
    if (out.buf.length > ANSWER_KEEP) out.shed();
    undoLends(store);
    throw e;
  } finally {
    // Whatever happened, the requester's buffer goes back and no item stays held.
    store.release(remoteHolds);
    if (payload instanceof NativeBuffer) payload.release();
  }
  if (out.pos > INLINE_MAX) {
    // Handed over in the buffer it was rendered in (the receiver reads one record per unit it
    // sent and gives the buffer back to this shard's cache); the answer buffer goes on in a
    // fresh one, taken first (a failed mapping leaves everything as it was).
    let given: NativeBuffer;
    try {
      given = out.handOff(out.spare(0), out.pos);
    } catch (e) {
      undoLends(store);
      throw e;
    }
    lentRefs.length = 0;
    return given;
  }
  lentRefs.length = 0;
  // A view of the shared answer buffer: a synchronous handler's result is encoded into the
  // reply as it returns, before the next batch can reuse the buffer.
  return out.bytes();
}

/** Items whose values the batch being run lends (to undo if its answer is not sent). */
const lentRefs: number[] = [];

/** The batch's answer is not sent: the values it lent are not lent after all. */
function undoLends(store: Engine["store"]): void {
  for (const ref of lentRefs) store.unlendRef(ref);
  lentRefs.length = 0;
}

/** What a remote session renders into between units (the answer buffer is lent per unit). */
const idleOut = new Out(64);

/** Runs the units of `bytes` from shard `from`, each answer as [u32 length][bytes] in `out`. */
function runUnits(from: number, bytes: Uint8Array, out: Out): void {
  const engine = localEngine!;
  const store = engine.store;
  let p = 0;
  while (p < bytes.length) {
    const kind = bytes[p]! as UnitKind;
    if (kind === UnitKind.END) break;
    const proto = bytes[p + 1]! as Proto;
    const n = u32le(bytes, p + 2);
    const bodyStart = p + 6;
    p += 6 + n;
    const lenAt = out.pos;
    out.u32(0);
    const start = out.pos;
    if (kind === UnitKind.STATS) {
      out.str(JSON.stringify(snapshot(engine)));
    } else if (kind === UnitKind.RELEASE) {
      store.release(remoteHolds);
    } else if (kind === UnitKind.UNLEND) {
      // Applied before the batch ran (execBatch): it answers nothing.
    } else {
      // The unit renders straight into the answer, after its length. Nothing before its start
      // is the unit's to cut (a failed multiget truncates to `keep`).
      const s = remoteSession(from, proto);
      s.out = out;
      s.keep = start;
      s.reset();
      try {
        if (kind === UnitKind.TEXT_SILENT) {
          s.silent = true;
          s.feedRange(bytes, bodyStart, bodyStart + n);
          out.pos = start;
        } else if (kind === UnitKind.TEXT_NOMEM || kind === UnitKind.BINARY_NOMEM) {
          store.failNextAlloc = true;
          s.feedRange(bytes, bodyStart, bodyStart + n);
        } else {
          s.feedRange(bytes, bodyStart, bodyStart + n);
          if (kind === UnitKind.TEXT_GET_PART && out.pos - start >= 5) out.pos -= 5;
        }
      } catch (e) {
        s.dropSplices();
        throw e;
      } finally {
        s.silent = false;
        store.failNextAlloc = false;
        s.reset();
        // Not kept past the unit: the answer buffer is handed over with a large answer.
        s.out = idleOut;
      }
      const lends = s.takeSplices();
      if (lends !== undefined) {
        if (kind === UnitKind.TEXT_SILENT) {
          for (const sp of lends) sp.nb.release();
        } else {
          // Each value's lend goes on at the requester: its buffer here is dropped, not
          // released (the UNLEND unit ends it: Store.unlendRef).
          const len = out.pos - start;
          setU32le(out.buf, lenAt, (len | LENDS_FLAG) >>> 0);
          outU32le(out, lends.length);
          outU32le(out, 0);
          const base = store.arenaAddress;
          outF64le(out, base);
          outF64le(out, store.mem.length);
          for (const sp of lends) {
            outU32le(out, sp.at - start);
            outU32le(out, sp.len);
            outU32le(out, sp.nb.address - base);
            outU32le(out, sp.nb.index);
            lentRefs.push(sp.nb.index);
          }
          continue;
        }
      }
    }
    setU32le(out.buf, lenAt, out.pos - start);
  }
}

/** Writes little-endian u32 `v` at `b[p]`. */
function setU32le(b: Uint8Array, p: number, v: number): void {
  b[p] = v & 0xff;
  b[p + 1] = (v >>> 8) & 0xff;
  b[p + 2] = (v >>> 16) & 0xff;
  b[p + 3] = v >>> 24;
}

const EXEC = registerHandler("memcached.exec", execBatch);

// ---------------------------------------------------------------------------------------- requester side

/** Sets up routing for a shard's engine (a no-op with one shard). */
export function installRouter(engine: Engine): void {
  localEngine = engine;
  // SHOAL_MC_ROUTING=off is a benchmark knob only: every shard then answers from its own
  // store, which no client should ever see (it measures what routing costs).
  if (engine.shards > 1 && process.env.SHOAL_MC_ROUTING !== "off") engine.router = new Router(engine);
}

const W = (s: string): Uint8Array => new TextEncoder().encode(s);
const CMD_GET = W("get");
const CMD_GETS = W("gets");
const CMD_GAT = W("gat");
const CMD_GATS = W("gats");
const CMD_BGET = W("bget");
const STORAGE = ["set", "add", "replace", "append", "prepend"].map(W);
const CMD_CAS = W("cas");
const KEYED = ["touch", "incr", "decr", "delete"].map(W);

function tokEq(s: Session, buf: Uint8Array, i: number, w: Uint8Array): boolean {
  const st = s.tokS[i]!;
  if (s.tokE[i]! - st !== w.length) return false;
  for (let k = 0; k < w.length; k++) if (buf[st + k] !== w[k]) return false;
  return true;
}

function tokString(s: Session, buf: Uint8Array, i: number): string {
  let r = "";
  for (let k = s.tokS[i]!; k < s.tokE[i]!; k++) r += String.fromCharCode(buf[k]!);
  return r;
}

const keyScratch = new Uint8Array(256);

/**
 * Decides where a tokenized text command runs. Returns true when it was forwarded (or
 * broadcast and answered) here; false to run it locally. `lineStart..lineNext` is the whole line
 * including its "\n".
 */
export function routeText(s: Session, r: Router, buf: Uint8Array, lineStart: number, lineNext: number): boolean {
  const nt = s.ntokens;
  if (nt < 2) return false;
  const c0 = buf[s.tokS[0]!]!;
  const len0 = s.tokE[0]! - s.tokS[0]!;
  // ---- retrieval: split multigets by owner
  if (c0 === 103 || c0 === 98) {
    const touch = tokEq(s, buf, 0, CMD_GAT) || tokEq(s, buf, 0, CMD_GATS);
    if (!touch && !tokEq(s, buf, 0, CMD_GET) && !tokEq(s, buf, 0, CMD_GETS) && !tokEq(s, buf, 0, CMD_BGET)) return false;
    if (nt < 3) return false;
    const routed = routeGet(s, r, buf, touch, lineStart, lineNext);
    if (routed === GetRoute.LOCAL) return false;
    // Stock transmits after every get (conn_mwrite), not after its CLIENT_ERROR.
    if (routed === GetRoute.ROUTED) s.flushPoint();
    return true;
  }
  // ---- meta commands: key in token 1 (maybe base64)
  if (c0 === 109 && len0 === 2) {
    const c1 = buf[s.tokS[0]! + 1]!;
    if (nt < 3 || s.tokE[1]! - s.tokS[1]! > KEY_MAX_LENGTH) return false;
    if (c1 === 110) return false; // mn
    if (c1 !== 103 && c1 !== 115 && c1 !== 100 && c1 !== 97 && c1 !== 101) return false;
    let kb = buf;
    let ko = s.tokS[1]!;
    let kl = s.tokE[1]! - ko;
    const firstFlag = c1 === 115 ? 3 : 2;
    let b64 = false;
    if (c1 === 101) b64 = nt >= 4 && s.tokE[2]! - s.tokS[2]! === 1 && buf[s.tokS[2]!] === 98;
    else for (let i = firstFlag; i < nt - 1; i++) if (buf[s.tokS[i]!] === 98) b64 = true;
    if (b64) {
      const n = base64Decode(buf, ko, kl, keyScratch);
      if (n === 0) return false;
      kb = keyScratch;
      ko = 0;
      kl = n;
    }
    const dest = r.owner(kb, ko, kl);
    if (dest === r.self) return false;
    if (c1 !== 115) {
      forwardLine(s, r, dest, UnitKind.TEXT, buf, lineStart, lineNext, c1 === 103 ? 1 : 0);
      if (c1 === 103) s.heldOn(dest);
      return true;
    }
    // ms <key> <datalen> <flags>*: the data block goes along unless it is too large. More
    // tokens than stock's MFLAG_MAX_OPT_LENGTH fail here, before any value is read (stock reads
    // the next bytes as a command).
    if (nt < 4 || nt > MFLAG_MAX_OPT_LENGTH || !parseI32(buf, s.tokS[2]!, s.tokE[2]!)) return false;
    const vlen = parsed.num;
    if (vlen < 0 || vlen > 2147483645) return false;
    let flags = 0;
    for (let i = 3; i < nt - 1; i++) {
      if (buf[s.tokS[i]!] === 70 && parseU32(buf, s.tokS[i]! + 1, s.tokE[i]!)) flags = parsed.num;
    }
    forwardStorage(s, r, dest, buf, lineStart, lineNext, kl, flags, vlen + 2);
    return true;
  }
  // ---- classic keyed commands
  for (const w of STORAGE) {
    if (tokEq(s, buf, 0, w)) {
      if (nt !== 6 && nt !== 7) return false;
      return routeStorage(s, r, buf, lineStart, lineNext, w === STORAGE[3] || w === STORAGE[4]);
    }
  }
  if (tokEq(s, buf, 0, CMD_CAS)) {
    if (nt !== 7 && nt !== 8) return false;
    if (!parseU64(buf, s.tokS[5]!, s.tokE[5]!)) return false;
    return routeStorage(s, r, buf, lineStart, lineNext, false);
  }
  for (const w of KEYED) {
    if (tokEq(s, buf, 0, w)) {
      if (nt < 3 || s.tokE[1]! - s.tokS[1]! > KEY_MAX_LENGTH) return false;
      const dest = r.owner(buf, s.tokS[1]!, s.tokE[1]! - s.tokS[1]!);
      if (dest === r.self) return false;
      forwardLine(s, r, dest, UnitKind.TEXT, buf, lineStart, lineNext, 0);
      return true;
    }
  }
  // ---- commands for every shard
  const name = tokString(s, buf, 0);
  if (name === "flush_all" || name === "verbosity" || name === "cache_memlimit") {
    if (name === "flush_all" && !s.engine.settings.flushEnabled) return false;
    broadcastLine(s, r, buf, lineStart, lineNext);
    return false; // and run here too, which gives the answer
  }
  if (name === "lru_crawler" && nt === 4 && tokString(s, buf, 1) === "crawl") {
    broadcastLine(s, r, buf, lineStart, lineNext);
    return false;
  }
  if (name === "lru_crawler" && nt === 3 && (tokString(s, buf, 1) === "enable" || tokString(s, buf, 1) === "disable")) {
    // One crawler setting for the whole server: every shard follows; the answer is this one's.
    broadcastLine(s, r, buf, lineStart, lineNext);
    return false;
  }
  if (name === "slabs" && nt >= 4 && tokString(s, buf, 1) === "automove") {
    broadcastLine(s, r, buf, lineStart, lineNext);
    return false;
  }
  if (name === "stats") return routeStats(s, r, buf, lineStart, lineNext);
  if (name === "lru_crawler" && nt === 4 && tokString(s, buf, 1) === "metadump") {
    if (s.othersPending) return false; // refused here, as stock refuses it
    gatherLine(s, r, buf, lineStart, lineNext, mergeDumps);
    return true;
  }
  return false;
}

/** Most tokens a meta command may have (stock's MFLAG_MAX_OPT_LENGTH; meta.ts checks it too). */
const MFLAG_MAX_OPT_LENGTH = 20;

/**
 * Each key of the multiget being routed (start, end, owner). Reused between commands, but not
 * kept once a long line grew it past GET_KEYS_KEEP entries: a multiget line of 15 million short
 * keys (30 MB, within MULTIGET_LINE_MAX) grew it to 45 million entries, and RSS stayed ~500 MiB
 * above its baseline for the shard's life after that one request.
 */
let getKeys: number[] = [];
const GET_KEYS_KEEP = 3 * 1024;
const getLine = new Out(1024);

/**
 * get/gets/gat/gats k1 k2 ...: runs of consecutive keys with one owner go together. A client's
 * multiget pauses between runs once what it rendered here or asked other shards for may exceed
 * PAUSE_BYTES (see readCost): a client that does not read cannot make the server copy more.
 */
const enum GetRoute {
  /** Every key is this shard's (or the line is refused before any key): run it here. */
  LOCAL = 0,
  ROUTED = 1,
  /** A too-long key: the keys before it were looked up where they live, CLIENT_ERROR answered. */
  FAILED = 2,
}

const BAD_FORMAT = new TextEncoder().encode("CLIENT_ERROR bad command line format\r\n");

function routeGet(s: Session, r: Router, buf: Uint8Array, touch: boolean, lineStart: number, lineNext: number): GetRoute {
  try {
    return routeGetKeys(s, r, buf, touch, lineStart, lineNext);
  } finally {
    // (A pause keeps no reference to it: resume re-reads the keys from the line.)
    if (getKeys.length > GET_KEYS_KEEP) getKeys = [];
  }
}

function routeGetKeys(s: Session, r: Router, buf: Uint8Array, touch: boolean, lineStart: number, lineNext: number): GetRoute {
  const end = s.lineEnd;
  let p = touch ? s.tokE[1]! : s.tokS[1]!;
  // Every key must be valid first: a too-long key fails the whole command (locally).
  const keys = getKeys;
  keys.length = 0;
  let remote = false;
  let oneDest = -1;
  let longKey = -1;
  for (;;) {
    while (p < end && buf[p] === 32) p++;
    if (p >= end) break;
    const k = p;
    while (p < end && buf[p] !== 32) p++;
    if (p - k > KEY_MAX_LENGTH) {
      longKey = k;
      break;
    }
    const dest = r.owner(buf, k, p - k);
    if (dest !== r.self) remote = true;
    oneDest = keys.length === 0 || oneDest === dest ? dest : -2;
    keys.push(k, p, dest);
  }
  if (!remote) return GetRoute.LOCAL;
  if (touch && !parseI32(buf, s.tokS[1]!, s.tokE[1]!)) return GetRoute.LOCAL;
  if (longKey >= 0) {
    failRoutedGet(s, r, buf, touch, keys, longKey, p);
    return GetRoute.FAILED;
  }
  if (oneDest >= 0) {
    // Every key lives on one other shard (a single-key get, usually): the line goes as is,
    // unless its answers may be more than a client that does not read may make us hold.
    const n = keys.length / 3;
    if (!s.pausable || n * s.readCost() <= PAUSE_BYTES) {
      forwardLine(s, r, oneDest, UnitKind.TEXT, buf, lineStart, lineNext, n);
      return GetRoute.ROUTED;
    }
  }
  const cmdStart = s.tokS[0]!;
  const cmdEnd = touch ? s.tokE[1]! : s.tokE[0]!;
  const out = s.out;
  let i = 0;
  while (i < keys.length) {
    if (i > 0 && s.pausable && (out.pos > PAUSE_BYTES || s.fwdBytes > PAUSE_BYTES)) {
      // Enough asked for a client that may not be reading (every key is valid: checked above):
      // the rest of the keys run on resume (continueRoutedGet), which writes the END.
      // (The parts carry the command's own words, gat's exptime included.)
      s.pauseGet({ buf, cmdStart, cmdEnd, p: keys[i]!, end, returnCas: false, touch, exptime: 0, routed: true });
      return GetRoute.ROUTED;
    }
    const dest = keys[i + 2]!;
    const local = dest === r.self;
    const cost = local ? r.localReadCost() : s.readCost();
    const room = local ? PAUSE_BYTES - out.pos : PAUSE_BYTES - s.fwdBytes;
    let j = i;
    let n = 0;
    while (j < keys.length && keys[j + 2] === dest && (n === 0 || !s.pausable || n * cost < room)) {
      j += 3;
      n++;
    }
    const line = runLine(buf, cmdStart, cmdEnd);
    for (let q = i; q < j; q += 3) {
      line.byte(32);
      line.copy(buf, keys[q]!, keys[q + 1]! - keys[q]!);
    }
    sendRun(s, r, dest, n);
    i = j;
  }
  out.str("END\r\n");
  return GetRoute.ROUTED;
}

/**
 * A multiget with a too-long key at `buf[longKey..longEnd)`: stock looks up the keys before it
 * (fetched flags, touches, counters) and then answers only CLIENT_ERROR, dropping every response
 * since its last send point. Each shard runs the keys it owns with the long key after them (its
 * answer, that same error, discarded), then the session fails as text.ts fails a local get.
 */
function failRoutedGet(s: Session, r: Router, buf: Uint8Array, touch: boolean, keys: number[], longKey: number, longEnd: number): void {
  const cmdStart = s.tokS[0]!;
  const cmdEnd = touch ? s.tokE[1]! : s.tokE[0]!;
  const parts: { batch: Batch; index: number }[] = [];
  for (let d = 0; d < r.shards; d++) {
    let any = false;
    const line = runLine(buf, cmdStart, cmdEnd);
    for (let q = 0; q < keys.length; q += 3) {
      if (keys[q + 2] !== d) continue;
      any = true;
      line.byte(32);
      line.copy(buf, keys[q]!, keys[q + 1]! - keys[q]!);
    }
    if (!any) continue;
    line.byte(32);
    line.copy(buf, longKey, longEnd - longKey);
    line.crlf();
    const bytes = line.bytes();
    if (d === r.self) {
      const sub = s.subSession();
      sub.feed(bytes);
      sub.out.reset();
    } else {
      const b = r.batch(d);
      const index = b.begin(UnitKind.TEXT, Proto.TEXT, bytes.length);
      b.append(bytes, 0, bytes.length);
      parts.push({ batch: b, index });
    }
  }
  const out = s.out;
  s.cutOut(Math.min(out.pos, s.keep));
  s.releaseHolds();
  if (s.holes.length > s.keepHoles) s.holes.length = s.keepHoles;
  // The other shards' lookups stay in order with this session's later commands there.
  if (parts.length > 0) s.holes.push({ at: out.pos, first: 0, count: 0, parts, render: barrierRender });
  out.put(BAD_FORMAT);
}

/** Starts the line of a multiget run in getLine: "<cmd> [exptime]"; the caller adds " key"s. */
function runLine(buf: Uint8Array, cmdStart: number, cmdEnd: number): Out {
  const line = getLine;
  line.reset();
  line.copy(buf, cmdStart, cmdEnd - cmdStart);
  return line;
}

/**
 * Ends the run of `n` keys with one owner in getLine and runs it: here (its answer without the
 * END copied in) or forwarded as a part.
 */
function sendRun(s: Session, r: Router, dest: number, n: number): void {
  const line = getLine;
  line.crlf();
  const bytes = line.bytes();
  if (dest === r.self) {
    const sub = s.subSession();
    sub.feed(bytes);
    const answer = sub.out.bytes();
    s.out.copy(answer, 0, Math.max(0, answer.length - 5));
    sub.out.reset();
  } else {
    const b = r.batch(dest);
    const index = b.begin(UnitKind.TEXT_GET_PART, Proto.TEXT, bytes.length);
    b.append(bytes, 0, bytes.length);
    addHole(s, b, index, n);
  }
}

/**
 * The rest of a routed multiget a pause cut short (Session.resume): runs of keys by owner, as
 * routeGet, from `c.p`; pauses again after as much, or writes the END.
 */
export function continueRoutedGet(s: Session, c: GetCont): void {
  const r = s.engine.router!;
  const buf = c.buf;
  const end = c.end;
  const out = s.out;
  let p = c.p;
  let runs = 0;
  for (;;) {
    while (p < end && buf[p] === 32) p++;
    if (p >= end) break;
    if (runs > 0 && (out.pos > PAUSE_BYTES || s.fwdBytes > PAUSE_BYTES)) {
      s.pauseGet({ ...c, p });
      return;
    }
    // One run of consecutive keys with one owner, cut where its answers may pass PAUSE_BYTES.
    let q = p;
    while (q < end && buf[q] !== 32) q++;
    const dest = r.owner(buf, p, q - p);
    const local = dest === r.self;
    const cost = local ? r.localReadCost() : s.readCost();
    const room = local ? PAUSE_BYTES - out.pos : PAUSE_BYTES - s.fwdBytes;
    const from = p;
    let n = 0;
    for (;;) {
      n++;
      p = q;
      while (p < end && buf[p] === 32) p++;
      if (p >= end || n * cost >= room) break;
      q = p;
      while (q < end && buf[q] !== 32) q++;
      if (r.owner(buf, p, q - p) !== dest) break;
    }
    // The run's keys as they are in the line, spaces between them collapsed to one.
    const line = runLine(buf, c.cmdStart, c.cmdEnd);
    let k = from;
    for (let m = 0; m < n; m++) {
      while (buf[k] === 32) k++;
      let e = k;
      while (e < end && buf[e] !== 32) e++;
      line.byte(32);
      line.copy(buf, k, e - k);
      k = e;
    }
    sendRun(s, r, dest, n);
    runs++;
  }
  out.str("END\r\n");
  s.flushPoint(); // stock transmits after every get (conn_mwrite)
}

/** set/add/replace/append/prepend/cas: forward the line and its data block to the owner. */
function routeStorage(s: Session, r: Router, buf: Uint8Array, lineStart: number, lineNext: number, noFlags: boolean): boolean {
  const klen = s.tokE[1]! - s.tokS[1]!;
  if (klen > KEY_MAX_LENGTH) return false;
  if (!parseU32(buf, s.tokS[2]!, s.tokE[2]!)) return false;
  const flags = noFlags ? 0 : parsed.num;
  if (!parseI32(buf, s.tokS[3]!, s.tokE[3]!)) return false;
  if (!parseI32(buf, s.tokS[4]!, s.tokE[4]!)) return false;
  const vlen = parsed.num;
  if (vlen < 0 || vlen > 2147483645) return false;
  const dest = r.owner(buf, s.tokS[1]!, klen);
  if (dest === r.self) return false;
  forwardStorage(s, r, dest, buf, lineStart, lineNext, klen, flags, vlen + 2);
  return true;
}

/**
 * Forwards a storage line; its data follows, or is swallowed here when too large (the owner
 * answers so) or when this shard has no room left to buffer it (the owner answers out of
 * memory).
 */
function forwardStorage(s: Session, r: Router, dest: number, buf: Uint8Array, lineStart: number, lineNext: number, klen: number, flags: number, nbytes: number): void {
  const tooLarge = !s.store.sizeOk(klen, flags, nbytes);
  if (!tooLarge && s.forwardUnit(dest, UnitKind.TEXT, Proto.TEXT, buf, lineStart, lineNext, nbytes, 0)) return;
  s.forwardUnit(dest, tooLarge ? UnitKind.TEXT : UnitKind.TEXT_NOMEM, Proto.TEXT, buf, lineStart, lineNext, 0, 0);
  s.swallow(nbytes);
  void r;
}

/** Forwards one whole line to `dest` (`reads`: the keys it reads, see Session.noteForward). */
function forwardLine(s: Session, r: Router, dest: number, kind: UnitKind, buf: Uint8Array, lineStart: number, lineNext: number, reads: number): void {
  const b = r.batch(dest);
  const index = b.begin(kind, Proto.TEXT, lineNext - lineStart);
  b.append(buf, lineStart, lineNext);
  if (kind !== UnitKind.TEXT_SILENT) addHole(s, b, index, reads);
  else b.noteUnread(index);
}

/**
 * Records that unit `index` of `b` answers at the session's current output position; it reads
 * `reads` keys (0: it answers with a line), which the session counts (Session.noteForward).
 */
export function addHole(s: Session, b: Batch, index: number, reads: number): void {
  s.noteForward(reads);
  const holes = s.holes;
  const at = s.out.pos;
  const last = holes.length > 0 ? holes[holes.length - 1]! : undefined;
  // Not into a hole from before the last send point: what it answers counts as sent. Binary
  // units each get their own: an error answer is a send point (see fillHoles), and a unit's
  // value may be swallowed.
  if (last !== undefined && holes.length > s.keepHoles && s.protocol !== Proto.BINARY && last.batch === b && last.at === at && last.first + last.count === index) {
    last.count++;
    return;
  }
  holes.push({ at, batch: b, first: index, count: 1 });
}

/**
 * Runs a line's effect on every other shard (in order with forwarded commands), then here. The
 * local answer waits behind a barrier hole until every other shard has applied it, so a client
 * that sees "RESET" or "OK" can rely on the whole server having done it, from any connection.
 */
function broadcastLine(s: Session, r: Router, buf: Uint8Array, lineStart: number, lineNext: number): void {
  broadcastUnits(s, r, Proto.TEXT, buf, lineStart, lineNext);
}

function broadcastUnits(s: Session, r: Router, proto: Proto, buf: Uint8Array, start: number, end: number): void {
  const parts: { batch: Batch; index: number }[] = [];
  for (let d = 0; d < r.shards; d++) {
    if (d === r.self) continue;
    const b = r.batch(d);
    const index = b.begin(UnitKind.TEXT_SILENT, proto, end - start);
    b.append(buf, start, end);
    parts.push({ batch: b, index });
  }
  if (parts.length > 0) s.holes.push({ at: s.out.pos, first: 0, count: 0, parts, render: barrierRender });
}

const NO_BYTES = new Uint8Array(0);
/** A barrier adds no bytes: the command's one answer is the local shard's. */
function barrierRender(): Uint8Array {
  return NO_BYTES;
}

/** Runs a line on every shard and merges the answers (this shard's first). */
function gatherLine(s: Session, r: Router, buf: Uint8Array, lineStart: number, lineNext: number, mergeAnswers: (answers: Uint8Array[]) => Uint8Array): void {
  const sub = s.subSession();
  sub.feed(buf.subarray(lineStart, lineNext));
  const mine = sub.out.bytes().slice();
  sub.out.reset();
  const parts: { batch: Batch; index: number }[] = [];
  for (let d = 0; d < r.shards; d++) {
    if (d === r.self) continue;
    const b = r.batch(d);
    const index = b.begin(UnitKind.TEXT_GATHER, Proto.TEXT, lineNext - lineStart);
    b.append(buf, lineStart, lineNext);
    parts.push({ batch: b, index });
  }
  s.holes.push({ at: s.out.pos, first: 0, count: 0, parts, render: (answers) => mergeAnswers([mine, ...answers]) });
}

const dec = new TextDecoder("latin1");
const enc = (str: string): Uint8Array => {
  const u = new Uint8Array(str.length);
  for (let i = 0; i < str.length; i++) u[i] = str.charCodeAt(i) & 0xff;
  return u;
};

function endsWith(a: Uint8Array, suffix: string): boolean {
  if (a.length < suffix.length) return false;
  for (let i = 0; i < suffix.length; i++) if (a[a.length - suffix.length + i] !== suffix.charCodeAt(i)) return false;
  return true;
}

/** Concatenates "...END\r\n" answers into one, with one END. */
function mergeDumps(answers: Uint8Array[]): Uint8Array {
  // Every shard has the same settings and classes: a refusal (crawler disabled, dumps not
  // allowed, BADCLASS, NOTSTARTED: one line, no END) is everyone's, and is sent once.
  const first = answers[0];
  if (first !== undefined && !endsWith(first, "END\r\n")) return first;
  let text = "";
  for (const a of answers) {
    const t = dec.decode(a);
    text += t.endsWith("END\r\n") ? t.slice(0, -5) : t;
  }
  return enc(text + "END\r\n");
}

/**
 * `stats conns` of every shard as one answer in stock's order (its listening sockets have the
 * lowest fds): the TCP/Unix listeners, then the UDP sockets, then the client connections; each
 * in shard order. A socket's lines ("STAT <id>:<field> <value>") stay together.
 */
function mergeConns(answers: Uint8Array[]): Uint8Array {
  const listeners: string[] = [];
  const clients: string[] = [];
  // Stock dups each UDP socket once per thread: its entries come address by address.
  const udp = new Map<string, string[]>();
  for (const a of answers) {
    const groups = new Map<string, string[]>();
    for (const line of dec.decode(a).split("\r\n")) {
      const m = /^STAT (\d+):/.exec(line);
      if (!m) continue;
      let g = groups.get(m[1]!);
      if (g === undefined) groups.set(m[1]!, (g = []));
      g.push(line);
    }
    for (const lines of groups.values()) {
      const text = lines.join("\r\n") + "\r\n";
      if (lines.some((l) => l.endsWith(":UDP UDP"))) {
        const addr = lines.find((l) => /^STAT \d+:addr /.test(l))?.replace(/^STAT \d+:/, "") ?? "";
        let list = udp.get(addr);
        if (list === undefined) udp.set(addr, (list = []));
        list.push(text);
      } else if (lines.some((l) => l.endsWith(":state conn_listening"))) {
        listeners.push(text);
      } else {
        clients.push(text);
      }
    }
  }
  return enc(listeners.join("") + [...udp.values()].flat().join("") + clients.join("") + "END\r\n");
}

/** Sums "PREFIX p get g hit h set s del d" lines by prefix. */
function mergePrefixDumps(answers: Uint8Array[]): Uint8Array {
  const sums = new Map<string, number[]>();
  for (const a of answers) {
    for (const line of dec.decode(a).split("\r\n")) {
      const m = /^PREFIX (\S+) get (\d+) hit (\d+) set (\d+) del (\d+)$/.exec(line);
      if (!m) continue;
      const v = sums.get(m[1]!) ?? [0, 0, 0, 0];
      for (let i = 0; i < 4; i++) v[i]! += Number(m[i + 2]);
      sums.set(m[1]!, v);
    }
  }
  let text = "";
  for (const [p, v] of sums) text += `PREFIX ${p} get ${v[0]} hit ${v[1]} set ${v[2]} del ${v[3]}\r\n`;
  return enc(text + "END\r\n");
}

/** stats [items|slabs|settings|reset|detail ...|conns]: the whole server's numbers. */
function routeStats(s: Session, r: Router, buf: Uint8Array, lineStart: number, lineNext: number): boolean {
  const nt = s.ntokens;
  const sub = nt === 2 ? "" : tokString(s, buf, 1);
  if (sub === "reset" || sub === "sizes_enable" || sub === "sizes_disable" || (sub === "detail" && nt >= 4 && (tokString(s, buf, 2) === "on" || tokString(s, buf, 2) === "off"))) {
    broadcastLine(s, r, buf, lineStart, lineNext);
    return false;
  }
  if (sub === "detail" && nt >= 4 && tokString(s, buf, 2) === "dump") {
    gatherLine(s, r, buf, lineStart, lineNext, mergePrefixDumps);
    return true;
  }
  if (sub === "conns") {
    gatherLine(s, r, buf, lineStart, lineNext, mergeConns);
    return true;
  }
  if (sub !== "" && sub !== "items" && sub !== "slabs" && !(sub === "sizes" && nt === 3)) return false;
  const parts = askOthersForStats(r);
  const mine = snapshot(s.engine);
  s.holes.push({
    at: s.out.pos,
    first: 0,
    count: 0,
    parts,
    render: (answers) => {
      const snaps: StatsSnapshot[] = [mine, ...answers.map((a) => JSON.parse(dec.decode(a)) as StatsSnapshot)];
      const tmp = s.subSession();
      renderStats(tmp, sub, textSink(tmp.out), snaps);
      const bytes = tmp.out.bytes().slice();
      tmp.out.reset();
      return bytes;
    },
  });
  return true;
}

/** Asks every other shard for its stats snapshot (answered in the next batch exchange). */
function askOthersForStats(r: Router): { batch: Batch; index: number }[] {
  const parts: { batch: Batch; index: number }[] = [];
  for (let d = 0; d < r.shards; d++) {
    if (d === r.self) continue;
    const b = r.batch(d);
    parts.push({ batch: b, index: b.begin(UnitKind.STATS, Proto.TEXT, 0) });
  }
  return parts;
}

function textSink(out: Out): StatsSink {
  return {
    add(key: string, value: string): void {
      out.str(value === "" ? `STAT ${key}\r\n` : `STAT ${key} ${value}\r\n`);
    },
    end(): void {
      out.str("END\r\n");
    },
  };
}


/**
 * Decides where a binary packet runs; true when it was forwarded. `pos` is the packet's start,
 * `need` its header+extras+key length, `bodyRest` the value bytes that follow.
 */
export function routeBinary(s: Session, r: Router, buf: Uint8Array, pos: number, need: number, bodyRest: number): boolean {
  const opcode = buf[pos + 1]!;
  const keylen = (buf[pos + 2]! << 8) | buf[pos + 3]!;
  const extlen = buf[pos + 4]!;
  const bodylen = ((buf[pos + 8]! << 24) | (buf[pos + 9]! << 16) | (buf[pos + 10]! << 8) | buf[pos + 11]!) >>> 0;
  if (keylen > bodylen || keylen + extlen > bodylen || keylen > KEY_MAX_LENGTH) return false;
  if (opcode === 0x10 && extlen === 0) return routeBinaryStats(s, r, buf, pos, need, keylen);
  if (opcode === 0x08 || opcode === 0x18) {
    // flush: everywhere, in order.
    broadcastUnits(s, r, Proto.BINARY, buf, pos, pos + need);
    return false;
  }
  if (!binaryKeyedValid(opcode, keylen, extlen, bodylen)) return false;
  const key = pos + 24 + extlen;
  const dest = r.owner(buf, key, keylen);
  if (dest === r.self) return false;
  const hasValue = isStorageOpcode(opcode);
  const vlen = hasValue ? bodyRest : 0;
  const flags = opcode <= 0x03 || (opcode >= 0x11 && opcode <= 0x13) ? (extlen >= 4 ? ((buf[pos + 24]! << 24) | (buf[pos + 25]! << 16) | (buf[pos + 26]! << 8) | buf[pos + 27]!) >>> 0 : 0) : 0;
  const tooLarge = hasValue && !s.store.sizeOk(keylen, flags, vlen + 2);
  const read = opcode === 0x00 || opcode === 0x09 || opcode === 0x0c || opcode === 0x0d || (opcode >= 0x1c && opcode <= 0x1e) || opcode === 0x23 || opcode === 0x24;
  // Refused (no room to buffer the value here): the owner answers out of memory, as for tooLarge.
  const refused = !tooLarge && !s.forwardUnit(dest, UnitKind.BINARY, Proto.BINARY, buf, pos, pos + need, vlen, read ? 1 : 0);
  if (tooLarge || refused) s.forwardUnit(dest, tooLarge ? UnitKind.BINARY : UnitKind.BINARY_NOMEM, Proto.BINARY, buf, pos, pos + need, 0, read ? 1 : 0);
  // A hit of the get family holds its item there until this session's next send point.
  if (read) s.heldOn(dest);
  if (tooLarge || refused) {
    s.holes[s.holes.length - 1]!.swallowed = true;
    s.swallow(vlen);
  }
  return true;
}

/**
 * Fills a session's holes with the answers of the units they wait for, in order, and leaves
 * the complete response stream in `s.out`. Call after feed() when `s.holes` is not empty.
 */
export async function fillHoles(s: Session): Promise<void> {
  const holes = s.holes;
  s.holes = [];
  let waited: Batch | undefined;
  // Answers already in are not awaited: the units are then copied in the same microtask as
  // the last reply's, before its handed-over answer is given back (Batch.split).
  for (const h of holes) {
    if (h.batch !== undefined) {
      if (h.batch !== waited && !h.batch.replied) await h.batch.reply;
      waited = h.batch;
    } else {
      for (const p of h.parts!) if (!p.batch.replied) await p.batch.reply;
    }
  }
  // Nothing before the first hole moves: a UDP answer that pauses every PAUSE_BYTES and asks
  // other shards each time copied everything rendered so far at every resume (quadratic).
  const base = holes[0]!.at;
  const splicing = s.spliceOk && !s.abort && !s.midValue;
  const src = s.beginRebuild(base);
  const out = s.out;
  let prev = base;
  // `keep` (what stock would have sent by now) moves with the answers put in before it.
  let keepShift = 0;
  let sentTo = 0;
  let forwarded = 0;
  for (let i = 0; i < holes.length; i++) {
    const h = holes[i]!;
    out.copy(src, prev - base, h.at - prev);
    prev = h.at;
    const before = out.pos;
    let spliced = 0;
    if (h.batch !== undefined) {
      // A large answer still in the buffer it was handed over in goes out from there (the
      // transport sends it between the pieces of `out`): one copy less of a large value read
      // on another shard. Only when everything rendered goes out at the next write (no abort,
      // no value arriving: what stock would hold back stays contiguous in `out`).
      const nb = splicing ? h.batch.handedOver : undefined;
      for (let i = h.first; i < h.first + h.count; i++) {
        // Values the owner lent from its items go out from there (no copy on either shard), or
        // are copied straight into the output (one copy, as for a value of this shard's).
        if (h.batch.lendsValues(i)) {
          spliced += h.batch.putLent(i, s, splicing);
          continue;
        }
        const a = h.batch.unitAnswer(i);
        if (nb !== undefined && a.length >= SPLICE_MIN && (nb.length <= SPLICE_SHARED_MAX || a.length * 8 >= nb.length)) {
          s.splice(h.batch, nb, a.byteOffset - nb.bytes.byteOffset, a.length);
          spliced += a.length;
        } else {
          out.copy(a, 0, a.length);
        }
      }
      forwarded += out.pos - before + spliced;
    } else if (h.render) {
      const answers = h.parts!.map((p) => p.batch.unitAnswer(p.index));
      // A shard that could not answer (gone, stopping) fails the whole gathered answer: merged,
      // its error line garbled the others' (stats conns) or failed to parse (stats: the
      // connection was dropped). A barrier's answer stays empty.
      const bytes = h.render !== barrierRender && answers.includes(SHARD_FAILED) ? (h.failed?.() ?? SHARD_FAILED) : h.render(answers);
      out.copy(bytes, 0, bytes.length);
    }
    if (i < s.keepHoles) keepShift += out.pos - before;
    // A binary error reply from the owner was a send point for stock (write_bin_error):
    // everything up to it counts as sent. (Not looked for with splices: their bytes are not in
    // `out`, and all of it is sent anyway.)
    else if (s.protocol === Proto.BINARY && spliced === 0 && h.swallowed !== true && out.pos - before >= 24 && endsWithBinaryError(out.buf, before, out.pos)) {
      sentTo = out.pos;
    }
  }
  out.copy(src, prev - base, src.length - (prev - base));
  s.endRebuild();
  s.filledForwards(forwarded);
  s.keep = Math.max(s.keep + keepShift, sentTo);
  s.keepHoles = 0;
}

/**
 * True if the binary responses in `b[from, to)` end with an error stock sends at once
 * (write_bin_error, then conn_mwrite). Not: a GETK/GATK miss (status 1 too, but it carries the
 * key and is added without a send: stock's add_bin_header), nor a storage command's failed
 * allocation (E2BIG, ENOMEM: the value is swallowed next, conn_swallow replaces conn_mwrite).
 */
function endsWithBinaryError(b: Uint8Array, from: number, to: number): boolean {
  let p = from;
  let last = -1;
  while (to - p >= 24 && b[p] === 0x81) {
    last = p;
    p += 24 + (((b[p + 8]! << 24) | (b[p + 9]! << 16) | (b[p + 10]! << 8) | b[p + 11]!) >>> 0);
  }
  if (last < 0 || p !== to) return false;
  const status = (b[last + 6]! << 8) | b[last + 7]!;
  if (status === 0 || ((b[last + 2]! << 8) | b[last + 3]!) !== 0) return false;
  return !((status === 0x03 || status === 0x82) && isStorageOpcode(b[last + 1]!));
}

/** set/add/replace/append/prepend and their quiet forms: the binary commands that carry a value. */
function isStorageOpcode(op: number): boolean {
  return (op >= 0x01 && op <= 0x03) || op === 0x0e || op === 0x0f || (op >= 0x11 && op <= 0x13) || op === 0x19 || op === 0x1a;
}

/** Binary STAT for the whole server: general, items and slabs gather every shard; reset goes everywhere. */
function routeBinaryStats(s: Session, r: Router, buf: Uint8Array, pos: number, need: number, keylen: number): boolean {
  let sub = "";
  for (let i = 0; i < keylen; i++) sub += String.fromCharCode(buf[pos + 24 + i]!);
  if (sub.startsWith("reset") || sub.startsWith("detail on") || sub.startsWith("detail off") || sub === "sizes_enable" || sub === "sizes_disable") {
    broadcastUnits(s, r, Proto.BINARY, buf, pos, pos + need);
    return false;
  }
  if (sub !== "" && sub !== "items" && sub !== "slabs" && sub !== "sizes") return false;
  const opaque = ((buf[pos + 12]! << 24) | (buf[pos + 13]! << 16) | (buf[pos + 14]! << 8) | buf[pos + 15]!) >>> 0;
  const parts = askOthersForStats(r);
  const mine = snapshot(s.engine);
  s.holes.push({
    at: s.out.pos,
    first: 0,
    count: 0,
    parts,
    failed: () => binaryShardFailed(0x10, opaque),
    render: (answers) => {
      const snaps: StatsSnapshot[] = [mine, ...answers.map((a) => JSON.parse(dec.decode(a)) as StatsSnapshot)];
      const tmp = new Session(s.engine, { protocol: Proto.BINARY });
      tmp.binOpcode = 0x10;
      tmp.binOpaque = opaque;
      renderStats(tmp, sub, new BinarySink(tmp), snaps);
      return tmp.out.bytes().slice();
    },
  });
  return true;
}
