/**
 * The process as operators see it, against stock memcached 1.6.18 side by side: signals, exit
 * codes and messages for bad command lines, which ports a command line listens on.
 */
import { describe, expect, test } from "bun:test";
import { spawn, type Subprocess } from "bun";
import net from "node:net";
import { b, dec, exchange, freePort, freeUdpPort } from "./lib/harness.ts";

type Which = "stock" | "ours";

function command(which: Which, args: string[]): string[] {
  return which === "stock"
    ? ["memcached", "-u", "root", ...args]
    : [process.execPath, "examples/memcached/main.ts", "-t", "1", ...args];
}

/** True once something accepts TCP connections on `port`; false if `proc` exits first. */
async function listening(proc: Subprocess, port: number, timeoutMs = 30_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) return false;
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return true;
    await Bun.sleep(50);
  }
  throw new Error(`nothing listened on ${port} within ${timeoutMs} ms`);
}

interface Run {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  stdout: Promise<string>;
  stderr: Promise<string>;
}

function launch(which: Which, args: string[]): Run {
  const proc = spawn(command(which, args), { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  return { proc, stdout: new Response(proc.stdout).text(), stderr: new Response(proc.stderr).text() };
}

/** Whether the server answers "version" on `port` now. */
async function answers(port: number): Promise<boolean> {
  try {
    const a = await exchange(port, b("version\r\n"), { until: b("\r\n"), idleMs: 2000 });
    return dec.decode(a.bytes).startsWith("VERSION ");
  } catch {
    return false;
  }
}

/** Starts `which` on a fresh port, waits until it listens. */
async function started(which: Which, extra: string[] = []): Promise<Run & { port: number }> {
  const port = await freePort();
  const run = launch(which, ["-l", "127.0.0.1", "-p", String(port), ...extra]);
  if (!(await listening(run.proc, port))) throw new Error(`${which} did not start: ${await run.stderr}`);
  return { ...run, port };
}

/** What a signal sequence does: alive after each, exit code, the lines printed. */
async function signalOutcome(which: Which, signals: NodeJS.Signals[], extra: string[] = []) {
  const run = await started(which, extra);
  const alive: boolean[] = [];
  try {
    for (const sig of signals) {
      run.proc.kill(sig);
      if (sig === "SIGHUP") alive.push(await answers(run.port));
    }
    const code = await run.proc.exited;
    return { alive, code, signal: run.proc.signalCode, stdout: await run.stdout, stderr: (await run.stderr).trim() };
  } finally {
    run.proc.kill("SIGKILL");
  }
}

describe("signals, as stock handles them", () => {
  test("SIGHUP is ignored: the server keeps serving (then SIGTERM: exit 0, nothing printed)", async () => {
    const stock = await signalOutcome("stock", ["SIGHUP", "SIGTERM"]);
    const ours = await signalOutcome("ours", ["SIGHUP", "SIGTERM"]);
    expect(stock).toEqual({ alive: [true], code: 0, signal: null, stdout: "", stderr: "" });
    expect(ours).toEqual(stock);
  }, 60_000);

  test('SIGUSR1 stops gracefully: exit 0, "Gracefully stopping" on stderr', async () => {
    const stock = await signalOutcome("stock", ["SIGUSR1"]);
    const ours = await signalOutcome("ours", ["SIGUSR1"]);
    expect(stock).toEqual({ alive: [], code: 0, signal: null, stdout: "", stderr: "Gracefully stopping" });
    expect(ours).toEqual(stock);
  }, 60_000);

  test("SIGTERM twice (as GNU timeout may send it): still exit 0, nothing printed", async () => {
    const stock = await signalOutcome("stock", ["SIGTERM", "SIGTERM"]);
    const ours = await signalOutcome("ours", ["SIGTERM", "SIGTERM"]);
    expect(stock).toEqual({ alive: [], code: 0, signal: null, stdout: "", stderr: "" });
    expect(ours).toEqual(stock);
  }, 60_000);

  test('SIGINT with -v: "Exiting normally" on stderr, exit 0', async () => {
    const stock = await signalOutcome("stock", ["SIGINT"], ["-v"]);
    const ours = await signalOutcome("ours", ["SIGINT"], ["-v"]);
    expect(stock.code).toBe(0);
    expect(stock.stderr.split("\n")).toContain("Exiting normally");
    expect(ours.code).toBe(0);
    // Ours logs more with -v (its shards' debug lines); the line is there.
    expect(ours.stderr.split("\n")).toContain("Exiting normally");
  }, 60_000);
});
