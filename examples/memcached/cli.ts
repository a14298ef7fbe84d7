/**
 * memcached's command line (getopt_long rules, as stock 1.6.18 parses it): short options
 * with attached or separate values (`-p11211`, `-p 11211`), grouped flags (`-vv`, `-vvd`),
 * long options with `=` or a separate value and unambiguous prefixes (`--port=1`, `--thr 2`),
 * and `-o` sub-options. `--smp N` is Shoal's spelling of `-t N`. Options stock has but that make
 * no sense here (daemon mode, SASL, TLS, large pages, ...) are refused with a message saying so;
 * unknown options are refused by name.
 */
import { atof, formatParsedFixed2 } from "./numbers.ts";
import { VERSION, defaultSettings, type Settings } from "./settings.ts";

/**
 * A bad command line; `exitCode` is what stock would exit with (1, 64 = EX_USAGE, 71 = EX_OSERR).
 * A getopt error (unknown option, missing value, ambiguous prefix) is printed as glibc's getopt
 * and stock print it: "memcached: <message>" then `Illegal argument "?"`, exit 1.
 */
export class UsageError extends Error {
  readonly exitCode: number;
  readonly getopt: boolean;
  constructor(message: string, exitCode = 64, getopt = false) {
    super(message);
    this.name = "UsageError";
    this.exitCode = exitCode;
    this.getopt = getopt;
  }
}

/** glibc getopt's complaint; stock then prints `Illegal argument "?"` and exits 1. */
function getoptError(message: string): UsageError {
  return new UsageError(message, 1, true);
}

/** The lines main prints for a UsageError (stderr), as stock would. */
export function usageErrorText(e: UsageError): string {
  return e.getopt ? `memcached: ${e.message}\nIllegal argument "?"\n` : `${e.message}\n`;
}

/** What the command line asks for. */
export interface CommandLine {
  settings: Settings;
  /** -t / --smp given (otherwise: one shard per CPU). */
  threadsGiven: boolean;
  /** -h, -V or -i: print and exit. */
  action: "run" | "help" | "version" | "license";
  /** -u: the user to switch to when run as root (main.ts), as stock. */
  user: string | null;
  /** -p / -U given: with -U N alone, stock listens on TCP port N too. */
  tcpGiven: boolean;
  udpGiven: boolean;
  /** -S: refused by checkLate() (stock's SASL set-up fails after it set the limits and switched user). */
  sasl: boolean;
  /** Warnings to print (options accepted but without effect here). */
  warnings: string[];
}

interface OptDef {
  short: string;
  long: string[];
  arg: boolean;
}

const OPTIONS: OptDef[] = [
  { short: "a", long: ["unix-mask"], arg: true },
  { short: "A", long: ["enable-shutdown"], arg: false },
  { short: "Z", long: ["enable-ssl"], arg: false },
  { short: "p", long: ["port"], arg: true },
  { short: "s", long: ["unix-socket"], arg: true },
  { short: "U", long: ["udp-port"], arg: true },
  { short: "m", long: ["memory-limit"], arg: true },
  { short: "M", long: ["disable-evictions"], arg: false },
  { short: "c", long: ["conn-limit"], arg: true },
  { short: "k", long: ["lock-memory"], arg: false },
  { short: "h", long: ["help"], arg: false },
  { short: "i", long: ["license"], arg: false },
  { short: "V", long: ["version"], arg: false },
  { short: "r", long: ["enable-coredumps"], arg: false },
  { short: "v", long: ["verbose"], arg: false },
  { short: "d", long: ["daemon"], arg: false },
  { short: "l", long: ["listen"], arg: true },
  { short: "u", long: ["user"], arg: true },
  { short: "P", long: ["pidfile"], arg: true },
  { short: "f", long: ["slab-growth-factor"], arg: true },
  { short: "n", long: ["slab-min-size"], arg: true },
  { short: "t", long: ["threads", "smp"], arg: true },
  { short: "D", long: [], arg: true },
  { short: "L", long: ["enable-largepages"], arg: false },
  { short: "R", long: ["max-reqs-per-event"], arg: true },
  { short: "C", long: ["disable-cas"], arg: false },
  { short: "b", long: ["listen-backlog"], arg: true },
  { short: "B", long: ["protocol"], arg: true },
  { short: "I", long: ["max-item-size"], arg: true },
  { short: "S", long: ["enable-sasl"], arg: false },
  { short: "F", long: ["disable-flush-all"], arg: false },
  { short: "X", long: ["disable-dumping"], arg: false },
  { short: "W", long: ["disable-watch"], arg: false },
  { short: "Y", long: ["auth-file"], arg: true },
  { short: "e", long: ["memory-file"], arg: true },
  { short: "o", long: ["extended"], arg: true },
  { short: "N", long: ["napi-ids"], arg: true },
];

