/**
 * The item store of one shard: memcached's slab allocator, hash table and LRU, with every
 * item living in one arena of native memory instead of a JS object.
 *
 * Why no JS objects: the p99 latency budget is a few hundred microseconds, and a heap of a
 * million small objects makes every major GC pause scan them. Here the collector sees a handful
 * of typed arrays whatever the number of items: item headers, keys and values are bytes in the
 * arena (viewed through Uint8Array/Int32Array/Uint32Array/Float64Array views made once), the
 * hash table is an Int32Array of bucket heads chained through the item headers, and the LRU
 * lists are links in the headers too. An item is referred to by `ref` = its byte offset / 8.
 *
 * Layout of an item (byte offsets from its start; items are 8-byte aligned):
 *   0 prev (LRU), 4 next (LRU, or free list), 8 hash chain next, 12 time (last access),
 *   16 exptime, 20 nbytes (value length including the trailing "\r\n"), 24 client flags,
 *   28 it_flags (u16), 30 slab class (u8), 31 key length (u8), 32 CAS (f64), 40 key hash,
 *   44 key, value. (Stock's header is 48 bytes plus key NUL, flags and CAS: ours always fits
 *   in the chunk stock would pick.)
 *
 * Memory follows stock memcached: the arena is cut into 1 MiB pages; a page belongs to one slab
 * class and is cut into equal chunks (96 bytes, then x1.25 up to 512 KiB); an item takes the
 * chunk of the class that stock's own item size (`ntotal`) selects, so `stats slabs`, size
 * limits and the number of items that fit match stock. Items larger than the largest chunk take
 * whole contiguous pages. The limit is strict: the arena is exactly -m (this shard's share), and
 * a class that needs memory when none is free takes a page from another class.
 *
 * Eviction is per class, from the LRU tail, with a second chance for items fetched twice
 * (stock's segmented LRU approximated: a hit sets a bit instead of moving the item).
 * Expired and flushed items are removed lazily when found, by the tail check before an eviction,
 * and by `crawl()` (the LRU crawler), which the server runs a little every second.
 */
import { DataViewCache, copyBytes } from "../../src/core/bytes.ts";
import { allocateAlignedBuffer, HUGE_PAGE_SIZE, type NativeBuffer } from "../../src/index.ts";
import type { Clock } from "./clock.ts";
import { ITEM_UPDATE_INTERVAL } from "./clock.ts";
import { murmur3 as hashKey } from "./hash.ts";

/** No item. */
export const NIL = -1;

/** Initial hash power (stock's HASHPOWER_DEFAULT): 65,536 buckets. */
export const HASHPOWER_DEFAULT = 16;
/** Old buckets an insert moves to the new table while the hash table expands. */
const MIGRATE_PER_LINK = 16;

/** Keys noted for warm() per batch (more are served without warming). */
const AHEAD_MAX = 128;

/** Bytes of our item header before the key. */
export const HDR = 44;
if (HDR % 4 !== 0) throw new Error("store: keys must start 4-byte aligned (find compares words)");

/** it_flags bits (stock's values where stock has the flag). */
export const F_LINKED = 1;
export const F_SLABBED = 4;
export const F_FETCHED = 8;
export const F_ACTIVE = 16;
/** Allocated for an upload in progress: neither linked nor free. */
export const F_PENDING = 32;
export const F_TOKEN_SENT = 512;
export const F_STALE = 2048;
export const F_KEY_BINARY = 4096;

/** Store result codes (stock's store_item_type). */
export const enum StoreResult {
  NOT_STORED = 0,
  STORED = 1,
  EXISTS = 2,
  NOT_FOUND = 3,
  TOO_LARGE = 4,
  NO_MEMORY = 5,
}

/** Store commands (stock's NREAD_*). */
export const enum Comm {
  ADD = 1,
  SET = 2,
  REPLACE = 3,
  APPEND = 4,
  PREPEND = 5,
  CAS = 6,
}

/** Why the last alloc() failed. */
export const enum AllocError {
  NONE = 0,
  TOO_LARGE = 1,
  NO_MEMORY = 2,
}

/** incr/decr outcomes (stock's delta_result_type). */
export const enum DeltaResult {
  OK = 0,
  NON_NUMERIC = 1,
  EOM = 2,
  NOT_FOUND = 3,
  CAS_MISMATCH = 4,
}

/** Per-class counters, stock's names (items: and slab stats). */
export const enum CS {
  EVICTED = 0,
  EVICTED_NONZERO,
  EVICTED_TIME,
  OUTOFMEMORY,
  RECLAIMED,
  EXPIRED_UNFETCHED,
  EVICTED_UNFETCHED,
  EVICTED_ACTIVE,
  CRAWLER_RECLAIMED,
  CRAWLER_ITEMS_CHECKED,
  MOVES_WITHIN_LRU,
  DIRECT_RECLAIMS,
  NUMBER,
  MEM_REQUESTED,
  GET_HITS,
  SET_CMDS,
  DELETE_HITS,
  INCR_HITS,
  DECR_HITS,
  CAS_HITS,
  CAS_BADVAL,
  TOUCH_HITS,
  COUNT,
}

/** Store options (one shard's share of the server's settings). */
export interface StoreOptions {
  /** Item memory of this store in bytes (rounded down to whole pages, at least one page). */
  maxBytes: number;
  /** Largest item (stock's ntotal), -I. */
  itemSizeMax: number;
  /** Slab growth factor, -f (default 1.25). */
  factor?: number;
  /** Minimum key+value space, -n (default 48). */
  chunkSize?: number;
  /** Largest chunk (default 512 KiB); bigger items take whole pages. */
  slabChunkMax?: number;
  /** Evict when full (default true; -M turns it off). */
  evictToFree?: boolean;
  /** CAS counted in item sizes and assigned on link (default true). */
  useCas?: boolean;
  /** Take pages from other classes when a class runs dry (default true). */
  slabReassign?: boolean;
  /** Initial hash power; 0 sizes the table so that it never needs to grow. */
  hashPower?: number;
  /** Where the arena lives: "native" (default: mmap'd by Shoal, committed as used) or "js". */
  memory?: "native" | "js";
  clock: Clock;
  /**
   * CAS ids of a store that is one of `casSeries.count` shards: this one hands out
   * index+1, index+1+count, ... so no two shards ever hand out the same id (default: 1, 2, 3...).
   */
  casSeries?: { index: number; count: number };
}

const PAGE_SIZE = 1024 * 1024;
const STOCK_ITEM_HEADER = 48;

/**
 * One shard's cache. All methods are synchronous and allocation-free on the hot path.
 * Not thread-safe (nothing here is shared between shards).
 */
export class Store {
  /** Arena bytes. Key of `ref` at keyOffset(ref), value at valueOffset(ref). */
  readonly mem: Uint8Array;
  private readonly keyViews = new DataViewCache();
  private readonly aheadHv = new Int32Array(AHEAD_MAX);
  private readonly aheadRef = new Int32Array(AHEAD_MAX);
  private aheadN = 0;
  /** Where warm() leaves what it read (so the loads are not dead code). */
  aheadSink = 0;
  private readonly i32: Int32Array;
  private readonly u32: Uint32Array;
  private readonly f64: Float64Array;
  private readonly native: NativeBuffer | null;
  readonly clock: Clock;

