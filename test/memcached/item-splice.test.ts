/**
 * A get's large value is sent from the item's memory (Store.lend, Session.spliceItem) instead of
 * being copied into the connection's output. Until the send is done the item's memory must stay
 * what the client is being sent: a delete or replacement unlinks it but frees its chunk only
 * afterwards, its page is neither moved nor re-cut, an allocation meeting it at the LRU tail
 * counts it (stock's lrutail_reflocked) and evicts it as stock does, its chunk freed once sent,
 * an incr writes a new item, and closing the store keeps the arena.
 */
import { expect, test } from "bun:test";
import { Store, CS } from "../../examples/memcached/store.ts";
import { ManualClock } from "../../examples/memcached/clock.ts";
import { murmur3 } from "../../examples/memcached/hash.ts";
import { type ExchangeOptions, exchange, startOurs, startStock } from "./lib/harness.ts";
import { command, find, setItem, settledHits, stalledReader, stats } from "./lib/lend.ts";

const dec = (a: { bytes: Uint8Array }) => Buffer.from(a.bytes).toString("latin1");

const enc = new TextEncoder();

const filled = (v: Uint8Array, fill: number) => v.subarray(0, v.length - 2).every((b) => b === fill);

test("a deleted item being sent keeps its chunk until the send is done, then the chunk is free", () => {
  const s = new Store({ maxBytes: 16 << 20, itemSizeMax: 1 << 20, clock: new ManualClock() });
  const a = setItem(s, "a", 60_000, 0x61);
  const cls = s.clsid(a);
  const nb = s.lend(a, 0, 60_000)!;
  expect(s.lentItems).toBe(1);
  s.unlink(a); // delete a
  expect(find(s, "a")).toBe(-1);
  const free = s.freeChunks(cls);
  // Items of the same class take every free chunk but never a's.
  const others: number[] = [];
  for (let i = 0; i < free; i++) others.push(setItem(s, `b${i}`, 60_000, 0x62));
  expect(others).not.toContain(a);
  expect(filled(nb.bytes, 0x61)).toBe(true);
  expect(s.freeChunks(cls)).toBe(0);
  nb.pin(); // the kernel still sends it after the transport released it
  nb.release();
  expect(s.freeChunks(cls)).toBe(0);
  nb.unpin();
  expect(s.lentItems).toBe(0);
  expect(s.freeChunks(cls)).toBe(1); // a's chunk, free now
  expect(setItem(s, "c", 60_000, 0x63)).toBe(a);
  s.close();
});

test("an item sent twice at once is freed after the second send; a linked one is simply let go", () => {
  const s = new Store({ maxBytes: 16 << 20, itemSizeMax: 1 << 20, clock: new ManualClock() });
  const a = setItem(s, "a", 30_000, 0x61);
  const cls = s.clsid(a);
  const one = s.lend(a, 0, 30_000)!;
  const two = s.lend(a, 0, 30_000)!;
  setItem(s, "a", 30_000, 0x7a); // replaced while sent
  const free = s.freeChunks(cls);
  one.release();
  expect(s.freeChunks(cls)).toBe(free);
  expect(filled(two.bytes, 0x61)).toBe(true);
  two.release();
  expect(s.freeChunks(cls)).toBe(free + 1);
  // Still linked when the send ends: nothing is freed, the item stays.
  const b = setItem(s, "b", 30_000, 0x62);
  s.lend(b, 0, 30_000)!.release();
  expect(find(s, "b")).toBe(b);
  expect(s.lentItems).toBe(0);
  s.close();
});

