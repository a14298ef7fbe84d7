/**
 * The app's shutdown stops every instance that is running on any shard, including those of a
 * service whose start() or stop() is still under way while shard 0's own instance is idle
 * already: the shutdown skipped them (it looked at shard 0's instance only) and the process
 * exited before their stop() ran.
 */
import { describe, expect, test } from "bun:test";
import { runApp, smpArgs } from "./helpers.ts";

const FIXTURE = "./fixtures/shutdown-pending.ts";
const lines = (stdout: string, prefix: string) =>
  stdout
    .split("\n")
    .filter((l) => l.startsWith(prefix))
    .map((l) => l.slice(prefix.length))
    .sort();

describe("shutdown while a lifecycle operation is under way", () => {
  test("a stop() main did not await: shard 1's slower stop() finishes before the app exits", async () => {
    const run = await runApp(FIXTURE, [...smpArgs(2), "--scenario", "pending-stop"], { timeoutMs: 30_000 });
    expect(run.stdout).toContain("MAIN-RETURNS");
    expect(lines(run.stdout, "SLOW-STOPPED ")).toEqual(["0", "1"]);
    expect(run.code).toBe(0);
  });

  test("a start() that failed on shard 0 while shard 1's instance was being built: that instance is stopped before the app exits", async () => {
    const run = await runApp(FIXTURE, [...smpArgs(2), "--scenario", "failed-start"], { timeoutMs: 30_000 });
    expect(run.stdout).toContain("MAIN-RETURNS");
    expect(run.stdout).toContain("START-FAILED deliberate start failure on shard 0");
    expect(lines(run.stdout, "FLAKY-STOPPED ")).toEqual(["1"]);
    expect(run.code).toBe(0);
  });
});
