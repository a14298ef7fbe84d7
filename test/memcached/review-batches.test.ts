/**
 * Review of batches for other shards (router.ts Batch): past 32 KiB a batch grows in native
 * memory and is handed over as it is, an END unit after its units where spare room follows.
 * In process: growth keeps every byte, the END byte lands inside the buffer at every spare room
 * (0..8 bytes), and a send refused (no such shard here) gives the native buffer back exactly
 * once, a binary unit then answering with a binary error. Against a server at -t 2: many
 * connections filling the same batches in one turn, text and binary, values whose units are
 * exactly 32 KiB or cross 32 and 64 KiB, every value read back byte for byte.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import net from "node:net";
import { NativeBuffer } from "../../src/core/buffers.ts";
import { Batch, UnitKind } from "../../examples/memcached/router.ts";
import { Proto } from "../../examples/memcached/session.ts";
import { binRequest, parseResponses, setExtras } from "./lib/binproto.ts";
import { keysOwnedBy, startOurs, type ServerProcess } from "./lib/harness.ts";

const value = (n: number, seed: number) => {
  const v = Buffer.alloc(n);
  for (let i = 0; i < n; i++) v[i] = 97 + ((i * 31 + seed) % 26);
  return v;
};

/** The native buffer a batch grew into (private: what is handed over). */
const requestOf = (b: Batch): NativeBuffer | undefined => (b as unknown as { request: NativeBuffer | undefined }).request;

test("in process: a batch keeps every byte as it grows past 32 KiB, 64 KiB and 128 KiB in native memory", async () => {
  const b = new Batch(1);
  const units: Buffer[] = [];
  let total = 0;
  for (let i = 0; total < 300 * 1024; i++) {
    const body = value(1000 + ((i * 7919) % 30000), i);
    const index = b.begin(UnitKind.TEXT, Proto.TEXT, body.length);
    expect(index).toBe(i);
    // Appended in two parts, as a forwarded unit's head and the rest of its value are.
    b.append(body, 0, 100);
    b.append(body, 100, body.length);
    const head = Buffer.alloc(6);
    head[0] = UnitKind.TEXT;
    head[1] = Proto.TEXT;
    head.writeUInt32LE(body.length, 2);
    units.push(head, body);
    total += 6 + body.length;
  }
  const nb = requestOf(b)!;
  expect(nb).toBeInstanceOf(NativeBuffer);
  expect(b.len).toBe(total);
  expect(Buffer.compare(Buffer.from(b.buf.subarray(0, b.len)), Buffer.concat(units))).toBe(0);
  b.send(0); // refused here (no shard 1): the buffer is the batch's to give back
  await b.reply;
  expect(b.failure).toBeDefined();
  expect(nb.isReleased).toBe(true);
}, 30_000);

test("in process: the END byte lands inside the handed-over buffer at every spare room; a refused send releases it once", async () => {
  const errors: unknown[] = [];
  const onError = (e: unknown) => errors.push(e);
  process.on("unhandledRejection", onError);
  try {
    for (const capacity of [64 * 1024, 128 * 1024]) {
      for (let spare = 0; spare <= 8; spare++) {
        const b = new Batch(1);
        // One binary unit first (its failure answer must stay binary), then a text unit that
        // brings the batch to `capacity - spare` bytes.
        const packet = binRequest(0x01, { key: "k", extras: setExtras(0, 0), value: "v", opaque: 0x01020304 });
        const bi = b.begin(UnitKind.BINARY, Proto.BINARY, packet.length);
        b.append(packet, 0, packet.length);
        b.noteBinary(bi, packet);
        const bodyLen = capacity - spare - b.len - 6;
        const ti = b.begin(UnitKind.TEXT, Proto.TEXT, bodyLen);
        b.append(value(bodyLen, spare), 0, bodyLen);
        const nb = requestOf(b)!;
        expect(nb.length).toBe(capacity);
        expect(b.len).toBe(capacity - spare);
        b.send(0);
        // The buffer sent: the one grown into (spare < 6 took a larger one), END after the units.
        const sent = nb.isReleased ? undefined : nb;
        if (spare >= 6) expect(sent).toBe(nb);
        if (sent !== undefined && spare > 0) expect(sent.bytes[capacity - spare]).toBe(UnitKind.END);
        await b.reply;
        expect(b.failure).toBeDefined();
        expect(nb.isReleased).toBe(true);
        const bin = parseResponses(b.unitAnswer(bi));
        expect(bin.length).toBe(1);
        expect(bin[0]!.opaque).toBe(0x01020304);
        expect(bin[0]!.status).toBe(0x84);
        expect(new TextDecoder().decode(b.unitAnswer(ti))).toStartWith("SERVER_ERROR");
      }
    }
    await Bun.sleep(10);
  } finally {
    process.off("unhandledRejection", onError);
  }
  expect(errors).toEqual([]);
}, 30_000);

