/**
 * Cache semantics with a controllable clock (in process): expiry (relative, absolute,
 * negative, the 30-day boundary), touch/gat, delayed flush_all, eviction under -m in LRU order
 * with the second chance for fetched items, memory that moves between slab classes, items up to
 * -I, CAS changing on every modification, incr/decr wrap rules, and stock's counter names and
 * counting rules in `stats`.
 */
import { describe, expect, test } from "bun:test";
import { ManualClock, REALTIME_MAXDELTA } from "../../examples/memcached/clock.ts";
import { Engine } from "../../examples/memcached/engine.ts";
import { Session } from "../../examples/memcached/session.ts";
import { b, dec, stockLikeSettings } from "./lib/harness.ts";
import type { Settings } from "../../examples/memcached/settings.ts";

function setup(over: Partial<Settings> = {}, memory: "js" | "native" = "js") {
  const clock = new ManualClock();
  const engine = new Engine(stockLikeSettings(over), { clock, memory });
  const session = new Session(engine);
  const run = (text: string): string => {
    session.feed(b(text));
    const r = dec.decode(session.out.bytes());
    session.out.reset();
    return r;
  };
  const stats = (): Record<string, string> => {
    const out: Record<string, string> = {};
    for (const line of run("stats\r\n").split("\r\n")) {
      const m = /^STAT (\S+) (.*)$/.exec(line);
      if (m) out[m[1]!] = m[2]!;
    }
    return out;
  };
  return { clock, engine, run, stats, close: () => engine.close() };
}

const value = (n: number, c = "v"): string => c.repeat(n);

describe("expiry", () => {
  test("relative exptime: alive until the second it names", () => {
    const t = setup();
    expect(t.run("set a 0 10 1\r\nx\r\n")).toBe("STORED\r\n");
    t.clock.advance(9);
    expect(t.run("get a\r\n")).toBe("VALUE a 0 1\r\nx\r\nEND\r\n");
    t.clock.advance(1);
    expect(t.run("get a\r\n")).toBe("END\r\n");
    expect(t.stats().get_expired).toBe("1");
    t.close();
  });

  test("0 never expires; negative expires at once", () => {
    const t = setup();
    t.run("set a 0 0 1\r\nx\r\nset b 0 -1 1\r\ny\r\n");
    t.clock.advance(REALTIME_MAXDELTA * 3);
    expect(t.run("get a b\r\n")).toBe("VALUE a 0 1\r\nx\r\nEND\r\n");
    t.close();
  });

  test("up to 30 days is relative, beyond that an absolute Unix time", () => {
    const t = setup();
    const unixNow = t.clock.unixNow();
    t.run(`set rel 0 ${REALTIME_MAXDELTA} 1\r\nx\r\nset abs 0 ${unixNow + 100} 1\r\ny\r\nset past 0 ${REALTIME_MAXDELTA + 1} 1\r\nz\r\n`);
    expect(t.run("get past\r\n")).toBe("END\r\n");
    t.clock.advance(99);
    expect(t.run("get abs\r\n")).toBe("VALUE abs 0 1\r\ny\r\nEND\r\n");
    t.clock.advance(1);
    expect(t.run("get abs\r\n")).toBe("END\r\n");
    t.clock.advance(REALTIME_MAXDELTA - 101);
    expect(t.run("get rel\r\n")).toBe("VALUE rel 0 1\r\nx\r\nEND\r\n");
    t.clock.advance(1);
    expect(t.run("get rel\r\n")).toBe("END\r\n");
    t.close();
  });

  test("touch and gat move the deadline; mg t reports the remaining time", () => {
    const t = setup();
    t.run("set a 0 10 1\r\nx\r\n");
    t.clock.advance(8);
    expect(t.run("touch a 10\r\n")).toBe("TOUCHED\r\n");
    t.clock.advance(8);
    expect(t.run("mg a t v\r\n")).toBe("VA 1 t2\r\nx\r\n");
    expect(t.run("gat 100 a\r\n")).toBe("VALUE a 0 1\r\nx\r\nEND\r\n");
    t.clock.advance(50);
    expect(t.run("mg a t\r\n")).toBe("HD t50\r\n");
    const s = t.stats();
    expect(s.cmd_touch).toBe("2");
    expect(s.touch_hits).toBe("2");
    t.close();
  });

  test("the crawler frees expired items without a get", () => {
    const t = setup();
    for (let i = 0; i < 100; i++) t.run(`set k${i} 0 5 3\r\nabc\r\n`);
    t.run("set keep 0 0 1\r\nx\r\n");
    expect(t.stats().curr_items).toBe("101");
    t.clock.advance(6);
    t.engine.store.crawl(10_000);
    const s = t.stats();
    expect(s.curr_items).toBe("1");
    // Stock's crawler counts in crawler_reclaimed; reclaimed is the LRU tail's count.
    expect(s.crawler_reclaimed).toBe("100");
    expect(s.reclaimed).toBe("0");
    expect(s.expired_unfetched).toBe("100");
    t.close();
  });
});

