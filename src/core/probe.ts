/**
 * Start-up probe: explains, with the fix, why io_uring cannot be used here.
 * Run once per process before the first reactor is created.
 */
import { native } from "./native.ts";
import { InvalidArgumentError, StartupError, errnoName } from "./errors.ts";
import { describeValue } from "./describe.ts";

/** The io_uring operations Shoal uses: name, and the Linux release that added it when after 6.1. */
const opNames: Record<number, [string, string?]> = {
  0: ["NOP"], 1: ["READV"], 2: ["WRITEV"], 3: ["FSYNC"], 6: ["POLL_ADD"], 9: ["SENDMSG"], 10: ["RECVMSG"],
  11: ["TIMEOUT"], 12: ["TIMEOUT_REMOVE"], 13: ["ACCEPT"], 14: ["ASYNC_CANCEL"], 16: ["CONNECT"],
  17: ["FALLOCATE"], 18: ["OPENAT"], 19: ["CLOSE"], 21: ["STATX"], 22: ["READ"], 23: ["WRITE"],
  26: ["SEND"], 27: ["RECV"], 34: ["SHUTDOWN"], 35: ["RENAMEAT"], 36: ["UNLINKAT"], 37: ["MKDIRAT"],
  39: ["LINKAT"], 40: ["MSG_RING"], 47: ["SEND_ZC"], 55: ["FTRUNCATE", "6.9"],
};

export interface ProbeReport {
  features: number;
  memlockKiB: number;
  ioUringDisabled: number;
}

let cached: ProbeReport | undefined;

/**
 * Checks that io_uring is usable and has every operation in `extraOps` (IORING_OP numbers)
 * besides the core set. Throws StartupError naming the cause and the fix.
 */
export function probeIoUring(extraOps: readonly number[] = []): ProbeReport {
  if (cached && extraOps.length === 0) return cached;
  for (const op of extraOps) {
    // The ops travel as bytes: 256 read as NOP (0) and passed the probe.
    if (!Number.isInteger(op) || op < 0 || op > 255) {
      throw new InvalidArgumentError(`probeIoUring: an io_uring op is an integer in 0..255, got ${describeValue(op)}`);
    }
  }
  const lib = native();
  const out = new BigInt64Array(4); // matches probe.Result (32 bytes)
  const ops = new Uint8Array(Math.max(1, extraOps.length));
  ops.set(extraOps);
  lib.shoal_probe(out, ops, extraOps.length);
  const i32 = new Int32Array(out.buffer);
  const setupErrno = i32[0]!;
  const missingOp = i32[1]!;
  const missingExtArg = i32[2]!;
  const disabled = i32[3]!;
  const memlockKiB = Number(out[2]!);
  const features = i32[6]! >>> 0;
  if (setupErrno !== 0) {
    throw new StartupError("ERR_IO_URING_UNAVAILABLE", explainSetup(setupErrno, disabled, memlockKiB));
  }
  if (missingExtArg) {
    throw new StartupError(
      "ERR_IO_URING_TOO_OLD",
      "io_uring on this kernel lacks IORING_FEAT_EXT_ARG (kernel-side wait timeouts, Linux 5.11+). Shoal needs Linux 6.1 or newer.",
    );
  }
  if (missingOp >= 0) {
    const [name, since] = opNames[missingOp] ?? [`#${missingOp}`];
    throw new StartupError(
      "ERR_IO_URING_OP_MISSING",
      `io_uring on this kernel does not support IORING_OP_${name}, which Shoal needs. Upgrade to Linux ${since ?? "6.1"} or newer.`,
    );
  }
  const report = { features, memlockKiB, ioUringDisabled: disabled };
  if (extraOps.length === 0) cached = report;
  return report;
}

function explainSetup(errno: number, disabled: number, memlockKiB: number): string {
  const name = errnoName(errno);
  switch (name) {
    case "ENOSYS":
      return "io_uring_setup failed with ENOSYS: this kernel has no io_uring (built without CONFIG_IO_URING, or older than 5.1). Shoal needs Linux 6.1 or newer.";
    case "EPERM":
    case "EACCES":
      if (disabled === 2) {
        return `io_uring_setup failed with ${name}: io_uring is disabled for all processes (kernel.io_uring_disabled=2). Enable it with \`sysctl -w kernel.io_uring_disabled=0\`.`;
      }
      if (disabled === 1) {
        return `io_uring_setup failed with ${name}: io_uring is limited to the group in kernel.io_uring_group (kernel.io_uring_disabled=1). Add this user to that group or run \`sysctl -w kernel.io_uring_disabled=0\`.`;
      }
      return `io_uring_setup failed with ${name}: a seccomp policy (container runtime or sandbox) refuses io_uring. Run with a seccomp profile that allows io_uring_setup, io_uring_enter and io_uring_register.`;
    case "ENOMEM":
      return `io_uring_setup failed with ENOMEM: the locked-memory limit (RLIMIT_MEMLOCK = ${memlockKiB < 0 ? "unlimited" : `${memlockKiB} KiB`}) or memory is too small for the ring. Raise it with \`ulimit -l unlimited\` (or LimitMEMLOCK= in systemd).`;
    case "EMFILE":
    case "ENFILE":
      return `io_uring_setup failed with ${name}: out of file descriptors. Raise \`ulimit -n\`.`;
    default:
      return `io_uring_setup failed with ${name}.`;
  }
}
