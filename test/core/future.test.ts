import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { AbortError, InvalidArgumentError, TimedOutError } from "../../src/core/errors.ts";
import {
  doUntil,
  keepDoing,
  maxConcurrentForEach,
  parallelForEach,
  repeat,
  repeatUntilValue,
  stopIteration,
  whenAll,
  whenAllSucceed,
  whenAny,
  withTimeout,
} from "../../src/core/future.ts";
import { Semaphore } from "../../src/core/semaphore.ts";
import { Timer, armedTimers, sleep } from "../../src/core/timer.ts";
import { armedBy, errorOf, status } from "./fixtures/util.ts";

const src = join(import.meta.dir, "../../src/core");

/**
 * Runs `body` as a module in a child bun, with `F` (future.ts) and `sleep` imported, and
 * returns its exit code, its last stdout line parsed as JSON, and its whole output. A rejection
 * nobody observed ends the child with exit code 1, as it would end a user's process.
 */
function inChild(body: string): { exitCode: number; result: unknown; output: string } {
  const script =
    `import * as F from ${JSON.stringify(join(src, "future.ts"))};\n` +
    `import { sleep } from ${JSON.stringify(join(src, "timer.ts"))};\n${body}`;
  const out = Bun.spawnSync({ cmd: [process.execPath, "-e", script], stdout: "pipe", stderr: "pipe", timeout: 30_000 });
  const stdout = out.stdout.toString();
  let result: unknown;
  try {
    result = JSON.parse(stdout.trim().split("\n").pop() ?? "");
  } catch {
    result = undefined;
  }
  return { exitCode: out.exitCode ?? -1, result, output: stdout + out.stderr.toString() };
}


class Expected extends Error {}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

/** Resolves after a few turns of the loop. */
const yieldOnce = () => sleep(0);

describe("whenAll", () => {
  test("reports every outcome in input order and never rejects (Seastar when_all_functions)", async () => {
    const [a, b, c, d] = await whenAll([
      () => Promise.resolve(42),
      () => {
        throw new Expected("sync");
      },
      yieldOnce(),
      "plain",
    ] as const);
    expect(a).toEqual({ status: "fulfilled", value: 42 });
    expect(b.status).toBe("rejected");
    expect((b as PromiseRejectedResult).reason).toBeInstanceOf(Expected);
    expect(c).toEqual({ status: "fulfilled", value: undefined });
    expect(d).toEqual({ status: "fulfilled", value: "plain" });
  });

  test("accepts any iterable and an empty one", async () => {
    expect(await whenAll(new Set<Promise<number>>())).toEqual([]);
    const results = await whenAll(new Set([Promise.resolve(1), Promise.reject(new Expected())]));
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected"]);
    expect(() => whenAll(5 as never)).toThrow(InvalidArgumentError);
  });
});

describe("whenAllSucceed", () => {
  test("resolves with the values in input order", async () => {
    const values = await whenAllSucceed([sleep(2).then(() => "slow"), () => 2, Promise.resolve(3)] as const);
    expect(values).toEqual(["slow", 2, 3]);
    expect(await whenAllSucceed([])).toEqual([]);
  });

  test("rejects with the first failure, but only after every input has settled", async () => {
    let slowDone = false;
    const slow = sleep(5).then(() => {
      slowDone = true;
    });
    const err = await errorOf(
      whenAllSucceed([
        slow,
        () => {
          throw new Expected("first");
        },
        sleep(1).then(() => {
          throw new Expected("second");
        }),
      ]),
    );
    expect(slowDone).toBe(true);
    expect((err as Error).message).toBe("first");
    const all = (err as { errors?: unknown[] }).errors!;
    expect(all.map((e) => (e as Error).message)).toEqual(["first", "second"]);
    expect(Object.keys(err as object)).not.toContain("errors");
  });
});

