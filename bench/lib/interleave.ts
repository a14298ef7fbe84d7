/**
 * Interleaved measurement on a noisy machine: every variant is measured with mitata's
 * `measure` once per round, rounds alternate variants, and the median of the rounds' p50s is
 * reported with its ratio to the baseline measured in the same run.
 */
import { measure } from "mitata";

export interface Variant {
  name: string;
  /** Work per call (e.g. operations), to report per-op time. */
  opsPerCall: number;
  fn: () => unknown;
}

export interface Result {
  name: string;
  nsPerOp: number;
  ratio: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** Measures `variants` in `rounds` interleaved rounds; ratio is nsPerOp / baseline's nsPerOp. */
export async function interleaved(title: string, baseline: Variant, variants: Variant[], rounds = 5, minCpuMs = 150): Promise<Result[]> {
  const all = [baseline, ...variants];
  const samples = new Map<string, number[]>(all.map((v) => [v.name, []]));
  for (let r = 0; r < rounds; r++) {
    for (const v of r % 2 ? [...all].reverse() : all) {
      const stats = await measure(v.fn, { min_cpu_time: minCpuMs * 1e6, max_samples: 1e6 } as never);
      samples.get(v.name)!.push(stats.p50 / v.opsPerCall);
    }
  }
  const base = median(samples.get(baseline.name)!);
  const results = all.map((v) => {
    const ns = median(samples.get(v.name)!);
    return { name: v.name, nsPerOp: ns, ratio: ns / base };
  });
  console.log(`\n${title} (median of ${rounds} interleaved rounds, p50 per op)`);
  for (const r of results) {
    console.log(`  ${r.name.padEnd(44)} ${r.nsPerOp.toFixed(1).padStart(9)} ns/op   ${r === results[0] ? "baseline" : `x${r.ratio.toFixed(2)} of baseline`}`);
  }
  return results;
}
