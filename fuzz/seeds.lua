-- fuzz/seeds.lua — writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/seed-*):
-- valid inputs that mutation starts from. Run from the repository root against a build:
--   LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;" lua5.4 fuzz/seeds.lua
local function write(target, name, bytes)
  os.execute("mkdir -p fuzz/corpus/" .. target)
  local f = assert(io.open(("fuzz/corpus/%s/seed-%s"):format(target, name), "wb"))
  f:write(bytes)
  f:close()
end

-- {==== serial: encodings of values of every kind
local ok, serial = pcall(require, "strand.serial")
if ok then
  local enc = serial.encode
  local function encf(v) return enc(v, { functions = true }) end
  local shared = { "s" }
  local cyc = {}; cyc.self = cyc
  local deep = {}; local d = deep
  for _ = 1, 30 do d[1] = {}; d = d[1] end
  local big = {}
  for i = 1, 300 do big[i] = i * 3 end
  for i = 1, 40 do big["k" .. i] = i % 2 == 0 end
  local seeds = {
    ints = { 0, 1, 63, 64, -1, math.maxinteger, math.mininteger, 1 << 40 },
    floats = { 0.0, -0.0, 1.5, 1 / 0, -1 / 0, 0 / 0, 1e-308, 2 ^ 53 },
    strings = { "", "a", ("x"):rep(63), ("y"):rep(64), ("z"):rep(300), "\0\1\2\255" },
    shared = { a = shared, b = shared, [shared] = shared },
    cycle = cyc,
    deep = deep,
    big = big,
    keys = { [true] = 1, [false] = 2, [1.5] = 3, [-7] = 4, [{}] = 5 },
    holes = { 1, nil, 3, nil, nil, 6 },
  }
  for name, v in pairs(seeds) do write("serial", name, enc(v)) end
  write("serial", "nil", enc(nil))
  -- several values in one encoding (what threads and processes send): version, header,
  -- count 3, then 1, 2 and ""
  write("serial", "many", "\1\0\3\xc1\xc2\x80")
  local up = 0
  local function counter() up = up + 1; return up end
  write("serial", "function", encf({ f = counter, g = counter }))
  write("serial", "module", encf({ string.format, math }))
end
-- }====

print("seeds written")
