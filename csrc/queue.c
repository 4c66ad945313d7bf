/* queue.c — FIFO, LIFO and priority queues for tasks, threads and forked processes: values are
 * serialized into the queue's shared arena (shm.c), waits go through the loop; strand.queue. */
#include "strand.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define Q_RESERVE ((size_t)1 << 29)   /* storage one queue may use by default: 512 MiB */
#define Q_MIN_STORAGE ((lua_Integer)1 << 18)
#define Q_MAX_STORAGE ((uint64_t)1 << 40)

enum { Q_FIFO, Q_LIFO, Q_PRIO };
enum { CH_GET, CH_PUT, CH_JOIN };     /* wait channels: getters, putters, joiners */

typedef struct q_item {
  double prio;            /* priority queues: lowest first */
  uint64_t seq;           /* insertion order: ties */
  uint64_t off, len;      /* the serialized value in the arena */
  int64_t pid;            /* the process that encoded it (its object references are its own) */
} q_item;

typedef struct q_state {
  int32_t kind, closed;
  int64_t maxsize;        /* 0: unbounded (up to the storage) */
  int64_t n;              /* items held */
  int64_t unfinished;     /* put and not yet task_done */
  uint64_t seq;
  uint64_t items;         /* arena offset of the item array: a ring (FIFO), a stack (LIFO) or a
                             binary heap (priority) */
  uint64_t cap, first;    /* slots; FIFO: the oldest slot */
} q_state;

static void q_destroy(strand_object *o);
static const strand_objtype queue_type = { "strand.queue", q_destroy };

#define q_state_of(s) ((q_state *)(s)->state)
#define q_items(s, st) ((q_item *)strand_shm_at(s, (st)->items))
#define box_obj(L) (*(strand_shm **)lua_touserdata(L, 1))

/* {==== the item array (locked) */

static int q_less(const q_item *a, const q_item *b) {
  return a->prio < b->prio || (a->prio == b->prio && a->seq < b->seq);
}

/* Make room for one more item: 0 or an errno. */
static int q_reserve(strand_shm *s, q_state *st) {
  if ((uint64_t)st->n < st->cap) return 0;
  uint64_t cap = st->cap ? st->cap * 2 : 16;
  uint64_t off = strand_shm_alloc(s, cap * sizeof(q_item));
  if (off == 0) return errno;
  q_item *to = (q_item *)strand_shm_at(s, off);
  if (st->cap) {
    q_item *from = q_items(s, st);
    for (int64_t i = 0; i < st->n; i++)      /* unwrap the ring: first becomes 0 */
      to[i] = from[st->kind == Q_FIFO ? (st->first + (uint64_t)i) % st->cap : (uint64_t)i];
    strand_shm_release(s, st->items);
  }
  st->items = off;
  st->cap = cap;
  st->first = 0;
  return 0;
}

static void q_push(strand_shm *s, q_state *st, const q_item *it) {
  q_item *a = q_items(s, st);
  uint64_t i = (uint64_t)st->n;
  if (st->kind == Q_FIFO) {
    a[(st->first + i) % st->cap] = *it;
  } else if (st->kind == Q_LIFO) {
    a[i] = *it;
  } else {
    while (i > 0 && q_less(it, &a[(i - 1) / 2])) {
      a[i] = a[(i - 1) / 2];
      i = (i - 1) / 2;
    }
    a[i] = *it;
  }
  st->n++;
}

static q_item *q_peek(strand_shm *s, q_state *st) {
  q_item *a = q_items(s, st);
  if (st->kind == Q_FIFO) return &a[st->first];
  if (st->kind == Q_LIFO) return &a[st->n - 1];
  return &a[0];
}

static void q_pop(strand_shm *s, q_state *st) {
  q_item *a = q_items(s, st);
  uint64_t n = (uint64_t)--st->n;
  if (st->kind == Q_FIFO) {
    st->first = (st->first + 1) % st->cap;
  } else if (st->kind == Q_PRIO && n > 0) {
    q_item last = a[n];
    uint64_t i = 0;
    for (;;) {
      uint64_t c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && q_less(&a[c + 1], &a[c])) c++;
      if (!q_less(&a[c], &last)) break;
      a[i] = a[c];
      i = c;
    }
    a[i] = last;
  }
}

