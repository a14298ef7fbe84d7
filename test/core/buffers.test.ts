/**
 * Native buffers: pools (acquire, release, exhaustion, FIFO waiters, abort), alignment, misuse
 * (double release, stale handles, closing with buffers out), poisoning, and standalone aligned
 * buffers.
 */
import { readFileSync } from "node:fs";
import { afterEach, describe, expect, test } from "bun:test";
import {
  AbortError,
  BufferCache,
  BufferPool,
  ClosedError,
  InvalidArgumentError,
  NativeBuffer,
  POISON_BYTE,
  PoolExhaustedError,
  allocateAlignedBuffer,
  foreignView,
  releaseForeignView,
  setBufferPoisoning,
} from "../../src/index.ts";
import { errorOf, quiet, status, thrownBy } from "./fixtures/util.ts";
import { DataViewCache, copyBytes, dataViewOf } from "../../src/core/bytes.ts";


// Every pool a test makes is closed after it (its buffers released first).
const pools: { pool: BufferPool; held: Set<NativeBuffer> }[] = [];

function newPool(bufferSize: number, count: number, alignment?: number) {
  const pool = new BufferPool({ bufferSize, count, alignment });
  const entry = { pool, held: new Set<NativeBuffer>() };
  pools.push(entry);
  return pool;
}

afterEach(() => {
  setBufferPoisoning(false);
  for (const { pool } of pools.splice(0)) {
    try {
      pool.close();
    } catch {
      // A failed test left buffers out; the mapping stays (a test process is short-lived).
    }
  }
});

