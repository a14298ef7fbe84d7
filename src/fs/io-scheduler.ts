/**
 * The I/O scheduler (Seastar's io_queue and fair_queue, per shard). Every DMA read and write
 * enters the queue of its device; the queue decides when it reaches the ring.
 *
 * - Cost: a request's estimated device time in seconds, from the disk's io-properties:
 *   max(1 / iops, bytes / bandwidth) for its direction. Without properties a generic model
 *   (100k IOPS, 1 GB/s) gives the relative weights, and nothing is throttled.
 * - Capacity: a queue dispatches while the estimated device time of what is in flight stays
 *   below the latency goal (x this shard's share of the device), and at most `maxInFlight`
 *   requests. By Little's law that keeps the device busy while bounding how long a new request
 *   waits behind others in the device. Completions free capacity, so no timer is needed.
 * - Fairness: each scheduling group has a class with a virtual cost; the queue dispatches from
 *   the backlogged class with the least virtual cost and charges it cost / shares. Groups that
 *   keep the device busy therefore get device time in proportion to their shares; a group that
 *   was idle starts at the current virtual time, so it cannot hoard credit.
 * - Requests larger than `maxRequestSize` (default 128 KiB, Seastar's, and never more than the
 *   device's own limit, queue/max_sectors_kb) are split into pieces that queue (and share) on
 *   their own; the caller sees one result.
 * - Cheap on the hot path: a request is one object that is also its reactor slot's completion
 *   handler, and one promise (the caller's); no promise per kernel operation, no reaction chain.
 */
import { reactor, IoOp, type OpOptions } from "../core/reactor.ts";
import { NativeBuffer } from "../core/buffers.ts";
import { AbortError, InvalidArgumentError, SystemError, errorFromResult } from "../core/errors.ts";
import { currentSchedulingGroup, withSchedulingGroup, type Completable, type SchedulingGroup } from "../core/scheduler.ts";
import { checkDiskProperties, parseIoProperties, type DiskProperties } from "./io-properties.ts";
import { statx } from "./ops.ts";
import { readSmallFile } from "./small-file.ts";
import { describeValue } from "../core/describe.ts";

/** Options of configureIoScheduler(). */
export interface IoSchedulerOptions {
  /** Disk capacities (as parsed by parseIoProperties), or the path of an io-properties file. */
  properties?: readonly DiskProperties[] | string | undefined;
  /** How much device time may be in flight, in ms (default 1.5): bounds the queueing in the device. */
  latencyGoalMs?: number | undefined;
  /** Larger requests are split into pieces of this many bytes (multiple of 4096; default 128 KiB). */
  maxRequestSize?: number | undefined;
  /** At most this many requests in flight per device (default 128). */
  maxInFlight?: number | undefined;
  /** The fraction (0, 1] of each disk's capacity this shard may use (1 / shards; default 1). */
  shareOfDevice?: number | undefined;
  /**
   * Hand requests to the kernel as soon as this many descriptors are queued in a turn, instead
   * of at the turn's end (default 4; 0: only at the turn's end). A device starts on a request
   * only once it is submitted: on a virtio disk, 4 KiB random writes at queue depth 32 ran at
   * ~83k IOPS with one submit per turn against ~97-104k with a submit every 1-4 requests.
   */
  submitBatch?: number | undefined;
}

/** I/O statistics of one scheduling group on one device queue. */
export interface IoClassStats {
  group: string;
  shares: number;
  /** Requests (pieces) completed, their bytes, and their estimated device time in seconds. */
  requests: number;
  bytes: number;
  deviceSeconds: number;
  /** Requests waiting in the scheduler now. */
  queued: number;
}

/** Statistics of one device queue. */
export interface IoQueueStats {
  device: string;
  /** True when io-properties describe this device (dispatch is capacity-limited). */
  throttled: boolean;
  inFlight: number;
  maxInFlight: number;
  /** Requests waiting in the scheduler now. */
  queued: number;
  /** Requests (pieces) that reached the ring, and how many of them had to wait first. */
  dispatched: number;
  dispatchedAfterWait: number;
  /** Requests split because they were larger than maxRequestSize, and the pieces they became. */
  splits: number;
  pieces: number;
  classes: IoClassStats[];
}

