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
  -- a pool map's chunk (a list as encode_list writes it) and its answer ("true, list"): the
  -- shapes the list readers (decode_into, list_open/next/end) take
  local P = require("strand.core").process
  if P and P._encode_list then
    local l = { 0, 63, 64, 16384, 2097152, -1, math.mininteger, 1.5, "", ("s"):rep(63),
      ("L"):rep(70), true, false }
    l[15] = 7                                 -- a nil hole at 14
    write("serial", "list", P._encode_list(l, 1, 15))
    write("serial", "list-answer", P._encode_list(l, 1, 15, true))
  end
end
-- }====

-- {==== reader: flags, k, k (kind, parameter) pairs, segment sizes, 0, payload
-- kinds: 0 recv(p+1), 1 read(p), 2 read("l"), 3 read("L"), 4 read("a"), 5 recv_frame(p),
-- 6 recv_frame(), 7 sleep(0); flags bit 0: the payload is length-byte-prefixed chunks sent as frames
local function reader(name, flags, ops, segs, payload)
  write("reader", name, string.char(flags, #ops // 2) .. string.char(table.unpack(ops))
    .. string.char(table.unpack(segs)) .. "\0" .. payload)
end
reader("lines", 0, { 2, 0, 3, 0, 2, 0, 2, 0, 1, 5, 0, 3, 4, 0, 2, 0 }, { 1, 2, 3, 7 },
  "first line\nsecond\r\nthird\r\n\r\nno newline at the end")
reader("frames", 1, { 5, 10, 5, 10, 5, 10, 5, 10, 6, 0, 2, 0 }, { 1, 1, 4, 9 },
  "\5hello\0\20" .. ("x"):rep(20) .. "\3abc")
do
  local bytes = {}
  for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
  reader("counts", 0, { 0, 0, 0, 9, 1, 0, 1, 17, 7, 0, 4, 0, 0, 5 }, { 13 }, table.concat(bytes))
end
-- }====

-- {==== buffer: (op, arg) pairs: 0 append arg, 1 append 16*arg+1, 2 consume 8*arg, 3 find arg
write("buffer", "mixed", string.char(0, 200, 1, 50, 3, 10, 2, 30, 0, 5, 3, 0, 2, 255, 1, 255, 2, 100, 3, 7))
-- }====

-- {==== selector: backend byte, then (op, arg) pairs; arg = object | events << 3 | data << 5
-- ops: 0 register, 1 modify, 2 unregister, 3 get_key, 4/5 the peer sends, 6 read all,
-- 7 select(0), 8 sizes
do
  local function arg(obj, ev, data) return obj | ev << 3 | (data or 0) << 5 end
  local ops = { 0, arg(0, 1), 0, arg(1, 2), 0, arg(4, 3, 1), 7, 0, 4, arg(0, 0), 7, 0, 1, arg(0, 3, 2),
    7, 0, 6, arg(0, 0), 7, 0, 3, arg(1, 0), 8, 0, 2, arg(1, 0), 8, 0, 7, 0, 0, arg(1, 1), 4, arg(1, 0),
    4, arg(5, 0), 0, arg(5, 1), 7, 0, 2, arg(5, 0), 0, arg(0, 1) }
  for b = 0, 2 do write("selector", "b" .. b, string.char(b, table.unpack(ops))) end
end
-- }====

print("seeds written")
