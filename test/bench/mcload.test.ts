/**
 * bench/memcached/mcload.c, the load generator behind the memcached results: what it counts.
 * It is built here with the project's Zig and run against a scripted server in this process
 * (Bun.listen: a get misses, a set is stored), which can hold answers back on purpose.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Socket } from "bun";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..", "..");
let dir: string;
let mcload: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "shoal-mcload-"));
  mcload = join(dir, "mcload");
  const r = Bun.spawnSync([join(ROOT, "scripts/zig"), "cc", "-O2", "-o", mcload, join(ROOT, "bench/memcached/mcload.c"), "-lpthread", "-lm"], { stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`building mcload failed: ${r.stderr.toString()}`);
}, 120_000);

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/**
 * A scripted memcached: answers every get with END and every set with STORED. `hold(ms)` says,
 * for a request arriving `ms` after the first one, until when (ms after the first) its answer
 * waits; Infinity: never answered.
 */
function scriptedServer(hold: (ms: number) => number) {
  let first = -1;
  const timers = new Set<Timer>();
  type State = { buf: string; held: { due: number; out: string }[] };
  // Held answers leave in arrival order: each timer sends every answer due at its front.
  const release = (s: Socket<State>) => {
    const q = s.data.held;
    while (q.length > 0 && q[0]!.due <= performance.now()) s.write(q.shift()!.out);
  };
  const server = Bun.listen<State>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        s.data = { buf: "", held: [] };
      },
      data(s, bytes) {
        const now = performance.now();
        if (first < 0) first = now;
        s.data.buf += bytes.toString("latin1");
        let out = "";
        for (;;) {
          const buf = s.data.buf;
          const nl = buf.indexOf("\r\n");
          if (nl < 0) break;
          const words = buf.slice(0, nl).split(" ");
          if (words[0] === "set") {
            const end = nl + 2 + Number(words[4]) + 2;
            if (buf.length < end) break;
            s.data.buf = buf.slice(end);
            out += "STORED\r\n";
          } else {
            s.data.buf = buf.slice(nl + 2);
            out += words[0] === "get" ? "END\r\n" : "ERROR\r\n";
          }
        }
        if (out === "") return;
        const due = first + hold(now - first);
        if (due === Infinity) return;
        if (due <= now && s.data.held.length === 0) {
          s.write(out);
          return;
        }
        s.data.held.push({ due, out });
        const t = setTimeout(() => {
          timers.delete(t);
          release(s);
        }, Math.max(0, due - now) + 1);
        timers.add(t);
      },
      error() {},
    },
  });
  return {
    port: server.port,
    stop() {
      for (const t of timers) clearTimeout(t);
      server.stop(true);
    },
  };
}

interface Report {
  ops: number;
  errors: number;
  unanswered?: number;
  p50_us: number;
  p90_us: number;
  p99_us: number;
  max_us: number;
}

async function run(port: number, args: string[], during?: (pid: number) => Promise<void>): Promise<Report> {
  const p = Bun.spawn([mcload, "-s", `127.0.0.1:${port}`, "-j", ...args], { stdout: "pipe", stderr: "pipe" });
  if (during) await during(p.pid);
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  expect(await p.exited, err).toBe(0);
  return JSON.parse(out.trim().split("\n").pop()!) as Report;
}

test("fixed rate: requests a stall at the end of the window holds up count in the latencies", async () => {
  // Answers to what arrives from 250 ms on wait until 1200 ms; the window is the first 600 ms,
  // so more than half of its requests wait 600 ms or more. Counting only the answers that
  // arrive inside the window (as mcload did) leaves every one of them out.
  const server = scriptedServer((ms) => (ms >= 250 ? 1200 : 0));
  try {
    const r = await run(server.port, ["-c", "4", "-k", "100", "-W", "0", "-D", "0.6", "-R", "1000"]);
    expect(r.errors).toBe(0);
    expect(r.p90_us).toBeGreaterThanOrEqual(500_000);
    expect(r.max_us).toBeGreaterThanOrEqual(500_000);
    expect(r.unanswered ?? 0).toBe(0);
  } finally {
    server.stop();
  }
}, 30_000);

test("closed loop: answers that arrive after the window still count their requests' latency", async () => {
  const server = scriptedServer((ms) => (ms >= 250 ? 1200 : 0));
  try {
    const r = await run(server.port, ["-c", "4", "-k", "100", "-W", "0", "-D", "0.6", "-d", "2"]);
    expect(r.errors).toBe(0);
    // The 8 requests in flight at 250 ms are sent in the window and answered at 1200 ms.
    expect(r.max_us).toBeGreaterThanOrEqual(500_000);
    expect(r.unanswered ?? 0).toBe(0);
  } finally {
    server.stop();
  }
}, 30_000);

test("fixed rate: a server that stops answering ends the run 5 s after the window, every request counted", async () => {
  const server = scriptedServer((ms) => (ms >= 200 ? Infinity : 0));
  try {
    const started = performance.now();
    const r = await run(server.port, ["-c", "2", "-k", "100", "-W", "0", "-D", "0.4", "-R", "500"]);
    expect(performance.now() - started).toBeLessThan(20_000);
    // ~100 of the window's ~200 requests were never answered; they count, with >= 5 s waits.
    expect(r.p90_us).toBeGreaterThanOrEqual(5_000_000);
    expect(r.unanswered ?? 0).toBeGreaterThan(20);
  } finally {
    server.stop();
  }
}, 30_000);

test("fixed rate: worker threads sleep with a 1 ns timer slack (the default 50 µs makes every send late)", async () => {
  const server = scriptedServer(() => 0);
  try {
    const slacks: number[] = [];
    await run(server.port, ["-c", "4", "-k", "100", "-W", "0.8", "-D", "0.2", "-R", "1000"], async (pid) => {
      for (let i = 0; i < 100 && slacks.length < 2; i++) {
        await Bun.sleep(20);
        slacks.length = 0;
        let tids: string[] = [];
        try {
          tids = readdirSync(`/proc/${pid}/task`);
        } catch {
          break;
        }
        for (const tid of tids) {
          try {
            slacks.push(Number(readFileSync(`/proc/${tid}/timerslack_ns`, "utf8")));
          } catch {}
        }
      }
    });
    // The main thread keeps the default; the worker thread sleeps with 1 ns.
    expect(slacks.length).toBe(2);
    expect(slacks).toContain(1);
  } finally {
    server.stop();
  }
}, 30_000);
