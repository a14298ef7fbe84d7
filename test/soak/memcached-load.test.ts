/**
 * memcached under sustained load with misbehaving clients beside it (2 shards, -m 32): three
 * load generators (mcload; small, medium and large values over one key space, so items move
 * between slab classes and the memory limit evicts all the time) run for the whole test while
 * a garbage sender, a client that pipelines gets and never reads, and clients that send half a
 * command and hang come and go. Watched once a second: the server's resident memory and open
 * sockets. Checked: no load generator saw a wrong answer, the limit was reached
 * (evictions) and item memory stayed within it, resident memory did not grow after the first
 * half, every connection was released at the end (open sockets and curr_connections back to
 * where they started), and the server still answers.
 *
 * SHOAL_SOAK=1 (scripts/soak.sh): 600 s. Otherwise (scripts/test.sh, CI): 6 s.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { spawn, type Subprocess } from "bun";
import net from "node:net";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { b, dec, exchange, startOurs, type ServerProcess } from "../memcached/lib/harness.ts";
import { MCLOAD, build, median } from "../../bench/memcached/harness.ts";

const soak = process.env.SHOAL_SOAK === "1";
const SECONDS = soak ? 600 : 6;
const MEMORY_MIB = 32;

let server: ServerProcess;

beforeAll(async () => {
  build();
  server = await startOurs(["-t", "2", "-m", String(MEMORY_MIB), "-c", "1024"]);
}, 120_000);

afterAll(async () => {
  await server?.stop();
}, 30_000);

function rssMiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;
}

/**
 * Open sockets of `pid`. Other descriptors are not counted: a shard's first log line (a stall
 * warning under this load) makes Bun open its own descriptor for stderr.
 */
function openFds(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith("socket:")) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

async function stats(port: number): Promise<Map<string, string>> {
  const a = await exchange(port, b("stats\r\n"), { until: b("END\r\n"), idleMs: 5000 });
  const m = new Map<string, string>();
  for (const line of dec.decode(a.bytes).split("\r\n")) {
    const f = line.split(" ");
    if (f[0] === "STAT") m.set(f[1]!, f[2]!);
  }
  return m;
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1", () => resolve(s));
    s.once("error", reject);
  });
}

interface LoadResult {
  ops: number;
  errors: number;
  hits: number;
}

