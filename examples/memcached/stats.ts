/**
 * `stats` and its sub-commands, with stock memcached 1.6.18's names, order and counting rules.
 * Counters live per shard (ThreadStats, the store's counters); a `StatsSnapshot` is a plain
 * record of one shard's numbers that can cross shards, and the rendering sums snapshots, so
 * the same code answers for one shard or many.
 */
import { ascii } from "./out.ts";
import { parsed, parseU32 } from "./numbers.ts";
import { CS, F_KEY_BINARY } from "./store.ts";
import type { Engine } from "./engine.ts";
import type { Session } from "./session.ts";
import { tokIs, tokStr } from "./text.ts";
import { VERSION } from "./settings.ts";
import { murmur3 } from "./hash.ts";

/** Where stats lines go: text ("STAT k v") or binary packets. */
export interface StatsSink {
  add(key: string, value: string): void;
  end(): void;
}

class TextSink implements StatsSink {
  constructor(private readonly s: Session) {}
  add(key: string, value: string): void {
    this.s.out.str(value === "" ? `STAT ${key}\r\n` : `STAT ${key} ${value}\r\n`);
  }
  end(): void {
    this.s.out.str("END\r\n");
  }
}

/** One shard's counters as plain numbers (summed across shards by the renderer). */
export interface StatsSnapshot {
  thread: Record<string, number>;
  store: Record<string, number>;
  classStats: number[];
  classPages: number[];
  freeChunks: number[];
  tailAge: number[];
  /** `stats sizes`: [bucket, count, ...] of the nonzero buckets, or null while off. */
  sizes: number[] | null;
}

/**
 * Stock counts its listening sockets in total_connections until the first `stats reset`, which
 * zeroes the count. The engine's counters get a marker the first time stats sees them; reset
 * zeroes it with them (ThreadStats.reset clears every own counter), so the listeners stop
 * being added. (`stats reset` marks the engine before resetting, so a reset that comes before
 * any stats read is seen too.)
 */
const LISTENERS_COUNTED = "listeners_counted";
const marked = new WeakSet<Engine>();

function markListenersCounted(engine: Engine): void {
  if (marked.has(engine)) return;
  marked.add(engine);
  (engine.stats as unknown as Record<string, number>)[LISTENERS_COUNTED] = 1;
}

/** stock's stats_reset (text `stats reset`, binary STAT reset): counters and prefix stats. */
export function resetAllStats(engine: Engine): void {
  markListenersCounted(engine);
  engine.resetStats();
  engine.prefixStats.clear();
}

/** Takes a snapshot of an engine's counters. Cost: a few microseconds. */
export function snapshot(engine: Engine): StatsSnapshot {
  markListenersCounted(engine);
  const st = engine.store;
  const thread: Record<string, number> = {};
  for (const [k, v] of Object.entries(engine.stats)) thread[k] = v as number;
  const n = st.large + 1;
  const freeChunks: number[] = [];
  const tailAge: number[] = [];
  for (let c = 0; c < n; c++) {
    freeChunks.push(c === 0 ? 0 : st.freeChunks(c));
    tailAge.push(c === 0 ? 0 : st.tailAge(c));
  }
  return {
    thread,
    store: {
      currItems: st.currItems,
      currBytes: st.currBytes,
      totalItems: st.totalItems,
      getExpired: st.getExpired,
      getFlushed: st.getFlushed,
      slabsMoved: st.slabsMoved,
      slabReassignEvictionsNomem: st.slabReassignEvictionsNomem,
      slabReassignRescues: st.slabReassignRescues,
      globalPagePool: st.globalPagePool,
      crawlerStarts: st.crawlerStarts,
      hashPower: st.hashPower,
      hashBytes: st.hashBytes,
      hashExpanding: st.hashExpanding ? 1 : 0,
      pagesMalloced: st.pagesMalloced,
    },
    classStats: Array.from(st.classStats),
    classPages: Array.from(st.classPages),
    freeChunks,
    tailAge,
    sizes: sizesOf(st.sizesHist),
  };
}

