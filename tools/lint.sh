#!/usr/bin/env bash
# make lint: luacheck over the Lua code, shellcheck over the shell scripts,
# cppcheck over the C sources. Each tool prints its findings; the script
# fails if any tool found something. The exceptions are written down with
# their reasons in .luacheckrc, tools/cppcheck.cfg and tools/cppcheck.supp
# (and in inline comments next to the code they concern).
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
failed=()

# luacheck is installed for Lua 5.1 only (TOOLCHAIN.md section 5); its
# code runs on 5.4, which is what `std = "lua54"` checks against.
echo "== luacheck: lua/ spec/ examples/ bench/ bin/ tools/"
if ! LUA_PATH_5_4="/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;;" \
     lua5.4 /usr/bin/luacheck --no-color --formatter plain --codes \
     lua spec examples bench bin/tether bin/tether-lint tools; then
  failed+=(luacheck)
fi

echo "== shellcheck: tools/*.sh bench/*.sh .ci/run"
if ! shellcheck tools/*.sh bench/*.sh .ci/run; then
  failed+=(shellcheck)
fi

echo "== cppcheck: csrc/"
if ! cppcheck --quiet --error-exitcode=1 --std=c11 \
     --enable=warning,style,performance,portability \
     --library=posix --library=gnu --library=lua \
     --library=tools/cppcheck.cfg --suppressions-list=tools/cppcheck.supp \
     --inline-suppr -D_GNU_SOURCE -I csrc/core -I csrc/lua \
     --template='{file}:{line}:{column}: {severity} ({id}) {message}' \
     csrc; then
  failed+=(cppcheck)
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "lint: findings from ${failed[*]}" >&2
  exit 1
fi
echo "lint: clean"
