// UDP channels of the posix stack when a receive fails with something else than ENOBUFS (a
// receive that fails every time is made by putting /dev/null in the channel's descriptor
// slot with dup2 before its receive reaches the kernel: recvmsg is then ENOTSOCK at once, for
// good). Such an error is the next receive()'s, and only a receive() re-arms the receive: it
// was re-armed every loop turn (about 190,000 failed receives in 500 ms on an idle shard),
// each error dropped unless a receive() happened to be waiting.
import { afterAll, expect, test } from "bun:test";
import { dlopen, FFIType } from "bun:ffi";
import { closeSync, openSync, readdirSync } from "node:fs";
import { SystemError } from "../../src/core/errors.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import type { UdpChannel } from "../../src/net/types.ts";
import { expectDatagramsReleased, rejection, until } from "./conformance/harness.ts";

const stack = posixStack();
const libc = dlopen("libc.so.6", { dup2: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 } });
const ECANCELED = 125;
const ENOBUFS = 105;

afterAll(() => expectDatagramsReleased(stack));

/** Counts the channel's receive completions that failed (not a cancel, not ENOBUFS). */
function countFailures(ch: UdpChannel): { n: number } {
  const c = ch as unknown as { complete(res: number, flags: number): void };
  const complete = c.complete.bind(c);
  const count = { n: 0 };
  c.complete = (res: number, flags: number) => {
    if (res < 0 && res !== -ECANCELED && res !== -ENOBUFS) count.n++;
    complete(res, flags);
  };
  return count;
}

/** Puts /dev/null where the channel's socket was (the socket closes): its next receive fails. */
function breakSocket(ch: UdpChannel): number {
  const nul = openSync("/dev/null", "r");
  expect(libc.symbols.dup2(nul, (ch as unknown as { fd: number }).fd)).toBeGreaterThanOrEqual(0);
  return nul;
}

function expectNotSocket(e: unknown): void {
  expect(e).toBeInstanceOf(SystemError);
  expect((e as SystemError).code).toBe("ENOTSOCK");
  expect((e as SystemError).op).toBe("recvmsg");
}

const openFds = () => readdirSync("/proc/self/fd").length;

test("a receive that fails at once, every time, with no receive() waiting: not re-armed until a receive(), which rejects with the error", async () => {
  // Warm up the stack's own descriptors (ring, datagram pool) before counting.
  await stack.bindUdp("127.0.0.1:0").close();
  const fds = openFds();
  const ch = stack.bindUdp("127.0.0.1:0");
  const failures = countFailures(ch);
  // Same tick as the bind: the first receive is still queued, not yet in the kernel.
  const nul = breakSocket(ch);
  await until(() => failures.n >= 1, 10_000, "the first failed receive");
  // Many loop turns with nobody receiving: the old code failed once per turn.
  await Bun.sleep(300);
  expect(failures.n).toBe(1);
  // The error was kept for the next receive(), which re-arms once.
  expectNotSocket(await rejection(ch.receive()));
  await until(() => failures.n >= 2, 10_000, "the re-armed receive to fail");
  await Bun.sleep(200);
  expect(failures.n).toBe(2);
  // A receive() that waits gets the failure of the receive the previous call re-armed.
  expectNotSocket(await rejection(ch.receive()));
  const waiting = ch.receive();
  expectNotSocket(await rejection(waiting));
  await Bun.sleep(100);
  expect(failures.n).toBe(3);
  await ch.close();
  expect(await ch.receive()).toBeNull();
  closeSync(nul);
  await expectDatagramsReleased(stack);
  expect(openFds()).toBe(fds);
}, 60_000);

test("datagrams queued before a receive failed are received first, then the error, then receiving resumes on receive()", async () => {
  const ch = stack.bindUdp("127.0.0.1:0", { maxQueued: 2 });
  const peer = stack.bindUdp("127.0.0.1:0");
  const failures = countFailures(ch);
  await peer.send("one", ch.localAddress);
  await peer.send("two", ch.localAddress);
  // Two queued: the receive was cancelled (the queue is full); the next take re-arms it.
  await until(() => stack.stats().udpRecvBuffersHeld === 2, 10_000, "two datagrams queued");
  const nul = breakSocket(ch);
  const one = await ch.receive();
  expect(new TextDecoder().decode(one!.data)).toBe("one");
  await until(() => failures.n >= 1, 10_000, "the re-armed receive to fail");
  await Bun.sleep(200);
  expect(failures.n).toBe(1);
  const two = await ch.receive();
  expect(new TextDecoder().decode(two!.data)).toBe("two");
  expectNotSocket(await rejection(ch.receive()));
  await ch.close();
  await peer.close();
  closeSync(nul);
  await expectDatagramsReleased(stack);
}, 60_000);
