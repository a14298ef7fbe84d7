/**
 * File streams over DMA files on ext4: the output stream pads its tail block and truncates to
 * the true size (40 bytes in, a 40-byte file out), write-behind and flush; the input stream
 * reads across buffer boundaries with read-ahead, from an unaligned offset, for a length.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { ClosedError, InvalidArgumentError, reactor } from "../../src/index.ts";
import { FileInputStream, FileOutputStream, makeFileInputStream, makeFileOutputStream, openFileDma } from "../../src/fs/index.ts";
import { ext4Scratch } from "./fixtures/ext4.ts";

const scratch = ext4Scratch("streams");
afterAll(() => scratch.cleanup());
let seq = 0;
const path = () => `${scratch.dir}/s-${++seq}`;

function bytes(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed * 2654435761;
  for (let i = 0; i < n; i++) {
    x = (x ^ (x << 13)) >>> 0;
    x = (x ^ (x >>> 17)) >>> 0;
    x = (x ^ (x << 5)) >>> 0;
    b[i] = x & 0xff;
  }
  return b;
}

describe("FileOutputStream", () => {
  test("40 bytes written leave a 40-byte file", async () => {
    const p = path();
    const f = await openFileDma(p, { flags: "w" });
    const out = makeFileOutputStream(f);
    const data = bytes(40);
    await out.write(data);
    expect(out.position).toBe(40);
    await out.close();
    expect(f.isClosed).toBe(true); // the stream owned the file
    expect(statSync(p).size).toBe(40);
    expect(Buffer.compare(readFileSync(p), data)).toBe(0);
  });

  test("many odd-sized writes across buffers, with write-behind, produce the exact bytes", async () => {
    const p = path();
    const total = 3 * 65536 + 777;
    const data = bytes(total, 2);
    const out = new FileOutputStream(await openFileDma(p, { flags: "w" }), { bufferSize: 16384, writeBehind: 3 });
    let off = 0;
    for (let step = 1; off < total; step = (step * 7 + 3) % 5000) {
      const n = Math.min(step + 1, total - off);
      await out.write(data.subarray(off, off + n));
      off += n;
    }
    await out.close();
    const disk = readFileSync(p);
    expect(disk.length).toBe(total);
    expect(Buffer.compare(disk, data)).toBe(0);
  });

  test("flush makes the prefix durable with the exact size; writing continues after it", async () => {
    const p = path();
    const out = new FileOutputStream(await openFileDma(p, { flags: "w" }), { bufferSize: 8192 });
    await out.write("hello, ");
    await out.flush();
    expect(readFileSync(p, "utf8")).toBe("hello, ");
    await out.write("world");
    await out.close();
    expect(readFileSync(p, "utf8")).toBe("hello, world");
    await expect(out.write("more")).rejects.toBeInstanceOf(ClosedError);
    await out.close(); // idempotent
  });

  test("an empty stream leaves an empty file; a stream from an offset keeps the head", async () => {
    const p = path();
    await new FileOutputStream(await openFileDma(p, { flags: "w" })).close();
    expect(statSync(p).size).toBe(0);
    const head = bytes(4096, 3);
    writeFileSync(p, head);
    const out = new FileOutputStream(await openFileDma(p, { flags: "r+" }), { offset: 4096 });
    await out.write("tail");
    await out.close();
    const disk = readFileSync(p);
    expect(disk.length).toBe(4100);
    expect(Buffer.compare(disk.subarray(0, 4096), head)).toBe(0);
    expect(disk.subarray(4096).toString()).toBe("tail");
  });

  test("a stream that ends inside a longer existing file leaves the bytes after it intact", async () => {
    // The tail block is padded to the alignment: the padding must be the file's own bytes, not
    // zeros written over them.
    const p = path();
    const old = bytes(16384, 4);
    writeFileSync(p, old);
    const out = new FileOutputStream(await openFileDma(p, { flags: "r+" }), { offset: 4096 });
    await out.write("hello");
    await out.flush(); // the tail block is written twice: at flush and at close
    await out.write(" world");
    await out.close();
    const disk = readFileSync(p);
    expect(disk.length).toBe(16384); // not truncated: the file was longer
    expect(disk.subarray(4096, 4107).toString()).toBe("hello world");
    expect(Buffer.compare(disk.subarray(0, 4096), Buffer.from(old.subarray(0, 4096)))).toBe(0);
    expect(Buffer.compare(disk.subarray(4107), Buffer.from(old.subarray(4107)))).toBe(0);
  });

  test("a stream over a file that ends inside the stream's padded last block keeps the file's end", async () => {
    // 300-byte file, 100 bytes written from 0: the tail block padded to the alignment reaches
    // past the old end, so the padded write grows the file; trimming must cut back to 300, not
    // to 100 (flush and close alike).
    for (const flushFirst of [false, true]) {
      const p = path();
      const old = bytes(300, 8);
      writeFileSync(p, old);
      const out = new FileOutputStream(await openFileDma(p, { flags: "r+" }));
      await out.write(new Uint8Array(100).fill(0x42));
      if (flushFirst) {
        await out.flush();
        expect(statSync(p).size).toBe(300);
      }
      await out.close();
      const disk = readFileSync(p);
      expect(disk.length).toBe(300);
      expect(disk.subarray(0, 100).every((x) => x === 0x42)).toBe(true);
      expect(Buffer.compare(disk.subarray(100), Buffer.from(old.subarray(100)))).toBe(0);
    }
  });

  test("...and refuses to pad over them when the file is write-only (it cannot read them)", async () => {
    const p = path();
    const old = bytes(8192, 5);
    writeFileSync(p, old);
    const out = new FileOutputStream(await openFileDma(p, { flags: { access: "write" } }), { offset: 0 });
    await out.write("abc");
    const err = await out.close().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(Buffer.compare(readFileSync(p), Buffer.from(old))).toBe(0); // nothing overwritten
  });

  test("bad options and read-only files are refused", async () => {
    const p = path();
    writeFileSync(p, "x");
    await using ro = await openFileDma(p);
    expect(() => new FileOutputStream(ro)).toThrow(/read-only/);
    await using rw = await openFileDma(p, { flags: "r+" });
    expect(() => new FileOutputStream(rw, { bufferSize: 1000 })).toThrow(InvalidArgumentError);
    expect(() => new FileOutputStream(rw, { writeBehind: 0 })).toThrow(InvalidArgumentError);
    expect(() => new FileOutputStream(rw, { offset: 3 })).toThrow(InvalidArgumentError);
    expect(() => new FileOutputStream({} as never)).toThrow(InvalidArgumentError);
  });
});

describe("FileInputStream", () => {
  test("reads across buffer boundaries in any request size", async () => {
    const p = path();
    const total = 5 * 4096 + 1234;
    const data = bytes(total, 4);
    writeFileSync(p, data);
    const input = makeFileInputStream(await openFileDma(p), { bufferSize: 4096, readAhead: 2 });
    const got: Uint8Array[] = [];
    // Sizes chosen to straddle every 4 KiB boundary: 1, 4095, 4097, 3000, ...
    for (const n of [1, 4095, 4097, 3000, 5000, 100000]) got.push(await input.readExactly(n));
    expect(got.map((g) => g.length)).toEqual([1, 4095, 4097, 3000, 5000, total - 1 - 4095 - 4097 - 3000 - 5000]);
    expect(Buffer.compare(Buffer.concat(got), data)).toBe(0);
    expect(await input.read()).toBeNull();
    expect(input.position).toBe(total);
    await input.close();
  });

  test("chunks via read() and for await, from an unaligned offset, for a length", async () => {
    const p = path();
    const data = bytes(300_000, 5);
    writeFileSync(p, data);
    const chunks: Uint8Array[] = [];
    await using input = new FileInputStream(await openFileDma(p), { bufferSize: 65536, readAhead: 3 });
    for await (const c of input) chunks.push(Uint8Array.from(c)); // views: copy to keep
    expect(Buffer.compare(Buffer.concat(chunks), data)).toBe(0);
    expect(chunks.length).toBe(Math.ceil(300_000 / 65536));

    const part = new FileInputStream(await openFileDma(p), { bufferSize: 8192, offset: 5000, length: 20_000 });
    expect(await part.skip(10)).toBe(10);
    const rest = await part.readExactly(50_000);
    expect(rest.length).toBe(19_990);
    expect(Buffer.compare(rest, data.subarray(5010, 25_000))).toBe(0);
    expect(await part.read()).toBeNull();
    await part.close();
    await expect(part.read()).rejects.toBeInstanceOf(ClosedError);
    expect(reactor().counters().inFlight).toBe(0);
  });

  test("a stream over a large file round-trips through an output stream", async () => {
    const p = path();
    const data = bytes(5 * 1024 * 1024 + 17, 6);
    const out = new FileOutputStream(await openFileDma(p, { flags: "w" }));
    for (let o = 0; o < data.length; o += 100_000) await out.write(data.subarray(o, o + 100_000));
    await out.close();
    const input = new FileInputStream(await openFileDma(p));
    const back = await input.readExactly(data.length + 10);
    await input.close();
    expect(back.length).toBe(data.length);
    expect(Buffer.compare(back, data)).toBe(0);
  });

  test("close() while a read() is in flight waits for it, frees its buffer and closes the file", async () => {
    const p = path();
    writeFileSync(p, bytes(1 << 20, 9));
    const f = await openFileDma(p);
    const input = new FileInputStream(f, { bufferSize: 65536, readAhead: 2 });
    const read = input.read(); // not awaited: its DMA read is in flight
    await input.close(); // used to throw "BufferPool.close: 2 buffer(s) still acquired" and leave the file open
    // The read completes; its view, like any view after close(), is no longer valid (detached).
    expect(await read).toBeInstanceOf(Uint8Array);
    expect(f.isClosed).toBe(true);
    expect(reactor().counters().inFlight).toBe(0);
    await expect(input.read()).rejects.toBeInstanceOf(ClosedError);
  });

  test("closing early waits for read-ahead and frees everything", async () => {
    const p = path();
    writeFileSync(p, bytes(1 << 20, 7));
    const f = await openFileDma(p);
    const input = new FileInputStream(f, { bufferSize: 65536, readAhead: 4, closeFile: false });
    expect((await input.read())!.length).toBe(65536);
    await input.close();
    expect(f.isClosed).toBe(false);
    expect(reactor().counters().inFlight).toBe(0);
    await f.close();
    expect(() => new FileInputStream(f)).toThrow(ClosedError);
  });
  test("close() during a multi-chunk skip() or readExactly(): it stops the loop, frees everything and closes the file", async () => {
    const p = path();
    writeFileSync(p, new Uint8Array(1 << 20).fill(5));
    for (const which of ["skip", "readExactly"] as const) {
      const f = await openFileDma(p);
      const input = new FileInputStream(f, { bufferSize: 65536, readAhead: 2 });
      const op = which === "skip" ? input.skip(300_000) : input.readExactly(300_000);
      const outcome = op.then(() => "resolved", (e: unknown) => e);
      await input.close(); // threw "buffer(s) still acquired" and left the pool mapped
      const r = await outcome;
      expect(r === "resolved" || r instanceof ClosedError).toBe(true);
      expect(f.isClosed).toBe(true);
      expect(reactor().counters().inFlight).toBe(0);
    }
  });
});