test(`${SECONDS} s of mixed load with misbehaving clients: answers right, memory flat, connections released`, async () => {
  const pid = server.proc.pid;
  const port = server.port;
  // The start-up probe's connection may still be closing on the server (it was counted in the
  // baseline now and then, and the end then had one socket fewer): the baseline is taken once
  // only the stats connection itself counts and the socket count holds still around it.
  let baseFds = -1;
  let baseConns = -1;
  for (let i = 0; i < 50; i++) {
    const before = openFds(pid);
    baseConns = Number((await stats(port)).get("curr_connections"));
    await Bun.sleep(100);
    baseFds = openFds(pid);
    if (baseConns === 1 && baseFds === before) break;
  }
  const baseRss = rssMiB(pid);

  const loads: Subprocess<"ignore", "pipe", "pipe">[] = [];
  for (const [value, conns] of [[100, 20], [4000, 10], [60000, 4]] as const) {
    loads.push(
      spawn([MCLOAD, "-s", `127.0.0.1:${port}`, "-c", String(conns), "-t", "1", "-d", "2", "-k", "20000", "-V", String(value), "-r", "0.7", "-W", "0", "-D", String(SECONDS), "-j"], {
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
      }),
    );
  }

  const end = Date.now() + SECONDS * 1000;
  const rss: number[] = [];
  const fds: number[] = [];
  let garbageSent = 0;
  let hangers = 0;
  const held: net.Socket[] = [];
  let next = Date.now();
  while (Date.now() < end) {
    // A garbage sender: random bytes, text or (0x80) binary; stock's answer is an error or a
    // closed connection; we only need the server to go on.
    const junk = new Uint8Array(2048);
    crypto.getRandomValues(junk);
    if (garbageSent % 2 === 0) junk[0] = 0x80;
    const g = await exchange(port, junk, { idleMs: 100 });
    expect(g.bytes.length).toBeLessThan(1 << 20);
    garbageSent++;
    // A client that pipelines large gets and never reads (held until the end), and one that
    // sends half a command and hangs (held for a while, then dropped mid-value).
    if (held.length < 8) {
      const s = await connect(port);
      s.pause();
      s.write(`get ${Array.from({ length: 100 }, (_, i) => `key:${String(i).padStart(28, "0")}`).join(" ")}\r\n`.repeat(200));
      held.push(s);
      const h = await connect(port);
      h.write("set hanging 0 0 100000\r\nonly a part of the value");
      hangers++;
      setTimeout(() => h.destroy(), 2000);
    }
    if (Date.now() >= next) {
      rss.push(rssMiB(pid));
      fds.push(openFds(pid));
      next += 1000;
      if (soak && rss.length % 30 === 0) console.log(`t=${rss.length}s rss ${rss.at(-1)!.toFixed(1)} MiB, fds ${fds.at(-1)}`);
    }
    await Bun.sleep(100);
  }

  const results: LoadResult[] = [];
  for (const p of loads) {
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    expect({ code, err }).toEqual({ code: 0, err: "" });
    results.push(JSON.parse(out.trim().split("\n").at(-1)!) as LoadResult);
  }
  const s = await stats(port);
  for (const c of held) c.destroy();

  const half = Math.floor(rss.length / 2);
  const first = rss.slice(0, Math.max(1, half));
  const later = rss.slice(half);
  const firstMax = Math.max(...first);
  const laterMax = Math.max(...later);
  const firstMedian = median(first);
  const laterMedian = median(later);
  console.log(
    `memcached soak ${SECONDS} s: ops ${results.map((r) => r.ops).join("/")}, hits ${results.map((r) => r.hits).join("/")}, ` +
      `evictions ${s.get("evictions")}, bytes ${s.get("bytes")} of ${s.get("limit_maxbytes")}, garbage ${garbageSent}, hangers ${hangers}, ` +
      `rss base ${baseRss.toFixed(1)}, median ${firstMedian.toFixed(1)} then ${laterMedian.toFixed(1)}, max ${firstMax.toFixed(1)} then ${laterMax.toFixed(1)} MiB, fds ${Math.min(...fds)}-${Math.max(...fds)}`,
  );

  for (const r of results) {
    expect(r.errors).toBe(0);
    expect(r.ops).toBeGreaterThan(0);
  }
  expect(Number(s.get("evictions"))).toBeGreaterThan(0);
  expect(Number(s.get("bytes"))).toBeLessThanOrEqual(MEMORY_MIB * 1024 * 1024);
  // Item memory is -m; the rest (Bun, two shards' heaps, receive and send buffers, the buffer
  // caches, the non-readers' answers) is bounded and reached in the first half: the second
  // half's typical memory (its median) is no higher than the first's beyond noise, and no
  // sample passes the budget. Single samples spike by 30-90 MiB whenever the collector runs
  // late (600 s runs on 2026-11-29: first-half / later max 256.5 / 309.9 MiB, then 276.1 /
  // 272.9 with medians 224.3 / 231.4, and 300.8 / 331.3 on the commit before), so maxima are
  // compared with the budget only, not with each other. The CI tier's 6 s end before the
  // plateau (medians 156.7 then 194.3 MiB in one run, still rising): there the second half's
  // maximum is held near the first's, within one late collection's spike (10% + 16 MiB failed
  // one fresh-clone run in six: 216.5 then 259.9 MiB); a slow leak shows in the soak tier.
  expect(laterMax).toBeLessThan(baseRss + MEMORY_MIB + 320);
  if (soak) expect(laterMedian).toBeLessThan(firstMedian * 1.1 + 16);
  else expect(laterMax).toBeLessThan(firstMax * 1.1 + 96);

  // Every connection released: fds and curr_connections back to where they started.
  let conns = -1;
  let fdsNow = -1;
  for (let i = 0; i < 100; i++) {
    // Sockets first: the stats connection may still be closing on the server right after it
    // answered (counted, it looked like a socket left open).
    fdsNow = openFds(pid);
    conns = Number((await stats(port)).get("curr_connections"));
    if (conns === baseConns && fdsNow === baseFds) break;
    await Bun.sleep(100);
  }
  expect({ conns, fds: fdsNow }).toEqual({ conns: baseConns, fds: baseFds });
  const v = await exchange(port, b("set after 0 0 2\r\nok\r\nget after\r\n"), { until: b("END\r\n"), idleMs: 5000 });
  expect(dec.decode(v.bytes)).toBe("STORED\r\nVALUE after 0 2\r\nok\r\nEND\r\n");
}, (SECONDS + 120) * 1000);
