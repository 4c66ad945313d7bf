-- P4: producer/consumer across processes with a joinable queue: the producer waits with
-- q:join() until the consumers have task_done every item.
-- Usage: ./strand-run examples/p4_queue.lua [items (100)]
local process = require "strand.process"
local queue = require "strand.queue"
local shared = require "strand.shared"
local n = tonumber(arg[1]) or 100

local q, results = queue.new(10), shared.dict()
local consumers = {}
for c = 1, 2 do
  consumers[c] = process.start(function()
    local got = 0
    while true do
      local item = q:get()
      if item == nil then break end        -- closed and drained
      results:incr("sum", item)
      got = got + 1
      q:task_done()
    end
    return got
  end)
end
local producer = process.start(function()
  for i = 1, n do q:put(i) end
  q:join()                                 -- every item has been processed
  return "all " .. n .. " items processed"
end)
print("producer: " .. producer:result())
q:close()
local total = 0
for c = 1, 2 do
  local got = consumers[c]:result()
  print(("consumer %d took %d item(s)"):format(c, got))
  total = total + got
end
print(("%d items consumed, sum %d (expected %d)"):format(total, results.sum, n * (n + 1) // 2))
print("p4: done")
