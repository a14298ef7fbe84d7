/**
 * The reactor on real file descriptors: every operation goes through io_uring (pipes made with
 * pipe2 into native memory, temp files), and what comes back is checked: bytes moved, results,
 * typed errors, cancellation without leaked slots, pins on buffers, counters.
 */
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { closeSync, openSync, readFileSync, readSync, writeFileSync } from "node:fs";
import { toArrayBuffer } from "bun:ffi";
import { native } from "../../src/core/native.ts";
import { join } from "node:path";
import {
  AbortError,
  BufferPool,
  ClosedError,
  InvalidArgumentError,
  IoOp,
  NativeBuffer,
  PoolExhaustedError,
  Reactor,
  SystemError,
  allocateAlignedBuffer,
  createSchedulingGroup,
  currentSchedulingGroup,
  reactor,
  sleep,
  withSchedulingGroup,
} from "../../src/index.ts";
import { POLLIN, POLLOUT, closeQuietly, isOpen, pipe, tempDir, type PipePair } from "./fixtures/posix.ts";
import { bunTick, errorOf, quiet, status, thrownBy, turnsUntil } from "./fixtures/util.ts";


// Everything a test opens is closed after it, whatever happened.
const pipes: PipePair[] = [];
const fds: number[] = [];
const buffers: NativeBuffer[] = [];
const dir = tempDir("reactor");

function newPipe(): PipePair {
  const p = pipe();
  pipes.push(p);
  return p;
}

function buffer(size: number): NativeBuffer {
  const b = allocateAlignedBuffer(size);
  buffers.push(b);
  return b;
}

function tempFile(name: string, content = ""): { path: string; fd: number } {
  const path = join(dir.path, name);
  writeFileSync(path, content);
  const fd = openSync(path, "r+");
  fds.push(fd);
  return { path, fd };
}

/** Writes `bytes` into a pipe synchronously (test setup, not what is under test). */
function feed(p: PipePair, bytes: number[]): void {
  writeFileSync(p.writeFd, new Uint8Array(bytes));
}

afterEach(async () => {
  // Operations a failed test left in flight complete (EBADF/POLLHUP/ECANCELED) once fds close.
  for (const p of pipes.splice(0)) p.close();
  for (const fd of fds.splice(0)) closeQuietly(fd);
  await turnsUntil(() => reactor().inFlight === 0, 200);
  for (const b of buffers.splice(0)) if (!b.isReleased) b.release();
});

afterAll(() => dir.remove());

