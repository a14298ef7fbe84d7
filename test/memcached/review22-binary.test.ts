/**
 * The binary protocol's odd corners against stock memcached 1.6.18, byte for byte: every opcode
 * with wrong extras, a key or a value where none belongs, a non-zero data type or vbucket, a CAS
 * on add/incr/append/touch, a body shorter than its key and extras, body lengths of 2 GiB and
 * more, a response magic sent as a request, long quiet batches ended by a NOOP, text and binary
 * on one connection, and the stat keys whose answers do not depend on the host. Each case goes
 * on a fresh connection, in order, to stock -t 1, to our engine in process, and to our server
 * with -t 1 and -t 3 (keys on other shards are forwarded; CAS values masked there). Status,
 * opaque, CAS, body and whether the connection closed must all be the same.
 *
 * Not compared: a STAT whose key is followed by more body (stock's strncmp reads past the key
 * into whatever its read buffer holds next, so `res` + `et` resets); see the review report.
 *
 * Stock keeps a connection's swallow count in its per-fd conn struct: a connection closed in
 * the middle of a swallow leaves it to the next one on that fd, which then swallows where a
 * fresh server would not. No case here ends mid-swallow, so stock answers as when fresh.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { b, cat, exchange, InProcess, keysOwnedBy, show, startOurs, startStock, stockLikeSettings, type Answer, type ServerProcess } from "./lib/harness.ts";
import { binRequest as R, incrExtras, parseResponses, setExtras, u32Extras } from "./lib/binproto.ts";
import { BIN_SENTINEL, BIN_SENTINEL_ANSWER, maskCas } from "./lib/cases.ts";

interface BinCase {
  name: string;
  send: Uint8Array;
  /** A NOOP (opaque 0x5e5e5e5e) follows and its answer ends the exchange. */
  sentinel: boolean;
  /** Sent in pieces of these sizes (stock gets the same pieces). */
  chunks?: number[];
}

const cases: BinCase[] = [];
const add = (name: string, send: Uint8Array, sentinel = true): void => void cases.push({ name, send, sentinel });
const S = (key: string, value: string, o: { op?: number; flags?: number; exp?: number; cas?: bigint; opaque?: number } = {}): Uint8Array =>
  R(o.op ?? 0x01, { key, value, extras: setExtras(o.flags ?? 0, o.exp ?? 0), cas: o.cas, opaque: o.opaque });
const ones = (n: number): Uint8Array => new Uint8Array(n).fill(1);

// ---- body lengths of 2 GiB and more: stock's swallow and vlen are C ints (the fixed defect)
for (const bl of [0x80000000, 0xfffffff0, 0xffffffff]) {
  const h = bl.toString(16);
  add(`unknown opcode, bodylen 0x${h}: answered, nothing swallowed`, cat(R(0x0a, { opaque: 1 }), R(0x33, { bodylen: bl, opaque: 2 }), R(0x0c, { key: "nx", opaque: 3 })));
  // (sasl swallows bodylen - keylen: from 0x80000000 that is still positive, and swallowed.)
  if (bl !== 0x80000000) add(`sasl auth, bodylen 0x${h}: answered, nothing swallowed`, cat(R(0x0a, { opaque: 1 }), R(0x21, { key: "PLAIN", bodylen: bl, opaque: 2 })));
  add(`stat, bodylen 0x${h}`, cat(R(0x0a, { opaque: 1 }), R(0x10, { key: "nope", bodylen: bl, opaque: 2 })));
  add(`touch, bodylen 0x${h}`, cat(R(0x0a, { opaque: 1 }), R(0x1c, { key: "nope", extras: u32Extras(0), bodylen: bl, opaque: 2 })));
}
for (const bl of [0xfffffff0, 0xffffffff]) {
  const h = bl.toString(16);
  add(`set, bodylen 0x${h}: too large, nothing swallowed, old value gone`, cat(S("hb1", "old"), R(0x01, { key: "hb1", extras: setExtras(0, 0), bodylen: bl, opaque: 2 }), R(0x0c, { key: "hb1", opaque: 3 })));
  add(`setq, bodylen 0x${h}`, cat(R(0x11, { key: "hb2", extras: setExtras(0, 0), bodylen: bl, opaque: 2 }), R(0x0c, { key: "hb2", opaque: 3 })));
  add(`add, bodylen 0x${h}`, cat(S("hb3", "old"), R(0x02, { key: "hb3", extras: setExtras(0, 0), bodylen: bl, opaque: 2 }), R(0x0c, { key: "hb3", opaque: 3 })));
  add(`append, bodylen 0x${h}`, cat(S("hb4", "old"), R(0x0e, { key: "hb4", bodylen: bl, opaque: 2 }), R(0x0c, { key: "hb4", opaque: 3 })));
  add(`prependq, bodylen 0x${h}`, cat(R(0x1a, { key: "hb5", bodylen: bl, opaque: 2 }), R(0x0a, { opaque: 3 })));
}