describe("BufferPool", () => {
  test("acquire hands out distinct buffers until exhausted, then throws PoolExhaustedError", () => {
    const pool = newPool(100, 3);
    expect(pool.available).toBe(3);
    const a = pool.acquire();
    const b = pool.acquire();
    const c = pool.acquire();
    expect(new Set([a.address, b.address, c.address]).size).toBe(3);
    for (const x of [a, b, c]) {
      expect(x).toBeInstanceOf(NativeBuffer);
      expect(x.length).toBe(100);
      expect(x.bytes.length).toBe(100);
      expect(pool.owns(x.address, x.length)).toBe(true);
    }
    expect(pool.available).toBe(0);
    const err = thrownBy(() => pool.acquire());
    expect(err).toBeInstanceOf(PoolExhaustedError);
    expect(err.code).toBe("ERR_POOL_EXHAUSTED");
    expect(err.message).toContain("3 x 100");
    expect(pool.tryAcquire()).toBeUndefined();
    b.release();
    expect(pool.available).toBe(1);
    const again = pool.acquire();
    expect(again.address).toBe(b.address);
    a.release();
    c.release();
    again.release();
    expect(pool.available).toBe(3);
  });

  test("buffers do not overlap and writes through one view never show in another", () => {
    const pool = newPool(33, 8);
    const bufs = Array.from({ length: 8 }, () => pool.acquire());
    bufs.forEach((b, i) => b.bytes.fill(i + 1));
    bufs.forEach((b, i) => expect(b.bytes.every((v) => v === i + 1)).toBe(true));
    const sorted = bufs.map((b) => b.address).sort((x, y) => x - y);
    for (let i = 1; i < sorted.length; i++) expect(sorted[i]! - sorted[i - 1]!).toBeGreaterThanOrEqual(33);
    for (const b of bufs) b.release();
  });

  test("every buffer's address is aligned as asked (default 64, up to 4096)", () => {
    for (const [size, alignment] of [
      [100, undefined],
      [100, 256],
      [1, 512],
      [5000, 4096],
      [64, 64],
      [3, 1],
    ] as [number, number | undefined][]) {
      const align = alignment ?? 64;
      const pool = newPool(size, 5, alignment);
      expect(pool.address % 4096).toBe(0);
      const bufs = Array.from({ length: 5 }, () => pool.acquire());
      for (const b of bufs) expect({ size, align, rem: b.address % align }).toEqual({ size, align, rem: 0 });
      expect(pool.stride % align).toBe(0);
      expect(pool.stride).toBeGreaterThanOrEqual(size);
      for (const b of bufs) b.release();
    }
  });

  test("more than one view can hold (4 GiB) is refused before anything is mapped", () => {
    // The mapping used to be made first and leaked when the view could not be built.
    expect(thrownBy(() => allocateAlignedBuffer(2 ** 32 + 4096))).toBeInstanceOf(InvalidArgumentError);
    expect(thrownBy(() => new BufferPool({ bufferSize: 1 << 20, count: 4097 }))).toBeInstanceOf(InvalidArgumentError);
  });

  test("missing or malformed options throw InvalidArgumentError, not TypeError", async () => {
    expect(thrownBy(() => new BufferPool(undefined as never))).toBeInstanceOf(InvalidArgumentError);
    expect(thrownBy(() => allocateAlignedBuffer(10, 4096, null as never))).toBeInstanceOf(InvalidArgumentError);
    const pool = new BufferPool({ bufferSize: 16, count: 1 });
    expect(await errorOf(pool.acquireEventually({ signal: 1 as never }))).toBeInstanceOf(InvalidArgumentError);
    pool.close();
  });

  test("`using` closes a pool at the end of its scope", () => {
    let kept: Uint8Array;
    {
      using pool = new BufferPool({ bufferSize: 64, count: 2 });
      const b = pool.acquire();
      kept = b.bytes;
      b.release();
    }
    expect(kept.length).toBe(0); // unmapped (and detached) by the dispose
  });

  test("pool options are validated", () => {
    for (const options of [
      { bufferSize: 0, count: 1 },
      { bufferSize: -1, count: 1 },
      { bufferSize: 1.5, count: 1 },
      { bufferSize: 16, count: 0 },
      { bufferSize: 16, count: 2, alignment: 3 },
      { bufferSize: 16, count: 2, alignment: 8192 },
      { bufferSize: 16, count: 2, alignment: 0 },
    ]) {
      const err = thrownBy(() => new BufferPool(options));
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect(err.code).toBe("ERR_INVALID_ARG");
    }
  });

  test("acquireEventually resolves at once when a buffer is free, else waits in FIFO order", async () => {
    const pool = newPool(16, 1);
    const first = await pool.acquireEventually();
    const order: number[] = [];
    const waiters = [0, 1, 2].map((i) =>
      pool.acquireEventually().then((b) => {
        order.push(i);
        return b;
      }),
    );
    await Promise.resolve();
    expect(waiters.map(status)).toEqual(["pending", "pending", "pending"]);
    first.release();
    const w0 = await waiters[0]!;
    expect(order).toEqual([0]);
    expect(w0.address).toBe(first.address);
    // A free buffer does not jump the queue: tryAcquire sees none while others wait.
    expect(pool.tryAcquire()).toBeUndefined();
    w0.release();
    const w1 = await waiters[1]!;
    w1.release();
    const w2 = await waiters[2]!;
    expect(order).toEqual([0, 1, 2]);
    w2.release();
    expect(pool.available).toBe(1);
  });

  test("an aborted waiter rejects with AbortError and leaves the queue; the next waiter is served", async () => {
    const pool = newPool(16, 1);
    const held = pool.acquire();
    const ac = new AbortController();
    const aborted = quiet(pool.acquireEventually({ signal: ac.signal }));
    const next = pool.acquireEventually();
    const reason = new Error("no longer needed");
    ac.abort(reason);
    const err = await errorOf(aborted);
    expect(err).toBeInstanceOf(AbortError);
    expect(err.code).toBe("ABORT_ERR");
    expect(err.cause).toBe(reason);
    held.release();
    const got = await next;
    expect(got.address).toBe(held.address);
    got.release();
    expect(pool.available).toBe(1);

    // An aborted signal rejects even though a buffer is free, and takes nothing.
    const pre = await errorOf(pool.acquireEventually({ signal: AbortSignal.abort() }));
    expect(pre).toBeInstanceOf(AbortError);
    expect(pool.available).toBe(1);
    // Aborting after the buffer was handed over changes nothing.
    const late = new AbortController();
    const b = await pool.acquireEventually({ signal: late.signal });
    late.abort();
    expect(b.isReleased).toBe(false);
    b.release();
  });

  test("releasing twice throws ClosedError (ERR_BUFFER_RELEASED)", () => {
    const pool = newPool(16, 2);
    const b = pool.acquire();
    b.release();
    expect(b.isReleased).toBe(true);
    const err = thrownBy(() => b.release());
    expect(err).toBeInstanceOf(ClosedError);
    expect(err.code).toBe("ERR_BUFFER_RELEASED");
    expect(pool.available).toBe(2);
    expect(() => b.check()).toThrow(ClosedError);
  });

  test("a stale handle kept after release cannot release the buffer's new owner", () => {
    const pool = newPool(16, 1);
    const stale = pool.acquire();
    stale.release();
    const owner = pool.acquire();
    expect(owner.address).toBe(stale.address);
    expect(owner).not.toBe(stale); // a fresh handle each time
    expect(() => stale.release()).toThrow(ClosedError);
    expect(owner.isReleased).toBe(false);
    expect(pool.available).toBe(0);
    expect(pool.tryAcquire()).toBeUndefined();
    // Disposing a stale handle is a no-op too.
    stale[Symbol.dispose]();
    expect(pool.available).toBe(0);
    owner.release();
    expect(pool.available).toBe(1);
  });

  test("a buffer handed to a waiter is a new handle: the releaser's stale handle cannot free it", async () => {
    const pool = newPool(16, 1);
    const first = pool.acquire();
    const waiter = pool.acquireEventually();
    first.release();
    const second = await waiter;
    expect(second).not.toBe(first);
    expect(() => first.release()).toThrow(ClosedError);
    expect(second.isReleased).toBe(false);
    second.release();
  });

  test("`using` releases a buffer at the end of its scope", () => {
    const pool = newPool(16, 1);
    {
      using b = pool.acquire();
      expect(pool.available).toBe(0);
      b.bytes[0] = 1;
    }
    expect(pool.available).toBe(1);
  });

  test("with poisoning on, a view kept after release reads 0xDE", () => {
    const pool = newPool(64, 1);
    setBufferPoisoning(true);
    const b = pool.acquire();
    b.bytes.fill(7);
    const kept = b.bytes;
    b.release();
    expect(kept.every((v) => v === POISON_BYTE)).toBe(true);
    expect(POISON_BYTE).toBe(0xde);
    // Off again: released memory keeps its last contents.
    setBufferPoisoning(false);
    const c = pool.acquire();
    c.bytes.fill(9);
    const keptC = c.bytes;
    c.release();
    expect(keptC.every((v) => v === 9)).toBe(true);
  });

  test("close() with buffers still acquired throws; afterwards acquire throws ClosedError", async () => {
    const pool = new BufferPool({ bufferSize: 16, count: 2 });
    const b = pool.acquire();
    const err = thrownBy(() => pool.close());
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.message).toContain("1 buffer(s) still acquired");
    b.release();
    const kept = b.bytes; // a view kept past release and close
    pool.close();
    pool.close(); // idempotent
    // The mapping is gone: the kept view is detached (reads as empty) instead of faulting.
    expect(kept.length).toBe(0);
    expect(kept[0]).toBeUndefined();
    expect(() => pool.acquire()).toThrow(ClosedError);
    expect(pool.tryAcquire()).toBeUndefined();
    expect(await errorOf(pool.acquireEventually())).toBeInstanceOf(ClosedError);
  });

  test("a large pool hands out every buffer exactly once", () => {
    const n = 10_000;
    const pool = newPool(8, n);
    const seen = new Set<number>();
    const bufs: NativeBuffer[] = [];
    for (let i = 0; i < n; i++) {
      const b = pool.acquire();
      seen.add(b.address);
      bufs.push(b);
    }
    expect(seen.size).toBe(n);
    expect(pool.tryAcquire()).toBeUndefined();
    for (const b of bufs) b.release();
    expect(pool.available).toBe(n);
  });
});

