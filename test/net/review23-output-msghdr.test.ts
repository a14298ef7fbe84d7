// Posix stack, a send batch when no msghdr block can be mapped (mmap fails as the block pool
// grows). The throw left startSend, and with it the stack's once-per-turn send batch, midway:
// it surfaced as an uncaught error, and every connection after the failing one in that batch
// stayed marked for sending and never sent again (its later writes queued for good). Now the
// head entry goes alone in a plain send, and every connection's bytes arrive intact.
import { expect, test } from "bun:test";
import { SystemError } from "../../src/core/errors.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import { crc, expectQuiescent, readBytes } from "./conformance/harness.ts";

const stack = posixStack();

async function pair() {
  const l = stack.listen("127.0.0.1:0");
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress);
  const srv = await accepted;
  return { l, c, srv };
}

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * seed + 11) & 0xff;
  return b;
}

test("no msghdr block for a batched send (mmap fails): the head entry goes alone, every connection in the turn's send batch still sends, bytes arrive in order", async () => {
  const a = await pair();
  const b = await pair();
  // Each output holds several entries (a large copied write spans send chunks): a SENDMSG each.
  const first = pattern(40_000, 7);
  const second = pattern(30_000, 13);
  const real = stack.msgs.acquire;
  let refused = 0;
  stack.msgs.acquire = () => {
    refused++;
    throw new SystemError("mmap (msghdr blocks)", 12);
  };
  let got: [Uint8Array, Uint8Array];
  try {
    void a.srv.output.write(first);
    void b.srv.output.write(second);
    // Both in this turn's batch; the block pool stays out of memory while they send.
    const wa = a.srv.output.flush();
    const wb = b.srv.output.flush();
    got = await Promise.all([readBytes(a.c, first.length), readBytes(b.c, second.length)]);
    await wa;
    await wb;
  } finally {
    stack.msgs.acquire = real;
  }
  expect(refused).toBeGreaterThan(0);
  expect(crc(got[0])).toBe(crc(first));
  expect(crc(got[1])).toBe(crc(second));
  // With blocks again, both go on (batched sends included).
  const more = pattern(50_000, 5);
  void a.srv.output.write(more);
  void b.srv.output.write(more);
  const after = await Promise.all([readBytes(a.c, more.length), readBytes(b.c, more.length)]);
  expect(crc(after[0])).toBe(crc(more));
  expect(crc(after[1])).toBe(crc(more));
  for (const p of [a, b]) {
    await p.srv.close();
    expect(await p.c.input.read()).toBeNull();
    await p.c.close();
    await p.l.close();
  }
  await expectQuiescent(stack);
});
