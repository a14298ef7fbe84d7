/**
 * The file streams under overlapping calls: overlapping write() calls on one FileOutputStream (each
 * took a buffer of its own; one was lost with its bytes, close() then failed with "buffers
 * still acquired" and left the file open), and close() called while a write() waits for a
 * buffer (close() resolved with that write's bytes missing). Overlapping reads on one
 * FileInputStream (both came back short, as if the file ended, and a read() returned null in
 * the middle of the file): now refused.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { InvalidArgumentError } from "../../src/index.ts";
import { FileInputStream, FileOutputStream, openFileDma } from "../../src/fs/index.ts";
import { ext4Scratch } from "./fixtures/ext4.ts";

const scratch = ext4Scratch("streams-overlap");
afterAll(() => scratch.cleanup());
let seq = 0;
const path = () => `${scratch.dir}/r-${++seq}`;

function fill(n: number, v: number): Uint8Array {
  return new Uint8Array(n).fill(v);
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

describe("FileOutputStream: overlapping calls", () => {
  test("write() calls that overlap (each needing a buffer) are written whole, in call order", async () => {
    const p = path();
    const f = await openFileDma(p, { flags: "w" });
    // 2 buffers: the first write fills both and then waits for one, so the others overlap it.
    const out = new FileOutputStream(f, { bufferSize: 4096, writeBehind: 1 });
    const parts = [fill(3 * 4096 + 10, 0x41), fill(2 * 4096 + 300, 0x42), fill(77, 0x43), fill(5000, 0x44)];
    await Promise.all(parts.map((d) => out.write(d)));
    expect(out.position).toBe(concat(parts).length);
    await out.close();
    expect(f.isClosed).toBe(true);
    const disk = readFileSync(p);
    expect(disk.length).toBe(concat(parts).length);
    expect(Buffer.compare(disk, concat(parts))).toBe(0);
  });

  test("close() called while a write() waits for a buffer writes that write's bytes too", async () => {
    const p = path();
    const f = await openFileDma(p, { flags: "w" });
    const out = new FileOutputStream(f, { bufferSize: 4096, writeBehind: 1 });
    const data = fill(6 * 4096 + 123, 0x5a);
    const w = out.write(data); // waits for a buffer: two are being written
    await out.close();
    await w;
    const disk = readFileSync(p);
    expect(disk.length).toBe(data.length);
    expect(Buffer.compare(disk, data)).toBe(0);
  });
});

describe("FileInputStream: overlapping calls", () => {
  test("a read call overlapping another is refused; the first reads the right bytes and the stream goes on", async () => {
    const p = path();
    const data = new Uint8Array(10 * 4096);
    for (let i = 0; i < data.length; i++) data[i] = (i * 13 + (i >> 12)) & 0xff;
    writeFileSync(p, data);
    const f = await openFileDma(p);
    const s = new FileInputStream(f, { bufferSize: 4096, readAhead: 1 });
    const [a, b, c] = await Promise.allSettled([s.readExactly(5000), s.readExactly(5000), s.read()]);
    expect(a.status).toBe("fulfilled");
    expect(Buffer.compare((a as PromiseFulfilledResult<Uint8Array>).value, data.subarray(0, 5000))).toBe(0);
    expect(b.status === "rejected" && b.reason instanceof InvalidArgumentError).toBe(true);
    expect(c.status === "rejected" && c.reason instanceof InvalidArgumentError).toBe(true);
    // Nothing was consumed by the refused calls.
    expect(s.position).toBe(5000);
    expect(await s.skip(1000)).toBe(1000);
    const rest = await s.readExactly(data.length);
    expect(Buffer.compare(rest, data.subarray(6000))).toBe(0);
    await s.close();
    expect(f.isClosed).toBe(true);
  });
});
