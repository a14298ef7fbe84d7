/**
 * The codec on hostile or unusual values: containers changed by getters while they are
 * encoded, huge bigints, detached buffers. Each either round-trips exactly or fails with an
 * EncodeError or MessageTooLargeError, and never misaligns the values after it.
 */
import { describe, expect, test } from "bun:test";
import { Reader, Writer } from "../../src/smp/codec.ts";
import { EncodeError, MessageTooLargeError } from "../../src/smp/errors.ts";

/** Encodes the values one after another (as a call's arguments are) and decodes them back. */
function roundTripAll(values: unknown[], maxBytes = 1 << 20): unknown[] {
  const w = new Writer(64, maxBytes);
  for (const v of values) w.value(v);
  const r = new Reader(new Uint8Array(0)).over(w, 0);
  const out = values.map(() => r.value());
  expect(r.pos).toBe(w.pos);
  return out;
}

function encodeFailure(v: unknown, maxBytes = 1 << 20): unknown {
  try {
    new Writer(64, maxBytes).value(v);
  } catch (err) {
    return err;
  }
  throw new Error("expected the encoding to fail");
}

describe("codec: containers changed while they are encoded", () => {
  test("a map that a getter grows or shrinks during its encoding: the values after it are not misread", () => {
    const grows = new Map<string, unknown>();
    grows.set("a", {
      get x() {
        grows.set("b", 2);
        return 1;
      },
    });
    const [g, afterGrow] = roundTripAll([grows, "next"]);
    expect(afterGrow).toBe("next");
    expect(g).toEqual(new Map<string, unknown>([["a", { x: 1 }], ["b", 2]]));

    const shrinks = new Map<string, unknown>();
    shrinks.set("a", {
      get x() {
        shrinks.delete("b");
        return 1;
      },
    });
    shrinks.set("b", 2);
    const [s, next, after] = roundTripAll([shrinks, "next", "after"]);
    expect([next, after]).toEqual(["next", "after"]);
    expect(s).toEqual(new Map([["a", { x: 1 }]]));
  });

  test("a set that a getter grows or shrinks during its encoding: the values after it are not misread", () => {
    const grows = new Set<unknown>();
    grows.add({
      get x() {
        grows.add(7);
        return 1;
      },
    });
    const [g, afterGrow] = roundTripAll([grows, "next"]);
    expect(afterGrow).toBe("next");
    expect([...(g as Set<unknown>)]).toEqual([{ x: 1 }, 7]);

    const seven = { seven: 7 };
    const shrinks = new Set<unknown>();
    shrinks.add({
      get x() {
        shrinks.delete(seven);
        return 1;
      },
    });
    shrinks.add(seven);
    const [s, next] = roundTripAll([shrinks, "next"]);
    expect(next).toBe("next");
    expect([...(s as Set<unknown>)]).toEqual([{ x: 1 }]);
  });
});

describe("codec: bigints", () => {
  test("every word count and piece boundary round-trips, both signs", () => {
    const values: bigint[] = [0n, 1n, -1n];
    for (let bits = 1n; bits <= 700n; bits += 1n) {
      const p = 1n << bits;
      values.push(p, p - 1n, -(p - 1n), p + 0x0123_4567_89ab_cdefn, -p);
    }
    values.push(2n ** 64n - 1n, 2n ** 64n, 2n ** 96n - 1n, 2n ** 96n, 2n ** 128n - 1n, 0xdead_beefn << 1000n);
    const back = roundTripAll(values, 1 << 24);
    for (let i = 0; i < values.length; i++) expect(back[i]).toBe(values[i]!);
  });

  test(
    "a 1 MiB bigint round-trips and an 8 MiB one fails at once with MessageTooLargeError (both were quadratic: minutes of a stalled shard)",
    () => {
      const big = (1n << (1n << 23n)) - 0x1234_5678_9abc_def1n; // 2^23 bits: 1 MiB
      const [back, next] = roundTripAll([-big, "next"], 2 << 20);
      expect(back).toBe(-big);
      expect(next).toBe("next");
      const huge = (1n << (1n << 26n)) - 1n; // 8 MiB
      expect(encodeFailure(huge, 1 << 20)).toBeInstanceOf(MessageTooLargeError);
    },
    20_000,
  );
});