// ---- wrong extras length for the opcode
for (const op of [0x00, 0x09, 0x0c, 0x0d, 0x04, 0x14]) for (const el of [4, 8]) add(`op 0x${op.toString(16)} with ${el} extras`, R(op, { key: "k", extras: ones(el), opaque: 7 }));
for (const op of [0x05, 0x06, 0x15, 0x16]) for (const el of [0, 8, 19, 21]) add(`incr/decr 0x${op.toString(16)} with ${el} extras`, R(op, { key: "k", extras: ones(el), opaque: 7 }));
for (const op of [0x01, 0x02, 0x03, 0x11, 0x12, 0x13]) for (const el of [0, 4, 12]) add(`store 0x${op.toString(16)} with ${el} extras`, R(op, { key: "k", extras: ones(el), value: "v", opaque: 7 }));
for (const op of [0x0e, 0x0f, 0x19, 0x1a]) add(`append/prepend 0x${op.toString(16)} with 8 extras`, R(op, { key: "k", extras: ones(8), value: "v", opaque: 7 }));
for (const op of [0x1c, 0x1d, 0x1e, 0x23, 0x24]) for (const el of [0, 8]) add(`touch/gat 0x${op.toString(16)} with ${el} extras`, R(op, { key: "k", extras: ones(el), opaque: 7 }));
for (const op of [0x08, 0x18]) for (const el of [1, 8]) add(`flush 0x${op.toString(16)} with ${el} extras`, R(op, { extras: ones(el), opaque: 7 }));
for (const op of [0x0a, 0x0b, 0x07, 0x17, 0x20, 0x10]) add(`op 0x${op.toString(16)} with 4 extras`, R(op, { extras: ones(4), opaque: 7 }));
add("get with 255 extras", R(0x00, { key: "k", extras: ones(255), opaque: 7 }));
add("unknown opcode with 255 extras", R(0x3c, { key: "k", extras: ones(255), opaque: 7 }));
add("verbosity (unknown in 1.6.18) with its 4 extras", R(0x1b, { extras: u32Extras(1), opaque: 7 }));

// ---- a key or a value where none belongs
for (const op of [0x0a, 0x0b, 0x07, 0x17, 0x08, 0x18, 0x20]) add(`key on 0x${op.toString(16)}`, R(op, { key: "kk", opaque: 7 }));
for (const op of [0x0a, 0x0b, 0x07, 0x17, 0x08, 0x18, 0x20]) add(`value on 0x${op.toString(16)}`, R(op, { value: "vv", opaque: 7 }));
add("flush with exptime and a value", R(0x08, { extras: u32Extras(0), value: "vv", opaque: 7 }));
for (const op of [0x00, 0x0c, 0x04]) add(`value on keyed 0x${op.toString(16)}`, R(op, { key: "k", value: "vv", opaque: 7 }));
add("value on incr", R(0x05, { key: "k", extras: incrExtras(1n, 0n, 0), value: "vv", opaque: 7 }));
// Touch and gat take any body past the key: it is read as the next request.
for (const op of [0x1c, 0x1d, 0x1e, 0x23, 0x24]) add(`garbage value on touch/gat 0x${op.toString(16)}`, cat(S("tv", "x"), R(op, { key: "tv", extras: u32Extras(0), value: "v".repeat(30), opaque: 7 })));
for (const op of [0x1c, 0x1d]) add(`a NOOP as the value of 0x${op.toString(16)}`, cat(S("tv", "x"), R(op, { key: "tv", extras: u32Extras(0), value: R(0x0a, { opaque: 99 }), opaque: 7 })));
add("a NOOP as the value of an unknown stat", R(0x10, { key: "x", value: R(0x0a, { opaque: 99 }), opaque: 7 }));

