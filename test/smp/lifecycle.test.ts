/**
 * Stopping, crashing and signals, each in its own app process: stop() during in-flight calls
 * completes or refuses them clearly; a shard crash is reported with its id and cause and the
 * process exits non-zero after the others stopped; SIGTERM/SIGINT exit 0 after every stop().
 */
import { describe, expect, test } from "bun:test";
import { runApp, smpArgs } from "./helpers.ts";

const FIXTURE = "./fixtures/lifecycle.ts";

function stoppedLines(stdout: string, prefix = "STOPPED "): number[] {
  return stdout
    .split("\n")
    .filter((l) => l.startsWith(prefix))
    .map((l) => Number(l.slice(prefix.length).split(" ")[0]))
    .sort((a, b) => a - b);
}

describe("stop() during in-flight calls", () => {
  test("running calls complete, later ones fail with ServiceStoppedError, nothing hangs", async () => {
    const run = await runApp(FIXTURE, [...smpArgs(3), "--scenario", "stop-inflight"], { timeoutMs: 30_000 });
    if (run.code !== 0) console.log(run.stdout, run.stderr);
    expect(run.code).toBe(0);
    const { calls, counts, after } = run.result;
    expect(counts.ok).toBeGreaterThan(0);
    expect(counts.ERR_SERVICE_STOPPED).toBeGreaterThan(0);
    expect(counts.ok + counts.ERR_SERVICE_STOPPED).toBe(calls); // nothing else, nothing lost
    expect(after).toBe("ServiceStoppedError/ERR_SERVICE_STOPPED");
    expect(stoppedLines(run.stdout)).toEqual([0, 1, 2]);
  });
});

describe("start() and stop() from different shards", () => {
  test("they run one at a time (coordinated by shard 0): the service runs on every shard or on none", async () => {
    const run = await runApp(FIXTURE, [...smpArgs(3), "--scenario", "races"], { timeoutMs: 30_000 });
    if (run.code !== 0) console.log(run.stdout, run.stderr);
    expect(run.code).toBe(0);
    const { rounds, duringStart } = run.result;
    for (const r of rounds) {
      expect(r.start).toBe("ok");
      expect(r.stop).toBe("ok");
      // A stop that came first stopped nothing; the start after it left every shard running.
      const all = r.running.every((x: boolean) => x);
      const none = r.running.every((x: boolean) => !x);
      expect(all || none).toBe(true);
      expect(r.ping).toBe(all ? "0,1,2" : "ERR_SERVICE_STOPPED");
    }
    expect(duringStart).toEqual({ start: "ok", stop: "ok", running: [false, false, false] });
  });
});

describe("a failing stop()", () => {
  test("is reported with the shard it failed on (shard 0 stops them all) and the exit code is 1", async () => {
    const run = await runApp(FIXTURE, [...smpArgs(2), "--scenario", "main-returns", "--code", "0"], {
      timeoutMs: 30_000,
      env: { LIFECYCLE_FAIL_STOP_SHARD: "1" },
    });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("shard 1: a service failed to stop: Error: stop failed on shard 1 (its stack is in the log above)");
    expect(run.stderr).not.toContain("shard 0: a service failed to stop");
    // The stack once, in the shard's log line, not again in the summary.
    expect(run.stderr.match(/at stop \(.*lifecycle\.ts:\d+:\d+\)/g)?.length).toBe(1);
  });
});

describe("signals", () => {
  test("the first SIGTERM while a shutdown main began is running only waits for it: main's exit code stands", async () => {
    let sent = false;
    const run = await runApp(FIXTURE, [...smpArgs(2), "--scenario", "main-returns", "--code", "3"], {
      timeoutMs: 30_000,
      env: { LIFECYCLE_STOP_MS: "400" },
      onStdout: (text, proc) => {
        if (!sent && text.includes("STOPPING")) {
          sent = true;
          proc.kill("SIGTERM");
        }
      },
    });
    expect(sent).toBe(true);
    expect(run.stderr).not.toContain("again");
    expect(run.code).toBe(3);
    expect(stoppedLines(run.stdout)).toEqual([0, 1]);
  });

  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    test(`${signal}: main sees the shutdown signal, every service's stop() runs on every shard, exit 0`, async () => {
      let sent = false;
      const run = await runApp(FIXTURE, [...smpArgs(3), "--scenario", "serve"], {
        timeoutMs: 30_000,
        onStdout: (text, proc) => {
          if (!sent && text.includes("READY")) {
            sent = true;
            proc.kill(signal);
          }
        },
      });
      if (run.code !== 0) console.log(run.stdout, run.stderr);
      expect(run.code).toBe(0);
      expect(run.stdout).toContain("MAIN-SAW-SIGNAL");
      expect(stoppedLines(run.stdout)).toEqual([0, 1, 2]);
      expect(stoppedLines(run.stdout, "STOPPED-OTHER ")).toEqual([0, 1, 2]);
      // Newest service first: every Worker instance stopped before any Other instance.
      const lines = run.stdout.split("\n");
      const lastWorker = Math.max(...lines.map((l, i) => (l.startsWith("STOPPED ") ? i : -1)));
      const firstOther = lines.findIndex((l) => l.startsWith("STOPPED-OTHER"));
      expect(lastWorker).toBeLessThan(firstOther);
      // The call still running at the signal finished before its instance stopped.
      for (const l of lines.filter((x) => x.startsWith("STOPPED "))) expect(l).toEndWith("after 1 calls");
    });
  }
});

