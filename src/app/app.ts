/**
 * The app template (Seastar's app_template). The application module registers its handlers and
 * services at top level and ends with:
 *
 *   app({ name: "counter", description: "...", options: { port: { type: "integer", default: 8080, description: "..." } } },
 *     async ({ options, signal, log }) => { ... });
 *
 * Run as `bun main.ts --smp 4 --port 9000`: on the main thread app() parses the command line
 * (--help, unknown options rejected) and becomes the supervisor, which starts one Worker per
 * shard; every shard imports the same module (so the same registrations run everywhere), and
 * main runs on shard 0 only. Its return value is the exit code (nothing: 0; an integer 0..255;
 * anything else is reported and exits 1); the shutdown signal
 * fires on SIGINT/SIGTERM (config.signals chooses others), after which main should return, and every running service is stopped.
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { isMainThread } from "node:worker_threads";
import { InvalidArgumentError } from "../core/errors.ts";
import { MAX_RING_BYTES, MIN_RING_BYTES } from "../smp/ring.ts";
import { logger, setLogLevel, setLogPrefix, type Logger } from "../log/logger.ts";
import { registerShardMain, shardLaunch } from "../smp/control.ts";
import { role, shutdownSignal } from "../smp/runtime.ts";
import { EXIT_USAGE, checkSignalPolicy, runSupervisor, type SignalPolicy } from "../smp/supervisor.ts";
import { OptionError, checkSpecs, formatHelp, parseCommandLine, type OptionSpecs, type OptionValues, type SharedOptions } from "./options.ts";

/** Describes an app. */
export interface AppConfig<S extends OptionSpecs> {
  /** Short name: --help's usage line, error messages, main's logger. */
  name: string;
  /** One paragraph for --help. */
  description?: string | undefined;
  /** The app's own command-line options. */
  options?: S | undefined;
  /** The module every shard imports (default: the script Bun was started with, Bun.main): a URL, or a path (a relative one from the working directory). */
  module?: string | URL | undefined;
  /** Bytes of data per cross-shard ring (power of two, default 256 KiB). */
  ringBytes?: number | undefined;
  // The three timeouts below: ms in (0, 2^31-1].
  /** A shard that does not report ready within this long fails the start (default 60 s). */
  startTimeoutMs?: number | undefined;
  /**
   * Shutdown gives up after this long and exits 1 (default 30 s). An orderly end also waits,
   * within it, for the log lines every thread wrote to stderr to leave the process (a lagging
   * reader of a stderr pipe, as a pager or a log collector, lost the last ones).
   */
  shutdownTimeoutMs?: number | undefined;
  /** After the shutdown signal, how long to wait for main to return before stopping services (default 5 s). */
  mainGraceMs?: number | undefined;
  /** Which signals stop the app (default SIGINT, SIGTERM), which are ignored, whether a repeat exits at once. */
  signals?: SignalPolicy | undefined;
}

/** What main receives. */
export interface AppContext<S extends OptionSpecs> {
  /** The parsed command line: the app's options and Shoal's (smp, cpuset, logLevel, ...). */
  options: OptionValues<S> & SharedOptions;
  /** Aborts when shutdown begins (SIGINT, SIGTERM, a shard failed): stop accepting work and return. */
  signal: AbortSignal;
  /** A logger named after the app. */
  log: Logger;
}

let called = false;

/**
 * The module every shard imports, as a URL: Bun.main by default; a path (relative ones from the
 * working directory, as the command line would take them) or a URL given in the config.
 */
function moduleUrl(module: string | URL | undefined): string {
  if (module === undefined) return pathToFileURL(Bun.main).href;
  if (module instanceof URL) return module.href;
  if (typeof module !== "string" || module === "") throw new InvalidArgumentError("app: config.module must be a path or a URL");
  if (/^[a-z][a-z0-9+.-]*:/i.test(module)) return module;
  return pathToFileURL(resolve(module)).href;
}

