import { describe, expect, test } from "bun:test";
import { AbortError, InvalidArgumentError, ShoalError, TimedOutError } from "../../src/core/errors.ts";
import { parallelForEach } from "../../src/core/future.ts";
import { SharedMutex } from "../../src/core/shared-mutex.ts";
import { sleep } from "../../src/core/timer.ts";
import { errorOf, quiet, status } from "./fixtures/util.ts";


const range = (n: number) => Array.from({ length: n }, (_, i) => i);

describe("SharedMutex", () => {
  test("validates its arguments", () => {
    const m = new SharedMutex();
    expect(() => m.lock({ timeoutMs: -1 })).toThrow(InvalidArgumentError);
    expect(() => m.lockShared({ signal: 3 as never })).toThrow(InvalidArgumentError);
    expect(() => m.withLock(undefined as never)).toThrow(InvalidArgumentError);
    expect(() => m.withSharedLock("f" as never)).toThrow(InvalidArgumentError);
    expect(m.locked).toBe(false);
  });

  test("exclusive holders never overlap (Seastar test_shared_mutex_exclusive)", async () => {
    const m = new SharedMutex();
    let inside = 0;
    let most = 0;
    await parallelForEach(range(10), () =>
      m.withLock(async () => {
        most = Math.max(most, ++inside);
        await sleep(1);
        inside--;
      }),
    );
    expect(most).toBe(1);
    expect(m.locked).toBe(false);
  });

  test("shared holders run together (Seastar test_shared_mutex_shared)", async () => {
    const m = new SharedMutex();
    let inside = 0;
    let most = 0;
    await parallelForEach(range(100), () =>
      m.withSharedLock(async () => {
        most = Math.max(most, ++inside);
        await sleep(1);
        inside--;
      }),
    );
    expect(most).toBe(100);
    expect(m.sharedHolders).toBe(0);
  });

  test("writers run alone among readers (Seastar test_shared_mutex_mixed)", async () => {
    const m = new SharedMutex();
    let readers = 0;
    let writers = 0;
    let violations = 0;
    await parallelForEach(range(100), (i) =>
      i % 9 === 0
        ? m.withLock(async () => {
            if (readers !== 0 || writers !== 0) violations++;
            writers++;
            await sleep(1);
            writers--;
          })
        : m.withSharedLock(async () => {
            if (writers !== 0) violations++;
            readers++;
            await sleep(1);
            readers--;
          }),
    );
    expect(violations).toBe(0);
    expect(m.locked).toBe(false);
    expect(m.sharedHolders).toBe(0);
  });

  test("a waiting writer blocks readers that arrive after it", () => {
    const m = new SharedMutex();
    expect(status(m.lockShared())).toBe("fulfilled");
    const writer = m.lock();
    expect(status(writer)).toBe("pending");
    expect(m.tryLockShared()).toBe(false);
    const reader = m.lockShared();
    expect(status(reader)).toBe("pending");
    m.unlockShared();
    expect(status(writer)).toBe("fulfilled");
    expect(status(reader)).toBe("pending");
    m.unlock();
    expect(status(reader)).toBe("fulfilled");
    expect(m.sharedHolders).toBe(1);
  });

  test("unlock admits every reader queued up to the next writer, together", () => {
    const m = new SharedMutex();
    expect(m.tryLock()).toBe(true);
    const r1 = m.lockShared();
    const r2 = m.lockShared();
    const w2 = m.lock();
    const r3 = m.lockShared();
    m.unlock();
    expect([r1, r2, w2, r3].map(status)).toEqual(["fulfilled", "fulfilled", "pending", "pending"]);
    expect(m.sharedHolders).toBe(2);
    m.unlockShared();
    expect(status(w2)).toBe("pending");
    m.unlockShared();
    expect(status(w2)).toBe("fulfilled");
    m.unlock();
    expect(status(r3)).toBe("fulfilled");
    expect(m.waiters).toBe(0);
  });

  test("tryLock and tryLockShared never wait", () => {
    const m = new SharedMutex();
    expect(m.tryLockShared()).toBe(true);
    expect(m.tryLock()).toBe(false);
    m.unlockShared();
    expect(m.tryLock()).toBe(true);
    expect(m.tryLock()).toBe(false);
    expect(m.tryLockShared()).toBe(false);
    m.unlock();
  });

  test("unlocking what is not held throws ERR_NOT_LOCKED", () => {
    const m = new SharedMutex();
    for (const fn of [() => m.unlock(), () => m.unlockShared()]) {
      let caught: unknown;
      try {
        fn();
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(ShoalError);
      expect((caught as ShoalError).code).toBe("ERR_NOT_LOCKED");
    }
  });

  test("guards unlock on dispose, once", async () => {
    const m = new SharedMutex();
    {
      using g = await m.lockGuard();
      expect(g.exclusive).toBe(true);
      expect(m.locked).toBe(true);
    }
    expect(m.locked).toBe(false);
    {
      using a = await m.lockSharedGuard();
      using b = await m.lockSharedGuard();
      expect(a.exclusive).toBe(false);
      expect(m.sharedHolders).toBe(2);
      b.release();
      b.release();
      expect(m.sharedHolders).toBe(1);
    }
    expect(m.sharedHolders).toBe(0);
  });

  test("withLock unlocks when fn throws", async () => {
    const m = new SharedMutex();
    const err = await errorOf(
      m.withLock(() => {
        throw new Error("boom");
      }),
    );
    expect((err as Error).message).toBe("boom");
    expect(m.locked).toBe(false);
    expect(await m.withSharedLock(async () => 7)).toBe(7);
    expect(m.sharedHolders).toBe(0);
  });

  test("a queued writer that aborts lets the readers behind it in", () => {
    const m = new SharedMutex();
    expect(m.tryLockShared()).toBe(true);
    const ac = new AbortController();
    const writer = quiet(m.lock({ signal: ac.signal }));
    const reader = m.lockShared();
    expect(status(reader)).toBe("pending");
    ac.abort();
    expect(status(writer)).toBe("rejected");
    expect(status(reader)).toBe("fulfilled");
    expect(m.sharedHolders).toBe(2);
  });

  test("a queued writer that times out lets the readers behind it in", async () => {
    const m = new SharedMutex();
    expect(m.tryLockShared()).toBe(true);
    const writer = quiet(m.lock({ timeoutMs: 1 }));
    const reader = m.lockShared();
    expect(await errorOf(writer)).toBeInstanceOf(TimedOutError);
    expect(status(reader)).toBe("fulfilled");
    expect(m.locked).toBe(false);
  });

  test("an already-aborted signal rejects at once, even when the lock is free", async () => {
    const m = new SharedMutex();
    const reason = new Error("no");
    const err = await errorOf(m.lock({ signal: AbortSignal.abort(reason) }));
    expect(err).toBeInstanceOf(AbortError);
    expect((err as AbortError).cause).toBe(reason);
    expect(await errorOf(m.lockShared({ signal: AbortSignal.abort() }))).toBeInstanceOf(AbortError);
    let ran = false;
    expect(await errorOf(m.withLock(() => void (ran = true), { signal: AbortSignal.abort() }))).toBeInstanceOf(
      AbortError,
    );
    expect(ran).toBe(false);
    expect(m.locked).toBe(false);
    expect(m.sharedHolders).toBe(0);
  });
});

describe("SharedMutex: waiters sharing one AbortSignal", () => {
  test("a reader behind an aborted writer does not take the lock when the signal aborts", async () => {
    const m = new SharedMutex();
    await m.lockShared();
    const ac = new AbortController();
    const writer = quiet(m.lock({ signal: ac.signal }));
    const reader = quiet(m.lockShared({ signal: ac.signal }));
    ac.abort();
    expect(await errorOf(writer)).toBeInstanceOf(AbortError);
    expect(await errorOf(reader)).toBeInstanceOf(AbortError);
    m.unlockShared();
    // Nobody holds it: an exclusive lock is granted at once.
    await m.lock();
    m.unlock();
  });
});
