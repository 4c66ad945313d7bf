-- spec/support/net.lua — loopback fixtures the socket-using specs share: temporary UNIX socket
-- paths, a listener on 127.0.0.1 with its port, a connected TCP pair, whether ::1 works.
local socket = require "strand.socket"

local N = {}

--- A fresh path for a UNIX socket ("<tmpname>.<tag>.sock"; nothing exists there).
function N.tmppath(tag)
  local p = os.tmpname()
  os.remove(p)
  return p .. "." .. tag .. ".sock"
end

--- A listening TCP socket on 127.0.0.1 (an ephemeral port; opts as socket.listen's) and its port.
function N.listener(opts)
  local srv = assert(socket.listen("127.0.0.1", 0, opts))
  local _, port = srv:getsockname()
  return srv, port
end

--- A connected loopback TCP pair: the client, the server side's connection.
function N.tcp_pair()
  local srv, port = N.listener()
  local c = assert(socket.connect("127.0.0.1", port, { timeout = 5 }))
  local a = assert(srv:accept())
  srv:close()
  return c, a
end

--- Whether a TCP socket can be bound to ::1 here.
function N.has_ipv6()
  local s = socket.tcp("inet6")
  if not s then return false end
  local ok = s:bind("::1", 0)
  s:close()
  return ok == true
end

return N