function sizesOf(hist: Uint32Array | null): number[] | null {
  if (hist === null) return null;
  const pairs: number[] = [];
  for (let i = 0; i < hist.length; i++) if (hist[i] !== 0) pairs.push(i, hist[i]!);
  return pairs;
}

/** Adds the shards' histograms (each a uint32 count, as stock's: a sum wraps as one would). */
function mergeSizes(snaps: StatsSnapshot[]): number[] | null {
  if (snaps.every((s) => s.sizes === null)) return null;
  const sums = new Map<number, number>();
  for (const s of snaps) {
    const pairs = s.sizes ?? [];
    for (let i = 0; i < pairs.length; i += 2) sums.set(pairs[i]!, ((sums.get(pairs[i]!) ?? 0) + pairs[i + 1]!) >>> 0);
  }
  const pairs: number[] = [];
  for (const [bucket, count] of [...sums].sort((a, b) => a[0] - b[0])) if (count !== 0) pairs.push(bucket, count);
  return pairs;
}

/** Sums snapshots (ages take the maximum). */
export function merge(snaps: StatsSnapshot[]): StatsSnapshot {
  const first = snaps[0]!;
  const sum = (key: "thread" | "store"): Record<string, number> => {
    const r: Record<string, number> = {};
    for (const s of snaps) for (const [k, v] of Object.entries(s[key])) r[k] = (r[k] ?? 0) + v;
    return r;
  };
  const addArr = (key: "classStats" | "classPages" | "freeChunks"): number[] =>
    first[key].map((_, i) => snaps.reduce((a, s) => a + s[key][i]!, 0));
  const store = sum("store");
  store.hashPower = Math.max(...snaps.map((s) => s.store.hashPower!));
  // One table as stock has one (every shard's is as large): not the sum.
  store.hashBytes = Math.max(...snaps.map((s) => s.store.hashBytes!));
  return {
    thread: sum("thread"),
    store,
    classStats: addArr("classStats"),
    classPages: addArr("classPages"),
    freeChunks: addArr("freeChunks"),
    tailAge: first.tailAge.map((_, i) => Math.max(...snaps.map((s) => s.tailAge[i]!))),
    sizes: mergeSizes(snaps),
  };
}

/** One prefix's counters (stock's PREFIX_STATS). */
interface PrefixEntry {
  prefix: string;
  get: number;
  hit: number;
  set: number;
  del: number;
}

/** Stock's PREFIX_HASH_SIZE. */
const PREFIX_BUCKETS = 256;

/**
 * Per-key-prefix counters (`stats detail`, -D), kept as stock's stats_prefix.c keeps them: a
 * table of 256 buckets by the prefix's hash (murmur3, stock's default hash_algorithm), each a
 * chain with the newest prefix first, dumped bucket by bucket. Stock's lookup compares with
 * strncmp(entry, key, length), so a key's prefix also matches an entry of the same bucket that
 * merely starts with it ("a" counts under "a122" when both hash to one bucket): so here too.
 */
export class PrefixStats {
  private readonly buckets: (PrefixEntry[] | undefined)[] = new Array(PREFIX_BUCKETS);

  private find(buf: Uint8Array, off: number, len: number, delimiter: number): PrefixEntry | null {
    let n = 0;
    while (n < len && buf[off + n] !== delimiter && buf[off + n] !== 0) n++;
    if (n === len || buf[off + n] === 0) return null;
    let prefix = "";
    for (let i = 0; i < n; i++) prefix += String.fromCharCode(buf[off + i]!);
    const h = murmur3(buf, off, n) % PREFIX_BUCKETS;
    let chain = this.buckets[h];
    if (chain === undefined) chain = this.buckets[h] = [];
    for (const e of chain) if (e.prefix.startsWith(prefix)) return e;
    const e = { prefix, get: 0, hit: 0, set: 0, del: 0 };
    chain.unshift(e);
    return e;
  }