test("an allocation evicts tail items being sent as stock does (lrutail_reflocked), then the next, whose chunk it takes", () => {
  // One page: 16 chunks of the 60 KB class, then evictions.
  const s = new Store({ maxBytes: 1 << 20, itemSizeMax: 1 << 20, clock: new ManualClock() });
  const refs: number[] = [];
  for (let i = 0; ; i++) {
    const k = enc.encode(`k${i}`);
    const ref = s.alloc(k, 0, k.length, 0, 0, 60_000);
    if (ref < 0) break;
    s.freePending(ref);
    refs.push(setItem(s, `k${i}`, 60_000, i & 0xff));
    if (s.classStats[s.clsid(ref) * CS.COUNT + CS.EVICTED]! > 0) break;
  }
  const cls = s.clsid(refs[0]!);
  const evicted = () => s.classStats[cls * CS.COUNT + CS.EVICTED]!;
  const before = evicted();
  // The two oldest linked items are being sent.
  const linked = refs.filter((r, i) => find(s, `k${i}`) === r);
  const tail = [linked[0]!, linked[1]!];
  const keys = tail.map((r) => `k${refs.indexOf(r)}`);
  const sends = tail.map((r) => s.lend(r, 0, 60_000)!);
  // Both are counted and evicted (stock: "it won't be reusable yet"); the third oldest's chunk is taken.
  const third = linked[2]!;
  expect(setItem(s, "new", 60_000, 0xee)).toBe(third);
  expect(evicted()).toBe(before + 3);
  expect(s.classStats[cls * CS.COUNT + CS.LRUTAIL_REFLOCKED]).toBe(2);
  expect(keys.map((k) => find(s, k))).toEqual([-1, -1]);
  expect(find(s, `k${refs.indexOf(third)}`)).toBe(-1);
  // What is being sent stays as it was; the chunks come back once sent.
  tail.forEach((r, i) => expect(filled(sends[i]!.bytes, refs.indexOf(r) & 0xff)).toBe(true));
  const free = s.freeChunks(cls);
  for (const nb of sends) nb.release();
  expect(s.freeChunks(cls)).toBe(free + 2);
  s.close();
});

test("incr of an item being sent writes a new item; the bytes being sent do not change", () => {
  const s = new Store({ maxBytes: 16 << 20, itemSizeMax: 1 << 20, clock: new ManualClock() });
  const a = setItem(s, "n", 20_000, 0); // "\0\0\0...": not a number yet
  s.mem[s.valueOffset(a)] = 0x35; // "5" then NULs: 5 for strtoull
  const nb = s.lend(a, 0, 20_000)!;
  const k = enc.encode("n");
  expect(s.addDelta(k, 0, 1, murmur3(k, 0, 1), true, 1n, 0)).toBe(0 /* DeltaResult.OK */);
  expect(s.deltaReplaced).toBe(true);
  expect(s.deltaValue).toBe("6");
  expect(nb.bytes[0]).toBe(0x35);
  nb.release();
  // Not being sent: in place, as stock does when nobody holds the item.
  const b = find(s, "n");
  expect(s.addDelta(k, 0, 1, murmur3(k, 0, 1), true, 1n, 0)).toBe(0);
  expect(s.deltaReplaced).toBe(false);
  expect(find(s, "n")).toBe(b);
  s.close();
});

test("a page with an item being sent is not moved to another class until the send is done", () => {
  const s = new Store({ maxBytes: 4 << 20, itemSizeMax: 1 << 20, clock: new ManualClock() });
  // Two pages of the 60 KB class (the first fills before the second is cut), then one item left on each.
  const refs: number[] = [];
  for (let i = 0; i < 20; i++) refs.push(setItem(s, `k${i}`, 60_000, 0x40 + i));
  const cls = s.clsid(refs[0]!);
  const page = (r: number) => Math.floor((r * 8) / s.pageSize);
  const pages = [...new Set(refs.map(page))];
  expect(pages.length).toBe(2);
  const sent = refs.filter((r) => page(r) === pages[0]);
  const nbs = sent.map((r) => s.lend(r, 0, 60_000)!);
  for (let i = 0; i < 20; i++) if (page(refs[i]!) === pages[0]) s.unlink(refs[i]!); // deleted while sent
  // The second page is busy too while one of its items is sent; the first only by its sends.
  const keepOn2 = refs.find((r) => page(r) === pages[1])!;
  const nb2 = s.lend(keepOn2, 0, 60_000)!;
  const dst = s.classFor(200);
  expect(s.reassign(cls, dst)).toBe("ok"); // accepted, waits for a page (stock: busy mover)
  expect(s.reassignRetry()).toBe(false);
  sent.forEach((r, i) => expect(filled(nbs[i]!.bytes, 0x40 + refs.indexOf(r))).toBe(true));
  nb2.release();
  // Now the second page (its item rescued or not) can go; the first still waits.
  expect(s.reassignRetry()).toBe(true);
  expect(s.classPages[cls]).toBe(1);
  sent.forEach((r, i) => expect(filled(nbs[i]!.bytes, 0x40 + refs.indexOf(r))).toBe(true));
  for (const nb of nbs) nb.release();
  expect(s.lentItems).toBe(0);
  s.close();
});

