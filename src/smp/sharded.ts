/**
 * Sharded<T>: one instance of a service on every shard (Seastar's `sharded<T>`).
 *
 *   class Counter { count = 0; add(n: number) { return (this.count += n); } async stop() {} }
 *   export const counters = sharded(Counter);          // top level: registers on every shard
 *
 *   // in main, or in any service:
 *   await counters.start();                            // new Counter() on every shard
 *   await counters.invokeOn(2, "add", 5);              // runs on shard 2; typed: "ad" is a compile error
 *   const total = await counters.mapReduce("add", "sum", 0, 0);
 *   await counters.stop();                             // stop() on every instance
 *
 * Calls to the local shard are direct calls; others travel the rings as compact messages.
 * Each shard counts the calls running on its instance: stop() refuses new calls
 * (ServiceStoppedError), waits for the running ones to settle, then calls the instance's
 * stop(). The app template stops every running service, newest first, at shutdown (one still
 * starting counts as the newest); start() is refused from then on.
 */
import { InvalidArgumentError } from "../core/errors.ts";
import { isThenable } from "../core/future.ts";
import { ServiceNotStartedError, ServiceStateError, ServiceStoppedError, ShardGoneError, UnknownMethodError } from "./errors.ts";
import { registerHandler, registerService, serviceById, type ServiceHost } from "./registry.ts";
import { NAMED_METHOD, checkShard, invokeService, invokeServiceOnAll, nextStartSequence, smp, submitTo, thisShard } from "./runtime.ts";
import { logger } from "../log/logger.ts";

// ---- types ---------------------------------------------------------------------------------------

/** A class whose instances can be sharded. */
export type ServiceClass = abstract new (...args: never[]) => object;

/**
 * The names of T's methods (properties whose values are functions) that may be invoked: all but
 * `stop`, the service's lifecycle (Sharded.stop() runs it on every shard, once).
 */
export type MethodKeys<T> = Exclude<{ [K in keyof T]-?: T[K] extends (...args: never[]) => unknown ? K : never }[keyof T] & string, "stop">;

/** The parameters of method K of T. */
export type MethodArgs<T, K extends MethodKeys<T>> = T[K] extends (...args: infer A) => unknown ? A : never;

/** What method K of T resolves to once awaited. */
export type MethodResult<T, K extends MethodKeys<T>> = T[K] extends (...args: never[]) => infer R ? Awaited<R> : never;

/** T's methods, each returning a promise: what a call on another shard looks like. */
export type Remote<T> = { readonly [K in MethodKeys<T>]: (...args: MethodArgs<T, K>) => Promise<MethodResult<T, K>> };

/** Folds one shard's result into the accumulator (mapReduce). Runs on the calling shard. */
export type Reducer<R, V> = (accumulator: R, value: V, shard: number) => R;

const reducers = new Map<string, Reducer<unknown, unknown>>([
  ["sum", (a, v) => (a as number) + (v as number)],
  ["min", (a, v) => ((v as number) < (a as number) ? v : a)],
  ["max", (a, v) => ((v as number) > (a as number) ? v : a)],
  ["and", (a, v) => Boolean(a) && Boolean(v)],
  ["or", (a, v) => Boolean(a) || Boolean(v)],
  ["concat", (a, v) => (a as unknown[]).concat(v as unknown[])],
  ["collect", (a, v) => [...(a as unknown[]), v]],
]);

/**
 * Registers a named reducer for mapReduce (built in: sum, min, max, and, or, concat, collect).
 * Reducers run on the calling shard, so a function can also be passed directly; a name lets
 * code pick one by configuration. Throws InvalidArgumentError for a duplicate or bad name.
 */
export function registerReducer<R, V>(name: string, reducer: Reducer<R, V>): void {
  if (typeof name !== "string" || name === "") throw new InvalidArgumentError("registerReducer: name must be a non-empty string");
  if (typeof reducer !== "function") throw new InvalidArgumentError(`registerReducer("${name}"): reducer must be a function`);
  if (reducers.has(name)) throw new InvalidArgumentError(`a reducer named "${name}" is already registered`);
  reducers.set(name, reducer as Reducer<unknown, unknown>);
}

