/**
 * This thread's part in SMP: which shard it is, its rings, its pending calls, and the loop
 * hooks that move messages. One instance per Worker (module state is per Worker).
 *
 * A thread is one of three things:
 *   - "single": no app() supervisor started it (a plain script, a test): one shard, id 0,
 *     every call is local;
 *   - "supervisor": the main thread of an app; it starts and watches shards and is not one;
 *   - "shard": a Worker started by the supervisor.
 *
 * Per loop turn (addPoller) the shard drains every incoming ring, runs what arrived (handler
 * calls, replies, buffer releases), lets the continuations that released run, then publishes
 * each outgoing ring it wrote to once and writes the target's eventfd only if the target
 * published that it sleeps (addSleepHook: flag, re-check, sleep; the classic lost-wakeup
 * protocol, with seq-cst Atomics on both sides).
 *
 * Message records (after the ring's [u32 length]):
 *   CALL, POST, INVOKE  [u8 kind][u8 group][u16 target][u32 reply slot][u16 method][u16 argc] args...
 *   REPLY, THROW        [u8 kind][3 bytes 0][u32 reply slot] value
 *   RELEASE             [u8 kind][3 bytes 0][u32 handover id]
 */
import { IoOp, Reactor, reactor } from "../core/reactor.ts";
import { probeIoUring } from "../core/probe.ts";
import { addPoller, addSleepHook, ensureLoopRunning, refLoop } from "../core/loop.ts";
import {
  currentSchedulingGroup,
  defaultSchedulingGroup,
  drainSettled,
  enqueue,
  loopState,
  schedulingGroups,
  singleGroup,
  type Completable,
  type SchedulingGroup,
} from "../core/scheduler.ts";
import { isThenable } from "../core/future.ts";
import type { NativeBuffer } from "../core/buffers.ts";
import { InvalidArgumentError } from "../core/errors.ts";
import { Reader, releaseNativeBuffersIn, RING_FULL, Writer } from "./codec.ts";
import {
  EncodeError,
  MessageTooLargeError,
  ShardGoneError,
  ShardRangeError,
  SmpNotRunningError,
  UnknownHandlerError,
  UnknownMethodError,
} from "./errors.ts";
import { HandoverTable, receiveBuffer } from "./handover.ts";
import { CTL_CPU, CTL_EVENTFD, CTL_RINGFD, CTL_SLEEPING, CTL_TID, GLOBAL_START_SEQ, InRing, OutRing, SmpLayout } from "./ring.ts";
import { handlerById, handlerId, serviceById, type AnyFunction, type HandlerRef, type ServiceHost } from "./registry.ts";
import { logger } from "../log/logger.ts";


/** Record kinds (byte 4 of a record; 0 is the ring's PAD). */
const K_CALL = 1;
const K_POST = 2;
const K_INVOKE = 3;
const K_REPLY = 4;
const K_THROW = 5;
const K_RELEASE = 6;

/** Method id meaning "the method's name follows as a string". */
export const NAMED_METHOD = 0xffff;
const CALL_HEADER = 16;
const REPLY_HEADER = 12;
/** Records one ring hands over per loop turn before others get a turn. */
const DRAIN_BUDGET = 256;
/** Bytes after which a burst publishes before the loop turn ends. */
const EARLY_PUBLISH_BYTES = 8192;
let pollTurn = 0;
const MAX_ARGS = 0xffff;
const NO_ARGS: readonly unknown[] = Object.freeze([]);

type Role = "single" | "supervisor" | "shard";

/** What the supervisor hands each shard at start. */
export interface ShardInit {
  shard: number;
  count: number;
  sab: SharedArrayBuffer;
  ringBytes: number;
  /** The CPU the shard is pinned to, or -1 (overprovisioned). */
  cpu: number;
  /** Overprovisioned with --cpuset: the CPUs the unpinned shard's thread may run on (else empty). */
  confine: number[];
  encodeLocalCalls: boolean;
}

const log = logger("smp");

const rt = {
  role: "single" as Role,
  id: 0,
  count: 1,
  cpu: -1,
  active: false,
  encodeLocal: process.env["SHOAL_ENCODE_LOCAL_CALLS"] === "1",
  layout: undefined as SmpLayout | undefined,
  i32: new Int32Array(0) as Int32Array<ArrayBufferLike>,
  out: [] as (OutRing | undefined)[],
  inn: [] as InRing[],
  eventfds: [] as number[],
  ringFds: [] as number[],
  gone: [] as boolean[],
  sleepWord: 0,
};

let handovers = new HandoverTable(0);
/** Encodes ring messages; replaced when the shard starts (its limit is the ring's). */
let writer = new Writer(4096, 1 << 20, handovers);
/** Encodes local calls in debug mode (separate: a local call may run while a ring message is read). */
let localWriter = new Writer(4096, 1 << 20, handovers);
const localReader = new Reader(new Uint8Array(0), foreignBuffer);
let encoding = false;
let needsDrain = false;
const dirty: OutRing[] = [];
const shutdown = new AbortController();

const stats = {
  callsSent: 0,
  postsSent: 0,
  repliesSent: 0,
  received: 0,
  wakes: 0,
};

// ---- pending calls: slot-indexed arrays, no object per call --------------------------------

const pResolve: (((v: unknown) => void) | undefined)[] = [];
const pReject: (((e: unknown) => void) | undefined)[] = [];
const pDest: number[] = [];
const pGroup: (SchedulingGroup | undefined)[] = [];
const pValue: unknown[] = [];
/** Bumped each time a slot is taken: a reply queued for an earlier call in it is dropped. */
const pGen: number[] = [];
const freeSlots: number[] = [];
let pendingCount = 0;

let capturedResolve: (v: unknown) => void = () => {};
let capturedReject: (e: unknown) => void = () => {};
function capture(resolve: (v: unknown) => void, reject: (e: unknown) => void): void {
  capturedResolve = resolve;
  capturedReject = reject;
}