describe("whenAny", () => {
  test("names the first input to settle and leaves the others awaitable", async () => {
    const r = await whenAny([sleep(50).then(() => "slow"), sleep(1).then(() => "fast")]);
    expect(r.index).toBe(1);
    expect(r.result).toEqual({ status: "fulfilled", value: "fast" });
    expect(r.futures).toHaveLength(2);
    expect(await r.futures[0]).toBe("slow");
  });

  test("a failure can win; it is reported, not thrown", async () => {
    const r = await whenAny([
      sleep(50),
      () => {
        throw new Expected("now");
      },
    ]);
    expect(r.index).toBe(1);
    expect(r.result.status).toBe("rejected");
    expect((r.result as PromiseRejectedResult).reason).toBeInstanceOf(Expected);
    await r.futures[0];
  });

  test("an empty input is refused", () => {
    expect(() => whenAny([])).toThrow(InvalidArgumentError);
  });

  test("a hole of a sparse array is an input (undefined) that settles at once, as in whenAll", async () => {
    // eslint-disable-next-line no-sparse-arrays
    const r = await whenAny([, yieldOnce().then(() => "later")] as unknown[]);
    expect(r.index).toBe(0);
    expect(r.result).toEqual({ status: "fulfilled", value: undefined });
    expect(0 in r.futures).toBe(true);
    expect(await r.futures[0]).toBeUndefined();
    let settled: unknown;
    // eslint-disable-next-line no-sparse-arrays
    void whenAny([, ,] as unknown[]).then((r) => (settled = r.index));
    await yieldOnce();
    expect(settled).toBe(0);
  });
});

describe("parallelForEach", () => {
  test("covers empty, immediate, suspending and failing bodies (Seastar test_parallel_for_each)", async () => {
    await parallelForEach([], () => {
      throw new Error("should not run");
    });

    let sum = 0;
    const p = parallelForEach(range(1, 6), (v) => {
      sum += v;
    });
    expect(status(p)).toBe("fulfilled"); // all synchronous: nothing to wait for
    expect(sum).toBe(15);

    sum = 0;
    await parallelForEach(range(1, 6), async (v) => {
      await yieldOnce();
      sum += v;
    });
    expect(sum).toBe(15);

    expect(
      await errorOf(
        parallelForEach(range(1, 6), () => {
          throw new Expected();
        }),
      ),
    ).toBeInstanceOf(Expected);

    expect(
      await errorOf(
        parallelForEach(range(1, 6), async () => {
          await yieldOnce();
          throw new Expected();
        }),
      ),
    ).toBeInstanceOf(Expected);
  });

  test("starts every call at once", async () => {
    const started: number[] = [];
    const done = parallelForEach(range(0, 5), (i) => {
      started.push(i);
      return sleep(1);
    });
    expect(started).toEqual([0, 1, 2, 3, 4]);
    await done;
  });

  test("waits for all fibers even if one of them failed (Seastar)", async () => {
    let canExit = false;
    const err = await errorOf(
      parallelForEach(range(0, 2), async (i) => {
        await yieldOnce();
        if (i === 1) throw new Expected();
        await sleep(5);
        canExit = true;
      }),
    );
    expect(err).toBeInstanceOf(Expected);
    expect(canExit).toBe(true);
  });

  test("keeps calling the remaining items after a synchronous throw", async () => {
    let calls = 0;
    const err = await errorOf(
      parallelForEach(range(0, 10), (i) => {
        calls++;
        if (i === 3) throw new Expected("three");
      }),
    );
    expect((err as Error).message).toBe("three");
    expect(calls).toBe(10);
  });

  test("rejects with the first failure in time and attaches all failures as errors", async () => {
    const counter = { n: 0 };
    const err = await errorOf(
      parallelForEach(range(0, 200), async (i) => {
        await sleep((i % 7) + 1);
        counter.n++;
        if (i % 50 === 37) throw new Expected(`item ${i}`);
      }),
    );
    expect(counter.n).toBe(200);
    const errors = (err as { errors: Expected[] }).errors;
    expect(errors).toHaveLength(4);
    expect(errors[0]).toBe(err as Expected);
    expect(new Set(errors.map((e) => e.message))).toEqual(new Set(["item 37", "item 87", "item 137", "item 187"]));
  });

  test("a non-object failure is passed through as is", async () => {
    expect(
      await errorOf(
        parallelForEach([1], () => {
          throw 5;
        }),
      ),
    ).toBe(5);
  });

  test("hands the signal to every call, and an aborted signal calls nothing", async () => {
    const ac = new AbortController();
    const seen: (AbortSignal | undefined)[] = [];
    await parallelForEach([1, 2], (_, __, signal) => void seen.push(signal), { signal: ac.signal });
    expect(seen).toEqual([ac.signal, ac.signal]);
    let called = false;
    const reason = new Error("stop");
    const err = await errorOf(parallelForEach([1], () => void (called = true), { signal: AbortSignal.abort(reason) }));
    expect(err).toBeInstanceOf(AbortError);
    expect((err as AbortError).cause).toBe(reason);
    expect(called).toBe(false);
  });

  test("validates its arguments", () => {
    expect(() => parallelForEach(3 as never, () => {})).toThrow(InvalidArgumentError);
    expect(() => parallelForEach([], "f" as never)).toThrow(/fn/);
    expect(() => parallelForEach([], () => {}, { signal: {} as AbortSignal })).toThrow(InvalidArgumentError);
  });
});

