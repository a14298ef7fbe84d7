/**
 * What allocation frees, side by side with stock memcached 1.6.18 over TCP: an append or an
 * incr that needs a new item never evicts the item it copies from (stock holds that key's item
 * lock, and its LRU tail pull skips what it cannot lock); the expired and flushed items at a
 * class's LRU tail are reclaimed before each allocation (stock's do_item_alloc_pull with the
 * LRU maintainer off, `-o no_lru_maintainer`, which makes stock deterministic here); the LRU
 * crawler counts what it removes as stock's does; a value larger than a slab chunk is not a
 * number for incr/decr.
 */
import { afterAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { spawn, type Subprocess } from "bun";
import { waitForPort } from "./lib/harness.ts";
import { ManualClock } from "../../examples/memcached/clock.ts";
import { Store, CS } from "../../examples/memcached/store.ts";
import { murmur3 } from "../../examples/memcached/hash.ts";

/** Ports of this file (23100-23199 are this area's). */
let nextPort = 23160;

interface Server {
  port: number;
  proc: Subprocess;
}
const running: Server[] = [];

afterAll(async () => {
  for (const s of running) s.proc.kill("SIGKILL");
  await Promise.all(running.map((s) => s.proc.exited));
}, 30_000);

async function start(which: "stock" | "ours", args: string[]): Promise<Server> {
  const port = nextPort++;
  const cmd =
    which === "stock"
      ? ["memcached", "-u", "root", "-l", "127.0.0.1", "-p", String(port), "-U", "0", ...args]
      : [process.execPath, "examples/memcached/main.ts", "-l", "127.0.0.1", "-p", String(port), "-U", "0", "-t", "1", ...args];
  const proc = spawn(cmd, { stdout: "ignore", stderr: "ignore" });
  const s = { port, proc };
  running.push(s);
  await waitForPort(port, 30_000);
  return s;
}

async function stop(s: Server): Promise<void> {
  running.splice(running.indexOf(s), 1);
  s.proc.kill("SIGTERM");
  await s.proc.exited;
}

/** One text connection: each request is followed by `mn`, and its answer read up to the `MN`. */
class Conn {
  private buf = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  private constructor(private readonly sock: net.Socket) {
    sock.on("data", (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.waiter?.();
    });
  }

  static async open(port: number): Promise<Conn> {
    const sock = net.connect(port, "127.0.0.1");
    sock.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      sock.once("connect", () => resolve());
      sock.once("error", reject);
    });
    return new Conn(sock);
  }

  /** Sends `req` then `mn`; the answer before `MN`. */
  async req(req: string): Promise<string> {
    this.buf = Buffer.alloc(0);
    this.sock.write(Buffer.from(req + "mn\r\n", "latin1"));
    while (!this.buf.toString("latin1").endsWith("MN\r\n")) {
      await new Promise<void>((resolve) => (this.waiter = resolve));
      this.waiter = null;
    }
    return this.buf.toString("latin1", 0, this.buf.length - 4);
  }

  async stats(sub = ""): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const l of (await this.req(sub ? `stats ${sub}\r\n` : "stats\r\n")).split("\r\n")) {
      const m = /^STAT (\S+) (.*)$/.exec(l);
      if (m) out[m[1]!] = m[2]!;
    }
    return out;
  }

  close(): void {
    this.sock.destroy();
  }
}

/** Runs `scenario` against stock and ours (same arguments), one after the other; both results. */
async function both<T>(args: string[], scenario: (c: Conn) => Promise<T>): Promise<{ stock: T; ours: T }> {
  const results: T[] = [];
  for (const which of ["stock", "ours"] as const) {
    const s = await start(which, args);
    const c = await Conn.open(s.port);
    try {
      results.push(await scenario(c));
    } finally {
      c.close();
      await stop(s);
    }
  }
  return { stock: results[0]!, ours: results[1]! };
}

const pick = (st: Record<string, string>, keys: string[]): Record<string, string | undefined> =>
  Object.fromEntries(keys.map((k) => [k, st[k]]));

