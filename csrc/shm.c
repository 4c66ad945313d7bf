/* shm.c — process-shared objects: state in MAP_SHARED memory under a robust process-shared
 * mutex, eventfd wake channels waited on through each state's loop, and a growable arena. */
#include "strand.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>
#include <fcntl.h>

/* {==== the wait protocol
 *
 * An object's waits are split into channels (a lock has one; a queue has getters, putters and
 * joiners). Each channel has an eventfd (counter mode, non-blocking), created with the object so
 * that threads and forked children all hold it, and two words in shared memory:
 * sleepers[ch] (tasks asleep on it, anywhere) and signalled[ch] (the eventfd counter is > 0).
 *
 * - A waiter locks, checks its condition and, when it must wait, counts itself in sleepers[ch]
 *   in the same critical section, unlocks and waits for the eventfd to become readable.
 * - Whoever changes the state, still locked, calls strand_shm_signal(should, kick): `should`
 *   is "some sleeper of this channel can proceed now". If so the eventfd is written (again on
 *   every such change, so that edge-triggered pollers see a new edge); if not and it was
 *   signalled, it is drained. All eventfd I/O happens under the mutex, so signalled[ch] is
 *   exact and the eventfd is readable exactly while should holds: no lost wake-up (the waiter
 *   counted itself before unlocking, the next change writes), no busy loop for a level-
 *   triggered poller (nothing stays readable that nobody can use), and with nobody asleep
 *   nothing is written: the uncontended path is a mutex round trip, no syscall (locks and
 *   semaphores even skip the mutex: see sync.c). Every state polling the eventfd wakes on a
 *   write, so a release wakes one task per waiting thread or process, not one in all: a
 *   bounded herd, which spinning before sleeping (below) mostly avoids.
 * - A woken waiter uncounts itself, re-checks and goes back to sleep if somebody else was
 *   faster. Conditions of one channel are homogeneous where possible (anyone may take a free
 *   lock); where sleepers wait for different things (an event's generations, a condition's
 *   notifications) the object tracks how many sleepers are entitled, and `should` is that.
 *
 * Inside one Lua state many tasks may wait on one channel, but a strand_io has one reader.
 * So each state keeps one waiter record per (object, channel) in a weak registry table: the
 * first task polls the eventfd through the record's strand_io, the others wait in the record's
 * strand_waitq. When the polling task leaves (woken, timed out, cancelled) it hands polling to
 * the next queued task; on a broadcast channel a wake-up makes every queued task of the state
 * look (they may be entitled while the poller is not). Every waiting task keeps the record on
 * its stack, so it lives while used; the record holds a reference to the object, so the fd it
 * watches stays open until the record is collected (which deregisters it first).
 *
 * A task that never comes back (its Lua state closed while it waited, its process killed)
 * stays counted: wakers then write for nobody, which costs a syscall, never a wrong answer. */

/* }==== */

#define NCLASS        40              /* arena blocks of 2^MINCLASS .. 2^(NCLASS-1) bytes */
#define MINCLASS      5
#define ARENA_INITIAL (64 * 1024)

struct strand_shm_head {
  pthread_mutex_t mu;
  uint32_t sleepers[STRAND_SHM_MAXCHAN];
  uint32_t signalled[STRAND_SHM_MAXCHAN];
  uint32_t changes;                   /* bumped by every kick: what spinning waiters watch */
  int32_t last_tid;                   /* the thread that locked last (any process) */
  int32_t shared;                     /* more than one thread has used it: worth spinning */
  uint64_t size;                      /* arena: bytes the memfd holds now */
  uint64_t top;                       /* arena: first byte never handed out */
  uint64_t freelist[NCLASS];          /* arena: free blocks per size class */
};

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

static size_t state_offset(void) { return round_up(sizeof(strand_shm_head), 64); }

/* {==== creation */

static int mutex_setup(pthread_mutex_t *mu) {
  pthread_mutexattr_t a;
  int err = pthread_mutexattr_init(&a);
  if (err) return err;
  if ((err = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED)) == 0 &&
      (err = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST)) == 0)
    err = pthread_mutex_init(mu, &a);
  pthread_mutexattr_destroy(&a);
  return err;
}

/* Give the memfd bytes [from, to): real pages now, so that running out of memory is an error
 * here rather than a SIGBUS when the page is first touched. */