  readonly pageSize = PAGE_SIZE;
  readonly pages: number;
  readonly itemSizeMax: number;
  readonly useCas: boolean;
  evictToFree: boolean;
  slabReassign: boolean;

  /** Slab classes 1..largest (index 0 unused); class `large` holds multi-page items. */
  readonly classSize: number[] = [0];
  readonly perSlab: number[] = [0];
  readonly largest: number;
  readonly large: number;
  private readonly freeHead: Int32Array;
  private readonly freeCount: Int32Array;
  readonly classPages: Int32Array;
  private readonly lruHead: Int32Array;
  private readonly lruTail: Int32Array;
  /** Per-class counters, `classStats[cls * CS.COUNT + CS.X]`. */
  readonly classStats: Float64Array;

  /** Owner class of each page (0: free). */
  private readonly pageClass: Uint8Array;
  /** Pages of a multi-page item: at its first page, the run length; elsewhere 0. */
  private readonly pageRun: Int32Array;
  /** Chunks in use (linked or pending) per page. */
  private readonly pageUsed: Int32Array;
  private freePages: number;
  /** Pages that may be in use at once (cache_memlimit lowers it). */
  private pageLimit: number;
  /** Pages of chunk classes with no chunk in use (can move without evicting). */
  private emptyClassPages = 0;
  private pageCursor = 0;
  /** Pages ever handed out (stock's total_malloced / page size). */
  pagesMalloced = 0;

  /**
   * The hash table (stock's assoc.c): bucket heads chained through the items. It starts at
   * 2^16 buckets (or -o hashpower) and doubles when items exceed 1.5 per bucket, migrating the
   * old table a few buckets at a time (on each link and on each maintenance tick), so no
   * request pays for a whole rehash. A small table stays in the CPU caches: sizing it for the
   * largest possible item count up front made every lookup a cache miss.
   */
  private buckets: Int32Array;
  private nativeBuckets: NativeBuffer | null = null;
  private hashMask: number;
  private hashPowerNow: number;
  /** The table being migrated from during an expansion, else null. */
  private oldBuckets: Int32Array | null = null;
  private oldNativeBuckets: NativeBuffer | null = null;
  private oldMask = 0;
  /** Old buckets below this index have moved to the new table. */
  private expandBucket = 0;
  /** The table stops growing here: 1.5 items per bucket at the most items the arena can hold. */
  private readonly maxHashPower: number;
  /** Completed expansions. */
  hashExpansions = 0;

  /**
   * Last CAS id handed out (stock's global cas_id). With several shards each counts in steps
   * of the shard count from its own offset: ids stay unique server-wide (a token from one key
   * never matches another key's item on another shard) and increase within a shard.
   */
  casId = 0;
  private readonly casStep: number;
  /** flush_all state: items last updated at or before oldestLive (once reached) are invalid. */
  oldestLive = 0;
  oldestCas = 0;

  /** Global counters (stock's stats_state / stats names). */
  currItems = 0;
  currBytes = 0;
  totalItems = 0;
  getExpired = 0;
  getFlushed = 0;
  slabsMoved = 0;
  slabReassignEvictionsNomem = 0;
  slabReassignRescues = 0;
  crawlerStarts = 0;

  /** Why the last alloc() returned NIL. */
  allocError: AllocError = AllocError.NONE;
  /** CAS of the item the last successful store/incr linked (stock's c->cas). */
  lastCas = 0;

  private crawlClass = 1;
  private crawlRef = NIL;

  constructor(options: StoreOptions) {
    this.clock = options.clock;
    const series = options.casSeries ?? { index: 0, count: 1 };
    if (!Number.isInteger(series.count) || series.count < 1 || !Number.isInteger(series.index) || series.index < 0 || series.index >= series.count) {
      throw new RangeError(`casSeries must be an index in 0..count-1, got ${series.index} of ${series.count}`);
    }
    this.casStep = series.count;
    this.casId = series.index + 1 - series.count;
    this.itemSizeMax = options.itemSizeMax;
    this.useCas = options.useCas ?? true;
    this.evictToFree = options.evictToFree ?? true;
    this.slabReassign = options.slabReassign ?? true;
    const factor = options.factor ?? 1.25;
    const chunkMax = options.slabChunkMax ?? 512 * 1024;
    let size = STOCK_ITEM_HEADER + (options.chunkSize ?? 48);
    while (this.classSize.length < 63 && size < chunkMax / factor) {
      if (size % 8) size += 8 - (size % 8);
      this.classSize.push(size);
      this.perSlab.push(Math.floor(PAGE_SIZE / size));
      size = Math.floor(size * factor);
    }
    this.classSize.push(chunkMax);
    this.perSlab.push(Math.floor(PAGE_SIZE / chunkMax));
    this.largest = this.classSize.length - 1;
    this.large = this.largest + 1;
    this.classSize.push(0);
    this.perSlab.push(1);
    const nclasses = this.large + 1;
    this.freeHead = new Int32Array(nclasses).fill(NIL);
    this.freeCount = new Int32Array(nclasses);
    this.classPages = new Int32Array(nclasses);
    this.lruHead = new Int32Array(nclasses).fill(NIL);
    this.lruTail = new Int32Array(nclasses).fill(NIL);
    this.classStats = new Float64Array(nclasses * CS.COUNT);

    this.pages = Math.max(1, Math.floor(options.maxBytes / PAGE_SIZE));
    const bytes = this.pages * PAGE_SIZE;
    if ((options.memory ?? "native") === "native") {
      // Huge pages: every get touches a random bucket and a random item header; with 4 KiB
      // pages each of those misses also walks the page tables (measured: ~14% of a shard's
      // CPU on a 100k-key workload was these two loads).
      this.native = allocateAlignedBuffer(bytes, 4096, { hugePages: true });
      this.mem = this.native.bytes;
    } else {
      this.native = null;
      this.mem = new Uint8Array(bytes);
    }
    const ab = this.mem.buffer;
    const base = this.mem.byteOffset;
    this.i32 = new Int32Array(ab, base, bytes >>> 2);
    this.u32 = new Uint32Array(ab, base, bytes >>> 2);
    this.f64 = new Float64Array(ab, base, bytes >>> 3);
    this.pageClass = new Uint8Array(this.pages);
    this.pageRun = new Int32Array(this.pages);
    this.pageUsed = new Int32Array(this.pages);
    this.freePages = this.pages;
    this.pageLimit = this.pages;

    // Every item takes at least a 96-byte chunk: past this size the load stays under 1.5.
    const maxItems = bytes / this.classSize[1]!;
    let maxHp = 12;
    while ((1 << maxHp) * 1.5 < maxItems && maxHp < 30) maxHp++;
    const hp = Math.min(30, (options.hashPower ?? 0) > 0 ? options.hashPower! : Math.min(HASHPOWER_DEFAULT, maxHp));
    this.maxHashPower = Math.max(hp, maxHp);
    this.hashPowerNow = hp;
    const t = this.allocTable(hp);
    this.buckets = t.table;
    this.nativeBuckets = t.native;
    this.hashMask = (1 << hp) - 1;
  }

