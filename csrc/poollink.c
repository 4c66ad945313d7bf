/* poollink.c — a process pool worker's link words: two counters in a page shared by the parent
 * and the worker (jobs written, results written), watched for a few microseconds before sleeping. */
#include "strand.h"
#include "serial_fast.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Why: on a machine whose CPUs halt when idle (a VM's vCPU above all), waking the peer of a
 * request/reply exchange costs more than the exchange. A side that expects a message soon
 * watches the peer's counter for up to LINK_SPIN_SECONDS first (only with another CPU to run
 * the peer and nothing else ready in its loop), then sleeps in its loop as before: the counters
 * are hints, the sockets stay the channel (a dead peer is seen there, as before). */
#define LINK_META "strand.poollink"
#define LINK_SPIN_SECONDS 30e-6

#define LINK_SKIPS 48                      /* > the jobs one worker has in flight (16 + 2) */
typedef struct link_page {
  _Alignas(64) uint64_t count[2];          /* [0] job frames written, [1] result frames */
  int32_t cpu[2];                          /* the CPU its writer last bumped it from, + 1 */
  uint32_t nskip;                          /* skip[] slots in use (0: the worker looks no further) */
  uint64_t skip[LINK_SKIPS];               /* ids of sent jobs the worker must not run (0: free):
                                            * the chunks of a map that failed (pool.lua) */
} link_page;

typedef struct link_ud { uint64_t magic; link_page *page; } link_ud;

static int usable_cpus;                    /* CPUs this process may run on (0: not known yet) */

/* The CPUs this process may run on (its affinity mask: `taskset -c 0` means one), read once per
 * process tree (a forked worker inherits both the mask and this); 1 when STRAND_POOL_SPIN=0
 * (no watching: instruction counts under callgrind, or a machine where spinning costs). */
static int cpus_allowed(void) {
  int n = __atomic_load_n(&usable_cpus, __ATOMIC_RELAXED);
  if (n > 0) return n;
  const char *env = getenv("STRAND_POOL_SPIN");
  if (env && strcmp(env, "0") == 0) n = 1;
  else {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
    if (n < 1) {
      long c = sysconf(_SC_NPROCESSORS_ONLN);
      n = c > 0 ? (int)c : 1;
    }
  }
  __atomic_store_n(&usable_cpus, n, __ATOMIC_RELAXED);
  return n;
}

/* The link at index 1: told by its size and a magic word (no metatable lookup: these are
 * called once per job on each side); misuse raises naming the function. */
#define LINK_MAGIC 0x6b6e696c6c6f6f70ULL
static link_page *check_link(lua_State *L, const char *fname) {
  link_ud *u = (link_ud *)lua_touserdata(L, 1);
  if (u == NULL || lua_type(L, 1) != LUA_TUSERDATA || lua_rawlen(L, 1) != sizeof *u
      || u->magic != LINK_MAGIC)
    luaL_error(L, "bad argument #1 to '%s' (strand.poollink expected, got %s)", fname,
               luaL_typename(L, 1));
  if (u->page == NULL) luaL_error(L, "%s: the worker link is closed", fname);
  return u->page;
}

/* which counter: 1 = jobs, 2 = results */
static int check_which(lua_State *L, int arg, const char *fname) {
  int isnum;
  lua_Integer w = lua_tointegerx(L, arg, &isnum);
  if (!isnum || (w != 1 && w != 2))
    luaL_error(L, "bad argument #%d to '%s' (1 (jobs) or 2 (results) expected)", arg - 1, fname);
  return (int)w - 1;
}

