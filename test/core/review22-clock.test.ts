/**
 * Review of the low-resolution clock: code that runs right after the loop slept in the kernel
 * reads the time after the sleep, not the time before it.
 */
import { expect, test } from "bun:test";
import { allocateAlignedBuffer, configureLoop, now, reactor } from "../../src/index.ts";
import { loopConfig } from "../../src/core/loop.ts";
import { pipe } from "./fixtures/posix.ts";

test("the continuation of a read completed during a kernel sleep reads now() after the sleep", async () => {
  // With one scheduling group a completion's promise settles in the turn that reaped it, right
  // after the sleep, and its continuation read the clock of that turn's start: as old as the
  // sleep was long (up to a whole slice, 50 ms once idle; 1 s here). Connection timestamps
  // (lastActivity, read timeouts) use now(). (Once groups exist, completions run as tasks of a
  // later turn, which reads the clock anew: this file runs in a process of its own.)
  const saved = { ...loopConfig };
  // One long slice: nothing else (no yield to Bun's loop) refreshes the clock during the wait.
  configureLoop({ sleepSliceMs: 1000, idleSleepSliceMs: 1000, restingSleepSliceMs: 1000 });
  const p = pipe();
  const buf = allocateAlignedBuffer(64);
  try {
    const before = performance.now();
    const read = reactor().read(p.readFd, buf);
    // The writer starts after `before` and sleeps 150 ms before it writes.
    const child = Bun.spawn(["sh", "-c", "sleep 0.15; printf x"], { stdout: p.writeFd, stderr: "ignore" });
    expect(await read).toBe(1);
    const seen = now();
    await child.exited;
    expect(seen - before).toBeGreaterThanOrEqual(150);
  } finally {
    configureLoop({
      sleepSliceMs: saved.sleepSliceMs,
      idleSleepSliceMs: saved.idleSleepSliceMs,
      restingSleepSliceMs: saved.restingSleepSliceMs,
    });
    buf.release();
    p.close();
  }
}, 20_000);