  recordGet(buf: Uint8Array, off: number, len: number, delimiter: number, hit: boolean): void {
    const p = this.find(buf, off, len, delimiter);
    if (p) {
      p.get++;
      if (hit) p.hit++;
    }
  }
  recordSet(buf: Uint8Array, off: number, len: number, delimiter: number): void {
    const p = this.find(buf, off, len, delimiter);
    if (p) p.set++;
  }
  recordDelete(buf: Uint8Array, off: number, len: number, delimiter: number): void {
    const p = this.find(buf, off, len, delimiter);
    if (p) p.del++;
  }
  /** stock's stats_prefix_dump text. */
  dump(): string {
    let s = "";
    for (const chain of this.buckets) {
      if (chain === undefined) continue;
      for (const p of chain) s += `PREFIX ${p.prefix} get ${p.get} hit ${p.hit} set ${p.set} del ${p.del}\r\n`;
    }
    return s + "END\r\n";
  }
  clear(): void {
    this.buckets.fill(undefined);
  }
}

const RESET = ascii("RESET\r\n");
const ERROR = ascii("ERROR\r\n");

/** The text `stats` command (stock's process_stat). */
export function processStats(s: Session, buf: Uint8Array): void {
  const nt = s.ntokens;
  if (nt === 2) return renderStats(s, "", new TextSink(s));
  const sub = tokStr(s, buf, 1);
  if (sub === "reset") {
    resetAllStats(s.engine);
    s.out.put(RESET);
    return;
  }
  if (sub === "detail") {
    const arg = nt < 4 ? "" : tokStr(s, buf, 2);
    if (arg === "on") {
      s.engine.settings.detailEnabled = true;
      s.out.str("OK\r\n");
    } else if (arg === "off") {
      s.engine.settings.detailEnabled = false;
      s.out.str("OK\r\n");
    } else if (arg === "dump") {
      s.out.str(s.engine.prefixStats.dump());
    } else {
      s.out.str("CLIENT_ERROR usage: stats detail on|off|dump\r\n");
    }
    return;
  }
  if (sub === "settings") return renderStats(s, "settings", new TextSink(s));
  if (sub === "cachedump") {
    if (!s.engine.settings.dumpEnabled) return void s.out.str("CLIENT_ERROR stats cachedump not allowed\r\n");
    if (nt < 5) return void s.out.str("CLIENT_ERROR bad command line\r\n");
    if (!parseU32(buf, s.tokS[2]!, s.tokE[2]!)) return void s.out.str("CLIENT_ERROR bad command line format\r\n");
    const id = parsed.num;
    if (!parseU32(buf, s.tokS[3]!, s.tokE[3]!)) return void s.out.str("CLIENT_ERROR bad command line format\r\n");
    const limit = parsed.num;
    if (id >= 64) return void s.out.str("CLIENT_ERROR Illegal slab id\r\n");
    return cachedump(s, id, limit);
  }
  if (sub === "conns") {
    const sink = new TextSink(s);
    s.engine.connStats?.(sink);
    sink.end();
    return;
  }
  if (tokIs(s, buf, 1, ITEMS) || tokIs(s, buf, 1, SLABS) || sub === "sizes" || sub === "sizes_enable" || sub === "sizes_disable") {
    return renderStats(s, sub, new TextSink(s));
  }
  // Debian's stock is built with extstore; without an external store configured it lists nothing.
  if (sub === "extstore") {
    s.out.str("END\r\n");
    return;
  }
  s.out.put(ERROR);
}

const ITEMS = ascii("items");
const SLABS = ascii("slabs");