static int extend(int fd, uint64_t from, uint64_t to) {
  for (;;) {
    if (fallocate(fd, 0, (off_t)from, (off_t)(to - from)) == 0) return 0;
    if (errno == EINTR) continue;
    if (errno != EOPNOTSUPP && errno != ENOSYS) return errno;
    if (ftruncate(fd, (off_t)to) == 0) return 0;   /* no fallocate: sparse, still correct */
    if (errno != EINTR) return errno;
  }
}

static void teardown(strand_shm *s) {
  for (int ch = 0; ch < STRAND_SHM_MAXCHAN; ch++)
    if (s->efd[ch] >= 0) { close(s->efd[ch]); s->efd[ch] = -1; }
  if (s->head) { munmap(s->head, s->maplen); s->head = NULL; }
  if (s->memfd >= 0) { close(s->memfd); s->memfd = -1; }
}

static int setup(strand_shm *s, const char *name, size_t statesize, int nchan, size_t reserve) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t base = state_offset() + statesize;
  void *p;
  if (reserve > 0) {
    /* The whole reserve is mapped once, so the region grows with fallocate alone and every
     * process (forks share the mapping and the memfd) sees the new size at once: nobody ever
     * remaps. Only pages below head->size are touched. */
    s->memfd = memfd_create(name, MFD_CLOEXEC);
    if (s->memfd < 0) return errno;
    s->maplen = round_up(reserve, page);
    p = mmap(NULL, s->maplen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, s->memfd, 0);
    if (p == MAP_FAILED) return errno;
    s->head = (strand_shm_head *)p;
    uint64_t init = round_up(base + ARENA_INITIAL, page);
    if (init > s->maplen) return EINVAL;
    int err = extend(s->memfd, 0, init);
    if (err) return err;
    s->head->size = init;
    s->head->top = round_up(base, 64);
  } else {
    s->maplen = round_up(base, page);
    p = mmap(NULL, s->maplen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return errno;
    s->head = (strand_shm_head *)p;
  }
  int err = mutex_setup(&s->head->mu);
  if (err) return err;
  for (int ch = 0; ch < nchan; ch++) {
    s->efd[ch] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->efd[ch] < 0) return errno;
  }
  s->nchan = nchan;
  s->state = (char *)s->head + state_offset();
  s->sleepers = s->head->sleepers;
  return 0;
}

strand_shm *strand_shm_new(lua_State *L, size_t objsize, const strand_objtype *t,
                           size_t statesize, int nchan, size_t reserve) {
  if (nchan > STRAND_SHM_MAXCHAN) luaL_error(L, "strand: %s: too many wait channels", t->name);
  strand_shm *s = (strand_shm *)calloc(1, objsize);
  if (s == NULL) luaL_error(L, "strand: cannot create a %s: out of memory", t->name);
  for (int attempt = 0;; attempt++) {
    s->memfd = -1;
    for (int ch = 0; ch < STRAND_SHM_MAXCHAN; ch++) s->efd[ch] = -1;
    int err = setup(s, t->name, statesize, nchan, reserve);
    if (err == 0) break;
    teardown(s);
    /* Unreachable objects still hold fds and mappings until collected: collect, then retry. */
    if (attempt == 0 && (err == EMFILE || err == ENFILE || err == ENOMEM)) {
      lua_gc(L, LUA_GCCOLLECT);
      continue;
    }
    free(s);
    luaL_error(L, "strand: cannot create a %s: %s", t->name,
               strand_errmsg(err) ? strand_errmsg(err) : strerror(err));
  }
  strand_object_init(&s->obj, t);
  return s;
}

/* Only this process's view goes: the region and the fds live on in the other processes. */
void strand_shm_free(strand_shm *s) {
  teardown(s);
  free(s);
}

/* }==== */

/* {==== boxes and metatables */

strand_shm *strand_shm_self(lua_State *L) {
  if (!lua_getmetatable(L, 1) || !lua_rawequal(L, -1, lua_upvalueindex(1))) {
    lua_getfield(L, lua_upvalueindex(1), "__name");
    luaL_typeerror(L, 1, lua_tostring(L, -1));
  }
  lua_pop(L, 1);
  strand_shm *s = *(strand_shm **)lua_touserdata(L, 1);   /* a box holds only the pointer */
  if (s == NULL) luaL_argerror(L, 1, "object is closed");
  return s;
}