function allocSlot(dest: number): number {
  const slot = freeSlots.length > 0 ? freeSlots.pop()! : pResolve.length;
  pGen[slot] = ((pGen[slot] ?? 0) + 1) & 0x3fff_ffff;
  pDest[slot] = dest;
  pGroup[slot] = singleGroup.value ? undefined : currentSchedulingGroup();
  pendingCount++;
  return slot;
}

function freeSlot(slot: number): void {
  pResolve[slot] = undefined;
  pReject[slot] = undefined;
  pGroup[slot] = undefined;
  pValue[slot] = undefined;
  pDest[slot] = -1;
  freeSlots.push(slot);
  pendingCount--;
}

/** Delivers a reply in the caller's scheduling group (multi-group shards). */
const replyCompleter: Completable = {
  complete(slot: number, genOk: number): void {
    // The call may have failed meanwhile (its shard went) and the slot gone to another call.
    if (pGen[slot] !== genOk >>> 1) return;
    const ok = genOk & 1;
    const resolve = pResolve[slot];
    const reject = pReject[slot];
    if (resolve === undefined || reject === undefined) return;
    const v = pValue[slot];
    freeSlot(slot);
    if (ok === 1) resolve(v);
    else reject(v);
  },
};

function settle(slot: number, ok: boolean, value: unknown): void {
  const resolve = pResolve[slot];
  const reject = pReject[slot];
  if (resolve === undefined || reject === undefined) return; // failed already (shard gone)
  const g = pGroup[slot];
  if (g === undefined) {
    freeSlot(slot);
    needsDrain = true;
    if (ok) resolve(value);
    else reject(value);
    return;
  }
  pValue[slot] = value;
  // Answered: the slot is no longer waiting for its shard. A gone notice for that shard before
  // the completion runs (markShardGone drains the shard's last replies, then fails the calls
  // still waiting) must not fail this one with ShardGoneError.
  pDest[slot] = -1;
  enqueue(g, replyCompleter, slot, (pGen[slot]! << 1) | (ok ? 1 : 0));
}

// ---- thread identity -------------------------------------------------------------------------

/** @internal This thread's role. */
export function role(): Role {
  return rt.role;
}

/** @internal Marks the main thread of an app as the supervisor (it is not a shard). */
export function becomeSupervisor(): void {
  rt.role = "supervisor";
}

/** The shard this code runs on (0 outside an app). Costs a property read. */
export function thisShard(): number {
  return rt.id;
}

/** Facts about the shards of this process, read on any shard. */
export const smp = {
  /** Number of shards (1 outside an app). */
  get count(): number {
    return rt.count;
  },
  /** This shard's id, the same as thisShard(). */
  get shard(): number {
    return rt.id;
  },
  /** The CPU this shard is pinned to, or -1 when it is not pinned (overprovisioned, or outside an app). */
  get cpu(): number {
    return rt.cpu;
  },
};

/** Options of the smp layer on this shard. */
export interface SmpOptions {
  /**
   * Route calls to the local shard through the encoder too (a debug aid, default off or
   * $SHOAL_ENCODE_LOCAL_CALLS=1): arguments that could not cross shards fail at --smp 1 as well.
   * Costs an encode and a decode per local call.
   */
  encodeLocalCalls?: boolean | undefined;
}

/** Applies smp options on this shard (the app template applies --encode-local-calls on every shard). */
export function configureSmp(options: SmpOptions): void {
  if (options.encodeLocalCalls !== undefined) {
    if (typeof options.encodeLocalCalls !== "boolean") throw new InvalidArgumentError("encodeLocalCalls must be a boolean");
    rt.encodeLocal = options.encodeLocalCalls;
  }
}

/** @internal True when local calls go through the encoder. */
export function encodesLocalCalls(): boolean {
  return rt.encodeLocal;
}

/**
 * An AbortSignal that aborts when the application begins to shut down (SIGINT, SIGTERM, main
 * returned, a shard failed): stop accepting work when it fires. One per shard; free to read.
 */
export function shutdownSignal(): AbortSignal {
  return shutdown.signal;
}

/** @internal Aborts this shard's shutdown signal (idempotent). */
export function beginShutdown(reason: string): void {
  if (!shutdown.signal.aborted) shutdown.abort(new SmpNotRunningError(`the application is shutting down (${reason})`));
}

/** @internal Throws ShardRangeError unless `shard` is a valid shard id. */
export function checkShard(shard: unknown, what: string): asserts shard is number {
  if (typeof shard !== "number" || !Number.isInteger(shard) || shard < 0 || shard >= rt.count) {
    throw new ShardRangeError(
      `${what}: shard must be an integer in 0..${rt.count - 1} (smp.count is ${rt.count}), got ${typeof shard === "number" ? shard : typeof shard}`,
    );
  }
}

function checkCallable(what: string): void {
  if (rt.role === "supervisor") {
    throw new SmpNotRunningError(
      `${what}: the supervisor thread is not a shard; make cross-shard calls from main or from services, which run on shards`,
    );
  }
}

// ---- start -----------------------------------------------------------------------------------

