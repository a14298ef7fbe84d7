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

const errnoNames: Record<number, string> = {
  1: "EPERM", 2: "ENOENT", 3: "ESRCH", 4: "EINTR", 5: "EIO", 6: "ENXIO", 7: "E2BIG", 9: "EBADF",
  11: "EAGAIN", 12: "ENOMEM", 13: "EACCES", 14: "EFAULT", 16: "EBUSY", 17: "EEXIST", 18: "EXDEV",
  19: "ENODEV", 20: "ENOTDIR", 21: "EISDIR", 22: "EINVAL", 23: "ENFILE", 24: "EMFILE", 25: "ENOTTY",
  26: "ETXTBSY", 27: "EFBIG", 28: "ENOSPC", 29: "ESPIPE", 30: "EROFS", 31: "EMLINK", 32: "EPIPE",
  34: "ERANGE", 36: "ENAMETOOLONG", 38: "ENOSYS", 39: "ENOTEMPTY", 61: "ENODATA", 62: "ETIME",
  75: "EOVERFLOW", 77: "EBADFD", 88: "ENOTSOCK", 89: "EDESTADDRREQ", 90: "EMSGSIZE", 91: "EPROTOTYPE",
  92: "ENOPROTOOPT", 93: "EPROTONOSUPPORT", 95: "EOPNOTSUPP", 97: "EAFNOSUPPORT", 98: "EADDRINUSE",
  99: "EADDRNOTAVAIL", 100: "ENETDOWN", 101: "ENETUNREACH", 103: "ECONNABORTED", 104: "ECONNRESET",
  105: "ENOBUFS", 106: "EISCONN", 107: "ENOTCONN", 108: "ESHUTDOWN", 110: "ETIMEDOUT",
  111: "ECONNREFUSED", 112: "EHOSTDOWN", 113: "EHOSTUNREACH", 114: "EALREADY", 115: "EINPROGRESS",
  122: "EDQUOT", 125: "ECANCELED",
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

/** Builds a SystemError from a negative result, or an AbortError for ECANCELED. */
export function errorFromResult(op: string, res: number): Error {
  if (res === -125) return new AbortError(`${op} was cancelled`);
  return new SystemError(op, -res);
}
