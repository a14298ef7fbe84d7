/**
 * Binary protocol packets for tests: request builder and response parser.
 */

/** Builds a binary request. Lengths are computed unless overridden (to build bad packets). */
export function binRequest(
  opcode: number,
  opts: {
    key?: string | Uint8Array;
    extras?: Uint8Array;
    value?: string | Uint8Array;
    opaque?: number;
    cas?: bigint;
    magic?: number;
    keylen?: number;
    extlen?: number;
    bodylen?: number;
  } = {},
): Uint8Array {
  const key = typeof opts.key === "string" ? new TextEncoder().encode(opts.key) : (opts.key ?? new Uint8Array(0));
  const extras = opts.extras ?? new Uint8Array(0);
  const value = typeof opts.value === "string" ? new TextEncoder().encode(opts.value) : (opts.value ?? new Uint8Array(0));
  const body = extras.length + key.length + value.length;
  const out = new Uint8Array(24 + body);
  const dv = new DataView(out.buffer);
  out[0] = opts.magic ?? 0x80;
  out[1] = opcode;
  dv.setUint16(2, opts.keylen ?? key.length);
  out[4] = opts.extlen ?? extras.length;
  dv.setUint32(8, opts.bodylen ?? body);
  dv.setUint32(12, opts.opaque ?? 0);
  dv.setBigUint64(16, opts.cas ?? 0n);
  out.set(extras, 24);
  out.set(key, 24 + extras.length);
  out.set(value, 24 + extras.length + key.length);
  return out;
}

/** Extras of set/add/replace: flags, exptime. */
export function setExtras(flags: number, exptime: number): Uint8Array {
  const e = new Uint8Array(8);
  const dv = new DataView(e.buffer);
  dv.setUint32(0, flags);
  dv.setUint32(4, exptime);
  return e;
}

/** Extras of incr/decr: delta, initial, exptime. */
export function incrExtras(delta: bigint, initial: bigint, exptime: number): Uint8Array {
  const e = new Uint8Array(20);
  const dv = new DataView(e.buffer);
  dv.setBigUint64(0, delta);
  dv.setBigUint64(8, initial);
  dv.setUint32(16, exptime);
  return e;
}

/** Extras holding one u32 (touch/gat/flush exptime). */
export function u32Extras(v: number): Uint8Array {
  const e = new Uint8Array(4);
  new DataView(e.buffer).setUint32(0, v);
  return e;
}

/** A parsed binary response. */
export interface BinResponse {
  magic: number;
  opcode: number;
  status: number;
  opaque: number;
  cas: bigint;
  extras: Uint8Array;
  key: string;
  value: Uint8Array;
}

/** Splits a byte stream into binary responses (a trailing partial packet is ignored). */
export function parseResponses(bytes: Uint8Array): BinResponse[] {
  const r: BinResponse[] = [];
  let p = 0;
  while (bytes.length - p >= 24) {
    const dv = new DataView(bytes.buffer, bytes.byteOffset + p);
    const keylen = dv.getUint16(2);
    const extlen = bytes[p + 4]!;
    const bodylen = dv.getUint32(8);
    if (bytes.length - p < 24 + bodylen) break;
    const body = bytes.subarray(p + 24, p + 24 + bodylen);
    r.push({
      magic: bytes[p]!,
      opcode: bytes[p + 1]!,
      status: dv.getUint16(6),
      opaque: dv.getUint32(12),
      cas: dv.getBigUint64(16),
      extras: body.subarray(0, extlen),
      key: new TextDecoder().decode(body.subarray(extlen, extlen + keylen)),
      value: body.subarray(extlen + keylen),
    });
    p += 24 + bodylen;
  }
  return r;
}