/* two boxes of the same object are equal (each crossing makes a new box) */
static int box_eq(lua_State *L) {
  strand_object *a = strand_object_test(L, 1), *b = strand_object_test(L, 2);
  lua_pushboolean(L, a != NULL && a == b);
  return 1;
}

void strand_shm_newmeta(lua_State *L, const strand_objtype *t, const luaL_Reg *methods,
                        lua_CFunction close) {
  static const luaL_Reg metamethods[] = { {"__eq", box_eq}, {NULL, NULL} };
  strand_object_newmeta(L, t, NULL, metamethods);       /* mt */
  lua_newtable(L);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, methods, 1);                         /* mt methods */
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__index");
  if (close) {
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, close, 1);
    lua_setfield(L, -3, "__close");
  }
}

/* }==== */

/* {==== the mutex */

/* Critical sections are a few hundred instructions: spin on trylock (no syscall) for about as
 * long before sleeping in the kernel, as an adaptive mutex would (robust ones cannot be). */
#define SPIN_TRIES 100

int strand_shm_lock(strand_shm *s) {
  int err = EBUSY;
  for (int i = 0; i < SPIN_TRIES && err == EBUSY; i++) {
    err = pthread_mutex_trylock(&s->head->mu);
    if (err == EBUSY) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
  }
  if (err == EBUSY) err = pthread_mutex_lock(&s->head->mu);
  if (err == EOWNERDEAD) {
    /* A process died holding it. Its change may be half done; we carry on with what is there.
     * Whether each eventfd is readable is unknown now: make them all readable (every sleeper
     * looks once more) and signalled, and the next strand_shm_signal drains what is not due. */
    err = pthread_mutex_consistent(&s->head->mu);
    if (err) { pthread_mutex_unlock(&s->head->mu); return err; }
    for (int ch = 0; ch < s->nchan; ch++) {
      uint64_t one = 1;
      while (write(s->efd[ch], &one, sizeof one) < 0 && errno == EINTR) {}
      s->head->signalled[ch] = 1;
    }
  }
  if (err == 0) {
    int32_t tid = strand_shm_tid();
    if (s->head->last_tid != tid) {
      if (s->head->last_tid) s->head->shared = 1;
      s->head->last_tid = tid;
    }
  }
  return err;
}

void strand_shm_lockL(lua_State *L, strand_shm *s) {
  int err = strand_shm_lock(s);
  if (err) luaL_error(L, "strand: %s is unusable: %s", s->obj.type->name,
                      strand_errmsg(err) ? strand_errmsg(err) : strerror(err));
}

void strand_shm_unlock(strand_shm *s) {
  pthread_mutex_unlock(&s->head->mu);
}

/* }==== */

/* {==== who we are: cached ids, forgotten in a forked child */

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static int fork_hook;                   /* written once: the atfork handler is in place */
static atomic_int cached_pid;           /* the process's, shared by its threads */
/* each thread's own; initial-exec: a plain load, this one int fits the static TLS reserve */
static __thread int cached_tid __attribute__((tls_model("initial-exec")));

static void after_fork(void) {
  atomic_store_explicit(&cached_pid, 0, memory_order_relaxed);
  cached_tid = 0;
}

static void fork_init(void) { fork_hook = pthread_atfork(NULL, NULL, after_fork) == 0; }

int strand_shm_pid(void) {
  int pid = atomic_load_explicit(&cached_pid, memory_order_relaxed);
  if (pid) return pid;
  pthread_once(&fork_once, fork_init);
  pid = (int)getpid();
  if (fork_hook) atomic_store_explicit(&cached_pid, pid, memory_order_relaxed);
  return pid;
}

int strand_shm_tid(void) {
  if (cached_tid) return cached_tid;
  pthread_once(&fork_once, fork_init);
  int tid = (int)gettid();
  if (fork_hook) cached_tid = tid;
  return tid;
}

/* }==== */

/* {==== wake signals (locked) */

