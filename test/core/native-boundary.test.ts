/**
 * The core's native boundary, after a review: an old build of the native library is named as
 * one (its ABI, not the first export it lacks), bad-argument messages survive hostile values,
 * kernel errors carry every Linux errno name, a pool too large to track maps nothing, an extra
 * unpin cannot unprotect a buffer in use, and the probe refuses op numbers a byte cannot carry.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  BufferPool,
  InvalidArgumentError,
  StartupError,
  SystemError,
  allocateAlignedBuffer,
  probeIoUring,
} from "../../src/index.ts";
import { ABI_VERSION, poolBytes } from "../../src/core/native.ts";
import { coreSymbols } from "../../src/core/symbols/core.ts";
import { smpSymbols } from "../../src/core/symbols/smp.ts";
import { fsSymbols } from "../../src/core/symbols/fs.ts";
import { netSymbols } from "../../src/core/symbols/net.ts";
import { errnoName } from "../../src/core/errors.ts";
import { copyBytes } from "../../src/core/bytes.ts";
import { readSmallFile } from "../../src/fs/index.ts";
import { tempDir } from "./fixtures/posix.ts";
import { thrownBy } from "./fixtures/util.ts";

const repo = join(import.meta.dir, "..", "..");
const dir = tempDir("native-boundary");
afterAll(() => dir.remove());

/** Builds a shared library exporting `names` (no-ops) and shoal_abi_version() = `abi`. */
function buildStub(file: string, abi: number, names: string[]): string {
  const src = join(dir.path, `${file}.zig`);
  const lines = [`export fn shoal_abi_version() u32 {\n    return ${abi};\n}`];
  for (const n of names) if (n !== "shoal_abi_version") lines.push(`export fn ${n}() void {}`);
  writeFileSync(src, `${lines.join("\n")}\n`);
  const out = join(dir.path, `lib${file}.so`);
  const r = Bun.spawnSync({
    cmd: [join(repo, "scripts", "zig"), "build-lib", "-dynamic", "-O", "ReleaseSmall", src, `-femit-bin=${out}`],
    cwd: dir.path,
    stdout: "pipe",
    stderr: "pipe",
    timeout: 120_000,
  });
  expect(r.exitCode, r.stderr.toString()).toBe(0);
  return out;
}

/** Loads the native library at `lib` in a child process: the StartupError's code and message. */
function loadIn(lib: string): { code?: string; name?: string; message?: string; ok?: boolean } {
  const native = JSON.stringify(join(repo, "src", "core", "native.ts"));
  const out = Bun.spawnSync({
    cmd: [
      process.execPath,
      "-e",
      `import { native } from ${native};
       try { native(); console.log(JSON.stringify({ ok: true })); }
       catch (e) { console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message })); }`,
    ],
    env: { ...process.env, SHOAL_LIB: lib },
    stdout: "pipe",
    stderr: "pipe",
    timeout: 30_000,
  });
  expect(out.exitCode, out.stderr.toString()).toBe(0);
  return JSON.parse(out.stdout.toString().trim().split("\n").pop()!);
}

describe("an old or foreign native library", () => {
  const all = Object.keys({ ...coreSymbols, ...smpSymbols, ...fsSymbols, ...netSymbols });

  test(
    "an old build (an older ABI, without the exports added since) is ERR_NATIVE_ABI naming both versions, not a missing symbol",
    () => {
      // As ABI 6 was: everything but shoal_net_linger_step (ABI 7 added it; ABI 6, shoal_copy).
      // The table failed on such a symbol first, so the ABI check never ran: ERR_NATIVE_LOAD
      // "Symbol not found".
      const old = buildStub("old", ABI_VERSION - 1, all.filter((n) => n !== "shoal_net_linger_step"));
      const res = loadIn(old);
      expect(res.name).toBe("StartupError");
      expect(res.code).toBe("ERR_NATIVE_ABI");
      expect(res.message).toContain(`has ABI ${ABI_VERSION - 1}, this code needs ${ABI_VERSION}`);
      expect(res.message).toContain("scripts/zig build");
    },
    180_000,
  );

  test(
    "a library of this ABI that lacks an export, or one with every export and another ABI, is named as such",
    () => {
      const missing = loadIn(buildStub("missing", ABI_VERSION, all.filter((n) => n !== "shoal_copy")));
      expect(missing.code).toBe("ERR_NATIVE_LOAD");
      expect(missing.message).toContain("shoal_copy");
      const newer = loadIn(buildStub("newer", ABI_VERSION + 1, all));
      expect(newer.code).toBe("ERR_NATIVE_ABI");
      expect(newer.message).toContain(`has ABI ${ABI_VERSION + 1}`);
      expect(StartupError.name).toBe("StartupError");
    },
    180_000,
  );
});

