-- bench/ssh_strand.lua — strand's side of bench/ssh_bench.lua, the same modes and output as
-- bench/ssh_c_baseline.c: connect | cmds N | get REMOTE LOCAL | put LOCAL REMOTE | many N
-- (get/put print "MiB/s cpu_s run_delay_s" of the transfer)
-- (arguments: MODE HOST PORT USER KEY KNOWN_HOSTS [...])
local strand = require "strand"
local ssh = require "strand.ssh"
local mode, host, port, user, key, kh = arg[1], arg[2], tonumber(arg[3]), arg[4], arg[5], arg[6]
local opts = { host = host, port = port, user = user, key = key, known_hosts = kh }

local function cpu()
  local f = io.open("/proc/self/stat")
  local fields = {}
  for x in f:read("a"):match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = x end
  f:close()
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

-- this thread's seconds on a CPU and seconds runnable waiting for one (/proc/self/schedstat)
local function sched()
  local f = io.open("/proc/self/schedstat")
  local a, b = f:read("n", "n")
  f:close()
  return a / 1e9, b / 1e9
end

assert(ssh.init())   -- as the C program, libssh2_init before the clock starts

if mode == "connect" then
  local t0 = strand.now()
  local s = assert(ssh.connect(opts))
  assert(s:run("true"))
  s:close()
  print(("%.4f"):format(strand.now() - t0))
elseif mode == "cmds" then
  local n = tonumber(arg[7])
  local s = assert(ssh.connect(opts))
  local t0 = strand.now()
  for _ = 1, n do assert(s:run("true")) end
  print(("%.5f"):format((strand.now() - t0) / n))
  s:close()
elseif mode == "get" or mode == "put" then
  local s = assert(ssh.connect(opts))
  local sftp = assert(s:sftp())
  local t0, c0, d0 = strand.now(), sched()
  local n
  if mode == "get" then n = assert(sftp:get(arg[7], arg[8])) else n = assert(sftp:put(arg[8], arg[7])) end
  local t1, c1, d1 = strand.now(), sched()
  print(("%.1f %.3f %.3f"):format(n / 1048576 / (t1 - t0), c1 - c0, d1 - d0))
  sftp:close()
  s:close()
elseif mode == "many" then
  local n = tonumber(arg[7])
  local t0 = strand.now()
  local ts = {}
  for i = 1, n do
    ts[i] = strand.spawn(function()
      local s = assert(ssh.connect(opts))
      assert(s:run("true"))
      s:close()
    end)
  end
  for i = 1, n do ts[i]:result() end
  print(("%.3f %.3f"):format(strand.now() - t0, cpu()))
end
