/**
 * The shard's loop. It runs synchronously inside one Bun macrotask:
 *
 *   expire timers → run ready tasks group by group until the task quota is spent →
 *   one native turn (submit queued descriptors, reap completions, maybe sleep) → repeat
 *
 * Bun's own event loop must keep turning (setTimeout, postMessage, Bun.file), and an await
 * alone never lets it run, so the loop returns to it through setImmediate about once per
 * millisecond while busy, and sleeps in the kernel in short slices while idle. When nothing
 * is pending (no operation in flight, no armed timer, no ref) the loop stops so that the
 * process can exit; new work starts it again.
 */
import { drainSettled, hasReadyTasks, loopState, outsideGroups, reportBlocked, runReadyTasks, setKick } from "./scheduler.ts";
import { expireTimers, nextTimerDeadline, timerRefs, updateClock } from "./timer.ts";
import { reactor, type Reactor } from "./reactor.ts";
import { InvalidArgumentError } from "./errors.ts";
import { describeValue } from "./describe.ts";
import { poolBytes, poolsCollected, uncountedPoolBytes } from "./native.ts";
import { fullGC } from "bun:jsc";

export interface LoopOptions {
  /** Task quota in ms (default 0.5): how long tasks run before I/O is polled again. */
  taskQuotaMs?: number | undefined;
  /** Busy-poll this long after the last work before sleeping in the kernel (default 200 µs). */
  idlePollTimeUs?: number | undefined;
  /** Never busy-poll (shared or oversubscribed CPUs). */
  overprovisioned?: boolean | undefined;
  /** A batch running longer than this is reported as a stall (default 25 ms). */
  blockedReactorNotifyMs?: number | undefined;
  /** Longest single sleep in the kernel before Bun's event loop gets a turn (default 2 ms). */
  sleepSliceMs?: number | undefined;
  /**
   * Sleep slice once the shard has been idle for `deepIdleAfterMs` (default 10 ms). Each wake
   * costs ~25-40 µs of CPU here (VM timer + context switch), so short slices forever would keep
   * an idle shard above 1% CPU; Bun timers and messages then wait at most this long.
   */
  idleSleepSliceMs?: number | undefined;
  /** Idle time after which the loop switches to idleSleepSliceMs (default 100 ms). */
  deepIdleAfterMs?: number | undefined;
  /**
   * Sleep slice once the shard has been idle for `restingAfterMs` (default 50 ms after 1000 ms):
   * an idle server shard (a listener, a read in flight) then wakes 20 times a second, not 100,
   * and Bun's timers and messages wait at most this long.
   */
  restingSleepSliceMs?: number | undefined;
  restingAfterMs?: number | undefined;
  /** While busy, return to Bun's event loop this often (default 1 ms). */
  yieldIntervalMs?: number | undefined;
  /**
   * Run a full garbage collection once the shard's heap in use (objects and external buffers,
   * process.memoryUsage().heapUsed, checked twice a second) has grown by this many MiB, or by
   * the live objects' own size if that is more, since the last one (default 64; 0: never, leave it to
   * JavaScriptCore). In a Worker whose heap reports large external buffers (receive rings,
   * arenas), JavaScriptCore can keep to eden collections, which promote whatever is alive at
   * that instant and never collect it again: a memcached shard under load grew ~1.3 MiB/s
   * without bound (test/soak/memcached-load). The collection is a pause of a few ms, counted
   * in loopStats.fullGcs / fullGcMs and reported as a stall when longer than
   * blockedReactorNotifyMs.
   */
  fullGcGrowthMiB?: number | undefined;
}

export const loopConfig = {
  idlePollTimeUs: 200,
  overprovisioned: false,
  sleepSliceMs: 2,
  idleSleepSliceMs: 10,
  deepIdleAfterMs: 100,
  restingSleepSliceMs: 50,
  restingAfterMs: 1000,
  yieldIntervalMs: 1,
  fullGcGrowthMiB: 64,
};

function positive(name: string, v: number | undefined, allowZero: boolean): void {
  if (v === undefined) return;
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || (!allowZero && v === 0)) {
    throw new InvalidArgumentError(`${name} must be a finite number ${allowZero ? ">=" : ">"} 0, got ${describeValue(v)}`);
  }
}

