#!/bin/sh
# bench/echo_allocs.sh — the garbage of one echo round trip, exactly: heap allocations (every
# malloc/calloc/realloc, Lua's and strand's C ones: memcheck's "total heap usage") and bytes
# allocated per round trip by bench/echo_server_strand.lua unchanged, as the difference between a
# run of T1 and one of T2 round trips over the same N connections (accepts and closes cancel out),
# divided by the extra round trips. A loaded machine does not change these counts.
# usage: sh bench/echo_allocs.sh [BUILD_DIR]
#   env: CONNS="1000" POLLERS="uring epoll" T1=5000 T2=25000 (needs valgrind)
set -eu
[ -n "${DEBUG:-}" ] && set -x
cd "$(dirname "$0")/.."
build=${1:-build}
. bench/lib.sh
CONNS=${CONNS:-1000}
POLLERS=${POLLERS:-"uring epoll"}
T1=${T1:-5000}; T2=${T2:-25000}
bin=$build/bench
cc_bench "$build" echo_client
lua_env "$build"
command -v valgrind >/dev/null || { echo "needs valgrind" >&2; exit 1; }
tmp=$(mktemp -d)
spid=""
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# one run: POLLER N TRIPS -> "trips allocs bytes"
run() {
  : >"$tmp/out"
  # shellcheck disable=SC2086
  env STRAND_POLLER=$1 $PIN_SERVER valgrind --leak-check=no --log-file="$tmp/vg" \
    lua5.4 bench/echo_server_strand.lua 0 "$2" >"$tmp/out" 2>"$tmp/err" &
  spid=$!
  i=0
  while ! grep -q '^PORT ' "$tmp/out" 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 1200 ] && { echo "server did not start: $(cat "$tmp/err")" >&2; exit 1; }
    sleep 0.05
  done
  port=$(sed -n 's/^PORT //p' "$tmp/out")
  # shellcheck disable=SC2086
  res=$($PIN_LOAD "$bin/echo_client" -n "$3" -p "$spid" "$port" "$2" 600 64)
  i=0
  while kill -0 "$spid" 2>/dev/null; do          # it exits once every connection closed
    i=$((i + 1)); [ $i -gt 2400 ] && { kill "$spid"; echo "server did not exit" >&2; exit 1; }
    sleep 0.05
  done
  wait "$spid" 2>/dev/null || true; spid=""
  set -- $res
  h=$(sed -n 's/.*total heap usage: \([0-9,]*\) allocs, [0-9,]* frees, \([0-9,]*\) bytes allocated.*/\1 \2/p' "$tmp/vg" | tr -d ,)
  echo "$2 $h"             # (echo_client prints: trips/s, trips, ...)
}

echo "echo_allocs: 64-byte messages, T1=$T1 T2=$T2 round trips, heap allocations of the server per round trip"
printf "%-6s %-7s %12s %12s\n" conns poller "allocs/trip" "bytes/trip"
for n in $CONNS; do
  for p in $POLLERS; do
    set -- $(run "$p" "$n" "$T1"); a_t=$1; a_n=$2; a_b=$3
    set -- $(run "$p" "$n" "$T2"); b_t=$1; b_n=$2; b_b=$3
    awk -v n="$n" -v p="$p" -v at="$a_t" -v an="$a_n" -v ab="$a_b" -v bt="$b_t" -v bn="$b_n" -v bb="$b_b" \
      'BEGIN { printf "%-6s %-7s %12.3f %12.1f\n", n, p, (bn - an) / (bt - at), (bb - ab) / (bt - at) }'
  done
done
