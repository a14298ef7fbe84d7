/**
 * The fuzzer's one classified difference of stock's own making (lib/fuzzrun.ts,
 * onlyDeltaPadding): an incr/decr result stored in place with padding on one side and as a
 * fresh item on the other. Anything more than that must still count as a difference.
 */
import { describe, expect, test } from "bun:test";
import { onlyDeltaPadding } from "./lib/fuzzrun.ts";

const t = (s: string): Uint8Array => Uint8Array.from(s, (ch) => ch.charCodeAt(0));

/** A binary response packet: opcode, status, opaque, cas, extras, key, value. */
function packet(op: number, opaque: number, cas: bigint, extras: number[], value: string, status = 0): Uint8Array {
  const body = [...extras, ...t(value)];
  const out = new Uint8Array(24 + body.length);
  const dv = new DataView(out.buffer);
  out[0] = 0x81;
  out[1] = op;
  out[4] = extras.length;
  dv.setUint16(6, status);
  dv.setUint32(8, body.length);
  dv.setUint32(12, opaque);
  dv.setBigUint64(16, cas);
  out.set(body, 24);
  return out;
}
const cat = (...parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

describe("onlyDeltaPadding", () => {
  test("text: a padded value against the bare number (header lengths aside) is that difference", () => {
    const stock = t("NOT_FOUND\r\nVALUE k 0 1 17\r\n1\r\nEND\r\nVA 1 s1\r\n1\r\nME k exp=-1 la=0 cas=17 fetch=no cls=1 size=66\r\n");
    const ours = t("NOT_FOUND\r\nVALUE k 0 2 17\r\n1 \r\nEND\r\nVA 2 s2\r\n1 \r\nME k exp=-1 la=0 cas=17 fetch=no cls=1 size=67\r\n");
    expect(onlyDeltaPadding(stock, ours, false, false)).toBe(true);
    expect(onlyDeltaPadding(ours, stock, false, false)).toBe(true);
  });

  test("text: any other difference still counts", () => {
    const base = "VALUE k 0 1 17\r\n1\r\nEND\r\n";
    for (const other of [
      "VALUE k 0 2 17\r\n2 \r\nEND\r\n", // another number
      "VALUE k 0 2 18\r\n1 \r\nEND\r\n", // another CAS
      "VALUE j 0 2 17\r\n1 \r\nEND\r\n", // another key
      "VALUE k 0 2 17\r\n1 \r\nEND\r\nSTORED\r\n", // an extra line
      "VALUE k 0 1 17\r\n1\r\nEND\r\n", // no difference at all
      "VALUE k 5 2 17\r\n1 \r\nEND\r\n", // other flags
    ]) {
      expect({ other, classified: onlyDeltaPadding(t(base), t(other), false, false) }).toEqual({ other, classified: false });
    }
  });

  test("binary: a GET answer whose value is padded, body length aside, is that difference; others count", () => {
    const flags = [0xa9, 0x62, 0x29, 0x83];
    const stock = cat(packet(0x0a, 1, 0n, [], ""), packet(0x00, 2, 74032n, flags, "0"), packet(0x01, 3, 74036n, [], ""));
    const ours = cat(packet(0x0a, 1, 0n, [], ""), packet(0x00, 2, 74032n, flags, "0 "), packet(0x01, 3, 74036n, [], ""));
    expect(onlyDeltaPadding(stock, ours, true, false)).toBe(true);
    expect(onlyDeltaPadding(stock, ours, true, true)).toBe(true);
    const otherNumber = cat(packet(0x0a, 1, 0n, [], ""), packet(0x00, 2, 74032n, flags, "1 "), packet(0x01, 3, 74036n, [], ""));
    const otherStatus = cat(packet(0x0a, 1, 0n, [], ""), packet(0x00, 2, 74032n, flags, "0 ", 1), packet(0x01, 3, 74036n, [], ""));
    const otherFlags = cat(packet(0x0a, 1, 0n, [], ""), packet(0x00, 2, 74032n, [0, 0, 0, 1], "0 "), packet(0x01, 3, 74036n, [], ""));
    const shorter = cat(packet(0x0a, 1, 0n, [], ""), packet(0x00, 2, 74032n, flags, "0 "));
    for (const other of [otherNumber, otherStatus, otherFlags, shorter, stock]) expect(onlyDeltaPadding(stock, other, true, false)).toBe(false);
  });
});
