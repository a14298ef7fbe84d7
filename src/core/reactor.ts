/**
 * The shard's reactor, JS side. Operations are written as descriptors into a native array
 * (one 64-byte record each, through views created once); the loop hands the whole batch to
 * native code in one FFI call per turn, which also reaps completions into another native
 * array. Each operation owns a slot (its io_uring user_data) until the kernel's own final
 * completion arrives, even when cancelled, so memory the kernel may still touch stays pinned.
 */
import { mapNative, native, nativeView } from "./native.ts";
import { probeIoUring } from "./probe.ts";
import { AbortError, ClosedError, InvalidArgumentError, StartupError, SystemError, errorFromResult } from "./errors.ts";
import { describeValue } from "./describe.ts";
import { NativeBuffer } from "./buffers.ts";
import { currentSchedulingGroup, defaultSchedulingGroup, enqueue, singleGroup, type Completable, type SchedulingGroup } from "./scheduler.ts";
import { ensureLoopRunning } from "./loop.ts";

/** io_uring opcodes (the kernel's IORING_OP numbers); descriptors carry them unchanged. */
export const IoOp = {
  NOP: 0, READV: 1, WRITEV: 2, FSYNC: 3, POLL_ADD: 6, SENDMSG: 9, RECVMSG: 10, TIMEOUT: 11,
  ACCEPT: 13, ASYNC_CANCEL: 14, CONNECT: 16, FALLOCATE: 17, OPENAT: 18, CLOSE: 19, STATX: 21,
  READ: 22, WRITE: 23, SEND: 26, RECV: 27, SHUTDOWN: 34, RENAMEAT: 35, UNLINKAT: 36, MKDIRAT: 37,
  LINKAT: 39, MSG_RING: 40, SOCKET: 45, SEND_ZC: 47, FTRUNCATE: 55,
} as const;

/** CQE flag: more completions will follow for this slot (multishot). */
export const CQE_F_MORE = 1 << 1;
/** CQE flag: a provided buffer was selected; its id is flags >>> 16. */
export const CQE_F_BUFFER = 1 << 0;

const ECANCELED = 125;
const ETIME = 62;
const IOV_BLOCK = 64; // iovecs per readv/writev

export interface ReactorOptions {
  /** Submission queue entries (power of two, default 1024): descriptors one turn can carry. */
  sqEntries?: number | undefined;
  /** Completion queue entries, sqEntries..65536 (default 8 x sqEntries, at most 65536). */
  cqEntries?: number | undefined;
}

export interface OpOptions {
  /** Cancels the operation in the kernel; it then rejects with AbortError. */
  signal?: AbortSignal | undefined;
}

export interface RwOptions extends OpOptions {
  /** File offset; -1 or omitted means the current position (pipes, sockets, eventfds). */
  offset?: number | undefined;
  /** Start within the buffer (default 0). */
  bufferOffset?: number | undefined;
  /** Bytes to transfer (default: the rest of the buffer). */
  length?: number | undefined;
}

/** Rarely used SQE fields of a descriptor (see Reactor.prepare). */
export interface PrepareExtra {
  sqeFlags?: number | undefined;
  buf?: number | undefined;
  fileIndex?: number | undefined;
  /** SQE addr3 (TIMEOUT: seconds). */
  aux?: number | undefined;
  /** TIMEOUT: nanoseconds. */
  aux2?: number | undefined;
  ioprio?: number | undefined;
}

/** Maps a non-negative result to the promise's value. */
type ResultMap = 0 | 1 | 2; // 0: number, 1: void, 2: void with ETIME as success

