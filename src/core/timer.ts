/**
 * Timers on the shard's loop. All armed timers live in one binary heap ordered by deadline;
 * the loop sleeps in the kernel until the earliest one (one kernel timeout, however many
 * timers are armed) and fires expired timers as tasks in the group that armed them.
 */
import { describeValue } from "./describe.ts";
import { AbortError, InvalidArgumentError } from "./errors.ts";
import { currentSchedulingGroup, enqueue, loopState, type Completable, type SchedulingGroup } from "./scheduler.ts";
import { ensureLoopRunning } from "./loop.ts";

let lowres = performance.now();

/**
 * A cheap monotonic clock in ms, updated once per loop turn (reads cost ~1 ns), after the loop
 * slept in the kernel, and whenever the loop hands over to Bun's event loop; while the loop is
 * stopped or parked (nothing of Shoal's running), each read takes a fresh time.
 */
export function now(): number {
  return loopState.idle ? (lowres = performance.now()) : lowres;
}

/** @internal The loop refreshes the low-resolution clock once per turn. */
export function updateClock(): number {
  lowres = performance.now();
  return lowres;
}

const heap: Timer[] = [];
let sequence = 0;

function checkDelay(name: string, ms: number): void {
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0) {
    throw new InvalidArgumentError(`${name} must be a finite number of ms >= 0, got ${describeValue(ms)}`);
  }
}

/**
 * A timer that calls `callback` as a task in the scheduling group that armed it.
 * arm/cancel cost O(log n) in the number of armed timers and no system call.
 * As in Seastar, a timer stays armed until its callback runs: once due, its fire waits in the
 * task queue (behind tasks of the same turn, or a callback of another timer due then), and
 * until it has run the timer still reports `armed`, `cancel()` drops that fire and returns
 * true, `rearm()` replaces it, and `arm()`/`armPeriodic()` throw. Inside its own one-shot
 * callback the timer is no longer armed and may be armed again.
 */
export class Timer implements Completable {
  private readonly callback: () => void;
  /** @internal */ deadline = 0;
  /** @internal */ seq = 0;
  /** @internal */ index = -1;
  /** @internal */ period = 0;
  /** @internal */ group: SchedulingGroup | undefined;
  /** @internal */ fireGeneration = 0;
  /** The generation whose expiry is queued as a task and has not run yet (-1: none). */
  private queuedGeneration = -1;
  private _unref = false;

  constructor(callback: () => void) {
    if (typeof callback !== "function") throw new InvalidArgumentError("Timer: callback must be a function");
    this.callback = callback;
  }

  /** True from arm until the callback runs (a due timer whose fire is queued is still armed), or cancel. */
  get armed(): boolean {
    return this.index >= 0 || this.firePending;
  }

  /** An expiry is queued as a task, and neither run nor dropped yet. */
  private get firePending(): boolean {
    return this.queuedGeneration === this.fireGeneration;
  }

  /** Fires once after `delayMs`. Throws if already armed, due fire not run yet included (use rearm). */
  arm(delayMs: number): this {
    checkDelay("delayMs", delayMs);
    if (this.armed) throw new InvalidArgumentError("Timer.arm: already armed; use rearm()");
    this.period = 0;
    this.insert(performance.now() + delayMs);
    return this;
  }

  /** Fires every `periodMs` (> 0) until cancelled; the first time after one period. */
  armPeriodic(periodMs: number): this {
    checkDelay("periodMs", periodMs);
    if (periodMs <= 0) throw new InvalidArgumentError("Timer.armPeriodic: periodMs must be > 0");
    if (this.armed) throw new InvalidArgumentError("Timer.armPeriodic: already armed; cancel() first");
    this.period = periodMs;
    this.insert(performance.now() + periodMs);
    return this;
  }

  /** Cancels if armed (a due fire not run yet is dropped), then arms for `delayMs` (one-shot). */
  rearm(delayMs: number): this {
    checkDelay("delayMs", delayMs);
    this.cancel();
    this.period = 0;
    this.insert(performance.now() + delayMs);
    return this;
  }

  /** `using timer = new Timer(fn).arm(ms)`: cancelled at the end of the scope. */
  [Symbol.dispose](): void {
    this.cancel();
  }

  /**
   * Disarms. Returns true if it was armed, including a due timer whose callback has not run yet
   * (Seastar's timer::cancel). A cancelled timer never fires, even if already due.
   */
  cancel(): boolean {
    const wasPending = this.dropPendingFire();
    if (this.index < 0) return wasPending;
    removeAt(this.index);
    if (!this._unref) unrefOne();
    return true;
  }

  /** Drops an expiry already queued (bumping the generation makes its task a no-op); true if there was one. */
  private dropPendingFire(): boolean {
    const pending = this.firePending;
    if (pending && this.period === 0) dueOneShots--;
    this.fireGeneration++;
    return pending;
  }

  /** An unref'd timer does not keep the loop (and process) alive on its own. */
  unref(): this {
    // Only a timer in the heap holds a ref (a queued fire runs as a task either way).
    if (!this._unref && this.index >= 0) unrefOne();
    this._unref = true;
    return this;
  }

