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

/** Smallest positive normal double: glibc's strtod reports ERANGE for a nonzero value below it. */
const DBL_MIN = 2.2250738585072014e-308;

function isSpaceByte(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13);
}

function isHexDigit(c: number): boolean {
  return (c >= 48 && c <= 57) || ((c | 32) >= 97 && (c | 32) <= 102);
}

/** Whether `buf[i..)` starts with `word` (lower case ASCII), ignoring case, before `end`. */
function startsWithNoCase(buf: Uint8Array, i: number, end: number, word: string): boolean {
  if (end - i < word.length) return false;
  for (let k = 0; k < word.length; k++) if ((buf[i + k]! | 32) !== word.charCodeAt(k)) return false;
  return true;
}

/** What the last strtod() saw besides its value: where it stopped, ERANGE, a '-' sign. */
export const strtodResult = { stop: 0, erange: false, negative: false };

/**
 * memcached's safe_strtod over `buf[start..end)` (the token): strtod(), failing on no number,
 * ERANGE (overflow, or a nonzero value below DBL_MIN) or anything but whitespace after it.
 * Returns the value, or undefined.
 */
export function parseDouble(buf: Uint8Array, start: number, end: number): number | undefined {
  const v = strtod(buf, start, end);
  const r = strtodResult;
  if (r.stop === start || r.erange) return undefined;
  if (r.stop !== end && !isSpaceByte(buf[r.stop]!)) return undefined;
  return v;
}

/** C's atof() of `text`: strtod() of its longest numeric prefix, 0 if there is none. */
export function atof(text: string): number {
  const buf = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) buf[i] = text.charCodeAt(i) & 0xff;
  return strtod(buf, 0, buf.length);
}

/**
 * glibc's strtod over `buf[start..end)`: leading whitespace, a sign, decimal or 0x hex with an
 * optional exponent, inf/infinity, nan/nan(...), any case. Returns the value (0 with
 * strtodResult.stop at `start` when there is no number; ERANGE: +-Infinity past the largest
 * double, 0 below DBL_MIN) and fills strtodResult.
 */
