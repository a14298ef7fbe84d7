/**
 * Options objects name only options the call takes: a misspelt one (`timeout` for `timeoutMs`,
 * `reuseport`) was silently ignored, leaving a connect without its timeout or a listener
 * without the setting asked for. Each call refuses it before doing anything, naming the option
 * meant where it can tell.
 */
import { expect, test } from "bun:test";
import { bindUdp, connect, listen, serve } from "../../src/net/api.ts";
import { InvalidArgumentError } from "../../src/core/errors.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import { expectQuiescent } from "./conformance/harness.ts";
import { readdirSync } from "node:fs";

const fds = () => readdirSync("/proc/self/fd").length;

function refusal(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(InvalidArgumentError);
    return (e as Error).message;
  }
  throw new Error("not refused");
}

async function asyncRefusal(p: Promise<unknown>): Promise<string> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(InvalidArgumentError);
  return (e as Error).message;
}

test("listen, serve, connect and bindUdp refuse an unknown option, suggesting the one meant, and open nothing", async () => {
  // The shard's ring and the stack's buffers first: they stay for the process.
  await listen("127.0.0.1:0").close();
  const before = fds();
  expect(refusal(() => listen("127.0.0.1:0", { reuseport: false } as never))).toBe('listen: unknown option "reuseport" (did you mean reusePort?)');
  expect(refusal(() => listen("127.0.0.1:0", { maxConnection: 5 } as never))).toBe('listen: unknown option "maxConnection" (did you mean maxConnections?)');
  expect(refusal(() => listen("127.0.0.1:0", { idleTimeout: 5 } as never))).toBe('listen: unknown option "idleTimeout" (did you mean idleTimeoutMs?)');
  // A connect option is not a listen one; one like none of them gets the list.
  expect(refusal(() => listen("127.0.0.1:0", { localAddress: "127.0.0.1:0" } as never))).toStartWith('listen: unknown option "localAddress" (known: noDelay, idleTimeoutMs,');
  expect(refusal(() => serve("127.0.0.1:0", () => {}, { onerror: () => {} } as never))).toBe('serve: unknown option "onerror" (did you mean onError?)');
  expect(await asyncRefusal(connect("127.0.0.1:1", { timeout: 100 } as never))).toBe('connect: unknown option "timeout" (did you mean timeoutMs?)');
  expect(await asyncRefusal(connect("127.0.0.1:1", { host: "x" } as never))).toStartWith('connect: unknown option "host" (known: ');
  expect(refusal(() => bindUdp("127.0.0.1:0", { maxQueue: 3 } as never))).toBe('bindUdp: unknown option "maxQueue" (did you mean maxQueued?)');
  expect(fds()).toBe(before);
});

test("a connection's and a listener's calls refuse unknown options too; known ones, undefined values and no options still work", async () => {
  const l = listen("127.0.0.1:0", { noDelay: true, backlog: undefined });
  const port = l.localAddress.family === "ipv4" ? l.localAddress.port : 0;
  const accepted = l.accept();
  const c = await connect(`127.0.0.1:${port}`, { timeoutMs: 1000, signal: undefined });
  const s = await accepted;
  expect(refusal(() => c.setKeepAlive(true, { idle: 5 } as never))).toBe('setKeepAlive: unknown option "idle" (did you mean idleS?)');
  expect(refusal(() => c.shutdownInput({ keep: true } as never))).toBe('shutdownInput: unknown option "keep" (did you mean keepReceived?)');
  c.setKeepAlive(true, { idleS: 5 });
  c.shutdownInput({ keepReceived: true });
  expect(refusal(() => l.close({ pending: true } as never))).toBe('close: unknown option "pending" (did you mean acceptPending?)');
  // The refused close closed nothing: the listener still accepts.
  const next = l.accept();
  const c2 = await connect(`127.0.0.1:${port}`);
  (await next).reset();
  for (const x of [c, c2, s]) x.reset();
  await l.close({ acceptPending: false });

  const server = serve("127.0.0.1:0", async (conn) => void (await conn.input.read()), { maxConnections: 4 });
  expect(refusal(() => server.drain({ grace: 1 } as never))).toBe('drain: unknown option "grace" (did you mean graceMs?)');
  await server.drain({ graceMs: 1 });
  await expectQuiescent(posixStack());
});
