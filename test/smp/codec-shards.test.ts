/**
 * Unusual values crossing between real shards (each run is its own app process): containers
 * changed by getters while encoded, large bigints, detached buffers.
 */
import { expect, test } from "bun:test";
import { runApp, smpArgs } from "./helpers.ts";

test("across shards: mutated containers do not shift the arguments after them; big bigints cross; detached buffers fail clearly", async () => {
  const run = await runApp("./fixtures/codec-shards.ts", smpArgs(2), { timeoutMs: 60_000 });
  if (run.code !== 0 || run.result === undefined) console.log(run.stdout, run.stderr);
  expect(run.code).toBe(0);
  const r = run.result;
  expect(r.described).toEqual([{ map: ["a", "b"] }, "after-map", { set: 1 }, "after-set", 42]);
  expect(r.bigint).toEqual({ same: true, negatedOk: true, tag: "tag" });
  // The call is refused at the call site with a path, not a bare TypeError.
  expect(r.detachedArg.class).toBe("EncodeError");
  expect(r.detachedArg.message).toContain("argument 2 at .view");
  expect(r.detachedArg.message).toContain("detached");
  // The thrown error keeps its class and other properties; only the detached view stays behind.
  expect(r.thrown).toEqual({ class: "RangeError", message: "bad range", offset: 3, hasView: false });
}, 70_000);
