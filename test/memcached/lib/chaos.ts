/**
 * Chaos against the real server process (`bun examples/memcached/main.ts -p P -U P -t 2 -m 64`):
 * hostile clients of many kinds run in loops, side by side, while checker clients set and get
 * known values (keys on both shards, text, meta and binary) and verify every answer byte for
 * byte. The server's resident memory is sampled, its stderr kept, and at the end SIGTERM
 * arrives while all of it still runs: the drain must end with exit 0.
 *
 * Used by chaos.test.ts (short runs) and runnable alone for long ones:
 *   bun test/memcached/lib/chaos.ts SECONDS PORT [scenario,...]
 */
import { spawn, type Subprocess } from "bun";
import net from "node:net";
import dgram from "node:dgram";
import { readFileSync } from "node:fs";
import { murmur3, shardOf } from "../../../examples/memcached/hash.ts";
import { binRequest, setExtras } from "./binproto.ts";
import { cat } from "./harness.ts";

const enc = new TextEncoder();
const dec = new TextDecoder("latin1");

export interface ChaosOptions {
  port: number;
  seconds: number;
  /** Hostile scenarios to run (all when absent). */
  scenarios?: string[];
  /** Extra server arguments. */
  args?: string[];
  log?: (s: string) => void;
  /** Send SIGTERM at the end while the chaos still runs (default true). */
  sigterm?: boolean;
}

export interface ChaosReport {
  /** Wrong answers (bytes differ, answers mixed up, protocol errors) seen by well-behaved clients. */
  wrong: string[];
  /** Requests of well-behaved clients that got no answer in time. */
  timeouts: string[];
  /** Misses not explained by a flush, a slab reassign or an eviction. */
  misses: string[];
  checks: number;
  tolerated: number;
  udpChecks: number;
  /** [seconds since start, RSS MiB]. */
  rss: [number, number][];
  counts: Record<string, number>;
  stderr: string;
  exitCode: number | null;
  exitMs: number;
  crashed: boolean;
  stats: Record<string, string>;
  /** Stats once the hostile clients stopped (sigterm: false). */
  quiet: Record<string, string>;
}

function rssMiB(pid: number): number {
  try {
    return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;
  } catch {
    return -1;
  }
}

/** A deterministic value for (key, version): header naming both, then pseudo-random bytes (CR/LF included). */
function valueOf(key: string, version: number, len: number): Uint8Array {
  const v = new Uint8Array(len);
  const head = enc.encode(`<${key}#${version}>`);
  let x = (murmur3(head, 0, head.length) ^ len) >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    v[i] = x & 0xff;
  }
  v.set(head.subarray(0, Math.min(head.length, len)));
  return v;
}

function shardOfKey(key: string): number {
  const k = enc.encode(key);
  return shardOf(murmur3(k, 0, k.length), 2);
}

function eq(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

class Timeout extends Error {}
/** The server refused the connection (over -c): its only line, then it closes. */
class Rejected extends Error {}
const TOO_MANY = "ERROR Too many open connections";

/** A connection with a byte reader: lines and exact counts, each with a deadline. */
class Reader {
  readonly sock: net.Socket;
  private bufs: Buffer[] = [];
  private len = 0;
  private waiter: (() => void) | undefined;
  closed = false;
  error: Error | undefined;
  private lines = 0;
  /** When the connection was made: one made after SIGTERM may meet a closed listener's reset. */
  readonly openedAt = Date.now();

  constructor(sock: net.Socket) {
    this.sock = sock;
    sock.on("data", (d: Buffer) => {
      this.bufs.push(d);
      this.len += d.length;
      this.wake();
    });
    sock.on("close", () => {
      this.closed = true;
      this.wake();
    });
    sock.on("error", (e) => {
      this.error = e;
      this.closed = true;
      this.wake();
    });
  }

  static connect(port: number): Promise<Reader> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, "127.0.0.1");
      s.setNoDelay(true);
      s.once("connect", () => resolve(new Reader(s)));
      s.once("error", reject);
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  private flat(): Buffer {
    if (this.bufs.length > 1) this.bufs = [Buffer.concat(this.bufs, this.len)];
    return this.bufs[0] ?? Buffer.alloc(0);
  }

  private async wait(deadline: number, what: string): Promise<void> {
    if (this.closed) throw new Error(`connection closed waiting for ${what}${this.error ? ` (${this.error.message})` : ""}`);
    const left = deadline - Date.now();
    if (left <= 0) throw new Timeout(`no answer for ${what}`);
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, left);
      this.waiter = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  private take(n: number): Buffer {
    const b = this.flat();
    const r = b.subarray(0, n);
    const rest = b.subarray(n);
    this.bufs = rest.length > 0 ? [rest] : [];
    this.len = rest.length;
    return Buffer.from(r);
  }

  async line(deadline: number, what: string): Promise<string> {
    for (;;) {
      const b = this.flat();
      const i = b.indexOf("\r\n");
      if (i >= 0) {
        const l = dec.decode(this.take(i + 2).subarray(0, i));
        if (this.lines++ === 0 && l === TOO_MANY) throw new Rejected(l);
        return l;
      }
      await this.wait(deadline, what);
    }
  }

  async bytes(n: number, deadline: number, what: string): Promise<Buffer> {
    while (this.len < n) await this.wait(deadline, what);
    return this.take(n);
  }

  write(b: Uint8Array): void {
    this.sock.write(b);
  }

  destroy(): void {
    this.sock.destroy();
  }
}