/** @internal Sets this Worker up as shard `init.shard`: rings and eventfd. The loop hooks come with activateShard(). */
export function startShard(init: ShardInit): void {
  if (rt.role !== "single" || rt.active) throw new SmpNotRunningError("this thread already runs a shard");
  const layout = new SmpLayout(init.count, init.ringBytes);
  rt.role = "shard";
  rt.id = init.shard;
  rt.count = init.count;
  rt.cpu = init.cpu;
  rt.layout = layout;
  rt.encodeLocal = init.encodeLocalCalls || rt.encodeLocal;
  rt.i32 = new Int32Array(init.sab);
  rt.sleepWord = layout.ctl(init.shard, CTL_SLEEPING);
  handovers = new HandoverTable(init.shard);
  writer = new Writer(4096, layout.maxRecordBytes, handovers);
  localWriter = new Writer(4096, layout.maxRecordBytes, handovers);
  rt.out = [];
  rt.inn = [];
  for (let k = 0; k < init.count; k++) {
    rt.gone[k] = false;
    rt.eventfds[k] = -1;
    rt.ringFds[k] = -1;
    if (k === init.shard) {
      rt.out.push(undefined);
      continue;
    }
    rt.out.push(new OutRing(init.sab, layout, init.shard, k));
    rt.inn.push(new InRing(init.sab, layout, k, init.shard, foreignBuffer));
  }
  // Shards wake each other with ring messages (IORING_OP_MSG_RING, Linux 5.18+).
  probeIoUring([IoOp.MSG_RING]);
  const r = reactor();
  Atomics.store(rt.i32, layout.ctl(init.shard, CTL_EVENTFD), r.eventfd);
  Atomics.store(rt.i32, layout.ctl(init.shard, CTL_RINGFD), r.ringFd);
  Atomics.store(rt.i32, layout.ctl(init.shard, CTL_CPU), init.cpu);
}

/** @internal Records this shard's kernel thread id in shared memory (diagnostics). */
export function recordThreadId(tid: number): void {
  if (rt.layout) Atomics.store(rt.i32, rt.layout.ctl(rt.id, CTL_TID), tid);
}

let unref: (() => void) | undefined;
let removePoller: (() => void) | undefined;
let removeSleepHook: (() => void) | undefined;

/** @internal Starts moving messages: the loop polls the rings every turn and stays alive. */
export function activateShard(): void {
  if (rt.role !== "shard" || rt.active) return;
  rt.active = true;
  removePoller = addPoller(poll);
  removeSleepHook = addSleepHook(sleepHook);
  unref = refLoop();
}

/**
 * @internal Stops or resumes holding the loop alive (benchmarks measure postMessage with the
 * loop out of the way). While released, rings are polled only when other work runs the loop.
 */
export function holdLoop(on: boolean): void {
  if (rt.role !== "shard") return;
  if (on && unref === undefined) {
    removePoller = addPoller(poll);
    removeSleepHook = addSleepHook(sleepHook);
    unref = refLoop();
  } else if (!on && unref !== undefined) {
    unref();
    removePoller?.();
    removeSleepHook?.();
    unref = removePoller = removeSleepHook = undefined;
  }
}

/** @internal The next service start sequence number (shared by all shards). */
export function nextStartSequence(): number {
  if (rt.layout === undefined) return ++localStartSeq;
  return Atomics.add(rt.i32, rt.layout.global(GLOBAL_START_SEQ), 1) + 1;
}
let localStartSeq = 0;

// ---- shards that are gone --------------------------------------------------------------------

/**
 * @internal Shard `k` exited or crashed: calls waiting for it fail with ShardGoneError, buffers
 * lent to it come back, and nothing more is sent to it.
 */
export function markShardGone(k: number, cause: string): void {
  if (k < 0 || k >= rt.count || k === rt.id || rt.gone[k]) return;
  rt.gone[k] = true;
  // What k published before it went is valid (the notice travels by postMessage and can
  // overtake the ring): its replies settle their calls first; only calls still waiting fail.
  const ring = rt.inn.find((r) => r.from === k);
  if (ring !== undefined && !ring.draining) {
    try {
      ring.drain(onRecord, Infinity);
    } catch (err) {
      log.error(`shard ${k}'s last messages could not be read:`, err);
    }
  }
  for (let slot = 0; slot < pDest.length; slot++) {
    if (pDest[slot] !== k) continue;
    const reject = pReject[slot];
    if (reject === undefined) continue;
    freeSlot(slot);
    reject(new ShardGoneError(k, `shard ${k} is gone (${cause}) and did not reply`));
  }
  handovers.shardGone(k);
  rt.out[k]?.discard();
}

/** @internal True when shard `k` is known to be gone. */
export function isShardGone(k: number): boolean {
  return rt.gone[k] === true;
}

// ---- sending ---------------------------------------------------------------------------------

function markDirty(ring: OutRing): void {
  if (!ring.dirty) {
    ring.dirty = true;
    dirty.push(ring);
    ensureLoopRunning(); // a message written from a Bun callback is flushed by the next turn
  }
  // A long burst within one loop turn publishes every few KiB, so that the consumer works on
  // the first messages while later ones are written (still one atomic store per batch).
  if (ring.unpublishedBytes >= EARLY_PUBLISH_BYTES && ring.publish()) wake(ring.to, true);
}

/** Sets the record's length, padded to 8 bytes (so a PAD record always has room for its kind byte). */
function finishRecord(w: Writer, start: number): void {
  const end = (w.pos + 7) & ~7;
  if (end !== w.pos) w.ensure(end - w.pos);
  w.dv.setUint32(start, end - start, true);
  w.pos = end;
}

function writeCall(w: Writer, kind: number, target: number, method: number, slot: number, args: readonly unknown[], name: string | undefined): void {
  const start = w.pos;
  w.ensure(CALL_HEADER);
  const u8 = w.u8;
  const dv = w.dv;
  u8[start + 4] = kind;
  u8[start + 5] = singleGroup.value ? 0 : currentSchedulingGroup().id;
  dv.setUint16(start + 6, target, true);
  dv.setUint32(start + 8, slot, true);
  dv.setUint16(start + 12, method, true);
  dv.setUint16(start + 14, args.length, true);
  w.pos = start + CALL_HEADER;
  if (name !== undefined) w.string(name);
  for (let i = 0; i < args.length; i++) {
    try {
      w.value(args[i]);
    } catch (err) {
      if (err instanceof EncodeError) err.prepend(`argument ${i + 1}`);
      throw err;
    }
  }
  finishRecord(w, start);
}

