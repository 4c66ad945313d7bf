-- soak/queue.lua — M messages through one strand queue, two producer and two consumer OS
-- threads; every message is counted and checksummed (count, sum, xor).
-- Usage: lua5.4 soak/queue.lua [messages=1000000] [maxsize=1000]
local strand = require "strand"
local thread = require "strand.thread"
local queue = require "strand.queue"

local M = tonumber(arg[1]) or 1000000
local MAXSIZE = tonumber(arg[2]) or 1000
local q = queue.new(MAXSIZE)
local half = M // 2

local t0 = strand.now()
local c0 = os.clock()
local producers, consumers = {}, {}
for p = 0, 1 do
  producers[#producers + 1] = thread.start(function(qq, first, n)
    for v = first, first + n - 1 do assert(qq:put(v)) end
    return n
  end, q, p * half + 1, p == 0 and half or M - half)
end
for _ = 1, 2 do
  consumers[#consumers + 1] = thread.start(function(qq)
    local count, sum, x = 0, 0, 0
    while true do
      local v = qq:get()
      if v == false then break end
      count = count + 1; sum = sum + v; x = x ~ v
    end
    return count, sum, x
  end, q)
end
local sent = 0
for _, t in ipairs(producers) do
  local ok, n = t:join(600)
  assert(ok, "a producer failed or timed out: " .. tostring(n))
  sent = sent + n
end
q:put(false); q:put(false)
local count, sum, x = 0, 0, 0
for _, t in ipairs(consumers) do
  local ok, c, s, xx = t:join(600)
  assert(ok, "a consumer failed or timed out: " .. tostring(c))
  count = count + c; sum = sum + s; x = x ~ xx
end
local wall = strand.now() - t0
local want_x = 0
for v = 1, M do want_x = want_x ~ v end
local want_sum = M * (M + 1) // 2
local pass = count == M and sum == want_sum and x == want_x and sent == M and q:qsize() == 0
print(("queue soak: %d messages, 2 producer + 2 consumer threads, maxsize %d: received %d, sum %s (want %s), xor %s (want %s), %.1f s, %.0f messages/s"):format(
  M, MAXSIZE, count, sum, want_sum, x, want_x, wall, M / wall))
print("  " .. (pass and "PASS" or "FAIL"))
os.exit(pass and 0 or 1)