  /** A bucket table of 2^hp empty heads (native, on huge pages once it is 2 MiB or more). */
  private allocTable(hp: number): { table: Int32Array; native: NativeBuffer | null } {
    const count = 2 ** hp;
    if (this.native === null) return { table: new Int32Array(count).fill(NIL), native: null };
    const nb = allocateAlignedBuffer(4 * count, 4096, { hugePages: 4 * count >= HUGE_PAGE_SIZE });
    return { table: new Int32Array(nb.bytes.buffer, nb.bytes.byteOffset, count).fill(NIL), native: nb };
  }

  /** During an expansion: the key's bucket has not moved yet (it is in the old table). */
  private inOldTable(hv: number): boolean {
    return this.oldBuckets !== null && (hv & this.oldMask) >= this.expandBucket;
  }

  /** Current hash power (stats hash_power_level). */
  get hashPower(): number {
    return this.hashPowerNow;
  }

  /** True while the table is migrating to its doubled size (stats hash_is_expanding). */
  get hashExpanding(): boolean {
    return this.oldBuckets !== null;
  }

  private startExpansion(): void {
    const hp = this.hashPowerNow + 1;
    const t = this.allocTable(hp);
    this.oldBuckets = this.buckets;
    this.oldNativeBuckets = this.nativeBuckets;
    this.oldMask = this.hashMask;
    this.expandBucket = 0;
    this.buckets = t.table;
    this.nativeBuckets = t.native;
    this.hashMask = (1 << hp) - 1;
    this.hashPowerNow = hp;
  }

  /**
   * Moves up to `budget` buckets of an expansion in progress to the new table; returns the
   * number moved. The server calls it every second; link() moves a few on every insert.
   */
  maintainHash(budget: number): number {
    const old = this.oldBuckets;
    if (old === null) return 0;
    const end = Math.min(old.length, this.expandBucket + budget);
    const moved = end - this.expandBucket;
    const table = this.buckets;
    const mask = this.hashMask;
    const i32 = this.i32;
    const u32 = this.u32;
    for (let b = this.expandBucket; b < end; b++) {
      let ref = old[b]!;
      while (ref !== NIL) {
        const next = i32[(ref << 1) + 2]!;
        const nb = u32[(ref << 1) + 10]! & mask;
        i32[(ref << 1) + 2] = table[nb]!;
        table[nb] = ref;
        ref = next;
      }
      old[b] = NIL;
    }
    this.expandBucket = end;
    if (end === old.length) {
      this.oldBuckets = null;
      this.oldNativeBuckets?.release();
      this.oldNativeBuckets = null;
      this.hashExpansions++;
    }
    return moved;
  }

  /** Releases the arena. The store must not be used afterwards. */
  close(): void {
    this.native?.release();
    this.nativeBuckets?.release();
    this.oldNativeBuckets?.release();
  }

  // ------------------------------------------------------------------ item fields

  /** Byte offset of the item's key in `mem`. */
  keyOffset(ref: number): number {
    return (ref << 3) + HDR;
  }
  /** Key length. */
  nkey(ref: number): number {
    return this.mem[(ref << 3) + 31]!;
  }
  /** Byte offset of the value (which ends with "\r\n") in `mem`. */
  valueOffset(ref: number): number {
    return (ref << 3) + HDR + this.mem[(ref << 3) + 31]!;
  }
  /** Value length including the trailing "\r\n" (stock's nbytes). */
  nbytes(ref: number): number {
    return this.u32[(ref << 1) + 5]!;
  }
  /** Client flags. */
  flags(ref: number): number {
    return this.u32[(ref << 1) + 6]!;
  }
  exptime(ref: number): number {
    return this.u32[(ref << 1) + 4]!;
  }
  setExptime(ref: number, exptime: number): void {
    this.u32[(ref << 1) + 4] = exptime;
  }
  /** Last access time (rel_time). */
  time(ref: number): number {
    return this.u32[(ref << 1) + 3]!;
  }
  cas(ref: number): number {
    return this.f64[ref + 4]!;
  }
  setCas(ref: number, cas: number): void {
    this.f64[ref + 4] = cas;
  }
  itFlags(ref: number): number {
    return this.mem[(ref << 3) + 28]! | (this.mem[(ref << 3) + 29]! << 8);
  }
  setItFlags(ref: number, f: number): void {
    this.mem[(ref << 3) + 28] = f & 0xff;
    this.mem[(ref << 3) + 29] = f >>> 8;
  }
  /** Slab class of the item. */
  clsid(ref: number): number {
    return this.mem[(ref << 3) + 30]!;
  }
  /** Stock's ITEM_ntotal: the size stock accounts for this item (stats bytes, mem_requested). */
  ntotal(ref: number): number {
    return this.stockTotal(this.nkey(ref), this.flags(ref), this.nbytes(ref));
  }
  /** Stock's ITEM_ntotal for a would-be item. */
  stockTotal(nkey: number, flags: number, nbytes: number): number {
    return STOCK_ITEM_HEADER + nkey + 1 + (flags !== 0 ? 4 : 0) + nbytes + (this.useCas ? 8 : 0);
  }
  /** Stock's item_size_ok: would an item of this shape fit under -I? */
  sizeOk(nkey: number, flags: number, nbytes: number): boolean {
    return nbytes >= 2 && this.stockTotal(nkey, flags, nbytes) <= this.itemSizeMax;
  }
  /** The next CAS id (stock's get_cas_id). */
  nextCas(): number {
    return (this.casId += this.casStep);
  }

  // ------------------------------------------------------------------ lookup

  /** Finds a linked item by key bytes, or NIL. No expiry check, no LRU effect. */
  find(key: Uint8Array, koff: number, klen: number, hv: number): number {
    const mem = this.mem;
    const i32 = this.i32;
    let ref = this.inOldTable(hv) ? this.oldBuckets![hv & this.oldMask]! : this.buckets[hv & this.hashMask]!;
    if (ref === NIL) return NIL;
    // Keys compare 4 bytes at a time (stored keys start 4-byte aligned at HDR), then the tail.
    const kv = this.keyViews.of(key);
    const kb = key.byteOffset + koff;
    const words = klen & ~3;
    while (ref !== NIL) {
      const base = ref << 3;
      if (mem[base + 31] === klen) {
        const k = base + HDR;
        let i = 0;
        while (i < words && i32[(k + i) >> 2] === kv.getInt32(kb + i, true)) i += 4;
        if (i === words) while (i < klen && mem[k + i] === key[koff + i]) i++;
        if (i === klen) return ref;
      }
      ref = i32[(ref << 1) + 2]!;
    }
    return NIL;
  }

  // ------------------------------------------------------------------ batched cache warming

