-- T5: an event as a traffic light: the light thread sets (green) and clears (red) it; the car
-- threads wait for green. Usage: ./strand-run examples/t5_event.lua
local thread = require "strand.thread"
local sync = require "strand.sync"
local queue = require "strand.queue"

local green, log = sync.event(), queue.new()
local light = thread.start(function()
  local strand = require "strand"
  for cycle = 1, 3 do
    green:clear(); log:put("light: red")
    strand.sleep(0.05)
    log:put("light: green"); green:set()   -- logged first: a woken car may log at once
    strand.sleep(0.05)
  end
end)
local cars = {}
for i = 1, 3 do
  cars[i] = thread.start(function(n)
    local strand = require "strand"
    strand.sleep(0.01 * n)
    while not green:is_set() do
      log:put(("car %d: waiting at red"):format(n))
      green:wait(1)
    end
    log:put(("car %d: drives through on green"):format(n))
  end, i)
end
for _, t in ipairs(cars) do assert(t:join()) end
assert(light:join())
while not log:empty() do print(log:get_nowait()) end
print("t5: done")
