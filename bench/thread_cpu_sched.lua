-- bench/thread_cpu_sched.lua — reads the scheduler's events of `threads_bench.lua run cpu`
-- processes (bench/thread_cpu_sched.sh: perf record -a -k mono, their runs marked) and prints, per
-- kind of run (one after the other, two at once), where the workers' time went: CPU time, run-queue
-- wait by who held the CPU, time both workers sat on one CPU, migrations, wake-up placement.
-- usage: lua5.4 bench/thread_cpu_sched.lua LABEL SCRIPT1 OUT1 [SCRIPT2 OUT2 ...]
--   SCRIPTi: `perf script -F comm,pid,tid,cpu,time,event,trace` of one process's record; OUTi: its
--   stdout with its "mark pid P" and "mark seq|par|end T" lines (CLOCK_MONOTONIC, as perf's -k mono)

local label = arg[1] or "?"
local main_pid                     -- the tgid that writes the marks
local ours = {}                    -- tid -> "main" | "worker" | "iou" (this run's tasks)
local running = {}                 -- cpu -> tid on it (0 idle)
local cpu_of = {}                  -- tid -> its cpu (last seen)
local waiting = {}                 -- tid -> true while runnable and not running
local on = {}                      -- tid -> true while on a CPU
local marks, mi
local t_last, t_phase
local acc = {}                     -- kind -> totals
local cur                          -- the totals of the phase running now

local function totals(kind)
  acc[kind] = acc[kind] or { n = 0, wall = 0, run = 0, main = 0, iou = 0, wait_self = 0,
    wait_other = 0, wait_idle = 0, shared = 0, migr = 0, wakes = 0, wake_busy_self = 0,
    wake_busy_other = 0, wake_here = 0, main_preempted = 0, both_on = 0, mwait_self = 0, mwait_other = 0, main_wakes = 0, both_run_at = 0,
    tlb = {}, seen = {} }
  return acc[kind]
end

-- Time from t_last to t: each of our tasks on a CPU or waiting for one adds it to its account.
local function advance(t)
  if cur and t_last and t > t_last then
    local dt = t - t_last
    local cpus_w, non = {}, 0
    for tid, k in pairs(ours) do
      if on[tid] then
        if k == "worker" then cur.run = cur.run + dt; non = non + 1
        elseif k == "main" then cur.main = cur.main + dt
        else cur.iou = cur.iou + dt end
      end
      if k == "worker" and (on[tid] or waiting[tid]) then
        local c = cpu_of[tid]
        if c then
          if cpus_w[c] then cur.shared = cur.shared + dt end
          cpus_w[c] = true
        end
      end
      if k == "main" and waiting[tid] then          -- the main thread kept from its CPU
        local holder = running[cpu_of[tid] or -1]
        if holder and holder ~= 0 and ours[holder] then cur.mwait_self = cur.mwait_self + dt
        elseif holder and holder ~= 0 then cur.mwait_other = cur.mwait_other + dt end
      end
      if k == "worker" and waiting[tid] then
        local holder = running[cpu_of[tid] or -1]
        if holder == nil or holder == 0 then cur.wait_idle = cur.wait_idle + dt
        elseif ours[holder] then cur.wait_self = cur.wait_self + dt
        else cur.wait_other = cur.wait_other + dt end
      end
    end
    if non >= 2 then cur.both_on = cur.both_on + dt end
  end
  t_last = t
end

local function adopt(tid, parent)
  if ours[tid] or not ours[parent] then return end
  ours[tid] = "worker"
end

local function feed(line)
  local comm, pid, tid, cpu, t, ev, rest =
    line:match("^%s*(.-)%s+(%-?%d+)/(%-?%d+)%s+%[(%d+)%]%s+([%d.]+):%s+([%w_:]+):%s*(.*)$")
  if comm then
    pid, tid, cpu, t = tonumber(pid), tonumber(tid), tonumber(cpu), tonumber(t)
    if main_pid and pid == main_pid and not ours[tid] then
      ours[tid] = comm:match("^iou") and "iou" or "worker"
    end
    while marks[mi] and marks[mi][2] <= t do         -- the runs that began or ended by now
      advance(marks[mi][2])
      local what = marks[mi][1]
      if what == "end" then
        if cur then cur.wall = cur.wall + (marks[mi][2] - t_phase); cur.n = cur.n + 1 end
        cur = nil
      else
        cur = totals(what); t_phase = marks[mi][2]; cur.seen = {}; cur.nseen = 0
      end
      mi = mi + 1
    end
    advance(t)
    if ev == "sched:sched_switch" then
      local ptid, pstate, ntid = rest:match("prev_pid=(%d+) .-prev_state=(%S+) ==> .-next_pid=(%d+)")
      ptid, ntid = tonumber(ptid), tonumber(ntid)
      on[ptid] = nil
      if pstate == "R" or pstate == "R+" then
        waiting[ptid] = true
        if cur and ours[ptid] == "main" and ours[ntid] == "worker" then cur.main_preempted = cur.main_preempted + 1 end
      end
      if cur and ours[ntid] == "worker" and not cur.seen[ntid] then   -- a worker's first run in this run
        cur.seen[ntid] = true
        cur.nseen = (cur.nseen or 0) + 1
        if cur.nseen == 2 then cur.both_run_at = cur.both_run_at + (t - t_phase) end
      end
      running[cpu] = ntid
      on[ntid] = true; waiting[ntid] = nil; cpu_of[ntid] = cpu
      if ptid ~= 0 then cpu_of[ptid] = cpu end
    elseif ev == "sched:sched_wakeup" or ev == "sched:sched_wakeup_new" then
      local wtid, target = rest:match("pid=(%d+) .-target_cpu=(%d+)")
      wtid, target = tonumber(wtid), tonumber(target)
      if not on[wtid] then waiting[wtid] = true end
      cpu_of[wtid] = target
      if cur and ours[wtid] == "main" then cur.main_wakes = cur.main_wakes + 1 end
      if cur and ours[wtid] == "worker" then
        cur.wakes = cur.wakes + 1
        if target == cpu then cur.wake_here = cur.wake_here + 1 end
        local holder = running[target]
        if holder and holder ~= 0 then
          if ours[holder] then cur.wake_busy_self = cur.wake_busy_self + 1
          else cur.wake_busy_other = cur.wake_busy_other + 1 end
        end
      end
    elseif ev == "sched:sched_migrate_task" then
      local mtid, dest = rest:match("pid=(%d+) .-dest_cpu=(%d+)")
      mtid = tonumber(mtid)
      cpu_of[mtid] = tonumber(dest)
      if cur and ours[mtid] == "worker" then cur.migr = cur.migr + 1 end
    elseif ev == "sched:sched_process_fork" then
      local parent, child = rest:match("pid=(%d+) child_comm=.- child_pid=(%d+)")
      if parent then adopt(tonumber(child), tonumber(parent)) end
    elseif ev == "tlb:tlb_flush" then             -- (reason 1: a shootdown this CPU received)
      if cur and ours[running[cpu] or -1] then
        local r = rest:match("reason:([%w ]-) %(") or "?"
        cur.tlb[r] = (cur.tlb[r] or 0) + 1
      end
    elseif ev == "sched:sched_process_exit" then
      local xtid = tonumber(rest:match("pid=(%d+)"))
      if xtid then on[xtid] = nil; waiting[xtid] = nil end
    end
  end
end

for i = 2, #arg - 1, 2 do
  main_pid, ours, running, cpu_of, waiting, on, cur, t_last = nil, {}, {}, {}, {}, {}, nil, nil
  marks, mi = {}, 1
  for l in io.lines(arg[i + 1]) do
    local what, t = l:match("^mark (%a+) ([%d.]+)")
    if what == "pid" then main_pid = tonumber(t); ours[main_pid] = "main"
    elseif what then marks[#marks + 1] = { what, tonumber(t) } end
  end
  for line in io.lines(arg[i]) do feed(line) end
end

local function ms(x) return ("%8.2f"):format(x * 1e3) end
print(("%s: per run (mean of each kind), ms; wait = a worker runnable but not running, by who held its CPU"):format(label))
print("  kind  runs     wall  workers-CPU  main-CPU  iou-CPU  wait:ours  wait:others  wait:idle  both-on-1-CPU  migr  wakes(here/busy-ours/busy-other)")
for _, kind in ipairs { "seq", "par" } do
  local a = acc[kind]
  if a and a.n > 0 then
    local n = a.n
    print(("  %-4s %5d %s     %s  %s %s   %s     %s   %s       %s  %5.1f  %5.1f (%4.1f/%4.1f/%4.1f)"):format(kind, n,
      ms(a.wall / n), ms(a.run / n), ms(a.main / n), ms(a.iou / n), ms(a.wait_self / n), ms(a.wait_other / n),
      ms(a.wait_idle / n), ms(a.shared / n), a.migr / n, a.wakes / n, a.wake_here / n, a.wake_busy_self / n,
      a.wake_busy_other / n))
  end
end
print("  kind  both workers on a CPU (ms, share of the wall)  main kept waiting by a worker / by others (ms)  main preempted by a worker  main wake-ups  2nd worker's first run after the start (ms)  TLB flushes on our CPUs by reason")
for _, kind in ipairs { "seq", "par" } do
  local a = acc[kind]
  if a and a.n > 0 then
    local tl = {}
    for r, k in pairs(a.tlb) do tl[#tl + 1] = ("%s:%.1f"):format(r, k / a.n) end
    table.sort(tl)
    print(("  %-4s %s (%5.1f%%) %s / %s %27.2f %14.2f %44s  %s"):format(kind, ms(a.both_on / a.n), 100 * a.both_on / a.wall,
      ms(a.mwait_self / a.n), ms(a.mwait_other / a.n), a.main_preempted / a.n, a.main_wakes / a.n,
      kind == "par" and ms(a.both_run_at / a.n) or "-", table.concat(tl, " ")))
  end
end
local s, p = acc.seq, acc.par
if s and p and s.n > 0 and p.n > 0 then
  print(("  worker CPU two at once / one after the other: %.4f; wall one after the other / two at once: %.4f")
    :format((p.run / p.n) / (s.run / s.n), (s.wall / s.n) / (p.wall / p.n)))
end
