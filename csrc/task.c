/* task.c — the Lua face of tasks: spawn, sleep, now, current, run, join/result/cancel/status,
 * cancellation errors, cancel-after timers (strand.timeout) and loop-local notifiers. */
#include "strand.h"

#include <stdio.h>
#include <string.h>

/* registry[&TASK_MT_KEY]: the task metatable, found without its name (luaL_checkudata looks
 * the name up: a strcmp through Lua's string cache, and in a forked child's first join a libc
 * code page and a read-only page of core.so faulted in for it) */
static const char TASK_MT_KEY = 'T';
static const char TASK_METHODS_KEY = 'M';       /* registry: the task methods table (tm_index) */

static strand_task *check_task(lua_State *L, int idx) {
  void *p = lua_touserdata(L, idx);
  if (p != NULL && lua_getmetatable(L, idx)) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &TASK_MT_KEY);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (same) return (strand_task *)p;
  }
  return (strand_task *)luaL_checkudata(L, idx, STRAND_TASK_META);   /* raises, or a state
                                                                         that never opened it */
}

/* {==== cancellation errors */

static int cancelled_tostring(lua_State *L) {
  lua_getfield(L, 1, "reason");
  if (lua_isnil(L, -1)) lua_pushliteral(L, "cancelled");
  else lua_pushfstring(L, "cancelled: %s", luaL_tolstring(L, -1, NULL));
  return 1;
}

void strand_push_cancelled(lua_State *L, int reason_idx) {
  reason_idx = lua_absindex(L, reason_idx);
  int has_reason = !lua_isnoneornil(L, reason_idx);   /* before pushing: "none" may become it */
  lua_createtable(L, 0, 1);
  if (has_reason) {
    lua_pushvalue(L, reason_idx);
    lua_setfield(L, -2, "reason");
  }
  if (luaL_newmetatable(L, STRAND_CANCELLED_META)) {
    lua_pushcfunction(L, cancelled_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_setmetatable(L, -2);
}

int strand_is_cancelled(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx)) return 0;
  luaL_getmetatable(L, STRAND_CANCELLED_META);
  int r = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return r;
}

static int l_is_cancelled(lua_State *L) {
  lua_pushboolean(L, strand_is_cancelled(L, 1));
  return 1;
}

/* }==== */

/* {==== module functions */

static int l_spawn(lua_State *L) {
  if (lua_type(L, 1) != LUA_TFUNCTION) luaL_checktype(L, 1, LUA_TFUNCTION);   /* raises */
  strand_task_spawn(L, lua_gettop(L) - 1);
  return 1;
}

static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  strand_resumed(L, status);
  return 0;
}

static int l_sleep(lua_State *L) {
  double deadline;
  int isnum;
  lua_Integer i = lua_tointegerx(L, 1, &isnum);      /* sleep(0): an integer, no conversion */
  lua_Number s = isnum ? (lua_Number)i : lua_tonumberx(L, 1, &isnum);
  if (isnum && s == 0) deadline = 0;                 /* (luaL_checknumber's result, sooner) */
  else if (!isnum && lua_isnoneornil(L, 1)) deadline = 0;
  else {
    s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s >= 0 && s == s, 1, "seconds must be >= 0");
    deadline = s == 0 ? 0 : strand_now() + s;
  }
  int outcome = strand_wait_timer(L, deadline, 0, sleep_k);
  (void)outcome;
  return 0;
}

/* strand.sleep_until(t): sleep until strand.now() >= t (drift-free periodic work). */
static int l_sleep_until(lua_State *L) {
  lua_Number t = luaL_checknumber(L, 1);
  luaL_argcheck(L, t == t, 1, "time must be a number");
  strand_wait_timer(L, t, 0, sleep_k);
  return 0;
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, strand_now());
  return 1;
}

static int l_current(lua_State *L) {
  strand_task *t = strand_task_of(L);
  if (t == NULL) lua_pushnil(L);
  else strand_push_task(L, t);
  return 1;
}

