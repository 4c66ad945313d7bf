-- bench/slow_readers_rss.lua — memory with many slow readers: N socket pairs in one process, a
-- writer per pair sending M messages of SIZE bytes at once, a reader per pair taking one read of
-- SIZE bytes every DELAY seconds (first it waited for three 1-byte messages, as a server's reader
-- does, so that under io_uring it reads by recv requests). Prints the peak RSS (VmHWM), the Lua heap's peak (sampled), the
-- bytes the readers got, and under io_uring the provided-buffer pool (docs/uring.md 4.8).
-- usage: lua5.4 bench/slow_readers_rss.lua [N] [M] [SIZE] [DELAY] [REPS]
--   runs each poller (POLLERS, default "uring epoll") in a fresh process REPS times, interleaved,
--   and prints medians; one run alone: lua5.4 bench/slow_readers_rss.lua N M SIZE DELAY run
-- env: POLLERS; GCSTOP=1 stops the collector in the runs (the garbage made, not collected);
--   WRITE=send: the writers use send (send(2) under every poller) instead of sendall (under
--   io_uring a SEND request, whose task resumes at its completion: a writer lives M loop rounds).
local N = tonumber(arg[1]) or 2000
local M = tonumber(arg[2]) or 20
local SIZE = tonumber(arg[3]) or 1024
local DELAY = tonumber(arg[4]) or 0.005

local function status(key)
  for line in io.lines("/proc/self/status") do
    local v = line:match("^" .. key .. ":%s+(%d+)")
    if v then return tonumber(v) end
  end
end

if arg[5] ~= "run" then
  local reps = tonumber(arg[5]) or 3
  local pollers = {}
  for p in (os.getenv("POLLERS") or "uring epoll"):gmatch("%S+") do pollers[#pollers + 1] = p end
  local rows = {}
  for _ = 1, reps do
    for _, p in ipairs(pollers) do
      local cmd = ("STRAND_POLLER=%s lua5.4 %s %d %d %d %s run"):format(p, arg[0], N, M, SIZE, DELAY)
      local h = io.popen(cmd)
      local out = h:read("a")
      h:close()
      rows[p] = rows[p] or {}
      local r = {}
      for k, v in out:gmatch("([%w_]+)=(%-?[%d%.]+)") do r[k] = tonumber(v) end
      if not r.hwm_kib then error("run failed: " .. cmd .. "\n" .. out) end
      table.insert(rows[p], r)
    end
  end
  local function median(list, key)
    local v = {}
    for _, r in ipairs(list) do v[#v + 1] = r[key] or 0 end
    table.sort(v)
    return v[(#v + 1) // 2]
  end
  print(("%d slow readers, %d x %d B each, one read per %.3f s; medians of %d"):format(N, M, SIZE, DELAY, reps))
  for _, p in ipairs(pollers) do
    local l = rows[p]
    print(("  %-6s peak RSS %6.1f MB  start %5.1f MB  Lua heap peak %6.1f MB  reads %7d  pool %5.1f MB (min free %d of %d)  wall %.2f s")
      :format(p, median(l, "hwm_kib") / 1024, median(l, "rss0_kib") / 1024, median(l, "heap_peak_kib") / 1024,
              median(l, "reads"), median(l, "pool_kib") / 1024, median(l, "min_free"), median(l, "nbuf"), median(l, "wall")))
  end
  os.exit(0)
end

local strand = require "strand"
local socket = require "strand.socket"
local core = require "strand.core"
if os.getenv("GCSTOP") == "1" then collectgarbage("stop") end
local WRITE_SEND = os.getenv("WRITE") == "send"

local rss0 = status("VmRSS")
local peak, reads, got = 0, 0, 0
local msg = ("x"):rep(SIZE)
local t0 = strand.now()
strand.run(function()
  local done = false
  strand.spawn(function()                       -- samples the Lua heap
    while not done do
      local k = collectgarbage("count")
      if k > peak then peak = k end
      strand.sleep(0.005)
    end
  end)
  local g = strand.group()
  for _ = 1, N do
    local a, b = assert(socket.pair())
    local warm = strand.sync.event()
    g:spawn(function()
      for i = 1, 3 do                           -- the reader waits for each: a server's reader
        strand.sleep(0.02 * i)                  -- (under io_uring: read by recv requests)
        assert(a:sendall("w"))
      end
      warm:wait()
      for _ = 1, M do
        if WRITE_SEND then assert(assert(a:send(msg)) == #msg) else assert(a:sendall(msg)) end
      end
      a:close()
    end)
    g:spawn(function()
      for _ = 1, 3 do assert(b:recv(1) == "w") end
      warm:set()
      while true do
        local s = b:recv(SIZE)
        if not s or s == "" then break end
        reads = reads + 1
        got = got + #s
        strand.sleep(DELAY)
      end
      b:close()
    end)
  end
  g:wait()
  done = true
end)
local wall = strand.now() - t0
assert(got == N * M * SIZE, "readers got " .. got)
local st = core._uring and core._uring.stats()
print(("hwm_kib=%d rss0_kib=%d heap_peak_kib=%.0f reads=%d pool_kib=%d min_free=%d nbuf=%d wall=%.3f")
  :format(status("VmHWM"), rss0, peak, reads, st and st.nbuf * 512 // 1024 or 0, st and st.min_free or 0,
          st and st.nbuf or 0, wall))
