/**
 * examples/memcached at start under a low descriptor limit, against stock memcached 1.6.18 side
 * by side (both under the same `ulimit -n`, in child processes). Stock sets RLIMIT_NOFILE to -c
 * (soft and hard, memcached.c main()) once its options are checked and before it switches user,
 * and if it cannot (root here lacks CAP_SYS_RESOURCE, so no hard limit can be raised) it prints
 * its line and exits 71 (EX_OSERR). Ours needs -c too, asks for more where allowed (its shards'
 * rings, eventfds and sockets count against the same limit) and never lowers a limit.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { accepts, freePort } from "./lib/harness.ts";

const root = join(import.meta.dir, "..", "..");
const bun = join(root, "node_modules", ".bin", "bun");
const ours = join(root, "examples", "memcached", "main.ts");
const LINE = "failed to set rlimit for open files. Try starting as root or requesting smaller maxconns value.";

type Which = "stock" | "ours";

interface Outcome {
  /** "listening", or the exit code. */
  code: "listening" | number;
  /** stderr of a process that exited (a listening one's is not compared). */
  stderr: string;
  /** RLIMIT_NOFILE of a listening process (from /proc/<pid>/limits). */
  limit?: { soft: number; hard: number };
}

/** Runs `which` under `ulimit` (a bash command, e.g. "ulimit -n 64") with `args`; stops it once it listens. */
async function outcome(which: Which, ulimit: string, args: string[], user = "root"): Promise<Outcome> {
  const port = await freePort();
  const cmd = which === "stock" ? ["/usr/bin/memcached"] : [bun, ours];
  const all = [...cmd, "-u", user, "-l", "127.0.0.1", "-p", String(port), "-U", "0", "-t", "1", ...args];
  const child = Bun.spawn(["bash", "-c", `${ulimit} && exec "$@"`, "bash", ...all], { cwd: root, stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  const stderr = new Response(child.stderr).text();
  try {
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && child.exitCode === null && child.signalCode === null) {
      if (await accepts(port)) {
        const line = readFileSync(`/proc/${child.pid}/limits`, "latin1").split("\n").find((l) => l.startsWith("Max open files"))!;
        const [soft, hard] = line.split(/\s+/).slice(3, 5).map(Number);
        return { code: "listening", stderr: "", limit: { soft: soft!, hard: hard! } };
      }
      await Bun.sleep(20);
    }
    const code = await Promise.race([child.exited, Bun.sleep(30_000).then(() => -1)]);
    return { code, stderr: (await stderr).trim() };
  } finally {
    child.kill("SIGKILL");
    await child.exited;
  }
}

/** Both outcomes, stock's run first. */
async function both(ulimit: string, args: string[], user = "root"): Promise<{ stock: Outcome; ours: Outcome }> {
  return { stock: await outcome("stock", ulimit, args, user), ours: await outcome("ours", ulimit, args, user) };
}

const bare = (o: Outcome) => ({ code: o.code, stderr: o.stderr });

describe("-c above a hard limit that cannot be raised: stock's line and exit 71, not a server that runs out of descriptors later", () => {
  test("-c 4096 under ulimit -n 64", async () => {
    const { stock, ours } = await both("ulimit -n 64", ["-c", "4096"]);
    expect(bare(stock)).toEqual({ code: 71, stderr: LINE });
    // Ours listened (and stalled once its 64 descriptors were used).
    expect(bare(ours)).toEqual(bare(stock));
  }, 120_000);

  test("the default -c (1024) under ulimit -n 512", async () => {
    const { stock, ours } = await both("ulimit -n 512", []);
    expect(bare(stock)).toEqual({ code: 71, stderr: LINE });
    expect(bare(ours)).toEqual(bare(stock));
  }, 120_000);

  test("-c 4096 under ulimit -Sn 64 -Hn 1000 (the soft limit alone may rise, not far enough)", async () => {
    const { stock, ours } = await both("ulimit -Sn 64 && ulimit -Hn 1000", ["-c", "4096"]);
    expect(bare(stock)).toEqual({ code: 71, stderr: LINE });
    expect(bare(ours)).toEqual(bare(stock));
  }, 120_000);
});

describe("in stock's order: the limit after the options are checked, before the user switch, SASL and listening", () => {
  test("-c 4096 with -u naming no user: the limit's line (stock fails it first), not can't find the user (67)", async () => {
    const { stock, ours } = await both("ulimit -n 64", ["-c", "4096"], "nosuchuser");
    expect(bare(stock)).toEqual({ code: 71, stderr: LINE });
    expect(bare(ours)).toEqual(bare(stock));
  }, 120_000);

  test("-c 4096 -S: the limit's line, not SASL's exit 1", async () => {
    const { stock, ours } = await both("ulimit -n 64", ["-c", "4096", "-S"]);
    expect(bare(stock)).toEqual({ code: 71, stderr: LINE });
    expect(bare(ours)).toEqual(bare(stock));
  }, 120_000);

  test("-c 4096 -p -5: the limit's line, not the failed listen's", async () => {
    const { stock, ours } = await both("ulimit -n 64", ["-c", "4096", "-p", "-5"]);
    expect(bare(stock)).toEqual({ code: 71, stderr: LINE });
    expect(bare(ours)).toEqual(bare(stock));
  }, 120_000);

  test("-c 4096 -p 99999: the bad port first (exit 64), as stock checks it before the limit", async () => {
    const { stock, ours } = await both("ulimit -n 64", ["-c", "4096", "-p", "99999"]);
    expect(bare(stock)).toEqual({ code: 64, stderr: "ERROR: Invalid port number 99999." });
    expect(bare(ours)).toEqual(bare(stock));
  }, 120_000);

  test("without the limit's failure the later checks still fail as before: -p -5 (71) and -u nosuchuser (67)", async () => {
    const port = await both("ulimit -n 64", ["-c", "64", "-p", "-5"]);
    expect(port.stock.code).toBe(71);
    expect(port.ours.code).toBe(71);
    expect(port.ours.stderr).toContain("failed to listen on TCP port -5");
    const user = await both("ulimit -n 64", ["-c", "64"], "nosuchuser");
    expect(bare(user.stock)).toEqual({ code: 67, stderr: "can't find the user nosuchuser to switch to" });
    expect(bare(user.ours)).toEqual(bare(user.stock));
  }, 120_000);
});

describe("-c within the hard limit: both start; ours keeps the limits (stock sets both to -c)", () => {
  test("-c 64 under ulimit -n 64", async () => {
    const { stock, ours } = await both("ulimit -n 64", ["-c", "64"]);
    expect(stock).toEqual({ code: "listening", stderr: "", limit: { soft: 64, hard: 64 } });
    expect(ours).toEqual(stock);
  }, 120_000);

  test("-c 4096 under ulimit -Sn 64 -Hn 8192: ours' soft limit at least 4096 plus its own, the hard one not lowered", async () => {
    const { stock, ours } = await both("ulimit -Sn 64 && ulimit -Hn 8192", ["-c", "4096"]);
    expect(stock).toEqual({ code: "listening", stderr: "", limit: { soft: 4096, hard: 4096 } });
    expect(ours.code).toBe("listening");
    expect(ours.limit!.hard).toBe(8192);
    expect(ours.limit!.soft).toBeGreaterThan(4096);
  }, 120_000);

  test("-c 100 under ulimit -n 2000: ours leaves 2000 (stock lowers both to 100)", async () => {
    const { stock, ours } = await both("ulimit -n 2000", ["-c", "100"]);
    expect(stock).toEqual({ code: "listening", stderr: "", limit: { soft: 100, hard: 100 } });
    expect(ours).toEqual({ code: "listening", stderr: "", limit: { soft: 2000, hard: 2000 } });
  }, 120_000);
});
