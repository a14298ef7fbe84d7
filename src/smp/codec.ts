/**
 * The compact binary encoding of values that cross shards. Not structured clone and not JSON:
 * a one-byte tag per value, little-endian numbers, strings as Latin-1 bytes or UTF-16 units
 * (exact, lone surrogates included), containers with counts up front.
 *
 * Encodable: undefined, null, booleans, numbers (-0 and NaN exact), bigint, strings, arrays,
 * plain objects (prototype Object.prototype or null; own enumerable string keys), Map, Set,
 * Date, typed arrays and ArrayBuffer (copied), Errors (name, message, code, stack, cause and
 * other own enumerable properties that can cross), and NativeBuffers (handed over, not copied,
 * a lent one arriving lent: see handover.ts). Anything else (functions, symbols, class
 * instances, promises, cycles) fails with an EncodeError naming where in the value it sits.
 *
 * A Writer writes either straight into a ring (`limit` is the space the ring has there; going
 * past it throws RING_FULL and the caller re-encodes into scratch memory) or into a growable
 * scratch buffer. A Reader reads from a ring or from scratch memory; decoded values never
 * point into the buffer they came from, so the ring space can be reused at once.
 */
import type { NativeBuffer } from "../core/buffers.ts";
import { forEachShoalErrorClass, InvalidArgumentError, ShoalError, SystemError } from "../core/errors.ts";
import * as smpErrors from "./errors.ts";
import { EncodeError, MessageTooLargeError, RemoteError } from "./errors.ts";

const T_UNDEFINED = 0;
const T_NULL = 1;
const T_FALSE = 2;
const T_TRUE = 3;
const T_INT32 = 4;
const T_FLOAT64 = 5;
const T_STR8 = 6; // u8 length, Latin-1 bytes
const T_LATIN1 = 7; // u32 length, Latin-1 bytes
const T_UTF16 = 8; // u32 length in code units, UTF-16LE
const T_BIGINT = 9; // u8 sign, u32 words, u64 words (least significant first)
const T_ARRAY = 10; // u32 count, values
const T_OBJECT = 11; // u32 count, (string, value) pairs
const T_MAP = 12; // u32 count, (value, value) pairs
const T_SET = 13; // u32 count, values
const T_DATE = 14; // f64 time value
const T_TYPED = 15; // u8 kind, u32 byte length, bytes
const T_ARRAY_BUFFER = 16; // u32 byte length, bytes
const T_ERROR = 17; // name, registered class, message, code, stack, cause, extra properties (an object)
const T_HANDOVER = 18; // u16 owner shard, u32 handover id, f64 address, f64 length (a 4 GiB buffer's 2^32 fits no u32)
const T_INT8 = 19; // i8: the small integers counters and indexes mostly are
const T_HANDOVER_LENT = 20; // as T_HANDOVER, for a buffer over memory its owner keeps (NativeBuffer.lend)

/** Node's fast Latin-1/UTF-16 copies, which Bun's Buffer has but its types do not list. */
interface FastBuffer extends Buffer {
  latin1Write(text: string, offset: number, length: number): number;
  ucs2Write(text: string, offset: number, length: number): number;
  latin1Slice(start: number, end: number): string;
  ucs2Slice(start: number, end: number): string;
}

function fastBuffer(buffer: ArrayBufferLike, offset?: number, length?: number): FastBuffer {
  return Buffer.from(buffer, offset, length) as FastBuffer;
}

/** Deepest nesting accepted; deeper values are almost always cycles. */
export const MAX_DEPTH = 64;

const typedKinds = [
  Uint8Array, Int8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array,
  Float32Array, Float64Array, BigInt64Array, BigUint64Array,
  // Last (kind 11), where the engine has it: every shard runs the same one.
  ...(typeof Float16Array === "function" ? [Float16Array] : []),
] as const;
type TypedCtor = (typeof typedKinds)[number];
const typedKindOf = new Map<unknown, number>(typedKinds.map((c, i) => [c, i]));

export { fastBuffer, type FastBuffer };

/** Thrown by a ring-backed Writer that ran out of room; never escapes the smp layer. */
export const RING_FULL: unique symbol = Symbol("shoal.smp.ringFull");

/** Where handed-over NativeBuffers are registered while a message is encoded (see handover.ts). */
export interface HandoverSink {
  /** This shard's id: the owner recorded in the message. */
  readonly shard: number;
  /** Reserves an id for `buffer`; committed or cancelled with the message. */
  reserve(buffer: NativeBuffer): number;
  /** Gives back reserved ids whose buffers are not in the message after all. */
  cancel(ids: readonly number[]): void;
}

