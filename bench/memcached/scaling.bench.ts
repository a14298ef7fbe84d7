/**
 * memcached scaling: stock `memcached -t N` against ours with N shards, with the server confined
 * to N CPUs and the load generator to the others, so that neither takes CPU from the other and
 * the server is the side that saturates (memcached.bench.ts, the comparison, lets both
 * float over every core instead).
 *
 *   bun bench/memcached/scaling.bench.ts
 *   MC_SCALE_SHARDS=1,2,4,8 bun bench/memcached/scaling.bench.ts
 *
 * Shard counts: MC_SCALE_SHARDS, default 1, 2, 4, ... while N <= CPUs / 2 (on 2 CPUs: 1; on 16:
 * 1, 2, 4, 8). The server gets the last N CPUs (taskset; ours pins one shard per CPU), the load
 * generator the remaining ones (mcload, one thread per CPU, at most 16). Connections: 100, or
 * 50 per shard when that is more. Per N, interleaved runs (the order flipping each run), medians:
 *
 *   A  closed loop, no pipelining, get/set 9:1, 32-byte keys, 64-byte values
 *   B  the same with 16 requests in flight per connection
 *   D  fixed rate at half of the slower server's A throughput: p50/p99/p99.9
 *
 * MC_BENCH_RUNS (default 5), MC_BENCH_SECONDS (5), MC_BENCH_FIXED_RUNS (10). Writes the tables
 * to zig-out/bench/memcached-scaling.md.
 */
import { writeFileSync } from "node:fs";
import { CPUS, HEADER, OUT_DIR, Report, build, compare, machineLine, prefill, row, startServer, stopServer, type Load, type Sample } from "./harness.ts";

const RUNS = Number(process.env.MC_BENCH_RUNS ?? 5);
const FIXED_RUNS = Number(process.env.MC_BENCH_FIXED_RUNS ?? Math.max(10, RUNS));
const SECONDS = Number(process.env.MC_BENCH_SECONDS ?? 5);
const WARMUP = 1;

function shardCounts(): number[] {
  const spec = process.env.MC_SCALE_SHARDS;
  if (spec !== undefined && spec !== "") {
    const ns = spec.split(",").map((x) => Number(x.trim()));
    for (const n of ns) {
      if (!Number.isInteger(n) || n < 1 || n > CPUS - 1) {
        throw new Error(`MC_SCALE_SHARDS: each count must be an integer in 1..${CPUS - 1} (one CPU at least is left to the load generator), got "${spec}"`);
      }
    }
    return ns;
  }
  const ns: number[] = [];
  for (let n = 1; n <= CPUS / 2; n *= 2) ns.push(n);
  return ns;
}

interface Point {
  shards: number;
  stockA: Sample;
  oursA: Sample;
  stockB: Sample;
  oursB: Sample;
  stockD: Sample;
  oursD: Sample;
  rate: number;
}

async function main(): Promise<void> {
  if (CPUS < 2) throw new Error("scaling.bench.ts needs at least 2 CPUs (server and load generator on disjoint CPUs)");
  const counts = shardCounts();
  build();
  const report = new Report();
  const log = (s?: string) => report.log(s);
  log(`# memcached scaling: server and load generator on disjoint CPUs`);
  log();
  log(machineLine());
  log(`Medians of ${RUNS} interleaved runs of ${SECONDS} s (after ${WARMUP} s warm-up), row D of ${FIXED_RUNS}; 100000 keys (prefilled), 32-byte keys, 64-byte values, get/set 9:1.`);
  const started = Date.now();
  const points: Point[] = [];
  for (const n of counts) {
    const serverCpus = Array.from({ length: n }, (_, i) => CPUS - n + i);
    const genCpus = Array.from({ length: CPUS - n }, (_, i) => i);
    const load: Load = { conns: Math.max(100, 50 * n), threads: Math.min(genCpus.length, 16), cpus: genCpus, seconds: SECONDS, warmup: WARMUP };
    const stock = await startServer("stock", n, { cpus: serverCpus });
    const ours = await startServer("ours", n, { cpus: serverCpus });
    await prefill(stock, load);
    await prefill(ours, load);
    log();
    log(`## ${n} shard(s) / -t ${n}: server on CPU ${serverCpus.join(",")}, mcload (${load.threads} thread(s), ${load.conns} connections) on CPU ${genCpus.join(",")}`);
    log();
    log(HEADER);
    const [sa, oa] = await compare([stock, ours], "mcload", ["-d", "1"], load, RUNS);
    log(row(`A stock -t ${n}`, sa!, stock, load, undefined, true));
    log(row(`A ours ${n} shard(s)`, oa!, ours, load, sa, true));
    const [sb, ob] = await compare([stock, ours], "mcload", ["-d", "16"], load, RUNS);
    log(row(`B stock, depth 16`, sb!, stock, load, undefined, true));
    log(row(`B ours, depth 16`, ob!, ours, load, sb, true));
    const rate = Math.round(Math.min(sa!.opsPerS, oa!.opsPerS) / 2 / 1000) * 1000;
    const [sd, od] = await compare([stock, ours], "mcload", ["-R", String(rate)], load, FIXED_RUNS);
    log(row(`D stock at ${rate}/s`, sd!, stock, load, undefined, true));
    log(row(`D ours at ${rate}/s`, od!, ours, load, sd, true));
    await stopServer(stock);
    await stopServer(ours);
    points.push({ shards: n, stockA: sa!, oursA: oa!, stockB: sb!, oursB: ob!, stockD: sd!, oursD: od!, rate });
  }
  const x = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(2)}x` : "-");
  const k = (v: number) => `${(v / 1000).toFixed(0)}k`;
  log();
  log(`## Summary (ours / stock; scaling against the same server's 1-shard throughput where measured)`);
  log();
  log("| shards | A ops/s stock / ours | A throughput | A CPU/op | B ops/s stock / ours | B throughput | B CPU/op | D p99 | ours A scaling | stock A scaling |");
  log("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
  const base = points.find((p) => p.shards === 1);
  for (const p of points) {
    log(
      `| ${p.shards} | ${k(p.stockA.opsPerS)} / ${k(p.oursA.opsPerS)} | ${x(p.oursA.opsPerS, p.stockA.opsPerS)} | ${x(p.oursA.serverUsPerOp, p.stockA.serverUsPerOp)} | ` +
        `${k(p.stockB.opsPerS)} / ${k(p.oursB.opsPerS)} | ${x(p.oursB.opsPerS, p.stockB.opsPerS)} | ${x(p.oursB.serverUsPerOp, p.stockB.serverUsPerOp)} | ` +
        `${x(p.oursD.p99, p.stockD.p99)} | ${base ? x(p.oursA.opsPerS, base.oursA.opsPerS) : "-"} | ${base ? x(p.stockA.opsPerS, base.stockA.opsPerS) : "-"} |`,
    );
  }
  log();
  log(`(total ${((Date.now() - started) / 1000).toFixed(0)} s)`);
  writeFileSync(`${OUT_DIR}/memcached-scaling.md`, report.lines.join("\n") + "\n");
}

await main();
