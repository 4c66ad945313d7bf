#!/bin/sh
# bench/queue_methods_cg.sh — instructions (callgrind: exact and repeatable on a loaded machine) per
# q:put and per q:get on a bounded ring queue in one thread (an integer and a 100-byte string,
# alternately), counted inside the two methods only (--toggle-collect), so Lua's loop is not in.
# usage: sh bench/queue_methods_cg.sh [BUILD_DIR] [N]   (needs valgrind)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
n=${2:-100000}
. bench/lib.sh
lua_env "$build"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/pg.lua" <<'L'
local queue = require "strand.queue"
local q = queue.new(1000)
local s = ("x"):rep(100)
for i = 1, tonumber(arg[1]) do q:put(i); q:get(); q:put(s); q:get() end
L
for f in q_put q_get; do
  ir=$(valgrind --tool=callgrind --toggle-collect=$f --callgrind-out-file=/dev/null \
         lua5.4 "$tmp/pg.lua" "$n" 2>&1 | sed -n 's/.*Collected : //p')
  echo "$f: $(awk -v a="$ir" -v b="$n" 'BEGIN { printf "%.1f", a / (2 * b) }') instructions per call ($build)"
done
