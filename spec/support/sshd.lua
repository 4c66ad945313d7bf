-- spec/support/sshd.lua — a private OpenSSH server for the SSH specs and examples: its own config,
-- throwaway host and client keys in a temp dir, a free loopback port; stopped and removed by stop().
--
--   local sshd = require "support.sshd"
--   local srv = sshd.start()      -- srv.port, srv.user, srv.password (nil when not root),
--                                 -- srv.keys.{ed25519,ed25519_pass,ecdsa,rsa,rsa_pem}, srv.passphrase,
--                                 -- srv.known_hosts (holds the host keys), srv.dir, srv.data (scratch
--                                 -- dir the login user can write), srv.pid
--   srv:stop()                    -- kills and waits for sshd, removes every file it made
--   sshd.read_file, sshd.write_file, sshd.tmpname   -- small file helpers the SSH specs share
--
-- As root the login user is a throwaway account "strandtest", created (with a random password kept
-- in /var/lib/strand-test, root only) only when no such account exists; an existing account we did
-- not create is never changed (then password auth is unavailable: srv.password == nil). A non-root
-- login also keeps the login shell's rc files of root out of the way. Not root: sshd runs as the
-- current user, only key auth works. A watchdog shell kills sshd if this Lua process dies.
local M = {}

local TEST_USER = "strandtest"
-- connect timeouts scale like the helper's (make test-valgrind raises it: handshakes are slow there)
local TIMEOUT = tonumber(os.getenv("STRAND_TEST_TIMEOUT")) or 10
local STATE_DIR = "/var/lib/strand-test"

local function sh(cmd)
  local ok = os.execute("LD_PRELOAD= " .. cmd)
  return ok
end

local function read_cmd(cmd)
  local p = assert(io.popen("LD_PRELOAD= " .. cmd))
  local out = p:read("a")
  p:close()
  return out
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

--- M.write_file(path, data [, mode]): writes (binary) or raises; mode "600" etc. chmods it
local function write_file(path, data, mode)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  if mode then assert(sh(("chmod %s %s"):format(mode, q(path)))) end
end

--- M.read_file(path) -> its bytes | nil when it cannot be opened
local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

--- M.tmpname() -> a fresh temp path that does not exist yet
local function tmpname()
  local p = os.tmpname()
  os.remove(p)
  return p
end

M.write_file, M.read_file, M.tmpname = write_file, read_file, tmpname

local function mypid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("n")
  f:close()
  return pid
end

local function is_root() return read_cmd("id -u"):match("^0%s") ~= nil end

-- The login user and its password (nil when password auth cannot be tested).
local function login_user()
  if not is_root() then return read_cmd("id -un"):match("^(%S+)"), nil, "not root" end
  local pwfile = STATE_DIR .. "/" .. TEST_USER .. ".pw"
  local exists = sh("id " .. TEST_USER .. " >/dev/null 2>&1")
  if exists then
    local pw = read_file(pwfile)
    if pw and pw:match("^%w+\n?$") then return TEST_USER, pw:match("^(%w+)") end
    return TEST_USER, nil, "account " .. TEST_USER .. " exists and was not created by strand's tests"
  end
  local pw = read_cmd("head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9'"):match("^(%w+)")
  assert(sh("mkdir -p " .. STATE_DIR .. " && chmod 700 " .. STATE_DIR))
  assert(sh(("useradd -m -s /bin/sh -c 'strand test account' %s"):format(TEST_USER)),
    "useradd " .. TEST_USER .. " failed")
  write_file(pwfile, pw .. "\n", "600")
  assert(sh(("printf '%%s:%%s\\n' %s %s | chpasswd"):format(TEST_USER, pw)), "chpasswd failed")
  return TEST_USER, pw
end