describe("maxConcurrentForEach", () => {
  const items = range(1, 8);

  test("covers empty, immediate, suspending and failing bodies (Seastar test_max_concurrent_for_each)", async () => {
    await maxConcurrentForEach([], 3, () => {
      throw new Error("should not run");
    });

    let sum = 0;
    await maxConcurrentForEach(items, 3, (v) => {
      sum += v;
    });
    expect(sum).toBe(28);

    sum = 0;
    await maxConcurrentForEach(items, 3, async (v) => {
      await yieldOnce();
      sum += v;
    });
    expect(sum).toBe(28);

    // A failure does not stop the other items.
    sum = 0;
    expect(
      await errorOf(
        maxConcurrentForEach(items, 3, (v) => {
          sum += v;
          if (v === 1) throw new Expected();
        }),
      ),
    ).toBeInstanceOf(Expected);
    expect(sum).toBe(28);

    sum = 0;
    expect(
      await errorOf(
        maxConcurrentForEach(items, 3, async (v) => {
          await yieldOnce();
          sum += v;
          if (v === 2) throw new Expected();
        }),
      ),
    ).toBeInstanceOf(Expected);
    expect(sum).toBe(28);

    sum = 0;
    await maxConcurrentForEach(items, items.length + 3, (v) => {
      sum += v;
    });
    expect(sum).toBe(28);
  });

  test("never runs more than limit calls at once, and uses the limit", async () => {
    let running = 0;
    let most = 0;
    await maxConcurrentForEach(range(0, 30), 4, async (_, i) => {
      most = Math.max(most, ++running);
      await sleep(i % 3);
      running--;
    });
    expect(most).toBe(4);
  });

  test("consumes the iterable lazily", async () => {
    let produced = 0;
    function* gen() {
      for (let i = 0; i < 10; i++) {
        produced++;
        yield i;
      }
    }
    const gate = new Semaphore(0);
    const done = maxConcurrentForEach(gen(), 2, () => gate.wait());
    expect(produced).toBe(2);
    gate.signal(10);
    await done;
    expect(produced).toBe(10);
  });

  test("an abort stops starting items, waits for those in flight, then rejects with AbortError", async () => {
    const ac = new AbortController();
    const started: number[] = [];
    let finished = 0;
    const done = maxConcurrentForEach(
      range(0, 100),
      2,
      async (i, _, signal) => {
        expect(signal).toBe(ac.signal);
        started.push(i);
        if (i === 3) ac.abort("enough");
        await sleep(1);
        finished++;
      },
      { signal: ac.signal },
    );
    const err = await errorOf(done);
    expect(err).toBeInstanceOf(AbortError);
    expect((err as AbortError).cause).toBe("enough");
    expect(started.length).toBeLessThan(100);
    expect(finished).toBe(started.length);
    expect(await errorOf(maxConcurrentForEach([1], 1, () => {}, { signal: ac.signal }))).toBeInstanceOf(AbortError);
  });

  test("validates its arguments", () => {
    expect(() => maxConcurrentForEach([], 0, () => {})).toThrow(/limit/);
    expect(() => maxConcurrentForEach([], 1.5, () => {})).toThrow(InvalidArgumentError);
    expect(() => maxConcurrentForEach([], 1, null as never)).toThrow(InvalidArgumentError);
    expect(() => maxConcurrentForEach(null as never, 1, () => {})).toThrow(InvalidArgumentError);
  });
});

