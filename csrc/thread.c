/* thread.c — OS threads, each running its own Lua state and loop: start (on a waiting OS thread
 * if one is idle), join/result (on an eventfd), daemon semantics, ids, names, active_count. */
#include "strand.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#endif
#endif
#ifndef VALGRIND_DISABLE_ERROR_REPORTING
#define VALGRIND_DISABLE_ERROR_REPORTING ((void)0)
#define VALGRIND_ENABLE_ERROR_REPORTING ((void)0)
#define VALGRIND_MAKE_MEM_DEFINED(p, n) ((void)0)
#endif

#define THREAD_META "strand.thread"
#define WAITER_META "strand.thread.waiter"
#define GUARD_META  "strand.thread.guard"
static const char SELF_KEY = 'S';     /* registry[&SELF_KEY] = its thr_ctl (light userdata) in
                                         thread states: the control block outlives the state */
static const char GUARD_KEY = 'G';    /* registry[&GUARD_KEY] = guard (non-daemon children) */

/* Process-wide, shared by every thread by nature: ids and the live count. */
static atomic_long next_id = 2;       /* the main thread is 1 */
static atomic_int active = 0;         /* strand threads running now (the main one not counted) */
static unsigned thr_gen;              /* forks that made this process, counted by the fork hook
                                         (a child's is one more than its parent's at the fork) */
#define ctl_inherited(c) ((c)->gen != thr_gen)

enum { TS_NEW, TS_RUNNING, TS_DONE, TS_FAILED };

/* The control block, shared by the handle (creator's state) and the running thread. */
typedef struct thr_ctl {
  atomic_int refs;
  atomic_int state;             /* TS_*: DONE/FAILED are published after result is written */
  int daemon;
  lua_Integer id;
  char name[64];
  char *payload; size_t plen;   /* encoded fn + args; the thread frees it after decoding */
  char *path, *cpath;           /* the creator's package.path / cpath */
  char *result; size_t rlen;    /* encoded results (DONE) or error (FAILED) */
  int efd;                      /* eventfd, readable once the thread has finished */
  int efd_waited;               /* a joiner's waiter has efd itself (creator's state only) */
  int mask_set;                 /* mask holds the creator's signal mask (a parked OS thread) */
  sigset_t mask;
  struct stk *stack;            /* the stack strand made for a new OS thread (or NULL: glibc's) */
  unsigned gen;                 /* thr_gen when started: another value means a forked child's
                                   copy, whose OS thread is its parent's (never joinable here) */
} thr_ctl;

typedef struct thr_handle {
  thr_ctl *c;
  int started;
} thr_handle;

/* {==== spare eventfds: a start takes a kept one, reset by one read when its thread's control
 * block went (1-3 us), instead of an eventfd and a close (7-10 us). Only this process's own
 * (a forked child closes its copies: idle_fork_child); spec/support/helper.lua does not count
 * them as leaked (thread._spare_fds). */
#define EFD_SPARES 4
static int efd_spare[EFD_SPARES];
static int efd_nspare;
static pthread_mutex_t efd_mu = PTHREAD_MUTEX_INITIALIZER;   /* a leaf lock: nothing taken under it */

static int efd_take(void) {
  pthread_mutex_lock(&efd_mu);
  int fd = efd_nspare > 0 ? efd_spare[--efd_nspare] : -1;
  pthread_mutex_unlock(&efd_mu);
  if (fd < 0) fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  return fd;
}

/* fd reads 0 and no poller has it (a waiter unregisters before it drops its reference) */
static void efd_keep(int fd) {
  pthread_mutex_lock(&efd_mu);
  if (efd_nspare < EFD_SPARES) { efd_spare[efd_nspare++] = fd; fd = -1; }
  pthread_mutex_unlock(&efd_mu);
  if (fd >= 0) close(fd);
}

static void efd_give(int fd) {
  uint64_t v;
  while (read(fd, &v, sizeof v) < 0 && errno == EINTR) {}   /* to 0 (EAGAIN: it was 0) */
  efd_keep(fd);
}

/* thread._spare_fds() -> { [fd] = true } */
static int l_spare_fds(lua_State *L) {
  int v[EFD_SPARES], n;
  pthread_mutex_lock(&efd_mu);
  n = efd_nspare;
  memcpy(v, efd_spare, sizeof v);
  pthread_mutex_unlock(&efd_mu);
  lua_createtable(L, 0, n);
  for (int i = 0; i < n; i++) { lua_pushboolean(L, 1); lua_rawseti(L, -2, v[i]); }
  return 1;
}

/* }==== */

static void ctl_release(thr_ctl *c) {
  if (atomic_fetch_sub(&c->refs, 1) != 1) return;
  if (c->result && atomic_load(&c->state) == TS_DONE) strand_serial_release(c->result, c->rlen);
  free(c->result);
  free(c->payload);
  free(c->path);
  free(c->cpath);
  if (c->efd >= 0) {
    if (ctl_inherited(c)) close(c->efd);       /* a forked child's copy: the file is shared */
    else efd_give(c->efd);
  }
  free(c);
}

static char *dupbytes(const char *s, size_t n) {
  char *p = (char *)malloc(n + 1);
  if (p) { memcpy(p, s, n); p[n] = 0; }
  return p;
}

/* {==== the thread's side */

/* A thread's state takes its first BOOT_ARENA bytes (the new state, strand.core, the decoded
 * function, its task; a short thread's whole life) from one block carved linearly: one block
 * spares a malloc and a free per object. Once the block is used up, allocations go to malloc
 * as in any state; a block from the carved one that is freed or resized is simply left there
 * until the state closes (so the waste is bounded by the block). */
#define BOOT_ARENA (40 * 1024)           /* a bare start takes 12 KiB (the new state 5 of it), a
                                            start over require "strand" 33 KiB (Lua 5.4.4, x86-64) */
/* After the boot block, blocks of up to SMALL_MAX bytes come from per-state free lists, one per
 * 16-byte class (a block is allocated with its class's whole size, so any block of the class
 * fits any size of it): a freed one is kept (up to SMALL_KEEP bytes in all: one sweep of a
 * consumer's strings frees ~1,000 blocks of one class, which a cap of 32 KiB a class sent back
 * to malloc by the hundreds) and the next allocation of its class takes it back. The collector
 * frees what the state allocates at about the rate it allocates (a consumer's strings: one per
 * get), and glibc's malloc and free cost ~300 instructions per such 125-byte block (its
 * unsorted bins; its per-thread cache holds 7), the free lists ~15. Only for a state made with
 * thr_alloc from its first block (small != 0): a block from another allocator may be shorter
 * than its class. Not under ASan or memcheck (checked_malloc). */
#define SMALL_MAX 256
#define SMALL_NCLS (SMALL_MAX / 16)
#define SMALL_KEEP (256 * 1024)
typedef struct boot_arena {
  char *base; size_t used;
  int small;                                    /* the free lists below are in use */
  void *free_[SMALL_NCLS];                      /* per class: a list linked through each block */
  size_t kept;                                  /* bytes in those lists */
} boot_arena;

static inline void *small_alloc(boot_arena *a, size_t n) {
  size_t c = (n - 1) >> 4;
  void *p = a->free_[c];
  if (p != NULL) {
    a->free_[c] = *(void **)p;
    a->kept -= (c + 1) << 4;
    return p;
  }
  return malloc((c + 1) << 4);
}

static inline void small_free(boot_arena *a, void *p, size_t n) {
  size_t c = (n - 1) >> 4;
  if (a->kept < SMALL_KEEP) {
    *(void **)p = a->free_[c];
    a->free_[c] = p;
    a->kept += (c + 1) << 4;
    return;
  }
  free(p);
}

/* Give the kept blocks back (the state is closed). */
static void small_drain(boot_arena *a) {
  for (int c = 0; c < SMALL_NCLS; c++) {
    while (a->free_[c] != NULL) {
      void *p = a->free_[c];
      a->free_[c] = *(void **)p;
      free(p);
    }
  }
  a->kept = 0;
}

/* A block of the heap (not carved) from osize to nsize (0: freed). */
static inline void *heap_alloc(boot_arena *a, void *ptr, size_t osize, size_t nsize) {
  if (nsize == 0) {
    if (ptr != NULL && a->small && osize <= SMALL_MAX) small_free(a, ptr, osize);
    else free(ptr);
    return NULL;
  }
  if (!a->small || (nsize > SMALL_MAX && (ptr == NULL || osize > SMALL_MAX)))
    return realloc(ptr, nsize);
  if (ptr == NULL) return nsize <= SMALL_MAX ? small_alloc(a, nsize) : malloc(nsize);
  if (osize <= SMALL_MAX && nsize <= SMALL_MAX && ((osize - 1) >> 4) == ((nsize - 1) >> 4))
    return ptr;                                 /* the same class: it fits */
  void *p = nsize <= SMALL_MAX ? small_alloc(a, nsize) : malloc(nsize);
  if (p == NULL) return NULL;
  memcpy(p, ptr, osize < nsize ? osize : nsize);
  if (osize <= SMALL_MAX) small_free(a, ptr, osize); else free(ptr);
  return p;
}

