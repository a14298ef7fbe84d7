/**
 * Review of the native boundary: what JS hands to native code (addresses, lengths, descriptors)
 * cannot be bent into a kernel write past a buffer, an munmap of memory in use, or a write into
 * an unrelated file.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { closeSync, openSync, readSync, writeSync } from "node:fs";
import { join } from "node:path";
import { BufferCache, BufferPool, InvalidArgumentError, Reactor, allocateAlignedBuffer, reactor } from "../../src/index.ts";
import { receiveBuffer } from "../../src/smp/handover.ts";
import { runApp, smpArgs } from "../smp/helpers.ts";
import { tempDir } from "./fixtures/posix.ts";
import { thrownBy } from "./fixtures/util.ts";

const dir = tempDir("review22-native");
afterAll(() => dir.remove());

/** Assigns `value` to `obj[key]`; an assignment refused (a getter-only accessor) is fine. */
function tryAssign(obj: object, key: string, value: unknown): void {
  try {
    (obj as Record<string, unknown>)[key] = value;
  } catch {
    // strict-mode TypeError: the property cannot be written, which is the point
  }
}

describe("a NativeBuffer's address, length and home are fixed", () => {
  test("buf.length = n cannot make a read run past the buffer into its neighbour", async () => {
    const pool = new BufferPool({ bufferSize: 4096, count: 2, alignment: 4096 });
    const a = pool.acquire();
    const b = pool.acquire();
    b.bytes.fill(0x11);
    const fd = openSync(join(dir.path, "data"), "w+");
    try {
      writeSync(fd, new Uint8Array(8192).fill(0x41));
      tryAssign(a, "length", 8192);
      expect(a.length).toBe(4096);
      let n = -1;
      try {
        n = await reactor().read(fd, a, { offset: 0, length: 8192 });
      } catch (e) {
        expect((e as { code?: string }).code).toBe("ERR_INVALID_ARG");
      }
      expect(n).toBe(-1);
      // The neighbour kept its bytes (the kernel wrote 8192 bytes from a's address into it).
      expect(b.bytes.every((x) => x === 0x11)).toBe(true);
    } finally {
      closeSync(fd);
      a.release();
      b.release();
      pool.close();
    }
  });

  test("buf.address cannot be moved onto other memory before a read", async () => {
    const pool = new BufferPool({ bufferSize: 4096, count: 2, alignment: 4096 });
    const a = pool.acquire();
    const b = pool.acquire();
    b.bytes.fill(0x22);
    const fd = openSync(join(dir.path, "data2"), "w+");
    try {
      writeSync(fd, new Uint8Array(4096).fill(0x42));
      tryAssign(a, "address", b.address);
      expect(await reactor().read(fd, a, { offset: 0 })).toBe(4096);
      expect(a.bytes[0]).toBe(0x42);
      expect(b.bytes.every((x) => x === 0x22)).toBe(true);
    } finally {
      closeSync(fd);
      a.release();
      b.release();
      pool.close();
    }
  });

  test("buf.index = k cannot put a buffer still in use back on the pool's free list", () => {
    const pool = new BufferPool({ bufferSize: 64, count: 2 });
    const a = pool.acquire();
    const b = pool.acquire();
    tryAssign(a, "index", b.index);
    a.release();
    // The free buffer is a's memory, not b's (b was handed out twice: two owners of one buffer).
    const c = pool.acquire();
    expect(c.address).not.toBe(b.address);
    expect(c.address).toBe(a.address);
    c.release();
    b.release();
    pool.close();
  });

  test("buf.pool = null on a pool's buffer cannot make release() unmap a page inside the pool", () => {
    const pool = new BufferPool({ bufferSize: 4096, count: 2, alignment: 4096 });
    const a = pool.acquire();
    const b = pool.acquire();
    tryAssign(a, "pool", null);
    a.release();
    // a's page is still mapped: writing to it through b's view of the same region would fault.
    b.bytes.fill(1);
    const again = pool.acquire();
    again.bytes.fill(7); // a SIGSEGV if release() had unmapped it
    expect(again.bytes[4095]).toBe(7);
    again.release();
    b.release();
    pool.close();
  });

  test("a BufferCache buffer's size class (index) cannot widen the munmap of its release", () => {
    const cache = new BufferCache({ retainBytes: 0, minClassBytes: 4096 });
    const neighbour = allocateAlignedBuffer(4096 * 64);
    const a = cache.take(4096);
    tryAssign(a, "index", 20); // 4 GiB from a's address: every mapping above it
    tryAssign(a, "mappedLength", 2 ** 32);
    a.release(); // retainBytes 0: unmaps a's own 4 KiB only
    neighbour.bytes.fill(3); // a SIGSEGV if the neighbour (mapped after a) was unmapped too
    expect(neighbour.bytes[neighbour.length - 1]).toBe(3);
    neighbour.release();
    cache.close();
  });
});

describe("Reactor.wake writes only a reactor's eventfd", () => {
  test("a regular file's descriptor is refused and gets nothing (it received the 8-byte counter)", () => {
    const fd = openSync(join(dir.path, "victim"), "w+");
    try {
      const err = thrownBy(() => Reactor.wake(fd));
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect(readSync(fd, new Uint8Array(64), 0, 64, 0)).toBe(0);
    } finally {
      closeSync(fd);
    }
  });

  test("the shard's own reactor is still woken", () => {
    const r = reactor();
    expect(() => Reactor.wake(r.eventfd)).not.toThrow();
  });
});

describe("an empty NativeBuffer handed to another shard", () => {
  test("the receiver gets an empty buffer (bun:ffi refused a 0-byte view: the call failed with a TypeError)", () => {
    const whole = allocateAlignedBuffer(4096);
    const sent: [number, number][] = [];
    const b = receiveBuffer(1, 7, whole.address, 0, (owner, id) => sent.push([owner, id]));
    expect(b.length).toBe(0);
    b.release();
    expect(sent).toEqual([[1, 7]]);
    whole.release();
  });

  test(
    "invokeOn with dmaRead's end-of-file buffer runs, and the buffer goes back to its owner (it stayed lent for good)",
    async () => {
      const run = await runApp("../core/fixtures/review22-native-empty-handover.ts", smpArgs(2), { timeoutMs: 60_000 });
      expect(run.result, run.stderr).toEqual({ outcome: { ok: { shard: 1, length: 0 } }, lent: 0, wholeReleased: true });
    },
    90_000,
  );
});

describe("BufferPool options are read once", () => {
  test("a bufferSize getter that answers differently cannot make buffers overlap their neighbours", () => {
    let reads = 0;
    const options = {
      count: 3,
      alignment: 64,
      get bufferSize() {
        // 64 for the check, then 128 (the views' size), then 64 (the stride): on the old code.
        return reads++ === 1 ? 128 : 64;
      },
    };
    const pool = new BufferPool(options);
    const held = [];
    for (let i = 0; i < 3; i++) {
      try {
        held.push(pool.acquire());
      } catch {
        break; // a view that did not fit the region: not this test's concern
      }
    }
    // No buffer's bytes reach into another's: a read into one must not land in the next.
    for (const a of held) {
      for (const b of held) {
        if (a !== b) expect(a.address + a.length <= b.address || b.address + b.length <= a.address).toBe(true);
      }
    }
    expect(held.length).toBe(3);
    for (const b of held) b.release();
    pool.close();
  });
});