function writeReply(w: Writer, kind: number, slot: number, value: unknown): void {
  const start = w.pos;
  w.ensure(REPLY_HEADER);
  w.dv.setUint32(start + 4, kind, true); // kind and three zero bytes
  w.dv.setUint32(start + 8, slot, true);
  w.pos = start + REPLY_HEADER;
  w.value(value);
  finishRecord(w, start);
}

function commitHandovers(w: Writer, dest: number): void {
  if (w.handed.length > 0) handovers.commit(w.handed, w.handedIds, dest);
}

/**
 * Throws EncodeError if a buffer the message hands over was released after it was encoded (a
 * getter further on did it). Checked before the record is committed: commit() would throw once
 * the record was in the ring (a call the caller saw fail ran anyway, its reply settled the next
 * call in its slot, and the receiver read memory its owner had recycled).
 */
function checkHanded(w: Writer): void {
  for (let i = 0; i < w.handed.length; i++) {
    if (w.handed[i]!.isReleased) throw new EncodeError("a NativeBuffer was released while its message was encoded (by a getter)");
  }
}

/**
 * Encodes one record for `ring`: in place when the ring has room, else into scratch memory and
 * then into the ring or its backlog. Nothing reaches the ring unless encoding succeeded.
 */
function send(ring: OutRing, kind: number, target: number, method: number, slot: number, args: readonly unknown[], name: string | undefined, value: unknown): void {
  if (encoding) throw new EncodeError("a value's getter made a cross-shard call while the value was being encoded");
  encoding = true;
  const w = writer;
  try {
    if (ring.direct(w)) {
      const start = w.pos;
      try {
        if (kind >= K_REPLY) writeReply(w, kind, slot, value);
        else writeCall(w, kind, target, method, slot, args, name);
        if (w.handed.length > 0) checkHanded(w);
        ring.commitDirect(w, start);
        commitHandovers(w, ring.to);
        markDirty(ring);
        return;
      } catch (err) {
        handovers.cancel(w.handedIds);
        if (err !== RING_FULL) throw err;
      }
    }
    w.reset();
    try {
      if (kind >= K_REPLY) writeReply(w, kind, slot, value);
      else writeCall(w, kind, target, method, slot, args, name);
      if (w.handed.length > 0) checkHanded(w);
    } catch (err) {
      handovers.cancel(w.handedIds);
      throw err;
    }
    ring.write(w.u8, w.pos);
    commitHandovers(w, ring.to);
    markDirty(ring);
  } finally {
    encoding = false;
    if (deferredReleases.length > 0) flushDeferredReleases();
  }
}

/** Releases noted while a record was being encoded in place (a getter released a buffer). */
const deferredReleases: number[] = [];

function flushDeferredReleases(): void {
  const list = deferredReleases.splice(0);
  for (let i = 0; i < list.length; i += 2) sendRelease(list[i]!, list[i + 1]!);
}

/** Calls a remote shard and returns the reply's promise. Encoding errors reject it; the rings are untouched. */
function callRemote(dest: number, kind: number, target: number, method: number, args: readonly unknown[], name: string | undefined): Promise<unknown> {
  try {
    return sendCall(dest, kind, target, method, args, name);
  } catch (err) {
    return Promise.reject(err);
  }
}

/**
 * callRemote, except that arguments that cannot be sent (EncodeError, MessageTooLargeError)
 * throw here, nothing sent; a gone shard still rejects the promise.
 */
function sendCall(dest: number, kind: number, target: number, method: number, args: readonly unknown[], name: string | undefined): Promise<unknown> {
  if (rt.gone[dest]) return Promise.reject(new ShardGoneError(dest, `shard ${dest} is gone; the call was not sent`));
  if (args.length > MAX_ARGS) throw new EncodeError(`more than ${MAX_ARGS} arguments`);
  const slot = allocSlot(dest);
  try {
    send(rt.out[dest]!, kind, target, method, slot, args, name, undefined);
  } catch (err) {
    freeSlot(slot);
    throw err;
  }
  const p = new Promise<unknown>(capture);
  pResolve[slot] = capturedResolve;
  pReject[slot] = capturedReject;
  stats.callsSent++;
  return p;
}

/** Returns a promise for a local call's result: a direct call, or an encoded round trip in debug mode. */
function callLocal(fn: AnyFunction, self: unknown, args: unknown[], kind: number, target: number, method: number, name: string | undefined): Promise<unknown> {
  if (rt.encodeLocal) return callLocalEncoded(fn, self, args, kind, target, method, name);
  try {
    return Promise.resolve(fn.apply(self, args));
  } catch (err) {
    return Promise.reject(err);
  }
}

/** Debug mode: encode the arguments and the result as if they crossed shards. */
function callLocalEncoded(fn: AnyFunction, self: unknown, args: unknown[], kind: number, target: number, method: number, name: string | undefined): Promise<unknown> {
  let decoded: unknown[];
  try {
    decoded = roundTripArgs(args, kind, target, method, name);
  } catch (err) {
    return Promise.reject(err);
  }
  let result: unknown;
  try {
    result = fn.apply(self, decoded);
  } catch (err) {
    return Promise.reject(roundTripValue(err, K_THROW));
  }
  if (isThenable(result)) {
    return Promise.resolve(result).then(
      (v) => roundTripResult(v),
      (e) => {
        throw roundTripValue(e, K_THROW);
      },
    );
  }
  return roundTripResult(result);
}