/* Under ASan or valgrind's memcheck every block goes back to malloc, which finds a use after
 * free that a block reused from a free list would hide. (Not under callgrind, whose instruction
 * counts are how this allocator is measured: memcheck alone preloads its own library.) */
#if defined(__SANITIZE_ADDRESS__)
#define THR_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)          /* (clang defines no __SANITIZE_ADDRESS__) */
#define THR_ASAN 1
#endif
#endif
static int checked_malloc(void) {
#ifdef THR_ASAN
  return 1;
#else
  const char *pre = getenv("LD_PRELOAD");
  return pre != NULL && strstr(pre, "vgpreload_memcheck") != NULL;
#endif
}

static __attribute__((noinline)) void *thr_alloc_any(boot_arena *a, void *ptr, size_t osize,
                                                      size_t nsize);

static void *thr_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  boot_arena *a = (boot_arena *)ud;
  if (a->small) {            /* the hot cases first: a small block from or back to its list */
    if (ptr == NULL) {
      if (nsize - 1 < SMALL_MAX && a->free_[(nsize - 1) >> 4] != NULL) return small_alloc(a, nsize);
    } else if (nsize == 0 && osize - 1 < SMALL_MAX &&
               (uintptr_t)ptr - (uintptr_t)a->base >= BOOT_ARENA) {   /* (not carved) */
      small_free(a, ptr, osize);
      return NULL;
    }
  }
  return thr_alloc_any(a, ptr, osize, nsize);
}

static void *thr_alloc_any(boot_arena *a, void *ptr, size_t osize, size_t nsize) {
  uintptr_t at = (uintptr_t)ptr, base = (uintptr_t)a->base;
  int carved = ptr != NULL && a->base != NULL && at >= base && at - base < BOOT_ARENA;
  if (nsize == 0) {
    if (!carved) heap_alloc(a, ptr, osize, 0);
    return NULL;
  }
  if (carved && nsize <= osize) return ptr;              /* shrinking in place never fails */
  if (a->base != NULL) {
    size_t n = (nsize + 15) & ~(size_t)15;
    if (n <= BOOT_ARENA - a->used) {
      void *p = a->base + a->used;
      a->used += n;
      if (ptr != NULL) {
        memcpy(p, ptr, osize < nsize ? osize : nsize);
        if (!carved) heap_alloc(a, ptr, osize, 0);
      }
      return p;
    }
  }
  if (carved) {                                           /* grows out of the carved block */
    void *p = heap_alloc(a, NULL, 0, nsize);
    if (p != NULL) memcpy(p, ptr, osize);
    return p;
  }
  return heap_alloc(a, ptr, osize, nsize);
}

int luaopen_strand_core(lua_State *L);                /* module.c */

/* {==== a state as luaL_newstate makes it, carved from the boot block from its first byte */

/* lauxlib's panic function, taken once from a state luaL_newstate made (start_thread) */
static lua_CFunction aux_panic;

/* Warnings as lauxlib's (lua.c's states and luaL_newstate's have them): off until "@on", then
 * "Lua warning: " and the pieces on stderr; "@off" and "@on" are control messages. */
static void warn_off(void *ud, const char *msg, int tocont);
static void warn_on(void *ud, const char *msg, int tocont);

static int warn_control(lua_State *L, const char *msg, int tocont) {
  if (tocont || msg[0] != '@') return 0;
  if (strcmp(msg + 1, "off") == 0) lua_setwarnf(L, warn_off, L);
  else if (strcmp(msg + 1, "on") == 0) lua_setwarnf(L, warn_on, L);
  return 1;
}

static void warn_off(void *ud, const char *msg, int tocont) {
  warn_control((lua_State *)ud, msg, tocont);
}

static void warn_cont(void *ud, const char *msg, int tocont) {
  lua_State *L = (lua_State *)ud;
  fprintf(stderr, "%s", msg);
  fflush(stderr);
  if (tocont) {
    lua_setwarnf(L, warn_cont, L);
  } else {
    fprintf(stderr, "\n");
    fflush(stderr);
    lua_setwarnf(L, warn_on, L);
  }
}

static void warn_on(void *ud, const char *msg, int tocont) {
  if (warn_control((lua_State *)ud, msg, tocont)) return;
  fprintf(stderr, "Lua warning: ");
  fflush(stderr);
  warn_cont(ud, msg, tocont);
}

/* luaL_newstate with the boot block's allocator from the start: the state's own ~50 blocks
 * (its strings table, registry, reserved words and metamethod names) are carved too, and
 * lua_close frees none of them one by one. */
static lua_State *new_state(boot_arena *a) {
  if (aux_panic == NULL) {                             /* (start_thread takes it first) */
    lua_State *L = luaL_newstate();
    if (L != NULL) lua_setallocf(L, thr_alloc, a);
    return L;
  }
  a->small = !checked_malloc();                        /* every block is thr_alloc's */
  lua_State *L = lua_newstate(thr_alloc, a);
  if (L != NULL) {
    lua_atpanic(L, aux_panic);
    lua_setwarnf(L, warn_off, L);
  }
  return L;
}

/* }==== */

/* The standard libraries of a thread's state. None is opened at the start (most of a bare
 * state's cost, and unused by most threads): each library is an empty table under its usual
 * global and package.loaded names, filled with the real library the first time anything reads,
 * writes or iterates it; after that the table is the library, metatable-free. base is the same
 * with the globals table itself as its stub (the first global looked up that is not there yet,
 * or the first global set, opens base). strand.core is one too, in package.loaded and the
 * registry. Two stubs need more: the strings' metatable points at the string stub (its
 * arithmetic metamethods open string first), and the global require opens package first. */
static const char LAZY_KEY = 'L';     /* registry[&LAZY_KEY] = { [stub table] = luaopen_x } */

/* Fills the stub at t (absolute) with its library: its fields, and its metatable (strand.core
 * keeps one: its areas open on first use) in place of the stub's. Returns 1 if it filled it. */
static int lazy_fill(lua_State *L, int t) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &LAZY_KEY) != LUA_TTABLE) { lua_pop(L, 1); return 0; }
  lua_pushvalue(L, t);
  if (lua_rawget(L, -2) != LUA_TFUNCTION) { lua_pop(L, 2); return 0; }   /* already filled */
  lua_pushvalue(L, t);
  lua_call(L, 1, 1);                   /* the real library table (raising leaves the stub) */
  lua_pushvalue(L, t);
  lua_pushnil(L);
  lua_rawset(L, -4);
  lua_pushnil(L);
  while (!lua_rawequal(L, -2, t) && lua_next(L, -2)) {   /* (base fills _G itself) */
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, t);
  }
  if (!lua_getmetatable(L, -1)) lua_pushnil(L);
  lua_setmetatable(L, t);
  lua_pop(L, 2);
  return 1;
}

static int lazy_index(lua_State *L) {
  int filled = lazy_fill(L, 1);
  lua_settop(L, 2);
  if (filled) lua_gettable(L, 1);      /* through the library's own metatable, if any */
  else lua_rawget(L, 1);
  return 1;
}

static int lazy_newindex(lua_State *L) {
  lazy_fill(L, 1);
  lua_settop(L, 3);
  lua_rawset(L, 1);
  return 0;
}

static int lazy_next(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  if (lua_next(L, 1)) return 2;
  lua_pushnil(L);
  return 1;
}

static int lazy_pairs(lua_State *L) {
  lazy_fill(L, 1);
  lua_pushcfunction(L, lazy_next);
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

static const char REQUIRE_KEY = 'R';  /* registry[&REQUIRE_KEY] = the real require, once opened */

/* string's opener (arg 1: the stub): the real library, whose metatable for strings is then
 * copied into the one strings had from the start (getmetatable("") stays the same table), with
 * __index the stub. */
static int open_string(lua_State *L) {
  lua_pushliteral(L, "");
  lua_getmetatable(L, -1);                            /* 2: the strings' first metatable */
  lua_remove(L, -2);
  luaopen_string(L);                                  /* 3: the library; strings got a new mt */
  lua_pushliteral(L, "");
  lua_getmetatable(L, -1);                            /* 5: the library's metatable */
  lua_pushnil(L);
  while (lua_next(L, 5)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, 2);
  }
  lua_pushvalue(L, 1);
  lua_setfield(L, 2, "__index");
  lua_pushvalue(L, 2);
  lua_setmetatable(L, 4);
  lua_settop(L, 3);
  return 1;
}

/* The strings' arithmetic metamethods until string is open (the string stub is their __index):
 * open it, then do the operation again, now with string's own metamethods. */
static int arith_op(lua_State *L) {                   /* (op, a [, b]) -> a op b */
  int op = (int)lua_tointeger(L, 1);
  lua_remove(L, 1);
  lua_arith(L, op);
  return 1;
}

