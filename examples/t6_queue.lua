-- T6: queues: a full queue(5) refuses a put after its timeout; get_nowait on an empty queue says
-- so; LIFO; priority (ties keep insertion order); qsize; producer/consumer threads with
-- task_done/join. Usage: ./strand-run examples/t6_queue.lua
local thread = require "strand.thread"
local queue = require "strand.queue"

local q = queue.new(5)
for i = 1, 5 do q:put(i) end
print("qsize after 5 puts:", q:qsize(), "full:", q:full())
print("put on a full queue with timeout 0.1:", q:put(6, 0.1))
for _ = 1, 5 do q:get() end
print("get_nowait on an empty queue:", q:get_nowait())

local lifo = queue.lifo()
for _, v in ipairs { "a", "b", "c" } do lifo:put(v) end
print("lifo order:", lifo:get(), lifo:get(), lifo:get())

local pq = queue.priority()
pq:put("write docs", 3); pq:put("fix bug", 1); pq:put("second p1", 1); pq:put("lunch", 2)
local order = {}
while not pq:empty() do order[#order + 1] = pq:get() end
print("priority order:", table.concat(order, ", "))

local jobs = queue.new(3)
local results = queue.new()
local workers = {}
for w = 1, 2 do
  workers[w] = thread.start(function(id)
    while true do
      local job = jobs:get()
      if job == nil then return end           -- closed
      results:put(("worker %d squared %d = %d"):format(id, job, job * job))
      jobs:task_done()
    end
  end, w)
end
for i = 1, 10 do jobs:put(i) end
print("join (every job task_done):", jobs:join(10))
jobs:close()
for _, t in ipairs(workers) do assert(t:join()) end
print("results:", results:qsize())
print("t6: done")
