// Posix stack specifics: large NativeBuffer writes leave with IORING_OP_SEND_ZC (no kernel copy
// where the device allows) and stay pinned until the kernel's notification; socket options
// reach the kernel (accepted sockets inherit TCP_NODELAY from the listener).
import { expect, test } from "bun:test";
import { tmpdir } from "node:os";
import { AbortError, ClosedError, InvalidArgumentError, SystemError } from "../../src/core/errors.ts";
import type { Connection, Listener } from "../../src/net/types.ts";
import { allocateAlignedBuffer } from "../../src/core/buffers.ts";
import { reactor } from "../../src/core/reactor.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import { IPPROTO_TCP, SOL_SOCKET, TCP_NODELAY, getIntOption, setIntOption } from "../../src/net/posix/sys.ts";
import type { PosixConnection } from "../../src/net/posix/connection.ts";
import { MAX_RECEIVED_HELD } from "../../src/net/output.ts";
import { needBytes } from "../../src/net/types.ts";
import { crc, drain, expectQuiescent, expectSystemError, fillRandom, readBytes, until } from "./conformance/harness.ts";

const SO_KEEPALIVE = 9;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;

const stack = posixStack();

test("a 4 MiB NativeBuffer goes out with zero-copy sends; released early, it is recycled only after the kernel is done", async () => {
  const l = stack.listen("127.0.0.1:0");
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress);
  const srv = await accepted;
  const size = 4 * 1024 * 1024;
  const nb = allocateAlignedBuffer(size);
  fillRandom(nb.bytes, 5);
  const sum = crc(nb.bytes);
  const before = stack.stats();
  const writing = srv.output.write(nb);
  nb.release();
  const back = await readBytes(c, size);
  expect(crc(back)).toBe(sum);
  await writing;
  const after = stack.stats();
  expect(after.sendsZeroCopy).toBeGreaterThan(before.sendsZeroCopy);
  expect(after.sendBytes - before.sendBytes).toBe(size);
  await c.close();
  await srv.close();
  await l.close();
  await expectQuiescent(stack);
});

test("a connection whose zero-copy send the kernel copied anyway (a loopback peer) sends plainly from then on", async () => {
  const l = stack.listen("127.0.0.1:0");
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress);
  const srv = await accepted;
  const size = 1024 * 1024;
  const send = async (seed: number): Promise<void> => {
    const nb = allocateAlignedBuffer(size);
    fillRandom(nb.bytes, seed);
    const sum = crc(nb.bytes);
    const writing = srv.output.write(nb);
    nb.release();
    const back = await readBytes(c, size);
    expect(crc(back)).toBe(sum);
    await writing;
  };
  const before = stack.stats();
  await send(7);
  // Loopback delivery copies every byte: the notification reports it.
  await until(() => stack.stats().sendsZeroCopyCopied > before.sendsZeroCopyCopied);
  const mid = stack.stats();
  expect(mid.sendsZeroCopy).toBeGreaterThan(before.sendsZeroCopy);
  expect(mid.sendsZeroCopyCopied - before.sendsZeroCopyCopied).toBe(1);
  await send(8);
  const after = stack.stats();
  expect(after.sendsZeroCopy).toBe(mid.sendsZeroCopy);
  expect(after.sendBytes - before.sendBytes).toBe(2 * size);
  // Another connection starts with zero-copy again.
  const accepted2 = l.accept();
  const c2 = await stack.connect(l.localAddress);
  const srv2 = await accepted2;
  const nb = allocateAlignedBuffer(size);
  const writing = srv2.output.write(nb);
  nb.release();
  await readBytes(c2, size);
  await writing;
  expect(stack.stats().sendsZeroCopy).toBeGreaterThan(after.sendsZeroCopy);
  for (const x of [c, srv, c2, srv2]) await x.close();
  await l.close();
  await expectQuiescent(stack);
});

/**
 * A pair whose writer `c` sends with zero-copy into a reader `srv` with a small window that takes
 * about 20 KB and then stops reading: most of a 128 KiB write is accepted into the writer's send
 * queue (sent as far as the kernel is concerned) but not acknowledged, and a zero-copy send's
 * pages are the kernel's until its notification (the acknowledgement) arrives.
 */