/** Turns a handed-over buffer description back into a NativeBuffer on the receiving shard. */
export type ForeignBufferFactory = (owner: number, id: number, address: number, length: number, lent: boolean) => NativeBuffer;

/** Error classes rebuilt as themselves on the receiving shard, by the name they were registered under. */
const knownErrors = new Map<string, new (...args: never[]) => Error>();
/** The registered classes' prototypes, and the name each was registered under. */
const knownPrototypes = new Map<object, string>();

/**
 * The name the nearest registered class in `e`'s prototype chain was registered under (its
 * constructor's name, which an instance's `name` need not be: a plain `class X extends Error`
 * makes errors named "Error"), or undefined.
 */
function registeredClassOf(e: Error): string | undefined {
  for (let p = Object.getPrototypeOf(e) as object | null; p !== null && p !== Error.prototype; p = Object.getPrototypeOf(p) as object | null) {
    const key = knownPrototypes.get(p);
    if (key !== undefined) return key;
  }
  return undefined;
}

/**
 * Lets an error class keep its identity across shards: an instance thrown on one shard is
 * rebuilt on the caller's as an instance of the same class (its prototype; the constructor does
 * not run), with name, message, code, cause, stack and the own properties that can cross, so
 * `instanceof` answers the same wherever the call ran. Classes are matched by their
 * constructor's name (not the errors' `name`, which a plain `class X extends Error` leaves
 * "Error"): register each on every shard (at the top level of a module every shard imports), and
 * give classes that cross distinct names. An instance of an unregistered subclass arrives as its
 * nearest registered ancestor (keeping its name), one of no registered class as RemoteError
 * (or as the registered class its name names: a DOMException "AbortError" as AbortError).
 * Shoal's own errors, SystemError and JavaScript's built-in error classes are registered already.
 */
export function registerErrorClass(ctor: new (...args: never[]) => Error): void {
  if (typeof ctor !== "function" || !(ctor.prototype instanceof Error)) {
    throw new InvalidArgumentError("registerErrorClass: expected an Error subclass");
  }
  knownErrors.set(ctor.name, ctor);
  knownPrototypes.set(ctor.prototype, ctor.name);
}

// Shoal's own error classes (except RemoteError), SystemError and the built-in error classes
// (not Error itself, nor AggregateError, whose `errors` cross as a property of a RemoteError)
// arrive as themselves.
for (const ctor of [
  ...Object.values(smpErrors),
  TypeError,
  RangeError,
  SyntaxError,
  ReferenceError,
  EvalError,
  URIError,
]) {
  if (ctor !== RemoteError) registerErrorClass(ctor as new (...args: never[]) => Error);
}
// Every error class of Shoal's core, net and app layers, as their modules define them (one that
// a shard has not loaded arrives as its nearest registered ancestor there: ShoalError).
forEachShoalErrorClass(registerErrorClass);

let NativeBufferClass: (abstract new (...args: never[]) => NativeBuffer) | undefined;

/** @internal Set once by handover.ts so that the codec recognizes NativeBuffers without importing them eagerly. */
export function setNativeBufferClass(ctor: abstract new (...args: never[]) => NativeBuffer): void {
  NativeBufferClass = ctor;
}

/**
 * @internal Releases every NativeBuffer in `v` (through the arrays, plain objects, maps and sets
 * the codec would cross, cycles and hostile getters survived): a handler's result that could not
 * be encoded was the handler's to give away, and nobody else will give back what it held.
 */
export function releaseNativeBuffersIn(v: unknown): void {
  const ctor = NativeBufferClass;
  if (ctor === undefined) return;
  const seen = new Set<object>();
  const visit = (x: unknown, depth: number): void => {
    if (x === null || typeof x !== "object" || depth > MAX_DEPTH || seen.has(x)) return;
    seen.add(x);
    try {
      if (x instanceof ctor) {
        if (!x.isReleased) x.release();
      } else if (Array.isArray(x)) {
        for (const e of x) visit(e, depth + 1);
      } else if (x instanceof Map) {
        for (const [k, e] of x) {
          visit(k, depth + 1);
          visit(e, depth + 1);
        }
      } else if (x instanceof Set) {
        for (const e of x) visit(e, depth + 1);
      } else {
        const proto = Object.getPrototypeOf(x);
        if (proto !== Object.prototype && proto !== null) return;
        for (const key in x) if (Object.hasOwn(x, key)) visit((x as Record<string, unknown>)[key], depth + 1);
      }
    } catch {
      // a getter that throws: what lies behind it cannot be reached
    }
  };
  visit(v, 0);
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (typeof v !== "object") return typeof v;
  const ctor = (v as { constructor?: { name?: string } }).constructor;
  return ctor?.name ? `an instance of ${ctor.name}` : "an object with a custom prototype";
}

