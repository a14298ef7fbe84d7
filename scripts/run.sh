#!/usr/bin/env bash
# Installs what is missing (scripts/setup.sh), then runs Shoal's main job in the foreground:
# the memcached example on every core (port 11211), or the hello example until it exists.
# Arguments go to the example.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh
for main in examples/memcached/main.ts examples/hello/main.ts; do
  if [ -f "$main" ]; then
    echo "run: node_modules/.bin/bun $main $*"
    exec node_modules/.bin/bun "$main" "$@"
  fi
done
echo "run: no examples/memcached/main.ts or examples/hello/main.ts yet" >&2
exit 1
