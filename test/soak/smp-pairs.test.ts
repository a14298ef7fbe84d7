// Soak tier of the SMP suite: with SHOAL_SOAK=1, 1,000,000 messages per ordered shard pair and
// the 4,000,000-message flood; in scripts/test.sh the same tests run at CI scale.
import "../smp/pairs.test.ts";
import "../smp/flood.test.ts";
