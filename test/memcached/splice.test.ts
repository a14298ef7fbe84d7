/**
 * A large answer of another shard is sent from the buffer it was handed over in (a splice)
 * instead of being copied into the connection's output: fillHoles leaves it there only when the
 * session lets it (the transport's spliceOk: everything goes out at the next write, nothing
 * queued), the batch keeps that buffer past its own settling until every splice was queued or
 * dropped, and a session that closes with splices not taken lets go of them (the buffer goes
 * back; otherwise the owner's transfer buffer leaked). The bytes on the wire are checked end to
 * end by sharding.test.ts and forward-sizes.test.ts.
 */
import { expect, test } from "bun:test";
import { BufferCache } from "../../src/core/buffers.ts";
import { Engine } from "../../examples/memcached/engine.ts";
import { Batch, fillHoles, UnitKind } from "../../examples/memcached/router.ts";
import { Proto, Session } from "../../examples/memcached/session.ts";
import { stockLikeSettings } from "./lib/harness.ts";

const enc = new TextEncoder();
const dec = new TextDecoder("latin1");

/** A batch of two units that got `answers` back in a handed-over buffer from `cache`. */
function answered(cache: BufferCache, answers: string[]) {
  const b = new Batch(1);
  for (let i = 0; i < answers.length; i++) b.begin(UnitKind.TEXT, Proto.TEXT, 0);
  const total = answers.reduce((n, a) => n + 4 + a.length, 0);
  const nb = cache.take(total);
  let p = 0;
  for (const a of answers) {
    new DataView(nb.bytes.buffer, nb.bytes.byteOffset).setUint32(p, a.length, true);
    nb.bytes.set(enc.encode(a), p + 4);
    p += 4 + a.length;
  }
  const internals = b as unknown as { split(nb: unknown): void; settleNative(): void; replied: boolean };
  internals.split(nb);
  internals.replied = true;
  return { b, nb, settle: () => internals.settleNative() };
}

function setup() {
  const engine = new Engine(stockLikeSettings({}), { shards: 2, shardId: 0, memory: "js" });
  const cache = new BufferCache({ retainBytes: 1 << 22 });
  const s = new Session(engine);
  const big = `VALUE big 0 20000\r\n${"v".repeat(20000)}\r\n`;
  const small = "VALUE small 0 1\r\nx\r\n";
  return { engine, cache, s, big, small };
}

test("a large answer stays in the handed-over buffer, between the copied bytes, and the buffer outlives the batch's settling until the splice is taken", async () => {
  const { engine, cache, s, big, small } = setup();
  const { b, nb, settle } = answered(cache, [small, big]);
  s.out.str("A\r\n");
  s.holes.push({ at: s.out.pos, batch: b, first: 0, count: 2 });
  s.out.str("Z\r\n");
  s.spliceOk = true;
  await fillHoles(s);
  // The small answer was copied; the large one is a splice where it goes.
  expect(dec.decode(s.out.bytes())).toBe(`A\r\n${small}Z\r\n`);
  const splices = s.takeSplices()!;
  expect(splices.length).toBe(1);
  expect(splices[0]!.at).toBe(3 + small.length);
  expect(dec.decode(nb.bytes.subarray(splices[0]!.start, splices[0]!.start + splices[0]!.len))).toBe(big);
  settle();
  expect(nb.isReleased).toBe(false); // still held by the splice
  splices[0]!.from!.unhold();
  expect(nb.isReleased).toBe(true); // back once the transport queued it
  s.close();
  engine.close();
  cache.close();
});

test("a session that closes with splices not taken gives the buffer back", async () => {
  const { engine, cache, s, big } = setup();
  const { b, nb, settle } = answered(cache, [big, big]);
  s.holes.push({ at: 0, batch: b, first: 0, count: 2 });
  s.spliceOk = true;
  await fillHoles(s);
  expect(s.out.pos).toBe(0);
  settle();
  expect(nb.isReleased).toBe(false);
  s.close();
  expect(nb.isReleased).toBe(true);
  engine.close();
  cache.close();
});

test("without spliceOk (a connection with bytes queued, UDP, a batch's session), or mid-value, answers are copied and the buffer goes back at settling", async () => {
  const { engine, cache, s, big, small } = setup();
  const { b, nb, settle } = answered(cache, [small, big]);
  s.holes.push({ at: 0, batch: b, first: 0, count: 2 });
  s.spliceOk = false;
  await fillHoles(s);
  expect(dec.decode(s.out.bytes())).toBe(small + big);
  expect(s.takeSplices()).toBeUndefined();
  settle();
  expect(nb.isReleased).toBe(true);
  // Mid-value (a set's data still arriving): stock sends nothing past its last send point, so
  // what follows must stay contiguous in `out`: copied even with spliceOk.
  const t = answered(cache, [big]);
  s.out.reset();
  s.feed(enc.encode("set k 0 0 10\r\nabc"));
  expect(s.midValue).toBe(true);
  s.holes.push({ at: s.out.pos, batch: t.b, first: 0, count: 1 });
  s.spliceOk = true;
  await fillHoles(s);
  expect(s.takeSplices()).toBeUndefined();
  expect(dec.decode(s.out.bytes())).toBe(big);
  t.settle();
  expect(t.nb.isReleased).toBe(true);
  s.close();
  engine.close();
  cache.close();
});

test("a small answer in a large handed-over buffer is copied (a splice would keep the whole buffer, others' answers too, for a reader that stalls)", async () => {
  const { engine, cache, s, big } = setup();
  const huge = `VALUE huge 0 1500000\r\n${"h".repeat(1_500_000)}\r\n`;
  const { b, nb, settle } = answered(cache, [big, huge]);
  expect(nb.length).toBeGreaterThan(1024 * 1024);
  s.holes.push({ at: 0, batch: b, first: 0, count: 2 });
  s.spliceOk = true;
  await fillHoles(s);
  // 20 KB of a 2 MiB buffer: copied; 1.5 MB of it: an eighth at least, spliced.
  expect(dec.decode(s.out.bytes())).toBe(big);
  const splices = s.takeSplices()!;
  expect(splices.map((sp) => [sp.at, sp.len])).toEqual([[big.length, huge.length]]);
  settle();
  for (const sp of splices) sp.from!.unhold();
  expect(nb.isReleased).toBe(true);
  s.close();
  engine.close();
  cache.close();
});
