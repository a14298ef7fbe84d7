/**
 * memcached on Shoal against stock memcached 1.6.18, on this machine, in one run.
 *
 * Builds bench/memcached/mcload.c (our load generator) with `scripts/zig cc`, starts stock
 * (`memcached -u root -t N`) and ours (`examples/memcached/main.ts -t N`) side by side, prefills
 * both, and for each workload runs stock and ours alternately (interleaved, the order flipping
 * every run), MC_BENCH_RUNS times (default 5), reporting medians:
 *
 *   A  closed loop, 100 connections, no pipelining, get/set 9:1, 32-byte keys, 64-byte values
 *   B  the same with 16 requests in flight per connection (pipelining)
 *   C  memcaslap (libmemcached-tools) with 100 concurrent connections, no pipelining: a
 *      cross-check of A with another generator
 *   D  fixed rate at half of the slower server's A throughput: p50/p99/p99.9 latency, over
 *      MC_BENCH_FIXED_RUNS runs (default 10: one run's p99 moves 2-3x on a shared VM)
 *
 * for -t 1 against 1 shard and -t 2 against 2 shards; then the sharding comparison (ours with
 * 2 shards routing by key, 2 shards not routing, which is incoherent and only an upper bound,
 * and 1 shard). Server CPU per operation comes from /proc/<pid>/stat (whole process, every
 * thread) over the measured window; the load generator's CPU from its rusage, so each line
 * says which side saturated (the load generator shares the machine's cores).
 *
 *   scripts/bench.sh bench/memcached              (= bun bench/memcached/memcached.bench.ts)
 *   MC_BENCH_RUNS=3 MC_BENCH_SECONDS=3 bun bench/memcached/memcached.bench.ts
 *
 * Prints a table with ratios (ours / stock) and writes it to zig-out/bench/memcached.md.
 */
import { spawn, spawnSync, type Subprocess } from "bun";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import net from "node:net";

const ROOT = new URL("../..", import.meta.url).pathname;
const RUNS = Number(process.env.MC_BENCH_RUNS ?? 5);
/** Runs of the fixed-rate workload (D): its p99 needs more than the others. */
const FIXED_RUNS = Number(process.env.MC_BENCH_FIXED_RUNS ?? Math.max(10, RUNS));
const SECONDS = Number(process.env.MC_BENCH_SECONDS ?? 5);
const WARMUP = 1;
const CONNS = 100;
const KEYS = 100_000;
const OUT_DIR = `${ROOT}zig-out/bench`;
const MCLOAD = `${OUT_DIR}/mcload`;
const CPUS = availableParallelism();
const TICK = 100; // clock ticks per second (/proc/<pid>/stat)

function build(): void {
  mkdirSync(OUT_DIR, { recursive: true });
  const r = spawnSync([`${ROOT}scripts/zig`, "cc", "-O2", "-o", MCLOAD, `${ROOT}bench/memcached/mcload.c`, "-lpthread", "-lm"], { stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`building mcload failed: ${r.stderr.toString()}`);
}

async function freePort(): Promise<number> {
  return await new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

async function waitPort(port: number): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = net.connect(port, "127.0.0.1", () => {
        c.destroy();
        resolve(true);
      });
      c.on("error", () => resolve(false));
    });
    if (ok) return;
    await Bun.sleep(50);
  }
  throw new Error(`port ${port} never opened`);
}

interface Server {
  name: string;
  port: number;
  proc: Subprocess;
  /** The process whose CPU we count (ours: the Bun process, all shards are its threads). */
  pid: number;
}

async function startServer(kind: "stock" | "ours", threads: number, env: Record<string, string> = {}): Promise<Server> {
  const port = await freePort();
  const args =
    kind === "stock"
      ? ["memcached", "-u", "root", "-l", "127.0.0.1", "-p", String(port), "-U", "0", "-t", String(threads), "-m", "1024", "-c", "4096"]
      : [process.execPath, `${ROOT}examples/memcached/main.ts`, "-l", "127.0.0.1", "-p", String(port), "-t", String(threads), "-m", "1024", "-c", "4096"];
  const proc = spawn(args, { stdout: "ignore", stderr: "ignore", cwd: ROOT, env: { ...process.env, ...env } });
  await waitPort(port);
  return { name: kind, port, proc, pid: proc.pid };
}

async function stopServer(s: Server): Promise<void> {
  s.proc.kill("SIGTERM");
  await s.proc.exited;
}

function cpuTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]); // utime + stime
}

interface Sample {
  opsPerS: number;
  serverUsPerOp: number;
  serverCores: number;
  loadgenCores: number;
  p50: number;
  p99: number;
  p999: number;
}

