/**
 * A minimal Shoal program: a periodic timer on the shard's io_uring loop that prints the
 * reactor's counters once a second, until SIGINT/SIGTERM. Run: bun examples/hello/main.ts
 */
import { Timer, loopStats, reactor, sleep } from "../../src/index.ts";

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
const arg = process.argv[2];
if (arg === "--help" || arg === "-h") {
  console.log("usage: bun examples/hello/main.ts [SECONDS]   (until SIGINT/SIGTERM without SECONDS)");
  process.exit(0);
}
const seconds = arg === undefined ? 0 : Number(arg);
if (!Number.isFinite(seconds) || seconds < 0) {
  console.error(`hello: SECONDS must be a number >= 0, got "${arg}"`);
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

if (seconds > 0) {
  await sleep(seconds * 1000, { signal: done.signal }).catch(() => {});
  stop();
}