void strand_shm_signal(strand_shm *s, int ch, int should, int kick) {
  uint32_t *sig = &s->head->signalled[ch];
  if (kick) __atomic_add_fetch(&s->head->changes, 1, __ATOMIC_RELEASE);
  if (should) {
    if (kick || !*sig) {
      uint64_t one = 1;
      /* EAGAIN would mean the counter is near 2^64: readable anyway, which is all we want */
      while (write(s->efd[ch], &one, sizeof one) < 0 && errno == EINTR) {}
      *sig = 1;
    }
  } else if (*sig) {
    uint64_t v;
    /* counter mode: one read empties it; EAGAIN: already empty (after a recovery) */
    while (read(s->efd[ch], &v, sizeof v) < 0 && errno == EINTR) {}
    *sig = 0;
  }
}

/* {==== spinning before sleeping
 *
 * Between threads on different cores the state a waiter needs usually comes within
 * microseconds, while sleeping and being woken costs an eventfd write, a poll and a read. So a
 * waiter with nothing else to run first watches the object's change counter for a little
 * while (no lock; a sched_yield now and then), as adaptive mutexes do. Not on one CPU, and not
 * when other tasks of this loop are ready: they run instead. */

#define SPIN_SECONDS 30e-6

static long ncpu;                       /* written once (same value by any thread) */

uint32_t strand_shm_changes(strand_shm *s) {
  return __atomic_load_n(&s->head->changes, __ATOMIC_ACQUIRE);
}

void strand_shm_changed(strand_shm *s) {
  __atomic_add_fetch(&s->head->changes, 1, __ATOMIC_RELEASE);
}

int strand_shm_spin(lua_State *L, strand_shm *s, uint32_t seen) {
  if (__atomic_load_n(&ncpu, __ATOMIC_RELAXED) == 0)
    __atomic_store_n(&ncpu, sysconf(_SC_NPROCESSORS_ONLN), __ATOMIC_RELAXED);
  /* only one thread ever used it: whoever changes it runs in this loop, not meanwhile */
  if (!__atomic_load_n(&s->head->shared, __ATOMIC_RELAXED)) return 0;
  if (__atomic_load_n(&ncpu, __ATOMIC_RELAXED) < 2 || strand_loop_get(L)->nready > 0) return 0;
  double until = strand_now() + SPIN_SECONDS;
  for (;;) {
    for (int i = 0; i < 64; i++) {
      if (strand_shm_changes(s) != seen) return 1;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    if (strand_now() >= until) return 1;
    sched_yield();                      /* an overloaded machine may need this CPU for it */
  }
}

/* }==== */

/* {==== waiting through the loop */

#define WAITER_META "strand.shm.waiter"
static const char WAITERS_KEY = 'W';   /* registry[&WAITERS_KEY] = { [&efd[ch]] = waiter } (weak) */

typedef struct shm_waiter {
  strand_io io;                 /* the channel's eventfd as seen by this state's loop */
  strand_waitq q;               /* tasks of this state waiting while another one polls */
  strand_task *poller;          /* who polls io now, or NULL */
  strand_shm *obj;              /* a reference: keeps the fd open while io may be registered */
  int pid;                      /* the process whose loop io is registered with */
} shm_waiter;

static int waiter_gc(lua_State *L) {
  shm_waiter *w = (shm_waiter *)lua_touserdata(L, 1);
  if (w->obj) {
    strand_shm *s = w->obj;
    w->obj = NULL;
    strand_io_close(&w->io);                 /* leaves the poller before the fd can close */
    strand_object_release(&s->obj);
  }
  return 0;
}

static strand_task *self_task(lua_State *L) {
  strand_task *t = strand_task_of(L);
  return t ? t : &strand_loop_get(L)->main;
}

void strand_shm_prepare(lua_State *L, strand_shm *s, int ch) {
  strand_task *t = strand_task_of(L);
  if (t) {
    if (!lua_isyieldable(L))
      luaL_error(L, "strand: cannot block here: the task is inside a C call or metamethod "
                    "that cannot yield");
    if (t->cancel_pending) strand_resumed(L, LUA_YIELD);   /* raises the cancellation */
  } else if (strand_loop_get(L)->driver) {
    luaL_error(L, "strand: blocking call in a coroutine that strand does not own while the "
                  "loop runs (use strand.spawn instead of coroutine.create/wrap)");
  }
  luaL_checkstack(L, 4, NULL);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &WAITERS_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &WAITERS_KEY);
  }                                                    /* waiters */
  if (lua_rawgetp(L, -1, &s->efd[ch]) == LUA_TUSERDATA) {
    lua_remove(L, -2);
    shm_waiter *w = (shm_waiter *)lua_touserdata(L, -1);
    if (w->pid != strand_shm_pid()) {
      /* This state was forked: the registration (and any waiting task) is the parent's.
       * Start afresh without touching the poller, which may be the parent's too. */
      strand_io_init(&w->io, s->efd[ch]);
      w->q.head = w->q.tail = NULL;
      w->poller = NULL;
      w->pid = strand_shm_pid();
    }
    return;
  }
  lua_pop(L, 1);
  shm_waiter *w = (shm_waiter *)lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w);
  if (luaL_newmetatable(L, WAITER_META)) {
    lua_pushcfunction(L, waiter_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);                             /* waiters w */
  strand_io_init(&w->io, s->efd[ch]);
  strand_object_retain(&s->obj);
  w->obj = s;
  w->pid = strand_shm_pid();
  lua_pushvalue(L, -1);
  lua_rawsetp(L, -3, &s->efd[ch]);
  lua_remove(L, -2);                                   /* w */
}