test("closing the store while an item is being sent keeps the arena until the send is done", () => {
  const s = new Store({ maxBytes: 4 << 20, itemSizeMax: 1 << 20, clock: new ManualClock() });
  const a = setItem(s, "a", 60_000, 0x61);
  const nb = s.lend(a, 0, 60_000)!;
  s.close();
  expect(s.mem.length).toBeGreaterThan(0);
  expect(filled(nb.bytes, 0x61)).toBe(true);
  nb.release();
  expect(s.mem.length).toBe(0); // unmapped now (the view reads as empty)
});

const value = (prefix: string, i: number) => {
  const v = Buffer.alloc(60_000);
  for (let j = 0; j < v.length; j++) v[j] = 0x41 + ((i + j + prefix.charCodeAt(0)) % 26);
  return v;
};

// With -t 2 half the values are the other shard's, lent across shards (router.ts LENDS_FLAG).
for (const threads of [1, 2]) test(`-t ${threads}: stalled readers get their large values intact though they were deleted or evicted and their memory reused meanwhile`, async () => {
  const server = await startOurs(["-t", String(threads), "-m", "16"]);
  const port = server.port;
  try {
    const N = 100;
    const sets: Buffer[] = [];
    for (const p of ["a", "b"]) {
      for (let i = 0; i < N; i++) sets.push(Buffer.from(`set ${p}${i} 0 0 60000 noreply\r\n`), value(p, i), Buffer.from("\r\n"));
    }
    sets.push(Buffer.from("mn\r\n"));
    expect(await command(port, Buffer.concat(sets), "MN\r\n")).toBe("MN\r\n");
    // Two readers that stop reading: the server queues what their sockets do not take.
    const a = await stalledReader(port, "a", N);
    const hitsA = await settledHits(port);
    const b = await stalledReader(port, "b", N);
    const hitsB = (await settledHits(port)) - hitsA;
    expect(hitsA).toBeLessThan(N);
    expect(hitsB).toBeLessThan(N);
    // Every a is deleted, every b left to eviction: the memory is filled with other values
    // several times over.
    const junk: Buffer[] = [];
    for (let i = 0; i < N; i++) junk.push(Buffer.from(`delete a${i} noreply\r\n`));
    for (let i = 0; i < 3 * N; i++) junk.push(Buffer.from(`set j${i} 0 0 60000 noreply\r\n`), Buffer.alloc(60_000, 0x7e), Buffer.from("\r\n"));
    junk.push(Buffer.from("mn\r\n"));
    expect(await command(port, Buffer.concat(junk), "MN\r\n")).toBe("MN\r\n");
    const after = await stats(port);
    expect(after.get("evictions")!).toBeGreaterThan(N);
    // Allocations passed over the b being sent from its item (stock's counter).
    if (threads === 1) expect(after.get("lrutail_reflocked")!).toBeGreaterThan(0);
    // What was answered before is every value as it was; the rest are misses.
    for (const [reader, p, hits] of [[a, "a", hitsA], [b, "b", hitsB]] as const) {
      const expected = Buffer.concat([
        ...Array.from({ length: hits }, (_, i) => Buffer.concat([Buffer.from(`VALUE ${p}${i} 0 60000\r\n`), value(p, i), Buffer.from("\r\nEND\r\n")])),
        Buffer.from("END\r\n".repeat(N - hits)),
      ]);
      const got = await reader.go();
      expect(got.length).toBe(expected.length);
      expect(got.equals(expected)).toBe(true);
    }
    // All sent: the memory is the cache's again.
    const back = await command(port, enc.encode("set z 0 0 60000\r\n" + "z".repeat(60_000) + "\r\nget z\r\n"), "END\r\n");
    expect(back.startsWith("STORED\r\nVALUE z 0 60000\r\n")).toBe(true);
  } finally {
    await server.stop();
  }
}, 90_000);

