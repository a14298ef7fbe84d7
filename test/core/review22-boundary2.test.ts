/**
 * Review of the native boundary, second round: a view's redefined `length` cannot stretch a
 * native copy past it; a 4 GiB NativeBuffer crosses shards with its length; a reactor's own
 * eventfd and ring fd cannot be closed through it, and Reactor.wake() of a number that is no
 * live reactor's eventfd is the caller's error.
 */
import { describe, expect, test } from "bun:test";
import { copyBytes } from "../../src/core/bytes.ts";
import { InvalidArgumentError, NativeBuffer, Reactor, allocateAlignedBuffer, reactor } from "../../src/index.ts";
import { Reader, Writer, setNativeBufferClass } from "../../src/smp/codec.ts";
import { receiveBuffer } from "../../src/smp/handover.ts";
import { runApp, smpArgs } from "../smp/helpers.ts";
import { pipe } from "./fixtures/posix.ts";
import { thrownBy } from "./fixtures/util.ts";

const TypedArrayPrototype = Object.getPrototypeOf(Uint8Array.prototype) as object;

/** A 16-byte view at byte 16 of a 256-byte buffer of 0x77, and that whole buffer. */
function viewInside(): { view: Uint8Array; whole: Uint8Array } {
  const whole = new Uint8Array(256).fill(0x77);
  return { view: new Uint8Array(whole.buffer, 16, 16), whole };
}

const untouched = (whole: Uint8Array) => whole.every((x) => x === 0x77);

describe("copyBytes: a view's length cannot be made to lie", () => {
  test("an own `length` of 4096 on a 16-byte destination: RangeError, nothing written behind it", () => {
    const { view, whole } = viewInside();
    Object.defineProperty(view, "length", { value: 4096 });
    const src = new Uint8Array(200).fill(0x11);
    expect(thrownBy(() => copyBytes(view, 0, src, 0, 200))).toBeInstanceOf(RangeError);
    // The old check read 4096 and the native copy wrote 200 bytes from the view's start.
    expect(untouched(whole)).toBe(true);
  });

  test("an own `length` on a 16-byte source: RangeError, nothing read from behind it", () => {
    const { view, whole } = viewInside();
    whole.fill(0x33, 32);
    Object.defineProperty(view, "length", { value: 4096 });
    const dst = new Uint8Array(200);
    const e = thrownBy(() => copyBytes(dst, 0, view, 0, 200));
    expect(e).toBeInstanceOf(RangeError);
    // The message gives the real length, not the redefined one.
    expect(e.message).toContain("of 16 bytes");
    expect(dst.every((x) => x === 0)).toBe(true);
  });

  test("a prototype whose `length` getter lies: RangeError, nothing written", () => {
    const { view, whole } = viewInside();
    Object.setPrototypeOf(view, Object.create(Uint8Array.prototype, { length: { get: () => 4096 } }));
    expect(thrownBy(() => copyBytes(view, 0, new Uint8Array(200).fill(1), 0, 200))).toBeInstanceOf(RangeError);
    expect(untouched(whole)).toBe(true);
  });

  test("%TypedArray%.prototype.length itself redefined: RangeError, nothing written", () => {
    const { view, whole } = viewInside();
    const original = Object.getOwnPropertyDescriptor(TypedArrayPrototype, "length")!;
    const src = new Uint8Array(200).fill(1);
    let e: unknown;
    Object.defineProperty(TypedArrayPrototype, "length", { get: () => 4096, configurable: true });
    try {
      copyBytes(view, 0, src, 0, 200);
    } catch (err) {
      e = err;
    } finally {
      Object.defineProperty(TypedArrayPrototype, "length", original);
    }
    expect(e).toBeInstanceOf(RangeError);
    expect(untouched(whole)).toBe(true);
  });

  test("a short copy (the byte loop) past a lying length is refused too, not cut short silently", () => {
    const { view, whole } = viewInside();
    Object.defineProperty(view, "length", { value: 4096 });
    expect(thrownBy(() => copyBytes(view, 10, new Uint8Array(16).fill(1), 0, 10))).toBeInstanceOf(RangeError);
    expect(untouched(whole)).toBe(true);
  });

  test("ranges that fit are still copied exactly, up to the last byte and from offset views", () => {
    const { view, whole } = viewInside();
    Object.defineProperty(view, "length", { value: 4096 });
    copyBytes(view, 0, Uint8Array.from({ length: 16 }, (_, i) => i + 1), 0, 16);
    expect([...view]).toEqual(Array.from({ length: 16 }, (_, i) => i + 1));
    expect(whole[15]).toBe(0x77);
    expect(whole[32]).toBe(0x77);
    const dst = new Uint8Array(100);
    const src = Uint8Array.from({ length: 100 }, (_, i) => i);
    copyBytes(dst, 0, src, 0, 100);
    expect(dst).toEqual(src);
    copyBytes(dst, 100, src, 100, 0);
    expect(thrownBy(() => copyBytes(dst, 101, src, 0, 0))).toBeInstanceOf(RangeError);
  });
});

