/**
 * The socket API every network stack implements: the posix stack
 * (kernel sockets on io_uring) now, the native Zig stack later. Applications and the
 * conformance suite (test/net/conformance) see only these interfaces.
 */
import type { NativeBuffer } from "../core/buffers.ts";
import type { SignalOptions } from "../core/future.ts";
import type { AddressInput, SocketAddress } from "./address.ts";

export type { SignalOptions };

/** Per-connection limits, set on a listener (for its connections) or on connect(). */
export interface ConnectionOptions {
  /** TCP_NODELAY (default true): writes are already batched per loop turn. */
  noDelay?: boolean | undefined;
  /**
   * Close (reset) the connection when no byte was received or sent for this long
   * (default 0: never). Pending reads and writes then fail with ETIMEDOUT (op "idle").
   */
  idleTimeoutMs?: number | undefined;
  /**
   * A read() (or readExactly/consume) waiting longer than this fails with ETIMEDOUT (op "read")
   * and the connection is reset (default 0: no limit).
   */
  readTimeoutMs?: number | undefined;
  /**
   * Received bytes held for the reader before the stack stops receiving on this connection
   * (default 256 KiB). The peer is then slowed by TCP flow control; receiving resumes once the
   * reader has consumed half. The posix stack gives its multishot receive a total byte limit
   * (Linux 6.17+), so it stops within one receive buffer of the mark; on older kernels it
   * stops by cancelling the receive, and until the cancel lands the kernel may still fill
   * buffers with what the socket has queued (up to its receive buffer, SO_RCVBUF).
   */
  maxReadBuffered?: number | undefined;
  /**
   * Output back-pressure bound (default 256 KiB): write() returns a promise that resolves once
   * buffered, unsent bytes drop to this bound.
   */
  writeHighWater?: number | undefined;
  /**
   * A graceful close() that cannot flush within this long resets the connection (default 10 s;
   * finite, so that every close ends); it also bounds the linger after the flush (see
   * Connection.close). Unlike the idle and read timeouts, 0 is not "never": a close() with
   * bytes still unsent then resets at once.
   */
  closeTimeoutMs?: number | undefined;
}

/** listen() options. */
export interface ListenOptions extends ConnectionOptions {
  /** Kernel accept backlog (default 1024). */
  backlog?: number | undefined;
  /**
   * SO_REUSEPORT (default true for TCP/IP): every shard listens on the same port and the kernel
   * spreads connections over them. Shared within this process only: a port another process
   * holds, with SO_REUSEPORT or without, fails with EADDRINUSE (the first socket on a port is
   * preceded by a trial bind without it). Ignored for Unix sockets.
   */
  reusePort?: boolean | undefined;
  /** SO_REUSEADDR (default true). */
  reuseAddress?: boolean | undefined;
  /** IPv6 listeners accept only IPv6 peers (default false: IPv4-mapped peers too). */
  ipv6Only?: boolean | undefined;
  /**
   * At most this many connections of this listener open at once, queued ones included
   * (default: unlimited). At the limit the stack stops accepting; the kernel backlog holds
   * new peers until a connection closes.
   */
  maxConnections?: number | undefined;
  /** Connections accepted but not yet taken by accept() before accepting pauses (default 1024). */
  acceptQueueLimit?: number | undefined;
  /** Unix sockets: remove the socket file on close (default true). */
  unlinkOnClose?: boolean | undefined;
}

/** connect() options. */
export interface ConnectOptions extends ConnectionOptions, SignalOptions {
  /** Fail with ETIMEDOUT (op "connect") if not connected within this long (default: the kernel's). */
  timeoutMs?: number | undefined;
  /** Bind the socket to this local address before connecting. */
  localAddress?: AddressInput | undefined;
}

/** TCP keep-alive tuning (seconds); unset fields keep the kernel's defaults. */
/** Options of Connection.shutdownInput(). */
export interface ShutdownInputOptions {
  /** Deliver the bytes already received (buffered here or queued in the kernel) before end of stream (default false: drop them). */
  keepReceived?: boolean | undefined;
}

export interface KeepAliveOptions {
  idleS?: number | undefined;
  intervalS?: number | undefined;
  count?: number | undefined;
}

