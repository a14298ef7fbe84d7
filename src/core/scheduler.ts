/**
 * Scheduling groups and task queues (one shard). Work enters a shard as entries on its
 * group's queue: plain tasks, I/O completions, timer expiries, cross-shard messages. The loop
 * runs groups lowest virtual runtime first; a group's virtual runtime advances by the time its
 * batches took divided by its shares (CFS-like), so CPU is shared in proportion to shares.
 *
 * Promise continuations run in the engine's microtask drain, outside any queue, so the group
 * travels with the async context (AsyncLocalStorage): code inside withSchedulingGroup(sg, fn),
 * and everything it awaits, issues operations tagged with sg.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { drainMicrotasks } from "bun:jsc";
import { InvalidArgumentError } from "./errors.ts";
import { describeValue } from "./describe.ts";

/** Something a queue entry completes: an I/O slot handler, a timer, a message. */
export interface Completable {
  complete(a: number, b: number): void;
}

type Entry = Completable | (() => void);

const MAX_GROUPS = 64;

/**
 * A scheduling group: a share of this shard's CPU. Create with createSchedulingGroup();
 * run code in it with withSchedulingGroup().
 */
export class SchedulingGroup {
  readonly name: string;
  readonly id: number;
  private _shares: number;
  /** @internal virtual runtime in ms / shares */
  vruntime = 0;
  /** Total CPU time (ms) its batches have taken on this shard. */
  runtimeMs = 0;
  /** Entries executed. */
  tasksRun = 0;
  /** @internal */ entries: Entry[] = [];
  /** @internal */ argA: number[] = [];
  /** @internal */ argB: number[] = [];
  /** @internal */ head = 0;
  /** @internal */ active = false;

  /** @internal */
  constructor(name: string, shares: number, id: number) {
    this.name = name;
    this._shares = shares;
    this.id = id;
  }

  get shares(): number {
    return this._shares;
  }

  /** Changes the group's shares (1..1000). */
  setShares(shares: number): void {
    checkShares(shares);
    this._shares = shares;
  }

  /** Entries waiting to run. */
  get queued(): number {
    return this.entries.length - this.head;
  }
}

function checkShares(shares: number): void {
  if (!Number.isFinite(shares) || shares < 1 || shares > 1000) {
    throw new InvalidArgumentError(`shares must be a number in 1..1000, got ${describeValue(shares)}`);
  }
}

const groups: SchedulingGroup[] = [];
const active: SchedulingGroup[] = [];

/** The group code runs in when none was chosen. */
export const defaultSchedulingGroup = new SchedulingGroup("main", 1000, 0);
groups.push(defaultSchedulingGroup);

const storage = new AsyncLocalStorage<SchedulingGroup>();

/** @internal True while the default group is the only one: completions need no ordering. */
export const singleGroup = { value: true };

/**
 * Creates a scheduling group with `shares` (1..1000) of CPU relative to other groups.
 * Groups are per shard and live as long as the shard; at most 64.
 */
export function createSchedulingGroup(name: string, shares: number): SchedulingGroup {
  if (typeof name !== "string" || name.length === 0) {
    throw new InvalidArgumentError("scheduling group name must be a non-empty string");
  }
  checkShares(shares);
  if (groups.length >= MAX_GROUPS) throw new InvalidArgumentError(`at most ${MAX_GROUPS} scheduling groups`);
  const g = new SchedulingGroup(name, shares, groups.length);
  groups.push(g);
  singleGroup.value = false;
  return g;
}

/** All scheduling groups of this shard. */
export function schedulingGroups(): readonly SchedulingGroup[] {
  return groups;
}

/**
 * Runs `fn` with `sg` as the current group; operations fn issues (even after awaits) are tagged
 * sg, and their completions run in sg's turns. fn's synchronous part runs at once, in the
 * caller's turn (and is charged to the caller's group): start fn with `await yieldNow()` to
 * run even that part as a task of sg. Semaphores, queues, pipes and condition variables wake a
 * waiter in its own group; a bare promise settled from another group resumes its awaiting code
 * in the settling group's turn.
 */
export function withSchedulingGroup<T>(sg: SchedulingGroup, fn: () => T): T {
  if (!(sg instanceof SchedulingGroup)) throw new InvalidArgumentError("withSchedulingGroup: not a SchedulingGroup");
  if (typeof fn !== "function") throw new InvalidArgumentError("withSchedulingGroup: fn must be a function");
  return storage.run(sg, fn);
}

