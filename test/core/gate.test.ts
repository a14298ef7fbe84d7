import { describe, expect, test } from "bun:test";
import { AbortError, InvalidArgumentError, ShoalError } from "../../src/core/errors.ts";
import { Gate, GateClosedError, withGate } from "../../src/core/gate.ts";
import { sleep } from "../../src/core/timer.ts";
import { errorOf, status } from "./fixtures/util.ts";


function expectClosed(fn: () => unknown, message = "gate closed"): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(GateClosedError);
  expect((caught as GateClosedError).code).toBe("ERR_GATE_CLOSED");
  expect((caught as GateClosedError).message).toBe(message);
}

describe("Gate", () => {
  test("counts holders and closes only after the last one leaves (Seastar basic_gate_test)", async () => {
    const g = new Gate();
    expect(g.count).toBe(0);
    expect(g.isClosed).toBe(false);
    g.check();
    g.enter();
    expect(g.count).toBe(1);
    const h0 = g.tryHold();
    expect(h0).toBeDefined();
    expect(g.count).toBe(2);
    const h1 = g.hold();
    expect(g.count).toBe(3);
    const closed = g.close();
    expect(g.isClosed).toBe(true);
    expect(status(closed)).toBe("pending");
    g.leave();
    expect(g.count).toBe(2);
    h0!.release();
    expect(g.count).toBe(1);
    expect(status(closed)).toBe("pending");
    h1.release();
    expect(g.count).toBe(0);
    expect(status(closed)).toBe("fulfilled");
    await closed;
  });

  test("close() with nobody inside resolves at once", () => {
    const g = new Gate();
    expect(status(g.close())).toBe("fulfilled");
  });

  test("after close, enter/check/hold throw GateClosedError and tryEnter/tryHold refuse (Seastar gate_closed_test)", async () => {
    const g = new Gate();
    g.enter();
    const closed = g.close();
    // Refused while draining, not only once drained.
    expectClosed(() => g.enter());
    expectClosed(() => g.check());
    expectClosed(() => g.hold());
    expect(g.tryEnter()).toBe(false);
    expect(g.tryHold()).toBeUndefined();
    expect(g.count).toBe(1);
    g.leave();
    await closed;
    expectClosed(() => g.enter());
    let called = false;
    const err = await errorOf(withGate(g, () => void (called = true)));
    expect(err).toBeInstanceOf(GateClosedError);
    expect(called).toBe(false);
    expect(g.count).toBe(0);
  });

  test("a second close() throws", async () => {
    const g = new Gate();
    await g.close();
    expect(() => g.close()).toThrow(GateClosedError);
  });

  test("a named gate names itself in the error", () => {
    const g = new Gate("memcache");
    void g.close();
    expectClosed(() => g.enter(), "memcache gate closed");
    expect(() => new Gate(5 as never)).toThrow(InvalidArgumentError);
  });

  test("a holder leaves exactly once, by release() or dispose", async () => {
    const g = new Gate();
    {
      using h = g.hold();
      expect(h.held).toBe(true);
      expect(g.count).toBe(1);
    }
    expect(g.count).toBe(0);
    const h = g.hold();
    h.release();
    h.release();
    h[Symbol.dispose]();
    expect(h.held).toBe(false);
    expect(g.count).toBe(0);
    await g.close();
  });

  test("leave() without enter() throws instead of corrupting the count", () => {
    const g = new Gate();
    let caught: unknown;
    try {
      g.leave();
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ShoalError);
    expect((caught as ShoalError).code).toBe("ERR_GATE_NOT_ENTERED");
    expect(g.count).toBe(0);
  });

  test("withGate holds the gate while fn runs and leaves on success and failure", async () => {
    const g = new Gate();
    expect(
      await withGate(g, () => {
        expect(g.count).toBe(1);
        return 42;
      }),
    ).toBe(42);
    expect(g.count).toBe(0);
    const err = await errorOf(
      withGate(g, async () => {
        await sleep(0);
        throw new Error("boom");
      }),
    );
    expect((err as Error).message).toBe("boom");
    expect(g.count).toBe(0);
    // A synchronous throw also leaves.
    const syncErr = await errorOf(
      withGate(g, () => {
        throw new Error("sync");
      }),
    );
    expect((syncErr as Error).message).toBe("sync");
    expect(g.count).toBe(0);
    expect(() => withGate(g, 1 as never)).toThrow(InvalidArgumentError);
    expect(() => withGate({} as Gate, () => 1)).toThrow(InvalidArgumentError);
  });

  test("close() waits for every fiber in flight", async () => {
    const g = new Gate();
    const finished: number[] = [];
    const fibers = [3, 1, 2].map((ms, i) =>
      withGate(g, async () => {
        await sleep(ms);
        finished.push(i);
      }),
    );
    await g.close();
    expect(finished.sort()).toEqual([0, 1, 2]);
    await Promise.all(fibers);
  });

  test("await using closes the gate and waits for holders", async () => {
    let gate: Gate | undefined;
    let left = false;
    {
      await using g = new Gate();
      gate = g;
      const h = g.hold();
      void sleep(1).then(() => {
        left = true;
        h.release();
      });
    }
    expect(left).toBe(true);
    expect(gate.isClosed).toBe(true);
    // Disposing a gate closed by hand waits on the same close: for the holder still inside.
    const g2 = new Gate();
    const h2 = g2.hold();
    const closed = g2.close();
    const disposed = g2[Symbol.asyncDispose]();
    await Promise.resolve();
    expect(status(disposed)).toBe("pending");
    h2.release();
    await disposed;
    expect(status(closed)).toBe("fulfilled");
  });
});

describe("Gate.close with an AbortSignal", () => {
  test("aborting stops the wait (AbortError) but the gate stays closed; an aborted signal leaves it open", async () => {
    const g = new Gate();
    g.enter();
    const ac = new AbortController();
    const closing = g.close({ signal: ac.signal });
    expect(status(closing)).toBe("pending");
    ac.abort();
    expect(await errorOf(closing)).toBeInstanceOf(AbortError);
    expect(() => g.enter()).toThrow(GateClosedError);
    g.leave();
    await g[Symbol.asyncDispose](); // still waits for (here: finds no) holders

    const open = new Gate();
    const dead = AbortSignal.abort();
    expect(await errorOf(open.close({ signal: dead }))).toBeInstanceOf(AbortError);
    open.enter(); // not closed
    open.leave();
    await open.close();
    expect(() => new Gate().close({ signal: 5 as never })).toThrow(InvalidArgumentError);
  });
});
