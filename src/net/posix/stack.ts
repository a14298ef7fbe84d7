/**
 * The posix network stack: kernel sockets driven by the shard's io_uring. One per shard
 * (module state, like the reactor). It owns two provided-buffer rings: the stream ring every
 * connection receives into (recvBufferSize buffers), and the datagram ring of UDP channels,
 * made when the first channel binds, whose buffers hold the largest datagram whole. It also
 * owns the msghdr blocks, and a hook the loop runs once per turn, before the kernel is entered,
 * which (1) grows each ring ahead of need and publishes its recycled buffers, (2) re-arms
 * receives that stopped on ENOBUFS once their ring has buffers again, and (3) issues one send
 * for every connection written to in this turn, so that all of a turn's sends reach the kernel
 * in the same io_uring_enter.
 */
import { AbortError, InvalidArgumentError, SystemError } from "../../core/errors.ts";
import { IoOp, reactor, type PrepareExtra, type ReactorTenant } from "../../core/reactor.ts";
import { addPoller, refLoop } from "../../core/loop.ts";
import { Timer, now } from "../../core/timer.ts";
import { probeIoUring } from "../../core/probe.ts";
import { NativeSlab } from "../slab.ts";
import { sendChunks } from "../output.ts";
import { booleanOption, CONNECT_OPTIONS, resolveConnectionOptions, resolveListenOptions, signalOption } from "../options.ts";
import { checkDestination, encodeSockaddr, formatAddress, parseAddress, type AddressInput, type SocketAddress } from "../address.ts";

/** connect() errors after which a name's next address is tried. */
const TRY_NEXT = new Set([
  111, // ECONNREFUSED
  101, // ENETUNREACH
  113, // EHOSTUNREACH
  99, // EADDRNOTAVAIL
  97, // EAFNOSUPPORT
  110, // ETIMEDOUT (the kernel's own, not the caller's timeoutMs)
  13, // EACCES (a local policy refuses this destination: a prohibit route, an LSM)
  1, // EPERM (a local firewall drops it)
]);

/**
 * TRY_NEXT errors that say only that this host cannot use the address (no socket of its family,
 * no route, no source address, a local policy): after trying a name's next address, a failure
 * that came from the peer's side (refused, timed out) says more, and is the one reported.
 */
const UNUSABLE_HERE = new Set([97, 99, 101, 13, 1]);

/**
 * How long a connection attempt to one of a name's addresses waits before the next address is
 * tried beside it (RFC 8305's Connection Attempt Delay; Node's autoSelectFamilyAttemptTimeout).
 */
const ATTEMPT_DELAY_MS = 250;

/**
 * A name's addresses in the resolver's order, the families alternating from the first one's
 * (RFC 8305 section 4): two IPv6 addresses that drop SYNs no longer hold the IPv4 one back for
 * two attempt delays.
 */
function interleaveFamilies(addresses: SocketAddress[]): SocketAddress[] {
  if (addresses.length < 3) return addresses;
  const first = addresses[0]!.family;
  const same = addresses.filter((a) => a.family === first);
  const other = addresses.filter((a) => a.family !== first);
  if (other.length === 0) return addresses;
  const out: SocketAddress[] = [];
  for (let i = 0; i < Math.max(same.length, other.length); i++) {
    if (i < same.length) out.push(same[i]!);
    if (i < other.length) out.push(other[i]!);
  }
  return out;
}

/** A connection attempt's failure and the address it was for (raceAttempts). */
class AttemptFailure {
  constructor(
    readonly error: unknown,
    readonly at: SocketAddress,
  ) {}
}

/** An address as the caller gave it, for messages before it was resolved. */
function describeInput(input: AddressInput): string {
  if (typeof input === "string" || typeof input === "number") return String(input);
  if (input === null || typeof input !== "object") return describeValue(input);
  const o = input as { host?: string; port?: number; path?: string };
  return o.path ?? `${o.host}:${o.port}`;
}
import { resolveAddresses } from "../resolve.ts";
import type { ConnectOptions, Connection, ListenOptions, NetStats, NetworkStack, UdpChannel, UdpOptions } from "../types.ts";
import { RxRing } from "./rx-ring.ts";
import { MAX_IOV, PosixConnection } from "./connection.ts";
import { PosixListener } from "./listener.ts";
import { PosixUdpChannel, UDP_RECV_BUFFER_SIZE } from "./udp.ts";
import { IPPROTO_TCP, SOCK_STREAM, TCP_NODELAY, bindTo, closeNow, setIntOption, socketFor } from "./sys.ts";
import { describeValue } from "../../core/describe.ts";


