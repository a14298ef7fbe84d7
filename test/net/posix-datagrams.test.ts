// Conformance suite (UDP) on the posix stack, then the posix channel's own bounds.
import { afterAll, expect, test } from "bun:test";
import { allocateAlignedBuffer } from "../../src/core/buffers.ts";
import { InvalidArgumentError } from "../../src/core/errors.ts";
import { formatAddress } from "../../src/net/address.ts";
import type { PosixStack } from "../../src/net/posix/stack.ts";
import type { PosixUdpChannel } from "../../src/net/posix/udp.ts";
import { posixUnderTest } from "./conformance/posix.ts";
import { datagramConformance } from "./conformance/datagrams.ts";
import { crc, expectQuiescent, until, seededDatagram, expectDatagramsReleased } from "./conformance/harness.ts";

const under = posixUnderTest();
const stack = under.stack;
datagramConformance(under);

// At the end: every UDP channel closed, every datagram buffer released.
afterAll(() => expectDatagramsReleased(stack));

test("the largest datagrams arrive whole: 65507 bytes over IPv4, 65527 over IPv6, not truncated", async () => {
  // UDP channels received into the streams' 16 KiB buffers: anything over ~16 KiB arrived cut
  // (truncated true, the rest lost), though UDP carries up to 65507 (IPv4) / 65527 (IPv6) bytes.
  for (const [host, size] of [["127.0.0.1:0", 65507], ["[::1]:0", 65527]] as const) {
    const a = stack.bindUdp(host);
    const b = stack.bindUdp(host);
    for (let i = 0; i < 3; i++) {
      const sent = seededDatagram(size - i, i);
      await a.send(sent, b.localAddress);
      const d = (await b.receive())!;
      expect(d.truncated).toBe(false);
      expect(d.data.length).toBe(size - i);
      expect(crc(d.data)).toBe(crc(sent));
      expect(formatAddress(d.from)).toBe(formatAddress(a.localAddress));
    }
    // One byte more is refused by the sender, as the kernel would (EMSGSIZE).
    expect(await a.send(new Uint8Array(size + 1), b.localAddress).then(() => "sent", (e: { code?: string }) => e.code)).toBe("EMSGSIZE");
    await a.close();
    await b.close();
  }
  await expectQuiescent(stack);
});

test("datagrams use a ring of their own: stream receive buffers are not taken by UDP, and UDP ones hold the largest datagram", async () => {
  // A TCP connection with a lease of its own, so that the stream ring is in use too.
  const l = stack.listen("127.0.0.1:0");
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress);
  const s = (await accepted)!;
  await c.output.write("hello");
  expect(new TextDecoder().decode((await s.input.read())!)).toBe("hello");
  const streamHeld = stack.stats().recvBuffersHeld;
  const streamFree = stack.stats().recvBuffersFree;
  const posix = stack as PosixStack;
  const a = stack.bindUdp("127.0.0.1:0", { maxQueued: 16 });
  const b = stack.bindUdp("127.0.0.1:0");
  expect(posix.udpRx).toBeDefined();
  expect(posix.udpRx).not.toBe(posix.rx);
  expect(posix.udpRx!.bgid).not.toBe(posix.rx.bgid);
  expect(posix.udpRx!.bufferSize).toBeGreaterThanOrEqual(16 + 128 + 65535);
  for (let i = 0; i < 16; i++) await b.send(seededDatagram(30_000, i), a.localAddress);
  await until(() => stack.stats().udpRecvBuffersHeld >= 16, 5000, "16 datagrams queued");
  // 16 unread datagrams held in the datagram ring; the stream ring has what it had.
  expect(stack.stats().udpRecvBuffersHeld).toBe(16);
  expect(stack.stats().recvBuffersHeld).toBe(streamHeld);
  expect(stack.stats().recvBuffersFree).toBe(streamFree);
  for (let i = 0; i < 16; i++) {
    const d = (await a.receive())!;
    expect(d.truncated).toBe(false);
    expect(crc(d.data)).toBe(crc(seededDatagram(30_000, new DataView(d.data.buffer, d.data.byteOffset).getUint32(0, true))));
  }
  await a.close();
  await b.close();
  await c.close();
  await s.close();
  await l.close();
  await expectQuiescent(stack);
  expect(stack.stats().udpRecvBuffersHeld).toBe(0);
});

test("many 60 KB datagrams to a channel that does not read: it holds at most maxQueued datagram buffers, and reading resumes", async () => {
  const a = stack.bindUdp("127.0.0.1:0", { maxQueued: 4 }) as PosixUdpChannel;
  const b = stack.bindUdp("127.0.0.1:0");
  const sending = Array.from({ length: 400 }, (_, i) => b.send(seededDatagram(60_000, i), a.localAddress));
  await until(() => stack.stats().udpRecvBuffersHeld >= 4, 5000, "the queue to fill");
  let maxHeld = 0;
  for (let k = 0; k < 25; k++) {
    maxHeld = Math.max(maxHeld, stack.stats().udpRecvBuffersHeld);
    await Bun.sleep(2);
  }
  await Promise.all(sending);
  await Bun.sleep(50); // let the completions already under way arrive
  maxHeld = Math.max(maxHeld, stack.stats().udpRecvBuffersHeld);
  expect(maxHeld).toBeLessThanOrEqual(4);
  // Reading frees the queue; each datagram is whole.
  for (let k = 0; k < 6; k++) {
    const d = (await Promise.race([a.receive(), Bun.sleep(2000).then(() => null)]))!;
    expect(d).not.toBeNull();
    expect(d.truncated).toBe(false);
    expect(d.data.length).toBe(60_000);
    const i = new DataView(d.data.buffer, d.data.byteOffset).getUint32(0, true);
    expect(crc(d.data)).toBe(crc(seededDatagram(60_000, i)));
    if (k === 3) {
      // Datagrams sent now still arrive once the queue has room.
      await b.send(seededDatagram(60_000, 1000), a.localAddress);
      await b.send(seededDatagram(60_000, 1001), a.localAddress);
    }
  }
  expect(stack.stats().udpRecvBuffersHeld).toBeLessThanOrEqual(5); // the queue and the reader's lease
  await a.close();
  await b.close();
  await expectQuiescent(stack);
});

test("an unread channel holds at most maxQueued datagram receive buffers; datagrams past it are dropped and counted", async () => {
  // The full queue cancels its multishot receive, but completions kept arriving until the
  // cancel landed and were all queued: a 2000-datagram burst to a channel with maxQueued 4
  // held the shard's whole pool (256 buffers), and other sockets could not receive.
  const a = stack.bindUdp("127.0.0.1:0", { maxQueued: 4 }) as PosixUdpChannel;
  const b = stack.bindUdp("127.0.0.1:0");
  await Promise.all(Array.from({ length: 2000 }, (_, i) => b.send(`${i}`, a.localAddress)));
  await until(() => stack.stats().udpRecvBuffersHeld >= 4, 5000, "the queue to fill");
  await Bun.sleep(50); // let the completions already under way arrive (they were all queued)
  expect(stack.stats().udpRecvBuffersHeld).toBeLessThanOrEqual(4);
  expect(a.dropped).toBeGreaterThan(0);
  // Reading frees the queue; receiving resumes with what the kernel kept meanwhile.
  const seen = new Set<string>();
  for (let i = 0; i < 8; i++) seen.add(new TextDecoder().decode((await a.receive())!.data));
  expect(seen.size).toBe(8);
  expect(stack.stats().udpRecvBuffersHeld).toBeLessThanOrEqual(5); // the queue and the reader's lease
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
