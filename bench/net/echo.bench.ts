/**
 * Echo benchmark: Shoal's posix stack (examples/echo) against a C epoll server, a C io_uring
 * server (multishot recv, SINGLE_ISSUER, DEFER_TASKRUN: the floor for io_uring here) and
 * Bun.listen, driven by a C load generator (N connections x D messages of 64 bytes in flight).
 * The C peers are compiled here with `scripts/zig cc`. Scenarios: 1 and 128 connections, each
 * without pipelining (D = 1) and with it (D = 16). Every round runs every scenario on every
 * server (interleaved, the order rotating per round); each figure is the median of the rounds.
 * Measured: echoed messages per second, and whole-process server CPU per message
 * (utime + stime from /proc/<pid>/stat over the measured window), plus each side's share of a
 * CPU to say which side saturated. Prints the table and the ratios against the targets, and
 * writes bench/net/RESULTS-net.md.
 *
 *   scripts/bench.sh bench/net/echo.bench.ts
 *   SHOAL_BENCH_ROUNDS=5 SHOAL_BENCH_SECONDS=2 SHOAL_BENCH_CPUS=same|split node_modules/.bin/bun bench/net/echo.bench.ts
 *
 * CPU placement (SHOAL_BENCH_CPUS): "same" (default) pins server and load generator to CPU 0.
 * On the project's 2-vCPU VM a cross-CPU wake-up costs tens of microseconds, so with "split"
 * (server on CPU 0, load on CPU 1) every server is bound by wake-up latency and the figures
 * swing from run to run; on one CPU they share the core and CPU per message is stable.
 */
import { mkdirSync, readFileSync } from "node:fs";
import { tmpdir, cpus } from "node:os";
import { join } from "node:path";
import { median, root, sh, startServer, writeResults, type PeerServer } from "../lib/peers.ts";

const rounds = Number(process.env.SHOAL_BENCH_ROUNDS ?? 5);
const seconds = Number(process.env.SHOAL_BENCH_SECONDS ?? 2);
const warmup = Number(process.env.SHOAL_BENCH_WARMUP ?? 0.5);
const placement = process.env.SHOAL_BENCH_CPUS ?? "same";
const messageBytes = 64;
const serverCpu = "0";
const clientCpu = placement === "split" ? "1" : "0";

const scenarios = [
  { conns: 1, depth: 1 },
  { conns: 128, depth: 1 },
  { conns: 1, depth: 16 },
  { conns: 128, depth: 16 },
];


// ---- build the C peers --------------------------------------------------------------------
const build = join(tmpdir(), `shoal-bench-net-${process.getuid?.() ?? 0}`);
mkdirSync(build, { recursive: true });
for (const name of ["echo-epoll", "echo-uring", "loadgen"]) {
  sh(["scripts/zig", "cc", "-O2", "-o", join(build, name), join("bench/net", `${name}.c`)], `zig cc ${name}`);
}
const bun = join(root, "node_modules/.bin/bun");

// ---- servers ------------------------------------------------------------------------------
type Server = PeerServer;

const servers: Server[] = [
  { name: "C epoll", port: 19101, cmd: [join(build, "echo-epoll"), "19101"] },
  { name: "C io_uring", port: 19102, cmd: [join(build, "echo-uring"), "19102"] },
  { name: "Bun.listen", port: 19103, cmd: [bun, "bench/net/bun-echo.ts", "19103"] },
  {
    name: "Shoal",
    port: 19104,
    // One shard; --overprovisioned: never busy-poll (CPU per message counts only real work),
    // do not pin beyond the CPU taskset gives.
    cmd: [bun, "examples/echo/main.ts", "--port", "19104", "--host", "127.0.0.1", "--smp", "1", "--overprovisioned"],
  },
  // Diagnostic: Shoal's reactor and loop echoing without the socket API (see reactor-floor.ts).
  { name: "Shoal reactor floor", port: 19105, cmd: [bun, "bench/net/reactor-floor.ts", "19105"] },
];


