/**
 * Loggers with levels and a per-shard prefix, one line per record:
 *
 *   2025-01-31 12:00:00,123 INFO  [shard 2] http - listening on :8080
 *
 * Every shard (and the supervisor) has its own loggers; the prefix says which thread wrote
 * the line. Levels are set for all loggers and overridden per logger name, e.g.
 * `--log-level info,smp=debug`. A record below its logger's level costs one comparison.
 * Lines go to stderr with one write each (so lines from different shards never interleave
 * mid-line); tests may redirect them with setLogSink.
 */
import { formatWithOptions, inspect } from "node:util";
import { InvalidArgumentError } from "../core/errors.ts";

/** Log levels, most severe first. */
export const LOG_LEVELS = ["error", "warn", "info", "debug", "trace"] as const;
/** One of LOG_LEVELS. */
export type LogLevel = (typeof LOG_LEVELS)[number];

const LABELS = ["ERROR", "WARN ", "INFO ", "DEBUG", "TRACE"] as const;

/** Where formatted lines go: `line` ends with a newline. */
export type LogSink = (line: string, level: LogLevel) => void;

let stderrGuarded = false;
function guardStderr(): void {
  if (!stderrGuarded) {
    // Nobody reads stderr any more (a closed pipe: EPIPE): log lines are lost, the server goes on.
    stderrGuarded = true;
    process.stderr.on("error", () => {});
  }
}
/**
 * Lines handed to process.stderr whose write has not completed. To a pipe whose reader lags,
 * Bun queues what the pipe cannot take at once in the thread's memory, and the process's exit
 * drops that queue: the last lines before an exit, often the ones that say why, were lost.
 * flushLog() waits for them.
 */
let unwritten = 0;
const flushed: (() => void)[] = [];
function lineWritten(): void {
  if (--unwritten === 0) for (const resolve of flushed.splice(0)) resolve();
}

/** @internal Writes `text` to stderr, counted by flushLog(); never throws. */
export function writeStderr(text: string): void {
  guardStderr();
  unwritten++;
  try {
    // The callback runs once the text is written (or failed: EPIPE), after any queue before it.
    process.stderr.write(text, lineWritten);
  } catch {
    // Same: a log line must never take the process down.
    lineWritten();
  }
}

/**
 * @internal Resolves once every line this thread wrote to stderr has left the process (the
 * supervisor waits for every shard's before it exits). A reader that never drains keeps it
 * pending: callers bound the wait.
 */
export function flushLog(): Promise<void> {
  return unwritten === 0 ? Promise.resolve() : new Promise((resolve) => flushed.push(resolve));
}

const defaultSink: LogSink = (line) => writeStderr(line);

const state = {
  level: 2,
  overrides: new Map<string, number>(),
  /** Bumped whenever levels change; loggers re-read their level when it moved. */
  generation: 0,
  prefix: "",
  sink: defaultSink,
  timestamps: true,
};

function levelIndex(name: string, spec: string): number {
  const i = (LOG_LEVELS as readonly string[]).indexOf(name);
  if (i < 0) {
    throw new InvalidArgumentError(
      `bad log level "${name}" in "${spec}": expected one of ${LOG_LEVELS.join(", ")}, or name=level pairs like "info,smp=debug"`,
    );
  }
  return i;
}

/** A parsed level specification: the default level and per-logger overrides. */
export interface LogLevelSpec {
  level: LogLevel;
  overrides: Record<string, LogLevel>;
}

/**
 * Parses "info" or "warn,http=debug,smp=trace" (a default, then name=level pairs, or only
 * pairs). Throws InvalidArgumentError naming the bad part.
 */
export function parseLogLevel(spec: string): LogLevelSpec {
  if (typeof spec !== "string" || spec.trim() === "") throw new InvalidArgumentError("log level must be a non-empty string");
  const out: LogLevelSpec = { level: "info", overrides: {} };
  for (const raw of spec.split(",")) {
    const part = raw.trim();
    if (part === "") continue;
    const eq = part.indexOf("=");
    if (eq < 0) {
      out.level = LOG_LEVELS[levelIndex(part, spec)]!;
    } else {
      const name = part.slice(0, eq).trim();
      if (name === "") throw new InvalidArgumentError(`bad log level "${part}" in "${spec}": a logger name is missing before "="`);
      // Defined, not assigned: assigning "__proto__" set nothing, and that override was lost.
      Object.defineProperty(out.overrides, name, { value: LOG_LEVELS[levelIndex(part.slice(eq + 1).trim(), spec)]!, enumerable: true, writable: true, configurable: true });
    }
  }
  return out;
}

/**
 * Sets levels from a specification (see parseLogLevel) for this thread's loggers. Throws
 * InvalidArgumentError, and then changes nothing.
 */
export function setLogLevel(spec: string | LogLevelSpec): void {
  const parsed = typeof spec === "string" ? parseLogLevel(spec) : spec;
  if (parsed === null || typeof parsed !== "object" || parsed.overrides === null || typeof parsed.overrides !== "object") {
    throw new InvalidArgumentError("setLogLevel: expected a string or { level, overrides }");
  }
  // Everything is checked before anything changes: a bad override left the default level set
  // and the other overrides gone.
  const level = levelIndex(parsed.level, String(parsed.level));
  const overrides = new Map<string, number>();
  for (const [name, l] of Object.entries(parsed.overrides)) overrides.set(name, levelIndex(l, String(l)));
  state.level = level;
  state.overrides = overrides;
  state.generation++;
}