static int lazy_arith(lua_State *L, int op) {
  lua_settop(L, 2);
  lua_pushliteral(L, "");
  if (lua_getmetatable(L, 3)) {
    lua_getfield(L, 4, "__index");                   /* the string stub (or string itself) */
    if (lua_istable(L, 5)) lazy_fill(L, 5);
  }
  lua_settop(L, op == LUA_OPUNM ? 1 : 2);
  lua_pushcfunction(L, arith_op);
  lua_insert(L, 1);
  lua_pushinteger(L, op);
  lua_insert(L, 2);
  if (lua_pcall(L, lua_gettop(L) - 1, 1, 0) == LUA_OK) return 1;
  /* string's own "attempt to ..." carries the position of its caller, here this function: put
   * the Lua caller's there, as a direct call would have */
  const char *m = lua_tostring(L, -1);
  if (lua_type(L, -1) == LUA_TSTRING && strncmp(m, "attempt to ", 11) == 0) {
    luaL_where(L, 1);
    lua_insert(L, -2);
    lua_concat(L, 2);
  }
  return lua_error(L);
}

#define LAZY_ARITH(name, op) static int lazy_##name(lua_State *L) { return lazy_arith(L, op); }
LAZY_ARITH(add, LUA_OPADD) LAZY_ARITH(sub, LUA_OPSUB) LAZY_ARITH(mul, LUA_OPMUL)
LAZY_ARITH(mod, LUA_OPMOD) LAZY_ARITH(pow, LUA_OPPOW) LAZY_ARITH(div, LUA_OPDIV)
LAZY_ARITH(idiv, LUA_OPIDIV) LAZY_ARITH(unm, LUA_OPUNM)
#undef LAZY_ARITH

/* The global require until package is open (upvalue: the package stub): opens it, then
 * calls the real require. */
static int lazy_require(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lazy_fill(L, lua_gettop(L));
  lua_pop(L, 1);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &REQUIRE_KEY) != LUA_TFUNCTION)
    return luaL_error(L, "'package' could not be opened");
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* package's opener (arg 1: the stub; upvalues: the creator's path and cpath, or nil): the real
 * library with the creator's paths and strand's searcher for Lua files; require and the
 * searchers (whose upvalue 1 is their package table) bound to the stub; and the global require
 * left as the program set it if it changed it. */
static int open_package(lua_State *L) {
  lua_getglobal(L, "require");                        /* 2 */
  int isstub = lua_tocfunction(L, 2) == lazy_require;
  luaopen_package(L);                                 /* the library; sets global require */
  int pk = lua_gettop(L);                             /* (luaopen_package leaves more below) */
  lua_getglobal(L, "require");
  lua_pushvalue(L, 1);
  lua_setupvalue(L, -2, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &REQUIRE_KEY);
  if (!isstub) { lua_pushvalue(L, 2); lua_setglobal(L, "require"); }
  for (int i = 1; i <= 2; i++) {
    if (lua_type(L, lua_upvalueindex(i)) != LUA_TSTRING) continue;
    lua_pushvalue(L, lua_upvalueindex(i));
    lua_setfield(L, pk, i == 1 ? "path" : "cpath");
  }
  if (lua_getfield(L, pk, "searchers") == LUA_TTABLE) {
    for (int i = 1; lua_rawgeti(L, -1, i) == LUA_TFUNCTION; i++) {
      lua_pushvalue(L, 1);
      lua_setupvalue(L, -2, 1);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, strand_chunk_searcher);      /* the Lua files' searcher */
    lua_rawseti(L, -2, 2);
  }
  lua_settop(L, pk);
  return 1;
}

int strand_task_boot(lua_State *L);                   /* task.c */

/* strand.core's opener (arg 1: the stub): the module, whose table in the registry (where its
 * areas' openers find it) becomes the stub. */
static int open_core(lua_State *L) {
  luaopen_strand_core(L);
  lua_pushvalue(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, "strand.core");
  return 1;
}

/* The lazily opened libraries. string (strings' methods need it without any global) and
 * strand.core (objects arriving in a state need it) get their stubs with the state; the others
 * with base, on the first global looked up or set. */
static const luaL_Reg lazy_libs[] = {
  { LUA_STRLIBNAME, open_string }, { "strand.core", open_core },
  { LUA_COLIBNAME, luaopen_coroutine }, { LUA_TABLIBNAME, luaopen_table },
  { LUA_LOADLIBNAME, open_package }, { LUA_IOLIBNAME, luaopen_io }, { LUA_OSLIBNAME, luaopen_os },
  { LUA_MATHLIBNAME, luaopen_math }, { LUA_UTF8LIBNAME, luaopen_utf8 },
  { LUA_DBLIBNAME, luaopen_debug }, { NULL, NULL } };
#define EAGER_LIBS 2

/* Makes the stubs of lazy_libs[from..to) under their global and package.loaded names (stub ->
 * opener in registry[&LAZY_KEY], whose [1] is the stubs' metatable); the globals table has no
 * metatable meanwhile. */
static void add_stubs(lua_State *L, int from, int to) {
  static const luaL_Reg arith[] = {
    { "__add", lazy_add }, { "__sub", lazy_sub }, { "__mul", lazy_mul }, { "__mod", lazy_mod },
    { "__pow", lazy_pow }, { "__div", lazy_div }, { "__idiv", lazy_idiv }, { "__unm", lazy_unm },
    { NULL, NULL } };
  lua_pushglobaltable(L);
  int globals = lua_gettop(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  int loaded = globals + 1;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &LAZY_KEY);
  int map = globals + 2;
  lua_rawgeti(L, map, 1);
  int meta = globals + 3;
  for (int i = from; i < to; i++) {
    const luaL_Reg *r = &lazy_libs[i];
    if (lua_getfield(L, loaded, r->name) != LUA_TNIL) { lua_pop(L, 1); continue; }
    lua_pop(L, 1);
    lua_createtable(L, 0, 0);
    lua_pushvalue(L, meta);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    if (r->func == open_package) {                    /* with the creator's paths */
      const thr_ctl *c = lua_rawgetp(L, LUA_REGISTRYINDEX, &SELF_KEY) == LUA_TLIGHTUSERDATA
                         ? (const thr_ctl *)lua_touserdata(L, -1) : NULL;
      lua_pop(L, 1);
      if (c && c->path) lua_pushstring(L, c->path); else lua_pushnil(L);
      if (c && c->cpath) lua_pushstring(L, c->cpath); else lua_pushnil(L);
      lua_pushcclosure(L, open_package, 2);
    } else {
      lua_pushcfunction(L, r->func);
    }
    lua_rawset(L, map);
    if (r->func == open_package) {                    /* the global require opens package */
      lua_pushvalue(L, -1);
      lua_pushcclosure(L, lazy_require, 1);
      lua_setfield(L, globals, "require");
    } else if (r->func == open_string) {              /* the strings' metatable */
      lua_createtable(L, 0, 9);
      luaL_setfuncs(L, arith, 0);
      lua_pushvalue(L, -2);
      lua_setfield(L, -2, "__index");
      lua_pushliteral(L, "");
      lua_insert(L, -2);
      lua_setmetatable(L, -2);
      lua_pop(L, 1);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, loaded, r->name);                 /* package.loaded[name] */
    if (r->func == open_core) lua_setfield(L, LUA_REGISTRYINDEX, "strand.core");
    else lua_setfield(L, globals, r->name);
  }
  lua_settop(L, globals - 1);
}

/* base's opener (arg 1: the globals table, a stub too): luaopen_base sets its functions in the
 * globals table itself, which first loses the stubs' metatable (its sets would come back here);
 * then the other libraries' stubs. */
static int open_base(lua_State *L) {
  lua_pushnil(L);
  lua_setmetatable(L, 1);
  luaopen_base(L);
  add_stubs(L, EAGER_LIBS, (int)(sizeof lazy_libs / sizeof lazy_libs[0]) - 1);
  return 1;
}

/* Builds the globals and package.loaded of a new state (the thread's control block is in
 * registry[&SELF_KEY] by then, for package's paths). */
static void open_stdlibs(lua_State *L) {
  static const luaL_Reg meta[] = {
    { "__index", lazy_index }, { "__newindex", lazy_newindex }, { "__pairs", lazy_pairs },
    { NULL, NULL } };
  lua_createtable(L, 0, 48);          /* globals and package.loaded made at their full size: */
  lua_pushvalue(L, -1);                /* no rehash while libraries fill them */
  lua_rawseti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  int globals = lua_gettop(L);
  lua_createtable(L, 0, 16);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, globals);
  lua_setfield(L, -2, LUA_GNAME);
  lua_createtable(L, 1, 11);                          /* stub -> opener; [1] the stubs' metatable */
  lua_createtable(L, 0, 3);
  luaL_setfuncs(L, meta, 0);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, globals);                          /* base: the globals table is its stub */
  lua_pushcfunction(L, open_base);
  lua_rawset(L, -3);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &LAZY_KEY);
  add_stubs(L, 0, EAGER_LIBS);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &LAZY_KEY);
  lua_rawgeti(L, -1, 1);
  lua_setmetatable(L, globals);                       /* last: the sets above stay raw */
  lua_settop(L, globals - 1);
}

/* A refusal of strand_serial_encode over several values names value k > 1 "args[k]" and the
 * first one "value": its k and the rest of the message (the value's place in it, the reason);
 * NULL when it names none. */