function roundTripArgs(args: unknown[], kind: number, target: number, method: number, name: string | undefined): unknown[] {
  const w = localWriter.reset();
  try {
    writeCall(w, kind, target, method, 0, args, name);
  } catch (err) {
    handovers.cancel(w.handedIds);
    throw err;
  }
  commitHandovers(w, rt.id);
  const r = localReader.over(w, CALL_HEADER);
  r.from = rt.id;
  if (name !== undefined) r.value();
  const out = new Array(args.length);
  for (let i = 0; i < args.length; i++) out[i] = r.value();
  return out;
}

function roundTripValue(value: unknown, kind: number): unknown {
  const w = localWriter.reset();
  try {
    writeReply(w, kind, 0, value);
  } catch (err) {
    handovers.cancel(w.handedIds);
    if (kind === K_THROW) return value; // an unencodable exception: still reject with it
    throw err;
  }
  commitHandovers(w, rt.id);
  const r = localReader.over(w, REPLY_HEADER);
  r.from = rt.id;
  return r.value();
}

function roundTripResult(v: unknown): Promise<unknown> {
  try {
    return Promise.resolve(roundTripValue(v, K_REPLY));
  } catch (err) {
    if (err instanceof EncodeError) err.prepend("the result");
    return Promise.reject(err);
  }
}

/**
 * Runs the handler registered as `handler` on shard `shard` and resolves with its result (its
 * promise's value). On the calling shard itself it is a direct call. Remote calls are encoded
 * into the ring to that shard (about 0.1-0.3 µs to encode small arguments) and published at the
 * end of this loop turn; a sleeping target is woken through its eventfd.
 *
 * Rejects with ShardRangeError (bad shard), UnknownHandlerError, EncodeError or
 * MessageTooLargeError (arguments that cannot cross; nothing was sent), ShardGoneError (the
 * shard exited), SmpNotRunningError (called on the supervisor thread), or the handler's own
 * exception, rebuilt on this shard (a RemoteError carrying the remote name, message, code and stack).
 * A full ring delays the call (back-pressure) but never drops it.
 */
export function submitTo<F extends AnyFunction>(shard: number, handler: HandlerRef<F>, ...args: Parameters<F>): Promise<Awaited<ReturnType<F>>>;
/** submitTo by handler name: the result type is the caller's to state. */
export function submitTo<R = unknown>(shard: number, handler: string, ...args: unknown[]): Promise<R>;
export function submitTo(shard: number, handler: string | HandlerRef, ...args: unknown[]): Promise<unknown> {
  try {
    checkCallable("submitTo");
    checkShard(shard, "submitTo");
  } catch (err) {
    return Promise.reject(err);
  }
  const id = handlerId(handler);
  if (id < 0) return Promise.reject(unknownHandler("submitTo", handler));
  if (shard === rt.id) return callLocal(handlerById(id)!.fn, undefined, args, K_CALL, id, 0, undefined);
  return callRemote(shard, K_CALL, id, 0, args, undefined);
}

function unknownHandler(what: string, handler: unknown): UnknownHandlerError {
  const name = typeof handler === "string" ? `"${handler}"` : handler && typeof handler === "object" ? `"${(handler as HandlerRef).name}"` : String(handler);
  return new UnknownHandlerError(`${what}: no handler ${name} is registered; register it with registerHandler at the top level of the application module`);
}

/**
 * Sends a one-way message: runs `handler` on `shard` with `args`, without a reply. Returns
 * undefined when the message went into the ring, or a promise that resolves once the ring to
 * that shard has room again: await it before sending more (that is the back-pressure that
 * keeps memory bounded under a flood). On the calling shard the handler runs at once.
 * A handler that throws or rejects is reported on the shard that ran it as an uncaught error.
 * Throws (synchronously) ShardRangeError, UnknownHandlerError, EncodeError, MessageTooLargeError,
 * ShardGoneError or SmpNotRunningError; nothing is sent then.
 */
export function post<F extends AnyFunction>(shard: number, handler: HandlerRef<F>, ...args: Parameters<F>): Promise<void> | undefined;
/** post by handler name. */
export function post(shard: number, handler: string, ...args: unknown[]): Promise<void> | undefined;
export function post(shard: number, handler: string | HandlerRef, ...args: unknown[]): Promise<void> | undefined {
  checkCallable("post");
  checkShard(shard, "post");
  const id = handlerId(handler);
  if (id < 0) throw unknownHandler("post", handler);
  if (shard === rt.id) {
    const entry = handlerById(id)!;
    const callArgs = rt.encodeLocal ? roundTripArgs(args, K_POST, id, 0, undefined) : args;
    runPosted(entry.fn, callArgs, entry.ref.name, rt.id);
    return undefined;
  }
  if (rt.gone[shard]) throw new ShardGoneError(shard, `shard ${shard} is gone; the message was not sent`);
  if (args.length > MAX_ARGS) throw new EncodeError(`more than ${MAX_ARGS} arguments`);
  const ring = rt.out[shard]!;
  send(ring, K_POST, id, 0, 0, args, undefined, undefined);
  stats.postsSent++;
  return ring.backlogLength > 0 ? ring.whenDrained() : undefined;
}

function runPosted(fn: AnyFunction, args: unknown[], name: string, from: number): void {
  let result: unknown;
  try {
    result = fn.apply(undefined, args);
  } catch (err) {
    postFailed(name, from, err);
    return;
  }
  if (isThenable(result)) result.then(undefined, (err: unknown) => postFailed(name, from, err));
}

function postFailed(name: string, from: number, err: unknown): void {
  log.error(`handler "${name}" posted from shard ${from} failed:`, err);
  // Nobody awaits a posted message: surface the failure like any uncaught exception.
  queueMicrotask(() => {
    throw err;
  });
}

/**
 * @internal Invokes method `name` (id `method`, or NAMED_METHOD) of service `host` on `shard`.
 * The local shard calls host.invokeLocal directly (or through the encoder in debug mode).
 */
