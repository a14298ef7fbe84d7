/**
 * Request grammar of the randomized differential fuzzer (fuzz-diff.test.ts,
 * test/soak/memcached-fuzz.test.ts): sequences of text or binary requests over a small key space,
 * so that hits, misses, CAS conflicts, incr on non-numbers and appends to missing keys happen
 * all the time, with malformed input mixed in at a low rate.
 *
 * A sequence is a list of units (one request each, or one piece of garbage). A unit's bytes are
 * a function of a context: the key prefix of the run (every run of a sequence gets a fresh one,
 * so a sequence only ever sees its own keys and can be replayed alone) and, with one shard, the
 * server's CAS counter before the run (so `cas`/`C` values hit as well as miss). Everything else
 * is drawn when the unit is generated, from a PRNG seeded by (seed, sequence index): sequence i of
 * a seed is always the same, whatever came before it.
 *
 * The grammar keeps the byte stream aligned: whatever a malformed unit does to stock's parser, it
 * has consumed exactly that unit's bytes when it is done (a short data chunk is padded, a long one
 * ends in a line), so the sentinel after the last unit is always read as a command. Units that make
 * the server close the connection end the sequence. Nothing time dependent is generated: exptimes
 * are 0, in the past (negative, absolute past, values stock's int32 parse wraps into the past) or
 * at least 1000 s away, and the answers that show remaining or elapsed seconds (t, l, me) are
 * compared with a tolerance (fuzzrun.ts). Not generated, because they legitimately differ or
 * depend on the host, the time or stock's leftover memory: stats, version, verbosity, flush_all
 * with a delay, lru/slabs/lru_crawler, watch, cache_memlimit, shutdown, values too large for an
 * item (their swallowing would eat the sentinel), item values of 2^63 and more (see BIG_VALUE).
 *
 * Units carry what the runner needs to know about stock's send points (where it transmits what it
 * has: a successful text get, mn, a binary noop or error, every 20 commands of a read, the end of
 * a read): which answers hold items until then (getLike), which depend on them (dropsUnsent, an
 * incr/decr/ma of a held item), so that a sequence whose answer depends on how its bytes arrive is
 * only cut where that changes nothing (fuzzrun.ts, split-at-sends).
 */
import { b, cat } from "./harness.ts";
import { binRequest, incrExtras, setExtras, u32Extras } from "./binproto.ts";

// ---------------------------------------------------------------------------------- PRNG

/** A small seeded PRNG (mulberry32): the same seed gives the same numbers everywhere. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  u32(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  /** 0 .. n-1 */
  int(n: number): number {
    return Math.floor((this.u32() / 4294967296) * n);
  }
  /** lo .. hi inclusive */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.u32() / 4294967296 < p;
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
  weighted<T>(items: readonly (readonly [T, number])[]): T {
    let total = 0;
    for (const [, w] of items) total += w;
    let x = (this.u32() / 4294967296) * total;
    for (const [v, w] of items) {
      if (x < w) return v;
      x -= w;
    }
    return items[items.length - 1]![0];
  }
  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }
}

