#!/bin/sh
# bench/queue_locked_cg.sh — instructions (callgrind: exact and repeatable on a loaded machine) per
# q:put and per q:get on the locked path (priority, LIFO, FIFO above the ring's size) in one thread,
# 10 items held, counted inside the two methods only (--toggle-collect).
# usage: sh bench/queue_locked_cg.sh [BUILD_DIR] [N]   (needs valgrind)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
n=${2:-20000}
. bench/lib.sh
lua_env "$build"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/pg.lua" <<'L'
local queue = require "strand.queue"
local kind = arg[2]
local q = kind == "lifo" and queue.lifo() or kind == "fifo" and queue.new(20000) or queue.priority()
for i = 1, 10 do if kind == "priority" then q:put(i, i) else q:put(i) end end
for i = 1, tonumber(arg[1]) do
  if kind == "priority" then q:put(i, i % 7) else q:put(i) end
  q:get()
end
L
for kind in priority lifo fifo; do
  for f in q_put q_get; do
    ir=$(valgrind --tool=callgrind --toggle-collect=$f --callgrind-out-file=/dev/null \
           lua5.4 "$tmp/pg.lua" "$n" "$kind" 2>&1 | sed -n 's/.*Collected : //p')
    echo "$kind $f: $(awk -v a="$ir" -v b="$n" 'BEGIN { printf "%.1f", a / b }') instructions per call ($build)"
  done
done
