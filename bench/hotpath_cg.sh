#!/bin/sh
# bench/hotpath_cg.sh — instructions (callgrind: exact and repeatable on a loaded machine) per
# unit of the hot paths issue 14 names, each as a process doing N units minus one doing none:
# a task's spawn+yield+finish next to a bare coroutine's, a thread start+join that requires
# strand.sync, and one send + recv(64) + fileno round on a socket pair inside a task.
# usage: sh bench/hotpath_cg.sh [BUILD_DIR] [N]   (needs valgrind)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
n=${2:-20000}
. bench/lib.sh
lua_env "$build"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/sync.lua" <<'L'
local thread = require "strand.thread"
local fn = function() local sync = require "strand.sync"; return sync ~= nil end
for _ = 1, tonumber(arg[1]) do thread.start(fn):result() end
L
cat >"$tmp/sock.lua" <<'L'
local strand = require "strand"
local socket = require "strand.socket"
local N = tonumber(arg[1])
local a, b = assert(socket.pair())
local msg = string.rep("x", 64)
local t = strand.spawn(function()
  for _ = 1, N do a:send(msg); assert(b:recv(64)); assert(a:fileno()) end
end)
assert(t:join())
a:close(); b:close()
L
per() {  # label units script args-before-N
  label=$1 units=$2; shift 2
  a=$(cg_count /dev/null "$@" 0); b=$(cg_count /dev/null "$@" "$units")
  printf '%-44s %8d instructions\n' "$label" $(( (b - a) / units ))
}
per "bare coroutine create+resume+resume" "$n" bench/tasks_bench.lua run floor
per "task spawn+yield+finish (strand.sleep(0))" "$n" bench/tasks_bench.lua run strand
threads=$(( n / 400 > 10 ? n / 400 : 10 ))
per "thread start+join requiring strand.sync" "$threads" "$tmp/sync.lua"
per "socket send+recv(64)+fileno in a task" "$n" "$tmp/sock.lua"
