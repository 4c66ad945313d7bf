-- Bad input everywhere: every public function called with wrong types, negative or huge sizes,
-- NaN, closed objects... must raise an error that names the argument ("bad argument #n to
-- 'fn' (...)") or say what is wrong, never crash, hang or leak. Areas add their rows to `calls`
-- (targeted cases) and `api` (the sweep) as they land.
local strand = require "strand"
local core = require "strand.core"
local serial = require "strand.serial"
local H = require "support.helper"

local NaN, INF = 0 / 0, math.huge

local function noop() end

-- A finished task and a group to call methods on.
local function fixtures()
  local t = strand.spawn(noop)
  t:join()
  return { task = t, group = strand.group(), notifier = core.notifier() }
end

-- { label, function(fx) ... end, pattern the error must match }
local calls = {
  { "spawn()", function() strand.spawn() end, "bad argument #1 to 'spawn'" },
  { "spawn(42)", function() strand.spawn(42) end, "bad argument #1 to 'spawn'" },
  { "sleep('x')", function() strand.sleep("x") end, "bad argument #1 to 'sleep'" },
  { "sleep(-1)", function() strand.sleep(-1) end, "bad argument #1 to 'sleep'" },
  { "sleep(NaN)", function() strand.sleep(NaN) end, "bad argument #1 to 'sleep'" },
  { "sleep({})", function() strand.sleep({}) end, "bad argument #1 to 'sleep'" },
  { "run(42)", function() strand.run(42) end, "bad argument #1 to 'run'" },
  { "timeout('x', f)", function() strand.timeout("x", noop) end, "bad argument #1 to 'timeout'" },
  { "timeout(-1, f)", function() strand.timeout(-1, noop) end, "bad argument #1 to 'timeout'" },
  { "timeout(NaN, f)", function() strand.timeout(NaN, noop) end, "bad argument #1 to 'timeout'" },
  { "timeout(1, nil)", function() strand.timeout(1) end, "bad argument #2 to 'timeout'" },
  { "joinall(nil)", function() strand.joinall() end, "bad argument #1 to 'joinall'" },
  { "joinall({42})", function() strand.joinall({ 42 }) end, "bad argument #1 to 'joinall'" },
  { "joinall({}, -1)", function() strand.joinall({}, -1) end, "bad argument #2 to 'joinall'" },
  { "joinall({}, 'x')", function() strand.joinall({}, "x") end, "bad argument #2 to 'joinall'" },
  { "wait(nil)", function() strand.wait() end, "bad argument #1 to 'wait'" },
  { "wait({}, 5)", function() strand.wait({}, 5) end, "bad argument #2 to 'wait'" },
  { "wait({}, {mode='x'})", function() strand.wait({}, { mode = "x" }) end, "bad argument #2 to 'wait'" },
  { "wait({}, {timeout=-1})", function() strand.wait({}, { timeout = -1 }) end, "bad argument #2 to 'wait'" },
  { "as_completed(nil)", function() strand.as_completed() end, "bad argument #1 to 'as_completed'" },
  { "as_completed({}, NaN)", function() strand.as_completed({}, NaN) end, "bad argument #2 to 'as_completed'" },
  { "task.join(42)", function(fx) fx.task.join(42) end, "bad argument #1 to 'join'" },
  { "task:join(-1)", function(fx) fx.task:join(-1) end, "bad argument #1 to 'join'" },
  { "task:join(NaN)", function(fx) fx.task:join(NaN) end, "bad argument #1 to 'join'" },
  { "task:join('soon')", function(fx) fx.task:join("soon") end, "bad argument #1 to 'join'" },
  { "task.result({})", function(fx) fx.task.result({}) end, "bad argument #1 to 'result'" },
  { "task.cancel('x')", function(fx) fx.task.cancel("x") end, "bad argument #1 to 'cancel'" },
  { "task.status()", function(fx) fx.task.status() end, "bad argument #1 to 'status'" },
  { "task.done(io.stdout)", function(fx) fx.task.done(io.stdout) end, "bad argument #1 to 'done'" },
  { "group:spawn(42)", function(fx) fx.group:spawn(42) end, "bad argument #1 to 'spawn'" },
  { "group:wait(-1)", function(fx) fx.group:wait(-1) end, "bad argument #1 to 'wait'" },
  { "notifier.wait(42)", function(fx) fx.notifier.wait(42) end, "bad argument #1 to 'wait'" },
  { "notifier:wait(-1)", function(fx) fx.notifier:wait(-1) end, "bad argument #1 to 'wait'" },
  { "notifier.notify(nil)", function(fx) fx.notifier.notify() end, "bad argument #1 to 'notify'" },
  { "cancel_after('x')", function() core.cancel_after("x") end, "bad argument #1 to 'cancel_after'" },
  { "cancel_after(-1)", function() core.cancel_after(-1) end, "bad argument #1 to 'cancel_after'" },
  { "cancel_after(1) outside a task", function() core.cancel_after(1) end, "not inside a task" },
  { "serial.encode()", function() serial.encode() end, "bad argument #1 to 'encode'" },
  { "serial.encode(1, 42)", function() serial.encode(1, 42) end, "bad argument #2 to 'encode'" },
  { "serial.encode(coroutine)", function() serial.encode(coroutine.create(noop)) end, "cannot copy a coroutine" },
  { "serial.encode(io.stdout)", function() serial.encode(io.stdout) end, "cannot copy a userdata" },
  { "serial.decode(nil)", function() serial.decode() end, "bad argument #1 to 'decode'" },
  { "serial.decode({})", function() serial.decode({}) end, "bad argument #1 to 'decode'" },
  { "serial.decode('x', 42)", function() serial.decode("x", 42) end, "bad argument #2 to 'decode'" },
}

-- The sweep: { label, function, number of arguments to vary }. Each argument position gets
-- every weird value (the others stay nil); the call runs in a task bounded by a short timeout,
-- so a call that blocks is cancelled. What is asserted: the process survives, and an error is
-- a message from strand's own checks, never a Lua runtime error from inside strand's Lua layer.
local function api(fx)
  return {
    { "strand.spawn", strand.spawn, 2 }, { "strand.sleep", strand.sleep, 1 },
    { "strand.timeout", strand.timeout, 3 }, { "strand.joinall", strand.joinall, 2 },
    { "strand.wait", strand.wait, 2 }, { "strand.as_completed", strand.as_completed, 2 },
    { "strand.is_cancelled", strand.is_cancelled, 1 }, { "strand.current", strand.current, 1 },
    { "strand.now", strand.now, 1 },
    { "task:join", function(...) return fx.task:join(...) end, 1 },
    { "task.join", fx.task.join, 2 }, { "task.result", fx.task.result, 2 },
    { "task.cancel", fx.task.cancel, 2 }, { "task.status", fx.task.status, 1 },
    { "group:spawn", function(...) return fx.group:spawn(...) end, 1 },
    { "group:wait", function(...) return fx.group:wait(...) end, 1 },
    { "group:cancel", function(...) return fx.group:cancel(...) end, 1 },
    { "notifier.wait", fx.notifier.wait, 2 }, { "notifier.notify", fx.notifier.notify, 1 },
    { "core.cancel_after", core.cancel_after, 2 },
    { "serial.encode", serial.encode, 2 }, { "serial.decode", serial.decode, 2 },
  }
end

local weird = {
  { "nil", nil }, { "false", false }, { "true", true }, { "0", 0 }, { "-1", -1 }, { "NaN", NaN },
  { "inf", INF }, { "-inf", -INF }, { "mininteger", math.mininteger },
  { "maxinteger", math.maxinteger }, { "1e308", 1e308 }, { "''", "" }, { "'x'", "x" },
  { "'10'", "10" }, { "{}", {} }, { "{42}", { 42 } }, { "print", print }, { "coroutine", coroutine.create(noop) },
  { "io.stdout", io.stdout },
  { "table whose every field raises", setmetatable({}, { __index = function() error("trap", 0) end }) },
}

-- Messages from strand's own argument checks and expected runtime failures.
local function clear(msg)
  if type(msg) ~= "string" then return strand.is_cancelled(msg) end
  if msg:match("attempt to ") and not msg:match("bad argument") then return false end
  return true
end

-- One `it` per row { label, function(fx), pattern }: the call raises an error containing the
-- pattern. setup(), when given, makes the fx passed to the call and a function to release it.
local function raising(rows, setup)
  for _, c in ipairs(rows) do
    it(c[1] .. " raises naming the argument", function()
      local fx, release
      if setup then fx, release = setup() end
      local ok, err = pcall(c[2], fx)
      if release then release() end
      assert.is_false(ok, c[1] .. " did not raise")
      assert.is_string(err)
      assert.is_truthy(err:find(c[3], 1, true), ("%s: %q does not contain %q"):format(c[1], err, c[3]))
    end)
  end
end

-- The sweep itself, inside a task: every { label, function, n } of fns called with each weird
-- value in each of its n argument positions (the others nil), bounded by a short timeout.
-- seen(r), when given, gets every call's packed results. Returns the calls whose error was not
-- clear (see above) and the number of calls.
local function sweep(fns, seen)
  local bad, n = {}, 0
  for _, f in ipairs(fns) do
    for pos = 1, f[3] do
      for _, w in ipairs(weird) do
        local args = {}
        args[pos] = w[2]
        n = n + 1
        local r = table.pack(pcall(strand.timeout, 0.003, f[2], table.unpack(args, 1, f[3])))
        if not r[1] and not clear(r[2]) then
          bad[#bad + 1] = ("%s(arg %d = %s): %s"):format(f[1], pos, w[1], tostring(r[2]))
        end
        if seen then seen(r) end
      end
    end
  end
  return bad, n
end

describe("bad input", function()
  H.guard()

  raising(calls, function()
    local fx = fixtures()
    return fx, function() fx.group:close() end
  end)

  it("every function survives every weird value in every argument position", function()
    local fx = fixtures()
    local bad, n
    H.run(function() bad, n = sweep(api(fx)) end)
    fx.group:cancel(); fx.group:close()
    strand.run()
    assert.is_true(n > 500)
    assert.same({}, bad)
  end)

  it("group methods called on something else than a group raise 'bad argument #1'", function()
    local g = strand.group()
    for _, m in ipairs { "spawn", "wait", "cancel", "close" } do
      for _, self in ipairs { 42, "x", {}, true } do
        local ok, err = pcall(g[m], self, noop)
        assert.is_false(ok)
        assert.matches("bad argument #1 to '" .. m .. "'", err)
      end
    end
  end)

  it("the program still works after all of the above", function()
    assert.same({ true, 3 }, { strand.spawn(function(a, b) strand.sleep(0) return a + b end, 1, 2):join(1) })
  end)
end)

-- {==== sockets
local has_socket, socket = pcall(require, "strand.socket")
if not has_socket then return end

describe("bad input: sockets", function()
  H.guard()

  local function pair()
    local a, b = socket.pair()
    return a, b
  end

  -- call fn(a) on a fresh pair (closed afterwards), raising what it raised
  local function with_pair(fn)
    return function()
      local a, b = pair()
      local ok, err = pcall(fn, a)
      a:close(); b:close()
      if not ok then error(err, 0) end
    end
  end

  local socket_calls = {
    { "tcp('bogus')", function() socket.tcp("bogus") end, "bad argument #1 to 'tcp'" },
    { "udp(42)", function() socket.udp(42) end, "bad argument #1 to 'udp'" },
    { "unix('seqpacket')", function() socket.unix("seqpacket") end, "bad argument #1 to 'unix'" },
    { "pair('raw')", function() socket.pair("raw") end, "bad argument #1 to 'pair'" },
    { "connect(nil, 80)", function() socket.connect(nil, 80) end, "bad argument #1 to 'connect'" },
    { "connect('127.0.0.1', {})", function() socket.connect("127.0.0.1", {}) end, "bad argument #2 to 'connect'" },
    { "connect('127.0.0.1', 1, 5)", function() socket.connect("127.0.0.1", 1, 5) end, "bad argument #3 to 'connect'" },
    { "connect('127.0.0.1', 1, {timeout=-1})", function() socket.connect("127.0.0.1", 1, { timeout = -1 }) end, "bad argument #3 to 'connect'" },
    { "listen(42)", function() socket.listen(42) end, "bad argument #1 to 'listen'" },
    { "getaddrinfo('127.0.0.1', 70000)", function() socket.getaddrinfo("127.0.0.1", 70000) end, "bad argument #2 to 'getaddrinfo'" },
    { "getaddrinfo('127.0.0.1', -1)", function() socket.getaddrinfo("127.0.0.1", -1) end, "bad argument #2 to 'getaddrinfo'" },
    { "s:recv(0)", with_pair(function(a) return a:recv(0) end), "bad argument #1 to 'recv'" },
    { "s:recv(-5)", with_pair(function(a) return a:recv(-5) end), "bad argument #1 to 'recv'" },
    { "s:recv(math.huge)", with_pair(function(a) return a:recv(math.huge) end), "bad argument #1 to 'recv'" },
    { "s:read(-1)", with_pair(function(a) return a:read(-1) end), "bad argument #1 to 'read'" },
    { "s:read('x')", with_pair(function(a) return a:read("x") end), "bad argument #1 to 'read'" },
    { "s:recv_frame(-1)", with_pair(function(a) return a:recv_frame(-1) end), "bad argument #1 to 'recv_frame'" },
    { "s:sendall({})", with_pair(function(a) return a:sendall({}) end), "bad argument #1 to 'sendall'" },
    { "s:send('x', 0/0)", with_pair(function(a) return a:send("x", 0 / 0) end), "bad argument #2 to 'send'" },
    { "s:settimeout(-1)", with_pair(function(a) return a:settimeout(-1) end), "bad argument #1 to 'settimeout'" },
    { "s:settimeout(NaN)", with_pair(function(a) return a:settimeout(0 / 0) end), "bad argument #1 to 'settimeout'" },
    { "s:setoption('rcvbuf', -1)", with_pair(function(a) return a:setoption("rcvbuf", -1) end), "bad argument #2 to 'setoption'" },
    { "s:setoption('rcvbuf', 2^40)", with_pair(function(a) return a:setoption("rcvbuf", 1 << 40) end), "bad argument #2 to 'setoption'" },
    { "s:sendfile('/dev/null', -1)", with_pair(function(a) return a:sendfile("/dev/null", -1) end), "bad argument #2 to 'sendfile'" },
    { "s:sendfile('/dev/null', 0, -1)", with_pair(function(a) return a:sendfile("/dev/null", 0, -1) end), "bad argument #3 to 'sendfile'" },
    { "s.recv('not a socket')", function() socket.tcp().recv("x", 1) end, "bad argument #1 to 'recv'" },
  }
  raising(socket_calls)

  -- every method of a closed socket raises "closed socket", except close (idempotent)
  it("every method of a closed socket raises 'attempt to use a closed socket'; close is idempotent", function()
    local a, b = pair()
    a:close(); b:close()
    local methods = { "bind", "listen", "connect", "accept", "recv", "read", "lines", "recv_frame",
      "send", "sendall", "write", "send_frame", "sendfile", "sendto", "recvfrom", "setoption",
      "getoption", "settimeout", "setblocking", "shutdown", "getsockname", "getpeername", "fileno" }
    for _, m in ipairs(methods) do
      assert.is_function(a[m], m)
      local ok, err = pcall(a[m], a, "x", 1)
      assert.is_false(ok, m)
      assert.matches("closed socket", err, nil, nil, m)
    end
    assert.has_no_error(function() a:close(); a:close() end)
  end)

  it("every socket function and method survives every weird value in every argument position", function()
    local a, b = pair()
    local srv = assert(socket.listen("127.0.0.1", 0))
    local fns = {
      { "socket.tcp", socket.tcp, 1 }, { "socket.udp", socket.udp, 1 }, { "socket.unix", socket.unix, 1 },
      { "socket.pair", socket.pair, 1 }, { "socket.connect", socket.connect, 3 },
      { "socket.listen", socket.listen, 3 }, { "socket.getaddrinfo", socket.getaddrinfo, 3 },
      { "socket.unix_connect", socket.unix_connect, 2 }, { "socket.unix_listen", socket.unix_listen, 2 },
    }
    for _, m in ipairs { "recv", "read", "lines", "recv_frame", "send", "sendall", "write", "send_frame",
                         "sendfile", "sendto", "recvfrom", "setoption", "getoption", "settimeout",
                         "setblocking", "shutdown", "bind", "connect" } do
      fns[#fns + 1] = { "s:" .. m, function(...) return a[m](a, ...) end, 3 }
    end
    fns[#fns + 1] = { "srv:accept", function(...) return srv:accept(...) end, 1 }
    local bad, n
    local made = {}
    local function keep_sockets(r)   -- sockets made by the call (socket.tcp() ...): close them
      for i = 2, r.n do
        if type(r[i]) == "userdata" and tostring(r[i]):match("^strand%.socket") then made[#made + 1] = r[i] end
      end
    end
    -- weird paths (10, "x", NaN...) become UNIX socket files: only in a temporary directory
    H.in_tmpdir(H.run, function() bad, n = sweep(fns, keep_sockets) end)
    for _, s in ipairs(made) do s:close() end
    a:close(); b:close(); srv:close()
    for _, name in ipairs { "10", "0", "-1", "x", "-nan", "nan", "inf", "-inf" } do   -- none here
      local f, err = io.open(name)
      if f then f:close() end
      assert.is_nil(f, name)
      assert.matches("No such file", err)
    end
    assert.is_true(n > 1000)
    assert.same({}, bad)
  end)
end)

-- {==== threads, sync, queues, shared state, selectors
local areas = {}
for _, name in ipairs { "thread", "sync", "queue", "shared", "selector" } do
  local ok, m = pcall(require, "strand." .. name)
  if ok then areas[name] = m end
end

describe("bad input: threads, sync, queues, shared state, selectors", function()
  H.guard()

  local targeted = {}
  local function row(label, fn, pattern) targeted[#targeted + 1] = { label, fn, pattern } end
  local th, sync, queue, shared, selector = areas.thread, areas.sync, areas.queue, areas.shared, areas.selector
  if th then
    row("thread.start(42)", function() th.start(42) end, "bad argument #1 to 'start'")
    row("thread.new(42)", function() th.new(42) end, "bad argument #1")
    row("thread.new{fn=42}", function() th.new { fn = 42 } end, "fn")
    row("thread.new{fn=f, args=5}", function() th.new { fn = noop, args = 5 } end, "args")
  end
  if sync then
    row("sync.semaphore(-1)", function() sync.semaphore(-1) end, "bad argument #1 to 'semaphore'")
    row("sync.semaphore('x')", function() sync.semaphore("x") end, "bad argument #1 to 'semaphore'")
    row("sync.bounded_semaphore(-5)", function() sync.bounded_semaphore(-5) end, "bad argument #1 to 'bounded_semaphore'")
    row("sync.barrier(0)", function() sync.barrier(0) end, "bad argument #1 to 'barrier'")
    row("sync.barrier(NaN)", function() sync.barrier(NaN) end, "bad argument #1 to 'barrier'")
    row("sync.condition(42)", function() sync.condition(42) end, "bad argument #1 to 'condition'")
    row("lock:acquire(-1)", function() sync.lock():acquire(-1) end, "bad argument #1 to 'acquire'")
    row("lock:acquire(NaN)", function() sync.lock():acquire(NaN) end, "bad argument #1 to 'acquire'")
    row("lock:release() unheld", function() sync.lock():release() end, "release")
    row("event:wait('x')", function() sync.event():wait("x") end, "bad argument #1 to 'wait'")
    row("lock.acquire(42)", function() sync.lock().acquire(42) end, "bad argument #1 to 'acquire'")
  end
  if queue then
    row("queue.new(-1)", function() queue.new(-1) end, "bad argument #1 to 'new'")
    row("queue.new('x')", function() queue.new("x") end, "bad argument #1 to 'new'")
    row("queue.new(1.5)", function() queue.new(1.5) end, "bad argument #1 to 'new'")
    row("q:put(nil)", function() queue.new():put(nil) end, "bad argument #1 to 'put'")
    row("q:put_nowait(nil)", function() queue.new():put_nowait(nil) end, "bad argument #1 to 'put_nowait'")
    row("q:get(-1)", function() queue.new():get(-1) end, "bad argument #1 to 'get'")
    row("q:put(1, -1)", function() queue.new():put(1, -1) end, "bad argument #2 to 'put'")
    row("q:put(coroutine) (queue shared with a thread)", function()
      local q = queue.new()
      assert(require("strand.thread").start(function() end, q):join())   -- values are copied now
      q:put(coroutine.create(noop))
    end, "cannot copy a coroutine")
    row("q.get(42)", function() queue.new().get(42) end, "bad argument #1 to 'get'")
    row("q:task_done() too often", function() queue.new():task_done() end, "task_done")
  end
  if shared then
    row("shared.list(42)", function() shared.list(42) end, "bad argument #1 to 'list'")
    row("d[nil] = 1", function() local d = shared.dict(); d[nil] = 1 end, "bad argument")
    row("d.k = coroutine", function() local d = shared.dict(); d.k = coroutine.create(noop) end, "cannot copy a coroutine")
    row("d:incr('k', 'x')", function() local d = shared.dict(); d:incr("k", "x") end, "bad argument #2 to 'incr'")
    row("l[0] = 1", function() local l = shared.list(); l[0] = 1 end, "index 0 out of range")
  end
  if selector then
    row("selector.new('kqueue')", function() selector.new("kqueue") end, "bad argument #1 to 'new'")
    row("sel:register(nil)", function() local s <close> = selector.new(); s:register(nil, 1) end, "bad argument #1 to 'register'")
    row("sel:register(-1)", function() local s <close> = selector.new(); s:register(-1, 1) end, "bad argument #1 to 'register'")
    row("sel:register(0, 0)", function() local s <close> = selector.new(); s:register(0, 0) end, "bad argument #2 to 'register'")
    row("sel:register(0, 99)", function() local s <close> = selector.new(); s:register(0, 99) end, "bad argument #2 to 'register'")
    row("sel:select('x')", function() local s <close> = selector.new(); for _ in s:select("x") do end end, "bad argument #1 to 'select'")
    row("sel:modify(unregistered)", function() local s <close> = selector.new(); s:modify(0, 1) end, "not registered")
    row("sel:unregister(unregistered)", function() local s <close> = selector.new(); s:unregister(0) end, "not registered")
    row("strand.select(42)", function() strand.select(42) end, "bad argument #1 to 'select'")
    row("strand.select({}, {}, {}, -1)", function() strand.select({}, {}, {}, -1) end, "bad argument #4 to 'select'")
    row("closed sel:register", function() local s = selector.new(); s:close(); s:register(0, 1) end, "closed")
  end

  raising(targeted)

  it("every function and method survives every weird value in every argument position", function()
    local fns = {}
    local objs = {}
    local function add(label, fn, n) fns[#fns + 1] = { label, fn, n } end
    local function methods(label, obj, names, n)
      objs[#objs + 1] = obj
      for _, m in ipairs(names) do add(label .. ":" .. m, function(...) return obj[m](obj, ...) end, n) end
    end
    if th then
      add("thread.new", th.new, 1)
      add("thread.id", th.id, 1); add("thread.name", th.name, 1); add("thread.active_count", th.active_count, 1)
      local t = th.start(function() return 1 end); t:join(10)
      methods("thread", t, { "join", "result", "is_alive" }, 1)
    end
    if sync then
      for _, f in ipairs { "lock", "rlock", "semaphore", "bounded_semaphore", "event", "condition", "barrier" } do
        add("sync." .. f, sync[f], 1)
      end
      methods("lock", sync.lock(), { "acquire", "release", "locked" }, 1)
      methods("rlock", sync.rlock(), { "acquire", "release", "locked" }, 1)
      methods("semaphore", sync.semaphore(0), { "acquire", "release" }, 1)
      methods("event", sync.event(), { "wait", "is_set" }, 1)
      methods("condition", sync.condition(), { "acquire", "wait", "notify", "notify_all", "release" }, 1)
      methods("barrier", sync.barrier(3), { "wait", "parties", "n_waiting", "broken" }, 1)
    end
    if queue then
      for _, f in ipairs { "new", "lifo", "priority" } do add("queue." .. f, queue[f], 1) end
      methods("queue", queue.new(2), { "put", "get", "put_nowait", "get_nowait", "qsize", "empty", "full", "join" }, 2)
      methods("priority", queue.priority(2), { "put", "get", "put_nowait" }, 2)
    end
    if shared then
      add("shared.dict", shared.dict, 1); add("shared.list", shared.list, 1)
      local d = shared.dict()
      methods("dict", d, { "get", "set", "keys", "items", "len", "incr" }, 2)
      methods("list", shared.list(), { "get", "set", "append", "items", "len" }, 2)
    end
    if selector then
      add("selector.new", selector.new, 1)
      add("strand.select", strand.select, 4)
      local a, b = require("strand.socket").pair()
      objs[#objs + 1] = a; objs[#objs + 1] = b
      local sel = selector.new()
      sel:register(a, selector.READ, "a")
      methods("selector", sel, { "register", "modify", "unregister", "get_key" }, 3)
      add("selector:select", function(...) for _ in sel:select(...) do end end, 1)
    end
    local bad, n
    H.run(function() bad, n = sweep(fns) end)
    for _, o in ipairs(objs) do
      if type(o) == "userdata" and tostring(o):match("^strand%.socket") then o:close() end
    end
    if th then
      local deadline = strand.now() + 10
      while th.active_count() > 1 and strand.now() < deadline do strand.sleep(0.01) end
    end
    assert.is_true(n > 500)
    assert.same({}, bad)
  end)
end)
