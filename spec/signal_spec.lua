-- Ctrl-C (SIGINT) while the main program blocks in strand: a child lua5.4 runs a script that
-- blocks, the spec sends SIGINT once it is blocked and checks exactly what the child printed.
local H = require "support.helper"

-- The shell side: start the child, wait until it printed READY<k> before sending the k-th
-- SIGINT, then wait for it (a watchdog kills it after 30 s); prints "exit:<status> ms:<ms>"
-- where ms runs from the last SIGINT to the child's end.
local DRIVER = [[
script=$1; out=$2; n=$3
: >"$out"
lua5.4 "$script" >"$out" 2>&1 &
pid=$!
(sleep 30; kill -9 $pid) </dev/null >/dev/null 2>&1 &
dog=$!
k=1
while [ $k -le $n ]; do
  i=0
  while ! grep -q "READY$k" "$out"; do
    i=$((i+1)); [ $i -gt 2000 ] && break; sleep 0.01
  done
  t0=$(date +%s%N); kill -INT $pid; k=$((k+1))
done
wait $pid; rc=$?
t1=$(date +%s%N)
kill $dog 2>/dev/null
cat "$out"; echo "exit:$rc ms:$(( (t1-t0)/1000000 ))"
]]

-- Run `code` (a whole script) and interrupt it n times; returns the output and the ms.
local function interrupt(code, n)
  local dir = os.tmpname(); os.remove(dir)
  assert(os.execute("mkdir " .. dir))
  local f = assert(io.open(dir .. "/script.lua", "w")); f:write(code); f:close()
  f = assert(io.open(dir .. "/driver.sh", "w")); f:write(DRIVER); f:close()
  local p = io.popen(("sh %s/driver.sh %s/script.lua %s/out %d"):format(dir, dir, dir, n or 1))
  local out = p:read("a")
  p:close()
  os.execute("rm -rf " .. dir)
  local ms = tonumber(out:match("ms:(%d+)\n$"))
  return out:gsub(" ms:%d+\n$", "\n"), ms
end

local PRELUDE = [[
local strand = require "strand"
local socket, queue, thread, sync, selector =
  strand.socket, strand.queue, strand.thread, strand.sync, strand.selector
local function closer(name)
  return setmetatable({}, { __close = function(_, e) print(name, e) end })
end
]]

-- code blocks forever (for 60 s) in the main program, inside pcall with a <close> variable.
local function protected(code)
  return PRELUDE .. ([[
strand.spawn(function() strand.sleep(60) end)     -- a task that is still waiting
print(pcall(function()
  local _ <close> = closer("close")
  print("READY1"); io.stdout:flush()
  %s
end))
print("after")
]]):format(code)
end

local CALLS = {
  ["strand.sleep"] = "strand.sleep(60)",
  ["strand.sleep_until"] = "strand.sleep_until(strand.now() + 60)",
  ["accept"] = "local s = assert(socket.listen('127.0.0.1', 0)); s:accept()",
  ["recv"] = "local a, b = socket.pair(); a:recv(10)",
  ["read('l')"] = "local a, b = socket.pair(); a:write('no newline'); a:read('l')",
  ["q:get (unbounded)"] = "local q = queue.new(); q:get()",
  ["q:get (bounded)"] = "local q = queue.new(2); q:get()",
  ["q:put (full)"] = "local q = queue.new(1); q:put(1); q:put(2)",
  ["q:join"] = "local q = queue.new(); q:put(1); q:join()",
  ["thread:join"] = "local t = thread.new{fn = function() require('strand').sleep(60) end, daemon = true}; t:start(); t:join()",
  ["lock:acquire"] = "local lk = sync.lock(); lk:acquire(); lk:acquire()",
  ["sem:acquire"] = "local s = sync.semaphore(0); s:acquire()",
  ["event:wait"] = "local e = sync.event(); e:wait()",
  ["cond:wait"] = "local c = sync.condition(); c:acquire(); c:wait()",
  ["barrier:wait"] = "local b = sync.barrier(2); b:wait()",
  ["sel:select"] = "local sel = selector.new(); local a, b = socket.pair(); sel:register(a, selector.READ); for _ in sel:select() do end",
  ["strand.select"] = "local a, b = socket.pair(); strand.select({ a }, {}, {})",
  ["strand.run"] = "strand.run(function() strand.sleep(60) end)",
  ["task:join"] = "local t = strand.spawn(function() strand.sleep(60) end); t:join()",
  ["task:result"] = "local t = strand.spawn(function() strand.sleep(60) end); t:result()",
  ["strand.timeout"] = "strand.timeout(60, function() strand.sleep(60) end)",
  ["strand.wait any"] = "local t = strand.spawn(function() strand.sleep(60) end); strand.wait({ t }, { mode = 'any' })",
  ["g:wait"] = "local g = strand.group(); g:spawn(strand.sleep, 60); g:wait()",
}