/* Results of a finished task: true, ... | false, err (join) or ... | raise (result). */
static int push_finished(lua_State *L, strand_task *t, int raise) {
  t->observed = 1;
  if (t->status == STRAND_T_DONE) {
    int n = lua_gettop(t->co);                   /* the results: all of its stack */
    luaL_checkstack(L, n + 1, "too many results");
    if (!raise) lua_pushboolean(L, 1);
    if (!lua_checkstack(t->co, n)) luaL_error(L, "too many results");
    for (int i = 1; i <= n; i++) lua_pushvalue(t->co, i);
    lua_xmove(t->co, L, n);
    return n + (raise ? 0 : 1);
  }
  if (raise && t->status == STRAND_T_CANCELLED) {
    lua_pushliteral(L, "cancelled");             /* exactly, so that err == "cancelled" works */
    return lua_error(L);
  }
  if (!raise) lua_pushboolean(L, 0);
  lua_pushvalue(t->co, 1);                       /* the error: alone on the dead stack */
  lua_xmove(t->co, L, 1);
  if (raise) return lua_error(L);
  return 2;
}

/* Drive until no task is left (or `first`, strand.run's own task, has failed). Ctrl-C (see loop.c): as asyncio.run, cancel every task with the
 * reason "interrupted" and let them finish (their <close> variables and handlers run; a second
 * Ctrl-C kills the process as usual), then return 0: the caller returns, and lua.c's pending
 * hook raises "interrupted!" at that return. No Lua code may run on this thread meanwhile. */
static int run_drain(lua_State *L, strand_task *first) {
  if (strand_drain_run(L, STRAND_FOREVER, first)) return 1;
  lua_pushliteral(L, "interrupted");
  strand_cancel_all(L, -1);
  lua_pop(L, 1);
  strand_drain_uninterrupted(L);
  return 0;
}

static int l_run(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    run_drain(L, NULL);
    return 0;
  }
  luaL_checktype(L, 1, LUA_TFUNCTION);
  strand_task *t = strand_task_spawn(L, lua_gettop(L) - 1);
  lua_insert(L, 1);
  lua_settop(L, 1);
  if (!run_drain(L, t)) return 0;
  if (t->status > STRAND_T_DONE && t->loop->ntasks > t->loop->nbackground) {
    /* fn failed while other tasks run on (a server's acceptor, a relay): as asyncio.run, cancel
     * them and let them clean up, then raise fn's error rather than wait for them for ever */
    lua_pushnil(L);                              /* a plain cancellation, no reason */
    strand_cancel_all(L, -1);
    lua_pop(L, 1);
    strand_drain_uninterrupted(L);
  }
  return push_finished(L, t, 1);
}

/* }==== */

/* {==== task methods */

static int join_k(lua_State *L, int status, lua_KContext raise) {
  int outcome = strand_resumed(L, status);
  strand_task *t = check_task(L, 1);
  double deadline = lua_tonumber(L, 2);
  for (;;) {
    if (t->status >= STRAND_T_DONE) return push_finished(L, t, (int)raise);
    /* (no clock read without a deadline: in a forked child's first join, the vDSO's page
     * and clock_gettime's are faulted in for it) */
    if (outcome == STRAND_TIMEOUT || (deadline != STRAND_FOREVER && deadline <= strand_now())) {
      if (raise && strand_interrupted(L)) return 0;  /* the Ctrl-C hook raises at return */
      if (raise) { lua_pushliteral(L, "timeout"); return lua_error(L); }   /* exactly, no position */
      return strand_fail_msg(L, "timeout", NULL);
    }
    if (strand_task_of(L) == t) return luaL_error(L, "a task cannot join itself");
    outcome = strand_wait_join(L, t, deadline, raise, join_k);
  }
}

static int join_start(lua_State *L, int raise) {
  check_task(L, 1);
  double deadline = strand_opt_deadline(L, 2);
  lua_settop(L, 1);
  lua_pushnumber(L, deadline);
  return join_k(L, LUA_OK, raise);
}

static int tm_join(lua_State *L) { return join_start(L, 0); }
static int tm_result(lua_State *L) { return join_start(L, 1); }

static int tm_cancel(lua_State *L) {
  strand_task *t = check_task(L, 1);
  int alive = t->status < STRAND_T_DONE;
  if (!strand_loop_alive(L)) {                   /* the program is ending (a finalizer) */
    lua_pushboolean(L, 0);
    return 1;
  }
  strand_task_cancel(L, t, 2);
  lua_pushboolean(L, alive);
  return 1;
}

static const char *const status_names[] = {
  "ready", "ready", "running", "waiting", "done", "failed", "cancelled"
};

static int tm_status(lua_State *L) {
  strand_task *t = check_task(L, 1);
  lua_pushstring(L, status_names[t->status]);
  return 1;
}

static int tm_done(lua_State *L) {
  lua_pushboolean(L, check_task(L, 1)->status >= STRAND_T_DONE);
  return 1;
}

