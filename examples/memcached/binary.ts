/**
 * The binary protocol (deprecated upstream, still what memccapable's binary half tests) after
 * stock memcached 1.6.18's proto_bin.c: the same length checks, status codes, error texts,
 * quiet-command rules and swallowing of rejected bodies.
 */
import { murmur3 as hashKey } from "./hash.ts";
import { NIL, Comm, CS, StoreResult, AllocError, DeltaResult } from "./store.ts";
import { type Session, NreadKind } from "./session.ts";
import { delimiter, KEY_MAX_LENGTH } from "./text.ts";
import { renderStats, resetAllStats, type StatsSink } from "./stats.ts";
import { VERSION } from "./settings.ts";

/** Bytes of a binary header. */
export const BIN_HEADER = 24;

const RES_MAGIC = 0x81;

/** Opcodes. */
export const enum Op {
  GET = 0x00,
  SET = 0x01,
  ADD = 0x02,
  REPLACE = 0x03,
  DELETE = 0x04,
  INCREMENT = 0x05,
  DECREMENT = 0x06,
  QUIT = 0x07,
  FLUSH = 0x08,
  GETQ = 0x09,
  NOOP = 0x0a,
  VERSION = 0x0b,
  GETK = 0x0c,
  GETKQ = 0x0d,
  APPEND = 0x0e,
  PREPEND = 0x0f,
  STAT = 0x10,
  SETQ = 0x11,
  ADDQ = 0x12,
  REPLACEQ = 0x13,
  DELETEQ = 0x14,
  INCREMENTQ = 0x15,
  DECREMENTQ = 0x16,
  QUITQ = 0x17,
  FLUSHQ = 0x18,
  APPENDQ = 0x19,
  PREPENDQ = 0x1a,
  TOUCH = 0x1c,
  GAT = 0x1d,
  GATQ = 0x1e,
  SASL_LIST_MECHS = 0x20,
  SASL_AUTH = 0x21,
  SASL_STEP = 0x22,
  GATK = 0x23,
  GATKQ = 0x24,
}

/** Response status codes. */
export const enum Status {
  SUCCESS = 0x00,
  KEY_ENOENT = 0x01,
  KEY_EEXISTS = 0x02,
  E2BIG = 0x03,
  EINVAL = 0x04,
  NOT_STORED = 0x05,
  DELTA_BADVAL = 0x06,
  AUTH_ERROR = 0x20,
  UNKNOWN_COMMAND = 0x81,
  ENOMEM = 0x82,
}

function statusText(status: Status): string {
  switch (status) {
    case Status.ENOMEM:
      return "Out of memory";
    case Status.UNKNOWN_COMMAND:
      return "Unknown command";
    case Status.KEY_ENOENT:
      return "Not found";
    case Status.EINVAL:
      return "Invalid arguments";
    case Status.KEY_EEXISTS:
      return "Data exists for key.";
    case Status.E2BIG:
      return "Too large.";
    case Status.DELTA_BADVAL:
      return "Non-numeric server-side value for incr or decr";
    case Status.NOT_STORED:
      return "Not stored.";
    case Status.AUTH_ERROR:
      return "Auth failure.";
    default:
      return "UNHANDLED ERROR";
  }
}

/** Writes a response header for the current request (stock's add_bin_header). */
function header(s: Session, status: number, extlen: number, keylen: number, bodylen: number, cas: number): void {
  const out = s.out;
  out.ensure(BIN_HEADER);
  const b = out.buf;
  const p = out.pos;
  b[p] = RES_MAGIC;
  b[p + 1] = s.binOpcode;
  b[p + 2] = keylen >>> 8;
  b[p + 3] = keylen & 0xff;
  b[p + 4] = extlen;
  b[p + 5] = 0;
  b[p + 6] = status >>> 8;
  b[p + 7] = status & 0xff;
  b[p + 8] = bodylen >>> 24;
  b[p + 9] = (bodylen >>> 16) & 0xff;
  b[p + 10] = (bodylen >>> 8) & 0xff;
  b[p + 11] = bodylen & 0xff;
  b[p + 12] = s.binOpaque >>> 24;
  b[p + 13] = (s.binOpaque >>> 16) & 0xff;
  b[p + 14] = (s.binOpaque >>> 8) & 0xff;
  b[p + 15] = s.binOpaque & 0xff;
  out.pos = p + 16;
  out.u64(cas);
}

