/**
 * Conformance: serve() and its graceful stop, Server.drain(). Requests a client sent before the
 * stop are answered in full, then its connection closes; a handler that does not finish is reset
 * after the timeout; nothing new is accepted; the Server keeps count of its running handlers.
 */
import { describe, expect, test } from "bun:test";
import { InvalidArgumentError } from "../../../src/core/errors.ts";
import { serve } from "../../../src/net/api.ts";
import type { Connection } from "../../../src/net/types.ts";
import { crc, drain, expectQuiescent, expectSystemError, fillRandom, until, type StackUnderTest } from "./harness.ts";

/** Echo through serve(): writes back what it reads, returns at end of stream (serve() closes). */
async function echoHandler(c: Connection): Promise<void> {
  for (;;) {
    const v = await c.input.read();
    if (v === null) return;
    await c.output.write(v);
  }
}

export function serveConformance(s: StackUnderTest): void {
  const stack = s.stack;

  describe(`${s.name} serve() and drain()`, () => {
    test("drain(): every byte sent before the stop is echoed, then each connection closes; nothing new is accepted", async () => {
      const server = serve("127.0.0.1:0", echoHandler, { stack, writeHighWater: 64 * 1024 });
      const size = 2 * 1024 * 1024;
      const clients = await Promise.all(Array.from({ length: 4 }, () => stack.connect(server.localAddress)));
      const payloads = clients.map((_, i) => {
        const p = new Uint8Array(size);
        fillRandom(p, i + 7);
        return p;
      });
      // Every client sends its 2 MiB without reading: the echo backs up into the server (its
      // output above the high-water mark holds its reads), so most of each payload is still
      // unanswered when the stop begins.
      const sent = clients.map((c, i) => c.output.write(payloads[i]!));
      await until(() => server.active === clients.length, 5000, "every handler to run");
      const idle = await stack.connect(server.localAddress);
      await until(() => server.active === clients.length + 1, 5000, "the idle connection's handler to run");

      const drained = server.drain();
      expect(server.drain()).toBe(drained); // idempotent
      // The clients read only now: every byte comes back, then end of stream (not a reset).
      const got = await Promise.all(clients.map((c) => drain(c)));
      await Promise.all(sent);
      for (let i = 0; i < clients.length; i++) expect(got[i]).toEqual({ bytes: size, crc: crc(payloads[i]!) });
      expect(await idle.input.read()).toBeNull();
      await drained;
      expect(server.active).toBe(0);
      await expectSystemError(stack.connect(server.localAddress), "ECONNREFUSED", "connect");
      for (const c of [...clients, idle]) await c.close();
      await expectQuiescent(stack);
    }, 60_000);

    test("drain(): bytes a client sends during the grace period are still answered", async () => {
      const server = serve("127.0.0.1:0", echoHandler, { stack });
      const c = await stack.connect(server.localAddress);
      await until(() => server.active === 1, 5000, "the handler to run");
      const drained = server.drain({ graceMs: 300 });
      await Bun.sleep(50);
      await c.output.write("late but within the grace");
      const got = await drain(c);
      expect(got.bytes).toBe("late but within the grace".length);
      await drained;
      await c.close();
      await expectQuiescent(stack);
    }, 30_000);

    test("drain(): a handler that ignores end of stream is reset after timeoutMs; drain() still resolves", async () => {
      const errors: unknown[] = [];
      let release!: () => void;
      const stuck = new Promise<void>((r) => (release = r));
      const server = serve(
        "127.0.0.1:0",
        async (c) => {
          await stuck; // never reads, never returns until released
          await c.output.write("too late");
        },
        { stack, onError: (e) => errors.push(e) },
      );
      const c = await stack.connect(server.localAddress);
      await until(() => server.active === 1, 5000, "the handler to run");
      const t0 = performance.now();
      await server.drain({ graceMs: 0, timeoutMs: 200 });
      const took = performance.now() - t0;
      expect(took).toBeGreaterThanOrEqual(150);
      // The connection was reset: the client sees the reset, never "too late"; the handler's
      // write fails once it is released, and it is counted out.
      release();
      await expectSystemError(drain(c), "ECONNRESET");
      await until(() => server.active === 0, 5000, "the released handler to finish");
      expect(errors.length).toBe(1);
      await c.close();
      await expectQuiescent(stack);
    }, 30_000);

    test("drain() with no connection resolves at once; bad options throw InvalidArgumentError", async () => {
      const server = serve("127.0.0.1:0", echoHandler, { stack });
      for (const bad of [{ timeoutMs: -1 }, { graceMs: Number.NaN }, { timeoutMs: "5" }, { graceMs: Infinity }, 5, null]) {
        expect(() => server.drain(bad as never)).toThrow(InvalidArgumentError);
      }
      await server.drain({ graceMs: 10_000 }); // no connection: the grace is not waited for
      expect(server.active).toBe(0);
      await expectQuiescent(stack);
    }, 30_000);

    test("a handler that throws at once is counted out; active follows the running handlers", async () => {
      const errors: unknown[] = [];
      const server = serve(
        "127.0.0.1:0",
        (c) => {
          if (c.remoteAddress !== undefined) throw new Error("refused at once");
        },
        { stack, onError: (e) => errors.push(e) },
      );
      const conns = await Promise.all(Array.from({ length: 3 }, () => stack.connect(server.localAddress)));
      await until(() => errors.length === 3, 5000, "every handler to fail");
      await until(() => server.active === 0, 5000, "active to return to 0");
      for (const c of conns) await c.close();
      await server.drain();
      await expectQuiescent(stack);
    }, 30_000);
  });
}
