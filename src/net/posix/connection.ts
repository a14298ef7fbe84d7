/**
 * A kernel stream socket (TCP or Unix) driven by io_uring. Receiving is one multishot RECV
 * selecting from the shard's provided-buffer ring, stopped (cancelled) when the reader falls
 * behind and re-armed when it catches up or when buffers come back after ENOBUFS. Sending is
 * at most one SEND/SENDMSG/SEND_ZC in flight, issued from the stack's once-per-turn flush with
 * everything written meanwhile; a short send leaves the rest queued for the next one.
 *
 * Life cycle: OPEN → (close: flush, bounded by closeTimeoutMs) → TEARDOWN (cancel receive,
 * wait for the kernel to finish with every slot, zero-copy sends' notifications included; a
 * graceful close of a TCP socket whose send queue still holds data lingers: FIN, input
 * discarded, until the peer has it all) → CLOSE through the ring → CLOSED (every buffer
 * released, the close() promise resolves).
 *
 * A zero-copy send's pages stay the kernel's after its first completion, until the peer has
 * acknowledged the data (the notification): a graceful teardown waits for those before CLOSE,
 * for what is left of closeTimeoutMs, then closes with a reset (the kernel drops the unsent
 * queue and lets go of the pages at once); CLOSED waits for the last notification.
 */
import { ClosedError, InvalidArgumentError, SystemError } from "../../core/errors.ts";
import { CQE_F_BUFFER, CQE_F_MORE, IoOp, reactor, type PrepareExtra, type Reactor } from "../../core/reactor.ts";
import { Timer, now } from "../../core/timer.ts";
import type { NativeBuffer } from "../../core/buffers.ts";
import type { Completable } from "../../core/scheduler.ts";
import { StreamInput, type InputSource } from "../input.ts";
import { StreamOutput, type OutputSink } from "../output.ts";
import type { Connection, KeepAliveOptions, ShutdownInputOptions } from "../types.ts";
import type { SocketAddress } from "../address.ts";
import {
  IPPROTO_TCP,
  MSG_NOSIGNAL,
  SHUT_RD,
  SHUT_WR,
  SOL_SOCKET,
  TCP_NODELAY,
  localAddressOf,
  peerAddressOf,
  setIntOption,
  lingerStep,
  setResetOnClose,
  shutdownSocket,
} from "./sys.ts";
import type { PosixStack } from "./stack.ts";
import { RX_POISON_BYTE } from "./rx-ring.ts";
import { booleanOption, checkOptionKeys, type ResolvedConnectionOptions } from "../options.ts";
import { describeValue } from "../../core/describe.ts";

const ENOBUFS = 105;
const ECANCELED = 125;
const EINTR = 4;
const EAGAIN = 11;
const EINVAL = 22;
const ETIMEDOUT = 110;
/**
 * A lingering close checks whether the peer has everything after LINGER_POLL_MS, then twice as
 * long each time, up to LINGER_POLL_MAX_MS (see PosixConnection.linger): thousands of slow
 * readers at a server's stop cost a few checks a second each, not 200.
 */
const LINGER_POLL_MS = 5;
const LINGER_POLL_MAX_MS = 250;
const IORING_CQE_F_NOTIF = 1 << 3;
/** SEND_ZC ioprio flag: the notification's res reports whether the data was copied (Linux 6.2). */
const IORING_SEND_ZC_REPORT_USAGE = 1 << 3;
/** In a zero-copy notification's res (with REPORT_USAGE): the kernel copied the data. */
const IORING_NOTIF_USAGE_ZC_COPIED = 1 << 31;
const ZC_REPORT_EXTRA: PrepareExtra = { ioprio: IORING_SEND_ZC_REPORT_USAGE };

const SO_KEEPALIVE = 9;
const TCP_KEEPIDLE = 4;
const TCP_KEEPINTVL = 5;
const TCP_KEEPCNT = 6;
/** Linux's limits (net/ipv4/tcp.c: MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT). */
const MAX_TCP_KEEPIDLE = 32767;
const MAX_TCP_KEEPINTVL = 32767;
const MAX_TCP_KEEPCNT = 127;