/**
 * stock's write_bin_error: status + text, then swallow `swallow` body bytes. Ignores quiet mode.
 * Stock's `swallow` is a C int: a body length of 2 GiB or more arrives negative, nothing is
 * swallowed and the bytes that follow are read as the next request.
 */
function binError(s: Session, status: Status, text: string | null, swallow: number): void {
  const msg = text ?? statusText(status);
  header(s, status, 0, 0, msg.length, s.cas);
  s.out.str(msg);
  // stock's write_bin_error transmits at once (conn_mwrite), unless it swallows a body first.
  if ((swallow | 0) > 0) s.swallow(swallow | 0);
  else s.flushPoint();
}

/**
 * A storage command's failed allocation (stock's process_bin_update/append_prepend): the error,
 * then the value swallowed. Never a send point: stock's write_bin_error (or out_of_memory) sets
 * conn_mwrite, which the conn_swallow right after replaces (even for an empty value).
 */
function binAllocError(s: Session, status: Status, text: string | null, vlen: number): void {
  const msg = text ?? statusText(status);
  header(s, status, 0, 0, msg.length, s.cas);
  s.out.str(msg);
  s.swallow(vlen);
}

/** stock's write_bin_response: skipped for quiet commands (except get hits, written elsewhere). */
function binResponse(s: Session, extlen: number, keylen: number, body: Uint8Array | null): void {
  if (s.noreply && s.binCmd !== Op.GET && s.binCmd !== Op.GETK) return;
  header(s, 0, extlen, keylen, body ? body.length : 0, s.cas);
  if (body) s.out.put(body);
}

/** stock's handle_binary_protocol_error: EINVAL, then close. */
function protocolError(s: Session): void {
  binError(s, Status.EINVAL, null, 0);
  s.closeAfterWrite = true;
}

const u32at = (b: Uint8Array, p: number): number => ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;