const IOSQE_BUFFER_SELECT = 1 << 5;
const IORING_RECV_MULTISHOT = 1 << 1;
const ETIMEDOUT = 110;
/** The buffer group ids of the stream receive ring and the datagram one. */
const RECV_GROUP = 0x5e;
const UDP_RECV_GROUP = RECV_GROUP + 1;

/** Settings of the posix stack; see configureNet. */
export interface PosixStackOptions {
  /** Bytes per stream (TCP, Unix) receive buffer (multiple of 64, default 16384). */
  recvBufferSize?: number | undefined;
  /**
   * Receive buffers the shard starts with, and the step it grows by (default 256: 4 MiB at
   * 16 KiB). The ring hands buffers out in FIFO order, so under load every buffer in it is
   * touched: this is the resident size of an idle-again shard.
   */
  recvBufferCount?: number | undefined;
  /**
   * Receive buffers the pool may grow to when readers hold many (power of two up to 32768,
   * default 8192: 128 MiB of address space at 16 KiB, touched only as used). Past it, receives
   * wait for buffers (ENOBUFS) until readers release some.
   */
  recvBufferMax?: number | undefined;
  /**
   * Datagram receive buffers the shard starts with once its first UDP channel binds, and the
   * step it grows by (integer in 1..udpRecvBufferMax, default 32: 2 MiB of address space).
   * UDP channels receive into a ring of their own, whose buffers hold the largest datagram
   * whole (UDP_RECV_BUFFER_SIZE, 65728 bytes: 65535 payload bytes, the recvmsg header and the
   * source address), so that no datagram arrives truncated; a shard without UDP channels maps
   * nothing for it. The kernel writes only the datagram's bytes: a small datagram touches one
   * or two pages of its buffer, so the resident size follows the datagrams, not the buffers.
   */
  udpRecvBufferCount?: number | undefined;
  /**
   * Datagram receive buffers the ring may grow to (power of two up to 32768, default 1024:
   * 64 MiB of address space, touched only as datagrams fill it). Each channel holds at most
   * its maxQueued unread datagrams and the one last received; past the cap, receives wait for
   * buffers (ENOBUFS) until readers release some, and the kernel queues datagrams meanwhile.
   */
  udpRecvBufferMax?: number | undefined;
  /**
   * NativeBuffer writes at least this long use zero-copy sends (default 65536; Infinity: never),
   * until the kernel reports that it copied one connection's data anyway (a peer on this host:
   * loopback delivery copies; a device without scatter-gather): that connection's later sends
   * are plain ones (netStats().sendsZeroCopyCopied counts the switches).
   */
  zeroCopySendMin?: number | undefined;
  /** Poison recycled receive buffers (debug; default: SHOAL_DEBUG_POISON=1). */
  poisonBuffers?: boolean | undefined;
  /**
   * Graceful closes that may linger at once on this shard (integer >= 0, default 4096): each
   * keeps its socket (a descriptor) until the peer has everything or closeTimeoutMs. Past it a
   * close does not linger (the kernel still sends what was queued, as after a plain close), so
   * that clients which never read what they asked for cannot make closed connections hold every
   * descriptor. netStats(): closesLingering, closesNotLingered.
   */
  lingerMax?: number | undefined;
}

/** The operations the posix stack needs beyond the core set. */
const NET_OPS = [IoOp.ACCEPT, IoOp.CONNECT, IoOp.SEND, IoOp.RECV, IoOp.SENDMSG, IoOp.RECVMSG, IoOp.SEND_ZC];

interface Sender {
  dirty: boolean;
  startSend(): void;
}

/** A socket whose multishot receive stopped with ENOBUFS. */
interface Starvable {
  starved: boolean;
  resumeAfterStarve(): void;
}

