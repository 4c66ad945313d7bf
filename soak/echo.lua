-- soak/echo.lua — N concurrent connections against a task-per-connection echo server in another
-- process, for S seconds: every byte verified, zero errors, server RSS flat after warm-up.
-- Usage: lua5.4 soak/echo.lua [connections=10000] [seconds=60] [interval=1.0]
-- Each connection sends a message of 1..2048 bytes (content from the connection and sequence
-- numbers), reads it back and compares, then waits a random 0..2*interval seconds.
-- Prints the figures; exits non-zero on any error, mismatch or RSS growth after warm-up.
local strand = require "strand"
local socket = require "strand.socket"

local N = tonumber(arg[1]) or 10000
local SECONDS = tonumber(arg[2]) or 60
local INTERVAL = tonumber(arg[3]) or 1.0
local WARMUP = math.min(10, SECONDS / 4)

local server = io.popen("exec lua5.4 soak/echo_server.lua")
local port, pid = server:read("l"):match("^port (%d+) pid (%d+)$")
assert(port, "the server did not start")
port = tonumber(port)

local function msg(conn, seq)
  local len = (conn * 7919 + seq * 104729) % 2048 + 1
  local unit = ("%d:%d;"):format(conn, seq)
  return (unit:rep(len // #unit + 1)):sub(1, len)
end

local function rss_kib()
  local f = io.open("/proc/self/status")
  local s = f:read("a"); f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

local figures = {}
local ok, err = pcall(strand.run, function()
  local ctl = assert(socket.connect("127.0.0.1", port, { timeout = 10 }))
  ctl:settimeout(30)
  local function ask(cmd)
    assert(ctl:write(cmd, "\n"))
    return assert(ctl:read("l"))
  end
  local function server_rss()
    local rss, open, fds = ask("rss"):match("^(%d+) (%d+) (%d+)$")
    return tonumber(rss), tonumber(open), tonumber(fds)
  end
  figures.rss_base = server_rss()

  local conns, errors, mismatches, messages, bytes = {}, 0, 0, 0, 0
  local last_error
  local t0 = strand.now()
  -- ramp up in batches (a loopback backlog of 4096 takes them fast)
  for b = 1, N, 500 do
    local batch = {}
    for i = b, math.min(N, b + 499) do
      batch[#batch + 1] = strand.spawn(function()
        local c, e = socket.connect("127.0.0.1", port, { timeout = 30 })
        if not c then errors = errors + 1; last_error = "connect: " .. tostring(e); return end
        c:settimeout(30)
        conns[i] = c
      end)
    end
    strand.joinall(batch, 60)
  end
  figures.connect_seconds = strand.now() - t0
  local nconn = 0
  for _ in pairs(conns) do nconn = nconn + 1 end
  figures.connected = nconn
  local rss_full, open_full, fds_full = server_rss()
  figures.rss_full, figures.open_full, figures.fds_full = rss_full, open_full, fds_full

  local stop_at = strand.now() + SECONDS
  local workers = {}
  for i, c in pairs(conns) do
    workers[#workers + 1] = strand.spawn(function()
      local seq = 0
      strand.sleep(math.random() * 2 * INTERVAL)
      while strand.now() < stop_at do
        seq = seq + 1
        local m = msg(i, seq)
        local okw, ew = c:sendall(m)
        if not okw then errors = errors + 1; last_error = "send: " .. tostring(ew); break end
        local back, er = c:read(#m)
        if back == nil then errors = errors + 1; last_error = "read: " .. tostring(er); break end
        if back ~= m then mismatches = mismatches + 1; break end
        messages = messages + 1
        bytes = bytes + #m
        strand.sleep(math.random() * 2 * INTERVAL)
      end
      c:close()
    end)
  end
  strand.sleep(WARMUP)
  figures.rss_warm = server_rss()
  local samples = {}
  local sampler = strand.spawn(function()
    while strand.now() < stop_at do
      strand.sleep(math.min(5, math.max(0.1, stop_at - strand.now())))
      samples[#samples + 1] = (server_rss())
    end
  end)
  strand.joinall(workers, SECONDS + 120)
  sampler:join(10)
  figures.rss_samples = samples
  figures.rss_end = samples[#samples] or figures.rss_warm
  local accepted, serrors, serr = ask("stats"):match("^(%d+) (%d+) (.*)$")
  figures.server_accepted, figures.server_errors, figures.server_last_error = tonumber(accepted), tonumber(serrors), serr
  local rss_after, open_after, fds_after = server_rss()
  figures.rss_after, figures.open_after = rss_after, open_after
  ctl:close()
  figures.errors, figures.mismatches, figures.messages, figures.bytes = errors, mismatches, messages, bytes
  figures.last_error = last_error
  figures.client_rss = rss_kib()
end)
os.execute("kill " .. pid .. " 2>/dev/null")
server:close()
if not ok then
  io.stderr:write("soak echo: " .. tostring(err) .. "\n")
  os.exit(1)
end

local f = figures
local per_conn = (f.rss_full - f.rss_base) * 1024 / math.max(1, f.connected)
local max_sample = f.rss_warm
for _, s in ipairs(f.rss_samples) do if s > max_sample then max_sample = s end end
local growth = f.rss_end - f.rss_warm
print(("echo soak: %d connections (%d connected in %.1f s), %d s, interval %.1f s"):format(N, f.connected,
  f.connect_seconds, SECONDS, INTERVAL))
print(("  messages %d, bytes verified %d (each way), errors %d, mismatches %d, server errors %d%s"):format(
  f.messages, f.bytes, f.errors, f.mismatches, f.server_errors,
  (f.last_error or f.server_errors > 0) and (" (last: " .. tostring(f.last_error) .. " / " .. f.server_last_error .. ")") or ""))
print(("  server RSS: %d KiB before, %d KiB with %d connections open (%.0f bytes per connection), %d KiB after warm-up, %d KiB at the end (max %d, growth %+d KiB), %d KiB once all closed"):format(
  f.rss_base, f.rss_full, f.open_full, per_conn, f.rss_warm, f.rss_end, max_sample, growth, f.rss_after))
print(("  client RSS %d KiB; server fds with every connection open: %d"):format(f.client_rss, f.fds_full))
local pass = f.errors == 0 and f.mismatches == 0 and f.server_errors == 0 and f.connected == N
  and f.messages > 0 and growth <= f.rss_warm * 0.05 + 2048 and f.open_after == 0
print("  " .. (pass and "PASS" or "FAIL"))
os.exit(pass and 0 or 1)
