/**
 * The memory limit as stock memcached 1.6.18 keeps it, side by side with stock over TCP: a slab
 * class with no page takes its first one past -m, a class that has pages evicts its own items
 * and never another class's on demand, pages move between classes only through the background
 * automover (slab_automove=1: a page a second once its 30-run window has filled), and
 * cache_memlimit can raise the limit. Misses, hits and `total_malloced` are compared with
 * stock's at a coarse level (the LRUs differ in detail).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { startOurs, startStock, type ServerProcess } from "./lib/harness.ts";
import { MemClient } from "./lib/memclient.ts";

const MiB = 1024 * 1024;
const SIZES = [1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000];

const running: ServerProcess[] = [];
afterAll(async () => {
  await Promise.all(running.map((s) => s.stop()));
}, 30_000);

async function both(stockArgs: string[], ourArgs: string[]): Promise<{ stock: ServerProcess; ours: ServerProcess }> {
  const [stock, ours] = await Promise.all([startStock(stockArgs), startOurs(ourArgs)]);
  running.push(stock, ours);
  return { stock, ours };
}

async function stop(...servers: ServerProcess[]): Promise<void> {
  for (const s of servers) {
    running.splice(running.indexOf(s), 1);
    await s.stop();
  }
}

/** One key read after every set of ten value sizes from 1 KB to 1 MB, 300 times. */
async function hotKey(port: number): Promise<{ misses: number; errors: number; malloced: number; classes: number }> {
  const c = await MemClient.connect(port);
  try {
    expect(await c.set("hot", 1000)).toBe("STORED");
    let misses = 0;
    let errors = 0;
    for (let r = 0; r < 300; r++) {
      const size = SIZES[r % SIZES.length]!;
      if ((await c.set(`k${size}-${r}`, size)) !== "STORED") errors++;
      if (!(await c.get("hot"))) misses++;
    }
    const slabs = await c.stats("slabs");
    return { misses, errors, malloced: Number(slabs.total_malloced), classes: Number(slabs.active_slabs) };
  } finally {
    c.close();
  }
}

describe("-m 8 with ten value sizes from 1 KB to 1 MB", () => {
  for (const threads of [1, 2]) {
    test(`-t ${threads}: a key read constantly is never lost; memory stays within -m plus a page per class`, async () => {
      const { stock, ours } = await both(["-m", "8", "-t", String(threads)], ["-m", "8", "-t", String(threads)]);
      const theirs = await hotKey(stock.port);
      const mine = await hotKey(ours.port);
      await stop(stock, ours);
      expect(theirs).toMatchObject({ misses: 0, errors: 0 });
      expect(mine).toMatchObject({ misses: 0, errors: 0 });
      // Stock's bound: -m plus the first page of each class; each of our shards has its own
      // allocator, so each may take a class's first page.
      expect(theirs.malloced).toBeLessThanOrEqual(8 * MiB + theirs.classes * MiB);
      expect(mine.malloced).toBeLessThanOrEqual(8 * MiB + threads * mine.classes * MiB);
      if (threads === 1) expect(mine.malloced).toBe(theirs.malloced);
    }, 60_000);
  }
});

describe("-M (no evictions)", () => {
  test("a new value size once memory is full, and after flush_all, is stored as stock stores it", async () => {
    const { stock, ours } = await both(["-m", "8", "-M"], ["-m", "8", "-M", "-t", "1"]);
    const run = async (port: number): Promise<string[]> => {
      const c = await MemClient.connect(port);
      const answers: string[] = [];
      let n = 0;
      while ((await c.set(`a${n}`, 1000)) === "STORED") n++;
      answers.push(`full after ${n > 7000 ? "7000+" : n}`);
      answers.push(await c.set("new-size", 50_000));
      answers.push(await c.set("same-size", 1000));
      answers.push(await c.line("flush_all"));
      answers.push(await c.set("after-flush-new-size", 5000));
      answers.push(await c.set("after-flush-same-size", 1000));
      answers.push(String(await c.get("after-flush-new-size")));
      c.close();
      return answers;
    };
    const theirs = await run(stock.port);
    const mine = await run(ours.port);
    await stop(stock, ours);
    expect(theirs).toEqual(["full after 7000+", "STORED", "SERVER_ERROR out of memory storing object", "OK", "STORED", "STORED", "true"]);
    expect(mine).toEqual(theirs);
  }, 60_000);
});