describe("allocateAlignedBuffer", () => {
  test("release() unmaps the buffer and detaches its view: a view kept too long reads as empty, never faults", () => {
    const b = allocateAlignedBuffer(8192);
    const kept = b.bytes;
    const sub = kept.subarray(100, 200);
    kept[5] = 7;
    b.release();
    expect(b.isReleased).toBe(true);
    expect(kept.length).toBe(0);
    expect(sub.length).toBe(0);
    expect(kept[5]).toBeUndefined(); // reading unmapped memory here would be a SIGSEGV
    expect(() => kept.set([1], 0)).toThrow(TypeError); // "detached"
    expect(() => copyBytes(new Uint8Array(64), 0, kept, 0, 32)).toThrow(RangeError);
  });

  test("gives zeroed native memory at the asked alignment", () => {
    for (const [size, alignment] of [
      [1, undefined],
      [100, 512],
      [4096, 4096],
      [10_000, 64],
    ] as [number, number | undefined][]) {
      const b = allocateAlignedBuffer(size, alignment);
      try {
        expect(b.length).toBe(size);
        expect(b.bytes.length).toBe(size);
        expect(b.address % (alignment ?? 4096)).toBe(0);
        expect(b.bytes.every((v) => v === 0)).toBe(true);
        b.bytes.fill(1);
      } finally {
        b.release();
      }
      expect(b.isReleased).toBe(true);
      expect(() => b.release()).toThrow(ClosedError);
    }
  });

  test("hugePages: the mapping rounds up to whole 2 MiB pages, is advised for THP, and is unmapped whole", () => {
    const size = 3 * 1024 * 1024 + 5;
    const b = allocateAlignedBuffer(size, 4096, { hugePages: true });
    expect(b.length).toBe(size);
    expect(b.bytes.every((v) => v === 0)).toBe(true);
    b.bytes.fill(7);
    const start = b.address;
    // /proc/self/smaps: the VMA holding the buffer, and whether THP may back it.
    const vma = (): { size: number; eligible: boolean } | undefined => {
      const lines = readFileSync("/proc/self/smaps", "utf8").split("\n");
      for (let i = 0; i < lines.length; i++) {
        const m = /^([0-9a-f]+)-([0-9a-f]+) /.exec(lines[i]!);
        if (!m) continue;
        const lo = parseInt(m[1]!, 16);
        const hi = parseInt(m[2]!, 16);
        if (start < lo || start >= hi) continue;
        let eligible = false;
        for (let j = i + 1; j < lines.length && !/^[0-9a-f]+-/.test(lines[j]!); j++) {
          if (lines[j]!.startsWith("THPeligible:")) eligible = lines[j]!.trim().endsWith("1");
        }
        return { size: hi - lo, eligible };
      }
      return undefined;
    };
    const mode = readFileSync("/sys/kernel/mm/transparent_hugepage/enabled", "utf8");
    const v = vma()!;
    expect(v.size).toBeGreaterThanOrEqual(4 * 1024 * 1024);
    expect(v.eligible).toBe(!mode.includes("[never]"));
    b.release();
    // The whole rounded-up mapping is gone (nothing of it stays mapped at its start).
    const after = vma();
    if (after !== undefined) expect(after.size).not.toBe(v.size);
    expect(() => b.release()).toThrow(ClosedError);
  });

  test("hugePages must be a boolean (\"true\" or 1 silently gave 4 KiB pages)", () => {
    for (const bad of ["true", 1, null]) {
      const err = thrownBy(() => allocateAlignedBuffer(4096, 4096, { hugePages: bad as never }));
      expect({ bad, code: err?.code }).toEqual({ bad, code: "ERR_INVALID_ARG" });
    }
  });

  test("rejects a non-power-of-two or too large alignment and a size of 0", () => {
    for (const [size, alignment] of [
      [0, 64],
      [-1, 64],
      [1.5, 64],
      [Number.NaN, 64],
      [16, 3],
      [16, 0],
      [16, 8192],
      [16, 48],
    ]) {
      const err = thrownBy(() => allocateAlignedBuffer(size!, alignment));
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect(err.code).toBe("ERR_INVALID_ARG");
    }
  });
});