const DEFAULT_MODEL = { readIops: 100_000, readBandwidth: 1e9, writeIops: 100_000, writeBandwidth: 1e9 };

const config = {
  disks: [] as { props: DiskProperties; major: number; minor: number }[],
  latencyGoalMs: 1.5,
  maxRequestSize: 128 * 1024,
  maxInFlight: 128,
  shareOfDevice: 1,
  submitBatch: 4,
};

/** Who issued a request: told when each piece starts and finishes (DmaFile counts them for close()). */
export interface IoOwner {
  ioStarted(): void;
  ioFinished(): void;
}

const ECANCELED = 125;
const EIO = 5;
const QUEUED = 0;
const IN_FLIGHT = 1;
const SETTLED = 2;

// One executor for every request's promise: no closure per request (as in the reactor).
let capturedResolve: (n: number) => void = () => {};
let capturedReject: (e: unknown) => void = () => {};
function captureExecutor(resolve: (n: number) => void, reject: (e: unknown) => void): void {
  capturedResolve = resolve;
  capturedReject = reject;
}

/**
 * One request from submission to its promise settling. It is the reactor slot's completion
 * handler itself, so a request costs one object and one promise: no promise per kernel
 * operation and no reaction chain between the kernel's completion and the caller.
 */
class IoRequest implements Completable {
  state = QUEUED;
  slot = -1;
  /** Bytes already moved by earlier parts of a write that came back short. */
  done = 0;
  onAbort: (() => void) | undefined = undefined;
  resolve: (n: number) => void = capturedResolve;
  reject: (e: unknown) => void = capturedReject;
  constructor(
    readonly queue: IoQueue,
    readonly cls: IoClass,
    readonly name: string,
    readonly opcode: number,
    readonly fd: number,
    public addr: number,
    public len: number,
    public pos: number,
    public cost: number,
    readonly signal: AbortSignal | undefined,
    readonly buffers: NativeBuffer | NativeBuffer[] | undefined,
    readonly owner: IoOwner | undefined,
    /** > 0: a short write is continued while its length stays a multiple of this. */
    readonly continueAlign: number,
  ) {}

  complete(res: number): void {
    this.queue.completed(this, res);
  }
}

/** One scheduling group's share of a device queue. */
class IoClass {
  vcost = 0;
  active = false;
  live = 0;
  head = 0;
  queue: IoRequest[] = [];
  requests = 0;
  bytes = 0;
  deviceSeconds = 0;
  constructor(readonly group: SchedulingGroup) {}
}

function pinAll(b: NativeBuffer | NativeBuffer[] | undefined, pin: boolean): void {
  if (b === undefined) return;
  if (b instanceof NativeBuffer) pin ? b.pin() : b.unpin();
  else for (let i = 0; i < b.length; i++) pin ? b[i]!.pin() : b[i]!.unpin();
}

/**
 * The queue of one device on this shard. Obtain it with ioScheduler().queueFor(); DmaFile
 * sends its reads and writes here.
 */
export class IoQueue {
  readonly deviceMajor: number;
  readonly deviceMinor: number;
  private props: DiskProperties | undefined;
  private model = DEFAULT_MODEL;
  private budget = Infinity;
  private maxInFlight = config.maxInFlight;
  /** Requests larger than this are split: the configured size, capped by the device's limit. */
  maxRequestSize = config.maxRequestSize;
  /** The device's largest request (queue/max_sectors_kb), once probed; Infinity if unknown. */
  private deviceMaxBytes = Infinity;
  private probed: Promise<void> | undefined;
  private inFlight = 0;
  private outstanding = 0;
  private queued = 0;
  private vtime = 0;
  private readonly classes: (IoClass | undefined)[] = [];
  private readonly active: IoClass[] = [];
  private dispatched = 0;
  private dispatchedAfterWait = 0;
  private splits = 0;
  private pieces = 0;

  /** @internal */
  constructor(major: number, minor: number) {
    this.deviceMajor = major;
    this.deviceMinor = minor;
    this.reconfigure();
  }

