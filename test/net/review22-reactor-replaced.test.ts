// The shard's reactor destroyed and replaced (reactor() makes a new one) while the posix stack
// had started: its receive-buffer rings stayed registered on the dead ring (never freed), and a
// connection on the new reactor received from a buffer group that ring never had, so a read
// waited for good. Now destroy() lets the stack give its rings back and the next socket makes new
// ones, or refuses while a socket is open or a receive buffer held. Its own process: the test
// destroys the shard's reactor.
import { expect, test } from "bun:test";
import { configureNet } from "../../src/net/api.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import { reactor } from "../../src/core/reactor.ts";
import { InvalidArgumentError } from "../../src/core/errors.ts";
import { expectQuiescent, until } from "./conformance/harness.ts";

configureNet({ recvBufferSize: 4096, recvBufferCount: 8, recvBufferMax: 16, udpRecvBufferCount: 2, udpRecvBufferMax: 4 });
const stack = posixStack();

/** `p`, or a rejection naming `what` after `ms` (the old code's read never completed). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** A listener that echoes one message per connection, a client that sends `text` and reads it back. */
async function echoOnce(text: string): Promise<string> {
  const l = stack.listen("127.0.0.1:0");
  const served = (async () => {
    const s = await l.accept();
    const v = await s.input.read();
    if (v !== null) await s.output.write(v.slice());
    await s.close();
  })();
  const c = await stack.connect(l.localAddress, { timeoutMs: 10_000 });
  await c.output.write(new TextEncoder().encode(text));
  const got = await within(c.input.read(), 10_000, "read of the echo");
  const answer = got === null ? "<eof>" : new TextDecoder().decode(got);
  await c.close();
  await within(served, 10_000, "the server side");
  await l.close();
  return answer;
}

/** Waits until the reactor has nothing in flight (closes that linger end on their own). */
async function idle(): Promise<void> {
  await until(() => reactor().inFlight === 0, 10_000, "the reactor to have nothing in flight");
}

test("destroy() is refused while a connection is open with nothing in flight (its reactor would be gone), allowed once it closed", async () => {
  const l = stack.listen("127.0.0.1:0");
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress);
  const s = await accepted;
  await l.close();
  await s.close();
  // The peer closed: c's receive ended, nothing of it is in flight, but c is still open.
  expect(await within(c.input.read(), 10_000, "end of stream")).toBeNull();
  await idle();
  const r = reactor();
  let refused: unknown;
  try {
    r.destroy();
  } catch (e) {
    refused = e;
  }
  expect(refused).toBeInstanceOf(InvalidArgumentError);
  expect(String((refused as Error).message)).toContain("1 socket(s) open");
  expect(r.isClosed).toBe(false);
  await c.close();
  await expectQuiescent(stack);
  await idle();
  r.destroy();
  expect(r.isClosed).toBe(true);
  expect(reactor()).not.toBe(r);
}, 60_000);

test("after the reactor is destroyed and replaced, the stream ring is freed and connect, write and read work on the new one", async () => {
  expect(await echoOnce("before")).toBe("before");
  await expectQuiescent(stack);
  await idle();
  const oldRing = stack.rx;
  expect(stack.stats().recvBuffersTotal).toBeGreaterThan(0);
  const first = reactor();
  first.destroy();
  // Unregistered and unmapped with the reactor (it stayed registered on the dead ring).
  expect(oldRing.region.detached).toBe(true);
  expect(stack.stats().recvBuffersTotal).toBe(0);
  expect(await echoOnce("after")).toBe("after");
  expect(reactor()).not.toBe(first);
  expect(stack.rx).not.toBe(oldRing);
  await expectQuiescent(stack);
}, 60_000);

test("after the reactor is replaced, the datagram ring is made anew and UDP channels receive", async () => {
  const exchange = async (text: string): Promise<string> => {
    const a = stack.bindUdp("127.0.0.1:0");
    const b = stack.bindUdp("127.0.0.1:0");
    await b.send(new TextEncoder().encode(text), a.localAddress);
    const d = await within(a.receive(), 10_000, "datagram");
    const got = d === null ? "<closed>" : new TextDecoder().decode(d.data);
    await a.close();
    await b.close();
    return got;
  };
  expect(await exchange("one")).toBe("one");
  await expectQuiescent(stack);
  await idle();
  const oldRing = stack.udpRx!;
  reactor().destroy();
  expect(oldRing.region.detached).toBe(true);
  expect(stack.udpRx).toBeUndefined();
  expect(await exchange("two")).toBe("two");
  await expectQuiescent(stack);
}, 60_000);
