-- spec/review8_spec.lua — defects found in session 8's hostile review of the servers, the
-- LuaSocket bridge, selectors and the examples: each case failed before its fix.
local strand = require "strand"
local socket = require "strand.socket"
local server = require "strand.server"
local H = require "support.helper"

-- A program in a fresh lua5.4 (nothing loaded or pinned by earlier specs), bounded by timeout(1).
local function fresh(code, env)
  local out, ok = H.lua('package.path = "lua/?.lua;lua/?/init.lua;" .. package.path\n' .. code,
    "timeout -k 5 60 " .. (env or ""))
  assert.is_true(ok, out)
  return out
end

describe("review 8: the loop", function()
  H.guard()

  it("a wait whose only deadline is huge (1e300 s) waits, not 'epoll wait failed: Invalid argument'", function()
    -- the nearest deadline went to the poller as a timespec: (time_t)1e300 overflows
    local out = fresh([[
      local strand = require "strand"
      local thread = require "strand.thread"
      local q = require("strand.queue").new()
      local t = thread.start(function(q) require("strand").sleep(0.2); q:put("woken") end, q)
      print(q:get(1e300))
      assert(t:join(30))
    ]])
    assert.equal("woken\n", out)
  end)
end)

describe("review 8: server options and lifecycle", function()
  H.guard()
  local nan = 0 / 0

  it("shutdown(NaN) raises (it used to pass the check, then drain failed and left the handlers running)", function()
    local srv = assert(server.tcp { handler = function(c) c:read("l") end })
    H.run(function()
      local loop = strand.spawn(srv.serve_forever, srv)
      assert.is_true(srv:wait_ready(5))
      local c = assert(socket.connect("127.0.0.1", srv.port))
      assert.is_true(H.wait_until(function() return srv:active() == 1 end, H.TIMEOUT))
      assert.has_error(function() srv:shutdown(nan) end,
        "bad argument #1 to 'shutdown' (grace must be a number >= 0)")
      assert.is_true(srv:shutdown(0))
      assert.same({ true, true }, { loop:join(5) })
      assert.equal(0, srv:active())
      c:close()
    end)
  end)

  it("idle_timeout=NaN raises at server.tcp (it used to make every handler fail in settimeout)", function()
    assert.has_error(function() server.tcp { handler = print, idle_timeout = nan } end,
      "bad argument #1 to 'tcp' (idle_timeout must be a number > 0)")
  end)

  it("a bad host, backlog or family raises naming 'tcp', not strand.socket's 'listen'", function()
    assert.has_error(function() server.tcp { handler = print, host = 5 } end,
      "bad argument #1 to 'tcp' (host must be a string)")
    assert.has_error(function() server.tcp { handler = print, backlog = "x" } end,
      "bad argument #1 to 'tcp' (backlog must be an integer 0..65535)")
    assert.has_error(function() server.udp { handler = print, family = "ipx" } end,
      "bad argument #1 to 'udp' (family must be \"inet\" or \"inet6\")")
  end)

  it("a log function that raises does not leak the handler's slot (with max_connections=1 the server stopped serving)", function()
    local said = {}
    local real_stderr = io.stderr
    io.stderr = { write = function(_, ...) for _, x in ipairs { ... } do said[#said + 1] = x end end }
    finally(function() io.stderr = real_stderr end)
    local srv = assert(server.tcp { max_connections = 1,
      handler = function(c) c:write("hi\n"); error("handler boom") end,
      log = function() error("log boom") end })
    H.run(function()
      local loop = strand.spawn(srv.serve_forever, srv)
      assert.is_true(srv:wait_ready(5))
      for i = 1, 3 do
        local c = assert(socket.connect("127.0.0.1", srv.port))
        c:settimeout(H.TIMEOUT)
        assert.equal("hi", c:read("l"), "client " .. i)
        assert.same({ nil, "closed", "EOF" }, { c:read("l") })
        c:close()
      end
      assert.is_true(H.wait_until(function() return srv:active() == 0 end))
      assert.equal(3, srv:served())
      assert.is_true(srv:shutdown(1))
      assert.same({ true, true }, { loop:join(5) })
    end)
    local text = table.concat(said)
    assert.matches("handler boom", text, 1, true)         -- the message still went somewhere
    assert.matches("the log function failed: .*log boom", text)
  end)

  it("serve_forever stopped by SIGTERM/SIGINT returns at once (it waited 1 s for its own signal task)", function()
    -- the signal task sat in shutdown() waiting for serve_forever, which joined it (1 s bound)
    -- before saying it had stopped; a second Ctrl-C in that second raised "interrupted!"
    for _, sig in ipairs { "TERM", "INT" } do
      local out = fresh(([[
        local strand = require "strand"
        local server = require "strand.server"
        local srv = assert(server.tcp { handler = function() end, log = function() end })
        local sent
        strand.spawn(function()
          assert(srv:wait_ready(10))
          sent = strand.now()
          -- (not os.execute: system() ignores SIGINT in the caller while it waits)
          io.popen("kill -%s $PPID"):close()     -- the shell's parent: this program
        end)
        print(srv:serve_forever())
        local took = strand.now() - sent
        print(took < 0.9 and "prompt" or ("took " .. took))
      ]]):format(sig))
      assert.equal("true\nprompt\n", out, sig)
    end
  end)

  for _, mode in ipairs { "task", "thread", "prefork", "fork" } do
    it(mode .. " mode: serve_forever after shutdown() of a server never served raises like after close()", function()
      -- thread mode raised "attempt to use a closed socket" from inside, prefork forked workers
      -- on the closed socket and task/fork returned true at once
      local srv = assert(server.tcp { handler = print, mode = mode, workers = 2 })
      assert.is_true(srv:shutdown())
      assert.has_error(function() srv:serve_forever() end, "serve_forever: the server is already serving or closed")
      srv:close()
    end)
  end

  it("a server that served and stopped cannot serve again (its socket is closed)", function()
    local srv = assert(server.tcp { handler = print, mode = "thread", workers = 1 })
    H.run(function()
      local loop = strand.spawn(srv.serve_forever, srv)
      assert.is_true(srv:wait_ready(5))
      assert.is_true(srv:shutdown(0))
      assert.same({ true, true }, { loop:join(5) })
    end)
    assert.has_error(function() srv:serve_forever() end, "serve_forever: the server is already serving or closed")
  end)
end)

describe("review 8: strand.socket arguments", function()
  H.guard()

  it("send('') on a connected datagram socket sends an empty datagram (it returned 0 and sent nothing)", function()
    -- LuaSocket's udp:send("") and Python's sock.send(b"") send one; the bridge's udp:receive()
    -- then waited for its timeout instead of returning ""
    H.run(function()
      local u = assert(socket.udp())
      assert(u:bind("127.0.0.1", 0))
      local v = assert(socket.udp())
      assert(v:connect(u:getsockname()))
      u:settimeout(H.TIMEOUT)
      assert.equal(0, v:send(""))
      assert.equal(1, v:send("x"))
      assert.equal("", u:recv(10))                             -- the empty one first, in order
      assert.equal("x", u:recv(10))
      local a, b = socket.pair("dgram")
      b:settimeout(H.TIMEOUT)
      assert.equal(0, a:send(""))
      assert.equal("", b:recv(10))
      local c, d = socket.pair()                               -- a stream: nothing at all
      assert.equal(0, c:send(""))
      d:setblocking(false)
      assert.same({ nil, "wouldblock", "EAGAIN" }, { d:recv(10) })
      for _, x in ipairs { u, v, a, b, c, d } do x:close() end
    end)
  end)

  it("connect with timeout=NaN raises naming 'connect' (it raised 'bad argument #-1 to getaddrinfo')", function()
    assert.has_error(function() socket.connect("127.0.0.1", 1, { timeout = 0 / 0 }) end,
      "bad argument #3 to 'connect' (timeout must be a number >= 0)")
  end)
end)

describe("review 8: strand.luasocket", function()
  H.guard()

  it("settimeout(NaN) then receive waits without a limit (it raised from strand's settimeout inside receive)", function()
    local bridge = require "strand.luasocket"
    local ls = bridge.install()
    finally(bridge.uninstall)
    H.run(function()
      local srv = assert(ls.bind("127.0.0.1", 0))
      local _, port = srv:getsockname()
      local c = assert(ls.connect("127.0.0.1", port))
      local a = assert(srv:accept())
      assert.equal(1.0, c:settimeout(0 / 0))
      local writer = strand.spawn(function() strand.sleep(0.05); a:send("late\n") end)
      assert.same({ "late" }, { c:receive("*l") })
      writer:join(5)
      assert.is_nil(ls.sleep(0 / 0))           -- as LuaSocket's: returns at once, no error
      assert.is_nil(ls.sleep(-1))
      a:close(); c:close(); srv:close()
    end)
  end)
end)

describe("review 8: UNIX socket paths", function()
  H.guard()

  it("unlink=true (and server.unix) replaces a stale socket file but never a live server's", function()
    -- the live server's file was unlinked: it kept running, unreachable, and the new server's
    -- stop removed the path for good
    local path = os.tmpname() .. ".sock"
    finally(function() os.remove(path) end)
    H.run(function()
      local a = assert(server.unix { path = path, handler = function(c) c:write("A\n") end })
      local loop = strand.spawn(a.serve_forever, a)
      assert.is_true(a:wait_ready(5))
      assert.same({ nil, "address already in use", "EADDRINUSE" },
        { server.unix { path = path, handler = print } })
      assert.same({ nil, "address already in use", "EADDRINUSE" },
        { socket.unix_listen(path, { unlink = true }) })
      assert.same({ nil, "address already in use", "EADDRINUSE" },
        { socket.unix_listen(path, { unlink = true, type = "dgram" }) })
      local c = assert(socket.unix_connect(path))
      c:settimeout(H.TIMEOUT)
      assert.equal("A", c:read("l"))
      c:close()
      a:close()
      loop:join(5)
      -- a stale file (bound, closed, never unlinked) is still replaced, for both types
      for _, ty in ipairs { "stream", "dgram" } do
        local s = socket.unix(ty)
        assert(s:bind(path))
        s:close()
        local l = assert(socket.unix_listen(path, { unlink = true, type = ty }))
        l:close()
        os.remove(path)
      end
    end)
  end)
end)

describe("review 8: docs/selector.md", function()
  H.guard()

  it("modify returns a new key (the doc said 'the same key, updated'); the old key keeps its values", function()
    local selector = require "strand.selector"
    for _, be in ipairs { "epoll", "poll", "select" } do
      local sel = selector.new(be)
      local a, b = socket.pair()
      local k1 = sel:register(a, selector.READ, "one")
      local k2 = sel:modify(a, selector.READ | selector.WRITE, "two")
      assert.are_not.equal(k1, k2)
      assert.same({ selector.READ, "one" }, { k1.events, k1.data })
      assert.same({ selector.READ | selector.WRITE, "two" }, { k2.events, k2.data })
      assert.equal(k2, sel:get_key(a))
      assert.is_nil(sel:modify(a, selector.READ).data)
      sel:close(); a:close(); b:close()
    end
  end)
end)
