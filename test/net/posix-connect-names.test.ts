/**
 * connect() to names with addresses of both families. node:dns/promises answers fixed lists
 * here (as the system resolver does for a name listed twice in /etc/hosts); the sockets, the
 * stack and the loop are real.
 */
import { expect, mock, test } from "bun:test";
import type { SystemError as SystemErrorType } from "../../src/core/errors.ts";

const answers: Record<string, { address: string; family: number }[]> = {
  "v6first.test": [
    { address: "::1", family: 6 },
    { address: "127.0.0.1", family: 4 },
  ],
  "v4first.test": [
    { address: "127.0.0.1", family: 4 },
    { address: "::1", family: 6 },
  ],
  // 127.0.0.1 is a listener with a full accept queue (its SYNs are dropped until it is drained)
  // in the tests below; nothing listens on 127.0.0.2.
  "twov4.test": [
    { address: "127.0.0.1", family: 4 },
    { address: "127.0.0.2", family: 4 },
  ],
  // A link-local address without a scope: its connect fails with EINVAL (not a TRY_NEXT error).
  "linklocal.test": [
    { address: "127.0.0.1", family: 4 },
    { address: "fe80::1", family: 6 },
  ],
};
mock.module("node:dns/promises", () => ({
  lookup: async (host: string) => {
    const a = answers[host];
    if (a === undefined) throw new Error(`getaddrinfo ENOTFOUND ${host}`);
    return a;
  },
}));
const { connect, listen } = await import("../../src/net/api.ts");
const { posixStack } = await import("../../src/net/posix/stack.ts");
const { SystemError } = await import("../../src/core/errors.ts");
const { expectQuiescent } = await import("./conformance/harness.ts");

const portOf = (a: { family: string; port?: number }) => a.port!;

async function failure(p: Promise<{ reset(): void }>): Promise<SystemErrorType> {
  const r = await p.then(
    (c) => (c.reset(), undefined),
    (e: unknown) => e,
  );
  expect(r).toBeInstanceOf(SystemError);
  return r as SystemErrorType;
}

test("with localAddress, a name's addresses of the other family are skipped (an IPv4 localAddress on ::1's socket was bind EINVAL and ended connect)", async () => {
  const stack = posixStack();
  const blocks = stack.msgs.blocksInUse;
  const l4 = listen("127.0.0.1:0");
  const accepted4 = l4.accept();
  const c4 = await connect(`v6first.test:${portOf(l4.localAddress)}`, { localAddress: "127.0.0.1:0" });
  expect(c4.remoteAddress).toEqual({ family: "ipv4", host: "127.0.0.1", port: portOf(l4.localAddress) });
  expect(c4.localAddress.family).toBe("ipv4");
  c4.reset();
  (await accepted4).reset();
  await l4.close();

  const l6 = listen("[::1]:0");
  const accepted6 = l6.accept();
  const c6 = await connect({ host: "v4first.test", port: portOf(l6.localAddress) }, { localAddress: "[::1]:0" });
  expect(c6.remoteAddress).toMatchObject({ family: "ipv6", host: "::1" });
  c6.reset();
  (await accepted6).reset();
  // Only addresses of the local family are tried: the IPv4 one (the listener is on ::1 only) is not.
  const port6 = portOf(l6.localAddress);
  await l6.close();
  const e = await failure(connect(`v4first.test:${port6}`, { localAddress: "[::1]:0" }));
  expect(e.code).toBe("ECONNREFUSED");
  expect(e.message).toContain(`[::1]:${port6}`);
  // A local address of neither family: the kernel's answer for the first address, as before.
  expect((await failure(connect(`v4first.test:${port6}`, { localAddress: "unix:@shoal-nolocal" }))).op).toBe("bind");
  expect(stack.msgs.blocksInUse).toBe(blocks);
  await expectQuiescent(stack);
});

