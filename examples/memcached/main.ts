/**
 * memcached on Shoal: a drop-in replacement for stock memcached 1.6, one shard per core.
 *
 *   bun examples/memcached/main.ts                    # every core, port 11211
 *   bun examples/memcached/main.ts -p 11311 -t 2 -m 256 -U 11311 -vv
 *   bun examples/memcached/main.ts -h
 *
 * The command line is memcached's (cli.ts). On the main thread it is parsed and handed to
 * Shoal's app template as one option; the supervisor starts one Worker per shard (-t / --smp),
 * each of which runs a ShardServer: a listener on the shared port (SO_REUSEPORT), its own
 * store holding the keys it owns, and the router that sends commands for other shards' keys
 * to their owner. SIGINT/SIGTERM/SIGUSR1 stop it gracefully: listeners close, every connection
 * answers what it has received, then closes; a repeated signal does not cut that (bounded) stop
 * short, and SIGHUP is ignored, as stock does. Stock's lines: SIGUSR1 prints "Gracefully
 * stopping", SIGINT/SIGTERM print "Exiting normally" with -v only (both on stderr).
 */
import { isMainThread } from "node:worker_threads";
import { availableParallelism } from "node:os";
import { app, raiseFileLimit, sharded, smp, StartupError, SystemError, thisShard } from "shoal";
import { readFileSync } from "node:fs";
import { checkLate, checkShardMemory, parseCommandLine, usage, usageErrorText, UsageError } from "./cli.ts";
import { ShardServer } from "./server.ts";
import { VERSION, type Settings } from "./settings.ts";
import { installRouter } from "./router.ts";

/**
 * The memcached service: one instance (a ShardServer) per shard. Started in two steps, as
 * Seastar servers are: every shard builds its store and router (start()), and only then does
 * any shard listen (listen() on all), so no request is forwarded to a shard that cannot take it
 * yet. Stopped in two steps too: every shard drains (no new connections; the ones open answer
 * what they received, which may still forward to other shards), and only then do the stores go
 * (stop()).
 */
class MemcachedShard {
  readonly server: ShardServer;

  constructor(settings: Settings) {
    this.server = new ShardServer(settings, { shards: smp.count, shardId: thisShard() });
    installRouter(this.server.engine);
  }

  /** Binds this shard's sockets and starts serving. */
  listen(): void {
    this.server.start();
  }

  /** Graceful stop of this shard's connections; the store stays for other shards' requests. */
  async drain(): Promise<void> {
    await this.server.drain();
  }

  /** Drains (if main did not) and frees this shard's store. */
  async stop(): Promise<void> {
    await this.server.stop();
  }
}

const shards = sharded(MemcachedShard, { name: "memcached" });

/** -v on the command line (the main thread's copy, for the signal lines). */
let verbose = 0;

/**
 * Whether `name` is a user on this machine (stock's getpwnam: getent asks NSS as it would; without
 * getent, /etc/passwd).
 */
/** The passwd entry of `name` (uid and primary gid), or null if there is none. */
function lookupUser(name: string): { uid: number; gid: number } | null {
  const parse = (line: string | undefined): { uid: number; gid: number } | null => {
    const f = line?.split(":");
    if (f === undefined || f.length < 4 || f[0] !== name) return null;
    return { uid: Number(f[2]), gid: Number(f[3]) };
  };
  try {
    const r = Bun.spawnSync(["getent", "passwd", name], { stdout: "pipe", stderr: "ignore" });
    if (r.exitCode === 2) return null;
    if (r.exitCode === 0) return parse(r.stdout.toString("latin1").split("\n")[0]);
  } catch {
    // no getent: read the file
  }
  try {
    return parse(readFileSync("/etc/passwd", "latin1").split("\n").find((l) => l.split(":")[0] === name));
  } catch {
    return null;
  }
}

