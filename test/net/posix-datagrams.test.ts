// Conformance suite (UDP) on the posix stack, then the posix channel's own bounds.
import { expect, test } from "bun:test";
import { allocateAlignedBuffer } from "../../src/core/buffers.ts";
import { InvalidArgumentError } from "../../src/core/errors.ts";
import type { PosixStack } from "../../src/net/posix/stack.ts";
import type { PosixUdpChannel } from "../../src/net/posix/udp.ts";
import { posixUnderTest } from "./conformance/posix.ts";
import { datagramConformance } from "./conformance/datagrams.ts";
import { expectQuiescent, until } from "./conformance/harness.ts";

const under = posixUnderTest();
const stack = under.stack;
datagramConformance(under);

test("an unread channel holds at most maxQueued receive buffers; datagrams past it are dropped and counted", async () => {
  // The full queue cancels its multishot receive, but completions kept arriving until the
  // cancel landed and were all queued: a 2000-datagram burst to a channel with maxQueued 4
  // held the shard's whole pool (256 buffers), and other sockets could not receive.
  const a = stack.bindUdp("127.0.0.1:0", { maxQueued: 4 }) as PosixUdpChannel;
  const b = stack.bindUdp("127.0.0.1:0");
  await Promise.all(Array.from({ length: 2000 }, (_, i) => b.send(`${i}`, a.localAddress)));
  await until(() => stack.stats().recvBuffersHeld >= 4, 5000, "the queue to fill");
  await Bun.sleep(50); // let the completions already under way arrive (they were all queued)
  expect(stack.stats().recvBuffersHeld).toBeLessThanOrEqual(4);
  expect(a.dropped).toBeGreaterThan(0);
  // Reading frees the queue; receiving resumes with what the kernel kept meanwhile.
  const seen = new Set<string>();
  for (let i = 0; i < 8; i++) seen.add(new TextDecoder().decode((await a.receive())!.data));
  expect(seen.size).toBe(8);
  expect(stack.stats().recvBuffersHeld).toBeLessThanOrEqual(5); // the queue and the reader's lease
  await a.close();
  await b.close();
  await expectQuiescent(stack);
});

test("maxQueued must be a positive safe integer", () => {
  for (const bad of [0, -1, 1.5, Infinity, Number.NaN, 2 ** 53, "4"]) {
    let err: unknown;
    try {
      stack.bindUdp("127.0.0.1:0", { maxQueued: bad as number }).close();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as InvalidArgumentError).code).toBe("ERR_INVALID_ARG");
  }
});

test("a send to port 0 is a bad argument, refused before the kernel (it answered EINVAL from sendmsg)", async () => {
  const a = stack.bindUdp("127.0.0.1:0");
  for (const to of ["127.0.0.1:0", { host: "127.0.0.1", port: 0 }]) {
    const err = await a.send("x", to).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as InvalidArgumentError).code).toBe("ERR_INVALID_ARG");
  }
  await a.send("x", a.localAddress); // its own address (a real port) still works
  expect(new TextDecoder().decode((await a.receive())!.data)).toBe("x");
  await a.close();
});

test("send memory follows the bytes in flight: 5000 small datagrams share a few blocks and no 16 KiB chunk each", async () => {
  // Each send took a whole 16 KiB send chunk and a message block, all at once and never unmapped:
  // 50,000 ten-byte datagrams mapped 782 MiB. Sends past the per-channel bound now wait.
  const a = stack.bindUdp("127.0.0.1:0");
  const b = stack.bindUdp("127.0.0.1:0", { maxQueued: 1 });
  const chunksBefore = stack.stats().sendMemoryMapped;
  const msgs = (stack as PosixStack).msgs;
  const blocksBefore = msgs.blocksInUse;
  const sends = Array.from({ length: 5000 }, (_, i) => a.send(`datagram ${i}`, b.localAddress));
  expect(msgs.blocksInUse - blocksBefore).toBeLessThanOrEqual(64);
  expect(stack.stats().sendMemoryMapped - chunksBefore).toBeLessThanOrEqual(1 << 20);
  // close() waits for the waiting sends too; every one was sent.
  const closed = a.close();
  expect(await Promise.all(sends.map((p) => p.then(() => "sent", (e: { code?: string }) => e.code)))).toEqual(sends.map(() => "sent"));
  await closed;
  expect(stack.stats().sendMemoryMapped - chunksBefore).toBeLessThanOrEqual(1 << 20);
  await b.close();
  await expectQuiescent(stack);
});

test("datagrams of many sizes, packed into shared send chunks (spanning them), inline or NativeBuffers, arrive intact and in order", async () => {
  const a = stack.bindUdp("127.0.0.1:0");
  const b = stack.bindUdp("127.0.0.1:0", { maxQueued: 200 });
  const sizes = Array.from({ length: 200 }, (_, i) => 4 + ((i * 7919) % 16000));
  const datagram = (i: number) => {
    const d = new Uint8Array(sizes[i]!).fill(i & 255);
    new DataView(d.buffer).setUint32(0, i, true);
    return d;
  };
  const reused = new Uint8Array(16384);
  const sends = sizes.map((size, i) => {
    if (i % 10 === 0) {
      // Released at once: the waiting send keeps it pinned until sent.
      const nb = allocateAlignedBuffer(size);
      nb.bytes.set(datagram(i));
      const p = a.send(nb, b.localAddress);
      nb.release();
      return p;
    }
    // The caller's array is overwritten after each call: send() copied it.
    reused.set(datagram(i));
    return a.send(reused.subarray(0, size), b.localAddress);
  });
  await Promise.all(sends);
  let received = 0;
  let last = -1;
  for (;;) {
    const d = await Promise.race([b.receive(), Bun.sleep(200).then(() => null)]);
    if (d === null) break;
    const i = new DataView(d.data.buffer, d.data.byteOffset).getUint32(0, true);
    expect(i).toBeGreaterThan(last);
    expect(d.truncated).toBe(false);
    expect(d.data).toEqual(datagram(i));
    last = i;
    received++;
  }
  expect(received).toBeGreaterThan(0); // loopback may drop some of the burst
  await a.close();
  await b.close();
  await expectQuiescent(stack);
});