/** A keep-alive timing: 0 (leave the kernel's) when absent, else an integer in 1..max. */
function keepAliveTiming(v: unknown, name: string, max: number): number {
  if (v === undefined) return 0;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > max) {
    throw new InvalidArgumentError(`setKeepAlive: ${name} must be an integer in 1..${max}, got ${describeValue(v)}`);
  }
  return v;
}

const OPEN = 0;
const CLOSING = 1;
const TEARDOWN = 2;
const CLOSING_FD = 3;
const CLOSED = 4;

/** iovecs per SENDMSG; the msghdr block holds a msghdr (64 bytes) and this many iovecs. */
export const MAX_IOV = 64;

/** Completion of the connection's send (SEND or SENDMSG). */
class SendHandler implements Completable {
  constructor(private readonly c: PosixConnection) {}
  complete(res: number): void {
    this.c.onSent(res);
  }
}

/** Completion of a zero-copy send: the result, then (F_NOTIF) the kernel's release of the buffer. */
class ZeroCopyHandler implements Completable {
  constructor(
    private readonly c: PosixConnection,
    private readonly buffer: NativeBuffer,
    private readonly reportUsage: boolean,
  ) {}
  complete(res: number, flags: number): void {
    if ((flags & IORING_CQE_F_NOTIF) !== 0) {
      // With IORING_SEND_ZC_REPORT_USAGE the notification says whether the kernel copied the
      // data after all (a loopback peer, a device without scatter-gather).
      if (this.reportUsage && (res & IORING_NOTIF_USAGE_ZC_COPIED) !== 0) this.c.zeroCopyWasCopied();
      this.buffer.unpin();
      this.c.zeroCopyReleased(true);
      return;
    }
    // Without F_MORE no notification follows (the send failed before using the buffer).
    if ((flags & CQE_F_MORE) === 0) {
      this.buffer.unpin();
      this.c.zeroCopyReleased(false);
    }
    if (res === -EINVAL && this.reportUsage) {
      // A kernel before 6.2 has no usage report: send again without asking for it.
      this.c.zeroCopyReportRefused();
      return;
    }
    this.c.onSent(res);
  }
}

class CloseHandler implements Completable {
  constructor(private readonly c: PosixConnection) {}
  complete(): void {
    this.c.onClosed();
  }
}

/** Connection on a kernel stream socket (see the file comment). From accept() or connect(). */
export class PosixConnection implements Connection, InputSource, OutputSink, Completable {
  readonly input: StreamInput;
  readonly output: StreamOutput;
  /** @internal */ fd: number;
  /** @internal now() of the last byte received or sent. */ lastActivity: number;
  /** @internal */ readonly idleTimeoutMs: number;
  /** @internal */ readonly readTimeoutMs: number;
  /** @internal set while queued in the stack's flush list */ dirty = false;
  /** @internal set while waiting for receive buffers (ENOBUFS) */ starved = false;
  /**
   * @internal Set while it waits in its listener's queue for accept(): no read or idle timeout
   * runs then (nobody reads it yet); its idle time counts from when accept() hands it out.
   */
  unclaimed = false;
  private readonly stack: PosixStack;
  private readonly r: Reactor;
  private readonly isInet: boolean;
  private readonly closeTimeoutMs: number;
  private readonly onRelease: ((c: PosixConnection) => void) | undefined;
  private local: SocketAddress | undefined;
  private remote: SocketAddress | undefined;
  private state = OPEN;
  private recvSlot = -1;
  private recvCancelled = false;
  private recvLimited = false;
  private sendSlot = -1;
  private sendCancelled = false;
  private sendingBytes = 0;
  private msgBlock = -1;
  private readonly sendHandler: SendHandler;
  /** Torn down by a kernel error with received bytes left readable (see abort). */
  private inputKept = false;
  /** The handler the send in flight was prepared with (sendHandler or a ZeroCopyHandler). */
  private sendOwner: Completable | undefined;
  /** The kernel reported copying a zero-copy send's data: plain sends only (zeroCopyWasCopied). */
  private zeroCopyOff = false;
  private closePromise: Promise<void> | undefined;
  private resolveClose: (() => void) | undefined;
  private closeTimer: Timer | undefined;
  /** Zero-copy sends whose notification has not arrived: the kernel may still read their pages. */
  private zeroCopyPending = 0;
  /** now() when close() was called (the bound of the wait for zero-copy notifications). */
  private closeStartedAt = -1;
  /** Bounds TEARDOWN's wait for zero-copy notifications (then the socket closes with a reset). */
  private zeroCopyTimer: Timer | undefined;
  /** SO_LINGER 0 was set: CLOSE sends RST and the kernel drops what it still queues. */
  private resetOnClose = false;
  /** The kernel closed the fd; CLOSED waits for the last zero-copy notification. */
  private fdClosed = false;
  /** A lingering close sent its FIN and waits for the send queue to empty (see linger). */
  private lingerStarted = false;
  /** This close counts in the stack's `lingering` (until its CLOSE is issued). */
  private lingerHeld = false;
  private lingerTimer: Timer | undefined;
  /** The wait before the lingering close's next check (LINGER_POLL_MS, doubling). */
  private lingerPollMs = LINGER_POLL_MS;
  /**
   * shutdownInput() shut the socket's input (SHUT_RD). A lingering close then sends no FIN
   * before the peer has everything: with its input shut, a socket past its FIN (FIN_WAIT)
   * answers any byte the peer still sends with a reset, which drops the send queue.
   */
  private inputShutHere = false;