describe("the LRU crawler across page moves", () => {
  test("a page moved to another class is not read as items of the old one", () => {
    const t = setup({ maxBytes: 64 * 1024 * 1024 });
    // Three pages of class 1 (96-byte chunks), stored in address order: the LRU tail is chunk 0.
    for (let i = 0; i < 30_000; i++) t.run(`set k${String(i).padStart(5, "0")} 0 0 1 noreply\r\nx\r\n`);
    // A tick that stops 5000 items up from the tail: its saved position is chunk 5000 of page 0
    // (byte 480,000), which after the move is inside the value of a class-10 item.
    t.engine.store.crawl(5000);
    expect(t.run("slabs reassign 1 10\r\n")).toBe("OK\r\n");
    // Values that read, at every 8-byte boundary, as a linked, expired class-1 item header.
    const fake = String.fromCharCode(1, 0, 0, 0, 1, 0, 1, 0).repeat(80);
    // 1394 four-byte keys (the value starts 8-byte aligned): exactly the page, in class 10.
    const keys: string[] = [];
    for (let i = 0; i < 1394; i++) keys.push(`${i < 1000 ? "d" : "e"}${String(i % 1000).padStart(3, "0")}`);
    for (const k of keys) expect(t.run(`set ${k} 0 0 ${fake.length}\r\n${fake}\r\n`)).toBe("STORED\r\n");
    t.clock.advance(2);
    t.engine.store.crawl(5000);
    for (let i = 0; i < 3000; i++) t.run(`set z${String(i).padStart(5, "0")} 0 0 1 noreply\r\nx\r\n`);
    let bad = 0;
    for (const k of keys) if (t.run(`get ${k}\r\n`) !== `VALUE ${k} 0 ${fake.length}\r\n${fake}\r\nEND\r\n`) bad++;
    expect(bad).toBe(0);
    expect(t.run("stats items\r\n")).toContain("STAT items:1:crawler_reclaimed 0\r\n");
    t.close();
  });
});

describe("flush_all", () => {
  test("immediate: everything stored before is gone, later sets survive", () => {
    const t = setup();
    t.run("set a 0 0 1\r\nx\r\n");
    expect(t.run("flush_all\r\n")).toBe("OK\r\n");
    t.run("set b 0 0 1\r\ny\r\n");
    expect(t.run("get a b\r\n")).toBe("VALUE b 0 1\r\ny\r\nEND\r\n");
    // Setting b freed the flushed a at its class's LRU tail (stock's allocation pulls the
    // tail first), so the get no longer finds it flushed.
    expect(t.stats().get_flushed).toBe("0");
    expect(t.stats().reclaimed).toBe("1");
    t.close();
  });

  test("delayed: items live until the deadline, then everything set before it goes", () => {
    const t = setup();
    t.run("set a 0 0 1\r\nx\r\n");
    expect(t.run("flush_all 10\r\n")).toBe("OK\r\n");
    t.clock.advance(5);
    t.run("set b 0 0 1\r\ny\r\n");
    expect(t.run("get a b\r\n")).toBe("VALUE a 0 1\r\nx\r\nVALUE b 0 1\r\ny\r\nEND\r\n");
    t.clock.advance(5);
    expect(t.run("get a b\r\n")).toBe("END\r\n");
    t.clock.advance(1);
    t.run("set c 0 0 1\r\nz\r\n");
    expect(t.run("get c\r\n")).toBe("VALUE c 0 1\r\nz\r\nEND\r\n");
    t.close();
  });

  test("noreply and -F", () => {
    const t = setup({ flushEnabled: false });
    expect(t.run("flush_all\r\n")).toBe("CLIENT_ERROR flush_all not allowed\r\n");
    expect(t.run("flush_all noreply\r\n")).toBe("");
    expect(t.stats().cmd_flush).toBe("2");
    t.close();
  });
});