describe("a 4 GiB NativeBuffer crosses shards with its length", () => {
  test("encoded and decoded, a 2^32-byte buffer arrives as 2^32 bytes (it arrived as 0)", () => {
    setNativeBufferClass(NativeBuffer); // as the smp runtime does
    const sink = { shard: 3, reserve: () => 5, cancel: () => {} };
    const huge = allocateAlignedBuffer(2 ** 32);
    try {
      huge.bytes[2 ** 32 - 1] = 9;
      const w = new Writer(64, 1 << 20, sink);
      w.value({ b: huge });
      const seen: number[][] = [];
      const r = new Reader(new Uint8Array(0)).over(w, 0);
      r.foreign = (owner, id, address, length) => {
        seen.push([owner, id, address, length]);
        return receiveBuffer(owner, id, address, length, () => {});
      };
      const back = (r.value() as { b: NativeBuffer }).b;
      expect(r.pos).toBe(w.pos);
      expect(seen).toEqual([[3, 5, huge.address, 2 ** 32]]);
      expect(back.length).toBe(2 ** 32);
      expect(back.bytes[2 ** 32 - 1]).toBe(9);
      back.release();
    } finally {
      huge.release();
    }
  });

  test(
    "invokeOn hands a whole 4 GiB buffer to another shard, which sees all of it and releases it",
    async () => {
      const run = await runApp("../core/fixtures/review22-huge-handover.ts", smpArgs(2), { timeoutMs: 60_000 });
      expect(run.result, run.stderr).toEqual({ outcome: { ok: { shard: 1, length: 2 ** 32, first: 7, last: 9 } }, lent: 0, released: true });
    },
    90_000,
  );
});

describe("a reactor's own descriptors", () => {
  test("close() of a reactor's eventfd or io_uring fd is refused (the reactor could no longer be woken)", () => {
    const r = new Reactor({ sqEntries: 8 });
    try {
      for (const fd of [r.eventfd, r.ringFd]) {
        const e = thrownBy(() => r.close(fd));
        expect(e).toBeInstanceOf(InvalidArgumentError);
        expect(e.message).toContain(`fd ${fd} is a live reactor's`);
      }
      // Another reactor of this Worker (the shard's own) through this one, and the other way.
      expect(thrownBy(() => r.close(reactor().eventfd))).toBeInstanceOf(InvalidArgumentError);
      expect(thrownBy(() => reactor().close(r.ringFd))).toBeInstanceOf(InvalidArgumentError);
      expect(r.inFlight).toBe(0);
    } finally {
      if (r.inFlight === 0) r.destroy();
    }
  });

  test("reactor().close(reactor().eventfd) is refused, and the shard's reactor still works after", async () => {
    const r = reactor();
    expect(thrownBy(() => r.close(r.eventfd))).toBeInstanceOf(InvalidArgumentError);
    expect(thrownBy(() => r.close(r.ringFd))).toBeInstanceOf(InvalidArgumentError);
    await r.nop();
    Reactor.wake(r.eventfd);
    expect(r.isClosed).toBe(false);
  });

  test("Reactor.wake() of a number that is not a live reactor's eventfd throws InvalidArgumentError, not SystemError", () => {
    const p = pipe(true);
    const r = new Reactor({ sqEntries: 8 });
    const fd = r.eventfd;
    try {
      Reactor.wake(fd); // live: woken
      const e = thrownBy(() => Reactor.wake(p.writeFd));
      expect(e).toBeInstanceOf(InvalidArgumentError);
      expect(e.message).toContain("not the eventfd of a live reactor");
    } finally {
      r.destroy();
      p.close();
    }
    // Destroyed: its number is nobody's eventfd now.
    expect(thrownBy(() => Reactor.wake(fd))).toBeInstanceOf(InvalidArgumentError);
  });
});
