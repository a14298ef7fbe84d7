/**
 * Review of the per-shard scheduler and loop: a task's error that cannot be inspected, a stall
 * reporter that throws, the credit of a group created after the default group ran alone, and a
 * failed kernel enter between the sleep hooks. Each runs in a child process (uncaught
 * exceptions fail a bun:test test; a group's history is per shard).
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";

const fixtures = join(import.meta.dir, "fixtures");

/** Runs a fixture in a child bun; its last stdout line is JSON. */
function runFixture(name: string, timeoutMs = 30_000): { exitCode: number | null; result: any; output: string } {
  const out = Bun.spawnSync({
    cmd: [process.execPath, join(fixtures, name)],
    stdout: "pipe",
    stderr: "pipe",
    timeout: timeoutMs,
    env: { ...process.env, SHOAL_DEBUG_POISON: undefined },
  });
  const stdout = out.stdout.toString();
  const output = `${stdout}${out.stderr.toString()}`;
  let result: any;
  try {
    result = JSON.parse(stdout.trim().split("\n").pop() ?? "");
  } catch {
    throw new Error(`fixture ${name} printed no JSON (exit ${out.exitCode}):\n${output}`);
  }
  return { exitCode: out.exitCode, result, output };
}

describe("task errors", () => {
  test("a task throwing a value that throws when inspected: its error surfaces with the group, the loop sleeps and the process exits", () => {
    // The inspection's TypeError escaped the batch with the ready count one too high: the loop
    // then turned without end (hundreds of thousands of turns with nothing to do) and the
    // process never exited.
    const { exitCode, result, output } = runFixture("review22-hostile-throw.ts", 20_000);
    expect(result.ready, output).toBe(false);
    expect(result.idleTurns, output).toBeLessThan(1000);
    expect(result.ranAfter).toBe(1);
    expect(result.loopErrors).toBe(0);
    expect(result.seen).toEqual([
      { message: 'a task in scheduling group "main" threw a value that could not be inspected', group: "main", causeIsTheValue: true },
    ]);
    expect(exitCode, output).toBe(0);
  }, 30_000);
});

describe("stall reports", () => {
  test("a stall reporter that throws: its error surfaces, later work on the stalled group runs, and the loop keeps going after a stall in Bun's callbacks", () => {
    // Thrown through the batch, it left the group marked active with nothing queued: a task
    // queued on it later never started the stopped loop. Thrown from the check of Bun's
    // callbacks, it left the loop marked running: no sleep ever resolved again.
    const { exitCode, result, output } = runFixture("review22-report-throws.ts");
    expect(exitCode, output).toBe(0);
    expect(result.taskRan, output).toBe(true);
    expect(result.sleepResolved, output).toBe(true);
    expect(result.reports).toBeGreaterThanOrEqual(2);
    expect(result.uncaught.length).toBe(result.reports);
    for (const m of result.uncaught) expect(m).toBe("log sink down");
  }, 30_000);
});

describe("virtual runtime", () => {
  test("a group created after the default group ran on I/O continuations alone does not get that time as credit", () => {
    // ~600 ms of continuations charged to the default group by drainSettled left the shard's
    // minimum virtual runtime behind: the new 1000-share group ran ~1,200 chunks of 0.5 ms
    // before the default group's first. A waking group's catch-up is at most 100 task quotas.
    const { exitCode, result, output } = runFixture("review22-wake-credit.ts", 60_000);
    expect(exitCode, output).toBe(0);
    expect(result.singleAtStart).toBe(true);
    expect(result.hogBeforeMain, output).toBeGreaterThanOrEqual(0);
    expect(result.hogBeforeMain, output).toBeLessThan(250);
  }, 90_000);
});

describe("the loop", () => {
  test("an io_uring_enter that fails while sleeping still runs the sleep hooks' afterSleep", () => {
    // The turn threw between beforeSleep and afterSleep: the hook's "asleep" flag stayed set
    // until the next sleep, however long the shard then stayed busy.
    const { exitCode, result, output } = runFixture("review22-sleep-hook.ts");
    expect(exitCode, output).toBe(0);
    expect(result.failures).toBe(1);
    expect(result.uncaught).toEqual(["io_uring_enter failed: ENOMEM"]); // surfaced, as before
    expect(result.loopErrors).toBe(1);
    expect(result.before).toBeGreaterThan(1);
    expect(result.after, output).toBe(result.before);
  }, 30_000);
});
