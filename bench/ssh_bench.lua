-- bench/ssh_bench.lua — strand.ssh against its peers on one private loopback sshd (same host key,
-- one cipher and MAC for all: the only ones the sshd offers): a C libssh2 program (NODELAY +
-- QUICKACK, 1 MiB SFTP buffers), OpenSSH's ssh/sftp, paramiko. Each client runs pinned to one CPU
-- (taskset), one peer at a time; the figure is the median of REPS runs. strand and the C program
-- (and, for SFTP, every peer) take turns run by run (load drifting during the bench weighs on all
-- alike). Prints each figure and strand's ratio.
--   lua5.4 bench/ssh_bench.lua [REPS] [MiB] [N_SESSIONS]
--   BENCH_ONLY=connect,cmds,many,sftp (default all) picks rows; BENCH_CPU=1 the CPU of the clients;
--   BENCH_CIPHER="aes128-ctr hmac-sha2-256" (default; "default": each peer negotiates its own);
--   SFTP_REPS (default REPS, at most 3 above 128 MiB), PY_REPS (paramiko's SFTP reps: default
--   SFTP_REPS, 1 above 128 MiB: its put runs ~20 MiB/s); BENCH_VERBOSE=1 prints every SFTP run
package.path = "spec/?.lua;bench/?.lua;" .. package.path
local sshd = require "support.sshd"
local B = require "benchlib"

local REPS = tonumber(arg[1]) or 5
local MIB = tonumber(arg[2]) or 512
local NSESS = tonumber(arg[3]) or 50
local CMDS = 200
local CPU = os.getenv("BENCH_CPU") or "1"
local CIPHER, MAC = (os.getenv("BENCH_CIPHER") or "aes128-ctr hmac-sha2-256"):match("^(%S+)%s*(%S*)")
if CIPHER == "default" then CIPHER, MAC = nil, nil end
local SFTP_REPS = tonumber(os.getenv("SFTP_REPS")) or (MIB > 128 and math.min(REPS, 3) or REPS)
local PY_REPS = tonumber(os.getenv("PY_REPS")) or (MIB > 128 and 1 or SFTP_REPS)
local VERBOSE = os.getenv("BENCH_VERBOSE") == "1"

local sh, median = B.stdout, B.median
local function quote(x) return "'" .. x:gsub("'", "'\\''") .. "'" end

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