export function invokeService(shard: number, host: ServiceHost, method: number, name: string, args: unknown[]): Promise<unknown> {
  if (shard === rt.id) {
    if (rt.encodeLocal) {
      const run = (...decoded: unknown[]) => {
        // A call that never runs (not started, stopping, no such method) gives back the buffers
        // handed over with its arguments, as one from another shard does (run()): nobody else
        // would, and each stayed pinned on its owner for good.
        try {
          host.checkInvocable(name);
        } catch (err) {
          releaseNativeBuffersIn(decoded);
          throw err;
        }
        return host.invokeLocal(name, decoded);
      };
      return callLocalEncoded(run, undefined, args, K_INVOKE, host.id, method, method === NAMED_METHOD ? name : undefined);
    }
    try {
      return Promise.resolve(host.invokeLocal(name, args));
    } catch (err) {
      return Promise.reject(err);
    }
  }
  return callRemote(shard, K_INVOKE, host.id, method, args, method === NAMED_METHOD ? name : undefined);
}

/**
 * @internal invokeService on every shard (but this one unless `self`), in shard order. The other
 * shards' calls are sent first: when the arguments cannot cross, this shard's direct call is
 * not made either and fails with the same error, so the call runs nowhere (the local instance
 * ran it, kept its effect, while the caller saw an EncodeError). A NativeBuffer cannot go to
 * more than one shard: with several targets it is refused before anything is sent (the first
 * shard got it and ran the call, the next refused it as released, and the caller saw "a
 * released NativeBuffer cannot be handed over"; a local call got a released handle).
 */
export function invokeServiceOnAll(host: ServiceHost, method: number, name: string, args: unknown[], self: boolean): Promise<unknown>[] {
  const me = rt.id;
  const calls: Promise<unknown>[] = [];
  const wire = method === NAMED_METHOD ? name : undefined;
  let local = -1;
  let refused = false;
  let refusal: unknown;
  const w = writer;
  if ((self ? rt.count : rt.count - 1) > 1) {
    w.refuseHandover =
      "a NativeBuffer cannot be handed to several shards at once (invokeOnAll, invokeOnOthers, mapReduce): hand it to one with invokeOn, or pass a copy of its bytes (a Uint8Array is copied to each shard)";
  }
  try {
    for (let k = 0; k < rt.count; k++) {
      if (k === me) {
        if (self) local = calls.push(Promise.resolve()) - 1; // its place; the call is made below
        continue;
      }
      try {
        calls.push(sendCall(k, K_INVOKE, host.id, method, args, wire));
      } catch (err) {
        if (!refused) {
          refused = true;
          refusal = err;
        }
        calls.push(Promise.reject(err));
      }
    }
  } finally {
    w.refuseHandover = undefined;
  }
  if (local >= 0) calls[local] = refused ? Promise.reject(refusal) : invokeService(me, host, method, name, args);
  return calls;
}

// ---- receiving -------------------------------------------------------------------------------

function foreignBuffer(owner: number, id: number, address: number, length: number, lent: boolean) {
  return receiveBuffer(owner, id, address, length, sendRelease, lent);
}

/** A RELEASE record: 12 bytes of header padded to the records' 8-byte alignment. */
const RELEASE_BYTES = 16;
const releaseRecord = new Uint8Array(RELEASE_BYTES);
const releaseView = new DataView(releaseRecord.buffer);
releaseView.setUint32(0, RELEASE_BYTES, true);
releaseView.setUint32(4, K_RELEASE, true);

/** Tells `owner` that handover `id` was released here (a 12-byte record, no encoder involved). */
function sendRelease(owner: number, id: number): void {
  if (owner === rt.id) {
    handovers.returned(id);
    return;
  }
  if (rt.gone[owner]) return;
  const ring = rt.out[owner];
  if (ring === undefined) return;
  // Never in the middle of a record being encoded into the same ring: after it.
  if (encoding) {
    deferredReleases.push(owner, id);
    return;
  }
  releaseView.setUint32(8, id, true);
  ring.write(releaseRecord, RELEASE_BYTES);
  markDirty(ring);
}

function onRecord(ring: InRing, at: number): void {
  const kind = ring.u8[at + 4]!;
  stats.received++;
  if (kind === K_REPLY || kind === K_THROW) {
    const r = ring.reader;
    r.pos = at + REPLY_HEADER;
    const slot = ring.dv.getUint32(at + 8, true);
    // A reply for a call this shard no longer waits for from `ring.from` (failed when its shard
    // was reported gone; the slot may be another call's now): dropped, never settles another.
    if (pDest[slot] !== ring.from) return;
    let value: unknown;
    let ok = kind === K_REPLY;
    try {
      value = r.value();
    } catch (err) {
      value = err;
      ok = false;
    }
    settle(slot, ok, value);
    return;
  }
  if (kind === K_RELEASE) {
    handovers.returned(ring.dv.getUint32(at + 8, true));
    return;
  }
  onCall(ring, at, kind);
}

function onCall(ring: InRing, at: number, kind: number): void {
  const dv = ring.dv;
  const from = ring.from;
  const group = ring.u8[at + 5]!;
  const target = dv.getUint16(at + 6, true);
  const slot = dv.getUint32(at + 8, true);
  const method = dv.getUint16(at + 12, true);
  const argc = dv.getUint16(at + 14, true);
  const r = ring.reader;
  r.pos = at + CALL_HEADER;
  let name: string | undefined;
  let args: unknown[];
  r.collect = true;
  try {
    if (method === NAMED_METHOD && kind === K_INVOKE) name = r.value() as string;
    args = new Array(argc);
    for (let i = 0; i < argc; i++) args[i] = r.value();
  } catch (err) {
    r.collect = false;
    releaseReceived(r.received.splice(0)); // the buffers decoded before the failure
    if (kind === K_POST) postFailed(describeTarget(kind, target), from, err);
    else reply(from, slot, K_THROW, err, kind, target);
    return;
  }
  r.collect = false;
  const received = r.received.length > 0 ? r.received.splice(0) : undefined;
  needsDrain = true;
  if (singleGroup.value) {
    run(from, kind, target, method, name, slot, args, received);
    return;
  }
  // Run in the group with the caller's group id on this shard (groups created in the same order everywhere).
  const g = schedulingGroups()[group] ?? defaultSchedulingGroup;
  enqueue(g, () => run(from, kind, target, method, name, slot, args, received), 0, 0);
}

