/**
 * The cross-shard API between real shard Workers (fixtures/api.ts): remote exceptions keep
 * name, message, code and stack; bad input fails at the call site with typed errors and leaves
 * the rings consistent; NativeBuffers are handed over (same memory) and released on their
 * owner; Sharded<T> works across shards; shards are pinned to their CPUs.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { CPU_LIST, CPUS, runApp, smpArgs, type AppRun } from "./helpers.ts";

for (const groups of [false, true]) describe(groups ? "across shards, two scheduling groups" : "across shards", () => {
  let run: AppRun;
  let r: any;

  beforeAll(async () => {
    run = await runApp("./fixtures/api.ts", [...smpArgs(3), ...(groups ? ["--with-groups"] : [])], { timeoutMs: 60_000 });
    if (run.code !== 0) console.log(run.stdout, run.stderr);
    r = run.result;
  }, 60_000);

  test("the app ran to the end", () => {
    expect(run.code).toBe(0);
    expect(r).toBeDefined();
  });

  test("a sleeping shard is woken by a ring message (no eventfd write), and every call completes", () => {
    expect(r.sleepyCalls).toBe(20);
    expect(r.ringWakes).toBeGreaterThanOrEqual(10);
    expect(r.ringWakes).toBe(r.smpWakes);
  });

  test("a remote exception arrives with its class (a built-in one), name, message, code, own properties, stack and shard", () => {
    for (const key of ["remoteThrow", "remoteReject"]) {
      expect(r[key]).toMatchObject({
        ok: false,
        class: "TypeError",
        name: "TypeError",
        code: "E_REMOTE_WRONG",
        message: "remote went wrong",
        shard: 2,
        errno: 5,
        stackHasThrowSite: true,
      });
    }
    expect(r.remoteString).toMatchObject({ ok: false, raw: "just a string" });
  });

  test("a result that cannot cross fails the call with an EncodeError that names the handler", () => {
    expect(r.badResult).toMatchObject({ ok: false, class: "EncodeError", code: "ERR_SMP_ENCODE" });
    expect(r.badResult.message).toStartWith('the result of handler "api.returnsFunction": a function cannot cross shards');
  });

  test("a thrown value or result whose fallback cannot cross either still answers the caller (short error), and the target lives", () => {
    expect(r.nullProtoThrow).toMatchObject({ ok: false, class: "RemoteError" });
    expect(r.nullProtoThrow.message).toContain("cannot cross shards");
    expect(r.hugeThrow).toMatchObject({ ok: false, class: "RemoteError" });
    expect(r.hugeThrow.message.length).toBeLessThan(5000); // clipped
    expect(r.hostileResult).toMatchObject({ ok: false });
    expect(r.hostileResult.message).toContain('handler "api.hostileResult"');
  });

  test("bad input fails at the call site with typed errors", () => {
    expect(r.unknownHandler).toMatchObject({ class: "UnknownHandlerError", code: "ERR_SMP_UNKNOWN_HANDLER" });
    for (const key of ["shardTooHigh", "shardNegative", "shardNotInteger"]) {
      expect(r[key]).toMatchObject({ class: "ShardRangeError", code: "ERR_SMP_SHARD_RANGE" });
    }
    expect(r.unencodable).toMatchObject({ class: "EncodeError", code: "ERR_SMP_ENCODE" });
    expect(r.unencodable.message).toStartWith("argument 1 at .bad: a function cannot cross shards");
    expect(r.tooLarge).toMatchObject({ class: "MessageTooLargeError", code: "ERR_SMP_MESSAGE_TOO_LARGE" });
    expect(r.postUnknown).toMatchObject({ class: "UnknownHandlerError" });
    expect(r.postUnencodable).toMatchObject({ class: "EncodeError" });
    expect(r.unknownMethod).toMatchObject({ class: "UnknownMethodError", code: "ERR_SMP_UNKNOWN_METHOD" });
  });

  test("the rings stay consistent after every failed call", () => {
    expect(r.consistentAfterErrors).toBe(2000);
    expect(r.stats.pendingCalls).toBe(0);
    expect(r.stats.backlog).toBe(0);
  });

  test("a NativeBuffer is handed over: same memory, sender's handle released, back to its pool", () => {
    expect(r.handover).toEqual({ sum: 136, same: true, length: 4096 });
    expect(r.senderHandleReleased).toBe(true);
    expect(r.ownerSawWrite).toBe(true);
    expect(r.poolRecovered).toBe(true);
  });

  test("handed on along a chain, every hop releases to the previous one", () => {
    expect(r.chain).toEqual({ sum: 16, same: true, length: 4096 });
    expect(r.chainRecovered).toBe(true);
    expect(r.middleRecovered).toBe(true);
  });

  test("a lent NativeBuffer (memory its home keeps) arrives lent: the receiver's release does not poison it, and its home recycles it only after that release (not while the receiver holds it)", () => {
    expect(r.lentHandover).toEqual({ sum: 144, lent: true, recycledWhileHeld: 0, recycled: [77], intact: true, senderReleased: true });
  });

  test("a buffer handed to a call that never runs (service not started) goes back to its owner", () => {
    expect(r.notStartedCall).toMatchObject({ ok: false, code: "ERR_SERVICE_NOT_STARTED" });
    expect(r.notStartedRecovered).toBe(true);
  });

  test("a buffer returned as a reply goes back to the replying shard's pool when released", () => {
    expect(r.givenSum).toBe(112);
    expect(r.givenBefore).toBe(7);
    expect(r.givenRecovered).toBe(true);
  });

  test("a BufferCache buffer handed over (as an argument or a reply) comes back to its owner's cache, and the mapping is reused", () => {
    expect(r.cacheHandover).toEqual({ sum: 48, same: true, length: 100_000 });
    expect(r.cacheRecovered).toBe(true);
    expect(r.cacheReused).toBe(true);
    expect(r.cacheGivenSum).toBe(80);
    expect(r.cacheGivenBefore).toEqual({ outstanding: 1, retained: 0 });
    expect(r.cacheGivenRecovered).toBe(true);
  });

  test("Sharded<T> across shards", () => {
    expect(r.greet).toBe("hello you from 2");
    expect(r.greetAll).toEqual([0, 1, 2]);
    expect(r.greetOthers).toEqual([1, 2]);
    expect(r.sumShards).toBe(3);
    expect(r.foldOrder).toBe("0=0;1=1;2=2;");
    expect(r.collected).toEqual([0, 1, 2]);
  });

  test("invokeOnAll: a failure is the lowest failing shard's error, after every call settled", () => {
    expect(r.firstError).toMatchObject({ ok: false, class: "RangeError", message: "failed on 1", shard: 1 });
    expect(r.firstErrorAfterAll).toBe(true);
  });

  test("Sharded<T> views, named methods and calls after stop", () => {
    expect(r.remoteView).toBe("hello view from 2");
    expect(r.namedMethod).toBe(42);
    expect(r.afterStop).toMatchObject({ class: "ServiceStoppedError", code: "ERR_SERVICE_STOPPED", shard: 2 });
  });

  test("shards know their place", () => {
    expect(r.cpus.map((c: { shard: number }) => c.shard)).toEqual([0, 1, 2]);
  });

  test("a call runs in the caller's scheduling group on the target; the reply comes back in it", () => {
    expect(r.groupDefault).toBe("main");
    if (groups) expect(r.groupBackground).toEqual({ remote: "background", afterReply: "background" });
    else expect(r.groupBackground).toBeUndefined();
  });
});

describe("pinning", () => {
  test.skipIf(CPUS < 2)("each shard's thread runs on its own CPU only", async () => {
    const pinned = await runApp("./fixtures/api.ts", ["--smp", "2"], { timeoutMs: 60_000 });
    expect(pinned.code).toBe(0);
    const cpus = pinned.result.cpus as { shard: number; cpu: number; affinity: number[] }[];
    expect(cpus[0]!.affinity).toHaveLength(1);
    expect(cpus[1]!.affinity).toHaveLength(1);
    expect(cpus[0]!.affinity[0]).toBe(cpus[0]!.cpu);
    expect(cpus[1]!.affinity[0]).toBe(cpus[1]!.cpu);
    expect(cpus[0]!.cpu).not.toBe(cpus[1]!.cpu);
  }, 60_000);

  test.skipIf(CPUS < 2)("--cpuset picks the CPUs, in order", async () => {
    const [first, last] = [CPU_LIST[0]!, CPU_LIST[CPUS - 1]!];
    const pinned = await runApp("./fixtures/api.ts", ["--cpuset", `${last},${first}`], { timeoutMs: 60_000 });
    expect(pinned.code).toBe(0);
    // A cpuset is a set: shards take its CPUs in ascending order.
    expect(pinned.result.cpus).toEqual([
      { shard: 0, cpu: first, affinity: [first] },
      { shard: 1, cpu: last, affinity: [last] },
    ]);
    const one = await runApp("./fixtures/api.ts", ["--cpuset", `${last}`], { timeoutMs: 60_000 });
    expect(one.result.cpus).toEqual([{ shard: 0, cpu: last, affinity: [last] }]);
  }, 60_000);

  test.skipIf(CPUS < 2)("--overprovisioned with --cpuset: the shards are not pinned but stay within the set", async () => {
    const last = CPU_LIST[CPUS - 1]!;
    const run = await runApp("./fixtures/api.ts", ["--smp", "2", "--overprovisioned", "--cpuset", `${last}`], { timeoutMs: 60_000 });
    expect(run.code).toBe(0);
    expect(run.result.cpus).toEqual([
      { shard: 0, cpu: -1, affinity: [last] },
      { shard: 1, cpu: -1, affinity: [last] },
    ]);
  }, 60_000);

  test("--overprovisioned does not pin", async () => {
    const loose = await runApp("./fixtures/api.ts", ["--smp", "2", "--overprovisioned"], { timeoutMs: 60_000 });
    expect(loose.code).toBe(0);
    for (const c of loose.result.cpus) {
      expect(c.cpu).toBe(-1);
      expect(c.affinity.length).toBe(CPUS);
    }
  }, 60_000);
});
