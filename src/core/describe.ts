/** @internal Bad-argument messages for every core module (no imports: timer.ts and future.ts both use it). */

/** Names a bad argument in an error message without dumping it (symbols, objects without toString). */
export function describeValue(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "function") return "a function";
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "symbol") return value.toString();
  if (value === null || typeof value !== "object") return String(value);
  return Array.isArray(value) ? "an array" : "an object";
}