/** Stock's LRU without its maintainer thread: allocation reclaims and evicts in a fixed order. */
const DETERMINISTIC = ["-o", "no_lru_maintainer,no_lru_crawler,slab_reassign=0"];

describe("an item being copied is never the one evicted for its copy", () => {
  // -m 2 with 1000-byte chunks in class 1: about 2000 small items fill memory. "n" is made the
  // LRU tail with every chunk in use, then grows (incr 99 -> 100, append): the new item's chunk
  // comes from evicting the next item instead, as in stock.
  test("incr that grows the value and append on the LRU tail item when memory is full", async () => {
    const r = await both(["-m", "2", "-n", "1000", ...DETERMINISTIC], async (c) => {
      const fill = async (from: number, to: number): Promise<void> => {
        let s = "";
        for (let i = from; i < to; i++) s += `set f${i} 0 0 2 noreply\r\n99\r\n`;
        await c.req(s);
      };
      let i = 0;
      while (Number((await c.stats()).evictions) === 0) {
        await fill(i, i + 500);
        i += 500;
      }
      const capacity = Number((await c.stats()).curr_items);
      await c.req("set n 0 0 2\r\n99\r\n");
      await fill(i, i + capacity - 1); // n is the tail now, every chunk in use
      const incr = await c.req("incr n 1\r\nget n\r\n");
      await fill(i + capacity, i + 2 * capacity - 2); // n the tail again
      const append = await c.req("append n 0 0 1\r\n5\r\nget n\r\n");
      const st = await c.stats();
      return { capacity, incr, append, ...pick(st, ["curr_items", "evictions", "evicted_unfetched"]) };
    });
    expect(r.ours.incr).toBe("100\r\nVALUE n 0 3\r\n100\r\nEND\r\n");
    expect(r.ours.append).toBe("STORED\r\nVALUE n 0 4\r\n1005\r\nEND\r\n");
    expect(r.ours).toEqual(r.stock);
  }, 120_000);

  test("append to an item larger than a slab chunk that fills memory: NOT_STORED, the item stays", async () => {
    const r = await both(["-m", "2", ...DETERMINISTIC], async (c) => {
      const value = "x".repeat(1_048_000);
      const set = await c.req(`set b 0 0 ${value.length}\r\n${value}\r\n`);
      const append = await c.req(`append b 0 0 100\r\n${"y".repeat(100)}\r\nmg b s\r\n`);
      return { set, append };
    });
    expect(r.ours.append).toBe("NOT_STORED\r\nHD s1048000\r\n");
    expect(r.ours).toEqual(r.stock);
  }, 60_000);
});

