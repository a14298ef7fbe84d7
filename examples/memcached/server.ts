/**
 * One shard's memcached server: its engine, a TCP listener on the shared port (SO_REUSEPORT:
 * the kernel spreads connections over the shards), an optional UDP channel, the LRU crawler,
 * and graceful shutdown. Each connection parses straight from the views the stack received
 * into (no copy unless a command spans two receive buffers) and writes its batch of responses
 * once per received chunk; the stack sends every connection's writes of a loop turn in one
 * submission.
 */
import { chmodSync, lstatSync, unlinkSync } from "node:fs";
import { CString, dlopen, FFIType, ptr, read, type Pointer } from "bun:ffi";
import { STOP_RECEIVING, SystemError, Timer, maybeYield, sleep, bindUdp, configureNet, formatAddress, listen, parseAddress, BufferCache, type Connection, type Listener, type ListenOptions, type SocketAddress, type UdpChannel, type NativeBuffer } from "shoal";
import { Engine } from "./engine.ts";
import { Session, Proto, type Splice, unholdSplice } from "./session.ts";
import { Out } from "./out.ts";
import type { Settings } from "./settings.ts";
import type { StatsSink } from "./stats.ts";
import { fillHoles } from "./router.ts";
import { lookahead } from "./lookahead.ts";

/** Output bytes queued on a connection beyond which we wait for the peer to read. */
const WRITE_HIGH_WATER = 1 << 20;
/** An answer this large leaves from the shared buffer in place instead of being copied (Out.handOff). */
const HANDOFF_MIN = 32 * 1024;
/**
 * Bytes of released response buffers a shard keeps mapped for reuse; more, up to
 * OUT_CACHE_RETAIN_MAX, while its connections' large answers out at once need them (the peak of
 * the last second: see BufferCache.trim). With only the 2 MiB, 50 connections getting 60 KB
 * values mapped, faulted in and unmapped a 64 KiB buffer per answer (~14% of the CPU).
 */
const OUT_CACHE_RETAIN = 2 * 1024 * 1024;
const OUT_CACHE_RETAIN_MAX = 64 * 1024 * 1024;
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
/** The most response bytes one UDP request can get: the frame header counts 65535 datagrams. */
const UDP_BODY_MAX = 65535 * UDP_DATA_SIZE;
/** Datagrams of an answer handed to the channel before waiting for the oldest to be sent. */
const UDP_SENDS_AHEAD = 64;
/** The wait after a failed UDP receive before the next one. */
const UDP_RETRY_MS = 50;

const tooMany = new TextEncoder().encode("ERROR Too many open connections\r\n");
type Stop = typeof STOP_RECEIVING;

/** A listening socket as `stats conns` shows it. */
interface ListeningEntry {
  id: number;
  kind: "tcp" | "udp" | "unix";
  address: SocketAddress;
  /** rel_time it was opened. */
  since: number;
  channel?: UdpChannel;
}

/** Options of a shard server. */
export interface ShardServerOptions {
  shards: number;
  shardId: number;
}

/**
 * Queues `out[0..send)` with the splices between its pieces (each at its `at`), then lets their
 * batches give the buffers back (the output pinned what it queued: they return once sent).
 * `out` is the native buffer answer() hands off, or its bytes. Returns the last write's promise.
 */
function writeSpliced(output: Connection["output"], out: NativeBuffer | Uint8Array, send: number, splices: Splice[]): Promise<void> {
  let w: Promise<void> | undefined;
  let at = 0;
  try {
    for (const sp of splices) {
      if (sp.at > at) w = output.write(out, at, sp.at);
      w = output.write(sp.nb, sp.start, sp.start + sp.len);
      at = sp.at;
    }
    if (send > at) w = output.write(out, at, send);
  } finally {
    for (const sp of splices) unholdSplice(sp);
  }
  return w!;
}

/**
 * Takes the splices that go before `send` out of `splices` (in place: what stays are those
 * after it, which go with what follows `send`). Returns them, or undefined if there are none.
 * A splice exactly at `send` goes before it: a value is spliced after its header, so one at
 * the send point ended there (an mg value, which nothing follows, at a reqs_per_event yield).
 */
function splitSplices(splices: Splice[], send: number): Splice[] | undefined {
  let n = 0;
  while (n < splices.length && splices[n]!.at <= send) n++;
  if (n === 0) return undefined;
  const before = splices.slice(0, n);
  splices.splice(0, n);
  return before;
}

/**
 * One client connection on this shard: its session, and what its input calls with each received
 * range (push mode: each chunk is parsed and answered straight from its completion, with no
 * promise or task per request; only a cross-shard command or a slow reader returns a promise,
 * which holds further chunks until it settles). One object per connection whose methods are
 * shared: closures made per connection cost an idle one about half a KiB.
 */
class Client {
  /** rel_time of the last command (stats conns' secs_since_last_cmd). */
  lastCmd: number;
  /** The receiver receiveRanges() calls: data() bound to this client. */
  readonly onData: (buf: Uint8Array, start: number, end: number) => Promise<void | Stop> | Stop | undefined;
  /** answer() bound, made the first time this connection waits for other shards. */
  private afterFill: (() => Promise<void> | Stop | undefined) | undefined;