/** How sharded() builds each shard's instance. */
export interface ShardedOptions<T, A extends unknown[]> {
  /** The registered name (default: the class name). Must be the same on every shard. */
  name?: string | undefined;
  /**
   * Builds the instance on each shard from start()'s arguments, instead of `new Class(...args)`.
   * Runs on the shard that will own the instance; may be async.
   */
  factory?: ((shard: number, ...args: A) => T | Promise<T>) | undefined;
}

type State = "idle" | "starting" | "running" | "stopping";

const log = logger("smp");

/**
 * Set on a shard once the shutdown began stopping every service there (shard 0 for all shards,
 * or each shard for its own when shard 0 is gone): start() is refused from then on. A service
 * started after the one pass over the running ones (main still running past its grace, a
 * handler) was never stopped, and the process exited 0 as if it had been.
 */
let closing: string | undefined;

function refusedStart(name: string): ServiceStoppedError {
  return new ServiceStoppedError(`service "${name}" was not started: the application is ${closing}`);
}

/** The per-shard side of a service: this shard's instance and its lifecycle. */
class Host<T extends object> implements ServiceHost {
  readonly id: number;
  readonly name: string;
  readonly methods: readonly string[];
  private readonly methodIds: Map<string, number>;
  private readonly make: (shard: number, args: unknown[]) => T | Promise<T>;
  state: State = "idle";
  instance: T | undefined;
  seq = 0;
  private stoppedBefore = false;
  private inflight = 0;
  private idleWaiters: (() => void)[] = [];
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  readonly owner: Sharded<T, never>;

  constructor(id: number, name: string, methods: string[], make: (shard: number, args: unknown[]) => T | Promise<T>, owner: Sharded<T, never>) {
    this.id = id;
    this.name = name;
    this.methods = methods;
    this.methodIds = new Map(methods.map((m, i) => [m, i]));
    this.make = make;
    this.owner = owner;
  }

  methodId(name: string): number {
    return this.methodIds.get(name) ?? NAMED_METHOD;
  }

  methodName(id: number): string | undefined {
    return this.methods[id];
  }

  private notRunning(method: string): Error {
    const where = `service "${this.name}" on shard ${thisShard()}`;
    if (this.state === "stopping" || (this.state === "idle" && this.stoppedBefore)) {
      return new ServiceStoppedError(`${where} is ${this.state === "stopping" ? "stopping" : "stopped"}; ${method}() was not run`);
    }
    return new ServiceNotStartedError(`${where} is ${this.state === "starting" ? "still starting" : "not started"}; call start() first (${method}() was not run)`);
  }

  /** Throws what invokeLocal would throw before calling `method` (not running, no such method). */
  checkInvocable(method: string): void {
    if (this.state !== "running") throw this.notRunning(method);
    if (typeof (this.instance as Record<string, unknown>)[method] !== "function") {
      throw new UnknownMethodError(`service "${this.name}" has no method "${method}"`);
    }
  }

  invokeLocal(method: string, args: unknown[]): unknown {
    if (this.state !== "running") throw this.notRunning(method);
    const inst = this.instance as Record<string, unknown>;
    const fn = inst[method];
    if (typeof fn !== "function") throw new UnknownMethodError(`service "${this.name}" has no method "${method}"`);
    this.inflight++;
    let result: unknown;
    let pending: boolean;
    try {
      result = fn.apply(inst, args);
      // Inside the try: reading a result's `then` (a getter, a Proxy) may throw, and the call
      // must still leave (or stop() waits for it forever).
      pending = isThenable(result);
    } catch (err) {
      this.leave();
      throw err;
    }
    if (!pending) {
      this.leave();
      return result;
    }
    return Promise.resolve(result).then(
      (v) => {
        this.leave();
        return v;
      },
      (err: unknown) => {
        this.leave();
        throw err;
      },
    );
  }

