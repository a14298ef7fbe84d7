/**
 * Errors of the socket API beyond core's (SystemError carries errno name and operation for
 * every kernel failure; ClosedError, AbortError and TimedOutError come from core).
 */
import { listShoalErrorClass, ShoalError } from "../core/errors.ts";

/** The stream ended before readExactly got its bytes. `received` says how many there were. */
export class UnexpectedEofError extends ShoalError {
  readonly received: number;
  readonly expected: number;
  constructor(op: string, received: number, expected: number) {
    super("ERR_UNEXPECTED_EOF", `${op}: the stream ended after ${received} of ${expected} bytes`);
    this.received = received;
    this.expected = expected;
  }
}
listShoalErrorClass(UnexpectedEofError);

const noop = (): void => {};

/** A rejected promise already marked handled: it never reports an unhandled rejection. */
export function rejectedHandled<T>(err: unknown): Promise<T> {
  const p = Promise.reject(err) as Promise<T>;
  p.catch(noop);
  return p;
}

/** Marks `p` handled (no unhandled-rejection report) and returns it unchanged. */
export function markHandled<T>(p: Promise<T>): Promise<T> {
  p.catch(noop);
  return p;
}
