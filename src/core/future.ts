/**
 * Seastar's future combinators over native promises: whenAll, whenAllSucceed, whenAny,
 * parallelForEach, maxConcurrentForEach, repeat, repeatUntilValue, doUntil, keepDoing and
 * withTimeout.
 *
 * The file also holds the machinery every waiting primitive (Semaphore, Queue, Pipe,
 * ConditionVariable, SharedMutex) shares: argument checks, the AbortSignal/timeout plumbing
 * and an intrusive FIFO of waiters. Those exports are marked @internal and are not part of
 * the public API.
 */
import { describeValue } from "./describe.ts";
import { AbortError, InvalidArgumentError, TimedOutError } from "./errors.ts";
import { Timer } from "./timer.ts";
import { currentSchedulingGroup, defaultSchedulingGroup, enqueue, maybeYield, singleGroup, type SchedulingGroup } from "./scheduler.ts";

/** A value or a promise of it. */
export type Awaitable<T> = T | PromiseLike<T>;

/** An input to whenAll/whenAllSucceed/whenAny: a value, a promise, or a function returning either (called at once; a synchronous throw counts as a rejection). */
export type FutureLike<T> = T | PromiseLike<T> | (() => T | PromiseLike<T>);

/** What a FutureLike settles to. */
export type Resolved<F> = F extends () => infer R ? Awaited<R> : Awaited<F>;

/** The options every asynchronous call accepts. */
export interface SignalOptions {
  /** Abandons the call: it rejects with AbortError whose `cause` is `signal.reason`. */
  signal?: AbortSignal | undefined;
}

/** The options every wait on a primitive (Semaphore, Queue, ConditionVariable...) accepts. */
export interface WaitOptions extends SignalOptions {
  /** Gives up after this many ms with TimedOutError and leaves the queue; Infinity (the default) waits forever. */
  timeoutMs?: number | undefined;
}

// ---------------------------------------------------------------------------------------
// Internal helpers shared by the primitives.

/** @internal A settled promise handed out by every fast path, so an uncontended wait allocates nothing. */
export const RESOLVED: Promise<void> = Promise.resolve();

/** @internal Throws InvalidArgumentError unless `value` is a function. */
export function checkFunction(value: unknown, name: string): asserts value is (...args: never[]) => unknown {
  if (typeof value !== "function") {
    throw new InvalidArgumentError(`${name} must be a function, got ${describeValue(value)}`);
  }
}

