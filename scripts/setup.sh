#!/usr/bin/env bash
# Installs what Shoal needs on a fresh Debian 12 machine, and only what is missing:
# Debian packages, Zig (PyPI ziglang, pinned by ZIG_VERSION) in .venv, npm devDependencies
# (Bun pinned in package.json), then builds zig-out/lib/libshoal.so. Safe to rerun.
#   SHOAL_SKIP_APT=1   skip the Debian package step (quick local runs)
#   --native-only      only Zig and the native library (an installed package rebuilding its
#                      libshoal.so: no Debian packages, no npm devDependencies)
set -Eeuo pipefail
native_only=0
for arg in "$@"; do
  case "$arg" in
    --native-only) native_only=1 ;;
    *) echo "setup: unknown argument '$arg' (known: --native-only)" >&2; exit 2 ;;
  esac
done
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

step="start"
started_s=$SECONDS
say() { echo "setup: $*"; }
fail() { echo "setup: FAILED in step '$step': $*" >&2; exit 1; }
trap 'rc=$?; echo "setup: FAILED in step '"'"'$step'"'"' (exit $rc, line $LINENO)" >&2; exit $rc' ERR

# ---------------------------------------------------------------- Debian packages
# Peers and tools the tests and benchmarks drive, DPDK for the native stack's device shim.
apt_packages=(memcached libmemcached-tools wrk fio nginx curl iperf3 tcpdump iproute2
  e2fsprogs python3-scapy dpdk libdpdk-dev pkg-config ca-certificates)
