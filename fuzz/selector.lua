-- fuzz/selector.lua — the checks of the `selector` fuzz target (fuzz/selector.c).
-- Input: byte 1 picks the backend (epoll, poll, select), then (op, arg) byte pairs. Six objects:
-- four strand sockets and two plain fds (the fileno of two more sockets), each with a peer.
-- The model keeps, per object, whether it is registered, its events and data, and how many
-- bytes its peer sent that were not read yet. Every result (keys, errors, what select(0)
-- reports) must match it.
local selector = require "strand.selector"
local socket = require "strand.socket"
local READ, WRITE = selector.READ, selector.WRITE
local BACKENDS = { "epoll", "poll", "select" }

return function(input)
  if #input < 1 then return end
  local backend = BACKENDS[input:byte(1) % 3 + 1]
  local sel = selector.new(backend)
  local ends, peers, objs = {}, {}, {}
  for i = 1, 6 do
    ends[i], peers[i] = socket.pair()
    ends[i]:setblocking(false)
    objs[i] = i <= 4 and ends[i] or ends[i]:fileno()
  end
  local model = {}         -- [i] = { events =, data = } when registered
  local pending = {}       -- [i] = bytes the peer sent, not read yet
  for i = 1, 6 do pending[i] = 0 end

  local function check_key(i, key, what)
    local m = model[i]
    assert(type(key) == "userdata" and tostring(key):match("^strand%.selector_key"), what .. ": no key")
    assert(not pcall(function() key.data = "changed" end), what .. ": a key could be written")
    assert(rawequal(key.fileobj, objs[i]), what .. ": wrong fileobj")
    assert(key.fd == ends[i]:fileno(), what .. ": wrong fd")
    assert(key.events == m.events, ("%s: events %s, model %s"):format(what, tostring(key.events), m.events))
    assert(key.data == m.data, what .. ": wrong data")
  end

  local function count()
    local n = 0
    for i = 1, 6 do if model[i] then n = n + 1 end end
    return n
  end

  local ok, err = pcall(function()
    local pos = 2
    while pos + 1 <= #input do
      local op, arg = input:byte(pos) % 9, input:byte(pos + 1)
      pos = pos + 2
      local i = arg % 6 + 1
      local ev = (arg >> 3) % 5              -- 0 and 4 are invalid
      local data = arg >> 5
      local what = ("op %d (%d) on object %d"):format(op, (pos - 2) // 2, i)
      if op <= 1 then
        -- register (0) and modify (1) take the same arguments and check them alike; register
        -- wants an object not registered yet, modify a registered one
        local m = op == 0 and "register" or "modify"
        local okr, res = pcall(sel[m], sel, objs[i], ev, data)
        local misuse = (op == 0 and model[i] and "already registered")
                       or (op == 1 and not model[i] and "not registered")
        if ev == 0 or ev == 4 then
          assert(not okr and res:match("invalid events"), what .. ": bad events accepted: " .. tostring(res))
        elseif misuse then
          assert(not okr and res:match(misuse), ("%s: %s when %s: %s"):format(what, m, misuse, tostring(res)))
        else
          assert(okr, what .. ": " .. m .. " failed: " .. tostring(res))
          model[i] = { events = ev, data = data }
          check_key(i, res, what)
        end
      elseif op == 2 then
        local okr, res = pcall(sel.unregister, sel, objs[i])
        if not model[i] then
          assert(not okr and res:match("not registered"), what .. ": unregister unregistered: " .. tostring(res))
        else
          assert(okr, what .. ": unregister failed: " .. tostring(res))
          check_key(i, res, what)
          model[i] = nil
        end
      elseif op == 3 then
        local key = sel:get_key(objs[i])
        if model[i] then check_key(i, key, what) else assert(key == nil, what .. ": key of unregistered") end
      elseif op == 4 or op == 5 then         -- the peer sends 1..8 bytes
        local n = arg % 8 + 1
        assert(peers[i]:send(("p"):rep(n)) == n)
        pending[i] = pending[i] + n
      elseif op == 6 then                    -- read everything pending
        if pending[i] > 0 then
          local got = 0
          while got < pending[i] do
            local s = ends[i]:recv(65536)
            assert(s, what .. ": pending bytes missing")
            got = got + #s
          end
          pending[i] = 0
        end
      elseif op == 7 then                    -- select(0) against the model
        local seen = {}
        for key, mask in sel:select(0) do
          local j
          for k = 1, 6 do if rawequal(key.fileobj, objs[k]) then j = k end end
          assert(j and model[j], what .. ": select reported an unregistered object")
          assert(not seen[j], what .. ": reported twice")
          seen[j] = mask
        end
        for k = 1, 6 do
          local want = 0
          if model[k] then
            if model[k].events & READ ~= 0 and pending[k] > 0 then want = want | READ end
            if model[k].events & WRITE ~= 0 then want = want | WRITE end
          end
          assert((seen[k] or 0) == want, ("%s: object %d ready %d, model %d"):format(what, k, seen[k] or 0, want))
        end
      else                                   -- sizes
        assert(#sel == count(), what .. ": #sel")
        local n = 0
        for _ in pairs(sel:get_map()) do n = n + 1 end
        assert(n == count(), what .. ": get_map size")
      end
    end
  end)
  sel:close()
  for i = 1, 6 do ends[i]:close(); peers[i]:close() end
  if not ok then error(("[%s] %s"):format(backend, tostring(err)), 0) end
end