/**
 * A zero-copy stream parser for ConnectionInput.consume(). It gets views of received bytes,
 * valid only during the call, and returns:
 * - CONSUME_ALL (-1): every byte was consumed, call again when more arrives;
 * - n >= 0: stop; n bytes were consumed, the rest stays for the next read or consume;
 * - needBytes(k): nothing consumed yet; call again once k contiguous bytes can be shown
 *   (the input assembles them when they span receive buffers, and then shows every byte
 *   buffered, at least k: asking for one byte more than shown costs one call per arrival).
 */
export type StreamConsumer = (data: Uint8Array) => number;

/**
 * What a push-mode handler returns to end its receive() after the chunk it was given (consumed
 * whole): receive() resolves true, the connection stays open, and bytes received after that
 * chunk stay buffered for the next read. A protocol's "quit", or a handler that answered an
 * error and wants its connection closed gracefully (a throw ends receive() with a rejection).
 */
export const STOP_RECEIVING: unique symbol = Symbol("shoal.stopReceiving");

/** What a push-mode handler may return: nothing (next chunk at once), STOP_RECEIVING, or a promise of either (holds delivery until it settles). */
export type ReceiverResult = void | typeof STOP_RECEIVING | Promise<void | typeof STOP_RECEIVING>;

/**
 * A push-mode handler for ConnectionInput.receive(): called from the loop with each chunk of
 * received bytes as it arrives (a view valid only during the call, or until the promise it
 * returns settles). Returning a promise holds further delivery until it settles (the stack stops
 * receiving once the pause mark is reached meanwhile); returning nothing takes the next chunk at
 * once; returning STOP_RECEIVING (or a promise of it) ends receive() after this chunk. A throw
 * or rejection ends receive() with that error.
 */
export type StreamReceiver = (data: Uint8Array) => ReceiverResult;

/**
 * A push-mode handler for ConnectionInput.receiveRanges(): like StreamReceiver, but given the
 * whole receive buffer (a long-lived view, the same object for every chunk of that buffer) and
 * the range [start, end) of the new bytes, so no view is created per chunk. Bytes outside the
 * range belong to nobody: read only [start, end), and only during the call (or until the
 * returned promise settles).
 */
export type StreamRangeReceiver = (buffer: Uint8Array, start: number, end: number) => ReceiverResult;

/** Options of ConnectionInput.receiveRanges(). */
export interface ReceiveRangesOptions extends SignalOptions {
  /**
   * Called with each chunk's bytes as soon as its completion is processed, before any chunk of
   * the same batch of completions is delivered to the receiver: every connection's new bytes of
   * a loop turn are looked at first, then delivered. For warming caches in batches (a key-value
   * server touches the hash buckets and items of every key it is about to serve, so the cache
   * misses of many requests overlap instead of stalling one after another). It must not keep
   * the view, consume anything or fail: what it throws is ignored. Bytes are delivered exactly
   * as without it; only when they are delivered changes (at the end of the batch, in the same
   * scheduling group).
   */
  lookahead?: ((buffer: Uint8Array, start: number, end: number) => void) | undefined;
}

/** Consumer result: all bytes consumed, continue. */
export const CONSUME_ALL = -1;

/** Consumer result: call again with at least `k` (>= 1) contiguous bytes. */
export function needBytes(k: number): number {
  return -2 - k;
}

