-- bench/process_bench.lua — processes, pools, pipes, cross-process queues and external programs
-- against their peers: a C fork+waitpid / fork+pipes / posix_spawn program
-- (process_c_baseline.c), Python's multiprocessing and concurrent.futures (process_py.py, run with
-- /usr/bin/python3) and luv's spawn (process_luv.lua). Every measurement runs in its own process,
-- one at a time, pinned with taskset to the same CPUs; each is repeated REPS times and reported
-- as median [min-max]; ratios use the medians of this run.
-- env: STRAND_BENCH_REPS (5), STRAND_BENCH_CPUS ("0,1"), STRAND_BENCH_CPU_LOOPS (loops of a
-- CPU task, default 2e7 ~ 0.5 s here), STRAND_BENCH_QUICK=1 (small counts: a smoke run),
-- STRAND_BENCH_ONLY=start (only row 1, start+join, with the C and Python peers)
-- Internal: lua5.4 bench/process_bench.lua worker MODE ARGS... runs one strand measurement.
local REPS = tonumber(os.getenv("STRAND_BENCH_REPS")) or 5
local CPUS = os.getenv("STRAND_BENCH_CPUS") or "0,1"
local QUICK = os.getenv("STRAND_BENCH_QUICK") == "1"
local CPU_LOOPS = tonumber(os.getenv("STRAND_BENCH_CPU_LOOPS")) or (QUICK and 2e6 or 2e7)

