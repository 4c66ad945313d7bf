-- soak/echo_server.lua — the server side of the echo soak: a task per connection echoing every
-- byte back. Prints "port <n> pid <n>" first. The first connection is the control channel:
-- "rss" -> "<rss KiB> <open connections> <fds>", "stats" -> "<accepted> <errors>", and its end
-- stops the server. Run by soak/echo.lua, in its own process.
local strand = require "strand"
local socket = require "strand.socket"

local function rss_kib()
  local f = io.open("/proc/self/status")
  local s = f:read("a"); f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

local function fd_count()     -- read in-process: a popen'd `ls | wc` sometimes counts its own pipe
  local _, n = assert(require("strand.core")._proc.fds())
  return n
end

strand.run(function()
  local srv = assert(socket.listen("127.0.0.1", 0, { backlog = 4096 }))
  local _, port = srv:getsockname()
  local f = io.open("/proc/self/stat"); local pid = f:read("n"); f:close()
  io.stdout:write(("port %d pid %d\n"):format(port, pid)); io.stdout:flush()
  local ctl = assert(srv:accept())
  local open, accepted, errors = 0, 0, 0
  local last_error
  local acceptor = strand.spawn(function()
    while true do
      local c, err = srv:accept()
      if not c then
        if err == "closed" then return end
        errors = errors + 1; last_error = err
        strand.sleep(0.01)
      else
        open = open + 1; accepted = accepted + 1
        strand.spawn(function()
          while true do
            local d, e = c:recv(65536)
            if not d then
              if e ~= "closed" then errors = errors + 1; last_error = e end
              break
            end
            local ok, e2 = c:sendall(d)
            if not ok then errors = errors + 1; last_error = e2; break end
          end
          c:close()
          open = open - 1
        end)
      end
    end
  end)
  for cmd in ctl:lines() do
    if cmd == "rss" then
      collectgarbage(); collectgarbage()
      ctl:write(("%d %d %d\n"):format(rss_kib(), open, fd_count()))
    elseif cmd == "stats" then
      ctl:write(("%d %d %s\n"):format(accepted, errors, tostring(last_error)))
    end
  end
  srv:close()
  acceptor:join(5)
  os.exit(0)
end)
