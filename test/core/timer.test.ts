/**
 * Timers: one heap on the shard's loop, fired as tasks in deadline order (ties in arm order),
 * cancellable up to the moment their callback would run, and cheap in kernel terms: any number
 * of armed timers shares one kernel timeout.
 */
import { describe, expect, test } from "bun:test";
import { AbortError, InvalidArgumentError, Timer, armedTimers, now, reactor, sleep } from "../../src/index.ts";
import { errorOf, prng, quiet, shuffled } from "./fixtures/util.ts";
import { loopStats } from "../../src/core/loop.ts";
import { schedule } from "../../src/core/scheduler.ts";

/**
 * Runs `fn` with performance.now() frozen, so timers armed inside get exactly `delay` past the
 * same instant: equal delays give equal deadlines (ties), and expected deadlines are exact.
 * Arming is synchronous, so the loop cannot observe the frozen clock.
 */
function atFrozenClock<T>(fn: (t0: number) => T): T {
  const real = performance.now;
  const t0 = real.call(performance);
  performance.now = () => t0;
  try {
    return fn(t0);
  } finally {
    performance.now = real;
  }
}

/** A promise and the function that resolves it. */
function signal<T = void>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

describe("ordering", () => {
  test("10,000 timers armed in random order fire in deadline order, ties in arm order", async () => {
    const rand = prng(0x5eed);
    const n = 10_000;
    // Whole-millisecond delays in 0..40: about 250 timers share each deadline.
    const delays = Array.from({ length: n }, () => Math.floor(rand() * 41));
    const armOrder = shuffled(Array.from({ length: n }, (_, i) => i), rand);
    const fired: number[] = [];
    const firedAt = new Float64Array(n);
    const all = signal();
    const t0 = atFrozenClock((t0) => {
      for (const id of armOrder) {
        new Timer(() => {
          firedAt[id] = performance.now();
          fired.push(id);
          if (fired.length === n) all.resolve();
        }).arm(delays[id]!);
      }
      return t0;
    });
    await all.promise;
    const rank = new Int32Array(n);
    armOrder.forEach((id, i) => (rank[id] = i));
    const expected = armOrder.slice().sort((a, b) => delays[a]! - delays[b]! || rank[a]! - rank[b]!);
    expect(fired).toEqual(expected);
    // No timer fired before its deadline.
    for (let id = 0; id < n; id++) expect(firedAt[id]!).toBeGreaterThanOrEqual(t0 + delays[id]!);
  });

  test("timers armed over time with fractional delays never fire early and fire in deadline order", async () => {
    const rand = prng(7);
    // A timer's deadline is read inside arm(): bracket it with clock reads on both sides.
    const earliest: number[] = [];
    const latest: number[] = [];
    const fired: number[] = [];
    const done: Promise<void>[] = [];
    for (let batch = 0; batch < 20; batch++) {
      for (let i = 0; i < 50; i++) {
        const id = earliest.length;
        const delay = rand() * 20;
        const s = signal();
        done.push(s.promise);
        const timer = new Timer(() => {
          expect(performance.now()).toBeGreaterThanOrEqual(earliest[id]!);
          fired.push(id);
          s.resolve();
        });
        earliest.push(performance.now() + delay);
        timer.arm(delay);
        latest.push(performance.now() + delay);
      }
      await sleep(rand() * 2);
    }
    await Promise.all(done);
    expect(fired.length).toBe(1000);
    for (let i = 1; i < fired.length; i++) {
      expect(latest[fired[i]!]!).toBeGreaterThanOrEqual(earliest[fired[i - 1]!]!);
    }
  });
});