const byShort = new Map(OPTIONS.map((o) => [o.short, o]));

/** C's atoi: leading whitespace, sign, digits; anything else ends it (0 if no digits). */
export function atoi(s: string): number {
  const m = /^[\s]*([+-]?\d+)/.exec(s);
  if (!m) return 0;
  const v = Number.parseInt(m[1]!, 10);
  return Math.max(-2147483648, Math.min(2147483647, v));
}

/**
 * -a's value as stock reads it: strtol(s, NULL, 8) (leading whitespace, sign, octal digits;
 * anything else ends it, 0 if none; saturated at the long range), stored in an int.
 */
export function strtolOctal(s: string): number {
  const m = /^\s*([+-]?)([0-7]+)/.exec(s);
  if (!m) return 0;
  const max = (1n << 63n) - 1n;
  let v = BigInt(`0o${m[2]}`);
  if (m[1] === "-") v = v > max + 1n ? -(max + 1n) : -v;
  else if (v > max) v = max;
  return Number(BigInt.asIntN(32, v));
}

function strictInt(name: string, s: string, min: number, max = 2 ** 31 - 1): number {
  if (!/^\s*[+-]?\d+\s*$/.test(s)) throw new UsageError(`${name}: expected an integer, got "${s}"`);
  const v = Number.parseInt(s, 10);
  if (v < min || v > max) throw new UsageError(`${name}: ${v} is out of range (${min}..${max})`);
  return v;
}

/** -I's value: bytes, or k/m suffixed (stock's rule: atoi of the rest times 1024 or 1048576). */
function parseSize(s: string): number {
  const unit = s.slice(-1);
  if ("kKmM".includes(unit) && s.length > 1) {
    const n = atoi(s.slice(0, -1));
    return unit === "k" || unit === "K" ? n * 1024 : n * 1024 * 1024;
  }
  return atoi(s);
}

/**
 * Parses memcached's arguments. Throws UsageError for anything stock rejects, for unknown
 * options, and for options this server cannot honour.
 */
export function parseCommandLine(argv: readonly string[]): CommandLine {
  const settings = defaultSettings();
  const cl: CommandLine = {
    settings,
    threadsGiven: false,
    action: "run",
    user: null,
    tcpGiven: false,
    udpGiven: false,
    sasl: false,
    warnings: [],
  };
  let i = 0;
  const take = (opt: string, attached: string | undefined): string => {
    if (attached !== undefined) return attached;
    if (i >= argv.length) {
      throw getoptError(opt.startsWith("--") ? `option '${opt}' requires an argument` : `option requires an argument -- '${opt.slice(1)}'`);
    }
    return argv[i++]!;
  };
  while (i < argv.length) {
    const a = argv[i++]!;
    // "--" ends the options; what follows, like any argument that is not an option, is
    // ignored (GNU getopt moves such arguments to the end, and stock never reads them).
    if (a === "--") break;
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      const name = a.slice(2, eq < 0 ? undefined : eq);
      const exact = OPTIONS.filter((o) => o.long.includes(name));
      const matches = exact.length > 0 ? exact : OPTIONS.filter((o) => o.long.some((l) => l.startsWith(name)));
      if (name === "" || matches.length === 0) throw getoptError(`unrecognized option '--${name}'`);
      if (matches.length > 1) {
        const names = matches.map((m) => `'--${m.long.find((l) => l.startsWith(name))}'`);
        throw getoptError(`option '--${name}' is ambiguous; possibilities: ${names.join(" ")}`);
      }
      const def = matches[0]!;
      let value: string | undefined;
      const long = def.long.find((l) => l.startsWith(name))!;
      if (def.arg) value = take(`--${long}`, eq < 0 ? undefined : a.slice(eq + 1));
      else if (eq >= 0) {
        if (def.short === "v") {
          for (let k = 0; k < Math.max(1, atoi(a.slice(eq + 1))); k++) apply(cl, "v", undefined);
          continue;
        }
        throw getoptError(`option '--${long}' doesn't allow an argument`);
      }
      apply(cl, def.short, value);
      continue;
    }
    if (a.startsWith("-") && a.length > 1) {
      for (let k = 1; k < a.length; k++) {
        const c = a[k]!;
        const def = byShort.get(c);
        if (!def) throw getoptError(`invalid option -- '${c}'`);
        if (def.arg) {
          const rest = a.slice(k + 1);
          apply(cl, c, take(`-${c}`, rest === "" ? undefined : rest));
          break;
        }
        apply(cl, c, undefined);
      }
      continue;
    }
  }
  if (cl.udpGiven && settings.udpPort !== 0 && !cl.tcpGiven) settings.port = settings.udpPort;
  validate(cl);
  return cl;
}

