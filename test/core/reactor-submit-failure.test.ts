/**
 * submitNow() whose io_uring_enter fails hard. Since the native side keeps every descriptor on
 * a failed enter (those in the SQ ring go with the next enter, the rest stay queued), the
 * operations still run: a throw told the caller that queued one (the I/O scheduler's dispatch)
 * that it failed, so it skipped counting the request in flight, and its submit() threw for an
 * operation that then completed anyway.
 *
 * The kernel's failure is simulated: the native submit is wrapped to fail once, as the native
 * side does (nothing copied into the SQ ring: every descriptor kept, info.ops_left = n).
 */
import { expect, test } from "bun:test";
import { reactor } from "../../src/index.ts";

const ENOMEM = 12;

test("a failed submitNow() keeps the operations queued and does not throw; they complete with the next turn", async () => {
  const r = reactor();
  const inner = r as unknown as { submitFn: (h: number, n: number) => number; info: Int32Array };
  const real = inner.submitFn;
  const ops = [r.nop(), r.nop(), r.nop()];
  expect(r.queuedCount).toBe(3);
  const failuresBefore = r.submitFailures;
  (inner as { submitFn: unknown }).submitFn = (_h: number, n: number) => {
    inner.info[6] = n; // none reached the SQ ring: all kept at the front of the array
    return -ENOMEM;
  };
  let thrown: unknown;
  try {
    r.submitNow();
  } catch (e) {
    thrown = e;
  } finally {
    (inner as { submitFn: unknown }).submitFn = real;
  }
  expect(thrown).toBeUndefined();
  expect(r.queuedCount).toBe(3);
  expect(r.submitFailures).toBe(failuresBefore + 1);
  // The turn submits them: each completes once.
  expect(await Promise.all(ops)).toEqual([undefined, undefined, undefined]);
  expect(r.queuedCount).toBe(0);
});
