-- spec/luasocket_spec.lua — strand.luasocket: Debian's real socket.http / ltn12 / socket.smtp
-- running in tasks over the bridge, LuaSocket's method semantics one by one, failure conditions.
local H = require "support.helper"
local strand = require "strand"
local ssock = require "strand.socket"
local sync = require "strand.sync"
local bridge = require "strand.luasocket"

local socket = bridge.install()
local http = require "socket.http"
local ltn12 = require "ltn12"
local smtp = require "socket.smtp"
local ftp = require "socket.ftp"

-- A tiny HTTP/1.1 server on strand sockets: on_request(method, path, headers, body) -> body.
local function http_server(on_request)
  local srv = assert(ssock.listen("127.0.0.1", 0))
  local _, port = srv:getsockname()
  local conns = {}
  local acceptor = strand.spawn(function()
    while true do
      local c = srv:accept()
      if not c then return end
      conns[#conns + 1] = strand.spawn(function()
        local line = c:read("l")
        local method, path = line:match("^(%u+) (%S+) HTTP/1%.%d$")
        local headers = {}
        while true do
          local h = c:read("l")
          if h == nil or h == "" then break end
          local k, v = h:match("^([^:]+):%s*(.*)$")
          headers[k:lower()] = v
        end
        local body = ""
        if headers["content-length"] then body = c:read(tonumber(headers["content-length"])) end
        local reply = on_request(method, path, headers, body)
        c:write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Path: ", path,
                "\r\nContent-Length: ", #reply, "\r\nConnection: close\r\n\r\n", reply)
        c:close()
      end)
    end
  end)
  local function stop()
    srv:close()
    acceptor:join(2)
    strand.joinall(conns, 5)
  end
  return port, stop
end

