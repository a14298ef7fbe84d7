/**
 * The DMA layer after a review: an aborted write is not continued after a short write, and
 * option getters that release the caller's buffer cannot make the kernel read into (or write
 * from) memory that belongs to the buffer's next owner.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { statSync, writeFileSync, readFileSync } from "node:fs";
import { BufferPool, ClosedError, InvalidArgumentError, allocateAlignedBuffer, reactor, sleep, type NativeBuffer } from "../../src/index.ts";
import { openFileDma } from "../../src/fs/index.ts";
import { openat, statx, unlinkat } from "../../src/fs/ops.ts";
import { ext4Scratch } from "./fixtures/ext4.ts";

const scratch = ext4Scratch("dma-review");
afterAll(() => scratch.cleanup());
let seq = 0;
const path = (name = "f") => `${scratch.dir}/${name}-${++seq}`;

async function settleLoop(): Promise<void> {
  for (let i = 0; i < 50 && reactor().counters().inFlight > 0; i++) await sleep(2);
}

describe("short writes and abort", () => {
  const hasPrlimit = Bun.spawnSync(["sh", "-c", "command -v prlimit"]).exitCode === 0;
  test.skipIf(!hasPrlimit)("a write aborted before its short completion was delivered rejects with AbortError and issues no continuation", () => {
    const p = path("short-abort");
    const r = Bun.spawnSync(["prlimit", "--fsize=524288", process.execPath, `${import.meta.dir}/fixtures/short-write-abort.ts`, p]);
    if (r.exitCode !== 0) throw new Error(`fixture failed: ${r.stderr.toString()}`);
    // It used to continue the write after the abort (and fail with EFBIG past the limit).
    expect(JSON.parse(r.stdout.toString())).toEqual({ error: "AbortError", code: "ABORT_ERR", inFlight: 0 });
    expect(statSync(p).size).toBe(524288);
  });
});

describe("option getters that release the buffer", () => {
  /** A one-buffer pool: the buffer released by a getter is the next acquire's. */
  function setup(): { pool: BufferPool; mine: NativeBuffer; takeOver: () => NativeBuffer; other: () => NativeBuffer | undefined } {
    const pool = new BufferPool({ bufferSize: 4096, count: 1, alignment: 4096 });
    const mine = pool.acquire();
    let other: NativeBuffer | undefined;
    return {
      pool,
      mine,
      takeOver: () => {
        mine.release();
        other = pool.acquire();
        other.bytes.fill(0);
        return other;
      },
      other: () => other,
    };
  }

  test("dmaReadInto: a length getter that releases the buffer: ClosedError, nothing read into its next owner", async () => {
    const p = path("getter-read");
    writeFileSync(p, new Uint8Array(8192).fill(0x41));
    await using f = await openFileDma(p);
    const s = setup();
    const e = await f.dmaReadInto(0, s.mine, {
      get length() {
        s.takeOver();
        return 4096;
      },
    }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ClosedError);
    await settleLoop();
    expect(s.other()!.bytes[0]).toBe(0);
    expect(s.other()!.bytes[4095]).toBe(0);
    s.other()!.release();
    s.pool.close();
  });

  test("dmaWrite: a signal getter that releases the buffer when read again: the next owner's bytes are not written", async () => {
    const p = path("getter-write");
    await using f = await openFileDma(p, { flags: "w" });
    const s = setup();
    s.mine.bytes.fill(0x41);
    const signal = new AbortController().signal;
    let reads = 0;
    const opts = {
      get signal() {
        if (++reads === 2) s.takeOver().bytes.fill(0x42);
        return signal;
      },
    };
    const r = await f.dmaWrite(0, s.mine, opts).catch((x: unknown) => x);
    await settleLoop();
    // Either refused, or the caller's bytes (0x41) were written: never the next owner's (0x42).
    if (r instanceof Error) expect(r).toBeInstanceOf(ClosedError);
    else expect(r).toBe(4096);
    const data = readFileSync(p);
    expect(data.includes(0x42)).toBe(false);
    if (s.other() !== undefined) s.other()!.release();
    else s.mine.release();
    s.pool.close();
  });

  test("readv: a signal getter that releases a buffer when read again: nothing read into its next owner", async () => {
    const p = path("getter-readv");
    writeFileSync(p, new Uint8Array(8192).fill(0x41));
    await using f = await openFileDma(p);
    const s = setup();
    const signal = new AbortController().signal;
    let reads = 0;
    const opts = {
      get signal() {
        if (++reads === 2) s.takeOver();
        return signal;
      },
    };
    const r = await f.readv(0, [s.mine], opts).catch((x: unknown) => x);
    await settleLoop();
    if (r instanceof Error) expect(r).toBeInstanceOf(ClosedError);
    else expect(r).toBe(4096);
    if (s.other() !== undefined) {
      expect(s.other()!.bytes[0]).toBe(0);
      s.other()!.release();
    } else {
      s.mine.release();
    }
    s.pool.close();
  });

  test("writev: an array element getter that releases an earlier buffer: ClosedError, the next owner's bytes are not written", async () => {
    const p = path("getter-writev");
    await using f = await openFileDma(p, { flags: "w" });
    const s = setup();
    s.mine.bytes.fill(0x41);
    const second = allocateAlignedBuffer(4096);
    second.bytes.fill(0x43);
    const bufs: NativeBuffer[] = [s.mine];
    Object.defineProperty(bufs, 1, {
      enumerable: true,
      get() {
        if (!s.mine.isReleased) s.takeOver().bytes.fill(0x42);
        return second;
      },
    });
    const r = await f.writev(0, bufs).catch((x: unknown) => x);
    await settleLoop();
    expect(r).toBeInstanceOf(ClosedError);
    expect(readFileSync(p).includes(0x42)).toBe(false);
    s.other()!.release();
    second.release();
    s.pool.close();
  });
});

