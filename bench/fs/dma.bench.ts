/**
 * DMA file I/O: Shoal (openFileDma + dmaReadInto/dmaWrite through the I/O scheduler and the
 * reactor) against fio (io_uring engine, O_DIRECT) on the same file in the same run.
 * Workloads: 4 KiB random reads and writes at queue depth 1 and 32, 1 MiB sequential reads
 * and writes at queue depth 4. Each round runs fio, Shoal, and the bare reactor (read/write on
 * the same descriptor, no fs layer) back to back, the order alternating between rounds; the
 * table shows the medians, Shoal's ratio to fio, and the median of the rounds' paired ratios.
 * The page cache is out of the picture: both sides use O_DIRECT; /proc/diskstats shows that each
 * run moved at least the bytes it reported on the device (a cache hit would make the ratio < 1),
 * and fincore(1) shows none of the file resident in the page cache afterwards. With
 * --drop-caches (root) caches are also dropped before every run.
 *
 * Waiting: fio sleeps in io_uring_enter until a completion arrives; Shoal's loop by default
 * busy-polls for 200 µs after work (--idle-poll-time-us). `--idle-poll-us N` sets that for the
 * run (0: wait like fio). Measured on the 2-vCPU machine (7 rounds each): polling helps QD32
 * reads (92% of fio polling vs 80% without) and costs CPU on QD32 writes (112-122 empty turns
 * and 9.8-13 µs of CPU per write polling, 4.5-5.9 µs without) without changing their ratio
 * (78% vs 74.5%).
 *
 *   bun bench/fs/dma.bench.ts [--rounds 5] [--seconds 2] [--dir DIR] [--size-mib 1024]
 *                             [--only randread-4k-qd1,...] [--drop-caches] [--out FILE.md]
 *                             [--idle-poll-us 200] [--submit-batch 4]
 *
 * Submitting: the I/O scheduler hands requests to the kernel every `--submit-batch` queued
 * descriptors (configureIoScheduler's submitBatch; 0: once per loop turn). On the 2-vCPU VM's
 * virtio disk, QD32 random writes ran at 77% of fio with 0 and ~100% with 4
 * (bench/fs/submit-batching.c shows the same effect in C with liburing).
 */
import { parseArgs } from "node:util";
import { mkdirSync, writeFileSync, readFileSync, rmSync, rmdirSync } from "node:fs";
import { configureLoop, reactor } from "../../src/index.ts";
import { configureIoScheduler, dmaBufferPool, openFileDma, stat, type DmaFile } from "../../src/fs/index.ts";

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "5" },
    seconds: { type: "string", default: "2" },
    dir: { type: "string", default: `${process.env.TMPDIR ?? "/tmp"}/shoal-bench-fs` },
    "size-mib": { type: "string", default: "1024" },
    only: { type: "string" },
    out: { type: "string" },
    "drop-caches": { type: "boolean", default: false },
    "idle-poll-us": { type: "string", default: "200" },
    "submit-batch": { type: "string", default: "4" },
  },
});
const idlePollUs = Number(values["idle-poll-us"]);
if (!Number.isFinite(idlePollUs) || idlePollUs < 0) throw new Error(`--idle-poll-us must be a number >= 0, got ${values["idle-poll-us"]}`);
configureLoop({ idlePollTimeUs: idlePollUs });
const submitBatch = Number(values["submit-batch"]);
await configureIoScheduler({ submitBatch });
const rounds = Number(values.rounds);
const seconds = Number(values.seconds);
const sizeBytes = Number(values["size-mib"]) * 1024 * 1024;
const dir = values.dir!;

interface Workload {
  name: string;
  rw: "randread" | "randwrite" | "read" | "write";
  bs: number;
  qd: number;
}

const workloads: Workload[] = [
  { name: "randread-4k-qd1", rw: "randread", bs: 4096, qd: 1 },
  { name: "randread-4k-qd32", rw: "randread", bs: 4096, qd: 32 },
  { name: "randwrite-4k-qd1", rw: "randwrite", bs: 4096, qd: 1 },
  { name: "randwrite-4k-qd32", rw: "randwrite", bs: 4096, qd: 32 },
  { name: "read-1m-qd4", rw: "read", bs: 1 << 20, qd: 4 },
  { name: "write-1m-qd4", rw: "write", bs: 1 << 20, qd: 4 },
].filter((w) => !values.only || values.only.split(",").includes(w.name)) as Workload[];