/* process._link() -> link | nil, message, CODE (a shared page, before the worker's fork) */
static int l_link(lua_State *L) {
  link_ud *u = (link_ud *)lua_newuserdatauv(L, sizeof *u, 0);
  u->magic = LINK_MAGIC;
  u->page = NULL;
  luaL_setmetatable(L, LINK_META);
  void *p = mmap(NULL, sizeof(link_page), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return strand_fail(L, errno);
  u->page = (link_page *)p;
  return 1;
}

/* link:bump(which, n) (which: 1 jobs, 2 results) -> the counter after adding n frames (written before: a release) */
static int l_bump(lua_State *L) {
  link_page *pg = check_link(L, "bump");
  int w = check_which(L, 2, "bump");
  lua_Integer n = luaL_checkinteger(L, 3);
  luaL_argcheck(L, n >= 0, 3, "count must be >= 0");
  int cpu = sched_getcpu();
  __atomic_store_n(&pg->cpu[w], cpu >= 0 ? cpu + 1 : 0, __ATOMIC_RELAXED);
  uint64_t v = __atomic_add_fetch(&pg->count[w], (uint64_t)n, __ATOMIC_RELEASE);
  lua_pushinteger(L, (lua_Integer)v);
  return 1;
}

/* link:count(which) -> the counter now */
static int l_count(lua_State *L) {
  link_page *pg = check_link(L, "count");
  int w = check_which(L, 2, "count");
  lua_pushinteger(L, (lua_Integer)__atomic_load_n(&pg->count[w], __ATOMIC_ACQUIRE));
  return 1;
}

/* link:spin(which, target) -> true when counter >= target (at once or after watching), false
 * when it did not get there (watched LINK_SPIN_SECONDS, or did not watch: one CPU allowed, the
 * peer last ran on this CPU -- it needs this one to answer: the scheduler keeps a request/reply
 * pair together on a busy machine --, or other tasks of this loop are ready). Never sleeps;
 * bounded. */
static int l_spin(lua_State *L) {
  link_page *pg = check_link(L, "spin");
  int w = check_which(L, 2, "spin");
  uint64_t target = (uint64_t)luaL_checkinteger(L, 3);
  uint64_t *c = &pg->count[w];
  if (__atomic_load_n(c, __ATOMIC_ACQUIRE) >= target) { lua_pushboolean(L, 1); return 1; }
  if (cpus_allowed() < 2 || strand_loop_get(L)->nready > 0) { lua_pushboolean(L, 0); return 1; }
  int peer = __atomic_load_n(&pg->cpu[w], __ATOMIC_RELAXED), me = sched_getcpu();
  if (peer == 0 || me < 0 || peer == me + 1) { lua_pushboolean(L, 0); return 1; }
  double until = strand_now() + LINK_SPIN_SECONDS;
  for (;;) {
    for (int i = 0; i < 64; i++) {
      if (__atomic_load_n(c, __ATOMIC_ACQUIRE) >= target) { lua_pushboolean(L, 1); return 1; }
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#elif defined(__aarch64__)
      __asm__ __volatile__("yield");
#endif
    }
    if (strand_now() >= until) break;
  }
  lua_pushboolean(L, 0);
  return 1;
}

/* link:skip(id [, off]) (the parent): the worker answers job id "cancelled" instead of running it
 * (off: forget it again, once answered) -> whether it was noted (false: no free slot, it runs).
 * A hint like the counters: a worker that already took the job runs it. */
static int l_skip(lua_State *L) {
  link_page *pg = check_link(L, "skip");
  uint64_t id = (uint64_t)luaL_checkinteger(L, 2);
  int off = lua_toboolean(L, 3);
  for (int i = 0; i < LINK_SKIPS; i++) {
    uint64_t v = __atomic_load_n(&pg->skip[i], __ATOMIC_RELAXED);
    if (off ? v == id : v == 0) {
      __atomic_store_n(&pg->skip[i], off ? 0 : id, __ATOMIC_RELEASE);
      __atomic_add_fetch(&pg->nskip, off ? (uint32_t)-1 : 1u, __ATOMIC_RELEASE);
      lua_pushboolean(L, 1);
      return 1;
    }
  }
  lua_pushboolean(L, 0);
  return 1;
}

/* link:skipped(id) (the worker, before a chunk) -> whether the parent noted it (link:skip) */
static int l_skipped(lua_State *L) {
  link_page *pg = check_link(L, "skipped");
  uint64_t id = (uint64_t)luaL_checkinteger(L, 2);
  int found = 0;
  if (__atomic_load_n(&pg->nskip, __ATOMIC_ACQUIRE) != 0)
    for (int i = 0; i < LINK_SKIPS && !found; i++)
      found = __atomic_load_n(&pg->skip[i], __ATOMIC_ACQUIRE) == id;
  lua_pushboolean(L, found);
  return 1;
}

static int l_gc(lua_State *L) {
  link_ud *u = (link_ud *)luaL_checkudata(L, 1, LINK_META);
  if (u->page) {
    munmap(u->page, sizeof(link_page));
    u->page = NULL;
  }
  return 0;
}

/* {==== a worker's plain job: process._run_job(data, pos, fn, msgh, id) -> frame
 * The arguments are decoded from data's byte pos to its end (without adopting their object
 * references: the parent keeps them while it may send the job again), fn(args) is called under
 * msgh (the job's traceback) and may yield (a job that sleeps), and its outcome -- true, results
 * | false, error -- comes back as the result frame the parent reads: length (4 bytes, big
 * endian), id (8), the encoded values. An outcome that cannot be copied becomes false, "the
 * job's results cannot be copied..." (the job's failure, not the worker's); arguments that
 * cannot be decoded, false, "strand.pool: malformed job arguments: ...". */

/* lua_pcall'ed with the outcome's values: their encoding, or nil (a process-local object) */
static int encode_outcome(lua_State *L) {
  strand_serial_encode(L, 1, lua_gettop(L), STRAND_SERIAL_FUNCTIONS);
  return strand_serial_family_or_nil(L);
}

static void put_be(char *o, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; i--) { o[i] = (char)(v & 0xff); v >>= 8; }
}

