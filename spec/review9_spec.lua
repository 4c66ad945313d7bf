-- spec/review9_spec.lua — defects found in session 9's hostile review of the io_uring poller (the
-- default) from the user's side: each case failed before its fix; every poller must agree.
local strand = require "strand"
local socket = require "strand.socket"
local H = require "support.helper"

-- A connected pair (client, server side) whose client has waited for a read once, so that under
-- io_uring it reads and writes through the ring (multishot recv, SEND requests).
local function fast_pair()
  local l = assert(socket.listen("127.0.0.1", 0))
  local _, port = l:getsockname()
  local c = assert(socket.connect("127.0.0.1", port))
  local a = assert(l:accept())
  l:close()
  c:settimeout(H.TIMEOUT); a:settimeout(H.TIMEOUT)
  local r = strand.spawn(function() return c:recv(10) end)
  strand.sleep(0.02)
  assert(a:sendall("z"))
  assert.same({ true, "z" }, { r:join(H.TIMEOUT) })
  return c, a
end

-- A program in a fresh lua5.4 (its own loop, env as given), bounded by timeout(1).
local function fresh(code, env)
  local out, ok = H.lua('package.path = "lua/?.lua;lua/?/init.lua;" .. package.path\n' .. code,
    "timeout -k 5 60 " .. (env or ""))
  assert.is_true(ok, out)
  return out
end

-- What the ring has completed so far is reaped now (the test hook does what a loop wait does);
-- nothing under epoll and poll.
local function reap_now()
  local u = require("strand.core")._uring
  if u then u.stats() end
end

describe("review 9: sendall on a socket written through the ring", function()
  H.guard()

  it("tasks each sending a short message to one socket all succeed, in order (not 'already writing')", function()
    -- the first sendall's SEND is in flight until the loop reaps it; the others raised
    -- "another task is already writing to this object" where epoll's send(2) went through
    H.run(function()
      local c, a = fast_pair()
      local ts = {}
      for i = 1, 3 do ts[i] = strand.spawn(function() return c:sendall("msg" .. i .. "\n") end) end
      for i = 1, 3 do assert.same({ true, true }, { ts[i]:join(H.TIMEOUT) }) end
      assert.same({ "msg1", "msg2", "msg3" }, { a:read("l"), a:read("l"), a:read("l") })
      c:close(); a:close()
    end)
  end)

  it("a sendall whose send completed keeps its result when another task sends before it resumes", function()
    -- B ran between the reap of A's completion and A's resumption: it dropped A's result as "a
    -- cancelled sendall's", so A waited for B's send and raised (or sent its bytes twice)
    H.run(function()
      local c, a = fast_pair()
      local A = strand.spawn(function() return c:sendall("AAAA\n") end)
      local B = strand.spawn(function()
        strand.sleep(0)          -- A's send is queued
        reap_now()               -- ... and completed: A is ready, B runs first
        return c:sendall("BBBB\n")
      end)
      assert.same({ true, true }, { A:join(H.TIMEOUT) })
      assert.same({ true, true }, { B:join(H.TIMEOUT) })
      assert.same({ "AAAA", "BBBB" }, { a:read("l"), a:read("l") })
      a:settimeout(0.2)
      assert.same({ nil, "timeout", "ETIMEDOUT" }, { a:recv(10) })   -- nothing twice
      c:close(); a:close()
    end)
  end)

  it("send, write and send_frame from other tasks while a sendall's send is in the ring: in order, no raise", function()
    -- they write by send(2): they saw the socket not writable (the sendall's send cleared it)
    -- and raised "another task is already writing to this object" where epoll went through
    H.run(function()
      local c, a = fast_pair()
      local ts = {
        strand.spawn(function() return c:sendall("A1\n") end),
        strand.spawn(function() return c:write("B", "2\n") end),
        strand.spawn(function() return c:send("C3\n") end),
        strand.spawn(function() return c:send_frame("D4") end),
        strand.spawn(function() return c:sendall("E5\n") end),
      }
      for i, t in ipairs(ts) do
        local r = table.pack(t:join(H.TIMEOUT))
        assert.is_true(r[1], tostring(r[2]))
        assert.is_truthy(r[2], "task " .. i)
      end
      assert.same({ "A1", "B2", "C3", "\0\0\0\2D4", "E5" },
        { a:read("l"), a:read("l"), a:read("l"), a:read(6), a:read("l") })
      c:close(); a:close()
    end)
  end)

  it("a sendall that times out counts the bytes its send in the ring had taken (it said 0)", function()
    -- 8 MiB to a peer that does not read: the socket buffer takes some MiB, then the timeout;
    -- the cancelled send's partial result was dropped, so bytes_sent said 0 and a caller
    -- resending from there would have sent those bytes twice
    H.run(function()
      local c, a = fast_pair()
      c:settimeout(0.3)
      local data = string.rep("x", 8 * 1024 * 1024)
      local ok, err, sent, code = c:sendall(data)
      assert.same({ nil, "timeout", "ETIMEDOUT" }, { ok, err, code })
      c:close()
      local got = assert(a:read("a"))
      assert.is_true(#got > 0)
      assert.equal(#got, sent)
      a:close()
    end)
  end)
end)

describe("review 9: a ring whose provided-buffer pool cannot be made", function()
  H.guard()

  it("tries to make it once, not on every read (16 MiB map, refused register, unmaps each time)", function()
    -- RLIMIT_MEMLOCK can let io_uring_setup through and refuse the pool's registration (a user
    -- without CAP_IPC_LOCK; STRAND_URING_NOPOOL=1 refuses it here): reads go by readiness
    local out = fresh([[
      local strand = require "strand"
      local socket = require "strand.socket"
      strand.run(function()
        local a, b = socket.pair()
        b:settimeout(30)
        local t = strand.spawn(function()
          for i = 1, 200 do assert(b:read(2) == "m" .. i % 10) end
        end)
        for i = 1, 200 do assert(a:sendall("m" .. i % 10)); strand.sleep(0) end
        assert(t:join(30))
        local core = require "strand.core"
        local u = core._uring.stats()
        print(core.backend(), u and u.pool_tries, u and u.nbuf)
      end)
    ]], "env STRAND_URING_NOPOOL=1")
    if out:match("^uring") then
      assert.equal("uring\t1\t0\n", out)
    else
      assert.matches("^%a+\tnil\tnil\n$", out)
    end
  end)
end)