  /** @internal Applies the current configuration (properties matched by device number). */
  reconfigure(): void {
    const disk = config.disks.find((d) => d.major === this.deviceMajor && d.minor === this.deviceMinor);
    this.props = disk?.props;
    this.model = disk?.props ?? DEFAULT_MODEL;
    this.budget = disk ? (config.latencyGoalMs / 1000) * config.shareOfDevice : Infinity;
    this.maxInFlight = config.maxInFlight;
    this.maxRequestSize = Math.min(config.maxRequestSize, this.deviceMaxBytes);
    if (this.queued > 0) this.pump();
  }

  /**
   * @internal Reads the device's request size limit from sysfs once (openFileDma awaits it).
   * A device without one (tmpfs, overlay's anonymous devices) keeps the configured size.
   */
  probeDevice(): Promise<void> {
    return (this.probed ??= (async () => {
      const base = `/sys/dev/block/${this.deviceMajor}:${this.deviceMinor}`;
      // A partition has no queue of its own: its disk's is one level up.
      for (const path of [`${base}/queue/max_sectors_kb`, `${base}/../queue/max_sectors_kb`]) {
        try {
          const kib = Number.parseInt(await readSmallFile(path), 10);
          if (Number.isSafeInteger(kib) && kib >= 4) {
            this.deviceMaxBytes = Math.floor((kib * 1024) / 4096) * 4096;
            break;
          }
        } catch {
          // Not a block device (or no sysfs): nothing to cap.
        }
      }
      this.reconfigure();
    })());
  }

  /** The io-properties this queue runs under, if any. */
  get properties(): DiskProperties | undefined {
    return this.props;
  }

  /** Estimated device time (s) of a request of `bytes` in direction `write`. */
  cost(write: boolean, bytes: number): number {
    const m = this.model;
    return write ? Math.max(1 / m.writeIops, bytes / m.writeBandwidth) : Math.max(1 / m.readIops, bytes / m.readBandwidth);
  }

  /**
   * Queues a read or write of `len` bytes at `addr` to `fd` at file offset `pos`, split into
   * pieces of at most maxRequestSize. Resolves with the bytes transferred: the sum of the pieces
   * up to the first short one. A write that comes back short is continued while the part done
   * is a multiple of `writeAlign` (else it rejects with EIO). `buffers` stay pinned until every
   * piece finished. Callers validate arguments; this only schedules.
   */
  submitRw(name: string, write: boolean, fd: number, addr: number, len: number, pos: number, opts: OpOptions | undefined, buffers: NativeBuffer | NativeBuffer[], owner?: IoOwner, writeAlign = 0): Promise<number> {
    const opcode = write ? IoOp.WRITE : IoOp.READ;
    const align = write ? writeAlign : 0;
    const max = this.maxRequestSize;
    if (len <= max) return this.submit(name, opcode, fd, addr, len, pos, this.cost(write, len), opts, buffers, owner, align);
    this.splits++;
    const parts: Promise<number>[] = [];
    const sizes: number[] = [];
    for (let done = 0; done < len; done += max) {
      const n = Math.min(max, len - done);
      sizes.push(n);
      this.pieces++;
      parts.push(this.submit(name, opcode, fd, addr + done, n, pos + done, this.cost(write, n), opts, buffers, owner, align));
    }
    // Every piece must settle before the buffers may be reused, even when one fails early.
    return Promise.allSettled(parts).then((results) => {
      let total = 0;
      for (let i = 0; i < results.length; i++) {
        const r = results[i]!;
        if (r.status === "rejected") throw r.reason;
        total += r.value;
        if (r.value < sizes[i]!) break; // end of file: later pieces do not count
      }
      return total;
    });
  }

