-- examples/c4_task_server.lua — scenario C4 (gevent's socket server): one task per connection;
-- clients each send 50 messages and read every reply. Several clients run at once.
-- Run: ./strand-run examples/c4_task_server.lua [clients]
local strand = require "strand"
local socket = require "strand.socket"

local NCLIENTS = tonumber(arg and arg[1]) or 5
local NMSG = 50

local srv = assert(socket.listen("127.0.0.1", 0))
local _, port = srv:getsockname()
print(("c4: server on 127.0.0.1:%d, one task per connection"):format(port))

local served = 0
local server = strand.spawn(function()
  for n = 1, NCLIENTS do
    local conn = assert(srv:accept())
    strand.spawn(function()            -- the handler: echo until the client closes
      local count = 0
      while true do
        local data = conn:recv(1024)
        if not data then break end
        conn:sendall(data)
        count = count + 1
      end
      conn:close()
      served = served + 1
      print(("c4: connection %d closed after %d messages"):format(n, count))
    end)
  end
  srv:close()
end)

local function client(id)
  local c = assert(socket.connect("127.0.0.1", port, { timeout = 5 }))
  c:settimeout(5)
  local ok = 0
  for i = 1, NMSG do
    local msg = ("client %d message %02d"):format(id, i)
    c:sendall(msg)
    if c:read(#msg) == msg then ok = ok + 1 end
  end
  c:close()
  return ok
end

local t0 = strand.now()
local clients = {}
for id = 1, NCLIENTS do clients[id] = strand.spawn(client, id) end
local total = 0
for id, t in ipairs(clients) do
  local ok, n = assert(t:join(10))
  print(("c4: client %d: %d/%d replies correct"):format(id, n, NMSG))
  total = total + n
end
assert(server:join(5))
while served < NCLIENTS do strand.sleep(0.01) end
print(("c4: %d clients x %d messages = %d round trips in %.3f s, all correct: %s"):format(
  NCLIENTS, NMSG, total, strand.now() - t0, tostring(total == NCLIENTS * NMSG)))
