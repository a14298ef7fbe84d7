/**
 * A shard that cannot answer (gone, stopping): the commands that needed it get an error in their
 * own protocol, in their place in the response stream, and the connection goes on. In process:
 * shard 0 of 2 without the SMP runtime, so every batch it sends to shard 1 fails (as one to a
 * shard that has exited does).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Engine } from "../../examples/memcached/engine.ts";
import { murmur3, shardOf } from "../../examples/memcached/hash.ts";
import { fillHoles, installRouter } from "../../examples/memcached/router.ts";
import { Proto, Session } from "../../examples/memcached/session.ts";
import { b, dec, stockLikeSettings } from "./lib/harness.ts";

const TEXT_FAILED = "SERVER_ERROR the shard owning this key is unavailable\r\n";

let engine: Engine;

beforeAll(() => {
  engine = new Engine(stockLikeSettings(), { shards: 2, shardId: 0, memory: "js" });
  installRouter(engine);
});

afterAll(() => engine.close());

/** A key owned by `shard`. */
function keyOf(shard: number): string {
  for (let i = 0; ; i++) {
    const k = `key${i}`;
    if (shardOf(murmur3(b(k), 0, k.length), 2) === shard) return k;
  }
}

/** Feeds `req` to a fresh session and returns its whole answer once other shards' parts are in. */
async function ask(req: Uint8Array, protocol?: Proto): Promise<Uint8Array> {
  const s = new Session(engine, protocol === undefined ? {} : { protocol });
  s.feed(req);
  if (s.holes.length > 0) await fillHoles(s);
  const out = s.out.bytes().slice();
  s.close();
  return out;
}

/** A binary request: header (magic 0x80), extras, key. */
function binRequest(opcode: number, key: string, opaque: number): Uint8Array {
  const p = new Uint8Array(24 + key.length);
  p[0] = 0x80;
  p[1] = opcode;
  p[3] = key.length;
  p[11] = key.length;
  new DataView(p.buffer).setUint32(12, opaque);
  p.set(b(key), 24);
  return p;
}

/** The binary responses in `buf`: opcode, status, opaque and body text of each. */
function binResponses(buf: Uint8Array): { opcode: number; status: number; opaque: number; body: string }[] {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out = [];
  for (let p = 0; p < buf.length; ) {
    expect(buf[p]).toBe(0x81);
    const bodyLen = dv.getUint32(p + 8);
    out.push({ opcode: buf[p + 1]!, status: dv.getUint16(p + 6), opaque: dv.getUint32(p + 12), body: dec.decode(buf.subarray(p + 24, p + 24 + bodyLen)) });
    p += 24 + bodyLen;
  }
  return out;
}

describe("a shard that cannot answer", () => {
  test("text: a get of its key answers SERVER_ERROR in its place; local commands around it are answered", async () => {
    const mine = keyOf(0);
    const theirs = keyOf(1);
    const got = dec.decode(await ask(b(`set ${mine} 0 0 1\r\nx\r\nget ${theirs}\r\nget ${mine}\r\n`)));
    expect(got).toBe(`STORED\r\n${TEXT_FAILED}VALUE ${mine} 0 1\r\nx\r\nEND\r\n`);
  });

  test("text: stats answers SERVER_ERROR instead of failing the connection", async () => {
    const got = dec.decode(await ask(b("stats\r\nversion\r\n")));
    expect(got).toMatch(new RegExp(`^${TEXT_FAILED}VERSION \\S+\\r\\n$`));
  });

  test("text: answers gathered from every shard (stats conns, detail dump) are one SERVER_ERROR, not merged with it", async () => {
    for (const cmd of ["stats conns", "stats detail dump"]) {
      const got = dec.decode(await ask(b(`${cmd}\r\nversion\r\n`)));
      expect({ cmd, got }).toMatchObject({ cmd, got: expect.stringMatching(new RegExp(`^${TEXT_FAILED}VERSION \\S+\\r\\n$`)) });
    }
  });

  test("binary: a get of its key answers a binary error (0x84) with the request's opcode and opaque", async () => {
    const req = new Uint8Array([...binRequest(0x0c /* GETK */, keyOf(1), 0x01020304), ...binRequest(0x0a /* NOOP */, "", 7)]);
    const got = binResponses(await ask(req, Proto.BINARY));
    expect(got).toEqual([
      { opcode: 0x0c, status: 0x84, opaque: 0x01020304, body: "the shard owning this key is unavailable" },
      { opcode: 0x0a, status: 0, opaque: 7, body: "" },
    ]);
  });

  test("binary: stat answers a binary error (0x84) instead of failing the connection", async () => {
    const req = new Uint8Array([...binRequest(0x10 /* STAT */, "", 99), ...binRequest(0x0a /* NOOP */, "", 8)]);
    const got = binResponses(await ask(req, Proto.BINARY));
    expect(got).toEqual([
      { opcode: 0x10, status: 0x84, opaque: 99, body: "the shard owning this key is unavailable" },
      { opcode: 0x0a, status: 0, opaque: 8, body: "" },
    ]);
  });
});
