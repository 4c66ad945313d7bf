-- examples/s3_resume.lua — scenario S3: a resumable upload. The first transfer is cut off part
-- way; the client reconnects, asks the server how much it already has, seeks there and sends
-- the rest with sendfile. The server's copy ends byte-identical (checksums compared).
-- Run: ./strand-run examples/s3_resume.lua [MiB]
local strand = require "strand"
local socket = require "strand.socket"

local MIB = tonumber(arg and arg[1]) or 4

local function adler32(s)
  local a, b = 1, 0
  for i = 1, #s do
    a = (a + s:byte(i)) % 65521
    b = (b + a) % 65521
  end
  return ("%08x"):format(b * 65536 + a)
end

local src, dst = os.tmpname(), os.tmpname()
do
  local f = assert(io.open(src, "wb"))
  local x = 99
  for _ = 1, MIB * 64 do
    local t = {}
    for i = 1, 16384 do
      x = (x * 1103515245 + 12345) % 2147483648
      t[i] = string.char(x >> 16 & 255)
    end
    f:write(table.concat(t))
  end
  f:close()
  assert(io.open(dst, "wb")):close()      -- the server starts with an empty file
end

local srv = assert(socket.listen("127.0.0.1", 0))
local _, port = srv:getsockname()

-- The server: "SIZE" -> its current size; "PUT" -> appends everything until the client closes.
local server = strand.spawn(function()
  for _ = 1, 2 do
    local conn = assert(srv:accept())
    conn:settimeout(10)
    local have = assert(io.open(dst, "rb")):seek("end")
    assert(conn:read("l") == "SIZE")
    conn:write(have, "\n")
    assert(conn:read("l") == "PUT")
    local out = assert(io.open(dst, "ab"))
    while true do
      local chunk = conn:recv(65536)
      if not chunk then break end
      out:write(chunk)
    end
    out:close()
    print(("s3: server: connection done, file now %d bytes"):format(assert(io.open(dst, "rb")):seek("end")))
    conn:close()
  end
  srv:close()
end)

local total = assert(io.open(src, "rb")):seek("end")
local function upload(limit)
  local c = assert(socket.connect("127.0.0.1", port, { timeout = 5 }))
  c:settimeout(10)
  c:write("SIZE\n")
  local have = tonumber(c:read("l"))
  local f = assert(io.open(src, "rb"))
  f:seek("set", have)                      -- continue where the server's copy ends
  c:write("PUT\n")
  local sent = assert(c:sendfile(f, nil, limit))
  print(("s3: client: server had %d bytes, sent %d more (file position now %d)"):format(
    have, sent, f:seek()))
  f:close()
  c:close()                                -- the first time this is the "interruption"
end

upload(math.floor(total * 0.4))             -- cut off after 40 %
upload()                                    -- resume: the rest
assert(server:join(10))

local a = assert(io.open(src, "rb")):read("a")
local b = assert(io.open(dst, "rb")):read("a")
print(("s3: source %d bytes adler32 %s, copy %d bytes adler32 %s: identical: %s"):format(
  #a, adler32(a), #b, adler32(b), tostring(a == b)))
os.remove(src)
os.remove(dst)
