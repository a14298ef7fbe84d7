/**
 * A provided-buffer ring (IORING_REGISTER_PBUF_RING) for multishot receives, JS side: a shard
 * has one for its streams and, once it binds a UDP channel, one for datagrams (its own buffer
 * group, buffers that hold the largest datagram). Native code maps and registers it once
 * (zig/net.zig); afterwards a buffer is
 * recycled by writing its ring entry through a long-lived view (three stores), and the tail
 * is published with one release store per loop turn, however many buffers came back.
 * Buffers are reference counted: the input queue, a read() lease and zero-copy sends of a
 * received view each hold one.
 */
import { native, nativeView, poolView, poolViewReleased } from "../../core/native.ts";
import { SystemError } from "../../core/errors.ts";

/** Fill byte of recycled receive buffers when poisoning is on. */
export const RX_POISON_BYTE = 0xde;

/** A receive-buffer pool of the shard and its io_uring buffer ring (see the file comment). */
export class RxRing {
  readonly bgid: number;
  /** The most buffers the pool may grow to (ring entries; address space is reserved for all). */
  readonly entries: number;
  /** Buffers in the pool now (buffer ids 0..total-1). */
  total: number;
  readonly bufferSize: number;
  /** Native address of buffer 0; buffer `bid` is at bufsAddress + bid * bufferSize. */
  readonly bufsAddress: number;
  /** The whole buffer region; every receive view is a slice of it. */
  readonly region: ArrayBuffer;
  /** views[bid]: the whole buffer. */
  readonly views: Uint8Array[];
  /** Buffers the kernel can select now. */
  available: number;
  /** Buffers the kernel filled since the pool was made (wraps past 2^53: never in practice). */
  takes = 0;
  /** Fill recycled buffers with RX_POISON_BYTE (debug). */
  poison = false;
  private readonly handle: number;
  private readonly ring32: Uint32Array;
  private readonly ring16: Uint16Array;
  private readonly mask: number;
  private readonly refs: Uint32Array;
  private tail: number;
  private published: number;

  /**
   * Registers a ring for up to `entries` buffers of `bufferSize` bytes on `reactorHandle`'s
   * io_uring as group `bgid`, with the first `initial` buffers in it.
   */
  constructor(reactorHandle: number, bgid: number, entries: number, bufferSize: number, initial: number) {
    const lib = native();
    const err = new Int32Array(1);
    const handle = lib.shoal_net_buf_ring_create(reactorHandle as never, bgid, entries, bufferSize, initial, err) as unknown as number | null;
    if (!handle) throw new SystemError("io_uring_register(PBUF_RING)", -err[0]!, `${entries} x ${bufferSize} bytes, group ${bgid}`);
    this.handle = handle;
    const info = new DataView(nativeView(handle, 48));
    const ringAddress = Number(info.getBigUint64(0, true));
    this.bufsAddress = Number(info.getBigUint64(8, true));
    this.bgid = bgid;
    this.entries = entries;
    this.bufferSize = bufferSize;
    this.mask = entries - 1;
    let ring: ArrayBuffer;
    try {
      ring = nativeView(ringAddress, entries * 16);
      this.region = poolView(this.bufsAddress, entries * bufferSize);
    } catch (e) {
      // Registered and mapped already: give both back, or the group id stays taken (EEXIST).
      lib.shoal_net_buf_ring_destroy(handle as never);
      throw e;
    }
    this.ring32 = new Uint32Array(ring);
    this.ring16 = new Uint16Array(ring);
    this.views = [];
    for (let i = 0; i < initial; i++) this.views.push(new Uint8Array(this.region, i * bufferSize, bufferSize));
    this.refs = new Uint32Array(entries);
    // Native code put the first `initial` buffers in the ring and published tail = initial.
    this.total = initial;
    this.tail = initial;
    this.published = initial;
    this.available = initial;
  }

  /**
   * Adds up to `count` fresh buffers to the pool (visible after publish()). Costs three stores
   * and one view per buffer; their pages are touched only when the kernel fills them.
   */
  grow(count: number): number {
    const n = Math.min(count, this.entries - this.total);
    for (let k = 0; k < n; k++) {
      const bid = this.total++;
      this.views.push(new Uint8Array(this.region, bid * this.bufferSize, this.bufferSize));
      this.refs[bid] = 1;
      this.release(bid);
    }
    return n;
  }

  /** The kernel filled buffer `bid` (a CQE carried it): the caller now holds its one reference. */
  taken(bid: number): void {
    this.refs[bid] = 1;
    this.available--;
    this.takes++;
  }


  retain(bid: number): void {
    this.refs[bid]!++;
  }

  /** True while someone holds buffer `bid`. */
  held(bid: number): boolean {
    return this.refs[bid]! > 0;
  }

  /**
   * Drops a reference; at zero the buffer goes back to the ring (visible after publish()).
   * `used`: how many of its first bytes the kernel wrote (poisoning needs to fill no more).
   */
  release(bid: number, used = this.bufferSize): void {
    if (--this.refs[bid]! !== 0) return;
    if (this.poison) this.views[bid]!.fill(RX_POISON_BYTE, 0, used);
    const i = (this.tail & this.mask) << 2;
    const address = this.bufsAddress + bid * this.bufferSize;
    const r = this.ring32;
    r[i] = address >>> 0;
    r[i + 1] = Math.floor(address / 0x1_0000_0000);
    r[i + 2] = this.bufferSize;
    // bid is the entry's 7th u16; the 8th (entry 0's) is the ring's tail and stays untouched.
    this.ring16[(i << 1) + 6] = bid;
    this.tail++;
    this.available++;
  }

  /** The buffer id of a native address inside the region, or -1. */
  bidOf(address: number): number {
    const off = address - this.bufsAddress;
    if (off < 0 || off >= this.entries * this.bufferSize) return -1;
    return Math.floor(off / this.bufferSize);
  }

  /** Makes recycled buffers visible to the kernel. Returns true if there were any. */
  publish(): boolean {
    if (this.tail === this.published) return false;
    this.published = this.tail;
    Atomics.store(this.ring16, 7, this.tail & 0xffff);
    return true;
  }

  /** Buffers held by readers, queues and sends. */
  get inUse(): number {
    return this.total - this.available;
  }

  /** Unregisters and unmaps; only when no receive selecting from the group is in flight. */
  destroy(): void {
    native().shoal_net_buf_ring_destroy(this.handle as never);
    poolViewReleased(this.region);
  }
}
