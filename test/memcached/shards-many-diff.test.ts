/**
 * More than two shards against stock memcached 1.6.18 (-t 1), byte for byte with CAS values
 * masked: our server with -t 3 and -t 4 gets scripted pipelines whose keys land on every shard
 * (binary quiet commands ending in NOOP, meta commands with base64 keys and q/k/O flags, mg
 * opaques interleaved across shards, multigets of 1000 keys, values near the item size limit,
 * errors from one shard in the middle of a pipeline and the answers after them), sent as one
 * write and again split at random points. Also what a connection closed by a bad magic had been
 * sent (a GETK/GATK miss and a set's failed allocation are no send points for stock). Ports
 * 24300-24399.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn } from "bun";
import { b, cat, exchange, show, waitForPort, type ServerProcess } from "./lib/harness.ts";
import { binRequest, incrExtras, parseResponses, setExtras, u32Extras } from "./lib/binproto.ts";
import { BIN_SENTINEL, BIN_SENTINEL_ANSWER, maskCas } from "./lib/cases.ts";
import { murmur3, shardOf } from "../../examples/memcached/hash.ts";

const PORT_STOCK = 24300;
const PORT_T3 = 24301;
const PORT_T4 = 24302;

async function startAt(cmd: string[], port: number): Promise<ServerProcess> {
  const proc = spawn(cmd, { stdout: "ignore", stderr: "pipe" });
  await waitForPort(port, 30000);
  return {
    port,
    udpPort: 0,
    proc,
    async stop() {
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 15000);
      await proc.exited;
      clearTimeout(timer);
    },
  };
}

let stock: ServerProcess;
let t3: ServerProcess;
let t4: ServerProcess;

beforeAll(async () => {
  [stock, t3, t4] = await Promise.all([
    startAt(["memcached", "-u", "root", "-l", "127.0.0.1", "-p", String(PORT_STOCK), "-U", "0", "-t", "1"], PORT_STOCK),
    startAt([process.execPath, "examples/memcached/main.ts", "-l", "127.0.0.1", "-p", String(PORT_T3), "-U", "0", "-t", "3"], PORT_T3),
    startAt([process.execPath, "examples/memcached/main.ts", "-l", "127.0.0.1", "-p", String(PORT_T4), "-U", "0", "-t", "4"], PORT_T4),
  ]);
}, 60_000);

afterAll(async () => {
  await Promise.all([stock?.stop(), t3?.stop(), t4?.stop()]);
}, 30_000);

/** A small seeded PRNG (mulberry32). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    let t = (s = (s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Random cut points of `n` bytes into about `pieces` pieces. */
function randomChunks(n: number, pieces: number, seed: number): number[] {
  const r = rng(seed);
  const cuts = new Set<number>();
  for (let i = 0; i < pieces; i++) cuts.add(1 + Math.floor(r() * (n - 1)));
  const sorted = [...cuts].sort((x, y) => x - y);
  const chunks: number[] = [];
  let prev = 0;
  for (const c of sorted) {
    chunks.push(c - prev);
    prev = c;
  }
  return chunks;
}

/** A key with `prefix` that shard `shard` of `shards` owns. */
function keyOwnedBy(shard: number, shards: number, prefix: string): string {
  for (let i = 0; ; i++) {
    const k = `${prefix}${i}`;
    if (shardOf(murmur3(b(k), 0, k.length), shards) === shard) return k;
  }
}

let run = 0;

/**
 * Sends `make(prefix)` (a fresh key prefix per server and mode) to stock and to ours (-t 3 and
 * -t 4), whole and split at random points; the answers must match with CAS values masked.
 */
async function diff(name: string, make: (prefix: string) => Uint8Array, o: { binary: boolean; pieces?: number; idleMs?: number }): Promise<void> {
  const failures: string[] = [];
  for (const split of [false, true]) {
    const prefix = `r${++run}x${split ? "s" : "w"}:`;
    // The end: binary, a NOOP with its own opaque; text, a value no other answer has (an mn
    // in the middle may end an answer that stock sends in parts).
    const req = cat(make(prefix), o.binary ? BIN_SENTINEL : b(`ms ${prefix}end 6 q\r\nLAST42\r\nmg ${prefix}end v\r\n`));
    const until = o.binary ? BIN_SENTINEL_ANSWER : TEXT_END;
    const theirs = await exchange(stock.port, req, { until, idleMs: o.idleMs ?? 3000 });
    const want = maskCas(theirs.bytes, o.binary);
    for (const server of [t3, t4]) {
      const chunks = split ? randomChunks(req.length, o.pieces ?? 40, run * 7 + server.port) : undefined;
      const mine = await exchange(server.port, req, { until, idleMs: o.idleMs ?? 3000, chunks, pauseMs: 1 });
      const got = maskCas(mine.bytes, o.binary);
      if (got !== want || mine.closed !== theirs.closed) {
        let at = 0;
        while (at < got.length && got[at] === want[at]) at++;
        const from = Math.max(0, at - 300);
        failures.push(
          `${name} (${split ? "split" : "whole"}, port ${server.port}): closed ${mine.closed}/${theirs.closed}, first difference at byte ${at}\n` +
            `--- stock (${theirs.bytes.length} bytes) from ${from}:\n${show(theirs.bytes.subarray(from, at + 1500))}\n` +
            `--- ours (${mine.bytes.length} bytes) from ${from}:\n${show(mine.bytes.subarray(from, at + 1500))}`,
        );
      }
    }
  }
  if (failures.length > 0) console.log(failures.join("\n"));
  expect(failures).toEqual([]);
}