#define JOB_BASE 5                      /* data, pos, fn, msgh, id: the outcome above them */

/* st: how the encoding at the top came (LUA_OK: a string, or nil for a process-local object;
 * else the error message): the encoded outcome, or in its place "false, the job's results cannot
 * be copied..." */
static void copy_failure(lua_State *L, int st) {
  if (st == LUA_OK && !lua_isnil(L, -1)) return;
  if (st == LUA_ERRMEM) lua_error(L);
  lua_pushboolean(L, 0);
  if (st != LUA_OK)
    lua_pushfstring(L, "the job's results cannot be copied: %s",
                    lua_isstring(L, -2) ? lua_tostring(L, -2) : "?");
  else lua_pushliteral(L, "the job's results cannot be copied (a strand object)");
  strand_serial_encode(L, -2, 2, STRAND_SERIAL_FUNCTIONS);   /* a boolean and a string */
}

/* The most a result frame's encoded outcome may take: what its 4-byte length can say after the
 * id. Process-wide and read-only but for the test hook process._result_max(n), which lowers it
 * (set before the pool's workers are forked, which inherit it) so that the path below runs for
 * real without encoding 4 GiB. */
static size_t result_max = UINT32_MAX - 8;

/* An encoded outcome of len bytes is too large for a frame: in its place (popped) "false,
 * message" encoded, the job's failure instead of the worker's. */
static void too_large(lua_State *L, size_t len) {
  size_t l;
  const char *p = lua_tolstring(L, -1, &l);
  if (p != NULL) strand_serial_release(p, l);      /* the references it held */
  lua_pop(L, 1);
  lua_pushboolean(L, 0);
  lua_pushfstring(L, "strand.pool: result too large: %I bytes encoded (a frame holds at most %I)",
                  (lua_Integer)len, (lua_Integer)result_max);
  strand_serial_encode(L, -2, 2, STRAND_SERIAL_FUNCTIONS);   /* a boolean and a string */
  lua_replace(L, -3);
  lua_pop(L, 1);
}

/* process._result_max([n]) -> the limit (n, a test hook: lowers it for this process and the
 * workers it forks next) */
