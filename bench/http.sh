#!/usr/bin/env bash
# http.sh -- the HTTP benchmarks: tether.http against nginx with
# lua-nginx-module (the OpenResty way, on LuaJIT) and lua-http (on
# cqueues), with the same two handlers ("hello", and one that sleeps
# 1 ms), each loaded by `wrk -t2 -c50 -d5s --latency` on 127.0.0.1; and
# the time from a client's hang-up to its handler's request context done;
# and tether's "hello" without its metrics, with them, and with tracing
# (HTTP_OBS_ROUNDS rounds of 2 s each, default 7).
#
# Usage: bash bench/http.sh
# It prints result lines "<impl>.<metric> <value>" (impl: tether, nginx,
# luahttp), the format bench/run.sh collects (it calls this script once
# per run); it can also be run by itself.  Environment: BUILD (default
# build), HTTP_DURATION (wrk's seconds, default 5), HTTP_WORKERS (the
# workers of tether's pool, default 16, as a server's own pool).
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD:-build}
lua=${LUA:-lua5.4}
duration=${HTTP_DURATION:-5}
workers=${HTTP_WORKERS:-16}
export BENCH_BUILD=$build

need=(wrk nginx libnginx-mod-http-lua lua-http lua-cqueues lua-socket)
missing=()
for p in "${need[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  if [ "$(id -u)" = 0 ]; then
    echo "installing: ${missing[*]}" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  else
    echo "missing Debian packages; run:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# free_port prints a port of 127.0.0.1 that nothing listens on now.
free_port() {
  "$lua" -e 'local s = assert(require("socket").bind("127.0.0.1", 0))
             local _, p = s:getsockname(); print(p); s:close()'
}

# wait_up waits (at most 10 s) until ADDR answers /hello.
wait_up() {
  local i
  for ((i = 0; i < 200; i++)); do
    curl -s -o /dev/null "http://$1/hello" && return 0
    sleep 0.05
  done
  echo "http.sh: nothing answers on $1" >&2
  return 1
}

# cpu_ticks PID prints the CPU time a process used so far, user and
# system, in clock ticks (hz of them a second).
hz=$(getconf CLK_TCK)
cpu_ticks() {
  awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat"
}

# median prints the median of its arguments.
median() {
  printf '%s\n' "$@" | sort -g |
    awk '{v[NR] = $1}
         END {if (NR % 2) print v[(NR + 1) / 2]
              else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# load IMPL SHAPE URL runs wrk and prints the requests per second and
# the 99th percentile of the latency (in ms).
load() {
  local impl=$1 shape=$2 out rps p99 v unit
  out=$(wrk -t2 -c50 -d"${duration}s" --latency "$3")
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  read -r v unit < <(awk '$1 == "99%" {
    v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
    print v, u }' <<<"$out")
  case $unit in
    us) p99=$(awk -v x="$v" 'BEGIN {print x / 1000}') ;;
    ms) p99=$v ;;
    s) p99=$(awk -v x="$v" 'BEGIN {print x * 1000}') ;;
    *) p99= ;;
  esac
  if grep -q "Non-2xx or 3xx responses" <<<"$out"; then
    echo "http.sh: $impl $shape: errors: $(grep Non-2xx <<<"$out")" >&2
  fi
  [ -n "$rps" ] && echo "$impl.http_${shape}_per_s $rps"
  [ -n "$p99" ] && echo "$impl.http_${shape}_p99_ms $p99"
  return 0
}

# bench_impl IMPL ADDR loads both shapes.
bench_impl() {
  wait_up "$2"
  load "$1" hello "http://$2/hello"
  load "$1" sleep "http://$2/sleep"
}

# tether.http: the server prints its address (port 0 picks a free one).
"$lua" bench/http_server.lua "$workers" >"$tmp/tether.addr" &
pids+=($!)
for ((i = 0; i < 200; i++)); do
  [ -s "$tmp/tether.addr" ] && break
  sleep 0.05
done
bench_impl tether "$(head -n 1 "$tmp/tether.addr")"
kill "${pids[-1]}"

# What observability costs tether.http's "hello": three servers at once
# (metrics = false, the default that counts the server's HTTP metrics,
# and metrics with a server span per request), loaded in turn for 2 s
# each, round after round, so that each sees the same conditions of a
# shared machine; the median of each, in requests per second and in the
# server process's CPU time per request (which depends less on what else
# the machine runs).
modes=(bare metrics traced)
declare -A addr rates cpus spid
for mode in "${modes[@]}"; do
  m=$mode
  [ "$m" = metrics ] && m=default
  "$lua" bench/http_server.lua "$workers" "$m" >"$tmp/$mode.addr" &
  pids+=($!)
  spid[$mode]=$!
  for ((i = 0; i < 200; i++)); do
    [ -s "$tmp/$mode.addr" ] && break
    sleep 0.05
  done
  addr[$mode]=$(head -n 1 "$tmp/$mode.addr")
  wait_up "${addr[$mode]}"
done
for ((r = 0; r < ${HTTP_OBS_ROUNDS:-7}; r++)); do
  for mode in "${modes[@]}"; do
    t0=$(cpu_ticks "${spid[$mode]}")
    out=$(wrk -t2 -c50 -d2s "http://${addr[$mode]}/hello")
    t1=$(cpu_ticks "${spid[$mode]}")
    rates[$mode]+="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out") "
    cpus[$mode]+="$(awk -v t="$((t1 - t0))" -v hz="$hz" \
      '/ requests in / {print t * 1e6 / hz / $1}' <<<"$out") "
  done
done
for mode in "${modes[@]}"; do
  # shellcheck disable=SC2086  # one word per round
  echo "tether.http_hello_${mode}_per_s $(median ${rates[$mode]})"
  # shellcheck disable=SC2086
  echo "tether.http_hello_${mode}_cpu_us $(median ${cpus[$mode]})"
done
for ((k = 0; k < ${#modes[@]}; k++)); do kill "${pids[-1 - k]}"; done

# nginx + lua-nginx-module, one worker process per core, from a scratch
# prefix (TOOLCHAIN.md section 9).
port=$(free_port)
mkdir -p "$tmp/nginx/logs" "$tmp/nginx/tmp"
cat >"$tmp/nginx/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes auto;
pid logs/nginx.pid;
error_log logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path tmp/body; proxy_temp_path tmp/proxy;
  fastcgi_temp_path tmp/fcgi; uwsgi_temp_path tmp/uwsgi;
  scgi_temp_path tmp/scgi;
  server {
    listen 127.0.0.1:$port;
    location = /hello { content_by_lua_block { ngx.say("hello") } }
    location = /sleep {
      content_by_lua_block { ngx.sleep(0.001) ngx.say("slept") }
    }
  }
}
EOF
nginx -p "$tmp/nginx" -c nginx.conf -e logs/error.log -g 'daemon off;' &
pids+=($!)
bench_impl nginx "127.0.0.1:$port"
kill -QUIT "${pids[-1]}"

# lua-http on cqueues, one process.
port=$(free_port)
"$lua" bench/luahttp_server.lua "$port" >/dev/null &
pids+=($!)
bench_impl luahttp "127.0.0.1:$port"
kill "${pids[-1]}"

# Hang-up to context done, through tether.http.
"$lua" bench/http_hangup.lua
