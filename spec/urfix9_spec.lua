-- spec/urfix9_spec.lua — io_uring poller fixes of session 9, checked under every poller: a sendall
-- whose timer and send completion land in one loop step, errno across a re-arm, per-sendall failures.
local core = require "strand.core"
local H = require "support.helper"

-- Lua source run by H.lua: a warmed socket pair a, b (each side read after waiting, so that the
-- io_uring poller arms a multishot recv and sends by SEND requests); warm() again in a later run.
local PRELUDE = [[
local strand = require "strand"
local socket = require "strand.socket"
local a, b = assert(socket.pair())
local function warm()
  for _, pair in ipairs { { a, b }, { b, a } } do
    for i = 1, 2 do
      local r = strand.spawn(function() return pair[2]:recv(100) end)
      strand.sleep(0.01)
      assert(pair[1]:sendall("w" .. i))
      assert(r:join())
    end
  end
end
strand.run(warm)
]]

describe("urfix9 [" .. core.backend() .. "]", function()
  H.guard()

  it("a sendall whose timer fires in the step its send completes: all bytes sent is success", H.checked(function()
    -- the main program joins a task that ends at once: that step skips its poll and fires the
    -- timers, so the 1 ns timeout fires before the ring submits the send; the send then goes whole
    local out, ok = H.lua(PRELUDE .. [[
local data = ("x"):rep(100)
a:settimeout(1e-9)
local w = strand.spawn(function() return a:sendall(data) end)
strand.spawn(function() return 1 end):join()
local jok, r1, r2, r3 = w:join()
a:settimeout(nil)
local got = assert(b:recv(1000))
print("RESULT", jok, r1, r2, r3, #got)
a:close(); b:close()
]])
    assert.is_true(ok, out)
    assert.equal("RESULT\ttrue\ttrue\tnil\tnil\t100", out:match("RESULT[^\n]*"))
  end))

  it("sendalls of three tasks whose sends all fail each report the error (none reads all sent)", H.checked(function()
    H.run(function()
      local strand = require "strand"
      local socket = require "strand.socket"
      local a, b = assert(socket.pair())
      for _, pair in ipairs { { a, b }, { b, a } } do   -- warm: the io_uring poller sends by requests
        for i = 1, 2 do
          local r = strand.spawn(function() return pair[2]:recv(100) end)
          strand.sleep(0.01)
          assert(pair[1]:sendall("w" .. i))
          assert(r:join())
        end
      end
      local big = ("z"):rep(8 * 1024 * 1024)
      local first = strand.spawn(function() return a:sendall(big) end)
      strand.sleep(0.05)                            -- its send is in flight: the peer does not read
      -- the peer goes: first's send fails; two more sendalls start before first resumes (the
      -- second reaps the first one's failed send), so first's failure is collected last
      b:close()
      local second = strand.spawn(function() return a:sendall("x") end)
      local third = strand.spawn(function() return a:sendall("y") end)
      for name, t in pairs { first = first, second = second, third = third } do
        local ok, r, err, sent = t:join()
        assert.is_true(ok, name)
        assert.is_nil(r, name .. " reported success")
        assert.is_string(err, name)
        assert.is_true(sent < (name == "first" and #big or 1), name)
      end
      a:close()
    end)
  end))

  it("a read that re-arms the ring while the SQ is full keeps its EAGAIN (no spurious error)", H.checked(function()
    -- STRAND_URING_TESTFULL=1 (io_uring only): the SQ counts as full whenever a request is queued,
    -- and the submit that makes room is first interrupted (EINTR). c, read by recv(2) so far and
    -- still marked readable, finds nothing (EAGAIN) and arms its multishot recv while the writer's
    -- SEND is queued: it must wait, not fail.
    local out, ok = H.lua(PRELUDE .. [[
local c, d = assert(socket.pair())
print("RESULT", strand.run(function()
  local first = strand.spawn(function() return c:recv(1) end)   -- c is watched, then read by
  strand.sleep(0.01)                 -- recv(2) (each read filled: c stays marked readable)
  assert(d:sendall("xy"))
  assert(select(2, first:join()) == "x")
  assert(c:recv(1) == "y")
  warm()                             -- (in this run's loop)
  local writer = strand.spawn(function() return a:sendall("s") end)
  local reader = strand.spawn(function() return c:recv(10) end)
  strand.sleep(0.05)
  assert(d:sendall("hello"))
  local _, got, err = reader:join()
  assert(writer:join())
  return got, err
end))
a:close(); b:close(); c:close(); d:close()
]], "STRAND_URING_TESTFULL=1")
    assert.is_true(ok, out)
    assert.equal("RESULT\thello\tnil", out:match("RESULT[^\n]*"))
  end))
end)
