/**
 * repeat, repeatUntilValue, doUntil and keepDoing yield to the loop once the task quota is
 * spent, as Seastar's loops check need_preempt(): a body that never suspends (a plain value or
 * a settled promise) would otherwise hold the shard, and the task that should end the loop
 * could never run. maxConcurrentForEach, whose loop in Seastar is a do_until, does the same.
 */
import { expect, test } from "bun:test";
import { AbortError } from "../../src/core/errors.ts";
import { doUntil, keepDoing, maxConcurrentForEach, repeat, repeatUntilValue, stopIteration } from "../../src/core/future.ts";
import { schedule } from "../../src/core/scheduler.ts";
import { errorOf } from "./fixtures/util.ts";

// Far more iterations than one task quota holds; the loop stops there if never preempted.
const GUARD = 300_000;

test("repeat with a body that never suspends lets a queued task run (and stop it)", async () => {
  let flag = false;
  schedule(() => void (flag = true));
  let n = 0;
  await repeat(() => (flag || ++n >= GUARD ? stopIteration.yes : stopIteration.no));
  expect(flag).toBe(true);
  expect(n).toBeLessThan(GUARD);
});

test("repeat with an async body that resolves at once lets a queued task run", async () => {
  let flag = false;
  schedule(() => void (flag = true));
  let n = 0;
  await repeat(async () => flag || ++n >= GUARD);
  expect(flag).toBe(true);
});

test("repeatUntilValue with a body that never suspends lets a queued task run", async () => {
  let flag = false;
  schedule(() => void (flag = true));
  let n = 0;
  const v = await repeatUntilValue(() => (flag ? "task" : ++n >= GUARD ? "guard" : undefined));
  expect(v).toBe("task");
});

test("doUntil with a body that never suspends lets a queued task run", async () => {
  let flag = false;
  schedule(() => void (flag = true));
  let n = 0;
  await doUntil(
    () => flag || n >= GUARD,
    () => void n++,
  );
  expect(flag).toBe(true);
});

test("keepDoing with a body that never suspends is stopped by a task aborting its signal", async () => {
  const controller = new AbortController();
  schedule(() => controller.abort("stop"));
  let n = 0;
  const err = await errorOf(
    keepDoing(
      () => {
        if (++n >= GUARD) throw new Error("the abort never ran");
      },
      { signal: controller.signal },
    ),
  );
  expect(err).toBeInstanceOf(AbortError);
  expect(err.cause).toBe("stop");
});

/** Endless items; throws once GUARD were taken, which only happens if the loop never ran. */
function* endless(): Generator<number> {
  for (let i = 0; ; i++) {
    if (i >= GUARD) throw new Error("the abort never ran");
    yield i;
  }
}

for (const [kind, fn] of [
  ["calls that return plain values", () => undefined],
  ["calls whose promises settle at once", async () => undefined],
] as const) {
  test(`maxConcurrentForEach over endless items, ${kind}, is stopped by a task aborting its signal`, async () => {
    const controller = new AbortController();
    schedule(() => controller.abort("stop"));
    let calls = 0;
    const err = await errorOf(
      maxConcurrentForEach(
        endless(),
        2,
        () => {
          calls++;
          return fn();
        },
        { signal: controller.signal },
      ),
    );
    expect(err).toBeInstanceOf(AbortError);
    expect(err.cause).toBe("stop");
    expect(calls).toBeLessThan(GUARD);
  });
}

test("maxConcurrentForEach still runs every item once, in order, across its pauses", async () => {
  const seen: number[] = [];
  const items = Array.from({ length: 200_000 }, (_, i) => i);
  await maxConcurrentForEach(items, 3, (i) => {
    seen.push(i);
    return i % 2 === 0 ? undefined : Promise.resolve();
  });
  expect(seen.length).toBe(items.length);
  expect(seen.every((v, i) => v === i)).toBe(true);
});
