/**
 * Units of a batch between shards (examples/memcached/router.ts), built and read by the tests
 * that run a shard's side in process: a unit is [kind][proto][u32 length][body]; an answer is
 * [u32 length][bytes] per unit, where a length with the top bit set is followed by the table of
 * the values the unit lends (LENDS_FLAG).
 */
import { NativeBuffer } from "../../../src/core/buffers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder("latin1");

/** One text unit of kind `kind` (UnitKind). */
export function unit(kind: number, body: Uint8Array | string): Uint8Array {
  const b = typeof body === "string" ? enc.encode(body) : body;
  const u = new Uint8Array(6 + b.length);
  u[0] = kind;
  u[1] = 1; // Proto.TEXT
  new DataView(u.buffer).setUint32(2, b.length, true);
  u.set(b, 6);
  return u;
}

/** An UNLEND unit (`kind`: UnitKind.UNLEND): the requester is done with these lent items. */
export function unlendUnit(kind: number, refs: number[]): Uint8Array {
  const body = new Uint8Array(4 * refs.length);
  const dv = new DataView(body.buffer);
  refs.forEach((r, i) => dv.setUint32(4 * i, r, true));
  return unit(kind, body);
}

/** A value lent by a unit's answer: where it goes in the unit's bytes, its length, its place in the arena, its item. */
export interface Lent {
  at: number;
  len: number;
  offset: number;
  ref: number;
  arena: number;
  arenaLength: number;
}

const u32 = (b: Uint8Array, p: number) => new DataView(b.buffer, b.byteOffset).getUint32(p, true);

/**
 * The units of an answer as text, with each lent value read from `mem` (the owner's arena) where
 * its table says, as the requester does, or left out without `mem`; only the first `units`
 * records (a handed-over answer is the owner's whole buffer).
 */
export function readUnits(reply: Uint8Array | NativeBuffer, opts: { mem?: Uint8Array; units?: number } = {}): { texts: string[]; lent: Lent[]; flagged: number } {
  const answer = reply instanceof NativeBuffer ? reply.bytes : reply;
  const units = opts.units ?? Infinity;
  const mem = opts.mem;
  const dv = new DataView(answer.buffer, answer.byteOffset, answer.length);
  const lent: Lent[] = [];
  const texts: string[] = [];
  let flagged = 0;
  let p = 0;
  while (p + 4 <= answer.length && texts.length < units) {
    const h = u32(answer, p);
    const n = h & 0x7fffffff;
    const raw = answer.subarray(p + 4, p + 4 + n);
    p += 4 + n;
    if (h < 0x80000000) {
      texts.push(dec.decode(raw));
      continue;
    }
    flagged++;
    const c = u32(answer, p);
    const arena = dv.getFloat64(p + 8, true);
    const arenaLength = dv.getFloat64(p + 16, true);
    let text = "";
    let at = 0;
    for (let k = 0, q = p + 24; k < c; k++, q += 16) {
      const l: Lent = { at: u32(answer, q), len: u32(answer, q + 4), offset: u32(answer, q + 8), ref: u32(answer, q + 12), arena, arenaLength };
      lent.push(l);
      text += dec.decode(raw.subarray(at, l.at)) + (mem === undefined ? "" : dec.decode(mem.subarray(l.offset, l.offset + l.len)));
      at = l.at;
    }
    texts.push(text + dec.decode(raw.subarray(at)));
    p += 24 + c * 16;
  }
  return { texts, lent, flagged };
}
