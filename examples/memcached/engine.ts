/**
 * One shard's memcached engine: its store, clock, counters and settings, shared by every
 * connection (session) of that shard. Commands that concern the whole server (flush_all,
 * stats, verbosity, cache_memlimit) reach the other shards through the `Cluster` hooks; with
 * one shard the engine is the whole server.
 */
import { Clock } from "./clock.ts";
import { Store, CS, PAGE_SIZE } from "./store.ts";
import type { Settings } from "./settings.ts";
import { PrefixStats, type StatsSink } from "./stats.ts";
import type { Router } from "./router.ts";
import { Out } from "./out.ts";

/** Spare forwarded-unit buffers a shard keeps for its connections: at most this many... */
const FWD_SPARE_MAX = 16;
/** ...of at most this many bytes together (a larger one is dropped when its unit is sent). */
const FWD_SPARE_BYTES = 8 * 1024 * 1024;
/** Forwarded-unit buffers are sized in steps of this (so that one fits the next similar value). */
const FWD_STEP = 64 * 1024;

/** Counters a shard keeps per thread in stock memcached (stock's thread_stats names). */
export class ThreadStats {
  get_cmds = 0;
  get_misses = 0;
  touch_cmds = 0;
  touch_misses = 0;
  delete_misses = 0;
  incr_misses = 0;
  decr_misses = 0;
  cas_misses = 0;
  flush_cmds = 0;
  meta_cmds = 0;
  store_too_large = 0;
  store_no_memory = 0;
  auth_cmds = 0;
  auth_errors = 0;
  bytes_read = 0;
  bytes_written = 0;
  conn_yields = 0;
  curr_conns = 0;
  total_conns = 0;
  rejected_conns = 0;
  conn_structs = 0;
  idle_kicks = 0;
  /** 1 while accepting is stopped at the connection limit (-o no_maxconns_fast); not reset. */
  accept_disabled = 0;
  listen_disabled_num = 0;
  /** Time spent not accepting, added when accepting resumes (as stock). */
  time_in_listen_disabled_us = 0;

  /** Zeroes the resettable counters (stats reset). */
  reset(): void {
    for (const k of Object.keys(this) as (keyof ThreadStats)[]) {
      if (k === "curr_conns" || k === "conn_structs" || k === "accept_disabled") continue;
      (this as unknown as Record<string, number>)[k] = 0;
    }
  }
}

/**
 * The largest limit cache_memlimit can set for a server started with -m `maxBytes`: twice -m
 * (address space reserved at start, untouched until used), at most about 4 GiB per shard (one
 * arena is one typed-array view). Not more: lookups measured ~20% slower with a 64 MiB limit
 * in an arena of 512 MiB or more than in one of 128 MiB.
 */
export function memLimitMax(maxBytes: number): number {
  return 2 * maxBytes;
}

/** Hooks into the other shards; absent with one shard. */
export interface Cluster {
  readonly shards: number;
  readonly shardId: number;
}

/** What a shard's engine owns. */
export class Engine {
  readonly settings: Settings;
  readonly clock: Clock;
  readonly store: Store;
  readonly stats = new ThreadStats();
  /** Sends commands for other shards' keys to their owner (null with one shard). */
  router: Router | null = null;
  /** Per key prefix counters (stats detail). */
  readonly prefixStats = new PrefixStats();
  /** Called after a text flush_all ran here with the client's delay: the server repeats it on the other shards. */
  onFlush?: (delay: number) => void;
  /** Called after a binary flush ran here with its (unsigned) expiration. */
  onFlushUntil?: (expiration: number) => void;
  /** `shutdown` (enabled by -A): graceful or not. */
  onShutdown?: (graceful: boolean) => void;
  /** `stats conns`: the server lists its connections into the sink. */
  connStats?: (sink: StatsSink) => void;
  /**
   * Listening sockets stock would count as connections (TCP addresses, UDP addresses x
   * threads); 0 when the engine serves no sockets (in-process tests).
   */
  listenConns = 0;
  /** Number of shards in the server and this one's index. */
  readonly shards: number;
  readonly shardId: number;
  /** Server start (for uptime), rel_time. */
  readonly startedAt: number;
  /** The largest limit cache_memlimit may set, for the whole server (memLimitMax of -m). */
  private readonly limitMaxTotal: number;
  /**
   * Bytes of values for other shards' keys that this shard's connections are receiving: each
   * is buffered here until whole (a unit crosses whole), reserved in full when its command
   * arrives (as stock allocates a pending item in -m at once).
   */
  fwdReserved = 0;
  /** Buffers of forwarded units past a connection's own (a set of a large value), free for the next. */
  private readonly fwdSpare: Out[] = [];
  private fwdSpareBytes = 0;

