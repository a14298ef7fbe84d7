/**
 * One shard, in process (no app(): smp.count is 1 and every call is local). The same API as on
 * many shards; with encodeLocalCalls the arguments cross the encoder, so what could not cross
 * shards fails here too.
 */
import { afterEach, describe, expect, test } from "bun:test";
import {
  EncodeError,
  RegistrationError,
  ServiceNotStartedError,
  ServiceStateError,
  ServiceStoppedError,
  ShardRangeError,
  UnknownHandlerError,
  UnknownMethodError,
  configureSmp,
  post,
  registerHandler,
  registerReducer,
  sharded,
  smp,
  submitTo,
  thisShard,
} from "../../src/smp/index.ts";
import { allocateAlignedBuffer, BufferPool } from "../../src/core/buffers.ts";
import { smpStats } from "../../src/smp/runtime.ts";

const add = registerHandler("local.add", (a: number, b: number) => a + b);
const asyncEcho = registerHandler("local.asyncEcho", async (v: unknown) => v);
const fails = registerHandler("local.fails", () => {
  throw Object.assign(new RangeError("nope"), { code: "E_NOPE" });
});
const seen: unknown[] = [];
registerHandler("local.record", (v: unknown) => void seen.push(v));
registerHandler("local.takeFn", (_f: unknown) => "ran");
const bufferBytes = registerHandler("local.bufferBytes", (b: { bytes: Uint8Array; release(): void; address: number }) => {
  const out = [...b.bytes.subarray(0, 4)];
  const address = b.address;
  b.release();
  return { out, address };
});

class Counter {
  n: number;
  constructor(start = 0) {
    this.n = start;
  }
  add(k: number): number {
    return (this.n += k);
  }
  async slowAdd(k: number, ms: number): Promise<number> {
    await Bun.sleep(ms);
    return this.add(k);
  }
  get(): number {
    return this.n;
  }
  arrow = (k: number) => this.n * k;
  stopped = false;
  stop(): void {
    this.stopped = true;
  }
}
const counters = sharded(Counter);
const named = sharded(Counter, { name: "named-counter", factory: (shard: number, base: number) => new Counter(base + shard) });
const fresh = sharded(Counter, { name: "fresh" });
const byName = sharded<{ hello(who: string): string }>("by-name", { factory: () => ({ hello: (who: string) => `hi ${who}` }) });

afterEach(async () => {
  configureSmp({ encodeLocalCalls: false });
  await counters.stop();
  await named.stop();
  await byName.stop();
});

