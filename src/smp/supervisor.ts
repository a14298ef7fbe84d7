/**
 * The supervisor: the main thread of an app. It starts one Worker per shard, one after another
 * (shard k+1 starts once shard k reported ready, so no two Workers dlopen at once), checks that
 * every shard registered the same handlers and services, then lets shard 0 run main.
 *
 * It forwards SIGINT/SIGTERM (or the app's SignalPolicy.shutdown) as an orderly shutdown: every
 * shard's shutdown signal fires, shard 0 waits for main to return, then stops every running
 * service on every shard (newest first), and the process exits 0 (1 if a stop() failed). A shard that throws or exits is reported with
 * its id and cause; the others are told (calls to it fail with ShardGoneError) and stopped the
 * same way, and the process exits 1. A shard that fails to start gives one message and exit 1.
 * A second signal during shutdown exits at once (unless the policy's repeat is "ignore"; the same signal within 250 ms is the same delivery).
 * A shutdown that runs past its timeout exits 1, naming the shards whose threads no longer
 * answer a message (a busy loop, a blocking call): those held it up.
 */
import { constants, totalmem } from "node:os";
import { InvalidArgumentError } from "../core/errors.ts";
import { native } from "../core/native.ts";
import type { LoopOptions } from "../core/loop.ts";
import { flushLog, logger, setLogLevel, setLogPrefix, writeStderr } from "../log/logger.ts";
import { formatCpuset, threadCpuAffinity } from "./affinity.ts";
import { describeError, errorInfo, type ErrorInfo, type ToShard, type ToSupervisor } from "./control.ts";
import { DEFAULT_RING_BYTES, SmpLayout, createSmpMemory } from "./ring.ts";
import { becomeSupervisor } from "./runtime.ts";

/**
 * A shutdown signal repeated within this many milliseconds of the first is the same delivery
 * (GNU timeout sends SIGTERM to the child and then to its group), never a forced exit.
 */
const REPEAT_WINDOW_MS = 250;

/** How long a shard may take to answer "ping" when the shutdown timed out before it is named as blocked. */
const PROBE_MS = 1000;

/** How the supervisor treats process signals (the default: SIGINT and SIGTERM stop, a repeat exits). */
export interface SignalPolicy {
  /** Signals that begin the orderly shutdown (default SIGINT and SIGTERM). */
  shutdown?: readonly NodeJS.Signals[] | undefined;
  /** Signals caught and ignored, so they do not kill the process (default none; an ignored SIGINT or SIGTERM leaves the default shutdown list). */
  ignore?: readonly NodeJS.Signals[] | undefined;
  /**
   * A shutdown signal while the shutdown runs: "exit" (default) exits 1 at once without waiting
   * for services; "ignore" lets the shutdown (bounded by shutdownTimeoutMs) finish and exit with
   * its own code. Either way the same signal within 250 ms of the first counts as the first
   * (GNU timeout delivers its SIGTERM twice, to the child and to its process group).
   */
  repeat?: "exit" | "ignore" | undefined;
  /**
   * Called on the main thread when a shutdown signal begins the shutdown, in place of the
   * "received: shutting down" log line (an app that prints its own, as a server it replaces did).
   * If it throws, the error is reported, the shutdown goes on, and the exit code is 1.
   */
  onShutdown?: ((signal: NodeJS.Signals) => void) | undefined;
}

/** Signals a process cannot catch, or that Bun/the runtime need: refused in a SignalPolicy. */
const UNCATCHABLE = new Set(["SIGKILL", "SIGSTOP", "SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL"]);