/** The group of the calling code. Costs about 5 ns. */
/**
 * @internal Runs `fn` in the root async context (no scheduling group, no other store of the
 * caller): the loop schedules itself (setImmediate, setTimeout) through this, so that it does
 * not run in the context of whichever code last woke it (its pollers, and what they issue,
 * belong to the default group; a timer armed under one request never sees another's context).
 */
export function outsideGroups<T>(fn: () => T): T {
  return inRootContext(fn);
}

/** Runs a function in the async context of this module's load: no caller's stores leak in. */
const inRootContext: <T>(fn: () => T) => T = AsyncLocalStorage.snapshot();

export function currentSchedulingGroup(): SchedulingGroup {
  return storage.getStore() ?? defaultSchedulingGroup;
}

/** Set by the loop: starts it (via setImmediate) when work arrives while it is stopped. */
let kick: () => void = () => {};
/** @internal */
export function setKick(fn: () => void): void {
  kick = fn;
}

let readyCount = 0;

/** @internal Queues an entry on `g`; the loop runs it in g's turn. */
export function enqueue(g: SchedulingGroup, e: Entry, a: number, b: number): void {
  g.entries.push(e);
  g.argA.push(a);
  g.argB.push(b);
  readyCount++;
  if (!g.active) activate(g);
}

/** How far (in task quotas of the smallest share) a waking group may stay behind the others. */
const WAKE_SLACK_QUOTAS = 4;

/** The shard's minimum virtual runtime: only increases (raised after every batch). */
let minVruntime = 0;

/** The most a group waking from idle may run before the others get a turn: 100 task quotas. */
const WAKE_BURST_QUOTAS = 100;

/** Raises minVruntime to the smallest virtual runtime among the active groups (and `g`). */
function advanceMinVruntime(g: SchedulingGroup): void {
  let min = g.vruntime;
  for (let i = 0; i < active.length; i++) min = Math.min(min, active[i]!.vruntime);
  if (min > minVruntime) minVruntime = min;
}

function activate(g: SchedulingGroup): void {
  g.active = true;
  // A group waking from idle starts no further behind the smallest active virtual runtime than
  // a few quotas of its own (CFS's wake-up slack): no hoarded credit from a long sleep, but a
  // group whose work alternates with I/O (idle between its chunks every turn) keeps what its
  // share earned, instead of being levelled to take turns 1:1 with the others.
  // The reference is the smallest active virtual runtime, or, when no group is active, the
  // shard's (only increasing) minimum: a group that was idle while others ran must not come
  // back with all the credit of that time. The slack is measured in the smallest share among
  // the groups competing now (the largest step one of their batches can take), so a low-share
  // I/O group is not levelled either; groups that have nothing queued do not count (an unused
  // 1-share group made every waking group's slack 1000 quotas). And whatever the shares, the
  // waking group's catch-up is at most WAKE_BURST_QUOTAS of its own running time: a 1000-share
  // group back from idle kept a busy 1-share group waiting for 2 s.
  let min = Infinity;
  let smallest = g.shares;
  for (let i = 0; i < active.length; i++) {
    const a = active[i]!;
    if (a.vruntime < min) min = a.vruntime;
    if (a.shares < smallest) smallest = a.shares;
  }
  const base = min === Infinity ? minVruntime : Math.max(min, minVruntime);
  const quota = loopState.taskQuotaMs;
  const slack = Math.min((WAKE_SLACK_QUOTAS * quota) / smallest, (WAKE_BURST_QUOTAS * quota) / g.shares);
  const floor = base - slack;
  if (g.vruntime < floor) g.vruntime = floor;
  active.push(g);
  if (loopState.idle) kick();
}

/** Queues `fn` to run as a task in the current scheduling group. */
export function schedule(fn: () => void): void {
  if (typeof fn !== "function") throw new InvalidArgumentError("schedule: fn must be a function");
  enqueue(currentSchedulingGroup(), fn, 0, 0);
}

/** True when any group has queued entries. */
export function hasReadyTasks(): boolean {
  return readyCount > 0;
}

