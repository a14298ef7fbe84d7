/**
 * A bounded FIFO queue with waiting producers and consumers (seastar/core/queue.hh), the
 * building block of Pipe and of hand-offs between fibers.
 */
import { listShoalErrorClass, ShoalError } from "./errors.ts";
import { RESOLVED, WaitList, abortError, checkInteger, checkOptions, type WaitOptions } from "./future.ts";

/** The default error of an aborted queue (code ERR_QUEUE_ABORTED). */
export class QueueAbortedError extends ShoalError {
  constructor(message = "queue was aborted") {
    super("ERR_QUEUE_ABORTED", message);
  }
}
listShoalErrorClass(QueueAbortedError);

/** pop() or peek() on an empty queue (code ERR_QUEUE_EMPTY). */
export class QueueEmptyError extends ShoalError {
  constructor(message = "queue is empty") {
    super("ERR_QUEUE_EMPTY", message);
  }
}
listShoalErrorClass(QueueEmptyError);

/** A growable ring buffer: O(1) push and shift without Array.prototype.shift's copying. */
class Ring<T> {
  private buf: (T | undefined)[] = new Array<T | undefined>(8);
  private head = 0;
  length = 0;

  push(value: T): void {
    if (this.length === this.buf.length) this.grow();
    this.buf[(this.head + this.length) & (this.buf.length - 1)] = value;
    this.length++;
  }

  /** The caller checks length first. */
  shift(): T {
    const value = this.buf[this.head] as T;
    this.buf[this.head] = undefined; // let the item be collected
    this.head = (this.head + 1) & (this.buf.length - 1);
    this.length--;
    return value;
  }

  /** The caller checks length first. */
  peek(): T {
    return this.buf[this.head] as T;
  }

  clear(): void {
    this.buf = new Array<T | undefined>(8);
    this.head = 0;
    this.length = 0;
  }

  private grow(): void {
    const old = this.buf;
    const next = new Array<T | undefined>(old.length * 2);
    for (let i = 0; i < this.length; i++) next[i] = old[(this.head + i) & (old.length - 1)];
    this.buf = next;
    this.head = 0;
  }
}

function checkMaxSize(value: unknown): asserts value is number {
  if (value !== Infinity) checkInteger(value, "maxSize", 1);
}

/**
 * A FIFO of at most `maxSize` items. Producers that find it full and consumers that find it
 * empty queue up in arrival order. An item pushed while a consumer waits goes straight to the
 * first waiting consumer, and room made by pop() goes straight to the first waiting producer,
 * so no later caller can overtake a waiter.
 * Invariants: consumers wait only while the queue is empty; producers only while it is full.
 */
export class Queue<T> {
  private readonly items = new Ring<T>();
  private max: number;
  private error: unknown = undefined;
  private aborted = false;
  private readonly poppers = new WaitList<T, undefined>("queue pop");
  private readonly pushers = new WaitList<void, T>("queue push");
  private readonly notEmptyWaiters = new WaitList<void, undefined>("queue notEmpty wait");
  private readonly notFullWaiters = new WaitList<void, undefined>("queue notFull wait");

  /**
   * Creates an empty queue holding at most `maxSize` items (Infinity: unbounded).
   * Throws InvalidArgumentError if `maxSize` is neither an integer >= 1 nor Infinity.
   */
  constructor(maxSize: number) {
    checkMaxSize(maxSize);
    this.max = maxSize;
  }

  /** Items queued now. */
  get size(): number {
    return this.items.length;
  }

  /** The capacity. */
  get maxSize(): number {
    return this.max;
  }

  /** True when no item is queued. */
  get empty(): boolean {
    return this.items.length === 0;
  }

  /** True when push() would fail. */
  get full(): boolean {
    return this.items.length >= this.max;
  }

  /** True once abort() was called. */
  get isAborted(): boolean {
    return this.aborted;
  }

  /** Calls waiting in popEventually() or notEmpty(). */
  get blockedConsumers(): number {
    return this.poppers.length + this.notEmptyWaiters.length;
  }

  /** Calls waiting in pushEventually() or notFull(). */
  get blockedProducers(): number {
    return this.pushers.length + this.notFullWaiters.length;
  }

  /**
   * Changes the capacity; growing it admits waiting producers at once. Items beyond a reduced
   * capacity stay queued. Throws InvalidArgumentError like the constructor.
   */
  setMaxSize(maxSize: number): void {
    checkMaxSize(maxSize);
    this.max = maxSize;
    if (!this.aborted) this.admitProducers();
  }

  /**
   * Appends `item` if there is room (handing it straight to a waiting consumer if there is one)
   * and returns true; returns false, changing nothing, if the queue is full. O(1) amortized.
   * Throws the abort error if the queue was aborted.
   */
  push(item: T): boolean {
    if (this.aborted) throw this.error;
    for (let popper = this.poppers.shift(); popper; popper = this.poppers.shift()) {
      // A consumer aborted but not yet told (a shared signal) must not take the item.
      if (popper.rejectIfAborted()) continue;
      popper.resolve(item);
      return true;
    }
    if (this.items.length >= this.max) return false;
    this.items.push(item);
    this.notifyNotEmpty();
    return true;
  }

