/**
 * Connections a stopping shard's accept loop hands over late (a busy shard came to its closed
 * listener's pending connections late):
 * - after drain() shut every input: served as the others are, what it had sent answered, then
 *   closed with FIN. It used to be reset, so a client that had sent its requests and half-closed
 *   read ECONNRESET instead of its answers (seen in the chaos test around SIGTERM on a loaded
 *   machine).
 * - after drain()'s deadline: reset, as the connections still open at the deadline are, and
 *   stop() frees the store only after it is gone. It used to be served with its input shut after
 *   drain() returned, its requests reaching a store stop() had already freed.
 */
import { expect, test } from "bun:test";
import net from "node:net";
import { parseCommandLine } from "../../examples/memcached/cli.ts";
import { ShardServer } from "../../examples/memcached/server.ts";
import { freePort } from "./lib/harness.ts";

/**
 * A 1-shard server whose accept loop, after a first connection, holds the next one until
 * `handOver()` says so; `late` is that connection's client, its bytes and how it ended.
 */
async function lateConnection(handOver: () => boolean) {
  const port = await freePort();
  const cl = parseCommandLine(["-p", String(port), "-l", "127.0.0.1", "-U", "0", "-t", "1"]);
  const server = new ShardServer(cl.settings, { shards: 1, shardId: 0 });
  server.start();
  const internals = server as unknown as { listeners: { accept(): Promise<unknown> }[]; inputShut: boolean };
  const l = internals.listeners[0]!;
  const accept = l.accept.bind(l);
  let held = 0;
  l.accept = async () => {
    const c = await accept();
    held++;
    while (!handOver()) await Bun.sleep(5);
    return c;
  };
  // The first connection goes to the accept the loop called before the patch; the next to the patched one.
  const first = net.connect(port, "127.0.0.1");
  first.on("error", () => {});
  await new Promise<void>((r) => {
    first.once("data", () => r());
    first.write("version\r\n");
  });
  const late = net.connect(port, "127.0.0.1");
  const client = { got: "", error: undefined as string | undefined, closed: false };
  late.on("data", (d) => (client.got += d.toString("latin1")));
  late.on("error", (e: NodeJS.ErrnoException) => (client.error = e.code ?? e.message));
  late.on("close", () => (client.closed = true));
  await new Promise<void>((r) => late.once("connect", () => r()));
  const waitHeld = async () => {
    for (let i = 0; i < 400 && held === 0; i++) await Bun.sleep(5);
    expect(held).toBe(1);
  };
  const waitClosed = async () => {
    for (let i = 0; i < 1000 && !client.closed; i++) await Bun.sleep(5);
  };
  return { server, internals, first, late, client, waitHeld, waitClosed };
}

test("a connection taken after the inputs were shut answers what it had sent, then closes with FIN", async () => {
  let inputShut = (): boolean => false;
  const t = await lateConnection(() => inputShut());
  inputShut = () => t.internals.inputShut;
  t.late.end("set late 0 0 2\r\nok\r\nget late\r\n");
  await t.waitHeld();
  const drained = t.server.drain(5000);
  await t.waitClosed();
  await drained;
  t.first.destroy();
  expect(t.client).toEqual({ error: undefined, closed: true, got: "STORED\r\nVALUE late 0 2\r\nok\r\nEND\r\n" });
  await t.server.stop();
}, 30_000);

test("a connection taken after drain()'s deadline is reset and served nothing after stop()", async () => {
  let release = false;
  const t = await lateConnection(() => release);
  // Sent, never ended: only the deadline's reset ends this connection.
  t.late.write("set late 0 0 2\r\nok\r\nget late\r\n");
  await t.waitHeld();
  const stopped = t.server.stop(50);
  // Well past the grace (100 ms) and the 50 ms deadline: the connections open then were reset.
  await Bun.sleep(400);
  release = true;
  await stopped;
  await t.waitClosed();
  t.first.destroy();
  expect(t.client).toEqual({ closed: true, error: "ECONNRESET", got: "" });
}, 30_000);