/** Loop configuration and state shared with loop.ts. */
export const loopState = {
  /** Task quota in ms: a group's batch and the task phase end once they run this long. */
  taskQuotaMs: 0.5,
  /** A batch longer than this is reported as a stall (ms). */
  blockedNotifyMs: 25,
  /** Start of the current batch (performance.now()), for maybeYield. */
  batchStart: 0,
  /** The latest clock read of the loop (the end of the last batch). */
  lastClock: 0,
  /** True while the loop is stopped or asleep in Bun's event loop (a kick is needed). */
  idle: true,
  tasksRun: 0,
  stalls: 0,
  stallReportsSuppressed: 0,
  lastStallReport: -Infinity,
  /** Where stall reports go; replaced by the logger later. */
  report: (msg: string) => console.warn(msg),
};

/**
 * Cooperative preemption point: if the current batch has run past the task quota, returns a
 * promise that resolves in a later turn (other groups and I/O run first); otherwise undefined.
 * Use as `await maybeYield()` inside long loops. Costs one clock read when no yield is needed.
 */
export function maybeYield(): Promise<void> | undefined {
  if (performance.now() - loopState.batchStart < loopState.taskQuotaMs) return undefined;
  return yieldNow();
}

/** Always yields: resolves after other ready work had a turn. */
export function yieldNow(): Promise<void> {
  return new Promise<void>((resolve) => enqueue(currentSchedulingGroup(), resolve, 0, 0));
}

function pickGroup(): SchedulingGroup | undefined {
  let best: SchedulingGroup | undefined;
  for (let i = 0; i < active.length; i++) {
    const g = active[i]!;
    if (best === undefined || g.vruntime < best.vruntime) best = g;
  }
  return best;
}

function deactivate(g: SchedulingGroup): void {
  g.active = false;
  g.entries.length = 0;
  g.argA.length = 0;
  g.argB.length = 0;
  g.head = 0;
  const i = active.indexOf(g);
  active[i] = active[active.length - 1]!;
  active.pop();
}

function runBatch(g: SchedulingGroup, deadline: number): number {
  const entries = g.entries;
  const argA = g.argA;
  const argB = g.argB;
  let ran = 0;
  // The clock is read after every entry (~30 ns): a long task ends its batch at the quota,
  // however cheap the entries before it were.
  // Entries queued while the batch runs (a task scheduling another) join this batch if time allows.
  while (g.head < entries.length) {
    const i = g.head++;
    const e = entries[i]!;
    entries[i] = undefined as unknown as Entry;
    ran++;
    // Counted off before it runs: nothing that escapes the batch can leave the count above the
    // entries queued (the loop then spun, never sleeping and never letting the process exit).
    readyCount--;
    try {
      if (typeof e === "function") e();
      else e.complete(argA[i]!, argB[i]!);
    } catch (err) {
      reportTaskError(g, err);
    }
    if (performance.now() >= deadline) break;
  }
  return ran;
}

function reportTaskError(g: SchedulingGroup, err: unknown): void {
  // A throwing task must not take the loop down; surface it like an uncaught exception would,
  // with its group. The thrown value itself is kept: tagged when it is an Error that can take
  // a property, else the cause of an Error that says what was thrown (a frozen Error or a plain
  // object was lost: a TypeError from the tagging, or "[object Object]").
  let surfaced: Error;
  try {
    surfaced = taggedTaskError(g, err);
  } catch {
    // The value fought being looked at (a Proxy's trap, a throwing getter, a read-only
    // `schedulingGroup`): what that threw escaped the batch, instead of the task's own error.
    surfaced = new Error(`a task in scheduling group "${g.name}" threw a value that could not be inspected`, { cause: err });
    (surfaced as Error & { schedulingGroup?: string }).schedulingGroup = g.name;
  }
  queueMicrotask(() => {
    throw surfaced;
  });
}

function taggedTaskError(g: SchedulingGroup, err: unknown): Error {
  let surfaced: Error;
  if (err instanceof Error && Object.isExtensible(err)) {
    surfaced = err;
  } else if (err === null || (typeof err !== "object" && typeof err !== "function")) {
    surfaced = new Error(String(err), { cause: err });
  } else {
    const what = err instanceof Error ? `${err.name}: ${err.message}` : describeValue(err);
    surfaced = new Error(`a task in scheduling group "${g.name}" threw ${what}`, { cause: err });
  }
  (surfaced as Error & { schedulingGroup?: string }).schedulingGroup = g.name;
  return surfaced;
}

