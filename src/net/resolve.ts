/**
 * Host-name resolution for connect (the only call that accepts names): IP literals,
 * "localhost" and Unix paths are parsed in place; other names go through the system resolver
 * (node:dns lookup, served by Bun's event loop, which the shard loop keeps turning).
 */
import { lookup } from "node:dns/promises";
import { AbortError, SystemError } from "../core/errors.ts";
import { abortable } from "../core/future.ts";
import { needsLookup, parseAddress, type AddressInput, type SocketAddress } from "./address.ts";

const ENOENT = 2;

/**
 * Parses `input`, resolving a host name to all of its addresses, in the resolver's order
 * ("localhost": 127.0.0.1, then ::1), which connect tries in turn. Rejects with SystemError
 * (op "getaddrinfo"), AbortError.
 */
export async function resolveAddresses(input: AddressInput, what: string, signal?: AbortSignal): Promise<SocketAddress[]> {
  const name = needsLookup(input);
  if (name === undefined) {
    const a = parseAddress(input, what);
    // "localhost" without a family is both loopback addresses (RFC 6761; /etc/hosts lists ::1
    // too): a peer listening on ::1 only (Node's listen("localhost") since v17) was refused.
    // IPv4 first: listen("localhost") binds 127.0.0.1.
    if (a.family === "ipv4" && namesLocalhost(input)) return [a, parseAddress({ host: "::1", port: a.port, family: "ipv6" }, what)];
    return [a];
  }
  if (signal?.aborted) throw new AbortError(`${what} was aborted`, { cause: signal.reason });
  let found: { address: string; family: number }[];
  try {
    // The resolver cannot be cancelled; an abort (or the caller's timeout) stops the wait.
    // An asked-for family resolves only addresses of that family (A or AAAA).
    const opts = name.family === undefined ? { all: true as const } : { all: true as const, family: name.family === "ipv6" ? 6 : 4 };
    found = await abortable(lookup(name.host, opts), signal, what);
  } catch (cause) {
    if (cause instanceof AbortError) throw cause;
    const err = new SystemError("getaddrinfo", ENOENT, `${name.host}: ${(cause as Error).message}`);
    (err as { cause?: unknown }).cause = cause;
    throw err;
  }
  if (signal?.aborted) throw new AbortError(`${what} was aborted`, { cause: signal.reason });
  if (found.length === 0) throw new SystemError("getaddrinfo", ENOENT, `${name.host}: no address`);
  const out: SocketAddress[] = [];
  const seen = new Set<string>();
  for (const f of found) {
    const key = `${f.family}/${f.address}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(parseAddress({ host: f.address, port: name.port, family: f.family === 6 ? "ipv6" : "ipv4" }, what));
  }
  return out;
}

/** True when `input` names the host "localhost" and no address family. */
function namesLocalhost(input: AddressInput): boolean {
  if (typeof input === "string") return /^localhost:\d{1,5}$/.test(input);
  if (typeof input !== "object" || input === null || !("host" in input) || input.host !== "localhost") return false;
  return (input as { family?: unknown }).family === undefined;
}

/** Parses `input`, resolving a host name to its first address. Rejects like resolveAddresses. */
export async function resolveAddress(input: AddressInput, what: string, signal?: AbortSignal): Promise<SocketAddress> {
  return (await resolveAddresses(input, what, signal))[0]!;
}
