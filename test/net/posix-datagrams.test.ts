// Conformance suite (UDP) on the posix stack, then the posix channel's own bounds.
import { expect, test } from "bun:test";
import { InvalidArgumentError } from "../../src/core/errors.ts";
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