const TEXT_END = b("VA 6\r\nLAST42\r\n");

describe("binary pipelines of quiet commands over every shard", () => {
  test("SETQ/GETQ/GETKQ/ADDQ/DELETEQ/INCRQ/APPENDQ/FLUSHQ ending in NOOP", async () => {
    await diff(
      "quiet",
      (p) => {
        const parts: Uint8Array[] = [];
        let op = 1;
        const keys = Array.from({ length: 24 }, (_, i) => `${p}q${i}`);
        for (const k of keys) parts.push(binRequest(0x11, { key: k, extras: setExtras(7, 0), value: `v-${k}`, opaque: op++ }));
        for (const k of keys) parts.push(binRequest(0x09, { key: k, opaque: op++ }), binRequest(0x0d, { key: k + "m", opaque: op++ }));
        for (const k of keys) parts.push(binRequest(0x0d, { key: k, opaque: op++ }));
        for (const k of keys) parts.push(binRequest(0x12, { key: k, extras: setExtras(1, 0), value: "add", opaque: op++ }));
        for (const k of keys) parts.push(binRequest(0x12, { key: k + "a", extras: setExtras(1, 0), value: "7", opaque: op++ }));
        for (const k of keys) parts.push(binRequest(0x15, { key: k + "a", extras: incrExtras(3n, 0n, 0), opaque: op++ }));
        for (const k of keys) parts.push(binRequest(0x15, { key: k, extras: incrExtras(3n, 0n, 0), opaque: op++ }));
        for (const k of keys) parts.push(binRequest(0x15, { key: k + "n", extras: incrExtras(3n, 5n, 0), opaque: op++ }));
        for (const k of keys) parts.push(binRequest(0x15, { key: k + "z", extras: incrExtras(3n, 5n, 0xffffffff), opaque: op++ }));
        for (const k of keys) parts.push(binRequest(0x19, { key: k, value: "+app", opaque: op++ }));
        for (const k of keys) parts.push(binRequest(0x19, { key: k + "none", value: "+app", opaque: op++ }));
        for (const k of keys) parts.push(binRequest(0x14, { key: k + "none", opaque: op++ }));
        for (const k of keys.slice(0, 12)) parts.push(binRequest(0x14, { key: k, opaque: op++ }));
        for (const k of keys) parts.push(binRequest(0x0c, { key: k, opaque: op++ }));
        parts.push(binRequest(0x0a, { opaque: op++ }));
        parts.push(binRequest(0x18, { opaque: op++ }));
        for (const k of keys) parts.push(binRequest(0x0d, { key: k, opaque: op++ }), binRequest(0x0c, { key: k + "a", opaque: op++ }));
        return cat(...parts);
      },
      { binary: true },
    );
  }, 60_000);
});

/** Base64 of a latin1 string. */
const b64 = (s: string): string => Buffer.from(s, "latin1").toString("base64");

/** Largest value stock 1.6.18 stores with the default -I 1m (item header 48 + CAS 8 + key + 1 + value + 2, + 4 with flags). */
const valueMax = (nkey: number, flags: number): number => 1048576 - 56 - nkey - 1 - 2 - (flags !== 0 ? 4 : 0);

function fill(n: number, seed: number): string {
  let s = "";
  const unit = `<${seed}>abcdefghijklmnopqrstuvwxyz0123456789`;
  while (s.length < n) s += unit;
  return s.slice(0, n);
}

