-- spec/urfix10_spec.lua — io_uring poller fixes of session 10, checked under every poller: a submit
-- that meets EBUSY (full CQ) reaps instead of spinning, Ctrl-C during the watch, forks beside threads.
local core = require "strand.core"
local H = require "support.helper"

describe("urfix10 [" .. core.backend() .. "]", function()
  H.guard()

  it("a submit that meets EBUSY (a CQ that cannot take more) reaps and goes on: no spin", H.checked(function()
    -- STRAND_URING_TESTFULL=2 (io_uring only): as a kernel whose CQ overflowed, every submit fails
    -- with EBUSY while the CQ holds completions not reaped (and the SQ counts as full whenever a
    -- request is queued). Exchanges re-arm recvs from completion handlers (a submit inside a reap),
    -- and closing a socket whose multishot recv has just completed submits its cancel at once:
    -- retried blind, that submit spun for ever. Bounded by `timeout`.
    local out, ok = H.lua([[
local strand = require "strand"
local socket = require "strand.socket"
local core = require "strand.core"
local ps = {}
for i = 1, 8 do ps[i] = { assert(socket.pair()) } end
strand.run(function()
  for round = 1, 10 do
    local readers = {}
    for i, p in ipairs(ps) do readers[i] = strand.spawn(function() return p[2]:recv(100) end) end
    strand.sleep(0.001)
    for i, p in ipairs(ps) do assert(p[1]:sendall("m" .. round .. "." .. i)) end
    for i, r in ipairs(readers) do
      local _, got = r:join()
      assert(got == "m" .. round .. "." .. i, got)
    end
  end
end)
for _, p in ipairs(ps) do
  assert(p[1]:send("late"))      -- p[2]'s multishot recv completes (not reaped) as send(2) returns
  p[2]:close(); p[1]:close()
end
local st = core._uring.stats()
print("RESULT", st == nil or st.busy > 0)
]], "STRAND_URING_TESTFULL=2 timeout -s KILL 60")
    assert.is_true(ok, out)
    assert.equal("RESULT\ttrue", out:match("RESULT[^\n]*"))
  end))
end)