// ---- data type, vbucket, CAS where it does not belong
{
  const p = R(0x00, { key: "nok", opaque: 7 });
  p[5] = 1;
  p[6] = 0x12;
  p[7] = 0x34;
  add("data type and vbucket on a get", p);
  const q = S("dv", "x");
  q[5] = 0xff;
  q[6] = 0xff;
  q[7] = 0xff;
  add("data type and vbucket on a set", cat(q, R(0x00, { key: "dv" })));
}
add("cas on add of a missing key", S("ca1", "x", { op: 0x02, cas: 5n, opaque: 3 }));
add("cas on add of an existing key", cat(S("ca2", "x"), S("ca2", "y", { op: 0x02, cas: 5n, opaque: 3 })));
add("cas on addq of an existing key", cat(S("ca3", "x"), S("ca3", "y", { op: 0x12, cas: 5n, opaque: 3 })));
add("cas on replace, mismatch", cat(S("ca4", "x"), S("ca4", "y", { op: 0x03, cas: 5n, opaque: 3 })));
add("cas on incr of a missing key", R(0x05, { key: "ci1", extras: incrExtras(1n, 7n, 0), cas: 123n, opaque: 3 }));
add("cas on incr, mismatch", cat(S("ci2", "5"), R(0x05, { key: "ci2", extras: incrExtras(1n, 7n, 0), cas: 123n, opaque: 3 })));
add("cas on incrq, mismatch", cat(S("ci3", "5"), R(0x15, { key: "ci3", extras: incrExtras(1n, 7n, 0), cas: 123n, opaque: 3 })));
add("cas on append, mismatch", cat(S("cp1", "5"), R(0x0e, { key: "cp1", value: "z", cas: 123n, opaque: 3 }), R(0x00, { key: "cp1" })));
add("cas on append of a missing key", R(0x0e, { key: "cp2", value: "z", cas: 123n, opaque: 3 }));
add("cas on touch", cat(S("ct1", "5"), R(0x1c, { key: "ct1", extras: u32Extras(0), cas: 123n, opaque: 3 })));
add("cas on deleteq, mismatch", cat(S("cd1", "5"), R(0x14, { key: "cd1", cas: 123n, opaque: 3 })));
add("cas on get", cat(S("cg1", "5"), R(0x00, { key: "cg1", cas: 123n, opaque: 3 })));

// ---- incr/decr: initial value, exptime 0xffffffff, odd values
add("incrq, no create (exptime 0xffffffff)", R(0x15, { key: "ie1", extras: incrExtras(1n, 9n, 0xffffffff), opaque: 3 }));
add("decr creates with the initial value", cat(R(0x06, { key: "ie2", extras: incrExtras(1n, 9n, 100), opaque: 3 }), R(0x00, { key: "ie2" })));
add("decrq creates 2^64-1", cat(R(0x16, { key: "ie3", extras: incrExtras(1n, 18446744073709551615n, 0), opaque: 3 }), R(0x00, { key: "ie3" })));
add("incr/decr by 2^64-1", cat(S("ie4", "10"), R(0x05, { key: "ie4", extras: incrExtras(18446744073709551615n, 0n, 0) }), R(0x06, { key: "ie4", extras: incrExtras(18446744073709551615n, 0n, 0) })));
add("incr of a value with a leading space", cat(S("ie5", " 10"), R(0x05, { key: "ie5", extras: incrExtras(1n, 0n, 0) })));
add("incr of a 23-digit value", cat(S("ie6", "12345678901234567890123"), R(0x05, { key: "ie6", extras: incrExtras(1n, 0n, 0) })));
add("incr of an empty value", cat(S("ie7", ""), R(0x05, { key: "ie7", extras: incrExtras(1n, 0n, 0) })));