/** The posix NetworkStack of this shard (see the file comment); get it with posixStack(). */
export class PosixStack implements NetworkStack {
  readonly name = "posix";
  /** Stream receive-buffer ring (created with the first socket). */
  rx!: RxRing;
  /** Datagram receive-buffer ring (created when the first UDP channel binds). */
  udpRx: RxRing | undefined;
  /** SQE extras of UDP channels' multishot receives (selecting from udpRx). */
  udpRecvExtra!: PrepareExtra;
  /** msghdr + iovec blocks (sendmsg, connect sockaddrs, datagrams). */
  readonly msgs = new NativeSlab("msghdr blocks", 64 + MAX_IOV * 16 + 64, 256);
  /** SQE extras of every multishot receive. */
  recvExtra!: PrepareExtra;
  /** The same with a total length limit (sqe optlen, which shares file_index's field). */
  recvExtraLimited!: PrepareExtra & { fileIndex: number };
  /** A single-shot receive into one provided buffer (a starved connection's first, see resumeAfterStarve). */
  recvExtraOnce!: PrepareExtra;
  /** False once the kernel refused a multishot receive length limit (older than the feature). */
  recvLimitSupported = true;
  zeroCopySendMin = 65536;
  /** False once the kernel refused IORING_SEND_ZC_REPORT_USAGE (before Linux 6.2). */
  zeroCopyReportUsage = true;
  readonly counters = {
    connectionsAccepted: 0,
    connectionsRejected: 0,
    recvPauses: 0,
    recvStarved: 0,
    recvSpilled: 0,
    sends: 0,
    sendBytes: 0,
    sendsShort: 0,
    sendsZeroCopy: 0,
    sendsZeroCopyCopied: 0,
    timeouts: 0,
    closesNotLingered: 0,
  };
  /** Connections whose close lingers now (see PosixConnection.linger). */
  private lingering = 0;
  private config: { [K in keyof PosixStackOptions]-?: Exclude<PosixStackOptions[K], undefined> } = {
    recvBufferSize: 16384,
    recvBufferCount: 256,
    recvBufferMax: 8192,
    udpRecvBufferCount: 32,
    udpRecvBufferMax: 1024,
    zeroCopySendMin: 65536,
    poisonBuffers: process.env["SHOAL_DEBUG_POISON"] === "1",
    lingerMax: 4096,
  };
  private started = false;
  private growStep = 256;
  private dirty: Sender[] = [];
  private spare: Sender[] = [];
  private starved: Starvable[] = [];
  private udpGrowStep = 32;
  private udpStarved: Starvable[] = [];
  /** Connections not yet released (their inputs may hold receive buffers). */
  private readonly open = new Set<PosixConnection>();
  /** rx.takes at the last spill. */
  private spilledAtTakes = -1;
  private readonly timed = new Set<PosixConnection>();
  private sweeper: Timer | undefined;
  private sweepPeriodMs = Infinity;
  private sockets = 0;
  private connections = 0;
  private listeners = 0;
  private channels = 0;
  private removePoller: (() => void) | undefined;
  private unref: (() => void) | undefined;
  private readonly poll = () => this.onTurn();
  /**
   * The stack's buffer rings are registered on the shard's reactor of the time: while a socket
   * is open or a receive buffer held, that reactor refuses destroy(); else it lets the stack give
   * the rings back, and the next socket makes new ones on the shard's next reactor.
   */
  private readonly tenant: ReactorTenant = { busy: () => this.busyReason(), detach: () => this.detachRings() };

