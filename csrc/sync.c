/* sync.c — locks, rlocks, semaphores, events, conditions and barriers, shared by the tasks,
 * threads and forked processes that hold them (state and waits in shm.c); strand.sync. */
#include "strand.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

/* {==== who is asking: an rlock owner is (kernel thread id, task id; 0 = not in a task) */

typedef struct owner { int tid; lua_Integer task; } owner;

static owner who(lua_State *L) {
  owner o;
  strand_task *t = strand_task_of(L);
  o.tid = strand_shm_tid();
  o.task = t ? t->id : 0;
  return o;
}

static int cancelling(lua_State *L) {
  strand_task *t = strand_task_of(L);
  return t && t->cancel_pending;
}

/* }==== */

/* {==== types and boxes */

enum { K_LOCK, K_RLOCK, K_SEM };

typedef struct lk_state {
  int64_t value;          /* lock: 1 free, -(owner process's identity) held; semaphore: the count */
  int64_t limit;          /* bounded semaphore: the most value may be; else -1 */
  int64_t depth;          /* rlock: recursion depth, 0 = free */
  int64_t owner_task;     /* rlock owner */
  int64_t owner_proc;     /* rlock: the owner's process (strand_owner_self), 0 = free */
  int32_t owner_tid;
} lk_state;

typedef struct ev_state { int64_t flag, old; uint64_t gen; } ev_state;
/* old: sleepers entitled to wake (they slept through a set) */

typedef struct cv_state {
  int64_t waiting, permits;
  uint64_t epoch;
  uint64_t lock_off;      /* its lock's head (arena offset): another process's view finds it */
  int32_t lock_rlock;     /* the lock is an rlock */
} cv_state;
/* waiting: waiters not granted yet; permits: granted, not yet claimed; a waiter may claim only
 * after a notify that came after it started (epoch changed), so a newcomer never takes the
 * place of a waiter that was notified */

#define BR_RING 256
typedef struct br_state {
  int64_t parties, count, broken, old;
  uint64_t gen;
  uint8_t reset[BR_RING / 8];   /* bit g % BR_RING: generation g ended by reset(), not filled */
} br_state;

typedef struct cv_obj { strand_shm shm; strand_shm *lock; } cv_obj;

static void plain_destroy(strand_object *o) { strand_shm_free((strand_shm *)o); }
static void cv_destroy(strand_object *o) {
  cv_obj *c = (cv_obj *)o;
  strand_shm *lock = c->lock;
  strand_shm_free(&c->shm);
  strand_object_release(&lock->obj);
}

static const strand_objtype lock_type = { "strand.lock", plain_destroy };
static const strand_objtype rlock_type = { "strand.rlock", plain_destroy };
static const strand_objtype sem_type = { "strand.semaphore", plain_destroy };
static const strand_objtype event_type = { "strand.event", plain_destroy };
static const strand_objtype cond_type = { "strand.condition", cv_destroy };
static const strand_objtype barrier_type = { "strand.barrier", plain_destroy };

/* in continuations: index 1 was checked on entry */
#define box_obj(L) (*(strand_shm **)lua_touserdata(L, 1))

/* locks and conditions share the lock methods: a condition's are its lock's */
static strand_shm *lock_of(strand_shm *s) {
  return s->obj.type == &cond_type ? ((cv_obj *)s)->lock : s;
}

static int lk_kind(strand_shm *s) {
  return s->obj.type == &rlock_type ? K_RLOCK : s->obj.type == &sem_type ? K_SEM : K_LOCK;
}

/* }==== */

/* {==== locks, rlocks, semaphores (channel 0: acquirers, all alike)
 *
 * A lock's or semaphore's count changes by atomic compare-and-swap, so the uncontended acquire
 * and release never take the mutex. Sleepers are still counted under it, and both sides use
 * sequentially consistent operations: a waiter counts itself, then tries the count once more; a
 * releaser raises the count, then looks at the sleepers. One of the two always sees the other,
 * so a release never misses a waiter that is about to sleep. An rlock's owner and depth change
 * under the mutex. */

#define A_LOAD(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)

static int lk_free(lk_state *st, int kind) {
  return kind == K_RLOCK ? st->depth == 0 : A_LOAD(&st->value) > 0;
}

static void lk_settle(strand_shm *s, int kick) {
  lk_state *st = (lk_state *)strand_shm_state(s);
  strand_shm_signal(s, 0, A_LOAD(&strand_shm_sleepers(s, 0)) > 0 && lk_free(st, lk_kind(s)), kick);
}

/* A plain lock goes from 1 to -(this process's identity): one compare-and-swap, and a waiter
 * elsewhere can tell when its holder's process has died. */