describe("hash table expansion", () => {
  for (const memory of ["js", "native"] as const) {
    test(`the table doubles past 1.5 items per bucket and every key stays reachable mid-migration (${memory})`, () => {
      const t = setup({ maxBytes: 16 * 1024 * 1024, hashpowerInit: 12 }, memory);
      expect(t.stats().hash_power_level).toBe("12");
      let sawExpanding = false;
      const N = 20_000;
      for (let n = 0; n < N; n++) {
        expect(t.run(`set k${n} ${n} 0 ${String(n).length}\r\n${n}\r\n`)).toBe("STORED\r\n");
        if (t.engine.store.hashExpanding) {
          sawExpanding = true;
          // Mid-migration: keys in moved and unmoved buckets, and a delete of an older key.
          const probe = (n * 7919) % (n + 1);
          expect(t.run(`get k${probe}\r\n`)).toBe(probe % 97 === 0 && probe < n - 100 ? "END\r\n" : `VALUE k${probe} ${probe} ${String(probe).length}\r\n${probe}\r\nEND\r\n`);
        }
        // Every 97th key is deleted a while after it was stored (often while the table expands).
        const old = n - 100;
        if (old >= 0 && old % 97 === 0) expect(t.run(`delete k${old}\r\n`)).toBe("DELETED\r\n");
      }
      expect(sawExpanding).toBe(true);
      const s = t.stats();
      expect(Number(s.hash_power_level)).toBeGreaterThanOrEqual(14);
      expect(Number(s.curr_items)).toBe(N - Math.floor((N - 100 - 1) / 97) - 1);
      for (let n = 0; n < N; n++) {
        const want = n % 97 === 0 && n < N - 100 ? "END\r\n" : `VALUE k${n} ${n} ${String(n).length}\r\n${n}\r\nEND\r\n`;
        expect(t.run(`get k${n}\r\n`)).toBe(want);
      }
      // A read-only period finishes a migration through the maintenance tick alone.
      while (t.engine.store.hashExpanding) t.engine.store.maintainHash(1024);
      expect(t.stats().hash_is_expanding).toBe("0");
      expect(Number(t.stats().hash_bytes)).toBe(8 * 2 ** Number(t.stats().hash_power_level)); // stock: a pointer per bucket
      t.close();
    });
  }

  test("the table stops growing at the size the arena can fill", () => {
    const t = setup({ maxBytes: 2 * 1024 * 1024, hashpowerInit: 12 });
    const v = value(10);
    for (let n = 0; n < 60_000; n++) t.run(`set k${n} 0 0 10\r\n${v}\r\n`);
    while (t.engine.store.hashExpanding) t.engine.store.maintainHash(1024);
    // 2 MiB / 96-byte chunks = 21,845 items at most: 2^14 buckets hold them at load 1.33.
    expect(Number(t.stats().hash_power_level)).toBe(14);
    t.close();
  });
});