# Node/npm only run `npm ci` and tsc; any node >= 18 will do, so keep one that is there
# (a NodeSource nodejs bundles npm and conflicts with Debian's npm package).
command -v node >/dev/null 2>&1 || apt_packages+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_packages+=(npm)
have_python_venv() { command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' >/dev/null 2>&1; }
have_python_venv || apt_packages+=(python3 python3-venv)

# Services the packages start on install; port 11211 belongs to Shoal's memcached.
stop_packaged_service() { # name, daemon binary
  local svc=$1 exe=$2 pid
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl stop "$svc" >/dev/null 2>&1 || true
  elif [ -x "/etc/init.d/$svc" ]; then
    if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true
    else "/etc/init.d/$svc" stop >/dev/null 2>&1 || true; fi
  fi
  command -v systemctl >/dev/null 2>&1 && { systemctl disable "$svc" >/dev/null 2>&1 || true; }
  command -v update-rc.d >/dev/null 2>&1 && { update-rc.d "$svc" disable >/dev/null 2>&1 || true; }
  # No init system (containers): end the packaged daemon's processes, by pid.
  local pids=() tries
  for pid in /proc/[0-9]*; do
    [ "$(readlink "$pid/exe" 2>/dev/null)" = "$exe" ] && pids+=("${pid#/proc/}")
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  kill "${pids[@]}" 2>/dev/null || true
  for tries in 1 2 3 4 5 6 7 8 9 10; do
    local alive=()
    for pid in "${pids[@]}"; do [ ! -d "/proc/$pid" ] || alive+=("$pid"); done
    [ ${#alive[@]} -gt 0 ] || return 0
    sleep 0.5
  done
  kill -9 "${alive[@]}" 2>/dev/null || true
}

step="debian packages"
if [ "$native_only" = "1" ]; then
  say "apt: skipped (--native-only)"
elif [ "${SHOAL_SKIP_APT:-0}" = "1" ]; then
  say "apt: skipped (SHOAL_SKIP_APT=1)"
else
  command -v dpkg-query >/dev/null 2>&1 || fail "dpkg-query not found: this script expects Debian 12"
  installed="$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${apt_packages[@]}" 2>/dev/null || true)"
  missing=()
  for p in "${apt_packages[@]}"; do
    grep -qx "$p installed" <<<"$installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    say "apt: all ${#apt_packages[@]} packages present"
  else
    [ "$(id -u)" = "0" ] || fail "packages missing (${missing[*]}) and not root; rerun as root or install them"
    say "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Keep packaged services from starting while we install (removed when this script exits).
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT   # also when interrupted
    fi
    apt_rc=0
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || apt_rc=$?
    [ "$apt_rc" = "0" ] || fail "apt-get could not install: ${missing[*]} (exit $apt_rc)"
    step="stop packaged services"
    stop_packaged_service memcached /usr/bin/memcached
    stop_packaged_service nginx /usr/sbin/nginx
    say "apt: installed; memcached and nginx services stopped and disabled"
  fi
fi

# ---------------------------------------------------------------- Zig from PyPI
step="zig (PyPI ziglang in .venv)"
zig_version="$(tr -d ' \t\r\n' < ZIG_VERSION)"
[ -n "$zig_version" ] || fail "ZIG_VERSION is empty"
current_zig="$(.venv/bin/python -m ziglang version 2>/dev/null || true)"
if [ "$current_zig" = "$zig_version" ]; then
  say "zig $zig_version: present in .venv"
else
  say "zig: have '${current_zig:-none}', installing ziglang==$zig_version from PyPI into .venv"
  if ! .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
    have_python_venv || fail "python3 with the venv module is missing (Debian: apt-get install python3-venv)"
    rm -rf .venv
    python3 -m venv .venv || fail "python3 -m venv .venv failed"
  fi
  if ! .venv/bin/python -m pip install --disable-pip-version-check --no-input -q "ziglang==$zig_version"; then
    fail "pip could not install ziglang==$zig_version from PyPI (see pip's message above). Shoal builds only with Zig $zig_version (ZIG_VERSION, build.zig); there is no fallback to another version."
  fi
  current_zig="$(.venv/bin/python -m ziglang version 2>/dev/null || true)"
  [ "$current_zig" = "$zig_version" ] || fail "after installing, .venv's zig reports '${current_zig}', not $zig_version"
  say "zig $zig_version: installed"
fi

# ---------------------------------------------------------------- npm devDependencies
step="npm devDependencies"
if [ "$native_only" = "1" ]; then
  say "node_modules: skipped (--native-only)"
else
command -v node >/dev/null 2>&1 || fail "node not found (Debian: apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || fail "npm not found (Debian: apt-get install npm)"
bun_pin="$(node -p 'require("./package.json").devDependencies.bun')"
# The stamp holds the hashes of the manifests node_modules was installed from.
stamp_file=node_modules/.shoal-install-stamp
manifest_hash() { cat package.json package-lock.json 2>/dev/null | sha256sum | cut -d' ' -f1; }
why=""
if [ ! -d node_modules ]; then why="node_modules missing"
elif [ "$(cat "$stamp_file" 2>/dev/null)" != "$(manifest_hash)" ]; then why="package.json or package-lock.json changed"
elif [ "$(node_modules/.bin/bun --version 2>/dev/null)" != "$bun_pin" ]; then why="bun is not $bun_pin"
elif [ ! -x node_modules/.bin/tsc ]; then why="tsc missing"
fi
if [ -z "$why" ]; then
  say "node_modules: up to date (bun $bun_pin)"
else
  if [ -f package-lock.json ]; then
    say "node_modules: $why; npm ci"
    npm ci --no-audit --no-fund --loglevel=error || fail "npm ci failed"
  else
    say "node_modules: $why; npm install (no package-lock.json)"
    npm install --no-audit --no-fund --loglevel=error || fail "npm install failed"
  fi
  got_bun="$(node_modules/.bin/bun --version 2>/dev/null || true)"
  if [ "$got_bun" != "$bun_pin" ] && [ -f node_modules/bun/install.js ]; then
    # npm >= 11 may skip dependencies' install scripts; Bun's puts the real binary in place.
    say "node_modules: running bun's postinstall (npm skipped it)"
    (cd node_modules/bun && node install.js) || fail "node_modules/bun/install.js failed"
    got_bun="$(node_modules/.bin/bun --version 2>/dev/null || true)"
  fi
  [ "$got_bun" = "$bun_pin" ] || fail "node_modules/.bin/bun reports '${got_bun}', package.json pins $bun_pin"
  manifest_hash > "$stamp_file"
  say "node_modules: installed (bun $got_bun)"
fi
fi

# ---------------------------------------------------------------- native library
step="zig build"
scripts/zig build || fail "scripts/zig build failed"
[ -f zig-out/lib/libshoal.so ] || fail "zig build succeeded but zig-out/lib/libshoal.so is missing"
say "built zig-out/lib/libshoal.so"

# ---------------------------------------------------------------- host checks (warnings only)
step="host checks"
kernel="$(uname -r)"; kmajor="${kernel%%.*}"; kminor="${kernel#*.}"; kminor="${kminor%%[!0-9]*}"
if [ "$kmajor" -lt 6 ] || { [ "$kmajor" -eq 6 ] && [ "${kminor:-0}" -lt 1 ]; }; then
  say "WARNING: kernel $kernel; Shoal needs Linux >= 6.1 (io_uring SINGLE_ISSUER + DEFER_TASKRUN)"
fi
if [ -r /proc/sys/kernel/io_uring_disabled ] && [ "$(cat /proc/sys/kernel/io_uring_disabled)" != "0" ]; then
  say "WARNING: kernel.io_uring_disabled=$(cat /proc/sys/kernel/io_uring_disabled); Shoal needs 0 (or 1 with the process in io_uring_group)"
fi
if grep -qs ':2BCB 0\{8,32\}:0000 0A' /proc/net/tcp /proc/net/tcp6; then
  say "WARNING: something already listens on port 11211 (Shoal's memcached port)"
fi

say "done in $((SECONDS - started_s))s"