  constructor(
    readonly id: number,
    readonly connection: Connection,
    readonly session: Session,
    private readonly engine: Engine,
    private readonly sharedOut: Out,
  ) {
    this.lastCmd = engine.clock.now;
    this.onData = this.data.bind(this);
  }

  private data(buf: Uint8Array, start: number, end: number): Promise<void | Stop> | Stop | undefined {
    const session = this.session;
    // The first delivery after a batch of receives warms the caches for all of its keys.
    this.engine.store.warm();
    // Large values may go out from their items' memory while nothing else is queued.
    session.itemSpliceOk = this.connection.output.buffered === 0;
    try {
      session.feed(buf, start, end);
    } catch (e) {
      // Nothing half-rendered may stay in the shared buffer for the next connection.
      session.discardOut();
      throw e;
    }
    const sent = this.respond();
    return sent === STOP_RECEIVING || !session.paused ? sent : this.resumeAfter(sent);
  }

  /** Sends what the last feed or resume rendered: after the other shards' answers, if it asked them. */
  private respond(): Promise<void | Stop> | Stop | undefined {
    const session = this.session;
    this.lastCmd = this.engine.clock.now;
    if (session.holes.length > 0) {
      // A large answer may stay in the buffer it arrived in, pinned until it is sent, only for
      // a connection that keeps up (nothing queued): one that stops reading keeps at most one
      // such buffer (which carries other connections' answers too; see SPLICE_SHARED_MAX).
      session.spliceOk = this.connection.output.buffered === 0;
      // Output waits for other shards past this call: into the session's own buffer.
      session.detachOut();
      // The other shards' answers go in first, then answer() sends what stock would have
      // sent by now: up to the last send point (a get, a binary error...) when a value is
      // still arriving (a forwarded set waiting for its data has no hole yet: it is not
      // disturbed), or, on an abort, what came before it, the other shards' answers
      // included (one of them may be a send point itself: a binary error).
      return fillHoles(session).then<void | Stop>((this.afterFill ??= () => this.answer()));
    }
    return this.answer();
  }

  /**
   * Writes the responses of what was fed: a promise while the peer is slow to read,
   * STOP_RECEIVING once the connection is done (quit, a fatal protocol error): receiving ends
   * there, and the connection closes after what was written.
   */
  private answer(): Promise<void> | Stop | undefined {
    const session = this.session;
    const output = this.connection.output;
    const stats = this.engine.stats;
    // Large values sent from where they lie: other shards' answers left in the buffers they
    // arrived in (fillHoles made them only if all of `out` goes now: no abort, no value
    // arriving), this shard's items' values (from before the last send point, or after it).
    let splices = session.takeSplices();
    if (session.abort) {
      const keep = session.keep;
      const before = splices === undefined ? undefined : splitSplices(splices, keep);
      // What came after the send point is dropped, as the rest of `out`.
      if (splices !== undefined) for (const sp of splices) unholdSplice(sp);
      if (keep > 0) {
        stats.bytes_written += keep;
        if (before === undefined) void output.write(session.out.buf.subarray(0, keep));
        else {
          for (const sp of before) stats.bytes_written += sp.len;
          void writeSpliced(output, session.out.buf, keep, before);
        }
      }
      session.out.reset();
      return STOP_RECEIVING;
    }
    const out = session.out;
    let p: Promise<void> | undefined;
    // Waiting for a value, stock sends nothing: what came after its last send point waits.
    const send = session.midValue ? session.keep : out.pos;
    // Splices after it wait too, moved with the rest of `out` (keepSplices).
    let rest: Splice[] | undefined;
    if (splices !== undefined && session.midValue) {
      const now = splitSplices(splices, send);
      rest = splices;
      splices = now;
    }
    let given: NativeBuffer | undefined;
    let fresh: NativeBuffer | undefined;
    if (send > 0 || splices !== undefined) {
      stats.bytes_written += send;
      let w: Promise<void>;
      if (splices !== undefined) for (const sp of splices) stats.bytes_written += sp.len;
      if (send >= HANDOFF_MIN && out.native !== undefined) {
        // A large answer leaves in place, from the native buffer it was rendered in (the
        // output pins it until the kernel took it); `out` goes on in a fresh one. Copying it
        // into send memory cost as much as rendering it (a 60 KB value: ~25% of the CPU).
        // The shared buffer keeps its size for the next burst; an own one needs room only
        // for what follows `send` (it is given up once emptied).
        fresh = out.spare(out === this.sharedOut ? send : out.pos - send);
        given = out.native;
        w = splices === undefined ? output.write(given, 0, send) : writeSpliced(output, given, send, splices);
      } else {
        w = splices === undefined ? output.write(out.buf, 0, send) : writeSpliced(output, out.buf, send, splices);
      }
      if (output.buffered > WRITE_HIGH_WATER) p = w;
    }
    // What was sent is gone from `out`; `keep` counts from the new start (0).
    if (given !== undefined) {
      // `out` goes on in a fresh buffer with what came after `send`; the given one goes back
      // to the cache once the kernel has sent it.
      session.handOff(send, fresh!);
      given.release();
    } else {
      session.holdFrom(send);
    }
    if (rest !== undefined && rest.length > 0) session.keepSplices(rest, send);
    session.attachOut();
    // A metadump's answer is written: the next one may start once this one is sent (stock's
    // crawler is busy until it wrote the dump to its client).
    if (session.holdsDump) {
      const release = session.passDump();
      output.flush().then(release, release);
    }
    if (session.closeAfterWrite) return STOP_RECEIVING;
    return p;
  }

