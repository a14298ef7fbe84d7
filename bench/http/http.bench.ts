/**
 * HTTP "hello" benchmark: Shoal's examples/http-hello (one shard, posix stack) against nginx
 * (one worker, `return 200`) and Bun.serve, all answering "Hello, World!" to GET /, driven by
 * wrk. Scenarios: 1 and 64 keep-alive connections, and 64 connections with 16 requests
 * pipelined on each (wrk with a Lua script that sends 16 requests per write). Every round runs
 * every scenario on every server, interleaved (the order rotating per round); each figure is
 * the median of the rounds. Measured: requests per second (wrk), whole-process server CPU per
 * request (utime + stime from /proc/<pid>/stat over wrk's run), wrk's p99 latency, and each
 * side's share of a CPU to say which side saturated. Writes bench/http/RESULTS-http.md.
 *
 *   scripts/bench.sh bench/http/http.bench.ts
 *   SHOAL_BENCH_ROUNDS=5 SHOAL_BENCH_SECONDS=4 SHOAL_BENCH_CPUS=split|same node_modules/.bin/bun bench/http/http.bench.ts
 *
 * CPU placement (SHOAL_BENCH_CPUS): "split" (default) pins the server to the last CPU and wrk to
 * the others, so the server is the side that saturates where it can; "same" puts both on CPU 0.
 * Every server is confined to one CPU: nginx runs one worker (master_process off), Shoal one
 * shard, and Bun.serve's threads share the CPU taskset gives them.
 */
import { spawnSync } from "bun";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { median, root, sh, startServer, writeResults, type PeerServer } from "../lib/peers.ts";

const rounds = Number(process.env.SHOAL_BENCH_ROUNDS ?? 5);
const seconds = Number(process.env.SHOAL_BENCH_SECONDS ?? 4);
const placement = process.env.SHOAL_BENCH_CPUS ?? "split";
const ncpu = cpus().length;
const serverCpu = placement === "same" || ncpu < 2 ? "0" : String(ncpu - 1);
const clientCpus = placement === "same" || ncpu < 2 ? "0" : `0-${ncpu - 2}`;
const wrkThreads = placement === "same" || ncpu < 2 ? 1 : Math.max(1, ncpu - 1);
const CLK_TCK = Number(spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;

const scenarios = [
  { conns: 1, depth: 1 },
  { conns: 64, depth: 1 },
  { conns: 64, depth: 16 },
];


for (const tool of ["wrk", "nginx", "taskset"]) {
  if (spawnSync(["sh", "-c", `command -v ${tool}`]).exitCode !== 0) throw new Error(`${tool} is missing: run scripts/setup.sh`);
}

// ---- peers' files -------------------------------------------------------------------------
const work = join(tmpdir(), `shoal-bench-http-${process.pid}`);
mkdirSync(join(work, "nginx"), { recursive: true });
const bun = join(root, "node_modules/.bin/bun");

function nginxConf(port: number): string {
  const dir = join(work, "nginx");
  return `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log error;
events { worker_connections 4096; multi_accept on; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / { default_type text/plain; return 200 "Hello, World!"; }
  }
}
`;
}

const pipelineLua = join(work, "pipeline.lua");
writeFileSync(
  pipelineLua,
  `-- ${"16"} requests per write: wrk counts each response.
init = function(args)
  local depth = tonumber(args[1]) or 16
  local r = {}
  for i = 1, depth do r[i] = wrk.format(nil, "/") end
  req = table.concat(r)
end
request = function() return req end
`,
);

// ---- servers ------------------------------------------------------------------------------
type Server = PeerServer;

const nginxPort = 19141;
writeFileSync(join(work, "nginx", "nginx.conf"), nginxConf(nginxPort));
const servers: Server[] = [
  { name: "nginx", port: nginxPort, cmd: ["nginx", "-p", join(work, "nginx"), "-e", join(work, "nginx", "error.log"), "-c", join(work, "nginx", "nginx.conf")] },
  { name: "Bun.serve", port: 19142, cmd: [bun, "bench/http/bun-hello.ts", "19142"] },
  {
    name: "Shoal",
    port: 19143,
    // One shard; --overprovisioned: never busy-poll (CPU per request counts only real work).
    cmd: [bun, "examples/http-hello/main.ts", "--port", "19143", "--host", "127.0.0.1", "--smp", "1", "--overprovisioned"],
  },
];


/** utime + stime of a process and all its threads, in seconds. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

interface Sample {
  reqPerS: number;
  serverUsPerReq: number;
  serverShare: number;
  clientShare: number;
  p99Ms: number;
}

/** wrk's latency text ("812.00us", "1.20ms", "2.01s") in milliseconds. */
function ms(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text.trim());
  if (m === null) throw new Error(`unreadable latency "${text}"`);
  const v = Number(m[1]);
  return m[2] === "us" ? v / 1000 : m[2] === "ms" ? v : m[2] === "s" ? v * 1000 : v * 60_000;
}