describe("errors from one shard in the middle of a pipeline", () => {
  test("binary: a too-large SET, a bad CAS, then commands on every shard", async () => {
    await diff(
      "bin-errors",
      (p) => {
        const parts: Uint8Array[] = [];
        let op = 100;
        const keys = Array.from({ length: 12 }, (_, i) => `${p}e${i}`);
        for (const k of keys) parts.push(binRequest(0x01, { key: k, extras: setExtras(3, 0), value: `val-${k}`, opaque: op++ }));
        parts.push(binRequest(0x01, { key: keys[2]!, extras: setExtras(0, 0), value: "x".repeat(1048577), opaque: op++ }));
        for (const k of keys) parts.push(binRequest(0x0d, { key: k, opaque: op++ }));
        parts.push(binRequest(0x11, { key: keys[5]!, extras: setExtras(0, 0), value: "x".repeat(1048577), opaque: op++ }));
        parts.push(binRequest(0x01, { key: keys[7]!, extras: setExtras(0, 0), value: "casbad", cas: 123456789n, opaque: op++ }));
        parts.push(binRequest(0x11, { key: keys[8]!, extras: setExtras(0, 0), value: "casbad", cas: 123456789n, opaque: op++ }));
        parts.push(binRequest(0x04, { key: keys[9]!, cas: 987654321n, opaque: op++ }));
        parts.push(binRequest(0x19, { key: keys[10]!, value: "y".repeat(1048577), opaque: op++ }));
        parts.push(binRequest(0x05, { key: keys[0]!, extras: incrExtras(1n, 0n, 0), opaque: op++ }));
        for (const k of keys) parts.push(binRequest(0x0c, { key: k, opaque: op++ }));
        return cat(...parts);
      },
      { binary: true, pieces: 60 },
    );
  }, 60_000);

  test("text: a too-large set, a bad cas, then commands on every shard", async () => {
    await diff(
      "text-errors",
      (p) => {
        const keys = Array.from({ length: 12 }, (_, i) => `${p}t${i}`);
        let s = "";
        for (const k of keys) s += `set ${k} 1 0 ${k.length}\r\n${k}\r\n`;
        s += `set ${keys[3]} 0 0 1048577\r\n${"x".repeat(1048577)}\r\n`;
        s += `get ${keys.join(" ")}\r\n`;
        s += `cas ${keys[4]} 0 0 1 99999999\r\nz\r\n`;
        s += `ms ${b64(keys[5]!)} 1048577 b T0\r\n${"x".repeat(1048577)}\r\n`;
        s += `mg ${keys[5]} v\r\nmg ${keys[6]} v k O1 q\r\nmg ${keys[7]}none v k O2 q\r\n`;
        s += `append ${keys[8]} 0 0 1048577\r\n${"y".repeat(1048577)}\r\n`;
        s += `gets ${keys.join(" ")}\r\nmn\r\n`;
        return b(s);
      },
      { binary: false, pieces: 60 },
    );
  }, 60_000);
});

describe("values near the item size limit, forwarded", () => {
  test("text set, ms with a base64 key and flags, binary SET: the largest that fits and one past it", async () => {
    // Each key on each shard (of 3 and of 4): the owner is another shard for most connections.
    await diff(
      "near-limit-text",
      (p) => {
        let s = "";
        for (let i = 0; i < 4; i++) {
          const k = `${p}L${i}`;
          for (const flags of [0, 9]) {
            const max = valueMax(k.length, flags);
            for (const n of [max - 1, max, max + 1]) s += `set ${k} ${flags} 0 ${n}\r\n${fill(n, n)}\r\nget ${k}\r\n`;
            const mmax = valueMax(k.length, flags);
            for (const n of [mmax, mmax + 1]) s += `ms ${b64(k)} ${n} b F${flags} T0\r\n${fill(n, n + 1)}\r\nmg ${b64(k)} b s f v\r\n`;
          }
        }
        return b(s);
      },
      { binary: false, pieces: 30, idleMs: 5000 },
    );
  }, 120_000);

  test("binary SET/APPEND at the limit, and a GETK of the result", async () => {
    await diff(
      "near-limit-binary",
      (p) => {
        const parts: Uint8Array[] = [];
        let op = 1;
        for (let i = 0; i < 4; i++) {
          const k = `${p}B${i}`;
          for (const flags of [0, 5]) {
            const max = valueMax(k.length, flags);
            for (const n of [max, max + 1]) {
              parts.push(binRequest(0x01, { key: k, extras: setExtras(flags, 0), value: fill(n, n), opaque: op++ }));
              parts.push(binRequest(0x0c, { key: k, opaque: op++ }));
            }
          }
          parts.push(binRequest(0x01, { key: k, extras: setExtras(0, 0), value: "ab", opaque: op++ }));
          const room = valueMax(k.length, 0) - 2;
          parts.push(binRequest(0x0e, { key: k, value: fill(room, 1), opaque: op++ }));
          parts.push(binRequest(0x0e, { key: k, value: "z", opaque: op++ }));
          parts.push(binRequest(0x0c, { key: k, opaque: op++ }));
        }
        return cat(...parts);
      },
      { binary: true, pieces: 30, idleMs: 5000 },
    );
  }, 120_000);
});