async function slowReaderPair(closeTimeoutMs: number): Promise<{ l: Listener; c: Connection; srv: Connection }> {
  const l = stack.listen("127.0.0.1:0", { maxReadBuffered: 1 });
  // Accepted sockets inherit the listener's receive buffer (and the window it allows).
  setIntOption("setsockopt(SO_RCVBUF)", (l as unknown as { fd: number }).fd, SOL_SOCKET, SO_RCVBUF, 4096);
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress, { closeTimeoutMs });
  // Room in the writer's send queue for the whole write: its write resolves and close() flushes at once.
  setIntOption("setsockopt(SO_SNDBUF)", (c as PosixConnection).fd, SOL_SOCKET, SO_SNDBUF, 1 << 20);
  return { l, c, srv: await accepted };
}

test("close() of a connection with zero-copy sends resolves only once the kernel let go of the pages: a buffer reused after it is not what the peer reads", async () => {
  const { l, c, srv } = await slowReaderPair(10_000);
  const size = 128 * 1024;
  const nb = allocateAlignedBuffer(size);
  nb.bytes.fill(0x41);
  const before = stack.stats();
  void c.output.write(nb).catch(() => {});
  await Bun.sleep(20);
  expect(stack.stats().sendsZeroCopy).toBeGreaterThan(before.sendsZeroCopy);
  // The connection is closed (its socket and every buffer released): the application reuses
  // its buffer. Before, close() resolved while the unacknowledged part was still read from it.
  const closing = c.close().then(() => nb.bytes.fill(0x42));
  await Bun.sleep(100);
  const { bytes, crc: sum } = await drain(srv);
  await closing;
  const pins = nb.pins;
  nb.release();
  await srv.close();
  await l.close();
  expect(bytes).toBe(size);
  expect(sum).toBe(crc(new Uint8Array(size).fill(0x41)));
  expect(pins).toBe(0);
  await expectQuiescent(stack);
});

test("close() waiting for zero-copy notifications is bounded by closeTimeoutMs: a peer that never reads is reset and the pages come back", async () => {
  const { l, c, srv } = await slowReaderPair(200);
  const nb = allocateAlignedBuffer(128 * 1024);
  void c.output.write(nb).catch(() => {});
  nb.release();
  await Bun.sleep(20);
  const t0 = performance.now();
  await c.close();
  const took = performance.now() - t0;
  const pins = nb.pins;
  srv.reset();
  await l.close();
  expect(took).toBeGreaterThan(150);
  expect(took).toBeLessThan(2000);
  expect(pins).toBe(0);
  await expectQuiescent(stack);
});

test("TCP_NODELAY is on for accepted and connected sockets by default; options reach the kernel", async () => {
  const l = stack.listen("127.0.0.1:0");
  const accepted = l.accept();
  const c = (await stack.connect(l.localAddress)) as PosixConnection;
  const srv = (await accepted) as PosixConnection;
  const opt = (x: PosixConnection, level: number, name: number) => getIntOption("getsockopt", x.fd, level, name);
  expect(opt(srv, IPPROTO_TCP, TCP_NODELAY)).toBe(1);
  expect(opt(c, IPPROTO_TCP, TCP_NODELAY)).toBe(1);
  c.setNoDelay(false);
  expect(opt(c, IPPROTO_TCP, TCP_NODELAY)).toBe(0);
  srv.setKeepAlive(true, { idleS: 60 });
  expect(opt(srv, SOL_SOCKET, SO_KEEPALIVE)).toBe(1);
  await c.close();
  await srv.close();
  await l.close();
  const l2 = stack.listen("127.0.0.1:0", { noDelay: false });
  const accepted2 = l2.accept();
  const c2 = await stack.connect(l2.localAddress, { noDelay: false });
  const srv2 = (await accepted2) as PosixConnection;
  expect(opt(srv2, IPPROTO_TCP, TCP_NODELAY)).toBe(0);
  expect(opt(c2 as PosixConnection, IPPROTO_TCP, TCP_NODELAY)).toBe(0);
  await c2.close();
  await srv2.close();
  await l2.close();
  await expectQuiescent(stack);
});

