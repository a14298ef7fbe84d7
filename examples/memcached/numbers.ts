/**
 * Number parsing and printing with the exact semantics memcached 1.6.18 gets from libc:
 * `safe_strtoul`, `safe_strtol`, `safe_strtoull` (util.c) over a token that ends at a NUL,
 * and itoa into byte buffers. The quirks are kept on purpose, because clients see them:
 * `safe_strtoul` parses an unsigned long (64-bit) and truncates to 32 bits, `safe_strtol`
 * parses a long and truncates to int32, leading whitespace and a sign are accepted, a trailing
 * whitespace byte is accepted, and negative values are refused only when they wrap to a number
 * with the top bit set and the token holds a '-'.
 *
 * All functions read `buf[start..end)`; `end` plays the role of the terminating NUL.
 * Results come back through the module-level `parsed` slots (no allocation per call).
 */

/** Result slots of the last parse: `ok` tells whether it succeeded; the value sits in `num` or `big`. */
export const parsed = { ok: false, num: 0, big: 0n };

const TWO32 = 4294967296;
const TWO64 = 18446744073709551616n;
const INT64_MAX = 9223372036854775807n;
const INT64_MIN_ABS = 9223372036854775808n;

function isSpace(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13);
}

interface Scan {
  /** Index of the first digit, or -1 when there is none (strto* then fails: str == endptr). */
  digits: number;
  /** Index just past the last digit. */
  stop: number;
  negative: boolean;
}

const scan: Scan = { digits: -1, stop: 0, negative: false };

/** strtol's front end: skip whitespace, take a sign, find the digit run. */
function scanNumber(buf: Uint8Array, start: number, end: number): Scan {
  let i = start;
  while (i < end && isSpace(buf[i]!)) i++;
  scan.negative = false;
  if (i < end && (buf[i] === 43 || buf[i] === 45)) {
    scan.negative = buf[i] === 45;
    i++;
  }
  const first = i;
  while (i < end && buf[i]! >= 48 && buf[i]! <= 57) i++;
  scan.digits = i > first ? first : -1;
  scan.stop = i;
  return scan;
}

/** libc's tail rule: the number must be followed by whitespace or the end of the token. */
function tailOk(buf: Uint8Array, stop: number, end: number): boolean {
  return stop === end || isSpace(buf[stop]!);
}

/** Magnitude of the digit run as a BigInt (slow path, long tokens only). */
function bigDigits(buf: Uint8Array, from: number, to: number): bigint {
  let v = 0n;
  for (let i = from; i < to; i++) v = v * 10n + BigInt(buf[i]! - 48);
  return v;
}

/** Magnitude of a digit run of at most 15 digits (exact in a double). */
function smallDigits(buf: Uint8Array, from: number, to: number): number {
  let v = 0;
  for (let i = from; i < to; i++) v = v * 10 + (buf[i]! - 48);
  return v;
}

/** True when the token holds a '-' anywhere (memcached's strchr(str, '-')). */
function hasMinus(buf: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (buf[i] === 45) return true;
  return false;
}

/**
 * strtoull/strtoul (64-bit) core: the value modulo 2^64 as a BigInt, or -1n on ERANGE / no digits.
 * Used by the slow paths only.
 */
function strtou64(buf: Uint8Array, start: number, end: number): bigint {
  const s = scanNumber(buf, start, end);
  if (s.digits < 0) return -1n;
  const mag = bigDigits(buf, s.digits, s.stop);
  if (mag >= TWO64) return -1n;
  if (!tailOk(buf, s.stop, end)) return -2n;
  return s.negative ? (TWO64 - mag) % TWO64 : mag;
}

/**
 * memcached's safe_strtoul: unsigned 32-bit result in `parsed.num`.
 * @returns true on success (also in `parsed.ok`).
 */