/**
 * What stock finds wrong only once it has set the descriptor limit and switched user (main.ts
 * calls this then, so that under a low `ulimit -n` the limit's message comes first, as stock's):
 * -S (its SASL set-up fails, exit 1) and a negative port (its listen fails, EX_OSERR).
 */
export function checkLate(cl: CommandLine): void {
  const s = cl.settings;
  if (cl.sasl) throw new UsageError("This server is not built with SASL support.", 1);
  if (s.port < 0) throw new UsageError(`failed to listen on TCP port ${s.port}: Servname not supported for ai_socktype`, 71);
  if (s.udpPort < 0) throw new UsageError(`failed to listen on UDP port ${s.udpPort}: Servname not supported for ai_socktype`, 71);
}

function apply(cl: CommandLine, c: string, v: string | undefined): void {
  const s = cl.settings;
  switch (c) {
    case "A":
      s.shutdownCommand = true;
      return;
    case "a":
      s.unixMask = strtolOctal(v!);
      return;
    case "p":
      s.port = atoi(v!);
      cl.tcpGiven = true;
      return;
    case "U":
      s.udpPort = atoi(v!);
      cl.udpGiven = true;
      return;
    case "s":
      s.unixSocket = v!;
      return;
    case "m":
      s.maxBytes = atoi(v!) * 1024 * 1024;
      return;
    case "M":
      s.evictToFree = false;
      return;
    case "c":
      s.maxConns = atoi(v!);
      if (s.maxConns <= 0) throw new UsageError("Maximum connections must be greater than 0", 1);
      return;
    case "k":
    case "r":
      cl.warnings.push(`-${c} is accepted and has no effect here`);
      return;
    case "h":
      cl.action = "help";
      return;
    case "i":
      cl.action = "license";
      return;
    case "V":
      cl.action = "version";
      return;
    case "v":
      s.verbose++;
      return;
    case "l":
      if (s.listen === null) s.listen = v!;
      else if (!s.listen.includes(v!)) s.listen = `${s.listen},${v}`;
      return;
    case "d":
      throw new UsageError("-d (daemon mode) is not supported: run it under a service manager instead");
    case "u":
      cl.user = v!;
      return;
    case "P":
      cl.warnings.push("-P is only used with -d, which is not supported; ignored");
      return;
    case "f":
      s.factor = Number.parseFloat(v!);
      if (!(s.factor > 1.0)) throw new UsageError("Factor must be greater than 1", 1);
      return;
    case "n":
      s.chunkSize = atoi(v!);
      if (s.chunkSize === 0) throw new UsageError("Chunk size must be greater than 0", 1);
      return;
    case "t":
      s.threads = atoi(v!);
      if (s.threads <= 0) throw new UsageError("Number of threads must be greater than 0", 1);
      cl.threadsGiven = true;
      return;
    case "D":
      if (!v) throw new UsageError("No delimiter specified", 1);
      s.prefixDelimiter = v[0]!;
      s.detailEnabled = true;
      return;
    case "L":
      throw new UsageError("Cannot enable large pages on this system\n(There is no support as of this version)", 1);
    case "R":
      s.reqsPerEvent = atoi(v!);
      if (s.reqsPerEvent === 0) throw new UsageError("Number of requests per event must be greater than 0", 1);
      return;
    case "C":
      s.useCas = false;
      return;
    case "b":
      s.backlog = atoi(v!);
      return;
    case "B":
      if (v === "auto") s.protocol = "auto-negotiate";
      else if (v === "binary") s.protocol = "binary";
      else if (v === "ascii") s.protocol = "ascii";
      else throw new UsageError(`Invalid value for binding protocol: ${v}\n -- should be one of auto, binary, or ascii`);
      return;
    case "I":
      s.itemSizeMax = parseSize(v!);
      return;
    case "S":
      cl.sasl = true;
      return;
    case "Z":
      throw new UsageError("This server is not built with TLS support.");
    case "F":
      s.flushEnabled = false;
      return;
    case "X":
      s.dumpEnabled = false;
      return;
    case "W":
      return; // watch is accepted anyway and streams nothing
    case "Y":
      throw new UsageError("-Y (ASCII authentication) is not supported by this server");
    case "e":
      throw new UsageError("-e (restartable cache in a memory file) is not supported by this server");
    case "N":
      throw new UsageError("-N (NAPI ID based thread selection) is not supported by this server");
    case "o":
      return extended(cl, v!);
  }
}

