/**
 * The count of lingering closes (netStats().closesLingering, bounded by configureNet lingerMax)
 * comes back to 0 on every way out of a linger: the peer takes everything, a local reset(), a
 * peer reset, closeTimeoutMs running out, a linger that follows a zero-copy wait, a teardown
 * close() did not start, many at once. A count that leaked would end lingering for the shard
 * for good once it reached lingerMax. No timing asserts: each wait is a poll with a generous
 * deadline.
 */
import { afterAll, expect, test } from "bun:test";
import { allocateAlignedBuffer } from "../../src/core/buffers.ts";
import { configureNet, netStats } from "../../src/net/api.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import type { PosixConnection } from "../../src/net/posix/connection.ts";
import { SOL_SOCKET, setIntOption } from "../../src/net/posix/sys.ts";
import type { Connection, ConnectOptions, ListenOptions } from "../../src/net/types.ts";
import { expectQuiescent, readBytes, until } from "./conformance/harness.ts";

const SO_SNDBUF = 7;
const SO_RCVBUF = 8;
/** Longer than any test here may take: a close that waits for it fails by the test's timeout. */
const NEVER_MS = 120_000;
const stack = posixStack();

afterAll(() => configureNet({ lingerMax: 4096, zeroCopySendMin: 65536 }));

/** A pair whose client `c` reads nothing until asked (maxReadBuffered 1). */
async function pair(opts: ListenOptions = {}, clientOpts: ConnectOptions = {}) {
  const l = stack.listen("127.0.0.1:0", opts);
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress, { maxReadBuffered: 1, ...clientOpts });
  const srv = (await accepted) as PosixConnection;
  return { l, c, srv };
}

/** Writes `n` bytes on `srv` and starts its close, which lingers (its peer has not read). */
async function lingering(srv: Connection, n = 512 * 1024): Promise<{ closing: Promise<void> }> {
  await srv.output.write(new Uint8Array(n).fill(0x61));
  await srv.output.flush();
  return { closing: srv.close() };
}

/** A pair whose server side's close lingers (counted) once this returns; `closing` is that close. */
async function lingeringPair(closeTimeoutMs: number) {
  const { l, c, srv } = await pair({ closeTimeoutMs });
  setIntOption("setsockopt(SO_SNDBUF)", srv.fd, SOL_SOCKET, SO_SNDBUF, 1 << 20);
  const { closing } = await lingering(srv);
  await until(() => netStats().closesLingering === 1, 10_000, "the close to linger");
  return { l, c, srv, closing };
}

async function drainAll(c: Connection): Promise<number> {
  let got = 0;
  for (;;) {
    const chunk = await c.input.read();
    if (chunk === null) return got;
    got += chunk.length;
  }
}

async function settle(l: { close(): Promise<void> }): Promise<void> {
  await l.close();
  await expectQuiescent(stack);
  expect(netStats().closesLingering).toBe(0);
}

test("the peer takes everything: the linger ends and the count is back to 0", async () => {
  expect(netStats().closesLingering).toBe(0);
  const { l, c, srv, closing } = await lingeringPair(NEVER_MS);
  expect(await drainAll(c)).toBe(512 * 1024);
  await closing;
  expect(netStats().closesLingering).toBe(0);
  await c.close();
  await settle(l);
}, 60_000);

test("reset() during the linger: the count is back to 0", async () => {
  const { l, c, srv, closing } = await lingeringPair(NEVER_MS);
  srv.reset();
  await closing;
  expect(netStats().closesLingering).toBe(0);
  c.reset();
  await c.close();
  await settle(l);
}, 60_000);

test("the peer resets during the linger: the count is back to 0", async () => {
  const { l, c, srv, closing } = await lingeringPair(NEVER_MS);
  c.reset();
  await closing;
  expect(netStats().closesLingering).toBe(0);
  await c.close();
  await settle(l);
}, 60_000);

test("closeTimeoutMs runs out during the linger: the count is back to 0", async () => {
  const { l, c, srv, closing } = await lingeringPair(2_000);
  await closing;
  expect(netStats().closesLingering).toBe(0);
  c.reset();
  await c.close();
  await settle(l);
}, 60_000);