/** The current default level of this thread's loggers. */
export function logLevel(): LogLevel {
  return LOG_LEVELS[state.level]!;
}

/** Redirects this thread's log lines (tests, custom transports); undefined restores stderr. */
export function setLogSink(sink: LogSink | undefined): void {
  if (sink !== undefined && typeof sink !== "function") throw new InvalidArgumentError("setLogSink: sink must be a function");
  state.sink = sink ?? defaultSink;
}

/** @internal Sets the thread label printed in brackets ("shard 2", "supervisor"). */
export function setLogPrefix(label: string): void {
  state.prefix = label ? `[${label}] ` : "";
}

/** Turns the leading timestamp on or off (default on). */
export function setLogTimestamps(on: boolean): void {
  state.timestamps = on;
}

function pad(n: number, width: number): string {
  return String(n).padStart(width, "0");
}

/**
 * Pays up front what a thread's first log line costs: in a Bun Worker the first process.stderr
 * access takes ~14 ms and the first local-time Date ~8 ms (the time zone loads). A shard calls
 * this before its loop runs, so that its first line, written from a task, is not reported as a
 * stall of the reactor.
 */
export function warmLogging(): void {
  guardStderr();
  timestamp();
}

function timestamp(): string {
  const d = new Date();
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1, 2)}-${pad(d.getDate(), 2)} ` +
    `${pad(d.getHours(), 2)}:${pad(d.getMinutes(), 2)}:${pad(d.getSeconds(), 2)},${pad(d.getMilliseconds(), 3)} `
  );
}

const FORMAT = { colors: false, depth: 4 };
/** Line breaks in a record's text: each continues the record on an indented line. */
const LINE_BREAK = /\r\n|\r|\n/g;

/**
 * The record's text. Formatting runs the values' own code (toString, toJSON, getters; %j throws
 * on a BigInt): a value that throws is shown inspected, or as a placeholder, and the failure
 * noted, so that logging never throws at its caller (often an error path).
 */
function format(args: unknown[]): string {
  try {
    return formatWithOptions(FORMAT, ...args);
  } catch (err) {
    const parts = args.map((a) => {
      if (typeof a === "string") return a;
      try {
        return inspect(a, FORMAT);
      } catch {
        return "<unprintable value>";
      }
    });
    let why = "";
    try {
      why = err instanceof Error ? err.message : String(err);
    } catch {
      // an error whose message throws too
    }
    return `${parts.join(" ")} (log formatting failed: ${why})`;
  }
}

/**
 * A named logger. Messages are util.format strings (`%s`, `%d`, `%o`, `%j`) or any values.
 * A disabled level costs one comparison; an enabled one formats and writes one line.
 */
export class Logger {
  /** The name printed on each line and used by per-logger level overrides. */
  readonly name: string;
  private generation = -1;
  private level = 2;
  private own: number | undefined;

  constructor(name: string) {
    if (typeof name !== "string" || name.length === 0) throw new InvalidArgumentError("Logger: name must be a non-empty string");
    this.name = name;
  }

  private current(): number {
    if (this.generation !== state.generation) {
      this.generation = state.generation;
      this.level = this.own ?? state.overrides.get(this.name) ?? state.level;
    }
    return this.level;
  }

  /** Sets this logger's own level (undefined: follow the thread's levels again). */
  setLevel(level: LogLevel | undefined): void {
    this.own = level === undefined ? undefined : levelIndex(level, level);
    this.generation = -1;
  }

  /** True if records at `level` are written. */
  isEnabled(level: LogLevel): boolean {
    return levelIndex(level, level) <= this.current();
  }

  /** Writes one record at `level`, if enabled. */
  log(level: LogLevel, ...args: unknown[]): void {
    const i = levelIndex(level, level);
    if (i <= this.current()) this.write(i, args);
  }

  /** Something failed and someone should look. */
  error(...args: unknown[]): void {
    if (this.current() >= 0) this.write(0, args);
  }

  /** Something unexpected that Shoal worked around. */
  warn(...args: unknown[]): void {
    if (this.current() >= 1) this.write(1, args);
  }

  /** What an operator wants to see (start, stop, listening addresses). */
  info(...args: unknown[]): void {
    if (this.current() >= 2) this.write(2, args);
  }

  /** Details for whoever debugs this component. */
  debug(...args: unknown[]): void {
    if (this.current() >= 3) this.write(3, args);
  }

  /** Per-operation detail. */
  trace(...args: unknown[]): void {
    if (this.current() >= 4) this.write(4, args);
  }

  private write(level: number, args: unknown[]): void {
    const text = format(args);
    // One line per call: a line break inside the message cannot forge a line of its own. A lone
    // CR counts as one: line readers (Node's readline, Python's splitlines) split on it, and a
    // terminal returns to the line's start, so "x\rERROR ..." printed over the real record.
    const line = `${state.timestamps ? timestamp() : ""}${LABELS[level]} ${state.prefix}${this.name} - ${text.replace(LINE_BREAK, "\n    ")}\n`;
    try {
      state.sink(line, LOG_LEVELS[level]!);
    } catch {
      // A custom sink that throws loses its line; the caller (a server's error path) goes on.
    }
  }
}

const loggers = new Map<string, Logger>();

/** The logger named `name` on this thread (created once, then shared). */
export function logger(name: string): Logger {
  let l = loggers.get(name);
  if (l === undefined) {
    l = new Logger(name);
    loggers.set(name, l);
  }
  return l;
}