/** Stock's words for a missing -o value where they are not "Missing <name> argument". */
const MISSING: Record<string, string> = {
  tail_repair_time: "Missing numeric argument for tail_repair_time",
  lru_crawler_sleep: "Missing lru_crawler_sleep value",
  lru_crawler_tocrawl: "Missing lru_crawler_tocrawl value",
};

/** -o name[=value],name... */
function extended(cl: CommandLine, spec: string): void {
  const s = cl.settings;
  for (const item of spec.split(",")) {
    if (item === "") continue;
    const eq = item.indexOf("=");
    const name = eq < 0 ? item : item.slice(0, eq);
    const value = eq < 0 ? undefined : item.slice(eq + 1);
    /** The value, or stock's complaint (`missing`: its words when not "Missing <name> argument"). */
    const need = (missing = `Missing ${name} argument`): string => {
      if (value === undefined) throw new UsageError(missing, 1);
      return value;
    };
    switch (name) {
      case "maxconns_fast":
        s.maxconnsFast = true;
        break;
      case "no_maxconns_fast":
        s.maxconnsFast = false;
        break;
      case "hashpower":
        s.hashpowerInit = atoi(need("Missing numeric argument for hashpower"));
        if (s.hashpowerInit < 12) throw new UsageError(`Initial hashtable multiplier of ${s.hashpowerInit} is too low`, 1);
        if (s.hashpowerInit > 32) throw new UsageError(`Initial hashtable multiplier of ${s.hashpowerInit} is too high`, 1);
        break;
      case "idle_timeout":
        s.idleTimeout = atoi(need("Missing numeric argument for idle_timeout"));
        break;
      case "slab_chunk_max":
        // Bytes, as stock parses it (its -h says kilobytes; its code takes bytes).
        s.slabChunkMax = atoi(need());
        break;
      case "slab_reassign":
        s.slabReassign = true;
        break;
      case "no_slab_reassign":
        s.slabReassign = false;
        break;
      case "slab_automove":
        s.slabAutomove = value === undefined ? 1 : atoi(value);
        if (s.slabAutomove < 0 || s.slabAutomove > 2) throw new UsageError("slab_automove must be between 0 and 2", 1);
        break;
      case "slab_automove_ratio": {
        // Stock's atof: a value without a number reads 0 and is refused; NaN passes the check.
        const ratio = atof(need());
        // (Stock's words; its test lets 1 through.)
        if (ratio <= 0 || ratio > 1) throw new UsageError("slab_automove_ratio must be > 0 and < 1", 1);
        s.slabAutomoveRatio = formatParsedFixed2(ratio);
        break;
      }
      case "no_slab_automove":
        s.slabAutomove = 0;
        break;
      case "lru_crawler":
        s.lruCrawler = true;
        break;
      case "no_lru_crawler":
        s.lruCrawler = false;
        break;
      case "hash_algorithm": {
        // Stock's choice of hash for its table; ours is internal (keys still go to the same
        // shard and bucket whatever is named), so any of stock's names is taken and reported.
        const algo = need();
        if (algo !== "jenkins" && algo !== "murmur3" && algo !== "xxh3") {
          throw new UsageError("Unknown hash_algorithm option (jenkins, murmur3, xxh3)", 1);
        }
        s.hashAlgorithm = algo;
        break;
      }
      case "track_sizes":
        s.trackSizes = s.useCas ? "cas" : "nocas";
        break;
      case "modern":
      case "no_modern":
      case "lru_maintainer":
      case "no_lru_maintainer":
      case "no_hashexpand":
      case "no_inline_ascii_resp":
      case "inline_ascii_resp":
      case "drop_privileges":
      case "no_drop_privileges":
      case "no_chunked_items":
        cl.warnings.push(`-o ${name}: accepted; this server has a single LRU policy and needs no tuning here`);
        break;
      case "tail_repair_time":
      case "lru_crawler_sleep":
      case "lru_crawler_tocrawl":
      case "hot_lru_pct":
      case "warm_lru_pct":
      case "hot_max_factor":
      case "warm_max_factor":
      case "temporary_ttl":
      case "watcher_logbuf_size":
      case "worker_logbuf_size":
      case "read_buf_mem_limit":
      case "slab_automove_window":
      case "slab_automove_freeratio":
      case "sock_cookie_id":
        need(MISSING[name]);
        cl.warnings.push(`-o ${name}: accepted and ignored (no such tuning here)`);
        break;
      case "slab_sizes":
        throw new UsageError("-o slab_sizes is not supported: use -f and -n", 1);
      default:
        if (name.startsWith("ext_")) throw new UsageError(`-o ${name}: extstore is not supported (items live in memory only)`, 1);
        if (name.startsWith("ssl_")) throw new UsageError(`-o ${name}: TLS is not supported`, 1);
        throw new UsageError(`Illegal suboption "${item}"`, 1);
    }
  }
}

