-- examples/s1_echo.lua — scenario S1: echo servers and clients over TCP, UDP (uppercase reply),
-- UNIX stream and UNIX datagram sockets, each server a task, each client in the main program.
-- Run: ./strand-run examples/s1_echo.lua   (loopback only; prints what it did)
local strand = require "strand"
local socket = require "strand.socket"

local function tmp(tag)
  local p = os.tmpname()
  os.remove(p)
  return p .. "." .. tag .. ".sock"
end

-- TCP: the server echoes each line back until the client closes.
local function tcp_echo()
  local srv = assert(socket.listen("127.0.0.1", 0))
  local _, port = srv:getsockname()
  print(("tcp: server listening on 127.0.0.1:%d"):format(port))
  local server = strand.spawn(function()
    local conn, host, pport = assert(srv:accept())
    print(("tcp: server accepted %s:%d"):format(host, pport))
    for line in conn:lines() do conn:write(line, "\n") end
    conn:close()
    srv:close()
  end)
  local c = assert(socket.connect("localhost", port, { timeout = 5 }))
  c:settimeout(5)
  for _, msg in ipairs { "hello", "strand", "bye" } do
    c:write(msg, "\n")
    print(("tcp: client sent %q, got back %q"):format(msg, c:read("l")))
  end
  c:close()
  assert(server:join(5))
end

-- UDP: the server answers each datagram with its uppercase.
local function udp_echo()
  local srv = assert(socket.udp())
  assert(srv:bind("127.0.0.1", 0))
  local _, port = srv:getsockname()
  print(("udp: server bound to 127.0.0.1:%d"):format(port))
  local server = strand.spawn(function()
    for _ = 1, 3 do
      local data, host, p = assert(srv:recvfrom(2048))
      srv:sendto(data:upper(), host, p)
    end
    srv:close()
  end)
  local c <close> = assert(socket.udp())
  c:settimeout(5)
  for _, msg in ipairs { "ping", "hello udp", "last one" } do
    c:sendto(msg, "127.0.0.1", port)
    local reply = assert(c:recvfrom(2048))
    print(("udp: client sent %q, got back %q"):format(msg, reply))
  end
  assert(server:join(5))
end

-- UNIX stream: same protocol as TCP, over a path.
local function unix_stream_echo()
  local path = tmp("s1")
  local srv = assert(socket.unix_listen(path))
  print("unix stream: server listening on " .. path)
  local server = strand.spawn(function()
    local conn = assert(srv:accept())
    while true do
      local data = conn:recv(4096)
      if not data then break end
      conn:sendall(data)
    end
    conn:close()
    srv:close()
  end)
  local c = assert(socket.unix_connect(path))
  c:settimeout(5)
  c:sendall("over a unix socket")
  print(("unix stream: client got back %q"):format(c:read(18)))
  c:close()
  assert(server:join(5))
  os.remove(path)
end

-- UNIX datagram: both ends bound to paths so the server can answer.
local function unix_dgram_echo()
  local spath, cpath = tmp("s1d"), tmp("s1c")
  local srv = assert(socket.unix_listen(spath, { type = "dgram" }))
  print("unix dgram: server bound to " .. spath)
  local server = strand.spawn(function()
    local data, from = assert(srv:recvfrom(2048))
    srv:sendto(data:upper(), from)
    srv:close()
  end)
  local c <close> = assert(socket.unix("dgram"))
  assert(c:bind(cpath))
  c:settimeout(5)
  c:sendto("datagram", spath)
  print(("unix dgram: client got back %q"):format((c:recvfrom(2048))))
  assert(server:join(5))
  os.remove(spath)
  os.remove(cpath)
end

tcp_echo()
udp_echo()
unix_stream_echo()
unix_dgram_echo()
print("s1: done")
