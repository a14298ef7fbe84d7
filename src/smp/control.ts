/**
 * The control plane between the supervisor and its shards: rare messages (start, ready, stop,
 * a shard gone) sent with postMessage. The data plane, every cross-shard call, uses the rings.
 * Also holds what the shard entry and app() hand each other inside a Worker.
 */
import { inspect } from "node:util";
import type { LoopOptions } from "../core/loop.ts";
import type { ShardInit } from "./runtime.ts";

/** What postMessage may transfer here. */
export type Transfer = (ArrayBuffer | MessagePort)[];

/** An error as it crosses the control plane. */
export interface ErrorInfo {
  name: string;
  message: string;
  code?: string | undefined;
  stack?: string | undefined;
  /** The error's cause, flattened the same way (a few levels deep). */
  cause?: ErrorInfo | undefined;
  /** An AggregateError's errors (the first ten). */
  errors?: ErrorInfo[] | undefined;
  /** The shard it names (RemoteError: where it was thrown; ShardGoneError: the shard gone). */
  shard?: number | undefined;
}

/** The supervisor's messages to a shard. */
export type ToShard =
  | {
      type: "init";
      init: ShardInit;
      /** URL of the application module every shard imports. */
      module: string;
      name: string;
      logLevel: string;
      loop: LoopOptions;
      /** The parsed command line (app options and shared options), for app() inside the shard. */
      options: Record<string, unknown>;
      mainGraceMs: number;
    }
  | { type: "go" }
  | { type: "stopping"; reason: string }
  | { type: "stop-services" }
  | { type: "stop-local" }
  | { type: "gone"; shard: number; cause: string }
  | { type: "port"; from: number; tag: string; port: MessagePort }
  /** Answer "pong" (the shutdown timed out: which shards' threads are stuck?). */
  | { type: "ping" }
  /** The app is ending: answer "flushed" once this shard's log lines have left the process. */
  | { type: "flush" };

/** A shard's messages to the supervisor. */
export type ToSupervisor =
  | { type: "ready"; shard: number; signature: string; tid: number; hasMain: boolean }
  | { type: "start-failed"; shard: number; error: ErrorInfo }
  | { type: "crash"; shard: number; error: ErrorInfo }
  /** The answer to "ping": the shard's thread takes messages (one that does not is blocked). */
  | { type: "pong"; shard: number }
  | { type: "main-done"; code: number }
  | { type: "main-failed"; error: ErrorInfo }
  | { type: "services-stopped"; shard: number; errors: ErrorInfo[] }
  | { type: "port"; to: number; tag: string; port: MessagePort }
  | { type: "flushed"; shard: number };

/** Flattens any thrown value into an ErrorInfo; never throws (hostile values are described). */
export function errorInfo(err: unknown, depth = 0): ErrorInfo {
  try {
    if (err instanceof Error) {
      const code = (err as { code?: unknown }).code;
      const info: ErrorInfo = {
        name: String(err.name),
        message: String(err.message),
        code: typeof code === "string" ? code : undefined,
        stack: typeof err.stack === "string" ? err.stack : undefined,
      };
      const shard = (err as { shard?: unknown }).shard;
      if (typeof shard === "number") info.shard = shard;
      if (depth < 4 && err.cause !== undefined) info.cause = errorInfo(err.cause, depth + 1);
      if (depth < 4 && err instanceof AggregateError && Array.isArray(err.errors)) {
        info.errors = err.errors.slice(0, 10).map((e: unknown) => errorInfo(e, depth + 1));
      }
      return info;
    }
    // An object is shown inspected (String() of a plain object said only "[object Object]").
    const shown = typeof err === "object" && err !== null ? inspect(err, { depth: 2, breakLength: Infinity }) : String(err);
    return { name: "Error", message: `a thrown ${typeof err}: ${shown.length > 500 ? `${shown.slice(0, 500)}...` : shown}` };
  } catch {
    return { name: "Error", message: `a thrown ${typeof err} that cannot be described` };
  }
}

/** One readable description: the stack if it names the error, else "name: message"; then causes. */
export function describeError(info: ErrorInfo): string {
  const head = `${info.name}: ${info.message}`;
  let text = info.stack && info.stack.includes(info.message) ? info.stack : info.stack ? `${head}\n${info.stack}` : head;
  if (info.errors !== undefined) {
    info.errors.forEach((e, i) => (text += `\n  [${i}] ${describeError(e).replace(/\n/g, "\n      ")}`));
  }
  if (info.cause !== undefined) text += `\nCaused by: ${describeError(info.cause)}`;
  return text;
}

// ---- inside a shard Worker: the entry and app() meet here ----------------------------------------

/** What app() finds when it runs inside a shard. */
export interface ShardLaunch {
  name: string;
  options: Record<string, unknown>;
}

let launch: ShardLaunch | undefined;
let main: (() => Promise<unknown>) | undefined;
let toSupervisor: ((msg: ToSupervisor, transfer?: Transfer) => void) | undefined;

/** @internal Set by the shard entry before it imports the application module. */
export function setShardLaunch(l: ShardLaunch, post: (msg: ToSupervisor, transfer?: Transfer) => void): void {
  launch = l;
  toSupervisor = post;
}

/** @internal The launch data when this thread is a shard started by app(), else undefined. */
export function shardLaunch(): ShardLaunch | undefined {
  return launch;
}

/** @internal app() inside a shard registers how to run main (run only on shard 0). */
export function registerShardMain(run: () => Promise<unknown>): void {
  main = run;
}

/** @internal The registered main, if app() was called. */
export function shardMain(): (() => Promise<unknown>) | undefined {
  return main;
}

/** @internal Sends a control message to the supervisor (shards only). */
export function postToSupervisor(msg: ToSupervisor, transfer?: Transfer): void {
  if (toSupervisor === undefined) throw new Error("not a shard: there is no supervisor to post to");
  toSupervisor(msg, transfer);
}
