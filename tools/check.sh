#!/usr/bin/env bash
# `make check`: the C tests and the whole busted suite under ASan+UBSan,
# then under TSan, then the C tests and the C examples under valgrind
# memcheck.  Any
# sanitizer or valgrind report, any failed test and any run that does not
# end in time fails the target; every phase runs, and the summary at the
# end says which failed.
#
# Builds go to build/asan and build/tsan (and build/ for valgrind and for
# the specs that start a plain lua5.4).  A sanitized module is loaded
# into the uninstrumented lua5.4 with its runtime preloaded (TOOLCHAIN.md
# section 7): LD_PRELOAD for ASan; for TSan the dynamic loader's
# --preload, because /bin/sh (which specs run through os.execute and
# io.popen) crashes when libtsan is preloaded into it, and --preload,
# unlike LD_PRELOAD, is not inherited by child processes.
#
# TSan reads tools/tsan.supp: false positives in uninstrumented code
# only, each with its reason.
#
# The specs see TETHER_SANITIZER=address or =thread while they run under
# a sanitizer (ASan's quarantine, for one, holds freed memory: RSS bounds
# do not hold there).
#
# Each C test has a timeout of its own (csrc/core/test/harness.h): longer
# in the sanitized builds, and TETHER_TEST_TIMEOUT under valgrind.
#
# Knobs (environment): CHECK_JOBS (make -j, default 2), CHECK_PHASES
# (default "asan tsan valgrind"), CHECK_BUSTED_ARGS (default "-o TAP"),
# CHECK_TIMEOUT (seconds per busted run, default 900).
set -euo pipefail
cd "$(dirname "$0")/.."

LUA=${LUA:-lua5.4}
BUSTED_BIN=${BUSTED_BIN:-/usr/bin/busted}
JOBS=${CHECK_JOBS:-2}
PHASES=${CHECK_PHASES:-asan tsan valgrind}
BUSTED_ARGS=${CHECK_BUSTED_ARGS:--o TAP}
TIMEOUT=${CHECK_TIMEOUT:-900}
OPT_SAN="-O1 -g"
SAN_ASAN="-fsanitize=address,undefined,float-cast-overflow \
-fno-sanitize-recover=all -fno-omit-frame-pointer"
SAN_TSAN="-fsanitize=thread"
# What a report looks like in a log; one line of any of these fails.
REPORTS='ERROR: AddressSanitizer|ERROR: LeakSanitizer'
REPORTS+='|AddressSanitizer:DEADLYSIGNAL|runtime error:'
REPORTS+='|SUMMARY: UndefinedBehaviorSanitizer|WARNING: ThreadSanitizer'
REPORTS+='|ERROR: ThreadSanitizer|ThreadSanitizer:DEADLYSIGNAL'

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failures=()
timings=""

say() { printf 'check: %s\n' "$*"; }

# The C test binaries, as make targets under a build directory.
ctests() {
  local f
  for f in csrc/core/test/test_*.c; do
    f=${f##*/}
    printf '%s/test/%s\n' "$1" "${f%.c}"
  done
}

# The C examples, likewise.
cexamples() {
  local f
  for f in examples/c/*.c; do
    f=${f##*/}
    printf '%s/examples/%s\n' "$1" "${f%.c}"
  done
}

need_tools() {
  local lib
  for lib in libasan.so libtsan.so; do
    if [ ! -e "$(gcc -print-file-name="$lib")" ]; then
      say "gcc has no $lib (Debian: the libgcc-12-dev package)"; exit 1
    fi
  done
  if ! command -v valgrind >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      say "installing valgrind"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind
    else
      say "valgrind is missing; run: sudo apt-get install -y valgrind"
      exit 1
    fi
  fi
}

# run LOG CMD... runs a command with its output on the console and in
# LOG; it fails on a non-zero status or on a report in the output.
run() {
  local log=$1 status
  shift
  { "$@" 2>&1; echo $? >"$log.status"; } | tee -a "$log"
  status=$(cat "$log.status")
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    say "TIMEOUT: $*"
    return 1
  fi
  if grep -Eq "$REPORTS" "$log"; then
    say "REPORT in: $*"
    return 1
  fi
  [ "$status" -eq 0 ] || { say "status $status: $*"; return 1; }
}

# ctest_phase NAME BUILD [WRAPPER...] runs every C test of BUILD.
ctest_phase() {
  local name=$1 dir=$2 t ok=0 bins
  shift 2
  mapfile -t bins < <(ctests "$dir")
  for t in "${bins[@]}"; do
    echo "== $t ($name)"
    if ! run "$logs/$name-${t##*/}.log" timeout -k 10 "$TIMEOUT" "$@" "$t"
    then
      failures+=("$name: $t")
      ok=1
    fi
  done
  return $ok
}