  /**
   * The session paused (PAUSE_BYTES rendered): once what it rendered is sent and the peer has
   * taken enough of it (below the output's high-water mark), it resumes; until it is done,
   * no more input is delivered (the stack stops receiving at its pause mark).
   */
  private async resumeAfter(sent: Promise<void | Stop> | undefined): Promise<void | Stop> {
    const session = this.session;
    let p: Promise<void | Stop> | Stop | undefined = sent;
    for (;;) {
      if (p !== undefined && (await p) === STOP_RECEIVING) return STOP_RECEIVING;
      if (!session.paused) return;
      session.itemSpliceOk = this.connection.output.buffered === 0;
      try {
        session.resume();
      } catch (e) {
        session.discardOut();
        throw e;
      }
      p = this.respond();
    }
  }
}

/** The memcached server of one shard. */
export class ShardServer {
  readonly engine: Engine;
  readonly settings: Settings;
  private listeners: Listener[] = [];
  private udp: UdpChannel[] = [];
  private readonly conns = new Map<number, Client>();
  /** What every connection's input is asked to call ahead of delivery: the store's cache warming. */
  private readonly receiveOptions: { lookahead: (buf: Uint8Array, start: number, end: number) => void };
  private nextId = 1;
  /**
   * Native memory for the response buffer this shard's connections share: a large answer is
   * sent from it in place (see answer()), and the buffer comes back here once sent.
   */
  private readonly outCache = new BufferCache({ retainBytes: OUT_CACHE_RETAIN, retainMaxBytes: OUT_CACHE_RETAIN_MAX });
  /** The response buffer this shard's connections share (Session.detachOut). */
  private readonly sharedOut = new Out(64 * 1024, this.outCache);
  private stopping = false;
  /** drain()'s grace is over: every connection's input is shut; none is taken after this. */
  private inputShut = false;
  /** drain()'s deadline passed: the connections open were reset; one taken after it is reset too. */
  private pastDeadline = false;
  /** Every connection's serve(), until it ends: stop() frees the store only after the last. */
  private readonly serving = new Set<Promise<void>>();
  private draining: Promise<void> | undefined;
  private closed = false;
  private crawler: Timer | undefined;
  private readonly maxConns: number;
  private readonly done: Promise<void>[] = [];
  /** The listening sockets as `stats conns` lists them (stock counts them as connections). */
  private readonly listening: ListeningEntry[] = [];
  /** When each UDP channel last served a request (stats conns' secs_since_last_cmd). */
  private readonly udpLastCmd = new Map<UdpChannel, number>();
  /** Connections that no longer count (everything was handed to the kernel) still closing. */
  private readonly lingering = new Set<Connection>();
  /** acceptLoops waiting for a connection to close (no_maxconns_fast at the limit). */
  private roomWaiters: (() => void)[] = [];
  /** When accepting stopped at the connection limit (-o no_maxconns_fast), performance.now(). */
  private disabledAt = 0;

  constructor(settings: Settings, options: ShardServerOptions) {
    this.settings = settings;
    this.engine = new Engine(settings, { shards: options.shards, shardId: options.shardId });
    this.engine.connStats = (sink) => this.connStats(sink);
    // `shutdown` (-A): the whole server stops, gracefully (connections answer what they got),
    // as SIGTERM does; stock exits too (SIGINT for "shutdown", SIGUSR1 for "shutdown graceful").
    this.engine.onShutdown = () => process.kill(process.pid, "SIGTERM");
    this.maxConns = Math.max(1, Math.ceil(settings.maxConns / options.shards));
    const { store, shards, shardId } = this.engine;
    this.receiveOptions = { lookahead: (buf, start, end) => lookahead(store, shards, shardId, buf, start, end) };
  }

