/**
 * Runner of the randomized differential fuzzer: stock memcached 1.6.18 and ours side by side for
 * the whole run, every generated sequence (fuzzgen.ts) sent to both on a fresh connection each,
 * once as one write to both and once more (with fresh keys) as one write to stock and in random
 * pieces to ours, and the answers compared: byte for byte with one shard (CAS values included:
 * both servers see the same commands in the same order), with CAS values renumbered in order of
 * first appearance with two shards (our shards number CAS separately). Seconds shown by `t`, `l`
 * and `me` may differ by a clock tick and are compared with a tolerance.
 *
 * A sequence whose answer depends on where stock transmits (fuzzgen.ts segmentSensitivity: a
 * close or a too-long multiget key that drops unsent answers, an incr of an item a pending reply
 * holds) is cut for ours only right after stock's send points, where a new read changes nothing.
 * Every sequence ends with a sentinel (a miss with a unique opaque, then mn; a NOOP with a unique
 * opaque in binary) unless it ends in a unit that closes the connection; a server that goes quiet
 * without the sentinel's answer is waited for a few seconds.
 *
 * A difference is shrunk to the fewest units that still differ, reported with the seed and the
 * exact bytes and answers, and both servers are restarted (so that one difference does not make
 * every later sequence differ). Known differences (fuzzknown.ts) are not generated.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { cat, show, startOurs, startStock, type ServerProcess, b } from "./harness.ts";
import { binRequest } from "./binproto.ts";
import { KNOWN_DIFFERENCES } from "./fuzzknown.ts";
import { dependsOnReadCount, fits, generate, prefixFor, randomPieces, Rng, segmentSensitivity, type Ctx, type Sequence, type Unit, type GenOptions } from "./fuzzgen.ts";

/** A difference the fuzzer knows about, kept out of the generated input until it is fixed. */
export interface KnownDifference {
  /** Short name. */
  id: string;
  /** The minimal reproduction: bytes sent on a fresh connection, stock's answer, ours. */
  repro: string;
  /** Where the difference is (file and function). */
  responsible: string;
  /** True for a unit (given the units before it) that would show the difference. */
  matches(u: Unit, before: readonly Unit[], c: { shards: number; binary: boolean }): boolean;
}

export interface FuzzOptions {
  seed: number;
  /** Sequences to generate (indices 0 .. sequences-1), unless `only` picks some. */
  sequences: number;
  only?: number[];
  shards: 1 | 2;
  minUnits: number;
  maxUnits: number;
  known: readonly KnownDifference[];
  /** Stop after this many differences. */
  maxFailures: number;
  /** Most candidate runs spent shrinking one difference. */
  shrinkBudget: number;
  log(line: string): void;
}

export interface Failure {
  index: number;
  mode: Mode;
  report: string;
}

export interface FuzzResult {
  sequences: number;
  runs: number;
  requests: number;
  bytes: number;
  /** Sequences whose answer depends on where stock sends: split only after stock's send points. */
  splitAtSends: number;
  /** ... and of those, sequences without such a point (not split at all). */
  splitSkipped: number;
  closed: number;
  timeouts: number;
  failures: Failure[];
  ms: number;
}

/**
 * whole: one write to both. split: one write to stock, random pieces to ours. split-at-sends: for
 * a sequence whose answer depends on where stock sends (segmentSensitivity), pieces cut only
 * right after stock's send points (text get, mn, binary noop), where stock has sent everything
 * anyway, so a new read changes nothing but the start of its count of 20 commands per event.
 */
type Mode = "whole" | "split" | "split-at-sends";

interface Reply {
  bytes: Uint8Array;
  closed: boolean;
  /** The sentinel's answer came (or, for a sequence that ends in a closer, the server closed). */
  complete: boolean;
}

/** Stop waiting once neither server sent anything for this long and neither is complete. */
const IDLE_BOTH_MS = 4000;
/** ... or once one server is complete and the other sent nothing for this long. */
const IDLE_ONE_MS = 15000;

function endsWith(a: Uint8Array, suffix: Uint8Array): boolean {
  if (a.length < suffix.length) return false;
  for (let i = 0; i < suffix.length; i++) if (a[a.length - suffix.length + i] !== suffix[i]) return false;
  return true;
}

interface Side {
  sock: net.Socket;
  parts: Buffer[];
  total: number;
  closed: boolean;
  last: number;
  complete: boolean;
}

