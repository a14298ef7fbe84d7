/**
 * Edge cases of calls in the smp runtime (fixtures/call-results.ts), each scenario in its own app
 * process: handler and service results are settled as a promise would settle them; a buffer
 * released while its message is encoded fails the call before anything is sent; answers that
 * arrived before a shard's exit notice settle their calls (with scheduling groups too).
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { runApp, smpArgs, type AppRun } from "./helpers.ts";

const FIXTURE = "./fixtures/call-results.ts";

for (const groups of [false, true]) {
  describe(groups ? "two scheduling groups" : "one scheduling group", () => {
    const extra = groups ? ["--with-groups"] : [];
    let run: AppRun;
    let r: any;

    beforeAll(async () => {
      run = await runApp(FIXTURE, [...smpArgs(2), "--scenario", "results", ...extra], { timeoutMs: 60_000 });
      if (run.code !== 0 || run.result === undefined) console.log(run.stdout, run.stderr);
      r = run.result ?? {};
    }, 70_000);

    test("a handler's result whose `then` throws rejects the call with that error; the target shard lives", () => {
      // As a local call does, instead of escaping the ring's drain and crashing shard 1.
      expect(r.strictRemote).toMatchObject({ ok: false, class: "TypeError", message: "strict: no property then" });
      expect(r.aliveAfter).toEqual({ ok: true, value: 1 });
    });

    test("a handler's thenable that calls back twice answers its own call only, once", () => {
      // Its second answer must not settle the next call, which took the same reply slot.
      expect(r.twice).toEqual({ ok: true, value: "first" });
      expect(r.second).toEqual({ ok: true, value: "second" });
    });

    test("a buffer released by a getter while its message is encoded fails the call, and nothing is sent", () => {
      // Before: the record went out with a released (recycled) buffer in it, the caller was told
      // the call failed, its reply settled the next call, and the handover was counted lent for good.
      expect(r.releasedWhileEncoding).toMatchObject({ ok: false, class: "EncodeError" });
      expect(r.releasedWhileEncoding.message).toContain("released while");
      expect(r.sinkCalls).toBe(0);
      expect(r.buffersLent).toBe(0);
      expect(r.poolAvailable).toBe(2);
    });

    test("a result that cannot cross gives back the buffers it held on the handler's shard (met before or after the failure)", () => {
      expect(r.badReplyFirst).toMatchObject({ ok: false });
      expect(r.badReplyFirst.message).toContain("cannot cross shards");
      expect(r.badReplyLater).toMatchObject({ ok: false });
      // Before: each failed result kept its buffer out of the pool for good (4 -> 2).
      expect(r.replyPoolAvailable).toBe(4);
    });

    test("a service method's result whose `then` throws: the call is no longer counted as running, stop() completes", () => {
      expect(r.strictInvokeRemote).toMatchObject({ ok: false, class: "TypeError", message: "strict: no property then" });
      expect(r.strictInvokeLocal).toMatchObject({ ok: false, class: "TypeError", message: "strict: no property then" });
      expect(r.runningAfter).toEqual([0, 0]);
      expect(r.stopped).toEqual({ ok: true, value: "stopped" });
    });

    test("the app ran to the end", () => {
      expect(run.code).toBe(0);
    });

    test("answers a shard sent before it exited settle their calls even when the exit notice overtakes them", async () => {
      const count = 200;
      const gone = await runApp(FIXTURE, [...smpArgs(2), "--scenario", "gone-reply", "--count", String(count), ...extra], { timeoutMs: 60_000 });
      if (gone.result === undefined) console.log(gone.stdout, gone.stderr);
      expect(gone.result).toEqual({ count, fulfilled: count, gone: 0 });
      // Shard 1's exit is a failure the supervisor reports.
      expect(gone.code).toBe(1);
    }, 70_000);
  });
}