  /**
   * Notes the hash of a key a request about to be served will look up (the server's receive
   * lookahead sees every connection's new requests of a loop turn before serving any).
   */
  noteAhead(hv: number): void {
    const n = this.aheadN;
    if (n < AHEAD_MAX) {
      this.aheadHv[n] = hv;
      this.aheadN = n + 1;
    }
  }

  /**
   * Touches, for every noted key at once, the bucket head, then up to three chain links (an
   * item whose stored hash is the key's ends its chain), then the found item's key and value
   * lines, each step one loop of independent loads: the cache misses of a whole batch of
   * requests overlap (memory-level parallelism) instead of each lookup stalling on its own
   * misses in turn. Results are discarded; only the caches change. Cost when nothing was
   * noted: one branch.
   */
  warm(): void {
    const n = this.aheadN;
    if (n === 0) return;
    this.aheadN = 0;
    const hvs = this.aheadHv;
    const refs = this.aheadRef;
    const buckets = this.buckets;
    const mask = this.hashMask;
    if (this.oldBuckets === null) {
      for (let i = 0; i < n; i++) refs[i] = buckets[hvs[i]! & mask]!;
    } else {
      for (let i = 0; i < n; i++) {
        const hv = hvs[i]!;
        refs[i] = this.inOldTable(hv) ? this.oldBuckets[hv & this.oldMask]! : buckets[hv & mask]!;
      }
    }
    // Then the chains, a link per round for every key at once: an item whose stored hash is the
    // key's is (almost surely) the one find() will stop at; else its successor is loaded next.
    const mem = this.mem;
    const i32 = this.i32;
    let acc = 0;
    let pending = n;
    for (let round = 0; round < 3 && pending > 0; round++) {
      pending = 0;
      for (let i = 0; i < n; i++) {
        const r = refs[i]!;
        if (r < 0) continue; // NIL, or found (-2 - ref)
        if (i32[(r << 1) + 10] === hvs[i]) {
          refs[i] = -2 - r;
        } else {
          refs[i] = i32[(r << 1) + 2]!;
          pending++;
        }
      }
    }
    // Then the key and the lines of the value (up to 256 bytes) that a hit copies out.
    for (let i = 0; i < n; i++) {
      const r = -2 - refs[i]!;
      if (r < 0) continue; // not found (in three links)
      const k = (r << 3) + HDR;
      const v = k + mem[(r << 3) + 31]!;
      const e = v + Math.min(this.u32[(r << 1) + 5]!, 256);
      acc += mem[k + 15]!;
      for (let a = v + 16; a < e; a += 64) acc += mem[a]!;
      acc += mem[e - 1]!;
    }
    this.aheadSink = acc;
  }

  /** True if flush_all has invalidated the item (stock's item_is_flushed). */
  isFlushed(ref: number): boolean {
    const oldest = this.oldestLive;
    if (oldest === 0 || oldest > this.clock.now) return false;
    if (this.time(ref) <= oldest) return true;
    const cas = this.cas(ref);
    return this.oldestCas !== 0 && cas !== 0 && cas < this.oldestCas;
  }

  /**
   * stock's do_item_get: finds the item; unlinks it (and counts get_flushed / get_expired) when
   * flushed or expired; on a hit with `bump`, records the fetch for the LRU.
   */
  get(key: Uint8Array, koff: number, klen: number, hv: number, bump: boolean): number {
    const ref = this.find(key, koff, klen, hv);
    if (ref === NIL) return NIL;
    if (this.isFlushed(ref)) {
      this.unlink(ref);
      this.getFlushed++;
      return NIL;
    }
    const exp = this.u32[(ref << 1) + 4]!;
    if (exp !== 0 && exp <= this.clock.now) {
      this.unlink(ref);
      this.getExpired++;
      return NIL;
    }
    if (bump) this.bump(ref);
    return ref;
  }

  /** stock's do_item_bump (segmented mode): first fetch marks FETCHED, the next ones ACTIVE. */
  bump(ref: number): void {
    const p = (ref << 3) + 28;
    const f = this.mem[p]!;
    if ((f & F_ACTIVE) === 0) {
      if ((f & F_FETCHED) === 0) {
        this.mem[p] = f | F_FETCHED;
      } else {
        this.mem[p] = f | F_ACTIVE;
        this.u32[(ref << 1) + 3] = this.clock.now;
      }
    }
  }

  /** stock's do_item_update: refresh the access time (at most once a minute) and the LRU position. */
  update(ref: number): void {
    const now = this.clock.now;
    if (this.time(ref) < now - ITEM_UPDATE_INTERVAL || this.time(ref) === 0) {
      this.u32[(ref << 1) + 3] = now;
      const cls = this.clsid(ref);
      this.lruRemove(ref, cls);
      this.lruPushHead(ref, cls);
    } else {
      this.u32[(ref << 1) + 3] = now;
    }
  }

  // ------------------------------------------------------------------ allocation

  /**
   * stock's item_alloc: a new, unlinked item (flagged pending) with the key copied in and room
   * for `nbytes` of value (including "\r\n"). Returns NIL with `allocError` TOO_LARGE or
   * NO_MEMORY. Evicts as needed.
   */
  alloc(key: Uint8Array, koff: number, klen: number, flags: number, exptime: number, nbytes: number): number {
    this.allocError = AllocError.NONE;
    const total = this.stockTotal(klen, flags, nbytes);
    if (nbytes < 2 || total > this.itemSizeMax) {
      this.allocError = AllocError.TOO_LARGE;
      return NIL;
    }
    const cls = this.classFor(total);
    const ref = cls === this.large ? this.allocLarge(HDR + klen + nbytes) : this.allocChunk(cls);
    if (ref === NIL) {
      this.classStats[cls * CS.COUNT + CS.OUTOFMEMORY]!++;
      this.allocError = AllocError.NO_MEMORY;
      return NIL;
    }
    const w = ref << 1;
    const b = ref << 3;
    this.i32[w] = NIL;
    this.i32[w + 1] = NIL;
    this.i32[w + 2] = NIL;
    this.u32[w + 3] = 0;
    this.u32[w + 4] = exptime;
    this.u32[w + 5] = nbytes;
    this.u32[w + 6] = flags;
    this.mem[b + 28] = F_PENDING;
    this.mem[b + 29] = 0;
    this.mem[b + 30] = cls;
    this.mem[b + 31] = klen;
    this.f64[ref + 4] = 0;
    this.u32[w + 10] = 0;
    const dst = b + HDR;
    copyBytes(this.mem, dst, key, koff, klen);
    return ref;
  }

  /** The slab class for a stock item size (slabs_clsid), or `large`. */
  classFor(total: number): number {
    if (total > this.classSize[this.largest]!) return this.large;
    let lo = 1;
    let hi = this.largest;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.classSize[mid]! < total) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Frees an item that was allocated but never linked (an upload that failed). */
  freePending(ref: number): void {
    this.freeItem(ref);
  }

