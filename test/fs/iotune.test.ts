/**
 * iotune measures the disk under a directory and writes an io-properties file that
 * configureIoScheduler reads back; the command-line entry does the same.
 */
import { afterAll, expect, test } from "bun:test";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { InvalidArgumentError, SystemError, reactor, type NativeBuffer, type RwOptions } from "../../src/index.ts";
import { configureIoScheduler, ioScheduler, iotune, mountPointOf, openFileDma, parseIoProperties, readSmallFile, resetIoScheduler } from "../../src/fs/index.ts";
import { ext4Scratch } from "./fixtures/ext4.ts";

const scratch = ext4Scratch("iotune");
afterAll(() => {
  resetIoScheduler();
  scratch.cleanup();
});

test("iotune measures the disk and writes properties the scheduler accepts", async () => {
  const file = `${scratch.dir}/io.yaml`;
  const lines: string[] = [];
  const r = await iotune({ directory: scratch.dir, propertiesFile: file, durationMs: 150, fileSize: 32 << 20, log: (l) => lines.push(l) });
  expect(r.fileSystem).toBe("ext4");
  expect(r.dmaIsReal).toBe(true);
  const p = r.properties;
  expect(p.mountpoint).toBe(await mountPointOf(scratch.dir));
  expect(scratch.dir.startsWith(p.mountpoint === "/" ? "/" : `${p.mountpoint}/`)).toBe(true);
  // Any real disk does more than 100 IOPS and 10 MB/s; these bounds only catch nonsense.
  for (const v of [p.readIops, p.writeIops]) expect(v).toBeGreaterThan(100);
  for (const v of [p.readBandwidth, p.writeBandwidth]) expect(v).toBeGreaterThan(10e6);
  expect(lines.some((l) => l.includes("random 4 KiB read"))).toBe(true);
  const parsed = parseIoProperties(await readSmallFile(file));
  expect(parsed[0]!.mountpoint).toBe(p.mountpoint);
  expect(Math.abs(parsed[0]!.readIops - p.readIops)).toBeLessThanOrEqual(1);
  // The test file is gone.
  expect(readdirSync(scratch.dir).filter((n) => n.startsWith(".shoal-iotune"))).toEqual([]);

  await configureIoScheduler({ properties: file });
  await using f = await openFileDma(join(scratch.dir, "x"), { flags: "w" });
  const q = ioScheduler().queueFor(f.deviceMajor, f.deviceMinor);
  expect(q.stats().throttled).toBe(true);
  expect(q.properties?.readIops).toBe(parsed[0]!.readIops);
});

test("the iotune command writes the file and explains its usage", () => {
  const bun = process.execPath;
  const script = join(import.meta.dir, "../../src/fs/iotune.ts");
  const help = Bun.spawnSync([bun, script, "--help"]);
  expect(help.exitCode).toBe(0);
  expect(help.stdout.toString()).toContain("--evaluation-directory");
  const out = `${scratch.dir}/cli.yaml`;
  const run = Bun.spawnSync([bun, script, "--evaluation-directory", scratch.dir, "--properties-file", out, "--duration-ms", "100", "--file-size", String(16 << 20)]);
  expect(run.exitCode).toBe(0);
  expect(existsSync(out)).toBe(true);
  const bad = Bun.spawnSync([bun, script, "--evaluation-directory", `${scratch.dir}/missing`]);
  expect(bad.exitCode).toBe(1);
  expect(bad.stderr.toString()).toContain("ENOENT");
});

test("bad options are refused before a test file is created", async () => {
  for (const fileSize of [Number.NaN, 17.5, 1 << 20, -1]) {
    const err = await iotune({ directory: scratch.dir, fileSize, durationMs: 100 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as Error).message).toMatch(/fileSize/);
  }
  expect(readdirSync(scratch.dir).filter((n) => n.includes("iotune"))).toEqual([]);
});

test("a failed write during the measurement: iotune rejects with it and removes its test file", async () => {
  // A disk error on the 20th write, while 7 other 1 MiB writes are in flight. The EIO was
  // replaced by "BufferPool.close: buffer(s) still acquired" and the test file was left behind.
  const r = reactor();
  const write = r.write;
  let calls = 0;
  r.write = ((fd: number, buf: NativeBuffer, opts?: RwOptions) => {
    if (++calls === 20) return Promise.reject(new SystemError("write", 5));
    return write.call(r, fd, buf, opts);
  }) as typeof r.write;
  try {
    const err = await iotune({ directory: scratch.dir, durationMs: 100, fileSize: 64 << 20 }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(SystemError);
    expect((err as SystemError).code).toBe("EIO");
  } finally {
    r.write = write;
  }
  expect(readdirSync(scratch.dir).filter((n) => n.includes("iotune"))).toEqual([]);
  expect(reactor().counters().inFlight).toBe(0);
});
