-- bench/threads_bench.lua — OS threads: the cost of starting + joining one (strand against C
-- pthreads, Python's threading and luv's threads, each in its own process) and CPU-bound Lua in
-- 1 vs 2 threads (no global lock; strand and luv; Python with a Pool of 2 processes): interleaved
-- pairs, each with its CPU-time ratio and the steal / other processes' share of the machine
-- (/proc/stat). Medians of REPS, each rep after waiting for
-- an idle machine. Run: make bench, or LUA_PATH="lua/?.lua;lua/?/init.lua;bench/?.lua;;"
-- LUA_CPATH="build/?.so;;" lua5.4 bench/threads_bench.lua [BUILD_DIR]   (env REPS, QUICK=1)
local mode = arg[1]

-- The CPU-bound work, one loop for every side: luv's threads run this function (copied as
-- bytecode); strand's threads and the two-process floor (the same text in plain lua5.4) run TIMED
-- below, the same loop between two reads of the worker's own CPU time (116.6 instructions per
-- iteration on every side, callgrind, Lua 5.4.4).
local WORK = "local function work(count) local x = 0 for i = 1, count do x = x + i % 7 end return x end"
local work = assert(load(WORK .. " return work", "=work"))()
-- The same loop between two reads of this OS thread's own CPU time (/proc/thread-self/schedstat,
-- ns, exact): strand's threads and the processes return it beside the sum, so the loop's CPU time
-- two at once / one after the other leaves out starting, joining and the main thread.
local TIMED = "local function timed(count) local function cpu() local f = io.open(\"/proc/thread-self/schedstat\") "
  .. "if not f then return 0 end local v = f:read(\"n\") f:close() return v or 0 end local c0 = cpu() "
  .. "local x = 0 for i = 1, count do x = x + i % 7 end return x, cpu() - c0 end"
local timed = assert(load(TIMED .. " return timed", "=timed"))()

local function clock()
  local ok, strand = pcall(require, "strand")
  if ok then return strand.now end
  local uv = require "luv"
  return function() return uv.hrtime() * 1e-9 end
end

