-- spec/queue_take_spec.lua — a ring get's fast path (queue.c r_take_plain): the value is made
-- straight from the slot and the position claimed after, so getters racing for one position,
-- a collector step (and a finalizer taking from the same queue) inside the value's making,
-- and every plain kind must each still hand every item out exactly once, in order.
local queue = require "strand.queue"
local thread = require "strand.thread"
local H = require "support.helper"

local LONG = ("y"):rep(112)                        -- the longest string stored in its slot

-- item i as put: every plain kind, a serialized table now and then (the general path)
local function item(i)
  local k = i % 7
  if k == 0 then return ("s%d:"):format(i) .. LONG:sub(1, i % 100) end
  if k == 1 then return i end
  if k == 2 then return i + 0.5 end
  if k == 3 then return ("%d"):format(i) .. LONG:sub(1, 112 - #tostring(i)) end   -- 112 bytes
  if k == 4 then return { i = i } end
  if k == 5 then return i % 2 == 0 end
  return ("t%d"):format(i)
end

describe("a ring get's fast path", function()
  H.guard()

  for _, max in ipairs { 0, 8 } do
    it(("getters racing for each position take every item once, each in order (maxsize %d)"):format(max), function()
      local N, NC = 20000, 3
      local q = queue.new(max)
      local consumers = {}
      for c = 1, NC do
        consumers[c] = assert(thread.start(function(qq)
          local function index_of(v)                 -- as index() above
            local t = type(v)
            if t == "number" then return math.floor(v) end
            if t == "table" then return v.i end
            return tonumber(v:match("^[st]?(%d+)"))
          end
          local got, bools, last, out_of_order = {}, 0, -1, 0
          while true do
            local v = qq:get()
            if v == nil then break end
            if type(v) == "boolean" then
              bools = bools + 1
            else
              local i = index_of(v)
              if i <= last then out_of_order = out_of_order + 1 end
              last = i
              got[#got + 1] = i
            end
          end
          return got, bools, out_of_order
        end, q))
      end
      for i = 1, N do assert.is_true(q:put(item(i))) end
      q:close()
      local seen, count, bools = {}, 0, 0
      for c = 1, NC do
        local ok, got, b, ooo = consumers[c]:join()
        assert.is_true(ok, got)
        assert.equal(0, ooo, "consumer " .. c .. " saw items out of order")
        bools = bools + b
        for _, i in ipairs(got) do
          assert.is_nil(seen[i], "item " .. i .. " twice")
          seen[i] = true
          count = count + 1
        end
      end
      local want_bools = 0
      for i = 1, N do if i % 7 == 5 then want_bools = want_bools + 1 end end
      assert.equal(want_bools, bools)
      assert.equal(N - want_bools, count)
    end)
  end

  it("a finalizer that takes from the queue while a get makes its value: every item once", function()
    -- a collector on every allocation, and objects whose finalizers get from the same queue: a
    -- finalizer runs inside a get's lua_pushlstring, between its look at the slot and its claim
    local q = queue.new()
    assert(thread.start(function(qq) return qq end, q):join())   -- crossed: values are copied
    local N = 3000
    for i = 1, N do assert.is_true(q:put(("f%d:"):format(i) .. LONG:sub(1, 60))) end
    local taken, in_gc = {}, 0
    local function note(v)
      local i = tonumber(v:match("^f(%d+)"))
      assert(taken[i] == nil, "item " .. i .. " twice")
      taken[i] = true
    end
    local mt = { __gc = function()
      local v = q:get_nowait()
      if v ~= nil then in_gc = in_gc + 1; note(v) end
    end }
    collectgarbage("incremental", 0, 1000)         -- pause 0: a step at every allocation
    local ok, err = pcall(function()
      while true do
        for _ = 1, 3 do setmetatable({}, mt) end
        local v = q:get_nowait()
        if v == nil then break end
        note(v)
      end
    end)
    collectgarbage("incremental", 200, 100)
    collectgarbage()
    assert.is_true(ok, err)
    for i = 1, N do assert.is_true(taken[i], "item " .. i .. " lost") end
    assert.is_true(in_gc > 0, "no finalizer took an item")
  end)
end)