/** The receiving side of a connection. One read at a time. */
export interface ConnectionInput extends AsyncIterable<Uint8Array> {
  /**
   * Resolves with the next received bytes, or null at end of stream (the peer shut down its
   * side). The view points into a receive buffer without copying and stays valid only until the
   * next read, readExactly, tryRead or consume call on this input (or the connection closes):
   * copy what must outlive that. Rejects with SystemError (ECONNRESET, ETIMEDOUT...) when the
   * connection failed, after every byte received before the failure was read. Throws
   * InvalidArgumentError if another read is pending.
   */
  read(opts?: SignalOptions): Promise<Uint8Array | null>;
  /**
   * Like read() without waiting: the next bytes, null at end of stream, or undefined when
   * nothing is buffered. Throws the connection's error. Same validity rule as read().
   */
  tryRead(): Uint8Array | null | undefined;
  /**
   * Resolves with exactly `n` bytes (a view when they lie in one receive buffer, else a copy
   * into a buffer owned by this input; valid until the next read), or null when the stream
   * ended before any byte. Rejects with UnexpectedEofError when it ended mid-way.
   */
  readExactly(n: number, opts?: SignalOptions): Promise<Uint8Array | null>;
  /**
   * Feeds received bytes to `parser` in place (see StreamConsumer) until it stops; resolves
   * true when it stopped, false at end of stream. Views are valid only during each call.
   */
  consume(parser: StreamConsumer, opts?: SignalOptions): Promise<boolean>;
  /**
   * Push mode: calls `receiver` with every chunk as it arrives, straight from the completion
   * that received it — no promise, no task switch per chunk, the cheapest way to serve a
   * request/response protocol. Bytes already buffered go first. Resolves false at end of stream
   * (after the last chunk), true when the receiver returned STOP_RECEIVING (delivery stops, the
   * connection stays open, later bytes stay buffered); rejects with the connection's error
   * (after the chunks received before it), the receiver's own error (which stops delivery; the
   * connection stays open) or AbortError from `opts.signal`. While it runs no other read may
   * start (InvalidArgumentError).
   */
  receive(receiver: StreamReceiver, opts?: SignalOptions): Promise<boolean>;
  /**
   * receive() without a view per chunk: the receiver gets the receive buffer and the range of
   * the new bytes (StreamRangeReceiver). For parsers that work on offsets anyway; the same
   * rules for holding, errors, end of stream and abort. `opts.lookahead`: see
   * ReceiveRangesOptions.
   */
  receiveRanges(receiver: StreamRangeReceiver, opts?: ReceiveRangesOptions): Promise<boolean>;
  /** Bytes received and not yet read. */
  readonly buffered: number;
  /** True once the end of stream was read. */
  readonly ended: boolean;
}

/** Data write() accepts: bytes (copied, or referenced when they are received or native memory), text (UTF-8) or a NativeBuffer. */
export type WriteData = Uint8Array | string | NativeBuffer;

/** The sending side of a connection. Writes are queued and sent in one batch per loop turn. */
export interface ConnectionOutput {
  /**
   * Queues `data` and returns a promise that resolves at once while buffered bytes stay within
   * the connection's writeHighWater, and otherwise when they drain to it (back-pressure: await
   * it). A JS Uint8Array or string is copied into native send memory (it may be reused when
   * write returns); a NativeBuffer is sent in place and pinned until the kernel is done with it
   * (large ones with zero-copy sends, where that is after the peer acknowledged the data: later
   * than flush() resolving; release() it and let the pin decide when the memory is free, or
   * await close(), rather than rewriting it after flush()); a view from read() of at least 1 KiB is sent in place
   * (zero-copy forwarding). Rejects with the connection's error (SystemError EPIPE,
   * ECONNRESET...) or ClosedError after close. A write that cannot get send memory (SystemError
   * ENOMEM, op "mmap (send buffers)") queues none of its bytes and resets the connection: the
   * stream would miss it, so nothing written later may reach the peer. Rejections are marked handled: a write nobody
   * awaits never becomes an unhandled rejection, and the error resurfaces on the next call.
   * `start`/`end` (bytes only) write `data[start, end)` without making a view: what a protocol
   * encoder that fills its own buffer passes (small ranges are copied without a native call);
   * a range outside the data rejects with InvalidArgumentError.
   */
  write(data: WriteData, start?: number, end?: number): Promise<void>;
  /** write() for several pieces: one back-pressure check. */
  writev(data: readonly WriteData[]): Promise<void>;
  /** Resolves when every byte written so far has been handed to the kernel. */
  flush(): Promise<void>;
  /**
   * Flushes, then shuts down the sending side (the peer reads end of stream). The input stays
   * readable; the connection is released once input has ended too, or by Connection.close().
   */
  close(): Promise<void>;
  /** Bytes queued and not yet handed to the kernel. */
  readonly buffered: number;
}