/** Throws InvalidArgumentError unless `policy` is a well-formed SignalPolicy. */
export function checkSignalPolicy(policy: SignalPolicy | undefined): void {
  if (policy === undefined) return;
  if (policy === null || typeof policy !== "object") throw new InvalidArgumentError("signals must be an object");
  const seen = new Set<string>();
  for (const key of ["shutdown", "ignore"] as const) {
    const list = policy[key];
    if (list === undefined) continue;
    if (!Array.isArray(list)) throw new InvalidArgumentError(`signals.${key} must be an array of signal names`);
    for (const sig of list as unknown[]) {
      if (typeof sig !== "string" || !(sig in constants.signals) || UNCATCHABLE.has(sig)) {
        throw new InvalidArgumentError(`signals.${key}: ${String(sig)} is not a signal a process can catch`);
      }
      if (seen.has(sig)) throw new InvalidArgumentError(`signals: ${sig} is listed twice`);
      seen.add(sig);
    }
  }
  if (policy.repeat !== undefined && policy.repeat !== "exit" && policy.repeat !== "ignore") {
    throw new InvalidArgumentError(`signals.repeat must be "exit" or "ignore", got ${String(policy.repeat)}`);
  }
  if (policy.onShutdown !== undefined && typeof policy.onShutdown !== "function") {
    throw new InvalidArgumentError("signals.onShutdown must be a function");
  }
}

/** How the supervisor runs the shards. */
export interface SupervisorOptions {
  /** The application's name (messages, logger). */
  name: string;
  /** URL or path of the module every shard imports (it calls app()). */
  module: string;
  /** Shards to start; default: one per CPU in `cpuset` or in the process's CPU set. */
  smp?: number | undefined;
  /** CPUs to pin shards to, in order; default: the process's CPU set. */
  cpuset?: number[] | undefined;
  /** Do not pin, and allow more shards than CPUs (shared machines, tests). */
  overprovisioned?: boolean | undefined;
  /** Loop options for every shard. */
  loop?: LoopOptions | undefined;
  /** Log level specification for every thread. */
  logLevel?: string | undefined;
  /** Route local calls through the encoder on every shard (debug). */
  encodeLocalCalls?: boolean | undefined;
  /** The parsed command line, handed to app() inside every shard. */
  options?: Record<string, unknown> | undefined;
  /** Bytes of data per ring (power of two, default 256 KiB). */
  ringBytes?: number | undefined;
  /** A shard that does not report ready within this long fails the start (default 60 s). */
  startTimeoutMs?: number | undefined;
  /** Shutdown gives up after this long and exits 1 (default 30 s). */
  shutdownTimeoutMs?: number | undefined;
  /** How long shard 0 waits for main to return after the shutdown signal (default 5 s). */
  mainGraceMs?: number | undefined;
  /** Which signals stop the app, which are ignored, and what a repeated one does. */
  signals?: SignalPolicy | undefined;
}

/** Exit code: the app ended normally. */
export const EXIT_OK = 0;
/** Exit code: a shard failed, main threw, a service failed to stop, or the start failed. */
export const EXIT_FAILURE = 1;
/** Exit code: a bad command line. */
export const EXIT_USAGE = 2;

interface Shard {
  id: number;
  worker: Worker;
  state: "starting" | "ready" | "running" | "gone";
  crash: ErrorInfo | undefined;
  onReady: ((err: ErrorInfo | undefined) => void) | undefined;
  /** Set while the app ends: called once the shard's log lines have left (or it is gone). */
  onFlushed: (() => void) | undefined;
  /** Set while the supervisor asks which shards still take messages: called on the shard's "pong". */
  onPong: (() => void) | undefined;
}

/** Prints one line (or block) to stderr, prefixed with the app's name. */
function say(name: string, text: string): void {
  // Counted by flushLog(), which the orderly exit waits for.
  writeStderr(`${name}: ${text}\n`);
}

/**
 * Runs the application as the supervisor; never returns (the process exits when the app ends).
 * Startup problems (no native library, too few CPUs, a shard that cannot start) print one
 * message and exit 1.
 */
export async function runSupervisor(opts: SupervisorOptions): Promise<never> {
  const sup = new Supervisor(opts);
  return sup.run();
}

class Supervisor {
  private readonly opts: SupervisorOptions;
  private readonly name: string;
  private readonly log = logger("smp");
  private shards: Shard[] = [];
  private stopping = false;
  private exitCode = EXIT_OK;
  private servicesStopped = new Set<number>();
  private coordinator = -1;
  private expectedStops = new Set<number>();
  private count = 0;

