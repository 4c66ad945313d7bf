-- bench/sftp_turns.lua — SFTP get/put throughput of two strand builds taking turns run by run on
-- one private loopback sshd (bench/ssh_strand.lua pinned to one CPU, medians of REPS): the cost
-- of the copy steps' turns (ssh.h SSH_TURN_BYTES) against a build without them.
--   lua5.4 bench/sftp_turns.lua TREE_A TREE_B [REPS=5] [MiB=128]
--   (TREE_*: a strand tree built with `make all`: its lua/ and build/; e.g. `git archive OLD |
--   tar -x -C /tmp/old && make -C /tmp/old all` against `.`; BENCH_CPU=1)
--   BENCH_CALLGRIND=1: each client runs under callgrind and the figure is its instruction count
--   (connect included; the machine's load does not change it: use a few MiB, REPS=1)
package.path = "spec/?.lua;bench/?.lua;" .. package.path
local sshd = require "support.sshd"
local B = require "benchlib"

local A, Bb = assert(arg[1], "TREE_A"), assert(arg[2], "TREE_B")
local REPS, MIB = tonumber(arg[3]) or 5, tonumber(arg[4]) or 128
local CPU = os.getenv("BENCH_CPU") or "1"
local CG = os.getenv("BENCH_CALLGRIND") == "1"

local srv = sshd.start()
local src, dst, back = sshd.tmpname(), sshd.tmpname(), sshd.tmpname()   -- (the test user reads them)
local f = assert(io.open(src, "wb"))
local chunk = ("0123456789abcdef"):rep(65536)
for _ = 1, MIB do f:write(chunk) end
f:close()

local function run(build, mode)
  local cmd = ("taskset -c %s env LUA_PATH='%s/lua/?.lua;%s/lua/?/init.lua;;' LUA_CPATH='%s/build/?.so;;' "
    .. "%slua5.4 bench/ssh_strand.lua %s 127.0.0.1 %d %s %s %s %s %s%s")
    :format(CPU, build, build, build,
      CG and "valgrind --tool=callgrind --callgrind-out-file=/dev/null " or "", mode, srv.port, srv.user, srv.keys.ed25519, srv.known_hosts,
      mode == "get" and src or dst, mode == "get" and back or src, CG and " 2>&1" or "")
  if CG then                                     -- (callgrind reports on stderr)
    local p = io.popen(cmd)
    local out = p:read("a")
    p:close()
    return tonumber(out:match("Collected : (%d+)")), 0
  end
  local out = B.stdout(cmd)
  if out == nil and os.getenv("BENCH_VERBOSE") then print(cmd) end
  return out and tonumber(out:match("^(%S+)")), out and tonumber(out:match("^%S+%s+(%S+)"))
end

local res = { [A] = { get = {}, put = {}, gcpu = {}, pcpu = {} }, [Bb] = { get = {}, put = {}, gcpu = {}, pcpu = {} } }
for _ = 1, REPS do
  for _, build in ipairs { A, Bb } do
    local r = res[build]
    local g, gc = run(build, "get")
    local p, pc = run(build, "put")
    r.get[#r.get + 1], r.gcpu[#r.gcpu + 1] = g or false, gc or false
    r.put[#r.put + 1], r.pcpu[#r.pcpu + 1] = p or false, pc or false
  end
end
for _, build in ipairs { A, Bb } do
  local r = res[build]
  print((CG and "%-24s get %.0f instructions%.0s  put %.0f instructions%.0s  [%d MiB, median of %d]"
    or "%-24s get %7.1f MiB/s (cpu %.2f s)  put %7.1f MiB/s (cpu %.2f s)  [%d MiB, median of %d]")
    :format(build, B.median(r.get) or 0, B.median(r.gcpu) or 0, B.median(r.put) or 0,
      B.median(r.pcpu) or 0, MIB, REPS))
end
os.remove(src); os.remove(dst); os.remove(back)
srv:stop()