/** Executes one binary request whose header, extras and key are in `buf` at `pos`. */
export function processBinaryPacket(s: Session, buf: Uint8Array, pos: number): void {
  const opcode = buf[pos + 1]!;
  const keylen = (buf[pos + 2]! << 8) | buf[pos + 3]!;
  const extlen = buf[pos + 4]!;
  const bodylen = u32at(buf, pos + 8);
  s.binOpcode = opcode;
  s.binOpaque = u32at(buf, pos + 12);
  s.binCas = u32at(buf, pos + 16) * 4294967296 + u32at(buf, pos + 20);
  s.cas = 0;
  const ext = pos + BIN_HEADER;
  const key = ext + extlen;

  if (keylen > bodylen || keylen + extlen > bodylen) {
    binError(s, Status.UNKNOWN_COMMAND, null, 0);
    s.closeAfterWrite = true;
    return;
  }
  s.noreply = true;
  if (keylen > KEY_MAX_LENGTH) return protocolError(s);
  let cmd = opcode;
  switch (opcode) {
    case Op.SETQ: cmd = Op.SET; break;
    case Op.ADDQ: cmd = Op.ADD; break;
    case Op.REPLACEQ: cmd = Op.REPLACE; break;
    case Op.DELETEQ: cmd = Op.DELETE; break;
    case Op.INCREMENTQ: cmd = Op.INCREMENT; break;
    case Op.DECREMENTQ: cmd = Op.DECREMENT; break;
    case Op.QUITQ: cmd = Op.QUIT; break;
    case Op.FLUSHQ: cmd = Op.FLUSH; break;
    case Op.APPENDQ: cmd = Op.APPEND; break;
    case Op.PREPENDQ: cmd = Op.PREPEND; break;
    case Op.GETQ: cmd = Op.GET; break;
    case Op.GETKQ: cmd = Op.GETK; break;
    case Op.GATQ: cmd = Op.GAT; break;
    case Op.GATKQ: cmd = Op.GATK; break;
    default: s.noreply = false;
  }
  s.binCmd = cmd;

  switch (cmd) {
    case Op.VERSION:
      if (extlen === 0 && keylen === 0 && bodylen === 0) binResponse(s, 0, 0, VERSION_BYTES);
      else protocolError(s);
      return;
    case Op.FLUSH:
      if (keylen === 0 && bodylen === extlen && (extlen === 0 || extlen === 4)) binFlush(s, buf, ext, extlen);
      else protocolError(s);
      return;
    case Op.NOOP:
      if (extlen === 0 && keylen === 0 && bodylen === 0) {
        binResponse(s, 0, 0, null);
        s.flushPoint();
      } else {
        protocolError(s);
      }
      return;
    case Op.SET:
    case Op.ADD:
    case Op.REPLACE:
      // Stock's vlen is a C int: negative past 2 GiB, and then too large with nothing swallowed.
      if (extlen === 8 && keylen !== 0 && bodylen >= keylen + 8) binUpdate(s, buf, ext, key, keylen, (bodylen - keylen - extlen) | 0);
      else protocolError(s);
      return;
    case Op.GET:
    case Op.GETK:
      if (extlen === 0 && bodylen === keylen && keylen > 0) binGetOrTouch(s, buf, ext, key, keylen);
      else protocolError(s);
      return;
    case Op.DELETE:
      if (keylen > 0 && extlen === 0 && bodylen === keylen) binDelete(s, buf, key, keylen);
      else protocolError(s);
      return;
    case Op.INCREMENT:
    case Op.DECREMENT:
      if (keylen > 0 && extlen === 20 && bodylen === keylen + extlen) binIncr(s, buf, ext, key, keylen);
      else protocolError(s);
      return;
    case Op.APPEND:
    case Op.PREPEND:
      if (keylen > 0 && extlen === 0) binAppendPrepend(s, buf, key, keylen, (bodylen - keylen) | 0);
      else protocolError(s);
      return;
    case Op.STAT:
      if (extlen === 0) binStat(s, buf, key, keylen);
      else protocolError(s);
      return;
    case Op.QUIT:
      if (keylen === 0 && extlen === 0 && bodylen === 0) {
        binResponse(s, 0, 0, null);
        s.closeAfterWrite = true;
      } else {
        protocolError(s);
      }
      return;
    case Op.SASL_LIST_MECHS:
      if (extlen === 0 && keylen === 0 && bodylen === 0) binError(s, Status.UNKNOWN_COMMAND, null, bodylen - keylen);
      else protocolError(s);
      return;
    case Op.SASL_AUTH:
    case Op.SASL_STEP:
      if (extlen === 0 && keylen !== 0) binError(s, Status.UNKNOWN_COMMAND, null, bodylen - keylen);
      else protocolError(s);
      return;
    case Op.TOUCH:
    case Op.GAT:
    case Op.GATK:
      if (extlen === 4 && keylen !== 0) binGetOrTouch(s, buf, ext, key, keylen);
      else protocolError(s);
      return;
    default:
      binError(s, Status.UNKNOWN_COMMAND, null, bodylen);
  }
}

const VERSION_BYTES = new TextEncoder().encode(VERSION);

/**
 * True if a keyed request passes stock's length checks (so running it elsewhere cannot end in
 * a protocol error that must close this connection).
 */
export function binaryKeyedValid(opcode: number, keylen: number, extlen: number, bodylen: number): boolean {
  if (keylen > bodylen || keylen + extlen > bodylen || keylen > KEY_MAX_LENGTH || keylen === 0) return false;
  switch (opcode) {
    case Op.SET: case Op.ADD: case Op.REPLACE: case Op.SETQ: case Op.ADDQ: case Op.REPLACEQ:
      return extlen === 8 && bodylen >= keylen + 8;
    case Op.GET: case Op.GETK: case Op.GETQ: case Op.GETKQ:
    case Op.DELETE: case Op.DELETEQ:
      return extlen === 0 && bodylen === keylen;
    case Op.INCREMENT: case Op.DECREMENT: case Op.INCREMENTQ: case Op.DECREMENTQ:
      return extlen === 20 && bodylen === keylen + 20;
    case Op.APPEND: case Op.PREPEND: case Op.APPENDQ: case Op.PREPENDQ:
      return extlen === 0;
    case Op.TOUCH: case Op.GAT: case Op.GATQ: case Op.GATK: case Op.GATKQ:
      return extlen === 4;
    default:
      return false;
  }
}

