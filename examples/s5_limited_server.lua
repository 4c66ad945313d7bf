-- examples/s5_limited_server.lua — scenario S5: a server that serves at most N clients at once.
-- Python's original warns that too many clients bring the server down; here max_connections
-- bounds the handlers and the rest wait in the listen backlog: every client is served, in turn.
-- Run: ./strand-run examples/s5_limited_server.lua [clients=40] [max_connections=4] [hold=0.1]
local strand = require "strand"
local server = require "strand.server"
local socket = require "strand.socket"

local NCLIENTS = tonumber(arg and arg[1]) or 40
local MAX = tonumber(arg and arg[2]) or 4
local HOLD = tonumber(arg and arg[3]) or 0.1

local active, peak = 0, 0
local srv = assert(server.tcp { max_connections = MAX, handler = function(conn)
  active = active + 1
  if active > peak then peak = active end
  local line = conn:read("l")
  strand.sleep(HOLD)                        -- a slow request: the others queue up meanwhile
  conn:write("served ", line or "?", "\n")
  active = active - 1
end })
print(("s5: %d clients at once, max_connections=%d, each handler takes %.2f s"):format(NCLIENTS, MAX, HOLD))

local t0 = strand.now()
local served, failed = 0, 0
strand.spawn(function()
  local ts = {}
  for i = 1, NCLIENTS do
    ts[i] = strand.spawn(function()
      local c <close> = assert(socket.connect("127.0.0.1", srv.port, { timeout = 30 }))
      c:settimeout(30)
      c:write("client ", i, "\n")
      return c:read("l")
    end)
  end
  for i = 1, NCLIENTS do
    local ok, reply = ts[i]:join(60)
    if ok and reply == "served client " .. i then served = served + 1 else failed = failed + 1 end
  end
  srv:shutdown(1)
end)
srv:serve_forever()
local elapsed = strand.now() - t0
print(("s5: served %d/%d clients, %d failed, none dropped"):format(served, NCLIENTS, failed))
print(("s5: at most %d handlers ran at once (limit %d)"):format(peak, MAX))
print(("s5: %.2f s in all (%d rounds of %.2f s: ~%.2f s)"):format(elapsed, math.ceil(NCLIENTS / MAX),
  HOLD, math.ceil(NCLIENTS / MAX) * HOLD))
assert(served == NCLIENTS and peak <= MAX)
print("s5: done")
