/**
 * A get's large value read on another shard is lent to the requester from the owner's item
 * (router.ts LENDS_FLAG: Seastar's foreign_ptr to the item) instead of being copied into the
 * batch's answer. In process: the owner's reply hands over a lent NativeBuffer over the item's
 * memory, which the store keeps (a delete meanwhile frees the chunk only after the release),
 * a multiget's parts keep their order, a silent or a failed unit lends nothing. Over TCP with two
 * shards: readers that stall get their values intact though the owner deleted or evicted them
 * and reused their memory meanwhile.
 */
import { expect, test } from "bun:test";
import { NativeBuffer } from "../../src/core/buffers.ts";
import { command, settledHits, stalledReader, stats } from "./lib/lend.ts";
import { startOurs, stockLikeSettings } from "./lib/harness.ts";

const enc = new TextEncoder();
const dec = new TextDecoder("latin1");

/** One unit of a batch: [kind][proto][u32 length][body]. */
function unit(kind: number, text: string): Uint8Array {
  const body = enc.encode(text);
  const u = new Uint8Array(6 + body.length);
  u[0] = kind;
  u[1] = 1; // Proto.TEXT
  new DataView(u.buffer).setUint32(2, body.length, true);
  u.set(body, 6);
  return u;
}

const u32 = (b: Uint8Array, p: number) => new DataView(b.buffer, b.byteOffset).getUint32(p, true);

/** A value lent by a unit's answer (see router.ts LENDS_FLAG). */
interface Lent {
  at: number;
  len: number;
  offset: number;
  ref: number;
  arena: number;
}

/** The units of an answer, each lent value read from the owner's arena where its table says (as the requester does). */
function readReply(reply: Uint8Array | NativeBuffer, mem?: Uint8Array, units = Infinity): { texts: string[]; lent: Lent[]; flagged: number } {
  const answer = reply instanceof NativeBuffer ? reply.bytes : reply;
  const lent: Lent[] = [];
  const texts: string[] = [];
  let flagged = 0;
  let p = 0;
  // (A handed-over answer is the owner's whole buffer: only `units` records are its.)
  while (p < answer.length && texts.length < units) {
    const h = u32(answer, p);
    const n = h & 0x7fffffff;
    const raw = answer.subarray(p + 4, p + 4 + n);
    p += 4 + n;
    if (h < 0x80000000) {
      texts.push(dec.decode(raw));
      continue;
    }
    flagged++;
    const c = u32(answer, p);
    const dv = new DataView(answer.buffer, answer.byteOffset);
    const arena = dv.getFloat64(p + 8, true);
    expect(dv.getFloat64(p + 16, true)).toBe(mem!.length);
    let text = "";
    let at = 0;
    for (let k = 0, q = p + 24; k < c; k++, q += 16) {
      const l: Lent = { at: u32(answer, q), len: u32(answer, q + 4), offset: u32(answer, q + 8), ref: u32(answer, q + 12), arena };
      lent.push(l);
      text += dec.decode(raw.subarray(at, l.at)) + dec.decode(mem!.subarray(l.offset, l.offset + l.len));
      at = l.at;
    }
    texts.push(text + dec.decode(raw.subarray(at)));
    p += 24 + c * 16;
  }
  return { texts, lent, flagged };
}

/** An UNLEND unit: the requester is done with these lent items. */
function unlendUnit(kind: number, refs: number[]): Uint8Array {
  const u = new Uint8Array(6 + 4 * refs.length);
  const dv = new DataView(u.buffer);
  u[0] = kind;
  u[1] = 1;
  dv.setUint32(2, 4 * refs.length, true);
  refs.forEach((r, i) => dv.setUint32(6 + 4 * i, r, true));
  return u;
}