/** The longest delay a timer honours (2^31-1 ms, about 24.8 days). */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** The numeric fields of the config, checked before anything starts (not as a later rejection). */
function checkConfigNumbers(config: AppConfig<OptionSpecs>): void {
  const rb = config.ringBytes;
  if (rb !== undefined && (!Number.isInteger(rb) || rb < MIN_RING_BYTES || rb > MAX_RING_BYTES || (rb & (rb - 1)) !== 0)) {
    throw new InvalidArgumentError(`app: config.ringBytes must be a power of two in ${MIN_RING_BYTES}..${MAX_RING_BYTES}, got ${String(rb)}`);
  }
  for (const key of ["startTimeoutMs", "shutdownTimeoutMs", "mainGraceMs"] as const) {
    const v = config[key];
    // Timers longer than 2^31-1 ms fire at once (setTimeout clamps them to 1 ms).
    if (v !== undefined && (typeof v !== "number" || !Number.isFinite(v) || v <= 0 || v > MAX_TIMEOUT_MS)) {
      throw new InvalidArgumentError(`app: config.${key} must be a number of ms in (0, ${MAX_TIMEOUT_MS}], got ${String(v)}`);
    }
  }
}

/**
 * Runs the application: the supervisor on the main thread, a shard inside a shard Worker (main
 * on shard 0). On the main thread the returned promise never settles: the process exits when
 * the app ends (main's number, else 0; 1 after a failure; 2 for a bad command line). Inside a
 * shard it resolves at once, so the module finishes loading.
 * Throws InvalidArgumentError for a bad config or a second call.
 */
export function app<const S extends OptionSpecs = Record<never, never>>(
  config: AppConfig<S>,
  main: (ctx: AppContext<S>) => unknown,
): Promise<void> {
  if (config === null || typeof config !== "object" || typeof config.name !== "string" || config.name === "") {
    throw new InvalidArgumentError("app: config.name must be a non-empty string");
  }
  if (typeof main !== "function") throw new InvalidArgumentError("app: main must be a function");
  checkConfigNumbers(config);
  checkSignalPolicy(config.signals);
  const module = moduleUrl(config.module);
  const specs = (config.options ?? {}) as S;
  // Before `called` is set, like every other config check: a bad spec is a bad config, not a
  // command line to refuse, and it must not make the corrected call "a second call".
  try {
    checkSpecs(specs);
  } catch (err) {
    if (!(err instanceof OptionError)) throw err;
    throw new InvalidArgumentError(`app: config.options: ${err.message}`);
  }
  if (called) throw new InvalidArgumentError("app() was called twice; an application module calls it once");
  called = true;
  const launch = shardLaunch();
  if (role() === "shard" && launch !== undefined) {
    registerShardMain(async () => {
      const ctx: AppContext<S> = {
        options: launch.options as OptionValues<S> & SharedOptions,
        signal: shutdownSignal(),
        log: logger(config.name),
      };
      return main(ctx);
    });
    return Promise.resolve();
  }
  if (!isMainThread) {
    throw new InvalidArgumentError("app() runs on the main thread (as the supervisor) or in a shard it started, not in another Worker");
  }
  return supervise(config, specs, module);
}

async function supervise<S extends OptionSpecs>(config: AppConfig<S>, specs: S, module: string): Promise<never> {
  setLogPrefix("supervisor");
  let parsed;
  try {
    parsed = parseCommandLine(process.argv.slice(2), specs);
  } catch (err) {
    if (!(err instanceof OptionError)) throw err;
    process.stderr.write(`${config.name}: ${err.message}\nRun \`${config.name} --help\` to list the options.\n`);
    process.exit(EXIT_USAGE);
  }
  if (parsed.help) {
    process.stdout.write(formatHelp(config.name, config.description, specs));
    process.exit(0);
  }
  const shared = parsed.shared;
  setLogLevel(shared.logLevel);
  return runSupervisor({
    name: config.name,
    module,
    smp: shared.smp,
    cpuset: shared.cpuset,
    overprovisioned: shared.overprovisioned,
    loop: {
      taskQuotaMs: shared.taskQuotaMs,
      idlePollTimeUs: shared.idlePollTimeUs,
      blockedReactorNotifyMs: shared.blockedReactorNotifyMs,
    },
    logLevel: shared.logLevel,
    encodeLocalCalls: shared.encodeLocalCalls,
    options: { ...parsed.app, ...shared },
    ringBytes: config.ringBytes,
    startTimeoutMs: config.startTimeoutMs,
    shutdownTimeoutMs: config.shutdownTimeoutMs,
    mainGraceMs: config.mainGraceMs,
    signals: config.signals,
  });
}
