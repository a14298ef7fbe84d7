#!/usr/bin/env bash
# Runs the long tests under test/soak/ at full scale (SHOAL_SOAK=1), each file in its own
# `bun test` process, and ends with one line, `N passed, N failed`.
# With arguments (files or folders), runs only those.
#   SHOAL_SOAK_TIMEOUT=14400   seconds one soak file may take before it is killed
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/lib/bun-tests.sh

SHOAL_PASSED=0
SHOAL_FAILED=0
started_s=$SECONDS
timeout_s="${SHOAL_SOAK_TIMEOUT:-14400}"
finish() {
  echo "soak: done in $((SECONDS - started_s))s"
  echo "$SHOAL_PASSED passed, $SHOAL_FAILED failed"
  [ "$SHOAL_FAILED" = "0" ]
  exit $?
}

echo "soak: scripts/setup.sh"
if ! scripts/setup.sh; then
  echo "soak: setup failed"
  SHOAL_FAILED=$((SHOAL_FAILED + 1))
  finish
fi

[ $# -gt 0 ] || set -- test/soak
if ! files="$(shoal_find_test_files "$@")"; then
  SHOAL_FAILED=$((SHOAL_FAILED + 1))
  finish
fi
count=$(grep -c . <<<"$files" || true)
echo "soak: $count file(s) with SHOAL_SOAK=1 (limit ${timeout_s}s each)"
export SHOAL_SOAK=1
while IFS= read -r f; do
  [ -n "$f" ] || continue
  # bunfig.toml's per-test limit is for quick tests; a soak test's own limit is the file's.
  shoal_run_bun_file "$f" "$timeout_s" --timeout "$((timeout_s * 1000))"
done <<<"$files"

finish
