// A receive pool at its cap, a few peers flooding (their readers keep up, so they hand their
// buffers back at once), and one quiet peer asking a question now and then: the quiet peer's
// receive, stopped by ENOBUFS, must get a buffer within a bounded share of the flood. It did
// not: re-armed after the flooders (the starved list kept the order in which receives ran dry,
// and a re-armed flooder took every buffer back), it ran dry again, last again, every turn,
// while gigabytes of flood went through (seen with 1 to 8 flooders on a 16-buffer pool).
import { expect, test } from "bun:test";
import { configureNet } from "../../src/net/api.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import type { Connection } from "../../src/net/types.ts";
import { expectQuiescent } from "./conformance/harness.ts";

configureNet({ recvBufferSize: 4096, recvBufferCount: 16, recvBufferMax: 16 });
const stack = posixStack();

/** Flood bytes the server may take (all flooders together) before the quiet peer's 10 answers: 16 MiB each. */
const FLOOD_BUDGET = 10 * 16 * 1024 * 1024;

for (const flooders of [1, 4]) {
  test(`${flooders} flooding peer(s) on a 16-buffer pool: a quiet peer's requests are each answered within a bounded share of the flood`, async () => {
    const l = stack.listen("127.0.0.1:0");
    let flooded = 0;
    const servers: Promise<void>[] = [];
    void (async () => {
      for await (const c of l) {
        servers.push(
          (async () => {
            const first = await c.input.read();
            if (first !== null && first[0] === 0x3f) {
              // "?": the quiet peer; answer each question.
              await c.output.write("!");
              for (;;) {
                const v = await c.input.read();
                if (v === null) break;
                await c.output.write("!");
              }
            } else {
              if (first !== null) flooded += first.length;
              for (;;) {
                const v = await c.input.read();
                if (v === null) break;
                flooded += v.length;
              }
            }
            await c.close();
          })().catch(() => {}),
        );
      }
    })();
    let stop = false;
    const big = new Uint8Array(1 << 20).fill(0x66);
    const floods: Connection[] = [];
    const pumps: Promise<void>[] = [];
    for (let i = 0; i < flooders; i++) {
      const c = await stack.connect(l.localAddress);
      floods.push(c);
      pumps.push(
        (async () => {
          while (!stop) await c.output.write(big);
        })().catch(() => {}),
      );
    }
    // The pool is at its cap and running dry before the quiet peer connects.
    const starvedBefore = stack.stats().recvStarved;
    while (stack.stats().recvStarved === starvedBefore) await Bun.sleep(5);
    const quiet = await stack.connect(l.localAddress);
    const floodedAt: number[] = [];
    let over = false;
    for (let i = 0; i < 10 && !over; i++) {
      const from = flooded;
      await quiet.output.write("?");
      const answer = quiet.input.read();
      // Not a timing bound: the flood is the clock (a slow machine floods slower too).
      let settled = false;
      const outcome = await Promise.race([
        answer.then((v) => (v === null ? "eof" : "answered")),
        (async () => {
          while (!settled && flooded - from < FLOOD_BUDGET / 10) await Bun.sleep(5);
          return "starved";
        })(),
      ]);
      settled = true;
      floodedAt.push(flooded - from);
      if (outcome !== "answered") over = true;
    }
    stop = true;
    for (const c of floods) c.reset();
    quiet.reset();
    await Promise.all(pumps);
    await l.close();
    await Promise.all(servers);
    // Every question answered, each before the flooders got another 16 MiB through (with the
    // re-armed receives taking one buffer each, about 64 to 256 KiB went by per answer here).
    expect({ answered: floodedAt.length, overBudget: floodedAt.filter((b) => b >= FLOOD_BUDGET / 10) }).toEqual({ answered: 10, overBudget: [] });
    await expectQuiescent(stack);
  }, 120_000);
}
