# Shared by scripts/test.sh and scripts/soak.sh (sourced, not run): finds test files and
# runs each in its own `bun test` process, since a loaded native library's global state is
# shared by every file in one process and some suites start Workers.

# Prints the bun test files under the given files/folders, sorted, one a line.
shoal_find_test_files() {
  local p
  for p in "$@"; do
    if [ -d "$p" ]; then
      find "$p" -type d -name node_modules -prune -o -type f \
        \( -name '*.test.*' -o -name '*_test.*' -o -name '*.spec.*' -o -name '*_spec.*' \) \
        \( -name '*.ts' -o -name '*.tsx' -o -name '*.js' -o -name '*.jsx' -o -name '*.mjs' -o -name '*.cjs' -o -name '*.mts' -o -name '*.cts' \) \
        -print
    elif [ -f "$p" ]; then
      echo "$p"
    else
      echo "no such test file or folder: $p" >&2
      return 1
    fi
  done | sed 's|^\./||' | sort -u
}

# Runs one file: shoal_run_bun_file FILE TIMEOUT_S [bun test args...]
# Adds to SHOAL_PASSED / SHOAL_FAILED. Prints one line per file, and the file's whole output
# when it failed (or always, with SHOAL_TEST_VERBOSE=1).
shoal_run_bun_file() {
  local file=$1 timeout_s=$2; shift 2
  local log rc=0 start_s=$SECONDS pass fail skip note=""
  log="$(mktemp)"
  # The subshell keeps bash's own "Segmentation fault" notice out; the note below says it.
  (timeout -k 15 "$timeout_s" node_modules/.bin/bun test "$@" "./$file" >"$log" 2>&1; exit $?) 2>/dev/null || rc=$?
  # Bun prints " N pass" / " N fail" at the end of a run that finished.
  pass="$(sed -n 's/^ *\([0-9][0-9]*\) pass$/\1/p' "$log" | tail -1)"
  fail="$(sed -n 's/^ *\([0-9][0-9]*\) fail$/\1/p' "$log" | tail -1)"
  skip="$(sed -n 's/^ *\([0-9][0-9]*\) skip$/\1/p' "$log" | tail -1)"
  if [ -z "$pass" ] && [ -z "$fail" ]; then
    # No summary: the run ended early (killed, crashed, process.exit). Count what finished,
    # and fail the file.
    pass="$(grep -c '^(pass) ' "$log" || true)"
    fail="$(( $(grep -c '^(fail) ' "$log" || true) + 1 ))"
    if [ "$rc" = "124" ] || [ "$rc" = "137" ]; then note=" (TIMED OUT after ${timeout_s}s)"
    elif [ "$rc" -gt 128 ]; then note=" (killed by SIG$(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128))), no summary)"
    else note=" (exit $rc, ended without bun's summary)"; fi
  fi
  pass=${pass:-0}; fail=${fail:-0}
  if [ "$rc" != "0" ] && [ "$fail" = "0" ]; then
    note="$note (exit $rc)"; fail=1
  fi
  SHOAL_PASSED=$((SHOAL_PASSED + pass))
  SHOAL_FAILED=$((SHOAL_FAILED + fail))
  if [ "$fail" != "0" ] || [ "${SHOAL_TEST_VERBOSE:-0}" = "1" ]; then
    sed 's/^/    /' "$log"
  fi
  printf '%-4s %s: %s pass, %s fail%s%s [%ss]\n' "$([ "$fail" = "0" ] && echo ok || echo FAIL)" \
    "$file" "$pass" "$fail" "${skip:+, $skip skip}" "$note" "$((SECONDS - start_s))"
  rm -f "$log"
}
