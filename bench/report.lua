-- bench/report.lua — turns the results file of `make bench` (lines written by bench/lib.sh's and
-- bench/benchlib.lua's record) into bench/results/latest.md: the machine, versions, date and
-- command, then every row of issue 14's table with its goal and met / not met.
-- usage: lua5.4 bench/report.lua RESULTS_FILE > bench/results/latest.md
local path = assert(arg[1], "usage: report.lua RESULTS_FILE")

local meta, echo, idle, tasks, taskmem, tstart, cpu2, queue = {}, {}, {}, {}, {}, {}, {}, {}
local active = {}   -- name -> the steady active-RSS run (echo_active)
local nloaded, nfig = 0, 0
local function flag(f) nfig = nfig + 1; if f == "loaded" then nloaded = nloaded + 1 end end
local function csv(s)
  local t = {}
  for v in (s or ""):gmatch("[^,]+") do t[#t + 1] = tonumber(v) end
  return t
end

for line in io.lines(path) do
  local w = {}
  for x in line:gmatch("%S+") do w[#w + 1] = x end
  local k = w[1]
  if k == "meta" then
    meta[w[2]] = line:match("^meta%s+%S+%s+(.*)$")
  elseif k == "echo" then      -- echo N name rep rate cpu_us rss_b flag
    local n, name, rep = tonumber(w[2]), w[3], tonumber(w[4])
    echo[n] = echo[n] or {}
    echo[n][name] = echo[n][name] or {}
    echo[n][name][rep] = { rate = tonumber(w[5]), cpu = tonumber(w[6]), rss = tonumber(w[7]) }
    flag(w[8])
  elseif k == "echo_active" then -- echo_active N name trips_per_conn rss_b peak_at_per_conn seconds full|short rise_pct flag
    active[w[3]] = { n = tonumber(w[2]), k = tonumber(w[4]), rss = tonumber(w[5]), at = tonumber(w[6]),
                     secs = tonumber(w[7]), short = w[8] == "short", rise = tonumber(w[9]) }
    flag(w[10])
  elseif k == "echo_idle" then -- echo_idle N name 1 rss_b flag
    idle[w[3]] = tonumber(w[5]); idle.n = tonumber(w[2]); flag(w[6])
  elseif k == "tasks" then     -- tasks N rep floor strand flag
    tasks.n = tonumber(w[2])
    tasks[#tasks + 1] = { floor = tonumber(w[4]), strand = tonumber(w[5]) }
    flag(w[6])
  elseif k == "taskmem" then   -- taskmem kind bytes flag
    taskmem[w[2]] = tonumber(w[3]); flag(w[4])
  elseif k == "threadstart" then
    tstart[w[2]] = csv(w[3]); flag(w[4])
  elseif k == "cpu2" then
    cpu2[w[2]] = csv(w[3]); flag(w[4])
  elseif k == "cpu2x" then     -- cpu2x impl cpuratios steals others (one per pair)
    cpu2[w[2] .. "_x"] = { cpuratio = csv(w[3]), steal = csv(w[4]), others = csv(w[5]), loopcpu = csv(w[6]) }
  elseif k == "queue" then     -- queue maxsize NPNC kind s c p flag
    queue[#queue + 1] = { maxsize = tonumber(w[2]), shape = w[3], kind = w[4],
                          s = csv(w[5]), c = csv(w[6]), p = csv(w[7]) }
    flag(w[8])
  end
end

package.path = "bench/?.lua;" .. package.path
local median = require("benchlib").median
local function range(t)
  local lo, hi
  for _, v in pairs(t) do
    if v then lo = (lo == nil or v < lo) and v or lo; hi = (hi == nil or v > hi) and v or hi end
  end
  return lo, hi
end
local function f2(x) return x and ("%.2f"):format(x) or "n/a" end
local function f0(x) return x and ("%.0f"):format(x) or "n/a" end
local provisional = nloaded > 0   -- some figure was measured on a loaded machine
local function met(ok)
  if ok == nil then return "n/a" end
  return (ok and "**met**" or "not met") .. (provisional and " (provisional)" or "")
end

-- per-rep ratios a/b of field f between two servers of one echo row
local function rep_ratios(n, a, b, f)
  local r = {}
  local A, Bv = echo[n] and echo[n][a], echo[n] and echo[n][b]
  if not (A and Bv) then return r end
  for rep, x in pairs(A) do
    local y = Bv[rep]
    if y and x[f] and y[f] and y[f] > 0 then r[#r + 1] = x[f] / y[f] end
  end
  return r
end
local function field(n, name, f)
  local t = {}
  for _, x in pairs(echo[n] and echo[n][name] or {}) do t[#t + 1] = x[f] end
  return t
end

local out = {}
local function p(...) out[#out + 1] = table.concat({ ... }) end

p("# strand benchmarks: latest run")
p("")
p("- date: ", meta.date or "?")
p("- command: `", meta.command or "make bench", "`")
p("- machine: ", meta.nproc or "?", " CPUs, ", meta.cpu or "?", "; kernel ", meta.kernel or "?")
p("- versions: ", meta.versions or "?")
p("- method: ", meta.method or "?")
p(("- machine idle before every figure: %d of %d figures measured idle%s"):format(nfig - nloaded, nfig,
  nloaded > 0 and (", **%d flagged loaded** (the machine never got idle within the bounded wait: provisional)"):format(nloaded) or ""))
p("")
p("| case | strand | C floor | peers (strand vs peer) | goal | status |")
p("|---|---|---|---|---|---|")

local peers = { "selectors", "luv", "cqueues", "luasocket", "gevent" }
local ns = {}
for n in pairs(echo) do ns[#ns + 1] = n end
table.sort(ns)
for _, n in ipairs(ns) do
  local r = rep_ratios(n, "strand", "c", "rate")
  local m, lo, hi = median(r), range(r)
  local pl, ahead = {}, true
  local sm = median(field(n, "strand", "rate"))
  for _, peer in ipairs(peers) do
    local pm = median(field(n, peer, "rate"))
    if pm and sm then
      pl[#pl + 1] = ("%s %sx"):format(peer, f2(sm / pm))
      if sm < pm then ahead = false end
    elseif peer == "luasocket" and n > 1000 and echo[1000] and echo[1000].luasocket then
      pl[#pl + 1] = "luasocket n/a (select(2) stops at 1024 fds)"
    end
  end
  local ur = rep_ratios(n, "c_uring", "c", "rate")     -- a C io_uring server (bench/echo_c_uring.c), not a peer
  local urtxt = median(ur) and ("; a C io_uring server %sx it"):format(f2(median(ur))) or ""
  p(("| echo 64 B, %d conns (round trips/s) | %sx C (%s–%s per rep; %s/s) | 1.00 (%s/s%s) | %s | ≥ 1.0x C, ahead of every peer | %s |")
    :format(n, f2(m), f2(lo), f2(hi), f0(sm), f0(median(field(n, "c", "rate"))), urtxt,
            #pl > 0 and table.concat(pl, ", ") or "n/a", met(m and (m >= 1.0 and ahead))))
end
do
  local ok = #ns > 0      -- met only when the median at every connection count is
  local parts = {}
  for _, n in ipairs(ns) do
    local r = rep_ratios(n, "strand", "c", "cpu")
    if not (median(r) and median(r) <= 1.03) then ok = false end
    local lo, hi = range(r)
    parts[#parts + 1] = ("%d conns %s (%s–%s)"):format(n, f2(median(r)), f2(lo), f2(hi))
  end
  local cs = {}
  for _, n in ipairs(ns) do cs[#cs + 1] = ("%s µs at %d"):format(f2(median(field(n, "c", "cpu"))), n) end
  for _, n in ipairs(ns) do
    local ur = rep_ratios(n, "c_uring", "c", "cpu")
    if median(ur) then cs[#cs + 1] = ("a C io_uring server %sx at %d"):format(f2(median(ur)), n) end
  end
  p(("| server CPU per round trip (utime+stime / trips) | %s x C | 1.00 (%s) | — | ≤ 1.03x C | %s |")
    :format(table.concat(parts, "; "), table.concat(cs, ", "), met(ok)))
end
do
  -- active: the peak over the steady run (bench/echo.sh's header); a server without one shows n/a.
  -- A figure is marked when its run stopped at the time bound before its round trips ("short") or
  -- more than 2% of it (over the baseline) came in the run's last fifth (it may still have been rising).
  local any = next(active)
  local n = any and active[any].n or ns[#ns]
  local function act(name)
    local a = active[name]
    if not a then return "n/a" end
    local notes = {}
    if a.short then notes[#notes + 1] = ("short: %.0f s bound"):format(a.secs) end
    if a.rise and a.rise > 2 then notes[#notes + 1] = ("still rising: %.0f%% in the last fifth"):format(a.rise) end
    return f0(a.rss) .. (#notes > 0 and " (" .. table.concat(notes, "; ") .. ")" or "")
  end
  local pl = {}
  for _, peer in ipairs(peers) do
    if active[peer] or idle[peer] then pl[#pl + 1] = ("%s %s / %s"):format(peer, act(peer), f0(idle[peer])) end
  end
  local k = any and active[any].k
  local what = k and ("active: the peak of VmRSS (sampled every 0.1 s) over %d round trips per connection, %s s of load for strand")
    :format(k, active.strand and ("%.0f"):format(active.strand.secs) or "?") or "active: no steady run"
  local a = active.strand
  p(("| RSS per connection at %s, active / idle (B; %s) | %s / %s | %s / %s | %s | ≤ 1,536 B active and idle | %s |")
    :format(n or "?", what, act("strand"), f0(idle.strand), act("c"), f0(idle.c),
            #pl > 0 and table.concat(pl, ", ") or "n/a",
            met(a and idle.strand and not a.short and a.rss <= 1536 and idle.strand <= 1536)))
end
do
  local r = {}
  for i, t in ipairs(tasks) do r[i] = t.strand / t.floor end
  local m, lo, hi = median(r), range(r)
  local fl, st = {}, {}
  for i, t in ipairs(tasks) do fl[i] = t.floor; st[i] = t.strand end
  p(("| spawn+yield+finish, %s tasks (own processes) | %sx floor (%s–%s; %s ns) | bare coroutines 1.00 (%s ns) | — | ≤ 1.3x floor | %s |")
    :format(tasks.n and f0(tasks.n) or "?", f2(m), f2(lo), f2(hi), f0(median(st)), f0(median(fl)),
            met(m and m <= 1.3)))
end
do
  local kinds, worst = {}, nil
  for _, k in ipairs { "sleep", "event", "condition", "queue" } do
    if taskmem[k] then
      kinds[#kinds + 1] = ("%s %s"):format(k, f0(taskmem[k]))
      worst = math.max(worst or 0, taskmem[k])
    end
  end
  p(("| memory per waiting task (B, Lua heap) | %s | Lua coroutine %s | — | ≤ 1,350 B in every wait | %s |")
    :format(#kinds > 0 and table.concat(kinds, ", ") or "n/a", f0(taskmem.coroutine), met(worst and worst <= 1350)))
end
do
  local s = median(tstart.strand or {})
  local lo, hi = range(tstart.strand or {})
  local pl = {}
  local ahead = true
  for _, peer in ipairs { "python", "luv" } do
    local m = median(tstart[peer] or {})
    if m then
      pl[#pl + 1] = ("%s %s µs (strand %sx its time)"):format(peer, f0(m), f2(s and s / m))
      if s and s > m then ahead = false end
    end
  end
  local cold = median(tstart.strand_cold or {})
  local clo, chi = range(tstart.strand_cold or {})
  local coldtxt = cold and ("; every start creating its OS thread (`STRAND_THREAD_IDLE=0`): %s µs (%s–%s)")
    :format(f0(cold), f0(clo), f0(chi)) or ""
  p(("| thread start + join | %s µs (%s–%s) with a finished thread's OS thread reused%s | C %s µs (pthread_create every time) | %s | ≤ 100 µs: ahead of Python and luv | %s |")
    :format(f0(s), f0(lo), f0(hi), coldtxt, f0(median(tstart.C or {})), #pl > 0 and table.concat(pl, ", ") or "n/a",
            met(s and s <= 100 and ahead and (cold == nil or cold <= 100))))
end
do
  local s = cpu2.strand or {}
  local m, lo, hi = median(s), range(s)
  local l, py = median(cpu2.luv or {}), median(cpu2.python or {})
  local x = cpu2.strand_x
  local why = x and (" (CPU time two at once / one after the other %s; steal %s%%, other processes %s%% of the machine)")
    :format(f2(median(x.cpuratio)), f0(100 * (median(x.steal) or 0)), f0(100 * (median(x.others) or 0))) or ""
  local lx, px = x and median(x.loopcpu), cpu2.procs_x and median(cpu2.procs_x.loopcpu)
  if lx then   -- the loops' own CPU time (each worker's), threads against the two processes
    why = why .. ("; the loops' own CPU time two at once / one after the other: threads %s, processes %s")
      :format(f2(lx), f2(px))
  end
  local cold = cpu2.strand_cold
  if cold and median(cold) then
    local clo, chi = range(cold)
    why = why .. ("; every start on a new OS thread (`STRAND_THREAD_IDLE=0`): %s (%s–%s)"):format(f2(median(cold)), f2(clo), f2(chi))
  end
  local fl = cpu2.procs or {}
  local flm, fllo, flhi = median(fl), range(fl)
  local floor = flm and ("2.0 ideal; the machine gives two plain lua5.4 processes %s (%s–%s)"):format(f2(flm), f2(fllo), f2(flhi))
    or "2.0"
  p(("| CPU-bound speedup, 2 threads | %s (%s–%s)%s | %s | luv %s, Python Pool(2) %s | ≥ 1.95, steady (every rep ≥ 1.85) | %s |")
    :format(f2(m), f2(lo), f2(hi), why, floor, f2(l), f2(py), met(m and m >= 1.95 and lo >= 1.85)))
end
do
  local parts, all_ok, any = {}, true, false
  for _, q in ipairs(queue) do
    if q.shape == "1P1C" then
      local r = {}
      for i, v in ipairs(q.s) do if q.c[i] then r[#r + 1] = v / q.c[i] end end
      local m, lo, hi = median(r), range(r)
      local py = median(q.p)
      local label = ("%s %s"):format(q.kind == "str" and "100 B" or "int", q.maxsize == 0 and "unbounded" or ("maxsize " .. q.maxsize))
      parts[#parts + 1] = ("%s: %sx (%s–%s), queue.Queue %sx"):format(label, f2(m), f2(lo), f2(hi),
        f2(py and median(q.c) and py / median(q.c)))
      if q.kind == "str" then any = true; if not (m and m >= 1.0) then all_ok = false end end
    end
  end
  local batch = {}                 -- put_many/get_many(64): shown beside, not the goal's figure
  for _, q in ipairs(queue) do
    if q.shape == "1P1Cmany64" then
      local r = {}
      for i, v in ipairs(q.s) do if q.c[i] then r[#r + 1] = v / q.c[i] end end
      local lo, hi = range(r)
      batch[#batch + 1] = ("%s %s %sx (%s–%s)"):format(q.kind == "str" and "100 B" or "int",
        q.maxsize == 0 and "unbounded" or ("maxsize " .. q.maxsize), f2(median(r)), f2(lo), f2(hi))
    end
  end
  if #batch > 0 then parts[#parts + 1] = "in batches of 64 (`put_many`/`get_many`): " .. table.concat(batch, ", ") end
  p(("| thread queue 1P1C vs the C ring (items/s ratio) | %s | 1.00 (a ring under an adaptive mutex + condvar, items inline) | Python queue.Queue as shown | ≥ 1.0x the C ring in every case (100 B) | %s |")
    :format(#parts > 0 and table.concat(parts, "; ") or "n/a", any and met(all_ok) or "n/a"))
end
p("")
p("Ratios are per rep (strand and the floor measured side by side in the same rep), then the")
p("median and min–max over reps; \"strand vs peer\" divides medians. Absolute figures drift")
p("with the machine; only the ratios are meant to be compared between runs.")
if meta.notes then p(""); p(meta.notes) end
print(table.concat(out, "\n"))
