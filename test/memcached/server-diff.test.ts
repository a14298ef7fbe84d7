/**
 * The differential cases again, this time over TCP against our real server process
 * (examples/memcached/main.ts on Shoal's posix stack) with 1 shard and with 2 shards, compared
 * with stock memcached 1.6.18 started fresh for each. One shard must match byte for byte; two
 * shards must match with CAS values masked (each shard counts its own series of unique ids), except the few cases
 * that send CAS numbers they expect stock's single counter to have produced.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { allCases, BIN_SENTINEL, BIN_SENTINEL_ANSWER, maskCas, TEXT_SENTINEL, TEXT_SENTINEL_ANSWER, type Case } from "./lib/cases.ts";
import { b, cat, dec, exchange, show, startOurs, startStock, type Answer, type ServerProcess } from "./lib/harness.ts";
import { binRequest, setExtras } from "./lib/binproto.ts";
import { murmur3, shardOf } from "../../examples/memcached/hash.ts";

const cases = allCases();

function request(c: Case): Uint8Array {
  return c.noSentinel ? c.send : cat(c.send, c.binary ? BIN_SENTINEL : TEXT_SENTINEL);
}

async function runAll(server: ServerProcess, list: Case[]): Promise<Answer[]> {
  const answers: Answer[] = [];
  for (const c of list) {
    const until = c.noSentinel ? undefined : c.binary ? BIN_SENTINEL_ANSWER : TEXT_SENTINEL_ANSWER;
    // A case that sends the sentinel's command itself (mn, NOOP) may have an earlier answer end
    // like the sentinel's when stock sends it apart (mn is a send point): wait until quiet then.
    const settleMs = c.noSentinel ? 0 : c.binary ? (c.send.includes(0x0a) ? 30 : 0) : /(^|\n)mn(\r?\n| )/.test(dec.decode(c.send)) ? 30 : 0;
    answers.push(await exchange(server.port, request(c), { until, settleMs, idleMs: c.noSentinel ? 200 : 2000 }));
  }
  return answers;
}

function report(c: Case, ours: string, theirs: string, closedOurs: boolean, closedTheirs: boolean): void {
  if (ours !== theirs || closedOurs !== closedTheirs) {
    console.log(`--- case "${c.name}"\n--- stock (closed=${closedTheirs}):\n${theirs}\n--- ours (closed=${closedOurs}):\n${ours}`);
  }
}

for (const shards of [1, 2]) {
  describe(`our server with ${shards} shard(s) answers like stock`, () => {
    let stock: ServerProcess;
    let ours: ServerProcess;
    const list = shards === 1 ? cases : cases.filter((c) => !c.exactCas);
    let stockAnswers: Answer[] = [];
    let ourAnswers: Answer[] = [];

    beforeAll(async () => {
      stock = await startStock(["-t", "1"]);
      ours = await startOurs(["-t", String(shards)]);
      stockAnswers = await runAll(stock, list);
      ourAnswers = await runAll(ours, list);
    }, 240_000);

    afterAll(async () => {
      await stock?.stop();
      await ours?.stop();
    }, 30_000);

    test(`${list.length} cases`, () => {
      let failed = 0;
      for (let i = 0; i < list.length; i++) {
        const c = list[i]!;
        const a = ourAnswers[i]!;
        const b = stockAnswers[i]!;
        const mine = shards === 1 ? show(a.bytes) : show(new TextEncoder().encode(maskCas(a.bytes, !!c.binary)));
        const theirs = shards === 1 ? show(b.bytes) : show(new TextEncoder().encode(maskCas(b.bytes, !!c.binary)));
        report(c, mine, theirs, a.closed, b.closed);
        if (mine !== theirs || a.closed !== b.closed) failed++;
      }
      expect(failed).toBe(0);
    });
  });
}

describe("commands split across many TCP segments (2 shards)", () => {
  test("text and binary cases sent 1 to 7 bytes at a time get stock's answers", async () => {
    const pick = cases.filter((c) => !c.noSentinel && !c.exactCas && !c.segmentSensitive && c.send.length < 400).filter((_, i) => i % 4 === 0);
    const stock = await startStock(["-t", "1"]);
    const ours = await startOurs(["-t", "2"]);
    try {
      for (const [i, c] of pick.entries()) {
        const req = request(c);
        const chunks: number[] = [];
        for (let left = req.length, k = i; left > 0; k++) {
          const n = Math.min(left, 1 + (k % 7));
          chunks.push(n);
          left -= n;
        }
        const until = c.binary ? BIN_SENTINEL_ANSWER : TEXT_SENTINEL_ANSWER;
        const theirs = await exchange(stock.port, req, { until, idleMs: 2000 });
        const mine = await exchange(ours.port, req, { until, idleMs: 2000, chunks, pauseMs: 1 });
        const a = maskCas(mine.bytes, !!c.binary);
        const e = maskCas(theirs.bytes, !!c.binary);
        if (a !== e) console.log(`--- case "${c.name}"\nstock:\n${e}\nours:\n${a}`);
        expect(a).toBe(e);
      }
    } finally {
      await stock.stop();
      await ours.stop();
    }
  }, 240_000);
});

/** A key (prefix + n) that shard `shard` of `shards` owns. */
function keyOwnedBy(shard: number, shards: number, prefix: string): string {
  for (let i = 0; ; i++) {
    const k = `${prefix}${i}`;
    if (shardOf(murmur3(b(k), 0, k.length), shards) === shard) return k;
  }
}