-- {==== the measured processes: `threads_bench.lua run start|cpu strand|luv N`

if mode == "run" then
  local what, impl, n = arg[2], arg[3], tonumber(arg[4])
  local now = clock()
  local start, wait
  if impl == "strand" then
    local thread = require "strand.thread"
    start = function(fn, ...) return thread.start(fn == work and timed or fn, ...) end
    wait = function(t) return select(2, assert(t:result())) end
  elseif impl == "procs" then
    -- the machine's own floor for this work: the same function in plain lua5.4 processes (no
    -- thread library, no shared heap), started and read through popen (~1 ms each, under 1% of
    -- a run)
    local lua = arg[-1] or "lua5.4"
    start = function(_, count)
      return assert(io.popen(("%s -e '%s print(timed(%d))'"):format(lua, TIMED, count)))
    end
    wait = function(f)
      local out = assert(f:read("a")); assert(f:close())
      return tonumber(out:match("%s(%d+)"))
    end
  else
    local uv = require "luv"
    start = function(fn, ...) return uv.new_thread(fn, ...) end
    wait = function(t) t:join() end
  end
  if what == "start" then
    for _ = 1, 10 do wait(start(function() return 1 end)) end   -- warm-up, as every peer does
    local t0 = now()
    for _ = 1, n do wait(start(function() return 1 end)) end
    print(("us %.2f"):format((now() - t0) / n * 1e6))
  else
    -- PAIRS pairs of (one thread after the other, two at once), in alternating order so that a
    -- drift of the machine weighs on both sides alike; one line per pair. Beside the wall-time
    -- speed-up: the CPU time (the process's, every thread's) two at once over one after the
    -- other, above 1 only if the threads slow each other down (shared lines, a lock, GC), which
    -- the machine's other load does not change; and, over the two-at-once run, the share of the
    -- machine's CPU time the hypervisor stole and the share other processes used (/proc/stat),
    -- which is what lowers a speed-up the threads themselves do not.
    local pairs_n = tonumber(arg[5]) or 2
    local ncpu, hz = 0, tonumber(arg[6]) or 100
    for l in io.lines("/proc/stat") do if l:match("^cpu%d") then ncpu = ncpu + 1 end end
    local function stat()                       -- total, idle+iowait, steal ticks (all CPUs)
      local f = io.open("/proc/stat")
      if not f then return nil end
      local v = {}
      for x in f:read("l"):gmatch("%d+") do v[#v + 1] = tonumber(x) end
      f:close()
      local total = 0
      for i = 1, #v do total = total + v[i] end
      return { total = total, idle = v[4] + (v[5] or 0), steal = v[8] or 0 }
    end
    local function seq()                       -- returns the loops' CPU time (ns) if known
      local c1 = wait(start(work, n))
      local c2 = wait(start(work, n))
      return c1 and c2 and c1 + c2
    end
    local function par()
      local a, b = start(work, n), start(work, n)
      local c1, c2 = wait(a), wait(b)
      return c1 and c2 and c1 + c2
    end
    local cpuclock = os.clock
    if impl == "procs" then      -- the children's CPU time (waited for), in clock ticks
      cpuclock = function()
        local f = assert(io.open("/proc/self/stat"))
        local line = f:read("l"); f:close()
        local v = {}
        for x in line:match("%) (.*)"):gmatch("%S+") do v[#v + 1] = x end
        return (v[12] + v[13] + v[14] + v[15]) / hz   -- utime stime cutime cstime
      end
    end
    -- THREADS_MARK=1 (bench/thread_cpu_sched.sh): each run's start and end on stdout
    -- ("mark seq|par|end <CLOCK_MONOTONIC seconds>"), to cut perf's events (-k mono) by run
    local marking = os.getenv("THREADS_MARK")
    local function mark(what)
      if marking then io.write(("mark %s %.6f\n"):format(what, now())); io.flush() end
    end
    if marking then                                -- this process's pid (perf records them all)
      local f = io.open("/proc/self/stat")
      io.write(("mark pid %d\n"):format(f and f:read("n") or -1))
      if f then f:close() end
    end
    local function measure(f)
      mark(f == seq and "seq" or "par")
      local s0, t0, c0 = stat(), now(), cpuclock()
      local loop = f()
      mark("end")
      local s1 = stat()
      local r = { wall = now() - t0, cpu = cpuclock() - c0, loop = loop }
      if s0 and s1 and s1.total > s0.total then
        local dt = s1.total - s0.total
        r.steal = (s1.steal - s0.steal) / dt
        local busy = (dt - (s1.idle - s0.idle) - (s1.steal - s0.steal)) / hz   -- CPU-seconds
        r.others = math.max(0, busy - r.cpu) / (dt / hz)
      end
      return r
    end
    for i = 1, pairs_n do
      local s, p
      if i % 2 == 1 then s = measure(seq); p = measure(par) else p = measure(par); s = measure(seq) end
      print(("speedup %.4f cpuratio %.4f steal %.4f others %.4f ncpu %d%s"):format(s.wall / p.wall,
        p.cpu / s.cpu, p.steal or 0, p.others or 0, ncpu, (s.loop and p.loop and s.loop > 0)
        and (" loopcpu %.4f"):format(p.loop / s.loop) or ""))
    end
  end
  os.exit(0)
end

-- }====

local B = require "benchlib"
local build = mode or "build"
local STARTS = B.QUICK and 100 or 300
local CPU = B.QUICK and 1e7 or 3e7
local PAIRS = B.QUICK and 2 or 3               -- interleaved pairs per process (REPS processes)
local self = "lua5.4 " .. arg[0]
local has_luv = select(2, B.sh("lua5.4 -e 'require \"luv\"'"))
local cbin = build .. "/bench/thread_start_c"
local _, cc_ok = B.sh(("mkdir -p %s/bench && cc -O2 -pthread -o %s bench/thread_start_c.c"):format(build, cbin))

local peers = {
  { "strand", ("%s run start strand %d"):format(self, STARTS) },
  { "strand_cold", ("STRAND_THREAD_IDLE=0 %s run start strand %d"):format(self, STARTS) },
  { "C", cc_ok and ("%s %d"):format(cbin, STARTS * 10) },
  { "python", ("%s bench/threads_py.py start %d"):format(B.PY, STARTS) },
  { "luv", has_luv and ("%s run start luv %d"):format(self, STARTS) },
}
print(("thread start + join, us each (%d per process), median (min-max) of %d"):format(STARTS, B.REPS))
local med = {}
for _, p in ipairs(peers) do
  local name, cmd = p[1], p[2]
  if cmd then
    local vals, loaded = B.reps(cmd, "us ([%d.]+)")
    if vals then
      local lo, hi = B.range(vals)
      med[name] = B.median(vals)
      print(("  %-11s %8.1f  (%.1f-%.1f)%s"):format(name, med[name], lo, hi, loaded and "  loaded" or ""))
      B.record("threadstart", name, table.concat(vals, ","), loaded and "loaded" or "idle")
    end
  end
end
if med.strand then
  for _, p in ipairs { "strand_cold", "C", "python", "luv" } do
    if med[p] then print(("  strand / %s: %.2fx the time"):format(p, med.strand / med[p])) end
  end
end

print(("CPU-bound Lua, 2 x %g iterations: one thread after the other / two at once"):format(CPU))
print(("  (%d processes x %d interleaved pairs each, median (min-max) of the pairs; CPU ratio: CPU "
  .. "time two at once / one after the other, 1.00 = no contention; loop CPU: the same for the loops "
  .. "alone, each worker's own CPU time (strand and the processes); steal, others: share of the "
  .. "machine's CPU time the hypervisor stole / other processes used during the two-at-once runs)")
  :format(B.REPS, PAIRS))
local hz = tonumber((B.stdout("getconf CLK_TCK") or ""):match("%d+")) or 100
local cpu_cmds = {
  strand = ("%s run cpu strand %d %d %d"):format(self, CPU, PAIRS, hz),
  -- every start on a new OS thread (placed by the kernel as a new thread, as luv's are) instead
  -- of one waiting from the pair before (woken where the kernel puts a wake-up)
  strand_cold = ("STRAND_THREAD_IDLE=0 %s run cpu strand %d %d %d"):format(self, CPU, PAIRS, hz),
  luv = has_luv and ("%s run cpu luv %d %d %d"):format(self, CPU, PAIRS, hz),
  procs = ("%s run cpu procs %d %d %d"):format(self, CPU, PAIRS, hz),
  python = ("%s bench/threads_py.py cpu %d"):format(B.PY, CPU // 4),   -- Pool of 2 processes
}
-- Runs cmd REPS times (each after waiting for an idle machine) and gathers every pair's figures.
local function cpu_reps(cmd)
  local r, loaded = { speedup = {}, cpuratio = {}, steal = {}, others = {}, loopcpu = {} }, false
  for _ = 1, B.REPS do
    if B.wait_idle() == "loaded" then loaded = true end
    local out = B.sh(cmd)
    local any = false
    for line in out:gmatch("[^\n]+") do
      local sp = tonumber(line:match("speedup ([%d.]+)"))
      if sp then
        any = true
        r.speedup[#r.speedup + 1] = sp
        for _, k in ipairs { "cpuratio", "steal", "others", "loopcpu" } do
          local v = tonumber(line:match(k .. " ([%d.]+)"))
          if v then r[k][#r[k] + 1] = v end
        end
      end
    end
    if not any then io.stderr:write(("bench: %s: no figure in: %s\n"):format(cmd, out:sub(1, 300))); return nil end
  end
  return r, loaded
end
for _, impl in ipairs { "procs", "strand", "strand_cold", "luv", "python" } do
  local r, loaded
  if cpu_cmds[impl] then r, loaded = cpu_reps(cpu_cmds[impl]) end
  if r then
    local vals = r.speedup
    local lo, hi = B.range(vals)
    local extra = ""
    if #r.cpuratio > 0 then
      local clo, chi = B.range(r.cpuratio)
      extra = ("  CPU ratio %.3f (%.3f-%.3f)  steal %.1f%%  others %.1f%%"):format(B.median(r.cpuratio),
        clo, chi, 100 * B.median(r.steal), 100 * B.median(r.others))
      if #r.loopcpu > 0 then
        local llo, lhi = B.range(r.loopcpu)
        extra = extra .. ("  loop CPU %.3f (%.3f-%.3f)"):format(B.median(r.loopcpu), llo, lhi)
      end
      local quiet = {}                            -- the pairs the machine left alone
      for i, v in ipairs(vals) do
        if (r.steal[i] or 1) + (r.others[i] or 1) < 0.05 then quiet[#quiet + 1] = v end
      end
      extra = extra .. (#quiet > 0 and ("  [%d quiet pairs (steal+others < 5%%): %.2f]"):format(#quiet,
        B.median(quiet)) or "  [no quiet pair]")
    end
    print(("  %-11s speed-up %.2f (%.2f-%.2f)%s%s"):format(impl, B.median(vals), lo, hi, extra,
      loaded and "  loaded" or ""))
    B.record("cpu2", impl, table.concat(vals, ","), loaded and "loaded" or "idle")
    if #r.cpuratio > 0 then
      B.record("cpu2x", impl, table.concat(r.cpuratio, ","), table.concat(r.steal, ","),
        table.concat(r.others, ","), #r.loopcpu > 0 and table.concat(r.loopcpu, ",") or "-")
    end
  end
end
