import { describe, expect, test } from "bun:test";
import { Reader, RING_FULL, Writer, registerErrorClass, setNativeBufferClass } from "../../src/smp/codec.ts";
import { InvalidArgumentError, SystemError } from "../../src/core/errors.ts";
import { NativeBuffer, allocateAlignedBuffer } from "../../src/core/buffers.ts";
import { EncodeError, MessageTooLargeError, RemoteError } from "../../src/smp/errors.ts";

function roundTrip(v: unknown): unknown {
  const w = new Writer(64, 1 << 24);
  w.value(v);
  const r = new Reader(new Uint8Array(0)).over(w, 0);
  const out = r.value();
  expect(r.pos).toBe(w.pos);
  return out;
}

function encodeError(v: unknown): EncodeError {
  try {
    new Writer(64, 1 << 20).value(v);
  } catch (err) {
    expect(err).toBeInstanceOf(EncodeError);
    return err as EncodeError;
  }
  throw new Error("expected an EncodeError");
}

describe("codec: values round-trip exactly", () => {
  test("primitives, including -0, NaN and integer edges", () => {
    const values = [undefined, null, true, false, 0, 1, -1, 127, 128, -128, -129, 2 ** 31 - 1, -(2 ** 31), 2 ** 31, 2 ** 53, 1.5, -1e-300, Infinity, -Infinity];
    for (const v of values) expect(roundTrip(v)).toBe(v as never);
    expect(Object.is(roundTrip(-0), -0)).toBe(true);
    expect(Number.isNaN(roundTrip(NaN))).toBe(true);
  });

  test("bigints of any size and sign", () => {
    for (const v of [0n, 1n, -1n, 2n ** 64n - 1n, 2n ** 64n, -(2n ** 64n), 2n ** 521n - 1n, -(3n ** 300n)]) expect(roundTrip(v)).toBe(v);
  });

  test("strings: Latin-1, UTF-16 with lone surrogates, every length class", () => {
    const strings = ["", "a", "héllo", "ÿ".repeat(255), "x".repeat(256), "日本語", "emoji 😀", "lone \ud800 high", "lone \udc00 low", "a".repeat(100_000), "é".repeat(70_000) + "ж"];
    for (const s of strings) expect(roundTrip(s)).toBe(s);
  });

  test("arrays, plain objects, null-prototype objects, holes", () => {
    const v = { a: [1, "two", [3, [4]], { five: 5 }], b: { c: null, d: undefined }, "odd key": true, "": 0 };
    expect(roundTrip(v)).toEqual(v);
    const np = Object.assign(Object.create(null), { x: 1 });
    expect(roundTrip(np)).toEqual({ x: 1 });
    expect(roundTrip([1, , 3])).toEqual([1, undefined, 3]);
    const withProtoKey = JSON.parse('{"__proto__": {"polluted": true}}');
    const out = roundTrip(withProtoKey) as Record<string, unknown>;
    expect(Object.getPrototypeOf(out)).toBe(Object.prototype);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.keys(out)).toEqual(["__proto__"]);
  });

  test("Map, Set, Date", () => {
    const m = new Map<unknown, unknown>([["a", 1], [2, { b: [3] }]]);
    expect(roundTrip(m)).toEqual(m);
    const s = new Set([1, "x", null]);
    expect(roundTrip(s)).toEqual(s);
    const d = new Date(1_700_000_000_123);
    expect((roundTrip(d) as Date).getTime()).toBe(d.getTime());
  });

  test("typed arrays and ArrayBuffers are copied, with their type", () => {
    const u8 = new Uint8Array([1, 2, 3, 255]);
    const back = roundTrip(u8) as Uint8Array;
    expect(back).toBeInstanceOf(Uint8Array);
    expect([...back]).toEqual([1, 2, 3, 255]);
    u8[0] = 9;
    expect(back[0]).toBe(1);
    const f64 = new Float64Array([1.5, -2, NaN]);
    const fb = roundTrip(f64) as Float64Array;
    expect(fb).toBeInstanceOf(Float64Array);
    expect(fb[0]).toBe(1.5);
    const big = new BigInt64Array([-5n, 7n]);
    expect([...(roundTrip(big) as BigInt64Array)]).toEqual([-5n, 7n]);
    // A view into the middle of a larger buffer carries only its own bytes.
    const base = new Uint16Array([10, 20, 30, 40]);
    const mid = new Uint16Array(base.buffer, 2, 2);
    expect([...(roundTrip(mid) as Uint16Array)]).toEqual([20, 30]);
    const ab = new Uint8Array([4, 5]).buffer;
    const abBack = roundTrip(ab) as ArrayBuffer;
    expect(abBack).toBeInstanceOf(ArrayBuffer);
    expect([...new Uint8Array(abBack)]).toEqual([4, 5]);
    expect(roundTrip(Buffer.from("hi"))).toBeInstanceOf(Uint8Array);
  });

  test("errors keep name, message, code, stack, cause and simple own properties", () => {
    const cause = new RangeError("inner");
    const e = new TypeError("outer", { cause });
    Object.assign(e, { code: "E_OUTER", errno: 42, op: "read", skipped: () => 1 });
    const back = roundTrip(e) as TypeError & { code: string; errno: number; op: string; skipped?: unknown };
    expect(back).toBeInstanceOf(TypeError); // a built-in class arrives as itself
    expect(back).not.toBeInstanceOf(RemoteError);
    expect(back.name).toBe("TypeError");
    expect(back.message).toBe("outer");
    expect(back.code).toBe("E_OUTER");
    expect(back.stack).toBe(e.stack!);
    expect(back.errno).toBe(42);
    expect(back.op).toBe("read");
    expect(back.skipped).toBeUndefined();
    expect((back.cause as Error).name).toBe("RangeError");
    expect((back.cause as Error).message).toBe("inner");
    // An error without a code gets ERR_REMOTE; a cause that cannot cross becomes its description.
    const plain = roundTrip(new Error("x", { cause: () => 1 })) as RemoteError;
    expect(plain.code).toBe("ERR_REMOTE");
    expect(typeof plain.cause).toBe("string");
  });

  test("SystemError and registered classes arrive as themselves; built-ins without a code get none; unregistered ones are RemoteError", () => {
    const sys = roundTrip(new SystemError("connect", 111)) as SystemError;
    expect(sys).toBeInstanceOf(SystemError);
    expect({ code: sys.code, errno: sys.errno, op: sys.op, message: sys.message }).toEqual({
      code: "ECONNREFUSED",
      errno: 111,
      op: "connect",
      message: "connect failed: ECONNREFUSED",
    });
    const range = roundTrip(new RangeError("r")) as RangeError;
    expect(range).toBeInstanceOf(RangeError);
    expect("code" in range).toBe(false);
    class AppError extends Error {
      override name = "AppError";
      constructor(message: string, readonly detail: string) {
        super(message);
      }
    }
    class Unregistered extends Error {
      override name = "Unregistered";
    }
    expect(roundTrip(new AppError("a", "d"))).toBeInstanceOf(RemoteError);
    registerErrorClass(AppError);
    const app = roundTrip(new AppError("a", "d")) as AppError;
    expect(app).toBeInstanceOf(AppError);
    expect({ name: app.name, message: app.message, detail: app.detail }).toEqual({ name: "AppError", message: "a", detail: "d" });
    expect(roundTrip(new Unregistered("u"))).toBeInstanceOf(RemoteError);
    expect(() => registerErrorClass(class NotAnError {} as never)).toThrow(InvalidArgumentError);
  });

  test("a registered class is matched by the class, not the errors' name: a plain subclass (name \"Error\") or one naming its errors otherwise arrives as itself", () => {
    class PlainAppError extends Error {}
    class RenamedAppError extends Error {
      override name = "Renamed";
    }
    registerErrorClass(PlainAppError);
    registerErrorClass(RenamedAppError);
    const plain = roundTrip(new PlainAppError("p")) as Error;
    expect(plain).toBeInstanceOf(PlainAppError);
    expect({ name: plain.name, message: plain.message }).toEqual({ name: "Error", message: "p" });
    const renamed = roundTrip(new RenamedAppError("r")) as Error;
    expect(renamed).toBeInstanceOf(RenamedAppError);
    expect(renamed.name).toBe("Renamed");
    // An unregistered subclass arrives as its nearest registered ancestor, keeping its name.
    class Narrower extends TypeError {
      override name = "Narrower";
    }
    const narrower = roundTrip(new Narrower("n")) as Error;
    expect(narrower).toBeInstanceOf(TypeError);
    expect(narrower.name).toBe("Narrower");
  });

  test("a registered class with getter-only code and name on its prototype, or accessors for own properties, decodes (it threw: assignment to a read-only property)", () => {
    class GetterError extends Error {
      get code(): string {
        return "E_GETTER";
      }
      override get name(): string {
        return "GetterError";
      }
      get detail(): string {
        return "from the prototype";
      }
    }
    registerErrorClass(GetterError);
    const e = new GetterError("g");
    Object.defineProperty(e, "detail", { value: "own", enumerable: true });
    const back = roundTrip(e) as GetterError;
    expect(back).toBeInstanceOf(GetterError);
    expect({ name: back.name, message: back.message, code: back.code, detail: back.detail }).toEqual({
      name: "GetterError",
      message: "g",
      code: "E_GETTER",
      detail: "own",
    });
  });

  test("a cause dropped because it cannot cross gives back the handover ids reserved inside it", () => {
    const reserved: number[] = [];
    const cancelled: number[] = [];
    let next = 0;
    const sink = {
      shard: 0,
      reserve: () => {
        reserved.push(next);
        return next++;
      },
      cancel: (ids: readonly number[]) => cancelled.push(...ids),
    };
    setNativeBufferClass(NativeBuffer); // as the smp runtime does
    const w = new Writer(64, 1 << 20, sink);
    const nb = allocateAlignedBuffer(64);
    // The cause holds a buffer (reserved) and a function (cannot cross): it becomes a string.
    w.value(new Error("outer", { cause: { buffer: nb, fn: () => 1 } }));
    expect(reserved).toEqual([0]);
    expect(cancelled).toEqual([0]);
    expect(w.handedIds).toEqual([]);
    nb.release();
  });

  test("the smp layer's own errors keep their class", () => {
    const back = roundTrip(new MessageTooLargeError("too big"));
    expect(back).toBeInstanceOf(MessageTooLargeError);
    expect((back as MessageTooLargeError).code).toBe("ERR_SMP_MESSAGE_TOO_LARGE");
  });
});