describe("BufferCache", () => {
  test("take(size) gives exactly size bytes, page-aligned; a released mapping is reused by its size class", () => {
    using cache = new BufferCache({ minClassBytes: 65536 });
    const a = cache.take(100_000);
    expect(a.length).toBe(100_000);
    expect(a.bytes.length).toBe(100_000);
    expect(a.address % 4096).toBe(0);
    a.bytes.fill(9);
    const address = a.address;
    expect(cache.outstanding).toBe(1);
    a.release();
    expect(cache.outstanding).toBe(0);
    expect(cache.retained).toBe(131072); // 100,000 bytes take the 128 KiB class
    // Same class (65,537..131,072 bytes): the same mapping, its old bytes still there.
    const b = cache.take(70_000);
    expect(b.address).toBe(address);
    expect(b.length).toBe(70_000);
    expect(b.bytes[69_999]).toBe(9);
    expect(cache.retained).toBe(0);
    // Another class: a mapping of its own.
    const c = cache.take(10);
    expect(c.address).not.toBe(address);
    expect(c.length).toBe(10);
    expect([cache.mapped, cache.reused]).toEqual([2, 1]);
    b.release();
    c.release();
    expect(() => c.release()).toThrow(ClosedError);
    expect(cache.retained).toBe(131072 + 65536);
  });

  test("releases beyond retainBytes unmap (a view kept too long reads as empty); close() unmaps what is kept", () => {
    const cache = new BufferCache({ retainBytes: 65536 });
    const a = cache.take(65536);
    const b = cache.take(4096);
    const c = cache.take(200_000);
    const keptB = b.bytes;
    const keptC = c.bytes;
    a.release(); // kept: 64 KiB, the whole allowance
    b.release(); // over it: unmapped
    expect(cache.retained).toBe(65536);
    expect(keptB.length).toBe(0);
    const keptA = cache.take(1).bytes; // a's mapping again
    expect(cache.retained).toBe(0);
    cache.close();
    // Buffers still out are unmapped when released after close.
    c.release();
    expect(keptC.length).toBe(0);
    expect(keptA.length).toBe(1); // still out: still mapped
    expect(() => cache.take(1)).toThrow(ClosedError);
  });

  test("retainMaxBytes keeps what a burst had out, so the next burst maps nothing; trim() shrinks it back", () => {
    using cache = new BufferCache({ retainBytes: 65536, retainMaxBytes: 16 * 65536 });
    const burst = () => Array.from({ length: 10 }, () => cache.take(60_000));
    for (const b of burst()) b.release();
    expect(cache.mapped).toBe(10);
    expect(cache.retained).toBe(10 * 65536); // the peak out, beyond retainBytes
    for (const b of burst()) b.release();
    expect(cache.mapped).toBe(10); // the second burst reused every mapping
    expect(cache.reused).toBe(10);
    // A second with smaller bursts: the next trim() keeps what they needed.
    expect(cache.trim()).toBe(0); // what the last second's peak needed stays
    const small = Array.from({ length: 3 }, () => cache.take(60_000));
    for (const b of small) b.release();
    expect(cache.trim()).toBe(7 * 65536);
    expect(cache.retained).toBe(3 * 65536);
    expect(cache.trim()).toBe(2 * 65536); // no takes at all since: down to retainBytes
    expect(cache.retained).toBe(65536);
    // Never beyond retainMaxBytes, whatever is out at once.
    const many = Array.from({ length: 20 }, () => cache.take(60_000));
    const views = many.map((b) => b.bytes);
    for (const b of many) b.release();
    expect(cache.retained).toBe(16 * 65536);
    expect(views.filter((v) => v.length === 0).length).toBe(4); // unmapped beyond the limit
  });

  test("without retainMaxBytes nothing beyond retainBytes is kept, and trim() unmaps nothing", () => {
    using cache = new BufferCache({ retainBytes: 2 * 65536 });
    const out = Array.from({ length: 5 }, () => cache.take(65536));
    for (const b of out) b.release();
    expect(cache.retained).toBe(2 * 65536);
    expect(cache.trim()).toBe(0);
    expect(cache.retained).toBe(2 * 65536);
  });

  test("poisoning fills a released buffer before its mapping is kept", () => {
    using cache = new BufferCache();
    setBufferPoisoning(true);
    const a = cache.take(5000);
    a.bytes.fill(1);
    a.release();
    const b = cache.take(5000);
    expect(b.bytes.every((v) => v === POISON_BYTE)).toBe(true);
    b.release();
  });

  test("bad options and sizes are refused with ERR_INVALID_ARG", () => {
    for (const bad of [{ retainBytes: -1 }, { retainBytes: 1.5 }, { retainBytes: 65536, retainMaxBytes: 4096 }, { retainMaxBytes: 2.5e7 + 0.5 }, { minClassBytes: 1000 }, { minClassBytes: 2048 }, { minClassBytes: 3 * 4096 }]) {
      expect(thrownBy(() => new BufferCache(bad))?.code).toBe("ERR_INVALID_ARG");
    }
    expect(thrownBy(() => new BufferCache(null as never))?.code).toBe("ERR_INVALID_ARG");
    using cache = new BufferCache();
    for (const size of [0, -1, 1.5, Number.NaN, 2 ** 32 + 1]) {
      expect(thrownBy(() => cache.take(size))?.code).toBe("ERR_INVALID_ARG");
    }
    expect(cache.outstanding).toBe(0);
  });
});

