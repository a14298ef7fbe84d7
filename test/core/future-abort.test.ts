/**
 * The joins' abort paths: a function input may abort the join's own signal while
 * the join calls it (an input that fails at once and cancels its siblings through the shared
 * controller). No abort event comes after that, so the join must notice the signal is already
 * aborted when it starts listening, as withTimeout does.
 */
import { describe, expect, test } from "bun:test";
import { AbortError } from "../../src/core/errors.ts";
import { whenAll, whenAllSucceed, whenAny } from "../../src/core/future.ts";
import { bunTick, errorOf, status } from "./fixtures/util.ts";

const never = () => new Promise<never>(() => {});

describe("a join whose function input aborts the join's signal while it is called", () => {
  const joins = {
    whenAll: (inputs: unknown[], signal: AbortSignal) => whenAll(inputs, { signal }),
    whenAllSucceed: (inputs: unknown[], signal: AbortSignal) => whenAllSucceed(inputs, { signal }),
    whenAny: (inputs: unknown[], signal: AbortSignal) => whenAny(inputs, { signal }),
  };
  for (const [name, join] of Object.entries(joins)) {
    test(`${name} rejects with AbortError at once instead of waiting for inputs that never settle`, async () => {
      const ac = new AbortController();
      const reason = new Error("sibling failed");
      const p = join(
        [
          () => {
            ac.abort(reason);
            return never();
          },
          never(),
        ],
        ac.signal,
      );
      p.catch(() => {});
      // Nothing can settle the inputs: before the fix the join stayed pending for good.
      await bunTick();
      expect(status(p)).toBe("rejected");
      const err = await errorOf(p);
      expect(err).toBeInstanceOf(AbortError);
      expect(err.cause).toBe(reason);
    });
  }

  test("the abandoned inputs' later rejections are observed (never reported as unhandled)", async () => {
    const ac = new AbortController();
    let rejectLater!: (e: unknown) => void;
    const late = new Promise((_, reject) => (rejectLater = reject));
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on("unhandledRejection", onUnhandled);
    try {
      const p = whenAllSucceed(
        [
          () => {
            ac.abort();
            return late;
          },
        ],
        { signal: ac.signal },
      );
      expect(await errorOf(p)).toBeInstanceOf(AbortError);
      rejectLater(new Error("late failure"));
      await bunTick();
      await bunTick();
      expect(unhandled).toEqual([]);
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
  });
});