describe("codec: what cannot cross fails with a path", () => {
  test("functions point at registerHandler", () => {
    const e = encodeError(function handler() {});
    expect(e.code).toBe("ERR_SMP_ENCODE");
    expect(e.message).toContain("registerHandler");
  });

  test("symbols, class instances, promises", () => {
    expect(encodeError(Symbol("s")).message).toContain("symbol");
    class Thing {}
    expect(encodeError(new Thing()).message).toContain("an instance of Thing");
    expect(encodeError(Promise.resolve(1)).message).toContain("await it first");
    expect(encodeError(new WeakMap()).message).toContain("WeakMap");
  });

  test("the path names where the bad part sits", () => {
    const e = encodeError({ a: [1, { b: () => 1 }] });
    expect(e.path).toBe(".a[1].b");
    expect(e.message.startsWith(".a[1].b: ")).toBe(true);
    expect(encodeError(new Map([["k", Symbol()]])).path).toBe("<map entry 0>");
    expect(encodeError({ "odd key": [Symbol()] }).path).toBe('["odd key"][0]');
  });

  test("cycles fail instead of looping", () => {
    const a: Record<string, unknown> = {};
    a.self = a;
    expect(encodeError(a).message).toContain("circular");
    const arr: unknown[] = [];
    arr.push(arr);
    expect(encodeError(arr).message).toContain("circular");
  });

  test("a scratch writer stops at its limit with MessageTooLargeError", () => {
    const w = new Writer(64, 1024);
    expect(() => w.value("x".repeat(2000))).toThrow(MessageTooLargeError);
    const ok = new Writer(64, 1024);
    ok.value("x".repeat(1000));
    expect(ok.pos).toBe(1005);
  });

  test("a ring-backed writer throws RING_FULL at the ring's room", () => {
    const w = new Writer(64, 1 << 20);
    const mem = new Uint8Array(128);
    w.target(mem, new DataView(mem.buffer), Buffer.from(mem.buffer) as never, 100, 128);
    let thrown: unknown;
    try {
      w.value("y".repeat(40));
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBe(RING_FULL);
    // Back to scratch memory, the same value fits.
    w.reset().value("y".repeat(40));
    expect(new Reader(new Uint8Array(0)).over(w, 0).value()).toBe("y".repeat(40));
  });
});