/** Rarely needed per-operation state: pinned buffers, an iovec block, an abort signal. */
interface OpExtra {
  buffers: NativeBuffer | NativeBuffer[] | undefined;
  iov: number;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/** Per-slot state of an awaited operation; one object per slot, reused (no allocation per op). */
class OpRecord {
  resolve: (v: any) => void = noop;
  reject: (e: unknown) => void = noop;
  name = "";
  map = 0;
  extra: OpExtra | undefined = undefined;
}

function noop(): void {}

// One executor for every operation's promise: no closure is allocated per operation.
let capturedResolve: (v: any) => void = () => {};
let capturedReject: (e: unknown) => void = () => {};
function captureExecutor(resolve: (v: any) => void, reject: (e: unknown) => void): void {
  capturedResolve = resolve;
  capturedReject = reject;
}

/** Ignores a completion (async-cancel requests). */
const ignore: Completable = { complete() {} };

export interface ReactorCounters {
  turns: number;
  enters: number;
  sleeps: number;
  submitted: number;
  completed: number;
  timeoutsArmed: number;
  wakes: number;
  busyRetries: number;
  /** Wakes of other shards' reactors sent as ring messages (msgWake). */
  ringWakesSent: number;
  inFlight: number;
}

/**
 * @internal A layer that keeps state registered on a reactor's io_uring (the posix stack's
 * provided-buffer rings): destroy() asks every tenant whether it may go, then lets each give its
 * state back while the ring is still open. Neither method may throw.
 */
export interface ReactorTenant {
  /** Why the reactor cannot be destroyed now (destroy() refuses with it), or undefined. */
  busy(): string | undefined;
  /** The reactor is being destroyed: unregister and free what lives on it. */
  detach(): void;
}

/** The eventfds and ring fds of this Worker's live reactors, which close() refuses. */
const reactorFds = new Map<number, string>();
const EINVAL = 22;

/**
 * One io_uring and its descriptor/completion arrays. Obtain the shard's reactor with reactor().
 */
export class Reactor {
  readonly sqCapacity: number;
  readonly cqCapacity: number;
  readonly setupFlags: number;
  readonly eventfd: number;
  /** The io_uring's own fd (other reactors send ring messages to it). */
  readonly ringFd: number;
  /** @internal The reactor queued an SQE of its own (msgWake): the loop must turn once more. */
  nativeQueued = false;
  private handle: number;
  private readonly u32: Uint32Array;
  private readonly i32: Int32Array;
  private readonly f64: Float64Array;
  private readonly cq: Int32Array;
  private readonly counterView: BigUint64Array;
  /** The native Info: [6] is how many descriptors the last turn left queued (kernel busy). */
  private readonly info: Int32Array;
  /** @internal descriptors written this turn, not yet handed to the kernel */
  queued = 0;
  private readonly handlers: (Completable | undefined)[] = [];
  private readonly groupOf: (SchedulingGroup | undefined)[] = [];
  // Awaited operations keep their promise's functions in slot-indexed arrays (no object per op).
  private readonly records: OpRecord[] = [];
  private readonly promiseCompleter: Completable;
  /** Marks the slot of a multishot promise operation whose promise settled (never called). */
  private readonly moreCompleter: Completable;
  private readonly cancelledEarly: boolean[] = [];
  /** @internal set when dispatch settled promises directly (single-group shards) */
  settledInline = false;
  private readonly freeSlots: number[] = [];
  /** Operations handed out and not yet finally completed. */
  inFlight = 0;
  /** submitNow() calls whose enter failed (their descriptors went with the next turn). */
  submitFailures = 0;
  private closed = false;
  private readonly iovRegions: { address: number; view: Uint32Array }[] = [];
  private readonly tenants: ReactorTenant[] = [];
  private readonly freeIovBlocks: number[] = [];
  private readonly turnFn: (h: number, n: number, w: number, nowUs: number) => number;
  private readonly msgWakeFn: (h: number, ring: number, eventfd: number) => number;
  private readonly submitFn: (h: number, n: number) => number;

  constructor(options: ReactorOptions = {}) {
    const [sq, cq] = Reactor.entries(options);
    probeIoUring();
    const lib = native();
    const err = new Int32Array(1);
    const handle = lib.shoal_reactor_create(sq, cq, err) as unknown as number | null;
    if (!handle) {
      const reasons: Record<number, string> = {
        1: "io_uring is not supported by this kernel",
        2: "io_uring was refused (permission: sysctl kernel.io_uring_disabled or seccomp)",
        3: "io_uring could not allocate its rings (raise RLIMIT_MEMLOCK: ulimit -l unlimited)",
        4: "out of file descriptors (raise ulimit -n)",
        5: "io_uring rejected every setup flag combination (Shoal needs Linux 6.1+)",
        6: "io_uring lacks IORING_FEAT_EXT_ARG (Shoal needs Linux 6.1+)",
        7: "eventfd() failed",
        8: "out of memory",
      };
      throw new StartupError("ERR_REACTOR_CREATE", `could not create the reactor: ${reasons[err[0]!] ?? `code ${err[0]}`}`);
    }
    this.handle = handle;
    const info = new Int32Array(nativeView(lib.shoal_reactor_info(handle as never) as never, 28));
    this.info = info;
    this.sqCapacity = info[0]!;
    this.cqCapacity = info[1]!;
    this.setupFlags = info[2]! >>> 0;
    this.eventfd = info[4]!;
    this.ringFd = info[5]!;
    reactorFds.set(this.eventfd, "eventfd");
    reactorFds.set(this.ringFd, "io_uring fd");
    const ops = nativeView(lib.shoal_reactor_ops(handle as never) as never, this.sqCapacity * 64);
    this.u32 = new Uint32Array(ops);
    this.i32 = new Int32Array(ops);
    this.f64 = new Float64Array(ops);
    this.cq = new Int32Array(nativeView(lib.shoal_reactor_completions(handle as never) as never, this.cqCapacity * 16));
    this.counterView = new BigUint64Array(nativeView(lib.shoal_reactor_counters(handle as never) as never, 72));
    this.turnFn = lib.shoal_reactor_turn as unknown as (h: number, n: number, w: number, nowUs: number) => number;
    this.submitFn = lib.shoal_reactor_submit as unknown as (h: number, n: number) => number;
    this.msgWakeFn = lib.shoal_reactor_msg_wake as unknown as (h: number, ring: number, eventfd: number) => number;
    this.promiseCompleter = { complete: (slot: number, res: number) => this.settle(slot, res) };
    this.moreCompleter = { complete: () => {} };
  }