/**
 * -u as root, as stock: supplementary groups dropped (EPERM is reported and tolerated), then the
 * user's group and id, before any socket or shard exists (so the Unix socket file is the
 * user's, and ports below 1024 need root kept, as with stock). Process-wide: glibc applies the
 * change to every thread.
 */
function dropPrivileges(name: string): void {
  const pw = lookupUser(name);
  if (pw === null) {
    process.stderr.write(`can't find the user ${name} to switch to\n`);
    process.exit(67);
  }
  try {
    process.setgroups!([]);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    process.stderr.write(`failed to drop supplementary groups: ${(e as Error).message}\n`);
    if (code !== "EPERM") process.exit(71);
  }
  try {
    process.setgid!(pw.gid);
    process.setuid!(pw.uid);
  } catch {
    process.stderr.write(`failed to assume identity of user ${name}\n`);
    process.exit(71);
  }
}

/**
 * Descriptors the runtime holds besides connections. Measured with -l 127.0.0.1: 15 at -t 1, 57
 * at -t 8, so about 9 for the process (stdio, Bun's own loop) and per shard 5 (its io_uring and
 * the reactor's eventfd, the Worker's epoll and eventfd, its stderr) plus its listening sockets
 * (one per address and protocol; a second address or -U adds one a shard). Doubled, for what
 * start-up opens for a while (modules, getent's pipes) and for what a later runtime may add.
 */
function runtimeDescriptors(s: Settings, shards: number): number {
  const addresses = s.listen === null ? 2 : s.listen.split(",").length;
  const sockets = s.unixSocket !== null ? 1 : addresses * ((s.port !== 0 ? 1 : 0) + (s.udpPort !== 0 ? 1 : 0));
  return 2 * (9 + shards * (5 + sockets));
}

/**
 * Stock sets RLIMIT_NOFILE to -c (soft and hard) and, if it cannot, prints its line and exits
 * EX_OSERR. This server needs -c at least, as stock does, and asks for -c plus what its runtime
 * holds where the hard limit allows (or can be raised: CAP_SYS_RESOURCE); it never lowers a
 * limit (the runtime's own descriptors count against it too). Process-wide, so before any shard.
 */
function setFileLimit(s: Settings, shards: number): void {
  try {
    raiseFileLimit(s.maxConns, { wanted: s.maxConns + runtimeDescriptors(s, shards) });
  } catch (e) {
    if (e instanceof StartupError) {
      // No native library: app() would say the same.
      process.stderr.write(`memcached: ${e.message}\n`);
      process.exit(1);
    }
    if (!(e instanceof SystemError)) throw e;
    process.stderr.write("failed to set rlimit for open files. Try starting as root or requesting smaller maxconns value.\n");
    process.exit(71);
  }
}

function failUsage(e: unknown): never {
  if (!(e instanceof UsageError)) throw e;
  process.stderr.write(usageErrorText(e));
  process.exit(e.exitCode);
}