static int lk_trytake(lk_state *st, int kind) {
  int64_t v = A_LOAD(&st->value);
  if (kind == K_LOCK) {
    v = 1;
    return __atomic_compare_exchange_n(&st->value, &v, -strand_owner_self(), 0, __ATOMIC_SEQ_CST,
                                       __ATOMIC_SEQ_CST);
  }
  while (v > 0)
    if (__atomic_compare_exchange_n(&st->value, &v, v - 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
      return 1;
  return 0;
}

/* Locked, the lock not free: the process holding it, 0 if unknown (a semaphore has no owner). */
static int64_t lk_holder(lk_state *st, int kind) {
  if (kind == K_RLOCK) return st->depth > 0 ? st->owner_proc : 0;
  if (kind == K_LOCK) { int64_t v = A_LOAD(&st->value); return v < 0 ? -v : 0; }
  return 0;
}

/* Locked, lk_take failed: if the process holding the lock has ended (SIGKILL, _exit), take it
 * over for me as lk_take would (1), else 0. Reads /proc: only on the slow path. */
static int lk_recover(lk_state *st, int kind, owner me, lua_KContext restore) {
  int64_t h = lk_holder(st, kind);
  if (h == 0 || strand_owner_pid(h) == strand_shm_pid() || !strand_owner_dead(h)) return 0;
  if (kind == K_LOCK) {
    int64_t v = -h;
    return __atomic_compare_exchange_n(&st->value, &v, -strand_owner_self(), 0, __ATOMIC_SEQ_CST,
                                       __ATOMIC_SEQ_CST);
  }
  st->owner_tid = me.tid;
  st->owner_task = me.task;
  st->owner_proc = strand_owner_self();
  st->depth = restore > 0 ? (int64_t)restore : 1;
  return 1;
}

/* restore > 0: an rlock taken back by a condition wait gets that depth */
static int lk_take(lk_state *st, int kind, owner me, lua_KContext restore) {
  if (kind != K_RLOCK) return lk_trytake(st, kind);
  if (st->depth == 0) {
    st->owner_tid = me.tid;
    st->owner_task = me.task;
    st->owner_proc = strand_owner_self();
    st->depth = restore > 0 ? (int64_t)restore : 1;
    return 1;
  }
  if (st->owner_tid == me.tid && st->owner_task == me.task) { st->depth++; return 1; }
  return 0;
}

static int lk_owned(lk_state *st, int kind, owner me) {
  if (kind == K_RLOCK) return st->depth > 0 && st->owner_tid == me.tid && st->owner_task == me.task;
  return A_LOAD(&st->value) <= 0;     /* held is enough: a plain lock may be released by anyone */
}

static void lk_leave(lua_State *L, strand_shm *s) {
  strand_shm_lockL(L, s);
  __atomic_sub_fetch(&strand_shm_sleepers(s, 0), 1, __ATOMIC_SEQ_CST);
  lk_settle(s, 0);
  strand_shm_unlock(s);
  strand_shm_leave(L, 0);
}

/* A waiter whose lock is held by another process looks at that process every LK_SLICE seconds
 * (and before it gives up): a holder that died is taken over. */
#define LK_SLICE 0.05
#define LK_CAPPED ((lua_KContext)1 << 40)     /* ctx: the wait was cut to a slice */

static int lk_got(lua_State *L, int recovered) {
  lua_pushvalue(L, 1);
  if (!recovered) return 1;
  lua_pushliteral(L, "owner died");
  return 2;
}

/* acquire([timeout]) -> self [, "owner died"] | nil, "timeout". Stack: 1 self, 2 deadline,
 * [3 waiter]. ctx: an rlock's depth to restore (a condition's wait), | LK_CAPPED. */
static int lk_acquire_k(lua_State *L, int status, lua_KContext ctx) {
  strand_shm *s = lock_of(box_obj(L));
  lk_state *st = (lk_state *)strand_shm_state(s);
  int kind = lk_kind(s);
  double deadline = lua_tonumber(L, 2);
  int outcome = STRAND_READY;
  int capped = (ctx & LK_CAPPED) != 0;
  lua_KContext restore = ctx & (LK_CAPPED - 1);
  owner me = { 0, 0 };
  if (status == LUA_YIELD) {
    lk_leave(L, s);
    outcome = strand_resumed(L, status);
  }
  if (kind == K_RLOCK) me = who(L);
  int spun = 0;
  for (;;) {
    strand_shm_lockL(L, s);
    if (lk_take(st, kind, me, restore)) {
      lk_settle(s, 0);
      strand_shm_unlock(s);
      return lk_got(L, 0);
    }
    int expired = (outcome == STRAND_TIMEOUT && !capped) || deadline <= strand_now();
    if ((expired || (outcome == STRAND_TIMEOUT && capped)) && lk_recover(st, kind, me, restore)) {
      lk_settle(s, 1);
      strand_shm_unlock(s);
      return lk_got(L, 1);
    }
    if (expired) {
      strand_shm_unlock(s);
      return strand_fail_msg(L, "timeout", NULL);
    }
    outcome = STRAND_READY;
    if (lua_gettop(L) < 3) {                    /* first wait: get the waiter, then re-check */
      strand_shm_unlock(s);
      strand_shm_prepare(L, s, 0);
      continue;
    }
    if (!spun) {                                /* first, a few microseconds of watching */
      uint32_t seen = strand_shm_changes(s);
      strand_shm_unlock(s);
      spun = 1;
      strand_shm_spin(L, s, seen);
      continue;
    }
    __atomic_add_fetch(&strand_shm_sleepers(s, 0), 1, __ATOMIC_SEQ_CST);
    if (kind != K_RLOCK && lk_trytake(st, kind)) {   /* released meanwhile, without the mutex */
      __atomic_sub_fetch(&strand_shm_sleepers(s, 0), 1, __ATOMIC_SEQ_CST);
      lk_settle(s, 0);
      strand_shm_unlock(s);
      return lk_got(L, 0);
    }
    int64_t h = lk_holder(st, kind);
    strand_shm_unlock(s);
    double until = deadline;
    capped = 0;
    if (h != 0 && strand_owner_pid(h) != strand_shm_pid()) {   /* held elsewhere: look again */
      double slice = strand_now() + LK_SLICE;
      if (slice < until) { until = slice; capped = 1; }
    }
    outcome = strand_shm_wait(L, until, restore | (capped ? LK_CAPPED : 0), lk_acquire_k);
    lk_leave(L, s);
    spun = 0;
  }
}

static int lk_acquire(lua_State *L) {
  strand_shm *s = lock_of(strand_shm_self(L));
  double deadline = strand_opt_deadline(L, 2);
  int kind = lk_kind(s);
  if (kind != K_RLOCK && lk_trytake((lk_state *)strand_shm_state(s), kind)) {   /* uncontended: no mutex */
    if (A_LOAD(&strand_shm_sleepers(s, 0)) > 0) {          /* took what a sleeper was signalled for */
      strand_shm_lockL(L, s);
      lk_settle(s, 0);
      strand_shm_unlock(s);
    }
    lua_settop(L, 1);
    return 1;
  }
  lua_settop(L, 1);
  lua_pushnumber(L, deadline);
  return lk_acquire_k(L, LUA_OK, 0);
}

/* A lock or semaphore was given back without the mutex: wake a sleeper if there is one. */
static void lk_released(lua_State *L, strand_shm *s) {
  strand_shm_changed(s);
  if (A_LOAD(&strand_shm_sleepers(s, 0)) > 0) {
    strand_shm_lockL(L, s);
    lk_settle(s, 1);
    strand_shm_unlock(s);
  }
}

static int lk_release(lua_State *L) {
  strand_shm *s = lock_of(strand_shm_self(L));
  lk_state *st = (lk_state *)strand_shm_state(s);
  int kind = lk_kind(s);
  if (kind == K_LOCK) {             /* anyone may release it (as Python's Lock) */
    int64_t held = A_LOAD(&st->value);
    do {
      if (held > 0) return luaL_error(L, "cannot release un-acquired lock");
    } while (!__atomic_compare_exchange_n(&st->value, &held, 1, 0, __ATOMIC_SEQ_CST,
                                          __ATOMIC_SEQ_CST));
    lk_released(L, s);
    return 0;
  }
  if (kind == K_SEM) {
    lua_Integer n = luaL_optinteger(L, 2, 1);
    luaL_argcheck(L, n >= 1, 2, "count must be >= 1");
    int64_t v = A_LOAD(&st->value);
    do {
      if (n > INT64_MAX - v) return luaL_error(L, "semaphore value overflow");
      if (st->limit >= 0 && v + n > st->limit)
        return luaL_error(L, "semaphore released too many times");
    } while (!__atomic_compare_exchange_n(&st->value, &v, v + n, 0, __ATOMIC_SEQ_CST,
                                          __ATOMIC_SEQ_CST));
    lk_released(L, s);
    return 0;
  }
  owner me = who(L);
  strand_shm_lockL(L, s);
  int ok = lk_owned(st, kind, me);
  if (ok && --st->depth == 0) {
    st->owner_tid = 0;
    st->owner_task = 0;
    st->owner_proc = 0;
    lk_settle(s, 1);
  }
  strand_shm_unlock(s);
  if (!ok) return luaL_error(L, "cannot release un-acquired lock");
  return 0;
}

/* __close(self, err): release, whatever the second argument is */
static int lk_close(lua_State *L) {
  lua_settop(L, 1);
  return lk_release(L);
}

static int lk_locked(lua_State *L) {
  strand_shm *s = lock_of(strand_shm_self(L));
  lk_state *st = (lk_state *)strand_shm_state(s);
  strand_shm_lockL(L, s);
  int r = !lk_free(st, lk_kind(s));
  strand_shm_unlock(s);
  lua_pushboolean(L, r);
  return 1;
}

/* NULL with errno when out of memory */
static strand_shm *lk_new(lua_State *L, const strand_objtype *t, int64_t value, int64_t limit) {
  strand_shm *s = strand_shm_new(L, sizeof(strand_shm), t, sizeof(lk_state), 1, 0);
  if (s == NULL) return NULL;
  lk_state *st = (lk_state *)strand_shm_state(s);
  st->value = value;
  st->limit = limit;
  return s;
}

static int push_new(lua_State *L, strand_shm *s, const strand_objtype *t) {
  if (s == NULL) return strand_shm_fail(L, t, errno);
  strand_object_push(L, &s->obj);
  return 1;
}

static int l_lock(lua_State *L) { return push_new(L, lk_new(L, &lock_type, 1, -1), &lock_type); }
static int l_rlock(lua_State *L) { return push_new(L, lk_new(L, &rlock_type, 0, -1), &rlock_type); }

static int sem_new(lua_State *L, int bounded) {
  lua_Integer n = luaL_optinteger(L, 1, 1);
  luaL_argcheck(L, n >= 0, 1, "initial value must be >= 0");
  return push_new(L, lk_new(L, &sem_type, n, bounded ? n : -1), &sem_type);
}

static int l_semaphore(lua_State *L) { return sem_new(L, 0); }
static int l_bounded_semaphore(lua_State *L) { return sem_new(L, 1); }

/* }==== */

/* {==== events (channel 0: waiters; a set wakes those asleep at the time, even if it is
 * cleared before they run: they compare generations) */

static void ev_leave(lua_State *L, strand_shm *s, uint64_t mygen) {
  ev_state *st = (ev_state *)strand_shm_state(s);
  strand_shm_lockL(L, s);
  strand_shm_sleepers(s, 0)--;
  if (st->gen != mygen && st->old > 0) st->old--;
  strand_shm_signal(s, 0, st->old > 0, 0);
  strand_shm_unlock(s);
  strand_shm_leave(L, 1);
}

/* wait([timeout]) -> true | false. Stack: 1 self, 2 deadline, 3 generation, [4 waiter]. */
static int ev_wait_k(lua_State *L, int status, lua_KContext ctx) {
  strand_shm *s = box_obj(L);
  ev_state *st = (ev_state *)strand_shm_state(s);
  double deadline = lua_tonumber(L, 2);
  uint64_t mygen = (uint64_t)lua_tointeger(L, 3);
  int outcome = STRAND_READY;
  if (status == LUA_YIELD) {
    ev_leave(L, s, mygen);
    outcome = strand_resumed(L, status);
  }
  for (;;) {
    strand_shm_lockL(L, s);
    int done = st->flag || st->gen != mygen;
    if (done || outcome == STRAND_TIMEOUT || deadline <= strand_now()) {
      strand_shm_unlock(s);
      lua_pushboolean(L, done);
      return 1;
    }
    if (lua_gettop(L) < 4) {
      strand_shm_unlock(s);
      strand_shm_prepare(L, s, 0);
      continue;
    }
    strand_shm_sleepers(s, 0)++;
    strand_shm_unlock(s);
    outcome = strand_shm_wait(L, deadline, ctx, ev_wait_k);
    ev_leave(L, s, mygen);
  }
}

static int ev_wait(lua_State *L) {
  strand_shm *s = strand_shm_self(L);
  ev_state *st = (ev_state *)strand_shm_state(s);
  double deadline = strand_opt_deadline(L, 2);
  strand_shm_lockL(L, s);
  int flag = (int)st->flag;
  uint64_t gen = st->gen;
  strand_shm_unlock(s);
  if (flag) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_settop(L, 1);
  lua_pushnumber(L, deadline);
  lua_pushinteger(L, (lua_Integer)gen);
  return ev_wait_k(L, LUA_OK, 0);
}

static int ev_set(lua_State *L) {
  strand_shm *s = strand_shm_self(L);
  ev_state *st = (ev_state *)strand_shm_state(s);
  strand_shm_lockL(L, s);
  st->flag = 1;
  st->gen++;
  st->old = strand_shm_sleepers(s, 0);                     /* every sleeper now is entitled */
  strand_shm_signal(s, 0, st->old > 0, 1);
  strand_shm_unlock(s);
  return 0;
}

static int ev_clear(lua_State *L) {
  strand_shm *s = strand_shm_self(L);
  strand_shm_lockL(L, s);
  ((ev_state *)strand_shm_state(s))->flag = 0;
  strand_shm_unlock(s);
  return 0;
}

static int ev_is_set(lua_State *L) {
  strand_shm *s = strand_shm_self(L);
  strand_shm_lockL(L, s);
  int r = (int)((ev_state *)strand_shm_state(s))->flag;
  strand_shm_unlock(s);
  lua_pushboolean(L, r);
  return 1;
}

static int l_event(lua_State *L) {
  return push_new(L, strand_shm_new(L, sizeof(strand_shm), &event_type, sizeof(ev_state), 1, 0),
                  &event_type);
}

/* }==== */

/* {==== conditions: the Lua layer (below) composes wait from these three primitives:
 * begin (enter the waiters, release the lock), grant (wait for a notify), finish (leave the
 * waiters if grant did not complete, take the lock back). */

static void cv_settle(strand_shm *s, int kick) {
  cv_state *st = (cv_state *)strand_shm_state(s);
  strand_shm_signal(s, 0, strand_shm_sleepers(s, 0) > 0 && st->permits > 0, kick);
}

static void cv_check_owned(lua_State *L, strand_shm *lock, const char *what) {
  owner me = who(L);
  strand_shm_lockL(L, lock);
  int ok = lk_owned((lk_state *)strand_shm_state(lock), lk_kind(lock), me);
  strand_shm_unlock(lock);
  if (!ok) luaL_error(L, "cannot %s un-acquired lock", what);
}

/* begin: unless the caller does not hold the lock (0), enter the waiters and release the lock,
 * giving the epoch and the depth to restore */
static int cv_begin(lua_State *L, strand_shm *s, lua_Integer *epoch_out, lua_Integer *saved_out) {
  strand_shm *lock = ((cv_obj *)s)->lock;
  cv_state *st = (cv_state *)strand_shm_state(s);
  lk_state *lst = (lk_state *)strand_shm_state(lock);
  owner me = who(L);
  strand_shm_lockL(L, lock);
  int held = lk_owned(lst, lk_kind(lock), me);
  strand_shm_unlock(lock);
  if (!held) return 0;
  strand_shm_lockL(L, s);
  st->waiting++;
  uint64_t epoch = st->epoch;
  strand_shm_unlock(s);
  strand_shm_lockL(L, lock);
  int64_t saved = 1;
  if (lk_kind(lock) == K_RLOCK) {
    saved = lst->depth;
    lst->depth = 0;
    lst->owner_tid = 0;
    lst->owner_task = 0;
    lst->owner_proc = 0;
  } else {
    __atomic_store_n(&lst->value, 1, __ATOMIC_SEQ_CST);
  }
  lk_settle(lock, 1);
  strand_shm_unlock(lock);
  *epoch_out = (lua_Integer)epoch;
  *saved_out = (lua_Integer)saved;
  return 1;
}

static void cv_leave(lua_State *L, strand_shm *s) {
  strand_shm_lockL(L, s);
  strand_shm_sleepers(s, 0)--;
  cv_settle(s, 0);
  strand_shm_unlock(s);
  strand_shm_leave(L, 1);
}

/* _wait_grant(cond, epoch, timeout) -> true (notified) | false (timeout). Raises only while
 * still counted among the waiters. Stack: 1 self, 2 epoch, 3 deadline, [4 waiter]. */
/* With s locked: when the waiter of epoch e0 got a permit, timed out or passed its deadline, take
 * the permit (or leave the waiters), settle, unlock and push whether it was granted: 1.
 * Otherwise 0, s still locked. */
static int cv_over(lua_State *L, strand_shm *s, cv_state *st, uint64_t e0, int outcome,
                   double deadline) {
  int granted = st->epoch != e0 && st->permits > 0;
  if (!granted && outcome != STRAND_TIMEOUT && deadline > strand_now()) return 0;
  if (granted) st->permits--;
  else st->waiting--;
  cv_settle(s, 0);
  strand_shm_unlock(s);
  lua_pushboolean(L, granted);
  return 1;
}

static int cv_grant_k(lua_State *L, int status, lua_KContext ctx) {
  strand_shm *s = box_obj(L);
  cv_state *st = (cv_state *)strand_shm_state(s);
  uint64_t e0 = (uint64_t)lua_tointeger(L, 2);
  double deadline = lua_tonumber(L, 3);
  int outcome = STRAND_READY;
  if (status == LUA_YIELD) {
    cv_leave(L, s);
    outcome = strand_resumed(L, status);
  }
  for (;;) {
    strand_shm_lockL(L, s);
    if (cv_over(L, s, st, e0, outcome, deadline)) return 1;
    if (lua_gettop(L) < 4) {
      strand_shm_unlock(s);
      strand_shm_prepare(L, s, 0);
      continue;
    }
    strand_shm_sleepers(s, 0)++;
    strand_shm_unlock(s);
    outcome = strand_shm_wait(L, deadline, ctx, cv_grant_k);
    cv_leave(L, s);
  }
}

static int cv_grant(lua_State *L) {
  strand_shm_self(L);
  luaL_checkinteger(L, 2);
  double deadline = strand_opt_deadline(L, 3);
  lua_settop(L, 2);
  lua_pushnumber(L, deadline);
  return cv_grant_k(L, LUA_OK, 0);
}

/* _wait_end(cond, saved, epoch, abandoned): leave the waiters if grant raised, take the lock
 * back (an rlock at its saved depth) */
static int cv_end(lua_State *L) {
  strand_shm *s = strand_shm_self(L);
  cv_state *st = (cv_state *)strand_shm_state(s);
  lua_Integer saved = luaL_checkinteger(L, 2);
  uint64_t e0 = (uint64_t)luaL_checkinteger(L, 3);
  if (lua_toboolean(L, 4)) {
    strand_shm_lockL(L, s);
    if (st->epoch != e0 && st->permits > 0) st->permits--;
    else if (st->waiting > 0) st->waiting--;
    cv_settle(s, 0);
    strand_shm_unlock(s);
  }
  lua_settop(L, 1);
  lua_pushnumber(L, STRAND_FOREVER);
  return lk_acquire_k(L, LUA_OK, (lua_KContext)(saved > 0 ? saved : 1));
}

/* wait(timeout) -> true (notified) | false (timeout), in C: begin, grant, then finish
 * (always, taking the lock back), then grant's result or its error. Upvalues: 1 the
 * metatable, 2 grant, 3 finish, 4 the level at which misuse is reported (1: the caller;
 * 2: wait_for's caller).
 *
 * In a task, the grant wait runs in wait's own frame (cv_wait_k), so a waiting task holds one
 * C frame, as an event's waiter does: everything that can raise before the wait (misuse, a
 * task that cannot yield or is cancelled already, out of memory for the waiter) happens before
 * begin, and what the wake-up raises (a cancellation) is caught by a protected call made only
 * then. Stack: 1 self, 2 deadline, 3 epoch, 4 saved depth, 5 waiter, 6 result or error.
 * Elsewhere (the main program, a coroutine strand does not own) grant runs under lua_pcallk,
 * as a function of its own (cv_pwait_k). Stack: 1 self, 2 timeout, 3 epoch, 4 saved depth,
 * 5 grant's result or error. */

/* finish (the lock back), then the value at the top: grant's result (ok) or its error;
 * k continues after a finish that waited, with ctx 1 (ok) or 2 */
static int cv_finish(lua_State *L, int ok, lua_KFunction k) {
  int top = lua_gettop(L);                         /* the result or the error */
  lua_pushvalue(L, lua_upvalueindex(3));
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 4);
  lua_pushvalue(L, 3);
  lua_pushboolean(L, !ok);
  lua_callk(L, 4, 0, ok ? 1 : 2, k);
  lua_settop(L, top);
  if (!ok) return lua_error(L);                    /* grant's error, as it was */
  return 1;
}

static int cv_pwait_k(lua_State *L, int status, lua_KContext ctx) {
  if (ctx == 0) return cv_finish(L, status == LUA_OK || status == LUA_YIELD, cv_pwait_k);
  lua_settop(L, 5);                                /* back from a finish that waited */
  if (ctx == 2) return lua_error(L);
  return 1;
}

static int cv_resumed(lua_State *L) {              /* protected: raises a cancellation */
  lua_pushinteger(L, strand_resumed(L, LUA_YIELD));
  return 1;
}

static int cv_wait_k(lua_State *L, int status, lua_KContext ctx) {
  if (ctx != 0) {                                  /* back from a finish that waited */
    lua_settop(L, 6);
    if (ctx == 2) return lua_error(L);
    return 1;
  }
  strand_shm *s = box_obj(L);
  cv_state *st = (cv_state *)strand_shm_state(s);
  uint64_t e0 = (uint64_t)lua_tointeger(L, 3);
  double deadline = lua_tonumber(L, 2);
  int outcome = STRAND_READY;
  if (status == LUA_YIELD) {
    cv_leave(L, s);
    lua_pushcfunction(L, cv_resumed);
    if (lua_pcall(L, 0, 1, 0) != LUA_OK) return cv_finish(L, 0, cv_wait_k);
    outcome = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  for (;;) {
    strand_shm_lockL(L, s);
    if (cv_over(L, s, st, e0, outcome, deadline)) return cv_finish(L, 1, cv_wait_k);
    strand_shm_sleepers(s, 0)++;
    strand_shm_unlock(s);
    outcome = strand_shm_wait(L, deadline, 0, cv_wait_k);   /* in a task: yields */
    cv_leave(L, s);
  }
}

static int cv_misuse(lua_State *L, const char *msg) {
  luaL_where(L, (int)lua_tointeger(L, lua_upvalueindex(4)));
  lua_pushstring(L, msg);
  lua_concat(L, 2);
  return lua_error(L);
}

static int cv_wait(lua_State *L) {
  strand_shm *s = strand_shm_self(L);
  int tt = lua_type(L, 2);
  if (tt > LUA_TNIL && (tt != LUA_TNUMBER || !(lua_tonumber(L, 2) >= 0)))
    return cv_misuse(L, "bad argument #1 to 'wait' (timeout must be a number >= 0 or nil)");
  lua_settop(L, 2);
  lua_Integer epoch, saved;
  if (strand_task_of(L) != NULL) {                 /* in a task: the wait in this frame */
    strand_shm *lock = ((cv_obj *)s)->lock;
    strand_shm_lockL(L, lock);
    int held = lk_owned((lk_state *)strand_shm_state(lock), lk_kind(lock), who(L));
    strand_shm_unlock(lock);
    if (!held) return cv_misuse(L, "cannot wait on un-acquired lock");
    lua_pushnumber(L, strand_opt_deadline(L, 2));
    lua_replace(L, 2);
    strand_shm_prepare(L, s, 0);                   /* raises here, before begin, if it must */
    if (!cv_begin(L, s, &epoch, &saved)) return cv_misuse(L, "cannot wait on un-acquired lock");
    lua_pushinteger(L, epoch);
    lua_pushinteger(L, saved);
    lua_rotate(L, 3, -1);                          /* the waiter on top */
    return cv_wait_k(L, LUA_OK, 0);
  }
  if (!cv_begin(L, s, &epoch, &saved)) return cv_misuse(L, "cannot wait on un-acquired lock");
  lua_pushinteger(L, epoch);
  lua_pushinteger(L, saved);
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 3);
  lua_pushvalue(L, 2);
  return cv_pwait_k(L, lua_pcallk(L, 3, 1, 0, 0, cv_pwait_k), 0);
}

static int cv_notify_n(lua_State *L, lua_Integer n) {
  strand_shm *s = strand_shm_self(L);
  cv_state *st = (cv_state *)strand_shm_state(s);
  cv_check_owned(L, ((cv_obj *)s)->lock, "notify on");
  strand_shm_lockL(L, s);
  int64_t g = n < st->waiting ? (int64_t)n : st->waiting;
  if (g > 0) {
    st->waiting -= g;
    st->permits += g;
    st->epoch++;
    cv_settle(s, 1);
  }
  strand_shm_unlock(s);
  return 0;
}

static int cv_notify(lua_State *L) {
  lua_Integer n = luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, n >= 0, 2, "count must be >= 0");
  return cv_notify_n(L, n);
}