describe("cancellation", () => {
  test("cancelled timers never fire; the rest all do", async () => {
    const rand = prng(42);
    const n = 10_000;
    const base = armedTimers();
    const fired = new Uint8Array(n);
    let firedCount = 0;
    const all = signal();
    const timers = Array.from({ length: n }, (_, i) =>
      new Timer(() => {
        fired[i] = 1;
        if (++firedCount === n / 2) all.resolve();
      }).arm(rand() * 30),
    );
    expect(armedTimers()).toBe(base + n);
    const cancelled = new Uint8Array(n);
    for (let i = 0; i < n; i += 2) {
      expect(timers[i]!.cancel()).toBe(true);
      expect(timers[i]!.armed).toBe(false);
      expect(timers[i]!.cancel()).toBe(false);
      cancelled[i] = 1;
    }
    expect(armedTimers()).toBe(base + n / 2);
    await all.promise;
    await sleep(35); // past every deadline, cancelled ones included
    for (let i = 0; i < n; i++) expect(fired[i]).toBe(cancelled[i] ? 0 : 1);
    expect(armedTimers()).toBe(base);
  });

  test("a timer due but not run yet is still armed (Seastar): cancel() drops its fire and returns true", async () => {
    const base = armedTimers();
    const fired: string[] = [];
    const done = signal();
    let b!: Timer;
    let armedBefore: boolean | undefined;
    let countedBefore: number | undefined;
    let cancelResult: boolean | undefined;
    atFrozenClock(() => {
      // Same deadline: both expire in the same turn, a before b; a's callback cancels b.
      new Timer(() => {
        fired.push("a");
        armedBefore = b.armed;
        countedBefore = armedTimers() - base;
        cancelResult = b.cancel();
      }).arm(2);
      b = new Timer(() => fired.push("b")).arm(2);
      new Timer(() => {
        fired.push("c");
        done.resolve();
      }).arm(2);
    });
    await done.promise;
    await sleep(5);
    expect(fired).toEqual(["a", "c"]);
    expect(armedBefore).toBe(true);
    expect(countedBefore).toBe(2); // b and c: due, their callbacks queued behind a's
    expect(cancelResult).toBe(true); // it was armed, and the cancel is what kept it from firing
    expect(b.armed).toBe(false);
    expect(b.cancel()).toBe(false);
    expect(armedTimers()).toBe(base);
  });

  test("a periodic timer cancelled while its fire is queued returns true and never fires again", async () => {
    const base = armedTimers();
    let fires = 0;
    const done = signal();
    let b!: Timer;
    let cancelResult: boolean | undefined;
    atFrozenClock(() => {
      new Timer(() => {
        cancelResult = b.cancel();
      }).arm(2);
      b = new Timer(() => fires++).armPeriodic(2);
      new Timer(() => done.resolve()).arm(2);
    });
    await done.promise;
    await sleep(10); // several periods
    expect(cancelResult).toBe(true);
    expect(fires).toBe(0);
    expect(b.armed).toBe(false);
    expect(armedTimers()).toBe(base);
  });

  test("a timer due but not run yet refuses arm(); rearm() replaces its fire: it fires once, at the new deadline", async () => {
    const fired: string[] = [];
    const done = signal();
    let b!: Timer;
    let armError: unknown;
    atFrozenClock(() => {
      new Timer(() => {
        fired.push("a");
        try {
          b.arm(3); // still armed: its expiry for this turn is queued
        } catch (err) {
          armError = err;
        }
        b.rearm(3); // b's expiry for this turn is dropped
      }).arm(1);
      b = new Timer(() => {
        fired.push("b");
        done.resolve();
      }).arm(1);
    });
    await done.promise;
    await sleep(10);
    expect(fired).toEqual(["a", "b"]);
    expect(armError).toBeInstanceOf(InvalidArgumentError);
  });

  test("sleep with an AbortSignal rejects AbortError and its timer is gone", async () => {
    const base = armedTimers();
    const ac = new AbortController();
    const p = quiet(sleep(10_000, { signal: ac.signal }));
    expect(armedTimers()).toBe(base + 1);
    const reason = new Error("stop waiting");
    ac.abort(reason);
    const err = await errorOf(p);
    expect(err).toBeInstanceOf(AbortError);
    expect(err.code).toBe("ABORT_ERR");
    expect(err.cause).toBe(reason);
    expect(armedTimers()).toBe(base);

    const already = quiet(sleep(10_000, { signal: AbortSignal.abort() }));
    expect(armedTimers()).toBe(base);
    expect(await errorOf(already)).toBeInstanceOf(AbortError);

    // A signal that never aborts does not disturb the sleep.
    await sleep(1, { signal: new AbortController().signal });
    expect(armedTimers()).toBe(base);
  });
});

