/**
 * Sharded<T> calls that fail on several shards (fixtures/sharded-errors.ts, --smp 4): the
 * lowest failing shard's error is thrown and none of the others is dropped (they ride on it as
 * `errors`, or are logged naming their shard); and calls on several shards with a NativeBuffer
 * argument (fixtures/sharded-handover.ts), which can go to one shard only.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { runApp, smpArgs, type AppRun } from "./helpers.ts";

/** The `errors` a join attaches: not enumerable, so it is neither serialized nor shown as a field. */
const carried = (message: string, shard: number | undefined, errors: string[]) => ({ message, shard, errors, enumerable: false });

describe("calls that fail on several shards", () => {
  let run: AppRun;
  let r: any;

  beforeAll(async () => {
    run = await runApp("./fixtures/sharded-errors.ts", smpArgs(4), { timeoutMs: 60_000 });
    if (run.result === undefined) console.log(run.stdout, run.stderr);
    r = run.result;
  }, 60_000);

  test("invokeOnAll, mapReduce and invokeOnOthers throw the lowest shard's error carrying every failure in shard order", () => {
    expect(r.all).toEqual(carried("boom on shard 1", 1, ["boom on shard 1", "boom on shard 3"]));
    expect(r.reduced).toEqual(carried("boom on shard 1", 1, ["boom on shard 1", "boom on shard 3"]));
    // Shard 0's own (direct) failure is the lowest: it is thrown, the remote ones ride on it.
    expect(r.allThree).toEqual(carried("boom on shard 0", undefined, ["boom on shard 0", "boom on shard 2", "boom on shard 3"]));
    expect(r.fromShard2.others).toEqual(carried("boom on shard 1", 1, ["boom on shard 1", "boom on shard 3"]));
    // One failure: the error as it was, with no list.
    expect(r.one).toEqual({ message: "boom on shard 2", shard: 2, enumerable: false });
  });

  test("failures that cannot carry the others (thrown strings) are not dropped: the others are logged with their shard", () => {
    expect(r.strings).toEqual({ thrown: "a string from shard 1" });
    expect(r.fromShard2.othersString).toEqual({ thrown: "a string from shard 1" });
    expect(run.stderr).toContain("WARN  [shard 0] smp - a call made on several shards failed on shard 3 too (the error thrown is shard 1's): a string from shard 3");
    // From shard 2, the calls' index 2 is shard 3 (invokeOnOthers skips the caller).
    expect(run.stderr).toContain("WARN  [shard 2] smp - a call made on several shards failed on shard 3 too (the error thrown is shard 1's): a string from shard 3");
  });

  test("stop() failing on shards 1 and 3: shard 1's error is thrown with both, and shard 3's is logged (it also reaches a caller on another shard)", () => {
    expect(r.stop).toEqual(carried("stop failed on shard 1", 1, ["stop failed on shard 1", "stop failed on shard 3"]));
    // Called from shard 2 the error crossed a ring (without its non-enumerable list): the log names shard 3.
    expect(r.stopFromShard2).toMatchObject({ message: "stop failed on shard 1", shard: 1 });
    const logged = run.stderr.match(/ERROR \[shard 0\] smp - service "Flaky": stop\(\) failed on shard 3 too \(the error thrown is shard 1's\): RemoteError: stop failed on shard 3/g);
    // Once by stop() from shard 0, once by stop() from shard 2, once at shutdown.
    expect(logged?.length).toBe(3);
    expect(run.stderr).not.toMatch(/stop\(\) failed on shard [02] too/);
  });

  test("start() failing on shards 1 and 3: every failure carried and logged; an instance that fails to stop in the rollback is logged", () => {
    expect(r.start).toEqual(carried("start failed on shard 1", 1, ["start failed on shard 1", "start failed on shard 3"]));
    expect(run.stderr).toContain(`ERROR [shard 0] smp - service "Flaky": start() failed on shard 3 too (the error thrown is shard 1's): TypeError: start failed on shard 3`);
    expect(run.stderr).toContain(`ERROR [shard 0] smp - service "Flaky" failed to stop on shard 2 after its start() failed elsewhere: RemoteError: stop failed on shard 2`);
    expect(r.runningAfterFailedStart).toMatchObject({ message: 'service "Flaky" on shard 2 is stopped; boom() was not run' });
  });

  test("at shutdown the supervisor reports every shard whose stop() failed, not only the lowest, and exits 1", () => {
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("sharded-errors: shard 1: a service failed to stop: Error: stop failed on shard 1 (its stack is in the log above)");
    expect(run.stderr).toContain("sharded-errors: shard 3: a service failed to stop: Error: stop failed on shard 3 (its stack is in the log above)");
    expect(run.stderr).not.toMatch(/shard [02]: a service failed to stop/);
  });
});

describe("a NativeBuffer argument of a call on several shards", () => {
  const refusal = {
    code: "ERR_SMP_ENCODE",
    message:
      "argument 1: a NativeBuffer cannot be handed to several shards at once (invokeOnAll, invokeOnOthers, mapReduce): hand it to one with invokeOn, or pass a copy of its bytes (a Uint8Array is copied to each shard)",
    kept: true,
  };

  test("3 shards: refused before anything is sent; no shard ran the call and the caller keeps its buffer", async () => {
    const run = await runApp("./fixtures/sharded-handover.ts", smpArgs(3), { timeoutMs: 30_000 });
    if (run.code !== 0) console.log(run.stdout, run.stderr);
    expect(run.code).toBe(0);
    // It ran on shard 1 (which got the buffer), then shard 2 refused the released buffer, and the
    // caller saw "a released NativeBuffer cannot be handed over" for a call that had half run.
    expect(run.result).toEqual({
      count: 3,
      all: refusal,
      reduced: refusal,
      others: refusal,
      one: { ok: 1, kept: false },
      seen: [[], [{ released: false, first: 42 }], []],
      lent: 0,
    });
  }, 30_000);

  test("2 shards: invokeOnAll is refused (the local call got a released handle); invokeOnOthers has one target and hands it over", async () => {
    const run = await runApp("./fixtures/sharded-handover.ts", smpArgs(2), { timeoutMs: 30_000 });
    if (run.code !== 0) console.log(run.stdout, run.stderr);
    expect(run.code).toBe(0);
    expect(run.result).toEqual({
      count: 2,
      all: refusal,
      reduced: refusal,
      others: { ok: [1], kept: false },
      one: { ok: 1, kept: false },
      seen: [[], [{ released: false, first: 42 }, { released: false, first: 42 }]],
      lent: 0,
    });
  }, 30_000);
});
