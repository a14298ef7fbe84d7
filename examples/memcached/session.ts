/**
 * One client connection's protocol state: stock memcached's connection state machine
 * (conn_parse_cmd, conn_nread, conn_swallow), transport-independent. The transport calls
 * `feed(bytes)` with whatever arrived (any segmentation: half a command, many commands), then
 * writes `out.bytes()` and resets it. Views passed to feed() may be reused by the caller after
 * it returns: an incomplete command is copied into the session's carry buffer, value bytes go
 * straight into the item's memory.
 *
 * The first byte of a connection picks the protocol, as in stock: 0x80 is binary, anything
 * else is text (which includes the meta commands).
 */
import { copyBytes, type NativeBuffer } from "shoal";
import type { Engine } from "./engine.ts";
import { Out, ascii } from "./out.ts";
import { NIL, type Store, Comm, Holds } from "./store.ts";
import { continueGet, metadumpStarts, processTextLine } from "./text.ts";
import { processBinaryPacket, completeBinaryNread, BIN_HEADER } from "./binary.ts";
import { completeTextNread } from "./text.ts";
import { addHole, continueRoutedGet, routeBinary, routeText, UnitKind, type Batch, type Hole } from "./router.ts";

/**
 * The client session of each engine (shard) whose metadump is being rendered or sent: stock's
 * crawler (one per server) answers another `lru_crawler metadump` with BUSY until it is done.
 */
const dumping = new WeakMap<Engine, Session>();

/** Stock's read buffer (READ_BUFFER_SIZE): a binary packet's header, extras and key must fit it. */
const BIN_READ_MAX = 16384;

/** Protocol of a connection. */
export const enum Proto {
  NEGOTIATE = 0,
  TEXT = 1,
  BINARY = 2,
}

/** Where the session is in its input. */
export const enum St {
  /** Waiting for a command line or packet header. */
  CMD = 0,
  /** Reading a value into `item`. */
  NREAD = 1,
  /** Discarding `sbytes` bytes (after an error on a storage command). */
  SWALLOW = 2,
  /** Copying a value into a forwarded unit (its key lives on another shard). */
  FORWARD = 3,
}

/** Why an nread is happening (which completion to run). */
export const enum NreadKind {
  TEXT_STORE = 0,
  META_SET = 1,
  BINARY_SET = 2,
}

/** Bytes of input without a newline after which a text connection must be a big multiget or is closed (stock: 2048). */
export const LINE_LIMIT = 2048;
/** Largest multiget line we buffer before closing (stock grows without bound). */
export const MULTIGET_LINE_MAX = 32 * 1024 * 1024;
/** Most tokens the text tokenizer produces (stock's MAX_TOKENS - 1 real ones). */
export const MAX_TOKENS = 24;
const SHARED_TOK_S = new Int32Array(MAX_TOKENS + 1);
const SHARED_TOK_E = new Int32Array(MAX_TOKENS + 1);
/**
 * A pausable session stops taking commands once it has rendered this many bytes not yet
 * handed to the transport (or opened PAUSE_HOLES answers of other shards): the transport sends
 * them, waits while the peer is slow to read, and resumes. Stock's replies reference items
 * instead of copying them; here a client that pipelines gets without reading would otherwise
 * make the server copy every value it asked for into memory.
 */
export const PAUSE_BYTES = 256 * 1024;
export const PAUSE_HOLES = 64;
/**
 * Answers from other shards are copies of their values too, but their sizes are known only
 * once they arrive: each key a client's read forwards counts what its recent forwarded reads
 * took per key (Session.readCost), and at least READ_COST_MIN: at most 64 keys per round
 * trip, 8 while the session has not seen an answer yet.
 */
export const READ_COST_MIN = Math.floor(PAUSE_BYTES / 64) + 1;
const FIRST_READ_COST = Math.floor(PAUSE_BYTES / 8) + 1;
/** A session's own buffer is dropped once emptied if a long answer grew it past this. */
const OWN_OUT_KEEP = 1024 * 1024;
/** What a forwarded command answered with a line (STORED, NOT_FOUND, a binary status) counts. */
const LINE_COST = 64;
/**
 * Input buffers one large request grew (the carry of a long multiget line or a binary header
 * with a long key) are dropped once emptied when past this, stock's
 * read buffer size: an idle connection keeps only small arrays
 * (stock frees its grown read buffer once empty too), not up to -I or 32 MiB each.
 */
const INPUT_KEEP = 16 * 1024;
/**
 * A forwarded unit (a command and its value) up to this size is gathered in the connection's
 * own buffer; a larger one in a buffer of the shard's (Engine.takeForwardBuffer), given back
 * once the unit is batched, so that an idle connection keeps no more than this.
 */
const FWD_OWN = 16 * 1024;

/**
 * Bytes sent from where they lie instead of being copied into `out`: another shard's answer
 * from the buffer it was handed over in (Session.splice), or a large value of this shard's
 * store from the item's memory (Session.spliceItem).
 */
export interface Splice {
  /** Where in `out` it goes (what `out` holds before it is sent first). */
  at: number;
  /** The batch whose handed-over answer `nb` is (held until unhold); null: `nb` is an item's value lent by the store. */
  from: Batch | null;
  nb: NativeBuffer;
  start: number;
  len: number;
}

/** A splice's bytes were queued for sending (the output pins what it sends) or are dropped. */
export function unholdSplice(sp: Splice): void {
  if (sp.from === null) sp.nb.release();
  else sp.from.unhold();
}

/** A value at least this large is sent from the item's memory rather than copied (Session.spliceItem). */
export const ITEM_SPLICE_MIN = 16 * 1024;

/**
 * The rest of a multiget a pause cut short: its keys `buf[p..end)` (the line stays where it
 * was, untouched while the session is paused), the command bytes `buf[cmdStart..cmdEnd)`
 * (forwarded parts repeat them), and what the command asked for.
 */
export interface GetCont {
  buf: Uint8Array;
  cmdStart: number;
  cmdEnd: number;
  p: number;
  end: number;
  returnCas: boolean;
  touch: boolean;
  /** gat/gats: the new expiration (already converted). */
  exptime: number;
  /** Split by owner shard (router) rather than served here (text.ts). */
  routed: boolean;
}