# busted_phase NAME BUILD PRELOAD... runs the whole busted suite with the
# module of BUILD, the sanitizer runtime loaded by the PRELOAD words.
busted_phase() {
  local name=$1 dir=$2
  shift 2
  echo "== busted ($name)"
  # shellcheck disable=SC2086
  if ! run "$logs/$name-busted.log" timeout -k 10 "$TIMEOUT" "$@" \
       "$BUSTED_BIN" --ignore-lua --cpath="./$dir/?.so" $BUSTED_ARGS; then
    failures+=("$name: busted suite")
    return 1
  fi
}

# phase NAME FUNCTION runs one phase; its failures are in 'failures'.
phase() {
  local name=$1 t0=$SECONDS
  shift
  say "phase $name"
  "$@" || true
  timings+="$name $((SECONDS - t0)) s, "
}

asan() {
  local bins
  mapfile -t bins < <(ctests build/asan)
  if ! make -j"$JOBS" BUILD=build/asan SAN="$SAN_ASAN" OPT="$OPT_SAN" \
       all "${bins[@]}"; then
    failures+=("asan: build")
    return 1
  fi
  # intercept_tls_get_addr=0: gcc 12's runtime takes a malloc'd block of
  # dynamic TLS that happens to sit 16 bytes past a page boundary for a
  # glibc 2.19 block with a header, records a garbage range from it, and
  # LeakSanitizer's tracer then crashes at exit ("LeakSanitizer has
  # encountered a fatal error"; google/sanitizers#1322).  The module's
  # libmicrohttpd brings GnuTLS, whose dynamic TLS lands there.  Without
  # the interception, dynamic TLS is not scanned for roots: a leak can
  # only be reported wrongly, never hidden.
  export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0
  ASAN_OPTIONS+=:intercept_tls_get_addr=0
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  ctest_phase asan build/asan
  busted_phase asan build/asan \
    env LD_PRELOAD="$(gcc -print-file-name=libasan.so)" \
    TETHER_SANITIZER=address "$LUA"
  unset ASAN_OPTIONS UBSAN_OPTIONS
}

tsan() {
  local ldso bins
  ldso=$(readelf -l "$(command -v "$LUA")" |
         sed -n 's/.*program interpreter: \(.*\)]$/\1/p')
  mapfile -t bins < <(ctests build/tsan)
  if ! make -j"$JOBS" BUILD=build/tsan SAN="$SAN_TSAN" OPT="$OPT_SAN" \
       all "${bins[@]}"; then
    failures+=("tsan: build")
    return 1
  fi
  export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 \
suppressions=$PWD/tools/tsan.supp"
  ctest_phase tsan build/tsan
  busted_phase tsan build/tsan \
    env TETHER_SANITIZER=thread "$ldso" \
    --preload "$(gcc -print-file-name=libtsan.so)" "$(command -v "$LUA")"
  unset TSAN_OPTIONS
}

# valgrind runs one thread at a time; --fair-sched=yes hands the CPU
# round, without it a thread that polls the pool's stats in a loop
# (test_pool's stats_add_up_under_load) starves the workers for minutes.
valgrind_phase() {
  local t log ok=0
  export TETHER_TEST_TIMEOUT=${TETHER_TEST_TIMEOUT:-600}
  for t in "${plain_bins[@]}"; do
    echo "== $t (valgrind)"
    log="$logs/valgrind-${t##*/}.log"
    { timeout -k 10 "$TIMEOUT" valgrind --fair-sched=yes --error-exitcode=1 \
        --leak-check=full --errors-for-leak-kinds=definite \
        --show-leak-kinds=definite --log-file="$log.vg" "$t" 2>&1
      echo $? >"$log.status"; } | tee "$log"
    if [ "$(cat "$log.status")" -ne 0 ]; then
      cat "$log.vg"
      failures+=("valgrind: $t (status $(cat "$log.status"))")
      ok=1
      continue
    fi
    grep -E 'ERROR SUMMARY|definitely lost|All heap blocks' "$log.vg" |
      sed 's/^==[0-9]*== /  valgrind: /'
    if ! grep -q 'ERROR SUMMARY: 0 errors' "$log.vg" ||
       grep -Eq 'definitely lost: [1-9]' "$log.vg"; then
      cat "$log.vg"
      failures+=("valgrind: $t")
      ok=1
    fi
  done
  return $ok
}

need_tools
t0=$SECONDS
say "building (plain, for valgrind and for the specs' child processes)"
mapfile -t plain_bins < <(ctests build; cexamples build)
if ! make -j"$JOBS" all "${plain_bins[@]}"; then
  say "the plain build failed"
  exit 1
fi
timings+="build $((SECONDS - t0)) s, "
for p in $PHASES; do
  case $p in
    asan) phase "ASan+UBSan" asan ;;
    tsan) phase TSan tsan ;;
    valgrind) phase valgrind valgrind_phase ;;
    *) say "unknown phase '$p'"; exit 2 ;;
  esac
done

say "timings: ${timings}total $((SECONDS - t0)) s"
if [ "${#failures[@]}" -gt 0 ]; then
  say "FAILED:"
  printf '  %s\n' "${failures[@]}"
  exit 1
fi
say "no sanitizer or valgrind report; every test passed"
