/**
 * memccapable (libmemcached-tools), memcached's own conformance tester, against our server:
 * every one of its 54 tests must pass, text and binary, with one shard and with several
 * (commands then cross shards). Stock memcached 1.6.18 is run first as a check of the tool.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { spawnSync } from "bun";
import { startOurs, startStock, type ServerProcess } from "./lib/harness.ts";

const running: ServerProcess[] = [];

afterAll(async () => {
  for (const s of running) await s.stop();
}, 30_000);

function memccapable(port: number): { passed: number; failed: string[]; out: string } {
  const r = spawnSync(["memccapable", "-h", "127.0.0.1", "-p", String(port), "-t", "5"], { stdout: "pipe", stderr: "pipe" });
  const out = r.stdout.toString() + r.stderr.toString();
  const passed = (out.match(/\[pass\]/g) ?? []).length;
  const failed = out.split("\n").filter((l) => /FAIL|Errno|tests failed/.test(l));
  return { passed, failed, out };
}

describe("memccapable", () => {
  test("stock memcached 1.6.18 passes all 54 (the tool works here)", async () => {
    const s = await startStock(["-t", "1"]);
    running.push(s);
    const r = memccapable(s.port);
    expect(r.failed).toEqual([]);
    expect(r.passed).toBe(54);
  }, 60_000);

  for (const shards of [1, 2, 3]) {
    test(`ours with ${shards} shard(s) passes all 54, text and binary`, async () => {
      const s = await startOurs(["-t", String(shards)]);
      running.push(s);
      const r = memccapable(s.port);
      if (r.failed.length > 0) console.log(r.out);
      expect(r.failed).toEqual([]);
      expect(r.passed).toBe(54);
      expect(r.out).toContain("All tests passed");
    }, 60_000);
  }
});
