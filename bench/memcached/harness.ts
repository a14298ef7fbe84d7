/**
 * What the memcached benchmarks share: building mcload, starting stock memcached and ours
 * (optionally confined to a CPU set with taskset), one measured run with the server's CPU time
 * from /proc, interleaved comparisons with medians, and the result table.
 *
 * Used by memcached.bench.ts (the comparison: server and load generator share every
 * core) and scaling.bench.ts (server and load generator on disjoint CPUs, 1..N shards).
 */
import { spawn, spawnSync, type Subprocess } from "bun";
import { mkdirSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import net from "node:net";

export const ROOT = new URL("../..", import.meta.url).pathname;
export const OUT_DIR = `${ROOT}zig-out/bench`;
export const MCLOAD = `${OUT_DIR}/mcload`;
export const CPUS = availableParallelism();
export const KEYS = 100_000;
const TICK = 100; // clock ticks per second (/proc/<pid>/stat)

/** Builds the load generator (bench/memcached/mcload.c) with the project's Zig. */
export function build(): void {
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

/** "0-3,8" style list for taskset. */
export function cpuList(cpus: readonly number[]): string {
  return cpus.join(",");
}

export interface Server {
  name: string;
  port: number;
  proc: Subprocess;
  /** The process whose CPU we count (ours: the Bun process, all shards are its threads). */
  pid: number;
  /** Shards / worker threads. */
  threads: number;
  /** CPUs the server is confined to (undefined: every CPU). */
  cpus?: readonly number[];
}

export interface ServerOptions {
  env?: Record<string, string>;
  /** Confine the whole process to these CPUs (taskset); ours then pins one shard per CPU. */
  cpus?: readonly number[];
  /** Ours: the checkout whose examples/memcached runs (default: this one), ending in "/". */
  root?: string;
}

export async function startServer(kind: "stock" | "ours", threads: number, options: ServerOptions = {}): Promise<Server> {
  const port = await freePort();
  const cmd =
    kind === "stock"
      ? ["memcached", "-u", "root", "-l", "127.0.0.1", "-p", String(port), "-U", "0", "-t", String(threads), "-m", "1024", "-c", "4096"]
      : [process.execPath, `${options.root ?? ROOT}examples/memcached/main.ts`, "-l", "127.0.0.1", "-p", String(port), "-t", String(threads), "-m", "1024", "-c", "4096"];
  // taskset execs the server: the pid stays the server's.
  const args = options.cpus !== undefined ? ["taskset", "-c", cpuList(options.cpus), ...cmd] : cmd;
  const proc = spawn(args, { stdout: "ignore", stderr: "ignore", cwd: options.root ?? ROOT, env: { ...process.env, ...options.env } });
  await waitPort(port);
  return { name: kind, port, proc, pid: proc.pid, threads, cpus: options.cpus };
}

export async function stopServer(s: Server): Promise<void> {
  s.proc.kill("SIGTERM");
  await s.proc.exited;
}

function cpuTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]); // utime + stime
}

export interface Sample {
  opsPerS: number;
  serverUsPerOp: number;
  serverCores: number;
  loadgenCores: number;
  p50: number;
  p99: number;
  p999: number;
}

/** How the load is generated. */
export interface Load {
  conns: number;
  /** Load generator threads (mcload -t, memcaslap -T). */
  threads: number;
  /** CPUs the load generator is confined to (undefined: every CPU). */
  cpus?: readonly number[];
  seconds: number;
  warmup: number;
}