describe("answers already due while a forwarded value is still arriving (2 shards)", () => {
  test("gets (text) and a binary noop before an unfinished set are answered at once, as stock does", async () => {
    // Two gets (one key per shard) are send points for stock; the set after them waits for
    // its value. Whichever shard the connection lands on, the set's key is forwarded on half
    // of the connections; those used to send nothing until the value was complete.
    const k0 = keyOwnedBy(0, 2, "due-a");
    const k1 = keyOwnedBy(1, 2, "due-b");
    const stock = await startStock(["-t", "2"]);
    const ours = await startOurs(["-t", "2"]);
    try {
      const seen = [stock, ours].map(() => ({ text: [] as string[], binary: [] as number[] }));
      for (const [i, server] of [stock, ours].entries()) {
        for (const kx of [k0, k1, k0, k1, k0, k1, k0, k1]) {
          const t = await exchange(server.port, b(`get ${k0}\r\nget ${k1}\r\nset ${kx} 0 0 10\r\nhello`), { idleMs: 300 });
          seen[i]!.text.push(dec.decode(t.bytes));
          const set = binRequest(0x01, { key: kx, extras: setExtras(0, 0), value: "0123456789", opaque: 4 });
          const req = cat(binRequest(0x0c, { key: k0, opaque: 1 }), binRequest(0x0c, { key: k1, opaque: 2 }), binRequest(0x0a, { opaque: 3 }), set.subarray(0, set.length - 5));
          seen[i]!.binary.push((await exchange(server.port, req, { idleMs: 300 })).bytes.length);
        }
      }
      expect(seen[0]!.text).toEqual(seen[0]!.text.map(() => "END\r\nEND\r\n"));
      expect(seen[0]!.binary.every((n) => n >= 72)).toBe(true); // two getk misses and the noop
      expect(seen[1]).toEqual(seen[0]!);
    } finally {
      await stock.stop();
      await ours.stop();
    }
  }, 60_000);
});

describe("answers stock sent before input that closes the connection", () => {
  // Stock reads a value's tail straight from the socket when its 16 KiB read buffer does not
  // hold all of it (the value arrives later, or is larger); its buffer is then empty and it
  // sends what it has before reading on, so a later line that closes the connection (HTTP/, a
  // 2 KiB line without a newline, a bad binary magic) finds those answers already gone.
  const big = "x".repeat(20_000);
  const cases: { name: string; data: Uint8Array; chunks?: number[]; binary?: boolean }[] = [
    { name: "value in a later segment, then HTTP/", data: b("set a 0 0 5\r\nabcde\r\nGET / HTTP/1.1\r\n"), chunks: [13] },
    { name: "a 20000-byte value, then HTTP/", data: b(`set a 0 0 20000\r\n${big}\r\nGET / HTTP/1.1\r\n`) },
    { name: "a too-large value swallowed, then a long line", data: b(`set a 0 0 1048577\r\n${"x".repeat(1_048_577)}\r\n${"a".repeat(3000)}`) },
    {
      name: "binary set of 20000 bytes, then a bad magic",
      data: cat(binRequest(0x01, { key: "bigb", extras: setExtras(0, 0), value: big }), binRequest(0x0a, { magic: 0 })),
      binary: true,
    },
    { name: "a small value in the same segment, then HTTP/ (nothing sent)", data: b("set a 0 0 5\r\nabcde\r\nGET / HTTP/1.1\r\n") },
  ];

  test("ours sends the same before closing, with 1 and 2 shards", async () => {
    const stock = await startStock(["-t", "1"]);
    const one = await startOurs(["-t", "1"]);
    const two = await startOurs(["-t", "2"]);
    try {
      for (const c of cases) {
        const opts = { idleMs: 1000, chunks: c.chunks, pauseMs: 50 };
        const [theirs, mine1, mine2] = [await exchange(stock.port, c.data, opts), await exchange(one.port, c.data, opts), await exchange(two.port, c.data, opts)];
        const e = show(theirs.bytes);
        if (show(mine1.bytes) !== e) console.log(`--- ${c.name}\nstock: ${e}\nours -t 1: ${show(mine1.bytes)}`);
        expect(theirs.closed).toBe(true);
        expect(show(mine1.bytes)).toBe(e);
        expect(mine1.closed).toBe(true);
        expect(maskCas(mine2.bytes, !!c.binary)).toBe(maskCas(theirs.bytes, !!c.binary));
        expect(mine2.closed).toBe(true);
      }
    } finally {
      await stock.stop();
      await one.stop();
      await two.stop();
    }
  }, 120_000);
});

