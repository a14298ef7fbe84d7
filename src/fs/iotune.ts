/**
 * iotune: measures the disk under a directory and writes an io-properties file, like Seastar's
 * iotune. Four timed phases on one test file, each with enough requests in flight to saturate
 * the device: sequential writes of 1 MiB (which also fill the file, so later reads hit real
 * blocks, not unwritten extents that read as zeros without I/O), sequential reads of 1 MiB,
 * random 4 KiB writes, random 4 KiB reads. The requests go straight to the ring, bypassing the
 * I/O scheduler, so an already configured capacity cannot cap the measurement.
 *
 *   bun src/fs/iotune.ts --evaluation-directory /var/lib/data --properties-file io.yaml
 *     [--duration-ms 3000] [--file-size 1073741824] [--random-depth 128] [--sequential-depth 8]
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { InvalidArgumentError } from "../core/errors.ts";
import { reactor } from "../core/reactor.ts";
import type { NativeBuffer } from "../core/buffers.ts";
import { dmaBufferPool, openFileDma, type DmaFile } from "./dma-file.ts";
import { fsSpace, remove, stat } from "./directory.ts";
import { formatIoProperties, type DiskProperties } from "./io-properties.ts";
import { readSmallFile, writeSmallFile } from "./small-file.ts";
import { describeValue } from "../core/describe.ts";

/** Options of iotune(). */
export interface IotuneOptions {
  /** A directory on the disk to measure; the test file is created (and removed) there. */
  directory: string;
  /** Where to write the io-properties file (optional). */
  propertiesFile?: string | undefined;
  /** Length of each of the four phases in ms (default 3000). */
  durationMs?: number | undefined;
  /** Size of the test file (default 1 GiB, less if the file system is short of space). */
  fileSize?: number | undefined;
  /** Requests in flight for the random 4 KiB phases (default 128). */
  randomDepth?: number | undefined;
  /** Requests in flight for the sequential 1 MiB phases (default 8). */
  sequentialDepth?: number | undefined;
  /** Progress lines (default: none). */
  log?: ((line: string) => void) | undefined;
}

/** What iotune measured: the properties, plus the file system and test file used. */
export interface IotuneResult {
  properties: DiskProperties;
  fileSystem: string;
  fileSize: number;
  /** False on tmpfs and the like: the numbers then describe memory, not a disk. */
  dmaIsReal: boolean;
}

const MiB = 1024 * 1024;
const SEQ = MiB;
const RAND = 4096;

function decodeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * The mount point holding `dir`: the longest mount point in /proc/self/mountinfo that is a
 * prefix of the absolute path and is on the same device. Falls back to the absolute path.
 */
export async function mountPointOf(dir: string): Promise<string> {
  const abs = resolve(dir);
  const st = await stat(abs);
  const want = `${st.deviceMajor}:${st.deviceMinor}`;
  let best = "";
  for (const line of (await readSmallFile("/proc/self/mountinfo")).split("\n")) {
    const f = line.split(" ");
    if (f.length < 5 || f[2] !== want) continue;
    const mp = decodeMountPath(f[4]!);
    const prefix = mp === "/" ? "/" : `${mp}/`;
    if ((abs === mp || abs.startsWith(prefix)) && mp.length > best.length) best = mp;
  }
  return best || abs;
}

/** Runs `depth` workers issuing `next()` until the deadline; returns [requests, bytes, seconds]. */
async function timed(depth: number, durationMs: number, pool: NativeBuffer[], io: (buf: NativeBuffer, i: number) => Promise<number>): Promise<[number, number, number]> {
  let requests = 0;
  let bytes = 0;
  let seq = 0;
  const start = performance.now();
  const deadline = start + durationMs;
  const stop = { failed: false };
  const worker = async (w: number): Promise<void> => {
    const buf = pool[w]!;
    while (performance.now() < deadline && !stop.failed) {
      const n = await io(buf, seq++);
      requests++;
      bytes += n;
    }
  };
  await joinWorkers(Array.from({ length: depth }, (_, w) => worker(w)), stop);
  return [requests, bytes, (performance.now() - start) / 1000];
}