  /**
   * Queues one operation as it will reach the ring (no splitting), with `cost` its estimated
   * device time (see cost()). Dispatches at once when nothing is waiting and capacity allows.
   * Resolves with the kernel's result; rejects with SystemError, or AbortError when
   * `opts.signal` fired while it waited here or the kernel cancelled it.
   */
  submit(name: string, opcode: number, fd: number, addr: number, len: number, pos: number, cost: number, opts: OpOptions | undefined, buffers: NativeBuffer | NativeBuffer[] | undefined, owner?: IoOwner, continueAlign = 0): Promise<number> {
    const signal = opts?.signal;
    if (signal?.aborted) return Promise.reject(new AbortError(`${name} was aborted`, { cause: signal.reason }));
    const group = currentSchedulingGroup();
    const cls = this.classes[group.id] ?? (this.classes[group.id] = new IoClass(group));
    const p = new Promise<number>(captureExecutor);
    const req = new IoRequest(this, cls, name, opcode, fd, addr, len, pos, cost, signal, buffers, owner, continueAlign);
    // Pinned until the final completion: a release() meanwhile waits for the kernel.
    pinAll(buffers, true);
    owner?.ioStarted();
    if (signal !== undefined) {
      req.onAbort = () => this.abort(req);
      signal.addEventListener("abort", req.onAbort, { once: true });
    }
    if (this.queued === 0 && this.canDispatch(cost)) this.dispatch(req, false);
    else this.enqueue(req);
    return p;
  }

  private enqueue(req: IoRequest): void {
    const cls = req.cls;
    req.state = QUEUED;
    cls.queue.push(req);
    cls.live++;
    this.queued++;
    if (!cls.active) this.activate(cls);
  }

  private canDispatch(cost: number): boolean {
    if (this.inFlight === 0) return true;
    return this.inFlight < this.maxInFlight && this.outstanding + cost <= this.budget;
  }

  private activate(cls: IoClass): void {
    cls.active = true;
    if (cls.vcost < this.vtime) cls.vcost = this.vtime;
    this.active.push(cls);
  }

  private deactivate(cls: IoClass): void {
    cls.active = false;
    cls.queue.length = 0;
    cls.head = 0;
    const i = this.active.indexOf(cls);
    this.active[i] = this.active[this.active.length - 1]!;
    this.active.pop();
  }

  private charge(cls: IoClass, cost: number): void {
    // A class dispatching without a backlog also starts no earlier than the virtual time.
    if (cls.vcost < this.vtime) cls.vcost = this.vtime;
    this.vtime = cls.vcost;
    cls.vcost += cost / cls.group.shares;
  }

  /** Hands `req` to the reactor: its descriptor reaches the kernel at the end of this loop turn. */
  private dispatch(req: IoRequest, waited: boolean): void {
    const cls = req.cls;
    const r = reactor();
    try {
      // The reactor tags the slot with the current group; when a completion of another group
      // freed the capacity, issue the request in its own group.
      req.slot = currentSchedulingGroup() === cls.group
        ? r.prepare(req.opcode, req.fd, req.addr, req.len, req.pos, 0, req)
        : withSchedulingGroup(cls.group, () => r.prepare(req.opcode, req.fd, req.addr, req.len, req.pos, 0, req));
    } catch (e) {
      this.settle(req, 0, e); // the reactor was destroyed
      return;
    }
    const early = config.submitBatch;
    if (early > 0 && r.queuedCount >= early) r.submitNow();
    req.state = IN_FLIGHT;
    this.charge(cls, req.cost);
    this.inFlight++;
    this.outstanding += req.cost;
    this.dispatched++;
    if (waited) this.dispatchedAfterWait++;
  }

  private abort(req: IoRequest): void {
    if (req.state === IN_FLIGHT) {
      // The kernel's final completion still arrives (-ECANCELED, or the result if too late).
      // Named by its owner: once the completion was reaped the slot is free and may belong
      // to another operation before completed() runs in the request's group turn.
      reactor().cancelSlot(req.slot, req);
      return;
    }
    if (req.state !== QUEUED) return;
    // Still waiting here: it never reached the kernel. pump() skips settled entries.
    const cls = req.cls;
    cls.live--;
    this.queued--;
    if (cls.live === 0) this.deactivate(cls);
    this.settle(req, 0, new AbortError(`${req.name} was aborted`, { cause: req.signal!.reason }));
  }