static int cv_notify_all(lua_State *L) { return cv_notify_n(L, LUA_MAXINTEGER); }

static int l_condition(lua_State *L) {
  strand_shm *lock;
  if (lua_isnoneornil(L, 1)) {
    lock = lk_new(L, &rlock_type, 0, -1);
    if (lock == NULL) return strand_shm_fail(L, &cond_type, errno);
  } else {
    strand_object *o = strand_object_test(L, 1);
    if (o == NULL || (o->type != &lock_type && o->type != &rlock_type))
      return luaL_typeerror(L, 1, "strand.lock or strand.rlock");
    lock = (strand_shm *)o;
    strand_object_retain(o);
  }
  cv_obj *c = (cv_obj *)strand_shm_new(L, sizeof(cv_obj), &cond_type, sizeof(cv_state), 1, 0);
  if (c == NULL) {
    int err = errno;
    strand_object_release(&lock->obj);
    return strand_shm_fail(L, &cond_type, err);
  }
  c->lock = lock;
  cv_state *cst = (cv_state *)strand_shm_state(&c->shm);
  cst->lock_off = strand_shm_offset(&lock->obj);
  cst->lock_rlock = lock->obj.type == &rlock_type;
  strand_object_push(L, &c->shm.obj);
  return 1;
}

/* }==== */

