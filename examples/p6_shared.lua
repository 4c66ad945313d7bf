-- P6: a Manager-style shared dict and list changed by 5 processes; every change is there.
-- Usage: ./strand-run examples/p6_shared.lua
local process = require "strand.process"
local shared = require "strand.shared"

local d, l = shared.dict(), shared.list()
local ps = {}
for i = 1, 5 do
  ps[i] = process.start(function()
    d["worker" .. i] = process.pid()
    for _ = 1, 100 do d:incr("total") end
    l:append(i * i)
    return true
  end)
end
for i = 1, 5 do assert(ps[i]:result()) end
local keys = d:keys()
table.sort(keys)
print("dict keys: " .. table.concat(keys, " "))
print(("total = %d (5 processes x 100 atomic increments)"):format(d.total))
local items = l:items()
table.sort(items)
print("list: " .. table.concat(items, " "))
print("p6: done")
