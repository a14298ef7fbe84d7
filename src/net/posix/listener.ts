/**
 * A listening kernel socket with one ACCEPT in flight: multishot while the room below the
 * connection and accept-queue limits exceeds what the backlog can hold, one at a time when it
 * does not (a multishot accept drains the backlog before a cancel lands). Every shard binds the same
 * port with SO_REUSEPORT, so the kernel spreads new connections over the shards' own accept
 * queues (no funnel through shard 0). Accepting pauses (the multishot accept is cancelled and
 * the kernel backlog holds new peers) while the connection limit is reached, while the queue
 * of accepted-but-untaken connections is full, or for a moment after EMFILE/ENFILE or any error
 * that is not one peer's (an error of the socket itself recurs at once: re-armed every loop
 * turn, it would spin the shard).
 */
import { lstatSync, unlinkSync } from "node:fs";
import { resolve as resolvePath } from "node:path";
import { AbortError, SystemError } from "../../core/errors.ts";
import { CQE_F_MORE, IoOp, reactor, type Reactor } from "../../core/reactor.ts";
import { Timer, now } from "../../core/timer.ts";
import type { Completable } from "../../core/scheduler.ts";
import { rejectedHandled } from "../errors.ts";
import { booleanOption, checkOptionKeys, signalOption, type ResolvedListenOptions } from "../options.ts";
import { formatAddress, type SocketAddress } from "../address.ts";
import type { Connection, Listener, ListenerCloseOptions, SignalOptions } from "../types.ts";
import { PosixConnection } from "./connection.ts";
import { OPEN_NO_DELAY, OPEN_REUSE_ADDR, OPEN_REUSE_PORT, OPEN_V6_ONLY, SHUT_RD, SOCK_CLOEXEC, SOCK_STREAM, acceptPending, closeNow, localAddressOf, openSocket, shutdownSocket } from "./sys.ts";
import type { PosixStack } from "./stack.ts";

const ECANCELED = 125;
const ECONNABORTED = 103;
/**
 * Accept errors of one peer, retried at once: a peer that gave up (ECONNABORTED), a firewall
 * rule (EPERM), a signal, and the network errors accept(2) passes on from the new connection
 * and says to retry like EAGAIN (EPROTO, ENOPROTOOPT, ENONET, ENETDOWN, ENETUNREACH,
 * EHOSTDOWN, EHOSTUNREACH; not EOPNOTSUPP, which a socket that cannot accept answers forever).
 */
const PEER_ERRORS = new Set([
  ECONNABORTED,
  1, // EPERM
  4, // EINTR
  71, // EPROTO
  92, // ENOPROTOOPT
  64, // ENONET
  100, // ENETDOWN
  101, // ENETUNREACH
  112, // EHOSTDOWN
  113, // EHOSTUNREACH
]);
const IORING_ACCEPT_MULTISHOT = 1 << 0;
/** Accepted fds parked past a limit before further ones are shed (closed). */
const OVERFLOW_LIMIT = 64;
/** Pause after the process or system ran out of descriptors or memory. */
const BACKOFF_MS = 50;

interface AcceptWaiter {
  resolve: (c: Connection) => void;
  reject: (e: unknown) => void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

class ListenerCloseHandler implements Completable {
  constructor(private readonly l: PosixListener) {}
  complete(): void {
    this.l.onClosed();
  }
}

/** Listener on a kernel socket (see the file comment). Create with listen. */
export class PosixListener implements Listener, Completable {
  readonly localAddress: SocketAddress;
  private readonly stack: PosixStack;
  private readonly r: Reactor;
  private readonly opts: ResolvedListenOptions;
  private fd: number;
  private acceptSlot = -1;
  private acceptCancelled = false;
  /** The accept in flight is multishot. */
  private acceptMultishot = false;
  private readonly queue: PosixConnection[] = [];
  /** Accepted fds that arrived past a limit, waiting for room (no buffers attached). */
  private readonly overflow: number[] = [];
  private queueHead = 0;
  private readonly waiters: AcceptWaiter[] = [];
  private open = 0;
  private aborted = false;
  /** close({ acceptPending: true }) runs: the accept in flight ends, then the kernel's queue is taken. */
  private takingPending = false;
  private closing: Promise<void> | undefined;
  private resolveClosed: (() => void) | undefined;
  private backoff: Timer | undefined;
  private readonly release = (c: PosixConnection) => this.connectionReleased(c);
  private readonly acceptExtra = { ioprio: IORING_ACCEPT_MULTISHOT };
  /** A Unix socket's file as bound: removed at close only if it is still that file. */
  private socketFile: { path: string; dev: bigint; ino: bigint } | undefined;

