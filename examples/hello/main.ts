/**
 * A minimal Shoal program: a periodic timer on the shard's io_uring loop that prints the
 * reactor's counters once a second, until SIGINT/SIGTERM. Run: bun examples/hello/main.ts
 */
import { Timer, loopStats, reactor, sleep } from "shoal";

const r = reactor();
let ticks = 0;
const tick = new Timer(() => {
  ticks++;
  const c = r.counters();
  console.log(
    `tick ${ticks}: loop turns ${loopStats.turns}, kernel sleeps ${c.sleeps}, completions ${c.completed}, in flight ${c.inFlight}`,
  );
}).armPeriodic(1000);

// Optional: stop after N seconds (bun examples/hello/main.ts 5).
const USAGE = "usage: bun examples/hello/main.ts [SECONDS]   (until SIGINT/SIGTERM without SECONDS)";
const args = process.argv.slice(2);
const arg = args[0];
if (arg === "--help" || arg === "-h") {
  console.log(USAGE);
  process.exit(0);
}
// Plain decimal only: Number() read "" and " " as 0 (run until a signal) and "0x10" as 16.
// Without SECONDS: until a signal. "0" (or one that rounds to 0, like 1e-400) stops at once: it
// was read as no SECONDS and ran until a signal.
const seconds = arg === undefined ? undefined : /^\+?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(arg) ? Number(arg) : NaN;
if ((seconds !== undefined && !Number.isFinite(seconds)) || args.length > 1) {
  const why = args.length > 1 ? `one argument at most, got ${args.length}` : `SECONDS must be a number >= 0, got "${arg}"`;
  console.error(`hello: ${why}\n${USAGE}`);
  process.exit(2);
}

// A signal ends the wait too: the pending sleep must not keep the process alive.
const done = new AbortController();
let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  tick.cancel();
  done.abort();
  console.log("hello: stopped");
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);

if (seconds !== undefined) {
  await sleep(seconds * 1000, { signal: done.signal }).catch(() => {});
  stop();
}
