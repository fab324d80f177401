#!/usr/bin/env bash
# run.sh -- builds and runs tether's benchmarks against their peers (Go's
# context package and x/sync, a Go pool of the same shape, luv's thread
# pool), prints one markdown table of medians and ratios, and writes it
# into bench/README.md with the date and the machine.
#
# `make bench` runs it after `make all`; it can also be run by itself from
# any directory.  It is never part of `make test`.
#
# Environment: BENCH_RUNS (default 5) is how many times each program runs;
# BENCH_TIMEOUT (default 300) bounds each run of a program in seconds;
# BUILD (default build, as in the Makefile) is the build folder.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD

runs=${BENCH_RUNS:-5}
limit=${BENCH_TIMEOUT:-300}
lua=${LUA:-lua5.4}
build=${BUILD:-build}
out=$build/bench
# The Go build runs in bench/go and needs absolute paths.
abs_out=$out
[[ $abs_out == /* ]] || abs_out=$root/$out
results=$out/results.txt
machine=$out/machine.txt
log=$out/log.txt

# {====================================================================
# Debian packages
# =====================================================================

# The peers need Go with x/sync and luv; Lua 5.4 and gcc come with the
# project's own dependencies (`make deps`).
need=(golang-go golang-golang-x-sync-dev lua-luv)
missing=()
for p in "${need[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  if [ "$(id -u)" = 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "missing Debian packages; run:"
    echo "  sudo apt-get install -y ${missing[*]}"
    exit 1
  fi
fi

# }====================================================================


# {====================================================================
# Builds
# =====================================================================

mkdir -p "$out"
: >"$log"

# The engine and the module (a no-op after `make all`).
make -s all BUILD="$build"
export BENCH_BUILD=$build

# The Go peers.  Nothing is downloaded: x/sync comes from Debian's source
# package through the replace directive of bench/go/go.mod.  If the
# package keeps it somewhere else, a copy of go.mod points there instead.
sync_dir=$(dpkg -L golang-golang-x-sync-dev |
           sed -n 's|/go\.mod$||p' | grep '/golang\.org/x/sync$' | head -n 1)
if [ -z "$sync_dir" ]; then
  echo "run.sh: golang-golang-x-sync-dev has no golang.org/x/sync/go.mod" >&2
  exit 1
fi
modflag=()
if [ "$sync_dir" != /usr/share/gocode/src/golang.org/x/sync ]; then
  sed "s|=> /usr/share/gocode/src/golang.org/x/sync|=> $sync_dir|" \
    bench/go/go.mod >"$out/go.mod"
  modflag=(-modfile="$abs_out/go.mod")
fi
echo "building the Go peers"
(
  cd bench/go
  GOPROXY=off GOSUMDB=off GOFLAGS=-mod=mod GO111MODULE=on \
    GOTOOLCHAIN=local GOCACHE="${GOCACHE:-$abs_out/go-cache}" \
    go build "${modflag[@]}" -o "$abs_out/gobench" .
)

# The C benchmark.  The group and singleflight benchmarks are built only
# once tether.h declares their API.
cflags=()
grep -q 'tt_group_new *(' csrc/core/tether.h && cflags+=(-DHAVE_TT_GROUP)
grep -q 'tt_flight_call *(' csrc/core/tether.h && cflags+=(-DHAVE_TT_FLIGHT)
grep -q 'tt_metrics_observe_pool *(' csrc/core/tether.h &&
  cflags+=(-DHAVE_TT_OBS)
# The libraries the engine links (libcurl for the trace exporter, ...).
read -r -a libs <<<"$(make -s ldlibs 2>/dev/null || echo -lm)"
echo "building $build/bench_core ${cflags[*]}"
gcc -O2 -std=c11 -pthread -D_GNU_SOURCE -Wall -Wextra "${cflags[@]}" \
  -Icsrc/core bench/bench_core.c "$build/libtether.a" -o "$build/bench_core" \
  "${libs[@]}"

# }====================================================================


# {====================================================================
# Runs
# =====================================================================

: >"$results"
failures=()

# collect RUN LABEL METRICS COMMAND... runs one benchmark program and
# appends its result lines, prefixed with the run's number, to the
# results.  A program that fails or times out is noted (its lines so far
# are kept) and the runs go on, so that one failure does not hide the
# other figures; METRICS (comma-separated "impl.metric" keys, may be
# empty) are the figures it should have printed, recorded as missing with
# the reason when it did not.
collect() {
  local run=$1 label=$2 metrics=$3 rc=0 why key
  shift 3
  printf '  %-28s' "$label"
  local t0=$SECONDS
  echo "== run $run: $label" >>"$log"
  # The subshell sends the shell's own report of a crash to the log too.
  (timeout --kill-after=10 "$limit" "$@" </dev/null >"$out/last.txt") \
    2>>"$log" || rc=$?
  sed "s/^/$run /" "$out/last.txt" >>"$results"
  if ((rc == 0)); then
    printf ' %3ds\n' $((SECONDS - t0))
    return
  fi
  case $rc in
    124 | 137) why="timed out after ${limit} s" ;;
    134) why="crashed: SIGABRT" ;;
    139) why="crashed: SIGSEGV" ;;
    *) why="failed with status $rc" ;;
  esac
  failures+=("run $run: $label $why")
  printf ' %s (see %s)\n' "$why" "$log"
  for key in ${metrics//,/ }; do
    grep -q "^${key} " "$out/last.txt" ||
      echo "$run $key missing $why" >>"$results"
  done
}

# lua_each RUN PROGRAM [ENV...] runs each benchmark that PROGRAM lists
# (`PROGRAM --list`) in a process of its own: a crash loses one figure
# only, and no benchmark inherits another's threads or heap.
lua_each() {
  local run=$1 prog=$2 impl name metrics keys
  shift 2
  impl=lua
  [[ $prog == *luv* ]] && impl=luv
  while read -r name metrics; do
    keys=$impl.${metrics//,/,$impl.}
    collect "$run" "$impl ${prog##*/} $name" "$keys" \
      env "$@" "$lua" "$prog" "$name"
  done < <("$lua" "$prog" --list)
}

