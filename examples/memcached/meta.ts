/**
 * The meta commands (mg, ms, md, ma, me, mn) as stock memcached 1.6.18 implements them in
 * proto_text.c, flag by flag: the same flag checks, return-flag order (request order), error
 * strings and quirks (for example: `q` hides HD on success but not NF/EX/NS; `ma` with `T`
 * does not touch an item that incr had to reallocate).
 */
import { ascii } from "./out.ts";
import { parsed, parseI32, parseU32, parseU64 } from "./numbers.ts";
import { murmur3 as hashKey } from "./hash.ts";
import { NIL, Comm, CS, StoreResult, AllocError, DeltaResult, F_FETCHED, F_KEY_BINARY, F_STALE, F_TOKEN_SENT } from "./store.ts";
import { type Session, ITEM_SPLICE_MIN, NreadKind } from "./session.ts";
import { KEY_MAX_LENGTH, tokLen } from "./text.ts";
import { base64Decode, base64Encode } from "./base64.ts";

const ERROR = ascii("ERROR\r\n");
const BAD_FORMAT = ascii("CLIENT_ERROR bad command line format\r\n");
const MN = ascii("MN\r\n");
const EN = ascii("EN\r\n");

/** Most tokens a meta command may have (stock's MFLAG_MAX_OPT_LENGTH). */
const MFLAG_MAX_OPT_LENGTH = 20;
/** Longest opaque token (stock's MFLAG_MAX_OPAQUE_LENGTH). */
const MFLAG_MAX_OPAQUE_LENGTH = 32;
const INT_MAX = 2147483647;

/** Parsed meta flags (stock's struct _meta_flags). */
class MetaFlags {
  noUpdate = false;
  locked = false;
  vivify = false;
  la = false;
  value = false;
  setStale = false;
  noReply = false;
  hasCas = false;
  newTtl = false;
  keyBinary = false;
  mode = 0;
  exptime = 0;
  autovivExptime = 0;
  recacheTime = 0;
  clientFlags = 0;
  reqCas = 0;
  delta = 1n;
  initial = 0n;
  errstr = "CLIENT_ERROR bad command line format";

  reset(): void {
    this.noUpdate = this.locked = this.vivify = this.la = this.value = false;
    this.setStale = this.noReply = this.hasCas = this.newTtl = this.keyBinary = false;
    this.mode = this.exptime = this.autovivExptime = this.recacheTime = this.clientFlags = this.reqCas = 0;
    this.delta = 1n;
    this.initial = 0n;
    this.errstr = "CLIENT_ERROR bad command line format";
  }
}

const of = new MetaFlags();
const seen = new Uint8Array(128);

/** The key a meta command works on: the token, or its base64 decoding (flag b). */
let keyBuf: Uint8Array = new Uint8Array(0);
let keyOff = 0;
let keyLen = 0;
const keyScratch = new Uint8Array(256);

/** Runs mg/ms/md/ma/me/mn; `second` is the command's second letter. */
export function processMeta(s: Session, buf: Uint8Array, second: number): void {
  switch (second) {
    case 103: // g
      return processMget(s, buf);
    case 115: // s
      return processMset(s, buf);
    case 100: // d
      return processMdelete(s, buf);
    case 110: // n
      s.reply(MN);
      s.flushPoint();
      return;
    case 97: // a
      return processMarithmetic(s, buf);
    case 101: // e
      return processMe(s, buf);
    default:
      s.reply(ERROR);
  }
}

