-- bench/threads_bench.lua — OS threads: the cost of starting + joining one (strand against C
-- pthreads, Python's threading and luv's threads, each in its own process) and CPU-bound Lua in
-- 1 vs 2 threads (no global lock; strand and luv; Python with a Pool of 2 processes). Medians of REPS, each rep after waiting for
-- an idle machine. Run: make bench, or LUA_PATH="lua/?.lua;lua/?/init.lua;bench/?.lua;;"
-- LUA_CPATH="build/?.so;;" lua5.4 bench/threads_bench.lua [BUILD_DIR]   (env REPS, QUICK=1)
local mode = arg[1]

local function work(count)
  local x = 0
  for i = 1, count do x = x + i % 7 end
  return x
end

local function clock()
  local ok, strand = pcall(require, "strand")
  if ok then return strand.now end
  local uv = require "luv"
  return function() return uv.hrtime() * 1e-9 end
end

-- {==== the measured processes: `threads_bench.lua run start|cpu strand|luv N`

if mode == "run" then
  local what, impl, n = arg[2], arg[3], tonumber(arg[4])
  local now = clock()
  local start, wait
  if impl == "strand" then
    local thread = require "strand.thread"
    start = function(fn, ...) return thread.start(fn, ...) end
    wait = function(t) assert(t:result()) end
  else
    local uv = require "luv"
    start = function(fn, ...) return uv.new_thread(fn, ...) end
    wait = function(t) t:join() end
  end
  if what == "start" then
    for _ = 1, 10 do wait(start(function() return 1 end)) end   -- warm-up, as every peer does
    local t0 = now()
    for _ = 1, n do wait(start(function() return 1 end)) end
    print(("us %.2f"):format((now() - t0) / n * 1e6))
  else
    local t0, c0 = now(), os.clock()
    wait(start(work, n)); wait(start(work, n))
    local seq, cseq = now() - t0, os.clock() - c0
    t0, c0 = now(), os.clock()
    local a, b = start(work, n), start(work, n)
    wait(a); wait(b)
    -- CPU time (the process's, every thread's) two at once over one after the other: above 1
    -- only if the threads slow each other down (shared lines, a lock, GC); the machine's other
    -- load lowers the speed-up but not this
    print(("speedup %.4f cpuratio %.4f"):format(seq / (now() - t0), (os.clock() - c0) / cseq))
  end
  os.exit(0)
end

-- }====

local B = require "benchlib"
local build = mode or "build"
local STARTS = B.QUICK and 100 or 300
local CPU = B.QUICK and 1e7 or 3e7
local self = "lua5.4 " .. arg[0]
local has_luv = select(2, B.sh("lua5.4 -e 'require \"luv\"'"))
local cbin = build .. "/bench/thread_start_c"
local _, cc_ok = B.sh(("mkdir -p %s/bench && cc -O2 -pthread -o %s bench/thread_start_c.c"):format(build, cbin))

local peers = {
  { "strand", ("%s run start strand %d"):format(self, STARTS) },
  { "C", cc_ok and ("%s %d"):format(cbin, STARTS * 10) },
  { "python", ("%s bench/threads_py.py start %d"):format(B.PY, STARTS) },
  { "luv", has_luv and ("%s run start luv %d"):format(self, STARTS) },
}
print(("thread start + join, us each (%d per process), median (min-max) of %d"):format(STARTS, B.REPS))
local med = {}
for _, p in ipairs(peers) do
  local name, cmd = p[1], p[2]
  if cmd then
    local vals, loaded = B.reps(cmd, "us ([%d.]+)")
    if vals then
      local lo, hi = B.range(vals)
      med[name] = B.median(vals)
      print(("  %-7s %8.1f  (%.1f-%.1f)%s"):format(name, med[name], lo, hi, loaded and "  loaded" or ""))
      B.record("threadstart", name, table.concat(vals, ","), loaded and "loaded" or "idle")
    end
  end
end
if med.strand then
  for _, p in ipairs { "C", "python", "luv" } do
    if med[p] then print(("  strand / %s: %.2fx the time"):format(p, med.strand / med[p])) end
  end
end

print(("CPU-bound Lua, 2 x %g iterations: one thread after the other / two at once"):format(CPU))
local cpu_cmds = {
  strand = ("%s run cpu strand %d"):format(self, CPU),
  luv = has_luv and ("%s run cpu luv %d"):format(self, CPU),
  python = ("%s bench/threads_py.py cpu %d"):format(B.PY, CPU // 4),   -- Pool of 2 processes
}
for _, impl in ipairs { "strand", "luv", "python" } do
  local vals, loaded
  if cpu_cmds[impl] then vals, loaded = B.reps(cpu_cmds[impl], "speedup ([%d.]+)") end
  if vals then
    local lo, hi = B.range(vals)
    print(("  %-7s speed-up %.2f (%.2f-%.2f)%s"):format(impl, B.median(vals), lo, hi, loaded and "  loaded" or ""))
    B.record("cpu2", impl, table.concat(vals, ","), loaded and "loaded" or "idle")
    local ratios = impl ~= "python" and B.reps(cpu_cmds[impl], "cpuratio ([%d.]+)", 1)
    if ratios then
      print(("  %-7s CPU time two at once / one after the other: %.3f (1.00: no contention)")
        :format(impl, ratios[1]))
    end
  end
end
