/**
 * A client session pauses once it has rendered PAUSE_BYTES that the transport has not sent
 * (Session.pausable): pipelined commands stop between commands, a multiget between keys, and
 * resume() goes on where it stopped. The answers are byte for byte those of a session that
 * never pauses (stock's, checked by the differential tests), while what one step renders stays
 * bounded (a client that asks for more than it reads cannot make the server copy it all).
 */
import { describe, expect, test } from "bun:test";
import { ManualClock } from "../../examples/memcached/clock.ts";
import { Engine } from "../../examples/memcached/engine.ts";
import { PAUSE_BYTES, Session } from "../../examples/memcached/session.ts";
import { b, cat, show, stockLikeSettings } from "./lib/harness.ts";
import { binRequest } from "./lib/binproto.ts";

const ITEMS = 40;
const VALUE = 50_000;

function engineWithItems(): Engine {
  const engine = new Engine(stockLikeSettings(), { memory: "js", clock: new ManualClock() });
  const s = new Session(engine);
  for (let i = 0; i < ITEMS; i++) s.feed(b(`set k${i} ${i} 0 ${VALUE}\r\n${String.fromCharCode(65 + (i % 26)).repeat(VALUE)}\r\n`));
  expect(s.out.bytes().length).toBe(ITEMS * 8);
  return engine;
}

interface Drive {
  bytes: Uint8Array;
  /** Largest output one feed or resume left to send. */
  maxStep: number;
  pauses: number;
}

/** Feeds `data` (in pieces of `chunks` sizes, then the rest) as the TCP transport does. */
function drive(engine: Engine, data: Uint8Array, chunks: number[], pausable: boolean): Drive {
  engine.clock.tick();
  const s = new Session(engine);
  s.pausable = pausable;
  const out: Uint8Array[] = [];
  let maxStep = 0;
  let pauses = 0;
  const collect = (): void => {
    const send = s.midValue ? s.keep : s.out.pos;
    maxStep = Math.max(maxStep, send);
    out.push(s.out.bytes().slice(0, send));
    s.holdFrom(send);
  };
  const feed = (piece: Uint8Array): void => {
    s.feed(piece);
    collect();
    while (s.paused) {
      pauses++;
      s.resume();
      collect();
    }
    // The input is the caller's again: a session that kept reading it would see garbage.
    piece.fill(0x21);
  };
  let off = 0;
  for (const n of chunks) {
    feed(data.slice(off, off + n));
    off += n;
  }
  if (off < data.length) feed(data.slice(off));
  s.close();
  return { bytes: cat(...out), maxStep, pauses };
}

/** The same input to a pausing and a never-pausing session, each on its own engine. */
function compare(data: Uint8Array, chunks: number[] = []): { paused: Drive; ref: Drive; engines: Engine[] } {
  const a = engineWithItems();
  const r = engineWithItems();
  const paused = drive(a, data, chunks, true);
  const ref = drive(r, data, chunks, false);
  if (show(paused.bytes) !== show(ref.bytes)) expect(paused.bytes.length).toBe(ref.bytes.length);
  expect(Buffer.from(paused.bytes).equals(Buffer.from(ref.bytes))).toBe(true);
  return { paused, ref, engines: [a, r] };
}

const keys = (n: number): string => Array.from({ length: n }, (_, i) => (i % 9 === 4 ? `miss${i}` : `k${i % ITEMS}`)).join(" ");
/** One step may render PAUSE_BYTES and then one more value before it stops. */
const BOUND = PAUSE_BYTES + VALUE + 1024;

describe("a pausable session", () => {
  test("a multiget line of 200 keys (10 MB of answers): paused between keys, same bytes", () => {
    for (const chunks of [[], [7, 100, 3000]]) {
      const { paused, ref } = compare(b(`get ${keys(200)}\r\nget k1\r\nversion\r\n`), chunks);
      expect(ref.maxStep).toBeGreaterThan(8_000_000);
      expect(paused.pauses).toBeGreaterThan(20);
      expect(paused.maxStep).toBeLessThanOrEqual(BOUND);
    }
  }, 30_000);

  test("gets, gat and gats cut by pauses: the same cas values, and the touch reaches every key", () => {
    const { paused, engines } = compare(b(`gets ${keys(100)}\r\ngat 1000 ${keys(100)}\r\ngats 0 ${keys(100)}\r\ngat 500 ${keys(100)}\r\n`));
    expect(paused.pauses).toBeGreaterThan(20);
    expect(paused.maxStep).toBeLessThanOrEqual(BOUND);
    const ttl = engines.map((e) => drive(e, b(`mg k39 t\r\nmg k0 t\r\n`), [], false).bytes);
    expect(show(ttl[0]!)).toBe(show(ttl[1]!));
    expect(show(ttl[0]!)).toContain("HD t500");
  }, 30_000);

  test("pipelined mg and binary GETQ: paused between commands, same bytes", () => {
    const mg = b(Array.from({ length: 300 }, (_, i) => `mg k${i % ITEMS} v f\r\n`).join("") + "mn\r\n");
    const m = compare(mg, [1000]);
    expect(m.paused.pauses).toBeGreaterThan(20);
    expect(m.paused.maxStep).toBeLessThanOrEqual(BOUND);
    const getq = cat(...Array.from({ length: 300 }, (_, i) => binRequest(0x09, { key: `k${i % ITEMS}`, opaque: i })), binRequest(0x0a, {}));
    const g = compare(getq, [5000, 5000]);
    expect(g.paused.pauses).toBeGreaterThan(20);
    expect(g.paused.maxStep).toBeLessThanOrEqual(BOUND);
  }, 30_000);

  test("a too-long key at the end of a long multiget: only stock's CLIENT_ERROR, the keys before it counted as looked up", () => {
    const { paused, engines } = compare(b(`get ${keys(200)} ${"x".repeat(251)}\r\nget k2\r\n`));
    expect(new TextDecoder().decode(paused.bytes).startsWith("CLIENT_ERROR bad command line format\r\nVALUE k2 2 ")).toBe(true);
    expect(paused.maxStep).toBeLessThanOrEqual(BOUND);
    const hits = engines.map((e) => /STAT get_hits (\d+)/.exec(new TextDecoder().decode(drive(e, b("stats\r\n"), [], false).bytes))![1]);
    // 178 of the 200 keys before the long one hit (every ninth is a miss), then get k2.
    expect(hits).toEqual(["179", "179"]);
  }, 30_000);

  test("a set after the paused commands, its value arriving later: stored once resumed", () => {
    const data = b(`${Array.from({ length: 20 }, () => `get k1 k2\r\n`).join("")}set late 0 0 10\r\n0123456789\r\nget late\r\n`);
    const { paused } = compare(data, [data.length - 15]);
    expect(paused.pauses).toBeGreaterThan(0);
    expect(new TextDecoder().decode(paused.bytes).endsWith("STORED\r\nVALUE late 0 10\r\n0123456789\r\nEND\r\n")).toBe(true);
  }, 30_000);
});
