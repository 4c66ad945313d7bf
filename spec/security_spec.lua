-- Security: untrusted bytes are data, never code. strand.serial.decode refuses bytecode, modules
-- and the globals table unless {functions=true}; forged object references are refused; data read
-- from a socket is never loaded as code; SIGPIPE never kills a strand program.
local strand = require "strand"
local serial = require "strand.serial"
local H = require "support.helper"

-- Hand-made encodings (format in csrc/serial.c): version 1, header, count, values. The type
-- tags are read from real encodings, so that the spec follows the format.
local function tag_of(v, opts) return serial.encode(v, opts):byte(4) end
local FN = { functions = true }
local T = {
  TABLE = tag_of({}), FUNC = tag_of(function() end, FN), GLOBALS = tag_of(_G, FN),
  MODULE = tag_of(string, FN), MODFIELD = tag_of(string.format, FN),
}
T.OBJECT = T.MODFIELD + 1   -- no strand object type may exist yet to encode one from
local function varint(n)
  local out = {}
  repeat
    local b = n & 0x7f
    n = n >> 7
    out[#out + 1] = string.char(n > 0 and (b | 0x80) or b)
  until n == 0
  return table.concat(out)
end
local function str(s) return varint(#s) .. s end
local function u32(n) return string.pack("<I4", n) end
local function one(value, hdr) return "\1" .. string.char(hdr or 0) .. "\1" .. value end
local function func(bytecode, nups)
  return string.char(T.FUNC) .. u32(#bytecode) .. bytecode .. string.char(nups or 0)
end

describe("security: decoding untrusted bytes", function()
  H.guard()

  -- The payload sets a global when it runs; nothing in decode may ever run it.
  local PWNED = "strand_security_pwned"
  local payload = string.dump(load("_G['" .. PWNED .. "'] = true; return 'ran'"))

  before_each(function() _G[PWNED] = nil end)

  it("refuses a function unless {functions=true} is given", function()
    local enc = serial.encode(function() return 1 end, { functions = true })
    local v, err = serial.decode(enc)
    assert.is_nil(v)
    assert.matches("functions are not allowed", err)
    assert.is_function(serial.decode(enc, { functions = true }))
    v, err = serial.decode(enc, { functions = false })
    assert.is_nil(v); assert.matches("not allowed", err)
  end)

  it("refuses a crafted bytecode payload (raw, as a FUNC value, nested deep, in a key)", function()
    local crafted = {
      { "raw bytecode", payload, "unknown version" },
      { "a FUNC value", one(func(payload, 1)), "functions are not allowed" },
      { "nested two tables deep", "\1\0\1" .. string.char(T.TABLE) .. u32(1) .. u32(0)
        .. string.char(T.TABLE) .. u32(0) .. u32(1) .. "\x81k" .. func(payload, 1), "functions are not allowed" },
      { "as a table key", "\1\0\1" .. string.char(T.TABLE) .. u32(0) .. u32(1) .. func(payload, 1) .. "\xc1",
        "functions are not allowed" },
      { "with the globals as upvalue", one(func(payload, 1) .. string.char(T.GLOBALS)), "functions are not allowed" },
    }
    for _, c in ipairs(crafted) do
      local v, err = serial.decode(c[2])
      assert.is_nil(v, c[1])
      assert.is_string(err, c[1])
      assert.is_truthy(err:find(c[3], 1, true), c[1] .. ": " .. err)
    end
    assert.is_nil(_G[PWNED])
  end)

  it("never runs what it loads, even with {functions=true}", function()
    local f = serial.decode(one(func(payload, 1) .. string.char(T.GLOBALS)), { functions = true })
    assert.is_function(f)
    assert.is_nil(_G[PWNED])             -- loaded, not run
    assert.equal("ran", f())
    assert.is_true(_G[PWNED])
  end)

  it("refuses modules, module functions and the globals table unless {functions=true}", function()
    local cases = {
      one(string.char(T.MODULE) .. str("os")),
      one(string.char(T.MODFIELD) .. str("os\0execute")),
      one(string.char(T.GLOBALS)),
      one(string.char(T.MODULE) .. str("strand_security_evil_module")),
    }
    package.preload.strand_security_evil_module = function() _G[PWNED] = true; return {} end
    for i, bytes in ipairs(cases) do
      local v, err = serial.decode(bytes)
      assert.is_nil(v, i); assert.is_truthy(err:find("not allowed", 1, true), err)
    end
    assert.is_nil(_G[PWNED])             -- require was never called
    package.preload.strand_security_evil_module = nil
  end)

  it("refuses forged strand object references (no pointer is taken on trust)", function()
    for _, name in ipairs { "strand.queue", "strand.lock", "strand.socket", "x" } do
      for _, ptr in ipairs { 0, 1, 0x7fffdeadbeef, -1 } do
        local bytes = one(string.char(T.OBJECT) .. str(name) .. string.pack("<i8i8", ptr, 0), 1)
        local v, err = serial.decode(bytes)
        assert.is_nil(v)
        assert.matches("malformed serial data", err)
      end
    end
  end)

  it("a decoded string that holds bytecode stays a string", function()
    local v = serial.decode(serial.encode({ code = payload }))
    assert.equal(payload, v.code)
    assert.is_nil(_G[PWNED])
  end)

  it("a 64 KiB hostile payload cannot make decode allocate more than 16 MiB", function()
    -- 199 nested tables, each claiming as many array slots as there are bytes left: a decoder
    -- that pre-allocates what the header claims allocates 199 x 16 x 64 KiB (~200 MiB) before
    -- it finds the data missing.
    local N = 65536
    local parts = { "\1\0\1" }
    local len = 3
    for _ = 1, 199 do
      len = len + 9
      parts[#parts + 1] = string.char(T.TABLE) .. u32(N - len) .. u32(0)
    end
    parts[#parts + 1] = ("\xc0"):rep(N - len)
    local bytes = table.concat(parts)
    assert.equal(N, #bytes)
    collectgarbage(); collectgarbage()
    collectgarbage("stop")
    local before = collectgarbage("count")
    local v, err = serial.decode(bytes)
    local grew = (collectgarbage("count") - before) / 1024
    collectgarbage("restart"); collectgarbage()
    assert.is_nil(v); assert.is_string(err)
    assert.is_true(grew < 16, ("decode allocated %.0f MiB for %d bytes"):format(grew, N))
  end)
end)

local has_socket, socket = pcall(require, "strand.socket")
if not has_socket then return end

describe("security: sockets", function()
  H.guard()

  local PWNED = "strand_security_pwned"

  it("data read from a socket is never loaded as code, by any read", function()
    _G[PWNED] = nil
    local code = string.dump(load("_G['" .. PWNED .. "'] = true"))
    local encoded = serial.encode(load("_G['" .. PWNED .. "'] = true"), { functions = true })
    H.run(function()
      local c, s = require("support.net").tcp_pair()
      s:settimeout(5)
      local got = {}
      for _, payload in ipairs { code, encoded } do
        c:write(payload)
        got[#got + 1] = s:read(#payload)
        c:send_frame(payload)
        got[#got + 1] = s:recv_frame()
        c:write(payload)
        local parts, n = {}, 0
        while n < #payload do
          local r = assert(s:recv(#payload - n))
          parts[#parts + 1] = r; n = n + #r
        end
        got[#got + 1] = table.concat(parts)
      end
      local source = "_G['" .. PWNED .. "'] = true"
      c:write(source, "\n", source, "\n")
      local lines = {}
      for _ = 1, 2 do lines[#lines + 1] = s:read("l") end
      assert.same({ source, source }, lines)
      c:write(code)
      c:close()
      got[#got + 1] = s:read("a")
      s:close()
      local u1, u2 = assert(socket.udp()), assert(socket.udp())
      assert(u1:bind("127.0.0.1", 0))
      local _, uport = u1:getsockname()
      assert(u2:sendto(encoded, "127.0.0.1", uport))
      got[#got + 1] = u1:recvfrom(65536)
      u1:close(); u2:close()
      for i, v in ipairs(got) do
        assert.equal("string", type(v), "read #" .. i)
        assert.is_true(v == code or v == encoded, "read #" .. i)
        local dv, err = serial.decode(v)       -- what a careless receiver would do
        assert.is_nil(dv)
        assert.is_string(err)
      end
      assert.equal(8, #got)
    end)
    assert.is_nil(_G[PWNED])
  end)

  it("SIGPIPE never kills a strand program (writes to a gone peer, and a raw SIGPIPE)", function()
    local out, ok = H.lua([[
      local strand = require "strand"
      local socket = strand.socket              -- loaded lazily, as a program would
      strand.run(function()
        for _, kind in ipairs { "stream", "dgram" } do
          local a, b = socket.pair(kind)
          b:close()
          for _ = 1, 3 do
            print(kind, a:send("x"))
            print(kind, a:sendall(("y"):rep(100000)))
            print(kind, a:write("z"))
          end
          a:close()
        end
        local path = os.tmpname()
        local f = io.open(path, "wb"); f:write(("f"):rep(1 << 20)); f:close()
        local a, b = socket.pair()
        b:close()
        print("sendfile", a:sendfile(path))
        a:close()
        os.remove(path)
      end)
      local f = io.open("/proc/self/stat"); local pid = f:read("n"); f:close()
      os.execute("kill -PIPE " .. pid)
      print("survived")
    ]])
    assert.truthy(ok, out)
    assert.matches("survived", out)
    -- every write failed with a message (none succeeded, none raised)
    local n = 0
    for line in out:gmatch("[^\n]+") do
      if line:match("^stream\t") or line:match("^dgram\t") or line:match("^sendfile\t") then
        assert.matches("^%a+\tnil\t%a[%a ]*\t", line)
        n = n + 1
      end
    end
    assert.equal(19, n)
  end)

end)