static int l_result_max(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 64 && (uint64_t)n <= UINT32_MAX - 8, 1, "out of range");
    result_max = (size_t)n;
  }
  lua_pushinteger(L, (lua_Integer)result_max);
  return 1;
}

/* the encoded outcome at the top framed for job id: length, id, the bytes (pushed) */
static void push_frame(lua_State *L, lua_Integer id) {
  size_t len;
  const char *enc = lua_tolstring(L, -1, &len);
  if (len > result_max) {
    too_large(L, len);
    enc = lua_tolstring(L, -1, &len);
  }
  luaL_Buffer b;
  char *o = luaL_buffinitsize(L, &b, 12 + len);
  put_be(o, 8 + len, 4);
  put_be(o + 4, (uint64_t)id, 8);
  memcpy(o + 12, enc, len);
  luaL_pushresultsize(&b, 12 + len);
}

/* The outcome above base (the job's id at base): the results of a call that ended with status,
 * or its error object on top. Pushes the result frame. */
static int outcome_frame(lua_State *L, int status, int base) {
  if (status == LUA_OK || status == LUA_YIELD) {
    lua_pushboolean(L, 1);
    lua_insert(L, base + 1);
  } else {                              /* the error object (the traceback) on top */
    lua_pushboolean(L, 0);
    lua_insert(L, -2);                  /* false, error: moved down to base + 1, + 2 */
    int top = lua_gettop(L);
    lua_copy(L, top - 1, base + 1);
    lua_copy(L, top, base + 2);
    lua_settop(L, base + 2);
  }
  int n = lua_gettop(L) - base;
  int plain = 1;                        /* nil, booleans, numbers, strings: their encoding
                                         * cannot fail but for memory (raised as it is) */
  for (int i = base + 1; i <= base + n && plain; i++)
    plain = lua_type(L, i) <= LUA_TSTRING && lua_type(L, i) != LUA_TLIGHTUSERDATA;
  int st = LUA_OK;
  if (plain) {
    strand_serial_encode(L, base + 1, n, STRAND_SERIAL_FUNCTIONS);
  } else {
    lua_pushcfunction(L, encode_outcome);
    lua_insert(L, base + 1);
    st = lua_pcall(L, n, 1, 0);
  }
  copy_failure(L, st);
  push_frame(L, lua_tointeger(L, base));
  return 1;
}

static int job_done(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  return outcome_frame(L, status, JOB_BASE);
}

static int l_run_job(lua_State *L) {
  size_t len;
  const char *p = luaL_checklstring(L, 1, &len);
  lua_Integer pos = luaL_checkinteger(L, 2);
  luaL_argcheck(L, pos >= 1 && (size_t)pos <= len + 1, 2, "out of range");
  luaL_checktype(L, 3, LUA_TFUNCTION);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  luaL_checkinteger(L, 5);
  lua_settop(L, JOB_BASE);
  lua_pushvalue(L, 3);
  int n = strand_serial_decode(L, p + pos - 1, len - (size_t)(pos - 1),
                               STRAND_SERIAL_FUNCTIONS | STRAND_SERIAL_NOADOPT);
  if (n < 0) {                          /* the message on top */
    lua_pushfstring(L, "strand.pool: malformed job arguments: %s", lua_tostring(L, -1));
    return job_done(L, LUA_ERRRUN, 0);
  }
  return job_done(L, lua_pcallk(L, n, LUA_MULTRET, 4, 0, job_done), 0);
}

/* {==== a worker's map chunk: link:run_chunk(data, pos, fn, msgh, id) -> frame | nil
 * The chunk's items (data from byte pos on, the list strand_serial_encode_list wrote) are read
 * one at a time, fn(item) is called for each (its first result kept) and the results are
 * written straight into the result frame -- "true, list", the bytes encode_list would give --
 * while they are plain values (nil, booleans, numbers, strings). The first other result moves
 * them into a table (from the frame written so far) and the list is encoded from it at the end
 * (tables, functions, strand objects, or a copy error as the job's failure). The loop runs under
 * msgh (the job's traceback) and fn may yield (a job that sleeps). An error fails the chunk:
 * "false, traceback". nil: data is not such a list (back-references): the caller decodes it. */

