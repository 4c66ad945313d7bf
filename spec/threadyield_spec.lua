-- spec/threadyield_spec.lua — a thread that starts on its creator's CPU yields it once first
-- (thread.c "a new thread lets its creator go on"): on one CPU every start takes that path, with
-- OS threads reused or new, and STRAND_THREAD_YIELD=0 turns it off; either way every thread runs
-- once, in order of nothing, with its own arguments and results.
local H = require "support.helper"

-- Run on one CPU (taskset) when there is one to pin to: there every thread starts on its
-- creator's CPU. Starts 8 threads back to back, twice, then joins them; prints what they gave.
local CODE = [[
local thread = require "strand.thread"
local function cpu()
  local f = assert(io.open("/proc/thread-self/stat"))
  local line = f:read("l"); f:close()
  local v = {}
  for x in line:match("%) (.*)"):gmatch("%S+") do v[#v + 1] = x end
  return tonumber(v[37])                    -- field 39: the CPU it last ran on
end
local sum, cpus = 0, {}
for round = 1, 2 do
  local ts = {}
  for i = 1, 8 do ts[i] = thread.start(function(n, where) return n * 3, where() end, i + round, cpu) end
  for i = 1, 8 do
    local v, c = ts[i]:result(20)
    assert(v == (i + round) * 3, "thread " .. i .. " gave " .. tostring(v))
    sum = sum + v
    cpus[c] = true
  end
end
local n = 0
for _ in pairs(cpus) do n = n + 1 end
print("sum " .. sum .. " cpus " .. n .. " mine " .. cpu())
]]

describe("a thread started on its creator's CPU", function()
  H.guard()
  local pin = os.execute("taskset -c 0 true >/dev/null 2>&1") and "taskset -c 0 " or ""

  for _, env in ipairs { "", "STRAND_THREAD_YIELD=0", "STRAND_THREAD_IDLE=0", "STRAND_THREAD_YIELD=junk" } do
    it("runs every thread once with its own results" .. (env ~= "" and " (" .. env .. ")" or ""), function()
      local out, ok = H.lua(CODE, (env ~= "" and env .. " " or "") .. pin:gsub(" $", ""))
      assert.is_true(ok, out)
      -- 2 rounds of 8: sum over i of 3 (i + 1) + 3 (i + 2) = 3 (2 * 36 + 24)
      assert.matches("^sum 288 cpus %d+ mine %d+\n$", out)
      if pin ~= "" then assert.matches("cpus 1 mine 0\n", out) end   -- pinned: all on CPU 0
    end)
  end
end)