  /** @internal The reactor's completion for `req` (run in its group's turn). */
  completed(req: IoRequest, res: number): void {
    this.finish(req.cls, req.cost, res);
    if (res >= 0 && res < req.len && req.continueAlign > 0) {
      // A short write (the device filled up, a signal...): continue with the rest, or fail.
      if (req.signal?.aborted) {
        // Aborted while this part was in the kernel (too late to cancel it): issue no more.
        // The listener fired already, so a continuation could no longer be aborted at all.
        this.settle(req, 0, new AbortError(`${req.name} was aborted`, { cause: req.signal.reason }));
        return;
      }
      if (res === 0 || res % req.continueAlign !== 0) {
        const detail = `short write: ${req.done + res} of ${req.done + req.len} bytes, and the rest cannot be written by DMA`;
        this.settle(req, 0, new SystemError(req.name, EIO, detail));
        return;
      }
      req.done += res;
      req.addr += res;
      req.pos += res;
      req.len -= res;
      req.cost = this.cost(true, req.len);
      if (this.queued === 0 && this.canDispatch(req.cost)) this.dispatch(req, false);
      else this.enqueue(req);
      return;
    }
    if (res >= 0) this.settle(req, req.done + res, undefined);
    else if (res === -ECANCELED && req.signal?.aborted) this.settle(req, 0, new AbortError(`${req.name} was aborted`, { cause: req.signal.reason }));
    else this.settle(req, 0, errorFromResult(req.name, res));
  }

  private settle(req: IoRequest, value: number, error: unknown): void {
    req.state = SETTLED;
    pinAll(req.buffers, false);
    if (req.onAbort !== undefined) req.signal!.removeEventListener("abort", req.onAbort);
    req.owner?.ioFinished();
    if (error === undefined) req.resolve(value);
    else req.reject(error);
  }

  private finish(cls: IoClass, cost: number, res: number): void {
    this.inFlight--;
    this.outstanding -= cost;
    if (this.inFlight === 0) this.outstanding = 0; // no float drift across long runs
    cls.requests++;
    cls.deviceSeconds += cost;
    if (res > 0) cls.bytes += res;
    if (this.queued > 0) this.pump();
  }

  private pick(): IoClass {
    const a = this.active;
    let best = a[0]!;
    for (let i = 1; i < a.length; i++) if (a[i]!.vcost < best.vcost) best = a[i]!;
    return best;
  }

  /** Dispatches waiting requests while capacity allows, least virtual cost first. */
  private pump(): void {
    while (this.queued > 0) {
      const cls = this.pick();
      let req = cls.queue[cls.head]!;
      while (req.state !== QUEUED) req = cls.queue[++cls.head]!;
      if (!this.canDispatch(req.cost)) return;
      cls.head++;
      cls.live--;
      this.queued--;
      if (cls.live === 0) this.deactivate(cls);
      else if (cls.head > 1024 && cls.head * 2 > cls.queue.length) {
        cls.queue = cls.queue.slice(cls.head);
        cls.head = 0;
      }
      this.dispatch(req, true);
    }
  }

  /** Counters and per-group shares of this queue. Cost: one small object per class. */
  stats(): IoQueueStats {
    const classes: IoClassStats[] = [];
    for (const c of this.classes) {
      if (c === undefined) continue;
      classes.push({ group: c.group.name, shares: c.group.shares, requests: c.requests, bytes: c.bytes, deviceSeconds: c.deviceSeconds, queued: c.live });
    }
    return {
      device: `${this.deviceMajor}:${this.deviceMinor}`,
      throttled: this.props !== undefined,
      inFlight: this.inFlight,
      maxInFlight: this.maxInFlight,
      queued: this.queued,
      dispatched: this.dispatched,
      dispatchedAfterWait: this.dispatchedAfterWait,
      splits: this.splits,
      pieces: this.pieces,
      classes,
    };
  }
}

/** This shard's I/O scheduler: one IoQueue per device. */
export class IoScheduler {
  private readonly queues = new Map<number, IoQueue>();

  /** The queue of device `major:minor` (created on first use). */
  queueFor(major: number, minor: number): IoQueue {
    const key = major * 0x1_0000_0000 + minor;
    let q = this.queues.get(key);
    if (q === undefined) {
      q = new IoQueue(major, minor);
      this.queues.set(key, q);
    }
    return q;
  }

