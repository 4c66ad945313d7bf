-- bench/tasks_bench.lua — cost of a task's life (spawn + one switch + finish) next to plain Lua
-- coroutines (the floor: create + resume to a yield + resume to the end), and memory per task
-- waiting in each kind of wait next to a suspended coroutine. Every figure comes from its own
-- process (pinned to one CPU), each rep after waiting for an idle machine; medians of REPS.
-- Run: make bench, or LUA_PATH="lua/?.lua;lua/?/init.lua;bench/?.lua;;" LUA_CPATH="build/?.so;;"
--        lua5.4 bench/tasks_bench.lua [N]      (env REPS=5, QUICK=1: fewer tasks)
local mode = arg[1]

-- {==== the measured processes: `tasks_bench.lua run floor|strand N`, `... mem KIND N`

local function kib() return collectgarbage("count") end

if mode == "run" then
  local what, N = arg[2], tonumber(arg[3])
  collectgarbage(); collectgarbage()
  local t0, dt = os.clock(), nil
  if what == "floor" then
    local function body() coroutine.yield() end
    local cos = {}
    for i = 1, N do local co = coroutine.create(body); coroutine.resume(co); cos[i] = co end
    for i = 1, N do coroutine.resume(cos[i]); cos[i] = nil end
    dt = os.clock() - t0
  else
    local strand = require "strand"
    local function tbody() strand.sleep(0) end
    t0 = os.clock()
    for _ = 1, N do strand.spawn(tbody) end
    strand.run()
    dt = os.clock() - t0
  end
  print(("ns/task %.1f"):format(dt / N * 1e9))
  os.exit(0)
end

if mode == "mem" then
  local kind, N = arg[2], tonumber(arg[3])
  local strand = kind ~= "coroutine" and require "strand"
  local sync = kind ~= "coroutine" and require "strand.sync"
  local queue = kind ~= "coroutine" and require "strand.queue"
  local keep = {}
  collectgarbage(); collectgarbage()
  local base = kib()
  if kind == "coroutine" then             -- the list is made first: only the coroutines count
    local function body() coroutine.yield() end
    for i = 1, N do keep[i] = false end
    collectgarbage(); collectgarbage()
    base = kib()
    for i = 1, N do local co = coroutine.create(body); coroutine.resume(co); keep[i] = co end
  elseif kind == "sleep" then
    for _ = 1, N do strand.spawn(strand.sleep, 3600) end
  elseif kind == "event" then
    local ev = sync.event()
    keep.ev = ev
    local function w() ev:wait() end
    for _ = 1, N do strand.spawn(w) end
  elseif kind == "condition" then
    local c = sync.condition()
    keep.c = c
    local function w() c:acquire(); c:wait(); c:release() end
    for _ = 1, N do strand.spawn(w) end
  elseif kind == "queue" then
    local q = queue.new()
    keep.q = q
    local function w() q:get() end
    for _ = 1, N do strand.spawn(w) end
  end
  if strand then strand.sleep(0) end       -- every task runs to its wait
  collectgarbage(); collectgarbage()
  print(("bytes %.1f"):format((kib() - base) * 1024 / N))
  os.exit(0)                               -- do not wait for the sleepers
end

-- }====

local B = require "benchlib"
local N = tonumber(mode) or tonumber(os.getenv("STRAND_BENCH_TASKS")) or (B.QUICK and 200000 or 1000000)
local MEMN = B.QUICK and 100000 or N
local pin = (io.popen("nproc"):read("n") or 1) >= 2 and "taskset -c 1 " or ""
local self = "lua5.4 " .. arg[0]

print(("spawn+yield+finish, %d tasks, each figure in its own process; ns per task"):format(N))
print("rep   coroutine     strand   ratio  machine")
local ratios, floors, strands = {}, {}, {}
for r = 1, B.REPS do
  local flag = B.wait_idle()
  local f = tonumber(B.sh(("%s%s run floor %d"):format(pin, self, N)):match("ns/task ([%d.]+)"))
  local s = tonumber(B.sh(("%s%s run strand %d"):format(pin, self, N)):match("ns/task ([%d.]+)"))
  if not (f and s) then print("failed"); os.exit(1) end
  floors[r], strands[r], ratios[r] = f, s, s / f
  print(("%-4d %10.0f %10.0f %7.2f  %s"):format(r, f, s, s / f, flag))
  B.record("tasks", N, r, f, s, flag)
end
local lo, hi = B.range(ratios)
print(("median: coroutine %.0f ns, strand %.0f ns, ratio %.2fx (%.2f-%.2f)")
  :format(B.median(floors), B.median(strands), B.median(ratios), lo, hi))

print(("memory per waiting task (%d at once, Lua heap after a full GC)"):format(MEMN))
for _, kind in ipairs { "coroutine", "sleep", "event", "condition", "queue" } do
  local flag = "idle"          -- a heap size: the machine's load does not change it
  local b = tonumber(B.sh(("%s%s mem %s %d"):format(pin, self, kind, MEMN)):match("bytes ([%d.]+)"))
  print(("  %-10s %8s B"):format(kind, b and ("%.0f"):format(b) or "n/a"))
  if b then B.record("taskmem", kind, b, flag) end
end