/** Applies loop options (any time; takes effect on the next turn). */
export function configureLoop(options: LoopOptions): void {
  if (options === null || typeof options !== "object") throw new InvalidArgumentError("configureLoop: options must be an object");
  positive("taskQuotaMs", options.taskQuotaMs, false);
  positive("idlePollTimeUs", options.idlePollTimeUs, true);
  positive("blockedReactorNotifyMs", options.blockedReactorNotifyMs, false);
  positive("sleepSliceMs", options.sleepSliceMs, false);
  positive("yieldIntervalMs", options.yieldIntervalMs, false);
  positive("idleSleepSliceMs", options.idleSleepSliceMs, false);
  positive("deepIdleAfterMs", options.deepIdleAfterMs, true);
  positive("restingSleepSliceMs", options.restingSleepSliceMs, false);
  positive("restingAfterMs", options.restingAfterMs, true);
  positive("fullGcGrowthMiB", options.fullGcGrowthMiB, true);
  // Only a boolean: the string "false" (an option read from text) turned busy-polling off.
  if (options.overprovisioned !== undefined && typeof options.overprovisioned !== "boolean") {
    throw new InvalidArgumentError(`overprovisioned must be a boolean, got ${describeValue(options.overprovisioned)}`);
  }
  if (options.taskQuotaMs !== undefined) loopState.taskQuotaMs = options.taskQuotaMs;
  if (options.blockedReactorNotifyMs !== undefined) loopState.blockedNotifyMs = options.blockedReactorNotifyMs;
  if (options.idlePollTimeUs !== undefined) loopConfig.idlePollTimeUs = options.idlePollTimeUs;
  if (options.overprovisioned !== undefined) loopConfig.overprovisioned = options.overprovisioned;
  if (options.sleepSliceMs !== undefined) loopConfig.sleepSliceMs = options.sleepSliceMs;
  if (options.yieldIntervalMs !== undefined) loopConfig.yieldIntervalMs = options.yieldIntervalMs;
  if (options.idleSleepSliceMs !== undefined) loopConfig.idleSleepSliceMs = options.idleSleepSliceMs;
  if (options.deepIdleAfterMs !== undefined) loopConfig.deepIdleAfterMs = options.deepIdleAfterMs;
  if (options.restingSleepSliceMs !== undefined) loopConfig.restingSleepSliceMs = options.restingSleepSliceMs;
  if (options.restingAfterMs !== undefined) loopConfig.restingAfterMs = options.restingAfterMs;
  if (options.fullGcGrowthMiB !== undefined) {
    loopConfig.fullGcGrowthMiB = options.fullGcGrowthMiB;
    nextHeapCheck = 0;
  }
}

let running = false;
let scheduled = false;
let refs = 0;
let lastWork = 0;
/** Set while the loop is parked in Bun's event loop, waiting for the next timer (see park). */
let parked: ReturnType<typeof setTimeout> | undefined;

/** Loop statistics (JS side); reactor().counters() has the native ones. */
export const loopStats = {
  turns: 0,
  bunYields: 0,
  idleSlices: 0,
  /** Times the loop parked in Bun's event loop (only timers armed, nothing in flight). */
  parks: 0,
  loopErrors: 0,
  /** Full garbage collections the loop ran (see LoopOptions.fullGcGrowthMiB), and their total pause. */
  fullGcs: 0,
  fullGcMs: 0,
};

/** How often the heap is looked at (process.memoryUsage() costs ~12 µs here). */
const HEAP_CHECK_INTERVAL_MS = 500;
let nextHeapCheck = 0;
/**
 * Heap in use (objects and external buffers, less the pools: see checkHeap) after the last full
 * collection or the first check; NaN until then (the pools may exceed what the engine counts,
 * so a negative base is a real one).
 */
let heapBase = Number.NaN;
/** The objects alone (heap in use less external memory) at that point. */
let objectsBase = 0;

/**
 * process.memoryUsage(), or undefined where it fails: it opens /proc files, and throws once the
 * process is out of descriptors (EMFILE), which would stop the loop for good (runLoop's heap
 * check runs before its `try`). The check is skipped until the next interval then.
 */