  private allocChunk(cls: number): number {
    for (let attempt = 0; attempt < 10; attempt++) {
      const head = this.freeHead[cls]!;
      if (head !== NIL) {
        this.freeHead[cls] = this.i32[(head << 1) + 1]!;
        this.freeCount[cls]!--;
        const page = Math.floor((head << 3) / PAGE_SIZE);
        if (this.pageUsed[page]++ === 0) this.emptyClassPages--;
        if (attempt > 0) this.classStats[cls * CS.COUNT + CS.DIRECT_RECLAIMS]! += attempt;
        return head;
      }
      if (this.growClass(cls)) continue;
      if (this.lruPullTail(cls, true)) continue;
      if (!this.stealPageFor(cls)) return NIL;
    }
    return NIL;
  }

  /** Gives class `cls` a free page (or a page another class holds without using it). */
  private growClass(cls: number): boolean {
    let page = this.freePages > 0 ? this.findFreeRun(1) : -1;
    if (page < 0 && this.emptyClassPages > 0 && this.slabReassign) page = this.takeEmptyPage(cls);
    if (page < 0) return false;
    this.assignPage(page, cls);
    return true;
  }

  private assignPage(page: number, cls: number): void {
    if (this.pageClass[page] === 0) {
      this.freePages--;
      if (page >= this.pagesMalloced) this.pagesMalloced = page + 1;
    }
    this.pageClass[page] = cls;
    this.pageUsed[page] = 0;
    this.emptyClassPages++;
    this.classPages[cls]!++;
    const size = this.classSize[cls]!;
    const n = this.perSlab[cls]!;
    const start = page * PAGE_SIZE;
    // Push in reverse so that chunks are handed out in address order.
    for (let i = n - 1; i >= 0; i--) {
      const ref = (start + i * size) >>> 3;
      this.mem[(ref << 3) + 28] = F_SLABBED;
      this.mem[(ref << 3) + 29] = 0;
      this.mem[(ref << 3) + 30] = cls;
      this.i32[(ref << 1) + 1] = this.freeHead[cls]!;
      this.freeHead[cls] = ref;
    }
    this.freeCount[cls]! += n;
  }

  /** A page of another class that holds no item: unhooks its chunks from that class. */
  private takeEmptyPage(cls: number): number {
    for (let p = 0; p < this.pages; p++) {
      const owner = this.pageClass[p]!;
      if (owner !== 0 && owner !== cls && owner !== this.large && this.pageUsed[p] === 0 && this.pageRun[p] === 0) {
        this.detachPage(p);
        this.slabsMoved++;
        return p;
      }
    }
    return -1;
  }

  /** Removes page `p` (no chunk in use) from its class and marks it free. */
  private detachPage(p: number): void {
    const owner = this.pageClass[p]!;
    const start = p * PAGE_SIZE;
    const end = start + PAGE_SIZE;
    let prev = NIL;
    let ref = this.freeHead[owner]!;
    let removed = 0;
    while (ref !== NIL) {
      const next = this.i32[(ref << 1) + 1]!;
      const off = ref << 3;
      if (off >= start && off < end) {
        if (prev === NIL) this.freeHead[owner] = next;
        else this.i32[(prev << 1) + 1] = next;
        removed++;
      } else {
        prev = ref;
      }
      ref = next;
    }
    this.freeCount[owner]! -= removed;
    this.classPages[owner]!--;
    this.pageClass[p] = 0;
    this.emptyClassPages--;
    this.freePages++;
  }

  /**
   * When a class has nothing left to evict: free the page that holds the least recently used
   * tail among the other classes (evicting its items), so that memory follows the workload.
   */
  private stealPageFor(cls: number): boolean {
    if (!this.evictToFree || !this.slabReassign) return false;
    let victim = NIL;
    let oldest = Infinity;
    for (let c = 1; c <= this.large; c++) {
      if (c === cls) continue;
      const t = this.lruTail[c]!;
      if (t !== NIL && this.time(t) < oldest) {
        oldest = this.time(t);
        victim = t;
      }
    }
    if (victim === NIL) return false;
    const page = Math.floor((victim << 3) / PAGE_SIZE);
    return this.freePageRange(page, 1, true) && this.findFreeRun(1) >= 0 && this.growClass(cls);
  }

  /**
   * Frees pages [first, first+count): evicts their items (large items lose their whole run)
   * and detaches them from their classes. Fails if an upload in progress uses one of them.
   */
  private freePageRange(first: number, count: number, counted: boolean): boolean {
    for (let p = first; p < first + count; p++) {
      let head = p;
      if (this.pageClass[p] === this.large) {
        while (this.pageRun[head] === 0) head--;
      }
      if (this.pageClass[p] === 0) continue;
      if (this.pageClass[p] === this.large) {
        const ref = (head * PAGE_SIZE) >>> 3;
        if (this.itFlags(ref) & F_PENDING) return false;
        if (this.itFlags(ref) & F_LINKED) {
          this.evict(ref, this.large);
          if (counted) this.slabReassignEvictionsNomem++;
        }
        continue;
      }
      const owner = this.pageClass[p]!;
      const size = this.classSize[owner]!;
      const n = this.perSlab[owner]!;
      const start = p * PAGE_SIZE;
      for (let i = 0; i < n; i++) {
        const ref = (start + i * size) >>> 3;
        if (this.itFlags(ref) & F_PENDING) return false;
      }
      for (let i = 0; i < n; i++) {
        const ref = (start + i * size) >>> 3;
        if (this.itFlags(ref) & F_LINKED) {
          this.evict(ref, owner);
          if (counted) this.slabReassignEvictionsNomem++;
        }
      }
      this.detachPage(p);
      this.slabsMoved++;
    }
    return true;
  }

  /** First page of `count` contiguous free pages, or -1. */
  private findFreeRun(count: number): number {
    if (this.freePages < count || this.pages - this.freePages + count > this.pageLimit) return -1;
    const pages = this.pages;
    for (let scanned = 0, p = this.pageCursor; scanned < pages; scanned++, p = p + 1 === pages ? 0 : p + 1) {
      if (this.pageClass[p] !== 0 || p + count > pages) continue;
      let k = 1;
      while (k < count && this.pageClass[p + k] === 0) k++;
      if (k === count) {
        this.pageCursor = p;
        return p;
      }
    }
    return -1;
  }

  /** An item of `bytes` (our layout) in whole contiguous pages. */
  private allocLarge(bytes: number): number {
    const count = Math.ceil(bytes / PAGE_SIZE);
    if (count > this.pages) return NIL;
    for (let attempt = 0; attempt < this.pages + 8; attempt++) {
      const first = this.findFreeRun(count);
      if (first >= 0) {
        for (let p = first; p < first + count; p++) {
          this.pageClass[p] = this.large;
          this.pageRun[p] = 0;
          if (p >= this.pagesMalloced) this.pagesMalloced = p + 1;
        }
        this.pageRun[first] = count;
        this.freePages -= count;
        this.classPages[this.large]! += count;
        this.pageUsed[first] = 1;
        return (first * PAGE_SIZE) >>> 3;
      }
      if (this.emptyClassPages > 0 && this.slabReassign) {
        const p = this.takeEmptyPage(this.large);
        if (p >= 0) continue;
      }
      if (!this.evictToFree) return NIL;
      if (this.lruPullTail(this.large, true)) continue;
      // Free a window of pages, starting with the one holding the oldest tail item.
      let victim = NIL;
      let oldest = Infinity;
      for (let c = 1; c < this.large; c++) {
        const t = this.lruTail[c]!;
        if (t !== NIL && this.time(t) < oldest) {
          oldest = this.time(t);
          victim = t;
        }
      }
      if (victim === NIL || !this.slabReassign) return NIL;
      let first2 = Math.floor((victim << 3) / PAGE_SIZE);
      if (first2 + count > this.pages) first2 = this.pages - count;
      if (!this.freePageRange(first2, count, true)) return NIL;
    }
    return NIL;
  }

