/**
 * A counting semaphore with Seastar's semantics (seastar/core/semaphore.hh): strictly FIFO
 * waiters, waits for several units at once, units that may be consumed below zero, and a
 * broken() state that fails every current and future waiter.
 */
import { InvalidArgumentError, listShoalErrorClass, ShoalError } from "./errors.ts";
import {
  RESOLVED,
  WaitList,
  abortError,
  checkFunction,
  checkInteger,
  checkOptions,
  type Awaitable,
  type WaitOptions,
} from "./future.ts";

/** The default error of a broken semaphore (code ERR_BROKEN_SEMAPHORE). */
export class BrokenSemaphoreError extends ShoalError {
  constructor(message = "semaphore is broken") {
    super("ERR_BROKEN_SEMAPHORE", message);
  }
}
listShoalErrorClass(BrokenSemaphoreError);

/**
 * A counting semaphore. Waiters are served strictly in arrival order: a head waiter that asks
 * for more units than are available blocks every later waiter, even ones that would fit, so
 * a large request is never starved by a stream of small ones.
 */
export class Semaphore {
  private count: number;
  private error: unknown = undefined;
  private isBrokenFlag = false;
  private readonly waitList: WaitList<void, number>;

  /**
   * Creates a semaphore holding `count` units.
   * Throws InvalidArgumentError if `count` is not an integer >= 0.
   */
  constructor(count: number) {
    checkInteger(count, "count");
    this.count = count;
    // A waiter that aborts or times out may have been the head blocking smaller ones.
    this.waitList = new WaitList<void, number>("semaphore wait", () => this.wake());
  }

  /** Units available now; negative after consume() took more than there were. O(1). */
  get available(): number {
    return this.count;
  }

  /** Number of queued waiters. O(1). */
  get waiters(): number {
    return this.waitList.length;
  }

  /** True once broken() was called. */
  get isBroken(): boolean {
    return this.isBrokenFlag;
  }

  /**
   * Takes `units` units, waiting in FIFO order until they are available.
   * Rejects with the broken() error if the semaphore is (or becomes) broken, with AbortError
   * (cause: `signal.reason`) if `opts.signal` is or becomes aborted, and with TimedOutError
   * after `opts.timeoutMs`; a waiter that leaves this way is removed from the queue at once
   * and the waiters behind it are re-checked.
   * Cost: when units are available and nobody waits, no allocation (a shared settled promise);
   * otherwise one waiter record, its promise, and a Timer if `timeoutMs` is finite.
   * Throws InvalidArgumentError (synchronously) if `units` is not an integer >= 0 or `opts`
   * is malformed.
   */
  wait(units = 1, opts?: WaitOptions): Promise<void> {
    checkInteger(units, "units");
    if (opts !== undefined) {
      checkOptions(opts, "opts", true);
      const signal = opts.signal;
      if (signal?.aborted) return Promise.reject(abortError(signal, "semaphore wait"));
    }
    if (this.isBrokenFlag) return Promise.reject(this.error);
    if (this.waitList.length === 0 && this.count >= units) {
      this.count -= units;
      return RESOLVED;
    }
    return this.waitList.enqueue(units, opts);
  }

  /**
   * Takes `units` units if that can be done without waiting (they are available and nobody
   * is queued ahead); returns whether it did. Always false once broken. O(1).
   * Throws InvalidArgumentError if `units` is not an integer >= 0.
   */
  tryWait(units = 1): boolean {
    checkInteger(units, "units");
    if (this.isBrokenFlag || this.waitList.length > 0 || this.count < units) return false;
    this.count -= units;
    return true;
  }

  /**
   * Returns `units` units and wakes, in order, every waiter at the head whose request now fits.
   * Ignored once broken. Cost: O(1) plus O(1) per waiter woken.
   * Throws InvalidArgumentError if `units` is not an integer >= 0.
   */
  signal(units = 1): void {
    checkInteger(units, "units");
    if (this.isBrokenFlag) return;
    this.count += units;
    this.wake();
  }

  /**
   * Takes `units` units without waiting, even if that leaves the count negative (accounting
   * for work already admitted). Ignored once broken. O(1).
   * Throws InvalidArgumentError if `units` is not an integer >= 0.
   */
  consume(units = 1): void {
    checkInteger(units, "units");
    if (this.isBrokenFlag) return;
    this.count -= units;
  }

  /**
   * Breaks the semaphore: every queued waiter and every later wait() rejects with `err`
   * (default: a new BrokenSemaphoreError); signal() and consume() are ignored from now on and
   * the count drops to 0. Calling it again replaces the error for later waits.
   * Cost: O(waiters).
   */
  broken(err: unknown = new BrokenSemaphoreError()): void {
    this.isBrokenFlag = true;
    this.error = err;
    this.count = 0;
    this.waitList.rejectAll(err);
  }

  /**
   * Like wait(), but resolves with a SemaphoreUnits permit that returns the units when
   * disposed: `using permit = await sem.getUnits(2)`.
   * Cost: wait()'s, plus one permit object. Throws and rejects as wait() does.
   */
  getUnits(units = 1, opts?: WaitOptions): Promise<SemaphoreUnits> {
    const waited = this.wait(units, opts);
    if (waited === RESOLVED) return Promise.resolve(new SemaphoreUnits(this, units));
    return waited.then(() => new SemaphoreUnits(this, units));
  }

