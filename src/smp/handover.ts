/**
 * NativeBuffers cross shards by handover, like Seastar's foreign_ptr: all Workers share one
 * address space, so the receiver views the very same memory; the buffer goes back to its
 * owner shard (its pool, or munmap) only when the receiver releases it.
 *
 * Sending a NativeBuffer pins it and releases the sender's handle (using it afterwards throws
 * ERR_BUFFER_RELEASED); the pin keeps the memory alive until the receiver's release arrives
 * as a message, and only then is the buffer recycled on its owner shard. The receiver gets a
 * NativeBuffer of its own (usable for I/O on its reactor) whose release() sends that message.
 * A receiver may hand the buffer on to a third shard: the chain unwinds the same way.
 */
import { NativeBuffer, type BufferHome } from "../core/buffers.ts";
import { nativeView } from "../core/native.ts";
import { setNativeBufferClass, type HandoverSink } from "./codec.ts";

setNativeBufferClass(NativeBuffer);

/** Sends "release handover `id`" to shard `owner` (the runtime's ring path). */
export type ReleaseSender = (owner: number, id: number) => void;

/**
 * Stands in for the BufferPool of a buffer received from another shard: when the receiver's
 * handle is recycled (released and no longer pinned by I/O), the owner is told to take it back.
 */
class HomeShard {
  constructor(
    private readonly owner: number,
    private readonly id: number,
    private readonly send: ReleaseSender,
  ) {}

  recycle(buffer: NativeBuffer): void {
    // The memory goes back to its owner, which may reuse or unmap it: a view of it kept here
    // past release() is detached (reads as empty) rather than left pointing at it.
    const view = buffer.bytes.buffer as ArrayBuffer;
    if (!view.detached) view.transfer();
    this.send(this.owner, this.id);
  }
}

/** The buffers this shard has lent to other shards, by handover id. */
export class HandoverTable implements HandoverSink {
  readonly shard: number;
  private readonly lent: (NativeBuffer | undefined)[] = [];
  private readonly lentTo: number[] = [];
  private readonly free: number[] = [];
  private count = 0;

  constructor(shard: number) {
    this.shard = shard;
  }

  /** Buffers lent out and not yet released by their receiver. */
  get outstanding(): number {
    return this.count;
  }

  /** Reserves an id while a message is encoded. */
  reserve(buffer: NativeBuffer): number {
    const id = this.free.length > 0 ? this.free.pop()! : this.lent.length;
    this.lent[id] = buffer;
    this.lentTo[id] = -1;
    return id;
  }

  /** The message carrying these buffers was committed to `dest`: pin them and drop the sender's handles. */
  commit(buffers: readonly NativeBuffer[], ids: readonly number[], dest: number): void {
    for (let i = 0; i < buffers.length; i++) {
      const b = buffers[i]!;
      this.lentTo[ids[i]!] = dest;
      this.count++;
      b.pin();
      b.release();
    }
  }

  /** The message was not sent after all (it could not be encoded): forget the reservations. */
  cancel(ids: readonly number[]): void {
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      this.lent[id] = undefined;
      this.free.push(id);
    }
  }

  /** The receiver released handover `id`: the buffer is recycled here, on its owner shard. */
  returned(id: number): void {
    const b = this.lent[id];
    if (b === undefined || this.lentTo[id] === -1) return; // a duplicate or forged release: ignore
    this.lent[id] = undefined;
    this.lentTo[id] = -1;
    this.free.push(id);
    this.count--;
    b.unpin();
  }

  /**
   * Shard `k` is gone. What was lent to it is NOT recycled: it may have handed a buffer on to
   * a third shard, which still reads it (recycling would reuse or unmap memory under that
   * shard's views: a crash of the whole process). Those buffers stay pinned for good and are
   * counted in `lost`; the application is shutting down anyway once a shard failed.
   */
  shardGone(k: number): void {
    for (let id = 0; id < this.lent.length; id++) {
      if (this.lent[id] === undefined || this.lentTo[id] !== k) continue;
      // The id is retired too: a release from the dead shard still in its ring must not
      // recycle a buffer lent under the same id later.
      this.lent[id] = undefined;
      this.lentTo[id] = -2;
      this.count--;
      this.lost++;
    }
  }

  /** Buffers lent to shards that died: never recycled (see shardGone). */
  lost = 0;
}

/**
 * Builds the receiving side of a handed-over buffer: a NativeBuffer over the same memory
 * (one toArrayBuffer view, ~1 µs: bench/core/views.bench.ts) whose recycling sends the release
 * to `owner`. A `lent` buffer (NativeBuffer.lend on its owner: an item of a cache sent in place)
 * is lent here too, so that poisoning on release never touches memory its owner keeps.
 */
export function receiveBuffer(owner: number, id: number, address: number, length: number, send: ReleaseSender, lent = false): NativeBuffer {
  const bytes = new Uint8Array(nativeView(address, length));
  const home: BufferHome = new HomeShard(owner, id, send);
  return lent ? NativeBuffer.lend(bytes, address, home, -1) : new NativeBuffer(bytes, address, home, -1);
}
