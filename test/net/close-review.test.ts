/**
 * The posix connection's send and close path under faults, on real sockets: the peer resets
 * during a flush, a linger or a zero-copy wait; a peer that never reads, then closes; close()
 * and reset() twice or from a write's callback; close() and shutdownOutput() racing; writev
 * pieces whose accessors misbehave; a thousand connections closing at once (fds, buffers).
 * No timing asserts: a close that waited for closeTimeoutMs (set far past the test's own
 * timeout) where it should not fails by the timeout.
 */
import { expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { ClosedError } from "../../src/core/errors.ts";
import { allocateAlignedBuffer } from "../../src/core/buffers.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import type { PosixConnection } from "../../src/net/posix/connection.ts";
import { SOL_SOCKET, setIntOption } from "../../src/net/posix/sys.ts";
import type { Connection, ConnectOptions, ListenOptions } from "../../src/net/types.ts";
import { expectQuiescent, readBytes, rejection, until } from "./conformance/harness.ts";

const SO_SNDBUF = 7;
const SO_RCVBUF = 8;
/** Longer than any test here may take: a close that waits for it fails by the test's timeout. */
const NEVER_MS = 120_000;
const stack = posixStack();

function fdCount(): number {
  return readdirSync("/proc/self/fd").length;
}

async function pair(opts: ListenOptions = {}, clientOpts: ConnectOptions = {}) {
  const l = stack.listen("127.0.0.1:0", opts);
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress, clientOpts);
  const srv = (await accepted) as PosixConnection;
  return { l, c, srv };
}

/** Starts the stack's lazily opened resources (ring, pools), so that fd counts compare. */
async function warm(): Promise<void> {
  const { l, c, srv } = await pair();
  await c.close();
  await srv.close();
  await l.close();
  await expectQuiescent(stack);
}

/**
 * A writer `c` (zero-copy sends, its send queue `sndbuf` bytes) whose reader `srv` has a small
 * window and does not read: most of a large write stays in the writer's queue, unacknowledged.
 */
async function slowReaderPair(sndbuf: number) {
  const l = stack.listen("127.0.0.1:0", { maxReadBuffered: 1 });
  setIntOption("setsockopt(SO_RCVBUF)", (l as unknown as { fd: number }).fd, SOL_SOCKET, SO_RCVBUF, 4096);
  const accepted = l.accept();
  const c = (await stack.connect(l.localAddress, { closeTimeoutMs: NEVER_MS })) as PosixConnection;
  setIntOption("setsockopt(SO_SNDBUF)", c.fd, SOL_SOCKET, SO_SNDBUF, sndbuf);
  return { l, c, srv: await accepted };
}

test("writev of pieces whose getter throws rejects with that error (it threw out of writev) and queues nothing", async () => {
  const { l, c, srv } = await pair();
  const pieces: unknown[] = ["a", "b"];
  Object.defineProperty(pieces, 1, {
    get() {
      throw new Error("boom");
    },
  });
  let outcome: unknown;
  try {
    outcome = await rejection(srv.output.writev(pieces as never));
  } catch (e) {
    outcome = ["thrown synchronously", e];
  }
  expect(outcome).toBeInstanceOf(Error);
  expect((outcome as Error).message).toBe("boom");
  expect(srv.output.buffered).toBe(0);
  // The output still works.
  await srv.output.write("ok");
  expect(new TextDecoder().decode(await readBytes(c, 2))).toBe("ok");
  await srv.close();
  await c.close();
  await l.close();
  await expectQuiescent(stack);
});

test("writev whose piece's getter resets the connection rejects with ClosedError (it queued the pieces on the failed output and never settled)", async () => {
  const { l, c, srv } = await pair({ writeHighWater: 1024 });
  const big = new Uint8Array(100_000);
  const pieces: unknown[] = [new Uint8Array(100), big, new Uint8Array(100_000)];
  Object.defineProperty(pieces, 1, {
    get() {
      if (!srv.closed) srv.reset();
      return big;
    },
  });
  const p = srv.output.writev(pieces as never);
  const outcome = await Promise.race([p.then(() => "resolved", (e: unknown) => e), Bun.sleep(3000).then(() => "never settled")]);
  expect(outcome).toBeInstanceOf(ClosedError);
  expect(srv.output.buffered).toBe(0);
  await srv.close();
  await c.close();
  await l.close();
  await expectQuiescent(stack);
});

test("writev whose getter releases an earlier piece's NativeBuffer rejects as a whole; nothing of it is sent", async () => {
  const { l, c, srv } = await pair();
  const nb = allocateAlignedBuffer(4096);
  nb.bytes.fill(0x41);
  const pieces: unknown[] = [nb, "tail"];
  Object.defineProperty(pieces, 1, {
    get() {
      if (!nb.isReleased) nb.release();
      return "tail";
    },
  });
  const e = await rejection(srv.output.writev(pieces as never));
  expect(e).toBeInstanceOf(ClosedError);
  expect(srv.output.buffered).toBe(0);
  expect(nb.pins).toBe(0);
  await srv.output.write("next");
  expect(new TextDecoder().decode(await readBytes(c, 4))).toBe("next");
  await srv.close();
  await c.close();
  await l.close();
  await expectQuiescent(stack);
});

