/** examples/sharded-counter runs on one and on several shards and counts every word once. */
import { expect, test } from "bun:test";
import { runApp, smpArgs } from "./helpers.ts";

for (const shards of [1, 3]) {
  test(`sharded-counter on ${shards} shard(s)`, async () => {
    const run = await runApp("../../examples/sharded-counter/main.ts", [...smpArgs(shards), "--words", "50000", "--top", "3"], { timeoutMs: 30_000 });
    if (run.code !== 0) console.log(run.stdout, run.stderr);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`words: 50000 (expected 50000), shards: ${shards}`);
    const perShard = [...run.stdout.matchAll(/shard (\d+): (\d+) words/g)].map((m) => Number(m[2]));
    expect(perShard).toHaveLength(shards);
    expect(perShard.reduce((a, b) => a + b, 0)).toBe(50000);
    expect(run.stdout).toMatch(/top 3:\n {2}the +\d+\n/);
  });
}
