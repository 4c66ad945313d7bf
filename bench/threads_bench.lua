-- bench/threads_bench.lua — T7: CPU-bound Lua in 1 vs 2 threads (no global lock), and the cost
-- of starting + joining a thread. Reports ratios measured in this run.
local strand = require "strand"
local thread = require "strand.thread"
local n = tonumber(os.getenv("STRAND_BENCH_CPU")) or 3e7

local function work(count)
  local x = 0
  for i = 1, count do x = x + i % 7 end
  return x
end

local best1, best2 = math.huge, math.huge
for _ = 1, 3 do
  local t0 = strand.now()
  thread.start(work, n):result(); thread.start(work, n):result()
  best1 = math.min(best1, strand.now() - t0)
  t0 = strand.now()
  local a, b = thread.start(work, n), thread.start(work, n)
  a:result(); b:result()
  best2 = math.min(best2, strand.now() - t0)
end
print(("cpu work x2: one after the other %.3f s, two threads at once %.3f s: speed-up %.2fx")
  :format(best1, best2, best1 / best2))

local N = 300
local t0 = strand.now()
for _ = 1, N do thread.start(function() return 1 end):result() end
local dt = strand.now() - t0
print(("thread start+join: %.0f us each (%d threads)"):format(dt / N * 1e6, N))