int strand_shm_wait(lua_State *L, double deadline, lua_KContext ctx, lua_KFunction k) {
  shm_waiter *w = (shm_waiter *)lua_touserdata(L, -1);
  strand_task *me = self_task(L);
  /* a poller whose wait failed before it was registered never comes back to hand over */
  if (w->poller && w->poller != me && !w->io.registered) w->poller = NULL;
  if (w->poller == NULL || w->poller == me) {
    w->poller = me;
    return strand_wait_io(L, &w->io, STRAND_READ, deadline, ctx, k);
  }
  return strand_wait_queue(L, &w->q, deadline, ctx, k);
}

void strand_shm_leave(lua_State *L, int broadcast) {
  shm_waiter *w = (shm_waiter *)lua_touserdata(L, -1);
  strand_task *me = self_task(L);
  if (w->poller == me) {
    w->poller = NULL;
    if (broadcast && me->outcome == STRAND_READY) strand_waitq_wake_all(&w->q, STRAND_READY);
    else strand_waitq_wake_one(&w->q, STRAND_READY);
  } else if (w->poller == NULL) {
    strand_waitq_wake_one(&w->q, STRAND_READY);
  }
}

/* }==== */

/* {==== arena: power-of-two blocks with a free list per size, carved from the top */

static int size_class(size_t n) {
  int c = MINCLASS;
  while (c < NCLASS && ((uint64_t)1 << c) < n) c++;
  return c;
}

uint64_t strand_shm_alloc(strand_shm *s, size_t n) {
  strand_shm_head *h = s->head;
  if (s->memfd < 0 || n > ((size_t)1 << (NCLASS - 2))) { errno = ENOSPC; return 0; }
  int c = size_class(n + 8);                   /* 8 bytes of header: the class */
  uint64_t blk = h->freelist[c];
  if (blk != 0) {
    h->freelist[c] = *(uint64_t *)strand_shm_at(s, blk + 8);
  } else {
    uint64_t size = (uint64_t)1 << c;
    if (h->top + size > s->maplen) { errno = ENOSPC; return 0; }
    if (h->top + size > h->size) {
      uint64_t want = h->size * 2;
      while (want < h->top + size) want *= 2;
      if (want > s->maplen) want = s->maplen;
      int err = extend(s->memfd, h->size, want);
      if (err && want > h->top + size) {       /* a smaller step may still fit */
        want = round_up(h->top + size, (size_t)sysconf(_SC_PAGESIZE));
        err = extend(s->memfd, h->size, want);
      }
      if (err) { errno = err == EFBIG ? ENOSPC : err; return 0; }
      h->size = want;
    }
    blk = h->top;
    h->top += size;
  }
  *(uint64_t *)strand_shm_at(s, blk) = (uint64_t)c;
  return blk + 8;
}

void strand_shm_release(strand_shm *s, uint64_t off) {
  if (off == 0) return;
  strand_shm_head *h = s->head;
  uint64_t blk = off - 8;
  uint64_t c = *(uint64_t *)strand_shm_at(s, blk);
  if (c >= NCLASS) return;                     /* corrupt: leak rather than spread it */
  *(uint64_t *)strand_shm_at(s, off) = h->freelist[c];
  h->freelist[c] = blk;
}

/* }==== */
