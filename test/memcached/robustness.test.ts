/**
 * Bad input against the real server (2 shards): garbage, half a command and a hang, a
 * pipelined flood from a client that does not read, a huge multiget line, more connections
 * than -c, and memory under a set flood. In every case the server keeps running, its memory
 * stays bounded (item memory within -m), and another client is served correctly throughout.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { readFileSync } from "node:fs";
import { b, cat, dec, exchange, startOurs, startStock, type ServerProcess } from "./lib/harness.ts";
import { binRequest } from "./lib/binproto.ts";
import { murmur3, shardOf } from "../../examples/memcached/hash.ts";

let server: ServerProcess;

beforeAll(async () => {
  server = await startOurs(["-t", "2", "-m", "32", "-c", "64"]);
}, 60_000);

afterAll(async () => {
  await server?.stop();
}, 30_000);

/** Resident memory of the server process, in MiB. */
function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

/** A well-behaved client that checks set/get round trips while something else misbehaves. */
async function healthy(port: number): Promise<void> {
  const key = `healthy${Math.floor(Math.random() * 1e9)}`;
  const a = await exchange(port, b(`set ${key} 0 0 5\r\nhello\r\nget ${key}\r\n`), { until: b("END\r\n"), idleMs: 3000 });
  expect(dec.decode(a.bytes)).toBe(`STORED\r\nVALUE ${key} 0 5\r\nhello\r\nEND\r\n`);
}

function connectRaw(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1", () => resolve(s));
    s.once("error", reject);
  });
}

