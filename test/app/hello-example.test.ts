// examples/hello: SECONDS given as 0 is a duration like any other, not "no SECONDS".
import { expect, test } from "bun:test";

test('SECONDS "0" (or one that rounds to 0) stops at once; it ran until a signal', () => {
  for (const arg of ["0", "0.0", "1e-400"]) {
    // Killed after 10 s if it took the argument for "until a signal".
    const run = Bun.spawnSync([process.execPath, "examples/hello/main.ts", arg], { timeout: 10_000 });
    expect({ arg, code: run.exitCode }).toEqual({ arg, code: 0 });
    expect(run.stdout.toString()).toContain("hello: stopped");
  }
}, 60_000);
