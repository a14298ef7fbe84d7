// Posix stack with a tiny receive-buffer pool: receives stop on ENOBUFS and are re-armed when
// readers release buffers; every byte still arrives intact and the pool never exceeds its cap.
import { expect, test } from "bun:test";
import { configureNet } from "../../src/net/api.ts";
import { InvalidArgumentError } from "../../src/core/errors.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import { needBytes, type Connection } from "../../src/net/types.ts";
import { sleep } from "../../src/core/timer.ts";
import { crc, echo, expectQuiescent, fillRandom, serveWith, until } from "./conformance/harness.ts";

const text = (v: Uint8Array) => new TextDecoder().decode(v);

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

test("a peer sending a byte per segment to a reader waiting for a whole line holds one buffer, not one per byte", async () => {
  // Each segment completes a receive of its own; queued, each held a 4 KiB buffer for one byte,
  // and a reader waiting for more bytes (needBytes) never paused the receive: 16 bytes took the
  // shard's whole pool, and every other connection waited on ENOBUFS for good.
  const l = stack.listen("127.0.0.1:0");
  const accepted = l.accept();
  const trickler = await stack.connect(l.localAddress);
  trickler.setNoDelay(true);
  const srv = await accepted;
  let line = "";
  const gotLine = srv.input.consume((view) => {
    const nl = view.indexOf(10);
    if (nl < 0) return needBytes(view.length + 1);
    line = new TextDecoder().decode(view.subarray(0, nl));
    return nl + 1;
  });
  const text = "x".repeat(199);
  let maxHeld = 0;
  for (const ch of text) {
    await trickler.output.write(ch);
    await trickler.output.flush();
    await sleep(0);
    maxHeld = Math.max(maxHeld, stack.stats().recvBuffersHeld);
  }
  // Meanwhile another connection is served in full.
  const served = serveWith(l, echo);
  const other = await stack.connect(l.localAddress);
  const data = new Uint8Array(100_000);
  fillRandom(data, 7);
  const writing = other.output.write(data);
  let sum = 0;
  for (let got = 0; got < data.length; ) {
    const v = (await other.input.read())!;
    got += v.length;
    sum = crc(v, sum);
  }
  await writing;
  expect(sum).toBe(crc(data));
  await other.close();
  await trickler.output.write("y\n");
  expect(await gotLine).toBe(true);
  expect(line).toBe(text + "y");
  expect(maxHeld).toBeLessThanOrEqual(2);
  await trickler.close();
  await srv.close();
  await l.close();
  await served;
  await expectQuiescent(stack);
}, 30_000);

/** Serves 4-byte messages with readExactly (echoes each); counts handlers that ended. */
function serveHeaders(l: ReturnType<typeof stack.listen>, sides: Connection[] = []) {
  const state = { served: 0, ended: 0 };
  void (async () => {
    for await (const c of l) {
      sides.push(c);
      void (async () => {
        try {
          for (;;) {
            const h = await c.input.readExactly(4);
            if (h === null) break;
            state.served++;
            await c.output.write(h);
          }
        } catch {
          // reset by the test or the peer
        }
        state.ended++;
        c.reset();
      })();
    }
  })();
  return state;
}

test("partial messages of many peers do not hold the pool: their bytes move out of it; everyone is served, closes are seen", async () => {
  // 16 peers each sent 1 byte of a 4-byte header: they held all 16 buffers, every other
  // connection of the shard waited on ENOBUFS for good, and so did the peers' own FINs.
  const l = stack.listen("127.0.0.1:0");
  const state = serveHeaders(l);
  const good = await stack.connect(l.localAddress);
  const partial: Connection[] = [];
  for (let i = 0; i < 24; i++) {
    const c = await stack.connect(l.localAddress);
    await c.output.write("x");
    partial.push(c);
  }
  await good.output.write("ping");
  expect(text((await good.input.readExactly(4))!)).toBe("ping");
  expect(stack.stats().recvSpilled).toBeGreaterThan(0);
  // The rest of each header arrives: all are answered with what they sent.
  for (const c of partial) await c.output.write("yz!");
  for (const c of partial) {
    expect(text((await c.input.readExactly(4))!)).toBe("xyz!");
    // Closing also releases the view's buffer (a read's lease lasts until the next read).
    await c.close();
  }
  await until(() => state.ended === 24, 5000, "every partial peer's close seen");
  await good.close();
  await until(() => state.ended === 25);
  await l.close();
  await expectQuiescent(stack);
}, 30_000);