describe("periodic, rearm and misuse", () => {
  test("a periodic timer whose fire is still queued behind busy tasks does not fire twice in a row", async () => {
    // Tasks ahead of it take longer than a period: its next expiry comes while the last fire is
    // still queued. Two queued fires would run back to back (a burst) in the same loop turn.
    const turns: number[] = [];
    const t = new Timer(() => turns.push(loopStats.turns)).armPeriodic(1);
    for (let i = 0; i < 30; i++) {
      schedule(() => {
        const end = performance.now() + 0.4;
        while (performance.now() < end) {}
      });
    }
    await sleep(40);
    t.cancel();
    expect(turns.length).toBeGreaterThan(3);
    expect(new Set(turns).size).toBe(turns.length);
  });

  test("a periodic timer fires repeatedly and stops on cancel", async () => {
    let count = 0;
    const third = signal();
    const t = new Timer(() => {
      if (++count === 3) third.resolve();
    }).armPeriodic(2);
    await third.promise;
    expect(t.armed).toBe(true);
    expect(t.cancel()).toBe(true);
    const at = count;
    await sleep(20); // ten periods
    expect(count).toBe(at);
    expect(t.armed).toBe(false);
  });

  test("a periodic timer can cancel itself from its callback", async () => {
    let count = 0;
    const t = new Timer(() => {
      if (++count === 2) t.cancel();
    }).armPeriodic(1);
    await sleep(15);
    expect(count).toBe(2);
    expect(t.armed).toBe(false);
  });

  test("rearm moves an armed timer, arms an idle one, and makes a periodic one one-shot", async () => {
    let count = 0;
    const t = new Timer(() => count++).arm(60_000);
    t.rearm(1);
    await sleep(10);
    expect(count).toBe(1);
    expect(t.armed).toBe(false);
    t.rearm(1); // not armed: arms it
    await sleep(10);
    expect(count).toBe(2);
    t.armPeriodic(1);
    t.rearm(1);
    await sleep(10);
    expect(count).toBe(3);
    expect(t.armed).toBe(false);
  });

  test("arming an armed timer throws; bad delays and callbacks throw InvalidArgumentError", () => {
    const t = new Timer(() => {}).arm(60_000);
    try {
      expect(() => t.arm(1)).toThrow(InvalidArgumentError);
      expect(() => t.armPeriodic(1)).toThrow(InvalidArgumentError);
      expect(t.armed).toBe(true);
    } finally {
      t.cancel();
    }
    const u = new Timer(() => {});
    for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY, "5" as unknown as number]) {
      expect(() => u.arm(bad)).toThrow(InvalidArgumentError);
      expect(() => u.rearm(bad)).toThrow(InvalidArgumentError);
      expect(() => u.armPeriodic(bad)).toThrow(InvalidArgumentError);
      expect(() => sleep(bad)).toThrow(InvalidArgumentError);
    }
    expect(() => u.armPeriodic(0)).toThrow(InvalidArgumentError);
    expect(u.armed).toBe(false);
    expect(() => new Timer(42 as unknown as () => void)).toThrow(InvalidArgumentError);
  });

  test("sleep(0) resolves", async () => {
    await sleep(0);
  });

  test("sleep refuses malformed options with InvalidArgumentError (not a TypeError later)", () => {
    expect(() => sleep(10, { signal: {} as AbortSignal })).toThrow(InvalidArgumentError);
    expect(() => sleep(10, null as never)).toThrow(InvalidArgumentError);
  });
});

describe("cost", () => {
  /** Arms `delays.length` timers, waits for all, returns how many kernel timeouts the reactor armed meanwhile. */
  async function kernelTimeoutsFor(delays: number[]): Promise<number> {
    const r = reactor();
    const before = r.counters().timeoutsArmed;
    let fired = 0;
    const all = signal();
    for (const d of delays) {
      new Timer(() => {
        if (++fired === delays.length) all.resolve();
      }).arm(d);
    }
    await all.promise;
    return r.counters().timeoutsArmed - before;
  }

  test("any number of armed timers costs one kernel timeout: 10,000 timers over 50 ms arm far fewer", async () => {
    const rand = prng(99);
    // Spread evenly: the loop busy-polls from one expiry to the next.
    const even = await kernelTimeoutsFor(Array.from({ length: 10_000 }, () => rand() * 50));
    expect(even).toBeLessThan(200);
    // In 25 clusters 2 ms apart: the loop sleeps in the kernel between clusters, once per sleep.
    const clustered = await kernelTimeoutsFor(Array.from({ length: 10_000 }, () => 2 * Math.floor(rand() * 25) + rand() * 0.05));
    expect(clustered).toBeLessThan(200);
  });
});

test("now() is a low-resolution clock that advances with the loop", async () => {
  const a = now();
  expect(typeof a).toBe("number");
  await sleep(5);
  const b = now();
  expect(b - a).toBeGreaterThanOrEqual(5);
  expect(b).toBeLessThanOrEqual(performance.now());
});

describe("bad delays", () => {
  test("symbols and objects without a string form are InvalidArgumentError, not a TypeError from the message", () => {
    const bad = [Symbol("x"), Object.create(null), { toString: () => { throw new Error("boom"); } }];
    for (const ms of bad) {
      expect(() => sleep(ms as never)).toThrow(InvalidArgumentError);
      expect(() => new Timer(() => {}).arm(ms as never)).toThrow(InvalidArgumentError);
      expect(() => new Timer(() => {}).armPeriodic(ms as never)).toThrow(InvalidArgumentError);
    }
  });
});

describe("dispose", () => {
  test("`using` cancels a timer at the end of its scope", async () => {
    let fired = false;
    {
      using t = new Timer(() => (fired = true)).arm(5);
      expect(t.armed).toBe(true);
    }
    await sleep(20);
    expect(fired).toBe(false);
  });
});

test("now() keeps time while the loop is stopped or parked (code run by Bun's loop reads it)", async () => {
  // It was refreshed only by loop turns: 0 ms passed over a 300 ms Bun.sleep.
  await sleep(1);
  let before = now();
  await Bun.sleep(300);
  expect(now() - before).toBeGreaterThan(250);
  const parkedOn = new Timer(() => {}).arm(5000);
  try {
    before = now();
    await Bun.sleep(300);
    expect(now() - before).toBeGreaterThan(250);
  } finally {
    parkedOn.cancel();
  }
});
