/**
 * A fast sender against a slow receiver: memory stays bounded (back-pressure, not buffering)
 * and every message arrives exactly once. SHOAL_SOAK=1 pushes ten times as many.
 */
import { expect, test } from "bun:test";
import { runApp, smpArgs } from "./helpers.ts";

const soak = process.env.SHOAL_SOAK === "1";

test(
  "flood vs slow receiver: bounded memory, nothing lost, in order",
  async () => {
    const messages = soak ? 2_000_000 : 150_000;
    const run = await runApp("./fixtures/flood.ts", [...smpArgs(2), "--messages", String(messages), "--bytes", "1024", "--spin-us", "3"], {
      timeoutMs: soak ? 3_600_000 : 60_000,
    });
    if (run.code !== 0) console.log(run.stdout, run.stderr);
    expect(run.code).toBe(0);
    const r = run.result;
    console.log(JSON.stringify(r));
    expect(r.received).toBe(messages * 2);
    expect(r.sumOk).toBe(true);
    // In the order sent, the calls queued behind a full ring (phase 2's window) included.
    expect(r.disorder).toBe(0);
    expect(r.badReplies).toBe(0);
    // The sender did hit a full ring and waited, rather than queueing without limit.
    expect(r.waits).toBeGreaterThan(0);
    expect(r.phase1MaxBacklog).toBeLessThanOrEqual(1);
    expect(r.maxBacklog).toBeLessThanOrEqual(4096);
    expect(r.backlogNow).toBe(0);
    // Hundreds of MiB went through; the process grew by a bounded working set only.
    expect(r.payloadMb).toBeGreaterThan(250);
    expect(r.rssGrowthMb).toBeLessThan(Math.min(200, r.payloadMb / 2));
    expect(r.rssPhase1SteadyGrowthMb).toBeLessThan(64);
  },
  soak ? 3_600_000 : 60_000,
);