  /**
   * @param settings server settings (every shard gets the same)
   * @param clock defaults to a wall clock based on settings.processStarted
   * @param shards number of shards; each gets maxBytes / shards of item memory
   */
  constructor(settings: Settings, options: { clock?: Clock; shards?: number; shardId?: number; memory?: "native" | "js" } = {}) {
    this.settings = settings;
    this.clock = options.clock ?? new Clock(settings.processStarted);
    this.shards = options.shards ?? 1;
    this.shardId = options.shardId ?? 0;
    this.startedAt = this.clock.now;
    this.limitMaxTotal = memLimitMax(settings.maxBytes);
    const share = Math.floor(settings.maxBytes / this.shards);
    this.store = new Store({
      maxBytes: share,
      itemSizeMax: settings.itemSizeMax,
      factor: settings.factor,
      chunkSize: settings.chunkSize,
      slabChunkMax: settings.slabChunkMax,
      evictToFree: settings.evictToFree,
      useCas: settings.useCas,
      casSeries: { index: this.shardId, count: this.shards },
      slabReassign: settings.slabReassign,
      // Whole pages, rounded up: together the shards can take the whole ceiling.
      limitMaxBytes: Math.ceil(memLimitMax(settings.maxBytes) / this.shards / PAGE_SIZE) * PAGE_SIZE,
      hashPower: settings.hashpowerInit,
      memory: options.memory,
      clock: this.clock,
    });
    // Stock starts the histogram while it reads its options, before any item (taking CAS id 1).
    if (settings.trackSizes !== "") this.store.sizesInit(settings.trackSizes === "cas");
  }

  /**
   * cache_memlimit: the store's arena reserves room for a limit up to memLimitMax(-m) at
   * start (lowering the limit stops new pages from being counted). False when out of bounds.
   */
  adjustMemLimit(bytes: number): boolean {
    // Whole pages, spread so that the shards' limits add up to the request (each shard rounding
    // its own share down lost up to a page per shard, and let a limit past the ceiling through:
    // 129 MB on -m 64 -t 2 was taken as 2 x 64). The check is the same on every shard, so all
    // take the new limit or none does.
    if (bytes > this.limitMaxTotal) return false;
    const pages = Math.floor(bytes / PAGE_SIZE);
    const share = Math.max(1, Math.floor(pages / this.shards) + (this.shardId < pages % this.shards ? 1 : 0));
    if (!this.store.setPageLimit(share * PAGE_SIZE)) return false;
    this.settings.maxBytes = bytes;
    return true;
  }

  /**
   * Reserves room to buffer a value of `bytes` for another shard's key. Refused (false) when
   * the values already on their way would pass this shard's share of the memory limit (or -I,
   * if larger: one value always fits): the command then fails as stock's out of memory, its
   * value swallowed. Without this, connections that each send most of a large value and stop
   * held up to -c x -I outside -m.
   */
  reserveForward(bytes: number): boolean {
    if (this.fwdReserved > 0 && this.fwdReserved + bytes > Math.max(this.store.pageLimitBytes, this.settings.itemSizeMax)) return false;
    this.fwdReserved += bytes;
    return true;
  }

  /** Gives back what reserveForward reserved. */
  releaseForward(bytes: number): void {
    this.fwdReserved -= bytes;
  }

  /** A buffer for a forwarded unit of `n` bytes: a spare one it fits in (the smallest), else a new one. */
  takeForwardBuffer(n: number): Out {
    const spare = this.fwdSpare;
    let best = -1;
    for (let i = 0; i < spare.length; i++) {
      const len = spare[i]!.buf.length;
      if (len >= n && (best < 0 || len < spare[best]!.buf.length)) best = i;
    }
    if (best < 0) return new Out(Math.ceil(n / FWD_STEP) * FWD_STEP);
    const out = spare[best]!;
    spare[best] = spare[spare.length - 1]!;
    spare.pop();
    this.fwdSpareBytes -= out.buf.length;
    out.reset();
    return out;
  }

  /**
   * A buffer from takeForwardBuffer whose unit was sent (or dropped): kept for the next one
   * while the spares stay within FWD_SPARE_MAX and FWD_SPARE_BYTES (reusing them spares a
   * large allocation, and its garbage, per forwarded set of a large value).
   */
  giveForwardBuffer(out: Out): void {
    const len = out.buf.length;
    if (this.fwdSpare.length >= FWD_SPARE_MAX || this.fwdSpareBytes + len > FWD_SPARE_BYTES) return;
    out.reset();
    this.fwdSpare.push(out);
    this.fwdSpareBytes += len;
  }

  /** Releases the store's memory. */
  close(): void {
    this.store.close();
  }

  /** stats reset: thread and slab counters (not items, bytes or connections). */
  resetStats(): void {
    this.stats.reset();
    const cs = this.store.classStats;
    for (let i = 0; i < cs.length; i++) {
      const slot = i % CS.COUNT;
      if (slot === CS.NUMBER || slot === CS.MEM_REQUESTED) continue;
      cs[i] = 0;
    }
    this.store.totalItems = 0;
    this.store.getExpired = 0;
    this.store.getFlushed = 0;
    this.store.slabsMoved = 0;
    this.store.slabReassignRescues = 0;
    this.store.slabReassignEvictionsNomem = 0;
  }
}
