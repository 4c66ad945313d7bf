#!/bin/sh
# bench/echo_one.sh — a latency-bound echo: NCONN (1) connections of bench/echo_client.c (CPU 1)
# to bench/echo_server_strand.lua (CPU 0), by poller (uring-nowatch: STRAND_URING_SPIN=0, no watch
# before sleeping, docs/uring.md 4.7), REPS runs interleaved: median round trips/s and the
# server's CPU microseconds per round trip (what the watch costs or saves).
# usage: sh bench/echo_one.sh [BUILD] [SECONDS] [REPS] [NCONN] [POLLERS]
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}; SECS=${2:-2}; REPS=${3:-5}; NCONN=${4:-1}; POLLERS=${5:-uring uring-nowatch epoll}
. bench/lib.sh
cc_bench "$build" echo_client
lua_env "$build"
tmp=$(mktemp -d)
spid=""
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
one() {
  case $1 in uring-nowatch) p=uring; w=0 ;; *) p=$1; w=1 ;; esac
  : >"$tmp/out"
  STRAND_POLLER=$p STRAND_URING_SPIN=$w taskset -c 0 lua5.4 bench/echo_server_strand.lua 0 >"$tmp/out" 2>"$tmp/err" &
  spid=$!
  i=0
  while ! grep -q '^PORT ' "$tmp/out" 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 200 ] && { echo "server did not start: $(cat "$tmp/err")" >&2; exit 1; }
    sleep 0.05
  done
  port=$(sed -n 's/^PORT //p' "$tmp/out")
  set -- $(taskset -c 1 "$build/bench/echo_client" -p "$spid" "$port" "$NCONN" "$SECS" 64)
  kill "$spid"; wait "$spid" 2>/dev/null || true; spid=""
  awk -v r="$1" -v n="$2" -v c="$4" 'BEGIN { printf "%.0f %.2f\n", r, c / n * 1e6 }'
}
r=0
while [ "$r" -lt "$REPS" ]; do
  for p in $POLLERS; do echo "$p $(one "$p")" >>"$tmp/res"; done
  r=$((r + 1))
done
for p in $POLLERS; do
  t=$(grep "^$p " "$tmp/res" | awk '{ print $2 }' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  c=$(grep "^$p " "$tmp/res" | awk '{ print $3 }' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  printf "echo %s conn(s), %-13s %8s round trips/s  server CPU %6s us per round trip\n" "$NCONN" "$p" "$t" "$c"
done