/** wrk's threads for `conns` connections (one connection runs on one thread). */
const threadsFor = (conns: number) => Math.min(wrkThreads, conns);

function wrk(s: Server, conns: number, depth: number, secs: number): Sample {
  const threads = threadsFor(conns);
  const args = ["taskset", "-c", clientCpus, "wrk", "--latency", `-t${threads}`, `-c${conns}`, `-d${secs}s`, "--timeout", "10s"];
  if (depth > 1) args.push("-s", pipelineLua);
  args.push(`http://127.0.0.1:${s.port}/`);
  if (depth > 1) args.push("--", String(depth));
  const server0 = cpuSeconds(s.proc!.pid);
  const t0 = performance.now();
  const r = spawnSync(args, { cwd: root, stdout: "pipe", stderr: "pipe" });
  const wall = (performance.now() - t0) / 1000;
  const serverCpu = cpuSeconds(s.proc!.pid) - server0;
  const out = r.stdout.toString();
  if (r.exitCode !== 0) throw new Error(`wrk against ${s.name} failed: ${r.stderr.toString()}${out}`);
  const done = /(\d+) requests in ([\d.]+)(ms|s|m)/.exec(out);
  if (done === null) throw new Error(`wrk against ${s.name}: no request count in\n${out}`);
  const requests = Number(done[1]);
  const bad = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  if (bad !== null || (errors !== null && errors.slice(1).some((n) => Number(n) > 0))) {
    throw new Error(`wrk against ${s.name} saw failures:\n${out}`);
  }
  const p99 = /^\s+99%\s+(\S+)/m.exec(out);
  // wrk's own CPU: its children's times as seen by this process (rusage of the waited child).
  const usage = r.resourceUsage;
  const clientCpu = usage ? (Number(usage.cpuTime.user) + Number(usage.cpuTime.system)) / 1e6 : Number.NaN;
  return {
    reqPerS: requests / wall,
    serverUsPerReq: (serverCpu / requests) * 1e6,
    serverShare: serverCpu / wall,
    clientShare: clientCpu / wall,
    // Pipelined, wrk records one latency per batch of responses, not one per request: not shown.
    p99Ms: p99 && depth === 1 ? ms(p99[1]!) : Number.NaN,
  };
}