/** A TCP or Unix stream connection. */
export interface Connection extends AsyncDisposable {
  readonly input: ConnectionInput;
  readonly output: ConnectionOutput;
  /** The local address (read from the kernel on first use, then cached). */
  readonly localAddress: SocketAddress;
  /** The peer's address (read from the kernel on first use, then cached). */
  readonly remoteAddress: SocketAddress;
  /** True once close() or reset() started, or the connection failed. */
  readonly closed: boolean;
  /** TCP_NODELAY (Nagle off) for TCP; a no-op for Unix sockets. Throws SystemError. */
  setNoDelay(on?: boolean): void;
  /** SO_KEEPALIVE and its timings. A no-op for Unix sockets. Throws SystemError. */
  setKeepAlive(on: boolean, opts?: KeepAliveOptions): void;
  /**
   * Stops receiving (shutdown(SHUT_RD)): by default, bytes not yet read are dropped and reads
   * return end of stream at once. With `keepReceived`, what the input buffers and what the
   * kernel has already received are still delivered, then end of stream (a server's graceful
   * stop: answer what clients sent, take nothing new). Throws InvalidArgumentError for bad options.
   */
  shutdownInput(options?: ShutdownInputOptions): void;
  /** Same as output.close(): flush, then send FIN. */
  shutdownOutput(): Promise<void>;
  /**
   * Graceful close: flushes what was written (bounded by closeTimeoutMs, then reset), then
   * releases the socket and every buffer. Pending reads end with null. Idempotent. On TCP,
   * while the peer has not yet received everything, the close lingers: FIN after the data,
   * whatever the peer still sends is discarded, and the socket closes once the peer has it all
   * or ended its side (within closeTimeoutMs): closing with input unread, the kernel would
   * reset and drop the answers it had not yet delivered.
   */
  close(): Promise<void>;
  /** Abortive close (RST): unsent data is dropped; pending reads and writes fail. Idempotent. */
  reset(): void;
  [Symbol.asyncDispose](): Promise<void>;
}