  /** The SQ and CQ sizes `options` ask for; throws InvalidArgumentError if they are not valid. */
  static entries(options: ReactorOptions): [number, number] {
    if (options === null || typeof options !== "object") {
      throw new InvalidArgumentError(`reactor options must be an object, got ${describeValue(options)}`);
    }
    const sq = options.sqEntries ?? 1024;
    const cq = options.cqEntries ?? Math.min(sq * 8, 65536);
    if (!Number.isInteger(sq) || sq < 2 || sq > 32768 || (sq & (sq - 1)) !== 0) {
      throw new InvalidArgumentError(`sqEntries must be a power of two in 2..32768, got ${describeValue(sq)}`);
    }
    // The kernel's limit (IORING_MAX_CQ_ENTRIES); past it io_uring_setup fails with EINVAL, which
    // read as "needs a newer kernel", and past 2^32 the FFI argument wrapped.
    if (!Number.isInteger(cq) || cq < sq || cq > 65536) {
      throw new InvalidArgumentError(`cqEntries must be an integer in sqEntries..65536, got ${describeValue(cq)}`);
    }
    return [sq, cq];
  }

  /** @internal The native handle, for layers that add their own exports (net, fs). */
  get nativeHandle(): number {
    this.checkOpen();
    return this.handle;
  }

  /** True once destroy() ran; reactor() then makes the shard a new one. */
  get isClosed(): boolean {
    return this.closed;
  }

  private checkOpen(): void {
    if (this.closed) throw new ClosedError("the reactor was closed", "ERR_REACTOR_CLOSED");
  }

  private allocSlot(h: Completable): number {
    const slot = this.freeSlots.length > 0 ? this.freeSlots.pop()! : this.handlers.length;
    this.handlers[slot] = h;
    // With one group there is nothing to tag: skip the AsyncLocalStorage read.
    this.groupOf[slot] = singleGroup.value ? defaultSchedulingGroup : currentSchedulingGroup();
    this.inFlight++;
    return slot;
  }

  /**
   * Queues one operation descriptor; it reaches the kernel at the end of this loop turn.
   * Fields follow the SQE: `addr`, `off` and `aux` are numbers (< 2^53). Returns the slot.
   * Layers above (net, fs) use this to add operations without native changes.
   */
  prepare(
    opcode: number,
    fd: number,
    addr: number,
    len: number,
    off: number,
    opFlags: number,
    handler: Completable,
    extra?: PrepareExtra,
  ): number {
    this.checkOpen();
    // A kernel that is backed up may leave descriptors queued: turn (reaping) until one fits.
    while (this.queued === this.sqCapacity) this.flush();
    const slot = this.allocSlot(handler);
    const i = this.queued++;
    const w = i << 4;
    const d = i << 3;
    const u32 = this.u32;
    if (extra === undefined) {
      u32[w] = opcode;
      u32[w + 5] = 0;
      u32[w + 6] = 0;
      this.f64[d + 6] = 0;
      this.f64[d + 7] = 0;
    } else {
      // Masked to their SQE widths: a wider value must not spill into the next field.
      u32[w] = opcode | (((extra.sqeFlags ?? 0) & 0xff) << 8) | (((extra.ioprio ?? 0) & 0xffff) << 16);
      u32[w + 5] = (extra.buf ?? 0) & 0xffff;
      u32[w + 6] = extra.fileIndex ?? 0;
      this.f64[d + 6] = extra.aux ?? 0;
      this.f64[d + 7] = extra.aux2 ?? 0;
    }
    this.i32[w + 1] = fd;
    u32[w + 2] = slot;
    u32[w + 3] = len;
    u32[w + 4] = opFlags;
    this.f64[d + 4] = addr;
    this.f64[d + 5] = off;
    ensureLoopRunning();
    return slot;
  }

  /**
   * Asks the kernel to cancel the operation in `slot`. Its handler still receives the final
   * completion (usually -ECANCELED); until then the slot and its buffers stay owned.
   * An operation still queued in this turn becomes a NOP and completes with 0.
   * Pass `owner` (the handler the operation was prepared with) when the caller may hold a stale
   * slot number: a slot is free again once its final completion was reaped, possibly before the
   * owner's handler ran, and may already belong to another operation; then nothing is cancelled.
   */
  cancelSlot(slot: number, owner?: Completable): void {
    const h = this.handlers[slot];
    if (h === undefined || (owner !== undefined && h !== owner)) return;
    for (let i = 0; i < this.queued; i++) {
      if (this.u32[(i << 4) + 2] === slot) {
        // Not yet submitted: run a NOP instead and report -ECANCELED for it.
        this.u32[i << 4] = IoOp.NOP;
        this.cancelledEarly[slot] = true;
        return;
      }
    }
    this.prepare(IoOp.ASYNC_CANCEL, -1, slot, 0, 0, 0, ignore);
  }

