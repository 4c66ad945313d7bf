-- spec/docs_spec.lua — every function a module exports (and every method of its objects) has a
-- heading on its page docs/<module>.md; modules that do not load here are skipped (pending).
local H = require "support.helper"

-- A page's headings: the lines starting with '#'.
local function headings(page)
  local f = io.open("docs/" .. page .. ".md")
  if not f then return nil end
  local out = {}
  for line in f:lines() do
    if line:match("^#") then out[#out + 1] = line end
  end
  f:close()
  return table.concat(out, "\n")
end

local function exported(t)
  local names = {}
  if type(t) ~= "table" then return names end
  for k, v in pairs(t) do
    if type(k) == "string" and type(v) == "function" and not k:match("^_") then names[#names + 1] = k end
  end
  table.sort(names)
  return names
end

local function methods_of(obj)
  local mt = getmetatable(obj)
  if type(mt) ~= "table" then return {} end
  return exported(mt.__index)
end

-- Missing entries: "module.name(" for functions, ":name(" for methods.
local function missing(page, funcs, meths)
  local h = headings(page)
  if not h then return { "docs/" .. page .. ".md does not exist" } end
  local miss = {}
  for _, n in ipairs(funcs) do
    if not h:find("%." .. n .. "[%({]") then miss[#miss + 1] = "function " .. n end
  end
  for _, n in ipairs(meths) do
    if not h:find(":" .. n .. "[%({]") then miss[#miss + 1] = "method " .. n end
  end
  return miss
end

-- module name -> page, and a function making sample objects (closed afterwards) for methods.
local pages = {
  { "strand", "strand", function(m)
      local g = m.group()
      return { g, names = { "join", "result", "cancel", "status" } }, function() g:close() end
    end },
  { "strand.socket", "socket", function(m)
      local s = m.tcp()
      return { s }, function() s:close() end
    end },
  { "strand.selector", "selector", function(m)
      local sel = m.new()
      return { sel }, function() sel:close() end
    end },
  { "strand.thread", "thread", function()
      return { names = { "start", "join", "result", "is_alive" } }
    end },
  { "strand.sync", "sync", function(m)
      return { m.lock(), m.rlock(), m.semaphore(1), m.bounded_semaphore(1), m.event(),
               m.condition(), m.barrier(2) }
    end },
  { "strand.queue", "queue", function(m)
      local q = m.new()
      return { q }, function() q:close() end
    end },
  { "strand.shared", "shared", function()
      return { names = { "keys", "items", "len", "update", "incr", "append" } }
    end },
  { "strand.serial", "serial" },
  { "strand.server", "server", function(m)
      local srv = assert(m.tcp { handler = function() end })
      return { srv }, function() srv:close() end
    end },
  { "strand.luasocket", "luasocket" },
  { "strand.process", "process", function(m)
      local a, b = m.pipe()
      return { a, names = { "start", "join", "result", "is_alive", "terminate", "kill", "signal",
                            "wait", "poll" } },
        function() a:close(); b:close() end
    end },
  { "strand.pool", "pool", function()
      return { names = { "apply", "apply_async", "submit", "map", "imap", "imap_unordered", "close",
                         "join", "terminate", "pids", "result", "done", "cancel", "cancelled",
                         "status", "on_done" } }
    end },
  { "strand.ssh", "ssh", function()
      return { names = { "run", "exec", "shell", "sftp", "scp_get", "scp_put", "forward",
                         "fingerprint", "close" } }
    end },
}

describe("docs", function()
  H.guard { threads = false }

  for _, p in ipairs(pages) do
    local modname, page, sample = p[1], p[2], p[3]
    it(("docs/%s.md documents every function of %s"):format(page, modname), function()
      local ok, m = pcall(require, modname)
      if not ok then
        pending(modname .. " does not load in this build: " .. tostring(m):match("^[^\n]*"))
        return
      end
      local meths, seen = {}, {}
      if sample then
        local objs, cleanup = sample(m)
        for _, o in ipairs(objs) do
          for _, n in ipairs(methods_of(o)) do
            if not seen[n] then seen[n] = true; meths[#meths + 1] = n end
          end
        end
        for _, n in ipairs(objs.names or {}) do
          if not seen[n] then seen[n] = true; meths[#meths + 1] = n end
        end
        if cleanup then cleanup() end
      end
      local miss = missing(page, exported(m), meths)
      assert(#miss == 0, ("docs/%s.md lacks a heading for: %s"):format(page, table.concat(miss, ", ")))
    end)
  end

  it("docs/python.md maps every Python module of the reference material", function()
    local f = assert(io.open("docs/python.md"))
    local text = f:read("a")
    f:close()
    for _, name in ipairs { "socket", "socketserver", "select", "selectors", "threading", "queue",
                            "multiprocessing", "concurrent.futures", "gevent", "paramiko" } do
      assert(text:find("\n## " .. name, 1, true) or text:find("\n## `" .. name, 1, true),
             "docs/python.md has no section for " .. name)
    end
  end)

  it("the check fails for a function without a heading", function()
    assert.same({ "function nowhere_documented" }, missing("serial", { "encode", "nowhere_documented" }, {}))
    assert.same({ "method bogus" }, missing("socket", {}, { "recv", "bogus" }))
  end)
end)