# Measurements that cannot be made are recorded as such, not left blank.
if [[ " ${cflags[*]} " != *" -DHAVE_TT_GROUP "* ]]; then
  echo "1 c.group2_ns missing not built" >>"$results"
fi
if [[ " ${cflags[*]} " != *" -DHAVE_TT_FLIGHT "* ]]; then
  for key in sf_wall_ms sf_calls sf_async_wall_ms sf_async_ctx_wall_ms; do
    echo "1 c.$key missing not built"
  done >>"$results"
fi

# The HTTP rows (bench/http.sh): wrk against tether.http, nginx with
# lua-nginx-module and lua-http, and the hang-up measurement.
http_metrics=""
for impl in tether nginx luahttp; do
  for shape in hello sleep; do
    http_metrics+="$impl.http_${shape}_per_s,$impl.http_${shape}_p99_ms,"
  done
done
http_metrics+="tether.http_hangup_p50_us,tether.http_hangup_p99_us,"
http_metrics+="tether.http_hello_bare_per_s,tether.http_hello_metrics_per_s,"
http_metrics+="tether.http_hello_traced_per_s,tether.http_hello_bare_cpu_us,"
http_metrics+="tether.http_hello_metrics_cpu_us,tether.http_hello_traced_cpu_us"

start=$SECONDS
for ((r = 1; r <= runs; r++)); do
  echo "run $r of $runs"
  collect "$r" "go (all)" "" "$out/gobench"
  collect "$r" "c (all)" "" "$build/bench_core"
  lua_each "$r" bench/ctx.lua
  lua_each "$r" bench/pool.lua
  lua_each "$r" bench/runtime.lua
  lua_each "$r" bench/signal.lua
  lua_each "$r" bench/obs.lua
  lua_each "$r" bench/luv_peer.lua UV_THREADPOOL_SIZE=2
  collect "$r" "luv luv_peer.lua rss" luv.rss_worker_kib \
    env UV_THREADPOOL_SIZE=50 "$lua" bench/luv_peer.lua rss
  collect "$r" "http (tether, nginx, lua-http)" "$http_metrics" \
    env BUILD="$build" bash bench/http.sh
done
echo "all runs took $((SECONDS - start)) s"

# }====================================================================


# {====================================================================
# The report
# =====================================================================

cpu=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)
# shellcheck source=/dev/null  # the machine's file, not one of ours
os_name=$(. /etc/os-release && echo "$PRETTY_NAME")
go_version=$(go version | awk '{print $3}')
luv_version=$("$lua" -e 'print(require("luv").version_string())')
# Failures are summarized per benchmark: "label why (n of N runs)".
summary=""
if ((${#failures[@]} > 0)); then
  summary=$(printf '%s\n' "${failures[@]}" | sed 's/^run [0-9]*: //' |
            sort | uniq -c |
            awk -v n="$runs" '{c = $1; $1 = ""; sub(/^ /, "");
                               printf "%s (%d of %d runs)\n", $0, c, n}')
fi
notes=""
if [ -n "$summary" ]; then
  notes="Failures in this run (their messages are in $log): "
  notes+="$(paste -sd ';' <<<"$summary" | sed 's/;/; /g')."
fi
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpus: $(nproc)"
  echo "cpu: ${cpu:-unknown}"
  echo "os: $os_name, Linux $(uname -r), gcc $(gcc -dumpversion)," \
       "$go_version, $("$lua" -v | awk '{print $1, $2}'), luv $luv_version"
  echo "command: make bench"
  echo "notes: $notes"
} >"$machine"

echo
"$lua" bench/report.lua "$results" "$machine" bench/README.md
echo
echo "bench/README.md updated; raw results in $results"

# The durable overflow rows have a script and a table of their own.
if ! BUILD="$build" BENCH_RUNS="$runs" bash bench/store.sh; then
  failures+=("run 1: bench/store.sh failed")
  summary+=$'\nbench/store.sh failed (1 of 1 runs)'
fi

if [ -n "$summary" ]; then
  echo "failures:" >&2
  printf '  %s\n' "${summary//$'\n'/$'\n  '}" >&2
  exit 1
fi

# }====================================================================
