-- bench/gc_churn.lua — the Lua heap of an echo server whose connections come and go, per GC
-- setting: P long-lived connections doing round trips while C tasks each open a connection, do
-- 5 round trips and close it, again and again (client and server in this one process). Prints
-- the heap's peak over its live size at the end (every long-lived connection still open).
-- usage: lua5.4 bench/gc_churn.lua [default|gen|gen50] [P=2000] [C=50] [TRIPS=60]
--   gen: collectgarbage("incremental", 110); collectgarbage("generational")
--   gen50: the same with major multiplier 50 (a major collection at +50% instead of +100%)
local how, P, C, TRIPS = arg[1] or "default", tonumber(arg[2]) or 2000, tonumber(arg[3]) or 50,
  tonumber(arg[4]) or 60
if how == "gen" or how == "gen50" then
  collectgarbage("incremental", 110)
  collectgarbage("generational", 20, how == "gen50" and 50 or 100)
else
  assert(how == "default", "default, gen or gen50")
end
local strand = require "strand"
local socket = require "strand.socket"
local MSG = ("m"):rep(64)
local peak, churned = 0, 0

local function handle(conn)
  while true do
    local data = conn:recv(65536)
    if not data then break end
    if not conn:sendall(data) then break end
  end
  conn:close()
end

local function trip(c)
  assert(c:sendall(MSG))
  local got = 0
  while got < #MSG do got = got + #assert(c:recv(65536)) end
  local k = collectgarbage("count")
  if k > peak then peak = k end
end

strand.run(function()
  local srv = assert(socket.listen("127.0.0.1", 0, { backlog = 4096 }))
  local _, port = srv:getsockname()
  strand.spawn(function()
    while true do
      local conn = srv:accept()
      if not conn then break end
      strand.spawn(handle, conn)
    end
  end)
  local clients = {}
  for i = 1, P do clients[i] = assert(socket.connect("127.0.0.1", port)) end
  local done = false
  local churners = strand.group()
  for _ = 1, C do
    churners:spawn(function()
      while not done do
        local c = assert(socket.connect("127.0.0.1", port))
        for _ = 1, 5 do trip(c) end
        c:close()
        churned = churned + 1
      end
    end)
  end
  local long = strand.group()
  for i = 1, P do long:spawn(function() for _ = 1, TRIPS do trip(clients[i]) end end) end
  assert(long:wait())
  done = true
  assert(churners:wait())
  strand.sleep(0.1)                      -- the churned connections' server tasks finish
  collectgarbage(); collectgarbage()
  local live = collectgarbage("count")
  print(("%-7s peak / live = %.2f (live %.1f MB; %d long-lived connections x %d round trips, %d connections churned)")
    :format(how, peak / live, live / 1024, P, TRIPS, churned))
  for i = 1, P do clients[i]:close() end
  srv:close()
  os.exit(0)
end)
