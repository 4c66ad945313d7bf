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
  end)
end)