describe("memory limit and eviction", () => {
  test("the LRU tail goes first; stats count evictions", () => {
    const t = setup({ maxBytes: 2 * 1024 * 1024, itemSizeMax: 1024 * 1024 });
    const v = value(1000);
    let n = 0;
    for (; n < 5000; n++) t.run(`set key${n} 0 0 1000\r\n${v}\r\n`);
    const s = t.stats();
    expect(Number(s.evictions)).toBeGreaterThan(0);
    expect(Number(s.curr_items)).toBeLessThan(2100);
    expect(t.run(`get key0\r\n`)).toBe("END\r\n");
    expect(t.run(`get key${n - 1}\r\n`)).toBe(`VALUE key${n - 1} 0 1000\r\n${v}\r\nEND\r\n`);
    expect(Number(s.bytes)).toBeLessThanOrEqual(2 * 1024 * 1024);
    t.close();
  });

  test("items fetched twice get a second chance; fetched once, none (stock's do_item_bump)", () => {
    const t = setup({ maxBytes: 2 * 1024 * 1024, itemSizeMax: 1024 * 1024 });
    const v = value(1000);
    t.run(`set hot 0 0 1000\r\n${v}\r\n`);
    t.run("get hot\r\nget hot\r\n");
    t.run(`set once 0 0 1000\r\n${v}\r\n`);
    t.run("get once\r\n");
    for (let n = 0; n < 3000; n++) t.run(`set key${n} 0 0 1000\r\n${v}\r\n`);
    expect(t.run("mg hot s\r\n")).toBe("HD s1000\r\n");
    expect(t.run("mg once s\r\n")).toBe("EN\r\n");
    expect(t.run("get key0\r\n")).toBe("END\r\n");
    t.close();
  });

  test("a run of hot items at the LRU tail all survive (not every fifth evicted)", () => {
    // Hot keys stored one after another end up together at the tail: each read marks them
    // active, and the tail walk must move every active one back, not give up after four.
    const t = setup({ maxBytes: 4 * 1024 * 1024, itemSizeMax: 1024 * 1024 });
    const v = value(1000);
    const hot = 400;
    for (let i = 0; i < hot; i++) t.run(`set hot${i} 0 0 1000\r\n${v}\r\n`);
    let n = 0;
    for (let round = 0; round < 30; round++) {
      for (let i = 0; i < hot; i++) t.run(`get hot${i}\r\n`);
      for (let k = 0; k < 300; k++, n++) t.run(`set cold${n} 0 0 1000\r\n${v}\r\n`);
    }
    expect(Number(t.stats().evictions)).toBeGreaterThan(3000); // the cache turned over
    let alive = 0;
    for (let i = 0; i < hot; i++) if (t.run(`mg hot${i}\r\n`) === "HD\r\n") alive++;
    expect(alive).toBe(hot);
    t.close();
  });

  test("-M: out of memory instead of evicting", () => {
    const t = setup({ maxBytes: 2 * 1024 * 1024, itemSizeMax: 1024 * 1024, evictToFree: false });
    const v = value(1000);
    let answer = "";
    for (let n = 0; n < 5000 && !answer.startsWith("SERVER_ERROR"); n++) answer = t.run(`set key${n} 0 0 1000\r\n${v}\r\n`);
    expect(answer).toBe("SERVER_ERROR out of memory storing object\r\n");
    expect(t.run("get key0\r\n")).toBe(`VALUE key0 0 1000\r\n${v}\r\nEND\r\n`);
    expect(Number(t.stats().store_no_memory)).toBeGreaterThan(0);
    t.close();
  });

  test("memory moves to the slab class that needs it: the automover, a page a second once its window is full", () => {
    const t = setup({ maxBytes: 4 * 1024 * 1024, itemSizeMax: 1024 * 1024 });
    const small = value(50);
    for (let n = 0; n < 60_000; n++) t.run(`set s${n} 0 0 50\r\n${small}\r\n`);
    // The big items' class gets its first page past the limit, then evicts its own items only.
    const big = value(20_000);
    const hits = (): number => {
      let n = 0;
      for (let i = 0; i < 100; i++) if (t.run(`mg b${i}\r\n`) === "HD\r\n") n++;
      return n;
    };
    const round = (): void => {
      for (let i = 0; i < 100; i++) if (t.run(`mg b${i}\r\n`) !== "HD\r\n") t.run(`set b${i} 0 0 20000\r\n${big}\r\n`);
      t.clock.advance(1);
      t.engine.store.automove();
    };
    for (let sec = 0; sec < 30; sec++) round();
    expect(t.stats().slabs_moved).toBe("0"); // the window (30 runs) has not filled yet
    expect(hits()).toBeLessThan(60);
    for (let sec = 0; sec < 10; sec++) round();
    const s = t.stats();
    expect(Number(s.slabs_moved)).toBeGreaterThan(0);
    expect(Number(s.slab_reassign_evictions_nomem)).toBeGreaterThan(0);
    expect(hits()).toBe(100);
    t.close();
  });

  test("an item of several pages is stored when the large class's spare pages are not contiguous, and no other item notices", () => {
    // -m 8 -I 2m: 600 KB items (a page each) interleaved with the first pages of six classes,
    // then 1.5 MB items (two pages) once memory is full: the class's pages become contiguous
    // by moving the small classes' pages out of the way, as stock (chunked) needs no room.
    const t = setup({ maxBytes: 8 * 1024 * 1024, itemSizeMax: 2 * 1024 * 1024 });
    const sizes = [1000, 5000, 20_000, 50_000, 100_000, 200_000];
    const small: string[] = [];
    for (let j = 0; j < sizes.length; j++) {
      expect(t.run(`set L${j} 0 0 600000\r\n${value(600_000, "L")}\r\n`)).toBe("STORED\r\n");
      for (let i = 0; i < 3; i++) {
        const k = `s${sizes[j]}-${i}`;
        expect(t.run(`set ${k} 0 0 ${sizes[j]}\r\n${value(sizes[j]!, String.fromCharCode(97 + j * 3 + i))}\r\n`)).toBe("STORED\r\n");
        small.push(k);
      }
    }
    // What clients can see of the small items: values, CAS, LRU order (metadump walks it).
    const view = (): string => small.map((k) => t.run(`gets ${k}\r\n`)).join("") + t.run("lru_crawler metadump all\r\n").replace(/^key=[Lb].*\n/gm, "");
    const before = view();
    const big = value(1_500_000, "B");
    for (let r = 0; r < 3; r++) expect(t.run(`set big${r} 0 0 1500000\r\n${big}\r\n`)).toBe("STORED\r\n");
    expect(t.run("get big2\r\n")).toBe(`VALUE big2 0 1500000\r\n${big}\r\nEND\r\n`);
    expect(view()).toBe(before);
    expect(t.engine.store.pagesRelocated).toBeGreaterThan(0);
    const s = t.stats();
    const large = [0, 1, 2, 3, 4, 5].map((j) => `L${j}`).concat(["big0", "big1", "big2"]);
    expect(Number(s.curr_items)).toBe(small.length + large.filter((k) => t.run(`mg ${k}\r\n`) === "HD\r\n").length);
    expect(Number(s.evictions)).toBeLessThanOrEqual(8); // stock: 8
    expect(t.run("stats slabs\r\n")).toContain("STAT total_malloced 10485760\r\n");
    // The moved pages' free chunks and links still work: new items, deletes, the crawler.
    for (let j = 0; j < sizes.length; j++) expect(t.run(`set n${j} 0 0 ${sizes[j]}\r\n${value(sizes[j]!, "n")}\r\n`)).toBe("STORED\r\n");
    for (const k of small.filter((_, i) => i % 2 === 0)) expect(t.run(`delete ${k}\r\n`)).toBe("DELETED\r\n");
    t.clock.advance(1);
    t.engine.store.crawl(100_000);
    for (let i = 0; i < small.length; i++) {
      const j = Math.floor(i / 3);
      const want = i % 2 === 0 ? "END\r\n" : `VALUE ${small[i]} 0 ${sizes[j]}\r\n${value(sizes[j]!, String.fromCharCode(97 + i))}\r\nEND\r\n`;
      expect(t.run(`get ${small[i]}\r\n`)).toBe(want);
    }
    for (let j = 0; j < sizes.length; j++) expect(t.run(`get n${j}\r\n`)).toBe(`VALUE n${j} 0 ${sizes[j]}\r\n${value(sizes[j]!, "n")}\r\nEND\r\n`);
    t.close();
  });

  test("random sets of every size up to -I, deletes, appends and crawls: every value read is the last one stored", () => {
    // Items of several pages keep gathering runs by moving other classes' pages (with their
    // items, free chunks, hash chains and LRU links) while the hash table expands.
    const t = setup({ maxBytes: 12 * 1024 * 1024, itemSizeMax: 3 * 1024 * 1024, hashpowerInit: 10 });
    let x = 2654435761;
    const rnd = (n: number): number => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return (x >>> 0) % n;
    };
    const model = new Map<string, string>();
    const sizes = [10, 100, 1000, 3000, 20_000, 100_000, 300_000, 600_000, 1_200_000, 2_500_000];
    const keys = 3000;
    for (let op = 0; op < 12_000; op++) {
      const k = `k${rnd(keys)}`;
      const r = rnd(100);
      if (r < 55) {
        const size = (rnd(10) < 8 ? sizes[rnd(4)]! : sizes[rnd(sizes.length)]!) + rnd(50);
        const v = String.fromCharCode(97 + rnd(26)).repeat(size);
        const a = t.run(`set ${k} 0 ${rnd(10) === 0 ? 2 : 0} ${size}\r\n${v}\r\n`);
        if (a === "STORED\r\n") model.set(k, v);
        else {
          expect(a).toBe("SERVER_ERROR out of memory storing object\r\n");
          model.delete(k);
        }
      } else if (r < 65) {
        t.run(`delete ${k}\r\n`);
        model.delete(k);
      } else if (r < 70) {
        t.clock.advance(1);
        t.engine.store.crawl(rnd(2000));
      } else if (r < 75) {
        const a = t.run(`append ${k} 0 0 5\r\nzzzzz\r\n`);
        if (a === "STORED\r\n") model.set(k, model.get(k)! + "zzzzz");
        else if (a !== "NOT_STORED\r\n") model.delete(k);
      } else {
        const a = t.run(`get ${k}\r\n`);
        if (a !== "END\r\n") expect(a === `VALUE ${k} 0 ${model.get(k)?.length}\r\n${model.get(k)}\r\nEND\r\n`).toBe(true);
      }
    }
    expect(t.engine.store.pagesRelocated).toBeGreaterThan(0);
    expect(t.engine.store.hashExpansions).toBeGreaterThan(0);
    t.clock.advance(5);
    t.engine.store.crawl(1_000_000);
    let live = 0;
    for (let i = 0; i < keys; i++) {
      const a = t.run(`get k${i}\r\n`);
      if (a === "END\r\n") continue;
      live++;
      expect(a === `VALUE k${i} 0 ${model.get(`k${i}`)?.length}\r\n${model.get(`k${i}`)}\r\nEND\r\n`).toBe(true);
    }
    expect(t.stats().curr_items).toBe(String(live));
    t.close();
  });

  test("an item of several pages that cannot fit evicts nothing", () => {
    const t = setup({ maxBytes: 8 * 1024 * 1024, itemSizeMax: 4 * 1024 * 1024 });
    for (let i = 0; i < 2; i++) expect(t.run(`set L${i} 0 0 600000\r\n${value(600_000)}\r\n`)).toBe("STORED\r\n");
    for (let i = 0; i < 6000; i++) t.run(`set k${i} 0 0 1000 noreply\r\n${value(1000)}\r\n`);
    const evicted = t.stats().evictions;
    // Four pages: the class has two, memory is full, and no other class's page is spare. Stock
    // answers this (checked against 1.6.18) while reading the value, as here; it evicts the two
    // large items on the way, which this store keeps (README: large items are kept whole).
    expect(t.run(`set huge 0 0 3500000\r\n${value(3_500_000)}\r\n`)).toBe("SERVER_ERROR Out of memory during read\r\n");
    expect(t.stats().evictions).toBe(evicted);
    for (let i = 0; i < 2; i++) expect(t.run(`mg L${i}\r\n`)).toBe("HD\r\n");
    t.close();
  });

  test("slabs reassign names stock's classes only: not the internal class of items over 512 KiB", () => {
    const t = setup({ maxBytes: 64 * 1024 * 1024, itemSizeMax: 2 * 1024 * 1024 });
    const v = value(600_000);
    for (let i = 0; i < 4; i++) expect(t.run(`set L${i} 0 0 600000\r\n${v}\r\n`)).toBe("STORED\r\n");
    const large = t.engine.store.large;
    expect(large).toBe(t.engine.store.largest + 1);
    for (const cmd of [`${large} 1`, `1 ${large}`, `0 ${large}`, `-1 1`]) {
      expect(t.run(`slabs reassign ${cmd}\r\n`)).toBe("BADCLASS invalid src or dst class id\r\n");
    }
    expect(t.stats().slabs_moved).toBe("0");
    for (let i = 0; i < 4; i++) expect(t.run(`mg L${i}\r\n`)).toBe("HD\r\n");
    t.close();
  });

  test("items up to -I, in whole pages when larger than a chunk", () => {
    const t = setup({ maxBytes: 8 * 1024 * 1024, itemSizeMax: 2 * 1024 * 1024 });
    const v = value(1_500_000, "q");
    expect(t.run(`set huge 0 0 1500000\r\n${v}\r\n`)).toBe("STORED\r\n");
    expect(t.run("get huge\r\n")).toBe(`VALUE huge 0 1500000\r\n${v}\r\nEND\r\n`);
    for (let i = 0; i < 10; i++) expect(t.run(`set huge${i} 0 0 1500000\r\n${v}\r\n`)).toBe("STORED\r\n");
    expect(t.run("get huge9\r\n")).toBe(`VALUE huge9 0 1500000\r\n${v}\r\nEND\r\n`);
    expect(t.run(`set over 0 0 2100000\r\n${value(2_100_000)}\r\n`)).toBe("SERVER_ERROR object too large for cache\r\n");
    t.close();
  });
});

