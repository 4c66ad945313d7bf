-- strand.pool — worker pools (processes or threads) and futures.
-- Process workers are forked children, each with a socket pair carrying framed, serialized
-- (fn, args) one way and results back (functions as bytecode: the channel is strand's own);
-- the parent reads every worker's results with one task per worker, in its loop. Thread workers
-- take jobs from a strand queue. Contract: API.md "strand.pool and futures".
--
-- Behaviour worth knowing:
--  * Up to two jobs are in flight per process worker (the next one is already in its socket when
--    it finishes one), up to 16 map chunks (w.inflight[w.ih..w.it], oldest first); a worker
--    answers a run of buffered chunks in one write. A worker that dies (kill -9, a crash,
--    os.exit) fails only the job it was
--    running, with "worker exited: signal 9" (or "worker exited: code N"); the jobs queued behind
--    it go to the others and a new worker replaces it. One whose initializer raised is not
--    replaced (its error, sent as its first frame, fails the jobs once no worker is left).
--  * A job's error comes back with the worker's traceback. Submitting to a closed pool raises.
--  * The pool's reader tasks live in the loop that created the pool: close it (or use <close>)
--    before a strand.run that created it can end.
--  * map(fn, list, chunksize): chunks of chunksize items go to a worker as one job (default: the
--    list split in about 4 chunks per worker, as Python's Pool.map); results come in order.
local core = require "strand.core"
local process = require "strand.process"
local socket = require "strand.socket"

local spawn_task, now = core.spawn, core.now
local serial = core.serial
local pack, unpack, tmove = table.pack, table.unpack, table.move
local FUNCS = { functions = true }          -- serial.decode's options, made once

local M = {}

local fin = require "strand._finish"
local remaining, check_timeout, outcome = fin.remaining, fin.check_timeout, fin.outcome

-- {==== futures

local Future = {}
Future.__index = Future
Future.__name = "strand.future"

local function new_future()     -- waiters/callbacks made on demand; the fields named (nil) so
  -- that the table is made with room for them (no rehash as they come)
  return setmetatable({ _state = "pending", _r = nil, _waiters = nil, _callbacks = nil }, Future)
end
M._new_future = new_future

local function check_future(self, fname)
  if getmetatable(self) ~= Future then
    error(("bad argument #1 to '%s' (strand.future expected, got %s)"):format(fname, type(self)), 3)
  end
end

-- Settle the future with r = pack(true, ...) | pack(false, err); wake joiners; run callbacks.
local function settle(f, r, state)
  if f._r then return end
  f._r = r
  f._claims = nil                        -- (a thread pool's: settled, it holds the dict no more)
  f._state = state or (r[1] and "done" or "failed")
  local w = f._waiters                   -- one joiner's notifier, or a list of them
  if w then
    f._waiters = nil
    if getmetatable(w) == nil then for i = 1, #w do w[i]:notify() end else w:notify() end
  end
  local cbs = f._callbacks
  if cbs == nil then return end
  f._callbacks = nil
  for i = 1, #cbs do
    local ok, err = pcall(cbs[i], f)
    if not ok then
      io.stderr:write("strand: a future's on_done callback failed: ", tostring(err), "\n")
    end
  end
end
M._settle = settle

--- f:join([timeout]) -> true, ... | false, err | nil, "timeout"
function Future:join(timeout)
  check_future(self, "join")
  check_timeout(timeout, 2, "join")
  local deadline = timeout and now() + timeout
  while self._r == nil do
    local n = core.notifier()
    local w = self._waiters                -- the first joiner's notifier alone: no list made
    if w == nil then self._waiters = n
    elseif getmetatable(w) ~= nil then self._waiters = { w, n }
    else w[#w + 1] = n end
    local ok = n:wait(remaining(deadline))
    if not ok and self._r == nil then
      w = self._waiters
      if w == n then self._waiters = nil
      elseif w and getmetatable(w) == nil then
        for i = #w, 1, -1 do if w[i] == n then table.remove(w, i) end end
      end
      return nil, "timeout"
    end
  end
  local r = self._r
  return unpack(r, 1, r.n)
end

--- f:result([timeout]) -> ... | raises the error, "timeout" or "cancelled"
function Future:result(timeout)
  check_future(self, "result")
  check_timeout(timeout, 2, "result")
  return outcome(self:join(timeout))
end

function Future:done()
  check_future(self, "done")
  return self._r ~= nil
end

--- f:cancel() -> true if it had not started (it will never run), else false
function Future:cancel()
  check_future(self, "cancel")
  if self._state ~= "pending" then return self._state == "cancelled" end
  local claims = self._claims       -- a thread pool's job: queued, or taken by a worker already?
  if claims and claims:incr(self._id) ~= 1 then return false end   -- (thread_worker's claim)
  settle(self, pack(false, "cancelled"), "cancelled")
  return true
end

function Future:cancelled()
  check_future(self, "cancelled")
  return self._state == "cancelled"
end

function Future:status()
  check_future(self, "status")
  return self._state
end

--- f:on_done(cb): cb(f) runs in the submitter's loop when f settles (now if it already has)
function Future:on_done(cb)
  check_future(self, "on_done")
  if type(cb) ~= "function" then
    error("bad argument #1 to 'on_done' (function expected, got " .. type(cb) .. ")", 2)
  end
  if self._r then cb(self)
  else
    local cbs = self._callbacks
    if cbs == nil then cbs = {}; self._callbacks = cbs end
    cbs[#cbs + 1] = cb
  end
  return self
end

-- }==== futures

-- {==== the pool

local Pool = {}
Pool.__index = Pool
Pool.__name = "strand.pool"

local function check_pool(self, fname)
  if getmetatable(self) ~= Pool then
    error(("bad argument #1 to '%s' (strand.pool expected, got %s)"):format(fname, type(self)), 3)
  end
end

local INFLIGHT = 2          -- jobs sent ahead to one process worker
local CHUNK_INFLIGHT = 16   -- map chunks sent ahead to one process worker (refilled by halves)
-- a job on the wire: id, function id (0: none), 0 for a plain job, 1 for a map chunk (a list,
-- however short: the worker runs it in C, link:run_chunk, and the parent places its results
-- straight into map's table; small chunks went as bare values, which cost both sides more
-- tables), function bytes ("" when the worker has them), the encoded arguments (last: a plain
-- job's are decoded in place, process._run_job); a result: id (8 bytes) then the encoded outcome
local DISPATCH_BYTES = 4096 -- map: encoded chunk bytes queued between two dispatches
local JOB_HEAD = ">I8I8Bs4"         -- id, function id, kind, function bytes (the arguments follow)
local FRAMED_JOB = ">I4I8I8Bs4s4"   -- with its frame length first and the arguments (8+8+1+4+4 = 25)
local spack = string.pack
local function_code, copy_error
-- strand forks that made this process: a pool tells a forked child's copy of it by this
local forkgen = core.process and core.process._forkgen or function() return 0 end
-- recv_frame's limit on both ends of a worker's sockets: what the 4-byte length can say (its
-- default, 64 MiB, skipped a larger job or result: the worker exited, the reader waited forever)
local FRAME_MAX = 0xffffffff

-- A job's traceback, without the worker's own frames below the job.
local JOB_BASES = { "\n\t%[C%]: in function 'xpcall'", "\n\t%[C%]: in %a+ 'run_job'",
  "\n\t%[C%]: in %?\n\t%[C%]: in %a+ 'run_chunk'" }
local function job_traceback(e)
  local tb = debug.traceback(e, 2)
  if type(tb) ~= "string" then return tb end
  -- the first of: the xpcall a job runs under, a plain job's caller (process._run_job), a chunk's
  -- loop (link:run_chunk); not just the first pattern found (a program that made the pool under
  -- an xpcall of its own has that one far below a chunk's loop)
  local cut
  for _, pat in ipairs(JOB_BASES) do
    local at = tb:find(pat)
    if at and (cut == nil or at < cut) then cut = at end
  end
  return cut and tb:sub(1, cut - 1) or tb
end

-- A map chunk in a worker: the items' results into out (locals, no closure per chunk).
local function run_chunk(fn, args, out, n)
  for i = 1, n do out[i] = (fn(args[i])) end
end

-- What a process worker runs: jobs from its socket, results back, until told to stop.
local function worker_main(sock, out, link, initializer, initargs, maxtasks)
  local traceback = job_traceback
  local C = core.process
  if initializer then
    -- an initializer that raises: its error (with its traceback) to the parent as the worker's
    -- first frame, id 0 (no job's), and the worker ends; the parent does not replace it
    local ok, err = xpcall(initializer, traceback, unpack(initargs, 1, initargs.n or #initargs))
    if not ok then
      local eok, enc = pcall(C._encodev, false, err)
      if not eok or enc == nil then enc = C._encodev(false, tostring(err)) end
      out:settimeout(nil)
      out:sendall(string.pack(">I4I8", 8 + #enc, 0) .. enc)
      return 1
    end
  end
  local done, got, fns = 0, 0, {}
  local outbox, spack, sunpack, sbyte = {}, string.pack, string.unpack, string.byte
  local encodev, encode_list, decode, new_table = C._encodev, C._encode_list, serial.decode, C._table
  local run_job = C._run_job
  local result_max = C._result_max()              -- (lowered by a test hook: M._test_result_max)
  local function flush()
    local n = #outbox
    if n == 0 then return end
    out:sendall(n == 1 and outbox[1] or table.concat(outbox))
    link:bump(2, n)
    for i = n, 1, -1 do outbox[i] = nil end      -- the same table again
  end
  -- a map chunk: its results into the outbox, sent in batches while more chunks are buffered
  -- (a list link:run_chunk leaves to it: shared tables among its items)
  local function answer_chunk(fn, argsdata, id)
    local ok, enc
    local args = decode(argsdata, FUNCS)         -- answered as "true, list" (encode_list)
    local n = args.n
    local out = new_table(n)
    local okx, err = xpcall(run_chunk, traceback, fn, args, out, n)
    if okx then ok, enc = pcall(encode_list, out, 1, n, true)
    else ok, enc = pcall(encodev, false, err) end
    if not ok or enc == nil then                 -- a copy error is the job's, not the worker's
      enc = encodev(false, "the job's results cannot be copied"
        .. (ok and " (a strand object)" or ": " .. tostring(enc)))
    elseif #enc > result_max then                -- so is a result too large for a frame
      local size = #enc
      C._release(enc)
      enc = encodev(false, ("strand.pool: result too large: %d bytes encoded (a frame holds at most %d)")
        :format(size, result_max))
    end
    outbox[#outbox + 1] = spack(">I4I8", 8 + #enc, id) .. enc   -- send_frame's format
    if sock:pending() < 4 or not okx then flush() end
  end
  sock:settimeout(nil)
  out:settimeout(nil)
  while true do
    if #outbox > 0 and sock:pending() < 4 then flush() end  -- nothing more buffered: answer first
    link:spin(1, got + 1)                        -- the next job: watched a moment (poollink.c)
    local data = sock:recv_frame(FRAME_MAX)
    got = got + 1
    if data == nil then flush(); return 0 end
    if data == "stop" then flush(); return 0 end
    local id, fid, chunk, fdata, apos = sunpack(JOB_HEAD, data)
    chunk = chunk ~= 0
    if not chunk and #outbox > 0 then flush() end  -- a submitted job may be long: answer the rest
    local fn = fid ~= 0 and fns[fid] or nil
    if fn == nil then
      local err
      fn, err = decode(fdata, FUNCS)
      if type(fn) ~= "function" then               -- never from strand's own parent
        err = "strand.pool: the job's function cannot be decoded: " .. tostring(err)
        fn = function() error(err, 0) end
      elseif fid ~= 0 then
        fns[fid] = fn
      end
    end
    -- a plain job's arguments and outcome cross as bare values, a chunk's as a list
    if not chunk then                            -- decoded, called and answered in C
      out:sendall(run_job(data, apos + 4, fn, traceback, id))
      link:bump(2, 1)
    elseif link:skipped(id) then                 -- a chunk of a map that failed (cancel_chunks)
      local enc = encodev(false, "cancelled")
      outbox[#outbox + 1] = spack(">I4I8", 8 + #enc, id) .. enc
      if sock:pending() < 4 then flush() end
    else
      -- a list chunk is read, called and answered in C while its results are plain values
      local frame = link:run_chunk(data, apos + 4, fn, traceback, id)
      if frame then
        outbox[#outbox + 1] = frame
        -- a failure (the outcome's first value false: the frame's byte 16, after its length, id
        -- and the encoding's 3-byte head) goes at once: the map waiting for it cancels the rest
        if sock:pending() < 4 or sbyte(frame, 16) == 1 then flush() end
      else
        answer_chunk(fn, sunpack(">s4", data, apos), id)
      end
    end
    done = done + 1
    if maxtasks and done >= maxtasks then flush(); return 0 end
  end
end

-- A process job's strings (its arguments, its function when encoded for this job alone) hold
-- references to the strand objects in them: this process keeps them while the job may still be
-- sent (a worker that dies gives its later jobs back, and another worker decodes them again:
-- workers decode without adopting), and drops them when the job is answered, failed or dropped.
-- The chunks of one map share its function's string: job.fown counts the chunks holding it.
local release = core.process and core.process._release
local function drop_job(job)
  local a = job.argsdata
  if a then job.argsdata = nil; release(a) end
  if job.fid == nil and job.fdata then
    local f, o = job.fdata, job.fown
    job.fdata = nil
    if o == nil then release(f)
    else
      o.n = o.n - 1
      if o.n == 0 then release(f) end
    end
  end
end

local function fail_job(job, msg)
  drop_job(job)
  if job.fut then settle(job.fut, pack(false, msg)) else job.fail(msg) end
end

local start_worker
local flush_out
local cancel_chunks
local too_large
local shift_inflight
local new_table = core.process and core.process._table
local INFLIGHT_SHIFT, INFLIGHT_ROOM = 32, 64   -- (shift_inflight, below)

-- Give w the job at the head of the queue (a cancelled one is dropped): false when w cannot take
-- it (a plain job behind chunks it still has), else true.
local function give(self, w)
  local jobs = self._jobs
  local job = jobs[self._jh]
  while job.fut and job.fut._state ~= "pending" do   -- cancelled before it was sent: dropped
    jobs[self._jh] = nil                             -- (without taking w's room, so that a
    drop_job(job)                                    -- queue of them never stalls)
    self._jh = self._jh + 1
    if self._jh > self._jt then self._jh, self._jt = 1, 0; return true end
    job = jobs[self._jh]
  end
  if not job.chunk and w.it - w.ih + 1 >= INFLIGHT then return false end   -- a plain job after chunks
  jobs[self._jh] = nil
  self._jh = self._jh + 1
  if self._jh > self._jt then self._jh, self._jt = 1, 0 end   -- empty: from 1 again (the keys
  -- stay in the array part instead of climbing through the hash part)
  if job.fut then job.fut._state = "running" end
  job.w = w
  w.it = w.it + 1
  w.inflight[w.it] = job
  w.sent = w.sent + 1
  local fdata = job.fdata
  if job.fid then
    if w.known[job.fid] then fdata = "" else w.known[job.fid] = true end
  end
  local argsdata = job.argsdata          -- send_frame's ">s4" around the job, in one pack
  w.out[#w.out + 1] = spack(FRAMED_JOB, 25 + #fdata + #argsdata, job.id, job.fid or 0,
    job.chunk and 1 or 0, fdata, argsdata)
  return true
end

-- Fail every job queued (none can run). The queue is emptied in place: map's submit_chunks
-- holds it while it adds chunks.
local function fail_queued(self, msg)
  local jobs, jh, jt = self._jobs, self._jh, self._jt
  local failed = tmove(jobs, jh, jt, 1, {})
  for i = jh, jt do jobs[i] = nil end
  self._jh, self._jt = 1, 0
  for i = 1, #failed do fail_job(failed[i], msg) end
end

-- Workers the pool lacks (one that died could not be replaced: a fork refused while a strand
-- thread runs, or failed), started again now that jobs are queued; when none runs and none can
-- be started, the queued jobs fail (they waited forever). While some run, a start that failed is
-- tried again only after a wait, doubled each time up to 1 s (else every job queued and every
-- result read tried a fork); with none running, every time (the jobs would fail).
local function refill(self)
  local err
  if self._retry_at and #self._workers > 0 and now() < self._retry_at then return end
  while #self._workers < self._size - self._lost do
    local ok, e = pcall(start_worker, self)
    if not ok then err = e; break end
  end
  if err then
    local d = math.min(2 * (self._retry_wait or 0.025), 1)
    self._retry_wait, self._retry_at = d, now() + d
  else
    self._retry_wait, self._retry_at = nil, nil
  end
  if #self._workers > 0 then return end
  fail_queued(self, "strand.pool: no worker could be started: " .. tostring(err))
end

-- Send queued jobs to process workers with room.
local function dispatch(self)
  if self._kind ~= "process" or self._jt < self._jh then return end   -- nothing queued
  if self._dead then return fail_queued(self, self._dead) end          -- no worker left
  if #self._workers < self._size - self._lost and not self._terminated then
    refill(self)
    if self._jt < self._jh then return end
  end
  -- first one job to every idle worker, then more ahead to each busy one (map chunks deeper,
  -- refilled by halves so that a worker gets them in batches), dealt one at a time so that a
  -- short queue is shared out evenly (8 long tasks on 2 workers: 4 each, not 7 and 1)
  local workers = self._workers
  for i = 1, #workers do
    if self._jt < self._jh then break end
    local w = workers[i]
    if w.it < w.ih and w.alive and (not self._max or w.sent < self._max) then give(self, w) end
  end
  if self._jt < self._jh then return flush_out(self) end
  local caps, any = {}, false
  for i, w in ipairs(workers) do
    local n = w.it - w.ih + 1
    local cap
    if self._jobs[self._jh].chunk then cap = n <= CHUNK_INFLIGHT // 2 and CHUNK_INFLIGHT - n or 0
    else cap = INFLIGHT - n end
    if self._max and cap > self._max - w.sent then cap = self._max - w.sent end
    if not w.alive then cap = 0 end
    caps[i] = cap
    if cap > 0 then any = true end
  end
  -- each job to the worker with room and the fewest jobs in flight (the first of equals): a
  -- map dispatched a chunk at a time as it is encoded shares its chunks out evenly (dealing
  -- from the first worker each time gave it 7 of 8 chunks)
  while any and self._jt >= self._jh do
    local best, bn
    for i = 1, #workers do
      if caps[i] > 0 then
        local w = workers[i]
        local n = w.it - w.ih + 1
        if best == nil or n < bn then best, bn = i, n end
      end
    end
    if best == nil then break end
    if give(self, workers[best]) then caps[best] = caps[best] - 1 else caps[best] = 0 end
  end
  return flush_out(self)
end

-- Write what dispatch queued, one write per worker.
flush_out = function(self)
  local workers = self._workers
  for i = 1, #workers do
    local w = workers[i]
    if #w.out > 0 and not w.sending then
      -- one write for everything queued to this worker (another task may add while it waits)
      w.sending = true
      while #w.out > 0 do
        local out = w.out
        w.out = w.spare or {}              -- two tables taking turns: none made per write
        w.spare = nil
        local nf = #out
        local ok = w.jsock:sendall(nf == 1 and out[1] or table.concat(out))
        if ok and w.alive then w.link:bump(1, nf) end   -- (a send may wait: w may be gone)
        for i = nf, 1, -1 do out[i] = nil end
        w.spare = out
        if not ok then w.out = {}; break end   -- the worker died: its reader handles it
      end
      w.sending = false
    end
  end
end

-- A process worker ended (EOF on its socket): fail its current job, requeue the others, replace.
-- One whose initializer raised (w.init_err, its first frame) ran none of its jobs: they all go
-- back, and it is not replaced (as a thread worker's: it would raise again, and again); when every
-- worker of the pool went so, queued and later jobs fail with "worker exited: <its error>".
local function worker_gone(self, w)
  w.alive = false
  local code = w.proc_h:wait()
  process._reaped(w.proc_h)
  local inflight = tmove(w.inflight, w.ih, w.it, 1, {})   -- oldest first
  w.inflight, w.ih, w.it = new_table(INFLIGHT_ROOM), 1, 0
  if self._terminated then
    for _, job in ipairs(inflight) do fail_job(job, "pool terminated") end
  elseif #inflight > 0 then
    local msg = code < 0 and ("worker exited: signal " .. -code) or ("worker exited: code " .. code)
    local keep = w.broken or w.init_err ~= nil   -- (broken: its job failed already)
    if not keep then fail_job(inflight[1], msg) end
    for i = #inflight, keep and 1 or 2, -1 do
      local job = inflight[i]
      if self._skipping[job.id] then               -- a failed map's chunk: not sent again
        self._skipping[job.id] = nil
        fail_job(job, "cancelled")
      else
        if job.fut then job.fut._state = "pending" end
        self._jh = self._jh - 1
        self._jobs[self._jh] = job
      end
    end
  end
  w.sock:close()
  w.jsock:close()
  w.link:close()
  process._parent_ends[w.sock] = nil
  process._parent_ends[w.jsock] = nil
  for i, x in ipairs(self._workers) do if x == w then table.remove(self._workers, i); break end end
  -- one try at a replacement: with jobs queued (its own given back among them) dispatch's refill
  -- makes it (failing with no worker left, it fails them); with none, only an open pool wants it
  -- at once (failing, dispatch tries again once jobs are queued), and only for a worker that had
  -- answered a job: one that ended before (it dies at once: out of memory, a crash, os.exit in
  -- its initializer) is replaced when jobs are queued, each new one then taking a job (failed if
  -- it dies too), so that no loop of forks runs while the pool is idle. Both here tried twice in
  -- a row.
  if w.init_err ~= nil and not self._terminated then
    self._lost = self._lost + 1
    if self._lost >= self._size and #self._workers == 0 then   -- none left, none to come
      self._dead = "worker exited: " .. tostring(w.init_err)   -- (dispatch fails the queued jobs)
    end
  elseif not self._terminated and not self._closed and self._jt < self._jh and not w.fresh then
    pcall(start_worker, self)
  end
  dispatch(self)
  if #self._workers == 0 then
    for _, n in ipairs(self._idle) do n:notify() end
    self._idle = {}
  end
end

-- A result frame that breaks the protocol (shorter than its id, or another job's id: never from
-- strand's own worker): the job in flight fails with what came, and the worker, which cannot be
-- trusted any more, is killed; worker_gone (its reader's end) gives its other jobs to another.
local function broken_worker(w, job, id)
  fail_job(job, ("strand.pool: malformed result: %s while job %d was expected")
    :format(id and "an answer for job " .. id or "a frame cut short", job.id))
  w.broken = true
  w.proc_h:signal(9)
end

-- A worker's jobs in flight are w.inflight[w.ih..w.it] in a table made with room for 64 (at most
-- 16 are in flight): once ih reaches INFLIGHT_SHIFT they move down to 1, so the keys stay in its
-- array part. (Climbing for good while a worker never runs dry -- submit after submit -- they
-- went to the hash part, which was rebuilt every few jobs: a quarter of the parent's work.)
shift_inflight = function(w)               -- w.inflight[w.ih] taken (nil): the rest moved down
  local inf, from, to = w.inflight, w.ih + 1, w.it
  local n = to - from + 1
  tmove(inf, from, to, 1)
  for k = n + 1, to do inf[k] = nil end
  w.ih, w.it = 1, n
end

-- A map chunk's outcome when its results went straight into map's table (process._decode_into)
local PLACED = { true, n = 1 }

-- A test hook (M._test_reader_fault): called, when set, with w and the job just taken from its
-- jobs in flight, before the job is settled; a hook that raises makes the reader raise there.
local reader_fault
function M._test_reader_fault(fn) reader_fault = fn end
-- The most a job's frame may carry (its 4-byte length; recv_frame's limit on the worker's side):
-- 25 bytes of head, the function's bytes and the arguments'. A job larger raises naming the call
-- (too_large, below) instead of string.pack's "integer overflow". M._test_args_max(n), a test
-- hook, lowers it (nil: back to 4 GiB - 1).
local args_max = FRAME_MAX
function M._test_args_max(n) args_max = n or FRAME_MAX end

-- Raise for a job whose frame would not fit: fdata and argsdata released (the job is not made).
too_large = function(fname, fdata, owned, argsdata, what, lvl)
  local room = args_max - 25
  local nf, na = #fdata, #argsdata
  if argsdata then release(argsdata) end
  if owned then release(fdata) end
  if nf > room then
    error(("bad argument #1 to '%s' (function too large: %d bytes encoded, a job's frame holds at most %d)")
      :format(fname, nf, room), lvl + 1)
  end
  error(("bad argument #2 to '%s' (%s too large: %d bytes encoded, a job's frame holds at most %d%s)")
    :format(fname, what, na, room - nf, nf > 0 and " beside the function's " .. nf or ""), lvl + 1)
end

-- A test hook: the most a result frame may carry, lowered from 4 GiB - 8 for the pools made
-- after it (their workers inherit it), so that a result too large runs for real; nil: 4 GiB - 8.
function M._test_result_max(n) return core.process._result_max(n or 0xffffffff - 8) end

-- The results of worker w, read until its end closes (reader, below, protects it).
local function read_results(self, w)
  local sock = w.sock
  local sunpack, decode_into, decode_at = string.unpack, core.process._decode_into,
    core.process._decode_at
  local result = core.process._result
  local skipping = self._skipping
  sock:settimeout(nil)
  while true do
    local data, _, code = sock:recv_frame(FRAME_MAX)
    if data == nil then                  -- the worker's end closed (it exits), or a read error:
      if code ~= "EOF" and code ~= "EPROTO" and code ~= "ECLOSED" then   -- a live worker, whose
        w.proc_h:signal(9)                                               -- end worker_gone waits for
      end
      break
    end
    local job = w.ih <= w.it and w.inflight[w.ih]
    if w.fresh then                      -- its first frame: id 0 when its initializer raised
      w.fresh = nil
      if self._init and #data >= 8 and sunpack(">I8", data) == 0 then
        local _, e = decode_at(data, 9)
        w.init_err = e
        break                            -- (the worker ends: worker_gone)
      end
    end
    if job and job.fut and not job.chunk and job.fid and job.fut._callbacks == nil then
      -- a plain job's answer (apply, submit): decoded, its arguments' references dropped and its
      -- future settled here, in the fewest calls (the rest as below)
      w.cur = job                          -- (the job being placed, for reader)
      local id, r = result(data, job.argsdata)
      job.argsdata = nil
      w.inflight[w.ih] = nil
      if w.ih == w.it then w.ih, w.it = 1, 0
      elseif w.ih < INFLIGHT_SHIFT then w.ih = w.ih + 1 else shift_inflight(w) end
      if job.id ~= id then broken_worker(w, job, id); break end
      local f = job.fut
      if f._r == nil then                  -- (settle, inline)
        f._r = r
        f._state = r[1] and "done" or "failed"
        local wt = f._waiters
        if wt then
          f._waiters = nil
          if getmetatable(wt) == nil then for i = 1, #wt do wt[i]:notify() end else wt:notify() end
        end
      end
      w.cur = nil                          -- (not kept: it holds the results)
      goto next
    end
    do
    local id = #data >= 8 and sunpack(">I8", data) or nil   -- (nil: cut short)
    if w.ih <= w.it then                 -- the oldest job in flight: answers come in order
      job = w.inflight[w.ih]
      w.inflight[w.ih] = nil
      if w.ih == w.it then w.ih, w.it = 1, 0                      -- empty: from 1 again
      elseif w.ih < INFLIGHT_SHIFT then w.ih = w.ih + 1 else shift_inflight(w) end
      w.cur = job
      if reader_fault then reader_fault(w, job) end
    end
    if job and job.id ~= id then broken_worker(w, job, id); break end   -- ids stay in order
    local r
    local into = job and job.fut and job.fut._into
    if into and decode_into(data, 9, into, job.fut._first) then
      r = PLACED                          -- a map chunk's results, already in map's table
    else
      r = pack(decode_at(data, 9))               -- true, ... | false, err
    end
    if job then
      if job.argsdata then drop_job(job) end
      if job.fut then settle(job.fut, r) else job.done(r) end
      w.cur = nil
      if skipping[id] then skipping[id] = nil; w.link:skip(id, true) end   -- (its slot again)
    end
    end
    ::next::
    if self._jt >= self._jh and w.it - w.ih + 1 <= CHUNK_INFLIGHT // 2 then   -- queued jobs,
      dispatch(self)                                                         -- and room here
    end
  end
end

-- A worker's reader task: its results read, then the worker gone (worker_gone). Nothing in
-- read_results is known to raise, but if it ever did, the worker stayed in the pool's list and
-- join/terminate waited for it for ever: so its jobs fail with the error (the one being placed
-- and those in flight: the worker may have run them), it is killed, and it goes as any other
-- (replaced, the pool's waits woken); should that fail too, it is at least taken off the list.
local function reader(self, w)
  local ok, err = pcall(read_results, self, w)
  if not ok then
    local msg = "strand.pool: a worker's results could not be read: " .. tostring(err)
    local cur = w.cur
    w.cur = nil
    if cur and cur.fut and cur.fut._r == nil then fail_job(cur, msg) end
    for i = w.ih, w.it do
      local job = w.inflight[i]
      w.inflight[i] = nil
      if job then fail_job(job, msg) end
    end
    w.ih, w.it = 1, 0
    w.broken = true                      -- (no job of its own to fail in worker_gone)
    pcall(w.proc_h.signal, w.proc_h, 9)
  end
  local ok2, err2 = pcall(worker_gone, self, w)
  if not ok2 then
    w.alive = false
    for i, x in ipairs(self._workers) do if x == w then table.remove(self._workers, i); break end end
    for _, o in ipairs { w.sock, w.jsock, w.link } do pcall(o.close, o) end
    pcall(w.proc_h.wait, w.proc_h)       -- (killed above, or ended: no zombie)
    if #self._workers == 0 then
      for _, n in ipairs(self._idle) do n:notify() end
      self._idle = {}
    end
    io.stderr:write("strand.pool: a worker's end failed: ", tostring(err2), "\n")
  end
end

-- Two one-way channels per worker: jobs (ja -> jb) and results (rb -> ra). A socket that only
-- reads never sees write-space edges, so neither side wakes up for nothing after each message
-- (one duplex pair would wake each reader once more per round trip: EPOLLOUT, edge-triggered).
start_worker = function(self)
  local ja, jb = socket.pair()
  if not ja then error("strand.pool: cannot create a worker channel: " .. tostring(jb), 0) end
  local ra, rb = socket.pair()
  if not ra then
    ja:close(); jb:close()
    error("strand.pool: cannot create a worker channel: " .. tostring(rb), 0)
  end
  ja:shutdown("r"); jb:shutdown("w"); ra:shutdown("w"); rb:shutdown("r")
  local init, initargs, max = self._init, self._initargs, self._max
  local ends = process._parent_ends
  ends[ja] = true                             -- closed in the worker (and in any forked child)
  local link, lerr = core.process._link()
  if not link then
    ends[ja] = nil
    ja:close(); jb:close(); ra:close(); rb:close()
    error("strand.pool: cannot create a worker channel: " .. tostring(lerr), 0)
  end
  local h, err = process._fork(function()
    return worker_main(jb, rb, link, init, initargs, max)
  end, true, self._allow_threads, ra)
  jb:close(); rb:close()
  if not h then
    ends[ja] = nil
    ja:close(); ra:close(); link:close()
    error("strand.pool: cannot start a worker: " .. tostring(err), 0)
  end
  ends[ra] = true
  local w = { sock = ra, jsock = ja, proc_h = h, pid = h:pid(), inflight = new_table(INFLIGHT_ROOM), ih = 1, it = 0, out = {}, sent = 0, alive = true,
              known = {}, link = link, fresh = true }
  self._workers[#self._workers + 1] = w
  w.task = spawn_task(reader, self, w)
  core.process._background(w.task)
  return w
end

-- Thread workers: jobs from a shared queue, results to a shared queue.
-- A job's id in claims counts its claimants: the worker that takes it and a cancel (Future:cancel,
-- a failed map's chunks); the second one to come sees 2 and gives up (a cancelled job is skipped,
-- a job taken is not cancelled). The reader drops the key with the job's answer.
local SKIPPED = { false, "cancelled", n = 2 }
local function thread_worker(jobs, results, initializer, initargs, claims)
  local traceback = debug.traceback
  if initializer then initializer(table.unpack(initargs, 1, initargs.n or #initargs)) end
  while true do
    local job = jobs:get()
    if job == nil or job == "stop" then return end
    local id, fn, args, chunk = job[1], job[2], job[3], job[4]
    if claims:incr(id) ~= 1 then results:put({ id, SKIPPED }); goto continue end   -- cancelled
    if type(fn) == "string" then fn = require("strand.core").serial.decode(fn, { functions = true }) end
    local r
    if chunk then
      local out = {}
      r = table.pack(xpcall(function()
        for i = 1, args.n do out[i] = (fn(args[i])) end
        return out
      end, traceback))
    else
      r = table.pack(xpcall(fn, traceback, table.unpack(args, 1, args.n)))
    end
    local ok = pcall(results.put, results, { id, r })
    if not ok then results:put({ id, table.pack(false, "the job's results cannot be copied") }) end
    ::continue::
  end
end

local function thread_reader(self)
  while true do
    local msg = self._results:get()
    if msg == nil then return end
    local job = self._pending[msg[1]]
    self._pending[msg[1]] = nil
    self._claims[msg[1]] = nil
    if job then
      if job.fut then settle(job.fut, msg[2]) else job.done(msg[2]) end
    end
  end
end

-- A thread worker that ends by itself while the pool is open (its loop could not make a poller:
-- out of descriptors; its initializer raised) leaves the pool; when none is left, the jobs queued
-- and every later one fail with its error instead of waiting forever for a worker. Pool:join
-- joins these tasks too: a worker's join can see it finished a moment before its eventfd is
-- written, and the loop's last round may skip its poll, so a watcher still waiting then would
-- hold the pool (its queues and dict) and the worker's handle until the loop ran again.
local function watch_thread(self, t)
  local task = spawn_task(function()
    local ok, err = t:join()
    if self._closed then return end
    for i, w in ipairs(self._workers) do
      if w == t then table.remove(self._workers, i); break end
    end
    if #self._workers > 0 then return end
    self._dead = "worker exited: " .. tostring(ok and "it returned" or err)   -- a process's: "code N"
    while self._jobq:get_nowait() do end
    for id, job in pairs(self._pending) do
      self._pending[id] = nil
      fail_job(job, self._dead)
    end
  end)
  core.process._background(task)
  self._watchers[#self._watchers + 1] = task
end

--- pool.new{size=, kind="process"|"thread", initializer=, initargs=, maxtasksperchild=}
function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #1 to 'new' (table expected, got " .. type(opts) .. ")", 2) end
  local size = opts.size or process.cpu_count()
  if math.type(size) ~= "integer" or size < 1 then
    error("bad argument #1 to 'new' (size must be an integer >= 1)", 2)
  end
  local kind = opts.kind or "process"
  if kind ~= "process" and kind ~= "thread" then
    error("bad argument #1 to 'new' (kind must be \"process\" or \"thread\")", 2)
  end
  if opts.initializer ~= nil and type(opts.initializer) ~= "function" then
    error("bad argument #1 to 'new' (initializer must be a function)", 2)
  end
  if opts.initargs ~= nil and type(opts.initargs) ~= "table" then
    error("bad argument #1 to 'new' (initargs must be a table)", 2)
  end
  local max = opts.maxtasksperchild
  if max ~= nil and (math.type(max) ~= "integer" or max < 1) then
    error("bad argument #1 to 'new' (maxtasksperchild must be an integer >= 1)", 2)
  end
  local self = setmetatable({
    _kind = kind, _size = size, _init = opts.initializer, _initargs = opts.initargs or {},
    _max = max, _allow_threads = opts.allow_threads, _workers = {}, _jobs = {}, _jh = 1, _jt = 0, _idle = {},
    _next = 0, _pending = {}, _gen = forkgen(), _lost = 0,
  }, Pool)
  if kind == "process" then
    self._skipping = {}                   -- job id -> worker told to skip it (cancel_chunks)
    local th = package.loaded["strand.thread"]
    if not opts.allow_threads and type(th) == "table" and th.active_count() > 1 then
      error(("pool.new: %d strand thread(s) run in this process; a forked worker would hold only "
        .. "this one, with whatever lock another thread held at that moment frozen for good (pass "
        .. "allow_threads=true to fork anyway, or use kind=\"thread\")"):format(th.active_count() - 1), 2)
    end
    for _ = 1, size do
      local ok, err = pcall(start_worker, self)
      if not ok then                      -- the workers started so far go with the pool
        pcall(self.terminate, self)
        return nil, "pool.new: " .. tostring(err)     -- out of a resource: not a raise (API.md)
      end
    end
  else
    local thread = require "strand.thread"
    local queue = require "strand.queue"
    self._jobq, self._results = queue.new(), queue.new()
    self._claims = require("strand.shared").dict()
    self._watchers = {}                   -- watch_thread's tasks, one per worker
    for i = 1, size do
      local t, err, code = thread.start(thread_worker, self._jobq, self._results, self._init, self._initargs,
        self._claims)
      if not t then                       -- out of a resource: the started ones stop, nil, message
        for _ = 1, #self._workers do self._jobq:put("stop") end
        for _, w in ipairs(self._workers) do w:join() end
        self._closed, self._terminated, self._joined = true, true, true
        return nil, "pool.new: " .. err, code
      end
      self._workers[i] = t
    end
    self._reader = spawn_task(thread_reader, self)
    core.process._background(self._reader)
    for _, t in ipairs(self._workers) do watch_thread(self, t) end
  end
  return self
end

-- A forked child's copy of its parent's pool: its workers, queues and sockets are the parent's
-- (a job sent from here would be answered there, or never; close, terminate or __gc would stop
-- or kill the parent's workers). Using it raises; __close and __gc leave it alone.
local function foreign(self, fname)
  error(("%s: the pool belongs to the parent process (this is a forked child)"):format(fname), 3)
end

local function check_fn(fn, fname)
  if type(fn) ~= "function" then
    error(("bad argument #1 to '%s' (function expected, got %s)"):format(fname, type(fn)), 3)
  end
end

-- Functions with no upvalue but _ENV are encoded once (encoding a function looks for it among
-- the loaded modules' functions, which costs tens of microseconds): id and bytes, cached.
local fcache = setmetatable({}, { __mode = "k" })
local next_fid = 0
function_code = function(fn)
  local c = fcache[fn]
  if c then return c[1], c[2] end
  local i = 1
  while true do
    local name = debug.getupvalue(fn, i)
    if name == nil then break end
    if name ~= "_ENV" then return nil, nil end
    i = i + 1
  end
  local data = core.process._encode(fn)
  if data == nil then return nil, nil end
  next_fid = next_fid + 1
  fcache[fn] = { next_fid, data }
  return next_fid, data
end

local OBJMSG = "bad argument #%d to '%s' (a strand object cannot be copied to a process worker: "
  .. "make it before the pool and reach it from the initializer)"

-- Which of the values ... (arguments #first, #first+1, ...) holds such an object: OBJMSG for it.
local function objmsg_of(fname, first, ...)
  for k = 1, select("#", ...) do
    local data = core.process._encode((select(k, ...)))
    if data == nil then return OBJMSG:format(first + k - 1, fname) end
    release(data)
  end
  return OBJMSG:format(first, fname)
end

-- submit's and apply's way past the queue: nothing queued, a worker idle, the function encoded
-- once (function_code): the job goes to that worker at once, one frame, one write, as dispatch
-- would send it (give, flush_out) without their walk over the workers. false: use enqueue.
local function direct(self, fn, job, argsdata)
  if self._jt >= self._jh or argsdata == nil then return false end   -- (enqueue raises for nil)
  local c = fcache[fn]
  if c == nil then return false end
  local workers, w, max = self._workers, nil, self._max
  for i = 1, #workers do
    local x = workers[i]
    if x.it < x.ih and x.alive and not x.sending and (max == nil or x.sent < max) then
      w = x
      break
    end
  end
  if w == nil then return false end
  local id, fid, fdata = self._next + 1, c[1], c[2]
  if 25 + #fdata + #argsdata > args_max then return false end   -- (enqueue raises)
  self._next = id
  job.id, job.fid, job.fdata, job.argsdata, job.chunk, job.w = id, fid, fdata, argsdata, false, w
  job.fut._state = "running"
  local it = w.it + 1
  w.it = it
  w.inflight[it] = job
  w.sent = w.sent + 1
  local known = w.known
  if known[fid] then fdata = "" else known[fid] = true end
  w.sending = true
  local ok = w.jsock:sendall(spack(FRAMED_JOB, 25 + #fdata + #argsdata, id, fid, 0, fdata, argsdata))
  w.sending = false
  if ok and w.alive then w.link:bump(1, 1) end -- (else the worker died: its reader handles it)
  if #w.out > 0 then flush_out(self) end       -- queued by another task meanwhile
  return true
end

-- A thread pool's job goes as the table {id, fn, args, chunk} through its queue: a value put
-- refuses is named by its place in that table ("value[3][2].x: cannot copy ..."). As the
-- caller's argument instead, as a process pool names it: args[k] is argument #k+1 of apply or
-- submit, a chunk's item k is list[first + k - 1] of map's argument #2; value[2] is the function.
copy_error = function(err, fname, first)
  if type(err) ~= "string" then return err end
  err = err:match("^bad argument #1 to 'put' %((.*)%)$") or err     -- (put's own naming)
  local k, rest = err:match("^value%[3%]%[(%d+)%](.*)$")
  if k and first then
    return ("bad argument #2 to '%s' (value[%d]%s)"):format(fname, first + tonumber(k) - 1, rest)
  elseif k then
    return ("bad argument #%d to '%s' (value%s)"):format(tonumber(k) + 1, fname, rest)
  end
  rest = err:match("^value%[2%](.*)$")
  if rest then return ("bad argument #1 to '%s' (value%s)"):format(fname, rest) end
  return err
end

-- Queue a job: {id, fn, args, chunk?}; job.fut or job.done/fail receive the outcome. A process
-- pool's submit and apply pass the arguments encoded already (argsdata) and no args table.
local function enqueue(self, fname, fn, args, chunk, job, argsdata)
  local lvl = chunk and 5 or 3                 -- (a chunk comes through submit_chunks's pcall)
  if self._closed then error(fname .. ": the pool is closed", lvl) end
  self._next = self._next + 1
  local id = self._next
  job.id = id
  local fid, fdata
  local c = fcache[fn]                     -- function_code's cache, looked at without a call
  if c then fid, fdata = c[1], c[2] else fid, fdata = function_code(fn) end
  if self._kind == "process" then
    if fdata == nil then fdata = core.process._encodeargs(fname, 1, fn) end
    if args then argsdata = core.process._encodeargs(fname, 2, unpack(args, 1, args.n)) end
    if fdata == nil or argsdata == nil then
      if argsdata then release(argsdata) end       -- the other one could not be copied
      if fdata and not fid then release(fdata) end
      error(fdata == nil and OBJMSG:format(1, fname)
            or args and objmsg_of(fname, 2, unpack(args, 1, args.n)) or OBJMSG:format(2, fname), lvl)
    end
    if 25 + #fdata + #argsdata > args_max then
      too_large(fname, fdata, not fid, argsdata, "arguments", lvl)
    end
    job.fid, job.fdata, job.argsdata, job.chunk = fid, fdata, argsdata, chunk or false
    self._jt = self._jt + 1
    self._jobs[self._jt] = job
    if not job.later then dispatch(self) end
  elseif self._dead then                       -- no thread worker left (watch_thread)
    fail_job(job, self._dead)
  else
    self._pending[id] = job
    if job.fut then job.fut._claims, job.fut._id = self._claims, id end   -- (Future:cancel)
    local ok, err = pcall(self._jobq.put, self._jobq, { id, fdata or fn, args, chunk })
    if not ok then self._pending[id] = nil; error(copy_error(err, fname, chunk and job.fut._first), lvl) end
  end
end

local encodeargs = core.process and core.process._encodeargs
local notifier = core.notifier
local running = coroutine.running
local apply_notifiers = setmetatable({}, { __mode = "k" })

-- submit and apply make their future as new_future() does and a plain job's table with room for
-- the fields enqueue and give add, inline (a Lua call costs more than the table).

--- p:submit(fn, ...) -> future
function Pool:submit(fn, ...)
  if getmetatable(self) ~= Pool then check_pool(self, "submit") end  -- calls only to raise
  if self._gen ~= forkgen() then foreign(self, "submit") end
  if type(fn) ~= "function" then check_fn(fn, "submit") end
  local f = setmetatable({ _state = "pending", _r = nil, _waiters = nil, _callbacks = nil }, Future)
  local job = { fut = f, id = nil, fid = nil, fdata = nil, argsdata = nil, chunk = nil, later = nil,
                w = nil }
  if self._kind == "process" and not self._closed then
    local argsdata = encodeargs("submit", 2, ...)
    if argsdata == nil then error(objmsg_of("submit", 2, ...), 2) end
    if not direct(self, fn, job, argsdata) then enqueue(self, "submit", fn, nil, nil, job, argsdata) end
  else
    enqueue(self, "submit", fn, pack(...), nil, job)
  end
  return f
end
Pool.apply_async = Pool.submit

--- p:apply(fn, ...) -> ... (raises the job's error)
function Pool:apply(fn, ...)
  if getmetatable(self) ~= Pool then check_pool(self, "apply") end   -- the checks' calls only
  if self._gen ~= forkgen() then foreign(self, "apply") end
  if type(fn) ~= "function" then check_fn(fn, "apply") end           -- to raise (the hot path)
  local f = setmetatable({ _state = "pending", _r = nil, _waiters = nil, _callbacks = nil }, Future)
  local job = { fut = f, id = nil, fid = nil, fdata = nil, argsdata = nil, chunk = nil, later = nil,
                w = nil }
  if self._kind == "process" and not self._closed then
    local argsdata = encodeargs("apply", 2, ...)
    if argsdata == nil then error(objmsg_of("apply", 2, ...), 2) end
    if not direct(self, fn, job, argsdata) then enqueue(self, "apply", fn, nil, nil, job, argsdata) end
  else
    enqueue(self, "apply", fn, pack(...), nil, job)
  end
  -- f:result() inline: f is nobody else's, so its one joiner's notifier is all it needs; a job
  -- sent to a worker is watched for a moment first (its answer may come before a sleep would)
  local w = job.w
  if w and w.alive and f._r == nil then w.link:spin(2, w.sent) end
  local r = f._r
  if r == nil then
    -- one notifier per calling coroutine, kept: a stale wake-up (an earlier wait cut short)
    -- only makes this loop look once more
    local co = running()
    local n = apply_notifiers[co]
    if n == nil then n = notifier(); apply_notifiers[co] = n end
    repeat
      f._waiters = n
      n:wait()
      r = f._r
    until r ~= nil
  end
  if r[1] then return unpack(r, 2, r.n) end
  error(r[2], 0)
end

local function check_list(list, chunksize, fname)
  if type(list) ~= "table" then
    error(("bad argument #2 to '%s' (table expected, got %s)"):format(fname, type(list)), 3)
  end
  if chunksize ~= nil and (math.type(chunksize) ~= "integer" or chunksize < 1) then
    error(("bad argument #3 to '%s' (chunksize must be an integer >= 1)"):format(fname), 3)
  end
end

-- A map that failed (an item raised, or could not be copied) runs no more of its work, as
-- concurrent.futures' map cancels its futures: its chunks not started yet are cancelled (a process
-- pool's taken out of the queue at once, a thread pool's skipped by the worker that takes them);
-- those running (a process worker's chunks sent ahead to it included) end, their results dropped.
cancel_chunks = function(self, chunks)
  local mine, sent
  for _, f in ipairs(chunks) do
    if f._r == nil and f:cancel() and self._kind == "process" then
      mine = mine or {}
      mine[f] = true
    elseif f._r == nil and self._kind == "process" then   -- sent to a worker: skipped there
      sent = sent or {}                                   -- unless it has started (the slot
      sent[f] = true                                      -- freed with its answer, read_results)
    end
  end
  if sent then
    for _, w in ipairs(self._workers) do
      for i = w.ih, w.it do
        local job = w.inflight[i]
        if job and sent[job.fut] and w.alive and w.link:skip(job.id) then self._skipping[job.id] = w end
      end
    end
  end
  if mine == nil then return end
  local q, keep = self._jobs, self._jh - 1
  for i = self._jh, self._jt do
    local job = q[i]
    q[i] = nil
    if not mine[job.fut] then keep = keep + 1; q[keep] = job else drop_job(job) end
  end
  self._jt = keep
end

-- Chunk futures for list: one future per chunk, each settling with the chunk's results table.
-- into == true (map): the table for the results is made here, once the first chunk of each
-- worker is out, and returned after the chunks: a chunk answered after that is decoded straight
-- into it. (Made first, before any encoding, its allocation -- and the collector's step it
-- brings, 0.8 ms for 20,000 items -- held every worker back.)
local function submit_chunks(self, fname, fn, list, chunksize, into)
  local n = #list
  if chunksize == nil then
    chunksize = n // (self._size * 4)
    if n % (self._size * 4) ~= 0 then chunksize = chunksize + 1 end
    if chunksize < 1 then chunksize = 1 end
  end
  local chunks = {}
  if self._kind == "process" then
    -- the first chunk of each worker goes out at once, so the workers start while the rest is
    -- encoded; the rest is dispatched in batches of DISPATCH_BYTES. An uncopyable item raises
    -- and takes back every chunk of this map not sent yet (those sent finish unread).
    if self._closed then error(fname .. ": the pool is closed", 3) end
    local fid, fdata = function_code(fn)
    local encode_list = core.process._encode_list
    if fdata == nil then fdata = core.process._encodeargs(fname, 1, fn) end
    if fdata == nil then error(OBJMSG:format(1, fname), 3) end
    local fown = fid == nil and { n = 0 } or nil   -- the chunks holding fdata (drop_job)
    local q, early, pending = self._jobs, self._size, 0
    for first = 1, n, chunksize do
      local last = first + chunksize - 1
      if last > n then last = n end
      local count = last - first + 1
      -- {list[first..last], n = count}, unmade
      local okc, argsdata = pcall(encode_list, list, first, last, false, fname, 2)
      if not okc or argsdata == nil then
        cancel_chunks(self, chunks)
        if fown and #chunks == 0 then release(fdata) end   -- no chunk ever held it
        if not okc then error(argsdata, 3) end        -- "bad argument #2 to 'map' (value[k]: ...)"
        error(OBJMSG:format(2, fname), 3)
      end
      if 25 + #fdata + #argsdata > args_max then
        cancel_chunks(self, chunks)
        too_large(fname, fdata, fown and #chunks == 0, argsdata,
          first == last and ("item %d"):format(first) or ("items %d..%d"):format(first, last), 3)
      end
      local id = self._next + 1
      self._next = id
      local f = setmetatable({ _state = "pending", _first = first, _count = count, _id = id }, Future)
      if into and into ~= true then f._into = into end   -- results decoded straight into it
      chunks[#chunks + 1] = f
      self._jt = self._jt + 1
      q[self._jt] = { fut = f, id = id, fid = fid, fdata = fdata, argsdata = argsdata, chunk = true,
                      fown = fown, w = nil }
      if fown then fown.n = fown.n + 1 end
      -- the first chunk of each worker at once, then every DISPATCH_BYTES encoded: the workers
      -- compute while the rest is encoded, and small chunks still go out in batches
      pending = pending + #argsdata
      if #chunks <= early or pending >= DISPATCH_BYTES then
        pending = 0
        dispatch(self)
      end
      if into == true and #chunks == early then
        into = new_table(n)
        for _, c in ipairs(chunks) do c._into = into end
      end
    end
    dispatch(self)
    if into == true then into = new_table(n) end   -- (fewer chunks than workers)
    return chunks, into
  end
  for first = 1, n, chunksize do
    local last = math.min(first + chunksize - 1, n)
    local args = { n = last - first + 1 }
    for i = first, last do args[i - first + 1] = list[i] end
    local f = new_future()
    f._first, f._count = first, args.n
    local ok, err = pcall(enqueue, self, fname, fn, args, true, { fut = f, later = true })
    if not ok then cancel_chunks(self, chunks); error(err, 0) end   -- (named for the caller)
    chunks[#chunks + 1] = f
  end
  dispatch(self)                                 -- once for all the chunks
  if into == true then into = new_table(n) end
  return chunks, into
end

--- p:map(fn, list [, chunksize]) -> results in order (raises the first failure)
function Pool:map(fn, list, chunksize)
  check_pool(self, "map")
  if self._gen ~= forkgen() then foreign(self, "map") end
  check_fn(fn, "map")
  check_list(list, chunksize, "map")
  local chunks, out = submit_chunks(self, "map", fn, list, chunksize, true)
  for _, f in ipairs(chunks) do
    local r = f._r
    if r == nil then f:join(); r = f._r end
    if not r[1] then cancel_chunks(self, chunks); error(r[2], 0) end
    if r ~= PLACED then tmove(r[2], 1, f._count, f._first, out) end
  end
  return out
end

--- for i, v in p:imap(fn, list [, chunksize]) -> results in order (index, value)
function Pool:imap(fn, list, chunksize)
  check_pool(self, "imap")
  if self._gen ~= forkgen() then foreign(self, "imap") end
  check_fn(fn, "imap")
  check_list(list, chunksize or 1, "imap")
  local chunks = submit_chunks(self, "imap", fn, list, chunksize or 1)
  local ci, k, res = 0, 0, nil
  return function()
    while res == nil or k >= chunks[ci]._count do
      ci = ci + 1
      if ci > #chunks then return nil end
      local ok, r = chunks[ci]:join()
      if not ok then cancel_chunks(self, chunks); error(r, 0) end   -- (as map)
      res = r
      k = 0
    end
    k = k + 1
    local f = chunks[ci]
    return f._first + k - 1, res[k]
  end
end

--- for i, v in p:imap_unordered(fn, list [, chunksize]) -> (index, value) as they complete
function Pool:imap_unordered(fn, list, chunksize)
  check_pool(self, "imap_unordered")
  if self._gen ~= forkgen() then foreign(self, "imap_unordered") end
  check_fn(fn, "imap_unordered")
  check_list(list, chunksize or 1, "imap_unordered")
  local chunks = submit_chunks(self, "imap_unordered", fn, list, chunksize or 1)
  local ready, head, tail = {}, 1, 0
  local n = core.notifier()
  for _, f in ipairs(chunks) do
    f:on_done(function(x) tail = tail + 1; ready[tail] = x; n:notify() end)
  end
  local given, cur, k = 0, nil, 0
  return function()
    while cur == nil or k >= cur._count do
      if given == #chunks then return nil end
      while ready[head] == nil do n:wait() end
      cur = ready[head]; ready[head] = nil; head = head + 1
      given = given + 1
      k = 0
      local ok, r = cur:join()
      if not ok then cancel_chunks(self, chunks); error(r, 0) end   -- (as map)
      cur._res = r
    end
    k = k + 1
    return cur._first + k - 1, cur._res[k]
  end
end

--- p:close(): no more submissions; the workers end once the queued jobs are done
function Pool:close()
  check_pool(self, "close")
  if self._gen ~= forkgen() then foreign(self, "close") end
  if self._closed then return end
  self._closed = true
  if self._kind == "thread" then
    for _ = 1, #self._workers do self._jobq:put("stop") end
  end
end

--- p:join(): wait for the workers to end (after close or terminate)
function Pool:join()
  check_pool(self, "join")
  if self._gen ~= forkgen() then foreign(self, "join") end
  if not self._closed then error("join: close or terminate the pool first", 2) end
  if self._joined then return true end
  if self._kind == "thread" then
    for _, t in ipairs(self._workers) do t:join() end
    for _, w in ipairs(self._watchers) do w:join() end
    self._results:close()
    self._reader:join()
    for id, job in pairs(self._pending) do
      self._pending[id] = nil
      fail_job(job, "pool terminated")
    end
  else
    -- wait until every queued job has been sent and answered, then stop the workers
    while true do
      local busy = self._jt >= self._jh
      for _, w in ipairs(self._workers) do if w.it >= w.ih then busy = true end end
      if not busy then break end
      local n = core.notifier()
      local waiting = {}
      for _, w in ipairs(self._workers) do
        for i = w.ih, w.it do waiting[#waiting + 1] = w.inflight[i].fut end
      end
      for i = self._jh, self._jt do waiting[#waiting + 1] = self._jobs[i].fut end
      local f                             -- the last one not settled (a cancelled one is)
      for i = #waiting, 1, -1 do
        if waiting[i]._r == nil then f = waiting[i]; break end
      end
      if f then f:join() else dispatch(self); core.sleep(0.001) end
    end
    for _, w in ipairs(self._workers) do
      if w.alive then w.jsock:send_frame("stop") end
    end
    while #self._workers > 0 do
      local w = self._workers[1]
      w.task:join()
    end
  end
  self._joined = true
  return true
end

--- p:terminate(): stop now; jobs not finished fail with "pool terminated"
function Pool:terminate()
  check_pool(self, "terminate")
  if self._gen ~= forkgen() then foreign(self, "terminate") end
  if self._terminated then return end
  self._closed = true
  self._terminated = true
  if self._kind == "thread" then
    local drained = self._jobq
    while drained:get_nowait() do end
    for _ = 1, #self._workers do drained:put("stop") end
    for id, job in pairs(self._pending) do
      self._pending[id] = nil
      fail_job(job, "pool terminated")
    end
    return self:join()
  end
  local jobs, jh, jt = self._jobs, self._jh, self._jt
  self._jobs, self._jh, self._jt = {}, 1, 0
  for i = jh, jt do fail_job(jobs[i], "pool terminated") end
  for _, w in ipairs(self._workers) do
    w.proc_h:signal(9)
  end
  while #self._workers > 0 do
    self._workers[1].task:join()
  end
  self._joined = true
  return true
end

function Pool:__close()
  if self._terminated or self._joined or self._gen ~= forkgen() then return end
  self:close()
  self:join()
end

Pool.__gc = function(self)
  if not self._joined and self._kind == "process" and self._gen == forkgen() then
    for _, w in ipairs(self._workers) do
      pcall(w.proc_h.signal, w.proc_h, 9)
      for i = w.ih, w.it do if w.inflight[i] then drop_job(w.inflight[i]) end end
    end
    for i = self._jh, self._jt do if self._jobs[i] then drop_job(self._jobs[i]) end end
  end
end

function Pool:pids()
  local out = {}
  if self._kind == "process" then
    for i, w in ipairs(self._workers) do out[i] = w.pid end
  end
  return out
end

-- }==== the pool

return M
