-- fuzz/reader.lua — the checks of the `reader` fuzz target (fuzz/reader.c).
-- Input: byte 1 = flags (bit 0: the payload is a sequence of frames built from the tail),
-- byte 2 = number of read operations k, then k (kind, parameter) byte pairs, then segment
-- sizes until a 0 byte, then the payload. A writer task sends the payload in those segments
-- (yielding between them) and closes; a reader task runs the operations, then reads the rest
-- (read "a"). Each result must match
-- a model computed from the whole stream: every pattern is deterministic once all data and the
-- end of the stream have arrived, except recv(n), which may return any non-empty prefix of at
-- most n bytes.
local strand = require "strand"
local socket = require "strand.socket"

local function model_read(stream, pos, kind, n)
  -- returns value-or-nil, err-or-nil, newpos
  local rest = #stream - pos + 1
  if kind == "count" then
    if rest == 0 then return nil, "closed", pos end
    local take = math.min(n, rest)
    return stream:sub(pos, pos + take - 1), nil, pos + take
  elseif kind == "l" or kind == "L" then
    if rest == 0 then return nil, "closed", pos end
    local nl = stream:find("\n", pos, true)
    if not nl then return stream:sub(pos), nil, #stream + 1 end
    local line = stream:sub(pos, nl)
    if kind == "l" then
      line = line:sub(1, -2)
      if line:sub(-1) == "\r" then line = line:sub(1, -2) end
    end
    return line, nil, nl + 1
  elseif kind == "a" then
    return stream:sub(pos), nil, #stream + 1
  elseif kind == "frame" then
    if rest == 0 then return nil, "closed", pos end
    if rest < 4 then return nil, "truncated frame", pos end
    local len = string.unpack(">I4", stream, pos)
    if len > n then return nil, "frame too large", math.min(pos + 4 + len, #stream + 1) end
    if rest - 4 < len then return nil, "truncated frame", pos end
    return stream:sub(pos + 4, pos + 3 + len), nil, pos + 4 + len
  end
  error("unknown kind " .. tostring(kind))
end

return function(input)
  if #input < 3 then return end
  local flags, k = input:byte(1), input:byte(2) % 33
  local i = 3
  local ops = {}
  for _ = 1, k do
    if i + 1 > #input then break end
    ops[#ops + 1] = { input:byte(i), input:byte(i + 1) }
    i = i + 2
  end
  local segs = {}
  while i <= #input and input:byte(i) ~= 0 and #segs < 64 do
    segs[#segs + 1] = input:byte(i)
    i = i + 1
  end
  i = i + 1
  local tail = input:sub(i)
  local stream = tail
  if flags & 1 == 1 then                 -- frames: length byte, then that many bytes, repeated
    local parts, j = {}, 1
    while j <= #tail do
      local len = tail:byte(j)
      local body = tail:sub(j + 1, j + len)
      parts[#parts + 1] = string.pack(">s4", body)
      j = j + 1 + len
    end
    stream = table.concat(parts)
  end
  if #segs == 0 then segs[1] = 255 end

  local a, b = socket.pair()
  local results, failure = {}, nil
  local ok, err = strand.timeout(10, function()
    local writer = strand.spawn(function()
      local pos, s = 1, 1
      while pos <= #stream do
        local n = segs[(s - 1) % #segs + 1]
        s = s + 1
        assert(b:sendall(stream:sub(pos, pos + n - 1)))
        pos = pos + n
        if n % 3 ~= 0 then strand.sleep(0) end
      end
      b:close()
    end)
    for j, op in ipairs(ops) do
      local kind, p = op[1] % 8, op[2]
      local r
      if kind == 0 then r = { "recv", p + 1, a:recv(p + 1) }
      elseif kind == 1 then r = { "count", p, a:read(p) }
      elseif kind == 2 then r = { "l", 0, a:read("l") }
      elseif kind == 3 then r = { "L", 0, a:read("L") }
      elseif kind == 4 then r = { "a", 0, a:read("a") }
      elseif kind == 5 then r = { "frame", p, a:recv_frame(p) }
      elseif kind == 6 then r = { "frame", 64 << 20, a:recv_frame() }   -- the default max
      else strand.sleep(0) end
      if r then results[#results + 1] = r end
    end
    -- the rest of the stream (the writer may be waiting for room: 1-byte messages fill a UNIX
    -- socket's buffer quickly)
    results[#results + 1] = { "a", 0, a:read("a") }
    writer:join()
  end)
  a:close(); b:close()
  if not ok then error("the reader or the writer did not finish: " .. tostring(err)) end

  -- replay against the model
  local pos = 1
  for j, r in ipairs(results) do
    local kind, n, v, e = r[1], r[2], r[3], r[4]
    if kind == "recv" then
      local rest = #stream - pos + 1
      if rest == 0 then
        assert(v == nil and e == "closed", ("op %d recv at the end: %s %s"):format(j, tostring(v), tostring(e)))
      else
        assert(type(v) == "string" and #v >= 1 and #v <= n, ("op %d recv(%d): %s %s"):format(j, n, tostring(v), tostring(e)))
        assert(v == stream:sub(pos, pos + #v - 1), ("op %d recv: wrong bytes"):format(j))
        pos = pos + #v
      end
    else
      if kind == "count" and n == 0 then
        -- read(0): "" while data is left, nil at the end (as Lua files)
        if pos > #stream then assert(v == nil, ("op %d read(0) at the end: %q"):format(j, tostring(v)))
        else assert(v == "", ("op %d read(0): %q"):format(j, tostring(v))) end
      else
        local mv, me, npos = model_read(stream, pos, kind, n)
        if mv ~= v or me ~= e then
          error(("op %d %s(%d) at byte %d of %d: got %q, %q; model %q, %q"):format(j, kind, n, pos,
            #stream, tostring(v), tostring(e), tostring(mv), tostring(me)))
        end
        pos = npos
      end
    end
  end
end