  /** @internal Wraps a connected socket `fd` and starts receiving. */
  constructor(
    stack: PosixStack,
    fd: number,
    family: SocketAddress["family"],
    opts: ResolvedConnectionOptions,
    onRelease: ((c: PosixConnection) => void) | undefined,
    remote?: SocketAddress,
  ) {
    this.stack = stack;
    this.r = reactor();
    this.fd = fd;
    this.isInet = family !== "unix";
    this.remote = remote;
    this.onRelease = onRelease;
    this.idleTimeoutMs = opts.idleTimeoutMs;
    this.readTimeoutMs = opts.readTimeoutMs;
    this.closeTimeoutMs = opts.closeTimeoutMs;
    this.lastActivity = now();
    this.input = new StreamInput(this, Math.ceil(opts.maxReadBuffered / stack.rx.bufferSize), stack.rx.bufferSize);
    this.output = new StreamOutput(this, opts.writeHighWater);
    this.sendHandler = new SendHandler(this);
    stack.connectionOpened(this);
    this.armRecv();
  }

  // ---- addresses and options ----------------------------------------------------------------

  get localAddress(): SocketAddress {
    if (this.local === undefined) {
      this.checkOpen("localAddress");
      this.local = localAddressOf(this.fd);
    }
    return this.local;
  }

  get remoteAddress(): SocketAddress {
    if (this.remote === undefined) {
      this.checkOpen("remoteAddress");
      this.remote = peerAddressOf(this.fd);
    }
    return this.remote;
  }

  get closed(): boolean {
    return this.state !== OPEN;
  }

  private checkOpen(op: string): void {
    if (this.state >= CLOSING_FD) throw new ClosedError(`${op}: the connection is closed`, "ERR_CONNECTION_CLOSED");
  }

  setNoDelay(on = true): void {
    if (typeof on !== "boolean") throw new InvalidArgumentError(`setNoDelay: on must be a boolean, got ${describeValue(on)}`);
    this.checkOpen("setNoDelay");
    if (this.isInet) setIntOption("setsockopt(TCP_NODELAY)", this.fd, IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0);
  }

  /**
   * SO_KEEPALIVE, and (when on) TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT for the timings given.
   * Every argument is checked before the first setsockopt, against the kernel's own limits
   * (idleS and intervalS 1..32767, count 1..127), so a bad one changes nothing.
   */
  setKeepAlive(on: boolean, opts?: KeepAliveOptions): void {
    // A string "false" would turn it on: only a boolean says which.
    if (typeof on !== "boolean") throw new InvalidArgumentError(`setKeepAlive: on must be a boolean, got ${describeValue(on)}`);
    checkOptionKeys("setKeepAlive", opts, ["idleS", "intervalS", "count"]);
    const idleS = keepAliveTiming(opts?.idleS, "idleS", MAX_TCP_KEEPIDLE);
    const intervalS = keepAliveTiming(opts?.intervalS, "intervalS", MAX_TCP_KEEPINTVL);
    const count = keepAliveTiming(opts?.count, "count", MAX_TCP_KEEPCNT);
    this.checkOpen("setKeepAlive");
    if (!this.isInet) return;
    // One setsockopt each, so a failure names the option that failed; the timings go first,
    // so one the kernel refuses does not leave keep-alive switched on.
    if (on) {
      if (idleS > 0) setIntOption("setsockopt(TCP_KEEPIDLE)", this.fd, IPPROTO_TCP, TCP_KEEPIDLE, idleS);
      if (intervalS > 0) setIntOption("setsockopt(TCP_KEEPINTVL)", this.fd, IPPROTO_TCP, TCP_KEEPINTVL, intervalS);
      if (count > 0) setIntOption("setsockopt(TCP_KEEPCNT)", this.fd, IPPROTO_TCP, TCP_KEEPCNT, count);
    }
    setIntOption("setsockopt(SO_KEEPALIVE)", this.fd, SOL_SOCKET, SO_KEEPALIVE, on ? 1 : 0);
  }

