/**
 * Start-up failures explain themselves: a missing or broken native library, and io_uring
 * refused by a seccomp policy (a real filter installed in a child process) or by the
 * kernel.io_uring_disabled sysctl, each fail with a StartupError whose code is stable and whose
 * message names the cause and the fix.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { IoOp, StartupError, probeIoUring, reactor } from "../../src/index.ts";
import { libraryPath } from "../../src/core/native.ts";
import { tempDir } from "./fixtures/posix.ts";
import { thrownBy } from "./fixtures/util.ts";

const repo = join(import.meta.dir, "..", "..");
const fixtures = join(import.meta.dir, "fixtures");
const dir = tempDir("startup");
afterAll(() => dir.remove());

interface Outcome {
  ok: boolean;
  name?: string;
  code?: string;
  message?: string;
  skip?: string;
}

/** Runs fixtures/startup-child.ts with `env` added; returns the JSON line it printed. */
function startChild(env: Record<string, string>): Outcome {
  const out = Bun.spawnSync({
    cmd: [process.execPath, join(fixtures, "startup-child.ts")],
    env: { ...process.env, ...env },
    stdout: "pipe",
    stderr: "pipe",
    timeout: 30_000,
  });
  const text = out.stdout.toString().trim();
  if (out.exitCode !== 0) throw new Error(`startup-child exited ${out.exitCode}:\n${text}\n${out.stderr.toString()}`);
  return JSON.parse(text.split("\n").pop()!) as Outcome;
}

