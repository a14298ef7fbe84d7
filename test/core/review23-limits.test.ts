/**
 * fileLimit / raiseFileLimit (RLIMIT_NOFILE). The limit is the process's, so everything that
 * changes it runs in a child process. Bun raises the soft limit to the hard one at start, so a
 * child first lowers its soft limit through the native export to have something to raise.
 * Raising a hard limit needs CAP_SYS_RESOURCE, which root here lacks: that branch is pinned
 * against a kernel given to raiseFileLimitOn, and the real one only where no privilege helps
 * (past fs.nr_open).
 */
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { InvalidArgumentError, SystemError, fileLimit, raiseFileLimit } from "../../src/index.ts";
import { raiseFileLimitOn, type FileLimit } from "../../src/core/limits.ts";

const root = join(import.meta.dir, "..", "..");

/** Runs `body` (a script's statements, `lower(soft)` and `limit()` in scope) in a child; its JSON output. */
function inChild(body: string): unknown {
  const script = `
    import { native } from ${JSON.stringify(join(root, "src/core/native.ts"))};
    import { fileLimit, raiseFileLimit } from ${JSON.stringify(join(root, "src/index.ts"))};
    const limit = () => fileLimit();
    const lower = (soft) => { const rc = native().shoal_set_nofile_limit(soft, fileLimit().hard); if (rc !== 0) throw new Error("lower: " + rc); };
    const out = [];
    const say = (v) => out.push(v);
    ${body}
    console.log(JSON.stringify(out));`;
  const r = Bun.spawnSync({ cmd: [process.execPath, "-e", script], cwd: root, stdout: "pipe", stderr: "pipe", timeout: 60_000 });
  expect(r.exitCode, r.stderr.toString()).toBe(0);
  return JSON.parse(r.stdout.toString().trim().split("\n").pop()!);
}

test("fileLimit reads what /proc/self/limits says", () => {
  const line = readFileSync("/proc/self/limits", "latin1").split("\n").find((l) => l.startsWith("Max open files"))!;
  const [soft, hard] = line.split(/\s+/).slice(3, 5).map((v) => (v === "unlimited" ? Infinity : Number(v)));
  expect(fileLimit()).toEqual({ soft: soft!, hard: hard! });
});

test("raiseFileLimit raises the soft limit to what is wanted within the hard one, and never lowers either", () => {
  const [before, raised, kept, capped] = inChild(`
    lower(100);
    say(limit());
    say(raiseFileLimit(200, { wanted: 300 }));
    // Already above both: untouched (stock would set it to 10).
    say(raiseFileLimit(10, { wanted: 20 }));
    // Wanted past the hard limit, required within it: as far as the hard limit.
    lower(100);
    say(raiseFileLimit(200, { wanted: limit().hard + 1_000_000_000 }));
  `) as FileLimit[];
  const hard = before!.hard;
  expect(before).toEqual({ soft: 100, hard });
  expect(raised).toEqual({ soft: 300, hard });
  expect(kept).toEqual({ soft: 300, hard });
  expect(capped).toEqual({ soft: hard, hard });
});

test("a required count the hard limit cannot reach is a SystemError (EPERM), and the limit is left as it was", () => {
  const nrOpen = Number(readFileSync("/proc/sys/fs/nr_open", "latin1").trim());
  const [before, err, after] = inChild(`
    lower(100);
    say(limit());
    try { raiseFileLimit(${nrOpen + 1}); say("no error"); }
    catch (e) { say({ name: e.name, code: e.code, message: e.message }); }
    say(limit());
  `) as [FileLimit, { name: string; code: string; message: string }, FileLimit];
  expect(err).toMatchObject({ name: "SystemError", code: "EPERM" });
  expect(err.message).toContain("setrlimit(RLIMIT_NOFILE)");
  expect(after).toEqual(before);
});

test("past the hard limit, where it may be raised (CAP_SYS_RESOURCE): both limits go to what is wanted, else to what is required", () => {
  /** A kernel with limit `lim` that lets the hard limit rise up to `ceiling` (fs.nr_open, or privilege). */
  const kernel = (lim: FileLimit, ceiling: number) => {
    const calls: [number, number][] = [];
    return {
      calls,
      get: () => ({ ...lim }),
      set(soft: number, hard: number): number {
        calls.push([soft, hard]);
        if (soft > hard) return -22;
        if (hard > lim.hard && hard > ceiling) return -1;
        lim = { soft, hard };
        return 0;
      },
    };
  };
  const roomy = kernel({ soft: 64, hard: 64 }, 1 << 20);
  expect(raiseFileLimitOn(roomy, 4096, { wanted: 4200 })).toEqual({ soft: 4200, hard: 4200 });
  // Room for what is required only: that much.
  const tight = kernel({ soft: 64, hard: 64 }, 4100);
  expect(raiseFileLimitOn(tight, 4096, { wanted: 4200 })).toEqual({ soft: 4096, hard: 4096 });
  expect(tight.calls).toEqual([
    [4200, 4200],
    [4096, 4096],
  ]);
  // Required within the hard limit, wanted past it and refused: the soft limit up to the hard one.
  const within = kernel({ soft: 64, hard: 5000 }, 0);
  expect(raiseFileLimitOn(within, 4096, { wanted: 6000 })).toEqual({ soft: 5000, hard: 5000 });
  // No room: EPERM, nothing changed.
  const none = kernel({ soft: 64, hard: 64 }, 0);
  let err: unknown;
  try {
    raiseFileLimitOn(none, 4096, { wanted: 4200 });
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(SystemError);
  expect((err as SystemError).code).toBe("EPERM");
  expect(none.get()).toEqual({ soft: 64, hard: 64 });
});

test("counts that are not non-negative integers are refused before anything is set", () => {
  for (const bad of [-1, 1.5, Number.NaN, Infinity, "10" as unknown as number]) {
    expect(() => raiseFileLimit(bad)).toThrow(InvalidArgumentError);
    expect(() => raiseFileLimit(10, { wanted: bad })).toThrow(InvalidArgumentError);
  }
});
