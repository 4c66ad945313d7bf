-- spec/serial_spec.lua — strand.serial: copying values as flat byte strings.
local serial = require "strand.serial"

local FN = { functions = true }

local function copy(v) return assert(serial.decode(serial.encode(v))) end
local function fcopy(v) return assert(serial.decode(serial.encode(v, FN), FN)) end
local function bits(x) return string.pack("<d", x) end

-- busted runs specs in an environment of its own: compile code that must see the real globals
local G = debug.getregistry()[2]
local function compile(src) return assert(load(src, "=compiled", "t", G))() end

-- a C function no loaded module exposes
local function lonely_cfunction() return string.gmatch("", "") end

describe("strand.serial", function()
  describe("scalars", function()
    it("round-trips nil and booleans", function()
      assert.is_nil(serial.decode(serial.encode(nil)))
      assert.equal(1, select("#", serial.decode(serial.encode(nil))))
      assert.is_true(copy(true))
      assert.is_false((serial.decode(serial.encode(false))))
    end)

    it("round-trips integers exactly, keeping the subtype", function()
      for _, v in ipairs { 0, 1, 63, 64, 127, 128, -1, -64, 300, 1 << 40, -(1 << 40),
                           math.maxinteger, math.mininteger, math.mininteger + 1 } do
        local r = copy(v)
        assert.equal(v, r)
        assert.equal("integer", math.type(r))
      end
    end)

    it("round-trips floats bit-exactly", function()
      for _, v in ipairs { 0.0, 1.0, -2.5, 1e300, 5e-324, math.pi, 2^63, math.huge, -math.huge } do
        local r = copy(v)
        assert.equal("float", math.type(r))
        assert.equal(bits(v), bits(r))
      end
      assert.equal(-math.huge, 1 / copy(-0.0))
      assert.equal(math.huge, 1 / copy(0.0))
      local nan = copy(0 / 0)
      assert.is_true(nan ~= nan)
      local payload = string.unpack("<d", string.pack("<i8", 0x7ff0000000012345))
      assert.equal(bits(payload), bits(copy(payload)))
      local negnan = string.unpack("<d", string.pack("<i8", -0x0008000000000001))
      assert.equal(bits(negnan), bits(copy(negnan)))
    end)

    it("round-trips binary strings", function()
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      all = table.concat(all)
      for _, s in ipairs { "", "a", "\0", "a\0b\0", all, ("x"):rep(63), ("y"):rep(64),
                           ("\0\255"):rep(50000) } do
        assert.equal(s, copy(s))
      end
    end)
  end)

  describe("tables", function()
    it("round-trips empty, nested and mixed tables", function()
      assert.same({}, copy({}))
      local t = { 1, "two", 3.5, { a = { b = { c = "deep" } } }, [10] = "ten", [-1] = "neg",
                  [1.5] = "float key", [true] = "bool key", x = false, ["with space"] = 1 }
      assert.same(t, copy(t))
    end)

    it("round-trips large array and hash parts", function()
      local t = {}
      for i = 1, 5000 do t[i] = i % 7 == 0 and ("s" .. i) or i * 1.5 end
      for i = 1, 5000 do t["k" .. i] = { i } end
      local r = copy(t)
      assert.same(t, r)
    end)

    it("keeps shared references shared", function()
      local shared = { "shared" }
      local r = copy { a = shared, b = shared, list = { shared, shared }, [shared] = shared }
      assert.equal(r.a, r.b)
      assert.equal(r.a, r.list[1])
      assert.equal(r.a, r.list[2])
      assert.equal(r.a, r[r.a])
      assert.same({ "shared" }, r.a)
    end)

    it("keeps cycles", function()
      local t = { name = "t" }
      t.self = t
      local a, b = { name = "a" }, { name = "b" }
      a.b, b.a = b, a
      t.pair = a
      local r = copy(t)
      assert.equal(r, r.self)
      assert.equal(r.pair, r.pair.b.a)
      assert.equal("b", r.pair.b.name)
    end)

    it("copies rather than sharing with the sender", function()
      local t = { 1 }
      local r = copy(t)
      assert.are_not.equal(t, r)
      r[1] = 2
      assert.equal(1, t[1])
    end)

    it("accepts nesting up to 200 levels", function()
      local t = {}
      local cur = t
      for _ = 1, 199 do cur.next = {}; cur = cur.next end
      local r = copy(t)
      local depth = 0
      while r do depth = depth + 1; r = r.next end
      assert.equal(200, depth)
    end)
  end)

  describe("functions", function()
    it("copies a closure with its upvalues", function()
      local function counter()
        local n = 0
        return function() n = n + 1; return n end
      end
      local c = counter()
      c()
      local r = fcopy(c)
      assert.equal(2, r())
      assert.equal(3, r())
      assert.equal(2, c())        -- the copy is independent
    end)

    it("copies recursive functions and functions in tables", function()
      local function fact(n) return n <= 1 and 1 or n * fact(n - 1) end
      local t = fcopy { f = fact, g = function(x) return x * 2 end }
      assert.equal(120, t.f(5))
      assert.equal(8, t.g(4))
    end)

    it("copies a recursive function given alone and keeps one function used twice", function()
      local function fib(n) return n < 2 and n or fib(n - 1) + fib(n - 2) end
      local r = fcopy(fib)
      assert.equal(55, r(10))
      assert.equal(r, select(2, debug.getupvalue(r, 1)))
      local t = fcopy { fib, fib, { fib } }
      assert.equal(t[1], t[2])
      assert.equal(t[1], t[3][1])
    end)

    it("keeps upvalues shared between closures copied together", function()
      local n = 0
      local function inc() n = n + 1 end
      local function get() return n end
      local r = fcopy { inc = inc, get = get }
      r.inc(); r.inc()
      assert.equal(2, r.get())
      assert.equal(0, n)
    end)

    it("rebinds _ENV to the receiver's globals", function()
      local f = compile [[return function(x) return string.format("%05d", x), type(print) end]]
      local r = fcopy(f)
      assert.same({ "00042", "function" }, { r(42) })
      local name, env = debug.getupvalue(r, 1)
      assert.equal("_ENV", name)
      assert.equal(G, env)
      -- an environment that is not the globals table is copied like any table
      local sandbox = { x = 7 }
      local h = load("return x", "=sandboxed", "t", sandbox)
      assert.equal(7, fcopy(h)())
      local _, env2 = debug.getupvalue(fcopy(h), 1)
      assert.are_not.equal(sandbox, env2)
    end)

    it("sends loaded modules and their functions by name", function()
      local s = require "strand.serial"
      local f = function(v) return s.decode(s.encode(v)) end
      local r = fcopy(f)
      assert.same({ 1, 2 }, r({ 1, 2 }))
      assert.equal(s, select(2, debug.getupvalue(r, 1)))
      local t = fcopy { string = string, fmt = string.format, p = print, g = _G, enc = s.encode }
      assert.equal(string, t.string)
      assert.equal(string.format, t.fmt)
      assert.equal(print, t.p)
      assert.equal(_G, t.g)
      assert.equal(s.encode, t.enc)
    end)

    it("names Lua functions of modules, copies Lua functions of _G", function()
      package.loaded["serial_spec_mod"] = { f = function() return "module f" end }
      local mf = package.loaded["serial_spec_mod"].f
      assert.equal(mf, fcopy(mf))
      rawset(_G, "serial_spec_global", function() return "global" end)
      local r = fcopy(serial_spec_global)
      assert.are_not.equal(serial_spec_global, r)
      assert.equal("global", r())
      rawset(_G, "serial_spec_global", nil)
      package.loaded["serial_spec_mod"] = nil
    end)

    it("a module function under several names crosses by the shortest, then smallest, name", function()
      local f = function() return "shared f" end
      package.loaded["serial_spec_long"] = { f = f, zz = f }
      package.loaded["serial_spec_m"] = { g = f, b = f }
      for _, v in ipairs { f, { f, f }, { string.format, string.rep, table.concat, string.sub, string.byte, f } } do
        local s = serial.encode(v, FN)
        assert.truthy(s:find("serial_spec_m\0b", 1, true))
        assert.falsy(s:find("serial_spec_m\0g", 1, true))
        assert.falsy(s:find("serial_spec_long", 1, true))
      end
      assert.equal(f, fcopy(f))
      package.loaded["serial_spec_m"] = nil
      local s = serial.encode(f, FN)
      assert.truthy(s:find("serial_spec_long\0f", 1, true))
      package.loaded["serial_spec_long"] = nil
      assert.falsy(serial.encode(f, FN):find("serial_spec_long", 1, true))   -- copied now
      assert.equal("shared f", fcopy(f)())
    end)
  end)

  describe("tables with metatables", function()
    local modname = "serial_spec_classes"
    local mod = { Point = {} }
    mod.Point.__index = mod.Point
    function mod.Point.new(x, y) return setmetatable({ x = x, y = y }, mod.Point) end
    function mod.Point:len() return math.sqrt(self.x ^ 2 + self.y ^ 2) end
    local Self = {}                                  -- a module that is its own class
    Self.__index = Self
    function Self.hello() return "hello" end
    before_each(function()
      package.loaded[modname] = mod
      package.loaded[modname .. "_self"] = Self
    end)
    after_each(function()
      package.loaded[modname] = nil
      package.loaded[modname .. "_self"] = nil
    end)

    it("a metatable that is a class of a loaded module crosses by name (the same table)", function()
      local p = mod.Point.new(3, 4)
      local c = fcopy({ p, p })
      assert.is_true(rawequal(mod.Point, getmetatable(c[1])))
      assert.is_true(rawequal(c[1], c[2]))            -- sharing kept
      assert.equal(5, c[1]:len())
      local s = fcopy(setmetatable({}, Self))
      assert.is_true(rawequal(Self, getmetatable(s)))
      assert.equal("hello", s.hello())
    end)

    it("any other metatable is copied by the copy rule (cycles and sharing kept)", function()
      local mt = { kind = "anon" }
      mt.__index = mt
      local a, b = setmetatable({ 1 }, mt), setmetatable({ 2 }, mt)
      local c = copy({ a, b })
      local m = getmetatable(c[1])
      assert.is_false(rawequal(mt, m))
      assert.is_true(rawequal(m, getmetatable(c[2])))
      assert.is_true(rawequal(m, m.__index))
      assert.equal("anon", c[1].kind)
      local nested = copy(setmetatable({}, setmetatable({ x = 1 }, { __index = { y = 2 } })))
      assert.equal(2, getmetatable(nested).y)
    end)

    it("a class by name needs {functions=true}; metamethods that are functions are copied with it", function()
      local ok, err = pcall(serial.encode, mod.Point.new(1, 1))
      assert.is_false(ok)
      assert.equal("value.<metatable>: cannot copy class 'serial_spec_classes.Point' (only with {functions=true})", err)
      local t = fcopy(setmetatable({}, { __call = function(_, x) return x * 2 end }))
      assert.equal(42, t(21))
    end)

    it("a class the decoding state does not have fails to decode with a message", function()
      local s = serial.encode(mod.Point.new(1, 2), FN)
      package.loaded[modname] = nil
      local saved = package.preload[modname]
      package.preload[modname] = function() return { Point = 42 } end
      local v, err = serial.decode(s, FN)
      package.preload[modname] = saved
      assert.is_nil(v)
      assert.matches("module field serial_spec_classes.Point is not a function here", err, 1, true)
    end)

    it("nesting is limited to 200 levels, in encode and decode, with this message", function()
      local deep, cur = {}, nil
      cur = deep
      for _ = 1, 199 do cur.n = {}; cur = cur.n end
      assert.is_table(copy(deep))                     -- 200 levels: fine
      cur.n = {}
      local ok, err = pcall(serial.encode, deep)
      assert.is_false(ok)
      assert.matches("nesting deeper than 200 levels", err, 1, true)
      local mtdeep = {}
      cur = mtdeep
      for _ = 1, 250 do local m = {}; setmetatable(cur, m); cur = m end
      ok, err = pcall(serial.encode, mtdeep)
      assert.is_false(ok)
      assert.matches("nesting deeper than 200 levels", err, 1, true)
    end)
  end)

  describe("lists for process workers (process._encode_list, _decode_into)", function()
    local C = require("strand.core").process
    it("encode_list gives the bytes of the table {t[i..j], n = count}; decode_into places them", function()
      local shared = {}
      local t = { 1, 2.5, "x", { a = 1 }, 70, -3, true, ("y"):rep(80), shared, shared, 2 ^ 62 }
      assert.equal(C._encode(table.move(t, 1, #t, 1, { n = #t })), C._encode_list(t, 1, #t))
      assert.equal(C._encodev(true, table.move(t, 3, 10, 1, { n = 8 })), C._encode_list(t, 3, 10, true))
      local holes = { 1, nil, 3 }
      local v = serial.decode(C._encode_list(holes, 1, 3), { functions = true })
      assert.same({ 1, nil, 3, n = 3 }, v)
      assert.same({ n = 0 }, serial.decode(C._encode_list(t, 5, 4), { functions = true }))
      local dest = {}
      assert.equal(8, C._decode_into("idid" .. C._encode_list(t, 1, 8, true), 5, dest, 11))
      assert.equal(1, dest[11]); assert.equal(2.5, dest[12]); assert.same({ a = 1 }, dest[14])
      assert.equal(("y"):rep(80), dest[18]); assert.is_nil(dest.n); assert.is_nil(dest[10])
    end)
    it("decode_into declines what is not 'true, list' and reports malformed data", function()
      local dest = {}
      assert.is_nil(C._decode_into(C._encodev(false, "err"), 1, dest, 1))
      assert.is_nil(C._decode_into(C._encodev(true, 5), 1, dest, 1))
      local cyc = {}; cyc[1] = cyc                      -- back-references: the usual decode
      assert.is_nil(C._decode_into(C._encode_list({ cyc }, 1, 1, true), 1, dest, 1))
      local good = C._encode_list({ 1, 2, 3 }, 1, 3, true)
      local ok, msg = C._decode_into(good:sub(1, -2), 1, dest, 1)
      assert.is_false(ok); assert.matches("malformed serial data", msg)
      ok, msg = C._decode_into(good .. "x", 1, dest, 1)
      assert.is_false(ok); assert.matches("trailing bytes", msg)
      assert.has_error(function() C._decode_into(good, 0, dest, 1) end)
      assert.has_error(function() C._encode_list({ coroutine.create(print) }, 1, 1) end,
        "value[1]: cannot copy a coroutine")
      assert.has_error(function() C._encode_list(5, 1, 1) end)
    end)
  end)

  describe("failure conditions", function()
    local function refuses(v, msg, opts)
      local ok, err = pcall(serial.encode, v, opts or FN)
      assert.is_false(ok)
      assert.equal(msg, err)
    end

    it("refuses what cannot be copied, naming where it was found", function()
      refuses({ a = { b = { lonely_cfunction() } } }, "value.a.b[1]: cannot copy a C function")
      refuses({ cb = lonely_cfunction() }, "value.cb: cannot copy a C function")
      refuses({ x = { co = coroutine.create(print) } }, "value.x.co: cannot copy a coroutine")
      refuses({ out = io.stdout }, "value.out: cannot copy a userdata (FILE*)")
      refuses({ ["a key"] = { setmetatable({}, { __index = lonely_cfunction() }) } },
              "value[\"a key\"][1].<metatable>.__index: cannot copy a C function")
      refuses({ [coroutine.create(print)] = 1 }, "value[<key>]: cannot copy a coroutine")
      refuses(lonely_cfunction(), "value: cannot copy a C function")
      local cf = lonely_cfunction()
      refuses(function() return cf end, "value.<upvalue cf>: cannot copy a C function")
    end)

    it("refuses functions and modules without {functions=true}", function()
      refuses({ f = function() end }, "value.f: cannot copy a function (only with {functions=true})", {})
      refuses({ m = string }, "value.m: cannot copy module 'string' (only with {functions=true})", {})
      refuses({ print }, "value[1]: cannot copy a function (only with {functions=true})", {})
      local s = serial.encode(function() end, FN)
      local v, err = serial.decode(s)
      assert.is_nil(v)
      assert.equal("functions are not allowed (decode with {functions=true} only from a trusted source)", err)
      v, err = serial.decode(serial.encode({ string }, FN), { functions = false })
      assert.is_nil(v)
      assert.matches("^modules are not allowed", err)
    end)

    it("refuses nesting deeper than 200 levels", function()
      local t = {}
      local cur = t
      for _ = 1, 300 do cur.next = {}; cur = cur.next end
      refuses(t, "value: nesting deeper than 200 levels")
      local c = {}; c[1] = c        -- a cycle is not deep
      local r = copy(c)
      assert.equal(r, r[1])
    end)

    it("raises on misuse", function()
      assert.has_error(function() serial.encode() end)
      assert.has_error(function() serial.encode(1, "functions") end)
      assert.has_error(function() serial.decode() end)
      assert.has_error(function() serial.decode({}) end)
    end)

    it("returns nil, message for every truncation of a valid encoding", function()
      local shared = { "s" }
      local n = 0
      local value = { 1, -7, 2.5, 0 / 0, "str", ("long"):rep(30), shared, shared, true, false,
                      nested = { deep = { deeper = {} } }, fn = function() n = n + 1; return n end,
                      mod = string, fmt = string.format }
      value.self = value
      local s = serial.encode(value, FN)
      assert.is_table(serial.decode(s, FN))
      for len = 0, #s - 1 do
        local v, err = serial.decode(s:sub(1, len), FN)
        assert.is_nil(v)
        assert.is_string(err)
      end
      local v, err = serial.decode(s .. "\0", FN)
      assert.is_nil(v)
      assert.equal("malformed serial data: trailing bytes", err)
    end)

    it("rejects bad versions, tags, references and lengths", function()
      local function bad(s, pattern)
        local v, err = serial.decode(s)
        assert.is_nil(v)
        assert.matches(pattern, err)
      end
      bad("", "^malformed serial data")
      bad("\2\0\1\0", "unknown version")
      bad("\1\128\1\0", "bad header")
      bad("\1\0\1\15", "bad type tag")
      bad("\1\0\1\255\0\0", "trailing bytes")
      bad("\1\0\1\7\1", "bad back%-reference")
      bad("\1\2\1\7\1", "bad back%-reference")
      bad("\1\2\1\6\1\0\0\0\0\0\0\0\7\5", "bad back%-reference")
      bad("\1\0\1\5\255\255\255\255\255\255\255\255\255\1", "truncated string")
      bad("\1\0\1\6\255\255\255\255\0\0\0\0", "count larger than the data")
      bad("\1\0\1\6\0\0\0\0\255\255\255\255", "count larger than the data")
      bad("\1\0\255\255\255\255\15", "count larger than the data")
      bad("\1\0\1\6\0\0\0\0\1\0\0\0\0\1", "nil or NaN table key")
      bad("\1\0\1\6\0\0\0\0\1\0\0\0\4\0\0\0\0\0\0\248\127\1", "nil or NaN table key")
      bad("\1\1\1\12\4abcd" .. ("\0"):rep(16), "bad object reference")
      bad("\1\0\1\3\255\255\255\255\255\255\255\255\255\255\1", "bad varint")
    end)

    it("never crashes on random or corrupted input", function()
      math.randomseed(20240611)
      local valid = serial.encode({ 1, 2.5, "x", { a = { b = "c" } }, t = { 1, 2, 3 }, s = ("z"):rep(70) })
      local decode, char, random = serial.decode, string.char, math.random
      for _ = 1, 3000 do
        local len = random(0, 48)
        local b = { "\1", char(random(0, 3)) }
        for i = 3, len do b[i] = char(random(0, 255)) end
        local ok, v, err = pcall(decode, table.concat(b))
        assert.is_true(ok)
        assert.is_true(v ~= nil or type(err) == "string" or err == nil)
      end
      for _ = 1, 3000 do
        local pos = random(1, #valid)
        local s = valid:sub(1, pos - 1) .. char(random(0, 255)) .. valid:sub(pos + 1)
        local ok = pcall(decode, s)
        assert.is_true(ok)
      end
    end)
  end)
end)
