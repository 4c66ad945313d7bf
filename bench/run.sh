#!/bin/sh
# `make bench`: every benchmark in bench/, each printing its own numbers and its ratios to the
# peers it measures in the same run. $1 = build dir.
build=${1:-build}
export LUA_PATH="lua/?.lua;lua/?/init.lua;;"
export LUA_CPATH="$build/?.so;;"
for b in bench/*_bench.lua; do
  echo "### $b"
  lua5.4 "$b" || echo "($b failed)"
done
for b in bench/*.sh; do
  [ "$b" = bench/run.sh ] && continue
  echo "### $b"
  sh "$b" "$build" || echo "($b failed)"
done
echo "### bench/socket_idle_memory.lua"
lua5.4 bench/socket_idle_memory.lua 10000 "$build" || echo "(bench/socket_idle_memory.lua failed)"
echo "### bench/object_memory.lua"
STRAND_BUILD="$build" lua5.4 bench/object_memory.lua || echo "(bench/object_memory.lua failed)"