#define CHUNK_FLAGS (STRAND_SERIAL_FUNCTIONS | STRAND_SERIAL_NOADOPT)

typedef struct chunk_run {
  strand_serial_list in;                /* the items not read yet (data stays on run_chunk's stack) */
  uint32_t count, k;                    /* items; results stored so far */
  char *b;                              /* the frame: its length, id, list head, plain results */
  size_t n, cap;
  int table;                            /* the results go to the table at slot RUN_OUT */
} chunk_run;

/* chunk_loop's stack: the state, fn, the frame's buffer (userdata), the results' table (nil
 * until needed), a nil (the decoder's) */
enum { RUN_STATE = 1, RUN_FN, RUN_BUF, RUN_OUT, RUN_NIL };
#define RUN_FRAME (12 + STRAND_SERIAL_LIST_HEAD)   /* where the results start in the buffer */

static void run_room(lua_State *L, chunk_run *s, size_t need) {
  size_t cap = s->cap;
  while (cap - s->n < need) {
    if (cap > ((size_t)-1) / 4) luaL_error(L, "strand.pool: a chunk's results are too large");
    cap *= 2;
  }
  char *nb = (char *)lua_newuserdatauv(L, cap, 0);
  memcpy(nb, s->b, s->n);
  lua_replace(L, RUN_BUF);
  s->b = nb; s->cap = cap;
}

/* The result on top stored and popped: written to the frame, or (once one was not plain, from
 * then on) set in the table -- the plain ones written before moved there first. */
static void run_store(lua_State *L, chunk_run *s, int idx) {
  s->k++;
  if (!s->table && lua_isinteger(L, idx)) {      /* (inline; the tail's room kept after it) */
    if (s->cap - s->n < 11 + STRAND_SERIAL_LIST_TAIL) run_room(L, s, 11 + STRAND_SERIAL_LIST_TAIL);
    s->n += serf_put_int((unsigned char *)s->b + s->n, lua_tointeger(L, idx));
    return;
  }
  if (!s->table) {
    /* (the tail always fits after the last result: room kept for it) */
    size_t room = s->cap - s->n - STRAND_SERIAL_LIST_TAIL;
    size_t w = strand_serial_put_plain(L, idx, s->b + s->n, room);
    if (w > room) {
      run_room(L, s, w + STRAND_SERIAL_LIST_TAIL);
      w = strand_serial_put_plain(L, idx, s->b + s->n, s->cap - s->n - STRAND_SERIAL_LIST_TAIL);
    }
    if (w) { s->n += w; return; }
    lua_createtable(L, (int)s->count, 0);
    lua_replace(L, RUN_OUT);
    strand_serial_list back = { s->b + RUN_FRAME, s->b + s->n, s->k - 1, 0 };
    for (uint32_t i = 1; i < s->k; i++) {
      strand_serial_list_next(L, &back, CHUNK_FLAGS, RUN_NIL);
      lua_rawseti(L, RUN_OUT, (lua_Integer)i);
    }
    s->n = RUN_FRAME;
    s->table = 1;
  }
  lua_pushvalue(L, idx);
  lua_rawseti(L, RUN_OUT, (lua_Integer)s->k);
}

/* the results above RUN_NIL stored, in order, and popped */
static void run_store_all(lua_State *L, chunk_run *s) {
  int top = lua_gettop(L);
  for (int i = RUN_NIL + 1; i <= top; i++) {
    if (!s->table && lua_isinteger(L, i)) {      /* (run_store's first case, inline) */
      s->k++;
      if (s->cap - s->n < 11 + STRAND_SERIAL_LIST_TAIL) run_room(L, s, 11 + STRAND_SERIAL_LIST_TAIL);
      s->n += serf_put_int((unsigned char *)s->b + s->n, lua_tointeger(L, i));
    } else run_store(L, s, i);
  }
  lua_settop(L, RUN_NIL);
}