/** Gives back buffers handed to a call that never ran (their owner recycles them). */
function releaseReceived(buffers: unknown[] | undefined): void {
  if (buffers === undefined) return;
  for (const b of buffers) {
    const nb = b as NativeBuffer;
    if (!nb.isReleased) nb.release();
  }
}

function describeTarget(kind: number, target: number): string {
  if (kind === K_INVOKE) return `service "${serviceById(target)?.name ?? `#${target}`}"`;
  return `handler "${handlerById(target)?.ref.name ?? `#${target}`}"`;
}

function run(
  from: number,
  kind: number,
  target: number,
  method: number,
  name: string | undefined,
  slot: number,
  args: unknown[],
  received: unknown[] | undefined,
): void {
  let result: unknown;
  let pending = false;
  let handlerName = "";
  // Until the code is called, the buffers handed over with its arguments are this call's to
  // give back; afterwards they are the code's.
  let called = false;
  try {
    if (kind === K_INVOKE) {
      const host = serviceById(target);
      if (host === undefined) throw new UnknownHandlerError(`no service #${target} is registered on shard ${rt.id}`);
      const m = name ?? host.methodName(method);
      if (m === undefined) throw new UnknownMethodError(`service "${host.name}" has no method #${method}`);
      host.checkInvocable(m);
      called = true;
      result = host.invokeLocal(m, args);
    } else {
      const entry = handlerById(target);
      if (entry === undefined) throw new UnknownHandlerError(`no handler #${target} is registered on shard ${rt.id}`);
      handlerName = entry.ref.name;
      called = true;
      if (kind === K_POST) {
        runPosted(entry.fn, args, handlerName, from);
        return;
      }
      result = entry.fn.apply(undefined, args);
    }
    // Inside the try: reading a result's `then` runs its code (a getter, a Proxy) and may throw.
    pending = isThenable(result);
  } catch (err) {
    if (!called) releaseReceived(received);
    if (kind === K_POST) postFailed(handlerName || describeTarget(kind, target), from, err);
    else reply(from, slot, K_THROW, err, kind, target);
    return;
  }
  if (pending) {
    // Through Promise.resolve (a native promise is itself, no extra tick), as a local call is:
    // a foreign thenable's then() may throw (it escaped the ring's drain and crashed the shard),
    // or call back twice (the second reply settled whichever call took the slot next).
    Promise.resolve(result).then(
      (v) => reply(from, slot, K_REPLY, v, kind, target),
      (e: unknown) => reply(from, slot, K_THROW, e, kind, target),
    );
  } else {
    reply(from, slot, K_REPLY, result, kind, target);
  }
}

function reply(to: number, slot: number, kind: number, value: unknown, callKind: number, target: number): void {
  if (rt.gone[to]) return;
  const ring = rt.out[to]!;
  try {
    send(ring, kind, 0, 0, slot, NO_ARGS, undefined, value);
    stats.repliesSent++;
    return;
  } catch (err) {
    // The result (or the exception) cannot cross: the caller gets an error that says why. Nothing
    // here may throw (it runs from the ring's drain), and the caller must always get an answer.
    // The buffers the result held were the handler's to give: nobody else will release them.
    if (kind === K_REPLY) releaseNativeBuffersIn(value);
    let replacement: unknown;
    try {
      replacement = replacementFor(kind, value, err, callKind, target);
      send(ring, K_THROW, 0, 0, slot, NO_ARGS, undefined, replacement);
      return;
    } catch {
      // Even that did not encode (a huge message, a hostile getter): a short, plain error does.
    }
    try {
      const what = kind === K_THROW ? "the exception" : "the result";
      const last = new Error(`${what} of ${describeTarget(callKind, target)} could not cross shards: ${clip(safeString(err), 500)}`);
      (last as { stack?: string | undefined }).stack = undefined;
      send(ring, K_THROW, 0, 0, slot, NO_ARGS, undefined, last);
    } catch (again) {
      log.error(`could not send a reply to shard ${to}:`, again);
    }
  }
}

/** The error sent instead of a result or exception that could not be encoded (`err` says why). */
function replacementFor(kind: number, value: unknown, err: unknown, callKind: number, target: number): Error {
  if (kind === K_THROW) {
    const e = value instanceof Error ? value : undefined;
    const text = e !== undefined ? `${safeString(e.name)}: ${safeString(e.message)}` : `a thrown ${typeof value} that cannot cross shards: ${safeString(value)}`;
    const replacement = new Error(clip(text, 4096));
    const stack = e !== undefined ? safeString(e.stack) : "";
    (replacement as { stack?: string | undefined }).stack = stack === "" ? undefined : clip(stack, 8192);
    return replacement;
  }
  if (err instanceof EncodeError) {
    err.prepend(`the result of ${describeTarget(callKind, target)}`);
    return err;
  }
  if (err instanceof MessageTooLargeError) {
    // Keeps its class (and code) for the caller, as an oversized argument does.
    return new MessageTooLargeError(clip(`the result of ${describeTarget(callKind, target)}: ${err.message}`, 4096));
  }
  return new Error(clip(`the result of ${describeTarget(callKind, target)} could not be encoded: ${safeString(err)}`, 4096));
}

