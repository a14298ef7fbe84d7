/**
 * A growable byte buffer that responses are rendered into. One per connection (plus one per
 * shard for forwarded work): rendering never allocates once the buffer has grown to the
 * connection's usual batch size. The transport copies `bytes()` out and calls `reset()`, or,
 * for an Out in native memory (made with a BufferCache), sends a large head of it in place
 * (`handOff`) and goes on in a fresh buffer.
 */
import { writeInt, writeUint } from "./numbers.ts";
import { copyBytes, type BufferCache, type NativeBuffer } from "shoal";

const encoder = new TextEncoder();
const NO_BYTES = new Uint8Array(0);

/** Pre-encodes an ASCII constant. */
export function ascii(s: string): Uint8Array {
  return encoder.encode(s);
}

/** Copies up to this many bytes with a byte loop (inline); longer ones with copyBytes. */
const COPY_LOOP_MAX = 32;

/** Response bytes under construction. */
export class Out {
  buf: Uint8Array;
  pos = 0;
  /** The native buffer `buf` views (an Out made with a cache), else undefined. */
  native: NativeBuffer | undefined;
  /** The cache a native Out takes its buffers from (undefined: a JS array). */
  readonly cache: BufferCache | undefined;
  /** A small JS array the Out renders into until it needs more (`startSmall`), and after shed(). */
  private readonly small: Uint8Array | undefined;

  /**
   * With `cache`, the bytes live in native memory taken from it (whole mappings: at least the
   * cache's smallest class), so that the transport can send them in place (handOff). With
   * `startSmall` too, they start in a JS array of `initialSize` and move to native memory only
   * when they outgrow it (a small answer costs no take and release).
   */
  constructor(initialSize = 16 * 1024, cache?: BufferCache, startSmall = false) {
    this.cache = cache;
    if (cache === undefined || startSmall) {
      this.buf = new Uint8Array(initialSize);
      if (cache !== undefined) this.small = this.buf;
    } else {
      this.native = cache.take(classBytes(cache, initialSize));
      this.buf = this.native.bytes;
    }
  }

  /** Makes room for `n` more bytes. */
  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = Math.max(this.buf.length * 2, 64);
    while (size < this.pos + n) size *= 2;
    const cache = this.cache;
    if (cache !== undefined) {
      const next = cache.take(classBytes(cache, size));
      if (this.pos > 0) copyBytes(next.bytes, 0, this.buf, 0, this.pos);
      this.native?.release();
      this.native = next;
      this.buf = next.bytes;
      return;
    }
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
  }

  /**
   * The buffer handOff() will go on in, for an answer of `n` bytes: taken before the answer is
   * queued, so that a failure to map one (ENOMEM) leaves this Out as it was, with nothing of
   * its buffer queued for sending.
   */
  spare(n: number): NativeBuffer {
    return this.cache!.take(classBytes(this.cache!, n));
  }

  /**
   * For an Out in native memory whose bytes before `from` the caller queued for sending in
   * place: gives up its buffer, which the caller releases (it goes back to the cache once
   * sent), and goes on in `fresh` (from spare()) with what came after `from` at its start.
   */
  handOff(fresh: NativeBuffer, from: number): NativeBuffer {
    const given = this.native!;
    const old = this.buf;
    const end = this.pos;
    this.native = fresh;
    this.buf = fresh.bytes;
    this.pos = 0;
    if (end > from) this.copy(old, from, end - from);
    return given;
  }

  /**
   * Empty: gives its native memory up (back to its cache, which keeps or unmaps it) and goes
   * on in its small array if it has one (else in none: the next write takes a buffer again).
   */
  shed(): void {
    this.pos = 0;
    if (this.native !== undefined) {
      if (!this.native.isReleased) this.native.release();
      this.native = undefined;
    }
    this.buf = this.small ?? NO_BYTES;
  }

  /** Gives the native buffer back (the Out is not used after this). */
  close(): void {
    this.shed();
  }

  /** Appends pre-encoded bytes. */
  put(b: Uint8Array): void {
    const n = b.length;
    if (this.pos + n > this.buf.length) this.ensure(n);
    if (n <= 16) {
      const buf = this.buf;
      let p = this.pos;
      for (let i = 0; i < n; i++) buf[p++] = b[i]!;
      this.pos = p;
    } else {
      this.buf.set(b, this.pos);
      this.pos += n;
    }
  }

  /** Appends `len` bytes of `src` from `off`. */
  copy(src: Uint8Array, off: number, len: number): void {
    if (this.pos + len > this.buf.length) this.ensure(len);
    if (len <= COPY_LOOP_MAX) {
      const buf = this.buf;
      let p = this.pos;
      for (let i = 0; i < len; i++) buf[p++] = src[off + i]!;
      this.pos = p;
    } else {
      copyBytes(this.buf, this.pos, src, off, len);
      this.pos += len;
    }
  }

  /** Appends one byte. */
  byte(c: number): void {
    if (this.pos + 1 > this.buf.length) this.ensure(1);
    this.buf[this.pos++] = c;
  }

  /** Appends "\r\n". */
  crlf(): void {
    if (this.pos + 2 > this.buf.length) this.ensure(2);
    this.buf[this.pos++] = 13;
    this.buf[this.pos++] = 10;
  }

  /** Appends a non-negative integer below 2^53 in decimal. */
  uint(n: number): void {
    if (this.pos + 20 > this.buf.length) this.ensure(20);
    this.pos = writeUint(this.buf, this.pos, n);
  }

  /** Appends a signed integer in decimal. */
  int(n: number): void {
    if (this.pos + 21 > this.buf.length) this.ensure(21);
    this.pos = writeInt(this.buf, this.pos, n);
  }

  /** Appends a Latin-1 string (slow path: stats and rare messages). */
  str(s: string): void {
    const n = s.length;
    if (this.pos + n > this.buf.length) this.ensure(n);
    const buf = this.buf;
    let p = this.pos;
    for (let i = 0; i < n; i++) buf[p++] = s.charCodeAt(i) & 0xff;
    this.pos = p;
  }

  /** Appends a big-endian u16/u32. */
  u16(v: number): void {
    this.ensure(2);
    this.buf[this.pos++] = (v >>> 8) & 0xff;
    this.buf[this.pos++] = v & 0xff;
  }
  u32(v: number): void {
    this.ensure(4);
    const b = this.buf;
    b[this.pos++] = (v >>> 24) & 0xff;
    b[this.pos++] = (v >>> 16) & 0xff;
    b[this.pos++] = (v >>> 8) & 0xff;
    b[this.pos++] = v & 0xff;
  }
  /** Appends a big-endian u64 given as a double (exact below 2^53). */
  u64(v: number): void {
    const hi = Math.floor(v / 4294967296);
    this.u32(hi >>> 0);
    this.u32((v - hi * 4294967296) >>> 0);
  }

  /** The rendered bytes (a view; valid until the next write or reset). */
  bytes(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }

  /** Forgets the contents (keeps the memory). */
  reset(): void {
    this.pos = 0;
  }

  /** Drops everything after `mark` (a previous `pos`). */
  truncate(mark: number): void {
    this.pos = mark;
  }
}

/** The smallest whole mapping of `cache` that holds `n` bytes (a power of two). */
function classBytes(cache: BufferCache, n: number): number {
  let size = cache.minClassBytes;
  while (size < n) size *= 2;
  return size;
}
