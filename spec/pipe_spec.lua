-- process.pipe: copied values both ways between processes, poll, close, one-way pipes.
local strand = require "strand"
local process = require "strand.process"
local queue = require "strand.queue"
local H = require "support.helper"

describe("process pipes", function()
  H.guard()

  it("duplex: values go both ways between two processes (copied)", function()
    local a, b = process.pipe()
    local p = process.start(function()
      for _ = 1, 3 do
        local v = b:recv(H.TIMEOUT)
        b:send({ echo = v, pid = process.pid() })
      end
      return "done"
    end)
    for i, v in ipairs { 42, "text\0bin", { nested = { 1, 2 } } } do
      assert.is_true(a:send(v))
      local r = a:recv(H.TIMEOUT)
      assert.same(v, r.echo)
      assert.equal(p.pid, r.pid)
      assert.is_true(i <= 3)
    end
    assert.equal("done", p:result(H.TIMEOUT))
    a:close(); b:close()
  end)

  it("recv on a closed peer: nil, 'closed'; send to a closed peer: nil, 'closed'", function()
    local a, b = process.pipe()
    local p = process.start(function() b:send("last"); b:close(); return true end)
    b:close()
    assert.equal("last", a:recv(H.TIMEOUT))
    local v, err = a:recv(H.TIMEOUT)
    assert.is_nil(v); assert.equal("closed", err)
    assert.is_true(p:result(H.TIMEOUT))
    local ok, err = a:send("x")
    assert.is_nil(ok); assert.equal("closed", err)
    a:close()
  end)

  it("poll: false while empty, true when a value waits or the peer closed", function()
    local a, b = process.pipe()
    assert.is_false(a:poll())
    assert.is_false(a:poll(0.02))
    b:send(1)
    assert.is_true(a:poll(H.TIMEOUT))
    assert.is_true(a:poll())          -- still there: poll does not consume
    assert.equal(1, a:recv())
    b:close()
    assert.is_true(a:poll(H.TIMEOUT))
    local v, err = a:recv()
    assert.is_nil(v); assert.equal("closed", err)
    a:close()
  end)

  it("recv with a timeout: nil, 'timeout'", function()
    local a, b = process.pipe()
    local v, err = a:recv(0.02)
    assert.is_nil(v); assert.equal("timeout", err)
    a:close(); b:close()
  end)

  it("one-way pipe: the first end only receives, the second only sends", function()
    local r, w = process.pipe(false)
    assert.has_error(function() r:send(1) end, "send: this end of the pipe only receives")
    assert.has_error(function() w:recv() end, "recv: this end of the pipe only sends")
    local p = process.start(function() for i = 1, 100 do w:send(i) end return true end)
    local sum = 0
    for _ = 1, 100 do sum = sum + r:recv(H.TIMEOUT) end
    assert.equal(5050, sum)
    assert.is_true(p:result(H.TIMEOUT))
    r:close(); w:close()
  end)

  it("functions and shared objects are copied; nil and C functions are refused", function()
    local a, b = process.pipe()
    local k = 3
    a:send(function(x) return x * k end)
    assert.equal(12, b:recv(H.TIMEOUT)(4))
    assert.has_error(function() a:send(nil) end, "bad argument #1 to 'send' (cannot send nil)")
    local q = queue.new()
    assert.is_true(a:send(q))                           -- by arena offset (process_spec: across fork)
    q:put("via the pipe")
    assert.equal("via the pipe", b:recv(H.TIMEOUT):get(H.TIMEOUT))
    assert.has_error(function() a:send({ f = string.gmatch("a", "a") }) end)
    a:close(); b:close()
    assert.has_error(function() a:send(1) end, "attempt to use a closed pipe")
    assert.is_true(a:close())
  end)

  it("large values and many messages in a task while others run", function()
    H.run(function()
      local a, b = process.pipe()
      local big = string.rep("x", 3 * 1024 * 1024)
      local p = process.start(function()
        local v = b:recv(H.TIMEOUT)
        b:send(#v)
        return true
      end)
      local sender = strand.spawn(function() return a:send(big) end)
      assert.equal(#big, a:recv(H.TIMEOUT))
      assert.is_true(sender:result())
      assert.is_true(p:result(H.TIMEOUT))
      a:close(); b:close()
    end)
  end)
end)
