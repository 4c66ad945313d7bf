-- spec/tfix9_spec.lua — out of descriptors or processes, every constructor returns nil, message
-- [, CODE] (API.md, issue 11: never a raise) and gives back all it took: fds, threads, children.

-- Each case runs in its own lua5.4 child (the runner is never starved): under `ulimit -n 256`
-- it fills the descriptor table with /dev/null files, gives back k of them (k = 0, 1, 2, ...:
-- every failure point of a constructor that needs several), calls the constructor, and checks
-- nil + message (+ code) or a working object, then the same fds and OS threads as before and no
-- zombie. It stops two steps after the first k that works.
local H = require "support.helper"

local CHILD = [==[
local strand = require "strand"
local core = require "strand.core"
local proc = core._proc
local thread, process, pool = require "strand.thread", require "strand.process", require "strand.pool"
local socket, selector, queue, sync = require "strand.socket", require "strand.selector", require "strand.queue", require "strand.sync"
core.backend(); local _ = core.sync
local shared = require "strand.shared"
local function nfds()                    -- (process.start's kept spare result file is not a leak)
  collectgarbage(); collectgarbage()
  local fds, n = proc.fds()
  local spare = core.process._spare_fd and core.process._spare_fd()
  if spare and fds[spare] then fds[spare] = nil; n = n - 1 end
  for fd in pairs(core.thread._spare_fds()) do        -- (nor are the thread's spare eventfds)
    if fds[fd] then n = n - 1 end
  end
  return n
end
local function nthreads()
  local n = 0
  for _, name in pairs(proc.threads()) do if not name:match("^strand%-idle") then n = n + 1 end end
  return n
end
local function fill(k)
  local hold = {}
  while true do local f = io.open("/dev/null") if not f then break end hold[#hold+1] = f end
  for _ = 1, k do table.remove(hold):close() end
  return hold
end
local function settle(pred) local t0 = strand.now() while not pred() and strand.now() - t0 < 5 do strand.sleep(0.01) end return pred() end
local function exhaust(name, make, finish, pattern, code)
  local base_fd, base_th = nfds(), nthreads()
  local fails, first_ok = 0, nil
  for k = 0, 24 do
    local hold = fill(k)
    local r = table.pack(pcall(make))
    for i = 1, #hold do hold[i]:close() end
    hold = nil
    assert(r[1], name .. " raised with " .. k .. " free: " .. tostring(r[2]))
    if r[2] == nil then
      assert(type(r[3]) == "string" and r[3]:match(pattern), name .. ": message " .. tostring(r[3]))
      assert(code == nil or r[4] == code, name .. ": code " .. tostring(r[4]))
      fails = fails + 1
    else
      finish(table.unpack(r, 2, r.n))
      first_ok = first_ok or k
    end
    r = nil
    assert(settle(function() return nfds() == base_fd end), ("%s with %d free: %d fds, had %d"):format(name, k, nfds(), base_fd))
    assert(settle(function() return nthreads() == base_th end), ("%s with %d free: %d threads, had %d"):format(name, k, nthreads(), base_th))
    local _, z = proc.children(); assert(z == 0, name .. ": zombie")
    if first_ok and k >= first_ok + 2 then break end
  end
  assert(fails > 0 and first_ok, name .. ": never failed / never worked")
  print(("%s: nil, message below %d free"):format(name, first_ok))
end
local EMFILE = "too many open files$"
local C = {}
C.thread_start = function() exhaust("thread.start", function() return thread.start(function(x) return x end, 1) end,
  function(t) assert(select(2, t:join(10)) == 1) end, "^cannot start thread: " .. EMFILE, "EMFILE") end
C.thread_new = function() exhaust("thread.new():start", function() return thread.new{fn = function(x) return x end, args = {2}}:start() end,
  function(t) assert(select(2, t:join(10)) == 2) end, "^cannot start thread: " .. EMFILE, "EMFILE") end
C.thread_retry = function()
  local t = thread.new{fn = function(x) return x end, args = {3}}
  local hold = fill(0)
  local ok, err, code = t:start()
  for i = 1, #hold do hold[i]:close() end
  assert(ok == nil and err == "cannot start thread: too many open files" and code == "EMFILE", tostring(err))
  assert(t:start() == t); assert(select(2, t:join(10)) == 3)
  print("thread: a failed start may be retried")
end
C.pool_thread = function() exhaust("pool.new thread", function() return pool.new{size = 2, kind = "thread"} end,
  function(p)   -- (a worker whose loop found no descriptor free ended: the job fails, no hang)
    local ok, v = pcall(p.apply, p, function() return 4 end)
    assert(ok and v == 4 or not ok and tostring(v):match("^worker exited: .*[Tt]oo many open files"), tostring(v))
    p:close(); p:join() end, "^pool%.new: cannot start thread: " .. EMFILE, "EMFILE") end
C.pool_process = function() exhaust("pool.new process", function() return pool.new{size = 2, kind = "process"} end,
  function(p) assert(p:apply(function() return 5 end) == 5); p:close(); p:join() end, "^pool%.new: .*" .. EMFILE) end
C.process_start = function() exhaust("process.start", function() return process.start(function() return 6 end) end,
  function(p) assert(p:result(10) == 6) end, "^cannot fork: " .. EMFILE, "EMFILE") end
C.process_new = function() exhaust("process.new():start", function() return process.new{fn = function() return 7 end}:start() end,
  function(p) assert(p:result(10) == 7) end, "^" .. EMFILE, "EMFILE") end
C.process_spawn = function() exhaust("process.spawn", function() return process.spawn({"cat"}, {stdin = "pipe", stdout = "pipe", stderr = "pipe"}) end,
  function(c) c.stdin:write("x"); c.stdin:close(); assert(c.stdout:read("a") == "x"); assert(c:wait(10) == 0)
    c.stdout:close(); c.stderr:close() end, EMFILE, "EMFILE") end
C.process_run = function() exhaust("process.run", function() return process.run({"echo", "hi"}) end,
  function(r) assert(r.code == 0 and r.stdout == "hi\n") end, EMFILE, "EMFILE") end
C.process_pipe = function() exhaust("process.pipe", function() return process.pipe() end,
  function(a, b) a:send({1}); assert(b:recv(5)[1] == 1); a:close(); b:close() end, EMFILE, "EMFILE") end
-- A thread whose loop cannot make its poller (made on first need: no descriptor free then) ends
-- with that error (join: false, message naming the poller, lowercase as every runtime message),
-- its fds and OS thread given back; the runner's own loop goes on. The same failure at an I/O
-- wait is raised in the waiting task, which may catch it: once descriptors are free, the same
-- loop makes its poller (still the one asked for) and goes on. (The poll poller needs no
-- descriptor: there the thread sleeps and its read times out.)
C.thread_loop = function()
  local base_fd, base_th = nfds(), nthreads()
  local poll = core.backend() == "poll"
  local expect = "strand: cannot create the " .. core.backend() .. " poller: too many open files"
  local t = assert(thread.start(function()
    local strand = require "strand"
    local hold = {}
    while true do local f = io.open("/dev/null") if not f then break end hold[#hold + 1] = f end
    local ok, err = pcall(strand.sleep, 0.001)
    for i = 1, #hold do hold[i]:close() end
    if not ok then error(err, 0) end
    return "slept"
  end))
  local ok, err = t:join(10)
  if poll then
    assert(ok == true and err == "slept", tostring(err))
    err = "(poll: slept)"
  else
    assert(ok == false and tostring(err):match("^[^\n]*") == expect, tostring(err))
  end
  assert(settle(function() return nfds() == base_fd and nthreads() == base_th end), "fds or threads left")
  t = assert(thread.start(function(want)
    local strand = require "strand"
    local a, b = require("strand.socket").pair()
    local hold = {}
    while true do local f = io.open("/dev/null") if not f then break end hold[#hold + 1] = f end
    b:settimeout(0.05)
    local ok1, r1, e1 = pcall(b.recv, b, 5)
    for i = 1, #hold do hold[i]:close() end
    if want then assert(ok1 == false and r1 == want, tostring(r1))
    else assert(ok1 and r1 == nil and e1 == "timeout", tostring(r1) .. " " .. tostring(e1)) end
    assert(a:send("hello") == 5)
    b:settimeout(10)
    assert(b:recv(5) == "hello")
    strand.sleep(0.001)
    a:close(); b:close()
    return require("strand.core").backend()
  end, not poll and expect or nil))
  local ok2, got = t:join(10)
  assert(ok2 == true and got == core.backend(), tostring(got))
  assert(settle(function() return nfds() == base_fd and nthreads() == base_th end), "fds or threads left")
  strand.sleep(0.001)
  print("a thread's loop without a poller: false, " .. tostring(err):match("^[^\n]*"))
end
local function closes(s, b) s:close(); if b then b:close() end end
C.socket_tcp = function() exhaust("socket.tcp", socket.tcp, closes, EMFILE, "EMFILE") end
C.socket_udp = function() exhaust("socket.udp", socket.udp, closes, EMFILE, "EMFILE") end
C.socket_unix = function() exhaust("socket.unix", socket.unix, closes, EMFILE, "EMFILE") end
C.socket_pair = function() exhaust("socket.pair", socket.pair, closes, EMFILE, "EMFILE") end
C.socket_listen = function() exhaust("socket.listen", function() return socket.listen("127.0.0.1", 0) end, closes, EMFILE, "EMFILE") end
C.socket_connect = function()
  local srv = assert(socket.listen("127.0.0.1", 0)); local _, port = srv:getsockname()
  exhaust("socket.connect", function() return socket.connect("127.0.0.1", port, {timeout = 5}) end,
    function(c) local a = assert(srv:accept()); a:close(); c:close() end, EMFILE, "EMFILE")
  srv:close()
end
C.socket_accept = function()
  local srv = assert(socket.listen("127.0.0.1", 0)); local _, port = srv:getsockname()
  local cs = {}
  for i = 1, 8 do cs[i] = assert(socket.connect("127.0.0.1", port)) end
  exhaust("accept", function() return srv:accept() end, function(s) s:close() end, EMFILE, "EMFILE")
  for _, c in ipairs(cs) do c:close() end
  srv:close()
end
C.socket_unix_listen = function()
  local path = os.tmpname(); os.remove(path)
  exhaust("socket.unix_listen", function() local s, e, c = socket.unix_listen(path); os.remove(path); return s, e, c end, closes, EMFILE, "EMFILE")
end
C.selector = function() exhaust("selector.new", function() return selector.new() end, function(s) s:close() end, EMFILE, "EMFILE") end
C.sync_objects = function()
  local hold = fill(0)
  local made = { queue.new(), queue.new(10), queue.lifo(), queue.priority(), sync.lock(), sync.rlock(), sync.event(),
    sync.semaphore(1), sync.condition(), sync.barrier(2), shared.dict() }
  for i = 1, #hold do hold[i]:close() end
  for i = 1, 11 do assert(made[i], "made " .. i) end
  print("queues and sync objects: made with no descriptor free")
end
C.nproc = function()        -- run as a user limited to one process: no thread can be made
  local base_fd, base_th = nfds(), nthreads()
  local t, err, code = thread.start(function() return 1 end)
  assert(t == nil and err == "cannot start thread: out of threads or memory" and code == "EAGAIN", tostring(err))
  local p, perr, pcode = pool.new{size = 2, kind = "thread"}
  assert(p == nil and perr == "pool.new: cannot start thread: out of threads or memory" and pcode == "EAGAIN", tostring(perr))
  local q, qerr, qcode = process.start(function() return 1 end)
  assert(q == nil and qerr == "cannot fork: wouldblock" and qcode == "EAGAIN", tostring(qerr))
  local r, rerr, rcode = process.run({"true"})
  assert(r == nil and rerr == "cannot run true: wouldblock" and rcode == "EAGAIN", tostring(rerr))
  assert(nfds() == base_fd and nthreads() == base_th)
  print("thread.start, pool.new, process.start, process.run: nil, message at the process limit")
end
C.memory = function()       -- run under ulimit -v: the next thread's stack cannot be mapped
  local base_fd, base_th = nfds(), nthreads()
  local keep, n, err, code = {}, 0, nil, nil
  while n < 400 do
    local t
    t, err, code = thread.start(function() require("strand").sleep(1) end)
    if not t then break end
    n = n + 1; keep[n] = t
  end
  assert(err == "cannot start thread: out of threads or memory" and code == "EAGAIN", tostring(err))
  -- a thread started just before the limit may itself run out of memory (its require fails and
  -- it ends with an error): it must still end, and leave nothing behind
  for i = 1, n do
    local ok, jerr = keep[i]:join(30)
    assert(ok ~= nil, "thread " .. i .. " did not end: " .. tostring(jerr))
  end
  keep = nil
  assert(settle(function() return nfds() == base_fd and nthreads() == base_th end), "fds or threads left")
  print(("thread.start: nil, message when memory ran out after %d threads"):format(n))
end
strand.run(C[arg[1]])
]==]

describe("tfix9: out of a resource, constructors return nil, message", function()
  H.guard()
  local file
  setup(function()
    file = os.tmpname()
    local h = assert(io.open(file, "w")); h:write(CHILD); h:close()
    os.execute("chmod 644 " .. file)                 -- (read by user nobody below)
  end)
  teardown(function() os.remove(file) end)

  local function child(case, prefix)
    local build = os.getenv("STRAND_TEST_BUILD") or "build"
    local p = io.popen(("%s LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='%s/?.so;;' timeout -k 2 120 %s lua5.4 %s %s 2>&1")
      :format(prefix[1], build, prefix[2] or "", file, case))
    local out = p:read("a")
    local ok = p:close()
    return out, ok
  end

  local function exhausted(case, expect)
    it(case .. ": " .. expect, function()
      local out, ok = child(case, { "ulimit -n 256;" })
      assert.is_true(ok, out)
      assert.truthy(out:find(expect, 1, true), out)
    end)
  end

  exhausted("thread_start", "thread.start: nil, message below 1 free")
  exhausted("thread_new", "thread.new():start: nil, message below 1 free")
  exhausted("thread_retry", "thread: a failed start may be retried")
  exhausted("pool_thread", "pool.new thread: nil, message below ")
  exhausted("pool_process", "pool.new process: nil, message below ")
  exhausted("process_start", "process.start: nil, message below ")
  exhausted("process_new", "process.new():start: nil, message below ")
  exhausted("process_spawn", "process.spawn: nil, message below ")
  exhausted("process_run", "process.run: nil, message below ")
  exhausted("process_pipe", "process.pipe: nil, message below 2 free")
  exhausted("thread_loop", "a thread's loop without a poller: false, ")
  exhausted("socket_tcp", "socket.tcp: nil, message below 1 free")
  exhausted("socket_udp", "socket.udp: nil, message below 1 free")
  exhausted("socket_unix", "socket.unix: nil, message below 1 free")
  exhausted("socket_pair", "socket.pair: nil, message below 2 free")
  exhausted("socket_listen", "socket.listen: nil, message below 1 free")
  exhausted("socket_unix_listen", "socket.unix_listen: nil, message below 1 free")
  exhausted("socket_connect", "socket.connect: nil, message below 1 free")
  exhausted("socket_accept", "accept: nil, message below 1 free")
  exhausted("selector", "selector.new: nil, message below 1 free")
  exhausted("sync_objects", "queues and sync objects: made with no descriptor free")

  -- (the sanitizers' shadow memory cannot live under an address-space limit)
  local under_asan = (os.getenv("STRAND_PRELOAD") or ""):find("asan") ~= nil
  ;(under_asan and pending or it)("out of address space: thread.start returns nil, message", function()
    local out, ok = child("memory", { "ulimit -v 600000;" })
    assert.is_true(ok, out)
    assert.truthy(out:find("nil, message when memory ran out after", 1, true), out)
  end)

  -- As user nobody limited to one process (root is not limited: setpriv), no thread and no
  -- child can be made.
  local can_limit = os.execute("[ $(id -u) = 0 ] && command -v setpriv >/dev/null && command -v prlimit >/dev/null")
  ;(can_limit and it or pending)("at the process limit: thread.start, pool.new, process.start, process.run", function()
    local out, ok = child("nproc", { "", "setpriv --reuid=65534 --regid=65534 --clear-groups prlimit --nproc=1" })
    assert.is_true(ok, out)
    assert.truthy(out:find("nil, message at the process limit", 1, true), out)
  end)
end)

describe("tfix9: a joined thread's eventfd serves the next start", function()
  H.guard()
  local strand = require "strand"
  local thread = require "strand.thread"
  local process = require "strand.process"
  local core = require "strand.core"

  local function eventfds()
    local n = 0
    for _, target in pairs(assert(core._proc.fds())) do
      if target:find("eventfd", 1, true) then n = n + 1 end
    end
    return n
  end
  local function spares()
    local n = 0
    for fd in pairs(core.thread._spare_fds()) do
      assert.matches("eventfd", assert(core._proc.fds())[fd])
      n = n + 1
    end
    return n
  end

  it("a start takes a kept eventfd: the process's eventfds do not grow with starts", function()
    H.run(function()
      assert.equal(7, thread.start(function() return 7 end):result(H.TIMEOUT))
      local kept, before = spares(), eventfds()
      assert.is_true(kept >= 1)
      for i = 1, 20 do assert.equal(i, thread.start(function(x) return x end, i):result(H.TIMEOUT)) end
      assert.equal(kept, spares())
      assert.equal(before, eventfds())
    end)
  end)

  it("two joiners at once (one waits on a dup) and handles collected unjoined: results exact, at most 4 kept", function()
    H.run(function()
      for round = 1, 10 do
        local go = require("strand.sync").event()
        local t = thread.start(function(ev, r) assert(ev:wait(30)); return r end, go, round)
        local a = strand.spawn(function() return t:result(H.TIMEOUT) end)
        local b = strand.spawn(function() return t:result(H.TIMEOUT) end)
        strand.sleep(0)                                -- both wait now
        go:set()
        assert.equal(round, a:result(H.TIMEOUT))
        assert.equal(round, b:result(H.TIMEOUT))
        local u = thread.start(function() return 1 end)  -- never joined: collected below
        assert.is_true(H.wait_until(function() return not u:is_alive() end, H.TIMEOUT))
        u = nil
      end
      collectgarbage(); collectgarbage()
      -- (the exit guard holds an unjoined thread until the next start drops the finished ones)
      assert.equal(0, thread.start(function() return 0 end):result(H.TIMEOUT))
      assert.is_true(spares() <= 4)
    end)
  end)

  it("a forked child keeps none of its parent's spare eventfds", function()
    H.run(function()
      thread.start(function() end):join(H.TIMEOUT)
      assert.is_true(spares() >= 1)
      local p = process.start(function()
        return next(require("strand.core").thread._spare_fds()) == nil
      end)
      assert.is_true(p:result(H.TIMEOUT))
    end)
  end)
end)