// ---- run ----------------------------------------------------------------------------------
const samples = new Map<string, Sample[]>();
const key = (s: Server, c: { conns: number; depth: number }) => `${s.name}|${c.conns}|${c.depth}`;
try {
  // Inside the try: a server that fails to start must not leave the ones started before it running.
  for (const s of servers) await startServer(s, serverCpu);
  // Warm-up: every server's JIT (and nginx's caches) see every scenario once, unmeasured.
  for (const sc of scenarios) for (const s of servers) wrk(s, sc.conns, sc.depth, 2);
  for (let round = 0; round < rounds; round++) {
    for (const sc of scenarios) {
      for (let k = 0; k < servers.length; k++) {
        const s = servers[(k + round) % servers.length]!;
        const list = samples.get(key(s, sc)) ?? [];
        list.push(wrk(s, sc.conns, sc.depth, seconds));
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
  reqPerS: number;
  usPerReq: number;
  serverShare: number;
  clientShare: number;
  p99Ms: number;
}
const rows: Row[] = [];
for (const sc of scenarios) {
  for (const s of servers) {
    const list = samples.get(key(s, sc))!;
    rows.push({
      server: s.name,
      conns: sc.conns,
      depth: sc.depth,
      reqPerS: median(list.map((x) => x.reqPerS)),
      usPerReq: median(list.map((x) => x.serverUsPerReq)),
      serverShare: median(list.map((x) => x.serverShare)),
      clientShare: median(list.map((x) => x.clientShare)),
      p99Ms: median(list.map((x) => x.p99Ms)),
    });
  }
}

function saturation(r: Row): string {
  if (placement === "same" || ncpu < 2) {
    const side = r.serverShare >= r.clientShare ? "server" : "wrk";
    return `${side} (${(Math.max(r.serverShare, r.clientShare) * 100).toFixed(0)}% of the shared core)`;
  }
  // A side at 85% of its CPUs or more is taken as saturated (the VM's own overhead takes some).
  const server = r.serverShare >= 0.85;
  // Against the threads this scenario ran (1 connection: one thread, however many CPUs wrk has).
  const client = r.clientShare >= 0.85 * threadsFor(r.conns);
  if (server && client) return "both";
  if (server) return "server";
  if (client) return "wrk";
  return "neither (latency-bound)";
}

const find = (server: string, conns: number, depth: number) => rows.find((r) => r.server === server && r.conns === conns && r.depth === depth)!;
const lines: string[] = [];
lines.push("| scenario | server | requests/s | server CPU µs/request | p99 | server CPU share | wrk CPU share | saturated |");
lines.push("|---|---|---:|---:|---:|---:|---:|---|");
for (const r of rows) {
  lines.push(
    `| ${r.conns} conn × ${r.depth} | ${r.server} | ${Math.round(r.reqPerS).toLocaleString("en-US")} | ${r.usPerReq.toFixed(2)} | ${Number.isNaN(r.p99Ms) ? "n/a" : `${r.p99Ms.toFixed(2)} ms`} | ${(r.serverShare * 100).toFixed(0)}% | ${(r.clientShare * 100).toFixed(0)}% | ${saturation(r)} |`,
  );
}
const ratios: string[] = [];
ratios.push("| scenario | CPU/request vs nginx | vs Bun.serve | requests/s vs nginx | vs Bun.serve | p99 vs nginx | vs Bun.serve |");
ratios.push("|---|---:|---:|---:|---:|---:|---:|");
for (const sc of scenarios) {
  const shoal = find("Shoal", sc.conns, sc.depth);
  const ng = find("nginx", sc.conns, sc.depth);
  const bs = find("Bun.serve", sc.conns, sc.depth);
  const f = (x: number) => (Number.isNaN(x) ? "n/a" : `${x.toFixed(2)}×`);
  ratios.push(
    `| ${sc.conns} conn × ${sc.depth} | ${f(shoal.usPerReq / ng.usPerReq)} | ${f(shoal.usPerReq / bs.usPerReq)} | ${f(shoal.reqPerS / ng.reqPerS)} | ${f(shoal.reqPerS / bs.reqPerS)} | ${f(shoal.p99Ms / ng.p99Ms)} | ${f(shoal.p99Ms / bs.p99Ms)} |`,
  );
}

console.log(`\nHTTP hello, median of ${rounds} interleaved rounds of ${seconds} s (placement: ${placement})\n`);
console.log(lines.join("\n"));
console.log("\nShoal relative to each peer (CPU and p99: lower is better; requests/s: higher)\n");
console.log(ratios.join("\n"));

const machine = [
  `- Machine: ${ncpu} vCPU (${cpus()[0]?.model ?? "unknown"}), Linux ${sh(["uname", "-r"], "uname")}`,
  `- Bun ${Bun.version}, ${sh(["sh", "-c", "nginx -v 2>&1"], "nginx -v")}, ${sh(["sh", "-c", "wrk --version 2>&1 | head -1 || true"], "wrk --version").split(" Copyright")[0]}`,
  `- ${new Date().toISOString().slice(0, 10)}; placement "${placement}": servers on CPU ${serverCpu}, wrk (${wrkThreads} thread${wrkThreads > 1 ? "s" : ""} at most) on CPU ${clientCpus}`,
];
const doc = `# HTTP benchmark: hello

Produced by \`bench/http/http.bench.ts\` (run \`scripts/bench.sh bench/http/http.bench.ts\`); this
file is rewritten by every run.

${machine.join("\n")}

Servers, each confined to one CPU: nginx (one worker, \`master_process off\`, \`return 200\`,
access log off), Bun.serve (\`bench/http/bun-hello.ts\`) and Shoal
(\`examples/http-hello/main.ts --smp 1 --overprovisioned\`: one shard, posix stack, no
busy-polling). Every one answers GET / with "Hello, World!" as text/plain (header sets differ a
little: Bun.serve and nginx add Date, nginx adds Connection: keep-alive). Load: wrk, keep-alive
connections; "× 16" pipelines 16 requests per write (a Lua script; wrk then records one latency
per batch, so p99 is shown for the unpipelined scenarios only). Server CPU is the whole
process's utime + stime (/proc/<pid>/stat) over wrk's run, divided by the requests answered.
Median of ${rounds} rounds of ${seconds} s after one unmeasured 2 s pass per server and scenario;
rounds interleave the servers, rotating their order.

${lines.join("\n")}

Shoal relative to each peer (CPU per request and p99: lower is better; requests/s: higher is better).

${ratios.join("\n")}
`;
writeResults(join(import.meta.dir, "RESULTS-http.md"), doc, "http.bench.ts");