  // ---- receiving ----------------------------------------------------------------------------

  /** Arms the connection's receive: multishot, or with `once` a single receive of one buffer. */
  private armRecv(once = false): void {
    const stack = this.stack;
    let extra = stack.recvExtra;
    this.recvLimited = false;
    if (once) {
      extra = stack.recvExtraOnce;
    } else if (stack.recvLimitSupported) {
      // Newer kernels end a multishot receive after a total byte count: it cannot run more
      // than one buffer past what the reader will take.
      const budget = Math.min(Math.max(this.input.receiveBudget, stack.rx.bufferSize), 0x7fff_ffff);
      extra = stack.recvExtraLimited;
      extra.fileIndex = budget;
      this.recvLimited = true;
    }
    this.recvSlot = this.r.prepare(IoOp.RECV, this.fd, 0, 0, 0, 0, this, extra);
    this.recvCancelled = false;
  }

  private cancelRecv(): void {
    if (this.recvSlot >= 0 && !this.recvCancelled) {
      this.recvCancelled = true;
      this.r.cancelSlot(this.recvSlot, this);
    }
  }

  /** @internal Receive completions (multishot: one per filled buffer). */
  complete(res: number, flags: number): void {
    if ((flags & CQE_F_MORE) === 0) this.recvSlot = -1;
    if (res > 0) {
      const bid = flags >>> 16;
      this.stack.rx.taken(bid);
      this.lastActivity = now();
      this.input.push(bid, res);
    } else {
      if ((flags & CQE_F_BUFFER) !== 0) {
        const bid = flags >>> 16;
        this.stack.rx.taken(bid);
        this.stack.rx.release(bid);
      }
      if (res === 0) {
        this.input.pushEof();
      } else if (res === -ENOBUFS) {
        if (this.state < TEARDOWN && !this.input.finished) this.stack.starve(this);
      } else if (res === -EINVAL && this.recvLimited && this.recvSlot < 0) {
        // This kernel has no multishot length limit: fall back to pausing by cancellation.
        this.stack.recvLimitSupported = false;
      } else if (res !== -ECANCELED && res !== -EINTR && res !== -EAGAIN) {
        this.abort(new SystemError("recv", -res), false);
      }
    }
    if (this.recvSlot < 0) this.recvStopped();
  }

  private recvStopped(): void {
    if (this.state >= TEARDOWN) {
      this.maybeCloseFd();
      return;
    }
    if (!this.input.finished && !this.input.isPaused && !this.starved) this.armRecv();
  }

  /**
   * @internal The stack has buffers again after ENOBUFS. The first receive takes one buffer
   * only (its completion re-arms the multishot one): re-armed in the order they ran dry, the
   * first multishot receive of a flooding peer took every free buffer, so a quiet connection
   * starved again, turn after turn, while its request waited behind gigabytes of flood.
   */
  resumeAfterStarve(): void {
    this.starved = false;
    if (this.state < TEARDOWN && this.recvSlot < 0 && !this.input.finished && !this.input.isPaused) this.armRecv(true);
  }

  /** @internal InputSource */
  chunkBase(token: number): Uint8Array {
    return this.stack.rx.views[token]!;
  }

  /** @internal InputSource */
  releaseChunk(token: number): void {
    this.stack.rx.release(token);
  }

  /** @internal InputSource */
  poisonReleased(bytes: Uint8Array): void {
    if (this.stack.rx.poison) bytes.fill(RX_POISON_BYTE);
  }

