/**
 * A UDP socket on io_uring. Receiving is one multishot RECVMSG selecting from the shard's
 * datagram ring (its own buffer group, not the streams' ring: made when the shard's first
 * channel binds, grown on demand up to udpRecvBufferMax): the kernel writes an
 * io_uring_recvmsg_out header, the source address and the payload into each buffer, so a
 * datagram costs one CQE and no copy, and every buffer holds the largest datagram (65535
 * bytes) whole, so none arrives truncated. The view a receive returns stays valid until the
 * next receive (the channel holds that buffer as its lease). At maxQueued
 * unread datagrams the receive is cancelled; datagrams that complete before the cancel lands
 * are dropped at once (counted in `dropped`) so that an unread channel holds at most
 * maxQueued of the shard's datagram buffers (and its lease), and the kernel queues (then drops)
 * the rest until the reader catches up. When the ring runs dry (ENOBUFS) the receive waits for
 * the stack to re-arm it once buffers come back. Any other receive error is the next receive()'s
 * (after the datagrams queued before it), and only a receive() re-arms the receive: an error
 * that recurs at once must not cost a re-arm every loop turn (a spin) and vanish each time.
 * Sending is a
 * SENDMSG per datagram with its msghdr, destination and iovecs in one native block. A small
 * payload is copied into that block's spare space, a larger one into the open send chunk
 * shared by this shard's channels (packed one after another, a datagram may span chunks), a
 * NativeBuffer is sent in place: send memory follows the bytes in flight, not the number of
 * datagrams. At most 64 sends and 256 KiB are in flight per channel; later sends wait in
 * order, their bytes copied on the JS heap (a NativeBuffer pinned), and their promises
 * resolve as they are sent.
 */
import { AbortError, ClosedError, InvalidArgumentError, SystemError } from "../../core/errors.ts";
import { NativeBuffer } from "../../core/buffers.ts";
import { CQE_F_BUFFER, CQE_F_MORE, IoOp, reactor, type Reactor } from "../../core/reactor.ts";
import type { Completable } from "../../core/scheduler.ts";
import { markHandled, rejectedHandled } from "../errors.ts";
import { SEND_CHUNK, sendChunks } from "../output.ts";
import { booleanOption, checkOptionKeys, numberOption, signalOption } from "../options.ts";
import { SOCKADDR_MAX, decodeSockaddr, encodeSockaddr, formatAddress, parseAddress, type AddressInput, type SocketAddress } from "../address.ts";
import type { Datagram, SignalOptions, UdpChannel, UdpOptions, WriteData } from "../types.ts";
import { OPEN_REUSE_PORT, OPEN_V6_ONLY, SOCK_DGRAM, SOL_SOCKET, SO_BROADCAST, MSG_NOSIGNAL, localAddressOf, openSocket, setIntOption, closeNow } from "./sys.ts";
import type { PosixStack } from "./stack.ts";
import type { RxRing } from "./rx-ring.ts";

const ECANCELED = 125;
const EMSGSIZE = 90;
const ENOBUFS = 105;
const MSG_TRUNC = 0x20;
/** io_uring_recvmsg_out, then the name area (msg_namelen bytes), then the payload. */
const RECVMSG_OUT = 16;
const NAME_AREA = SOCKADDR_MAX;
const PAYLOAD_OFFSET = RECVMSG_OUT + NAME_AREA;
/**
 * Bytes per datagram receive buffer: the header, the name area and the largest UDP payload
 * (65535: more than IPv4's 65507 and IPv6's 65527), rounded up to the ring's 64-byte multiple.
 */
