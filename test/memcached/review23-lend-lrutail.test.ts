/**
 * An item whose value is still being sent from its memory (Store.lend) at the LRU tail when an
 * allocation needs memory. Stock 1.6.18's lru_pull_tail counts a tail item a connection holds
 * in lrutail_reflocked and then evicts it all the same ("Can still unlink the item, but it won't
 * be reusable yet"): it is gone for every client, its memory comes back once the reply is sent,
 * and do_item_alloc_pull tries again (up to 10 times). The reply is still sent intact. (It was
 * passed over instead: it stayed readable for good while a reader stalled, and five of them at
 * the tail made every allocation of the class fail.)
 */
import { expect, test } from "bun:test";
import { type ServerProcess, startOurs, startStock } from "./lib/harness.ts";
import { command, find, settledHits, stalledReader, stats } from "./lib/lend.ts";
import { Comm, CS, Store, StoreResult } from "../../examples/memcached/store.ts";
import { ManualClock } from "../../examples/memcached/clock.ts";
import { murmur3 } from "../../examples/memcached/hash.ts";

const L = (s: string) => Buffer.from(s, "latin1");

const value = (i: number) => {
  const v = Buffer.alloc(60_000);
  for (let j = 0; j < v.length; j++) v[j] = 0x41 + ((i + j) % 26);
  return v;
};

interface Outcome {
  /** The reader's keys a fresh client still finds after the churn. */
  found: string[];
  /** What the reader got: each hit's value intact, in order. */
  intact: boolean;
  reflocked: number;
}

async function run(server: ServerProcess): Promise<Outcome> {
  const port = server.port;
  const N = 100;
  const sets: Buffer[] = [];
  for (let i = 0; i < N; i++) sets.push(L(`set a${i} 0 0 60000 noreply\r\n`), value(i), L("\r\n"));
  sets.push(L("mn\r\n"));
  expect(await command(port, Buffer.concat(sets), "MN\r\n")).toBe("MN\r\n");
  const reader = await stalledReader(port, "a", N);
  // The server has taken every get it will take before the reader reads (get_hits settled): on
  // a loaded machine a fixed pause let the churn below evict keys before their gets ran.
  await settledHits(port);
  // Memory is filled several times over with other values of the same class.
  const junk: Buffer[] = [];
  for (let i = 0; i < 600; i++) junk.push(L(`set j${i} 0 0 60000 noreply\r\n`), Buffer.alloc(60_000, 0x7e), L("\r\n"));
  junk.push(L("mn\r\n"));
  expect(await command(port, Buffer.concat(junk), "MN\r\n")).toBe("MN\r\n");
  const found: string[] = [];
  for (let i = 0; i < N; i++) {
    const r = await command(port, L(`get a${i}\r\n`), "END\r\n");
    if (r.startsWith("VALUE")) found.push(`a${i}`);
  }
  const reflocked = (await stats(port)).get("lrutail_reflocked")!;
  const got = await reader.go();
  // Every answer is a hit with its value as set, or a miss.
  let at = 0;
  let intact = true;
  for (let i = 0; i < N && intact; i++) {
    const hit = Buffer.concat([L(`VALUE a${i} 0 60000\r\n`), value(i), L("\r\nEND\r\n")]);
    if (got.subarray(at, at + hit.length).equals(hit)) at += hit.length;
    else if (got.subarray(at, at + 5).equals(L("END\r\n"))) at += 5;
    else intact = false;
  }
  return { found, intact: intact && at === got.length, reflocked };
}

test("an item being sent to a stalled reader is evicted at the LRU tail as stock evicts it (counted in lrutail_reflocked), its value still sent intact", async () => {
  const stock = await startStock(["-t", "1", "-m", "16"]);
  let want: Outcome;
  try {
    want = await run(stock);
  } finally {
    await stock.stop();
  }
  expect(want.found).toEqual([]);
  expect(want.intact).toBe(true);
  const ours = await startOurs(["-t", "1", "-m", "16"]);
  try {
    const got = await run(ours);
    // The reader's values were sent from their items: allocations met them at the tail.
    expect(got.reflocked).toBeGreaterThan(0);
    expect({ found: got.found, intact: got.intact }).toEqual({ found: want.found, intact: true });
  } finally {
    await ours.stop();
  }
}, 120_000);

/**
 * Fills `-m 8` with 60 KB values, finds the oldest (the LRU tail, `mg u` does not bump), then in
 * one read asks for its value and stores a new one: the allocation meets the tail item while its
 * answer, sent from its memory, is still queued.
 */
async function tailWhileSent(server: ServerProcess) {
  const port = server.port;
  const size = 60_000;
  const n = Math.ceil((12 << 20) / size);
  const sets: Buffer[] = [];
  for (let i = 0; i < n; i++) sets.push(L(`set k${i} 0 0 ${size} noreply\r\n`), Buffer.alloc(size, 0x61), L("\r\n"));
  sets.push(L("mn\r\n"));
  expect(await command(port, Buffer.concat(sets), "MN\r\n")).toBe("MN\r\n");
  let oldest = -1;
  for (let i = 0; i < n && oldest < 0; i++) if ((await command(port, L(`mg k${i} u\r\nmn\r\n`), "MN\r\n")).startsWith("HD")) oldest = i;
  const before = await stats(port);
  const got = await command(port, Buffer.concat([L(`mg k${oldest} v\r\nset new 0 0 ${size}\r\n`), Buffer.alloc(size, 0x62), L("\r\nmn\r\n")]), "MN\r\n");
  const after = await stats(port);
  const diff = (k: string) => after.get(k)! - before.get(k)!;
  return {
    answer: got === `VA ${size}\r\n${"a".repeat(size)}\r\nSTORED\r\nMN\r\n`,
    lrutail_reflocked: diff("lrutail_reflocked"),
    evictions: diff("evictions"),
    // The tail item: gone (evicted though its answer was being sent).
    after: (await command(port, L(`mg k${oldest} u\r\nmn\r\n`), "MN\r\n")).slice(0, 2),
  };
}