static const char *refused_value(const char *m, long long *k) {
  int off = 0;
  if (m != NULL && strncmp(m, "value", 5) == 0) { *k = 1; return m + 5; }
  if (m == NULL || sscanf(m, "args[%lld]%n", k, &off) != 1 || off == 0) return NULL;
  return m + off;
}

static int encode_all(lua_State *L) {
  strand_serial_encode(L, 1, lua_gettop(L), STRAND_SERIAL_FUNCTIONS);
  return 1;
}

/* Runs inside the new state, protected: decode, run, encode the results. */
static int thr_boot(lua_State *L) {
  thr_ctl *c = (thr_ctl *)lua_touserdata(L, 1);
  strand_loop_defer_poller(L);                         /* no poller fd unless it is needed */
  lua_pushlightuserdata(L, c);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &SELF_KEY);
  strand_task_boot(L);                                 /* core.run, core itself left a stub */
  int base = lua_gettop(L);
  int n = strand_serial_decode(L, c->payload, c->plen, STRAND_SERIAL_FUNCTIONS);
  if (n < 0) strand_serial_release(c->payload, c->plen);   /* refs were not taken over */
  free(c->payload);
  c->payload = NULL;
  if (n < 0) return luaL_error(L, "thread arguments: %s", lua_tostring(L, -1));
  (void)base;
  lua_call(L, n, LUA_MULTRET);                          /* core.run(fn, args...) */
  int nres = lua_gettop(L) - base + 1;
  lua_pushcfunction(L, encode_all);                    /* a refusal names the result */
  lua_insert(L, base);
  if (lua_pcall(L, nres, 1, 0) != LUA_OK) {
    long long k;
    const char *rest = refused_value(lua_tostring(L, -1), &k);
    if (rest)
      return luaL_error(L, "the thread's results cannot be copied: result #%I%s", (lua_Integer)k,
                        rest);
    return lua_error(L);
  }
  return 1;
}

static int encode_error(lua_State *L) {
  strand_serial_encode(L, 1, 1, STRAND_SERIAL_FUNCTIONS);
  return 1;
}

/* Whether the OS thread that ran a state may run another one (see "reusing OS threads"): not
 * if the state loaded a C library (its thread-local data, keys and signal handling are unknown
 * to strand) or forked a daemon child (Linux ties its PR_SET_PDEATHSIG to this OS thread). */
static _Thread_local int os_thread_spent __attribute__((tls_model("initial-exec")));

void strand_thread_os_spent(void) { os_thread_spent = 1; }   /* process.c: a daemon child */

static int may_reuse(lua_State *L) {
  int clibs = 0;
  if (lua_getfield(L, LUA_REGISTRYINDEX, "_CLIBS") == LUA_TTABLE) {
    lua_pushnil(L);
    if (lua_next(L, -2)) { clibs = 1; lua_pop(L, 2); }
  }
  lua_pop(L, 1);
  return !clibs && !os_thread_spent;
}

/* Runs the thread c describes, from its new state to its published results (thread_done
 * then tells the joiners). Returns 1 if this OS thread may then wait for another start. */
static int run_thread(thr_ctl *c) {
  int reuse = 0;
  boot_arena arena = { (char *)malloc(BOOT_ARENA), 0, 0, { NULL }, 0 };
  lua_State *L = new_state(&arena);
  char *res = NULL; size_t rlen = 0; int state = TS_FAILED;
  if (L != NULL) {
    /* The first collection cycle waits until the state has grown tenfold from its bare ~5 KiB
     * (a short thread never collects: building it makes no garbage), then cycles run as Lua's
     * defaults say: one full collection of the bare state with pause 1000%, then the default
     * pause (200%) back for the cycles after that first one. */
    lua_gc(L, LUA_GCINC, 1000, 0, 0);
    lua_gc(L, LUA_GCCOLLECT);
    lua_gc(L, LUA_GCINC, 200, 0, 0);
    open_stdlibs(L);
    lua_pushcfunction(L, thr_boot);
    lua_pushlightuserdata(L, c);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
      state = TS_DONE;
    } else {
      lua_pushcfunction(L, encode_error);
      lua_insert(L, -2);
      if (lua_pcall(L, 1, 1, 0) != LUA_OK) {          /* not copyable: send its text */
        const char *m = lua_tostring(L, -1);
        lua_pushfstring(L, "the thread's error cannot be copied (%s)", m ? m : "?");
        lua_pushcfunction(L, encode_error);
        lua_insert(L, -2);
        if (lua_pcall(L, 1, 1, 0) != LUA_OK) lua_settop(L, 0);
      }
    }
    const char *p = lua_gettop(L) > 0 ? lua_tolstring(L, -1, &rlen) : NULL;
    if (p) res = dupbytes(p, rlen);
    if (res == NULL) state = TS_FAILED;
    lua_settop(L, 0);
    reuse = may_reuse(L);
    lua_close(L);                                       /* waits for its own non-daemon threads */
  }
  small_drain(&arena);
  free(arena.base);
  c->result = res;                                      /* NULL: "no result could be copied" */
  c->rlen = res ? rlen : 0;
  atomic_store(&c->state, state);
  atomic_fetch_sub(&active, 1);
  return reuse && !os_thread_spent;
}

/* The thread is over: its joiners may go on (the eventfd), its reference dropped. */
static void thread_done(thr_ctl *c) {
  uint64_t one = 1;
  while (write(c->efd, &one, sizeof one) < 0 && errno == EINTR) {}
  ctl_release(c);
}

/* }==== */

/* {==== the stacks of the OS threads strand creates
 *
 * glibc gives a thread it creates a stack from its cache and, when the thread exits, hands all
 * of it below the exiting frame back to the kernel (madvise MADV_DONTNEED over the 8 MiB: a
 * system call and a page-table walk in every exit). strand makes its OS threads' stacks itself,
 * of the size and guard glibc's would have: an OS thread that ends lists its stack as exiting
 * (the OS thread is joinable), and the next start or the next OS thread that ends joins it once
 * it is gone (pthread_tryjoin_np: no system call) and keeps the stack for the next OS thread
 * (STACK_SPARE at most, the others unmapped). A kept stack keeps the pages its thread touched.
 * A forked child unmaps the stacks of the OS threads it does not have. When no stack can be
 * made, the OS thread gets glibc's, detached, as before. */

#define STACK_SPARE 4                     /* stacks kept for the next OS threads at most */

typedef struct stk {
  struct stk *next, *prev;                /* in one list: in use (both links), exiting or spare */
  char *mem;                              /* the mapping: its guard, then the stack */
  pthread_t tid;                          /* the OS thread that ran on it (exiting list) */
} stk;

/* Process-wide, as the OS threads: stacks OS threads run on, stacks whose OS thread is ending,
 * stacks free for the next. */
static pthread_mutex_t stk_mu = PTHREAD_MUTEX_INITIALIZER;
static stk *stk_inuse, *stk_exiting, *stk_spare;
static int nspare;
static size_t stk_size, stk_guard;        /* glibc's defaults, set once by pin_once (0: none) */
static size_t stk_page;                   /* the page size (pin_once) */

#define stk_base(s) ((s)->mem + stk_guard)   /* its lowest usable byte */

static void stk_free(stk *s) {
  (void)munmap(s->mem, stk_guard + stk_size);
  free(s);
}

static void stk_keep(stk *s) {            /* (under stk_mu) */
  if (nspare < STACK_SPARE) { s->next = stk_spare; stk_spare = s; nspare++; }
  else stk_free(s);
}

static void stk_unuse(stk *s) {           /* (under stk_mu) off the in-use list */
  if (s->prev != NULL) s->prev->next = s->next; else stk_inuse = s->next;
  if (s->next != NULL) s->next->prev = s->prev;
  s->next = s->prev = NULL;
}

/* (under stk_mu) Joins the exiting OS threads that are gone; keeps their stacks. */
static void stk_reap(void) {
  stk **pp = &stk_exiting;
  while (*pp != NULL) {
    stk *s = *pp;
    if (pthread_tryjoin_np(s->tid, NULL) != 0) { pp = &s->next; continue; }   /* EBUSY */
    *pp = s->next;
    stk_keep(s);
  }
}

