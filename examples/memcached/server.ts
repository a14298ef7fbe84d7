/**
 * One shard's memcached server: its engine, a TCP listener on the shared port (SO_REUSEPORT:
 * the kernel spreads connections over the shards), an optional UDP channel, the LRU crawler,
 * and graceful shutdown. Each connection parses straight from the views the stack received
 * into (no copy unless a command spans two receive buffers) and writes its batch of responses
 * once per received chunk; the stack sends every connection's writes of a loop turn in one
 * submission.
 */
import { SystemError, Timer, sleep } from "../../src/index.ts";
import { bindUdp, listen, formatAddress } from "../../src/net/index.ts";
import type { Connection, Listener, UdpChannel } from "../../src/net/index.ts";
import { Engine } from "./engine.ts";
import { Session, Proto } from "./session.ts";
import { Out } from "./out.ts";
import type { Settings } from "./settings.ts";
import type { StatsSink } from "./stats.ts";
import { fillHoles } from "./router.ts";
import { lookahead } from "./lookahead.ts";

/** Output bytes queued on a connection beyond which we wait for the peer to read. */
const WRITE_HIGH_WATER = 1 << 20;
/** Items the crawler checks per second (expired and flushed items are freed). */
const CRAWL_PER_TICK = 2000;
/** Hash buckets an expanding table migrates per second besides those moved by inserts (~0.2 ms). */
const HASH_MIGRATE_PER_TICK = 32768;
/** A shard that read this much since its last collection collects once it sees an idle second. */
const IDLE_GC_AFTER_BYTES = 16 * 1024 * 1024;
/** How long a graceful stop waits for requests already in flight before shutting connections' input. */
const GRACE_MS = 100;
/** UDP: payload bytes per datagram after the 8-byte frame header (stock's UDP_DATA_SIZE). */
const UDP_DATA_SIZE = 1392;

const tooMany = new TextEncoder().encode("ERROR Too many open connections\r\n");
/** Thrown by a connection's receiver to end it (quit, a fatal protocol error, a graceful stop). */
const STOP = new Error("connection done");

/** One connection's state on this shard. */
interface Conn {
  id: number;
  connection: Connection;
  session: Session;
  lastCmd: number;
}

/** Options of a shard server. */
export interface ShardServerOptions {
  shards: number;
  shardId: number;
}

/** The memcached server of one shard. */
export class ShardServer {
  readonly engine: Engine;
  readonly settings: Settings;
  private listeners: Listener[] = [];
  private udp: UdpChannel[] = [];
  private readonly conns = new Map<number, Conn>();
  private nextId = 1;
  /** The response buffer this shard's connections share (Session.detachOut). */
  private readonly sharedOut = new Out();
  private stopping = false;
  private draining: Promise<void> | undefined;
  private closed = false;
  private crawler: Timer | undefined;
  private readonly maxConns: number;
  private readonly done: Promise<void>[] = [];

  constructor(settings: Settings, options: ShardServerOptions) {
    this.settings = settings;
    this.engine = new Engine(settings, { shards: options.shards, shardId: options.shardId });
    this.engine.connStats = (sink) => this.connStats(sink);
    // `shutdown` (-A): the whole server stops, gracefully (connections answer what they got),
    // as SIGTERM does; stock exits too (SIGINT for "shutdown", SIGUSR1 for "shutdown graceful").
    this.engine.onShutdown = () => process.kill(process.pid, "SIGTERM");
    this.maxConns = Math.max(1, Math.ceil(settings.maxConns / options.shards));
  }