describe("codec: detached buffers", () => {
  test("a detached ArrayBuffer or a typed array over one fails with an EncodeError that names where it sits", () => {
    const ab = new ArrayBuffer(16);
    const f64 = new Float64Array(ab);
    ab.transfer();
    const e1 = encodeFailure(ab) as EncodeError;
    expect(e1).toBeInstanceOf(EncodeError);
    expect(e1.message).toContain("detached");
    const e2 = encodeFailure({ data: [1, f64] }) as EncodeError;
    expect(e2).toBeInstanceOf(EncodeError);
    expect(e2.path).toBe(".data[1]");
    expect(e2.message).toContain("detached");
  });

  test("an error holding a detached view still crosses as its class, without that property", () => {
    const ab = new ArrayBuffer(8);
    const view = new Uint8Array(ab);
    ab.transfer();
    const e = Object.assign(new RangeError("out of range"), { view, offset: 9 });
    const [back] = roundTripAll([e]) as [RangeError & { view?: unknown; offset?: number }];
    expect(back).toBeInstanceOf(RangeError);
    expect(back.message).toBe("out of range");
    expect(back.offset).toBe(9);
    expect("view" in back).toBe(false);
  });
});

describe("codec: errors whose name or message has no plain string form", () => {
  test("a Symbol name, a throwing message getter and such a cause: the error still crosses as its class", () => {
    const e = new TypeError("bad");
    Object.defineProperty(e, "name", { value: Symbol("odd"), configurable: true });
    Object.defineProperty(e, "message", {
      get() {
        throw new Error("no message for you");
      },
      configurable: true,
    });
    const cause = new RangeError("inner");
    Object.defineProperty(cause, "name", { value: Symbol("inner"), configurable: true });
    (e as { cause?: unknown }).cause = cause;
    const [back, after] = roundTripAll([e, "next"]) as [TypeError & { cause?: unknown }, string];
    expect(after).toBe("next");
    expect(back).toBeInstanceOf(TypeError);
    expect(back.name).toBe("Symbol(odd)");
    expect(back.message).toBe("<value without a string form>");
    expect(back.cause).toBeInstanceOf(RangeError);
    expect((back.cause as Error).message).toBe("inner");
  });
});

describe("codec: Shoal's own error classes cross as themselves", () => {
  test("core, net and app errors keep their class; an unlisted subclass of ShoalError arrives as ShoalError", async () => {
    const { GateClosedError } = await import("../../src/core/gate.ts");
    const { BrokenSemaphoreError } = await import("../../src/core/semaphore.ts");
    const { BrokenConditionVariableError } = await import("../../src/core/condition-variable.ts");
    const { QueueAbortedError, QueueEmptyError } = await import("../../src/core/queue.ts");
    const { BrokenPipeError } = await import("../../src/core/pipe.ts");
    const { PoolExhaustedError } = await import("../../src/core/buffers.ts");
    const { UnexpectedEofError } = await import("../../src/net/errors.ts");
    const { OptionError } = await import("../../src/app/options.ts");
    const { ShoalError, StartupError } = await import("../../src/core/errors.ts");
    const classes = [GateClosedError, BrokenSemaphoreError, BrokenConditionVariableError, QueueAbortedError, QueueEmptyError, BrokenPipeError, PoolExhaustedError, UnexpectedEofError, OptionError, StartupError, ShoalError];
    for (const C of classes) {
      const e = Object.create(C.prototype) as Error;
      Object.assign(e, { message: `a ${C.name}`, name: C.name });
      const [back] = roundTripAll([e]) as [Error];
      expect(`${C.name}: ${back instanceof C}`).toBe(`${C.name}: true`);
      expect(back.message).toBe(`a ${C.name}`);
    }
    class AppSpecific extends ShoalError {
      constructor() {
        super("ERR_APP", "app-specific");
      }
    }
    const [back] = roundTripAll([new AppSpecific()]) as [Error & { code?: string }];
    expect(back).toBeInstanceOf(ShoalError);
    expect(back.name).toBe("AppSpecific");
    expect(back.code).toBe("ERR_APP");
  });
});
