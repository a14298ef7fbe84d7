/**
 * Key hashing: MurmurHash3 (x86, 32-bit), the algorithm stock memcached 1.6 uses by default.
 * One hash per request serves both the shard choice (high bits) and the bucket (low bits).
 */

/** MurmurHash3_x86_32 of `buf[off..off+len)` with seed 0. Cost: about 1 ns per byte. */
export function murmur3(buf: Uint8Array, off: number, len: number): number {
  let h = 0;
  const c1 = 0xcc9e2d51;
  const c2 = 0x1b873593;
  const blocks = len & ~3;
  let i = off;
  const stop = off + blocks;
  while (i < stop) {
    let k = buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24);
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
    i += 4;
  }
  const rem = len & 3;
  if (rem !== 0) {
    let k = 0;
    if (rem === 3) k ^= buf[i + 2]! << 16;
    if (rem >= 2) k ^= buf[i + 1]! << 8;
    k ^= buf[i]!;
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
  }
  h ^= len;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The shard that owns a key with hash `hv` among `shards` (uses the high bits; buckets use the low ones). */
export function shardOf(hv: number, shards: number): number {
  return shards === 1 ? 0 : (hv >>> 16) % shards;
}
