/**
 * A readers/writer lock for fibers (seastar/core/shared_mutex.hh), fair in arrival order.
 */
import { InvalidArgumentError, ShoalError } from "./errors.ts";
import { RESOLVED, WaitList, abortError, checkFunction, checkOptions, type Awaitable, type WaitOptions } from "./future.ts";

/**
 * Many readers or one writer. Waiters are served in arrival order: a waiting writer blocks
 * readers that arrive after it (so writers are not starved), and when a writer unlocks, every
 * reader queued up to the next writer is admitted together.
 * Every operation is O(1) plus O(1) per waiter it admits.
 */
export class SharedMutex {
  private readers = 0;
  private writer = false;
  // data: true for an exclusive (writer) waiter.
  private readonly waitList: WaitList<void, boolean>;

  /** Creates an unlocked mutex. */
  constructor() {
    // A departing head writer may let the readers queued behind it in.
    this.waitList = new WaitList<void, boolean>("shared mutex lock", () => this.wake());
  }

  /** True while a writer holds the lock. */
  get locked(): boolean {
    return this.writer;
  }

  /** Number of readers holding the lock. */
  get sharedHolders(): number {
    return this.readers;
  }

  /** Number of queued lock()/lockShared() calls. */
  get waiters(): number {
    return this.waitList.length;
  }

  /**
   * Takes the lock exclusively, waiting in FIFO order. Rejects with AbortError if
   * `opts.signal` is or becomes aborted, or with TimedOutError after `opts.timeoutMs`; a
   * waiter that leaves is removed at once and the queue behind it re-checked.
   * Cost: no allocation when free; otherwise one waiter record and its promise.
   * Throws InvalidArgumentError (synchronously) for malformed options.
   */
  lock(opts?: WaitOptions): Promise<void> {
    checkOptions(opts, "opts", true);
    const signal = opts?.signal;
    if (signal?.aborted) return Promise.reject(abortError(signal, "shared mutex lock"));
    if (this.tryLock()) return RESOLVED;
    return this.waitList.enqueue(true, opts);
  }

  /** Takes the lock exclusively if that needs no wait; returns whether it did. */
  tryLock(): boolean {
    if (this.writer || this.readers > 0 || this.waitList.length > 0) return false;
    this.writer = true;
    return true;
  }

  /** Releases the exclusive lock. Throws ShoalError (code ERR_NOT_LOCKED) if no writer holds it. */
  unlock(): void {
    if (!this.writer) throw new ShoalError("ERR_NOT_LOCKED", "unlock() without a matching lock()");
    this.writer = false;
    this.wake();
  }

  /**
   * Takes the lock shared, waiting in FIFO order behind any queued writer. Rejects like lock().
   * Cost: no allocation when no writer holds or waits; otherwise one waiter record and its promise.
   * Throws InvalidArgumentError (synchronously) for malformed options.
   */
  lockShared(opts?: WaitOptions): Promise<void> {
    checkOptions(opts, "opts", true);
    const signal = opts?.signal;
    if (signal?.aborted) return Promise.reject(abortError(signal, "shared mutex lock"));
    if (this.tryLockShared()) return RESOLVED;
    return this.waitList.enqueue(false, opts);
  }

  /** Takes the lock shared if that needs no wait (no writer holds it or waits); returns whether it did. */
  tryLockShared(): boolean {
    if (this.writer || this.waitList.length > 0) return false;
    this.readers++;
    return true;
  }

  /** Releases a shared hold. Throws ShoalError (code ERR_NOT_LOCKED) if no reader holds it. */
  unlockShared(): void {
    if (this.readers === 0) throw new ShoalError("ERR_NOT_LOCKED", "unlockShared() without a matching lockShared()");
    this.readers--;
    this.wake();
  }

  /** lock(), resolving with a guard whose dispose unlocks: `using g = await m.lockGuard()`. Rejects like lock(). */
  lockGuard(opts?: WaitOptions): Promise<SharedMutexGuard> {
    return this.lock(opts).then(() => new SharedMutexGuard(this, true));
  }

  /** lockShared(), resolving with a guard whose dispose unlocks the shared hold. Rejects like lockShared(). */
  lockSharedGuard(opts?: WaitOptions): Promise<SharedMutexGuard> {
    return this.lockShared(opts).then(() => new SharedMutexGuard(this, false));
  }

  /**
   * Runs `fn` holding the lock exclusively and unlocks when it settles (Seastar's with_lock).
   * Rejects like lock() (fn is then not called) or with fn's error. Cost: lock()'s plus one await.
   * Throws InvalidArgumentError (synchronously) for a non-function `fn` or malformed options.
   */
  withLock<T>(fn: () => Awaitable<T>, opts?: WaitOptions): Promise<T> {
    checkFunction(fn, "fn");
    const locked = this.lock(opts);
    return this.runHolding(locked, fn, true);
  }

  /**
   * Runs `fn` holding the lock shared and unlocks when it settles (Seastar's with_shared).
   * Rejects like lockShared() (fn is then not called) or with fn's error.
   * Throws InvalidArgumentError (synchronously) for a non-function `fn` or malformed options.
   */
  withSharedLock<T>(fn: () => Awaitable<T>, opts?: WaitOptions): Promise<T> {
    checkFunction(fn, "fn");
    const locked = this.lockShared(opts);
    return this.runHolding(locked, fn, false);
  }

  private async runHolding<T>(locked: Promise<void>, fn: () => Awaitable<T>, exclusive: boolean): Promise<T> {
    await locked;
    try {
      return await fn();
    } finally {
      if (exclusive) this.unlock();
      else this.unlockShared();
    }
  }

  private wake(): void {
    if (this.writer) return;
    const list = this.waitList;
    for (let w = list.head; w !== null; w = list.head) {
      if (w.data) {
        if (this.readers > 0) return;
        list.shift();
        // Aborted while queued, its listener not run yet (a shared signal): skip it.
        if (w.rejectIfAborted()) continue;
        this.writer = true;
        w.resolve();
        return;
      }
      list.shift();
      if (w.rejectIfAborted()) continue;
      this.readers++;
      w.resolve();
    }
  }
}

/** A held SharedMutex lock (exclusive or shared) that unlocks exactly once, on release() or dispose. */
export class SharedMutexGuard implements Disposable {
  private mutex: SharedMutex | undefined;
  /** True for an exclusive hold, false for a shared one. */
  readonly exclusive: boolean;

  /** @internal Built by lockGuard()/lockSharedGuard() once the lock is held. */
  constructor(mutex: SharedMutex, exclusive: boolean) {
    if (!(mutex instanceof SharedMutex)) throw new InvalidArgumentError("mutex must be a SharedMutex");
    this.mutex = mutex;
    this.exclusive = exclusive;
  }

  /** True until released. */
  get held(): boolean {
    return this.mutex !== undefined;
  }

  /** Unlocks; later calls do nothing. */
  release(): void {
    const mutex = this.mutex;
    if (!mutex) return;
    this.mutex = undefined;
    if (this.exclusive) mutex.unlock();
    else mutex.unlockShared();
  }

  /** Unlocks (the `using` exit). */
  [Symbol.dispose](): void {
    this.release();
  }
}
