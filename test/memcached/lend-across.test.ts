/**
 * A get's large value read on another shard is lent to the requester from the owner's item
 * (router.ts LENDS_FLAG: Seastar's foreign_ptr to the item) instead of being copied into the
 * batch's answer. In process: the owner's answer carries a table of the values it lends (the
 * item's place in its arena), the store keeps each item until the requester's UNLEND (a delete
 * meanwhile frees the chunk only then; a ref not lent is ignored), a multiget's parts keep their
 * order, a silent, a cut or a failed unit lends nothing, and a requester's handed-over answer
 * goes back without a copy when its only unread units are never read. (Over TCP with two
 * shards: item-splice.test.ts, stalled readers; review24-*.test.ts.)
 */
import { expect, test } from "bun:test";
import { NativeBuffer } from "../../src/core/buffers.ts";
import { readUnits, unit, unlendUnit } from "./lib/units.ts";
import { stockLikeSettings } from "./lib/harness.ts";

const dec = new TextDecoder("latin1");

/** The units of an answer, lent values read from `mem` (the owner's arena) where they go. */
const readReply = (reply: Uint8Array | NativeBuffer, mem?: Uint8Array, units?: number) => readUnits(reply, { mem, units });

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
    expect(r.lent.every((l) => l.arena === store.arenaAddress && l.arenaLength === mem.length && l.offset === store.valueOffset(l.ref))).toBe(true);
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
