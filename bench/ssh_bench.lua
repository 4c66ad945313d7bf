-- bench/ssh_bench.lua — strand.ssh against its peers on one private loopback sshd (same host key,
-- ciphers negotiated as each client prefers): a C libssh2 program (NODELAY + QUICKACK, 1 MiB SFTP
-- buffers), OpenSSH's ssh/sftp, paramiko. Each client runs pinned to one CPU (taskset), one peer
-- at a time; the figure is the median of REPS runs. strand and the C program take turns run by
-- run (load drifting during the bench weighs on both alike). Prints each figure and strand's ratio.
--   lua5.4 bench/ssh_bench.lua [REPS] [MiB] [N_SESSIONS]
--   BENCH_ONLY=connect,cmds,many,sftp (default all) picks rows; BENCH_CPU=1 the CPU of the clients
package.path = "spec/?.lua;bench/?.lua;" .. package.path
local sshd = require "support.sshd"
local B = require "benchlib"

local REPS = tonumber(arg[1]) or 5
local MIB = tonumber(arg[2]) or 256
local NSESS = tonumber(arg[3]) or 50
local CMDS = 200
local CPU = os.getenv("BENCH_CPU") or "1"

local sh, median = B.stdout, B.median

-- the field-th word cmd prints, as a number (nil when it failed), cmd pinned to CPU
local function run_field(cmd, field)
  local out = sh("taskset -c " .. CPU .. " " .. cmd)
  local t = {}
  for x in (out or ""):gmatch("%S+") do t[#t + 1] = x end
  return tonumber(t[field or 1])
end

-- run cmd REPS times: the median of the field-th number it prints
local function measure(cmd, field, reps)
  local xs = {}
  for _ = 1, reps or REPS do xs[#xs + 1] = run_field(cmd, field) end
  return median(xs)
end

-- strand and the C program alternately, REPS times: median of each (nil when it never ran)
local function paired(a, b, field, reps)
  local xa, xb = {}, {}
  for _ = 1, reps or REPS do
    xa[#xa + 1] = run_field(a, field)
    xb[#xb + 1] = run_field(b, field)
  end
  return median(xa), median(xb)
end

local ONLY = {}
for w in (os.getenv("BENCH_ONLY") or "connect,cmds,many,sftp"):gmatch("[^,]+") do ONLY[w] = true end

local now = require("strand.core").now

-- wall time of a whole command (processes included: what using OpenSSH costs)
local function timed(cmd, reps)
  local xs = {}
  for _ = 1, reps or REPS do
    local t0 = now()
    local ok = os.execute(("taskset -c %s sh -c '%s' >/dev/null 2>&1"):format(CPU, cmd:gsub("'", "'\\''")))
    if ok then xs[#xs + 1] = now() - t0 end
  end
  return median(xs)
end

local srv = sshd.start()
local ok, err = pcall(function()
  local bin = os.tmpname()
  assert(os.execute(("cc -O2 -o %s bench/ssh_c_baseline.c $(pkg-config --libs libssh2)"):format(bin)))
  local common = ("127.0.0.1 %d %s %s"):format(srv.port, srv.user, srv.keys.ed25519)
  local lua = ("lua5.4 bench/ssh_strand.lua %%s %s %s"):format(common, srv.known_hosts)
  -- Debian's python3 (python3-paramiko), not whatever python3 comes first in PATH
  local PY = os.getenv("BENCH_PYTHON") or "/usr/bin/python3"
  local py = sh(PY .. " -c 'import paramiko' && echo yes") == "yes\n"
    and (PY .. " bench/ssh_paramiko.py %%s %s %s"):format(common, srv.known_hosts) or nil
  local cbin = bin .. " %s " .. common
  local sshcmd = ("ssh -o BatchMode=yes -o UserKnownHostsFile=%s -i %s -p %d %s@127.0.0.1")
    :format(srv.known_hosts, srv.keys.ed25519, srv.port, srv.user)
  local rows = {}
  local function row(what, strand, peers, lower_better)
    rows[#rows + 1] = { what, strand, peers, lower_better }
    local parts = {}
    for _, p in ipairs(peers) do
      local ratio = (p[2] and strand) and (lower_better and p[2] / strand or strand / p[2]) or nil
      parts[#parts + 1] = ("%s %s%s"):format(p[1], p[2] and ("%.4g"):format(p[2]) or "n/a",
        ratio and (" (strand %.2fx)"):format(ratio) or "")
    end
    print(("%-44s strand %s | %s"):format(what, strand and ("%.4g"):format(strand) or "n/a", table.concat(parts, " | ")))
  end
  print(("ssh bench: %d reps (median), client pinned to CPU %s, sshd on 127.0.0.1:%d, libssh2 %s")
    :format(REPS, CPU, srv.port, require("strand.ssh").libssh2_version))
  print("ratios: >1 means strand is better (faster / less time)")
  if ONLY.connect then
    local st, c = paired(lua:format("connect"), cbin:format("connect"))
    row("connect+auth+exec true+close (s)", st, {
      { "C libssh2", c },
      { "OpenSSH ssh", timed(sshcmd .. " true") },
      { "paramiko", py and measure(py:format("connect")) },
    }, true)
  end
  if ONLY.cmds then
    local st, c = paired(lua:format("cmds") .. " " .. CMDS, cbin:format("cmds") .. " " .. CMDS, 1, 3)
    row(("%d sequential commands, one session (s/cmd)"):format(CMDS), st, {
      { "C libssh2", c },
      { "paramiko", py and measure(py:format("cmds") .. " " .. CMDS, 1, 3) },
    }, true)
  end
  if ONLY.many then
    -- sshd's CPU per run (its reaped children: one process per connection) shows both clients
    -- cost the server alike; the server is what bounds this row on a small machine
    local function server_cpu()
      local f = io.open("/proc/" .. srv.pid .. "/stat")
      if not f then return nil end
      local st = f:read("a"):match("%) (.*)")
      f:close()
      local t = {}
      for x in st:gmatch("%S+") do t[#t + 1] = x end
      return (tonumber(t[14]) + tonumber(t[15])) / 100    -- cutime + cstime
    end
    local walls, cpus, scpu = { {}, {} }, { {}, {} }, { {}, {} }
    for _ = 1, 3 do
      for i, cmd in ipairs { lua:format("many") .. " " .. NSESS, cbin:format("many") .. " " .. NSESS } do
        local c0 = server_cpu()
        local out = sh("taskset -c " .. CPU .. " " .. cmd) or ""
        local c1 = server_cpu()
        local w, c = out:match("(%S+)%s+(%S+)")
        if tonumber(w) then
          table.insert(walls[i], tonumber(w))
          table.insert(cpus[i], tonumber(c))
          if c0 and c1 then table.insert(scpu[i], c1 - c0) end
        end
      end
    end
    row(("%d sessions at once, one thread (wall s)"):format(NSESS), median(walls[1]), {
      { "C libssh2 non-blocking", median(walls[2]) },
      { "paramiko threads", py and measure(py:format("many") .. " " .. NSESS, 1, 3) },
      { "ssh processes", timed(("for i in $(seq %d); do %s true & done; wait"):format(NSESS, sshcmd), 3) },
    }, true)
    print(("  client CPU for %d sessions: strand %.3f s, C %.3f s; sshd CPU: with strand %.2f s, with C %.2f s")
      :format(NSESS, median(cpus[1]) or -1, median(cpus[2]) or -1, median(scpu[1]) or -1, median(scpu[2]) or -1))
  end
  if not ONLY.sftp then os.remove(bin); return end
  local src, dst = os.tmpname(), os.tmpname()
  assert(os.execute(("head -c %d /dev/urandom > %s"):format(MIB * 1048576, src)))
  local remote = srv.data .. "/bench.bin"
  local function tr(runner, m)
    if not runner then return nil end
    if m == "get" then return measure(runner:format("get") .. " " .. remote .. " " .. dst, 1, 3) end
    return measure(runner:format("put") .. " " .. remote .. " " .. src, 1, 3)
  end
  local sftpcmd = ("sftp -q -o BatchMode=yes -o UserKnownHostsFile=%s -i %s -P %d -b - %s@127.0.0.1")
    :format(srv.known_hosts, srv.keys.ed25519, srv.port, srv.user)
  local function openssh(m)
    local t = timed(("echo '%s' | %s"):format(m == "get" and ("get " .. remote .. " " .. dst) or ("put " .. src .. " " .. remote), sftpcmd), 3)
    return t and MIB / t
  end
  local function trpair(m)
    local args = m == "get" and (" " .. remote .. " " .. dst) or (" " .. remote .. " " .. src)
    return paired(lua:format(m) .. args, cbin:format(m) .. args, 1, 3)
  end
  -- put first so the remote file exists for get
  local sp, cp = trpair("put")
  row(("SFTP put %d MiB (MiB/s)"):format(MIB), sp, {
    { "C libssh2 1MiB", cp }, { "OpenSSH sftp", openssh("put") }, { "paramiko", tr(py, "put") },
  }, false)
  local sg, cg = trpair("get")
  row(("SFTP get %d MiB (MiB/s)"):format(MIB), sg, {
    { "C libssh2 1MiB", cg }, { "OpenSSH sftp", openssh("get") }, { "paramiko", tr(py, "get") },
  }, false)
  os.remove(src); os.remove(dst); os.remove(bin)
end)
srv:stop()
if not ok then error(err, 0) end