interface Sample {
  msgsPerS: number;
  serverUsPerMsg: number;
  serverShare: number;
  clientShare: number;
}

function loadgen(s: Server, conns: number, depth: number): Sample {
  const out = sh(
    ["taskset", "-c", clientCpu, join(build, "loadgen"), String(s.port), String(conns), String(depth), String(messageBytes), String(warmup), String(seconds), String(s.proc!.pid)],
    `loadgen against ${s.name}`,
  );
  const r = JSON.parse(out) as { msgs: number; seconds: number; msgsPerS: number; clientCpuS: number; serverCpuS: number };
  return {
    msgsPerS: r.msgsPerS,
    serverUsPerMsg: (r.serverCpuS / r.msgs) * 1e6,
    serverShare: r.serverCpuS / r.seconds,
    clientShare: r.clientCpuS / r.seconds,
  };
}


// ---- run ----------------------------------------------------------------------------------
for (const s of servers) await startServer(s, serverCpu);
const samples = new Map<string, Sample[]>();
const key = (s: Server, c: { conns: number; depth: number }) => `${s.name}|${c.conns}|${c.depth}`;
try {
  for (let round = 0; round < rounds; round++) {
    for (const sc of scenarios) {
      for (let k = 0; k < servers.length; k++) {
        const s = servers[(k + round) % servers.length]!;
        const sample = loadgen(s, sc.conns, sc.depth);
        const list = samples.get(key(s, sc)) ?? [];
        list.push(sample);
        samples.set(key(s, sc), list);
      }
    }
    console.log(`round ${round + 1}/${rounds} done`);
  }
} finally {
  for (const s of servers) s.proc?.kill();
}

// ---- report -------------------------------------------------------------------------------
interface Row {
  server: string;
  conns: number;
  depth: number;
  msgsPerS: number;
  usPerMsg: number;
  serverShare: number;
  clientShare: number;
}
const rows: Row[] = [];
for (const sc of scenarios) {
  for (const s of servers) {
    const list = samples.get(key(s, sc))!;
    rows.push({
      server: s.name,
      conns: sc.conns,
      depth: sc.depth,
      msgsPerS: median(list.map((x) => x.msgsPerS)),
      usPerMsg: median(list.map((x) => x.serverUsPerMsg)),
      serverShare: median(list.map((x) => x.serverShare)),
      clientShare: median(list.map((x) => x.clientShare)),
    });
  }
}

function saturation(r: Row): string {
  if (placement === "same") {
    // One shared CPU: whoever takes more of it is the limit; the rest is idle or context switching.
    const busy = r.serverShare + r.clientShare;
    const side = r.serverShare >= r.clientShare ? "server" : "client";
    if (busy < 0.8) return `neither: together ${(busy * 100).toFixed(0)}% of the core (the rest idle or taken by other load)`;
    return `${side} (${(Math.max(r.serverShare, r.clientShare) * 100).toFixed(0)}% of the shared core)`;
  }
  if (r.serverShare > 0.9) return "server";
  if (r.clientShare > 0.9) return "client";
  return "neither (latency-bound)";
}