describe("one shard in process", () => {
  test("smp.count is 1 and this is shard 0", () => {
    expect(smp.count).toBe(1);
    expect(thisShard()).toBe(0);
    expect(smp.cpu).toBe(-1);
  });

  test("submitTo calls the handler directly, by ref or by name", async () => {
    expect(await submitTo(0, add, 2, 3)).toBe(5);
    expect(await submitTo<number>(0, "local.add", 4, 5)).toBe(9);
    expect(await submitTo(0, asyncEcho, { x: 1 })).toEqual({ x: 1 });
    const err = await submitTo(0, fails).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RangeError);
    expect((err as { code: string }).code).toBe("E_NOPE");
  });

  test("post runs one-way and returns undefined when nothing waits", () => {
    seen.length = 0;
    expect(post(0, "local.record", 1)).toBeUndefined();
    expect(seen).toEqual([1]);
  });

  test("bad calls fail at the call site with typed errors", async () => {
    expect(submitTo(1, add, 1, 2)).rejects.toBeInstanceOf(ShardRangeError);
    expect(submitTo(-1, add, 1, 2)).rejects.toBeInstanceOf(ShardRangeError);
    expect(submitTo(0.5, add, 1, 2)).rejects.toBeInstanceOf(ShardRangeError);
    expect(submitTo(0, "local.missing")).rejects.toBeInstanceOf(UnknownHandlerError);
    expect(() => post(0, "local.missing")).toThrow(UnknownHandlerError);
    expect(() => post(3, "local.record", 1)).toThrow(ShardRangeError);
    expect(() => registerHandler("local.add", () => 0)).toThrow(RegistrationError);
    expect(() => registerHandler("", () => 0)).toThrow("non-empty");
  });

  test("with encodeLocalCalls, arguments and results cross the encoder", async () => {
    configureSmp({ encodeLocalCalls: true });
    const original = { nested: [1, 2] };
    const back = (await submitTo(0, asyncEcho, original)) as typeof original;
    expect(back).toEqual(original);
    expect(back).not.toBe(original); // a copy, as on another shard
    const bad = await submitTo(0, "local.takeFn", () => 1).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(EncodeError);
    expect((bad as EncodeError).message).toStartWith("argument 1: a function cannot cross shards");
    const remoteLike = await submitTo(0, fails).catch((e: unknown) => e);
    expect((remoteLike as Error).name).toBe("RangeError");
    expect((remoteLike as { shard: number }).shard).toBe(0);
    expect(() => post(0, "local.record", Symbol("s"))).toThrow(EncodeError);
    // Without the option the same call is direct and passes the function through.
    configureSmp({ encodeLocalCalls: false });
    expect(await submitTo(0, "local.takeFn", () => 1)).toBe("ran");
  });

  test("with encodeLocalCalls, a NativeBuffer is handed over and comes back to its pool", async () => {
    configureSmp({ encodeLocalCalls: true });
    const pool = new BufferPool({ bufferSize: 64, count: 2 });
    const b = pool.acquire();
    b.bytes.set([9, 8, 7, 6]);
    const { out, address } = (await submitTo(0, bufferBytes, b as never)) as { out: number[]; address: number };
    expect(out).toEqual([9, 8, 7, 6]);
    expect(address).toBe(b.address); // the same memory, not a copy
    expect(b.isReleased).toBe(true); // the sender's handle went with the message
    expect(smpStats().buffersLent).toBe(0);
    expect(pool.available).toBe(2);
    const standalone = allocateAlignedBuffer(4096);
    standalone.bytes[0] = 42;
    expect(((await submitTo(0, bufferBytes, standalone as never)) as { out: number[] }).out[0]).toBe(42);
    pool.close();
  });
});

