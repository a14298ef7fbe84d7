/**
 * A connection that a stopping shard's accept loop hands over only after drain()'s deadline
 * (a busy shard came to its closed listener's pending connections that late) is reset, as the
 * connections still open at the deadline are, and stop() frees the store only after it is gone:
 * it used to be served with its input shut after drain() returned, so its requests reached a
 * store stop() had already freed.
 */
import { expect, test } from "bun:test";
import net from "node:net";
import { parseCommandLine } from "../../examples/memcached/cli.ts";
import { ShardServer } from "../../examples/memcached/server.ts";
import { freePort } from "./lib/harness.ts";

test("a connection taken after drain()'s deadline is reset and served nothing after stop()", async () => {
  const port = await freePort();
  const cl = parseCommandLine(["-p", String(port), "-l", "127.0.0.1", "-U", "0", "-t", "1"]);
  const server = new ShardServer(cl.settings, { shards: 1, shardId: 0 });
  server.start();
  const internals = server as unknown as { listeners: { accept(): Promise<unknown> }[]; inputShut: boolean; closed: boolean };
  const l = internals.listeners[0]!;
  const accept = l.accept.bind(l);
  // The accept loop's next accept hands its connection over only after drain()'s deadline.
  let held = 0;
  let release = false;
  l.accept = async () => {
    const c = await accept();
    held++;
    while (!release) await Bun.sleep(5);
    return c;
  };
  const first = net.connect(port, "127.0.0.1");
  first.on("error", () => {});
  await new Promise<void>((r) => {
    first.once("data", () => r());
    first.write("version\r\n");
  });
  const late = net.connect(port, "127.0.0.1");
  let got = "";
  let error: string | undefined;
  let closed = false;
  late.on("data", (d) => (got += d.toString("latin1")));
  late.on("error", (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
  late.on("close", () => (closed = true));
  await new Promise<void>((r) => late.once("connect", () => r()));
  // Sent, never ended: only the deadline's reset ends this connection.
  late.write("set late 0 0 2\r\nok\r\nget late\r\n");
  for (let i = 0; i < 400 && held === 0; i++) await Bun.sleep(5);
  expect(held).toBe(1);
  const stopped = server.stop(50);
  // Well past the grace (100 ms) and the 50 ms deadline: the connections open then were reset.
  await Bun.sleep(400);
  release = true;
  await stopped;
  for (let i = 0; i < 400 && !closed; i++) await Bun.sleep(5);
  first.destroy();
  expect({ closed, error, got }).toEqual({ closed: true, error: "ECONNRESET", got: "" });
}, 30_000);
