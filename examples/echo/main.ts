/**
 * TCP echo server on every shard: each shard listens on the same port (SO_REUSEPORT) and
 * writes back whatever its connections send, until SIGINT/SIGTERM. Received views of 1 KiB or
 * more are forwarded without a copy; smaller ones are coalesced into one send per loop turn.
 *
 *   bun examples/echo/main.ts --port 7000             # one shard per CPU
 *   bun examples/echo/main.ts --port 7000 --smp 1 --host 127.0.0.1
 *   bun examples/echo/main.ts --help                  # Shoal's shared options (--smp, ...)
 */
import { app, sharded, thisShard, ShoalError, serve, formatAddress, parseAddress, type Connection, type Server } from "shoal";

/** Output bytes queued before the handler waits for them to drain (the connections' writeHighWater). */
const HIGH_WATER = 256 * 1024;

/** Echoes until the peer shuts down its side; serve() closes (or resets) the connection after. */
async function echo(c: Connection): Promise<void> {
  const output = c.output;
  // Push mode: every received chunk is written back from the completion that received it,
  // as a range of the receive buffer (no view per chunk; 1 KiB or more is sent in place).
  await c.input.receiveRanges((buf, start, end) => {
    const written = output.write(buf, start, end);
    // write()'s promise resolves at once below the high-water mark: hold input only above it.
    if (output.buffered > HIGH_WATER) return written;
  });
}

/** One echo listener per shard. */
class EchoShard {
  private readonly server: Server;

  constructor(host: string, port: number, idleTimeoutMs: number) {
    this.server = serve({ host, port }, echo, { idleTimeoutMs, backlog: 4096, writeHighWater: HIGH_WATER });
  }

  /** The address this shard listens on. */
  address(): string {
    return `shard ${thisShard()}: ${formatAddress(this.server.localAddress)}`;
  }

  /**
   * Stops accepting; every open connection echoes what its client had sent (received, or still
   * arriving within 100 ms), then closes once that is flushed. Connections still open after
   * 5 s (a client that does not read its echo) are reset.
   */
  async stop(): Promise<void> {
    await this.server.drain();
  }
}

/** --host must be an address literal: refused with the command line, not by a shard's listen() later. */
function checkHost(host: string): void {
  parseAddress({ host, port: 1 }, "listen");
}

/**
 * Starts the listeners; a port that cannot be listened on (EADDRINUSE, EACCES...) is reported
 * in one line, not as a failed main with its stack.
 */
async function started(start: () => Promise<void>, options: { host: string; port: number }): Promise<boolean> {
  try {
    await start();
    return true;
  } catch (e) {
    if (!(e instanceof ShoalError)) throw e;
    console.error(`echo: cannot listen on ${options.host} port ${options.port}: ${e.message}`);
    return false;
  }
}

const shards = sharded(EchoShard, { name: "echo" });

await app(
  {
    name: "echo",
    description: "TCP echo server: every shard listens on --port and writes back what it reads.",
    options: {
      port: { type: "integer", default: 7000, min: 1, max: 65535, description: "TCP port every shard listens on" },
      host: { type: "string", default: "0.0.0.0", description: "address to listen on (IPv4 or IPv6 literal)", check: checkHost },
      idleTimeoutMs: { type: "integer", default: 0, min: 0, description: "reset connections idle this long (0: never)" },
    },
  },
  async ({ options, signal, log }) => {
    if (!(await started(() => shards.start(options.host, options.port, options.idleTimeoutMs), options))) return 1;
    for (const a of await shards.invokeOnAll("address")) log.info(`listening, ${a}`);
    console.log(`echo: listening on port ${options.port}`);
    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      else signal.addEventListener("abort", () => resolve(), { once: true });
    });
    return 0;
  },
);