/* A stack for a new OS thread, listed in use, or NULL (glibc's then). */
static stk *stk_take(void) {
  if (stk_size == 0) return NULL;
  /* all under stk_mu: a fork (its prepare hook takes stk_mu) never finds a stack on no list,
   * which its child could not unmap */
  pthread_mutex_lock(&stk_mu);
  stk_reap();
  stk *s = stk_spare;
  if (s != NULL) { stk_spare = s->next; nspare--; }
  else {
    s = (stk *)malloc(sizeof *s);
    if (s == NULL) { pthread_mutex_unlock(&stk_mu); return NULL; }
    s->mem = (char *)mmap(NULL, stk_guard + stk_size, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (s->mem == MAP_FAILED) { free(s); pthread_mutex_unlock(&stk_mu); return NULL; }
    if (stk_guard > 0 && mprotect(s->mem, stk_guard, PROT_NONE) != 0) {
      stk_free(s);
      pthread_mutex_unlock(&stk_mu);
      return NULL;
    }
  }
  s->prev = NULL;
  s->next = stk_inuse;
  if (stk_inuse != NULL) stk_inuse->prev = s;
  stk_inuse = s;
  pthread_mutex_unlock(&stk_mu);
  return s;
}

/* A stack taken for an OS thread that could not be created. */
static void stk_give_back(stk *s) {
  pthread_mutex_lock(&stk_mu);
  stk_unuse(s);
  stk_keep(s);
  pthread_mutex_unlock(&stk_mu);
}

/* The OS thread running on s returns now: lists it, to be joined once it is gone. */
static void stk_exit(stk *s) {
  pthread_t self = pthread_self();
  pthread_mutex_lock(&stk_mu);
  stk_reap();
  stk_unuse(s);
  s->tid = self;
  s->next = stk_exiting;
  stk_exiting = s;
  pthread_mutex_unlock(&stk_mu);
}

/* thread._test_stack_resident() -> bytes resident (mincore) in the stacks strand made, in use,
 * exiting and spare, and how many stacks: for the specs of the spare stacks' pages. */
static size_t stk_resident_of(stk *s, unsigned char *vec) {
  long page = sysconf(_SC_PAGESIZE);
  size_t n = stk_size / (size_t)page, r = 0;
  if (mincore(stk_base(s), stk_size, vec) != 0) return 0;
  for (size_t i = 0; i < n; i++) r += vec[i] & 1;
  return r * (size_t)page;
}

static int l_test_stack_resident(lua_State *L) {
  long page = sysconf(_SC_PAGESIZE);
  unsigned char *vec = stk_size ? (unsigned char *)malloc(stk_size / (size_t)page + 1) : NULL;
  size_t r = 0; int n = 0;
  if (vec != NULL) {
    pthread_mutex_lock(&stk_mu);
    stk *lists[3] = { stk_inuse, stk_exiting, stk_spare };
    for (int k = 0; k < 3; k++)
      for (stk *s = lists[k]; s != NULL; s = s->next) { r += stk_resident_of(s, vec); n++; }
    pthread_mutex_unlock(&stk_mu);
    free(vec);
  }
  lua_pushinteger(L, (lua_Integer)r);
  lua_pushinteger(L, n);
  return 2;
}

/* The pages a thread touched deep in its stack given back before the stack waits (for the next
 * start on this OS thread, or as a spare): a thread that once recursed deep in C would otherwise
 * leave them resident for good (glibc's own stacks give back all below the exiting frame, with a
 * madvise at every exit). Only when the thread went deep: the top STACK_HOT bytes (a thread's
 * usual depth: 12 KiB for a plain function, 20 KiB with require "strand") stay, and the page just
 * below them is the probe: a stack pointer that went below it wrote there (a frame writes its
 * return address, and frames are far smaller than a page) -- nonzero words mean deep pages are
 * resident. The page reads as zeros while untouched (and after the madvise), so a thread that
 * stays shallow costs a scan of one page and no system call; the first read of an untouched probe
 * maps the zero page once (a minor fault per stack, not per thread). One word per 64 bytes is
 * read (frames crossing the page leave return addresses and pointers all over it). Memcheck,
 * which reports reads below a stack pointer, is told not to. Called by the thread itself. */
#define STACK_HOT (128 * 1024)

__attribute__((no_sanitize_address))
static int stk_probe_touched(const char *probe) {
  const volatile uint64_t *w = (const volatile uint64_t *)probe;
  uint64_t any = 0;
  VALGRIND_DISABLE_ERROR_REPORTING;        /* (memcheck: a read below a stack pointer) */
  for (size_t i = 0; i < stk_page / sizeof *w; i += 8) any |= w[i];   /* a word per 64 bytes */
  VALGRIND_ENABLE_ERROR_REPORTING;
  VALGRIND_MAKE_MEM_DEFINED(&any, sizeof any);
  return any != 0;
}

static void stk_trim(stk *s) {
  if (stk_size < STACK_HOT + 2 * stk_page) return;
  char *probe = stk_base(s) + stk_size - STACK_HOT - stk_page;
  if (!stk_probe_touched(probe)) return;
  (void)madvise(stk_base(s), stk_size - STACK_HOT, MADV_DONTNEED);   /* (a hint: may fail) */
}

static void stk_fork_prepare(void) { pthread_mutex_lock(&stk_mu); }
static void stk_fork_parent(void) { pthread_mutex_unlock(&stk_mu); }
/* A forked child has only the thread that forked. The stacks of the others (running or exiting
 * in the parent) are dropped from the lists but stay mapped: each holds its thread's record with
 * the pointer to the TLS block glibc allocated for it (its DTV), which only a join frees; a
 * thread that does not exist here is never joined, and unmapping the record would leave the block
 * out of reach for good (a leak per thread at every fork, valgrind's "definitely lost"). glibc's
 * own stacks are kept by a child the same way. Spare stacks (their threads joined, their blocks
 * freed) stay spares; the forking thread's own, if strand made it, stays in use. */
static void stk_fork_child(void) {
  pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
  stk_mu = m;
  char here;
  stk *keep = NULL;
  while (stk_inuse != NULL) {
    stk *s = stk_inuse;
    stk_inuse = s->next;
    uintptr_t at = (uintptr_t)&here, base = (uintptr_t)stk_base(s);
    if (at >= base && at - base < stk_size) keep = s;
    else free(s);                         /* the mapping stays (above) */
  }
  if (keep != NULL) { keep->next = keep->prev = NULL; stk_inuse = keep; }
  while (stk_exiting != NULL) {
    stk *s = stk_exiting;
    stk_exiting = s->next;
    free(s);                              /* the mapping stays (above) */
  }
}

/* }==== */

/* {==== reusing OS threads
 *
 * A thread's OS thread, once its state is closed, waits up to IDLE_SECS for the next
 * thread.start of the process instead of exiting (IDLE_MAX at most wait at once): a start
 * then costs a wake-up instead of a clone and an exit. It lists itself as idle before it
 * signals its joiners, so a program that joins and starts the next finds it. What runs is the
 * same as on a new OS thread: a new state, the creator's signal mask, the OS thread's name as
 * created; strand's own thread-local data is per state or per call. A waiting OS thread is
 * named "strand-idle" after its first 2 ms, blocks in a futex wait, holds no lock and no state;
 * a forked child has none (docs/thread.md). */

#define IDLE_MAX 2                        /* waiting OS threads at most, unless
                                             STRAND_THREAD_IDLE says otherwise (0: no reuse) */
#define IDLE_SECS 2                       /* how long one waits for a start before it exits */
#define IDLE_QUIET_NS 2000000L            /* the first 2 ms of it under its own name (a start
                                             that comes at once costs no rename and back) */

typedef struct parked {
  struct parked *next;                    /* in the idle list */
  thr_ctl *_Atomic job;                   /* handed over by a start */
  atomic_int word;                        /* the futex word: 1 once job is set */
} parked;

/* The idle list: process-wide by nature (any thread's start takes any waiting OS thread). */
static pthread_mutex_t idle_mu = PTHREAD_MUTEX_INITIALIZER;
static parked *idle_list;
static atomic_int nidle;                  /* written under idle_mu; read unlocked as a hint */
static int idle_ok;                       /* the fork hooks are in place (pin_once) */
static int idle_max = IDLE_MAX;           /* set once by pin_once, read-only after */

static void idle_fork_prepare(void) {
  pthread_mutex_lock(&idle_mu); stk_fork_prepare(); pthread_mutex_lock(&efd_mu);
}
static void idle_fork_parent(void) {
  pthread_mutex_unlock(&efd_mu); stk_fork_parent(); pthread_mutex_unlock(&idle_mu);
}
static void idle_fork_child(void) {       /* the waiting OS threads are the parent's only */
  for (int i = 0; i < efd_nspare; i++) close(efd_spare[i]);   /* the parent's (shared files) */
  efd_nspare = 0;
  pthread_mutex_t em = PTHREAD_MUTEX_INITIALIZER;
  efd_mu = em;
  stk_fork_child();
  pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
  idle_mu = m;
  idle_list = NULL;
  atomic_store(&nidle, 0);
  atomic_store(&active, 0);               /* the forking one runs as the child's main state */
  thr_gen++;                              /* the parent's threads are not this process's */
}

static long futex(atomic_int *word, int op, int val, const struct timespec *ts) {
  return syscall(SYS_futex, word, op | FUTEX_PRIVATE_FLAG, val, ts, NULL, FUTEX_BITSET_MATCH_ANY);
}

/* A start: hands c to a waiting OS thread; 0 if none waits. */
static int idle_take(thr_ctl *c) {
  if (atomic_load_explicit(&nidle, memory_order_relaxed) == 0) return 0;
  memset(&c->mask, 0, sizeof c->mask);      /* (glibc fills only the kernel's 8 bytes of it) */
  if (pthread_sigmask(SIG_BLOCK, NULL, &c->mask) != 0) return 0;
  c->mask_set = 1;
  pthread_mutex_lock(&idle_mu);
  parked *w = idle_list;
  if (w != NULL) {
    idle_list = w->next;
    atomic_store(&nidle, atomic_load(&nidle) - 1);
  }
  pthread_mutex_unlock(&idle_mu);
  if (w == NULL) return 0;
  /* taken off the list, w waits for this job however long it takes (idle_wait): it is there
   * for the wake. (A wake that comes after w saw the job is a spurious one for any later
   * waiter on the word, which every waiter here tolerates.) */
  atomic_store_explicit(&w->job, c, memory_order_release);
  atomic_store_explicit(&w->word, 1, memory_order_release);
  futex(&w->word, FUTEX_WAKE, 1, NULL);
  return 1;
}