describe("operations on real fds", () => {
  test("nop resolves through the kernel and moves the submitted/completed counters", async () => {
    const r = reactor();
    const before = r.counters();
    await Promise.all([r.nop(), r.nop(), r.nop()]);
    const after = r.counters();
    expect(after.completed - before.completed).toBeGreaterThanOrEqual(3);
    expect(after.submitted - before.submitted).toBeGreaterThanOrEqual(3);
    expect(after.turns).toBeGreaterThan(before.turns);
    expect(after.inFlight).toBe(before.inFlight);
  });

  test("write then read move bytes through a pipe, honouring bufferOffset and length", async () => {
    const r = reactor();
    const p = newPipe();
    const out = buffer(16);
    out.bytes.set([9, 9, 1, 2, 3, 4, 5, 9]);
    expect(await r.write(p.writeFd, out, { bufferOffset: 2, length: 5 })).toBe(5);
    const into = buffer(16);
    expect(await r.read(p.readFd, into, { bufferOffset: 4, length: 3 })).toBe(3);
    expect(Array.from(into.bytes.subarray(0, 8))).toEqual([0, 0, 0, 0, 1, 2, 3, 0]);
    expect(await r.read(p.readFd, into)).toBe(2);
    expect(Array.from(into.bytes.subarray(0, 2))).toEqual([4, 5]);
  });

  test("read and write at file offsets; a read at end of file resolves 0", async () => {
    const r = reactor();
    const f = tempFile("rw.bin", "abcdefgh");
    const b = buffer(4);
    b.bytes.set([0x41, 0x42, 0x43, 0x44]); // "ABCD"
    expect(await r.write(f.fd, b, { offset: 2, length: 3 })).toBe(3);
    expect(readFileSync(f.path, "latin1")).toBe("abABCfgh");
    const into = buffer(8);
    expect(await r.read(f.fd, into, { offset: 6 })).toBe(2);
    expect(new TextDecoder().decode(into.bytes.subarray(0, 2))).toBe("gh");
    expect(await r.read(f.fd, into, { offset: 8 })).toBe(0);
  });

  test("writev gathers and readv scatters whole buffers, at an offset and on a pipe", async () => {
    const r = reactor();
    const f = tempFile("vec.bin");
    const parts = [buffer(3), buffer(5), buffer(2)];
    parts[0]!.bytes.set([1, 2, 3]);
    parts[1]!.bytes.set([4, 5, 6, 7, 8]);
    parts[2]!.bytes.set([9, 10]);
    expect(await r.writev(f.fd, parts, { offset: 4 })).toBe(10);
    expect(Array.from(readFileSync(f.path))).toEqual([0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);

    const into = [buffer(6), buffer(4)];
    expect(await r.readv(f.fd, into, { offset: 4 })).toBe(10);
    expect(Array.from(into[0]!.bytes)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(Array.from(into[1]!.bytes)).toEqual([7, 8, 9, 10]);

    const p = newPipe();
    expect(await r.writev(p.writeFd, parts)).toBe(10);
    const one = [buffer(7), buffer(7)];
    expect(await r.readv(p.readFd, one)).toBe(10);
    expect(Array.from(one[0]!.bytes)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(Array.from(one[1]!.bytes.subarray(0, 3))).toEqual([8, 9, 10]);
  });

  test("more concurrent readv/writev than one iovec arena holds all complete with the right data", async () => {
    const r = reactor();
    const f = tempFile("many-vec.bin");
    const n = 150; // the iovec arena holds 64 blocks: this needs three
    const writes: Promise<number>[] = [];
    for (let i = 0; i < n; i++) {
      const a = buffer(2);
      const b = buffer(2);
      a.bytes.set([i & 0xff, 1]);
      b.bytes.set([2, i >> 8]);
      writes.push(r.writev(f.fd, [a, b], { offset: i * 4 }));
    }
    expect(await Promise.all(writes)).toEqual(new Array(n).fill(4));
    const data = readFileSync(f.path);
    for (let i = 0; i < n; i++) expect(Array.from(data.subarray(i * 4, i * 4 + 4))).toEqual([i & 0xff, 1, 2, i >> 8]);
  });

  test("poll resolves with revents: POLLOUT at once, POLLIN only once data arrives", async () => {
    const r = reactor();
    const p = newPipe();
    expect((await r.poll(p.writeFd, POLLOUT)) & POLLOUT).toBe(POLLOUT);
    const readable = r.poll(p.readFd, POLLIN);
    await r.nop();
    await r.nop();
    expect(status(readable)).toBe("pending");
    feed(p, [1]);
    expect((await readable) & POLLIN).toBe(POLLIN);
  });

  test("close through the ring closes the fd; closing an fd that is not open fails with EBADF", async () => {
    const r = reactor();
    const p = pipe(); // closed here, not by afterEach: once closed, its fd number may be reused
    try {
      await r.close(p.readFd);
      expect(isOpen(p.readFd)).toBe(false);
    } finally {
      closeQuietly(p.writeFd);
    }
    // Not p.readFd again: by now another thread may have been given that number.
    const err = await errorOf(r.close(1 << 29));
    expect(err).toBeInstanceOf(SystemError);
    expect(err.code).toBe("EBADF");
    expect(err.op).toBe("close");
  });

  test("timeout resolves after its kernel timeout and arms one kernel timeout", async () => {
    const r = reactor();
    const before = r.counters().timeoutsArmed;
    const t0 = performance.now();
    await r.timeout(3);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(2.9); // a lower bound only
    expect(r.counters().timeoutsArmed).toBeGreaterThan(before);
    expect(() => r.timeout(-1)).toThrow(InvalidArgumentError);
    expect(() => r.timeout(Number.NaN)).toThrow(InvalidArgumentError);
    // Seconds past what the kernel's timespec holds exactly are refused, not sent.
    expect(() => r.timeout(1e300)).toThrow(InvalidArgumentError);
  });

  test("sleeps that I/O ends share one kernel timer: it is armed again only after it fired, not per sleep", async () => {
    const r = reactor();
    const p = newPipe();
    const into = buffer(64);
    const w = new Worker(new URL("./fixtures/pipe-writer.ts", import.meta.url).href);
    try {
      w.postMessage({ fd: p.writeFd, count: 300, gapUs: 300 });
      // Counted from the first byte on: while the Worker starts, every sleep ends at its timer.
      let got = await r.read(p.readFd, into);
      const c0 = r.counters();
      while (got < 300) got += await r.read(p.readFd, into);
      const c1 = r.counters();
      const sleeps = c1.sleeps - c0.sleeps;
      const armed = c1.timeoutsArmed - c0.timeoutsArmed;
      // ~90 ms of bytes 0.3 ms apart: the loop sleeps between most of them, and the 2 ms sleep
      // timer fires (and is armed again) about every 2 ms. Armed per sleep, it would be ~1:1.
      expect(sleeps).toBeGreaterThan(60);
      expect(armed).toBeLessThan(sleeps / 2);
    } finally {
      w.terminate();
    }
  });

  test("submitNow hands queued descriptors to the kernel mid-turn; their completions come with the next turn", async () => {
    const r = reactor();
    const p = newPipe();
    feed(p, [1, 2, 3]);
    const c0 = r.counters();
    const into = buffer(3);
    const read = r.read(p.readFd, into);
    const nops = [r.nop(), r.nop()];
    expect(r.queuedCount).toBe(3);
    r.submitNow();
    r.submitNow(); // nothing queued: no syscall
    const c1 = r.counters();
    expect(r.queuedCount).toBe(0);
    expect(c1.submitted - c0.submitted).toBe(3);
    expect(c1.enters - c0.enters).toBe(1);
    expect(c1.completed).toBe(c0.completed); // nothing reaped yet
    expect(await read).toBe(3);
    expect(Array.from(into.bytes)).toEqual([1, 2, 3]);
    await Promise.all(nops);
  });

  test("Reactor.wake writes the eventfd and the reactor counts the wake-up", async () => {
    const r = reactor();
    const before = r.counters().wakes;
    Reactor.wake(r.eventfd);
    expect(await turnsUntil(() => r.counters().wakes > before)).toBe(true);
  });

  test("Reactor.wake refuses an fd that is not an s32 integer, and writes nothing (bun:ffi wrapped 2^32 + k to k, 1.5 to 1)", () => {
    const p = pipe(true);
    pipes.push(p);
    const cases = [p.writeFd + 2 ** 32, p.writeFd + 0.5, Number.NaN, -1, "3" as unknown as number];
    for (const fd of cases) {
      const err = thrownBy(() => Reactor.wake(fd));
      expect({ fd, code: err.code }).toEqual({ fd, code: "ERR_INVALID_ARG" });
    }
    expect(() => readSync(p.readFd, new Uint8Array(64))).toThrow(/EAGAIN/);
  });
});

describe("kernel errors", () => {
  test("a read on an fd not open for reading rejects with SystemError EBADF naming the op", async () => {
    const r = reactor();
    const p = newPipe();
    const err = await errorOf(r.read(p.writeFd, buffer(8)));
    expect(err).toBeInstanceOf(SystemError);
    expect(err.code).toBe("EBADF");
    expect(err.errno).toBe(9);
    expect(err.op).toBe("read");
    expect(err.message).toContain("read");
    expect(err.message).toContain("EBADF");
  });

  test("operations on a closed fd reject with EBADF (write, readv, poll)", async () => {
    const r = reactor();
    const closedFd = 1 << 29; // far above any open descriptor
    expect(isOpen(closedFd)).toBe(false);
    for (const [op, p] of [
      ["write", r.write(closedFd, buffer(4))],
      ["readv", r.readv(closedFd, [buffer(4)])],
      ["poll", r.poll(closedFd, POLLIN)],
    ] as const) {
      const err = await errorOf(p);
      expect(err).toBeInstanceOf(SystemError);
      expect(err.code).toBe("EBADF");
      expect(err.message).toStartWith(`${op} failed`);
    }
  });
});

describe("bad input is refused before it reaches the kernel", () => {
  test("every invalid argument throws synchronously, queues nothing and takes no slot", () => {
    const r = reactor();
    const b = buffer(16);
    const released = allocateAlignedBuffer(16);
    released.release();
    const inFlight = r.inFlight;
    const queued = r.queued;
    const cases: [string, () => unknown, string][] = [
      ["negative fd", () => r.read(-1, b), "ERR_INVALID_ARG"],
      ["fractional fd", () => r.write(1.5, b), "ERR_INVALID_ARG"],
      ["NaN fd", () => r.poll(Number.NaN, POLLIN), "ERR_INVALID_ARG"],
      ["plain Uint8Array", () => r.read(0, new Uint8Array(16) as unknown as NativeBuffer), "ERR_INVALID_ARG"],
      ["ArrayBuffer", () => r.write(1, new ArrayBuffer(8) as unknown as NativeBuffer), "ERR_INVALID_ARG"],
      ["released buffer (read)", () => r.read(0, released), "ERR_BUFFER_RELEASED"],
      ["released buffer (writev)", () => r.writev(1, [b, released]), "ERR_BUFFER_RELEASED"],
      ["length past the end", () => r.read(0, b, { length: 17 }), "ERR_INVALID_ARG"],
      ["length past the end at bufferOffset", () => r.write(1, b, { bufferOffset: 10, length: 7 }), "ERR_INVALID_ARG"],
      ["bufferOffset past the end", () => r.read(0, b, { bufferOffset: 17 }), "ERR_INVALID_ARG"],
      ["negative bufferOffset", () => r.read(0, b, { bufferOffset: -1 }), "ERR_INVALID_ARG"],
      ["negative length", () => r.read(0, b, { length: -1 }), "ERR_INVALID_ARG"],
      ["negative file offset", () => r.read(0, b, { offset: -2 }), "ERR_INVALID_ARG"],
      ["fractional file offset", () => r.write(1, b, { offset: 0.5 }), "ERR_INVALID_ARG"],
      ["negative vector offset", () => r.readv(0, [b], { offset: -5 }), "ERR_INVALID_ARG"],
      ["65 iovecs", () => r.writev(1, new Array(65).fill(b)), "ERR_INVALID_ARG"],
      ["no iovecs", () => r.readv(0, []), "ERR_INVALID_ARG"],
      ["not an array", () => r.readv(0, b as unknown as NativeBuffer[]), "ERR_INVALID_ARG"],
      ["plain array in a vector", () => r.writev(1, [b, new Uint8Array(4) as unknown as NativeBuffer]), "ERR_INVALID_ARG"],
      ["poll mask 0", () => r.poll(0, 0), "ERR_INVALID_ARG"],
      ["poll mask too wide", () => r.poll(0, 0x10000), "ERR_INVALID_ARG"],
      ["close of a negative fd", () => r.close(-3), "ERR_INVALID_ARG"],
      // Descriptors hold the kernel's s32: 2^32+1 would wrap to fd 1 (stdout).
      ["fd of 2^32 + 1", () => r.write(2 ** 32 + 1, b), "ERR_INVALID_ARG"],
      ["close of fd 2^32 + 2", () => r.close(2 ** 32 + 2), "ERR_INVALID_ARG"],
      ["poll of fd 2^31", () => r.poll(2 ** 31, 1), "ERR_INVALID_ARG"],
      // A signal that is not an AbortSignal used to be found out after the operation was queued.
      ["signal not an AbortSignal (nop)", () => r.nop({ signal: {} as AbortSignal }), "ERR_INVALID_ARG"],
      ["signal not an AbortSignal (read)", () => r.read(0, b, { signal: "x" as unknown as AbortSignal }), "ERR_INVALID_ARG"],
      ["signal not an AbortSignal (writev)", () => r.writev(1, [b], { signal: 1 as unknown as AbortSignal }), "ERR_INVALID_ARG"],
    ];
    for (const [what, call, code] of cases) {
      const err = thrownBy(call);
      expect({ what, code: err.code }).toEqual({ what, code });
      expect(err).toBeInstanceOf(code === "ERR_BUFFER_RELEASED" ? ClosedError : InvalidArgumentError);
      expect(err.message.length).toBeGreaterThan(10);
    }
    expect(r.inFlight).toBe(inFlight);
    expect(r.queued).toBe(queued);
  });

  test("submit() refuses a released buffer, a non-buffer and NaN or fractional SQE fields before queuing anything", async () => {
    const r = reactor();
    const pool = new BufferPool({ bufferSize: 16, count: 1 });
    const stale = pool.acquire();
    const addr = stale.address;
    stale.release();
    const owner = pool.acquire(); // the same memory, another owner now
    const f = tempFile("submit-released.bin", "SIXTEEN BYTES!!!");
    const inFlight = r.inFlight;
    const queued = r.queued;
    const cases: [string, () => unknown, string][] = [
      // The kernel read into the new owner's buffer.
      ["released buffer", () => r.submit("read", IoOp.READ, f.fd, addr, 16, 0, 0, undefined, stale), "ERR_BUFFER_RELEASED"],
      ["released buffer in an array", () => r.submit("read", IoOp.READ, f.fd, addr, 16, 0, 0, undefined, [owner, stale]), "ERR_BUFFER_RELEASED"],
      // Queued, then its completion threw in the loop (unpin is not a function) and lost the turn's other completions.
      ["a number as a buffer", () => r.submit("nop", IoOp.NOP, -1, 0, 0, 0, 0, undefined, [1 as unknown as NativeBuffer]), "ERR_INVALID_ARG"],
      ["an object as buffers", () => r.submit("nop", IoOp.NOP, -1, 0, 0, 0, 0, undefined, {} as NativeBuffer), "ERR_INVALID_ARG"],
      // NaN became 0 in the descriptor: fd 0 (stdin), opcode NOP.
      ["NaN fd", () => r.submit("read", IoOp.READ, Number.NaN, owner.address, 16, 0, 0), "ERR_INVALID_ARG"],
      ["fd of 2^32 + 1", () => r.submit("write", IoOp.WRITE, 2 ** 32 + 1, owner.address, 16, 0, 0), "ERR_INVALID_ARG"],
      ["NaN opcode", () => r.submit("x", Number.NaN, -1, 0, 0, 0, 0), "ERR_INVALID_ARG"],
      ["opcode 256", () => r.submit("x", 256, -1, 0, 0, 0, 0), "ERR_INVALID_ARG"],
      ["fractional addr", () => r.submit("read", IoOp.READ, f.fd, owner.address + 0.5, 16, 0, 0), "ERR_INVALID_ARG"],
      ["negative len", () => r.submit("read", IoOp.READ, f.fd, owner.address, -1, 0, 0), "ERR_INVALID_ARG"],
      ["len 2^32", () => r.submit("read", IoOp.READ, f.fd, owner.address, 2 ** 32, 0, 0), "ERR_INVALID_ARG"],
      ["Infinity off", () => r.submit("read", IoOp.READ, f.fd, owner.address, 16, Infinity, 0), "ERR_INVALID_ARG"],
      ["NaN opFlags", () => r.submit("nop", IoOp.NOP, -1, 0, 0, 0, Number.NaN), "ERR_INVALID_ARG"],
      ["name not a string", () => r.submit(5 as unknown as string, IoOp.NOP, -1, 0, 0, 0, 0), "ERR_INVALID_ARG"],
    ];
    try {
      for (const [what, call, code] of cases) {
        const err = thrownBy(call);
        expect({ what, code: err.code }).toEqual({ what, code });
      }
      expect(r.inFlight).toBe(inFlight);
      expect(r.queued).toBe(queued);
      await r.nop();
      expect(Array.from(owner.bytes)).toEqual(new Array(16).fill(0));
      // Valid calls still go through: a negative fd (AT_FDCWD), off -1.
      expect(await r.submit("read", IoOp.READ, f.fd, owner.address, 16, -1, 0, undefined, owner)).toBe(16);
      expect(await r.submit("nop", IoOp.NOP, -100, 0, 0, -1, 0)).toBe(0);
    } finally {
      owner.release();
      pool.close();
    }
  });

  test("64 iovecs is the limit, and it works", async () => {
    const r = reactor();
    const f = tempFile("iov64.bin");
    const bufs = Array.from({ length: 64 }, (_, i) => {
      const b = buffer(1);
      b.bytes[0] = i;
      return b;
    });
    expect(await r.writev(f.fd, bufs, { offset: 0 })).toBe(64);
    expect(Array.from(readFileSync(f.path))).toEqual(Array.from({ length: 64 }, (_, i) => i));
  });

  test("reactor options are validated", () => {
    // cqEntries past the kernel's 65536 read as "needs a newer kernel"; past 2^32 it wrapped.
    for (const options of [{ sqEntries: 3 }, { sqEntries: 0 }, { sqEntries: 65536 }, { sqEntries: 8, cqEntries: 4 }, { sqEntries: 8, cqEntries: 8.5 }, { cqEntries: 131072 }, { sqEntries: 16, cqEntries: 2 ** 32 + 16 }]) {
      expect(() => new Reactor(options)).toThrow(InvalidArgumentError);
    }
  });
});

describe("configureReactor", () => {
  test("refuses invalid options when called, not at the loop's first turn (an uncaught exception there; the work waited forever)", () => {
    // A child process: configureReactor works only before the shard's reactor exists.
    const index = join(import.meta.dir, "..", "..", "src", "index.ts");
    const code = `
      const { configureReactor, sleep } = await import(${JSON.stringify(index)});
      const codes = [];
      for (const o of [{ sqEntries: 3 }, { sqEntries: 8, cqEntries: 4 }, null]) {
        try { configureReactor(o); codes.push("none"); } catch (e) { codes.push(e.code); }
      }
      configureReactor({ sqEntries: 16 });
      await sleep(1);
      console.log(JSON.stringify(codes));`;
    const out = Bun.spawnSync({ cmd: [process.execPath, "-e", code], stdout: "pipe", stderr: "pipe", timeout: 20_000 });
    expect({ exit: out.exitCode, stdout: out.stdout.toString().trim() }).toEqual({
      exit: 0,
      stdout: JSON.stringify(["ERR_INVALID_ARG", "ERR_INVALID_ARG", "ERR_INVALID_ARG"]),
    });
  });
});

describe("cancellation", () => {
  test("aborting an in-flight read on an empty pipe rejects AbortError and leaks no slot", async () => {
    const r = reactor();
    const p = newPipe();
    const before = r.inFlight;
    const ac = new AbortController();
    const into = buffer(8);
    const read = quiet(r.read(p.readFd, into, { signal: ac.signal }));
    await r.nop(); // the read is now in the kernel, parked on the empty pipe
    await r.nop();
    expect(status(read)).toBe("pending");
    expect(r.inFlight).toBe(before + 1);
    const reason = new Error("caller gave up");
    ac.abort(reason);
    const err = await errorOf(read);
    expect(err).toBeInstanceOf(AbortError);
    expect(err.code).toBe("ABORT_ERR");
    expect(err.cause).toBe(reason);
    expect(await turnsUntil(() => r.inFlight === before)).toBe(true);
    // The cancelled read consumed nothing: bytes written now are all there for the next read.
    feed(p, [7, 8, 9]);
    expect(await r.read(p.readFd, into)).toBe(3);
    expect(Array.from(into.bytes.subarray(0, 3))).toEqual([7, 8, 9]);
  });

  test("aborting an operation still queued in this turn never runs it", async () => {
    const r = reactor();
    const p = newPipe();
    feed(p, [1, 2, 3, 4]);
    const before = r.inFlight;
    const ac = new AbortController();
    const into = buffer(4);
    const read = quiet(r.read(p.readFd, into, { signal: ac.signal }));
    ac.abort(); // same synchronous turn: the descriptor has not reached the kernel
    const err = await errorOf(read);
    expect(err).toBeInstanceOf(AbortError);
    expect(err.code).toBe("ABORT_ERR");
    expect(Array.from(into.bytes)).toEqual([0, 0, 0, 0]);
    expect(await turnsUntil(() => r.inFlight === before)).toBe(true);
    // The kernel never read: all four bytes are still in the pipe.
    expect(await r.read(p.readFd, into)).toBe(4);
    expect(Array.from(into.bytes)).toEqual([1, 2, 3, 4]);
  });

  test("an operation handed over early with submitNow() is cancelled in the kernel", async () => {
    const r = reactor();
    const p = newPipe();
    const before = r.inFlight;
    const ac = new AbortController();
    const into = buffer(4);
    const read = quiet(r.read(p.readFd, into, { signal: ac.signal }));
    const submitted = r.counters().submitted;
    r.submitNow();
    expect(r.queuedCount).toBe(0);
    expect(r.counters().submitted).toBe(submitted + 1);
    ac.abort(); // same synchronous turn, but the read is already parked in the kernel
    const err = await errorOf(read);
    expect(err).toBeInstanceOf(AbortError);
    expect(await turnsUntil(() => r.inFlight === before)).toBe(true);
    feed(p, [5, 6, 7, 8]);
    expect(await r.read(p.readFd, into)).toBe(4);
    expect(Array.from(into.bytes)).toEqual([5, 6, 7, 8]);
  });

  test("an already aborted signal rejects at once without taking a slot", async () => {
    const r = reactor();
    const p = newPipe();
    const before = r.inFlight;
    const reason = new Error("already");
    const read = quiet(r.read(p.readFd, buffer(4), { signal: AbortSignal.abort(reason) }));
    expect(r.inFlight).toBe(before);
    const err = await errorOf(read);
    expect(err).toBeInstanceOf(AbortError);
    expect(err.cause).toBe(reason);
    const vec = await errorOf(r.readv(p.readFd, [buffer(4)], { signal: AbortSignal.abort() }));
    expect(vec).toBeInstanceOf(AbortError);
  });

  test("aborting one of several reads leaves the others to complete", async () => {
    const r = reactor();
    const p = newPipe();
    const before = r.inFlight;
    const acs = [new AbortController(), new AbortController(), new AbortController()];
    const reads = acs.map((ac) => quiet(r.read(p.readFd, buffer(1), { signal: ac.signal })));
    await r.nop();
    acs[1]!.abort();
    expect(await errorOf(reads[1]!)).toBeInstanceOf(AbortError);
    feed(p, [1, 2]);
    expect(await reads[0]!).toBe(1);
    expect(await reads[2]!).toBe(1);
    expect(await turnsUntil(() => r.inFlight === before)).toBe(true);
  });

  test("abort after completion changes nothing", async () => {
    const r = reactor();
    const ac = new AbortController();
    await r.nop({ signal: ac.signal });
    ac.abort();
    await r.nop();
  });
});

describe("buffers the kernel uses are pinned", () => {
  test("a pool buffer released while a read is in flight is recycled only after the completion", async () => {
    const r = reactor();
    const pool = new BufferPool({ bufferSize: 64, count: 1 });
    const p = newPipe();
    try {
      const b = pool.acquire();
      const read = r.read(p.readFd, b);
      await r.nop();
      b.release();
      expect(b.isReleased).toBe(true);
      // Still owned by the kernel: the pool must not hand it out.
      expect(pool.available).toBe(0);
      expect(() => pool.acquire()).toThrow(PoolExhaustedError);
      expect(pool.tryAcquire()).toBeUndefined();
      feed(p, [42, 43]);
      expect(await read).toBe(2);
      expect(pool.available).toBe(1);
      const again = pool.acquire();
      expect(again.address).toBe(b.address);
      expect(Array.from(again.bytes.subarray(0, 2))).toEqual([42, 43]); // the kernel wrote before recycling
      again.release();
    } finally {
      pool.close();
    }
  });

  test("a waiter for a pinned buffer gets it only after the completion", async () => {
    const r = reactor();
    const pool = new BufferPool({ bufferSize: 16, count: 1 });
    const p = newPipe();
    try {
      const b = pool.acquire();
      const read = r.read(p.readFd, b);
      const waiter = pool.acquireEventually();
      b.release();
      await r.nop();
      expect(status(waiter)).toBe("pending");
      feed(p, [5]);
      expect(await read).toBe(1);
      const next = await waiter;
      expect(next.address).toBe(b.address);
      next.release();
    } finally {
      pool.close();
    }
  });

  test("every buffer of a readv stays pinned until the completion", async () => {
    const r = reactor();
    const pool = new BufferPool({ bufferSize: 8, count: 3 });
    const p = newPipe();
    try {
      const bufs = [pool.acquire(), pool.acquire()];
      const read = r.readv(p.readFd, bufs);
      await r.nop();
      for (const b of bufs) b.release();
      expect(pool.available).toBe(1);
      feed(p, [1]);
      expect(await read).toBe(1);
      expect(pool.available).toBe(3);
    } finally {
      pool.close();
    }
  });
});

describe("volume", () => {
  test("5,000 concurrent nops (more than the 1024-entry SQ) all complete", async () => {
    const r = reactor();
    const before = r.counters();
    const n = 5000;
    let done = 0;
    const all = Array.from({ length: n }, () => r.nop().then(() => done++));
    // Each full descriptor array was flushed to the kernel while the rest were still being queued.
    expect(r.counters().submitted - before.submitted).toBeGreaterThanOrEqual(Math.floor(n / r.sqCapacity) * r.sqCapacity);
    await Promise.all(all);
    expect(done).toBe(n);
    const after = r.counters();
    expect(after.completed - before.completed).toBeGreaterThanOrEqual(n);
    expect(after.submitted - before.submitted).toBeGreaterThanOrEqual(n);
    expect(await turnsUntil(() => r.inFlight === before.inFlight)).toBe(true);
  });

  test("5,000 concurrent writes and reads through pipes deliver every byte", async () => {
    const r = reactor();
    const n = 5000;
    const p = newPipe();
    const pool = new BufferPool({ bufferSize: 1, count: 2 * n });
    try {
      const outs = Array.from({ length: n }, (_, i) => {
        const b = pool.acquire();
        b.bytes[0] = i & 0xff;
        return b;
      });
      const ins = Array.from({ length: n }, () => pool.acquire());
      const writes = outs.map((b) => r.write(p.writeFd, b));
      const reads = ins.map((b) => r.read(p.readFd, b));
      expect(await Promise.all(writes)).toEqual(new Array(n).fill(1));
      expect(await Promise.all(reads)).toEqual(new Array(n).fill(1));
      // Bytes are a multiset of what was written: reads on one pipe may be served in any order.
      const counts = new Array(256).fill(0);
      for (const b of ins) counts[b.bytes[0]!]++;
      const expected = new Array(256).fill(0);
      for (let i = 0; i < n; i++) expected[i & 0xff]++;
      expect(counts).toEqual(expected);
      for (const b of [...outs, ...ins]) b.release();
    } finally {
      pool.close();
    }
  });

  test("10,000 polls completing at once (more than the 8192-entry CQ) are all delivered", async () => {
    const r = reactor();
    const p = newPipe();
    const before = r.inFlight;
    const n = 10_000;
    const polls = Array.from({ length: n }, () => r.poll(p.readFd, POLLIN));
    await r.nop();
    await r.nop();
    expect(r.inFlight - before).toBe(n);
    feed(p, [1]);
    const revents = await Promise.all(polls);
    expect(revents.every((e) => (e & POLLIN) === POLLIN)).toBe(true);
    expect(await turnsUntil(() => r.inFlight === before)).toBe(true);
  });
});

describe("a second, small reactor driven by hand", () => {
  /** Turns `r` (not the loop's reactor) until `done()` or a bounded number of turns. */
  async function drive(r: Reactor, done: () => boolean): Promise<void> {
    for (let i = 0; i < 5000 && !done(); i++) {
      r.turn(1000);
      await bunTick();
    }
  }

  test("a 4-entry SQ and CQ carry 50 operations: mid-turn flushes and CQ backlog lose nothing", async () => {
    const r = new Reactor({ sqEntries: 4, cqEntries: 4 });
    try {
      expect(r.sqCapacity).toBe(4);
      let done = 0;
      const ops = Array.from({ length: 50 }, () => r.nop().then(() => done++));
      await drive(r, () => done === 50);
      await Promise.all(ops);
      expect(done).toBe(50);
      expect(r.counters().completed).toBe(50);
      expect(r.inFlight).toBe(0);
    } finally {
      r.destroy();
    }
  });

  test("a multishot operation through submit() keeps its slot until its final completion (a later one settled the next operation)", async () => {
    const r = new Reactor({ sqEntries: 8, cqEntries: 16 });
    const p = newPipe();
    const ac = new AbortController();
    const IORING_POLL_ADD_MULTI = 1;
    try {
      const poll = quiet(r.submit("poll-multi", IoOp.POLL_ADD, p.readFd, 0, IORING_POLL_ADD_MULTI, 0, POLLIN, { signal: ac.signal }));
      r.turn(0);
      feed(p, [1]);
      let first: unknown;
      void poll.then((v) => (first = v));
      await drive(r, () => first !== undefined);
      expect(first).toBe(POLLIN);
      expect(r.inFlight).toBe(1); // the kernel's poll is still armed
      // The next operation must get its own completion, not the poll's next one.
      const nop = r.submit("nop", IoOp.NOP, -1, 0, 0, 0, 0);
      feed(p, [2]);
      let got: unknown = "pending";
      void nop.then((v) => (got = v));
      await drive(r, () => got !== "pending");
      expect(got).toBe(0);
      ac.abort(); // ends the multishot poll: its final completion frees the slot
      await drive(r, () => r.inFlight === 0);
      expect(r.inFlight).toBe(0);
    } finally {
      r.destroy();
    }
  });

  test("cancelled reads, in flight and still queued, give their slots back: the next operations reuse them", async () => {
    // inFlight is a counter of its own: a slot never put back on the free list leaves it at 0
    // while every later operation takes a new slot number (the slot tables grow for good).
    const r = new Reactor({ sqEntries: 8 });
    const p = newPipe();
    try {
      const inKernel = new AbortController();
      const a = quiet(r.read(p.readFd, buffer(4), { signal: inKernel.signal }));
      r.turn(0); // a is parked in the kernel on the empty pipe
      const queued = new AbortController();
      const b = quiet(r.read(p.readFd, buffer(4), { signal: queued.signal }));
      queued.abort(); // b never reaches the kernel (a NOP runs in its place)
      inKernel.abort(); // a is cancelled in the kernel (one more operation: the async cancel)
      await drive(r, () => r.inFlight === 0);
      expect(await errorOf(a)).toBeInstanceOf(AbortError);
      expect(await errorOf(b)).toBeInstanceOf(AbortError);
      // Three slots were ever used (0, 1 and 2): three new operations get exactly those.
      let completed = 0;
      const h = { complete: () => void completed++ };
      const slots = [0, 1, 2].map(() => r.prepare(IoOp.NOP, -1, 0, 0, 0, 0, h));
      expect(slots.sort()).toEqual([0, 1, 2]);
      await drive(r, () => completed === 3);
      expect(r.inFlight).toBe(0);
    } finally {
      r.destroy();
    }
  });

  test("native nops with a small CQ keep every other completion (some were taken off the CQ and lost)", async () => {
    const r = new Reactor({ sqEntries: 8, cqEntries: 8 });
    try {
      let settled = 0;
      const n = 24;
      for (let i = 0; i < n; i++) void r.timeout(2).then(() => settled++, () => settled++);
      r.turn(0);
      try {
        r.benchNativeNops(200_000, 8);
      } catch (e) {
        expect((e as Error).message).toContain("EOVERFLOW"); // allowed: the bench stops, nothing is lost
      }
      await drive(r, () => settled === n);
      expect(settled).toBe(n);
      expect(r.inFlight).toBe(0);
    } finally {
      r.destroy();
    }
  });

  test("a wake sent to a destroyed reactor writes nothing to the file that now has its eventfd's number", () => {
    const lib = native();
    const err = new Int32Array(1);
    const a = lib.shoal_reactor_create(8, 16, err);
    const b = lib.shoal_reactor_create(8, 16, err);
    expect(a).toBeTruthy();
    expect(b).toBeTruthy();
    const info = new Int32Array(toArrayBuffer(lib.shoal_reactor_info(b) as never, 0, 24));
    const ringFd = info[5]!;
    const eventFd = info[4]!;
    lib.shoal_reactor_destroy(b);
    // Open files until one takes the eventfd's number (the lowest free numbers are reused).
    const dir = tempDir("wake");
    const opened: number[] = [];
    let victim = "";
    for (let i = 0; i < 64 && victim === ""; i++) {
      const path = join(dir.path, `victim-${i}`);
      writeFileSync(path, "");
      const fd = openSync(path, "w");
      opened.push(fd);
      if (fd === eventFd) victim = path;
    }
    try {
      expect(victim).not.toBe("");
      expect(lib.shoal_reactor_msg_wake(a, ringFd, eventFd)).toBe(0);
      for (let i = 0; i < 3; i++) lib.shoal_reactor_turn(a, 0, 1000, performance.now() * 1000);
      expect(readFileSync(victim).length).toBe(0);
    } finally {
      for (const fd of opened) closeSync(fd);
      lib.shoal_reactor_destroy(a);
      dir.remove();
    }
  });

  test("destroy refuses while operations are in flight; afterwards operations throw ClosedError", async () => {
    const r = new Reactor({ sqEntries: 8 });
    const p = newPipe();
    const ac = new AbortController();
    const read = quiet(r.read(p.readFd, buffer(4), { signal: ac.signal }));
    r.turn(0);
    expect(() => r.destroy()).toThrow(InvalidArgumentError);
    ac.abort();
    await drive(r, () => r.inFlight === 0);
    expect(await errorOf(read)).toBeInstanceOf(AbortError);
    r.destroy();
    const err = thrownBy(() => r.nop());
    expect(err).toBeInstanceOf(ClosedError);
    expect(err.code).toBe("ERR_REACTOR_CLOSED");
    // Its counters lived in the freed native reactor: reading them throws, not crashes; so do
    // the internal calls that reach native code (a use after free before).
    expect(thrownBy(() => r.counters())).toBeInstanceOf(ClosedError);
    expect(thrownBy(() => r.msgWake(0, 0))).toBeInstanceOf(ClosedError);
    expect(thrownBy(() => r.benchNativeNops(10, 1))).toBeInstanceOf(ClosedError);
    r.destroy(); // idempotent
  });
});

// Last: creating a group switches this process to queued (per-group) completion delivery for good.
describe("with scheduling groups", () => {
  test("operations issued in a group complete in that group; cancellation still leaks nothing", async () => {
    const r = reactor();
    const g = createSchedulingGroup("reactor-test", 300);
    const p = newPipe();
    const before = r.inFlight;
    await withSchedulingGroup(g, async () => {
      const ran = g.tasksRun;
      await r.nop();
      expect(currentSchedulingGroup()).toBe(g);
      expect(g.tasksRun).toBeGreaterThan(ran); // the completion was a task in g's queue

      const ac = new AbortController();
      const read = quiet(r.read(p.readFd, buffer(4), { signal: ac.signal }));
      await r.nop();
      ac.abort();
      const err = await errorOf(read);
      expect(err).toBeInstanceOf(AbortError);
      expect(currentSchedulingGroup()).toBe(g);

      const queuedCancel = new AbortController();
      const early = quiet(r.read(p.readFd, buffer(4), { signal: queuedCancel.signal }));
      queuedCancel.abort();
      expect(await errorOf(early)).toBeInstanceOf(AbortError);
    });
    expect(await turnsUntil(() => r.inFlight === before)).toBe(true);
    // A kernel error is still typed when delivered through the group's queue.
    const err = await withSchedulingGroup(g, () => errorOf(r.read(p.writeFd, buffer(4))));
    expect(err).toBeInstanceOf(SystemError);
    expect(err.code).toBe("EBADF");
  });
});

describe("cancelSlot with an owner", () => {
  test("a stale slot number does not cancel the operation that reuses the slot", async () => {
    const r = reactor();
    const p = pipe();
    try {
      const results: { who: string; res: number }[] = [];
      const first = { complete: (res: number) => results.push({ who: "first", res }) };
      const second = { complete: (res: number) => results.push({ who: "second", res }) };
      // The first poll completes at once (the write end is writable) and frees its slot.
      const slot = r.prepare(6 /* POLL_ADD */, p.writeFd, 0, 0, 0, POLLOUT, first);
      // Wait on timers only (no other operation may take the freed slot in between).
      for (let i = 0; i < 200 && results.length === 0; i++) await sleep(1);
      expect(results.length).toBe(1);
      // The next operation reuses that slot number (free slots are reused last-in first-out).
      const reused = r.prepare(6 /* POLL_ADD */, p.readFd, 0, 0, 0, POLLIN, second);
      expect(reused).toBe(slot);
      // The first owner still holds the number: cancelling with it must not touch the new poll.
      r.cancelSlot(slot, first);
      await sleep(5);
      expect(results.length).toBe(1);
      // The rightful owner's cancel works.
      r.cancelSlot(reused, second);
      expect(await turnsUntil(() => results.length === 2)).toBe(true);
      expect(results[1]).toEqual({ who: "second", res: -125 });
    } finally {
      p.close();
    }
  });
});