static int tm_tostring(lua_State *L) {
  strand_task *t = check_task(L, 1);
  lua_pushfstring(L, "strand.task %d (%s)", (int)t->id, status_names[t->status]);
  return 1;
}

static const luaL_Reg task_methods[] = {
  {"join", tm_join}, {"result", tm_result}, {"cancel", tm_cancel},
  {"status", tm_status}, {"done", tm_done}, {NULL, NULL}
};

static int tm_index(lua_State *L) {
  strand_task *t = check_task(L, 1);
  const char *k = lua_tostring(L, 2);
  /* (byte by byte, no strcmp: a forked child's first join looks a method up here, and each
   * libc code page and read-only string page it touches is one more page fault there) */
  if (k && k[0] == 'i' && k[1] == 'd' && k[2] == 0) {
    lua_pushinteger(L, t->id);
    return 1;
  }
  /* the methods table, found by a registry key (by its name it is a strcmp: see check_task) */
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &TASK_METHODS_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_getmetatable(L, 1);
    if (lua_getfield(L, -1, "methods") != LUA_TTABLE) {   /* a thread's boot left it for now */
      lua_pop(L, 1);
      luaL_newlib(L, task_methods);
      lua_pushvalue(L, -1);
      lua_setfield(L, -3, "methods");
    }
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &TASK_METHODS_KEY);
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

/* (a failure nobody looked at is reported when the task is collected: loop.c report_gc) */

/* }==== */

/* {==== cancel-after timers: strand.timeout inside a task */

typedef struct cancel_timer {
  strand_timer tm;
  strand_loop *loop;
  strand_task *task;
  int task_ref, reason_ref;     /* registry refs while armed */
  int fired;
} cancel_timer;

#define CTIMER_META "strand.cancel_timer"

static void ctimer_disarm(lua_State *L, cancel_timer *c) {
  if (c->loop == NULL) return;
  strand_timer_stop(c->loop, &c->tm);
  luaL_unref(L, LUA_REGISTRYINDEX, c->task_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, c->reason_ref);
  c->task_ref = c->reason_ref = LUA_NOREF;
  c->loop = NULL;
}

static void ctimer_fire(strand_timer *tm) {
  cancel_timer *c = (cancel_timer *)tm;
  lua_State *L = c->loop->driver;
  c->fired = 1;
  if (L == NULL) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->reason_ref);
  strand_task_cancel(L, c->task, -1);
  lua_pop(L, 1);
}

static int l_cancel_after(lua_State *L) {
  lua_Number secs = luaL_checknumber(L, 1);
  luaL_argcheck(L, secs >= 0 && secs == secs, 1, "seconds must be >= 0");
  strand_task *t = strand_task_of(L);
  if (t == NULL) return luaL_error(L, "cancel_after: not inside a task");
  cancel_timer *c = (cancel_timer *)lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  c->task_ref = c->reason_ref = LUA_NOREF;
  luaL_setmetatable(L, CTIMER_META);
  strand_push_task(L, t);
  c->task_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 2);
  c->reason_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  c->task = t;
  c->loop = t->loop;
  c->tm.fire = ctimer_fire;
  strand_timer_start(c->loop, &c->tm, strand_now() + secs);
  return 1;
}

/* Stop the timer; if it fired but the cancellation was not delivered yet, withdraw it.
 * Returns true if it had fired. */
static int ctimer_stop(lua_State *L) {
  cancel_timer *c = (cancel_timer *)luaL_checkudata(L, 1, CTIMER_META);
  if (c->loop && c->fired && c->task->cancel_pending) {
    strand_task_push_pending(L, c->task);
    if (lua_istable(L, -1)) {
      lua_getfield(L, -1, "reason");
      lua_rawgeti(L, LUA_REGISTRYINDEX, c->reason_ref);
      if (lua_rawequal(L, -1, -2)) {
        c->task->cancel_pending = 0;
        lua_pushnil(L);
        strand_task_set_pending(L, c->task);
      }
    }
  }
  lua_pushboolean(L, c->fired);
  ctimer_disarm(L, c);
  return 1;
}

static int ctimer_gc(lua_State *L) {
  ctimer_disarm(L, (cancel_timer *)lua_touserdata(L, 1));
  return 0;
}

/* }==== */

/* {==== notifiers: a loop-local wake-up used by the Lua layer (wait any, as_completed) */

typedef struct notifier { strand_waitq q; int pending; } notifier;
#define NOTIFIER_META "strand.notifier"