export const UDP_RECV_BUFFER_SIZE = (PAYLOAD_OFFSET + 65535 + 63) & ~63;
/** A send block: msghdr, then the destination, then the iovecs, then an inline payload. */
const NAME_OFFSET = 64;
const IOV_OFFSET = NAME_OFFSET + SOCKADDR_MAX;
/** The largest datagram (65527 bytes) packed from the middle of a chunk spans 5 chunks. */
const MAX_SEND_IOV = 5;
const INLINE_OFFSET = IOV_OFFSET + MAX_SEND_IOV * 16;
/** Per channel: sends past either bound wait for earlier ones to complete. */
const MAX_SENDS_IN_FLIGHT = 64;
const MAX_SEND_BYTES_IN_FLIGHT = 256 * 1024;
const encoder = new TextEncoder();
const NO_CHUNKS: readonly number[] = [];

/**
 * The open send chunk of this shard's UDP channels. It holds one reference; every send with
 * bytes in it holds another, so a chunk goes back once it is no longer open and all its
 * sends completed, and an idle shard holds none.
 */
const open = { chunk: -1, fill: 0 };

function releaseIdleOpenChunk(): void {
  if (open.chunk >= 0 && sendChunks.refs[open.chunk] === 1) {
    sendChunks.release(open.chunk);
    open.chunk = -1;
  }
}

/** Packs `data` into the open send chunk (and the next ones), each held by `op`. */
function copyToChunks(op: UdpSend, data: Uint8Array, addIov: (address: number, len: number) => void): void {
  const chunks: number[] = [];
  op.chunks = chunks;
  for (let off = 0; off < data.length; ) {
    if (open.chunk < 0 || open.fill === SEND_CHUNK) {
      if (open.chunk >= 0) sendChunks.release(open.chunk);
      open.chunk = -1; // until acquire (which may throw) returns
      open.chunk = sendChunks.acquire();
      open.fill = 0;
    }
    const k = Math.min(SEND_CHUNK - open.fill, data.length - off);
    sendChunks.view(open.chunk).set(data.subarray(off, off + k), open.fill);
    sendChunks.retain(open.chunk);
    chunks.push(open.chunk);
    addIov(sendChunks.address(open.chunk) + open.fill, k);
    open.fill += k;
    off += k;
  }
}

/** One datagram: waiting (data set, block -1), then in flight. */
class UdpSend implements Completable {
  block = -1;
  chunks: readonly number[] = NO_CHUNKS;
  constructor(
    private readonly ch: PosixUdpChannel,
    /** The payload while waiting: bytes of its own, or a pinned NativeBuffer (kept until sent). */
    public data: Uint8Array | NativeBuffer | undefined,
    readonly length: number,
    readonly resolve: () => void,
    readonly reject: (e: unknown) => void,
    readonly to: SocketAddress,
  ) {}
  complete(res: number): void {
    this.ch.onSent(this, res);
  }
}

class UdpCloseHandler implements Completable {
  constructor(private readonly ch: PosixUdpChannel) {}
  complete(): void {
    this.ch.onClosed();
  }
}

/** UdpChannel on a kernel UDP socket (see the file comment). Create with bindUdp. */
export class PosixUdpChannel implements UdpChannel, Completable {
  readonly localAddress: SocketAddress;
  private readonly stack: PosixStack;
  /** The shard's datagram ring, which every receive of this channel selects from. */
  private readonly rx: RxRing;
  private readonly r: Reactor;
  private fd: number;
  private readonly family: SocketAddress["family"];
  private readonly maxQueued: number;
  private readonly msgBlock: number;
  private recvSlot = -1;
  private recvCancelled = false;
  /** @internal set while waiting for receive buffers (ENOBUFS) */ starved = false;
  /** A receive failed: not re-armed until the next receive() (which rejects with `recvError` if set). */
  private recvStopped = false;
  /** The error of a failed receive that no receive() was waiting for. */
  private recvError: SystemError | undefined;
  private readonly bids: number[] = [];
  private readonly lens: number[] = [];
  private head = 0;
  private lease = -1;
  /** Bytes the kernel wrote into the lease's buffer. */
  private leaseLength = 0;
  private sendsInFlight = 0;
  private sendBytesInFlight = 0;
  /** Sends waiting for the in-flight bounds, in order. */
  private readonly waitingSends: UdpSend[] = [];
  private waitingHead = 0;
  private droppedCount = 0;
  private waiter: { resolve: (d: Datagram | null) => void; reject: (e: unknown) => void; signal?: AbortSignal | undefined; onAbort?: (() => void) | undefined } | undefined;
  private closing: Promise<void> | undefined;
  private resolveClosed: (() => void) | undefined;
  private closedFd = false;