test("readExactly of more than the whole pool completes, and other connections are served meanwhile", async () => {
  const l = stack.listen("127.0.0.1:0");
  const accepted = l.accept();
  const client = await stack.connect(l.localAddress);
  const srv = await accepted;
  const data = new Uint8Array(200_000); // 16 x 4096 = 64 KiB pool
  fillRandom(data, 11);
  const reading = srv.input.readExactly(data.length);
  const writing = client.output.write(data);
  const served = serveWith(l, echo);
  const other = await stack.connect(l.localAddress);
  await other.output.write("hello");
  expect(text((await other.input.readExactly(5))!)).toBe("hello");
  const got = (await reading)!;
  expect(crc(got)).toBe(crc(data));
  await writing;
  for (const c of [other, client, srv]) await c.close();
  await l.close();
  await served;
  await expectQuiescent(stack);
}, 30_000);

test("at the pool's cap a starved receive is re-armed as soon as one buffer is back", async () => {
  // It waited for min(32, max/8) free buffers: with one back, a request sat unserved.
  const l = stack.listen("127.0.0.1:0");
  const sides: Connection[] = [];
  const reads: Promise<Uint8Array | null>[] = [];
  let holding = 0;
  void (async () => {
    for await (const c of l) {
      sides.push(c);
      // Reads one chunk and keeps its view (a lease: not movable out of the pool).
      const r = c.input.read();
      reads.push(r);
      void r.then(() => holding++, () => {});
    }
  })();
  const peers: Connection[] = [];
  for (let i = 0; i < 16; i++) {
    const c = await stack.connect(l.localAddress);
    await c.output.write("x");
    peers.push(c);
  }
  await until(() => holding === 16);
  const good = await stack.connect(l.localAddress);
  await until(() => sides.length === 17);
  const reading = reads[16]!;
  await good.output.write("ping");
  await until(() => stack.stats().recvStarved > 0);
  sides[0]!.reset();
  expect(text((await reading)!)).toBe("ping");
  for (const c of [...peers, good]) c.reset();
  for (const c of sides) c.reset();
  await l.close();
  await expectQuiescent(stack);
}, 30_000);

test("moved out of the pool, a non-reading connection's bytes still stop at its maxReadBuffered", async () => {
  // The pause mark counted chunks: a spill made any number of bytes one chunk, and a connection
  // whose application never read buffered all 16 MiB its peer sent.
  const l = stack.listen("127.0.0.1:0"); // maxReadBuffered: 256 KiB by default
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress);
  const srv = await accepted;
  const writing = c.output.write(new Uint8Array(4 << 20)).catch(() => {});
  await until(() => stack.stats().recvSpilled > 0 && srv.input.buffered >= 200_000, 5000, "the pool ran dry and bytes moved");
  await Bun.sleep(300);
  expect(srv.input.buffered).toBeLessThanOrEqual(256 * 1024 + 4096);
  c.reset();
  srv.reset();
  await writing;
  await l.close();
  await expectQuiescent(stack);
}, 30_000);

test("a huge pending readExactly does not size what the pool's bytes move into", async () => {
  // The spill reserved room for the whole pending read: readExactly(2^45) with 100 KB arrived
  // threw RangeError (out of memory) from the stack's turn hook and ended the process.
  const l = stack.listen("127.0.0.1:0");
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress);
  const srv = await accepted;
  const reading = srv.input.readExactly(2 ** 45).catch((e) => e);
  await c.output.write(new Uint8Array(100_000));
  await until(() => srv.input.buffered === 100_000, 5000, "all 100 KB received");
  expect(stack.stats().recvSpilled).toBeGreaterThan(0);
  srv.reset();
  expect(await reading).toBeInstanceOf(Error);
  c.reset();
  await l.close();
  await expectQuiescent(stack);
}, 30_000);

test("receive buffer settings are fixed once sockets opened", () => {
  expect(() => configureNet({ recvBufferCount: 4 })).toThrow();
  expect(() => configureNet({ poisonBuffers: false })).not.toThrow();
});