describe("cache_memlimit", () => {
  test("raising the limit lets memory grow to it, as in stock", async () => {
    const { stock, ours } = await both(["-m", "8"], ["-m", "8", "-t", "1"]);
    const run = async (port: number): Promise<{ answer: string; maxbytes: string; malloced: number }> => {
      const c = await MemClient.connect(port);
      const answer = await c.line("cache_memlimit 16");
      for (let n = 0; n < 20_000; n++) await c.set(`a${n}`, 1000);
      const maxbytes = (await c.stats()).limit_maxbytes!;
      const malloced = Number((await c.stats("slabs")).total_malloced);
      c.close();
      return { answer, maxbytes, malloced };
    };
    const theirs = await run(stock.port);
    const mine = await run(ours.port);
    await stop(stock, ours);
    expect(theirs).toEqual({ answer: "OK", maxbytes: String(16 * MiB), malloced: 16 * MiB });
    expect(mine).toEqual(theirs);
  }, 60_000);
});

describe("value sizes that change once memory is full (slab_automove=1)", () => {
  test("the automover moves pages to the new size within the same time as stock's, and the hits follow", async () => {
    // Phase A fills -m 8 with 2 KB values; phase B then cycles 100 keys of 50 KB (5 MB), which
    // fit only once pages move. Stock's automover decides once its 30-run window has filled
    // (about 31 s after start), then moves a page a second.
    const { stock, ours } = await both(["-m", "8"], ["-m", "8", "-t", "1"]);
    const started = Date.now();
    const run = async (port: number): Promise<{ early: number; late: number; moved: number }> => {
      const c = await MemClient.connect(port);
      for (let i = 0; i < 6000; i++) await c.set(`a${i}`, 2000);
      let early = 0;
      let late = 0;
      while (Date.now() - started < 48_000) {
        const t = Date.now() - started;
        for (let i = 0; i < 100; i++) {
          if (await c.get(`b${i}`)) {
            if (t < 25_000) early++;
            else if (t > 43_000) late++;
          } else {
            await c.set(`b${i}`, 50_000);
          }
        }
        await Bun.sleep(250);
      }
      const moved = Number((await c.stats()).slabs_moved);
      c.close();
      return { early, late, moved };
    };
    const [theirs, mine] = await Promise.all([run(stock.port), run(ours.port)]);
    await stop(stock, ours);
    console.log(`size shift: stock ${JSON.stringify(theirs)}, ours ${JSON.stringify(mine)}`);
    expect(theirs.moved).toBeGreaterThan(0);
    expect(mine.moved).toBeGreaterThan(0);
    // Before the moves, the new class has its first page only: few hits on either.
    expect(theirs.early).toBeLessThan(theirs.late);
    expect(mine.early).toBeLessThan(mine.late);
    expect(mine.late).toBeGreaterThanOrEqual(theirs.late / 2);
  }, 90_000);
});

describe("slabs reassign while uploads hold every page of the source (slab_automove=0)", () => {
  test("the page moves once the uploads finish, as stock's mover waits for them", async () => {
    const args = ["-m", "64", "-o", "slab_automove=0"];
    const { stock, ours } = await both(args, [...args, "-t", "1"]);
    const run = async (port: number): Promise<string[]> => {
      const c = await MemClient.connect(port);
      // Two full pages of 1000-byte values (class 12, 885 a page), a chunk freed in each.
      for (let i = 0; i < 1770; i++) await c.set(`k${i}`, 1000);
      await c.line("delete k0");
      await c.line("delete k1000");
      const u1 = await MemClient.connect(port);
      const u2 = await MemClient.connect(port);
      const up1 = u1.startSet("up1", 1000, 500);
      const up2 = u2.startSet("up2", 1000, 500);
      await Bun.sleep(300);
      const answers = [await c.line("slabs reassign 12 0"), await c.line("slabs reassign 12 0")];
      await Bun.sleep(500);
      answers.push(`moved while busy ${(await c.stats()).slabs_moved}`);
      answers.push(await up1.finish(), await up2.finish());
      await Bun.sleep(2500);
      const st = await c.stats();
      const sl = await c.stats("slabs");
      answers.push(`moved ${st.slabs_moved} pool ${st.slab_global_page_pool} pages ${sl["12:total_pages"]}`);
      for (const x of [c, u1, u2]) x.close();
      return answers;
    };
    const [theirs, mine] = await Promise.all([run(stock.port), run(ours.port)]);
    await stop(stock, ours);
    expect(theirs).toEqual(["OK", "BUSY currently processing reassign request", "moved while busy 0", "STORED", "STORED", "moved 1 pool 1 pages 1"]);
    expect(mine).toEqual(theirs);
  }, 60_000);
});

