/**
 * Validation and defaults of the socket API's options, shared by every stack so that both
 * reject the same mistakes with the same messages.
 */
import { describeValue } from "../core/describe.ts";
import { InvalidArgumentError } from "../core/errors.ts";
import type { ConnectionOptions, ListenOptions } from "./types.ts";

/** ConnectionOptions with every default applied. */
export interface ResolvedConnectionOptions {
  noDelay: boolean;
  idleTimeoutMs: number;
  readTimeoutMs: number;
  maxReadBuffered: number;
  writeHighWater: number;
  closeTimeoutMs: number;
}

/** Defaults of ConnectionOptions (documented there). */
export const connectionDefaults: Readonly<ResolvedConnectionOptions> = {
  noDelay: true,
  idleTimeoutMs: 0,
  readTimeoutMs: 0,
  maxReadBuffered: 256 * 1024,
  writeHighWater: 256 * 1024,
  closeTimeoutMs: 10_000,
};

/** Throws InvalidArgumentError unless `opts` is undefined or an object. */
export function checkOptionsObject(what: string, opts: unknown): void {
  if (opts !== undefined && (typeof opts !== "object" || opts === null)) {
    throw new InvalidArgumentError(`${what}: options must be an object`);
  }
}

/**
 * Throws InvalidArgumentError unless `opts` is undefined or an object whose own keys are all
 * among `known`: a misspelt option (`timeout` for `timeoutMs`, `reuseport`) would otherwise be
 * silently ignored. The message names the closest known option, else lists them.
 */
export function checkOptionKeys(what: string, opts: unknown, known: readonly string[]): void {
  checkOptionsObject(what, opts);
  if (opts === undefined) return;
  for (const key of Object.keys(opts as object)) {
    if (known.includes(key)) continue;
    const close = closestOption(key, known);
    const hint = close !== undefined ? `did you mean ${close}?` : known.length === 0 ? "it takes none" : `known: ${known.join(", ")}`;
    throw new InvalidArgumentError(`${what}: unknown option ${JSON.stringify(key)} (${hint})`);
  }
}