test("a linger after a zero-copy wait: the count is back to 0 once the peer took everything", async () => {
  configureNet({ zeroCopySendMin: 64 * 1024 });
  try {
    const l = stack.listen("127.0.0.1:0", { maxReadBuffered: 1 });
    setIntOption("setsockopt(SO_RCVBUF)", (l as unknown as { fd: number }).fd, SOL_SOCKET, SO_RCVBUF, 8192);
    const accepted = l.accept();
    const c = (await stack.connect(l.localAddress, { closeTimeoutMs: NEVER_MS })) as PosixConnection;
    setIntOption("setsockopt(SO_SNDBUF)", c.fd, SOL_SOCKET, SO_SNDBUF, 1 << 20);
    const srv = await accepted;
    const nb = allocateAlignedBuffer(128 * 1024);
    nb.bytes.fill(0x62);
    const zc = stack.stats().sendsZeroCopy;
    const wrote = c.output.write(nb);
    nb.release();
    // Plain bytes behind the zero-copy ones: still queued once the pages come back.
    const wrotePlain = c.output.write(new Uint8Array(512 * 1024).fill(0x63));
    let closed = false;
    const closing = c.close().then(() => {
      closed = true;
    });
    await until(() => stack.stats().sendsZeroCopy > zc, 10_000, "a zero-copy send");
    // Nothing of it can be acknowledged before the peer reads: close() waits for the pages.
    await Bun.sleep(50);
    expect(closed).toBe(false);
    expect(netStats().closesLingering).toBe(0);
    // The zero-copy bytes reach the peer (acknowledged: the pages come back), the rest waits.
    await readBytes(srv, 128 * 1024 + 4096);
    await until(() => netStats().closesLingering === 1, 10_000, "the close to linger after its zero-copy wait");
    expect(await drainAll(srv)).toBe(512 * 1024 - 4096);
    await wrote;
    await wrotePlain;
    await closing;
    expect(netStats().closesLingering).toBe(0);
    await srv.close();
    await settle(l);
  } finally {
    configureNet({ zeroCopySendMin: 65536 });
  }
}, 60_000);

test("a teardown close() did not start (input shut here, then output shut) that lingers: the count is back to 0", async () => {
  const { l, c, srv } = await pair({ closeTimeoutMs: NEVER_MS });
  setIntOption("setsockopt(SO_SNDBUF)", srv.fd, SOL_SOCKET, SO_SNDBUF, 1 << 20);
  await srv.output.write(new Uint8Array(512 * 1024).fill(0x64));
  await srv.output.flush();
  srv.shutdownInput();
  expect(await srv.input.read()).toBe(null);
  // Both directions done with the queue not empty and the peer not ended: the teardown lingers.
  await srv.shutdownOutput();
  await until(() => netStats().closesLingering === 1, 10_000, "the teardown to linger");
  expect(await drainAll(c)).toBe(512 * 1024);
  await srv.close();
  expect(netStats().closesLingering).toBe(0);
  await c.close();
  await settle(l);
}, 60_000);

test("many closes linger at once, some reset, some read, some past lingerMax: the count is back to 0", async () => {
  configureNet({ lingerMax: 20 });
  try {
    const l = stack.listen("127.0.0.1:0", { closeTimeoutMs: NEVER_MS });
    const pairs: { c: Connection; srv: PosixConnection }[] = [];
    for (let i = 0; i < 30; i++) {
      const accepted = l.accept();
      const c = await stack.connect(l.localAddress, { maxReadBuffered: 1 });
      const srv = (await accepted) as PosixConnection;
      pairs.push({ c, srv });
    }
    const closings: Promise<void>[] = [];
    for (const { srv } of pairs) closings.push((await lingering(srv, 256 * 1024)).closing);
    await until(() => netStats().closesLingering === 20, 10_000, "20 closes to linger");
    for (let i = 0; i < pairs.length; i++) {
      if (i % 3 === 0) pairs[i]!.srv.reset();
      else if (i % 3 === 1) pairs[i]!.c.reset();
      else void drainAll(pairs[i]!.c).catch(() => {});
    }
    await Promise.all(closings);
    expect(netStats().closesLingering).toBe(0);
    for (const { c } of pairs) await c.close();
    await settle(l);
  } finally {
    configureNet({ lingerMax: 4096 });
  }
}, 60_000);
