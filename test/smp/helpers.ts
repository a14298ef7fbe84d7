/** Runs fixture apps in their own processes (each starts a supervisor and shard Workers). */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const BUN = fileURLToPath(new URL("../../node_modules/.bin/bun", import.meta.url));

/** The CPUs this process may use, ascending (the tests pick --overprovisioned when there are too few). */
export const CPU_LIST: number[] = (() => {
  try {
    const text = readFileSync("/proc/self/status", "utf8");
    const m = /Cpus_allowed_list:\s*(\S+)/.exec(text);
    if (m) {
      const cpus: number[] = [];
      for (const part of m[1]!.split(",")) {
        const [a, b] = part.split("-").map(Number);
        for (let c = a!; c <= (b ?? a!); c++) cpus.push(c);
      }
      return cpus;
    }
  } catch {
    // fall through
  }
  return Array.from({ length: navigator.hardwareConcurrency }, (_, i) => i);
})();

/** How many CPUs this process may use. */
export const CPUS = CPU_LIST.length;

export interface AppRun {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** The JSON printed after "RESULT " on stdout, if any. */
  result: any;
  /** Wall time of the run in ms. */
  ms: number;
}

export interface RunOptions {
  env?: Record<string, string | undefined>;
  timeoutMs?: number;
  /** Called with the running process (e.g. to send a signal once it printed something). */
  onStdout?: (text: string, proc: ReturnType<typeof Bun.spawn>) => void;
}

/** Runs `bun <fixture> ...args` and collects its output; kills it after timeoutMs. */
export async function runApp(fixture: string, args: string[], opts: RunOptions = {}): Promise<AppRun> {
  const file = fileURLToPath(new URL(fixture, import.meta.url));
  const started = performance.now();
  const proc = Bun.spawn([BUN, file, ...args], {
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, ...opts.env },
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), opts.timeoutMs ?? 60_000);
  let stdout = "";
  const readOut = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of proc.stdout as ReadableStream<Uint8Array>) {
      const text = decoder.decode(chunk, { stream: true });
      stdout += text;
      opts.onStdout?.(stdout, proc);
    }
  })();
  const stderrText = new Response(proc.stderr as ReadableStream<Uint8Array>).text();
  const code = await proc.exited;
  clearTimeout(timer);
  await readOut;
  const stderr = await stderrText;
  const line = stdout.split("\n").find((l) => l.startsWith("RESULT "));
  return {
    code,
    signal: proc.signalCode === null ? null : String(proc.signalCode),
    stdout,
    stderr,
    result: line ? JSON.parse(line.slice(7)) : undefined,
    ms: performance.now() - started,
  };
}

/** Shoal options for `n` shards on this machine: pinned when there are enough CPUs. */
export function smpArgs(n: number): string[] {
  return n <= CPUS ? ["--smp", String(n)] : ["--smp", String(n), "--overprovisioned"];
}

/** Prints a JSON result line for the test to read (fixtures call this). */
export function printResult(value: unknown): void {
  process.stdout.write(`RESULT ${JSON.stringify(value)}\n`);
}