test('"localhost" is 127.0.0.1, then ::1: a server listening on ::1 only is reached (it was ECONNREFUSED); a family asks for one', async () => {
  const l = listen("[::1]:0");
  const port = portOf(l.localAddress);
  const accepted = l.accept();
  const c = await connect(`localhost:${port}`);
  expect(c.remoteAddress).toMatchObject({ family: "ipv6", host: "::1", port });
  c.reset();
  (await accepted).reset();
  const c2 = await connect({ host: "localhost", port });
  expect(c2.remoteAddress.family).toBe("ipv6");
  c2.reset();
  await l.accept().then((s) => s.reset());
  // An explicit family, or a local address of one, keeps to it.
  expect((await failure(connect({ host: "localhost", port, family: "ipv4" }))).code).toBe("ECONNREFUSED");
  expect((await failure(connect(`localhost:${port}`, { localAddress: "127.0.0.1:0" }))).code).toBe("ECONNREFUSED");
  await l.close();
  // Both refuse: ECONNREFUSED, naming the last address tried.
  const e = await failure(connect(`localhost:${port}`));
  expect(e.code).toBe("ECONNREFUSED");
  expect(e.op).toBe("connect");
  // IPv4 is tried first: a server on 127.0.0.1 gets the connection.
  const l4 = listen("localhost:0");
  const accepted4 = l4.accept();
  const c4 = await connect(`localhost:${portOf(l4.localAddress)}`);
  expect(c4.remoteAddress.family).toBe("ipv4");
  c4.reset();
  (await accepted4).reset();
  await l4.close();
  await expectQuiescent(posixStack());
});

