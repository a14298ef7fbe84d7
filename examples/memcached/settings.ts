/**
 * Server settings: what memcached's command line sets and `stats settings` reports.
 * Plain data, so that the supervisor can hand it to every shard unchanged.
 */

/** memcached's version string; clients and `version` see this one. */
export const VERSION = "1.6.18";

/** Settings of one server (every shard holds the same copy). */
export interface Settings {
  /** TCP port (-p); 0 disables TCP. */
  port: number;
  /** UDP port (-U); 0 (default) disables UDP. */
  udpPort: number;
  /** Interfaces to listen on (-l), comma-separated as stock keeps them; null = any. */
  listen: string | null;
  /** Unix socket path (-s); when set, the server listens only there (no TCP, no UDP). */
  unixSocket: string | null;
  /** The Unix socket's access mask (-a, octal as stock reads it); the file gets mask & 0777. */
  unixMask: number;
  /** Item memory limit in bytes (-m, given in megabytes), for the whole server. */
  maxBytes: number;
  /** Maximum simultaneous connections (-c). */
  maxConns: number;
  /** Verbosity (-v, -vv, -vvv; `verbosity` command). */
  verbose: number;
  /** Evict when memory is full (-M turns this off). */
  evictToFree: boolean;
  /** Slab growth factor (-f). */
  factor: number;
  /** Minimum key+value+flags space (-n). */
  chunkSize: number;
  /** Number of shards (-t / --smp). */
  threads: number;
  /** Max requests per event (-R); reported only. */
  reqsPerEvent: number;
  /** CAS enabled (-C disables). */
  useCas: boolean;
  /** Listen backlog (-b). */
  backlog: number;
  /** Binding protocol (-B): auto-negotiate, ascii or binary. */
  protocol: "auto-negotiate" | "ascii" | "binary";
  /** Largest item, in bytes (-I). */
  itemSizeMax: number;
  /** flush_all allowed (-F disables). */
  flushEnabled: boolean;
  /** cachedump / metadump allowed (-X disables). */
  dumpEnabled: boolean;
  /** The `shutdown` command allowed (-A). */
  shutdownCommand: boolean;
  /** Close connections idle for this many seconds (-o idle_timeout); 0 never. */
  idleTimeout: number;
  /** Initial hash table power (-o hashpower); 0 = stock's 16. The table doubles as items grow. */
  hashpowerInit: number;
  /** -o hash_algorithm, as stats settings reports it (the store's own hash is internal). */
  hashAlgorithm: string;
  /** Close new connections at once when over the limit (-o maxconns_fast). */
  maxconnsFast: boolean;
  /** Slab page mover enabled (-o slab_reassign / no_slab_reassign). */
  slabReassign: boolean;
  /** Slab automove level (-o slab_automove=N). */
  slabAutomove: number;
  /**
   * -o slab_automove_ratio / `slabs automove ratio`, as stats settings prints it ("%.2f"):
   * kept and shown only, there is no automover to tune.
   */
  slabAutomoveRatio: string;
  /** Largest slab chunk (-o slab_chunk_max, bytes). */
  slabChunkMax: number;
  /** Stats per key prefix (-D sets the delimiter and turns it on). */
  prefixDelimiter: string;
  detailEnabled: boolean;
  /**
   * `stats sizes` histogram on from the start (-o track_sizes); "cas" when CAS was still on as
   * stock read that option (it takes a CAS id then, even if a later -C turns CAS off).
   */
  trackSizes: "" | "cas" | "nocas";
  /** LRU crawler on (-o lru_crawler / no_lru_crawler). */
  lruCrawler: boolean;
  /** Unix time of rel_time 0 (shared by every shard). */
  processStarted: number;
  /** The process id reported by `stats` (the supervisor's). */
  pid: number;
}

/** Stock memcached's defaults, with 4 threads replaced by the number of shards chosen later. */
export function defaultSettings(): Settings {
  return {
    port: 11211,
    udpPort: 0,
    listen: null,
    unixSocket: null,
    unixMask: 0o700,
    maxBytes: 64 * 1024 * 1024,
    maxConns: 1024,
    verbose: 0,
    evictToFree: true,
    factor: 1.25,
    chunkSize: 48,
    threads: 4,
    reqsPerEvent: 20,
    useCas: true,
    backlog: 1024,
    protocol: "auto-negotiate",
    itemSizeMax: 1024 * 1024,
    flushEnabled: true,
    dumpEnabled: true,
    shutdownCommand: false,
    idleTimeout: 0,
    hashpowerInit: 0,
    hashAlgorithm: "murmur3",
    maxconnsFast: true,
    slabReassign: true,
    slabAutomove: 1,
    slabAutomoveRatio: "0.80",
    slabChunkMax: 512 * 1024,
    prefixDelimiter: ":",
    detailEnabled: false,
    trackSizes: "",
    lruCrawler: true,
    processStarted: Math.floor(Date.now() / 1000) - 62,
    pid: process.pid,
  };
}
