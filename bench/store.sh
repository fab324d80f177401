#!/usr/bin/env bash
# store.sh -- the durable overflow rows of `make bench`: spills per second
# with zero loss and drain rates, SQLite (group commit at
# synchronous=FULL, 8 producers) and Redis Streams (pipelined, appendfsync
# everysec and always), each next to its floor measured in the same run
# (one INSERT per transaction; one XADD per round trip).  It starts its
# own redis-server on 127.0.0.1 (a free port, a scratch directory,
# appendonly yes) and stops it by its pid.
#
# Runs by itself (`bash bench/store.sh`, after `make all`) or from
# bench/run.sh.  It prints a markdown table and writes it into
# bench/README.md between <!-- store:begin --> and <!-- store:end -->.
#
# Environment: BENCH_RUNS (default 3) runs, the median is reported;
# BENCH_STORE_OPS (default 200000) spills per run; BUILD (default build).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${BENCH_RUNS:-3}
build=${BUILD:-build}
out=$build/bench
mkdir -p "$out"
make -s all BUILD="$build"
read -r -a pc_cflags <<<"$(pkg-config --cflags hiredis)"
read -r -a pc_libs <<<"$(make -s ldlibs)"   # all that libtether.a links
gcc -O2 -std=c11 -pthread -D_GNU_SOURCE -Wall -Wextra -Werror \
  "${pc_cflags[@]}" -Icsrc/core bench/bench_store.c \
  "$build/libtether.a" -o "$build/bench_store" \
  "${pc_libs[@]}"

scratch=$(mktemp -d /tmp/tether-bench-XXXXXX)
redis_pid=
cleanup() {
  if [ -n "$redis_pid" ]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT

port=
for _ in $(seq 20); do
  p=$((20000 + RANDOM % 30000))
  if ! ss -Hltn "sport = :$p" | grep -q .; then port=$p; break; fi
done
[ -n "$port" ] || { echo "store.sh: no free port" >&2; exit 1; }
mkdir -p "$scratch/redis"
redis-server --port "$port" --bind 127.0.0.1 --dir "$scratch/redis" \
  --appendonly yes --appendfsync everysec --save '' --loglevel warning \
  >"$scratch/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 200); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.05
done

results=$out/store.txt
: >"$results"
for ((r = 1; r <= runs; r++)); do
  echo "store run $r of $runs"
  rm -f "$scratch"/*.db*
  redis-cli -p "$port" flushall >/dev/null
  "$build/bench_store" "$scratch" "$port" | sed "s/^/$r /" | tee -a "$results"
done

lua5.4 - "$results" bench/README.md "$runs" <<'EOF'
local results, readme, runs = arg[1], arg[2], arg[3]
local v = {}
for line in io.lines(results) do
  local _, k, x = line:match("^(%d+) (%S+) (%S+)$")
  if k then v[k] = v[k] or {}; table.insert(v[k], tonumber(x)) end
end
local function med(k)
  local t = v[k]
  if not t then return nil end
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2
end
local function rate(x)
  if not x then return "—" end
  if x >= 1e6 then return ("%.2f M/s"):format(x / 1e6) end
  if x >= 1e3 then return ("%.1f k/s"):format(x / 1e3) end
  return ("%.0f /s"):format(x)
end
local function ratio(a, b)
  if not (a and b) then return "" end
  return (" (%.1f× the floor)"):format(a / b)
end
local function goal(x, g)
  if not x then return "not measured" end
  return x >= g and "**met**" or "**missed**"
end
local s, sf = med("c.sqlite_spill_full"), med("c.sqlite_floor_full")
local e, ef = med("c.redis_spill_everysec"), med("c.redis_floor_everysec")
local a, af = med("c.redis_spill_always"), med("c.redis_floor_always")
local rows = {
  "| shape | tether | floor (same run) | goal |",
  "|---|---|---|---|",
  ("| SQLite spills, synchronous=FULL, group commit, 8 producers, zero loss | %s%s | %s, one INSERT per transaction | ≥ 100k/s: %s |")
    :format(rate(s), ratio(s, sf), rate(sf), goal(s, 1e5)),
  ("| Redis spills, pipelined, appendfsync everysec, 8 producers, zero loss | %s%s | %s, one XADD per round trip | ≥ 50k/s: %s |")
    :format(rate(e), ratio(e, ef), rate(ef), goal(e, 5e4)),
  ("| Redis spills, pipelined, appendfsync always, 8 producers, zero loss | %s%s | %s, one XADD per round trip | — |")
    :format(rate(a), ratio(a, af), rate(af)),
  ("| SQLite drain: claim, run a no-op on 2 workers, acknowledge | %s | — | — |")
    :format(rate(med("c.sqlite_drain"))),
  ("| Redis drain: XREADGROUP, run a no-op on 2 workers, XDEL + XACK | %s | — | — |")
    :format(rate(med("c.redis_drain"))),
}
local table_text = table.concat(rows, "\n")
print(table_text)
local f = io.open(readme)
local text = f:read("a")
f:close()
local h = io.popen("date -u '+%Y-%m-%d %H:%M UTC'")
local date = h:read("l")
h:close()
local block = ("<!-- store:begin -->\nMeasured on %s with `bash bench/store.sh`"
  .. " (also run by `make bench`), %d CPUs; median of %s runs.\n\n%s\n"
  .. "<!-- store:end -->"):format(date, tonumber(io.popen("nproc"):read("l")),
  runs, table_text)
local new, n = text:gsub("<!%-%- store:begin %-%->.-<!%-%- store:end %-%->",
                         function() return block end)
if n == 0 then
  new = text:gsub("\n## What each row measures",
                  function() return "\n" .. block .. "\n\n## What each row measures" end, 1)
end
f = io.open(readme, "w")
f:write(new)
f:close()
EOF
echo "bench/README.md updated (store rows)"
