-- examples/e3_selectors_server.lua — scenario E3 (Python's selectors example): an echo server
-- whose accept and read callbacks are registered as the keys' `data`, on non-blocking strand
-- sockets. The clients are strand tasks in the same program: the server loop's sel:select()
-- drives the event loop while it waits, so they run meanwhile.
-- Run: ./strand-run examples/e3_selectors_server.lua [clients=100] [backend=epoll|poll|select]
local strand = require "strand"
local socket = require "strand.socket"
local selector = require "strand.selector"

local NCLIENTS = tonumber(arg and arg[1]) or 100
local BACKEND = arg and arg[2] or "epoll"
local MESSAGES = { "This is the message. ", "It will be sent ", "in parts." }

local sel = selector.new(BACKEND)          -- Python: selectors.DefaultSelector()
local stats = { accepted = 0, echoed = 0, closed = 0, partial = 0 }

local read, write

-- A reply the socket did not take at once waits in `pending` until the socket is writable.
local pending = {}

local function close(conn)
  sel:unregister(conn)
  pending[conn] = nil
  conn:close()
  stats.closed = stats.closed + 1
end

local function accept(sock, mask)
  while true do                            -- take every connection that is waiting
    local conn = sock:accept()
    if not conn then return end            -- nil, "wouldblock": nothing more for now
    conn:setblocking(false)
    stats.accepted = stats.accepted + 1
    sel:register(conn, selector.READ, read)
  end
end

function read(conn, mask)
  local data, err = conn:recv(1024)
  if data then
    local n = conn:send(data)              -- the socket should take it all (it is small)...
    stats.echoed = stats.echoed + 1
    if (n or 0) < #data then               -- ...and if it did not, finish when writable
      stats.partial = stats.partial + 1
      pending[conn] = data:sub((n or 0) + 1)
      sel:modify(conn, selector.WRITE, write)
    end
  elseif err ~= "wouldblock" then          -- "closed" (the client is done) or an error
    close(conn)
  end
end

function write(conn, mask)
  local data = pending[conn]
  local n, err = conn:send(data)
  if n == #data then
    pending[conn] = nil
    sel:modify(conn, selector.READ, read)
  elseif n then
    pending[conn] = data:sub(n + 1)
  elseif err ~= "wouldblock" then
    close(conn)
  end
end

local srv = assert(socket.listen("127.0.0.1", 0, { backlog = 1024 }))
srv:setblocking(false)
local _, port = srv:getsockname()
sel:register(srv, selector.READ, accept)
print(("e3: %s selector echo server on 127.0.0.1:%d, callbacks stored as key.data"):format(BACKEND, port))

-- the clients: ordinary (blocking, cooperative) strand sockets, one task each
local correct = 0
local function client(id)
  local c = assert(socket.connect("127.0.0.1", port, { timeout = 10 }))
  c:settimeout(10)
  local ok = 0
  for _, msg in ipairs(MESSAGES) do
    assert(c:sendall(msg))
    if c:read(#msg) == msg then ok = ok + 1 end
  end
  c:close()
  correct = correct + ok
  return ok
end

local t0 = strand.now()
local clients = {}
for id = 1, NCLIENTS do clients[id] = strand.spawn(client, id) end

-- the server loop of the Python example: wait, then call each ready key's callback
local rounds = 0
while stats.closed < NCLIENTS do
  for key, mask in sel:select(10) do
    local callback = key.data
    callback(key.fileobj, mask)
  end
  rounds = rounds + 1
end
for _, t in ipairs(clients) do t:result() end

sel:unregister(srv)
srv:close()
sel:close()
print(("e3: %d clients, %d/%d replies correct"):format(NCLIENTS, correct, NCLIENTS * #MESSAGES))
print(("e3: server: accepted %d, echoed %d messages (%d partial sends finished later), closed %d, %d select rounds")
  :format(stats.accepted, stats.echoed, stats.partial, stats.closed, rounds))
print(("e3: all correct: %s"):format(tostring(correct == NCLIENTS * #MESSAGES)))
print(("e3: done in %.2f s"):format(strand.now() - t0))
