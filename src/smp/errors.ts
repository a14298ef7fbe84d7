/**
 * Typed errors of the smp layer. Each has a stable `code`; errors raised on one shard and
 * rejected on another keep their class when they are one of these (see remote.ts).
 */
import { ShoalError } from "../core/errors.ts";

/** A value cannot cross shards (a function, a symbol, a class instance, a cycle). `path` names where. */
export class EncodeError extends ShoalError {
  /** Where in the value the offending part sits, e.g. `argument 1 .items[3]`. */
  path: string;
  /** @internal the reason without the path */
  readonly reason: string;
  constructor(reason: string, path = "") {
    super("ERR_SMP_ENCODE", path ? `${path}: ${reason}` : reason);
    this.reason = reason;
    this.path = path;
  }

  /** @internal Adds an outer path segment while the error unwinds out of a container. */
  prepend(segment: string): this {
    if (this.path === "") this.path = segment;
    else if (/^[A-Za-z]/.test(segment)) this.path = `${segment} at ${this.path}`; // "argument 1 at .items[3]"
    else this.path = `${segment}${this.path.startsWith("[") || this.path.startsWith(".") || this.path.startsWith("<") ? "" : " "}${this.path}`;
    this.message = `${this.path}: ${this.reason}`;
    return this;
  }
}

/** An encoded message is larger than a ring can carry; large payloads should cross as NativeBuffers. */
export class MessageTooLargeError extends ShoalError {
  constructor(message: string) {
    super("ERR_SMP_MESSAGE_TOO_LARGE", message);
  }
}

/** submitTo/post named a handler that was never registered with registerHandler. */
export class UnknownHandlerError extends ShoalError {
  constructor(message: string) {
    super("ERR_SMP_UNKNOWN_HANDLER", message);
  }
}

/** invokeOn & co. named a method the service does not have. */
export class UnknownMethodError extends ShoalError {
  constructor(message: string) {
    super("ERR_SMP_UNKNOWN_METHOD", message);
  }
}

/** A shard id that is not an integer in 0..smp.count-1. */
export class ShardRangeError extends ShoalError {
  constructor(message: string) {
    super("ERR_SMP_SHARD_RANGE", message);
  }
}

/** The target shard exited or crashed before it replied; the call may or may not have run. */
export class ShardGoneError extends ShoalError {
  /** The shard that is gone. */
  readonly shard: number;
  constructor(shard: number, message: string) {
    super("ERR_SMP_SHARD_GONE", message);
    this.shard = shard;
  }
}

/** A cross-shard call made where there is no shard: on the supervisor thread, or after shutdown. */
export class SmpNotRunningError extends ShoalError {
  constructor(message: string) {
    super("ERR_SMP_NOT_RUNNING", message);
  }
}

/** A handler or service registered twice, too late (after the shard started), or differently on two shards. */
export class RegistrationError extends ShoalError {
  constructor(message: string) {
    super("ERR_SMP_REGISTRATION", message);
  }
}

/** A call reached a service that is stopping or stopped on that shard. */
export class ServiceStoppedError extends ShoalError {
  constructor(message: string) {
    super("ERR_SERVICE_STOPPED", message);
  }
}

/** A call reached a service that was never started (or is still starting) on that shard. */
export class ServiceNotStartedError extends ShoalError {
  constructor(message: string) {
    super("ERR_SERVICE_NOT_STARTED", message);
  }
}

/** start() on a service that is already running or starting. */
export class ServiceStateError extends ShoalError {
  constructor(message: string) {
    super("ERR_SERVICE_STATE", message);
  }
}

/**
 * An exception thrown on another shard whose class is not registered (registerErrorClass: Shoal's
 * errors, SystemError and the built-in TypeError, RangeError... are, and arrive as themselves).
 * `name`, `message`, `code` and `stack` are the remote ones (the stack ends with where the call
 * was made); `shard` is where it was thrown; the remote error's other own enumerable properties
 * (errno, op, ...) are copied when they could cross.
 */
export class RemoteError extends ShoalError {
  /** The shard the error was thrown on. */
  shard = -1;
  /** @internal */
  constructor(name: string, message: string, code: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = name;
  }
}
