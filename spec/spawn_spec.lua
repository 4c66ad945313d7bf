-- process.spawn / process.run: external programs with strand streams, env, cwd, waits, kills,
-- no descriptor leaking into them, no deadlock on big outputs.
local strand = require "strand"
local process = require "strand.process"
local H = require "support.helper"

-- Under valgrind posix_spawn cannot report a failed exec: glibc's child writes the errno into the
-- parent's memory (clone with CLONE_VM|CLONE_VFORK), and valgrind runs that clone as a plain
-- fork, so the parent sees a started program that exits 127 (the shell's "cannot execute").
-- Where valgrind runs us, that exact result is what is asserted instead.
local VALGRIND = os.getenv("STRAND_VALGRIND") ~= nil
local function exec_failed(r, err, code, message, CODE)
  if VALGRIND then
    assert.same({ code = 127, stdout = "", stderr = "" }, r)
  else
    assert.is_nil(r)
    if message then assert.matches(message, err) end
    if CODE then assert.equal(CODE, code) end
  end
end

describe("external programs", function()
  H.guard()

  it("run: stdout, stderr and the exit code", function()
    local r = process.run({ "sh", "-c", "echo out; echo err >&2; exit 3" })
    assert.equal("out\n", r.stdout)
    assert.equal("err\n", r.stderr)
    assert.equal(3, r.code)
    assert.is_nil(r.signal)
  end)

  it("run: a program killed by a signal reports it", function()
    local r = process.run({ "sh", "-c", "kill -9 $$" })
    assert.equal(-9, r.code)
    assert.equal(9, r.signal)
  end)

  it("run reads both pipes at once: 10 MB on each does not deadlock; input is written meanwhile", function()
    local r = process.run({ "sh", "-c", "head -c 10485760 /dev/zero; head -c 10485760 /dev/zero >&2" })
    assert.equal(10485760, #r.stdout)
    assert.equal(10485760, #r.stderr)
    local input = string.rep("abc\n", 1000000)
    local r2 = process.run({ "sh", "-c", "wc -c; head -c 3000000 /dev/zero >&2" }, { input = input })
    assert.equal(tostring(#input), r2.stdout:match("%d+"))
    assert.equal(3000000, #r2.stderr)
  end)

  it("a missing program is nil, message", function()
    local r, err, code = process.run({ "/nonexistent/prog" })
    exec_failed(r, err, code, "^cannot run /nonexistent/prog: no such file or directory$", "ENOENT")
    local c, err2 = process.spawn({ "strand-no-such-program-xyz" }, { stdout = "pipe" })
    if VALGRIND then
      assert.same({ 127 }, { c:wait(H.TIMEOUT) }); c:close()
    else
      assert.is_nil(c)
      assert.matches("cannot run strand%-no%-such%-program%-xyz", err2)
    end
  end)

  it("env and cwd", function()
    local r = process.run({ "sh", "-c", "echo $FOO; pwd" }, { env = { FOO = "bar", PATH = os.getenv("PATH") }, cwd = "/tmp" })
    assert.equal("bar\n/tmp\n", r.stdout)
    local r2 = process.run({ "sh", "-c", "echo ${HOME:-none}" }, { env = { PATH = os.getenv("PATH") } })
    assert.equal("none\n", r2.stdout)
    local r3, err, code = process.run({ "pwd" }, { cwd = "/nonexistent-dir" })
    exec_failed(r3, err, code, "no such file")
  end)

  it("spawn: stdin/stdout as strand streams (write, lines, close), wait", function()
    local c <close> = process.spawn({ "cat" }, { stdin = "pipe", stdout = "pipe" })
    assert.is_number(c.pid)
    c.stdin:write("one\ntwo\n")
    c.stdin:close()
    local got = {}
    for line in c.stdout:lines() do got[#got + 1] = line end
    assert.same({ "one", "two" }, got)
    assert.same({ 0 }, { c:wait(H.TIMEOUT) })
  end)

  it("spawn inside tasks: several programs at once while other tasks run", function()
    H.run(function()
      local ts = {}
      for i = 1, 4 do
        ts[i] = strand.spawn(function()
          local r = process.run({ "sh", "-c", "sleep 0.2; echo " .. i })
          return tonumber(r.stdout)
        end)
      end
      local t0 = strand.now()
      for i = 1, 4 do assert.equal(i, ts[i]:result()) end
      assert.is_true(strand.now() - t0 < 3)
    end)
  end)

  it("wait with a timeout, kill, and the signal back", function()
    local c = process.spawn({ "sleep", "30" })
    local v, err = c:wait(0.05)
    assert.is_nil(v); assert.equal("timeout", err)
    assert.is_true(c:kill())
    assert.same({ -9, 9 }, { c:wait(H.TIMEOUT) })
    assert.is_true(c:kill())           -- already reaped: nothing to do
    local c2 = process.spawn({ "sleep", "30" })
    c2:kill(15)
    assert.same({ -15, 15 }, { c2:wait(H.TIMEOUT) })
  end)

  it("run with a timeout kills the program", function()
    local r, err = process.run({ "sleep", "30" }, { timeout = 0.1 })
    assert.is_nil(r); assert.equal("timeout", err)
  end)

  it("stdin null; no descriptor of ours leaks into the child", function()
    local r = process.run({ "sh", "-c", "echo hidden; cat" }, { stdin = "null" })
    assert.equal("hidden\n", r.stdout)
    -- strand descriptors open meanwhile (a pipe, a queue, sockets): none may reach the child
    local a, b = process.pipe()
    local q = require("strand.queue").new()
    local c = process.spawn({ "sleep", "30" }, { stdout = "pipe", stderr = "null", stdin = "pipe" })
    assert.is_true(H.wait_until(function()
      local h = io.open("/proc/" .. c.pid .. "/comm"); local comm = h and h:read("l"); if h then h:close() end
      return comm == "sleep"
    end))
    local p = io.popen("ls /proc/" .. c.pid .. "/fd")
    local fds = {}
    for line in p:lines() do fds[#fds + 1] = tonumber(line) end
    p:close()
    c:kill(); c:wait(H.TIMEOUT); c:close()
    a:close(); b:close(); q = nil
    for _, fd in ipairs(fds) do
      if fd > 2 then
        -- only what the test runner itself left inheritable may be there, never a strand fd
        local h = io.open("/proc/self/fdinfo/" .. fd)
        local info = h and h:read("a") or ""
        if h then h:close() end
        local flags = tonumber(info:match("flags:%s*(%d+)") or "0", 8)
        assert.is_true(flags & tonumber("2000000", 8) == 0, "fd " .. fd .. " leaked into the child")
      end
    end
    assert.is_true(#fds >= 3)
  end)

  it("the child does not inherit SIGPIPE ignored: writing to a closed pipe kills it", function()
    local c = process.spawn({ "sh", "-c", "sleep 0.1; exec yes" }, { stdout = "pipe" })
    c.stdout:close()
    assert.same({ -13, 13 }, { c:wait(H.TIMEOUT) })
  end)

  it("misuse raises", function()
    assert.has_error(function() process.run("ls") end, "bad argument #1 to 'run' (table expected, got string)")
    assert.has_error(function() process.spawn({}) end, "bad argument #1 to 'spawn' (argv is empty)")
    assert.has_error(function() process.spawn({ "ls", 3 }) end, "bad argument #1 to 'spawn' (argv[2] must be a string)")
    assert.has_error(function() process.spawn({ "ls" }, { stdout = "file" }) end,
      'bad argument #2 to \'spawn\' (stdout must be "pipe", "inherit" or "null")')
    assert.has_error(function() process.run({ "ls" }, { input = 5 }) end,
      "bad argument #2 to 'run' (input must be a string)")
  end)
end)