// ---- bodies shorter than key + extras, response magic, text and binary mixed
add("bodylen < key + extras on set", R(0x01, { key: "abc", extras: setExtras(0, 0), bodylen: 10 }), false);
add("bodylen < extras on incr", R(0x05, { key: "a", extras: incrExtras(1n, 0n, 0), bodylen: 5 }), false);
add("flush with 4 extras and bodylen 0", R(0x08, { extras: u32Extras(0), bodylen: 0 }), false);
add("0x81 as the first byte (text mode)", R(0x0a, { magic: 0x81, opaque: 1 }), false);
add("0x81 after a NOOP", cat(R(0x0a, { opaque: 1 }), R(0x0a, { magic: 0x81, opaque: 1 })), false);
add("text, then a binary packet", cat(b("get x\r\n"), R(0x0a, { opaque: 1 })), false);
add("binary, then a text line", cat(R(0x0a, { opaque: 1 }), b("get x\r\n")), false);
add("text, then a binary packet holding newlines", cat(b("version\r\n"), R(0x0a, { opaque: 0x0a0a0a0a })), false);

// ---- many quiet commands, then the NOOP
{
  const ps: Uint8Array[] = [];
  for (let i = 0; i < 60; i++) ps.push(S(`q${i}`, `v${i}`, { op: 0x11, opaque: i }));
  for (let i = 0; i < 70; i++) ps.push(R(0x09, { key: `q${i}`, opaque: 1000 + i }));
  for (let i = 0; i < 70; i++) ps.push(R(0x0d, { key: `q${i}`, opaque: 2000 + i }));
  for (let i = 0; i < 30; i++) ps.push(S(`q${i}`, "x", { op: 0x12, opaque: 3000 + i }));
  for (let i = 50; i < 70; i++) ps.push(R(0x14, { key: `q${i}`, opaque: 4000 + i }));
  for (let i = 0; i < 10; i++) ps.push(R(0x15, { key: `q${i}`, extras: incrExtras(1n, 0n, 0), opaque: 5000 + i }));
  for (let i = 0; i < 5; i++) ps.push(R(0x1e, { key: `q${i}`, extras: u32Extras(0), opaque: 6000 + i }), R(0x24, { key: `qq${i}`, extras: u32Extras(0), opaque: 6100 + i }));
  ps.push(R(0x19, { key: "q1", value: "A" }), R(0x1a, { key: "q2", value: "B" }), R(0x19, { key: "zz", value: "A", opaque: 7777 }), R(0x18, { extras: u32Extras(0), opaque: 8888 }));
  add("300 quiet commands (hits, misses, errors), then NOOP", cat(...ps));
}

// ---- flush with a delay, quit, gat, keys
add("flush with a delay", cat(S("fd1", "x"), R(0x08, { extras: u32Extras(100), opaque: 2 }), R(0x00, { key: "fd1" }), R(0x18, { extras: u32Extras(0) })));
// Each ends with an immediate flush: a pending delayed one would flush the next cases' items
// whenever each server's clock reaches it.
add("flushq with a delay", cat(S("fd2", "x"), R(0x18, { extras: u32Extras(2), opaque: 2 }), R(0x00, { key: "fd2" }), R(0x18, { extras: u32Extras(0) })));
add("quitq after a quiet set", cat(S("qq1", "x", { op: 0x11 }), R(0x17, {})), false);
add("quit with a key", R(0x07, { key: "x" }), false);
add("gatk, gatkq, gatq hits", cat(S("gk", "val", { flags: 5 }), R(0x23, { key: "gk", extras: u32Extras(100), opaque: 4 }), R(0x24, { key: "gk", extras: u32Extras(100), opaque: 4 }), R(0x1e, { key: "gk", extras: u32Extras(100), opaque: 4 })));
add("touch with exptime 0xffffffff", cat(S("gk2", "val"), R(0x1c, { key: "gk2", extras: u32Extras(0xffffffff), opaque: 4 }), R(0x00, { key: "gk2" })));
add("key with a space, a NUL and CRLF", cat(R(0x01, { key: "a b\0c\r\n", extras: setExtras(1, 0), value: "z" }), R(0x0c, { key: "a b\0c\r\n" })));
add("key of 250 bytes", cat(R(0x01, { key: "k".repeat(250), extras: setExtras(1, 0), value: "z" }), R(0x0c, { key: "k".repeat(250) })));
add("key of 251 bytes on an unknown opcode", R(0x30, { key: "k".repeat(251), value: "z" }), false);
add("key of 251 bytes on stat", R(0x10, { key: "k".repeat(251) }), false);