if (isMainThread) {
  let cl;
  try {
    cl = parseCommandLine(process.argv.slice(2));
  } catch (e) {
    failUsage(e);
  }
  if (cl.action === "help") {
    process.stdout.write(usage());
    process.exit(0);
  }
  if (cl.action === "version") {
    process.stdout.write(`memcached ${VERSION}\n`);
    process.exit(0);
  }
  if (cl.action === "license") {
    process.stdout.write("memcached protocol compatible server, part of Shoal (see the repository's license).\n");
    process.exit(0);
  }
  for (const w of cl.warnings) process.stderr.write(`memcached: warning: ${w}\n`);
  verbose = cl.settings.verbose;
  const cpus = availableParallelism();
  const threads = cl.threadsGiven ? cl.settings.threads : cpus;
  cl.settings.threads = threads;
  try {
    checkShardMemory(cl.settings, threads);
  } catch (e) {
    failUsage(e);
  }
  // In stock's order: the descriptor limit, the -u user, then what stock finds only later (-S, a
  // negative port).
  setFileLimit(cl.settings, threads);
  // Stock, as root, switches to the -u user (EX_NOUSER if there is none). Run as root without
  // -u, stock refuses to start; this server starts (README: Differences).
  if (cl.user !== null && (process.getuid?.() === 0 || process.geteuid?.() === 0)) dropPrivileges(cl.user);
  try {
    checkLate(cl);
  } catch (e) {
    failUsage(e);
  }
  // Hand the parsed settings to the app template (and through it to every shard) as one option.
  process.argv = [
    process.argv[0]!,
    process.argv[1]!,
    "--smp",
    String(threads),
    // Shards are pinned only when they take every CPU. With fewer shards than CPUs (e.g. -t 1
    // on a machine that also runs clients), a pinned shard fights the rest of the machine's
    // work for its one CPU while another idles: TCP wake-ups pull a local client onto the
    // shard's CPU. Stock memcached's threads float too. Measured with memcaslap (-T 1, 100
    // connections) against -t 1 on 2 CPUs: pinned 144k TPS with the shard at 0.6 of a core,
    // unpinned 175-186k at 1.0 core, stock 188-192k (bench/memcached/RESULTS-memcached.md).
    ...(threads !== cpus ? ["--overprovisioned"] : []),
    // Busy-polling an idle ring costs CPU per request that stock memcached does not spend;
    // clients keep the ring busy enough that sleeping in io_uring_enter costs no throughput.
    "--idle-poll-time-us",
    process.env.SHOAL_IDLE_POLL_US ?? "0",
    // Stock memcached writes nothing to stderr without -v; the loop's stall reports (warnings of
    // the "reactor" logger: a task or Bun's event loop holding the shard past 25 ms, which a
    // loaded host produces at start-up) are shown with -v only.
    "--log-level",
    cl.settings.verbose > 0 ? "debug" : "info,reactor=error",
    "--memcached-settings",
    JSON.stringify(cl.settings),
  ];
}

await app(
  {
    name: "memcached",
    // Draining waits up to 5 s for busy connections (ShardServer.drain); main returns after it.
    mainGraceMs: 15_000,
    signals: {
      shutdown: ["SIGINT", "SIGTERM", "SIGUSR1"],
      ignore: ["SIGHUP"],
      // GNU timeout, systemd and init scripts may signal twice; the stop is bounded anyway.
      repeat: "ignore",
      onShutdown: (signal) => {
        if (signal === "SIGUSR1") process.stderr.write("Gracefully stopping\n");
        else if (verbose > 0) process.stderr.write("Exiting normally\n");
      },
    },
    description: "memcached-compatible server (run with -h for memcached's options)",
    options: {
      memcachedSettings: { type: "string", required: true, description: "the parsed memcached command line (internal)" },
    },
  },
  async ({ options, signal }) => {
    const settings = JSON.parse(options.memcachedSettings) as Settings;
    await shards.start(settings);
    try {
      await shards.invokeOnAll("listen");
    } catch (e) {
      await shards.stop().catch(() => {});
      // A port in use, an address not on this machine...: one line and stock's exit code
      // (EX_OSERR), not a stack trace. The error may come from another shard (a RemoteError
      // keeping the code).
      const code = (e as { code?: unknown }).code;
      if (typeof code === "string" && /^E[A-Z0-9]+$/.test(code)) {
        console.error(`memcached: failed to listen: ${(e as Error).message}`);
        return 71;
      }
      throw e;
    }
    if (settings.verbose > 0) {
      console.error(`memcached ${VERSION} on Shoal: ${smp.count} shard(s), port ${settings.port}${settings.udpPort ? `, udp ${settings.udpPort}` : ""}`);
    }
    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      else signal.addEventListener("abort", () => resolve(), { once: true });
    });
    // Every shard finishes its connections before any shard's store goes (services stop after main).
    await shards.invokeOnAll("drain").catch(() => {});
    return 0;
  },
);