/** stock's _meta_flag_preparse: validates flags from token `start`; false on error (of.errstr says why). */
function preparse(s: Session, buf: Uint8Array, start: number): boolean {
  of.reset();
  seen.fill(0);
  keyBuf = buf;
  keyOff = s.tokS[1]!;
  keyLen = tokLen(s, 1);
  const clock = s.engine.clock;
  let hasError = false;
  for (let i = start; i < s.ntokens - 1; i++) {
    const t = s.tokS[i]!;
    const e = s.tokE[i]!;
    const o = buf[t]!;
    if (o >= 127 || seen[o] !== 0) {
      of.errstr = "CLIENT_ERROR duplicate flag";
      return false;
    }
    seen[o] = 1;
    switch (o) {
      case 98: { // b
        const n = base64Decode(buf, s.tokS[1]!, tokLen(s, 1), keyScratch);
        if (n === 0) {
          of.errstr = "CLIENT_ERROR error decoding key";
          hasError = true;
        }
        keyBuf = keyScratch;
        keyOff = 0;
        keyLen = n;
        of.keyBinary = true;
        break;
      }
      case 78: // N
        of.locked = true;
        of.vivify = true;
        if (!parseI32(buf, t + 1, e)) {
          of.errstr = "CLIENT_ERROR bad token in command line format";
          hasError = true;
        } else {
          of.autovivExptime = clock.realtime(parsed.num);
        }
        break;
      case 84: // T
        of.locked = true;
        if (!parseI32(buf, t + 1, e)) {
          of.errstr = "CLIENT_ERROR bad token in command line format";
          hasError = true;
        } else {
          of.exptime = clock.realtime(parsed.num);
          of.newTtl = true;
        }
        break;
      case 82: // R
        of.locked = true;
        if (!parseI32(buf, t + 1, e)) {
          of.errstr = "CLIENT_ERROR bad token in command line format";
          hasError = true;
        } else {
          of.recacheTime = clock.realtime(parsed.num);
        }
        break;
      case 108: // l
        of.la = true;
        of.locked = true;
        break;
      case 79: // O
      case 80: // P
      case 76: // L
      case 107: // k
      case 115: // s
      case 116: // t
      case 99: // c
      case 102: // f
        break;
      case 118: // v
        of.value = true;
        break;
      case 104: // h
        of.locked = true;
        break;
      case 117: // u
        of.noUpdate = true;
        break;
      case 113: // q
        of.noReply = true;
        break;
      case 70: // F
        if (!parseU32(buf, t + 1, e)) hasError = true;
        else of.clientFlags = parsed.num;
        break;
      case 67: // C
        if (!parseU64(buf, t + 1, e)) {
          of.errstr = "CLIENT_ERROR bad token in command line format";
          hasError = true;
        } else {
          of.reqCas = parsed.num;
          of.hasCas = true;
        }
        break;
      case 77: // M
        if (e - t !== 2) {
          of.errstr = "CLIENT_ERROR incorrect length for M token";
          hasError = true;
        } else {
          of.mode = buf[t + 1]!;
        }
        break;
      case 74: // J
        if (!parseU64(buf, t + 1, e)) {
          of.errstr = "CLIENT_ERROR invalid numeric initial value";
          hasError = true;
        } else {
          of.initial = parsed.big;
        }
        break;
      case 68: // D
        if (!parseU64(buf, t + 1, e)) {
          of.errstr = "CLIENT_ERROR invalid numeric delta value";
          hasError = true;
        } else {
          of.delta = parsed.big;
        }
        break;
      case 73: // I
        of.setStale = true;
        break;
      default:
        of.errstr = "CLIENT_ERROR invalid flag";
        return false;
    }
  }
  return !hasError;
}

/** Appends " k<key>" (base64 and " b" for binary keys). */
function metaKey(s: Session, src: Uint8Array, off: number, len: number, binary: boolean): void {
  const out = s.out;
  out.byte(32);
  out.byte(107);
  if (!binary) {
    out.copy(src, off, len);
  } else {
    out.str(base64Encode(src, off, len));
    out.byte(32);
    out.byte(98);
  }
}

/** Appends " <opaque token>"; false if it is too long (the caller fails the command). */
function metaOpaque(s: Session, buf: Uint8Array, i: number): boolean {
  const len = tokLen(s, i);
  if (len > MFLAG_MAX_OPAQUE_LENGTH) return false;
  s.out.byte(32);
  s.out.copy(buf, s.tokS[i]!, len);
  return true;
}

function errorOut(s: Session, mark: number, msg: string): void {
  s.out.truncate(mark);
  s.noreply = false;
  s.out.str(msg);
  s.out.crlf();
}

// ------------------------------------------------------------------------------ mg

