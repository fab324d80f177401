#!/usr/bin/env bash
# Checks that the rockspec lists what the checkout builds and installs (the
# Makefile's C sources, the modules under lua/, the scripts in bin/), then
# installs the rock offline into a scratch tree with luarocks and checks
# that `require "tether"` and tether-lint work from that tree, away from
# the source tree.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
read -r -a sources <<<"$(make -s --no-print-directory sources)"
if ! lua5.4 tools/rock-sources.lua rockspec/tether-scm-1.rockspec \
     "${sources[@]}"; then
  echo "rock: the rockspec's lists differ from the checkout's"
  exit 1
fi
echo "rock: the rockspec lists every C source, module and script"
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
if ! luarocks --lua-version=5.4 make --deps-mode=none --tree "$tree" \
     rockspec/tether-scm-1.rockspec >"$tree/log" 2>&1; then
  cat "$tree/log"
  exit 1
fi
# The builtin backend leaves objects in the source tree; they are not ours
# to keep.
find csrc -name '*.o' -delete
rm -f tether/core.so core.so 2>/dev/null || true
rmdir tether 2>/dev/null || true
eval "$(luarocks --lua-version=5.4 --tree "$tree" path |
        sed -e 's/LUA_PATH=/LUA_PATH_5_4=/' -e 's/LUA_CPATH=/LUA_CPATH_5_4=/')"
export PATH="$tree/bin:$PATH"
cd /tmp
TREE="$tree" lua5.4 -e '
  local t = require "tether"
  local where = package.searchpath("tether.core", package.cpath)
  assert(where:find(os.getenv("TREE"), 1, true), where)
  assert(t.background():err() == nil)
  local h = t.go(function(a, b) return a + b end, 2, 3)
  assert(h:wait() == 5)
  print("rock: require \"tether\" works from " .. where)' ||
  { echo "rock: require failed"; exit 1; }
printf 'local tether = require "tether"\nreturn tether\n' >"$tree/ok.lua"
tether-lint "$tree/ok.lua" >/dev/null
echo "rock: tether-lint runs from the installed tree"
printf 'print(select("#", ...), tether_ok)\n' >"$tree/run.lua"
[ "$(tether run "$tree/run.lua" a b)" = "2	nil" ] ||
  { echo "rock: tether run failed"; exit 1; }
tether --version
echo "rock: tether run runs from the installed tree"
printf 'return {}\n' >"$tree/rockops.lua"
LUA_PATH_5_4="$tree/?.lua;$LUA_PATH_5_4" tether worker \
  --store "sqlite:$tree/worker.db" --require rockops --until-empty \
  2>"$tree/worker.log" ||
  { cat "$tree/worker.log"; echo "rock: tether worker failed"; exit 1; }
grep -q 'store empty: claimed 0' "$tree/worker.log" ||
  { cat "$tree/worker.log"; echo "rock: tether worker failed"; exit 1; }
echo "rock: tether worker runs from the installed tree"
