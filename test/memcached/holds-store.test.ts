// The Store's holds (items a reply not yet sent refers to) never write into memory that is no
// longer the held item's: a held item freed, or moved off a page that is re-cut, leaves or is
// renamed in the lists, so releasing the holds cannot change another item's value.
import { expect, test } from "bun:test";
import { Holds, Store } from "../../examples/memcached/store.ts";
import { ManualClock } from "../../examples/memcached/clock.ts";
import { find, setItem } from "./lib/lend.ts";

function valueIntact(s: Store, ref: number, fill: number): boolean {
  const v = s.mem.subarray(s.valueOffset(ref), s.valueOffset(ref) + s.nbytes(ref) - 2);
  return v.every((b) => b === fill);
}

test("a held large item deleted, its pages re-cut under a bigger item: releasing the hold leaves that item's value alone", () => {
  const s = new Store({ maxBytes: 16 << 20, itemSizeMax: 2 << 20, clock: new ManualClock() });
  const h = new Holds();
  const c = setItem(s, "c", 600_000, 0x61);
  const a = setItem(s, "a", 600_000, 0x61);
  s.hold(h, a); // an mg reply to `a` waits for the connection's send point
  s.unlink(c);
  s.unlink(a); // `delete a` in the same read
  const b = setItem(s, "b", 1_500_000, 0xff); // over the pages a and c had
  expect(b).toBeLessThan(a); // a's old header lies inside b's value
  s.release(h);
  expect(valueIntact(s, find(s, "b"), 0xff)).toBe(true);
  s.close();
});

test("a held item on a page moved to another class follows its copy; the re-cut page's new items are untouched", () => {
  const s = new Store({ maxBytes: 16 << 20, itemSizeMax: 1 << 20, clock: new ManualClock() });
  const h = new Holds();
  // Two pages of small items, one of them held; then the first page goes to a big-chunk class.
  const key = (i: number) => `k${String(i).padStart(6, "0")}`; // one length: one class
  const refs: number[] = [];
  for (let i = 0; i < 12_000; i++) refs.push(setItem(s, key(i), 60, 0x61));
  const srcClass = s.clsid(refs[0]!);
  expect(refs.every((r) => s.clsid(r) === srcClass)).toBe(true);
  // The 64 lowest chunks of the first page (the one a reassign empties; its items are rescued
  // from its start, and a page's chunks are handed out from its end, as stock's).
  const low = refs.map((r, i) => [r, i] as const).sort((x, y) => x[0] - y[0]).slice(0, 64).map(([, i]) => i);
  for (const i of low) s.hold(h, refs[i]!);
  for (let i = 8_000; i < 12_000; i++) s.unlink(find(s, key(i))); // free chunks for its items to move to
  const big = setItem(s, "big-0", 3000, 0xff);
  const dstClass = s.clsid(big);
  expect(s.reassign(srcClass, dstClass)).toBe("ok");
  const bigs: number[] = [];
  for (let i = 1; i < 400; i++) bigs.push(setItem(s, `big-${i}`, 3000, 0xff));
  expect(find(s, key(low[1]!))).not.toBe(refs[low[1]!]); // rescued into a free chunk of its class
  s.release(h);
  for (let i = 0; i < 400; i++) expect(valueIntact(s, find(s, `big-${i}`), 0xff)).toBe(true);
  for (const i of low) expect(valueIntact(s, find(s, key(i)), 0x61)).toBe(true);
  s.close();
});