/* Lists this OS thread as idle; 0 if idle_max already are. */
static int idle_add(parked *w) {
  if (!idle_ok) return 0;
  pthread_mutex_lock(&idle_mu);
  int ok = atomic_load(&nidle) < idle_max;
  if (ok) {
    atomic_store_explicit(&w->job, NULL, memory_order_relaxed);
    atomic_store_explicit(&w->word, 0, memory_order_relaxed);
    w->next = idle_list;
    idle_list = w;
    atomic_store(&nidle, atomic_load(&nidle) + 1);
  }
  pthread_mutex_unlock(&idle_mu);
  return ok;
}

/* Waits (listed by idle_add) for a start; returns its control block, or NULL to exit. */
static thr_ctl *idle_wait(parked *w, const char *name) {
  (void)prctl(PR_SET_NAME, name, 0, 0, 0);           /* the state may have written its comm */
  struct timespec since, until;
  clock_gettime(CLOCK_MONOTONIC, &since);
  until = since;
  until.tv_nsec += IDLE_QUIET_NS;
  if (until.tv_nsec >= 1000000000L) { until.tv_sec++; until.tv_nsec -= 1000000000L; }
  int renamed = 0;
  thr_ctl *c;
  while ((c = atomic_load_explicit(&w->job, memory_order_acquire)) == NULL) {
    if (futex(&w->word, FUTEX_WAIT_BITSET, 0, &until) == 0 || errno != ETIMEDOUT) continue;
    if (!renamed) {                                  /* no start came at once: a longer wait */
      (void)prctl(PR_SET_NAME, "strand-idle", 0, 0, 0);
      renamed = 1;
      until = since;
      until.tv_sec += IDLE_SECS;
      continue;
    }
    pthread_mutex_lock(&idle_mu);
    parked **pp = &idle_list;
    while (*pp != NULL && *pp != w) pp = &(*pp)->next;
    int listed = *pp == w;
    if (listed) {                                    /* nobody took it: it goes */
      *pp = w->next;
      atomic_store(&nidle, atomic_load(&nidle) - 1);
    }
    pthread_mutex_unlock(&idle_mu);
    if (listed) return NULL;
    /* taken just now: its job is on the way (idle_take sets it right after unlocking) */
    while ((c = atomic_load_explicit(&w->job, memory_order_acquire)) == NULL)
      futex(&w->word, FUTEX_WAIT, 0, NULL);
  }
  if (renamed) (void)prctl(PR_SET_NAME, name, 0, 0, 0);
  return c;
}

static void *thr_main(void *arg) {
  thr_ctl *c = (thr_ctl *)arg;
  stk *own = c->stack;                    /* the stack strand made for it, if any */
  char name[17] = { 0 };                  /* its name as created (a state may write its comm);
                                             needed only to wait for the next start */
  int named = idle_ok && prctl(PR_GET_NAME, name, 0, 0, 0) == 0;
  sigset_t mask;                          /* the signal mask this OS thread has (a state cannot
                                             change it without a C library) */
  memset(&mask, 0, sizeof mask);
  int masked = 0;
  parked w;
  memset(&w, 0, sizeof w);
  for (;;) {
    int again = run_thread(c) && named;
    if (own != NULL) stk_trim(own);       /* before its joiners go on: a join sees it done */
    if (again && !masked) masked = again = pthread_sigmask(SIG_BLOCK, NULL, &mask) == 0;
    again = again && idle_add(&w);
    thread_done(c);
    if (!again || (c = idle_wait(&w, name)) == NULL) break;
    if (c->mask_set && memcmp(&c->mask, &mask, sizeof mask) != 0) {
      if (pthread_sigmask(SIG_SETMASK, &c->mask, NULL) == 0) mask = c->mask;
      else masked = 0;
    }
  }
  if (own != NULL) stk_exit(own);
  return NULL;
}

/* }==== */

/* {==== exit guard: a state waits for its non-daemon threads when it closes */

typedef struct guard { thr_ctl **v; size_t n, cap; } guard;

static void wait_finished(thr_ctl *c) {
  struct pollfd p = { c->efd, POLLIN, 0 };
  while (atomic_load(&c->state) < TS_DONE) {
    if (poll(&p, 1, -1) < 0 && errno != EINTR) break;
  }
}

/* A thread that failed and whose results nobody loaded (join/result): its error goes to
 * stderr, as an unjoined task's does, instead of being lost at exit. */
static void report_unjoined(lua_State *L, thr_ctl *c) {
  if (atomic_load(&c->state) != TS_FAILED) return;
  const char *msg = "(its error could not be copied)";
  int top = lua_gettop(L);
  if (c->result && lua_checkstack(L, 4)) {
    int n = strand_serial_decode(L, c->result, c->rlen, STRAND_SERIAL_FUNCTIONS);
    free(c->result);                                   /* decode adopted its object refs */
    c->result = NULL;
    if (n >= 1) msg = luaL_tolstring(L, top + 1, NULL);
  }
  fprintf(stderr, "strand: thread %s failed and nobody joined it:\n%s\n", c->name, msg);
  fflush(stderr);
  lua_settop(L, top);
}

static int guard_gc(lua_State *L) {
  guard *g = (guard *)lua_touserdata(L, 1);
  for (size_t i = 0; i < g->n; i++) {
    if (!ctl_inherited(g->v[i])) {      /* a forked child does not wait for its parent's */
      wait_finished(g->v[i]);
      report_unjoined(L, g->v[i]);
    }
    ctl_release(g->v[i]);
  }
  free(g->v);
  g->v = NULL; g->n = g->cap = 0;
  return 0;
}

static void guard_add(lua_State *L, thr_ctl *c) {
  guard *g;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &GUARD_KEY) == LUA_TUSERDATA) {
    g = (guard *)lua_touserdata(L, -1);
  } else {
    lua_pop(L, 1);
    g = (guard *)lua_newuserdatauv(L, sizeof *g, 0);
    memset(g, 0, sizeof *g);
    if (luaL_newmetatable(L, GUARD_META)) {
      lua_pushcfunction(L, guard_gc);
      lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &GUARD_KEY);
  }
  lua_pop(L, 1);
  size_t j = 0;                                  /* drop the finished ones */
  for (size_t i = 0; i < g->n; i++) {
    if (atomic_load(&g->v[i]->state) >= TS_DONE || ctl_inherited(g->v[i])) ctl_release(g->v[i]);
    else g->v[j++] = g->v[i];
  }
  g->n = j;
  if (g->n == g->cap) {
    size_t cap = g->cap ? g->cap * 2 : 8;
    thr_ctl **v = (thr_ctl **)realloc(g->v, cap * sizeof *v);
    if (v == NULL) luaL_error(L, "out of memory");
    g->v = v; g->cap = cap;
  }
  atomic_fetch_add(&c->refs, 1);
  g->v[g->n++] = c;
}

/* A joined thread needs no waiting at exit: drop the guard's reference (and so its fd). */
static void guard_remove(lua_State *L, thr_ctl *c) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &GUARD_KEY) != LUA_TUSERDATA) { lua_pop(L, 1); return; }
  guard *g = (guard *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  for (size_t i = 0; i < g->n; i++) {
    if (g->v[i] == c) {
      g->v[i] = g->v[--g->n];
      ctl_release(c);
      return;
    }
  }
}

/* }==== */

/* {==== starting */

/* Keep this shared object mapped while any thread may run its code, even after the main
 * state closed and dlclose()d it (daemon threads at exit). */
static void pin_once(void) {
  Dl_info info;
  if (dladdr((void *)&thr_main, &info) && info.dli_fname)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE | RTLD_NOLOAD);
  lua_State *L = luaL_newstate();                     /* for lauxlib's panic function */
  if (L != NULL) {
    aux_panic = lua_atpanic(L, NULL);
    lua_close(L);
  }
  const char *env = getenv("STRAND_THREAD_IDLE");
  if (env != NULL && *env != '\0') {
    char *end;
    long v = strtol(env, &end, 10);
    if (*end == '\0' && v >= 0) idle_max = v > 64 ? 64 : (int)v;
  }
  int hooks = pthread_atfork(idle_fork_prepare, idle_fork_parent, idle_fork_child) == 0;
  idle_ok = idle_max > 0 && hooks;
  pthread_attr_t d;                                   /* the stacks glibc would make */
  size_t size = 0, guard = 0;
  long page = sysconf(_SC_PAGESIZE);
  if (hooks && page > 0 && pthread_getattr_default_np(&d) == 0) {
    if (pthread_attr_getstacksize(&d, &size) != 0 || pthread_attr_getguardsize(&d, &guard) != 0)
      size = 0;
    pthread_attr_destroy(&d);
  }
  if (size >= (size_t)PTHREAD_STACK_MIN && size <= ((size_t)1 << 30)) {
    size_t m = (size_t)page - 1;
    stk_size = (size + m) & ~m;
    stk_guard = (guard + m) & ~m;
    stk_page = (size_t)page;
  }
}

