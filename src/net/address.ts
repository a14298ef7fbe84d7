/**
 * Socket addresses: the forms users write ("127.0.0.1:80", "[::1]:80", "unix:/run/x.sock",
 * { host, port }), the parsed SocketAddress objects every stack returns, and the kernel's
 * `struct sockaddr` bytes the posix stack hands to io_uring. Parsing and formatting are pure
 * TS (no DNS): a host must be an IP literal, "localhost", or empty (any address).
 */
import { InvalidArgumentError } from "../core/errors.ts";
import { describeValue } from "../core/describe.ts";

/** An IPv4 endpoint. `host` is dotted-quad. */
export interface Ipv4Address {
  readonly family: "ipv4";
  readonly host: string;
  readonly port: number;
}

/** An IPv6 endpoint. `host` is in RFC 5952 form ("::1"), without brackets or zone. */
export interface Ipv6Address {
  readonly family: "ipv6";
  readonly host: string;
  readonly port: number;
  readonly flowInfo: number;
  readonly scopeId: number;
}

/**
 * A Unix domain socket. `path` is a file-system path, or starts with "\0" (shown as "@" by
 * formatAddress) for Linux's abstract namespace. An unbound peer has path "".
 */
export interface UnixAddress {
  readonly family: "unix";
  readonly path: string;
}

/** A parsed socket address, as listeners, connections and datagrams report them. */
export type SocketAddress = Ipv4Address | Ipv6Address | UnixAddress;

/**
 * What listen/connect/send accept: a SocketAddress; "host:port", "[v6]:port" or ":port";
 * "unix:PATH", an absolute path, "@abstract" or "unix:@abstract" (as formatAddress writes it);
 * a port number (any address); or
 * { host?, port } / { path }.
 */
export type AddressInput =
  | SocketAddress
  | string
  | number
  | { readonly host?: string | undefined; readonly port: number; readonly family?: "ipv4" | "ipv6" | undefined }
  | { readonly path: string };

/** Address family numbers of struct sockaddr. */
export const AF_UNIX = 1;
/** IPv4. */
export const AF_INET = 2;
/** IPv6. */
export const AF_INET6 = 10;
/** Bytes reserved for any sockaddr (sizeof(struct sockaddr_storage)). */
export const SOCKADDR_MAX = 128;
const UNIX_PATH_MAX = 108;

function checkPort(port: unknown, what: string): number {
  if (typeof port !== "number" || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new InvalidArgumentError(`${what}: port must be an integer in 0..65535, got ${String(port)}`);
  }
  return port;
}

/** Parses dotted-quad IPv4 into a number, or returns -1. */
export function parseIpv4(s: string): number {
  const parts = s.split(".");
  if (parts.length !== 4) return -1;
  let v = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || (p.length > 1 && p[0] === "0")) return -1;
    const n = Number(p);
    if (n > 255) return -1;
    v = v * 256 + n;
  }
  return v;
}

function formatIpv4(v: number): string {
  return `${(v >>> 24) & 255}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

/** Parses an IPv6 literal (no brackets, no zone) into 8 groups, or returns undefined. */
export function parseIpv6(s: string): Uint16Array | undefined {
  if (s.length < 2 || s.length > 45) return undefined;
  const groups = new Uint16Array(8);
  let body = s;
  let v4 = -1;
  const lastColon = s.lastIndexOf(":");
  if (lastColon < 0) return undefined;
  if (s.indexOf(".", lastColon) >= 0) {
    // An embedded IPv4 tail fills the last two groups.
    v4 = parseIpv4(s.slice(lastColon + 1));
    if (v4 < 0) return undefined;
    body = s.slice(0, lastColon + 1);
    if (!body.endsWith("::")) body = body.slice(0, -1);
  }
  const wanted = v4 >= 0 ? 6 : 8;
  const halves = body.split("::");
  if (halves.length > 2) return undefined;
  const parse = (part: string): number[] | undefined => {
    if (part === "") return [];
    const out: number[] = [];
    for (const g of part.split(":")) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  let head: number[] | undefined;
  let rest: number[] | undefined = [];
  if (halves.length === 2) {
    head = parse(halves[0]!);
    rest = parse(halves[1]!);
    if (!head || !rest || head.length + rest.length >= wanted) return undefined;
  } else {
    head = parse(body);
    if (!head || head.length !== wanted) return undefined;
  }
  groups.set(head, 0);
  groups.set(rest, wanted - rest.length);
  if (v4 >= 0) {
    groups[6] = v4 >>> 16;
    groups[7] = v4 & 0xffff;
  }
  return groups;
}

/** RFC 5952 text for 8 groups: lowercase, longest zero run (>= 2) as "::", IPv4-mapped dotted. */
export function formatIpv6(g: Uint16Array): string {
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `::ffff:${formatIpv4(((g[6]! << 16) | g[7]!) >>> 0)}`;
  }
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number) => Array.from(g.subarray(from, to), (x) => x.toString(16)).join(":");
  if (bestStart < 0) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLen, 8)}`;
}

