/**
 * Typed errors. Every error Shoal throws is a ShoalError with a stable `code`.
 * Kernel failures are SystemErrors carrying the errno name and the operation.
 */

/** Base class: `code` is stable and machine-readable; `cause` carries the underlying error. */
export class ShoalError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A wrong argument: a negative size, an unaligned buffer, a value of the wrong type. Thrown before anything reaches the kernel. */
export class InvalidArgumentError extends ShoalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ERR_INVALID_ARG", message, options);
  }
}

/** A handle (file, reactor, buffer) used after it was closed or released. */
export class ClosedError extends ShoalError {
  constructor(message: string, code = "ERR_CLOSED") {
    super(code, message);
  }
}

/** An operation abandoned through its AbortSignal. `cause` is the signal's reason. */
export class AbortError extends ShoalError {
  constructor(message = "the operation was aborted", options?: { cause?: unknown }) {
    super("ABORT_ERR", message, options);
  }
}

/** An operation that did not finish within its deadline (withTimeout, semaphore waits...). */
export class TimedOutError extends ShoalError {
  constructor(message = "the operation timed out") {
    super("ETIMEDOUT", message);
  }
}

/** The native library or io_uring is missing or refused; the message names the cause and the fix. */
export class StartupError extends ShoalError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** Linux's errno names (asm-generic/errno-base.h and errno.h; x86-64 and arm64 use these). */
const errnoNames: Record<number, string> = {
  1: "EPERM", 2: "ENOENT", 3: "ESRCH", 4: "EINTR", 5: "EIO", 6: "ENXIO", 7: "E2BIG", 8: "ENOEXEC",
  9: "EBADF", 10: "ECHILD", 11: "EAGAIN", 12: "ENOMEM", 13: "EACCES", 14: "EFAULT", 15: "ENOTBLK",
  16: "EBUSY", 17: "EEXIST", 18: "EXDEV", 19: "ENODEV", 20: "ENOTDIR", 21: "EISDIR", 22: "EINVAL",
  23: "ENFILE", 24: "EMFILE", 25: "ENOTTY", 26: "ETXTBSY", 27: "EFBIG", 28: "ENOSPC", 29: "ESPIPE",
  30: "EROFS", 31: "EMLINK", 32: "EPIPE", 33: "EDOM", 34: "ERANGE", 35: "EDEADLK",
  36: "ENAMETOOLONG", 37: "ENOLCK", 38: "ENOSYS", 39: "ENOTEMPTY", 40: "ELOOP", 42: "ENOMSG",
  43: "EIDRM", 44: "ECHRNG", 45: "EL2NSYNC", 46: "EL3HLT", 47: "EL3RST", 48: "ELNRNG",
  49: "EUNATCH", 50: "ENOCSI", 51: "EL2HLT", 52: "EBADE", 53: "EBADR", 54: "EXFULL", 55: "ENOANO",
  56: "EBADRQC", 57: "EBADSLT", 59: "EBFONT", 60: "ENOSTR", 61: "ENODATA", 62: "ETIME", 63: "ENOSR",
  64: "ENONET", 65: "ENOPKG", 66: "EREMOTE", 67: "ENOLINK", 68: "EADV", 69: "ESRMNT", 70: "ECOMM",
  71: "EPROTO", 72: "EMULTIHOP", 73: "EDOTDOT", 74: "EBADMSG", 75: "EOVERFLOW", 76: "ENOTUNIQ",
  77: "EBADFD", 78: "EREMCHG", 79: "ELIBACC", 80: "ELIBBAD", 81: "ELIBSCN", 82: "ELIBMAX",
  83: "ELIBEXEC", 84: "EILSEQ", 85: "ERESTART", 86: "ESTRPIPE", 87: "EUSERS", 88: "ENOTSOCK",
  89: "EDESTADDRREQ", 90: "EMSGSIZE", 91: "EPROTOTYPE", 92: "ENOPROTOOPT", 93: "EPROTONOSUPPORT",
  94: "ESOCKTNOSUPPORT", 95: "EOPNOTSUPP", 96: "EPFNOSUPPORT", 97: "EAFNOSUPPORT", 98: "EADDRINUSE",
  99: "EADDRNOTAVAIL", 100: "ENETDOWN", 101: "ENETUNREACH", 102: "ENETRESET", 103: "ECONNABORTED",
  104: "ECONNRESET", 105: "ENOBUFS", 106: "EISCONN", 107: "ENOTCONN", 108: "ESHUTDOWN",
  109: "ETOOMANYREFS", 110: "ETIMEDOUT", 111: "ECONNREFUSED", 112: "EHOSTDOWN", 113: "EHOSTUNREACH",
  114: "EALREADY", 115: "EINPROGRESS", 116: "ESTALE", 117: "EUCLEAN", 118: "ENOTNAM",
  119: "ENAVAIL", 120: "EISNAM", 121: "EREMOTEIO", 122: "EDQUOT", 123: "ENOMEDIUM",
  124: "EMEDIUMTYPE", 125: "ECANCELED", 126: "ENOKEY", 127: "EKEYEXPIRED", 128: "EKEYREVOKED",
  129: "EKEYREJECTED", 130: "EOWNERDEAD", 131: "ENOTRECOVERABLE", 132: "ERFKILL", 133: "EHWPOISON",
};

/** The symbolic name of a positive errno value ("ECONNRESET"), or "E<n>" if unknown. */
export function errnoName(errno: number): string {
  return errnoNames[errno] ?? `E${errno}`;
}

/** A kernel error: `code` is the errno name, `errno` the number, `op` the operation that failed. */
export class SystemError extends ShoalError {
  readonly errno: number;
  readonly op: string;
  constructor(op: string, errno: number, detail?: string) {
    const name = errnoName(errno);
    super(name, `${op} failed: ${name}${detail ? ` (${detail})` : ""}`);
    this.errno = errno;
    this.op = op;
  }
}

type ErrorClass = new (...args: never[]) => Error;

/** Shoal's error classes, as each module defines them (see listShoalErrorClass). */
const shoalErrorClasses: ErrorClass[] = [];
let onShoalErrorClass: ((ctor: ErrorClass) => void) | undefined;

/**
 * @internal Lists one of Shoal's error classes (each module lists its own where it defines
 * it): the SMP codec carries instances across shards as themselves, so that `instanceof`
 * answers the same on the caller's shard.
 */
export function listShoalErrorClass(ctor: ErrorClass): void {
  shoalErrorClasses.push(ctor);
  onShoalErrorClass?.(ctor);
}

/** @internal Calls `fn` for every error class listed so far and every one listed later. */
export function forEachShoalErrorClass(fn: (ctor: ErrorClass) => void): void {
  onShoalErrorClass = fn;
  for (const c of shoalErrorClasses) fn(c);
}

for (const c of [ShoalError, InvalidArgumentError, ClosedError, AbortError, TimedOutError, StartupError, SystemError]) listShoalErrorClass(c);

/** Builds a SystemError from a negative result, or an AbortError for ECANCELED. */
export function errorFromResult(op: string, res: number): Error {
  if (res === -125) return new AbortError(`${op} was cancelled`);
  return new SystemError(op, -res);
}