interface Run {
  iops: number;
  bandwidth: number;
  /** Bytes the device moved during the run / bytes the tool reported: ~1 when the page cache is bypassed. */
  deviceRatio: number;
}

const dropping = values["drop-caches"] === true && process.getuid?.() === 0;

async function dropCaches(): Promise<void> {
  if (!dropping) return;
  // In a child process: a synchronous sync(1) would stall this shard's loop.
  await Bun.spawn(["sh", "-c", "sync && echo 3 > /proc/sys/vm/drop_caches"]).exited;
}

let devMajor = 0;
let devMinor = 0;

/** [sectors read, sectors written] of the file's device, or of the whole disk holding it. */
function sectors(): [number, number] {
  for (const line of readFileSync("/proc/diskstats", "utf8").split("\n")) {
    const f = line.trim().split(/\s+/);
    if (Number(f[0]) === devMajor && Number(f[1]) === devMinor) return [Number(f[5]), Number(f[9])];
  }
  return [Number.NaN, Number.NaN];
}

function fioArgs(w: Workload, file: string): string[] {
  return [
    "fio", "--name=bench", `--filename=${file}`, `--size=${sizeBytes}`, "--ioengine=io_uring", "--direct=1",
    `--rw=${w.rw}`, `--bs=${w.bs}`, `--iodepth=${w.qd}`, "--time_based", `--runtime=${seconds}`,
    "--norandommap", "--randrepeat=0", "--output-format=json",
  ];
}

