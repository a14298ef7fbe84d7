/**
 * Errors and late replies across shards, each in its own app process: an error keeps the shard
 * it names across hops; oversized results, AggregateErrors and object-valued properties arrive
 * with their information; a reply published just before its shard exited settles its own call
 * and never another.
 */
import { describe, expect, test } from "bun:test";
import { runApp, smpArgs } from "./helpers.ts";

const FIXTURE = "./fixtures/errors.ts";

describe("errors across shards", () => {
  test("the shard an error names survives a relay (it became the middle shard)", async () => {
    const run = await runApp(FIXTURE, [...smpArgs(3), "--scenario", "relay"], { timeoutMs: 30_000 });
    expect(run.result).toBeDefined();
    const { thrown, gone } = run.result;
    // A built-in class arrives as itself (not a RemoteError), naming the shard it was thrown on.
    expect(thrown).toMatchObject({ class: "TypeError", name: "TypeError", message: "thrown on shard 2", shard: 2, remote: false });
    expect(gone).toMatchObject({ name: "ShardGoneError", shard: 2, gone: true });
  });

  test("oversized results stay MessageTooLargeError; AggregateError's errors, object properties cross; an own __proto__ key does not corrupt the message", async () => {
    const run = await runApp(FIXTURE, [...smpArgs(2), "--scenario", "info"], { timeoutMs: 30_000 });
    if (run.code !== 0) console.log(run.stdout, run.stderr);
    expect(run.code).toBe(0);
    const r = run.result;
    expect(r.bigResult).toMatchObject({ class: "MessageTooLargeError", code: "ERR_SMP_MESSAGE_TOO_LARGE", tooLarge: true });
    expect(r.bigResult.message).toContain('the result of handler "errors.big"');
    expect(r.aggregate).toMatchObject({ name: "AggregateError", errors: ["first failed", "second failed"], remote: true });
    expect(r.details).toMatchObject({ code: "E_VALID", details: { field: "port", min: 1 } });
    expect(r.protoKey).toMatchObject({ message: "with a __proto__ own key", after: "kept" });
    expect(r.afterwards).toBe("reply-from-shard-1");
  });
});

describe("releases while encoding", () => {
  test("a buffer released by a getter during the encoding of a call to its owner goes back after the call's record", async () => {
    const run = await runApp(FIXTURE, [...smpArgs(2), "--scenario", "getter-release"], { timeoutMs: 30_000 });
    if (run.code !== 0) console.log(run.stdout, run.stderr);
    expect(run.code).toBe(0);
    expect(run.result).toEqual({ echoed: 42, lent: 0, available: 4 });
  });
});

describe("late replies", () => {
  test("a reply published before its shard exited settles its own call, never the call that reuses the slot", async () => {
    const run = await runApp(FIXTURE, [...smpArgs(3), "--scenario", "late-reply"], { timeoutMs: 30_000 });
    expect(run.result).toBeDefined();
    const { first, second } = run.result;
    // Published before the exit, the reply counts, even when the notice that shard 1 is gone is
    // read first (it used to fail the call, then settle the next call, made to shard 2, with it).
    expect(first).toEqual({ resolved: "reply-from-shard-1" });
    expect(second).toBe("not made");
  });
});
