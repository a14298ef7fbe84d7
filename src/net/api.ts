/**
 * The socket API's entry points. They use this shard's current network stack: the posix
 * stack (kernel sockets on io_uring) unless setNetworkStack chose another.
 */
import { InvalidArgumentError, ShoalError } from "../core/errors.ts";
import { sleep, Timer } from "../core/timer.ts";
import type { SocketAddress } from "./address.ts";
import type { AddressInput } from "./address.ts";
import { checkOptionKeys, LISTEN_OPTIONS, numberOption } from "./options.ts";
import { posixStack, type PosixStackOptions } from "./posix/stack.ts";
import type { Connection, ConnectOptions, Listener, ListenerCloseOptions, ListenOptions, NetStats, NetworkStack, SignalOptions, UdpChannel, UdpOptions } from "./types.ts";

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
  const st = current?.stats();
  // UDP channels are sockets too: they stayed on the old stack, netStats() no longer counting them.
  if (current !== stack && st !== undefined && st.connectionsOpen + st.listenersOpen + st.udpChannelsOpen > 0) {
    throw new InvalidArgumentError(`setNetworkStack: the ${current!.name} stack already has open sockets`);
  }
  current = stack;
}

/**
 * Tunes the posix stack: stream receive buffer size, count and cap (before the first socket;
 * recvBufferSize x recvBufferMax of address space is reserved, pages touched as buffers fill),
 * the UDP channels' datagram buffer count and cap (before the first UDP channel binds; each
 * buffer is 65,728 bytes, so the default cap of 1024 reserves 64 MiB, a shard without UDP
 * channels none), the zero-copy send threshold, buffer poisoning (debug: recycled receive
 * buffers are filled with 0xDE so a view kept past its next read fails loudly), and how many
 * graceful closes may linger at once (lingerMax). See
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
 * Opens a stream connection to `address` (a host name is resolved first, "localhost" to
 * 127.0.0.1 then ::1). A name's addresses are tried as RFC 8305's Happy Eyeballs does, the
 * families alternating: the next at once when one is refused, unreachable or forbidden, or
 * beside it when it has not answered within 250 ms (one at a time with a `localAddress` of a
 * fixed port); the first to connect wins, the others are cancelled. Another error starts no
 * further attempt and is reported once the attempts already waiting have failed too. All
 * within one timeoutMs and signal (with `localAddress`, only addresses of its family). Costs a
 * socket() and a setsockopt() system call, then one CONNECT on the ring, per address tried.
 * Rejects with SystemError (ECONNREFUSED, ETIMEDOUT after `timeoutMs` naming every address
 * still waiting, ENOENT from name resolution; op "connect" or "getaddrinfo") or AbortError
 * through `signal`.
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
  stack?: NetworkStack | undefined;
  /**
   * Called with every error a handler threw or rejected with (its connection is then reset).
   * Default: errors from the peer's side (SystemError, ShoalError) are dropped, others are
   * printed with console.error. Never throw from it.
   */
  onError?: ((error: unknown, connection: Connection) => void) | undefined;
}

function defaultOnError(error: unknown): void {
  if (error instanceof ShoalError) return;
  console.error("shoal: connection handler failed:", error);
}

/** Server.drain() options. */
export interface DrainOptions {
  /**
   * How long requests already on their way get to arrive before every connection's input is
   * shut (milliseconds, default 100): a client's bytes sent just before the stop still count.
   */
  graceMs?: number | undefined;
  /** How long handlers get to finish after that; the connections left are reset (default 5000). */
  timeoutMs?: number | undefined;
}

/** What serve() returns: its listener, plus a graceful stop for the connections it runs. */
export interface Server extends Listener {
  /** Handlers running now (their connections not yet closed). */
  readonly active: number;
  /**
   * Graceful stop: closes the listener (taking the connections already in the kernel's accept
   * queue: they are served like the others, see ListenerCloseOptions), waits `graceMs`, then shuts every connection's input
   * keeping what was received (shutdownInput({ keepReceived: true })): each handler reads the
   * rest of what its client sent, answers it, sees end of stream and returns, and serve()
   * closes the connection after its output is flushed. Resolves once the listener has handed out
   * its last connection and every handler has finished and its connection closed, or after
   * `timeoutMs`, with the connections still open reset, and any handed out later reset too (a
   * handler still running then is not waited for; its socket operations fail from then on).
   * Idempotent: later calls return the first call's promise. Throws InvalidArgumentError for bad
   * options.
   */
  drain(options?: DrainOptions): Promise<void>;
}

/** One serve(): the listener's API, delegated, and the connections its handlers run. */
class ServeServer implements Server {
  /** Connections whose handler (and close) has not finished, with the promise that says when. */
  readonly running = new Map<Connection, Promise<void>>();
  draining: Promise<void> | undefined;
  /** drain()'s grace is over and it shut the running connections' input: one that starts later shuts its own. */
  inputShut = false;
  /** drain()'s deadline passed and it reset the connections open then: one that starts later is reset too. */
  pastDeadline = false;
  /**
   * serve()'s accept loop ended: the listener handed out its last connection (after a close,
   * those it took from the kernel's queue come first).
   */
  acceptEnded = false;
  /** drain() waits for the accept loop's end and the last handler: called when either comes. */
  private whenIdle: (() => void) | undefined;

