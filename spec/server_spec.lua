-- spec/server_spec.lua — strand.server: TCP/UDP/UNIX servers in task and thread modes,
-- max_connections, idle_timeout, handler errors, shutdown(grace), signals; failure conditions.
local H = require "support.helper"
local strand = require "strand"
local server = require "strand.server"
local socket = require "strand.socket"
local sync = require "strand.sync"

local tmppath = require("support.net").tmppath

local function upper_handler(conn)
  for line in conn:lines() do conn:write(line:upper(), "\n") end
end

-- Serve srv in a task, run body(srv) as another task, then shut down and wait for both.
local function serving(srv, body)
  H.run(function()
    local s = strand.spawn(function() return srv:serve_forever() end)
    assert.is_true(srv:wait_ready(H.TIMEOUT))
    local ok, err = pcall(body, srv)
    srv:shutdown(1)
    assert.same({ true, true }, { s:join(H.TIMEOUT) })
    if not ok then error(err, 0) end
  end)
end

-- The next line, or nil and the error (without the code).
local function line_of(c)
  local l, err = c:read("l")
  return l, err
end

local function ask(port, line)
  local c <close> = assert(socket.connect("127.0.0.1", port, { timeout = H.TIMEOUT }))
  c:settimeout(H.TIMEOUT)
  c:write(line, "\n")
  return c:read("l")
end