  /**
   * Binds the TCP (and UDP) sockets and starts serving. Throws SystemError (EADDRINUSE...).
   * Without -l, like stock: every IPv4 address and every IPv6 address (an IPv6-only socket
   * next to the IPv4 one; skipped where the machine has no IPv6).
   */
  start(): void {
    const s = this.settings;
    const explicit = s.listen !== null;
    const hosts = explicit ? s.listen!.split(",").filter((h) => h !== "") : ["0.0.0.0", "::"];
    /** Binds `bind(host, v6Only)` for every host; the wildcard IPv6 socket may fail where IPv6 is off. */
    const each = <T>(bind: (host: string, v6Only: boolean) => T): T[] => {
      const out: T[] = [];
      for (const host of hosts) {
        const wildcard6 = !explicit && host === "::";
        try {
          out.push(bind(host, wildcard6));
        } catch (e) {
          if (!(wildcard6 && e instanceof SystemError && (e.code === "EAFNOSUPPORT" || e.code === "EADDRNOTAVAIL"))) throw e;
        }
      }
      return out;
    };
    // UDP first: once the TCP port accepts (how clients and scripts see readiness), the UDP
    // one is bound too (bound second, a datagram sent at once could find no socket).
    if (s.udpPort !== 0) {
      for (const ch of each((host, ipv6Only) => bindUdp({ host, port: s.udpPort }, { reusePort: true, ipv6Only, maxQueued: 256 }))) {
        this.udp.push(ch);
        this.done.push(this.udpLoop(ch));
      }
    }
    if (s.port !== 0) {
      const opts = { reusePort: true, backlog: s.backlog, writeHighWater: WRITE_HIGH_WATER, idleTimeoutMs: s.idleTimeout > 0 ? s.idleTimeout * 1000 : 0 };
      for (const l of each((host, ipv6Only) => listen({ host, port: s.port }, { ...opts, ipv6Only }))) {
        this.listeners.push(l);
        this.done.push(this.acceptLoop(l));
      }
    }
    // Stock counts its listening sockets as connections: one per TCP address, one per UDP
    // address per worker thread (stats curr_connections, total_connections, structures).
    this.engine.listenConns = this.listeners.length + this.udp.length * this.engine.shards;
    let lastRead = 0;
    let readSinceGc = 0;
    this.crawler = new Timer(() => {
      this.engine.clock.tick();
      this.engine.store.maintainHash(HASH_MIGRATE_PER_TICK);
      if (this.settings.lruCrawler) this.engine.store.crawl(CRAWL_PER_TICK);
      if (this.settings.slabReassign) {
        // A slabs reassign waiting for busy pages goes on whatever the automove setting.
        this.engine.store.reassignRetry();
        if (this.settings.slabAutomove > 0) this.engine.store.automove(this.settings.slabAutomove);
      }
      // Once traffic stops after a burst, collect its garbage (cross-shard batches, receive
      // copies) so the memory goes back to the system instead of waiting for the next burst's
      // allocations to trigger a collection. Only on an idle second: the pause delays no request.
      const read = this.engine.stats.bytes_read;
      if (read !== lastRead) {
        readSinceGc += read - lastRead;
        lastRead = read;
      } else if (readSinceGc >= IDLE_GC_AFTER_BYTES) {
        readSinceGc = 0;
        Bun.gc(true);
      }
    }).armPeriodic(1000);
  }

  /** The TCP port actually bound (for tests that ask for port 0). */
  get port(): number {
    const a = this.listeners[0]?.localAddress;
    return a && a.family !== "unix" ? a.port : 0;
  }

  private async acceptLoop(l: Listener): Promise<void> {
    try {
      for await (const c of l) {
        if (this.stopping) {
          c.reset();
          continue;
        }
        const stats = this.engine.stats;
        if (this.conns.size >= this.maxConns) {
          stats.rejected_conns++;
          void c.output.write(tooMany);
          void c.close();
          continue;
        }
        stats.total_conns++;
        void this.serve(c);
      }
    } catch {
      // accept() fails with ECONNABORTED once the listener closes.
    }
  }

  /** Runs one connection until it ends. */
  private async serve(connection: Connection): Promise<void> {
    const stats = this.engine.stats;
    // Responses are rendered into one buffer shared by the shard's connections (it stays in the
    // cache; each connection's own would be cold), copied to the connection's output at once.
    const session = new Session(this.engine, { sharedOut: this.sharedOut });
    const conn: Conn = { id: this.nextId++, connection, session, lastCmd: this.engine.clock.now };
    this.conns.set(conn.id, conn);
    stats.curr_conns++;
    stats.conn_structs = Math.max(stats.conn_structs, this.conns.size);
    const input = connection.input;
    const output = connection.output;
    const clock = this.engine.clock;
    const store = this.engine.store;
    const { shards, shardId } = this.engine;
    const look = (buf: Uint8Array, start: number, end: number): void => lookahead(store, shards, shardId, buf, start, end);

    /** Writes the responses of what was fed; a promise while the peer is slow to read. */
    const answer = (): Promise<void> | undefined => {
      if (session.abort) {
        if (session.keep > 0) {
          stats.bytes_written += session.keep;
          void output.write(session.out.buf.subarray(0, session.keep));
        }
        session.out.reset();
        throw STOP;
      }
      const out = session.out;
      let p: Promise<void> | undefined;
      // Waiting for a value, stock sends nothing: what came after its last send point waits.
      const send = session.midValue ? session.keep : out.pos;
      if (send > 0) {
        stats.bytes_written += send;
        const w = output.write(out.buf, 0, send);
        if (output.buffered > WRITE_HIGH_WATER) p = w;
      }
      // What was sent is gone from `out`; `keep` counts from the new start (0).
      session.holdFrom(send);
      session.attachOut();
      if (session.closeAfterWrite) throw STOP;
      return p;
    };

    // Push mode: each received chunk is parsed and answered straight from its completion (no
    // promise or task per request); only a cross-shard command or a slow reader returns a
    // promise, which holds further chunks until it settles.
    const onData = (buf: Uint8Array, start: number, end: number): Promise<void> | undefined => {
      // The first delivery after a batch of receives warms the caches for all of its keys.
      store.warm();
      try {
        session.feed(buf, start, end);
      } catch (e) {
        // Nothing half-rendered may stay in the shared buffer for the next connection.
        session.out.reset();
        throw e;
      }
      conn.lastCmd = clock.now;
      if (session.holes.length > 0) {
        // Output waits for other shards past this call: into the session's own buffer.
        session.detachOut();
        // The other shards' answers go in first, then answer() sends what stock would have
        // sent by now: up to the last send point (a get, a binary error...) when a value is
        // still arriving (a forwarded set waiting for its data has no hole yet: it is not
        // disturbed), or, on an abort, what came before it, the other shards' answers
        // included (one of them may be a send point itself: a binary error).
        return fillHoles(session).then(answer);
      }
      return answer();
    };

    try {
      if (!this.stopping) await input.receiveRanges(onData, { lookahead: look });
    } catch {
      // STOP, or the peer reset / the connection failed: nothing more to answer.
    } finally {
      session.close();
      // The connection counts until its output is flushed and it is closed: stop() waits for
      // the count to reach zero, and answers still queued must reach the client first.
      try {
        await connection.close().catch(() => {});
      } finally {
        this.conns.delete(conn.id);
        stats.curr_conns--;
      }
    }
  }

