-- bench/process_wall.lua — where the wall time of one fork + child + exit + wake-up goes: reads
-- `perf script` output of a `perf record -a` of scheduler and system call tracepoints (see
-- bench/process_wall.sh) and prints, for the process PARENT, the median and minimum of each phase
-- of its start+join cycles (µs), and on which CPU each side ran.
-- usage: perf script -i DATA | lua5.4 bench/process_wall.lua PARENT_PID [LABEL]
local parent = tonumber(arg[1]) or error("usage: process_wall.lua PARENT_PID [LABEL]")
local label = arg[2] or tostring(parent)

local cycles, by_child = {}, {}
local cur          -- the cycle whose fork the parent is in (or last made)
local last_wake    -- time of the last wake-up of the parent, not yet followed by its run
local sleeping     -- the parent is off its CPU since (time)

local function num(s) return tonumber(s) end

for line in io.lines() do
  local pid, cpu, t, ev, rest = line:match("^%s*.-%s+(%d+)%s+%[(%d+)%]%s+([%d%.]+):%s+([%w_:]+):%s*(.*)$")
  if pid then
    pid, cpu, t = num(pid), num(cpu), num(t) * 1e6
    if ev == "syscalls:sys_enter_clone" or ev == "syscalls:sys_enter_clone3" then
      if pid == parent then
        if cur then cur.next = t end
        cur = { enter = t, pcpu = cpu }
        cycles[#cycles + 1] = cur
      end
    elseif ev == "syscalls:sys_exit_clone" or ev == "syscalls:sys_exit_clone3" then
      local ret = rest:match("0x(%x+)")
      ret = ret and tonumber(ret, 16)
      if pid == parent and cur and ret and ret > 0 then
        cur.ret, cur.child = t, ret
        by_child[ret] = cur
      elseif by_child[pid] and not by_child[pid].cfirst then
        by_child[pid].cfirst, by_child[pid].ccpu = t, cpu
      end
    elseif ev == "sched:sched_wakeup_new" then
      local c, tc = rest:match("pid=(%d+).-target_cpu=(%d+)")
      if pid == parent and cur and not cur.new then cur.new, cur.newcpu = t, num(tc) end
    elseif ev == "syscalls:sys_enter_exit_group" then
      local cy = by_child[pid]
      if cy then cy.exit = t end
    elseif ev == "sched:sched_process_exit" then
      local c = num(rest:match("pid=(%d+)"))
      if by_child[c] then by_child[c].pexit = t end
    elseif ev == "sched:sched_wakeup" then
      local w = num(rest:match("pid=(%d+)"))
      if w == parent and sleeping then last_wake = t end
    elseif ev == "sched:sched_switch" then
      local pp, st, np = rest:match("prev_pid=(%d+).-prev_state=(%S+).-next_pid=(%d+)")
      pp, np = num(pp), num(np)
      if pp == parent and cur and cur.ret and not cur.off then cur.off = t end
      if pp == parent and st ~= "R" and st ~= "R+" and cur then
        sleeping = t
        if cur.ret and not cur.sleep then cur.sleep = t end
      end
      if np == parent and sleeping then
        if cur then
          cur.sleeps = (cur.sleeps or 0) + 1
          cur.wake = last_wake or t
          cur.run = t
          cur.runcpu = cpu
          cur.slept = (cur.slept or 0) + (t - sleeping)
        end
        sleeping, last_wake = nil, nil
      end
      local cy = by_child[pp]
      if cy and (st == "X" or st == "Z" or st == "X+" or st == "Z+") then cy.cend = t end
    end
  end
end

local phases = {
  { "fork: clone until the child is queued", "enter", "new" },
  { "fork: queued child until clone returns", "new", "ret" },
  { "parent: clone return until off its CPU", "ret", "off" },
  { "parent: clone return until it sleeps", "ret", "sleep" },
  { "child: queued until it runs", "new", "cfirst" },
  { "child: runs until exit_group", "cfirst", "exit" },
  { "child: exit_group until it is gone", "exit", "cend" },
  { "parent: woken (last wake) until it runs", "wake", "run" },
  { "child exit_group until the parent runs", "exit", "run" },
  { "parent: runs until its next clone", "run", "next" },
  { "parent: child gone until its next clone", "cend", "next" },
  { "whole cycle (clone to clone)", "enter", "next" },
}
local function stats(list)
  table.sort(list)
  if #list == 0 then return "-", "-" end
  return ("%.1f"):format(list[(#list + 1) // 2]), ("%.1f"):format(list[1])
end
local n, same, slept = 0, 0, 0
for _, cy in ipairs(cycles) do
  if cy.next and cy.child then
    n = n + 1
    if cy.ccpu and cy.ccpu == cy.pcpu then same = same + 1 end
    if cy.sleep then slept = slept + 1 end
  end
end
print(("%s: %d cycles; the child ran on the parent's CPU in %d, the parent slept in %d")
  :format(label, n, same, slept))
print(("  %-44s %9s %9s"):format("phase (µs)", "median", "min"))
for _, ph in ipairs(phases) do
  local list = {}
  for _, cy in ipairs(cycles) do
    if cy.next and cy.child and cy[ph[2]] and cy[ph[3]] then list[#list + 1] = cy[ph[3]] - cy[ph[2]] end
  end
  local med, min = stats(list)
  print(("  %-44s %9s %9s  (%d)"):format(ph[1], med, min, #list))
end