/** One measured run: starts the generator, samples the server's CPU over the measured window. */
async function measure(server: Server, gen: "mcload" | "memcaslap", extra: string[]): Promise<Sample> {
  const args =
    gen === "mcload"
      ? [MCLOAD, "-s", `127.0.0.1:${server.port}`, "-c", String(CONNS), "-k", String(KEYS), "-W", String(WARMUP), "-D", String(SECONDS), "-j", ...extra]
      : ["memcaslap", "-s", `127.0.0.1:${server.port}`, "-T", "1", "-c", String(CONNS), "-X", "64", "-t", `${SECONDS + WARMUP}s`, ...extra];
  const proc = spawn(args, { stdout: "pipe", stderr: "pipe" });
  await Bun.sleep(WARMUP * 1000);
  const t0 = performance.now();
  const c0 = cpuTicks(server.pid);
  await Bun.sleep(SECONDS * 1000 - 100);
  const c1 = cpuTicks(server.pid);
  const t1 = performance.now();
  const out = await new Response(proc.stdout as ReadableStream).text();
  await proc.exited;
  const usage = proc.resourceUsage();
  const genCpuS = usage ? Number(usage.cpuTime.total) / 1e6 : 0;
  const window = (t1 - t0) / 1000;
  const serverCpuS = (c1 - c0) / TICK;
  let opsPerS = 0;
  let p50 = 0;
  let p99 = 0;
  let p999 = 0;
  if (gen === "mcload") {
    const line = out.trim().split("\n").pop()!;
    const j = JSON.parse(line) as { ops_per_s: number; p50_us: number; p99_us: number; p999_us: number; errors: number };
    if (j.errors > 0) throw new Error(`${server.name}: ${j.errors} errors`);
    opsPerS = j.ops_per_s;
    p50 = j.p50_us;
    p99 = j.p99_us;
    p999 = j.p999_us;
  } else {
    const m = /TPS: (\d+)/.exec(out);
    opsPerS = m ? Number(m[1]) : 0;
  }
  return {
    opsPerS,
    serverUsPerOp: opsPerS > 0 ? (serverCpuS / window / opsPerS) * 1e6 : 0,
    serverCores: serverCpuS / window,
    loadgenCores: genCpuS / (SECONDS + WARMUP),
    p50,
    p99,
    p999,
  };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

function summarize(samples: Sample[]): Sample {
  const k = (f: (s: Sample) => number) => median(samples.map(f));
  return {
    opsPerS: k((s) => s.opsPerS),
    serverUsPerOp: k((s) => s.serverUsPerOp),
    serverCores: k((s) => s.serverCores),
    loadgenCores: k((s) => s.loadgenCores),
    p50: k((s) => s.p50),
    p99: k((s) => s.p99),
    p999: k((s) => s.p999),
  };
}

/** Interleaved runs of one workload on several servers; medians per server. */
async function compare(servers: Server[], gen: "mcload" | "memcaslap", extra: string[], runs = RUNS): Promise<Sample[]> {
  const all: Sample[][] = servers.map(() => []);
  for (let r = 0; r < runs; r++) {
    const order = r % 2 === 0 ? servers.map((_, i) => i) : servers.map((_, i) => servers.length - 1 - i);
    for (const i of order) all[i]!.push(await measure(servers[i]!, gen, extra));
  }
  return all.map(summarize);
}

function saturation(s: Sample, shards: number): string {
  const server = s.serverCores >= 0.9 * shards ? "server" : "";
  const gen = s.loadgenCores >= 0.9 ? "load generator" : "";
  const machine = s.serverCores + s.loadgenCores >= 0.9 * CPUS ? "machine (all cores busy)" : "";
  return [server, gen, machine].filter(Boolean).join(", ") || "none";
}

const lines: string[] = [];
function log(s = ""): void {
  console.log(s);
  lines.push(s);
}

function row(label: string, s: Sample, ref?: Sample, latency = false, shards = 1): string {
  const ratio = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(2)}x` : "-");
  const cells = [
    label,
    s.opsPerS.toFixed(0),
    ref ? ratio(s.opsPerS, ref.opsPerS) : "",
    s.serverUsPerOp.toFixed(2),
    ref ? ratio(s.serverUsPerOp, ref.serverUsPerOp) : "",
    s.serverCores.toFixed(2),
    s.loadgenCores.toFixed(2),
    latency ? `${s.p50.toFixed(0)} / ${s.p99.toFixed(0)} / ${s.p999.toFixed(0)}` : "",
    latency && ref ? ratio(s.p99, ref.p99) : "",
    saturation(s, shards),
  ];
  return `| ${cells.join(" | ")} |`;
}

const HEADER =
  "| server | ops/s | vs stock | server CPU µs/op | vs stock | server cores | load-gen cores | p50 / p99 / p99.9 µs | p99 vs stock | saturated |\n" +
  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|";

/** Sets every key once, then runs 2 s of load unmeasured (JIT warm-up, connection setup). */
async function prefill(s: Server): Promise<void> {
  const r = spawnSync([MCLOAD, "-s", `127.0.0.1:${s.port}`, "-c", "1", "-k", String(KEYS), "-P", "-W", "0", "-D", "0.2"], { stdout: "pipe" });
  if (r.exitCode !== 0) throw new Error(`prefill of ${s.name} failed`);
  const w = spawnSync([MCLOAD, "-s", `127.0.0.1:${s.port}`, "-c", String(CONNS), "-k", String(KEYS), "-W", "0", "-D", "2", "-d", "4"], { stdout: "pipe" });
  if (w.exitCode !== 0) throw new Error(`warm-up of ${s.name} failed`);
}

async function main(): Promise<void> {
  build();
  const cpuModel = /model name\s*:\s*(.*)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "?";
  log(`# memcached on Shoal vs stock memcached 1.6.18`);
  log();
  log(`Machine: ${CPUS} CPUs (${cpuModel}), Linux ${spawnSync(["uname", "-r"]).stdout.toString().trim()}, Bun ${Bun.version}.`);
  log(`Medians of ${RUNS} interleaved runs of ${SECONDS} s (after ${WARMUP} s warm-up); ${CONNS} connections, ${KEYS} keys (prefilled), 32-byte keys, 64-byte values, get/set 9:1; load generator: mcload, 1 thread (C) unless stated. Row D (fixed rate): medians of ${FIXED_RUNS} runs.`);
  const started = Date.now();
  for (const threads of [1, 2]) {
    const stock = await startServer("stock", threads);
    const ours = await startServer("ours", threads);
    await prefill(stock);
    await prefill(ours);
    log();
    log(`## -t ${threads} (stock) vs ${threads} shard(s) (ours)`);
    log();
    log(HEADER);
    const [sa, oa] = await compare([stock, ours], "mcload", ["-d", "1"]);
    log(row(`A stock -t ${threads}`, sa!, undefined, true, threads));
    log(row(`A ours ${threads} shard(s)`, oa!, sa, true, threads));
    const [sb, ob] = await compare([stock, ours], "mcload", ["-d", "16"]);
    log(row(`B stock, depth 16`, sb!, undefined, true, threads));
    log(row(`B ours, depth 16`, ob!, sb, true, threads));
    const [sc, oc] = await compare([stock, ours], "memcaslap", []);
    log(row(`C stock (memcaslap)`, sc!, undefined, false, threads));
    log(row(`C ours (memcaslap)`, oc!, sc, false, threads));
    const rate = Math.round(Math.min(sa!.opsPerS, oa!.opsPerS) / 2 / 1000) * 1000;
    // One round's p99 at half load differs from the next by 2-3x on a shared VM: twice the runs.
    const [sd, od] = await compare([stock, ours], "mcload", ["-R", String(rate)], FIXED_RUNS);
    log(row(`D stock at ${rate}/s`, sd!, undefined, true, threads));
    log(row(`D ours at ${rate}/s`, od!, sd, true, threads));
    await stopServer(stock);
    await stopServer(ours);
  }
  // Sharding: what routing by key costs here.
  const one = await startServer("ours", 1);
  const routed = await startServer("ours", 2);
  const unrouted = await startServer("ours", 2, { SHOAL_MC_ROUTING: "off" });
  for (const s of [one, routed, unrouted]) await prefill(s);
  log();
  log(`## Sharding: 1 shard, 2 shards routing by key (hash % 2, Seastar), 2 shards not routing (incoherent; an upper bound)`);
  log();
  log(HEADER);
  for (const [label, extra] of [["A", ["-d", "1"]], ["B depth 16", ["-d", "16"]]] as const) {
    const [r1, r2, r3] = await compare([one, routed, unrouted], "mcload", [...extra]);
    log(row(`${label}: 1 shard`, r1!, undefined, true, 1));
    log(row(`${label}: 2 shards, routed`, r2!, r1, true, 2));
    log(row(`${label}: 2 shards, not routed`, r3!, r1, true, 2));
  }
  for (const s of [one, routed, unrouted]) await stopServer(s);
  log();
  log(`(ratios of the sharding table are against 1 shard; total ${((Date.now() - started) / 1000).toFixed(0)} s)`);
  mkdirSync(OUT_DIR, { recursive: true });
  writeFileSync(`${OUT_DIR}/memcached.md`, lines.join("\n") + "\n");
}

await main();
