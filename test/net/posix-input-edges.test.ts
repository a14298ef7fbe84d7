// StreamInput edges on the posix stack: a consume() parser's view stays valid for its whole
// call, even when it shuts the input down or resets its connection before it is done looking;
// a receive() handler may return any thenable (one whose then() throws, one that settles at once).
import { expect, test } from "bun:test";
import { configureNet } from "../../src/net/api.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import { needBytes, type Connection } from "../../src/net/types.ts";
import { connectedPair, rejection, until } from "./conformance/harness.ts";
import { ClosedError } from "../../src/core/errors.ts";

const stack = posixStack();
const text = (v: Uint8Array) => new TextDecoder().decode(v);

const pair = () => connectedPair(stack);

async function poisoned(body: () => Promise<void>): Promise<void> {
  configureNet({ poisonBuffers: true });
  try {
    await body();
  } finally {
    configureNet({ poisonBuffers: false });
  }
}

test("a consume() parser that shuts the input down still sees its bytes until it returns; they go back after", async () => {
  await poisoned(async () => {
    const { client, server, done } = await pair();
    await client.output.write("BAD REQUEST\n");
    await until(() => server.input.buffered === 12);
    let during = "";
    let view: Uint8Array | undefined;
    const r = await server.input.consume((v) => {
      view = v;
      server.shutdownInput();
      during = text(v); // e.g. the error message quotes the request
      return v.length;
    });
    expect(r).toBe(false);
    expect(during).toBe("BAD REQUEST\n");
    // Given up once the call returned: poisoned.
    expect(view![0]).toBe(0xde);
    expect(await server.input.read()).toBeNull();
    await done();
  });
});

test("a consume() parser that resets its connection while looking at merged bytes still sees them until it returns", async () => {
  await poisoned(async () => {
    const { client, server, done } = await pair();
    const big = 20000; // more than one receive buffer: consume merges it into the input's own memory
    let during = "";
    const parsing = server.input.consume((v) => {
      const nl = v.indexOf(10);
      if (nl < 0) return needBytes(v.length + 1);
      server.reset();
      during = text(v.subarray(0, 4)) + text(v.subarray(nl - 4, nl + 1));
      return nl + 1;
    });
    await client.output.write(`HEAD${"x".repeat(big)}TAIL\n`);
    expect(await rejection(parsing)).toBeInstanceOf(ClosedError);
    expect(during).toBe("HEADTAIL\n");
    await done();
  });
});

/** Two chunks buffered on the server, each too large to be copied behind the other. */
async function twoChunks(client: Connection, server: Connection): Promise<void> {
  await client.output.write("a".repeat(5000));
  await until(() => server.input.buffered === 5000);
  await client.output.write("b".repeat(5000));
  await until(() => server.input.buffered === 10000);
}

test("receive(): a handler returning a thenable that settles at once gets the chunks buffered behind at once too", async () => {
  // Settled inside the delivery, the hold ended where no delivery could start: the second
  // chunk waited for the next arrival (a pipelined request left unanswered until then).
  const { client, server, done } = await pair();
  await twoChunks(client, server);
  let got = "";
  const receiving = server.input.receive((v) => {
    got += text(v);
    return { then: (resolve: (x?: unknown) => void) => resolve() } as unknown as Promise<void>;
  });
  await until(() => got.length === 10000);
  expect(got).toBe("a".repeat(5000) + "b".repeat(5000));
  await client.output.close();
  expect(await receiving).toBe(false);
  await done();
});

test("receive(): a handler returning a thenable whose then() throws ends the call with that error; the connection stays usable", async () => {
  // then() threw out of the delivery (out of receive() itself, or out of the completion that
  // pushed the chunk) and the hold never ended: the call never settled, its chunk stayed held.
  const { client, server, done } = await pair();
  await twoChunks(client, server);
  const bad = new Error("then() is broken");
  let calls = 0;
  let receiving: Promise<boolean> | undefined;
  expect(() => {
    receiving = server.input.receive(() => {
      calls++;
      return { then: () => { throw bad; } } as unknown as Promise<void>;
    });
  }).not.toThrow();
  expect(await rejection(receiving!)).toBe(bad);
  expect(calls).toBe(1);
  // The rest stays readable.
  expect(server.input.buffered).toBe(5000);
  expect(text((await server.input.read())!)).toBe("b".repeat(5000));
  await done();
});
