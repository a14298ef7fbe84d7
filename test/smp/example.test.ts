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

test("sharded-counter stops on SIGTERM during a long count (it ran on until the 30 s shutdown timeout, exit 1)", async () => {
  const fixture = new URL("../../examples/sharded-counter/main.ts", import.meta.url).pathname;
  const proc = Bun.spawn([process.execPath, fixture, ...smpArgs(2), "--words", "99999999999"], { stdout: "pipe", stderr: "pipe" });
  await Bun.sleep(2500); // counting by now
  proc.kill("SIGTERM");
  // Ignoring the signal, it counts on until the 30 s shutdown timeout and exits 1.
  const code = await Promise.race([proc.exited, Bun.sleep(20_000).then(() => "still running")]);
  if (code === "still running") proc.kill("SIGKILL");
  expect(code).toBe(0);
  expect(await new Response(proc.stderr).text()).toContain("interrupted");
}, 40_000);
