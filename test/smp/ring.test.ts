import { describe, expect, test } from "bun:test";
import { InRing, K_PAD, OutRing, SmpLayout, createSmpMemory } from "../../src/smp/ring.ts";
import { RING_FULL, Writer } from "../../src/smp/codec.ts";

/** A record: [u32 length][u8 kind=1][3 bytes][u32 seq][payload], padded to 8 bytes. */
function record(seq: number, payloadBytes: number): Uint8Array {
  const len = (12 + payloadBytes + 7) & ~7;
  const rec = new Uint8Array(len);
  const dv = new DataView(rec.buffer);
  dv.setUint32(0, len, true);
  rec[4] = 1;
  dv.setUint32(8, seq, true);
  for (let i = 0; i < payloadBytes; i++) rec[12 + i] = (seq * 31 + i) & 0xff;
  return rec;
}

function pair(ringBytes: number) {
  const layout = new SmpLayout(2, ringBytes);
  const sab = createSmpMemory(layout);
  return { layout, out: new OutRing(sab, layout, 0, 1), inn: new InRing(sab, layout, 0, 1) };
}

/** Drains everything published and checks each record against its sequence number. */
function consume(inn: InRing, expectSeq: { next: number }): number {
  return inn.drain((ring, at) => {
    const dv = ring.dv;
    const len = dv.getUint32(at, true);
    expect(ring.u8[at + 4]).toBe(1);
    const seq = dv.getUint32(at + 8, true);
    expect(seq).toBe(expectSeq.next);
    expectSeq.next++;
    const payload = len - 12;
    for (let i = 0; i < Math.min(payload, 8); i++) {
      const b = ring.u8[at + 12 + i]!;
      // Padding bytes are not part of the payload; only check what the producer wrote.
      if (i < payload - 7) expect(b).toBe((seq * 31 + i) & 0xff);
    }
  }, 1 << 30);
}

describe("SmpLayout", () => {
  test("rings of different pairs never overlap and stay inside the buffer", () => {
    const layout = new SmpLayout(5, 4096);
    const starts = new Set<number>();
    for (let a = 0; a < 5; a++) {
      for (let b = 0; b < 5; b++) {
        if (a === b) continue;
        const at = layout.ring(a, b);
        expect(at % 64).toBe(0);
        expect(at + 256 + 4096).toBeLessThanOrEqual(layout.totalBytes);
        starts.add(at);
      }
    }
    expect(starts.size).toBe(20);
    expect(() => layout.ring(2, 2)).toThrow();
  });

  test("bad sizes are rejected", () => {
    expect(() => new SmpLayout(0, 4096)).toThrow("shard count");
    expect(() => new SmpLayout(2, 5000)).toThrow("power of two");
    expect(() => new SmpLayout(2, 1024)).toThrow("power of two");
  });
});