/* Locked, after any change; kick: bit 1 << channel for the channels it may have woken. */
static void q_settle(strand_shm *s, int kick) {
  q_state *st = q_state_of(s);
  uint32_t *sl = s->sleepers;
  strand_shm_signal(s, CH_GET, sl[CH_GET] > 0 && (st->n > 0 || st->closed), kick & 1);
  strand_shm_signal(s, CH_PUT, sl[CH_PUT] > 0 &&
                    (st->maxsize == 0 || st->n < st->maxsize || st->closed), kick & 2);
  strand_shm_signal(s, CH_JOIN, sl[CH_JOIN] > 0 && (st->unfinished == 0 || st->closed), kick & 4);
}

static void q_leave(lua_State *L, strand_shm *s, int ch) {
  strand_shm_lockL(L, s);
  s->sleepers[ch]--;
  q_settle(s, 0);
  strand_shm_unlock(s);
  strand_shm_leave(L, 0);
}

/* }==== */

/* {==== put */

/* While a put waits, its encoded value (which holds references to the strand objects in it)
 * is owned by a guard: if the task is cancelled or dropped, collecting the guard releases them. */
#define GUARD_META "strand.queue.guard"

static int guard_gc(lua_State *L) {
  int *armed = (int *)lua_touserdata(L, 1);
  if (*armed) {
    *armed = 0;
    size_t len;
    lua_getiuservalue(L, 1, 1);
    const char *p = lua_tolstring(L, -1, &len);
    if (p) strand_serial_release(p, len);
  }
  return 0;
}

/* The value was not put: its references go (now, or by the guard's hand). */
static void payload_drop(lua_State *L, int release) {
  if (lua_type(L, 5) == LUA_TUSERDATA) *(int *)lua_touserdata(L, 5) = 0;
  if (release) {
    size_t len;
    const char *p = lua_tolstring(L, 2, &len);
    strand_serial_release(p, len);
  }
}

/* put: stack 1 self, 2 encoded value, 3 deadline, 4 priority, 5 guard|nil, [6 waiter];
 * ctx: 1 for put_nowait */
static int q_put_k(lua_State *L, int status, lua_KContext nowait) {
  strand_shm *s = box_obj(L);
  q_state *st = q_state_of(s);
  int outcome = STRAND_READY;
  if (status == LUA_YIELD) {
    q_leave(L, s, CH_PUT);
    outcome = strand_resumed(L, status);
  }
  size_t len;
  const char *p = lua_tolstring(L, 2, &len);
  double deadline = lua_tonumber(L, 3);
  q_item it = { lua_tonumber(L, 4), 0, 0, len, strand_shm_pid() };
  int spun = 0;
  for (;;) {
    strand_shm_lockL(L, s);
    if (st->closed) {
      strand_shm_unlock(s);
      payload_drop(L, 1);
      return strand_fail_msg(L, "closed", NULL);
    }
    if (st->maxsize == 0 || st->n < st->maxsize) {
      int err = q_reserve(s, st);
      if (err == 0 && (it.off = strand_shm_alloc(s, len ? len : 1)) == 0) err = errno;
      if (err) {
        strand_shm_unlock(s);
        payload_drop(L, 1);
        if (err == ENOSPC) return strand_fail_msg(L, "queue storage full", "ENOSPC");
        return strand_fail(L, err);
      }
      memcpy(strand_shm_at(s, it.off), p, len);
      it.seq = st->seq++;
      q_push(s, st, &it);
      st->unfinished++;
      q_settle(s, 1);
      strand_shm_unlock(s);
      payload_drop(L, 0);                       /* the queue holds the references now */
      lua_pushboolean(L, 1);
      return 1;
    }
    if (nowait || outcome == STRAND_TIMEOUT || deadline <= strand_now()) {
      strand_shm_unlock(s);
      payload_drop(L, 1);
      return strand_fail_msg(L, nowait ? "full" : "timeout", NULL);
    }
    if (lua_gettop(L) < 6) {                    /* first wait: guard the value, get a waiter */
      strand_shm_unlock(s);
      int *armed = (int *)lua_newuserdatauv(L, sizeof(int), 1);
      *armed = 0;
      if (luaL_newmetatable(L, GUARD_META)) {
        lua_pushcfunction(L, guard_gc);
        lua_setfield(L, -2, "__gc");
      }
      lua_setmetatable(L, -2);
      lua_pushvalue(L, 2);
      lua_setiuservalue(L, -2, 1);
      *armed = 1;
      lua_replace(L, 5);
      strand_shm_prepare(L, s, CH_PUT);
      continue;
    }
    if (!spun) {                                /* first, a few microseconds of watching */
      uint32_t seen = strand_shm_changes(s);
      strand_shm_unlock(s);
      spun = 1;
      strand_shm_spin(L, s, seen);
      continue;
    }
    s->sleepers[CH_PUT]++;
    strand_shm_unlock(s);
    outcome = strand_shm_wait(L, deadline, nowait, q_put_k);
    q_leave(L, s, CH_PUT);
    spun = 0;
  }
}

