// Posix stack with a tiny receive-buffer pool: receives stop on ENOBUFS and are re-armed when
// readers release buffers; every byte still arrives intact and the pool never exceeds its cap.
import { expect, test } from "bun:test";
import { configureNet } from "../../src/net/api.ts";
import { InvalidArgumentError } from "../../src/core/errors.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import type { Connection } from "../../src/net/types.ts";
import { crc, echo, expectQuiescent, fillRandom, serveWith } from "./conformance/harness.ts";

configureNet({ recvBufferSize: 4096, recvBufferCount: 8, recvBufferMax: 16 });
const stack = posixStack();

test("a receive pool over 4 GiB (one mapping, one view) is refused before anything is mapped or registered", () => {
  // 1 MiB buffers with the default recvBufferMax (8192) would be 8 GiB: the view failed after
  // the ring was registered, leaking it and leaving the group id taken (EEXIST) for good.
  expect(() => configureNet({ recvBufferSize: 1 << 20, recvBufferMax: 8192 })).toThrow(InvalidArgumentError);
  expect(() => configureNet({ recvBufferSize: 1 << 20, recvBufferMax: 8192 })).toThrow(/at most 4 GiB/);
});

test("64 connections share 16 receive buffers: ENOBUFS stops and re-arms receives, data intact", async () => {
  const l = stack.listen("127.0.0.1:0");
  const served = serveWith(l, echo);
  const size = 200_000;
  let maxTotal = 0;
  const run = async (i: number) => {
    const c: Connection = await stack.connect(l.localAddress);
    const data = new Uint8Array(size);
    fillRandom(data, i + 1);
    const writing = c.output.write(data);
    let got = 0;
    let sum = 0;
    while (got < size) {
      const v = (await c.input.read())!;
      got += v.length;
      sum = crc(v, sum);
      maxTotal = Math.max(maxTotal, stack.stats().recvBuffersTotal);
    }
    await writing;
    expect(sum).toBe(crc(data));
    await c.close();
  };
  await Promise.all(Array.from({ length: 64 }, (_, i) => run(i)));
  const st = stack.stats();
  expect(st.recvStarved).toBeGreaterThan(0);
  expect(maxTotal).toBeLessThanOrEqual(16);
  expect(st.recvBuffersTotal).toBe(16);
  await l.close();
  await served;
  await expectQuiescent(stack);
}, 60_000);

test("receive buffer settings are fixed once sockets opened", () => {
  expect(() => configureNet({ recvBufferCount: 4 })).toThrow();
  expect(() => configureNet({ poisonBuffers: false })).not.toThrow();
});
