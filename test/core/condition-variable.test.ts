import { describe, expect, test } from "bun:test";
import { AbortError, InvalidArgumentError, TimedOutError } from "../../src/core/errors.ts";
import { BrokenConditionVariableError, ConditionVariable } from "../../src/core/condition-variable.ts";
import { Timer } from "../../src/core/timer.ts";
import { armedBy, errorOf, quiet, status } from "./fixtures/util.ts";


describe("ConditionVariable", () => {
  test("validates its arguments", () => {
    const cv = new ConditionVariable();
    expect(() => cv.wait({ timeoutMs: -5 })).toThrow(InvalidArgumentError);
    expect(() => cv.wait(() => true, { signal: {} as AbortSignal })).toThrow(InvalidArgumentError);
    expect(() => cv.wait({} as never, {})).toThrow(InvalidArgumentError);
    expect(() => cv.wait(7 as never)).toThrow(InvalidArgumentError);
    expect(cv.waiters).toBe(0);
  });

  test("a signal with no waiter is kept for the next wait; signal wakes one in FIFO order, broadcast all (Seastar signal_consume)", () => {
    const cv = new ConditionVariable();
    cv.signal();
    expect(status(cv.wait())).toBe("fulfilled");
    const f2 = cv.wait();
    expect(status(f2)).toBe("pending");
    cv.signal();
    expect(status(f2)).toBe("fulfilled");

    const waiters = [cv.wait(), cv.wait(), cv.wait()];
    expect(waiters.map(status)).toEqual(["pending", "pending", "pending"]);
    cv.signal();
    expect(waiters.map(status)).toEqual(["fulfilled", "pending", "pending"]);
    cv.broadcast();
    expect(waiters.map(status)).toEqual(["fulfilled", "fulfilled", "fulfilled"]);
  });

  test("broadcast() is not remembered", () => {
    const cv = new ConditionVariable();
    cv.broadcast();
    expect(status(cv.wait())).toBe("pending");
  });

  test("hasWaiters reflects the queue", async () => {
    const cv = new ConditionVariable();
    expect(cv.hasWaiters).toBe(false);
    const f = cv.wait();
    expect(cv.hasWaiters).toBe(true);
    cv.signal();
    await f;
    expect(cv.hasWaiters).toBe(false);
  });

  test("broken() fails every waiter and every later wait (Seastar signal_break)", async () => {
    const cv = new ConditionVariable();
    const waiters = [quiet(cv.wait()), quiet(cv.wait()), quiet(cv.wait(() => false))];
    cv.broken();
    expect(cv.isBroken).toBe(true);
    for (const w of waiters) {
      const err = await errorOf(w);
      expect(err).toBeInstanceOf(BrokenConditionVariableError);
      expect((err as BrokenConditionVariableError).code).toBe("ERR_BROKEN_CONDITION_VARIABLE");
    }
    expect(await errorOf(cv.wait())).toBeInstanceOf(BrokenConditionVariableError);
    const oops = new Error("oops");
    const cv2 = new ConditionVariable();
    const w2 = quiet(cv2.wait());
    cv2.broken(oops);
    expect(await errorOf(w2)).toBe(oops);
    expect(await errorOf(cv2.wait(() => true))).toBe(oops);
  });

  test("a wait times out with TimedOutError and leaves the queue (Seastar timeout)", async () => {
    const cv = new ConditionVariable();
    const f = cv.wait({ timeoutMs: 2 });
    expect(status(f)).toBe("pending");
    const err = await errorOf(f);
    expect(err).toBeInstanceOf(TimedOutError);
    expect(cv.hasWaiters).toBe(false);
    // A wait served in time releases its timer.
    const { result: served, timers } = armedBy(() => cv.wait({ timeoutMs: 60_000 }));
    cv.signal();
    await served;
    expect(timers).toHaveLength(1);
    expect(timers[0]!.armed).toBe(false);
  });

  test("a predicate wait times out while the predicate stays false, and a stray signal does not change that (Seastar pred)", async () => {
    const cv = new ConditionVariable();
    const ready = false;
    expect(await errorOf(cv.wait(() => ready, { timeoutMs: 2 }))).toBeInstanceOf(TimedOutError);
    cv.signal();
    expect(await errorOf(cv.wait(() => ready, { timeoutMs: 2 }))).toBeInstanceOf(TimedOutError);
  });

  test("a predicate wait resolves when a wake-up finds the predicate true (Seastar pred_wait)", async () => {
    const cv = new ConditionVariable();
    let ready = false;
    const t = new Timer(() => {
      ready = true;
      cv.signal();
    }).arm(1);
    await cv.wait(() => ready);
    expect(t.armed).toBe(false);

    ready = false;
    expect(await errorOf(cv.wait(() => ready, { timeoutMs: 1 }))).toBeInstanceOf(TimedOutError);

    ready = true;
    cv.signal();
    await cv.wait(() => ready, { timeoutMs: 1000 });

    // Broadcasts with the predicate false keep it waiting until its deadline.
    ready = false;
    const periodic = new Timer(() => cv.broadcast()).armPeriodic(1);
    expect(await errorOf(cv.wait(() => ready, { timeoutMs: 20 }))).toBeInstanceOf(TimedOutError);
    periodic.cancel();
    cv.signal();

    ready = true;
    cv.signal();
    await cv.wait(() => ready);
    // The predicate was true at once, so the signal is still pending.
    expect(status(cv.wait())).toBe("fulfilled");
  });

  test("a woken predicate waiter whose predicate is still false goes to the back of the queue", () => {
    const cv = new ConditionVariable();
    let ready = false;
    const pred = cv.wait(() => ready);
    const plain = cv.wait();
    cv.signal(); // consumed by the predicate waiter, which re-queues behind `plain`
    expect(status(pred)).toBe("pending");
    expect(status(plain)).toBe("pending");
    cv.signal();
    expect(status(plain)).toBe("fulfilled");
    ready = true;
    cv.signal();
    expect(status(pred)).toBe("fulfilled");
    expect(cv.hasWaiters).toBe(false);
  });

  test("broadcast re-checks every predicate once and keeps the false ones waiting", () => {
    const cv = new ConditionVariable();
    const flags = [false, true, false];
    const waits = flags.map((_, i) => cv.wait(() => flags[i]));
    cv.broadcast();
    expect(waits.map(status)).toEqual(["pending", "fulfilled", "pending"]);
    expect(cv.waiters).toBe(2);
    flags[0] = flags[2] = true;
    cv.broadcast();
    expect(waits.map(status)).toEqual(["fulfilled", "fulfilled", "fulfilled"]);
  });

  test("a predicate that throws rejects its own wait", async () => {
    const cv = new ConditionVariable();
    const boom = new Error("boom");
    expect(
      await errorOf(
        cv.wait(() => {
          throw boom;
        }),
      ),
    ).toBe(boom);
    let calls = 0;
    const w = quiet(
      cv.wait(() => {
        if (++calls > 1) throw boom;
        return false;
      }),
    );
    cv.signal();
    expect(await errorOf(w)).toBe(boom);
    expect(cv.hasWaiters).toBe(false);
  });

  test("an abort fails only that waiter; the others are woken later (Seastar abort)", async () => {
    const cv = new ConditionVariable();
    const ac = new AbortController();
    const waiters = [cv.wait(), quiet(cv.wait({ signal: ac.signal })), cv.wait()];
    ac.abort();
    expect(waiters.map(status)).toEqual(["pending", "rejected", "pending"]);
    cv.broadcast();
    await waiters[0];
    await waiters[2];
    const err = await errorOf(waiters[1]!);
    expect(err).toBeInstanceOf(AbortError);
    expect((err as AbortError).cause).toBe(ac.signal.reason);
    // An already-aborted signal rejects at once, even with a pending signal or a true predicate.
    const cv2 = new ConditionVariable();
    cv2.signal();
    expect(await errorOf(cv2.wait({ signal: ac.signal }))).toBeInstanceOf(AbortError);
    expect(await errorOf(cv2.wait(() => true, { signal: ac.signal }))).toBeInstanceOf(AbortError);
    expect(status(cv2.wait())).toBe("fulfilled"); // the pending signal was not consumed
  });

  test("an abort during a predicate wait rejects it (Seastar pred_wait_abort)", async () => {
    const cv = new ConditionVariable();
    const ac = new AbortController();
    const f = quiet(cv.wait(() => false, { signal: ac.signal }));
    expect(status(f)).toBe("pending");
    ac.abort(new Error("expired"));
    const err = await errorOf(f);
    expect(err).toBeInstanceOf(AbortError);
    expect(((err as AbortError).cause as Error).message).toBe("expired");
    expect(cv.hasWaiters).toBe(false);
  });
});

