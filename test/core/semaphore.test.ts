import { describe, expect, test } from "bun:test";
import { AbortError, InvalidArgumentError, TimedOutError } from "../../src/core/errors.ts";
import { BrokenSemaphoreError, Semaphore, SemaphoreUnits, withSemaphore } from "../../src/core/semaphore.ts";
import { Timer, sleep } from "../../src/core/timer.ts";
import { armedBy, errorOf, quiet, status } from "./fixtures/util.ts";


/** Counts the abort listeners a signal gains and loses. */
function countListeners(signal: AbortSignal) {
  const counts = { added: 0, removed: 0 };
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  signal.addEventListener = ((...args: Parameters<AbortSignal["addEventListener"]>) => {
    counts.added++;
    add(...args);
  }) as AbortSignal["addEventListener"];
  signal.removeEventListener = ((...args: Parameters<AbortSignal["removeEventListener"]>) => {
    counts.removed++;
    remove(...args);
  }) as AbortSignal["removeEventListener"];
  return counts;
}

describe("Semaphore", () => {
  test("validates its arguments", () => {
    for (const bad of [-1, 1.5, Number.NaN, Infinity, "3", undefined]) {
      expect(() => new Semaphore(bad as number)).toThrow(InvalidArgumentError);
    }
    expect(() => new Semaphore(-1)).toThrow(/count/);
    const sem = new Semaphore(1);
    expect(() => sem.wait(-1)).toThrow(InvalidArgumentError);
    expect(() => sem.wait(0.5)).toThrow(/units/);
    expect(() => sem.signal(-2)).toThrow(InvalidArgumentError);
    expect(() => sem.consume(1.25)).toThrow(InvalidArgumentError);
    expect(() => sem.tryWait(-1)).toThrow(InvalidArgumentError);
    expect(() => sem.wait(1, { signal: {} as AbortSignal })).toThrow(/opts\.signal/);
    expect(() => sem.wait(1, { timeoutMs: -1 })).toThrow(/timeoutMs/);
    expect(() => sem.wait(1, { timeoutMs: Number.NaN })).toThrow(InvalidArgumentError);
    expect(() => sem.wait(1, null as never)).toThrow(InvalidArgumentError);
    // A rejected argument must not have taken anything.
    expect(sem.available).toBe(1);
  });

  test("an uncontended wait resolves at once and takes the units", () => {
    const sem = new Semaphore(3);
    const p = sem.wait(2);
    expect(status(p)).toBe("fulfilled");
    expect(sem.available).toBe(1);
    expect(status(sem.wait(0))).toBe("fulfilled");
    expect(sem.available).toBe(1);
  });

  test("serves waiters strictly in FIFO order", async () => {
    const sem = new Semaphore(0);
    const order: number[] = [];
    const waits = [1, 2, 3].map((i) => sem.wait().then(() => void order.push(i)));
    expect(sem.waiters).toBe(3);
    sem.signal();
    await waits[0];
    expect(order).toEqual([1]);
    expect(sem.waiters).toBe(2);
    sem.signal(2);
    await Promise.all(waits);
    expect(order).toEqual([1, 2, 3]);
    expect(sem.available).toBe(0);
  });

  test("a large head waiter blocks smaller later waiters even when units would suffice", () => {
    const sem = new Semaphore(0);
    const big = sem.wait(5);
    const small = sem.wait(1);
    sem.signal(3);
    expect(status(big)).toBe("pending");
    expect(status(small)).toBe("pending");
    expect(sem.available).toBe(3);
    // tryWait must not overtake the queue either.
    expect(sem.tryWait(1)).toBe(false);
    sem.signal(2);
    expect(status(big)).toBe("fulfilled");
    expect(status(small)).toBe("pending");
    expect(sem.available).toBe(0);
    sem.signal(1);
    expect(status(small)).toBe("fulfilled");
    expect(sem.waiters).toBe(0);
  });

  test("a later wait queues behind waiters even when units are available", () => {
    const sem = new Semaphore(2);
    const head = sem.wait(3);
    const later = sem.wait(1);
    expect(status(later)).toBe("pending");
    sem.signal(1);
    expect(status(head)).toBe("fulfilled");
    expect(status(later)).toBe("pending");
  });

  test("consume() may take the count negative (Seastar test_semaphore_consume)", () => {
    const sem = new Semaphore(0);
    sem.consume(1);
    expect(sem.available).toBe(-1);
    expect(sem.waiters).toBe(0);
    expect(sem.tryWait(0)).toBe(false);
    const p = sem.wait(1);
    expect(status(p)).toBe("pending");
    expect(sem.waiters).toBe(1);
    sem.signal(2);
    expect(sem.waiters).toBe(0);
    expect(status(p)).toBe("fulfilled");
    expect(sem.available).toBe(0);
  });

  test("tryWait takes units only when no wait is needed", () => {
    const sem = new Semaphore(2);
    expect(sem.tryWait(2)).toBe(true);
    expect(sem.tryWait()).toBe(false);
    expect(sem.available).toBe(0);
  });

  test("broken() fails every waiter and every later wait with BrokenSemaphoreError", async () => {
    const sem = new Semaphore(0);
    const a = quiet(sem.wait());
    const b = quiet(sem.wait(3));
    sem.broken();
    expect(sem.isBroken).toBe(true);
    for (const p of [a, b, sem.wait(), sem.wait(0), sem.getUnits(1)]) {
      const err = await errorOf(p);
      expect(err).toBeInstanceOf(BrokenSemaphoreError);
      expect((err as BrokenSemaphoreError).code).toBe("ERR_BROKEN_SEMAPHORE");
    }
    expect(sem.waiters).toBe(0);
    sem.signal(5); // ignored
    expect(sem.available).toBe(0);
    expect(sem.tryWait(0)).toBe(false);
  });

  test("broken(err) fails waiters with the given error", async () => {
    const sem = new Semaphore(0);
    const oops = new Error("oops");
    const a = quiet(sem.wait());
    sem.broken(oops);
    expect(await errorOf(a)).toBe(oops);
    expect(await errorOf(sem.wait())).toBe(oops);
  });

  test("broken() drops the units still available to 0 (a semaphore broken with units left)", () => {
    const sem = new Semaphore(3);
    sem.broken();
    expect(sem.available).toBe(0);
    const negative = new Semaphore(0);
    negative.consume(2);
    negative.broken();
    expect(negative.available).toBe(0);
  });

  test("a timed-out waiter is removed and later waiters are still served", async () => {
    const sem = new Semaphore(0);
    const timed = quiet(sem.wait(1, { timeoutMs: 5 }));
    const patient = sem.wait(1);
    const err = await errorOf(timed);
    expect(err).toBeInstanceOf(TimedOutError);
    expect((err as TimedOutError).code).toBe("ETIMEDOUT");
    expect(sem.waiters).toBe(1);
    sem.signal();
    expect(status(patient)).toBe("fulfilled");
    expect(sem.available).toBe(0);
  });

  test("a head waiter that times out unblocks the smaller waiters behind it", async () => {
    const sem = new Semaphore(2);
    const big = quiet(sem.wait(5, { timeoutMs: 1 }));
    const small1 = sem.wait(1);
    const small2 = sem.wait(1);
    expect(status(small1)).toBe("pending");
    expect(await errorOf(big)).toBeInstanceOf(TimedOutError);
    expect(status(small1)).toBe("fulfilled");
    expect(status(small2)).toBe("fulfilled");
    expect(sem.available).toBe(0);
  });

  test("a wait served before its timeout does not time out and releases its timer", async () => {
    const sem = new Semaphore(0);
    const { result: p, timers } = armedBy(() => sem.wait(1, { timeoutMs: 60_000 }));
    expect(timers).toHaveLength(1);
    expect(timers[0]!.armed).toBe(true);
    sem.signal();
    await p;
    expect(timers[0]!.armed).toBe(false);
  });

  test("timeoutMs 0 on a blocked wait times out", async () => {
    const sem = new Semaphore(0);
    expect(await errorOf(sem.wait(1, { timeoutMs: 0 }))).toBeInstanceOf(TimedOutError);
    expect(sem.waiters).toBe(0);
  });

  test("an abort while waiting rejects with AbortError carrying the reason, and frees the slot", async () => {
    const sem = new Semaphore(0);
    const ac = new AbortController();
    const reason = new Error("stop");
    let ran = false;
    const p = quiet(sem.wait(1, { signal: ac.signal }).then(() => void (ran = true)));
    const next = sem.wait(1);
    ac.abort(reason);
    sem.signal();
    const err = await errorOf(p);
    expect(err).toBeInstanceOf(AbortError);
    expect((err as AbortError).code).toBe("ABORT_ERR");
    expect((err as AbortError).cause).toBe(reason);
    expect(ran).toBe(false);
    // The unit went to the next waiter, not to the aborted one.
    expect(status(next)).toBe("fulfilled");
    expect(sem.waiters).toBe(0);
  });

  test("an aborted head waiter unblocks the waiters behind it", () => {
    const sem = new Semaphore(1);
    const ac = new AbortController();
    const big = quiet(sem.wait(4, { signal: ac.signal }));
    const small = sem.wait(1);
    expect(status(small)).toBe("pending");
    ac.abort();
    expect(status(big)).toBe("rejected");
    expect(status(small)).toBe("fulfilled");
  });

  test("an already-aborted signal rejects at once, even when units are available", async () => {
    const sem = new Semaphore(5);
    const reason = new Error("already");
    const err = await errorOf(sem.wait(1, { signal: AbortSignal.abort(reason) }));
    expect(err).toBeInstanceOf(AbortError);
    expect((err as AbortError).cause).toBe(reason);
    expect(sem.available).toBe(5);
    expect(sem.waiters).toBe(0);
    expect(await errorOf(sem.getUnits(1, { signal: AbortSignal.abort() }))).toBeInstanceOf(AbortError);
  });

  test("an abort after the wait was served changes nothing", async () => {
    const sem = new Semaphore(0);
    const ac = new AbortController();
    const p = sem.wait(1, { signal: ac.signal });
    sem.signal();
    ac.abort();
    await p;
    expect(sem.available).toBe(0);
  });

  test("the abort listener is removed when the wait completes, whichever way", async () => {
    const sem = new Semaphore(0);
    const ac = new AbortController();
    const counts = countListeners(ac.signal);
    const served = sem.wait(1, { signal: ac.signal });
    sem.signal();
    await served;
    const timed = quiet(sem.wait(1, { signal: ac.signal, timeoutMs: 1 }));
    await errorOf(timed);
    const broken = quiet(sem.wait(1, { signal: ac.signal }));
    sem.broken();
    await errorOf(broken);
    expect(counts.added).toBe(3);
    expect(counts.removed).toBe(3);
  });

  test("getUnits returns a permit that gives the units back on dispose", async () => {
    const sem = new Semaphore(3);
    {
      using permit = await sem.getUnits(2);
      expect(permit.count).toBe(2);
      expect(permit.semaphore).toBe(sem);
      expect(sem.available).toBe(1);
    }
    expect(sem.available).toBe(3);
    // A permit returned early is not returned twice.
    {
      using permit = await sem.getUnits(3);
      permit.returnAll();
      expect(sem.available).toBe(3);
    }
    expect(sem.available).toBe(3);
  });

  test("getUnits waits like wait() and honours timeouts", async () => {
    const sem = new Semaphore(1);
    const held = await sem.getUnits(1);
    const waiting = sem.getUnits(1);
    const timed = quiet(sem.getUnits(1, { timeoutMs: 1 }));
    expect(await errorOf(timed)).toBeInstanceOf(TimedOutError);
    held[Symbol.dispose]();
    const second = await waiting;
    expect(second.count).toBe(1);
    expect(sem.available).toBe(0);
  });

  test("permit splitting, partial return, detach and adopt (Seastar semaphore_units)", () => {
    const sem = new Semaphore(3);
    const units = sem.tryGetUnits(3)!;
    expect(units.count).toBe(3);
    expect(units.returnUnits(1)).toBe(2);
    expect(sem.available).toBe(1);
    expect(() => units.returnUnits(10)).toThrow(InvalidArgumentError);
    expect(() => units.split(10)).toThrow(InvalidArgumentError);
    expect(sem.available).toBe(1);
    const part = units.split(1);
    expect(units.count).toBe(1);
    expect(part.count).toBe(1);
    expect(sem.available).toBe(1);
    part[Symbol.dispose]();
    expect(sem.available).toBe(2);
    units.adopt(sem.consumeUnits(2));
    expect(units.count).toBe(3);
    expect(sem.available).toBe(0);
    expect(units.detach()).toBe(3);
    units.returnAll();
    expect(sem.available).toBe(0); // detached units are the caller's to signal
    expect(() => units.adopt(new SemaphoreUnits(new Semaphore(1), 0))).toThrow(InvalidArgumentError);
  });

  test("a permit adopting itself keeps its units (it doubled them: the semaphore grew on return)", () => {
    const sem = new Semaphore(4);
    const units = sem.tryGetUnits(3)!;
    units.adopt(units);
    expect(units.count).toBe(3);
    units[Symbol.dispose]();
    expect(sem.available).toBe(4);
  });

  test("tryGetUnits fails without waiting when units are short", () => {
    const sem = new Semaphore(1);
    const first = sem.tryGetUnits(1);
    expect(first?.count).toBe(1);
    expect(sem.tryGetUnits(1)).toBeUndefined();
    first!.returnAll();
    expect(sem.available).toBe(1);
  });

  test("withSemaphore returns the units on success and on failure", async () => {
    const sem = new Semaphore(1);
    let counter = 0;
    expect(await withSemaphore(sem, 1, () => ++counter)).toBe(1);
    const err = await errorOf(
      withSemaphore(sem, 1, async () => {
        ++counter;
        expect(sem.available).toBe(0);
        throw new Error("boom");
      }),
    );
    expect((err as Error).message).toBe("boom");
    expect(counter).toBe(2);
    expect(sem.available).toBe(1);
    expect(() => withSemaphore(sem, 1, 5 as never)).toThrow(InvalidArgumentError);
    expect(() => withSemaphore({} as Semaphore, 1, () => 1)).toThrow(InvalidArgumentError);
  });

  test("withSemaphore never lets more than the units run at once", async () => {
    const sem = new Semaphore(2);
    let inside = 0;
    let most = 0;
    await Promise.all(
      Array.from({ length: 10 }, () =>
        withSemaphore(sem, 1, async () => {
          most = Math.max(most, ++inside);
          await sleep(1);
          inside--;
        }),
      ),
    );
    expect(most).toBe(2);
    expect(sem.available).toBe(2);
  });

  test("many queued waiters are each served once, in order", async () => {
    const sem = new Semaphore(0);
    const served: number[] = [];
    const waits = Array.from({ length: 1000 }, (_, i) => sem.wait().then(() => void served.push(i)));
    for (let i = 0; i < 1000; i++) sem.signal();
    await Promise.all(waits);
    expect(served).toEqual(Array.from({ length: 1000 }, (_, i) => i));
  });
});

describe("Semaphore: waiters sharing one AbortSignal", () => {
  test("when the signal aborts, a waiter behind the aborted head is not granted units", async () => {
    // The head's abort listener runs first and leaves; the semaphore then looks at the next
    // waiter, whose listener has not run yet. It must be failed, not granted.
    const sem = new Semaphore(2);
    sem.consume(2);
    const ac = new AbortController();
    const big = quiet(sem.wait(3, { signal: ac.signal }));
    const small = quiet(sem.wait(1, { signal: ac.signal }));
    sem.signal(1); // 1 unit free: the small waiter is held back only by the big head
    ac.abort();
    expect((await errorOf(big)).code).toBe("ABORT_ERR");
    expect((await errorOf(small)).code).toBe("ABORT_ERR");
    expect(sem.available).toBe(1);
    expect(sem.waiters).toBe(0);
  });
});