async function runFio(w: Workload, file: string): Promise<Run> {
  await dropCaches();
  const before = sectors();
  // Asynchronously, so that this process's shard is not reported as stalled while fio runs.
  const proc = Bun.spawn(fioArgs(w, file), { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  const after = sectors();
  if (code !== 0) throw new Error(`fio failed: ${err}`);
  const job = JSON.parse(out).jobs[0];
  const side = w.rw.includes("read") ? job.read : job.write;
  const bytes = side.io_bytes as number;
  const dev = w.rw.includes("read") ? after[0] - before[0] : after[1] - before[1];
  return { iops: side.iops, bandwidth: side.bw_bytes, deviceRatio: (dev * 512) / bytes };
}

/**
 * Shoal's run: DmaFile through the I/O scheduler, or with `raw` the reactor's own read/write on
 * the same descriptor (no fs layer), which tells the fs layer's cost apart from the core's.
 */
async function runShoal(w: Workload, f: DmaFile, buffers: ReturnType<typeof dmaBufferPool>, raw = false): Promise<Run> {
  await dropCaches();
  const before = sectors();
  const write = w.rw.includes("write");
  const random = w.rw.startsWith("rand");
  const blocks = sizeBytes / w.bs;
  const r = reactor();
  const fd = f.descriptor;
  let next = 0;
  let ops = 0;
  let bytes = 0;
  const start = performance.now();
  const deadline = start + seconds * 1000;
  const worker = async (): Promise<void> => {
    const b = buffers.acquire();
    try {
      while (performance.now() < deadline) {
        const block = random ? Math.floor(Math.random() * blocks) : next++ % blocks;
        const pos = block * w.bs;
        const n = raw
          ? write ? await r.write(fd, b, { offset: pos }) : await r.read(fd, b, { offset: pos })
          : write ? await f.dmaWrite(pos, b) : await f.dmaReadInto(pos, b);
        ops++;
        bytes += n;
      }
    } finally {
      b.release();
    }
  };
  await Promise.all(Array.from({ length: w.qd }, worker));
  const elapsed = (performance.now() - start) / 1000;
  const after = sectors();
  const dev = write ? after[1] - before[1] : after[0] - before[0];
  return { iops: ops / elapsed, bandwidth: bytes / elapsed, deviceRatio: (dev * 512) / bytes };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

async function main(): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const file = `${dir}/fio-vs-shoal.dat`;
  // Write the whole file once (fio's own layout), so every read hits written blocks on disk.
  const layout = Bun.spawnSync(["fio", "--name=layout", `--filename=${file}`, `--size=${sizeBytes}`, "--ioengine=io_uring", "--direct=1", "--rw=write", "--bs=1M", "--iodepth=8"], { stdout: "pipe", stderr: "pipe" });
  if (layout.exitCode !== 0) throw new Error(`fio layout failed: ${layout.stderr.toString()}`);
  const st = await stat(file);
  devMajor = st.deviceMajor;
  devMinor = st.deviceMinor;
  const f = await openFileDma(file, { flags: "r+" });
  const fioVersion = Bun.spawnSync(["fio", "--version"]).stdout.toString().trim();
  console.log(`fs bench: ${file} (${f.fileSystem}, device ${devMajor}:${devMinor}, ${sizeBytes >> 20} MiB), ${rounds} rounds x ${seconds} s, ${fioVersion}, caches dropped: ${dropping}, Shoal idle poll: ${idlePollUs} µs, submit batch: ${submitBatch}`);
  const rows: string[] = [];
  for (const w of workloads) {
    const pool = dmaBufferPool({ bufferSize: w.bs, count: w.qd });
    for (const b of Array.from({ length: w.qd }, () => pool.acquire())) {
      for (let i = 0; i < b.length; i++) b.bytes[i] = (i * 131) & 0xff;
      b.release();
    }
    const fio: Run[] = [];
    const shoal: Run[] = [];
    const core: Run[] = [];
    for (let r = 0; r < rounds; r++) {
      // Alternate the order so that neither side always follows the other's writes.
      const steps = [
        async () => fio.push(await runFio(w, file)),
        async () => shoal.push(await runShoal(w, f, pool)),
        async () => core.push(await runShoal(w, f, pool, true)),
      ];
      for (const step of r % 2 === 0 ? steps : steps.reverse()) await step();
    }
    pool.close();
    const m = (runs: Run[], k: keyof Run) => median(runs.map((x) => x[k]));
    const fioIops = m(fio, "iops");
    const shoalIops = m(shoal, "iops");
    const ratio = shoalIops / fioIops;
    // Each round's pair ran back to back: its ratio is robust to the slow drifts of a shared host.
    const paired = median(shoal.map((x, i) => x.iops / fio[i]!.iops));
    const unit = w.bs >= 1 << 20 ? "MiB/s" : "IOPS";
    const show = (iops: number) => (unit === "IOPS" ? iops.toFixed(0) : ((iops * w.bs) / (1 << 20)).toFixed(0));
    const coreIops = m(core, "iops");
    const line =
      `| ${w.name} | ${show(fioIops)} | ${show(shoalIops)} | ${unit} | **${(ratio * 100).toFixed(1)}%** | ${(paired * 100).toFixed(1)}% ` +
      `| ${show(coreIops)} (${((coreIops / fioIops) * 100).toFixed(1)}%) | ${m(fio, "deviceRatio").toFixed(2)} / ${m(shoal, "deviceRatio").toFixed(2)} |`;
    console.log(line, `  fio: ${fio.map((x) => show(x.iops)).join(" ")}; shoal: ${shoal.map((x) => show(x.iops)).join(" ")}; reactor: ${core.map((x) => show(x.iops)).join(" ")}`);
    rows.push(line);
  }
  await f.close();
  const resident = Bun.spawnSync(["fincore", "--bytes", "--noheadings", "--output", "RES", file]).stdout.toString().trim();
  console.log(`page cache holding the file afterwards (fincore): ${resident || "n/a"} bytes; reactor in flight at the end: ${reactor().counters().inFlight}`);
  rmSync(file, { force: true });
  try {
    rmdirSync(dir); // only if empty: --dir may be a directory of the user's
  } catch {}
  if (values.out) {
    const header =
      "| workload | fio | Shoal DmaFile | unit | Shoal / fio (medians) | median of paired ratios | reactor().read/write alone (/ fio) | device bytes / reported (fio / Shoal) |\n" +
      "|---|---:|---:|---|---:|---:|---:|---:|";
    writeFileSync(values.out, `${header}\n${rows.join("\n")}\n`);
  }
}

await main();