function ipv4(host: string, port: number): Ipv4Address {
  return { family: "ipv4", host, port };
}

function ipv6(groups: Uint16Array, port: number, scopeId = 0, flowInfo = 0): Ipv6Address {
  return { family: "ipv6", host: formatIpv6(groups), port, flowInfo, scopeId };
}

function unix(path: string, what: string): UnixAddress {
  if (typeof path !== "string") throw new InvalidArgumentError(`${what}: a Unix socket path must be a string`);
  const bytes = Buffer.byteLength(path);
  const abstract = path.startsWith("\0");
  if (bytes === 0) throw new InvalidArgumentError(`${what}: a Unix socket path must not be empty`);
  if (bytes > (abstract ? UNIX_PATH_MAX : UNIX_PATH_MAX - 1)) {
    throw new InvalidArgumentError(`${what}: Unix socket path is ${bytes} bytes; the limit is ${UNIX_PATH_MAX - 1}`);
  }
  if (!abstract && path.includes("\0")) throw new InvalidArgumentError(`${what}: a Unix socket path must not contain NUL`);
  return { family: "unix", path };
}

/** Parses a host literal. "" and undefined mean any address of `defaultAny`'s family. */
function hostAddress(host: string | undefined, port: number, what: string, family?: "ipv4" | "ipv6"): SocketAddress {
  if (host === undefined || host === "" || host === "*") {
    return family === "ipv6" ? ipv6(new Uint16Array(8), port) : ipv4("0.0.0.0", port);
  }
  if (typeof host !== "string") throw new InvalidArgumentError(`${what}: host must be a string, got ${describeValue(host)}`);
  if (host === "localhost") return family === "ipv6" ? ipv6(parseIpv6("::1")!, port) : ipv4("127.0.0.1", port);
  let h = host;
  if (h.startsWith("[") && h.endsWith("]")) h = h.slice(1, -1);
  const v4 = parseIpv4(h);
  if (v4 >= 0 && family !== "ipv6") return ipv4(formatIpv4(v4), port);
  let scopeId = 0;
  const pct = h.indexOf("%");
  if (pct >= 0) {
    const zone = h.slice(pct + 1);
    if (!/^\d+$/.test(zone)) {
      throw new InvalidArgumentError(`${what}: IPv6 zone "${zone}" must be a numeric interface index`);
    }
    scopeId = checkU32(Number(zone), "the IPv6 zone (interface index)", what);
    h = h.slice(0, pct);
  }
  const v6 = parseIpv6(h);
  if (v6 && family !== "ipv4") return ipv6(v6, port, scopeId);
  throw new InvalidArgumentError(
    `${what}: "${host}" is not an IP address literal (use an IPv4/IPv6 literal or "localhost"; names are resolved only by connect)`,
  );
}

/** A 32-bit unsigned field of sockaddr_in6 (it wrapped: 2^32 + 4 named interface 4). */
function checkU32(v: unknown, name: string, what: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffff_ffff) {
    throw new InvalidArgumentError(`${what}: ${name} must be an integer in 0..4294967295, got ${describeValue(v)}`);
  }
  return v;
}

/**
 * Throws InvalidArgumentError when `a` cannot be a destination (connect, send): port 0 means
 * "any port" only where a socket binds; as a destination the kernel refuses it (connect
 * ECONNREFUSED, sendmsg EINVAL), so it is refused here, naming `what`. Returns `a`.
 */
export function checkDestination(a: SocketAddress, what: string): SocketAddress {
  if (a.family !== "unix") checkDestinationPort(a.port, what);
  return a;
}

