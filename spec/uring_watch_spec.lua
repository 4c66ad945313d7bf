-- spec/uring_watch_spec.lua — the io_uring loop's watch before sleeping (docs/uring.md 4.7): a
-- loop with few requests in flight whose last wait was short watches the ring before sleeping;
-- exchanges stay exact and timeouts hold while it does, under every poller.
local strand = require "strand"
local process = require "strand.process"
local socket = require "strand.socket"
local core = require "strand.core"
local H = require "support.helper"

local uring = core.backend() == "uring"

-- n request/replies with a child process over a process.pipe; returns the child.
local function ping_pong(a, b, n)
  local p = process.start(function()
    while true do
      local v = b:recv(H.TIMEOUT)
      if v == nil or v == "stop" then return "stopped" end
      b:send(v * 2)
    end
  end)
  for i = 1, n do
    assert.is_true(a:send(i))
    assert.equal(i * 2, a:recv(H.TIMEOUT))
  end
  return p
end

describe("the watch before sleeping [" .. core.backend() .. "]", function()
  H.guard()

  it("a ping-pong between two processes: every reply exact; io_uring watched (two CPUs) or not (one)", function()
    local a, b = process.pipe()
    local before = uring and core._uring.stats()
    local p = ping_pong(a, b, 300)
    a:send("stop")
    assert.equal("stopped", p:result(H.TIMEOUT))
    a:close(); b:close()
    if uring then
      local st = core._uring.stats()
      assert.is_true(st.watch)
      -- the first wait after a short one (or the first at all) with a request in flight watches,
      -- whatever the load; hits depend on timing and are not checked
      if process.cpu_count() >= 2 then assert.is_true(st.watches > before.watches, st.watches)
      else assert.equal(before.watches, st.watches) end
      assert.is_true(st.watch_hits <= st.watches)
    end
  end)

  it("a receive's timeout holds after short waits: nil, 'timeout' no earlier than asked; the late value comes next", function()
    local a, b = process.pipe()
    local p = process.start(function()
      for _ = 1, 50 do b:send(b:recv(H.TIMEOUT)) end        -- short waits on both sides
      local v = b:recv(H.TIMEOUT)
      local q = require("strand.process")
      local t = require("strand").now()
      while require("strand").now() - t < 0.15 do end        -- answers late, busy (no wait of ours)
      b:send(v)
      return q.pid()
    end)
    for i = 1, 50 do a:send(i); assert.equal(i, a:recv(H.TIMEOUT)) end
    a:send("late")
    local t0 = strand.now()
    local v, err = a:recv(0.03)
    local dt = strand.now() - t0
    assert.is_nil(v); assert.equal("timeout", err)
    assert.is_true(dt >= 0.03 - 1e-3, dt)
    assert.is_true(dt < H.TIMEOUT, dt)
    assert.equal("late", a:recv(H.TIMEOUT))
    assert.equal(p.pid, p:result(H.TIMEOUT))
    a:close(); b:close()
  end)

  it("a sleep after short waits is not cut short by the watch", H.checked(function()
    H.run(function()
      local x, y = assert(socket.pair())
      local echo = strand.spawn(function()
        for _ = 1, 20 do assert(y:sendall(assert(y:recv(16)))) end
      end)
      for i = 1, 20 do
        assert(x:sendall(("%02d"):format(i)))
        assert.equal(("%02d"):format(i), x:recv(16))
      end
      assert.is_true((echo:join()))
      for _ = 1, 5 do                                   -- a socket waits the whole time
        local r = strand.spawn(function() return x:recv(16, 0.5) end)
        local t0 = strand.now()
        strand.sleep(0.005)
        local dt = strand.now() - t0
        assert.is_true(dt >= 0.005 - 1e-3, dt)
        assert(y:sendall("z"))
        local ok, d = r:join()
        assert.is_true(ok); assert.equal("z", d)
      end
      x:close(); y:close()
    end)
  end))

  it("STRAND_URING_SPIN=0 turns the watch off; the exchange is the same", function()
    local code = [[
      local process = require "strand.process"
      local core = require "strand.core"
      local a, b = process.pipe()
      local p = process.start(function()
        for _ = 1, 20 do b:send(b:recv(10) + 1) end
        return true
      end)
      for i = 1, 20 do a:send(i); assert(a:recv(10) == i + 1) end
      assert(p:result(10))
      a:close(); b:close()
      local st = core.backend() == "uring" and core._uring.stats()
      print(st and ("watch %s watches %d"):format(st.watch, st.watches) or "not uring")
    ]]
    local out, ok = H.lua(code, "STRAND_POLLER=uring STRAND_URING_SPIN=0")
    assert.is_true(ok, out)
    assert.is_truthy(out == "watch false watches 0\n" or out == "not uring\n", out)
    out, ok = H.lua(code, "STRAND_POLLER=uring")
    assert.is_true(ok, out)
    if out ~= "not uring\n" then                        -- (a kernel may refuse io_uring)
      local w, n = out:match("^watch (%a+) watches (%d+)\n$")
      assert.equal("true", w, out)
      if process.cpu_count() >= 2 then assert.is_true(tonumber(n) > 0, out) end
    end
  end)
end)
