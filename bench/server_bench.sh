#!/bin/sh
# bench/server_bench.sh — multi-core servers: echo round trips/s of strand.server in "thread" and
# "prefork" modes (WORKERS loops) against the single-loop "task" mode, same load generator
# (bench/echo_client.c), one server at a time, REPS runs each interleaved, medians reported.
# usage: sh bench/server_bench.sh [BUILD_DIR]
#   env: WORK=0 (per message, WORK iterations of Lua arithmetic in the handler: WORK=3000 is a
#        CPU-bound handler costing ~36 us a message on this machine, where the load generator's share of the 2 cores is
#        small and the multi-core modes can show their scaling), DURATION=3, CONNS=100, MSGSIZE=64, REPS=3, WORKERS=2, MODES="task thread prefork",
#        PIPELINE=1 (>1: each client connection keeps PIPELINE messages in flight, sent as one batch, and
#        the server answers line by line, one send per message: the server then works more per message
#        than the load generator, as under redis-benchmark -P; see docs/server.md),
#        SERVER_CPUS=0-1 (taskset for the servers), CLIENT_CPUS= (taskset for the client; empty:
#        anywhere). On a 2-core machine the client shares the cores: the ratio is a lower bound.
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
. bench/lib.sh
DURATION=${DURATION:-3}
CONNS=${CONNS:-100}
MSGSIZE=${MSGSIZE:-64}
REPS=${REPS:-3}
WORK=${WORK:-0}
WORKERS=${WORKERS:-2}
PIPELINE=${PIPELINE:-1}
if [ "$PIPELINE" -gt 1 ]; then proto=line; copt="-P $PIPELINE"; else proto=raw; copt=""; fi
MODES=${MODES:-"task thread prefork"}
SERVER_CPUS=${SERVER_CPUS:-0-1}
CLIENT_CPUS=${CLIENT_CPUS:-}
bin=$build/bench
cc_bench "$build" echo_client
lua_env "$build"

tmp=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM

pin() { if [ -n "$1" ] && command -v taskset >/dev/null; then echo "taskset -c $1"; fi; }

# run MODE: starts the server, one client run, stops the server; prints round trips/s
run() {
  rm -f "$tmp/out"
  $(pin "$SERVER_CPUS") lua5.4 bench/server_echo.lua "$1" "$WORKERS" "$WORK" "$proto" >"$tmp/out" 2>"$tmp/err" &
  pid=$!
  i=0
  while ! grep -q '^PORT ' "$tmp/out" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 200 ] || ! kill -0 "$pid" 2>/dev/null; then echo "n/a"; cat "$tmp/err" >&2; return 0; fi
    sleep 0.05
  done
  port=$(sed -n 's/^PORT //p' "$tmp/out")
  v=$($(pin "$CLIENT_CPUS") "$bin/echo_client" $copt "$port" "$CONNS" "$DURATION" "$MSGSIZE" 2>>"$tmp/cerr") || { v="n/a"; cat "$tmp/cerr" >&2; }
  kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  pid=""
  echo "$v"
}

r=0
while [ $r -lt "$REPS" ]; do
  r=$((r + 1))
  for m in $MODES; do run "$m" >>"$tmp/$m"; done
done

median() { sort -g "$1" | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
base=$(median "$tmp/task")
if [ "$WORK" -gt 0 ]; then what="CPU-bound handler ($WORK Lua iterations per message)"; else what="echo"; fi
if [ "$PIPELINE" -gt 1 ]; then what="$what, pipelined $PIPELINE deep, answered line by line"; fi
echo "strand.server $what, $CONNS connections, ${MSGSIZE}-byte messages, ${DURATION} s per run, median of $REPS (servers on CPUs $SERVER_CPUS, $WORKERS workers)"
for m in $MODES; do
  v=$(median "$tmp/$m")
  awk -v m="$m" -v v="$v" -v b="$base" 'BEGIN { r = (v + 0 > 0 && b + 0 > 0) ? sprintf("%.2fx", v / b) : "n/a"; printf "%-8s %12s round trips/s  %s of task mode\n", m, v, r }'
done
