/**
 * Native buffers: memory allocated by Zig (page-aligned mappings), viewed from JS without a
 * copy. The kernel reads and writes these directly. A BufferPool maps one region and carves
 * fixed-size, aligned buffers out of it; acquiring and releasing is pure JS (no FFI call).
 */
import { mapNative, mapNativeHuge, native, nativeView, poolView, poolViewReleased } from "./native.ts";
import { AbortError, ClosedError, InvalidArgumentError, listShoalErrorClass, ShoalError, SystemError } from "./errors.ts";
import { describeValue } from "./describe.ts";

/** Fill byte for released buffers when poisoning is on: views kept too long read 0xDE. */
export const POISON_BYTE = 0xde;

let poisonOnRelease = process.env["SHOAL_DEBUG_POISON"] === "1";

/** Debug aid: fill buffers with 0xDE when they are released, so a view kept too long fails loudly. */
export function setBufferPoisoning(on: boolean): void {
  poisonOnRelease = on;
}

/** Thrown when a pool has no free buffer and the caller asked not to wait. */
export class PoolExhaustedError extends ShoalError {
  constructor(message: string) {
    super("ERR_POOL_EXHAUSTED", message);
  }
}
listShoalErrorClass(PoolExhaustedError);

/** What a NativeBuffer returns to when recycled (a BufferPool, a BufferCache, its home shard, the owner of lent memory). */
export interface BufferHome {
  recycle(buffer: NativeBuffer): void;
}

/**
 * A buffer in native memory. `bytes` views it without copying; `address` is what the kernel
 * gets. Valid until `release()`; an in-flight operation pins it so release waits for the kernel.
 * Its identity (view, address, length, home) is fixed: they are read-only accessors, since the
 * reactor hands `address` and `length` to the kernel and release() unmaps or recycles by them (a
 * plain field let `buf.length = n` have a read run past the buffer into its neighbours).
 */
export class NativeBuffer {
  readonly #bytes: Uint8Array;
  readonly #address: number;
  readonly #length: number;
  readonly #mappedLength: number;
  readonly #pool: BufferHome | null;
  readonly #index: number;
  #released = false;
  #pins = 0;
  #deferredRecycle = false;
  /** Memory its home owns (lend()): never poisoned or unmapped here. */
  #lent = false;

  /**
   * @internal `mappedLength`: bytes to unmap for a standalone buffer (pool null; huge-page
   * mappings round up to 2 MiB), default `bytes.length`.
   */
  constructor(bytes: Uint8Array, address: number, pool: BufferHome | null, index: number, mappedLength = bytes.length) {
    this.#bytes = bytes;
    this.#address = address;
    this.#length = bytes.length;
    this.#mappedLength = mappedLength;
    this.#pool = pool;
    this.#index = index;
  }

  /**
   * A NativeBuffer over memory that `home` owns (a range of an arena: a cache's item sent from
   * where it lies), `bytes` viewing it at native `address`. I/O pins it as any other buffer;
   * once it is released and no operation uses it any more (a zero-copy send: the kernel's
   * notification), `home.recycle(buffer)` runs, and from then on the owner may reuse the memory.
   * Shoal never poisons or unmaps lent memory. `index` is the owner's to choose (buffer.index).
   */
  static lend(bytes: Uint8Array, address: number, home: BufferHome, index: number): NativeBuffer {
    if (!(bytes instanceof Uint8Array)) throw new InvalidArgumentError("NativeBuffer.lend: bytes must be a Uint8Array");
    if (!Number.isSafeInteger(address) || address <= 0) throw new InvalidArgumentError(`NativeBuffer.lend: address must be a positive integer, got ${describeValue(address)}`);
    if (home === null || typeof home !== "object" || typeof home.recycle !== "function") {
      throw new InvalidArgumentError("NativeBuffer.lend: home must have a recycle(buffer) method");
    }
    const b = new NativeBuffer(bytes, address, home, index);
    b.#lent = true;
    return b;
  }

  /** Zero-copy view of the buffer's memory. Do not keep it past release(). */
  get bytes(): Uint8Array {
    return this.#bytes;
  }

  /** The native address of the first byte (what the kernel gets). */
  get address(): number {
    return this.#address;
  }