local srv = sshd.start { config = CIPHER and { "Ciphers " .. CIPHER, "MACs " .. MAC } or nil }
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
  local ceilbin = os.tmpname()
  assert(os.execute(("cc -O2 -o %s bench/sftp_ceiling.c $(pkg-config --libs libssh2)"):format(ceilbin)))
  local ceil = ceilbin .. " %s " .. common
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
  print(CIPHER and ("cipher %s, MAC %s for every peer (the only ones the sshd offers)"):format(CIPHER, MAC)
    or "ciphers: as each peer negotiates with the sshd")
  print("ratios: >1 means strand is better (faster / less time)")
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
  if not ONLY.sftp then os.remove(bin); os.remove(ceilbin); return end
  -- SFTP: every peer times the transfer alone (after connect and authentication): strand, the C
  -- programs and paramiko around their get/put call, OpenSSH's sftp by bench/sftp_mark.sh run from
  -- its batch before and after the (second) transfer (so its process start, key exchange and
  -- authentication are left out as for the others). Each also reports its CPU seconds in the
  -- transfer and the seconds it was runnable but waiting for a CPU (schedstat): on a single-thread
  -- client, wall - cpu - run delay is the time it waited for the network, i.e. for sshd.
  local src, dst = os.tmpname(), os.tmpname()
  assert(os.execute(("head -c %d /dev/urandom > %s"):format(MIB * 1048576, src)))
  local remote = srv.data .. "/bench.bin"
  -- sshd's session processes (the listener's descendants): CPU ticks by pid, read from /proc
  local function session_ticks(acc)
    local function walk(pid, depth)
      local f = io.open(("/proc/%d/task/%d/children"):format(pid, pid))
      if not f then return end
      local kids = f:read("a")
      f:close()
      for k in kids:gmatch("%d+") do
        local sf = io.open("/proc/" .. k .. "/stat")
        if sf then
          local t = {}
          for x in (sf:read("a"):match("%) (.*)$") or ""):gmatch("%S+") do t[#t + 1] = x end
          sf:close()
          if t[13] then acc[k] = math.max(acc[k] or 0, tonumber(t[12]) + tonumber(t[13])) end
        end
        if depth < 4 then walk(tonumber(k), depth + 1) end
      end
    end
    walk(srv.pid, 1)
  end
  -- one run of cmd, pinned: MiB/s, client CPU s, client run delay s, sshd CPU s; parse(out) reads
  -- the first three. sshd's CPU is sampled every 20 ms while the client runs (its session
  -- processes exit with the connection, and their CPU does not show in the listener's stat): the
  -- last 20 ms of each can be missed; it includes the session's setup (key exchange, auth).
  local strand_sleep = require("strand").sleep
  local function run_tr(cmd, parse)
    local done = os.tmpname()
    os.remove(done)
    local p = io.popen(("taskset -c %s sh -c %s 2>/dev/null"):format(CPU, quote("timeout 600 " .. cmd .. "; touch " .. done)))
    local acc = {}
    local deadline = now() + 600
    while now() < deadline do
      session_ticks(acc)
      local f = io.open(done)
      if f then f:close(); break end
      strand_sleep(0.02)
    end
    local out = p:read("a")
    p:close()
    os.remove(done)
    local scpu = 0
    for _, v in pairs(acc) do scpu = scpu + v end
    local rate, cpu, delay, first = parse(out or "")
    return rate, cpu, delay, scpu / 100, first
  end
  local function numbers(out)
    local r, c, d = out:match("^%s*([%d.]+)%s+([%d.]+)%s+([%d.]+)")
    return tonumber(r), tonumber(c), tonumber(d)
  end
  local sftpbatch = os.tmpname()
  local sftpcmd = ("sftp -q -o BatchMode=yes -o UserKnownHostsFile=%s -i %s -P %d -b %s %s@127.0.0.1")
    :format(srv.known_hosts, srv.keys.ed25519, srv.port, sftpbatch, srv.user)
  -- OpenSSH's sftp moves the file twice in its session: its first put runs ~0.3 s longer than the
  -- ones after it (measured here; strand's and the C program's do not), so its figure is the
  -- second transfer's, and the first one's is reported beside it
  local function openssh_numbers(out)
    local m = {}
    for t, c, d in out:gmatch("(%d+%.%d+) ([%d.]+) ([%d.]+)\n") do m[#m + 1] = { tonumber(t), tonumber(c), tonumber(d) } end
    if #m ~= 3 then return nil end
    return MIB / (m[3][1] - m[2][1]), m[3][2] - m[2][2], m[3][3] - m[2][3], MIB / (m[2][1] - m[1][1])
  end
  local args = { get = " " .. remote .. " " .. dst, put = " " .. remote .. " " .. src }
  local function peers(m)
    local f = assert(io.open(sftpbatch, "w"))
    local move = m == "get" and ("get " .. remote .. " " .. dst) or ("put " .. src .. " " .. remote)
    f:write("!sh bench/sftp_mark.sh\n", move, "\n!sh bench/sftp_mark.sh\n", move, "\n!sh bench/sftp_mark.sh\n")
    f:close()
    local list = {
      { "strand", lua:format(m) .. args[m], numbers },
      { "C libssh2 1MiB", cbin:format(m) .. args[m], numbers },
      { "OpenSSH sftp", sftpcmd, openssh_numbers },
    }
    if py then list[#list + 1] = { "paramiko", py:format(m) .. args[m], numbers, PY_REPS } end
    -- libssh2's own ceilings (bench/sftp_ceiling.c): 2 SFTP channels each reading half the file,
    -- and a plain channel to `cat` (no SFTP: what any protocol over a libssh2 channel can reach)
    if m == "get" then
      list[#list + 1] = { "C 2 SFTP channels", ceil:format("mget") .. args.get .. " 2", numbers }
      list[#list + 1] = { "libssh2 channel cat", ceil:format("catget") .. args.get, numbers }
    else
      list[#list + 1] = { "libssh2 channel cat", ceil:format("catput") .. " " .. src .. " " .. remote, numbers }
    end
    return list
  end
  local function transfer_row(m)
    local list = peers(m)
    local res = {}
    for i = 1, #list do res[i] = { {}, {}, {}, {}, {}, {} } end
    -- the peers take turns run by run (load drifting weighs on all alike)
    for rep = 1, SFTP_REPS do
      for i, p in ipairs(list) do
        if rep <= (p[4] or SFTP_REPS) then
          local r, cc, cd, sc, first = run_tr(p[2], p[3])
          if r then
            local x = res[i]
            x[1][#x[1] + 1] = r
            x[2][#x[2] + 1] = cc or false
            x[3][#x[3] + 1] = cd or false
            x[4][#x[4] + 1] = (cc and cd) and math.max(0, MIB / r - cc - cd) or false
            x[5][#x[5] + 1] = sc
            if first then x[6][#x[6] + 1] = first end
          end
        end
      end
    end
    local prs, best = {}, {}
    for i = 2, #list do
      prs[#prs + 1] = { list[i][1], median(res[i][1]) }
      if #res[i][6] > 0 then prs[#prs + 1] = { list[i][1] .. " 1st", median(res[i][6]) } end
    end
    row(("SFTP %s %d MiB (MiB/s)"):format(m, MIB), median(res[1][1]), prs, false)
    -- the best run of each: what it reaches when the load lets it (the median is what it gets)
    local function top(t) return #t > 0 and math.max(table.unpack(t)) or nil end
    for i = 2, #list do
      best[#best + 1] = { list[i][1], top(res[i][1]) }
      if #res[i][6] > 0 then best[#best + 1] = { list[i][1] .. " 1st", top(res[i][6]) } end
    end
    row(("  best of %d runs"):format(SFTP_REPS), top(res[1][1]), best, false)
    print("  seconds: client CPU / client runnable, no CPU / client idle (waiting for sshd) / sshd CPU"
      .. " (sshd's: the whole session, OpenSSH's two transfers)")
    for i, p in ipairs(list) do
      local f = function(k) local v = median(res[i][k]); return v and ("%.2f"):format(v) or "n/a" end
      -- OpenSSH's client is two processes (sftp and ssh): no single idle figure
      print(("    %-22s %s / %s / %s / %s"):format(p[1], f(2), f(3), p[1] == "OpenSSH sftp" and "-" or f(4), f(5)))
      if VERBOSE then
        local runs = {}
        for _, v in ipairs(res[i][1]) do runs[#runs + 1] = ("%.1f"):format(v) end
        print("      runs MiB/s: " .. table.concat(runs, " "))
      end
    end
  end
  print(("SFTP: %d reps, paramiko %d; CPU %s"):format(SFTP_REPS, PY_REPS, CPU))
  -- put first so the remote file exists for get
  transfer_row("put")
  transfer_row("get")
  -- why libssh2's clients need more CPU per byte than OpenSSH's (docs/ssh.md, SFTP throughput)
  local cc = os.tmpname()
  if os.execute(("cc -O2 -o %s bench/ssh_crypto_cost.c -lcrypto"):format(cc)) then
    print("client crypto CPU seconds per 256 MiB (bench/ssh_crypto_cost.c, pinned):")
    for line in (sh("taskset -c " .. CPU .. " " .. cc) or ""):gmatch("[^\n]+") do print("  " .. line) end
  end
  os.remove(cc)
  os.remove(src); os.remove(dst); os.remove(bin); os.remove(ceilbin); os.remove(sftpbatch)
end)
srv:stop()
if not ok then error(err, 0) end
