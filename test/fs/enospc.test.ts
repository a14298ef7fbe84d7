/**
 * A full disk: a small ext4 image, loop-mounted by the test (root only) and removed after it.
 * Writing past its capacity fails with a typed SystemError ENOSPC, and nothing flushed before
 * is lost: the image is unmounted and mounted again, and the flushed bytes are read back.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { SystemError, allocateAlignedBuffer, reactor } from "../../src/index.ts";
import { FileOutputStream, fsSpace, openFileDma } from "../../src/fs/index.ts";
import { canLoopMount, loopExt4, type LoopDisk } from "./fixtures/ext4.ts";
import { ioUringLetGo } from "./fixtures/io-uring-release.ts";

const allowed = canLoopMount();
let disk: LoopDisk | undefined;
afterAll(async () => {
  if (disk === undefined) return;
  try {
    await ioUringLetGo(); // else cleanup's umount may find the closed files still held, and go lazy
  } finally {
    disk.cleanup();
  }
});

function fillPattern(b: Uint8Array, tag: number): void {
  for (let i = 0; i < b.length; i++) b[i] = (tag * 29 + i * 13 + (i >> 12)) & 0xff;
}

describe.skipIf(!allowed)("ENOSPC on a small loop-mounted ext4 image", () => {
  test("dmaWrite rejects with SystemError ENOSPC and the flushed prefix survives a remount", async () => {
    disk = loopExt4(24, ["-b", "4096", "-m", "0"]);
    expect(fsSpace(disk.dir).fileSystem).toBe("ext4");
    const p = `${disk.dir}/data`;
    const chunk = 1 << 20;
    const flushed = 4;
    const buf = allocateAlignedBuffer(chunk);
    const f = await openFileDma(p, { flags: "w" });
    for (let i = 0; i < flushed; i++) {
      fillPattern(buf.bytes, i);
      expect(await f.dmaWrite(i * chunk, buf)).toBe(chunk);
    }
    await f.flush();

    let error: unknown;
    let i = flushed;
    for (; i < 64 && error === undefined; i++) {
      fillPattern(buf.bytes, i);
      await f.dmaWrite(i * chunk, buf).catch((e: unknown) => (error = e));
    }
    expect(error).toBeInstanceOf(SystemError);
    expect((error as SystemError).code).toBe("ENOSPC");
    expect((error as SystemError).errno).toBe(28);
    expect((error as SystemError).op).toBe("dmaWrite");
    expect(i).toBeGreaterThan(flushed + 1); // the disk did fill up first
    await f.close();
    expect(reactor().counters().inFlight).toBe(0);

    // What a reboot would keep: unmount, mount again, read through DMA.
    await disk.remount();
    const g = await openFileDma(p);
    for (let k = 0; k < flushed; k++) {
      expect(await g.dmaReadInto(k * chunk, buf)).toBe(chunk);
      const want = new Uint8Array(chunk);
      fillPattern(want, k);
      expect(Buffer.compare(buf.bytes, want)).toBe(0);
    }
    await g.close();
    buf.release();
  });

  test("an output stream surfaces ENOSPC from write-behind, and close still closes the file", async () => {
    disk ??= loopExt4(24, ["-b", "4096", "-m", "0"]);
    const f = await openFileDma(`${disk.dir}/stream`, { flags: "w" });
    const out = new FileOutputStream(f, { bufferSize: 1 << 20, writeBehind: 2 });
    const block = new Uint8Array(1 << 20).fill(7);
    let error: unknown;
    for (let i = 0; i < 64 && error === undefined; i++) await out.write(block).catch((e: unknown) => (error = e));
    const closeError = await out.close().catch((e: unknown) => e);
    error ??= closeError;
    expect(error).toBeInstanceOf(SystemError);
    expect((error as SystemError).code).toBe("ENOSPC");
    expect(closeError).toBeInstanceOf(SystemError);
    expect(f.isClosed).toBe(true);
  });
});
