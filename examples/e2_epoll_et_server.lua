-- examples/e2_epoll_et_server.lua — scenario E2 (Python's select.epoll server with EPOLLET):
-- connections are registered by their integer fd, edge-triggered (selector.EDGE), so each
-- readiness change is reported once: the server reads until "wouldblock", switches the fd to
-- WRITE, writes everything back — a small send buffer makes sends partial, the rest goes out
-- at the next WRITE edge — and switches back to READ. Each client sends a large message
-- from one task while another task of the same client reads the echo, and checks it.
-- Run: ./strand-run examples/e2_epoll_et_server.lua [clients=20] [bytes per client=262144]
local strand = require "strand"
local socket = require "strand.socket"
local selector = require "strand.selector"

local NCLIENTS = tonumber(arg and arg[1]) or 20
local SIZE = tonumber(arg and arg[2]) or 256 * 1024
local READ, WRITE, EDGE = selector.READ, selector.WRITE, selector.EDGE

local listen = assert(socket.listen("127.0.0.1", 0, { backlog = 128 }))
listen:setblocking(false)
local _, port = listen:getsockname()
local ep = selector.new("epoll")
ep:register(listen:fileno(), READ)                 -- level-triggered, as in the Python code
print(("e2: edge-triggered epoll echo server on 127.0.0.1:%d, %d clients x %d bytes")
  :format(port, NCLIENTS, SIZE))

local connections, addresses, datalist = {}, {}, {}   -- by fd, as the Python example
local stats = { accepted = 0, closed = 0, bytes = 0, read_rounds = 0, partial_sends = 0,
                write_edges = 0 }

local function close(fd)
  ep:unregister(fd)
  connections[fd]:close()
  connections[fd], addresses[fd], datalist[fd] = nil, nil, nil
  stats.closed = stats.closed + 1
end

local function on_accept()
  while true do
    local conn, host, cport = listen:accept()
    if not conn then return end
    conn:setblocking(false)
    conn:setoption("sndbuf", 4096)                 -- small: sends become partial
    local fd = conn:fileno()
    connections[fd], addresses[fd] = conn, host .. ":" .. cport
    ep:register(fd, READ | EDGE)
    stats.accepted = stats.accepted + 1
  end
end

-- read until "wouldblock" (an edge is not repeated), then answer everything at once
local function on_read(fd)
  local parts = { datalist[fd] }
  stats.read_rounds = stats.read_rounds + 1
  while true do
    local data, err = connections[fd]:recv(65536)
    if data then
      parts[#parts + 1] = data
    elseif err == "wouldblock" then
      break
    else                                           -- "closed" or an error: the client is gone
      close(fd)
      return
    end
  end
  datalist[fd] = table.concat(parts)
  if #datalist[fd] > 0 then ep:modify(fd, WRITE | EDGE) end
end

-- write until everything is sent or the socket is full ("wouldblock": wait for the next edge)
local function on_write(fd)
  local data, sent = datalist[fd], 0
  stats.write_edges = stats.write_edges + 1
  while sent < #data do
    local n, err = connections[fd]:send(data, sent + 1)
    if not n then
      if err ~= "wouldblock" then close(fd) return end
      stats.partial_sends = stats.partial_sends + 1
      break
    end
    sent = sent + n
  end
  stats.bytes = stats.bytes + sent
  datalist[fd] = data:sub(sent + 1)
  if #datalist[fd] == 0 then ep:modify(fd, READ | EDGE) end
end

-- the clients: a writer task and a reader task per connection (so neither side stalls)
local function pattern(id)
  local t = {}
  for i = 1, SIZE // 16 + 1 do t[i] = ("%07d:%07d|"):format(id, i) end
  return table.concat(t):sub(1, SIZE)
end

local results = {}
local function client(id)
  local c = assert(socket.connect("127.0.0.1", port, { timeout = 20 }))
  c:settimeout(20)
  local msg = pattern(id)
  local writer = strand.spawn(function() assert(c:sendall(msg)) end)
  local back = c:read(#msg)
  writer:result()
  c:close()
  results[id] = back == msg
end

local t0 = strand.now()
local clients = {}
for id = 1, NCLIENTS do clients[id] = strand.spawn(client, id) end

local listen_fd = listen:fileno()
while stats.closed < NCLIENTS do
  for key, events in ep:select(10) do
    local fd = key.fd
    if fd == listen_fd then
      on_accept()
    elseif events & READ ~= 0 then
      on_read(fd)
    elseif events & WRITE ~= 0 then
      on_write(fd)
    end
  end
end
for _, t in ipairs(clients) do t:result() end
ep:unregister(listen_fd)
listen:close()
ep:close()

local good = 0
for id = 1, NCLIENTS do
  if results[id] then good = good + 1 end
end
print(("e2: %d/%d clients got back exactly the %d bytes they sent"):format(good, NCLIENTS, SIZE))
print(("e2: server: accepted %d, echoed %d bytes in %d read rounds, %d write edges, %d partial sends")
  :format(stats.accepted, stats.bytes, stats.read_rounds, stats.write_edges, stats.partial_sends))
print(("e2: partial sends handled: %s"):format(tostring(stats.partial_sends > 0 and good == NCLIENTS)))
print(("e2: all correct: %s"):format(tostring(good == NCLIENTS and stats.bytes == NCLIENTS * SIZE)))
print(("e2: done in %.2f s"):format(strand.now() - t0))
