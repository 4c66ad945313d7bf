#!/bin/sh
# bench/echo_active.sh — what an *active* echo connection costs at N connections, per GC setting:
# bytes of RSS per connection at the end and at the peak (VmHWM) of a steady run, server CPU per
# round trip, and (CG=1) callgrind's counts per round trip — instructions, D1 misses and
# last-level misses (LL simulated at L2 size and at L3 size) — which a loaded machine does not
# distort. The server is bench/echo_server_strand.lua unchanged; a GC setting is a `-e` prelude
# (what a user would write), never a change to the server.
# usage: sh bench/echo_active.sh [BUILD_DIR]
#   env: N=10000 (connections), DURATION=8 (s, native runs), TRIPS=0 (round trips per connection
#        per run, DURATION then its bound; 0: DURATION s), CG=0|1, CGDURATION=40 (s under
#        callgrind), CGSIM=1 (0: instructions only, one run without cache simulation),
#        SERVER=strand|luv (bench/echo_server_strand.lua or bench/echo_luv.lua: the same GC
#        settings for a peer, as a user could set them there), GCS="default inc150 inc110 gen
#        genstep" (default | incP: incremental, pause P | gen: generational after the first
#        full collection | genmM: generational, minor multiplier M | genpPmM: pause P (what a
#        major collection that freed too little waits for), then generational, minor multiplier
#        M | genstep: generational, a task doing a minor collection every PERIOD s, strand only)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
. bench/lib.sh
N=${N:-10000}
DURATION=${DURATION:-8}
CG=${CG:-0}
CGDURATION=${CGDURATION:-40}
GCS=${GCS:-"default inc150 inc110 gen genstep"}
PERIOD=${PERIOD:-0.25}
SERVER=${SERVER:-strand}
TRIPS=${TRIPS:-0}
case $SERVER in
  strand) server_lua=bench/echo_server_strand.lua ;;
  luv) server_lua=bench/echo_luv.lua ;;
  *) echo "SERVER: strand or luv" >&2; exit 2 ;;
esac
CGPERIOD=${CGPERIOD:-2}
CGSIM=${CGSIM:-1}
period=$PERIOD
cc_bench "$build" echo_client
lua_env "$build"
export LUA_PATH="$PWD/lua/?.lua;$PWD/lua/?/init.lua;;" LUA_CPATH="$PWD/$build/?.so;;"
top=$PWD

tmp=$(mktemp -d)
spid=""; cpid=""
cleanup() {
  [ -n "$cpid" ] && kill "$cpid" 2>/dev/null
  [ -n "$spid" ] && kill "$spid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

prelude() {
  case $1 in
    default) echo "" ;;
    inc*) echo "collectgarbage('incremental', ${1#inc}, 100)" ;;
    gen) echo "collectgarbage('generational')" ;;
    genm*) echo "collectgarbage('generational', ${1#genm})" ;;
    genp*m*) p=${1#genp}; echo "collectgarbage('incremental', ${p%m*}); collectgarbage('generational', ${p#*m})" ;;
    genstep) [ "$SERVER" = strand ] || { echo "genstep: strand only" >&2; exit 2; }
      echo "collectgarbage('generational'); local s = require 'strand'
      s.spawn(function() while true do s.sleep($period); collectgarbage('step', 0) end end)" ;;
    *) echo "unknown GC setting $1" >&2; exit 2 ;;
  esac
}
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
nfds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }

# run SETTING WRAPPER...: starts the server (under WRAPPER), waits for its port; sets spid, port.
run_server() {
  pre=$(prelude "$1"); shift
  : >"$tmp/out"
  # shellcheck disable=SC2086
  (cd "$tmp" && exec $PIN_SERVER "$@" lua5.4 -e "$pre" "$top/$server_lua" \
     >"$tmp/out" 2>"$tmp/err") &
  spid=$!
  i=0
  while ! grep -q '^PORT ' "$tmp/out" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 600 ] || ! kill -0 "$spid" 2>/dev/null; then
      echo "server did not start:" >&2; cat "$tmp/err" >&2; exit 1
    fi
    sleep 0.1
  done
  port=$(sed -n 's/^PORT //p' "$tmp/out")
}
stop_server() { kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; spid=""; }
# wait until the server holds N more fds than fd0 (all connections accepted), bounded
wait_accepted() {
  j=0
  while [ "$(nfds "$spid")" -lt $(($1 + N)) ] && [ $j -lt 3000 ]; do sleep 0.1; j=$((j + 1)); done
}