  /**
   * Changes settings; buffer sizes only before the first socket. Throws InvalidArgumentError.
   * Every option is checked before any is applied: a bad one changes nothing.
   */
  configure(options: PosixStackOptions): void {
    if (typeof options !== "object" || options === null) {
      throw new InvalidArgumentError(`configureNet: options must be an object, got ${describeValue(options)}`);
    }
    const o = options;
    if (this.started && (o.recvBufferSize !== undefined || o.recvBufferCount !== undefined || o.recvBufferMax !== undefined)) {
      throw new InvalidArgumentError("configureNet: receive buffers are fixed once the first socket opened");
    }
    const c = this.config;
    // The whole pool is one mapping viewed by one ArrayBuffer, which holds at most 4 GiB.
    const size = o.recvBufferSize ?? c.recvBufferSize;
    const max = o.recvBufferMax ?? c.recvBufferMax;
    if (typeof size === "number" && typeof max === "number" && size * max > 2 ** 32) {
      throw new InvalidArgumentError(
        `configureNet: recvBufferSize x recvBufferMax must be at most 4 GiB (one mapping), got ${describeValue(size)} x ${max}; lower recvBufferMax`,
      );
    }
    if (!Number.isInteger(size) || size < 512 || size > 1 << 20 || size % 64 !== 0) {
      throw new InvalidArgumentError(`configureNet: recvBufferSize must be a multiple of 64 in 512..1048576, got ${describeValue(size)}`);
    }
    if (!Number.isInteger(max) || max < 2 || max > 32768 || (max & (max - 1)) !== 0) {
      throw new InvalidArgumentError(`configureNet: recvBufferMax must be a power of two in 2..32768, got ${describeValue(max)}`);
    }
    const count = o.recvBufferCount ?? Math.min(c.recvBufferCount, max);
    if (!Number.isInteger(count) || count < 1 || count > max) {
      throw new InvalidArgumentError(`configureNet: recvBufferCount must be an integer in 1..recvBufferMax (${max}), got ${describeValue(count)}`);
    }
    if (this.udpRx !== undefined && (o.udpRecvBufferCount !== undefined || o.udpRecvBufferMax !== undefined)) {
      throw new InvalidArgumentError("configureNet: UDP receive buffers are fixed once the first UDP channel bound");
    }
    // The datagram ring's buffers have a fixed size (the largest datagram): 32768 of them are 2 GiB.
    const udpMax = o.udpRecvBufferMax ?? c.udpRecvBufferMax;
    if (!Number.isInteger(udpMax) || udpMax < 2 || udpMax > 32768 || (udpMax & (udpMax - 1)) !== 0) {
      throw new InvalidArgumentError(`configureNet: udpRecvBufferMax must be a power of two in 2..32768, got ${describeValue(udpMax)}`);
    }
    const udpCount = o.udpRecvBufferCount ?? Math.min(c.udpRecvBufferCount, udpMax);
    if (!Number.isInteger(udpCount) || udpCount < 1 || udpCount > udpMax) {
      throw new InvalidArgumentError(
        `configureNet: udpRecvBufferCount must be an integer in 1..udpRecvBufferMax (${udpMax}), got ${describeValue(udpCount)}`,
      );
    }
    const zeroCopySendMin = o.zeroCopySendMin ?? c.zeroCopySendMin;
    if (typeof zeroCopySendMin !== "number" || !(zeroCopySendMin >= 1)) {
      throw new InvalidArgumentError(`configureNet: zeroCopySendMin must be a number >= 1, got ${describeValue(zeroCopySendMin)}`);
    }
    // Only a boolean says which: the string "false" turned poisoning on.
    const poison = booleanOption("configureNet", "poisonBuffers", o.poisonBuffers, c.poisonBuffers);
    const lingerMax = o.lingerMax ?? c.lingerMax;
    if (typeof lingerMax !== "number" || !Number.isSafeInteger(lingerMax) || lingerMax < 0) {
      throw new InvalidArgumentError(`configureNet: lingerMax must be an integer >= 0, got ${describeValue(lingerMax)}`);
    }
    c.recvBufferSize = size;
    c.recvBufferMax = max;
    c.recvBufferCount = count;
    c.udpRecvBufferMax = udpMax;
    c.udpRecvBufferCount = udpCount;
    c.zeroCopySendMin = zeroCopySendMin;
    this.zeroCopySendMin = zeroCopySendMin;
    c.poisonBuffers = poison;
    c.lingerMax = lingerMax;
    if (this.started) this.rx.poison = poison;
    if (this.udpRx !== undefined) this.udpRx.poison = poison;
  }

  private start(): void {
    if (this.started) return;
    probeIoUring(NET_OPS);
    const r = reactor();
    const c = this.config;
    this.rx = new RxRing(r.nativeHandle, RECV_GROUP, c.recvBufferMax, c.recvBufferSize, c.recvBufferCount);
    this.growStep = c.recvBufferCount;
    this.rx.poison = this.config.poisonBuffers;
    this.recvExtra = { sqeFlags: IOSQE_BUFFER_SELECT, buf: RECV_GROUP, ioprio: IORING_RECV_MULTISHOT };
    this.recvExtraLimited = { ...this.recvExtra, fileIndex: 0 };
    this.recvExtraOnce = { sqeFlags: IOSQE_BUFFER_SELECT, buf: RECV_GROUP };
    this.zeroCopySendMin = this.config.zeroCopySendMin;
    r.addTenant(this.tenant);
    this.started = true;
  }

  /** Why the reactor the rings are on cannot be destroyed now, or undefined. */
  private busyReason(): string | undefined {
    if (this.sockets > 0) return `the posix network stack has ${this.sockets} socket(s) open`;
    const held = this.rx.inUse + (this.udpRx?.inUse ?? 0);
    if (held > 0) return `the posix network stack's readers hold ${held} receive buffer(s)`;
    return undefined;
  }

  /**
   * The reactor is being destroyed (its ring still open, nothing in flight, no socket open, no
   * buffer held): unregister and unmap the rings. The next socket starts afresh on the next one.
   */
  private detachRings(): void {
    for (const ring of [this.rx, this.udpRx]) {
      if (ring === undefined) continue;
      // A view someone kept reads as empty instead of touching unmapped pages.
      if (!ring.region.detached) ring.region.transfer();
      ring.destroy();
    }
    this.udpRx = undefined;
    this.starved.length = 0;
    this.udpStarved.length = 0;
    this.spilledAtTakes = -1;
    this.started = false;
  }