function cachedump(s: Session, id: number, limit: number): void {
  const store = s.store;
  let shown = 0;
  let bytes = 0;
  if (id >= 1 && id <= store.large) {
    for (const ref of store.lruItems(id)) {
      if (limit !== 0 && shown >= limit) break;
      if (store.itFlags(ref) & F_KEY_BINARY) continue;
      const exp = store.exptime(ref);
      let key = "";
      for (let i = 0; i < store.nkey(ref); i++) key += String.fromCharCode(store.mem[store.keyOffset(ref) + i]!);
      const line = `ITEM ${key} [${store.nbytes(ref) - 2} b; ${exp === 0 ? 0 : exp + store.clock.processStarted} s]\r\n`;
      if (bytes + line.length + 6 > 2 * 1024 * 1024) break;
      s.out.str(line);
      bytes += line.length;
      shown++;
    }
  }
  s.out.str("END\r\n");
}

/**
 * Renders one stats group ("" general, "settings", "items", "slabs", "sizes"...) from this
 * shard's counters, or from `snaps` (every shard's) when given.
 */
export function renderStats(s: Session, kind: string, sink: StatsSink, snaps?: StatsSnapshot[]): void {
  const engine = s.engine;
  const snap = snaps ? merge(snaps) : snapshot(engine);
  switch (kind) {
    case "":
      general(engine, snap, sink);
      break;
    case "settings":
      settingsStats(engine, sink);
      break;
    case "items":
      items(engine, snap, sink);
      break;
    case "slabs":
      slabs(engine, snap, sink);
      break;
    case "sizes":
      sizes(snap, sink);
      break;
    // stock's item_stats_sizes_enable / _disable: no END (text) or empty packet (binary) follows.
    case "sizes_enable":
      if (!engine.settings.useCas) {
        sink.add("sizes_status", "error");
        sink.add("sizes_error", "cas_support_disabled");
      } else {
        engine.store.sizesInit();
        sink.add("sizes_status", "enabled");
      }
      return;
    case "sizes_disable":
      engine.store.sizesHist = null;
      sink.add("sizes_status", "disabled");
      return;
  }
  sink.end();
}

/** stock's item_stats_sizes: the nonzero 32-byte buckets of the histogram (every shard's, summed). */
function sizes(snap: StatsSnapshot, sink: StatsSink): void {
  const pairs = snap.sizes;
  if (pairs === null) return sink.add("sizes_status", "disabled");
  for (let i = 0; i < pairs.length; i += 2) sink.add(String(pairs[i]! * 32), String(pairs[i + 1]));
}

function classSum(snap: StatsSnapshot, engine: Engine, slot: CS): number {
  let total = 0;
  for (let c = 1; c <= engine.store.large; c++) total += snap.classStats[c * CS.COUNT + slot]!;
  return total;
}