describe("Sharded<T> on one shard", () => {
  test("with encodeLocalCalls, a NativeBuffer handed to a call that never runs (not started, stopped) goes back to its pool", async () => {
    const refusing = sharded(Counter, { name: "local.refusing" });
    configureSmp({ encodeLocalCalls: true });
    const pool = new BufferPool({ bufferSize: 64, count: 2 });
    const refused = async () => {
      const b = pool.acquire();
      const err = await refusing.invokeOn(0, "add", b as never).catch((e: unknown) => e);
      expect(b.isReleased).toBe(true); // the sender's handle went with the call, as across shards
      expect(smpStats().buffersLent).toBe(0);
      expect(pool.available).toBe(2);
      return err;
    };
    expect(await refused()).toBeInstanceOf(ServiceNotStartedError);
    await refusing.start();
    await refusing.stop();
    expect(await refused()).toBeInstanceOf(ServiceStoppedError);
    pool.close();
  });

  test("start, invokeOn, invokeOnAll, mapReduce, local, stop", async () => {
    await counters.start(10);
    expect(counters.isRunning).toBe(true);
    expect(await counters.invokeOn(0, "add", 5)).toBe(15);
    expect(await counters.invokeOnAll("add", 1)).toEqual([16]);
    expect(await counters.invokeOnOthers("add", 1)).toEqual([]);
    expect(await counters.mapReduce("get", "sum", 100)).toBe(116);
    expect(await counters.mapReduce("get", (acc: number[], v, shard) => [...acc, v, shard], [] as number[])).toEqual([16, 0]);
    expect(await counters.on(0).add(4)).toBe(20);
    expect(await counters.invokeOn(0, "arrow", 2)).toBe(40);
    const inst = counters.local();
    expect(inst).toBeInstanceOf(Counter);
    await counters.stop();
    expect(inst.stopped).toBe(true);
    expect(counters.isRunning).toBe(false);
    expect(counters.invokeOn(0, "get")).rejects.toBeInstanceOf(ServiceStoppedError);
    expect(() => counters.local()).toThrow(ServiceNotStartedError);
    // A stopped service can start again.
    await counters.start(1);
    expect(await counters.invokeOn(0, "get")).toBe(1);
  });

  test("factories build each shard's instance; services by name call methods by name", async () => {
    await named.start(100);
    expect(await named.invokeOn(0, "get")).toBe(100);
    await byName.start();
    expect(await byName.invokeOn(0, "hello", "you")).toBe("hi you");
  });

  test("typed errors: not started, started twice, unknown method, bad shard, unknown reducer", async () => {
    expect(fresh.invokeOn(0, "get")).rejects.toBeInstanceOf(ServiceNotStartedError);
    expect(() => fresh.local()).toThrow(ServiceNotStartedError);
    await counters.start();
    expect(counters.start()).rejects.toBeInstanceOf(ServiceStateError);
    expect(counters.invokeOn(0, "nope" as never)).rejects.toBeInstanceOf(UnknownMethodError);
    // stop() is the lifecycle, not a method to invoke (it ran outside it: the instance stopped
    // while taking calls, then again at shutdown); the type refuses it too.
    const invoked = await counters.invokeOn(0, "stop" as never).catch((e: unknown) => e);
    expect(invoked).toBeInstanceOf(UnknownMethodError);
    expect((invoked as Error).message).toContain("stop() is its lifecycle");
    expect(counters.invokeOnAll("stop" as never)).rejects.toBeInstanceOf(UnknownMethodError);
    expect(counters.local().stopped).toBe(false);
    expect(counters.invokeOn(2, "get")).rejects.toBeInstanceOf(ShardRangeError);
    expect(counters.mapReduce("get", "no-such-reducer", 0)).rejects.toThrow('no reducer named "no-such-reducer"');
    expect(() => sharded(Counter)).toThrow(RegistrationError);
    registerReducer("local.product", (a: number, v: number) => a * v);
    expect(await counters.mapReduce("add", "local.product", 3, 2)).toBe(6);
  });

  test("stop waits for running calls, refuses new ones, and never hangs", async () => {
    await counters.start();
    const running = [counters.invokeOn(0, "slowAdd", 1, 30), counters.invokeOn(0, "slowAdd", 2, 10)];
    expect(counters.runningCalls).toBe(2);
    const stopping = counters.stop();
    const late = await counters.invokeOn(0, "add", 1).catch((e: unknown) => e);
    expect(late).toBeInstanceOf(ServiceStoppedError);
    expect((late as Error).message).toContain("stopping");
    // Both complete: slowAdd(2) finishes first (n = 2), then slowAdd(1) (n = 3).
    expect(await Promise.all(running)).toEqual([3, 2]);
    await stopping;
    expect(counters.runningCalls).toBe(0);
  });

  test("start rolls back when a constructor throws", async () => {
    const failing = sharded(
      class Failing {
        constructor() {
          throw new Error("constructor failed");
        }
      },
      { name: "failing" },
    );
    expect(failing.start()).rejects.toThrow("constructor failed");
    expect(failing.isRunning).toBe(false);
  });

  test("method names are checked by the type system", () => {
    // @ts-expect-error: "ad" is not a method of Counter
    void counters.invokeOn(0, "ad", 1).catch(() => {});
    // @ts-expect-error: add takes a number
    void counters.invokeOn(0, "add", "1").catch(() => {});
    // @ts-expect-error: n is a field, not a method
    void counters.invokeOnAll("n").catch(() => {});
    // @ts-expect-error: the remote view has no such method either
    expect(typeof counters.on(0).ad).toBe("function");
    // @ts-expect-error: handler refs type their arguments
    void submitTo(0, add, "x", 1).catch(() => {});
    const typed: Promise<number> = counters.invokeOn(0, "add", 1);
    void typed.catch(() => {});
  });
});