  private freeItem(ref: number): void {
    const cls = this.clsid(ref);
    const b = ref << 3;
    if (cls === this.large) {
      const first = Math.floor(b / PAGE_SIZE);
      const count = this.pageRun[first]!;
      for (let p = first; p < first + count; p++) {
        this.pageClass[p] = 0;
        this.pageRun[p] = 0;
        this.pageUsed[p] = 0;
      }
      this.freePages += count;
      this.classPages[this.large]! -= count;
      this.mem[b + 28] = F_SLABBED;
      this.mem[b + 29] = 0;
      return;
    }
    this.mem[b + 28] = F_SLABBED;
    this.mem[b + 29] = 0;
    this.i32[(ref << 1) + 1] = this.freeHead[cls]!;
    this.freeHead[cls] = ref;
    this.freeCount[cls]!++;
    const page = Math.floor(b / PAGE_SIZE);
    if (--this.pageUsed[page]! === 0) this.emptyClassPages++;
  }

  // ------------------------------------------------------------------ LRU

  private lruPushHead(ref: number, cls: number): void {
    const w = ref << 1;
    const head = this.lruHead[cls]!;
    this.i32[w] = NIL;
    this.i32[w + 1] = head;
    if (head !== NIL) this.i32[head << 1] = ref;
    else this.lruTail[cls] = ref;
    this.lruHead[cls] = ref;
  }

  private lruRemove(ref: number, cls: number): void {
    const w = ref << 1;
    const prev = this.i32[w]!;
    const next = this.i32[w + 1]!;
    if (prev !== NIL) this.i32[(prev << 1) + 1] = next;
    else this.lruHead[cls] = next;
    if (next !== NIL) this.i32[next << 1] = prev;
    else this.lruTail[cls] = prev;
  }

  /**
   * stock's lru_pull_tail for allocation: looks at up to 5 tail items; reclaims the first expired
   * or flushed one, gives ACTIVE items a second chance, else evicts the tail (if allowed).
   * Returns true if a chunk was freed.
   */
  private lruPullTail(cls: number, evict: boolean): boolean {
    const now = this.clock.now;
    const base = cls * CS.COUNT;
    // Active items (read since they last moved) go back to the head, their flag cleared, until
    // the tail is one that was not: each move pays for the access that set the flag, so the
    // work is amortized over reads. (With a fixed 5 tries, a run of hot items at the tail lost
    // every fifth one; stock keeps them, moving active items out of its cold segment.) A cap
    // bounds one call's work should the whole class be active.
    for (let tries = 0; tries < MAX_ACTIVE_MOVES + 1; tries++) {
      const ref = this.lruTail[cls]!;
      if (ref === NIL) return false;
      const exp = this.exptime(ref);
      if ((exp !== 0 && exp <= now) || this.isFlushed(ref)) {
        this.classStats[base + CS.RECLAIMED]!++;
        if ((this.itFlags(ref) & F_FETCHED) === 0) this.classStats[base + CS.EXPIRED_UNFETCHED]!++;
        this.unlink(ref);
        return true;
      }
      const f = this.itFlags(ref);
      if ((f & F_ACTIVE) !== 0 && tries < MAX_ACTIVE_MOVES) {
        this.setItFlags(ref, f & ~F_ACTIVE);
        this.lruRemove(ref, cls);
        this.lruPushHead(ref, cls);
        this.classStats[base + CS.MOVES_WITHIN_LRU]!++;
        continue;
      }
      if (!evict || !this.evictToFree) return false;
      this.evict(ref, cls);
      return true;
    }
    return false;
  }

  private evict(ref: number, cls: number): void {
    const base = cls * CS.COUNT;
    const f = this.itFlags(ref);
    this.classStats[base + CS.EVICTED]!++;
    this.classStats[base + CS.EVICTED_TIME] = this.clock.now - this.time(ref);
    if (this.exptime(ref) !== 0) this.classStats[base + CS.EVICTED_NONZERO]!++;
    if ((f & F_FETCHED) === 0) this.classStats[base + CS.EVICTED_UNFETCHED]!++;
    if ((f & F_ACTIVE) !== 0) this.classStats[base + CS.EVICTED_ACTIVE]!++;
    this.unlink(ref);
  }

  // ------------------------------------------------------------------ link / unlink

  /** stock's do_item_link: into the hash table and LRU, new CAS, time = now. */
  link(ref: number, hv: number): void {
    const b = ref << 3;
    const w = ref << 1;
    this.mem[b + 28] = (this.mem[b + 28]! & ~F_PENDING) | F_LINKED;
    this.u32[w + 3] = this.clock.now;
    this.f64[ref + 4] = this.useCas ? (this.casId += this.casStep) : 0;
    this.u32[w + 10] = hv;
    const old = this.inOldTable(hv);
    const table = old ? this.oldBuckets! : this.buckets;
    const bucket = hv & (old ? this.oldMask : this.hashMask);
    this.i32[w + 2] = table[bucket]!;
    table[bucket] = ref;
    const cls = this.mem[b + 30]!;
    this.lruPushHead(ref, cls);
    const total = this.ntotal(ref);
    this.currItems++;
    this.totalItems++;
    this.currBytes += total;
    this.classStats[cls * CS.COUNT + CS.NUMBER]!++;
    this.classStats[cls * CS.COUNT + CS.MEM_REQUESTED]! += total;
    if (this.oldBuckets !== null) this.maintainHash(MIGRATE_PER_LINK);
    else if (this.currItems > (2 ** this.hashPowerNow * 3) / 2 && this.hashPowerNow < this.maxHashPower) this.startExpansion();
  }

  /** stock's do_item_unlink + free: out of the hash table and LRU, memory back to its class. */
  unlink(ref: number): void {
    if ((this.itFlags(ref) & F_LINKED) === 0) return;
    const cls = this.clsid(ref);
    const total = this.ntotal(ref);
    this.hashRemove(ref);
    this.lruRemove(ref, cls);
    this.currItems--;
    this.currBytes -= total;
    this.classStats[cls * CS.COUNT + CS.NUMBER]!--;
    this.classStats[cls * CS.COUNT + CS.MEM_REQUESTED]! -= total;
    this.freeItem(ref);
  }