describe("NativeBuffer.lend", () => {
  test("a lent range is pinned by I/O like any buffer; its home gets it back once, released and unpinned, never poisoned", () => {
    const owner = allocateAlignedBuffer(8192, 4096);
    owner.bytes.fill(7);
    const back: NativeBuffer[] = [];
    const home = { recycle: (b: NativeBuffer) => back.push(b) };
    setBufferPoisoning(true);
    const lent = NativeBuffer.lend(owner.bytes.subarray(100, 300), owner.address + 100, home, 42);
    expect(lent.length).toBe(200);
    expect(lent.index).toBe(42);
    lent.pin();
    lent.release();
    expect(back.length).toBe(0); // the kernel still uses it
    lent.unpin();
    expect(back).toEqual([lent]);
    expect(owner.bytes.every((v) => v === 7)).toBe(true); // not poisoned: the owner's memory
    expect(() => lent.release()).toThrow(ClosedError);
    expect(back.length).toBe(1);
    owner.release();
  });

  test("bad arguments are refused with ERR_INVALID_ARG", () => {
    const home = { recycle: () => {} };
    const bytes = new Uint8Array(8);
    expect(thrownBy(() => NativeBuffer.lend([] as never, 4096, home, 0))?.code).toBe("ERR_INVALID_ARG");
    for (const address of [0, -4096, 1.5, 2 ** 53]) expect(thrownBy(() => NativeBuffer.lend(bytes, address, home, 0))?.code).toBe("ERR_INVALID_ARG");
    for (const bad of [null, {}, { recycle: 1 }]) expect(thrownBy(() => NativeBuffer.lend(bytes, 4096, bad as never, 0))?.code).toBe("ERR_INVALID_ARG");
  });
});