export function strtod(buf: Uint8Array, start: number, end: number): number {
  const r = strtodResult;
  r.stop = start;
  r.erange = false;
  r.negative = false;
  let i = start;
  while (i < end && isSpaceByte(buf[i]!)) i++;
  let sign = 1;
  if (i < end && (buf[i] === 43 || buf[i] === 45)) {
    if (buf[i] === 45) sign = -1;
    i++;
  }
  let value: number;
  let stop: number;
  if (startsWithNoCase(buf, i, end, "inf")) {
    stop = startsWithNoCase(buf, i, end, "infinity") ? i + 8 : i + 3;
    value = Infinity; // no ERANGE: infinity was asked for
  } else if (startsWithNoCase(buf, i, end, "nan")) {
    stop = i + 3;
    if (stop < end && buf[stop] === 40) {
      let k = stop + 1;
      // n-char-sequence: letters, digits, '_'
      while (k < end && ((buf[k]! >= 48 && buf[k]! <= 57) || ((buf[k]! | 32) >= 97 && (buf[k]! | 32) <= 122) || buf[k] === 95)) k++;
      if (k < end && buf[k] === 41) stop = k + 1;
    }
    value = NaN;
  } else if (i + 2 < end && buf[i] === 48 && (buf[i + 1]! | 32) === 120 && (isHexDigit(buf[i + 2]!) || (buf[i + 2] === 46 && i + 3 < end && isHexDigit(buf[i + 3]!)))) {
    // Hex: mantissa digits, an optional point, an optional binary exponent (p[+-]digits).
    // The range checks need the powers of two of the mantissa's highest and lowest set bits.
    let k = i + 2;
    let n = 0; // mantissa digits
    let before = -1; // digits before the point (-1: no point yet)
    let top: number | null = null;
    let low = 0; // ... and of its lowest set bit
    // The mantissa's value as mant * 16^-(n - scaled): digits past double precision only scale.
    let mant = 0;
    let scaled = 0;
    for (; k < end; k++) {
      const c = buf[k]!;
      if (c === 46 && before < 0) {
        before = n;
        continue;
      }
      if (!isHexDigit(c)) break;
      const d = c <= 57 ? c - 48 : (c | 32) - 87;
      if (d !== 0) {
        if (top === null) top = -4 * (n + 1) + 31 - Math.clz32(d);
        low = -4 * (n + 1) + 31 - Math.clz32(d & -d);
      }
      if (mant < 2 ** 60) mant = mant * 16 + d;
      else scaled++;
      n++;
    }
    if (top !== null) {
      top += 4 * (before < 0 ? n : before);
      low += 4 * (before < 0 ? n : before);
    }
    stop = k;
    let exp = 0;
    if (k < end && (buf[k]! | 32) === 112) {
      let e = k + 1;
      let esign = 1;
      if (e < end && (buf[e] === 43 || buf[e] === 45)) {
        if (buf[e] === 45) esign = -1;
        e++;
      }
      if (e < end && buf[e]! >= 48 && buf[e]! <= 57) {
        let v = 0;
        while (e < end && buf[e]! >= 48 && buf[e]! <= 57) {
          v = Math.min(v * 10 + buf[e]! - 48, 1e9);
          e++;
        }
        exp = esign * v;
        stop = e;
      }
    }
    if (top === null) value = 0;
    else if (top + exp > 1023) {
      r.erange = true; // overflow
      value = Infinity;
    } else if (top + exp < -1022 && low + exp < -1074) {
      r.erange = true; // below DBL_MIN and inexact
      value = 0;
    } else {
      // mant * 2^(4 * (digits before the point - digits taken) + exp), in two steps so that
      // neither factor overflows or underflows on its own.
      const shift = 4 * ((before < 0 ? n : before) - (n - scaled)) + exp;
      value = mant * 2 ** Math.trunc(shift / 2) * 2 ** (shift - Math.trunc(shift / 2));
    }
  } else {
    // Decimal: digits, an optional point and digits (at least one digit), an optional exponent.
    let k = i;
    let digits = 0;
    while (k < end && buf[k]! >= 48 && buf[k]! <= 57) {
      k++;
      digits++;
    }
    if (k < end && buf[k] === 46) {
      k++;
      while (k < end && buf[k]! >= 48 && buf[k]! <= 57) {
        k++;
        digits++;
      }
    }
    if (digits === 0) return 0; // no conversion
    stop = k;
    if (k < end && (buf[k]! | 32) === 101) {
      let e = k + 1;
      if (e < end && (buf[e] === 43 || buf[e] === 45)) e++;
      if (e < end && buf[e]! >= 48 && buf[e]! <= 57) {
        while (e < end && buf[e]! >= 48 && buf[e]! <= 57) e++;
        stop = e;
      }
    }
    let text = "";
    for (let j = i; j < stop; j++) text += String.fromCharCode(buf[j]!);
    value = Number(text.endsWith(".") ? text + "0" : text.startsWith(".") ? "0" + text : text);
    if (!Number.isFinite(value)) r.erange = true; // overflow
    else if (value !== 0 && value < DBL_MIN) r.erange = true; // underflow
    else if (value === 0) {
      // a nonzero value rounded to 0
      for (let j = i; j < stop && buf[j] !== 101 && buf[j] !== 69; j++) if (buf[j]! >= 49 && buf[j]! <= 57) r.erange = true;
    }
  }
  r.stop = stop;
  r.negative = sign < 0;
  return sign * value;
}

/**
 * "%.2f" of the value strtod() just returned (a NaN's sign is its input's: JavaScript keeps
 * none).
 */
export function formatParsedFixed2(v: number): string {
  return Number.isNaN(v) ? (strtodResult.negative ? "-nan" : "nan") : formatFixed2(v);
}

/**
 * printf's "%.2f" as glibc prints a double: the exact binary value rounded to hundredths, ties
 * to even (2.675 is below its tie: 2.67; 0.125 is one: 0.12), fixed notation at any size,
 * "inf"/"-inf" and "nan".
 */
export function formatFixed2(v: number): string {
  if (Number.isNaN(v)) return "nan"; // (JavaScriptCore keeps no NaN sign: see formatParsedFixed2)
  if (!Number.isFinite(v)) return v < 0 ? "-inf" : "inf";
  // v = mant * 2^exp exactly; hundredths = round(mant * 100 * 2^exp), ties to even.
  f64[0] = v;
  const hi = f64Words[1]!;
  const biased = (hi >>> 20) & 0x7ff;
  let mant = (BigInt(hi & 0xfffff) << 32n) | BigInt(f64Words[0]!);
  if (biased !== 0) mant |= 1n << 52n;
  const exp = (biased === 0 ? 1 : biased) - 1075;
  let hundredths: bigint;
  if (exp >= 0) {
    hundredths = (mant * 100n) << BigInt(exp);
  } else {
    const scaled = mant * 100n;
    const k = BigInt(-exp);
    hundredths = scaled >> k;
    const twice = (scaled - (hundredths << k)) * 2n;
    const unit = 1n << k;
    if (twice > unit || (twice === unit && (hundredths & 1n) === 1n)) hundredths++;
  }
  const sign = hi >>> 31 === 1 ? "-" : "";
  return `${sign}${hundredths / 100n}.${String(hundredths % 100n).padStart(2, "0")}`;
}

const f64 = new Float64Array(1);
const f64Words = new Uint32Array(f64.buffer);