describe("multigets of 1000 keys spread over the shards", () => {
  test("get, gets, gat, binary GETKQ and mg q: key order kept", async () => {
    await diff(
      "multiget-1000",
      (p) => {
        const keys = Array.from({ length: 1000 }, (_, i) => `${p}m${i}`);
        let s = "";
        for (let i = 0; i < keys.length; i++) if (i % 3 !== 1) s += `set ${keys[i]} ${i} 0 ${String(i).length + 2}\r\nv${i}.\r\n`;
        s += `get ${keys.join(" ")}\r\n`;
        s += `gets ${keys.join(" ")}\r\n`;
        // gat and bget lines past 2048 bytes close the connection when a read ends inside them
        // (stock's rule for lines that are not get/gets): segment-dependent, kept shorter.
        s += `gat 0 ${keys.slice(0, 150).join(" ")}\r\n`;
        s += `bget ${keys.slice(500, 650).join(" ")}\r\n`;
        for (const k of keys) s += `mg ${k} k v f q O${k.length}\r\n`;
        return b(s);
      },
      { binary: false, pieces: 50, idleMs: 5000 },
    );
  }, 120_000);

  test("binary: 1000 GETKQ/GETQ, then NOOP", async () => {
    await diff(
      "bin-multiget-1000",
      (p) => {
        const keys = Array.from({ length: 1000 }, (_, i) => `${p}n${i}`);
        const parts: Uint8Array[] = [];
        for (let i = 0; i < keys.length; i++) if (i % 3 !== 1) parts.push(binRequest(0x11, { key: keys[i]!, extras: setExtras(i, 0), value: `v${i}`, opaque: i }));
        for (let i = 0; i < keys.length; i++) parts.push(binRequest(i % 2 ? 0x0d : 0x09, { key: keys[i]!, opaque: 5000 + i }));
        return cat(...parts);
      },
      { binary: true, pieces: 50, idleMs: 5000 },
    );
  }, 120_000);
});

describe("meta commands across shards", () => {
  test("base64 keys with q/k/O flags, opaques interleaved across shards", async () => {
    await diff(
      "meta-b64",
      (p) => {
        const keys = Array.from({ length: 16 }, (_, i) => `${p}\u00e9 ${i}\t`);
        let s = "";
        for (const [i, k] of keys.entries()) s += `ms ${b64(k)} ${i + 1} b q k O${i} F${i}\r\n${"x".repeat(i + 1)}\r\n`;
        for (const [i, k] of keys.entries()) s += `mg ${b64(k)} b k v f O${100 + i}${i % 2 ? " q" : ""}\r\nmg ${b64(k + "?")} b k v O${200 + i} q\r\n`;
        s += "mn\r\n";
        for (const [i, k] of keys.entries()) s += `ma ${b64(k)} b q O${300 + i} N0 J5\r\nma ${b64(k + "n")} b O${400 + i} N0 J${i} v\r\n`;
        for (const [i, k] of keys.entries()) s += `md ${b64(k)} b q O${500 + i}${i % 3 === 0 ? " I" : ""}\r\nmd ${b64(k + "none")} b O${600 + i} q k\r\n`;
        for (const [i, k] of keys.entries()) s += `mg ${b64(k)} b k s v O${700 + i}\r\nme ${b64(k)} b\r\n`;
        for (const k of keys) s += `mg ${b64(k)} k v\r\n`; // not base64-decoded: other keys
        return b(s);
      },
      { binary: false, pieces: 80 },
    );
  }, 60_000);

  test("classic text, meta and a few bad lines mixed on one connection", async () => {
    await diff(
      "mixed-text",
      (p) => {
        const keys = Array.from({ length: 20 }, (_, i) => `${p}x${i}`);
        let s = "";
        for (const [i, k] of keys.entries()) {
          s += i % 2 ? `set ${k} ${i} 0 2\r\nv${i % 10}\r\n` : `ms ${k} 2 F${i} q\r\nv${i % 10}\r\n`;
          s += `mg ${k} v O${i} q\r\nincr ${k} 1\r\nma ${k} q\r\n`;
          if (i % 5 === 2) s += `bogus ${k}\r\nmg ${k} zz\r\nset ${k} 0 0 z\r\n`;
          if (i % 7 === 3) s += `set ${k} 0 0 2\r\nabc\r\n`;
        }
        s += `get ${keys.join(" ")}\r\n`;
        for (const k of keys) s += `touch ${k} 100 noreply\r\ndelete ${k} noreply\r\nmg ${k} O9 k\r\n`;
        return b(s);
      },
      { binary: false, pieces: 60 },
    );
  }, 60_000);
});

describe("large answers across shards (paused and resumed)", () => {
  test("a multiget of 1000 keys of 2-9 KB values, gets of them pipelined, and mg", async () => {
    await diff(
      "multiget-big",
      (p) => {
        const keys = Array.from({ length: 1000 }, (_, i) => `${p}g${i}`);
        let s = "";
        for (let i = 0; i < keys.length; i++) if (i % 5 !== 2) {
          const n = 2000 + ((i * 7919) % 7000);
          s += `set ${keys[i]} ${i} 0 ${n}\r\n${fill(n, i)}\r\n`;
        }
        s += `get ${keys.join(" ")}\r\n`;
        for (let i = 0; i < 200; i++) s += `get ${keys[(i * 13) % 1000]} ${keys[(i * 17 + 1) % 1000]}\r\n`;
        for (let i = 0; i < 200; i++) s += `mg ${keys[(i * 31) % 1000]} v k q O${i}\r\n`;
        s += `gets ${keys.slice(100, 900).join(" ")}\r\n`;
        return b(s);
      },
      { binary: false, pieces: 80, idleMs: 5000 },
    );
  }, 120_000);

  test("binary GETK/GETKQ of values of 100-900 KB over every shard", async () => {
    await diff(
      "bin-big",
      (p) => {
        const keys = Array.from({ length: 12 }, (_, i) => `${p}h${i}`);
        const parts: Uint8Array[] = [];
        let op = 1;
        for (const [i, k] of keys.entries()) parts.push(binRequest(0x11, { key: k, extras: setExtras(i, 0), value: fill(100_000 + i * 70_000, i), opaque: op++ }));
        for (let r = 0; r < 3; r++) for (const [i, k] of keys.entries()) parts.push(binRequest(i % 2 ? 0x0c : 0x0d, { key: k, opaque: op++ }), binRequest(0x0d, { key: k + "-", opaque: op++ }));
        parts.push(binRequest(0x0a, { opaque: op++ }));
        for (const k of keys) parts.push(binRequest(0x04, { key: k, opaque: op++ }), binRequest(0x00, { key: k, opaque: op++ }));
        return cat(...parts);
      },
      { binary: true, pieces: 80, idleMs: 5000 },
    );
  }, 120_000);
});