function general(engine: Engine, snap: StatsSnapshot, sink: StatsSink): void {
  const t = snap.thread;
  const st = snap.store;
  const settings = engine.settings;
  const now = engine.clock.now;
  const usage = process.cpuUsage();
  const secs = (us: number): string => `${Math.floor(us / 1e6)}.${String(us % 1e6).padStart(6, "0")}`;
  const add = (k: string, v: number | string): void => sink.add(k, String(v));
  add("pid", settings.pid);
  add("uptime", now - 60);
  add("time", engine.clock.unixNow());
  add("version", VERSION);
  add("libevent", "shoal-io_uring");
  add("pointer_size", 64);
  add("rusage_user", secs(usage.user));
  add("rusage_system", secs(usage.system));
  add("max_connections", settings.maxConns);
  // Stock's counts include its listening sockets, and curr_connections subtracts one;
  // total_connections counts them only until a stats reset.
  const listening = engine.listenConns;
  add("curr_connections", listening > 0 ? t.curr_conns! + listening - 1 : t.curr_conns!);
  add("total_connections", t.total_conns! + ((t[LISTENERS_COUNTED] ?? 0) > 0 ? listening : 0));
  if (settings.maxconnsFast) add("rejected_connections", t.rejected_conns!);
  add("connection_structures", t.conn_structs! + listening);
  add("response_obj_oom", 0);
  add("response_obj_count", 0);
  add("response_obj_bytes", 0);
  add("read_buf_count", 0);
  add("read_buf_bytes", 0);
  add("read_buf_bytes_free", 0);
  add("read_buf_oom", 0);
  // Stock reserves 5 descriptors per worker thread (its event base and notify pipe).
  add("reserved_fds", 5 * settings.threads);
  add("cmd_get", t.get_cmds!);
  add("cmd_set", classSum(snap, engine, CS.SET_CMDS));
  add("cmd_flush", t.flush_cmds!);
  add("cmd_touch", t.touch_cmds!);
  add("cmd_meta", t.meta_cmds!);
  add("get_hits", classSum(snap, engine, CS.GET_HITS));
  add("get_misses", t.get_misses!);
  add("get_expired", st.getExpired!);
  add("get_flushed", st.getFlushed!);
  add("delete_misses", t.delete_misses!);
  add("delete_hits", classSum(snap, engine, CS.DELETE_HITS));
  add("incr_misses", t.incr_misses!);
  add("incr_hits", classSum(snap, engine, CS.INCR_HITS));
  add("decr_misses", t.decr_misses!);
  add("decr_hits", classSum(snap, engine, CS.DECR_HITS));
  add("cas_misses", t.cas_misses!);
  add("cas_hits", classSum(snap, engine, CS.CAS_HITS));
  add("cas_badval", classSum(snap, engine, CS.CAS_BADVAL));
  add("touch_hits", classSum(snap, engine, CS.TOUCH_HITS));
  add("touch_misses", t.touch_misses!);
  add("store_too_large", t.store_too_large!);
  add("store_no_memory", t.store_no_memory!);
  add("auth_cmds", t.auth_cmds!);
  add("auth_errors", t.auth_errors!);
  if (settings.idleTimeout) add("idle_kicks", t.idle_kicks!);
  add("bytes_read", t.bytes_read!);
  add("bytes_written", t.bytes_written!);
  add("limit_maxbytes", settings.maxBytes);
  // Summed over shards: the server accepts while no shard has stopped at its limit.
  add("accepting_conns", t.accept_disabled! > 0 ? 0 : 1);
  add("listen_disabled_num", t.listen_disabled_num!);
  add("time_in_listen_disabled_us", t.time_in_listen_disabled_us!);
  add("threads", settings.threads);
  add("conn_yields", t.conn_yields!);
  add("hash_power_level", st.hashPower!);
  add("hash_bytes", st.hashBytes!);
  add("hash_is_expanding", st.hashExpanding! > 0 ? 1 : 0);
  if (settings.slabReassign) {
    add("slab_reassign_rescues", st.slabReassignRescues!);
    add("slab_reassign_chunk_rescues", 0);
    add("slab_reassign_evictions_nomem", st.slabReassignEvictionsNomem!);
    add("slab_reassign_inline_reclaim", 0);
    add("slab_reassign_busy_items", 0);
    add("slab_reassign_busy_deletes", 0);
    add("slab_reassign_running", 0);
    add("slabs_moved", st.slabsMoved!);
  }
  if (settings.lruCrawler) {
    add("lru_crawler_running", 0);
    add("lru_crawler_starts", st.crawlerStarts!);
  }
  // Stock prints these with its LRU maintainer (on by default); our single-list LRU has no
  // maintainer thread, so nothing juggles or moves between segments (README: Differences).
  add("lru_maintainer_juggles", 0);
  add("malloc_fails", 0);
  add("log_worker_dropped", 0);
  add("log_worker_written", 0);
  add("log_watcher_skipped", 0);
  add("log_watcher_sent", 0);
  add("log_watchers", 0);
  add("unexpected_napi_ids", 0);
  add("round_robin_fallback", 0);
  add("bytes", st.currBytes!);
  add("curr_items", st.currItems!);
  add("total_items", st.totalItems!);
  add("slab_global_page_pool", st.globalPagePool!);
  add("expired_unfetched", classSum(snap, engine, CS.EXPIRED_UNFETCHED));
  add("evicted_unfetched", classSum(snap, engine, CS.EVICTED_UNFETCHED));
  add("evicted_active", classSum(snap, engine, CS.EVICTED_ACTIVE));
  add("evictions", classSum(snap, engine, CS.EVICTED));
  add("reclaimed", classSum(snap, engine, CS.RECLAIMED));
  add("crawler_reclaimed", classSum(snap, engine, CS.CRAWLER_RECLAIMED));
  add("crawler_items_checked", classSum(snap, engine, CS.CRAWLER_ITEMS_CHECKED));
  add("lrutail_reflocked", classSum(snap, engine, CS.LRUTAIL_REFLOCKED));
  // One list per class: no hot/warm/cold segments to move between. Active items the tail
  // search sends back to the head are moves within the LRU; allocations that had to pull
  // from the tail (evict or reclaim) to get memory are direct reclaims, as in stock.
  add("moves_to_cold", 0);
  add("moves_to_warm", 0);
  add("moves_within_lru", classSum(snap, engine, CS.MOVES_WITHIN_LRU));
  add("direct_reclaims", classSum(snap, engine, CS.DIRECT_RECLAIMS));
  add("lru_bumps_dropped", 0);
}