/** String(v) that never throws (null-prototype objects, hostile toString, symbols in getters). */
function safeString(v: unknown): string {
  if (v === undefined) return "";
  try {
    return String(v);
  } catch {
    try {
      return Object.prototype.toString.call(v);
    } catch {
      return typeof v;
    }
  }
}

function clip(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max)}... (${s.length - max} more characters)`;
}

/**
 * Wakes shard `k` if it published that it sleeps. From the loop (flush, poll, the sleep hook)
 * the wake is a ring message that leaves with this shard's own enter at the end of the
 * iteration: no syscall of its own, and the target does not re-arm an eventfd read.
 * `immediate` (a mid-turn early publish, which wants the consumer started now) writes the
 * eventfd at once, as does a shard whose SQ is full.
 */
function wake(k: number, immediate = false): void {
  const word = rt.layout!.ctl(k, CTL_SLEEPING);
  if (Atomics.load(rt.i32, word) === 0) return;
  // Whoever clears the flag wakes the shard; other senders see it cleared and skip the syscall.
  if (Atomics.compareExchange(rt.i32, word, 1, 0) !== 1 || rt.gone[k]) return;
  let fd = rt.eventfds[k]!;
  if (fd < 0) fd = rt.eventfds[k] = Atomics.load(rt.i32, rt.layout!.ctl(k, CTL_EVENTFD));
  if (fd > 0) {
    stats.wakes++;
    if (!immediate && rt.role === "shard" && !loopState.idle) {
      let ringFd = rt.ringFds[k]!;
      if (ringFd < 0) ringFd = rt.ringFds[k] = Atomics.load(rt.i32, rt.layout!.ctl(k, CTL_RINGFD));
      if (ringFd > 0 && reactor().msgWake(ringFd, fd)) return;
    }
    Reactor.wake(fd);
  }
}

function flush(): boolean {
  let did = false;
  let keep = 0;
  for (let i = 0; i < dirty.length; i++) {
    const ring = dirty[i]!;
    const waiters = ring.hasDrainWaiters;
    if (ring.pump()) {
      did = true;
      // Senders awaiting room were released: their continuations should run in this turn.
      if (waiters && !ring.hasDrainWaiters) needsDrain = true;
    }
    if (ring.publish()) {
      did = true;
      if (!rt.gone[ring.to]) wake(ring.to);
    }
    if (ring.backlogLength > 0 && !rt.gone[ring.to]) dirty[keep++] = ring;
    else ring.dirty = false;
  }
  dirty.length = keep;
  return did;
}

/** The loop's poller: drain incoming rings, run what arrived, flush outgoing rings. */
function poll(): boolean {
  let did = false;
  const inn = rt.inn;
  const n = inn.length;
  // Start at a different ring each turn so that a busy sender cannot starve the others.
  const first = n > 0 ? pollTurn++ % n : 0;
  let deadline = 0;
  for (let j = 0; j < n; j++) {
    const ring = inn[(first + j) % n]!;
    if (!ring.hasData()) continue;
    if (!did) {
      did = true;
      deadline = performance.now() + loopState.taskQuotaMs;
    } else if (performance.now() >= deadline) {
      break; // the rest wait for the next turn
    }
    ring.drain(onRecord, DRAIN_BUDGET);
    if (ring.producerWaiting()) wake(ring.from);
  }
  if (needsDrain) {
    needsDrain = false;
    // Continuations of what ran now run too, so their calls go out in this turn's flush.
    drainSettled(performance.now());
  }
  if (dirty.length > 0 && flush()) did = true;
  if (needsDrain) {
    // The flush made room for senders that were waiting: let them write, then flush again.
    needsDrain = false;
    drainSettled(performance.now());
    if (dirty.length > 0) flush();
  }
  return did;
}

const sleepHook = {
  beforeSleep(): boolean {
    if (dirty.length > 0) flush();
    Atomics.store(rt.i32, rt.sleepWord, 1);
    const inn = rt.inn;
    for (let i = 0; i < inn.length; i++) if (inn[i]!.hasData()) return true;
    for (let i = 0; i < dirty.length; i++) if (dirty[i]!.backlogCanMove()) return true;
    return needsDrain;
  },
  afterSleep(): void {
    Atomics.store(rt.i32, rt.sleepWord, 0);
  },
};

// ---- statistics --------------------------------------------------------------------------------

/** Counters of this shard's cross-shard traffic. */
export interface SmpStats {
  /** Calls (submitTo, invokeOn...) sent to other shards. */
  callsSent: number;
  /** One-way messages sent. */
  postsSent: number;
  /** Replies sent. */
  repliesSent: number;
  /** Records received (calls, replies, releases). */
  received: number;
  /** Eventfd writes made to wake sleeping shards. */
  wakes: number;
  /** Calls waiting for a reply. */
  pendingCalls: number;
  /** Buffers handed to other shards and not yet released. */
  buffersLent: number;
  /** Buffers lent to shards that died: kept mapped for good (a third shard may still read them). */
  buffersLost: number;
  /** Messages waiting for ring room now, over all outgoing rings. */
  backlog: number;
  /** The most messages ever waiting for room in one outgoing ring. */
  maxBacklog: number;
  /** Bytes written and not yet consumed, over all outgoing rings, as this shard last saw them. */
  ringBytesUsed: number;
}

/** This shard's cross-shard counters. Costs a pass over the rings. */
export function smpStats(): SmpStats {
  let backlog = 0;
  let maxBacklog = 0;
  let used = 0;
  for (const ring of rt.out) {
    if (ring === undefined) continue;
    backlog += ring.backlogLength;
    maxBacklog = Math.max(maxBacklog, ring.maxBacklog);
    used += ring.usedBytes;
  }
  return {
    ...stats,
    pendingCalls: pendingCount,
    buffersLent: handovers.outstanding,
    buffersLost: handovers.lost,
    backlog,
    maxBacklog,
    ringBytesUsed: used,
  };
}
