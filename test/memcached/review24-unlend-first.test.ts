/**
 * The owner of a value lent across shards (router.ts LENDS_FLAG) ends the lend when the
 * requester's UNLEND unit arrives, riding in the requester's next batch. That batch carries the
 * requester's next commands too, which the requester sent after it was done with the value: as
 * stock, which let go of an item once its reply was sent, those commands must not meet the item
 * still lent. An UNLEND that ran after them (it was the batch's last unit) made a set that
 * needed the item's memory at the LRU tail count it in lrutail_reflocked and evict one more
 * item than stock; and a unit that failed before it lost it for good.
 */
import { afterAll, expect, test } from "bun:test";
import { stockLikeSettings } from "./lib/harness.ts";
import { readUnits, unit, unlendUnit } from "./lib/units.ts";
import type { NativeBuffer } from "../../src/core/buffers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder("latin1");

/** The units' answers as text (lent values left out), and the refs of the values they lend. */
function readReply(reply: Uint8Array | NativeBuffer): { texts: string[]; refs: number[] } {
  const r = readUnits(reply);
  return { texts: r.texts, refs: r.lent.map((l) => l.ref) };
}

let owner: Awaited<ReturnType<typeof makeOwner>> | undefined;

/** Shard 1 of 2 in this process (one for the file: the router keeps its sessions by sender). */
async function ownerShard() {
  return (owner ??= await makeOwner());
}

afterAll(() => owner?.engine.close());

async function makeOwner() {
  const { Engine } = await import("../../examples/memcached/engine.ts");
  const { execBatch, installRouter, UnitKind } = await import("../../examples/memcached/router.ts");
  // Shard 1 of 2, 2 MiB of item memory: a few dozen 60 KB values fill it.
  const engine = new Engine(stockLikeSettings({ maxBytes: 4 << 20 }), { shards: 2, shardId: 1, memory: "native" });
  installRouter(engine);
  const run = (...units: Uint8Array[]) => readReply(execBatch(0, Buffer.concat(units)));
  const text = (cmd: string | Uint8Array) => run(unit(UnitKind.TEXT, cmd)).texts[0]!;
  const stat = (name: string) => Number(new RegExp(`STAT ${name} (\\d+)\\r\\n`).exec(text("stats\r\n"))![1]);
  const set = (key: string) => Buffer.concat([enc.encode(`set ${key} 0 0 60000\r\n`), Buffer.alloc(60_000, 0x61), enc.encode("\r\n")]);
  // (Numbers: a const enum is no value to hand around.)
  const K = { TEXT: UnitKind.TEXT as number, UNLEND: UnitKind.UNLEND as number };
  return { engine, run, text, stat, set, K };
}

test("a set after the requester was done with a lent tail item evicts that item and reuses its memory, as stock: the UNLEND in its batch ends the lend first", async () => {
  const { engine, run, text, stat, set, K } = await ownerShard();
  // Keys set one by one until the memory is full: the oldest left is the LRU tail.
  let n = 0;
  for (; stat("evictions") === 0; n++) expect(text(set(`k${n}`))).toBe("STORED\r\n");
  const e = stat("evictions");
  const tail = `k${e}`;
  const next = `k${e + 1}`;
  // The requester asks for the tail's value: lent, not copied.
  const got = run(unit(K.TEXT, `get ${tail}\r\n`));
  expect(got.texts[0]).toBe(`VALUE ${tail} 0 60000\r\nEND\r\n`);
  expect(got.refs.length).toBe(1);
  expect(engine.store.lentItems).toBe(1);
  // Done with it, the requester sends its next command; the UNLEND rides in that batch (Batch.send adds it last).
  const reply = run(unit(K.TEXT, set(`k${n}`)), unlendUnit(K.UNLEND, got.refs));
  expect(reply.texts).toEqual(["STORED\r\n", ""]);
  expect(engine.store.lentItems).toBe(0);
  // Stock: the tail item was no longer referenced; one eviction, its chunk reused, the next item kept.
  expect({ evictions: stat("evictions") - e, reflocked: stat("lrutail_reflocked") }).toEqual({ evictions: 1, reflocked: 0 });
  expect(text(`get ${tail}\r\n`)).toBe("END\r\n");
  expect(text(`mg ${next} s\r\n`)).toBe("HD s60000\r\n");
});

test("an UNLEND in a batch whose earlier unit fails still ends its lends (the requester will not send it again)", async () => {
  const { engine, run, text, K } = await ownerShard();
  const { execBatch } = await import("../../examples/memcached/router.ts");
  expect(text(`set big 0 0 60000\r\n${"b".repeat(60_000)}\r\n`)).toBe("STORED\r\n");
  const got = run(unit(K.TEXT, "get big\r\n"));
  try {
    expect(got.refs.length).toBe(1);
    expect(engine.store.lentItems).toBe(1);
    const store = engine.store;
    const get = store.get.bind(store);
    store.get = (buf, off, len, hv, bump) => {
      if (len === 4 && dec.decode(buf.subarray(off, off + 4)) === "boom") throw new Error("an engine bug");
      return get(buf, off, len, hv, bump);
    };
    try {
      expect(() => execBatch(0, Buffer.concat([unit(K.TEXT, "get boom\r\n"), unlendUnit(K.UNLEND, got.refs)]))).toThrow("an engine bug");
    } finally {
      store.get = get;
    }
    expect(engine.store.lentItems).toBe(0);
    // Deleted now, its chunk is free at once.
    const used = () => [...text("stats slabs\r\n").matchAll(/STAT \d+:used_chunks (\d+)\r\n/g)].reduce((a, m) => a + Number(m[1]), 0);
    const before = used();
    expect(text("delete big\r\n")).toBe("DELETED\r\n");
    expect(used()).toBe(before - 1);
  } finally {
    for (const r of got.refs) engine.store.unlendRef(r);
  }
});