describe("Ctrl-C (SIGINT) in the main program [" .. (os.getenv("STRAND_POLLER") or "epoll") .. "]", function()
  local names = {}
  for name in pairs(CALLS) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    it(name .. " raises interrupted! at once through pcall and <close>", function()
      local out, ms = interrupt(protected(CALLS[name]))
      local pos = "[^\n]-"      -- lua.c adds the caller's position when there is one, as plain lua5.4
      local want = "^READY1\nclose\t" .. pos .. "interrupted!\nfalse\t" .. pos .. "interrupted!\nafter\nexit:0\n$"
      assert(out:find(want), "output was:\n" .. out)
      -- loose (loaded machines): the call itself would block for 60 s, the watchdog kills at 30
      assert(ms and ms < 10000, "took " .. tostring(ms) .. " ms")
    end)
  end

  it("uncaught, it ends the program like plain lua5.4 (close handlers run, status 1)", function()
    local out = interrupt(PRELUDE .. [[
local _ <close> = closer("main close")
print("READY1"); io.stdout:flush()
strand.sleep(60)
print("not reached")
]])
    assert(out:find("^READY1\nmain close\t[^\n]-interrupted!\nstack traceback:\n"), out)
    assert(out:find("\nlua5.4: [^\n]-interrupted!\nstack traceback:\n.*exit:1\n$"), out)
    assert.is_nil(out:find("not reached"))
  end)

  it("a group being closed by it cancels its children, whose close handlers run", function()
    local out = interrupt(PRELUDE .. [[
print(pcall(function()
  local g <close> = strand.group()
  g:spawn(function()
    local _ <close> = closer("child close")
    strand.sleep(60)
  end)
  print("READY1"); io.stdout:flush()
  g:wait()
end))
]])
    assert.equal("READY1\nchild close\tcancelled: group closed\nfalse\tinterrupted!\nexit:0\n",
      (out:gsub("false\t[^\n]-interrupted!", "false\tinterrupted!")))
  end)

  it("strand.run cancels every task and lets them clean up before it raises (as asyncio.run)", function()
    local out = interrupt(PRELUDE .. [[
print(pcall(strand.run, function()
  strand.spawn(function() local _ <close> = closer("task close"); strand.sleep(60) end)
  strand.spawn(function()
    local ok, e = pcall(strand.sleep, 60)
    print("task pcall", ok, tostring(e))
    strand.sleep(0.05)                          -- its cleanup may still wait
    print("task cleanup done")
  end)
  local _ <close> = closer("main task close")
  print("READY1"); io.stdout:flush()
  strand.sleep(60)
end))
print("after")
]])
    -- cancelled in the order they were spawned: run's own task first
    assert.equal("READY1\nmain task close\tcancelled: interrupted\ntask close\tcancelled: interrupted\n"
      .. "task pcall\tfalse\tcancelled: interrupted\ntask cleanup done\nfalse\tinterrupted!\nafter\nexit:0\n", out)
  end)

  it("a second Ctrl-C kills the process as in plain lua5.4", function()
    local out = interrupt(PRELUDE .. [[
print("READY1"); io.stdout:flush()
print(pcall(strand.sleep, 60))
print("READY2"); io.stdout:flush()
strand.sleep(60)
print("not reached")
]], 2)
    assert.equal("READY1\nfalse\tinterrupted!\nREADY2\nexit:130\n", out)
  end)

  it("a thread's own loop goes on; the main program can block again after catching it", function()
    local out = interrupt(PRELUDE .. [[
local q = queue.new()
local t = thread.start(function(q)
  local strand = require "strand"
  local n = 0
  while q:get() == "tick" do strand.sleep(0.001); n = n + 1 end
  return n
end, q)
print("READY1"); io.stdout:flush()
print(pcall(function() while true do q:put("tick"); strand.sleep(0.001) end end))
q:put("tick"); q:put("stop")
local n = t:result(20)
print(n > 0)
]])
    assert.equal("READY1\nfalse\tinterrupted!\ntrue\nexit:0\n", (out:gsub("false\t[^\n]-interrupted!", "false\tinterrupted!")))
  end)

  it("a task's pcall inside the loop does not swallow it: only the main program sees it", function()
    local out = interrupt(PRELUDE .. [[
local caught = 0
strand.spawn(function()
  while true do
    if not pcall(strand.sleep, 0.001) then caught = caught + 1 end
  end
end)
print("READY1"); io.stdout:flush()
print(pcall(strand.sleep, 60))
print("task caught", caught)
]])
    assert.equal("READY1\nfalse\tinterrupted!\ntask caught\t0\nexit:0\n", out)
  end)
end)