/**
 * An error's name, message or cause as text: `fallback` for null or undefined, and a
 * description instead of a throw where the value has no string form (a getter or toString
 * that throws, an object without one).
 */
function textOf(get: () => unknown, fallback: string): string {
  try {
    const v = get();
    return v === undefined || v === null ? fallback : String(v);
  } catch {
    return `<${fallback === "" ? "value" : fallback.toLowerCase()} without a string form>`;
  }
}

/** Encodes values into a ring (limited) or into growable scratch memory. */
export class Writer {
  u8: Uint8Array;
  dv: DataView;
  buf: FastBuffer;
  pos = 0;
  /** Writing stops here: the ring's room, or the scratch buffer's size (at most maxBytes). */
  limit: number;
  /** True when writing straight into a ring. */
  ring = false;
  /** Largest message a scratch writer grows to. */
  readonly maxBytes: number;
  /** Buffers handed over by the message being encoded, and their reserved ids. */
  readonly handed: NativeBuffer[] = [];
  readonly handedIds: number[] = [];
  sink: HandoverSink | undefined;
  /**
   * Set while the same arguments are encoded for several shards (invokeOnAll): a NativeBuffer
   * then fails with this reason. It has one owner at a time: handed to the first shard, it was
   * gone (released here) for the next, which refused it after the first had run the call.
   */
  refuseHandover: string | undefined;
  /** The objects being encoded, outermost first (cycle detection). */
  private readonly path: object[] = [];
  private scratch: ArrayBuffer;

  /** A scratch writer of `initialBytes`, growing up to `maxBytes`. */
  constructor(initialBytes: number, maxBytes: number, sink?: HandoverSink) {
    this.scratch = new ArrayBuffer(initialBytes);
    this.u8 = new Uint8Array(this.scratch);
    this.dv = new DataView(this.scratch);
    this.buf = fastBuffer(this.scratch);
    // Never past maxBytes, even when the first scratch memory is larger (4 KiB rings take
    // records of 2 KiB): a bigger record was not refused here as MessageTooLargeError but
    // reached OutRing.write, which threw a plain Error (and the call's handovers stayed reserved).
    this.limit = Math.min(initialBytes, maxBytes);
    this.maxBytes = maxBytes;
    this.sink = sink;
  }

  /** Points this writer at ring memory: [pos, limit) is free there. */
  target(u8: Uint8Array, dv: DataView, buf: FastBuffer, pos: number, limit: number): void {
    this.u8 = u8;
    this.dv = dv;
    this.buf = buf;
    this.pos = pos;
    this.limit = limit;
    this.ring = true;
    if (this.handed.length !== 0) this.forgetHandovers();
  }

  /** Setting an array's length costs ~25 ns in JSC even when it is 0 already: only when needed. */
  private forgetHandovers(): void {
    this.handed.length = 0;
    this.handedIds.length = 0;
  }

  /** Points this writer back at its own scratch memory, empty. */
  reset(): this {
    if (this.ring) {
      this.u8 = new Uint8Array(this.scratch);
      this.dv = new DataView(this.scratch);
      this.buf = fastBuffer(this.scratch);
      this.ring = false;
    }
    this.pos = 0;
    this.limit = Math.min(this.scratch.byteLength, this.maxBytes);
    if (this.handed.length !== 0) this.forgetHandovers();
    return this;
  }

  /** Makes room for `n` more bytes or throws (RING_FULL in a ring, MessageTooLargeError past maxBytes). */
  ensure(n: number): void {
    if (this.pos + n > this.limit) this.grow(n);
  }

  private grow(n: number): void {
    if (this.ring) throw RING_FULL;
    const need = this.pos + n;
    if (need > this.maxBytes) {
      throw new MessageTooLargeError(
        `a cross-shard message needs more than ${this.maxBytes} bytes (the ring limit); ` +
          "send large payloads as NativeBuffers, which are handed over instead of copied",
      );
    }
    let size = this.scratch.byteLength * 2;
    while (size < need) size *= 2;
    size = Math.min(size, Math.max(this.maxBytes, need));
    const next = new ArrayBuffer(size);
    new Uint8Array(next).set(new Uint8Array(this.scratch, 0, this.pos));
    this.scratch = next;
    this.u8 = new Uint8Array(next);
    this.dv = new DataView(next);
    this.buf = fastBuffer(next);
    this.limit = size;
  }

