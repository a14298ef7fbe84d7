/**
 * Command-line options of an app: Shoal's own (--smp, --cpuset, ...) plus the application's,
 * declared as a spec. `--name value` and `--name=value`; booleans as `--flag`, `--no-flag` or
 * `--flag=true|false`; camelCase keys are written kebab-case (`maxConnections` is
 * `--max-connections`). Unknown options and bad values fail with an OptionError that says
 * which option and why (and suggests the nearest name for a typo).
 */
import { describeValue } from "../core/describe.ts";
import { listShoalErrorClass, ShoalError } from "../core/errors.ts";
import { parseLogLevel } from "../log/logger.ts";
import { parseCpuset } from "../smp/affinity.ts";

/** A bad command line: an unknown option, a missing or malformed value. */
export class OptionError extends ShoalError {
  constructor(message: string) {
    super("ERR_BAD_OPTION", message);
  }
}
listShoalErrorClass(OptionError);

/** The kinds of option values. */
export type OptionType = "string" | "number" | "integer" | "boolean";

/** The value type of an option kind. */
export type OptionValue<T extends OptionType> = T extends "boolean" ? boolean : T extends "string" ? string : number;

/** One application option. */
export interface OptionSpec<T extends OptionType = OptionType> {
  type: T;
  /** One line for --help. */
  description: string;
  /** Value when the option is absent (booleans default to false). */
  default?: OptionValue<T> | undefined;
  /** The option must be given. */
  required?: boolean | undefined;
  /** Accepted values (strings). */
  choices?: readonly string[] | undefined;
  /** Bounds (numbers). */
  min?: number | undefined;
  max?: number | undefined;
  /** How --help names the value, e.g. "PORT". */
  valueName?: string | undefined;
  /**
   * Checks a given value (after its type and bounds) on the main thread, before any shard starts:
   * throwing refuses the command line with `--flag: <the error's message>` (e.g. an address that
   * would only fail later, when a shard listens on it). Not called for defaults.
   */
  check?(value: OptionValue<T>): void;
}

/** An application's options: camelCase keys to specs. */
export type OptionSpecs = Record<string, OptionSpec>;

/** The parsed values of `S`: present when defaulted, required or boolean; possibly undefined otherwise. */
export type OptionValues<S extends OptionSpecs> = {
  -readonly [K in keyof S]: S[K] extends { type: "boolean" }
    ? boolean
    : S[K] extends { default: unknown } | { required: true }
      ? OptionValue<S[K]["type"]>
      : OptionValue<S[K]["type"]> | undefined;
};

/** Shoal's own options, shared by every app. */
export interface SharedOptions {
  /** --smp: shards to run (undefined: one per available CPU). */
  smp: number | undefined;
  /** --cpuset: CPUs to run on (undefined: the process's CPU set). */
  cpuset: number[] | undefined;
  /** --overprovisioned: do not pin, never busy-poll, allow more shards than CPUs. */
  overprovisioned: boolean;
  /** --task-quota-ms (default 0.5). */
  taskQuotaMs: number;
  /** --idle-poll-time-us (default 200). */
  idlePollTimeUs: number;
  /** --blocked-reactor-notify-ms (default 25). */
  blockedReactorNotifyMs: number;
  /** --log-level (default "info"). */
  logLevel: string;
  /** --encode-local-calls: route local cross-shard calls through the encoder (debug). */
  encodeLocalCalls: boolean;
}

interface SharedSpec {
  key: keyof SharedOptions;
  flag: string;
  type: OptionType;
  valueName: string;
  description: string;
  min?: number | undefined;
  max?: number | undefined;
  parse?: ((text: string, flag: string) => unknown) | undefined;
}