test('a family that is neither "ipv4" nor "ipv6" is refused for a name as for an IP literal (the name was resolved, the typo ignored)', async () => {
  const { InvalidArgumentError } = await import("../../src/core/errors.ts");
  const { needsLookup } = await import("../../src/net/address.ts");
  const l = listen("127.0.0.1:0");
  const port = portOf(l.localAddress);
  for (const family of ["IPv4", "unix", 4]) {
    const err = await connect({ host: "v4first.test", port, family } as never).then(
      (c) => (c.reset(), "connected"),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(await connect({ host: "127.0.0.1", port, family } as never).catch((e: unknown) => e)).toBeInstanceOf(InvalidArgumentError);
  }
  expect(needsLookup({ host: "v4first.test", port, family: "ipv6" })).toEqual({ host: "v4first.test", port, family: "ipv6" });
  expect(needsLookup({ host: "v4first.test", port })).toEqual({ host: "v4first.test", port, family: undefined });
  await l.close();
  await expectQuiescent(posixStack());
});

test("setNetworkStack refuses while the current stack has a UDP channel open (only connections and listeners counted)", async () => {
  const { bindUdp, setNetworkStack, networkStack } = await import("../../src/net/api.ts");
  const { InvalidArgumentError } = await import("../../src/core/errors.ts");
  const posix = posixStack();
  setNetworkStack(posix);
  const other = { ...Object.fromEntries(["listen", "connect", "bindUdp"].map((k) => [k, () => {}])), name: "other", stats: () => posix.stats() };
  const ch = bindUdp("127.0.0.1:0");
  try {
    expect(() => setNetworkStack(other as never)).toThrow(InvalidArgumentError);
    expect(networkStack()).toBe(posix);
  } finally {
    await ch.close();
  }
  setNetworkStack(other as never);
  expect(networkStack()).toBe(other as never);
  setNetworkStack(posix);
});

/**
 * A kernel listener on 127.0.0.1 with backlog 0 whose accept queue is full (one connection
 * queued): the SYNs of further connects are dropped, answered only by a retransmission (1 s
 * later) after drain().
 */
async function fullListener(): Promise<{ port: number; drain(): void; close(): void }> {
  const { openSocket, localAddressOf, acceptPending, closeNow, SOCK_STREAM } = await import("../../src/net/posix/sys.ts");
  const fd = openSocket("listen", { family: "ipv4", host: "127.0.0.1", port: 0 }, SOCK_STREAM, 0, 0);
  const port = portOf(localAddressOf(fd));
  const filler = await connect(`127.0.0.1:${port}`, { timeoutMs: 5000 });
  let closed = false;
  const drain = () => {
    if (closed) return;
    for (const f of acceptPending(fd)) closeNow(f);
  };
  return {
    port,
    drain,
    close: () => {
      if (closed) return;
      closed = true;
      filler.reset();
      drain();
      closeNow(fd);
    },
  };
}

/** A local port free now (bound, then closed). */
async function freePort(): Promise<number> {
  const { openSocket, localAddressOf, closeNow, SOCK_STREAM } = await import("../../src/net/posix/sys.ts");
  const fd = openSocket("bind", { family: "ipv4", host: "127.0.0.1", port: 0 }, SOCK_STREAM, 0, -1);
  const port = portOf(localAddressOf(fd));
  closeNow(fd);
  return port;
}

test("localAddress with a port: a name's addresses are tried one at a time (a second socket bound to the same port beside a slow first attempt was bind EADDRINUSE and ended connect)", async () => {
  const stack = posixStack();
  const blocks = stack.msgs.blocksInUse;
  const l = await fullListener();
  const local = await freePort();
  try {
    // Drained after the attempt delay (250 ms): the first address answers the SYN's retransmission.
    const drain = setTimeout(l.drain, 400);
    const r = await connect(`twov4.test:${l.port}`, { localAddress: `127.0.0.1:${local}`, timeoutMs: 20_000 }).then(
      (c) => c,
      (e: unknown) => e,
    );
    clearTimeout(drain);
    expect(r).not.toBeInstanceOf(Error);
    const c = r as Awaited<ReturnType<typeof connect>>;
    expect(c.remoteAddress).toEqual({ family: "ipv4", host: "127.0.0.1", port: l.port });
    expect(c.localAddress).toEqual({ family: "ipv4", host: "127.0.0.1", port: local });
    c.reset();
  } finally {
    l.close();
  }
  expect(stack.msgs.blocksInUse).toBe(blocks);
  await expectQuiescent(stack);
}, 30_000);

test("a later address's error that ends the call (EINVAL) does not cancel an earlier attempt still waiting: it connects (connect failed at 250 ms); when that one fails too, the error is reported once both ended", async () => {
  const stack = posixStack();
  const { reactor } = await import("../../src/core/reactor.ts");
  const l = await fullListener();
  try {
    const drain = setTimeout(l.drain, 400);
    const r = await connect(`linklocal.test:${l.port}`, { timeoutMs: 20_000 }).then(
      (c) => c,
      (e: unknown) => e,
    );
    clearTimeout(drain);
    expect(r).not.toBeInstanceOf(Error);
    const c = r as Awaited<ReturnType<typeof connect>>;
    expect(c.remoteAddress).toEqual({ family: "ipv4", host: "127.0.0.1", port: l.port });
    c.reset();
  } finally {
    l.close();
  }
  await expectQuiescent(stack);
  const blocks = stack.msgs.blocksInUse;
  const inFlight = reactor().inFlight;
  // Both fail: the listener is closed (the SYN's retransmission a second later is refused) after
  // fe80::1's EINVAL.
  const l2 = await fullListener();
  try {
    const gone = setTimeout(l2.close, 400);
    const e = await failure(connect(`linklocal.test:${l2.port}`, { timeoutMs: 20_000 }));
    clearTimeout(gone);
    // Settled only once the first attempt ended: its block is back, nothing is in flight.
    expect(stack.msgs.blocksInUse).toBe(blocks);
    expect(reactor().inFlight).toBe(inFlight);
    expect(e.code).toBe("EINVAL");
    expect(e.message).toContain(`[fe80::1]:${l2.port}`);
  } finally {
    l2.close();
  }
  await expectQuiescent(stack);
}, 30_000);
