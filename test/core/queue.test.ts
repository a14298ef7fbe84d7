import { describe, expect, test } from "bun:test";
import { AbortError, InvalidArgumentError, TimedOutError } from "../../src/core/errors.ts";
import { repeat, stopIteration } from "../../src/core/future.ts";
import { Queue, QueueAbortedError, QueueEmptyError } from "../../src/core/queue.ts";
import { sleep } from "../../src/core/timer.ts";
import { errorOf, quiet, status } from "./fixtures/util.ts";


describe("Queue", () => {
  test("validates its arguments", () => {
    for (const bad of [0, -1, 1.5, Number.NaN, "2", undefined]) {
      expect(() => new Queue(bad as number)).toThrow(InvalidArgumentError);
    }
    expect(() => new Queue(0)).toThrow(/maxSize/);
    expect(new Queue(Infinity).maxSize).toBe(Infinity);
    const q = new Queue<number>(1);
    expect(() => q.popEventually({ timeoutMs: -1 })).toThrow(InvalidArgumentError);
    expect(() => q.pushEventually(1, { signal: "x" as never })).toThrow(InvalidArgumentError);
    expect(() => q.setMaxSize(0)).toThrow(InvalidArgumentError);
  });

  test("push and pop are FIFO and bounded", () => {
    const q = new Queue<number>(2);
    expect(q.empty).toBe(true);
    expect(q.push(1)).toBe(true);
    expect(q.push(2)).toBe(true);
    expect(q.full).toBe(true);
    expect(q.push(3)).toBe(false);
    expect(q.size).toBe(2);
    expect(q.peek()).toBe(1);
    expect(q.pop()).toBe(1);
    expect(q.pop()).toBe(2);
    expect(q.empty).toBe(true);
    expect(() => q.pop()).toThrow(QueueEmptyError);
    expect(() => q.peek()).toThrow(QueueEmptyError);
  });

  test("keeps order across many wrap-arounds and growth", () => {
    const q = new Queue<number>(Infinity);
    let next = 0;
    let expected = 0;
    for (let round = 0; round < 50; round++) {
      for (let i = 0; i < 37; i++) q.push(next++);
      for (let i = 0; i < 23; i++) expect(q.pop()).toBe(expected++);
    }
    while (!q.empty) expect(q.pop()).toBe(expected++);
    expect(expected).toBe(next);
  });

  test("popEventually waits for a push, and consumers are served in FIFO order", async () => {
    const q = new Queue<string>(4);
    const first = q.popEventually();
    const second = q.popEventually();
    expect(q.blockedConsumers).toBe(2);
    expect(status(first)).toBe("pending");
    q.push("a");
    q.push("b");
    expect(await first).toBe("a");
    expect(await second).toBe("b");
    // The items went straight to the waiters.
    expect(q.size).toBe(0);
    q.push("c");
    expect(await q.popEventually()).toBe("c");
  });

  test("pushEventually waits for room, and producers are admitted in FIFO order", async () => {
    const q = new Queue<number>(1);
    expect(status(q.pushEventually(1))).toBe("fulfilled");
    const second = q.pushEventually(2);
    const third = q.pushEventually(3);
    expect(q.blockedProducers).toBe(2);
    expect(status(second)).toBe("pending");
    // push() cannot overtake the waiting producers.
    expect(q.push(99)).toBe(false);
    expect(q.pop()).toBe(1);
    expect(status(second)).toBe("fulfilled");
    expect(status(third)).toBe("pending");
    expect(q.pop()).toBe(2);
    expect(q.pop()).toBe(3);
    await third;
    expect(q.empty).toBe(true);
  });

  test("notEmpty and notFull resolve when the state holds", async () => {
    const q = new Queue<number>(1);
    expect(status(q.notFull())).toBe("fulfilled");
    const ne = q.notEmpty();
    expect(status(ne)).toBe("pending");
    q.push(7);
    expect(status(ne)).toBe("fulfilled");
    expect(status(q.notEmpty())).toBe("fulfilled");
    const nf = q.notFull();
    expect(status(nf)).toBe("pending");
    q.pop();
    expect(status(nf)).toBe("fulfilled");
    await Promise.all([ne, nf]);
  });

  test("abort() fails every waiter, drops the items and fails later calls", async () => {
    const q = new Queue<number>(1);
    const empty = new Queue<number>(1);
    q.push(1);
    const pusher = quiet(q.pushEventually(2));
    const notFull = quiet(q.notFull());
    const popper = quiet(empty.popEventually());
    const notEmpty = quiet(empty.notEmpty());
    const boom = new Error("boom");
    q.abort(boom);
    empty.abort();
    expect(q.isAborted).toBe(true);
    expect(q.size).toBe(0);
    expect(await errorOf(pusher)).toBe(boom);
    expect(await errorOf(notFull)).toBe(boom);
    expect(await errorOf(popper)).toBeInstanceOf(QueueAbortedError);
    expect(((await errorOf(notEmpty)) as QueueAbortedError).code).toBe("ERR_QUEUE_ABORTED");
    expect(() => q.push(3)).toThrow(boom);
    expect(() => q.pop()).toThrow(boom);
    expect(await errorOf(q.popEventually())).toBe(boom);
    expect(await errorOf(q.pushEventually(4))).toBe(boom);
    expect(await errorOf(q.notEmpty())).toBe(boom);
  });

  test("popEventually after abort fails at once (Seastar test_queue_pop_after_abort)", async () => {
    const q = new Queue<number>(1);
    q.abort(new Error("boom"));
    expect(((await errorOf(q.popEventually())) as Error).message).toBe("boom");
    expect(((await errorOf(q.pushEventually(1))) as Error).message).toBe("boom");
  });

  test("an aborted consumer leaves the queue and the next item is kept for others", async () => {
    const q = new Queue<number>(2);
    const ac = new AbortController();
    const reason = new Error("bye");
    const gone = quiet(q.popEventually({ signal: ac.signal }));
    ac.abort(reason);
    const err = await errorOf(gone);
    expect(err).toBeInstanceOf(AbortError);
    expect((err as AbortError).cause).toBe(reason);
    expect(q.blockedConsumers).toBe(0);
    q.push(5);
    expect(q.size).toBe(1);
    expect(await q.popEventually()).toBe(5);
  });

  test("a producer that times out never enqueues its item", async () => {
    const q = new Queue<number>(1);
    q.push(1);
    const late = quiet(q.pushEventually(2, { timeoutMs: 1 }));
    const after = q.pushEventually(3);
    expect(await errorOf(late)).toBeInstanceOf(TimedOutError);
    expect(q.pop()).toBe(1);
    await after;
    expect(q.pop()).toBe(3);
    expect(q.empty).toBe(true);
  });

  test("an already-aborted signal rejects at once and changes nothing", async () => {
    const q = new Queue<number>(1);
    const signal = AbortSignal.abort();
    expect(await errorOf(q.pushEventually(1, { signal }))).toBeInstanceOf(AbortError);
    expect(q.size).toBe(0);
    q.push(2);
    expect(await errorOf(q.popEventually({ signal }))).toBeInstanceOf(AbortError);
    expect(q.size).toBe(1);
    expect(await errorOf(q.notEmpty({ signal }))).toBeInstanceOf(AbortError);
    expect(await errorOf(q.notFull({ signal }))).toBeInstanceOf(AbortError);
  });

  test("growing maxSize admits waiting producers", async () => {
    const q = new Queue<number>(1);
    q.push(1);
    const waiting = q.pushEventually(2);
    q.setMaxSize(3);
    expect(status(waiting)).toBe("fulfilled");
    expect(q.size).toBe(2);
    q.setMaxSize(1);
    expect(q.full).toBe(true);
    expect(q.pop()).toBe(1);
    expect(q.full).toBe(true);
    await waiting;
  });

  test("a producer and a consumer loop move every item in order (Seastar test_queue_pop_eventually)", async () => {
    const q = new Queue<number>(3);
    const total = 2000;
    let pushed = 0;
    const popped: number[] = [];
    const pusher = repeat(async () => {
      await q.pushEventually(pushed++);
      if (pushed % 97 === 0) await sleep(0);
      return pushed === total ? stopIteration.yes : stopIteration.no;
    });
    const popper = repeat(async () => {
      popped.push(await q.popEventually());
      return popped.length === total ? stopIteration.yes : stopIteration.no;
    });
    await Promise.all([pusher, popper]);
    expect(q.empty).toBe(true);
    expect(popped).toEqual(Array.from({ length: total }, (_, i) => i));
  });
});

describe("Queue: waiters sharing one AbortSignal", () => {
  test("an item pushed while an aborted consumer's listener has not run goes to the next consumer or the queue", async () => {
    const q = new Queue<number>(4);
    const ac = new AbortController();
    const a = quiet(q.popEventually({ signal: ac.signal }));
    // Runs between the two consumers' abort listeners (listeners run in the order they were
    // added), as a shutdown path might: the second consumer, aborted but not told yet, must
    // not receive the item.
    ac.signal.addEventListener("abort", () => q.push(7), { once: true });
    const b = quiet(q.popEventually({ signal: ac.signal }));
    ac.abort();
    expect(await errorOf(a)).toBeInstanceOf(AbortError);
    expect(await errorOf(b)).toBeInstanceOf(AbortError);
    expect(q.pop()).toBe(7);
  });
});
