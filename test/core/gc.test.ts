/**
 * The loop's full collections (LoopOptions.fullGcGrowthMiB). In a Worker whose heap reports
 * large external buffers, JavaScriptCore can keep to eden collections, and what they promote is
 * never collected: a memcached shard grew ~1.3 MiB/s under load, to 858 MiB in 10 minutes with
 * -m 32 (test/soak/memcached-load). The loop bounds that growth by running a full collection.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { configureLoop, InvalidArgumentError } from "../../src/index.ts";

/** Runs fixtures/<name> as a child process with `env` added; its last stdout line, parsed. */
function runFixture<T>(name: string, env: Record<string, string>): T {
  const out = Bun.spawnSync({
    cmd: [process.execPath, join(import.meta.dir, "fixtures", name)],
    env: { ...process.env, ...env },
    stdout: "pipe",
    stderr: "pipe",
    timeout: 60_000,
  });
  const text = out.stdout.toString().trim();
  expect(out.exitCode, `${text}\n${out.stderr.toString()}`).toBe(0);
  return JSON.parse(text.split("\n").pop()!) as T;
}

function run(fullGcMiB: number, garbageMiB: number, poolChurnMiB = 0): { startMiB: number; maxMiB: number; fullGcs: number; fullGcMs: number } {
  return runFixture("gc-growth.ts", {
    SHOAL_FULL_GC_MIB: String(fullGcMiB),
    SHOAL_GARBAGE_MIB: String(garbageMiB),
    SHOAL_POOL_CHURN_MIB: String(poolChurnMiB),
  });
}

describe("full garbage collections from the loop", () => {
  test("promoted garbage in a Worker is collected once the heap grew by fullGcGrowthMiB", () => {
    const r = run(16, 256);
    // 256 MiB of garbage went through the heap; it never held much more than the threshold
    // (plus what arrives between two looks at the heap, 2 MiB a round, 17 rounds a look).
    expect(r.fullGcs).toBeGreaterThanOrEqual(1);
    expect(r.maxMiB - r.startMiB).toBeLessThan(16 + 48);
  }, 90_000);

  test("a long-lived native pool made after the first look (a first listen()) is not growth: no full collection for it", () => {
    const r = runFixture<{ grownMiB: number; fullGcs: number }>("gc-pool.ts", { SHOAL_POOL_CASE: "made" });
    expect(r.grownMiB).toBeGreaterThan(100); // the engine counts the pool's view in the heap
    expect(r.fullGcs).toBe(0);
  }, 90_000);

  test("pools made and closed all along (as file streams make theirs) do not keep the collections from running", () => {
    const r = run(16, 256, 4);
    expect(r.fullGcs).toBeGreaterThanOrEqual(1);
    expect(r.maxMiB - r.startMiB).toBeLessThan(16 + 48 + 64);
  }, 90_000);

  for (const [kase, what] of [
    ["create", "made (looked at before a collection counted its view)"],
    ["close", "closed (its detached view counted until a full collection)"],
  ] as const) {
    test(`a native pool just ${what} is not growth: no full collection for it`, () => {
      expect(runFixture<{ fullGcs: number }>("gc-pool.ts", { SHOAL_POOL_CASE: kase }).fullGcs).toBe(0);
    }, 90_000);
  }

  test("0 turns them off", () => {
    const r = run(0, 32);
    expect(r.fullGcs).toBe(0);
  }, 90_000);

  test("configureLoop refuses a negative, non-finite or non-number fullGcGrowthMiB", () => {
    for (const bad of [-1, Number.NaN, Infinity, "64" as unknown as number]) {
      expect(() => configureLoop({ fullGcGrowthMiB: bad })).toThrow(InvalidArgumentError);
    }
  });
});
