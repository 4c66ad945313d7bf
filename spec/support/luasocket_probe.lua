-- spec/support/luasocket_probe.lua — one script run twice by spec/luasocket_compat_spec.lua: on
-- the real LuaSocket (arg "real") and on strand.luasocket (arg "bridge"); every line must match.
local mode = arg[1]
local s
if mode == "bridge" then s = require("strand.luasocket").install() else s = require "socket" end
local out = {}
local function show(...)
  local t = table.pack(...)
  local r = {}
  for i = 1, t.n do
    local v = t[i]
    local tv = type(v)
    if tv == "number" then r[i] = math.type(v) .. ":" .. tostring(v)
    elseif tv == "table" and getmetatable(v) and getmetatable(v).__name then r[i] = getmetatable(v).__name
    elseif tv == "userdata" then r[i] = getmetatable(v).__name or "ud"
    elseif tv == "string" then r[i] = string.format("%q", v)
    else r[i] = tostring(v) end
  end
  return table.concat(r, " ")
end
local n = 0
local function P(...) n = n + 1; print(n, (show(...):gsub("0x%x+", "ADDR"))) end
local function E(f, ...) local r = table.pack(pcall(f, ...)); if r[1] then P(table.unpack(r, 2, r.n)) else P("ERR", (tostring(r[2]):gsub("^.-:%d+: ", ""):gsub("'%?'", "'X'"):gsub("'[%w_.]+' %(", "'X' ("))) end end
P(s._VERSION, s._SETSIZE, s._DATAGRAMSIZE, s._SOCKETINVALID, s.BLOCKSIZE)
local m = s.tcp() P(m:getfamily(), m:getfd(), m:gettimeout()) P(tostring(m):match("^[^:]+"))
E(m.send, m, "x") E(m.receive, m) E(m.accept, m) E(m.getstats, m)
P(m:bind("127.0.0.1", 0)) P(m.class)
local h, p = m:getsockname() P(h, math.type(p), type(p))
E(m.bind, m, "127.0.0.1", 0)
P(m:listen()) P(m.class) E(m.listen, m)
local c = s.tcp() P(c:connect("127.0.0.1", p)) P(c.class)
local a = m:accept() P(a.class) P(select("#", a:getpeername()), select(3, a:getpeername()))
P(c:send("hello\r\nwor\rld\n", 2)) P(c:send("abcdef", 3, 4)) P(c:send("abcdef", -2)) P(c:send("abc", 5)) P(c:send("abc", 0, 0)) P(c:send(""))
P(c:send("0123456789", 2.9, -2.5))
P(a:receive()) P(a:receive("*l"))
a:settimeout(0.05)
P(a:receive(2)) P(a:receive("*l", "P:"))
P(a:receive(10, "pre"))
P(a:receive(4, "longprefix"))
P(a:receive(0))
E(a.receive, a, "x") E(a.receive, a, -1) E(a.receive, a, {})
P(c:send("line1\nline2")) P(a:receive("*l")) P(a:receive("*l")) P(a:receive("*a"))
local rx, tx, age = c:getstats() P(rx, tx, math.type(age)) P((a:getstats()))
P(a:settimeout(1, "t"), a:gettimeout()) E(a.settimeout, a, 1, "x") P(a:settimeout(nil), a:gettimeout())
P(a:settimeout(0.05, "b"))
P(a:dirty())
c:send("xy\nz") P(a:receive(1)) P(a:dirty())
P(a:receive()) 
c:send("tail") c:close()
P(a:receive("*a")) P(a:receive("*a")) P(a:receive()) P(a:receive(5))
P(c:close()) P(c:getfd()) P(c:send("x")) P(c:receive())
P(a:shutdown()) E(a.shutdown, a, "bogus") E(m.shutdown, m)
P(a:getoption("tcp-nodelay")) P(a:setoption("tcp-nodelay", true)) P(a:getoption("tcp-nodelay"))
P(a:setoption("keepalive", true)) P(a:getoption("keepalive")) E(a.setoption, a, "keepalive", 1)
E(a.setoption, a, "bogus", true) E(a.getoption, a, "broadcast") E(a.setoption, a, "linger", true)
P(a:setoption("linger", {on = true, timeout = 3})) local l = a:getoption("linger") P(l.on, l.timeout)
P(a:setoption("reuseaddr", true)) P(a:getoption("reuseaddr"))
local r, w, e = s.select({m}, nil, 0) P(#r, #w, e)
local c2 = s.tcp() c2:connect("127.0.0.1", p)
r, w, e = s.select({m}, {c2}, 1) P(#r, #w, e, r[1] == m, r[m], w[c2])
local a2 = m:accept() c2:send("q\nrest")
r = s.select({a2}, nil, 1) P(#r) P(a2:receive()) P(a2:dirty()) r = s.select({a2}, nil, 0) P(#r, r[1] == a2)
E(s.select, 1, {}, 0) P(s.select(nil, nil, 0.01))
P(s.select({{getfd = function() return -1 end}}, nil, 0.01))
P(s.select({{}}, nil, 0.01))
E(s.sleep, "x") P(s.sleep(0.001))
P(s.skip(1, "a", "b", "c")) P(s.skip(0, "a")) P(s.skip(5, "a"))
local ok, er = pcall(s.try, nil, "boom") P(ok, type(er), er[1], getmetatable(er))
P(s.try(1, 2, 3)) P(s.protect(function() s.try(nil, "x") end)()) P(s.protect(function(...) return ... end)(1, 2))
E(s.protect(function() error("real", 0) end)) E(s.protect(function() error({1}) end))
local fin = 0 local t2 = s.newtry(function() fin = fin + 1 end) pcall(t2, false, "e") P(fin)
P(s.connect("127.0.0.1", 1)) P(s.connect("nonexistent.invalid", 80))
local cc = s.connect("127.0.0.1", p) P(cc.class) cc:close()
P(type(s.gettime()), math.type(s.gettime()), math.abs(s.gettime() - os.time()) < 2)
P(s.dns.toip("localhost")) P(s.dns.toip("nonexistent.invalid")) P(s.dns.getaddrinfo("nonexistent.invalid"))
P(s.dns.tohostname("127.0.0.1")) P(s.dns.gethostname() == io.open("/proc/sys/kernel/hostname"):read("l"))
local ai = s.dns.getaddrinfo("127.0.0.1") P(#ai, ai[1].family, ai[1].addr)
local ni, sv = s.dns.getnameinfo(nil, "http") P(sv) P((s.dns.getnameinfo("127.0.0.1"))[1])
local tn, tr = s.dns.toip("localhost") P(tr.name, type(tr.alias), tr.ip[1])
-- udp
local u = s.udp() P(tostring(u):match("^[^:]+")) P(u:getfamily(), u:getfd())
P(u:setsockname("127.0.0.1", 0)) local uh, up = u:getsockname() P(uh, math.type(up))
local v = s.udp() P(v:sendto("ping", "127.0.0.1", up)) local vh, vp, vf = v:getsockname() P(vh, type(vp), vf)
local d, fh, fp = u:receivefrom() P(d, fh, math.type(fp))
u:settimeout(0) P(u:receivefrom()) P(u:receive()) P(u:dirty())
P(v:setpeername("127.0.0.1", up)) P(v.class) P(v:send("abc")) P(u:receive(2)) local ph, pp, pf = v:getpeername() P(ph, pp == tonumber(up), math.type(pp), pf)
E(v.sendto, v, "x", "127.0.0.1", up) E(v.receivefrom, v) E(u.getpeername, u) E(v.setsockname, v, "127.0.0.1", 0)
P(v:setpeername("*")) P(v.class)
P(v:sendto("x", "localhost", up)) P(v:sendto("x2", "127.0.0.1", up)) u:settimeout(1) P(u:receive())
P(u:getoption("broadcast")) P(u:setoption("broadcast", true)) P(u:getoption("broadcast")) E(u.setoption, u, "tcp-nodelay", true)
P(u:gettimeout()) P(u:close()) P(u:close())
local b = s.bind("127.0.0.1", 0) P(b.class) local bh, bp = b:getsockname()
local t = s.tcp() P(t:bind("127.0.0.1", bp))
P(s.tcp4():getfamily(), s.tcp6():getfamily())
P(type(s.sink), type(s.source), type(s.choose), type(s.connect4), type(s.bind))
-- every method on closed objects (udp: unconnected, connected, never used; tcp: master, client,
-- accepted, server), then what a closed object's sendto/receive/connect/listen do next
local function closed_calls(tag, o, calls)
  for _, c in ipairs(calls) do
    io.write(tag, " ", c[1], " ")
    if c[1] == "fd>=0" then P(o:getfd() >= 0) else E(function(...) return o[c[1]](o, ...) end, table.unpack(c, 2)) end
  end
end
local UDP = { {"close"}, {"dirty"}, {"getfamily"}, {"getfd"}, {"getoption", "broadcast"}, {"getpeername"},
  {"getsockname"}, {"gettimeout"}, {"receive"}, {"receive", 10}, {"receivefrom"}, {"send", "x"},
  {"sendto", "x", "127.0.0.1", 9}, {"setoption", "broadcast", true}, {"fd>=0"}, {"setpeername", "127.0.0.1", 9},
  {"setpeername", "*"}, {"setsockname", "127.0.0.1", 0}, {"settimeout", 1}, {"gettimeout"}, {"close"}, {"close"} }
local TCP = { {"close"}, {"dirty"}, {"getfamily"}, {"getfd"}, {"getoption", "keepalive"}, {"getpeername"},
  {"getsockname"}, {"setstats", 1, 2, 3}, {"gettimeout"}, {"receive"}, {"receive", 5}, {"receive", "*a"},
  {"send", "x"}, {"setoption", "keepalive", true}, {"shutdown"}, {"settimeout", 1}, {"gettimeout"}, {"accept"},
  {"listen"}, {"bind", "127.0.0.1", 0}, {"listen"}, {"connect", "127.0.0.1", 9}, {"close"}, {"close"} }
local u1 = s.udp() u1:setsockname("127.0.0.1", 0) u1:close() closed_calls("udp-u", u1, UDP)
local u2 = s.udp() u2:setpeername("127.0.0.1", 9) u2:close() closed_calls("udp-c", u2, UDP)
local u3 = s.udp() u3:close() closed_calls("udp-0", u3, UDP)
local u4 = s.udp4() P(u4:close()) P(u4:sendto("x", "127.0.0.1", 9)) P(u4:getfd() >= 0)
local u5 = s.udp() P(u5:sendto("x", "127.0.0.1", 9)) P(u5:close()) P(u5:sendto("x", "127.0.0.1", 9)) P(u5:getfd() >= 0)
local u6 = s.udp() P(u6:close()) P(u6:sendto("x", "127.0.0.1", 9)) P(u6:getfd() >= 0) P(u6:close())
local u7 = s.udp() P(u7:setpeername("127.0.0.1", 9)) P(u7:setpeername("*")) P(u7:getsockname()) P(u7:setsockname("127.0.0.1", 0)) P(u7:close())
local t1 = s.tcp() t1:close() closed_calls("tcp-m", t1, TCP) P(t1.class)
local lsn = s.bind("127.0.0.1", 0) local _, lp = lsn:getsockname()
local t2 = s.tcp() t2:connect("127.0.0.1", lp) local t3 = lsn:accept()
t2:close() closed_calls("tcp-c", t2, TCP)
t3:close() closed_calls("tcp-a", t3, TCP)
local t4 = s.bind("127.0.0.1", 0) t4:close() closed_calls("tcp-s", t4, TCP)
local t5 = s.tcp() P(t5:bind("127.0.0.1", 0)) P(t5:close()) P(t5:listen()) P(t5.class)
local t6 = s.bind("127.0.0.1", 0) P(t6:connect("127.0.0.1", lp)) P(t6.class) P(t6:close())
lsn:close()
