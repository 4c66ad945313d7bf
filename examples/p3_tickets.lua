-- P3: ticket buying: several processes buy from a count kept in a JSON-like file, under a
-- process lock; exactly as many tickets are sold as there were.
-- Usage: ./strand-run examples/p3_tickets.lua [tickets (20)] [buyers (5)]
local strand = require "strand"
local process = require "strand.process"
local sync = require "strand.sync"
local tickets, buyers = tonumber(arg[1]) or 20, tonumber(arg[2]) or 5

local file = os.tmpname()
local function save(n) local f = assert(io.open(file, "w")); f:write(('{"count": %d}'):format(n)); f:close() end
local function load()
  local f = assert(io.open(file)); local s = f:read("a"); f:close()
  return assert(tonumber(s:match('"count":%s*(%d+)')))
end
save(tickets)

local lock = sync.lock()
local function buyer(id)
  local bought = 0
  while true do
    local held <close> = lock:acquire()
    local left = load()                -- read, think a little, write: a race without the lock
    if left == 0 then break end
    strand.sleep(0.001)
    save(left - 1)
    bought = bought + 1
  end
  return bought
end

local ps = {}
for i = 1, buyers do ps[i] = process.start(buyer, i) end
local sold = 0
for i = 1, buyers do
  local n = ps[i]:result()
  print(("buyer %d (pid %d) bought %d ticket(s)"):format(i, ps[i].pid, n))
  sold = sold + n
end
print(("%d tickets, %d sold, %d left in the file"):format(tickets, sold, load()))
os.remove(file)
print("p3: done")
