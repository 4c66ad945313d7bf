-- bench/queue_bench.lua — strand.queue throughput between OS threads (1 producer/1 consumer and
-- 2/2; integers and 100-byte strings) against Python's queue.Queue with threads and a plain C
-- mutex+condvar queue moving the same serialized payloads, bounded (maxsize) then unbounded
-- (maxsize 0, Python's default: producers never wait); then uncontended lock
-- acquire/release against threading.Lock and a pthread mutex, with the syscalls counted by
-- strace when it is installed (the fast path makes none).
-- env: STRAND_BENCH_ITEMS (200000), STRAND_BENCH_MAXSIZE (1000), STRAND_BENCH_LOCKOPS (2000000)
local strand = require "strand"
local thread = require "strand.thread"
local queue = require "strand.queue"
local sync = require "strand.sync"
local serial = require "strand.serial"

local ITEMS = tonumber(os.getenv("STRAND_BENCH_ITEMS")) or 200000
local MAXSIZE = tonumber(os.getenv("STRAND_BENCH_MAXSIZE")) or 1000
local LOCKOPS = tonumber(os.getenv("STRAND_BENCH_LOCKOPS")) or 2000000
local TEXT = ("x"):rep(100)
local PEER_SECONDS = 2

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end

local function number_in(out, label)
  return tonumber(out:match(label .. " (%d+)"))
end

local cbin = os.tmpname()
local _, cc_ok = sh("cc -O2 -pthread -o " .. cbin .. " bench/queue_c_baseline.c")
local _, py_ok = sh("python3 -c 'import queue, threading'")

local function strand_queue(np, nc, kind, maxsize)
  local q = queue.new(maxsize)
  local per = ITEMS // np
  local t0 = strand.now()
  local consumers, producers = {}, {}
  for i = 1, nc do
    consumers[i] = thread.start(function(qq)
      local n = 0
      while qq:get() ~= nil do n = n + 1 end
      return n
    end, q)
  end
  for i = 1, np do
    producers[i] = thread.start(function(qq, n, k, text)
      if k == "int" then
        for v = 1, n do qq:put(v) end
      else
        for _ = 1, n do qq:put(text) end
      end
    end, q, per, kind, TEXT)
  end
  for i = 1, np do assert(producers[i]:join()) end
  q:close()
  local got = 0
  for i = 1, nc do
    local ok, n = consumers[i]:join()
    assert(ok, n)
    got = got + n
  end
  assert(got == per * np, "lost items")
  return per * np / (strand.now() - t0)
end

local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

local function c_queue(np, nc, kind, maxsize)
  if not cc_ok then return nil end
  local payload = serial.encode(kind == "int" and 123456 or TEXT)
  local out = sh(("%s queue %d %d %d %d %s"):format(cbin, np, nc, ITEMS, maxsize, hex(payload)))
  return number_in(out, "items/s")
end

local function py_queue(np, nc, kind, maxsize)
  if not py_ok then return nil end
  local out = sh(("python3 bench/queue_py.py queue %d %d %d %d %s"):format(np, nc, ITEMS, maxsize, kind))
  return number_in(out, "items/s")
end

local function fmt(x) return x and ("%10.0f"):format(x) or "       n/a" end
local function ratio(a, b) return (a and b) and ("%6.2fx"):format(a / b) or "   n/a" end

local function queue_table(maxsize)
  print(("queue throughput, items/s (%d items, maxsize %d); ratios = strand / peer"):format(ITEMS, maxsize))
  print("scenario              strand    python     C floor  vs python  vs C")
  for _, sc in ipairs { { 1, 1, "int" }, { 1, 1, "str" }, { 2, 2, "int" }, { 2, 2, "str" } } do
    local np, nc, kind = sc[1], sc[2], sc[3]
    local best = 0
    for _ = 1, 3 do best = math.max(best, strand_queue(np, nc, kind, maxsize)) end
    -- peers: best of 3 too, but a slow one (Python's threads, unbounded, can be 100x slower)
    -- stops repeating after PEER_SECONDS
    local function peer(run)
      local best, t0 = 0, strand.now()
      for _ = 1, 3 do
        best = math.max(best, run(np, nc, kind, maxsize) or 0)
        if strand.now() - t0 > PEER_SECONDS then break end
      end
      return best > 0 and best or nil
    end
    local py, c = peer(py_queue), peer(c_queue)
    print(("%dP/%dC %-4s %s %s %s   %s  %s"):format(np, nc, kind == "int" and "int" or "100B",
      fmt(best), fmt(py), fmt(c), ratio(best, py), ratio(best, c)))
  end
end

queue_table(MAXSIZE)
if MAXSIZE ~= 0 then queue_table(0) end   -- unbounded (the C floor's and Python's too)

local lock = sync.lock()
local t0 = strand.now()
for _ = 1, LOCKOPS do lock:acquire(); lock:release() end
local strand_ops = LOCKOPS / (strand.now() - t0)
local py_ops = py_ok and number_in(sh("python3 bench/queue_py.py lock " .. LOCKOPS), "ops/s")
local c_ops = cc_ok and number_in(sh(cbin .. " lock " .. LOCKOPS * 10), "ops/s")
print(("uncontended lock acquire+release: strand %.0f ops/s, python %s ops/s (%s), pthread %s ops/s (%s)")
  :format(strand_ops, py_ops and ("%.0f"):format(py_ops) or "n/a", ratio(strand_ops, py_ops),
          c_ops and ("%.0f"):format(c_ops) or "n/a", ratio(strand_ops, c_ops)))

-- the fast path makes no syscall: count them for 1e6 more round trips than for none
local _, has_strace = sh("strace -V")
if has_strace then
  local function syscalls(n)
    local f = os.tmpname()
    local code = ("local l = require('strand.sync').lock(); for _ = 1, %d do l:acquire(); l:release() end"):format(n)
    sh(("strace -f -c -o %s lua5.4 -e %q"):format(f, code))
    local h = io.open(f); local s = h and h:read("a") or ""; if h then h:close() end
    os.remove(f)
    return tonumber(s:match("(%d+)%s+%d*%s*total")) or tonumber(s:match("%s(%d+)%s+[%d%s]*total"))
  end
  local base, many = syscalls(0), syscalls(1000000)
  print(("syscalls (strace -c -f): %s for 0 acquire+release, %s for 1000000"):format(base, many))
end
os.remove(cbin)
