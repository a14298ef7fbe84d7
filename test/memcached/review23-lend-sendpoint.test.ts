/**
 * A meta get's large value is the last thing its answer renders (no END follows it), so it can
 * end exactly at a send point: stock transmits after every reqs_per_event commands (a yield),
 * value included. Sent from the item's memory (a splice at that very offset), the value must
 * still count as before the send point: an abort right after sends it, and a set whose value is
 * still arriving does not hold it back, as with stock.
 */
import { expect, test } from "bun:test";
import { exchange, startOurs, startStock } from "./lib/harness.ts";

const L = (s: string) => Buffer.from(s, "latin1");

test("an mg value ending at a reqs_per_event yield goes out at it, before an abort or a value still arriving, as stock sends it", async () => {
  const stock = await startStock(["-t", "1"]);
  const ours = await startOurs(["-t", "1"]);
  try {
    const fill = Buffer.concat([L("set big0 0 0 60000\r\n"), Buffer.alloc(60_000, 0x61), L("\r\nmn\r\n")]);
    for (const port of [stock.port, ours.port]) {
      expect(Buffer.from((await exchange(port, fill, { until: L("MN\r\n"), idleMs: 5000 })).bytes).toString("latin1")).toEndWith("MN\r\n");
    }
    // n commands, then mg (the yield comes after the 21st command of a read), then a line too
    // long (no newline in 10000 bytes): stock closes, sending only what it had sent by then.
    // Or a set whose value is still arriving: stock sent the value at the yield, before it.
    const after = [Buffer.alloc(10_000, 0x7a), L("set k 0 0 5\r\nab")];
    for (const [n, tail] of [19, 20, 21].flatMap((n) => after.map((t) => [n, t] as const))) {
      const data = Buffer.concat([L("version\r\n".repeat(n)), L("mg big0 v\r\n"), tail]);
      const [a, b] = await Promise.all([exchange(stock.port, data, { idleMs: 500 }), exchange(ours.port, data, { idleMs: 500 })]);
      const show = (x: Uint8Array) => ({ n, bytes: x.length, tail: Buffer.from(x.subarray(Math.max(0, x.length - 30))).toString("latin1") });
      expect({ ...show(b.bytes), closed: b.closed }).toEqual({ ...show(a.bytes), closed: a.closed });
      expect(Buffer.from(b.bytes).equals(Buffer.from(a.bytes))).toBe(true);
    }
  } finally {
    await ours.stop();
    await stock.stop();
  }
}, 60_000);
