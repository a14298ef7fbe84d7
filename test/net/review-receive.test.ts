// Review tests: push-mode receive() calls that a handler ends and replaces from inside itself.
import { expect, test } from "bun:test";
import { AbortError } from "../../src/core/errors.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import type { Connection } from "../../src/net/types.ts";
import { expectQuiescent, rejection, until } from "./conformance/harness.ts";

const stack = posixStack();
const text = (v: Uint8Array) => new TextDecoder().decode(v);

async function pair(): Promise<{ client: Connection; server: Connection; done: () => Promise<void> }> {
  const l = stack.listen("127.0.0.1:0");
  const accepted = l.accept();
  const client = await stack.connect(l.localAddress);
  const server = await accepted;
  return {
    client,
    server,
    done: async () => {
      await client.close();
      await server.close();
      await l.close();
      await expectQuiescent(stack);
    },
  };
}

test("a handler that ends its own receive(), starts a new one, then throws: the throw does not end the new call", async () => {
  // The old handler's throw was taken as the new call's failure: the new receive() rejected
  // with it and never saw a byte.
  const { client, server, done } = await pair();
  await client.output.write("first");
  await until(() => server.input.buffered === 5);
  const ac = new AbortController();
  const got: string[] = [];
  let second: Promise<boolean> | undefined;
  const first = server.input.receive(
    (v) => {
      got.push(`1:${text(v)}`);
      ac.abort();
      second = server.input.receive((w) => {
        got.push(`2:${text(w)}`);
      });
      throw new Error("the old handler's failure concerns its own, ended call");
    },
    { signal: ac.signal },
  );
  expect(await rejection(first)).toBeInstanceOf(AbortError);
  let outcome: unknown = "pending";
  second!.then(
    (v) => (outcome = v),
    (e) => (outcome = e),
  );
  await client.output.write("second");
  await until(() => got.length === 2 || outcome !== "pending");
  expect(got).toEqual(["1:first", "2:second"]);
  await client.output.close();
  expect(await second).toBe(false);
  await done();
});

test("receiveRanges({ lookahead }) whose handler replaces it with a plain receive(): the lookahead is not carried over", async () => {
  // The lookahead was installed after the first delivery, on whichever call was running by
  // then: the replacement receive() got the ended call's lookahead (and deferred deliveries).
  const { client, server, done } = await pair();
  await client.output.write("first");
  await until(() => server.input.buffered === 5);
  const ac = new AbortController();
  const looked: string[] = [];
  const got: string[] = [];
  let second: Promise<boolean> | undefined;
  const first = server.input.receiveRanges(
    (buf, start, end) => {
      got.push(`1:${text(buf.subarray(start, end))}`);
      ac.abort();
      second = server.input.receive((w) => {
        got.push(`2:${text(w)}`);
      });
    },
    { signal: ac.signal, lookahead: (buf, start, end) => void looked.push(text(buf.subarray(start, end))) },
  );
  expect(await rejection(first)).toBeInstanceOf(AbortError);
  await client.output.write("second");
  await until(() => got.length === 2);
  expect(got).toEqual(["1:first", "2:second"]);
  expect(looked).toEqual([]);
  await client.output.close();
  expect(await second).toBe(false);
  await done();
});
