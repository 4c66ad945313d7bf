-- spec/taskmem_spec.lua — what a task keeps (strand_task is 80 bytes: no argument or result
-- counts, one field for "waits on an fd, in a queue or among joiners", a bare heap node for its
-- deadline, its joiners a ring): every argument reaches the body, every result reaches join,
-- waits move between fds, queues, joins and timers, and the bytes per task.
local H = require "support.helper"
local strand = require "strand"
local sync = require "strand.sync"
local net = require "support.net"

local function pack(...) return { n = select("#", ...), ... } end

local function same_packed(a, b)
  assert.equal(a.n, b.n)
  for i = 1, a.n do assert.equal(a[i], b[i]) end
end

describe("what a task keeps", function()
  H.guard()

  it("every argument reaches the body and every result reaches join and result", function()
    H.run(function()
      local cases = {
        pack(),
        pack(nil),
        pack(1),
        pack(nil, 2, nil),
        pack(1, nil, 3, nil, nil),
      }
      local many = { n = 200 }
      for i = 1, 200 do many[i] = (i % 3 ~= 0) and i or nil end
      cases[#cases + 1] = many
      for _, args in ipairs(cases) do
        local got
        -- the body blocks first: its results are counted after waits, not at its start
        local t = strand.spawn(function(...)
          got = pack(...)
          strand.sleep(0)
          return ...
        end, table.unpack(args, 1, args.n))
        local r = pack(t:join(H.TIMEOUT))
        assert.is_true(r[1])
        same_packed(args, got)
        same_packed(args, pack(table.unpack(r, 2, r.n)))
        same_packed(args, pack(t:result()))        -- again: the results stay
        -- a task that never blocks gives the same
        local t2 = strand.spawn(function(...) return ... end, table.unpack(args, 1, args.n))
        same_packed(args, pack(t2:result(H.TIMEOUT)))
      end
    end)
  end)

  it("exactly two results, the first a light userdata or a string, are results, not a failure", function()
    H.run(function()
      local t = strand.spawn(function() return "x", "y" end)
      assert.same({ true, "x", "y" }, { t:join(H.TIMEOUT) })
      assert.equal("done", t:status())
      local t2 = strand.spawn(function() strand.sleep(0); return nil, "err" end)
      assert.same({ true, nil, "err" }, { t2:join(H.TIMEOUT) })
      assert.equal("done", t2:status())
    end)
  end)

  it("a task cancelled before it ever ran keeps only its cancellation", function()
    H.run(function()
      local ran = false
      local t = strand.spawn(function(...) ran = true; return ... end, 1, 2, 3)
      assert.is_true(t:cancel("early"))
      local ok, err = t:join(H.TIMEOUT)
      assert.is_false(ok)
      assert.is_true(strand.is_cancelled(err))
      assert.equal("early", err.reason)
      assert.equal("cancelled", t:status())
      assert.has_error(function() t:result() end, "cancelled")
      strand.sleep(0)
      assert.is_false(ran)
    end)
  end)

  it("one task's waits move between a queue with a deadline, an fd, an event and a timer", function()
    H.run(function()
      local a, b = net.tcp_pair()
      local ev = sync.event()
      local steps = {}
      local sleeper = strand.spawn(strand.sleep, 3600)
      local t = strand.spawn(function()
        -- in sleeper's joiners, then out by the deadline
        local ok, err = sleeper:join(0.01)
        steps[#steps + 1] = tostring(ok) .. " " .. tostring(err)
        -- on a socket's fd, woken by data
        steps[#steps + 1] = a:read("l")
        -- in an event's queue
        assert.is_true(ev:wait(H.TIMEOUT))
        steps[#steps + 1] = "event"
        -- a timer alone
        strand.sleep(0.001)
        -- on the fd again, woken by the close
        local d, e = a:read("l")
        steps[#steps + 1] = tostring(d) .. " " .. tostring(e)
        return #steps
      end)
      assert.is_true(H.wait_until(function() return #steps >= 1 end))
      assert.equal("nil timeout", steps[1])
      assert.equal("waiting", t:status())
      b:sendall("line\n")
      assert.is_true(H.wait_until(function() return #steps >= 2 end))
      assert.equal("line", steps[2])
      ev:set()
      assert.is_true(H.wait_until(function() return #steps >= 3 end))
      b:close()
      assert.equal(4, t:result(H.TIMEOUT))
      assert.equal("nil closed", steps[4])
      sleeper:cancel()
      a:close()
    end)
  end)

  it("joiners leave the queue from its head, middle and tail; the rest are woken in order", function()
    H.run(function()
      local target = strand.spawn(strand.sleep, 3600)
      local order, joiners = {}, {}
      for i = 1, 5 do
        joiners[i] = strand.spawn(function()
          local ok = target:join(H.TIMEOUT)
          order[#order + 1] = i
          return ok
        end)
      end
      strand.sleep(0)                       -- all five wait in target's joiners
      for _, i in ipairs { 1, 3, 5 } do assert.is_true(joiners[i]:cancel()) end
      strand.sleep(0)
      target:cancel()
      assert.is_false(joiners[2]:result(H.TIMEOUT))
      assert.is_false(joiners[4]:result(H.TIMEOUT))
      assert.same({ 2, 4 }, order)
      for _, i in ipairs { 1, 3, 5 } do assert.equal("cancelled", joiners[i]:status()) end
    end)
  end)

  it("task deadlines and strand.timeout's timers share the heap and fire in deadline order", function()
    H.run(function()
      local order, ts = {}, {}
      for i, d in ipairs { 0.04, 0.01, 0.05, 0.02, 0.03, 0.06 } do
        if i % 2 == 0 then     -- a cancel-after timer (a strand_timer) around a long sleep
          ts[i] = strand.spawn(function()
            local r, err = strand.timeout(d, strand.sleep, 3600)
            order[#order + 1] = d
            return r, err
          end)
        else                   -- a task's own deadline (a bare heap node)
          ts[i] = strand.spawn(function() strand.sleep(d); order[#order + 1] = d end)
        end
      end
      for i, t in ipairs(ts) do
        local ok, r, err = t:join(H.TIMEOUT)
        assert.is_true(ok)
        if i % 2 == 0 then assert.is_nil(r); assert.equal("timeout", err) end
      end
      assert.same({ 0.01, 0.02, 0.03, 0.04, 0.05, 0.06 }, order)
    end)
  end)

  it("the main program and tasks join one task; joins that time out leave its ring", function()
    -- the main program's join drives the loop (the loop's pseudo-task among the joiners)
    local target = strand.spawn(strand.sleep, 3600)
    local early = strand.spawn(function() return target:join(0.01) end)
    local late = strand.spawn(function() return target:join(H.TIMEOUT) end)
    local r, err = target:join(0.05)
    assert.is_nil(r); assert.equal("timeout", err)
    assert.same({ true, nil, "timeout" }, { early:join(H.TIMEOUT) })
    assert.equal("waiting", late:status())
    local again = strand.spawn(function() return target:join(H.TIMEOUT) end)
    strand.sleep(0)
    assert.is_true(target:cancel())
    local ok, e = late:result(H.TIMEOUT)
    assert.is_false(ok); assert.is_true(strand.is_cancelled(e))
    local ok2, e2 = again:result(H.TIMEOUT)
    assert.is_false(ok2); assert.is_true(strand.is_cancelled(e2))
  end)

  it("the main program's join that ends in a deadlock leaves the ring; it can join again", function()
    -- a process of its own: nothing else in its loop (no timer, no fd) to keep it from
    -- seeing the deadlock; bounded by `timeout`
    local out, ok = H.lua([[
      local strand = require "strand"
      local gate = require("strand.core").notifier()      -- a loop-local wait, no fd
      local target = strand.spawn(function() gate:wait() end)
      local j1 = strand.spawn(function() return target:join() end)
      local ok, err = pcall(target.join, target)          -- main after j1 in target's joiners
      assert(not ok and tostring(err):find("deadlock"), tostring(err))
      local j2 = strand.spawn(function() return target:join() end)
      strand.spawn(function() gate:notify() end)
      local r = table.pack(target:join(10))               -- main in the ring again
      assert(r.n == 1 and r[1] == true, "main: " .. tostring(r[1]) .. " " .. tostring(r[2]))
      assert(select("#", j1:join(10)) == 2 and j1:result() == true, "j1")
      assert(select("#", j2:join(10)) == 2 and j2:result() == true, "j2")
      print("joined")
    ]], "timeout -k 5 60")
    assert.truthy(ok, out)
    assert.matches("^joined", out)
  end)

  it("a task waiting in strand.sleep costs at most 1,216 bytes of Lua heap", function()
    -- its coroutine (lua_State 208 B, the 45-slot stack 720 B, two call frames 128 B), the task
    -- userdata (80 B + Lua's 56-byte header with one user value) and its anchor slot (16 B and
    -- the array's slack): 1,208 B here; 1,240 B when strand_task was 112 bytes, 1,224 at 96
    local N = 4000
    local per
    H.run(function()
      collectgarbage(); collectgarbage()
      local h0 = collectgarbage("count")
      local ts = {}
      for i = 1, N do ts[i] = false end
      collectgarbage(); collectgarbage()
      h0 = collectgarbage("count")
      for i = 1, N do ts[i] = strand.spawn(strand.sleep, 3600) end
      strand.sleep(0)                      -- each runs to its wait
      collectgarbage(); collectgarbage()
      per = (collectgarbage("count") - h0) * 1024 / N
      for i = 1, N do ts[i]:cancel() end
      strand.sleep(0)
    end)
    assert.is_true(per > 1000 and per <= 1216, ("%.1f bytes per sleeping task"):format(per))
  end)
end)