/** Disturbances that may legitimately remove a checker's item (flush_all, slabs reassign). */
class Disturbance {
  epoch = 0;
  active = 0;
  begin(): void {
    this.active++;
    this.epoch++;
  }
  end(): void {
    this.active--;
    this.epoch++;
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const rnd = (n: number) => Math.floor(Math.random() * n);

export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const log = o.log ?? (() => {});
  const port = o.port;
  const proc: Subprocess<"ignore", "ignore", "pipe"> = spawn(
    [process.execPath, "examples/memcached/main.ts", "-p", String(port), "-U", String(port), "-t", "2", "-m", "64", ...(o.args ?? [])],
    { stdin: "ignore", stdout: "ignore", stderr: "pipe" },
  );
  let stderr = "";
  const errDone = (async () => {
    const r = proc.stderr.getReader();
    for (;;) {
      const { value, done } = await r.read();
      if (done) break;
      stderr += dec.decode(value);
    }
  })();
  let exited = false;
  void proc.exited.then(() => (exited = true));
  // Wait for the port.
  const startBy = Date.now() + 30000;
  for (;;) {
    try {
      const r = await Reader.connect(port);
      r.destroy();
      break;
    } catch {
      if (Date.now() > startBy || exited) throw new Error(`server did not start: ${stderr}`);
      await sleep(50);
    }
  }

  const report: ChaosReport = {
    wrong: [],
    timeouts: [],
    misses: [],
    checks: 0,
    tolerated: 0,
    udpChecks: 0,
    rss: [],
    counts: {},
    stderr: "",
    exitCode: null,
    exitMs: 0,
    crashed: false,
    stats: {},
    quiet: {},
  };
  const count = (k: string, n = 1) => (report.counts[k] = (report.counts[k] ?? 0) + n);
  const disturb = new Disturbance();
  const t0 = Date.now();
  let running = true;
  /**
   * When SIGTERM was sent. The server stops listening then: a connection the kernel completes
   * after the listener's last accept is reset when its socket closes (the client's first write
   * fails with ECONNRESET), which no server can help; the hostile scenarios check only the
   * connections made before it.
   */
  let sigtermAt = Infinity;
  let checking = true;
  const all = o.scenarios === undefined;
  const want = (s: string) => all || o.scenarios!.includes(s);

  // RSS sampler.
  const sampler = (async () => {
    while (!exited) {
      report.rss.push([Math.round((Date.now() - t0) / 100) / 10, Math.round(rssMiB(proc.pid) * 10) / 10]);
      await sleep(1000);
    }
  })();

  // Large values, shared by the hostile readers (both shards).
  const bigKeys: string[] = [];
  {
    const r = await Reader.connect(port);
    for (let i = 0; bigKeys.length < 24; i++) {
      const key = `big:${i}`;
      const v = valueOf(key, 0, 400_000);
      r.write(cat(enc.encode(`set ${key} 0 0 ${v.length}\r\n`), v, enc.encode("\r\n")));
      const l = await r.line(Date.now() + 10000, "set big");
      if (l !== "STORED") throw new Error(`big set: ${l}`);
      bigKeys.push(key);
    }
    r.destroy();
  }
  const bigGet = enc.encode(`get ${bigKeys.join(" ")}\r\n`);

  // ---- the checkers ----
  async function textChecker(id: number): Promise<void> {
    const keys: string[] = [];
    for (let i = 0; i < 40; i++) keys.push(`chk${id}:${i}`);
    const shards = new Set(keys.map(shardOfKey));
    if (shards.size !== 2) report.wrong.push(`checker ${id}: keys on ${shards.size} shard(s)`);
    const known = new Map<string, { v: Uint8Array; epoch: number; version: number }>();
    let version = 0;
    let r: Reader | undefined;
    while (checking) {
      try {
        r ??= await Reader.connect(port);
        const dl = Date.now() + 10000;
        const mode = rnd(10);
        if (mode < 4) {
          // A pipelined batch: sets, then a multiget of them and other known keys.
          const n = 1 + rnd(4);
          const batch: Uint8Array[] = [];
          const setKeys: string[] = [];
          const epoch = disturb.epoch + (disturb.active > 0 ? 1e9 : 0);
          for (let i = 0; i < n; i++) {
            const key = keys[rnd(keys.length)]!;
            if (setKeys.includes(key)) continue;
            const len = rnd(20) === 0 ? 50_000 + rnd(300_000) : rnd(3000);
            const v = valueOf(key, ++version, len);
            batch.push(enc.encode(`set ${key} ${id} 0 ${len}\r\n`), v, enc.encode("\r\n"));
            setKeys.push(key);
            known.set(key, { v, epoch, version });
          }
          const getKeys = [...new Set([...setKeys, ...keys.filter(() => rnd(8) === 0)])];
          batch.push(enc.encode(`get ${getKeys.join(" ")}\r\n`));
          r.write(cat(...batch));
          for (const k of setKeys) {
            const l = await r.line(dl, `set ${k}`);
            if (l !== "STORED") report.wrong.push(`checker ${id}: set ${k}: ${JSON.stringify(l)}`);
          }
          await readValues(r, id, getKeys, known, dl, "get");
        } else if (mode < 7) {
          // Meta: mg with v, k and f, one key at a time (pipelined), then mn.
          const ks = keys.filter(() => rnd(6) === 0).slice(0, 8);
          r.write(enc.encode(ks.map((k) => `mg ${k} v k f\r\n`).join("") + "mn\r\n"));
          for (const k of ks) {
            const l = await r.line(dl, `mg ${k}`);
            const e = known.get(k);
            report.checks++;
            if (l === "EN" || l === `EN k${k}`) {
              if (e !== undefined) miss(id, k, e.epoch, known);
              continue;
            }
            const m = /^VA (\d+) k(\S+) f(\d+)$/.exec(l);
            if (m === null) {
              report.wrong.push(`checker ${id}: mg ${k}: ${JSON.stringify(l.slice(0, 200))}`);
              throw new Error("desync");
            }
            const data = await r.bytes(Number(m[1]) + 2, dl, `mg ${k} data`);
            if (e === undefined) continue;
            if (m[2] !== k || Number(m[3]) !== id || !eq(data.subarray(0, data.length - 2), e.v)) {
              report.wrong.push(`checker ${id}: mg ${k}: got k${m[2]} f${m[3]} ${data.length - 2} bytes ${JSON.stringify(dec.decode(data.subarray(0, 30)))}, want version ${e?.version}`);
            }
          }
          const l = await r.line(dl, "mn");
          if (l !== "MN") report.wrong.push(`checker ${id}: mn: ${JSON.stringify(l)}`);
        } else {
          // gets of every known key in one line.
          const ks = [...known.keys()];
          if (ks.length === 0) continue;
          r.write(enc.encode(`get ${ks.join(" ")}\r\n`));
          await readValues(r, id, ks, known, dl, "get all");
        }
      } catch (e) {
        if (e instanceof Rejected) count("checker rejected");
        else if (e instanceof Timeout) report.timeouts.push(`checker ${id}: ${e.message} at ${(Date.now() - t0) / 1000}s`);
        else if (checking) report.wrong.push(`checker ${id}: ${(e as Error).message} at ${(Date.now() - t0) / 1000}s`);
        r?.destroy();
        r = undefined;
        // What the server holds is unknown now (a set may or may not have landed).
        known.clear();
      }
    }
    r?.destroy();
  }

  function miss(id: number | string, key: string, epoch: number, known?: Map<string, unknown>): void {
    known?.delete(key);
    if (epoch !== disturb.epoch || disturb.active > 0) {
      report.tolerated++;
      return;
    }
    report.misses.push(`checker ${id}: ${key} missing at ${(Date.now() - t0) / 1000}s`);
  }

  async function readValues(r: Reader, id: number, ks: string[], known: Map<string, { v: Uint8Array; epoch: number; version: number }>, dl: number, what: string): Promise<void> {
    const seen = new Set<string>();
    for (;;) {
      const l = await r.line(dl, what);
      if (l === "END") break;
      const m = /^VALUE (\S+) (\d+) (\d+)$/.exec(l);
      if (m === null) {
        report.wrong.push(`checker ${id}: ${what}: ${JSON.stringify(l.slice(0, 200))}`);
        throw new Error("desync");
      }
      const k = m[1]!;
      const data = await r.bytes(Number(m[3]) + 2, dl, `${what} ${k} data`);
      const e = known.get(k);
      report.checks++;
      if (!ks.includes(k) || seen.has(k)) report.wrong.push(`checker ${id}: ${what}: unexpected key ${k}`);
      seen.add(k);
      if (e === undefined) continue;
      if (Number(m[2]) !== id || !eq(data.subarray(0, data.length - 2), e.v) || data[data.length - 2] !== 13 || data[data.length - 1] !== 10) {
        report.wrong.push(`checker ${id}: ${what}: ${k} flags ${m[2]} ${data.length - 2} bytes ${JSON.stringify(dec.decode(data.subarray(0, 30)))}, want version ${e.version} (${e.v.length} bytes)`);
      }
    }
    for (const k of ks) {
      const e = known.get(k);
      if (!seen.has(k) && e !== undefined) {
        report.checks++;
        miss(id, k, e.epoch, known);
      }
    }
  }

  /** Binary checker: SET then GETK, pipelined with GETKQ and a NOOP. */
  async function binaryChecker(id: number): Promise<void> {
    let r: Reader | undefined;
    let opaque = 1;
    while (checking) {
      try {
        r ??= await Reader.connect(port);
        const dl = Date.now() + 10000;
        const key = `bchk${id}:${rnd(30)}`;
        const epoch = disturb.epoch + (disturb.active > 0 ? 1e9 : 0);
        const v = valueOf(key, opaque, rnd(10) === 0 ? 100_000 : rnd(2000));
        const o1 = opaque++;
        const o2 = opaque++;
        const o3 = opaque++;
        r.write(
          cat(
            binRequest(0x01, { key, value: v, extras: setExtras(id, 0), opaque: o1 }),
            binRequest(0x0d, { key, opaque: o2 }), // GETKQ
            binRequest(0x0a, { opaque: o3 }), // NOOP
          ),
        );
        const h1 = await r.bytes(24, dl, "bin set");
        const b1 = await r.bytes(h1.readUInt32BE(8), dl, "bin set body");
        if (h1[0] !== 0x81 || h1[1] !== 0x01 || h1.readUInt16BE(6) !== 0 || h1.readUInt32BE(12) !== o1) {
          report.wrong.push(`bin ${id}: set answer ${h1.toString("hex")} ${dec.decode(b1)}`);
          throw new Error("desync");
        }
        let h = await r.bytes(24, dl, "bin getkq");
        if (h[1] === 0x0d) {
          const body = await r.bytes(h.readUInt32BE(8), dl, "bin getkq body");
          const extlen = h[4]!;
          const keylen = h.readUInt16BE(2);
          report.checks++;
          const gotKey = dec.decode(body.subarray(extlen, extlen + keylen));
          if (h.readUInt16BE(6) !== 0 || h.readUInt32BE(12) !== o2 || gotKey !== key || !eq(body.subarray(extlen + keylen), v) || body.readUInt32BE(0) !== id) {
            report.wrong.push(`bin ${id}: getkq ${key}: status ${h.readUInt16BE(6)} opaque ${h.readUInt32BE(12)}/${o2} key ${gotKey} ${body.length} bytes`);
          }
          h = await r.bytes(24, dl, "bin noop");
        } else {
          report.checks++;
          miss(`bin ${id}`, key, epoch);
        }
        if (h[1] !== 0x0a || h.readUInt32BE(12) !== o3) {
          report.wrong.push(`bin ${id}: noop answer ${h.toString("hex")}`);
          throw new Error("desync");
        }
      } catch (e) {
        if (e instanceof Rejected) count("checker rejected");
        else if (e instanceof Timeout) report.timeouts.push(`bin ${id}: ${e.message} at ${(Date.now() - t0) / 1000}s`);
        else if (checking) report.wrong.push(`bin ${id}: ${(e as Error).message}`);
        r?.destroy();
        r = undefined;
      }
    }
    r?.destroy();
  }

  /**
   * A UDP socket's error. The kernel reports a datagram's ICMP port-unreachable as ECONNREFUSED
   * on the sender's next receive: after SIGTERM the server's UDP socket is closed, so a datagram
   * sent then meets it (expected); before SIGTERM it would mean the server stopped serving UDP.
   */
  function udpError(who: string, e: Error & { code?: string }): void {
    if (e.code === "ECONNREFUSED" && Date.now() >= sigtermAt) count("udp refused after SIGTERM");
    else report.wrong.push(`${who}: ${e.message}`);
  }

  /** UDP checker: a known key (set over TCP once), got over UDP; answers must be whole and right. */
  async function udpChecker(): Promise<void> {
    const key = "udpchk:k";
    const v = valueOf(key, 1, 3000);
    const sock = dgram.createSocket("udp4");
    sock.on("error", (e) => udpError("udp checker", e));
    const got = new Map<number, Buffer[]>();
    sock.on("message", (m) => {
      const id = m.readUInt16BE(0);
      const l = got.get(id);
      if (l) l.push(m);
      else count("udp stray");
    });
    await new Promise<void>((res) => sock.bind(0, "127.0.0.1", () => res()));
    let rid = 1;
    let epoch = -1;
    while (checking) {
      if (epoch !== disturb.epoch || disturb.active > 0) {
        const r = await Reader.connect(port).catch(() => undefined);
        if (r === undefined) break;
        epoch = disturb.epoch;
        r.write(cat(enc.encode(`set ${key} 7 0 ${v.length}\r\n`), v, enc.encode("\r\n")));
        const stored = await r.line(Date.now() + 10000, "udp set").then((l) => l === "STORED", () => false);
        // Refused (over -c) or cut: set it again before the next check.
        if (!stored) epoch = -1;
        r.destroy();
      }
      const id = (rid++ & 0xffff) || rid++;
      got.set(id, []);
      const req = Buffer.alloc(8 + 6 + key.length);
      req.writeUInt16BE(id, 0);
      req.writeUInt16BE(1, 4);
      req.write(`get ${key}\r\n`, 8, "latin1");
      sock.send(req, port, "127.0.0.1");
      await sleep(100);
      const parts = got.get(id)!;
      got.delete(id);
      if (parts.length === 0) {
        count("udp lost");
        continue;
      }
      const total = parts[0]!.readUInt16BE(4);
      parts.sort((a, b) => a.readUInt16BE(2) - b.readUInt16BE(2));
      if (parts.length !== total) {
        count("udp partial");
        continue;
      }
      const body = Buffer.concat(parts.map((p) => p.subarray(8)));
      const want = cat(enc.encode(`VALUE ${key} 7 ${v.length}\r\n`), v, enc.encode("\r\nEND\r\n"));
      report.udpChecks++;
      if (!eq(body, want)) {
        if (body.toString("latin1") === "END\r\n" && (epoch !== disturb.epoch || disturb.active > 0)) report.tolerated++;
        else report.wrong.push(`udp: ${JSON.stringify(body.subarray(0, 60).toString("latin1"))} (${body.length} bytes)`);
      }
    }
    sock.close();
  }

  // ---- the hostile clients ----
  const hostile: Record<string, () => Promise<void>> = {
    /** Sends part of a large set's value, then vanishes (FIN or RST). */
    async vanishMidValue() {
      const r = await Reader.connect(port);
      const n = 100_000 + rnd(900_000);
      r.write(enc.encode(`set vanish:${rnd(50)} 0 0 ${n}\r\n`));
      r.write(new Uint8Array(rnd(n)));
      await sleep(rnd(20));
      if (rnd(2) === 0) r.sock.resetAndDestroy();
      else r.destroy();
      count("vanishMidValue");
    },
    /** RST while a large multiget answer is being sent. */
    async rstMidMultiget() {
      const r = await Reader.connect(port);
      r.write(bigGet);
      const want = rnd(2_000_000);
      const dl = Date.now() + 5000;
      await r.bytes(want, dl, "partial").catch(() => {});
      r.sock.resetAndDestroy();
      count("rstMidMultiget");
    },
    /** Pipeline, half-close; every answer must come, then the server's FIN. */
    async halfClose() {
      const r = await Reader.connect(port);
      const k = `hc:${rnd(1e9)}`;
      const n = 1 + rnd(50);
      let req = "";
      for (let i = 0; i < n; i++) req += `set ${k}:${i} 0 0 ${String(i).length}\r\n${i}\r\nget ${k}:${i}\r\n`;
      req += `get ${bigKeys[rnd(bigKeys.length)]}\r\n`;
      r.write(enc.encode(req));
      r.sock.end();
      const dl = Date.now() + 15000;
      try {
        for (let i = 0; i < n; i++) {
          const a = await r.line(dl, "hc set");
          if (a !== "STORED") throw new Error(`half-close set: ${a}`);
          const b2 = await r.line(dl, "hc value");
          if (b2 === "END") {
            if (disturb.active === 0) report.misses.push(`halfClose: ${k}:${i} missing`);
            continue;
          }
          const d = await r.line(dl, "hc data");
          const e = await r.line(dl, "hc end");
          if (b2 !== `VALUE ${k}:${i} 0 ${String(i).length}` || d !== String(i) || e !== "END") throw new Error(`half-close get: ${b2} ${d} ${e}`);
        }
        const l = await r.line(dl, "hc big");
        if (l !== "END") {
          const m = /^VALUE (\S+) 0 (\d+)$/.exec(l);
          if (m === null) throw new Error(`half-close big: ${l}`);
          const data = await r.bytes(Number(m[2]) + 2, dl, "hc big data");
          if (!eq(data.subarray(0, -2), valueOf(m[1]!, 0, 400_000))) throw new Error("half-close big value differs");
          const e = await r.line(dl, "hc big end");
          if (e !== "END") throw new Error(`half-close big end: ${e}`);
        }
        // Then the server closes.
        while (!r.closed) await sleep(5);
        if (r.error && running && r.openedAt < sigtermAt) throw new Error(`half-close: ${r.error.message}`);
        count("halfClose");
      } catch (e) {
        if (e instanceof Rejected) count("halfClose rejected");
        else if (running && r.openedAt < sigtermAt) {
          if (e instanceof Timeout) report.timeouts.push(`halfClose: ${e.message}`);
          else report.wrong.push(`halfClose: ${(e as Error).message} at ${(Date.now() - t0) / 1000}s`);
        }
      } finally {
        r.destroy();
      }
    },
    /** One byte every 100 ms of a command, for a few seconds. */
    async slowloris() {
      const r = await Reader.connect(port);
      const cmd = enc.encode(`set slow:${rnd(10)} 0 0 10\r\n0123456789\r\nget slow:${rnd(10)}\r\n`);
      const end = Date.now() + 2000 + rnd(3000);
      for (let i = 0; i < cmd.length && Date.now() < end && running; i++) {
        r.write(cmd.subarray(i, i + 1));
        await sleep(100);
      }
      r.destroy();
      count("slowloris");
    },
    /** Asks for large values and never reads, then leaves after a while. */
    async neverReads() {
      const r = await Reader.connect(port);
      r.sock.pause();
      const end = Date.now() + 3000;
      while (Date.now() < end && running && !r.closed) {
        if (!r.sock.write(bigGet)) await sleep(50);
        await sleep(5);
      }
      r.destroy();
      count("neverReads");
    },
    async garbage() {
      const r = await Reader.connect(port);
      const junk = new Uint8Array(1 + rnd(8192));
      crypto.getRandomValues(junk);
      if (rnd(2) === 0) junk[0] = 0x80;
      r.write(junk);
      await sleep(50);
      r.destroy();
      count("garbage");
    },
    /** A binary header claiming a 4 GiB body (and some bytes of it). */
    async hugeBinaryBody() {
      const r = await Reader.connect(port);
      const op = [0x01, 0x00, 0x0c, 0x02][rnd(4)]!;
      const h = binRequest(op, { key: "huge", extras: op === 0x01 || op === 0x02 ? setExtras(0, 0) : undefined, value: new Uint8Array(rnd(100_000)), bodylen: 0xffffffff });
      r.write(h);
      await sleep(100);
      r.destroy();
      count("hugeBinaryBody");
    },
    /** Hundreds of connections opened and closed (some with RST). */
    async churn() {
      const socks: net.Socket[] = [];
      const n = 100 + rnd(200);
      await Promise.all(
        Array.from({ length: n }, () =>
          new Promise<void>((res) => {
            const s = net.connect(port, "127.0.0.1");
            s.on("error", () => res());
            s.on("connect", () => {
              socks.push(s);
              if (rnd(3) === 0) s.write("get churn\r\n");
              res();
            });
          }),
        ),
      );
      for (const s of socks) {
        if (rnd(2) === 0) s.resetAndDestroy();
        else s.destroy();
      }
      count("churn", n);
    },
    /** Datagrams with truncated and lying frame headers (and some honest ones). */
    async udpLies() {
      const sock = dgram.createSocket("udp4");
      sock.on("error", (e) => udpError("udpLies", e));
      sock.on("message", () => count("udp lies answered"));
      await new Promise<void>((res) => sock.bind(0, "127.0.0.1", () => res()));
      for (let i = 0; i < 50; i++) {
        const kind = rnd(8);
        let d: Buffer;
        if (kind === 0) d = Buffer.alloc(rnd(9));
        else {
          const body = [`get ${bigKeys[rnd(bigKeys.length)]}\r\n`, `get ${bigKeys.join(" ")}\r\n`, `set u 0 0 100000\r\nabc`, "stats\r\n", "lru_crawler metadump all\r\n", "\x80\x00\x00\x04"][rnd(6)]!;
          d = Buffer.alloc(8 + body.length);
          d.write(body, 8, "latin1");
          d.writeUInt16BE(rnd(65536), 0);
          d.writeUInt16BE(kind === 1 ? 0xffff : rnd(3), 2);
          d.writeUInt16BE(kind === 2 ? 0 : kind === 3 ? 0xffff : kind === 4 ? 2 : 1, 4);
          d.writeUInt16BE(rnd(2) * 0xffff, 6);
        }
        sock.send(d, port, "127.0.0.1");
        await sleep(2);
      }
      await sleep(50);
      sock.close();
      count("udpLies");
    },
    /** noreply sets and binary quiet sets, thousands, unread. */
    async noreplyFlood() {
      const r = await Reader.connect(port);
      const parts: Uint8Array[] = [];
      for (let i = 0; i < 2000; i++) {
        const k = `nr:${rnd(5000)}`;
        if (i % 2 === 0) parts.push(enc.encode(`set ${k} 0 0 20 noreply\r\n01234567890123456789\r\n`));
        else parts.push(enc.encode(`incr ${k} 1 noreply\r\ndelete nr:${rnd(5000)} noreply\r\n`));
      }
      r.write(cat(...parts));
      const b = new Uint8Array(0);
      const q: Uint8Array[] = [];
      for (let i = 0; i < 500; i++) q.push(binRequest(0x11, { key: `nrb:${rnd(5000)}`, value: "x".repeat(50), extras: setExtras(0, 0) }));
      r.write(cat(b, ...q));
      await sleep(20);
      r.destroy();
      count("noreplyFlood");
    },
    /** flush_all, slabs reassign and crawler commands racing the load. */
    async admin() {
      const r = await Reader.connect(port);
      const dl = Date.now() + 10000;
      try {
        const k = rnd(6);
        if (k === 0) {
          disturb.begin();
          try {
            r.write(enc.encode("flush_all\r\n"));
            const l = await r.line(dl, "flush_all");
            if (l !== "OK") report.wrong.push(`flush_all: ${l}`);
            count("flush_all");
          } finally {
            disturb.end();
          }
        } else if (k === 1) {
          disturb.begin();
          try {
            r.write(enc.encode(`slabs reassign ${rnd(40) - 1} ${rnd(40)}\r\n`));
            const l = await r.line(dl, "slabs reassign");
            if (!/^(OK|BUSY|BADCLASS|NOSPARE|NOTFULL|UNSAFE|SAME|ERROR|CLIENT_ERROR .*)/.test(l)) report.wrong.push(`slabs reassign: ${l}`);
            count(`reassign ${l.split(" ")[0]}`);
            // A moved page's items are evicted once it moves; give that time inside the window.
            await sleep(200);
          } finally {
            disturb.end();
          }
        } else if (k === 2) {
          r.write(enc.encode(["lru_crawler crawl all\r\n", "lru_crawler crawl 1,2,3\r\n", "lru_crawler sleep 0\r\n", "lru_crawler tocrawl 10\r\n", "slabs automove 2\r\n", "slabs automove 0\r\n"][rnd(6)]!));
          await r.line(dl, "crawler");
          count("crawler cmd");
        } else if (k === 3) {
          r.write(enc.encode("lru_crawler metadump all\r\n"));
          // Item lines end in "\n" alone; END in "\r\n".
          const l = await r.line(dl, "metadump");
          const lines = l.split("\n");
          const last = lines.pop()!;
          if (last !== "END" && !last.startsWith("BUSY") && !last.startsWith("ERROR")) report.wrong.push(`metadump end: ${last.slice(0, 100)}`);
          for (const x of lines) if (!/^key=\S+ exp=-?\d+ la=\d+ cas=\d+ fetch=(yes|no) cls=\d+ size=\d+$/.test(x)) report.wrong.push(`metadump line: ${x.slice(0, 100)}`);
          count("metadump lines", lines.length);
          count("metadump");
        } else if (k === 4) {
          r.write(enc.encode(rnd(2) ? "stats detail on\r\n" : "stats detail dump\r\n"));
          for (;;) {
            const l = await r.line(dl, "stats detail");
            if (l === "END" || l === "OK") break;
            if (!l.startsWith("PREFIX ")) {
              report.wrong.push(`stats detail line: ${l.slice(0, 100)}`);
              break;
            }
          }
          count("stats detail");
        } else {
          r.write(enc.encode(["stats\r\n", "stats slabs\r\n", "stats items\r\n", "stats conns\r\n", "stats sizes\r\n"][rnd(5)]!));
          for (;;) {
            const l = await r.line(dl, "stats");
            if (l === "END") break;
            if (!l.startsWith("STAT ")) {
              report.wrong.push(`stats line: ${l.slice(0, 100)}`);
              break;
            }
          }
          count("stats");
        }
      } catch (e) {
        if (e instanceof Rejected) count("admin rejected");
        else if (running && r.openedAt < sigtermAt) {
          if (e instanceof Timeout) report.timeouts.push(`admin: ${e.message}`);
          else report.wrong.push(`admin: ${(e as Error).message}`);
        }
      } finally {
        r.destroy();
      }
      await sleep(200 + rnd(300));
    },
  };

  const loops: Promise<void>[] = [];
  const concurrency: Record<string, number> = { vanishMidValue: 2, rstMidMultiget: 2, halfClose: 2, slowloris: 20, neverReads: 2, garbage: 1, hugeBinaryBody: 1, churn: 1, udpLies: 1, noreplyFlood: 1, admin: 2 };
  for (const [name, fn] of Object.entries(hostile)) {
    if (!want(name)) continue;
    for (let i = 0; i < (concurrency[name] ?? 1); i++) {
      loops.push(
        (async () => {
          while (running) {
            try {
              await fn();
            } catch (e) {
              count(`${name} error`);
              await sleep(20);
            }
          }
        })(),
      );
    }
  }
  const checkers: Promise<void>[] = [];
  for (let i = 1; i <= 3; i++) checkers.push(textChecker(i));
  for (let i = 1; i <= 2; i++) checkers.push(binaryChecker(i));
  if (want("udpLies")) checkers.push(udpChecker());

  const until = t0 + o.seconds * 1000;
  while (Date.now() < until && !exited) await sleep(100);
  if (exited) report.crashed = true;
  checking = false;
  await Promise.all(checkers);
  log(`checkers done at ${(Date.now() - t0) / 1000}s`);
  // Stats before the stop (the hostile clients may hold every connection -c allows: retried).
  for (let attempt = 0; ; attempt++) {
    try {
      const r = await Reader.connect(port);
      r.write(enc.encode("stats\r\n"));
      for (;;) {
        const l = await r.line(Date.now() + 5000, "final stats");
        if (l === "END") break;
        const f = l.split(" ");
        report.stats[f[1]!] = f[2]!;
      }
      r.destroy();
      break;
    } catch (e) {
      if (e instanceof Rejected && attempt < 50) {
        await sleep(20);
        continue;
      }
      report.timeouts.push(`final stats: ${(e as Error).message}`);
      break;
    }
  }
  if (o.sigterm === false) {
    // The hostile clients stop first: every connection must be released, memory settle.
    running = false;
    await Promise.all(loops);
    await sleep(3000);
    try {
      const r = await Reader.connect(port);
      r.write(enc.encode("stats\r\n"));
      for (;;) {
        const l = await r.line(Date.now() + 5000, "quiet stats");
        if (l === "END") break;
        const f = l.split(" ");
        report.quiet[f[1]!] = f[2]!;
      }
      r.destroy();
    } catch (e) {
      report.timeouts.push(`quiet stats: ${(e as Error).message}`);
    }
  }
  if (process.env.CHAOS_HOLD !== undefined) {
    log(`holding the server (pid ${proc.pid}) for ${process.env.CHAOS_HOLD} s`);
    await sleep(Number(process.env.CHAOS_HOLD) * 1000);
  }
  // SIGTERM (while the hostile clients still run, unless sigterm is false).
  const sentAt = Date.now();
  sigtermAt = sentAt;
  proc.kill("SIGTERM");
  const killer = setTimeout(() => proc.kill("SIGKILL"), 30000);
  report.exitCode = await proc.exited;
  clearTimeout(killer);
  report.exitMs = Date.now() - sentAt;
  running = false;
  await Promise.all(loops);
  await sampler;
  await errDone;
  report.stderr = stderr;
  return report;
}

if (import.meta.main) {
  const seconds = Number(process.argv[2] ?? 30);
  const port = Number(process.argv[3] ?? 23800);
  const scenarios = process.argv[4]?.split(",");
  const r = await runChaos({ port, seconds, scenarios, log: console.log, sigterm: process.env.QUIET !== "1" });
  console.log(JSON.stringify({ ...r, rss: r.rss.map(([t, m]) => `${t}:${m}`).join(" ") }, null, 1));
}