test("echoing received ranges to a peer that does not read pins a bounded number of receive buffers", async () => {
  // Each 1.1 KiB range sent in place keeps its whole 16 KiB receive buffer alive while only its
  // length counts toward the write high-water mark: without a cap a peer that never reads
  // pinned ~250 buffers per connection (a few such peers starve the shard's whole pool).
  const l = stack.listen("127.0.0.1:0");
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress);
  const srv = await accepted;
  // Small kernel buffers on both sides, so the server's output backs up after a few KiB.
  setIntOption("setsockopt", (srv as PosixConnection).fd, SOL_SOCKET, SO_SNDBUF, 4096);
  setIntOption("setsockopt", (c as PosixConnection).fd, SOL_SOCKET, SO_RCVBUF, 4096);
  const highWater = 256 * 1024;
  const echoing = srv.input.receiveRanges((buf, start, end) => {
    const written = srv.output.write(buf, start, end);
    if (srv.output.buffered > highWater) return written;
  });
  echoing.catch(() => {});
  const msg = new Uint8Array(1100).fill(7);
  let maxHeld = 0;
  const perBuffer = 16384; // the default receive buffer size
  // One message per loop turn (each goes out as its own segment and lands in a receive buffer
  // of its own), until the server's socket and output are backed up; the client reads nothing.
  for (let i = 0; i < 1500; i++) {
    void c.output.write(msg).catch(() => {});
    await reactor().nop();
    await reactor().nop();
    if (i % 50 === 49) maxHeld = Math.max(maxHeld, stack.stats().recvBuffersHeld);
  }
  await Bun.sleep(100);
  maxHeld = Math.max(maxHeld, stack.stats().recvBuffersHeld);
  // The server output's in-place ranges, plus the read bound of the server's input and of the
  // client's (same shard, and it reads nothing), plus a batch in delivery.
  expect(MAX_RECEIVED_HELD).toBeLessThanOrEqual(16);
  const bound = MAX_RECEIVED_HELD + 2 * Math.ceil((256 * 1024) / perBuffer) + 8;
  expect(srv.output.buffered).toBeGreaterThan(0); // it did back up
  expect(maxHeld).toBeLessThanOrEqual(bound);
  c.reset();
  srv.reset();
  await l.close();
  await expectQuiescent(stack);
});

test("received bytes left unread when close() is flushing and the peer resets are released with the connection", async () => {
  // Bytes received before a peer error stay readable, unless close() was already called: then
  // nobody reads them, and they used to pin their receive buffers for good.
  const l = stack.listen("127.0.0.1:0");
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress, { closeTimeoutMs: 5000 });
  const srv = await accepted;
  await srv.output.write(new Uint8Array(100_000)); // c never reads these
  for (let i = 0; i < 200 && c.input.buffered < 100_000; i++) await Bun.sleep(5);
  expect(c.input.buffered).toBe(100_000);
  c.output.write(new Uint8Array(32 << 20)).catch(() => {}); // srv never reads: close() waits to flush
  const closing = c.close();
  await Bun.sleep(50);
  srv.reset();
  await closing;
  await l.close();
  await expectQuiescent(stack);
  expect(stack.stats().recvBuffersHeld).toBe(0);
});

test("a large NativeBuffer write over a Unix socket is sent (zero-copy is TCP only: Unix answers EOPNOTSUPP)", async () => {
  const path = `unix:${tmpdir()}/shoal-zc-${process.pid}.sock`;
  const l = stack.listen(path);
  const accepted = l.accept();
  const c = await stack.connect(path);
  const srv = await accepted;
  const nb = allocateAlignedBuffer(128 * 1024);
  fillRandom(nb.bytes, 9);
  const sum = crc(nb.bytes);
  const writing = srv.output.write(nb);
  expect(crc(await readBytes(c, nb.length))).toBe(sum);
  await writing;
  nb.release();
  await c.close();
  await srv.close();
  await l.close();
  await expectQuiescent(stack);
});