describe("many connections at once, each a long pipeline over every shard", () => {
  test("text and binary connections side by side get stock's answers, in order", async () => {
    const script = (p: string, c: number): { req: Uint8Array; binary: boolean } => {
      const r = rng(c + 11);
      const keys = Array.from({ length: 40 }, (_, i) => `${p}c${c}k${i}`);
      if (c % 3 === 2) {
        const parts: Uint8Array[] = [];
        for (let i = 0; i < 1500; i++) {
          const k = keys[Math.floor(r() * keys.length)]!;
          const x = r();
          const op = i + 1;
          if (x < 0.25) parts.push(binRequest(x < 0.12 ? 0x11 : 0x01, { key: k, extras: setExtras(i, 0), value: String(i), opaque: op }));
          else if (x < 0.5) parts.push(binRequest(x < 0.37 ? 0x0d : 0x0c, { key: k, opaque: op }));
          else if (x < 0.62) parts.push(binRequest(x < 0.56 ? 0x15 : 0x05, { key: k, extras: incrExtras(2n, 7n, 0), opaque: op }));
          else if (x < 0.7) parts.push(binRequest(x < 0.66 ? 0x19 : 0x0f, { key: k, value: "+", opaque: op }));
          else if (x < 0.78) parts.push(binRequest(x < 0.74 ? 0x14 : 0x04, { key: k, opaque: op }));
          else if (x < 0.84) parts.push(binRequest(0x1d, { key: k, extras: u32Extras(0), opaque: op }));
          else if (x < 0.9) parts.push(binRequest(0x0a, { opaque: op }));
          else parts.push(binRequest(0x12, { key: k, extras: setExtras(1, 0), value: "a", opaque: op }));
        }
        parts.push(BIN_SENTINEL);
        return { req: cat(...parts), binary: true };
      }
      let s = "";
      for (let i = 0; i < 1500; i++) {
        const k = keys[Math.floor(r() * keys.length)]!;
        const x = r();
        if (x < 0.2) s += `set ${k} ${i} 0 ${String(i).length}\r\n${i}\r\n`;
        else if (x < 0.35) s += `get ${k} ${keys[Math.floor(r() * keys.length)]} ${k}x\r\n`;
        else if (x < 0.45) s += `incr ${k} 3\r\n`;
        else if (x < 0.55) s += `mg ${k} v k s O${i}${x < 0.5 ? " q" : ""}\r\n`;
        else if (x < 0.62) s += `ma ${k} N0 J9 v q\r\n`;
        else if (x < 0.7) s += `append ${k} 0 0 1\r\n.\r\n`;
        else if (x < 0.76) s += `delete ${k}${x < 0.73 ? " noreply" : ""}\r\n`;
        else if (x < 0.82) s += `ms ${b64(k)} 2 b q\r\nzz\r\n`;
        else if (x < 0.88) s += "mn\r\n";
        else if (x < 0.94) s += `md ${k} q\r\n`;
        else s += `touch ${k} 0\r\n`;
      }
      // The end: a value no earlier answer has (mn answers in the middle end like a sentinel).
      return { req: b(s + `set ${p}c${c}end 0 0 6\r\nLAST42\r\nget ${p}c${c}end\r\n`), binary: false };
    };
    const conns = 16;
    const LAST = b("LAST42\r\nEND\r\n");
    const prefix = `r${++run}m:`;
    const expected = await Promise.all(
      Array.from({ length: conns }, async (_, c) => {
        const { req, binary } = script(prefix, c);
        const a = await exchange(stock.port, req, { until: binary ? BIN_SENTINEL_ANSWER : LAST, idleMs: 5000 });
        return maskCas(a.bytes, binary);
      }),
    );
    const failures: string[] = [];
    for (const server of [t3, t4]) {
      const got = await Promise.all(
        Array.from({ length: conns }, async (_, c) => {
          const { req, binary } = script(prefix, c);
          const chunks = c % 2 ? randomChunks(req.length, 100, c * 31 + server.port) : undefined;
          const a = await exchange(server.port, req, { until: binary ? BIN_SENTINEL_ANSWER : LAST, idleMs: 5000, chunks, pauseMs: 1 });
          return maskCas(a.bytes, binary);
        }),
      );
      for (let c = 0; c < conns; c++) {
        if (got[c] !== expected[c]) {
          let at = 0;
          while (at < got[c]!.length && got[c]![at] === expected[c]![at]) at++;
          failures.push(`connection ${c} on port ${server.port} differs at byte ${at}: stock ${JSON.stringify(expected[c]!.slice(Math.max(0, at - 200), at + 300))}, ours ${JSON.stringify(got[c]!.slice(Math.max(0, at - 200), at + 300))}`);
        }
      }
    }
    if (failures.length > 0) console.log(failures.join("\n"));
    expect(failures).toEqual([]);
  }, 120_000);
});

