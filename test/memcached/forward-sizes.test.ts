/**
 * Values for other shards' keys whose batch lands at the edges of its buffers: a batch moves to
 * native memory past 32 KiB and is handed over as it is, its units ending at an END unit where
 * spare room follows them (router.ts Batch). Sizes around both edges, one unit per batch and
 * many, every value read back byte for byte from every key's owner.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import net from "node:net";
import { keysOwnedBy, startOurs, type ServerProcess } from "./lib/harness.ts";

let server: ServerProcess;
beforeAll(async () => {
  server = await startOurs(["-t", "2", "-m", "256"]);
}, 30_000);
afterAll(async () => {
  await server?.stop();
}, 30_000);

/** A client that sends requests and reads answers up to an expected end. */
async function client(port: number) {
  const sock = net.connect(port, "127.0.0.1");
  await new Promise<void>((resolve, reject) => {
    sock.once("connect", () => resolve());
    sock.once("error", reject);
  });
  let buf = Buffer.alloc(0);
  let want: ((b: Buffer) => number) | undefined;
  let done: ((b: Buffer) => void) | undefined;
  sock.on("data", (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    const n = want?.(buf) ?? -1;
    if (n >= 0) {
      const got = buf.subarray(0, n);
      buf = buf.subarray(n);
      want = undefined;
      done!(got);
    }
  });
  return {
    sock,
    /** Sends `req`; resolves with the answer once `until` says how long it is. */
    ask(req: Buffer, until: (b: Buffer) => number): Promise<Buffer> {
      return new Promise((resolve) => {
        want = until;
        done = resolve;
        sock.write(req);
      });
    },
  };
}

const endsWith = (s: string) => (b: Buffer) => {
  const i = b.indexOf(s);
  return i < 0 ? -1 : i + s.length;
};
const value = (n: number, seed: number) => {
  const v = Buffer.alloc(n);
  for (let i = 0; i < n; i++) v[i] = 97 + ((i * 31 + seed) % 26);
  return v;
};

test("one unit per batch: values whose batch ends just below, at and past 32 KiB and 64 KiB", async () => {
  const c = await client(server.port);
  const keys = [...keysOwnedBy(0, 2, 1, "fs"), ...keysOwnedBy(1, 2, 1, "fs")];
  const sizes: number[] = [];
  // A unit is 6 bytes of header, the command line and the value with its CRLF: these sizes put
  // a one-unit batch at 32 KiB +- 8 and at 64 KiB less 0..8 (spare room under an END unit's 6).
  for (let d = -40; d <= 10; d++) sizes.push(32768 + d, 65536 + d - 30);
  for (const size of sizes) {
    for (const k of keys) {
      const v = value(size, size);
      const stored = await c.ask(Buffer.concat([Buffer.from(`set ${k} 0 0 ${size}\r\n`), v, Buffer.from("\r\n")]), endsWith("\r\n"));
      expect(stored.toString()).toBe("STORED\r\n");
      const got = await c.ask(Buffer.from(`get ${k}\r\n`), endsWith("\r\nEND\r\n"));
      expect(got.length).toBe(`VALUE ${k} 0 ${size}\r\n`.length + size + 7);
      expect(Buffer.compare(got.subarray(got.length - size - 7, got.length - 7), v)).toBe(0);
    }
  }
  c.sock.destroy();
}, 120_000);

test("many units per batch: pipelined sets of other shards' keys in sizes that cross the edges, then a multiget", async () => {
  const c = await client(server.port);
  const keys = [...keysOwnedBy(0, 2, 12, "fp"), ...keysOwnedBy(1, 2, 12, "fp")];
  for (const base of [1000, 5000, 16000, 33000]) {
    const parts: Buffer[] = [];
    const values = keys.map((_, i) => value(base + i * 7, i));
    keys.forEach((k, i) => parts.push(Buffer.from(`set ${k} 0 0 ${values[i]!.length}\r\n`), values[i]!, Buffer.from("\r\n")));
    const stored = await c.ask(Buffer.concat(parts), (b) => (b.toString().split("STORED\r\n").length - 1 === keys.length ? b.length : -1));
    expect(stored.toString()).toBe("STORED\r\n".repeat(keys.length));
    const got = await c.ask(Buffer.from(`get ${keys.join(" ")}\r\n`), endsWith("\r\nEND\r\n"));
    let at = 0;
    keys.forEach((k, i) => {
      const head = `VALUE ${k} 0 ${values[i]!.length}\r\n`;
      expect(got.subarray(at, at + head.length).toString()).toBe(head);
      at += head.length;
      expect(Buffer.compare(got.subarray(at, at + values[i]!.length), values[i]!)).toBe(0);
      at += values[i]!.length + 2;
    });
    expect(got.subarray(at).toString()).toBe("END\r\n");
  }
  c.sock.destroy();
}, 120_000);

test("in process: a batch handed over with spare room after its units stops at its END unit (what follows is never run)", async () => {
  const { Engine } = await import("../../examples/memcached/engine.ts");
  const { execBatch, installRouter, UnitKind } = await import("../../examples/memcached/router.ts");
  const { stockLikeSettings } = await import("./lib/harness.ts");
  const { BufferCache } = await import("../../src/core/buffers.ts");
  const engine = new Engine(stockLikeSettings({}), { shards: 2, shardId: 1, memory: "js" });
  installRouter(engine);
  const { unit } = await import("./lib/units.ts");
  // A kept mapping's stale bytes after the END: a whole, valid unit that must not run.
  const parts = [unit(UnitKind.TEXT, "set kept 0 0 1\r\nx\r\n"), unit(UnitKind.END, ""), unit(UnitKind.TEXT, "set stale 0 0 1\r\ny\r\n")];
  const cache = new BufferCache({ retainBytes: 1 << 20 });
  const payload = cache.take(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    payload.bytes.set(p, at);
    at += p.length;
  }
  const answer = execBatch(0, payload);
  const bytes = answer instanceof Uint8Array ? answer : answer.bytes;
  // One record, the first unit's answer.
  expect(new TextDecoder().decode(bytes.subarray(4, 4 + (bytes[0]! | (bytes[1]! << 8))))).toBe("STORED\r\n");
  const s = new (await import("../../examples/memcached/session.ts")).Session(engine);
  s.routing = false;
  s.feed(new TextEncoder().encode("get kept stale\r\n"));
  expect(new TextDecoder().decode(s.out.bytes())).toBe("VALUE kept 0 1\r\nx\r\nEND\r\n");
  engine.close();
  cache.close();
});