function processMget(s: Session, buf: Uint8Array): void {
  const nt = s.ntokens;
  if (nt < 3) return s.reply(ERROR);
  if (tokLen(s, 1) > KEY_MAX_LENGTH) return s.replyError(BAD_FORMAT);
  if (nt > MFLAG_MAX_OPT_LENGTH) return errorOut(s, s.out.pos, "CLIENT_ERROR options flags are too long");
  if (!preparse(s, buf, 2)) return errorOut(s, s.out.pos, of.errstr);
  s.noreply = of.noReply;
  const store = s.store;
  const stats = s.engine.stats;
  const now = s.engine.clock.now;
  const out = s.out;
  const mark = out.pos;
  const hv = hashKey(keyBuf, keyOff, keyLen);
  let ref = store.get(keyBuf, keyOff, keyLen, hv, !of.locked && !of.noUpdate);
  let created = false;
  let won = false;
  let ttlSet = false;
  if (ref === NIL && of.vivify) {
    ref = store.alloc(keyBuf, keyOff, keyLen, 0, 0, 2);
    if (ref !== NIL) {
      const v = store.valueOffset(ref);
      store.mem[v] = 13;
      store.mem[v + 1] = 10;
      store.link(ref, hv);
      created = true;
    }
  }
  if (ref !== NIL) {
    const nb = store.nbytes(ref);
    if (of.value) {
      out.str("VA ");
      out.uint(nb - 2);
    } else {
      out.str("HD");
    }
    for (let i = 2; i < nt - 1; i++) {
      switch (buf[s.tokS[i]!]) {
        case 84: // T
          ttlSet = true;
          store.setExptime(ref, of.exptime);
          break;
        case 78: // N
          if (created) {
            store.setExptime(ref, of.autovivExptime);
            won = true;
          }
          break;
        case 82: { // R
          const exp = store.exptime(ref);
          if ((store.itFlags(ref) & F_TOKEN_SENT) === 0 && !created && exp !== 0 && exp < of.recacheTime) won = true;
          break;
        }
        case 115: // s
          out.str(" s");
          out.uint(nb - 2);
          break;
        case 116: { // t
          out.str(" t");
          const exp = store.exptime(ref);
          if (exp === 0) out.str("-1");
          else out.uint((exp - now) >>> 0);
          break;
        }
        case 99: // c
          out.str(" c");
          out.uint(store.cas(ref));
          break;
        case 102: // f
          out.str(" f");
          out.uint(store.flags(ref));
          break;
        case 108: // l
          out.str(" l");
          out.uint((now - store.time(ref)) >>> 0);
          break;
        case 104: // h
          out.str((store.itFlags(ref) & F_FETCHED) !== 0 ? " h1" : " h0");
          break;
        case 79: // O
          if (!metaOpaque(s, buf, i)) return errorOut(s, mark, "CLIENT_ERROR opaque token too long");
          break;
        case 107: // k
          metaKey(s, store.mem, store.keyOffset(ref), store.nkey(ref), (store.itFlags(ref) & F_KEY_BINARY) !== 0);
          break;
      }
    }
    let f = store.itFlags(ref);
    if (f & F_TOKEN_SENT) out.str(" Z");
    if (f & F_STALE) {
      out.str(" X");
      if ((f & F_TOKEN_SENT) === 0) won = true;
    }
    if (won) {
      out.str(" W");
      f |= F_TOKEN_SENT;
      store.setItFlags(ref, f);
    }
    out.crlf();
    // A large value goes out from the item's memory, not copied (see Session.spliceItem).
    if (of.value && (nb < ITEM_SPLICE_MIN || !s.spliceItem(ref, nb))) out.copy(store.mem, store.valueOffset(ref), nb);
    // Stock holds the item until the reply is sent, value or not ("because of the key").
    s.hold(ref);
    if (of.locked && !of.noUpdate) store.bump(ref);
    const cls = store.clsid(ref) * CS.COUNT;
    if (ttlSet) {
      stats.touch_cmds++;
      store.classStats[cls + CS.TOUCH_HITS]!++;
    } else {
      store.classStats[cls + CS.GET_HITS]!++;
      stats.get_cmds++;
    }
    return;
  }
  stats.get_misses++;
  stats.get_cmds++;
  out.str("EN");
  for (let i = 2; i < nt - 1; i++) {
    const c = buf[s.tokS[i]!];
    if (c === 79) {
      if (!metaOpaque(s, buf, i)) return errorOut(s, mark, "CLIENT_ERROR opaque token too long");
    } else if (c === 107) {
      metaKey(s, keyBuf, keyOff, keyLen, of.keyBinary);
    }
  }
  out.crlf();
  if (s.noreply) out.truncate(mark);
}

// ------------------------------------------------------------------------------ ms

