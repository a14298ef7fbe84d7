// Posix stack, a write that runs out of send memory part-way (mmap fails when the send chunk
// pool grows). The write was rolled back and rejected, but the connection went on: a server
// that awaits only past the high-water mark (or a flush) sent the next answer glued to the cut
// one, and flush() resolved as if everything had gone. Once a write is lost nothing later may
// reach the peer: that write, every waiter and every later call fail with its error, and the
// connection is reset with every buffer released once. Real sockets throughout.
import { expect, test } from "bun:test";
import { allocateAlignedBuffer } from "../../src/core/buffers.ts";
import { SystemError } from "../../src/core/errors.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import { sendChunks } from "../../src/net/output.ts";
import type { Connection } from "../../src/net/types.ts";
import { expectQuiescent, readBytes, rejection } from "./conformance/harness.ts";

const stack = posixStack();
const encoder = new TextEncoder();

async function pair(writeHighWater?: number) {
  const l = stack.listen("127.0.0.1:0", writeHighWater === undefined ? {} : { writeHighWater });
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress);
  const srv = await accepted;
  return { l, c, srv };
}

/** Everything the peer reads until end of stream or an error (a reset). */
async function readAll(c: Connection): Promise<{ bytes: Uint8Array; error: unknown }> {
  const parts: Uint8Array[] = [];
  let error: unknown;
  for (;;) {
    let v: Uint8Array | null;
    try {
      v = await c.input.read();
    } catch (e) {
      error = e;
      break;
    }
    if (v === null) break;
    parts.push(v.slice());
  }
  return { bytes: new Uint8Array(Buffer.concat(parts)), error };
}

/** Runs `fn` with every send chunk allocation failing as mmap does (ENOMEM). */
async function withoutSendMemory<T>(fn: () => Promise<T>): Promise<T> {
  const real = sendChunks.acquire;
  sendChunks.acquire = () => {
    throw new SystemError("mmap (send buffers)", 12);
  };
  try {
    return await fn();
  } finally {
    sendChunks.acquire = real;
  }
}

function expectEnomem(e: unknown): void {
  expect(e).toBeInstanceOf(SystemError);
  expect((e as SystemError).code).toBe("ENOMEM");
  expect((e as SystemError).op).toBe("mmap (send buffers)");
}

test("a write that runs out of send memory part-way: it, the waiting flush and drain, later writes, flush and output.close() all fail with its ENOMEM, the peer never reads a byte written after it, every buffer is released, another connection is unaffected", async () => {
  const { l, c, srv } = await pair(1024);
  const other = await pair();
  // An answer in three writes (memcached's header, value in place, trailer), then the next one.
  const header = encoder.encode("VALUE k 0 8192\r\n");
  const value = allocateAlignedBuffer(8192);
  value.bytes.fill(0x76);
  void srv.output.write(header);
  const drainWait = srv.output.write(value); // past writeHighWater: waits for a drain
  const flushWait = srv.output.flush();
  value.release(); // the output's pin keeps it until the kernel is done
  const lost = await withoutSendMemory(() => rejection(srv.output.write(new Uint8Array(40_000).fill(0x62))));
  expectEnomem(lost);
  // The next answer, written without awaiting (as a pipelining server does), then a flush.
  const next = srv.output.write("\r\nEND\r\nVALUE j 0 1\r\nx\r\nEND\r\n");
  for (const p of [drainWait, flushWait, next, srv.output.flush(), srv.output.writev(["y"]), srv.output.close()]) {
    expect(await rejection(p)).toBe(lost);
  }
  expect(srv.closed).toBe(true);
  expect(await rejection(srv.input.read())).toBe(lost);
  await srv.close();
  // The peer reads at most a part of what came before the lost write, never what followed it.
  const got = await readAll(c);
  const before = new Uint8Array([...header, ...new Uint8Array(8192).fill(0x76)]);
  expect(got.bytes.length).toBeLessThanOrEqual(before.length);
  expect(got.bytes).toEqual(before.subarray(0, got.bytes.length));
  expect(value.pins).toBe(0);
  // The other connection of the shard still works both ways.
  await other.srv.output.write("still here");
  expect(new TextDecoder().decode(await readBytes(other.c, 10))).toBe("still here");
  await other.c.output.write("and back");
  expect(new TextDecoder().decode(await readBytes(other.srv, 8))).toBe("and back");
  await c.close();
  for (const p of [other.srv, other.c]) await p.close();
  await other.l.close();
  await l.close();
  await expectQuiescent(stack);
});

test("writev that runs out of send memory part-way with a NativeBuffer among its pieces: rejected with ENOMEM, the connection reset, the buffer unpinned once", async () => {
  const { l, c, srv } = await pair();
  const nb = allocateAlignedBuffer(4096);
  nb.bytes.fill(0x6e);
  const lost = await withoutSendMemory(() => rejection(srv.output.writev([nb, new Uint8Array(40_000).fill(0x62), "tail"])));
  expectEnomem(lost);
  expect(nb.pins).toBe(0);
  expect(srv.output.buffered).toBe(0);
  expect(await rejection(srv.output.write("later"))).toBe(lost);
  expect(srv.closed).toBe(true);
  nb.release();
  await srv.close();
  const got = await readAll(c);
  expect(got.bytes.length).toBe(0);
  await c.close();
  await l.close();
  await expectQuiescent(stack);
});

test("push mode (receiveRanges), an answer in three writes whose middle one runs out of send memory: the client reads the answers before it and then a reset, never the trailer or a later answer; receiveRanges rejects with the ENOMEM", async () => {
  const { l, c, srv } = await pair();
  const value = new Uint8Array(40_000).fill(0x76); // copied: spans send chunks
  const answer = (n: number) => [encoder.encode(`VALUE a 0 ${value.length} ${n}\r\n`), value, encoder.encode("\r\nEND\r\n")];
  let requests = 0;
  let lost: unknown;
  const served = srv.input.receiveRanges((buf, start, end) => {
    for (let i = start; i < end; i++) {
      if (buf[i] !== 0x0a) continue;
      const n = ++requests;
      const [head, body, trailer] = answer(n);
      // A server that awaits only past its high-water mark: these promises go unawaited.
      void srv.output.write(head!);
      if (n === 2) {
        const real = sendChunks.acquire;
        sendChunks.acquire = () => {
          throw new SystemError("mmap (send buffers)", 12);
        };
        srv.output.write(body!).catch((e: unknown) => (lost = e));
        sendChunks.acquire = real;
      } else {
        void srv.output.write(body!);
      }
      void srv.output.write(trailer!);
    }
    return undefined;
  });
  await c.output.write("get a\r\n");
  const first = await readBytes(c, answer(1).reduce((k, p) => k + p.length, 0));
  expect(first).toEqual(new Uint8Array(Buffer.concat(answer(1))));
  await c.output.write("get a\r\nget a\r\n");
  expect(await rejection(served)).toBe(lost);
  expectEnomem(lost);
  const rest = await readAll(c);
  const head2 = encoder.encode(`VALUE a 0 ${value.length} 2\r\n`);
  expect(rest.bytes.length).toBeLessThanOrEqual(head2.length);
  expect(rest.bytes).toEqual(head2.subarray(0, rest.bytes.length));
  await srv.close();
  await c.close();
  await l.close();
  await expectQuiescent(stack);
});