  /** UDP: one datagram, one request (8-byte frame header), the answer in ≤1400-byte datagrams. */
  private async udpLoop(ch: UdpChannel): Promise<void> {
    const out = new Out(64 * 1024);
    const header = new Uint8Array(8);
    for (;;) {
      let d;
      try {
        d = await ch.receive();
      } catch {
        return;
      }
      if (d === null) return;
      const data = d.data;
      this.engine.stats.bytes_read += data.length;
      if (data.length <= 8) continue;
      const requestId = (data[0]! << 8) | data[1]!;
      // Multi-datagram requests are not supported (stock drops them too).
      if (data[4] !== 0 || data[5] !== 1) continue;
      const proto = data[8] === 0x80 ? Proto.BINARY : Proto.TEXT;
      const session = new Session(this.engine, { out, protocol: proto });
      session.feed(data.subarray(8));
      session.close();
      if (session.holes.length > 0) await fillHoles(session);
      const body = session.abort ? out.buf.subarray(0, session.keep) : out.bytes();
      let total = Math.min(65535, Math.ceil(body.length / UDP_DATA_SIZE));
      // `quit` answers with a bare frame header (0 datagrams in the response), as stock does.
      const bare = total === 0 && session.closeAfterWrite && !session.abort;
      if (bare) total = 1;
      for (let seq = 0; seq < total; seq++) {
        const part = body.subarray(seq * UDP_DATA_SIZE, Math.min(body.length, (seq + 1) * UDP_DATA_SIZE));
        const dgram = new Uint8Array(8 + part.length);
        header[0] = requestId >>> 8;
        header[1] = requestId & 0xff;
        header[2] = seq >>> 8;
        header[3] = seq & 0xff;
        header[4] = bare ? 0 : total >>> 8;
        header[5] = bare ? 0 : total & 0xff;
        dgram.set(header);
        dgram.set(part, 8);
        this.engine.stats.bytes_written += dgram.length;
        void ch.send(dgram, d.from).catch(() => {});
      }
      out.reset();
    }
  }

  private connStats(sink: StatsSink): void {
    const now = this.engine.clock.now;
    for (const c of this.conns.values()) {
      const k = `${this.engine.shardId * 100000 + c.id}`;
      let addr = "?";
      let local = "?";
      try {
        addr = `tcp:${formatAddress(c.connection.remoteAddress)}`;
        local = `tcp:${formatAddress(c.connection.localAddress)}`;
      } catch {
        // the socket is already gone
      }
      sink.add(`${k}:addr`, addr);
      sink.add(`${k}:listen_addr`, local);
      sink.add(`${k}:state`, "conn_parse_cmd");
      sink.add(`${k}:secs_since_last_cmd`, String(now - c.lastCmd));
    }
  }

  /**
   * Graceful stop: no new connections; every connection answers what it has received (read
   * or in the kernel's queue after a short grace), then closes. Resolves when all connections
   * are closed (or after `timeoutMs`, resetting the rest). The store stays: other shards may
   * still forward their connections' requests here until they drained too (stop() frees it).
   */
  drain(timeoutMs = 5000): Promise<void> {
    this.draining ??= this.drainNow(timeoutMs);
    return this.draining;
  }

  /** Drains (see drain()), then frees the store: no request may reach this shard after it. */
  async stop(timeoutMs = 5000): Promise<void> {
    await this.drain(timeoutMs);
    if (this.closed) return;
    this.closed = true;
    this.engine.close();
  }

  private async drainNow(timeoutMs: number): Promise<void> {
    this.stopping = true;
    this.crawler?.cancel();
    await Promise.all(this.listeners.map((l) => l.close().catch(() => {})));
    for (const ch of this.udp) await ch.close().catch(() => {});
    // Requests already on their way (sent before the stop) get a moment to arrive; then every
    // connection's input shuts, keeping what the kernel received: each connection answers all
    // of it (a slow reader's unparsed pipeline included), sees end of stream and closes.
    await sleep(GRACE_MS);
    for (const c of this.conns.values()) c.connection.shutdownInput({ keepReceived: true });
    const deadline = Date.now() + timeoutMs;
    while (this.conns.size > 0 && Date.now() < deadline) await sleep(5);
    for (const c of this.conns.values()) c.connection.reset();
    await Promise.allSettled(this.done);
  }
}
