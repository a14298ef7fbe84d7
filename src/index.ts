/**
 * Shoal: a Seastar-style server framework for Bun. Public API.
 */
export * from "./core/errors.ts";
export { BufferCache, BufferPool, NativeBuffer, PoolExhaustedError, allocateAlignedBuffer, foreignView, releaseForeignView, setBufferPoisoning, POISON_BYTE, HUGE_PAGE_SIZE } from "./core/buffers.ts";
export type { BufferHome } from "./core/buffers.ts";
export { DataViewCache, copyBytes, dataViewOf } from "./core/bytes.ts";
export type { AlignedBufferOptions } from "./core/buffers.ts";
export type { BufferCacheOptions, BufferPoolOptions } from "./core/buffers.ts";
export { Reactor, reactor, configureReactor, IoOp, CQE_F_MORE, CQE_F_BUFFER } from "./core/reactor.ts";
export type { ReactorOptions, OpOptions, RwOptions, ReactorCounters } from "./core/reactor.ts";
export { configureLoop, ensureLoopRunning, refLoop, loopStats } from "./core/loop.ts";
export type { LoopOptions } from "./core/loop.ts";
export {
  SchedulingGroup,
  createSchedulingGroup,
  withSchedulingGroup,
  currentSchedulingGroup,
  defaultSchedulingGroup,
  schedulingGroups,
  schedule,
  maybeYield,
  yieldNow,
} from "./core/scheduler.ts";
export { Timer, sleep, now, armedTimers } from "./core/timer.ts";
export { probeIoUring } from "./core/probe.ts";
export { fileLimit, raiseFileLimit } from "./core/limits.ts";
export type { FileLimit, RaiseFileLimitOptions } from "./core/limits.ts";
export {
  whenAll,
  whenAllSucceed,
  whenAny,
  parallelForEach,
  maxConcurrentForEach,
  stopIteration,
  repeat,
  repeatUntilValue,
  doUntil,
  keepDoing,
  withTimeout,
} from "./core/future.ts";
export type { Awaitable, FutureLike, Resolved, SignalOptions, WaitOptions, WhenAnyResult, StopIteration } from "./core/future.ts";
export * from "./core/semaphore.ts";
export * from "./core/gate.ts";
export * from "./core/queue.ts";
export * from "./core/pipe.ts";
export * from "./core/condition-variable.ts";
export * from "./core/shared-mutex.ts";
export type { Completable } from "./core/scheduler.ts";

export * from "./smp/index.ts";
export * from "./app/index.ts";
export * from "./log/index.ts";
export * from "./fs/index.ts";
export * from "./net/index.ts";

/** Shoal's version. */
export const version = "0.1.0";
