-- strand.luasocket — LuaSocket's `socket.core` API (tcp/udp objects, select, dns, try/protect)
-- implemented on strand sockets, and install(), which makes `require "socket"` return it.
--
-- Behaviour follows LuaSocket 3.x (the C module Debian ships as lua-socket) method by method:
--  * objects change class as LuaSocket's do: tcp{master} -> tcp{client} (connect) or tcp{server}
--    (listen); udp{unconnected} <-> udp{connected} (setpeername). A method called on the wrong
--    class raises "bad argument #1 to 'm' (tcp{client} expected)".
--  * numbers come back as floats where LuaSocket pushes lua_Number (1.0, byte counts, getfd),
--    getsockname's port of a tcp object is a string and getpeername's an integer, as there.
--  * receive(pattern, prefix): "*l"/"l" (every '\r' dropped), "*a"/"a", n; on failure
--    nil, err, partial (prefix included); "*a" on a connection closed with nothing new gives
--    nil, "closed", "". send(data, i, j) returns the index of the last byte sent (also in the
--    third value on failure). settimeout(t, "b"|"t"): "b" bounds every wait, "t" the whole call.
--  * inside a task every wait suspends only that task; from the main program it drives strand's
--    loop. dns.toip/tohostname/getnameinfo run the blocking libc lookups on a strand thread.
--  * options strand does not implement (multicast, tcp-keepidle...) return nil, "not supported".
local core = require "strand.core"
local ssock = require "strand.socket"
local strand = require "strand"

local compat = core.netcompat
local mono = core.now
local floor, ceil, mtype = math.floor, math.ceil, math.type
local find, sub, gsub = string.find, string.sub, string.gsub

local M = {}
local C = {}          -- the socket.core replacement

C._VERSION = "LuaSocket 3.0.0"
C._SETSIZE = 1024
C._SOCKETINVALID = -1
C._DATAGRAMSIZE = 8192

local BUF_SIZE = 8192

-- {==== errors: strand's (message, CODE) -> LuaSocket's message

local PIE = {
  ECONNRESET = "closed", ECONNABORTED = "closed", EPIPE = "closed", EOF = "closed",
  ECLOSED = "closed", ETIMEDOUT = "timeout", EADDRINUSE = "address already in use",
  EISCONN = "already connected", EACCES = "permission denied",
  ECONNREFUSED = "connection refused",
  EAI_AGAIN = "temporary failure in name resolution", EAI_BADFLAGS = "invalid value for ai_flags",
  EAI_FAIL = "non-recoverable failure in name resolution", EAI_FAMILY = "ai_family not supported",
  EAI_MEMORY = "memory allocation failure",
  EAI_NONAME = "host or service not provided, or not known",
  EAI_NODATA = "host or service not provided, or not known",
  EAI_SERVICE = "service not supported for socket type",
  EAI_SOCKTYPE = "ai_socktype not supported",
  -- the rest as strerror(3) spells them (LuaSocket passes those through)
  EINVAL = "Invalid argument", EBADF = "Bad file descriptor",
  ENOTCONN = "Transport endpoint is not connected", EALREADY = "Operation already in progress",
  EINPROGRESS = "Operation now in progress", ENETUNREACH = "Network is unreachable",
  EHOSTUNREACH = "No route to host", EADDRNOTAVAIL = "Cannot assign requested address",
  EAFNOSUPPORT = "Address family not supported by protocol", EMFILE = "Too many open files",
  ENFILE = "Too many open files in system", ENOBUFS = "No buffer space available",
  EMSGSIZE = "Message too long", ENOTSOCK = "Socket operation on non-socket",
}

local function lerr(msg, code)
  if msg == "timeout" then return "timeout" end
  return PIE[code] or msg
end

-- }====

-- {==== argument checks (luaL_* equivalents)

local function argerror(n, fname, msg)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), 3)
end

local function typename(v)
  local mt = getmetatable(v)
  if type(mt) == "table" and type(mt.__name) == "string" then return mt.__name end
  return type(v)
end

local function checkstring(v, n, fname)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return tostring(v) end
  argerror(n, fname, "string expected, got " .. (v == nil and "no value" or typename(v)))
end

local function optstring(v, n, fname, def)
  if v == nil then return def end
  return checkstring(v, n, fname)
end

local function checknumber(v, n, fname)
  local x = tonumber(v)
  if x == nil or (type(v) ~= "number" and type(v) ~= "string") then
    argerror(n, fname, "number expected, got " .. (v == nil and "no value" or typename(v)))
  end
  return x
end

local function optnumber(v, n, fname, def)
  if v == nil then return def end
  return checknumber(v, n, fname)
end

local function trunc(x)   -- C's (long) cast
  return x >= 0 and floor(x) or ceil(x)
end

-- }====