function processMset(s: Session, buf: Uint8Array): void {
  const nt = s.ntokens;
  if (nt < 3) return s.reply(ERROR);
  const mark = s.out.pos;
  if (tokLen(s, 1) > KEY_MAX_LENGTH) return s.replyError(BAD_FORMAT);
  if (nt === 3) return s.replyError(BAD_FORMAT);
  if (nt > MFLAG_MAX_OPT_LENGTH) return errorOut(s, mark, "CLIENT_ERROR options flags too long");
  if (!parseI32(buf, s.tokS[2]!, s.tokE[2]!)) return s.replyError(BAD_FORMAT);
  let vlen = parsed.num;
  if (vlen < 0 || vlen > INT_MAX - 2) return s.replyError(BAD_FORMAT);
  vlen += 2;
  const fail = (msg: string): void => {
    errorOut(s, mark, msg);
    s.swallow(vlen);
  };
  if (!preparse(s, buf, 3)) return fail(of.errstr);
  s.noreply = of.noReply;
  s.cas = 0;
  // Stash the return flags (O, k, c) in request order, and the key, for after the value arrives.
  const stash = s.msetStash;
  let p = 0;
  let errstr: string | null = null;
  for (let i = 2; i < nt - 1 && errstr === null; i++) {
    switch (buf[s.tokS[i]!]) {
      case 79: {
        const len = tokLen(s, i);
        if (len > MFLAG_MAX_OPAQUE_LENGTH) {
          errstr = "CLIENT_ERROR opaque token too long";
          break;
        }
        stash[p++] = 79;
        stash[p++] = len;
        stash.set(buf.subarray(s.tokS[i]!, s.tokE[i]!), p);
        p += len;
        break;
      }
      case 107:
        stash[p++] = 107;
        break;
      case 99:
        stash[p++] = 99;
        break;
    }
  }
  let comm = Comm.SET;
  switch (of.mode) {
    case 0:
    case 83: // S
      break;
    case 69: // E
      comm = Comm.ADD;
      break;
    case 65: // A
      comm = Comm.APPEND;
      break;
    case 80: // P
      comm = Comm.PREPEND;
      break;
    case 82: // R
      comm = Comm.REPLACE;
      break;
    default:
      return fail("CLIENT_ERROR invalid mode for ms M token");
  }
  if (of.hasCas && (comm === Comm.SET || comm === Comm.REPLACE)) comm = Comm.CAS;
  if (errstr !== null) return fail(errstr);
  s.msetStashLen = p;
  s.msetBase64 = of.keyBinary;
  s.msetKeyLen = keyLen;
  s.msetKey.set(keyBuf.subarray(keyOff, keyOff + keyLen));
  const store = s.store;
  const hv = hashKey(keyBuf, keyOff, keyLen);
  const ref = store.alloc(keyBuf, keyOff, keyLen, of.clientFlags, of.exptime, vlen);
  if (ref === NIL) {
    // Stock fails while reading such a value: the old one stays, nothing is counted.
    if (store.allocError === AllocError.NO_MEMORY_READ) return fail("SERVER_ERROR Out of memory during read");
    let msg: string;
    if (store.allocError === AllocError.TOO_LARGE) {
      msg = "SERVER_ERROR object too large for cache";
      s.engine.stats.store_too_large++;
    } else {
      msg = "SERVER_ERROR out of memory storing object";
      s.engine.stats.store_no_memory++;
    }
    const old = store.get(keyBuf, keyOff, keyLen, hv, false);
    if (old !== NIL) store.unlink(old);
    return fail(msg);
  }
  if (of.keyBinary) store.setItFlags(ref, store.itFlags(ref) | F_KEY_BINARY);
  s.setStale = of.setStale && comm === Comm.CAS;
  // Stock's ITEM_set_cas does nothing without CAS (-C): the new item's CAS stays 0, so a C
  // flag then makes append/prepend unconditional (and set/replace EX, as with any mismatch).
  s.startNread(ref, NreadKind.META_SET, comm, hv, store.useCas ? of.reqCas : 0, vlen);
}

/** Renders the ms result after the value arrived (stock's _finalize_mset). */
export function finalizeMetaSet(s: Session, ret: StoreResult): void {
  const out = s.out;
  const mark = out.pos;
  switch (ret) {
    case StoreResult.STORED:
      out.str("HD");
      break;
    case StoreResult.EXISTS:
      out.str("EX");
      break;
    case StoreResult.NOT_FOUND:
      out.str("NF");
      break;
    case StoreResult.NOT_STORED:
      out.str("NS");
      break;
    default:
      s.noreply = false;
      out.str("SERVER_ERROR Unhandled storage type.\r\n");
      return;
  }
  const cas = ret === StoreResult.STORED ? s.store.lastCas : 0;
  const stash = s.msetStash;
  for (let p = 0; p < s.msetStashLen; ) {
    const c = stash[p++]!;
    if (c === 79) {
      const len = stash[p++]!;
      out.byte(32);
      out.copy(stash, p, len);
      p += len;
    } else if (c === 107) {
      metaKey(s, s.msetKey, 0, s.msetKeyLen, s.msetBase64);
    } else if (c === 99) {
      out.str(" c");
      out.uint(cas);
    }
  }
  out.crlf();
  if (ret === StoreResult.STORED && s.noreply) out.truncate(mark);
}

