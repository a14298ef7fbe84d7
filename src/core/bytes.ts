/**
 * Copying bytes between Uint8Arrays without a view object per call. `dst.set(src.subarray(...))`
 * allocates a view each time; on a server's per-request path those views can be most of its
 * garbage (memcached: one per get response and two per set, ~11 MB/s at 88,000 requests/s, an
 * eden collection about every second). Short ranges go byte by byte; longer ones through one
 * native call (bun:ffi passes the arrays' data pointers): ~9 ns for 100 bytes, against ~45 ns
 * for a JS loop of 4-byte words and ~40 ns for a subarray plus set.
 */
import { native } from "./native.ts";

/** Up to this many bytes: a byte loop; above, one native memmove. */
const BYTES_MAX = 16;
/** Longest copy the native call takes (its length is a u32). */
const NATIVE_MAX = 0xffff_ffff;

type NativeCopy = (dst: Uint8Array, dstOff: number, src: Uint8Array, srcOff: number, len: number) => void;
let nativeCopy: NativeCopy | undefined;

/**
 * DataViews over whole ArrayBuffers, for the two most recently used ones. The buffers a hot
 * path copies between are usually few and long-lived (receive buffers are views of one native
 * region; an item arena; a connection's own buffer), so a view is created only when they change.
 */
export class DataViewCache {
  private a: ArrayBufferLike | undefined;
  private av: DataView | undefined;
  private b: ArrayBufferLike | undefined;
  private bv: DataView | undefined;
  /** The view asked for last: `.buffer` is a native getter (~8 ns), identity is free. */
  private lastView: Uint8Array | undefined;
  private lastDv: DataView | undefined;

  /** A DataView of all of `bytes.buffer` (index it with `bytes.byteOffset + i`). */
  of(bytes: Uint8Array): DataView {
    if (bytes === this.lastView) return this.lastDv!;
    const v = this.lookup(bytes.buffer);
    this.lastView = bytes;
    this.lastDv = v;
    return v;
  }

  private lookup(buffer: ArrayBufferLike): DataView {
    if (buffer === this.a) return this.av!;
    if (buffer === this.b) {
      // Most recent first.
      const v = this.bv!;
      this.b = this.a;
      this.bv = this.av;
      this.a = buffer;
      this.av = v;
      return v;
    }
    const v = new DataView(buffer);
    this.b = this.a;
    this.bv = this.av;
    this.a = buffer;
    this.av = v;
    return v;
  }
}

/** A DataView over all of `b.buffer` (index it with `b.byteOffset + i`). */
export function dataViewOf(b: Uint8Array): DataView {
  return new DataView(b.buffer);
}

/** The original %TypedArray%.prototype.length getter, for messages (see lengthOf). */
const typedArrayLength = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Uint8Array.prototype), "length")!.get!;

/**
 * Copies src[from, from + len) to dst[at, ...) (the ranges may overlap). A range outside its
 * array throws RangeError before anything is copied (the native copy must never run past one).
 */
export function copyBytes(dst: Uint8Array, at: number, src: Uint8Array, from: number, len: number): void {
  // The bounds come from element reads, not `.length`: a view's `length` can be redefined (an own
  // property, a changed prototype) to say 4096 for a 16-byte view, and the native copy wrote 200
  // bytes past it. A typed array's integer-indexed read cannot be redefined and is `undefined`
  // exactly past its end (for wider elements, earlier: never too late). bun:ffi refuses anything
  // but a typed array for a pointer (TypeError). The original `length` getter through `.call`
  // would be as sound but nearly doubled a 64-byte copy (x1.9); these reads cost ~2%.
  const dstEnd = at + len;
  const srcEnd = from + len;
  if (
    !(Number.isInteger(at) && Number.isInteger(from) && Number.isInteger(len) && at >= 0 && from >= 0 && len >= 0) ||
    !(dstEnd === 0 || dst[dstEnd - 1] !== undefined) ||
    !(srcEnd === 0 || src[srcEnd - 1] !== undefined)
  ) {
    throw new RangeError(`copyBytes: [${from}, ${srcEnd}) of ${lengthOf(src)} bytes to [${at}, ${dstEnd}) of ${lengthOf(dst)}`);
  }
  if (len <= BYTES_MAX) {
    // A forward loop smeared an overlapping range whose destination lies after its source
    // ([0..9] to 1 gave ten 0s): then copy backwards, as memmove does. Two views of one buffer
    // overlap as their byte offsets say; views of different buffers do not overlap at all, so
    // the direction their offsets pick is as good as any (reading `.buffer` to tell them apart
    // would cost more than the copy).
    if (dst.byteOffset + at > src.byteOffset + from) {
      for (let i = len - 1; i >= 0; i--) dst[at + i] = src[from + i]!;
    } else {
      for (let i = 0; i < len; i++) dst[at + i] = src[from + i]!;
    }
  } else if (len > NATIVE_MAX) {
    // The native call takes a u32 length: a whole 4 GiB view's 2^32 bytes read as 0 and nothing
    // was copied. Two calls; ranges this long lie in 4 GiB views (the most one holds) at offset
    // 0, so they are the same memory or none of it.
    const copy = (nativeCopy ??= native().shoal_copy as unknown as NativeCopy);
    const half = Math.floor(len / 2);
    copy(dst, at, src, from, half);
    copy(dst, at + half, src, from + half, len - half);
  } else {
    (nativeCopy ??= native().shoal_copy as unknown as NativeCopy)(dst, at, src, from, len);
  }
}

/** The real length of a typed array (for messages), whatever its `length` property says. */
function lengthOf(a: unknown): string {
  try {
    return String(typedArrayLength.call(a));
  } catch {
    return "(not a typed array)";
  }
}