  private hashRemove(ref: number): void {
    const hv = this.u32[(ref << 1) + 10]!;
    const old = this.inOldTable(hv);
    const table = old ? this.oldBuckets! : this.buckets;
    const bucket = hv & (old ? this.oldMask : this.hashMask);
    let cur = table[bucket]!;
    let prev = NIL;
    while (cur !== NIL && cur !== ref) {
      prev = cur;
      cur = this.i32[(cur << 1) + 2]!;
    }
    if (cur === NIL) return;
    const next = this.i32[(ref << 1) + 2]!;
    if (prev === NIL) table[bucket] = next;
    else this.i32[(prev << 1) + 2] = next;
  }

  /** Hash of an item's key (the same function callers use for lookups). */
  hashItem(ref: number): number {
    return hashKey(this.mem, this.keyOffset(ref), this.nkey(ref));
  }

  /** stock's item_replace: unlink the old item, link the new one. */
  replace(oldRef: number, newRef: number, hv: number): void {
    this.unlink(oldRef);
    this.link(newRef, hv);
  }

  // ------------------------------------------------------------------ commands

  /**
   * stock's do_store_item: stores the pending item `ref` (value already in place) by `comm`.
   * `reqCas` is the client's CAS (0: none). On STORED, `lastCas` holds the new CAS. The pending
   * item is linked or freed either way; append/prepend allocate the combined item.
   */
  storeItem(ref: number, comm: Comm, hv: number, reqCas: number, setStale: boolean): StoreResult {
    const nk = this.nkey(ref);
    const old = this.get(this.mem, this.keyOffset(ref), nk, hv, false);
    let stored = StoreResult.NOT_STORED;
    let linked = false;
    if (old !== NIL) {
      const oldCas = this.cas(old);
      const match = reqCas !== 0 && reqCas === oldCas;
      const stale = reqCas !== 0 && !match && setStale && reqCas < oldCas;
      const ocls = this.clsid(old) * CS.COUNT;
      switch (comm) {
        case Comm.ADD:
          this.update(old);
          break;
        case Comm.CAS:
          if (match || stale) {
            if (stale) {
              this.setExptime(ref, this.exptime(old));
              let f = this.itFlags(ref) | F_STALE;
              if (this.itFlags(old) & F_TOKEN_SENT) f |= F_TOKEN_SENT;
              this.setItFlags(ref, f);
            }
            this.classStats[ocls + CS.CAS_HITS]!++;
            this.replace(old, ref, hv);
            linked = true;
            stored = StoreResult.STORED;
          } else {
            this.classStats[ocls + CS.CAS_BADVAL]!++;
            stored = StoreResult.EXISTS;
          }
          break;
        case Comm.APPEND:
        case Comm.PREPEND: {
          if (reqCas !== 0 && !match) {
            stored = StoreResult.EXISTS;
            break;
          }
          const addLen = this.nbytes(ref);
          const oldLen = this.nbytes(old);
          const combined = this.alloc(this.mem, this.keyOffset(ref), nk, this.flags(old), this.exptime(old), addLen + oldLen - 2);
          if (combined === NIL) break;
          // alloc() may have evicted `old`: it is gone then, and the append is not stored.
          if ((this.itFlags(old) & F_LINKED) === 0) {
            this.freeItem(combined);
            break;
          }
          const dst = this.valueOffset(combined);
          const a = comm === Comm.APPEND ? old : ref;
          const b = comm === Comm.APPEND ? ref : old;
          const aLen = this.nbytes(a) - 2;
          this.mem.copyWithin(dst, this.valueOffset(a), this.valueOffset(a) + aLen);
          this.mem.copyWithin(dst + aLen, this.valueOffset(b), this.valueOffset(b) + this.nbytes(b));
          this.replace(old, combined, hv);
          this.lastCas = this.cas(combined);
          this.freeItem(ref);
          return StoreResult.STORED;
        }
        case Comm.REPLACE:
        case Comm.SET:
          this.replace(old, ref, hv);
          linked = true;
          stored = StoreResult.STORED;
          break;
      }
    } else {
      switch (comm) {
        case Comm.ADD:
        case Comm.SET:
          this.link(ref, hv);
          linked = true;
          stored = StoreResult.STORED;
          break;
        case Comm.CAS:
          stored = StoreResult.NOT_FOUND;
          break;
        default:
          break;
      }
    }
    if (linked) this.lastCas = this.cas(ref);
    else this.freeItem(ref);
    return stored;
  }

  /**
   * stock's do_add_delta: incr/decr the item's decimal value. On OK, `deltaValue` holds the new
   * value's digits, `deltaRef` the item (valid until the next store call), `lastCas` its CAS.
   * `reqCas` (0: none) must match.
   */
  addDelta(key: Uint8Array, koff: number, klen: number, hv: number, incr: boolean, delta: bigint, reqCas: number): DeltaResult {
    const ref = this.get(key, koff, klen, hv, false);
    this.deltaRef = NIL;
    if (ref === NIL) return DeltaResult.NOT_FOUND;
    const nb = this.nbytes(ref);
    if (nb <= 2) return DeltaResult.NON_NUMERIC;
    if (reqCas !== 0 && this.cas(ref) !== reqCas) return DeltaResult.CAS_MISMATCH;
    const voff = this.valueOffset(ref);
    const value = parseStoredNumber(this.mem, voff, voff + nb);
    if (value < 0n) return DeltaResult.NON_NUMERIC;
    let next: bigint;
    if (incr) next = BigInt.asUintN(64, value + delta);
    else next = delta > value ? 0n : value - delta;
    const cls = this.clsid(ref) * CS.COUNT;
    this.classStats[cls + (incr ? CS.INCR_HITS : CS.DECR_HITS)]!++;
    const digits = next.toString();
    const res = digits.length;
    if (res + 2 <= nb) {
      // In place, padded with spaces, as stock does when nobody else holds the item.
      for (let i = 0; i < res; i++) this.mem[voff + i] = digits.charCodeAt(i);
      for (let i = res; i < nb - 2; i++) this.mem[voff + i] = 32;
      this.setCas(ref, this.useCas ? (this.casId += this.casStep) : 0);
      this.update(ref);
      this.deltaRef = ref;
      this.deltaReplaced = false;
    } else {
      const nref = this.alloc(this.mem, this.keyOffset(ref), klen, this.flags(ref), this.exptime(ref), res + 2);
      if (nref === NIL) return DeltaResult.EOM;
      if ((this.itFlags(ref) & F_LINKED) === 0) {
        this.freeItem(nref);
        return DeltaResult.EOM;
      }
      const noff = this.valueOffset(nref);
      for (let i = 0; i < res; i++) this.mem[noff + i] = digits.charCodeAt(i);
      this.mem[noff + res] = 13;
      this.mem[noff + res + 1] = 10;
      this.replace(ref, nref, hv);
      this.deltaRef = nref;
      this.deltaReplaced = true;
    }
    this.deltaValue = digits;
    this.lastCas = this.cas(this.deltaRef);
    return DeltaResult.OK;
  }

  /** Digits of the value the last successful addDelta left. */
  deltaValue = "";
  /** The item the last successful addDelta left. */
  deltaRef = NIL;
  /** The last successful addDelta had to allocate a new item (the value grew). */
  deltaReplaced = false;