  constructor(opts: SupervisorOptions) {
    this.opts = opts;
    this.name = opts.name;
  }

  async run(): Promise<never> {
    becomeSupervisor();
    setLogPrefix("supervisor");
    if (this.opts.logLevel) setLogLevel(this.opts.logLevel);
    const plan = this.plan();
    const signals = this.opts.signals ?? {};
    const ignored = signals.ignore ?? [];
    // The default shutdown signals leave out those the app ignores: { ignore: ["SIGINT"] } alone
    // still shut the app down on SIGINT (both handlers ran).
    const shutdownSignals = signals.shutdown ?? (["SIGINT", "SIGTERM"] as const).filter((sig) => !ignored.includes(sig));
    for (const sig of shutdownSignals) process.on(sig, () => this.onSignal(sig));
    for (const sig of ignored) process.on(sig, () => this.log.debug(`${sig} received: ignored`));
    this.count = plan.count;
    let layout: SmpLayout;
    let sab: SharedArrayBuffer;
    try {
      layout = new SmpLayout(plan.count, this.opts.ringBytes ?? DEFAULT_RING_BYTES);
      // One ring per ordered pair of shards: the memory grows with the square of --smp.
      const limit = Math.min(2 ** 32, totalmem() / 4);
      if (layout.totalBytes > limit) {
        say(
          this.name,
          `--smp ${plan.count} needs ${(layout.totalBytes / 2 ** 30).toFixed(1)} GiB of shared memory for its ` +
            `${plan.count * (plan.count - 1)} rings of ${layout.ringBytes / 1024} KiB (at most ${(limit / 2 ** 30).toFixed(1)} GiB here); ` +
            "run fewer shards or give app() a smaller ringBytes",
        );
        return this.exit(EXIT_USAGE);
      }
      sab = createSmpMemory(layout);
    } catch (err) {
      say(this.name, `cannot set up the shards' rings: ${(err as Error).message}`);
      return this.exit(EXIT_USAGE);
    }
    this.log.debug(
      `starting ${plan.count} shard(s)` +
        (plan.cpus.length ? ` on CPUs ${formatCpuset(plan.cpus)}` : ` (overprovisioned, not pinned${plan.confine.length ? `, within CPUs ${formatCpuset(plan.confine)}` : ""})`),
    );
    for (let k = 0; k < plan.count; k++) {
      if (this.stopping) break;
      const err = await this.startShard(k, plan.cpus.length ? plan.cpus[k]! : -1, plan.confine, sab, layout.ringBytes);
      if (err !== undefined) this.failStart(k, err);
    }
    if (this.stopping) this.exit(this.exitCode);
    const signature = this.shardSignatures[0];
    for (let k = 1; k < plan.count; k++) {
      if (this.shardSignatures[k] !== signature) {
        this.failStart(k, {
          name: "RegistrationError",
          message:
            `shard ${k} registered different handlers or services than shard 0 ` +
            `(shard 0: ${signature}; shard ${k}: ${this.shardSignatures[k]}). ` +
            "Register them at the top level of the application module, unconditionally.",
        });
      }
    }
    for (const s of this.shards) {
      s.state = "running";
      this.send(s, { type: "go" });
    }
    return new Promise<never>(() => {});
  }

  private readonly shardSignatures: string[] = [];