describe("repeat and friends", () => {
  test("stopIteration is Seastar's yes/no", () => {
    expect(stopIteration.yes).toBe(true);
    expect(stopIteration.no).toBe(false);
  });

  test("repeat calls fn until it says stop, sync or async", async () => {
    let n = 0;
    await repeat(() => (++n === 1000 ? stopIteration.yes : stopIteration.no));
    expect(n).toBe(1000);
    n = 0;
    await repeat(async () => {
      await yieldOnce();
      return ++n === 5;
    });
    expect(n).toBe(5);
  });

  test("repeat rejects with fn's error, a non-boolean verdict, or an abort", async () => {
    expect(
      await errorOf(
        repeat(() => {
          throw new Expected();
        }),
      ),
    ).toBeInstanceOf(Expected);
    expect(await errorOf(repeat((() => undefined) as never))).toBeInstanceOf(InvalidArgumentError);
    const ac = new AbortController();
    let n = 0;
    const err = await errorOf(
      repeat(
        () => {
          if (++n === 3) ac.abort("r");
          return stopIteration.no;
        },
        { signal: ac.signal },
      ),
    );
    expect(err).toBeInstanceOf(AbortError);
    expect(n).toBe(3);
    expect(() => repeat(1 as never)).toThrow(InvalidArgumentError);
  });

  test("repeatUntilValue returns the first defined value (Seastar test_repeat_until_value)", async () => {
    let counter = 0;
    const result = await repeatUntilValue(() => (counter === 10000 ? counter : (++counter, undefined)));
    expect(result).toBe(10000);
    expect(
      await errorOf(
        repeatUntilValue(() => {
          throw new Expected();
        }),
      ),
    ).toBeInstanceOf(Expected);
  });

  test("doUntil checks the condition first and stops when it is true", async () => {
    let calls = 0;
    await doUntil(
      () => true,
      () => void calls++,
    );
    expect(calls).toBe(0);
    let i = 0;
    await doUntil(
      () => i === 10,
      async () => {
        await yieldOnce();
        i++;
      },
    );
    expect(i).toBe(10);
    // An async condition is awaited rather than taken as truthy.
    let j = 0;
    await doUntil(
      async () => j === 3,
      () => void j++,
    );
    expect(j).toBe(3);
  });

  test("doUntil propagates an exception from the body or the condition (Seastar)", async () => {
    expect(
      await errorOf(
        doUntil(
          () => false,
          () => {
            throw new Expected();
          },
        ),
      ),
    ).toBeInstanceOf(Expected);
    expect(
      await errorOf(
        doUntil(
          () => {
            throw new Expected();
          },
          () => {},
        ),
      ),
    ).toBeInstanceOf(Expected);
    expect(await errorOf(doUntil(() => false, () => {}, { signal: AbortSignal.abort() }))).toBeInstanceOf(AbortError);
    expect(() => doUntil(null as never, () => {})).toThrow(/stopCond/);
  });

  test("keepDoing runs until fn throws", async () => {
    let n = 0;
    const err = await errorOf(
      keepDoing(() => {
        if (++n === 50) throw new Expected();
      }),
    );
    expect(err).toBeInstanceOf(Expected);
    expect(n).toBe(50);
  });

  test("keepDoing stops with AbortError when its signal aborts, and hands the signal to fn", async () => {
    const ac = new AbortController();
    let n = 0;
    const err = await errorOf(
      keepDoing(
        async (signal) => {
          expect(signal).toBe(ac.signal);
          await yieldOnce();
          if (++n === 4) ac.abort("done");
        },
        { signal: ac.signal },
      ),
    );
    expect(err).toBeInstanceOf(AbortError);
    expect((err as AbortError).cause).toBe("done");
    expect(n).toBe(4);
  });
});