  /**
   * flush_all [delay]: items updated before the deadline become invalid once it passes.
   * `delay` is the client's exptime (int32); 0 or less flushes now.
   */
  flush(delay: number): void {
    this.flushUntil(delay > 0 ? this.clock.realtime(delay) : this.clock.now);
  }

  /** flush_all with the deadline already converted to rel_time (stock's new_oldest). */
  flushUntil(newOldest: number): void {
    if (this.useCas) {
      this.oldestLive = (newOldest - 1) >>> 0;
      if (this.oldestLive <= this.clock.now) this.oldestCas = (this.casId += this.casStep);
    } else {
      this.oldestLive = newOldest;
    }
  }

  /** Sets how much of the arena may be used (cache_memlimit); false if more than the arena. */
  setPageLimit(bytes: number): boolean {
    const pages = Math.floor(bytes / PAGE_SIZE);
    if (pages < 1 || pages > this.pages) return false;
    this.pageLimit = pages;
    return true;
  }

  /**
   * slabs reassign: moves one page from class `src` (-1: any with a spare page) to `dst`,
   * evicting what the page held.
   */
  reassign(src: number, dst: number): "ok" | "badclass" | "nospare" | "same" {
    if (src === dst) return "same";
    if (src === -1) {
      for (let c = 1; c <= this.largest; c++) {
        if (c !== dst && this.classPages[c]! > 1) {
          src = c;
          break;
        }
      }
    }
    if (src < 0 || src > this.largest || dst < 0 || dst > this.largest) return "badclass";
    if (src === 0 || this.classPages[src]! < 2) return "nospare";
    for (let p = 0; p < this.pages; p++) {
      if (this.pageClass[p] === src && this.freePageRange(p, 1, false)) {
        if (dst !== 0) this.assignPage(p, dst);
        return "ok";
      }
    }
    return "nospare";
  }

  /**
   * The LRU crawler: checks up to `budget` items (round robin over classes, from the tails) and
   * removes expired and flushed ones. Returns the number removed.
   */
  crawl(budget: number): number {
    let removed = 0;
    const now = this.clock.now;
    let classesLeft = this.large + 1;
    while (budget > 0 && classesLeft > 0) {
      if (this.crawlRef === NIL) {
        this.crawlClass = this.crawlClass >= this.large ? 1 : this.crawlClass + 1;
        this.crawlRef = this.lruTail[this.crawlClass]!;
        classesLeft--;
        continue;
      }
      const ref = this.crawlRef;
      const cls = this.crawlClass;
      if ((this.itFlags(ref) & F_LINKED) === 0 || this.clsid(ref) !== cls) {
        this.crawlRef = NIL;
        continue;
      }
      this.crawlRef = this.i32[ref << 1]!;
      budget--;
      this.classStats[cls * CS.COUNT + CS.CRAWLER_ITEMS_CHECKED]!++;
      const exp = this.exptime(ref);
      if ((exp !== 0 && exp <= now) || this.isFlushed(ref)) {
        this.classStats[cls * CS.COUNT + CS.CRAWLER_RECLAIMED]!++;
        this.classStats[cls * CS.COUNT + CS.RECLAIMED]!++;
        if ((this.itFlags(ref) & F_FETCHED) === 0) this.classStats[cls * CS.COUNT + CS.EXPIRED_UNFETCHED]!++;
        this.unlink(ref);
        removed++;
      }
    }
    return removed;
  }

  /** lru_crawler crawl: removes every expired or flushed item of class `cls` now. */
  crawlClassNow(cls: number): number {
    const now = this.clock.now;
    let removed = 0;
    let ref = this.lruTail[cls] ?? NIL;
    while (ref !== NIL) {
      const prev = this.i32[ref << 1]!;
      this.classStats[cls * CS.COUNT + CS.CRAWLER_ITEMS_CHECKED]!++;
      const exp = this.exptime(ref);
      if ((exp !== 0 && exp <= now) || this.isFlushed(ref)) {
        this.classStats[cls * CS.COUNT + CS.CRAWLER_RECLAIMED]!++;
        this.classStats[cls * CS.COUNT + CS.RECLAIMED]!++;
        if ((this.itFlags(ref) & F_FETCHED) === 0) this.classStats[cls * CS.COUNT + CS.EXPIRED_UNFETCHED]!++;
        this.unlink(ref);
        removed++;
      }
      ref = prev;
    }
    return removed;
  }

  /** Items in class `cls`'s LRU, most recent first (for cachedump and metadump). */
  *lruItems(cls: number): Generator<number> {
    let ref = this.lruHead[cls]!;
    while (ref !== NIL) {
      const next = this.i32[(ref << 1) + 1]!;
      yield ref;
      ref = next;
    }
  }

  /** Age of a class's LRU tail (seconds since its last access), 0 if empty. */
  tailAge(cls: number): number {
    const t = this.lruTail[cls]!;
    return t === NIL ? 0 : this.clock.now - this.time(t);
  }

  /** Free chunks of a class (stock's sl_curr). */
  freeChunks(cls: number): number {
    return this.freeCount[cls]!;
  }

  /** Bytes of the hash table. */
  get hashBytes(): number {
    return this.buckets.byteLength + (this.oldBuckets?.byteLength ?? 0);
  }
}


/**
 * strtoull over a stored value (which ends with "\r\n"): memcached's safe_strtoull rules.
 * Returns the value, or -1n when it is not a number.
 */
/** Most active items lruPullTail moves to the head in one call before it evicts anyway. */
const MAX_ACTIVE_MOVES = 10_000;

function parseStoredNumber(mem: Uint8Array, start: number, end: number): bigint {
  let i = start;
  while (i < end && (mem[i] === 32 || (mem[i]! >= 9 && mem[i]! <= 13))) i++;
  let negative = false;
  if (i < end && (mem[i] === 43 || mem[i] === 45)) {
    negative = mem[i] === 45;
    i++;
  }
  const first = i;
  let small = 0;
  while (i < end && mem[i]! >= 48 && mem[i]! <= 57) {
    if (i - first < 15) small = small * 10 + (mem[i]! - 48);
    i++;
  }
  if (i === first) return -1n;
  // The tail must be whitespace (the value always ends with "\r\n").
  if (i < end && !(mem[i] === 32 || (mem[i]! >= 9 && mem[i]! <= 13))) return -1n;
  let v: bigint;
  if (i - first <= 15) v = BigInt(small);
  else {
    // Leading zeros are fine (strtoull); more than 20 significant digits overflow 64 bits. The
    // BigInt loop runs over at most 20 digits: over a whole 1 MiB value it was quadratic and
    // froze the shard for minutes.
    let sig = first;
    while (sig < i && mem[sig] === 48) sig++;
    if (i - sig > 20) return -1n;
    v = 0n;
    for (let j = sig; j < i; j++) v = v * 10n + BigInt(mem[j]! - 48);
    if (v >= 18446744073709551616n) return -1n;
  }
  if (negative) {
    v = BigInt.asUintN(64, -v);
    if (v >= 9223372036854775808n) return -1n;
  }
  return v;
}