  /** @internal Binds; throws SystemError (op "bind") naming the address. */
  constructor(stack: PosixStack, address: SocketAddress, options: UdpOptions | undefined) {
    checkOptionKeys("bindUdp", options, ["reusePort", "ipv6Only", "broadcast", "maxQueued"]);
    const o = options ?? {};
    const reusePort = booleanOption("bindUdp", "reusePort", o.reusePort, false);
    const v6Only = booleanOption("bindUdp", "ipv6Only", o.ipv6Only, false);
    const broadcast = booleanOption("bindUdp", "broadcast", o.broadcast, false);
    // Finite: the queue holds the shard's receive buffers.
    this.maxQueued = numberOption("bindUdp", "maxQueued", o.maxQueued, 64, 1);
    if (!Number.isSafeInteger(this.maxQueued)) {
      throw new InvalidArgumentError(`bindUdp: maxQueued must be an integer from 1 to ${Number.MAX_SAFE_INTEGER}, got ${String(o.maxQueued)}`);
    }
    if (address.family === "unix") throw new InvalidArgumentError("bindUdp: UDP needs an IPv4 or IPv6 address");
    this.stack = stack;
    // Before the socket: a ring that cannot be made leaves nothing to undo.
    this.rx = stack.datagramRing();
    this.r = reactor();
    this.family = address.family;
    this.fd = openSocket("bind", address, SOCK_DGRAM, (reusePort ? OPEN_REUSE_PORT : 0) | (v6Only ? OPEN_V6_ONLY : 0), -1);
    try {
      if (broadcast) setIntOption("setsockopt(SO_BROADCAST)", this.fd, SOL_SOCKET, SO_BROADCAST, 1);
      this.localAddress = localAddressOf(this.fd);
    } catch (e) {
      closeNow(this.fd);
      throw e;
    }
    // The receive msghdr: only msg_namelen matters for multishot RECVMSG (no iovec, no control).
    this.msgBlock = stack.msgs.acquire();
    const w = stack.msgs.u32(this.msgBlock);
    w.fill(0, 0, 14);
    w[2] = NAME_AREA;
    stack.channelChanged(1);
    this.arm();
  }

  private arm(): void {
    this.recvSlot = this.r.prepare(IoOp.RECVMSG, this.fd, this.stack.msgs.address(this.msgBlock), 1, 0, 0, this, this.stack.udpRecvExtra);
    this.recvCancelled = false;
  }

  private get queued(): number {
    return this.bids.length - this.head;
  }

  /**
   * Datagrams received while the queue was full (maxQueued unread) and dropped on arrival:
   * those the cancelled receive completed before the cancel landed. Datagrams the kernel
   * drops (its socket buffer full) are not counted.
   */
  get dropped(): number {
    return this.droppedCount;
  }

  /** @internal Receive completions: one per datagram. */
  complete(res: number, flags: number): void {
    if ((flags & CQE_F_MORE) === 0) this.recvSlot = -1;
    const rx = this.rx;
    if ((flags & CQE_F_BUFFER) !== 0) {
      const bid = flags >>> 16;
      rx.taken(bid);
      if (res > 0 && this.closing === undefined && this.queued >= this.maxQueued) {
        // The cancel of a full queue's receive has not landed yet: keep holding no more buffers.
        rx.release(bid, res);
        this.droppedCount++;
      } else if (res > 0 && this.closing === undefined) {
        this.bids.push(bid);
        this.lens.push(res);
        if (this.queued >= this.maxQueued && this.recvSlot >= 0 && !this.recvCancelled) {
          this.recvCancelled = true;
          this.r.cancelSlot(this.recvSlot, this);
        }
        if (this.waiter !== undefined) this.deliver();
      } else {
        rx.release(bid, Math.max(0, res));
      }
    } else if (res === -ENOBUFS) {
      if (this.closing === undefined) this.stack.starveDatagrams(this);
    } else if (res < 0 && res !== -ECANCELED && this.closing === undefined) {
      const e = new SystemError("recvmsg", -res);
      this.recvStopped = true;
      if (this.waiter !== undefined) {
        const w = this.waiter;
        this.settleWaiter();
        w.reject(e);
      } else {
        this.recvError = e;
      }
    }
    if (this.recvSlot < 0) this.maybeRearm();
  }

