// Posix stack, the sending side when the peer stops reading and then resets while a large writev
// (copied chunks, a NativeBuffer sent in place, a forwarded received view) is partly sent: the
// writer and every flush and drain waiter get the kernel's typed error, later calls get the
// same, nothing is sent after it, every buffer goes back once, and another connection is
// unaffected. (Reviewed against the fault paths of output.ts and posix/connection.ts; this held
// before that review and pins it.)
import { expect, test } from "bun:test";
import { allocateAlignedBuffer } from "../../src/core/buffers.ts";
import { SystemError } from "../../src/core/errors.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import { sendChunks } from "../../src/net/output.ts";
import { expectQuiescent, readBytes, rejection, until } from "./conformance/harness.ts";

const stack = posixStack();

async function pair(writeHighWater: number) {
  const l = stack.listen("127.0.0.1:0", { writeHighWater });
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress, { maxReadBuffered: 16 * 1024 });
  const srv = await accepted;
  return { l, c, srv };
}

/** True while `p` has not settled (checked after a few loop turns). */
async function pending(p: Promise<unknown>): Promise<boolean> {
  let settled = false;
  p.then(
    () => (settled = true),
    () => (settled = true),
  );
  await Bun.sleep(50);
  return !settled;
}

test("the peer stops reading, then resets while a large writev is partly sent: writer, flush and drain waiters and later calls fail with its typed error, every buffer is released once", async () => {
  const { l, c, srv } = await pair(64 * 1024);
  const other = await pair(64 * 1024);
  // A received view of 1 KiB or more is forwarded in place (it pins a receive buffer).
  await other.c.output.write(new Uint8Array(4096).fill(0x72));
  const received = await other.srv.input.read();
  expect(received!.length).toBeGreaterThanOrEqual(1024);
  const nb = allocateAlignedBuffer(4 << 20);
  nb.bytes.fill(0x6e);
  const written = srv.output.writev([new Uint8Array(3000).fill(0x61), received!, nb, "tail", new Uint8Array(30_000).fill(0x62)]);
  nb.release(); // the output's pin keeps it until the kernel is done
  const flushed = srv.output.flush();
  expect(await pending(written)).toBe(true);
  expect(await pending(flushed)).toBe(true);
  // Partly sent: the kernel took some, the rest waits for a reader that never comes.
  await until(() => stack.stats().sendBytes > 0 && srv.output.buffered < (4 << 20) + 37_000);
  expect(srv.output.buffered).toBeGreaterThan(0);
  c.reset();
  const err = await rejection(written);
  expect(err).toBeInstanceOf(SystemError);
  expect(["ECONNRESET", "EPIPE"]).toContain((err as SystemError).code);
  expect(["send", "recv"]).toContain((err as SystemError).op);
  expect(await rejection(flushed)).toBe(err);
  for (const p of [srv.output.write("later"), srv.output.writev([new Uint8Array(10)]), srv.output.flush(), srv.output.close()]) {
    expect(await rejection(p)).toBe(err);
  }
  expect(srv.closed).toBe(true);
  await srv.close();
  expect(srv.output.buffered).toBe(0);
  expect(nb.pins).toBe(0);
  // Only the other connection's still-open side may hold send memory now: none, it sent nothing.
  expect(sendChunks.blocksInUse).toBe(0);
  // The other connection is unaffected.
  await other.srv.output.write("still here");
  expect(new TextDecoder().decode(await readBytes(other.c, 10))).toBe("still here");
  await c.close();
  for (const x of [other.srv, other.c]) await x.close();
  await other.l.close();
  await l.close();
  await expectQuiescent(stack);
});