static int q_put_start(lua_State *L, int nowait) {
  strand_shm *s = strand_shm_self(L);
  q_state *st = q_state_of(s);
  luaL_checkany(L, 2);
  if (lua_isnil(L, 2)) luaL_argerror(L, 2, "cannot put nil into a queue");
  double prio = 0, deadline;
  int targ = 3;
  if (st->kind == Q_PRIO) {
    prio = luaL_checknumber(L, 3);
    luaL_argcheck(L, prio == prio, 3, "priority is NaN");
    targ = 4;
  }
  deadline = nowait ? 0 : strand_opt_deadline(L, targ);
  lua_settop(L, 2);
  strand_serial_encode(L, 2, 1, STRAND_SERIAL_FUNCTIONS);   /* raises on what cannot cross */
  lua_replace(L, 2);
  lua_pushnumber(L, deadline);
  lua_pushnumber(L, prio);
  lua_pushnil(L);
  return q_put_k(L, LUA_OK, nowait);
}

static int q_put(lua_State *L) { return q_put_start(L, 0); }
static int q_put_nowait(lua_State *L) { return q_put_start(L, 1); }

/* }==== */

/* {==== get and join */

/* get: stack 1 self, 2 deadline, [3 waiter]; ctx: 1 for get_nowait */
static int q_get_k(lua_State *L, int status, lua_KContext nowait) {
  strand_shm *s = box_obj(L);
  q_state *st = q_state_of(s);
  int outcome = STRAND_READY;
  if (status == LUA_YIELD) {
    q_leave(L, s, CH_GET);
    outcome = strand_resumed(L, status);
  }
  double deadline = lua_tonumber(L, 2);
  char *scratch = strand_loop_scratch(strand_loop_get(L));
  int spun = 0;
  for (;;) {
    strand_shm_lockL(L, s);
    if (st->n > 0) {
      q_item it = *q_peek(s, st);
      char *buf = it.len <= STRAND_SCRATCH ? scratch : (char *)malloc(it.len);
      if (buf == NULL) {
        strand_shm_unlock(s);
        return strand_fail(L, ENOMEM);
      }
      memcpy(buf, strand_shm_at(s, it.off), it.len);
      q_pop(s, st);
      strand_shm_release(s, it.off);
      q_settle(s, 2);
      strand_shm_unlock(s);
      /* our own encoding: the value takes its references over; another process's: the
       * references it holds are that process's, ours are taken afresh */
      int mine = it.pid == strand_shm_pid();
      int n = strand_serial_decode(L, buf, it.len,
                                   STRAND_SERIAL_FUNCTIONS | (mine ? 0 : STRAND_SERIAL_NOADOPT));
      if (n < 0 && mine) strand_serial_release(buf, it.len);
      if (buf != scratch) free(buf);
      if (n < 0) {
        lua_pushfstring(L, "bad queue item: %s", lua_tostring(L, -1));
        return strand_fail_msg(L, lua_tostring(L, -1), "EINVAL");
      }
      return n;
    }
    if (st->closed) {
      strand_shm_unlock(s);
      return strand_fail_msg(L, "closed", NULL);
    }
    if (nowait || outcome == STRAND_TIMEOUT || deadline <= strand_now()) {
      strand_shm_unlock(s);
      return strand_fail_msg(L, nowait ? "empty" : "timeout", NULL);
    }
    if (lua_gettop(L) < 3) {
      strand_shm_unlock(s);
      strand_shm_prepare(L, s, CH_GET);
      continue;
    }
    if (!spun) {                                /* first, a few microseconds of watching */
      uint32_t seen = strand_shm_changes(s);
      strand_shm_unlock(s);
      spun = 1;
      strand_shm_spin(L, s, seen);
      continue;
    }
    s->sleepers[CH_GET]++;
    strand_shm_unlock(s);
    outcome = strand_shm_wait(L, deadline, nowait, q_get_k);
    q_leave(L, s, CH_GET);
    spun = 0;
  }
}

