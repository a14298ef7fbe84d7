/**
 * The SPSC rings between two real Workers (two threads over one SharedArrayBuffer): records of
 * every size, wraps with and without a PAD, in-place and copied records, and both directions
 * full at once. Every record must arrive once, in order, with every byte the producer wrote
 * before it published (a consumer reading a record before its bytes would see stale ones).
 */
import { expect, test } from "bun:test";
import { SmpLayout, createSmpMemory } from "../../src/smp/ring.ts";

async function run(ringBytes: number, count: number) {
  const layout = new SmpLayout(2, ringBytes);
  const sab = createSmpMemory(layout);
  const url = new URL("./fixtures/ring-peer.ts", import.meta.url).href;
  const workers = [new Worker(url), new Worker(url)];
  try {
    const results = await Promise.all(
      workers.map(
        (w, me) =>
          new Promise<any>((resolve, reject) => {
            w.onmessage = (ev) => resolve(ev.data);
            w.onerror = (ev) => reject(new Error(ev.message));
            w.postMessage({ sab, ringBytes, me, count });
          }),
      ),
    );
    return results;
  } finally {
    for (const w of workers) w.terminate();
  }
}

for (const ringBytes of [4096, 65536]) {
  test(`${ringBytes}-byte rings both ways, both full at once: nothing lost, reordered or torn`, async () => {
    const count = ringBytes === 4096 ? 40_000 : 10_000;
    const results = await run(ringBytes, count);
    for (const r of results) {
      expect({ ...r, direct: r.direct > 0, maxBacklog: r.maxBacklog > 0 }).toEqual({
        me: r.me,
        sent: count,
        received: count,
        corrupt: 0,
        disorder: 0,
        direct: true,
        maxBacklog: true, // the ring was full and the producer waited for room
        backlog: 0,
        timedOut: false,
      });
    }
  }, 60_000);
}
