#!/bin/sh
# bench/thread_start_cg.sh — instructions per thread start + join, counted by callgrind (exact and
# repeatable on a loaded machine, unlike times): a process starting N threads minus one starting
# none, divided by N; for a function over the strand module and a plain one, the latter split
# into the creator's side and the thread's side.
# usage: sh bench/thread_start_cg.sh [BUILD_DIR] [N]   (needs valgrind)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
n=${2:-100}
. bench/lib.sh
lua_env "$build"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
code='local strand = require "strand"
local thread = require "strand.thread"
local fn = arg[2] == "closure" and function() return strand.now() end or function() return 1 end
for _ = 1, tonumber(arg[1]) do thread.start(fn):result() end'
printf '%s\n' "$code" >"$tmp/t.lua"
count() {  # N [closure]
  cg_count "$tmp/cg.$1${2:-}" "$tmp/t.lua" "$1" ${2:-}
}
a=$(count 0 closure); b=$(count "$n" closure)
echo "a function over require \"strand\": $(( (b - a) / n )) instructions per thread start+join"
a=$(count 0); b=$(count "$n")
echo "function() return 1 end:        $(( (b - a) / n )) instructions per thread start+join ($n threads; callgrind)"
if command -v callgrind_annotate >/dev/null 2>&1; then
  callgrind_annotate --inclusive=yes "$tmp/cg.$n" 2>/dev/null |
    awk -v n="$n" '/thread.c:(thr_main|l_start) / { gsub(",", "", $1); printf "  %-10s %10d\n", ($0 ~ /thr_main/ ? "thread" : "creator"), $1 / n }'
fi
