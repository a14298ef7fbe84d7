/**
 * `stats` and `stats settings` as stock memcached 1.6.18 prints them: the same keys in the same
 * order (less the extstore and TLS settings, README: Differences), and total_connections after
 * `stats reset` counting only connections opened since.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { b, cat, dec, exchange, show, startOurs, startStock, type ServerProcess } from "./lib/harness.ts";
import { binRequest, incrExtras, setExtras, u32Extras } from "./lib/binproto.ts";

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

/**
 * The same byte streams, each on a fresh connection and in order, to a fresh stock -t 1 and a
 * fresh ours -t 1 (started with `args`); the answers must be the same bytes.
 */
async function sameAnswers(args: string[], streams: { data: Uint8Array; until: Uint8Array }[]): Promise<void> {
  const [fs, fo] = await Promise.all([startStock(["-t", "1", ...args]), startOurs(["-t", "1", ...args])]);
  try {
    for (const { data, until } of streams) {
      const theirs = await exchange(fs.port, data, { until, idleMs: 2000 });
      const mine = await exchange(fo.port, data, { until, idleMs: 2000 });
      expect(show(mine.bytes)).toBe(show(theirs.bytes));
    }
  } finally {
    await Promise.all([fs.stop(), fo.stop()]);
  }
}

const MN = b("mn\r\n");
const MN_ANSWER = b("MN\r\n");
const NOOP = binRequest(0x0a, { opaque: 0x5e5e5e5e });
const NOOP_ANSWER = ((): Uint8Array => {
  const r = new Uint8Array(24);
  r[0] = 0x81;
  r[1] = 0x0a;
  r.set([0x5e, 0x5e, 0x5e, 0x5e], 12);
  return r;
})();
const text = (s: string): { data: Uint8Array; until: Uint8Array } => ({ data: cat(b(s), MN), until: MN_ANSWER });
const binary = (...packets: Uint8Array[]): { data: Uint8Array; until: Uint8Array } => ({ data: cat(...packets, NOOP), until: NOOP_ANSWER });

describe("stats detail", () => {
  test("dump in stock's order (the prefix's hash bucket, newest first) with stock's prefix matching", async () => {
    // a, b, c, x, zz, q, foo and bar fall in different buckets of stock's 256 (murmur3): stock
    // dumps b (3), zz (24), x (27), ... not in the order they were first seen. "a122" and "a"
    // share bucket 178: stock's strncmp lookup counts a:1 under a122.
    await sameAnswers([], [
      text("stats detail on\r\nget a:1 b:1 c:1\r\nset a122:1 0 0 1\r\nx\r\nget a:2\r\nset x:1 0 0 1\r\nx\r\nget zz:1 q:1 foo:1 bar:1\r\ndelete bar:1\r\nget :e\r\nstats detail dump\r\n"),
    ]);
  }, 60_000);

  test("binary gets, touches, sets, appends and deletes are counted as stock counts them; STAT reset clears them", async () => {
    const set = (key: string, value: string, op = 0x01): Uint8Array => binRequest(op, { key, value, extras: setExtras(0, 0) });
    const dump = binRequest(0x10, { key: "detail dump" });
    await sameAnswers([], [
      text("stats detail on\r\n"),
      binary(
        binRequest(0x00, { key: "bn:1" }),
        set("bn:2", "x"),
        binRequest(0x0c, { key: "bn:2" }),
        binRequest(0x1c, { key: "bt:1", extras: u32Extras(0) }),
        binRequest(0x1e, { key: "bn:2", extras: u32Extras(0) }),
        binRequest(0x09, { key: "bn:3" }),
        binRequest(0x19, { key: "ba:1", value: "y" }),
        binRequest(0x0f, { key: "bn:2", value: "y" }),
        set("bw:1", "z".repeat(2_000_000)), // too large: counted all the same
        binRequest(0x14, { key: "bn:2" }),
        binRequest(0x04, { key: "bn:2" }),
        binRequest(0x05, { key: "bi:1", extras: incrExtras(1n, 0n, 0) }), // incr: not counted
        dump,
      ),
      binary(binRequest(0x10, { key: "reset" }), dump),
      text("stats detail dump\r\n"),
    ]);
  }, 60_000);
});