  /** @internal Binds and listens; throws SystemError (op "listen") naming the address. */
  constructor(stack: PosixStack, address: SocketAddress, opts: ResolvedListenOptions) {
    this.stack = stack;
    this.r = reactor();
    this.opts = opts;
    let flags = 0;
    if (opts.reusePort) flags |= OPEN_REUSE_PORT;
    if (opts.reuseAddress) flags |= OPEN_REUSE_ADDR;
    if (opts.ipv6Only) flags |= OPEN_V6_ONLY;
    // Accepted sockets inherit TCP_NODELAY from the listener: no setsockopt per connection.
    if (opts.connection.noDelay) flags |= OPEN_NO_DELAY;
    this.fd = openSocket("listen", address, SOCK_STREAM, flags, opts.backlog);
    try {
      this.localAddress = address.family === "unix" ? address : localAddressOf(this.fd);
      if (address.family === "unix" && !address.path.startsWith("\0")) {
        // The file to remove at close: by absolute path (a later chdir must not redirect it)
        // and by identity (a file someone put there since is not ours to delete).
        const path = resolvePath(address.path);
        const st = lstatSync(path, { bigint: true });
        this.socketFile = { path, dev: st.dev, ino: st.ino };
      }
    } catch (e) {
      closeNow(this.fd);
      throw e;
    }
    stack.listenerChanged(1);
    this.arm();
  }

  get connections(): number {
    return this.open;
  }

  private get queued(): number {
    return this.queue.length - this.queueHead;
  }

  private paused(): boolean {
    return (
      this.aborted ||
      this.backoff !== undefined ||
      this.open >= this.opts.maxConnections ||
      this.queued >= this.opts.acceptQueueLimit
    );
  }

  /**
   * A multishot accept takes everything the backlog holds in one go, ahead of any cancel: only
   * while a full backlog fits below the limits (with the parking room) is it safe; else accept
   * one at a time, so that peers past a limit wait in the kernel's backlog instead of being
   * accepted and then shed.
   */
  private multishotFits(): boolean {
    const room = Math.min(this.opts.maxConnections - this.open, this.opts.acceptQueueLimit - this.queued);
    return room + OVERFLOW_LIMIT > this.opts.backlog;
  }

  private arm(): void {
    this.acceptMultishot = this.multishotFits();
    const extra = this.acceptMultishot ? this.acceptExtra : undefined;
    this.acceptSlot = this.r.prepare(IoOp.ACCEPT, this.fd, 0, 0, 0, SOCK_CLOEXEC, this, extra);
    this.acceptCancelled = false;
  }

  private cancelAccept(): void {
    if (this.acceptSlot >= 0 && !this.acceptCancelled) {
      this.acceptCancelled = true;
      this.r.cancelSlot(this.acceptSlot, this);
    }
  }

  private maybeArm(): void {
    if (this.acceptSlot < 0 && this.closing === undefined && this.overflow.length === 0 && !this.paused()) this.arm();
  }