function binGetOrTouch(s: Session, buf: Uint8Array, ext: number, key: number, nkey: number): void {
  const cmd = s.binCmd;
  const shouldTouch = cmd === Op.TOUCH || cmd === Op.GAT || cmd === Op.GATK;
  const returnKey = cmd === Op.GETK || cmd === Op.GATK;
  const returnValue = cmd !== Op.TOUCH;
  const store = s.store;
  const stats = s.engine.stats;
  const hv = hashKey(buf, key, nkey);
  const ref = store.get(buf, key, nkey, hv, true);
  // Stock records every get and touch, quiet or not, hit or miss (after the answer: same counts).
  if (s.engine.settings.detailEnabled) s.engine.prefixStats.recordGet(buf, key, nkey, delimiter(s), ref !== NIL);
  if (ref !== NIL) {
    if (shouldTouch) store.setExptime(ref, s.engine.clock.realtimeU32(u32at(buf, ext)));
    const cls = store.clsid(ref) * CS.COUNT;
    if (shouldTouch) {
      stats.touch_cmds++;
      store.classStats[cls + CS.TOUCH_HITS]!++;
    } else {
      stats.get_cmds++;
      store.classStats[cls + CS.GET_HITS]!++;
    }
    const vlen = store.nbytes(ref) - 2;
    let bodylen = 4 + vlen;
    let keylen = 0;
    if (cmd === Op.TOUCH) bodylen -= vlen;
    else if (returnKey) {
      bodylen += nkey;
      keylen = nkey;
    }
    header(s, 0, 4, keylen, bodylen, store.cas(ref));
    s.out.u32(store.flags(ref));
    if (returnKey) s.out.copy(store.mem, store.keyOffset(ref), nkey);
    if (returnValue) s.out.copy(store.mem, store.valueOffset(ref), vlen);
    s.hold(ref); // until sent (stock's resp->item), TOUCH too
    return;
  }
  if (shouldTouch) {
    stats.touch_cmds++;
    stats.touch_misses++;
  } else {
    stats.get_cmds++;
    stats.get_misses++;
  }
  if (s.noreply) return;
  if (returnKey) {
    header(s, Status.KEY_ENOENT, 0, nkey, nkey, s.cas);
    s.out.copy(buf, key, nkey);
  } else {
    binError(s, Status.KEY_ENOENT, null, 0);
  }
}

function binUpdate(s: Session, buf: Uint8Array, ext: number, key: number, nkey: number, vlen: number): void {
  const flags = u32at(buf, ext);
  const exptime = s.engine.clock.realtimeU32(u32at(buf, ext + 4));
  const store = s.store;
  const hv = hashKey(buf, key, nkey);
  // Before the item is allocated, as stock: a set that fails (too large, out of memory) counts.
  if (s.engine.settings.detailEnabled) s.engine.prefixStats.recordSet(buf, key, nkey, delimiter(s));
  const ref = store.alloc(buf, key, nkey, flags, exptime, vlen + 2);
  if (ref === NIL) {
    if (store.allocError === AllocError.NO_MEMORY_READ) {
      // Stock fails while reading such a value: the old one stays.
      binAllocError(s, Status.ENOMEM, "Out of memory during read", vlen);
      return;
    }
    if (store.allocError === AllocError.TOO_LARGE) binAllocError(s, Status.E2BIG, null, vlen);
    else binAllocError(s, Status.ENOMEM, "Out of memory allocating item", vlen);
    if (s.binCmd === Op.SET) {
      const old = store.get(buf, key, nkey, hv, false);
      if (old !== NIL) store.unlink(old);
    }
    // stock swallows even when the body is empty: keep the state machine in step.
    return;
  }
  // Stock puts the request's CAS in the new item (ITEM_set_cas) and reads it back: with CAS off
  // (-C) that is 0, so a set/add/replace with a CAS is a plain one and append checks nothing.
  const reqCas = store.useCas ? s.binCas : 0;
  let comm = s.binCmd === Op.ADD ? Comm.ADD : s.binCmd === Op.SET ? Comm.SET : Comm.REPLACE;
  if (reqCas !== 0) comm = Comm.CAS;
  s.startNread(ref, NreadKind.BINARY_SET, comm, hv, reqCas, vlen);
}