test("connect() to a full Unix backlog gives ETIMEDOUT for timeoutMs and AbortError for the caller's signal", async () => {
  // A CONNECT the kernel hands to a worker completes with EINTR when cancelled, not ECANCELED.
  const path = `unix:${tmpdir()}/shoal-bl-${process.pid}.sock`;
  const l = stack.listen(path, { maxConnections: 1, backlog: 0 });
  const first = await stack.connect(path);
  const s0 = await l.accept();
  const fill: Connection[] = [];
  for (let i = 0; i < 4; i++) {
    const c = await stack.connect(path, { timeoutMs: 100 }).catch(() => undefined);
    if (c === undefined) break;
    fill.push(c);
  }
  const timedOut = await stack.connect(path, { timeoutMs: 150 }).catch((e: unknown) => e);
  expect(timedOut).toBeInstanceOf(SystemError);
  expect((timedOut as SystemError).code).toBe("ETIMEDOUT");
  expect((timedOut as SystemError).op).toBe("connect");
  const ac = new AbortController();
  setTimeout(() => ac.abort(new Error("gave up")), 150);
  expect(await stack.connect(path, { signal: ac.signal }).catch((e: unknown) => e)).toBeInstanceOf(AbortError);
  expect(await stack.connect(path, { signal: AbortSignal.timeout(150) }).catch((e: unknown) => e)).toBeInstanceOf(AbortError);
  for (const c of fill) c.reset();
  first.reset();
  s0.reset();
  await l.close();
  await expectQuiescent(stack);
});

test("UdpChannel.send() of a released NativeBuffer rejects with ClosedError and takes no message block", async () => {
  const ch = stack.bindUdp("127.0.0.1:0");
  const nb = allocateAlignedBuffer(64);
  nb.release();
  const before = stack.msgs.blocksInUse;
  let p: Promise<void> | undefined;
  let thrown: unknown;
  try {
    p = ch.send(nb, ch.localAddress);
  } catch (e) {
    thrown = e;
  }
  expect(thrown).toBeUndefined(); // a rejected promise, not a synchronous throw
  const err = await p!.catch((e: unknown) => e);
  expect(err).toBeInstanceOf(ClosedError);
  expect((err as ClosedError).code).toBe("ERR_BUFFER_RELEASED");
  expect(stack.msgs.blocksInUse).toBe(before);
  await ch.close();
  await expectQuiescent(stack);
});

/**
 * Runs fixtures/`name` with bun inside `unshare <unshareArgs> sh -c "<setup> && exec bun ..."`
 * (root, as CI runs: a private namespace of its own) and returns its `RESULT {...}` line.
 */
async function fixtureInNamespace(unshareArgs: string[], setup: string, name: string): Promise<any> {
  const fixture = new URL(`./fixtures/${name}`, import.meta.url).pathname;
  const run = Bun.spawn(["unshare", ...unshareArgs, "sh", "-c", `${setup} && exec "${process.execPath}" "${fixture}"`], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(run.stdout).text(), new Response(run.stderr).text(), run.exited]);
  if (code !== 0) console.log(out, err);
  expect(code).toBe(0);
  const line = out.split("\n").find((l) => l.startsWith("RESULT "));
  return JSON.parse(line!.slice(7));
}

test("dual stack does not depend on net.ipv6.bindv6only: ipv6Only false is set on the socket (with the sysctl at 1, [::] refused IPv4 peers)", async () => {
  // A private network namespace whose sysctl says IPv6-only by default.
  const r = await fixtureInNamespace(["-n"], "ip link set lo up && sysctl -q -w net.ipv6.bindv6only=1", "dual-stack.ts");
  expect(r.tcpDefault).toBe("ok");
  expect(r.tcpExplicit).toBe("ok");
  expect(r.tcpV6Only).toContain("ECONNREFUSED");
  expect(r.udp).toBe("ok");
}, 30_000);