  /**
   * @internal The datagram ring, made on first use (the first UDP channel's bind): shards
   * without UDP channels map and register nothing for it. Throws SystemError.
   */
  datagramRing(): RxRing {
    if (this.udpRx !== undefined) return this.udpRx;
    this.start();
    const c = this.config;
    // start() registered the stream ring on this same reactor (destroy() makes both go together).
    const ring = new RxRing(reactor().nativeHandle, UDP_RECV_GROUP, c.udpRecvBufferMax, UDP_RECV_BUFFER_SIZE, c.udpRecvBufferCount);
    ring.poison = c.poisonBuffers;
    this.udpGrowStep = c.udpRecvBufferCount;
    this.udpRecvExtra = { sqeFlags: IOSQE_BUFFER_SELECT, buf: UDP_RECV_GROUP, ioprio: IORING_RECV_MULTISHOT };
    this.udpRx = ring;
    return ring;
  }

  /** @internal A socket opened: the per-turn hook and a loop ref live while any is open. */
  socketOpened(): void {
    this.start();
    if (this.sockets++ === 0) {
      this.removePoller = addPoller(this.poll);
      this.unref = refLoop();
    }
  }

  /** @internal A socket was released. */
  socketClosed(): void {
    if (--this.sockets === 0) {
      this.removePoller?.();
      this.unref?.();
      this.removePoller = undefined;
      this.unref = undefined;
    }
  }

  // ---- the per-turn hook --------------------------------------------------------------------

  private onTurn(): boolean {
    const rx = this.rx;
    let did = this.growAndPublish(rx, this.starved, this.growStep);
    // At the cap nothing more is coming: re-arm with whatever came back.
    const rearmAt = rx.total < rx.entries ? Math.min(32, rx.entries >> 3) : 1;
    if (this.starved.length > 0 && rx.total >= rx.entries && rx.available < rearmAt && rx.takes !== this.spilledAtTakes) {
      // Receives ran dry at the pool's cap: bytes queued unread (partial messages waiting for
      // their rest, readers behind) move out of the pool, so that they cannot keep every
      // connection of the shard from receiving, their own rest and peers' FINs included. Not
      // again until the kernel has filled buffers since (leases and sends cannot be moved).
      this.spilledAtTakes = rx.takes;
      for (const c of this.open) this.counters.recvSpilled += c.input.spill();
      did = rx.publish() || did;
    }
    did = this.rearm(rx, this.starved, rearmAt) || did;
    const u = this.udpRx;
    if (u !== undefined) {
      // Datagrams cannot be spilled (a channel's queue is bounded by its maxQueued instead).
      did = this.growAndPublish(u, this.udpStarved, this.udpGrowStep) || did;
      did = this.rearm(u, this.udpStarved, u.total < u.entries ? Math.min(32, this.udpGrowStep, u.entries >> 3) : 1) || did;
    }
    if (this.dirty.length > 0) {
      const list = this.dirty;
      this.dirty = this.spare;
      for (let i = 0; i < list.length; i++) list[i]!.startSend();
      list.length = 0;
      this.spare = list;
      did = true;
    }
    return did;
  }

  /**
   * Readers hold many buffers (leases of many idle sockets, slow readers): grows `ring` by
   * `step` before receives run dry, up to its cap, then publishes what came back.
   */
  private growAndPublish(ring: RxRing, starved: Starvable[], step: number): boolean {
    if (ring.total < ring.entries && (starved.length > 0 || ring.available < ring.total >> 3)) ring.grow(step);
    return ring.publish();
  }

  /** Re-arms the receives of `starved` (in place) once `ring` has `rearmAt` buffers free. */
  private rearm(ring: RxRing, starved: Starvable[], rearmAt: number): boolean {
    if (starved.length === 0 || ring.available < rearmAt) return false;
    // Each re-armed receive needs at least one buffer: wake no more than there are.
    let budget = ring.available;
    let i = 0;
    for (; i < starved.length && budget > 0; i++) {
      const c = starved[i]!;
      if (!c.starved) continue;
      c.resumeAfterStarve();
      budget--;
    }
    starved.splice(0, i);
    return true;
  }

  /** @internal Queues `s` for this turn's send batch. */
  markDirty(s: Sender): void {
    if (s.dirty) return;
    s.dirty = true;
    this.dirty.push(s);
  }