describe("base64 keys in odd spellings", () => {
  test("bytes outside the alphabet, padding in the middle, long keys: the same item as stock finds", async () => {
    await diff(
      "b64-odd",
      (p) => {
        const raw = [`${p}abc`, `${p}\x00\x01\x02`, `${p}\r\n x`, `${p}${"z".repeat(150)}`, `${p}\xff\xfe`, `${p}k`, `${p}kk`];
        const spell = (k: string): string[] => {
          const e = b64(k);
          return [e, e.replace(/=/g, ""), `${e.slice(0, 4)}-_.${e.slice(4)}`, `${e}====`, `${e}AAAA`, `\x7f${e}`, `${e.slice(0, 4)}====${e.slice(4)}`, e.slice(0, -1)];
        };
        let s = "";
        for (const [i, k] of raw.entries()) s += `ms ${b64(k)} b 2 F${i}\r\nv${i}\r\n`;
        for (const k of raw) for (const [j, e] of spell(k).entries()) s += `mg ${e} b k f v O${j}\r\nms ${e} 1 b q I\r\n${j % 10}\r\nmg ${e} v b\r\n`;
        for (const k of raw) for (const e of spell(k)) s += `ma ${e} b N0 J1 v\r\nmd ${e} b q\r\nme ${e} b\r\n`;
        s += `mg ${b64("a".repeat(187))} b v\r\nmg ${b64("a".repeat(188))} b v\r\nms ${b64("a".repeat(188))} 1 b\r\nx\r\n`;
        return b(s);
      },
      { binary: false, pieces: 40 },
    );
  }, 60_000);
});

/** Keys with `prefix` that one shard owns with 3 shards and with 4 (shard `s3` of 3, `s4` of 4). */
function keysOwned(prefix: string, n: number, s3: number, s4: number): string[] {
  const keys: string[] = [];
  for (let i = 0; keys.length < n; i++) {
    const k = `${prefix}${i}`;
    const h = murmur3(b(k), 0, k.length);
    if (shardOf(h, 3) === s3 && shardOf(h, 4) === s4) keys.push(k);
  }
  return keys;
}

describe("multigets whose keys one shard owns", () => {
  test("600 keys of one shard, a too-long key after them, and keys of two shards alternating", async () => {
    await diff(
      "one-owner",
      (p) => {
        const one = keysOwned(`${p}o`, 600, 1, 2);
        const other = keysOwned(`${p}q`, 300, 2, 3);
        let s = "";
        for (const [i, k] of [...one, ...other].entries()) if (i % 4 !== 3) s += `set ${k} ${i} 0 ${100 + (i % 13) * 150}\r\n${fill(100 + (i % 13) * 150, i)}\r\n`;
        s += `get ${one.join(" ")}\r\n`;
        s += `gets ${one.slice(0, 150).join(" ")}\r\n`;
        s += `get ${one.slice(0, 20).join(" ")} ${"L".repeat(251)}\r\n`;
        s += `get ${one.slice(0, 20).join(" ")} ${other.slice(0, 20).join(" ")} ${"L".repeat(251)} ${other[3]}\r\n`;
        const mixed: string[] = [];
        for (let i = 0; i < 300; i++) mixed.push(one[i]!, other[i]!);
        s += `get ${mixed.join(" ")}\r\n`;
        for (let i = 0; i < 100; i++) s += `get ${one[i]} ${other[i]}\r\nmg ${other[i + 1]} v q\r\n`;
        return b(s);
      },
      { binary: false, pieces: 60, idleMs: 5000 },
    );
  }, 120_000);
});