describe("SPSC ring", () => {
  test("records come out in order, whole, across many wraps", () => {
    const { out, inn } = pair(4096);
    const seq = { next: 0 };
    let sent = 0;
    for (let round = 0; round < 2000; round++) {
      const burst = 1 + (round % 7);
      for (let i = 0; i < burst; i++) {
        const rec = record(sent, (sent * 37) % 300);
        expect(out.write(rec, rec.length)).toBe(true);
        sent++;
      }
      out.publish();
      consume(inn, seq);
    }
    expect(seq.next).toBe(sent);
    expect(out.messages).toBe(sent);
    expect(inn.messages).toBe(sent);
  });

  test("a producer end made over a ring with unconsumed records keeps their room", () => {
    const { layout, out, inn } = pair(4096);
    const sab = (out as unknown as { buf: { buffer: SharedArrayBuffer } }).buf.buffer;
    let sent = 0;
    while (out.usedBytes < 3000) {
      const rec = record(sent++, 200);
      expect(out.write(rec, rec.length)).toBe(true);
    }
    out.publish();
    // A second end over the same memory (a restarted producer) knows the room is taken: what
    // does not fit waits in its backlog instead of overwriting records not yet read.
    const again = new OutRing(sab, layout, 0, 1);
    expect(again.usedBytes).toBe(out.usedBytes);
    for (let i = 0; i < 5; i++) {
      const rec = record(sent++, 200);
      again.write(rec, rec.length);
    }
    again.publish();
    const seq = { next: 0 };
    consume(inn, seq);
    again.pump();
    again.publish();
    consume(inn, seq);
    expect(seq.next).toBe(sent);
  });

  test("nothing is visible before publish, and publish is once per batch", () => {
    const { out, inn } = pair(4096);
    const rec = record(0, 10);
    out.write(rec, rec.length);
    expect(inn.hasData()).toBe(false);
    expect(out.publish()).toBe(true);
    expect(out.publish()).toBe(false);
    expect(inn.hasData()).toBe(true);
    consume(inn, { next: 0 });
    expect(inn.hasData()).toBe(false);
  });

  test("a full ring queues records in a backlog, keeps order, and flags the producer as waiting", async () => {
    const { out, inn } = pair(4096);
    let sent = 0;
    let direct = 0;
    for (; sent < 200; sent++) {
      const rec = record(sent, 100);
      if (out.write(rec, rec.length)) direct++;
    }
    expect(direct).toBeGreaterThan(0);
    expect(direct).toBeLessThan(200);
    expect(out.backlogLength).toBe(200 - direct);
    expect(inn.producerWaiting()).toBe(true);
    const drained = out.whenDrained();
    let resolved = false;
    void drained.then(() => (resolved = true));
    const seq = { next: 0 };
    for (let i = 0; i < 100 && out.backlogLength > 0; i++) {
      out.publish();
      consume(inn, seq);
      expect(out.backlogCanMove()).toBe(true);
      out.pump();
    }
    out.publish();
    consume(inn, seq);
    expect(seq.next).toBe(200);
    expect(out.backlogLength).toBe(0);
    expect(inn.producerWaiting()).toBe(false);
    await drained;
    expect(resolved).toBe(true);
    expect(out.maxBacklog).toBe(200 - direct);
  });

  test("memory stays bounded: used bytes never exceed the ring", () => {
    const { out, inn } = pair(8192);
    const seq = { next: 0 };
    let sent = 0;
    for (let round = 0; round < 500; round++) {
      for (let i = 0; i < 50; i++, sent++) {
        const rec = record(sent, (sent * 13) % 500);
        out.write(rec, rec.length);
      }
      expect(out.usedBytes).toBeLessThanOrEqual(8192);
      out.publish();
      if (round % 3 === 0) consume(inn, seq);
      out.pump();
    }
    while (seq.next < sent) {
      out.publish();
      consume(inn, seq);
      out.pump();
    }
    expect(seq.next).toBe(sent);
  });

  test("a record that does not fit before the end is preceded by a PAD", () => {
    const { out, inn, layout } = pair(8192);
    expect(layout.maxRecordBytes).toBe(4096);
    const seq = { next: 0 };
    for (let i = 0; i < 2; i++) {
      const big = record(i, 3000);
      out.write(big, big.length);
    }
    out.publish();
    consume(inn, seq);
    // 6032 bytes used; the next 4016-byte record must wrap to the start.
    const next = record(2, 4000);
    expect(out.write(next, next.length)).toBe(true);
    expect(out.u8[6032 + 4]).toBe(K_PAD);
    expect(out.dv.getUint32(6032, true)).toBe(8192 - 6032);
    out.publish();
    expect(consume(inn, seq)).toBe(1);
    expect(seq.next).toBe(3);
  });

  test("direct() lets a writer encode in place, bounded by the ring's room", () => {
    const { out, inn } = pair(4096);
    const w = new Writer(64, 2048);
    let written = 0;
    let full = false;
    while (!full && out.direct(w)) {
      const start = w.pos;
      try {
        w.ensure(12);
        w.dv.setUint32(start + 4, 1, true);
        w.dv.setUint32(start + 8, written, true);
        w.pos = start + 12;
        w.value("payload ".repeat(10));
        const end = (w.pos + 7) & ~7;
        w.ensure(end - w.pos);
        w.dv.setUint32(start, end - start, true);
        w.pos = end;
      } catch (err) {
        expect(err).toBe(RING_FULL);
        full = true;
        continue;
      }
      out.commitDirect(w, start);
      written++;
    }
    expect(full).toBe(true);
    expect(written).toBeGreaterThan(30);
    out.publish();
    let seen = 0;
    inn.drain((ring, at) => {
      expect(ring.dv.getUint32(at + 8, true)).toBe(seen++);
      ring.reader.pos = at + 12;
      expect(ring.reader.value()).toBe("payload ".repeat(10));
    }, 1 << 30);
    expect(seen).toBe(written);
  });

  test("misaligned or oversized records are refused before they reach the ring", () => {
    const { out, inn } = pair(4096);
    expect(() => out.write(new Uint8Array(12), 12)).toThrow("8-byte aligned");
    expect(() => out.write(new Uint8Array(4), 4)).toThrow("8-byte aligned");
    expect(() => out.write(new Uint8Array(4096), 4096)).toThrow("8..2048 bytes");
    out.publish();
    expect(inn.hasData()).toBe(false);
  });

  test("a consumer refuses a corrupt length instead of looping", () => {
    const { out, inn } = pair(4096);
    const rec = record(0, 4);
    out.write(rec, rec.length);
    out.dv.setUint32(0, 12, true); // corrupt it after the fact
    out.publish();
    expect(() => inn.drain(() => {}, 10)).toThrow("corrupt ring from shard 0");
  });

  test("drain respects its budget and resumes where it stopped", () => {
    const { out, inn } = pair(4096);
    for (let i = 0; i < 20; i++) {
      const rec = record(i, 4);
      out.write(rec, rec.length);
    }
    out.publish();
    const seq = { next: 0 };
    const handle = (ring: InRing, at: number) => {
      expect(ring.dv.getUint32(at + 8, true)).toBe(seq.next++);
    };
    expect(inn.drain(handle, 7)).toBe(7);
    expect(inn.hasData()).toBe(true);
    expect(inn.drain(handle, 100)).toBe(13);
    expect(inn.hasData()).toBe(false);
  });
});