  /**
   * Hands the queued descriptors to the kernel now, mid-turn, without reaping completions (one
   * io_uring_enter). For latency-bound work such as storage: a device starts on a request only
   * once it is submitted, and a turn may spend tens of microseconds before its own submit.
   * Never throws for a failed enter: the descriptors then go with the turn's own enter (which
   * reports a failure that lasts).
   */
  submitNow(): void {
    if (this.queued === 0) return;
    this.checkOpen();
    const n = this.queued;
    const taken = this.submitFn(this.handle, n);
    if (taken < 0) {
      // Nothing is lost: what the kernel's SQ ring holds goes with the next enter, the rest
      // was moved to the front of the array (info[6]) and stays queued. Not thrown: the
      // caller has queued its operation, which will run; an error here told it otherwise
      // (the I/O scheduler then skipped counting it in flight, and its submit() threw for a
      // write that still happened).
      this.queued = Math.min(this.info[6]!, n);
      this.submitFailures++;
      return;
    }
    if (taken < n) {
      // The kernel is backed up (completion queue overflow): keep the rest for the turn.
      this.u32.copyWithin(0, taken << 4, n << 4);
    }
    this.queued = n - taken;
  }

  /** Descriptors queued in this turn and not yet handed to the kernel. */
  get queuedCount(): number {
    return this.queued;
  }

  /** Submits queued descriptors now (used when the descriptor array fills mid-turn). */
  flush(): void {
    this.turn(0);
  }

  /**
   * @internal One native turn: submit what is queued, optionally sleep up to `waitUs` for a
   * completion, copy out completions and queue them on their groups. Returns completions seen.
   * `nowMs` (performance.now()) is when `waitUs` was chosen: the reactor keeps one kernel timer
   * armed across sleeps and moves it only when a sleep must end before it fires.
   */
  turn(waitUs: number, nowMs: number = waitUs > 0 ? performance.now() : 0): number {
    this.checkOpen();
    this.nativeQueued = false;
    // The native wait is a u32 of µs: a longer one (a huge configured slice) would wrap.
    let n = this.turnFn(this.handle, this.queued, waitUs > 0x7fff_ffff ? 0x7fff_ffff : waitUs, nowMs * 1000);
    // Descriptors the kernel would not take (its completion queue backed up, or an enter that
    // failed) were moved to the front of the array: they stay queued for the next turn.
    this.queued = n < 0 ? Math.min(this.info[6]!, this.queued) : this.info[6]!;
    if (n < 0) throw new SystemError("io_uring_enter", -n);
    let total = n;
    this.dispatch(n);
    while (n === this.cqCapacity) {
      n = this.turnFn(this.handle, this.queued, 0, 0);
      this.queued = n < 0 ? Math.min(this.info[6]!, this.queued) : this.info[6]!;
      if (n < 0) throw new SystemError("io_uring_enter", -n);
      this.dispatch(n);
      total += n;
    }
    return total;
  }

  private dispatch(n: number): void {
    const cq = this.cq;
    for (let i = 0; i < n; i++) {
      const j = i << 2;
      const slot = cq[j]!;
      let res = cq[j + 1]!;
      const flags = cq[j + 2]!;
      if (this.cancelledEarly[slot] === true) {
        this.cancelledEarly[slot] = false;
        res = -ECANCELED;
      }
      const h = this.handlers[slot];
      // Nothing owns the slot: no operation can complete there (a guard, not a path).
      if (h === undefined) continue;
      const g = this.groupOf[slot]!;
      if ((flags & CQE_F_MORE) !== 0 && (h === this.promiseCompleter || h === this.moreCompleter)) {
        // A multishot operation issued through the promise API (submit() with a multishot
        // flag): its promise takes the first completion; the slot, its buffers and its
        // listener stay the operation's until the final one (a later one settled whichever
        // operation had reused the slot).
        if (h === this.promiseCompleter) {
          this.settleOnly(slot, res);
          this.handlers[slot] = this.moreCompleter;
        }
        continue;
      }
      if (h === this.moreCompleter) {
        this.inFlight--;
        this.settle(slot, res); // its promise has settled: this frees the slot and its extras
        continue;
      }
      if (h === this.promiseCompleter) {
        if (singleGroup.value) {
          // Only one scheduling group exists: nothing to order, settle now.
          this.inFlight--;
          this.settledInline = true;
          this.settle(slot, res);
          continue;
        }
        // The slot is freed when the promise settles, in its group's turn.
        this.inFlight--;
        enqueue(g, h, slot, res);
        continue;
      }
      if ((flags & CQE_F_MORE) === 0) {
        this.handlers[slot] = undefined;
        this.groupOf[slot] = undefined;
        this.freeSlots.push(slot);
        this.inFlight--;
      }
      enqueue(g, h, res, flags);
    }
  }

  /** Native counters plus in-flight operations. Reading costs a few BigInt conversions. */
  counters(): ReactorCounters {
    this.checkOpen();
    const c = this.counterView;
    return {
      turns: Number(c[0]),
      enters: Number(c[1]),
      sleeps: Number(c[2]),
      submitted: Number(c[3]),
      completed: Number(c[4]),
      timeoutsArmed: Number(c[5]),
      wakes: Number(c[6]),
      busyRetries: Number(c[7]),
      ringWakesSent: Number(c[8]),
      inFlight: this.inFlight,
    };
  }

