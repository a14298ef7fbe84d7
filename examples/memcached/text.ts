/**
 * The text protocol's classic commands, after stock memcached 1.6.18's proto_text.c:
 * the same dispatch, the same token-count checks, the same error strings, the same counters.
 * Each function takes the session (stock's conn) and the buffer the tokens point into.
 */
import { ascii } from "./out.ts";
import { formatParsedFixed2, parsed, parseDouble, parseI32, parseU32, parseU64 } from "./numbers.ts";
import { murmur3 as hashKey } from "./hash.ts";
import { NIL, Comm, CS, StoreResult, AllocError, DeltaResult } from "./store.ts";
import { type GetCont, type Session, ITEM_SPLICE_MIN, NreadKind, PAUSE_BYTES } from "./session.ts";
import { processMeta, finalizeMetaSet } from "./meta.ts";
import { processStats } from "./stats.ts";
import { VERSION } from "./settings.ts";

/** Longest key (stock's KEY_MAX_LENGTH). */
export const KEY_MAX_LENGTH = 250;
const INT_MAX = 2147483647;

const ERROR = ascii("ERROR\r\n");
const STORED = ascii("STORED\r\n");
const EXISTS = ascii("EXISTS\r\n");
const NOT_FOUND = ascii("NOT_FOUND\r\n");
const NOT_STORED = ascii("NOT_STORED\r\n");
const DELETED = ascii("DELETED\r\n");
const TOUCHED = ascii("TOUCHED\r\n");
const OK = ascii("OK\r\n");
const END = ascii("END\r\n");
const VALUE = ascii("VALUE ");
const BAD_FORMAT = ascii("CLIENT_ERROR bad command line format\r\n");
const BAD_CHUNK = ascii("CLIENT_ERROR bad data chunk\r\n");
const TOO_LARGE = ascii("SERVER_ERROR object too large for cache\r\n");
const NO_MEMORY = ascii("SERVER_ERROR out of memory storing object\r\n");
const NO_MEMORY_READ = ascii("SERVER_ERROR Out of memory during read\r\n");
const OUT_OF_MEMORY = ascii("SERVER_ERROR out of memory\r\n");
const INVALID_EXPTIME = ascii("CLIENT_ERROR invalid exptime argument\r\n");
const INVALID_DELTA = ascii("CLIENT_ERROR invalid numeric delta argument\r\n");
const NON_NUMERIC = ascii("CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
const DELETE_USAGE = ascii("CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n");
const FLUSH_DISABLED = ascii("CLIENT_ERROR flush_all not allowed\r\n");
const VERSION_LINE = ascii(`VERSION ${VERSION}\r\n`);
const SHUTDOWN_DISABLED = ascii("ERROR: shutdown not enabled\r\n");
const SHUTDOWN_MODE = ascii("CLIENT_ERROR invalid shutdown mode\r\n");
const UNHANDLED = ascii("SERVER_ERROR Unhandled storage type.\r\n");

const W_GET = ascii("get");
const W_GETS = ascii("gets");
const W_GAT = ascii("gat");
const W_GATS = ascii("gats");
const W_SET = ascii("set");
const W_STATS = ascii("stats");
const W_SHUTDOWN = ascii("shutdown");
const W_SLABS = ascii("slabs");
const W_ADD = ascii("add");
const W_APPEND = ascii("append");
const W_CAS = ascii("cas");
const W_CACHE_MEMLIMIT = ascii("cache_memlimit");
const W_INCR = ascii("incr");
const W_DELETE = ascii("delete");
const W_DECR = ascii("decr");
const W_TOUCH = ascii("touch");
const W_REPLACE = ascii("replace");
const W_PREPEND = ascii("prepend");
const W_BGET = ascii("bget");
const W_FLUSH_ALL = ascii("flush_all");
const W_VERSION = ascii("version");
const W_QUIT = ascii("quit");
const W_LRU_CRAWLER = ascii("lru_crawler");
const W_WATCH = ascii("watch");
const W_VERBOSITY = ascii("verbosity");
const W_LRU = ascii("lru");
const W_NOREPLY = ascii("noreply");
const W_GRACEFUL = ascii("graceful");
const W_EXTSTORE = ascii("extstore");
const W_REFRESH_CERTS = ascii("refresh_certs");
/** What Debian's stock (built with TLS, none configured) answers to refresh_certs, noreply or not. */
const TLS_NOT_ENABLED = ascii("Error TLS not enabled\r\n");

/** Token `i` equals `word`. */
export function tokIs(s: Session, buf: Uint8Array, i: number, word: Uint8Array): boolean {
  const start = s.tokS[i]!;
  if (s.tokE[i]! - start !== word.length) return false;
  for (let k = 0; k < word.length; k++) if (buf[start + k] !== word[k]) return false;
  return true;
}

/** Token `i` as a Latin-1 string (slow path). */
export function tokStr(s: Session, buf: Uint8Array, i: number): string {
  let r = "";
  for (let k = s.tokS[i]!; k < s.tokE[i]!; k++) r += String.fromCharCode(buf[k]!);
  return r;
}

/** Length of token `i`. */
export function tokLen(s: Session, i: number): number {
  return s.tokE[i]! - s.tokS[i]!;
}

/** stock's set_noreply_maybe: the last real token is "noreply". */
export function setNoreplyMaybe(s: Session, buf: Uint8Array): boolean {
  const i = s.ntokens - 2;
  if (i >= 0 && tokIs(s, buf, i, W_NOREPLY)) s.noreply = true;
  return s.noreply;
}

/** Executes one tokenized text command (stock's process_command_ascii). */
export function processTextLine(s: Session, buf: Uint8Array): void {
  const nt = s.ntokens;
  if (nt < 2 || tokLen(s, 0) < 2) {
    s.reply(ERROR);
    return;
  }
  const first = buf[s.tokS[0]!]!;
  const len0 = tokLen(s, 0);
  if (first === 109 /* m */ && len0 === 2) {
    processMeta(s, buf, buf[s.tokS[0]! + 1]!);
  } else if (first === 103 /* g */) {
    if (nt < 3) return s.reply(ERROR);
    if (tokIs(s, buf, 0, W_GET)) processGet(s, buf, false, false);
    else if (tokIs(s, buf, 0, W_GETS)) processGet(s, buf, true, false);
    else if (tokIs(s, buf, 0, W_GAT)) processGet(s, buf, false, true);
    else if (tokIs(s, buf, 0, W_GATS)) processGet(s, buf, true, true);
    else s.reply(ERROR);
  } else if (first === 115 /* s */) {
    if (tokIs(s, buf, 0, W_SET)) {
      if (nt !== 6 && nt !== 7) return s.reply(ERROR);
      processUpdate(s, buf, Comm.SET, false);
    } else if (tokIs(s, buf, 0, W_STATS)) {
      processStats(s, buf);
    } else if (tokIs(s, buf, 0, W_SHUTDOWN)) {
      processShutdown(s, buf);
    } else if (tokIs(s, buf, 0, W_SLABS)) {
      processSlabs(s, buf);
    } else {
      s.reply(ERROR);
    }
  } else if (first === 97 /* a */) {
    const comm = tokIs(s, buf, 0, W_ADD) ? Comm.ADD : tokIs(s, buf, 0, W_APPEND) ? Comm.APPEND : 0;
    if (comm === 0) return s.reply(ERROR);
    if (nt !== 6 && nt !== 7) return s.reply(ERROR);
    processUpdate(s, buf, comm, false);
  } else if (first === 99 /* c */) {
    if (tokIs(s, buf, 0, W_CAS)) {
      if (nt !== 7 && nt !== 8) return s.reply(ERROR);
      processUpdate(s, buf, Comm.CAS, true);
    } else if (tokIs(s, buf, 0, W_CACHE_MEMLIMIT)) {
      if (nt !== 3 && nt !== 4) return s.reply(ERROR);
      processMemlimit(s, buf);
    } else {
      s.reply(ERROR);
    }
  } else if (first === 105 /* i */) {
    if (!tokIs(s, buf, 0, W_INCR)) return s.reply(ERROR);
    if (nt !== 4 && nt !== 5) return s.reply(ERROR);
    processArithmetic(s, buf, true);
  } else if (first === 100 /* d */) {
    if (tokIs(s, buf, 0, W_DELETE)) {
      if (nt < 3 || nt > 5) return s.reply(ERROR);
      processDelete(s, buf);
    } else if (tokIs(s, buf, 0, W_DECR)) {
      if (nt !== 4 && nt !== 5) return s.reply(ERROR);
      processArithmetic(s, buf, false);
    } else {
      s.reply(ERROR);
    }
  } else if (first === 116 /* t */) {
    if (!tokIs(s, buf, 0, W_TOUCH)) return s.reply(ERROR);
    if (nt !== 4 && nt !== 5) return s.reply(ERROR);
    processTouch(s, buf);
  } else if (tokIs(s, buf, 0, W_REPLACE) || tokIs(s, buf, 0, W_PREPEND)) {
    if (nt !== 6 && nt !== 7) return s.reply(ERROR);
    processUpdate(s, buf, tokIs(s, buf, 0, W_REPLACE) ? Comm.REPLACE : Comm.PREPEND, false);
  } else if (tokIs(s, buf, 0, W_BGET)) {
    if (nt < 3) return s.reply(ERROR);
    processGet(s, buf, false, false);
  } else if (tokIs(s, buf, 0, W_FLUSH_ALL)) {
    if (nt < 2 || nt > 4) return s.reply(ERROR);
    processFlushAll(s, buf);
  } else if (tokIs(s, buf, 0, W_VERSION)) {
    s.reply(VERSION_LINE);
  } else if (tokIs(s, buf, 0, W_QUIT)) {
    s.closeAfterWrite = true;
  } else if (tokIs(s, buf, 0, W_LRU_CRAWLER)) {
    processLruCrawler(s, buf);
  } else if (tokIs(s, buf, 0, W_WATCH)) {
    processWatch(s, buf);
  } else if (tokIs(s, buf, 0, W_VERBOSITY)) {
    if (nt !== 3 && nt !== 4) return s.reply(ERROR);
    processVerbosity(s, buf);
  } else if (tokIs(s, buf, 0, W_LRU)) {
    if (nt < 3) return s.reply(ERROR);
    processLru(s, buf);
  } else if (tokIs(s, buf, 0, W_EXTSTORE)) {
    // Debian's stock is built with extstore: the command exists (settings only, checked as there).
    if (nt < 3) return s.reply(ERROR);
    processExtstore(s, buf);
  } else if (tokIs(s, buf, 0, W_REFRESH_CERTS)) {
    // ... and with TLS: without certificates it answers this, whatever follows (write_and_free
    // ignores noreply).
    s.out.put(TLS_NOT_ENABLED);
  } else {
    const last = nt - 2;
    const p = s.tokS[last]!;
    if (tokLen(s, last) >= 5 && buf[p] === 72 && buf[p + 1] === 84 && buf[p + 2] === 84 && buf[p + 3] === 80 && buf[p + 4] === 47) {
      s.abort = true; // "HTTP/": stock drops the connection
    } else {
      s.reply(ERROR);
    }
  }
}

// ------------------------------------------------------------------------------ retrieval

/** Whether a key in `buf[p..end)` (space-separated) is longer than KEY_MAX_LENGTH. */
function longKeyIn(buf: Uint8Array, p: number, end: number): boolean {
  let k = p;
  for (; p < end; p++) {
    if (buf[p] !== 32) continue;
    if (p - k > KEY_MAX_LENGTH) return true;
    k = p + 1;
  }
  return end - k > KEY_MAX_LENGTH;
}

/** get, gets, gat, gats, bget (stock's process_get_command). */
function processGet(s: Session, buf: Uint8Array, returnCas: boolean, shouldTouch: boolean): void {
  let exptime = 0;
  let p = s.tokS[1]!;
  if (shouldTouch) {
    if (!parseI32(buf, s.tokS[1]!, s.tokE[1]!)) {
      s.reply(INVALID_EXPTIME);
      return;
    }
    exptime = s.engine.clock.realtime(parsed.num);
    p = s.tokE[1]!;
  }
  getKeys(s, buf, s.tokS[0]!, shouldTouch ? s.tokE[1]! : s.tokE[0]!, p, s.lineEnd, returnCas, shouldTouch, exptime);
}

/** The rest of a multiget a pause cut short (Session.resume). */
export function continueGet(s: Session, c: GetCont): void {
  getKeys(s, c.buf, c.cmdStart, c.cmdEnd, c.p, c.end, c.returnCas, c.touch, c.exptime);
}

/**
 * Answers the keys of `buf[p..end)` (a get's keys, from the first or, after a pause, the next),
 * then END. A pausable session stops after PAUSE_BYTES of answers (see Session.pauseGet).
 */
function getKeys(s: Session, buf: Uint8Array, cmdStart: number, cmdEnd: number, p: number, end: number, returnCas: boolean, shouldTouch: boolean, exptime: number): void {
  const engine = s.engine;
  const store = s.store;
  const stats = engine.stats;
  const out = s.out;
  const mark = out.pos;
  const mem = store.mem;
  const cs = store.classStats;
  // A too-long key further on fails the whole get (stock: CLIENT_ERROR, no values; the keys
  // before it are still looked up): its values are not rendered once that is known.
  let discard = false;
  /** The rest of the line was checked: no too-long key (a session that cannot pause). */
  let noLongKey = false;
  let done = 0;
  for (;;) {
    while (p < end && buf[p] === 32) p++;
    if (p >= end) break;
    if (out.pos + s.splicedLen > PAUSE_BYTES && !discard && !noLongKey && done > 0) {
      // Enough rendered for a client that may not be reading: the transport sends it, waits
      // for the peer, and resumes with the rest of the keys (see Session.pauseGet). A session
      // that cannot pause (a multiget part run for another shard) renders on, unless the line
      // fails anyway: then nothing more is rendered.
      if (longKeyIn(buf, p, end)) {
        discard = true;
        s.cutOut(mark);
      } else if (s.pausable) {
        s.pauseGet({ buf, cmdStart, cmdEnd, p, end, returnCas, touch: shouldTouch, exptime, routed: false });
        return;
      } else {
        noLongKey = true;
      }
    }
    const k = p;
    while (p < end && buf[p] !== 32) p++;
    const klen = p - k;
    if (klen > KEY_MAX_LENGTH) {
      // Stock releases every response since its last send point (conn_release_items), not just
      // this get's values.
      s.cutOut(Math.min(mark, s.keep));
      s.releaseHolds();
      // Answers of other shards opened after that point go too.
      if (s.holes.length > s.keepHoles) s.holes.length = s.keepHoles;
      s.reply(BAD_FORMAT);
      return;
    }
    done++;
    const hv = hashKey(buf, k, klen);
    const ref = store.get(buf, k, klen, hv, true);
    if (engine.settings.detailEnabled) engine.prefixStats.recordGet(buf, k, klen, delimiter(s), ref !== NIL);
    if (ref !== NIL) {
      if (shouldTouch) store.setExptime(ref, exptime);
      const nb = store.nbytes(ref);
      if (!discard) {
        out.put(VALUE);
        out.copy(buf, k, klen);
        out.byte(32);
        out.uint(store.flags(ref));
        out.byte(32);
        out.uint(nb - 2);
        if (returnCas) {
          out.byte(32);
          out.uint(store.cas(ref));
        }
        out.crlf();
        // A large value goes out from the item's memory, not copied (see Session.spliceItem).
        if (nb < ITEM_SPLICE_MIN || !s.spliceItem(ref, nb)) out.copy(mem, store.valueOffset(ref), nb);
      }
      const cls = store.clsid(ref);
      if (shouldTouch) {
        stats.touch_cmds++;
        cs[cls * CS.COUNT + CS.TOUCH_HITS]!++;
      } else {
        stats.get_cmds++;
        cs[cls * CS.COUNT + CS.GET_HITS]!++;
      }
    } else if (shouldTouch) {
      stats.touch_cmds++;
      stats.touch_misses++;
    } else {
      stats.get_misses++;
      stats.get_cmds++;
    }
  }
  out.put(END);
  s.flushPoint(); // stock transmits after every get (conn_mwrite)
}

// ------------------------------------------------------------------------------ storage

/** set, add, replace, append, prepend, cas (stock's process_update_command). */
function processUpdate(s: Session, buf: Uint8Array, comm: Comm, handleCas: boolean): void {
  setNoreplyMaybe(s, buf);
  const klen = tokLen(s, 1);
  if (klen > KEY_MAX_LENGTH) return s.reply(BAD_FORMAT);
  if (!parseU32(buf, s.tokS[2]!, s.tokE[2]!)) return s.reply(BAD_FORMAT);
  const flags = parsed.num;
  if (!parseI32(buf, s.tokS[3]!, s.tokE[3]!)) return s.reply(BAD_FORMAT);
  const exptimeInt = parsed.num;
  if (!parseI32(buf, s.tokS[4]!, s.tokE[4]!)) return s.reply(BAD_FORMAT);
  let vlen = parsed.num;
  const exptime = s.engine.clock.realtime(exptimeInt);
  let reqCas = 0;
  if (handleCas) {
    if (!parseU64(buf, s.tokS[5]!, s.tokE[5]!)) return s.reply(BAD_FORMAT);
    reqCas = parsed.num;
  }
  if (vlen < 0 || vlen > INT_MAX - 2) return s.reply(BAD_FORMAT);
  vlen += 2;
  const store = s.store;
  const k = s.tokS[1]!;
  if (s.engine.settings.detailEnabled) s.engine.prefixStats.recordSet(buf, k, klen, delimiter(s));
  const hv = hashKey(buf, k, klen);
  const ref = store.alloc(buf, k, klen, flags, exptime, vlen);
  if (ref === NIL) {
    if (store.allocError === AllocError.NO_MEMORY_READ) {
      // Stock fails while reading such a value: the old one stays.
      s.reply(NO_MEMORY_READ);
      s.swallow(vlen);
      return;
    }
    if (store.allocError === AllocError.TOO_LARGE) {
      s.reply(TOO_LARGE);
      s.engine.stats.store_too_large++;
    } else {
      s.reply(NO_MEMORY);
      s.engine.stats.store_no_memory++;
    }
    s.swallow(vlen);
    // A failed set must not leave the old value visible.
    if (comm === Comm.SET) {
      const old = store.get(buf, k, klen, hv, false);
      if (old !== NIL) store.unlink(old);
    }
    return;
  }
  s.startNread(ref, NreadKind.TEXT_STORE, comm, hv, reqCas, vlen);
}

/** Value received for a text or meta storage command (stock's complete_nread_ascii). */
export function completeTextNread(s: Session): void {
  const store = s.store;
  const ref = s.item;
  s.item = NIL;
  store.classStats[store.clsid(ref) * CS.COUNT + CS.SET_CMDS]!++;
  const end = store.valueOffset(ref) + store.nbytes(ref);
  const meta = s.nreadKind === NreadKind.META_SET;
  if (store.mem[end - 2] !== 13 || store.mem[end - 1] !== 10) {
    store.freePending(ref);
    if (meta) s.noreply = false;
    s.reply(BAD_CHUNK);
    return;
  }
  const comm = s.nreadComm;
  const ret = store.storeItem(ref, comm, s.nreadHash, s.nreadCas, s.setStale);
  s.setStale = false;
  if (ret === StoreResult.NOT_FOUND && comm === Comm.CAS) s.engine.stats.cas_misses++;
  if (meta) {
    finalizeMetaSet(s, ret);
    return;
  }
  switch (ret) {
    case StoreResult.STORED:
      return s.reply(STORED);
    case StoreResult.EXISTS:
      return s.reply(EXISTS);
    case StoreResult.NOT_FOUND:
      return s.reply(NOT_FOUND);
    case StoreResult.NOT_STORED:
      return s.reply(NOT_STORED);
    default:
      return s.reply(UNHANDLED);
  }
}

// ------------------------------------------------------------------------------ others

/** touch <key> <exptime> [noreply] */
function processTouch(s: Session, buf: Uint8Array): void {
  setNoreplyMaybe(s, buf);
  const klen = tokLen(s, 1);
  if (klen > KEY_MAX_LENGTH) return s.reply(BAD_FORMAT);
  if (!parseI32(buf, s.tokS[2]!, s.tokE[2]!)) return s.reply(INVALID_EXPTIME);
  const exptime = s.engine.clock.realtime(parsed.num);
  const store = s.store;
  const k = s.tokS[1]!;
  const ref = store.get(buf, k, klen, hashKey(buf, k, klen), true);
  s.engine.stats.touch_cmds++;
  if (ref !== NIL) {
    store.setExptime(ref, exptime);
    store.classStats[store.clsid(ref) * CS.COUNT + CS.TOUCH_HITS]!++;
    s.reply(TOUCHED);
  } else {
    s.engine.stats.touch_misses++;
    s.reply(NOT_FOUND);
  }
}

/** incr/decr <key> <delta> [noreply] */
function processArithmetic(s: Session, buf: Uint8Array, incr: boolean): void {
  setNoreplyMaybe(s, buf);
  const klen = tokLen(s, 1);
  if (klen > KEY_MAX_LENGTH) return s.reply(BAD_FORMAT);
  if (!parseU64(buf, s.tokS[2]!, s.tokE[2]!)) return s.reply(INVALID_DELTA);
  const delta = parsed.big;
  const k = s.tokS[1]!;
  const store = s.store;
  switch (store.addDelta(buf, k, klen, hashKey(buf, k, klen), incr, delta, 0)) {
    case DeltaResult.OK:
      return s.replyString(store.deltaValue);
    case DeltaResult.NON_NUMERIC:
      return s.reply(NON_NUMERIC);
    case DeltaResult.EOM:
      return s.reply(OUT_OF_MEMORY);
    case DeltaResult.NOT_FOUND:
      if (incr) s.engine.stats.incr_misses++;
      else s.engine.stats.decr_misses++;
      return s.reply(NOT_FOUND);
    default:
      return;
  }
}

/** delete <key> [0] [noreply] */
function processDelete(s: Session, buf: Uint8Array): void {
  const nt = s.ntokens;
  if (nt > 3) {
    const holdIsZero = tokLen(s, 2) === 1 && buf[s.tokS[2]!] === 48;
    const setsNoreply = setNoreplyMaybe(s, buf);
    const valid = (nt === 4 && (holdIsZero || setsNoreply)) || (nt === 5 && holdIsZero && setsNoreply);
    if (!valid) return s.reply(DELETE_USAGE);
  }
  const klen = tokLen(s, 1);
  if (klen > KEY_MAX_LENGTH) return s.reply(BAD_FORMAT);
  const store = s.store;
  const k = s.tokS[1]!;
  if (s.engine.settings.detailEnabled) s.engine.prefixStats.recordDelete(buf, k, klen, delimiter(s));
  const ref = store.get(buf, k, klen, hashKey(buf, k, klen), false);
  if (ref !== NIL) {
    store.classStats[store.clsid(ref) * CS.COUNT + CS.DELETE_HITS]!++;
    store.unlink(ref);
    s.reply(DELETED);
  } else {
    s.engine.stats.delete_misses++;
    s.reply(NOT_FOUND);
  }
}

/** verbosity <level> [noreply] */
function processVerbosity(s: Session, buf: Uint8Array): void {
  setNoreplyMaybe(s, buf);
  if (!parseU32(buf, s.tokS[1]!, s.tokE[1]!)) return s.reply(BAD_FORMAT);
  s.engine.settings.verbose = Math.min(parsed.num, 2);
  s.reply(OK);
}

/** flush_all [delay] [noreply] */
function processFlushAll(s: Session, buf: Uint8Array): void {
  setNoreplyMaybe(s, buf);
  if (!s.silent) s.engine.stats.flush_cmds++;
  if (!s.engine.settings.flushEnabled) return s.reply(FLUSH_DISABLED);
  let exptime = 0;
  if (s.ntokens !== (s.noreply ? 3 : 2)) {
    if (!parseI32(buf, s.tokS[1]!, s.tokE[1]!)) return s.reply(INVALID_EXPTIME);
    exptime = parsed.num;
  }
  s.store.flush(exptime);
  s.engine.onFlush?.(exptime);
  s.reply(OK);
}

/** cache_memlimit <megabytes> [noreply] */
function processMemlimit(s: Session, buf: Uint8Array): void {
  setNoreplyMaybe(s, buf);
  if (!parseU32(buf, s.tokS[1]!, s.tokE[1]!)) return s.reply(ERROR);
  const mb = parsed.num;
  if (mb < 8) return s.replyString("MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m");
  if (mb > 1000000000) return s.replyString("MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes");
  if (!s.engine.adjustMemLimit(mb * 1024 * 1024)) {
    return s.replyString("MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust");
  }
  s.reply(OK);
}

/** shutdown [graceful], when enabled by -A. */
function processShutdown(s: Session, buf: Uint8Array): void {
  if (!s.engine.settings.shutdownCommand) return s.reply(SHUTDOWN_DISABLED);
  if (s.ntokens === 2) {
    s.abort = true;
    s.engine.onShutdown?.(false);
  } else if (s.ntokens === 3 && tokIs(s, buf, 1, W_GRACEFUL)) {
    s.abort = true;
    s.engine.onShutdown?.(true);
  } else {
    s.reply(SHUTDOWN_MODE);
  }
}

/** slabs reassign <src> <dst> | slabs automove <0|1|2> | slabs automove ratio <r> */
function processSlabs(s: Session, buf: Uint8Array): void {
  const nt = s.ntokens;
  if (nt === 5 && tokStr(s, buf, 1) === "reassign") {
    if (!s.engine.settings.slabReassign) return s.replyString("CLIENT_ERROR slab reassignment disabled");
    if (!parseI32(buf, s.tokS[2]!, s.tokE[2]!)) return s.reply(BAD_FORMAT);
    const src = parsed.num;
    if (!parseI32(buf, s.tokS[3]!, s.tokE[3]!)) return s.reply(BAD_FORMAT);
    const dst = parsed.num;
    switch (s.store.reassign(src, dst)) {
      case "ok":
        return s.reply(OK);
      case "badclass":
        return s.replyString("BADCLASS invalid src or dst class id");
      case "nospare":
        return s.replyString("NOSPARE source class has no spare pages");
      case "same":
        return s.replyString("SAME src and dst class are identical");
      case "busy":
        return s.replyString("BUSY currently processing reassign request");
    }
  } else if (nt >= 4 && tokStr(s, buf, 1) === "automove") {
    setNoreplyMaybe(s, buf);
    if (tokStr(s, buf, 2) === "ratio") {
      const ratio = nt < 5 ? undefined : parseDouble(buf, s.tokS[3]!, s.tokE[3]!);
      if (ratio === undefined) return s.reply(ERROR);
      // Only shown (stats settings, "%.2f"): there is no automover to tune here.
      s.engine.settings.slabAutomoveRatio = formatParsedFixed2(ratio);
      return s.reply(OK);
    }
    if (!parseU32(buf, s.tokS[2]!, s.tokE[2]!)) return s.reply(BAD_FORMAT);
    const level = parsed.num;
    if (level > 2) return s.reply(ERROR);
    s.engine.settings.slabAutomove = level;
    return s.reply(OK);
  } else {
    s.reply(ERROR);
  }
}

/**
 * Whether the line (tokenized) is an `lru_crawler metadump` that stock starts: it then hands
 * the connection to its crawler thread, which gives it back waiting for new input, so what
 * followed the command in the same read waits until more arrives (Session.stalled).
 */
export function metadumpStarts(s: Session, buf: Uint8Array): boolean {
  if (s.ntokens !== 4 || !tokIs(s, buf, 0, W_LRU_CRAWLER) || tokStr(s, buf, 1) !== "metadump") return false;
  const settings = s.engine.settings;
  const spec = tokStr(s, buf, 2);
  return settings.lruCrawler && settings.dumpEnabled && !s.othersPending && parseClassList(spec, s.store.large) !== null && !noClassIds(spec);
}

/** A class list of no ids ("", ",", ",,"): stock's strtok finds nothing to crawl. */
function noClassIds(spec: string): boolean {
  return spec !== "all" && spec !== "hash" && spec.split(",").every((p) => p === "");
}

/** lru_crawler crawl|metadump|tocrawl|sleep|enable|disable */
function processLruCrawler(s: Session, buf: Uint8Array): void {
  const nt = s.ntokens;
  const settings = s.engine.settings;
  const sub = nt >= 3 ? tokStr(s, buf, 1) : "";
  if (nt === 4 && (sub === "crawl" || sub === "metadump")) {
    if (!settings.lruCrawler) return s.replyString("CLIENT_ERROR lru crawler disabled");
    if (sub === "metadump" && !settings.dumpEnabled) return s.replyString("ERROR metadump not allowed");
    if (sub === "metadump" && s.othersPending) return s.replyString("ERROR cannot pipeline other commands before metadump");
    const spec = tokStr(s, buf, 2);
    const classes = parseClassList(spec, s.store.large);
    if (classes === null) return s.replyString("BADCLASS invalid class id");
    // A list without a class id (",") starts no crawler in stock.
    if (noClassIds(spec)) return s.replyString("NOTSTARTED no items to crawl");
    if (sub === "crawl") {
      // Stock walks the hash table for metadump only: lru_crawler_start fails (-2) for a crawl.
      if (spec === "hash") return s.replyString("ERROR an unknown error happened");
      for (const c of classes) s.store.crawlClassNow(c);
      s.store.crawlerStarts++;
      return s.reply(OK);
    }
    metadump(s, classes, spec === "hash");
    return;
  }
  if (nt === 4 && (sub === "tocrawl" || sub === "sleep")) {
    if (!parseU32(buf, s.tokS[2]!, s.tokE[2]!)) return s.reply(BAD_FORMAT);
    if (sub === "sleep" && parsed.num > 1000000) return s.replyString("CLIENT_ERROR sleep must be one second or less");
    return s.reply(OK);
  }
  if (nt === 3) {
    if (sub === "enable") {
      // Stock starts its crawler thread here, and fails when one runs already.
      if (settings.lruCrawler) return s.replyString("ERROR failed to start lru crawler thread");
      settings.lruCrawler = true;
      return s.reply(OK);
    }
    if (sub === "disable") {
      settings.lruCrawler = false;
      return s.reply(OK);
    }
  }
  s.reply(ERROR);
}

/** "all", "hash" or a comma-separated list of class ids; null if an id is bad. */
function parseClassList(spec: string, large: number): number[] | null {
  const all: number[] = [];
  if (spec === "all" || spec === "hash") {
    for (let c = 1; c <= large; c++) all.push(c);
    return all;
  }
  for (const part of spec.split(",")) {
    if (part === "") continue;
    const bytes = ascii(part);
    if (!parseU32(bytes, 0, bytes.length) || parsed.num < 1 || parsed.num >= 64) return null;
    if (parsed.num <= large) all.push(parsed.num);
  }
  return all;
}

/**
 * lru_crawler metadump: one line per live item, URI-encoded keys, then END, in the order
 * stock's crawler visits them: `hash` walks the hash table bucket by bucket (the same buckets
 * as stock's: murmur3's low bits); a class list crawls every class's LRU from its tail, one
 * item of each class in turn (class ids ascending), as stock's crawler thread takes one item
 * per LRU per pass.
 */
function metadump(s: Session, classes: number[], hash: boolean): void {
  const store = s.store;
  if (hash) {
    for (const ref of store.hashItems()) metadumpLine(s, ref);
  } else {
    const walks = [...new Set(classes)].sort((a, b) => a - b).map((c) => store.lruItemsFromTail(c));
    while (walks.length > 0) {
      for (let i = 0; i < walks.length; ) {
        const next = walks[i]!.next();
        if (next.done) {
          walks.splice(i, 1);
          continue;
        }
        metadumpLine(s, next.value);
        i++;
      }
    }
  }
  s.out.put(END);
}

const MD_KEY = ascii("key=");
const MD_EXP = ascii(" exp=");
const MD_LA = ascii(" la=");
const MD_CAS = ascii(" cas=");
const MD_FETCHED = ascii(" fetch=yes cls=");
const MD_NOT_FETCHED = ascii(" fetch=no cls=");
const MD_SIZE = ascii(" size=");
const HEX_UPPER = ascii("0123456789ABCDEF");
/** Key bytes a metadump shows as they are (RFC 3986 unreserved); the others become %XX. */
const URI_PLAIN = (() => {
  const t = new Uint8Array(256);
  for (const c of ascii("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-")) t[c] = 1;
  return t;
})();

/** One item's metadump line, written as bytes (a dump of 400k items took ~0.7 s as strings). */
function metadumpLine(s: Session, ref: number): void {
  const store = s.store;
  const exp = store.exptime(ref);
  if ((exp !== 0 && exp < store.clock.now) || store.isFlushed(ref)) return;
  const started = store.clock.processStarted;
  const out = s.out;
  out.put(MD_KEY);
  const nk = store.nkey(ref);
  const ko = store.keyOffset(ref);
  const mem = store.mem;
  out.ensure(nk * 3);
  const buf = out.buf;
  let p = out.pos;
  for (let i = 0; i < nk; i++) {
    const c = mem[ko + i]!;
    if (URI_PLAIN[c] === 1) {
      buf[p++] = c;
    } else {
      buf[p++] = 37; // %
      buf[p++] = HEX_UPPER[c >> 4]!;
      buf[p++] = HEX_UPPER[c & 15]!;
    }
  }
  out.pos = p;
  out.put(MD_EXP);
  out.int(exp === 0 ? -1 : exp + started);
  out.put(MD_LA);
  out.int(store.time(ref) + started);
  out.put(MD_CAS);
  out.uint(store.cas(ref));
  out.put(store.itFlags(ref) & 8 ? MD_FETCHED : MD_NOT_FETCHED);
  out.uint(store.clsid(ref));
  out.put(MD_SIZE);
  out.uint(store.ntotal(ref));
  out.byte(10);
}

/** watch [rawcmds|evictions|fetchers|mutations|sysevents|connevents]: log streams. */
function processWatch(s: Session, buf: Uint8Array): void {
  setNoreplyMaybe(s, buf);
  if (s.othersPending) return s.replyString("ERROR cannot pipeline other commands before watch");
  const known = new Set(["rawcmds", "evictions", "fetchers", "mutations", "sysevents", "connevents", "proxyreqs", "proxyevents", "proxyuser"]);
  for (let i = 1; i < s.ntokens - 1; i++) {
    if (!known.has(tokStr(s, buf, i))) return s.reply(ERROR);
  }
  // Shoal's memcached keeps no log stream: the watcher is accepted and sees no events; as in
  // stock, the connection is a log stream from now on and its input is not read.
  s.reply(OK);
  s.watching = true;
}

/** lru tune|mode|temp_ttl (settings only; the LRU here has one policy). */
function processLru(s: Session, buf: Uint8Array): void {
  setNoreplyMaybe(s, buf);
  const nt = s.ntokens;
  const sub = tokStr(s, buf, 1);
  if (sub === "tune" && nt >= 7) {
    // Percentages as safe_strtoul (uint32, summed in uint32), factors as safe_strtod (inf and
    // nan pass: only <= 0 is refused).
    if (!parseU32(buf, s.tokS[2]!, s.tokE[2]!)) return s.reply(ERROR);
    const hot = parsed.num;
    if (!parseU32(buf, s.tokS[3]!, s.tokE[3]!)) return s.reply(ERROR);
    const warm = parsed.num;
    const hf = parseDouble(buf, s.tokS[4]!, s.tokE[4]!);
    const wf = parseDouble(buf, s.tokS[5]!, s.tokE[5]!);
    if (hf === undefined || wf === undefined) return s.reply(ERROR);
    if ((hot + warm) % 4294967296 > 80) return s.replyString("ERROR hot and warm pcts must not exceed 80");
    if (wf <= 0 || hf <= 0) return s.replyString("ERROR hot/warm age factors must be greater than 0");
    return s.reply(OK);
  }
  if (sub === "mode" && nt >= 4) {
    const mode = tokStr(s, buf, 2);
    return s.reply(mode === "flat" || mode === "segmented" ? OK : ERROR);
  }
  if (sub === "temp_ttl" && nt >= 4) {
    if (!parseI32(buf, s.tokS[2]!, s.tokE[2]!)) return s.reply(ERROR);
    return s.reply(OK);
  }
  s.reply(ERROR);
}

/** Subcommands of `extstore` that take one unsigned number (stock's process_extstore_command). */
const EXTSTORE_U32 = new Set(["item_size", "item_age", "low_ttl", "recache_rate", "compact_under", "drop_under", "max_sleep", "drop_unread"]);

/** extstore <setting> <value> [noreply]: stock's answers (the ext_* settings have no effect here). */
function processExtstore(s: Session, buf: Uint8Array): void {
  setNoreplyMaybe(s, buf);
  const nt = s.ntokens;
  let ok = false;
  if (nt >= 4) {
    const sub = tokStr(s, buf, 1);
    if (sub === "free_memchunks" && nt > 4) {
      // Deprecated and ignored, but checked: a class id below MAX_NUMBER_OF_SLAB_CLASSES (64).
      ok = parseU32(buf, s.tokS[2]!, s.tokE[2]!) && parsed.num < 64 && parseU32(buf, s.tokS[3]!, s.tokE[3]!);
    } else if (sub === "max_frag") {
      ok = parseDouble(buf, s.tokS[2]!, s.tokE[2]!) !== undefined;
    } else if (EXTSTORE_U32.has(sub)) {
      ok = parseU32(buf, s.tokS[2]!, s.tokE[2]!);
    }
  }
  s.reply(ok ? OK : ERROR);
}

/** The -D prefix delimiter as a byte. */
export function delimiter(s: Session): number {
  return s.engine.settings.prefixDelimiter.charCodeAt(0);
}