describe("bad input", () => {
  test("random binary garbage: that connection closes, the server and others go on", async () => {
    for (let i = 0; i < 20; i++) {
      const junk = new Uint8Array(4096);
      crypto.getRandomValues(junk);
      if (i % 2 === 0) junk[0] = 0x80; // binary protocol with a garbage header
      const a = await exchange(server.port, junk, { idleMs: 300 });
      expect(a.bytes.length).toBeLessThan(1 << 20);
    }
    await healthy(server.port);
  }, 60_000);

  test("half a command, then silence: nothing is answered, others are served", async () => {
    const s = await connectRaw(server.port);
    let got = "";
    s.on("data", (d) => (got += d.toString("latin1")));
    s.write("set halfway 0 0 100\r\nonly part of the value");
    s.write("get half");
    await Bun.sleep(300);
    await healthy(server.port);
    expect(got).toBe("");
    s.destroy();
  });

  test("a pipelined flood from a client that never reads: bounded memory, others unaffected", async () => {
    const before = rssMiB(server.proc.pid);
    const s = await connectRaw(server.port);
    s.on("error", () => {});
    s.pause();
    const chunk = Buffer.from("get flood:key\r\n".repeat(4096));
    let written = 0;
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline) {
      if (!s.write(chunk)) await new Promise<void>((r) => setTimeout(r, 5));
      written += chunk.length;
      if (written > 256 * 1024 * 1024) break;
    }
    await healthy(server.port);
    const grown = rssMiB(server.proc.pid) - before;
    // 256 MB of requests: unbounded buffering would show hundreds of MiB. What a bounded server
    // grows by depends on when JavaScriptCore collects (measured 10-57 MiB over 8 runs, before and
    // after this session's changes alike, and 89 once in CI).
    expect(grown).toBeLessThan(128);
    s.destroy();
    await healthy(server.port);
  }, 60_000);

  test("clients that ask for large values and never read (a multiget line, pipelined mg, binary GETQ): bounded memory, others unaffected; a reader gets every byte", async () => {
    // 16 items of 100 KB on both shards; each client asks for 300 MB of answers.
    const value = (i: number): string => String.fromCharCode(97 + i).repeat(100_000);
    for (let i = 0; i < 16; i++) {
      const a = await exchange(server.port, b(`set big${i} 0 0 100000\r\n${value(i)}\r\n`), { until: b("STORED\r\n"), idleMs: 3000 });
      expect(dec.decode(a.bytes)).toBe("STORED\r\n");
    }
    const keys = Array.from({ length: 3000 }, (_, i) => `big${i % 16}`);
    const before = rssMiB(server.proc.pid);
    const sockets: net.Socket[] = [];
    const requests = [
      b(`get ${keys.join(" ")}\r\n`),
      b(keys.map((k) => `mg ${k} v\r\n`).join("")),
      cat(...keys.map((k) => binRequest(0x09, { key: k }))),
    ];
    for (const r of requests) {
      const s = await connectRaw(server.port);
      s.on("error", () => {});
      s.pause();
      s.write(r);
      sockets.push(s);
    }
    await Bun.sleep(1500);
    await healthy(server.port);
    const grown = rssMiB(server.proc.pid) - before;
    // Before the pause, each copied all 300 MB of its answers into memory at once.
    expect(grown).toBeLessThan(200);
    for (const s of sockets) s.destroy();
    await healthy(server.port);
    // A reader of such a multiget (keys on both shards, paused and resumed) gets exactly its answer.
    const some = keys.slice(0, 100);
    const want = some.map((k) => `VALUE ${k} 0 100000\r\n${value(Number(k.slice(3)))}\r\n`).join("") + "END\r\n";
    const got = await exchange(server.port, b(`get ${some.join(" ")}\r\n`), { until: b("END\r\n"), idleMs: 10_000 });
    expect(got.bytes.length).toBe(want.length);
    expect(dec.decode(got.bytes) === want).toBe(true);
  }, 120_000);

  test("clients that ask another shard for large values and never read (pipelined get, mg, binary GETK, one multiget line): bounded memory; a reader gets every byte", async () => {
    // Every key of a client lives on one shard. A connection the kernel placed on the other
    // shard forwards each request there; before the fix those answers (copies of the values)
    // were gathered for the whole pipeline before anything was sent: 100 x 400 KB per client.
    const VALUE = 400_000;
    const value = (k: string): string => k.slice(-1).repeat(VALUE);
    const owned: string[][] = [[], []];
    for (let i = 0; owned[0]!.length < 8 || owned[1]!.length < 8; i++) {
      const k = `far${i}`;
      const o = shardOf(murmur3(b(k), 0, k.length), 2);
      if (owned[o]!.length < 8) owned[o]!.push(k);
    }
    for (const k of owned.flat()) {
      const a = await exchange(server.port, b(`set ${k} 0 0 ${VALUE}\r\n${value(k)}\r\n`), { until: b("STORED\r\n"), idleMs: 3000 });
      expect(dec.decode(a.bytes)).toBe("STORED\r\n");
    }
    const before = rssMiB(server.proc.pid);
    const sockets: net.Socket[] = [];
    const pick = (shard: number, n: number): string[] => Array.from({ length: n }, (_, i) => owned[shard]![i % 8]!);
    const kinds = [
      (ks: string[]) => b(ks.map((k) => `get ${k}\r\n`).join("")),
      (ks: string[]) => b(ks.map((k) => `mg ${k} v k\r\n`).join("")),
      (ks: string[]) => cat(...ks.map((k) => binRequest(0x0c, { key: k }))),
      (ks: string[]) => b(`get ${ks.join(" ")}\r\n`),
    ];
    // Six clients per kind, their keys on shard 0 or 1 in turn: about half are on the other shard
    // (the chance that none of the 24 is: 2^-24).
    for (const kind of kinds) {
      for (let c = 0; c < 6; c++) {
        const s = await connectRaw(server.port);
        s.on("error", () => {});
        s.pause();
        s.write(kind(pick(c % 2, 100)));
        sockets.push(s);
      }
    }
    let peak = 0;
    for (let i = 0; i < 30; i++) {
      await Bun.sleep(50);
      peak = Math.max(peak, rssMiB(server.proc.pid) - before);
    }
    await healthy(server.port);
    // Before the fix: well over a gigabyte (each forwarded answer copied three times). Measured
    // 74-144 MiB over 6 runs since answers cross and leave in native buffers; 242-427 (and once
    // 400.2 in CI) while they were JS arrays left to the collector.
    expect(peak).toBeLessThan(400);
    for (const s of sockets) s.destroy();
    await healthy(server.port);
    // Readers of such pipelines (paused and resumed between forwarded answers) get every byte.
    for (let c = 0; c < 4; c++) {
      const ks = pick(c % 2, 40);
      const want = ks.map((k) => `VALUE ${k} 0 ${VALUE}\r\n${value(k)}\r\n`).join("") + "END\r\n";
      const got = await exchange(server.port, b(`get ${ks.join(" ")}\r\n`), { until: b("END\r\n"), idleMs: 10_000 });
      expect(got.bytes.length).toBe(want.length);
      expect(dec.decode(got.bytes) === want).toBe(true);
      const piped = ks.map((k) => `VALUE ${k} 0 ${VALUE}\r\n${value(k)}\r\nEND\r\n`).join("");
      const got2 = await exchange(server.port, b(ks.map((k) => `get ${k}\r\n`).join("")), { bytes: piped.length, idleMs: 10_000 });
      expect(got2.bytes.length).toBe(piped.length);
      expect(dec.decode(got2.bytes) === piped).toBe(true);
    }
    for (const k of owned.flat()) await exchange(server.port, b(`delete ${k}\r\n`), { until: b("\r\n"), idleMs: 3000 });
  }, 120_000);

  test("a multiget line without end: buffered up to a limit, then the connection closes", async () => {
    const s = await connectRaw(server.port);
    let closed = false;
    s.on("close", () => (closed = true));
    s.on("error", () => {});
    s.write("get ");
    const keys = Buffer.from("k ".repeat(64 * 1024));
    for (let i = 0; i < 300 && !closed; i++) {
      if (!s.write(keys)) await new Promise<void>((r) => setTimeout(r, 2));
    }
    await Bun.sleep(200);
    expect(closed).toBe(true);
    await healthy(server.port);
  }, 60_000);

  test("more connections than -c: the extra ones get stock's error, and no more than -c are served at once", async () => {
    // 200 peers held open against -c 64 (2 shards of 32): each is either served (it answers
    // `version`) or refused (stock's error, then closed), and at most 64 are served.
    const peers = 200;
    const socks: net.Socket[] = [];
    const answers: string[] = [];
    const closed: Promise<void>[] = [];
    let firstRefusal!: () => void;
    const refusedOnce = new Promise<void>((resolve) => (firstRefusal = resolve));
    try {
      for (let i = 0; i < peers; i++) {
        const s = await connectRaw(server.port);
        answers.push("");
        s.on("data", (d) => {
          answers[i] += d.toString("latin1");
          if (answers[i] === "ERROR Too many open connections\r\n") firstRefusal();
        });
        s.on("error", () => {});
        closed.push(new Promise<void>((resolve) => s.once("close", () => resolve())));
        socks.push(s);
      }
      // Nothing is written before a refusal arrived: a refused peer's unread request would make
      // the server's close a reset, which can drop the error line on its way.
      await refusedOnce;
      const outcomes = socks.map(
        (s, i) =>
          new Promise<string>((resolve) => {
            const check = () => {
              if (answers[i]!.includes("\r\n")) resolve(answers[i]!);
            };
            s.on("data", check);
            void closed[i]!.then(() => resolve(answers[i] || "<closed>"));
            check();
            if (!s.destroyed) s.write("version\r\n");
          }),
      );
      const got = await Promise.all(outcomes);
      const served = got.filter((a) => a.startsWith("VERSION ")).length;
      const refused = got.filter((a) => a === "ERROR Too many open connections\r\n").length;
      expect(refused).toBeGreaterThan(0);
      expect(served).toBeGreaterThan(0);
      expect(served).toBeLessThanOrEqual(64);
      expect(got.filter((a) => !a.startsWith("VERSION ") && a !== "ERROR Too many open connections\r\n" && a !== "<closed>")).toEqual([]);
    } finally {
      // Also when a check failed: the tests after this one need the connections back.
      for (const s of socks) s.destroy();
    }
    await Bun.sleep(100);
    await healthy(server.port);
  }, 30_000);

  test("a set flood far beyond -m keeps item memory within -m", async () => {
    const value = "x".repeat(4000);
    const round = async (tag: string): Promise<void> => {
      let req = "";
      for (let i = 0; i < 4000; i++) req += `set fill:${tag}:${i} 0 0 4000 noreply\r\n${value}\r\n`;
      await exchange(server.port, b(req + "mn\r\n"), { until: b("MN\r\n"), idleMs: 5000 });
    };
    // One round first: the buffers a flood needs (receive buffers, cross-shard batches, the JS
    // heap) reach their size here, and half of the 32 MB of item memory is touched. Measured
    // from a cold server these alone were 50-90 MiB.
    await round("warm");
    const base = rssMiB(server.proc.pid);
    for (let r = 0; r < 8; r++) await round(String(r));
    const a = await exchange(server.port, b("stats\r\n"), { until: b("END\r\n") });
    const bytes = Number(/STAT bytes (\d+)/.exec(dec.decode(a.bytes))![1]);
    const limit = Number(/STAT limit_maxbytes (\d+)/.exec(dec.decode(a.bytes))![1]);
    expect(bytes).toBeLessThanOrEqual(limit);
    expect(Number(/STAT evictions (\d+)/.exec(dec.decode(a.bytes))![1])).toBeGreaterThan(0);
    // 128 MB more were stored into 32 MB: the process grows by the rest of the item memory
    // (at most 16 MiB after the first round), not by what was sent.
    // A shard collects its garbage on the first idle second after a burst: give it five.
    let grown = rssMiB(server.proc.pid) - base;
    for (let i = 0; i < 50 && grown >= 16 + 40; i++) {
      await Bun.sleep(100);
      grown = Math.min(grown, rssMiB(server.proc.pid) - base);
    }
    expect(grown).toBeLessThan(16 + 40);
    await healthy(server.port);
  }, 120_000);
});