// ------------------------------------------------------------------------------ md

function processMdelete(s: Session, buf: Uint8Array): void {
  const nt = s.ntokens;
  if (nt < 3) return s.reply(ERROR);
  if (tokLen(s, 1) > KEY_MAX_LENGTH) return s.reply(BAD_FORMAT);
  const out = s.out;
  const mark = out.pos;
  if (nt > MFLAG_MAX_OPT_LENGTH) return s.replyString("CLIENT_ERROR options flags too long");
  if (!preparse(s, buf, 2)) return errorOut(s, mark, "CLIENT_ERROR invalid or duplicate flag");
  s.noreply = of.noReply;
  out.str("XX");
  for (let i = 2; i < nt - 1; i++) {
    const c = buf[s.tokS[i]!];
    if (c === 79) {
      if (!metaOpaque(s, buf, i)) return errorOut(s, mark, "CLIENT_ERROR opaque token too long");
    } else if (c === 107) {
      metaKey(s, keyBuf, keyOff, keyLen, of.keyBinary);
    }
  }
  out.crlf();
  const store = s.store;
  const stats = s.engine.stats;
  const ref = store.get(keyBuf, keyOff, keyLen, hashKey(keyBuf, keyOff, keyLen), false);
  let status = "NF";
  let skip = false;
  if (ref !== NIL) {
    if (of.hasCas && store.cas(ref) !== of.reqCas) {
      stats.delete_misses++;
      status = "EX";
    } else if (of.setStale) {
      if (of.newTtl) store.setExptime(ref, of.exptime);
      store.setItFlags(ref, (store.itFlags(ref) | F_STALE) & ~F_TOKEN_SENT);
      store.setCas(ref, store.useCas ? store.nextCas() : 0);
      skip = s.noreply;
      status = "HD";
    } else {
      store.classStats[store.clsid(ref) * CS.COUNT + CS.DELETE_HITS]!++;
      store.unlink(ref);
      skip = s.noreply;
      status = "HD";
    }
  } else {
    stats.delete_misses++;
  }
  if (skip) {
    out.truncate(mark);
    return;
  }
  out.buf[mark] = status.charCodeAt(0);
  out.buf[mark + 1] = status.charCodeAt(1);
}

// ------------------------------------------------------------------------------ ma