  /** @internal InputSource */
  inputPressure(paused: boolean): void {
    if (paused) {
      this.stack.counters.recvPauses++;
      this.cancelRecv();
    } else if (this.state < TEARDOWN && this.recvSlot < 0 && !this.starved && !this.input.finished) {
      this.armRecv();
    }
  }

  /** @internal InputSource: the reader saw end of stream. */
  inputEnded(): void {
    if (this.output.isShutDown && this.state === OPEN) this.teardown(false);
  }

  // ---- sending ------------------------------------------------------------------------------

  /** @internal OutputSink */
  outputReady(): void {
    if (!this.dirty && this.sendSlot < 0 && this.state < TEARDOWN) this.stack.markDirty(this);
  }

  /** @internal OutputSink */
  retainReceived(view: Uint8Array, start: number, length: number): number {
    const rx = this.stack.rx;
    if (view.buffer !== rx.region) return -1;
    const address = rx.bufsAddress + view.byteOffset + start;
    const bid = rx.bidOf(address);
    // A view kept past its validity points at a recycled buffer: copy it (it is already garbage).
    if (!rx.held(bid) || rx.bidOf(address + length - 1) !== bid) return -1;
    rx.retain(bid);
    return address;
  }

  /** @internal OutputSink */
  releaseReceived(address: number): void {
    this.stack.rx.release(this.stack.rx.bidOf(address));
  }

  /** @internal OutputSink: everything written before output.close() was sent. */
  outputShutdown(): void {
    if (this.state >= TEARDOWN) return;
    shutdownSocket(this.fd, SHUT_WR);
    // Both directions are done once the reader has seen the end too.
    if (this.input.ended) this.teardown(false);
  }

  /** @internal OutputSink: a write was lost (see StreamOutput.failWrite); nothing more may go. */
  outputFailed(err: Error): void {
    this.abort(err, true);
  }

  /** @internal Called by the stack's flush, once per turn, for connections with queued output. */
  startSend(): void {
    this.dirty = false;
    if (this.sendSlot >= 0 || this.state >= TEARDOWN) return;
    const out = this.output;
    const n = out.entries;
    if (n === 0) return;
    const stack = this.stack;
    let block = -1;
    const first = out.entryLength(0);
    const native = out.entryNative(0);
    // Zero-copy sends exist for TCP only (a Unix socket answers EOPNOTSUPP), and pay only
    // where the kernel does not copy anyway (see zeroCopyWasCopied).
    const zeroCopyMin = this.isInet && !this.zeroCopyOff ? stack.zeroCopySendMin : Infinity;
    if (native !== undefined && first >= zeroCopyMin) {
      // Large native buffers go without a kernel copy; it stays pinned until F_NOTIF.
      native.pin();
      const report = stack.zeroCopyReportUsage;
      this.sendOwner = new ZeroCopyHandler(this, native, report);
      this.sendSlot = this.r.prepare(IoOp.SEND_ZC, this.fd, out.entryAddress(0), first, 0, MSG_NOSIGNAL, this.sendOwner, report ? ZC_REPORT_EXTRA : undefined);
      this.sendingBytes = first;
      this.zeroCopyPending++;
      stack.counters.sendsZeroCopy++;
    } else if (n === 1 || (block = this.acquireMsgBlock()) < 0) {
      this.sendOwner = this.sendHandler;
      this.sendSlot = this.r.prepare(IoOp.SEND, this.fd, out.entryAddress(0), first, 0, MSG_NOSIGNAL, this.sendHandler);
      this.sendingBytes = first;
    } else {
      const w = stack.msgs.u32(block);
      const base = stack.msgs.address(block);
      let count = 0;
      let bytes = 0;
      for (; count < n && count < MAX_IOV; count++) {
        const len = out.entryLength(count);
        if (count > 0 && len >= zeroCopyMin && out.entryNative(count) !== undefined) break;
        const a = out.entryAddress(count);
        const j = 16 + count * 4;
        w[j] = a >>> 0;
        w[j + 1] = Math.floor(a / 0x1_0000_0000);
        w[j + 2] = len;
        w[j + 3] = 0;
        bytes += len;
      }
      // struct msghdr: name, namelen, iov, iovlen, control, controllen, flags.
      w.fill(0, 0, 14);
      const iov = base + 64;
      w[4] = iov >>> 0;
      w[5] = Math.floor(iov / 0x1_0000_0000);
      w[6] = count;
      this.msgBlock = block;
      this.sendOwner = this.sendHandler;
      this.sendSlot = this.r.prepare(IoOp.SENDMSG, this.fd, base, 1, 0, MSG_NOSIGNAL, this.sendHandler);
      this.sendingBytes = bytes;
    }
    this.sendCancelled = false;
    stack.counters.sends++;
  }

