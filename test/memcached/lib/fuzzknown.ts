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
    id: "forwarded-binary-error-send-point",
    repro:
      "2 shards, k of shard 0, j of shard 1, binary: SET k 100, GETK k, APPEND j x (Not stored: a send point, " +
      'the GETK\'s hold ends), DECR k 99, GET k: stock\'s GET answers "1  " (rewritten in place), ours "1" (a new ' +
      "item) on connections where j's error is answered by another shard: the owner of k does not learn of that send " +
      "point. (The answers themselves were fixed: an error answered by another shard is a send point for what is " +
      "sent before an abort; server-diff case 'bin a delete that misses, a set, then bad magic'.)",
    responsible:
      "examples/memcached/router.ts: holds of forwarded units are released by RELEASE units the session sends at its " +
      "own send points (Session.releaseHolds); a binary error answered by another shard is known only in fillHoles",
    // Any earlier binary command may have been answered with an error (a miss, NOT_STORED, ...).
    matches: (u, before, c) => c.shards > 1 && c.binary && before.length > 0 && dependsOnSendPoints(u, before),
  },
];
