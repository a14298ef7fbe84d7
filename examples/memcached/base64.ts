/**
 * Base64 for meta commands' binary keys (flag `b`), with stock memcached's decoder rules
 * (base64.c): bytes outside the alphabet are skipped, the count of alphabet bytes must be a
 * multiple of 4, and a failure returns 0.
 */

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const INVALID = 0x80;
const dtable = new Uint8Array(256).fill(INVALID);
for (let i = 0; i < 64; i++) dtable[ALPHABET.charCodeAt(i)] = i;
dtable[61] = 0; // '='

/** Decodes `src[off..off+len)` into `out`; returns the decoded length, 0 on failure. */
export function base64Decode(src: Uint8Array, off: number, len: number, out: Uint8Array): number {
  let count = 0;
  for (let i = 0; i < len; i++) if (dtable[src[off + i]!] !== INVALID) count++;
  if (count === 0 || count % 4 !== 0) return 0;
  if ((count / 4) * 3 > out.length) return 0;
  let pos = 0;
  let pad = 0;
  let n = 0;
  const block = [0, 0, 0, 0];
  for (let i = 0; i < len; i++) {
    const c = src[off + i]!;
    const v = dtable[c]!;
    if (v === INVALID) continue;
    if (c === 61) pad++;
    block[n++] = v;
    if (n === 4) {
      out[pos++] = ((block[0]! << 2) | (block[1]! >> 4)) & 0xff;
      out[pos++] = ((block[1]! << 4) | (block[2]! >> 2)) & 0xff;
      out[pos++] = ((block[2]! << 6) | block[3]!) & 0xff;
      n = 0;
      if (pad) {
        if (pad === 1) pos--;
        else if (pad === 2) pos -= 2;
        else return 0;
        break;
      }
    }
  }
  return pos;
}

/** Encodes `src[off..off+len)` as base64 text. */
export function base64Encode(src: Uint8Array, off: number, len: number): string {
  let s = "";
  let i = off;
  const end = off + len;
  while (end - i >= 3) {
    s += ALPHABET[src[i]! >> 2];
    s += ALPHABET[((src[i]! & 0x03) << 4) | (src[i + 1]! >> 4)];
    s += ALPHABET[((src[i + 1]! & 0x0f) << 2) | (src[i + 2]! >> 6)];
    s += ALPHABET[src[i + 2]! & 0x3f];
    i += 3;
  }
  if (end - i > 0) {
    s += ALPHABET[src[i]! >> 2];
    if (end - i === 1) {
      s += ALPHABET[(src[i]! & 0x03) << 4];
      s += "=";
    } else {
      s += ALPHABET[((src[i]! & 0x03) << 4) | (src[i + 1]! >> 4)];
      s += ALPHABET[(src[i + 1]! & 0x0f) << 2];
    }
    s += "=";
  }
  return s;
}