describe("incr/decr on a value larger than a slab chunk", () => {
  test("not a number (stock keeps it in chunks), even when it is digits and spaces", async () => {
    const r = await both(DETERMINISTIC, async (c) => {
      const big = "5" + " ".repeat(599_999);
      const small = "5" + " ".repeat(500_000 - 1);
      return c.req(`set L 0 0 ${big.length}\r\n${big}\r\nincr L 1\r\ndecr L 1\r\nma L\r\nset M 0 0 ${small.length}\r\n${small}\r\nincr M 1\r\nmg M s\r\n`);
    });
    expect(r.ours).toContain("CLIENT_ERROR cannot increment or decrement non-numeric value\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    expect(r.ours).toBe(r.stock);
  }, 60_000);
});

describe("expired and flushed items at the LRU tail are reclaimed by the next allocation", () => {
  const COUNTERS = ["curr_items", "bytes", "total_items", "reclaimed", "expired_unfetched", "get_flushed", "get_expired", "get_misses", "crawler_reclaimed"];
  test("after flush_all and negative exptimes: items, bytes and counters as stock's", async () => {
    const r = await both(["-o", "no_lru_maintainer"], async (c) => {
      const seen: Record<string, string | undefined>[] = [];
      await c.req("set a 0 0 1\r\n1\r\nset b 0 0 1\r\n1\r\nset c 0 0 1\r\n1\r\nget a\r\n");
      await c.req("flush_all\r\nset d 0 0 1\r\nx\r\n");
      seen.push(pick(await c.stats(), COUNTERS));
      await c.req("set e 0 0 1\r\nx\r\n");
      seen.push(pick(await c.stats(), COUNTERS));
      // Not at the tail (d and e are live below them): they stay until read or crawled.
      await c.req("set f 0 -1 1\r\nx\r\nset g 0 -1 1\r\nx\r\nset h 0 0 1\r\nx\r\n");
      seen.push(pick(await c.stats(), COUNTERS));
      await c.req("get a b c d e f\r\n");
      seen.push(pick(await c.stats(), COUNTERS));
      return seen;
    });
    expect(r.ours).toEqual(r.stock);
  }, 60_000);

  test("the LRU crawler counts crawler_reclaimed (not reclaimed), and flushed items are not expired_unfetched", async () => {
    const r = await both(["-o", "no_lru_maintainer"], async (c) => {
      // One item in each of several classes (so no set reclaims another), then a flush.
      let s = "";
      for (const [k, n] of [["p", 1], ["q", 100], ["r", 1000], ["s", 10_000]] as const) s += `set ${k} 0 -1 ${n}\r\n${"v".repeat(n)}\r\n`;
      s += "set t 0 0 300\r\n" + "w".repeat(300) + "\r\nset u 0 0 3000\r\n" + "w".repeat(3000) + "\r\nget t\r\nflush_all\r\n";
      await c.req(s);
      expect(await c.req("lru_crawler crawl all\r\n")).toBe("OK\r\n");
      // Stock's crawler runs in the background: wait for it to have removed all six.
      let st = await c.stats();
      for (let i = 0; i < 100 && Number(st.crawler_reclaimed) < 6; i++) {
        await Bun.sleep(20);
        st = await c.stats();
      }
      return pick(st, COUNTERS);
    });
    expect(r.ours.crawler_reclaimed).toBe("6");
    expect(r.ours).toEqual(r.stock);
  }, 60_000);
});

describe("the LRU tail check (in process)", () => {
  // Stock's lru_pull_tail reclaims an item expired before this second (exptime < now); one
  // whose exptime is this very second is live there (as do_item_get's `<=` would not say) and
  // is evicted, counted in evicted_nonzero.
  test("an item expiring this second is evicted, one expired before it is reclaimed", () => {
    for (const [ttl, reclaimed, evicted] of [[5, 0, 1], [4, 1, 0]] as const) {
      const clock = new ManualClock();
      const store = new Store({ maxBytes: 1024 * 1024, itemSizeMax: 1024 * 1024, chunkSize: 1000, clock, memory: "js" });
      try {
        const key = new TextEncoder().encode("k00000");
        const put = (i: number, exptime: number): boolean => {
          const k = new TextEncoder().encode(`k${String(i).padStart(5, "0")}`);
          const ref = store.alloc(k, 0, k.length, 0, exptime, 3);
          if (ref < 0) return false;
          store.mem.set([0x61, 13, 10], store.valueOffset(ref));
          store.link(ref, murmur3(k, 0, k.length));
          return true;
        };
        put(0, clock.realtime(ttl)); // the tail
        let i = 1;
        while (store.freeChunks(1) > 0) put(i++, 0);
        expect(store.classStats[CS.COUNT + CS.EVICTED]).toBe(0);
        clock.advance(5);
        expect(put(i, 0)).toBe(true);
        expect(store.classStats[CS.COUNT + CS.RECLAIMED]).toBe(reclaimed);
        expect(store.classStats[CS.COUNT + CS.EVICTED]).toBe(evicted);
        expect(store.classStats[CS.COUNT + CS.EVICTED_NONZERO]).toBe(evicted);
        expect(store.find(key, 0, key.length, murmur3(key, 0, key.length))).toBe(-1);
      } finally {
        store.close();
      }
    }
  });
});
