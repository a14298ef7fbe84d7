// serve().drain() and the connections a listener hands out after its close({ acceptPending: true })
// resolved. The Listener contract lets it: the close takes the peers the kernel had completed,
// and accept() hands them out afterwards ("keep accepting until then"). drain() treated the
// close's promise as "everything handed out": it returned at once when no handler ran yet (the
// late connection was then served after drain() had resolved), waited only for the handlers
// running at that moment, and a connection handed out after the deadline was served (its input
// shut) instead of reset as the ones open at the deadline were.
import { expect, test } from "bun:test";
import { serve } from "../../src/net/api.ts";
import type { Connection, NetworkStack } from "../../src/net/types.ts";

/**
 * A stack whose listener's close() resolves at once and whose connections come when the test
 * hands them out (as a listener whose close took pending peers, handed out by accept() later),
 * its iteration ending when the test says so.
 */
function lateStack() {
  const pending: Connection[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  let closeCalls = 0;
  const poke = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const listener = {
    localAddress: { family: "ipv4", host: "127.0.0.1", port: 1 },
    connections: 0,
    accept: () => Promise.reject(new Error("not used")),
    abortAccept() {},
    close(): Promise<void> {
      closeCalls++;
      return Promise.resolve();
    },
    [Symbol.asyncDispose]: () => Promise.resolve(),
    [Symbol.asyncIterator]: () => ({
      next: async (): Promise<IteratorResult<Connection>> => {
        for (;;) {
          const c = pending.shift();
          if (c !== undefined) return { done: false, value: c };
          if (ended) return { done: true, value: undefined };
          await new Promise<void>((resolve) => (wake = resolve));
        }
      },
    }),
  };
  return {
    stack: { name: "late", listen: () => listener } as unknown as NetworkStack,
    handOut(c: Connection) {
      pending.push(c);
      poke();
    },
    end() {
      ended = true;
      poke();
    },
    closeCalls: () => closeCalls,
  };
}

/** A connection that records what serve() did with it. */
function fakeConnection(name: string) {
  const log: string[] = [];
  let endInput!: () => void;
  const inputEnded = new Promise<void>((resolve) => (endInput = resolve));
  const c = {
    name,
    shutdownInput() {
      log.push("shutdownInput");
      endInput();
    },
    close() {
      log.push("close");
      return Promise.resolve();
    },
    reset() {
      log.push("reset");
      endInput();
    },
  } as unknown as Connection;
  return { c, log, inputEnded };
}

test("drain(): a connection handed out after the deadline is reset like the ones open then, not served after drain() resolved", async () => {
  const s = lateStack();
  const handled: string[] = [];
  // A handler that never finishes: drain() reaches its deadline.
  const server = serve("127.0.0.1:0", (c) => {
    handled.push((c as unknown as { name: string }).name);
    return new Promise(() => {});
  }, { stack: s.stack });
  const a = fakeConnection("a");
  s.handOut(a.c);
  await Bun.sleep(5);
  expect(handled).toEqual(["a"]);
  await server.drain({ graceMs: 0, timeoutMs: 50 });
  expect(a.log).toEqual(["shutdownInput", "reset"]);
  // The listener hands out one more (a peer its close had taken) after drain() resolved.
  const b = fakeConnection("b");
  s.handOut(b.c);
  s.end();
  await Bun.sleep(20);
  // It is reset, its handler never run (it ran, input shut, after drain() had returned).
  expect(handled).toEqual(["a"]);
  expect(b.log).toEqual(["reset"]);
  expect(server.active).toBe(1); // a's handler, stuck, is not waited for (as documented)
});

test("drain(): a connection the listener still hands out after its close resolved is served before drain() resolves", async () => {
  const s = lateStack();
  const finished: string[] = [];
  const server = serve("127.0.0.1:0", async (c) => {
    // Serves until the input ends (drain() shuts it after the grace).
    await (c as unknown as { inputEnded: Promise<void> }).inputEnded;
    finished.push((c as unknown as { name: string }).name);
  }, { stack: s.stack });
  const b = fakeConnection("b");
  (b.c as unknown as { inputEnded: Promise<void> }).inputEnded = b.inputEnded;
  // No connection runs when drain() starts; the listener hands one out 30 ms later (a peer the
  // close took), then its iteration ends.
  const late = Bun.sleep(30).then(() => {
    s.handOut(b.c);
    s.end();
  });
  await server.drain({ graceMs: 10, timeoutMs: 5000 });
  // It returned at once (no handler running then), and b was served after drain() resolved.
  expect(finished).toEqual(["b"]);
  expect(b.log).toEqual(["shutdownInput", "close"]);
  expect(server.active).toBe(0);
  expect(s.closeCalls()).toBe(1);
  await late;
});

test("drain(): a connection handed out while drain() waits for running handlers is waited for too", async () => {
  const s = lateStack();
  const finished: string[] = [];
  const server = serve("127.0.0.1:0", async (c) => {
    await (c as unknown as { inputEnded: Promise<void> }).inputEnded;
    // The late one takes a while to answer after its input ended.
    if ((c as unknown as { name: string }).name === "b") await Bun.sleep(50);
    finished.push((c as unknown as { name: string }).name);
  }, { stack: s.stack });
  const a = fakeConnection("a");
  (a.c as unknown as { inputEnded: Promise<void> }).inputEnded = a.inputEnded;
  s.handOut(a.c);
  await Bun.sleep(5);
  const b = fakeConnection("b");
  (b.c as unknown as { inputEnded: Promise<void> }).inputEnded = b.inputEnded;
  // b comes after the grace, while drain() waits for a (whose input it just shut).
  const late = Bun.sleep(40).then(() => {
    s.handOut(b.c);
    s.end();
  });
  await server.drain({ graceMs: 20, timeoutMs: 5000 });
  expect(finished.sort()).toEqual(["a", "b"]);
  expect(b.log).toEqual(["shutdownInput", "close"]);
  expect(server.active).toBe(0);
  await late;
});