/* {==== barriers (channel 0: parties waiting for their generation to fill, break or reset) */

#define RESET_BIT(st, g) ((st)->reset[((g) % BR_RING) / 8] & (1u << ((g) % 8)))

static void br_break(strand_shm *s) {
  br_state *st = (br_state *)strand_shm_state(s);
  st->broken = 1;
  st->old = strand_shm_sleepers(s, 0);
  strand_shm_signal(s, 0, st->old > 0, 1);
}

static void br_leave(lua_State *L, strand_shm *s, uint64_t mygen, int cancel) {
  br_state *st = (br_state *)strand_shm_state(s);
  strand_shm_lockL(L, s);
  strand_shm_sleepers(s, 0)--;
  int entitled = st->gen != mygen || st->broken;
  if (entitled && st->old > 0) st->old--;
  if (cancel && !entitled) br_break(s);         /* like an exception in Python's wait */
  else strand_shm_signal(s, 0, st->old > 0, 0);
  strand_shm_unlock(s);
  strand_shm_leave(L, 1);
}

/* Stack: 1 self, 2 deadline, 3 generation, 4 arrival index, 5 waiter. */
static int br_wait_k(lua_State *L, int status, lua_KContext ctx) {
  strand_shm *s = box_obj(L);
  br_state *st = (br_state *)strand_shm_state(s);
  double deadline = lua_tonumber(L, 2);
  uint64_t mygen = (uint64_t)lua_tointeger(L, 3);
  int outcome = STRAND_READY;
  if (status == LUA_YIELD) {
    br_leave(L, s, mygen, cancelling(L));
    outcome = strand_resumed(L, status);
  }
  for (;;) {
    strand_shm_lockL(L, s);
    if (st->gen != mygen) {
      int reset = RESET_BIT(st, mygen) != 0;
      strand_shm_unlock(s);
      if (reset) return strand_fail_msg(L, "broken", NULL);
      lua_pushinteger(L, lua_tointeger(L, 4));
      return 1;
    }
    if (st->broken) {
      strand_shm_unlock(s);
      return strand_fail_msg(L, "broken", NULL);
    }
    if (outcome == STRAND_TIMEOUT || deadline <= strand_now()) {
      br_break(s);
      strand_shm_unlock(s);
      return strand_fail_msg(L, "timeout", NULL);
    }
    strand_shm_sleepers(s, 0)++;
    strand_shm_unlock(s);
    outcome = strand_shm_wait(L, deadline, ctx, br_wait_k);
    br_leave(L, s, mygen, 0);
  }
}

