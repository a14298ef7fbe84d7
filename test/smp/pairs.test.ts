/**
 * Per-pair FIFO and exactly-once delivery between every ordered pair of shards, with payload
 * checksums. CI runs a small count; SHOAL_SOAK=1 runs 1,000,000 messages per pair.
 */
import { expect, test } from "bun:test";
import { runApp, smpArgs } from "./helpers.ts";

const soak = process.env.SHOAL_SOAK === "1";

function check(run: Awaited<ReturnType<typeof runApp>>, shards: number, count: number): void {
  if (run.code !== 0 || !run.result?.ok) console.log(run.stdout, run.stderr);
  expect(run.code).toBe(0);
  const r = run.result;
  expect(r.ok).toBe(true);
  expect(r.pairs).toHaveLength(shards * (shards - 1));
  for (const p of r.pairs) {
    expect(p.received).toBe(count);
    expect(p.sent).toBe(count);
    expect(p.sumReceived).toBe(p.sumSent);
    expect(p.disorder).toBe(0);
    expect(p.corrupt).toBe(0);
    expect(p.badReplies).toBe(0);
  }
  console.log(`${shards} shards, ${r.messages} messages in ${r.seconds.toFixed(2)} s (${r.rate} msg/s), max backlog ${r.maxBacklog}`);
}

test(
  "4 shards: every ordered pair, one-way and calls mixed, in order, none lost or duplicated",
  async () => {
    const count = soak ? 1_000_000 : 25_000;
    const run = await runApp("./fixtures/pairs.ts", [...smpArgs(4), "--count", String(count), "--mode", "mixed"], {
      timeoutMs: soak ? 3_600_000 : 60_000,
    });
    check(run, 4, count);
  },
  soak ? 3_600_000 : 60_000,
);

test(
  "2 shards: one-way posts with back-pressure, in order, none lost or duplicated",
  async () => {
    const count = soak ? 1_000_000 : 100_000;
    const run = await runApp("./fixtures/pairs.ts", [...smpArgs(2), "--count", String(count), "--mode", "post"], {
      timeoutMs: soak ? 3_600_000 : 60_000,
    });
    check(run, 2, count);
  },
  soak ? 3_600_000 : 60_000,
);

test(
  "3 shards: calls only (every reply checked)",
  async () => {
    const count = soak ? 1_000_000 : 10_000;
    const run = await runApp("./fixtures/pairs.ts", [...smpArgs(3), "--count", String(count), "--mode", "call"], {
      timeoutMs: soak ? 3_600_000 : 60_000,
    });
    check(run, 3, count);
  },
  soak ? 3_600_000 : 60_000,
);
