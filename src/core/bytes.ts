/**
 * Copying bytes between Uint8Arrays without a view object per call. `dst.set(src.subarray(...))`
 * allocates a view each time; on a server's per-request path those views can be most of its
 * garbage (memcached: one per get response and two per set, ~11 MB/s at 88,000 requests/s, an
 * eden collection about every second). Short ranges go byte by byte, medium ones 4 bytes at a
 * time through DataViews the caller keeps (DataViewCache), long ones through TypedArray.set,
 * which is cheaper there than the loop.
 */

/** Up to this many bytes: a byte loop. */
const BYTES_MAX = 16;
/** Up to this many: 4-byte words through DataViews; above, TypedArray.set with a view. */
export const COPY_WORDS_MAX = 256;

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

/**
 * Copies src[from, from + len) to dst[at, ...). `dstView` and `srcView` view the whole
 * ArrayBuffers of `dst` and `src` (dataViewOf, DataViewCache).
 */
export function copyBytes(dst: Uint8Array, dstView: DataView, at: number, src: Uint8Array, srcView: DataView, from: number, len: number): void {
  if (len <= BYTES_MAX) {
    for (let i = 0; i < len; i++) dst[at + i] = src[from + i]!;
  } else if (len <= COPY_WORDS_MAX) {
    const d = dst.byteOffset + at;
    const s = src.byteOffset + from;
    let i = 0;
    for (; i + 4 <= len; i += 4) dstView.setUint32(d + i, srcView.getUint32(s + i, true), true);
    for (; i < len; i++) dst[at + i] = src[from + i]!;
  } else {
    dst.set(src.subarray(from, from + len), at);
  }
}