  /** @internal Accept completions (multishot: one per connection). */
  complete(res: number, flags: number): void {
    if ((flags & CQE_F_MORE) === 0) this.acceptSlot = -1;
    if (res >= 0) {
      if (this.aborted || this.overflow.length >= OVERFLOW_LIMIT) {
        closeNow(res);
        this.stack.counters.connectionsRejected++;
      } else if (this.open >= this.opts.maxConnections || this.queued >= this.opts.acceptQueueLimit) {
        // Accepted in the same batch as the one that reached a limit (the cancel was still in
        // flight): park the bare fd, no buffers, until there is room.
        this.overflow.push(res);
      } else {
        this.admit(res);
      }
    } else if (res !== -ECANCELED && !PEER_ERRORS.has(-res)) {
      // Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), or the socket itself
      // failed (ENOTSOCK, EINVAL, EOPNOTSUPP...): retrying at once would spin. Pause, then try
      // again. (Not once accepting ended: the accept cancelled by abortAccept ends in EINVAL.)
      if (this.backoff === undefined && !this.aborted && this.closing === undefined) {
        this.backoff = new Timer(() => {
          this.backoff = undefined;
          this.maybeArm();
        }).arm(BACKOFF_MS);
      }
    }
    // ECANCELED, and the errors of one peer (PEER_ERRORS), only end this shot.
    // A multishot armed with room to spare ends once the room is down to a backlog's worth: the
    // next accept is then one at a time.
    if (this.paused() || (this.acceptMultishot && this.acceptSlot >= 0 && !this.multishotFits())) this.cancelAccept();
    if (this.acceptSlot < 0) {
      if (this.takingPending) this.takePending();
      else if (this.closing !== undefined) this.maybeCloseFd();
      else this.maybeArm();
    }
  }

  /**
   * A graceful close, once no accept is in flight: the connections the kernel completed are
   * taken (parked ones first) up to the connection limit, the rest reset; accepting then ends
   * (waiters fail, queued connections stay for accept()) and the socket closes.
   */
  private takePending(): void {
    this.takingPending = false;
    let fds: number[] = [];
    try {
      fds = acceptPending(this.fd);
    } catch {
      // Nothing could be taken (out of descriptors): what is left is reset by the close.
    }
    const all = this.overflow.splice(0).concat(fds);
    for (const fd of all) {
      if (this.open < this.opts.maxConnections) {
        this.admit(fd);
      } else {
        closeNow(fd);
        this.stack.counters.connectionsRejected++;
      }
    }
    this.aborted = true;
    const waiters = this.waiters.splice(0);
    for (const w of waiters) {
      this.settle(w);
      w.reject(this.abortedError());
    }
    this.maybeCloseFd();
  }

  private admit(fd: number): void {
    this.open++;
    this.stack.counters.connectionsAccepted++;
    this.deliver(new PosixConnection(this.stack, fd, this.localAddress.family, this.opts.connection, this.release));
  }

  /** Admits parked fds while there is room, then re-arms accepting if nothing is parked. */
  private makeRoom(): void {
    while (this.overflow.length > 0 && !this.aborted && this.open < this.opts.maxConnections && this.queued < this.opts.acceptQueueLimit) {
      this.admit(this.overflow.shift()!);
    }
    if (this.overflow.length === 0) this.maybeArm();
  }

  private deliver(c: PosixConnection): void {
    const w = this.waiters.shift();
    if (w !== undefined) {
      this.settle(w);
      w.resolve(c);
      return;
    }
    c.unclaimed = true;
    this.queue.push(c);
  }

  private settle(w: AcceptWaiter): void {
    if (w.signal !== undefined) w.signal.removeEventListener("abort", w.onAbort!);
  }

  private connectionReleased(_c: PosixConnection): void {
    this.open--;
    this.makeRoom();
  }

  private abortedError(): SystemError {
    return new SystemError("accept", ECONNABORTED, `listener ${formatAddress(this.localAddress)} stopped accepting`);
  }