  /** @internal `c`'s receive stopped with ENOBUFS: re-arm it once buffers are back. */
  starve(c: Starvable): void {
    if (c.starved) return;
    c.starved = true;
    this.counters.recvStarved++;
    this.starved.push(c);
  }

  /** @internal A UDP channel's receive stopped with ENOBUFS: re-arm it once the datagram ring has buffers. */
  starveDatagrams(c: Starvable): void {
    if (c.starved) return;
    c.starved = true;
    this.counters.recvStarved++;
    this.udpStarved.push(c);
  }

  // ---- connections and timeouts -------------------------------------------------------------

  /** @internal */
  connectionOpened(c: PosixConnection): void {
    this.socketOpened();
    this.connections++;
    this.open.add(c);
    if (c.idleTimeoutMs > 0 || c.readTimeoutMs > 0) {
      this.timed.add(c);
      const shortest = Math.min(c.idleTimeoutMs || Infinity, c.readTimeoutMs || Infinity);
      const period = Math.min(250, Math.max(5, shortest / 4));
      if (this.sweeper === undefined || period < this.sweepPeriodMs) {
        this.sweeper?.cancel();
        this.sweepPeriodMs = period;
        this.sweeper = new Timer(() => this.sweep()).unref().armPeriodic(period);
      }
    }
  }

  /** @internal `c` started closing: no more timeouts or receive re-arms. */
  connectionClosing(c: PosixConnection): void {
    c.starved = false;
    if (this.timed.delete(c) && this.timed.size === 0 && this.sweeper !== undefined) {
      this.sweeper.cancel();
      this.sweeper = undefined;
      this.sweepPeriodMs = Infinity;
    }
  }

  /** @internal `c`'s fd is closed and its buffers released. */
  connectionReleased(c: PosixConnection): void {
    this.open.delete(c);
    this.connections--;
    this.socketClosed();
  }

  private sweep(): void {
    const t = now();
    for (const c of this.timed) c.checkTimeouts(t);
  }

  /** @internal */
  listenerChanged(delta: number): void {
    this.listeners += delta;
    if (delta > 0) this.socketOpened();
    else this.socketClosed();
  }

  /** @internal */
  channelChanged(delta: number): void {
    this.channels += delta;
    if (delta > 0) this.socketOpened();
    else this.socketClosed();
  }

  // ---- NetworkStack -------------------------------------------------------------------------

  listen(address: AddressInput, options?: ListenOptions): PosixListener {
    const a = parseAddress(address, "listen");
    const opts = resolveListenOptions(options);
    this.start();
    return new PosixListener(this, a, opts);
  }

  async connect(address: AddressInput, options?: ConnectOptions): Promise<Connection> {
    const opts = resolveConnectionOptions("connect", options, CONNECT_OPTIONS);
    const timeoutMs = options?.timeoutMs;
    if (timeoutMs !== undefined && (typeof timeoutMs !== "number" || !(timeoutMs > 0) || !Number.isFinite(timeoutMs))) {
      throw new InvalidArgumentError(`connect: timeoutMs must be a finite number > 0, got ${String(timeoutMs)}`);
    }
    const local = options?.localAddress !== undefined ? parseAddress(options.localAddress, "connect localAddress") : undefined;
    // Checked before anything is armed (a bad one left the timeout timer armed for good).
    const signal = signalOption("connect", options);
    if (signal?.aborted) throw new AbortError("connect was aborted", { cause: signal.reason });
    // The timeout and the signal cover the whole call: name resolution, then the connect.
    let sig = signal;
    let timer: Timer | undefined;
    let controller: AbortController | undefined;
    let forward: (() => void) | undefined;
    const timedOut = { reason: "timeout" };
    if (timeoutMs !== undefined) {
      const c = (controller = new AbortController());
      timer = new Timer(() => c.abort(timedOut)).arm(timeoutMs);
      if (signal !== undefined) {
        forward = () => c.abort(signal.reason);
        signal.addEventListener("abort", forward, { once: true });
      }
      sig = c.signal;
    }
    // The addresses whose attempts are still waiting (for a timeout's message).
    const tried: SocketAddress[] = [];
    try {
      let candidates = await resolveAddresses(address, "connect", sig);
      if (local !== undefined && candidates.length > 1) {
        // A socket bound to localAddress reaches only addresses of its family: binding one of the
        // other failed (EINVAL for an IPv4 localAddress on an IPv6 socket) and ended the call,
        // though the name had an address of the right family after it.
        const same = candidates.filter((c) => c.family === local.family);
        if (same.length > 0) candidates = same;
      }
      const { fd, a } = await this.raceAttempts(interleaveFamilies(candidates), opts.noDelay, local, sig, tried);
      return new PosixConnection(this, fd, a.family, opts, undefined, a);
    } catch (caught) {
      let e = caught;
      let where = describeInput(address);
      if (e instanceof AttemptFailure) {
        where = formatAddress(e.at);
        e = e.error;
      }
      // A cancelled CONNECT usually completes with ECANCELED (an AbortError), but one the
      // kernel had handed to a worker (a Unix listener with a full backlog) with EINTR: the
      // signal decides what the caller gets.
      if (sig?.aborted) {
        if (controller?.signal.reason === timedOut) {
          const names = tried.length > 0 ? tried.map(formatAddress).join(", ") : describeInput(address);
          throw new SystemError("connect", ETIMEDOUT, `${names} did not answer within ${timeoutMs} ms`);
        }
        if (!(e instanceof AbortError)) throw new AbortError("connect was aborted", { cause: sig.reason });
      }
      if (e instanceof SystemError && e.op === "connect") throw new SystemError("connect", e.errno, where);
      throw e;
    } finally {
      timer?.cancel();
      if (forward !== undefined) signal!.removeEventListener("abort", forward);
    }
  }

