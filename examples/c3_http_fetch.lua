-- examples/c3_http_fetch.lua — scenario C3 (gevent's monkey-patched urllib): many GETs through
-- LuaSocket's own socket.http after strand.luasocket.install(), sequentially and then in tasks.
-- Run: ./strand-run examples/c3_http_fetch.lua [requests=20] [handler_delay=0.3]
local strand = require "strand"
local ssock = require "strand.socket"
require("strand.luasocket").install()          -- before anything requires "socket"
local http = require "socket.http"              -- Debian's lua-socket, unmodified

local N = tonumber(arg and arg[1]) or 20
local DELAY = tonumber(arg and arg[2]) or 0.3

-- The local HTTP server: one task per connection, each reply delayed by DELAY seconds.
local srv = assert(ssock.listen("127.0.0.1", 0))
local _, port = srv:getsockname()
local server = strand.spawn(function()
  while true do
    local c = srv:accept()
    if not c then return end
    strand.spawn(function()
      local line = c:read("l") or ""
      repeat local h = c:read("l") until h == nil or h == ""
      strand.sleep(DELAY)
      local body = "you asked for " .. (line:match("^GET (%S+)") or "?")
      c:write("HTTP/1.1 200 OK\r\nContent-Length: ", #body, "\r\nConnection: close\r\n\r\n", body)
      c:close()
    end)
  end
end)

local function fetch(i)
  local body, code = http.request(("http://127.0.0.1:%d/page/%d"):format(port, i))
  assert(code == 200 and body == "you asked for /page/" .. i, ("request %d: %s %s"):format(i, body, code))
  return #body
end

print(("c3: %d GETs through socket.http, the server answers each after %.2f s"):format(N, DELAY))

local t0 = strand.now()
for i = 1, N do fetch(i) end                    -- the main program: one request after the other
local sequential = strand.now() - t0
print(("c3: sequential: %d GETs in %.2f s"):format(N, sequential))

t0 = strand.now()
local tasks = {}
for i = 1, N do tasks[i] = strand.spawn(fetch, i) end
local done = 0
for _, t in ipairs(tasks) do
  local ok, err = t:join(30)
  assert(ok, err)
  done = done + 1
end
local concurrent = strand.now() - t0
print(("c3: in tasks: %d GETs in %.2f s (%d ok)"):format(N, concurrent, done))
print(("c3: speedup %.1fx (ideal %dx: the total is close to the slowest request, not the sum)")
  :format(sequential / concurrent, N))
-- loose: even on a loaded machine the tasks take far less than the sum
assert(concurrent < sequential / 2, "tasks did not overlap")
srv:close()
server:join(2)
print("c3: done")