describe("withTimeout", () => {
  test("passes the result through when the operation is in time, and releases its timer", async () => {
    const slow = sleep(1).then(() => 7);
    const a = armedBy(() => withTimeout(slow, 10_000));
    expect(await a.result).toBe(7);
    const b = armedBy(() => withTimeout(async () => "fn", 10_000));
    expect(await b.result).toBe("fn");
    const timers = [...a.timers, ...b.timers];
    expect(timers).toHaveLength(2);
    expect(timers.some((t) => t.armed)).toBe(false);
    expect(await withTimeout(Promise.resolve(1), Infinity)).toBe(1);
  });

  test("passes a failure through", async () => {
    expect(await errorOf(withTimeout(Promise.reject(new Expected()), 1000))).toBeInstanceOf(Expected);
    expect(
      await errorOf(
        withTimeout(() => {
          throw new Expected();
        }, 1000),
      ),
    ).toBeInstanceOf(Expected);
  });

  test("rejects with TimedOutError when the promise is late (Seastar test_with_timeout_when_it_times_out)", async () => {
    // The abandoned promise rejects later; that must not surface as unhandled.
    const late = sleep(20).then(() => {
      throw new Expected("late");
    });
    const err = await errorOf(withTimeout(late, 1));
    expect(err).toBeInstanceOf(TimedOutError);
    expect((err as TimedOutError).code).toBe("ETIMEDOUT");
    await late.catch(() => {});
  });

  test("cancels a function operation through its signal on timeout", async () => {
    const sem = new Semaphore(0);
    let seen: AbortSignal | undefined;
    const err = await errorOf(
      withTimeout((signal) => {
        seen = signal;
        return sem.wait(1, { signal });
      }, 1),
    );
    expect(err).toBeInstanceOf(TimedOutError);
    expect(seen!.aborted).toBe(true);
    expect(seen!.reason).toBe(err);
    // The cancelled wait left the semaphore: nothing is waiting and a signal stays available.
    expect(sem.waiters).toBe(0);
    sem.signal();
    expect(sem.available).toBe(1);
  });

  test("an abort of the caller's signal rejects with AbortError and cancels the operation", async () => {
    const ac = new AbortController();
    let inner: AbortSignal | undefined;
    const p = withTimeout(
      (signal) => {
        inner = signal;
        return sleep(10_000, { signal });
      },
      60_000,
      { signal: ac.signal },
    );
    const reason = new Error("caller gave up");
    ac.abort(reason);
    const err = await errorOf(p);
    expect(err).toBeInstanceOf(AbortError);
    expect((err as AbortError).cause).toBe(reason);
    expect(inner!.aborted).toBe(true);
    expect(inner!.reason).toBe(reason);
  });

  test("an already-aborted signal rejects at once without calling the operation", async () => {
    let called = false;
    const err = await errorOf(withTimeout(() => ((called = true), sleep(1)), 100, { signal: AbortSignal.abort("x") }));
    expect(err).toBeInstanceOf(AbortError);
    expect(called).toBe(false);
  });

  test("the caller's abort listener is removed once settled", async () => {
    const ac = new AbortController();
    let added = 0;
    let removed = 0;
    const add = ac.signal.addEventListener.bind(ac.signal);
    const remove = ac.signal.removeEventListener.bind(ac.signal);
    ac.signal.addEventListener = ((...a: Parameters<AbortSignal["addEventListener"]>) => {
      added++;
      add(...a);
    }) as AbortSignal["addEventListener"];
    ac.signal.removeEventListener = ((...a: Parameters<AbortSignal["removeEventListener"]>) => {
      removed++;
      remove(...a);
    }) as AbortSignal["removeEventListener"];
    await withTimeout(Promise.resolve(1), 1000, { signal: ac.signal });
    await errorOf(withTimeout(sleep(50), 1, { signal: ac.signal }));
    expect(added).toBe(2);
    expect(removed).toBe(2);
  });

  test("validates its arguments", () => {
    expect(() => withTimeout(5 as never, 1)).toThrow(/op/);
    expect(() => withTimeout(Promise.resolve(), -1)).toThrow(/ms/);
    expect(() => withTimeout(Promise.resolve(), Number.NaN)).toThrow(InvalidArgumentError);
    expect(() => withTimeout(Promise.resolve(), 1, { signal: 1 as never })).toThrow(InvalidArgumentError);
  });
});