describe("foreignView", () => {
  test("one view of memory another owner keeps: it sees the owner's writes, and lent slices of it send from there", () => {
    const owner = allocateAlignedBuffer(1 << 20, 4096);
    const view = foreignView(owner.address, owner.length);
    expect(view.length).toBe(1 << 20);
    owner.bytes.fill(3, 5000, 6000);
    expect(view[5000]).toBe(3);
    view[7000] = 9; // the same memory both ways
    expect(owner.bytes[7000]).toBe(9);
    const back: number[] = [];
    const slice = NativeBuffer.lend(view.subarray(5000, 6000), owner.address + 5000, { recycle: (b) => back.push(b.index) }, 7);
    expect(slice.isLent).toBe(true);
    expect(slice.bytes.every((v) => v === 3)).toBe(true);
    slice.release();
    expect(back).toEqual([7]);
    releaseForeignView(view);
    owner.release();
  });

  test("bad arguments are refused with ERR_INVALID_ARG", () => {
    for (const address of [0, -4096, 1.5, 2 ** 53, "4096"]) expect(thrownBy(() => foreignView(address as never, 4096))?.code).toBe("ERR_INVALID_ARG");
    for (const length of [0, -1, 1.5, 2 ** 32 + 1]) expect(thrownBy(() => foreignView(4096, length))?.code).toBe("ERR_INVALID_ARG");
    expect(thrownBy(() => releaseForeignView({} as never))?.code).toBe("ERR_INVALID_ARG");
  });
});