describe("the native library", () => {
  test("is found at zig-out/lib/libshoal.so and starts a reactor", () => {
    expect(libraryPath()).toBe(join(repo, "zig-out", "lib", "libshoal.so"));
    expect(startChild({})).toEqual({ ok: true });
  });

  test("missing: StartupError ERR_NATIVE_MISSING naming the path and the fix", () => {
    const missing = "/nonexistent/shoal/libshoal.so";
    const res = startChild({ SHOAL_LIB: missing });
    expect(res.ok).toBe(false);
    expect(res.name).toBe("StartupError");
    expect(res.code).toBe("ERR_NATIVE_MISSING");
    expect(res.message).toContain(missing);
    expect(res.message).toContain("scripts/zig build");
    expect(res.message).toContain("SHOAL_LIB");
  });

  test("not a library: StartupError ERR_NATIVE_LOAD naming the path and the fix", () => {
    const bogus = join(dir.path, "libshoal.so");
    writeFileSync(bogus, "this is not an ELF shared object\n");
    const res = startChild({ SHOAL_LIB: bogus });
    expect(res.name).toBe("StartupError");
    expect(res.code).toBe("ERR_NATIVE_LOAD");
    expect(res.message).toContain(bogus);
    expect(res.message).toContain("scripts/zig build");
  });

  test("missing, in an app that only sleeps: the loop's first turn fails loudly with the explanation", () => {
    const index = JSON.stringify(join(repo, "src", "index.ts"));
    // Not `await sleep()`: Bun 1.4 keeps a process whose top-level await never settles alive
    // after an uncaught exception, so that app would print the error and then hang.
    const out = Bun.spawnSync({
      cmd: [process.execPath, "-e", `import { sleep } from ${index}; sleep(10).then(() => console.log("slept"));`],
      env: { ...process.env, SHOAL_LIB: "/nonexistent/libshoal.so" },
      stdout: "pipe",
      stderr: "pipe",
      timeout: 30_000,
    });
    expect(out.exitCode).not.toBe(0);
    expect(out.stdout.toString()).not.toContain("slept");
    expect(out.stderr.toString()).toContain("native library is missing at /nonexistent/libshoal.so");
  });

  test("missing, in an app whose top-level await sleeps (the README's example): the sleep throws, the process exits 1", () => {
    const dir = mkdtempSync(join(tmpdir(), "shoal-nolib-"));
    const main = join(dir, "main.ts");
    writeFileSync(main, `import { sleep } from ${JSON.stringify(join(repo, "src", "index.ts"))};\nawait sleep(10);\nconsole.log("slept");\n`);
    try {
      // The StartupError was thrown by the loop's own callback, where nothing awaited it: the
      // sleep never settled and Bun spun at 100% CPU (killed here after 20 s).
      const out = Bun.spawnSync({
        cmd: [process.execPath, main],
        env: { ...process.env, SHOAL_LIB: "/nonexistent/libshoal.so" },
        stdout: "pipe",
        stderr: "pipe",
        timeout: 20_000,
      });
      expect(out.signalCode ?? null).toBeNull();
      expect(out.exitCode).toBe(1);
      expect(out.stdout.toString()).not.toContain("slept");
      expect(out.stderr.toString()).toContain("native library is missing at /nonexistent/libshoal.so");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});

describe("io_uring refused", () => {
  // errno a seccomp filter returns for io_uring_setup -> what the message must say.
  const cases: [string, number, string[]][] = [
    ["EPERM (a container's seccomp profile)", 1, ["EPERM", "seccomp", "io_uring_setup, io_uring_enter and io_uring_register"]],
    ["ENOSYS (a kernel without io_uring)", 38, ["ENOSYS", "no io_uring", "Linux 6.1"]],
    ["ENOMEM (locked-memory limit)", 12, ["ENOMEM", "RLIMIT_MEMLOCK", "ulimit -l"]],
  ];
  test.each(cases)("io_uring_setup failing with %s: StartupError ERR_IO_URING_UNAVAILABLE with the fix", (_, errno, words) => {
    const res = startChild({ SHOAL_SECCOMP_ERRNO: String(errno) });
    if (res.skip) {
      console.warn(`skipped: ${res.skip}`);
      return;
    }
    expect(res.ok).toBe(false);
    expect(res.name).toBe("StartupError");
    expect(res.code).toBe("ERR_IO_URING_UNAVAILABLE");
    for (const w of words) expect(res.message).toContain(w);
  });

  // The sysctl is system-wide: it is flipped only around one synchronous probe (microseconds,
  // restored in `finally`), only by root, and only when it was 0.
  const sysctl = "/proc/sys/kernel/io_uring_disabled";
  const sysctlSkip = (() => {
    try {
      if (process.getuid?.() !== 0) return "not root";
      if (readFileSync(sysctl, "utf8").trim() !== "0") return `${sysctl} is not 0`;
      accessSync(sysctl, constants.W_OK);
      return "";
    } catch (err) {
      return `${sysctl} is not writable here (${(err as Error).message})`;
    }
  })();
  if (sysctlSkip) console.warn(`io_uring_disabled sysctl test skipped: ${sysctlSkip}`);

  test.skipIf(sysctlSkip !== "")("kernel.io_uring_disabled=2: StartupError ERR_IO_URING_UNAVAILABLE naming the sysctl", () => {
    reactor(); // this process's own ring exists before the sysctl flips (rings already made keep working)
    let err: any;
    try {
      writeFileSync(sysctl, "2");
      // Extra ops bypass the probe's cached success: this really calls io_uring_setup.
      err = thrownBy(() => probeIoUring([IoOp.NOP]));
    } finally {
      writeFileSync(sysctl, "0");
    }
    expect(readFileSync(sysctl, "utf8").trim()).toBe("0");
    expect(err).toBeInstanceOf(StartupError);
    expect(err.code).toBe("ERR_IO_URING_UNAVAILABLE");
    expect(err.message).toContain("kernel.io_uring_disabled=2");
    expect(err.message).toContain("sysctl -w kernel.io_uring_disabled=0");
    // And io_uring works again.
    expect(probeIoUring([IoOp.NOP]).features).toBeGreaterThan(0);
  });
});

test("probeIoUring reports the kernel's features and settings when io_uring is usable", () => {
  const report = probeIoUring();
  expect(report.features).toBeGreaterThan(0);
  expect(report.ioUringDisabled).toBe(Number(readFileSync("/proc/sys/kernel/io_uring_disabled", "utf8").trim()));
  expect(typeof report.memlockKiB).toBe("number");
  // An opcode this kernel lacks is named in the error.
  const err = thrownBy(() => probeIoUring([250]));
  expect(err).toBeInstanceOf(StartupError);
  expect(err.code).toBe("ERR_IO_URING_OP_MISSING");
  expect(err.message).toContain("#250");
});
