-- Processes: fork, results and errors back through join/result, exitcodes, signals, reaping,
-- daemons, the parent's loop left alone in the child, shared objects across processes.
local strand = require "strand"
local process = require "strand.process"
local socket = require "strand.socket"
local sync = require "strand.sync"
local queue = require "strand.queue"
local shared = require "strand.shared"
local H = require "support.helper"

local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local s = f:read("a"); f:close()
  return not s:match("^%d+ %b() [ZX]")
end

describe("processes", function()
  H.guard()

  it("start with arguments; join returns the results; pid and ppid", function()
    local p = process.start(function(a, b) return a + b, { a, b }, process.pid(), process.ppid() end, 2, 3)
    assert.is_number(p.pid)
    local ok, sum, pair, pid, ppid = p:join(H.TIMEOUT)
    assert.is_true(ok)
    assert.equal(5, sum)
    assert.same({ 2, 3 }, pair)
    assert.equal(p.pid, pid)
    assert.equal(process.pid(), ppid)
    assert.equal(0, p.exitcode)
    assert.equal(5, (p:result()))
    assert.is_false(p:is_alive())
    assert.is_true(process.cpu_count() >= 1)
  end)

  it("an error comes back with the child's traceback; exitcode 1", function()
    local p = process.start(function() local t = nil; return t.field end)
    local ok, err = p:join(H.TIMEOUT)
    assert.is_false(ok)
    assert.matches("attempt to index", err)
    assert.matches("stack traceback", err)
    assert.equal(1, p.exitcode)
    local ok2, err2 = pcall(p.result, p)
    assert.is_false(ok2)
    assert.matches("attempt to index", err2)
  end)

  it("exitcode: os.exit(n) gives n, a kill gives -9, terminate -15", function()
    local p = process.start(function() os.exit(7) end)
    local ok, err = p:join(H.TIMEOUT)
    assert.is_false(ok)
    assert.equal("process exited with code 7", err)
    assert.equal(7, p.exitcode)

    local k = process.start(function() strand.sleep(30) end)
    assert.is_true(k:is_alive())
    assert.is_nil(k.exitcode)
    assert.is_true(k:kill())
    local ok2, err2 = k:join(H.TIMEOUT)
    assert.is_false(ok2)
    assert.equal("process killed by signal 9", err2)
    assert.equal(-9, k.exitcode)
    assert.is_true(k:kill())          -- already gone: nothing to do, no error

    local t = process.start(function() strand.sleep(30) end)
    t:terminate()
    t:join(H.TIMEOUT)
    assert.equal(-15, t.exitcode)

    local s = process.start(function() strand.sleep(30) end)
    s:signal(10)                       -- SIGUSR1: default action terminates
    s:join(H.TIMEOUT)
    assert.equal(-10, s.exitcode)
  end)

  it("join with a timeout: nil, 'timeout'; result raises exactly 'timeout'", function()
    local p = process.start(function() strand.sleep(30) end)
    assert.same({ nil, "timeout" }, { p:join(0.05) })
    local ok, err = pcall(p.result, p, 0)
    assert.is_false(ok)
    assert.equal("timeout", err)
    p:kill()
    p:join(H.TIMEOUT)
  end)

  it("join waits through the loop: other tasks run meanwhile", function()
    H.run(function()
      local ticks = 0
      local ticker = strand.spawn(function()
        for _ = 1, 1000 do strand.sleep(0.005); ticks = ticks + 1 end
      end)
      local a, b = process.pipe()
      local p = process.start(function() return b:recv(H.TIMEOUT) end)
      assert.is_true(H.wait_until(function() return ticks >= 3 end))
      a:send("go")
      assert.equal("go", p:result(H.TIMEOUT))
      assert.is_true(ticks >= 3)
      ticker:cancel()
      a:close(); b:close()
    end)
  end)

  it("two tasks joining one process both get the results", function()
    H.run(function()
      local p = process.start(function() strand.sleep(0.05); return "x" end)
      local t1 = strand.spawn(function() return p:result(H.TIMEOUT) end)
      local t2 = strand.spawn(function() return p:result(H.TIMEOUT) end)
      assert.equal("x", t1:result())
      assert.equal("x", t2:result())
    end)
  end)

  it("a task cancelled while joining leaves the process joinable", function()
    H.run(function()
      local a, b = process.pipe()
      local p = process.start(function() return b:recv(H.TIMEOUT) end)
      local joiner = strand.spawn(function() return p:join() end)
      strand.sleep(0.02)
      joiner:cancel("stop")
      local ok, err = joiner:join()
      assert.is_false(ok); assert.is_true(strand.is_cancelled(err))
      a:send("after")
      assert.equal("after", p:result(H.TIMEOUT))
      a:close(); b:close()
    end)
  end)

  it("memory is isolated: a child changing a global does not change the parent's", function()
    counter_global = 1
    local p = process.start(function() counter_global = 99; return counter_global end)
    assert.equal(99, p:result(H.TIMEOUT))
    assert.equal(1, counter_global)
    counter_global = nil
  end)

  it("the parent's tasks do not run in the child; the parent's loop keeps its registrations", function()
    H.run(function()
      local a, b = socket.pair()
      local marker = os.tmpname()
      local got
      -- this task waits on a socket in the parent: the child must neither run it nor
      -- deregister the socket from the (shared) epoll instance
      local reader = strand.spawn(function()
        got = a:recv(100)
        local f = io.open(marker, "a"); f:write("reader ran in ", process.pid(), "\n"); f:close()
      end)
      strand.sleep(0)
      local me = process.pid()
      local p = process.start(function()
        strand.sleep(0.02)
        a:close()                       -- closes the child's copy only
        return "child done"
      end)
      assert.equal("child done", p:result(H.TIMEOUT))
      b:send("hello")
      reader:join(H.TIMEOUT)
      assert.equal("hello", got)
      local f = io.open(marker); local s = f:read("a"); f:close()
      os.remove(marker)
      assert.equal("reader ran in " .. me .. "\n", s)
      a:close(); b:close()
    end)
  end)

  it("a socket made before the fork works in the child through the child's loop", function()
    local a, b = socket.pair()
    local p = process.start(function()
      local line = b:read("l")
      b:write(line:upper(), "\n")
      return true
    end)
    a:write("ping\n")
    assert.equal("PING", a:read("l"))
    assert.is_true(p:result(H.TIMEOUT))
    a:close(); b:close()
  end)

  it("process.new: name, args, daemon; start twice raises; join before start raises", function()
    local p = process.new{ fn = function(x) return x * 2, process.name() end, args = { 21 }, name = "worker-a" }
    assert.equal("worker-a", p.name)
    assert.has_error(function() p:join() end, "process worker-a was not started")
    assert.equal(p, p:start())
    assert.has_error(function() p:start() end, "process worker-a already started")
    local ok, v, name = p:join(H.TIMEOUT)
    assert.is_true(ok); assert.equal(42, v); assert.equal("worker-a", name)
    assert.is_false(process.new{ fn = function() end }.daemon)
    -- unnamed: "Process-N" (N counts the processes made), the same in the child; the program
    -- itself is "MainProcess"
    local q1 = process.new{ fn = function() return process.name() end }
    local q2 = process.start(function() return process.name() end)
    local n1 = tonumber(q1.name:match("^Process%-(%d+)$"))
    assert.is_number(n1)
    assert.equal("Process-" .. (n1 + 1), q2.name)
    assert.same({ true, q2.name }, { q2:join(H.TIMEOUT) })
    assert.same({ true, q1.name }, { q1:start():join(H.TIMEOUT) })
    assert.equal("MainProcess", process.name())
    assert.matches("^strand.process Process%-%d+ %(pid %d+%)$", tostring(q2))
  end)

  it("misuse raises with the function and argument", function()
    assert.has_error(function() process.start(42) end,
      "bad argument #1 to 'start' (function expected, got number)")
    assert.has_error(function() process.new(1) end, "bad argument #1 to 'new' (table expected, got number)")
    assert.has_error(function() process.new{ fn = 1 } end, "bad argument #1 to 'new' (fn must be a function)")
    local p = process.start(function() end)
    assert.has_error(function() p:join(-1) end,
      "bad argument #2 to 'join' (timeout must be a number >= 0 or nil)")
    assert.has_error(function() p:signal("x") end, "bad argument #1 to 'signal' (integer expected, got string)")
    assert.is_true(p:join(H.TIMEOUT))
  end)

  it("results with nil holes come back with their count; an error as false, message", function()
    local p = process.start(function(a) return nil, a, nil end, 7)
    local r = table.pack(p:join(H.TIMEOUT))
    assert.equal(4, r.n)
    assert.is_true(r[1]); assert.is_nil(r[2]); assert.equal(7, r[3]); assert.is_nil(r[4])
    local q = process.start(function() error({ code = 5 }) end)
    local ok, err = q:join(H.TIMEOUT)
    assert.is_false(ok); assert.equal(5, err.code)
    assert.equal(1, q.exitcode)
  end)

  it("results that cannot be copied fail the join with a message", function()
    local p = process.start(function() return io.stdout end)
    local ok, err = p:join(H.TIMEOUT)
    assert.is_false(ok)
    assert.matches("cannot copy its results back", err)
  end)

  it("shared objects made in the child after the fork come back as results", function()
    local p = process.start(function()
      local q, d, lock = queue.new(), shared.dict(), sync.lock()
      q:put("from the child"); d.k = 42
      return q, d, lock
    end)
    local q, d, lock = p:result(H.TIMEOUT)
    assert.equal("from the child", q:get(H.TIMEOUT))
    assert.equal(42, d.k)
    assert.same({ lock }, { lock:acquire(0) })
    lock:release()
    local q0 = queue.new()                              -- made before: the very same queue
    local p2 = process.start(function() return q0 end)
    local back = p2:result(H.TIMEOUT)
    q0:put("same")
    assert.equal("same", back:get(H.TIMEOUT))
  end)

  it("shared objects made after the fork go through a pipe both ways", function()
    local a, b = process.pipe()
    local p = process.start(function()
      local ev = b:recv(H.TIMEOUT)                      -- made by the parent after the fork
      local q = queue.new()
      b:send(q)
      q:put("child's queue")
      ev:set()
      b:close()
    end)
    b:close()
    local ev = sync.event()
    assert.is_true(a:send(ev))
    local q = a:recv(H.TIMEOUT)
    assert.is_true(ev:wait(H.TIMEOUT))
    assert.equal("child's queue", q:get(H.TIMEOUT))
    assert.is_true(p:join(H.TIMEOUT))
    a:close()
  end)

  it("functions come back as results (copied)", function()
    local p = process.start(function() local k = 5; return function(x) return x + k end end)
    local f = p:result(H.TIMEOUT)
    assert.equal(7, f(2))
  end)

  it("a child with 4 MiB of results exits before anyone joins it; join then gets them whole", function()
    local p = process.start(function() return string.rep("ab", 2 * 1024 * 1024), 7 end)
    local deadline = strand.now() + H.TIMEOUT
    while p.exitcode == nil and strand.now() < deadline do strand.sleep(0.01) end
    assert.equal(0, p.exitcode)                   -- it never waited for a reader
    local ok, s, n = p:join(H.TIMEOUT)
    assert.is_true(ok)
    assert.equal(4 * 1024 * 1024, #s)
    assert.equal("abab", s:sub(-4))
    assert.equal(7, n)
    assert.is_true((p:join(H.TIMEOUT)))           -- joined again: the same outcome
  end)

  it("start-all-then-join is parallel", function()
    -- exact, not timed: the four children meet at one barrier, which only happens when all four
    -- run at once (one at a time, the first would wait alone and time out, breaking it)
    local b = sync.barrier(4)
    local ps = {}
    for i = 1, 4 do
      ps[i] = process.start(function(n) local k, err = b:wait(H.TIMEOUT); return n, k, err end, i)
    end
    local arrived = {}
    for i = 1, 4 do
      local r = table.pack(ps[i]:result(H.TIMEOUT))
      assert.equal(i, r[1])
      assert.is_number(r[2], tostring(r[3]))
      arrived[r[2]] = true
    end
    assert.same({ true, true, true, true }, arrived)
  end)

  it("joinall, wait any and as_completed accept processes mixed with tasks", function()
    H.run(function()
      local slow = process.start(function() strand.sleep(30) end)
      local fast = process.start(function() return 1 end)
      local t = strand.spawn(function() strand.sleep(0.01); return 2 end)
      local done, pending = strand.wait({ slow, fast, t }, { mode = "any", timeout = H.TIMEOUT })
      assert.is_true(#done >= 1 and #pending >= 1)
      local seen = {}
      for x in strand.as_completed({ fast, t }, H.TIMEOUT) do seen[#seen + 1] = x end
      assert.equal(2, #seen)
      local d2, p2 = strand.joinall({ fast, t, slow }, 0.05)
      assert.equal(2, #d2); assert.equal(1, #p2); assert.equal(slow, p2[1])
      slow:kill()
      assert.is_false((slow:join(H.TIMEOUT)))
    end)
  end)

  it("a lock, an event and a queue made before start work across processes", function()
    local lock, ev, q = sync.lock(), sync.event(), queue.new(4)
    local ps = {}
    for i = 1, 3 do
      ps[i] = process.start(function()
        ev:wait(H.TIMEOUT)
        for j = 1, 20 do
          local held <close> = lock:acquire()
          q:put(i * 100 + j)
        end
        return true
      end)
    end
    ev:set()
    local got = {}
    for _ = 1, 60 do got[#got + 1] = q:get(H.TIMEOUT) end
    for i = 1, 3 do assert.is_true(ps[i]:result(H.TIMEOUT)) end
    table.sort(got)
    assert.equal(60, #got)
    assert.equal(101, got[1]); assert.equal(320, got[60])
  end)

  it("a child SIGKILLed while holding a lock: the others' bounded acquires return, never hang", function()
    local lock, ready = sync.lock(), sync.event()
    local p = process.start(function()
      lock:acquire()
      ready:set()
      strand.sleep(30)
    end)
    assert.is_true(ready:wait(H.TIMEOUT))
    assert.same({ nil, "timeout" }, { lock:acquire(0.01) })
    p:kill()
    p:join(H.TIMEOUT)
    assert.same({ lock, "owner died" }, { lock:acquire(0.05) })   -- taken over (below)
    lock:release()
  end)

  it("a lock held by a SIGKILLed child is taken over by a waiter, which is told", function()
    local lock, ready = sync.lock(), sync.event()
    local p = process.start(function()
      lock:acquire()
      ready:set()
      strand.sleep(30)
    end)
    assert.is_true(ready:wait(H.TIMEOUT))
    local waiter = strand.spawn(function() return { lock:acquire(H.TIMEOUT) } end)
    strand.sleep(0.01)
    p:kill()
    local got = waiter:result(H.TIMEOUT)
    assert.equal(lock, got[1])
    assert.equal("owner died", got[2])
    assert.is_true(lock:locked())
    lock:release()
    assert.same({ lock }, { lock:acquire(0) })           -- an ordinary lock again
    lock:release()
    p:join(H.TIMEOUT)
  end)

  it("a lock held by a dead child that nobody waited on: a later acquire(0) takes it over", function()
    local lock = sync.lock()
    local p = process.start(function() lock:acquire(); os.exit(0, false) end)
    assert.is_true(p:join(H.TIMEOUT))
    assert.equal(0, p.exitcode)
    assert.same({ lock, "owner died" }, { lock:acquire(0) })
    lock:release()
  end)

  it("an rlock held (twice) by a SIGKILLed child is taken over at depth one", function()
    local rl, ready = sync.rlock(), sync.event()
    local p = process.start(function()
      rl:acquire(); rl:acquire()
      ready:set()
      strand.sleep(30)
    end)
    assert.is_true(ready:wait(H.TIMEOUT))
    assert.same({ nil, "timeout" }, { rl:acquire(0.01) })
    p:kill()
    assert.same({ rl, "owner died" }, { rl:acquire(H.TIMEOUT) })
    rl:release()
    assert.is_false(rl:locked())
    p:join(H.TIMEOUT)
  end)

  it("a condition whose lock's holder was SIGKILLed: the waiter for the lock gets it", function()
    local cond, ready = sync.condition(sync.lock()), sync.event()
    local p = process.start(function()
      cond:acquire()
      ready:set()
      strand.sleep(30)
    end)
    assert.is_true(ready:wait(H.TIMEOUT))
    p:kill()
    p:join(H.TIMEOUT)
    assert.same({ cond, "owner died" }, { cond:acquire(H.TIMEOUT) })
    assert.is_false(cond:wait(0.01))                      -- usable: waits, times out, has it back
    cond:release()
  end)

  it("a semaphore has no owner: a unit a SIGKILLed child held stays taken", function()
    local sem, ready = sync.semaphore(1), sync.event()
    local p = process.start(function()
      sem:acquire()
      ready:set()
      strand.sleep(30)
    end)
    assert.is_true(ready:wait(H.TIMEOUT))
    p:kill()
    p:join(H.TIMEOUT)
    assert.same({ nil, "timeout" }, { sem:acquire(0.1) })
    sem:release()
    assert.same({ sem }, { sem:acquire(0) })
  end)

  it("a child SIGKILLed inside shared-dict updates leaves the dict usable", function()
    local d = shared.dict()
    d.n = 0
    local p = process.start(function()
      while true do d:incr("n") end
    end)
    assert.is_true(H.wait_until(function() return (d.n or 0) > 100 end))
    p:kill()
    p:join(H.TIMEOUT)
    local before = d.n
    d:incr("n")
    assert.equal(before + 1, d.n)
    d:update("n", function(v) return v + 10 end)
    assert.equal(before + 11, d.n)
  end)

  -- shared._test_die(n): the child _exits at the n-th crash point it reaches holding the dict's
  -- or list's mutex; the next locker sees EOWNERDEAD and finishes the journaled change
  local function dies_at(n, fn)
    local p = process.start(function() shared._test_die(n); fn(); error("no crash point reached") end)
    assert.is_true(p:join(H.TIMEOUT))
    assert.equal(0, p.exitcode)
  end

  local function check_dict(d, n)
    assert.equal(n, #d)
    for i = 1, n do assert.equal(i, d["k" .. i]) end
    local keys = d:keys()
    assert.equal(n, #keys)
  end

  it("a dict whose writer died in the middle of a rehash (any step) is whole", function()
    -- 12 entries in 16 buckets: the 13th rehashes (12 moves = crash points 1..12, installing
    -- the new array = 13), then links the entry (14: before it is counted)
    for _, at in ipairs({ 1, 2, 7, 12, 13, 14 }) do
      local d = shared.dict()
      for i = 1, 12 do d["k" .. i] = i end
      dies_at(at, function() d.k13 = 13 end)
      local n = at == 14 and 13 or 12
      check_dict(d, n)
      for i = n + 1, 40 do d["k" .. i] = i end         -- grows again, twice
      check_dict(d, 40)
      d.k1 = nil
      assert.equal(39, #d)
    end
  end)

  it("an incr that died between an entry's type and its value is finished", function()
    local d = shared.dict()
    d.x = 1
    dies_at(1, function() d:incr("x", 0.5) end)
    assert.equal(1.5, d.x)
    assert.equal(2.5, d:incr("x"))
  end)

  it("a list whose writer died between a slot and its length or its old entry stays valid", function()
    local l = shared.list({ "a", "b", "c" })
    dies_at(1, function() l:append("d") end)
    assert.equal(3, #l)                                 -- not counted yet: as if never appended
    assert.equal(4, l:append("e"))
    assert.same({ "a", "b", "c", "e" }, l:items())
    dies_at(1, function() l[2] = "B" end)
    assert.same({ "a", "B", "c", "e" }, l:items())
  end)

  it("a child SIGKILLed while putting into a queue leaves it usable by the others", function()
    local q = queue.new(8)
    local p = process.start(function()
      local i = 0
      while true do i = i + 1; q:put(i) end
    end)
    assert.is_true(H.wait_until(function() return q:qsize() >= 8 end))
    p:kill()
    p:join(H.TIMEOUT)
    local n = 0
    while q:get_nowait() do n = n + 1 end
    assert.is_true(n >= 1)
    assert.is_true(q:put(1, H.TIMEOUT))
    assert.equal(1, q:get(H.TIMEOUT))
  end)

  it("a ring slot claimed by a producer SIGKILLed before publishing: getters skip it, FIFO kept", function()
    local q, ready = queue.new(4), sync.event()
    assert.is_true(q:put("a"))
    local p = process.start(function()
      assert(queue._test_claim(q))        -- claims position 1, never publishes it
      ready:set()
      strand.sleep(30)
    end)
    assert.is_true(ready:wait(H.TIMEOUT))
    assert.is_true(q:put("b")); assert.is_true(q:put("c"))
    assert.equal("a", q:get(H.TIMEOUT))
    assert.same({ nil, "timeout" }, { q:get(0.12) })    -- its producer is alive: it may publish
    p:kill()
    p:join(H.TIMEOUT)
    assert.equal("b", q:get(H.TIMEOUT))                 -- the dead claim is skipped
    assert.equal("c", q:get(H.TIMEOUT))
    for _ = 1, 3 do q:task_done() end
    assert.is_true(q:join(H.TIMEOUT))                   -- the dead put counts as done
    for i = 1, 4 do assert.is_true(q:put(i, H.TIMEOUT)) end   -- the slot is free again
    for i = 1, 4 do assert.equal(i, q:get(H.TIMEOUT)) end
  end)

  it("a dead producer's claim in an unbounded queue: get_nowait skips it, close drains", function()
    local q = queue.new()
    local p = process.start(function()
      assert(queue._test_claim(q))
      os.exit(0, false)
    end)
    assert.is_true(p:join(H.TIMEOUT))
    assert.equal(0, p.exitcode)
    assert.is_true(q:put(1)); assert.is_true(q:put(2))
    assert.equal(1, q:get_nowait())
    assert.equal(2, q:get_nowait())
    assert.same({ nil, "empty" }, { q:get_nowait() })
    local p2 = process.start(function() assert(queue._test_claim(q)); os.exit(0, false) end)
    assert.is_true(p2:join(H.TIMEOUT))
    q:close()
    assert.same({ nil, "closed" }, { q:get(H.TIMEOUT) })   -- never a hang after close
  end)

  it("a getter asleep behind a dead producer's claim is woken by the items behind it", function()
    local q, ready = queue.new(8), sync.event()
    local p = process.start(function()
      assert(queue._test_claim(q))
      ready:set()
      strand.sleep(30)
    end)
    assert.is_true(ready:wait(H.TIMEOUT))
    local getter = strand.spawn(function() return q:get(H.TIMEOUT) end)
    assert.is_true(q:put("x"))
    strand.sleep(0.01)
    p:kill()
    assert.equal("x", getter:result(H.TIMEOUT))
    p:join(H.TIMEOUT)
  end)

  it("forking while other threads run raises unless allow_threads is given", function()
    local thread = require "strand.thread"
    local ev = sync.event()
    local t = thread.start(function() ev:wait(10) end)
    local ok, err = pcall(process.start, function() end)
    assert.is_false(ok)
    assert.matches("1 strand thread%(s%) run in this process", err)
    local p = process.new{ fn = function() return "forked" end, allow_threads = true }
    p:start()
    assert.equal("forked", p:result(H.TIMEOUT))
    ev:set()
    t:join(H.TIMEOUT)
  end)

  it("an unjoined child is reaped by the next start and by active_children", function()
    local p = process.start(function() end)
    local pid = p.pid
    assert.is_true(H.wait_until(function() return not alive(pid) end))
    assert.equal(0, process.active_children())
    assert.equal(0, p.exitcode)
  end)

  it("daemon children are killed when the parent is SIGKILLed; others at exit are waited for", function()
    local f = os.tmpname()
    local out = H.lua(([[
      package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
      package.cpath = "%s/?.so;" .. package.cpath
      local process = require "strand.process"
      local strand = require "strand"
      local d = process.new{ fn = function() strand.sleep(60) end, daemon = true }
      d:start()
      local h = io.open(%q, "w"); h:write(d.pid); h:close()
      os.execute("kill -9 " .. process.pid())
    ]]):format(os.getenv("STRAND_TEST_BUILD") or "build", f))
    local h = io.open(f); local pid = tonumber(h:read("a")); h:close()
    os.remove(f)
    assert.is_number(pid, out)
    assert.is_true(H.wait_until(function() return not alive(pid) end), "daemon " .. pid .. " survived")

    local out2 = H.lua(([[
      package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
      package.cpath = "%s/?.so;" .. package.cpath
      local process = require "strand.process"
      local strand = require "strand"
      process.start(function() strand.sleep(0.2); io.write("child finished\n") end)
      local d = process.new{ fn = function() strand.sleep(60) end, daemon = true }
      d:start()
      io.write("parent done\n"); io.stdout:flush()
    ]]):format(os.getenv("STRAND_TEST_BUILD") or "build"))
    assert.matches("parent done\n.*child finished\n", out2)
  end)

  -- what a start costs less since session 7 (csrc/process.c): result files reused, a child that
  -- returns nothing writes none, a child's first Lua blocks carved from a static area

  it("a child that returns nothing: join gives exactly true (one value), exitcode 0", function()
    local p = process.start(function() end)
    local r = table.pack(p:join(H.TIMEOUT))
    assert.equal(1, r.n)
    assert.is_true(r[1])
    assert.equal(0, p.exitcode)
    -- nil is a value: it comes back as one
    local q = process.start(function() return nil end)
    local r2 = table.pack(q:join(H.TIMEOUT))
    assert.equal(2, r2.n)
    assert.is_true(r2[1])
    assert.is_nil(r2[2])
  end)

  it("result files are reused: a big result, then none, then a small one come back exact", function()
    local big = string.rep("0123456789abcdef", 16384)          -- 256 KiB
    for _ = 1, 3 do
      local a = process.start(function() return big end)
      local ok, v = a:join(H.TIMEOUT)
      assert.is_true(ok)
      assert.equal(#big, #v)
      assert.equal(big, v)
      local b = process.start(function() end)
      local r = table.pack(b:join(H.TIMEOUT))
      assert.equal(1, r.n)                                      -- nothing left of the big one
      assert.is_true(r[1])
      local c = process.start(function() return "x", 2 end)
      assert.same({ true, "x", 2, n = 3 }, table.pack(c:join(H.TIMEOUT)))
      local e = process.start(function() error("boom") end)
      local ok2, err = e:join(H.TIMEOUT)
      assert.is_false(ok2)
      assert.matches("boom", err)
    end
  end)

  it("at most one spare result file stays open, and no child keeps the parent's", function()
    local core = require "strand.core"
    local function result_files()
      local n = 0
      for _, target in pairs(assert(core._proc.fds())) do
        if target:find("strand-result", 1, true) then n = n + 1 end
      end
      return n
    end
    for _ = 1, 5 do process.start(function() end):join(H.TIMEOUT) end
    local ps = {}
    for i = 1, 4 do ps[i] = process.start(function(x) return x end, i) end   -- four at once
    for i = 1, 4 do assert.same({ true, i }, { ps[i]:join(H.TIMEOUT) }) end
    assert.equal(1, result_files())
    local spare = core.process._spare_fd()
    assert.is_number(spare)
    assert.matches("strand%-result", assert(core._proc.fds())[spare])
    -- a child sees its own result file only: the spare it inherited (the parent's, which the
    -- parent hands to its next child) is closed in it
    local p = process.start(function()
      local n = 0
      for _, target in pairs(assert(require("strand.core")._proc.fds())) do
        if target:find("strand-result", 1, true) then n = n + 1 end
      end
      return n, require("strand.core").process._spare_fd()
    end)
    local ok, n, child_spare = p:join(H.TIMEOUT)
    assert.is_true(ok)
    assert.equal(1, n)                  -- its own result file, taken from the spare
    assert.is_nil(child_spare)
    -- a fork without a result file while a spare is there (a pool worker): the worker drops it
    local pool = require "strand.pool"
    local w <close> = pool.new{ size = 1 }
    assert.is_number(core.process._spare_fd())
    local wn, wspare = w:apply(function()
      local c = 0
      for _, target in pairs(assert(require("strand.core")._proc.fds())) do
        if target:find("strand-result", 1, true) then c = c + 1 end
      end
      return c, require("strand.core").process._spare_fd()
    end)
    assert.equal(0, wn)
    assert.is_nil(wspare)
  end)

  it("a child that allocates far past its carved area, frees, collects and forks works", function()
    local p = process.start(function(n)
      local t = {}
      for i = 1, n do t[i] = ("item %d"):format(i) end          -- blocks of every size, regrown
      local s = table.concat(t, ",")
      t = nil
      collectgarbage("collect")                                   -- frees carved blocks too
      local u = {}
      for i = 1, n do u[#u + 1] = { i, tostring(i) } end
      local g = process.start(function(m) local x = {} for i = 1, m do x[i] = i * i end return #x, x[m] end, n)
      local ok, cnt, last = g:join(30)
      return #s, #u, u[n][2], ok, cnt, last
    end, 20000)
    local ok, slen, ulen, lastname, gok, cnt, last = p:join(H.TIMEOUT)
    assert.is_true(ok, slen)
    local want = 0
    for i = 1, 20000 do want = want + #("item " .. i) + 1 end
    assert.equal(want - 1, slen)
    assert.equal(20000, ulen)
    assert.equal("20000", lastname)
    assert.is_true(gok)
    assert.equal(20000, cnt)
    assert.equal(20000 * 20000, last)
  end)

  it("a child's <close> variables close when fn returns; os.exit(n, true) closes its state", function()
    local f = os.tmpname()
    local p = process.start(function(path)
      local mark <close> = setmetatable({}, { __close = function()
        local h = io.open(path, "w"); h:write("closed"); h:close()
      end })
      return "done"
    end, f)
    assert.same({ true, "done" }, { p:join(H.TIMEOUT) })
    local h = io.open(f); local s = h:read("a"); h:close()
    os.remove(f)
    assert.equal("closed", s)
    -- closing the child's state frees what it carved and what it inherited: no crash, its code
    local q = process.start(function()
      local t = {}
      for i = 1, 5000 do t[i] = { i } end
      setmetatable(t, { __gc = function() io.stdout:flush() end })
      os.exit(5, true)
    end)
    local ok, err = q:join(H.TIMEOUT)
    assert.is_false(ok)
    assert.equal("process exited with code 5", err)
    assert.equal(5, q.exitcode)
  end)

  -- stdio is flushed around a fork only when a stream has output waiting (csrc/process.c
  -- flush_stdio): stdout is a pipe here, fully buffered
  it("stdio around a start: the parent's buffered output once, the child's stdout and a file it left open flushed at its exit", function()
    local out = H.lua(([[
      package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
      package.cpath = "%s/?.so;" .. package.cpath
      local process = require "strand.process"
      io.write("parent-before;")
      local f = os.tmpname()
      local p = process.start(function(path)
        io.write("child-out;")
        local h = io.open(path, "w")
        h:write("child-file")                  -- never closed: only the flush at _exit writes it
        return 7
      end, f)
      local ok, v = p:join(30)
      io.write(tostring(ok), ",", tostring(v), ";")
      local q = process.start(function() end)  -- prints nothing
      io.write(tostring(q:join(30)), ";")
      local h = io.open(f); io.write(h:read("a")); h:close(); os.remove(f)
      io.write("\n")
    ]]):format(os.getenv("STRAND_TEST_BUILD") or "build"))
    assert.equal("parent-before;child-out;true,7;true;child-file\n", out)
  end)
end)
