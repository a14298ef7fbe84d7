/**
 * KNOWN_DIFFERENCES: differences between stock memcached 1.6.18 and ours that the fuzzer
 * (fuzz-diff.test.ts, test/soak/memcached-fuzz.test.ts) found and that are not fixed yet. The
 * generator does not produce a unit an entry matches, so the fuzz tests pass until the fix; the
 * fix removes its entry, and the fuzzer then checks that input like any other. Each entry names
 * its minimal reproduction (bytes on a fresh connection to a fresh server, both answers) and
 * where the difference is. Keep each entry as narrow as its difference.
 */
import type { KnownDifference } from "./fuzzrun.ts";
import { commandCount, dependsOnSendPoints, LONG251 } from "./fuzzgen.ts";

export const KNOWN_DIFFERENCES: readonly KnownDifference[] = [
  {
    id: "forwarded-get-send-point",
    repro:
      '2 shards, key k of shard 0 (murmur3: "k1", "x"), the connection accepted by shard 1: "get k\\r\\nmd k q\\r\\n' +
      'GET / HTTP/1.1\\r\\n": stock answers END and closes; ours answers END, NF and closes. Same with a ' +
      '2 KiB line without \\n instead of HTTP/, and with "get k\\r\\nset k 0 0 1\\r\\nv\\r\\nget <251 bytes>\\r\\n" ' +
      "(stock END, CLIENT_ERROR; ours END, STORED, CLIENT_ERROR). A get forwarded to the key's shard is a send point " +
      "there, and the answers of commands forwarded after it count as sent, so ours sends what stock drops.",
    responsible:
      "examples/memcached/session.ts (markSent/keep/keepHoles, flushPoint for forwarded units: feedRange) and router.ts " +
      "(answers of forwarded units coming back into their place)",
    matches: (u, before, c) => c.shards > 1 && !c.binary && u.dropsUnsent === true && before.some((x) => x.sendPoint),
  },
  {
    id: "forwarded-binary-error-send-point",
    repro:
      "2 shards, key k of shard 0, the connection accepted by shard 1, binary: DELETE k (a miss), SET k v, 24 bytes " +
      "0x41 (bad magic): stock answers the DELETE (Not found: an error answer is a send point) and closes; ours closes " +
      "without answering. Also holds: k of shard 0, j of shard 1, binary SET k 100, GETK k, APPEND j x (Not stored: " +
      'a send point, the GETK\'s hold ends), DECR k 99, GET k: stock\'s GET answers "1  " (rewritten in place), ' +
      'ours "1" (a new item) on some connections. A binary error answered by another shard is not a send point for ' +
      "the connection's session (answers dropped on abort, holds kept).",
    responsible:
      "examples/memcached/session.ts (abort: out.slice(0, keep); flushPoint/releaseHolds) with router.ts (forwarded " +
      "binary units: their error answers come back without marking a send point)",
    // Any earlier binary command may have been answered with an error (a miss, NOT_STORED, ...).
    matches: (u, before, c) => c.shards > 1 && c.binary && before.length > 0 && dependsOnSendPoints(u, before),
  },
  {
    id: "routed-multiget-too-long-key",
    repro:
      '2 shards: "set k 0 0 1\\r\\nx\\r\\nget k <251 x L>\\r\\n" then "mg k h\\r\\n": stock answers HD h1 (the get ' +
      "fetched k before it met the too-long key), ours HD h0 on most connections (when k or the long key belongs to " +
      'another shard). Same with "gat 1000 k <251 x L>": stock has touched k (mg k t: t1000), ours has not (t-1).',
    responsible:
      "examples/memcached/router.ts: routeGet() returns false on a too-long key, so the whole line runs on the " +
      "connection's shard, which does not have (fetch, touch) the other shards' keys before it",
    matches: (u, _before, c) => c.shards > 1 && !c.binary && ["get", "gets", "gat", "gats", "bget"].includes(u.op) && u.keys.includes(LONG251),
  },
  {
    id: "routed-ms-too-many-flags",
    repro:
      "2 shards, key k of the other shard than the one that accepts the connection: " +
      '"ms k 3 a b c d e f g h i j k l m n o p q r s t\\r\\n196xymn\\r\\n" (more than 20 tokens): stock answers ' +
      "CLIENT_ERROR options flags too long, then ERROR (it reads no value after this error: 196xymn is a command " +
      "line); ours answers CLIENT_ERROR options flags too long, then MN (the 5 bytes after the line went to k's " +
      "shard as the value, the rest of that line ran as mn).",
    responsible:
      "examples/memcached/router.ts: the ms route (the check before forwarding the line with vlen+2 bytes) lacks " +
      "stock's ntokens > MFLAG_MAX_OPT_LENGTH refusal (meta.ts processMset has it, without a swallow)",
    matches: (u, _before, c) => c.shards > 1 && u.tags?.includes("ms-too-many-flags") === true,
  },
];