  /**
   * A msghdr block for a SENDMSG, or -1 when none can be mapped (mmap failed): the head entry
   * then goes alone, in a SEND. (The throw left the stack's send batch midway: the connections
   * after this one in it stayed marked for sending and never sent again.)
   */
  private acquireMsgBlock(): number {
    try {
      return this.stack.msgs.acquire();
    } catch {
      return -1;
    }
  }

  /**
   * @internal A zero-copy send's notification said the kernel copied the data (the peer is on
   * this host: loopback delivery copies every byte; or the device cannot send from user
   * pages). Zero-copy then costs more than a plain send (pinning the pages, a second
   * completion) and saves nothing: this connection's later sends are plain ones.
   */
  zeroCopyWasCopied(): void {
    if (this.zeroCopyOff) return;
    this.zeroCopyOff = true;
    this.stack.counters.sendsZeroCopyCopied++;
  }

  /**
   * @internal A zero-copy send's pages are no longer the kernel's: its notification arrived
   * (`notified`), or its completion said none will come. Teardown and close wait for the last.
   */
  zeroCopyReleased(notified: boolean): void {
    if (--this.zeroCopyPending > 0 || !notified) return;
    if (this.state === TEARDOWN) this.maybeCloseFd();
    else if (this.fdClosed) this.finishClose();
  }

  /** @internal The kernel refused IORING_SEND_ZC_REPORT_USAGE (before 6.2): send again without it. */
  zeroCopyReportRefused(): void {
    this.stack.zeroCopyReportUsage = false;
    this.onSent(-EAGAIN);
  }

  /** @internal A send's result. */
  onSent(res: number): void {
    this.sendSlot = -1;
    if (this.msgBlock >= 0) {
      this.stack.msgs.release(this.msgBlock);
      this.msgBlock = -1;
    }
    const out = this.output;
    if (res > 0) {
      this.stack.counters.sendBytes += res;
      if (res < this.sendingBytes) this.stack.counters.sendsShort++;
      this.lastActivity = now();
      out.sent(res);
    }
    if (this.state >= TEARDOWN) {
      out.discard();
      this.maybeCloseFd();
      return;
    }
    if (res >= 0 || res === -ECANCELED || res === -EINTR || res === -EAGAIN) {
      if (out.entries > 0) this.stack.markDirty(this);
      return;
    }
    this.abort(new SystemError("send", -res), false);
  }

  // ---- closing ------------------------------------------------------------------------------

  shutdownInput(options?: ShutdownInputOptions): void {
    checkOptionKeys("shutdownInput", options, ["keepReceived"]);
    const keep = booleanOption("shutdownInput", "keepReceived", options?.keepReceived, false);
    if (this.state >= TEARDOWN) return;
    // Linux (TCP and Unix streams) still returns what the receive queue holds after SHUT_RD,
    // then 0: the receive path sees an ordinary end of stream after the last byte.
    shutdownSocket(this.fd, SHUT_RD);
    this.inputShutHere = true;
    if (!keep) this.input.shutdown();
  }

  shutdownOutput(): Promise<void> {
    return this.output.close();
  }

  close(): Promise<void> {
    if (this.closePromise !== undefined) {
      // Torn down by a peer error: drop what was received before it and is still unread.
      if (this.state >= TEARDOWN) this.input.dispose();
      return this.closePromise;
    }
    this.closePromise = new Promise<void>((resolve) => {
      this.resolveClose = resolve;
    });
    if (this.state === OPEN) {
      this.state = CLOSING;
      this.closeStartedAt = now();
      this.output.seal();
      if (this.output.buffered === 0) {
        this.teardown(false);
      } else {
        this.closeTimer = new Timer(() => {
          this.closeTimer = undefined;
          this.abort(new SystemError("close", ETIMEDOUT, `could not flush within ${this.closeTimeoutMs} ms`), true);
        }).arm(this.closeTimeoutMs);
        this.output.flush().then(
          () => this.teardown(false),
          () => this.teardown(true),
        );
      }
    }
    return this.closePromise;
  }