const CRLF = ascii("\r\n");
/** The carry buffer of a session that never carried anything (ensureCarry replaces it). */
const NO_CARRY = new Uint8Array(0);

/** A binary header's body length. */
function binaryBody(buf: Uint8Array, pos: number): number {
  return ((buf[pos + 8]! << 24) | (buf[pos + 9]! << 16) | (buf[pos + 10]! << 8) | buf[pos + 11]!) >>> 0;
}

/** Stock's read buffer (READ_BUFFER_SIZE): what one read takes in before commands are parsed. */
const STOCK_READ_BUFFER = 16384;

/** A client connection's protocol engine. */
export class Session {
  readonly engine: Engine;
  readonly store: Store;
  /**
   * Responses rendered so far; the transport sends and resets it. May be a buffer the shard's
   * connections share (cache-hot, see detachOut): then it holds only what this session rendered
   * since the transport last reset it, and must be sent or detached before another session runs.
   */
  out: Out;
  /**
   * This session's own buffer, made the first time a shared one had to be detached. With a
   * shared buffer in native memory it is native too, from the same cache: a long answer
   * rebuilt around other shards' answers is sent in place (handOff), and its memory goes back
   * to the cache once emptied, not to the garbage collector (see shedOwn).
   */
  private ownOut: Out | undefined;
  /** A second own buffer: fillHoles rebuilds the output into it, then the two swap (beginRebuild). */
  private spareOut: Out | undefined;
  /** The shared buffer this session renders into while it keeps nothing across calls. */
  private readonly sharedOut: Out | undefined;

  protocol: Proto;
  state: St = St.CMD;
  /** The current command asked for no reply (stock's c->noreply). */
  noreply = false;
  /** Close once `out` has been sent (quit, protocol errors). */
  closeAfterWrite = false;
  /** Close at once, dropping unsent responses (garbage, over-long lines), as stock does. */
  abort = false;
  /** `watch` succeeded: stock hands the connection to its logger and reads nothing more from it. */
  watching = false;
  /** A client connection's session: it may pause (see PAUSE_BYTES). Forwarded units never do. */
  pausable = false;
  /**
   * Paused: what was not run yet waits where it is (the transport does not release the input
   * while paused) until resume(): the rest of a multiget, then the input after it.
   */
  paused = false;
  private getCont: GetCont | null = null;
  private pendBuf: Uint8Array | null = null;
  private pendPos = 0;
  private pendEnd = 0;
  /** Commands since the last send point, the current one included (stock's response queue). */
  private cmdsSinceFlush = 0;
  /**
   * Bytes of `out` stock would already have sent when it aborts: it transmits after `mn`,
   * binary NOOP, and every reqs_per_event commands, and drops the rest on an abort. The
   * transport sends `out.buf[0..keep)` before closing an aborted connection.
   */
  keep = 0;
  /** Holes opened before `keep`: their answers are part of what stock would have sent. */
  keepHoles = 0;
  /**
   * The value (or bytes to swallow or forward) now arriving did not fit in what stock's 16 KiB
   * read buffer held when its command was parsed: stock reads the rest straight from the
   * socket, so its buffer is empty once the value is in, and it sends what it has then.
   */
  private direct = false;
  /** Head length of a command run from the carry buffer: its value's room is known only after. */
  private carriedHead = -1;
  private reqs = 0;
  /** The last command completed was the one past the count (see counted). */
  private yielded = false;
  /** A command began since the last send point (stock's resp_head: noreply ones count too). */
  private respPending = false;
  /**
   * A metadump ran (see metadumpStarts): stock takes the connection back from its crawler
   * waiting for new input, so the rest of this input waits in `stallBuf` (a copy) and runs
   * with the next input that arrives; never, if none does.
   */
  private stalled = false;
  private stallBuf: Uint8Array | null = null;
  /** This session's metadump holds its engine's crawler (see `dumping`) until passDump/close. */
  private dumpHeld = false;

  // ---- text tokenizer output (stock's token_t array): starts/ends in `line`.
  line: Uint8Array = new Uint8Array(0);
  lineEnd = 0;
  readonly tokS: Int32Array;
  readonly tokE: Int32Array;
  /** Stock's ntokens: real tokens plus the terminal one. */
  ntokens = 0;

  // ---- nread state (a value arriving into a pending item)
  item = NIL;
  rlbytes = 0;
  ritem = 0;
  nreadKind: NreadKind = NreadKind.TEXT_STORE;
  nreadComm: Comm = Comm.SET;
  nreadHash = 0;
  nreadCas = 0;
  setStale = false;
  /**
   * Meta set: the return flags stashed in request order (stock keeps them in wbuf), and the
   * key. Made on a connection's first `ms` (1.3 KiB that most connections never use: an idle
   * connection costs ~8 KiB in all).
   */
  get msetStash(): Uint8Array {
    return (this.msetStashBuf ??= new Uint8Array(1024));
  }
  private msetStashBuf: Uint8Array | undefined;
  msetStashLen = 0;
  msetBase64 = false;
  get msetKey(): Uint8Array {
    return (this.msetKeyBuf ??= new Uint8Array(256));
  }
  private msetKeyBuf: Uint8Array | undefined;
  msetKeyLen = 0;

  // ---- binary request in progress
  binOpcode = 0;
  binOpaque = 0;
  binCmd = 0;
  binCas = 0;
  /** CAS to echo in the next binary response header (stock's c->cas). */
  cas = 0;

  /** Bytes left to swallow. */
  sbytes = 0;

  /** Count received bytes in stats (not for units run on behalf of another shard). */
  countBytes = true;
  /** Send commands for other shards' keys to their owners (off for units that already were). */
  routing = true;
  /** Run for its effect on this shard only (a broadcast from another shard): no counters. */
  silent = false;
  /** Items our replies since the last send point came from (stock holds them until sent). */
  readonly holds: Holds;
  /** Shards that ran a command of ours since the last send point which may hold an item there. */
  private readonly heldShards: number[] = [];
  /** Places in `out` waiting for other shards' answers (see router.ts). */
  holes: Hole[] = [];
  /**
   * What the answers of the units forwarded since the holes were last filled may add to `out`
   * (see READ_COST_MIN): the session pauses once it passes PAUSE_BYTES, as for what it rendered.
   */
  fwdBytes = 0;
  /** Keys read by the units forwarded since the holes were last filled. */
  private fwdReads = 0;
  /** Bytes per key the answers of this session's forwarded reads took lately (0: none yet). */
  private readEst = 0;
  /** A forwarded unit being completed (its value is still arriving): `fwdOwn` or a shard's buffer. */
  private fwdUnit: Out | undefined;
  /** The connection's own forwarded-unit buffer (up to FWD_OWN), made on its first forward. */
  private fwdOwn: Out | undefined;
  /** Bytes of the unit's value reserved with Engine.reserveForward (0: none). */
  private fwdHeld = 0;
  private fwdDest = 0;
  private fwdKind = 0;
  private fwdProto: Proto = Proto.TEXT;
  private fwdLeft = 0;
  private fwdReads0 = 0;
  private sub: Session | undefined;