function validate(cl: CommandLine): void {
  const s = cl.settings;
  if (s.itemSizeMax < 1024) throw new UsageError("Item max size cannot be less than 1024 bytes.");
  if (s.itemSizeMax > s.maxBytes / 2) throw new UsageError("Cannot set item size limit higher than 1/2 of memory max.");
  if (s.itemSizeMax > 1024 * 1024 * 1024) throw new UsageError("Cannot set item size limit higher than a gigabyte.");
  if (s.slabChunkMax > s.itemSizeMax) {
    throw new UsageError(`slab_chunk_max (bytes: ${s.slabChunkMax}) cannot be larger than -I (item_size_max ${s.itemSizeMax})`);
  }
  if (s.itemSizeMax % s.slabChunkMax !== 0) {
    throw new UsageError(`-I (item_size_max: ${s.itemSizeMax}) must be evenly divisible by slab_chunk_max (bytes: ${s.slabChunkMax})`);
  }
  if ((1024 * 1024) % s.slabChunkMax !== 0) {
    throw new UsageError(`slab_chunk_max (bytes: ${s.slabChunkMax}) must divide evenly into 1048576 (slab_page_size)`);
  }
  if (s.port > 65535) throw new UsageError(`ERROR: Invalid port number ${s.port}.`);
  // A negative port: stock gets as far as listening, which fails (checkLate).
  // -U above 65535 (with -p given): stock listens on its low 16 bits (70000: UDP port 4464) and
  // reports the number given (stats settings udpport 70000); server.ts binds the same.
  if (s.maxBytes <= 0) throw new UsageError("-m: the memory limit must be at least 1 megabyte");
}

/** Slab page size, and the most pages one shard's arena may span: it is one typed-array view (4 GiB). */
const PAGE_BYTES = 1024 * 1024;
const ARENA_VIEW_PAGES = 4096;

/** Slab classes the store cuts for these settings (the rule of Store's constructor, as stock's slabs_init). */
function slabClasses(s: Settings): number {
  let size = 48 + s.chunkSize;
  let classes = 1; // the last: slab_chunk_max
  while (classes < 63 && size < s.slabChunkMax / s.factor) {
    if (size % 8) size += 8 - (size % 8);
    classes++;
    size = Math.floor(size * s.factor);
  }
  return classes;
}

/**
 * The most memory, in MB, one shard can hold: its store's arena is one view of at most 4 GiB,
 * holding the -m share plus a page per slab class and a largest item's pages of headroom.
 */