/** One measured run: starts the generator, samples the server's CPU over the measured window. */
export async function measure(server: Server, gen: "mcload" | "memcaslap", extra: readonly string[], load: Load): Promise<Sample> {
  const { conns, threads, seconds, warmup } = load;
  const cmd =
    gen === "mcload"
      ? [MCLOAD, "-s", `127.0.0.1:${server.port}`, "-c", String(conns), "-t", String(threads), "-k", String(KEYS), "-W", String(warmup), "-D", String(seconds), "-j", ...extra]
      : ["memcaslap", "-s", `127.0.0.1:${server.port}`, "-T", String(threads), "-c", String(conns), "-X", "64", "-t", `${seconds + warmup}s`, ...extra];
  const args = load.cpus !== undefined ? ["taskset", "-c", cpuList(load.cpus), ...cmd] : cmd;
  const proc = spawn(args, { stdout: "pipe", stderr: "pipe" });
  await Bun.sleep(warmup * 1000);
  const t0 = performance.now();
  const c0 = cpuTicks(server.pid);
  await Bun.sleep(seconds * 1000 - 100);
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
    const line = out.trim().split("\n").pop();
    if (line === undefined || line === "") throw new Error(`${server.name}: mcload printed nothing (exit ${proc.exitCode})`);
    const j = JSON.parse(line) as { ops_per_s: number; p50_us: number; p99_us: number; p999_us: number; errors: number; unanswered?: number };
    if (j.errors > 0) throw new Error(`${server.name}: ${j.errors} errors`);
    // Requests of the measured window still unanswered 5 s after it: the server stalled or hung.
    if ((j.unanswered ?? 0) > 0) throw new Error(`${server.name}: ${j.unanswered} requests unanswered 5 s after the run`);
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
    loadgenCores: genCpuS / (seconds + warmup),
    p50,
    p99,
    p999,
  };
}

export const median = (xs: readonly number[]): number => {
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

/** Interleaved runs of one workload on several servers (the order flips every run); medians per server. */
export async function compare(servers: Server[], gen: "mcload" | "memcaslap", extra: readonly string[], load: Load, runs: number): Promise<Sample[]> {
  const all: Sample[][] = servers.map(() => []);
  for (let r = 0; r < runs; r++) {
    const order = r % 2 === 0 ? servers.map((_, i) => i) : servers.map((_, i) => servers.length - 1 - i);
    for (const i of order) all[i]!.push(await measure(servers[i]!, gen, extra, load));
  }
  return all.map(summarize);
}

/** Which side ran at >= 90% of the CPUs it had. */
function saturation(s: Sample, server: Server, load: Load): string {
  const serverCpus = server.cpus?.length ?? CPUS;
  // A server may use at most its threads' worth of CPU (and at most its CPU set).
  const serverMax = Math.min(server.threads, serverCpus);
  const genMax = Math.min(load.threads, load.cpus?.length ?? CPUS);
  const used = new Set([...(server.cpus ?? range(CPUS)), ...(load.cpus ?? range(CPUS))]).size;
  const parts = [
    s.serverCores >= 0.9 * serverMax ? "server" : "",
    s.loadgenCores >= 0.9 * genMax ? "load generator" : "",
    s.serverCores + s.loadgenCores >= 0.9 * used ? (used === CPUS ? "machine (all cores busy)" : "all of their cores busy") : "",
  ];
  return parts.filter(Boolean).join(", ") || "none";
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

export const HEADER =
  "| server | ops/s | vs stock | server CPU µs/op | vs stock | server cores | load-gen cores | p50 / p99 / p99.9 µs | p99 vs stock | saturated |\n" +
  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|";

export function row(label: string, s: Sample, server: Server, load: Load, ref?: Sample, latency = false): string {
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
    saturation(s, server, load),
  ];
  return `| ${cells.join(" | ")} |`;
}

/** Sets every key once, then runs 2 s of load unmeasured (JIT warm-up, connection setup). */
export async function prefill(s: Server, load: Load): Promise<void> {
  const pin = load.cpus !== undefined ? ["taskset", "-c", cpuList(load.cpus)] : [];
  const r = spawnSync([...pin, MCLOAD, "-s", `127.0.0.1:${s.port}`, "-c", "1", "-k", String(KEYS), "-P", "-W", "0", "-D", "0.2"], { stdout: "pipe" });
  if (r.exitCode !== 0) throw new Error(`prefill of ${s.name} failed`);
  const w = spawnSync([...pin, MCLOAD, "-s", `127.0.0.1:${s.port}`, "-c", String(load.conns), "-t", String(load.threads), "-k", String(KEYS), "-W", "0", "-D", "2", "-d", "4"], { stdout: "pipe" });
  if (w.exitCode !== 0) throw new Error(`warm-up of ${s.name} failed`);
}

/** Collects what is printed, to write it to a file at the end. */
export class Report {
  readonly lines: string[] = [];
  log(s = ""): void {
    console.log(s);
    this.lines.push(s);
  }
}

export function machineLine(): string {
  const cpuModel = /model name\s*:\s*(.*)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "?";
  return `Machine: ${CPUS} CPUs (${cpuModel}), Linux ${spawnSync(["uname", "-r"]).stdout.toString().trim()}, Bun ${Bun.version}.`;
}