describe("parallelForEach: an iterable that throws", () => {
  test("joins the fibers already started, then rejects with the iterable's error", async () => {
    function* items() {
      yield 1;
      yield 2;
      throw new Error("iterator broke");
    }
    let finished = 0;
    const p = parallelForEach(items(), async () => {
      await sleep(10);
      finished++;
    });
    const err = await errorOf(p);
    expect(err.message).toBe("iterator broke");
    expect(finished).toBe(2);
  });

  test("a thenable whose then() throws fails its fiber; the others are still joined", async () => {
    let finished = 0;
    const bad = { then() { throw new Error("bad thenable"); } };
    const err = await errorOf(
      // Not an async function: parallelForEach itself calls the thenable's then().
      parallelForEach([1, 2, 3], (i) =>
        i === 2
          ? (bad as unknown as Promise<void>)
          : sleep(5).then(() => {
              finished++;
            }),
      ),
    );
    expect(err.message).toBe("bad thenable");
    expect(finished).toBe(2);
  });
});

describe("hand-made thenables and early stops", () => {
  const throwingThen = { then() { throw new Expected("then() threw"); } };
  const callsTwice = { then(ok: () => void) { ok(); ok(); } };
  const slow = (done: { v: boolean }) => sleep(30).then(() => void (done.v = true));

  test("a thenable whose then() throws fails its call only: the joins still wait for every call", async () => {
    for (const join of [
      (fn: (i: number) => unknown) => parallelForEach([0, 1, 2], fn),
      (fn: (i: number) => unknown) => maxConcurrentForEach([0, 1, 2], 2, fn),
      (fn: (i: number) => unknown) => maxConcurrentForEach([0, 1, 2], 1, fn), // reached from a settle
    ]) {
      const done = { v: false };
      const err = await errorOf(join((i) => (i === 0 ? slow(done) : i === 1 ? throwingThen : undefined)));
      expect(err).toBeInstanceOf(Expected);
      expect(done.v).toBe(true);
    }
  });

  test("a thenable that calls back twice counts once (the join waited for nobody else)", async () => {
    const done = { v: false };
    await parallelForEach([0, 1], (i) => (i === 0 ? slow(done) : callsTwice));
    expect(done.v).toBe(true);
    done.v = false;
    let running = 0;
    let most = 0;
    await maxConcurrentForEach([0, 1, 2, 3, 4, 5], 2, (i) => {
      if (i === 0) return callsTwice;
      running++;
      most = Math.max(most, running);
      return sleep(5).then(() => void running--);
    });
    expect(most).toBeLessThanOrEqual(2);
    await maxConcurrentForEach([0, 1], 2, (i) => (i === 0 ? slow(done) : callsTwice));
    expect(done.v).toBe(true);
  });

  test("maxConcurrentForEach stopped by an abort closes a generator (its finally runs), as a for...of break would", async () => {
    let closed = false;
    function* items(): Generator<number> {
      try {
        for (let i = 0; ; i++) yield i;
      } finally {
        closed = true;
      }
    }
    const ac = new AbortController();
    const err = await errorOf(
      maxConcurrentForEach(items(), 2, (i) => {
        if (i === 3) ac.abort();
        return sleep(1);
      }, { signal: ac.signal }),
    );
    expect(err).toBeInstanceOf(AbortError);
    expect(closed).toBe(true);
  });

  test("withTimeout of a thenable whose then() throws rejects and leaves no timer or listener behind", async () => {
    const ac = new AbortController();
    let listeners = 0;
    const add = ac.signal.addEventListener.bind(ac.signal);
    const remove = ac.signal.removeEventListener.bind(ac.signal);
    ac.signal.addEventListener = ((t: string, l: EventListener, o?: AddEventListenerOptions) => (listeners++, add(t, l, o))) as typeof add;
    ac.signal.removeEventListener = ((t: string, l: EventListener, o?: EventListenerOptions) => (listeners--, remove(t, l, o))) as typeof remove;
    const before = armedTimers();
    for (let i = 0; i < 10; i++) {
      expect(await errorOf(withTimeout(throwingThen as unknown as Promise<void>, 60_000, { signal: ac.signal }))).toBeInstanceOf(Expected);
    }
    expect(armedTimers()).toBe(before);
    expect(listeners).toBe(0);
  });
});

