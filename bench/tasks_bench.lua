-- bench/tasks_bench.lua — cost of a task's life (spawn + switch + finish) and memory per waiting
-- task, next to plain Lua coroutines (the floor).
-- Run: make bench, or LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;" lua5.4 bench/tasks_bench.lua [N]
local strand = require "strand"
local N = tonumber(arg and arg[1]) or tonumber(os.getenv("STRAND_BENCH_TASKS")) or 1000000

local function clock() return os.clock() end
local function kib() return collectgarbage("count") end

local function measure(name, fn)
  collectgarbage(); collectgarbage()
  local t0 = clock()
  fn()
  local dt = clock() - t0
  print(("%-44s %8.0f ns/task  %10.0f tasks/s"):format(name, dt / N * 1e9, N / dt))
  return dt
end

-- 1. floor: coroutine.create + resume to a yield + resume to the end
local function body() coroutine.yield() end
local floor = measure("lua coroutine create+yield+finish", function()
  local cos = {}
  for i = 1, N do local co = coroutine.create(body); coroutine.resume(co); cos[i] = co end
  for i = 1, N do coroutine.resume(cos[i]); cos[i] = nil end
end)

-- 2. strand: spawn + one sleep(0) switch + finish
local function tbody() strand.sleep(0) end
local st = measure("strand spawn+sleep(0)+finish", function()
  for _ = 1, N do strand.spawn(tbody) end
  strand.run()
end)
print(("  ratio strand/coroutine: %.2fx"):format(st / floor))

-- 3. memory per waiting task (all N alive at once, each blocked in a sleep)
collectgarbage(); collectgarbage()
local base = kib()
local cos = {}
for i = 1, N do local co = coroutine.create(body); coroutine.resume(co); cos[i] = co end
collectgarbage(); collectgarbage()
local per_co = (kib() - base) * 1024 / N
cos = nil
collectgarbage(); collectgarbage()
base = kib()
local far = 3600
for _ = 1, N do strand.spawn(strand.sleep, far) end
strand.sleep(0)          -- every task runs to its sleep
collectgarbage(); collectgarbage()
local per_task = (kib() - base) * 1024 / N
print(("memory: plain coroutine %.0f B; waiting strand task %.0f B (%.0f B beyond the coroutine) for %d tasks")
  :format(per_co, per_task, per_task - per_co, N))
os.exit(0)   -- do not wait for a million sleepers