static pthread_once_t pinned = PTHREAD_ONCE_INIT;    /* process-wide, as the mapping it pins */

static void pin_module(void) {
  (void)pthread_once(&pinned, pin_once);
}

static thr_handle *check_handle(lua_State *L, int idx) {
  return (thr_handle *)luaL_checkudata(L, idx, THREAD_META);
}

static thr_handle *new_handle(lua_State *L) {
  thr_handle *h = (thr_handle *)lua_newuserdatauv(L, sizeof *h, 2);
  h->c = NULL;
  h->started = 0;
  luaL_setmetatable(L, THREAD_META);
  thr_ctl *c = (thr_ctl *)calloc(1, sizeof *c);
  if (c == NULL) luaL_error(L, "out of memory");
  c->efd = -1;
  atomic_init(&c->refs, 1);
  atomic_init(&c->state, TS_NEW);
  c->id = atomic_fetch_add(&next_id, 1);
  snprintf(c->name, sizeof c->name, "Thread-%lld", (long long)c->id);
  h->c = c;
  return h;
}

static char *package_string(lua_State *L, const char *field) {
  char *r = NULL;
  if (lua_getglobal(L, "package") == LUA_TTABLE && lua_getfield(L, -1, field) == LUA_TSTRING) {
    size_t n; const char *s = lua_tolstring(L, -1, &n);
    r = dupbytes(s, n);
  }
  lua_settop(L, lua_gettop(L) - (lua_istable(L, -1) ? 1 : 2));
  return r;
}

/* A start that failed gives back all it took (the payload's object references, its copies, the
 * eventfd): the handle is as before, it may start again. */
static void start_undo(thr_ctl *c) {
  if (c->payload != NULL) strand_serial_release(c->payload, c->plen);
  free(c->payload); c->payload = NULL;
  free(c->path); c->path = NULL;
  free(c->cpath); c->cpath = NULL;
  if (c->efd >= 0) { close(c->efd); c->efd = -1; }
}

/* Running out of a resource is a runtime failure (API.md): pushes nil, "cannot start thread:
 * <message>", CODE; returns 3. */
static int start_fail(lua_State *L, int err) {
  const char *msg = err == EAGAIN ? "out of threads or memory" : strand_errmsg(err);
  lua_pushnil(L);
  if (msg != NULL) lua_pushfstring(L, "cannot start thread: %s", msg);
  else lua_pushfstring(L, "cannot start thread: %s", strerror(err));
  const char *name = strand_errname(err);
  if (name != NULL) lua_pushstring(L, name);
  else lua_pushfstring(L, "E%d", err);
  return 3;
}

/* Encodes fn + args (at first..first+n-1) — raising in the caller for uncopyable values, naming
 * them as arguments of thread.start when they are (byarg), else by their place -- then starts
 * the OS thread. 0 when it runs, else an errno (out of descriptors, memory or threads: nothing
 * is kept, see start_undo). */
static int start_thread(lua_State *L, thr_handle *h, int first, int n, int byarg) {
  thr_ctl *c = h->c;
  if (h->started) luaL_error(L, "threads can only be started once");
  if (byarg) strand_serial_encode_arg(L, first, n, STRAND_SERIAL_FUNCTIONS, "start", 1);
  else {                                 /* thread.new's fn and args: value 1 is fn, not args[1] */
    lua_pushcfunction(L, encode_all);
    for (int i = 0; i < n; i++) lua_pushvalue(L, first + i);
    if (lua_pcall(L, n, 1, 0) != LUA_OK) {
      long long k;
      const char *rest = refused_value(lua_tostring(L, -1), &k);
      if (rest == NULL) lua_error(L);
      if (k == 1) luaL_error(L, "bad argument #1 to 'start' (the thread's fn%s)", rest);
      luaL_error(L, "bad argument #1 to 'start' (the thread's args[%I]%s)", (lua_Integer)(k - 1), rest);
    }
  }
  size_t len; const char *p = lua_tolstring(L, -1, &len);
  c->payload = dupbytes(p, len);
  if (c->payload == NULL) {
    strand_serial_release(p, len);                 /* the string's references: never decoded */
    lua_pop(L, 1);
    return ENOMEM;
  }
  c->plen = len;
  lua_pop(L, 1);
  int top = lua_gettop(L);
  c->path = package_string(L, "path");
  c->cpath = package_string(L, "cpath");
  lua_settop(L, top);
  c->efd = efd_take();
  if (c->efd < 0) {
    int e = errno;
    start_undo(c);
    return e;
  }
  pin_module();
  c->gen = thr_gen;
  atomic_fetch_add(&c->refs, 1);                   /* the thread's reference */
  atomic_store(&c->state, TS_RUNNING);
  atomic_fetch_add(&active, 1);
  int err = 0;
  if (!idle_take(c)) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    stk *s = stk_take();                           /* joinable on its own stack (stk_exit) */
    if (s != NULL && pthread_attr_setstack(&attr, stk_base(s), stk_size) != 0) {
      stk_give_back(s);
      s = NULL;
    }
    if (s == NULL) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    c->stack = s;
    pthread_t tid;
    err = pthread_create(&tid, &attr, thr_main, c);
    pthread_attr_destroy(&attr);
    if (err && s != NULL) { stk_give_back(s); c->stack = NULL; }
  }
  if (err) {
    atomic_fetch_sub(&active, 1);
    atomic_store(&c->state, TS_NEW);
    atomic_fetch_sub(&c->refs, 1);
    start_undo(c);
    return err;
  }
  h->started = 1;
  if (!c->daemon) guard_add(L, c);
  return 0;
}

static int l_start(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  int n = lua_gettop(L);
  thr_handle *h = new_handle(L);
  int hidx = lua_gettop(L);
  int err = start_thread(L, h, 1, n, 1);
  if (err) return start_fail(L, err);
  lua_pushvalue(L, hidx);
  return 1;
}

/* thread.new{fn=, args={...}, name=, daemon=} */
static int l_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (lua_getfield(L, 1, "fn") != LUA_TFUNCTION)
    luaL_argerror(L, 1, "field 'fn' must be a function");
  int targs = lua_getfield(L, 1, "args");
  if (targs != LUA_TNIL && targs != LUA_TTABLE) luaL_argerror(L, 1, "field 'args' must be a table");
  int tname = lua_getfield(L, 1, "name");
  if (tname != LUA_TNIL && tname != LUA_TSTRING) luaL_argerror(L, 1, "field 'name' must be a string");
  lua_getfield(L, 1, "daemon");                        /* fn args name daemon */
  thr_handle *h = new_handle(L);
  if (tname == LUA_TSTRING) {
    const char *s = lua_tostring(L, -3);
    snprintf(h->c->name, sizeof h->c->name, "%s", s);
  }
  h->c->daemon = lua_toboolean(L, -2);
  lua_createtable(L, 2, 0);                            /* the call to make at start() */
  lua_pushvalue(L, 2); lua_rawseti(L, -2, 1);
  if (targs == LUA_TTABLE) { lua_pushvalue(L, 3); lua_rawseti(L, -2, 2); }
  lua_setiuservalue(L, -2, 1);
  return 1;
}

static int tm_start(lua_State *L) {
  thr_handle *h = check_handle(L, 1);
  if (h->started) return luaL_error(L, "threads can only be started once");
  if (lua_getiuservalue(L, 1, 1) != LUA_TTABLE) return luaL_error(L, "thread has nothing to run");
  int call = lua_gettop(L);
  int base = lua_gettop(L) + 1;
  lua_rawgeti(L, call, 1);                             /* fn */
  int n = 1;
  if (lua_rawgeti(L, call, 2) == LUA_TTABLE) {
    int args = lua_gettop(L);
    lua_getfield(L, args, "n");
    lua_Integer na = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : (lua_Integer)lua_rawlen(L, args);
    lua_pop(L, 1);
    luaL_checkstack(L, (int)na + 2, "too many thread arguments");
    for (lua_Integer i = 1; i <= na; i++) lua_rawgeti(L, args, i);
    lua_remove(L, args);
    n += (int)na;
  } else {
    lua_pop(L, 1);
  }
  int err = start_thread(L, h, base, n, 0);
  if (err) return start_fail(L, err);
  lua_pushnil(L);
  lua_setiuservalue(L, 1, 1);
  lua_settop(L, 1);
  return 1;
}

/* }==== */

/* {==== joining */

/* A joiner's wait on the eventfd: the first joiner of a thread waits on the control block's own
 * eventfd; a second one at the same time on a dup of it (epoll keys on the fd). The waiter holds
 * a reference to the control block, so the eventfd stays open until the registration is gone. */
typedef struct waiter { strand_io io; thr_ctl *c; int dup; } waiter;

static int waiter_close(lua_State *L) {
  waiter *w = (waiter *)luaL_checkudata(L, 1, WAITER_META);
  if (w->io.fd >= 0) {
    strand_io_close(&w->io);
    if (w->dup) close(w->io.fd);
    else if (w->c) w->c->efd_waited = 0;
    w->io.fd = -1;
  }
  if (w->c) {
    ctl_release(w->c);
    w->c = NULL;
  }
  return 0;
}