describe("no memory for a value larger than a slab chunk (> 512 KB), as stock", () => {
  /**
   * -m 4, ten clients each send a 1 MB set's header and most of its value, then the rest:
   * memory runs out for some. Each protocol's failure answer, the old value kept, and
   * store_no_memory, as stock, which allocates such a value's chunks while it arrives.
   */
  async function uploads(port: number, proto: "text" | "meta" | "binary"): Promise<{ answers: string[]; kept: string; noMemory: string }> {
    const net = await import("node:net");
    const c = await MemClient.connect(port);
    try {
      for (let i = 0; i < 10; i++) expect(await c.set(`up${i}`, 3)).toBe("STORED");
      const socks = await Promise.all(
        Array.from({ length: 10 }, (_, i) => new Promise<import("node:net").Socket>((resolve) => {
          const s = net.connect(port, "127.0.0.1", () => resolve(s));
        })),
      );
      const answers = socks.map(
        (s) => new Promise<string>((resolve) => {
          let got = "";
          s.on("data", (d: Buffer) => {
            got += d.toString("latin1");
            if (proto === "binary" ? got.length >= 24 + (got.charCodeAt(11) | 0) : got.endsWith("\r\n")) resolve(got);
          });
          s.on("error", () => resolve(got));
        }),
      );
      const head = (i: number): Buffer => {
        if (proto === "text") return Buffer.from(`set up${i} 0 0 1000000\r\n`);
        if (proto === "meta") return Buffer.from(`ms up${i} 1000000 T0\r\n`);
        const key = Buffer.from(`up${i}`);
        const h = Buffer.alloc(24 + 8);
        h[0] = 0x80;
        h[1] = 0x01;
        h.writeUInt16BE(key.length, 2);
        h[4] = 8;
        h.writeUInt32BE(8 + key.length + 1_000_000, 8);
        return Buffer.concat([h, key]);
      };
      socks.forEach((s, i) => s.write(Buffer.concat([head(i), Buffer.alloc(999_000, 120)])));
      await Bun.sleep(500);
      socks.forEach((s) => s.write(Buffer.concat([Buffer.alloc(1000, 120), Buffer.from(proto === "binary" ? "" : "\r\n")])));
      const got = (await Promise.all(answers)).map((a) => (proto === "binary" ? `status ${a.charCodeAt(7)} ${a.slice(24)}` : a.trim()));
      for (const s of socks) s.destroy();
      const failed = got.filter((a) => a !== "STORED" && a !== "HD" && a !== "status 0 ");
      let kept = "";
      for (let i = 0; i < 10; i++) kept += (await c.line(`mg up${i} s`)).trim() + ";";
      const stats = await c.stats("");
      return { answers: [...new Set(failed)], kept: [...new Set(kept.split(";").filter((k) => k !== "HD s1000000" && k !== ""))].join(";"), noMemory: stats.store_no_memory! };
    } finally {
      c.close();
    }
  }

  for (const proto of ["text", "meta", "binary"] as const) {
    test(`${proto}: stock's answer, the old value stays, store_no_memory 0`, async () => {
      const { stock, ours } = await both(["-m", "4", "-t", "1"], ["-m", "4", "-t", "1"]);
      const theirs = await uploads(stock.port, proto);
      const mine = await uploads(ours.port, proto);
      await stop(stock, ours);
      expect(theirs.answers.length).toBe(1);
      expect(mine).toEqual(theirs);
    }, 60_000);
  }
});