  private maybeRearm(): void {
    if (this.closing !== undefined) {
      this.maybeCloseFd();
      return;
    }
    if (this.recvSlot < 0 && this.queued < this.maxQueued && !this.starved && !this.recvStopped) this.arm();
  }

  /** @internal The stack has buffers again after ENOBUFS. */
  resumeAfterStarve(): void {
    this.starved = false;
    this.maybeRearm();
  }

  private releaseLease(): void {
    if (this.lease >= 0) {
      this.rx.release(this.lease, this.leaseLength);
      this.lease = -1;
    }
  }

  private take(): Datagram {
    const bid = this.bids[this.head]!;
    const len = this.lens[this.head]!;
    this.head++;
    if (this.head > 64 && this.head * 2 > this.bids.length) {
      this.bids.splice(0, this.head);
      this.lens.splice(0, this.head);
      this.head = 0;
    }
    this.lease = bid;
    this.leaseLength = len;
    const view = this.rx.views[bid]!;
    const dv = new DataView(view.buffer, view.byteOffset, RECVMSG_OUT);
    const namelen = dv.getUint32(0, true);
    const payloadLen = dv.getUint32(8, true);
    const msgFlags = dv.getUint32(12, true);
    // The payload the buffer held; with buffers for the largest datagram, all of it.
    const got = len - PAYLOAD_OFFSET;
    const from = decodeSockaddr(view, RECVMSG_OUT, Math.min(namelen, NAME_AREA));
    if (this.recvSlot < 0) this.maybeRearm();
    return {
      data: view.subarray(PAYLOAD_OFFSET, PAYLOAD_OFFSET + Math.max(0, got)),
      from,
      truncated: (msgFlags & MSG_TRUNC) !== 0 || payloadLen > got,
    };
  }

  receive(opts?: SignalOptions): Promise<Datagram | null> {
    if (this.waiter !== undefined) throw new InvalidArgumentError("receive: another receive is pending on this channel");
    let signal: AbortSignal | undefined;
    try {
      signal = signalOption("receive", opts);
    } catch (e) {
      return Promise.reject(e);
    }
    this.releaseLease();
    if (this.queued > 0) return Promise.resolve(this.take());
    if (this.closing !== undefined) return Promise.resolve(null);
    if (signal?.aborted) return Promise.reject(new AbortError("receive was aborted", { cause: signal.reason }));
    // After a failed receive this call sees the failure, and receiving resumes (one re-arm per
    // receive() at most).
    const failed = this.recvStopped ? this.recvError : undefined;
    this.recvStopped = false;
    this.recvError = undefined;
    if (this.recvSlot < 0) this.maybeRearm();
    if (failed !== undefined) return Promise.reject(failed);
    return new Promise<Datagram | null>((resolve, reject) => {
      const w: NonNullable<PosixUdpChannel["waiter"]> = { resolve, reject, signal };
      if (signal !== undefined) {
        w.onAbort = () => {
          this.waiter = undefined;
          reject(new AbortError("receive was aborted", { cause: signal.reason }));
        };
        signal.addEventListener("abort", w.onAbort, { once: true });
      }
      this.waiter = w;
    });
  }

  private settleWaiter(): void {
    const w = this.waiter!;
    this.waiter = undefined;
    if (w.signal !== undefined) w.signal.removeEventListener("abort", w.onAbort!);
  }

