#!/usr/bin/env bash
# Runs everything CI runs and ends with one line, `N passed, N failed`:
#   scripts/setup.sh, Zig tests (`zig build test`), every bun test file under test/ in its
#   own process, and `tsc --noEmit` (one test; one more for src/ under a strict consumer's
#   settings, tsconfig.consumer.json). Exits non-zero if anything failed.
# With arguments (test files or folders), runs setup and only those bun test files.
#   SHOAL_TEST_TIMEOUT=600   seconds one test file may take before it is killed
#   SHOAL_TEST_VERBOSE=1     print every file's output, not only failing ones'
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/lib/bun-tests.sh

SHOAL_PASSED=0
SHOAL_FAILED=0
started_s=$SECONDS
finish() {
  echo "test: done in $((SECONDS - started_s))s"
  echo "$SHOAL_PASSED passed, $SHOAL_FAILED failed"
  [ "$SHOAL_FAILED" = "0" ]
  exit $?
}

echo "test: scripts/setup.sh"
if ! scripts/setup.sh; then
  echo "test: setup failed; nothing else ran"
  SHOAL_FAILED=$((SHOAL_FAILED + 1))
  finish
fi

if [ $# -eq 0 ]; then
  # ------------------------------------------------------------ Zig unit tests
  echo "test: zig build test"
  log="$(mktemp)"
  rc=0
  scripts/zig build test --summary all >"$log" 2>&1 || rc=$?
  summary="$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep '^Build Summary:' | tail -1)"
  total="$(sed -n 's|.* \([0-9][0-9]*\)/\([0-9][0-9]*\) tests passed.*|\2|p' <<<"$summary")"
  zpass="$(sed -n 's|.* \([0-9][0-9]*\)/[0-9][0-9]* tests passed.*|\1|p' <<<"$summary")"
  zskip="$(sed -n 's|.*tests passed; \([0-9][0-9]*\) skipped.*|\1|p' <<<"$summary")"
  zpass=${zpass:-0}; total=${total:-0}; zskip=${zskip:-0}
  zfail=$((total - zpass - zskip))   # failed and crashed tests
  if [ "$rc" != "0" ] && [ "$zfail" = "0" ]; then zfail=1; fi   # e.g. a compile error
  SHOAL_PASSED=$((SHOAL_PASSED + zpass))
  SHOAL_FAILED=$((SHOAL_FAILED + zfail))
  if [ "$zfail" != "0" ] || [ "${SHOAL_TEST_VERBOSE:-0}" = "1" ]; then sed 's/^/    /' "$log"; fi
  note=""; [ "$zskip" = "0" ] || note=", $zskip skip"
  printf '%-4s zig build test: %s pass, %s fail%s\n' "$([ "$zfail" = "0" ] && echo ok || echo FAIL)" "$zpass" "$zfail" "$note"
  rm -f "$log"
  targets=(test)
else
  targets=("$@")
fi

# -------------------------------------------------------------- bun tests, a process per file
if ! files="$(shoal_find_test_files "${targets[@]}")"; then
  SHOAL_FAILED=$((SHOAL_FAILED + 1))
  finish
fi
count=$(grep -c . <<<"$files" || true)
echo "test: bun test, $count file(s), each in its own process (limit ${SHOAL_TEST_TIMEOUT:-600}s each)"
while IFS= read -r f; do
  [ -n "$f" ] || continue
  shoal_run_bun_file "$f" "${SHOAL_TEST_TIMEOUT:-600}"
done <<<"$files"

# -------------------------------------------------------------- typecheck, one test
if [ $# -eq 0 ]; then
  echo "test: tsc --noEmit -p ."
  log="$(mktemp)"
  if node_modules/.bin/tsc --noEmit -p . >"$log" 2>&1; then
    SHOAL_PASSED=$((SHOAL_PASSED + 1)); echo "ok   tsc --noEmit"
  else
    SHOAL_FAILED=$((SHOAL_FAILED + 1)); sed 's/^/    /' "$log"; echo "FAIL tsc --noEmit"
  fi
  rm -f "$log"
  # src/ is also a consumer's types (the package ships its source): check it under the
  # strictest common settings (exactOptionalPropertyTypes, noPropertyAccessFromIndexSignature...).
  echo "test: tsc --noEmit -p tsconfig.consumer.json"
  log="$(mktemp)"
  if node_modules/.bin/tsc --noEmit -p tsconfig.consumer.json >"$log" 2>&1; then
    SHOAL_PASSED=$((SHOAL_PASSED + 1)); echo "ok   tsc --noEmit -p tsconfig.consumer.json"
  else
    SHOAL_FAILED=$((SHOAL_FAILED + 1)); sed 's/^/    /' "$log"; echo "FAIL tsc --noEmit -p tsconfig.consumer.json"
  fi
  rm -f "$log"
fi

finish
