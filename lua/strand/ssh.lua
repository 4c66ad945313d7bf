-- strand.ssh — SSH sessions, channels and SFTP over libssh2, cooperative (csrc/ssh.c, sshchan.c,
-- sftp.c). This file owns connect (transport, host key policy, authentication, ~/.ssh/config,
-- ProxyJump with any number of hops), run, exec, shell/expect, scp and the Lua halves of the
-- SFTP methods.
--
-- Behaviour worth knowing (the contract is API.md "strand.ssh"):
--  * Every call is cooperative: libssh2 runs non-blocking on the session's socket; when it says
--    EAGAIN the task waits for exactly the direction libssh2_session_block_directions names.
--    Many sessions and channels run at once in one thread; tasks may share a session.
--  * TCP_NODELAY is set on the socket and TCP_QUICKACK re-armed after every read (libssh2's recv
--    callback): without them each round trip can stall on delayed ACKs (~40 ms).
--  * Host keys: host_key="strict" (default) needs the key in known_hosts (default
--    ~/.ssh/known_hosts); "accept-new" adds an unknown key (the file is created 0600) and still
--    refuses a changed one; "ignore" checks nothing; a function(host, "SHA256:...", keytype) decides.
--    A refused key ends the connection before any credential is sent: nil, "host key mismatch"
--    (changed key) or nil, "unknown host key" (not in the file).
--  * Authentication, in this order: key files (key=, or IdentityFile from the config), the agent
--    (agent=true), then password (password auth, or keyboard-interactive answering every prompt
--    with it). Key types with libssh2 1.10: ed25519 and ecdsa (OpenSSH and PEM formats,
--    passphrases), rsa only where the server accepts SHA-1 "ssh-rsa" signatures (OpenSSH 8.8+
--    refuses them by default: the error says so); rsa-sha2 needs libssh2 >= 1.11.
--  * Failures are nil, message, CODE; messages never contain passwords or passphrases.
--  * ch:wait() discards output not read yet (a full window could otherwise stall the remote
--    process); run() collects stdout and stderr itself.
--  * Compression is off. keepalive=seconds starts a task sending keepalives until s:close().
local core = require "strand.core"
local socket = require "strand.socket"

-- the C side is its own module, strand/sshcore.so (linked with libssh2): a program that never
-- requires strand.ssh never maps libssh2 or libcrypto (docs/internals.md "The SSH module")
local C = require "strand.sshcore"

-- A loop that keeps moving data (each call answered at once while the peer keeps up) lets the
-- loop's other tasks run after every TURN bytes, as the C copy steps do (ssh.h SSH_TURN_BYTES).
local TURN = 1024 * 1024
local function turn(moved, n)
  moved = moved + n
  if moved < TURN then return moved end
  core.sleep(0)
  return 0
end

local M = {}
local now, spawn = core.now, core.spawn

local Session = C.session_meta.methods
local Channel = debug.getregistry()["strand.ssh.channel"].methods
local extra = setmetatable({}, { __mode = "k" })   -- session -> Lua-side state
-- a channel released at once, without the close handshake (its __gc: sshchan.c chan_release)
local release_channel = debug.getregistry()["strand.ssh.channel"].__gc

local function remaining(deadline)
  if deadline == nil then return nil end
  local r = deadline - now()
  return r > 0 and r or 0
end

local function check_opts(opts, arg, fname)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("bad argument #%d to '%s' (table expected, got %s)"):format(arg, fname, type(opts)), 3)
  end
  return opts
end

-- A timeout argument or option: nil, or a number >= 0 (NaN refused).
local function check_timeout(t, arg, fname, level)
  if t ~= nil and (type(t) ~= "number" or not (t >= 0)) then
    error(("bad argument #%d to '%s' (timeout must be a number >= 0)"):format(arg, fname), (level or 2) + 1)
  end
  return t
end

-- A local file that cannot be opened or read: nil, io's message ("path: No such file or
-- directory"), the errno's code ("ENOENT", "EACCES", "EISDIR"...).
local function local_fail(msg, errno)
  return nil, msg, math.type(errno) == "integer" and C._errname(errno) or "EIO"
end

-- Opens a local file to read from, as io.open but failing (local_fail) for what opens and then
-- cannot be read: a directory. -> file | nil, err, code
local function open_source(path)
  local f, err, errno = io.open(path, "rb")
  if not f then return local_fail(err, errno) end
  local probe, rerr, rno = f:read(0)
  if probe == nil and rerr then
    f:close()
    return local_fail(path .. ": " .. rerr, rno)
  end
  return f
end

local function home() return os.getenv("HOME") or "/" end

local function expand_path(p, ctx)
  p = p:gsub("^~", home())
  if ctx then
    p = p:gsub("%%(.)", function(c)
      if c == "h" then return ctx.host elseif c == "p" then return tostring(ctx.port)
      elseif c == "r" then return ctx.user elseif c == "u" then return os.getenv("USER") or ""
      elseif c == "d" then return home() elseif c == "%" then return "%" end
    end)
  end
  return p
end