  /** An incomplete command line or packet header carried to the next feed (made on the first). */
  private carry = NO_CARRY;
  private carryLen = 0;

  /**
   * `out`: render into this buffer (the session's own); `sharedOut`: a buffer shared with other
   * sessions of the shard, which the transport empties after every feed (detachOut/attachOut);
   * `holds`: one the caller also releases (units of a batch from another shard answer together).
   */
  constructor(engine: Engine, options: { out?: Out; sharedOut?: Out; protocol?: Proto; holds?: Holds } = {}) {
    this.engine = engine;
    this.store = engine.store;
    this.holds = options.holds ?? new Holds();
    this.sharedOut = options.sharedOut;
    this.out = options.out ?? options.sharedOut ?? new Out();
    // Tokens live while one command line is parsed. A transport's sessions (those rendering
    // into a shared buffer) never parse at the same time, so they share one pair per thread
    // (an idle connection then keeps none); any other session (a sub-session run inside one,
    // a batch's) has its own.
    const shared = options.sharedOut !== undefined;
    this.tokS = shared ? SHARED_TOK_S : new Int32Array(MAX_TOKENS + 1);
    this.tokE = shared ? SHARED_TOK_E : new Int32Array(MAX_TOKENS + 1);
    const bound = engine.settings.protocol;
    this.protocol = options.protocol ?? (bound === "ascii" ? Proto.TEXT : bound === "binary" ? Proto.BINARY : Proto.NEGOTIATE);
  }

  /**
   * The session must keep its output past this call (holes waiting for other shards): moves
   * what it rendered into the shared buffer to its own buffer, at the same offsets.
   */
  detachOut(): void {
    const shared = this.out;
    if (shared !== this.sharedOut) return;
    const own = (this.ownOut ??= this.makeOwn());
    own.reset();
    own.copy(shared.buf, 0, shared.pos);
    shared.reset();
    this.out = own;
  }

  /**
   * True while a value is still arriving (a set's data, bytes being swallowed, a forwarded
   * command's data): stock sends nothing in that state, so what was rendered since its last
   * send point waits for the value (see holdFrom).
   */
  get midValue(): boolean {
    return this.state === St.NREAD || this.state === St.SWALLOW || this.state === St.FORWARD;
  }

  /**
   * The transport sent `out[0..from)`: keeps `out[from..pos)` (moved to the session's own buffer,
   * from its start) for the next write; `keep` counts from that new start.
   */
  holdFrom(from: number): void {
    this.keep = 0;
    this.keepHoles = 0;
    const cur = this.out;
    const n = cur.pos - from;
    if (n === 0) {
      cur.reset();
      // A burst's size is not kept for the rest of the connection's life.
      if (cur === this.ownOut) this.trimOwn(cur);
      return;
    }
    const own = (this.ownOut ??= this.makeOwn());
    if (cur === own) {
      own.buf.copyWithin(0, from, cur.pos);
      own.pos = n;
    } else {
      own.reset();
      own.copy(cur.buf, from, n);
      cur.reset();
      this.out = own;
    }
  }

  /**
   * Starts rebuilding the output around other shards' answers (fillHoles), from `from` (the
   * first hole) on: returns what was rendered after it (valid until endRebuild) and leaves the
   * output ending at `from`. The session's own buffer and a spare swap, so the rendered bytes
   * are copied once and nothing is allocated; any other output (a caller's buffer, as UDP's)
   * keeps what precedes `from` in place and has only the rest copied aside.
   */
  beginRebuild(from: number): Uint8Array {
    const cur = this.out;
    if (cur !== this.ownOut) {
      const src = cur.buf.slice(from, cur.pos);
      cur.pos = from;
      return src;
    }
    const next = (this.spareOut ??= this.makeOwn());
    next.reset();
    next.copy(cur.buf, 0, from);
    this.spareOut = cur;
    this.ownOut = next;
    this.out = next;
    return cur.buf.subarray(from, cur.pos);
  }

  /** The rebuild is done: the spare buffer is emptied (and its memory given up if a burst grew it). */
  endRebuild(): void {
    const spare = this.spareOut;
    if (spare === undefined) return;
    spare.reset();
    this.trimOwn(spare);
  }

  /**
   * The transport queued `out[0..from)` for sending in place, from the native buffer it was
   * rendered in: `out` goes on in `fresh` (Out.spare), what came after `from` kept (as
   * holdFrom). Returns the buffer given away, for the caller to release once queued.
   */
  handOff(from: number, fresh: NativeBuffer): NativeBuffer {
    const cur = this.out;
    if (cur === this.sharedOut) {
      // What follows `from` moves to the session's own buffer; the shared one goes on empty.
      this.holdFrom(from);
      return cur.handOff(fresh, 0);
    }
    this.keep = 0;
    this.keepHoles = 0;
    return cur.handOff(fresh, from);
  }

  /** Output sent and nothing pending: back to the shared buffer (if any). */
  attachOut(): void {
    if (this.sharedOut !== undefined && this.out !== this.sharedOut && this.out.pos === 0 && this.holes.length === 0) {
      this.out = this.sharedOut;
      // Native own buffers go back to the cache: a connection that is not waiting for other
      // shards holds only its two small arrays.
      if (this.sharedOut.cache !== undefined) this.shedOwn();
    }
  }

  /**
   * An own buffer: a small JS array, moving to native memory from the shared buffer's cache
   * (when there is one) once it outgrows that.
   */
  private makeOwn(): Out {
    const cache = this.sharedOut?.cache;
    return cache === undefined ? new Out(1024) : new Out(1024, cache, true);
  }

