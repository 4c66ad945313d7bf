-- examples/thread_examples_spec.lua — runs the thread scenarios (T1, T2, T7) as separate
-- programs with a time bound and checks what they printed.
local H = require "support.helper"
local function run(script, args) return H.example(script, args) end

describe("thread examples", function()
  it("T1: threads with arguments; 10 sleepers overlap", function()
    local out = run("t1_threads.lua", "0.3")
    assert.matches("exit:0\n$", out)
    assert.matches("hello lua, you are thread Thread%-%d+ %(#1%)", out)
    local took = tonumber(out:match("in ([%d.]+) s total %(sum of ids 55%)"))
    assert.is_not_nil(took, out)
    assert.is_true(took < 2.5, "10 threads of 0.3 s took " .. took .. " s")
    assert.matches("t1: done", out)
  end)

  it("T2: the non-daemon thread is waited for, the daemon abandoned", function()
    local out = run("t2_daemon.lua")
    assert.matches("exit:0\n$", out)
    assert.matches("main thread: id 1, name MainThread", out)
    assert.matches("active threads:%s+3", out)
    assert.matches("worker %(id %d+%) finished its work", out)
    assert.not_matches("daemon should never", out)
  end)

  it("T7: two CPU-bound threads compute the same as one thread twice", function()
    local out = run("t7_cpu.lua", "2000000")
    assert.matches("exit:0\n$", out)
    assert.matches("speed%-up [%d.]+x", out)
    assert.matches("t7: done", out)
  end)
end)
