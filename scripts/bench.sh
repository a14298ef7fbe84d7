#!/usr/bin/env bash
# Runs benchmarks, each file in its own bun process: every bench/**/*.bench.ts, or the
# files and folders given. Each benchmark prints its comparison and ratio; record results
# in bench/RESULTS.md with the machine they ran on.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh
[ $# -gt 0 ] || set -- bench
files="$(for p in "$@"; do
  if [ -d "$p" ]; then find "$p" -type f -name '*.bench.ts'; else echo "$p"; fi
done | sort -u)"
[ -n "$files" ] || { echo "bench: no *.bench.ts files under $*"; exit 0; }
failed=0
while IFS= read -r f; do
  echo "bench: $f"
  node_modules/.bin/bun "$f" || { echo "bench: $f FAILED"; failed=$((failed + 1)); }
done <<<"$files"
[ "$failed" = "0" ]