  u8v(v: number): void {
    this.ensure(1);
    this.u8[this.pos++] = v;
  }

  u16(v: number): void {
    this.ensure(2);
    this.dv.setUint16(this.pos, v, true);
    this.pos += 2;
  }

  u32(v: number): void {
    this.ensure(4);
    this.dv.setUint32(this.pos, v, true);
    this.pos += 4;
  }

  f64(v: number): void {
    this.ensure(8);
    this.dv.setFloat64(this.pos, v, true);
    this.pos += 8;
  }

  /** Encodes any encodable value. Throws EncodeError (with a path) for what cannot cross. */
  value(v: unknown, depth = 0): void {
    switch (typeof v) {
      case "number":
        this.number(v);
        return;
      case "string":
        this.string(v);
        return;
      case "boolean":
        this.u8v(v ? T_TRUE : T_FALSE);
        return;
      case "undefined":
        this.u8v(T_UNDEFINED);
        return;
      case "object":
        if (v === null) this.u8v(T_NULL);
        else this.object(v, depth);
        return;
      case "bigint":
        this.bigint(v);
        return;
      case "function":
        throw new EncodeError(
          `a function cannot cross shards (${(v as Function).name || "anonymous"}); register it with registerHandler and pass its name`,
        );
      default:
        throw new EncodeError(`a ${typeof v} cannot cross shards`);
    }
  }

  number(v: number): void {
    if ((v | 0) === v && (v !== 0 || 1 / v > 0)) {
      if (v >= -128 && v <= 127) {
        this.ensure(2);
        this.u8[this.pos] = T_INT8;
        this.dv.setInt8(this.pos + 1, v);
        this.pos += 2;
        return;
      }
      this.ensure(5);
      this.u8[this.pos] = T_INT32;
      this.dv.setInt32(this.pos + 1, v, true);
      this.pos += 5;
      return;
    }
    this.ensure(9);
    this.u8[this.pos] = T_FLOAT64;
    this.dv.setFloat64(this.pos + 1, v, true);
    this.pos += 9;
  }

