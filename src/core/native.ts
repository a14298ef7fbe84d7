/**
 * The one typed wrapper around the native library's dlopen table. FFI details stay here.
 * The library is found at $SHOAL_LIB, or zig-out/lib/libshoal.so beside the package.
 */
import { dlopen, ptr, toArrayBuffer, type Pointer } from "bun:ffi";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { StartupError } from "./errors.ts";

/** Must equal zig/exports.zig's shoal_abi_version(). */
export const ABI_VERSION = 8;

import { coreSymbols } from "./symbols/core.ts";
import { smpSymbols } from "./symbols/smp.ts";
import { fsSymbols } from "./symbols/fs.ts";
import { netSymbols } from "./symbols/net.ts";

// One dlopen table for the whole library; each layer declares its exports in symbols/<layer>.ts.
const symbols = { ...coreSymbols, ...smpSymbols, ...fsSymbols, ...netSymbols } as const;

export type NativeSymbols = ReturnType<typeof dlopen<typeof symbols>>["symbols"];

/** Where the shared library is expected, in lookup order. */
export function libraryPath(): string {
  const fromEnv = process.env["SHOAL_LIB"];
  if (fromEnv) return fromEnv;
  return fileURLToPath(new URL("../../zig-out/lib/libshoal.so", import.meta.url));
}

let lib: NativeSymbols | undefined;

/** Loads libshoal once per thread (each Worker loads its own handle). Throws StartupError with the fix. */
export function native(): NativeSymbols {
  if (lib) return lib;
  const path = libraryPath();
  if (!existsSync(path)) {
    throw new StartupError(
      "ERR_NATIVE_MISSING",
      `Shoal's native library is missing at ${path}. Build it with \`scripts/zig build\` ` +
        "(run scripts/setup.sh first on a fresh machine), or point SHOAL_LIB at a built libshoal.so.",
    );
  }
  let opened;
  try {
    opened = dlopen(path, symbols);
  } catch (cause) {
    // A build older than this code lacks the exports added since (every ABI bump added some):
    // the whole table fails on one of them, so name the library's ABI rather than that symbol.
    const version = abiVersionOf(path);
    if (version !== undefined && version !== ABI_VERSION) throw abiMismatch(path, version);
    throw new StartupError(
      "ERR_NATIVE_LOAD",
      `Shoal could not load its native library ${path}: ${(cause as Error).message}. Rebuild it with \`scripts/zig build\`.`,
      { cause },
    );
  }
  const version = opened.symbols.shoal_abi_version();
  if (version !== ABI_VERSION) {
    opened.close();
    throw abiMismatch(path, version);
  }
  lib = opened.symbols;
  return lib;
}

/** The ABI version of the library at `path` alone, or undefined if it has none (not Shoal's). */
function abiVersionOf(path: string): number | undefined {
  try {
    const probe = dlopen(path, { shoal_abi_version: coreSymbols.shoal_abi_version });
    try {
      return probe.symbols.shoal_abi_version();
    } finally {
      probe.close();
    }
  } catch {
    return undefined;
  }
}

function abiMismatch(path: string, version: number): StartupError {
  return new StartupError(
    "ERR_NATIVE_ABI",
    `Shoal's native library at ${path} has ABI ${version}, this code needs ${ABI_VERSION}. Rebuild it with \`scripts/zig build\`.`,
  );
}

/**
 * A long-lived view of `length` bytes of native memory. Create once, then slice. Zero bytes are
 * an empty ArrayBuffer: bun:ffi refuses a view of 0 bytes (a TypeError), and an empty buffer is
 * legitimate (dmaRead at the end of a file; handed over, its receiver's decode threw and the
 * buffer stayed lent for good).
 */
export function nativeView(address: number | Pointer, length: number): ArrayBuffer {
  if (length === 0) return new ArrayBuffer(0);
  return toArrayBuffer(address as Pointer, 0, length);
}

/** This thread's live pool views (see poolView), with their size and when they were made. */
const poolViews = new Map<ArrayBuffer, { bytes: number; at: number }>();
let poolViewBytes = 0;
/**
 * Bytes of released pools whose views the engine still counts: a view stays in heapUsed until a
 * full collection once a collection has counted it (poolsCollected() at the loop's).
 */
let releasedPoolBytes = 0;
/**
 * How long a new view may go uncounted: the engine counts it in heapUsed only once a collection
 * visited it (~15 ms after it was made, here). A view released younger is taken as never
 * counted, one released older as counted.
 */
const POOL_COUNT_MS = 1000;

/**
 * nativeView() of a pool that lives as long as its owner (a receive ring, a BufferPool, a
 * slab): the engine counts the view's bytes as external memory, which is not garbage, so the
 * loop's full-collection trigger leaves them out of the heap's growth (poolBytes()).
 * poolViewReleased(view) when the memory is unmapped.
 */
export function poolView(address: number | Pointer, length: number): ArrayBuffer {
  const view = nativeView(address, length);
  poolViews.set(view, { bytes: length, at: performance.now() });
  poolViewBytes += length;
  return view;
}

/** The pool's memory went (unmapped): its view is garbage from now on. */
export function poolViewReleased(view: ArrayBuffer): void {
  const p = poolViews.get(view);
  if (p === undefined) return;
  poolViews.delete(view);
  poolViewBytes -= p.bytes;
  if (performance.now() - p.at >= POOL_COUNT_MS) releasedPoolBytes += p.bytes;
}

/**
 * Bytes the engine counts in heapUsed for this thread's pools, once it caught up (see
 * uncountedPoolBytes): the live views, and the released ones until the loop's next full
 * collection.
 */
export function poolBytes(): number {
  return poolViewBytes + releasedPoolBytes;
}

/** @internal The loop ran a full collection: released pools' views are counted no more. */
export function poolsCollected(): void {
  releasedPoolBytes = 0;
}

/**
 * Bytes of the live pool views made lately (at `now`, performance.now()): in poolBytes(), but
 * maybe not yet in the engine's heapUsed.
 */
export function uncountedPoolBytes(now: number): number {
  let bytes = 0;
  for (const p of poolViews.values()) if (now - p.at < POOL_COUNT_MS) bytes += p.bytes;
  return bytes;
}

/** Maps `sizeBytes` of zeroed, page-aligned native memory: the address, or a negative errno. */
export function mapNative(sizeBytes: number): number {
  return Number(native().shoal_mem_map(sizeBytes));
}

/** Maps `sizeBytes` rounded up to whole 2 MiB pages, advised MADV_HUGEPAGE; address or -errno. */
export function mapNativeHuge(sizeBytes: number): number {
  return Number(native().shoal_mem_map_huge(sizeBytes));
}

export { ptr };
