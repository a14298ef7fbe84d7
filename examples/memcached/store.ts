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
 * whole contiguous pages of the large class. Pages are counted against the limit as stock's
 * mem_malloced is: a class takes a new page while the count stays within -m (this shard's
 * share), its first page even past it; a class with pages evicts from its own LRU. Pages move
 * between classes only through `reassign()` and `automove()` (stock's slab mover and
 * automover). The arena reserves address space for the largest limit plus a first page per
 * class; pages are handed out lowest first, so only what is counted is ever touched.
 *
 * Eviction is per class, from the LRU tail, with a second chance for items fetched twice
 * (stock's segmented LRU approximated: a hit sets a bit instead of moving the item).
 * Expired and flushed items are removed lazily when found, by the tail check before each
 * allocation (stock's do_item_alloc_pull), and by `crawl()` (the LRU crawler), which the server runs a little every second.
 */
import { DataViewCache, copyBytes, allocateAlignedBuffer, HUGE_PAGE_SIZE, NativeBuffer } from "shoal";
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
/** A reply not yet sent refers to the item (stock: refcount above 2); see Holds. */
export const F_HELD = 8192;
/** The item's value is being sent from its memory (Store.lend): neither moved nor reused. */
export const F_SENDING = 16384;
/** Unlinked while being sent: its memory is freed when the last send is done (Store.unlend). */
export const F_FREE_AFTER_SEND = 32768;

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
  /**
   * No memory for an item larger than a slab chunk (slab_chunk_max): stock allocates such an
   * item's chunks while its value arrives and fails there, "Out of memory during read", with
   * the old value left in place and nothing counted in store_no_memory.
   */
  NO_MEMORY_READ = 3,
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
  /** Tail items an allocation met while they were being sent (stock: refcount held), evicted all the same. */
  LRUTAIL_REFLOCKED,
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
  /** Pages may move between classes (slabs reassign, the automover; default true). */
  slabReassign?: boolean;
  /**
   * Largest limit cache_memlimit may raise this store's to, in bytes (default: maxBytes). The
   * arena reserves address space for it; if that mapping fails, for maxBytes only.
   */
  limitMaxBytes?: number;
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

export const PAGE_SIZE = 1024 * 1024;
/** What a page could be for a large item's window (findLargeWindow). */
const PK_BLOCKED = 0;
const PK_SPARE = 1;
const PK_POOL = 2;
const PK_NEW = 3;
const PK_CHUNK = 4;
/** Windows findLargeWindow tries before giving up on pages busy with uploads. */
const WINDOW_ROUNDS_MAX = 16;
/** Pages one arena may reserve: one typed-array view spans at most 4 GiB. */
const ARENA_PAGES_MAX = 4095;
/** Runs in stock's automover window (slab_automove_window) and its age ratio. */
const AUTOMOVE_WINDOW = 30;
const AUTOMOVE_RATIO = 0.8;
/** Pool reclaims one automove tick may make (stock reruns at once after each). */
const AUTOMOVE_RUNS_MAX = 64;
const STOCK_ITEM_HEADER = 48;

const NO_REFS = new Int32Array(0);

/**
 * Items that one connection's replies not yet sent refer to. Stock queues a reference to the
 * item with a get reply (its value is sent from item memory) and drops it once transmitted; an
 * incr/decr in place would change what that reply sends, so do_add_delta writes a new item
 * while anyone else holds one (refcount above 2). Our replies are copies, so holds only
 * decide that choice. Every ref in a list is a live item (see forgetHeld and moveHeld).
 */
export class Holds {
  /** The held refs (a connection that never held an item has none: it starts with the shared empty list). */
  refs: Int32Array = NO_REFS;
  len = 0;
}

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
  /** Pages the arena reserves (address space; only what is used is ever touched). */
  readonly capacity: number;
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

  /** Owner class of each page (0: in the global pool, or not in use). */
  private readonly pageClass: Uint8Array;
  /** 1 for a page in the global pool (free, still counted in pagesMalloced). */
  private readonly inPool: Uint8Array;
  /**
   * When a chunk page joined its class (a count): the page mover takes the class's oldest, as
   * stock's takes `slab_list[0]` (pages join at its end), whatever the pages' places.
   */
  private readonly pageSeq: Float64Array;
  private pageSeqNext = 1;
  /** Pages of a multi-page item: at its first page, the run length; elsewhere 0. */
  private readonly pageRun: Int32Array;
  /** Large class only: 1 if the page holds (part of) an item, 0 if spare. */
  private readonly pageUsed: Uint8Array;
  /** Scratch for findLargeWindow: what each page could be for a large item (PK_*). */
  private readonly pageKind: Uint8Array;
  /** The limit pages are counted against (stock's mem_limit; -m, cache_memlimit). */
  private pageLimit: number;
  /** Largest limit cache_memlimit may set (the arena reserves it, plus first pages). */
  private readonly limitMaxPages: number;
  /** Pages taken from the system: in classes or in the pool (stock's mem_malloced / page size). */
  pagesMalloced = 0;
  /** Pages in the global pool. */
  private poolPages = 0;
  /** Pages below this index have been used (the rest of the arena was never touched). */
  private highWater = 0;
  /** A reassign whose source pages were all busy, retried by reassignRetry() (NIL: none). */
  private retrySrc = NIL;
  private retryDst = 0;
  private pickCursor = 0;
  /** The automover's windows (stock's window_data), AUTOMOVE_WINDOW slots per class. */
  private readonly amAge: Float64Array;
  private readonly amRatio: Float64Array;
  private readonly amDirty: Uint8Array;
  private readonly amSeen: Uint8Array;
  /** Per class counters at the automover's previous run. */
  private readonly amEvicted: Float64Array;
  private readonly amOom: Float64Array;
  private readonly amPages: Int32Array;
  private amCur = 0;
  private automoveSrc = -1;

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
  /** Chunk pages moved out of the way of a large item's run (not a stock stat: no client sees it). */
  pagesRelocated = 0;

  /**
   * `stats sizes` (stock's stats_sizes_hist, on with `stats sizes_enable` or -o track_sizes):
   * linked items counted by ITEM_ntotal in 32-byte buckets, or null while off. Only items whose
   * CAS is at least sizesCasMin count (linked since it was switched on), in and out, as stock
   * counts them (a count can so wrap below 0: stock prints it as an unsigned int too).
   */
  sizesHist: Uint32Array | null = null;
  private sizesCasMin = 0;

  /** Why the last alloc() returned NIL. */
  allocError: AllocError = AllocError.NONE;
  /**
   * The next alloc() of an item that is not too large fails as out of memory (then the flag
   * clears): a storage command another shard refused to buffer the value of (see
   * Engine.reserveForward) runs here with it, and answers and counts as stock's out of memory.
   */
  failNextAlloc = false;
  /**
   * An item that allocation must not evict (NIL: none): the item an append/prepend or a
   * growing incr/decr is copying from. Stock runs those under the key's item lock, and its
   * lru_pull_tail skips an item it cannot lock, evicting the next one from the tail instead;
   * evicting the item itself lost it (incr answered out of memory, append NOT_STORED).
   */
  private pinned = NIL;
  /** CAS of the item the last successful store/incr linked (stock's c->cas). */
  lastCas = 0;

  private crawlClass = 1;
  /**
   * The crawler's position between ticks: the next item of class crawlClass it checks (NIL: the
   * next class). Always a linked item: lruRemove() steps it on when its item leaves the LRU.
   */
  private crawlRef = NIL;
  /** Items whose value is being sent from their memory, and by how many sends (see lend). */
  private readonly sends = new Map<number, number>();
  private closed = false;

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

    const pages = Math.max(1, Math.floor(options.maxBytes / PAGE_SIZE));
    // Room for one page per class past the limit (stock lets a class with no page take one)
    // and for a large item's first run.
    const slack = this.largest + Math.ceil(this.itemSizeMax / PAGE_SIZE) + 1;
    // A JS arena is allocated whole: no room to raise the limit into.
    const native = (options.memory ?? "native") === "native";
    let limitMax = native ? Math.max(pages, Math.floor((options.limitMaxBytes ?? 0) / PAGE_SIZE)) : pages;
    limitMax = Math.max(pages, Math.min(limitMax, ARENA_PAGES_MAX - slack));
    let mapped: NativeBuffer | null = null;
    if (native) {
      // Huge pages: every get touches a random bucket and a random item header; with 4 KiB
      // pages each of those misses also walks the page tables (measured: ~14% of a shard's
      // CPU on a 100k-key workload was these two loads). Untouched pages cost nothing.
      try {
        mapped = allocateAlignedBuffer((limitMax + slack) * PAGE_SIZE, 4096, { hugePages: true });
      } catch (e) {
        if (limitMax === pages) throw e;
        limitMax = pages;
        mapped = allocateAlignedBuffer((limitMax + slack) * PAGE_SIZE, 4096, { hugePages: true });
      }
    }
    this.limitMaxPages = limitMax;
    this.capacity = limitMax + slack;
    const bytes = this.capacity * PAGE_SIZE;
    this.native = mapped;
    this.mem = mapped !== null ? mapped.bytes : new Uint8Array(bytes);
    const ab = this.mem.buffer;
    const base = this.mem.byteOffset;
    this.i32 = new Int32Array(ab, base, bytes / 4);
    this.u32 = new Uint32Array(ab, base, bytes / 4);
    this.f64 = new Float64Array(ab, base, bytes / 8);
    this.pageClass = new Uint8Array(this.capacity);
    this.inPool = new Uint8Array(this.capacity);
    this.pageSeq = new Float64Array(this.capacity);
    this.pageRun = new Int32Array(this.capacity);
    this.pageUsed = new Uint8Array(this.capacity);
    this.pageKind = new Uint8Array(this.capacity);
    this.pageLimit = pages;
    this.amAge = new Float64Array(nclasses * AUTOMOVE_WINDOW);
    this.amRatio = new Float64Array(nclasses * AUTOMOVE_WINDOW);
    this.amDirty = new Uint8Array(nclasses * AUTOMOVE_WINDOW);
    this.amSeen = new Uint8Array(nclasses * AUTOMOVE_WINDOW);
    this.amEvicted = new Float64Array(nclasses);
    this.amOom = new Float64Array(nclasses);
    this.amPages = new Int32Array(nclasses);

    // Every item takes at least a 96-byte chunk: past this size the load stays under 1.5.
    const maxItems = (limitMax * PAGE_SIZE) / this.classSize[1]!;
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
    this.closed = true;
    // Items' values still being sent keep the arena until the last send is done (unlend).
    if (this.sends.size === 0) this.native?.release();
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
  /**
   * stock's item_stats_sizes_init: switches the `stats sizes` histogram on (if off), taking a
   * CAS id as the lowest that counts (`takeCas`: CAS is on, or was when -o track_sizes was read
   * before a -C; items then have CAS 0 and none counts).
   */
  sizesInit(takeCas = this.useCas): void {
    if (this.sizesHist !== null) return;
    this.sizesHist = new Uint32Array(Math.floor(this.itemSizeMax / 32) + 1);
    this.sizesCasMin = takeCas ? this.nextCas() : 0;
  }
  /** stock's item_stats_sizes_add / _remove (`by` +1 / -1). */
  private sizesCount(ref: number, by: number): void {
    const hist = this.sizesHist!;
    if (this.sizesCasMin > this.cas(ref)) return;
    const bucket = Math.ceil(this.ntotal(ref) / 32);
    if (bucket < hist.length) hist[bucket]! += by;
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
   * True if the LRU tail check, the crawler or the page mover would reclaim the item: expired
   * before this second (stock tests `exptime < current_time` there, and `<=` in do_item_get)
   * or flushed.
   */
  private reclaimable(ref: number, now: number): boolean {
    const exp = this.u32[(ref << 1) + 4]!;
    return (exp !== 0 && exp < now) || this.isFlushed(ref);
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
    let ref: number;
    if (this.failNextAlloc) {
      this.failNextAlloc = false;
      ref = NIL;
    } else {
      ref = cls === this.large ? this.allocLarge(HDR + klen + nbytes) : this.allocChunk(cls);
    }
    if (ref === NIL) {
      this.classStats[cls * CS.COUNT + CS.OUTOFMEMORY]!++;
      this.allocError = cls === this.large ? AllocError.NO_MEMORY_READ : AllocError.NO_MEMORY;
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
    // stock's do_item_alloc_pull: the free list, else a new page, else evict from this class's
    // own LRU (never another class's: pages move between classes only through the page mover).
    // A new page is part of one attempt (stock's slabs_alloc takes it); direct_reclaims counts
    // the attempts after evictions.
    for (let attempt = 0; attempt < 10; attempt++) {
      this.reclaimTail(cls);
      let head = this.freeHead[cls]!;
      if (head === NIL && this.newSlab(cls)) head = this.freeHead[cls]!;
      if (head !== NIL) {
        this.freeHead[cls] = this.i32[(head << 1) + 1]!;
        this.freeCount[cls]!--;
        if (attempt > 0) this.classStats[cls * CS.COUNT + CS.DIRECT_RECLAIMS]! += attempt;
        return head;
      }
      if (!this.lruPullTail(cls, true)) return NIL;
    }
    return NIL;
  }

  /** stock's do_slabs_newslab: gives class `cls` one more page if the limit allows it. */
  private newSlab(cls: number): boolean {
    const page = this.takePage(this.classPages[cls]! === 0);
    if (page < 0) return false;
    this.assignPage(page, cls);
    return true;
  }

  /**
   * A page for a class: from the global pool if it holds one, else a page never used (or
   * released), counted in `pagesMalloced`, while that stays within the limit. `first` (the
   * class has no page yet) may go past the limit, as stock lets it: the arena reserves room
   * for one page per class beyond the largest limit. Returns the page, or -1.
   */
  private takePage(first: boolean): number {
    if (this.poolPages > 0) {
      for (let p = 0; p < this.highWater; p++) {
        if (this.inPool[p] === 1) {
          this.inPool[p] = 0;
          this.poolPages--;
          return p;
        }
      }
    }
    if (!first && this.pagesMalloced >= this.pageLimit) return -1;
    // Lowest first, so that the memory touched stays what is counted.
    for (let p = 0; p < this.capacity; p++) {
      if (this.pageClass[p] === 0 && this.inPool[p] === 0) {
        this.pagesMalloced++;
        if (p >= this.highWater) this.highWater = p + 1;
        return p;
      }
    }
    return -1;
  }

  /** Hands a page to a chunk class: its chunks go on the class's free list. */
  private assignPage(page: number, cls: number): void {
    this.pageClass[page] = cls;
    this.pageSeq[page] = this.pageSeqNext++;
    this.classPages[cls]!++;
    const size = this.classSize[cls]!;
    const n = this.perSlab[cls]!;
    const start = page * PAGE_SIZE;
    // Pushed in address order, as stock's split_slab_page_into_freelist frees them: the last
    // chunk is handed out first. The page mover rescues a page's items from its start while its
    // class has free chunks, so this order decides which of them survive a reassign (stock
    // keeps the page's newest).
    for (let i = 0; i < n; i++) {
      const ref = (start + i * size) >>> 3;
      this.mem[(ref << 3) + 28] = F_SLABBED;
      this.mem[(ref << 3) + 29] = 0;
      this.mem[(ref << 3) + 30] = cls;
      this.i32[(ref << 1) + 1] = this.freeHead[cls]!;
      this.freeHead[cls] = ref;
    }
    this.freeCount[cls]! += n;
  }

  /**
   * An item of `bytes` (our layout) in whole contiguous pages of the large class. The class
   * keeps its pages when its items go (spare pages, its free chunks), as stock's largest class
   * keeps its chunks; it grows as any class does, and evicts from its own LRU.
   */
  private allocLarge(bytes: number): number {
    const count = Math.ceil(bytes / PAGE_SIZE);
    if (count > this.capacity) return NIL;
    const base = this.large * CS.COUNT;
    // Each eviction frees at least one page (an item being sent: once sent); the class holds at
    // most classPages items.
    const attempts = this.classPages[this.large]! + 10;
    for (let attempt = 0; attempt < attempts; attempt++) {
      this.reclaimTail(this.large);
      let first = this.findLargeRun(count, 2);
      if (first < 0) first = this.gatherLargeRun(count);
      if (first >= 0) {
        this.claimLargeRun(first, count);
        if (attempt > 0) this.classStats[base + CS.DIRECT_RECLAIMS]! += attempt;
        return (first * PAGE_SIZE) >>> 3;
      }
      // Evict only what can lead to a run: none can if, with every item of the class gone
      // (uploads in progress aside), there would still be no window to gather.
      if (attempt === 0 && this.findLargeWindow(count, true) < 0) return NIL;
      if (!this.lruPullTail(this.large, true)) return NIL;
    }
    return NIL;
  }

  /**
   * When the large class's spare pages (with pool pages and new ones within the limit) are
   * enough for `count` but not contiguous: makes a window contiguous by moving the chunk pages
   * of other classes in it to spare pages outside it (stock keeps such items in chunks and
   * needs no contiguity; memory counted stays the same). Returns the window's first page, or -1.
   */
  private gatherLargeRun(count: number): number {
    const first = this.findLargeWindow(count, false);
    if (first < 0) return -1;
    const end = first + count;
    for (let p = first; p < end; p++) {
      const cls = this.pageClass[p]!;
      if (cls === 0 || cls === this.large) continue;
      let to = -1;
      for (let q = 0; q < this.highWater && to < 0; q++) {
        if (q < first || q >= end) if (this.pageClass[q] === this.large && this.pageUsed[q] === 0) to = q;
      }
      for (let q = 0; q < this.highWater && to < 0; q++) {
        if (q < first || q >= end) if (this.inPool[q] === 1) to = q;
      }
      if (to < 0) throw new Error(`store: no page to move page ${p} to (findLargeWindow counted one)`);
      this.relocateChunkPage(p, to);
    }
    return first;
  }

  /**
   * The window of `count` contiguous pages that the large class could take moving the fewest
   * chunk pages of other classes out of it, or -1. A window may hold the class's spare pages,
   * pool pages, new pages within the limit (as findLargeRun), and chunk pages with no upload
   * in progress, no more of them than there are spare and pool pages outside it to move them
   * to. `assumeEvicted`: count the pages of the class's items (not uploads) as spare, to learn
   * whether evicting could ever lead to a window.
   */
  private findLargeWindow(count: number, assumeEvicted: boolean): number {
    const large = this.large;
    const end = Math.min(this.capacity, this.highWater + count);
    if (end < count) return -1;
    let allowance = Math.max(0, this.pageLimit - this.pagesMalloced);
    if (this.classPages[large] === 0) allowance = Math.max(allowance, count);
    const kind = this.pageKind;
    let spare = 0;
    let pool = 0;
    for (let p = 0; p < end; p++) {
      const owner = this.pageClass[p]!;
      let k = PK_BLOCKED;
      if (owner === large) {
        if (this.pageUsed[p] === 0 || (assumeEvicted && !this.pageBusy(p) && !this.pagePinned(p))) k = PK_SPARE;
      } else if (owner !== 0) {
        k = PK_CHUNK;
      } else {
        k = this.inPool[p] === 1 ? PK_POOL : PK_NEW;
      }
      kind[p] = k;
      if (k === PK_SPARE) spare++;
      else if (k === PK_POOL) pool++;
    }
    // Chunk pages are checked for uploads only in the chosen window (a scan of their chunks):
    // a busy one is blocked and the search runs again.
    for (let round = 0; round < WINDOW_ROUNDS_MAX; round++) {
      const first = this.bestWindow(count, end, spare + pool, allowance);
      if (first < 0) return -1;
      let busy = false;
      for (let p = first; p < first + count; p++) {
        if (kind[p] === PK_CHUNK && this.pageBusy(p)) {
          kind[p] = PK_BLOCKED;
          busy = true;
        }
      }
      if (!busy) return first;
    }
    return -1;
  }

  /** findLargeWindow's scan over pageKind: the feasible window with the fewest chunk pages. */
  private bestWindow(count: number, end: number, free: number, allowance: number): number {
    const kind = this.pageKind;
    const n = new Int32Array(5);
    let best = -1;
    let bestChunks = Infinity;
    for (let p = 0; p < end; p++) {
      n[kind[p]!]!++;
      if (p >= count) n[kind[p - count]!]!--;
      if (p < count - 1) continue;
      const chunks = n[PK_CHUNK]!;
      const outside = free - n[PK_SPARE]! - n[PK_POOL]!;
      if (n[PK_BLOCKED] === 0 && n[PK_NEW]! <= allowance && chunks <= outside && chunks < bestChunks) {
        best = p - count + 1;
        bestChunks = chunks;
        if (chunks === 0) break;
      }
    }
    return best;
  }

  /**
   * Moves chunk page `from` to page `to` (a spare page of the large class or a pool page),
   * every item and free chunk to the same offset, relinked in place: keys, values, CAS, times
   * and LRU order stay as they were, so clients see nothing. `from` becomes a spare page of
   * the large class; pages counted per class and in all stay the same. No chunk of `from` may
   * be an upload in progress (the caller checks pageBusy).
   */
  private relocateChunkPage(from: number, to: number): void {
    const cls = this.pageClass[from]!;
    const large = this.large;
    if (this.inPool[to] === 1) {
      this.inPool[to] = 0;
      this.poolPages--;
      this.classPages[large]!++;
      this.freeCount[large]!++;
    }
    this.pageClass[to] = cls;
    this.pageSeq[to] = this.pageSeq[from]!; // the same page of its class, moved
    const pageRefs = PAGE_SIZE >>> 3;
    const lo = from * pageRefs;
    const hi = lo + pageRefs;
    const delta = (to - from) * pageRefs;
    // Free chunks: the list is relinked through their new places.
    let prev = NIL;
    let ref = this.freeHead[cls]!;
    while (ref !== NIL) {
      if (ref >= lo && ref < hi) {
        const moved = ref + delta;
        this.i32[(moved << 1) + 1] = this.i32[(ref << 1) + 1]!;
        this.mem[moved * 8 + 28] = F_SLABBED;
        this.mem[moved * 8 + 29] = 0;
        this.mem[moved * 8 + 30] = cls;
        if (prev === NIL) this.freeHead[cls] = moved;
        else this.i32[(prev << 1) + 1] = moved;
        ref = moved;
      }
      prev = ref;
      ref = this.i32[(ref << 1) + 1]!;
    }
    // Items one at a time: each fixes its neighbours' links (moved already or not) to its new place.
    const step = this.classSize[cls]! >>> 3;
    for (let i = 0, n = this.perSlab[cls]!; i < n; i++) {
      const old = lo + i * step;
      if ((this.itFlags(old) & F_LINKED) === 0) continue;
      const neu = old + delta;
      const bytes = HDR + this.nkey(old) + this.nbytes(old);
      this.mem.copyWithin(neu * 8, old * 8, old * 8 + bytes);
      this.moveHeld(old, neu);
      this.repoint(old, neu, cls);
    }
    this.pageClass[from] = large;
    this.pageUsed[from] = 0;
    this.pageRun[from] = 0;
    this.pagesRelocated++;
  }

  /** Points the LRU neighbours, the hash chain and saved positions at `neu`, a copy of linked item `old`. */
  private repoint(old: number, neu: number, cls: number): void {
    const w = neu << 1;
    const prev = this.i32[w]!;
    const next = this.i32[w + 1]!;
    if (prev !== NIL) this.i32[(prev << 1) + 1] = neu;
    else this.lruHead[cls] = neu;
    if (next !== NIL) this.i32[next << 1] = neu;
    else this.lruTail[cls] = neu;
    const hv = this.u32[w + 10]!;
    const inOld = this.inOldTable(hv);
    const table = inOld ? this.oldBuckets! : this.buckets;
    const bucket = hv & (inOld ? this.oldMask : this.hashMask);
    if (table[bucket] === old) {
      table[bucket] = neu;
    } else {
      let cur = table[bucket]!;
      while (cur !== NIL) {
        const after = this.i32[(cur << 1) + 2]!;
        if (after === old) {
          this.i32[(cur << 1) + 2] = neu;
          break;
        }
        cur = after;
      }
    }
    if (this.crawlRef === old) this.crawlRef = neu;
    if (this.deltaRef === old) this.deltaRef = neu;
    if (this.pinned === old) this.pinned = neu;
  }

  /**
   * First page of `count` contiguous pages an item of the large class may take, or -1. Level
   * 0 takes the class's spare pages only, 1 also pool pages, 2 also new pages within the
   * limit (or past it for the class's first pages). The lowest level that finds a run wins.
   */
  private findLargeRun(count: number, maxLevel: number): number {
    const large = this.large;
    const end = Math.min(this.capacity, this.highWater + count);
    for (let level = 0; level <= maxLevel; level++) {
      // New pages within the limit; a class with no page yet may take its first run past it.
      let allowance = level < 2 ? 0 : Math.max(0, this.pageLimit - this.pagesMalloced);
      if (level === 2 && this.classPages[large] === 0) allowance = Math.max(allowance, count);
      let run = 0;
      let fresh = 0;
      for (let p = 0; p < end; p++) {
        const owner = this.pageClass[p]!;
        let ok: boolean;
        let isNew = false;
        if (owner === large) ok = this.pageUsed[p] === 0;
        else if (owner !== 0) ok = false;
        else if (this.inPool[p] === 1) ok = level >= 1;
        else {
          ok = level >= 2;
          isNew = true;
        }
        if (!ok) {
          run = 0;
          fresh = 0;
          continue;
        }
        run++;
        if (isNew) fresh++;
        if (run > count) {
          // Slide: the page leaving the window.
          const out = p - count;
          if (this.pageClass[out] === 0 && this.inPool[out] === 0) fresh--;
          run = count;
        }
        if (run === count && fresh <= allowance) return p - count + 1;
      }
    }
    return -1;
  }

  /** Takes pages [first, first+count) for one large item (they were spare, pool or new). */
  private claimLargeRun(first: number, count: number): void {
    const large = this.large;
    for (let p = first; p < first + count; p++) {
      if (this.pageClass[p] === large) {
        this.freeCount[large]!--;
      } else {
        if (this.inPool[p] === 1) {
          this.inPool[p] = 0;
          this.poolPages--;
        } else {
          this.pagesMalloced++;
          if (p >= this.highWater) this.highWater = p + 1;
        }
        this.pageClass[p] = large;
        this.classPages[large]!++;
      }
      this.pageUsed[p] = 1;
      this.pageRun[p] = 0;
    }
    this.pageRun[first] = count;
  }

  private freeItem(ref: number): void {
    const cls = this.clsid(ref);
    const b = ref << 3;
    this.forgetIfHeld(ref);
    if ((this.mem[b + 29]! & (F_SENDING >>> 8)) !== 0) {
      // Its value is still being sent from here: the memory is freed after the last send.
      this.mem[b + 29] = this.mem[b + 29]! | (F_FREE_AFTER_SEND >>> 8);
      return;
    }
    this.mem[b + 28] = F_SLABBED;
    this.mem[b + 29] = 0;
    if (cls === this.large) {
      // The pages stay the class's, spare.
      const first = Math.floor(b / PAGE_SIZE);
      const count = this.pageRun[first]!;
      for (let p = first; p < first + count; p++) {
        this.pageRun[p] = 0;
        this.pageUsed[p] = 0;
      }
      this.freeCount[cls]! += count;
      return;
    }
    this.i32[(ref << 1) + 1] = this.freeHead[cls]!;
    this.freeHead[cls] = ref;
    this.freeCount[cls]!++;
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
    // The crawler's saved position goes on to the next item it would have checked: left on an
    // item that moves or is freed, it would read whatever later takes the chunk (or the page,
    // re-cut for another class) as an item header.
    if (ref === this.crawlRef) this.crawlRef = prev;
    if (prev !== NIL) this.i32[(prev << 1) + 1] = next;
    else this.lruHead[cls] = next;
    if (next !== NIL) this.i32[next << 1] = prev;
    else this.lruTail[cls] = prev;
  }

  /**
   * stock's lru_pull_tail without LRU_PULL_EVICT, which its do_item_alloc_pull runs before
   * each try to allocate (with the LRU maintainer off; with it on, that thread reclaims the
   * same items in the background): frees the expired and flushed items at the tail, up to five
   * items looked at, and stops at the first live one. Without it, expired and flushed items
   * stayed in curr_items and bytes until read, crawled, or their class ran out of memory.
   */
  private reclaimTail(cls: number): void {
    let ref = this.lruTail[cls]!;
    if (ref === NIL) return;
    const now = this.clock.now;
    const base = cls * CS.COUNT;
    for (let tries = 0; tries < 5 && ref !== NIL; tries++) {
      const prev = this.i32[ref << 1]!;
      if (ref !== this.pinned) {
        if (!this.reclaimable(ref, now)) return;
        this.classStats[base + CS.RECLAIMED]!++;
        if ((this.itFlags(ref) & F_FETCHED) === 0) this.classStats[base + CS.EXPIRED_UNFETCHED]!++;
        this.unlink(ref);
      }
      ref = prev;
    }
  }

  /**
   * stock's lru_pull_tail for allocation: looks at up to 5 tail items; reclaims the first expired
   * or flushed one, gives ACTIVE items a second chance, else evicts the tail (if allowed).
   * Returns true if an item was removed: its chunk is free, unless its value is still being
   * sent (lend), which frees it once sent; the caller tries again (stock's do_item_alloc_pull).
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
      let ref = this.lruTail[cls]!;
      if (ref !== NIL && ref === this.pinned) ref = this.i32[ref << 1]!;
      if (ref === NIL) return false;
      // An item being sent from its memory is counted, as stock counts a tail item a connection
      // holds a reference to (lrutail_reflocked), and then treated as any other: stock unlinks
      // it all the same ("it won't be reusable yet"), and its memory comes back once sent
      // (freeItem defers). Passed over, it stayed readable for good under memory pressure.
      if ((this.mem[(ref << 3) + 29]! & (F_SENDING >>> 8)) !== 0) this.classStats[base + CS.LRUTAIL_REFLOCKED]!++;
      if (this.reclaimable(ref, now)) {
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
    if (this.sizesHist !== null) this.sizesCount(ref, 1);
    if (this.oldBuckets !== null) this.maintainHash(MIGRATE_PER_LINK);
    else if (this.currItems > (2 ** this.hashPowerNow * 3) / 2 && this.hashPowerNow < this.maxHashPower) this.startExpansion();
  }

  /**
   * An upper bound on the bytes of any item stored now: the chunk size of the largest class that
   * holds one (-I when a multi-page item exists), 0 when empty. Other shards size how many of
   * their clients' reads they forward here at once by it (router.ts).
   */
  itemBound(): number {
    if (this.lruHead[this.large] !== NIL) return this.itemSizeMax;
    for (let c = this.largest; c >= 1; c--) if (this.lruHead[c] !== NIL) return this.classSize[c]!;
    return 0;
  }

  /** stock's do_item_unlink + free: out of the hash table and LRU, memory back to its class. */
  unlink(ref: number): void {
    if ((this.itFlags(ref) & F_LINKED) === 0) return;
    this.unlinkOnly(ref);
    this.freeItem(ref);
  }

  /** Out of the hash table and LRU, counted out; the memory is the caller's. */
  private unlinkOnly(ref: number): void {
    const cls = this.clsid(ref);
    const total = this.ntotal(ref);
    this.hashRemove(ref);
    this.lruRemove(ref, cls);
    this.currItems--;
    this.currBytes -= total;
    this.classStats[cls * CS.COUNT + CS.NUMBER]!--;
    this.classStats[cls * CS.COUNT + CS.MEM_REQUESTED]! -= total;
    if (this.sizesHist !== null) this.sizesCount(ref, -1);
    this.mem[(ref << 3) + 28] = this.mem[(ref << 3) + 28]! & ~F_LINKED;
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
    let old = this.get(this.mem, this.keyOffset(ref), nk, hv, false);
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
          this.pinned = old;
          const combined = this.alloc(this.mem, this.keyOffset(ref), nk, this.flags(old), this.exptime(old), addLen + oldLen - 2);
          this.pinned = NIL;
          if (combined === NIL) break;
          // alloc() evicts around `old` (pinned), but an item of several pages may have moved
          // old's page (gatherLargeRun): look again.
          if (this.clsid(combined) === this.large) old = this.find(this.mem, this.keyOffset(ref), nk, hv);
          if (old === NIL || (this.itFlags(old) & F_LINKED) === 0) {
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
    let ref = this.get(key, koff, klen, hv, false);
    this.deltaRef = NIL;
    if (ref === NIL) return DeltaResult.NOT_FOUND;
    const nb = this.nbytes(ref);
    // Stock keeps an item larger than a slab chunk in chunks and refuses to count in one.
    if (nb <= 2 || this.clsid(ref) === this.large) return DeltaResult.NON_NUMERIC;
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
    if (res + 2 <= nb && (this.itFlags(ref) & (F_HELD | F_SENDING)) === 0) {
      // In place, padded with spaces, as stock does when nobody else holds the item.
      for (let i = 0; i < res; i++) this.mem[voff + i] = digits.charCodeAt(i);
      for (let i = res; i < nb - 2; i++) this.mem[voff + i] = 32;
      // Out of the sizes histogram and back in with the new CAS, as stock (it may count now).
      if (this.sizesHist !== null) this.sizesCount(ref, -1);
      this.setCas(ref, this.useCas ? (this.casId += this.casStep) : 0);
      if (this.sizesHist !== null) this.sizesCount(ref, 1);
      this.update(ref);
      this.deltaRef = ref;
      this.deltaReplaced = false;
    } else {
      this.pinned = ref;
      const nref = this.alloc(this.mem, this.keyOffset(ref), klen, this.flags(ref), this.exptime(ref), res + 2);
      ref = this.pinned; // where the item is now, should the allocation have moved its page
      this.pinned = NIL;
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

  /**
   * A NativeBuffer over item `ref`'s value (`len` bytes from `start` within it), for a reply
   * sent from the item's memory instead of a copy (stock's resp->item): until the buffer is
   * released and the kernel is done with it, the item's memory is not reused: a delete, a
   * replacement or an eviction (counted in lrutail_reflocked, as stock counts such a tail item)
   * unlinks it but frees it only then, its page is not moved or re-cut (pageBusy), and
   * incr/decr write a new item. Null when the arena is not native memory (a test's store).
   */
  lend(ref: number, start: number, len: number): NativeBuffer | null {
    const native = this.native;
    if (native === null) return null;
    const at = this.valueOffset(ref) + start;
    const n = this.sends.get(ref) ?? 0;
    this.sends.set(ref, n + 1);
    if (n === 0) this.mem[(ref << 3) + 29] = this.mem[(ref << 3) + 29]! | (F_SENDING >>> 8);
    return NativeBuffer.lend(this.mem.subarray(at, at + len), native.address + at, this, ref);
  }

  /** @internal BufferHome: a lent buffer is done with (see lend). */
  recycle(buffer: NativeBuffer): void {
    this.unlend(buffer.index);
  }

  /**
   * The native address of the arena (0 for a test's JS store): another shard views it once and
   * reads values lent across shards from it (router.ts, LENDS_FLAG).
   */
  get arenaAddress(): number {
    return this.native?.address ?? 0;
  }

  /**
   * A send of item `ref`'s value that lend() started went on elsewhere (another shard sends it,
   * see router.ts) and is done: as the release of that lend's buffer (which was dropped, not
   * released). False if `ref` had no such send (nothing is changed).
   */
  unlendRef(ref: number): boolean {
    if (!this.sends.has(ref)) return false;
    this.unlend(ref);
    return true;
  }

  /** One send of item `ref` is done: the last one lets it move, and frees it if it was unlinked meanwhile. */
  private unlend(ref: number): void {
    const n = this.sends.get(ref);
    if (n === undefined) throw new Error(`store: item ${ref} was not lent`);
    if (n > 1) {
      this.sends.set(ref, n - 1);
      return;
    }
    this.sends.delete(ref);
    if (this.closed) {
      if (this.sends.size === 0) this.native?.release();
      return;
    }
    const b = (ref << 3) + 29;
    const free = (this.mem[b]! & (F_FREE_AFTER_SEND >>> 8)) !== 0;
    this.mem[b] = this.mem[b]! & ~((F_SENDING | F_FREE_AFTER_SEND) >>> 8);
    if (free) this.freeItem(ref);
  }

  /** Sends of items' values from their memory still under way (see lend). */
  get lentItems(): number {
    return this.sends.size;
  }

  /** Holds with items in them: a release re-marks what the others still hold. */
  private readonly holders: Holds[] = [];

  /** A reply not yet sent refers to `ref` (stock's resp->item); until release(h). */
  hold(h: Holds, ref: number): void {
    const b = (ref << 3) + 29;
    this.mem[b] = this.mem[b]! | (F_HELD >>> 8);
    if (h.len === 0) this.holders.push(h);
    if (h.len === h.refs.length) {
      const refs = new Int32Array(Math.max(8, h.len * 2));
      refs.set(h.refs);
      h.refs = refs;
    }
    h.refs[h.len++] = ref;
  }

  /**
   * The replies of `h` were sent: unmarks its items, then marks again what other holders (a
   * connection still reading a value) hold. Every ref in a list is a live item's: a freed held
   * item leaves the lists (forgetHeld), a moved one is renamed (moveHeld).
   */
  release(h: Holds): void {
    if (h.len === 0) return;
    const mem = this.mem;
    const off = ~(F_HELD >>> 8) & 0xff;
    for (let i = 0; i < h.len; i++) {
      const b = (h.refs[i]! << 3) + 29;
      mem[b] = mem[b]! & off;
    }
    h.len = 0;
    const hs = this.holders;
    const at = hs.indexOf(h);
    hs[at] = hs[hs.length - 1]!;
    hs.pop();
    for (const o of hs) {
      for (let i = 0; i < o.len; i++) {
        const b = (o.refs[i]! << 3) + 29;
        mem[b] = mem[b]! | (F_HELD >>> 8);
      }
    }
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

  /**
   * cache_memlimit: sets the limit new pages are counted against. False when above what the
   * arena reserved. Pool pages beyond a lowered limit are released, as stock frees them.
   */
  setPageLimit(bytes: number): boolean {
    const pages = Math.floor(bytes / PAGE_SIZE);
    if (pages < 1 || pages > this.limitMaxPages) return false;
    this.pageLimit = pages;
    this.releasePool();
    return true;
  }

  /** The limit new pages are counted against (this shard's share of -m or cache_memlimit), in bytes. */
  get pageLimitBytes(): number {
    return this.pageLimit * PAGE_SIZE;
  }

  /** Largest limit setPageLimit accepts, in bytes. */
  get limitMaxBytes(): number {
    return this.limitMaxPages * PAGE_SIZE;
  }

  /** Pages in the global pool (stock's slab_global_page_pool). */
  get globalPagePool(): number {
    return this.poolPages;
  }

  /** stock's memory_release: pool pages go while more is counted than the limit. */
  private releasePool(): void {
    for (let p = 0; p < this.highWater && this.poolPages > 0 && this.pagesMalloced > this.pageLimit; p++) {
      if (this.inPool[p] === 1) {
        this.inPool[p] = 0;
        this.poolPages--;
        this.pagesMalloced--;
      }
    }
  }

  /**
   * slabs reassign: moves one page from class `src` (-1: the next class with a spare page;
   * 0: the global pool) to `dst` (0: the pool). The page's items are rescued into free chunks
   * of their class where there are any, else dropped (stock's slab_reassign_evictions_nomem).
   * Stock's mover runs in the background and answers OK at once; here the move is done before
   * the answer (or, when every page of `src` holds an upload in progress, by reassignRetry() on
   * a later tick; until then another reassign is answered "busy", as stock's while its mover
   * runs). Classes are stock's, 1..largest: the class of multi-page items is internal.
   */
  reassign(src: number, dst: number): "ok" | "badclass" | "nospare" | "same" | "busy" {
    if (this.retrySrc !== NIL) return "busy";
    if (src === dst) return "same";
    if (src === -1) src = this.pickAnySource(dst);
    if (src < 0 || src > this.largest || dst < 0 || dst > this.largest) return "badclass";
    if (!this.hasSparePage(src)) return "nospare";
    if (!this.movePage(src, dst)) {
      this.retrySrc = src;
      this.retryDst = dst;
    }
    return "ok";
  }

  /** A page may leave class `src` (0: the pool): it holds two or more (stock's check). */
  private hasSparePage(src: number): boolean {
    return (src === 0 ? this.poolPages : this.classPages[src]!) >= 2;
  }

  /**
   * The background half of a reassign whose source pages were all busy (stock's rebalancer
   * waits for them whatever slab_automove is): moves the page once one is free, or drops the
   * request when the source no longer has a page to spare. The server calls it every second.
   * Returns true if a page moved.
   */
  reassignRetry(): boolean {
    const src = this.retrySrc;
    if (src === NIL) return false;
    if (!this.hasSparePage(src)) {
      this.retrySrc = NIL;
      return false;
    }
    if (!this.movePage(src, this.retryDst)) return false;
    this.retrySrc = NIL;
    return true;
  }

  /**
   * stock's slabs_reassign_pick_any: round robin over the classes 1..largest with more than
   * one page (never the internal class of multi-page items).
   */
  private pickAnySource(dst: number): number {
    for (let tries = this.largest; tries > 0; tries--) {
      this.pickCursor = this.pickCursor >= this.largest ? 1 : this.pickCursor + 1;
      if (this.pickCursor !== dst && this.classPages[this.pickCursor]! > 1) return this.pickCursor;
    }
    return -1;
  }

  /**
   * Moves one page of class `src` (0: the pool) to `dst` (0: the pool); false when every page
   * of `src` holds an upload in progress. Stock's slab_rebalance_move/finish, done at once:
   * live items are copied into free chunks of their own class outside the page (relinked as
   * stock's do_item_replace does: new CAS, now, LRU head, total_items), the others dropped.
   */
  private movePage(src: number, dst: number): boolean {
    let page = -1;
    if (src === 0) {
      for (let p = 0; p < this.highWater && page < 0; p++) if (this.inPool[p] === 1) page = p;
      if (page < 0) return false;
      this.inPool[page] = 0;
      this.poolPages--;
    } else {
      // The class's oldest page that holds no upload in progress (a chunk class's pages by
      // when they joined it, as stock's slab_list; the large class's by place).
      const bySeq = src !== this.large;
      for (let p = 0; p < this.highWater; p++) {
        if (this.pageClass[p] !== src || (page >= 0 && (!bySeq || this.pageSeq[p]! >= this.pageSeq[page]!))) continue;
        if (!this.pageBusy(p)) page = p;
      }
      if (page < 0) return false;
      if (src === this.large) this.emptyLargePage(page);
      else this.emptyChunkPage(page, src);
      // Every item of the page has left the LRU, which stepped the crawler past them; the page
      // is about to be re-cut, so make sure no position is left inside it.
      if (this.crawlRef !== NIL && Math.floor(this.crawlRef / (PAGE_SIZE >>> 3)) === page) this.crawlRef = NIL;
      this.pageClass[page] = 0;
      this.classPages[src]!--;
    }
    if (dst === 0) {
      this.inPool[page] = 1;
      this.poolPages++;
      this.releasePool();
    } else if (dst === this.large) {
      this.pageClass[page] = dst;
      this.pageUsed[page] = 0;
      this.pageRun[page] = 0;
      this.classPages[dst]!++;
      this.freeCount[dst]!++;
    } else {
      this.assignPage(page, dst);
    }
    this.slabsMoved++;
    return true;
  }

  /** True if page `p` of the large class holds (part of) the pinned item. */
  private pagePinned(p: number): boolean {
    if (this.pinned === NIL || this.clsid(this.pinned) !== this.large) return false;
    const first = (this.pinned << 3) / PAGE_SIZE;
    return p >= first && p < first + this.pageRun[first]!;
  }

  /**
   * True if page `p` holds (part of) an item allocated for an upload still arriving, or one
   * whose value is being sent from its memory (linked or not): its page may not be re-cut.
   */
  private pageBusy(p: number): boolean {
    const cls = this.pageClass[p]!;
    if (cls === this.large) {
      if (this.pageUsed[p] === 0) return false;
      let head = p;
      while (this.pageRun[head] === 0) head--;
      return (this.itFlags((head * PAGE_SIZE) >>> 3) & (F_PENDING | F_SENDING)) !== 0;
    }
    const size = this.classSize[cls]!;
    const start = p * PAGE_SIZE;
    for (let i = 0, n = this.perSlab[cls]!; i < n; i++) {
      if (this.mem[start + i * size + 28]! & F_PENDING || this.mem[start + i * size + 29]! & (F_SENDING >>> 8)) return true;
    }
    return false;
  }

  /** Empties a chunk page of class `cls`: its free chunks leave the free list, its items move or go. */
  private emptyChunkPage(page: number, cls: number): void {
    const start = page * PAGE_SIZE;
    const end = start + PAGE_SIZE;
    let prev = NIL;
    let ref = this.freeHead[cls]!;
    while (ref !== NIL) {
      const next = this.i32[(ref << 1) + 1]!;
      const off = ref << 3;
      if (off >= start && off < end) {
        if (prev === NIL) this.freeHead[cls] = next;
        else this.i32[(prev << 1) + 1] = next;
        this.freeCount[cls]!--;
      } else {
        prev = ref;
      }
      ref = next;
    }
    const size = this.classSize[cls]!;
    const now = this.clock.now;
    for (let i = 0, n = this.perSlab[cls]!; i < n; i++) {
      const old = (start + i * size) >>> 3;
      if ((this.itFlags(old) & F_LINKED) === 0) continue;
      const head = this.freeHead[cls]!;
      if (this.reclaimable(old, now)) {
        this.unlinkOnly(old);
        this.forgetIfHeld(old); // the page is re-cut: no list may keep its addresses
      } else if (head === NIL) {
        this.unlinkOnly(old);
        this.forgetIfHeld(old);
        this.slabReassignEvictionsNomem++;
      } else {
        this.freeHead[cls] = this.i32[(head << 1) + 1]!;
        this.freeCount[cls]!--;
        this.rescue(old, head);
      }
    }
  }

  /** Empties a page of the large class: the item on it moves to spare pages, or goes. */
  private emptyLargePage(page: number): void {
    if (this.pageUsed[page] === 0) {
      this.freeCount[this.large]!--;
      return;
    }
    let first = page;
    while (this.pageRun[first] === 0) first--;
    const old = (first * PAGE_SIZE) >>> 3;
    const count = this.pageRun[first]!;
    if ((this.itFlags(old) & F_LINKED) !== 0 && !this.reclaimable(old, this.clock.now)) {
      const to = this.findLargeRun(count, 0);
      if (to >= 0) {
        this.claimLargeRun(to, count);
        this.rescue(old, (to * PAGE_SIZE) >>> 3);
      } else {
        this.unlinkOnly(old);
        this.slabReassignEvictionsNomem++;
      }
    } else if ((this.itFlags(old) & F_LINKED) !== 0) {
      this.unlinkOnly(old);
    }
    // The run's pages become spare; this one leaves the class.
    this.freeItem(old);
    this.freeCount[this.large]!--;
  }

  /**
   * Linked item `old` was copied to `neu` (its page is emptied or relocated): the Holds that
   * name it name the copy (marked, as the copy of the header is), so that no list keeps an
   * address whose memory is re-cut into other chunks (marking it would change a value's byte).
   */
  private moveHeld(old: number, neu: number): void {
    if ((this.mem[(old << 3) + 29]! & (F_HELD >>> 8)) === 0) return;
    for (const h of this.holders) {
      const refs = h.refs;
      for (let i = 0; i < h.len; i++) if (refs[i] === old) refs[i] = neu;
    }
  }

  private forgetIfHeld(ref: number): void {
    if ((this.mem[(ref << 3) + 29]! & (F_HELD >>> 8)) !== 0) this.forgetHeld(ref);
  }

  /**
   * Held item `ref` is freed: it leaves every Holds list, so that a release never writes into
   * its chunk once the memory is another item's (a large item's pages re-cut at other offsets,
   * a page given to another class).
   */
  private forgetHeld(ref: number): void {
    const hs = this.holders;
    for (let k = hs.length - 1; k >= 0; k--) {
      const h = hs[k]!;
      const refs = h.refs;
      let n = 0;
      for (let i = 0; i < h.len; i++) if (refs[i] !== ref) refs[n++] = refs[i]!;
      h.len = n;
      if (n === 0) {
        hs[k] = hs[hs.length - 1]!;
        hs.pop();
      }
    }
  }

  /** Copies linked item `old` into free chunk `to` of its class and links the copy in its place. */
  private rescue(old: number, to: number): void {
    const from = old << 3;
    const bytes = HDR + this.nkey(old) + this.nbytes(old);
    this.mem.copyWithin(to << 3, from, from + bytes);
    this.moveHeld(old, to);
    const hv = this.u32[(old << 1) + 10]!;
    this.unlinkOnly(old);
    this.link(to, hv);
    this.slabReassignRescues++;
  }

  /**
   * stock's slab automover (slab_automove=1), run once a second: per class, a window of the
   * last 30 runs records evictions, out-of-memory, new pages and the LRU tail's age. A class
   * with more than 2.5 pages of free chunks and a clean window gives a page to the global pool
   * (and the next run follows at once); else, once the window has filled, the class with the
   * youngest tail that keeps evicting takes a page from the one with the oldest tail (more than
   * two pages) when the young age is below 0.8 of the old one. At most one such page a second.
   * Returns the pages moved.
   */
  automove(level = 1): number {
    // Stock's automover gets "busy" while the mover still waits on a reassign's page.
    if (this.retrySrc !== NIL) return 0;
    if (level === 2) return this.automoveAggressive();
    let moved = 0;
    for (let run = 0; run < AUTOMOVE_RUNS_MAX; run++) {
      const dst = this.automoveDecide();
      if (dst < 0 || !this.movePage(this.automoveSrc, dst)) break;
      moved++;
      if (dst !== 0) break;
    }
    return moved;
  }

  /**
   * slab_automove=2: stock asks for a page from any class with a spare one on every eviction;
   * here each class that evicted since the last tick gets one page per tick.
   */
  private automoveAggressive(): number {
    let moved = 0;
    for (let c = 1; c <= this.large; c++) {
      const evicted = this.classStats[c * CS.COUNT + CS.EVICTED]!;
      if (evicted === this.amEvicted[c]) continue;
      this.amEvicted[c] = evicted;
      const src = this.pickAnySource(c);
      if (src > 0 && this.movePage(src, c)) moved++;
    }
    return moved;
  }

  /** One decision of stock's slab_automove_run: the destination (0: pool) or -1; source in automoveSrc. */
  private automoveDecide(): number {
    const W = AUTOMOVE_WINDOW;
    const n = this.large + 1;
    const cs = this.classStats;
    let evictedTotal = 0;
    for (let c = 1; c < n; c++) evictedTotal += Math.max(0, cs[c * CS.COUNT + CS.EVICTED]! - this.amEvicted[c]!);
    this.amCur++;
    let oldest = -1;
    let oldestAge = 0;
    let youngest = -1;
    let youngestAge = Infinity;
    let youngestEvicting = false;
    let src = -1;
    let dst = -1;
    for (let c = 1; c < n; c++) {
      const slot = c * W + (this.amCur % W);
      const evicted = Math.max(0, cs[c * CS.COUNT + CS.EVICTED]! - this.amEvicted[c]!);
      const oom = cs[c * CS.COUNT + CS.OUTOFMEMORY]! - this.amOom[c]!;
      this.amEvicted[c] = cs[c * CS.COUNT + CS.EVICTED]!;
      this.amOom[c] = cs[c * CS.COUNT + CS.OUTOFMEMORY]!;
      const pages = this.classPages[c]!;
      this.amDirty[slot] = evicted > 0 || oom > 0 || pages > this.amPages[c]! ? 1 : 0;
      this.amPages[c] = pages;
      this.amRatio[slot] = evicted > 0 ? evicted / evictedTotal : 0;
      this.amSeen[slot] = evicted > 0 ? 1 : 0;
      this.amAge[slot] = this.tailAge(c);
      if (dst >= 0) continue; // stock stops here; the other classes' windows get this run next time
      let ageSum = 0;
      let dirty = 0;
      let ratio = 0;
      let seen = 0;
      for (let i = c * W; i < c * W + W; i++) {
        ageSum += this.amAge[i]!;
        dirty += this.amDirty[i]!;
        ratio += this.amRatio[i]!;
        seen += this.amSeen[i]!;
      }
      const age = Math.floor(ageSum / W);
      const perPage = this.perSlab[c]!;
      if (this.freeCount[c]! > perPage * 2.5 && dirty === 0) {
        src = c;
        dst = 0;
        youngest = oldest = -1;
        continue;
      }
      if (age > oldestAge && pages > 2) {
        oldest = c;
        oldestAge = age;
      }
      if (age < youngestAge && (seen > W / 2 || ratio / W > 0.25)) {
        youngest = c;
        youngestAge = age;
        youngestEvicting = this.amSeen[slot] === 1;
      }
    }
    if (dst === 0) {
      this.automoveSrc = src;
      return 0;
    }
    if (youngest !== -1 && oldest !== -1 && this.amCur > W && youngestAge < oldestAge * AUTOMOVE_RATIO && youngestEvicting) {
      this.automoveSrc = oldest;
      return youngest;
    }
    return -1;
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
      if (this.reclaimable(ref, now)) {
        this.crawlerReclaim(ref, cls);
        removed++;
      }
    }
    return removed;
  }

  /**
   * The crawler removes an expired or flushed item: stock's crawler_expired_eval counts it in
   * crawler_reclaimed (not in reclaimed, the LRU tail's count) and, when never fetched, in
   * expired_unfetched unless it was flushed.
   */
  private crawlerReclaim(ref: number, cls: number): void {
    const base = cls * CS.COUNT;
    this.classStats[base + CS.CRAWLER_RECLAIMED]!++;
    if ((this.itFlags(ref) & F_FETCHED) === 0 && !this.isFlushed(ref)) this.classStats[base + CS.EXPIRED_UNFETCHED]!++;
    this.unlink(ref);
  }

  /** lru_crawler crawl: removes every expired or flushed item of class `cls` now. */
  crawlClassNow(cls: number): number {
    const now = this.clock.now;
    let removed = 0;
    let ref = this.lruTail[cls] ?? NIL;
    while (ref !== NIL) {
      const prev = this.i32[ref << 1]!;
      this.classStats[cls * CS.COUNT + CS.CRAWLER_ITEMS_CHECKED]!++;
      if (this.reclaimable(ref, now)) {
        this.crawlerReclaim(ref, cls);
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

  /** A class's linked items from the LRU tail (oldest) to the head, as stock's crawler walks. */
  *lruItemsFromTail(cls: number): Generator<number> {
    let ref = this.lruTail[cls]!;
    while (ref !== NIL) {
      const prev = this.i32[ref << 1]!;
      yield ref;
      ref = prev;
    }
  }

  /**
   * Every linked item in hash table order (bucket by bucket, each chain from its head), as
   * stock's assoc_iterate walks them for `lru_crawler metadump hash`. An expansion under way is
   * finished first (stock's iterator waits for it).
   */
  *hashItems(): Generator<number> {
    while (this.oldBuckets !== null) this.maintainHash(1 << 20);
    const table = this.buckets;
    for (let b = 0; b < table.length; b++) {
      let ref = table[b]!;
      while (ref !== NIL) {
        const next = this.i32[(ref << 1) + 2]!;
        yield ref;
        ref = next;
      }
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

  /**
   * Bytes of the hash table as stock counts them (stats hash_bytes): a pointer (8 bytes) per
   * bucket, both tables while one migrates to the other. (Ours are 4-byte indexes.)
   */
  get hashBytes(): number {
    return (this.buckets.length + (this.oldBuckets?.length ?? 0)) * 8;
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
  // The tail must be whitespace (the value always ends with "\r\n") or a NUL, where stock's
  // strtoull stops as at a string's end.
  if (i < end && !(mem[i] === 32 || mem[i] === 0 || (mem[i]! >= 9 && mem[i]! <= 13))) return -1n;
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
