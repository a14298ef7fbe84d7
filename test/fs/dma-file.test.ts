/**
 * DmaFile on real ext4: O_DIRECT reads and writes through io_uring, metadata operations,
 * alignment from STATX_DIOALIGN, concurrency (10,000 writes; 16 writers under fdatasync),
 * cancellation without leaked slots, and every bad input failing with a typed error before
 * anything reaches the kernel.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { mkdtempSync, readFileSync, rmdirSync, writeFileSync, statSync } from "node:fs";
import {
  AbortError,
  BufferPool,
  ClosedError,
  InvalidArgumentError,
  SystemError,
  allocateAlignedBuffer,
  reactor,
  sleep,
} from "../../src/index.ts";
import { Semaphore } from "../../src/core/semaphore.ts";
import {
  DmaFile,
  configureIoScheduler,
  dmaBufferPool,
  ioScheduler,
  openFileDma,
  resetIoScheduler,
} from "../../src/fs/index.ts";
import { ext4Scratch } from "./fixtures/ext4.ts";

const scratch = ext4Scratch("dma");
const dir = scratch.dir;
afterAll(() => scratch.cleanup());

let seq = 0;
const path = (name = "f") => `${dir}/${name}-${++seq}`;

/** Fills `bytes` with a pattern unique to `tag` (so misplaced blocks are caught). */
function pattern(bytes: Uint8Array, tag: number): void {
  for (let i = 0; i < bytes.length; i++) bytes[i] = (tag * 131 + i * 7 + (i >> 9)) & 0xff;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

/** The reactor's submitted-operation count: unchanged means nothing reached the kernel. */
function submitted(): number {
  return reactor().counters().submitted;
}

async function settleLoop(): Promise<void> {
  // Cancel requests and the loop's own bookkeeping settle within a few turns.
  for (let i = 0; i < 50 && reactor().counters().inFlight > 0; i++) await sleep(2);
}

describe("openFileDma on ext4", () => {
  test("probes DMA alignment, file system and device", async () => {
    await using f = await openFileDma(path(), { flags: "w+" });
    expect(f).toBeInstanceOf(DmaFile);
    expect(f.fileSystem).toBe("ext4");
    expect(f.dmaIsReal).toBe(true);
    expect(f.readable && f.writable).toBe(true);
    for (const a of [f.memoryDmaAlignment, f.diskReadDmaAlignment, f.diskWriteDmaAlignment]) {
      expect(a).toBeGreaterThan(0);
      expect(a & (a - 1)).toBe(0);
      expect(a).toBeLessThanOrEqual(4096);
    }
    const st = await f.stat();
    // ext4 reports STATX_DIOALIGN on Linux 6.1+; the file's alignment comes from there.
    expect(st.dioOffsetAlignment).toBe(f.diskWriteDmaAlignment);
    expect(st.type).toBe("file");
    expect(f.deviceMajor).toBe(st.deviceMajor);
    expect(st.deviceMajor * 256 + st.deviceMinor).toBeGreaterThan(0);
  });

  test("writes and reads back through DMA; data reaches the file", async () => {
    const p = path();
    await using f = await openFileDma(p, { flags: "w+" });
    const pool = dmaBufferPool({ bufferSize: 64 * 1024, count: 2 });
    const w = pool.acquire();
    pattern(w.bytes, 1);
    expect(await f.dmaWrite(8192, w)).toBe(65536);
    const r = pool.acquire();
    expect(await f.dmaReadInto(8192, r)).toBe(65536);
    expect(same(r.bytes, w.bytes)).toBe(true);
    expect(await f.size()).toBe(8192 + 65536);
    // The bytes are in the file for any other reader too (the hole before them reads as zeros).
    const disk = readFileSync(p);
    expect(disk.subarray(0, 8192).every((b) => b === 0)).toBe(true);
    expect(same(disk.subarray(8192), w.bytes)).toBe(true);
    w.release();
    r.release();
    pool.close();
  });

  test("dmaRead returns a caller-owned buffer, short only at the end of the file", async () => {
    const p = path();
    const content = new Uint8Array(10_000);
    pattern(content, 2);
    writeFileSync(p, content);
    await using f = await openFileDma(p);
    expect(f.writable).toBe(false);
    const a = await f.dmaRead(0, 8192);
    expect(a.length).toBe(8192);
    expect(same(a.bytes, content.subarray(0, 8192))).toBe(true);
    a.release();
    const b = await f.dmaRead(8192, 8192);
    expect(b.length).toBe(10_000 - 8192);
    expect(same(b.bytes, content.subarray(8192))).toBe(true);
    b.release();
    expect(b.isReleased).toBe(true);
    const c = await f.dmaRead(16384, 4096);
    expect(c.length).toBe(0);
    c.release();
    // From a pool: the buffer goes back to it when released, even a trimmed one.
    const pool = dmaBufferPool({ bufferSize: 16384, count: 1 });
    const d = await f.dmaRead(4096, 16384, { pool });
    expect(d.length).toBe(10_000 - 4096);
    expect(pool.available).toBe(0);
    d.release();
    expect(pool.available).toBe(1);
    pool.close();
  });

  test("readv and writev move several buffers in one request", async () => {
    await using f = await openFileDma(path(), { flags: "w+" });
    const bufs = [allocateAlignedBuffer(4096), allocateAlignedBuffer(8192), allocateAlignedBuffer(4096)];
    bufs.forEach((b, i) => pattern(b.bytes, 10 + i));
    expect(await f.writev(4096, bufs)).toBe(16384);
    const back = [allocateAlignedBuffer(8192), allocateAlignedBuffer(8192)];
    expect(await f.readv(4096, back)).toBe(16384);
    const joined = Buffer.concat(back.map((b) => b.bytes));
    expect(same(joined, Buffer.concat(bufs.map((b) => b.bytes)))).toBe(true);
    for (const b of [...bufs, ...back]) b.release();
  });

  test("truncate, allocate, discard and flush", async () => {
    const p = path();
    await using f = await openFileDma(p, { flags: "w+" });
    const b = allocateAlignedBuffer(65536);
    b.bytes.fill(0xab);
    await f.dmaWrite(0, b);
    await f.flush();
    await f.truncate(1000); // any size: only I/O needs alignment
    expect(await f.size()).toBe(1000);
    await f.truncate(65536);
    await f.allocate(65536, 1 << 20); // keeps the size by default
    const st = await f.stat();
    expect(st.size).toBe(65536);
    expect(st.allocatedBytes).toBeGreaterThanOrEqual(1 << 20); // truncate(1000) freed the tail blocks
    await f.allocate(0, 131072, { keepSize: false });
    expect(await f.size()).toBe(131072);
    // Punch a hole: the blocks read as zeros, the size stays.
    b.bytes.fill(0xcd);
    await f.dmaWrite(0, b);
    await f.discard(4096, 8192);
    expect(await f.dmaReadInto(0, b)).toBe(65536);
    expect(b.bytes[0]).toBe(0xcd);
    expect(b.bytes.subarray(4096, 12288).every((x) => x === 0)).toBe(true);
    expect(b.bytes[12288]).toBe(0xcd);
    expect(await f.size()).toBe(131072);
    await f.flush();
    b.release();
  });

  test("close waits for I/O in flight, then rejects new calls; asyncDispose closes", async () => {
    const f = await openFileDma(path(), { flags: "w+" });
    const b = allocateAlignedBuffer(1 << 20);
    const w = f.dmaWrite(0, b);
    const c = f.close();
    expect(f.isClosed).toBe(true);
    expect(await f.dmaWrite(0, b).catch((e: unknown) => e)).toBeInstanceOf(ClosedError);
    expect(await w).toBe(1 << 20);
    await c;
    expect(f.close()).toBe(c); // idempotent
    b.release();
    let g: DmaFile | undefined;
    {
      await using h = await openFileDma(path(), { flags: "w" });
      g = h;
    }
    expect(g!.isClosed).toBe(true);
  });

  test("open errors are typed SystemErrors naming the path", async () => {
    const missing = `${dir}/missing/file`;
    const e1 = await openFileDma(missing).catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(SystemError);
    expect((e1 as SystemError).code).toBe("ENOENT");
    expect((e1 as SystemError).message).toContain(missing);
    const p = path();
    writeFileSync(p, "x");
    const e2 = await openFileDma(p, { flags: "wx" }).catch((e: unknown) => e);
    expect((e2 as SystemError).code).toBe("EEXIST");
    const e3 = await openFileDma(dir).catch((e: unknown) => e);
    expect((e3 as SystemError).code).toBe("EISDIR");
    // A device refuses O_DIRECT for what it is: say so, not that the file system refuses it.
    const e4 = await openFileDma("/dev/null").catch((e: unknown) => e);
    expect((e4 as SystemError).code).toBe("EINVAL");
    expect((e4 as SystemError).message).toMatch(/is a char-device, not a regular file/);
    // Object flags: create without truncating.
    await using f = await openFileDma(p, { flags: { access: "readWrite", create: true } });
    expect(await f.size()).toBe(1);
    await using g = await openFileDma(path(), { flags: { access: "write", create: true, exclusive: true }, mode: 0o600 });
    expect(statSync(g.path).mode & 0o777).toBe(0o600);
  });
});

describe("bad input fails before anything reaches the kernel", () => {
  test("positions, lengths and buffers", async () => {
    await using f = await openFileDma(path(), { flags: "w+" });
    const good = allocateAlignedBuffer(8192);
    const before = submitted();
    const bad: [() => unknown, new (...a: never[]) => Error, RegExp][] = [
      [() => f.dmaWrite(-4096, good), InvalidArgumentError, /position must be an integer >= 0/],
      [() => f.dmaWrite(100, good), InvalidArgumentError, /position 100 is not a multiple/],
      [() => f.dmaWrite(1.5, good), InvalidArgumentError, /position/],
      [() => f.dmaWrite(Number.NaN, good), InvalidArgumentError, /position/],
      [() => f.dmaReadInto(0, good, { length: 100 }), InvalidArgumentError, /length 100 is not a multiple/],
      // Read positions have an alignment of their own (stx_dio_read_offset_align), checked by
      // every read entry point; so do readv and writev.
      [() => f.dmaReadInto(100, good), InvalidArgumentError, /position 100 is not a multiple/],
      [() => f.dmaRead(100, 4096), InvalidArgumentError, /position 100 is not a multiple/],
      [() => f.readv(100, [good]), InvalidArgumentError, /position 100 is not a multiple/],
      [() => f.writev(100, [good]), InvalidArgumentError, /position 100 is not a multiple/],
      [() => f.dmaReadInto(0, good, { length: 0 }), InvalidArgumentError, /length must be/],
      [() => f.dmaReadInto(0, good, { bufferOffset: 8192 }), InvalidArgumentError, /bufferOffset/],
      [() => f.dmaReadInto(0, good, { bufferOffset: 4096, length: 8192 }), InvalidArgumentError, /exceeds/],
      [() => f.dmaWrite(0, new Uint8Array(4096) as never), InvalidArgumentError, /NativeBuffer/],
      [() => f.dmaWrite(0, good, { signal: "x" as never }), InvalidArgumentError, /AbortSignal/],
      [() => f.readv(0, []), InvalidArgumentError, /1\.\.64/],
      [() => f.writev(4096, [good, new Uint8Array(1) as never]), InvalidArgumentError, /buffers\[1\]/],
      [() => f.truncate(-1), InvalidArgumentError, /length/],
      [() => f.allocate(0, 4096, { keepSize: "no" as never }), InvalidArgumentError, /keepSize must be a boolean/],
    ];
    for (const [call, type, message] of bad) {
      let err: unknown;
      try {
        await call();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(type);
      expect((err as Error).message).toMatch(message);
    }
    const unaligned = await f.dmaRead(0, 100).catch((e: unknown) => e);
    expect(unaligned).toBeInstanceOf(InvalidArgumentError);
    expect(await f.dmaRead(-512, 4096).catch((e: unknown) => e)).toBeInstanceOf(InvalidArgumentError);
    // A buffer from a pool whose alignment is too small for DMA ("the wrong pool").
    if (f.memoryDmaAlignment > 64) {
      const pool = new BufferPool({ bufferSize: 4096 + 64, count: 2, alignment: 64 });
      const x = pool.acquire();
      const y = pool.acquire(); // the second one sits at 4160: not DMA-aligned
      await expect(f.dmaWrite(0, y, { length: 4096 })).rejects.toThrow(/memory DMA alignment/);
      x.release();
      y.release();
      pool.close();
    } else {
      await expect(f.dmaWrite(0, good, { bufferOffset: 1, length: 4096 })).rejects.toThrow(/memory DMA alignment/);
    }
    // A released buffer.
    const gone = allocateAlignedBuffer(4096);
    gone.release();
    const e = await f.dmaWrite(0, gone).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(ClosedError);
    expect((e as ClosedError).code).toBe("ERR_BUFFER_RELEASED");
    expect(submitted()).toBe(before);
    expect(reactor().counters().inFlight).toBe(0);
    good.release();
  });

  test("writing a read-only file and reading a write-only one: EBADF without a system call", async () => {
    const p = path();
    writeFileSync(p, new Uint8Array(8192));
    await using ro = await openFileDma(p, { flags: "r" });
    await using wo = await openFileDma(p, { flags: { access: "write" } });
    const b = allocateAlignedBuffer(4096);
    const before = submitted();
    for (const call of [() => ro.dmaWrite(0, b), () => ro.writev(0, [b]), () => wo.dmaReadInto(0, b)]) {
      const err = await call().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SystemError);
      expect((err as SystemError).code).toBe("EBADF");
      expect((err as SystemError).message).toContain("nothing was submitted");
    }
    for (const p2 of [ro.truncate(0), ro.allocate(0, 4096), ro.discard(0, 4096), wo.dmaRead(0, 4096)]) {
      expect(((await p2.catch((e: unknown) => e)) as SystemError).code).toBe("EBADF");
    }
    expect(submitted()).toBe(before);
    b.release();
  });

  test("a closed file throws ClosedError for every call", async () => {
    const f = await openFileDma(path(), { flags: "w+" });
    await f.close();
    const b = allocateAlignedBuffer(4096);
    const before = submitted();
    for (const p of [f.dmaWrite(0, b), f.dmaReadInto(0, b), f.readv(0, [b]), f.dmaRead(0, 4096), f.size(), f.stat(), f.flush(), f.truncate(0), f.allocate(0, 1), f.discard(0, 1)]) {
      const e = await p.catch((x: unknown) => x);
      expect(e).toBeInstanceOf(ClosedError);
      expect((e as ClosedError).code).toBe("ERR_FILE_CLOSED");
    }
    expect(submitted()).toBe(before);
    b.release();
  });

  test("bad open arguments", async () => {
    const cases: [Promise<unknown>, RegExp][] = [
      [openFileDma(""), /non-empty string/],
      [openFileDma(`${dir}/a\0b`), /NUL/],
      [openFileDma(`${dir}/${"x".repeat(5000)}`), /PATH_MAX/],
      [openFileDma(path(), { flags: "a" as never }), /flags must be one of/],
      [openFileDma(path(), { flags: { access: "all" } as never }), /access/],
      [openFileDma(path(), { flags: { access: "read", truncate: true } }), /truncate needs write/],
      [openFileDma(path(), { flags: "w", mode: 0o10000 }), /mode/],
      [openFileDma(path(), { signal: {} as never }), /AbortSignal/],
      [openFileDma(42 as never), /non-empty string/],
    ];
    for (const [p, message] of cases) {
      const e = await p.catch((x: unknown) => x);
      expect(e).toBeInstanceOf(InvalidArgumentError);
      expect((e as Error).message).toMatch(message);
    }
    expect(() => dmaBufferPool({ bufferSize: 1000, count: 1 })).toThrow(InvalidArgumentError);
  });
});

describe("concurrency on ext4", () => {
  test("10,000 concurrent 4 KiB writes, bounded by a semaphore, each read back identical", async () => {
    const n = 10_000;
    const depth = 64;
    await using f = await openFileDma(path("many"), { flags: "w+" });
    const sem = new Semaphore(depth);
    const pool = dmaBufferPool({ bufferSize: 4096, count: depth });
    const expected = new Uint8Array(4096);
    let maxInFlight = 0;
    const writes = Array.from({ length: n }, async (_, i) => {
      await sem.wait();
      const b = pool.acquire(); // the semaphore guarantees one is free
      try {
        pattern(b.bytes, i);
        b.bytes[0] = i & 0xff;
        b.bytes[1] = i >> 8;
        const p = f.dmaWrite(i * 4096, b);
        maxInFlight = Math.max(maxInFlight, depth - sem.available);
        expect(await p).toBe(4096);
      } finally {
        b.release();
        sem.signal();
      }
    });
    await Promise.all(writes);
    expect(maxInFlight).toBe(depth);
    expect(await f.size()).toBe(n * 4096);
    // Read back with the same bound; every block is the one written there.
    const reads = Array.from({ length: n }, async (_, i) => {
      await sem.wait();
      try {
        const b = await f.dmaRead(i * 4096, 4096);
        pattern(expected, i);
        expected[0] = i & 0xff;
        expected[1] = i >> 8;
        const ok = same(b.bytes, expected);
        b.release();
        return ok;
      } finally {
        sem.signal();
      }
    });
    const ok = await Promise.all(reads);
    expect(ok.filter((x) => !x).length).toBe(0);
    pool.close();
    await settleLoop();
    expect(reactor().counters().inFlight).toBe(0);
  });

  test("32 MiB written by 16 concurrent writers while fdatasync runs", async () => {
    const writers = 16;
    const chunk = 128 * 1024;
    const perWriter = (32 << 20) / writers;
    const p = path("32m");
    await using f = await openFileDma(p, { flags: "w+" });
    await f.allocate(0, 32 << 20, { keepSize: false });
    let syncing = true;
    let syncs = 0;
    const syncer = (async () => {
      while (syncing) {
        await f.flush();
        syncs++;
      }
    })();
    await Promise.all(
      Array.from({ length: writers }, async (_, w) => {
        const b = allocateAlignedBuffer(chunk);
        try {
          for (let off = 0; off < perWriter; off += chunk) {
            const pos = w * perWriter + off;
            pattern(b.bytes, pos / chunk);
            expect(await f.dmaWrite(pos, b)).toBe(chunk);
          }
        } finally {
          b.release();
        }
      }),
    );
    syncing = false;
    await syncer;
    await f.flush();
    expect(syncs).toBeGreaterThan(1);
    const disk = readFileSync(p);
    expect(disk.length).toBe(32 << 20);
    const want = new Uint8Array(chunk);
    let bad = 0;
    for (let pos = 0; pos < disk.length; pos += chunk) {
      pattern(want, pos / chunk);
      if (!same(disk.subarray(pos, pos + chunk), want)) bad++;
    }
    expect(bad).toBe(0);
  });
});

describe("short writes", () => {
  const hasPrlimit = Bun.spawnSync(["sh", "-c", "command -v prlimit"]).exitCode === 0;
  test.skipIf(!hasPrlimit)("a write that comes back short is continued; what cannot be written fails with a typed error", () => {
    // Under a 512 KiB file-size limit the kernel writes 512 KiB of a 1 MiB write and stops.
    const p = path("short");
    const r = Bun.spawnSync(["prlimit", "--fsize=524288", process.execPath, `${import.meta.dir}/fixtures/short-write.ts`, p]);
    expect(r.exitCode).toBe(0);
    // Without the continuation dmaWrite would have resolved with 524288; it wrote that much,
    // continued, and the rest failed with EFBIG.
    expect(JSON.parse(r.stdout.toString())).toEqual({ code: "EFBIG" });
    expect(statSync(p).size).toBe(524288);
  });
});

describe("cancellation", () => {
  test("an aborted signal rejects before submitting; aborting queued and in-flight reads leaks no slot", async () => {
    const p = path("cancel");
    writeFileSync(p, new Uint8Array(4 << 20));
    await using f = await openFileDma(p);
    const b = allocateAlignedBuffer(4096);
    const before = submitted();
    const pre = new AbortController();
    pre.abort(new Error("no"));
    const e0 = await f.dmaReadInto(0, b, { signal: pre.signal }).catch((e: unknown) => e);
    expect(e0).toBeInstanceOf(AbortError);
    expect(submitted()).toBe(before);
    b.release();

    // A small in-flight limit makes most requests wait in the I/O scheduler.
    await configureIoScheduler({ maxInFlight: 4 });
    try {
      const pool = dmaBufferPool({ bufferSize: 4096, count: 256 });
      const ac = new AbortController();
      const bufs = Array.from({ length: 256 }, () => pool.acquire());
      const reads = bufs.map((buf, i) => f.dmaReadInto((i % 1024) * 4096, buf, { signal: ac.signal }));
      for (const buf of bufs) buf.release(); // release while in flight: recycled after the kernel finishes
      expect(pool.available).toBe(0);
      const q = ioScheduler().queueFor(f.deviceMajor, f.deviceMinor);
      expect(q.stats().queued).toBeGreaterThan(200);
      await reads[3]; // a few complete
      ac.abort(new Error("stop"));
      const results = await Promise.allSettled(reads);
      const aborted = results.filter((r) => r.status === "rejected" && r.reason instanceof AbortError).length;
      const done = results.filter((r) => r.status === "fulfilled").length;
      expect(aborted + done).toBe(256);
      expect(aborted).toBeGreaterThan(200);
      await settleLoop();
      expect(reactor().counters().inFlight).toBe(0);
      expect(q.stats().inFlight).toBe(0);
      expect(q.stats().queued).toBe(0);
      expect(pool.available).toBe(256); // every buffer unpinned and back
      pool.close();
    } finally {
      resetIoScheduler();
    }
  });
});

describe("memory-backed file systems", () => {
  // A tmpfs of the test's own where it may mount one (root, as CI runs), else /dev/shm when it
  // is a tmpfs; without either there is no memory-backed file system to open.
  const tmpfs = ((): { dir: string; mounted: boolean } | undefined => {
    if (process.getuid?.() === 0) {
      const dir = mkdtempSync(join(tmpdir(), "shoal-tmpfs-"));
      if (Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=16m", "shoal-test", dir]).exitCode === 0) return { dir, mounted: true };
      rmdirSync(dir);
    }
    const type = Bun.spawnSync(["stat", "-f", "-c", "%T", "/dev/shm"]).stdout.toString().trim();
    return type === "tmpfs" ? { dir: "/dev/shm", mounted: false } : undefined;
  })();
  afterAll(() => {
    if (tmpfs?.mounted) {
      Bun.spawnSync(["umount", tmpfs.dir]);
      rmdirSync(tmpfs.dir);
    }
  });
  // Skipped only where neither exists (not root, and /dev/shm missing or not a tmpfs).
  test.skipIf(tmpfs === undefined)("tmpfs accepts O_DIRECT but the file says dmaIsReal === false, with a warning", async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error & { code?: string }) => warnings.push(`${w.code}: ${w.message}`);
    process.on("warning", onWarning);
    const p = `${tmpfs!.dir}/shoal-dma-test-${process.pid}`;
    try {
      await using f = await openFileDma(p, { flags: "w+" });
      expect(f.fileSystem).toBe("tmpfs");
      expect(f.dmaIsReal).toBe(false);
      const b = allocateAlignedBuffer(4096);
      b.bytes.fill(9);
      expect(await f.dmaWrite(0, b)).toBe(4096);
      b.release();
      await sleep(1);
      expect(warnings.some((w) => w.startsWith("SHOAL_DMA_NOT_REAL") && w.includes("tmpfs"))).toBe(true);
    } finally {
      process.off("warning", onWarning);
      Bun.spawnSync(["rm", "-f", p]);
    }
  });
});
