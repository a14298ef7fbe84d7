/**
 * Shared pieces of the network conformance suite. The suite is written once against the
 * NetworkStack interface; each stack runs it from its own test file (test/net/<stack>-*.test.ts)
 * by passing a StackUnderTest.
 */
import { expect } from "bun:test";
import { SystemError } from "../../../src/core/errors.ts";
import type { Connection, Listener, NetStats, NetworkStack } from "../../../src/net/types.ts";

export interface StackUnderTest {
  /** Shown in test names. */
  name: string;
  stack: NetworkStack;
  /** Turns receive-buffer poisoning on or off (debug option of the stack). */
  setPoisoning(on: boolean): void;
  /** Receive buffer size and count the stack runs with (sizes the flood tests). */
  recvBufferSize: number;
  recvBufferCount: number;
  /** Address families this stack supports. */
  families: readonly ("ipv4" | "ipv6" | "unix")[];
}

/** Scale of the suite: SHOAL_SOAK=1 runs the full-size versions. */
export const soak = process.env.SHOAL_SOAK === "1";

/** Loopback listen address of a family (Unix: a fresh path under /tmp). */
let unixCounter = 0;
export function loopback(family: "ipv4" | "ipv6" | "unix"): string {
  if (family === "ipv4") return "127.0.0.1:0";
  if (family === "ipv6") return "[::1]:0";
  return `unix:/tmp/shoal-net-${process.pid}-${++unixCounter}.sock`;
}

/** Deterministic pseudo-random bytes (xorshift32), filled in place. Returns the next state. */
export function fillRandom(buf: Uint8Array, state: number): number {
  let x = state | 0 || 1;
  const words = new Uint32Array(buf.buffer, buf.byteOffset, buf.byteLength >>> 2);
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
  for (let i = words.length * 4; i < buf.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    buf[i] = x & 255;
  }
  return x;
}

/** Incremental CRC-32 (Bun.hash.crc32 continues from a previous value). */
export function crc(data: Uint8Array, previous = 0): number {
  return Bun.hash.crc32(data, previous);
}

/** Reads until end of stream; returns byte count and CRC-32. */
export async function drain(c: Connection): Promise<{ bytes: number; crc: number }> {
  let bytes = 0;
  let sum = 0;
  for (;;) {
    const v = await c.input.read();
    if (v === null) return { bytes, crc: sum };
    bytes += v.length;
    sum = crc(v, sum);
  }
}

/** Reads exactly `n` bytes as a copy (across reads). */
export async function readBytes(c: Connection, n: number): Promise<Uint8Array> {
  const v = await c.input.readExactly(n);
  if (v === null) throw new Error(`stream ended before ${n} bytes`);
  return v.slice();
}

/** Echo handler: writes back what it reads, then closes. */
export async function echo(c: Connection): Promise<void> {
  try {
    for (;;) {
      const v = await c.input.read();
      if (v === null) break;
      await c.output.write(v);
    }
    await c.close();
  } catch {
    c.reset();
  }
}

/** Accepts forever, running `handler` per connection; returns when the listener stops. */
export function serveWith(l: Listener, handler: (c: Connection) => Promise<void>): Promise<void> {
  return (async () => {
    for await (const c of l) void handler(c);
  })();
}

/** Asserts a promise rejects with a SystemError of `code` (and `op` when given). */
export async function expectSystemError(p: Promise<unknown>, codes: string | string[], op?: string): Promise<SystemError> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(SystemError);
  const se = err as SystemError;
  expect(Array.isArray(codes) ? codes : [codes]).toContain(se.code);
  if (op !== undefined) expect(se.op).toBe(op);
  return se;
}

/** A `size`-byte datagram of pseudo-random bytes (seed `i`), its first four bytes `i` (LE). */
export function seededDatagram(size: number, i: number): Uint8Array {
  const d = new Uint8Array(size);
  fillRandom(d, i + 1);
  new DataView(d.buffer).setUint32(0, i, true);
  return d;
}

/** Waits until every UDP channel of `stack` is closed and every datagram buffer released. */
export async function expectDatagramsReleased(stack: NetworkStack, ms = 5000): Promise<void> {
  await until(() => stack.stats().udpRecvBuffersHeld === 0 && stack.stats().udpChannelsOpen === 0, ms, "every datagram buffer to be released");
}

/** Resolves once `cond()` holds (polled every few ms), or throws after `ms`. */
export async function until(cond: () => boolean, ms = 5000, what = "condition"): Promise<void> {
  const deadline = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await Bun.sleep(2);
  }
}

/** Asserts nothing leaked once every socket of the test is closed. */
/**
 * A connected pair over IPv4 loopback on `stack`; `done()` closes both ends and the listener and
 * checks that the stack holds nothing more.
 */
export async function connectedPair(stack: NetworkStack): Promise<{ client: Connection; server: Connection; done: () => Promise<void> }> {
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

export async function expectQuiescent(stack: NetworkStack, ms = 5000): Promise<NetStats> {
  let s = stack.stats();
  await until(
    () => {
      s = stack.stats();
      return s.connectionsOpen === 0 && s.recvBuffersHeld === 0 && s.udpRecvBuffersHeld === 0 && s.sendMemoryInUse === 0 && s.listenersOpen === 0;
    },
    ms,
    "every connection, buffer (stream and datagram) and listener to be released",
  ).catch(() => {
    throw new Error(`stack not quiescent: ${JSON.stringify(s)}`);
  });
  return s;
}

/**
 * The error `p` rejects with (throws if it resolves). Use instead of expect(p).rejects, which
 * waits for a pending promise without letting the shard loop (setImmediate) turn.
 */
export async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error("expected a rejection");
}