/** @internal Throws InvalidArgumentError unless `value` is an integer in [min, 2^53). */
export function checkInteger(value: unknown, name: string, min = 0): asserts value is number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
    throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got ${describeValue(value)}`);
  }
}

/** @internal Throws InvalidArgumentError unless `value` is a number of ms >= 0 (Infinity allowed). */
export function checkMs(value: unknown, name: string): asserts value is number {
  if (typeof value !== "number" || Number.isNaN(value) || value < 0) {
    throw new InvalidArgumentError(`${name} must be a number of ms >= 0 (or Infinity), got ${describeValue(value)}`);
  }
}

/** @internal Validates `{ signal, timeoutMs }` (timeoutMs only where `timeout` is set). */
export function checkOptions(opts: unknown, name: string, timeout: boolean): void {
  if (opts === undefined) return;
  if (opts === null || typeof opts !== "object") {
    throw new InvalidArgumentError(`${name} must be an object, got ${describeValue(opts)}`);
  }
  const { signal, timeoutMs } = opts as WaitOptions;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new InvalidArgumentError(`${name}.signal must be an AbortSignal, got ${describeValue(signal)}`);
  }
  if (timeout && timeoutMs !== undefined) checkMs(timeoutMs, `${name}.timeoutMs`);
}

/** @internal The AbortError for a signal that fired; its `cause` is the signal's reason. */
export function abortError(signal: AbortSignal, what: string): AbortError {
  return new AbortError(`${what} was aborted`, { cause: signal.reason });
}

/** @internal */
export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === "object" || typeof value === "function") &&
    typeof (value as { then?: unknown }).then === "function"
  );
}

/**
 * @internal One pending wait: a node of an intrusive doubly linked list that owns its promise,
 * its abort listener and its timer. Being its own abort listener (handleEvent) saves a closure.
 */
export class Waiter<V, D> implements EventListenerObject {
  next: Waiter<V, D> | null = null;
  prev: Waiter<V, D> | null = null;
  /** True while queued in `list`. */
  linked = false;
  data: D;
  readonly promise: Promise<V>;
  private readonly list: WaitList<V, D>;
  private resolveFn!: (value: V) => void;
  private rejectFn!: (reason: unknown) => void;
  private signal: AbortSignal | undefined;
  private timer: Timer | undefined;
  private timeoutMs: number;
  /** The waiting code's scheduling group: its continuation runs (and is charged) there. */
  private readonly group: SchedulingGroup;

  constructor(list: WaitList<V, D>, data: D, signal: AbortSignal | undefined, timeoutMs: number) {
    this.list = list;
    this.data = data;
    this.signal = signal;
    this.timeoutMs = timeoutMs;
    this.group = singleGroup.value ? defaultSchedulingGroup : currentSchedulingGroup();
    this.promise = new Promise<V>((resolve, reject) => {
      this.resolveFn = resolve;
      this.rejectFn = reject;
    });
  }

  /** Starts listening for abort and timeout; called once the waiter is queued. */
  arm(): void {
    this.signal?.addEventListener("abort", this);
    if (this.timeoutMs !== Infinity) this.timer = new Timer(() => this.expire()).arm(this.timeoutMs);
  }

  /**
   * Settles the wait; the caller has already unlinked it. Settled from another scheduling group
   * (a producer in group A waking a consumer in group B), the settling is queued as a task of the
   * waiter's group: its continuation then runs in B's turn and is charged to B, not to A.
   */
  resolve(value: V): void {
    this.disarm();
    if (!singleGroup.value && this.group !== currentSchedulingGroup()) {
      const fn = this.resolveFn;
      enqueue(this.group, () => fn(value), 0, 0);
      return;
    }
    this.resolveFn(value);
  }

  /** Fails the wait; the caller has already unlinked it. From another group, as resolve(). */
  reject(reason: unknown): void {
    this.disarm();
    if (!singleGroup.value && this.group !== currentSchedulingGroup()) {
      const fn = this.rejectFn;
      enqueue(this.group, () => fn(reason), 0, 0);
      return;
    }
    this.rejectFn(reason);
  }

  /**
   * For a waiter its owner has unlinked and is about to grant: if its signal was aborted
   * meanwhile (its listener had not run yet, e.g. several waiters share one signal, or a
   * predicate aborted it), fails it with AbortError instead and returns true. The owner must
   * then not grant it.
   */
  rejectIfAborted(): boolean {
    const signal = this.signal;
    if (signal === undefined || !signal.aborted) return false;
    this.reject(abortError(signal, this.list.what));
    return true;
  }

  /** The abort listener. */
  handleEvent(): void {
    const signal = this.signal;
    if (signal) this.cancel(abortError(signal, this.list.what));
  }

  private expire(): void {
    this.timer = undefined;
    this.cancel(new TimedOutError(`${this.list.what} timed out after ${this.timeoutMs} ms`));
  }

  private cancel(reason: unknown): void {
    if (!this.linked) return;
    const list = this.list;
    list.remove(this);
    this.reject(reason);
    // A departed head may unblock the waiters behind it.
    list.onCancel?.();
  }

  private disarm(): void {
    if (this.signal) {
      this.signal.removeEventListener("abort", this);
      this.signal = undefined;
    }
    if (this.timer) {
      this.timer.cancel();
      this.timer = undefined;
    }
  }
}

/**
 * @internal A FIFO of waiters with O(1) append, pop and removal from the middle (a waiter
 * that aborts or times out leaves at once, without a tombstone). `what` names the wait in
 * AbortError and TimedOutError messages; `onCancel` runs after a waiter left by abort or timeout.
 */
export class WaitList<V, D> {
  head: Waiter<V, D> | null = null;
  tail: Waiter<V, D> | null = null;
  length = 0;
  readonly what: string;
  readonly onCancel: (() => void) | undefined;

  constructor(what: string, onCancel?: () => void) {
    this.what = what;
    this.onCancel = onCancel;
  }

  /** Queues a new waiter at the back, arms its signal and timer, and returns its promise. */
  enqueue(data: D, opts: WaitOptions | undefined): Promise<V> {
    const w = new Waiter<V, D>(this, data, opts?.signal, opts?.timeoutMs ?? Infinity);
    this.append(w);
    w.arm();
    return w.promise;
  }

  /** Links `w` at the back (a new waiter, or one re-queued after a failed predicate). */
  append(w: Waiter<V, D>): void {
    w.prev = this.tail;
    w.next = null;
    if (this.tail) this.tail.next = w;
    else this.head = w;
    this.tail = w;
    w.linked = true;
    this.length++;
  }

  remove(w: Waiter<V, D>): void {
    if (w.prev) w.prev.next = w.next;
    else this.head = w.next;
    if (w.next) w.next.prev = w.prev;
    else this.tail = w.prev;
    w.prev = w.next = null;
    w.linked = false;
    this.length--;
  }

  /** Unlinks and returns the head (still unsettled), or null. */
  shift(): Waiter<V, D> | null {
    const w = this.head;
    if (w) this.remove(w);
    return w;
  }

  /** Fails every waiter, in FIFO order. */
  rejectAll(reason: unknown): void {
    for (let w = this.shift(); w; w = this.shift()) w.reject(reason);
  }
}

// ---------------------------------------------------------------------------------------
// Failure bookkeeping shared by the joins.

/** Errors whose `errors` property a join attached (so a later join may replace it). */
const annotated = new WeakSet<object>();

/**
 * Rejection with the first failure; later ones ride along on it as a non-enumerable `errors`
 * array (all failures, first included). An `errors` of the error's own (an AggregateError's) is
 * left alone; one an earlier join attached to the same error object (a shared sentinel) is
 * replaced, or removed when this join had a single failure, so no stale list is reported.
 */
function firstFailure(errors: unknown[]): unknown {
  const first = errors[0];
  if (first === null || typeof first !== "object") return first;
  const ours = annotated.has(first);
  if (Object.hasOwn(first, "errors") && !ours) return first;
  if (errors.length > 1) {
    if (ours || Object.isExtensible(first)) {
      Object.defineProperty(first, "errors", { value: errors, writable: true, configurable: true, enumerable: false });
      annotated.add(first);
    }
  } else if (ours) {
    delete (first as { errors?: unknown }).errors;
    annotated.delete(first);
  }
  return first;
}

function invoke<T>(f: FutureLike<T>): Awaitable<T> {
  if (typeof f !== "function") return f;
  try {
    return (f as () => Awaitable<T>)();
  } catch (err) {
    return Promise.reject(err);
  }
}

const ignore = () => {};

/**
 * Observes an input the caller will never see settle (the join gave up before waiting for
 * it), so that its later rejection is not reported as unhandled. Functions are left alone:
 * a join calls them, and one that gave up calls nothing.
 */
function observe(input: unknown): void {
  if (typeof input === "function") return;
  try {
    if (isThenable(input)) Promise.resolve(input).then(undefined, ignore);
  } catch {
    // A throwing `then` or `constructor` getter: there is no promise of it to observe.
  }
}

/**
 * A join's inputs as an array (an array is used as is, holes and all), or, when iterating
 * `futures` throws, a promise rejected with that error. The thenables read before the throw
 * are observed and no function input is called: the join never starts.
 */
function gather<F>(futures: Iterable<F>): F[] | Promise<never> {
  if (Array.isArray(futures)) return futures;
  const inputs: F[] = [];
  try {
    for (const f of futures) inputs.push(f);
  } catch (err) {
    inputs.forEach(observe);
    return Promise.reject(err);
  }
  return inputs;
}

/** A join whose signal aborted before it started: observes its thenables, calls no function input. */
function abandon(inputs: readonly unknown[], signal: AbortSignal, name: string): Promise<never> {
  inputs.forEach(observe);
  return Promise.reject(abortError(signal, name));
}

function checkIterable(value: unknown, name: string): asserts value is Iterable<unknown> {
  if (value === null || typeof value !== "object" || typeof (value as Iterable<unknown>)[Symbol.iterator] !== "function") {
    throw new InvalidArgumentError(`${name} must be an iterable, got ${describeValue(value)}`);
  }
}

// ---------------------------------------------------------------------------------------
// Public combinators.

/**
 * Waits for every input to settle and returns their outcomes in input order; never rejects
 * for an input's failure (Seastar's when_all). Functions are called at once and a synchronous
 * throw becomes that slot's rejection.
 * Cost: one settle record per input, as Promise.allSettled.
 * `opts.signal`: the join rejects with AbortError as soon as it aborts (an aborted one rejects
 * at once and calls no function input, its promise inputs' rejections observed, never
 * unhandled). The inputs are not cancelled: hand them the signal too.
 * An iterable that throws while it is read rejects the join with its error, at once, calling
 * no function input and observing the promise inputs it yielded.
 * Throws InvalidArgumentError (synchronously) if `futures` is not iterable.
 */
export function whenAll<const F extends readonly unknown[]>(
  futures: F,
  opts?: SignalOptions,
): Promise<{ -readonly [K in keyof F]: PromiseSettledResult<Resolved<F[K]>> }>;
export function whenAll<F>(futures: Iterable<F>, opts?: SignalOptions): Promise<PromiseSettledResult<Resolved<F>>[]>;
export function whenAll(futures: Iterable<unknown>, opts?: SignalOptions): Promise<PromiseSettledResult<unknown>[]> {
  checkIterable(futures, "futures");
  checkOptions(opts, "opts", false);
  const signal = opts?.signal;
  const inputs = gather(futures);
  if (!Array.isArray(inputs)) return inputs;
  if (signal?.aborted) return abandon(inputs, signal, "whenAll");
  return abortable(Promise.allSettled(inputs.map(invoke)), signal, "whenAll");
}

/**
 * @internal `p`, or AbortError as soon as `signal` aborts. What `p` waits for is not cancelled
 * (hand the signal to that work too); the abort listener goes when `p` settles.
 */
export function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined, what: string): Promise<T> {
  if (signal === undefined) return p;
  // The work behind `p` may have aborted the signal already (a join's function input that
  // cancels its siblings as it is called): no abort event comes after that, and a listener
  // added now would wait for `p`, for good if `p` waits on inputs that never settle.
  if (signal.aborted) {
    p.then(undefined, ignore); // abandoned: its later rejection is observed
    return Promise.reject(abortError(signal, what));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortError(signal, what));
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

/**
 * Waits for every input to settle; resolves with their values in input order, or, if any
 * failed, rejects with the first failure (in time) once all have settled, so no work is left
 * running behind the caller's back (Seastar's when_all_succeed). With several failures the
 * others are attached to the first as a non-enumerable `errors` array when it is an
 * extensible object without one.
 * Cost: one promise reaction per pending input.
 * `opts.signal`: the join rejects with AbortError as soon as it aborts (an aborted one rejects
 * at once and calls no function input, its promise inputs' rejections observed, never
 * unhandled). The inputs are not cancelled: hand them the signal too.
 * An iterable that throws while it is read rejects the join with its error, at once, calling
 * no function input and observing the promise inputs it yielded.
 * Throws InvalidArgumentError (synchronously) if `futures` is not iterable.
 */
export function whenAllSucceed<const F extends readonly unknown[]>(
  futures: F,
  opts?: SignalOptions,
): Promise<{ -readonly [K in keyof F]: Resolved<F[K]> }>;
export function whenAllSucceed<F>(futures: Iterable<F>, opts?: SignalOptions): Promise<Resolved<F>[]>;
export function whenAllSucceed(futures: Iterable<unknown>, opts?: SignalOptions): Promise<unknown[]> {
  checkIterable(futures, "futures");
  checkOptions(opts, "opts", false);
  const signal = opts?.signal;
  const inputs = gather(futures);
  if (!Array.isArray(inputs)) return inputs;
  if (signal?.aborted) return abandon(inputs, signal, "whenAllSucceed");
  const n = inputs.length;
  const values = new Array<unknown>(n);
  if (n === 0) return Promise.resolve(values);
  return abortable(new Promise<unknown[]>((resolve, reject) => {
    let pending = n;
    let errors: unknown[] | undefined;
    const settle = () => {
      if (--pending > 0) return;
      if (errors) reject(firstFailure(errors));
      else resolve(values);
    };
    for (let i = 0; i < n; i++) {
      Promise.resolve(invoke(inputs[i])).then(
        (v) => {
          values[i] = v;
          settle();
        },
        (err: unknown) => {
          (errors ??= []).push(err);
          settle();
        },
      );
    }
  }), signal, "whenAllSucceed");
}

/** The outcome of whenAny. */
export interface WhenAnyResult<T> {
  /** Input position of the first input to settle. */
  index: number;
  /** How that input settled. */
  result: PromiseSettledResult<T>;
  /** Every input as a promise (functions already called), so the others can still be awaited. */
  futures: Promise<T>[];
}

/**
 * Resolves as soon as the first input settles, successfully or not, naming it by index
 * (Seastar's when_any); it never rejects for an input's failure. Rejections of the other
 * inputs are observed, so they never surface as unhandled.
 * Cost: one promise reaction per input.
 * `opts.signal`: the join rejects with AbortError as soon as it aborts (an aborted one rejects
 * at once and calls no function input, its promise inputs' rejections observed, never
 * unhandled). The inputs are not cancelled: hand them the signal too.
 * An iterable that throws while it is read rejects the join with its error, at once, calling
 * no function input and observing the promise inputs it yielded.
 * A hole of a sparse array is an input (undefined), as in whenAll.
 * Throws InvalidArgumentError (synchronously) if `futures` is not iterable or is empty (an
 * empty when_any could never resolve).
 */
export function whenAny<F>(futures: Iterable<F>, opts?: SignalOptions): Promise<WhenAnyResult<Resolved<F>>> {
  checkIterable(futures, "futures");
  checkOptions(opts, "opts", false);
  const signal = opts?.signal;
  const inputs = gather(futures);
  if (!Array.isArray(inputs)) return inputs;
  if (inputs.length === 0) throw new InvalidArgumentError("futures must not be empty");
  if (signal?.aborted) return abandon(inputs, signal, "whenAny");
  type T = Resolved<F>;
  const n = inputs.length;
  // An index loop, not map/forEach: a hole of a sparse array is an input (undefined), as in
  // whenAll and whenAllSucceed, not a slot to skip.
  const promises = new Array<Promise<T>>(n);
  for (let i = 0; i < n; i++) promises[i] = Promise.resolve(invoke(inputs[i])) as Promise<T>;
  return abortable(new Promise<WhenAnyResult<T>>((resolve) => {
    let done = false;
    for (let index = 0; index < n; index++) {
      promises[index]!.then(
        (value) => {
          if (done) return;
          done = true;
          resolve({ index, result: { status: "fulfilled", value }, futures: promises });
        },
        (reason: unknown) => {
          if (done) return;
          done = true;
          resolve({ index, result: { status: "rejected", reason }, futures: promises });
        },
      );
    }
  }), signal, "whenAny");
}

/**
 * Calls `fn(item, index, signal)` for every item at once, then waits for EVERY call to finish,
 * even after one has failed (Seastar's parallel_for_each), and rejects with the first failure
 * in time; further failures ride on it as a non-enumerable `errors` array (see whenAllSucceed).
 * A synchronous throw counts as that call's failure; the remaining items still run.
 * `signal` is only checked before starting (an aborted one rejects with AbortError and calls
 * nothing) and is handed to every call so that running work can stop itself.
 * Cost: the items are iterated once; one promise reaction per call that returns a promise,
 * none for calls that return plain values.
 * Throws InvalidArgumentError (synchronously) for a non-iterable `items`, non-function `fn`
 * or malformed options.
 */
export function parallelForEach<T>(
  items: Iterable<T>,
  fn: (item: T, index: number, signal: AbortSignal | undefined) => unknown,
  opts?: SignalOptions,
): Promise<void> {
  if (items === null || typeof items !== "object" || typeof items[Symbol.iterator] !== "function") {
    throw new InvalidArgumentError(`items must be an iterable, got ${describeValue(items)}`);
  }
  checkFunction(fn, "fn");
  checkOptions(opts, "opts", false);
  const signal = opts?.signal;
  if (signal?.aborted) return Promise.reject(abortError(signal, "parallelForEach"));

  let errors: unknown[] | undefined;
  let pending = 1; // the iteration itself, so that early completions cannot finish the join
  let finish: (() => void) | undefined;
  const settle = () => {
    if (--pending === 0 && finish) finish();
  };
  const fail = (err: unknown) => {
    (errors ??= []).push(err);
    settle();
  };
  let index = 0;
  try {
    for (const item of items) {
      let result: unknown;
      try {
        result = fn(item, index++, signal);
      } catch (err) {
        (errors ??= []).push(err);
        continue;
      }
      if (isThenable(result)) {
        pending++;
        try {
          // Through Promise.resolve: a hand-made thenable may call back twice or throw from
          // then(); its promise settles once (a native promise is used as is, no extra tick).
          Promise.resolve(result).then(settle, fail);
        } catch (err) {
          // Reading `result.constructor` threw: its fiber failed, and nothing will settle it.
          fail(err);
        }
      }
    }
  } catch (err) {
    // The iterable itself failed: no more fibers start, and the ones started are still joined.
    (errors ??= []).push(err);
  }
  if (--pending === 0) return errors ? Promise.reject(firstFailure(errors)) : RESOLVED;
  return new Promise<void>((resolve, reject) => {
    finish = () => (errors ? reject(firstFailure(errors)) : resolve());
  });
}

/**
 * Calls `fn(item, index, signal)` for the items in order with at most `limit` calls running
 * at once (Seastar's max_concurrent_for_each). The iterable is consumed lazily, so it may be
 * long or generated. A failure does not stop the others: every item still runs and the result
 * rejects with the first failure (in time) once all have finished, further failures riding on
 * it as `errors`. An abort of `signal` stops starting new items; the calls in flight (which
 * get `signal`) are still waited for, and the result then rejects with AbortError unless a
 * call failed first.
 * Cost: one promise reaction per call that returns a promise; no per-item allocation otherwise;
 * a clock read per item started after a call completed. Calls that complete at once do not
 * hold the shard past the task quota: starting pauses for a loop turn (as Seastar's loop
 * checks need_preempt()).
 * Throws InvalidArgumentError (synchronously) for a non-iterable `items`, `limit` not an
 * integer >= 1, non-function `fn` or malformed options.
 */
export function maxConcurrentForEach<T>(
  items: Iterable<T>,
  limit: number,
  fn: (item: T, index: number, signal: AbortSignal | undefined) => unknown,
  opts?: SignalOptions,
): Promise<void> {
  if (items === null || typeof items !== "object" || typeof items[Symbol.iterator] !== "function") {
    throw new InvalidArgumentError(`items must be an iterable, got ${describeValue(items)}`);
  }
  checkInteger(limit, "limit", 1);
  checkFunction(fn, "fn");
  checkOptions(opts, "opts", false);
  const signal = opts?.signal;
  if (signal?.aborted) return Promise.reject(abortError(signal, "maxConcurrentForEach"));

  const it = items[Symbol.iterator]();
  return new Promise<void>((resolve, reject) => {
    let running = 0;
    let index = 0;
    let exhausted = false;
    let aborted = false;
    let errors: unknown[] | undefined;
    let pumping = false;

    const finishIfDone = () => {
      if (running > 0 || !(exhausted || aborted)) return;
      if (errors) reject(firstFailure(errors));
      else if (aborted) reject(abortError(signal!, "maxConcurrentForEach"));
      else resolve();
    };
    const settle = () => {
      running--;
      pump(true);
    };
    const fail = (err: unknown) => {
      (errors ??= []).push(err);
      settle();
    };
    // The end of a pause: starts at least one item before pausing again, so each turn progresses.
    const resume = () => {
      running--;
      pump(false);
    };
    // Starts items until `limit` are in flight; plain (non-promise) results complete inline.
    // `check`: look at the clock before starting the next item (see below).
    const pump = (check: boolean) => {
      if (pumping) return;
      pumping = true;
      try {
        while (running < limit && !exhausted && !aborted) {
          if (signal?.aborted) {
            aborted = true;
            // Stopping early, as a for...of break would: a generator's finally runs now.
            try {
              it.return?.();
            } catch {
              // The join rejects with AbortError (or a call's failure) either way.
            }
            break;
          }
          // Seastar's loop checks need_preempt(). Calls that complete at once (a plain value,
          // or a promise settled in a microtask that pumps again) would otherwise hold the
          // shard for the whole iterable, and the task or timer aborting `signal` could never
          // run; so before an item that follows such a completion, once the task quota is
          // spent, starting pauses for a loop turn, the pause holding a slot meanwhile.
          if (check) {
            check = false;
            const turn = maybeYield();
            if (turn !== undefined) {
              running++;
              turn.then(resume);
              break;
            }
          }
          let next: IteratorResult<T>;
          try {
            next = it.next();
          } catch (err) {
            (errors ??= []).push(err);
            exhausted = true;
            break;
          }
          if (next.done) {
            exhausted = true;
            break;
          }
          let result: unknown;
          try {
            result = fn(next.value, index++, signal);
          } catch (err) {
            (errors ??= []).push(err);
            result = undefined;
          }
          if (isThenable(result)) {
            running++;
            try {
              // Once per call whatever the thenable does (see parallelForEach).
              Promise.resolve(result).then(settle, fail);
            } catch (err) {
              fail(err); // settled at once, as a plain value
              check = true;
            }
          } else {
            check = true;
          }
        }
      } finally {
        pumping = false;
      }
      finishIfDone();
    };
    pump(false);
  });
}

/** Seastar's stop_iteration: what a repeat() body returns to stop (`yes`) or go on (`no`). */
export const stopIteration = Object.freeze({ yes: true as const, no: false as const });

/** A repeat() body's verdict: `stopIteration.yes` (true) stops, `stopIteration.no` (false) goes on. */
export type StopIteration = boolean;

/**
 * Calls `fn(signal)` again and again until it returns (or resolves to) `stopIteration.yes`
 * (Seastar's repeat). A result that is not a boolean rejects with InvalidArgumentError, which
 * catches a forgotten `return`. Rejects with fn's error if it throws, or with AbortError when
 * `signal` is found aborted before an iteration.
 * Cost: one await and one clock read per iteration. A body that never really suspends (a
 * plain value, or a promise already settled) still lets the loop run once the task quota is
 * spent (Seastar's repeat checks need_preempt()): otherwise the chain of settled awaits would
 * hold the shard until it ends, and the timer, I/O or task that should end it could never run.
 * Throws InvalidArgumentError (synchronously) for a non-function `fn` or malformed options.
 */
export function repeat(
  fn: (signal: AbortSignal | undefined) => Awaitable<StopIteration>,
  opts?: SignalOptions,
): Promise<void> {
  checkFunction(fn, "fn");
  checkOptions(opts, "opts", false);
  return repeatLoop(fn, opts?.signal);
}

async function repeatLoop(
  fn: (signal: AbortSignal | undefined) => Awaitable<StopIteration>,
  signal: AbortSignal | undefined,
): Promise<void> {
  for (;;) {
    if (signal?.aborted) throw abortError(signal, "repeat");
    const verdict: unknown = await fn(signal);
    if (verdict === true) return;
    if (verdict !== false) {
      throw new InvalidArgumentError(
        `repeat: fn must return stopIteration.yes or stopIteration.no, got ${describeValue(verdict)}`,
      );
    }
    // Seastar's need_preempt(): settled awaits alone never let the loop run.
    const turn = maybeYield();
    if (turn !== undefined) await turn;
  }
}

/**
 * Calls `fn(signal)` until it returns (or resolves to) a value other than undefined, and
 * resolves with that value (Seastar's repeat_until_value). Rejects with fn's error, or with
 * AbortError when `signal` is found aborted before an iteration.
 * Cost: one await and one clock read per iteration; yields to the loop as repeat() does.
 * Throws InvalidArgumentError (synchronously) for a non-function `fn` or malformed options.
 */
export function repeatUntilValue<T>(
  fn: (signal: AbortSignal | undefined) => Awaitable<T | undefined>,
  opts?: SignalOptions,
): Promise<T> {
  checkFunction(fn, "fn");
  checkOptions(opts, "opts", false);
  return repeatUntilValueLoop(fn, opts?.signal);
}

async function repeatUntilValueLoop<T>(
  fn: (signal: AbortSignal | undefined) => Awaitable<T | undefined>,
  signal: AbortSignal | undefined,
): Promise<T> {
  for (;;) {
    if (signal?.aborted) throw abortError(signal, "repeatUntilValue");
    const value = await fn(signal);
    if (value !== undefined) return value;
    // Seastar's need_preempt(): settled awaits alone never let the loop run.
    const turn = maybeYield();
    if (turn !== undefined) await turn;
  }
}

/**
 * Checks `stopCond()` and, while it is falsy, calls `fn(signal)` and waits for it (Seastar's
 * do_until: the condition is checked first, so `fn` may never run). A condition that returns
 * a promise is awaited. Rejects with the first error from either function, or with AbortError
 * when `signal` is found aborted before an iteration.
 * Cost: one await and one clock read per iteration; yields to the loop as repeat() does.
 * Throws InvalidArgumentError (synchronously) for non-function arguments or malformed options.
 */
export function doUntil(
  stopCond: () => Awaitable<unknown>,
  fn: (signal: AbortSignal | undefined) => unknown,
  opts?: SignalOptions,
): Promise<void> {
  checkFunction(stopCond, "stopCond");
  checkFunction(fn, "fn");
  checkOptions(opts, "opts", false);
  return doUntilLoop(stopCond, fn, opts?.signal);
}

async function doUntilLoop(
  stopCond: () => Awaitable<unknown>,
  fn: (signal: AbortSignal | undefined) => unknown,
  signal: AbortSignal | undefined,
): Promise<void> {
  for (;;) {
    if (signal?.aborted) throw abortError(signal, "doUntil");
    let stop = stopCond();
    if (isThenable(stop)) stop = await stop;
    if (stop) return;
    await fn(signal);
    // Seastar's need_preempt(): settled awaits alone never let the loop run.
    const turn = maybeYield();
    if (turn !== undefined) await turn;
  }
}

/**
 * Calls `fn(signal)` forever, each call after the previous one finished (Seastar's
 * keep_doing). The returned promise never resolves: it rejects with fn's error, or with
 * AbortError once `signal` aborts (checked between iterations; `fn` gets the signal so that
 * an iteration in progress can stop early).
 * Cost: one await and one clock read per iteration; yields to the loop as repeat() does, so
 * a body that never suspends can still be stopped by a timer or task aborting `signal`.
 * Throws InvalidArgumentError (synchronously) for a non-function `fn` or malformed options.
 */
export function keepDoing(fn: (signal: AbortSignal | undefined) => unknown, opts?: SignalOptions): Promise<never> {
  checkFunction(fn, "fn");
  checkOptions(opts, "opts", false);
  return keepDoingLoop(fn, opts?.signal);
}

async function keepDoingLoop(fn: (signal: AbortSignal | undefined) => unknown, signal: AbortSignal | undefined): Promise<never> {
  for (;;) {
    if (signal?.aborted) throw abortError(signal, "keepDoing");
    await fn(signal);
    // Seastar's need_preempt(): settled awaits alone never let the loop run.
    const turn = maybeYield();
    if (turn !== undefined) await turn;
  }
}

/**
 * Settles like `op`, or rejects with TimedOutError after `ms` milliseconds, whichever comes
 * first (Seastar's with_timeout). `op` is either a promise, which on timeout is abandoned
 * (its later rejection is observed, never unhandled), or a function `(signal) => result`,
 * called at once with a signal that is aborted (reason: the TimedOutError) on timeout, or
 * with `opts.signal`'s reason when that aborts, so the operation is cancelled rather than
 * left running. The result rejects at the moment of the timeout; it does not wait for the
 * cancelled operation to unwind. An abort of `opts.signal` rejects with AbortError; an
 * already-aborted one rejects at once, calls no function op and abandons a promise op as a
 * timeout does.
 * `ms` = Infinity never times out. The timer runs on the shard's loop (one Timer, no
 * setTimeout); it and the abort listener are released as soon as the call settles.
 * Cost: one promise, one Timer, plus an AbortController in the function form.
 * Throws InvalidArgumentError (synchronously) for an `op` that is neither a promise nor a
 * function, a negative or NaN `ms`, or malformed options.
 */
export function withTimeout<T>(
  op: PromiseLike<T> | ((signal: AbortSignal) => Awaitable<T>),
  ms: number,
  opts?: SignalOptions,
): Promise<T> {
  if (typeof op !== "function" && !isThenable(op)) {
    throw new InvalidArgumentError(`op must be a promise or a function (signal) => promise, got ${describeValue(op)}`);
  }
  checkMs(ms, "ms");
  checkOptions(opts, "opts", false);
  const outer = opts?.signal;
  if (outer?.aborted) {
    // The promise form's op is abandoned as on a timeout: its later rejection is observed.
    observe(op);
    return Promise.reject(abortError(outer, "withTimeout"));
  }

  return new Promise<T>((resolve, reject) => {
    let settled = false;
    let controller: AbortController | undefined;
    let timer: Timer | undefined;
    const cleanup = () => {
      settled = true;
      timer?.cancel();
      outer?.removeEventListener("abort", onAbort);
    };
    const onAbort = () => {
      if (settled) return;
      cleanup();
      controller?.abort(outer!.reason);
      reject(abortError(outer!, "withTimeout"));
    };
    const onTimeout = () => {
      if (settled) return;
      cleanup();
      const err = new TimedOutError(`operation timed out after ${ms} ms`);
      controller?.abort(err);
      reject(err);
    };

    let pending: PromiseLike<T>;
    if (typeof op === "function") {
      controller = new AbortController();
      try {
        pending = Promise.resolve(op(controller.signal));
      } catch (err) {
        reject(err);
        return;
      }
    } else {
      // A thenable's then() runs in a later job: one that throws rejects `pending` (the timer
      // and the listener below are cleaned up then) instead of escaping past them.
      pending = Promise.resolve(op);
    }
    if (ms !== Infinity) timer = new Timer(onTimeout).arm(ms);
    if (outer) {
      outer.addEventListener("abort", onAbort);
      // op itself may have aborted the caller's signal before the listener was in place.
      if (outer.aborted) onAbort();
    }
    pending.then(
      (value) => {
        if (settled) return;
        cleanup();
        resolve(value);
      },
      (err: unknown) => {
        if (settled) return;
        cleanup();
        reject(err);
      },
    );
  });
}
