-- bench/serial_bench.lua — strand.serial round trips (encode + decode) per second against a
-- pure-Lua string.pack serializer. Run from the repository root:
--   LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;" lua5.4 bench/serial_bench.lua
local serial = require "strand.serial"

-- {==== baseline: tagged values with string.pack, tables as counted key/value pairs
local pack, unpack, concat = string.pack, string.unpack, table.concat

local function lua_encode(v, out)
  local t = type(v)
  if t == "nil" then out[#out + 1] = "n"
  elseif t == "boolean" then out[#out + 1] = v and "T" or "F"
  elseif math.type(v) == "integer" then out[#out + 1] = pack("<c1j", "i", v)
  elseif t == "number" then out[#out + 1] = pack("<c1d", "d", v)
  elseif t == "string" then out[#out + 1] = pack("<c1s4", "s", v)
  elseif t == "table" then
    local n = 0
    for _ in next, v do n = n + 1 end
    out[#out + 1] = pack("<c1I4", "t", n)
    for k, x in next, v do lua_encode(k, out); lua_encode(x, out) end
  else error("cannot encode " .. t) end
  return out
end

local function lua_decode(s, pos)
  local tag = s:sub(pos, pos)
  if tag == "n" then return nil, pos + 1
  elseif tag == "T" then return true, pos + 1
  elseif tag == "F" then return false, pos + 1
  elseif tag == "i" then return unpack("<j", s, pos + 1)
  elseif tag == "d" then return unpack("<d", s, pos + 1)
  elseif tag == "s" then return unpack("<s4", s, pos + 1)
  elseif tag == "t" then
    local n
    n, pos = unpack("<I4", s, pos + 1)
    local t = {}
    for _ = 1, n do
      local k, x
      k, pos = lua_decode(s, pos)
      x, pos = lua_decode(s, pos)
      t[k] = x
    end
    return t, pos
  end
  error("bad tag " .. tag)
end

local baseline = {
  encode = function(v) return concat(lua_encode(v, {})) end,
  decode = function(s) return (lua_decode(s, 1)) end,
}
-- }====

local function sample()
  local t = {}
  for i = 1, 100 do
    local r = i % 4
    t[i] = r == 0 and ("item" .. i) or r == 1 and i * 1000 or r == 2 and i + 0.25 or ("s" .. i):rep(2)
  end
  return t
end

local function rate(codec, value, seconds)
  local encode, decode, clock = codec.encode, codec.decode, os.clock
  local n, t0 = 0, clock()
  local elapsed
  repeat
    for _ = 1, 200 do decode(encode(value)) end
    n = n + 200
    elapsed = clock() - t0
  until elapsed >= seconds
  return n / elapsed
end

local function check(codec, value)
  local r = codec.decode(codec.encode(value))
  for i = 1, #value do assert(r[i] == value[i], "round trip differs") end
end

local value = sample()
check(serial, value); check(baseline, value)
-- interleaved rounds, best of each: robust against other load on the machine
local seconds = tonumber(arg and arg[1]) or 2.0
local rounds = 5
local fast, slow = 0, 0
for _ = 1, rounds do
  fast = math.max(fast, rate(serial, value, seconds / (2 * rounds)))
  slow = math.max(slow, rate(baseline, value, seconds / (2 * rounds)))
end
print(("100-element table round trip (encode+decode), %d bytes encoded; best of %d rounds")
      :format(#serial.encode(value), rounds))
print(("  strand.serial      %10.0f ops/s"):format(fast))
print(("  Lua string.pack    %10.0f ops/s"):format(slow))
print(("  ratio              %10.1fx"):format(fast / slow))
