/**
 * Cross-shard messaging between two shard Workers: Shoal's rings against postMessage on a
 * MessagePort between the same two Workers. Run: `node_modules/.bin/bun bench/smp/smp.bench.ts`
 * (two shards unless --smp says otherwise; only shards 0 and 1 take part).
 *
 *   round trip, both polling   submitTo(1, echo, i) awaited; both loops busy-poll between calls
 *   round trip, target asleep  the same, but shard 1 sleeps in io_uring after every message and
 *                              is woken through its eventfd
 *   round trip, postMessage    port.postMessage(i), await the echo (both Shoal loops released,
 *                              so Bun's event loop serves the port at once)
 *   one-way, rings             post(1, sink, i) x 10,000 with back-pressure, then a fence call;
 *                              batched: the tail is published once per loop turn
 *   one-way, postMessage       port.postMessage(i) x 10,000, then wait for the receiver's ack
 *
 * Every variant is measured with mitata's `measure` once per round, rounds alternate the
 * order, and the median of the rounds' p50 is reported with the ratio to postMessage.
 */
import { isMainThread } from "node:worker_threads";
import { measure } from "mitata";
import { app } from "../../src/app/index.ts";
import { configureLoop } from "../../src/core/loop.ts";
import { connectPort, onPort, post, registerHandler, smp, smpStats, submitTo, thisShard, threadCpuAffinity } from "../../src/smp/index.ts";
import { holdLoop } from "../../src/smp/runtime.ts";

const BATCH = 10_000;
const ROUNDS = Number(process.env.SMP_BENCH_ROUNDS ?? 5);
const MIN_CPU_MS = Number(process.env.SMP_BENCH_MIN_CPU_MS ?? 300);

// Two shards by default, pinned when the machine has two CPUs for them.
if (isMainThread && !process.argv.includes("--smp")) {
  process.argv.push("--smp", "2");
  if (threadCpuAffinity().length < 2 && !process.argv.includes("--overprovisioned")) process.argv.push("--overprovisioned");
}

const echo = registerHandler("bench.echo", (v: number) => v);
let sunk = 0;
const sink = registerHandler("bench.sink", (v: number) => {
  sunk += v;
});
const fence = registerHandler("bench.fence", () => sunk);

// Shard 1's side of the MessagePort: echoes numbers, counts one-way batches, obeys commands.
type PortCommand = { cmd: "hold"; on: boolean } | { cmd: "idlePoll"; us: number } | { cmd: "count"; n: number };
onPort("bench", (port) => {
  let expect = 0;
  let got = 0;
  port.onmessage = (e) => {
    const m = e.data as number | PortCommand;
    if (typeof m === "number") {
      if (expect === 0) port.postMessage(m);
      else if (++got === expect) {
        port.postMessage(got);
        got = 0;
      }
      return;
    }
    if (m.cmd === "hold") holdLoop(m.on);
    else if (m.cmd === "idlePoll") configureLoop({ idlePollTimeUs: m.us });
    else if (m.cmd === "count") expect = m.n;
    port.postMessage("ack");
  };
});

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

interface Variant {
  name: string;
  opsPerCall: number;
  setup: () => Promise<void>;
  fn: () => Promise<unknown>;
}

app({ name: "smp-bench" }, async () => {
  if (smp.count < 2) {
    console.log("smp-bench needs at least 2 shards (--smp 2)");
    return 1;
  }
  const port = connectPort(1, "bench");
  let onReply: ((v: unknown) => void) | undefined;
  port.onmessage = (e) => onReply?.(e.data);
  const ask = (msg: unknown) =>
    new Promise<unknown>((resolve) => {
      onReply = resolve;
      port.postMessage(msg);
    });
  // Before the first command the port may still be in flight through the supervisor.
  await ask({ cmd: "count", n: 0 });

  async function ringsMode(targetIdlePollUs: number): Promise<void> {
    holdLoop(true);
    configureLoop({ idlePollTimeUs: 1_000_000 });
    await ask({ cmd: "hold", on: true });
    await ask({ cmd: "idlePoll", us: targetIdlePollUs });
    await submitTo(1, echo, 0); // both loops are turning
  }
  async function portMode(count: number): Promise<void> {
    await ask({ cmd: "hold", on: false });
    await ask({ cmd: "count", n: count });
    holdLoop(false);
  }

  let i = 0;
  const variants: Variant[] = [
    {
      name: "round trip, postMessage",
      opsPerCall: 1,
      setup: () => portMode(0),
      fn: () => ask(++i),
    },
    {
      name: "round trip, rings, both polling",
      opsPerCall: 1,
      setup: () => ringsMode(1_000_000),
      fn: () => submitTo(1, echo, ++i),
    },
    {
      name: "round trip, rings, target asleep",
      opsPerCall: 1,
      setup: () => ringsMode(0),
      fn: () => submitTo(1, echo, ++i),
    },
    {
      name: "one-way, postMessage",
      opsPerCall: BATCH,
      setup: () => portMode(BATCH),
      fn: () =>
        new Promise<unknown>((resolve) => {
          onReply = resolve;
          for (let k = 0; k < BATCH; k++) port.postMessage(k);
        }),
    },
    {
      name: "one-way, rings (batched)",
      opsPerCall: BATCH,
      setup: () => ringsMode(1_000_000),
      fn: async () => {
        for (let k = 0; k < BATCH; k++) {
          const wait = post(1, sink, k);
          if (wait) await wait;
        }
        return submitTo(1, fence);
      },
    },
  ];

  const samples = new Map<string, number[]>(variants.map((v) => [v.name, []]));
  for (let r = 0; r < ROUNDS; r++) {
    for (const v of r % 2 ? [...variants].reverse() : variants) {
      await v.setup();
      const stats = await measure(v.fn, { min_cpu_time: MIN_CPU_MS * 1e6, max_samples: 1e6 } as never);
      samples.get(v.name)!.push(stats.p50 / v.opsPerCall);
    }
    process.stderr.write(`round ${r + 1}/${ROUNDS} done\n`);
  }
  await ringsMode(200);

  const ns = (name: string) => median(samples.get(name)!);
  const rttPost = ns("round trip, postMessage");
  const oneWayPost = ns("one-way, postMessage");
  const rows: [string, number, string][] = [
    ["round trip, postMessage", rttPost, "baseline"],
    ["round trip, rings, both polling", ns("round trip, rings, both polling"), `${(rttPost / ns("round trip, rings, both polling")).toFixed(1)}x faster`],
    ["round trip, rings, target asleep", ns("round trip, rings, target asleep"), `${(rttPost / ns("round trip, rings, target asleep")).toFixed(1)}x faster`],
    ["one-way, postMessage", oneWayPost, "baseline"],
    ["one-way, rings (batched)", ns("one-way, rings (batched)"), `${(oneWayPost / ns("one-way, rings (batched)")).toFixed(1)}x the throughput`],
  ];
  console.log(`\ncross-shard messaging, shard ${thisShard()} <-> shard 1 (median of ${ROUNDS} interleaved rounds, p50)`);
  console.log("| what | per op | rate | vs postMessage |");
  console.log("|---|---:|---:|---|");
  for (const [name, v, ratio] of rows) {
    const per = v >= 1000 ? `${(v / 1000).toFixed(2)} µs` : `${v.toFixed(0)} ns`;
    const rate = `${((1e9 / v) / 1e6).toFixed(2)} M/s`;
    console.log(`| ${name} | ${per} | ${rate} | ${ratio} |`);
  }
  console.log(`\nshard 0 counters: ${JSON.stringify(smpStats())}`);
  return 0;
});
