/**
 * The DMA layer under hostile arguments (review 22): open flags that name Object.prototype's
 * members, and readExactly() asked for "everything" (2^53 - 1 bytes).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { InvalidArgumentError } from "../../src/index.ts";
import { FileInputStream, openFileDma } from "../../src/fs/index.ts";
import { ext4Scratch } from "./fixtures/ext4.ts";

const scratch = ext4Scratch("review22-hostile");
afterAll(() => scratch.cleanup());
let seq = 0;
const path = () => `${scratch.dir}/h-${++seq}`;

describe("openFileDma flags", () => {
  test("flag strings and access names inherited from Object.prototype are refused with InvalidArgumentError", async () => {
    const p = path();
    writeFileSync(p, new Uint8Array(4096).fill(1));
    // "toString" and friends were looked up on a plain object: a string gave a TypeError
    // ("is not iterable"), an access name opened a file that was neither readable nor writable.
    const bad: unknown[] = [
      "toString", "__proto__", "constructor", "hasOwnProperty",
      { access: "constructor" }, { access: "toString", create: true }, { access: "__proto__" }, { access: "valueOf" },
    ];
    for (const flags of bad) {
      const r = await openFileDma(p, { flags: flags as never }).then(
        async (f) => {
          await f.close();
          return `opened (readable ${f.readable}, writable ${f.writable})`;
        },
        (e: unknown) => e,
      );
      expect(r).toBeInstanceOf(InvalidArgumentError);
    }
    // The real names still work.
    await using f = await openFileDma(p, { flags: { access: "readWrite" } });
    expect([f.readable, f.writable]).toEqual([true, true]);
  });
});

describe("FileInputStream.readExactly", () => {
  test("readExactly(2 ** 53 - 1) returns the rest of the file instead of failing to allocate 2^53 bytes", async () => {
    const p = path();
    const data = new Uint8Array(10_000).map((_, i) => (i * 7) & 0xff);
    writeFileSync(p, data);
    const s = new FileInputStream(await openFileDma(p), { bufferSize: 4096 });
    try {
      expect(await s.readExactly(3)).toEqual(data.subarray(0, 3));
      const rest = await s.readExactly(Number.MAX_SAFE_INTEGER);
      expect(rest.length).toBe(data.length - 3);
      expect(rest).toEqual(data.subarray(3));
      expect(s.position).toBe(data.length);
      expect((await s.readExactly(Number.MAX_SAFE_INTEGER)).length).toBe(0);
    } finally {
      await s.close();
    }
  });

  test("readExactly across many chunks into a growing result keeps every byte in order", async () => {
    const p = path();
    const data = new Uint8Array(300_000).map((_, i) => (i * 13 + (i >> 9)) & 0xff);
    writeFileSync(p, data);
    const s = new FileInputStream(await openFileDma(p), { bufferSize: 4096, offset: 5 });
    try {
      const a = await s.readExactly(123_457);
      expect(a).toEqual(data.subarray(5, 5 + 123_457));
      const b = await s.readExactly(4096);
      expect(b).toEqual(data.subarray(5 + 123_457, 5 + 123_457 + 4096));
      const c = await s.readExactly(1 << 30);
      expect(c).toEqual(data.subarray(5 + 123_457 + 4096));
    } finally {
      await s.close();
    }
  });
});

describe("alignUp / alignDown", () => {
  test("an alignment that is not a power of two is refused instead of rounding to Infinity, NaN or below the value", async () => {
    const { alignUp, alignDown } = await import("../../src/fs/index.ts");
    // alignUp(4097, -4096) was 0 (rounded "up" below the value), alignUp(5, 0) Infinity.
    for (const a of [0, -4096, NaN, 3, 4096.5, 2 ** 53]) {
      expect(() => alignUp(4097, a)).toThrow(InvalidArgumentError);
      expect(() => alignDown(4097, a)).toThrow(InvalidArgumentError);
    }
    expect(alignUp(4097, 4096)).toBe(8192);
    expect(alignDown(4097, 512)).toBe(4096);
    expect(alignUp(Infinity, 4096)).toBe(Infinity);
  });
});