function settingsStats(engine: Engine, sink: StatsSink): void {
  const s = engine.settings;
  const add = (k: string, v: number | string): void => sink.add(k, String(v));
  add("maxbytes", s.maxBytes);
  add("maxconns", s.maxConns);
  add("tcpport", s.port);
  add("udpport", s.udpPort);
  add("inter", s.listen ?? "NULL");
  add("verbosity", s.verbose);
  add("oldest", engine.store.oldestLive);
  add("evictions", s.evictToFree ? "on" : "off");
  add("domain_socket", s.unixSocket ?? "NULL");
  add("umask", (s.unixMask >>> 0).toString(8));
  add("shutdown_command", s.shutdownCommand ? "yes" : "no");
  add("growth_factor", s.factor.toFixed(2));
  add("chunk_size", s.chunkSize);
  add("num_threads", s.threads);
  add("num_threads_per_udp", s.threads);
  add("stat_key_prefix", s.prefixDelimiter);
  add("detail_enabled", s.detailEnabled ? "yes" : "no");
  add("reqs_per_event", s.reqsPerEvent);
  add("cas_enabled", s.useCas ? "yes" : "no");
  add("tcp_backlog", s.backlog);
  add("binding_protocol", s.protocol);
  add("auth_enabled_sasl", "no");
  add("auth_enabled_ascii", "no");
  add("item_size_max", s.itemSizeMax);
  add("maxconns_fast", s.maxconnsFast ? "yes" : "no");
  add("hashpower_init", s.hashpowerInit);
  add("slab_reassign", s.slabReassign ? "yes" : "no");
  add("slab_automove", s.slabAutomove);
  add("slab_automove_ratio", s.slabAutomoveRatio);
  add("slab_automove_window", 30);
  add("slab_chunk_max", s.slabChunkMax);
  add("lru_crawler", s.lruCrawler ? "yes" : "no");
  add("lru_crawler_sleep", 100);
  add("lru_crawler_tocrawl", 0);
  add("tail_repair_time", 0);
  add("flush_enabled", s.flushEnabled ? "yes" : "no");
  add("dump_enabled", s.dumpEnabled ? "yes" : "no");
  add("hash_algorithm", s.hashAlgorithm ?? "murmur3");
  add("lru_maintainer_thread", "no");
  add("lru_segmented", "no");
  add("hot_lru_pct", 20);
  add("warm_lru_pct", 40);
  add("hot_max_factor", "0.20");
  add("warm_max_factor", "2.00");
  add("temp_lru", "no");
  add("temporary_ttl", 61);
  add("idle_timeout", s.idleTimeout);
  add("watcher_logbuf_size", 262144);
  add("worker_logbuf_size", 65536);
  add("read_buf_mem_limit", 0);
  add("track_sizes", engine.store.sizesHist !== null ? "yes" : "no");
  add("inline_ascii_response", "no");
  // Debian's 1.6.18 prints no drop_privileges (built without seccomp); no extstore or TLS
  // lines either (README: Differences).
  add("num_napi_ids", "(null)");
  add("memory_file", "(null)");
}

