/**
 * Conformance at scale: thousands of concurrent connections, large transfers with checksums
 * in both directions, and the zero-copy claim measured (JS-heap growth per MiB received).
 * SHOAL_SOAK=1 runs the full sizes (1 GiB transfers).
 */
import { describe, expect, test } from "bun:test";
import { heapStats } from "bun:jsc";
import { crc, echo, expectQuiescent, fillRandom, serveWith, soak, type StackUnderTest } from "./harness.ts";
import type { Connection } from "../../../src/net/types.ts";

const MiB = 1024 * 1024;

/** Sends `total` pseudo-random bytes in `chunk`-sized writes; returns their CRC-32. */
async function sendRandom(c: Connection, total: number, seed: number, chunk = 256 * 1024): Promise<number> {
  const buf = new Uint8Array(chunk);
  let state = seed;
  let sum = 0;
  for (let sent = 0; sent < total; sent += chunk) {
    const piece = total - sent < chunk ? buf.subarray(0, total - sent) : buf;
    state = fillRandom(piece, state);
    sum = crc(piece, sum);
    await c.output.write(piece);
  }
  return sum;
}

/** Reads exactly `total` bytes; returns their CRC-32. */
async function receiveAll(c: Connection, total: number): Promise<number> {
  let got = 0;
  let sum = 0;
  while (got < total) {
    const v = await c.input.read();
    if (v === null) throw new Error(`stream ended after ${got} of ${total} bytes`);
    got += v.length;
    sum = crc(v, sum);
  }
  return sum;
}

export function scaleConformance(s: StackUnderTest, opts: { connections: number }): void {
  const stack = s.stack;

  describe(`${s.name} scale`, () => {
    test(
      `${opts.connections} concurrent connections each echo several messages`,
      async () => {
        const n = opts.connections;
        const l = stack.listen("127.0.0.1:0", { backlog: 4096 });
        const served = serveWith(l, echo);
        const conns: Connection[] = [];
        // Connect in waves so the kernel backlog is never the limit.
        for (let i = 0; i < n; i += 256) {
          const wave = await Promise.all(Array.from({ length: Math.min(256, n - i) }, () => stack.connect(l.localAddress)));
          conns.push(...wave);
        }
        expect(conns.length).toBe(n);
        await Promise.all(
          conns.map(async (c, i) => {
            for (let k = 0; k < 4; k++) {
              const msg = `conn ${i} message ${k} ${"x".repeat(i % 200)}`;
              await c.output.write(msg);
              const back = await c.input.readExactly(Buffer.byteLength(msg));
              expect(new TextDecoder().decode(back!)).toBe(msg);
            }
          }),
        );
        // All open at once on the server side.
        expect(stack.stats().connectionsOpen).toBe(2 * n);
        await Promise.all(conns.map((c) => c.close()));
        await l.close();
        await served;
        const st = await expectQuiescent(stack, 20_000);
        console.log(`scale: ${n} connections, ${st.recvStarved} receive stops on ENOBUFS, ${st.recvPauses} pauses`);
      },
      120_000,
    );

    const size = soak ? 1024 * MiB : 32 * MiB;
    test(
      `${size / MiB} MiB each way at once through an echo server, checksums match`,
      async () => {
        const l = stack.listen("127.0.0.1:0");
        const served = serveWith(l, echo);
        const c = await stack.connect(l.localAddress);
        const t0 = performance.now();
        const [sentSum, gotSum] = await Promise.all([sendRandom(c, size, 12345), receiveAll(c, size)]);
        const ms = performance.now() - t0;
        expect(gotSum).toBe(sentSum);
        console.log(`transfer: ${size / MiB} MiB echoed in ${ms.toFixed(0)} ms (${((2 * size) / MiB / (ms / 1000)).toFixed(0)} MiB/s through both ends)`);
        await c.close();
        await l.close();
        await served;
        await expectQuiescent(stack);
      },
      soak ? 3_600_000 : 120_000,
    );

    test(
      `${size / MiB} MiB in each direction on separate streams (upload and download), checksums match`,
      async () => {
        const l = stack.listen("127.0.0.1:0");
        const accepted = l.accept();
        const c = await stack.connect(l.localAddress);
        const srv = await accepted;
        const [up, upGot, down, downGot] = await Promise.all([
          sendRandom(c, size, 1),
          receiveAll(srv, size),
          sendRandom(srv, size, 2),
          receiveAll(c, size),
        ]);
        expect(upGot).toBe(up);
        expect(downGot).toBe(down);
        await c.close();
        await srv.close();
        await l.close();
        await expectQuiescent(stack);
      },
      soak ? 3_600_000 : 120_000,
    );

    test(
      "zero copy shown: JS-heap growth per MiB received stays near zero",
      async () => {
        const l = stack.listen("127.0.0.1:0");
        const accepted = l.accept();
        const c = await stack.connect(l.localAddress);
        const srv = await accepted;
        const total = soak ? 1024 * MiB : 64 * MiB;
        const block = new Uint8Array(256 * 1024).fill(3);
        const sender = (async () => {
          for (let sent = 0; sent < total; sent += block.length) await srv.output.write(block);
        })();
        // Warm up (JIT, lazily created views), then measure the rest.
        const warm = 4 * MiB;
        let got = 0;
        while (got < warm) got += (await c.input.read())!.length;
        Bun.gc(true);
        const before = heapStats();
        let bytes = 0;
        while (got < total) {
          const v = (await c.input.read())!;
          got += v.length;
          bytes += v.length;
        }
        Bun.gc(true);
        const after = heapStats();
        await sender;
        const mib = bytes / MiB;
        const growth = after.heapSize - before.heapSize;
        const perMiB = growth / mib;
        const objects = (after.objectCount - before.objectCount) / mib;
        console.log(`zero copy: ${mib.toFixed(0)} MiB received; heap ${before.heapSize} -> ${after.heapSize} bytes (${perMiB.toFixed(1)} B/MiB, ${objects.toFixed(2)} objects/MiB)`);
        expect(perMiB).toBeLessThan(1024);
        await c.close();
        await srv.close();
        await l.close();
        await expectQuiescent(stack);
      },
      soak ? 3_600_000 : 120_000,
    );
  });
}