describe("ConditionVariable: a waiter aborted before its listener ran", () => {
  // A stop signal whose first listener (registered before any wait) signals the condition: the
  // aborted head waiter is unlinked by signal() before its own abort listener runs.
  for (const kind of ["plain", "predicate"] as const) {
    test(`${kind}: it rejects with AbortError and the wakeup goes to the next waiter`, async () => {
      const cv = new ConditionVariable();
      const stop = new AbortController();
      stop.signal.addEventListener("abort", () => cv.signal());
      const a = kind === "plain" ? cv.wait({ signal: stop.signal }) : cv.wait(() => stop.signal.aborted, { signal: stop.signal });
      const b = cv.wait();
      stop.abort();
      expect(await errorOf(a)).toBeInstanceOf(AbortError);
      await b; // woken (it hung)
      expect(cv.waiters).toBe(0);
    });
  }

  test("with nobody else waiting, the signal is remembered for the next wait()", async () => {
    const cv = new ConditionVariable();
    const stop = new AbortController();
    stop.signal.addEventListener("abort", () => cv.signal());
    const a = cv.wait({ signal: stop.signal });
    stop.abort();
    expect(await errorOf(a)).toBeInstanceOf(AbortError);
    await cv.wait(); // resolves at once from the remembered signal
  });
});

describe("ConditionVariable: abort from inside a predicate", () => {
  test("a waiter whose signal its own predicate aborts is rejected, not re-queued with a dead signal", async () => {
    const cv = new ConditionVariable();
    const ac = new AbortController();
    const w = quiet(
      cv.wait(
        () => {
          ac.abort();
          return false;
        },
        { signal: ac.signal },
      ),
    );
    cv.signal();
    expect(await errorOf(w)).toBeInstanceOf(AbortError);
    expect(cv.waiters).toBe(0);
  });
});