test("an allocation that meets the tail item while its value is being sent counts it, evicts it and one more (its memory is not free yet), as stock", async () => {
  const stock = await startStock(["-t", "1", "-m", "8"]);
  let want: Awaited<ReturnType<typeof tailWhileSent>>;
  try {
    want = await tailWhileSent(stock);
  } finally {
    await stock.stop();
  }
  expect(want).toEqual({ answer: true, lrutail_reflocked: 1, evictions: 2, after: "EN" });
  const ours = await startOurs(["-t", "1", "-m", "8"]);
  try {
    expect(await tailWhileSent(ours)).toEqual(want);
  } finally {
    await ours.stop();
  }
}, 120_000);

const enc = new TextEncoder();

/** setItem, except that an allocation that fails returns -1 (what these tests count). */
function trySetItem(s: Store, key: string, nbytes: number, fill: number): number {
  const k = enc.encode(key);
  const ref = s.alloc(k, 0, k.length, 0, 0, nbytes);
  if (ref < 0) return ref;
  s.mem.fill(fill, s.valueOffset(ref), s.valueOffset(ref) + nbytes - 2);
  s.mem.set([13, 10], s.valueOffset(ref) + nbytes - 2);
  expect(s.storeItem(ref, Comm.SET, murmur3(k, 0, k.length), 0, false)).toBe(StoreResult.STORED);
  return ref;
}

const filled = (v: Uint8Array, fill: number) => v.subarray(0, v.length - 2).every((b) => b === fill);

/** A store of one page of the 60 KB class, full: its items oldest first (every chunk holds one). */
function fullStore(): { s: Store; cls: number; keys: string[]; refs: number[] } {
  const s = new Store({ maxBytes: 1 << 20, itemSizeMax: 1 << 20, clock: new ManualClock() });
  const keys: string[] = [];
  const refs: number[] = [];
  for (let i = 0; ; i++) {
    const ref = trySetItem(s, `k${i}`, 60_000, 0x30 + i);
    keys.push(`k${i}`);
    refs.push(ref);
    if (s.freeChunks(s.clsid(ref)) === 0) return { s, cls: s.clsid(ref), keys, refs };
  }
}

test("an allocation evicts tail items being sent as stock does (counted once each in lrutail_reflocked); their chunks come back once sent", () => {
  const { s, cls, keys, refs } = fullStore();
  const stat = (c: CS) => s.classStats[cls * CS.COUNT + c]!;
  const sends = [s.lend(refs[0]!, 0, 60_000)!, s.lend(refs[1]!, 0, 60_000)!];
  const nb = trySetItem(s, "new", 60_000, 0xee);
  expect(nb).toBeGreaterThanOrEqual(0);
  // Both were unlinked (stock: "it won't be reusable yet"); the third oldest gave its chunk.
  expect(stat(CS.LRUTAIL_REFLOCKED)).toBe(2);
  expect(stat(CS.EVICTED)).toBe(3);
  expect(keys.slice(0, 3).map((k) => find(s, k))).toEqual([-1, -1, -1]);
  expect(nb).toBe(refs[2]!);
  expect(s.currItems).toBe(refs.length - 2);
  // What is being sent stays as it was until the sends are done; then the chunks are free.
  expect(filled(sends[0]!.bytes, 0x30)).toBe(true);
  expect(filled(sends[1]!.bytes, 0x31)).toBe(true);
  expect(s.freeChunks(cls)).toBe(0);
  for (const b of sends) b.release();
  expect(s.lentItems).toBe(0);
  expect(s.freeChunks(cls)).toBe(2);
  s.close();
});

// do_item_alloc_pull: 10 tries, each a slabs_alloc then a tail pull that evicts one item; an
// item being sent frees nothing yet. With k such items at the tail the (k+1)th pull frees a
// chunk, which the next try takes: k <= 8 succeed; with 9, the 10th pull frees one too late.
for (const k of [5, 8, 9, 10]) test(`${k} items being sent at the tail: the allocation ${k <= 8 ? "succeeds" : "fails"} after ${Math.min(k + 1, 10)} evictions, as stock's do_item_alloc_pull; nothing leaks`, () => {
  const { s, cls, keys, refs } = fullStore();
  const stat = (c: CS) => s.classStats[cls * CS.COUNT + c]!;
  const sends = refs.slice(0, k).map((r) => s.lend(r, 0, 60_000)!);
  const key = enc.encode("new");
  const ref = s.alloc(key, 0, key.length, 0, 0, 60_000);
  const evicted = Math.min(k + 1, 10);
  expect({ ok: ref >= 0, oom: stat(CS.OUTOFMEMORY), reflocked: stat(CS.LRUTAIL_REFLOCKED), evicted: stat(CS.EVICTED) }).toEqual({ ok: k <= 8, oom: k <= 8 ? 0 : 1, reflocked: k, evicted });
  expect(keys.slice(0, evicted + 1).map((x) => find(s, x) >= 0)).toEqual([...Array(evicted).fill(false), true]);
  if (ref >= 0) {
    expect(ref).toBe(refs[k]!); // the chunk of the first item not being sent
    s.freePending(ref);
  }
  for (const b of sends) b.release();
  expect(s.lentItems).toBe(0);
  expect(s.currItems + s.freeChunks(cls)).toBe(refs.length);
  s.close();
});