function memoryUsage(): NodeJS.MemoryUsage | undefined {
  try {
    return process.memoryUsage();
  } catch {
    return undefined;
  }
}

/** Runs a full collection when the heap grew past LoopOptions.fullGcGrowthMiB (see there). */
function checkHeap(now: number): void {
  nextHeapCheck = now + HEAP_CHECK_INTERVAL_MS;
  const growthMiB = loopConfig.fullGcGrowthMiB;
  if (growthMiB === 0) return;
  let m = memoryUsage();
  if (m === undefined) return;
  // Pools viewed for their owner's lifetime (receive rings, buffer pools) count as external
  // memory but are not garbage: left out, so that a pool made after the first check (the first
  // listen()) does not look like growth and cost a full collection that frees nothing. The
  // engine's count lags: a released pool's view stays in heapUsed until a full collection
  // (poolBytes() keeps it until then), and a new one joins it only once a collection visited it
  // (~15 ms): until then `used` may be short by up to `uncounted`, which must not lower the base
  // (the view counted later would look like growth).
  const used = m.heapUsed - poolBytes();
  const uncounted = uncountedPoolBytes(now);
  if (Number.isNaN(heapBase) || used + uncounted < heapBase) {
    heapBase = used + uncounted;
    objectsBase = Math.max(0, m.heapUsed - m.external);
    return;
  }
  // Growth counts external memory too: garbage ArrayBuffers (copies of large values, views made
  // per operation) hold memory outside the object heap. The shard's fixed native views (rings,
  // arenas) are in the base and do not scale the threshold; the live objects do.
  if (used - heapBase < Math.max(growthMiB * 1048576, objectsBase)) return;
  const heapBefore = m.heapUsed;
  const start = performance.now();
  fullGC();
  const took = performance.now() - start;
  m = memoryUsage();
  if (m === undefined) return;
  poolsCollected();
  heapBase = m.heapUsed - poolBytes();
  objectsBase = Math.max(0, m.heapUsed - m.external);
  loopStats.fullGcs++;
  loopStats.fullGcMs += took;
  if (took >= loopState.blockedNotifyMs) {
    reportBlocked(`in a full garbage collection (heap ${(heapBefore / 1048576).toFixed(0)} -> ${(m.heapUsed / 1048576).toFixed(0)} MiB)`, took);
  }
}

/** Starts the loop (through setImmediate) if it is stopped. Called by everything that adds work. */
export function ensureLoopRunning(): void {
  if (running || scheduled) return;
  // The shard's reactor exists before the loop is scheduled: where the native library or
  // io_uring is refused, the StartupError is thrown at the call that needed the loop (a sleep, a
  // timer, a socket). Thrown by the loop's own setImmediate callback, it reached nobody: the
  // work waiting for the loop never settled (Bun then spun at 100% CPU, never exiting).
  reactor();
  unpark();
  scheduled = true;
  outsideGroups(() => setImmediate(runLoop));
}
setKick(ensureLoopRunning);

/**
 * Keeps the loop (and process) alive while something may still produce work from outside the
 * ring (a cross-shard channel, a listener). Returns a function that drops the ref.
 */
export function refLoop(): () => void {
  refs++;
  ensureLoopRunning();
  let dropped = false;
  return () => {
    if (dropped) return;
    dropped = true;
    refs--;
  };
}

/** Hooks run once per turn (cross-shard ring drains register here). Return true if they did work. */
const pollers: (() => boolean)[] = [];

/** @internal Registers a function the loop calls every turn before touching the kernel. */
export function addPoller(fn: () => boolean): () => void {
  pollers.push(fn);
  ensureLoopRunning(); // a parked loop must start polling it
  return () => {
    const i = pollers.indexOf(fn);
    if (i >= 0) pollers.splice(i, 1);
  };
}

/**
 * Hooks around sleeping in the kernel. `beforeSleep` publishes "I am asleep" (e.g. a flag other
 * shards read before writing the eventfd) and re-checks its sources; returning true cancels the
 * sleep because work arrived meanwhile. `afterSleep` clears the flag.
 */
export interface SleepHook {
  beforeSleep(): boolean;
  afterSleep(): void;
}
const sleepHooks: SleepHook[] = [];