describe("stats sizes", () => {
  // Items by stock's ITEM_ntotal in 32-byte buckets, counted only if linked after the
  // histogram was switched on (by CAS: switching it on takes a CAS id). An incr in place gives
  // the item a new CAS: it counts from then on. md I gives one too, without moving it in or
  // out: deleting such an item then takes one from a bucket it never added to (old3 and n1
  // share bucket 96), as in stock.
  const setup = "set old1 0 0 10\r\n0123456789\r\nset old2 0 0 3\r\n100\r\nset old3 5 0 1\r\nx\r\n";
  const after =
    "stats sizes\r\nset n1 0 0 10\r\n0123456789\r\nset n2 1 0 100\r\n" + "v".repeat(100) + "\r\nset n3 0 0 3000\r\n" + "w".repeat(3000) +
    "\r\nstats sizes\r\ndelete old1\r\nincr old2 1\r\nstats sizes\r\ndelete old2\r\nmd old3 I\r\ndelete old3\r\nstats sizes\r\nmg n1 c\r\n";

  test("sizes_enable, sizes and sizes_disable (text and binary) answer as stock's", async () => {
    await sameAnswers([], [
      text(`${setup}stats sizes\r\nstats sizes_enable\r\n${after}stats sizes_enable\r\n`),
      binary(binRequest(0x10, { key: "sizes" }), binRequest(0x10, { key: "sizes_disable" }), binRequest(0x10, { key: "sizes" }), binRequest(0x10, { key: "sizes_enable" }), binRequest(0x10, { key: "sizes" })),
    ]);
  }, 60_000);

  test("-o track_sizes: on from the start (before or after -C, as stock reads its options); -C refuses sizes_enable", async () => {
    for (const args of [["-o", "track_sizes"], ["-o", "track_sizes", "-C"], ["-C", "-o", "track_sizes"], ["-C"]]) {
      await sameAnswers(args, [text(`${setup}${after}stats sizes_enable\r\nstats sizes_disable\r\nstats sizes\r\n`)]);
    }
  }, 120_000);

  test("stats settings says track_sizes yes while the histogram is on", async () => {
    const value = async (port: number): Promise<string[]> => {
      const out: string[] = [];
      for (const cmd of ["", "stats sizes_enable\r\n", "stats sizes_disable\r\n"]) {
        if (cmd) await exchange(port, b(cmd), { until: b("\r\n"), idleMs: 2000 });
        out.push((await stats(port, "settings")).get("track_sizes")!);
      }
      return out;
    };
    const [s, o] = [await value(stock.port), await value(ours.port)];
    expect(s).toEqual(["no", "yes", "no"]);
    expect(o).toEqual(s);
  });
});

describe("stats values that do not depend on load", () => {
  test("hash_bytes (a pointer per bucket) and reserved_fds (5 per thread) are stock's", async () => {
    for (const threads of ["1", "3"]) {
      const [fs, fo] = await Promise.all([startStock(["-t", threads]), startOurs(["-t", threads])]);
      try {
        const [s, o] = await Promise.all([stats(fs.port), stats(fo.port)]);
        for (const k of ["hash_power_level", "hash_bytes", "reserved_fds", "threads"]) expect(`${k} ${o.get(k)}`).toBe(`${k} ${s.get(k)}`);
      } finally {
        await Promise.all([fs.stop(), fo.stop()]);
      }
    }
  }, 60_000);

  test("conn_yields: each yield after reqs_per_event commands of a read, and the one when they run out exactly there", async () => {
    // Stock's transmit when a read runs out of commands ends in conn_new_cmd, which spends one
    // more of the event's 20: a read of exactly 20 commands (answers pending) yields there too.
    const reads: Uint8Array[] = [
      b("version\r\n".repeat(20)),
      b("version\r\n".repeat(19)),
      b("version\r\n".repeat(21)),
      b("version\r\n".repeat(40)),
      b("set k 0 0 1 noreply\r\nx\r\n".repeat(20)),
      b("version\r\n".repeat(20) + "vers"),
      b("version\r\n".repeat(19) + "get k\r\n"),
      cat(...Array.from({ length: 20 }, (_, i) => binRequest(0x09, { key: `q${i}` }))),
    ];
    const yields = async (port: number): Promise<string[]> => {
      const out: string[] = [];
      for (const r of reads) {
        await exchange(port, r, { idleMs: 300 });
        out.push((await stats(port)).get("conn_yields")!);
      }
      return out;
    };
    const [fs, fo] = await Promise.all([startStock(["-t", "1"]), startOurs(["-t", "1"])]);
    try {
      const s = await yields(fs.port);
      expect(s).toEqual(["1", "1", "2", "4", "5", "6", "6", "7"]);
      expect(await yields(fo.port)).toEqual(s);
    } finally {
      await Promise.all([fs.stop(), fo.stop()]);
    }
  }, 60_000);
});