  constructor(readonly listener: Listener) {}

  get localAddress(): SocketAddress {
    return this.listener.localAddress;
  }
  get connections(): number {
    return this.listener.connections;
  }
  get active(): number {
    return this.running.size;
  }
  accept(opts?: SignalOptions): Promise<Connection> {
    return this.listener.accept(opts);
  }
  abortAccept(): void {
    this.listener.abortAccept();
  }
  close(opts?: ListenerCloseOptions): Promise<void> {
    return this.listener.close(opts);
  }
  [Symbol.asyncDispose](): Promise<void> {
    return this.listener.close();
  }
  [Symbol.asyncIterator](): AsyncIterator<Connection> {
    return this.listener[Symbol.asyncIterator]();
  }

  drain(options?: DrainOptions): Promise<void> {
    checkOptionKeys("drain", options, ["graceMs", "timeoutMs"]);
    const graceMs = msOption("graceMs", options?.graceMs, 100);
    const timeoutMs = msOption("timeoutMs", options?.timeoutMs, 5000);
    this.draining ??= this.drainNow(graceMs, timeoutMs);
    return this.draining;
  }

  /** @internal A handler finished or the accept loop ended: wakes drain() once both are over. */
  checkIdle(): void {
    if (this.acceptEnded && this.running.size === 0 && this.whenIdle !== undefined) {
      const wake = this.whenIdle;
      this.whenIdle = undefined;
      wake();
    }
  }

  private async drainNow(graceMs: number, timeoutMs: number): Promise<void> {
    // Clients the kernel connected before the stop are served too (not reset from its queue).
    // The close may resolve before the listener has handed them all out (accept() does that,
    // and its iteration ends after the last): drain() waits for the accept loop's end as well
    // as for the handlers (it returned while a connection the close took had not started yet,
    // which was then served after drain() resolved).
    await this.listener.close({ acceptPending: true });
    if (this.running.size === 0 && this.acceptEnded) {
      this.inputShut = true;
      return;
    }
    if (graceMs > 0) await sleep(graceMs);
    // A connection that started while the grace ran (accepted just before the listener closed,
    // its handler not yet started then) gets the grace too: it is in `running` now. run() shuts
    // the input of any that starts after this point.
    this.inputShut = true;
    for (const c of this.running.keys()) c.shutdownInput({ keepReceived: true });
    if (this.running.size === 0 && this.acceptEnded) return;
    // Handlers that have not finished by the deadline get their connections reset, and so does
    // a connection handed out after it (run() resets it: it was served, input shut, after drain()
    // had returned); drain() does not wait for them further (one may be stuck on something other
    // than its socket).
    const idle = new Promise<void>((resolve) => (this.whenIdle = resolve));
    const timer = new Timer(() => {
      this.pastDeadline = true;
      for (const c of this.running.keys()) c.reset();
      this.whenIdle?.();
    }).arm(timeoutMs);
    try {
      await idle;
    } finally {
      this.whenIdle = undefined;
      timer.cancel();
    }
  }
}

/** A drain() duration: a number of milliseconds >= 0, finite (an endless grace or wait would hang the stop). */
function msOption(name: string, value: unknown, fallback: number): number {
  const ms = numberOption("drain", name, value, fallback, 0, false);
  if (ms === Infinity) throw new InvalidArgumentError(`drain: ${name} must be finite, got Infinity`);
  return ms;
}

/**
 * Listens on `address` and runs `handler` for every connection, concurrently. A handler that
 * returns ends its connection gracefully (close()); one that throws gets it reset and its
 * error passed to `onError`. Nothing a handler or a peer does becomes an unhandled rejection.
 * Returns the listener as a Server: close() it to stop accepting (open connections keep
 * running), or drain() it to stop gracefully (connections answer what they received, then close).
 */
export function serve(address: AddressInput, handler: (connection: Connection) => unknown, options?: ServeOptions): Server {
  if (typeof handler !== "function") throw new InvalidArgumentError("serve: handler must be a function");
  checkOptionKeys("serve", options, [...LISTEN_OPTIONS, "stack", "onError"]);
  const { stack, onError = defaultOnError, ...listenOptions } = options ?? {};
  if (typeof onError !== "function") throw new InvalidArgumentError("serve: onError must be a function");
  const server = new ServeServer((stack ?? networkStack()).listen(address, listenOptions));
  const run = async (c: Connection) => {
    try {
      // Handed out after drain()'s deadline: reset, as the connections open then were.
      if (server.pastDeadline) {
        c.reset();
        return;
      }
      if (server.inputShut) c.shutdownInput({ keepReceived: true });
      await handler(c);
      await c.close();
    } catch (e) {
      c.reset();
      try {
        onError(e, c);
      } catch {
        // onError must not throw; if it does, the error has nowhere else to go.
      }
    } finally {
      server.running.delete(c);
      server.checkIdle();
    }
  };
  void (async () => {
    // run() starts a microtask later, so that it is in `running` before its finally removes it
    // (a handler that throws at once would otherwise settle first and stay listed).
    for await (const c of server.listener) server.running.set(c, Promise.resolve(c).then(run));
  })()
    .catch((e) => defaultOnError(e))
    .finally(() => {
      server.acceptEnded = true;
      server.checkIdle();
    });
  return server;
}
