-- Selectors (epoll, poll, select backends) and strand.select: registrations, readiness,
-- timeouts, cooperation with other tasks, and their failure conditions.
local strand = require "strand"
local selector = require "strand.selector"
local H = require "support.helper"

local READ, WRITE = selector.READ, selector.WRITE
local BACKENDS = { "epoll", "poll", "select" }

-- n FIFOs opened in this process: { r = read end, w = write end (unbuffered) }, Lua files.
local function pipes(n)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir " .. dir))
  local names = {}
  for i = 1, n do names[i] = dir .. "/p" .. i end
  assert(os.execute("mkfifo " .. table.concat(names, " ")))
  local out = {}
  for i = 1, n do
    local keep = assert(io.open(names[i], "r+"))   -- so that neither open below blocks
    local r = assert(io.open(names[i], "r"))
    local w = assert(io.open(names[i], "w"))
    keep:close()
    w:setvbuf("no")
    out[i] = { r = r, w = w }
  end
  os.execute("rm -rf " .. dir)
  return out
end

local function close_pipes(ps)
  for _, p in ipairs(ps) do
    if io.type(p.r) == "file" then p.r:close() end
    if io.type(p.w) == "file" then p.w:close() end
  end
end

-- A fresh pipe and a selector of backend watching its read end: the pipe, the selector, the key.
local function watch_pipe(backend)
  local p = pipes(1)[1]
  local sel = selector.new(backend)
  return p, sel, sel:register(p.r, READ)
end

-- Everything one select reports, as { [fd] = mask } plus the count.
local function ready(sel, timeout)
  local got, n = {}, 0
  for key, mask in sel:select(timeout) do
    assert(got[key.fd] == nil, "fd reported twice")
    got[key.fd] = mask
    n = n + 1
  end
  return got, n
end

local function fd_of(f)
  local sel <close> = selector.new("poll")
  return sel:register(f, READ).fd
end

