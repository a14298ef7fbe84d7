/**
 * A graceful close() while the peer is still sending. The kernel answers a close with unread
 * input (or input arriving after it) with a reset, and a reset drops the socket's send queue:
 * answers that flush() had reported written never reached a client that had not read them yet
 * (a pipelining client cut off by a server's stop got ECONNRESET after the first ~100 KB).
 * The connection now sends its FIN after the data, discards what arrives, and closes once the
 * peer has everything (or ended its side), within closeTimeoutMs.
 */
import { expect, test } from "bun:test";
import net from "node:net";
import { listen } from "../../src/net/api.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import { expectQuiescent } from "./conformance/harness.ts";

const SIZE = 2 * 1024 * 1024;
const payload = new Uint8Array(SIZE);
for (let i = 0; i < SIZE; i++) payload[i] = (i * 2654435761) >>> 24;

/** A client that sends `sent` bytes the server never reads, then stops reading itself. */
async function pausedClient(port: number, sent: number) {
  const sock = net.connect(port, "127.0.0.1");
  await new Promise<void>((r) => sock.once("connect", () => r()));
  sock.pause();
  sock.write(new Uint8Array(sent).fill(0x71));
  const chunks: Buffer[] = [];
  const ended = new Promise<string>((resolve) => {
    sock.on("data", (d: Buffer) => chunks.push(d));
    sock.on("end", () => resolve("fin"));
    sock.on("error", (e: Error) => resolve(`error ${(e as { code?: string }).code}`));
  });
  return { sock, chunks, ended };
}

test("close() with unread input and answers the peer has not read yet: the peer gets every byte, then FIN (it got a reset after ~100 KB)", async () => {
  const l = listen("127.0.0.1:0", { closeTimeoutMs: 10_000 });
  const port = l.localAddress.family === "ipv4" ? l.localAddress.port : 0;
  const accepted = l.accept();
  const client = await pausedClient(port, 100_000);
  const c = await accepted;
  // The answer fits in the kernel's buffers: flush() completes while the client is not reading.
  await c.output.write(payload);
  await c.output.flush();
  // The client still sends (a pipeline cut by a stop): unread at the close. (Bytes a peer sends
  // after it has taken every answer and the socket closed still meet the kernel's reset.)
  client.sock.write(new Uint8Array(50_000).fill(0x72));
  await Bun.sleep(100);
  const closing = c.close();
  await Bun.sleep(100);
  client.sock.resume();
  expect(await client.ended).toBe("fin");
  const got = Buffer.concat(client.chunks);
  expect(got.length).toBe(SIZE);
  expect(Buffer.compare(got, Buffer.from(payload))).toBe(0);
  await closing;
  client.sock.destroy();
  await l.close();
  await expectQuiescent(posixStack());
}, 30_000);

test("a peer that does not read holds a lingering close for closeTimeoutMs at most; a reset() ends it at once", async () => {
  const l = listen("127.0.0.1:0", { closeTimeoutMs: 300 });
  const port = l.localAddress.family === "ipv4" ? l.localAddress.port : 0;
  const accepted = l.accept();
  const client = await pausedClient(port, 10_000);
  const c = await accepted;
  await c.output.write(payload);
  await c.output.flush();
  const t0 = performance.now();
  await c.close();
  const took = performance.now() - t0;
  expect(took).toBeGreaterThanOrEqual(250);
  // Then it closes as any close does: the input it discarded leaves nothing unread, so the
  // kernel goes on delivering the rest after the close (no reset).
  client.sock.resume();
  expect(await client.ended).toBe("fin");
  expect(Buffer.concat(client.chunks).length).toBe(SIZE);
  client.sock.destroy();

  const accepted2 = l.accept();
  const client2 = await pausedClient(port, 10_000);
  const c2 = await accepted2;
  await c2.output.write(payload);
  await c2.output.flush();
  let closed = false;
  const closing = c2.close().then(() => (closed = true));
  await Bun.sleep(50);
  expect(closed).toBe(false);
  c2.reset();
  await closing;
  client2.sock.resume();
  expect(await client2.ended).toBe("error ECONNRESET");
  client2.sock.destroy();
  await l.close();
  await expectQuiescent(posixStack());
}, 30_000);

test("a peer that has read everything and closed: close() does not linger", async () => {
  const l = listen("127.0.0.1:0");
  const port = l.localAddress.family === "ipv4" ? l.localAddress.port : 0;
  const accepted = l.accept();
  const sock = net.connect(port, "127.0.0.1");
  const got: Buffer[] = [];
  sock.on("data", (d: Buffer) => got.push(d));
  const ended = new Promise<void>((r) => sock.on("end", () => r()));
  const c = await accepted;
  await c.output.write(new Uint8Array(1000).fill(1));
  await c.output.flush();
  while (Buffer.concat(got).length < 1000) await Bun.sleep(5);
  const t0 = performance.now();
  await c.close();
  expect(performance.now() - t0).toBeLessThan(1000); // no poll needed: the queue was empty
  await ended;
  sock.destroy();
  await l.close();
  await expectQuiescent(posixStack());
});