/* The results, decoded once into uservalue 2 = { ok, n, ... } */
static void load_results(lua_State *L, thr_handle *h) {
  if (lua_getiuservalue(L, 1, 2) == LUA_TTABLE) return;
  lua_pop(L, 1);
  thr_ctl *c = h->c;
  int state = atomic_load(&c->state);
  int top = lua_gettop(L);
  lua_newtable(L);
  int t = lua_gettop(L);
  int n = c->result ? strand_serial_decode(L, c->result, c->rlen, STRAND_SERIAL_FUNCTIONS) : -1;
  if (n < 0) {
    if (c->result) lua_pushfstring(L, "thread results could not be copied: %s", lua_tostring(L, -1));
    else lua_pushliteral(L, "thread failed (no result could be copied)");
    lua_rawseti(L, t, 1);
    lua_settop(L, t);
    n = 1;
    state = TS_FAILED;
  } else {
    for (int i = n; i >= 1; i--) lua_rawseti(L, t, i);
  }
  if (c->result) {
    free(c->result);                                   /* decode adopted its object refs */
    c->result = NULL;
  }
  guard_remove(L, c);
  /* its eventfd serves the next start now (not when the handle is collected) once the thread's
   * write is in (the read that sees it also resets it) and no joiner has it registered; a join
   * or result from now on never waits (the results are loaded) */
  if (c->efd >= 0 && !c->efd_waited && !ctl_inherited(c)) {
    uint64_t v;
    ssize_t r;
    while ((r = read(c->efd, &v, sizeof v)) < 0 && errno == EINTR) {}
    if (r == (ssize_t)sizeof v) { efd_keep(c->efd); c->efd = -1; }
  }
  lua_pushboolean(L, state == TS_DONE); lua_setfield(L, t, "ok");
  lua_pushinteger(L, n); lua_setfield(L, t, "n");
  lua_pushvalue(L, t);
  lua_setiuservalue(L, 1, 2);
  lua_settop(L, top);
  lua_getiuservalue(L, 1, 2);
}

static int push_results(lua_State *L, thr_handle *h, int raise) {
  load_results(L, h);
  int t = lua_gettop(L);
  lua_getfield(L, t, "ok");
  int ok = lua_toboolean(L, -1);
  lua_getfield(L, t, "n");
  int n = (int)lua_tointeger(L, -1);
  lua_pop(L, 2);
  if (!ok) {
    lua_rawgeti(L, t, 1);
    if (raise) return lua_error(L);
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  luaL_checkstack(L, n + 1, "too many results");
  if (!raise) lua_pushboolean(L, 1);
  for (int i = 1; i <= n; i++) lua_rawgeti(L, t, i);
  return n + (raise ? 0 : 1);
}

static int join_k(lua_State *L, int status, lua_KContext raise) {
  int outcome = strand_resumed(L, status);
  thr_handle *h = check_handle(L, 1);
  double deadline = lua_tonumber(L, 2);
  for (;;) {
    if (atomic_load(&h->c->state) >= TS_DONE) {
      if (lua_type(L, 3) == LUA_TUSERDATA) {
        lua_pushcfunction(L, waiter_close); lua_pushvalue(L, 3); lua_call(L, 1, 0);
      }
      lua_settop(L, 1);
      return push_results(L, h, (int)raise);
    }
    if (outcome == STRAND_TIMEOUT || deadline <= strand_now()) {
      if (raise && strand_interrupted(L)) return 0;  /* the Ctrl-C hook raises at return */
      if (raise) { lua_pushliteral(L, "timeout"); return lua_error(L); }   /* exactly, no position */
      return strand_fail_msg(L, "timeout", NULL);
    }
    if (outcome == STRAND_CLOSED) return luaL_error(L, "thread join interrupted");
    if (lua_type(L, 3) != LUA_TUSERDATA) {         /* the eventfd to wait on (see waiter) */
      lua_settop(L, 2);
      waiter *w = (waiter *)lua_newuserdatauv(L, sizeof *w, 0);
      strand_io_init(&w->io, -1);
      w->c = NULL;
      w->dup = 0;
      luaL_setmetatable(L, WAITER_META);
      thr_ctl *c = h->c;
      int fd = c->efd;
      if (c->efd_waited) {
        fd = fcntl(c->efd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0) return strand_fail(L, errno);
        w->dup = 1;
      } else {
        c->efd_waited = 1;
      }
      atomic_fetch_add(&c->refs, 1);
      w->c = c;
      strand_io_init(&w->io, fd);
      w->io.read_only = 1;                         /* no wake-up for the eventfd's writability */
    }
    waiter *w = (waiter *)lua_touserdata(L, 3);
    outcome = strand_wait_io(L, &w->io, STRAND_READ, deadline, raise, join_k);
  }
}

/* A forked child's copy of its parent's thread (not joined there before the fork): its OS thread
 * is not in this process and its results are the parent's. join fails at once as a finished
 * thread that failed would (so joinall, wait and as_completed count it done), result raises. */
static int join_inherited(lua_State *L, thr_handle *h, int raise) {
  lua_pushfstring(L, "thread %s belongs to the parent process (this is a forked child)", h->c->name);
  if (raise) return lua_error(L);
  lua_pushboolean(L, 0);
  lua_insert(L, -2);
  return 2;
}

static int join_start(lua_State *L, int raise) {
  thr_handle *h = check_handle(L, 1);
  if (!h->started) return luaL_error(L, "cannot join a thread before it is started");
  double deadline = strand_opt_deadline(L, 2);
  if (ctl_inherited(h->c)) {                 /* (unless the parent had loaded its results) */
    if (lua_getiuservalue(L, 1, 2) != LUA_TTABLE) return join_inherited(L, h, raise);
    lua_settop(L, 1);
    return push_results(L, h, raise);
  }
  lua_settop(L, 1);
  lua_pushnumber(L, deadline);
  lua_pushnil(L);
  return join_k(L, LUA_OK, raise);
}

static int tm_join(lua_State *L) { return join_start(L, 0); }
static int tm_result(lua_State *L) { return join_start(L, 1); }

static int tm_is_alive(lua_State *L) {
  thr_handle *h = check_handle(L, 1);
  lua_pushboolean(L, atomic_load(&h->c->state) == TS_RUNNING && !ctl_inherited(h->c));
  return 1;
}

static int tm_index(lua_State *L) {
  thr_handle *h = check_handle(L, 1);
  const char *k = lua_tostring(L, 2);
  if (k && strcmp(k, "id") == 0) { lua_pushinteger(L, h->c->id); return 1; }
  if (k && strcmp(k, "name") == 0) { lua_pushstring(L, h->c->name); return 1; }
  if (k && strcmp(k, "daemon") == 0) { lua_pushboolean(L, h->c->daemon); return 1; }
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "methods");
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

static int tm_tostring(lua_State *L) {
  thr_handle *h = check_handle(L, 1);
  static const char *const names[] = { "new", "running", "done", "failed" };
  const char *state = names[atomic_load(&h->c->state)];
  if (h->started && ctl_inherited(h->c)) state = "the parent process's";
  lua_pushfstring(L, "strand.thread %s (%s)", h->c->name, state);
  return 1;
}

static int tm_gc(lua_State *L) {
  thr_handle *h = (thr_handle *)lua_touserdata(L, 1);
  if (h->c) { ctl_release(h->c); h->c = NULL; }
  return 0;
}

/* }==== */

/* {==== module functions */

static int self_field(lua_State *L, const char *k) {
  const thr_ctl *c = lua_rawgetp(L, LUA_REGISTRYINDEX, &SELF_KEY) == LUA_TLIGHTUSERDATA
                     ? (const thr_ctl *)lua_touserdata(L, -1) : NULL;
  if (k[0] == 'i') lua_pushinteger(L, c ? c->id : 1);
  else lua_pushstring(L, c ? c->name : "MainThread");
  return 1;
}

static int l_id(lua_State *L) { return self_field(L, "id"); }
static int l_name(lua_State *L) { return self_field(L, "name"); }

static int l_active_count(lua_State *L) {
  lua_pushinteger(L, atomic_load(&active) + 1);
  return 1;
}

static const luaL_Reg methods[] = {
  {"start", tm_start}, {"join", tm_join}, {"result", tm_result}, {"is_alive", tm_is_alive},
  {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"start", l_start}, {"new", l_new}, {"id", l_id}, {"name", l_name},
  {"active_count", l_active_count}, {"_test_stack_resident", l_test_stack_resident},
  {"_spare_fds", l_spare_fds}, {NULL, NULL}
};

int strand_open_thread(lua_State *L) {
  luaL_newmetatable(L, THREAD_META);
  lua_pushcfunction(L, tm_index); lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, tm_gc); lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, tm_tostring); lua_setfield(L, -2, "__tostring");
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "methods");
  lua_pop(L, 1);
  luaL_newmetatable(L, WAITER_META);
  lua_pushcfunction(L, waiter_close); lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}

/* }==== */
