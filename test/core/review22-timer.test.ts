/**
 * Review of the shard's timers: a periodic timer that the loop serves late keeps its phase.
 */
import { expect, test } from "bun:test";
import { Timer } from "../../src/index.ts";
import { expireTimers, nextTimerDeadline } from "../../src/core/timer.ts";

/** Runs `fn` with performance.now() reading `clock.t` (synchronous: the loop never sees it). */
function withClock<T>(fn: (clock: { t: number }) => T): T {
  const real = performance.now;
  const clock = { t: real.call(performance) };
  performance.now = () => clock.t;
  try {
    return fn(clock);
  } finally {
    performance.now = real;
  }
}

test("a periodic timer served several periods late skips the missed ones and keeps its phase", () => {
  // Its next deadline was set to (the late instant + one period): every later fire moved by
  // however late the loop had been, unlike the doc's "keep their phase".
  const fired: number[] = [];
  const timer = new Timer(() => fired.push(1));
  try {
    withClock((clock) => {
      const t0 = clock.t;
      timer.armPeriodic(10);
      expect(nextTimerDeadline()).toBeCloseTo(t0 + 10, 6);
      clock.t = t0 + 10; // on time
      expect(expireTimers(clock.t)).toBe(1);
      expect(nextTimerDeadline()).toBeCloseTo(t0 + 20, 6);
      clock.t = t0 + 53.5; // a stall: the fires due at 20, 30, 40 and 50 are one late fire
      expect(expireTimers(clock.t)).toBe(1);
      expect(nextTimerDeadline()).toBeCloseTo(t0 + 60, 6);
      clock.t = t0 + 85;
      expect(expireTimers(clock.t)).toBe(1);
      expect(nextTimerDeadline()).toBeCloseTo(t0 + 90, 6);
    });
    expect(timer.armed).toBe(true);
  } finally {
    expect(timer.cancel()).toBe(true);
  }
  expect(timer.armed).toBe(false);
});

test("a periodic timer's late fire is never followed by a burst of the missed ones", async () => {
  let fires = 0;
  const timer = new Timer(() => fires++);
  try {
    withClock((clock) => {
      timer.armPeriodic(1);
      clock.t += 1000.5; // a thousand periods late
      expect(expireTimers(clock.t)).toBe(1);
      expect(expireTimers(clock.t)).toBe(0);
      expect(nextTimerDeadline()).toBeGreaterThan(clock.t);
    });
  } finally {
    timer.cancel();
  }
  expect(fires).toBe(0); // the queued fire was dropped by cancel()
});