#define RUN_BATCH 32                    /* results kept on the stack, then stored at once */

static int chunk_k(lua_State *L, int status, lua_KContext ctx);

/* (a result stays on the stack above RUN_NIL until RUN_BATCH of them are stored together;
 * the ones of a call that yielded are there still when chunk_k goes on) */
static int chunk_loop(lua_State *L) {
  chunk_run *s = (chunk_run *)lua_touserdata(L, RUN_STATE);
  luaL_checkstack(L, RUN_BATCH + 8, "strand.pool: a chunk");
  int held = lua_gettop(L) - RUN_NIL;   /* (counted from here on: a call leaves one result) */
  for (;; held++) {
    if (s->k + (uint32_t)held >= s->count) break;
    if (held == RUN_BATCH) { run_store_all(L, s); held = 0; }
    lua_pushvalue(L, RUN_FN);
    const unsigned char *p = (const unsigned char *)s->in.p;
    lua_Integer v;
    if (p < (const unsigned char *)s->in.end && serf_get_int(&p, (const unsigned char *)s->in.end, &v)) {
      lua_pushinteger(L, v);
      s->in.p = (const char *)p;
    } else strand_serial_list_next(L, &s->in, CHUNK_FLAGS, RUN_NIL);
    lua_callk(L, 1, 1, 0, chunk_k);
  }
  run_store_all(L, s);
  strand_serial_list_end(L, &s->in, CHUNK_FLAGS, RUN_NIL);
  lua_settop(L, RUN_OUT);
  return 2;                             /* the buffer, the table (or nil) */
}

static int chunk_k(lua_State *L, int status, lua_KContext ctx) {   /* fn yielded, returned */
  (void)status; (void)ctx;
  return chunk_loop(L);
}

/* lua_pcall'ed: (table, count) -> "true, list" encoded, or nil (a process-local object) */
static int encode_results(lua_State *L) {
  strand_serial_encode_list(L, 1, 1, lua_tointeger(L, 2), 1, STRAND_SERIAL_FUNCTIONS);
  return strand_serial_family_or_nil(L);
}

/* run_chunk's stack: link, data, pos, fn, msgh, id, the state; then the loop's two results */
#define CHUNK_BASE 7

static int chunk_done(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  chunk_run *s = (chunk_run *)lua_touserdata(L, CHUNK_BASE);
  if (status != LUA_OK && status != LUA_YIELD) {
    lua_remove(L, CHUNK_BASE);          /* id, error */
    return outcome_frame(L, status, CHUNK_BASE - 1);
  }
  lua_Integer id = lua_tointeger(L, CHUNK_BASE - 1);
  if (!s->table) {                      /* the frame is all there but its tail and length */
    s->n += strand_serial_list_tail(s->b + s->n, s->count);
    if (s->n - 12 > result_max) {       /* the job fails, not the worker (push_frame) */
      lua_pushnil(L);
      too_large(L, s->n - 12);
      push_frame(L, id);
      return 1;
    }
    put_be(s->b, s->n - 4, 4);
    lua_pushlstring(L, s->b, s->n);
    return 1;
  }
  lua_pushcfunction(L, encode_results);
  lua_pushvalue(L, CHUNK_BASE + 2);
  lua_pushinteger(L, (lua_Integer)s->count);
  int st = lua_pcall(L, 2, 1, 0);
  copy_failure(L, st);
  push_frame(L, id);
  return 1;
}

