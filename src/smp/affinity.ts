/**
 * CPU sets and thread pinning (native: zig/smp.zig). A shard pins its own thread from inside
 * its Worker; sched_setaffinity acts on the calling thread only, so other Workers and Bun's
 * helper threads are unaffected.
 */
import { native } from "../core/native.ts";
import { InvalidArgumentError, StartupError, errnoName } from "../core/errors.ts";
import { describeValue } from "../core/describe.ts";

/** Highest CPU number a mask can hold, plus one. */
export const MAX_CPUS = 1024;

function maskBuffer(): Uint8Array {
  const bytes = native().shoal_smp_mask_bytes();
  return new Uint8Array(bytes);
}

function cpusOf(mask: Uint8Array): number[] {
  const cpus: number[] = [];
  for (let i = 0; i < mask.length; i++) {
    const byte = mask[i]!;
    if (byte === 0) continue;
    for (let b = 0; b < 8; b++) if (byte & (1 << b)) cpus.push(i * 8 + b);
  }
  return cpus;
}

/**
 * The CPUs the calling thread may run on (sched_getaffinity), ascending. On the main thread at
 * start this is the process's CPU set (taskset, cgroup cpusets). Costs one system call.
 * Throws StartupError if the native library is missing.
 */
export function threadCpuAffinity(): number[] {
  const mask = maskBuffer();
  const rc = native().shoal_smp_get_affinity(mask, mask.length);
  if (rc < 0) throw new StartupError("ERR_AFFINITY", `sched_getaffinity failed: ${errnoName(-rc)}`);
  return cpusOf(mask);
}

/**
 * Pins the calling thread to `cpu`. Throws StartupError naming the CPU when the kernel refuses
 * (a CPU that does not exist or lies outside this process's cgroup cpuset).
 */
export function pinThread(cpu: number): void {
  if (!Number.isInteger(cpu) || cpu < 0 || cpu >= MAX_CPUS) throw new InvalidArgumentError(`cpu must be an integer in 0..${MAX_CPUS - 1}, got ${describeValue(cpu)}`);
  const rc = native().shoal_smp_pin_thread(cpu);
  if (rc < 0) {
    throw new StartupError("ERR_AFFINITY", `could not pin the shard's thread to CPU ${cpu}: sched_setaffinity failed with ${errnoName(-rc)}`);
  }
}

/** Replaces the calling thread's CPU set (tests restore what they changed). Throws StartupError. */
export function setThreadCpuAffinity(cpus: readonly number[]): void {
  const mask = maskBuffer();
  for (const cpu of cpus) {
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= MAX_CPUS) throw new InvalidArgumentError(`cpu must be an integer in 0..${MAX_CPUS - 1}, got ${describeValue(cpu)}`);
    mask[cpu >> 3]! |= 1 << (cpu & 7);
  }
  const rc = native().shoal_smp_set_affinity(mask, mask.length);
  if (rc < 0) throw new StartupError("ERR_AFFINITY", `sched_setaffinity failed: ${errnoName(-rc)}`);
}

/** The CPU the calling thread is running on right now (getcpu). */
export function currentCpu(): number {
  const rc = native().shoal_smp_current_cpu();
  if (rc < 0) throw new StartupError("ERR_AFFINITY", `getcpu failed: ${errnoName(-rc)}`);
  return rc;
}

/** The calling thread's kernel thread id. */
export function threadId(): number {
  return native().shoal_smp_thread_id();
}

/**
 * Parses a CPU list like "0-3,6" (Linux cpuset syntax) into ascending, distinct CPU numbers.
 * Throws InvalidArgumentError that names the bad part.
 */
export function parseCpuset(text: string): number[] {
  if (typeof text !== "string" || text.trim() === "") throw new InvalidArgumentError('a CPU set must look like "0-3,6"; got an empty string');
  const cpus = new Set<number>();
  for (const raw of text.split(",")) {
    const part = raw.trim();
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new InvalidArgumentError(`bad CPU set "${text}": "${part}" is not a CPU number or a range like 0-3`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo) throw new InvalidArgumentError(`bad CPU set "${text}": the range "${part}" runs backwards`);
    if (hi >= MAX_CPUS) throw new InvalidArgumentError(`bad CPU set "${text}": CPU ${hi} is beyond ${MAX_CPUS - 1}`);
    for (let c = lo; c <= hi; c++) cpus.add(c);
  }
  return [...cpus].sort((a, b) => a - b);
}

/** Formats ascending CPU numbers compactly: [0,1,2,3,6] -> "0-3,6". */
export function formatCpuset(cpus: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < cpus.length; ) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j]! + 1) j++;
    parts.push(j === i ? `${cpus[i]}` : `${cpus[i]}-${cpus[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}