describe("CAS, incr/decr, counters", () => {
  test("CAS changes on every modification", () => {
    const t = setup();
    const cas = (): string => /VALUE a \d+ \d+ (\d+)/.exec(t.run("gets a\r\n"))![1]!;
    t.run("set a 0 0 1\r\n1\r\n");
    const seen = new Set([cas()]);
    for (const cmd of ["set a 0 0 1\r\n2\r\n", "append a 0 0 1\r\n3\r\n", "prepend a 0 0 1\r\n4\r\n", "incr a 1\r\n", "decr a 1\r\n", "touch a 100\r\n", "replace a 0 0 1\r\n5\r\n"]) {
      t.run(cmd);
      seen.add(cas());
    }
    // touch does not change the value, and keeps the CAS, as in stock.
    expect(seen.size).toBe(7);
    t.close();
  });

  test("incr on a long run of digits answers at once: leading zeros count, more than 20 significant digits do not fit", () => {
    // The number was built digit by digit over the whole value: quadratic, a 1 MB value of 9s
    // froze the shard for about a minute and a half.
    const t = setup({ itemSizeMax: 2 * 1024 * 1024, maxBytes: 16 * 1024 * 1024 });
    const nines = "9".repeat(1_000_000);
    t.run(`set big 0 0 ${nines.length}\r\n${nines}\r\n`);
    expect(t.run("incr big 1\r\n")).toBe("CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    const zeros = `${"0".repeat(100_000)}41`;
    t.run(`set z 0 0 ${zeros.length}\r\n${zeros}\r\n`);
    expect(t.run("incr z 1\r\n")).toBe("42\r\n");
    t.close();
  });

  test("incr wraps at 2^64, decr stops at 0, in place when it fits", () => {
    const t = setup();
    t.run("set n 0 0 20\r\n18446744073709551614\r\n");
    expect(t.run("incr n 3\r\n")).toBe("1\r\n");
    expect(t.run("get n\r\n")).toBe("VALUE n 0 20\r\n1                   \r\nEND\r\n");
    expect(t.run("decr n 5\r\n")).toBe("0\r\n");
    t.close();
  });

  test("stats counting rules: per key for multigets, hits and misses, cas results", () => {
    const t = setup();
    t.run("set a 0 0 1\r\nx\r\nset b 0 0 1\r\ny\r\n");
    t.run("get a b c d\r\n");
    t.run("gets a\r\ncas a 0 0 1 99999\r\nz\r\ncas zz 0 0 1 1\r\nz\r\n");
    t.run("delete a\r\ndelete a\r\nincr b 1\r\nincr q 1\r\ndecr q 1\r\n");
    const s = t.stats();
    expect([s.cmd_get, s.get_hits, s.get_misses]).toEqual(["5", "3", "2"]);
    expect([s.cmd_set, s.cas_badval, s.cas_misses, s.cas_hits]).toEqual(["4", "1", "1", "0"]);
    expect([s.delete_hits, s.delete_misses]).toEqual(["1", "1"]);
    expect([s.incr_misses, s.incr_hits, s.decr_misses]).toEqual(["1", "0", "1"]);
    expect([s.curr_items, s.total_items]).toEqual(["1", "2"]);
    expect(t.run("stats reset\r\n")).toBe("RESET\r\n");
    expect(t.stats().cmd_get).toBe("0");
    expect(t.stats().curr_items).toBe("1");
    t.close();
  });

  test("stats items / slabs / settings use stock's names", () => {
    const t = setup();
    t.run("set a 0 0 1\r\nx\r\n");
    expect(t.run("stats items\r\n")).toContain("STAT items:1:number 1\r\nSTAT items:1:age 0\r\nSTAT items:1:mem_requested 61\r\n");
    expect(t.run("stats slabs\r\n")).toContain("STAT 1:chunk_size 96\r\nSTAT 1:chunks_per_page 10922\r\nSTAT 1:total_pages 1\r\n");
    const settings = t.run("stats settings\r\n");
    for (const k of ["maxbytes 67108864", "maxconns 1024", "item_size_max 1048576", "growth_factor 1.25", "cas_enabled yes", "evictions on"]) {
      expect(settings).toContain(`STAT ${k}\r\n`);
    }
    expect(t.stats().bytes).toBe("61");
    t.close();
  });
});
