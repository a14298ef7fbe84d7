/**
 * The reactor's eventfd wake from another thread (review 23): while the shard is busy, while it
 * sleeps in the kernel, and a storm of them. A wake ends a sleep at once; a storm neither loses
 * an operation nor leaves the shard spinning once it ends. (The native side's own case, a turn
 * that could not re-arm the wake read, is a Zig test in zig/reactor.zig.)
 */
import { afterEach, expect, test } from "bun:test";
import { allocateAlignedBuffer, configureLoop, loopStats, reactor, sleep } from "../../src/index.ts";
import { loopConfig } from "../../src/core/loop.ts";
import { pipe, type PipePair } from "./fixtures/posix.ts";
import { quiet } from "./fixtures/util.ts";

const waker = new URL("./fixtures/review23-waker.ts", import.meta.url).href;
const pipes: PipePair[] = [];
afterEach(() => {
  for (const p of pipes.splice(0)) p.close();
});

function message(w: Worker): Promise<any> {
  return new Promise((resolve) => w.addEventListener("message", (e) => resolve((e as MessageEvent).data), { once: true }));
}

/** Keeps the loop sleeping in the kernel (not parked): a read parked on an empty pipe. */
function parkedRead(): { done: Promise<number> } {
  const p = pipe();
  pipes.push(p);
  const buf = allocateAlignedBuffer(8);
  const done = quiet(reactor().read(p.readFd, buf)).finally(() => buf.release());
  return { done };
}

test("a storm of wakes from another thread while the shard works: every operation completes once, and after it the shard sleeps again", async () => {
  const r = reactor();
  const hold = parkedRead();
  const w = new Worker(waker);
  try {
    const wakesBefore = r.counters().wakes;
    const stormDone = message(w);
    w.postMessage({ mode: "storm", fd: r.eventfd, ms: 300 });
    // Work while the storm lasts: nops, kernel timeouts and timers, in waves.
    let nops = 0;
    let timeouts = 0;
    let sleeps = 0;
    for (let wave = 0; wave < 20; wave++) {
      const ops: Promise<unknown>[] = [];
      for (let i = 0; i < 100; i++) ops.push(r.nop().then(() => nops++));
      for (let i = 0; i < 10; i++) ops.push(r.timeout(1).then(() => timeouts++));
      ops.push(sleep(2).then(() => sleeps++));
      await Promise.all(ops);
    }
    expect([nops, timeouts, sleeps]).toEqual([2000, 200, 20]);
    const { wakes } = await stormDone;
    expect(wakes).toBeGreaterThan(0);
    await sleep(20);
    // Many wakes, one read each at most: the counter went up, by no more than the wakes sent.
    const seen = r.counters().wakes - wakesBefore;
    expect(seen).toBeGreaterThan(0);
    expect(seen).toBeLessThanOrEqual(wakes);
    // The storm is over: 300 ms of idle costs a few hundred turns at most (a spinning loop makes
    // hundreds of thousands), and the eventfd read is armed again.
    const turns0 = loopStats.turns;
    const sleeps0 = r.counters().sleeps;
    await sleep(300);
    expect(loopStats.turns - turns0).toBeLessThan(2000);
    expect(r.counters().sleeps - sleeps0).toBeGreaterThan(0);
  } finally {
    w.terminate();
  }
  pipes.splice(0).forEach((p) => p.close());
  await hold.done;
}, 30_000);

test("a wake from another thread ends a long kernel sleep at once (Bun's messages wait for it)", async () => {
  const r = reactor();
  const hold = parkedRead();
  const saved = { ...loopConfig };
  // Kernel sleeps of up to 5 s: only a wake lets the Worker's message in before that.
  configureLoop({ sleepSliceMs: 5000, idleSleepSliceMs: 5000, restingSleepSliceMs: 5000, idlePollTimeUs: 0 });
  const w = new Worker(waker);
  try {
    // The worker is up (its first message is served while the loop still sleeps short slices).
    await sleep(50);
    const woke = message(w);
    const t0 = performance.now();
    w.postMessage({ mode: "once", fd: r.eventfd, delayMs: 100 });
    expect(await woke).toBe("woke");
    expect(performance.now() - t0).toBeLessThan(2500);
  } finally {
    configureLoop({
      sleepSliceMs: saved.sleepSliceMs,
      idleSleepSliceMs: saved.idleSleepSliceMs,
      restingSleepSliceMs: saved.restingSleepSliceMs,
      idlePollTimeUs: saved.idlePollTimeUs,
    });
    w.terminate();
  }
  pipes.splice(0).forEach((p) => p.close());
  await hold.done;
}, 30_000);