  accept(opts?: SignalOptions): Promise<Connection> {
    // After a graceful close, connections it took are still handed out; after abortAccept()
    // the queue is empty.
    if (this.aborted && this.queued === 0) return rejectedHandled(this.abortedError());
    let signal: AbortSignal | undefined;
    try {
      signal = signalOption("accept", opts);
    } catch (e) {
      return Promise.reject(e);
    }
    if (signal?.aborted) return Promise.reject(new AbortError("accept was aborted", { cause: signal.reason }));
    if (this.queued > 0) {
      const c = this.queue[this.queueHead]!;
      this.queue[this.queueHead++] = undefined as never;
      if (this.queueHead > 64 && this.queueHead * 2 > this.queue.length) {
        this.queue.splice(0, this.queueHead);
        this.queueHead = 0;
      }
      this.makeRoom();
      // Its idle time counts from now: waiting here, unread, was no silence of the peer's (an
      // idle timeout closed it in the queue, and accept() handed out a dead connection).
      c.unclaimed = false;
      c.lastActivity = now();
      return Promise.resolve(c);
    }
    return new Promise<Connection>((resolve, reject) => {
      const w: AcceptWaiter = { resolve, reject, signal, onAbort: undefined };
      if (signal !== undefined) {
        w.onAbort = () => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(new AbortError("accept was aborted", { cause: signal.reason }));
        };
        signal.addEventListener("abort", w.onAbort, { once: true });
      }
      this.waiters.push(w);
    });
  }

  abortAccept(): void {
    this.takingPending = false;
    if (!this.aborted) {
      this.aborted = true;
      this.cancelAccept();
      // SHUT_RD on a listening socket stops it: the kernel refuses new peers from now on.
      if (this.fd >= 0) shutdownSocket(this.fd, SHUT_RD);
    }
    const waiters = this.waiters.splice(0);
    for (const w of waiters) {
      this.settle(w);
      w.reject(this.abortedError());
    }
    while (this.queued > 0) {
      const c = this.queue[this.queueHead]!;
      this.queue[this.queueHead++] = undefined as never;
      c.reset();
    }
    this.queue.length = 0;
    this.queueHead = 0;
    for (const fd of this.overflow.splice(0)) {
      closeNow(fd);
      this.stack.counters.connectionsRejected++;
    }
  }

  close(opts?: ListenerCloseOptions): Promise<void> {
    checkOptionKeys("close", opts, ["acceptPending"]);
    const graceful = booleanOption("close", "acceptPending", opts?.acceptPending, false);
    if (this.closing !== undefined) return this.closing;
    if (graceful && !this.aborted) {
      // Accepting stops (no re-arm once closing); the accept in flight is cancelled and its
      // last completions admitted as usual, then takePending() empties the kernel's queue.
      this.takingPending = true;
      this.cancelAccept();
    } else {
      this.abortAccept();
    }
    this.backoff?.cancel();
    this.backoff = undefined;
    this.closing = new Promise<void>((resolve) => {
      this.resolveClosed = resolve;
    });
    if (this.takingPending) {
      if (this.acceptSlot < 0) this.takePending();
    } else {
      this.maybeCloseFd();
    }
    return this.closing;
  }

  private maybeCloseFd(): void {
    if (this.acceptSlot >= 0 || this.fd < 0) return;
    const fd = this.fd;
    this.fd = -1;
    this.r.prepare(IoOp.CLOSE, fd, 0, 0, 0, 0, new ListenerCloseHandler(this));
  }

  /** @internal The kernel closed the listening socket. */
  onClosed(): void {
    const f = this.socketFile;
    if (f !== undefined && this.opts.unlinkOnClose) {
      try {
        const st = lstatSync(f.path, { bigint: true });
        // Only the socket this listener bound: not a file or a newer server's socket since.
        if (st.isSocket() && st.dev === f.dev && st.ino === f.ino) unlinkSync(f.path);
      } catch {
        // Already removed by someone else: nothing to clean up.
      }
    }
    this.stack.listenerChanged(-1);
    this.resolveClosed!();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  [Symbol.asyncIterator](): AsyncIterator<Connection> {
    return {
      next: async (): Promise<IteratorResult<Connection>> => {
        try {
          return { done: false, value: await this.accept() };
        } catch (e) {
          if (this.aborted && e instanceof SystemError && e.errno === ECONNABORTED) return { done: true, value: undefined };
          throw e;
        }
      },
      return: async (): Promise<IteratorResult<Connection>> => ({ done: true, value: undefined }),
    };
  }
}
