/**
 * Test harness for the memcached example: starts stock memcached 1.6.18 on a free port,
 * talks to any server with raw bytes (a node:net client, so nothing of Shoal is involved on
 * the client side), and runs the same bytes through an in-process Session for the
 * differential tests.
 */
import { spawn, type Subprocess } from "bun";
import net from "node:net";
import dgram from "node:dgram";
import { Engine } from "../../../examples/memcached/engine.ts";
import { Session } from "../../../examples/memcached/session.ts";
import { defaultSettings, type Settings } from "../../../examples/memcached/settings.ts";
import type { Clock } from "../../../examples/memcached/clock.ts";
import { murmur3, shardOf } from "../../../examples/memcached/hash.ts";

export const enc = new TextEncoder();
export const dec = new TextDecoder("latin1");

/** "\r\n" spelled as-is in test sources: bytes of a text exchange. */
export function b(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i) & 0xff;
  return out;
}

/** Concatenates byte arrays. */
export function cat(...parts: Uint8Array[]): Uint8Array {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const r = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    r.set(p, o);
    o += p.length;
  }
  return r;
}

/** A port nobody listens on right now. */
export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** A port that no UDP socket holds on 127.0.0.1 now (and no TCP listener: freePort's pick). */
export async function freeUdpPort(): Promise<number> {
  for (;;) {
    const port = await freePort();
    const free = await new Promise<boolean>((resolve) => {
      const s = dgram.createSocket("udp4");
      s.once("error", () => {
        s.close();
        resolve(false);
      });
      s.bind(port, "127.0.0.1", () => s.close(() => resolve(true)));
    });
    if (free) return port;
  }
}

/** A running server process. */
export interface ServerProcess {
  port: number;
  udpPort: number;
  proc: Subprocess;
  stop(): Promise<void>;
}

/** Whether something accepts a TCP connection on 127.0.0.1:`port` now (the probe is closed at once). */
export function accepts(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** Waits until something accepts TCP connections on `port`. */
export async function waitForPort(port: number, timeoutMs = 10000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await accepts(port)) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on port ${port} after ${timeoutMs} ms`);
    await Bun.sleep(20);
  }
}

/** Starts stock memcached (run as root: -u root) with extra arguments. */
export async function startStock(args: string[] = [], opts: { udp?: boolean } = {}): Promise<ServerProcess> {
  const port = await freePort();
  const udpPort = opts.udp ? await freeUdpPort() : 0;
  const proc = spawn(["memcached", "-u", "root", "-l", "127.0.0.1", "-p", String(port), "-U", String(udpPort), ...args], {
    stdout: "ignore",
    stderr: "pipe",
  });
  await waitForPort(port);
  return {
    port,
    udpPort,
    proc,
    async stop() {
      proc.kill("SIGTERM");
      await proc.exited;
    },
  };
}

/** What a server answered to one exchange. */
export interface Answer {
  bytes: Uint8Array;
  /** The server closed the connection. */
  closed: boolean;
}

export interface ExchangeOptions {
  /** Send the request in pieces of these sizes (the rest in one piece), pausing between them. */
  chunks?: number[];
  pauseMs?: number;
  /** Stop reading once the answer ends with these bytes (default: none; wait for idle or close). */
  until?: Uint8Array;
  /** Stop after this long without data (default 150 ms). */
  idleMs?: number;
  /** Stop once this many bytes arrived. */
  bytes?: number;
  /** With `until`: stop only once nothing more arrived for this long after it matched. */
  settleMs?: number;
}

function endsWith(a: Uint8Array, suffix: Uint8Array): boolean {
  if (a.length < suffix.length) return false;
  for (let i = 0; i < suffix.length; i++) if (a[a.length - suffix.length + i] !== suffix[i]) return false;
  return true;
}

/** Opens a connection to `port`, sends `data`, returns what came back. */
export async function exchange(port: number, data: Uint8Array, opts: ExchangeOptions = {}): Promise<Answer> {
  const sock = net.connect(port, "127.0.0.1");
  sock.setNoDelay(true);
  await new Promise<void>((resolve, reject) => {
    sock.once("connect", () => resolve());
    sock.once("error", reject);
  });
  const parts: Buffer[] = [];
  let total = 0;
  let closed = false;
  let lastData = Date.now();
  sock.on("data", (d: Buffer) => {
    parts.push(d);
    total += d.length;
    lastData = Date.now();
  });
  sock.on("close", () => (closed = true));
  sock.on("error", () => (closed = true));
  let off = 0;
  for (const n of opts.chunks ?? []) {
    sock.write(data.subarray(off, off + n));
    off += n;
    await Bun.sleep(opts.pauseMs ?? 5);
  }
  if (off < data.length) sock.write(data.subarray(off));
  const idleMs = opts.idleMs ?? 150;
  lastData = Date.now();
  for (;;) {
    await Bun.sleep(2);
    if (closed) break;
    if (opts.bytes !== undefined && total >= opts.bytes) break;
    if (opts.until && total > 0 && Date.now() - lastData >= (opts.settleMs ?? 0) && endsWith(Buffer.concat(parts, total), opts.until)) break;
    if (Date.now() - lastData > idleMs) break;
  }
  sock.destroy();
  return { bytes: new Uint8Array(Buffer.concat(parts, total)), closed };
}

/** Starts our memcached (examples/memcached/main.ts) with memcached arguments. */
export async function startOurs(args: string[] = [], opts: { udp?: boolean; env?: Record<string, string> } = {}): Promise<ServerProcess> {
  const port = await freePort();
  const udpPort = opts.udp ? await freeUdpPort() : 0;
  const proc = spawn(
    [process.execPath, "examples/memcached/main.ts", "-l", "127.0.0.1", "-p", String(port), "-U", String(udpPort), ...args],
    { stdout: "pipe", stderr: "pipe", env: { ...process.env, ...opts.env } },
  );
  try {
    await waitForPort(port, 30000);
  } catch (e) {
    proc.kill("SIGKILL");
    const err = await new Response(proc.stderr as ReadableStream).text();
    throw new Error(`our memcached did not start: ${err}`, { cause: e });
  }
  return {
    port,
    udpPort,
    proc,
    async stop() {
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 15000);
      await proc.exited;
      clearTimeout(timer);
    },
  };
}

/** Settings matching `memcached -m 64 -t 1` (stock's defaults otherwise). */
export function stockLikeSettings(over: Partial<Settings> = {}): Settings {
  return { ...defaultSettings(), threads: 1, ...over };
}

/** An in-process engine plus the answer of a fresh session to `data` fed in `chunks`. */
export class InProcess {
  readonly engine: Engine;
  constructor(settings: Settings = stockLikeSettings(), clock?: Clock) {
    this.engine = new Engine(settings, { clock, memory: "js" });
  }

  /** Feeds `data` to a new session (in pieces of `chunks` sizes, then the rest). */
  answer(data: Uint8Array, chunks: number[] = []): Answer {
    this.engine.clock.tick();
    const s = new Session(this.engine);
    const out: Uint8Array[] = [];
    let off = 0;
    const feed = (piece: Uint8Array): void => {
      if (s.closing) return;
      s.feed(piece);
      if (s.abort) {
        out.push(s.out.bytes().slice(0, s.keep));
        return;
      }
      // As the TCP transport does: while a value is arriving only what precedes the last send
      // point goes out, the rest waits (stock sends nothing in that state).
      const send = s.midValue ? s.keep : s.out.pos;
      out.push(s.out.bytes().slice(0, send));
      s.holdFrom(send);
    };
    for (const n of chunks) {
      feed(data.subarray(off, off + n));
      off += n;
    }
    if (off < data.length) feed(data.subarray(off));
    s.close();
    return { bytes: cat(...out), closed: s.closing };
  }

  close(): void {
    this.engine.close();
  }
}

/** Shows bytes readably in assertion messages. */
export function show(a: Uint8Array): string {
  let s = "";
  for (const c of a) {
    if (c === 13) s += "\\r";
    else if (c === 10) s += "\\n\n";
    else if (c < 32 || c > 126) s += `\\x${c.toString(16).padStart(2, "0")}`;
    else s += String.fromCharCode(c);
  }
  return s;
}

/**
 * One UDP request (8-byte frame header: request id, sequence 0, 1 datagram) and its answer's
 * datagrams in sequence order, once as many arrived as their header counts (a bare header
 * counting 0 is one answer too), or whatever came within 3 s.
 */
export function udpRequest(port: number, requestId: number, payload: Uint8Array | string, family: "udp4" | "udp6" = "udp4"): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket(family);
    const parts: Buffer[] = [];
    // One way out: the last datagram, the 3 s fallback or a send error, whichever is first
    // (closing twice throws from a timer into whatever test runs then).
    let done = false;
    const finish = (err?: Error | null): void => {
      if (done) return;
      done = true;
      clearTimeout(fallback);
      sock.close();
      if (err) return reject(err);
      parts.sort((x, y) => x.readUInt16BE(2) - y.readUInt16BE(2));
      resolve(parts);
    };
    sock.on("message", (m) => {
      parts.push(m);
      if (parts.length >= m.readUInt16BE(4)) finish();
    });
    const header = Buffer.alloc(8);
    header.writeUInt16BE(requestId, 0);
    header.writeUInt16BE(1, 4);
    const body = typeof payload === "string" ? Buffer.from(payload, "latin1") : payload;
    sock.send(Buffer.concat([header, body]), port, family === "udp4" ? "127.0.0.1" : "::1", (err) => {
      if (err) finish(err);
    });
    const fallback = setTimeout(() => finish(), 3000);
  });
}

/** The first `count` keys named `${prefix}N` that shard `shard` of `shards` owns. */
export function keysOwnedBy(shard: number, shards: number, count: number, prefix = "key"): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < count; i++) {
    const k = `${prefix}${i}`;
    if (shardOf(murmur3(b(k), 0, k.length), shards) === shard) out.push(k);
  }
  return out;
}
