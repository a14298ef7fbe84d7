/**
 * The receive lookahead: a quick, forgiving look at the text requests that just arrived, before
 * any is served. It notes the hash of every key this shard will look up (get/gets/gat/gats,
 * set-family updates, mg/ms/md/ma) so the store can warm the caches for the whole batch at once
 * (Store.warm). It only reads: anything it does not recognise (binary protocol, a partial line,
 * garbage) ends the look at that point, and what the parser later makes of the bytes is
 * unaffected whatever the lookahead saw.
 */
import { murmur3 as hashKey, shardOf } from "./hash.ts";
import { KEY_MAX_LENGTH } from "./text.ts";

/** Where the lookahead notes key hashes (Store). */
export interface AheadSink {
  noteAhead(hv: number): void;
}

const SP = 32;
const CR = 13;
const LF = 10;
/** Lines looked at per chunk. */
const LINES_MAX = 32;
/** Keys noted per get line. */
const KEYS_PER_LINE = 24;

/** Notes in `store` the hashes of the keys owned by `shardId` (of `shards`) in buf[start, end). */
export function lookahead(store: AheadSink, shards: number, shardId: number, buf: Uint8Array, start: number, end: number): void {
  let p = start;
  for (let line = 0; line < LINES_MAX && p + 4 < end; line++) {
    const c0 = buf[p]!;
    const c1 = buf[p + 1]!;
    const c2 = buf[p + 2]!;
    let q: number;
    let update = false;
    if (c0 === 103 /* g */ && c1 === 101 /* e */ && c2 === 116 /* t */) {
      // get, gets (gat/gats carry an exptime first: not looked at)
      q = p + 3;
      if (buf[q] === 115 /* s */) q++;
      if (buf[q] !== SP) return;
    } else if (c1 === 101 /* e */ && c2 === 116 /* t */ && buf[p + 3] === SP && (c0 === 115 /* s */)) {
      q = p + 3; // set
      update = true;
    } else if (c0 === 109 /* m */ && (c1 === 103 || c1 === 115 || c1 === 100 || c1 === 97) && c2 === SP) {
      // mg / ms / md / ma: the key is the first argument; ms carries a data block
      q = p + 2;
      if (c1 === 115 /* s */) return lookMeta(store, shards, shardId, buf, q, end);
    } else {
      return;
    }
    // Keys up to the end of the line (one for set and the meta commands).
    let keys = 0;
    for (;;) {
      while (q < end && buf[q] === SP) q++;
      if (q >= end) return;
      const c = buf[q]!;
      if (c === CR || c === LF) break;
      const k = q;
      while (q < end && buf[q] !== SP && buf[q] !== CR && buf[q] !== LF) q++;
      if (q >= end) return; // partial line: the rest comes with the next chunk
      const klen = q - k;
      if (klen <= KEY_MAX_LENGTH && keys < KEYS_PER_LINE) {
        const hv = hashKey(buf, k, klen);
        if (shards === 1 || shardOf(hv, shards) === shardId) store.noteAhead(hv);
      }
      keys++;
      if (update || c0 === 109) break;
    }
    if (update) {
      // set <key> <flags> <exptime> <bytes> [noreply]\r\n<data>\r\n: skip the data block.
      const bytes = lastNumberBeforeEol(buf, q, end);
      if (bytes < 0) return;
      q = bytes;
      p = q;
      continue;
    }
    while (q < end && buf[q] !== LF) q++;
    p = q + 1;
  }
}

/**
 * After a set's key: finds the line end and the <bytes> field (the fourth token of the line,
 * the third after the key), returns where the next line starts (after data and its "\r\n"), or
 * -1 when that is not in this chunk or the line is not a plain set.
 */
function lastNumberBeforeEol(buf: Uint8Array, q: number, end: number): number {
  let field = 0;
  let bytes = -1;
  for (;;) {
    while (q < end && buf[q] === SP) q++;
    if (q >= end) return -1;
    const c = buf[q]!;
    if (c === CR || c === LF) break;
    field++;
    let v = 0;
    let digits = 0;
    while (q < end && buf[q]! >= 48 && buf[q]! <= 57 && digits < 9) {
      v = v * 10 + buf[q]! - 48;
      q++;
      digits++;
    }
    if (field === 3) bytes = digits > 0 ? v : -1;
    while (q < end && buf[q] !== SP && buf[q] !== CR && buf[q] !== LF) q++;
  }
  if (bytes < 0) return -1;
  while (q < end && buf[q] !== LF) q++;
  const next = q + 1 + bytes + 2;
  return next <= end ? next : -1;
}

/** ms <key> <datalen> <flags>*\r\n<data>\r\n */
function lookMeta(store: AheadSink, shards: number, shardId: number, buf: Uint8Array, q: number, end: number): void {
  while (q < end && buf[q] === SP) q++;
  const k = q;
  while (q < end && buf[q] !== SP && buf[q] !== CR && buf[q] !== LF) q++;
  if (q >= end) return;
  const klen = q - k;
  if (klen === 0 || klen > KEY_MAX_LENGTH) return;
  const hv = hashKey(buf, k, klen);
  if (shards === 1 || shardOf(hv, shards) === shardId) store.noteAhead(hv);
  // One ms per chunk is enough: a meta pipeline continues in the next lookahead.
}