describe("the errors list of a join", () => {
  test("an error object shared by two joins reports each join's own failures, not a stale list", async () => {
    const sentinel = new Error("shared sentinel");
    const e1 = await errorOf(
      parallelForEach([1, 2], async (i) => {
        throw i === 1 ? sentinel : new Error("call-1 other");
      }),
    );
    expect(e1).toBe(sentinel);
    expect((e1 as { errors: Error[] }).errors.map((e) => e.message)).toEqual(["shared sentinel", "call-1 other"]);
    // Second join: only the sentinel fails. No list from the first call may remain on it.
    const e2 = await errorOf(
      parallelForEach([1, 2], async (i) => {
        if (i === 1) throw sentinel;
      }),
    );
    expect(e2).toBe(sentinel);
    expect((e2 as { errors?: unknown }).errors).toBeUndefined();
    // An AggregateError's own errors are never touched.
    const agg = new AggregateError([new Error("inner")], "agg");
    const e3 = await errorOf(
      parallelForEach([1, 2], async (i) => {
        throw i === 1 ? agg : new Error("other");
      }),
    );
    expect((e3 as AggregateError).errors.map((e: Error) => e.message)).toEqual(["inner"]);
  });
});

describe("joins of an iterable that throws", () => {
  test("whenAll, whenAllSucceed and whenAny reject with the iterable's error and call no function input", async () => {
    for (const join of [whenAll, whenAllSucceed, whenAny] as ((f: Iterable<unknown>) => Promise<unknown>)[]) {
      let called = false;
      function* inputs() {
        yield Promise.resolve(1);
        yield () => (called = true);
        throw new Expected("iterable failed");
      }
      const p = join(inputs()); // a rejection, not a synchronous throw
      expect(await errorOf(p)).toBeInstanceOf(Expected);
      expect(called).toBe(false);
      // A non-iterable is still refused synchronously.
      expect(() => join(5 as never)).toThrow(InvalidArgumentError);
    }
  });

  test("the promises it yielded before throwing are observed: their later rejections are not unhandled", () => {
    const { exitCode, result, output } = inChild(`
      const late = () => sleep(2).then(() => { throw new Error("input failed later"); });
      function* inputs() { yield late(); yield Promise.reject(new Error("input failed now")); throw new Error("iterable failed"); }
      const got = [];
      for (const join of [F.whenAll, F.whenAllSucceed, F.whenAny]) {
        got.push(await join(inputs()).then(() => "resolved", (e) => e.message));
      }
      await sleep(20);
      console.log(JSON.stringify(got));
    `);
    expect(exitCode, output).toBe(0);
    expect(result).toEqual(["iterable failed", "iterable failed", "iterable failed"]);
  });
});