function processMarithmetic(s: Session, buf: Uint8Array): void {
  const nt = s.ntokens;
  if (nt < 3) return s.reply(ERROR);
  if (tokLen(s, 1) > KEY_MAX_LENGTH) return s.reply(BAD_FORMAT);
  const out = s.out;
  const mark = out.pos;
  if (nt > MFLAG_MAX_OPT_LENGTH) return s.replyString("CLIENT_ERROR options flags too long");
  if (!preparse(s, buf, 2)) return errorOut(s, mark, "CLIENT_ERROR invalid or duplicate flag");
  s.noreply = of.noReply;
  let incr = true;
  switch (of.mode) {
    case 0:
    case 73: // I
    case 43: // +
      break;
    case 68: // D
    case 45: // -
      incr = false;
      break;
    default:
      return errorOut(s, mark, "CLIENT_ERROR invalid mode for ma M token");
  }
  const store = s.store;
  const stats = s.engine.stats;
  const hv = hashKey(keyBuf, keyOff, keyLen);
  let ref = NIL;
  let digits = "";
  let created = false;
  let replaced = false;
  let status = "";
  let skip = false;
  switch (store.addDelta(keyBuf, keyOff, keyLen, hv, incr, of.delta, of.reqCas)) {
    case DeltaResult.OK:
      skip = s.noreply;
      ref = store.deltaRef;
      digits = store.deltaValue;
      replaced = store.deltaReplaced;
      break;
    case DeltaResult.NON_NUMERIC:
      return errorOut(s, mark, "CLIENT_ERROR cannot increment or decrement non-numeric value");
    case DeltaResult.EOM:
      return errorOut(s, mark, "SERVER_ERROR out of memory");
    case DeltaResult.NOT_FOUND:
      if (of.vivify) {
        digits = of.initial.toString();
        const nref = store.alloc(keyBuf, keyOff, keyLen, 0, 0, digits.length + 2);
        if (nref === NIL) return errorOut(s, mark, "SERVER_ERROR Out of memory allocating new item");
        const v = store.valueOffset(nref);
        for (let i = 0; i < digits.length; i++) store.mem[v + i] = digits.charCodeAt(i);
        store.mem[v + digits.length] = 13;
        store.mem[v + digits.length + 1] = 10;
        store.setCas(nref, 0);
        if (store.storeItem(nref, Comm.ADD, hv, 0, false) === StoreResult.STORED) {
          ref = store.find(keyBuf, keyOff, keyLen, hv);
          created = true;
        }
      } else {
        if (incr) stats.incr_misses++;
        else stats.decr_misses++;
        status = "NF";
      }
      break;
    case DeltaResult.CAS_MISMATCH:
      status = "EX";
      break;
  }
  if (ref !== NIL) {
    if (of.value) {
      out.str("VA ");
      out.uint(digits.length);
    } else {
      out.str("HD");
    }
    // Stock works on the item incr returned: the old one when the value had to grow, so a
    // T flag then changes (and t then shows) the old item's exptime, not the stored one's.
    let exptime = store.exptime(ref);
    for (let i = 2; i < nt - 1; i++) {
      switch (buf[s.tokS[i]!]) {
        case 99: // c
          out.str(" c");
          out.uint(store.cas(ref));
          break;
        case 116: // t
          out.str(" t");
          if (exptime === 0) out.str("-1");
          else out.uint((exptime - store.clock.now) >>> 0);
          break;
        case 84: // T
          exptime = of.exptime;
          if (!replaced) store.setExptime(ref, exptime);
          break;
        case 78: // N
          if (created) {
            exptime = of.autovivExptime;
            store.setExptime(ref, exptime);
          }
          break;
        case 79:
          if (!metaOpaque(s, buf, i)) return errorOut(s, mark, "CLIENT_ERROR opaque token too long");
          break;
        case 107:
          metaKey(s, keyBuf, keyOff, keyLen, of.keyBinary);
          break;
      }
    }
    if (of.value) {
      out.crlf();
      out.str(digits);
    }
  } else {
    out.str(status);
    for (let i = 2; i < nt - 1; i++) {
      const c = buf[s.tokS[i]!];
      if (c === 79) {
        if (!metaOpaque(s, buf, i)) return errorOut(s, mark, "CLIENT_ERROR opaque token too long");
      } else if (c === 107) {
        metaKey(s, keyBuf, keyOff, keyLen, of.keyBinary);
      }
    }
  }
  out.crlf();
  if (skip) out.truncate(mark);
}

// ------------------------------------------------------------------------------ me

function processMe(s: Session, buf: Uint8Array): void {
  const nt = s.ntokens;
  if (nt < 3 || tokLen(s, 1) > KEY_MAX_LENGTH) return s.reply(BAD_FORMAT);
  let kb = buf;
  let ko = s.tokS[1]!;
  let kl = tokLen(s, 1);
  if (nt >= 4 && tokLen(s, 2) === 1 && buf[s.tokS[2]!] === 98) {
    const n = base64Decode(buf, ko, kl, keyScratch);
    if (n === 0) return s.reply(BAD_FORMAT);
    kb = keyScratch;
    ko = 0;
    kl = n;
  }
  const store = s.store;
  const ref = store.get(kb, ko, kl, hashKey(kb, ko, kl), false);
  if (ref !== NIL) {
    const out = s.out;
    const now = store.clock.now;
    out.str("ME ");
    if (store.itFlags(ref) & F_KEY_BINARY) out.str(base64Encode(store.mem, store.keyOffset(ref), store.nkey(ref)));
    else out.copy(store.mem, store.keyOffset(ref), store.nkey(ref));
    const exp = store.exptime(ref);
    out.str(
      ` exp=${exp === 0 ? -1 : (now - exp) | 0} la=${(now - store.time(ref)) >>> 0} cas=${store.cas(ref)} ` +
        `fetch=${store.itFlags(ref) & F_FETCHED ? "yes" : "no"} cls=${store.clsid(ref)} size=${store.ntotal(ref)}\r\n`,
    );
  } else {
    s.reply(EN);
  }
  s.engine.stats.meta_cmds++;
}
