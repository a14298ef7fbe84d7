/**
 * invokeOnAll and mapReduce whose arguments cannot cross shards fail with an EncodeError before
 * anything runs: the calling shard's instance ran the method directly first (and kept its
 * effect) while every other shard refused it, so the caller saw "cannot cross shards" for a call
 * that had half happened.
 */
import { describe, expect, test } from "bun:test";
import { runApp, smpArgs } from "./helpers.ts";

describe("invokeOnAll with arguments that cannot cross", () => {
  test("fails with an EncodeError and runs on no shard, the calling one included (from shard 0 and from the last shard)", async () => {
    const run = await runApp("./fixtures/invoke-all.ts", smpArgs(3), { timeoutMs: 30_000 });
    expect(run.code).toBe(0);
    const expected = { all: "ERR_SMP_ENCODE", reduced: "ERR_SMP_ENCODE", counts: [0, 0, 0] };
    expect(run.result).toEqual({ fromZero: expected, fromLast: expected });
  });
});
