/**
 * This checkout's memcached against another checkout's (a git worktree of an earlier commit),
 * interleaved: per round a fresh server of each, prefilled, 10 s of warm-up load, then 4 s
 * measured with mcload; prints server CPU per operation and throughput per round, and the
 * medians' ratio (bench/memcached/RESULTS-memcached.md).
 *
 *   git worktree add /tmp/before <commit> && ln -s $PWD/node_modules /tmp/before/ &&
 *     mkdir -p /tmp/before/zig-out && cp -r zig-out/lib /tmp/before/zig-out/   # or build it there
 *   bun bench/memcached/compare.bench.ts /tmp/before [shards=2] [value bytes=60000] [rounds=4]
 *   MC_GET_RATIO=0.1 bun bench/memcached/compare.bench.ts ...   # a set-heavy load (get/set 1:9)
 *   MC_WARMUP_S=30 MC_MEASURE_S=8 bun bench/memcached/compare.bench.ts ...   # past the JIT's warm-up
 *   bun bench/memcached/compare.bench.ts stock [shards] ...       # against stock memcached -t shards
 */
import { spawnSync } from "bun";
import { build, measure, median, MCLOAD, ROOT, startServer, stopServer, type Server } from "./harness.ts";

const other = process.argv[2];
const shards = Number(process.argv[3] ?? 2);
const value = Number(process.argv[4] ?? 60_000);
const rounds = Number(process.argv[5] ?? 4);
/** The share of gets in the load (MC_GET_RATIO, default 0.9: get/set 9:1). */
const getRatio = process.env["MC_GET_RATIO"] ?? "0.9";
/**
 * Seconds of load before and during the measurement (MC_WARMUP_S, MC_MEASURE_S). The engine
 * still compiles hot functions 10-30 s into a run (hundreds of ms of a JIT thread's CPU, which
 * counts as the server's): for changes worth a few percent, warm up for 30 s.
 */
const warmupS = Number(process.env["MC_WARMUP_S"] ?? 10);
const measureS = Number(process.env["MC_MEASURE_S"] ?? 4);
if (other === undefined || !(shards >= 1) || !(value >= 1) || !(rounds >= 1)) {
  throw new Error("usage: compare.bench.ts OTHER_CHECKOUT [shards] [value bytes] [rounds]");
}
build();
const roots = { before: `${other.replace(/\/$/, "")}/`, after: ROOT };
type Which = keyof typeof roots;

async function start(which: Which): Promise<Server> {
  // OTHER_CHECKOUT "stock": stock memcached with as many threads as shards.
  const s = which === "before" && other === "stock" ? await startServer("stock", shards) : await startServer("ours", shards, { root: roots[which] });
  const fill = spawnSync([MCLOAD, "-s", `127.0.0.1:${s.port}`, "-c", "8", "-k", "1000", "-V", String(value), "-P", "-D", "1", "-W", "0", "-j"], { stdout: "pipe", stderr: "pipe" });
  if (fill.exitCode !== 0) throw new Error(`${which}: prefill failed: ${fill.stderr.toString()}`);
  return s;
}

const usPerOp: Record<Which, number[]> = { before: [], after: [] };
const opsPerS: Record<Which, number[]> = { before: [], after: [] };
for (let r = 0; r < rounds; r++) {
  const order: Which[] = r % 2 === 0 ? ["before", "after"] : ["after", "before"];
  for (const which of order) {
    const s = await start(which);
    try {
      const m = await measure(s, "mcload", ["-d", "4", "-r", getRatio, "-k", "1000", "-V", String(value)], { conns: 8, threads: 1, seconds: measureS, warmup: warmupS });
      usPerOp[which].push(m.serverUsPerOp);
      opsPerS[which].push(m.opsPerS);
      console.log(`round ${r + 1} ${which.padEnd(6)} ${m.serverUsPerOp.toFixed(1)} µs/op  ${Math.round(m.opsPerS)} ops/s`);
    } finally {
      await stopServer(s);
    }
  }
}
const b = median(usPerOp.before);
const a = median(usPerOp.after);
console.log(`${shards} shard(s), ${value}-byte values: CPU per op median ${b.toFixed(1)} (${other}) vs ${a.toFixed(1)} µs (this checkout): ${(a / b).toFixed(2)}x`);
console.log(`throughput median ${Math.round(median(opsPerS.before))} vs ${Math.round(median(opsPerS.after))} ops/s`);