-- {==== classes

local classes = {}       -- name -> metatable
local tcp, udp = {}, {}  -- each family's methods, copied into its classes by newclass
local methods = { tcp = tcp, udp = udp }

local function object_tostring(o)
  return ("%s: %s"):format(getmetatable(o).__name, o.addr)
end

local function newclass(name, family, groups)
  local index = { class = name }
  for k, f in pairs(methods[family]) do index[k] = f end
  local mt = { __name = name, __index = index, __tostring = object_tostring }
  for _, g in ipairs(groups) do mt[g] = true end
  mt.__gc = function(o) if o.s then o.s:close(); o.s = nil end end
  mt.__close = mt.__gc
  classes[name] = mt
  return mt
end

local function setclass(o, name) setmetatable(o, classes[name]) end

-- o must be of class `name` (exact) or in group `name` (a "{any}" name)
local function checkclass(o, name, fname)
  local mt = getmetatable(o)
  if type(o) ~= "table" or type(mt) ~= "table" or (mt.__name ~= name and not mt[name]) then
    argerror(1, fname, name .. " expected")
  end
  return o
end

-- m[name] = f behind LuaSocket's class check: o must be of class (or group) `class`.
local function def(m, name, class, f)
  m[name] = function(o, ...)
    checkclass(o, class, name)
    return f(o, ...)
  end
end

-- Timeouts as LuaSocket's timeout.c: block bounds each wait, total the whole call.
local function markstart(o) o.start = mono() end

local function tmget(o)
  local b, t = o.block, o.total
  if t < 0 then
    if b < 0 then return nil end
    return b
  end
  local left = t - (mono() - o.start)
  if left < 0 then left = 0 end
  if b < 0 or left < b then return left end
  return b
end

local function settimeout(o, v, mode, fname)
  local t = optnumber(v, 2, fname, -1)
  if t ~= t then t = -1 end    -- NaN: no limit (LuaSocket's poll gets a negative timeout from it)
  mode = optstring(mode, 3, fname, "b")
  local m = sub(mode, 1, 1)
  if m == "b" then o.block = t
  elseif m == "r" or m == "t" then o.total = t
  else argerror(3, fname, "invalid timeout mode") end
  return 1.0
end

local function newobject(family, sock)
  local o = { s = sock, family = family, block = -1, total = -1, start = 0,
              rb = "", rp = 1, rx = 0, tx = 0, birth = mono() }
  o.addr = tostring(o):match("0x%x+") or tostring(o)
  return o
end

local function familyname(f)
  if f == "inet6" then return "inet6" end
  return "inet4"
end

local function getfd(o)
  if o.s == nil then return -1.0 end
  return o.s:fileno() + 0.0
end

local function destroy(o)
  if o.s then o.s:close(); o.s = nil end
  o.pinned = nil                          -- (bound to a port asked for: udp's setpeername("*"))
end

-- Start a call's timeout and give its socket the time it may wait: the socket, nil when closed.
local function arm(o)
  markstart(o)
  local s = o.s
  if s then s:settimeout(tmget(o)) end
  return s
end

-- Addresses of the family (or both when nil), in the resolver's order.
local function resolve(host, port, family, passive, socktype)
  if host == "*" then host = nil end
  local list, msg, code = ssock.getaddrinfo(host, port or 0, { family = family, type = socktype,
                                                             passive = passive })
  if not list then return nil, lerr(msg, code) end
  if #list == 0 then return nil, PIE.EAI_NONAME end
  return list
end

-- Make o's socket for `family` (closing one of another family, as inet_tryconnect does).
local function ensure_socket(o, family, kind)
  if o.s and o.family == family then return true end
  destroy(o)
  local s, msg, code = (kind == "udp" and ssock.udp or ssock.tcp)(family)
  if not s then return nil, lerr(msg, code) end
  o.s, o.family = s, family
  return true
end

local function trybind(o, address, port, kind)
  local list, err = resolve(address, port, o.family, true, kind == "udp" and "dgram" or "stream")
  if not list then return nil, err end
  for _, a in ipairs(list) do
    local ok
    ok, err = ensure_socket(o, a.family, kind)
    if ok then
      local r, msg, code = o.s:bind(a.host, a.port)
      if r then o.pinned = tonumber(a.port) ~= 0 or nil; return true end
      err = lerr(msg, code)
      if o.family ~= nil then break end
    end
  end
  return nil, err
end

local function tryconnect(o, address, port, kind)
  local list, err = resolve(address, port, o.family, false, kind == "udp" and "dgram" or "stream")
  if not list then return nil, err end
  for _, a in ipairs(list) do
    markstart(o)
    local ok
    ok, err = ensure_socket(o, a.family, kind)
    if not ok then return nil, err end
    o.s:settimeout(tmget(o))
    local r, msg, code = o.s:connect(a.host, a.port)
    if r then return true end
    err = lerr(msg, code)
  end
  return nil, err
end

local function sockname(o, peer, portstring)
  if o.s == nil then return nil, "Bad file descriptor" end   -- (strerror's words, as LuaSocket)
  local host, port, code = (peer and o.s.getpeername or o.s.getsockname)(o.s)
  if not host then return nil, lerr(port, code) end
  return host, portstring and tostring(port) or port, o.family == "inet6" and "inet6" or "inet"
end

-- }====

-- {==== options

local BOOL, INT, LINGER = 1, 2, 3
local tcp_set = { keepalive = {"keepalive", BOOL}, reuseaddr = {"reuseaddr", BOOL},
  reuseport = {"reuseport", BOOL}, ["tcp-nodelay"] = {"nodelay", BOOL},
  ["ipv6-v6only"] = {"ipv6only", BOOL}, linger = {"linger", LINGER},
  ["recv-buffer-size"] = {"rcvbuf", INT}, ["send-buffer-size"] = {"sndbuf", INT},
  ["tcp-keepidle"] = false, ["tcp-keepcnt"] = false, ["tcp-keepintvl"] = false,
  ["tcp-defer-accept"] = false, ["tcp-fastopen"] = false, ["tcp-fastopen-connect"] = false }
local tcp_get = { keepalive = tcp_set.keepalive, reuseaddr = tcp_set.reuseaddr,
  reuseport = tcp_set.reuseport, ["tcp-nodelay"] = tcp_set["tcp-nodelay"],
  linger = tcp_set.linger, ["recv-buffer-size"] = tcp_set["recv-buffer-size"],
  ["send-buffer-size"] = tcp_set["send-buffer-size"], error = "error",
  ["tcp-keepidle"] = false, ["tcp-keepcnt"] = false, ["tcp-keepintvl"] = false }
local udp_set = { broadcast = {"broadcast", BOOL}, reuseaddr = {"reuseaddr", BOOL},
  reuseport = {"reuseport", BOOL}, ["ipv6-v6only"] = {"ipv6only", BOOL},
  ["recv-buffer-size"] = {"rcvbuf", INT}, ["send-buffer-size"] = {"sndbuf", INT},
  dontroute = false, ["ip-multicast-if"] = false, ["ip-multicast-ttl"] = false,
  ["ip-multicast-loop"] = false, ["ip-add-membership"] = false, ["ip-drop-membership"] = false,
  ["ipv6-unicast-hops"] = false, ["ipv6-multicast-hops"] = false,
  ["ipv6-multicast-loop"] = false, ["ipv6-add-membership"] = false,
  ["ipv6-drop-membership"] = false }
local udp_get = { broadcast = udp_set.broadcast, reuseaddr = udp_set.reuseaddr,
  reuseport = udp_set.reuseport, ["ipv6-v6only"] = udp_set["ipv6-v6only"],
  ["recv-buffer-size"] = udp_set["recv-buffer-size"],
  ["send-buffer-size"] = udp_set["send-buffer-size"], dontroute = false,
  ["ip-multicast-if"] = false, ["ip-multicast-loop"] = false,
  ["ipv6-unicast-hops"] = false, ["ipv6-multicast-hops"] = false,
  ["ipv6-multicast-loop"] = false }

local function findopt(tab, name, fname)
  name = checkstring(name, 2, fname)
  local o = tab[name]
  if o == nil then argerror(2, fname, ("unsupported option `%s'"):format(name)) end
  return o
end

local function setoption(o, tab, name, value, fname)
  local opt = findopt(tab, name, fname)
  if opt and opt[2] == BOOL and type(value) ~= "boolean" then
    argerror(3, fname, "boolean expected, got " .. (value == nil and "no value" or typename(value)))
  end
  if opt and opt[2] == LINGER then
    if type(value) ~= "table" then
      argerror(3, fname, "table expected, got " .. (value == nil and "no value" or typename(value)))
    end
    if type(value.on) ~= "boolean" then argerror(3, fname, "boolean 'on' field expected") end
    if type(value.timeout) ~= "number" then argerror(3, fname, "number 'timeout' field expected") end
  end
  if opt and opt[2] == INT then value = trunc(checknumber(value, 3, fname)) end
  if o.s == nil then return nil, "setsockopt failed" end
  if not opt then return nil, "not supported" end
  local v = value
  if opt[2] == LINGER then v = value.on and trunc(value.timeout) or false end
  local ok = o.s:setoption(opt[1], v)
  if not ok then return nil, "setsockopt failed" end
  return 1.0
end

local function getoption(o, tab, name, fname)
  local opt = findopt(tab, name, fname)
  if o.s == nil then return nil, "getsockopt failed" end
  if opt == "error" then return nil end   -- SO_ERROR: strand reports errors where they happen
  if not opt then return nil, "not supported" end
  local v = o.s:getoption(opt[1])
  if v == nil then return nil, "getsockopt failed" end
  if opt[2] == INT then return v + 0.0 end
  if opt[2] == LINGER then
    if v == false then return { on = false, timeout = 0 } end
    return { on = true, timeout = v }
  end
  return v
end

-- }====

-- {==== the buffered reader (buffer.c's recvraw / recvall / recvline)

-- Make unread bytes available: nil, or an error message when none could be had.
local function bget(o)
  if o.rp <= #o.rb then return nil end
  o.rb, o.rp = "", 1
  local s = o.s
  if s == nil then return "closed" end
  s:settimeout(tmget(o))
  local data, msg, code = s:recv(BUF_SIZE)
  if not data then return lerr(msg, code) end
  o.rb = data
  return nil
end

local function take(o, n)   -- the next n unread bytes (n <= available)
  local p = o.rp
  o.rp = p + n
  o.rx = o.rx + n
  return sub(o.rb, p, p + n - 1)
end

local function recvraw(o, wanted, parts)
  local total, err = 0, nil
  while true do
    err = bget(o)
    if err then break end
    local count = #o.rb - o.rp + 1
    if count > wanted - total then count = wanted - total end
    parts[#parts + 1] = take(o, count)
    total = total + count
    if total >= wanted then break end
  end
  return err
end

local function recvall(o, parts)
  local total, err = 0, nil
  while true do
    err = bget(o)
    if err then break end
    local count = #o.rb - o.rp + 1
    total = total + count
    parts[#parts + 1] = take(o, count)
  end
  if err == "closed" and total > 0 then return nil end
  return err
end

local function recvline(o, parts)
  local err
  while true do
    err = bget(o)
    if err then break end
    local nl = find(o.rb, "\n", o.rp, true)
    if nl then
      parts[#parts + 1] = gsub(take(o, nl - o.rp), "\r", "")
      take(o, 1)
      break
    end
    parts[#parts + 1] = gsub(take(o, #o.rb - o.rp + 1), "\r", "")
  end
  return err
end

-- }====

-- {==== tcp

function tcp.receive(o, pattern, prefix)
  checkclass(o, "tcp{client}", "receive")
  prefix = optstring(prefix, 3, "receive", "")
  markstart(o)
  local parts, err = { prefix }, nil
  if type(pattern) == "number" or (type(pattern) == "string" and tonumber(pattern)) then
    local n = tonumber(pattern)
    if n < 0 then argerror(2, "receive", "invalid receive pattern") end
    local wanted = trunc(n)
    if #prefix == 0 or wanted > #prefix then err = recvraw(o, wanted - #prefix, parts) end
  else
    local p = optstring(pattern, 2, "receive", "l")
    if sub(p, 1, 1) == "*" then p = sub(p, 2) end
    local c = sub(p, 1, 1)
    if c == "l" then err = recvline(o, parts)
    elseif c == "a" then err = recvall(o, parts)
    else argerror(2, "receive", "invalid receive pattern") end
  end
  local data = table.concat(parts)
  if err then return nil, err, data end
  return data, nil, nil
end

function tcp.send(o, data, i, j)
  checkclass(o, "tcp{client}", "send")
  data = checkstring(data, 2, "send")
  local size = #data
  local start = trunc(optnumber(i, 3, "send", 1))
  local stop = trunc(optnumber(j, 4, "send", -1))
  markstart(o)
  if start < 0 then start = size + start + 1 end
  if stop < 0 then stop = size + stop + 1 end
  if start < 1 then start = 1 end
  if stop > size then stop = size end
  local sent, err = 0, nil
  if start <= stop then
    local s = o.s
    if s == nil then
      err = "closed"
    else
      local pos = start
      while pos <= stop do
        s:settimeout(tmget(o))
        local n, msg, code = s:send(data, pos, stop)
        if not n then err = lerr(msg, code); break end
        pos = pos + n
        sent = sent + n
      end
    end
  end
  o.tx = o.tx + sent
  if err then return nil, err, (sent + start - 1) + 0.0 end
  return (sent + start - 1) + 0.0, nil, nil
end

function tcp.connect(o, address, port)
  checkclass(o, "tcp{any}", "connect")
  address = checkstring(address, 2, "connect")
  port = checkstring(port, 3, "connect")
  if o.s and getmetatable(o).__name == "tcp{server}" then   -- a listening socket: EISCONN
    setclass(o, "tcp{client}")                                -- (LuaSocket's class, even so)
    return nil, "already connected"
  end
  local ok, err = tryconnect(o, address, port, "tcp")
  setclass(o, "tcp{client}")
  if not ok then return nil, err end
  return 1.0
end
tcp.setpeername = tcp.connect

function tcp.listen(o, backlog)
  checkclass(o, "tcp{master}", "listen")
  backlog = trunc(optnumber(backlog, 2, "listen", 32))
  if o.s == nil then return nil, "Bad file descriptor" end
  local ok, msg, code = o.s:listen(backlog)
  if not ok then return nil, lerr(msg, code) end
  setclass(o, "tcp{server}")
  return 1.0
end

function tcp.accept(o)
  checkclass(o, "tcp{server}", "accept")
  local s = arm(o)
  if s == nil then return nil, "closed" end
  local c, msg, code = s:accept()
  if not c then return nil, lerr(msg, code) end
  local n = newobject(o.family, c)
  setclass(n, "tcp{client}")
  return n
end

function tcp.shutdown(o, how)
  checkclass(o, "tcp{client}", "shutdown")
  how = optstring(how, 2, "shutdown", "both")
  local map = { receive = "r", send = "w", both = "rw" }
  if not map[how] then argerror(2, "shutdown", ("invalid option '%s'"):format(how)) end
  if o.s then o.s:shutdown(map[how]) end
  return 1.0
end

function tcp.getstats(o)
  checkclass(o, "tcp{client}", "getstats")
  return o.rx + 0.0, o.tx + 0.0, mono() - o.birth
end

function tcp.setstats(o, received, sent, age)
  checkclass(o, "tcp{client}", "setstats")
  o.rx = trunc(optnumber(received, 2, "setstats", o.rx))
  o.tx = trunc(optnumber(sent, 3, "setstats", o.tx))
  if tonumber(age) then o.birth = mono() - tonumber(age) end
  return 1.0
end

-- }====

-- {==== udp

local function udp_strerror(msg, code)
  local e = lerr(msg, code)
  if e == "closed" then return "refused" end
  return e
end

function udp.send(o, data)
  checkclass(o, "udp{connected}", "send")
  data = checkstring(data, 2, "send")
  local s = arm(o)
  if s == nil then return nil, "refused" end
  local n, msg, code = s:send(data)
  if not n then return nil, udp_strerror(msg, code) end
  return n + 0.0
end

function udp.sendto(o, data, ip, port)
  checkclass(o, "udp{unconnected}", "sendto")
  data = checkstring(data, 2, "sendto")
  ip = checkstring(ip, 3, "sendto")
  port = checkstring(port, 4, "sendto")
  local host, fam
  if ip:match("^%d+%.%d+%.%d+%.%d+$") then host, fam = ip, "inet"
  elseif ip:find(":", 1, true) then host, fam = ip, "inet6"
  else return nil, "Name or service not known" end
  if o.family and o.family ~= fam then return nil, "Address family for hostname not supported" end
  if not tonumber(port) then return nil, "Servname not supported for ai_socktype" end
  -- closed: LuaSocket makes a socket for an object whose family is not fixed yet (socket.udp(),
  -- never bound, connected or sent from), else its sendto fails as on a closed socket
  if o.s == nil and o.family ~= nil then return nil, "refused" end
  local ok, err = ensure_socket(o, fam, "udp")
  if not ok then return nil, err end
  local n, msg, code = arm(o):sendto(data, host, tonumber(port))
  if not n then return nil, udp_strerror(msg, code) end
  return n + 0.0
end

-- udp's receive methods: check the class and the datagram size (argument 2, at least 1), arm
-- the socket's timeout, then take(socket, size); closed (or no socket yet), what LuaSocket
-- answers then: receive an empty datagram, receivefrom the error of naming no address.
local function receiver(class, fname, take, closed1, closed2)
  return function(o, size)
    checkclass(o, class, fname)
    local n = trunc(optnumber(size, 2, fname, C._DATAGRAMSIZE))
    if n < 1 then n = 1 end
    local s = arm(o)
    if s == nil then
      if closed2 == nil then return closed1 end
      return closed1, closed2
    end
    return take(s, n)
  end
end

udp.receive = receiver("udp{any}", "receive", function(s, n)
  local data, msg, code = s:recv(n)
  if data then return data end
  if code == "EOF" then return "" end      -- an empty datagram
  return nil, udp_strerror(msg, code)
end, "")

udp.receivefrom = receiver("udp{unconnected}", "receivefrom", function(s, n)
  local data, host, port = s:recvfrom(n)
  if not data then return nil, udp_strerror(host, port) end
  return data, host, port
end, nil, "ai_family not supported")

function udp.setpeername(o, address, port)
  checkclass(o, "udp{any}", "setpeername")
  address = checkstring(address, 2, "setpeername")
  local connecting = address ~= "*"
  if connecting then port = checkstring(port, 3, "setpeername")
  else port = optstring(port, 3, "setpeername", "0") end
  if not connecting then
    -- disconnect: connect to AF_UNSPEC; strand sockets have no call for it, so the socket is
    -- replaced by a fresh one, bound to the same local address when setsockname gave it a port
    -- (Linux keeps only such a port: an ephemeral one, given by connect or by port 0, goes)
    if o.s then
      local host, lport = o.s:getsockname()
      local fam, pinned = o.family, o.pinned
      destroy(o)
      local ok, err = ensure_socket(o, fam, "udp")
      if not ok then return nil, err end
      if pinned and lport and lport ~= 0 then
        o.pinned = true
        o.s:setoption("reuseaddr", true)
        o.s:bind(host, lport)
      end
    end
    setclass(o, "udp{unconnected}")
    return 1.0
  end
  local ok, err = tryconnect(o, address, port, "udp")
  if not ok then return nil, err end
  setclass(o, "udp{connected}")
  return 1.0
end

-- }====

-- {==== what tcp and udp objects share: the methods, classes and constructors of each kind

-- setfd adopts a duplicate of fd (LuaSocket takes fd itself; strand owns the fds it polls).
-- The object keeps its class; the fd given stays the caller's to close.
local function setfd(o, fd)
  fd = trunc(checknumber(fd, 2, "setfd"))
  destroy(o)
  if fd >= 0 then
    local s = compat.fromfd(fd)
    if s then o.s = s end
  end
end

-- The methods every object of a family has, with the same meaning in both.
local common = {
  close = function(o) destroy(o); return 1.0 end,
  settimeout = function(o, value, mode) return settimeout(o, value, mode, "settimeout") end,
  gettimeout = function(o) return o.block + 0.0, o.total + 0.0 end,
  getfd = getfd,
  setfd = setfd,
  getfamily = function(o) return familyname(o.family) end,
  getsockname = function(o) return sockname(o, false, true) end,
}

-- Each kind of object: its classes (the first is a new object's), the group naming them all, the class
-- getpeername and bind want, its options, what dirty() says (only tcp buffers what it reads).
local kinds = {
  tcp = { classes = { "tcp{master}", "tcp{client}", "tcp{server}" }, any = "tcp{any}",
          peer = "tcp{any}", bind = "bind", bound = "tcp{master}", set = tcp_set, get = tcp_get,
          dirty = function(o) return o.rp <= #o.rb end },
  udp = { classes = { "udp{unconnected}", "udp{connected}" }, any = "udp{any}",
          peer = "udp{connected}", bind = "setsockname", bound = "udp{unconnected}",
          set = udp_set, get = udp_get, dirty = function() return false end },
}

local function create(kind, family)
  local o = newobject(family, nil)
  setclass(o, kinds[kind].classes[1])
  if family then
    local ok, err = ensure_socket(o, family, kind)
    if not ok then return nil, err end
  end
  return o
end

for kind, f in pairs(kinds) do
  local m, any = methods[kind], f.any
  for name, fn in pairs(common) do def(m, name, any, fn) end
  def(m, "dirty", any, f.dirty)
  def(m, "getpeername", f.peer, function(o) return sockname(o, true, false) end)
  def(m, "setoption", any, function(o, name, value)
    return setoption(o, f.set, name, value, "setoption")
  end)
  def(m, "getoption", any, function(o, name) return getoption(o, f.get, name, "getoption") end)
  def(m, f.bind, f.bound, function(o, address, port)
    address = checkstring(address, 2, f.bind)
    port = checkstring(port, 3, f.bind)
    local ok, err = trybind(o, address, port, kind)
    if not ok then return nil, err end
    return 1.0
  end)
end
tcp.setsockname = tcp.bind

for kind, f in pairs(kinds) do   -- the methods are all there: make the classes
  for _, name in ipairs(f.classes) do newclass(name, kind, { f.any }) end
  C[kind] = function() return create(kind, nil) end
  C[kind .. "4"] = function() return create(kind, "inet") end
  C[kind .. "6"] = function() return create(kind, "inet6") end
end

local families = { unspec = true, inet = "inet", inet6 = "inet6" }

--- socket.connect(address, port [, laddress [, lport [, family]]]) -> tcp{client} | nil, err
function C.connect(address, port, laddress, lport, family)
  address = checkstring(address, 1, "connect")
  port = checkstring(port, 2, "connect")
  laddress = optstring(laddress, 3, "connect", nil)
  lport = optstring(lport, 4, "connect", "0")
  family = optstring(family, 5, "connect", "unspec")
  if not families[family] then argerror(5, "connect", ("invalid option '%s'"):format(family)) end
  local o = newobject(families[family] ~= true and families[family] or nil, nil)
  setclass(o, "tcp{master}")
  if laddress then
    local ok, err = trybind(o, laddress, lport, "tcp")
    if not ok then destroy(o); return nil, err end
  end
  local ok, err = tryconnect(o, address, port, "tcp")
  if not ok then destroy(o); return nil, err end
  setclass(o, "tcp{client}")
  return o
end

-- }====

-- {==== select, sleep, gettime, try/protect, skip

local function objfd(obj)
  local f = obj.getfd
  if f == nil then return nil end
  local fd = f(obj)
  if type(fd) ~= "number" and not (type(fd) == "string" and tonumber(fd)) then return nil end
  fd = tonumber(fd)
  if fd < 0 then return nil end
  return trunc(fd)
end

local function is_dirty(obj)
  local f = obj.dirty
  if f == nil then return false end
  return f(obj) and true or false
end

local function make_assoc(t)
  local n = #t
  for i = 1, n do t[t[i]] = i + 0.0 end
end

--- socket.select(recvt, sendt [, timeout]) -> readable, writable [, "timeout"]
function C.select(recvt, sendt, timeout)
  local t = optnumber(timeout, 3, "select", -1)
  for n, tab in ipairs { recvt or false, sendt or false } do
    if tab ~= false and type(tab) ~= "table" then
      error(("bad argument #%d to 'select' (table expected, got %s)"):format(n, typename(tab)), 2)
    end
  end
  local fdobj, rfds, wfds = {}, {}, {}
  local function collect(tab, into)
    if not tab then return end
    local i = 1
    while true do
      local obj = tab[i]
      if obj == nil then break end
      local fd = objfd(obj)
      if fd then
        into[#into + 1] = fd
        fdobj[fd] = obj
      end
      i = i + 1
    end
  end
  collect(recvt, rfds)
  collect(sendt, wfds)
  local rout, wout, dirty = {}, {}, {}
  if recvt then
    local i = 1
    while true do
      local obj = recvt[i]
      if obj == nil then break end
      if objfd(obj) and is_dirty(obj) then
        rout[#rout + 1] = obj
        dirty[objfd(obj)] = true
      end
      i = i + 1
    end
  end
  if #rout > 0 then t = 0 end
  local wait = t >= 0 and t or nil
  local rl, wl = {}, {}
  if #rfds == 0 and #wfds == 0 then
    if wait == nil then
      while true do strand.sleep(3600) end
    end
    strand.sleep(wait)
  else
    local rs, ws = {}, {}
    for _, fd in ipairs(rfds) do if not dirty[fd] then rs[#rs + 1] = fd end end
    for _, fd in ipairs(wfds) do ws[#ws + 1] = fd end
    local r, w = strand.select(rs, ws, {}, wait)
    rl, wl = r or {}, w or {}
  end
  local function add(list, out)
    local seen = {}
    table.sort(list)
    for _, fd in ipairs(list) do
      if not seen[fd] then seen[fd] = true; out[#out + 1] = fdobj[fd] end
    end
  end
  add(rl, rout)
  add(wl, wout)
  make_assoc(rout)
  make_assoc(wout)
  if #rout == 0 and #wout == 0 then return rout, wout, "timeout" end
  return rout, wout
end

function C.sleep(n)
  n = checknumber(n, 1, "sleep")
  if not (n > 0) then n = 0 end   -- negative or NaN: returns at once, as LuaSocket's
  strand.sleep(n)
end

function C.gettime() return compat.realtime() end

function C.skip(d, ...)
  d = trunc(checknumber(d, 1, "skip"))
  if d < 0 then d = 0 end
  return select(d + 1, ...)
end

local wrapped = { __metatable = false }   -- marks the errors `try` raises (protect unwraps them)

function C.newtry(finalizer)
  return function(...)
    if not (...) then
      if finalizer then pcall(finalizer) end
      error(setmetatable({ (select(2, ...)) }, wrapped), 0)
    end
    return ...
  end
end

local function unwrapped(ok, ...)
  if ok then return ... end
  local e = ...
  if type(e) == "table" and debug.getmetatable(e) == wrapped then
    return nil, e[1]
  end
  error(e, 0)
end

function C.protect(f)
  if type(f) ~= "function" and not (getmetatable(f) or {}).__call then
    error(("bad argument #1 to 'protect' (function expected, got %s)"):format(typename(f)), 2)
  end
  return function(...) return unwrapped(pcall(f, ...)) end
end

-- }====

-- {==== dns

-- fn(...) on a strand thread (the libc lookups block): its results, or raise its error.
local function off_loop(name, ...)
  local thread = require "strand.thread"
  local t = thread.start(function(fname, ...)
    return require("strand.core").netcompat[fname](...)
  end, name, ...)
  return t:result()
end

local dns = {}
C.dns = dns

local function hostent(address)
  local he, herr = off_loop("hostent", address)
  if not he then
    if herr == 1 then return nil, "host not found" end   -- HOST_NOT_FOUND
    return nil, compat.hoststrerror(herr)
  end
  return he
end

function dns.toip(address)
  address = checkstring(address, 1, "toip")
  local he, err = hostent(address)
  if not he then return nil, err end
  if he.ip[1] == nil then return nil, "host not found" end
  return he.ip[1], he
end

function dns.tohostname(address)
  address = checkstring(address, 1, "tohostname")
  local he, err = hostent(address)
  if not he then return nil, err end
  return he.name, he
end

function dns.gethostname()
  local name, msg, code = compat.gethostname()
  if not name then return nil, lerr(msg, code) end
  return name
end

function dns.getaddrinfo(host)
  host = checkstring(host, 1, "getaddrinfo")
  local list, msg, code = ssock.getaddrinfo(host, 0, { type = "stream" })
  if not list then return nil, lerr(msg, code) end
  local out = {}
  for i, a in ipairs(list) do out[i] = { family = a.family, addr = a.host } end
  return out
end

function dns.getnameinfo(host, serv)
  host = optstring(host, 1, "getnameinfo", nil)
  serv = optstring(serv, 2, "getnameinfo", nil)
  if host == nil and serv == nil then error("host and serv cannot be both nil", 2) end
  local names, s, code = off_loop("nameinfo", host, serv)
  if not names then return nil, PIE[({ [-2] = "EAI_NONAME", [-3] = "EAI_AGAIN" })[code] or ""] or s end
  if serv then return names, s end
  return names
end

-- }====

-- {==== helpers socket.lua adds (used when Debian's socket.lua is not installed)

local function add_helpers(S)
  function S.connect4(address, port, laddress, lport)
    return S.connect(address, port, laddress, lport, "inet")
  end
  function S.connect6(address, port, laddress, lport)
    return S.connect(address, port, laddress, lport, "inet6")
  end
  function S.bind(host, port, backlog)
    if host == "*" then host = "0.0.0.0" end
    local addrinfo, err = S.dns.getaddrinfo(host)
    if not addrinfo then return nil, err end
    local sock, res
    err = "no info on address"
    for _, alt in ipairs(addrinfo) do
      if alt.family == "inet" then sock, err = S.tcp4() else sock, err = S.tcp6() end
      if not sock then return nil, err end
      sock:setoption("reuseaddr", true)
      res, err = sock:bind(alt.addr, port)
      if not res then sock:close()
      else
        res, err = sock:listen(backlog)
        if not res then sock:close() else return sock end
      end
    end
    return nil, err
  end
  S.try = S.newtry()
  function S.choose(tbl)
    return function(name, opt1, opt2)
      if type(name) ~= "string" then name, opt1, opt2 = "default", name, opt1 end
      local f = tbl[name or "nil"]
      if not f then error("unknown key (" .. tostring(name) .. ")", 3) end
      return f(opt1, opt2)
    end
  end
  local sourcet, sinkt = {}, {}
  S.sourcet, S.sinkt = sourcet, sinkt
  S.BLOCKSIZE = 2048
  local function selectable(sock, call)
    return setmetatable({ getfd = function() return sock:getfd() end,
                          dirty = function() return sock:dirty() end }, { __call = call })
  end
  sinkt["close-when-done"] = function(sock)
    return selectable(sock, function(_, chunk)
      if not chunk then sock:close(); return 1 end
      return sock:send(chunk)
    end)
  end
  sinkt["keep-open"] = function(sock)
    return selectable(sock, function(_, chunk)
      if chunk then return sock:send(chunk) end
      return 1
    end)
  end
  sinkt.default = sinkt["keep-open"]
  S.sink = S.choose(sinkt)
  sourcet["by-length"] = function(sock, length)
    return selectable(sock, function()
      if length <= 0 then return nil end
      local chunk, err = sock:receive(math.min(S.BLOCKSIZE, length))
      if err then return nil, err end
      length = length - #chunk
      return chunk
    end)
  end
  sourcet["until-closed"] = function(sock)
    local done
    return selectable(sock, function()
      if done then return nil end
      local chunk, err, partial = sock:receive(S.BLOCKSIZE)
      if not err then return chunk
      elseif err == "closed" then sock:close(); done = 1; return partial
      else return nil, err end
    end)
  end
  sourcet.default = sourcet["until-closed"]
  S.source = S.choose(sourcet)
end

-- }====

M.core = C

local installed = nil   -- the module `require "socket"` returns once installed

--- install() -> the LuaSocket-compatible module. After it, require "socket" / "socket.core"
--- return it, and socket.http, socket.smtp, socket.ftp, socket.tp (loaded afresh) use it.
--- Debian's socket.lua runs on top when it is installed (as with the real C module).
function M.install()
  if installed then return installed end
  local saved = {}
  for name in pairs(package.loaded) do
    if name == "socket" or name:match("^socket%.") then
      saved[name] = package.loaded[name]
      package.loaded[name] = nil
    end
  end
  package.loaded["socket.core"] = C
  M.saved = saved
  local path = package.searchpath("socket", package.path)
  local S
  if path then
    local chunk = assert(loadfile(path))
    S = chunk("socket", path)
  else
    add_helpers(C)
    S = C
  end
  package.loaded.socket = S
  installed = S
  return S
end

--- uninstall(): require "socket" loads the real LuaSocket again (modules loaded meanwhile are
--- forgotten so that they are loaded afresh too).
function M.uninstall()
  if not installed then return end
  for name in pairs(package.loaded) do
    if name == "socket" or name:match("^socket%.") then package.loaded[name] = nil end
  end
  installed = nil
end

return M