describe("joins with an AbortSignal", () => {
  test("an already-aborted signal observes the promise inputs it abandons (no unhandled rejection) and calls no function", () => {
    const { exitCode, result, output } = inChild(`
      const ac = new AbortController();
      ac.abort("stop");
      const signal = ac.signal;
      const late = () => sleep(2).then(() => { throw new Error("input failed later"); });
      const now = () => Promise.reject(new Error("input failed now"));
      let called = false;
      const fn = () => { called = true; };
      const outcome = (p) => p.then(() => "resolved", (e) => e.code);
      const got = [];
      for (const join of [F.whenAll, F.whenAllSucceed, F.whenAny]) {
        got.push(await outcome(join([late(), now(), fn], { signal })));
        got.push(await outcome(join(new Set([late(), now(), fn]), { signal })));
      }
      got.push(await outcome(F.withTimeout(late(), 1000, { signal })));
      got.push(await outcome(F.withTimeout(now(), 1000, { signal })));
      await sleep(20);
      console.log(JSON.stringify({ got, called }));
    `);
    expect(exitCode, output).toBe(0);
    expect(result).toEqual({ got: Array(8).fill("ABORT_ERR"), called: false });
  });

  test("whenAll, whenAllSucceed and whenAny reject with AbortError when it aborts; an aborted one calls no input", async () => {
    for (const join of [whenAll, whenAllSucceed, whenAny] as ((f: unknown[], o?: { signal?: AbortSignal }) => Promise<unknown>)[]) {
      const ac = new AbortController();
      const slow = sleep(10_000, { signal: ac.signal }).catch(() => {});
      const p = join([slow, () => sleep(10_000, { signal: ac.signal }).catch(() => {})], { signal: ac.signal });
      ac.abort("stop");
      const err = await errorOf(p);
      expect(err).toBeInstanceOf(AbortError);
      expect(err.cause).toBe("stop");
      let called = false;
      const again = join([() => (called = true)], { signal: ac.signal });
      expect(await errorOf(again)).toBeInstanceOf(AbortError);
      expect(called).toBe(false);
    }
  });

  test("a join that settles first removes its abort listener and is not affected by a later abort", async () => {
    const ac = new AbortController();
    let listeners = 0;
    const signal = ac.signal;
    const add = signal.addEventListener.bind(signal);
    const remove = signal.removeEventListener.bind(signal);
    signal.addEventListener = ((...a: Parameters<typeof add>) => (listeners++, add(...a))) as typeof add;
    signal.removeEventListener = ((...a: Parameters<typeof remove>) => (listeners--, remove(...a))) as typeof remove;
    expect(await whenAllSucceed([1, Promise.resolve(2)], { signal })).toEqual([1, 2]);
    expect((await whenAny([sleep(1).then(() => 3)], { signal })).index).toBe(0);
    expect((await whenAll([Promise.reject(new Error("x"))], { signal }))[0]!.status).toBe("rejected");
    expect(listeners).toBe(0);
    ac.abort();
  });

  test("bad options are refused", () => {
    expect(() => whenAll([], { signal: 1 as never })).toThrow(InvalidArgumentError);
    expect(() => whenAny([1], null as never)).toThrow(InvalidArgumentError);
  });
});
