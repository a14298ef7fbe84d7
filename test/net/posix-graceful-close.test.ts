/**
 * Graceful close of a kernel listener: the peers the kernel already connected (its accept
 * queue) are taken and served instead of reset: Listener.close({ acceptPending: true }) and
 * Server.drain(), which uses it. The clients run in another process and connect while this
 * shard is kept busy (it cannot accept), so they are still in the kernel's queue at the close.
 */
import { expect, test } from "bun:test";
import { InvalidArgumentError } from "../../src/core/errors.ts";
import { serve } from "../../src/net/api.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import type { Connection, Listener } from "../../src/net/types.ts";
import { expectQuiescent } from "./conformance/harness.ts";
import { queueClients } from "./fixtures/accept-queue.ts";

const stack = posixStack();

function portOf(l: Listener): number {
  const a = l.localAddress;
  if (a.family === "unix") throw new Error("a TCP listener was expected");
  return a.port;
}

/** Reads one line ("ping N\n") and answers "pong N\n". */
async function pong(c: Connection): Promise<void> {
  let line = "";
  while (!line.includes("\n")) {
    const v = await c.input.read();
    if (v === null) break;
    line += Buffer.from(v).toString("latin1");
  }
  await c.output.write(`pong ${line.slice(5)}`);
}

async function acceptAll(l: Listener, handle: (c: Connection) => Promise<void>): Promise<number> {
  const running: Promise<void>[] = [];
  for await (const c of l) running.push(handle(c).then(() => c.close()));
  await Promise.all(running);
  return running.length;
}

test("close({ acceptPending: true }) takes the connections in the kernel's accept queue; accept() then ends", async () => {
  const l = stack.listen("127.0.0.1:0");
  const clients = queueClients(portOf(l), 6, "ping #\\n");
  const closed = l.close({ acceptPending: true });
  expect(l.close()).toBe(closed);
  const served = await acceptAll(l, pong);
  await closed;
  expect(served).toBe(6);
  const got = await clients;
  expect(got).toEqual(Array.from({ length: 6 }, (_, i) => ({ got: `pong ${i}\n`, error: null })));
  await expectQuiescent(stack);
}, 60_000);

test("close() without it resets the queued connections: no client is answered", async () => {
  const l = stack.listen("127.0.0.1:0");
  const clients = queueClients(portOf(l), 3, "ping #\\n");
  const closed = l.close();
  expect(await acceptAll(l, pong)).toBe(0);
  await closed;
  for (const r of await clients) {
    expect(r.got).toBe("");
    expect(r.error).toBe("ECONNRESET");
  }
  await expectQuiescent(stack);
}, 60_000);

test("close({ acceptPending: true }) keeps the connection limit: queued peers past it are reset", async () => {
  const l = stack.listen("127.0.0.1:0", { maxConnections: 2 });
  const rejected = stack.stats().connectionsRejected;
  const clients = queueClients(portOf(l), 5, "ping #\\n");
  const closed = l.close({ acceptPending: true });
  expect(await acceptAll(l, pong)).toBe(2);
  await closed;
  const got = await clients;
  expect(got.filter((r) => r.got.startsWith("pong ") && r.error === null).length).toBe(2);
  expect(got.filter((r) => r.got === "" && r.error === "ECONNRESET").length).toBe(3);
  expect(stack.stats().connectionsRejected - rejected).toBe(3);
  await expectQuiescent(stack);
}, 60_000);

test("Server.drain() serves the clients the kernel connected before the stop", async () => {
  const server = serve("127.0.0.1:0", pong, { stack });
  const clients = queueClients(portOf(server), 8, "ping #\\n");
  await server.drain();
  expect(await clients).toEqual(Array.from({ length: 8 }, (_, i) => ({ got: `pong ${i}\n`, error: null })));
  expect(server.active).toBe(0);
  await expectQuiescent(stack);
}, 60_000);

test("close() options are checked before anything changes", async () => {
  const l = stack.listen("127.0.0.1:0");
  expect(() => l.close({ acceptPending: "yes" as never })).toThrow(InvalidArgumentError);
  expect(() => l.close(5 as never)).toThrow(InvalidArgumentError);
  // Still accepting.
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress);
  (await accepted).reset();
  c.reset();
  await l.close({ acceptPending: false });
  await expectQuiescent(stack);
});