test("close() then shutdownOutput() with bytes queued: both resolve once everything is sent (shutdownOutput rejected with ClosedError although the FIN went out), the peer reads it all, then end", async () => {
  const { l, c, srv } = await pair();
  void srv.output.write("last words");
  const closed = srv.close();
  const shut = srv.shutdownOutput().then(
    () => "resolved",
    (e: unknown) => e,
  );
  await closed;
  expect(await shut).toBe("resolved");
  expect(new TextDecoder().decode(await readBytes(c, 10))).toBe("last words");
  expect(await c.input.read()).toBeNull();
  await c.close();
  // The other order resolves too (it did before).
  const second = await pair();
  void second.srv.output.write("more words");
  const shut2 = second.srv.shutdownOutput();
  const closed2 = second.srv.close();
  await shut2;
  await closed2;
  expect(new TextDecoder().decode(await readBytes(second.c, 10))).toBe("more words");
  expect(await second.c.input.read()).toBeNull();
  await second.c.close();
  await second.l.close();
  await l.close();
  await expectQuiescent(stack);
});

test("shutdownOutput() behind close() still fails when the flush fails (the peer resets)", async () => {
  const { l, c, srv } = await pair({ closeTimeoutMs: NEVER_MS }, { maxReadBuffered: 1 });
  setIntOption("setsockopt(SO_SNDBUF)", srv.fd, SOL_SOCKET, SO_SNDBUF, 4096);
  void srv.output.write(new Uint8Array(4 << 20)).catch(() => {});
  const closed = srv.close();
  const shut = srv.shutdownOutput().then(
    () => "resolved",
    (e: unknown) => e,
  );
  await Bun.sleep(50);
  c.reset();
  await closed;
  expect(await shut).toBeInstanceOf(Error);
  await l.close();
  await expectQuiescent(stack);
}, 30_000);

test("the peer resets during close()'s flush: close() resolves, the fd and every buffer are released", async () => {
  await warm();
  const fds = fdCount();
  const { l, c, srv } = await pair({ closeTimeoutMs: NEVER_MS }, { maxReadBuffered: 1 });
  setIntOption("setsockopt(SO_SNDBUF)", srv.fd, SOL_SOCKET, SO_SNDBUF, 4096);
  const writing = srv.output.write(new Uint8Array(4 << 20)).then(
    () => "resolved",
    (e: unknown) => e,
  );
  await until(() => srv.output.buffered > 0 && stack.stats().sends > 0);
  const closing = srv.close();
  await Bun.sleep(50);
  c.reset();
  await closing;
  expect(await writing).toBeInstanceOf(Error);
  await l.close();
  await expectQuiescent(stack);
  await until(() => fdCount() <= fds, 5000, `fds back to ${fds} (now ${fdCount()})`);
}, 30_000);

test("the peer resets during the lingering close: close() resolves at once, not at closeTimeoutMs", async () => {
  const { l, c, srv } = await pair({ closeTimeoutMs: NEVER_MS }, { maxReadBuffered: 1 });
  setIntOption("setsockopt(SO_SNDBUF)", srv.fd, SOL_SOCKET, SO_SNDBUF, 1 << 20);
  await srv.output.write(new Uint8Array(256 * 1024));
  await srv.output.flush();
  let closed = false;
  const closing = srv.close().then(() => (closed = true));
  await Bun.sleep(100);
  expect(closed).toBe(false); // lingering: the peer has not read
  c.reset();
  await closing;
  await l.close();
  await expectQuiescent(stack);
}, 30_000);

test("the peer resets while close() waits for a zero-copy send's notification: close() resolves, the pages come back", async () => {
  const { l, c, srv } = await slowReaderPair(1 << 20);
  const nb = allocateAlignedBuffer(128 * 1024);
  const before = stack.stats().sendsZeroCopy;
  void c.output.write(nb).catch(() => {});
  nb.release();
  await until(() => stack.stats().sendsZeroCopy > before && c.output.buffered === 0);
  const closing = c.close();
  await Bun.sleep(100);
  srv.reset();
  await closing;
  expect(nb.pins).toBe(0);
  await l.close();
  await expectQuiescent(stack);
}, 30_000);