describe("UDP", () => {
  test("a datagram asking for gigabytes (a multiget of 1 MB values) is answered up to the 65535 datagrams a response can count, with bounded memory; others are served", async () => {
    const udp = await startOurs(["-t", "2", "-m", "64"], { udp: true });
    try {
      for (let i = 0; i < 20; i++) {
        const v = String.fromCharCode(97 + i).repeat(1_000_000);
        const a = await exchange(udp.port, b(`set u${i} 0 0 1000000\r\n${v}\r\n`), { until: b("STORED\r\n"), idleMs: 3000 });
        expect(dec.decode(a.bytes)).toBe("STORED\r\n");
      }
      const before = rssMiB(udp.proc.pid);
      let peak = before;
      const dgram = await import("node:dgram");
      const sock = dgram.createSocket("udp4");
      let received = 0;
      let totalField = -1;
      sock.on("message", (m: Buffer) => {
        received++;
        totalField = m.readUInt16BE(4);
      });
      await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
      // 3000 keys of 1 MB: 3 GB of answers (the old code rendered them all into memory).
      const keys = Array.from({ length: 3000 }, (_, i) => `u${i % 20}`).join(" ");
      const frame = Buffer.from([0, 7, 0, 0, 0, 1, 0, 0]);
      sock.send(Buffer.concat([frame, Buffer.from(`get ${keys}\r\n`)]), udp.udpPort, "127.0.0.1");
      const deadline = Date.now() + 20_000;
      while (Date.now() < deadline && totalField < 0) {
        peak = Math.max(peak, rssMiB(udp.proc.pid));
        await Bun.sleep(20);
      }
      for (let i = 0; i < 50; i++) {
        peak = Math.max(peak, rssMiB(udp.proc.pid));
        await Bun.sleep(20);
      }
      expect(totalField).toBe(65535);
      expect(received).toBeGreaterThan(0);
      expect(peak - before).toBeLessThan(1500);
      await healthy(udp.port);
      sock.close();
    } finally {
      await udp.stop();
    }
  }, 120_000);

  test("a 24 KB datagram (a set, then a get line of 12,000 keys) is served whole, as stock serves it", async () => {
    // Datagrams land whole in the 64 KiB UDP ring (stock reads them into a 64 KiB buffer too);
    // before the UDP ring they arrived cut at 16 KiB and none of their commands ran. Stock
    // frames each response piece as its own message (README: a known difference), so the
    // payloads are compared joined.
    const servers = [await startOurs(["-t", "1"], { udp: true }), await startStock(["-t", "1"], { udp: true })];
    try {
      const dgram = await import("node:dgram");
      const answers: string[] = [];
      for (const srv of servers) {
        const sock = dgram.createSocket("udp4");
        await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
        const got: Buffer[] = [];
        sock.on("message", (m) => got.push(m));
        const frame = Buffer.from([0, 9, 0, 0, 0, 1, 0, 0]);
        const body = Buffer.from(`set cut 0 0 1\r\nx\r\nget ${"k ".repeat(12_000)}\r\n`);
        sock.send(Buffer.concat([frame, body]), srv.udpPort, "127.0.0.1");
        for (let i = 0; i < 100 && !got.map((m) => dec.decode(m.subarray(8))).join("").endsWith("END\r\n"); i++) await Bun.sleep(20);
        const a = await exchange(srv.port, b("mg cut v\r\nmn\r\n"), { until: b("MN\r\n"), idleMs: 3000 });
        answers.push(`${got.map((m) => dec.decode(m.subarray(8))).join("")} / ${dec.decode(a.bytes)}`);
        sock.close();
        await healthy(srv.port);
      }
      expect(answers[0]).toBe(answers[1]!);
      expect(answers[0]).toBe("STORED\r\nEND\r\n / VA 1\r\nx\r\nMN\r\n");
    } finally {
      for (const srv of servers) await srv.stop();
    }
  }, 60_000);
});