  /**
   * @internal Wakes another reactor (ring fd `targetRingFd`, eventfd `targetEventfd`) with a
   * ring message that leaves with this reactor's next enter, at the end of this loop
   * iteration: no syscall of its own, unlike wake(). If the message cannot be delivered the
   * reactor writes the target's eventfd instead. Returns false when this reactor's SQ is full
   * (then call wake()).
   */
  msgWake(targetRingFd: number, targetEventfd: number): boolean {
    this.checkOpen();
    if (this.msgWakeFn(this.handle, targetRingFd, targetEventfd) !== 0) return false;
    this.nativeQueued = true;
    return true;
  }

  /**
   * Wakes this reactor from another thread or Worker (writes its eventfd). Throws
   * InvalidArgumentError for a number that is not a live reactor's eventfd.
   */
  static wake(eventfd: number): void {
    // bun:ffi converts to the i32 by truncating and wrapping: 1.5 or 2^32 + 1 wrote to stdout.
    Reactor.checkFd("wake", eventfd);
    const rc = native().shoal_eventfd_wake(eventfd);
    // Native refuses any number that is not a live reactor's eventfd (a pipe got the 8-byte
    // counter): the caller's mistake, not a failure of the system.
    if (rc === -EINVAL) throw new InvalidArgumentError(`wake: ${eventfd} is not the eventfd of a live reactor (destroyed, or never one)`);
    if (rc < 0) throw new SystemError("eventfd write", -rc);
  }

  /** @internal Runs the pure-native nop baseline. */
  benchNativeNops(total: number, batch: number): void {
    this.checkOpen();
    if (!Number.isInteger(total) || total < 0 || total > 0xffff_ffff || !Number.isInteger(batch) || batch < 1 || batch > this.sqCapacity) {
      throw new InvalidArgumentError(`benchNativeNops: total must be a u32 and batch in 1..${this.sqCapacity}`);
    }
    const rc = native().shoal_bench_nops(this.handle as never, total, batch);
    if (rc < 0) throw new SystemError("bench_nops", -rc);
  }

  // ---- awaited operations -------------------------------------------------------------------

  private start(
    name: string,
    map: ResultMap,
    opts: OpOptions | undefined,
    opcode: number,
    fd: number,
    addr: number,
    len: number,
    off: number,
    opFlags: number,
    buffers?: NativeBuffer | NativeBuffer[],
    iov = -1,
    extra?: PrepareExtra,
  ): Promise<any> {
    const signal = opts?.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      // Before anything is queued: a bad signal must not leave an operation behind.
      if (iov >= 0) this.freeIov(iov);
      throw new InvalidArgumentError(`${name}: signal must be an AbortSignal, got ${signal === null ? "null" : typeof signal}`);
    }
    // Reading `signal` may have run a getter that released a buffer checked before.
    if (buffers !== undefined && signal !== undefined) {
      try {
        if (buffers instanceof NativeBuffer) buffers.check(`${name}: buffer`);
        else for (let i = 0; i < buffers.length; i++) buffers[i]!.check(`${name}: buffer`);
      } catch (e) {
        if (iov >= 0) this.freeIov(iov);
        throw e;
      }
    }
    if (signal?.aborted) {
      if (iov >= 0) this.freeIov(iov);
      return Promise.reject(new AbortError(`${name} was aborted`, { cause: signal.reason }));
    }
    const p = new Promise(captureExecutor);
    const slot = this.prepare(opcode, fd, addr, len, off, opFlags, this.promiseCompleter, extra);
    let rec = this.records[slot];
    if (rec === undefined) rec = this.records[slot] = new OpRecord();
    rec.resolve = capturedResolve;
    rec.reject = capturedReject;
    rec.name = name;
    rec.map = map;
    if (buffers === undefined && signal === undefined && iov < 0) {
      rec.extra = undefined;
      return p;
    }
    const x: OpExtra = { buffers, iov, signal, onAbort: undefined };
    rec.extra = x;
    if (buffers !== undefined) {
      if (buffers instanceof NativeBuffer) buffers.pin();
      else for (let i = 0; i < buffers.length; i++) buffers[i]!.pin();
    }
    if (signal !== undefined) {
      x.onAbort = () => this.cancelSlot(slot);
      signal.addEventListener("abort", x.onAbort, { once: true });
    }
    return p;
  }

  /** Settles a multishot operation's promise with its first completion; the slot stays. */
  private settleOnly(slot: number, res: number): void {
    const rec = this.records[slot]!;
    const resolve = rec.resolve;
    const reject = rec.reject;
    rec.resolve = noop;
    rec.reject = noop;
    const signal = rec.extra?.signal;
    if (signal?.aborted && res === -ECANCELED) reject(new AbortError(`${rec.name} was aborted`, { cause: signal.reason }));
    else if (res >= 0) resolve(rec.map === 0 ? res : undefined);
    else if (res === -ETIME && rec.map === 2) resolve(undefined);
    else reject(errorFromResult(rec.name, res));
  }

