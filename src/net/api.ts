/**
 * The socket API's entry points. They use this shard's current network stack: the posix
 * stack (kernel sockets on io_uring) unless setNetworkStack chose another.
 */
import { InvalidArgumentError, ShoalError } from "../core/errors.ts";
import type { AddressInput } from "./address.ts";
import { posixStack, type PosixStackOptions } from "./posix/stack.ts";
import type { Connection, ConnectOptions, Listener, ListenOptions, NetStats, NetworkStack, UdpChannel, UdpOptions } from "./types.ts";

let current: NetworkStack | undefined;

/** This shard's network stack (the posix stack by default). */
export function networkStack(): NetworkStack {
  return (current ??= posixStack());
}

/** Chooses this shard's network stack; only before the first socket. Throws InvalidArgumentError. */
export function setNetworkStack(stack: NetworkStack): void {
  if (typeof stack !== "object" || stack === null || typeof stack.listen !== "function") {
    throw new InvalidArgumentError("setNetworkStack: expected a NetworkStack");
  }
  if (current !== undefined && current !== stack && current.stats().connectionsOpen + current.stats().listenersOpen > 0) {
    throw new InvalidArgumentError(`setNetworkStack: the ${current.name} stack already has open sockets`);
  }
  current = stack;
}

/**
 * Tunes the posix stack: stream receive buffer size, count and cap (before the first socket;
 * recvBufferSize x recvBufferMax of address space is reserved, pages touched as buffers fill),
 * the UDP channels' datagram buffer count and cap (before the first UDP channel binds; each
 * buffer is 65,728 bytes, so the default cap of 1024 reserves 64 MiB, a shard without UDP
 * channels none), the zero-copy send threshold, and buffer poisoning (debug: recycled receive
 * buffers are filled with 0xDE so a view kept past its next read fails loudly). See
 * PosixStackOptions. Throws InvalidArgumentError.
 */
export function configureNet(options: PosixStackOptions): void {
  posixStack().configure(options);
}

/**
 * Binds and listens on `address` with the current stack. Every shard may listen on the same
 * TCP port (SO_REUSEPORT, on by default; shared within this process only: a port another
 * process holds fails with EADDRINUSE); port 0 picks a free port per call, so shards that
 * share a port must agree on a fixed one. Costs a few system calls. Throws
 * InvalidArgumentError (bad address or option) or SystemError (EADDRINUSE, EACCES...).
 */
export function listen(address: AddressInput, options?: ListenOptions): Listener {
  return networkStack().listen(address, options);
}

/**
 * Opens a stream connection to `address` (a host name is resolved first; its addresses are tried
 * in turn while refused or unreachable, within one timeoutMs and signal). Costs a socket()
 * and a setsockopt() system call, then one CONNECT on the ring. Rejects with SystemError
 * (ECONNREFUSED, ETIMEDOUT after `timeoutMs`, ENOENT from name resolution; op "connect" or
 * "getaddrinfo") or AbortError through `signal`.
 */
export function connect(address: AddressInput, options?: ConnectOptions): Promise<Connection> {
  return networkStack().connect(address, options);
}

/** Binds a UDP channel with the current stack. Throws InvalidArgumentError or SystemError. */
export function bindUdp(address: AddressInput, options?: UdpOptions): UdpChannel {
  return networkStack().bindUdp(address, options);
}

/** The current stack's counters on this shard (a small object; cheap). */
export function netStats(): NetStats {
  return networkStack().stats();
}

/** serve() options. */
export interface ServeOptions extends ListenOptions {
  /** The stack to listen with (default: this shard's current stack). */
  stack?: NetworkStack;
  /**
   * Called with every error a handler threw or rejected with (its connection is then reset).
   * Default: errors from the peer's side (SystemError, ShoalError) are dropped, others are
   * printed with console.error. Never throw from it.
   */
  onError?: (error: unknown, connection: Connection) => void;
}

function defaultOnError(error: unknown): void {
  if (error instanceof ShoalError) return;
  console.error("shoal: connection handler failed:", error);
}

/**
 * Listens on `address` and runs `handler` for every connection, concurrently. A handler that
 * returns ends its connection gracefully (close()); one that throws gets it reset and its
 * error passed to `onError`. Nothing a handler or a peer does becomes an unhandled rejection.
 * Returns the listener: close() it to stop accepting (open connections keep running).
 */
export function serve(address: AddressInput, handler: (connection: Connection) => unknown, options?: ServeOptions): Listener {
  if (typeof handler !== "function") throw new InvalidArgumentError("serve: handler must be a function");
  const onError = options?.onError ?? defaultOnError;
  if (typeof onError !== "function") throw new InvalidArgumentError("serve: onError must be a function");
  const listener = (options?.stack ?? networkStack()).listen(address, options);
  const run = async (c: Connection) => {
    try {
      await handler(c);
      await c.close();
    } catch (e) {
      c.reset();
      try {
        onError(e, c);
      } catch {
        // onError must not throw; if it does, the error has nowhere else to go.
      }
    }
  };
  void (async () => {
    for await (const c of listener) void run(c);
  })().catch((e) => defaultOnError(e));
  return listener;
}