describe("path buffers of refused metadata operations", () => {
  /** Options whose signal is an AbortSignal when checked and something else when read again. */
  function flipping(): { signal: AbortSignal } {
    const signal = new AbortController().signal;
    let reads = 0;
    return {
      get signal() {
        return (++reads === 1 ? signal : 5) as AbortSignal;
      },
    };
  }

  /** `p`, or "hung" if it has not settled after `ms` (a hang detector, not a timing check). */
  function orHang<T>(p: Promise<T>, ms = 2000): Promise<T | "hung"> {
    return Promise.race([p, sleep(ms).then(() => "hung" as const)]);
  }

  test("a statx/openat/unlinkat whose submit is refused gives its path buffer back (70 of them emptied the pool of 64: every later one hung)", async () => {
    const p = path("leak");
    writeFileSync(p, "x");
    // The internal calls do not check their options (their callers do): the reactor refuses this.
    const bad = { signal: 5 as unknown as AbortSignal };
    for (let i = 0; i < 70; i++) {
      for (const call of [() => statx("t", -1, p, 0, bad), () => openat("t", p, 0, 0, bad), () => unlinkat("t", `${p}-none`, 0, bad)]) {
        expect(await orHang((call() as Promise<unknown>).catch((e: unknown) => e))).toBeInstanceOf(InvalidArgumentError);
      }
    }
    const st = await orHang(statx("t", -1, p, 0));
    expect(st === "hung" ? st : st.size).toBe(1);
  });

  test("DmaFile metadata calls read their signal once: a getter that changes it neither fails the call nor leaks a buffer", async () => {
    const p = path("stat-getter");
    writeFileSync(p, new Uint8Array(4096));
    await using f = await openFileDma(p, { flags: "r+" });
    for (let i = 0; i < 70; i++) expect((await f.stat(flipping())).size).toBe(4096);
    await f.flush(flipping());
    const st = await orHang(f.stat());
    expect(st === "hung" ? st : st.size).toBe(4096);
    await using g = await openFileDma(p, flipping());
    expect(g.readable).toBe(true);
  });
});
