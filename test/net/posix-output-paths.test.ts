// Posix stack, the sending side under stress: a graceful close() that must flush to a slow
// reader while a read waits, a write that runs out of send memory part-way, and close(),
// reset() and shutdownOutput() racing a write that waits for room. Real sockets throughout.
import { expect, test } from "bun:test";
import { ClosedError, SystemError } from "../../src/core/errors.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import { sendChunks } from "../../src/net/output.ts";
import type { PosixConnection } from "../../src/net/posix/connection.ts";
import { SOL_SOCKET, setIntOption } from "../../src/net/posix/sys.ts";
import type { Connection, ListenOptions } from "../../src/net/types.ts";
import { crc, drain, expectQuiescent, readBytes, rejection, until } from "./conformance/harness.ts";

const SO_SNDBUF = 7;
const stack = posixStack();

/** A listener and a connected pair; the server's kernel send buffer is small (a writer blocks soon). */
async function pair(opts: ListenOptions) {
  const l = stack.listen("127.0.0.1:0", opts);
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress, { maxReadBuffered: 16 * 1024 });
  const srv = (await accepted) as PosixConnection;
  setIntOption("setsockopt(SO_SNDBUF)", srv.fd, SOL_SOCKET, SO_SNDBUF, 4096);
  return { l, c, srv };
}

/** Writes to `srv` until a write stays pending (the peer does not read); returns it, wrapped. */
async function blockWriter(srv: Connection): Promise<{ pending: Promise<void> }> {
  const chunk = new Uint8Array(64 * 1024).fill(3);
  for (let i = 0; i < 200; i++) {
    const p = srv.output.write(chunk);
    let settled = false;
    let failed: unknown;
    p.then(
      () => (settled = true),
      (e) => ((settled = true), (failed = e)),
    );
    await Bun.sleep(20);
    if (failed !== undefined) throw failed;
    if (!settled) {
      await Bun.sleep(200);
      if (!settled) return { pending: p };
    }
  }
  throw new Error("the writer never blocked");
}

test("a read waiting when close() starts does not cut the flush: readTimeoutMs shorter than the flush, every byte arrives, the read ends with null", async () => {
  // The read timeout reset a connection whose close() was still flushing to a slow reader:
  // the peer got ECONNRESET and lost what close() had to deliver within closeTimeoutMs.
  const { l, c, srv } = await pair({ readTimeoutMs: 100, closeTimeoutMs: 10_000 });
  const reading = srv.input.read().then(
    (v) => v,
    (e: unknown) => e,
  );
  const size = 2 * 1024 * 1024;
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = i * 7;
  void srv.output.write(data).catch(() => {});
  const closing = srv.close();
  await Bun.sleep(400); // well past readTimeoutMs: the peer has not read yet
  const got = await drain(c);
  await closing;
  expect(got).toEqual({ bytes: size, crc: crc(data) });
  expect(await reading).toBeNull();
  expect(l.connections).toBe(0);
  await c.close();
  await l.close();
  await expectQuiescent(stack);
});

test("a write that runs out of send memory part-way rejects (nothing thrown), queues none of its bytes, resets its connection (the stream lost a write), and the tail chunk is not handed out twice", async () => {
  // openChunk gave the tail's block back before acquiring the next one: a failed acquire (mmap)
  // threw out of write() with the first part of the bytes queued (glued onto the next write)
  // and left the tail naming a free block, which the next acquire handed out a second time.
  const l = stack.listen("127.0.0.1:0");
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress);
  const srv = await accepted;
  const a = new Uint8Array(100).fill(0x61);
  // Another connection's bytes share the tail chunk: they must survive the failed acquire.
  const o = await pair({});
  void o.srv.output.write(a);
  void srv.output.write(a); // the tail chunk now holds these bytes
  const realAcquire = sendChunks.acquire;
  let failures = 0;
  sendChunks.acquire = () => {
    failures++;
    throw new SystemError("mmap (send buffers)", 12);
  };
  let outcome: unknown;
  try {
    outcome = await rejection(srv.output.write(new Uint8Array(40_000).fill(0x62)));
  } catch (e) {
    outcome = e; // thrown synchronously (the old code), or resolved
  } finally {
    sendChunks.acquire = realAcquire;
  }
  expect(failures).toBe(1);
  expect(outcome).toBeInstanceOf(SystemError);
  expect((outcome as SystemError).code).toBe("ENOMEM");
  // The stream lost a write: the connection is reset, nothing later is queued or sent (a
  // pipelining server went on with the next answer glued to the cut one).
  expect(srv.closed).toBe(true);
  expect(srv.output.buffered).toBe(0);
  expect(await rejection(srv.output.writev([new Uint8Array(20_000).fill(0x62), "b"]))).toBe(outcome);
  // The tail chunk is intact: the other connection's bytes in it, and its later writes, arrive whole.
  const rest = new Uint8Array(50_000);
  for (let i = 0; i < rest.length; i++) rest[i] = (i * 13) & 0xff;
  await o.srv.output.write(rest);
  await o.srv.output.write("end");
  const back = await readBytes(o.c, 100 + rest.length + 3);
  expect(crc(back)).toBe(crc(new Uint8Array([...a, ...rest, ...new TextEncoder().encode("end")])));
  await srv.close();
  await expectSystemErrorOrEnd(c);
  await o.srv.close();
  expect(await o.c.input.read()).toBeNull();
  for (const x of [c, o.c]) await x.close();
  await o.l.close();
  await l.close();
  await expectQuiescent(stack);
});

test("close(), reset(), shutdownOutput() and a second close() racing a write that waits for room: every promise settles, the listener counts the connection out once", async () => {
  const { l, c, srv } = await pair({ writeHighWater: 1024 });
  const { pending } = await blockWriter(srv);
  const flushed = srv.output.flush();
  const shut = srv.shutdownOutput();
  const first = srv.close();
  srv.reset();
  const second = srv.close();
  srv.reset();
  // Rejections are typed: the write and flush fail with the reset, shutdownOutput with it too.
  for (const p of [pending, flushed, shut]) {
    const e = await rejection(p);
    expect(e).toBeInstanceOf(ClosedError);
  }
  await first;
  await second;
  expect(first).toBe(second);
  expect(l.connections).toBe(0);
  expect(await rejection(srv.output.write("x"))).toBeInstanceOf(ClosedError);
  await expectSystemErrorOrEnd(c);
  await c.close();
  await until(() => l.connections === 0);
  await l.close();
  await expectQuiescent(stack);
});

/** The peer of a reset connection reads what arrived, then ECONNRESET (or end of stream). */
async function expectSystemErrorOrEnd(c: Connection): Promise<void> {
  for (;;) {
    let v: Uint8Array | null;
    try {
      v = await c.input.read();
    } catch (e) {
      expect(e).toBeInstanceOf(SystemError);
      return;
    }
    if (v === null) return;
  }
}

test("output.close() and close() in the same tick with nothing queued: both resolve and the peer sees a clean end", async () => {
  const l = stack.listen("127.0.0.1:0");
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress);
  const srv = await accepted;
  await srv.output.write("last words");
  await srv.output.flush();
  const outputClosed = srv.output.close();
  const closed = srv.close();
  await outputClosed;
  await closed;
  expect(new TextDecoder().decode(await readBytes(c, 10))).toBe("last words");
  expect(await c.input.read()).toBeNull();
  await c.close();
  await l.close();
  await expectQuiescent(stack);
});