-- An SMTP stub: records the envelope and the message of every mail it is given.
local function smtp_server()
  local srv = assert(ssock.listen("127.0.0.1", 0))
  local _, port = srv:getsockname()
  local mails = {}
  local t = strand.spawn(function()
    local c = srv:accept()
    if not c then return end
    local mail = { rcpt = {} }
    c:write("220 stub ESMTP\r\n")
    for line in c:lines() do
      local cmd = line:sub(1, 4):upper()
      if cmd == "EHLO" or cmd == "HELO" then c:write("250 stub\r\n")
      elseif cmd == "MAIL" then mail.from = line:match("<(.-)>"); c:write("250 ok\r\n")
      elseif cmd == "RCPT" then mail.rcpt[#mail.rcpt + 1] = line:match("<(.-)>"); c:write("250 ok\r\n")
      elseif cmd == "DATA" then
        c:write("354 go on\r\n")
        local data = {}
        for l in c:lines() do
          if l == "." then break end
          data[#data + 1] = l
        end
        mail.data = table.concat(data, "\n")
        mails[#mails + 1] = mail
        mail = { rcpt = {} }
        c:write("250 queued\r\n")
      elseif cmd == "QUIT" then c:write("221 bye\r\n"); break
      else c:write("500 what\r\n") end
    end
    c:close()
  end)
  return port, mails, function() srv:close(); t:join(2) end
end

-- An FTP stub (one session, passive mode): RETR serves files[name], STOR stores into files.
local function ftp_server(files)
  local srv = assert(ssock.listen("127.0.0.1", 0))
  local _, port = srv:getsockname()
  local log = {}
  local t = strand.spawn(function()
    local c = srv:accept()
    if not c then return end
    local data_listener
    c:write("220 stub ftp\r\n")
    for line in c:lines() do
      local cmd, arg = line:match("^(%a+)%s*(.*)$")
      cmd = cmd:upper()
      log[#log + 1] = cmd
      if cmd == "USER" then c:write("331 password?\r\n")
      elseif cmd == "PASS" then c:write("230 in\r\n")
      elseif cmd == "TYPE" then c:write("200 ok\r\n")
      elseif cmd == "EPSV" then
        data_listener = assert(ssock.listen("127.0.0.1", 0))
        local _, dport = data_listener:getsockname()
        c:write(("229 Entering Extended Passive Mode (|||%d|)\r\n"):format(dport))
      elseif cmd == "RETR" or cmd == "STOR" then
        c:write("150 here it comes\r\n")
        local d = data_listener:accept()
        data_listener:close()
        if cmd == "RETR" then d:write(files[arg] or "") else files[arg] = d:read("a") end
        d:close()
        c:write("226 done\r\n")
      elseif cmd == "QUIT" then c:write("221 bye\r\n"); break
      else c:write("502 no\r\n") end
    end
    c:close()
  end)
  return port, log, function() srv:close(); t:join(2) end
end

-- tcp{client} pair over loopback through the bridge: client, accepted.
local function pair()
  local srv = assert(socket.bind("127.0.0.1", 0))
  local _, port = srv:getsockname()
  local c = assert(socket.connect("127.0.0.1", port))
  local a = assert(srv:accept())
  srv:close()
  return c, a
end

describe("strand.luasocket with the real socket.http, ltn12 and socket.smtp", function()
  H.guard { threads = false }

  it("install() makes require 'socket' and 'socket.core' the bridge", function()
    assert.equal(socket, require "socket")
    assert.equal(bridge.core, require "socket.core")
    assert.equal("LuaSocket 3.0.0", socket._VERSION)
    assert.equal(socket, bridge.install())          -- idempotent
    -- socket.http's own upvalue is the bridge: its request creates bridge objects
    assert.equal("function", type(http.request))
  end)

  it("socket.http.request GET inside tasks, all in flight at once", function()
    local N, arrived = 8, 0
    local all_in = sync.event()
    local port, stop = http_server(function(_, path)
      arrived = arrived + 1
      if arrived == N then all_in:set() end
      -- each reply waits until every request has arrived: sequential requests would never finish
      assert(all_in:wait(H.TIMEOUT), "requests did not run concurrently")
      return "body of " .. path
    end)
    H.run(function()
      local tasks = {}
      for i = 1, N do
        tasks[i] = strand.spawn(function()
          local body, code, headers = http.request(("http://127.0.0.1:%d/item/%d"):format(port, i))
          return body, code, headers
        end)
      end
      for i, t in ipairs(tasks) do
        local ok, body, code, headers = t:join(H.TIMEOUT)
        assert.is_true(ok, body)
        assert.equal("body of /item/" .. i, body)
        assert.equal(200, code)
        assert.equal("/item/" .. i, headers["x-path"])
      end
      stop()        -- inside the run: strand.run returns once no task is left
    end)
    assert.equal(N, arrived)
  end)

  it("socket.http.request with ltn12 source and sink (POST)", function()
    local port, stop = http_server(function(method, _, headers, body)
      return method .. " " .. headers["content-type"] .. " " .. body:upper()
    end)
    H.run(function()
      local out = {}
      local payload = ("payload "):rep(1000)
      local r, code = http.request {
        url = ("http://127.0.0.1:%d/post"):format(port), method = "POST",
        headers = { ["content-type"] = "text/plain", ["content-length"] = #payload },
        source = ltn12.source.string(payload), sink = ltn12.sink.table(out) }
      assert.equal(1, r)
      assert.equal(200, code)
      assert.equal("POST text/plain " .. payload:upper(), table.concat(out))
      stop()
    end)
  end)

  it("socket.http.request from the main program (not in a task) drives the loop", function()
    local ticks = 0
    local port, stop = http_server(function() strand.sleep(0.05); return "main" end)
    local ticker = strand.spawn(function() for _ = 1, 3 do ticks = ticks + 1; strand.sleep(0.01) end end)
    local body, code = http.request(("http://127.0.0.1:%d/"):format(port))
    assert.equal("main", body)
    assert.equal(200, code)
    ticker:join(2)
    assert.equal(3, ticks)
    stop()
  end)

  it("socket.http.request to a closed port returns nil, 'connection refused'", function()
    local s = assert(ssock.listen("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    H.run(function()
      local r, err = http.request(("http://127.0.0.1:%d/"):format(port))
      assert.is_nil(r)
      assert.equal("connection refused", err)
    end)
  end)

  it("socket.smtp.send delivers a message to a local SMTP stub", function()
    local port, mails, stop = smtp_server()
    H.run(function()
      local msg = smtp.message {
        headers = { from = "<alice@example.test>", to = "<bob@example.test>", subject = "hi" },
        body = "line one\r\nline two" }
      local r, err = smtp.send { from = "<alice@example.test>", rcpt = { "<bob@example.test>" },
                                 source = msg, server = "127.0.0.1", port = port }
      assert.equal(1, r, err)
      stop()
    end)
    assert.equal(1, #mails)
    assert.equal("alice@example.test", mails[1].from)
    assert.same({ "bob@example.test" }, mails[1].rcpt)
    assert.truthy(mails[1].data:find("Subject: hi", 1, true), mails[1].data)
    assert.truthy(mails[1].data:find("line one\nline two", 1, true))
  end)
end)

describe("strand.luasocket with the real socket.ftp", function()
  H.guard { threads = false }

  it("ftp.get and ftp.put in passive mode against a local stub", function()
    local files = { ["hello.txt"] = ("hello ftp\n"):rep(500) }
    H.run(function()
      local port, log, stop = ftp_server(files)
      local body, err = ftp.get(("ftp://u:p@127.0.0.1:%d/hello.txt;type=i"):format(port))
      assert.equal(files["hello.txt"], body, err)
      stop()
      assert.same({ "USER", "PASS", "TYPE", "EPSV", "RETR", "QUIT" }, log)
      port, log, stop = ftp_server(files)
      local r, perr = ftp.put(("ftp://u:p@127.0.0.1:%d/up.txt"):format(port), "uploaded bytes")
      assert.equal(#"uploaded bytes", r, perr)     -- ftp.put returns the bytes sent
      stop()
      assert.equal("uploaded bytes", files["up.txt"])
    end)
  end)
end)

describe("strand.luasocket tcp objects", function()
  H.guard { threads = false }

  it("have LuaSocket's classes and change them on connect/listen", function()
    local m = socket.tcp()
    assert.equal("tcp{master}", m.class)
    assert.truthy(tostring(m):match("^tcp{master}: 0x%x+$"))
    assert.equal(-1, m:getfd())
    assert.equal(1, m:bind("127.0.0.1", 0))
    local _, port = m:getsockname()
    assert.equal("string", type(port))                 -- as LuaSocket: getsockname's port is a string
    assert.equal(1, m:listen())
    assert.equal("tcp{server}", m.class)
    local c = socket.tcp()
    assert.equal(1, c:connect("127.0.0.1", port))
    assert.equal("tcp{client}", c.class)
    local a = m:accept()
    assert.equal("tcp{client}", a.class)
    local host, pport, fam = a:getpeername()
    assert.equal("127.0.0.1", host)
    assert.equal("integer", math.type(pport))
    assert.equal("inet", fam)
    assert.equal("inet4", a:getfamily())
    assert.has_error(function() m:receive() end, "bad argument #1 to 'receive' (tcp{client} expected)")
    assert.has_error(function() c:accept() end, "bad argument #1 to 'accept' (tcp{server} expected)")
    assert.has_error(function() c:bind("127.0.0.1", 0) end, "bad argument #1 to 'bind' (tcp{master} expected)")
    a:close(); c:close(); m:close()
  end)

  it("receive: lines drop every \\r, counts, *a, prefixes, the 5.4 spellings", function()
    local c, a = pair()
    assert.equal(14.0, c:send("hello\r\nwor\rld\n", 2))
    assert.same({ "ello", nil, nil }, { a:receive() })
    assert.same({ "world", nil, nil }, { a:receive("*l") })
    c:send("line1\nline2\nabcdefgh")
    assert.equal("line1", a:receive("l"))
    assert.equal("P:line2", a:receive("*l", "P:"))
    assert.equal("abc", a:receive(3))
    assert.equal("xyd", a:receive(3, "xy"))          -- the prefix counts towards n
    assert.equal("longprefix", a:receive(4, "longprefix"))
    assert.equal("efgh", a:receive("4"))             -- a numeric string is a count
    c:send("the rest")
    c:close()
    assert.equal("the rest", a:receive("a"))
    assert.same({ nil, "closed", "" }, { a:receive("*a") })
    assert.same({ nil, "closed", "" }, { a:receive() })
    assert.has_error(function() a:receive("x") end, "bad argument #2 to 'receive' (invalid receive pattern)")
    assert.has_error(function() a:receive(-1) end, "bad argument #2 to 'receive' (invalid receive pattern)")
    a:close()
  end)

  it("receive returns the partial data on timeout and keeps nothing back", function()
    local c, a = pair()
    a:settimeout(0.05)
    c:send("abc")
    assert.same({ nil, "timeout", "abc" }, { a:receive(10) })
    c:send("def")
    local _, err, partial = a:receive(10, "abc")     -- LuaSocket's idiom: pass the partial back
    assert.equal("timeout", err)
    assert.equal("abcdef", partial)
    c:send("no newline")
    assert.same({ nil, "timeout", "no newline" }, { a:receive("*l") })
    assert.same({ nil, "timeout", "" }, { a:receive("*a") })
    a:settimeout(0)
    assert.same({ nil, "timeout", "" }, { a:receive(1) })
    c:close(); a:close()
  end)

  it("send(data, i, j) sends the byte range and returns the last index", function()
    local c, a = pair()
    assert.equal(4.0, c:send("abcdef", 3, 4))
    assert.equal(6.0, c:send("abcdef", -2))
    assert.equal(4.0, c:send("abc", 5))            -- empty range: start - 1
    assert.equal(0.0, c:send(""))
    assert.equal(9.0, c:send("0123456789", 2.9, -2.5))   -- indices truncate like C casts
    c:close()
    assert.equal("cdef12345678", a:receive("*a"))
    assert.same({ nil, "closed", 0.0 }, { c:send("x") })
    a:close()
  end)

  it("getstats/setstats count bytes; settimeout modes; dirty", function()
    local c, a = pair()
    c:send("12345\n6789")
    assert.equal("12345", a:receive())
    local rx, tx, age = a:getstats()
    assert.equal(6, rx); assert.equal(0, tx); assert.is_true(age >= 0)
    assert.is_true(a:dirty())                        -- "6789" waits in the buffer
    assert.equal(1, a:setstats(100, 7, 0))
    assert.equal(4, #a:receive(4))
    assert.equal(104, (a:getstats()))
    assert.same({ 1.0, -1.0, -1.0 }, { a:settimeout(nil), a:gettimeout() })
    a:settimeout(2, "t"); a:settimeout(0.5)
    assert.same({ 0.5, 2.0 }, { a:gettimeout() })
    assert.has_error(function() a:settimeout(1, "x") end, "bad argument #3 to 'settimeout' (invalid timeout mode)")
    c:close(); a:close()
  end)

  it("setoption/getoption use LuaSocket's names", function()
    local c, a = pair()
    assert.equal(1, a:setoption("tcp-nodelay", true))
    assert.is_true(a:getoption("tcp-nodelay"))
    assert.equal(1, a:setoption("keepalive", true))
    assert.is_true(a:getoption("keepalive"))
    assert.equal(1, a:setoption("linger", { on = true, timeout = 3 }))
    assert.same({ on = true, timeout = 3 }, a:getoption("linger"))
    assert.has_error(function() a:setoption("bogus", true) end, "bad argument #2 to 'setoption' (unsupported option `bogus')")
    assert.has_error(function() a:setoption("keepalive", 1) end, "bad argument #3 to 'setoption' (boolean expected, got number)")
    assert.same({ nil, "getsockopt failed" }, { socket.tcp():getoption("keepalive") })
    c:close(); a:close()
  end)

  it("socket.select on tables of objects with getfd, dirty ones first, assoc entries", function()
    local srv = assert(socket.bind("127.0.0.1", 0))
    local _, port = srv:getsockname()
    local r, w, e = socket.select({ srv }, nil, 0)
    assert.same({ {}, {}, "timeout" }, { r, w, e })
    local c = assert(socket.connect("127.0.0.1", port))
    r, w, e = socket.select({ srv }, { c }, 1)
    assert.is_nil(e)
    assert.equal(srv, r[1]); assert.equal(1, r[srv])
    assert.equal(c, w[1]); assert.equal(1, w[c])
    local a = srv:accept()
    c:send("q\nrest")
    assert.equal("q", a:receive())
    r = socket.select({ a }, nil, 0)            -- "rest" is buffered: dirty counts as readable
    assert.equal(a, r[1])
    -- any table with getfd works; invalid descriptors are skipped
    c:send("more")
    local proxy = { getfd = function() return a:getfd() end, dirty = function() return false end }
    r = socket.select({ proxy, { getfd = function() return -1 end }, {} }, nil, 1)
    assert.equal(proxy, r[1])
    assert.has_error(function() socket.select(1, {}, 0) end)
    c:close(); a:close(); srv:close()
  end)

  it("receive in one task does not stop the others", function()
    local c, a = pair()
    local order = {}
    H.run(function()
      local reader = strand.spawn(function()
        local line = a:receive()
        order[#order + 1] = line
      end)
      strand.spawn(function()
        order[#order + 1] = "writer"
        c:send("late\n")
      end)
      reader:join(H.TIMEOUT)
    end)
    assert.same({ "writer", "late" }, order)
    c:close(); a:close()
  end)
end)

describe("strand.luasocket udp, dns and helpers", function()
  H.guard { threads = false }

  it("udp: sendto/receivefrom, setpeername to connect and '*' to disconnect", function()
    local u = socket.udp()
    assert.equal("udp{unconnected}", u.class)
    assert.equal(1, u:setsockname("127.0.0.1", 0))
    local _, port = u:getsockname()
    local v = socket.udp()
    assert.equal(4.0, v:sendto("ping", "127.0.0.1", port))
    local d, host, p = u:receivefrom()
    assert.equal("ping", d); assert.equal("127.0.0.1", host); assert.equal("integer", math.type(p))
    u:settimeout(0)
    assert.same({ nil, "timeout" }, { u:receivefrom() })
    assert.equal(1, v:setpeername("127.0.0.1", port))
    assert.equal("udp{connected}", v.class)
    assert.equal(3.0, v:send("abc"))
    assert.equal("ab", u:receive(2))
    assert.has_error(function() v:sendto("x", "127.0.0.1", port) end,
                     "bad argument #1 to 'sendto' (udp{unconnected} expected)")
    assert.equal(1, v:setpeername("*"))
    assert.equal("udp{unconnected}", v.class)
    assert.same({ nil, "Name or service not known" }, { v:sendto("x", "localhost", port) })
    u:close(); v:close()
  end)

  it("dns: toip, tohostname, getaddrinfo, gethostname; failures", function()
    H.run(function()
      local ip, resolved = socket.dns.toip("localhost")
      assert.equal("127.0.0.1", ip)
      assert.equal("table", type(resolved.alias))
      assert.same({ nil, "host not found" }, { socket.dns.toip("nonexistent.invalid") })
      assert.equal("localhost", (socket.dns.tohostname("127.0.0.1")))
      assert.same({ { family = "inet", addr = "127.0.0.1" } }, socket.dns.getaddrinfo("127.0.0.1"))
      assert.same({ nil, "host or service not provided, or not known" },
                  { socket.dns.getaddrinfo("nonexistent.invalid") })
      assert.equal("string", type(socket.dns.gethostname()))
    end)
  end)

  it("try/newtry/protect/skip/sleep/gettime/connect behave as LuaSocket's", function()
    assert.same({ 1, 2, 3 }, { socket.try(1, 2, 3) })
    local ok, e = pcall(socket.try, nil, "boom")
    assert.is_false(ok); assert.equal("boom", e[1])
    local finalized = 0
    local try = socket.newtry(function() finalized = finalized + 1 end)
    assert.same({ nil, "x" }, { socket.protect(function() try(nil, "x") end)() })
    assert.equal(1, finalized)
    assert.has_error(socket.protect(function() error("real", 0) end), "real")
    assert.same({ "b", "c" }, { socket.skip(1, "a", "b", "c") })
    assert.is_true(math.abs(socket.gettime() - os.time()) < 2)
    assert.is_nil(socket.sleep(0))
    local s = assert(ssock.listen("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    assert.same({ nil, "connection refused" }, { socket.connect("127.0.0.1", port) })
    assert.same({ nil, "host or service not provided, or not known" },
                { socket.connect("nonexistent.invalid", 80) })
  end)

  it("the real LuaSocket comes back after uninstall()", function()
    bridge.uninstall()
    local real = require "socket"
    assert.are_not.equal(socket, real)
    assert.equal("userdata", type(real.tcp()))
    -- install again for the rest of the run; modules are loaded afresh on the bridge
    package.loaded["socket.http"] = nil
    assert.equal("table", type(bridge.install().tcp()))
  end)
end)