static int l_notifier(lua_State *L) {
  notifier *n = (notifier *)lua_newuserdatauv(L, sizeof *n, 0);
  memset(n, 0, sizeof *n);
  luaL_setmetatable(L, NOTIFIER_META);
  return 1;
}

static int nt_notify(lua_State *L) {
  notifier *n = (notifier *)luaL_checkudata(L, 1, NOTIFIER_META);
  n->pending = 1;
  strand_waitq_wake_all(&n->q, STRAND_READY);
  return 0;
}

static int nt_wait_k(lua_State *L, int status, lua_KContext ctx) {
  int outcome = strand_resumed(L, status);
  notifier *n = (notifier *)luaL_checkudata(L, 1, NOTIFIER_META);
  double deadline = lua_tonumber(L, 2);
  for (;;) {
    if (n->pending) {
      n->pending = 0;
      lua_pushboolean(L, 1);
      return 1;
    }
    if (outcome == STRAND_TIMEOUT) return strand_fail_msg(L, "timeout", NULL);
    outcome = strand_wait_queue(L, &n->q, deadline, 0, nt_wait_k);
  }
}

static int nt_wait(lua_State *L) {
  luaL_checkudata(L, 1, NOTIFIER_META);
  double deadline = strand_opt_deadline(L, 2);
  lua_settop(L, 1);
  lua_pushnumber(L, deadline);
  return nt_wait_k(L, LUA_OK, 0);
}

/* }==== */

static int l_backend(lua_State *L) {
  lua_pushstring(L, strand_loop_get(L)->poller->name);
  return 1;
}

static const luaL_Reg task_metamethods[] = {
  {"__index", tm_index}, {"__tostring", tm_tostring}, {NULL, NULL}
};

static const luaL_Reg ctimer_metamethods[] = {{"__gc", ctimer_gc}, {NULL, NULL}};
static const luaL_Reg ctimer_methods[] = {{"stop", ctimer_stop}, {NULL, NULL}};
static const luaL_Reg notifier_methods[] = {{"notify", nt_notify}, {"wait", nt_wait}, {NULL, NULL}};

/* Make metatable `name` with metamethods (may be NULL) and field = a table of methods
 * (__index, or "methods" where __index is a function that looks there). */
static void newmeta(lua_State *L, const char *name, const luaL_Reg *metamethods,
                    const char *field, const luaL_Reg *methods) {
  luaL_newmetatable(L, name);
  if (metamethods) luaL_setfuncs(L, metamethods, 0);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, field);
  lua_pop(L, 1);
}

static const luaL_Reg funcs[] = {
  {"backend", l_backend},
  {"spawn", l_spawn}, {"sleep", l_sleep}, {"sleep_until", l_sleep_until}, {"now", l_now}, {"current", l_current},
  {"run", l_run}, {"is_cancelled", l_is_cancelled}, {"cancel_after", l_cancel_after},
  {"notifier", l_notifier}, {NULL, NULL}
};

/* A thread's state starts with what core.run needs (the task metatable) and pushes core.run;
 * the rest of strand.core opens when the thread's code first uses it (thread.c). */
int strand_task_boot(lua_State *L) {
  luaL_newmetatable(L, STRAND_TASK_META);        /* its methods: on the first lookup (tm_index) */
  luaL_setfuncs(L, task_metamethods, 0);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &TASK_MT_KEY);
  lua_pushcfunction(L, l_run);
  return 1;
}

int strand_open_task(lua_State *L) {
  if (luaL_getmetatable(L, STRAND_TASK_META) == LUA_TNIL)   /* a thread's boot made it */
    newmeta(L, STRAND_TASK_META, task_metamethods, "methods", task_methods);
  lua_pop(L, 1);
  luaL_getmetatable(L, STRAND_TASK_META);
  if (lua_getfield(L, -1, "methods") == LUA_TTABLE)      /* (tm_index's, found now: not by name
                                                            in each forked child's first join) */
    lua_rawsetp(L, LUA_REGISTRYINDEX, &TASK_METHODS_KEY);
  else
    lua_pop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &TASK_MT_KEY);
  newmeta(L, CTIMER_META, ctimer_metamethods, "__index", ctimer_methods);
  newmeta(L, NOTIFIER_META, NULL, "__index", notifier_methods);

  lua_pushnil(L);
  strand_push_cancelled(L, -1);  /* creates the cancelled metatable early */
  lua_pop(L, 2);

  luaL_newlib(L, funcs);
  return 1;
}
