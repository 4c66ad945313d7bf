#!/bin/sh
# bench/echo.sh — echo round trips per second at 1, 100 and 1000 connections: a strand server
# (one task per connection) against a plain C epoll server (the floor) and the peers that are
# installed — luv (libuv), cqueues, Python's selectors loop and gevent — with the load generator
# (bench/echo_client.c) in a separate process. DURATION seconds per run (5).
# usage: sh bench/echo.sh [BUILD_DIR]
#   env: DURATION=5, CONNS="1 100 1000", MSGSIZE=64, ROUNDS=1,
#        SERVERS="c strand luv cqueues selectors gevent" (those installed are run)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
DURATION=${DURATION:-5}
CONNS=${CONNS:-"1 100 1000"}
MSGSIZE=${MSGSIZE:-64}
bin=$build/bench
mkdir -p "$bin"
cc -O2 -o "$bin/echo_client" bench/echo_client.c
cc -O2 -o "$bin/echo_c_epoll" bench/echo_c_epoll.c
[ -f "$build/strand/core.so" ] || make -s BUILD="$build"
export LUA_PATH="lua/?.lua;lua/?/init.lua;;"
export LUA_CPATH="$build/?.so;;"

tmp=$(mktemp -d)
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM

# start NAME CMD...: starts a server and waits for its "PORT n" line (saved in $tmp/NAME.port)
start() {
  name=$1; shift
  "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  p=$!
  pids="$pids $p"
  i=0
  while ! grep -q '^PORT ' "$tmp/$name.out" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 100 ] || ! kill -0 "$p" 2>/dev/null; then
      echo "$name did not start:" >&2; cat "$tmp/$name.err" >&2; return 0
    fi
    sleep 0.05
  done
  sed -n 's/^PORT //p' "$tmp/$name.out" >"$tmp/$name.port"
}

# All servers run at once (idle while not measured); runs alternate between them, so load
# from elsewhere on the machine hits them alike. Each cell keeps the best of ROUNDS runs.
SERVERS=${SERVERS:-"c strand luv cqueues selectors gevent"}
want() { case " $SERVERS " in *" $1 "*) return 0 ;; esac; return 1; }
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3      # Debian's, where python3-gevent lives
start c "$bin/echo_c_epoll"
start strand lua5.4 bench/echo_server_strand.lua
names="c strand"
if want luv && lua5.4 -e 'require "luv"' 2>/dev/null; then start luv lua5.4 bench/echo_luv.lua; names="$names luv"; fi
if want cqueues && lua5.4 -e 'require "cqueues"' 2>/dev/null; then
  start cqueues lua5.4 bench/echo_cqueues.lua; names="$names cqueues"
fi
if want selectors && "$PY" -c 'import selectors' 2>/dev/null; then
  start selectors "$PY" bench/echo_selectors.py; names="$names selectors"
fi
if want gevent && "$PY" -c 'import gevent' 2>/dev/null; then start gevent "$PY" bench/echo_gevent.py; names="$names gevent"; fi
ROUNDS=${ROUNDS:-1}
r=0
while [ $r -lt "$ROUNDS" ]; do
  r=$((r + 1))
  for n in $CONNS; do
    for name in $names; do
      v="n/a"
      if [ -f "$tmp/$name.port" ]; then
        v=$("$bin/echo_client" "$(cat "$tmp/$name.port")" "$n" "$DURATION" "$MSGSIZE" 2>>"$tmp/$name.cerr") || v="n/a"
      fi
      old=$(cat "$tmp/$name.$n" 2>/dev/null || echo "n/a")
      awk -v a="$v" -v b="$old" 'BEGIN { if (b == "n/a" || (a != "n/a" && a + 0 > b + 0)) print a; else print b }' >"$tmp/$name.$n"
    done
  done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a+0 > 0 && b+0 > 0) printf "%.2f", a / b; else printf "n/a" }'; }
echo "echo round trips/s, ${MSGSIZE}-byte messages, ${DURATION} s per run, best of ${ROUNDS} (client: bench/echo_client.c)"
printf "%-6s" conns
for name in $names; do printf " %10s" "$name"; done
echo
for n in $CONNS; do
  printf "%-6s" "$n"
  for name in $names; do printf " %10s" "$(cat "$tmp/$name.$n")"; done
  echo
done
echo "ratios: strand / peer (above 1: strand is faster)"
printf "%-6s" conns
for name in $names; do [ "$name" = strand ] || printf " %10s" "/$name"; done
echo
for n in $CONNS; do
  printf "%-6s" "$n"
  s=$(cat "$tmp/strand.$n")
  for name in $names; do [ "$name" = strand ] || printf " %10s" "$(ratio "$s" "$(cat "$tmp/$name.$n")")"; done
  echo
done