  private deliver(): void {
    const w = this.waiter!;
    this.settleWaiter();
    w.resolve(this.take());
  }

  /** The largest UDP payload: 65535 less the IP and UDP headers (IPv6: its 40-byte header is not counted). */
  private maxPayload(): number {
    return this.family === "ipv6" ? 65527 : 65507;
  }

  send(data: WriteData, to: AddressInput): Promise<void> {
    if (this.closing !== undefined) return rejectedHandled(new ClosedError("send on a closed UDP channel", "ERR_CHANNEL_CLOSED"));
    let dest: SocketAddress;
    try {
      dest = parseAddress(to, "send", { destination: true });
      if (dest.family === "unix") throw new InvalidArgumentError("send: a UDP destination must be an IP address");
      if (this.family === "ipv4" && dest.family === "ipv6") {
        throw new InvalidArgumentError(`send: an IPv4 channel cannot reach ${formatAddress(dest)}`);
      }
      // A dual-stack IPv6 channel reaches IPv4 peers through IPv4-mapped addresses.
      if (this.family === "ipv6" && dest.family === "ipv4") dest = parseAddress({ host: `::ffff:${dest.host}`, port: dest.port }, "send");
      // A released buffer fails before anything is taken.
      if (data instanceof NativeBuffer) data.check("send: buffer");
    } catch (e) {
      return rejectedHandled(e);
    }
    let bytes: Uint8Array | NativeBuffer;
    if (data instanceof NativeBuffer) {
      bytes = data;
    } else {
      const b = typeof data === "string" ? encoder.encode(data) : data;
      if (!(b instanceof Uint8Array)) return rejectedHandled(new InvalidArgumentError("send: data must be a Uint8Array, a string or a NativeBuffer"));
      bytes = b;
    }
    if (bytes.length > this.maxPayload()) {
      return rejectedHandled(new SystemError("sendmsg", EMSGSIZE, `${bytes.length}-byte datagram (at most ${this.maxPayload()})`));
    }
    let resolve!: () => void;
    let reject!: (e: unknown) => void;
    const p = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    if (bytes instanceof NativeBuffer) bytes.pin();
    if (this.waitingHead === this.waitingSends.length && this.fits(bytes.length)) {
      this.issue(new UdpSend(this, bytes, bytes.length, resolve, reject, dest));
    } else {
      // Copied now: the caller may reuse its array once send() returned.
      const own = bytes instanceof NativeBuffer || typeof data === "string" ? bytes : bytes.slice();
      this.waitingSends.push(new UdpSend(this, own, bytes.length, resolve, reject, dest));
    }
    return markHandled(p);
  }

  private fits(length: number): boolean {
    if (this.sendsInFlight === 0) return true;
    return this.sendsInFlight < MAX_SENDS_IN_FLIGHT && this.sendBytesInFlight + length <= MAX_SEND_BYTES_IN_FLIGHT;
  }

