#!/usr/bin/env bash
# Fixed-rate latency, stock memcached -t 1 against ours with 1 shard, many interleaved rounds:
# at half load p99 moves by 2-3x from round to round on a shared VM, so the 5 rounds of
# memcached.bench.ts (row D) are too few to compare p99s. Same settings as that benchmark
# (-m 1024 -c 4096, 100 connections, 100,000 prefilled keys, get/set 9:1, 1 s warm-up + 5 s),
# the order of the two servers flipping every round. Prints each round and the medians.
#   bench/memcached/fixed-rate.sh [ROUNDS=10] [RATE=95000]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
rounds="${1:-10}"
rate="${2:-95000}"
mcload=zig-out/bench/mcload
mkdir -p zig-out/bench
# rebuilt when mcload.c changed (a binary built from an older mcload.c would measure differently)
[ "$mcload" -nt bench/memcached/mcload.c ] || scripts/zig cc -O2 -o "$mcload" bench/memcached/mcload.c -lpthread -lm
command -v memcached >/dev/null || { echo "fixed-rate: stock memcached is missing (scripts/setup.sh installs it)" >&2; exit 1; }
sp=21911; op=21912
memcached -u root -l 127.0.0.1 -t 1 -p $sp -U 0 -m 1024 -c 4096 & spid=$!
node_modules/.bin/bun examples/memcached/main.ts -l 127.0.0.1 -t 1 -p $op -m 1024 -c 4096 >/dev/null 2>&1 & opid=$!
trap 'kill $spid $opid 2>/dev/null; wait $spid $opid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$sp && exec 4<>/dev/tcp/127.0.0.1/$op) 2>/dev/null && break
  sleep 0.1
done
for p in $sp $op; do
  "$mcload" -s 127.0.0.1:$p -c 1 -k 100000 -P -W 0 -D 0.2 >/dev/null
  "$mcload" -s 127.0.0.1:$p -c 100 -k 100000 -W 0 -D 2 -d 4 >/dev/null
done
out=$(mktemp)
for r in $(seq "$rounds"); do
  if [ $((r % 2)) = 1 ]; then order="stock:$sp ours:$op"; else order="ours:$op stock:$sp"; fi
  for e in $order; do
    name=${e%%:*}; port=${e##*:}
    "$mcload" -s 127.0.0.1:$port -c 100 -k 100000 -W 1 -D 5 -R "$rate" -j | tail -1 |
      python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print('$name', $r, d['p50_us'], d['p99_us'], d['p999_us'])" | tee -a "$out"
  done
done
python3 - "$out" "$rate" <<'PY'
import statistics as st, sys
d = {}
for line in open(sys.argv[1]):
    n, r, p50, p99, p999 = line.split()
    d.setdefault(n, {})[int(r)] = (float(p50), float(p99), float(p999))
for n in ("stock", "ours"):
    v = d[n].values()
    print(f"{n}: median p50 {st.median(x[0] for x in v):.0f} us, p99 {st.median(x[1] for x in v):.0f} us, p99.9 {st.median(x[2] for x in v):.0f} us")
ratios = [d["ours"][r][1] / d["stock"][r][1] for r in d["ours"] if r in d["stock"]]
print(f"at {sys.argv[2]}/s: ours/stock p99 per round {[round(x, 2) for x in ratios]}, median {st.median(ratios):.2f}; "
      f"ratio of median p99s {st.median(x[1] for x in d['ours'].values()) / st.median(x[1] for x in d['stock'].values()):.2f}")
PY
rm -f "$out"