// ---- stat keys whose answers do not depend on the host; sasl; unknown opcodes
for (const k of ["conns", "detail", "detail on", "detail dump", "detail off", "reset", "resetx", "extstore", "sizes", "sizes_enable", "sizes_disable", "itemsx", "slabs ", "x"]) add(`stat ${JSON.stringify(k)}`, R(0x10, { key: k, opaque: 5 }));
add("sasl list mechs with a key", R(0x20, { key: "x" }), false);
add("sasl auth without a key", R(0x21, { value: "abc" }), false);
add("sasl step", R(0x22, { key: "PLAIN", value: "abc", opaque: 3 }));
add("sasl step with extras", R(0x22, { key: "PLAIN", extras: ones(4), value: "abc", opaque: 3 }), false);
for (const op of [0x1f, 0x25, 0x80, 0xff]) add(`unknown opcode 0x${op.toString(16)} with a key and a value`, R(op, { key: "k", value: "vv", opaque: 3 }));
for (const op of [0x1f, 0x25, 0xff]) add(`unknown opcode 0x${op.toString(16)}, bare`, R(op, { opaque: 3 }));

// ---- split at every byte boundary, keys on every shard of 3
{
  const k = [0, 1, 2].map((s) => keysOwnedBy(s, 3, 3, "r22-"));
  const split = (name: string, send: Uint8Array): void => {
    const n = send.length + BIN_SENTINEL.length;
    cases.push({ name: `${name}, a byte at a time`, send, sentinel: true, chunks: Array.from({ length: n - 1 }, () => 1) });
  };
  split(
    "stores, quiet gets, gat, incr, append on three shards",
    cat(
      S(k[0]![0]!, "v0", { opaque: 1 }),
      S(k[1]![0]!, "v1", { op: 0x11, opaque: 2 }),
      S(k[2]![0]!, "v2", { op: 0x11, opaque: 3 }),
      R(0x0c, { key: k[1]![0]!, opaque: 4 }),
      R(0x0d, { key: k[2]![0]!, opaque: 5 }),
      R(0x09, { key: k[2]![1]!, opaque: 6 }),
      R(0x24, { key: k[1]![0]!, extras: u32Extras(0), opaque: 7 }),
      R(0x05, { key: k[2]![2]!, extras: incrExtras(3n, 4n, 0), opaque: 8 }),
      R(0x19, { key: k[1]![0]!, value: "A" }),
      R(0x1a, { key: k[1]![1]!, value: "B", opaque: 9 }),
      R(0x00, { key: k[1]![0]!, opaque: 10 }),
    ),
  );
  split("an unknown opcode with a body, then a get", cat(S(k[1]![2]!, "z"), R(0x33, { key: "q", value: "xyz" }), R(0x0a, { opaque: 1 }), R(0x0c, { key: k[1]![2]! })));
  split("quiet errors on three shards", cat(S(k[1]![0]!, "x", { op: 0x12, opaque: 1 }), S(`none${k[2]![1]!}`, "x", { op: 0x13, opaque: 2 }), R(0x14, { key: "none", opaque: 3 }), R(0x15, { key: k[1]![0]!, extras: incrExtras(1n, 0n, 0), opaque: 4 }), R(0x1a, { key: "none2", value: "x", opaque: 5 })));
  split("an unknown opcode with bodylen 0xffffffff", cat(R(0x33, { bodylen: 0xffffffff }), R(0x0c, { key: k[1]![0]! })));
  split("a set of another shard's key with bodylen 0xffffffff", cat(S(k[1]![1]!, "old"), R(0x01, { key: k[1]![1]!, extras: setExtras(0, 0), bodylen: 0xffffffff }), R(0x0c, { key: k[1]![1]! }), R(0x0c, { key: k[0]![1]! })));
  split("an append of another shard's key with bodylen 0xffffffff", cat(R(0x0e, { key: k[2]![1]!, bodylen: 0xffffffff }), R(0x0c, { key: k[2]![1]! })));
}
// Whole, the same at -t 3: the two-GiB cases with keys that other shards own.
{
  const [k1, k2] = keysOwnedBy(1, 3, 2, "r22w-");
  add("set of another shard's key, bodylen 0xffffffff", cat(S(k1!, "old"), R(0x01, { key: k1!, extras: setExtras(0, 0), bodylen: 0xffffffff, opaque: 2 }), R(0x0c, { key: k1!, opaque: 3 })));
  add("appendq of another shard's key, bodylen 0xfffffff0", cat(R(0x19, { key: k2!, bodylen: 0xfffffff0, opaque: 2 }), R(0x0c, { key: k2!, opaque: 3 })));
}