function items(engine: Engine, snap: StatsSnapshot, sink: StatsSink): void {
  const st = engine.store;
  for (let c = 1; c <= st.large; c++) {
    const b = c * CS.COUNT;
    const number = snap.classStats[b + CS.NUMBER]!;
    if (number === 0) continue;
    const add = (k: string, v: number): void => sink.add(`items:${c}:${k}`, String(v));
    add("number", number);
    add("age", snap.tailAge[c]!);
    add("mem_requested", snap.classStats[b + CS.MEM_REQUESTED]!);
    add("evicted", snap.classStats[b + CS.EVICTED]!);
    add("evicted_nonzero", snap.classStats[b + CS.EVICTED_NONZERO]!);
    add("evicted_time", snap.classStats[b + CS.EVICTED_TIME]!);
    add("outofmemory", snap.classStats[b + CS.OUTOFMEMORY]!);
    add("tailrepairs", 0);
    add("reclaimed", snap.classStats[b + CS.RECLAIMED]!);
    add("expired_unfetched", snap.classStats[b + CS.EXPIRED_UNFETCHED]!);
    add("evicted_unfetched", snap.classStats[b + CS.EVICTED_UNFETCHED]!);
    add("crawler_reclaimed", snap.classStats[b + CS.CRAWLER_RECLAIMED]!);
    add("crawler_items_checked", snap.classStats[b + CS.CRAWLER_ITEMS_CHECKED]!);
    add("lrutail_reflocked", snap.classStats[b + CS.LRUTAIL_REFLOCKED]!);
  }
}

function slabs(engine: Engine, snap: StatsSnapshot, sink: StatsSink): void {
  const st = engine.store;
  let active = 0;
  for (let c = 1; c <= st.large; c++) {
    const pages = snap.classPages[c]!;
    if (pages === 0) continue;
    const b = c * CS.COUNT;
    const perSlab = st.perSlab[c]!;
    // The large class's "chunks" are its pages (free: pages no item holds).
    const totalChunks = pages * perSlab;
    const free = snap.freeChunks[c]!;
    const add = (k: string, v: number): void => sink.add(`${c}:${k}`, String(v));
    add("chunk_size", c === st.large ? st.pageSize : st.classSize[c]!);
    add("chunks_per_page", perSlab);
    add("total_pages", pages);
    add("total_chunks", totalChunks);
    add("used_chunks", totalChunks - free);
    add("free_chunks", free);
    add("free_chunks_end", 0);
    add("get_hits", snap.classStats[b + CS.GET_HITS]!);
    add("cmd_set", snap.classStats[b + CS.SET_CMDS]!);
    add("delete_hits", snap.classStats[b + CS.DELETE_HITS]!);
    add("incr_hits", snap.classStats[b + CS.INCR_HITS]!);
    add("decr_hits", snap.classStats[b + CS.DECR_HITS]!);
    add("cas_hits", snap.classStats[b + CS.CAS_HITS]!);
    add("cas_badval", snap.classStats[b + CS.CAS_BADVAL]!);
    add("touch_hits", snap.classStats[b + CS.TOUCH_HITS]!);
    active++;
  }
  sink.add("active_slabs", String(active));
  sink.add("total_malloced", String(snap.store.pagesMalloced! * st.pageSize));
}
