/**
 * Chaos against the real server process, run the way users run it (`-p P -U P -t 2 -m 64`, no
 * -l): every hostile client of lib/chaos.ts at once, in loops (connect-and-vanish mid-value, RST
 * in a large multiget answer, half-close after a pipeline, slowloris, clients that never read
 * large answers, binary garbage, a binary header claiming a 4 GiB body, hundreds of connections
 * opened and closed, UDP datagrams with truncated and lying frame headers, noreply floods,
 * flush_all / slabs reassign / lru_crawler / metadump / stats detail racing the load), while
 * checker clients (text, meta, binary, UDP; keys on both shards) verify every answer byte for
 * byte. Then SIGTERM arrives with all of it still running. Checked: no wrong or missing answer
 * (a miss only where a flush, a slab move or an eviction explains it), no request left
 * unanswered, bounded memory, nothing on stderr, and the drain ends with exit 0.
 *
 * CHAOS_SECONDS sets the length (default 25 s); `bun test/memcached/lib/chaos.ts S PORT` runs it
 * alone.
 */
import { expect, test } from "bun:test";
import { runChaos } from "./lib/chaos.ts";
import { freeUdpPort } from "./lib/harness.ts";

const SECONDS = Number(process.env.CHAOS_SECONDS ?? 25);

test(`${SECONDS} s of hostile clients beside checkers, then SIGTERM: right answers, bounded memory, exit 0`, async () => {
  const port = await freeUdpPort();
  const r = await runChaos({ port, seconds: SECONDS });
  const rssMax = Math.max(...r.rss.map(([, m]) => m));
  // Always printed: a failing run's numbers are what explains it (the runner shows a failing
  // file's output only).
  console.log(JSON.stringify({ crashed: r.crashed, exitCode: r.exitCode, checks: r.checks, udpChecks: r.udpChecks, tolerated: r.tolerated, wrong: r.wrong.slice(0, 5), timeouts: r.timeouts.slice(0, 5), misses: r.misses.length, evictions: r.stats.evictions, exitMs: r.exitMs, stderr: r.stderr.slice(0, 2000), counts: r.counts }));
  console.log(`rss MiB: ${r.rss.map(([t, m]) => `${t}s:${m}`).join(" ")}`);
  expect(r.crashed).toBe(false);
  expect(r.wrong).toEqual([]);
  expect(r.timeouts).toEqual([]);
  // Items evicted (a class without a free page) are the only misses not explained by a flush.
  expect(r.misses.length).toBeLessThanOrEqual(Number(r.stats.evictions ?? 0));
  expect(r.checks).toBeGreaterThan(1000);
  expect(r.stderr).toBe("");
  // The harness kills the server 30 s after SIGTERM: 0 means the drain finished by itself.
  expect(r.exitCode).toBe(0);
  expect(rssMax).toBeLessThan(2048);
}, (SECONDS + 35) * 1000);