  /** Decides the shard count and CPUs, or exits with a clear message. */
  private plan(): { count: number; cpus: number[]; confine: number[] } {
    let available: number[];
    try {
      native();
      available = threadCpuAffinity();
    } catch (err) {
      say(this.name, (err as Error).message);
      return this.exit(EXIT_FAILURE);
    }
    const overprovisioned = this.opts.overprovisioned === true;
    let cpus = available;
    if (this.opts.cpuset !== undefined) {
      const outside = this.opts.cpuset.filter((c) => !available.includes(c));
      if (outside.length > 0) {
        say(this.name, `--cpuset ${formatCpuset(this.opts.cpuset)}: CPU ${formatCpuset(outside)} is not available to this process (allowed: ${formatCpuset(available)})`);
        return this.exit(EXIT_USAGE);
      }
      cpus = this.opts.cpuset;
    }
    const count = this.opts.smp ?? cpus.length;
    if (!overprovisioned && count > cpus.length) {
      say(
        this.name,
        `--smp ${count} needs ${count} CPUs but only ${cpus.length} ${cpus.length === 1 ? "is" : "are"} available (${formatCpuset(cpus)}); ` +
          "pass --overprovisioned to run more shards than CPUs (unpinned)",
      );
      return this.exit(EXIT_USAGE);
    }
    // Overprovisioned shards are not pinned one to a CPU, but a --cpuset still confines them:
    // each may run on any CPU of the set (it was accepted and then had no effect).
    if (overprovisioned) return { count, cpus: [], confine: this.opts.cpuset ?? [] };
    return { count, cpus: cpus.slice(0, count), confine: [] };
  }

  private startShard(k: number, cpu: number, confine: number[], sab: SharedArrayBuffer, ringBytes: number): Promise<ErrorInfo | undefined> {
    const count = this.count;
    const worker = new Worker(new URL("./shard-entry.ts", import.meta.url).href);
    const s: Shard = { id: k, worker, state: "starting", crash: undefined, onReady: undefined, onFlushed: undefined, onPong: undefined };
    this.shards.push(s);
    worker.addEventListener("message", (e: MessageEvent<ToSupervisor>) => this.onMessage(s, e.data));
    worker.addEventListener("error", (e: Event) => {
      const message = (e as ErrorEvent).message || "the shard's Worker reported an error";
      s.crash ??= { name: "Error", message };
    });
    worker.addEventListener("close", (e: Event) => this.onExit(s, (e as CloseEvent & { code?: number }).code ?? 0));
    return new Promise<ErrorInfo | undefined>((resolve) => {
      const timeoutMs = this.opts.startTimeoutMs ?? 60_000;
      const timer = setTimeout(() => {
        s.onReady = undefined;
        resolve({ name: "Error", message: `did not report ready within ${timeoutMs} ms` });
      }, timeoutMs);
      s.onReady = (err) => {
        clearTimeout(timer);
        s.onReady = undefined;
        resolve(err);
      };
      this.send(s, {
        type: "init",
        init: { shard: k, count, sab, ringBytes, cpu, confine, encodeLocalCalls: this.opts.encodeLocalCalls === true },
        module: this.opts.module,
        name: this.name,
        logLevel: this.opts.logLevel ?? "info",
        loop: { ...this.opts.loop, overprovisioned: this.opts.overprovisioned === true },
        options: this.opts.options ?? {},
        mainGraceMs: this.opts.mainGraceMs ?? 5000,
      });
    });
  }

  private send(s: Shard, msg: ToShard): void {
    if (s.state === "gone") return;
    s.worker.postMessage(msg);
  }

  private failStart(k: number, err: ErrorInfo): never {
    // One message: what went wrong, and where (the first stack frame), without the rest of the stack.
    const where = err.stack?.split("\n").find((l) => l.trim().startsWith("at "));
    say(this.name, `shard ${k} failed to start: ${err.message}${where ? `\n    ${where.trim()}` : ""}`);
    for (const s of this.shards) s.worker.terminate();
    return this.exit(EXIT_FAILURE);
  }

