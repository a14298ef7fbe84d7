/**
 * Shard faults and the shutdown around them, each in its own app process (fixtures/faults.ts):
 * the first uncaught error is the reported cause; a service still starting when the shutdown
 * stops services is stopped, newest first, and no service starts after that; a shard whose
 * thread is stuck is named when the shutdown gives up on it.
 */
import { describe, expect, test } from "bun:test";
import { runApp, smpArgs } from "./helpers.ts";

const FIXTURE = "./fixtures/faults.ts";

/** The lines of `stdout` that start with `prefix`, in order. */
function lines(stdout: string, prefix: string): string[] {
  return stdout.split("\n").filter((l) => l.startsWith(prefix));
}

/** Runs `scenario` on 2 shards (default: a 1 s shutdown timeout) and sends SIGTERM once it prints READY. */
async function stopOnReady(scenario: string, env: Record<string, string> = { FAULTS_SHUTDOWN_MS: "1000" }) {
  let sent = false;
  const run = await runApp(FIXTURE, [...smpArgs(2), "--scenario", scenario], {
    timeoutMs: 30_000,
    env,
    onStdout: (text, proc) => {
      if (!sent && text.includes("READY")) {
        sent = true;
        proc.kill("SIGTERM");
      }
    },
  });
  return { run, sent };
}

describe("a shard that fails", () => {
  test("an error that follows the first on the way out is logged; the first stays the reported cause", async () => {
    const run = await runApp(FIXTURE, [...smpArgs(2), "--scenario", "crash-twice"], { timeoutMs: 30_000 });
    expect(run.code).toBe(1);
    expect(run.stdout).toContain("PENDING ERR_SMP_SHARD_GONE");
    // The second error replaced the first in the report: the cause was lost.
    expect(run.stderr).toContain("faults: shard 1 failed: Error: the first error on shard 1");
    expect(run.stderr).not.toContain("failed: Error: a second error");
    expect(run.stderr).toContain("another uncaught error on shard 1 after the first, while it exits: Error: a second error");
  });

  test("a shard stuck in a busy loop: the shutdown gives up after its timeout, names that shard, exit 1", async () => {
    const { run, sent } = await stopOnReady("busy");
    expect(sent).toBe(true);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("shutdown did not finish within 1000 ms");
    // Not only "still stopping services on shard 0" (the coordinator, which waits for shard 1).
    expect(run.stderr).toContain("; shard 1 does not answer: its thread is blocked (a busy loop or a blocking call?); exiting");
  });

  test("a stop() that never settles: the shutdown gives up after its timeout, exit 1; the shard still answers, so none is named blocked", async () => {
    const { run, sent } = await stopOnReady("hang-stop");
    expect(sent).toBe(true);
    expect(run.code).toBe(1);
    expect(run.stdout).toContain("STOPPED-A 0");
    expect(run.stderr).toContain("shutdown did not finish within 1000 ms (still stopping services on shard 0); exiting");
    expect(run.stderr).not.toContain("does not answer");
  });

  test("a shard stuck in a busy loop while its module loads: one message once the start timeout passed, exit 1", async () => {
    const run = await runApp(FIXTURE, [...smpArgs(2), "--scenario", "busy-start"], { timeoutMs: 30_000, env: { FAULTS_START_MS: "1000" } });
    expect(run.code).toBe(1);
    expect(run.stderr.trim()).toBe("faults: shard 1 failed to start: did not report ready within 1000 ms");
  });
});

describe("the shutdown and start()", () => {
  test("a service still starting is stopped before older ones, and a start() after the services' stop began is refused", async () => {
    // main is past its grace at once: the shutdown stops services while B still starts.
    const { run, sent } = await stopOnReady("late-start", { FAULTS_GRACE_MS: "1", FAULTS_B_MS: "1000" });
    expect(sent).toBe(true);
    if (run.code !== 0) console.log(run.stdout, run.stderr);
    expect(run.code).toBe(0);
    // C started after the one pass over running services was never stopped (exit 0 all the same).
    expect(run.stdout).toContain('C ServiceStoppedError: service "C" was not started: the application is shutting down');
    expect(lines(run.stdout, "STARTED-C")).toEqual([]);
    for (const name of ["A", "B"]) {
      expect(lines(run.stdout, `STARTED-${name} `).sort()).toEqual([`STARTED-${name} 0`, `STARTED-${name} 1`]);
      expect(lines(run.stdout, `STOPPED-${name} `).sort()).toEqual([`STOPPED-${name} 0`, `STOPPED-${name} 1`]);
    }
    // Newest first: B (still starting when the stop began) before A, on every shard.
    const out = run.stdout.split("\n");
    const lastB = Math.max(...out.map((l, i) => (l.startsWith("STOPPED-B ") ? i : -1)));
    const firstA = out.findIndex((l) => l.startsWith("STOPPED-A "));
    expect(lastB).toBeLessThan(firstA);
  });
});