describe("bad-argument messages on hostile values", () => {
  test("a revoked Proxy is an InvalidArgumentError (Array.isArray threw a TypeError in the message)", () => {
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    const err = thrownBy(() => allocateAlignedBuffer(proxy as never));
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.message).toContain("revoked Proxy");
    const err2 = thrownBy(() => new BufferPool({ bufferSize: 16, count: proxy as never }));
    expect(err2).toBeInstanceOf(InvalidArgumentError);
  });

  test("a huge string is quoted in part, with its length (it was copied whole into the message)", () => {
    const s = `${"ab".repeat(512 * 1024)}"`;
    const err = thrownBy(() => allocateAlignedBuffer(s as never));
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.message.length).toBeLessThan(300);
    expect(err.message).toContain(`"abab`);
    expect(err.message).toContain(`${s.length} characters`);
    // Short strings are still quoted whole.
    expect(thrownBy(() => allocateAlignedBuffer("12" as never)).message).toContain(`got "12"`);
  });

  test("objects with throwing traps, toString or Symbol.toPrimitive are named, not called", () => {
    const hostile = [
      new Proxy({}, { get: () => { throw new Error("get"); }, getPrototypeOf: () => { throw new Error("proto"); } }),
      { toString: () => { throw new Error("toString"); } },
      { [Symbol.toPrimitive]: () => { throw new Error("prim"); } },
      Object.create(null),
    ];
    for (const v of hostile) {
      const err = thrownBy(() => allocateAlignedBuffer(v as never));
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect(err.message).toContain("an object");
    }
  });
});

describe("SystemError", () => {
  test("every Linux errno has its name (ELOOP, EPROTO, ENETRESET, ESTALE were E40, E71, E102, E116)", () => {
    for (const [errno, name] of [[40, "ELOOP"], [71, "EPROTO"], [102, "ENETRESET"], [116, "ESTALE"], [10, "ECHILD"], [35, "EDEADLK"], [133, "EHWPOISON"]] as const) {
      const e = new SystemError("openat", errno);
      expect({ errno, code: e.code }).toEqual({ errno, code: name });
      expect(e.errno).toBe(errno);
      expect(e.op).toBe("openat");
      expect(e.message).toBe(`openat failed: ${name}`);
    }
    expect(errnoName(9999)).toBe("E9999");
    expect(errnoName(41)).toBe("E41"); // no errno 41 on Linux
  });

  test("a symlink loop the kernel refuses is ELOOP (it was E40)", async () => {
    const a = join(dir.path, "loop-a");
    const b = join(dir.path, "loop-b");
    symlinkSync(b, a);
    symlinkSync(a, b);
    let err: any;
    try {
      await readSmallFile(a);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SystemError);
    expect([err.code, err.errno]).toEqual(["ELOOP", 40]);
  });
});

describe("BufferPool bookkeeping", () => {
  test("a pool with more buffers than its free list can hold maps nothing (its mapping stayed, counted in poolBytes for good)", () => {
    const before = poolBytes();
    for (const count of [2 ** 31, 2 ** 32]) {
      const err = thrownBy(() => new BufferPool({ bufferSize: 1, count, alignment: 1 }));
      expect(err).toBeInstanceOf(InvalidArgumentError); // was RangeError "Out of memory"
      expect(poolBytes()).toBe(before);
    }
  });

  test("one unpin too many does not unprotect the buffer during the next operation", () => {
    const pool = new BufferPool({ bufferSize: 64, count: 1 });
    const b = pool.acquire();
    b.unpin(); // an imbalance: no operation had pinned it
    b.pin(); // an operation starts using it
    b.release(); // released during the operation: recycled only at its completion
    expect(pool.available).toBe(0);
    expect(pool.tryAcquire()).toBeUndefined();
    b.unpin(); // the completion
    expect(pool.available).toBe(1);
    b.unpin(); // stray again: nothing changes
    expect(pool.available).toBe(1);
    pool.close();
  });
});

describe("probeIoUring", () => {
  test("an op number a byte cannot carry is refused (256 travelled as 0, NOP, and passed)", () => {
    for (const bad of [256, -1, 1.5, Number.NaN]) {
      const err = thrownBy(() => probeIoUring([bad]));
      expect({ bad, code: err?.code }).toEqual({ bad, code: "ERR_INVALID_ARG" });
    }
    expect(probeIoUring([0]).features).toBeGreaterThan(0);
  });
});

describe("copyBytes, short overlapping ranges", () => {
  test("a destination after its source, in one array or two views of one buffer, gets the source's old bytes (a forward loop smeared them)", () => {
    const failures: string[] = [];
    for (let len = 0; len <= 40; len++) {
      for (let shift = -20; shift <= 20; shift++) {
        for (const views of ["one array", "two views"]) {
          const from = 30;
          const at = from + shift;
          const buf = new ArrayBuffer(128);
          const whole = new Uint8Array(buf);
          for (let i = 0; i < whole.length; i++) whole[i] = (i * 7 + 1) & 0xff;
          const want = whole.slice();
          want.copyWithin(at, from, from + len); // memmove semantics
          if (views === "one array") copyBytes(whole, at, whole, from, len);
          else copyBytes(new Uint8Array(buf, 8), at - 8, new Uint8Array(buf, 3), from - 3, len);
          if (Buffer.compare(whole, want) !== 0) failures.push(`${views} len ${len} shift ${shift}`);
        }
      }
    }
    expect(failures).toEqual([]);
  });
});
