/**
 * The randomized differential fuzzer of test/memcached/fuzz-diff.test.ts at full scale: stock
 * memcached 1.6.18 and ours (1 shard, then 2 shards) side by side, thousands of generated
 * sequences of text and binary requests each (the seed is printed in the test names;
 * SHOAL_FUZZ_SEED replays one, SHOAL_FUZZ_SEQUENCES changes the count). Every difference is
 * shrunk and reported with its bytes and both answers (up to 10 per shard count); the known ones
 * are in test/memcached/lib/fuzzknown.ts.
 *
 * SHOAL_SOAK=1 (scripts/soak.sh): 10,000 sequences per shard count (about 1,100,000 requests,
 * about 15 minutes here), a new seed each run. Otherwise (scripts/test.sh, CI): 15 sequences per shard
 * count with a fixed seed, a few seconds.
 */
import { defineFuzzSuite, fuzzSeed } from "../memcached/lib/fuzzrun.ts";

const soak = process.env.SHOAL_SOAK === "1";

defineFuzzSuite({
  // A new seed every soak run (exploring); CI's small tier keeps to one (it must not fail at random).
  seed: soak ? fuzzSeed() : fuzzSeed(20240612),
  sequences: Number(process.env.SHOAL_FUZZ_SEQUENCES ?? (soak ? "10000" : "15")),
  maxFailures: soak ? 10 : 3,
  shrinkBudget: soak ? 300 : 120,
  timeoutMs: soak ? 4 * 3600_000 : 300_000,
});