  private leave(): void {
    if (--this.inflight === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** Calls running on this shard's instance now. */
  get running(): number {
    return this.inflight;
  }

  async startLocal(seq: number, args: unknown[]): Promise<void> {
    if (this.state !== "idle") {
      throw new ServiceStateError(`service "${this.name}" is already ${this.state} on shard ${thisShard()}; stop() it first`);
    }
    if (closing !== undefined) throw refusedStart(this.name);
    this.state = "starting";
    // Its place in the shutdown order from now on: a service still starting is the newest (it
    // sorted as the oldest, and was stopped after services it may use while it starts).
    this.seq = seq;
    let done!: () => void;
    this.starting = new Promise<void>((resolve) => (done = resolve));
    try {
      const inst = await this.make(thisShard(), args);
      if (inst === null || typeof inst !== "object") {
        throw new InvalidArgumentError(`service "${this.name}": the factory returned ${inst === null ? "null" : typeof inst}, not an object`);
      }
      this.instance = inst;
      this.state = "running";
    } catch (err) {
      this.state = "idle";
      throw err;
    } finally {
      this.starting = undefined;
      done();
    }
  }

  stopLocal(): Promise<void> {
    if (this.stopping !== undefined) return this.stopping;
    if (this.state === "idle") return Promise.resolve();
    this.stopping = this.doStop().finally(() => (this.stopping = undefined));
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    if (this.starting !== undefined) await this.starting;
    if (this.state !== "running") return;
    this.state = "stopping";
    if (this.inflight > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    const inst = this.instance as { stop?: () => unknown };
    try {
      if (typeof inst.stop === "function") await inst.stop();
    } finally {
      this.instance = undefined;
      this.state = "idle";
      this.stoppedBefore = true;
    }
  }
}

// The lifecycle travels as calls to these internal handlers (registered before any user code).
const START = registerHandler("shoal.sharded.start", (service: number, seq: number, ...args: unknown[]) =>
  hostOf(service).startLocal(seq, args),
);
const STOP = registerHandler("shoal.sharded.stop", (service: number) => hostOf(service).stopLocal());
// start() and stop() from any shard run on shard 0, one at a time per service.
const LIFECYCLE = registerHandler("shoal.sharded.lifecycle", (service: number, op: number, ...args: unknown[]) =>
  (hostOf(service).owner as Sharded<object>).coordinate(op, args),
);
const OP_START = 0;
const OP_STOP = 1;

function hostOf(service: number): Host<object> {
  const host = serviceById(service);
  if (!(host instanceof Host)) throw new InvalidArgumentError(`no sharded service #${service} on shard ${thisShard()}`);
  return host;
}

function methodsOf(ctor: ServiceClass | undefined): string[] {
  if (ctor === undefined) return [];
  const names = new Set<string>();
  for (let p = ctor.prototype as object | null; p !== null && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
    for (const key of Object.getOwnPropertyNames(p)) {
      if (key === "constructor") continue;
      const d = Object.getOwnPropertyDescriptor(p, key);
      if (d !== undefined && typeof d.value === "function") names.add(key);
    }
  }
  return [...names].sort();
}

/** One shard's failure in a call made on several shards. */
interface Failure {
  shard: number;
  error: unknown;
}

/** Errors whose `errors` property joinFailures attached (so a later join may replace it). */
const annotated = new WeakSet<object>();

/**
 * The error a call made on several shards rejects with: the lowest failing shard's. None of the
 * others is dropped. With more than one (distinct) failure, all of them, in shard order and the
 * first included, ride on it as a non-enumerable `errors` array, as whenAllSucceed's do (an
 * error from another shard names it in `shard`). When the list cannot ride (the first failure
 * is not an extensible object, or has an `errors` of its own: an AggregateError) or must not
 * be lost (`what` names a lifecycle step: its error crosses back to a caller on another shard
 * without non-enumerable properties, and only the first reached the shutdown report), each
 * other failure is logged, naming its shard, unless it says what the thrown one says (see
 * sameFailure: a port in use fails every shard alike).
 */
function joinFailures(failures: Failure[], what?: string): unknown {
  // One error object rejecting several calls (arguments refused before anything was sent) is one failure.
  const distinct = failures.filter((f, i) => failures.findIndex((g) => g.error === f.error) === i);
  const first = distinct[0]!;
  const err = first.error;
  let attached = false;
  if (err !== null && typeof err === "object") {
    const ours = annotated.has(err);
    if (ours || !Object.hasOwn(err, "errors")) {
      if (distinct.length > 1 && (ours || Object.isExtensible(err))) {
        Object.defineProperty(err, "errors", { value: distinct.map((f) => f.error), writable: true, configurable: true, enumerable: false });
        annotated.add(err);
        attached = true;
      } else if (ours) {
        delete (err as { errors?: unknown }).errors;
        annotated.delete(err);
      }
    }
  }
  if (what !== undefined || !attached) {
    for (let i = 1; i < distinct.length; i++) {
      const f = distinct[i]!;
      // The same failure on every shard (a port in use, a bad argument) is told once: the
      // thrown error's own report says it.
      if (sameFailure(f.error, err)) continue;
      const text = `${what ?? "a call made on several shards"} failed on shard ${f.shard} too (the error thrown is shard ${first.shard}'s):`;
      if (what !== undefined) log.error(text, f.error);
      else log.warn(text, f.error);
    }
  }
  return err;
}

/** True if `a` and `b` say the same: errors of one class with the same message and code. */
function sameFailure(a: unknown, b: unknown): boolean {
  if (a === null || b === null || typeof a !== "object" || typeof b !== "object") return Object.is(a, b);
  const x = a as { message?: unknown; code?: unknown };
  const y = b as { message?: unknown; code?: unknown };
  return Object.getPrototypeOf(a) === Object.getPrototypeOf(b) && x.message === y.message && x.code === y.code;
}

/**
 * Settles every promise (promises[i] is shard shards[i]'s call), then returns the values, or
 * throws joinFailures() of the failures (lowest shard first). `ignoreGone`: a ShardGoneError is
 * no failure (stop() skips gone shards).
 */
async function allOrFirstError<V>(promises: Promise<V>[], shards: (i: number) => number, ignoreGone = false, what?: string): Promise<V[]> {
  const settled = await Promise.allSettled(promises);
  const values: V[] = new Array(settled.length);
  const failures: Failure[] = [];
  for (let i = 0; i < settled.length; i++) {
    const s = settled[i]!;
    if (s.status === "fulfilled") values[i] = s.value;
    else if (!(ignoreGone && s.reason instanceof ShardGoneError)) failures.push({ shard: shards(i), error: s.reason });
  }
  if (failures.length > 0) throw joinFailures(failures, what);
  return values;
}

const everyShard = (i: number) => i;

/** Runs `fn` with the `errors` list joinFailures attached to `err` taken off (a log line shows it otherwise). */
function withoutList(err: unknown, fn: () => void): void {
  if (err === null || typeof err !== "object" || !annotated.has(err)) return fn();
  const d = Object.getOwnPropertyDescriptor(err, "errors");
  delete (err as { errors?: unknown }).errors;
  try {
    fn();
  } finally {
    if (d !== undefined) Object.defineProperty(err, "errors", d);
  }
}

/** The failures a lifecycle error stands for: the ones joinFailures attached to it, or itself. */
function failuresIn(err: unknown): unknown[] {
  if (err !== null && typeof err === "object" && annotated.has(err)) {
    const list = (err as { errors?: unknown }).errors;
    if (Array.isArray(list)) return list;
  }
  return [err];
}

/**
 * One instance of a service on every shard. Create with sharded() at the top level of the
 * application module. All methods may be called on any shard.
 */
export class Sharded<T extends object, A extends unknown[] = unknown[]> implements AsyncDisposable {
  /** The registered name. */
  readonly name: string;
  private readonly host: Host<T>;
  private readonly remotes: Remote<T>[] = [];

  /** @internal use sharded() */
  constructor(name: string, ctor: ServiceClass | undefined, factory: ((shard: number, ...args: A) => T | Promise<T>) | undefined) {
    this.name = name;
    const make = factory
      ? (shard: number, args: unknown[]) => factory(shard, ...(args as A))
      : (_shard: number, args: unknown[]) => new (ctor as unknown as new (...a: unknown[]) => T)(...args);
    this.host = registerService(name, (id) => new Host<T>(id, name, methodsOf(ctor), make, this as unknown as Sharded<T, never>)) as Host<T>;
  }

  /** True while this shard's instance is running. */
  get isRunning(): boolean {
    return this.host.state === "running";
  }

  /**
   * Starts the service: builds an instance on every shard, in parallel, from `args` (each
   * remote shard gets its own decoded copy). If any shard fails, the instances that did
   * start are stopped again (a stop() that fails then is logged) and the first error (lowest
   * shard) is thrown; when several shards failed, all their errors ride on it as `errors`
   * and the others are logged with their shard (see invokeOnAll).
   * Throws ServiceStateError if the service is already running, EncodeError for arguments
   * that cannot cross, ServiceStoppedError once the application's shutdown began stopping its
   * services, or what a constructor or factory threw.
   * start() and stop() are coordinated by shard 0, one at a time per service, whichever shard
   * calls them: a stop() called while a start() runs waits for it (then stops everything).
   */
  start(...args: A): Promise<void> {
    return thisShard() === 0 ? this.coordinate(OP_START, args) : (submitTo(0, LIFECYCLE, this.host.id, OP_START, ...args) as Promise<void>);
  }

  /** @internal Runs a lifecycle operation on shard 0 after the ones before it. */
  coordinate(op: number, args: unknown[]): Promise<void> {
    const run = (): Promise<void> => (op === OP_START ? this.startAll(args as A) : this.stopAll());
    // With nothing in progress it starts at once: a stop() refuses calls made right after it.
    const p = this.lifecycleOps === 0 ? run() : this.lifecycle.then(run, run);
    this.lifecycleOps++;
    const done = p.then(
      () => void this.lifecycleOps--,
      () => void this.lifecycleOps--,
    );
    this.lifecycle = done;
    return p;
  }

  /** The last lifecycle operation (shard 0), settled or not, and how many are unfinished. */
  private lifecycle: Promise<void> = Promise.resolve();
  private lifecycleOps = 0;

  /**
   * @internal True while a start() or stop() runs or waits on shard 0. Its instance here may be
   * idle already while other shards' are still running: a start() that failed here rolls back
   * the shards where it succeeded, a stop() waits for the slowest shard's.
   */
  get lifecycleBusy(): boolean {
    return this.lifecycleOps > 0;
  }

  private async startAll(args: A): Promise<void> {
    if (closing !== undefined) throw refusedStart(this.name);
    if (this.host.state !== "idle") {
      throw new ServiceStateError(`service "${this.name}" is already ${this.host.state} on shard ${thisShard()}; stop() it first`);
    }
    const seq = nextStartSequence();
    const started: Promise<void>[] = [];
    for (let k = 0; k < smp.count; k++) started.push(submitTo(k, START, this.host.id, seq, ...args) as Promise<void>);
    const settled = await Promise.allSettled(started);
    const failures: Failure[] = [];
    settled.forEach((s, k) => s.status === "rejected" && failures.push({ shard: k, error: s.reason }));
    if (failures.length === 0) return;
    const ok = settled.flatMap((s, k) => (s.status === "fulfilled" ? [k] : []));
    const rolledBack = await Promise.allSettled(ok.map((k) => submitTo(k, STOP, this.host.id)));
    // Nobody else hears of an instance that failed to stop again: its stop() error is logged.
    rolledBack.forEach((s, i) => {
      if (s.status === "rejected" && !(s.reason instanceof ShardGoneError)) {
        log.error(`service "${this.name}" failed to stop on shard ${ok[i]} after its start() failed elsewhere:`, s.reason);
      }
    });
    throw joinFailures(failures, `service "${this.name}": start()`);
  }

  /**
   * Stops the service on every shard, in parallel: each shard refuses new calls
   * (ServiceStoppedError), waits for the calls running on its instance, then awaits the
   * instance's stop() if it has one. Stopping a stopped service does nothing. Shards that are
   * gone are skipped. Throws the first stop() failure (lowest shard), after all shards finished.
   * No failure is dropped: when several shards' stop() failed, all their errors (in shard
   * order, the thrown one first) ride on it as a non-enumerable `errors` array, and each of
   * the others is logged (logger "smp", level error) naming its shard, which also reaches a
   * caller on another shard, whose copy of the error crosses without that array. At shutdown
   * the supervisor reports every failing shard.
   */
  stop(): Promise<void> {
    return thisShard() === 0 ? this.coordinate(OP_STOP, []) : (submitTo(0, LIFECYCLE, this.host.id, OP_STOP) as Promise<void>);
  }

  private async stopAll(): Promise<void> {
    const stopped: Promise<void>[] = [];
    for (let k = 0; k < smp.count; k++) stopped.push(submitTo(k, STOP, this.host.id) as Promise<void>);
    await allOrFirstError(stopped, everyShard, true, `service "${this.name}": stop()`);
  }

  /** Same as stop(), for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }

  /**
   * This shard's instance, for direct synchronous use. Throws ServiceNotStartedError or
   * ServiceStoppedError when it is not running here.
   */
  local(): T {
    if (this.host.state !== "running") {
      const state = this.host.state;
      throw state === "stopping"
        ? new ServiceStoppedError(`service "${this.name}" is stopping on shard ${thisShard()}`)
        : new ServiceNotStartedError(`service "${this.name}" is not running on shard ${thisShard()}; call start() first`);
    }
    return this.host.instance!;
  }

  /**
   * Calls `method` on `shard`'s instance and resolves with its result. Local: a direct call.
   * Remote: one message each way. Rejects with ShardRangeError, UnknownMethodError,
   * EncodeError, ServiceNotStartedError/ServiceStoppedError (from the target shard),
   * ShardGoneError, or the method's own exception (a RemoteError when it came from another shard
   * and its class is not registered: see registerErrorClass). `stop` cannot be invoked (the
   * service's lifecycle: UnknownMethodError).
   */
  invokeOn<K extends MethodKeys<T>>(shard: number, method: K, ...args: MethodArgs<T, K>): Promise<MethodResult<T, K>> {
    try {
      checkShard(shard, `${this.name}.invokeOn`);
      this.checkMethod(method);
    } catch (err) {
      return Promise.reject(err);
    }
    return invokeService(shard, this.host, this.host.methodId(method), method, args) as Promise<MethodResult<T, K>>;
  }

  private checkMethod(method: unknown): asserts method is string {
    if (typeof method !== "string") throw new UnknownMethodError(`${this.name}: the method name must be a string, got ${typeof method}`);
    if (method === "stop") {
      // Invoked, it would run outside the lifecycle: the instance stopped while still taking
      // calls, and stopped again at shutdown.
      throw new UnknownMethodError(`service "${this.name}": stop() is its lifecycle and cannot be invoked; call ${this.name}.stop() (Sharded.stop()) to stop it on every shard`);
    }
    if (this.host.methodId(method) !== NAMED_METHOD) return;
    // Not on the prototype: an own function property (an arrow function field) is fine too.
    const inst = this.host.instance as Record<string, unknown> | undefined;
    if (inst !== undefined && typeof inst[method] !== "function") {
      throw new UnknownMethodError(`service "${this.name}" has no method "${method}"`);
    }
    if (inst === undefined && this.host.methods.length > 0) {
      throw new UnknownMethodError(`service "${this.name}" has no method "${method}" (its class has ${this.host.methods.join(", ")})`);
    }
  }

  /**
   * Calls `method` on every shard in parallel; resolves with the results indexed by shard, or
   * throws the first error (lowest shard) once all settled. With several failures none is
   * dropped: all of them, in shard order (the thrown one first; one from another shard names
   * it in `shard`), ride on the thrown error as a non-enumerable `errors` array, as
   * whenAllSucceed's do; where they cannot (a thrown primitive, a frozen error, one with an
   * `errors` of its own) the others are logged as warnings naming their shard. Arguments that
   * cannot cross fail the call on every shard, this one included, with one EncodeError; a
   * NativeBuffer is such an argument here (it can be handed to one shard, not to several).
   */
  invokeOnAll<K extends MethodKeys<T>>(method: K, ...args: MethodArgs<T, K>): Promise<MethodResult<T, K>[]> {
    try {
      this.checkMethod(method);
    } catch (err) {
      return Promise.reject(err);
    }
    return allOrFirstError(invokeServiceOnAll(this.host, this.host.methodId(method), method, args, true), everyShard) as Promise<MethodResult<T, K>[]>;
  }

  /** Like invokeOnAll (failures included) on every shard but this one; the results are in shard order without this shard. */
  invokeOnOthers<K extends MethodKeys<T>>(method: K, ...args: MethodArgs<T, K>): Promise<MethodResult<T, K>[]> {
    try {
      this.checkMethod(method);
    } catch (err) {
      return Promise.reject(err);
    }
    const me = thisShard();
    return allOrFirstError(invokeServiceOnAll(this.host, this.host.methodId(method), method, args, false), (i) => (i < me ? i : i + 1)) as Promise<MethodResult<T, K>[]>;
  }

  /**
   * Calls `method` on every shard and folds the results, in shard order, on this shard:
   * `reducer` is a function or a registered reducer's name ("sum", "max", ...). Throws the
   * lowest failing shard's error, carrying the other shards' as invokeOnAll's does, or
   * InvalidArgumentError for an unknown reducer name.
   */
  async mapReduce<K extends MethodKeys<T>, R>(
    method: K,
    reducer: string | Reducer<R, MethodResult<T, K>>,
    initial: R,
    ...args: MethodArgs<T, K>
  ): Promise<R> {
    const fold = typeof reducer === "string" ? (reducers.get(reducer) as Reducer<R, MethodResult<T, K>> | undefined) : reducer;
    if (typeof fold !== "function") {
      throw new InvalidArgumentError(`mapReduce: no reducer named "${String(reducer)}" (known: ${[...reducers.keys()].join(", ")})`);
    }
    const values = await this.invokeOnAll(method, ...args);
    let acc = initial;
    for (let k = 0; k < values.length; k++) acc = fold(acc, values[k]!, k);
    return acc;
  }

  /**
   * A view of `shard`'s instance whose methods return promises (a typo is a compile error):
   * `await counters.on(2).add(5)`. Created once per shard.
   */
  on(shard: number): Remote<T> {
    checkShard(shard, `${this.name}.on`);
    let r = this.remotes[shard];
    if (r === undefined) {
      const self = this;
      r = new Proxy({} as Remote<T>, {
        get(_target, prop) {
          if (typeof prop !== "string" || prop === "then") return undefined;
          return (...args: unknown[]) => self.invokeOn(shard, prop as MethodKeys<T>, ...(args as never));
        },
      });
      this.remotes[shard] = r;
    }
    return r;
  }

  /** Calls running on this shard's instance right now (diagnostics). */
  get runningCalls(): number {
    return this.host.running;
  }
}

/** Creates and registers a sharded service from a class (instances built with `new ctor(...startArgs)`). */
export function sharded<C extends ServiceClass>(
  ctor: C,
  options?: { name?: string },
): Sharded<InstanceType<C>, ConstructorParameters<C>>;
/** Creates and registers a sharded service whose instances a factory builds from start()'s arguments. */
export function sharded<C extends ServiceClass, A extends unknown[]>(
  ctor: C,
  options: { name?: string; factory: (shard: number, ...args: A) => InstanceType<C> | Promise<InstanceType<C>> },
): Sharded<InstanceType<C>, A>;
/** Creates and registers a sharded service of any shape, built by a factory; methods are called by name. */
export function sharded<T extends object, A extends unknown[] = []>(
  name: string,
  options: { factory: (shard: number, ...args: A) => T | Promise<T> },
): Sharded<T, A>;
/**
 * Registers a sharded service (at the top level of the application module: it runs on every
 * shard) and returns its handle. Nothing is started until start(). Throws RegistrationError
 * for a duplicate name or a call after the shard started, InvalidArgumentError for bad arguments.
 */
export function sharded(
  ctorOrName: ServiceClass | string,
  options?: ShardedOptions<object, unknown[]>,
): Sharded<object, unknown[]> {
  if (options !== undefined && (options === null || typeof options !== "object")) {
    throw new InvalidArgumentError("sharded: options must be an object");
  }
  const factory = options?.factory;
  if (factory !== undefined && typeof factory !== "function") throw new InvalidArgumentError("sharded: factory must be a function");
  if (typeof ctorOrName === "string") {
    if (factory === undefined) throw new InvalidArgumentError(`sharded("${ctorOrName}"): a service given by name needs a factory`);
    return new Sharded(ctorOrName, undefined, factory);
  }
  if (typeof ctorOrName !== "function") throw new InvalidArgumentError("sharded: expected a class or a name");
  const name = options?.name ?? ctorOrName.name;
  if (!name) throw new InvalidArgumentError("sharded: an anonymous class needs { name }");
  return new Sharded(name, ctorOrName, factory);
}

/**
 * @internal Stops every service running on this shard's view, newest start first, across all
 * shards (each Sharded.stop()). Used by the app template at shutdown on shard 0. Returns the errors.
 */
export async function stopAllServices(): Promise<unknown[]> {
  closing ??= "shutting down and stopping its services";
  // A service idle here with a start() or stop() under way still has instances running on other
  // shards (a start that failed here rolls back the others; a stop finishes here first): its
  // stop() waits for that operation. Skipped, the app exited under them, their stop() unrun.
  return stopInOrder((h) => h.owner.stop(), (h) => h.owner.lifecycleBusy);
}

/** @internal Stops this shard's own instances only, newest first (when shard 0 is gone). */
export async function stopLocalServices(): Promise<unknown[]> {
  closing ??= "shutting down (shard 0 is gone: every shard stops its own services)";
  return stopInOrder((h) => h.stopLocal());
}

async function stopInOrder(stop: (h: Host<object>) => Promise<void>, busy: (h: Host<object>) => boolean = () => false): Promise<unknown[]> {
  const errors: unknown[] = [];
  const hosts: Host<object>[] = [];
  for (let id = 0; ; id++) {
    const h = serviceById(id);
    if (h === undefined) break;
    if (h instanceof Host && (h.state !== "idle" || busy(h))) hosts.push(h);
  }
  hosts.sort((a, b) => b.seq - a.seq);
  for (const h of hosts) {
    try {
      await stop(h);
      log.debug(`stopped service "${h.name}"`);
    } catch (err) {
      const all = failuresIn(err);
      if (all.length > 1) {
        // The others were logged as they were joined (stopAll): shown once, not again in the list.
        withoutList(err, () => log.error(`service "${h.name}" failed to stop on ${all.length} shards (the others are logged above), the lowest:`, err));
      } else {
        log.error(`service "${h.name}" failed to stop:`, err);
      }
      // Every shard's failure, not only the lowest one's: the supervisor reports each with its shard.
      errors.push(...all);
    }
  }
  return errors;
}