const sharedSpecs: SharedSpec[] = [
  { key: "smp", flag: "smp", type: "integer", valueName: "N", min: 1, max: 4096, description: "shards to run, one per CPU (default: every CPU this process may use)" },
  {
    key: "cpuset",
    flag: "cpuset",
    type: "string",
    valueName: "LIST",
    description: 'CPUs to run shards on, e.g. "0-3,6" (default: the process\'s CPU set)',
    parse: (text, flag) => {
      try {
        return parseCpuset(text);
      } catch (err) {
        throw new OptionError(`--${flag}: ${(err as Error).message}`);
      }
    },
  },
  { key: "overprovisioned", flag: "overprovisioned", type: "boolean", valueName: "", description: "shared CPUs: do not pin shards (with --cpuset they float within it), never busy-poll, allow more shards than CPUs" },
  { key: "taskQuotaMs", flag: "task-quota-ms", type: "number", valueName: "MS", min: 0.001, max: 10_000, description: "how long tasks run before I/O is polled again (default 0.5)" },
  { key: "idlePollTimeUs", flag: "idle-poll-time-us", type: "number", valueName: "US", min: 0, max: 10_000_000, description: "busy-poll this long before sleeping in the kernel (default 200)" },
  { key: "blockedReactorNotifyMs", flag: "blocked-reactor-notify-ms", type: "number", valueName: "MS", min: 0.001, max: 3_600_000, description: "report a task that runs longer than this (default 25)" },
  {
    key: "logLevel",
    flag: "log-level",
    type: "string",
    valueName: "LEVEL",
    description: 'error, warn, info, debug or trace; per logger: "info,smp=debug" (default info)',
    parse: (text, flag) => {
      try {
        parseLogLevel(text);
      } catch (err) {
        throw new OptionError(`--${flag}: ${(err as Error).message}`);
      }
      return text;
    },
  },
  { key: "encodeLocalCalls", flag: "encode-local-calls", type: "boolean", valueName: "", description: "debug: encode calls to the local shard too, so arguments that cannot cross fail at --smp 1" },
];

/** Shoal's option names, which an app's own options may not reuse. */
export const SHARED_OPTION_FLAGS: readonly string[] = ["help", ...sharedSpecs.map((s) => s.flag)];

/** Defaults of the shared options. */
export function defaultSharedOptions(): SharedOptions {
  return {
    smp: undefined,
    cpuset: undefined,
    overprovisioned: false,
    taskQuotaMs: 0.5,
    idlePollTimeUs: 200,
    blockedReactorNotifyMs: 25,
    logLevel: "info",
    encodeLocalCalls: false,
  };
}

