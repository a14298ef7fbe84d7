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
 * bench/memcached/scaling.bench.ts measures with server and load generator on disjoint CPUs.
 */
import { writeFileSync } from "node:fs";
import { CPUS, HEADER, OUT_DIR, Report, build, compare, machineLine, prefill, row, startServer, stopServer, type Load } from "./harness.ts";

const RUNS = Number(process.env.MC_BENCH_RUNS ?? 5);
/** Runs of the fixed-rate workload (D): its p99 needs more than the others. */
const FIXED_RUNS = Number(process.env.MC_BENCH_FIXED_RUNS ?? Math.max(10, RUNS));
const SECONDS = Number(process.env.MC_BENCH_SECONDS ?? 5);
const WARMUP = 1;
const CONNS = 100;
/** One generator thread, server and generator floating over every CPU. */
const LOAD: Load = { conns: CONNS, threads: 1, seconds: SECONDS, warmup: WARMUP };

async function main(): Promise<void> {
  build();
  const report = new Report();
  const log = (s?: string) => report.log(s);
  log(`# memcached on Shoal vs stock memcached 1.6.18`);
  log();
  log(machineLine());
  log(`Medians of ${RUNS} interleaved runs of ${SECONDS} s (after ${WARMUP} s warm-up); ${CONNS} connections, 100000 keys (prefilled), 32-byte keys, 64-byte values, get/set 9:1; load generator: mcload, 1 thread (C) unless stated. Row D (fixed rate): medians of ${FIXED_RUNS} runs.`);
  const started = Date.now();
  for (const threads of [1, 2]) {
    const stock = await startServer("stock", threads);
    const ours = await startServer("ours", threads);
    await prefill(stock, LOAD);
    await prefill(ours, LOAD);
    log();
    log(`## -t ${threads} (stock) vs ${threads} shard(s) (ours)`);
    log();
    log(HEADER);
    const [sa, oa] = await compare([stock, ours], "mcload", ["-d", "1"], LOAD, RUNS);
    log(row(`A stock -t ${threads}`, sa!, stock, LOAD, undefined, true));
    log(row(`A ours ${threads} shard(s)`, oa!, ours, LOAD, sa, true));
    const [sb, ob] = await compare([stock, ours], "mcload", ["-d", "16"], LOAD, RUNS);
    log(row(`B stock, depth 16`, sb!, stock, LOAD, undefined, true));
    log(row(`B ours, depth 16`, ob!, ours, LOAD, sb, true));
    const [sc, oc] = await compare([stock, ours], "memcaslap", [], LOAD, RUNS);
    log(row(`C stock (memcaslap)`, sc!, stock, LOAD));
    log(row(`C ours (memcaslap)`, oc!, ours, LOAD, sc));
    const rate = Math.round(Math.min(sa!.opsPerS, oa!.opsPerS) / 2 / 1000) * 1000;
    // One round's p99 at half load differs from the next by 2-3x on a shared VM: twice the runs.
    const [sd, od] = await compare([stock, ours], "mcload", ["-R", String(rate)], LOAD, FIXED_RUNS);
    log(row(`D stock at ${rate}/s`, sd!, stock, LOAD, undefined, true));
    log(row(`D ours at ${rate}/s`, od!, ours, LOAD, sd, true));
    await stopServer(stock);
    await stopServer(ours);
  }
  // Sharding: what routing by key costs here.
  const one = await startServer("ours", 1);
  const routed = await startServer("ours", 2);
  const unrouted = await startServer("ours", 2, { env: { SHOAL_MC_ROUTING: "off" } });
  for (const s of [one, routed, unrouted]) await prefill(s, LOAD);
  log();
  log(`## Sharding: 1 shard, 2 shards routing by key (hash % 2, Seastar), 2 shards not routing (incoherent; an upper bound)`);
  log();
  log(HEADER);
  for (const [label, extra] of [["A", ["-d", "1"]], ["B depth 16", ["-d", "16"]]] as const) {
    const [r1, r2, r3] = await compare([one, routed, unrouted], "mcload", [...extra], LOAD, RUNS);
    log(row(`${label}: 1 shard`, r1!, one, LOAD, undefined, true));
    log(row(`${label}: 2 shards, routed`, r2!, routed, LOAD, r1, true));
    log(row(`${label}: 2 shards, not routed`, r3!, unrouted, LOAD, r1, true));
  }
  for (const s of [one, routed, unrouted]) await stopServer(s);
  log();
  log(`(ratios of the sharding table are against 1 shard; total ${((Date.now() - started) / 1000).toFixed(0)} s; ${CPUS} CPUs shared by server and load generator)`);
  writeFileSync(`${OUT_DIR}/memcached.md`, report.lines.join("\n") + "\n");
}

await main();
