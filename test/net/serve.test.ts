// serve(): handler errors reset only their connection and reach onError; nothing escapes as an
// unhandled rejection; returning closes gracefully.
import { expect, test } from "bun:test";
import { serve, connect } from "../../src/net/api.ts";
import { InvalidArgumentError } from "../../src/core/errors.ts";
import { expectQuiescent, rejection, until } from "./conformance/harness.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import type { Connection, NetworkStack } from "../../src/net/types.ts";

test("a throwing handler resets its connection and reports to onError; others are served", async () => {
  let unhandled = 0;
  const onUnhandled = () => unhandled++;
  process.on("unhandledRejection", onUnhandled);
  const errors: unknown[] = [];
  const l = serve(
    "127.0.0.1:0",
    async (c) => {
      const v = (await c.input.read())!;
      if (v[0] === 33) throw new Error("boom"); // "!"
      await c.output.write(v);
    },
    { onError: (e) => errors.push(e) },
  );
  const bad = await connect(l.localAddress);
  await bad.output.write("!oops");
  expect(await rejection(bad.input.read())).toMatchObject({ code: "ECONNRESET" });
  const good = await connect(l.localAddress);
  await good.output.write("fine");
  expect(new TextDecoder().decode((await good.input.readExactly(4))!)).toBe("fine");
  expect(await good.input.read()).toBeNull(); // the handler returned: graceful close
  await until(() => errors.length === 1, 2000, "onError");
  expect((errors[0] as Error).message).toBe("boom");
  await bad.close();
  await good.close();
  await l.close();
  await expectQuiescent(posixStack());
  process.off("unhandledRejection", onUnhandled);
  expect(unhandled).toBe(0);
  expect(() => serve("127.0.0.1:0", 5 as never)).toThrow(InvalidArgumentError);
});

test("drain(): a connection whose handler starts during the grace (accepted just before the stop) gets the grace too; its input is not shut at once", async () => {
  // A stack whose listener hands out connections when told: the connection is delivered, and
  // drain() called, before serve() has started its handler.
  let deliver: ((c: Connection) => void) | undefined;
  let end: (() => void) | undefined;
  let closed = false;
  const listener = {
    localAddress: { family: "ipv4", host: "127.0.0.1", port: 1 },
    connections: 0,
    accept: () => Promise.reject(new Error("not used")),
    abortAccept() {},
    close(): Promise<void> {
      closed = true;
      end?.();
      return Promise.resolve();
    },
    [Symbol.asyncDispose]: () => Promise.resolve(),
    [Symbol.asyncIterator]: () => ({
      next: () =>
        closed
          ? Promise.resolve({ done: true, value: undefined })
          : new Promise((resolve) => {
              deliver = (c) => resolve({ done: false, value: c });
              end = () => resolve({ done: true, value: undefined });
            }),
    }),
  };
  const stack = { name: "fake", listen: () => listener } as unknown as NetworkStack;
  const shutAt: number[] = [];
  let inputEnded!: () => void;
  const ended = new Promise<void>((resolve) => (inputEnded = resolve));
  const conn = {
    shutdownInput() {
      shutAt.push(performance.now());
      inputEnded();
    },
    close: () => Promise.resolve(),
    reset() {},
  } as unknown as Connection;
  const server = serve("127.0.0.1:0", () => ended, { stack });
  await Bun.sleep(5); // serve() waits for its first connection
  deliver!(conn);
  const t0 = performance.now();
  await server.drain({ graceMs: 200, timeoutMs: 5000 });
  // Shut when the grace ended, as the connections already running were (it was shut at once).
  expect(shutAt.length).toBe(1);
  expect(shutAt[0]! - t0).toBeGreaterThanOrEqual(150);
  expect(server.active).toBe(0);
});