/** camelCase key to kebab-case flag. */
export function flagOf(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** Throws OptionError unless `specs` is a valid application option spec. */
export function checkSpecs(specs: OptionSpecs): void {
  if (specs === null || typeof specs !== "object") throw new OptionError("options must be an object of option specs");
  for (const [key, spec] of Object.entries(specs)) {
    if (!/^[a-z][a-zA-Z0-9]*$/.test(key)) throw new OptionError(`option "${key}": names must be camelCase letters and digits`);
    if (SHARED_OPTION_FLAGS.includes(flagOf(key))) throw new OptionError(`option "${key}": --${flagOf(key)} is one of Shoal's own options`);
    if (spec === null || typeof spec !== "object") throw new OptionError(`option "${key}": expected { type, description }`);
    if (!["string", "number", "integer", "boolean"].includes(spec.type)) {
      throw new OptionError(`option "${key}": type must be "string", "number", "integer" or "boolean", got ${String(spec.type)}`);
    }
    if (typeof spec.description !== "string") throw new OptionError(`option "${key}": description must be a string`);
    if (spec.check !== undefined && typeof spec.check !== "function") throw new OptionError(`option "${key}": check must be a function`);
    checkSpecValues(key, spec);
  }
}

/**
 * A spec's bounds, choices and default agree with its type: the types let a default of any kind
 * through (an integer option's "8080" reached main as a string), and a default outside its own
 * bounds or choices would be a value the command line refuses.
 */
function checkSpecValues(key: string, spec: OptionSpec): void {
  const fail = (why: string) => new OptionError(`option "${key}": ${why}`);
  const numeric = spec.type === "number" || spec.type === "integer";
  if (spec.required !== undefined && typeof spec.required !== "boolean") throw fail("required must be true or false");
  if (spec.valueName !== undefined && typeof spec.valueName !== "string") throw fail("valueName must be a string");
  for (const bound of ["min", "max"] as const) {
    const b = spec[bound];
    if (b === undefined) continue;
    if (!numeric) throw fail("min and max apply to numbers");
    if (typeof b !== "number" || !Number.isFinite(b)) throw fail(`${bound} must be a finite number, got ${describeValue(b)}`);
  }
  if (spec.min !== undefined && spec.max !== undefined && spec.min > spec.max) throw fail(`min ${spec.min} is above max ${spec.max}`);
  if (spec.choices !== undefined) {
    if (spec.type !== "string") throw fail("choices apply to strings");
    if (!Array.isArray(spec.choices) || spec.choices.length === 0 || spec.choices.some((c) => typeof c !== "string")) {
      throw fail("choices must be a non-empty array of strings");
    }
  }
  const d: unknown = spec.default;
  if (d === undefined) return;
  switch (spec.type) {
    case "boolean":
      if (typeof d !== "boolean") throw fail(`default must be true or false, got ${describeValue(d)}`);
      return;
    case "string":
      if (typeof d !== "string") throw fail(`default must be a string, got ${describeValue(d)}`);
      if (spec.choices !== undefined && !spec.choices.includes(d)) throw fail(`default "${d}" is not one of its choices (${spec.choices.join(", ")})`);
      return;
    default:
      if (spec.type === "integer" && (typeof d !== "number" || !Number.isSafeInteger(d))) throw fail(`default must be an integer, got ${describeValue(d)}`);
      if (typeof d !== "number" || !Number.isFinite(d)) throw fail(`default must be a finite number, got ${describeValue(d)}`);
      if (spec.min !== undefined && d < spec.min) throw fail(`default ${d} is below its min ${spec.min}`);
      if (spec.max !== undefined && d > spec.max) throw fail(`default ${d} is above its max ${spec.max}`);
  }
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

/** A plain decimal number: sign, digits with an optional point, optional exponent. */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** `text` (DECIMAL) writes an integer: no digit but 0 after the point once the exponent moves it. */
function writesInteger(text: string): boolean {
  const m = /^[+-]?(\d*)\.?(\d*)(?:[eE]([+-]?\d+))?$/.exec(text)!;
  const digits = m[1]! + m[2]!;
  const point = m[1]!.length + Number(m[3] ?? 0);
  for (let i = Math.max(point, 0); i < digits.length; i++) if (digits[i] !== "0") return false;
  return true;
}

function convert(flag: string, type: OptionType, text: string, bounds: { min?: number | undefined; max?: number | undefined; choices?: readonly string[] | undefined }): unknown {
  switch (type) {
    case "boolean":
      if (text === "true" || text === "1" || text === "yes") return true;
      if (text === "false" || text === "0" || text === "no") return false;
      throw new OptionError(`--${flag} takes true or false, got "${text}"`);
    case "string":
      if (bounds.choices && !bounds.choices.includes(text)) {
        throw new OptionError(`--${flag} must be one of ${bounds.choices.join(", ")}, got "${text}"`);
      }
      return text;
    case "number":
    case "integer": {
      // Plain decimal only: Number() would also take "0x1F90", "0b10", " 2 " and "".
      const v = DECIMAL.test(text) ? Number(text) : NaN;
      if (!Number.isFinite(v)) throw new OptionError(`--${flag} takes a number, got "${text}"`);
      // Whether the text is an integer, not whether the nearest double is: "1.0000000000000001"
      // and "0.99999999999999999" both became 1 (the latter passing a min of 1).
      if (type === "integer" && !writesInteger(text)) throw new OptionError(`--${flag} takes an integer, got "${text}"`);
      // Past 2^53 a number no longer holds the integer written (9007199254740993 became ...992).
      if (type === "integer" && !Number.isSafeInteger(v)) {
        throw new OptionError(`--${flag} takes an integer of at most ${Number.MAX_SAFE_INTEGER} in magnitude, got "${text}"`);
      }
      if (bounds.min !== undefined && v < bounds.min) throw new OptionError(`--${flag} must be at least ${bounds.min}, got ${text}`);
      if (bounds.max !== undefined && v > bounds.max) throw new OptionError(`--${flag} must be at most ${bounds.max}, got ${text}`);
      // "-0" is the integer 0 (a -0 divides to -Infinity, and Object.is tells it from 0).
      return type === "integer" && v === 0 ? 0 : v;
    }
  }
}

/** The result of parsing a command line. */
export interface ParsedCommandLine<S extends OptionSpecs> {
  /** --help or -h was given. */
  help: boolean;
  shared: SharedOptions;
  app: OptionValues<S>;
}

/**
 * Parses `argv` (the arguments after the script) against Shoal's options and `specs`.
 * Throws OptionError for an unknown option (with a suggestion), a missing or bad value, a
 * missing required option, or a stray argument. --help stops checking required options.
 */
export function parseCommandLine<S extends OptionSpecs>(argv: readonly string[], specs: S): ParsedCommandLine<S> {
  checkSpecs(specs);
  interface Target {
    set: (v: unknown) => void;
    type: OptionType;
    bounds: { min?: number | undefined; max?: number | undefined; choices?: readonly string[] | undefined };
    parse?: ((text: string, flag: string) => unknown) | undefined;
    check?: ((value: never) => void) | undefined;
  }
  const shared = defaultSharedOptions();
  const app: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(specs)) app[key] = spec.default ?? (spec.type === "boolean" ? false : undefined);
  const targets = new Map<string, Target>();
  for (const s of sharedSpecs) {
    targets.set(s.flag, {
      set: (v) => ((shared as unknown as Record<string, unknown>)[s.key] = v),
      type: s.type,
      bounds: { min: s.min, max: s.max },
      parse: s.parse,
    });
  }
  for (const [key, spec] of Object.entries(specs)) {
    targets.set(flagOf(key), { set: (v) => (app[key] = v), type: spec.type, bounds: spec, check: spec.check });
  }
  const seen = new Set<string>();
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "-h" || arg === "--help") {
      help = true;
      continue;
    }
    if (!arg.startsWith("--") || arg === "--") {
      throw new OptionError(arg === "--" ? 'unexpected "--": this app takes no positional arguments' : `unexpected argument "${arg}" (options start with --; see --help)`);
    }
    // "--help=x" matched no option and suggested "did you mean --help?".
    if (arg.startsWith("--help=")) throw new OptionError("--help takes no value");
    const eq = arg.indexOf("=");
    let flag = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
    let inline = eq < 0 ? undefined : arg.slice(eq + 1);
    let target = targets.get(flag);
    if (target === undefined && flag.startsWith("no-") && targets.get(flag.slice(3))?.type === "boolean") {
      // "--no-x=true" was called an unknown option, with the hint "did you mean --x?".
      if (inline !== undefined) throw new OptionError(`--${flag} takes no value; write --${flag.slice(3)}=false or --${flag}`);
      flag = flag.slice(3);
      target = targets.get(flag);
      inline = "false";
    }
    if (target === undefined) {
      const names = [...targets.keys(), "help"];
      const best = names.map((n) => [n, editDistance(flag, n)] as const).sort((a, b) => a[1] - b[1])[0];
      const hint = best && best[1] <= Math.max(2, Math.floor(flag.length / 3)) ? `; did you mean --${best[0]}?` : "; see --help";
      throw new OptionError(`unknown option --${flag}${hint}`);
    }
    let text = inline;
    if (text === undefined) {
      if (target.type === "boolean") text = "true";
      else {
        const next = argv[i + 1];
        if (next === undefined || (next.startsWith("--") && next.length > 2)) throw new OptionError(`--${flag} needs a value`);
        text = next;
        i++;
      }
    }
    seen.add(flag);
    const value = target.parse ? target.parse(text, flag) : convert(flag, target.type, text, target.bounds);
    if (target.check !== undefined) {
      try {
        target.check(value as never);
      } catch (err) {
        throw new OptionError(`--${flag}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    target.set(value);
  }
  if (!help) {
    for (const [key, spec] of Object.entries(specs)) {
      if (spec.required && !seen.has(flagOf(key))) throw new OptionError(`--${flagOf(key)} is required`);
    }
  }
  return { help, shared, app: app as OptionValues<S> };
}

function valueHint(type: OptionType, valueName: string | undefined, choices: readonly string[] | undefined): string {
  if (type === "boolean") return "";
  if (valueName) return ` ${valueName}`;
  if (choices) return ` ${choices.join("|")}`;
  return type === "string" ? " TEXT" : type === "integer" ? " N" : " NUMBER";
}

function column(rows: [string, string][]): string {
  const width = Math.min(36, Math.max(...rows.map((r) => r[0].length)) + 2);
  return rows.map(([l, r]) => (l.length + 2 > width ? `  ${l}\n  ${" ".repeat(width)}${r}` : `  ${l.padEnd(width)}${r}`)).join("\n");
}

/** The --help text for an app. */
export function formatHelp(name: string, description: string | undefined, specs: OptionSpecs): string {
  const lines = [`Usage: ${name} [options]`];
  if (description) lines.push("", description);
  const own = Object.entries(specs);
  if (own.length > 0) {
    lines.push("", "Options:");
    lines.push(
      column(
        own.map(([key, spec]) => {
          const extra: string[] = [];
          if (spec.default !== undefined) extra.push(`default: ${String(spec.default)}`);
          if (spec.required) extra.push("required");
          return [
            `--${flagOf(key)}${valueHint(spec.type, spec.valueName, spec.choices)}`,
            `${spec.description}${extra.length ? ` (${extra.join(", ")})` : ""}`,
          ];
        }),
      ),
    );
  }
  lines.push("", "Shoal options:");
  lines.push(
    column([
      ...sharedSpecs.map((s): [string, string] => [`--${s.flag}${s.type === "boolean" ? "" : ` ${s.valueName}`}`, s.description]),
      ["-h, --help", "show this help and exit"],
    ]),
  );
  return lines.join("\n") + "\n";
}