  /** Bytes in the buffer. */
  get length(): number {
    return this.#length;
  }

  /** @internal Bytes to unmap for a standalone buffer. */
  get mappedLength(): number {
    return this.#mappedLength;
  }

  /** @internal Where the buffer goes back on recycle (its pool or cache); null: unmapped. */
  get pool(): BufferHome | null {
    return this.#pool;
  }

  /** @internal Its slot in its pool (a BufferCache: its size class). */
  get index(): number {
    return this.#index;
  }

  /** @internal Operations in flight that use the buffer. */
  get pins(): number {
    return this.#pins;
  }

  /**
   * True for a buffer over memory another owner keeps (lend()): never poisoned or unmapped by
   * Shoal, and still so on a shard it was handed over to.
   */
  get isLent(): boolean {
    return this.#lent;
  }

  /** True once release() was called. */
  get isReleased(): boolean {
    return this.#released;
  }

  /** Throws ClosedError if the buffer was released. Cost: one branch. */
  check(what = "buffer"): void {
    if (this.#released) throw new ClosedError(`${what} was already released`, "ERR_BUFFER_RELEASED");
  }

  /**
   * Returns the buffer to its pool (or unmaps a standalone one). If an operation still uses it,
   * the memory is recycled when the kernel's completion arrives. Releasing twice throws.
   */
  release(): void {
    this.check();
    this.#released = true;
    if (this.#pins > 0) {
      this.#deferredRecycle = true;
      return;
    }
    this.recycle();
  }

  /** @internal Called by the reactor when an operation starts using the buffer. */
  pin(): void {
    this.#pins++;
  }

  /** @internal Called when the kernel's completion for an operation using the buffer arrived. */
  unpin(): void {
    // One unpin too many must not leave the count below zero: the next operation's pin would
    // then read 0 and a release during it would recycle memory the kernel still writes to.
    if (this.#pins <= 0) return;
    this.#pins--;
    if (this.#pins === 0 && this.#deferredRecycle) {
      this.#deferredRecycle = false;
      this.recycle();
    }
  }

  private recycle(): void {
    if (poisonOnRelease && !this.#lent) this.#bytes.fill(POISON_BYTE);
    if (this.#pool) this.#pool.recycle(this);
    else unmapViewed(this.#bytes.buffer as ArrayBuffer, this.#address, this.#mappedLength);
  }

  [Symbol.dispose](): void {
    if (!this.#released) this.release();
  }
}

function checkSize(name: string, value: number, min: number): void {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got ${describeValue(value)}`);
  }
}

/**
 * Unmaps native memory that JS views: first detaches the ArrayBuffer over it (transfer() moves
 * the external memory to a new ArrayBuffer, dropped at once, without copying), so that every
 * view kept by anyone reads as empty instead of touching unmapped pages (a SIGSEGV).
 */
function unmapViewed(region: ArrayBuffer, address: number, length: number): void {
  if (!region.detached) region.transfer();
  native().shoal_mem_unmap(address, length);
}

/** Largest mapping one ArrayBuffer can view (checked before mapping, so nothing leaks). */
export const MAX_VIEW_BYTES = 2 ** 32;

function checkViewable(what: string, bytes: number): void {
  if (bytes > MAX_VIEW_BYTES) throw new InvalidArgumentError(`${what} is ${bytes} bytes; at most ${MAX_VIEW_BYTES} (4 GiB) fit one view`);
}

function mapOrThrow(sizeBytes: number, what: string, huge = false): number {
  const address = huge ? mapNativeHuge(sizeBytes) : mapNative(sizeBytes);
  if (address < 0) throw new SystemError(`mmap (${what}, ${sizeBytes} bytes)`, -address);
  return address;
}

/** Size of one transparent huge page (x86-64 PMD). */
export const HUGE_PAGE_SIZE = 2 * 1024 * 1024;

export interface AlignedBufferOptions {
  /**
   * Back the buffer with transparent huge pages (MADV_HUGEPAGE; the mapping rounds up to whole
   * 2 MiB pages). For large tables read at random (hash tables, item arenas): one TLB entry per
   * 2 MiB instead of 512 cuts the cost of each cache miss. Best effort: with THP set to "never"
   * the buffer keeps 4 KiB pages. Memory is committed 2 MiB at a time as it is first touched.
   */
  hugePages?: boolean | undefined;
}

/**
 * Allocates one buffer of `size` bytes whose address is aligned to `alignment` (a power of two
 * up to 4096; mappings are page-aligned). Costs one mmap syscall: use a BufferPool on hot paths.
 */
export function allocateAlignedBuffer(size: number, alignment = 4096, options: AlignedBufferOptions = {}): NativeBuffer {
  if (options === null || typeof options !== "object") throw new InvalidArgumentError("allocateAlignedBuffer: options must be an object");
  checkSize("size", size, 1);
  checkSize("alignment", alignment, 1);
  if ((alignment & (alignment - 1)) !== 0 || alignment > 4096) {
    throw new InvalidArgumentError(`alignment must be a power of two <= 4096, got ${describeValue(alignment)}`);
  }
  checkViewable("allocateAlignedBuffer: size", size);
  // Only a boolean: "true" or 1 was taken for false, and the table got 4 KiB pages silently.
  if (options.hugePages !== undefined && typeof options.hugePages !== "boolean") {
    throw new InvalidArgumentError(`allocateAlignedBuffer: hugePages must be a boolean, got ${describeValue(options.hugePages)}`);
  }
  const huge = options.hugePages === true;
  const address = mapOrThrow(size, "allocateAlignedBuffer", huge);
  const bytes = new Uint8Array(nativeView(address, size));
  return new NativeBuffer(bytes, address, null, -1, huge ? Math.ceil(size / HUGE_PAGE_SIZE) * HUGE_PAGE_SIZE : size);
}

/**
 * A long-lived view of `length` bytes of native memory at `address` that another owner keeps
 * mapped: another shard's arena, read or sent from in place (the shards are Workers of one
 * process and share its address space). Make it once and slice it (NativeBuffer.lend over a
 * slice, for I/O): a view costs about 1 µs to make and more to collect. Its bytes are not
 * counted as heap growth by the loop's collection trigger. The owner must keep the memory
 * mapped while the view is used, for instance by lending ranges of it that come back to it
 * once done with; releaseForeignView(view) when the view is dropped.
 */
export function foreignView(address: number, length: number): Uint8Array {
  if (!Number.isSafeInteger(address) || address <= 0) throw new InvalidArgumentError(`foreignView: address must be a positive integer, got ${describeValue(address)}`);
  checkSize("foreignView: length", length, 1);
  checkViewable("foreignView: length", length);
  return new Uint8Array(poolView(address, length));
}

/** A view from foreignView() is no longer used (it stops counting as pool memory). */
export function releaseForeignView(view: Uint8Array): void {
  if (!(view instanceof Uint8Array)) throw new InvalidArgumentError("releaseForeignView: view must be a Uint8Array from foreignView()");
  poolViewReleased(view.buffer as ArrayBuffer);
}

export interface BufferPoolOptions {
  /** Bytes per buffer (rounded up to `alignment`). */
  bufferSize: number;
  /** Number of buffers. */
  count: number;
  /** Address alignment of every buffer (power of two, default 64, at most 4096). */
  alignment?: number | undefined;
}

/**
 * A fixed set of equal-size, aligned native buffers in one mapping, viewed through one
 * ArrayBuffer created at start. acquire/release cost a few nanoseconds and never call native code.
 */
export class BufferPool {
  readonly bufferSize: number;
  readonly count: number;
  readonly stride: number;
  readonly address: number;
  private readonly region: ArrayBuffer;
  private readonly regionBytes: number;
  private readonly free: Int32Array;
  private freeCount: number;
  private readonly buffers: (NativeBuffer | undefined)[];
  private closed = false;
  private waiters: ((b: NativeBuffer) => void)[] = [];

  constructor(options: BufferPoolOptions) {
    if (options === null || typeof options !== "object") {
      throw new InvalidArgumentError("BufferPool: options { bufferSize, count, alignment? } are required");
    }
    // Each option is read once: a getter answering differently on each read gave views of one
    // size laid out at the stride of another (buffers that overlapped their neighbours).
    const bufferSize = options.bufferSize;
    const count = options.count;
    const alignment = options.alignment ?? 64;
    checkSize("bufferSize", bufferSize, 1);
    checkSize("count", count, 1);
    checkSize("alignment", alignment, 1);
    if ((alignment & (alignment - 1)) !== 0 || alignment > 4096) {
      throw new InvalidArgumentError(`alignment must be a power of two <= 4096, got ${describeValue(alignment)}`);
    }
    this.bufferSize = bufferSize;
    this.count = count;
    this.stride = Math.ceil(bufferSize / alignment) * alignment;
    this.regionBytes = this.stride * this.count;
    checkViewable("BufferPool: bufferSize x count", this.regionBytes);
    // The bookkeeping first: when it cannot be allocated (2^31 one-byte buffers: an 8 GiB free
    // list), nothing is mapped yet. It used to be made after the mapping and its view, which
    // then stayed, counted in poolBytes() for good (the loop's full collections ignore that much).
    try {
      this.free = new Int32Array(this.count);
      this.buffers = new Array(this.count);
    } catch (cause) {
      throw new InvalidArgumentError(`BufferPool: ${this.count} buffers are too many to keep track of`, { cause });
    }
    for (let i = 0; i < this.count; i++) this.free[i] = this.count - 1 - i;
    this.freeCount = this.count;
    this.address = mapOrThrow(this.regionBytes, "BufferPool");
    this.region = poolView(this.address, this.regionBytes);
  }

  /** Buffers currently free. */
  get available(): number {
    return this.freeCount;
  }

  /** True if `address..address+length` lies inside this pool's mapping. */
  owns(address: number, length: number): boolean {
    return address >= this.address && address + length <= this.address + this.regionBytes;
  }

  /** Takes a free buffer. Throws PoolExhaustedError if none is free (use acquireEventually to wait). */
  acquire(): NativeBuffer {
    if (this.closed) throw new ClosedError("BufferPool is closed");
    if (this.freeCount === 0) {
      throw new PoolExhaustedError(`BufferPool of ${this.count} x ${this.bufferSize} bytes has no free buffer`);
    }
    return this.take();
  }

  /** Takes a free buffer, or undefined when none is free. */
  tryAcquire(): NativeBuffer | undefined {
    if (this.closed || this.freeCount === 0) return undefined;
    return this.take();
  }

  /** Waits (FIFO) for a free buffer. Rejects with AbortError through `signal`. */
  acquireEventually(opts?: { signal?: AbortSignal | undefined }): Promise<NativeBuffer> {
    if (this.closed) return Promise.reject(new ClosedError("BufferPool is closed"));
    const signal = opts?.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      return Promise.reject(new InvalidArgumentError("acquireEventually: opts.signal must be an AbortSignal"));
    }
    // An aborted signal rejects even when a buffer is free (as everywhere else: Semaphore.wait, sleep).
    if (signal?.aborted) {
      return Promise.reject(new AbortError("acquireEventually was aborted", { cause: signal.reason }));
    }
    if (this.freeCount > 0 && this.waiters.length === 0) return Promise.resolve(this.take());
    return new Promise((resolve, reject) => {
      const waiter = (b: NativeBuffer) => {
        signal?.removeEventListener("abort", onAbort);
        resolve(b);
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new AbortError("acquireEventually was aborted", { cause: signal!.reason }));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  private take(): NativeBuffer {
    const index = this.free[--this.freeCount]!;
    let b = this.buffers[index];
    if (b === undefined) {
      const bytes = new Uint8Array(this.region, index * this.stride, this.bufferSize);
      b = new NativeBuffer(bytes, this.address + index * this.stride, this, index);
      this.buffers[index] = b;
    } else {
      // Recycled: a fresh handle so a stale holder's release() cannot free the new owner's buffer.
      b = new NativeBuffer(b.bytes, b.address, this, index);
      this.buffers[index] = b;
    }
    return b;
  }

  /** @internal */
  recycle(b: NativeBuffer): void {
    if (this.closed) return;
    if (this.waiters.length > 0) {
      const next = new NativeBuffer(b.bytes, b.address, this, b.index);
      this.buffers[b.index] = next;
      this.waiters.shift()!(next);
      return;
    }
    this.free[this.freeCount++] = b.index;
  }

  /**
   * Unmaps the pool; only once every buffer was released (else throws). Views of its buffers
   * that someone kept are detached (length 0) rather than left pointing at unmapped memory.
   */
  /** `using pool = new BufferPool(...)`: closed at the end of the scope (throws if buffers are still out). */
  [Symbol.dispose](): void {
    this.close();
  }

  close(): void {
    if (this.closed) return;
    if (this.freeCount !== this.count) {
      throw new InvalidArgumentError(
        `BufferPool.close: ${this.count - this.freeCount} buffer(s) still acquired; release them first`,
      );
    }
    this.closed = true;
    // Views of its buffers kept past close read as empty rather than crash.
    unmapViewed(this.region, this.address, this.regionBytes);
    poolViewReleased(this.region);
  }
}

export interface BufferCacheOptions {
  /**
   * Bytes of released buffers kept for reuse (default 16 MiB); a release beyond it unmaps. The
   * mappings in use are not bounded by it.
   */
  retainBytes?: number | undefined;
  /**
   * Keep more than `retainBytes` when the buffers out at once need it: up to this many bytes
   * (default `retainBytes`: no more), as much as was out at once at the peak since the trim()
   * before last (so over one to two periods). A
   * burst that takes N buffers, releases them when the kernel has sent them, then takes N again
   * (a server's answers to all its connections) then reuses its mappings instead of mapping and
   * unmapping N of them per burst. Call trim() now and then (once a second) to let the kept
   * mappings shrink back once the bursts are smaller.
   */
  retainMaxBytes?: number | undefined;
  /** Smallest mapping (default 64 KiB, a power of two of at least 4096): sizes round up to a power of two from here. */
  minClassBytes?: number | undefined;
}

/**
 * Native buffers of any size, allocated and released at a high rate (messages handed to other
 * shards, staging of large replies): a released buffer's mapping is kept by size class (powers
 * of two) and reused, instead of being unmapped and mapped again. Each fresh mapping costs an
 * mmap, a page fault per 4 KiB page touched and, on release, an munmap whose TLB shootdown
 * interrupts every CPU the process runs on; a reused one costs a typed array over the mapping
 * it kept (no new view of native memory: bench/core/views.bench.ts).
 *
 * `take(size)` returns a NativeBuffer of exactly `size` bytes (page-aligned). A buffer handed to
 * another shard comes back here when the receiver releases it (handover), so a shard that sends
 * large messages reuses its own mappings. One cache per shard (not thread-safe, as everything
 * else in a shard).
 */
export class BufferCache {
  readonly retainBytes: number;
  readonly retainMaxBytes: number;
  readonly minClassBytes: number;
  /**
   * Released handles whose mappings are kept, per size class (a handle's `index`: its mapping is
   * minClassBytes << index bytes, viewed whole by `bytes.buffer`, at `address`).
   */
  private readonly free: NativeBuffer[][] = [];
  private retainedBytes = 0;
  private outstandingCount = 0;
  /** Bytes mapped by the buffers out (taken, not yet recycled); their peak since trim(), and before it. */
  private outstandingBytes = 0;
  private peakBytes = 0;
  private lastPeakBytes = 0;
  private closed = false;
  /** Mappings made, and takes served from the cache (statistics). */
  mapped = 0;
  reused = 0;

  constructor(options: BufferCacheOptions = {}) {
    if (options === null || typeof options !== "object") throw new InvalidArgumentError("BufferCache: options must be an object");
    const retain = options.retainBytes ?? 16 * 1024 * 1024;
    const min = options.minClassBytes ?? 64 * 1024;
    if (!Number.isSafeInteger(retain) || retain < 0) {
      throw new InvalidArgumentError(`BufferCache: retainBytes must be an integer >= 0, got ${describeValue(retain)}`);
    }
    if (!Number.isSafeInteger(min) || min < 4096 || (min & (min - 1)) !== 0 || min > MAX_VIEW_BYTES) {
      throw new InvalidArgumentError(`BufferCache: minClassBytes must be a power of two from 4096, got ${describeValue(min)}`);
    }
    const retainMax = options.retainMaxBytes ?? retain;
    if (!Number.isSafeInteger(retainMax) || retainMax < retain) {
      throw new InvalidArgumentError(`BufferCache: retainMaxBytes must be an integer >= retainBytes (${retain}), got ${describeValue(retainMax)}`);
    }
    this.retainBytes = retain;
    this.retainMaxBytes = retainMax;
    this.minClassBytes = min;
  }

  /** Bytes of released mappings kept for reuse. */
  get retained(): number {
    return this.retainedBytes;
  }

  /** Buffers taken and not yet recycled. */
  get outstanding(): number {
    return this.outstandingCount;
  }

  /** A buffer of exactly `size` bytes, from a kept mapping of its class when there is one. */
  take(size: number): NativeBuffer {
    if (this.closed) throw new ClosedError("BufferCache is closed");
    checkSize("size", size, 1);
    checkViewable("BufferCache.take: size", size);
    let cls = 0;
    let mapped = this.minClassBytes;
    while (mapped < size) {
      mapped *= 2;
      cls++;
    }
    let region: ArrayBuffer;
    let address: number;
    const kept = this.free[cls]?.pop();
    if (kept !== undefined) {
      region = kept.bytes.buffer as ArrayBuffer;
      address = kept.address;
      this.retainedBytes -= mapped;
      this.reused++;
    } else {
      address = mapOrThrow(mapped, "BufferCache");
      region = nativeView(address, mapped);
      this.mapped++;
    }
    this.outstandingCount++;
    this.outstandingBytes += mapped;
    if (this.outstandingBytes > this.peakBytes) this.peakBytes = this.outstandingBytes;
    // A fresh handle: a stale holder's release() cannot give back the new owner's buffer.
    return new NativeBuffer(new Uint8Array(region, 0, size), address, this, cls);
  }

  /** @internal The buffer was released (and no operation uses it): keep its mapping or unmap it. */
  recycle(b: NativeBuffer): void {
    this.outstandingCount--;
    const mapped = this.minClassBytes * 2 ** b.index;
    this.outstandingBytes -= mapped;
    if (this.closed || this.retainedBytes + mapped > this.keepLimit()) {
      unmapViewed(b.bytes.buffer as ArrayBuffer, b.address, mapped);
      return;
    }
    (this.free[b.index] ??= []).push(b);
    this.retainedBytes += mapped;
  }

  /**
   * Bytes of released mappings kept now at most: retainBytes, or the peak out since the trim()
   * before last (within retainMaxBytes).
   */
  private keepLimit(): number {
    return Math.max(this.retainBytes, Math.min(this.retainMaxBytes, Math.max(this.peakBytes, this.lastPeakBytes)));
  }

  /**
   * Starts a new period for the peak: the kept mappings shrink to what the buffers out at once
   * needed since the last trim() (never below retainBytes; those beyond are unmapped, largest
   * first), and that stays kept through the next period, so a steady load maps nothing anew.
   * A no-op without retainMaxBytes. Returns the bytes unmapped.
   */
  trim(): number {
    this.lastPeakBytes = this.peakBytes;
    this.peakBytes = this.outstandingBytes;
    const limit = this.keepLimit();
    let unmapped = 0;
    for (let cls = this.free.length - 1; cls >= 0 && this.retainedBytes > limit; cls--) {
      const list = this.free[cls];
      if (list === undefined) continue;
      const mapped = this.minClassBytes * 2 ** cls;
      while (list.length > 0 && this.retainedBytes > limit) {
        const b = list.pop()!;
        unmapViewed(b.bytes.buffer as ArrayBuffer, b.address, mapped);
        this.retainedBytes -= mapped;
        unmapped += mapped;
      }
    }
    return unmapped;
  }

  /**
   * Unmaps the kept mappings; buffers still out are unmapped when released. Views of kept
   * mappings someone held on to read as empty.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const list of this.free) {
      if (list === undefined) continue;
      for (const b of list) unmapViewed(b.bytes.buffer as ArrayBuffer, b.address, this.minClassBytes * 2 ** b.index);
    }
    this.free.length = 0;
    this.retainedBytes = 0;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
