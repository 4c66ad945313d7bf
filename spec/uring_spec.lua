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
end)