function binAppendPrepend(s: Session, buf: Uint8Array, key: number, nkey: number, vlen: number): void {
  const store = s.store;
  const hv = hashKey(buf, key, nkey);
  if (s.engine.settings.detailEnabled) s.engine.prefixStats.recordSet(buf, key, nkey, delimiter(s));
  const ref = store.alloc(buf, key, nkey, 0, 0, vlen + 2);
  if (ref === NIL) {
    if (store.allocError === AllocError.TOO_LARGE) binAllocError(s, Status.E2BIG, null, vlen);
    else binAllocError(s, Status.ENOMEM, store.allocError === AllocError.NO_MEMORY_READ ? "Out of memory during read" : "Out of memory allocating item", vlen);
    return;
  }
  s.startNread(ref, NreadKind.BINARY_SET, s.binCmd === Op.APPEND ? Comm.APPEND : Comm.PREPEND, hv, store.useCas ? s.binCas : 0, vlen);
}

/** The value of a binary set/add/replace/append/prepend arrived (stock's complete_update_bin). */
export function completeBinaryNread(s: Session): void {
  const store = s.store;
  const ref = s.item;
  s.item = NIL;
  store.classStats[store.clsid(ref) * CS.COUNT + CS.SET_CMDS]!++;
  const end = store.valueOffset(ref) + store.nbytes(ref);
  store.mem[end - 2] = 13;
  store.mem[end - 1] = 10;
  const comm = s.nreadComm;
  const ret = store.storeItem(ref, comm, s.nreadHash, s.nreadCas, false);
  if (ret === StoreResult.NOT_FOUND && comm === Comm.CAS) s.engine.stats.cas_misses++;
  switch (ret) {
    case StoreResult.STORED:
      s.cas = store.lastCas;
      binResponse(s, 0, 0, null);
      return;
    case StoreResult.EXISTS:
      return binError(s, Status.KEY_EEXISTS, null, 0);
    case StoreResult.NOT_FOUND:
      return binError(s, Status.KEY_ENOENT, null, 0);
    default: {
      const status = comm === Comm.ADD ? Status.KEY_EEXISTS : comm === Comm.REPLACE ? Status.KEY_ENOENT : Status.NOT_STORED;
      return binError(s, status, null, 0);
    }
  }
}

function binDelete(s: Session, buf: Uint8Array, key: number, nkey: number): void {
  const store = s.store;
  if (s.engine.settings.detailEnabled) s.engine.prefixStats.recordDelete(buf, key, nkey, delimiter(s));
  const ref = store.get(buf, key, nkey, hashKey(buf, key, nkey), false);
  if (ref !== NIL) {
    if (s.binCas === 0 || s.binCas === store.cas(ref)) {
      store.classStats[store.clsid(ref) * CS.COUNT + CS.DELETE_HITS]!++;
      store.unlink(ref);
      binResponse(s, 0, 0, null);
    } else {
      binError(s, Status.KEY_EEXISTS, null, 0);
    }
  } else {
    binError(s, Status.KEY_ENOENT, null, 0);
    s.engine.stats.delete_misses++;
  }
}

