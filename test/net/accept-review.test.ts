// Accept errors of the posix listener that are not one peer's: the socket itself fails (made
// by putting another file in the listener's descriptor slot with dup2 before its accept reaches
// the kernel). Accepting pauses, then tries again, as after EMFILE: it was re-armed every loop
// turn (about 50,000 failed accepts in 500 ms on an idle shard).
import { expect, test } from "bun:test";
import { dlopen, FFIType } from "bun:ffi";
import { closeSync, openSync, readdirSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { join } from "node:path";
import { parseAddress } from "../../src/net/address.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import { SOCK_STREAM, localAddressOf, openSocket } from "../../src/net/posix/sys.ts";
import type { Listener } from "../../src/net/types.ts";
import { expectQuiescent, until } from "./conformance/harness.ts";
import { acceptQueueLength } from "./fixtures/accept-queue.ts";

const stack = posixStack();
const libc = dlopen("libc.so.6", { dup2: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 } });
const ECANCELED = 125;

/** Counts the listener's accept completions that failed (not a cancel). */
function countFailures(l: Listener): { n: number } {
  const c = l as unknown as { complete(res: number, flags: number): void };
  const complete = c.complete.bind(c);
  const count = { n: 0 };
  c.complete = (res: number, flags: number) => {
    if (res < 0 && res !== -ECANCELED) count.n++;
    complete(res, flags);
  };
  return count;
}

const fdOf = (l: Listener) => (l as unknown as { fd: number }).fd;
const openFds = () => readdirSync("/proc/self/fd").length;

for (const [what, breakWith] of [
  ["ENOTSOCK: not a socket", () => openSync("/dev/null", "r")],
  ["EOPNOTSUPP: a socket that cannot accept", () => stack.bindUdp("127.0.0.1:0")],
] as const) {
  test(`an accept that fails at once, every time (${what}): accepting pauses between tries, and serves once the socket works again`, async () => {
    // Warm up the stack's own descriptors before counting.
    await stack.listen("127.0.0.1:0").close();
    const fds = openFds();
    const l = stack.listen("127.0.0.1:0");
    const failures = countFailures(l);
    // Same tick as the listen: the first accept is still queued, not yet in the kernel.
    const broken = breakWith();
    const brokenFd = typeof broken === "number" ? broken : (broken as unknown as { fd: number }).fd;
    expect(libc.symbols.dup2(brokenFd, fdOf(l))).toBeGreaterThanOrEqual(0);
    await until(() => failures.n >= 1, 10_000, "the first failed accept");
    const from = performance.now();
    const before = failures.n;
    await Bun.sleep(300);
    const tries = failures.n - before;
    const elapsed = performance.now() - from;
    // A pause of 50 ms between tries (bound with margin: timers never fire early by much);
    // the old code tried once per loop turn.
    expect(tries).toBeLessThanOrEqual(2 + elapsed / 25);
    expect(tries).toBeGreaterThanOrEqual(1);
    // A working listening socket in the slot again: accepting resumes after the pause.
    const good = openSocket("listen", parseAddress("127.0.0.1:0"), SOCK_STREAM, 0, 16);
    const address = localAddressOf(good);
    expect(libc.symbols.dup2(good, fdOf(l))).toBeGreaterThanOrEqual(0);
    closeSync(good);
    const accepted = l.accept();
    const client = await stack.connect(address);
    const server = await accepted;
    await client.output.write("ping");
    expect(new TextDecoder().decode((await server.input.readExactly(4))!)).toBe("ping");
    await client.close();
    await server.close();
    await l.close();
    if (typeof broken === "number") closeSync(broken);
    else await broken.close();
    await expectQuiescent(stack);
    await until(() => openFds() === fds, 5000, "every descriptor to be closed");
  }, 60_000);
}

test("out of descriptors (EMFILE): peers wait in the backlog, accepting tries again every 50 ms, not every turn, and serves them all once descriptors are free; nothing leaks", async () => {
  const count = 10;
  const fixture = join(import.meta.dir, "fixtures", "accept-emfile.ts");
  const child = Bun.spawn(["bash", "-c", `ulimit -n 48 && exec "$0" "$1" "$2"`, process.execPath, fixture, String(count)], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: "inherit",
  });
  const reader = child.stdout.getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += new TextDecoder().decode(value);
  }
  const port = Number(/PORT (\d+)/.exec(out)?.[1]);
  expect(port).toBeGreaterThan(0);
  const clients = Array.from(
    { length: count },
    () =>
      new Promise<string>((resolve) => {
        let got = "";
        const s = netConnect({ port, host: "127.0.0.1" }, () => s.write("hi\n"));
        s.setEncoding("latin1");
        s.on("data", (d: string) => (got += d));
        s.on("error", (e: NodeJS.ErrnoException) => resolve(`error ${e.code}`));
        s.on("close", () => resolve(got));
      }),
  );
  await until(() => acceptQueueLength(port) === count, 20_000, "every client to wait in the backlog");
  // Long enough for the loop's heap check (every 500 ms) to run out of descriptors too: it read
  // process.memoryUsage(), which threw there and stopped the shard's loop for good.
  await Bun.sleep(1200);
  child.stdin.write("free\n");
  await child.stdin.end();
  expect(await Promise.all(clients)).toEqual(Array.from({ length: count }, () => "ok\n"));
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    out += new TextDecoder().decode(value);
  }
  expect(await child.exited).toBe(0);
  const r = JSON.parse(out.split("\n").find((line) => line.startsWith("{"))!);
  expect(r.served).toBe(count);
  expect(r.failures).toBeGreaterThanOrEqual(1);
  expect(r.failures).toBeLessThanOrEqual(2 + r.failingMs / 25);
  expect(r.fdsAfter).toBe(r.fdsBefore);
}, 60_000);

test("a connection waiting in the accept queue is not timed out: accept() hands it out alive, and its idle time counts from then", async () => {
  const l = stack.listen("127.0.0.1:0", { idleTimeoutMs: 200 });
  const port = (l.localAddress as { port: number }).port;
  let got = "";
  let clientClosed = false;
  const client = netConnect({ port, host: "127.0.0.1" });
  client.setEncoding("latin1");
  client.on("data", (d: string) => (got += d));
  client.on("error", () => {});
  client.on("close", () => (clientClosed = true));
  // Three idle timeouts' worth in the queue, nobody accepting (it was reset there).
  await Bun.sleep(700);
  expect(clientClosed).toBe(false);
  const c = await l.accept();
  expect(c.closed).toBe(false);
  client.write("ping\n");
  const v = await c.input.read();
  expect(new TextDecoder().decode(v!)).toBe("ping\n");
  await c.output.write("pong\n");
  await until(() => got === "pong\n", 5_000, "the answer");
  // Silent from here on: the idle timeout still ends it.
  await until(() => clientClosed, 5_000, "the idle timeout to close the connection");
  await c.close().catch(() => {});
  await l.close();
  await expectQuiescent(stack);
}, 30_000);