  private onMessage(s: Shard, msg: ToSupervisor): void {
    switch (msg.type) {
      case "ready":
        this.shardSignatures[s.id] = msg.signature;
        s.state = "ready";
        s.onReady?.(undefined);
        break;
      case "start-failed":
        s.onReady?.(msg.error);
        break;
      case "crash":
        s.crash = msg.error;
        break;
      case "main-done":
        if (!this.stopping) this.log.debug(`main returned ${msg.code}`);
        this.shutdown(`main returned`, msg.code);
        break;
      case "main-failed":
        say(this.name, `main failed on shard 0: ${describeError(msg.error)}`);
        this.shutdown("main failed", EXIT_FAILURE);
        break;
      case "services-stopped":
        // Shard 0 stops every shard's instances: a failure names the shard it came from.
        // One line each: the shard logged the error with its stack already (sharded.ts).
        for (const e of msg.errors) say(this.name, `shard ${e.shard ?? msg.shard}: a service failed to stop: ${e.name}: ${e.message} (its stack is in the log above)`);
        if (msg.errors.length > 0) this.exitCode = Math.max(this.exitCode, EXIT_FAILURE);
        this.servicesStopped.add(msg.shard);
        this.checkStopped();
        break;
      case "flushed":
        s.onFlushed?.();
        break;
      case "pong":
        s.onPong?.();
        break;
      case "port": {
        const to = this.shards[msg.to];
        if (to !== undefined && to.state !== "gone") {
          to.worker.postMessage({ type: "port", from: s.id, tag: msg.tag, port: msg.port } satisfies ToShard, [msg.port]);
        }
        break;
      }
    }
  }

  private onExit(s: Shard, code: number): void {
    if (s.state === "gone") return;
    const wasStarting = s.state === "starting";
    s.state = "gone";
    s.onFlushed?.();
    s.onPong?.(); // gone, not blocked
    const cause = s.crash
      ? describeError(s.crash)
      : `its Worker exited unexpectedly with code ${code}`;
    if (wasStarting && s.onReady) {
      s.onReady(s.crash ?? { name: "Error", message: `its Worker exited with code ${code} before it was ready` });
      return;
    }
    say(this.name, `shard ${s.id} failed: ${cause}`);
    this.exitCode = EXIT_FAILURE;
    const short = s.crash ? `${s.crash.name}: ${s.crash.message}` : `exit code ${code}`;
    for (const other of this.shards) this.send(other, { type: "gone", shard: s.id, cause: short });
    if (!this.stopping) {
      this.shutdown(`shard ${s.id} failed`, EXIT_FAILURE);
    } else {
      this.expectedStops.delete(s.id);
      if (s.id === this.coordinator) this.stopLocally();
      this.checkStopped();
    }
  }

  private onSignal(signal: NodeJS.Signals): void {
    this.signals++;
    const policy = this.opts.signals ?? {};
    const now = performance.now();
    // The same signal again within REPEAT_WINDOW_MS is one delivery sent twice, not a person
    // asking twice: GNU timeout signals the child and then its process group, and a shell's
    // job control may do the same.
    const echo = signal === this.firstSignal && now - this.firstSignalAt < REPEAT_WINDOW_MS;
    if (this.signals === 1) {
      this.firstSignal = signal;
      this.firstSignalAt = now;
    }
    if (this.stopping) {
      if (this.signals === 1 || policy.repeat === "ignore" || echo) {
        // The first signal, while a shutdown that main started runs, or a repeat the app lets
        // the (bounded) shutdown outlast: it is already happening. A repeat the app expects is
        // no news.
        const line = `${signal} received: already shutting down`;
        if (this.signals > 1) this.log.debug(line);
        else this.log.info(line);
        return;
      }
      say(this.name, `${signal} again: exiting without waiting for services to stop`);
      this.exit(EXIT_FAILURE);
    }
    let code = EXIT_OK;
    if (policy.onShutdown !== undefined) {
      // The app's hook runs in a signal handler on the main thread: a throw there killed the
      // supervisor (exit 1) without stopping a single service. Reported; the shutdown goes on.
      try {
        policy.onShutdown(signal);
      } catch (err) {
        say(this.name, `signals.onShutdown threw on ${signal}: ${describeError(errorInfo(err))}`);
        code = EXIT_FAILURE;
      }
    } else this.log.info(`${signal} received: shutting down`);
    this.shutdown(signal, code);
  }

  private signals = 0;
  private firstSignal: NodeJS.Signals | undefined;
  private firstSignalAt = -Infinity;