/** A listening socket. One per shard for a shared port (SO_REUSEPORT). */
export interface Listener extends AsyncDisposable, AsyncIterable<Connection> {
  /** The bound address (with the kernel's port when 0 was asked for). */
  readonly localAddress: SocketAddress;
  /** Connections of this listener now open (queued ones included). */
  readonly connections: number;
  /**
   * Resolves with the next connection. Rejects with SystemError ECONNABORTED (op "accept")
   * after abortAccept() or close(), AbortError through `signal`.
   */
  accept(opts?: SignalOptions): Promise<Connection>;
  /**
   * Stops accepting: pending and later accept() calls fail promptly with ECONNABORTED, queued
   * connections are reset, and the socket stops taking new peers. Open connections stay.
   */
  abortAccept(): void;
  /**
   * abortAccept(), then closes the socket (and removes a Unix socket file). Open connections
   * stay. With `{ acceptPending: true }`, the peers the kernel already connected (in the
   * socket's accept queue) are taken instead of reset; see ListenerCloseOptions.
   */
  close(opts?: ListenerCloseOptions): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Listener.close() options. */
export interface ListenerCloseOptions {
  /**
   * Take the connections whose handshake the kernel completed before the close (they wait in
   * the socket's accept queue: clients that connected, and may have sent a request already)
   * instead of resetting them: accept() hands them out as usual, the connection limit still
   * applies (peers past it are reset), and once they are all taken accept() fails with
   * ECONNABORTED, which ends `for await`. Keep accepting until then: a connection left in
   * the listener's queue stays open. A peer whose handshake completes after the close is
   * refused by the kernel. A graceful stop (Server.drain) uses this. Default false: abortAccept()
   * first, so queued connections are reset.
   */
  acceptPending?: boolean | undefined;
}

/** A received datagram. `data` is valid until the next receive on its channel. */
export interface Datagram {
  readonly data: Uint8Array;
  readonly from: SocketAddress;
  /** The datagram was larger than a receive buffer and was cut. */
  readonly truncated: boolean;
}

/** UDP channel options. */
export interface UdpOptions {
  /**
   * SO_REUSEPORT (default false): the shards of this process may bind the same port; a port
   * another process holds fails with EADDRINUSE, as for listen().
   */
  reusePort?: boolean | undefined;
  /** IPv6 channels accept only IPv6 (default false). */
  ipv6Only?: boolean | undefined;
  /**
   * Datagrams held for the reader (a positive integer, default 64). When that many are unread
   * the channel stops receiving; datagrams that were already on their way are dropped and
   * counted in `dropped`, and the kernel keeps (then, its socket buffer full, drops) the rest
   * until the reader catches up. The channel never holds more receive buffers than this.
   */
  maxQueued?: number | undefined;
  /** SO_BROADCAST. */
  broadcast?: boolean | undefined;
}

/** A bound UDP socket. */
export interface UdpChannel extends AsyncDisposable, AsyncIterable<Datagram> {
  readonly localAddress: SocketAddress;
  /**
   * Sends one datagram to `to`. Bytes are copied into native memory (a NativeBuffer is sent in
   * place). Resolves when the kernel took it (UDP reports no delivery: a datagram to a closed
   * port is lost silently on an unconnected socket); rejects with SystemError (EMSGSIZE,
   * ENETUNREACH, EACCES without broadcast...) or ClosedError. Rejections are marked handled.
   * Back-pressure: past 64 sends or 256 KiB in flight on the channel, a send's bytes are
   * copied (a NativeBuffer is pinned) and its promise resolves once it was actually sent, in
   * order; await sends to keep memory bounded.
   */
  send(data: WriteData, to: AddressInput): Promise<void>;
  /**
   * Resolves with the next datagram, or null once the channel is closed. Its data view stays
   * valid until the next receive. One receive at a time.
   */
  receive(opts?: SignalOptions): Promise<Datagram | null>;
  /** Datagrams dropped because `maxQueued` were unread (not those the kernel dropped). */
  readonly dropped: number;
  /** Stops receiving, waits for sends in flight, releases the socket. Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Counters of a stack on this shard (cheap to read). */
export interface NetStats {
  connectionsOpen: number;
  connectionsAccepted: number;
  connectionsRejected: number;
  listenersOpen: number;
  udpChannelsOpen: number;
  /** Stream receive buffers the kernel may fill now, and in all. */
  recvBuffersFree: number;
  recvBuffersTotal: number;
  /** Stream receive buffers held by readers and queues. */
  recvBuffersHeld: number;
  /**
   * The same for the datagram receive buffers of UDP channels (a pool of its own, made when
   * the first channel binds; 0 before).
   */
  udpRecvBuffersFree: number;
  udpRecvBuffersTotal: number;
  udpRecvBuffersHeld: number;
  /** Times a connection's receive paused because its reader fell behind. */
  recvPauses: number;
  /** Times receiving stopped because every receive buffer was in use (ENOBUFS). */
  recvStarved: number;
  /**
   * Receive buffers given back by moving queued, unread bytes into the connections' own memory
   * (done when the pool is at its cap and a receive ran dry).
   */
  recvSpilled: number;
  /** Native send memory mapped, and in use, in bytes. */
  sendMemoryMapped: number;
  sendMemoryInUse: number;
  /** Sends (and their bytes) issued to the kernel; sendsShort: partial sends resumed. */
  sends: number;
  sendBytes: number;
  sendsShort: number;
  sendsZeroCopy: number;
  /**
   * Zero-copy sends whose data the kernel copied after all (a peer on this host, a device
   * without scatter-gather): each turned its connection's later sends into plain ones.
   */
  sendsZeroCopyCopied: number;
  timeouts: number;
  /**
   * Graceful closes lingering now: their FIN sent, waiting (up to closeTimeoutMs) for the peer
   * to take what they sent, input discarded meanwhile (a plain close would reset a peer still
   * sending, dropping the data). At most the stack's lingerMax at a time (configureNet).
   */
  closesLingering: number;
  /**
   * Graceful closes that did not linger because lingerMax were lingering already: closed at once,
   * the kernel still sends what they queued (unless input arrives, which resets them).
   */
  closesNotLingered: number;
}

/** A network stack: the posix stack, or the native one later. */
export interface NetworkStack {
  readonly name: string;
  /** Binds and listens (synchronous). Throws InvalidArgumentError or SystemError (EADDRINUSE...). */
  listen(address: AddressInput, options?: ListenOptions): Listener;
  /** Connects. Rejects with SystemError (ECONNREFUSED, ETIMEDOUT, op "connect") or AbortError. */
  connect(address: AddressInput, options?: ConnectOptions): Promise<Connection>;
  /** Binds a UDP channel (synchronous). Throws InvalidArgumentError or SystemError. */
  bindUdp(address: AddressInput, options?: UdpOptions): UdpChannel;
  /** This stack's counters on this shard. */
  stats(): NetStats;
}
