// Posix stack with a tiny datagram ring (2 buffers to start, 8 at most): it grows on demand up
// to its cap, a channel whose receive finds it empty (ENOBUFS) waits and is re-armed once
// readers release buffers, each channel's maxQueued bound holds, datagrams arrive whole, and
// recycled buffers are poisoned when poisoning is on. Its own process: the ring is sized once.
import { afterAll, expect, test } from "bun:test";
import { configureNet } from "../../src/net/api.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import { RX_POISON_BYTE } from "../../src/net/posix/rx-ring.ts";
import { crc, expectQuiescent, until, seededDatagram, expectDatagramsReleased } from "./conformance/harness.ts";

configureNet({ udpRecvBufferCount: 2, udpRecvBufferMax: 8 });
const stack = posixStack();

afterAll(() => expectDatagramsReleased(stack));

const idOf = (d: Uint8Array) => new DataView(d.buffer, d.byteOffset).getUint32(0, true);

test("the ring grows from its first buffers as unread datagrams hold them, up to its cap and no further", async () => {
  const a = stack.bindUdp("127.0.0.1:0", { maxQueued: 6 });
  const b = stack.bindUdp("127.0.0.1:0");
  expect(stack.stats().udpRecvBuffersTotal).toBe(2);
  for (let i = 0; i < 6; i++) await b.send(seededDatagram(40_000, i), a.localAddress);
  await until(() => stack.stats().udpRecvBuffersHeld === 6, 5000, "6 datagrams queued");
  const total = stack.stats().udpRecvBuffersTotal;
  expect(total).toBeGreaterThanOrEqual(6);
  expect(total).toBeLessThanOrEqual(8);
  const seen: number[] = [];
  for (let i = 0; i < 6; i++) {
    const d = (await a.receive())!;
    expect(d.truncated).toBe(false);
    expect(crc(d.data)).toBe(crc(seededDatagram(40_000, idOf(d.data))));
    seen.push(idOf(d.data));
  }
  expect(seen).toEqual([0, 1, 2, 3, 4, 5]);
  await a.close();
  await b.close();
  await expectQuiescent(stack);
  expect(stack.stats().udpRecvBuffersHeld).toBe(0);
});

test("at the cap, a channel whose receive ran dry (ENOBUFS) gets its datagrams once another channel's reader releases buffers", async () => {
  const a = stack.bindUdp("127.0.0.1:0", { maxQueued: 8 });
  const b = stack.bindUdp("127.0.0.1:0");
  const sender = stack.bindUdp("127.0.0.1:0");
  // a's unread queue takes every buffer of the ring (its cap).
  for (let i = 0; i < 8; i++) await sender.send(seededDatagram(1000, i), a.localAddress);
  await until(() => stack.stats().udpRecvBuffersHeld === 8, 5000, "a's queue to take the ring");
  expect(stack.stats().udpRecvBuffersTotal).toBe(8);
  const starvedBefore = stack.stats().recvStarved;
  await sender.send(seededDatagram(50_000, 100), b.localAddress);
  await sender.send(seededDatagram(50_000, 101), b.localAddress);
  const got = b.receive();
  await until(() => stack.stats().recvStarved > starvedBefore, 5000, "b's receive to run dry");
  await Bun.sleep(20);
  expect(await Promise.race([got.then(() => "received"), Bun.sleep(50).then(() => "waiting")])).toBe("waiting");
  // The stream ring is untouched by all of this.
  expect(stack.stats().recvBuffersHeld).toBe(0);
  // Reading a releases buffers: b is re-armed and gets both, whole.
  for (let i = 0; i < 8; i++) expect(idOf((await a.receive())!.data)).toBe(i);
  const first = (await got)!;
  expect(first.truncated).toBe(false);
  expect(crc(first.data)).toBe(crc(seededDatagram(50_000, 100)));
  const second = (await b.receive())!;
  expect(crc(second.data)).toBe(crc(seededDatagram(50_000, 101)));
  expect(stack.stats().udpRecvBuffersTotal).toBe(8);
  await a.close();
  await b.close();
  await sender.close();
  await expectQuiescent(stack);
  expect(stack.stats().udpRecvBuffersHeld).toBe(0);
});

test("with poisoning on, a datagram view kept past the next receive reads as poison (its buffer was recycled)", async () => {
  configureNet({ poisonBuffers: true });
  try {
    const a = stack.bindUdp("127.0.0.1:0");
    const b = stack.bindUdp("127.0.0.1:0");
    await b.send(new Uint8Array(30_000).fill(7), a.localAddress);
    await b.send(new Uint8Array(10).fill(8), a.localAddress);
    const kept = (await a.receive())!.data;
    expect(kept.length).toBe(30_000);
    expect(kept.every((v) => v === 7)).toBe(true);
    const next = (await a.receive())!;
    expect(next.data).toEqual(new Uint8Array(10).fill(8));
    expect(kept.every((v) => v === RX_POISON_BYTE)).toBe(true);
    await a.close();
    await b.close();
    await expectQuiescent(stack);
  } finally {
    configureNet({ poisonBuffers: false });
  }
});