/* wait([timeout]) -> index (1..parties, in order of arrival) | nil, "broken" | nil, "timeout" */
static int br_wait(lua_State *L) {
  strand_shm *s = strand_shm_self(L);
  br_state *st = (br_state *)strand_shm_state(s);
  double deadline = strand_opt_deadline(L, 2);
  lua_settop(L, 1);
  lua_pushnumber(L, deadline);
  lua_pushinteger(L, 0);
  lua_pushinteger(L, 0);
  strand_shm_prepare(L, s, 0);                  /* before arriving: it may raise */
  strand_shm_lockL(L, s);
  if (st->broken) {
    strand_shm_unlock(s);
    return strand_fail_msg(L, "broken", NULL);
  }
  int64_t idx = st->count++;
  uint64_t gen = st->gen;
  if (st->count == st->parties) {               /* the last one lets the generation go */
    st->reset[(gen % BR_RING) / 8] &= (uint8_t)~(1u << (gen % 8));
    st->count = 0;
    st->gen++;
    st->old = strand_shm_sleepers(s, 0);
    strand_shm_signal(s, 0, st->old > 0, 1);
    strand_shm_unlock(s);
    lua_pushinteger(L, (lua_Integer)idx + 1);
    return 1;
  }
  strand_shm_unlock(s);
  lua_pushinteger(L, (lua_Integer)gen);
  lua_replace(L, 3);
  lua_pushinteger(L, (lua_Integer)idx + 1);
  lua_replace(L, 4);
  return br_wait_k(L, LUA_OK, 0);
}