/** @internal Registers a sleep hook (cross-shard wake-ups). Returns a function that removes it. */
export function addSleepHook(hook: SleepHook): () => void {
  sleepHooks.push(hook);
  ensureLoopRunning(); // a parked loop must sleep in the kernel from now on
  return () => {
    const i = sleepHooks.indexOf(hook);
    if (i >= 0) sleepHooks.splice(i, 1);
  };
}

function alive(r: Reactor): boolean {
  return r.inFlight > 0 || timerRefs() > 0 || refs > 0 || hasReadyTasks() || r.queued > 0 || r.nativeQueued;
}

function runPollers(): boolean {
  let did = false;
  for (let i = 0; i < pollers.length; i++) if (pollers[i]!()) did = true;
  return did;
}

function runLoop(): void {
  scheduled = false;
  if (running) return;
  unpark();
  // First use creates the reactor; if io_uring is refused that throws StartupError (uncaught, it
  // names the fix) and the loop stays stopped, so later work tries again rather than never running.
  let r = reactor();
  running = true;
  loopState.idle = false;
  const sliceStart = performance.now();
  // Everything from here is inside the `try`: a throw before it left `running` set for good,
  // and nothing of Shoal's ran again.
  try {
    if (yieldedAt !== 0) {
      // Bun's event loop ran between the yield and now: its callbacks (a setTimeout, a Bun.file
      // continuation, a Bun.serve handler) block the shard as much as a task would.
      const blocked = sliceStart - yieldedAt;
      yieldedAt = 0;
      if (blocked >= loopState.blockedNotifyMs) reportBlocked("outside Shoal's tasks (in callbacks run by Bun's event loop)", blocked);
    }
    if (sliceStart >= nextHeapCheck) checkHeap(sliceStart);
    for (;;) {
      loopStats.turns++;
      // Clock reads cost ~30 ns each here: one per turn start, one per batch end, one after a
      // sleep; everything else reuses the latest.
      const t = updateClock();
      loopState.lastClock = t;
      expireTimers(t);
      const ran = runReadyTasks(t);
      let polled = pollers.length > 0 && runPollers();
      // A poller's work can feed one that ran before it this turn (a cross-shard reply that
      // writes to a socket whose flush already ran): one more pass before sleeping.
      if (polled && pollers.length > 1) polled = runPollers() || polled;
      // A task destroyed the shard's reactor (nothing was in flight): go on with its replacement,
      // where work issued since may be queued (the closed one's turn threw ClosedError, or the
      // loop saw nothing alive and stopped with that work never submitted).
      if (r.isClosed) r = reactor();
      let waitUs = 0;
      if (ran > 0 || polled) lastWork = t;
      // Nothing left to run: sleep in the same io_uring_enter that submits what this turn
      // queued (like io_uring_submit_and_wait), rather than one enter to submit and another to
      // wait. An operation that completes at once (a send) ends the wait at once.
      if (!hasReadyTasks()) {
        if (!alive(r)) {
          // Only unref'd timers (if any) are left: they must not keep the process alive, but
          // they still fire while something else (a Bun server, a setTimeout) does.
          const untilTimer = nextTimerDeadline() - loopState.lastClock;
          if (untilTimer !== Infinity) {
            park(Math.max(0, untilTimer), false);
            return;
          }
          break;
        }
        const now = loopState.lastClock;
        const idleUs = (now - lastWork) * 1000;
        // Busy-polling is pointless when only timers are pending and the next is further away
        // than the poll would last: nothing can complete meanwhile, and Bun's callbacks cannot
        // run during a synchronous poll either. (Timers due sooner are polled for: a sleep
        // would cost a kernel timeout each.)
        const timersOnly = onlyTimersPending(r) && (nextTimerDeadline() - now) * 1000 > loopConfig.idlePollTimeUs;
        if (loopConfig.overprovisioned || idleUs >= loopConfig.idlePollTimeUs || timersOnly) {
          const untilTimer = nextTimerDeadline() - now;
          if (untilTimer > 2 * loopConfig.sleepSliceMs && untilTimer !== Infinity && onlyTimersPending(r)) {
            park(untilTimer - loopConfig.sleepSliceMs);
            return;
          }
          if (untilTimer > 0) {
            const slice =
              idleUs >= loopConfig.restingAfterMs * 1000
                ? loopConfig.restingSleepSliceMs
                : idleUs >= loopConfig.deepIdleAfterMs * 1000
                  ? loopConfig.idleSleepSliceMs
                  : loopConfig.sleepSliceMs;
            waitUs = Math.ceil(Math.min(untilTimer, slice) * 1000);
          }
        }
      }
      let hooked = false;
      if (waitUs > 0 && sleepHooks.length > 0) {
        hooked = true;
        for (let i = 0; i < sleepHooks.length; i++) if (sleepHooks[i]!.beforeSleep()) waitUs = 0;
      }
      let completions: number;
      if (!hooked) {
        completions = r.turn(waitUs, loopState.lastClock);
      } else {
        // A failed enter (thrown) must still clear what beforeSleep published: left "asleep",
        // the shard had every message from other shards wake it with a syscall meanwhile.
        try {
          completions = r.turn(waitUs, loopState.lastClock);
        } finally {
          for (let i = 0; i < sleepHooks.length; i++) sleepHooks[i]!.afterSleep();
        }
      }
      // After a sleep time moved, for now() too: continuations of what the sleep brought
      // (settled below) read the time before it, as stale as the slice was long (up to
      // 50 ms). After a poll the turn start is close enough.
      let after = waitUs > 0 ? updateClock() : loopState.lastClock;
      if (r.settledInline) {
        r.settledInline = false;
        after = drainSettled(after);
      }
      if (completions > 0) lastWork = after;
      if (waitUs > 0 && completions === 0 && !hasReadyTasks() && nextTimerDeadline() > after && !(pollers.length > 0 && runPollers())) {
        // A whole slice passed with nothing to do: let Bun's event loop run, then sleep again.
        loopStats.idleSlices++;
        yieldToBun();
        return;
      }
      if (after - sliceStart >= loopConfig.yieldIntervalMs) {
        yieldToBun();
        return;
      }
    }
  } catch (err) {
    // The loop itself must survive; surface the error and keep serving.
    loopStats.loopErrors++;
    yieldToBun();
    throw err;
  }
  running = false;
  loopState.idle = true;
}