test("in process: the owner lends a large value from its item with the answer; the item stays until the requester says it is done", async () => {
  const { Engine } = await import("../../examples/memcached/engine.ts");
  const { execBatch, installRouter, UnitKind } = await import("../../examples/memcached/router.ts");
  const engine = new Engine(stockLikeSettings({}), { shards: 2, shardId: 1, memory: "native" });
  installRouter(engine);
  const store = engine.store;
  const mem = store.mem;
  try {
    const big = "b".repeat(60_000);
    const mid = "m".repeat(20_000);
    const setup = execBatch(0, Buffer.concat([unit(UnitKind.TEXT, `set big 1 0 60000\r\n${big}\r\n`), unit(UnitKind.TEXT, `set mid 2 0 20000\r\n${mid}\r\n`), unit(UnitKind.TEXT, "set small 3 0 5\r\nhello\r\n")]));
    expect(readReply(setup).texts).toEqual(["STORED\r\n", "STORED\r\n", "STORED\r\n"]);

    // A multiget part (its END cut), a single get, an mg, a small value (copied), a miss, a
    // silent unit (its value let go at once).
    const r = readReply(
      execBatch(
        0,
        Buffer.concat([
          unit(UnitKind.TEXT_GET_PART, "get big small mid\r\n"),
          unit(UnitKind.TEXT, "get big\r\n"),
          unit(UnitKind.TEXT, "mg mid v f\r\n"),
          unit(UnitKind.TEXT, "get small nokey\r\n"),
          unit(UnitKind.TEXT_SILENT, "get big\r\n"),
        ]),
      ),
      mem,
    );
    expect(r.texts).toEqual([
      `VALUE big 1 60000\r\n${big}\r\nVALUE small 3 5\r\nhello\r\nVALUE mid 2 20000\r\n${mid}\r\n`,
      `VALUE big 1 60000\r\n${big}\r\nEND\r\n`,
      `VA 20000 f2\r\n${mid}\r\n`,
      "VALUE small 3 5\r\nhello\r\nEND\r\n",
      "",
    ]);
    expect(r.flagged).toBe(3);
    // Four values lent, each in the item's own memory, in the arena the table names.
    expect(r.lent.length).toBe(4);
    expect(r.lent.every((l) => l.arena === store.arenaAddress && l.offset === store.valueOffset(l.ref))).toBe(true);
    expect(store.lentItems).toBe(2);

    // A delete while lent: the key is gone at once, the bytes stay until the last UNLEND.
    expect(readReply(execBatch(0, unit(UnitKind.TEXT, "delete big\r\n"))).texts).toEqual(["DELETED\r\n"]);
    expect(readReply(execBatch(0, unit(UnitKind.TEXT, "get big\r\n"))).texts).toEqual(["END\r\n"]);
    const bigRef = r.lent[0]!.ref;
    const midRef = r.lent[1]!.ref;
    expect(readReply(execBatch(0, unlendUnit(UnitKind.UNLEND, [bigRef, midRef, bigRef]))).texts).toEqual([""]);
    expect(store.lentItems).toBe(1);
    expect(mem.subarray(store.valueOffset(midRef), store.valueOffset(midRef) + 20_000).every((x) => x === 0x6d)).toBe(true);
    // A ref not lent (a duplicate, a forged one) is ignored: the store is unchanged.
    expect(readReply(execBatch(0, Buffer.concat([unlendUnit(UnitKind.UNLEND, [midRef, 123456789]), unit(UnitKind.TEXT, "get mid\r\n")])), mem).texts).toEqual(["", `VALUE mid 2 20000\r\n${mid}\r\nEND\r\n`]);
    expect(store.lentItems).toBe(1); // the last get lent mid again
    expect(readReply(execBatch(0, unlendUnit(UnitKind.UNLEND, [midRef, midRef]))).texts).toEqual([""]);
    expect(store.lentItems).toBe(0);

    // A multiget failed by a too-long key lends nothing (its answer is cut).
    const failed = readReply(execBatch(0, unit(UnitKind.TEXT, `get mid ${"x".repeat(251)}\r\n`)));
    expect(failed.texts).toEqual(["CLIENT_ERROR bad command line format\r\n"]);
    expect(store.lentItems).toBe(0);

    // An answer over 32 KiB (handed over in native memory) lends as well; a later batch that
    // fails part-way (a unit throws) takes back only its own lends.
    const smalls = [0, 1, 2].map((i) => `set s${i} 0 0 15000\r\n${"s".repeat(15_000)}\r\n`).join("");
    execBatch(0, unit(UnitKind.TEXT, `set big 1 0 60000\r\n${big}\r\n` + smalls));
    const handed = execBatch(0, unit(UnitKind.TEXT, "get s0 s1 s2 big\r\n"));
    expect(handed).toBeInstanceOf(NativeBuffer);
    const h = readReply(handed, mem, 1);
    expect(h.texts).toEqual([[0, 1, 2].map((i) => `VALUE s${i} 0 15000\r\n${"s".repeat(15_000)}\r\n`).join("") + `VALUE big 1 60000\r\n${big}\r\nEND\r\n`]);
    (handed as NativeBuffer).release();
    expect(store.lentItems).toBe(1);
    const get = store.get.bind(store);
    store.get = (buf, off, len, hv, bump) => {
      if (len === 4 && dec.decode(buf.subarray(off, off + 4)) === "boom") throw new Error("an engine bug");
      return get(buf, off, len, hv, bump);
    };
    try {
      expect(() => execBatch(0, Buffer.concat([unit(UnitKind.TEXT, "get mid\r\n"), unit(UnitKind.TEXT, "get big boom\r\n")]))).toThrow("an engine bug");
    } finally {
      store.get = get;
    }
    expect(store.lentItems).toBe(1);
    execBatch(0, unlendUnit(UnitKind.UNLEND, [h.lent[0]!.ref]));
    expect(store.lentItems).toBe(0);
  } finally {
    engine.close();
  }
});