static int br_abort(lua_State *L) {
  strand_shm *s = strand_shm_self(L);
  strand_shm_lockL(L, s);
  br_break(s);
  strand_shm_unlock(s);
  return 0;
}

/* reset(): parties waiting now get nil, "broken"; the barrier is whole and empty again */
static int br_reset(lua_State *L) {
  strand_shm *s = strand_shm_self(L);
  br_state *st = (br_state *)strand_shm_state(s);
  strand_shm_lockL(L, s);
  if (st->count > 0 || st->broken) {
    st->reset[(st->gen % BR_RING) / 8] |= (uint8_t)(1u << (st->gen % 8));
    st->gen++;
    st->count = 0;
    st->broken = 0;
    st->old = strand_shm_sleepers(s, 0);
    strand_shm_signal(s, 0, st->old > 0, 1);
  }
  strand_shm_unlock(s);
  return 0;
}

static int br_field(lua_State *L, int which) {
  strand_shm *s = strand_shm_self(L);
  br_state *st = (br_state *)strand_shm_state(s);
  strand_shm_lockL(L, s);
  int64_t v = which == 0 ? st->parties : which == 1 ? st->count : st->broken;
  strand_shm_unlock(s);
  if (which == 2) lua_pushboolean(L, v != 0);
  else lua_pushinteger(L, (lua_Integer)v);
  return 1;
}

