/**
 * Fixed-size blocks of native memory for the network stacks: send chunks, msghdr/iovec
 * blocks, sockaddrs. Regions are mapped on demand and kept (a shard's peak is its steady
 * state); acquire and release are a few array operations, never a native call, and return
 * block ids rather than objects so that the hot path allocates nothing.
 */
import { mapNative, poolView } from "../core/native.ts";
import { InvalidArgumentError, SystemError } from "../core/errors.ts";
import { describeValue } from "../core/describe.ts";

/** A pool of fixed-size native blocks, addressed by id (see the file comment). */
export class NativeSlab {
  /** Bytes per block. */
  readonly blockSize: number;
  private readonly perRegion: number;
  private readonly maxBlocks: number;
  private readonly what: string;
  private readonly addresses: number[] = [];
  private readonly views: Uint8Array[] = [];
  private readonly words: (Uint32Array | undefined)[] = [];
  private readonly free: number[] = [];
  /** Reference counts, for blocks shared by several queue entries. */
  readonly refs: number[] = [];
  private mapped = 0;
  private used = 0;

  /**
   * `blockSize` bytes per block (a multiple of 64), `perRegion` blocks mapped at a time, at most
   * `maxBlocks` in all (acquire then throws SystemError ENOBUFS).
   */
  constructor(what: string, blockSize: number, perRegion: number, maxBlocks = Infinity) {
    if (!Number.isInteger(blockSize) || blockSize <= 0 || blockSize % 64 !== 0) {
      throw new InvalidArgumentError(`${what}: block size must be a positive multiple of 64, got ${describeValue(blockSize)}`);
    }
    this.what = what;
    this.blockSize = blockSize;
    this.perRegion = perRegion;
    this.maxBlocks = maxBlocks;
  }

  /** Takes a block (reference count 1). Maps a region when none is free. Throws SystemError. */
  acquire(): number {
    if (this.free.length === 0) this.grow();
    const id = this.free.pop()!;
    this.refs[id] = 1;
    this.used++;
    return id;
  }

  /** Adds a reference to a held block. */
  retain(id: number): void {
    this.refs[id]!++;
  }

  /** Drops a reference; the block is free again at zero. */
  release(id: number): void {
    if (--this.refs[id]! === 0) {
      this.free.push(id);
      this.used--;
    }
  }

  address(id: number): number {
    return this.addresses[id]!;
  }

  /** The whole block as a view (created once per block). */
  view(id: number): Uint8Array {
    return this.views[id]!;
  }

  /** The whole block as 32-bit words (created on first use, then cached). */
  u32(id: number): Uint32Array {
    let w = this.words[id];
    if (w === undefined) {
      const v = this.views[id]!;
      w = new Uint32Array(v.buffer, v.byteOffset, this.blockSize >>> 2);
      this.words[id] = w;
    }
    return w;
  }

  /** Bytes mapped so far, and bytes in held blocks. */
  get mappedBytes(): number {
    return this.mapped * this.blockSize;
  }
  get usedBytes(): number {
    return this.used * this.blockSize;
  }
  get blocksInUse(): number {
    return this.used;
  }

  private grow(): void {
    const count = Math.min(this.perRegion, this.maxBlocks - this.mapped);
    if (count <= 0) throw new SystemError(`${this.what}: allocate`, 105, `all ${this.mapped} blocks are in use`);
    const bytes = count * this.blockSize;
    const base = mapNative(bytes);
    if (base < 0) throw new SystemError(`mmap (${this.what})`, -base);
    const region = poolView(base, bytes);
    const first = this.mapped;
    for (let i = 0; i < count; i++) {
      this.addresses.push(base + i * this.blockSize);
      this.views.push(new Uint8Array(region, i * this.blockSize, this.blockSize));
      this.refs.push(0);
    }
    for (let i = count - 1; i >= 0; i--) this.free.push(first + i);
    this.mapped += count;
  }
}