/**
 * Runs ready entries group by group, lowest virtual runtime first, until none is ready or the
 * task quota is spent. Each group's batch ends with a full microtask drain so that promise
 * continuations it released run (and are charged) inside its turn. Returns entries run.
 */
export function runReadyTasks(now?: number): number {
  if (readyCount === 0) return 0;
  // `now`: a clock read the caller just made (the loop's turn start), saving one here.
  const phaseStart = now ?? performance.now();
  const quota = loopState.taskQuotaMs;
  let total = 0;
  let start = phaseStart;
  for (;;) {
    const g = pickGroup();
    if (g === undefined) break;
    loopState.batchStart = start;
    const ran = singleGroup.value ? runBatch(g, start + quota) : storage.run(g, runBatch, g, start + quota);
    g.tasksRun += ran;
    total += ran;
    drainMicrotasks();
    const end = performance.now();
    loopState.lastClock = end;
    const took = end - start;
    g.runtimeMs += took;
    g.vruntime += took / g.shares;
    if (g.head >= g.entries.length) deactivate(g);
    else if (g.head > 1024 && g.head * 2 > g.entries.length) compact(g);
    advanceMinVruntime(g);
    if (took >= loopState.blockedNotifyMs) reportStall(g, took);
    if (end - phaseStart >= quota) break;
    start = end;
  }
  loopState.tasksRun += total;
  return total;
}

/**
 * @internal Runs the continuations of completions settled directly by the reactor (single-group
 * shards), charged to the default group like a batch.
 */
export function drainSettled(start: number): number {
  const g = defaultSchedulingGroup;
  loopState.batchStart = start;
  drainMicrotasks();
  const end = performance.now();
  const took = end - start;
  g.runtimeMs += took;
  g.vruntime += took / g.shares;
  // Raised as after any batch: a group waking from idle is levelled against this time too (left
  // out, a group made after the default one had run on I/O continuations alone woke with
  // all of that time as credit, and kept the default group from running for as long).
  advanceMinVruntime(g);
  if (took >= loopState.blockedNotifyMs) reportStall(g, took);
  return end;
}

function compact(g: SchedulingGroup): void {
  g.entries = g.entries.slice(g.head);
  g.argA = g.argA.slice(g.head);
  g.argB = g.argB.slice(g.head);
  g.head = 0;
}

function reportStall(g: SchedulingGroup, tookMs: number): void {
  reportLimited(`in scheduling group "${g.name}"`, tookMs, loopState);
}

/** A rate limit of stall reports: when the last went out, and how many were held back since. */
interface StallLimit {
  lastStallReport: number;
  stallReportsSuppressed: number;
}

/** Reports of stalls outside Shoal's tasks have their own limit: they do not hide task stalls. */
const outside: StallLimit = { lastStallReport: -Infinity, stallReportsSuppressed: 0 };

/**
 * @internal Counts a stall of `tookMs` outside Shoal's tasks and reports it. `where` completes
 * "reactor stalled for N ms ...".
 */
export function reportBlocked(where: string, tookMs: number): void {
  reportLimited(where, tookMs, outside);
}

/** Counts a stall and reports it, at most once a second per limit; the next report says how many were held back. */
function reportLimited(where: string, tookMs: number, limit: StallLimit): void {
  loopState.stalls++;
  const now = performance.now();
  if (now - limit.lastStallReport < 1000) {
    limit.stallReportsSuppressed++;
    return;
  }
  const suppressed = limit.stallReportsSuppressed;
  limit.stallReportsSuppressed = 0;
  limit.lastStallReport = now;
  const msg =
    `shoal: reactor stalled for ${tookMs.toFixed(1)} ms ${where}` +
    ` (threshold ${loopState.blockedNotifyMs} ms${suppressed ? `; ${suppressed} more stall(s) not reported` : ""})`;
  try {
    loopState.report(msg);
  } catch (err) {
    // A failing log sink surfaces like a task's error: thrown through the loop, it cut the
    // batch's bookkeeping short (an emptied group stayed marked active, so work queued on it
    // later never started a stopped loop).
    queueMicrotask(() => {
      throw err;
    });
  }
}