  reset(): void {
    if (this.state >= TEARDOWN) {
      this.input.dispose();
      // Waiting for zero-copy notifications (the peer's acknowledgement): drop the rest now.
      if (this.state === TEARDOWN && !this.resetOnClose) {
        this.setResetOnClose();
        this.maybeCloseFd();
      }
      return;
    }
    this.abort(new ClosedError("the connection was reset locally", "ERR_CONNECTION_RESET"), true);
  }

  /**
   * @internal Fails both directions with `err` and releases the socket. `rst` (a local reset or
   * timeout): send RST and drop unread input. Otherwise (the kernel failed a receive or send,
   * e.g. the peer reset) bytes received before the failure stay readable, as the kernel's own
   * recv() returns them before the error; close() or reset() drops them.
   */
  abort(err: Error, rst: boolean): void {
    if (this.state >= TEARDOWN) return;
    this.input.pushError(err, rst);
    this.output.fail(err);
    // Unread bytes stay readable after a peer error, unless close() was already asked for:
    // nobody reads after that, and they would pin receive buffers for good.
    this.teardown(rst, !rst && this.closePromise === undefined);
  }

  /** @internal Read and idle timeouts, checked by the stack's sweep. */
  checkTimeouts(t: number): void {
    if (this.state >= TEARDOWN || this.unclaimed) return;
    // Not while close() flushes: a read still waiting then ends with null once the flush is
    // done; timing it out reset the connection and dropped what close() was to deliver
    // (closeTimeoutMs bounds the flush).
    if (this.readTimeoutMs > 0 && this.state === OPEN) {
      const since = this.input.waitingSince;
      if (since > 0 && t - since >= this.readTimeoutMs) {
        const err = new SystemError("read", ETIMEDOUT, `no data for ${this.readTimeoutMs} ms`);
        this.stack.counters.timeouts++;
        this.input.failWait(err);
        this.abort(err, true);
        return;
      }
    }
    if (this.idleTimeoutMs > 0 && t - this.lastActivity >= this.idleTimeoutMs) {
      this.stack.counters.timeouts++;
      this.abort(new SystemError("idle", ETIMEDOUT, `no traffic for ${this.idleTimeoutMs} ms`), true);
    }
  }

  private teardown(rst: boolean, keepInput = false): void {
    if (this.state >= TEARDOWN) return;
    this.state = TEARDOWN;
    if (this.closeTimer !== undefined) {
      this.closeTimer.cancel();
      this.closeTimer = undefined;
    }
    if (this.closePromise === undefined) {
      this.closePromise = new Promise<void>((resolve) => {
        this.resolveClose = resolve;
      });
    }
    this.stack.connectionClosing(this);
    if (rst) this.setResetOnClose();
    if (keepInput) this.inputKept = true;
    else this.input.dispose();
    // A graceful close() with everything sent: an output.close() behind the same flush resolves.
    if (!rst) this.output.closedAfterFlush();
    this.output.fail(new ClosedError("the connection is closed", "ERR_CONNECTION_CLOSED"));
    this.cancelRecv();
    if (this.sendSlot >= 0) {
      if (rst && !this.sendCancelled) {
        this.sendCancelled = true;
        // Name the owner: the slot is free again once the send's completion was reaped, before
        // its handler runs, and may already carry another operation.
        this.r.cancelSlot(this.sendSlot, this.sendOwner);
      }
    } else {
      this.output.discard();
    }
    this.maybeCloseFd();
  }

  private setResetOnClose(): void {
    setResetOnClose(this.fd);
    this.resetOnClose = true;
  }