const find = (server: string, conns: number, depth: number) => rows.find((r) => r.server === server && r.conns === conns && r.depth === depth)!;
const lines: string[] = [];
lines.push("| scenario | server | msgs/s | server CPU µs/msg | server CPU share | client CPU share | saturated |");
lines.push("|---|---|---:|---:|---:|---:|---|");
for (const r of rows) {
  lines.push(
    `| ${r.conns} conn × ${r.depth} in flight | ${r.server} | ${Math.round(r.msgsPerS).toLocaleString("en-US")} | ${r.usPerMsg.toFixed(2)} | ${(r.serverShare * 100).toFixed(0)}% | ${(r.clientShare * 100).toFixed(0)}% | ${saturation(r)} |`,
  );
}
const ratios: string[] = [];
ratios.push("| scenario | Shoal / C epoll | Shoal / C io_uring | Shoal / Bun.listen | target | met | reactor floor / C io_uring | Shoal − floor (µs/msg) |");
ratios.push("|---|---:|---:|---:|---|---|---:|---:|");
for (const sc of scenarios) {
  const shoal = find("Shoal", sc.conns, sc.depth).usPerMsg;
  const ep = shoal / find("C epoll", sc.conns, sc.depth).usPerMsg;
  const ur = shoal / find("C io_uring", sc.conns, sc.depth).usPerMsg;
  const bn = shoal / find("Bun.listen", sc.conns, sc.depth).usPerMsg;
  const pipelined = sc.depth > 1;
  const target = pipelined ? "≤ 0.8× Bun.listen" : "≤ 1.0× epoll and ≤ 1.15× io_uring";
  const met = pipelined ? bn <= 0.8 : ep <= 1.0 && ur <= 1.15;
  const floor = find("Shoal reactor floor", sc.conns, sc.depth).usPerMsg;
  const floorRatio = floor / find("C io_uring", sc.conns, sc.depth).usPerMsg;
  ratios.push(
    `| ${sc.conns} conn × ${sc.depth} | ${ep.toFixed(2)} | ${ur.toFixed(2)} | ${bn.toFixed(2)} | ${target} | ${met ? "yes" : "no"} | ${floorRatio.toFixed(2)} | ${(shoal - floor).toFixed(2)} |`,
  );
}

console.log(`\nEcho, ${messageBytes}-byte messages, median of ${rounds} interleaved rounds of ${seconds} s (CPU placement: ${placement})\n`);
console.log(lines.join("\n"));
console.log("\nServer CPU per message, Shoal relative to each baseline (lower is better)\n");
console.log(ratios.join("\n"));

const machine = [
  `- Machine: ${cpus().length} vCPU (${cpus()[0]?.model ?? "unknown"}), Linux ${sh(["uname", "-r"], "uname")}`,
  `- Bun ${Bun.version}, Zig ${readFileSync(join(root, "ZIG_VERSION"), "utf8").trim()} (C peers built with \`scripts/zig cc -O2\`)`,
  `- ${new Date().toISOString().slice(0, 10)}; placement "${placement}": server on CPU ${serverCpu}, load generator on CPU ${clientCpu}`,
];
const doc = `# Network benchmark: echo

Produced by \`bench/net/echo.bench.ts\` (run \`scripts/bench.sh bench/net/echo.bench.ts\`); this file is
rewritten by every run.

${machine.join("\n")}

Servers: \`bench/net/echo-epoll.c\` (epoll, level-triggered, non-blocking), \`bench/net/echo-uring.c\`
(SINGLE_ISSUER | DEFER_TASKRUN, multishot accept, multishot recv into a provided-buffer ring,
one send in flight per connection), \`bench/net/bun-echo.ts\` (Bun.listen) and Shoal
(\`examples/echo/main.ts --smp 1 --overprovisioned\`: posix stack, one shard, no busy-polling).
Load: \`bench/net/loadgen.c\`, N connections each keeping D ${messageBytes}-byte messages in flight.
Server CPU is the whole process's utime + stime (/proc/<pid>/stat) over the measured window,
divided by the messages echoed in it. Median of ${rounds} rounds of ${seconds} s (after ${warmup} s warm-up);
rounds interleave the servers, rotating their order.

${lines.join("\n")}

Server CPU per message, Shoal relative to each baseline (lower is better). "Shoal reactor
floor" (\`bench/net/reactor-floor.ts\`) echoes through the same reactor and loop without the
socket API and without the app template (main thread, no shard Worker): its ratio to C
io_uring is what the core loop and the runtime cost; "Shoal − floor" is what the socket API
(promises, views, queues) and the app template's shard add per message.

${ratios.join("\n")}
`;
writeResults(join(import.meta.dir, "RESULTS-net.md"), doc, "echo.bench.ts");