describe("the LRU crawler setting is the whole server's (2 shards)", () => {
  test("metadump and crawl with the crawler off answer once, on every shard, as stock", async () => {
    const req = b("lru_crawler metadump all\r\nlru_crawler crawl all\r\nmn\r\n");
    const expected = "CLIENT_ERROR lru crawler disabled\r\nCLIENT_ERROR lru crawler disabled\r\nMN\r\n";
    // Off from the start (-o no_lru_crawler), and switched off at run time on one connection.
    for (const [args, disable] of [[["-o", "no_lru_crawler"], false], [[], true]] as const) {
      const stock = await startStock(["-t", "1", ...args]);
      const ours = await startOurs(["-t", "2", ...args]);
      try {
        for (const server of [stock, ours]) {
          if (disable) expect(dec.decode((await exchange(server.port, b("lru_crawler disable\r\n"), { until: b("\r\n") })).bytes)).toBe("OK\r\n");
          await Bun.sleep(100); // stock's crawler thread stops asynchronously
          // Several connections: the kernel spreads them over both shards.
          for (let i = 0; i < 6; i++) {
            expect(dec.decode((await exchange(server.port, req, { until: b("MN\r\n") })).bytes)).toBe(expected);
          }
        }
      } finally {
        await stock.stop();
        await ours.stop();
      }
    }
  }, 60_000);
});

describe("lru_crawler metadump as stock's crawler does it", () => {
  // Times (la=, exp=) are the servers' clocks: masked. Classes 1, 4 and 12 hold the items.
  const setup = b(
    "set a 5 0 1\r\nx\r\nset b%20 0 100 3\r\nxyz\r\nms Zm9vAAE= 2 b\r\nzz\r\nget a\r\n" +
      Array.from({ length: 12 }, (_, i) => `set k${i} 0 0 ${[1, 100, 1000][i % 3]}\r\n${"x".repeat([1, 100, 1000][i % 3]!)}\r\n`).join("") +
      "mn\r\n",
  );
  const dumps: [string, string][] = [
    // The hash table, bucket by bucket (murmur3's low bits, as stock's table).
    ["hash", "lru_crawler metadump hash\r\n"],
    // Every class's LRU from its tail, one item of each class in turn. (Stock's order depends
    // on where its LRU maintainer has moved items between segments by then: same lines only.)
    ["all", "lru_crawler metadump all\r\n"],
    ["a class list", "lru_crawler metadump 12,1,1\r\n"],
    // Stock gives the connection to its crawler and takes it back waiting for new input: what
    // followed in the same read is answered only when more arrives (here: never).
    ["pipelined after it", "lru_crawler metadump hash\r\nmn\r\nversion\r\n"],
    ["a refused one does not stall", "lru_crawler metadump 99\r\nmn\r\n"],
    // A list of no class ids starts no crawler. (Last: stock's crawler then keeps this
    // connection as its client for a while, refusing other metadumps: not reproduced.)
    ["no class ids", "lru_crawler crawl ,\r\nlru_crawler metadump ,\r\nmn\r\n"],
  ];
  const mask = (a: Uint8Array): string => dec.decode(a).replace(/la=\d+/g, "la=T").replace(/exp=\d{6,}/g, "exp=T");

  test("the same lines (in the same order by hash, 1 shard), the same stalls (1 and 2 shards)", async () => {
    const stock = await startStock(["-t", "1"]);
    const one = await startOurs(["-t", "1"]);
    const two = await startOurs(["-t", "2"]);
    try {
      for (const server of [stock, one, two]) expect(dec.decode((await exchange(server.port, setup, { until: b("MN\r\n") })).bytes)).toEndWith("MN\r\n");
      for (const [name, req] of dumps) {
        const [theirs, mine1, mine2] = [stock, one, two].map(async (server) => mask((await exchange(server.port, b(req), { idleMs: 500 })).bytes));
        const e = await theirs;
        const byClass = name === "all" || name === "a class list";
        if ((await mine1) !== e && !byClass) console.log(`--- ${name}\nstock:\n${e}\nours -t 1:\n${await mine1}`);
        if (byClass) expect((await mine1).split("\n").sort()).toEqual(e.split("\n").sort());
        else expect(await mine1).toBe(e);
        // Two shards: each shard's items in its own walk (the merge keeps shards apart), CAS
        // values each shard's own.
        const sorted = (t: string): string[] => t.replace(/cas=\d+/g, "cas=CAS").split("\n").sort();
        expect(sorted(await mine2)).toEqual(sorted(e));
      }
    } finally {
      await stock.stop();
      await one.stop();
      await two.stop();
    }
  }, 60_000);
});
