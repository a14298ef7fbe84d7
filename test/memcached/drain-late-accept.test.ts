/**
 * A connection that a stopping shard takes only after drain() shut every input (a busy shard
 * came to its listener's pending connections late) is served as the others are: what it had
 * sent is answered, then it closes with FIN. It used to be reset, so a client that had sent its
 * requests and half-closed read ECONNRESET instead of its answers (seen in the chaos test
 * around SIGTERM on a loaded machine).
 */
import { expect, test } from "bun:test";
import net from "node:net";
import { parseCommandLine } from "../../examples/memcached/cli.ts";
import { ShardServer } from "../../examples/memcached/server.ts";
import { freePort } from "./lib/harness.ts";

test("a connection taken after the inputs were shut answers what it had sent, then closes with FIN", async () => {
  const port = await freePort();
  const cl = parseCommandLine(["-p", String(port), "-l", "127.0.0.1", "-U", "0", "-t", "1"]);
  const server = new ShardServer(cl.settings, { shards: 1, shardId: 0 });
  server.start();
  const internals = server as unknown as { listeners: { accept(): Promise<unknown> }[]; inputShut: boolean };
  const l = internals.listeners[0]!;
  const accept = l.accept.bind(l);
  // The accept loop's next accept hands its connection over only once drain() shut the inputs.
  let held = 0;
  l.accept = async () => {
    const c = await accept();
    held++;
    while (!internals.inputShut) await Bun.sleep(5);
    return c;
  };
  const first = net.connect(port, "127.0.0.1");
  first.on("error", () => {});
  await new Promise<void>((r) => {
    first.once("data", () => r());
    first.write("version\r\n");
  });
  // The first connection was taken by the accept before the patch; this one goes to the patched one.
  const late = net.connect(port, "127.0.0.1");
  let got = "";
  let error: string | undefined;
  let closed = false;
  late.on("data", (d) => (got += d.toString("latin1")));
  late.on("error", (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
  late.on("close", () => (closed = true));
  await new Promise<void>((r) => late.once("connect", () => r()));
  late.end("set late 0 0 2\r\nok\r\nget late\r\n");
  for (let i = 0; i < 400 && held === 0; i++) await Bun.sleep(5);
  expect(held).toBe(1);
  const drained = server.drain(5000);
  for (let i = 0; i < 1000 && !closed; i++) await Bun.sleep(5);
  await drained;
  first.destroy();
  expect({ error, closed, got }).toEqual({ error: undefined, closed: true, got: "STORED\r\nVALUE late 0 2\r\nok\r\nEND\r\n" });
  await server.stop();
}, 30_000);
