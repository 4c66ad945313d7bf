-- spec/uring_spec.lua — what the io_uring prototype (STRAND_POLLER=uring, docs/uring.md) must keep
-- true of stream sockets, checked under every poller: exact echoes across buffer sizes, close and
-- timeout while a request is in flight, a cancelled sendall's request finishing before the next.
local strand = require "strand"
local socket = require "strand.socket"
local core = require "strand.core"
local H = require "support.helper"

local PATTERN = "0123456789abcdef"

-- A stream of n bytes of PATTERN (n a multiple of 16).
local function pattern(n) return PATTERN:rep(n // #PATTERN) end

-- Each side reads twice after waiting, so that a backend arms what it arms for a reader (the io_uring
-- prototype: a multishot recv, and SEND SQEs for that socket).
local function warm(a, b)
  for _, pair in ipairs { { a, b }, { b, a } } do
    local from, to = pair[1], pair[2]
    for i = 1, 2 do
      local r = strand.spawn(function() return to:recv(100) end)
      strand.sleep(0.01)                          -- r is waiting
      assert(from:sendall("w" .. i))
      local ok, d = r:join()
      assert.is_true(ok)
      assert.equal("w" .. i, d)
    end
  end
end

-- Reads s until it closes; returns everything.
local function read_all(s)
  local parts = {}
  while true do
    local d = s:recv(65536)
    if not d then break end
    parts[#parts + 1] = d
  end
  return table.concat(parts)
end

describe("stream sockets [" .. core.backend() .. "]", function()
  H.guard()

  it("echo many connections exactly, with messages smaller and larger than a provided buffer", H.checked(function()
    H.run(function()
      local srv = assert(socket.listen("127.0.0.1", 0))
      local _, port = srv:getsockname()
      local conns, sizes = 20, { 1, 64, 100, 2047, 2048, 2049, 5000, 70000 }
      local server = strand.spawn(function()
        local handlers = {}
        for i = 1, conns do
          local c = assert(srv:accept())
          handlers[i] = strand.spawn(function()
            while true do
              local d = c:recv(65536)
              if not d then break end
              assert(c:sendall(d))
            end
            c:close()
          end)
        end
        for _, h in ipairs(handlers) do assert(h:join()) end
      end)
      local clients = {}
      for i = 1, conns do
        clients[i] = strand.spawn(function()
          local c = assert(socket.connect("127.0.0.1", port))
          for r = 1, #sizes do
            local msg = (string.char(65 + (i + r) % 26)):rep(sizes[r])
            assert(c:sendall(msg))
            local got = assert(c:read(#msg))
            assert.equal(msg, got)
          end
          c:close()
        end)
      end
      for _, t in ipairs(clients) do assert(t:join()) end
      assert(server:join())
      srv:close()
    end)
  end))

  it("a reader waiting when another task closes the socket gets 'closed'", H.checked(function()
    H.run(function()
      local a, b = assert(socket.pair())
      warm(a, b)
      local reader = strand.spawn(function() return b:recv(10) end)
      strand.sleep(0.01)
      b:close()
      local ok, d, err = reader:join()
      assert.is_true(ok)
      assert.is_nil(d)
      assert.equal("closed", err)
      a:close()
    end)
  end))

  it("a sendall that times out on a peer that does not read: its bytes stay valid until sent", H.checked(function()
    H.run(function()
      local a, b = assert(socket.pair())
      warm(a, b)
      local big = pattern(8 * 1024 * 1024)
      a:settimeout(0.2)
      local ok, err, sent = a:sendall(big)
      assert.is_nil(ok)
      assert.equal("timeout", err)
      assert.is_true(sent < #big)
      big = nil                                   -- luacheck: ignore
      for _ = 1, 3 do collectgarbage() end        -- the string must not be what the kernel reads
      a:settimeout(nil)
      local got
      local reader = strand.spawn(function() got = read_all(b) end)
      strand.sleep(0.05)
      a:close()
      assert(reader:join())
      -- what the peer got is the start of the pattern, at least the bytes sendall counted (a
      -- request cancelled by the timeout may have sent more before it stopped)
      assert.is_true(#got >= sent, ("peer got %d, sendall counted %d"):format(#got, sent))
      assert.equal(pattern(#got - #got % 16), got:sub(1, #got - #got % 16))
      assert.equal(PATTERN:sub(1, #got % 16), got:sub(#got - #got % 16 + 1))
      b:close()
    end)
  end))

  it("a sendall cancelled in flight: the next sendall's bytes follow, its result is its own", H.checked(function()
    H.run(function()
      local a, b = assert(socket.pair())
      warm(a, b)
      local big = pattern(4 * 1024 * 1024)
      local writer = strand.spawn(function() return a:sendall(big) end)
      strand.sleep(0.05)                           -- blocked: the peer does not read
      writer:cancel()
      assert.is_false((writer:join()))
      local got
      local reader = strand.spawn(function() got = read_all(b) end)
      assert.is_true(a:sendall("END"))
      a:close()
      assert(reader:join())
      b:close()
      assert.equal("END", got:sub(-3))
      local head = got:sub(1, -4)
      assert.is_true(#head <= #big)
      assert.equal(big:sub(1, #head), head)
    end)
  end))

  it("messages that arrive while nobody reads are all read later, in order", H.checked(function()
    H.run(function()
      local a, b = assert(socket.pair())
      warm(a, b)
      local r = strand.spawn(function() return b:recv(100) end)
      strand.sleep(0.01)                           -- b's reading is armed again, then nobody reads
      assert(a:sendall("first"))
      assert.equal("first", select(2, r:join()))
      local want = {}
      for i = 1, 40 do                             -- separate arrivals (more than a socket's budget)
        local m = ("m%03d;"):format(i)
        want[#want + 1] = m
        assert(a:sendall(m))
        strand.sleep(0.002)
      end
      a:close()
      assert.equal(table.concat(want), read_all(b))
      b:close()
    end)
  end))

  -- { flow control, disarming, fallback (docs/uring.md 3): under io_uring the pool's figures are
  -- checked too; under epoll/poll the same behaviour is what the kernel gives anyway.

  -- A connected TCP pair over 127.0.0.1: client, server side.
  local function tcp_pair()
    local l = assert(socket.listen("127.0.0.1", 0))
    local _, port = l:getsockname()
    local c = assert(socket.connect("127.0.0.1", port))
    local s = assert(l:accept())
    l:close()
    return c, s
  end

  -- The pool's buffers held by sockets (received, not read yet), or nil when not on io_uring.
  local function held()
    local st = core._uring.stats()
    return st and st.nbuf > 0 and st.nbuf - st.free or nil, st
  end

  -- `to` is read through the io_uring fast path from now on, its multishot recv armed: a read
  -- that waits (registers the fd), then one that finds nothing queued (arms it) and waits.
  local function arm(from, to)
    for i = 1, 2 do
      local r = strand.spawn(function() return to:recv(100) end)
      strand.sleep(0.01)                          -- r is waiting
      assert(from:sendall("go" .. i))
      assert.equal("go" .. i, select(2, r:join()))
    end
    local st = core._uring.stats()
    if st then assert.is_truthy(st.recv == "multishot-limited" or st.recv == "single-shot", st.recv) end
  end

  -- Bytes n.. of a counting stream (each 8-byte cell is its own offset, so a gap or a repeat shows).
  local function stream(from, n)
    local t = {}
    for i = from // 8, (from + n - 1) // 8 do t[#t + 1] = ("%7d|"):format(i % 10000000) end
    local sstr = table.concat(t)
    return sstr:sub(from % 8 + 1, from % 8 + n)
  end

  it("a sender that blasts at a slow reader meets a full socket; the pool is not drained; others are served", H.checked(function()
    H.run(function()
      local ca, sa = tcp_pair()
      local cb, sb = tcp_pair()
      arm(ca, sa)
      arm(cb, sb)
      -- the sender loops on nonblocking sends without ever letting the loop wait: the kernel runs
      -- a multishot at every syscall return, so only a limit the kernel itself applies holds here
      ca:setblocking(false)
      local sent, chunk, limit = 0, 65536, 256 * 1024 * 1024
      local hit
      while sent < limit do
        local piece = stream(sent, chunk)
        local n, err = ca:send(piece)
        if not n then
          assert.equal("wouldblock", err)
          hit = true
          break
        end
        sent = sent + n
        if n < #piece then hit = true break end
      end
      assert.is_true(hit, "the sender never met a full socket: nothing pushes back")
      local h, st = held()
      if h then
        assert.is_true(h <= st.pending_max, ("one socket holds %d of %d buffers"):format(h, st.nbuf))
      end
      strand.sleep(0.05)                          -- the loop reaps: still within the socket's budget
      h, st = held()
      if h then
        assert.is_true(h <= st.pending_max + st.mshot_bufs, ("one socket holds %d of %d buffers"):format(h, st.nbuf))
        assert.equal(0, st.enobufs)
      end
      -- the other connection is served while the first is not read
      for i = 1, 20 do
        assert(cb:sendall("ping" .. i))
        assert.equal("ping" .. i, sb:read(#("ping" .. i)))
      end
      -- the slow reader gets every byte, in order; the sender finishes with blocking sends
      local got = 0
      local reader = strand.spawn(function()
        while true do
          local d = sa:recv(4096)
          if not d then return end
          assert.equal(stream(got, #d), d)
          got = got + #d
          if got % 65536 < 4096 then strand.sleep(0) end
        end
      end)
      ca:setblocking(true)
      assert(ca:sendall(stream(sent, 100000)))
      sent = sent + 100000
      ca:close()
      assert(reader:join())
      assert.equal(sent, got)
      h = held()
      if h then assert.equal(0, h) end
      sa:close(); cb:close(); sb:close()
    end)
  end))

  it("fileno(): what was already received is read first, and nothing more is taken behind its back", H.checked(function()
    H.run(function()
      local selector = require "strand.selector"
      local c, s = tcp_pair()
      arm(c, s)
      assert(c:sendall("abc"))
      if held() then                               -- the multishot took it: queued in the pool
        assert.is_true(H.wait_until(function() return held() > 0 end, 5))
      end
      local fd = s:fileno()
      if held() then assert.equal(3, s:pending()) end   -- moved to the read buffer
      assert(c:sendall("def"))
      local sel = selector.new("poll")
      sel:register(fd, selector.READ)
      local ready = false
      for _ = 1, 50 do                              -- bounded: 50 x 0.1 s
        for key in sel:select(0.1) do if key.fd == fd then ready = true end end
        if ready then break end
      end
      sel:unregister(fd)
      sel:close()
      assert.is_true(ready, "the kernel socket no longer holds what came after fileno()")
      assert.equal("abcdef", s:read(6))
      assert(c:sendall("gh"))
      assert.equal("gh", s:read(2))                -- reads still work (by readiness)
      c:close()
      assert.is_nil(s:read(1))
      s:close()
    end)
  end))

  it("setblocking(false) after fast reads: queued bytes first, then wouldblock, then new bytes", H.checked(function()
    H.run(function()
      local c, s = tcp_pair()
      arm(c, s)
      assert(c:sendall("abc"))
      if held() then assert.is_true(H.wait_until(function() return held() > 0 end, 5)) end
      s:setblocking(false)
      local got = ""
      assert.is_true(H.wait_until(function()
        local d = s:recv(10)
        if d then got = got .. d end
        return #got >= 3
      end, 5))
      assert.equal("abc", got)
      local d, err = s:recv(10)
      assert.is_nil(d)
      assert.equal("wouldblock", err)
      assert(c:sendall("xyz"))
      got = ""
      assert.is_true(H.wait_until(function()
        local x = s:recv(10)
        if x then got = got .. x end
        return #got >= 3
      end, 5))
      assert.equal("xyz", got)
      s:setblocking(true)
      local r = strand.spawn(function() return s:read(2) end)
      strand.sleep(0.01)
      assert(c:sendall("qr"))
      assert.equal("qr", select(2, r:join()))
      c:close(); s:close()
    end)
  end))

  it("a forked child reads first what the parent's multishot had already taken", H.checked(function()
    H.run(function()
      local process = require "strand.process"
      local c, s = tcp_pair()
      arm(c, s)
      assert(c:sendall("abc"))
      if held() then assert.is_true(H.wait_until(function() return held() > 0 end, 5)) end
      -- (only what was queued before the fork: bytes sent later go to whichever process reads
      -- first — the parent's multishot is still armed, as two readers of one socket race anyway)
      local p = process.start(function() return assert(s:read(3)) end)
      local ok, v = p:join(20)
      assert.is_true(ok, tostring(v))
      assert.equal("abc", v)
      c:close(); s:close()
    end)
  end))

  -- After a fork both processes hold the socket; as under epoll, what arrives later stays in the
  -- kernel until one of them reads: a process that does not read takes nothing.
  it("after a fork, a parent that does not read takes nothing: its child reads what comes next", H.checked(function()
    H.run(function()
      local process = require "strand.process"
      local c, s = tcp_pair()
      arm(c, s)                                   -- the parent's multishot recv is armed on s
      local go1, go2 = assert(socket.pair())
      local p = process.start(function()
        assert(go2:read(1))                       -- the parent has sent and waited meanwhile
        s:settimeout(10)
        return assert(s:read(5))
      end)
      assert(c:sendall("hello"))
      for _ = 1, 5 do strand.sleep(0.01) end       -- the parent's loop waits: its ring runs
      assert(go1:sendall("g"))
      local ok, v = p:join(30)
      assert.is_true(ok, tostring(v))
      assert.equal("hello", v)
      c:close(); s:close(); go1:close(); go2:close()
    end)
  end))

  it("after a fork, a child that read the socket and stopped takes nothing: the parent reads on", H.checked(function()
    H.run(function()
      local process = require "strand.process"
      local c, s = tcp_pair()
      local g1, g2 = assert(socket.pair())
      local p = process.start(function()
        for i = 1, 2 do                           -- two reads that wait: a multishot, if any
          assert(g2:sendall("r"))
          assert(s:read(2) == "a" .. i)
        end
        assert(g2:sendall("k"))
        g2:settimeout(30)
        return g2:read(1)                        -- waits here (its loop's ring runs) till the end
      end)
      for i = 1, 2 do
        assert.equal("r", g1:read(1))
        strand.sleep(0.01)                        -- the child is waiting in its read
        assert(c:sendall("a" .. i))
      end
      assert.equal("k", g1:read(1))
      assert(c:sendall("zz"))
      strand.sleep(0.05)                          -- the child's loop waits meanwhile
      s:settimeout(10)
      assert.equal("zz", s:read(2))
      assert(g1:sendall("d"))
      local ok, v = p:join(30)
      assert.is_true(ok, tostring(v))
      assert.equal("d", v)
      c:close(); s:close(); g1:close(); g2:close()
    end)
  end))

  it("after a fork, the parent still reads on a socket the child never touches", H.checked(function()
    H.run(function()
      local process = require "strand.process"
      local c, s = tcp_pair()
      arm(c, s)
      local p = process.start(function() return 7 end)
      local ok, v = p:join(30)
      assert.is_true(ok, tostring(v))
      assert.equal(7, v)
      for i = 1, 20 do                            -- now by readiness + recv(2): every byte, in order
        local r = strand.spawn(function() return s:read(#("m" .. i)) end)
        if i % 2 == 0 then strand.sleep(0.005) end
        assert(c:sendall("m" .. i))
        assert.equal("m" .. i, select(2, r:join()))
      end
      local st = core._uring.stats()
      if st then assert.equal(st.nbuf, st.free) end   -- nothing queued in the pool
      c:close(); s:close()
    end)
  end))

  it("the ring's mappings are left out of a forked child (MADV_DONTFORK: no copy at fork, no unmap)", H.checked(function()
    -- the ring's mappings in /proc/self/smaps: how many, and how many fork leaves out ("dc")
    local function rings()
      local n, dc, inring = 0, 0, false
      for l in io.lines("/proc/self/smaps") do
        if l:match("^%x+%-%x+ ") then
          inring = l:find("[io_uring]", 1, true) ~= nil
          if inring then n = n + 1 end
        elseif inring and l:match("^VmFlags:") and (" " .. l:sub(9) .. " "):find(" dc ", 1, true) then
          dc = dc + 1
        end
      end
      return n, dc
    end
    strand.sleep(0)                                -- this process's loop (and ring, if uring) exists
    local n, dc = rings()
    if core.backend() == "uring" then
      assert.is_true(n >= 1)
      assert.equal(n, dc)
    else
      assert.equal(0, n)
    end
    local process = require "strand.process"
    local p = process.start(function() return (rings()) end)
    assert.same({ true, 0, n = 2 }, table.pack(p:join(H.TIMEOUT)))
    assert.same({ n, dc }, { rings() })            -- the parent's stay
  end))

  it("shutdown('w') of a fast-path reader: the peer sees the end, the reader still reads", H.checked(function()
    H.run(function()
      local c, s = tcp_pair()
      arm(c, s)
      assert(s:shutdown("w"))
      assert.is_nil(c:read(1))
      assert(c:sendall("after"))
      assert.equal("after", s:read(5))
      c:close()
      assert.is_nil(s:read(1))
      s:close()
    end)
  end))
end)

describe("io_uring fallback and close", function()
  H.guard()

  local child = [[
    local strand = require "strand"
    local socket = require "strand.socket"
    local core = require "strand.core"
    strand.run(function()
      local a, b = assert(socket.pair())
      for _, pr in ipairs { { a, b }, { a, b }, { b, a }, { b, a } } do   -- both on the fast path
        local r = strand.spawn(function() return pr[2]:recv(10) end)
        strand.sleep(0.01)
        assert(pr[1]:sendall("hi"))
        assert(select(2, r:join()) == "hi")
      end
      if os.getenv("INFLIGHT") then             -- sends and a recv in flight when the state closes
        local big = ("x"):rep(4 * 1024 * 1024)
        strand.spawn(function() a:sendall(big) end)
        strand.spawn(function() b:recv(10) end)
        strand.sleep(0.05)
        print("backend " .. core.backend())
        os.exit(0, true)                          -- lua_close with both in flight
      end
      a:close(); b:close()
    end)
    print("backend " .. core.backend())
  ]]

  it("io_uring refused at setup (STRAND_URING_REFUSE=1): the loop runs on epoll", function()
    local out, ok = H.lua(child, "STRAND_POLLER=uring STRAND_URING_REFUSE=1")
    assert.is_true(ok, out)
    assert.equal("backend epoll\n", out)
    out, ok = H.lua(child, "STRAND_POLLER=uring STRAND_URING_REFUSE=0")
    assert.is_true(ok, out)
    assert.is_truthy(out == "backend uring\n" or out == "backend epoll\n", out)   -- a kernel may refuse
  end)

  it("no poller named: the default (io_uring where the kernel allows it); STRAND_POLLER still forces", function()
    -- the default is uring or epoll (loop.c STRAND_DEFAULT_POLLER); refused, it is epoll, silently
    local out, ok = H.lua(child, "STRAND_POLLER= STRAND_URING_REFUSE=1")
    assert.is_true(ok, out)
    assert.equal("backend epoll\n", out)
    out, ok = H.lua(child, "STRAND_POLLER=")
    assert.is_true(ok, out)
    assert.is_truthy(out == "backend uring\n" or out == "backend epoll\n", out)
    for _, name in ipairs { "epoll", "poll" } do
      out, ok = H.lua(child, "STRAND_POLLER=" .. name)
      assert.is_true(ok, out)
      assert.equal("backend " .. name .. "\n", out)
    end
  end)

  it("under valgrind no poller named is epoll (memcheck stalls other threads in io_uring_enter)", function()
    local vg = io.popen("command -v valgrind"):read("l")
    if not vg then pending("valgrind is not installed"); return end
    if (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true) then   -- make test-asan's preload
      pending("an ASan build does not run under valgrind"); return
    end
    local f = os.tmpname()
    local h = io.open(f, "w")
    h:write('local core = require "strand.core"; io.write("backend ", core.backend(), "\\n")')
    h:close()
    local p = io.popen("STRAND_POLLER= timeout 300 valgrind -q --error-exitcode=99 lua5.4 " .. f .. " 2>&1")
    local out = p:read("a")
    local ok = p:close()
    os.remove(f)
    assert.is_true(ok, out)
    assert.equal("backend epoll\n", out)
  end)

  it("the state closes with a sendall and a recv in flight: a clean exit", function()
    local out, ok = H.lua(child, "STRAND_POLLER=uring INFLIGHT=1")
    assert.is_true(ok, out)
    assert.is_truthy(out:match("^backend %a+\n$"), out)
  end)
  -- }
end)