static int q_get_start(lua_State *L, int nowait) {
  strand_shm_self(L);
  double deadline = nowait ? 0 : strand_opt_deadline(L, 2);
  lua_settop(L, 1);
  lua_pushnumber(L, deadline);
  return q_get_k(L, LUA_OK, nowait);
}

static int q_get(lua_State *L) { return q_get_start(L, 0); }
static int q_get_nowait(lua_State *L) { return q_get_start(L, 1); }

/* join([timeout]): stack 1 self, 2 deadline, [3 waiter] */
static int q_join_k(lua_State *L, int status, lua_KContext ctx) {
  strand_shm *s = box_obj(L);
  q_state *st = q_state_of(s);
  int outcome = STRAND_READY;
  if (status == LUA_YIELD) {
    q_leave(L, s, CH_JOIN);
    outcome = strand_resumed(L, status);
  }
  double deadline = lua_tonumber(L, 2);
  for (;;) {
    strand_shm_lockL(L, s);
    if (st->unfinished == 0) {
      strand_shm_unlock(s);
      lua_pushboolean(L, 1);
      return 1;
    }
    if (st->closed || outcome == STRAND_TIMEOUT || deadline <= strand_now()) {
      int closed = st->closed;
      strand_shm_unlock(s);
      return strand_fail_msg(L, closed ? "closed" : "timeout", NULL);
    }
    if (lua_gettop(L) < 3) {
      strand_shm_unlock(s);
      strand_shm_prepare(L, s, CH_JOIN);
      continue;
    }
    s->sleepers[CH_JOIN]++;
    strand_shm_unlock(s);
    outcome = strand_shm_wait(L, deadline, ctx, q_join_k);
    q_leave(L, s, CH_JOIN);
  }
}

static int q_join(lua_State *L) {
  strand_shm_self(L);
  double deadline = strand_opt_deadline(L, 2);
  lua_settop(L, 1);
  lua_pushnumber(L, deadline);
  return q_join_k(L, LUA_OK, 0);
}

static int q_task_done(lua_State *L) {
  strand_shm *s = strand_shm_self(L);
  q_state *st = q_state_of(s);
  strand_shm_lockL(L, s);
  int ok = st->unfinished > 0;
  if (ok && --st->unfinished == 0) q_settle(s, 4);
  strand_shm_unlock(s);
  if (!ok) return luaL_error(L, "task_done() called too many times");
  return 0;
}

/* }==== */

/* {==== the rest */

/* close(): every waiter returns nil, "closed"; items already in are still delivered */
static int q_close(lua_State *L) {
  strand_shm *s = strand_shm_self(L);
  q_state *st = q_state_of(s);
  strand_shm_lockL(L, s);
  if (!st->closed) {
    st->closed = 1;
    q_settle(s, 7);
  }
  strand_shm_unlock(s);
  return 0;
}