static int br_parties(lua_State *L) { return br_field(L, 0); }
static int br_n_waiting(lua_State *L) { return br_field(L, 1); }
static int br_broken(lua_State *L) { return br_field(L, 2); }

static int l_barrier(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 1, 1, "parties must be >= 1");
  strand_shm *s = strand_shm_new(L, sizeof(strand_shm), &barrier_type, sizeof(br_state), 1, 0);
  if (s == NULL) return strand_shm_fail(L, &barrier_type, errno);
  ((br_state *)strand_shm_state(s))->parties = n;
  strand_object_push(L, &s->obj);
  return 1;
}

/* }==== */

/* {==== strand.sync */

/* with(fn, ...) on every lock kind, and a condition's wait/wait_for, in Lua: pcall is
 * yieldable there, so fn and the waits may block; the lock is released on error too. */
static const char sync_lua[] =
  "local lockm, rlockm, semm, condm, cwait, now = ...\n"
  "local pack, unpack, pcall, error, type, getmetatable = "
  "  table.pack, table.unpack, pcall, error, type, getmetatable\n"
  "local function callable(f)\n"
  "  if type(f) == 'function' then return true end\n"
  "  local mt = getmetatable(f)\n"
  "  return type(mt) == 'table' and mt.__call ~= nil\n"
  "end\n"
  "local function with(self, fn, ...)\n"
  "  if not callable(fn) then\n"
  "    error(\"bad argument #1 to 'with' (function expected, got \" .. type(fn) .. ')', 2)\n"
  "  end\n"
  "  self:acquire()\n"
  "  local r = pack(pcall(fn, ...))\n"
  "  self:release()\n"
  "  if not r[1] then error(r[2], 0) end\n"
  "  return unpack(r, 2, r.n)\n"
  "end\n"
  "lockm.with, rlockm.with, semm.with, condm.with = with, with, with, with\n"
  "local function check_timeout(t, fname)\n"
  "  if t ~= nil and (type(t) ~= 'number' or t < 0 or t ~= t) then\n"
  "    error(\"bad argument #\" .. (fname == 'wait' and 1 or 2) .. \" to '\" .. fname .. \"' \"\n"
  "          .. '(timeout must be a number >= 0 or nil)', 3)\n"
  "  end\n"
  "end\n"
  "function condm.wait_for(self, pred, timeout)\n"
  "  if not callable(pred) then\n"
  "    error(\"bad argument #1 to 'wait_for' (function expected, got \" .. type(pred) .. ')', 2)\n"
  "  end\n"
  "  check_timeout(timeout, 'wait_for')\n"
  "  local deadline = timeout and now() + timeout\n"
  "  local r = pred()\n"
  "  while not r do\n"
  "    local left\n"
  "    if deadline then\n"
  "      left = deadline - now()\n"
  "      if left <= 0 then break end\n"
  "    end\n"
  "    cwait(self, left)\n"
  "    r = pred()\n"
  "  end\n"
  "  return r\n"
  "end\n";