/**
 * Nothing is in flight in the ring and no outside source (ref, poller, cross-shard hook) is
 * registered: only a timer can make work. Sleeping in kernel slices would still wake the shard
 * ~100 times a second (each wake costs 25-100 µs of CPU on a VM), so the loop parks instead.
 */
function onlyTimersPending(r: Reactor): boolean {
  return r.inFlight === 0 && r.queued === 0 && !r.nativeQueued && !r.settledInline && refs === 0 && pollers.length === 0 && sleepHooks.length === 0;
}

/**
 * Sleeps in Bun's event loop until shortly before the next timer: no wake-ups at all, and Bun's
 * timers and messages are served at once. The last slice before the deadline is slept in the
 * kernel, which is precise. Anything that adds work (an operation, a task, an earlier timer, the
 * last timer's cancel) calls ensureLoopRunning, which unparks.
 */
function park(ms: number, ref = true): void {
  loopStats.parks++;
  running = false;
  loopState.idle = true;
  // Bun's setTimeout takes at most 2^31-1 ms (longer fires after 1 ms, with a warning): a
  // longer wait parks again when that one ends.
  parked = outsideGroups(() => setTimeout(wakeFromPark, Math.min(ms, MAX_SET_TIMEOUT_MS)));
  if (!ref) parked.unref();
}

const MAX_SET_TIMEOUT_MS = 2 ** 31 - 1;

function wakeFromPark(): void {
  parked = undefined;
  if (!running && !scheduled) runLoop();
}

function unpark(): void {
  if (parked === undefined) return;
  clearTimeout(parked);
  parked = undefined;
}

/** When the loop last handed over to Bun's event loop while busy or sleeping in slices (0: not since). */
let yieldedAt = 0;

function yieldToBun(): void {
  loopStats.bunYields++;
  // Bun's callbacks that run meanwhile read now(): not the time before a sleep slice.
  yieldedAt = updateClock();
  running = false;
  scheduled = true;
  outsideGroups(() => setImmediate(runLoop));
}