/** The PRNG seed of sequence `index` of a run seeded with `seed`. */
export function sequenceSeed(seed: number, index: number): number {
  let h = (seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/** Piece sizes (1..max bytes each) that cut `n` bytes at random boundaries. */
export function randomPieces(n: number, seed: number, max = 37): number[] {
  const r = new Rng(seed);
  const out: number[] = [];
  for (let left = n; left > 0; ) {
    // Mostly small pieces, sometimes a larger one (several requests in a segment).
    const k = Math.min(left, r.chance(0.15) ? r.range(1, 400) : r.range(1, max));
    out.push(k);
    left -= k;
  }
  return out;
}

// ---------------------------------------------------------------------------------- units

/** What a unit's bytes depend on. */
export interface Ctx {
  /** Prefix of every key of the run (fixed length, see prefixFor). */
  prefix: string;
  /** The server's CAS counter before the run (1 shard); null: CAS values are unknown (2 shards). */
  casBase: bigint | null;
}

/** The key prefix of run `run` (always 8 bytes: "f" + 6 base-36 digits + ":"). */
export function prefixFor(run: number): string {
  return `f${run.toString(36).padStart(6, "0")}:`;
}

/** One request (or one piece of garbage) of a sequence. */
export interface Unit {
  /** The command, for reports and the known-difference list: "set", "mg", "bin:getq", "garbage", ... */
  op: string;
  render(ctx: Ctx): Uint8Array;
  /** Indices of the small key space's keys this unit names (any encoding). */
  keys: number[];
  /** A reply that holds its item until it is sent (stock's refcount): a get-like hit. */
  getLike?: boolean;
  /** Stock sends every answer it has when it is done with this unit (a text get, mn, a binary noop). */
  sendPoint?: boolean;
  /** incr/decr/ma: rewrites the item in place only if nobody else holds it. */
  delta?: boolean;
  /** The server closes the connection here (the sequence ends with this unit). */
  closes?: boolean;
  /** Stock drops the answers it has not sent yet (those since its last send point) here. */
  dropsUnsent?: boolean;
  /** Why stock's answer to a sequence holding this unit depends on how its bytes arrive. */
  segmentSensitive?: string;
  /** The unit does not end a line: its last bytes run into the next unit. */
  open?: boolean;
  /** Details the known-difference list matches on (e.g. "ms-too-many-flags"). */
  tags?: string[];
}

export interface Sequence {
  binary: boolean;
  units: Unit[];
}

/** Small key space: most traffic goes to the first keys. */
const KEY_NAMES = ["a", "b", "c", "d", "e"];
const KEY_WEIGHTS = [30, 25, 20, 10, 5];
/** Special keys (indices past the small key space). */
const LONG250 = 100;
export const LONG251 = 101;
const ODD = 102; // a key with bytes a text client would not normally send (tab, DEL, high bytes)

function keyOf(i: number, ctx: Ctx): string {
  if (i === LONG250) return ctx.prefix + "L".repeat(250 - ctx.prefix.length);
  if (i === LONG251) return ctx.prefix + "L".repeat(251 - ctx.prefix.length);
  if (i === ODD) return ctx.prefix + "o\t\x7f\xe9\x01";
  return ctx.prefix + KEY_NAMES[i]!;
}

function base64(s: string): string {
  return Buffer.from(s, "latin1").toString("base64");
}

/** A key index: mostly the small key space, rarely a 250/251-byte or odd key. */
function pickKey(r: Rng, special = 0.03): number {
  if (r.chance(special)) return r.weighted([[LONG250, 3], [LONG251, 3], [ODD, 1]] as const);
  return r.weighted(KEY_WEIGHTS.map((w, i) => [i, w] as const));
}

/** A CAS value to send: relative to the run's counter (a likely hit), or fixed. */
type CasRef = { rel: number } | { abs: bigint };

function casOf(c: CasRef, ctx: Ctx): bigint {
  if ("abs" in c) return c.abs;
  return ctx.casBase === null ? 0n : ctx.casBase + BigInt(c.rel);
}

// ---------------------------------------------------------------------------------- value pools

const U64_MAX = "18446744073709551615";

/*
 * Item values stay below 2^63 (with room for incrs): stock's safe_strtoull, given an item's value
 * of 2^63 or more, looks for a '-' with strchr() in memory that is not NUL-terminated (past the
 * value's \r\n, into whatever the slab chunk held before), so whether stock calls the value
 * non-numeric depends on leftover memory (seen: binary INCR of 18446744073709551615 answered
 * "Non-numeric server-side value" once in ~1000 sequences). Values near 2^64 still come as
 * numbers that overflow (stock refuses them), as decr deltas (decr stops at 0) and as tokens.
 */
const BIG_VALUE = ["4611686018427387903", "4611686018427387904", "4611686018427387800"]; // about 2^62
const BIG_DELTA = "1099511627776"; // 2^40: 2^22 incrs to get from 2^62 to 2^63

function pickValue(r: Rng): string {
  return r.weighted<() => string>([
    [() => String(r.int(200)), 20],
    [() => r.pick(["0", "1", "9", "10", "99", "100", "1000", "65535"]), 10],
    [() => r.pick(BIG_VALUE), 4],
    [() => r.pick(["18446744073709551616", "99999999999999999999"]), 2],
    [() => r.pick(["abc", "-5", " 42", "12 ab", "4\x00", "\x004", "0x10", "+3", "1e3", "007"]), 5],
    [() => "", 3],
    [() => alnum(r, r.range(1, 12)), 20],
    [() => `${alnum(r, 2)}\r\n${alnum(r, 2)}`, 1],
    [() => alnum(r, r.range(20, 300)), 4],
    // At most 2000 bytes: a refused command's value is read as a command line, and stock closes
    // on a line over 2048 bytes without \n when it arrives in pieces.
    [() => alnum(r, r.range(600, 2000)), 1],
  ])();
}

function alnum(r: Rng, n: number): string {
  const chars = "abcdefghijklmnopqrstuvwxyz0123456789";
  let s = "";
  for (let i = 0; i < n; i++) s += chars[r.int(chars.length)];
  return s;
}

/** Exptimes that cannot expire during a run: 0, already past, or at least 1000 s away. */
function pickExptime(r: Rng): string {
  return r.weighted([
    ["0", 50],
    ["-1", 5],
    ["-100", 2],
    ["1000", 10],
    ["86400", 4],
    ["2592000", 4], // the longest relative exptime
    ["2592001", 2], // absolute: 1970, in the past
    ["2000000000", 4], // absolute: 2033
    ["4102444800", 2], // int32 wrap: negative, in the past
    ["9999999999", 1], // int32 wrap: 2014, in the past
  ] as const);
}

/** A number token that stock refuses (or parses in a surprising way). */
function badNumber(r: Rng): string {
  return r.pick(["abc", "12a", "-", "", "1.5", "99999999999999999999", "0x1f", " "]);
}

function opaque(r: Rng): string {
  if (r.chance(0.03)) return "O" + alnum(r, 33);
  if (r.chance(0.03)) return "O";
  return "O" + alnum(r, r.range(1, 8));
}

// ---------------------------------------------------------------------------------- text units

type Part = string | ((ctx: Ctx) => string);

function textUnit(op: string, parts: Part[], extra: Partial<Unit> = {}): Unit {
  return {
    op,
    keys: [],
    ...extra,
    render: (ctx) => b(parts.map((p) => (typeof p === "string" ? p : p(ctx))).join("")),
  };
}

const k = (i: number): Part => (ctx) => keyOf(i, ctx);

/** A command line's end: mostly \r\n, sometimes a bare \n (stock accepts both). */
function eol(r: Rng): string {
  return r.weighted([["\r\n", 92], ["\n", 7], ["\r\r\n", 1]] as const);
}

/**
 * The data block after a storage command that announced `declared` bytes: the value and \r\n,
 * or (rarely) a malformed block: a wrong length, no \r\n, a bare \n. Whatever it is, exactly
 * declared + 2 bytes are read as data and what follows ends in a line, so the stream realigns.
 */
function dataBlock(r: Rng, value: string, declared: number | null): string {
  const good = value + "\r\n";
  if (declared === null) return good; // the command was refused: the block is read as lines
  if (declared === value.length && !r.chance(0.04)) return good;
  let body = value + r.weighted([["\r\n", 5], ["", 3], ["\n", 3], ["\r", 1]] as const);
  const need = declared + 2;
  while (body.length < need) body += r.pick(["x", "y", "z", "\r", "\n", " "]);
  if (body.length > need && !body.endsWith("\n")) body += "\r\n";
  return body;
}

const STORAGE = ["set", "add", "replace", "append", "prepend", "cas"] as const;

function genStorage(r: Rng, cmd: (typeof STORAGE)[number], cas: CasHint): Unit {
  const key = pickKey(r);
  const value = pickValue(r);
  let flags: string = r.weighted([
    ["0", 50],
    [String(r.int(65536)), 25],
    ["4294967295", 3],
    ["4294967296", 2],
    ["-0", 1],
    ["+7", 1],
  ] as const);
  let exptime = pickExptime(r);
  let len = String(value.length);
  let declared: number | null = value.length;
  const bad = r.chance(0.04);
  if (bad) {
    const which = r.int(4);
    if (which === 0) flags = r.pick(["-1", "12a", "abc"]);
    else if (which === 1) exptime = r.pick(["abc", "99999999999999999999", "1x"]);
    else if (which === 2) len = r.pick(["-1", "1x", "abc", ""]);
    else {
      // stock's int32 length parse wraps: 4294967296 + n reads as n
      const n = r.int(4);
      len = String(4294967296 + n);
      declared = n;
    }
    if (which <= 2) declared = null;
  }
  const parts: Part[] = [cmd, " ", k(key), " ", flags, " ", exptime, " ", len];
  if (cmd === "cas") {
    if (r.chance(0.03)) {
      parts.push(" ", r.pick(["-5", "abc", "1x"]));
      declared = null;
    } else {
      const c = pickCas(r, cas, key);
      parts.push(" ", (ctx) => String(casOf(c, ctx)));
    }
  }
  if (r.chance(0.2)) parts.push(" noreply");
  if (r.chance(0.01)) {
    parts.push(" extra");
    declared = null;
  }
  if (len === "" || key === LONG251) declared = null;
  parts.push(eol(r));
  parts.push(dataBlock(r, value, declared));
  return textUnit(cmd, parts, { keys: [key] });
}

/**
 * What the generator knows of CAS values so far (1 shard): the counter goes up by one for every
 * store, so the n-th store of the run (counting from 1) likely got the probed counter + n.
 */
export interface CasHint {
  exact: boolean;
  /** Units so far that may have stored. */
  stores: number;
  /** For each key: `stores` after the last unit that may have stored it. */
  last: Map<number, number>;
}

/** Commands that take a CAS value when they store (most of the time). */
const CAS_TAKERS = new Set([
  ...STORAGE, "incr", "decr", "ms", "ma",
  ...["set", "setq", "add", "addq", "replace", "replaceq", "append", "appendq", "prepend", "prependq", "incr", "incrq", "decr", "decrq"].map((o) => `bin:${o}`),
]);

/** A CAS value: the key's likely one, one near the counter, or one that never matches. */
function pickCas(r: Rng, cas: CasHint, key: number): CasRef {
  const last = cas.last.get(key);
  // (Failed stores before it take no CAS: the item's is often a little lower.)
  if (cas.exact && last !== undefined && r.chance(0.5)) return { rel: Math.max(1, last - r.weighted([[0, 3], [1, 3], [2, 2], [3, 1], [4, 1]] as const)) };
  if (cas.exact && r.chance(0.4)) return { rel: r.range(1, cas.stores + 2) };
  return r.weighted<CasRef>([
    [{ abs: 0n }, 3],
    [{ abs: 18446744073709551615n }, 1],
    [{ abs: BigInt(r.u32()) + 1000000000n }, 2],
  ]);
}

function genGet(r: Rng): Unit {
  const cmd = r.weighted([["get", 8], ["gets", 6], ["gat", 3], ["gats", 3], ["bget", 0.5]] as const);
  const n = r.chance(0.03) ? r.range(20, 40) : r.range(1, 5);
  const keys: number[] = [];
  for (let i = 0; i < n; i++) keys.push(pickKey(r, 0.02));
  const parts: Part[] = [cmd];
  const touch = cmd === "gat" || cmd === "gats";
  const badExptime = touch && r.chance(0.03);
  if (touch) parts.push(" ", badExptime ? badNumber(r) : pickExptime(r));
  for (const key of keys) parts.push(r.chance(0.05) ? "  " : " ", k(key));
  if (r.chance(0.02)) parts.push(" ");
  // "\r\r\n" leaves a \r on the last key: a 250-byte key would become a too-long one.
  const end = eol(r);
  parts.push(end === "\r\r\n" && keys.includes(LONG250) ? "\r\n" : end);
  const long = keys.includes(LONG251);
  return textUnit(cmd, parts, {
    keys,
    getLike: true,
    // An answer that is an error is no send point (stock's out_string; the too-long key drops).
    sendPoint: !long && !badExptime,
    dropsUnsent: long,
    segmentSensitive: long ? "a multiget with a too-long key drops the replies since stock's last send" : undefined,
  });
}

function genDelete(r: Rng): Unit {
  const key = pickKey(r);
  const tail = r.weighted([["", 10], [" noreply", 3], [" 0", 1], [" 0 noreply", 1], [" 5", 0.5], [" 0 extra", 0.3], [" a b c", 0.2]] as const);
  return textUnit("delete", ["delete ", k(key), tail, eol(r)], { keys: [key] });
}

function genIncr(r: Rng): Unit {
  const cmd = r.chance(0.55) ? "incr" : "decr";
  const key = pickKey(r);
  const delta = r.weighted([
    ["1", 20],
    [String(r.int(1000)), 15],
    [BIG_DELTA, 2],
    // decr stops at 0: any delta keeps the value below 2^63; incr would wrap to 2^64 - n
    [cmd === "decr" ? U64_MAX : "1", 3],
    [cmd === "decr" ? "18446744073709551614" : "2", 1],
    ["18446744073709551616", 1],
    ["-1", 1],
    ["abc", 1],
    ["0", 2],
  ] as const);
  const tail = r.weighted([["", 10], [" noreply", 2], [" 1 2", 0.2]] as const);
  return textUnit(cmd, [cmd, " ", k(key), r.chance(0.01) ? "" : ` ${delta}`, tail, eol(r)], { keys: [key], delta: true });
}

function genTouch(r: Rng): Unit {
  const key = pickKey(r);
  const exptime = r.chance(0.03) ? "abc" : pickExptime(r);
  const tail = r.chance(0.2) ? " noreply" : "";
  return textUnit("touch", ["touch ", k(key), r.chance(0.01) ? "" : ` ${exptime}`, tail, eol(r)], { keys: [key] });
}

/** A meta key token: the key, or its base64 (with flag b); sometimes not valid base64. */
function metaKey(r: Rng, key: number, b64: boolean): Part {
  if (!b64) return k(key);
  if (r.chance(0.1)) return r.pick(["!!!", "YQ", "====", "a"]);
  return (ctx) => base64(keyOf(key, ctx));
}

/** Shuffles `flags` and sometimes adds an invalid or duplicate one. */
function metaFlags(r: Rng, flags: string[], invalid: string[]): string[] {
  for (let i = flags.length - 1; i > 0; i--) {
    const j = r.int(i + 1);
    [flags[i], flags[j]] = [flags[j]!, flags[i]!];
  }
  if (r.chance(0.02) && flags.length > 0) flags.push(flags[0]!); // duplicate
  if (r.chance(0.02)) flags.splice(r.int(flags.length + 1), 0, r.pick(invalid));
  if (r.chance(0.005)) for (let i = 0; i < 20; i++) flags.push(String.fromCharCode(97 + i)); // too many tokens
  return flags;
}

/** Picks a random subset of `options` (each a thunk giving the token). */
function subset(r: Rng, options: [string, number, () => string][]): string[] {
  const out: string[] = [];
  for (const [, p, tok] of options) if (r.chance(p)) out.push(tok());
  return out;
}

/**
 * A T/N/R flag. R (recache: win if the item expires within R seconds) never uses an exptime the
 * generator sets elsewhere: R1000 against an item set with exptime 1000 wins or not depending on
 * whether the server's clock ticked between the two commands.
 */
function ttlFlag(r: Rng, letter: string): string {
  if (r.chance(0.03)) return letter + r.pick(["abc", "", "1x"]);
  if (letter === "R") return letter + r.weighted([["0", 1], ["-1", 1], ["500", 3], ["5000", 3], ["100000", 2]] as const);
  return letter + r.weighted([["0", 2], ["-1", 2], ["1000", 5], ["2592000", 1], ["86400", 2], ["2000000000", 1]] as const);
}

function genMg(r: Rng): Unit {
  const key = pickKey(r);
  const flags = subset(r, [
    ["b", 0.08, () => "b"],
    ["c", 0.3, () => "c"],
    ["f", 0.3, () => "f"],
    ["h", 0.15, () => "h"],
    ["k", 0.3, () => "k"],
    ["l", 0.1, () => "l"],
    ["O", 0.25, () => opaque(r)],
    ["q", 0.15, () => "q"],
    ["s", 0.3, () => "s"],
    ["t", 0.2, () => "t"],
    ["u", 0.1, () => "u"],
    ["v", 0.5, () => "v"],
    ["N", 0.08, () => ttlFlag(r, "N")],
    ["R", 0.06, () => ttlFlag(r, "R")],
    ["T", 0.08, () => ttlFlag(r, "T")],
    ["E", 0.01, () => "E5"],
    ["P", 0.01, () => "P"],
  ]);
  const fl = metaFlags(r, flags, ["x", "Z", "M", "\x80"]);
  const b64 = fl.includes("b");
  return textUnit("mg", ["mg ", metaKey(r, key, b64), ...fl.map((f) => " " + f), eol(r)], { keys: [key], getLike: true });
}

function genMs(r: Rng, cas: CasHint): Unit {
  const key = pickKey(r);
  const value = pickValue(r);
  const flags = subset(r, [
    ["b", 0.06, () => "b"],
    ["c", 0.25, () => "c"],
    ["k", 0.2, () => "k"],
    ["O", 0.2, () => opaque(r)],
    ["q", 0.15, () => "q"],
    ["I", 0.05, () => "I"],
    ["F", 0.25, () => "F" + (r.chance(0.05) ? r.pick(["-1", "abc", "4294967296"]) : String(r.int(1000)))],
    ["T", 0.25, () => ttlFlag(r, "T")],
    ["M", 0.35, () => "M" + r.weighted([["S", 3], ["E", 3], ["A", 3], ["P", 3], ["R", 3], ["s", 1], ["e", 1], ["X", 0.5], ["ab", 0.5], ["", 0.3]] as const)],
  ]);
  let casRef: CasRef | null = null;
  if (r.chance(0.2)) casRef = pickCas(r, cas, key);
  const fl: Part[] = metaFlags(r, flags, ["x", "S5", "v", "N1"]);
  const b64 = fl.includes("b");
  if (casRef !== null) {
    const c = casRef;
    fl.splice(r.int(fl.length + 1), 0, (ctx: Ctx) => `C${casOf(c, ctx)}`);
  }
  let len = String(value.length);
  let declared: number | null = value.length;
  if (r.chance(0.03)) {
    len = r.pick(["abc", "-1", "1x"]);
    declared = null;
  }
  const parts: Part[] = ["ms ", metaKey(r, key, b64)];
  let words = 2 + fl.length;
  if (!r.chance(0.01)) {
    parts.push(" ", len);
    words++;
  } else declared = null;
  for (const f of fl) parts.push(" ", f);
  // More than 20 tokens (stock counts the empty one after the last): stock refuses the line
  // before it reads a value (the value is read as command lines then).
  const tooMany = words + 1 > 20;
  if (key === LONG251 || tooMany) declared = null;
  parts.push(eol(r), dataBlock(r, value, declared));
  return textUnit("ms", parts, { keys: [key], tags: tooMany ? ["ms-too-many-flags"] : undefined });
}

function genMd(r: Rng, cas: CasHint): Unit {
  const key = pickKey(r);
  const flags = subset(r, [
    ["b", 0.06, () => "b"],
    ["I", 0.1, () => "I"],
    ["T", 0.1, () => ttlFlag(r, "T")],
    ["q", 0.2, () => "q"],
    ["k", 0.2, () => "k"],
    ["O", 0.2, () => opaque(r)],
  ]);
  const fl = metaFlags(r, flags, ["x", "v", "Z"]);
  const parts: Part[] = ["md ", metaKey(r, key, fl.includes("b")), ...fl.map((f) => " " + f)];
  if (r.chance(0.15)) {
    const c = pickCas(r, cas, key);
    parts.push(" ", (ctx) => `C${casOf(c, ctx)}`);
  }
  parts.push(eol(r));
  return textUnit("md", parts, { keys: [key] });
}

function genMa(r: Rng, cas: CasHint): Unit {
  const key = pickKey(r);
  const flags = subset(r, [
    ["b", 0.05, () => "b"],
    ["N", 0.15, () => ttlFlag(r, "N")],
    ["J", 0.15, () => "J" + r.weighted([["0", 3], ["13", 3], [BIG_VALUE[0]!, 1], ["18446744073709551616", 0.5], ["x", 0.3]] as const)],
    ["D", 0.4, () => "D" + r.weighted([["1", 3], [String(r.int(1000)), 3], [BIG_DELTA, 1], ["18446744073709551616", 0.3], ["abc", 0.3]] as const)],
    ["T", 0.1, () => ttlFlag(r, "T")],
    ["M", 0.35, () => "M" + r.weighted([["I", 3], ["D", 3], ["+", 2], ["-", 2], ["X", 0.3], ["ID", 0.3]] as const)],
    ["q", 0.15, () => "q"],
    ["t", 0.15, () => "t"],
    ["c", 0.25, () => "c"],
    ["v", 0.5, () => "v"],
    ["k", 0.15, () => "k"],
    ["O", 0.15, () => opaque(r)],
  ]);
  const fl = metaFlags(r, flags, ["x", "s", "Z"]);
  const parts: Part[] = ["ma ", metaKey(r, key, fl.includes("b")), ...fl.map((f) => " " + f)];
  if (r.chance(0.1)) {
    const c = pickCas(r, cas, key);
    parts.push(" ", (ctx) => `C${casOf(c, ctx)}`);
  }
  parts.push(eol(r));
  return textUnit("ma", parts, { keys: [key], delta: true });
}

function genMe(r: Rng): Unit {
  const key = pickKey(r);
  if (r.chance(0.2)) return textUnit("me", ["me ", (ctx) => base64(keyOf(key, ctx)), " b", eol(r)], { keys: [key] });
  return textUnit("me", ["me ", k(key), eol(r)], { keys: [key] });
}

/** Malformed lines that do not close the connection. */
function genGarbage(r: Rng): Unit {
  return r.weighted<() => Unit>([
    [() => textUnit("unknown", [r.pick(["foo", "foo bar", "GET x", "Set a 0 0 1", "gett a", "m", "mz a", "x y", "g", "deletes a", "incrr a 1"]), eol(r)]), 4],
    [() => textUnit("empty", [r.pick(["\r\n", "\n", "  \r\n", " \n"])]), 2],
    [
      () => {
        // stray bytes: anything but \n, then a line end
        let s = "";
        const n = r.range(1, 12);
        for (let i = 0; i < n; i++) {
          let c = r.int(256);
          if (c === 10) c = 0;
          s += String.fromCharCode(c);
        }
        return textUnit("garbage", [s, "\r\n"]);
      },
      3,
    ],
    [() => textUnit("too-few-tokens", [r.pick(["set a 0 0", "set", "cas a 0 0 1", "touch a", "incr a", "get", "gat 10", "mg", "ms a", "md", "ma", "delete"]), "\r\n"]), 3],
    [() => textUnit("too-many-tokens", ["set a 0 0 1 b c d e f g h i j k l m n o p q r s t u v w x\r\n"]), 0.3],
    [() => textUnit("flush_all", [r.pick(["flush_all", "flush_all 0", "flush_all noreply", "flush_all -1", "flush_all 0 noreply", "flush_all abc", "flush_all 1 2 3"]), "\r\n"]), 0.6],
    [
      () => {
        // A long multiget line (over stock's 2048-byte limit for a line without \n, allowed for get)
        const keys: number[] = [];
        const parts: Part[] = ["get"];
        const n = r.range(200, 400);
        for (let i = 0; i < n; i++) {
          const key = pickKey(r, 0);
          keys.push(key);
          parts.push(" ", k(key));
        }
        parts.push("\r\n");
        return textUnit("get", parts, { keys, getLike: true, sendPoint: true });
      },
      0.3,
    ],
  ])();
}

/** Text input that makes stock close the connection. */
function genTextCloser(r: Rng): Unit {
  return r.weighted<() => Unit>([
    [() => textUnit("quit", [r.pick(["quit\r\n", "quit\n"])], { closes: true }), 2],
    [() => textUnit("http", [r.pick(["GET / HTTP/1.1\r\n", "POST /x HTTP/1.0\r\n", "foo HTTP/2\r\n"])], { closes: true, dropsUnsent: true, segmentSensitive: "stock drops its unsent answers when it closes on HTTP/" }), 1],
    [
      () =>
        textUnit("long-line", [r.pick(["a", "set ", " x", "mg "]), "z".repeat(r.range(2100, 3000))], {
          closes: true,
          open: true,
          dropsUnsent: true,
          segmentSensitive: "stock closes on a 2 KiB line without \\n once it has read that much, dropping unsent answers",
        }),
      1,
    ],
  ])();
}

function genTextUnit(r: Rng, cas: CasHint): Unit {
  const which = r.weighted([
    ["storage", 31],
    ["get", 20],
    ["delete", 5],
    ["incr", 8],
    ["touch", 3],
    ["mg", 12],
    ["ms", 9],
    ["md", 4],
    ["ma", 7],
    ["mn", 1.5],
    ["me", 1],
    ["garbage", 4],
  ] as const);
  switch (which) {
    case "storage":
      return genStorage(r, r.weighted([["set", 10], ["add", 4], ["replace", 4], ["append", 4], ["prepend", 3], ["cas", 6]] as const), cas);
    case "get":
      return genGet(r);
    case "delete":
      return genDelete(r);
    case "incr":
      return genIncr(r);
    case "touch":
      return genTouch(r);
    case "mg":
      return genMg(r);
    case "ms":
      return genMs(r, cas);
    case "md":
      return genMd(r, cas);
    case "ma":
      return genMa(r, cas);
    case "mn": {
      // "mn\r\r\n" is the command "mn\r": ERROR, no send point.
      const end = eol(r);
      return textUnit("mn", ["mn", end], { sendPoint: end !== "\r\r\n" });
    }
    case "me":
      return genMe(r);
    case "garbage":
      return genGarbage(r);
  }
}

/** Makes a non-storage line "open" (no line end): it runs into the next unit's first line. */
function maybeOpen(r: Rng, u: Unit): Unit {
  if (!["get", "gets", "delete", "incr", "decr", "touch", "mg", "md", "ma", "mn"].includes(u.op) || !r.chance(0.02)) return u;
  return {
    ...u,
    open: true,
    render(ctx) {
      const full = u.render(ctx);
      let n = full.length;
      while (n > 0 && (full[n - 1] === 10 || full[n - 1] === 13)) n--;
      return full.subarray(0, n);
    },
  };
}

// ---------------------------------------------------------------------------------- binary units

function binUnit(op: string, make: (ctx: Ctx) => Uint8Array, extra: Partial<Unit> = {}): Unit {
  return { op, keys: [], ...extra, render: make };
}

const BIN_OPS = {
  get: 0x00,
  set: 0x01,
  add: 0x02,
  replace: 0x03,
  delete: 0x04,
  incr: 0x05,
  decr: 0x06,
  quit: 0x07,
  flush: 0x08,
  getq: 0x09,
  noop: 0x0a,
  getk: 0x0c,
  getkq: 0x0d,
  append: 0x0e,
  prepend: 0x0f,
  setq: 0x11,
  addq: 0x12,
  replaceq: 0x13,
  deleteq: 0x14,
  incrq: 0x15,
  decrq: 0x16,
  quitq: 0x17,
  flushq: 0x18,
  appendq: 0x19,
  prependq: 0x1a,
  touch: 0x1c,
  gat: 0x1d,
  gatq: 0x1e,
  gatk: 0x23,
  gatkq: 0x24,
} as const;
type BinOp = keyof typeof BIN_OPS;

function binExptime(r: Rng): number {
  return r.weighted([[0, 50], [1000, 10], [2592000, 3], [2000000000, 3], [0xffffffff, 3], [2592001, 1]] as const);
}

function binKey(i: number, ctx: Ctx): Uint8Array {
  return b(keyOf(i, ctx));
}

function genBinUnit(r: Rng, cas: CasHint): Unit {
  const op = r.weighted<BinOp>([
    ["get", 6], ["getq", 3], ["getk", 4], ["getkq", 3],
    ["set", 10], ["setq", 3], ["add", 4], ["addq", 2], ["replace", 3], ["replaceq", 2],
    ["delete", 4], ["deleteq", 2],
    ["incr", 5], ["decr", 4], ["incrq", 2], ["decrq", 2],
    ["append", 3], ["prepend", 2], ["appendq", 1], ["prependq", 1],
    ["touch", 3], ["gat", 3], ["gatq", 2], ["gatk", 2], ["gatkq", 2],
    ["noop", 3], ["flush", 0.3], ["flushq", 0.2],
  ]);
  const code = BIN_OPS[op];
  const opq = r.chance(0.5) ? r.u32() & 0x3fffffff : r.int(100);
  const key = pickKey(r, 0.01);
  const name = `bin:${op}`;
  const kk = (ctx: Ctx) => binKey(key, ctx);
  if (op === "noop") return binUnit(name, () => binRequest(code, { opaque: opq }), { sendPoint: true });
  if (op === "flush" || op === "flushq") {
    return binUnit(name, () => binRequest(code, { opaque: opq, extras: r.chance(0.5) ? u32Extras(0) : undefined }));
  }
  if (op.startsWith("get")) {
    return binUnit(name, (ctx) => binRequest(code, { key: kk(ctx), opaque: opq }), { keys: [key], getLike: true });
  }
  if (op === "touch" || op.startsWith("gat")) {
    const exp = binExptime(r);
    return binUnit(name, (ctx) => binRequest(code, { key: kk(ctx), opaque: opq, extras: u32Extras(exp) }), { keys: [key], getLike: true });
  }
  const casRef: CasRef | null = r.chance(0.25) ? pickCas(r, cas, key) : null;
  const casv = (ctx: Ctx) => (casRef === null ? 0n : casOf(casRef, ctx));
  if (op.startsWith("set") || op.startsWith("add") || op.startsWith("replace")) {
    const value = pickValue(r);
    const flags = r.chance(0.5) ? 0 : r.u32();
    const exp = binExptime(r);
    return binUnit(name, (ctx) => binRequest(code, { key: kk(ctx), value: b(value), extras: setExtras(flags, exp), cas: casv(ctx), opaque: opq }), { keys: [key] });
  }
  if (op.startsWith("append") || op.startsWith("prepend")) {
    const value = pickValue(r);
    return binUnit(name, (ctx) => binRequest(code, { key: kk(ctx), value: b(value), cas: casv(ctx), opaque: opq }), { keys: [key] });
  }
  if (op.startsWith("delete")) {
    return binUnit(name, (ctx) => binRequest(code, { key: kk(ctx), cas: casv(ctx), opaque: opq }), { keys: [key] });
  }
  // incr/decr
  const decr = op.startsWith("decr");
  const delta = r.weighted<bigint>([[1n, 10], [BigInt(r.int(1000)), 8], [decr ? 18446744073709551615n : 1n << 40n, 2], [0n, 1], [decr ? r.u64() : BigInt(r.u32()), 1]]);
  const initial = r.weighted<bigint>([[0n, 5], [10n, 3], [4611686018427387904n, 1], [BigInt(r.int(100000)), 2]]);
  const exp = r.weighted([[0, 10], [0xffffffff, 4], [1000, 3]] as const);
  return binUnit(name, (ctx) => binRequest(code, { key: kk(ctx), extras: incrExtras(delta, initial, exp), cas: casv(ctx), opaque: opq }), { keys: [key], delta: true });
}

/** Binary packets stock refuses: unknown opcodes (answered), protocol errors and bad magic (closed). */
function genBinMalformed(r: Rng): Unit {
  const key = pickKey(r, 0);
  return r.weighted<() => Unit>([
    [
      () => {
        // Answered "Unknown command" (a send point).
        const op = r.pick([0x1b, 0x30, 0x50, 0xfe]);
        return binUnit("bin:unknown", () => binRequest(op, { opaque: 7 }), { sendPoint: true });
      },
      2,
    ],
    [
      () => {
        // With a key and a body stock swallows the key once more, out of the next packet, and
        // closes on the misaligned header after it (bad magic), unsent answers dropped. The
        // garbage after the packet makes sure of that whatever comes next.
        const op = r.pick([0x1b, 0x30, 0x50, 0x20, 0x21, 0x22, 0xfe]);
        return binUnit("bin:unknown-with-body", (ctx) => cat(binRequest(op, { key: binKey(key, ctx), value: "yy", opaque: 7 }), new Uint8Array(300).fill(0x41)), {
          closes: true,
          dropsUnsent: true,
          segmentSensitive: "stock swallows an unknown command's body straight from the socket",
        });
      },
      1,
    ],
    [() => binUnit("bin:get-empty-key", () => binRequest(0x00, { opaque: 9 }), { closes: true }), 1],
    [() => binUnit("bin:get-long-key", (ctx) => binRequest(r.pick([0x00, 0x01, 0x04]), { key: binKey(LONG251, ctx), extras: undefined }), { closes: true }), 1],
    [() => binUnit("bin:set-bad-extlen", (ctx) => binRequest(0x01, { key: binKey(key, ctx), value: "v", extras: new Uint8Array(r.pick([0, 4, 12])) }), { closes: true }), 1],
    [() => binUnit("bin:incr-bad-extlen", (ctx) => binRequest(0x05, { key: binKey(key, ctx), extras: new Uint8Array(8) }), { closes: true }), 0.5],
    [() => binUnit("bin:get-with-value", (ctx) => binRequest(0x00, { key: binKey(key, ctx), value: "zz" }), { closes: true }), 0.5],
    [() => binUnit("bin:noop-with-body", () => binRequest(0x0a, { value: "zz" }), { closes: true }), 0.5],
    [() => binUnit("bin:keylen>bodylen", (ctx) => binRequest(0x00, { key: binKey(key, ctx), bodylen: 1 + r.int(3) }), { closes: true }), 0.5],
    [() => binUnit("bin:quit", () => binRequest(r.pick([0x07, 0x17]), { opaque: 4 }), { closes: true }), 1],
    [
      () => {
        // At least a header: stock reads 24 bytes before it looks at the magic.
        const bytes = new Uint8Array(r.range(24, 40));
        for (let i = 0; i < bytes.length; i++) bytes[i] = r.int(256);
        if (bytes[0] === 0x80) bytes[0] = 0x81;
        return binUnit("bin:bad-magic", () => bytes, {
          closes: true,
          dropsUnsent: true,
          segmentSensitive: "stock drops its unsent answers when it closes on a bad magic",
        });
      },
      1.5,
    ],
  ])();
}

// ---------------------------------------------------------------------------------- sequences

export interface GenOptions {
  /** Requests per sequence. */
  minUnits: number;
  maxUnits: number;
  /** CAS values of the run are known (1 shard: the counter is probed before each run). */
  exactCas: boolean;
  /** Units that must not be generated (the known differences, see fuzz-diff.test.ts). */
  avoid?: (u: Unit, before: readonly Unit[], binary: boolean) => boolean;
}

/** A display context, for predicates that look at the bytes. */
export const SAMPLE_CTX: Ctx = { prefix: prefixFor(0), casBase: 1000n };

/** Sequence `index` of `seed`. */
export function generate(seed: number, index: number, opts: GenOptions): Sequence {
  const r = new Rng(sequenceSeed(seed, index));
  const binary = r.chance(0.3);
  const n = r.range(opts.minUnits, opts.maxUnits);
  const units: Unit[] = [];
  const cas: CasHint = { exact: opts.exactCas, stores: 0, last: new Map() };
  for (let tries = 0; units.length < n && tries < n * 20; tries++) {
    let u: Unit;
    // (The first byte decides the protocol: garbage first would make it a text connection.)
    if (binary) u = r.chance(0.02) && units.length > 0 ? genBinMalformed(r) : genBinUnit(r, cas);
    else if (r.chance(0.005)) u = genTextCloser(r);
    else u = maybeOpen(r, genTextUnit(r, cas));
    if (!fits(u, units) || opts.avoid?.(u, units, binary)) continue;
    units.push(u);
    if (CAS_TAKERS.has(u.op)) {
      cas.stores++;
      for (const key of u.keys) cas.last.set(key, cas.stores);
    }
    if (u.closes) break;
  }
  // An open last line would swallow the sentinel: end it.
  if (units.length > 0 && units[units.length - 1]!.open && !units[units.length - 1]!.closes) units.push(textUnit("empty", ["\r\n"]));
  return { binary, units };
}

/** Whether `u` may follow `before` (the generator's rules about lines that run into the next). */
export function fits(u: Unit, before: readonly Unit[]): boolean {
  const prev = before[before.length - 1];
  // A line that runs into the next one must not change what a key token is (a 250-byte key
  // grows past the limit, a multiget gains a 251-byte key): keep the special keys off both...
  if ((u.open || prev?.open) && u.keys.some((key) => key >= LONG250)) return false;
  // ... nor turn a closer into something else (the sequence would end without it).
  return !(prev?.open && u.closes);
}

/**
 * Keys of the small key space whose items a reply not yet sent may hold after `units`: a get-like
 * reply holds its item until stock sends it (at a send point, or when it runs out of input).
 */
function heldKeys(units: readonly Unit[]): Set<number> {
  const held = new Set<number>();
  let prevOpen = false;
  for (const u of units) {
    // A line that runs into the next one is not what it was: neither is a send point then.
    if (u.sendPoint && !u.open && !prevOpen) held.clear();
    else if (u.getLike || prevOpen) for (const key of u.keys) held.add(key);
    prevOpen = u.open === true;
  }
  return held;
}

/**
 * Whether stock's answer to `u` after `before` depends on where stock's last send point was: it
 * drops the answers not sent yet, or it is an incr/decr/ma of an item a reply not yet sent holds
 * (stock then writes a new item instead of rewriting the held one in place, padded with spaces).
 */
export function dependsOnSendPoints(u: Unit, before: readonly Unit[]): boolean {
  if (u.dropsUnsent) return true;
  if (!u.delta) return false;
  const held = heldKeys(before);
  return u.keys.some((key) => held.has(key));
}

/** Why stock's answer to `units` may depend on how the bytes arrive (null: it does not). */
export function segmentSensitivity(units: readonly Unit[]): string | null {
  for (const u of units) if (u.segmentSensitive) return u.segmentSensitive;
  for (let i = 0; i + 1 < units.length; i++) {
    // An unterminated unit runs into a long multiget: one line over 2048 bytes that does not
    // start with get, which stock closes on only when it arrives in pieces.
    if (units[i]!.open && units[i + 1]!.op === "get" && units[i + 1]!.keys.length >= 100) return "a line over 2 KiB that is not a get";
  }
  for (let i = 0; i < units.length; i++) {
    if (dependsOnSendPoints(units[i]!, units.slice(0, i))) return "incr/decr/ma of an item a reply not yet sent holds";
  }
  return null;
}

/**
 * An upper bound on the commands stock counts in `units` (its reqs_per_event): packets of a binary
 * sequence, lines of a text one (every command ends a line; data lines are counted too).
 */
export function commandCount(units: readonly Unit[], binary: boolean): number {
  if (binary) return units.length;
  let n = 0;
  for (const u of units) for (const c of u.render(SAMPLE_CTX)) if (c === 10) n++;
  return n;
}

/**
 * Whether a unit whose answer depends on stock's send points comes after 20 commands: stock also
 * sends after every 20 commands of one read, so cutting the sequence into reads moves those sends.
 */
export function dependsOnReadCount(units: readonly Unit[], binary: boolean): boolean {
  for (let i = 0; i < units.length; i++) {
    const before = units.slice(0, i);
    if (dependsOnSendPoints(units[i]!, before) && commandCount(before, binary) >= 20) return true;
  }
  return false;
}