const value = (prefix: string, i: number) => {
  const v = Buffer.alloc(60_000);
  for (let j = 0; j < v.length; j++) v[j] = 0x41 + ((i * 7 + j + prefix.charCodeAt(0)) % 26);
  return v;
};

test("-t 2: stalled readers get the other shard's large values intact though the owner deleted or evicted them and reused their memory meanwhile", async () => {
  const server = await startOurs(["-t", "2", "-m", "16"]);
  const port = server.port;
  try {
    const N = 100;
    const sets: Buffer[] = [];
    for (const p of ["a", "b"]) {
      for (let i = 0; i < N; i++) sets.push(Buffer.from(`set ${p}${i} 0 0 60000 noreply\r\n`), value(p, i), Buffer.from("\r\n"));
    }
    sets.push(Buffer.from("mn\r\n"));
    expect(await command(port, Buffer.concat(sets), "MN\r\n")).toBe("MN\r\n");
    const a = await stalledReader(port, "a", N);
    const hitsA = await settledHits(port);
    const b = await stalledReader(port, "b", N);
    const hitsB = (await settledHits(port)) - hitsA;
    expect(hitsA).toBeLessThan(N);
    expect(hitsB).toBeLessThan(N);
    const junk: Buffer[] = [];
    for (let i = 0; i < N; i++) junk.push(Buffer.from(`delete a${i} noreply\r\n`));
    for (let i = 0; i < 3 * N; i++) junk.push(Buffer.from(`set j${i} 0 0 60000 noreply\r\n`), Buffer.alloc(60_000, 0x7e), Buffer.from("\r\n"));
    junk.push(Buffer.from("mn\r\n"));
    expect(await command(port, Buffer.concat(junk), "MN\r\n")).toBe("MN\r\n");
    expect((await stats(port)).get("evictions")!).toBeGreaterThan(N);
    for (const [reader, p, hits] of [[a, "a", hitsA], [b, "b", hitsB]] as const) {
      const expected = Buffer.concat([
        ...Array.from({ length: hits }, (_, i) => Buffer.concat([Buffer.from(`VALUE ${p}${i} 0 60000\r\n`), value(p, i), Buffer.from("\r\nEND\r\n")])),
        Buffer.from("END\r\n".repeat(N - hits)),
      ]);
      const got = await reader.go();
      expect(got.length).toBe(expected.length);
      expect(got.equals(expected)).toBe(true);
    }
    const back = await command(port, enc.encode("set z 0 0 60000\r\n" + "z".repeat(60_000) + "\r\nget z\r\n"), "END\r\n");
    expect(back.startsWith("STORED\r\nVALUE z 0 60000\r\n")).toBe(true);
  } finally {
    await server.stop();
  }
}, 90_000);

test("in process: a handed-over answer whose only unread units are never read (RELEASE, UNLEND, a silent line) goes back without a copy", async () => {
  const { Batch, UnitKind } = await import("../../examples/memcached/router.ts");
  const { BufferCache } = await import("../../src/core/buffers.ts");
  const cache = new BufferCache({ retainBytes: 1 << 20 });
  try {
    for (const quiet of [UnitKind.RELEASE, UnitKind.UNLEND, UnitKind.TEXT_SILENT]) {
      const b = new Batch(1);
      b.begin(UnitKind.TEXT, 1, 0);
      const q = b.begin(quiet, 1, 0);
      if (quiet === UnitKind.TEXT_SILENT) b.noteUnread(q);
      // The owner's answer: a 40,000-byte record for the read, an empty one for the other.
      const answer = cache.take(65_536);
      const dv = new DataView(answer.bytes.buffer, answer.bytes.byteOffset);
      dv.setUint32(0, 40_000, true);
      answer.bytes.fill(0x61, 4, 40_004);
      dv.setUint32(40_004, 0, true);
      const batch = b as unknown as { split(a: NativeBuffer): void; settle(): void; answer: Uint8Array };
      batch.split(answer);
      expect(b.unitAnswer(0).length).toBe(40_000);
      batch.settle();
      expect({ quiet, kept: batch.answer.length, released: answer.isReleased }).toEqual({ quiet, kept: 0, released: true });
    }
  } finally {
    cache.close();
  }
});
