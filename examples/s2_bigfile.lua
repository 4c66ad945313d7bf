-- examples/s2_bigfile.lua — scenario S2: sending a large file, and the "sticky packet" problem
-- (TCP keeps no message boundaries) solved twice: by an ack exchange, and by length-prefixed
-- frames (send_frame/recv_frame). Run: ./strand-run examples/s2_bigfile.lua [MiB]
local strand = require "strand"
local socket = require "strand.socket"

local MIB = tonumber(arg and arg[1]) or 8

local function adler32(s)
  local a, b = 1, 0
  for i = 1, #s, 4096 do
    local chunk = { s:byte(i, math.min(i + 4095, #s)) }
    for j = 1, #chunk do
      a = (a + chunk[j]) % 65521
      b = (b + a) % 65521
    end
  end
  return ("%08x"):format(b * 65536 + a)
end

-- a file of pseudo-random bytes
local path = os.tmpname()
do
  local f = assert(io.open(path, "wb"))
  local x = 12345
  local block = {}
  for i = 1, 65536 do
    x = (x * 1103515245 + 12345) % 2147483648
    block[i] = string.char(x >> 16 & 255)
  end
  block = table.concat(block)
  for i = 1, MIB * 16 do f:write(block:sub(i % 7 + 1) .. block:sub(1, i % 7)) end
  f:close()
end
local data = assert(io.open(path, "rb")):read("a")
print(("s2: %d bytes to send, adler32 %s"):format(#data, adler32(data)))

local srv = assert(socket.listen("127.0.0.1", 0))
local _, port = srv:getsockname()

-- 1. The ack exchange: "SIZE n" -> "ready" -> n raw bytes -> "ok <checksum>".
local server = strand.spawn(function()
  local conn = assert(srv:accept())
  conn:settimeout(10)
  -- 0. The problem: two sends, read a moment later, come out of one recv glued together.
  strand.sleep(0.05)
  local glued = conn:recv(1024)
  print(("s2: without framing, two sends (%q and %q) arrived as one recv: %q"):format(
    "hello", "world", glued))
  conn:write("next\n")
  local size = tonumber(conn:read("l"):match("^SIZE (%d+)$"))
  conn:write("ready\n")                    -- the ack: the header can't run into the data
  local body = assert(conn:read(size))
  conn:write("ok ", adler32(body), "\n")

  -- 2. Frames: messages sent back to back arrive one by one.
  local n = 0
  while true do
    local msg = conn:recv_frame()
    if not msg or msg == "" then break end
    n = n + 1
    conn:send_frame(("#%d %s (%d bytes)"):format(n, msg:sub(1, 12), #msg))
  end
  conn:close()
end)

local c = assert(socket.connect("127.0.0.1", port, { timeout = 5 }))
c:settimeout(10)
c:sendall("hello")
c:sendall("world")
assert(c:read("l") == "next")
local t0 = strand.now()
c:write("SIZE ", #data, "\n")
assert(c:read("l") == "ready")
assert(c:sendall(data))
local reply = c:read("l")
local dt = strand.now() - t0
print(("s2: ack exchange: server replied %q after %.3f s (%.0f MiB/s, the checksum in Lua included); checksums match: %s"):format(
  reply, dt, #data / 1048576 / dt, tostring(reply == "ok " .. adler32(data))))

local messages = { "first message", "second", ("third, large "):rep(5000), "fourth" }
for _, m in ipairs(messages) do c:send_frame(m) end   -- no waiting in between: they coalesce on the wire
c:send_frame("")
for _ = 1, #messages do print("s2: frame reply: " .. c:recv_frame()) end
c:close()
assert(server:join(10))
srv:close()
os.remove(path)
print("s2: done")
