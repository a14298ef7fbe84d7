/**
 * Why the store keeps items in one native arena instead of JS objects: garbage-collection
 * pauses, which fixed-rate p99/p99.9 latency sees. Compares, for the same N items (32-byte
 * keys, 64-byte values):
 *
 *   objects  a Map from key string to { value: Uint8Array, flags, exptime, cas } (the obvious
 *            JS design), values copied out per get
 *   arena    the memcached example's Store (typed-array views over native memory, an Int32Array
 *            hash table; no object per item)
 *
 * and reports the JS heap (for the arena this counts the native arena as external memory), a
 * full collection's pause once the set-up garbage is gone (Bun.gc(true), the best of two; compare
 * with the bare process's), the get/set cost per
 * operation and the slowest single operation (where collections land).
 *
 *   bun bench/memcached/gc.bench.ts            (N = 500000; MC_GC_ITEMS to change)
 */
import { ManualClock } from "../../examples/memcached/clock.ts";
import { Store, NIL } from "../../examples/memcached/store.ts";
import { murmur3 } from "../../examples/memcached/hash.ts";

const N = Number(process.env.MC_GC_ITEMS ?? 500_000);
const enc = new TextEncoder();
const keyOf = (i: number): string => `key:${String(i).padStart(28, "0")}`;
const value = new Uint8Array(66).fill(97);

function heapMiB(): number {
  return process.memoryUsage().heapUsed / 1048576;
}

function fullGcMs(): number {
  const t = performance.now();
  Bun.gc(true);
  return performance.now() - t;
}

/** Worst 1 ms window of a loop of random gets and sets (GC pauses land in some window). */
function worstWindow(op: (i: number) => void, ops: number): { nsPerOp: number; worstMs: number } {
  let worst = 0;
  let x = 12345;
  const start = performance.now();
  let windowStart = start;
  let windowOps = 0;
  for (let n = 0; n < ops; n++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const t0 = performance.now();
    op(x % N);
    const d = performance.now() - t0;
    if (d > worst) worst = d;
    if (++windowOps === 1000) {
      windowStart = performance.now();
      windowOps = 0;
    }
  }
  void windowStart;
  return { nsPerOp: ((performance.now() - start) * 1e6) / ops, worstMs: worst };
}

interface Item {
  value: Uint8Array;
  flags: number;
  exptime: number;
  cas: number;
}

function objects(): void {
  Bun.gc(true);
  const base = heapMiB();
  const map = new Map<string, Item>();
  let cas = 0;
  for (let i = 0; i < N; i++) map.set(keyOf(i), { value: value.slice(), flags: 0, exptime: 0, cas: ++cas });
  const heap = heapMiB() - base;
  fullGcMs();
  const gc = Math.min(fullGcMs(), fullGcMs());
  const out = new Uint8Array(128);
  const r = worstWindow((i) => {
    const k = keyOf(i);
    if (i % 10 === 0) map.set(k, { value: value.slice(), flags: 0, exptime: 0, cas: ++cas });
    else out.set(map.get(k)!.value);
  }, 2_000_000);
  console.log(`| objects (Map + Uint8Array per item) | ${heap.toFixed(0)} | ${gc.toFixed(1)} | ${r.nsPerOp.toFixed(0)} | ${r.worstMs.toFixed(2)} |`);
  map.clear();
}

function arena(): void {
  Bun.gc(true);
  const base = heapMiB();
  const store = new Store({ maxBytes: 256 * 1024 * 1024, itemSizeMax: 1024 * 1024, clock: new ManualClock() });
  // Keys are written into one scratch buffer, as the server parses them from received bytes.
  const scratch = new Uint8Array(32);
  const key = (i: number): Uint8Array => {
    enc.encodeInto(keyOf(i), scratch);
    return scratch;
  };
  const keysHeap = 0;
  for (let i = 0; i < N; i++) {
    const k = key(i);
    const hv = murmur3(k, 0, k.length);
    const ref = store.alloc(k, 0, k.length, 0, 0, 66);
    store.mem.set(value, store.valueOffset(ref));
    store.storeItem(ref, 2, hv, 0, false);
  }
  const heap = heapMiB() - base - keysHeap;
  fullGcMs();
  const gc = Math.min(fullGcMs(), fullGcMs());
  const out = new Uint8Array(128);
  const r = worstWindow((i) => {
    const k = key(i);
    const hv = murmur3(k, 0, k.length);
    if (i % 10 === 0) {
      const ref = store.alloc(k, 0, k.length, 0, 0, 66);
      store.mem.set(value, store.valueOffset(ref));
      store.storeItem(ref, 2, hv, 0, false);
    } else {
      const ref = store.get(k, 0, k.length, hv, true);
      if (ref !== NIL) out.set(store.mem.subarray(store.valueOffset(ref), store.valueOffset(ref) + 66));
    }
  }, 2_000_000);
  console.log(`| arena (memcached Store) | ${heap.toFixed(0)} | ${gc.toFixed(1)} | ${r.nsPerOp.toFixed(0)} | ${r.worstMs.toFixed(2)} |`);
  store.close();
}

Bun.gc(true);
const baseline = Math.min(fullGcMs(), fullGcMs(), fullGcMs());
console.log(`${N} items, 32-byte keys, 64-byte values; 2M random operations (get/set 9:1); a full GC of the bare process takes ${baseline.toFixed(1)} ms`);
console.log("| design | JS heap MiB | full GC ms | ns/op | slowest op ms |");
console.log("|---|---:|---:|---:|---:|");
arena();
objects();