  /** An emptied own buffer that a burst grew does not keep that memory. */
  private trimOwn(o: Out): void {
    if (o.native !== undefined) o.shed();
    else if (o.buf.length > OWN_OUT_KEEP) o.buf = new Uint8Array(16 * 1024);
  }

  /** Gives the own buffers' memory up (they take it again on their next write). */
  private shedOwn(): void {
    this.ownOut?.shed();
    this.spareOut?.shed();
  }

  /** True once the connection must close (after `out` is sent, unless `abort`). */
  get closing(): boolean {
    return this.closeAfterWrite || this.abort;
  }

  /** Answers of earlier commands wait unsent (stock refuses `watch` and `metadump` then). */
  get othersPending(): boolean {
    return this.cmdsSinceFlush > 1;
  }

  /**
   * Processes received bytes: every complete command produces its response in `out`.
   * `data` is only read during the call.
   */
  feed(data: Uint8Array, start = 0, end = data.length): void {
    if (this.watching) return; // never read, as stock's logger connection
    if (this.countBytes) this.engine.stats.bytes_read += end - start;
    if (this.closing) return;
    if (this.stallBuf !== null) {
      const held = this.stallBuf;
      this.stallBuf = null;
      const joined = new Uint8Array(held.length + end - start);
      joined.set(held);
      joined.set(data.subarray(start, end), held.length);
      data = joined;
      start = 0;
      end = joined.length;
    }
    // Stock sends what it has whenever it runs out of input, except while a value is arriving.
    if (!this.midValue) this.flushPoint();
    this.newTurn();
    let pos = start;
    if (this.carryLen > 0) {
      const took = this.feedCarry(start === 0 && end === data.length ? data : data.subarray(start, end));
      if (took < 0 || this.closing) return;
      pos = start + took;
      if (this.paused) {
        this.pend(data, pos, end);
        return;
      }
      if (this.stalled) return this.stall(data, pos, end);
      if (this.carriedHead >= 0) {
        this.noteValueRoom(this.carriedHead, end - pos);
        this.carriedHead = -1;
      }
    }
    const stop = this.run(data, pos, end);
    if (this.paused) {
      this.pend(data, stop, end);
      return;
    }
    if (this.stalled) return this.stall(data, stop, end);
    if (stop < end && !this.closing) this.saveCarry(data, stop, end);
    // Out of input, stock transmits (and drops its references), unless a value is arriving.
    if (!this.midValue) this.outOfInput();
    this.trimInput();
  }

  /**
   * After a feed: the carry buffer a long line or packet grew is not kept once (nearly) empty,
   * unless a paused multiget still reads its keys from it (see INPUT_KEEP); nor a helper
   * session's output past 512 KiB (its multiget runs are cut at PAUSE_BYTES: only a large item
   * grows it further, and it kept up to twice -I per connection).
   */
  private trimInput(): void {
    // A helper session's output (a multiget's run of this shard's keys, copied out at once).
    const sub = this.sub?.out;
    if (sub !== undefined && sub.pos === 0 && sub.native === undefined && sub.buf.length > 2 * PAUSE_BYTES) sub.buf = new Uint8Array(16 * 1024);
    const carry = this.carry;
    if (carry.length <= INPUT_KEEP || this.carryLen * 4 > carry.length || this.paused || this.getCont !== null) return;
    let size = 256;
    while (size < this.carryLen) size *= 2;
    const next = new Uint8Array(size);
    next.set(carry.subarray(0, this.carryLen));
    this.carry = next;
  }

  /**
   * After a metadump: keeps `buf[pos..end)` for the next input (see `stalled`). Stock's crawler
   * wrote the dump itself; the connection it gives back starts in conn_new_cmd, which spends
   * one of the next event's count (as after a yield).
   */
  private stall(buf: Uint8Array, pos: number, end: number): void {
    this.stalled = false;
    if (pos < end && !this.closing) this.stallBuf = buf.slice(pos, end);
    this.flushPoint();
    this.reqs = 1;
    this.yielded = true;
  }

  /**
   * Out of input (not in a value): stock transmits what it has and drops its references. That
   * transmission ends in conn_new_cmd, which spends one more of the event's count: a read
   * whose commands used the count up exactly yields there (conn_yields), answers pending.
   */
  private outOfInput(): void {
    if (this.respPending && this.reqs === this.engine.settings.reqsPerEvent && !this.closing) this.engine.stats.conn_yields++;
    this.releaseHolds();
  }