function request(c: BinCase): Uint8Array {
  return c.sentinel ? cat(c.send, BIN_SENTINEL) : c.send;
}

async function runAll(server: ServerProcess): Promise<Answer[]> {
  const out: Answer[] = [];
  for (const c of cases) {
    // A case that sends NOOPs of its own may see an answer end like the sentinel's: settle.
    out.push(await exchange(server.port, request(c), { until: c.sentinel ? BIN_SENTINEL_ANSWER : undefined, settleMs: 30, idleMs: c.sentinel ? 2000 : 250, chunks: c.chunks, pauseMs: 1 }));
  }
  return out;
}

function compare(label: string, ours: Answer[], theirs: Answer[], masked: boolean, only?: (c: BinCase) => boolean): void {
  const render = (a: Answer): string => (masked ? show(new TextEncoder().encode(maskCas(a.bytes, true))) : show(a.bytes)) + `\n(closed=${a.closed})`;
  const failed: string[] = [];
  for (let i = 0; i < cases.length; i++) {
    const c = cases[i]!;
    if (only && !only(c)) continue;
    const mine = render(ours[i]!);
    const stock = render(theirs[i]!);
    if (mine !== stock) {
      failed.push(c.name);
      console.log(`--- ${label}: case "${c.name}"\n--- stock:\n${stock}\n--- ours:\n${mine}`);
    }
  }
  expect(failed).toEqual([]);
}

let stock: ServerProcess;
let stockAnswers: Answer[] = [];

beforeAll(async () => {
  stock = await startStock(["-t", "1"]);
  stockAnswers = await runAll(stock);
}, 300_000);

afterAll(async () => {
  await stock?.stop();
}, 30_000);

describe("binary requests with odd headers get stock 1.6.18's bytes", () => {
  test("our engine in process (whole requests)", () => {
    const engine = new InProcess();
    try {
      // Split cases run too (CAS values stay in step with stock's), compared whole only: sent
      // a byte at a time, stock also transmits whenever it runs out of input.
      const ours = cases.map((c) => engine.answer(request(c)));
      compare("in process", ours, stockAnswers, false, (c) => c.chunks === undefined);
    } finally {
      engine.close();
    }
  });

  for (const threads of [1, 3]) {
    test(
      `our server with -t ${threads}${threads > 1 ? " (keys on other shards, CAS masked)" : ""}`,
      async () => {
        const ours = await startOurs(["-t", String(threads)]);
        try {
          compare(`-t ${threads}`, await runAll(ours), stockAnswers, threads > 1);
        } finally {
          await ours.stop();
        }
      },
      300_000,
    );
  }
});