-- {==== the strand side of each measurement (run in a child process of the harness)

local function burn(loops)
  local x = 0
  for i = 1, loops do x = x + i % 7 end
  return x
end

local function worker(mode, a, b)
  local strand = require "strand"
  local process = require "strand.process"
  local pool = require "strand.pool"
  local n = tonumber(a)
  local noop = function() end
  if mode == "start" then
    local t0 = strand.now()
    for _ = 1, n do process.start(noop):join() end
    print(("us %.3f"):format((strand.now() - t0) / n * 1e6))
  elseif mode == "apply" then
    local p <close> = pool.new{ size = 1 }
    p:apply(noop)
    local t0 = strand.now()
    for _ = 1, n do p:apply(noop) end
    print(("us %.3f"):format((strand.now() - t0) / n * 1e6))
  elseif mode == "apply_split" then       -- the parent on CPU b, its worker on CPU c (arg[5])
    local p <close> = pool.new{ size = 1 }
    p:apply(noop)
    local pin = "taskset -p -c %s %d >/dev/null 2>&1"
    assert(os.execute(pin:format(b, process.pid())) and os.execute(pin:format(arg[5], p:pids()[1])))
    p:apply(noop)
    local t0 = strand.now()
    for _ = 1, n do p:apply(noop) end
    print(("us %.3f"):format((strand.now() - t0) / n * 1e6))
  elseif mode == "tiny" then
    local chunk = tonumber(b)
    local list = {}
    for i = 1, n do list[i] = i end
    local p <close> = pool.new{ size = 2 }
    p:apply(noop)
    local ident = function(x) return x end
    local t0 = strand.now()
    local r = p:map(ident, list, chunk > 0 and chunk or nil)
    assert(#r == n and r[n] == n)
    print(("s %.4f"):format(strand.now() - t0))
  elseif mode == "futures" then
    local p <close> = pool.new{ size = 2 }
    p:apply(noop)
    local ident = function(x) return x end
    local t0 = strand.now()
    local fs = {}
    for i = 1, n do fs[i] = p:submit(ident, i) end
    for i = 1, n do assert(fs[i]:result() == i) end
    print(("s %.4f"):format(strand.now() - t0))
  elseif mode == "cpu" then
    local loops, kind = tonumber(b), arg[5] or "process"
    local t0 = strand.now()
    for _ = 1, n do burn(loops) end
    local serial = strand.now() - t0
    local p <close> = pool.new{ size = 2, kind = kind }
    local list = {}
    for i = 1, n do list[i] = loops end
    t0 = strand.now()
    p:map(burn, list, 1)
    print(("speedup %.3f"):format(serial / (strand.now() - t0)))
  elseif mode == "cpufloor" then
    -- the machine's floor for this work: the same loops in plain lua5.4 processes, one after the
    -- other, then two at a time (what any pool of 2 can at best reach here)
    local loops = tonumber(b)
    local cmd = ("%s -e 'local x = 0 for i = 1, %d do x = x + i %% 7 end print(x)'"):format(arg[-1] or "lua5.4", loops)
    local function run(f) assert(f:read("a")); assert(f:close()) end
    local t0 = strand.now()
    for _ = 1, n do run(assert(io.popen(cmd))) end
    local serial = strand.now() - t0
    t0 = strand.now()
    for _ = 1, n, 2 do
      local f1, f2 = assert(io.popen(cmd)), _ < n and assert(io.popen(cmd))
      run(f1); if f2 then run(f2) end
    end
    print(("speedup %.3f"):format(serial / (strand.now() - t0)))
  elseif mode == "queue" then
    local queue = require "strand.queue"
    local q = queue.new(1000)
    local prod = process.start(function()
      for i = 1, n do q:put(i) end
      q:close()
    end)
    local t0 = strand.now()
    local got = 0
    while q:get() ~= nil do got = got + 1 end
    local dt = strand.now() - t0
    prod:join()
    assert(got == n, got)
    print(("items/s %.0f"):format(got / dt))
  elseif mode == "pipe" then
    local x, y = process.pipe()
    local child = process.start(function()
      while true do
        local v = y:recv()
        if v == nil or v == "stop" then return end
        y:send(v)
      end
    end)
    x:send(1); x:recv()
    local t0 = strand.now()
    for i = 1, n do x:send(i); x:recv() end
    local dt = strand.now() - t0
    x:send("stop")
    child:join()
    print(("us %.3f"):format(dt / n * 1e6))
  elseif mode == "spawn" then
    local t0 = strand.now()
    for _ = 1, n do assert(process.spawn({ "true" }):wait() == 0) end
    print(("us %.3f"):format((strand.now() - t0) / n * 1e6))
  else
    error("unknown mode " .. tostring(mode))
  end
end

if arg[1] == "worker" then
  worker(arg[2], arg[3], arg[4])
  return
end

-- }==== 

-- {==== the harness

package.path = "bench/?.lua;" .. package.path
local B = require "benchlib"
local sh = B.sh

local function have(cmd) local _, ok = sh(cmd); return ok end

local cbin = os.tmpname()
local c_ok = have("cc -O2 -o " .. cbin .. " bench/process_c_baseline.c")
local py_ok = have("/usr/bin/python3 -c 'import multiprocessing, concurrent.futures'")
local luv_ok = have("lua5.4 -e 'require \"luv\"'")
local pin = have("taskset -c " .. CPUS .. " true") and ("taskset -c " .. CPUS .. " ") or ""

-- Run cmd REPS times (one at a time); the number after `label` in its output each time.
local function measure(cmd, label, reps)
  local vals = {}
  for _ = 1, reps or REPS do
    local out = sh(pin .. cmd)
    local v = tonumber(out:match(label .. " ([%d.]+)"))
    if not v then
      io.write("    (failed: ", cmd, ": ", out:sub(1, 300), ")\n")
      return nil
    end
    vals[#vals + 1] = v
  end
  local lo, hi = B.range(vals)
  return { median = B.median(vals), min = lo, max = hi }
end

local function show(name, r, unit)
  if not r then print(("  %-52s  (not measured)"):format(name)); return end
  local f = (unit == "s" or unit == "x") and "%.3f" or "%.1f"
  print(("  %-52s %12s %s  [%s - %s]"):format(name, f:format(r.median), unit, f:format(r.min), f:format(r.max)))
end

local function ratio(text, a, b)
  if not (a and b) then return end
  print(("    -> %s: %.2fx"):format(text, a.median / b.median))
end

local strand_cmd = "lua5.4 bench/process_bench.lua worker "
local py = "/usr/bin/python3 bench/process_py.py "
local N = QUICK and { start = 50, apply = 500, tiny = 2000, queue = 20000, pipe = 500, spawn = 30, cpu = 4 }
  or { start = 1000, apply = 5000, tiny = 20000, queue = 200000, pipe = 5000, spawn = 300, cpu = 8 }

print(("process bench: %d reps each, pinned to CPUs %s, median [min - max]; %s"):format(REPS, CPUS,
  "figures on a loaded machine are provisional"))

print(("\n1. process start + join, %d one after the other (us each, lower is better)"):format(N.start))
local s_start = measure(strand_cmd .. "start " .. N.start, "us"); show("strand process.start(noop):join()", s_start, "us")
local c_fork = c_ok and measure(cbin .. " fork " .. N.start, "us"); show("C fork + _exit + waitpid", c_fork, "us")
local py_proc = py_ok and measure(py .. "process " .. math.min(N.start, 300), "us"); show("Python multiprocessing.Process start+join", py_proc, "us")
ratio("strand / C fork+waitpid (goal <= 1.5)", s_start, c_fork)
ratio("Python / strand", py_proc, s_start)
if os.getenv("STRAND_BENCH_ONLY") == "start" then os.remove(cbin); return end

print(("\n2. pool round trip: apply of a no-op, %d (us each, lower is better)"):format(N.apply))
local s_apply = measure(strand_cmd .. "apply " .. N.apply, "us"); show("strand pool(1):apply(noop)", s_apply, "us")
local c_pipe = c_ok and measure(cbin .. " pipe " .. N.apply * 4, "us"); show("C fork + pipes request/reply", c_pipe, "us")
local py_apply = py_ok and measure(py .. "apply " .. N.apply, "us"); show("Python Pool(1).apply(noop)", py_apply, "us")
ratio("strand / C pipes round trip (goal <= 1.5)", s_apply, c_pipe)
ratio("Python / strand", py_apply, s_apply)
-- the same without a pool's watching before sleeping (csrc/poollink.c), and with the two sides
-- pinned to different CPUs (where a wake-up of an idle CPU is what a round trip waits for)
local s_nospin = measure("env STRAND_POOL_SPIN=0 " .. strand_cmd .. "apply " .. N.apply, "us")
show("strand apply, no watching (STRAND_POOL_SPIN=0)", s_nospin, "us")
local cpu_a, cpu_b = CPUS:match("^(%d+)[,-](%d+)")
if cpu_a then
  local s_split = measure(strand_cmd .. "apply_split " .. N.apply .. " " .. cpu_a .. " " .. cpu_b, "us")
  show(("strand apply, parent on CPU %s, worker on %s"):format(cpu_a, cpu_b), s_split, "us")
  local c_split = c_ok and measure(cbin .. " pipesplit " .. N.apply * 4 .. " " .. cpu_a .. " " .. cpu_b, "us")
  show("C pipes round trip, the same two CPUs", c_split, "us")
  ratio("strand / C, split over two CPUs", s_split, c_split)
end

print(("\n3. %d tiny tasks through a 2-worker process pool (s, lower is better)"):format(N.tiny))
local s_t1 = measure(strand_cmd .. "tiny " .. N.tiny .. " 1", "s"); show("strand pool:map(f, list, 1)", s_t1, "s")
local py_t1 = py_ok and measure(py .. "tiny " .. N.tiny .. " 1", "s"); show("Python Pool(2).map(f, range, 1)", py_t1, "s")
local s_t0 = measure(strand_cmd .. "tiny " .. N.tiny .. " 0", "s"); show("strand pool:map(f, list) default chunks", s_t0, "s")
local py_t0 = py_ok and measure(py .. "tiny " .. N.tiny .. " 0", "s"); show("Python Pool(2).map(f, range) default chunks", py_t0, "s")
local s_f = measure(strand_cmd .. "futures " .. N.tiny, "s"); show("strand submit x N + results", s_f, "s")
local py_f = py_ok and measure(py .. "futures " .. N.tiny // 4, "s")
if py_f then for _, k in ipairs { "median", "min", "max" } do py_f[k] = py_f[k] * 4 end end
show("Python ProcessPoolExecutor(2) (N/4 run, x4)", py_f, "s")
ratio("Python chunksize 1 / strand (goal >= 2)", py_t1, s_t1)
ratio("Python default chunks / strand (goal >= 2)", py_t0, s_t0)
ratio("concurrent.futures / strand submit", py_f, s_f)

print(("\n4. CPU-bound: %d tasks of %d loops on 2 workers (speed-up over one after the other, higher is better)"):format(N.cpu, CPU_LOOPS))
local cpu_reps = math.min(REPS, 3)
local s_cpu = measure(strand_cmd .. "cpu " .. N.cpu .. " " .. CPU_LOOPS .. " process", "speedup", cpu_reps); show("strand process pool", s_cpu, "x")
local s_cput = measure(strand_cmd .. "cpu " .. N.cpu .. " " .. CPU_LOOPS .. " thread", "speedup", cpu_reps); show("strand thread pool", s_cput, "x")
local fl_cpu = measure(strand_cmd .. "cpufloor " .. N.cpu .. " " .. CPU_LOOPS, "speedup", cpu_reps); show("floor: plain lua5.4 processes, two at a time", fl_cpu, "x")
local py_cpu = py_ok and measure(py .. "cpu " .. N.cpu .. " " .. math.floor(CPU_LOOPS / 8), "speedup", cpu_reps); show("Python Pool(2) (tasks of loops/8)", py_cpu, "x")

print(("\n5. cross-process queue, %d small items producer -> consumer (items/s, higher is better)"):format(N.queue))
local s_q = measure(strand_cmd .. "queue " .. N.queue, "items/s"); show("strand.queue(1000) between two processes", s_q, "items/s")
local py_q = py_ok and measure(py .. "queue " .. N.queue, "items/s"); show("Python multiprocessing.Queue", py_q, "items/s")
ratio("strand / Python (goal >= 3)", s_q, py_q)

print(("\n6. pipe round trip between two processes, %d (us each)"):format(N.pipe))
local s_p = measure(strand_cmd .. "pipe " .. N.pipe, "us"); show("strand process.pipe send+recv", s_p, "us")
local py_p = py_ok and measure(py .. "pipe " .. N.pipe, "us"); show("Python multiprocessing.Pipe send+recv", py_p, "us")
ratio("Python / strand", py_p, s_p)

print(("\n7. external program: spawn 'true' and wait, %d (us each)"):format(N.spawn))
local s_s = measure(strand_cmd .. "spawn " .. N.spawn, "us"); show("strand process.spawn + wait", s_s, "us")
local c_s = c_ok and measure(cbin .. " spawn " .. N.spawn, "us"); show("C posix_spawnp + waitpid", c_s, "us")
local luv_s = luv_ok and measure("lua5.4 bench/process_luv.lua " .. N.spawn, "us"); show("luv uv.spawn + exit callback", luv_s, "us")
ratio("strand / C", s_s, c_s)
ratio("luv / strand", luv_s, s_s)

os.remove(cbin)
-- }====
