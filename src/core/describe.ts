/** @internal Bad-argument messages for every core module (no imports: timer.ts and future.ts both use it). */

/** Longest part of a string argument quoted in a message (a 1 GiB string was copied whole, or threw). */
const MAX_QUOTED = 64;

/**
 * Names a bad argument in an error message without dumping it (symbols, objects without
 * toString). Never throws: a revoked Proxy, a throwing trap or a huge string still gives a name.
 */
export function describeValue(value: unknown): string {
  if (typeof value === "string") {
    // JSON.stringify of a long string made a message as long (of a 2^30-byte one: RangeError).
    if (value.length <= MAX_QUOTED) return JSON.stringify(value);
    return `${JSON.stringify(value.slice(0, MAX_QUOTED))}... (a string of ${value.length} characters)`;
  }
  if (typeof value === "function") return "a function";
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "symbol") return value.toString();
  if (value === null || typeof value !== "object") return String(value);
  try {
    return Array.isArray(value) ? "an array" : "an object";
  } catch {
    return "a revoked Proxy"; // Array.isArray throws TypeError for one
  }
}