static int q_field(lua_State *L, int which) {
  strand_shm *s = strand_shm_self(L);
  q_state *st = q_state_of(s);
  strand_shm_lockL(L, s);
  int64_t n = st->n, max = st->maxsize;
  int closed = st->closed;
  strand_shm_unlock(s);
  switch (which) {
    case 0: lua_pushinteger(L, (lua_Integer)n); break;
    case 1: lua_pushboolean(L, n == 0); break;
    case 2: lua_pushboolean(L, max > 0 && n >= max); break;
    case 3: lua_pushinteger(L, (lua_Integer)max); break;
    default: lua_pushboolean(L, closed); break;
  }
  return 1;
}

static int q_qsize(lua_State *L) { return q_field(L, 0); }
static int q_empty(lua_State *L) { return q_field(L, 1); }
static int q_full(lua_State *L) { return q_field(L, 2); }
static int q_maxsize(lua_State *L) { return q_field(L, 3); }
static int q_closed(lua_State *L) { return q_field(L, 4); }

static int q_len(lua_State *L) { return q_field(L, 0); }

/* The last reference in this process: items this process put and nobody took hold references
 * to its strand objects; drop them (other processes keep theirs, and the region). Locking here
 * is safe: the mutex is never held while Lua runs, so no collection happens under it. */
static void q_destroy(strand_object *o) {
  strand_shm *s = (strand_shm *)o;
  q_state *st = q_state_of(s);
  int pid = strand_shm_pid();
  if (strand_shm_lock(s) == 0) {
    q_item *a = st->cap ? q_items(s, st) : NULL;
    for (int64_t i = 0; i < st->n; i++) {
      q_item *it = &a[st->kind == Q_FIFO ? (st->first + (uint64_t)i) % st->cap : (uint64_t)i];
      if (it->pid == pid) strand_serial_release((const char *)strand_shm_at(s, it->off), it->len);
    }
    strand_shm_unlock(s);
  }
  strand_shm_free(s);
}

/* new([maxsize [, {storage = bytes}]]): storage bounds the shared memory the items may use */
static int q_new(lua_State *L, int kind) {
  lua_Integer max = luaL_optinteger(L, 1, 0);
  luaL_argcheck(L, max >= 0, 1, "maxsize must be >= 0 (0: unbounded)");
  size_t reserve = Q_RESERVE;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_getfield(L, 2, "storage") != LUA_TNIL) {
      lua_Integer n = lua_tointeger(L, -1);
      luaL_argcheck(L, n >= Q_MIN_STORAGE && (uint64_t)n <= Q_MAX_STORAGE, 2,
                    "storage must be an integer from 262144 to 2^40 bytes");
      reserve = (size_t)n;
    }
    lua_pop(L, 1);
  }
  strand_shm *s = strand_shm_new(L, sizeof(strand_shm), &queue_type, sizeof(q_state), 3,
                                 reserve);
  q_state *st = q_state_of(s);
  st->kind = kind;
  st->maxsize = max;
  strand_object_push(L, &s->obj);
  return 1;
}

static int l_new(lua_State *L) { return q_new(L, Q_FIFO); }
static int l_lifo(lua_State *L) { return q_new(L, Q_LIFO); }
static int l_priority(lua_State *L) { return q_new(L, Q_PRIO); }

int strand_open_queue(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"put", q_put}, {"get", q_get}, {"put_nowait", q_put_nowait}, {"get_nowait", q_get_nowait},
    {"qsize", q_qsize}, {"empty", q_empty}, {"full", q_full}, {"maxsize", q_maxsize},
    {"task_done", q_task_done}, {"join", q_join}, {"close", q_close}, {"closed", q_closed},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"new", l_new}, {"lifo", l_lifo}, {"priority", l_priority}, {NULL, NULL}
  };
  strand_shm_newmeta(L, &queue_type, methods, NULL);   /* mt methods */
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, q_len, 1);
  lua_setfield(L, -3, "__len");
  lua_pop(L, 2);
  luaL_newlib(L, funcs);
  return 1;
}

/* }==== */
