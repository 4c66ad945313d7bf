-- T7: CPU-bound Lua in 2 threads runs in parallel (each thread has its own Lua state: there is
-- no global lock). Prints both timings and the speed-up. Usage: ./strand-run examples/t7_cpu.lua [n]
local strand = require "strand"
local thread = require "strand.thread"
local n = tonumber(arg[1]) or 2e7

local function work(count)
  local x = 0
  for i = 1, count do x = x + i % 7 end
  return x
end

local t0 = strand.now()
local a, b = work(n), work(n)
local serial = strand.now() - t0

t0 = strand.now()
local ts = { thread.start(work, n), thread.start(work, n) }
local c, d = ts[1]:result(), ts[2]:result()
local parallel = strand.now() - t0

assert(a == c and b == d, "the threads computed something else")
print(("one thread: %.2f s; two threads: %.2f s; speed-up %.2fx on %s"):format(
  serial, parallel, serial / parallel, io.popen("nproc"):read("l") .. " cores"))
print("t7: done")