describe("a body length of 2 GiB or more is a negative C int in stock", () => {
  // The same facts as above, spelled out: nothing is swallowed, so the next request is answered.
  test("an unknown opcode is answered Unknown command and the next request runs", () => {
    const engine = new InProcess();
    try {
      const a = engine.answer(cat(R(0x33, { bodylen: 0xffffffff, opaque: 2 }), R(0x0a, { opaque: 3 })));
      const r = parseResponses(a.bytes);
      expect(r.map((x) => [x.opcode, x.status, x.opaque])).toEqual([
        [0x33, 0x81, 2],
        [0x0a, 0, 3],
      ]);
      expect(a.closed).toBe(false);
    } finally {
      engine.close();
    }
  });

  test("a set is too large, the old value goes, and the next request runs", () => {
    const engine = new InProcess();
    try {
      const a = engine.answer(cat(S("neg", "old"), R(0x01, { key: "neg", extras: setExtras(0, 0), bodylen: 0xffffffff, opaque: 2 }), R(0x0c, { key: "neg", opaque: 3 })));
      const r = parseResponses(a.bytes);
      expect(r.map((x) => [x.opcode, x.status, x.opaque])).toEqual([
        [0x01, 0, 0],
        [0x01, 0x03, 2],
        [0x0c, 0x01, 3],
      ]);
    } finally {
      engine.close();
    }
  });
});

describe("with CAS off (-C), a request's CAS on a store is no CAS at all, as in stock", () => {
  // Stock's process_bin_update puts the request's CAS into the new item and turns the command
  // into a CAS only if the item then reads back non-zero: with -C it never does. Append and
  // prepend compare the same item CAS, so they check nothing either. Delete and incr compare
  // the request's CAS with the stored item's (0): a mismatch, as with CAS on.
  const [other] = keysOwnedBy(2, 3, 1, "r22c-");
  const noCas: BinCase[] = [
    { name: "set with a CAS replaces, and creates", send: cat(S("nc1", "1"), S("nc1", "2", { cas: 5n, opaque: 1 }), R(0x00, { key: "nc1" }), S("nc2", "2", { cas: 5n, opaque: 2 }), R(0x00, { key: "nc2" })), sentinel: true },
    { name: "add and replace with a CAS", send: cat(S("nc3", "1", { op: 0x02, cas: 9n, opaque: 3 }), S("nc3", "1", { op: 0x02, cas: 9n, opaque: 4 }), S("nc4", "1", { op: 0x03, cas: 9n, opaque: 5 }), S("nc3", "7", { op: 0x13, cas: 9n, opaque: 6 }), R(0x00, { key: "nc3" })), sentinel: true },
    { name: "append and prepend with a CAS", send: cat(S("nc5", "1"), R(0x0e, { key: "nc5", value: "x", cas: 7n }), R(0x1a, { key: "nc5", value: "y", cas: 8n }), R(0x00, { key: "nc5" })), sentinel: true },
    { name: "delete and incr with a CAS", send: cat(S("nc6", "1"), R(0x04, { key: "nc6", cas: 7n }), R(0x05, { key: "nc6", extras: incrExtras(1n, 0n, 0), cas: 7n }), R(0x05, { key: "nc7", extras: incrExtras(1n, 4n, 0), cas: 7n }), R(0x00, { key: "nc6" })), sentinel: true },
    { name: "a set with a CAS of another shard's key", send: cat(S(other!, "1"), S(other!, "2", { op: 0x11, cas: 5n }), R(0x0c, { key: other! })), sentinel: true },
  ];
  const run = async (server: ServerProcess): Promise<string[]> => {
    const out: string[] = [];
    for (const c of noCas) {
      const a = await exchange(server.port, request(c), { until: BIN_SENTINEL_ANSWER, idleMs: 2000 });
      out.push(`${show(a.bytes)}\n(closed=${a.closed})`);
    }
    return out;
  };

  test("in process, and our server with -t 1 and -t 3", async () => {
    const stockNoCas = await startStock(["-t", "1", "-C"]);
    let theirs: string[];
    try {
      theirs = await run(stockNoCas);
    } finally {
      await stockNoCas.stop();
    }
    const engine = new InProcess(stockLikeSettings({ useCas: false }));
    try {
      expect(noCas.map((c) => { const a = engine.answer(request(c)); return `${show(a.bytes)}\n(closed=${a.closed})`; })).toEqual(theirs);
    } finally {
      engine.close();
    }
    for (const threads of [1, 3]) {
      const ours = await startOurs(["-t", String(threads), "-C"]);
      try {
        expect(await run(ours)).toEqual(theirs);
      } finally {
        await ours.stop();
      }
    }
  }, 120_000);
});
