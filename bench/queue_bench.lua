-- bench/queue_bench.lua — strand.queue throughput between OS threads (1 producer/1 consumer and
-- 2/2; integers and 100-byte strings) against the C floor (bench/queue_c_baseline.c: a
-- preallocated ring with the items inline under glibc's adaptive mutex and two condition
-- variables) moving the same serialized payloads and Python's queue.Queue with threads, bounded
-- (maxsize) then unbounded (maxsize 0, Python's default: producers never wait); then uncontended
-- lock acquire/release against threading.Lock and a pthread mutex, with the syscalls counted by
-- strace when it is installed (the fast path makes none).
-- Fair and steady: strand (bench/queue_strand.lua) and C each run in their own process, pinned
-- to the same CPUs (QUEUE_CPUS, default 0,1: taskset -c), one at a time, each run gated on an
-- idle machine; both time the same way (a warm-up round, then from the first put to the last
-- get, read by the threads themselves) over ITEMS items (100k items lasted 10-30 ms: the floor
-- swung 3x); medians (min-max) of QUEUE_REPS and the per-rep ratios to C.
-- env: STRAND_BENCH_ITEMS (2000000; 1000000 QUICK), STRAND_BENCH_PY_ITEMS (200000),
--      STRAND_BENCH_MAXSIZE (1000), STRAND_BENCH_LOCKOPS (2000000), QUEUE_CPUS (0,1),
--      QUEUE_REPS (REPS, at least 5), QUEUE_BATCH (64: the 1P/1C rows again, the producer
--      putting with q:put_many and the consumer taking with q:get_many, QUEUE_BATCH at a
--      time; the single-item row stays the table's figure),
--      QUICK=1 (fewer items, 1P/1C only, no lock figures)
local strand = require "strand"
local queue = require "strand.queue"
local sync = require "strand.sync"
local serial = require "strand.serial"
local B = require "benchlib"

local ITEMS = tonumber(os.getenv("STRAND_BENCH_ITEMS")) or (B.QUICK and 1000000 or 2000000)
local PY_ITEMS = math.min(ITEMS, tonumber(os.getenv("STRAND_BENCH_PY_ITEMS")) or 200000)
local QREPS = tonumber(os.getenv("QUEUE_REPS")) or math.max(B.REPS, 5)
local CPUS = os.getenv("QUEUE_CPUS") or "0,1"
local BATCH = tonumber(os.getenv("QUEUE_BATCH")) or 64
local MAXSIZE = tonumber(os.getenv("STRAND_BENCH_MAXSIZE")) or 1000
local LOCKOPS = tonumber(os.getenv("STRAND_BENCH_LOCKOPS")) or 2000000
local TEXT = ("x"):rep(100)
local PY = B.PY
local sh = B.sh

local function number_in(out, label)
  return tonumber(out:match(label .. " (%d+)"))
end

local cbin = os.tmpname()
local _, cc_ok = sh("cc -O2 -pthread -o " .. cbin .. " bench/queue_c_baseline.c")
local _, pin_ok = sh("taskset -c " .. CPUS .. " true")
local PIN = pin_ok and ("taskset -c " .. CPUS .. " ") or ""
local _, py_ok = sh(PY .. " -c 'import queue, threading'")

local function strand_queue(np, nc, kind, maxsize, batch)
  local out = sh(("%slua5.4 bench/queue_strand.lua %d %d %d %d %s %d"):format(PIN, np, nc, ITEMS, maxsize, kind,
    batch or 1))
  return number_in(out, "items/s") or error("bench/queue_strand.lua: " .. out)
end

local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

local function c_queue(np, nc, kind, maxsize)
  if not cc_ok then return nil end
  local payload = serial.encode(kind == "int" and 123456 or TEXT)
  local out = sh(("%s%s queue %d %d %d %d %s"):format(PIN, cbin, np, nc, ITEMS, maxsize, hex(payload)))
  return number_in(out, "items/s")
end

local function py_queue(np, nc, kind, maxsize)
  if not py_ok then return nil end
  local out = sh((PIN .. PY .. " bench/queue_py.py queue %d %d %d %d %s"):format(np, nc, PY_ITEMS, maxsize, kind))
  return number_in(out, "items/s")
end

local function fmt(x) return x and ("%10.0f"):format(x) or "       n/a" end
local function ratio(a, b) return (a and b) and ("%6.2fx"):format(a / b) or "   n/a" end

local function queue_table(maxsize)
  print(("queue throughput, items/s (%d items, Python %d; maxsize %d; pinned to CPUs %s), median of %d;"
    .. " ratios = strand / peer"):format(ITEMS, PY_ITEMS, maxsize, PIN ~= "" and CPUS or "none", QREPS))
  print("scenario              strand    python     C floor  vs python  vs C (min-max per rep)")
  local cases = { { 1, 1, "int" }, { 1, 1, "str" }, { 2, 2, "int" }, { 2, 2, "str" } }
  if B.QUICK then cases = { { 1, 1, "int" }, { 1, 1, "str" } } end
  for _, sc in ipairs(cases) do
    local np, nc, kind = sc[1], sc[2], sc[3]
    local ss, cs, ps, rs, loaded = {}, {}, {}, {}, false
    local bs, brs = {}, {}                      -- 1P/1C again: put_many and get_many(BATCH)
    local py_time = 0
    for r = 1, QREPS do
      if B.wait_idle() == "loaded" then loaded = true end
      ss[r] = strand_queue(np, nc, kind, maxsize)
      if B.wait_idle() == "loaded" then loaded = true end
      cs[r] = c_queue(np, nc, kind, maxsize)
      -- Python's threads (unbounded above all) can be 100x slower: after 2 s, no more reps
      if py_time < 2 then
        local t0 = strand.now()
        ps[#ps + 1] = py_queue(np, nc, kind, maxsize)
        py_time = py_time + strand.now() - t0
      end
      if cs[r] then rs[r] = ss[r] / cs[r] end
      if np == 1 and nc == 1 then
        if B.wait_idle() == "loaded" then loaded = true end
        bs[r] = strand_queue(np, nc, kind, maxsize, BATCH)
        if cs[r] then brs[r] = bs[r] / cs[r] end
      end
    end
    local s, c, p = B.median(ss), B.median(cs), B.median(ps)
    local lo, hi = B.range(rs)
    print(("%dP/%dC %-4s %s %s %s   %s  %s (%.2f-%.2f)%s"):format(np, nc, kind == "int" and "int" or "100B",
      fmt(s), fmt(p), fmt(c), ratio(s, p), ratio(s, c), lo, hi, loaded and "  loaded" or ""))
    B.record("queue", maxsize, np .. "P" .. nc .. "C", kind, table.concat(ss, ","),
      table.concat(cs, ","), table.concat(ps, ","), loaded and "loaded" or "idle")
    if #bs > 0 then
      local b = B.median(bs)
      lo, hi = B.range(brs)
      print(("  batch of %-3d%s %s %s   %s  %s (%.2f-%.2f)%s"):format(BATCH, fmt(b), "          ", fmt(c),
        "       ", ratio(b, c), lo, hi, loaded and "  loaded" or ""))
      B.record("queue", maxsize, "1P1Cmany" .. BATCH, kind, table.concat(bs, ","),
        table.concat(cs, ","), "-", loaded and "loaded" or "idle")
    end
  end
end

queue_table(MAXSIZE)
if MAXSIZE ~= 0 then queue_table(0) end   -- unbounded (the C floor's and Python's too)
if B.QUICK then os.remove(cbin); os.exit(0) end

local lock = sync.lock()
local t0 = strand.now()
for _ = 1, LOCKOPS do lock:acquire(); lock:release() end
local strand_ops = LOCKOPS / (strand.now() - t0)
local py_ops = py_ok and number_in(sh(PY .. " bench/queue_py.py lock " .. LOCKOPS), "ops/s")
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
