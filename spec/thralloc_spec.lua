-- spec/thralloc_spec.lua — a strand thread's Lua allocator (thread.c: the boot block, then
-- per-class free lists for blocks up to 256 bytes): every size, grown and shrunk across the
-- classes, freed and reused, holds what was written; the same results as the main state's.
local thread = require "strand.thread"
local H = require "support.helper"

-- Builds, frees and rebuilds strings of every length 0..600 and tables whose parts grow and
-- shrink through every class (realloc from one class to another, and to and from big blocks),
-- with full collections between rounds so that freed blocks are taken again: a checksum of
-- everything read back.
local function churn(rounds)
  local sum = 0
  local function add(s) for k = 1, #s, 7 do sum = (sum * 31 + s:byte(k)) % 2147483647 end end
  for r = 1, rounds do
    local keep = {}
    for len = 0, 600 do
      local s = string.format("%d:%d:", r, len)
      s = (s .. ("abcdefghij"):rep(61)):sub(1, len)
      keep[#keep + 1] = s
      if len % 3 == 0 then keep[#keep] = nil end    -- garbage between kept blocks
    end
    collectgarbage("collect")
    for _, s in ipairs(keep) do add(s) end
    local t = {}
    for i = 1, 300 do t[i] = i * r end                -- the array part: 16 B .. KiB, realloc
    for i = 300, 2, -1 do t[i] = nil end
    collectgarbage("collect")                         -- shrinks it again
    for i = 1, 40 do t["k" .. i] = ("v"):rep(i) end   -- the hash part
    local ks = {}
    for k in pairs(t) do ks[#ks + 1] = tostring(k) end
    table.sort(ks)                                    -- (hash order differs between states)
    for _, k in ipairs(ks) do add(k .. tostring(t[k] or t[tonumber(k)])) end
    keep, t = nil, nil
    collectgarbage("collect")
  end
  return sum
end

describe("a strand thread's Lua allocator", function()
  H.guard()

  it("gives blocks of every size back intact, as the main state does", function()
    local rounds = H.work(6, 2)
    local want = churn(rounds)
    local th = thread.start(function(src, n) return load(src)(n) end, string.dump(churn), rounds)
    assert.same({ true, want }, { th:join(H.TIMEOUT) })
  end)

  it("keeps working across many threads, each with its own lists", function()
    local ths = {}
    for i = 1, 4 do
      ths[i] = thread.start(function(src, n) return load(src)(n) end, string.dump(churn), 1)
    end
    local want = churn(1)
    for i = 1, 4 do assert.same({ true, want }, { ths[i]:join(H.TIMEOUT) }) end
  end)
end)
