-- spec/rev10a_spec.lua — session 10's hostile review from the user's side of strand.server,
-- strand.shared and strand.sync: misuse messages, shutdown bounds. Each case failed before its fix
-- (the text of its `it` says how).
local H = require "support.helper"
local strand = require "strand"
local server = require "strand.server"
local socket = require "strand.socket"

strand.run(function() end)   -- the loop's own fds exist before any leak check

-- The error message of fn(...) without its position, or nil when it does not raise.
local function raised(fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then return nil end
  return (tostring(err):gsub("^[^:]*:%d+: ", ""))
end

describe("rev10a", function()
  H.guard()

  describe("strand.server", function()
    it("a port out of range raises naming 'tcp'/'udp' (it named 'listen', at a line of server.lua)", function()
      local h = function() end
      for _, port in ipairs { -1, 65536, 70000 } do
        local ok, err = pcall(server.tcp, { handler = h, port = port })
        assert.is_false(ok)
        assert.equal("bad argument #1 to 'tcp' (port must be an integer 0..65535)", err)
        assert.equal("bad argument #1 to 'udp' (port must be an integer 0..65535)",
          raised(server.udp, { handler = h, port = port }))
      end
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(function() local srv = server.tcp { handler = h, port = 70000 }; return srv end)
      assert.is_false(ok)
      assert.equal(("spec/rev10a_spec.lua:%d: bad argument #1 to 'tcp' (port must be an integer 0..65535)"):format(line), err)
    end)

    it("wait_ready's bad timeout raises naming 'wait_ready' (it named 'wait', at a line of server.lua)", function()
      local srv = assert(server.tcp { handler = function() end })
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(function() local r = srv:wait_ready("soon"); return r end)
      assert.is_false(ok)
      assert.equal(("spec/rev10a_spec.lua:%d: bad argument #1 to 'wait_ready' (timeout must be a number >= 0)"):format(line), err)
      assert.equal("bad argument #1 to 'wait_ready' (timeout must be a number >= 0)", raised(srv.wait_ready, srv, -1))
      assert.equal("bad argument #1 to 'wait_ready' (timeout must be a number >= 0)", raised(srv.wait_ready, srv, 0 / 0))
      assert.is_false(srv:wait_ready(0))
      srv:close()
    end)

    it("thread mode: shutdown is bounded when a handler catches its cancellation and goes on (it waited for the handler)", function()
      -- in a process of its own: the worker left running keeps its thread's descriptors until it
      -- is joined at exit (strand.thread's rule for non-daemon threads)
      local out = H.lua([[
        local strand = require "strand"
        local server = require "strand.server"
        local socket = require "strand.socket"
        local sync = require "strand.sync"
        local release = sync.event()    -- crosses into the worker by reference
        local logs = {}
        local srv = assert(server.tcp { mode = "thread", workers = 1, handler = function(conn)
          local strand = require "strand"
          conn:write("in\n")
          local t0 = strand.now()
          -- a retry loop that swallows every error, the cancellation included
          while not release:is_set() and strand.now() - t0 < 90 do pcall(strand.sleep, 0.05) end
        end, log = function(m) logs[#logs + 1] = m end })
        strand.run(function()
          local serving = strand.spawn(function() return srv:serve_forever() end)
          assert(srv:wait_ready(10))
          local c = assert(socket.connect("127.0.0.1", srv.port, { timeout = 10 }))
          c:settimeout(10)
          assert(c:read("l") == "in")
          local ok, r = strand.timeout(60, srv.shutdown, srv, 0.1)
          release:set()
          print("shutdown", ok, r)
          print("serve_forever", serving:join(10))
          print("log", logs[#logs])
          print("connect after", socket.connect("127.0.0.1", srv.port))
          c:close()
        end)
      ]], "timeout -k 5 100")
      assert.matches("shutdown\ttrue\ttrue\n", out)
      assert.matches("serve_forever\ttrue\ttrue\n", out)
      assert.matches("log\tstrand.server: worker 1 did not stop", out)
      assert.matches("connect after\tnil\tconnection refused", out)
    end)
  end)
  describe("strand.shared", function()
    it("d:update with a bad key raises naming 'update' at the caller (it named 'getv' at strand.shared:9)", function()
      local shared = require "strand.shared"
      local d = shared.dict()
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(function() local r = d:update(nil, function() return 1 end); return r end)
      assert.is_false(ok)
      assert.equal(("spec/rev10a_spec.lua:%d: bad argument #1 to 'update' (string, number or boolean key expected, got nil)"):format(line), err)
      assert.equal("bad argument #1 to 'update' (string, number or boolean key expected, got table)",
        raised(d.update, d, {}, function() return 1 end))
      assert.equal("bad argument #1 to 'update' (key is NaN)", raised(d.update, d, 0 / 0, function() return 1 end))
      assert.equal(0, d:len())
      assert.equal(1, d:update(1.0, function(v) return (v or 0) + 1 end))
      assert.equal(1, d[1])
    end)

    it("a list reads nil outside 1..len (ipairs works) and refuses stores past len + 1, as documented", function()
      local shared = require "strand.shared"
      local l = shared.list { "a", "b" }
      assert.is_nil(l[0]); assert.is_nil(l[3]); assert.is_nil(l[-1])
      local n = 0
      for _ in ipairs(l) do n = n + 1 end
      assert.equal(2, n)
      l[3] = "c"
      assert.equal(3, l:len())
      assert.equal("bad argument #1 to 'set' (index 5 out of range: length 3)", raised(function() l[5] = "x" end))
      assert.equal("bad argument #1 to 'set' (index 0 out of range: length 3)", raised(function() l[0] = "x" end))
    end)
  end)
end)
