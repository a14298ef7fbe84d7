/**
 * `stats` and `stats settings` as stock memcached 1.6.18 prints them: the same keys in the same
 * order (less the extstore and TLS settings, README: Differences), and total_connections after
 * `stats reset` counting only connections opened since.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { b, dec, exchange, startOurs, startStock, type ServerProcess } from "./lib/harness.ts";

let stock: ServerProcess;
let ours: ServerProcess;

beforeAll(async () => {
  [stock, ours] = await Promise.all([startStock(), startOurs(["-t", "1"])]);
}, 60_000);

afterAll(async () => {
  await Promise.all([stock?.stop(), ours?.stop()]);
});

async function stats(port: number, sub = ""): Promise<Map<string, string>> {
  const a = await exchange(port, b(`stats${sub ? " " + sub : ""}\r\n`), { until: b("END\r\n"), idleMs: 2000 });
  const out = new Map<string, string>();
  for (const line of dec.decode(a.bytes).split("\r\n")) {
    const m = /^STAT (\S+) (.*)$/.exec(line);
    if (m) out.set(m[1]!, m[2]!);
  }
  return out;
}

describe("stats keys", () => {
  test("plain stats: stock's keys in stock's order, the LRU ones included", async () => {
    const [s, o] = await Promise.all([stats(stock.port), stats(ours.port)]);
    expect([...o.keys()]).toEqual([...s.keys()]);
    for (const k of ["evicted_active", "moves_to_cold", "moves_to_warm", "moves_within_lru", "direct_reclaims", "lru_bumps_dropped"]) {
      expect(o.get(k)).toBe("0");
    }
  });

  test("stats settings: stock's keys in stock's order (num_napi_ids (null), no drop_privileges)", async () => {
    const [s, o] = await Promise.all([stats(stock.port, "settings"), stats(ours.port, "settings")]);
    // Settings of features this server does not have (extstore, TLS): not printed.
    const absent = (k: string): boolean => k.startsWith("ext_") || k.startsWith("ssl_") || k === "slab_automove_freeratio";
    expect([...o.keys()]).toEqual([...s.keys()].filter((k) => !absent(k)));
    expect(o.get("num_napi_ids")).toBe(s.get("num_napi_ids")!);
    expect(o.get("memory_file")).toBe(s.get("memory_file")!);
  });
});

describe("direct_reclaims", () => {
  test("a new page for a class is not a reclaim: items of new sizes leave it at stock's 0", async () => {
    const [fs, fo] = await Promise.all([startStock(), startOurs(["-t", "1"])]);
    try {
      const counts: string[] = [];
      for (const srv of [fs, fo]) {
        for (const n of [1, 500, 5000, 50_000]) {
          const a = await exchange(srv.port, b(`set dr${n} 0 0 ${n}\r\n${"v".repeat(n)}\r\n`), { until: b("STORED\r\n"), idleMs: 2000 });
          expect(dec.decode(a.bytes)).toBe("STORED\r\n");
        }
        counts.push((await stats(srv.port)).get("direct_reclaims")!);
      }
      expect(counts[1]).toBe(counts[0]!);
      expect(counts[1]).toBe("0");
    } finally {
      await Promise.all([fs.stop(), fo.stop()]);
    }
  }, 60_000);
});

describe("total_connections", () => {
  test("after stats reset: the connections opened since (the listening sockets no longer count)", async () => {
    const after = async (port: number): Promise<string | undefined> => {
      await exchange(port, b("stats reset\r\n"), { until: b("RESET\r\n"), idleMs: 2000 });
      await exchange(port, b("version\r\n"), { until: b("\r\n"), idleMs: 2000 });
      return (await stats(port)).get("total_connections");
    };
    const [s, o] = [await after(stock.port), await after(ours.port)];
    expect(s).toBe("2"); // the version connection and the stats one
    expect(o).toBe(s);
  });

  test("before any reset it counts the listening sockets, as stock does", async () => {
    const [fs, fo] = await Promise.all([startStock(), startOurs(["-t", "1"])]);
    try {
      const [s, o] = await Promise.all([stats(fs.port), stats(fo.port)]);
      expect(o.get("total_connections")).toBe(s.get("total_connections")!);
    } finally {
      await Promise.all([fs.stop(), fo.stop()]);
    }
  }, 60_000);
});
