// Multi-shard conformance on the posix stack: every shard listens on one port with
// SO_REUSEPORT; thousands of connections are spread over the shards by the kernel and served
// by their own shard. Runs the fixture app in its own process (supervisor + shard Workers).
import { expect, test } from "bun:test";
import { runApp } from "../smp/helpers.ts";

test("2 shards share a port: connections spread over both, all echo correctly", async () => {
  const n = 2000;
  const run = await runApp("../net/fixtures/multishard.ts", ["--smp", "2", "--overprovisioned", "--connections", String(n)], { timeoutMs: 90_000 });
  if (run.code !== 0) console.log(run.stdout, run.stderr);
  expect(run.code).toBe(0);
  const r = run.result as { n: number; ok: number; seenBy: number[]; stats: { shard: number; accepted: number; open: number }[] };
  expect(r.ok).toBe(n);
  expect(r.stats.length).toBe(2);
  // Each shard accepted a fair part (the kernel hashes the 4-tuple over the listeners).
  for (const s of r.stats) expect(s.accepted).toBeGreaterThan(n / 5);
  expect(r.stats[0]!.accepted + r.stats[1]!.accepted).toBe(n);
  expect(r.seenBy[0]! + r.seenBy[1]!).toBe(n);
  expect(r.seenBy[1]).toBe(r.stats[1]!.accepted);
}, 120_000);