test("a zero-copy send blocked on a full send queue: reset() or closeTimeoutMs end it, the write fails and the pages come back", async () => {
  for (const how of ["reset", "closeTimeoutMs"]) {
    const l = stack.listen("127.0.0.1:0", { maxReadBuffered: 1 });
    setIntOption("setsockopt(SO_RCVBUF)", (l as unknown as { fd: number }).fd, SOL_SOCKET, SO_RCVBUF, 4096);
    const accepted = l.accept();
    const c = (await stack.connect(l.localAddress, { closeTimeoutMs: how === "reset" ? NEVER_MS : 200 })) as PosixConnection;
    setIntOption("setsockopt(SO_SNDBUF)", c.fd, SOL_SOCKET, SO_SNDBUF, 4096);
    const srv = await accepted;
    const nb = allocateAlignedBuffer(4 << 20);
    const before = stack.stats().sendsZeroCopy;
    const writing = c.output.write(nb).then(
      () => "resolved",
      (e: unknown) => e,
    );
    nb.release();
    await until(() => stack.stats().sendsZeroCopy > before);
    await Bun.sleep(50);
    expect(c.output.buffered).toBeGreaterThan(0);
    if (how === "reset") c.reset();
    await c.close();
    expect(await writing).toBeInstanceOf(Error);
    expect(nb.pins).toBe(0);
    srv.reset();
    await l.close();
    await expectQuiescent(stack);
  }
}, 30_000);

test("close() and reset() twice, from a write's callback: one close promise, everything released", async () => {
  const { l, c, srv } = await pair();
  const inCallback = srv.output.write("hello").then(() => {
    const a = srv.close();
    srv.reset();
    srv.reset();
    expect(srv.close()).toBe(a);
    return a;
  });
  await inCallback;
  await srv.close();
  expect(await rejection(srv.output.write("x"))).toBeInstanceOf(ClosedError);
  await c.close();
  await l.close();
  await expectQuiescent(stack);
});

function pythonPeer(port: number, script: string) {
  const code = `import socket, time\ns = socket.create_connection(("127.0.0.1", ${port}))\n${script}\n`;
  return Bun.spawn(["python3", "-c", code], { stdout: "ignore", stderr: "inherit" });
}

test("a peer (python) that never reads, then closes, while close() flushes a full send queue, a read waits and a read timeout is set", async () => {
  const msgs = stack.msgs.usedBytes;
  for (const how of ["close()", "shutdownOutput(), then close()"]) {
    const l = stack.listen("127.0.0.1:0", { closeTimeoutMs: NEVER_MS, readTimeoutMs: 100 });
    const port = l.localAddress.family === "ipv4" ? l.localAddress.port : 0;
    const accepted = l.accept();
    const peer = pythonPeer(port, "s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)\ntime.sleep(0.5)\ns.close()");
    const srv = (await accepted) as PosixConnection;
    setIntOption("setsockopt(SO_SNDBUF)", srv.fd, SOL_SOCKET, SO_SNDBUF, 4096);
    const reading = srv.input.read().then(
      (v) => v,
      (e: unknown) => e,
    );
    // Many small writes: SENDMSG batches (message blocks), short sends resumed.
    for (let i = 0; i < 2000; i++) void srv.output.write(new Uint8Array(2000).fill(i)).catch(() => {});
    const shut =
      how === "close()"
        ? undefined
        : srv.shutdownOutput().then(
            () => "resolved",
            (e: unknown) => e,
          );
    await srv.close();
    const r = await reading;
    expect(r === null || r instanceof Error).toBe(true);
    if (shut !== undefined) expect(await shut).toBeInstanceOf(Error);
    expect(await peer.exited).toBe(0);
    await l.close();
    await expectQuiescent(stack);
    expect(stack.msgs.usedBytes).toBe(msgs);
  }
}, 30_000);

test("a thousand connections close at once with answers unread; half the peers reset, half close: no fd, buffer or message block is left", async () => {
  await warm();
  const fds = fdCount();
  const msgs = stack.msgs.usedBytes;
  const N = 1000;
  const l = stack.listen("127.0.0.1:0", { closeTimeoutMs: NEVER_MS });
  const servers: Connection[] = [];
  const clients: Connection[] = [];
  const accepting = (async () => {
    for await (const s of l) {
      servers.push(s);
      if (servers.length === N) break;
    }
  })();
  for (let i = 0; i < N; i++) clients.push(await stack.connect(l.localAddress, { maxReadBuffered: 1 }));
  await accepting;
  const payload = new Uint8Array(200_000).fill(7);
  for (const s of servers) void s.output.write(payload).catch(() => {});
  await Bun.sleep(100);
  const closing = servers.map((s) => s.close());
  await Bun.sleep(100);
  for (let i = 0; i < N; i += 2) clients[i]!.reset();
  for (let i = 1; i < N; i += 2) void clients[i]!.close();
  await Promise.all(closing);
  await Promise.all(clients.map((c) => c.close()));
  await l.close();
  await expectQuiescent(stack, 30_000);
  expect(stack.msgs.usedBytes).toBe(msgs);
  await until(() => fdCount() <= fds, 10_000, `fds back to ${fds} (now ${fdCount()})`);
}, 120_000);