test("connect tries a name's next address when the first is refused (::1 first, the server on 127.0.0.1)", async () => {
  const { mkdtempSync, writeFileSync, rmSync } = await import("node:fs");
  const dir = mkdtempSync(`${tmpdir()}/shoal-hosts-`);
  try {
    writeFileSync(`${dir}/hosts`, "127.0.0.1 localhost\n::1 multi6first\n127.0.0.1 multi6first\n");
    const r = await fixtureInNamespace(["-m", "--propagation", "private"], `mount --bind "${dir}/hosts" /etc/hosts`, "multi-address.ts");
    expect(r).toEqual({ result: "ok 127.0.0.1" }); // ECONNREFUSED ([::1]) before
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 30_000);

test("a port another process holds with SO_REUSEPORT is refused (EADDRINUSE); this process's own listeners still share one", async () => {
  // Before, a second server started by mistake on a port in use took a share of its connections.
  const fixture = new URL("./fixtures/hold-port.ts", import.meta.url).pathname;
  const child = Bun.spawn([process.execPath, fixture], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
  try {
    const reader = child.stdout.getReader();
    let out = "";
    while (!/PORT \d+/.test(out)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`fixture ended before printing its port: ${out}`);
      out += new TextDecoder().decode(value);
    }
    const port = Number(/PORT (\d+)/.exec(out)![1]);
    let err: unknown;
    try {
      stack.listen({ host: "127.0.0.1", port }, { reusePort: true }).close();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SystemError);
    expect((err as SystemError).code).toBe("EADDRINUSE");
    err = undefined;
    try {
      stack.bindUdp({ host: "127.0.0.1", port }, { reusePort: true }).close();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SystemError);
    expect((err as SystemError).code).toBe("EADDRINUSE");
  } finally {
    child.stdin.end();
    await child.exited;
  }
  // Two listeners of this process on one fixed port share it, and both accept.
  const first = stack.listen("127.0.0.1:0", { reusePort: true });
  const port = (first.localAddress as { port: number }).port;
  const second = stack.listen({ host: "127.0.0.1", port }, { reusePort: true });
  expect((second.localAddress as { port: number }).port).toBe(port);
  await second.close();
  await first.close();
}, 30_000);

test("bytes left unread by a connection a peer reset hold no receive buffer once its socket is closed; they stay readable", async () => {
  // They pinned their receive buffers until the application read, closed or reset it: a server
  // abandoning failed connections leaked the shard's pool with nothing counting it.
  const l = stack.listen("127.0.0.1:0");
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress);
  const srv = await accepted;
  await c.output.write("unread bytes");
  await until(() => srv.input.buffered === 12);
  expect(stack.stats().recvBuffersHeld).toBe(1);
  c.reset();
  await until(() => stack.stats().connectionsOpen === 0, 2000, "both sockets closed");
  expect(stack.stats().recvBuffersHeld).toBe(0);
  expect(new TextDecoder().decode((await srv.input.read())!)).toBe("unread bytes");
  await expectSystemError(srv.input.read(), "ECONNRESET");
  await srv.close();
  await l.close();
  await expectQuiescent(stack);
});

test("a line parser waiting for the end of a long line: the line's pieces leave the receive pool as they are shown", async () => {
  // consume() copied every buffered byte for the parser on each arrival and kept the receive
  // buffers queued too: a 256 KiB line held 16+ buffers until its end (and was copied ~20 times).
  const l = stack.listen("127.0.0.1:0");
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress);
  const srv = await accepted;
  const line = new Uint8Array(256 * 1024);
  fillRandom(line, 3);
  for (let i = 0; i < line.length; i++) if (line[i] === 10) line[i] = 11;
  let calls = 0;
  let got: Uint8Array | undefined;
  const parsing = srv.input.consume((view) => {
    calls++;
    const nl = view.indexOf(10);
    if (nl < 0) return needBytes(view.length + 1);
    got = view.slice(0, nl);
    return nl + 1;
  });
  let maxHeld = 0;
  for (let off = 0; off < line.length; off += 8192) {
    await c.output.write(line.subarray(off, off + 8192));
    await Bun.sleep(1);
    maxHeld = Math.max(maxHeld, stack.stats().recvBuffersHeld);
  }
  await c.output.write("\n");
  expect(await parsing).toBe(true);
  expect(crc(got!)).toBe(crc(line));
  expect(calls).toBeGreaterThan(2);
  expect(maxHeld).toBeLessThanOrEqual(3);
  await c.close();
  await srv.close();
  await l.close();
  await expectQuiescent(stack);
});