let server: ServerProcess;
beforeAll(async () => {
  server = await startOurs(["-t", "2", "-m", "512"]);
}, 30_000);
afterAll(async () => {
  await server?.stop();
}, 30_000);

/** Connects; `exchange` sends a request and resolves once `done(bytes so far)` holds. */
async function connect(port: number) {
  const sock = net.connect(port, "127.0.0.1");
  await new Promise<void>((resolve, reject) => {
    sock.once("connect", () => resolve());
    sock.once("error", reject);
  });
  let buf = Buffer.alloc(0);
  let check: (() => void) | undefined;
  sock.on("data", (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    check?.();
  });
  return {
    sock,
    exchange(req: Buffer, done: (b: Buffer) => boolean): Promise<Buffer> {
      buf = Buffer.alloc(0);
      return new Promise((resolve) => {
        check = () => {
          if (done(buf)) {
            check = undefined;
            resolve(buf);
          }
        };
        sock.write(req);
      });
    },
  };
}

/** Value sizes whose units are exactly 32 KiB, and around 32 and 64 KiB. */
function sizesFor(key: string): number[] {
  const line = (n: number) => `set ${key} 0 0 ${n}\r\n`.length;
  const exact = 32768 - 6 - 2 - line(32700);
  return [exact, exact - 1, exact + 1, 65536 - 8 - line(65500), 65536 - 8 - line(65500) - 3, 1000, 65536 + 7];
}

test("many connections fill the same batches in one turn (text and binary, units of exactly 32 KiB and across 64 KiB): every value reads back", async () => {
  const conns = await Promise.all(Array.from({ length: 8 }, () => connect(server.port)));
  // Keys of both shards: whichever shard a connection lands on, half its units are forwarded.
  const keys = [...keysOwnedBy(0, 2, 16, "rb"), ...keysOwnedBy(1, 2, 16, "rb")];
  const expected = new Map<string, Buffer>();
  await Promise.all(
    conns.map(async (c, ci) => {
      const mine = keys.filter((_, i) => i % conns.length === ci);
      const text: Buffer[] = [];
      let textCount = 0;
      const bin: Buffer[] = [];
      let binCount = 0;
      mine.forEach((k, i) => {
        const sizes = sizesFor(k);
        const v = value(sizes[(i + ci) % sizes.length]!, ci * 100 + i);
        expected.set(k, v);
        // A connection speaks one protocol (its first byte decides): half are binary.
        if (ci % 2 === 0) {
          text.push(Buffer.from(`set ${k} 0 0 ${v.length}\r\n`), v, Buffer.from("\r\n"));
          textCount++;
        } else {
          bin.push(Buffer.from(binRequest(0x01, { key: k, extras: setExtras(7, 0), value: v, opaque: i })));
          binCount++;
        }
      });
      if (textCount > 0) {
        const got = await c.exchange(Buffer.concat(text), (b) => b.toString("latin1").split("\r\n").length - 1 >= textCount);
        expect(got.toString()).toBe("STORED\r\n".repeat(textCount));
      }
      if (binCount > 0) {
        const got = await c.exchange(Buffer.concat(bin), (b) => parseResponses(b).length >= binCount);
        const rs = parseResponses(got);
        expect(rs.map((r) => r.status)).toEqual(new Array(binCount).fill(0));
      }
    }),
  );
  for (const c of conns) c.sock.destroy();
  // Read back on text connections: each asks for every key at once (pipelined gets).
  const readers = await Promise.all(Array.from({ length: 8 }, () => connect(server.port)));
  await Promise.all(
    readers.map(async (c) => {
      const req = Buffer.from(keys.map((k) => `get ${k}\r\n`).join(""));
      const got = await c.exchange(req, (b) => b.toString("latin1").split("END\r\n").length - 1 >= keys.length);
      let at = 0;
      for (const k of keys) {
        const v = expected.get(k)!;
        const flags = got.toString("latin1", at, at + 200).startsWith(`VALUE ${k} 7 `) ? 7 : 0;
        const head = `VALUE ${k} ${flags} ${v.length}\r\n`;
        expect(got.toString("latin1", at, at + head.length)).toBe(head);
        at += head.length;
        expect(Buffer.compare(got.subarray(at, at + v.length), v)).toBe(0);
        at += v.length;
        expect(got.toString("latin1", at, at + 7)).toBe("\r\nEND\r\n");
        at += 7;
      }
      expect(at).toBe(got.length);
    }),
  );
  for (const c of readers) c.sock.destroy();
}, 120_000);
