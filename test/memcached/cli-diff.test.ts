/**
 * The process as operators see it, against stock memcached 1.6.18 side by side: signals, exit
 * codes and messages for bad command lines, which ports a command line listens on.
 */
import { describe, expect, test } from "bun:test";
import { spawn, type Subprocess } from "bun";
import { accepts, b, dec, exchange, freePort, freeUdpPort } from "./lib/harness.ts";

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
    if (await accepts(port)) return true;
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

/** Exit code and stderr of a command line that stock refuses, or "started" if it ran. */
async function outcome(which: Which, args: string[], port: number): Promise<{ started: true } | { code: number; stderr: string }> {
  const run = launch(which, args);
  try {
    if (await listening(run.proc, port)) return { started: true };
    return { code: await run.proc.exited, stderr: (await run.stderr).replace(/^\S*memcached: /gm, "memcached: ") };
  } finally {
    run.proc.kill("SIGKILL");
    await run.proc.exited;
  }
}

describe("the command line, as stock reads it", () => {
  // Each: the arguments (PORT: a free port) and what both must do.
  const cases: [string[], string][] = [
    [["--foo"], "getopt"],
    [["-x"], "getopt"],
    [["-p"], "getopt"],
    [["--p", "1"], "getopt"],
    [["--port"], "getopt"],
    [["--enable-shutdown=1"], "getopt"],
    [["extra"], "runs"],
    [["--", "extra"], "runs"],
    [["-o", "hash_algorithm=jenkins"], "runs"],
    [["-o", "hash_algorithm=xxh3"], "runs"],
    [["-o", "hash_algorithm=xxhash"], "same"],
    [["-o", "hashpower"], "same"],
    [["-o", "idle_timeout"], "same"],
    [["-o", "tail_repair_time"], "same"],
    [["-o", "slab_automove_ratio"], "same"],
    [["-o", "slab_automove_ratio=abc"], "same"],
    [["-o", "slab_automove_ratio=1"], "runs"],
    [["-o", "slab_automove_ratio=1.5"], "same"],
    [["-o", "slab_automove_ratio=0.5x"], "runs"],
    [["-u", "nosuchuser"], "same"],
    [["-U", "-5"], "code"],
    [["-S"], "code"],
  ];
  for (const [args, expectation] of cases) {
    test(`${args.join(" ")}: ${expectation}`, async () => {
      const port = await freePort();
      const full = ["-l", "127.0.0.1", "-p", String(port), ...args];
      const [stock, ours] = [await outcome("stock", full, port), await outcome("ours", full, port)];
      if (expectation === "runs") {
        expect(stock).toEqual({ started: true });
        expect(ours).toEqual(stock);
      } else if (expectation === "code") {
        expect("code" in ours && "code" in stock && ours.code === stock.code).toBe(true);
      } else {
        expect(ours).toEqual(stock);
        if (expectation === "getopt") expect(stock).toMatchObject({ code: 1, stderr: expect.stringContaining('Illegal argument "?"') });
      }
    }, 60_000);
  }

  test("-p -5: exit 71 (stock fails to listen) and the port in the message", async () => {
    const ours = await outcome("ours", ["-p", "-5"], 0);
    const stock = await outcome("stock", ["-p", "-5"], 0);
    expect(stock).toMatchObject({ code: 71 });
    expect(ours).toMatchObject({ code: 71, stderr: expect.stringContaining("failed to listen on TCP port -5") });
  });

  test('as root, -u names a user that must exist: "can\'t find the user" and exit 67', async () => {
    if (process.getuid?.() !== 0) return;
    const ours = await outcome("ours", ["-p", "0", "-u", "nosuchuser"], 0);
    expect(ours).toEqual({ code: 67, stderr: "can't find the user nosuchuser to switch to\n" });
  });

  test("-U above 65535 (with -p): UDP on its low 16 bits, stats settings says the number given", async () => {
    const dgram = await import("node:dgram");
    for (const which of ["stock", "ours"] as const) {
      const port = await freePort();
      const udp = await freeUdpPort();
      const run = launch(which, ["-l", "127.0.0.1", "-p", String(port), "-U", String(udp + 65536)]);
      try {
        expect(await listening(run.proc, port)).toBe(true);
        const settings = await exchange(port, b("stats settings\r\n"), { until: b("END\r\n"), idleMs: 2000 });
        expect(dec.decode(settings.bytes)).toContain(`STAT udpport ${udp + 65536}\r\n`);
        const sock = dgram.createSocket("udp4");
        const got = new Promise<string>((resolve) => sock.on("message", (m) => resolve(dec.decode(m.subarray(8)))));
        let answer = "";
        for (let i = 0; i < 20 && answer === ""; i++) {
          sock.send(Buffer.concat([Buffer.from([0, 1, 0, 0, 0, 1, 0, 0]), Buffer.from("version\r\n")]), udp, "127.0.0.1");
          answer = await Promise.race([got, Bun.sleep(100).then(() => "")]);
        }
        sock.close();
        expect(answer).toStartWith("VERSION ");
      } finally {
        run.proc.kill("SIGKILL");
        await run.proc.exited;
      }
    }
  }, 60_000);

  test("-U N without -p: TCP listens on port N too", async () => {
    for (const which of ["stock", "ours"] as const) {
      const port = await freeUdpPort();
      const run = launch(which, ["-l", "127.0.0.1", "-U", String(port)]);
      try {
        expect(await listening(run.proc, port)).toBe(true);
        expect(await answers(port)).toBe(true);
      } finally {
        run.proc.kill("SIGKILL");
        await run.proc.exited;
      }
    }
  }, 60_000);
});

describe("-m beyond what one shard holds", () => {
  test("refused in one line (no stack trace), naming the per-shard limit; the limit itself starts", async () => {
    const big = launch("ours", ["-l", "127.0.0.1", "-p", "0", "-m", "8192"]);
    expect(await big.proc.exited).toBe(64);
    const err = await big.stderr;
    expect(err).toBe("-m 8192 with -t 1 gives each shard 8192 MB; at most 4055 MB per shard here (one shard's memory is one view of at most 4 GiB): use more shards (-t 3 or more)\n");
    const port = await freePort();
    const ok = launch("ours", ["-l", "127.0.0.1", "-p", String(port), "-m", "4055"]);
    try {
      expect(await listening(ok.proc, port)).toBe(true);
    } finally {
      ok.proc.kill("SIGKILL");
      await ok.proc.exited;
    }
  }, 60_000);
});
