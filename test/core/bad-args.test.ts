/**
 * Hostile arguments across the public API (a review's sweep, kept): every one is a typed error
 * with a code before anything reaches the kernel, and none leaves state behind (a pending read,
 * an armed timer, a buffer submitted after its release). Large NativeBuffers (2 GiB and more)
 * are moved in full by connections, readv and writev.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { closeSync, openSync, writeSync } from "node:fs";
import {
  BufferPool,
  ClosedError,
  InvalidArgumentError,
  allocateAlignedBuffer,
  armedTimers,
  reactor,
} from "../../src/index.ts";
import { connect, listen, parseAddress } from "../../src/net/index.ts";
import { FileInputStream, dmaBufferPool, mkdir, openFileDma } from "../../src/fs/index.ts";
import { ext4Scratch } from "../fs/fixtures/ext4.ts";

const scratch = ext4Scratch("badargs");
afterAll(() => scratch.cleanup());
let seq = 0;
const path = (name: string) => `${scratch.dir}/${name}-${++seq}`;

/** The error a call throws or rejects with (undefined if it succeeds). */
async function failure(fn: () => unknown): Promise<unknown> {
  try {
    await fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

describe("symbols, bigints and wrong types are InvalidArgumentError (their messages used to throw a TypeError)", () => {
  test("core, fs and net", async () => {
    const S = Symbol("s");
    const fd = openSync(path("plain"), "w+");
    const b = allocateAlignedBuffer(4096);
    const f = await openFileDma(path("dma"), { flags: "w+" });
    const l = listen("127.0.0.1:0");
    const accepted = l.accept();
    const c = await connect(l.localAddress);
    const s = await accepted;
    const cases: [string, () => unknown][] = [
      ["allocateAlignedBuffer(Symbol)", () => allocateAlignedBuffer(S as never)],
      ["BufferPool bufferSize Symbol", () => new BufferPool({ bufferSize: S as never, count: 1 })],
      ["read(Symbol fd)", () => reactor().read(S as never, b)],
      ["read bufferOffset 10n", () => reactor().read(fd, b, { bufferOffset: 10n as never })],
      ["read bufferOffset with a throwing valueOf", () => reactor().read(fd, b, { bufferOffset: { valueOf: () => { throw new Error("no"); } } as never })],
      ["read options not an object", () => reactor().read(fd, b, 5 as never)],
      ["timeout(Symbol)", () => reactor().timeout(S as never)],
      ["poll(fd, Symbol)", () => reactor().poll(fd, S as never)],
      ["truncate(Symbol)", () => f.truncate(S as never)],
      ["dmaReadInto bufferOffset Symbol", () => f.dmaReadInto(0, b, { bufferOffset: S as never })],
      ["allocate(Symbol)", () => f.allocate(S as never, 4096)],
      ["openFileDma mode Symbol", () => openFileDma(path("sym"), { flags: "w", mode: S as never })],
      ["dmaBufferPool bufferSize Symbol", () => dmaBufferPool({ bufferSize: S as never, count: 1 })],
      ["FileInputStream offset Symbol", () => new FileInputStream(f, { offset: S as never, closeFile: false })],
      ["mkdir mode Symbol", () => mkdir(path("dir"), { mode: S as never })],
      ["write(bytes, Symbol)", () => c.output.write(new Uint8Array(4), S as never)],
      ["readExactly(Symbol)", () => c.input.readExactly(S as never)],
      ["parseAddress host 5", () => parseAddress({ host: 5 as never, port: 1 })],
      ["connect(undefined)", () => connect(undefined as never)],
      ["accept signal {}", () => l.accept({ signal: {} as never })],
      ["setKeepAlive('false')", () => c.setKeepAlive("false" as never)],
      ["setNoDelay(1)", () => c.setNoDelay(1 as never)],
    ];
    try {
      for (const [name, fn] of cases) {
        const e = await failure(fn);
        if (!(e instanceof InvalidArgumentError)) console.log(name, e);
        expect(e).toBeInstanceOf(InvalidArgumentError);
      }
    } finally {
      closeSync(fd);
      b.release();
      await f.close();
      c.reset();
      s.reset();
      await l.close();
    }
  });
});

describe("a bad signal changes nothing", () => {
  test("a read with a signal that is not an AbortSignal rejects, and the input still works", async () => {
    const l = listen("127.0.0.1:0");
    const accepted = l.accept();
    const c = await connect(l.localAddress);
    const s = await accepted;
    for (const bad of [{}, 5, "x", null]) {
      expect(await failure(() => c.input.readExactly(3, { signal: bad as never }))).toBeInstanceOf(InvalidArgumentError);
      expect(await failure(() => c.input.read({ signal: bad as never }))).toBeInstanceOf(InvalidArgumentError);
    }
    // It used to stay "pending": every later read failed, and reset() threw.
    const reading = c.input.readExactly(3);
    await s.output.write("abc");
    expect(new TextDecoder().decode((await reading)!)).toBe("abc");
    c.reset();
    expect(c.closed).toBe(true);
    s.reset();
    await l.close();
  });

  test("connect with a bad signal and a timeout arms nothing", async () => {
    const before = armedTimers();
    for (const bad of [{}, 5, null]) {
      expect(await failure(() => connect("127.0.0.1:1", { timeoutMs: 600_000, signal: bad as never }))).toBeInstanceOf(InvalidArgumentError);
    }
    expect(armedTimers()).toBe(before);
  });
});

describe("buffers released before use are refused", () => {
  test("an option getter that releases the buffer: ClosedError, nothing read into its next owner", async () => {
    const fd = openSync(path("getter"), "w+");
    writeSync(fd, new Uint8Array(4096).fill(0x41));
    const pool = new BufferPool({ bufferSize: 4096, count: 1, alignment: 4096 });
    const mine = pool.acquire();
    let other: ReturnType<typeof pool.acquire> | undefined;
    const e = await failure(() =>
      reactor().read(fd, mine, {
        get offset() {
          mine.release();
          other = pool.acquire();
          other.bytes.fill(0);
          return 0;
        },
      }),
    );
    expect(e).toBeInstanceOf(ClosedError);
    await Bun.sleep(10);
    expect(other!.bytes[0]).toBe(0);
    closeSync(fd);
  });

  test("DmaFile.readv/writev waiting for an iovec array: a buffer released meanwhile is refused", async () => {
    const f = await openFileDma(path("iov"), { flags: "w+" });
    const src = allocateAlignedBuffer(4096);
    src.bytes.fill(0x41);
    await f.dmaWrite(0, src);
    const scratchBuf = allocateAlignedBuffer(4096);
    // 256 requests hold every iovec array; the next one waits for one.
    const busy: Promise<number>[] = [];
    for (let i = 0; i < 256; i++) busy.push(f.readv(0, [scratchBuf]));
    const pool = new BufferPool({ bufferSize: 4096, count: 1, alignment: 4096 });
    const mine = pool.acquire();
    const waiting = f.readv(0, [mine]);
    mine.release();
    const other = pool.acquire();
    other.bytes.fill(0);
    expect(await failure(() => waiting)).toBeInstanceOf(ClosedError);
    await Promise.all(busy);
    expect(other.bytes[0]).toBe(0);
    expect(reactor().counters().inFlight).toBe(0);
    await f.close();
  });
});

describe("NativeBuffers of 2 GiB and more", () => {
  test("a connection sends a 2 GiB + 4 KiB buffer in full (its length went negative: EINVAL; 4 GiB wrapped to 0 and spun)", async () => {
    const size = 2 ** 31 + 4096;
    const big = allocateAlignedBuffer(size); // untouched pages: the kernel reads zero pages
    const l = listen("127.0.0.1:0");
    const accepted = l.accept();
    const c = await connect(l.localAddress);
    const s = await accepted;
    let received = 0;
    const reader = (async () => {
      for (;;) {
        const chunk = await s.input.read();
        if (chunk === null) return;
        received += chunk.length;
      }
    })();
    await c.output.write(big);
    await c.output.flush();
    await c.close();
    await reader;
    expect(received).toBe(size);
    big.release();
    await s.close();
    await l.close();
  }, 60_000);

  test("readv into a 4 GiB buffer reads the file (it moved 0 bytes)", async () => {
    const p = path("readv4g");
    const fd = openSync(p, "w+");
    writeSync(fd, new Uint8Array(8192).fill(0x41));
    const big = allocateAlignedBuffer(2 ** 32);
    expect(await reactor().readv(fd, [big], { offset: 0 })).toBe(8192);
    expect(big.bytes[8191]).toBe(0x41);
    big.release();
    closeSync(fd);
  });
});
