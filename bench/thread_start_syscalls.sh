#!/bin/sh
# bench/thread_start_syscalls.sh — system calls per thread start + join (strace -f -c: exact on a
# loaded machine, unlike times), as a process starting N threads minus one starting none.
# usage: sh bench/thread_start_syscalls.sh [BUILD_DIR] [N]   (needs strace)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
n=${2:-200}
export LUA_PATH="lua/?.lua;lua/?/init.lua;;"
export LUA_CPATH="$build/?.so;;"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '%s\n' 'local thread = require "strand.thread"' \
  'for _ = 1, tonumber(arg[1]) do thread.start(function() return 1 end):result() end' >"$tmp/t.lua"
count() {  # N -> "syscall calls" lines
  strace -f -c -o "$tmp/s.$1" lua5.4 "$tmp/t.lua" "$1" >/dev/null
  awk 'NR > 2 && $1 !~ /^-/ && $NF != "total" { print $NF, $4 }' "$tmp/s.$1"
}
count 0 >"$tmp/a"
count "$n" >"$tmp/b"
awk -v n="$n" 'NR == FNR { a[$1] = $2; next } { d = ($2 - a[$1]) / n; if (d >= 0.05) { printf "  %-18s %5.2f\n", $1, d; t += d } }
  END { printf "system calls per thread start+join: %.2f (%d threads; strace -f -c)\n", t, n }' "$tmp/a" "$tmp/b"