describe("commands for every shard, in order with keyed ones", () => {
  test("flush_all (with noreply, a delay, bad arguments), verbosity and stats reset between keyed commands", async () => {
    await diff(
      "broadcast",
      (p) => {
        const keys = Array.from({ length: 16 }, (_, i) => `${p}f${i}`);
        let s = "";
        const setAll = (tag: string): void => {
          for (const k of keys) s += `set ${k} 0 0 ${tag.length}\r\n${tag}\r\n`;
        };
        setAll("a");
        s += `flush_all noreply\r\nget ${keys.join(" ")}\r\n`;
        setAll("bb");
        s += `flush_all abc\r\nflush_all 0 0\r\nflush_all -1\r\nget ${keys.join(" ")}\r\n`;
        setAll("ccc");
        s += `verbosity 0\r\nverbosity\r\nverbosity 1 noreply\r\nverbosity 0\r\nget ${keys.join(" ")}\r\n`;
        s += `flush_all 1000\r\nmg ${keys[0]} v\r\nmg ${keys[1]} v\r\n`;
        s += `flush_all 0\r\n`;
        setAll("dddd");
        s += `get ${keys.join(" ")}\r\n`;
        return b(s);
      },
      { binary: false, pieces: 40 },
    );
  }, 60_000);

  test("binary FLUSH/FLUSHQ with and without a delay, between keyed commands", async () => {
    await diff(
      "bin-broadcast",
      (p) => {
        const keys = Array.from({ length: 16 }, (_, i) => `${p}F${i}`);
        const parts: Uint8Array[] = [];
        let op = 1;
        const setAll = (v: string): void => {
          for (const k of keys) parts.push(binRequest(0x11, { key: k, extras: setExtras(0, 0), value: v, opaque: op++ }));
        };
        const getAll = (): void => {
          for (const k of keys) parts.push(binRequest(0x0d, { key: k, opaque: op++ }));
          parts.push(binRequest(0x0a, { opaque: op++ }));
        };
        setAll("a");
        parts.push(binRequest(0x18, { opaque: op++ }));
        getAll();
        setAll("bb");
        parts.push(binRequest(0x08, { extras: u32Extras(1000), opaque: op++ }));
        getAll();
        parts.push(binRequest(0x08, { extras: u32Extras(0), opaque: op++ }));
        setAll("ccc");
        getAll();
        return cat(...parts);
      },
      { binary: true, pieces: 40 },
    );
  }, 60_000);
});

describe("what a connection closed by a bad magic had sent (binary)", () => {
  // Stock sends at a write_bin_error (and NOOP, and running out of input), not after a GETK or
  // GATK miss (a response with the key, added without a send); a bad magic then closes at once,
  // dropping what was not sent. One write each: keys of every shard, so some are forwarded.
  const keysOfEveryShard = (p: string): string[] => [...new Set([0, 1, 2, 3].map((s) => keysOwned(`${p}s${s}-`, 1, s % 3, s)[0]!))];
  const BAD = binRequest(0x0a, { magic: 0x00 });
  const scripts: [string, (p: string) => Uint8Array][] = [
    ["GETK misses", (p) => cat(...keysOfEveryShard(p).map((k, i) => binRequest(0x0c, { key: k, opaque: i })), BAD)],
    ["GATK misses", (p) => cat(...keysOfEveryShard(p).map((k, i) => binRequest(0x23, { key: k, extras: u32Extras(0), opaque: i })), BAD)],
    ["GETK hits and misses", (p) => cat(...keysOfEveryShard(p).flatMap((k, i) => [binRequest(0x11, { key: k, extras: setExtras(0, 0), value: "v" }), binRequest(0x0c, { key: k, opaque: i }), binRequest(0x0c, { key: k + "x", opaque: i })]), BAD)],
    [
      "a GET miss (an error: sent) after GETK misses, then more",
      (p) => {
        const ks = keysOfEveryShard(p);
        return cat(...ks.map((k, i) => binRequest(0x0c, { key: k, opaque: i })), binRequest(0x00, { key: ks[1]!, opaque: 9 }), ...ks.map((k, i) => binRequest(0x0c, { key: k, opaque: 20 + i })), BAD);
      },
    ],
  ];
  test("a packet whose header, extras and key pass stock's 16 KiB read buffer closes without an answer", async () => {
    const failures: string[] = [];
    for (const keyLen of [16360, 16361, 16353, 40000]) {
      const prefix = `r${++run}q:`;
      const extras = keyLen === 16353 ? setExtras(0, 0) : undefined;
      const req = cat(
        binRequest(0x01, { key: `${prefix}a`, extras: setExtras(0, 0), value: "v" }),
        binRequest(0x0c, { key: `${prefix}miss`, opaque: 7 }),
        binRequest(extras ? 0x01 : 0x00, { key: "k".repeat(keyLen), ...(extras ? { extras, value: "x" } : {}) }),
      );
      const theirs = await exchange(stock.port, req, { idleMs: 300 });
      for (const server of [t3, t4]) {
        // Whole, and in pieces that end inside the big packet's header (its carry path).
        const chunks = server === t4 ? [req.length - keyLen - 20, 7, 100] : undefined;
        const mine = await exchange(server.port, req, { idleMs: 300, chunks, pauseMs: 5 });
        if (maskCas(mine.bytes, true) !== maskCas(theirs.bytes, true) || mine.closed !== theirs.closed) {
          failures.push(`key of ${keyLen}, port ${server.port}: stock (closed ${theirs.closed}) ${show(theirs.bytes)}\nours (closed ${mine.closed}) ${show(mine.bytes)}`);
        }
      }
    }
    if (failures.length > 0) console.log(failures.join("\n"));
    expect(failures).toEqual([]);
  }, 60_000);

  test("a forwarded GETK/GATK miss is no send point", async () => {
    const failures: string[] = [];
    for (const [name, make] of scripts) {
      for (let c = 0; c < 4; c++) {
        const prefix = `r${++run}z:`;
        const req = make(prefix);
        const theirs = await exchange(stock.port, req, { idleMs: 300 });
        expect(theirs.closed).toBe(true);
        for (const server of [t3, t4]) {
          const mine = await exchange(server.port, req, { idleMs: 300 });
          if (maskCas(mine.bytes, true) !== maskCas(theirs.bytes, true) || !mine.closed) {
            failures.push(`${name}, port ${server.port}: stock ${show(theirs.bytes)}\nours ${show(mine.bytes)}`);
          }
        }
      }
    }
    if (failures.length > 0) console.log(failures.join("\n"));
    expect(failures).toEqual([]);
  }, 60_000);
});