function open(port: number): Promise<Side> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, "127.0.0.1");
    sock.setNoDelay(true);
    sock.once("error", reject);
    sock.once("connect", () => {
      sock.removeListener("error", reject);
      const side: Side = { sock, parts: [], total: 0, closed: false, last: Date.now(), complete: false };
      sock.on("data", (d: Buffer) => {
        side.parts.push(d);
        side.total += d.length;
        side.last = Date.now();
      });
      sock.on("close", () => (side.closed = true));
      sock.on("error", () => (side.closed = true));
      resolve(side);
    });
  });
}

async function write(side: Side, data: Uint8Array, pieces: number[] | null): Promise<void> {
  if (pieces === null) {
    side.sock.write(data);
    side.last = Date.now();
    return;
  }
  let off = 0;
  for (const n of pieces) {
    if (side.closed) return;
    side.sock.write(data.subarray(off, off + n));
    off += n;
    side.last = Date.now();
    await Bun.sleep(1);
  }
}

/** Sends `data` to both servers at once (ours in `pieces` if given) and collects both answers. */
async function exchangePair(stockPort: number, oursPort: number, data: Uint8Array, pieces: number[] | null, sentinel: Uint8Array | null): Promise<[Reply, Reply]> {
  const sides = await Promise.all([open(stockPort), open(oursPort)]);
  const writing = Promise.all([write(sides[0], data, null), write(sides[1], data, pieces)]);
  const bytes = (s: Side): Buffer => {
    if (s.parts.length > 1) s.parts = [Buffer.concat(s.parts, s.total)];
    return s.parts[0] ?? Buffer.alloc(0);
  };
  for (;;) {
    await Bun.sleep(2);
    const now = Date.now();
    for (const s of sides) if (!s.complete) s.complete = s.closed || (sentinel !== null && endsWith(bytes(s), sentinel));
    const [x, y] = sides;
    if (x.complete && y.complete) break;
    if (!x.complete && !y.complete && now - x.last > IDLE_BOTH_MS && now - y.last > IDLE_BOTH_MS) break;
    if ((x.complete && now - y.last > IDLE_ONE_MS) || (y.complete && now - x.last > IDLE_ONE_MS)) break;
  }
  await writing;
  for (const s of sides) s.sock.destroy();
  return sides.map((s) => ({ bytes: new Uint8Array(bytes(s)), closed: s.closed, complete: s.complete })) as [Reply, Reply];
}

// ---------------------------------------------------------------------------------- comparing

/** Answer text with CAS values renumbered (mode "order") and tick-dependent seconds taken out. */
interface Canon {
  text: string;
  seconds: number[];
}

const SECONDS_TOLERANCE = 3;

function canonical(bytes: Uint8Array, binary: boolean, renumber: boolean): Canon {
  const order = new Map<string, string>();
  const cas = (v: string): string => {
    if (!renumber || v === "0") return v;
    let n = order.get(v);
    if (n === undefined) order.set(v, (n = `#${order.size + 1}`));
    return n;
  };
  if (binary) {
    const copy = bytes.slice();
    if (renumber) {
      const dv = new DataView(copy.buffer);
      for (let p = 0; copy.length - p >= 24; ) {
        const bodylen = dv.getUint32(p + 8);
        const v = dv.getBigUint64(p + 16);
        if (v !== 0n) dv.setBigUint64(p + 16, BigInt(cas(v.toString()).slice(1)));
        p += 24 + bodylen;
      }
    }
    return { text: latin1(copy), seconds: [] };
  }
  const seconds: number[] = [];
  const text = latin1(bytes)
    .replace(/^VALUE ([^ \r\n]+) (\d+) (\d+) (\d+)(\r?)$/gm, (_m, k, f, n, c, r) => `VALUE ${k} ${f} ${n} ${cas(c)}${r}`)
    .replace(/^(HD|VA|EN|NF|NS|EX)( [^\r\n]*)(?=\r?$)/gm, (_m, code: string, rest: string) => {
      const toks = rest.split(" ").map((t) => {
        if (/^c\d+$/.test(t)) return "c" + cas(t.slice(1));
        if (/^[tl]\d+$/.test(t)) {
          seconds.push(Number(t.slice(1)));
          return t[0] + "<s>";
        }
        return t;
      });
      return code + toks.join(" ");
    })
    .replace(/^ME ([^ \r\n]+) exp=(-?\d+) la=(\d+) cas=(\d+) /gm, (_m, k, e, l, c) => {
      if (e !== "-1") seconds.push(Number(e));
      seconds.push(Number(l));
      return `ME ${k} exp=${e === "-1" ? "-1" : "<s>"} la=<s> cas=${cas(c)} `;
    });
  return { text, seconds };
}

