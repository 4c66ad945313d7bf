-- spec/rev10b_spec.lua — session 10 review (urfix10, q10): a multishot recv's cancel queued while a
-- full SQ's submit reaps, and the queue's fast paths; checked under every poller.
local core = require "strand.core"
local H = require "support.helper"

describe("rev10b [" .. core.backend() .. "]", function()
  H.guard()

  it("a recv cancel whose submit reaps the recv's own end leaves no stale 'cancel queued' mark", H.checked(function()
    -- STRAND_URING_TESTFULL=2 (io_uring only): the SQ counts as full whenever a request is
    -- queued, and a submit meets EBUSY while the CQ holds completions not reaped, so queuing a
    -- request reaps first. Task W queues a request (its first read of y) and task M, in the same
    -- round, sends 9,000 bytes to b, whose multishot recv completes at once (16 buffers: its byte
    -- limit ends it; not reaped), then reads b without blocking: the cancel of b's recv reaps that
    -- end while being queued. The "cancel queued" mark was set after, for a recv already over: the
    -- next recv armed on b kept it, so the next non-blocking read cancelled nothing (it waited 1 s
    -- for a recv that went on taking b's bytes). Under epoll: the same exchanges, nothing counted.
    local out, ok = H.lua([[
local strand = require "strand"
local socket = require "strand.socket"
local core = require "strand.core"
local a, b = assert(socket.pair())
local x, y = assert(socket.pair())
local big = string.rep("x", 9000)
local function stats() return core._uring.stats() or { busy = 0, armed = 0 } end
strand.run(function()
  for i = 1, 3 do                       -- b is read by a multishot recv (io_uring)
    local r = strand.spawn(function() return b:recv(100) end)
    strand.sleep(0.001)
    assert(a:sendall("m" .. i))
    local _, got = r:join()
    assert(got == "m" .. i, got)
  end
  local T = strand.spawn(function() strand.sleep(0.5) end)
  local W = strand.spawn(function() T:join(); return y:recv(10) end)
  strand.sleep(0)                       -- W joins T first: woken first, in the same round as M
  local busy0 = stats().busy
  T:join()
  assert(a:sendall(big))
  b:setblocking(false)
  local got = assert(b:recv(100))
  local busy = stats().busy - busy0
  b:setblocking(true)
  local n = #got
  while n < #big do n = n + #assert(b:recv(100000)) end
  local r = strand.spawn(function() return b:recv(100) end)   -- b's recv armed again
  strand.sleep(0.001)
  assert(a:sendall("z"))
  local _, z = r:join()
  assert(z == "z", z)
  local armed0 = stats().armed
  local t0 = strand.now()
  b:setblocking(false)
  local none, e = b:recv(100)           -- cancels b's recv (and waits for its end)
  local dt = strand.now() - t0
  local armed = stats().armed
  assert(a:sendall("after"))
  local after = b:recv(100)
  assert(x:sendall("q"))
  local _, q = W:join()
  print("RESULT", core._uring.stats() == nil or busy > 0, none, e, armed0 - armed, dt < 0.5, after, q)
end)
]], "STRAND_URING_TESTFULL=2 timeout -s KILL 60")
    assert.is_true(ok, out)
    local line = out:match("RESULT[^\n]*")
    assert(line, out)
    local precond, none, e, dropped, quick, after, q = line:match("^RESULT\t(%a+)\t(%a+)\t(%a+)\t(%-?%d+)\t(%a+)\t(%a+)\t(%a+)$")
    assert.equal("true", precond, out)           -- the cancel's submit did reap (io_uring)
    assert.equal("nil", none); assert.equal("wouldblock", e)
    -- (quick: the cancel's end came in ms where the bug waited 1 s; printed, not asserted: a
    -- loaded machine may stall the process that long; the count below is exact)
    assert.equal("after", after); assert.equal("q", q)
    if core.backend() == "uring" then assert.equal("1", dropped, out) else assert.equal("0", dropped, out) end
  end))

  it("a fork beside a thread whose recv is queued, not yet submitted, with no reader: the bytes after the fork stay for the child", H.checked(function()
    -- A thread reads s once, then a task starts reading s (the io_uring poller queues a multishot recv, submitted at
    -- the loop's next wait) and a second task, in the same round, cancels it and blocks the thread
    -- in a plain read of a FIFO (no loop: the recv stays queued). The main program forks a child
    -- (allow_threads) that inherits s's descriptor and reads it 0.3 s later, sends "three", then
    -- lets the thread go on; the thread reads s only once the child has read (a queue: no race
    -- under load). Under epoll nobody reads s before the child. The fork cancelled the recvs
    -- other threads had submitted, not one still queued: submitted after the fork, it took
    -- "three" (the child timed out).
    local dir = os.tmpname(); os.remove(dir)
    assert(os.execute("mkdir " .. dir .. " && mkfifo " .. dir .. "/fifo"))
    local out, ok = H.lua(([[
local strand = require "strand"
local core = require "strand.core"
local thread = require "strand.thread"
local queue = require "strand.queue"
local process = require "strand.process"
local FIFO = %q
local ready = queue.new()
local done = queue.new()                   -- the child has read (or timed out)
local t = thread.start(function(ready, fifo, done)
  local strand = require "strand"
  local s, w = assert(require("strand.socket").pair())
  ready:put(tonumber(tostring(s):match("fd (%%d+)")))
  ready:put(tonumber(tostring(w):match("fd (%%d+)")))
  ready:put(s:recv(100))                   -- "m1": s is registered and on the fast path now
  local t1 = strand.spawn(function() return s:recv(100) end)   -- queues its multishot recv
  strand.spawn(function()                  -- runs right after t1, in the same round
    t1:cancel()                            -- nobody reads s now
    ready:put("blocked")
    local f = assert(io.open(fifo, "r"))
    f:read("l"); f:close()
  end)
  assert(done:get(60))                     -- the loop waits here: a queued recv is submitted
  s:settimeout(0.5)
  local got, err = s:recv(100)             -- "three" if the child did not take it
  s:close(); w:close()
  return got or err
end, ready, FIFO, done)
local sfd, wfd = ready:get(10), ready:get(10)
local b = assert(core.netcompat.fromfd(wfd))
assert(b:sendall("m1"))
assert(ready:get(10) == "m1")
assert(ready:get(10) == "blocked")
local p = process.new{ allow_threads = true, args = { sfd, done }, fn = function(fd, done)
  local s = assert(require("strand.core").netcompat.fromfd(fd))
  require("strand").sleep(0.3)             -- (gives a wrongly submitted recv time to take the bytes)
  s:settimeout(5)
  local got, err = s:recv(100)
  s:close()
  done:put(true)                           -- only now may the thread read
  return got or err
end }
assert(p:start())
assert(b:sendall("three"))
local f = assert(io.open(FIFO, "w")); f:write("go\n"); f:close()
local ok, child = p:join(30)
local tok, mine = t:join(30)
print("RESULT", ok, child, tok, mine)
b:close()
]]):format(dir .. "/fifo"), "timeout -s KILL 90")
    os.execute("rm -rf " .. dir)
    assert.is_true(ok, out)
    assert.equal("RESULT\ttrue\tthree\ttrue\ttimeout", out:match("RESULT[^\n]*"))
  end))
end)