describe("selector", function()
  it("has Python's constants", function()
    assert.equal(1, selector.READ); assert.equal(2, selector.WRITE)
    assert.equal(1, selector.EVENT_READ); assert.equal(2, selector.EVENT_WRITE)
    assert.is_function(strand.select)
    assert.equal(selector.select, strand.select)
  end)

  for _, backend in ipairs(BACKENDS) do
    describe(backend .. " backend", function()
      it("registers, modifies, unregisters; keys are read-only values", H.no_leaks(function()
        local p = pipes(1)[1]
        local sel <close> = selector.new(backend)
        assert.equal(backend, sel:backend())
        local data = { "anything" }
        local key = sel:register(p.r, READ, data)
        assert.equal(p.r, key.fileobj); assert.equal(READ, key.events)
        assert.same(data, key.data); assert.equal(data, key.data)
        assert.is_true(math.type(key.fd) == "integer" and key.fd > 2)
        assert.equal(key, sel:get_key(p.r))
        assert.equal(key, sel:get_key(key.fd))                -- by fd as well
        assert.equal(1, #sel)
        local key2 = sel:modify(p.r, READ | WRITE, "other")   -- a new key, as Python's _replace
        assert.are_not.equal(key, key2)
        assert.equal(READ, key.events); assert.equal(data, key.data)
        assert.equal(READ | WRITE, key2.events); assert.equal("other", key2.data)
        assert.equal(p.r, key2.fileobj); assert.equal(key.fd, key2.fd)
        assert.equal(key2, sel:get_key(p.r))
        key = sel:modify(p.r, READ)                           -- data omitted: nil, as Python
        assert.is_nil(key.data)
        assert.equal(key, sel:get_key(p.r))
        -- writing to a key raises and changes nothing: unregister still finds everything
        local ok, err = pcall(function() key.fileobj = nil end)
        assert.is_false(ok)
        assert.matches("selector keys are read%-only %(sel:modify%(obj, events, data%) makes a new one%)$", err)
        assert.is_false(pcall(function() key.events = 0 end))
        assert.is_false(getmetatable(key))
        assert.equal(p.r, key.fileobj)
        assert.equal(key, sel:unregister(p.r))
        assert.is_nil(sel:get_key(p.r))
        assert.equal(0, #sel)
        local again = sel:register(p.r, WRITE)                -- a new registration, a new key
        assert.are_not.equal(key, again)
        close_pipes({ p })
      end))

      it("accepts integer fds, files and objects with fileno/pollfd/getfd", H.no_leaks(function()
        local ps = pipes(2)
        local sel <close> = selector.new(backend)
        local fd = fd_of(ps[1].r)
        local k1 = sel:register(fd, READ, 1)
        assert.equal(fd, k1.fileobj); assert.equal(fd, k1.fd)
        local fdw = fd_of(ps[1].w)
        local objs = {
          setmetatable({}, { __index = { fileno = function() return fdw end } }),
          { pollfd = function() return fd_of(ps[2].r) end },
          { getfd = function() return fd_of(ps[2].w) end },
        }
        for i, o in ipairs(objs) do
          local k = sel:register(o, i == 2 and READ or WRITE, o)
          assert.equal(o, k.fileobj); assert.equal(o, k.data)
          assert.equal(k, sel:get_key(o))
        end
        local map = sel:get_map()
        local n = 0
        for obj, key in pairs(map) do n = n + 1; assert.equal(obj, key.fileobj) end
        assert.equal(4, n)
        assert.equal(4, #sel)
        local got = ready(sel, 0)
        assert.same({ [fdw] = WRITE, [fd_of(ps[2].w)] = WRITE }, got)
        for _, o in ipairs(objs) do sel:unregister(o) end
        sel:unregister(fd)
        assert.equal(0, #sel)
        close_pipes(ps)
      end))

      it("reports readiness and masks it by the registered events", H.no_leaks(function()
        local p = pipes(1)[1]
        local sel <close> = selector.new(backend)
        local kr = sel:register(p.r, READ, "r")
        local kw = sel:register(p.w, READ | WRITE, "w")
        local got, n = ready(sel, 0)
        assert.same({ [kw.fd] = WRITE }, got); assert.equal(1, n)
        p.w:write("hello")
        got = ready(sel, 0)
        assert.same({ [kr.fd] = READ, [kw.fd] = WRITE }, got)
        assert.equal("hello", p.r:read(5))
        sel:modify(p.w, READ)
        got, n = ready(sel, 0)
        assert.equal(0, n)
        -- the writer goes away: the reader sees the hang-up as readable
        sel:unregister(p.w)
        p.w:close()
        got = ready(sel, 0)
        assert.same({ [kr.fd] = READ }, got)
        assert.is_nil(p.r:read(1))
        close_pipes({ p })
      end))

      it("the results iterator also carries a count", function()
        local p = pipes(1)[1]
        local sel <close> = selector.new(backend)
        sel:register(p.w, WRITE)
        local iter, res = sel:select(0)
        assert.is_function(iter)
        assert.equal(1, res.n)
        close_pipes({ p })
      end)

      it("counts bytes in a Lua file's buffer as readable", H.no_leaks(function()
        local p, sel <close>, k = watch_pipe(backend)
        p.w:write("abc\n")
        assert.equal("a", p.r:read(1))         -- stdio pulled all 4 bytes into its buffer
        assert.same({ [k.fd] = READ }, (ready(sel, 0)))
        assert.equal("bc", p.r:read("l"))
        local _, n = ready(sel, 0)
        assert.equal(0, n)
        close_pipes({ p })
      end))

      it("counts :pending() > 0 and :dirty() as readable", H.no_leaks(function()
        local ps = pipes(2)
        local fd1, fd2 = fd_of(ps[1].r), fd_of(ps[2].r)
        local o1 = { fileno = function() return fd1 end, pending = function(self) return self.n end, n = 0 }
        local o2 = { getfd = function() return fd2 end, dirty = function(self) return self.d end, d = false }
        local sel <close> = selector.new(backend)
        sel:register(o1, READ)
        sel:register(o2, READ)
        local _, n = ready(sel, 0)
        assert.equal(0, n)
        o1.n = 3
        assert.same({ [fd1] = READ }, (ready(sel, 0)))
        o1.n, o2.d = 0, true
        assert.same({ [fd2] = READ }, (ready(sel, 0)))
        ps[2].w:write("x")                    -- buffered and ready in the kernel: reported once
        assert.same({ [fd2] = READ }, (ready(sel, 0)))
        sel:modify(o2, WRITE)                 -- buffered data does not make WRITE
        local _, n2 = ready(sel, 0)
        assert.equal(0, n2)
        -- a task waiting in select is woken by buffered data found at its first check only:
        o1.n = 1
        local t0 = strand.now()
        assert.same({ [fd1] = READ }, (ready(sel, 5)))
        assert.is_true(strand.now() - t0 < 1)
        close_pipes(ps)
      end))

      it("timeout 0 and negative timeouts only poll; a timeout expires on time", function()
        local p, sel <close> = watch_pipe(backend)
        local t0 = strand.now()
        local _, n = ready(sel, 0)
        assert.equal(0, n)
        _, n = ready(sel, -1)
        assert.equal(0, n)
        assert.is_true(strand.now() - t0 < 0.05)
        t0 = strand.now()
        _, n = ready(sel, 0.15)
        local took = strand.now() - t0
        assert.equal(0, n)
        assert.is_true(took >= 0.14 and took < 1, "took " .. took)
        -- and inside a task
        H.run(function()
          local t1 = strand.now()
          local _, m = ready(sel, 0.1)
          local took1 = strand.now() - t1
          assert.equal(0, m)
          assert.is_true(took1 >= 0.09 and took1 < 1, "took " .. took1)
        end)
        close_pipes({ p })
      end)

      -- select waits (in a task, or driving the loop from the main chunk) while a ticker task
      -- sleeps 10 times and then writes: if select blocked the loop, neither would ever happen
      for _, c in ipairs {
        { "select inside a task does not block other tasks", H.run, nil },   -- no timeout
        { "select from the main chunk drives the loop", function(f) f() end, 5 },
      } do
        it(c[1], H.no_leaks(function()
          local p, sel <close>, k = watch_pipe(backend)
          local ticks = 0
          c[2](function()
            local ticker = strand.spawn(function()
              for _ = 1, 10 do strand.sleep(0.02); ticks = ticks + 1 end
              p.w:write("!")
            end)
            local t0 = strand.now()
            local got = ready(sel, c[3])               -- until the write
            local took = strand.now() - t0
            assert.same({ [k.fd] = READ }, got)
            assert.equal(10, ticks)
            assert.is_true(took >= 0.19, "took " .. took)
            ticker:result()
          end)
          assert.equal("!", p.r:read(1))
          close_pipes({ p })
        end))
      end

      it("a registration or modify made while a task waits wakes it", H.no_leaks(function()
        local ps = pipes(2)
        local sel <close> = selector.new(backend)
        local k1 = sel:register(ps[1].r, READ)
        H.run(function()
          ps[2].w:write("ready already")
          local waiter = strand.spawn(function() return ready(sel, 5) end)
          strand.sleep(0.02)                              -- the waiter has built its mirror
          assert.equal("waiting", waiter:status())
          local k2 = sel:register(ps[2].r, READ)          -- readable from the start
          local got = waiter:result()
          assert.same({ [k2.fd] = READ }, got)
          sel:unregister(ps[2].r)
          waiter = strand.spawn(function() return ready(sel, 5) end)
          strand.sleep(0.02)
          assert.equal("waiting", waiter:status())
          sel:modify(ps[1].r, READ | WRITE)               -- still nothing for a read end...
          sel:unregister(ps[1].r)
          local k3 = sel:register(ps[1].w, READ)
          strand.sleep(0.02)
          assert.equal("waiting", waiter:status())
          sel:modify(ps[1].w, WRITE)                      -- ...but a write end is writable
          assert.same({ [k3.fd] = WRITE }, waiter:result())
          assert.is_truthy(k1)
        end)
        close_pipes(ps)
      end))

      it("many waits in a row: no lost wake-ups", function()
        local p, sel <close> = watch_pipe(backend)
        H.run(function()
          local writer = strand.spawn(function()
            for i = 1, 200 do
              p.w:write(string.char(i % 256))
              if i % 3 == 0 then strand.sleep(0.001) else strand.sleep(0) end
            end
          end)
          local got = 0
          while got < 200 do
            local _, n = ready(sel, 2)
            assert.equal(1, n, "select timed out after " .. got .. " bytes")
            assert.equal(string.char((got + 1) % 256), p.r:read(1))
            got = got + 1
          end
          writer:result()
        end)
        close_pipes({ p })
      end)

      it("close, <close> and __gc are the same idempotent close", H.no_leaks(function()
        local p = pipes(1)[1]
        local sel = selector.new(backend)
        sel:register(p.r, READ, p)
        sel:close(); sel:close()
        assert.matches("closed", tostring(sel))
        do
          local s2 <close> = selector.new(backend)
          s2:register(p.r, READ)
        end
        selector.new(backend):register(p.w, WRITE)   -- dropped: __gc closes it
        collectgarbage(); collectgarbage()
        close_pipes({ p })
      end))
    end)
  end

  it("every backend sees the same readiness on the same workload", H.no_leaks(function()
    local ps = pipes(24)
    math.randomseed(7)
    local sels = {}
    for i, b in ipairs(BACKENDS) do sels[i] = selector.new(b) end
    for i, p in ipairs(ps) do
      local rev = (i % 5 == 0) and (READ | WRITE) or READ
      local wev = (i % 3 == 0) and READ or ((i % 4 == 0) and (READ | WRITE) or WRITE)
      for _, sel in ipairs(sels) do
        sel:register(p.r, rev, i)
        sel:register(p.w, wev, -i)
      end
    end
    local function compare(round)
      local first
      for i, sel in ipairs(sels) do
        local got = ready(sel, 0)
        if i == 1 then first = got
        else assert.same(first, got, BACKENDS[i] .. " differs from epoll in round " .. round) end
      end
      return first
    end
    for round = 1, 6 do
      for i, p in ipairs(ps) do
        if math.random() < 0.3 and io.type(p.w) == "file" then p.w:write(("x"):rep(i)) end
      end
      local got = compare(round)
      assert.is_true(next(got) ~= nil)
      if round == 3 then                    -- hang-ups: close some writers (unregistered first)
        for i = 1, #ps, 4 do
          if i % 5 ~= 0 then
            for _, sel in ipairs(sels) do sel:unregister(ps[i].w) end
            ps[i].w:close()
          end
        end
        compare(round .. "b")
      end
    end
    -- the one known difference: select(2) never reports a hang-up as writable, epoll and poll
    -- do (Python's selectors behave the same way)
    local r5 = sels[1]:get_key(ps[5].r).fd
    for _, sel in ipairs(sels) do sel:unregister(ps[5].w) end
    ps[5].w:close()
    for i, sel in ipairs(sels) do
      assert.equal(i == 3 and READ or READ | WRITE, (ready(sel, 0))[r5], BACKENDS[i])
    end
    for _, sel in ipairs(sels) do sel:close() end
    close_pipes(ps)
  end))

  it("an epoll selector can be registered in another selector", H.no_leaks(function()
    local p = pipes(1)[1]
    local inner <close> = selector.new("epoll")
    local outer <close> = selector.new("poll")
    inner:register(p.r, READ)
    local k = outer:register(inner, READ)
    assert.equal(inner:fileno(), k.fd)
    local _, n = ready(outer, 0)
    assert.equal(0, n)
    p.w:write("z")
    assert.same({ [k.fd] = READ }, (ready(outer, 1)))
    outer:unregister(inner)
    close_pipes({ p })
  end))

  it("closing a selector wakes a task waiting in its select with an error", H.no_leaks(function()
    for _, backend in ipairs(BACKENDS) do
      local p = pipes(1)[1]
      local sel = selector.new(backend)
      sel:register(p.r, READ)
      H.run(function()
        local waiter = strand.spawn(function() return ready(sel) end)
        strand.sleep(0.05)
        assert.equal("waiting", waiter:status())
        sel:close()
        local ok, err = waiter:join(1)
        assert.is_false(ok)
        assert.matches("closed selector", err)
      end)
      close_pipes({ p })
    end
  end))

  it("cancelling a task waiting in select leaves nothing behind", H.no_leaks(function()
    local p = pipes(1)[1]
    local sel <close> = selector.new("poll")
    sel:register(p.r, READ)
    H.run(function()
      local a = strand.spawn(function() return ready(sel) end)
      local b = strand.spawn(function() return strand.select({ p.r }, {}, {}) end)
      strand.sleep(0.05)
      a:cancel(); b:cancel()
      a:join(1); b:join(1)
      assert.equal("cancelled", a:status())
      assert.equal("cancelled", b:status())
      -- the selector still works afterwards
      p.w:write("q")
      local _, n = ready(sel, 1)
      assert.equal(1, n)
    end)
    close_pipes({ p })
  end))

  describe("strand.select", function()
    it("returns the ready objects themselves, in the given order", H.no_leaks(function()
      local ps = pipes(3)
      local fd = fd_of(ps[3].w)
      local obj = { fileno = function() return fd_of(ps[2].r) end }
      ps[2].w:write("b")
      ps[3].w:write("c")
      local r, w, x = strand.select({ ps[1].r, obj, ps[3].r }, { ps[1].w, fd }, { ps[1].r, ps[3].r }, 0)
      assert.same({ obj, ps[3].r }, r)
      assert.equal(obj, r[1])
      assert.same({ ps[1].w, fd }, w)
      assert.same({}, x)
      close_pipes(ps)
    end))

    it("waits cooperatively, in a task and from the main chunk", H.no_leaks(function()
      local p = pipes(1)[1]
      local ticks = 0
      H.run(function()
        local ticker = strand.spawn(function() for _ = 1, 5 do strand.sleep(0.02); ticks = ticks + 1 end end)
        strand.spawn(function() ticker:join(); p.w:write("1") end)
        local r, w, x = strand.select({ p.r }, {}, { p.r })
        assert.same({ p.r }, r); assert.same({}, w); assert.same({}, x)
        assert.equal(5, ticks)
        ticker:result()
      end)
      assert.equal("1", p.r:read(1))
      strand.spawn(function() strand.sleep(0.05); p.w:write("2") end)
      local r = strand.select({ p.r }, nil, nil, 5)
      assert.same({ p.r }, r)
      assert.equal("2", p.r:read(1))
      close_pipes({ p })
    end))

    it("times out with three empty lists; empty lists just sleep", function()
      local p = pipes(1)[1]
      local t0 = strand.now()
      local r, w, x = strand.select({ p.r }, {}, {}, 0.1)
      local took = strand.now() - t0
      assert.same({}, r); assert.same({}, w); assert.same({}, x)
      assert.is_true(took >= 0.09 and took < 1, "took " .. took)
      H.run(function()
        local ticks = 0
        strand.spawn(function() for _ = 1, 3 do strand.sleep(0.02); ticks = ticks + 1 end end)
        local t1 = strand.now()
        local a, b, c = strand.select({}, {}, {}, 0.1)
        assert.same({}, a); assert.same({}, b); assert.same({}, c)
        assert.is_true(strand.now() - t1 >= 0.09)
        assert.is_true(ticks >= 1)                 -- the ticker's first deadline came first
      end)
      close_pipes({ p })
    end)

    it("counts buffered data as readable", function()
      local p = pipes(1)[1]
      p.w:write("12")
      assert.equal("1", p.r:read(1))
      local r = strand.select({ p.r }, {}, {}, 0)
      assert.same({ p.r }, r)
      local fd = fd_of(p.r)
      local obj = { fileno = function() return fd end, pending = function() return 5 end }
      assert.same({ obj }, (strand.select({ obj }, {}, {}, 0)))
      close_pipes({ p })
    end)
  end)
end)

describe("selector with strand sockets", function()
  local socket = require "strand.socket"

  for _, backend in ipairs(BACKENDS) do
    it(backend .. ": serves non-blocking sockets the way Python's selectors examples do", H.no_leaks(function()
      local srv = assert(socket.listen("127.0.0.1", 0))
      srv:setblocking(false)
      local _, port = srv:getsockname()
      local sel <close> = selector.new(backend)
      local closed = 0
      local function read(conn)
        local data, err = conn:recv(1024)
        if data then assert(conn:send(data) == #data)
        elseif err ~= "wouldblock" then sel:unregister(conn); conn:close(); closed = closed + 1 end
      end
      local function accept(s)
        local conn = s:accept()
        if conn then conn:setblocking(false); sel:register(conn, READ, read) end
      end
      sel:register(srv, READ, accept)
      local good = 0
      for i = 1, 20 do
        strand.spawn(function()
          local c <close> = assert(socket.connect("127.0.0.1", port, { timeout = 5 }))
          c:settimeout(5)
          for j = 1, 3 do
            local m = ("client %d says %d"):format(i, j)
            assert(c:sendall(m))
            if c:read(#m) == m then good = good + 1 end
          end
        end)
      end
      local t0 = strand.now()
      while closed < 20 and strand.now() - t0 < H.TIMEOUT do
        for key, mask in sel:select(1) do key.data(key.fileobj, mask) end
      end
      assert.equal(20, closed); assert.equal(60, good)
      assert.equal(1, #sel)
      sel:unregister(srv)
      srv:close()
      strand.run()
    end))
  end

  it("bytes a socket buffered (pending) count as readable", H.no_leaks(function()
    for _, backend in ipairs(BACKENDS) do
      local a, b = socket.pair()
      local sel <close> = selector.new(backend)
      local k = sel:register(a, READ)
      local _, n = ready(sel, 0)
      assert.equal(0, n)
      assert(b:sendall("line1\nline2\n"))
      assert.same({ [k.fd] = READ }, (ready(sel, 1)))
      assert.equal("line1", a:read("l"))               -- "line2\n" stays in a's buffer
      assert.is_true(a:pending() > 0)
      assert.same({ [k.fd] = READ }, (ready(sel, 0)), backend)
      assert.equal("line2", a:read("l"))
      _, n = ready(sel, 0)
      assert.equal(0, n)
      a:close(); b:close()
    end
  end))

  it("sees a peer's hang-up as readable, then recv says closed", H.no_leaks(function()
    for _, backend in ipairs(BACKENDS) do
      local a, b = socket.pair()
      a:setblocking(false)
      local sel <close> = selector.new(backend)
      local k = sel:register(a, READ)
      local _, n = ready(sel, 0)
      assert.equal(0, n)
      b:close()
      assert.same({ [k.fd] = READ }, (ready(sel, 1)))
      local data, err = a:recv(10)
      assert.is_nil(data); assert.equal("closed", err)
      sel:unregister(a)
      a:close()
    end
  end))

  for _, backend in ipairs(BACKENDS) do
    it(backend .. ": a socket closed while registered never makes select raise", H.no_leaks(function()
      local sel <close> = selector.new(backend)
      local a, b = socket.pair()
      local x, y = socket.pair()
      sel:register(a, READ, "closed")
      sel:register(x, READ, "live")
      assert(y:send("hi"))
      a:close()
      for _ = 1, 2 do                    -- twice: nothing is forgotten or broken by the first
        local got = {}
        for key, mask in sel:select(0) do got[#got + 1] = key.data .. ":" .. mask end
        table.sort(got)
        -- as Python: epoll forgets the closed fd, poll (POLLNVAL) and select report it ready
        if backend == "epoll" then assert.same({ "live:1" }, got)
        else assert.same({ "closed:1", "live:1" }, got) end
      end
      H.run(function()                   -- waiting, from a task: the same answer
        local n = 0
        for _ in sel:select(1) do n = n + 1 end
        assert.equal(backend == "epoll" and 1 or 2, n)
      end)
      assert.equal("closed", sel:unregister(a).data)
      local got = {}
      for key in sel:select(0) do got[#got + 1] = key.data end
      assert.same({ "live" }, got)
      b:close(); x:close(); y:close()
    end))
  end

  it("finds a socket by object or by fd; a closed socket can still be unregistered", H.no_leaks(function()
    local a, b = socket.pair()
    local sel <close> = selector.new("epoll")
    local k = sel:register(a, READ | WRITE, "a")
    assert.equal(k, sel:get_key(a:fileno()))
    assert.equal(a, k.fileobj)
    a:close()
    assert.equal(k, sel:get_key(a))
    assert.equal(k, sel:unregister(a))
    local ok, err = pcall(sel.register, sel, a, READ)
    assert.is_false(ok); assert.matches("closed socket", err)
    b:close()
  end))

  it("strand.select with sockets: readable, writable, nothing exceptional", H.no_leaks(function()
    local a, b = socket.pair()
    local r, w, x = strand.select({ a, b }, { a }, { a, b }, 0)
    assert.same({}, r); assert.same({ a }, w); assert.same({}, x)
    H.run(function()
      strand.spawn(function() strand.sleep(0.05); b:send("ping") end)
      local r2 = strand.select({ a }, {}, { a }, 2)
      assert.equal(a, r2[1])
      assert.equal("ping", a:recv(10))
    end)
    a:close(); b:close()
  end))

  it("strand.select's xlist reports TCP urgent data (sent by a python3 child)", H.no_leaks(function()
    if not os.execute("command -v python3 >/dev/null 2>&1") then pending("python3 is not installed") return end
    local srv, port = require("support.net").listener()
    H.run(function()
      assert(os.execute(("python3 -c \"import socket, time; s = socket.create_connection(('127.0.0.1', %d)); "
        .. "s.send(b'!', socket.MSG_OOB); time.sleep(2)\" >/dev/null 2>&1 &"):format(port)))
      local conn = assert(srv:accept())
      local r, w, x = strand.select({}, {}, { conn }, 5)
      assert.same({}, r); assert.same({}, w)
      assert.equal(conn, x[1])
      conn:close()
    end)
    srv:close()
  end))

  it("EDGE: an epoll registration reports each change once", H.no_leaks(function()
    local a, b = socket.pair()
    local sel <close> = selector.new("epoll")
    local k = sel:register(a, READ | selector.EDGE)
    assert.equal(READ | selector.EDGE, k.events)
    assert(b:send("one"))
    assert.same({ [k.fd] = READ }, (ready(sel, 1)))
    local _, n = ready(sel, 0)                        -- not read, but no new edge
    assert.equal(0, n)
    assert(b:send("two"))
    assert.same({ [k.fd] = READ }, (ready(sel, 1)))
    assert.equal("onetwo", a:recv(10))
    k = sel:modify(a, READ)                           -- back to level-triggered
    assert.equal(READ, k.events)
    assert(b:send("three"))
    assert.same({ [k.fd] = READ }, (ready(sel, 0)))
    assert.same({ [k.fd] = READ }, (ready(sel, 0)))
    for _, backend in ipairs { "poll", "select" } do
      local s2 <close> = selector.new(backend)
      local ok, err = pcall(function() s2:register(a, READ | selector.EDGE) end)
      assert.is_false(ok); assert.matches("EDGE %(edge%-triggered%) needs the epoll backend", err)
    end
    a:close(); b:close()
  end))
end)

describe("selector failure conditions", function()
  it("refuses unknown backends", function()
    assert.has_error(function() selector.new("kqueue") end, "bad argument #1 to 'new' (invalid option 'kqueue')")
  end)

  for _, backend in ipairs(BACKENDS) do
    it(backend .. ": registering twice, unknown objects, bad events", H.no_leaks(function()
      local p = pipes(1)[1]
      local sel <close> = selector.new(backend)
      sel:register(p.r, READ)
      assert.has_error(function() sel:register(p.r, READ) end)
      local ok, err = pcall(sel.register, sel, p.r, WRITE)
      assert.is_false(ok); assert.matches("already registered", err)
      ok, err = pcall(sel.register, sel, fd_of(p.r), READ)          -- same fd, other object
      assert.is_false(ok); assert.matches("already registered", err)
      ok, err = pcall(sel.unregister, sel, p.w)
      assert.is_false(ok); assert.matches("is not registered", err)
      ok, err = pcall(sel.modify, sel, p.w, READ)
      assert.is_false(ok); assert.matches("is not registered", err)
      assert.is_nil(sel:get_key(p.w))
      for _, ev in ipairs { 0, 4, -1, 8 } do
        ok, err = pcall(function() sel:register(p.w, ev) end)
        assert.is_false(ok)
        assert.matches("bad argument #2 to 'register' %(invalid events: " .. tostring(ev):gsub("%-", "%%-"), err)
      end
      ok, err = pcall(function() sel:modify(p.r, 0) end)
      assert.is_false(ok); assert.matches("bad argument #2 to 'modify' %(invalid events: 0", err)
      assert.has_error(function() sel:register(p.w, "r") end)
      assert.has_error(function() sel:register(p.w, 1.5) end)
      close_pipes({ p })
    end))

    it(backend .. ": bad objects and file descriptors", H.no_leaks(function()
      local p = pipes(1)[1]
      local sel <close> = selector.new(backend)
      local ok, err = pcall(sel.register, sel, -1, READ)
      assert.is_false(ok); assert.matches("invalid file descriptor: %-1", err)
      ok, err = pcall(sel.register, sel, { fileno = function() return -1 end }, READ)
      assert.is_false(ok); assert.matches("invalid file descriptor: %-1 %(from fileno%)", err)
      ok, err = pcall(sel.register, sel, {}, READ)
      assert.is_false(ok); assert.matches("object with a fileno method expected, got table", err)
      ok, err = pcall(sel.register, sel, "3", READ)
      assert.is_false(ok); assert.matches("expected, got string", err)
      ok, err = pcall(sel.register, sel, 2.5, READ)
      assert.is_false(ok); assert.matches("must be an integer", err)
      local f = io.open("/dev/null")
      f:close()
      ok, err = pcall(sel.register, sel, f, READ)
      assert.is_false(ok); assert.matches("attempt to use a closed file", err)
      local g = io.open("/dev/null")
      local free = fd_of(g)
      g:close()
      ok, err = pcall(sel.register, sel, free, READ)              -- not an open fd
      assert.is_false(ok); assert.matches("cannot register fd " .. free, err)
      -- a file closed while registered can still be unregistered (found by identity)
      local q = pipes(1)[1]
      local k = sel:register(q.r, READ)
      q.r:close()
      assert.equal(k, sel:get_key(q.r))
      assert.equal(k, sel:unregister(q.r))
      close_pipes({ p, q })
    end))

    it(backend .. ": a closed selector refuses everything", function()
      local p = pipes(1)[1]
      local sel = selector.new(backend)
      sel:close()
      for _, call in ipairs {
        function() sel:register(p.r, READ) end, function() sel:modify(p.r, READ) end,
        function() sel:unregister(p.r) end, function() sel:get_key(p.r) end,
        function() sel:select(0) end, function() sel:get_map() end,
      } do
        local ok, err = pcall(call)
        assert.is_false(ok); assert.matches("attempt to use a closed selector", err)
      end
      assert.equal(0, #sel)
      close_pipes({ p })
    end)
  end

  it("epoll refuses files it cannot poll, poll and select take them", H.no_leaks(function()
    local f = assert(io.open("/dev/null"))
    local ep <close> = selector.new("epoll")
    local ok, err = pcall(ep.register, ep, f, READ)
    assert.is_false(ok); assert.matches("does not support polling", err)
    assert.equal(0, #ep)
    for _, b in ipairs { "poll", "select" } do
      local sel <close> = selector.new(b)
      local k = sel:register(f, READ | WRITE)
      assert.same({ [k.fd] = READ | WRITE }, (ready(sel, 1)))
    end
    f:close()
  end))

  it("the select backend refuses fds >= FD_SETSIZE, the others take them", H.no_leaks(function()
    local files, big = {}, nil
    local probe <close> = selector.new("poll")
    for _ = 1, 1100 do
      local f = assert(io.open("/dev/null"))
      files[#files + 1] = f
      local k = probe:register(f, READ)
      if k.fd >= 1024 then big = f; break end
    end
    assert.is_truthy(big, "could not get an fd >= 1024")
    local fd = probe:get_key(big).fd
    local sel <close> = selector.new("select")
    local ok, err = pcall(sel.register, sel, big, READ)
    assert.is_false(ok)
    assert.equal(("fd %d is too large for the select backend (FD_SETSIZE 1024): use epoll or poll"):format(fd),
      err:gsub("^.-:%d+: ", ""))
    assert.equal(0, #sel)
    assert.equal(READ, (ready(probe, 0))[fd])       -- poll takes it (and /dev/null is ready)
    probe:close()
    for _, f in ipairs(files) do f:close() end
  end))

  it("select backend: an fd closed while registered is reported ready, not raised", function()
    local p = pipes(1)[1]
    local sel <close> = selector.new("select")
    local fd = fd_of(p.r)
    sel:register(fd, READ)
    sel:register(p.w, WRITE)
    p.r:close()
    local got, n = ready(sel, 0)
    assert.equal(2, n)
    assert.same({ [fd] = READ, [fd_of(p.w)] = WRITE }, got)
    sel:unregister(fd)
    close_pipes({ p })
  end)

  it("two tasks cannot wait in the same selector at once", function()
    local p = pipes(1)[1]
    local sel <close> = selector.new("epoll")
    sel:register(p.r, READ)
    H.run(function()
      local a = strand.spawn(function() return ready(sel, 0.3) end)
      strand.sleep(0.02)
      local ok, err = pcall(ready, sel, 0.3)
      assert.is_false(ok); assert.matches("already", err)
      a:result()
    end)
    close_pipes({ p })
  end)

  it("strand.select refuses bad arguments", H.no_leaks(function()
    local p = pipes(1)[1]
    local ok, err = pcall(strand.select, "x", {}, {})
    assert.is_false(ok); assert.matches("bad argument #1 to '[%w.]*select' %(table expected", err)
    ok, err = pcall(strand.select, {}, {}, {}, -1)
    assert.is_false(ok); assert.matches("timeout must be non%-negative", err)
    ok, err = pcall(strand.select, {}, { p.w, {} }, {})
    assert.is_false(ok); assert.matches("bad argument #2 to '[%w.]*select' %(element 2: ", err)
    ok, err = pcall(strand.select, {}, {}, { -3 })
    assert.is_false(ok); assert.matches("bad argument #3 to '[%w.]*select' %(element 1: invalid file descriptor: %-3", err)
    local f = io.open("/dev/null"); f:close()
    ok, err = pcall(strand.select, { f }, {}, {})
    assert.is_false(ok); assert.matches("attempt to use a closed file", err)
    ok, err = pcall(strand.select, { 999999 }, {}, {}, 0)
    assert.is_false(ok); assert.matches("bad argument #1 to '[%w.]*select' %(element 1: bad file descriptor", err)
    close_pipes({ p })
  end))
end)

describe("the specs' fd check (H.no_leaks, H.fds)", function()
  it("counts in-process: never a transient fd of its own, exactly one leaked fd", function()
    for _ = 1, 200 do
      assert(pcall(H.no_leaks(function() end)))
    end
    local kept
    local ok, err = pcall(H.no_leaks(function() kept = assert(io.open("/dev/null")) end))
    assert.is_false(ok)
    assert.matches("^leaked 1 file descriptor%(s%): %d+ %-> /dev/null$", err)
    kept:close()
    local fds, n = H.fds()
    local m = 0
    for fd, target in pairs(fds) do
      m = m + 1
      assert.is_string(target)
      assert.is_true(fd >= 0)
    end
    assert.equal(n, m)
    assert.equal(n, H.fd_count())
  end)
end)