export function parseU32(buf: Uint8Array, start: number, end: number): boolean {
  parsed.num = 0;
  const s = scanNumber(buf, start, end);
  if (s.digits >= 0 && s.stop - s.digits <= 15 && !s.negative) {
    if (!tailOk(buf, s.stop, end)) return (parsed.ok = false);
    parsed.num = smallDigits(buf, s.digits, s.stop) % TWO32;
    return (parsed.ok = true);
  }
  const v = strtou64(buf, start, end);
  if (v < 0n) return (parsed.ok = false);
  if (v >= INT64_MIN_ABS && hasMinus(buf, start, end)) return (parsed.ok = false);
  parsed.num = Number(v % BigInt(TWO32));
  return (parsed.ok = true);
}

/**
 * memcached's safe_strtol: parses a 64-bit long (ERANGE fails) and truncates it to int32,
 * as `*out = l` does. Signed result in `parsed.num`.
 */
export function parseI32(buf: Uint8Array, start: number, end: number): boolean {
  parsed.num = 0;
  const s = scanNumber(buf, start, end);
  if (s.digits < 0) return (parsed.ok = false);
  if (s.stop - s.digits <= 15) {
    if (!tailOk(buf, s.stop, end)) return (parsed.ok = false);
    const mag = smallDigits(buf, s.digits, s.stop);
    parsed.num = (s.negative ? -mag : mag) | 0;
    return (parsed.ok = true);
  }
  const mag = bigDigits(buf, s.digits, s.stop);
  if (s.negative ? mag > INT64_MIN_ABS : mag > INT64_MAX) return (parsed.ok = false);
  if (!tailOk(buf, s.stop, end)) return (parsed.ok = false);
  const v = s.negative ? -mag : mag;
  parsed.num = Number(BigInt.asIntN(32, v));
  return (parsed.ok = true);
}

/**
 * memcached's safe_strtoull: unsigned 64-bit result, exact, in `parsed.big`; `parsed.num`
 * holds the same value as a double (exact below 2^53, which is where CAS values live).
 */
export function parseU64(buf: Uint8Array, start: number, end: number): boolean {
  parsed.num = 0;
  parsed.big = 0n;
  const s = scanNumber(buf, start, end);
  if (s.digits >= 0 && s.stop - s.digits <= 15 && !s.negative) {
    if (!tailOk(buf, s.stop, end)) return (parsed.ok = false);
    parsed.num = smallDigits(buf, s.digits, s.stop);
    parsed.big = BigInt(parsed.num);
    return (parsed.ok = true);
  }
  const v = strtou64(buf, start, end);
  if (v < 0n) return (parsed.ok = false);
  if (v >= INT64_MIN_ABS && hasMinus(buf, start, end)) return (parsed.ok = false);
  parsed.big = v;
  parsed.num = Number(v);
  return (parsed.ok = true);
}

/** Number of decimal digits of a non-negative integer below 2^53. */
export function decimalLength(n: number): number {
  let len = 1;
  while (n >= 10) {
    n = Math.floor(n / 10);
    len++;
  }
  return len;
}

/** Writes a non-negative integer (below 2^53) as ASCII at `pos`; returns the position after it. */
export function writeUint(buf: Uint8Array, pos: number, n: number): number {
  if (n < 10) {
    buf[pos] = 48 + n;
    return pos + 1;
  }
  const len = decimalLength(n);
  let p = pos + len;
  if (n < TWO32) {
    let v = n >>> 0;
    while (v >= 10) {
      const q = (v / 10) >>> 0;
      buf[--p] = 48 + (v - q * 10);
      v = q;
    }
    buf[--p] = 48 + v;
  } else {
    let v = n;
    while (v >= 10) {
      const q = Math.floor(v / 10);
      buf[--p] = 48 + (v - q * 10);
      v = q;
    }
    buf[--p] = 48 + v;
  }
  return pos + len;
}

/** Writes a signed 32-bit integer as ASCII; returns the position after it. */
export function writeInt(buf: Uint8Array, pos: number, n: number): number {
  if (n < 0) {
    buf[pos++] = 45;
    return writeUint(buf, pos, -n);
  }
  return writeUint(buf, pos, n);
}