function checkDestinationPort(port: number, what: string): number {
  if (port === 0) throw new InvalidArgumentError(`${what}: port 0 is not a destination (it means "any port" only for listen and bind)`);
  return port;
}

/**
 * Parses any AddressInput into a SocketAddress without DNS. Throws InvalidArgumentError
 * naming `what` (the calling operation) when the input is malformed, or, with
 * `destination`, when it cannot be one (checkDestination: port 0).
 */
export function parseAddress(input: AddressInput, what = "address", options?: { readonly destination?: boolean }): SocketAddress {
  const a = parseInput(input, what);
  return options?.destination === true ? checkDestination(a, what) : a;
}

function parseInput(input: AddressInput, what: string): SocketAddress {
  if (typeof input === "number") return hostAddress(undefined, checkPort(input, what), what);
  if (typeof input === "string") {
    // "unix:@name" is the abstract name, as formatAddress writes it ("unix:./@x" for a file
    // named "@x"); it used to be a file named "@name" in the working directory.
    if (input.startsWith("unix:@")) return unix(`\0${input.slice(6)}`, what);
    if (input.startsWith("unix:")) return unix(input.slice(5), what);
    if (input.startsWith("/") || input.startsWith("./")) return unix(input, what);
    if (input.startsWith("@")) return unix(`\0${input.slice(1)}`, what);
    const m = /^(?:\[([^\]]*)\]|([^:]*)):(\d{1,5})$/.exec(input);
    if (!m) {
      throw new InvalidArgumentError(`${what}: "${input}" is not "host:port", "[ipv6]:port", "unix:PATH" or "@abstract"`);
    }
    const port = checkPort(Number(m[3]), what);
    if (m[1] !== undefined) return hostAddress(m[1] === "" ? "::" : m[1], port, what, "ipv6");
    return hostAddress(m[2], port, what);
  }
  if (typeof input !== "object" || input === null) {
    throw new InvalidArgumentError(`${what}: expected an address string, a port, { host, port } or { path }`);
  }
  if ("family" in input && input.family === "unix") return unix((input as UnixAddress).path, what);
  if ("path" in input && typeof input.path === "string") return unix(input.path, what);
  const o = input as { host?: string; port?: number; family?: string; scopeId?: number; flowInfo?: number };
  const port = checkPort(o.port, what);
  if (o.family !== undefined && o.family !== "ipv4" && o.family !== "ipv6") {
    throw new InvalidArgumentError(`${what}: family must be "ipv4", "ipv6" or "unix", got ${String(o.family)}`);
  }
  const a = hostAddress(o.host, port, what, o.family as "ipv4" | "ipv6" | undefined);
  if (a.family === "ipv6" && (o.scopeId !== undefined || o.flowInfo !== undefined)) {
    const scopeId = o.scopeId === undefined ? a.scopeId : checkU32(o.scopeId, "scopeId", what);
    const flowInfo = o.flowInfo === undefined ? a.flowInfo : checkU32(o.flowInfo, "flowInfo", what);
    return { ...a, scopeId, flowInfo };
  }
  return a;
}

/**
 * The host name and port when `input` names a host that needs DNS (connect resolves it;
 * listen refuses it), else undefined. Only connect asks, so a name with port 0 is refused
 * (checkDestination) before any lookup.
 */
export function needsLookup(input: AddressInput): { host: string; port: number; family?: "ipv4" | "ipv6" | undefined } | undefined {
  let host: string | undefined;
  let port: number | undefined;
  let family: "ipv4" | "ipv6" | undefined;
  if (typeof input === "string") {
    // "unix:8080" is the file "8080", not the host "unix".
    if (input.startsWith("unix:")) return undefined;
    const m = /^([^:[\]/@]+):(\d{1,5})$/.exec(input);
    if (!m) return undefined;
    host = m[1];
    port = Number(m[2]);
  } else if (typeof input === "object" && input !== null && "host" in input && typeof input.host === "string") {
    host = input.host;
    port = (input as { port: number }).port;
    const f = (input as { family?: unknown }).family;
    // Any other family ("IPv4", "unix") is left to parseAddress, which refuses it as it does
    // for an IP literal: a name was resolved with the typo ignored.
    if (f !== undefined && f !== "ipv4" && f !== "ipv6") return undefined;
    family = f;
  }
  if (host === undefined || host === "localhost" || host === "" || parseIpv4(host) >= 0) return undefined;
  if (host.includes(":")) return undefined;
  return { host, port: checkDestinationPort(checkPort(port, "connect"), "connect"), family };
}