-- {==== ~/.ssh/config (the subset paramiko's SSHConfig and OpenSSH agree on)

local function glob_match(pat, s)
  local lp = "^" .. pat:gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0"):gsub("%*", ".*"):gsub("%?", ".") .. "$"
  return s:match(lp) ~= nil
end

local function host_matches(patterns, host)
  local matched = false
  for _, pat in ipairs(patterns) do
    local neg = pat:sub(1, 1) == "!"
    if neg then
      if glob_match(pat:sub(2), host) then return false end
    elseif glob_match(pat, host) then
      matched = true
    end
  end
  return matched
end

--- ssh.read_config(path, host) -> {hostname=, port=, user=, identityfile={...}, proxyjump=}
--- (first value wins, as in OpenSSH; identityfile accumulates). A missing file gives {}.
function M.read_config(path, host)
  local f = io.open(path)
  local r = { identityfile = {} }
  if not f then return r end
  local active = true
  for line in f:lines() do
    line = line:gsub("^%s+", ""):gsub("%s+$", "")
    if line ~= "" and line:sub(1, 1) ~= "#" then
      local key, value = line:match("^(%S+)%s*=%s*(.-)$")
      if not key then key, value = line:match("^(%S+)%s+(.-)$") end
      if key then
        key = key:lower()
        value = value:gsub('^"(.*)"$', "%1")
        if key == "host" then
          local pats = {}
          for p in value:gmatch("%S+") do pats[#pats + 1] = p end
          active = host_matches(pats, host)
        elseif key == "match" then
          active = value:lower():match("^all") ~= nil
        elseif active then
          if key == "identityfile" then
            r.identityfile[#r.identityfile + 1] = value
          elseif r[key] == nil then
            r[key] = value
          end
        end
      end
    end
  end
  f:close()
  return r
end

-- }====

-- {==== transport

-- A session over any strand stream that is not a socket: a socketpair, with two tasks copying
-- between its far end and the stream (e.g. a channel of another session: ProxyJump).
local function relay(stream)
  local a, b = socket.pair()
  -- the stream may be closed under us (its session closed): that ends the relay like an EOF
  local function sread() local ok, d = pcall(stream.read, stream, 65536); return ok and d or nil end
  local function swrite(d) local ok, r = pcall(stream.write, stream, d); return ok and r end
  local function pump_in()
    while true do
      local data = sread()
      if not data then break end
      local ok, sent = pcall(b.sendall, b, data)   -- b may be closed by pump_out meanwhile
      if not ok or not sent then break end
    end
    pcall(b.shutdown, b, "w")
  end
  local function pump_out()
    while true do
      local data = b:recv(65536)
      if not data or not swrite(data) then break end
    end
    pcall(stream.close, stream)
    b:close()
  end
  local t1, t2 = spawn(pump_in), spawn(pump_out)
  return a, { t1, t2 }
end

local function is_socket(x)
  local mt = getmetatable(x)
  return type(mt) == "table" and mt.__name == "strand.socket"
end

-- }====

local function read_file(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function b64decode(s)
  s = s:gsub("[^%w%+/]", "")
  local out, bits, nbits = {}, 0, 0
  for i = 1, #s do
    bits = (bits << 6) | (B64:find(s:sub(i, i), 1, true) - 1)
    nbits = nbits + 6
    if nbits >= 8 then
      nbits = nbits - 8
      out[#out + 1] = string.char((bits >> nbits) & 255)
    end
  end
  return table.concat(out)
end

local function is_rsa_key(path)
  local pub = read_file(path .. ".pub")
  if pub then return pub:match("^ssh%-rsa ") ~= nil end
  local priv = read_file(path)
  if not priv then return false end
  if priv:find("BEGIN RSA PRIVATE KEY", 1, true) then return true end
  local body = priv:match("BEGIN OPENSSH PRIVATE KEY%-%-%-%-%-(.-)%-%-%-%-%-END")
  if body then return b64decode(body):sub(1, 200):find("ssh-rsa", 1, true) ~= nil end
  return false
end

local function is_encrypted_key(path)
  local priv = read_file(path)
  if not priv then return false end
  if priv:find("ENCRYPTED", 1, true) then return true end
  local body = priv:match("BEGIN OPENSSH PRIVATE KEY%-%-%-%-%-(.-)%-%-%-%-%-END")
  return body ~= nil and b64decode(body):sub(1, 64):find("bcrypt", 1, true) ~= nil
end

-- A to-be-closed value that calls fn when its scope is left by an error (a cancellation included).
local function on_error(fn)
  return setmetatable({}, { __close = function(_, e) if e ~= nil then fn() end end })
end

local function fail(s, msg, code)
  s:_free()
  return nil, msg, code
end

local function check_host_key(s, o, host, port)
  local _, ktype, fp = s:hostkey()
  if not ktype then return nil, "no host key", "ESSH" end
  local policy = o.host_key or "strict"
  if type(policy) == "function" then
    if policy(host, fp, ktype) then return true end
    return nil, "host key rejected", "EHOSTKEY"
  end
  if policy == "ignore" then return true end
  local path = o.known_hosts or (home() .. "/.ssh/known_hosts")
  local r, err, code = s:_knownhost(path, host, port)
  if not r then return nil, err, code end
  if r == "match" then return true end
  if r == "mismatch" then return nil, "host key mismatch", "EHOSTKEY" end
  if policy == "accept-new" then
    local ok, e2, c2 = s:_knownhost(path, host, port, true)
    if not ok then return nil, e2, c2 end
    return true
  end
  return nil, ("unknown host key %s (%s) for %s"):format(fp, ktype, host), "EHOSTKEY"
end

-- Keys and the agent are tried without first asking which methods the server allows: asking is a
-- failed "none" attempt, which OpenSSH delays (~5 ms, it hides timing). The list is fetched only
-- to choose between password and keyboard-interactive, or to explain a failure.
local function authenticate(s, o, user, keys, deadline)
  local list
  local function methods()
    if list == nil then
      local l, err, code = s:_authlist(user, remaining(deadline))
      if not l then return nil, err, code end
      list = l
    end
    local m = {}
    if list ~= true then for x in list:gmatch("[^,]+") do m[x] = true end end
    return m
  end
  local last_err, last_code = "authentication failed", "EAUTH"
  local rsa_refused = false
  for _, key in ipairs(keys) do
    local pub = read_file(key .. ".pub") and key .. ".pub" or nil
    local ok, e, c = s:_auth_key(user, key, pub, o.passphrase, remaining(deadline))
    if ok then return true end
    if c ~= "EAUTH" and c ~= "EKEYFILE" then return nil, e, c end
    last_err, last_code = e, c
    if o.passphrase == nil and is_encrypted_key(key) then
      last_err, last_code = "cannot read key file " .. key .. " (it needs a passphrase)", "EKEYFILE"
    elseif c == "EKEYFILE" then
      last_err = "cannot read key file " .. key .. (o.passphrase and " (wrong passphrase or unsupported format)" or "")
    end
    if c == "EAUTH" and C.libssh2_version_num < 0x010b00 and is_rsa_key(key) then rsa_refused = true end
  end
  if o.agent then
    local ok, e, c = s:_auth_agent(user)
    if ok then return true end
    if c ~= "EAUTH" and c ~= "ENOAGENT" then return nil, e, c end
    last_err, last_code = e, c
  end
  if o.password ~= nil or (#keys == 0 and not o.agent) then
    local m, e, c = methods()
    if not m then return nil, e, c end
    if list == true then return true end      -- the server let us in with "none"
    if o.password ~= nil then
      local ok
      if m.password then
        ok, e, c = s:_auth_password(user, o.password, remaining(deadline))
      elseif m["keyboard-interactive"] then
        ok, e, c = s:_auth_kbdint(user, o.password, remaining(deadline))
      end
      if ok then return true end
      if c and c ~= "EAUTH" then return nil, e, c end
      last_err, last_code = "authentication failed", "EAUTH"
    end
  end
  if rsa_refused then
    return nil, "authentication failed: libssh2 " .. C.libssh2_version .. " signs RSA keys only with "
      .. "SHA-1 (\"ssh-rsa\"), which this server refuses; use an ed25519 key", "EAUTH"
  end
  if last_err == "authentication failed" or last_err:match("^authentication failed:") then
    if methods() and type(list) == "string" then
      last_err = "authentication failed (server allows: " .. list .. ")"
    end
  end
  return nil, last_err, last_code
end

local function start_keepalive(s, interval)
  s:_keepalive(interval)
  local ref = setmetatable({ s = s }, { __mode = "v" })
  return spawn(function()
    while true do
      core.sleep(interval)
      local sess = ref.s
      if sess == nil or sess:closed() then return end
      local ok = sess:_keepalive_send(interval)
      sess = nil
      if not ok then return end
    end
  end)
end

-- {==== ProxyJump: hops as OpenSSH's -J / ProxyJump ("a,b": client -> a -> b -> target)

-- "[user@]host[:port]", host may be "[v6]" -> user|nil, host, port|nil
local function parse_hop(spec)
  local user, rest = spec:match("^([^@]+)@(.+)$")
  if not user then rest = spec end
  local host, port = rest:match("^%[([^%]]+)%]:?(%d*)$")
  if not host then host, port = rest:match("^([^:]+):?(%d*)$") end
  if not host then host, port = rest, "" end     -- a bare IPv6 address
  return user, host, tonumber(port)
end

-- The hops of a ProxyJump value (a string "a,b" or a list of such strings and option tables),
-- each {name=, opts=}; a hop inherits config, known_hosts, host_key and agent from o (not keys
-- or passwords, as OpenSSH's -J does not pass -i on), and its own ProxyJump is not followed.
local function hop_list(pj, o)
  local list = {}
  if type(pj) == "string" then
    for item in pj:gmatch("[^,%s]+") do list[#list + 1] = item end
  else
    for _, item in ipairs(pj) do list[#list + 1] = item end
  end
  local hops = {}
  for _, item in ipairs(list) do
    local ho, name = {}, item
    if type(item) == "table" then
      for k, v in pairs(item) do ho[k] = v end
      name = item.name or (tostring(item.host) .. (item.port and (":" .. item.port) or ""))
      ho.name = nil
    else
      ho.user, ho.host, ho.port = parse_hop(item)
    end
    for _, k in ipairs { "config", "known_hosts", "host_key", "agent" } do
      if ho[k] == nil then ho[k] = o[k] end
    end
    ho.proxyjump = false
    hops[#hops + 1] = { name = name, opts = ho }
  end
  return hops
end

-- connect's options (a hop's table too); errors name connect's argument, raised at its caller
local function check_connect_opts(o, level)
  local function bad(msg) error("bad argument #1 to 'connect' (" .. msg .. ")", level + 1) end
  if o.host == nil and o.sock == nil then bad("host expected") end
  if o.host ~= nil and type(o.host) ~= "string" then bad("host must be a string") end
  local hk = o.host_key
  if hk ~= nil and type(hk) ~= "function" and hk ~= "strict" and hk ~= "accept-new" and hk ~= "ignore" then
    bad("host_key must be \"strict\", \"accept-new\", \"ignore\" or a function")
  end
  if o.timeout ~= nil and (type(o.timeout) ~= "number" or not (o.timeout >= 0)) then   -- NaN too
    bad("timeout must be a number >= 0")
  end
  if type(o.port) == "number" and (math.type(o.port) ~= "integer" or o.port < 1 or o.port > 65535) then
    bad("port must be an integer 1..65535")
  end
  if o.keepalive ~= nil and o.keepalive ~= false and (type(o.keepalive) ~= "number" or not (o.keepalive > 0)) then
    bad("keepalive must be a number > 0 (seconds)")
  end
  if o.sock ~= nil and type(o.sock) ~= "userdata" and type(o.sock) ~= "table" then
    bad("sock must be a strand stream")
  end
  local pj = o.proxyjump
  if pj == nil or pj == false or type(pj) == "string" then return end
  if type(pj) ~= "table" then bad("proxyjump must be a string, a list or false") end
  for _, item in ipairs(pj) do
    if type(item) == "table" and type(item.host) == "string" then
      if item.proxyjump then bad("a proxyjump hop cannot have its own proxyjump") end
      check_connect_opts(item, level + 1)
    elseif type(item) ~= "string" then
      bad("each proxyjump hop must be \"[user@]host[:port]\" or a table with host")
    end
  end
end

-- }====

-- What the options and the config give a destination: host, port, user, key files.
local function resolve(o)
  local alias = o.host or "stream"
  local cfg = { identityfile = {} }
  if o.config ~= false and o.host then
    cfg = M.read_config(o.config or (home() .. "/.ssh/config"), alias)
  end
  local host = (cfg.hostname and expand_path(cfg.hostname, { host = alias })) or alias
  local port = tonumber(o.port or cfg.port) or 22
  local user = o.user or cfg.user or os.getenv("USER") or "root"
  local keys = {}
  if type(o.key) == "string" then keys[1] = expand_path(o.key)
  elseif type(o.key) == "table" then for _, k in ipairs(o.key) do keys[#keys + 1] = expand_path(k) end
  else
    for _, k in ipairs(cfg.identityfile) do
      keys[#keys + 1] = expand_path(k, { host = host, port = port, user = user })
    end
    if #keys == 0 and o.password == nil and not o.agent then
      for _, n in ipairs { "id_ed25519", "id_ecdsa", "id_rsa" } do
        local p = home() .. "/.ssh/" .. n
        if read_file(p) then keys[#keys + 1] = p end
      end
    end
  end
  return host, port, user, keys, cfg
end

local connect_via

-- Sessions to each hop in turn, each over a channel forwarded by the one before; returns the last
-- (closing it closes the chain). A failure names the hop: "proxy jump NAME: ...".
local function connect_hops(hops, deadline)
  local prev
  local _ <close> = on_error(function() if prev then pcall(prev.close, prev) end end)
  for _, hop in ipairs(hops) do
    local ho = hop.opts
    if deadline then ho.timeout = remaining(deadline) end
    if prev then
      local h, p = resolve(ho)
      local st, err, code = prev:forward(h, p, remaining(deadline))
      if not st then
        prev:close()
        return nil, ("proxy jump %s: forwarding to %s:%d: %s"):format(hop.name, h, p, err), code
      end
      ho.sock = st
    end
    local s, err, code = connect_via(ho, prev)
    if not s then return nil, ("proxy jump %s: %s"):format(hop.name, err), code end
    prev = s
  end
  return prev
end

--- ssh.connect{host=, port=22, user=, password=, key=, passphrase=, agent=, known_hosts=,
---   host_key=, timeout=, keepalive=, sock=, config=, proxyjump=} -> session | nil, err, code
function M.connect(opts)
  if type(opts) ~= "table" then
    error(("bad argument #1 to 'connect' (table expected, got %s)"):format(type(opts)), 2)
  end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  check_connect_opts(o, 3)
  return connect_via(o, nil)
end

-- connect with checked options o; `via` (a session, or nil) carries the stream o.sock and is
-- closed with the new session (or at once when connecting fails).
function connect_via(o, via)
  local host, port, user, keys, cfg = resolve(o)
  local deadline = o.timeout and now() + o.timeout
  local sock, relays, jump = o.sock, nil, via
  -- connect ended by an error (a host_key function that raised) or a cancellation (strand.timeout
  -- around connect): the half-made session, its descriptor and the jump sessions go now, not
  -- when collected
  local made = {}
  local _ <close> = on_error(function()
    if made.s then made.s:_free() end
    if jump then pcall(jump.close, jump) end
  end)
  local pj = o.proxyjump
  if pj == nil then pj = cfg.proxyjump end
  if type(pj) == "string" and (pj:lower() == "none" or pj == "") then pj = nil end
  if sock == nil and pj then
    local hops = hop_list(pj, o)
    if #hops > 0 then
      local err, code
      jump, err, code = connect_hops(hops, deadline)
      if not jump then return nil, err, code end
      sock, err, code = jump:forward(host, port, remaining(deadline))
      if not sock then
        jump:close()
        return nil, ("proxy jump %s: forwarding to %s:%d: %s"):format(hops[#hops].name, host, port, err), code
      end
    end
  end
  local fd_sock
  if sock == nil then
    local err, code
    fd_sock, err, code = socket.connect(host, port, { timeout = remaining(deadline) })
    if not fd_sock then return nil, err, code end
  elseif is_socket(sock) then
    fd_sock = sock
  else
    fd_sock, relays = relay(sock)
  end
  local s, err, code = C.session(fd_sock:fileno(), o.timeout, sock == nil)
  fd_sock:close()
  if not s then
    if jump then jump:close() end
    return nil, err, code
  end
  made.s = s
  local ex = { jump = jump, relays = relays, host = host, port = port }
  extra[s] = ex
  local ok
  ok, err, code = s:_handshake(remaining(deadline))
  if not ok then
    if code == "ETIMEDOUT" then err = "timeout" end
    if jump then jump:close() end
    return fail(s, err, code)
  end
  ok, err, code = check_host_key(s, o, o.host_key_alias or host, port)
  if not ok then if jump then jump:close() end return fail(s, err, code) end
  ok, err, code = authenticate(s, o, user, keys, deadline)
  if not ok then if jump then jump:close() end return fail(s, err, code) end
  if o.keepalive then   -- whole seconds, 1 .. 2^31-1 (libssh2 takes an unsigned int)
    ex.keepalive = start_keepalive(s, math.min(math.max(1, math.floor(o.keepalive)), 0x7fffffff))
  end
  s:settimeout(nil)
  return s
end

-- {==== session methods written in Lua

function Session:fingerprint()
  local _, ktype, fp = self:hostkey()
  return fp, ktype
end

function Session:close()
  local ex = extra[self]
  if ex and ex.keepalive then ex.keepalive:cancel(); ex.keepalive = nil end
  if not self:closed() then
    self:_close_children()   -- channels, listeners, sftp files and sessions: cooperatively
    self:_bye()
    self:_free()
  end
  if ex and ex.jump then ex.jump:close(); ex.jump = nil end
  return true
end

-- The options exec, run and shell share: raise naming fname when one has the wrong type.
local function check_channel_opts(opts, fname)
  check_timeout(opts.timeout, 2, fname, 3)
  if opts.env ~= nil and type(opts.env) ~= "table" then
    error(("bad argument #2 to '%s' (env must be a table)"):format(fname), 3)
  end
  local p = type(opts.pty) == "table" and opts.pty or opts
  for _, k in ipairs { "cols", "rows" } do
    local v = p[k]
    if v ~= nil and (math.type(v) ~= "integer" or v < 1) then
      error(("bad argument #2 to '%s' (%s must be an integer >= 1)"):format(fname, k), 3)
    end
  end
  if p.term ~= nil and type(p.term) ~= "string" then
    error(("bad argument #2 to '%s' (term must be a string)"):format(fname), 3)
  end
end

local function open_channel(s, opts, deadline)
  local ch, err, code = s:_channel(remaining(deadline))
  if not ch then return nil, err, code end
  if opts.env then
    for k, v in pairs(opts.env) do
      local ok, e, c = ch:_setenv(tostring(k), tostring(v), remaining(deadline))
      if not ok then
        ch:close()
        if c == "ECHANNEL" then e = "the server refused environment variable " .. tostring(k) end
        return nil, e, c
      end
    end
  end
  if opts.pty then
    local p = type(opts.pty) == "table" and opts.pty or {}
    local ok, e, c = ch:_pty(p.term or opts.term or "xterm", p.cols or opts.cols or 80,
      p.rows or opts.rows or 24, remaining(deadline))
    if not ok then ch:close(); return nil, e, c end
  end
  return ch
end

--- s:exec(cmd [, {env=, pty=, timeout=}]) -> channel
function Session:exec(cmd, opts)
  if type(cmd) ~= "string" then error("bad argument #1 to 'exec' (string expected, got " .. type(cmd) .. ")", 2) end
  opts = check_opts(opts, 2, "exec")
  check_channel_opts(opts, "exec")
  local deadline = opts.timeout and now() + opts.timeout
  local ch, err, code = open_channel(self, opts, deadline)
  if not ch then return nil, err, code end
  local ok, e, c = ch:_process("exec", cmd, remaining(deadline))
  if not ok then ch:close(); return nil, e, c end
  return ch
end

--- s:run(cmd [, {stdin=, timeout=, pty=, env=}]) -> {stdout=, stderr=, code=, signal=}
function Session:run(cmd, opts)
  if type(cmd) ~= "string" then error("bad argument #1 to 'run' (string expected, got " .. type(cmd) .. ")", 2) end
  opts = check_opts(opts, 2, "run")
  check_channel_opts(opts, "run")
  if opts.stdin ~= nil and type(opts.stdin) ~= "string" then
    error("bad argument #2 to 'run' (stdin must be a string)", 2)
  end
  local deadline = opts.timeout and now() + opts.timeout
  local ch, err, code = self:exec(cmd, { env = opts.env, pty = opts.pty, timeout = opts.timeout })
  if not ch then return nil, err, code end
  local writer
  -- however run ends (cancelled or killed mid-way included): no stdin writer task left blocked on
  -- a full window, no channel left open until the collector or the session's close finds it
  local _ <close> = setmetatable({}, { __close = function()
    if writer then writer:cancel() end
    if not ch:closed() then release_channel(ch) end   -- at once: no wait in a cancelled task
  end })
  if opts.stdin then
    writer = spawn(function()
      local ok, e = ch:write(opts.stdin, remaining(deadline))
      if ok then ok, e = ch:send_eof(remaining(deadline)) end
      return ok, e
    end)
  end
  local out, errs, moved = {}, {}, 0
  while true do
    local o, e, c = ch:_pump(remaining(deadline))
    if not o then
      if c ~= "EOF" then
        if writer then writer:cancel(); writer:join() end
        ch:close()
        return nil, e, c
      end
      break
    end
    if o ~= "" then out[#out + 1] = o end
    if e ~= "" then errs[#errs + 1] = e end
    moved = turn(moved, #o + #e)
  end
  -- The exit status first: a command that ends without reading all its stdin leaves the writer
  -- waiting for window space that never comes, and only a call reading the transport (this one)
  -- sees the channel close; what stdin is left then has nobody to read it.
  local status, sig, wcode = ch:wait(remaining(deadline))
  if writer then writer:cancel(); writer:join() end
  ch:close()
  if status == nil then return nil, sig, wcode end
  return { stdout = table.concat(out), stderr = table.concat(errs), code = status or nil, signal = sig }
end

--- s:shell{term=, cols=, rows=} -> channel with a pty running the login shell
function Session:shell(opts)
  opts = check_opts(opts, 1, "shell")
  check_channel_opts(opts, "shell")
  local deadline = opts.timeout and now() + opts.timeout
  local ch, err, code = open_channel(self, { pty = true, term = opts.term, cols = opts.cols,
    rows = opts.rows, env = opts.env }, deadline)
  if not ch then return nil, err, code end
  local ok, e, c = ch:_process("shell", nil, remaining(deadline))
  if not ok then ch:close(); return nil, e, c end
  return ch
end

--- s:listen(port [, host]) -> listener (l:accept() -> channel, l:port(), l:close())
function Session:listen(port, host)
  if math.type(port) ~= "integer" then error("bad argument #1 to 'listen' (integer expected)", 2) end
  return self:_listen(host or "127.0.0.1", port)
end

-- A to-be-closed guard for a transfer: when it ends by an error or a cancellation, closes the local
-- files and channels it holds at once and the remote (SFTP) files cooperatively; on the normal
-- path (err nil) they were closed already. t: a table the transfer fills as it opens things.
local function unwind_guard(t)
  return setmetatable(t, { __close = function(held, err)
    if err == nil then return end
    if held.lf then pcall(held.lf.close, held.lf) end
    if held.ch and not held.ch:closed() then release_channel(held.ch) end
    if held.rf then pcall(held.rf.close, held.rf) end
  end })
end

--- s:scp_get(remote, localpath) -> bytes
function Session:scp_get(remote, localpath)
  if type(remote) ~= "string" then error("bad argument #1 to 'scp_get' (string expected)", 2) end
  if type(localpath) ~= "string" then error("bad argument #2 to 'scp_get' (string expected)", 2) end
  local ch, size_or_err, code = self:_scp_recv(remote)
  if not ch then return nil, size_or_err, code end
  local held <close> = unwind_guard { ch = ch }
  local size = size_or_err
  local f, ferr, errno = io.open(localpath, "wb")
  if not f then ch:close(); return local_fail(ferr, errno) end
  held.lf = f
  local got, moved = 0, 0
  while got < size do
    local data, e, c = ch:read(math.min(65536, size - got))
    if not data then f:close(); ch:close(); return nil, e, c end
    local ok, werr, wno = f:write(data)
    if not ok then f:close(); ch:close(); return local_fail(localpath .. ": " .. werr, wno) end
    got = got + #data
    moved = turn(moved, #data)
  end
  local ok, cerr, cno = f:close()   -- the last bytes are written here: a full disk shows now
  ch:close()
  if not ok then return local_fail(localpath .. ": " .. cerr, cno) end
  return got
end

--- s:scp_put(localpath, remote [, mode]) -> bytes
function Session:scp_put(localpath, remote, mode)
  if type(localpath) ~= "string" then error("bad argument #1 to 'scp_put' (string expected)", 2) end
  if type(remote) ~= "string" then error("bad argument #2 to 'scp_put' (string expected)", 2) end
  if mode ~= nil and math.type(mode) ~= "integer" then error("bad argument #3 to 'scp_put' (integer expected)", 2) end
  if mode ~= nil and (mode < 0 or mode > 4095) then
    error("bad argument #3 to 'scp_put' (mode must be 0..4095 (0o7777))", 2)
  end
  local f, ferr, fcode = open_source(localpath)
  if not f then return nil, ferr, fcode end
  local size = f:seek("end")
  f:seek("set", 0)
  local held <close> = unwind_guard { lf = f }
  local ch, err, code = self:_scp_send(remote, mode or 420, size)
  if not ch then f:close(); return nil, err, code end
  held.ch = ch
  local moved = 0
  while true do
    local data, rerr, rno = f:read(65536)
    if not data then
      if rerr then f:close(); ch:close(); return local_fail(localpath .. ": " .. rerr, rno) end
      break
    end
    local ok, e, c = ch:write(data)
    if not ok then f:close(); ch:close(); return nil, e, c end
    moved = turn(moved, #data)
  end
  f:close()
  -- The scp protocol ends a file with a \0 from the source, which the sink (the remote scp -t)
  -- answers with \0, or "\1scp: path: No space left on device\n" when it could not write it all
  -- (libssh2 leaves both to the program: without them the sink exits 1 and a failed write went
  -- unnoticed). Then EOF, and its exit code.
  local ok, e, c = ch:write("\0")
  local why
  if ok then
    local reply = ""
    while not reply:find("^%z") and not reply:find("^[\1\2][^\n]*\n") and #reply < 4096 do
      local d, re, rc = ch:read(4096)
      if not d then
        if rc ~= "EOF" then ok, e, c = nil, re, rc end
        break
      end
      reply = reply .. d
    end
    if ok and not reply:find("^%z") then
      why = reply:match("^[\1\2]([^\n]*)") or "remote scp gave no answer"
    end
  end
  if ok then ok, e, c = ch:send_eof() end
  local sig
  if ok then
    ok, sig, c = ch:wait()
    if ok == nil then e = sig end
  end
  ch:close()
  if ok == nil then return nil, e, c end
  if why then return nil, why, "EREMOTE" end
  if ok ~= 0 then
    return nil, ok == false and "remote scp killed by signal " .. tostring(sig)
                or "remote scp exited with code " .. tostring(ok), "EREMOTE"
  end
  return size
end

-- }====

-- {==== channel methods written in Lua

-- ch:close() closes cooperatively, bounded to 2 s; a channel the server does not close in time (its
-- process still runs) or whose session was lost is then released anyway (libssh2 frees it with the
-- session): close always ends with the channel closed, as documented.
local raw_close = Channel.close
function Channel:close()
  local ok = raw_close(self)
  if not ok then release_channel(self) end
  return true
end

Channel.recv = Channel.read
Channel.send = Channel.write
Channel.sendall = Channel.write

local pending = setmetatable({}, { __mode = "k" })   -- channel -> bytes read but not expected yet

--- ch:expect(pattern [, timeout]) -> text up to and including the first match, captures...
--- | nil, "timeout" (what arrived stays buffered) | nil, "closed"
function Channel:expect(pattern, timeout)
  if type(pattern) ~= "string" then error("bad argument #1 to 'expect' (string expected)", 2) end
  check_timeout(timeout, 2, "expect")
  local deadline = timeout and now() + timeout
  local buf = pending[self] or ""
  while true do
    local r = table.pack(pcall(string.find, buf, pattern))
    if not r[1] then   -- a malformed pattern (Lua finds out while matching)
      error(("bad argument #1 to 'expect' (%s)"):format(tostring(r[2]):gsub("^[^:]*:%d+: ", "")), 2)
    end
    table.remove(r, 1); r.n = r.n - 1
    if r[1] then
      pending[self] = buf:sub(r[2] + 1)
      return buf:sub(1, r[2]), table.unpack(r, 3, r.n)
    end
    local o, e, c = self:_pump(remaining(deadline))
    if not o then pending[self] = buf; return nil, e, c end
    buf = buf .. o .. e
  end
end

-- }====

-- {==== SFTP methods written in Lua (the copy loops are in C: sftp.c)

local Sftp = debug.getregistry()["strand.ssh.sftp"].methods
local File = debug.getregistry()["strand.ssh.sftpfile"].methods
local COPY_STEP = 8 * 1024 * 1024     -- bytes between progress callbacks

--- sftp:list(dir) -> {{name=, size=, mode=, mtime=, type=}, ...} (sorted by name, no . and ..)
function Sftp:list(dir)
  if type(dir) ~= "string" then error("bad argument #1 to 'list' (string expected, got " .. type(dir) .. ")", 2) end
  local d, err, code = self:_opendir(dir)
  if not d then return nil, err, code end
  local out = {}
  while true do
    local name, attrs, c = d:_readdir()
    if name == nil then
      if attrs ~= nil then d:close(); return nil, attrs, c end
      break
    end
    if name ~= "." and name ~= ".." then
      attrs.name = name
      out[#out + 1] = attrs
    end
  end
  d:close()
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

-- Call the progress callback; if it raises, close both files first, then raise its error.
local function report(opts, done, total, f, lf)
  if not opts.progress then return end
  local ok, err = pcall(opts.progress, done, total)
  if not ok then
    if lf then lf:close() end
    f:close()
    error(err, 0)
  end
end

local function check_transfer(fname, a, b, opts)
  if type(a) ~= "string" then error(("bad argument #1 to '%s' (string expected, got %s)"):format(fname, type(a)), 3) end
  if type(b) ~= "string" then error(("bad argument #2 to '%s' (string expected, got %s)"):format(fname, type(b)), 3) end
  opts = check_opts(opts, 3, fname)
  if opts.progress ~= nil and type(opts.progress) ~= "function" then
    error(("bad argument #3 to '%s' (progress must be a function)"):format(fname), 3)
  end
  return opts
end

--- sftp:get(remote, localpath [, {resume=, progress=fn(done, total)}]) -> bytes now in the local
--- file (resume: continues after what the local file already holds)
function Sftp:get(remote, localpath, opts)
  opts = check_transfer("get", remote, localpath, opts)
  local f, err, code = self:open(remote, "r")
  if not f then return nil, err, code end
  local held <close> = unwind_guard { rf = f }
  local st, e2, c2 = f:stat()
  if not st then f:close(); return nil, e2, c2 end
  local total, offset = st.size, 0
  if opts.resume then
    local lf = io.open(localpath, "rb")
    if lf then offset = lf:seek("end"); lf:close() end
    if total and offset > total then
      f:close()
      return nil, "local file is larger than the remote one", "ERANGE"
    end
  end
  local lf, lerr, lno = io.open(localpath, offset > 0 and "ab" or "wb")
  if not lf then f:close(); return local_fail(lerr, lno) end
  held.lf = lf
  f:_seekto(offset)
  local done = offset
  report(opts, done, total, f, lf)
  while true do
    local n, e, c = f:_pull(lf, COPY_STEP)
    if not n then lf:close(); f:close(); return nil, e, c end
    if n == 0 then break end
    done = done + n
    local ok, ferr, fno = lf:flush()
    if not ok then lf:close(); f:close(); return local_fail(localpath .. ": " .. ferr, fno) end
    report(opts, done, total, f, lf)
    core.sleep(0)   -- the others' turn: the next _pull starts its turn count afresh (ssh.h)
  end
  local ok, cerr, cno = lf:close()
  f:close()
  if not ok then return local_fail(localpath .. ": " .. cerr, cno) end
  return done
end

--- sftp:put(localpath, remote [, {resume=, progress=fn(done, total), mode=}]) -> bytes now in the
--- remote file (resume: continues after what the remote file already holds)
function Sftp:put(localpath, remote, opts)
  opts = check_transfer("put", localpath, remote, opts)
  local mode = opts.mode
  if mode ~= nil and math.type(mode) ~= "integer" then error("bad argument #3 to 'put' (mode must be an integer)", 2) end
  if mode ~= nil and (mode < 0 or mode > 4095) then
    error("bad argument #3 to 'put' (mode must be 0..4095 (0o7777))", 2)
  end
  local lf, lerr, lcode = open_source(localpath)   -- before the remote file is touched
  if not lf then return nil, lerr, lcode end
  local held <close> = unwind_guard { lf = lf }
  local total = lf:seek("end")
  local offset = 0
  if opts.resume then
    local st = self:stat(remote)
    if st and st.size then offset = st.size end
    if offset > total then lf:close(); return nil, "remote file is larger than the local one", "ERANGE" end
  end
  local f, err, code = self:open(remote, offset > 0 and "r+" or "w", opts.mode or 420)
  if not f then lf:close(); return nil, err, code end
  held.rf = f
  lf:seek("set", offset)
  f:_seekto(offset)
  local done = offset
  report(opts, done, total, f, lf)
  while true do
    local n, e, c = f:_push(lf, COPY_STEP)
    if not n then lf:close(); f:close(); return nil, e, c end
    if n == 0 then break end
    done = done + n
    report(opts, done, total, f, lf)
    core.sleep(0)   -- the others' turn: the next _push starts its turn count afresh (ssh.h)
  end
  lf:close()
  local ok, e, c = f:close()
  if not ok then return nil, e, c end
  return done
end

-- libssh2 1.10 misreads the STATUS reply of SYMLINK, READLINK and REALPATH (it takes the request
-- id for the status code): a refusal could come back as success ("" or true) and any failure with
-- a code from nowhere, a SYMLINK carried out as a failure. The C steps return `false` for any
-- STATUS (csrc/sftp.c link_step); these ask the server with lstat/stat what happened.
local TRANSPORT = { ECLOSED = true, ETIMEDOUT = true, ECONNRESET = true }

local function check_path(fname, p, arg)
  if type(p) ~= "string" then
    error(("bad argument #%d to '%s' (string expected, got %s)"):format(arg, fname, type(p)), 3)
  end
end

--- sftp:readlink(path [, timeout]) -> the link's target | nil, err, code ("not a symbolic link",
--- "EINVAL" for anything else)
function Sftp:readlink(p, timeout)
  check_path("readlink", p, 1)
  check_timeout(timeout, 2, "readlink", 2)
  local deadline = timeout and now() + timeout
  local r, err, code = self:_readlink(p, timeout)
  if r then return r end
  if r == nil then return nil, err, code end
  local st, e2, c2 = self:lstat(p, remaining(deadline))
  if not st then return nil, e2, c2 end
  if st.type ~= "link" then return nil, "not a symbolic link", "EINVAL" end
  return nil, "failure", "EIO"
end

--- sftp:realpath(path [, timeout]) -> the canonical absolute path | nil, err, code
function Sftp:realpath(p, timeout)
  check_path("realpath", p, 1)
  check_timeout(timeout, 2, "realpath", 2)
  local deadline = timeout and now() + timeout
  local r, err, code = self:_realpath(p, timeout)
  if r then return r end
  if r == nil then return nil, err, code end
  local st, e2, c2 = self:stat(p, remaining(deadline))
  if not st then return nil, e2, c2 end
  return nil, "failure", "EIO"
end

--- sftp:symlink(target, linkpath [, timeout]) -> true | nil, err, code ("file exists", "EEXIST";
--- the parent directory's error). Whether the link was made is checked by reading it back.
function Sftp:symlink(target, linkpath, timeout)
  check_path("symlink", target, 1)
  check_path("symlink", linkpath, 2)
  check_timeout(timeout, 3, "symlink", 2)
  local deadline = timeout and now() + timeout
  local st, err, code = self:lstat(linkpath, timeout)
  if st then return nil, "file exists", "EEXIST" end
  if TRANSPORT[code] then return nil, err, code end
  local ok
  ok, err, code = self:_symlink(target, linkpath, remaining(deadline))
  if ok == nil then return nil, err, code end
  local got
  got, err, code = self:_readlink(linkpath, remaining(deadline))
  if got == target then return true end
  if got == nil and TRANSPORT[code] then return nil, err, code end
  local parent = linkpath:match("^(.*)/[^/]*$") or "."
  if parent == "" then parent = "/" end
  st, err, code = self:stat(parent, remaining(deadline))
  if not st then return nil, err, code end
  if st.type ~= "dir" then return nil, "not a directory", "ENOTDIR" end
  if self:lstat(linkpath, remaining(deadline)) then return nil, "file exists", "EEXIST" end
  return nil, "failure", "EIO"
end

--- f:read(n) -> n bytes (fewer only at the end) | nil at the end
function File:read(n)
  if math.type(n) ~= "integer" or n < 0 then error("bad argument #1 to 'read' (count expected)", 2) end
  if n == 0 then return "" end
  local parts, got, moved = {}, 0, 0
  while got < n do
    local data, err, code = self:_read(n - got)
    if data == nil then
      if err ~= nil then return nil, err, code end
      break
    end
    parts[#parts + 1] = data
    got = got + #data
    moved = turn(moved, #data)
  end
  if got == 0 then return nil end
  return table.concat(parts)
end

--- f:seek([whence [, offset]]) -> position (as Lua files: "set", "cur", "end")
function File:seek(whence, offset)
  whence = whence or "cur"
  offset = offset or 0
  if math.type(offset) ~= "integer" then error("bad argument #2 to 'seek' (integer expected)", 2) end
  local base
  if whence == "set" then base = 0
  elseif whence == "cur" then base = self:_tell()
  elseif whence == "end" then
    local st, err, code = self:stat()
    if not st then return nil, err, code end
    base = st.size
  else error("bad argument #1 to 'seek' (invalid option '" .. tostring(whence) .. "')", 2) end
  if base + offset < 0 then return nil, "invalid argument", "EINVAL" end
  return self:_seekto(base + offset)
end

-- }====

-- {==== serialising libssh2's shared state machines (ssh.h: ssh_lock)
-- libssh2 keeps the state of a non-blocking channel open, SFTP init or remote forward in the
-- session, and of every SFTP request in the SFTP session: two tasks interleaving them get each
-- other's results. Each such C method runs under its object's lock (the session's, or the SFTP
-- session's for the SFTP session and its files), released by <close> also on error/cancellation.

local TOKEN = { __close = function(t) t.o:_unlock() end }
local tokens = setmetatable({}, { __mode = "k" })

-- fn's own argument errors ("bad argument #3 to 'fn'": called as a plain function, self counts)
-- are raised again as the method's ("bad argument #2 to 'open'"), at the caller's position.
local function method_error(name, ok, ...)
  if ok then return ... end
  local e = ...
  if type(e) == "string" then
    local n, rest = e:match("^.-bad argument #(%d+) to '[^']*' (.*)$")
    if n then
      n = tonumber(n) - 1
      if n == 0 then error(("calling '%s' on bad self %s"):format(name, rest), 3) end
      error(("bad argument #%d to '%s' %s"):format(n, name, rest), 3)
    end
  end
  error(e, 0)
end

-- A request that timed out or was cancelled while libssh2 waited for its reply stays in libssh2's
-- state machine: the next call of the same kind (stat after stat, open after open, a write on the
-- file after a write...) skipped sending its own request and took the old one's reply (stat(b)
-- gave a's attributes, open(b) opened a, mkdir(e) made nothing). So such a call is remembered
-- per lock (`pending`, keyed by the object owning the lock: the session, or the SFTP session for
-- it and its files) and the next call under that lock first finishes it, with its own arguments,
-- and drops what it made; if that times out again, the new call says "timeout" (the server still
-- does not answer), and if it fails otherwise (the object closed meanwhile) it is forgotten.
-- Streaming reads (_read, _readdir, _pull) need no replay: libssh2 goes on with them as they are.
local pending = setmetatable({}, { __mode = "k" })   -- lock owner -> { fn=, obj=, args= }
local owner_of = setmetatable({}, { __mode = "k" })  -- sftp file -> its sftp object
local REPLAY = {}
local function dispose(v)
  if type(v) ~= "userdata" then return end
  local mt = getmetatable(v)
  if type(mt) == "table" and type(mt.__gc) == "function" then pcall(mt.__gc, v) end
end

-- Where each replayed C method takes its timeout (after self); none: the session's default.
local TIMEOUT_ARG = { _channel = 1, forward = 3, _scp_recv = 2, _scp_send = 4, _listen = 3,
  sftp = 1, open = 4, _opendir = 2, stat = 2, lstat = 2, chmod = 3, mkdir = 3, rmdir = 2,
  remove = 2, rename = 3, _symlink = 3, _readlink = 2, _realpath = 2, write = 2, _push = 3 }
local FILE_TIMEOUT_ARG = { stat = 1 }   -- f:stat([timeout]) (sftp:stat(path [, timeout]))

-- Runs the pending request of `key` to its end, within the new call's `timeout` (its own is
-- long gone); -> true when none is left, nil, err, code when it timed out again.
local function finish_pending(key, timeout)
  local p = pending[key]
  if p == nil then return true end
  local args = table.pack(table.unpack(p.args, 1, p.args.n))
  if p.targ then
    args[p.targ] = timeout
    if p.targ > args.n then args.n = p.targ end
  end
  local r = table.pack(pcall(p.fn, p.obj, table.unpack(args, 1, args.n)))
  if r[1] and r[2] == nil and r[4] == "ETIMEDOUT" then return nil, r[3], r[4] end
  if not r[1] and core.is_cancelled(r[2]) then error(r[2], 0) end   -- still pending: cancelled again
  pending[key] = nil
  if r[1] then for i = 2, r.n do dispose(r[i]) end end
  return true
end

local function locked(fn, name, replay, targ)
  return function(self, ...)
    local ok, err, code = self:_lock()
    if not ok then return nil, err, code end
    local t = tokens[self]
    if t == nil then t = setmetatable({ o = self }, TOKEN); tokens[self] = t end
    local held <close> = t
    local key = owner_of[self] or self
    if pending[key] then
      local timeout = targ and select(targ, ...)
      if type(timeout) ~= "number" then timeout = nil end
      local done, e2, c2 = finish_pending(key, timeout)
      if not done then return nil, e2, c2 end
    end
    local r = table.pack(pcall(fn, self, ...))
    if replay and ((r[1] and r[2] == nil and r[4] == "ETIMEDOUT") or (not r[1] and core.is_cancelled(r[2]))) then
      pending[key] = { fn = fn, obj = self, args = table.pack(...), targ = targ }
    end
    if r[1] and (name == "open" or name == "_opendir") and r[2] ~= nil then owner_of[r[2]] = self end
    return method_error(name, table.unpack(r, 1, r.n))
  end
end

for _, name in ipairs { "_channel", "forward", "_scp_recv", "_scp_send", "_listen", "sftp" } do
  Session[name] = locked(Session[name], name, REPLAY, TIMEOUT_ARG[name])
end
for _, name in ipairs { "open", "_opendir", "stat", "lstat", "chmod", "mkdir", "rmdir", "remove",
                        "rename", "close" } do
  Sftp[name] = locked(Sftp[name], name, REPLAY, TIMEOUT_ARG[name])
end
for _, name in ipairs { "symlink", "readlink", "realpath" } do   -- their C halves (see Sftp:symlink)
  Sftp["_" .. name] = locked(Sftp["_" .. name], name, REPLAY, TIMEOUT_ARG["_" .. name])
end
for _, name in ipairs { "_read", "_seekto", "_tell", "_readdir", "_pull" } do
  File[name] = locked(File[name], name)
end
for _, name in ipairs { "write", "stat", "_push", "close" } do
  File[name] = locked(File[name], name, REPLAY, FILE_TIMEOUT_ARG[name] or TIMEOUT_ARG[name])
end

-- }====

-- An exclusive open ("x") of an existing file: OpenSSH's server answers only "failure" (EEXIST
-- has no SFTP v3 code), so look first and say what it is. (A tail call: the locked open's
-- argument errors keep pointing at the caller.)
local locked_open = Sftp.open
function Sftp:open(path, mode, perms, timeout, ...)
  if type(path) == "string" and type(mode) == "string" and mode:find("x", 1, true)
     and mode:match("^[rwax]b?%+?b?x?$")   -- a valid mode (open_flags, sftp.c), else open raises
     and (timeout == nil or type(timeout) == "number") and self:lstat(path, timeout) then
    return nil, "file exists", "EEXIST"
  end
  return locked_open(self, path, mode, perms, timeout, ...)
end

M.libssh2_version = C.libssh2_version
M.libssh2_version_num = C.libssh2_version_num
--- ssh.init() -> true: initialise libssh2 and its crypto now (else the first connect does it)
M.init = C.init

return M