  string(s: string): void {
    const n = s.length;
    if (n < 256) {
      this.ensure(2 + n);
      const u8 = this.u8;
      let p = this.pos + 2;
      for (let i = 0; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c > 255) {
          this.utf16(s);
          return;
        }
        u8[p++] = c;
      }
      u8[this.pos] = T_STR8;
      u8[this.pos + 1] = n;
      this.pos = p;
      return;
    }
    // Either form takes at least 5 + n bytes: a string past the message limit fails before
    // its characters are scanned (2^28 of them took ~300 ms).
    this.ensure(5 + n);
    for (let i = 0; i < n; i++) {
      if (s.charCodeAt(i) > 255) {
        this.utf16(s);
        return;
      }
    }
    this.u8[this.pos] = T_LATIN1;
    this.dv.setUint32(this.pos + 1, n, true);
    this.buf.latin1Write(s, this.pos + 5, n);
    this.pos += 5 + n;
  }

  private utf16(s: string): void {
    const bytes = s.length * 2;
    this.ensure(5 + bytes);
    this.u8[this.pos] = T_UTF16;
    this.dv.setUint32(this.pos + 1, s.length, true);
    this.buf.ucs2Write(s, this.pos + 5, bytes);
    this.pos += 5 + bytes;
  }

  private bigint(v: bigint): void {
    const negative = v < 0n;
    const m = negative ? -v : v;
    if (m <= 0xffff_ffff_ffff_ffffn) {
      const words = m === 0n ? 0 : 1;
      this.ensure(6 + words * 8);
      this.u8[this.pos] = T_BIGINT;
      this.u8[this.pos + 1] = negative ? 1 : 0;
      this.dv.setUint32(this.pos + 2, words, true);
      if (words === 1) this.dv.setBigUint64(this.pos + 6, m, true);
      this.pos += 6 + words * 8;
      return;
    }
    // Through its hex digits: linear, where peeling 64-bit words off with shifts copies the
    // whole number per word (a 1 MiB bigint took seconds before it was found too large).
    const hex = m.toString(16);
    const words = Math.ceil(hex.length / 16);
    this.ensure(6 + words * 8);
    this.u8[this.pos] = T_BIGINT;
    this.u8[this.pos + 1] = negative ? 1 : 0;
    this.dv.setUint32(this.pos + 2, words, true);
    let p = this.pos + 6;
    // u32 pieces, least significant first: the little-endian layout of the u64 words.
    for (let end = hex.length; end > 0; end -= 8) {
      this.dv.setUint32(p, parseInt(hex.slice(Math.max(0, end - 8), end), 16), true);
      p += 4;
    }
    const stop = this.pos + 6 + words * 8;
    if (p < stop) this.dv.setUint32(p, 0, true);
    this.pos = stop;
  }

  private object(v: object, depth: number): void {
    if (depth >= MAX_DEPTH) throw new EncodeError(`nesting deeper than ${MAX_DEPTH} levels (is the value circular?)`);
    // The containers being encoded around this value, innermost last: one of them again is a
    // cycle. The depth limit alone let an error that refers to itself (its cause, a property)
    // cross as dozens of nested copies, and one that refers to itself twice grow past the
    // message limit (2^depth copies), where it should lose that part as anything else that
    // cannot cross (a cause becomes its description, a property is left out).
    const path = this.path;
    for (let i = path.length - 1; i >= 0; i--) {
      if (path[i] === v) throw new EncodeError("a circular reference cannot cross shards (the value contains itself)");
    }
    path.push(v);
    try {
      this.objectIn(v, depth);
    } finally {
      path.pop();
    }
  }

  private objectIn(v: object, depth: number): void {
    if (Array.isArray(v)) return this.array(v, depth + 1);
    const proto = Object.getPrototypeOf(v);
    if (proto === Object.prototype || proto === null) return this.plain(v as Record<string, unknown>, depth + 1);
    if (ArrayBuffer.isView(v)) return this.typed(v);
    if (v instanceof Error) return this.error(v, depth + 1);
    if (v instanceof Date) {
      this.u8v(T_DATE);
      this.f64(v.getTime());
      return;
    }
    if (v instanceof Map) return this.map(v, depth + 1);
    if (v instanceof Set) return this.set(v, depth + 1);
    if (v instanceof ArrayBuffer) {
      if (v.detached) throw new EncodeError("a detached ArrayBuffer cannot cross shards (it was transferred, or its NativeBuffer released)");
      this.u8v(T_ARRAY_BUFFER);
      this.bytes(new Uint8Array(v));
      return;
    }
    if (NativeBufferClass !== undefined && v instanceof NativeBufferClass) return this.handover(v);
    if (typeof (v as { then?: unknown }).then === "function") {
      throw new EncodeError("a promise cannot cross shards; await it first");
    }
    throw new EncodeError(`${typeName(v)} cannot cross shards; pass a plain object instead`);
  }

  private array(v: unknown[], depth: number): void {
    const n = v.length;
    this.u8v(T_ARRAY);
    this.u32(n);
    let i = 0;
    try {
      for (; i < n; i++) this.value(v[i], depth);
    } catch (err) {
      if (err instanceof EncodeError) err.prepend(`[${i}]`);
      throw err;
    }
  }

  private plain(v: Record<string, unknown>, depth: number): void {
    this.u8v(T_OBJECT);
    this.ensure(4);
    const countAt = this.pos;
    this.pos += 4;
    let count = 0;
    let key = "";
    try {
      for (key in v) {
        if (!Object.hasOwn(v, key)) continue;
        this.string(key);
        this.value(v[key], depth);
        count++;
      }
    } catch (err) {
      if (err instanceof EncodeError) err.prepend(/^[A-Za-z_$][\w$]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`);
      throw err;
    }
    this.dv.setUint32(countAt, count, true);
  }

  private map(v: Map<unknown, unknown>, depth: number): void {
    this.u8v(T_MAP);
    // The count is the entries written, set afterwards: a getter met on the way may add or
    // delete entries, and a count taken up front then misaligned every value after the map.
    this.ensure(4);
    const countAt = this.pos;
    this.pos += 4;
    let i = 0;
    try {
      for (const [k, x] of v) {
        this.value(k, depth);
        this.value(x, depth);
        i++;
      }
    } catch (err) {
      if (err instanceof EncodeError) err.prepend(`<map entry ${i}>`);
      throw err;
    }
    this.dv.setUint32(countAt, i, true);
  }

  private set(v: Set<unknown>, depth: number): void {
    this.u8v(T_SET);
    this.ensure(4); // the count is set afterwards, as a map's
    const countAt = this.pos;
    this.pos += 4;
    let i = 0;
    try {
      for (const x of v) {
        this.value(x, depth);
        i++;
      }
    } catch (err) {
      if (err instanceof EncodeError) err.prepend(`<set entry ${i}>`);
      throw err;
    }
    this.dv.setUint32(countAt, i, true);
  }

  private bytes(src: Uint8Array): void {
    const n = src.byteLength;
    this.u32(n);
    this.ensure(n);
    this.u8.set(src, this.pos);
    this.pos += n;
  }

  private typed(v: ArrayBufferView): void {
    const kind = typedKindOf.get(v.constructor) ?? (v instanceof Uint8Array ? 0 : undefined);
    if (kind === undefined) {
      throw new EncodeError(`${typeName(v)} cannot cross shards; pass a Uint8Array or another typed array`);
    }
    if ((v.buffer as ArrayBuffer).detached === true) {
      throw new EncodeError(`${typeName(v)} over a detached ArrayBuffer cannot cross shards (it was transferred, or its NativeBuffer released)`);
    }
    this.u8v(T_TYPED);
    this.u8v(kind);
    this.bytes(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
  }

  private error(e: Error, depth: number): void {
    this.u8v(T_ERROR);
    this.string(textOf(() => e.name, "Error"));
    this.value(registeredClassOf(e));
    this.string(textOf(() => e.message, ""));
    const code = (e as { code?: unknown }).code;
    this.value(typeof code === "string" || typeof code === "number" ? code : undefined);
    let stack: unknown;
    try {
      stack = e.stack; // a getter (an engine's own formats the name: a Symbol one throws)
    } catch {
      stack = undefined;
    }
    this.value(typeof stack === "string" ? stack : undefined);
    this.cause((e as { cause?: unknown }).cause, depth);
    // Other own enumerable properties (errno, op, shard, details objects...) and an
    // AggregateError's `errors` (the first 10): each that cannot cross is left out on its own.
    const countAt = this.pos;
    this.u32(0);
    let n = 0;
    const keys = Object.keys(e);
    if (e instanceof AggregateError && !keys.includes("errors")) keys.push("errors");
    for (const key of keys) {
      if (key === "name" || key === "message" || key === "code" || key === "stack" || key === "cause" || key === "__proto__") continue;
      let x = (e as unknown as Record<string, unknown>)[key];
      if (key === "errors" && e instanceof AggregateError && Array.isArray(x)) x = x.slice(0, MAX_AGGREGATED);
      const start = this.pos;
      const handed = this.handed.length;
      try {
        this.string(key);
        this.value(x, depth + 1);
        n++;
      } catch (err) {
        if (!(err instanceof EncodeError)) throw err;
        this.rollback(start, handed);
      }
    }
    this.dv.setUint32(countAt, n, true);
  }

  /**
   * Drops what was written since `start` (a part that cannot cross), giving back the handover
   * ids reserved inside it (not just forgetting them here).
   */
  private rollback(start: number, handed: number): void {
    this.pos = start;
    if (this.handedIds.length > handed) this.sink?.cancel(this.handedIds.slice(handed));
    this.handed.length = handed;
    this.handedIds.length = handed;
  }

  private cause(cause: unknown, depth: number): void {
    if (cause === undefined) {
      this.u8v(T_UNDEFINED);
      return;
    }
    // A cause that cannot cross becomes its description rather than failing the whole error.
    const start = this.pos;
    const handed = this.handed.length;
    try {
      this.value(cause, depth);
    } catch (err) {
      if (!(err instanceof EncodeError)) throw err;
      this.rollback(start, handed);
      this.string(cause instanceof Error ? `${textOf(() => cause.name, "Error")}: ${textOf(() => cause.message, "")}` : textOf(() => cause, ""));
    }
  }

  private handover(b: NativeBuffer): void {
    if (this.sink === undefined) throw new EncodeError("a NativeBuffer can only be handed over in a cross-shard call");
    if (this.refuseHandover !== undefined) throw new EncodeError(this.refuseHandover);
    if (b.isReleased) throw new EncodeError("a released NativeBuffer cannot be handed over");
    if (this.handed.includes(b)) throw new EncodeError("the same NativeBuffer appears twice in one message");
    this.ensure(23);
    const id = this.sink.reserve(b);
    this.handed.push(b);
    this.handedIds.push(id);
    // A lent buffer stays lent where it arrives: its memory is the owner's (an item of a
    // cache...), which the receiver's release must not poison.
    this.u8[this.pos] = b.isLent ? T_HANDOVER_LENT : T_HANDOVER;
    this.dv.setUint16(this.pos + 1, this.sink.shard, true);
    this.dv.setUint32(this.pos + 3, id, true);
    this.dv.setFloat64(this.pos + 7, b.address, true);
    // Not a u32: a whole 4 GiB buffer (2^32 bytes, the most one view holds) arrived as length 0.
    this.dv.setFloat64(this.pos + 15, b.length, true);
    this.pos += 23;
  }
}

/** An AggregateError crosses with this many of its `errors`. */
const MAX_AGGREGATED = 10;

/** Strings up to this many bytes are interned when decoded. */
const SHORT_STRING = 6;
/** The intern table is emptied when it reaches this size (it is a cache, not a registry). */
const INTERN_LIMIT = 8192;
const interned = new Map<number, string>();

/** Decodes values written by a Writer, from a ring or from scratch memory. */
export class Reader {
  u8: Uint8Array;
  dv: DataView;
  buf: FastBuffer;
  pos = 0;
  /** Builds the receiving side of handed-over buffers. */
  foreign: ForeignBufferFactory | undefined;
  /** The shard whose message is being read (the origin of a decoded error). */
  from = -1;
  /**
   * While true, every handed-over buffer decoded is also pushed to `received` (a call's
   * arguments: if the call never runs, they must go back to their owner).
   */
  collect = false;
  readonly received: unknown[] = [];

  constructor(u8: Uint8Array, foreign?: ForeignBufferFactory) {
    this.u8 = u8;
    this.dv = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
    this.buf = fastBuffer(u8.buffer, u8.byteOffset, u8.byteLength);
    this.foreign = foreign;
  }

  /** Reads over other memory (a scratch writer's) from `pos`. */
  over(w: Writer, pos: number): this {
    this.u8 = w.u8;
    this.dv = w.dv;
    this.buf = w.buf;
    this.pos = pos;
    return this;
  }

  u16(): number {
    const v = this.dv.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }

  u32(): number {
    const v = this.dv.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  /** Decodes one value. */
  value(): unknown {
    const tag = this.u8[this.pos++]!;
    switch (tag) {
      case T_INT8: {
        const v = this.dv.getInt8(this.pos);
        this.pos += 1;
        return v;
      }
      case T_INT32: {
        const v = this.dv.getInt32(this.pos, true);
        this.pos += 4;
        return v;
      }
      case T_FLOAT64: {
        const v = this.dv.getFloat64(this.pos, true);
        this.pos += 8;
        return v;
      }
      case T_STR8:
        return this.str8();
      case T_UNDEFINED:
        return undefined;
      case T_NULL:
        return null;
      case T_FALSE:
        return false;
      case T_TRUE:
        return true;
      case T_LATIN1: {
        const n = this.u32();
        const s = this.buf.latin1Slice(this.pos, this.pos + n);
        this.pos += n;
        return s;
      }
      case T_UTF16: {
        const n = this.u32() * 2;
        const s = this.buf.ucs2Slice(this.pos, this.pos + n);
        this.pos += n;
        return s;
      }
      case T_ARRAY: {
        const n = this.u32();
        const a = new Array(n);
        for (let i = 0; i < n; i++) a[i] = this.value();
        return a;
      }
      case T_OBJECT: {
        const n = this.u32();
        const o: Record<string, unknown> = {};
        for (let i = 0; i < n; i++) {
          const key = this.value() as string;
          const v = this.value();
          if (key === "__proto__") Object.defineProperty(o, key, { value: v, enumerable: true, writable: true, configurable: true });
          else o[key] = v;
        }
        return o;
      }
      case T_BIGINT:
        return this.bigint();
      case T_MAP: {
        const n = this.u32();
        const m = new Map();
        for (let i = 0; i < n; i++) {
          const k = this.value();
          m.set(k, this.value());
        }
        return m;
      }
      case T_SET: {
        const n = this.u32();
        const s = new Set();
        for (let i = 0; i < n; i++) s.add(this.value());
        return s;
      }
      case T_DATE: {
        const t = this.dv.getFloat64(this.pos, true);
        this.pos += 8;
        return new Date(t);
      }
      case T_TYPED: {
        const kind = this.u8[this.pos++]!;
        const n = this.u32();
        const copy = this.u8.slice(this.pos, this.pos + n);
        this.pos += n;
        const ctor: TypedCtor = typedKinds[kind]!;
        if (ctor === Uint8Array) return copy;
        return new ctor(copy.buffer, 0, n / ctor.BYTES_PER_ELEMENT);
      }
      case T_ARRAY_BUFFER: {
        const n = this.u32();
        const copy = this.u8.slice(this.pos, this.pos + n);
        this.pos += n;
        return copy.buffer;
      }
      case T_ERROR:
        return this.error();
      case T_HANDOVER:
      case T_HANDOVER_LENT: {
        const owner = this.dv.getUint16(this.pos, true);
        const id = this.dv.getUint32(this.pos + 2, true);
        const address = this.dv.getFloat64(this.pos + 6, true);
        const length = this.dv.getFloat64(this.pos + 14, true);
        this.pos += 22;
        if (this.foreign === undefined) throw new EncodeError("a NativeBuffer arrived where none can be received");
        const b = this.foreign(owner, id, address, length, tag === T_HANDOVER_LENT);
        if (this.collect) this.received.push(b);
        return b;
      }
      default:
        throw new EncodeError(`corrupt message: unknown tag ${tag} at byte ${this.pos - 1}`);
    }
  }

  private str8(): string {
    const n = this.u8[this.pos]!;
    const start = this.pos + 1;
    this.pos = start + n;
    if (n > SHORT_STRING) return this.buf.latin1Slice(start, start + n);
    // Short strings (object keys, names, small words) repeat: build each once. Up to six
    // Latin-1 bytes and the length pack exactly into one number, the key of the intern table.
    const u8 = this.u8;
    let key = n;
    for (let i = start; i < start + n; i++) key = key * 256 + u8[i]!;
    let s = interned.get(key);
    if (s === undefined) {
      s = n === 0 ? "" : this.buf.latin1Slice(start, start + n);
      if (interned.size >= INTERN_LIMIT) interned.clear();
      interned.set(key, s);
    }
    return s;
  }

  private bigint(): bigint {
    const negative = this.u8[this.pos] === 1;
    const n = this.dv.getUint32(this.pos + 1, true);
    this.pos += 5;
    let v: bigint;
    if (n <= 1) {
      v = n === 0 ? 0n : this.dv.getBigUint64(this.pos, true);
    } else {
      // Through hex digits, most significant first: linear (OR-ing shifted words is quadratic).
      const parts = new Array<string>(2 * n);
      let p = this.pos + n * 8;
      for (let i = 0; i < parts.length; i++) {
        p -= 4;
        parts[i] = this.dv.getUint32(p, true).toString(16).padStart(8, "0");
      }
      v = BigInt(`0x${parts.join("")}`);
    }
    this.pos += n * 8;
    return negative ? -v : v;
  }

  private error(): Error {
    const name = this.value() as string;
    const registered = this.value() as string | undefined;
    const message = this.value() as string;
    const code = this.value() as string | number | undefined;
    const stack = this.value() as string | undefined;
    const cause = this.value();
    const n = this.u32();
    const extra = Object.create(null) as Record<string, unknown>;
    for (let i = 0; i < n; i++) {
      const key = this.value() as string;
      extra[key] = this.value();
    }
    return rebuildError(name, registered, message, code, stack, cause, extra, this.from);
  }
}

/** Defines an own data property (an accessor on the class's prototype must not refuse it, or run). */
function defineOwn(o: object, key: string, value: unknown, enumerable: boolean): void {
  Object.defineProperty(o, key, { value, writable: true, enumerable, configurable: true });
}

function rebuildError(
  name: string,
  registered: string | undefined,
  message: string,
  code: string | number | undefined,
  stack: string | undefined,
  cause: unknown,
  extra: Record<string, unknown>,
  shard: number,
): Error {
  // The sender names the registered class its error is an instance of; an error of none (a
  // DOMException, a class registered here only) is matched by its name.
  const known = knownErrors.get(registered ?? name);
  let e: Error;
  if (known !== undefined) {
    // A registered class (Shoal's errors, built-ins, registerErrorClass): keep it so that
    // instanceof works across shards. Own data properties, as a constructor makes them: a
    // getter-only `code` or `name` on the class's prototype threw here (strict mode).
    e = Object.create(known.prototype) as Error;
    defineOwn(e, "message", message, false);
    if (cause !== undefined) defineOwn(e, "cause", cause, false);
    if (code !== undefined || e instanceof ShoalError) defineOwn(e, "code", code, true);
    if (e.name !== name) defineOwn(e, "name", name, true);
  } else {
    e = new RemoteError(name, message, code === undefined ? "ERR_REMOTE" : String(code), cause === undefined ? undefined : { cause });
  }
  Object.defineProperty(e, "stack", {
    value: stack ?? `${name}: ${message}`,
    writable: true,
    configurable: true,
  });
  for (const key in extra) {
    if (key !== "shard" && key !== "__proto__") defineOwn(e, key, extra[key], true);
  }
  // The shard it names: set where it was thrown (RemoteError) or by the smp layer (ShardGoneError),
  // kept across further hops; otherwise the shard it came from.
  const named = extra["shard"];
  Object.defineProperty(e, "shard", { value: typeof named === "number" ? named : shard, writable: true, enumerable: true, configurable: true });
  return e;
}