  /** Begins the orderly shutdown once; later calls only raise the exit code. */
  private shutdown(reason: string, code: number): void {
    this.exitCode = Math.max(this.exitCode, code);
    if (this.stopping) return;
    this.stopping = true;
    const live = this.shards.filter((s) => s.state !== "gone");
    if (live.length === 0 || this.shards.some((s) => s.state === "starting" || s.state === "ready")) {
      // main has not started yet: no service can be running, so there is nothing to stop.
      for (const s of this.shards) s.worker.terminate();
      this.exit(this.exitCode);
    }
    for (const s of live) this.send(s, { type: "stopping", reason });
    const timeoutMs = this.opts.shutdownTimeoutMs ?? 30_000;
    setTimeout(() => {
      // Every service stopped, but stderr's reader has not taken the last lines: they cannot
      // get out, and the shutdown itself succeeded.
      if (this.finishing) {
        const silent = this.shards.filter((s) => s.onFlushed !== undefined).map((s) => s.id);
        say(this.name, `log output${silent.length ? ` of shard ${silent.join(", ")}` : ""} did not drain within ${timeoutMs} ms; exiting`);
        this.exit(this.exitCode);
      }
      this.giveUp(timeoutMs);
    }, timeoutMs).unref();
    const zero = this.shards[0];
    if (zero !== undefined && zero.state !== "gone") {
      this.coordinator = 0;
      this.expectedStops = new Set([0]);
      this.send(zero, { type: "stop-services" });
    } else {
      this.stopLocally();
    }
  }

  /**
   * The shutdown ran out of time: names the shards whose threads no longer take messages (a busy
   * loop, a blocking call), which held it up, rather than only the coordinator waiting for them
   * (shard 0), then exits 1. Asks each live shard for a "pong", for at most PROBE_MS.
   */
  private giveUp(timeoutMs: number): void {
    const waiting = [...this.expectedStops].filter((k) => !this.servicesStopped.has(k));
    const silent = new Set<number>();
    let done = false;
    const report = () => {
      if (done) return;
      done = true;
      const stuck = [...silent].sort((a, b) => a - b);
      say(
        this.name,
        `shutdown did not finish within ${timeoutMs} ms (still stopping services on shard ${waiting.join(", ")})` +
          (stuck.length > 0
            ? `; shard ${stuck.join(", ")} does not answer: ${stuck.length === 1 ? "its thread is" : "their threads are"} blocked (a busy loop or a blocking call?)`
            : "") +
          "; exiting",
      );
      this.exit(EXIT_FAILURE);
    };
    for (const s of this.shards) {
      if (s.state === "gone") continue;
      silent.add(s.id);
      s.onPong = () => {
        s.onPong = undefined;
        silent.delete(s.id);
        if (silent.size === 0) report();
      };
      this.send(s, { type: "ping" });
    }
    if (silent.size === 0) report();
    else setTimeout(report, PROBE_MS);
  }

  /** Shard 0 is gone: every other shard stops its own instances. */
  private stopLocally(): void {
    this.coordinator = -1;
    this.expectedStops = new Set();
    for (const s of this.shards) {
      if (s.state === "gone") continue;
      this.expectedStops.add(s.id);
      this.send(s, { type: "stop-local" });
    }
    this.checkStopped();
  }

  private checkStopped(): void {
    if (!this.stopping) return;
    for (const k of this.expectedStops) if (!this.servicesStopped.has(k) && this.shards[k]?.state !== "gone") return;
    this.finish();
  }

  private finishing = false;

  /**
   * The orderly end: waits until every shard's log lines and the supervisor's have left the
   * process, then exits (bounded by the shutdown timeout). Exiting at once dropped what a
   * lagging stderr reader had not taken yet: Bun queues it in each thread's memory.
   */
  private finish(): void {
    if (this.finishing) return;
    this.finishing = true;
    const live = this.shards.filter((s) => s.state !== "gone");
    let left = live.length;
    const shardFlushed = () => {
      if (--left === 0) void flushLog().then(() => this.exit(this.exitCode));
    };
    for (const s of live) {
      s.onFlushed = () => {
        s.onFlushed = undefined;
        shardFlushed();
      };
      this.send(s, { type: "flush" });
    }
    if (live.length === 0) void flushLog().then(() => this.exit(this.exitCode));
  }

  private exit(code: number): never {
    process.exit(code);
  }
}