local function free_port()
  local socket = require "strand.socket"
  local s = assert(socket.listen("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return port
end

local function keygen(path, kind, bits, pass, format)
  local cmd = ("ssh-keygen -q -t %s %s -N %s %s -C strand-test -f %s </dev/null >/dev/null 2>&1")
    :format(kind, bits and ("-b " .. bits) or "", q(pass or ""), format and ("-m " .. format) or "", q(path))
  assert(sh(cmd), "ssh-keygen failed: " .. cmd)
end

local Server = {}
Server.__index = Server

--- Start a server. opts.config: sshd_config lines taking precedence; opts.strict_rsa: refuse "ssh-rsa"
--- (OpenSSH's default) instead of accepting it for libssh2 1.10's RSA signatures.
function M.start(opts)
  opts = opts or {}
  local root = is_root()
  local user, password, why = login_user()
  -- sshd reads AuthorizedKeysFile as the login user: the dir must be readable by it; with
  -- StrictModes its parents must not be group/world-writable, so as root it lives under /run
  local base = root and "/run" or (os.getenv("TMPDIR") or "/tmp")
  local dir = read_cmd("mktemp -d " .. base .. "/strand-sshd.XXXXXX"):match("^(%S+)")
  assert(dir, "mktemp failed")
  local data = read_cmd("mktemp -d /tmp/strand-sshd-data.XXXXXX"):match("^(%S+)")
  assert(sh("chmod 755 " .. q(dir)))
  if root then
    assert(sh(("chown %s %s"):format(user, q(data))))
    sh("mkdir -p /run/sshd && chmod 755 /run/sshd")   -- sshd's privilege separation dir
  end
  local self = setmetatable({ dir = dir, data = data, user = user, password = password,
    password_why = why, root = root, keys = {}, passphrase = "correct horse" }, Server)
  keygen(dir .. "/host_ed25519", "ed25519")
  keygen(dir .. "/host_rsa", "rsa", 2048)
  local k = self.keys
  k.ed25519 = dir .. "/id_ed25519";           keygen(k.ed25519, "ed25519")
  k.ed25519_pass = dir .. "/id_ed25519_pass"; keygen(k.ed25519_pass, "ed25519", nil, self.passphrase)
  k.ecdsa = dir .. "/id_ecdsa";               keygen(k.ecdsa, "ecdsa", 256, nil, "PEM")
  k.rsa = dir .. "/id_rsa";                   keygen(k.rsa, "rsa", 2048)
  k.rsa_pem = dir .. "/id_rsa_pem";           keygen(k.rsa_pem, "rsa", 2048, nil, "PEM")
  k.other = dir .. "/id_other";               keygen(k.other, "ed25519")   -- not authorized
  local auth = {}
  for name, path in pairs(k) do
    if name ~= "other" then auth[#auth + 1] = read_file(path .. ".pub") end
  end
  write_file(dir .. "/authorized_keys", table.concat(auth), "644")
  if root then sh(("chown root:root %s %s/authorized_keys"):format(q(dir), q(dir))) end
  self.port = free_port()
  local hostpub = read_file(dir .. "/host_ed25519.pub"):match("^(%S+ %S+)")
  self.host_pub = hostpub
  self.known_hosts = dir .. "/known_hosts"
  write_file(self.known_hosts, ("[127.0.0.1]:%d %s\n"):format(self.port, hostpub), "600")
  -- sshd takes the first value of a keyword: the caller's lines come first to override ours
  local cfg = {}
  for _, line in ipairs(opts.config or {}) do cfg[#cfg + 1] = line end
  local defaults = {
    "Port " .. self.port, "ListenAddress 127.0.0.1",
    "HostKey " .. dir .. "/host_ed25519", "HostKey " .. dir .. "/host_rsa",
    "PidFile none", "UsePAM no", "AuthorizedKeysFile " .. dir .. "/authorized_keys",
    "StrictModes " .. (root and "yes" or "no"),
    "PasswordAuthentication " .. (password and "yes" or "no"),
    "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
    "AllowUsers " .. user, "PermitRootLogin no", "LogLevel ERROR",
    "AllowTcpForwarding yes", "GatewayPorts no", "MaxStartups 200", "MaxSessions 100",
    "Subsystem sftp internal-sftp", "AcceptEnv STRAND_*", "PrintMotd no",
    "ClientAliveInterval 0",
  }
  for _, line in ipairs(defaults) do cfg[#cfg + 1] = line end
  if not opts.strict_rsa then cfg[#cfg + 1] = "PubkeyAcceptedAlgorithms +ssh-rsa" end
  write_file(dir .. "/sshd_config", table.concat(cfg, "\n") .. "\n", "600")
  self.log = dir .. "/sshd.log"
  -- sshd in the foreground of a watchdog shell: when this Lua process goes away, sshd is killed
  local script = ("/usr/sbin/sshd -D -e -f %s >>%s 2>&1 & p=$!; echo $p; exec >/dev/null; "
    .. "( while kill -0 %d 2>/dev/null; do sleep 1; done; kill $p 2>/dev/null ) & w=$!; "
    .. "wait $p; kill $w 2>/dev/null")
    :format(q(dir .. "/sshd_config"), q(self.log), mypid())
  local p = assert(io.popen(("LD_PRELOAD= setsid sh -c %s </dev/null 2>/dev/null &"):format(q(script))))
  self.pid = tonumber(p:read("l"))
  p:close()
  assert(self.pid, "could not start sshd")
  -- ready once it accepts connections (bounded)
  local socket = require "strand.socket"
  local strand = require "strand"
  local deadline = strand.now() + TIMEOUT
  while true do
    local c = socket.connect("127.0.0.1", self.port, { timeout = 1 })
    if c then
      local banner = c:read("l")
      c:close()
      if banner and banner:match("^SSH%-") then break end
    end
    if strand.now() > deadline or not sh("kill -0 " .. self.pid .. " 2>/dev/null") then
      local log = read_file(self.log) or ""
      self:stop()
      error("sshd did not start: " .. log, 2)
    end
    strand.sleep(0.05)
  end
  return self
end

-- sshd and every process below it (per-connection monitors, their unprivileged children and the
-- commands they run), by pid from /proc
local function tree(pid)
  local kids = {}
  local out = read_cmd("cat /proc/[0-9]*/stat 2>/dev/null")
  for line in out:gmatch("[^\n]+") do
    local p, pp = line:match("^(%d+) .*%) %S (%d+)")
    if p then
      pp = tonumber(pp)
      kids[pp] = kids[pp] or {}
      table.insert(kids[pp], tonumber(p))
    end
  end
  local all, queue = {}, { pid }
  while #queue > 0 do
    local p = table.remove(queue)
    all[#all + 1] = p
    for _, k in ipairs(kids[p] or {}) do queue[#queue + 1] = k end
  end
  return all
end

local function kill_tree(pid)
  local pids = tree(pid)
  local list = {}
  for _, p in ipairs(pids) do list[#list + 1] = tostring(p) end
  sh("kill -KILL " .. table.concat(list, " ") .. " 2>/dev/null")
end

--- Kill sshd (and every session process it forked) and wait until it is gone; remove the files.
function Server:stop()
  if self.pid then
    -- sshd's session children are in its process group? no: kill the listener; sessions end
    -- when their connections close. Also kill children to be thorough.
    kill_tree(self.pid)
    for _ = 1, 200 do
      if not sh(("kill -0 %d 2>/dev/null"):format(self.pid)) then break end
      sh("sleep 0.02")
    end
    self.pid = nil
  end
  if self.dir then sh("rm -rf " .. q(self.dir) .. " " .. q(self.data)); self.dir = nil end
end

--- Kill sshd now (a server dying mid-session), keeping the files.
function Server:kill()
  if self.pid then kill_tree(self.pid) end
end

--- Options for ssh.connect to this server; extra fields override.
function Server:opts(extra)
  local o = { host = "127.0.0.1", port = self.port, user = self.user, key = self.keys.ed25519,
    known_hosts = self.known_hosts, timeout = TIMEOUT }
  for k2, v in pairs(extra or {}) do o[k2] = v end
  if o.key == false then o.key = nil end
  return o
end

return M
