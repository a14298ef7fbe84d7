/**
 * A condition variable for fibers (seastar/core/condition-variable.hh): no mutex, since code
 * between two awaits already runs alone on its shard.
 */
import { InvalidArgumentError, listShoalErrorClass, ShoalError } from "./errors.ts";
import { RESOLVED, WaitList, abortError, checkOptions, type WaitOptions, type Waiter } from "./future.ts";

/** The default error of a broken condition variable (code ERR_BROKEN_CONDITION_VARIABLE). */
export class BrokenConditionVariableError extends ShoalError {
  constructor(message = "condition variable is broken") {
    super("ERR_BROKEN_CONDITION_VARIABLE", message);
  }
}
listShoalErrorClass(BrokenConditionVariableError);

type Predicate = () => unknown;

/**
 * Waiters queue in FIFO order. signal() wakes the first one or, when nobody waits, is
 * remembered and consumed by the next wait() (as in Seastar, so a signal sent just before
 * the wait is not lost). broadcast() wakes every current waiter and is not remembered.
 * A predicate wait re-checks its predicate each time it is woken: when it is still false the
 * wake-up is consumed and the waiter goes back to the end of the queue.
 */
export class ConditionVariable {
  private signalled = false;
  private error: unknown = undefined;
  private isBrokenFlag = false;
  private readonly waitList = new WaitList<void, Predicate | undefined>("condition variable wait");

  /** True while somebody waits. */
  get hasWaiters(): boolean {
    return this.waitList.length > 0;
  }

  /** Number of waiters. */
  get waiters(): number {
    return this.waitList.length;
  }

  /** True once broken() was called. */
  get isBroken(): boolean {
    return this.isBrokenFlag;
  }

  /**
   * `wait(opts?)` resolves on the next signal() or broadcast(), or at once by consuming a
   * signal that arrived while nobody waited. `wait(predicate, opts?)` resolves at once if
   * `predicate()` is truthy and otherwise when a wake-up finds it truthy; the predicate runs
   * synchronously inside signal()/broadcast(), and an exception from it rejects the wait.
   * Rejects with the broken() error, with AbortError if `opts.signal` is or becomes aborted,
   * or with TimedOutError once `opts.timeoutMs` has passed (one deadline for the whole wait).
   * Cost: no allocation when it resolves at once; otherwise one waiter record, its promise,
   * and a Timer if `timeoutMs` is finite.
   * Throws InvalidArgumentError (synchronously) for malformed arguments.
   */
  wait(opts?: WaitOptions): Promise<void>;
  wait(predicate: () => unknown, opts?: WaitOptions): Promise<void>;
  wait(predicateOrOpts?: (() => unknown) | WaitOptions, maybeOpts?: WaitOptions): Promise<void> {
    let predicate: Predicate | undefined;
    let opts: WaitOptions | undefined;
    if (typeof predicateOrOpts === "function") {
      predicate = predicateOrOpts;
      opts = maybeOpts;
    } else {
      if (maybeOpts !== undefined) {
        throw new InvalidArgumentError("predicate must be a function when options are given second");
      }
      opts = predicateOrOpts;
    }
    checkOptions(opts, "opts", true);
    const signal = opts?.signal;
    if (signal?.aborted) return Promise.reject(abortError(signal, "condition variable wait"));
    if (this.isBrokenFlag) return Promise.reject(this.error);
    if (predicate) {
      try {
        if (predicate()) return RESOLVED;
      } catch (err) {
        return Promise.reject(err);
      }
      // Seastar's predicate wait is do_until(pred, wait): a pending signal is consumed by a
      // wait whose re-check fails, so the waiter ends up queued either way.
      this.signalled = false;
      return this.waitList.enqueue(predicate, opts);
    }
    if (this.signalled) {
      this.signalled = false;
      return RESOLVED;
    }
    return this.waitList.enqueue(undefined, opts);
  }

  /** Wakes the first waiter, or remembers the signal for the next wait() if nobody waits. O(1) plus its predicate. */
  signal(): void {
    if (this.isBrokenFlag) return;
    // A waiter whose signal was aborted before its listener ran does not take the wakeup: it
    // goes to the next one, or is remembered.
    for (let w = this.waitList.shift(); w; w = this.waitList.shift()) {
      if (this.wake(w)) return;
    }
    this.signalled = true;
  }

  /** Wakes every current waiter, in FIFO order. O(waiters) plus their predicates. */
  broadcast(): void {
    if (this.isBrokenFlag) return;
    const list = this.waitList;
    // Predicate waiters re-queued by wake() land behind this snapshot and are not revisited.
    for (let n = list.length; n > 0; n--) {
      const w = list.shift();
      if (!w) break;
      this.wake(w);
    }
  }

  /**
   * Fails every waiter and every later wait() with `err` (default: a new
   * BrokenConditionVariableError); signals are ignored from now on. Calling it again replaces
   * the error for later waits. O(waiters).
   */
  broken(err: unknown = new BrokenConditionVariableError()): void {
    this.isBrokenFlag = true;
    this.error = err;
    this.signalled = false;
    this.waitList.rejectAll(err);
  }

  /** Wakes an unlinked waiter; false when it was aborted (rejected, the wakeup not used). */
  private wake(w: Waiter<void, Predicate | undefined>): boolean {
    if (w.rejectIfAborted()) return false;
    const predicate = w.data;
    if (!predicate) {
      w.resolve();
      return true;
    }
    let ready: unknown;
    try {
      ready = predicate();
    } catch (err) {
      w.reject(err);
      return true;
    }
    // The predicate (or what it called) may have aborted this waiter's signal while it was
    // unlinked, when its abort listener could not take it off the list.
    if (w.rejectIfAborted()) return false;
    if (ready) w.resolve();
    else if (this.isBrokenFlag) w.reject(this.error); // the predicate itself broke us
    else this.waitList.append(w); // the wakeup is spent on the re-check, as in Seastar
    return true;
  }
}
