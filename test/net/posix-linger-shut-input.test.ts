/**
 * A lingering close after shutdownInput() (what Server.drain and the memcached example's stop do
 * to every connection): the peer still sending must not make the kernel reset the connection
 * and drop answers flush() reported written.
 */
import { expect, test } from "bun:test";
import net from "node:net";
import { listen } from "../../src/net/api.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import { expectQuiescent } from "./conformance/harness.ts";

const SIZE = 2 * 1024 * 1024;
const payload = new Uint8Array(SIZE);
for (let i = 0; i < SIZE; i++) payload[i] = (i * 2654435761) >>> 24;

for (const keepReceived of [true, false]) {
  test(`close() after shutdownInput({ keepReceived: ${keepReceived} }) while the peer still sends: the peer gets every byte`, async () => {
    const l = listen("127.0.0.1:0", { closeTimeoutMs: 10_000 });
    const port = l.localAddress.family === "ipv4" ? l.localAddress.port : 0;
    const accepted = l.accept();
    const sock = net.connect(port, "127.0.0.1");
    await new Promise<void>((r) => sock.once("connect", () => r()));
    sock.pause();
    sock.write(new Uint8Array(10_000).fill(0x71));
    const chunks: Buffer[] = [];
    const ended = new Promise<string>((resolve) => {
      sock.on("data", (d: Buffer) => chunks.push(d));
      sock.on("end", () => resolve("fin"));
      sock.on("error", (e: Error) => resolve(`error ${(e as { code?: string }).code}`));
    });
    const c = await accepted;
    c.shutdownInput({ keepReceived });
    await c.output.write(payload);
    await c.output.flush();
    // The client goes on sending (a pipeline the stop cut short): its bytes arrive after the
    // input was shut and are unread at the close. (Bytes a peer sends after it has taken every
    // answer and the socket closed still meet the kernel's reset; the close cannot wait for
    // them without waiting for the peer's own close.)
    sock.write(new Uint8Array(50_000).fill(0x72));
    await Bun.sleep(100);
    const closing = c.close();
    await Bun.sleep(100);
    sock.resume();
    const how = await ended;
    const got = Buffer.concat(chunks);
    expect({ how, length: got.length }).toEqual({ how: "fin", length: SIZE });
    expect(Buffer.compare(got, Buffer.from(payload))).toBe(0);
    await closing;
    sock.destroy();
    await l.close();
    await expectQuiescent(posixStack());
  }, 30_000);
}

/** A client that sends a little, then neither reads nor sends. */
async function stalledPeer(port: number) {
  const sock = net.connect(port, "127.0.0.1");
  await new Promise<void>((r) => sock.once("connect", () => r()));
  sock.pause();
  sock.write(new Uint8Array(1000).fill(0x71));
  sock.on("error", () => {});
  return sock;
}

const HUNG = 8000;
for (const how of ["both directions shut (shutdownInput, then output.close())", "a failure from the kernel (abort without reset)"]) {
  test(`a lingering teardown close() did not start ends within closeTimeoutMs: ${how}`, async () => {
    const l = listen("127.0.0.1:0", { closeTimeoutMs: 200 });
    const port = l.localAddress.family === "ipv4" ? l.localAddress.port : 0;
    const accepted = l.accept();
    const sock = await stalledPeer(port);
    const c = await accepted;
    await c.output.write(payload);
    await c.output.flush();
    if (how.startsWith("both")) {
      c.shutdownInput();
      await c.output.close();
      // The reader sees the end: both directions are done, the connection tears down by itself.
      expect(await c.input.read()).toBeNull();
    } else {
      // What a send or receive failing with an error other than a reset does (ENOMEM...).
      (c as unknown as { abort(e: Error, rst: boolean): void }).abort(new Error("simulated send failure"), false);
    }
    // Each check counted a whole closeTimeoutMs from itself: it lingered while the peer did not read.
    const outcome = await Promise.race([c.close().then(() => "closed"), Bun.sleep(HUNG).then(() => "still lingering")]);
    if (outcome !== "closed") c.reset();
    expect(outcome).toBe("closed");
    sock.destroy();
    await l.close();
    await expectQuiescent(posixStack());
  }, 30_000);
}
