/**
 * The receive lookahead (examples/memcached/lookahead.ts) and Store.warm: which keys it notes,
 * that it never throws or loops on any input, and that warming changes no answer, also while
 * the hash table is being migrated.
 */
import { describe, expect, test } from "bun:test";
import { ManualClock } from "../../examples/memcached/clock.ts";
import { Engine } from "../../examples/memcached/engine.ts";
import { murmur3, shardOf } from "../../examples/memcached/hash.ts";
import { lookahead } from "../../examples/memcached/lookahead.ts";
import { Session } from "../../examples/memcached/session.ts";
import { b, dec, stockLikeSettings } from "./lib/harness.ts";

/** Runs the lookahead over `text` and returns the keys whose hashes it noted, in order. */
function noted(text: string, keys: string[], shards = 1, shardId = 0): string[] {
  const byHash = new Map(keys.map((k) => [murmur3(b(k), 0, k.length), k]));
  const got: number[] = [];
  const buf = b(text);
  lookahead({ noteAhead: (hv) => got.push(hv) }, shards, shardId, buf, 0, buf.length);
  return got.map((hv) => byHash.get(hv) ?? `?${hv}`);
}

describe("receive lookahead", () => {
  test("notes the keys of get, gets, set (skipping its data block), mg, md, ma and ms", () => {
    const keys = ["a", "bb", "ccc", "dddd", "e", "f", "g", "h", "key:000123"];
    // "get x" is the set's 5-byte data block, not a command: not noted.
    expect(noted("get a bb\r\ngets ccc\r\nset dddd 0 0 5\r\nget x\r\nget e\r\nmg f v\r\nmd g q\r\nma h\r\nms key:000123 2\r\nhi\r\n", keys)).toEqual(keys);
    // LF-only line ends, several spaces, noreply.
    expect(noted("get  a   bb\nset ccc 1 2 3 noreply\nxyz\r\nget e\r\n", keys)).toEqual(["a", "bb", "ccc", "e"]);
  });

  test("stops at what it does not know: partial lines, data past the chunk, binary, garbage", () => {
    const keys = ["a", "bb", "ccc"];
    expect(noted("get a bb", keys)).toEqual(["a"]); // "bb" may continue in the next chunk
    expect(noted("set a 0 0 100\r\nxx", keys)).toEqual(["a"]); // the data block ends later: stop
    expect(noted("set a 0 0 nope\r\nget bb\r\n", keys)).toEqual(["a"]);
    expect(noted("delete a\r\nget bb\r\n", keys)).toEqual([]);
    expect(noted("gat 10 a\r\nget bb\r\n", keys)).toEqual([]);
    expect(noted("\x80\x00\x00\x01get a\r\n", keys)).toEqual([]);
    expect(noted(`get ${"k".repeat(251)} a\r\n`, keys)).toEqual(["a"]); // over-long keys: not looked up
  });

  test("with several shards, only this shard's keys are noted", () => {
    const keys = Array.from({ length: 64 }, (_, i) => `key${i}`);
    const line = `get ${keys.join(" ")}\r\n`;
    for (const shards of [2, 3]) {
      const all: string[] = [];
      for (let id = 0; id < shards; id++) {
        const mine = noted(line, keys, shards, id);
        for (const k of mine) expect(shardOf(murmur3(b(k), 0, k.length), shards)).toBe(id);
        all.push(...mine);
      }
      // A get line notes at most 24 keys; every one of those went to exactly one shard.
      expect(all.sort()).toEqual(keys.slice(0, 24).sort());
    }
  });

  test("random bytes and random cuts of real requests never throw and always end", () => {
    let seed = 12345;
    const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const real = b("get a b c\r\nset k 0 0 3\r\nabc\r\nmg k v\r\nms k 2\r\nhi\r\ngets zz\r\n");
    const sink = { n: 0, noteAhead() { this.n++; } };
    for (let i = 0; i < 20_000; i++) {
      let buf: Uint8Array;
      if (i % 2 === 0) {
        buf = new Uint8Array(1 + Math.floor(rnd() * 64));
        for (let j = 0; j < buf.length; j++) buf[j] = rnd() < 0.3 ? [32, 13, 10, 103, 101, 116, 115, 48][Math.floor(rnd() * 8)]! : Math.floor(rnd() * 256);
      } else {
        const s = Math.floor(rnd() * real.length);
        buf = real.subarray(s, s + Math.floor(rnd() * (real.length - s + 1)));
      }
      const start = Math.floor(rnd() * (buf.length + 1));
      lookahead(sink, 1 + (i % 3), i % 2, buf, start, buf.length);
    }
    expect(sink.n).toBeGreaterThan(0);
  });
});

describe("Store.warm", () => {
  for (const memory of ["js", "native"] as const) {
    test(`warming before serving changes no answer, also mid-migration of the hash table (${memory})`, () => {
      const clock = new ManualClock();
      const engine = new Engine(stockLikeSettings({ maxBytes: 16 * 1024 * 1024, hashpowerInit: 12 }), { clock, memory });
      const session = new Session(engine);
      const store = engine.store;
      const run = (text: string): string => {
        const buf = b(text);
        lookahead(store, 1, 0, buf, 0, buf.length);
        store.warm();
        session.feed(buf);
        const r = dec.decode(session.out.bytes());
        session.out.reset();
        return r;
      };
      let sawExpanding = false;
      const N = 12_000;
      for (let n = 0; n < N; n++) {
        expect(run(`set k${n} ${n} 0 ${String(n).length}\r\n${n}\r\n`)).toBe("STORED\r\n");
        if (store.hashExpanding) {
          sawExpanding = true;
          const p = (n * 7919) % (n + 1);
          const q = (n * 104729) % (n + 1);
          expect(run(`get k${p} nothere k${q}\r\n`)).toBe(`VALUE k${p} ${p} ${String(p).length}\r\n${p}\r\nVALUE k${q} ${q} ${String(q).length}\r\n${q}\r\nEND\r\n`);
        }
      }
      expect(sawExpanding).toBe(true);
      // Deleted, then warmed: gone; a warm with nothing noted is a no-op.
      expect(run("delete k5\r\nget k5 k6\r\n")).toBe("DELETED\r\nVALUE k6 6 1\r\n6\r\nEND\r\n");
      store.warm();
      expect(run("get k7\r\n")).toBe("VALUE k7 7 1\r\n7\r\nEND\r\n");
      // More keys than a batch holds: the rest are served unwarmed, all correctly.
      const many = Array.from({ length: 300 }, (_, i) => `k${i * 13}`);
      const want = many.map((k) => {
        const n = Number(k.slice(1));
        return n === 5 ? "" : `VALUE ${k} ${n} ${String(n).length}\r\n${n}\r\n`;
      });
      expect(run(`get ${many.join(" ")}\r\n`)).toBe(want.join("") + "END\r\n");
      engine.close();
    });
  }
});
