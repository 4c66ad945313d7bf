-- examples/e1_select_server.lua — scenario E1 (Python's select.select echo server): the server
-- keeps `inputs`, `outputs` and a per-connection queue of outgoing messages, and calls
-- strand.select(inputs, outputs, inputs) — readable, writable and exceptional lists. Served to
-- 500 clients connected at the same time (strand tasks in this program, each with its own
-- socket, sending three messages and checking every reply). Unlike select(2), strand.select
-- has no FD_SETSIZE limit, and while it waits the client tasks run.
-- Run: ./strand-run examples/e1_select_server.lua [clients=500]
local strand = require "strand"
local socket = require "strand.socket"
local sync = require "strand.sync"

local NCLIENTS = tonumber(arg and arg[1]) or 500
local MESSAGES = { "This is the message. ", "It will be sent ", "in parts." }

local server = assert(socket.listen("127.0.0.1", 0, { backlog = 1024 }))
server:setblocking(false)
local _, port = server:getsockname()
print(("e1: select() echo server on 127.0.0.1:%d, %d clients"):format(port, NCLIENTS))

local inputs = { server }     -- sockets we read from (the server: new connections)
local outputs = {}            -- sockets with replies waiting to be sent
local queues = {}             -- conn -> array of outgoing messages (a FIFO)
local stats = { accepted = 0, echoed = 0, closed = 0, exceptional = 0, selects = 0, most = 0 }

local function remove(list, x)
  for i = #list, 1, -1 do
    if list[i] == x then table.remove(list, i) end
  end
end

local function drop(conn)
  remove(inputs, conn)
  remove(outputs, conn)
  queues[conn] = nil
  conn:close()
  stats.closed = stats.closed + 1
end

-- the clients: each connects, waits until every client is connected (so that all of them are
-- served at the same time), then sends the three messages, reading each reply
local all_connected = sync.event()
local connected, correct = 0, 0
local function client(id)
  local c = assert(socket.connect("127.0.0.1", port, { timeout = 20 }))
  c:settimeout(20)
  connected = connected + 1
  if connected == NCLIENTS then all_connected:set() end
  all_connected:wait()
  for _, msg in ipairs(MESSAGES) do
    assert(c:sendall(msg))
    local reply = c:read(#msg)
    if reply == msg then correct = correct + 1 end
  end
  c:close()
end

local t0 = strand.now()
local clients = {}
for id = 1, NCLIENTS do clients[id] = strand.spawn(client, id) end

while stats.closed < NCLIENTS do
  local readable, writable, exceptional = strand.select(inputs, outputs, inputs, 10)
  stats.selects = stats.selects + 1
  for _, s in ipairs(readable) do
    if s == server then                            -- new connections
      while true do
        local conn = server:accept()
        if not conn then break end                 -- "wouldblock": all taken
        conn:setblocking(false)
        inputs[#inputs + 1] = conn
        queues[conn] = {}
        stats.accepted = stats.accepted + 1
      end
      stats.most = math.max(stats.most, #inputs - 1)
    elseif queues[s] then                           -- data from a client
      local data, err = s:recv(1024)
      if data then
        local q = queues[s]
        q[#q + 1] = data                           -- reply later, when writable
        if #q == 1 then outputs[#outputs + 1] = s end
      elseif err ~= "wouldblock" then              -- "closed": the client is done
        drop(s)
      end
    end
  end
  for _, s in ipairs(writable) do
    local q = queues[s]
    if q and q[1] then
      local n, err = s:send(q[1])
      if n == #q[1] then
        table.remove(q, 1)
        stats.echoed = stats.echoed + 1
      elseif n then
        q[1] = q[1]:sub(n + 1)                     -- partial send: the rest next time
      elseif err ~= "wouldblock" then
        drop(s)
      end
      if queues[s] and #q == 0 then remove(outputs, s) end
    end
  end
  for _, s in ipairs(exceptional) do
    if queues[s] then
      stats.exceptional = stats.exceptional + 1
      drop(s)
    end
  end
end
for _, t in ipairs(clients) do t:result() end
server:close()

local expected = NCLIENTS * #MESSAGES
print(("e1: %d clients were connected at once; the server saw at most %d connections open")
  :format(connected, stats.most))
print(("e1: %d/%d replies correct"):format(correct, expected))
print(("e1: server: accepted %d, echoed %d messages, %d exceptional, closed %d, %d select calls")
  :format(stats.accepted, stats.echoed, stats.exceptional, stats.closed, stats.selects))
print(("e1: all correct: %s"):format(tostring(correct == expected and stats.most == NCLIENTS)))
print(("e1: done in %.2f s"):format(strand.now() - t0))
