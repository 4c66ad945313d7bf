-- bench/process_luv.lua — the luv peer of bench/process_bench.lua: uv.spawn("true") and wait for
-- its exit, N times, one after the other.  Usage: lua5.4 bench/process_luv.lua N  -> "us N"
local uv = require "luv"
local n = tonumber(arg[1]) or 200
local t0 = uv.hrtime()
for _ = 1, n do
  local handle
  handle = uv.spawn("true", { args = {}, stdio = { nil, nil, nil } }, function()
    handle:close()
  end)
  assert(handle, "spawn failed")
  uv.run()
end
print(("us %.3f"):format((uv.hrtime() - t0) / n / 1e3))
