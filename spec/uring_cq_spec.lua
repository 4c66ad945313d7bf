-- spec/uring_cq_spec.lua — the io_uring completion queue's size (csrc/poller_uring.c cq_size): the
-- main state's ring follows RLIMIT_NOFILE, a thread's keeps 4096, and echoes stay exact when the
-- completions of a loop round outnumber the CQ (multishot recvs end on overflow and are re-armed).
local H = require "support.helper"

-- A child that prints its loop's CQ size and a thread's ("nouring" when io_uring is not the poller
-- there: refused by the kernel, or another poller asked for).
local SIZES = [[
local strand = require "strand"
local core = require "strand.core"
local thread = require "strand.thread"
strand.run(function()
  strand.sleep(0)
  local st = core._uring.stats()
  if not st then print("nouring") return end
  local t = thread.start(function()
    local s = require "strand"
    s.sleep(0.001)                     -- the thread's loop makes its poller
    return require("strand.core")._uring.stats().cq
  end)
  local ok, tcq = t:join()
  assert(ok, tcq)
  print("main " .. st.cq .. " thread " .. tcq)
end)
]]

-- A child serving N connections, each echoing ROUNDS messages of 64 bytes that name it and the
-- round, all in flight at once; prints "exact N" when every echo came back as sent.
local ECHO = [[
local strand = require "strand"
local socket = require "strand.socket"
local core = require "strand.core"
local N, ROUNDS = 300, 6
strand.run(function()
  local l = assert(socket.listen("127.0.0.1", 0, { backlog = 512 }))
  local _, port = l:getsockname()
  local server = strand.spawn(function()
    for _ = 1, N do
      local c = assert(l:accept())
      c:settimeout(30)
      strand.spawn(function()
        while true do
          local d = c:recv(65536)
          if not d then break end
          assert(c:sendall(d))
        end
        c:close()
      end)
    end
  end)
  local exact, clients = 0, {}
  for i = 1, N do
    clients[i] = strand.spawn(function()
      local c = assert(socket.connect("127.0.0.1", port))
      c:settimeout(30)
      local good = true
      for r = 1, ROUNDS do
        local msg = string.format("%-64s", "conn " .. i .. " round " .. r)
        assert(c:sendall(msg))
        local got = assert(c:read(64))
        good = good and got == msg
      end
      c:close()
      if good then exact = exact + 1 end
    end)
  end
  for i = 1, N do assert(clients[i]:join()) end
  assert(server:join())
  l:close()
  local st = core._uring.stats()
  print("exact " .. exact .. (st and (" cq " .. st.cq) or ""))
end)
]]

describe("io_uring completion queue", function()
  H.guard()

  it("the main state's CQ is 2 per allowed fd (4096 to 32768), a thread's 4096, STRAND_URING_CQ sets it", function()
    local out, ok = H.lua(SIZES, "ulimit -n 1024 && STRAND_POLLER=uring timeout 60")
    assert.is_true(ok, out)
    if out:match("^nouring") then return end       -- no io_uring here: nothing to size
    assert.equal("main 4096 thread 4096\n", out)
    out, ok = H.lua(SIZES, "ulimit -n 3000 && STRAND_POLLER=uring timeout 60")
    assert.is_true(ok, out)
    assert.equal("main 8192 thread 4096\n", out)
    out, ok = H.lua(SIZES, "ulimit -n 1024 && STRAND_POLLER=uring STRAND_URING_CQ=256 timeout 60")
    assert.is_true(ok, out)
    assert.equal("main 256 thread 256\n", out)
  end)

  it("300 connections echo exactly through a 256-entry CQ (completions overflow it every round)", function()
    local uring = not H.lua(SIZES, "STRAND_POLLER=uring timeout 60"):match("^nouring")
    local poller = os.getenv("STRAND_POLLER") or ""
    local out, ok = H.lua(ECHO, "ulimit -n 1024 && STRAND_URING_CQ=256 timeout 120")
    assert.is_true(ok, out)
    local n, cq = out:match("^exact (%d+)( ?[^\n]*)\n$")
    assert.equal("300", n, out)
    -- on io_uring (the default where the kernel has it): the small CQ was the one used
    if uring and (poller == "" or poller == "uring") then assert.equal(" cq 256", cq) end
  end)
end)
