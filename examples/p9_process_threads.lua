-- P9: a process that starts threads inside it (and joins them), its results back to the parent.
-- Usage: ./strand-run examples/p9_process_threads.lua
local process = require "strand.process"

local p = process.start(function()
  local thread = require "strand.thread"
  local ts = {}
  for i = 1, 4 do
    ts[i] = thread.start(function(n)
      local s = 0
      for k = 1, 200000 do s = s + k % n end
      return s, thread.id()
    end, i + 1)
  end
  local out = {}
  for i = 1, 4 do
    local s, id = ts[i]:result()
    out[i] = ("thread %d: %d"):format(id, s)
  end
  return process.pid(), out
end)
local pid, lines = p:result()
print(("process %d ran 4 threads:"):format(pid))
for _, l in ipairs(lines) do print("  " .. l) end
print("p9: done")