describe("copyBytes", () => {
  test("long copies (the native rep movsb path from 512 bytes) in both directions of an overlap", () => {
    const n = 300_000;
    const ref = Uint8Array.from({ length: n }, (_, i) => (i * 131 + (i >> 8)) & 0xff);
    for (const len of [511, 512, 513, 4096, 65_535, 100_000]) {
      for (const shift of [-70_000, -513, -1, 1, 64, 513, 70_000]) {
        const from = 80_000;
        const at = from + shift;
        const a = ref.slice();
        const want = ref.slice();
        want.set(ref.slice(from, from + len), at);
        copyBytes(a, at, a, from, len);
        expect({ len, shift, same: Buffer.compare(a, want) === 0 }).toEqual({ len, shift, same: true });
      }
      const dst = new Uint8Array(len + 3);
      copyBytes(dst, 3, ref, 7, len);
      expect(Buffer.compare(dst.subarray(3), ref.subarray(7, 7 + len))).toBe(0);
    }
  });

  test("copies every length and alignment between views of shared buffers, like set(subarray)", () => {
    const srcBuf = new ArrayBuffer(4096);
    const src = new Uint8Array(srcBuf, 3); // views that do not start at their buffer's start
    for (let i = 0; i < src.length; i++) src[i] = (i * 131 + 7) & 0xff;
    const other = new Uint8Array(1024).map((_, i) => (i * 17) & 0xff);
    const native = allocateAlignedBuffer(4096);
    for (let i = 0; i < native.length; i++) native.bytes[i] = (i * 29 + 3) & 0xff;
    const dst = new Uint8Array(new ArrayBuffer(8192), 5);
    const expected = new Uint8Array(dst.length);
    let at = 0;
    for (let len = 0; len <= 600; len++) {
      const from = (len * 7) % 13;
      const s = len % 4 === 0 ? other : len % 4 === 1 ? src : len % 4 === 2 ? src.subarray(9) : native.bytes.subarray(5);
      copyBytes(dst, at, s, from, len);
      expected.set(s.subarray(from, from + len), at);
      at = (at + len + 1) % (dst.length - 700);
    }
    expect(Buffer.compare(dst, expected)).toBe(0);
    // Into native memory (a send chunk, the item arena), and within one array, overlapping.
    const into = native.bytes.subarray(100);
    copyBytes(into, 7, src, 11, 300);
    expect(Buffer.compare(into.subarray(7, 307), src.subarray(11, 311))).toBe(0);
    const o = Uint8Array.from({ length: 200 }, (_, i) => i);
    copyBytes(o, 10, o, 0, 150);
    expect([...o.subarray(10, 160)]).toEqual(Array.from({ length: 150 }, (_, i) => i));
    copyBytes(o, 0, o, 40, 150);
    expect(o[0]).toBe(30); // o[40] after the first copy held 30
    native.release();
  });

  test(
    "a whole 4 GiB view is copied (its 2^32-byte length reached the native copy as 0: nothing was copied)",
    () => {
      const src = allocateAlignedBuffer(2 ** 32, 4096, { hugePages: true });
      const dst = allocateAlignedBuffer(2 ** 32, 4096, { hugePages: true });
      try {
        src.bytes[0] = 1;
        src.bytes[2 ** 31] = 2;
        src.bytes[2 ** 32 - 1] = 3;
        copyBytes(dst.bytes, 0, src.bytes, 0, 2 ** 32);
        expect([dst.bytes[0], dst.bytes[2 ** 31], dst.bytes[2 ** 32 - 1]]).toEqual([1, 2, 3]);
      } finally {
        src.release();
        dst.release();
      }
    },
    60_000,
  );

  test("a range outside either array throws RangeError and copies nothing", () => {
    const a = new Uint8Array(64).fill(1);
    const b = new Uint8Array(64).fill(2);
    for (const [at, from, len] of [[0, 40, 30], [40, 0, 30], [-1, 0, 20], [0, -1, 20], [0, 0, -1], [0, Number.NaN, 20], [60, 0, 5], [0.5, 0, 4], [0, 0.5, 20], [0, 0, 17.5]]) {
      expect(() => copyBytes(a, at!, b, from!, len!)).toThrow(RangeError);
    }
    expect(a.every((x) => x === 1)).toBe(true);
  });

  test("the DataView cache returns one view per buffer (views of one buffer share it)", () => {
    const src = new Uint8Array(new ArrayBuffer(64), 3);
    const sources = new DataViewCache();
    expect(sources.of(src)).toBe(sources.of(src.subarray(9)));
    expect(sources.of(src).byteLength).toBe(dataViewOf(src).byteLength);
  });
});
