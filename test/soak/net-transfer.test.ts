// Soak tier of the network conformance suite: with SHOAL_SOAK=1 (scripts/soak.sh) the large
// transfers move 1 GiB each way; in scripts/test.sh they run at CI scale.
import "../net/posix-scale.test.ts";