test('connect("unix:24571") reaches the relative file "24571" listen("unix:24571") binds (it looked up the host "unix")', async () => {
  const { mkdtempSync, rmSync } = await import("node:fs");
  const dir = mkdtempSync(`${tmpdir()}/shoal-digits-`);
  const cwd = process.cwd();
  process.chdir(dir);
  try {
    const l = stack.listen("unix:24571");
    const accepted = l.accept();
    const c = await stack.connect("unix:24571");
    const srv = await accepted;
    expect(c.remoteAddress).toEqual({ family: "unix", path: "24571" });
    await c.close();
    await srv.close();
    await l.close();
  } finally {
    process.chdir(cwd);
    rmSync(dir, { recursive: true, force: true });
  }
  await expectQuiescent(stack);
});

test("setKeepAlive checks every timing against the kernel's limits (count 1..127) before any setsockopt: a bad one changes nothing", async () => {
  const TCP_KEEPIDLE = 4;
  const TCP_KEEPINTVL = 5;
  const TCP_KEEPCNT = 6;
  const l = stack.listen("127.0.0.1:0");
  const accepted = l.accept();
  const c = (await stack.connect(l.localAddress)) as PosixConnection;
  const srv = await accepted;
  const opt = (level: number, name: number) => getIntOption("getsockopt", c.fd, level, name);
  c.setKeepAlive(false);
  const idleBefore = opt(IPPROTO_TCP, TCP_KEEPIDLE);
  const countBefore = opt(IPPROTO_TCP, TCP_KEEPCNT);
  // count 128..32767 reached the kernel (EINVAL named SO_KEEPALIVE) after SO_KEEPALIVE and
  // TCP_KEEPIDLE were already set.
  for (const o of [{ count: 128 }, { count: 32767 }, { idleS: 77, count: 500 }, { idleS: 32768 }, { intervalS: 0 }, { idleS: 77, intervalS: 1.5 }]) {
    let err: unknown;
    try {
      c.setKeepAlive(true, o);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as InvalidArgumentError).code).toBe("ERR_INVALID_ARG");
    expect(opt(SOL_SOCKET, SO_KEEPALIVE)).toBe(0);
    expect(opt(IPPROTO_TCP, TCP_KEEPIDLE)).toBe(idleBefore);
    expect(opt(IPPROTO_TCP, TCP_KEEPCNT)).toBe(countBefore);
  }
  c.setKeepAlive(true, { idleS: 32767, intervalS: 32767, count: 127 });
  expect(opt(SOL_SOCKET, SO_KEEPALIVE)).toBe(1);
  expect(opt(IPPROTO_TCP, TCP_KEEPIDLE)).toBe(32767);
  expect(opt(IPPROTO_TCP, TCP_KEEPINTVL)).toBe(32767);
  expect(opt(IPPROTO_TCP, TCP_KEEPCNT)).toBe(127);
  c.setKeepAlive(true, { idleS: 1, intervalS: 1, count: 1 });
  expect(opt(IPPROTO_TCP, TCP_KEEPCNT)).toBe(1);
  c.setKeepAlive(false);
  expect(opt(SOL_SOCKET, SO_KEEPALIVE)).toBe(0);
  await c.close();
  await srv.close();
  await l.close();
  await expectQuiescent(stack);
});

test("connect to port 0 is InvalidArgumentError before the kernel (it was ECONNREFUSED) or the resolver; listen on port 0 still picks a port", async () => {
  for (const to of ["127.0.0.1:0", "[::1]:0", "localhost:0", { host: "127.0.0.1", port: 0 }, "no-such-host.invalid:0"]) {
    const err = await stack.connect(to, { timeoutMs: 5000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as InvalidArgumentError).code).toBe("ERR_INVALID_ARG");
    expect((err as Error).message).toContain("connect");
  }
  const l = stack.listen("127.0.0.1:0");
  expect((l.localAddress as { port: number }).port).toBeGreaterThan(0);
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress, { localAddress: "127.0.0.1:0" });
  const srv = await accepted;
  await c.close();
  await srv.close();
  await l.close();
  await expectQuiescent(stack);
});
