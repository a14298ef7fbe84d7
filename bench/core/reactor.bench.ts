/**
 * Core runtime benchmarks (issue 2):
 *  (a) io_uring nops awaited from TS, one Promise per op, batch 1/32/256, vs the same
 *      submit-and-reap loop in pure Zig (shoal_bench_nops) on the same ring, and the engine's
 *      floor (Promise + await per op, no kernel) that bounds any TS reactor's rate;
 *  (b) one task through the scheduler vs a bare microtask; one awaited completion vs a
 *      bare promise chain hop;
 *  (c) timer arm+fire vs Bun's setTimeout(0).
 * Run: node_modules/.bin/bun bench/core/reactor.bench.ts
 */
import { configureLoop, reactor, schedule, Timer } from "../../src/index.ts";
import { interleaved } from "../lib/interleave.ts";

configureLoop({ blockedReactorNotifyMs: 1e9 }); // the harness runs sync loops for long on purpose
const r = reactor();
const OPS = 256;

function tsNops(batch: number) {
  const per = OPS / batch;
  const fiber = async () => {
    for (let i = 0; i < per; i++) await r.nop();
  };
  return () => {
    const ps: Promise<void>[] = new Array(batch);
    for (let i = 0; i < batch; i++) ps[i] = fiber();
    return Promise.all(ps);
  };
}

/**
 * The engine's floor for the same loop without a kernel: `batch` fibers each await one new
 * Promise per op, all settled together once per "turn" (as a reactor turn settles its
 * completions), with nothing else. Floor + pure Zig bounds what any TS reactor can reach.
 */
function jsFloor(batch: number) {
  const per = OPS / batch;
  return async () => {
    const resolvers: (() => void)[] = [];
    const executor = (resolve: () => void) => {
      resolvers.push(resolve);
    };
    let done = 0;
    const fiber = async () => {
      for (let i = 0; i < per; i++) await new Promise<void>(executor);
      done++;
    };
    for (let i = 0; i < batch; i++) void fiber();
    while (done < batch) {
      const ready = resolvers.splice(0);
      for (const resolve of ready) resolve();
      await null; // the fibers resume (FIFO before this) and each awaits its next Promise
    }
  };
}

const nopResults: Record<number, { ts: number; bound: number }> = {};
for (const batch of [1, 32, 256]) {
  const res = await interleaved(
    `(a) nop, ${batch} in flight`,
    { name: `pure Zig, batch ${batch}`, opsPerCall: OPS, fn: () => r.benchNativeNops(OPS, batch) },
    [
      { name: `TS await, one Promise per op, batch ${batch}`, opsPerCall: OPS, fn: tsNops(batch) },
      { name: `JS floor: Promise + await, no kernel, ${batch}`, opsPerCall: OPS, fn: jsFloor(batch) },
    ],
  );
  const zig = res[0]!.nsPerOp;
  nopResults[batch] = { ts: 1 / res[1]!.ratio, bound: zig / (zig + res[2]!.nsPerOp) };
}
for (const b of [1, 32, 256]) {
  const { ts, bound } = nopResults[b]!;
  console.log(`  batch ${b}: TS rate ${(ts * 100).toFixed(0)}% of pure Zig; floor + kernel allow at most ${(bound * 100).toFixed(0)}%`);
}

/** A promise that resolves once `start` has called the given callback `n` times. */
function countdown(n: number, start: (done: () => void) => void): Promise<void> {
  return new Promise<void>((resolve) => {
    let left = n;
    start(() => {
      if (--left === 0) resolve();
    });
  });
}

// (b) scheduling cost
const TASKS = 1000;
await interleaved(
  "(b1) schedule a task",
  {
    name: "bare microtask (queueMicrotask)",
    opsPerCall: TASKS,
    fn: () => countdown(TASKS, (f) => {
      for (let i = 0; i < TASKS; i++) queueMicrotask(f);
    }),
  },
  [
    {
      name: "schedule() through the scheduler",
      opsPerCall: TASKS,
      fn: () => countdown(TASKS, (f) => {
        for (let i = 0; i < TASKS; i++) schedule(f);
      }),
    },
  ],
);

const HOPS = 1000;
await interleaved(
  "(b2) one awaited completion",
  {
    name: "bare promise chain hop (await Promise.resolve())",
    opsPerCall: HOPS,
    fn: async () => {
      for (let i = 0; i < HOPS; i++) await Promise.resolve();
    },
  },
  [
    {
      name: "await reactor().nop() (kernel round trip)",
      opsPerCall: HOPS,
      fn: async () => {
        for (let i = 0; i < HOPS; i++) await r.nop();
      },
    },
  ],
);

// (c) timers
const TIMERS = 1000;
await interleaved(
  "(c) timer arm + fire (1000 timers due now)",
  {
    name: "Bun setTimeout(0)",
    opsPerCall: TIMERS,
    fn: () => countdown(TIMERS, (f) => {
      for (let i = 0; i < TIMERS; i++) setTimeout(f, 0);
    }),
  },
  [
    {
      name: "Shoal Timer.arm(0)",
      opsPerCall: TIMERS,
      fn: () => countdown(TIMERS, (f) => {
        for (let i = 0; i < TIMERS; i++) new Timer(f).arm(0);
      }),
    },
  ],
);
console.log("\nreactor counters:", r.counters());