  /** Every queue's statistics. */
  stats(): IoQueueStats[] {
    return [...this.queues.values()].map((q) => q.stats());
  }

  /** @internal */
  reconfigure(): void {
    for (const q of this.queues.values()) q.reconfigure();
  }
}

let scheduler: IoScheduler | undefined;

/** This shard's I/O scheduler (created on first use). */
export function ioScheduler(): IoScheduler {
  return (scheduler ??= new IoScheduler());
}

function positive(name: string, v: number | undefined, max = Infinity): void {
  if (v === undefined) return;
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0 || v > max) {
    throw new InvalidArgumentError(`configureIoScheduler: ${name} must be a number in (0, ${max}], got ${describeValue(v)}`);
  }
}

/**
 * Configures this shard's I/O scheduler: disk capacities (an io-properties file as iotune
 * writes it, or parsed DiskProperties), the latency goal, the split size and the in-flight
 * limit. Applies to open files too. Each mountpoint is resolved to its device with statx, so
 * files on that file system share its capacity. Cost: one statx per disk, plus reading the file.
 * Throws InvalidArgumentError for bad options or properties, SystemError if a mountpoint or
 * the file cannot be read.
 */
export async function configureIoScheduler(opts: IoSchedulerOptions): Promise<void> {
  if (opts === null || typeof opts !== "object") throw new InvalidArgumentError("configureIoScheduler: options must be an object");
  positive("latencyGoalMs", opts.latencyGoalMs);
  positive("shareOfDevice", opts.shareOfDevice, 1);
  positive("maxInFlight", opts.maxInFlight, 4096);
  if (opts.maxInFlight !== undefined && !Number.isInteger(opts.maxInFlight)) {
    throw new InvalidArgumentError(`configureIoScheduler: maxInFlight must be an integer, got ${describeValue(opts.maxInFlight)}`);
  }
  const sb = opts.submitBatch;
  if (sb !== undefined && (!Number.isInteger(sb) || sb < 0 || sb > 4096)) {
    throw new InvalidArgumentError(`configureIoScheduler: submitBatch must be an integer in [0, 4096], got ${describeValue(sb)}`);
  }
  const mrs = opts.maxRequestSize;
  if (mrs !== undefined && (!Number.isSafeInteger(mrs) || mrs < 4096 || mrs % 4096 !== 0 || mrs > 0x7fff_f000)) {
    throw new InvalidArgumentError(`configureIoScheduler: maxRequestSize must be a multiple of 4096 >= 4096, got ${describeValue(mrs)}`);
  }
  let disks = config.disks;
  if (opts.properties !== undefined) {
    const list = typeof opts.properties === "string"
      ? parseIoProperties(await readSmallFile(opts.properties), opts.properties)
      : checkDiskProperties(opts.properties, "configureIoScheduler: properties");
    disks = [];
    for (const props of list) {
      const st = await statx("configureIoScheduler: statx(mountpoint)", -1, props.mountpoint, 0);
      disks.push({ props, major: st.deviceMajor, minor: st.deviceMinor });
    }
  }
  config.disks = disks;
  if (opts.latencyGoalMs !== undefined) config.latencyGoalMs = opts.latencyGoalMs;
  if (opts.shareOfDevice !== undefined) config.shareOfDevice = opts.shareOfDevice;
  if (opts.maxInFlight !== undefined) config.maxInFlight = opts.maxInFlight;
  if (mrs !== undefined) config.maxRequestSize = mrs;
  if (opts.submitBatch !== undefined) config.submitBatch = opts.submitBatch;
  ioScheduler().reconfigure();
}

/** Forgets io-properties and restores the defaults (tests, benchmarks). */
export function resetIoScheduler(): void {
  config.disks = [];
  config.latencyGoalMs = 1.5;
  config.maxRequestSize = 128 * 1024;
  config.maxInFlight = 128;
  config.shareOfDevice = 1;
  config.submitBatch = 4;
  ioScheduler().reconfigure();
}
