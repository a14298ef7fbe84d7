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

let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  tick.cancel();
  console.log("hello: stopped");
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);

const seconds = Number(process.argv[2] ?? "0");
if (seconds > 0) {
  await sleep(seconds * 1000);
  stop();
}
