-- bench/echo_luv.lua — the luv (libuv) side of bench/echo.sh: callbacks, write on every read.
-- Prints "PORT n" then serves until killed. usage: lua5.4 bench/echo_luv.lua [PORT]
local uv = require "luv"

local server = uv.new_tcp()
assert(server:bind("127.0.0.1", tonumber(arg[1]) or 0))
assert(server:listen(4096, function(err)
  assert(not err, err)
  local client = uv.new_tcp()
  server:accept(client)
  client:read_start(function(rerr, data)
    if rerr or not data then
      client:close()
      return
    end
    client:write(data)
  end)
end))
print("PORT " .. server:getsockname().port)
io.stdout:flush()
uv.run()