/**
 * "1.2.3.4:80", "[::1]:80", "unix:/path" or "unix:@abstract"; parseAddress reads each back
 * as the same socket. A relative file path starting with "@" is written "unix:./@x" ("unix:@x"
 * is the abstract name), so it reads back as "./@x": the same file.
 */
export function formatAddress(a: SocketAddress): string {
  switch (a.family) {
    case "ipv4":
      return `${a.host}:${a.port}`;
    case "ipv6":
      return `[${a.host}${a.scopeId ? `%${a.scopeId}` : ""}]:${a.port}`;
    case "unix":
      if (a.path.startsWith("\0")) return `unix:@${a.path.slice(1)}`;
      return `unix:${a.path.startsWith("@") ? "./" : ""}${a.path}`;
  }
}

/** The AF_* number of an address. */
export function addressFamily(a: SocketAddress): number {
  return a.family === "ipv4" ? AF_INET : a.family === "ipv6" ? AF_INET6 : AF_UNIX;
}

const encoder = new TextEncoder();

/**
 * Writes `a` as a kernel sockaddr into `out` at `offset` (at least SOCKADDR_MAX bytes free)
 * and returns its length. Pure stores, no allocation for IP addresses.
 */
export function encodeSockaddr(a: SocketAddress, out: Uint8Array, offset = 0): number {
  const dv = new DataView(out.buffer, out.byteOffset + offset, SOCKADDR_MAX);
  out.fill(0, offset, offset + SOCKADDR_MAX);
  switch (a.family) {
    case "ipv4": {
      dv.setUint16(0, AF_INET, true);
      dv.setUint16(2, a.port, false);
      dv.setUint32(4, parseIpv4(a.host), false);
      return 16;
    }
    case "ipv6": {
      const g = parseIpv6(a.host)!;
      dv.setUint16(0, AF_INET6, true);
      dv.setUint16(2, a.port, false);
      dv.setUint32(4, a.flowInfo, false);
      for (let i = 0; i < 8; i++) dv.setUint16(8 + 2 * i, g[i]!, false);
      dv.setUint32(24, a.scopeId, true);
      return 28;
    }
    case "unix": {
      dv.setUint16(0, AF_UNIX, true);
      const r = encoder.encodeInto(a.path, out.subarray(offset + 2, offset + 2 + UNIX_PATH_MAX));
      // Path sockets include the terminating NUL; abstract names are exactly their bytes.
      return 2 + r.written + (a.path.startsWith("\0") ? 0 : 1);
    }
  }
}

const decoder = new TextDecoder();

/** Reads a kernel sockaddr of `len` bytes at `offset`. Throws on an unknown family. */
export function decodeSockaddr(bytes: Uint8Array, offset: number, len: number): SocketAddress {
  const dv = new DataView(bytes.buffer, bytes.byteOffset + offset, Math.max(len, 2));
  const family = len >= 2 ? dv.getUint16(0, true) : AF_UNIX;
  if (family === AF_INET && len >= 16) {
    return ipv4(formatIpv4(dv.getUint32(4, false)), dv.getUint16(2, false));
  }
  if (family === AF_INET6 && len >= 28) {
    const g = new Uint16Array(8);
    for (let i = 0; i < 8; i++) g[i] = dv.getUint16(8 + 2 * i, false);
    return ipv6(g, dv.getUint16(2, false), dv.getUint32(24, true), dv.getUint32(4, false));
  }
  if (family === AF_UNIX) {
    let end = offset + len;
    const start = offset + 2;
    if (end > start && bytes[start] !== 0) {
      // A path: stop at its NUL.
      const nul = bytes.indexOf(0, start);
      if (nul >= 0 && nul < end) end = nul;
    }
    return { family: "unix", path: end > start ? decoder.decode(bytes.subarray(start, end)) : "" };
  }
  throw new InvalidArgumentError(`unsupported socket address family ${family} (length ${len})`);
}