  private insert(deadline: number): void {
    this.dropPendingFire();
    this.deadline = deadline;
    this.seq = sequence++;
    this.group = currentSchedulingGroup();
    push(this);
    if (!this._unref) refs++;
    ensureLoopRunning();
  }

  /** @internal runs as a task in the arming group */
  complete(generation: number): void {
    if (generation !== this.fireGeneration) {
      if (this.queuedGeneration === generation) this.queuedGeneration = -1;
      return;
    }
    // Disarmed before the callback, as Seastar's complete_timers: a one-shot callback may arm
    // its own timer again.
    this.queuedGeneration = -1;
    if (this.period === 0) dueOneShots--;
    this.callback();
  }

  /** @internal */
  expire(): void {
    if (!this._unref) refs--;
    this.index = -1;
    const gen = this.fireGeneration;
    if (this.period > 0) {
      // Periodic timers keep their phase; a late loop skips missed periods rather than bursting.
      // The next deadline is the first one of the phase after now (t + period shifted the
      // phase by however late this loop was).
      const period = this.period;
      let next = this.deadline + period;
      const t = performance.now();
      if (next <= t) next += Math.ceil((t - next) / period) * period;
      if (next <= t) next += period; // t on the grid exactly, or rounding
      this.deadline = next;
      this.seq = sequence++;
      push(this);
      if (!this._unref) refs++;
    }
    // A periodic timer whose last fire is still queued (the task quota ran out) skips this one:
    // two fires back to back would be the burst the phase rule avoids.
    if (this.queuedGeneration === gen) return;
    this.queuedGeneration = gen;
    if (this.period === 0) dueOneShots++;
    enqueue(this.group!, this, gen, 0);
  }
}

let refs = 0;
/** One-shot timers that are due, their fire queued and not run (still armed, out of the heap). */
let dueOneShots = 0;

function unrefOne(): void {
  // The last timer keeping the loop alive is gone: a loop parked until its deadline must look
  // again (and stop, so that the process can exit).
  if (--refs === 0) ensureLoopRunning();
}

/** @internal Armed timers that keep the loop alive. */
export function timerRefs(): number {
  return refs;
}

/** Number of armed timers (due ones whose callback has not run yet included). */
export function armedTimers(): number {
  return heap.length + dueOneShots;
}

/** @internal Deadline (performance.now() ms) of the earliest armed timer, or Infinity. */
export function nextTimerDeadline(): number {
  return heap.length > 0 ? heap[0]!.deadline : Infinity;
}

/** @internal Moves every timer due at `t` onto its group's queue, in deadline order. Returns how many. */
export function expireTimers(t: number): number {
  let n = 0;
  while (heap.length > 0 && heap[0]!.deadline <= t) {
    const timer = heap[0]!;
    removeAt(0);
    timer.expire();
    n++;
  }
  return n;
}

function less(a: Timer, b: Timer): boolean {
  return a.deadline < b.deadline || (a.deadline === b.deadline && a.seq < b.seq);
}

function push(t: Timer): void {
  t.index = heap.length;
  heap.push(t);
  siftUp(t.index);
}

function removeAt(i: number): void {
  const removed = heap[i]!;
  const last = heap.pop()!;
  removed.index = -1;
  if (i < heap.length) {
    heap[i] = last;
    last.index = i;
    siftUp(i);
    siftDown(last.index);
  }
}

function siftUp(i: number): void {
  const t = heap[i]!;
  while (i > 0) {
    const p = (i - 1) >> 1;
    const parent = heap[p]!;
    if (!less(t, parent)) break;
    heap[i] = parent;
    parent.index = i;
    i = p;
  }
  heap[i] = t;
  t.index = i;
}

function siftDown(i: number): void {
  const n = heap.length;
  const t = heap[i]!;
  for (;;) {
    const l = 2 * i + 1;
    if (l >= n) break;
    const r = l + 1;
    const c = r < n && less(heap[r]!, heap[l]!) ? r : l;
    const child = heap[c]!;
    if (!less(child, t)) break;
    heap[i] = child;
    child.index = i;
    i = c;
  }
  heap[i] = t;
  t.index = i;
}

/**
 * Resolves after `ms` milliseconds, on the shard's loop. Rejects with AbortError (cause: the
 * signal's reason) if `signal` aborts first; the timer is then cancelled.
 */
export function sleep(ms: number, opts?: { signal?: AbortSignal | undefined }): Promise<void> {
  checkDelay("ms", ms);
  if (opts !== undefined && (opts === null || typeof opts !== "object")) {
    throw new InvalidArgumentError(`sleep: options must be an object, got ${String(opts)}`);
  }
  const signal = opts?.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new InvalidArgumentError("sleep: opts.signal must be an AbortSignal");
  }
  if (signal?.aborted) return Promise.reject(new AbortError("sleep was aborted", { cause: signal.reason }));
  return new Promise<void>((resolve, reject) => {
    if (!signal) {
      new Timer(resolve).arm(ms);
      return;
    }
    const onAbort = () => {
      timer.cancel();
      reject(new AbortError("sleep was aborted", { cause: signal.reason }));
    };
    const timer = new Timer(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    });
    signal.addEventListener("abort", onAbort, { once: true });
    timer.arm(ms);
  });
}