function binIncr(s: Session, buf: Uint8Array, ext: number, key: number, nkey: number): void {
  const delta = (BigInt(u32at(buf, ext)) << 32n) | BigInt(u32at(buf, ext + 4));
  const initial = (BigInt(u32at(buf, ext + 8)) << 32n) | BigInt(u32at(buf, ext + 12));
  const expiration = u32at(buf, ext + 16);
  const incr = s.binCmd === Op.INCREMENT;
  const store = s.store;
  const hv = hashKey(buf, key, nkey);
  switch (store.addDelta(buf, key, nkey, hv, incr, delta, s.binCas)) {
    case DeltaResult.OK:
      s.cas = store.lastCas;
      binResponse(s, 0, 0, u64Bytes(BigInt(store.deltaValue)));
      return;
    case DeltaResult.NON_NUMERIC:
      return binError(s, Status.DELTA_BADVAL, null, 0);
    case DeltaResult.EOM:
      return binError(s, Status.ENOMEM, "Out of memory incrementing value", 0);
    case DeltaResult.CAS_MISMATCH:
      return binError(s, Status.KEY_EEXISTS, null, 0);
    case DeltaResult.NOT_FOUND:
      break;
  }
  if (expiration === 0xffffffff) {
    if (incr) s.engine.stats.incr_misses++;
    else s.engine.stats.decr_misses++;
    return binError(s, Status.KEY_ENOENT, null, 0);
  }
  const digits = initial.toString();
  const ref = store.alloc(buf, key, nkey, 0, s.engine.clock.realtimeU32(expiration), digits.length + 2);
  if (ref === NIL) return binError(s, Status.ENOMEM, "Out of memory allocating new item", 0);
  const v = store.valueOffset(ref);
  for (let i = 0; i < digits.length; i++) store.mem[v + i] = digits.charCodeAt(i);
  store.mem[v + digits.length] = 13;
  store.mem[v + digits.length + 1] = 10;
  if (store.storeItem(ref, Comm.ADD, hv, 0, false) === StoreResult.STORED) {
    s.cas = store.lastCas;
    binResponse(s, 0, 0, u64Bytes(initial));
  } else {
    binError(s, Status.NOT_STORED, null, 0);
  }
}

function u64Bytes(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, v));
  return b;
}

function binFlush(s: Session, buf: Uint8Array, ext: number, extlen: number): void {
  if (!s.engine.settings.flushEnabled) return binError(s, Status.AUTH_ERROR, null, 0);
  const exptime = extlen === 4 ? u32at(buf, ext) : 0;
  const clock = s.engine.clock;
  s.store.flushUntil(exptime > 0 ? clock.realtimeU32(exptime) : clock.now);
  s.engine.onFlushUntil?.(exptime);
  s.engine.stats.flush_cmds++;
  binResponse(s, 0, 0, null);
}

/** Binary stats: one packet per stat, then an empty one (stock's append_bin_stats). */
export class BinarySink implements StatsSink {
  constructor(private readonly s: Session) {}
  add(key: string, value: string): void {
    const s = this.s;
    header(s, 0, 0, key.length, key.length + value.length, 0);
    s.out.str(key);
    s.out.str(value);
  }
  end(): void {
    header(this.s, 0, 0, 0, 0, 0);
  }
}

function binStat(s: Session, buf: Uint8Array, key: number, nkey: number): void {
  let sub = "";
  for (let i = 0; i < nkey; i++) sub += String.fromCharCode(buf[key + i]!);
  const sink = new BinarySink(s);
  if (nkey === 0) {
    renderStats(s, "", sink);
    return;
  }
  if (sub.startsWith("reset")) {
    resetAllStats(s.engine); // stock's stats_reset, as text `stats reset` (prefix counters too)
    sink.end();
    return;
  }
  if (sub.startsWith("settings")) {
    renderStats(s, "settings", sink);
    return;
  }
  if (sub.startsWith("detail")) {
    const rest = sub.slice(6);
    if (rest.startsWith(" dump")) {
      sink.add("detailed", s.engine.prefixStats.dump());
      sink.end();
    } else if (rest.startsWith(" on")) {
      s.engine.settings.detailEnabled = true;
      sink.end();
    } else if (rest.startsWith(" off")) {
      s.engine.settings.detailEnabled = false;
      sink.end();
    } else {
      binError(s, Status.KEY_ENOENT, null, 0);
    }
    return;
  }
  if (sub === "items" || sub === "slabs" || sub === "sizes" || sub === "sizes_enable" || sub === "sizes_disable") {
    renderStats(s, sub, sink);
    return;
  }
  binError(s, Status.KEY_ENOENT, null, 0);
}