/** Bytes of `s` (latin1). */
const L = (s: string) => Buffer.from(s, "latin1");

/**
 * The same bytes to stock and to ours (with two shards, keys of both: other shards' answers mix
 * with values sent from this shard's items), around values large enough to be sent from their
 * items: every answer byte the same, including where a command fails after a value, a value
 * still arrives after one, a multiget pauses, and meta gets.
 */
for (const threads of [1, 2]) test(`-t ${threads}: large values sent from their items: the same bytes as stock around failures, pauses and values still arriving`, async () => {
  const stock = await startStock(["-t", String(threads)]);
  const ours = await startOurs(["-t", String(threads)]);
  try {
    const big = (n: number, c: number) => Buffer.alloc(n, c);
    const fill: Buffer[] = [];
    const names: string[] = [];
    for (let i = 0; i < 8; i++) {
      const n = [60_000, 20_000, 300_000, 17_000][i % 4]!;
      names.push(`big${i}`);
      fill.push(L(`set big${i} ${i} 0 ${n}\r\n`), big(n, 0x61 + i), L("\r\n"));
    }
    fill.push(L("set small 0 0 5\r\nhello\r\nmn\r\n"));
    for (const port of [stock.port, ours.port]) {
      expect(dec(await exchange(port, Buffer.concat(fill), { until: L("MN\r\n"), idleMs: 5000 }))).toEndWith("MN\r\n");
    }
    const all = names.join(" ");
    const cases: [string, Buffer, ExchangeOptions][] = [
      ["multiget", L(`get ${all} nokey small\r\nget big0 big1\r\n`), {}],
      ["many gets, one read", L(names.map((n) => `get ${n}\r\n`).join("").repeat(3)), {}],
      ["a too-long key after values", L(`get big0\r\nget big1 big2 ${"x".repeat(251)}\r\nget big3\r\n`), {}],
      ["a too-long key in the same get", L(`get big0 big1 big2 big3 ${"x".repeat(251)} big4\r\n`), {}],
      ["a value still arriving after a get", L(`get big1 big2\r\nset k 0 0 5\r\nabcde\r\nget k big5\r\n`), { chunks: [`get big1 big2\r\nset k 0 0 5\r\nab`.length], pauseMs: 200 }],
      ["noreply sets between gets", L(`get big6\r\nset n 0 0 1 noreply\r\n1\r\nget big7 n\r\n`), {}],
      ["meta gets", L(`mg big0 v f t k\r\nmg big1 v q\r\nmg nokey v q\r\nmg big2 s v O123\r\nmn\r\n`), {}],
      ["a line too long after a value", Buffer.concat([L("get big0\r\n"), big(10_000, 0x7a)]), {}],
      ["bad data chunk after a value", L(`get big1\r\nset k 0 0 2\r\nabcdef\r\nget big2\r\n`), {}],
    ];
    for (const [name, data, opts] of cases) {
      const [a, b] = await Promise.all([exchange(stock.port, data, { idleMs: 400, ...opts }), exchange(ours.port, data, { idleMs: 400, ...opts })]);
      expect({ name, bytes: b.bytes.length, closed: b.closed }).toEqual({ name, bytes: a.bytes.length, closed: a.closed });
      const at = Buffer.from(b.bytes).findIndex((v, i) => v !== a.bytes[i]);
      const around = (x: Uint8Array) => Buffer.from(x.subarray(Math.max(0, at - 40), at + 40)).toString("latin1");
      expect({ name, at, ours: at < 0 ? "" : around(b.bytes) }).toEqual({ name, at: -1, ours: at < 0 ? "" : around(a.bytes) });
    }
  } finally {
    await ours.stop();
    await stock.stop();
  }
}, 120_000);