describe("a shard that fails", () => {
  for (const how of ["throw", "reject", "exit"] as const) {
    test(`shard 2 fails (${how}): reported with id and cause, pending calls fail, others stop, exit 1`, async () => {
      const run = await runApp(FIXTURE, [...smpArgs(3), "--scenario", "crash", "--crash-shard", "2", "--how", how], { timeoutMs: 30_000 });
      expect(run.code).toBe(1);
      expect(run.stderr).toContain("shard 2 failed: ");
      if (how === "throw") expect(run.stderr).toContain("Error: deliberate crash on shard 2");
      if (how === "reject") expect(run.stderr).toContain("TypeError: deliberate rejection on shard 2");
      if (how === "exit") expect(run.stderr).toContain("exited unexpectedly with code 7");
      expect(run.stdout).toContain("PENDING ERR_SMP_SHARD_GONE");
      expect(stoppedLines(run.stdout)).toEqual([0, 1]);
    });
  }

  test("a shard that dies after handing a lent buffer on: the owner does not recycle it under the third shard's views", async () => {
    // Recycling what was lent to a dead shard unmapped memory shard 2 still read: SIGSEGV of
    // the whole process instead of the orderly "shard failed" shutdown.
    const run = await runApp(FIXTURE, [...smpArgs(3), "--scenario", "chain"], { timeoutMs: 30_000 });
    expect(run.signal, run.stderr).toBeNull();
    expect(run.stderr).toContain("shard 1 failed: ");
    expect(run.stdout).toContain(`CHAIN ${1 << 20} ${7 * 256}`);
  });

  test("shard 0 (main's shard) fails: the others stop their own services, exit 1", async () => {
    const run = await runApp(FIXTURE, [...smpArgs(3), "--scenario", "crash", "--crash-shard", "0"], { timeoutMs: 30_000 });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("shard 0 failed: Error: deliberate crash on shard 0");
    expect(stoppedLines(run.stdout)).toEqual([1, 2]);
  });

  test("main throws: reported, services stopped, exit 1", async () => {
    const run = await runApp(FIXTURE, [...smpArgs(2), "--scenario", "main-throws"], { timeoutMs: 30_000 });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("main failed on shard 0: RangeError: main gave up");
    // Its cause and the cause's inner errors are reported too (a null-prototype one described).
    expect(run.stderr).toContain("Caused by: AggregateError: two things failed");
    expect(run.stderr).toContain("[0] Error: first inner");
    expect(run.stderr).toContain("[1] Error: a thrown object");
    expect(stoppedLines(run.stdout)).toEqual([0, 1]);
  });

  test("main returns a number: that is the exit code, after services stopped", async () => {
    const run = await runApp(FIXTURE, [...smpArgs(2), "--scenario", "main-returns", "--code", "3"], { timeoutMs: 30_000 });
    expect(run.code).toBe(3);
    expect(stoppedLines(run.stdout)).toEqual([0, 1]);
  });

  test("main returns a bigint or throws a plain object: both named as they are", async () => {
    const big = await runApp(FIXTURE, [...smpArgs(2), "--scenario", "main-returns-bigint"], { timeoutMs: 30_000 });
    expect(big.code).toBe(1);
    expect(big.stderr).toContain("main returned 5n, not an exit code 0..255");
    const obj = await runApp(FIXTURE, [...smpArgs(2), "--scenario", "main-throws-object"], { timeoutMs: 30_000 });
    expect(obj.code).toBe(1);
    expect(obj.stderr).toContain("a thrown object: { why: 'plain', n: 1 }");
  });

  for (const code of ["-1", "256"]) {
    test(`main returns ${code}, which is no exit code: reported, exit 1 (the kernel's low 8 bits would say 0)`, async () => {
      const run = await runApp(FIXTURE, [...smpArgs(2), "--scenario", "main-returns", `--code=${code}`], { timeoutMs: 30_000 });
      expect(run.code).toBe(1);
      expect(run.stderr).toContain(`main returned ${code}, not an exit code 0..255`);
    });
  }
});

describe("a shard that fails to start", () => {
  test("an exception while shard 1 loads the module: one clear message, exit 1, no hang", async () => {
    const run = await runApp(FIXTURE, [...smpArgs(3), "--fail-start-shard", "1"], { timeoutMs: 30_000 });
    expect(run.code).toBe(1);
    expect(run.stderr).toStartWith("lifecycle: shard 1 failed to start: deliberate start failure on shard 1");
    expect(run.stderr.split("\n").filter((l) => l.includes("failed to start"))).toHaveLength(1);
    expect(run.stdout).not.toContain("STOPPED");
  });

  test("shards that register different handlers are refused", async () => {
    const run = await runApp(FIXTURE, [...smpArgs(2), "--mismatch"], { timeoutMs: 30_000 });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("shard 1 failed to start: shard 1 registered different handlers or services than shard 0");
    expect(run.stderr).toContain("only-on-shard-1");
  });

  test("a missing native library: one clear message before any shard starts", async () => {
    const run = await runApp(FIXTURE, smpArgs(2), { env: { SHOAL_LIB: "/nonexistent/libshoal.so" }, timeoutMs: 30_000 });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("Shoal's native library is missing at /nonexistent/libshoal.so");
    expect(run.stderr.trim().split("\n")).toHaveLength(1);
  });
});