  /**
   * Connects to the first of `candidates` that answers (RFC 8305's Happy Eyeballs): an attempt
   * starts on each address in turn, at once when the one before it failed with an error after
   * which another address may do (TRY_NEXT), or after ATTEMPT_DELAY_MS while it is still
   * waiting, which goes on in parallel (an address that drops SYNs took the whole timeoutMs,
   * and the name's next address was never tried). Not in parallel with a `local` address of a
   * fixed port (or path): a second socket cannot bind it while the first holds it (bind
   * EADDRINUSE ended the call). The first to connect wins and the others are cancelled. Any
   * other error starts no further attempt and ends the call, once the attempts already
   * waiting have failed too (one of them may still connect: a parallel attempt's EMFILE or
   * EINVAL ended a call that the address before it would have connected). When every attempt
   * failed with TRY_NEXT errors, the last failure is reported, or the last one from a peer's
   * side if the last says only that this host cannot use its address (UNUSABLE_HERE). Rejects
   * with AttemptFailure (or the error of checkDestination, AbortError through `sig`), only
   * once every attempt has ended (nothing of the call, socket, ring operation or message
   * block, outlives it). `tried` holds the addresses of the attempts still waiting (those that
   * failed are taken out), for a timeout's message.
   */
  private raceAttempts(
    candidates: SocketAddress[],
    noDelay: boolean,
    local: SocketAddress | undefined,
    sig: AbortSignal | undefined,
    tried: SocketAddress[],
  ): Promise<{ fd: number; a: SocketAddress }> {
    const parallel = local === undefined || (local.family !== "unix" && local.port === 0);
    return new Promise((resolve, reject) => {
      const running: AbortController[] = [];
      let next = 0;
      // Won or ending: no attempt starts, the running ones are cancelled.
      let settled = false;
      let stagger: Timer | undefined;
      let last: AttemptFailure | undefined;
      let telling: AttemptFailure | undefined;
      // A failure after which no other address is tried (reported once the running ones failed).
      let fatal: unknown;
      let ending = false;
      let rejection: unknown;
      const stop = (): void => {
        settled = true;
        stagger?.cancel();
        stagger = undefined;
        sig?.removeEventListener("abort", onAbort);
        for (const c of running) c.abort();
      };
      // Rejects with `why` once every attempt has ended.
      const end = (why: unknown): void => {
        stop();
        ending = true;
        rejection = why;
        if (running.length === 0) reject(why);
      };
      const onAbort = (): void => {
        if (!settled) end(new AbortError("connect was aborted", { cause: sig!.reason }));
      };
      const attemptEnded = (): void => {
        if (ending && running.length === 0) reject(rejection);
      };
      const startNext = (): void => {
        stagger?.cancel();
        stagger = undefined;
        if (settled || fatal !== undefined || next >= candidates.length) return;
        let a: SocketAddress;
        try {
          // Port 0 is "any port" for a bind, never a peer: refused here, not by the kernel.
          a = checkDestination(candidates[next++]!, "connect");
        } catch (e) {
          fatal = e;
          if (running.length === 0) end(e);
          return;
        }
        tried.push(a);
        const ctl = new AbortController();
        running.push(ctl);
        this.attempt(a, noDelay, local, ctl.signal).then(
          (fd) => {
            running.splice(running.indexOf(ctl), 1);
            if (settled) {
              closeNow(fd);
              attemptEnded();
              return;
            }
            stop();
            resolve({ fd, a });
          },
          (e: unknown) => {
            running.splice(running.indexOf(ctl), 1);
            if (settled) {
              attemptEnded();
              return;
            }
            // It answered: a timeout's message names only the addresses still waiting.
            const i = tried.indexOf(a);
            if (i >= 0) tried.splice(i, 1);
            const failure = new AttemptFailure(e, a);
            if (!(e instanceof SystemError && TRY_NEXT.has(e.errno))) {
              fatal ??= failure;
              stagger?.cancel();
              stagger = undefined;
            } else {
              last = failure;
              if (!UNUSABLE_HERE.has(e.errno)) telling = failure;
            }
            if (fatal === undefined && next < candidates.length) {
              startNext();
            } else if (running.length === 0) {
              if (fatal !== undefined) end(fatal);
              else end(UNUSABLE_HERE.has((last!.error as SystemError).errno) && telling !== undefined ? telling : last);
            }
          },
        );
        if (parallel && next < candidates.length) stagger = new Timer(startNext).arm(ATTEMPT_DELAY_MS);
      };
      if (sig?.aborted) {
        reject(new AbortError("connect was aborted", { cause: sig.reason }));
        return;
      }
      sig?.addEventListener("abort", onAbort, { once: true });
      startNext();
    });
  }