describe("strand.server", function()
  H.guard()

  for _, mode in ipairs { "task", "thread" } do
    it(mode .. " mode: port 0 gives srv.port; 20 concurrent clients each get their answer", function()
      local srv = assert(server.tcp { port = 0, mode = mode, workers = 2, handler = upper_handler })
      assert.equal("integer", math.type(srv.port))
      assert.is_true(srv.port > 0)
      serving(srv, function()
        local ts = {}
        for i = 1, 20 do ts[i] = strand.spawn(ask, srv.port, "hello " .. i) end
        for i = 1, 20 do assert.same({ true, "HELLO " .. i }, { ts[i]:join(H.TIMEOUT) }) end
      end)
      assert.equal(20, srv:served())
    end)
  end

  for _, mode in ipairs { "fork", "prefork" } do
    it(mode .. " mode: handlers run in child processes, which are all reaped", function()
      local process = require "strand.process"
      local srv = assert(server.tcp { mode = mode, workers = 2, max_connections = 3,
        handler = function(conn)
          for line in conn:lines() do conn:write(line, " ", require("strand.process").pid(), "\n") end
        end })
      local port = srv.port
      serving(srv, function()
        -- the clients live in a process of their own: a forked server child must not inherit
        -- the client ends (a connection only ends when every copy of its client end is closed)
        local clients = process.start(function()
          local st = require "strand"
          local sk = require "strand.socket"
          local ts, out = {}, {}
          for i = 1, 8 do
            ts[i] = st.spawn(function()
              local c <close> = assert(sk.connect("127.0.0.1", port, { timeout = 10 }))
              c:settimeout(10)
              c:write("hello ", i, "\n")
              return c:read("l")
            end)
          end
          for i = 1, 8 do out[i] = select(2, ts[i]:join(20)) end
          return out
        end)
        local ok, out = clients:join(H.TIMEOUT * 2)
        assert.is_true(ok, out)
        local pids = {}
        for i = 1, 8 do
          local pid = tonumber(out[i]:match("^hello " .. i .. " (%d+)$"))
          assert.is_truthy(pid, out[i])
          assert.are_not.equal(process.pid(), pid)
          pids[pid] = true
        end
        local n = 0
        for _ in pairs(pids) do n = n + 1 end
        if mode == "fork" then assert.equal(8, n) else assert.is_true(n <= 2) end
      end)
      if mode == "fork" then assert.equal(8, srv:served()) end
    end)
  end

  it("thread mode runs handlers in the worker threads (copied, with their upvalues)", function()
    local prefix = "thread "
    local srv = assert(server.tcp { mode = "thread", workers = 2, handler = function(conn)
      conn:read("l")
      conn:write(prefix, require("strand.thread").id(), "\n")
    end })
    serving(srv, function()
      for _ = 1, 6 do
        local reply = ask(srv.port, "x")
        local id = tonumber(reply:match("^thread (%d+)$"))
        assert.is_true(id ~= nil and id ~= 1, reply)
      end
    end)
  end)

  it("thread mode spreads connections over the workers (SO_REUSEPORT sockets by default)", function()
    local srv = assert(server.tcp { mode = "thread", workers = 2, handler = function(conn)
      conn:read("l")
      conn:write(require("strand.thread").id(), "\n")
    end })
    serving(srv, function()
      local ts, seen, n = {}, {}, 0
      for i = 1, 24 do ts[i] = strand.spawn(ask, srv.port, "x") end
      for i = 1, 24 do
        local ok, id = ts[i]:join(H.TIMEOUT)
        assert.is_true(ok, id)
        if not seen[id] then seen[id] = true; n = n + 1 end
      end
      -- the kernel hashes each connection to a socket: all 24 on one worker has odds 2^-23
      assert.equal(2, n)
    end)
  end)

  it("max_connections: excess clients wait in the backlog and are all served", function()
    local active, peak = 0, 0
    local release = sync.event()
    local srv = assert(server.tcp { max_connections = 2, handler = function(conn)
      active = active + 1
      if active > peak then peak = active end
      release:wait(H.TIMEOUT)
      conn:write(conn:read("l"), "\n")
      active = active - 1
    end })
    serving(srv, function()
      local ts = {}
      for i = 1, 6 do ts[i] = strand.spawn(ask, srv.port, "client " .. i) end
      assert.is_true(H.wait_until(function() return active == 2 end))
      strand.sleep(0.1)                   -- a third handler would have had the time to start
      assert.equal(2, active)
      release:set()
      for i = 1, 6 do assert.same({ true, "client " .. i }, { ts[i]:join(H.TIMEOUT) }) end
    end)
    assert.equal(2, peak)
    assert.equal(6, srv:served())
  end)

  it("max_connections holds across the threads of thread mode", function()
    local counter = require("strand.shared").dict()
    counter.active, counter.peak = 0, 0
    local srv = assert(server.tcp { mode = "thread", workers = 2, max_connections = 1,
      handler = function(conn)
        local n = counter:incr("active")
        counter:update("peak", function(p) return math.max(p, n) end)
        require("strand").sleep(0.02)
        counter:incr("active", -1)
        conn:write(conn:read("l"), "\n")
      end })
    serving(srv, function()
      local ts = {}
      for i = 1, 6 do ts[i] = strand.spawn(ask, srv.port, "c" .. i) end
      for i = 1, 6 do assert.same({ true, "c" .. i }, { ts[i]:join(H.TIMEOUT) }) end
    end)
    assert.equal(1, counter.peak)
  end)

  it("idle_timeout closes connections that stay silent", function()
    local why
    local srv = assert(server.tcp { idle_timeout = 0.1, handler = function(conn)
      local line, err = conn:read("l")
      why = err
      if line then conn:write(line, "\n") end
    end })
    serving(srv, function()
      local c <close> = assert(socket.connect("127.0.0.1", srv.port))
      c:settimeout(H.TIMEOUT)
      assert.same({ nil, "closed" }, { line_of(c) })
    end)
    assert.equal("timeout", why)
  end)

  it("a handler error is logged with its traceback and closes only its connection", function()
    local logged = {}
    local srv = assert(server.tcp { log = function(m) logged[#logged + 1] = m end,
      handler = function(conn)
        for line in conn:lines() do
          if line == "boom" then error("kaboom") end
          conn:write(line, "\n")
        end
      end })
    serving(srv, function()
      local keep <close> = assert(socket.connect("127.0.0.1", srv.port))
      keep:settimeout(H.TIMEOUT)
      keep:write("one\n")
      assert.equal("one", keep:read("l"))
      local bad <close> = assert(socket.connect("127.0.0.1", srv.port))
      bad:settimeout(H.TIMEOUT)
      bad:write("boom\n")
      assert.same({ nil, "closed" }, { line_of(bad) })
      keep:write("two\n")
      assert.equal("two", keep:read("l"))
    end)
    assert.equal(1, #logged)
    assert.truthy(logged[1]:find("kaboom", 1, true))
    assert.truthy(logged[1]:find("stack traceback", 1, true))
  end)

  it("shutdown(grace) lets quick handlers finish and cancels the others", function()
    local finished, cancelled = 0, 0
    local started = 0
    local srv = assert(server.tcp { handler = function(conn)
      local line = conn:read("l")
      started = started + 1
      local ok, err = pcall(strand.sleep, line == "slow" and 100 or 0.05)
      if not ok then
        if strand.is_cancelled(err) then cancelled = cancelled + 1 end
        error(err, 0)
      end
      conn:write("done\n")
      finished = finished + 1
    end })
    H.run(function()
      local s = strand.spawn(function() return srv:serve_forever() end)
      local quick = assert(socket.connect("127.0.0.1", srv.port))
      local slow = assert(socket.connect("127.0.0.1", srv.port))
      quick:write("quick\n"); slow:write("slow\n")
      assert.is_true(H.wait_until(function() return started == 2 end))
      assert.is_true(srv:shutdown(0.5))
      assert.same({ true, true }, { s:join(H.TIMEOUT) })
      quick:settimeout(H.TIMEOUT); slow:settimeout(H.TIMEOUT)
      assert.equal("done", quick:read("l"))
      assert.same({ nil, "closed" }, { line_of(slow) })
      quick:close(); slow:close()
      -- no longer accepting
      assert.is_nil(socket.connect("127.0.0.1", srv.port))
    end)
    assert.equal(1, finished)
    assert.equal(1, cancelled)
  end)

  it("udp in task and thread modes: each datagram to the handler with a socket to reply on", function()
    for _, mode in ipairs { "task", "thread" } do
      local srv = assert(server.udp { mode = mode, workers = 2, handler = function(data, host, port, sock)
        sock:sendto(data:upper(), host, port)
      end })
      serving(srv, function()
        local c <close> = assert(socket.udp())
        c:settimeout(H.TIMEOUT)
        for i = 1, 5 do
          assert(c:sendto("datagram " .. i, "127.0.0.1", srv.port))
          assert.equal("DATAGRAM " .. i, (c:recvfrom(100)))
        end
      end)
    end
  end)

  it("unix stream and unix datagram servers; the socket file goes away at the end", function()
    local path = tmppath("srv")
    local srv = assert(server.unix { path = path, handler = upper_handler })
    serving(srv, function()
      local c <close> = assert(socket.unix_connect(path))
      c:settimeout(H.TIMEOUT)
      c:write("over unix\n")
      assert.equal("OVER UNIX", c:read("l"))
    end)
    assert.is_nil(io.open(path))
    local dpath, cpath = tmppath("dsrv"), tmppath("dcli")
    local dsrv = assert(server.unix_dgram { path = dpath, handler = function(data, peer, _, sock)
      sock:sendto(data:upper(), peer)
    end })
    serving(dsrv, function()
      local c <close> = assert(socket.unix_listen(cpath, { type = "dgram" }))
      c:settimeout(H.TIMEOUT)
      assert(c:sendto("unix datagram", dpath))
      assert.equal("UNIX DATAGRAM", (c:recvfrom(100)))
    end)
    os.remove(cpath)
    assert.is_nil(io.open(dpath))
  end)

  it("SIGINT stops serve_forever in the main program gracefully", function()
    local out, ok = H.lua([[
      local strand = require "strand"
      local server = require "strand.server"
      local socket = require "strand.socket"
      local srv = assert(server.tcp { handler = function(conn)
        conn:write("hi\n")
        strand.sleep(0.2)                        -- still running when the signal comes
        conn:write("bye\n")
      end })
      strand.spawn(function()
        local c = assert(socket.connect("127.0.0.1", srv.port))
        assert(c:read("l") == "hi")
        local f = io.open("/proc/self/stat"); local pid = f:read("n"); f:close()
        io.popen("kill -INT " .. pid):close()   -- not os.execute: system() ignores SIGINT
        print("client got", c:read("l"))
        c:close()
      end)
      print("serve_forever returned", srv:serve_forever())
    ]], ('LUA_PATH="%s" LUA_CPATH="%s" timeout -k 2 %d'):format(package.path, package.cpath, H.TIMEOUT * 2))
    assert.is_true(ok, out)
    assert.truthy(out:find("signal 2, shutting down", 1, true), out)
    assert.truthy(out:find("client got\tbye", 1, true), out)
    assert.truthy(out:find("serve_forever returned\ttrue", 1, true), out)
  end)
end)

describe("strand.server failure conditions", function()
  H.guard()

  it("raises on bad options", function()
    assert.has_error(function() server.tcp() end, "bad argument #1 to 'tcp' (table expected, got nil)")
    assert.has_error(function() server.tcp {} end, "bad argument #1 to 'tcp' (handler must be a function)")
    assert.has_error(function() server.tcp { handler = print, mode = "x" } end,
                     "bad argument #1 to 'tcp' (unknown mode 'x')")
    assert.has_error(function() server.tcp { handler = print, max_connections = 0 } end,
                     "bad argument #1 to 'tcp' (max_connections must be an integer >= 1)")
    assert.has_error(function() server.tcp { handler = print, mode = "thread", reuseport = true,
                                             max_connections = 2 } end)
    assert.has_error(function() server.unix { handler = print } end,
                     "bad argument #1 to 'unix' (path must be a string)")
  end)

  it("returns nil, err for a port in use", function()
    local srv = assert(server.tcp { handler = print })
    assert.same({ nil, "address already in use", "EADDRINUSE" },
                { server.tcp { port = srv.port, handler = print } })
    srv:close()
    srv:close()                                      -- idempotent
    assert.has_error(function() srv:serve_forever() end)
  end)

  it("shutdown before serve_forever releases the socket", function()
    local srv = assert(server.tcp { handler = print })
    local port = srv.port
    assert.is_true(srv:shutdown())
    assert.is_nil(socket.connect("127.0.0.1", port))
    assert.has_error(function() srv:shutdown(-1) end, "bad argument #1 to 'shutdown' (grace must be a number >= 0)")
  end)
end)