  /**
   * Binds the sockets and starts serving; throws ListenError (one line, a code for main) where
   * stock exits with EX_OSERR. As stock's server_socket(): every address an -l entry resolves
   * to (getaddrinfo, AI_PASSIVE; without -l the wildcard 0.0.0.0 and [::]), IPv6 sockets
   * IPv6-only; an address that is in use (EADDRINUSE) or whose family this machine lacks is
   * skipped, any other failure is fatal, and so is an entry none of whose addresses could be
   * bound. With -s only the Unix socket, on shard 0 (one file, one listener).
   */
  start(): void {
    // Answers sent in place are native buffers, which the stack would send with zero-copy
    // (SEND_ZC) from 64 KiB: pages pinned until the peer's kernel let go of them, a second
    // completion per send, and nothing saved where the kernel copies anyway (a client on this
    // host). Stock sends plainly too. Closes that linger (see serve()) no longer count against
    // -c: at most this shard's share of -c of them at once, so that descriptors stay within
    // twice -c whatever clients do.
    configureNet({ zeroCopySendMin: Infinity, lingerMax: this.maxConns });
    const s = this.settings;
    const unixPath = s.unixSocket;
    if (unixPath !== null) {
      if (this.engine.shardId === 0) this.listenUnix(unixPath);
    } else {
      const entries: Interface[] = s.listen === null ? [{ text: "", host: null, port: -1, protocol: undefined }] : parseInterfaces(s.listen);
      // UDP first: once the TCP port accepts (how clients and scripts see readiness), the UDP
      // one is bound too (bound second, a datagram sent at once could find no socket).
      if (s.udpPort !== 0) {
        for (const e of entries) {
          // Stock's htons(): a -U above 65535 listens on its low 16 bits (70000: 4464).
          this.bindEach(e, e.port >= 0 ? e.port : s.udpPort & 0xffff, "UDP", (a) => {
            const ch = bindUdp(a, { reusePort: true, ipv6Only: a.family === "ipv6", maxQueued: 256 });
            this.udp.push(ch);
            this.done.push(this.udpLoop(ch));
          });
        }
      }
      if (s.port !== 0) {
        const opts = this.listenOptions();
        for (const e of entries) {
          this.bindEach(e, e.port >= 0 ? e.port : s.port, "TCP", (a) => {
            this.addListener(listen(a, { ...opts, ipv6Only: a.family === "ipv6" }), e.protocol);
          });
        }
      }
    }
    // `stats conns` lists the listening sockets first, as stock's lower fds: TCP, then UDP (one
    // per address per worker thread, as stock dispatches one per thread). Every shard has its
    // own listener per address (SO_REUSEPORT), stock one: shard 0 lists them; each shard lists
    // its UDP sockets, so there is one per address per shard. (The router's merge puts the
    // listeners of every shard's answer first.)
    const now = this.engine.clock.now;
    if (this.engine.shardId === 0) {
      for (const l of this.listeners) this.listening.push({ id: this.nextId++, kind: l.localAddress.family === "unix" ? "unix" : "tcp", address: l.localAddress, since: now });
    }
    for (const ch of this.udp) this.listening.push({ id: this.nextId++, kind: "udp", address: ch.localAddress, since: now, channel: ch });
    // Stock counts its listening sockets as connections: one per TCP address, one per UDP
    // address per worker thread (stats curr_connections, total_connections, structures).
    this.engine.listenConns = this.listeners.length + this.udp.length * this.engine.shards;
    let lastRead = 0;
    let readSinceGc = 0;
    this.crawler = new Timer(() => {
      this.engine.clock.tick();
      this.outCache.trim();
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

  /**
   * Calls `bind` with every address `entry` resolves to on `port`, as stock's server_socket()
   * does: an address in use, or of a family this machine cannot open, is skipped; any other
   * failure, or no address bound at all, throws ListenError.
   */
  private bindEach(entry: Interface, port: number, transport: "TCP" | "UDP", bind: (a: SocketAddress) => void): void {
    const where = this.settings.listen === null ? `${transport} port ${port}` : entry.text;
    const addresses = resolvePassive(entry.host, port, transport, where);
    let bound = 0;
    let skipped: { error: SystemError; address: SocketAddress } | undefined;
    for (const a of addresses) {
      try {
        bind(a);
        bound++;
      } catch (e) {
        if (!(e instanceof SystemError)) throw e;
        if (e.code === "EADDRINUSE" || e.code === "EAFNOSUPPORT" || e.code === "EPROTONOSUPPORT") {
          skipped = { error: e, address: a };
          continue;
        }
        // Stock's words (strerror), then the errno's name and the address, which stock leaves out.
        throw new ListenError(`${where}: bind(): ${strerror(e.errno)}, ${e.code} (${formatAddress(a)})`, e.code);
      }
    }
    if (bound === 0) {
      const why = skipped === undefined ? "no address" : `${strerror(skipped.error.errno)}, ${skipped.error.code} (${formatAddress(skipped.address)})`;
      throw new ListenError(`${where}: ${why}`, skipped?.error.code ?? "EADDRNOTAVAIL");
    }
  }

  /** TCP (and Unix socket) listener options; the accept limits depend on -o no_maxconns_fast. */
  private listenOptions(): ListenOptions {
    const s = this.settings;
    return {
      reusePort: true,
      backlog: s.backlog,
      writeHighWater: WRITE_HIGH_WATER,
      idleTimeoutMs: s.idleTimeout > 0 ? s.idleTimeout * 1000 : 0,
      // Without maxconns_fast, peers past the limit wait in the kernel's backlog (acceptLoop
      // stops taking them): the stack must not accept more than one ahead.
      ...(s.maxconnsFast ? {} : { acceptQueueLimit: 1 }),
    };
  }

  private addListener(l: Listener, protocol: Proto | undefined): void {
    this.listeners.push(l);
    this.done.push(this.acceptLoop(l, protocol));
  }

  /**
   * -s: the Unix socket, as stock's server_socket_unix(): a socket file left at the path (a
   * previous run's) is replaced, the file gets the -a mode (default 0700), and it stays after
   * the server stops.
   */
  private listenUnix(path: string): void {
    try {
      if (lstatSync(path).isSocket()) unlinkSync(path);
    } catch {
      // nothing there: bind creates it
    }
    let l: Listener;
    try {
      l = listen(`unix:${path}`, { ...this.listenOptions(), unlinkOnClose: false });
    } catch (e) {
      if (!(e instanceof SystemError)) throw e;
      throw new ListenError(`UNIX socket ${path}: bind(): ${strerror(e.errno)}`, e.code);
    }
    // Stock binds under umask(~mask): the same mode as a chmod to the mask.
    try {
      chmodSync(path, this.settings.unixMask & 0o777);
    } catch {
      // removed already by someone else: the listener still serves whoever holds a descriptor
    }
    this.addListener(l, undefined);
  }

  /**
   * Takes connections from `l`. At the connection limit, with maxconns_fast (the default) a new
   * peer gets "ERROR Too many open connections" and is closed; without it, as stock, accepting
   * stops (accepting_conns 0, listen_disabled_num counts) and new peers wait in the kernel's
   * backlog until a connection closes.
   */
  private async acceptLoop(l: Listener, protocol: Proto | undefined): Promise<void> {
    const stats = this.engine.stats;
    for (;;) {
      let c: Connection;
      try {
        c = await l.accept();
      } catch {
        // accept() fails with ECONNABORTED once the listener closes.
        return;
      }
      // While the listener closes, the connections the kernel had already completed are taken
      // and served: drain() shuts their input after the grace, as every other's, and one taken
      // after that (a busy shard came to it late) has its input shut at once. Each answers what
      // had arrived (a client that sent its requests and half-closed gets every answer), then
      // closes. (They were reset: such a client read ECONNRESET instead of its answers.)
      if (this.pastDeadline) {
        c.reset();
        continue;
      }
      if (this.inputShut) c.shutdownInput({ keepReceived: true });
      if (this.conns.size >= this.maxConns) {
        if (this.settings.maxconnsFast) {
          stats.rejected_conns++;
          void c.output.write(tooMany);
          void c.close();
          continue;
        }
        // Stock's accept() fails (EMFILE) when a peer comes past the limit: it stops accepting
        // then, and the peer waits until a connection closes. The listener accepts at most one
        // ahead (acceptQueueLimit), so later peers wait in the kernel's backlog.
        this.disableAccept();
        while (this.conns.size >= this.maxConns && !this.stopping) await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
        if (this.stopping) {
          c.reset();
          continue;
        }
      }
      stats.total_conns++;
      const serving = this.serve(c, protocol);
      this.serving.add(serving);
      const done = (): void => void this.serving.delete(serving);
      serving.then(done, done);
    }
  }

  /**
   * Accepting stops at the limit. Stock's accepting_conns (0 now), listen_disabled_num (one
   * more) and, once accepting resumes, time_in_listen_disabled_us live in the shard's counters:
   * `stats reset` zeroes the last two, as stock's (resettable) struct stats.
   */
  private disableAccept(): void {
    const stats = this.engine.stats;
    if (stats.accept_disabled) return;
    stats.accept_disabled = 1;
    this.disabledAt = performance.now();
    stats.listen_disabled_num++;
  }

  /** A connection closed (or the server stops): accepting goes on if it had stopped. */
  private makeRoom(): void {
    if (this.roomWaiters.length === 0) return;
    const stats = this.engine.stats;
    if (stats.accept_disabled) {
      stats.accept_disabled = 0;
      stats.time_in_listen_disabled_us += Math.round((performance.now() - this.disabledAt) * 1000);
    }
    for (const w of this.roomWaiters.splice(0)) w();
  }

  /** Runs one connection until it ends. */
  private async serve(connection: Connection, protocol: Proto | undefined): Promise<void> {
    const stats = this.engine.stats;
    // Responses are rendered into one buffer shared by the shard's connections (it stays in the
    // cache; each connection's own would be cold), copied to the connection's output at once.
    // An -l proto[...] listener fixes the protocol; else -B's.
    const session = new Session(this.engine, { sharedOut: this.sharedOut, protocol });
    session.pausable = true;
    const client = new Client(this.nextId++, connection, session, this.engine, this.sharedOut);
    this.conns.set(client.id, client);
    stats.curr_conns++;
    stats.conn_structs = Math.max(stats.conn_structs, this.conns.size);
    try {
      await connection.input.receiveRanges(client.onData, this.receiveOptions);
    } catch {
      // The peer reset / the connection failed: nothing more to answer.
    } finally {
      session.close();
      // The connection counts (curr_conns, the -c limit, stats conns) until every answer was
      // handed to the kernel, as stock's does until it wrote everything and closed the socket.
      // The close goes on after that: it lingers while the kernel still sends (a reset would
      // drop what the client has not taken yet), and drain() waits for it.
      const closed = connection.close().catch(() => {});
      try {
        await Promise.race([connection.output.flush().catch(() => {}), closed]);
      } finally {
        this.conns.delete(client.id);
        stats.curr_conns--;
        this.makeRoom();
        this.lingering.add(connection);
        await closed;
        this.lingering.delete(connection);
      }
    }
  }

  /** UDP: one datagram, one request (8-byte frame header), the answer in ≤1400-byte datagrams. */
  private async udpLoop(ch: UdpChannel): Promise<void> {
    let out = new Out(64 * 1024);
    const dgram = new Uint8Array(8 + UDP_DATA_SIZE);
    const sending: Promise<void>[] = [];
    for (;;) {
      let d;
      try {
        d = await ch.receive();
      } catch {
        // A failed receive (rare on an unconnected socket: no IP_RECVERR) is not the end of UDP
        // on this shard: try again after a pause (the channel re-arms only on receive()).
        await sleep(UDP_RETRY_MS);
        continue;
      }
      if (d === null) return;
      const data = d.data;
      // Every datagram UDP carries arrives whole (the stack's datagram buffers hold 65535
      // bytes, as stock's 64 KiB UDP read buffer does): a `set` of a 60 KB value is served. One
      // cut short (a stack with smaller buffers) must not have its commands run in part.
      if (d.truncated) continue;
      // Stock counts only datagrams longer than the frame header (a multi-datagram one too).
      if (data.length <= 8) continue;
      this.engine.stats.bytes_read += data.length;
      this.udpLastCmd.set(ch, this.engine.clock.now);
      const requestId = (data[0]! << 8) | data[1]!;
      // Multi-datagram requests are not supported (stock drops them too).
      if (data[4] !== 0 || data[5] !== 1) continue;
      const proto = data[8] === 0x80 ? Proto.BINARY : Proto.TEXT;
      const session = new Session(this.engine, { out, protocol: proto });
      // The datagram is counted whole above (frame header included), once.
      session.countBytes = false;
      // Pausable, so that a datagram asking for more than one response can carry (65535
      // datagrams: a multiget of thousands of large values) stops being rendered there, instead
      // of copying every value it names into memory.
      session.pausable = true;
      try {
        session.feed(data.subarray(8));
        for (;;) {
          if (session.holes.length > 0) await fillHoles(session);
          if (!session.paused || out.pos >= UDP_BODY_MAX) break;
          // Other connections get their turn between the parts of a long answer.
          const y = maybeYield();
          if (y !== undefined) await y;
          session.resume();
        }
      } catch {
        // This request goes unanswered (as a lost datagram would), and the channel serves the
        // next one: returning here would end UDP on this shard for good.
        session.close();
        out.reset();
        continue;
      }
      session.close();
      const body = session.abort ? out.buf.subarray(0, session.keep) : out.bytes();
      let total = Math.min(65535, Math.ceil(body.length / UDP_DATA_SIZE));
      // `quit` answers with a bare frame header (0 datagrams in the response), as stock does.
      const bare = total === 0 && session.closeAfterWrite && !session.abort;
      if (bare) total = 1;
      // send() copies the datagram: one scratch buffer serves them all, and at most
      // UDP_SENDS_AHEAD wait to be sent (a long answer is not queued whole a second time).
      for (let seq = 0; seq < total; seq++) {
        const part = body.subarray(seq * UDP_DATA_SIZE, Math.min(body.length, (seq + 1) * UDP_DATA_SIZE));
        dgram[0] = requestId >>> 8;
        dgram[1] = requestId & 0xff;
        dgram[2] = seq >>> 8;
        dgram[3] = seq & 0xff;
        dgram[4] = bare ? 0 : total >>> 8;
        dgram[5] = bare ? 0 : total & 0xff;
        dgram.set(part, 8);
        this.engine.stats.bytes_written += 8 + part.length;
        sending.push(ch.send(dgram.subarray(0, 8 + part.length), d.from).catch(() => {}));
        if (sending.length >= UDP_SENDS_AHEAD) await sending.shift();
      }
      out.reset();
      // A long answer's buffer is not kept for the small ones after it.
      if (out.buf.length > 4 * 1024 * 1024) out = new Out(64 * 1024);
    }
  }

  /**
   * `stats conns`, in stock's shape: the listening sockets (TCP and Unix: conn_listening; UDP:
   * conn_read, one per address per thread), then the connections. Ids are ours, not fds.
   */
  private connStats(sink: StatsSink): void {
    const now = this.engine.clock.now;
    const base = this.engine.shardId * 100000;
    for (const e of this.listening) {
      const k = `${base + e.id}`;
      if (e.kind === "udp") sink.add(`${k}:UDP`, "UDP");
      // Stock reads a listening socket's address into a sockaddr_in6: a path beyond its 26 bytes is cut.
      const a = e.address.family === "unix" ? { ...e.address, path: e.address.path.slice(0, 26) } : e.address;
      sink.add(`${k}:addr`, connText(e.kind, a));
      sink.add(`${k}:state`, e.kind === "udp" ? "conn_read" : "conn_listening");
      const last = e.channel === undefined ? e.since : (this.udpLastCmd.get(e.channel) ?? e.since);
      sink.add(`${k}:secs_since_last_cmd`, String(now - last));
    }
    for (const c of this.conns.values()) {
      const k = `${base + c.id}`;
      let addr = "?";
      let local = "?";
      try {
        const l = c.connection.localAddress;
        // Stock has no peer address for a Unix socket's client (family 0).
        addr = l.family === "unix" ? "?:<AF 0>" : connText("tcp", c.connection.remoteAddress);
        local = connText("tcp", l);
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
   * Graceful stop: no new connections (the ones the kernel completed before the stop are
   * still taken from its accept queue, not reset); every connection answers what it has
   * received (read or in the kernel's queue after a short grace), then closes. Resolves when all connections
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
    // Buffers still queued on a connection being torn down go back (unmapped) once released.
    this.sharedOut.close();
    this.outCache.close();
  }

  private async drainNow(timeoutMs: number): Promise<void> {
    this.stopping = true;
    // acceptLoops waiting for room go on to see their listener closed.
    for (const w of this.roomWaiters.splice(0)) w();
    this.crawler?.cancel();
    await Promise.all(this.listeners.map((l) => l.close({ acceptPending: true }).catch(() => {})));
    for (const ch of this.udp) await ch.close().catch(() => {});
    // Requests already on their way (sent before the stop) get a moment to arrive; then every
    // connection's input shuts, keeping what the kernel received: each connection answers all
    // of it (a slow reader's unparsed pipeline included), sees end of stream and closes.
    await sleep(GRACE_MS);
    this.inputShut = true;
    for (const c of this.conns.values()) c.connection.shutdownInput({ keepReceived: true });
    const deadline = Date.now() + timeoutMs;
    // The accept loops end once their closed listeners handed out every connection that was
    // pending: one taken late is served too (its input shut at once), and waited for.
    let loopsDone = false;
    void Promise.allSettled(this.done).then(() => (loopsDone = true));
    while ((!loopsDone || this.conns.size > 0 || this.lingering.size > 0) && Date.now() < deadline) await sleep(5);
    // Past the deadline: the rest are reset, and so is one an accept loop hands over later
    // (served with its input shut, it would reach the store after stop() freed it).
    this.pastDeadline = true;
    for (const c of this.conns.values()) c.connection.reset();
    for (const c of this.lingering) c.reset();
    await Promise.allSettled(this.done);
    await Promise.allSettled(this.serving);
  }
}

/**
 * Listening failed where stock exits with EX_OSERR (71). The message is one line naming what
 * failed, in stock's words (gai_strerror, strerror); `code` is the errno's name, as main.ts
 * expects of errors it reports in one line.
 */
export class ListenError extends Error {
  readonly code: string;
  constructor(message: string, code: string) {
    super(message);
    this.name = "ListenError";
    this.code = code;
  }
}

/** One -l entry: a host (null: any address), its own port (-1: -p's / -U's), a fixed protocol. */
export interface Interface {
  text: string;
  host: string | null;
  port: number;
  protocol: Proto | undefined;
}

/** strtol's prefix of `s` as stock's safe_strtol takes it: digits, then only white space or the end. */
function safeStrtol(s: string): number | null {
  const m = /^[ \t\n\v\f\r]*([+-]?\d+)([ \t\n\v\f\r].*)?$/s.exec(s);
  if (m === null) return null;
  const n = Number(m[1]);
  return n >= -0x8000_0000 && n <= 0x7fff_ffff ? n : null;
}

/**
 * Splits -l's value as stock's server_sockets() does: entries separated by ',' or ';' (empty
 * ones skipped), each `[proto[ascii|binary|negotiating]:][tag[NAME]:]HOST[:PORT]` where HOST
 * is a name, an address, `[IPv6]` or `*` (any). Throws ListenError with stock's complaint.
 */
export function parseInterfaces(list: string): Interface[] {
  const out: Interface[] = [];
  for (const text of list.split(/[;,]/)) {
    if (text === "") continue;
    const fail = (why: string): never => {
      throw new ListenError(`${text}: ${why}`, "EINVAL");
    };
    let p = text;
    // Debian's stock is built with TLS: "notls" is refused unless TLS is on, which it is not here.
    if (p.startsWith("notls")) fail("'notls' option is valid only when SSL is enabled");
    let protocol: Proto | undefined;
    if (p.startsWith("proto")) {
      p = p.slice(5);
      if (p.startsWith("[")) {
        const e = p.indexOf("]");
        if (e < 0) fail(`Invalid protocol spec: "${p}"`);
        // strncmp over the given length: a prefix ("asc", even "") names the protocol.
        const name = p.slice(1, e);
        if ("ascii".startsWith(name)) protocol = Proto.TEXT;
        else if ("binary".startsWith(name)) protocol = Proto.BINARY;
        else if ("negotiating".startsWith(name)) protocol = Proto.NEGOTIATE;
        else if ("proxy".startsWith(name)) fail(`Server not built with proxy: "${text.slice(0, text.indexOf("]"))}"`);
        p = p.slice(e + 2); // past "]" and the ":" assumed after it
      }
    }
    if (p.startsWith("tag")) {
      p = p.slice(3);
      if (p.startsWith("[")) {
        const e = p.indexOf("]");
        if (e < 0) fail(`Invalid tag in socket config: "${p}"`);
        const tag = p.slice(1, e);
        // A listener tag is for stock's proxy; checked as stock does, otherwise unused.
        if (tag.length < 1 || tag.length > 8) fail(`Listener tags must be between 1 and 8 characters: "${tag}"`);
        p = p.slice(e + 2);
      }
    }
    let host: string | null = null;
    if (p.startsWith("[")) {
      const e = p.indexOf("]");
      if (e < 0) fail(`Invalid IPV6 address: "${p}"`);
      host = p.slice(1, e);
      p = p.slice(e + 1);
    }
    let port = -1;
    const colon = p.indexOf(":");
    // One colon (or any after [v6]) starts a port; more: an IPv6 address without a port.
    if (colon >= 0 && (p.indexOf(":", colon + 1) < 0 || host !== null)) {
      const n = safeStrtol(p.slice(colon + 1));
      if (n === null) fail(`Invalid port number: "${p.slice(colon + 1)}"`);
      port = n!;
      p = p.slice(0, colon);
    }
    if (host === null) host = p;
    out.push({ text, host: host === "*" ? null : host, port, protocol });
  }
  return out;
}

/** libc's resolver and error strings: a synchronous getaddrinfo, as stock calls it at start. */
let libc: ReturnType<typeof openLibc> | undefined;

function openLibc() {
  return dlopen("libc.so.6", {
    getaddrinfo: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
    freeaddrinfo: { args: [FFIType.ptr], returns: FFIType.void },
    gai_strerror: { args: [FFIType.i32], returns: FFIType.ptr },
    strerror: { args: [FFIType.i32], returns: FFIType.ptr },
  }).symbols;
}

/** glibc's text for errno `n` ("Address already in use"), as stock's perror prints it. */
function strerror(n: number): string {
  libc ??= openLibc();
  return new CString(libc.strerror(n)!).toString();
}

const AI_PASSIVE = 1;
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const AF_INET = 2;
const AF_INET6 = 10;
const EAI_SYSTEM = -11;

/**
 * The addresses getaddrinfo(host, port, AI_PASSIVE) gives for a TCP or UDP socket, in its
 * order (null host: the wildcard addresses). The port goes as text, as stock passes it: -1 is
 * 0 (any), others beyond 16 bits are glibc's to judge. Throws ListenError naming `where`.
 */
function resolvePassive(host: string | null, port: number, transport: "TCP" | "UDP", where: string): SocketAddress[] {
  libc ??= openLibc();
  // struct addrinfo (x86-64 and arm64 alike): ai_flags, ai_family, ai_socktype at 0, 4, 8;
  // ai_addr at 24, ai_next at 40.
  const hints = new Int32Array(12);
  hints[0] = AI_PASSIVE;
  hints[2] = transport === "UDP" ? SOCK_DGRAM : SOCK_STREAM;
  const result = new BigUint64Array(1);
  const node = host === null ? null : Buffer.from(`${host}\0`);
  const service = Buffer.from(`${port === -1 ? 0 : port}\0`);
  const rc = libc.getaddrinfo(node === null ? null : ptr(node), ptr(service), ptr(hints), ptr(result));
  if (rc !== 0) {
    const why = rc === EAI_SYSTEM ? "system error" : new CString(libc.gai_strerror(rc)!).toString();
    throw new ListenError(`${where}: getaddrinfo(): ${why}`, "ENOENT");
  }
  const out: SocketAddress[] = [];
  const head = Number(result[0]) as Pointer;
  try {
    for (let ai = head; ai !== 0 && ai !== null; ai = read.ptr(ai, 40) as Pointer) {
      const sa = read.ptr(ai, 24) as Pointer;
      const family = read.u16(sa, 0);
      const p = (read.u8(sa, 2) << 8) | read.u8(sa, 3);
      if (family === AF_INET) {
        out.push({ family: "ipv4", host: [4, 5, 6, 7].map((i) => read.u8(sa, i)).join("."), port: p });
      } else if (family === AF_INET6) {
        const groups: string[] = [];
        for (let i = 0; i < 8; i++) groups.push(((read.u8(sa, 8 + 2 * i) << 8) | read.u8(sa, 9 + 2 * i)).toString(16));
        // parseAddress writes the host in RFC 5952 form ("::"), as stock's inet_ntop does.
        out.push(parseAddress({ family: "ipv6", host: groups.join(":"), port: p, scopeId: read.u32(sa, 24) }, "-l"));
      }
    }
  } finally {
    libc.freeaddrinfo(head);
  }
  return out;
}

/** An address as stock's stats conns writes it: "tcp:1.2.3.4:5", "udp6:[::]:5", "unix:/path". */
function connText(transport: "tcp" | "udp" | "unix", a: SocketAddress): string {
  switch (a.family) {
    case "ipv4":
      return `${transport}:${a.host}:${a.port}`;
    case "ipv6":
      return `${transport}6:[${a.host}]:${a.port}`;
    case "unix":
      return `unix:${a.path}`;
  }
}
