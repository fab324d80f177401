#!/usr/bin/env bash
# make lint: luacheck over the Lua code, shellcheck over the shell scripts,
# cppcheck over the C sources, node --check over the browser tests'
# JavaScript. Each tool prints its findings; the script fails if any tool
# found something. The exceptions are written down with their reasons in
# .luacheckrc, tools/cppcheck.cfg and tools/cppcheck.supp (and in inline
# comments next to the code they concern). The tools come from Debian
# (DEB_PKGS in the Makefile: lua-check, shellcheck, cppcheck, nodejs).
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
failed=()

# The files of the checkout (git's list when there is one, so that
# ignored files such as build output are left out), NUL-separated.
files() {
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z
  else
    find . \( -name .git -o -name 'build*' -o -name node_modules \) -prune \
      -o -type f -print0
  fi
}

# The scripts: shell scripts by their name (*.sh) or their #! line, Lua
# scripts without the .lua extension by their #! line (the Lua modules,
# specs and examples are checked by directory).
sh_re='^#!.*[/ ](ba)?sh( |$)'
lua_re='^#!.*[/ ]lua'
sh_scripts=()
lua_scripts=()
while IFS= read -r -d '' f; do
  f=${f#./}
  [ -f "$f" ] || continue
  line=
  IFS= read -r line <"$f" || true
  case ${f##*/} in
    *.sh) sh_scripts+=("$f") ;;
    *.*) ;;
    *) if [[ $line =~ $sh_re ]]; then
         sh_scripts+=("$f")
       elif [[ $line =~ $lua_re ]]; then
         lua_scripts+=("$f")
       fi ;;
  esac
done < <(files)

# Debian installs luacheck for Lua 5.1 only (under /usr/share/lua/5.1);
# its code runs on 5.4, which is what `std = "lua54"` checks against.
echo "== luacheck: lua/ spec/ examples/ bench/ tools/ ${lua_scripts[*]}"
if ! LUA_PATH_5_4="/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;;" \
     lua5.4 /usr/bin/luacheck --no-color --formatter plain --codes \
     lua spec examples bench tools "${lua_scripts[@]}"; then
  failed+=(luacheck)
fi

echo "== shellcheck: ${sh_scripts[*]}"
if ! shellcheck "${sh_scripts[@]}"; then
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

# Node's own check: syntax only (no JavaScript linter is installed).
echo "== node --check: tools/browser/*.js"
for f in tools/browser/*.js; do
  node --check "$f" || failed+=("node --check $f")
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "lint: findings from ${failed[*]}" >&2
  exit 1
fi
echo "lint: clean"
