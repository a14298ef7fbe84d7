/**
 * The entry of every shard Worker. The supervisor starts it, then sends "init": the shard
 * loads the native library (one shard at a time: concurrent dlopen crashed older Bun), pins
 * its thread, creates its reactor and rings, imports the application module (which
 * registers handlers and services and calls app()), closes registration and reports ready
 * with its registry's signature. "go" runs main on shard 0. Uncaught errors are reported to
 * the supervisor with their stack before the Worker exits.
 */
import { describeValue } from "../core/describe.ts";
import { configureLoop } from "../core/loop.ts";
import { loopState } from "../core/scheduler.ts";
import { native } from "../core/native.ts";
import { flushLog, setLogLevel, setLogPrefix, logger, warmLogging } from "../log/logger.ts";
import { currentCpu, pinThread, setThreadCpuAffinity, threadId } from "./affinity.ts";
import { errorInfo, setShardLaunch, shardMain, type ToShard, type ToSupervisor, type Transfer } from "./control.ts";
import { deliverPort } from "./ports.ts";
import { sealRegistry } from "./registry.ts";
import { activateShard, beginShutdown, markShardGone, recordThreadId, startShard, thisShard } from "./runtime.ts";
import { stopAllServices, stopLocalServices } from "./sharded.ts";

interface WorkerScope {
  onmessage: ((e: MessageEvent<ToShard>) => void) | null;
  postMessage(msg: ToSupervisor, transfer?: Transfer): void;
}
const scope = globalThis as unknown as WorkerScope;
const post = (msg: ToSupervisor, transfer?: Transfer) => scope.postMessage(msg, transfer ?? []);

let shard = -1;
let mainPromise: Promise<unknown> | undefined;
let mainGraceMs = 5000;
let appName = "app";

let crashed = false;

function crash(err: unknown): void {
  if (crashed) {
    // The shard is on its way out after its first uncaught error; a later one is most likely a
    // consequence of it. Logged, never the reported cause (the last one replaced the first).
    try {
      logger(appName).error(`another uncaught error on shard ${shard} after the first, while it exits:`, err);
    } catch {
      // nothing more can be done on the way out
    }
    return;
  }
  crashed = true;
  try {
    post({ type: "crash", shard, error: errorInfo(err) });
  } finally {
    // Let the message leave before the Worker ends.
    setTimeout(() => process.exit(1), 0);
  }
}
process.on("uncaughtException", crash);
process.on("unhandledRejection", crash);

async function init(msg: Extract<ToShard, { type: "init" }>): Promise<void> {
  shard = msg.init.shard;
  appName = msg.name;
  mainGraceMs = msg.mainGraceMs;
  setLogPrefix(`shard ${shard}`);
  const reactorLog = logger("reactor");
  loopState.report = (text: string) => reactorLog.warn(text);
  try {
    setLogLevel(msg.logLevel);
    warmLogging();
    configureLoop(msg.loop);
    native();
    if (msg.init.cpu >= 0) pinThread(msg.init.cpu);
    else if (msg.init.confine.length > 0) setThreadCpuAffinity(msg.init.confine);
    startShard(msg.init);
    recordThreadId(threadId());
    setShardLaunch({ name: msg.name, options: msg.options }, post);
    await import(msg.module);
    const signature = sealRegistry("the shard started");
    if (shard === 0 && shardMain() === undefined) {
      throw new Error(`the application module ${msg.module} did not call app(); shard 0 has no main to run`);
    }
    activateShard();
    if (msg.init.cpu >= 0 && currentCpu() !== msg.init.cpu) {
      throw new Error(`the shard's thread runs on CPU ${currentCpu()} after pinning it to CPU ${msg.init.cpu}`);
    }
    post({ type: "ready", shard, signature, tid: threadId(), hasMain: shardMain() !== undefined });
  } catch (err) {
    post({ type: "start-failed", shard, error: errorInfo(err) });
  }
}

/**
 * main's return value as a process exit code: nothing (undefined, null) is 0, an integer
 * 0..255 is itself, anything else (negative, 256+, fractions, strings) is 1 with a warning: the
 * kernel keeps only the low 8 bits, so -1 or 256 would otherwise report success.
 */
function exitCodeOf(value: unknown): number {
  if (value === undefined || value === null) return 0;
  if (typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= 255) return value;
  // describeValue: a bigint 5n read "main returned 5, not an exit code".
  console.error(`main returned ${describeValue(value)}, not an exit code 0..255: exiting with 1`);
  return 1;
}

function runMain(): void {
  const run = shardMain()!;
  mainPromise = run().then(
    (code) => post({ type: "main-done", code: exitCodeOf(code) }),
    (err: unknown) => post({ type: "main-failed", error: errorInfo(err) }),
  );
}

/** Waits for main to settle, at most mainGraceMs; main should return once the shutdown signal fires. */
async function mainSettled(): Promise<void> {
  if (mainPromise === undefined) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const grace = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), mainGraceMs)));
  const settled = await Promise.race([mainPromise.then(() => true), grace]);
  clearTimeout(timer);
  if (!settled) logger(appName).warn(`main is still running ${mainGraceMs} ms after shutdown began; stopping services anyway`);
}

async function stopServices(coordinated: boolean): Promise<void> {
  if (coordinated) await mainSettled();
  const errors = coordinated ? await stopAllServices() : await stopLocalServices();
  post({ type: "services-stopped", shard: thisShard(), errors: errors.map(errorInfo) });
}

scope.onmessage = (e: MessageEvent<ToShard>) => {
  const msg = e.data;
  switch (msg.type) {
    case "init":
      void init(msg);
      break;
    case "go":
      if (shard === 0) runMain();
      break;
    case "stopping":
      beginShutdown(msg.reason);
      break;
    case "ping":
      post({ type: "pong", shard });
      break;
    case "stop-services":
      void stopServices(true);
      break;
    case "stop-local":
      void stopServices(false);
      break;
    case "gone":
      markShardGone(msg.shard, msg.cause);
      break;
    case "port":
      deliverPort(msg.tag, msg.from, msg.port);
      break;
    case "flush":
      void flushLog().then(() => post({ type: "flushed", shard }));
      break;
  }
};