  /** Settles an awaited operation's promise with the kernel's final result and frees its slot. */
  private settle(slot: number, res: number): void {
    const rec = this.records[slot]!;
    const resolve = rec.resolve;
    const reject = rec.reject;
    const map = rec.map;
    const x = rec.extra;
    const name = rec.name;
    rec.resolve = noop;
    rec.reject = noop;
    this.handlers[slot] = undefined;
    this.groupOf[slot] = undefined;
    this.freeSlots.push(slot);
    if (x === undefined) {
      if (res >= 0) resolve(map === 0 ? res : undefined);
      else if (res === -ETIME && map === 2) resolve(undefined);
      else reject(errorFromResult(name, res));
      return;
    }
    rec.extra = undefined;
    const b = x.buffers;
    if (b !== undefined) {
      if (b instanceof NativeBuffer) b.unpin();
      else for (let i = 0; i < b.length; i++) b[i]!.unpin();
    }
    if (x.iov >= 0) this.freeIov(x.iov);
    const signal = x.signal;
    if (signal !== undefined) signal.removeEventListener("abort", x.onAbort!);
    if (signal?.aborted && res === -ECANCELED) {
      reject(new AbortError(`${name} was aborted`, { cause: signal.reason }));
    } else if (res >= 0) {
      resolve(map === 0 ? res : undefined);
    } else if (res === -ETIME && map === 2) {
      resolve(undefined);
    } else {
      reject(errorFromResult(name, res));
    }
  }

  /**
   * Issues any io_uring operation as an awaited promise: the generic counterpart of read/write
   * for layers above the core (fs: openat, statx, fallocate...). Arguments are the SQE fields as
   * in prepare(). `buffers` stay pinned (their release deferred) until the kernel's final
   * completion, so put every piece of native memory the kernel reads or writes (paths, statx
   * structs, data) there. Resolves with the result (>= 0); rejects with SystemError naming
   * `name`, or AbortError when `opts.signal` cancelled it. Costs one slot and one descriptor;
   * no FFI call until the loop's next turn. Throws ClosedError if the reactor was destroyed.
   */
  submit(
    name: string,
    opcode: number,
    fd: number,
    addr: number,
    len: number,
    off: number,
    opFlags: number,
    opts?: OpOptions,
    buffers?: NativeBuffer | NativeBuffer[],
    extra?: PrepareExtra,
  ): Promise<number> {
    Reactor.checkSubmit(name, opcode, fd, addr, len, off, opFlags, buffers);
    return this.start(name, 0, opts, opcode, fd, addr, len, off, opFlags, buffers, -1, extra);
  }

  /**
   * submit()'s arguments, before anything is queued: a descriptor field holds its SQE width (NaN
   * was stored as 0, an fd of stdin, an opcode of NOP), and every buffer is a NativeBuffer not
   * released (a released one was read into after its next owner got it; anything else threw in
   * the loop when the completion unpinned it).
   */
  private static checkSubmit(
    name: string,
    opcode: number,
    fd: number,
    addr: number,
    len: number,
    off: number,
    opFlags: number,
    buffers: NativeBuffer | NativeBuffer[] | undefined,
  ): void {
    if (typeof name !== "string") throw new InvalidArgumentError(`submit: name must be a string, got ${describeValue(name)}`);
    const field = (what: string, v: number, min: number, max: number) => {
      if (!Number.isInteger(v) || v < min || v > max) {
        throw new InvalidArgumentError(`${name}: ${what} must be an integer in ${min}..${max}, got ${describeValue(v)}`);
      }
    };
    field("opcode", opcode, 0, 255);
    field("fd", fd, -0x8000_0000, 0x7fff_ffff);
    field("addr", addr, 0, Number.MAX_SAFE_INTEGER);
    field("len", len, 0, 0xffff_ffff);
    field("off", off, -1, Number.MAX_SAFE_INTEGER);
    field("opFlags", opFlags, -0x8000_0000, 0xffff_ffff);
    if (buffers === undefined) return;
    if (buffers instanceof NativeBuffer) {
      buffers.check(`${name}: buffer`);
      return;
    }
    if (!Array.isArray(buffers)) {
      throw new InvalidArgumentError(`${name}: buffers must be a NativeBuffer or an array of them, got ${describeValue(buffers)}`);
    }
    for (let i = 0; i < buffers.length; i++) {
      const b = buffers[i];
      if (!(b instanceof NativeBuffer)) {
        throw new InvalidArgumentError(`${name}: buffers[${i}] must be a NativeBuffer, got ${describeValue(b)}`);
      }
      b.check(`${name}: buffer`);
    }
  }

  /** A no-op through the kernel; resolves when its completion is delivered. */
  nop(opts?: OpOptions): Promise<void> {
    return this.start("nop", 1, opts, IoOp.NOP, -1, 0, 0, 0, 0);
  }

