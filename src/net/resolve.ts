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

/** Parses `input`, resolving a host name to its first address. Rejects with SystemError (op "getaddrinfo"). */
export async function resolveAddress(input: AddressInput, what: string, signal?: AbortSignal): Promise<SocketAddress> {
  const name = needsLookup(input);
  if (name === undefined) return parseAddress(input, what);
  if (signal?.aborted) throw new AbortError(`${what} was aborted`, { cause: signal.reason });
  let found: { address: string; family: number };
  try {
    // The resolver cannot be cancelled; an abort (or the caller's timeout) stops the wait.
    // An asked-for family resolves only addresses of that family (A or AAAA).
    const lookedUp = name.family === undefined ? lookup(name.host) : lookup(name.host, { family: name.family === "ipv6" ? 6 : 4 });
    found = await abortable(lookedUp, signal, what);
  } catch (cause) {
    if (cause instanceof AbortError) throw cause;
    const err = new SystemError("getaddrinfo", ENOENT, `${name.host}: ${(cause as Error).message}`);
    (err as { cause?: unknown }).cause = cause;
    throw err;
  }
  if (signal?.aborted) throw new AbortError(`${what} was aborted`, { cause: signal.reason });
  return parseAddress({ host: found.address, port: name.port, family: found.family === 6 ? "ipv6" : "ipv4" }, what);
}
