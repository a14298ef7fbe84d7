/**
 * Behaviour that only exists with several shards: keys spread over the shards and each is
 * found from any connection; multigets that span shards keep the key order; commands for the
 * whole server (flush_all, stats, stats reset, detail, verbosity) act on every shard, over text
 * and binary; and the order of one connection's commands holds across shards.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { b, dec, exchange, startOurs, type ServerProcess } from "./lib/harness.ts";
import { binRequest, parseResponses } from "./lib/binproto.ts";

let server: ServerProcess;

beforeAll(async () => {
  server = await startOurs(["-t", "3"]);
}, 60_000);

afterAll(async () => {
  await server?.stop();
}, 30_000);

async function text(req: string, until = "END\r\n"): Promise<string> {
  const a = await exchange(server.port, b(req), { until: b(until), idleMs: 3000 });
  return dec.decode(a.bytes);
}

function stat(stats: string, name: string): number {
  return Number(new RegExp(`STAT ${name} (\\d+)`).exec(stats)![1]);
}

describe("several shards", () => {
  test("keys are spread over the shards and reachable from every connection", async () => {
    let req = "";
    for (let i = 0; i < 300; i++) req += `set spread${i} 0 0 ${String(i).length}\r\n${i}\r\n`;
    await text(req + "mn\r\n", "MN\r\n");
    const items = await text("stats items\r\n");
    // Every shard stores some: the merged count is all of them.
    expect(stat(items, "items:1:number")).toBe(300);
    for (let c = 0; c < 6; c++) {
      const i = (c * 53) % 300;
      expect(await text(`get spread${i}\r\n`)).toBe(`VALUE spread${i} 0 ${String(i).length}\r\n${i}\r\nEND\r\n`);
    }
  });

  test("a multiget across shards answers in key order", async () => {
    const keys = Array.from({ length: 50 }, (_, i) => `spread${(i * 7) % 300}`);
    keys.splice(10, 0, "missing-key");
    const answer = await text(`get ${keys.join(" ")}\r\n`);
    const expected = keys.filter((k) => k !== "missing-key").map((k) => {
      const v = k.slice(6);
      return `VALUE ${k} 0 ${v.length}\r\n${v}\r\n`;
    });
    expect(answer).toBe(expected.join("") + "END\r\n");
  });

  test("many connections at once, each pipelining across shards in odd pieces, get exactly their own answers", async () => {
    // Responses are rendered into a buffer the connections of a shard share, and a connection
    // waiting for other shards moves its output to its own: no byte may land on the wrong one.
    const conns = 24;
    const runs = Array.from({ length: conns }, async (_, c) => {
      let req = "";
      let expected = "";
      for (let i = 0; i < 60; i++) {
        const k = `iso${c}_${i}`;
        const v = `c${c}v${i}`.repeat(1 + ((c + i) % 5));
        req += `set ${k} ${c} 0 ${v.length}\r\n${v}\r\nget ${k} iso${(c + 1) % conns}_none ${k}\r\n`;
        expected += `STORED\r\nVALUE ${k} ${c} ${v.length}\r\n${v}\r\nVALUE ${k} ${c} ${v.length}\r\n${v}\r\nEND\r\n`;
        if (i % 7 === 3) {
          req += `incr nonum${c} 1\r\nbogus command ${c}\r\n`;
          expected += "NOT_FOUND\r\nERROR\r\n";
        }
      }
      req += "mn\r\n";
      expected += "MN\r\n";
      const bytes = b(req);
      const chunks: number[] = [];
      for (let sent = 0, j = 0; sent < bytes.length - 200; j++) {
        const n = 1 + ((c * 31 + j * 17) % 200);
        chunks.push(n);
        sent += n;
      }
      const a = await exchange(server.port, bytes, { chunks, pauseMs: 1, until: b("MN\r\n"), idleMs: 5000 });
      return [dec.decode(a.bytes), expected];
    });
    for (const [got, expected] of await Promise.all(runs)) expect(got).toBe(expected);
  });

  test("values past the ring's inline limit cross shards both ways as handed-over buffers, byte for byte", async () => {
    // Sets of 20-300 KB (batches over 32 KiB cross as native buffers built in place), then gets
    // and a multiget of all of them (answers over 32 KiB are handed over from the owner's
    // answer buffer, which then starts afresh), from several connections at once.
    const sizes = [20_000, 33_000, 40_000, 70_000, 131_000, 300_000];
    const value = (c: number, i: number, n: number): string => {
      let v = "";
      const unit = `<c${c}i${i}n${n}>`;
      while (v.length < n) v += unit;
      return v.slice(0, n);
    };
    const runs = Array.from({ length: 4 }, async (_, c) => {
      let req = "";
      for (let i = 0; i < sizes.length; i++) req += `set big${c}_${i} ${i} 0 ${sizes[i]}\r\n${value(c, i, sizes[i]!)}\r\n`;
      const stored = await text(req + "mn\r\n", "MN\r\n");
      expect(stored).toBe("STORED\r\n".repeat(sizes.length) + "MN\r\n");
      const keys = sizes.map((_, i) => `big${c}_${i}`);
      const expected = sizes.map((n, i) => `VALUE big${c}_${i} ${i} ${n}\r\n${value(c, i, n)}\r\n`);
      // One get per key, pipelined, then all keys in one multiget.
      const each = await text(keys.map((k) => `get ${k}\r\n`).join("") + "mn\r\n", "MN\r\n");
      expect(each === expected.map((e) => e + "END\r\n").join("") + "MN\r\n").toBe(true);
      const all = await text(`get ${keys.join(" ")}\r\n`);
      expect(all === expected.join("") + "END\r\n").toBe(true);
      // A multiget and single gets in one pipeline: a connection waits for several shards'
      // answers, some arriving (and given back) before it reads them.
      for (let r = 0; r < 3; r++) {
        const a = (c + r) % keys.length;
        const b2 = (c + 2 * r + 1) % keys.length;
        const mixed = await text(`get ${keys.join(" ")}\r\nget ${keys[a]}\r\nget ${keys[b2]}\r\nmn\r\n`, "MN\r\n");
        const want = expected.join("") + "END\r\n" + expected[a] + "END\r\n" + expected[b2] + "END\r\nMN\r\n";
        expect(mixed === want).toBe(true);
      }
    });
    await Promise.all(runs);
  }, 60_000);

  test("CAS ids are unique server-wide: one key's token never matches another key's item", async () => {
    // Each shard counts its own CAS ids; they used to start at 1 on every shard, so a token
    // from one key could update another key's item on another shard.
    let req = "";
    for (let i = 0; i < 60; i++) req += `set casu${i} 0 0 1\r\n${i % 10}\r\n`;
    await text(req + "mn\r\n", "MN\r\n");
    const keys = Array.from({ length: 60 }, (_, i) => `casu${i}`);
    const gets = await text(`gets ${keys.join(" ")}\r\n`);
    const tokens = [...gets.matchAll(/VALUE (casu\d+) 0 1 (\d+)\r\n/g)].map((m) => [m[1]!, Number(m[2])] as const);
    expect(tokens.length).toBe(60);
    expect(new Set(tokens.map(([, c]) => c)).size).toBe(60);
    // Every other key's token is refused for casu0.
    const [, own] = tokens.find(([k]) => k === "casu0")!;
    let cas = "";
    for (const [k, c] of tokens) if (k !== "casu0") cas += `cas casu0 0 0 1 ${c}\r\nX\r\n`;
    expect(await text(cas + "mn\r\n", "MN\r\n")).toBe("EXISTS\r\n".repeat(59) + "MN\r\n");
    expect(await text(`cas casu0 0 0 1 ${own}\r\nY\r\n`, "\r\n")).toBe("STORED\r\n");
  });

  test("one connection's commands stay in order across shards", async () => {
    let req = "";
    let expected = "";
    for (let i = 0; i < 200; i++) {
      req += `set order${i} 0 0 1\r\n${i % 10}\r\nincr order${i} 5\r\nget order${i}\r\ndelete order${i}\r\n`;
      const v = String((i % 10) + 5);
      expected += `STORED\r\n${v}\r\nVALUE order${i} 0 ${v.length}\r\n${v}\r\nEND\r\nDELETED\r\n`;
    }
    expect(await text(req + "mn\r\n", "MN\r\n")).toBe(expected + "MN\r\n");
  });

  test("stats sums every shard; stats reset resets every shard", async () => {
    await text("stats reset\r\n", "RESET\r\n");
    let req = "";
    for (let i = 0; i < 90; i++) req += `get spread${i} nothere${i}\r\n`;
    await text(req + "mn\r\n", "MN\r\n");
    const s = await text("stats\r\n");
    expect(stat(s, "cmd_get")).toBe(180);
    expect(stat(s, "get_hits")).toBe(90);
    expect(stat(s, "get_misses")).toBe(90);
    expect(stat(s, "threads")).toBe(3);
    await text("stats reset\r\n", "RESET\r\n");
    expect(stat(await text("stats\r\n"), "cmd_get")).toBe(0);
  });

  test("a reset is done on every shard before its answer: stats from any connection right after see it", async () => {
    let gets = "";
    for (let i = 0; i < 60; i++) gets += `get spread${i}\r\n`;
    for (let round = 0; round < 15; round++) {
      await text(gets + "mn\r\n", "MN\r\n");
      await text("stats reset\r\n", "RESET\r\n");
      // New connections land on any shard; each asks every shard at once.
      const seen = await Promise.all(Array.from({ length: 6 }, () => text("stats\r\n")));
      expect(seen.map((st) => stat(st, "cmd_get"))).toEqual([0, 0, 0, 0, 0, 0]);
    }
  });

  test("binary stats sum every shard too", async () => {
    const a = await exchange(server.port, binRequest(0x10, { opaque: 42 }), { idleMs: 500 });
    const packets = parseResponses(a.bytes);
    const items = packets.find((p) => p.key === "curr_items");
    expect(Number(new TextDecoder().decode(items!.value))).toBeGreaterThanOrEqual(300);
    expect(packets.every((p) => p.opaque === 42 && p.opcode === 0x10)).toBe(true);
    expect(packets.at(-1)!.key).toBe("");
  });

  test("stats detail dump merges the prefixes of every shard", async () => {
    await text("stats detail on\r\n", "OK\r\n");
    let req = "";
    for (let i = 0; i < 40; i++) req += `set user:${i} 0 0 1\r\nx\r\nget user:${i} user:miss${i}\r\n`;
    await text(req + "mn\r\n", "MN\r\n");
    const dump = await text("stats detail dump\r\n");
    expect(dump).toBe("PREFIX user get 80 hit 40 set 40 del 0\r\nEND\r\n");
    await text("stats detail off\r\n", "OK\r\n");
  });

  test("flush_all empties every shard, in order with the commands around it", async () => {
    const answer = await text("set f1 0 0 1\r\na\r\nset f2 0 0 1\r\nb\r\nflush_all\r\nget f1 f2 spread1 spread2\r\nset f3 0 0 1\r\nc\r\nget f3\r\n");
    expect(answer).toBe("STORED\r\nSTORED\r\nOK\r\nEND\r\nSTORED\r\nVALUE f3 0 1\r\nc\r\nEND\r\n");
    expect(stat(await text("stats\r\n"), "cmd_flush")).toBe(1);
  });

  test("verbosity and cache_memlimit reach every shard", async () => {
    expect(await text("verbosity 1\r\n", "OK\r\n")).toBe("OK\r\n");
    expect(await text("stats settings\r\n")).toContain("STAT verbosity 1\r\n");
    expect(await text("verbosity 0\r\n", "OK\r\n")).toBe("OK\r\n");
    expect(await text("cache_memlimit 48\r\n", "OK\r\n")).toBe("OK\r\n");
    expect(await text("stats\r\n")).toContain("STAT limit_maxbytes 50331648\r\n");
  });

  test("stats sizes_enable reaches every shard and stats sizes sums them; a refused metadump is one line", async () => {
    expect(await text("stats sizes_enable\r\n", "\r\n")).toBe("STAT sizes_status enabled\r\n");
    let req = "";
    for (let i = 0; i < 60; i++) req += `set sz${i} 0 0 10\r\n0123456789\r\n`;
    await text(req + "mn\r\n", "MN\r\n");
    const sizes = await text("stats sizes\r\n");
    let total = 0;
    for (const m of sizes.matchAll(/STAT (\d+) (\d+)\r\n/g)) total += Number(m[2]);
    // Every shard counted its own (before, only this connection's shard was enabled and asked).
    expect(total).toBe(60);
    expect(await text("stats sizes_disable\r\n", "\r\n")).toBe("STAT sizes_status disabled\r\n");
    expect(await text("stats sizes\r\n")).toBe("STAT sizes_status disabled\r\nEND\r\n");
    expect(await text("lru_crawler metadump 99\r\n", "\r\n")).toBe("BADCLASS invalid class id\r\n");
  });

  test("cache_memlimit's ceiling is the whole server's (twice -m), as with one shard", async () => {
    // -m 64 on 2 shards: each shard rounded its half down, so 129 MB passed as 2 x 64 pages.
    const two = await startOurs(["-t", "2"]);
    try {
      const a = await exchange(two.port, b("cache_memlimit 129\r\ncache_memlimit 128\r\n"), { until: b("OK\r\n"), idleMs: 3000 });
      expect(dec.decode(a.bytes)).toBe("MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust\r\nOK\r\n");
    } finally {
      await two.stop();
    }
    // -m 64 on 3 shards: the same ceiling, taken whole (43 + 43 + 42 pages).
    expect(await text("cache_memlimit 129\r\n", "\r\n")).toBe("MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust\r\n");
    expect(await text("cache_memlimit 128\r\n", "\r\n")).toBe("OK\r\n");
    expect(await text("stats\r\n")).toContain("STAT limit_maxbytes 134217728\r\n");
    // 100 pages over 3 shards: 34 + 33 + 33, all of them usable.
    expect(await text("cache_memlimit 100\r\n", "\r\n")).toBe("OK\r\n");
    expect(await text("cache_memlimit 64\r\n", "\r\n")).toBe("OK\r\n");
  });
});