/**
 * True if the only difference between two answers is how an incr/decr result was stored: padded
 * with spaces in place (the number shrank) or as a fresh item of the number alone. Stock's
 * do_add_delta rewrites in place only while nothing else references the item (refcount == 2): a
 * reply not yet sent does, and so, for an instant, does its LRU maintainer thread looking at the
 * item. Under load that thread now and then makes stock store a fresh item where it (and we)
 * otherwise pad in place; the fuzzer then sees a one-off difference no rerun shows.
 */
export function onlyDeltaPadding(stock: Uint8Array, ours: Uint8Array, binary: boolean, renumber: boolean): boolean {
  const a = canonical(stock, binary, renumber).text;
  const c = canonical(ours, binary, renumber).text;
  if (a === c) return false;
  const number = /^(\d+)( *)$/;
  let padded = 0;
  if (!binary) {
    const la = a.split("\r\n");
    const lc = c.split("\r\n");
    if (la.length !== lc.length) return false;
    // A stored value's length appears in its header line (VALUE ... n, VA n, ME ... size=n).
    const header = (l: string): string =>
      l
        .replace(/^VALUE (\S+) (\d+) \d+/, "VALUE $1 $2 <n>")
        .replace(/^VA \d+/, "VA <n>")
        .replace(/ s\d+(?= |$)/g, " s<n>")
        .replace(/ size=\d+/, " size=<n>");
    for (let i = 0; i < la.length; i++) {
      if (la[i] === lc[i]) continue;
      const x = number.exec(la[i]!);
      const y = number.exec(lc[i]!);
      if (x && y && x[1] === y[1]) {
        padded++;
        continue;
      }
      if (header(la[i]!) !== header(lc[i]!)) return false;
    }
    return padded > 0;
  }
  // Binary: packet by packet, equal but for the value's padding and the body length it changes.
  let p = 0;
  let q = 0;
  const u32 = (t: string, at: number): number => ((t.charCodeAt(at) << 24) | (t.charCodeAt(at + 1) << 16) | (t.charCodeAt(at + 2) << 8) | t.charCodeAt(at + 3)) >>> 0;
  while (a.length - p >= 24 && c.length - q >= 24) {
    const bodyA = u32(a, p + 8);
    const bodyC = u32(c, q + 8);
    const head = (t: string, at: number) => t.slice(at, at + 8) + t.slice(at + 12, at + 24);
    if (head(a, p) !== head(c, q)) return false;
    const fixed = a.charCodeAt(p + 4) + ((a.charCodeAt(p + 2) << 8) | a.charCodeAt(p + 3));
    const pa = a.slice(p + 24, p + 24 + bodyA);
    const pc = c.slice(q + 24, q + 24 + bodyC);
    if (pa !== pc) {
      if (pa.slice(0, fixed) !== pc.slice(0, fixed)) return false;
      const x = number.exec(pa.slice(fixed));
      const y = number.exec(pc.slice(fixed));
      if (!x || !y || x[1] !== y[1]) return false;
      padded++;
    }
    p += 24 + bodyA;
    q += 24 + bodyC;
  }
  return padded > 0 && p === a.length && q === c.length;
}

function latin1(a: Uint8Array): string {
  let s = "";
  for (let i = 0; i < a.length; i += 8192) s += String.fromCharCode(...a.subarray(i, i + 8192));
  return s;
}

function same(stock: Reply, ours: Reply, binary: boolean, renumber: boolean): boolean {
  if (stock.closed !== ours.closed || stock.complete !== ours.complete) return false;
  const a = canonical(stock.bytes, binary, renumber);
  const c = canonical(ours.bytes, binary, renumber);
  if (a.text !== c.text || a.seconds.length !== c.seconds.length) return false;
  return a.seconds.every((s, i) => Math.abs(s - c.seconds[i]!) <= SECONDS_TOLERANCE);
}

// ---------------------------------------------------------------------------------- display