echo "active echo connections ($SERVER): N=$N, 64-byte messages; RSS per connection from the server's"
echo "VmRSS before any connection; hwm = VmHWM (includes the accept ramp); peak = the largest VmRSS"
echo "sampled once every connection is made (bench/echo.sh's active figure); TRIPS>0: the run"
echo "stops after TRIPS round trips per connection (DURATION is then its bound)"
printf "%-9s %10s %12s %14s %15s %15s %s\n" gc "trips/s" "cpu/trip us" "rss end B/conn" "rss hwm B/conn" \
  "rss peak B/conn" machine
for gc in $GCS; do
  flag=$(wait_idle)
  run_server "$gc"
  base=$(status_kib "$spid" VmRSS)
  # shellcheck disable=SC2086
  res=$($PIN_LOAD "$build/bench/echo_client" -p "$spid" $([ "$TRIPS" -gt 0 ] && echo "-n $((TRIPS * N))") \
        "$port" "$N" "$DURATION" 64)
  hwm=$(status_kib "$spid" VmHWM)
  stop_server
  set -- $res
  awk -v gc="$gc" -v r="$1" -v t="$2" -v c="$4" -v rss="$5" -v pk="$6" -v hwm="$hwm" -v b="$base" \
      -v n="$N" -v f="$flag" 'BEGIN { printf "%-9s %10.0f %12.2f %14.0f %15.0f %15.0f %s\n", gc, r,
      c / t * 1e6, (rss - b) * 1024 / n, (hwm - b) * 1024 / n, (pk - b) * 1024 / n, f }'
done

[ "$CG" = 1 ] || exit 0
command -v valgrind >/dev/null || { echo "CG=1: valgrind is not installed" >&2; exit 1; }
period=$CGPERIOD
if [ "$CGSIM" = 1 ]; then lls="524288,8,64 33554432,16,64"; else lls=none; fi
echo "callgrind, counters zeroed once all $N connections are accepted, ${CGDURATION} s of load:"
printf "%-9s %8s %9s %11s %13s %13s\n" gc trips "Ir/trip" "D1miss/trip" "L2(512K)miss" "L3(32M)miss"
for gc in $GCS; do
  line="$gc"
  for ll in $lls; do
    if [ "$ll" = none ]; then sim="--cache-sim=no"; else sim="--cache-sim=yes --D1=32768,8,64 --LL=$ll"; fi
    # shellcheck disable=SC2086
    run_server "$gc" valgrind --tool=callgrind $sim --callgrind-out-file="$tmp/cg.out"
    fd0=$(nfds "$spid")
    # shellcheck disable=SC2086
    $PIN_LOAD "$build/bench/echo_client" -p "$spid" $([ "$TRIPS" -gt 0 ] && echo "-n $((TRIPS * N))") \
      "$port" "$N" "$CGDURATION" 64 >"$tmp/res" &
    cpid=$!
    wait_accepted "$fd0"
    (cd "$tmp" && callgrind_control -z "$spid" >/dev/null 2>&1)
    wait "$cpid"; cpid=""
    (cd "$tmp" && callgrind_control -d "$spid" >/dev/null 2>&1)
    stop_server
    trips=$(awk '{ print $2 }' "$tmp/res")
    f=$(ls "$tmp"/cg.out.* | head -1)
    set -- $(awk -v t="$trips" '/^events:/ { for (i = 2; i <= NF; i++) ev[i - 1] = $i }
      /^summary:/ { for (i = 2; i <= NF; i++) v[ev[i - 1]] = $i
        printf "%.0f %.2f %.2f", v["Ir"] / t, (v["D1mr"] + v["D1mw"]) / t, (v["DLmr"] + v["DLmw"]) / t; exit }' "$f")
    rm -f "$tmp"/cg.out*
    case $ll in 524288* | none) line="$line $trips $1 $2 $3" ;; *) line="$line $3" ;; esac
  done
  set -- $line "n/a"      # without cache simulation: no L3-size column (nor meaningful misses)
  printf "%-9s %8s %9s %11s %13s %13s\n" "$1" "$2" "$3" "$4" "$5" "$6"
done
