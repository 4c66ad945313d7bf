-- P8: a thread pool: submit 20 tasks, as_completed takes the first two results and moves on;
-- map returns results in order; on_done callbacks.
-- Usage: ./strand-run examples/p8_threadpool.lua
local strand = require "strand"
local pool = require "strand.pool"

local p <close> = pool.new{ size = 4, kind = "thread" }
local fs = {}
for i = 1, 20 do
  fs[i] = p:submit(function(n) require("strand").sleep(0.01 * (n % 5)); return n end, i)
end
local first = {}
for f in strand.as_completed(fs) do
  first[#first + 1] = f:result()
  if #first == 2 then break end
end
print(("the first two results: %d and %d (then we moved on)"):format(first[1], first[2]))
strand.joinall(fs)
print("map in order: " .. table.concat(p:map(function(x) return x * x end, { 1, 2, 3, 4, 5, 6, 7, 8 }), " "))
local called = 0
local f = p:submit(function() return "callback value" end)
f:on_done(function(x) called = called + 1; print("on_done got: " .. x:result()) end)
f:join()
print(("callbacks run: %d"):format(called))
print("p8: done")