function hex(a: Uint8Array): string {
  return Array.from(a, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Binary packets, one a line: magic, opcode, status/vbucket, opaque, cas, extras, key, value. */
function showPackets(bytes: Uint8Array): string {
  const lines: string[] = [];
  let p = 0;
  while (bytes.length - p >= 24) {
    const dv = new DataView(bytes.buffer, bytes.byteOffset + p);
    const keylen = dv.getUint16(2);
    const extlen = bytes[p + 4]!;
    const bodylen = dv.getUint32(8);
    const body = bytes.subarray(p + 24, Math.min(bytes.length, p + 24 + bodylen));
    lines.push(
      `  magic=${hex(bytes.subarray(p, p + 1))} op=0x${bytes[p + 1]!.toString(16).padStart(2, "0")} keylen=${keylen} extlen=${extlen} ` +
        `status=${dv.getUint16(6)} bodylen=${bodylen} opaque=0x${dv.getUint32(12).toString(16)} cas=${dv.getBigUint64(16)}` +
        (extlen ? ` extras=${hex(body.subarray(0, extlen))}` : "") +
        (keylen ? ` key=${JSON.stringify(latin1(body.subarray(extlen, extlen + keylen)))}` : "") +
        (bodylen > extlen + keylen ? ` value=${JSON.stringify(latin1(body.subarray(extlen + keylen)))}` : ""),
    );
    if (p + 24 + bodylen > bytes.length) {
      lines[lines.length - 1] += " (truncated)";
      return lines.join("\n");
    }
    p += 24 + bodylen;
  }
  if (p < bytes.length) lines.push(`  raw=${hex(bytes.subarray(p))}`);
  return lines.join("\n");
}

function showBytes(bytes: Uint8Array, binary: boolean): string {
  if (binary) return showPackets(bytes);
  return show(bytes)
    .split("\n")
    .map((l) => "  " + l)
    .join("\n");
}

// ---------------------------------------------------------------------------------- the run

/** Both servers, restartable. */
class Servers {
  stock!: ServerProcess;
  ours!: ServerProcess;
  constructor(private readonly shards: number) {}
  async start(): Promise<void> {
    [this.stock, this.ours] = await Promise.all([startStock(["-t", String(this.shards)]), startOurs(["-t", String(this.shards)])]);
  }
  async stop(): Promise<void> {
    this.stock?.proc.kill("SIGKILL");
    await Promise.all([this.stock?.proc.exited, this.ours?.stop()]);
  }
  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }
}

interface RunOutcome {
  ok: boolean;
  /** The servers' CAS counters differed before the run (an earlier run consumed differently). */
  diverged?: string;
  ctx: Ctx;
  sent: Uint8Array;
  pieces: number[] | null;
  stock: Reply;
  ours: Reply;
}

const PROBE = b("ms fzcasprobe 1 c\r\nx\r\n");

export class Fuzzer {
  private servers: Servers;
  private run = 0;
  readonly result: FuzzResult = { sequences: 0, runs: 0, requests: 0, bytes: 0, splitAtSends: 0, splitSkipped: 0, closed: 0, timeouts: 0, failures: [], ms: 0 };

  constructor(private readonly o: FuzzOptions) {
    this.servers = new Servers(o.shards);
  }

  private genOptions(): GenOptions {
    const known = this.o.known;
    return {
      minUnits: this.o.minUnits,
      maxUnits: this.o.maxUnits,
      exactCas: this.o.shards === 1,
      avoid: known.length === 0 ? undefined : (u, before, binary) => known.some((d) => d.matches(u, before, { shards: this.o.shards, binary })),
    };
  }

  async start(): Promise<void> {
    await this.servers.start();
  }

  async stop(): Promise<void> {
    await this.servers.stop();
  }

  /** The CAS counter both servers will use next (1 shard); null when they disagree. */
  private async probe(): Promise<{ base: bigint | null; stock: string; ours: string }> {
    const [s, o] = await exchangePair(this.servers.stock.port, this.servers.ours.port, PROBE, null, b("\r\n"));
    const st = latin1(s.bytes);
    const ou = latin1(o.bytes);
    const m = /^HD c(\d+)\r\n$/.exec(st);
    if (st !== ou || !m) return { base: null, stock: st, ours: ou };
    return { base: BigInt(m[1]!), stock: st, ours: ou };
  }

  /** Runs `units` once on fresh keys. */
  private async runOnce(units: readonly Unit[], binary: boolean, mode: Mode, pieceSeed: number): Promise<RunOutcome> {
    const run = ++this.run;
    const ctx: Ctx = { prefix: prefixFor(run), casBase: null };
    const renumber = this.o.shards > 1;
    let diverged: string | undefined;
    if (!renumber) {
      const p = await this.probe();
      if (p.base === null) diverged = `CAS probe: stock ${JSON.stringify(p.stock)}, ours ${JSON.stringify(p.ours)}`;
      ctx.casBase = p.base;
    }
    const last = units[units.length - 1];
    const closes = last?.closes === true;
    const nonce = run.toString(36);
    const sentinel = binary ? binRequest(0x0a, { opaque: 0x5e000000 | (run & 0xffffff) }) : b(`mg fzend Ofz${nonce}\r\nmn\r\n`);
    const sentinelAnswer = binary ? noopAnswer(0x5e000000 | (run & 0xffffff)) : b(`EN Ofz${nonce}\r\nMN\r\n`);
    const rendered = units.map((u) => u.render(ctx));
    const sent = cat(...rendered, closes ? new Uint8Array(0) : sentinel);
    let pieces: number[] | null = null;
    if (mode === "split") pieces = randomPieces(sent.length, pieceSeed);
    else if (mode === "split-at-sends") pieces = piecesAtSends(units, rendered, sent.length, pieceSeed);
    const [stock, ours] = await exchangePair(this.servers.stock.port, this.servers.ours.port, sent, pieces, closes ? null : sentinelAnswer);
    this.result.runs++;
    this.result.requests += units.length;
    this.result.bytes += sent.length;
    if (stock.closed) this.result.closed++;
    const ok = diverged === undefined && same(stock, ours, binary, renumber);
    const outcome = { ok, diverged, ctx, sent, pieces, stock, ours };
    if (!stock.complete || !ours.complete) {
      this.result.timeouts++;
      if (process.env.SHOAL_FUZZ_VERBOSE === "1") this.o.log(this.describe("fuzz: no sentinel answer", units, binary, outcome));
    }
    return outcome;
  }

  /** Whether the generator could have produced `units` for `mode` (a candidate of the shrinker). */
  private admissible(units: readonly Unit[], binary: boolean, mode: Mode): boolean {
    const avoid = this.genOptions().avoid;
    for (let i = 0; i < units.length; i++) {
      const before = units.slice(0, i);
      if (!fits(units[i]!, before) || avoid?.(units[i]!, before, binary)) return false;
      if (units[i]!.closes && i !== units.length - 1) return false;
    }
    if (mode === "split") return segmentSensitivity(units) === null;
    if (mode === "split-at-sends") return sendOffsets(units).length > 0 && !dependsOnReadCount(units, binary);
    return true;
  }

  /** Shrinks `units` to a shorter list that still differs (ddmin over units). */
  private async shrink(units: Unit[], binary: boolean, mode: Mode, pieceSeed: number): Promise<{ units: Unit[]; last: RunOutcome | null; tries: number }> {
    let tries = 0;
    let last: RunOutcome | null = null;
    const fails = async (cand: Unit[]): Promise<boolean> => {
      if (tries >= this.o.shrinkBudget || !this.admissible(cand, binary, mode)) return false;
      tries++;
      const fixed = cand.length > 0 && cand[cand.length - 1]!.open && !cand[cand.length - 1]!.closes ? [...cand, EOL_UNIT] : cand;
      const out = await this.runOnce(fixed, binary, mode, pieceSeed);
      if (out.diverged) {
        // Only an earlier candidate can have done this: start both afresh and try again.
        await this.servers.restart();
        const again = await this.runOnce(fixed, binary, mode, pieceSeed);
        if (!again.ok && !again.diverged) last = again;
        return !again.ok && !again.diverged;
      }
      if (!out.ok) last = out;
      return !out.ok;
    };
    let n = 2;
    while (units.length >= 2 && tries < this.o.shrinkBudget) {
      const size = Math.ceil(units.length / n);
      let reduced = false;
      for (let start = 0; start < units.length; start += size) {
        const cand = [...units.slice(0, start), ...units.slice(start + size)];
        if (cand.length > 0 && (await fails(cand))) {
          units = cand;
          n = Math.max(n - 1, 2);
          reduced = true;
          break;
        }
      }
      if (!reduced) {
        if (n >= units.length) break;
        n = Math.min(units.length, n * 2);
      }
    }
    return { units, last, tries };
  }

  private describe(title: string, units: readonly Unit[], binary: boolean, out: RunOutcome): string {
    const lines = [
      title,
      `  units: ${units.map((u) => u.op).join(", ")}`,
      `  key prefix ${JSON.stringify(out.ctx.prefix)}, CAS counter before the run: ${out.ctx.casBase ?? "not probed"}` + (out.diverged ? `, ${out.diverged}` : ""),
      `  sent (${out.sent.length} bytes${out.pieces ? `, to ours in pieces of ${out.pieces.join(",")}` : ", one write"}):`,
      showBytes(out.sent, binary),
      `  stock (closed=${out.stock.closed}, complete=${out.stock.complete}):`,
      showBytes(out.stock.bytes, binary),
      `  ours -t ${this.o.shards} (closed=${out.ours.closed}, complete=${out.ours.complete}):`,
      showBytes(out.ours.bytes, binary),
    ];
    return lines.join("\n");
  }

  private async failed(index: number, seq: Sequence, mode: Mode, pieceSeed: number, out: RunOutcome): Promise<void> {
    const o = this.o;
    const head =
      `fuzz difference: seed ${o.seed}, sequence ${index}, ${seq.binary ? "binary" : "text"}, ${mode}, ${o.shards} shard(s) ` +
      `(replay: SHOAL_FUZZ_SEED=${o.seed} SHOAL_FUZZ_ONLY=${index} scripts/test.sh test/memcached/fuzz-diff.test.ts)`;
    let report = this.describe(`${head}\n--- as generated (${seq.units.length} units)`, seq.units, seq.binary, out);
    await this.servers.restart();
    // A difference that depends on timing shows only sometimes: say how often.
    let again = 0;
    for (let i = 0; i < 3; i++) if (!(await this.runOnce(seq.units, seq.binary, mode, pieceSeed)).ok) again++;
    report += `\n--- the same sequence differed again in ${again} of 3 runs on fresh keys`;
    if (again === 0 && (!out.stock.complete || !out.ours.complete)) {
      // A server went quiet for seconds in the middle of an answer and never again: a stalled
      // machine, not an answer (a difference that depends on timing still shows its answers).
      o.log(`${report}\n--- not counted: an answer was cut short by the idle limit and the difference did not come back`);
      return;
    }
    if (again === 0 && !out.diverged && out.stock.closed === out.ours.closed && onlyDeltaPadding(out.stock.bytes, out.ours.bytes, seq.binary, o.shards > 1)) {
      // Stock's in-place incr/decr raced with its LRU maintainer thread (see onlyDeltaPadding).
      o.log(`${report}\n--- not counted: only an incr/decr result stored in place on one side and as a fresh item on the other, not seen again`);
      return;
    }
    if (!out.diverged) {
      const { units, last, tries } = await this.shrink([...seq.units], seq.binary, mode, pieceSeed);
      if (last !== null) report += "\n" + this.describe(`--- shrunk to ${units.length} unit(s) in ${tries} runs`, units, seq.binary, last);
    }
    o.log(report);
    this.result.failures.push({ index, mode, report });
    await this.servers.restart();
  }

  /** Runs the configured sequences; returns when done or after maxFailures differences. */
  async runAll(): Promise<FuzzResult> {
    const t0 = Date.now();
    const o = this.o;
    const indices = o.only ?? Array.from({ length: o.sequences }, (_, i) => i);
    const gen = this.genOptions();
    for (const index of indices) {
      if (this.result.failures.length >= o.maxFailures) break;
      const seq = generate(o.seed, index, gen);
      this.result.sequences++;
      const sensitive = segmentSensitivity(seq.units) !== null;
      for (const mode of (sensitive ? ["whole", "split-at-sends"] : ["whole", "split"]) as Mode[]) {
        if (mode === "split-at-sends" && (sendOffsets(seq.units).length === 0 || dependsOnReadCount(seq.units, seq.binary))) {
          this.result.splitSkipped++;
          continue;
        }
        if (mode === "split-at-sends") this.result.splitAtSends++;
        const pieceSeed = (o.seed ^ Math.imul(index + 7, 0x2545f491)) >>> 0;
        const out = await this.runOnce(seq.units, seq.binary, mode, pieceSeed);
        if (!out.ok) {
          await this.failed(index, seq, mode, pieceSeed, out);
          break;
        }
      }
    }
    this.result.ms = Date.now() - t0;
    return this.result;
  }
}

/** Indices i such that stock has sent every answer once it is done with units[i]. */
function sendOffsets(units: readonly Unit[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < units.length - 1; i++) {
    const u = units[i]!;
    if (u.sendPoint && !u.open && !(i > 0 && units[i - 1]!.open)) out.push(i);
  }
  return out;
}

/** Pieces cut after some of the send points of `units` (rendered as `rendered`). */
function piecesAtSends(units: readonly Unit[], rendered: readonly Uint8Array[], total: number, seed: number): number[] {
  const r = new Rng(seed);
  const ends: number[] = [];
  let off = 0;
  const at = new Set(sendOffsets(units));
  for (let i = 0; i < rendered.length; i++) {
    off += rendered[i]!.length;
    if (at.has(i) && r.chance(0.7)) ends.push(off);
  }
  const pieces: number[] = [];
  let last = 0;
  for (const e of ends) {
    pieces.push(e - last);
    last = e;
  }
  if (total > last) pieces.push(total - last);
  return pieces;
}

const EOL_UNIT: Unit = { op: "empty", keys: [], render: () => b("\r\n") };

function noopAnswer(opaque: number): Uint8Array {
  const r = new Uint8Array(24);
  r[0] = 0x81;
  r[1] = 0x0a;
  new DataView(r.buffer).setUint32(12, opaque);
  return r;
}

/** The seed: SHOAL_FUZZ_SEED if set, else `fallback` (a random one when not given). */
export function fuzzSeed(fallback?: number): number {
  const env = process.env.SHOAL_FUZZ_SEED;
  if (env !== undefined && env !== "") return Number(env) >>> 0;
  return fallback ?? (Math.random() * 4294967296) >>> 0;
}

/**
 * Registers the fuzz tests: one describe per shard count (1: exact bytes against stock -t 1;
 * 2: CAS renumbered against stock -t 2), each running `sequences` sequences of `seed`. The seed is
 * in the test names and the summary lines; a difference fails the test with its report.
 */
export function defineFuzzSuite(o: { seed: number; sequences: number; maxFailures: number; shrinkBudget: number; timeoutMs: number }): void {
  const only = fuzzOnly();
  for (const shards of [1, 2] as const) {
    describe(`random sequences, ours -t ${shards} against stock -t ${shards}`, () => {
      const fuzzer = new Fuzzer({
        seed: o.seed,
        sequences: o.sequences,
        only,
        shards,
        minUnits: 20,
        maxUnits: 40,
        // SHOAL_FUZZ_KNOWN=0: generate the known differences' input too (to check a fix).
        known: process.env.SHOAL_FUZZ_KNOWN === "0" ? [] : KNOWN_DIFFERENCES,
        maxFailures: o.maxFailures,
        shrinkBudget: o.shrinkBudget,
        log: (line) => console.log(line),
      });

      beforeAll(async () => {
        await fuzzer.start();
      }, 60_000);

      afterAll(async () => {
        await fuzzer.stop();
      }, 30_000);

      test(`${only ? `sequences ${only.join(",")}` : `${o.sequences} sequences`} of seed ${o.seed}`, async () => {
        const r = await fuzzer.runAll();
        console.log(
          `fuzz -t ${shards}: seed ${o.seed}: ${r.sequences} sequences, ${r.runs} runs, ${r.requests} requests, ${r.bytes} bytes ` +
            `(${r.splitAtSends} split only after send points, ${r.splitSkipped} not split, ${r.closed} closed by stock, ` +
            `${r.timeouts} without the sentinel) in ${r.ms} ms, ${((r.requests * 1000) / Math.max(1, r.ms)).toFixed(0)} requests/s`,
        );
        expect(r.failures.map((f) => f.report)).toEqual([]);
      }, o.timeoutMs);
    });
  }
}

/** SHOAL_FUZZ_ONLY=3,17: run only these sequence indices (with SHOAL_FUZZ_SEED, to replay). */
export function fuzzOnly(): number[] | undefined {
  const env = process.env.SHOAL_FUZZ_ONLY;
  if (env === undefined || env === "") return undefined;
  return env.split(",").map((s) => Number(s.trim()));
}