/** The known option `key` most likely meant: same letters in another case, one inside the other, else at most 2 edits away. */
function closestOption(key: string, known: readonly string[]): string | undefined {
  const k = key.toLowerCase();
  let best: string | undefined;
  let bestDistance = 3;
  for (const name of known) {
    const n = name.toLowerCase();
    if (n === k) return name;
    // One inside the other ranks before any edit, the closest in length first.
    const d = k.length >= 4 && (n.includes(k) || k.includes(n)) ? Math.abs(n.length - k.length) / 1000 : editDistance(k, n);
    if (d < bestDistance) {
      best = name;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length]!;
}

/** The options of ConnectionOptions (every connection). */
export const CONNECTION_OPTIONS = ["noDelay", "idleTimeoutMs", "readTimeoutMs", "maxReadBuffered", "writeHighWater", "closeTimeoutMs"] as const;
/** The options of ListenOptions. */
export const LISTEN_OPTIONS = [...CONNECTION_OPTIONS, "backlog", "reusePort", "reuseAddress", "ipv6Only", "maxConnections", "acceptQueueLimit", "unlinkOnClose"] as const;
/** The options of ConnectOptions. */
export const CONNECT_OPTIONS = [...CONNECTION_OPTIONS, "timeoutMs", "localAddress", "signal"] as const;

/** The `signal` of an options object (undefined or an AbortSignal). Throws InvalidArgumentError. */
export function signalOption(what: string, opts: unknown): AbortSignal | undefined {
  checkOptionsObject(what, opts);
  const s = (opts as { signal?: unknown } | undefined)?.signal;
  if (s !== undefined && !(s instanceof AbortSignal)) {
    throw new InvalidArgumentError(`${what}: options.signal must be an AbortSignal, got ${describeValue(s)}`);
  }
  return s;
}

/** A number option: a finite number >= min (and integer when asked), or the default. */
export function numberOption(what: string, name: string, v: unknown, fallback: number, min: number, integer = true): number {
  if (v === undefined) return fallback;
  if (typeof v !== "number" || Number.isNaN(v) || v < min || (integer && v !== Infinity && !Number.isInteger(v))) {
    throw new InvalidArgumentError(`${what}: ${name} must be ${integer ? "an integer" : "a number"} >= ${min}, got ${String(v)}`);
  }
  return v;
}

/** A boolean option, or the default. Throws InvalidArgumentError. */
export function booleanOption(what: string, name: string, v: unknown, fallback: boolean): boolean {
  if (v === undefined) return fallback;
  if (typeof v !== "boolean") throw new InvalidArgumentError(`${what}: ${name} must be a boolean, got ${describeValue(v)}`);
  return v;
}

function finiteInt(what: string, name: string, v: unknown, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = numberOption(what, name, v, fallback, min);
  if (!Number.isFinite(n) || n > max) throw new InvalidArgumentError(`${what}: ${name} must be an integer from ${min} to ${max}, got ${String(v)}`);
  return n;
}

function finiteMs(what: string, name: string, v: unknown, fallback: number): number {
  const ms = numberOption(what, name, v, fallback, 0, false);
  if (!Number.isFinite(ms)) throw new InvalidArgumentError(`${what}: ${name} must be finite`);
  return ms;
}

/** Applies defaults to connection options and validates them. Throws InvalidArgumentError. */
export function resolveConnectionOptions(what: string, opts: ConnectionOptions | undefined, known: readonly string[] = CONNECTION_OPTIONS): ResolvedConnectionOptions {
  checkOptionKeys(what, opts, known);
  const o = opts ?? {};
  const d = connectionDefaults;
  return {
    noDelay: booleanOption(what, "noDelay", o.noDelay, d.noDelay),
    idleTimeoutMs: finiteMs(what, "idleTimeoutMs", o.idleTimeoutMs, d.idleTimeoutMs),
    readTimeoutMs: finiteMs(what, "readTimeoutMs", o.readTimeoutMs, d.readTimeoutMs),
    // Finite: the receive buffers are the shard's, shared by every connection.
    maxReadBuffered: finiteInt(what, "maxReadBuffered", o.maxReadBuffered, d.maxReadBuffered, 1),
    writeHighWater: numberOption(what, "writeHighWater", o.writeHighWater, d.writeHighWater, 0),
    closeTimeoutMs: finiteMs(what, "closeTimeoutMs", o.closeTimeoutMs, d.closeTimeoutMs),
  };
}

/** ListenOptions with every default applied. */
export interface ResolvedListenOptions {
  connection: ResolvedConnectionOptions;
  backlog: number;
  reusePort: boolean;
  reuseAddress: boolean;
  ipv6Only: boolean;
  maxConnections: number;
  acceptQueueLimit: number;
  unlinkOnClose: boolean;
}

/** Applies defaults to listen options and validates them. Throws InvalidArgumentError. */
export function resolveListenOptions(opts: ListenOptions | undefined): ResolvedListenOptions {
  const what = "listen";
  const o = opts ?? {};
  return {
    connection: resolveConnectionOptions(what, opts, LISTEN_OPTIONS),
    // listen(2) takes an int (the kernel then caps it at net.core.somaxconn).
    backlog: finiteInt(what, "backlog", o.backlog, 1024, 0, 0x7fff_ffff),
    reusePort: booleanOption(what, "reusePort", o.reusePort, true),
    reuseAddress: booleanOption(what, "reuseAddress", o.reuseAddress, true),
    ipv6Only: booleanOption(what, "ipv6Only", o.ipv6Only, false),
    maxConnections: numberOption(what, "maxConnections", o.maxConnections, Infinity, 1),
    acceptQueueLimit: numberOption(what, "acceptQueueLimit", o.acceptQueueLimit, 1024, 1),
    unlinkOnClose: booleanOption(what, "unlinkOnClose", o.unlinkOnClose, true),
  };
}