  /** Copies the payload into native memory (unless a NativeBuffer) and submits the SENDMSG. */
  private issue(op: UdpSend): void {
    const msgs = this.stack.msgs;
    const data = op.data!;
    op.data = data instanceof NativeBuffer ? data : undefined;
    let block = -1;
    try {
      block = msgs.acquire();
      const w = msgs.u32(block);
      const base = msgs.address(block);
      let iov = 0;
      const addIov = (address: number, len: number) => {
        const j = (IOV_OFFSET >>> 2) + iov * 4;
        w[j] = address >>> 0;
        w[j + 1] = Math.floor(address / 0x1_0000_0000);
        w[j + 2] = len;
        w[j + 3] = 0;
        iov++;
      };
      if (data instanceof NativeBuffer) {
        addIov(data.address, data.length);
      } else if (data.length <= msgs.blockSize - INLINE_OFFSET) {
        msgs.view(block).set(data, INLINE_OFFSET);
        addIov(base + INLINE_OFFSET, data.length);
      } else {
        copyToChunks(op, data, addIov);
      }
      const nameLen = encodeSockaddr(op.to, msgs.view(block), NAME_OFFSET);
      // struct msghdr: name, namelen, iov, iovlen, control, controllen, flags.
      w.fill(0, 0, 14);
      const name = base + NAME_OFFSET;
      w[0] = name >>> 0;
      w[1] = Math.floor(name / 0x1_0000_0000);
      w[2] = nameLen;
      const iovAddress = base + IOV_OFFSET;
      w[4] = iovAddress >>> 0;
      w[5] = Math.floor(iovAddress / 0x1_0000_0000);
      w[6] = iov;
      op.block = block;
      this.r.prepare(IoOp.SENDMSG, this.fd, base, 1, 0, MSG_NOSIGNAL, op);
    } catch (e) {
      if (block >= 0) msgs.release(block);
      for (const id of op.chunks) sendChunks.release(id);
      releaseIdleOpenChunk();
      if (op.data instanceof NativeBuffer) op.data.unpin();
      op.reject(e);
      return;
    }
    this.sendsInFlight++;
    this.sendBytesInFlight += op.length;
  }

  /** @internal */
  onSent(op: UdpSend, res: number): void {
    this.sendsInFlight--;
    this.sendBytesInFlight -= op.length;
    this.stack.msgs.release(op.block);
    for (const id of op.chunks) sendChunks.release(id);
    releaseIdleOpenChunk();
    if (op.data instanceof NativeBuffer) op.data.unpin();
    if (res >= 0) op.resolve();
    else if (res === -ECANCELED) op.reject(new ClosedError("the UDP channel closed before the datagram was sent", "ERR_CHANNEL_CLOSED"));
    else op.reject(new SystemError("sendmsg", -res, formatAddress(op.to)));
    this.issueWaiting();
    if (this.closing !== undefined) this.maybeCloseFd();
  }

  private issueWaiting(): void {
    const q = this.waitingSends;
    while (this.waitingHead < q.length && this.fits(q[this.waitingHead]!.length)) this.issue(q[this.waitingHead++]!);
    if (this.waitingHead === q.length) {
      q.length = 0;
      this.waitingHead = 0;
    } else if (this.waitingHead > 64 && this.waitingHead * 2 > q.length) {
      q.splice(0, this.waitingHead);
      this.waitingHead = 0;
    }
  }

  close(): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    this.closing = new Promise<void>((resolve) => {
      this.resolveClosed = resolve;
    });
    this.starved = false;
    if (this.recvSlot >= 0 && !this.recvCancelled) {
      this.recvCancelled = true;
      this.r.cancelSlot(this.recvSlot, this);
    }
    if (this.waiter !== undefined) {
      const w = this.waiter;
      this.settleWaiter();
      w.resolve(null);
    }
    this.maybeCloseFd();
    return this.closing;
  }

  private maybeCloseFd(): void {
    if (this.recvSlot >= 0 || this.sendsInFlight > 0 || this.waitingHead < this.waitingSends.length || this.closedFd) return;
    this.closedFd = true;
    this.r.prepare(IoOp.CLOSE, this.fd, 0, 0, 0, 0, new UdpCloseHandler(this));
  }

  /** @internal */
  onClosed(): void {
    this.fd = -1;
    this.releaseLease();
    while (this.queued > 0) {
      this.rx.release(this.bids[this.head]!, this.lens[this.head]!);
      this.head++;
    }
    this.stack.msgs.release(this.msgBlock);
    this.stack.channelChanged(-1);
    this.resolveClosed!();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  [Symbol.asyncIterator](): AsyncIterator<Datagram> {
    return {
      next: async (): Promise<IteratorResult<Datagram>> => {
        const d = await this.receive();
        return d === null ? { done: true, value: undefined } : { done: false, value: d };
      },
      return: async (): Promise<IteratorResult<Datagram>> => ({ done: true, value: undefined }),
    };
  }
}