describe("a binary set that finds no memory (-m 2 -M) is no send point", () => {
  // Stock answers ENOMEM ("Out of memory allocating item") and swallows the value: conn_swallow
  // replaces the conn_mwrite of its write_bin_error, so nothing is sent there; a bad magic right
  // after drops every answer of the read. Ours sent them: locally (binary.ts) and, with several
  // shards, for a set another shard answered (router.ts fillHoles took the error for a send).
  test("stock -t 1 against ours -t 1 and -t 3: the same bytes before the close", async () => {
    const servers = await Promise.all([
      startAt(["memcached", "-u", "root", "-l", "127.0.0.1", "-p", "24303", "-U", "0", "-t", "1", "-m", "2", "-M"], 24303),
      startAt([process.execPath, "examples/memcached/main.ts", "-l", "127.0.0.1", "-p", "24304", "-U", "0", "-t", "1", "-m", "2", "-M"], 24304),
      startAt([process.execPath, "examples/memcached/main.ts", "-l", "127.0.0.1", "-p", "24305", "-U", "0", "-t", "3", "-m", "2", "-M"], 24305),
    ]);
    try {
      // Fill every shard's class of 1 KB values until sets fail.
      let fillReq = "";
      for (let i = 0; i < 4000; i++) fillReq += `set oom${i} 0 0 1000\r\n${"x".repeat(1000)}\r\n`;
      for (const s of servers) {
        const a = await exchange(s.port, b(fillReq + "mn\r\n"), { until: b("MN\r\n"), idleMs: 5000 });
        expect(new TextDecoder().decode(a.bytes)).toContain("SERVER_ERROR out of memory storing object\r\n");
      }
      const keys = [0, 1, 2].map((sh) => keysOwned("oomk", 1, sh, sh)[0]!);
      const scripts: [string, Uint8Array][] = [
        ["SET", cat(binRequest(0x0c, { key: "nothere", opaque: 1 }), ...keys.map((k, i) => binRequest(0x01, { key: k, extras: setExtras(0, 0), value: "y".repeat(1000), opaque: 10 + i })), binRequest(0x0a, { magic: 0 }))],
        ["SETQ and APPEND", cat(binRequest(0x0c, { key: "nothere", opaque: 1 }), ...keys.flatMap((k, i) => [binRequest(0x11, { key: k, extras: setExtras(0, 0), value: "y".repeat(1000), opaque: 10 + i }), binRequest(0x19, { key: `oom${i}`, value: "z".repeat(990), opaque: 20 + i })]), binRequest(0x0a, { magic: 0 }))],
      ];
      for (const [name, req] of scripts) {
        for (let c = 0; c < 3; c++) {
          const [theirs, ...mine] = await Promise.all(servers.map((s) => exchange(s.port, req, { idleMs: 300 })));
          expect(theirs!.closed).toBe(true);
          for (const m of mine) {
            if (show(m.bytes) !== show(theirs!.bytes)) console.log(`${name}: stock ${show(theirs!.bytes)}\nours ${show(m.bytes)}`);
            expect(show(m.bytes)).toBe(show(theirs!.bytes));
            expect(m.closed).toBe(true);
          }
        }
      }
      // The same without the bad magic: every answer, in order (ENOMEM from every shard).
      const whole = cat(binRequest(0x0c, { key: "nothere", opaque: 1 }), ...keys.map((k, i) => binRequest(0x01, { key: k, extras: setExtras(0, 0), value: "y".repeat(1000), opaque: 10 + i })), BIN_SENTINEL);
      const answers = await Promise.all(servers.map((s) => exchange(s.port, whole, { until: BIN_SENTINEL_ANSWER, idleMs: 3000 })));
      expect(parseResponses(answers[0]!.bytes).map((r) => r.status)).toEqual([1, 0x82, 0x82, 0x82, 0]);
      for (const a of answers.slice(1)) expect(show(a.bytes)).toBe(show(answers[0]!.bytes));
    } finally {
      await Promise.all(servers.map((s) => s.stop()));
    }
  }, 120_000);
});