  private maybeCloseFd(): void {
    if (this.state !== TEARDOWN || this.recvSlot >= 0 || this.sendSlot >= 0) return;
    if (this.zeroCopyPending > 0 && !this.resetOnClose) {
      // Zero-copy pages are the kernel's until the peer acknowledged them: closing now would
      // resolve close() while the kernel still reads memory the application may reuse. Wait
      // for the notifications, for what is left of closeTimeoutMs; then close with a reset,
      // which drops the unsent queue (and so lets go of the pages) at once.
      if (this.zeroCopyTimer === undefined) {
        // A teardown close() did not start is bounded from here, the linger after it included
        // (it counted a second whole closeTimeoutMs from its own first check).
        if (this.closeStartedAt < 0) this.closeStartedAt = now();
        const left = this.closeTimeoutMs - (now() - this.closeStartedAt);
        this.zeroCopyTimer = new Timer(() => {
          this.zeroCopyTimer = undefined;
          if (this.state !== TEARDOWN) return;
          this.setResetOnClose();
          this.maybeCloseFd();
        }).arm(Math.max(0, left));
      }
      return;
    }
    if (this.zeroCopyTimer !== undefined) {
      this.zeroCopyTimer.cancel();
      this.zeroCopyTimer = undefined;
    }
    if (!this.resetOnClose && this.isInet && this.linger()) return;
    if (this.lingerTimer !== undefined) {
      this.lingerTimer.cancel();
      this.lingerTimer = undefined;
    }
    if (this.lingerHeld) {
      this.lingerHeld = false;
      this.stack.endLinger();
    }
    this.state = CLOSING_FD;
    this.r.prepare(IoOp.CLOSE, this.fd, 0, 0, 0, 0, new CloseHandler(this));
  }

  /**
   * A graceful close of a TCP socket whose send queue still holds data (unsent, or not yet
   * acknowledged): the kernel answers a close() with unread input, or input that arrives after
   * it, with a reset that drops that queue, so a client still sending when the server closed
   * (a pipeline cut by a stop, a request body the handler did not read) lost answers flush()
   * had already reported written. Instead the socket sends its FIN after the data, discards
   * whatever arrives, and closes once the queue is empty (the peer has everything) or the peer
   * ended its side, checked from LINGER_POLL_MS on, backing off, for what is left of
   * closeTimeoutMs (then it closes as before). True while it lingers. A queue already empty
   * costs one check (two system calls) and closes at once. After shutdownInput() no FIN goes
   * ahead (see inputShutHere): the close sends it once the peer has everything.
   */
  private linger(): boolean {
    if (this.lingerTimer !== undefined) return true; // its next check is armed
    if (this.fd < 0) return false;
    // A teardown that close() did not start (both directions shut, a failure) is bounded from
    // the first check: each check counting a whole closeTimeoutMs from itself lingered forever.
    if (this.closeStartedAt < 0) this.closeStartedAt = now();
    const left = this.closeTimeoutMs - (now() - this.closeStartedAt);
    if (left <= 0 || lingerStep(this.fd) <= 0) return false;
    if (!this.lingerStarted) {
      // Each lingering close keeps a descriptor: past lingerMax, close as a plain close does.
      if (!this.stack.startLinger()) return false;
      this.lingerStarted = true;
      this.lingerHeld = true;
      if (!this.inputShutHere) shutdownSocket(this.fd, SHUT_WR);
    }
    this.lingerTimer = new Timer(() => {
      this.lingerTimer = undefined;
      if (this.state === TEARDOWN) this.maybeCloseFd();
    }).arm(Math.min(this.lingerPollMs, left));
    this.lingerPollMs = Math.min(this.lingerPollMs * 2, LINGER_POLL_MAX_MS);
    return true;
  }

  /** @internal The kernel closed the fd. */
  onClosed(): void {
    this.fd = -1;
    this.fdClosed = true;
    // A reset dropped what the kernel still queued: the last notifications are on their way.
    if (this.zeroCopyPending === 0) this.finishClose();
  }

  /** The fd is closed and the kernel holds no page of ours: every buffer goes, close() resolves. */
  private finishClose(): void {
    this.state = CLOSED;
    // Bytes received before a peer error stay readable until read, close() or reset(), in the
    // input's own memory: a connection the application abandons holds no receive buffer beyond
    // the one its last read's view may still use (that view stays valid until the next read).
    if (!this.inputKept) this.input.dispose();
    else this.stack.counters.recvSpilled += this.input.spill();
    this.output.discard();
    this.stack.connectionReleased(this);
    this.onRelease?.(this);
    this.resolveClose!();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