  /**
   * Like tryWait(), returning a permit on success and undefined otherwise.
   * Throws InvalidArgumentError if `units` is not an integer >= 0.
   */
  tryGetUnits(units = 1): SemaphoreUnits | undefined {
    return this.tryWait(units) ? new SemaphoreUnits(this, units) : undefined;
  }

  /**
   * Like consume(), returning a permit that gives the units back when disposed.
   * Throws InvalidArgumentError if `units` is not an integer >= 0.
   */
  consumeUnits(units = 1): SemaphoreUnits {
    this.consume(units);
    return new SemaphoreUnits(this, units);
  }

  private wake(): void {
    const list = this.waitList;
    for (let w = list.head; w !== null && this.count >= w.data; w = list.head) {
      list.shift();
      // Aborted while queued, its listener not run yet (a signal shared with the waiter
      // ahead of it, which just left): it must not get units.
      if (w.rejectIfAborted()) continue;
      this.count -= w.data;
      w.resolve();
    }
  }
}

/**
 * Units held from a Semaphore (Seastar's semaphore_units). Disposing the permit returns what
 * it still holds, so `using permit = await sem.getUnits(n)` cannot leak units on any path.
 * Every method is O(1) plus the cost of the signal() it makes.
 */
export class SemaphoreUnits implements Disposable {
  private readonly sem: Semaphore;
  private units: number;

  /**
   * Wraps `units` units already taken from `sem`; getUnits() and friends build these.
   * Throws InvalidArgumentError for a non-Semaphore `sem` or a `units` that is not an integer >= 0.
   */
  constructor(sem: Semaphore, units: number) {
    if (!(sem instanceof Semaphore)) throw new InvalidArgumentError("sem must be a Semaphore");
    checkInteger(units, "units");
    this.sem = sem;
    this.units = units;
  }

  /** The semaphore the units belong to. */
  get semaphore(): Semaphore {
    return this.sem;
  }

  /** Units still held. */
  get count(): number {
    return this.units;
  }

  /**
   * Returns `units` of the held units to the semaphore and returns how many are still held.
   * Throws InvalidArgumentError if `units` is not an integer >= 0 or exceeds the units held.
   */
  returnUnits(units: number): number {
    checkInteger(units, "units");
    if (units > this.units) {
      throw new InvalidArgumentError(`units (${units}) exceeds the ${this.units} units held`);
    }
    this.units -= units;
    this.sem.signal(units);
    return this.units;
  }

  /** Returns every held unit to the semaphore; harmless when none are held. */
  returnAll(): void {
    const n = this.units;
    if (n === 0) return;
    this.units = 0;
    this.sem.signal(n);
  }

  /**
   * Forgets the held units without returning them (Seastar's release()) and returns how many
   * they were; the caller becomes responsible for signal()ing them.
   */
  detach(): number {
    const n = this.units;
    this.units = 0;
    return n;
  }

  /**
   * Moves `units` of the held units into a new permit.
   * Throws InvalidArgumentError if `units` is not an integer >= 0 or exceeds the units held.
   */
  split(units: number): SemaphoreUnits {
    checkInteger(units, "units");
    if (units > this.units) {
      throw new InvalidArgumentError(`units (${units}) exceeds the ${this.units} units held`);
    }
    this.units -= units;
    return new SemaphoreUnits(this.sem, units);
  }

  /**
   * Takes over every unit `other` holds, leaving it empty.
   * Throws InvalidArgumentError if `other` is not a permit of the same semaphore.
   */
  adopt(other: SemaphoreUnits): void {
    if (!(other instanceof SemaphoreUnits) || other.sem !== this.sem) {
      throw new InvalidArgumentError("other must be a SemaphoreUnits of the same semaphore");
    }
    if (other === this) return;
    // detach() first: `this.units += ...` would read this.units before it runs.
    const n = other.detach();
    this.units += n;
  }

  /** Returns every held unit (the `using` exit). */
  [Symbol.dispose](): void {
    this.returnAll();
  }
}

/**
 * Runs `fn` holding `units` units of `sem` and returns them when it settles, on success or
 * failure (Seastar's with_semaphore). Rejects as sem.wait() does, or with fn's error.
 * Cost: wait()'s plus one await.
 * Throws InvalidArgumentError (synchronously) for a non-Semaphore `sem`, a `units` that is not
 * an integer >= 0, a non-function `fn` or malformed options.
 */
export function withSemaphore<T>(
  sem: Semaphore,
  units: number,
  fn: () => Awaitable<T>,
  opts?: WaitOptions,
): Promise<T> {
  if (!(sem instanceof Semaphore)) throw new InvalidArgumentError("sem must be a Semaphore");
  checkFunction(fn, "fn");
  const waited = sem.wait(units, opts);
  return runHolding(sem, units, fn, waited);
}

async function runHolding<T>(sem: Semaphore, units: number, fn: () => Awaitable<T>, waited: Promise<void>): Promise<T> {
  await waited;
  try {
    return await fn();
  } finally {
    sem.signal(units);
  }
}