  /** A kernel timeout (IORING_OP_TIMEOUT) of `ms`. Prefer Timer/sleep: they share one kernel wait. */
  timeout(ms: number, opts?: OpOptions): Promise<void> {
    // Up to about 285 years: the seconds must fit the kernel's timespec (s64) exactly.
    if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0 || ms > MAX_TIMEOUT_MS) {
      throw new InvalidArgumentError(`timeout: ms must be a number from 0 to ${MAX_TIMEOUT_MS}, got ${describeValue(ms)}`);
    }
    const ns = Math.round(ms * 1e6);
    const sec = Math.floor(ns / 1e9);
    return this.start("timeout", 2, opts, IoOp.TIMEOUT, -1, 0, 0, 0, 0, undefined, -1, {
      aux: sec,
      aux2: ns - sec * 1e9,
    });
  }

  private static checkFd(op: string, fd: number): void {
    // The descriptor holds an s32, as the kernel's fds are: a larger number would wrap to a low fd.
    if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) {
      throw new InvalidArgumentError(`${op}: fd must be an integer from 0 to 2^31-1, got ${describeValue(fd)}`);
    }
  }

  private static range(op: string, buf: NativeBuffer, opts: RwOptions | undefined): [number, number, number] {
    if (!(buf instanceof NativeBuffer)) {
      throw new InvalidArgumentError(`${op}: buffer must be a NativeBuffer (native memory from a BufferPool or allocateAlignedBuffer)`);
    }
    if (opts !== undefined && (typeof opts !== "object" || opts === null)) {
      throw new InvalidArgumentError(`${op}: options must be an object, got ${describeValue(opts)}`);
    }
    // Every option is read (getters run) before the buffer is checked and used.
    const start = opts?.bufferOffset ?? 0;
    const lengthOpt = opts?.length;
    const offset = opts?.offset ?? -1;
    if (!Number.isInteger(start) || (start as number) < 0 || (start as number) > buf.length) {
      throw new InvalidArgumentError(`${op}: bufferOffset ${describeValue(start)} outside a ${buf.length}-byte buffer`);
    }
    const length = lengthOpt ?? buf.length - start;
    if (!Number.isInteger(length) || length < 0 || start + length > buf.length || length > 0x7fff_f000) {
      throw new InvalidArgumentError(`${op}: length ${describeValue(length)} at ${start} exceeds a ${buf.length}-byte buffer (or 0x7ffff000, one transfer's limit)`);
    }
    if (!Number.isSafeInteger(offset) || offset < -1) {
      throw new InvalidArgumentError(`${op}: offset must be an integer >= 0, or -1 for the current position; got ${describeValue(offset)}`);
    }
    buf.check(`${op}: buffer`);
    return [buf.address + start, length, offset];
  }

  /** Reads into `buf` (native memory). Resolves with bytes read (0 at end of file). */
  read(fd: number, buf: NativeBuffer, opts?: RwOptions): Promise<number> {
    Reactor.checkFd("read", fd);
    const [addr, len, off] = Reactor.range("read", buf, opts);
    return this.start("read", 0, opts, IoOp.READ, fd, addr, len, off, 0, buf);
  }

  /** Writes from `buf` (native memory). Resolves with bytes written (may be short). */
  write(fd: number, buf: NativeBuffer, opts?: RwOptions): Promise<number> {
    Reactor.checkFd("write", fd);
    const [addr, len, off] = Reactor.range("write", buf, opts);
    return this.start("write", 0, opts, IoOp.WRITE, fd, addr, len, off, 0, buf);
  }

  /** Scatter read into up to 64 whole buffers. Resolves with total bytes read. */
  readv(fd: number, bufs: NativeBuffer[], opts?: OpOptions & { offset?: number }): Promise<number> {
    return this.vector("readv", IoOp.READV, fd, bufs, opts);
  }

  /** Gather write from up to 64 whole buffers. Resolves with total bytes written (may be short). */
  writev(fd: number, bufs: NativeBuffer[], opts?: OpOptions & { offset?: number }): Promise<number> {
    return this.vector("writev", IoOp.WRITEV, fd, bufs, opts);
  }

  private vector(name: string, opcode: number, fd: number, bufs: NativeBuffer[], opts?: OpOptions & { offset?: number }): Promise<number> {
    Reactor.checkFd(name, fd);
    if (!Array.isArray(bufs) || bufs.length === 0 || bufs.length > IOV_BLOCK) {
      throw new InvalidArgumentError(`${name}: expected 1..${IOV_BLOCK} buffers`);
    }
    if (opts !== undefined && (typeof opts !== "object" || opts === null)) {
      throw new InvalidArgumentError(`${name}: options must be an object, got ${describeValue(opts)}`);
    }
    const offset = opts?.offset ?? -1;
    if (!Number.isSafeInteger(offset) || offset < -1) {
      throw new InvalidArgumentError(`${name}: offset must be an integer >= 0, or -1; got ${describeValue(offset)}`);
    }
    for (const b of bufs) {
      if (!(b instanceof NativeBuffer)) throw new InvalidArgumentError(`${name}: every buffer must be a NativeBuffer`);
      b.check(`${name}: buffer`);
    }
    const block = this.allocIov();
    const region = this.iovRegions[block >> 6]!;
    // struct iovec { u64 base; u64 len; } as four u32 words (little endian), no BigInt.
    const base = (block & 63) * IOV_BLOCK * 4;
    const w = region.view;
    for (let i = 0; i < bufs.length; i++) {
      const a = bufs[i]!.address;
      const len = bufs[i]!.length;
      const j = base + i * 4;
      w[j] = a >>> 0;
      w[j + 1] = Math.floor(a / 0x1_0000_0000);
      // iov_len is 64-bit: a 4 GiB buffer's low word alone is 0 (it moved nothing). The kernel
      // moves at most 0x7ffff000 bytes per call; the result says how many.
      w[j + 2] = len >>> 0;
      w[j + 3] = Math.floor(len / 0x1_0000_0000);
    }
    const addr = region.address + base * 4;
    return this.start(name, 0, opts, opcode, fd, addr, bufs.length, offset, 0, bufs.slice(), block);
  }

  private allocIov(): number {
    if (this.freeIovBlocks.length === 0) {
      const bytes = 64 * IOV_BLOCK * 16; // 64 blocks of 64 iovecs
      const address = mapNative(bytes);
      if (address < 0) throw new SystemError("mmap (iovec arena)", -address);
      const index = this.iovRegions.length;
      this.iovRegions.push({ address, view: new Uint32Array(nativeView(address, bytes)) });
      for (let i = 63; i >= 0; i--) this.freeIovBlocks.push(index * 64 + i);
    }
    return this.freeIovBlocks.pop()!;
  }

  /** @internal */
  freeIov(block: number): void {
    this.freeIovBlocks.push(block);
  }

  /** Waits until `fd` is ready for `events` (POLLIN=1, POLLOUT=4, ...). Resolves with revents. */
  poll(fd: number, events: number, opts?: OpOptions): Promise<number> {
    Reactor.checkFd("poll", fd);
    if (!Number.isInteger(events) || events <= 0 || events > 0xffff) {
      throw new InvalidArgumentError(`poll: events must be a non-zero poll mask, got ${describeValue(events)}`);
    }
    return this.start("poll", 0, opts, IoOp.POLL_ADD, fd, 0, 0, 0, events);
  }

  /**
   * Closes `fd` through the ring. Throws InvalidArgumentError for a live reactor's own eventfd or
   * io_uring fd (of this Worker's reactors).
   */
  close(fd: number): Promise<void> {
    Reactor.checkFd("close", fd);
    // Closing a reactor's eventfd or ring fd succeeded: the reactor could no longer be woken, and
    // the number went to the next file opened (which wakes then wrote into).
    const own = reactorFds.get(fd);
    if (own !== undefined) throw new InvalidArgumentError(`close: fd ${fd} is a live reactor's ${own} (its destroy() closes it)`);
    return this.start("close", 1, undefined, IoOp.CLOSE, fd, 0, 0, 0, 0);
  }

  /** @internal `t` keeps state on this reactor's ring until destroy() (see ReactorTenant). */
  addTenant(t: ReactorTenant): void {
    this.checkOpen();
    if (!this.tenants.includes(t)) this.tenants.push(t);
  }

  /**
   * @internal Destroys the native reactor; only when nothing is in flight and no tenant holds
   * it (InvalidArgumentError). Tenants give back what they registered on the ring first (the
   * posix stack's buffer rings stayed registered on the dead ring, and the stack went on
   * receiving from a group the shard's next reactor never had).
   */
  destroy(): void {
    if (this.closed) return;
    if (this.inFlight > 0) throw new InvalidArgumentError(`reactor has ${this.inFlight} operation(s) in flight`);
    for (const t of this.tenants) {
      const why = t.busy();
      if (why !== undefined) throw new InvalidArgumentError(`reactor is in use: ${why}`);
    }
    for (const t of this.tenants) t.detach();
    this.tenants.length = 0;
    this.closed = true;
    // Detach the views first (no copy): a late read of counters or descriptors must not touch
    // freed memory.
    for (const view of [this.u32, this.cq, this.counterView, ...this.iovRegions.map((r) => r.view)]) {
      const b = view.buffer as ArrayBuffer;
      if (!b.detached) b.transfer();
    }
    native().shoal_reactor_destroy(this.handle as never);
    reactorFds.delete(this.eventfd);
    reactorFds.delete(this.ringFd);
    for (const r of this.iovRegions) native().shoal_mem_unmap(r.address, 64 * IOV_BLOCK * 16);
    // The shard's own reactor: the next use (the loop's next turn, a timer's sleep) makes a new
    // one, instead of failing every turn with ClosedError.
    if (instance === this) instance = undefined;
  }
}

/** Longest kernel timeout Reactor.timeout() takes: 2^53 ns, so the nanoseconds stay exact. */
const MAX_TIMEOUT_MS = 2 ** 53 / 1e6;

let instance: Reactor | undefined;
let pendingOptions: ReactorOptions = {};

/**
 * Sets options for this shard's reactor; only before its first use. Throws InvalidArgumentError
 * for invalid options here, not at the reactor's creation (the loop's first turn, where it was
 * an uncaught exception and the work that started the loop waited forever).
 */
export function configureReactor(options: ReactorOptions): void {
  if (instance) throw new InvalidArgumentError("configureReactor: the reactor already started");
  Reactor.entries(options);
  pendingOptions = { ...options };
}

/** This shard's reactor, created on first use (probing io_uring; throws StartupError with the fix). */
export function reactor(): Reactor {
  return instance ?? (instance = new Reactor(pendingOptions));
}

/** @internal True once the reactor exists. */
export function hasReactor(): boolean {
  return instance !== undefined;
}