static int l_run_chunk(lua_State *L) {
  check_link(L, "run_chunk");
  size_t len;
  const char *p = luaL_checklstring(L, 2, &len);
  lua_Integer pos = luaL_checkinteger(L, 3);
  luaL_argcheck(L, pos >= 1 && (size_t)pos <= len + 1, 3, "out of range");
  luaL_checktype(L, 4, LUA_TFUNCTION);
  luaL_checktype(L, 5, LUA_TFUNCTION);
  lua_Integer id = luaL_checkinteger(L, 6);
  lua_settop(L, CHUNK_BASE - 1);
  strand_serial_list in;
  if (!strand_serial_list_open(p + pos - 1, len - (size_t)(pos - 1), &in)) {
    lua_pushnil(L);
    return 1;
  }
  chunk_run *s = (chunk_run *)lua_newuserdatauv(L, sizeof *s, 0);   /* CHUNK_BASE */
  s->in = in; s->count = in.count; s->k = 0; s->table = 0;
  size_t items = (size_t)(in.end - in.p);
  s->cap = RUN_FRAME + items + items / 4 + STRAND_SERIAL_LIST_TAIL + 16;
  lua_pushcfunction(L, chunk_loop);
  lua_pushvalue(L, CHUNK_BASE);
  lua_pushvalue(L, 4);
  s->b = (char *)lua_newuserdatauv(L, s->cap, 0);
  lua_pushnil(L);
  lua_pushnil(L);
  put_be(s->b + 4, (uint64_t)id, 8);
  s->n = 12 + strand_serial_list_head(s->b + 12, s->count);
  return chunk_done(L, lua_pcallk(L, 5, 2, 5, 0, chunk_done), 0);
}

/* }==== */

/* process._result(data [, argsdata]) -> id, r: a result frame's body (its id, 8 bytes big
 * endian, then the encoded outcome) as the job's id and r = {ok, values..., n = count}; the
 * references argsdata (the job's arguments, which will not be sent again) held are dropped.
 * Malformed data: r = {false, "strand.pool: malformed result: ...", n = 2} (id 0 if too short). */
static int l_result(lua_State *L) {
  size_t len;
  const char *p = luaL_checklstring(L, 1, &len);
  if (!lua_isnoneornil(L, 2)) {
    size_t alen;
    const char *a = luaL_checklstring(L, 2, &alen);
    strand_serial_release(a, alen);
  }
  lua_settop(L, 1);
  uint64_t id = 0;
  if (len >= 8) for (int i = 0; i < 8; i++) id = id << 8 | (unsigned char)p[i];
  lua_pushinteger(L, (lua_Integer)id);
  int n = len >= 8 ? strand_serial_decode(L, p + 8, len - 8, STRAND_SERIAL_FUNCTIONS) : -1;
  if (n < 0) {                          /* nothing decoded: its references go with it */
    if (len >= 8) strand_serial_release_shared(p + 8, len - 8);
    else lua_pushliteral(L, "truncated");
    lua_pushfstring(L, "strand.pool: malformed result: %s", lua_tostring(L, -1));
    lua_replace(L, -2);
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    n = 2;
  }
  lua_createtable(L, n, 1);
  lua_insert(L, 3);                     /* data, id, r, values... */
  for (int i = n; i >= 1; i--) lua_rawseti(L, 3, i);
  lua_pushinteger(L, n);
  lua_setfield(L, 3, "n");
  return 2;
}

/* }==== */

STRAND_API int strand_pool_result(lua_State *L);
int strand_pool_result(lua_State *L) { return l_result(L); }

STRAND_API int strand_pool_run_job(lua_State *L);
int strand_pool_run_job(lua_State *L) { return l_run_job(L); }

STRAND_API int strand_pool_result_max(lua_State *L);
int strand_pool_result_max(lua_State *L) { return l_result_max(L); }

STRAND_API int strand_pool_link(lua_State *L);
int strand_pool_link(lua_State *L) {
  if (luaL_newmetatable(L, LINK_META)) {
    static const luaL_Reg methods[] = {
      {"bump", l_bump}, {"count", l_count}, {"spin", l_spin}, {"close", l_gc},
      {"run_chunk", l_run_chunk}, {"skip", l_skip}, {"skipped", l_skipped}, {NULL, NULL}
    };
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  return l_link(L);
}
