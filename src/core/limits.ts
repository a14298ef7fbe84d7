/**
 * The process's limit on open descriptors (RLIMIT_NOFILE), read and raised. The limit belongs to
 * the process: every shard (a Worker thread) opens its ring, eventfds and sockets against the
 * same one, so a server raises it on the main thread before its shards start.
 */
import { InvalidArgumentError, SystemError } from "./errors.ts";
import { native } from "./native.ts";

/** RLIMIT_NOFILE: descriptors a process may open (soft), and how far it may raise that (hard). */
export interface FileLimit {
  /** The limit in force: open() and accept() fail with EMFILE past it. Infinity: none. */
  soft: number;
  /** The ceiling of `soft`; raising it needs CAP_SYS_RESOURCE and stops at fs.nr_open. Infinity: none. */
  hard: number;
}

const NO_LIMIT = 0xffff_ffff_ffff_ffffn;

function read(hard: 0 | 1): number {
  const v = native().shoal_nofile_limit(hard);
  if (typeof v === "bigint") return Infinity; // RLIM_INFINITY, read as maxInt(i64)
  if (v < 0) throw new SystemError("getrlimit(RLIMIT_NOFILE)", -v);
  return v;
}

/** 0, or the negative errno of setrlimit(RLIMIT_NOFILE, soft, hard). */
function set(soft: number, hard: number): number {
  const n = (v: number): number | bigint => (v === Infinity ? NO_LIMIT : v);
  return native().shoal_set_nofile_limit(n(soft), n(hard));
}

/** The process's open-descriptors limit now (one getrlimit per field). Throws SystemError if the kernel refuses. */
export function fileLimit(): FileLimit {
  return { soft: read(0), hard: read(1) };
}

/** What raiseFileLimit tries for beyond what it must reach. */
export interface RaiseFileLimitOptions {
  /** Best effort: the soft limit is raised this far where allowed (default: `required`). */
  wanted?: number | undefined;
}

function checkCount(name: string, v: unknown): asserts v is number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw new InvalidArgumentError(`${name} must be a non-negative integer, got ${String(v)}`);
  }
}

/**
 * Raises the open-descriptors limit so that the soft limit is at least `required` and, as far
 * as allowed, `options.wanted`. Never lowers either limit. Within the hard limit nothing more is
 * needed; past it the hard limit is raised too (to `wanted`, else to `required`), which needs
 * CAP_SYS_RESOURCE and stops at fs.nr_open. Costs a few system calls; process-wide.
 *
 * Returns the limit it leaves. Throws SystemError (op "setrlimit(RLIMIT_NOFILE)", code EPERM as
 * a rule) when `required` cannot be reached; the limit is then left as it was. Throws
 * InvalidArgumentError for a count that is not a non-negative integer.
 */
export function raiseFileLimit(required: number, options: RaiseFileLimitOptions = {}): FileLimit {
  return raiseFileLimitOn({ get: fileLimit, set }, required, options);
}

/** @internal The kernel's side of raiseFileLimit: the limit now, and setrlimit (0 or -errno). */
export interface FileLimitKernel {
  get(): FileLimit;
  set(soft: number, hard: number): number;
}

/** @internal raiseFileLimit against `kernel` (tests give it one that may raise a hard limit). */
export function raiseFileLimitOn(kernel: FileLimitKernel, required: number, options: RaiseFileLimitOptions = {}): FileLimit {
  checkCount("required", required);
  if (options.wanted !== undefined) checkCount("wanted", options.wanted);
  const wanted = Math.max(required, options.wanted ?? required);
  const was = kernel.get();
  if (was.soft >= wanted) return was;
  let errno = 0;
  // Past the hard limit: raise both, to all that is wanted, else to what is required.
  if (wanted > was.hard) {
    for (const target of new Set([wanted, required])) {
      if (target <= was.hard) continue;
      const rc = kernel.set(target, target);
      if (rc === 0) return kernel.get();
      errno = -rc;
    }
  }
  if (required > was.hard) {
    throw new SystemError("setrlimit(RLIMIT_NOFILE)", errno, `${required} descriptors needed, the hard limit is ${was.hard} and cannot be raised`);
  }
  // Within the hard limit no privilege is needed.
  const rc = kernel.set(Math.min(wanted, was.hard), was.hard);
  if (rc !== 0 && was.soft < required) {
    throw new SystemError("setrlimit(RLIMIT_NOFILE)", -rc, `${required} descriptors needed, the soft limit is ${was.soft}`);
  }
  return kernel.get();
}
