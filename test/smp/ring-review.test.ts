/**
 * Messages at and past the ring's limits, and values that refer to themselves: a record one
 * byte over the limit fails as MessageTooLargeError (not a plain Error from deep inside the
 * ring) whatever the ring's size; a value that contains itself fails with an EncodeError, or,
 * inside an error, loses only that part (no nested copies, no message blown past the limit);
 * every typed array the engine has crosses.
 */
import { describe, expect, test } from "bun:test";
import { Reader, Writer } from "../../src/smp/codec.ts";
import { EncodeError, MessageTooLargeError } from "../../src/smp/errors.ts";
import { runApp, smpArgs } from "./helpers.ts";

function roundTrip(v: unknown): unknown {
  const w = new Writer(64, 1 << 20);
  w.value(v);
  const r = new Reader(new Uint8Array(0)).over(w, 0);
  const out = r.value();
  expect(r.pos).toBe(w.pos);
  return out;
}

function thrownBy(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected a throw");
}

describe("the message limit", () => {
  test("a scratch writer whose first memory is larger than its limit still stops at the limit", () => {
    // The runtime's writers start with 4 KiB; 4 KiB rings take records of 2 KiB at most.
    const w = new Writer(4096, 2048);
    w.value(new Uint8Array(2000));
    expect(w.pos).toBe(2006);
    const err = thrownBy(() => w.reset().value(new Uint8Array(2043)));
    expect(err).toBeInstanceOf(MessageTooLargeError);
    expect((err as Error).message).toContain("more than 2048 bytes");
    w.reset().value(new Uint8Array(2042)); // exactly 2048 bytes
    expect(w.pos).toBe(2048);
  });

  test(
    "between shards with 4 KiB rings: calls, posts and replies of exactly the limit cross; one byte more is MessageTooLargeError; a flood of large records arrives whole and in order",
    async () => {
      const run = await runApp("./fixtures/ring-limits.ts", smpArgs(2), { timeoutMs: 60_000 });
      if (run.code !== 0) console.log(run.stdout, run.stderr);
      expect(run.code).toBe(0);
      const tooLarge = "a cross-shard message needs more than 2048 bytes (the ring limit); send large payloads as NativeBuffers, which are handed over instead of copied";
      expect(run.result).toEqual({
        callAtLimit: { ok: 2024 },
        // Was a plain Error: "OutRing.write: a record must be 8-byte aligned and 8..2048 bytes, got 2056".
        callPastLimit: { code: "ERR_SMP_MESSAGE_TOO_LARGE", name: "MessageTooLargeError", message: tooLarge },
        replyAtLimit: { ok: 2030 },
        replyPastLimit: {
          code: "ERR_SMP_MESSAGE_TOO_LARGE",
          name: "MessageTooLargeError",
          message: `the result of handler "ring-limits.give": ${tooLarge}`,
        },
        postPastLimit: { code: "ERR_SMP_MESSAGE_TOO_LARGE" },
        pendingAfter: 0,
        callsIntact: true,
        flood: { count: 3000, inOrder: true, bad: 0 },
        maxBacklog: true,
      });
    },
    60_000,
  );
});

describe("values that contain themselves", () => {
  test("an error that is its own cause crosses once, its cause described", () => {
    const e = new RangeError("self-caused");
    (e as { cause?: unknown }).cause = e;
    const out = roundTrip(e) as Error;
    expect(out).toBeInstanceOf(RangeError);
    expect(out.message).toBe("self-caused");
    // Was 64 nested copies of the error.
    expect(out.cause).toBe("RangeError: self-caused");
  });

  test("an error property that refers back to the error is left out; the others cross", () => {
    const e = new TypeError("loop") as TypeError & Record<string, unknown>;
    e.me = e;
    e.both = [e, e];
    e.errno = 7;
    const w = new Writer(64, 1 << 20);
    w.value(e);
    // `both` doubled at every level: 2^32 copies, which failed as MessageTooLargeError.
    expect(w.pos).toBeLessThan(1024);
    const out = roundTrip(e) as TypeError & Record<string, unknown>;
    expect(out).toBeInstanceOf(TypeError);
    expect(out.errno).toBe(7);
    expect("me" in out).toBe(false);
    expect("both" in out).toBe(false);
  });

  test("a container that contains itself twice fails with an EncodeError naming where, not MessageTooLargeError", () => {
    const a: unknown[] = [];
    a.push(a, a);
    const err = thrownBy(() => new Writer(64, 1 << 20).value({ list: a }));
    expect(err).toBeInstanceOf(EncodeError);
    expect((err as EncodeError).path).toBe(".list[0]");
    expect((err as EncodeError).message).toContain("circular");
  });

  test("the same object twice side by side is no cycle: both copies cross", () => {
    const shared = { n: 1 };
    const e = new Error("twice") as Error & Record<string, unknown>;
    e.pair = [shared, shared];
    expect(roundTrip({ x: shared, y: [shared, shared] })).toEqual({ x: { n: 1 }, y: [{ n: 1 }, { n: 1 }] });
    expect((roundTrip(e) as Record<string, unknown>).pair).toEqual([{ n: 1 }, { n: 1 }]);
  });
});

describe("typed arrays", () => {
  test("a Float16Array crosses as itself (Bun has it)", () => {
    const out = roundTrip(new Float16Array([1.5, -2, 65504]));
    expect(out).toBeInstanceOf(Float16Array);
    expect([...(out as Float16Array)]).toEqual([1.5, -2, 65504]);
  });
});
