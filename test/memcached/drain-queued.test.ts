/**
 * A graceful stop serves the clients the kernel connected before it: a shard's drain takes the
 * connections waiting in its listener's accept queue (they were reset before), answers what
 * they sent and closes them. In process: one shard's ShardServer, kept busy while the clients
 * (another process) connect, so they are still queued when drain() starts.
 */
import { expect, test } from "bun:test";
import { ShardServer } from "../../examples/memcached/server.ts";
import { queueClients } from "../net/fixtures/accept-queue.ts";
import { stockLikeSettings } from "./lib/harness.ts";

/** A port nobody listens on now. */
function freePort(): number {
  const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = s.port;
  s.stop(true);
  return port;
}

test("drain(): clients waiting in the accept queue get their answers, then the connection closes", async () => {
  const port = freePort();
  const server = new ShardServer(stockLikeSettings({ port, listen: "127.0.0.1" }), { shards: 1, shardId: 0 });
  server.start();
  try {
    const clients = queueClients(port, 5, "set k# 0 0 1\\r\\n#\\r\\nget k#\\r\\n");
    await server.drain(10_000);
    const got = await clients;
    expect(got).toEqual(Array.from({ length: 5 }, (_, i) => ({ got: `STORED\r\nVALUE k${i} 0 1\r\n${i}\r\nEND\r\n`, error: null })));
  } finally {
    await server.stop();
  }
}, 60_000);