/**
 * Waits for every worker, then throws the first failure: the others stop issuing at once but
 * their requests in flight finish first (their buffers stay pinned until then, and the file
 * must not close under them).
 */
async function joinWorkers(workers: Promise<void>[], stop: { failed: boolean }): Promise<void> {
  const settled = await Promise.allSettled(workers.map((w) => w.catch((e: unknown) => {
    stop.failed = true;
    throw e;
  })));
  const bad = settled.find((x) => x.status === "rejected");
  if (bad !== undefined) throw (bad as PromiseRejectedResult).reason;
}

/**
 * Measures the disk holding `opts.directory` and, with `propertiesFile`, writes what it found
 * in io-properties format. Takes about 4 x durationMs plus the time to write the test file
 * once. Throws InvalidArgumentError for bad options, SystemError (ENOSPC, EACCES...).
 */
export async function iotune(opts: IotuneOptions): Promise<IotuneResult> {
  if (opts === null || typeof opts !== "object" || typeof opts.directory !== "string") {
    throw new InvalidArgumentError("iotune: options.directory must be a path");
  }
  const durationMs = opts.durationMs ?? 3000;
  const randomDepth = opts.randomDepth ?? 128;
  const sequentialDepth = opts.sequentialDepth ?? 8;
  if (!Number.isFinite(durationMs) || durationMs < 100) throw new InvalidArgumentError(`iotune: durationMs must be >= 100, got ${describeValue(durationMs)}`);
  for (const [k, v] of [["randomDepth", randomDepth], ["sequentialDepth", sequentialDepth]] as const) {
    if (!Number.isInteger(v) || v < 1 || v > 512) throw new InvalidArgumentError(`iotune: ${k} must be an integer in 1..512, got ${describeValue(v)}`);
  }
  if (opts.fileSize !== undefined && (!Number.isSafeInteger(opts.fileSize) || opts.fileSize < 16 * MiB)) {
    throw new InvalidArgumentError(`iotune: fileSize must be an integer of at least 16 MiB, got ${describeValue(opts.fileSize)}`);
  }
  const log = opts.log ?? (() => {});
  const space = fsSpace(opts.directory);
  let fileSize = opts.fileSize ?? Math.min(1024 * MiB, Math.floor(space.availableBytes / 4 / MiB) * MiB);
  fileSize = Math.floor(fileSize / MiB) * MiB;
  if (fileSize < 16 * MiB) throw new InvalidArgumentError(`iotune: need a test file of at least 16 MiB; ${opts.directory} has ${space.availableBytes} bytes available`);

  const mountpoint = await mountPointOf(opts.directory);
  const path = `${resolve(opts.directory)}/.shoal-iotune-${process.pid}`;
  const file: DmaFile = await openFileDma(path, { flags: "w+x", mode: 0o600 });
  const depth = Math.max(randomDepth, sequentialDepth);
  const seqPool = dmaBufferPool({ bufferSize: SEQ, count: sequentialDepth });
  const randPool = dmaBufferPool({ bufferSize: RAND, count: depth });
  const seqBufs = Array.from({ length: sequentialDepth }, () => seqPool.acquire());
  const randBufs = Array.from({ length: randomDepth }, () => randPool.acquire());
  // Incompressible data, in case the device or its host compresses or deduplicates zeros.
  const first = seqBufs[0]!.bytes;
  for (let o = 0; o < first.length; o += 65536) crypto.getRandomValues(first.subarray(o, o + 65536));
  for (const b of seqBufs) b.bytes.set(first);
  randBufs.forEach((b, i) => b.bytes.set(first.subarray((i % 256) * RAND, (i % 256) * RAND + RAND)));
  const r = reactor();
  const fd = file.descriptor;
  let ok = false;
  const blocks = fileSize / SEQ;
  const pages = fileSize / RAND;
  try {
    log(`iotune: ${mountpoint} (${file.fileSystem}${file.dmaIsReal ? "" : ", memory-backed: no real DMA"}), test file ${fileSize / MiB} MiB`);
    await file.allocate(0, fileSize, { keepSize: false });
    // Fill the file once so every block is written: reads of unwritten extents skip the disk.
    let next = 0;
    const fillStop = { failed: false };
    await joinWorkers(
      seqBufs.map(async (buf) => {
        for (let i = next++; i < blocks && !fillStop.failed; i = next++) await r.write(fd, buf, { offset: i * SEQ });
      }),
      fillStop,
    );
    await file.flush();

    const [, wBytes, wS] = await timed(sequentialDepth, durationMs, seqBufs, (buf, i) => r.write(fd, buf, { offset: (i % blocks) * SEQ }));
    const writeBandwidth = wBytes / wS;
    log(`iotune: sequential write ${(writeBandwidth / MiB).toFixed(0)} MiB/s`);
    const [, rBytes, rS] = await timed(sequentialDepth, durationMs, seqBufs, (buf, i) => r.read(fd, buf, { offset: (i % blocks) * SEQ }));
    const readBandwidth = rBytes / rS;
    log(`iotune: sequential read ${(readBandwidth / MiB).toFixed(0)} MiB/s`);
    const rand = (): number => Math.floor(Math.random() * pages) * RAND;
    const [wOps, , wiS] = await timed(randomDepth, durationMs, randBufs, (buf) => r.write(fd, buf, { offset: rand() }));
    const writeIops = wOps / wiS;
    log(`iotune: random 4 KiB write ${writeIops.toFixed(0)} IOPS`);
    const [rOps, , riS] = await timed(randomDepth, durationMs, randBufs, (buf) => r.read(fd, buf, { offset: rand() }));
    const readIops = rOps / riS;
    log(`iotune: random 4 KiB read ${readIops.toFixed(0)} IOPS`);

    const properties: DiskProperties = { mountpoint, readIops, readBandwidth, writeIops, writeBandwidth };
    if (opts.propertiesFile !== undefined) {
      await writeSmallFile(opts.propertiesFile, formatIoProperties([properties]));
      log(`iotune: wrote ${opts.propertiesFile}`);
    }
    ok = true;
    return { properties, fileSystem: file.fileSystem, fileSize, dmaIsReal: file.dmaIsReal };
  } finally {
    // Every step runs (the test file is up to 1 GiB); a cleanup failure is thrown only when
    // nothing failed before it, never in place of the measurement's own error.
    let cleanup: unknown;
    const step = async (f: () => unknown): Promise<void> => {
      try {
        await f();
      } catch (e) {
        cleanup ??= e;
      }
    };
    for (const b of seqBufs) b.release();
    for (const b of randBufs) b.release();
    await step(() => file.close());
    await step(() => remove(path));
    await step(() => seqPool.close());
    await step(() => randPool.close());
    if (ok && cleanup !== undefined) throw cleanup;
  }
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      "evaluation-directory": { type: "string" },
      "properties-file": { type: "string" },
      "duration-ms": { type: "string" },
      "file-size": { type: "string" },
      "random-depth": { type: "string" },
      "sequential-depth": { type: "string" },
      help: { type: "boolean" },
    },
    strict: true,
  });
  const dir = values["evaluation-directory"];
  if (values.help || dir === undefined) {
    console.log("usage: bun src/fs/iotune.ts --evaluation-directory DIR [--properties-file FILE] [--duration-ms MS] [--file-size BYTES] [--random-depth N] [--sequential-depth N]");
    return values.help ? 0 : 2;
  }
  const num = (k: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n)) throw new InvalidArgumentError(`--${k} must be a number, got ${describeValue(v)}`);
    return n;
  };
  const result = await iotune({
    directory: dir,
    propertiesFile: values["properties-file"],
    durationMs: num("duration-ms", values["duration-ms"]),
    fileSize: num("file-size", values["file-size"]),
    randomDepth: num("random-depth", values["random-depth"]),
    sequentialDepth: num("sequential-depth", values["sequential-depth"]),
    log: (l) => console.log(l),
  });
  if (values["properties-file"] === undefined) process.stdout.write(formatIoProperties([result.properties]));
  return 0;
}

if (import.meta.main) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      console.error(e instanceof Error ? `${e.name}: ${e.message}` : e);
      process.exit(1);
    },
  );
}
