/**
 * Pieces the macro benchmarks against real peers share (bench/net/echo.bench.ts,
 * bench/http/http.bench.ts): running a command, starting a server pinned to CPUs and waiting
 * until it listens, medians, and writing a results file that keeps its hand-written notes.
 */
import { spawn, spawnSync, type Subprocess } from "bun";
import { readFileSync, writeFileSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { join, relative } from "node:path";

/** The repository root (commands run there). */
export const root = join(import.meta.dir, "..", "..");

/** Runs `cmd` in the repository root; its stdout, trimmed. Throws with its output if it fails. */
export function sh(cmd: string[], what: string): string {
  const r = spawnSync(cmd, { cwd: root, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${what} failed: ${r.stderr.toString()}${r.stdout.toString()}`);
  return r.stdout.toString().trim();
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect({ host: "127.0.0.1", port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on("error", () => resolve(false));
  });
}

/** A server under test: what to run, and the port it listens on. */
export interface PeerServer {
  name: string;
  port: number;
  cmd: string[];
  proc?: Subprocess;
}

/** Starts `s` confined to `cpus` (taskset) and waits until it accepts on 127.0.0.1:port (20 s at most). */
export async function startServer(s: PeerServer, cpus: string): Promise<void> {
  s.proc = spawn(["taskset", "-c", cpus, ...s.cmd], { cwd: root, stdout: "ignore", stderr: "inherit" });
  const deadline = performance.now() + 20_000;
  while (!(await portOpen(s.port))) {
    if (performance.now() > deadline || s.proc.exitCode !== null) throw new Error(`${s.name} did not start listening on ${s.port}`);
    await Bun.sleep(50);
  }
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/**
 * Writes `doc` to `path`, keeping what follows the marker line `<!-- notes: kept by <bench> -->`
 * in the old file (hand-written notes survive a re-run).
 */
export function writeResults(path: string, doc: string, bench: string): void {
  const marker = `<!-- notes: kept by ${bench} -->`;
  let notes = `\n${marker}\n`;
  try {
    const old = readFileSync(path, "utf8");
    const at = old.indexOf(marker);
    if (at >= 0) notes = `\n${old.slice(at)}`;
  } catch {
    // First run: no notes yet.
  }
  writeFileSync(path, doc + notes);
  console.log(`\nwrote ${relative(root, path)}`);
}