  /**
   * Runs the input a pause held back (the transport sent what was rendered and the peer took
   * it). May pause again: the transport repeats until `paused` stays false.
   */
  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.closing) return;
    if (!this.midValue) this.flushPoint();
    // Not a new event for stock (it read this input at once and never paused): the
    // reqs_per_event count goes on.
    const c = this.getCont;
    if (c !== null) {
      this.getCont = null;
      if (c.routed) continueRoutedGet(this, c);
      else continueGet(this, c);
      if (this.paused || this.closing) return;
    }
    const buf = this.pendBuf;
    if (buf !== null) {
      this.pendBuf = null;
      const end = this.pendEnd;
      const stop = this.run(buf, this.pendPos, end);
      if (this.paused) {
        this.pend(buf, stop, end);
        return;
      }
      if (this.stalled) return this.stall(buf, stop, end);
      if (stop < end && !this.closing) this.saveCarry(buf, stop, end);
    }
    if (!this.midValue) this.outOfInput();
    this.trimInput();
  }

  /** A multiget handler stopped (PAUSE_BYTES rendered): `cont` is what resume() runs first. */
  pauseGet(cont: GetCont): void {
    this.getCont = cont;
    this.paused = true;
  }

  /** Input after the command where the session paused: run on resume. */
  private pend(buf: Uint8Array, pos: number, end: number): void {
    this.pendBuf = pos < end ? buf : null;
    this.pendPos = pos;
    this.pendEnd = end;
  }

  /**
   * Whether to stop taking commands now (see PAUSE_BYTES); only between commands. Called after
   * every command: the common case is one compare of `out.pos` and one of `holes.length`.
   */
  private shouldPause(): boolean {
    // Forwarded answers pause the session only where stock sends anyway (after a get, mn, every
    // reqs_per_event commands...): what a pause sends is then what stock had sent by then too.
    // (Values sent from their items' memory count as rendered: they keep the items from being
    // freed until sent.)
    const rendered = this.out.pos + this.splicedLen;
    if (rendered <= PAUSE_BYTES && this.holes.length <= PAUSE_HOLES && (this.fwdBytes <= PAUSE_BYTES || this.cmdsSinceFlush !== 0)) return this.paused;
    if (this.holes.length === 0 && this.fwdBytes > 0) {
      // The forwarded answers it counted were dropped (a get failed by a too-long key).
      this.fwdReads = 0;
      this.fwdBytes = 0;
      if (rendered <= PAUSE_BYTES) return this.paused;
    }
    return this.paused || (this.pausable && this.state === St.CMD && !this.closing);
  }

  /** Back to a fresh state between units run for another shard (keeps `out` and `holds`). */
  reset(): void {
    this.dropUpload();
    this.noreply = false;
    this.closeAfterWrite = false;
    this.abort = false;
    this.sbytes = 0;
    this.fwdLeft = 0;
    this.direct = false;
    this.carriedHead = -1;
  }

  /** A helper session on the same engine (multiget parts, gathered answers), with its own output. */
  subSession(): Session {
    if (this.sub === undefined) {
      this.sub = new Session(this.engine, { protocol: Proto.TEXT });
      this.sub.countBytes = false;
      this.sub.routing = false;
    }
    this.sub.reset();
    return this.sub;
  }

  /**
   * Forwards a unit whose head is `buf[from..to)` and whose next `bytes` bytes of input
   * follow; its answer goes where the output is now. The unit joins a batch only once
   * complete, so a batch never leaves with half a command (and no output can come in between).
   * `reads`: the keys it reads (0: it answers with a line; see noteForward). False, with nothing
   * done, when the shard has no room to buffer `bytes` more of other shards' values
   * (Engine.reserveForward): the caller forwards the command as one that ran out of memory.
   */
  forwardUnit(dest: number, kind: number, proto: Proto, buf: Uint8Array, from: number, to: number, bytes: number, reads: number): boolean {
    // Only a unit past the connection's own buffer (FWD_OWN, kept by every connection anyway)
    // takes a shard buffer and is reserved: a small set is never refused for large ones.
    if (to - from + bytes > FWD_OWN) {
      if (!this.engine.reserveForward(bytes)) return false;
      this.fwdHeld = bytes;
      this.fwdUnit = this.engine.takeForwardBuffer(to - from + bytes);
    } else {
      this.fwdUnit = this.fwdOwn ??= new Out(256);
    }
    this.fwdUnit.reset();
    this.fwdReads0 = reads;
    this.fwdUnit.copy(buf, from, to - from);
    this.fwdDest = dest;
    this.fwdKind = kind;
    this.fwdProto = proto;
    this.fwdLeft = bytes;
    if (bytes === 0) this.finishForward();
    else this.state = St.FORWARD;
    return true;
  }

  /** The unit is whole: what its buffer holds, then `tail[at..at+n)` (the rest of its value). */
  private finishForward(tail?: Uint8Array, at = 0, n = 0): void {
    this.state = St.CMD;
    try {
      const unit = this.fwdUnit!.bytes();
      const b = this.engine.router!.batch(this.fwdDest);
      const index = b.begin(this.fwdKind, this.fwdProto, unit.length + n);
      b.append(unit, 0, unit.length);
      if (n > 0) b.append(tail!, at, at + n);
      if (this.fwdProto === Proto.BINARY) b.noteBinary(index, unit);
      addHole(this, b, index, this.fwdReads0);
    } finally {
      this.endForward();
    }
  }

  /**
   * The forwarded unit was batched or dropped: its reservation and buffer go back to the shard
   * (a connection keeping the buffer of a large value held up to -I while idle; a fresh buffer
   * per forwarded large value made garbage: the soak's RSS rose by 15-30 MiB in 6 s).
   */
  private endForward(): void {
    if (this.fwdHeld > 0) {
      this.engine.releaseForward(this.fwdHeld);
      this.fwdHeld = 0;
    }
    const unit = this.fwdUnit;
    this.fwdUnit = undefined;
    if (unit !== undefined && unit !== this.fwdOwn) this.engine.giveForwardBuffer(unit);
    // A head alone passes FWD_OWN only for a binary packet's long key or extras (up to 16 KiB).
    const own = this.fwdOwn;
    if (own !== undefined && own.buf.length > FWD_OWN) this.fwdOwn = undefined;
    else own?.reset();
  }

  /**
   * Runs one complete unit `buf[from..to)` forwarded by another shard (no carry: the unit is
   * whole; what it leaves incomplete is dropped by the caller's reset()).
   */
  feedRange(buf: Uint8Array, from: number, to: number): void {
    if (this.closing) return;
    this.markSent();
    this.reqs = 0;
    this.run(buf, from, to);
  }

  /** A metadump this session asked for holds the crawler: its answer is not yet handed to the transport. */
  get holdsDump(): boolean {
    return this.dumpHeld;
  }

  /**
   * The transport took the metadump's answer (holes filled): returns the crawler's release, to
   * be called once that answer is sent (or the connection failed).
   */
  passDump(): () => void {
    this.dumpHeld = false;
    const engine = this.engine;
    return () => {
      if (dumping.get(engine) === this) dumping.delete(engine);
    };
  }

  /** The connection is going away: frees an upload in progress, drops its holds. */
  close(): void {
    this.dropSplices();
    if (this.dumpHeld) this.passDump()();
    this.dropUpload();
    this.releaseHolds();
    this.shedOwn();
  }

  private dropUpload(): void {
    if (this.state === St.FORWARD) this.endForward();
    this.paused = false;
    this.getCont = null;
    this.pendBuf = null;
    if (this.item !== NIL) {
      this.store.freePending(this.item);
      this.item = NIL;
    }
    this.state = St.CMD;
    this.carryLen = 0;
  }

  /**
   * The transport sends this session's output whole at its next write, and its connection has
   * nothing queued: fillHoles may leave a large answer of another shard where it arrived (a
   * splice) instead of copying it into `out` (see takeSplices). Set by the transport per call.
   */
  spliceOk = false;
  /** Answers left in another shard's handed-over buffer, in output order (see splice). */
  private splices: Splice[] | undefined;

  /**
   * fillHoles: `nb[start..start+len)` (another shard's answer, in the buffer it was handed over
   * in) goes out at `out.pos`, between what `out` holds before and after it. The batch keeps
   * that buffer until the transport queued it (takeSplices, then unhold) or the session closes.
   */
  splice(from: Batch, nb: NativeBuffer, start: number, len: number): void {
    from.hold();
    (this.splices ??= []).push({ at: this.out.pos, from, nb, start, len });
  }

  /** The splices made since the last call, for the transport to send between `out`'s pieces (then unhold). */
  takeSplices(): Splice[] | undefined {
    const s = this.splices;
    this.splices = undefined;
    this.splicedLen = 0;
    return s;
  }

  /** Lets go of splices no transport took (the connection failed or closed first). */
  dropSplices(): void {
    const s = this.splices;
    if (s === undefined) return;
    this.splices = undefined;
    this.splicedLen = 0;
    for (const sp of s) unholdSplice(sp);
  }

  /**
   * The transport sends this session's output to a connection with nothing queued, and only
   * this shard renders it: a get may send a large value from the item's memory (spliceItem).
   * Set by the transport before each feed or resume.
   */
  itemSpliceOk = false;
  /** Bytes of the splices not yet taken (what a pause counts besides `out.pos`). */
  splicedLen = 0;

  /**
   * A get's value, item `ref`'s `len` bytes, goes out from the item's memory at `out.pos` (the
   * store keeps it there until the send is done) instead of being copied into `out`. False
   * when it cannot (the value is copied then): the transport did not allow it, other shards'
   * answers are awaited (fillHoles moves what follows the first of them), or the store is not
   * native memory.
   */
  spliceItem(ref: number, len: number): boolean {
    if (!this.itemSpliceOk || this.holes.length > 0) return false;
    const nb = this.store.lend(ref, 0, len);
    if (nb === null) return false;
    (this.splices ??= []).push({ at: this.out.pos, from: null, nb, start: 0, len });
    this.splicedLen += len;
    return true;
  }

  /**
   * fillHoles: another shard's item value `nb` (lent by its owner with a batch's answer, see
   * router.ts LENDS_FLAG) goes out at `out.pos`; released once queued or dropped, which hands it
   * back to its owner.
   */
  spliceLent(nb: NativeBuffer, len: number): void {
    (this.splices ??= []).push({ at: this.out.pos, from: null, nb, start: 0, len });
    this.splicedLen += len;
  }

  /** Output from `pos` on is dropped (stock releases the responses since its last send point): splices after it too. */
  cutOut(pos: number): void {
    this.out.truncate(pos);
    const s = this.splices;
    if (s === undefined) return;
    let n = s.length;
    while (n > 0 && s[n - 1]!.at > pos) {
      const sp = s[--n]!;
      if (sp.from === null) this.splicedLen -= sp.len;
      unholdSplice(sp);
    }
    s.length = n;
    if (n === 0) this.splices = undefined;
  }

  /** Everything rendered is dropped (a feed that threw, an aborted connection): its splices too. */
  discardOut(): void {
    this.out.reset();
    this.dropSplices();
  }

  /**
   * Splices the transport did not send now (they come after `send`, the last send point, while
   * a value arrives): they go with the rest of the output, which holdFrom/handOff moved to
   * start at 0.
   */
  keepSplices(rest: Splice[], send: number): void {
    this.splices = rest;
    for (const sp of rest) {
      sp.at -= send;
      if (sp.from === null) this.splicedLen += sp.len;
    }
  }

  /** Bytes buffered for an incomplete command. */
  get carried(): number {
    return this.carryLen;
  }

  /**
   * Runs the state machine over `buf[pos..end)`. Returns where it stopped: `end`, or the start
   * of an incomplete command line / packet header.
   */
  run(buf: Uint8Array, pos: number, end: number): number {
    while (pos < end) {
      if (this.closing || this.watching) return end;
      switch (this.state) {
        case St.NREAD: {
          const n = Math.min(this.rlbytes, end - pos);
          const store = this.store;
          copyBytes(store.mem, this.ritem, buf, pos, n);
          this.ritem += n;
          this.rlbytes -= n;
          pos += n;
          if (this.rlbytes === 0) {
            this.completeNread();
            this.afterValue();
            if (!this.midValue) this.counted();
          }
          continue;
        }
        case St.SWALLOW: {
          const n = Math.min(this.sbytes, end - pos);
          this.sbytes -= n;
          pos += n;
          if (this.sbytes === 0) {
            this.state = St.CMD;
            this.afterValue();
            this.counted();
          }
          continue;
        }
        case St.FORWARD: {
          const n = Math.min(this.fwdLeft, end - pos);
          if (n < this.fwdLeft) {
            this.fwdUnit!.copy(buf, pos, n);
            this.fwdLeft -= n;
            pos += n;
            continue;
          }
          // The rest of the value is here: it goes into the batch from the input, not through
          // the unit's buffer (one copy of every forwarded value fewer).
          this.fwdLeft = 0;
          this.finishForward(buf, pos, n);
          pos += n;
          this.afterValue();
          this.counted();
          continue;
        }
        default:
          break;
      }
      if (this.protocol === Proto.NEGOTIATE) {
        this.protocol = buf[pos] === 0x80 ? Proto.BINARY : Proto.TEXT;
      }
      if (this.protocol === Proto.TEXT) {
        const nl = buf.indexOf(10, pos);
        if (nl < 0 || nl >= end) {
          this.checkLongLine(buf, pos, end);
          return pos;
        }
        this.noreply = false;
        const lineStart = pos;
        this.cmdsSinceFlush++;
        this.respPending = true;
        this.processLine(buf, pos, nl);
        pos = nl + 1;
        if (this.stalled) return pos; // (stock's conn_watch: no conn_new_cmd, not counted)
        // A command whose value follows completes (and counts) once the value is in; one that
        // closed the connection (garbage, an HTTP request) is not counted (stock: conn_closing).
        if (this.midValue) this.noteValueRoom(pos - lineStart, buf === this.carry ? -1 : end - pos);
        else if (!this.closing) this.counted();
        if (this.shouldPause()) {
          this.paused = true;
          return pos;
        }
      } else {
        if (end - pos < BIN_HEADER) return pos;
        if (buf[pos] !== 0x80) {
          // Invalid magic: stock closes at once, unsent responses included.
          this.abort = true;
          return end;
        }
        const need = BIN_HEADER + buf[pos + 4]! + ((buf[pos + 2]! << 8) | buf[pos + 3]!);
        if (need > BIN_READ_MAX) {
          // Stock reads into a 16 KiB buffer: a header, extras and key longer than that are
          // never read whole. Once the buffer is full (and only then: with less it waits, as
          // for any packet) it sends what it has (the answers queued so far) and closes,
          // answering nothing to this packet; the connection waited for all of it here (for
          // good, if the client never sent the rest) and then answered EINVAL.
          if (end - pos < BIN_READ_MAX) return pos;
          this.closeAfterWrite = true;
          return end;
        }
        if (end - pos < need) return pos;
        this.noreply = false;
        this.respPending = true;
        const router = this.engine.router;
        // (The value length as stock's C int: negative past 2 GiB, see binary.ts.)
        if (router === null || !this.routing || !routeBinary(this, router, buf, pos, need, (binaryBody(buf, pos) - (need - BIN_HEADER)) | 0)) {
          processBinaryPacket(this, buf, pos);
        }
        pos += need;
        if (this.midValue) this.noteValueRoom(need, buf === this.carry ? -1 : end - pos);
        else if (!this.closing) this.counted();
        if (this.shouldPause()) {
          this.paused = true;
          return pos;
        }
      }
    }
    return pos;
  }

  /** Tokenizes and executes one text line `buf[start..nl)` (nl is the '\n'). */
  private processLine(buf: Uint8Array, start: number, nl: number): void {
    let end = nl;
    if (end - start > 1 && buf[end - 1] === 13) end--;
    this.line = buf;
    this.lineEnd = end;
    this.tokenize(buf, start, end);
    // (`l` first: the common commands pay one compare.)
    if (this.pausable && this.ntokens === 4 && buf[this.tokS[0]!] === 108 && metadumpStarts(this, buf)) {
      // Stock's one crawler serves one metadump at a time, writing it as the client reads;
      // another asked for meanwhile is refused. Each dump here is rendered whole: without
      // this, every connection that asks and never reads held a copy of the whole dump. (One
      // at a time per shard: with N shards, up to N dumps are in flight.)
      if (dumping.has(this.engine)) return this.replyString("BUSY currently processing crawler request");
      dumping.set(this.engine, this);
      this.dumpHeld = true;
      this.stalled = true;
    }
    const router = this.engine.router;
    if (router !== null && this.routing && routeText(this, router, buf, start, nl + 1)) return;
    processTextLine(this, buf);
  }

  /**
   * stock's tokenize_command: splits on spaces into at most 23 tokens (later text stays in
   * the line). A NUL byte ends the line, as strlen() does in stock. Sets `lineEnd` to the
   * effective end.
   */
  tokenize(buf: Uint8Array, start: number, end: number): void {
    const tokS = this.tokS;
    const tokE = this.tokE;
    let n = 0;
    let s = start;
    let i = start;
    for (; i < end; i++) {
      const c = buf[i]!;
      if (c === 32) {
        if (s !== i) {
          tokS[n] = s;
          tokE[n] = i;
          n++;
          if (n === MAX_TOKENS - 1) {
            s = i + 1;
            i++;
            break;
          }
        }
        s = i + 1;
      } else if (c === 0) {
        end = i;
        break;
      }
    }
    if (n < MAX_TOKENS - 1) {
      if (s < i && s < end) {
        tokS[n] = s;
        tokE[n] = Math.min(i, end);
        n++;
      }
    } else {
      // Truncated at 23 tokens: find the true end (first NUL) of what remains.
      for (let j = i; j < end; j++) {
        if (buf[j] === 0) {
          end = j;
          break;
        }
      }
    }
    // The terminal token: empty, at the first unprocessed byte.
    tokS[n] = n === MAX_TOKENS - 1 ? s : end;
    tokE[n] = tokS[n]!;
    this.ntokens = n + 1;
    this.lineEnd = end;
  }

  /** stock's try_read_command_ascii rule for input without a newline. */
  private checkLongLine(buf: Uint8Array, pos: number, end: number): void {
    const have = end - pos;
    if (have <= LINE_LIMIT) return;
    let p = pos;
    while (p < end && buf[p] === 32) p++;
    const isGet =
      p - pos <= 100 &&
      ((end - p >= 4 && buf[p] === 103 && buf[p + 1] === 101 && buf[p + 2] === 116 && buf[p + 3] === 32) ||
        (end - p >= 5 && buf[p] === 103 && buf[p + 1] === 101 && buf[p + 2] === 116 && buf[p + 3] === 115 && buf[p + 4] === 32));
    if (!isGet || have > MULTIGET_LINE_MAX) this.abort = true;
  }

  /** Appends an incomplete command to the carry buffer. */
  private saveCarry(data: Uint8Array, from: number, to: number): void {
    const n = to - from;
    this.ensureCarry(this.carryLen + n);
    this.carry.set(data.subarray(from, to), this.carryLen);
    this.carryLen += n;
  }

  private ensureCarry(size: number): void {
    if (size <= this.carry.length) return;
    let next = Math.max(this.carry.length * 2, 256);
    while (next < size) next *= 2;
    const c = new Uint8Array(next);
    c.set(this.carry.subarray(0, this.carryLen));
    this.carry = c;
  }

  /**
   * Completes the carried command with the front of `data`, runs it, and returns how much of
   * `data` it took (-1: all of it, still incomplete).
   */
  private feedCarry(data: Uint8Array): number {
    if (this.protocol === Proto.TEXT) {
      const nl = data.indexOf(10);
      if (nl < 0) {
        this.saveCarry(data, 0, data.length);
        this.checkLongLine(this.carry, 0, this.carryLen);
        return -1;
      }
      this.saveCarry(data, 0, nl + 1);
      this.runCarry();
      return nl + 1;
    }
    // Binary: header first, then extras and key.
    let taken = 0;
    for (;;) {
      let need = BIN_HEADER;
      if (this.carryLen >= BIN_HEADER) {
        if (this.carry[0] !== 0x80) break; // run() aborts the connection
        need = BIN_HEADER + this.carry[4]! + ((this.carry[2]! << 8) | this.carry[3]!);
        // Past stock's read buffer, only as much as fills it is wanted: run() then closes.
        if (need > BIN_READ_MAX) need = BIN_READ_MAX;
      }
      if (this.carryLen >= need) break;
      const take = Math.min(need - this.carryLen, data.length - taken);
      if (take === 0) return -1;
      this.saveCarry(data, taken, taken + take);
      taken += take;
    }
    this.runCarry();
    return taken;
  }

  private runCarry(): void {
    const len = this.carryLen;
    this.carryLen = 0;
    // run() may re-enter saveCarry only for an incomplete unit, which cannot happen here.
    const carry = this.carry;
    const stop = this.run(carry, 0, len);
    // The carry holds one unit (the rest of a command completed by this feed): a pause comes
    // after it or inside it (a multiget, whose rest resume() runs from the carry as it is).
    if (!this.paused && stop < len && !this.closing) {
      const rest = carry.slice(stop, len);
      this.saveCarry(rest, 0, rest.length);
    }
  }

  /**
   * A command of `head` bytes left a value of the current length to read with `room` bytes of
   * input after it (-1: run from the carry buffer, known once the caller is back in feed()).
   */
  private noteValueRoom(head: number, room: number): void {
    if (room < 0) {
      this.carriedHead = head;
      return;
    }
    const left = this.state === St.NREAD ? this.rlbytes : this.state === St.SWALLOW ? this.sbytes : this.fwdLeft;
    this.direct = left > room || left + head > STOCK_READ_BUFFER;
  }

  /** A value (or swallowed/forwarded bytes) is complete: stock's buffer is empty if it read the tail directly. */
  private afterValue(): void {
    if (!this.direct) return;
    this.direct = false;
    if (!this.midValue) this.flushPoint();
  }

  private completeNread(): void {
    this.state = St.CMD;
    if (this.nreadKind === NreadKind.BINARY_SET) completeBinaryNread(this);
    else completeTextNread(this);
  }

  /**
   * One more command completed (a storage command once its value is in): stock's drive_machine
   * counts them per event (nreqs = reqs_per_event, decremented in conn_new_cmd after each), and
   * past the count sends what it has and yields. The turn after a yield starts in conn_new_cmd,
   * which spends one of the next event's count: 21 commands before the first send, then 20.
   */
  private counted(): void {
    if (++this.reqs > this.engine.settings.reqsPerEvent) {
      this.reqs = 1;
      this.yielded = true;
      this.engine.stats.conn_yields++; // stock counts every yield (after sending what it has)
      this.flushPoint();
    } else {
      this.yielded = false;
    }
  }

  /** A new read event (feed): stock's count starts over, unless it yielded last. */
  private newTurn(): void {
    if (this.yielded) this.yielded = false;
    else this.reqs = 0;
  }

  // ------------------------------------------------------------------ helpers for handlers

  /** Responses so far count as sent (stock transmits here: mn, NOOP, yields). */
  flushPoint(): void {
    this.markSent();
    if (this.holds.len !== 0 || this.heldShards.length !== 0) this.releaseHolds();
  }

  /** Our replies count as sent: items they came from are free, here and on other shards. */
  releaseHolds(): void {
    this.store.release(this.holds);
    const shards = this.heldShards;
    if (shards.length === 0) return;
    // After our units in the shard's batch (a batch already sent released them when it ran).
    const router = this.engine.router!;
    for (const dest of shards) router.batch(dest).begin(UnitKind.RELEASE, Proto.TEXT, 0);
    shards.length = 0;
  }

  /** What one key of a read forwarded now counts against PAUSE_BYTES (see READ_COST_MIN). */
  readCost(): number {
    return this.readEst === 0 ? FIRST_READ_COST : Math.max(this.readEst + 64, READ_COST_MIN);
  }

  /** A unit reading `reads` keys (0: answered with a line) was forwarded. */
  noteForward(reads: number): void {
    if (reads === 0) {
      this.fwdBytes += LINE_COST;
      return;
    }
    this.fwdBytes += reads * this.readCost();
    this.fwdReads += reads;
  }

  /** The forwarded units' answers, `bytes` in all, are in `out` (router.ts fillHoles). */
  filledForwards(bytes: number): void {
    // Per key read, as an average; a smaller one lowers the estimate by half at most per round
    // (at least 1: answers were seen, quiet misses being empty).
    if (this.fwdReads > 0) this.readEst = Math.max(Math.ceil(bytes / this.fwdReads), this.readEst >>> 1, 1);
    this.fwdReads = 0;
    this.fwdBytes = 0;
  }

  /** A command of ours forwarded to shard `dest` may hold an item there (see releaseHolds). */
  heldOn(dest: number): void {
    if (!this.heldShards.includes(dest)) this.heldShards.push(dest);
  }

  private markSent(): void {
    this.cmdsSinceFlush = 0;
    this.respPending = false;
    this.keep = this.out.pos;
    this.keepHoles = this.holes.length;
  }

  /** The reply just rendered came from item `ref`: stock sends it from the item's memory. */
  hold(ref: number): void {
    this.store.hold(this.holds, ref);
  }

  /** stock's out_string: `msg` (with its "\r\n") unless the command asked for no reply. */
  reply(msg: Uint8Array): void {
    if (this.noreply) return;
    this.out.put(msg);
  }

  /** stock's out_errstring: like reply() but ignores noreply. */
  replyError(msg: Uint8Array): void {
    this.noreply = false;
    this.out.put(msg);
  }

  /** Writes a dynamic line with "\r\n" (stock's out_string with a computed string). */
  replyString(s: string): void {
    if (this.noreply) return;
    this.out.str(s);
    this.out.put(CRLF);
  }

  /** Starts reading `bytes` of value into pending item `ref`. */
  startNread(ref: number, kind: NreadKind, comm: Comm, hv: number, reqCas: number, bytes: number): void {
    this.item = ref;
    this.nreadKind = kind;
    this.nreadComm = comm;
    this.nreadHash = hv;
    this.nreadCas = reqCas;
    this.ritem = this.store.valueOffset(ref);
    this.rlbytes = bytes;
    this.state = St.NREAD;
    if (bytes === 0) this.completeNread();
  }

  /** Discards the next `bytes` bytes of input. */
  swallow(bytes: number): void {
    if (bytes <= 0) return;
    this.sbytes = bytes;
    this.state = St.SWALLOW;
  }
}