static int l_now(lua_State *L) {
  lua_pushnumber(L, strand_now());
  return 1;
}

static const luaL_Reg lock_methods[] = {
  {"acquire", lk_acquire}, {"release", lk_release}, {"locked", lk_locked}, {NULL, NULL}
};
static const luaL_Reg event_methods[] = {
  {"set", ev_set}, {"clear", ev_clear}, {"is_set", ev_is_set}, {"wait", ev_wait}, {NULL, NULL}
};
static const luaL_Reg cond_methods[] = {
  {"acquire", lk_acquire}, {"release", lk_release}, {"locked", lk_locked},
  {"notify", cv_notify}, {"notify_all", cv_notify_all}, {NULL, NULL}
};
static const luaL_Reg barrier_methods[] = {
  {"wait", br_wait}, {"abort", br_abort}, {"reset", br_reset}, {"parties", br_parties},
  {"n_waiting", br_n_waiting}, {"broken", br_broken}, {NULL, NULL}
};

/* a condition found by offset in another process: its lock, too */
static int cv_view(strand_shm *s) {
  cv_state *st = (cv_state *)strand_shm_state(s);
  strand_object *lock = strand_shm_view(st->lock_off, st->lock_rlock ? &rlock_type : &lock_type);
  if (lock == NULL) return ENOMEM;
  ((cv_obj *)s)->lock = (strand_shm *)lock;
  return 0;
}

int strand_open_sync(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"lock", l_lock}, {"rlock", l_rlock}, {"semaphore", l_semaphore},
    {"bounded_semaphore", l_bounded_semaphore}, {"event", l_event},
    {"condition", l_condition}, {"barrier", l_barrier}, {NULL, NULL}
  };
  int top = lua_gettop(L);
  strand_shm_type(&lock_type, sizeof(strand_shm), NULL);
  strand_shm_type(&rlock_type, sizeof(strand_shm), NULL);
  strand_shm_type(&sem_type, sizeof(strand_shm), NULL);
  strand_shm_type(&event_type, sizeof(strand_shm), NULL);
  strand_shm_type(&barrier_type, sizeof(strand_shm), NULL);
  strand_shm_type(&cond_type, sizeof(cv_obj), cv_view);
  if (strand_load_chunk(L, sync_lua, sizeof sync_lua - 1, "=strand.sync") != LUA_OK)
    lua_error(L);                                       /* chunk */
  strand_shm_newmeta(L, &lock_type, lock_methods, lk_close);       /* chunk mt idx */
  lua_replace(L, -2);                                   /* chunk lockm */
  strand_shm_newmeta(L, &rlock_type, lock_methods, lk_close);
  lua_replace(L, -2);
  strand_shm_newmeta(L, &sem_type, lock_methods, lk_close);
  lua_replace(L, -2);
  strand_shm_newmeta(L, &cond_type, cond_methods, lk_close);       /* chunk l r s condmt condm */
  for (int level = 1; level <= 2; level++) {           /* condm.wait; wait_for's */
    lua_pushvalue(L, -1 - level);                       /* condmt */
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, cv_grant, 1);
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, cv_end, 1);
    lua_pushinteger(L, level);
    lua_pushcclosure(L, cv_wait, 4);
  }                                                     /* ... condmt condm wait cwait */
  lua_rotate(L, -2, 1);
  lua_setfield(L, -3, "wait");                          /* ... condmt condm cwait */
  lua_remove(L, -3);                                    /* chunk l r s condm cwait */
  lua_pushcfunction(L, l_now);
  lua_call(L, 6, 0);
  strand_shm_newmeta(L, &event_type, event_methods, NULL);
  strand_shm_newmeta(L, &barrier_type, barrier_methods, NULL);
  lua_settop(L, top);
  luaL_newlib(L, funcs);
  return 1;
}

/* }==== */