  /**
   * Removes and returns the oldest item; the room it leaves goes to the first waiting producer.
   * O(1). Throws QueueEmptyError if empty, or the abort error if the queue was aborted.
   */
  pop(): T {
    if (this.aborted) throw this.error;
    if (this.items.length === 0) throw new QueueEmptyError();
    const item = this.items.shift();
    this.admitProducers();
    return item;
  }

  /**
   * Returns the oldest item without removing it. O(1).
   * Throws QueueEmptyError if empty, or the abort error if the queue was aborted.
   */
  peek(): T {
    if (this.aborted) throw this.error;
    if (this.items.length === 0) throw new QueueEmptyError();
    return this.items.peek();
  }

  /**
   * Appends `item`, waiting in FIFO order among producers while the queue is full.
   * Rejects with the abort error if the queue is or becomes aborted (the item is dropped),
   * with AbortError if `opts.signal` is or becomes aborted, or with TimedOutError after
   * `opts.timeoutMs`; an item whose wait failed is never queued.
   * Cost: no allocation when there is room; otherwise one waiter record and its promise.
   * Throws InvalidArgumentError (synchronously) for malformed options.
   */
  pushEventually(item: T, opts?: WaitOptions): Promise<void> {
    checkOptions(opts, "opts", true);
    const signal = opts?.signal;
    if (signal?.aborted) return Promise.reject(abortError(signal, "queue push"));
    if (this.aborted) return Promise.reject(this.error);
    if (this.push(item)) return RESOLVED;
    return this.pushers.enqueue(item, opts);
  }

  /**
   * Removes and returns the oldest item, waiting in FIFO order among consumers while the
   * queue is empty. Rejects with the abort error if the queue is or becomes aborted, with
   * AbortError if `opts.signal` is or becomes aborted, or with TimedOutError after
   * `opts.timeoutMs`.
   * Cost: one settled promise when an item is ready; otherwise a waiter record and its promise.
   * Throws InvalidArgumentError (synchronously) for malformed options.
   */
  popEventually(opts?: WaitOptions): Promise<T> {
    checkOptions(opts, "opts", true);
    const signal = opts?.signal;
    if (signal?.aborted) return Promise.reject(abortError(signal, "queue pop"));
    if (this.aborted) return Promise.reject(this.error);
    if (this.items.length > 0) return Promise.resolve(this.pop());
    return this.poppers.enqueue(undefined, opts);
  }

  /**
   * Resolves once the queue holds an item (at once if it does). Rejects like popEventually().
   * Throws InvalidArgumentError (synchronously) for malformed options.
   */
  notEmpty(opts?: WaitOptions): Promise<void> {
    checkOptions(opts, "opts", true);
    const signal = opts?.signal;
    if (signal?.aborted) return Promise.reject(abortError(signal, "queue notEmpty wait"));
    if (this.aborted) return Promise.reject(this.error);
    if (this.items.length > 0) return RESOLVED;
    return this.notEmptyWaiters.enqueue(undefined, opts);
  }

  /**
   * Resolves once the queue has room (at once if it has). Rejects like pushEventually().
   * Throws InvalidArgumentError (synchronously) for malformed options.
   */
  notFull(opts?: WaitOptions): Promise<void> {
    checkOptions(opts, "opts", true);
    const signal = opts?.signal;
    if (signal?.aborted) return Promise.reject(abortError(signal, "queue notFull wait"));
    if (this.aborted) return Promise.reject(this.error);
    if (this.items.length < this.max) return RESOLVED;
    return this.notFullWaiters.enqueue(undefined, opts);
  }

  /**
   * Drops every queued item and fails every waiting producer and consumer with `err`
   * (default: a new QueueAbortedError); every later call fails with it too. Calling it again
   * replaces the error. Cost: O(items + waiters).
   */
  abort(err: unknown = new QueueAbortedError()): void {
    this.aborted = true;
    this.error = err;
    this.items.clear();
    this.poppers.rejectAll(err);
    this.pushers.rejectAll(err);
    this.notEmptyWaiters.rejectAll(err);
    this.notFullWaiters.rejectAll(err);
  }

  private notifyNotEmpty(): void {
    const waiters = this.notEmptyWaiters;
    for (let w = waiters.shift(); w; w = waiters.shift()) w.resolve();
  }

  // Moves waiting producers' items in while there is room, then tells notFull() waiters.
  private admitProducers(): void {
    const pushers = this.pushers;
    let admitted = false;
    while (this.items.length < this.max) {
      const w = pushers.shift();
      if (!w) break;
      // A producer aborted but not yet told keeps its item (its push is rejected).
      if (w.rejectIfAborted()) continue;
      const item = w.data;
      w.data = undefined as T; // the queue owns the item now
      this.items.push(item);
      w.resolve();
      admitted = true;
    }
    if (admitted) this.notifyNotEmpty();
    if (this.items.length < this.max && this.notFullWaiters.length > 0) {
      const waiters = this.notFullWaiters;
      for (let w = waiters.shift(); w; w = waiters.shift()) w.resolve();
    }
  }
}
