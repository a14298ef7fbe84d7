/**
 * The store under memory pressure, side by side with stock memcached 1.6.18 over TCP (-t 1,
 * stock's LRU maintainer and crawler off so that its allocation and page mover are
 * deterministic): which items survive when `slabs reassign` takes a full page.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { startOurs, startStock, type ServerProcess } from "./lib/harness.ts";
import { MemClient } from "./lib/memclient.ts";

const running: ServerProcess[] = [];
afterAll(async () => {
  await Promise.all(running.map((s) => s.stop()));
}, 30_000);

const DETERMINISTIC = ["-o", "no_lru_maintainer,no_lru_crawler"];

async function run<T>(which: "stock" | "ours", args: string[], scenario: (port: number) => Promise<T>): Promise<T> {
  const server = which === "stock" ? await startStock(args) : await startOurs([...args, "-t", "1"]);
  running.push(server);
  try {
    return await scenario(server.port);
  } finally {
    running.splice(running.indexOf(server), 1);
    await server.stop();
  }
}

async function waitFor(c: MemClient, key: string, value: string): Promise<void> {
  for (let i = 0; i < 200 && (await c.stats())[key] !== value; i++) await Bun.sleep(50);
}

describe("slabs reassign of a full page", () => {
  /**
   * 2400 values of 1000 bytes fill class 12 (885 chunks a page) to 3 pages, 255 chunks free
   * in the last, one of them taken by a set whose value has not fully arrived. The mover takes
   * the class's first page and copies its items into the free chunks from the page's start
   * while there are any: stock hands a new page's chunks out from its end, so the items copied
   * are the page's newest and its oldest are dropped. (Ours handed them out from the start, so
   * it kept the oldest and dropped the newest: a0 found, a679 not.)
   */
  test("the same items survive as in stock, with an upload in progress", async () => {
    const scenario = async (port: number): Promise<Record<string, unknown>> => {
      const c = await MemClient.connect(port);
      const u = await MemClient.connect(port);
      try {
        for (let i = 0; i < 2400; i++) expect(await c.set(`a${i}`, 1000)).toBe("STORED");
        const upload = u.startSet("up", 1000, 500);
        await Bun.sleep(200);
        const answer = await c.line("slabs reassign 12 0");
        await waitFor(c, "slabs_moved", "1");
        const hits: number[] = [];
        for (let i = 0; i < 2400; i += 37) if (await c.get(`a${i}`)) hits.push(i);
        const uploaded = await upload.finish();
        const st = await c.stats();
        const slabs = await c.stats("slabs");
        return {
          answer,
          hits: hits.join(","),
          uploaded,
          up: await c.get("up"),
          moved: st.slabs_moved,
          rescues: st.slab_reassign_rescues,
          nomem: st.slab_reassign_evictions_nomem,
          items: st.curr_items,
          pages: slabs["12:total_pages"],
          pool: st.slab_global_page_pool,
        };
      } finally {
        c.close();
        u.close();
      }
    };
    const args = ["-m", "8", ...DETERMINISTIC];
    const theirs = await run("stock", args, scenario);
    const mine = await run("ours", args, scenario);
    // Stock: the first page's newest 254 items (a631..a884) are copied, a0..a630 dropped.
    expect(theirs).toMatchObject({ answer: "OK", uploaded: "STORED", up: true, moved: "1", rescues: "254", nomem: "631", pages: "2", pool: "1" });
    expect(String(theirs.hits).split(",")).not.toContain("0");
    expect(String(theirs.hits).split(",")).toContain("666");
    expect(mine).toEqual(theirs);
  }, 90_000);

  /**
   * A page that goes from the pool to a class joins it last: a later reassign from that
   * class takes the class's oldest page, as stock's takes `slab_list[0]`. (Ours took the page
   * at the lowest address, here the one just moved in, dropping the newest items.)
   */
  test("takes the class's oldest page, not the one at the lowest address", async () => {
    const scenario = async (port: number): Promise<Record<string, unknown>> => {
      const c = await MemClient.connect(port);
      try {
        for (let i = 0; i < 1770; i++) expect(await c.set(`a${i}`, 1000)).toBe("STORED"); // class 12: pages 1, 2
        for (let i = 0; i < 1000; i++) expect(await c.set(`b${i}`, 5000)).toBe("STORED"); // class 19
        const answers = [await c.line("slabs reassign 12 0")];
        await waitFor(c, "slabs_moved", "1");
        answers.push(await c.line("slabs reassign 0 19")); // one page in the pool: none to spare
        // Class 19's next page is the pool's, at the lowest address and now the class's newest.
        for (let i = 1000; i < 1200; i++) expect(await c.set(`b${i}`, 5000)).toBe("STORED");
        answers.push(await c.line("slabs reassign 19 0"));
        await waitFor(c, "slabs_moved", "2");
        const hits: number[] = [];
        for (let i = 0; i < 1200; i += 7) if (await c.get(`b${i}`)) hits.push(i);
        const st = await c.stats();
        return { answers, hits: hits.join(","), rescues: st.slab_reassign_rescues, nomem: st.slab_reassign_evictions_nomem, items: st.curr_items };
      } finally {
        c.close();
      }
    };
    const args = ["-m", "8", ...DETERMINISTIC];
    const theirs = await run("stock", args, scenario);
    const mine = await run("ours", args, scenario);
    expect(theirs).toMatchObject({ answers: ["OK", "NOSPARE source class has no spare pages", "OK"], rescues: "88" });
    expect(String(theirs.hits).split(",")).toContain("1197");
    expect(mine).toEqual(theirs);
  }, 90_000);
});