  /** One connection attempt to `a`: the connected fd, or the failure (its socket closed). */
  private async attempt(a: SocketAddress, noDelay: boolean, local: SocketAddress | undefined, signal: AbortSignal): Promise<number> {
    this.start();
    let fd = -1;
    let block = -1;
    try {
      fd = socketFor(a, SOCK_STREAM);
      if (a.family !== "unix" && noDelay) setIntOption("setsockopt(TCP_NODELAY)", fd, IPPROTO_TCP, TCP_NODELAY, 1);
      if (local !== undefined) bindTo(fd, local);
      block = this.msgs.acquire();
      const len = encodeSockaddr(a, this.msgs.view(block));
      await reactor().submit("connect", IoOp.CONNECT, fd, this.msgs.address(block), 0, len, 0, { signal });
      const connected = fd;
      fd = -1;
      return connected;
    } finally {
      if (fd >= 0) closeNow(fd);
      if (block >= 0) this.msgs.release(block);
    }
  }

  bindUdp(address: AddressInput, options?: UdpOptions): UdpChannel {
    const a = parseAddress(address, "bindUdp");
    this.start();
    return new PosixUdpChannel(this, a, options);
  }

  stats(): NetStats {
    const rx = this.started ? this.rx : undefined;
    return {
      connectionsOpen: this.connections,
      connectionsAccepted: this.counters.connectionsAccepted,
      connectionsRejected: this.counters.connectionsRejected,
      listenersOpen: this.listeners,
      udpChannelsOpen: this.channels,
      recvBuffersFree: rx?.available ?? 0,
      recvBuffersTotal: rx?.total ?? 0,
      recvBuffersHeld: rx?.inUse ?? 0,
      udpRecvBuffersFree: this.udpRx?.available ?? 0,
      udpRecvBuffersTotal: this.udpRx?.total ?? 0,
      udpRecvBuffersHeld: this.udpRx?.inUse ?? 0,
      recvPauses: this.counters.recvPauses,
      recvStarved: this.counters.recvStarved,
      recvSpilled: this.counters.recvSpilled,
      sendMemoryMapped: sendChunks.mappedBytes,
      sendMemoryInUse: sendChunks.usedBytes,
      sends: this.counters.sends,
      sendBytes: this.counters.sendBytes,
      sendsShort: this.counters.sendsShort,
      sendsZeroCopy: this.counters.sendsZeroCopy,
      sendsZeroCopyCopied: this.counters.sendsZeroCopyCopied,
      timeouts: this.counters.timeouts,
      closesLingering: this.lingering,
      closesNotLingered: this.counters.closesNotLingered,
    };
  }

  /**
   * @internal A close asks to linger: true, and counted until endLinger(), while fewer than
   * lingerMax do; else false (counted in closesNotLingered).
   */
  startLinger(): boolean {
    if (this.lingering >= this.config.lingerMax) {
      this.counters.closesNotLingered++;
      return false;
    }
    this.lingering++;
    return true;
  }

  /** @internal A close that startLinger() let linger issued its CLOSE. */
  endLinger(): void {
    this.lingering--;
  }
}

let instance: PosixStack | undefined;

/** This shard's posix stack (created on first use; sockets open lazily). */
export function posixStack(): PosixStack {
  return (instance ??= new PosixStack());
}