export function shardMemoryMaxMb(s: Settings): number {
  return ARENA_VIEW_PAGES - (slabClasses(s) + Math.ceil(s.itemSizeMax / PAGE_BYTES) + 1);
}

/** Throws UsageError when -m split over `shards` gives a shard more than its arena can hold. */
export function checkShardMemory(s: Settings, shards: number): void {
  const shareMb = Math.floor(Math.floor(s.maxBytes / shards) / PAGE_BYTES);
  const maxMb = shardMemoryMaxMb(s);
  if (shareMb <= maxMb) return;
  throw new UsageError(
    `-m ${s.maxBytes / PAGE_BYTES} with -t ${shards} gives each shard ${shareMb} MB; at most ${maxMb} MB per shard here ` +
      `(one shard's memory is one view of at most 4 GiB): use more shards (-t ${Math.ceil(s.maxBytes / PAGE_BYTES / maxMb)} or more)`,
  );
}

/** The -h text: stock's list of options, with what this server does with each. */
export function usage(): string {
  const d = defaultSettings();
  return `memcached ${VERSION} (Shoal: a Seastar-style memcached on Bun)
-p, --port=<num>          TCP port to listen on (default: ${d.port})
-U, --udp-port=<num>      UDP port to listen on (default: 0, off)
-s, --unix-socket=<file>  UNIX socket to listen on (disables network support)
-a, --unix-mask=<mask>    access mask for UNIX socket, in octal (default: 700)
-A, --enable-shutdown     enable ascii "shutdown" command
-l, --listen=<addr>       interface to listen on (default: INADDR_ANY)
-u, --user=<user>         assume identity of <username> (only when run as root)
-m, --memory-limit=<num>  item memory in megabytes (default: ${d.maxBytes / 1048576}), split over the shards
-M, --disable-evictions   return error on memory exhausted instead of evicting
-c, --conn-limit=<num>    max simultaneous connections (default: ${d.maxConns})
-v, --verbose             verbose (print errors/warnings while in event loop)
-vv                       the same as -v here (client commands are not printed)
-h, --help                print this help and exit
-i, --license             print the license and exit
-V, --version             print version and exit
-f, --slab-growth-factor=<num> chunk size growth factor (default: ${d.factor.toFixed(2)})
-n, --slab-min-size=<bytes> min space used for key+value+flags (default: ${d.chunkSize})
-D <char>                 Use <char> as the delimiter between key prefixes and IDs
                          for per-prefix stats (turns "stats detail" on)
-t, --threads=<num>       number of shards (one Bun Worker each; default: one per CPU)
    --smp=<num>           the same as -t
-R, --max-reqs-per-event  requests per event before a connection yields (default: ${d.reqsPerEvent})
-C, --disable-cas         disable use of CAS
-b, --listen-backlog=<num> set the backlog queue limit (default: ${d.backlog})
-B, --protocol=<name>     protocol - one of ascii, binary, or auto (default: auto-negotiate)
-I, --max-item-size=<num> adjusts max item size (default: 1m, min: 1k, max: 1024m)
-F, --disable-flush-all   disable flush_all command
-X, --disable-dumping     disable stats cachedump and lru_crawler metadump
-W, --disable-watch       accepted (watch streams nothing here)
-o, --extended            comma separated list of extended options:
   - maxconns_fast, no_maxconns_fast
   - hashpower=<n>:       initial hash table size (power of two; default: 16, doubles as items grow)
   - idle_timeout=<s>:    close connections idle this long (default: 0, never)
   - slab_chunk_max=<bytes>: largest slab chunk (default: 524288)
   - slab_reassign, no_slab_reassign, slab_automove=<0|1|2>
   - slab_automove_ratio=<ratio>: shown in stats settings (there is no automover to tune)
   - lru_crawler, no_lru_crawler
   - hash_algorithm=<jenkins|murmur3|xxh3>: accepted (the hash is internal)
   stock's tuning sub-options (tail_repair_time, lru_crawler_sleep, hot_lru_pct,
   slab_automove_window, sock_cookie_id, modern, ...) are accepted and ignored; slab_sizes,
   extstore (ext_*), TLS (ssl_*) and unknown sub-options are refused.
Not supported (refused with a message): -d, -L, -S, -Z, -Y, -e, -N. Accepted with no effect: -k, -r.
Arguments that are not options are ignored, as stock ignores them.
`;
}
