/* loop.c — the event loop of one Lua state: ready queue, timer heap, fd readiness, waits,
 * resuming tasks, and driving the loop from outside a task. */
#include "strand.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define STRAND_HAVE_VALGRIND_H 1
#endif
#endif

static const char LOOP_KEY = 'L';   /* registry[&LOOP_KEY] = loop box (address is the key) */
static const char ANCHOR_KEY = 'A'; /* registry[&ANCHOR_KEY] = { [slot] = task userdata } */
static const char CANCEL_KEY = 'C'; /* registry[&CANCEL_KEY] = { [coroutine] = pending cancel } */
static const char FORKED_KEY = 'K'; /* registry[&FORKED_KEY] = { old loop box, anchors, cancels }
                                       in a forked child: the parent's tasks stay allocated */

#define LOOP_META "strand.loop"

/* The task this OS thread is resuming right now (set around lua_resume in task_resume, else
 * NULL): while it runs it is anchored, and its coroutine is its state's running thread, so
 * `running && running->co == L` names L's task and loop without a registry lookup. */
static _Thread_local strand_task *running __attribute__((tls_model("initial-exec")));

/* strand_loop_get's memory of the last loop it found for a state's main thread on this OS
 * thread (a spawn or wait from the main program: no registry lookup). A main thread lives as
 * long as its state, and every loop that goes (closed with its state, or abandoned in a forked
 * child) bumps loops_gone, which voids every such memory: a hit is always the live loop. */
static atomic_ulong loops_gone;          /* process-wide by nature: any thread's loop may go */
static _Thread_local struct { lua_State *L; strand_loop *loop; unsigned long gone; } last_main
  __attribute__((tls_model("initial-exec")));

/* {==== time */

double strand_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double strand_opt_deadline_def(lua_State *L, int arg, double def_timeout) {
  if (lua_isnoneornil(L, arg))
    return def_timeout == STRAND_FOREVER ? STRAND_FOREVER : strand_now() + def_timeout;
  int isnum;
  lua_Number t = lua_tonumberx(L, arg, &isnum);
  if (!isnum) luaL_typeerror(L, arg, "number (seconds) or nil");
  if (t < 0 || t != t) luaL_argerror(L, arg, "timeout must be >= 0");
  if (t == HUGE_VAL) return STRAND_FOREVER;
  return strand_now() + t;
}

double strand_opt_deadline(lua_State *L, int arg) {
  return strand_opt_deadline_def(L, arg, STRAND_FOREVER);
}

/* }==== */

/* {==== timer heap (binary min-heap, 1-based indices stored in the nodes)
 *
 * The heap holds node addresses; bit 0 set marks a task's wait deadline (strand_task.deadline,
 * no callback stored: 16 bytes in every task instead of a 24-byte strand_timer). */

#define TASK_NODE ((uintptr_t)1)
#define NODE(e) ((strand_tnode *)((e) & ~TASK_NODE))

static void heap_set(strand_loop *loop, size_t i, uintptr_t e) {
  loop->heap[i - 1] = e;
  NODE(e)->index = i;
}

static void heap_up(strand_loop *loop, size_t i) {
  uintptr_t e = loop->heap[i - 1];
  double when = NODE(e)->when;
  while (i > 1) {
    uintptr_t p = loop->heap[i / 2 - 1];
    if (NODE(p)->when <= when) break;
    heap_set(loop, i, p);
    i /= 2;
  }
  heap_set(loop, i, e);
}

static void heap_down(strand_loop *loop, size_t i) {
  uintptr_t e = loop->heap[i - 1];
  double when = NODE(e)->when;
  size_t n = loop->nheap;
  for (;;) {
    size_t c = 2 * i;
    if (c > n) break;
    if (c < n && NODE(loop->heap[c])->when < NODE(loop->heap[c - 1])->when) c++;
    if (NODE(loop->heap[c - 1])->when >= when) break;
    heap_set(loop, i, loop->heap[c - 1]);
    i = c;
  }
  heap_set(loop, i, e);
}

static void node_stop(strand_loop *loop, strand_tnode *nd) {
  size_t i = nd->index;
  if (i == 0) return;
  nd->index = 0;
  uintptr_t last = loop->heap[--loop->nheap];
  if (i - 1 == loop->nheap) return;
  heap_set(loop, i, last);
  heap_up(loop, i);
  heap_down(loop, NODE(last)->index);
}

/* Arming can fail only on memory; the heap grows before anything changes. */
static void node_start(strand_loop *loop, uintptr_t e, double when) {
  node_stop(loop, NODE(e));
  if (loop->nheap == loop->capheap) {
    size_t cap = loop->capheap ? loop->capheap * 2 : 64;
    uintptr_t *h = (uintptr_t *)realloc(loop->heap, cap * sizeof *h);
    if (h == NULL) { perror("strand: timer heap"); abort(); }
    loop->heap = h;
    loop->capheap = cap;
  }
  NODE(e)->when = when;
  loop->nheap++;
  heap_set(loop, loop->nheap, e);
  heap_up(loop, loop->nheap);
}

_Static_assert(_Alignof(strand_tnode) > 1, "a node's address has bit 0 free");

void strand_timer_stop(strand_loop *loop, strand_timer *tm) { node_stop(loop, &tm->node); }

void strand_timer_start(strand_loop *loop, strand_timer *tm, double when) {
  node_start(loop, (uintptr_t)&tm->node, when);
}

static void task_deadline_passed(strand_task *t);

static void fire_timers(strand_loop *loop) {
  if (loop->nheap == 0) return;
  double now = strand_now();
  while (loop->nheap > 0 && NODE(loop->heap[0])->when <= now) {
    uintptr_t e = loop->heap[0];
    node_stop(loop, NODE(e));
    if (e & TASK_NODE)
      task_deadline_passed((strand_task *)((char *)NODE(e) - offsetof(strand_task, deadline)));
    else
      ((strand_timer *)NODE(e))->fire((strand_timer *)NODE(e));   /* (node is its first member) */
  }
}

/* }==== */

/* {==== ready queue and wakes */

static void ready_push(strand_loop *loop, strand_task *t) {
  if (t->inready) return;
  t->inready = 1;
  t->next = NULL;
  t->prev = loop->ready_tail;
  if (loop->ready_tail) loop->ready_tail->next = t; else loop->ready_head = t;
  loop->ready_tail = t;
  loop->nready++;
}

static void ready_remove(strand_loop *loop, strand_task *t) {
  if (!t->inready) return;
  t->inready = 0;
  if (t->prev) t->prev->next = t->next; else loop->ready_head = t->next;
  if (t->next) t->next->prev = t->prev; else loop->ready_tail = t->prev;
  t->next = t->prev = NULL;
  loop->nready--;
}

/* t->wait_qt, in the union with wait_io (all three are addresses of structs of at least pointer
 * alignment: bits 0 and 1 are free and tell them apart): a strand_waitq's address | 1, or the
 * address of the task whose joiners t is among | 3. A task's joiners are a ring (8 bytes in
 * every task instead of a 16-byte strand_waitq): its first is t->joiners, the last its qprev. */
#define WAITQ_TAG ((uintptr_t)1)
#define JOINQ_TAG ((uintptr_t)3)
#define waiting_in_q(t) (((t)->wait_qt & WAITQ_TAG) != 0)

static void waitq_unlink(strand_task *t) {
  if ((t->wait_qt & JOINQ_TAG) == JOINQ_TAG) {
    strand_task *target = (strand_task *)(t->wait_qt & ~JOINQ_TAG);
    if (t->qnext == t) {
      target->joiners = NULL;
    } else {
      t->qprev->qnext = t->qnext;
      t->qnext->qprev = t->qprev;
      if (target->joiners == t) target->joiners = t->qnext;
    }
  } else {
    strand_waitq *q = (strand_waitq *)(t->wait_qt & ~WAITQ_TAG);
    if (t->qprev) t->qprev->qnext = t->qnext; else q->head = t->qnext;
    if (t->qnext) t->qnext->qprev = t->qprev; else q->tail = t->qprev;
  }
  t->qnext = t->qprev = NULL;
  t->wait_qt = 0;
}

/* Disarm whatever t waits on and make it runnable (or end the main pseudo-task's wait). */
void strand_wake(strand_task *t, int outcome) {
  strand_loop *loop = t->loop;
  if (!t->waiting) return;
  t->waiting = 0;
  t->outcome = (unsigned char)outcome;
  node_stop(loop, &t->deadline);
  if (waiting_in_q(t)) {
    waitq_unlink(t);
  } else if (t->wait_io) {
    strand_io *io = t->wait_io;
    t->wait_io = NULL;
    if (io->reader == t) io->reader = NULL;
    if (io->writer == t) io->writer = NULL;
    loop->nio_waits--;
    if (io->registered && loop->poller->interest && loop->pstate)
      loop->poller->interest(loop->pstate, io);
  }
  if (t->co) {
    t->status = STRAND_T_READY;
    ready_push(loop, t);
  }
}

static void task_deadline_passed(strand_task *t) {
  strand_wake(t, STRAND_TIMEOUT);
}

int strand_waitq_wake_one(strand_waitq *q, int outcome) {
  if (q->head == NULL) return 0;
  strand_wake(q->head, outcome);
  return 1;
}

int strand_waitq_wake_all(strand_waitq *q, int outcome) {
  int n = 0;
  while (q->head) { strand_wake(q->head, outcome); n++; }
  return n;
}

int strand_join_wake_all(strand_task *t, int outcome) {
  int n = 0;
  while (t->joiners) { strand_wake(t->joiners, outcome); n++; }   /* in the order they came */
  return n;
}

/* }==== */

/* {==== fd readiness */

void strand_io_init(strand_io *io, int fd) {
  memset(io, 0, sizeof *io);
  io->fd = fd;
  io->ready = STRAND_READ | STRAND_WRITE;
  io->pollidx = -1;
}

void strand_io_event(strand_io *io, unsigned ev) {
  io->ready |= ev;
  if ((ev & STRAND_READ) && io->reader) strand_wake(io->reader, STRAND_READY);
  if ((ev & STRAND_WRITE) && io->writer) strand_wake(io->writer, STRAND_READY);
}

static void loop_unref(strand_loop *loop);

void strand_io_close(strand_io *io) {
  strand_loop *loop = io->loop;
  if (loop && loop->forked) io->reader = io->writer = NULL;   /* the parent's waiters, not ours */
  if (io->reader) strand_wake(io->reader, STRAND_CLOSED);
  if (io->writer) strand_wake(io->writer, STRAND_CLOSED);
  if (loop && io->registered) {
    io->registered = 0;
    if (!loop->closed) loop->poller->del(loop->pstate, io);
    io->loop = NULL;
    loop_unref(loop);
  }
  io->ready = 0;
}

/* }==== */

/* {==== the loop object */

/* A forked child's first loop comes from process.c's carved area (strand_forked_block: fresh
 * zeroed bytes on the page the child's first Lua blocks use, never freed); others, malloc's. */
void *strand_forked_block(size_t n);            /* process.c */
int strand_forked_block_of(const void *p);

static void loop_unref(strand_loop *loop) {
  if (--loop->refs > 0) return;
  free(loop->heap);
  free(loop->scratch);
  if (!strand_forked_block_of(loop)) free(loop);
}

static int loop_gc(lua_State *L) {
  strand_loop **box = (strand_loop **)lua_touserdata(L, 1);
  strand_loop *loop = *box;
  if (loop == NULL || loop->forked) return 0;   /* (a forked child's abandoned loop: kept) */
  *box = NULL;
  atomic_fetch_add(&loops_gone, 1);             /* before the state (its main thread) is freed */
  loop->closed = 1;
  if (loop->pstate) loop->poller->free(loop->pstate);
  loop->pstate = NULL;
  loop_unref(loop);
  return 0;
}

/* A thread's state makes its loop's poller on first need: an fd to watch, or a wait that may
 * block; so a thread that only computes (or whose tasks only yield) costs no poller fd and no
 * poll. Other states make it with the loop, so that an fd limit reached later cannot keep the
 * loop from watching anything (accept's EMFILE is then an ordinary result). */
static const char DEFER_KEY = 'D';      /* registry[&DEFER_KEY] = true: strand_loop_defer_poller */

void strand_loop_defer_poller(lua_State *L) {
  lua_pushboolean(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &DEFER_KEY);
}

/* Whether L's loop makes its poller on first need (a thread's or a forked child's state). */
int strand_loop_poller_deferred(lua_State *L) {
  int d = lua_rawgetp(L, LUA_REGISTRYINDEX, &DEFER_KEY) == LUA_TBOOLEAN;
  lua_pop(L, 1);
  return d;
}

/* Makes the loop's poller if it has none: 1, or 0 with the message pushed ("strand: cannot
 * create the epoll poller: too many open files"). */
static int make_poller(lua_State *L, strand_loop *loop) {
  if (loop->pstate != NULL) return 1;
  loop->pstate = loop->poller->init(loop);
  int e = errno;
  /* io_uring missing or refused: the default; not when out of descriptors (epoll needs one too:
   * the message names the poller asked for) */
  if (loop->pstate == NULL && loop->poller == &strand_poller_uring && e != EMFILE && e != ENFILE) {
    loop->poller = &strand_poller_epoll;
    loop->pstate = loop->poller->init(loop);
    e = errno;
  }
  if (loop->pstate != NULL) return 1;
  const char *m = strand_errmsg(e);
  lua_pushfstring(L, "strand: cannot create the %s poller: %s", loop->poller->name,
                  m ? m : strerror(e));
  return 0;
}

static void need_poller(lua_State *L, strand_loop *loop) {
  if (!make_poller(L, loop)) lua_error(L);
}

/* The poller of a loop when STRAND_POLLER names none. strand_poller_uring (docs/uring.md 4)
 * falls back to epoll where io_uring is refused (seccomp, sysctl) or older than 5.19. */
#define STRAND_DEFAULT_POLLER strand_poller_uring

/* Under valgrind the default is epoll: memcheck holds its one-thread-at-a-time lock across
 * io_uring_enter, so while a loop waits in the ring no other thread of the process runs (a
 * resolver, a strand thread, a pool's thread worker would stall: docs/uring.md 4.6). */
static const strand_poller *default_poller(void) {
#if STRAND_HAVE_VALGRIND_H
  if (RUNNING_ON_VALGRIND) return &strand_poller_epoll;
#endif
  return &STRAND_DEFAULT_POLLER;
}

static const strand_poller *choose_poller(void) {
  const char *name = getenv("STRAND_POLLER");
  if (name == NULL || *name == 0) return default_poller();
  if (strcmp(name, "epoll") == 0) return &strand_poller_epoll;
  if (strcmp(name, "poll") == 0) return &strand_poller_poll;
  if (strcmp(name, "uring") == 0) return &strand_poller_uring;    /* docs/uring.md */
  return NULL;
}

static strand_loop *loop_new(lua_State *L, const strand_poller *poller, const strand_loop *old,
                             int oldbox);

strand_loop *strand_loop_get(lua_State *L) {
  if (running && running->co == L) return running->loop;
  unsigned long gone = atomic_load_explicit(&loops_gone, memory_order_acquire);
  if (last_main.L == L && last_main.gone == gone) return last_main.loop;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &LOOP_KEY) == LUA_TUSERDATA) {
    strand_loop *loop = *(strand_loop **)lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (loop == NULL) luaL_error(L, "strand: the event loop is closed");
    if (loop->L == L) { last_main.L = L; last_main.loop = loop; last_main.gone = gone; }
    return loop;
  }
  lua_pop(L, 1);
  return loop_new(L, choose_poller(), NULL, 0);
}

/* A new loop for L (registered as its loop) with poller. In a forked child (strand_loop_forked)
 * old is the abandoned loop and oldbox the stack index of its box: their metatable and task
 * metatable reference are taken over, so the child looks no name up (each lookup of a C
 * string is a strcmp through Lua's string cache: code and read-only pages faulted in there). */
static strand_loop *loop_new(lua_State *L, const strand_poller *poller, const strand_loop *old,
                             int oldbox) {
  strand_loop **box = (strand_loop **)lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  if (oldbox == 0 || !lua_getmetatable(L, oldbox)) {
    if (luaL_newmetatable(L, LOOP_META)) {
      lua_pushcfunction(L, loop_gc);
      lua_setfield(L, -2, "__gc");
    }
  }
  lua_setmetatable(L, -2);
  strand_loop *loop;
  /* in a forked child: zeroed, as calloc's, with no malloc (its arena and a heap page shared
   * with the parent: copies) nor memset (a code page) */
  loop = old != NULL ? (strand_loop *)strand_forked_block(sizeof *loop) : NULL;
  if (loop == NULL) loop = (strand_loop *)calloc(1, sizeof *loop);
  if (loop == NULL) luaL_error(L, "strand: out of memory creating the loop");
  *box = loop;                                  /* from now on __gc frees it */
  loop->refs = 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  loop->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  loop->main.loop = loop;
  loop->main.status = STRAND_T_RUNNING;
  loop->next_id = 1;
  loop->poller = poller;
  if (loop->poller == NULL)
    luaL_error(L, "strand: unknown STRAND_POLLER '%s' (use epoll, poll or uring)", getenv("STRAND_POLLER"));
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &DEFER_KEY) != LUA_TBOOLEAN) need_poller(L, loop);
  lua_pop(L, 1);
  lua_newtable(L);                              /* the anchor: see anchor_add */
  lua_pushvalue(L, -1);
  loop->anchor_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  loop->task_mt_ref = LUA_NOREF;                /* strand.task's metatable, by number */
  if (old && old->task_mt_ref != LUA_NOREF)
    loop->task_mt_ref = old->task_mt_ref;       /* (registry references are never dropped) */
  else if (luaL_getmetatable(L, STRAND_TASK_META) == LUA_TTABLE)
    loop->task_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  else
    lua_pop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ANCHOR_KEY);
  lua_newtable(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &CANCEL_KEY);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &LOOP_KEY);  /* pops the box */
  return loop;
}

int strand_loop_alive(lua_State *L) {
  int alive = lua_rawgetp(L, LUA_REGISTRYINDEX, &LOOP_KEY) == LUA_TUSERDATA
              && *(strand_loop **)lua_touserdata(L, -1) != NULL;
  lua_pop(L, 1);
  return alive;
}

/* In a child just forked from a task or the main program: the loop, its tasks and its poller are
 * the parent's (an epoll instance is shared across fork: one epoll_ctl here would change the
 * parent's registrations). Abandon them without touching the poller (its fd is closed: that
 * only drops this process's reference) and start a fresh loop, anchor and cancellation tables.
 * The old struct is kept (never freed): stale tasks, timers and ios of the parent may still
 * point at it; an io inherited and waited on here registers afresh (strand_wait_io). */
void strand_loop_forked(lua_State *L) {
  running = NULL;                                /* the running task is the parent's */
  lua_createtable(L, 6, 0);                      /* keep the parent's loop box and tasks */
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ANCHOR_KEY);
  lua_rawseti(L, -2, 2);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CANCEL_KEY);
  lua_rawseti(L, -2, 3);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &FORKED_KEY);  /* an older generation (forked twice) */
  lua_rawseti(L, -2, 4);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &LOOP_KEY);
  lua_pushvalue(L, -1);
  lua_rawseti(L, -3, 1);
  strand_loop *old = NULL;
  const strand_poller *poller = NULL;
  if (lua_type(L, -1) == LUA_TUSERDATA) {
    strand_loop **box = (strand_loop **)lua_touserdata(L, -1);
    old = *box;
    if (old) {
      old->forked = 1;
      old->closed = 1;                            /* no poller->del from now on */
      poller = old->poller;
      /* The parent's poller state is not freed here (a free writes malloc's chunk headers
       * and arena, pages shared with the parent: copies), only kept, reachable (keep[6]):
       * the epoll fd closed (it is the parent's instance), the memory left to the exit. */
      if (old->pstate && old->poller == &strand_poller_uring)   /* bytes queued stay readable */
        old->pstate = strand_uring_forked(old->pstate);
      else if (old->pstate) {
        if (old->poller == &strand_poller_epoll) strand_epoll_forked(old->pstate);
        lua_pushlightuserdata(L, old->pstate);
        lua_rawseti(L, -3, 6);
        old->pstate = NULL;
      }
      old->refs++;                                /* kept for good: see above */
      /* (not loops_gone: this thread is the child's only one, its memory is all there is to
       * void, on the page of thread-locals it writes anyway; loops_gone's is one more) */
      last_main.L = NULL;
      lua_pushlightuserdata(L, old);              /* (and visibly so: not a leak to memcheck) */
      lua_rawseti(L, -3, 5);
      /* (the box is left as it is, not one more page written: loop_gc ignores a forked loop) */
    }
  }
  lua_insert(L, -2);                              /* the old box stays below: keep box */
  lua_rawsetp(L, LUA_REGISTRYINDEX, &FORKED_KEY);
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &LOOP_KEY);
  strand_loop_defer_poller(L);   /* as a thread's: a child that only computes makes no poller
                                    (an epoll fd, its events array: pages written, one more fd
                                    to tear down at exit) */
  /* the abandoned loop's poller (no getenv, no string compares in a child) */
  int oldbox = lua_type(L, -1) == LUA_TUSERDATA ? lua_gettop(L) : 0;
  loop_new(L, poller ? poller : choose_poller(), old, oldbox);
  lua_pop(L, 1);                                  /* the old box */
}

char *strand_loop_scratch(strand_loop *loop) {
  if (loop->scratch == NULL) {
    loop->scratch = (char *)malloc(STRAND_SCRATCH);
    if (loop->scratch == NULL) { perror("strand: scratch buffer"); abort(); }
  }
  return loop->scratch;
}

/* }==== */

/* {==== waits */

/* {==== the anchor: what keeps unfinished tasks alive, and finds a task by its coroutine
 *
 * anchor[slot] = task userdata, an array: loop->anchor_free heads the list of free slots (0:
 * none), each free slot holds the next one (slots 1..anchor_len are never nil). A task's
 * slot is kept in its coroutine's extra space (lua_getextraspace: LUA_EXTRASPACE bytes per
 * thread, a copy of the main thread's for coroutines strand did not make), read only as a
 * number and believed only if anchor[slot] is a task whose coroutine is that thread: finding
 * the task of a coroutine is two array reads, no hashing of the coroutine. */

_Static_assert(LUA_EXTRASPACE >= sizeof(lua_Integer), "strand: LUA_EXTRASPACE too small");

#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#endif
#endif
#ifndef VALGRIND_MAKE_MEM_DEFINED
#define VALGRIND_MAKE_MEM_DEFINED(p, n) ((void)0)
#endif

static lua_Integer co_slot(lua_State *co) {
  lua_Integer s;
  /* Lua never initialises the main thread's area (so neither its copies): any bits are a
   * number here, checked as said above; tell memcheck so (no-op without valgrind). */
  VALGRIND_MAKE_MEM_DEFINED(lua_getextraspace(co), sizeof s);
  memcpy(&s, lua_getextraspace(co), sizeof s);
  return s;
}

static void set_co_slot(lua_State *co, lua_Integer s) {
  memcpy(lua_getextraspace(co), &s, sizeof s);
}

/* loop's anchor at index a: the value on top (popped) goes in a free slot; returns it */
static lua_Integer anchor_add(lua_State *L, strand_loop *loop, int a) {
  lua_Integer s = loop->anchor_free;
  if (s > 0) {
    lua_rawgeti(L, a, s);                        /* the next free slot becomes the head */
    loop->anchor_free = lua_tointeger(L, -1);
    lua_pop(L, 1);
  } else {
    s = ++loop->anchor_len;
  }
  lua_rawseti(L, a, s);
  return s;
}

/* a is an absolute index, or -1 for the value on top */
static void anchor_del(lua_State *L, strand_loop *loop, int a, lua_Integer s) {
  lua_pushinteger(L, loop->anchor_free);
  lua_rawseti(L, a < 0 ? a - 1 : a, s);
  loop->anchor_free = s;
}

/* The task whose coroutine is L (NULL for the main thread and coroutines strand did not make). */
strand_task *strand_task_of(lua_State *L) {
  if (running && running->co == L) return running;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &ANCHOR_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    return NULL;
  }
  lua_Integer s = co_slot(L);
  strand_task *t = NULL;
  if (s > 0 && lua_rawgeti(L, -1, s) == LUA_TUSERDATA) {
    t = (strand_task *)lua_touserdata(L, -1);
    if (t->co != L) t = NULL;
    lua_pop(L, 1);
  } else if (s > 0) lua_pop(L, 1);
  lua_pop(L, 1);
  return t;
}

/* }==== */

/* Who is waiting: the running task, or the main pseudo-task when L may drive the loop.
 * Raises when neither is possible. Delivers a pending cancellation. */
static strand_task *wait_begin(lua_State *L, strand_loop *loop) {
  /* the running task is anchored, so this is what the anchor lookup would say */
  strand_task *t = (loop->current && loop->current->co == L) ? loop->current : strand_task_of(L);
  if (t) {
    if (!lua_isyieldable(L))
      luaL_error(L, "strand: cannot block here: the task is inside a C call or metamethod "
                    "that cannot yield");
    if (t->cancel_pending) strand_resumed(L, LUA_YIELD);  /* raises */
    return t;
  }
  if (loop->driver)
    luaL_error(L, "strand: blocking call in a coroutine that strand does not own while the "
                  "loop runs (use strand.spawn instead of coroutine.create/wrap)");
  return &loop->main;
}

static int loop_step(lua_State *L, strand_loop *loop, int (*done)(strand_loop *));
#define STEP_INTERRUPTED 2
static int main_done(strand_loop *loop) { return !loop->main.waiting; }

/* Arm the deadline, then either yield (task) or drive the loop (main). */
static int wait_finish(lua_State *L, strand_task *t, double deadline,
                       lua_KContext ctx, lua_KFunction k) {
  strand_loop *loop = t->loop;
  t->waiting = 1;
  t->outcome = STRAND_READY;
  if (deadline != STRAND_FOREVER) {
    node_start(loop, (uintptr_t)&t->deadline | TASK_NODE, deadline);
  }
  if (t->co) {
    t->status = STRAND_T_WAITING;
    return lua_yieldk(L, 0, ctx, k);
  }
  loop->driver = L;
  while (t->waiting) {
    int r = loop_step(L, loop, main_done);
    if (r == STEP_INTERRUPTED) strand_wake(t, STRAND_TIMEOUT);   /* see interrupt_pending */
    else if (r != 0) {
      loop->driver = NULL;
      strand_wake(t, STRAND_CLOSED);            /* disarmed: no longer in a queue or a join ring
                                                   (the program may catch this and wait again) */
      lua_error(L);                             /* the deadlock or poller message */
    }
  }
  loop->driver = NULL;
  return t->outcome;
}

int strand_wait_io(lua_State *L, strand_io *io, int ev, double deadline,
                   lua_KContext ctx, lua_KFunction k) {
  strand_loop *loop = strand_loop_get(L);
  strand_task *t = wait_begin(L, loop);
  if (io->loop != NULL && io->loop != loop && io->loop->forked) {
    /* inherited across a fork: the registration is the parent's loop's; start afresh here */
    strand_loop *old = io->loop;
    io->registered = 0;
    io->loop = NULL;
    io->reader = io->writer = NULL;
    io->pollidx = -1;
    io->ready = STRAND_READ | STRAND_WRITE;
    loop_unref(old);
  }
  if (io->loop != NULL && io->loop != loop)
    luaL_error(L, "strand: this object belongs to another thread's loop");
  strand_task **slot = (ev == STRAND_READ) ? &io->reader : &io->writer;
  if (*slot && *slot != t)
    luaL_error(L, "strand: another task is already %s this object",
               ev == STRAND_READ ? "reading from" : "writing to");
  if (io->fd < 0) return STRAND_CLOSED;
  if (!io->registered) {
    need_poller(L, loop);
    int err = loop->poller->add(loop->pstate, io);
    if (err) {
      errno = err;
      luaL_error(L, "strand: cannot watch fd %d: %s", io->fd, strerror(err));
    }
    io->registered = 1;
    io->loop = loop;
    loop->refs++;
  }
  strand_io_clear(io, ev);                      /* the caller just saw EAGAIN */
  *slot = t;
  t->wait_io = io;
  loop->nio_waits++;
  if (loop->poller->interest) loop->poller->interest(loop->pstate, io);
  return wait_finish(L, t, deadline, ctx, k);
}

int strand_wait_timer(lua_State *L, double deadline, lua_KContext ctx, lua_KFunction k) {
  strand_task *t = running;
  strand_loop *loop;
  if (t && t->co == L && deadline == 0 && lua_isyieldable(L) && !t->cancel_pending) {
    /* sleep(0) in the running task: what wait_begin, then the wake below, come to */
    t->waiting = 0;
    t->outcome = STRAND_READY;
    t->status = STRAND_T_READY;
    ready_push(t->loop, t);
    return lua_yieldk(L, 0, ctx, k);
  }
  loop = strand_loop_get(L);
  t = wait_begin(L, loop);
  if (deadline <= strand_now()) {
    /* sleep(0): go to the back of the ready queue; from main, run one round */
    if (t->co) {
      t->waiting = 1;
      t->outcome = STRAND_READY;
      t->status = STRAND_T_WAITING;
      strand_wake(t, STRAND_READY);
      return lua_yieldk(L, 0, ctx, k);
    }
    loop->driver = L;
    int r = loop_step(L, loop, main_done);
    loop->driver = NULL;
    if (r != 0 && r != STEP_INTERRUPTED) lua_error(L);   /* the poller's message */
    return STRAND_READY;
  }
  return wait_finish(L, t, deadline, ctx, k);
}

int strand_wait_queue(lua_State *L, strand_waitq *q, double deadline,
                      lua_KContext ctx, lua_KFunction k) {
  strand_loop *loop = strand_loop_get(L);
  strand_task *t = wait_begin(L, loop);
  _Static_assert(_Alignof(strand_waitq) > 3 && _Alignof(strand_io) > 3, "tagged wait pointer");
  t->wait_qt = (uintptr_t)q | WAITQ_TAG;
  t->qnext = NULL;
  t->qprev = q->tail;
  if (q->tail) q->tail->qnext = t; else q->head = t;
  q->tail = t;
  return wait_finish(L, t, deadline, ctx, k);
}

int strand_wait_join(lua_State *L, strand_task *target, double deadline,
                     lua_KContext ctx, lua_KFunction k) {
  strand_loop *loop = strand_loop_get(L);
  strand_task *t = wait_begin(L, loop);
  _Static_assert(_Alignof(strand_task) > 3, "tagged wait pointer");
  t->wait_qt = (uintptr_t)target | JOINQ_TAG;
  strand_task *h = target->joiners;
  if (h == NULL) {
    t->qnext = t->qprev = t;
    target->joiners = t;
  } else {                                       /* the new last */
    t->qnext = h;
    t->qprev = h->qprev;
    h->qprev->qnext = t;
    h->qprev = t;
  }
  return wait_finish(L, t, deadline, ctx, k);
}

int strand_resumed(lua_State *L, int status) {
  if (status == LUA_OK) return STRAND_READY;
  strand_task *t = strand_task_of(L);
  if (t == NULL) return STRAND_READY;
  if (t->waiting) luaL_error(L, "strand: a task was resumed by something other than its loop");
  if (t->cancel_pending) {
    t->cancel_pending = 0;
    strand_task_push_pending(L, t);                 /* the pending cancellation error */
    lua_pushnil(L);
    strand_task_set_pending(L, t);
    lua_error(L);
  }
  return t->outcome;
}

/* }==== */

/* {==== running tasks */

/* Push t's coroutine onto L's stack. */
static void push_co(lua_State *L, strand_task *t) {
  if (L == t->co) {
    lua_pushthread(L);
  } else {
    if (!lua_checkstack(t->co, 1)) luaL_error(L, "strand: task stack overflow");
    lua_pushthread(t->co);
    lua_xmove(t->co, L, 1);
  }
}

/* Push registry[key][t->co]. */
static void co_table_get(lua_State *L, const char *key, strand_task *t) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, key);
  push_co(L, t);
  lua_rawget(L, -2);
  lua_remove(L, -2);
}

/* registry[key][t->co] = value on top (popped) */
static void co_table_set(lua_State *L, const char *key, strand_task *t) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, key);
  lua_insert(L, -2);                             /* tbl value */
  push_co(L, t);
  lua_insert(L, -2);                             /* tbl co value */
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

int strand_push_task(lua_State *L, strand_task *t) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->loop->anchor_ref);
  lua_Integer s = co_slot(t->co);
  if (s <= 0 || lua_rawgeti(L, -1, s) != LUA_TUSERDATA || lua_touserdata(L, -1) != (void *)t) {
    if (s > 0) lua_pop(L, 1);
    lua_pushnil(L);
  }
  lua_remove(L, -2);
  return 1;
}

/* anchor: the stack index of t's loop's anchor (loop_step's, fetched once a round), or 0 */
static void unanchor_task(lua_State *L, strand_task *t, int anchor) {
  lua_Integer s = co_slot(t->co);                /* written by anchor_task: t's own slot */
  if (s <= 0) return;
  if (anchor != 0) {
    anchor_del(L, t->loop, anchor, s);
  } else {
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->loop->anchor_ref);
    anchor_del(L, t->loop, -1, s);
    lua_pop(L, 1);
  }
  set_co_slot(t->co, 0);
}

/* The pending cancellation of a task lives beside it, not in it (most tasks never get one). */
void strand_task_set_pending(lua_State *L, strand_task *t) { co_table_set(L, &CANCEL_KEY, t); }
void strand_task_push_pending(lua_State *L, strand_task *t) { co_table_get(L, &CANCEL_KEY, t); }

/* {==== the body of every task
 *
 * fn(...) runs under a yieldable lua_pcallk, so the unwinding after an error or a cancellation
 * closes <close> variables inside the task, where they may still block (a group closing waits
 * for its children). A failure comes back to the loop as the two results (FAILED_KEY, err). */

static const char FAILED_KEY = 'F';

static int task_msgh(lua_State *L) {
  if (lua_type(L, 1) == LUA_TSTRING) luaL_traceback(L, L, lua_tostring(L, 1), 1);
  return 1;
}

static int task_main_k(lua_State *L, int status, lua_KContext ctx) {
  if (status == LUA_OK || status == LUA_YIELD) return lua_gettop(L) - 1;
  strand_task *t = strand_task_of(L);
  if (t == NULL || t->loop->current != t) return lua_error(L);   /* a foreign resume: its error */
  lua_pushlightuserdata(L, (void *)&FAILED_KEY);
  lua_insert(L, -2);
  return 2;
}

static int task_main(lua_State *L) {              /* msgh fn args... (put by the spawn) */
  int n = lua_gettop(L) - 2;
  return task_main_k(L, lua_pcallk(L, n, LUA_MULTRET, 1, 0, task_main_k), 0);
}

/* A task that only yields with coroutine.yield still gets its cancellation: a one-shot count
 * hook raises it at the next instruction. */
static void cancel_hook(lua_State *L, lua_Debug *ar) {
  lua_sethook(L, NULL, 0, 0);
  strand_task *t = strand_task_of(L);
  if (t && t->cancel_pending) strand_resumed(L, LUA_YIELD);    /* raises */
}

/* }==== */

/* {==== the report of a failure nobody looked at
 *
 * printed once on stderr when the failed task is collected (at the latest when its state
 * closes), unless a join or result took the error. The task's metatable has no __gc: a
 * finalizer on every task would be work in every collection cycle, and most tasks never fail.
 * A failing task gets a small reporter instead, left beside its error on its dead coroutine's
 * stack: the reporter's uservalue keeps the task (and so its error) alive until its __gc. */

#define REPORT_META "strand.task.report"

static int report_gc(lua_State *L) {
  strand_task *t = *(strand_task **)lua_touserdata(L, 1);
  if (t == NULL || lua_getiuservalue(L, 1, 1) != LUA_TUSERDATA || lua_touserdata(L, -1) != t)
    return 0;
  if (t->status == STRAND_T_FAILED && !t->observed) {
    t->observed = 1;
    lua_pushvalue(t->co, 1);
    lua_xmove(t->co, L, 1);
    const char *msg = luaL_tolstring(L, -1, NULL);
    fprintf(stderr, "strand: task %d failed and nobody joined it:\n%s\n", (int)t->id, msg);
    fflush(stderr);
  }
  return 0;
}

/* t just failed (its error alone on its coroutine's stack; t still anchored) */
static void report_unobserved(lua_State *L, strand_task *t) {
  if (!lua_checkstack(L, 4)) return;             /* (no memory left even for the report) */
  strand_task **r = (strand_task **)lua_newuserdatauv(L, sizeof *r, 1);
  *r = NULL;
  if (luaL_newmetatable(L, REPORT_META)) {
    lua_pushcfunction(L, report_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  strand_push_task(L, t);
  if (lua_touserdata(L, -1) == (void *)t) *r = t;
  lua_setiuservalue(L, -2, 1);
  lua_xmove(L, t->co, 1);                        /* co: err reporter */
}

/* }==== */

/* The task is over: keep its error (the only value left on its dead coroutine's stack), drop
 * any pending cancellation, wake joiners, drop the anchor. `status` is the resume status;
 * LUA_OK with (FAILED_KEY, err) results (nres: how many) is a failure the body caught. */
static void task_finish(lua_State *L, strand_loop *loop, strand_task *t, int status,
                        int nres, int anchor) {
  lua_State *co = t->co;
  if (t->cancel_pending) {                       /* a cancellation that came too late */
    t->cancel_pending = 0;
    lua_pushnil(L);
    strand_task_set_pending(L, t);
  }
  if (status == LUA_OK && nres == 2 && lua_touserdata(co, -2) == (void *)&FAILED_KEY) {
    lua_xmove(co, L, 1);                         /* err (the traceback is already added) */
    int isc = strand_is_cancelled(L, -1);
    lua_settop(co, 0);
    lua_xmove(L, co, 1);                         /* co: err */
    t->status = isc ? STRAND_T_CANCELLED : STRAND_T_FAILED;
  } else if (status == LUA_OK) {
    t->status = STRAND_T_DONE;
  } else {
    lua_pushvalue(co, -1);
    lua_xmove(co, L, 1);                         /* raw */
    if (lua_type(L, -1) == LUA_TSTRING)
      luaL_traceback(L, co, lua_tostring(L, -1), 0);
    else
      lua_pushvalue(L, -1);                      /* raw, err */
    /* run pending <close> variables; an error raised there replaces the task's error */
    int rs = lua_resetthread(co);
    if (rs != LUA_OK && lua_gettop(co) > 0) {
      lua_xmove(co, L, 1);                       /* raw, err, closeerr */
      if (lua_rawequal(L, -1, -3)) lua_pop(L, 1);
      else lua_replace(L, -2);
    }
    lua_remove(L, -2);                           /* err */
    int isc = strand_is_cancelled(L, -1);
    lua_settop(co, 0);
    lua_xmove(L, co, 1);                         /* co: err */
    t->status = isc ? STRAND_T_CANCELLED : STRAND_T_FAILED;
  }
  if (t->status == STRAND_T_FAILED) report_unobserved(L, t);
  unanchor_task(L, t, anchor);
  loop->ntasks--;
  if (t->background) { t->background = 0; loop->nbackground--; }
  strand_join_wake_all(t, STRAND_READY);
}

static void task_resume(lua_State *L, strand_loop *loop, strand_task *t, int anchor) {
  lua_State *co = t->co;
  int nres = 0;
  int nargs = t->status == STRAND_T_NEW ? lua_gettop(co) - 1 : 0;   /* all but task_main */
  t->status = STRAND_T_RUNNING;
  loop->current = t;
  if (t->bare && t->cancel_pending && lua_gethook(co) == NULL)
    lua_sethook(co, cancel_hook, LUA_MASKCOUNT, 1);
  t->bare = 0;
  strand_task *outer = running;                  /* another state's task (nested loops) */
  running = t;
  int st = lua_resume(co, L, nargs, &nres);
  running = outer;
  loop->current = NULL;
  if (st == LUA_YIELD) {
    lua_pop(co, nres);
    if (!t->waiting) {                           /* a bare coroutine.yield(): run again later */
      t->bare = 1;
      t->status = STRAND_T_READY;
      ready_push(loop, t);
    }
    return;
  }
  task_finish(L, loop, t, st, nres, anchor);
}

/* {==== Ctrl-C
 *
 * lua.c's SIGINT handler only installs a hook on the main thread (lstop: call, return, line
 * and count events, count 1) that raises "interrupted!" at the main thread's next event; it
 * cannot fire while the main thread blocks here. So when the main thread itself drives the loop
 * and such a hook is present, the loop stops waiting (before polling, and when the poll returns
 * EINTR): the main program's wait ends as a timeout, the blocking call cleans up and returns
 * normally, and the hook raises "interrupted!" at that return, through the normal error path.
 * Other states (threads) never see the hook: their loops go on. */

static int interrupt_pending(lua_State *L, strand_loop *loop) {
  if (L != loop->L || loop->no_interrupt || lua_gethook(L) == NULL) return 0;
  return lua_gethookmask(L) == (LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT)
         && lua_gethookcount(L) == 1;
}

int strand_interrupted(lua_State *L) {
  strand_loop *loop = NULL;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &LOOP_KEY) == LUA_TUSERDATA)
    loop = *(strand_loop **)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return loop != NULL && interrupt_pending(L, loop);     /* checks that L is the main thread */
}

/* }==== */

/* One round: run every task that was ready, poll (without blocking if something is ready or
 * `done` already holds), fire timers. Returns nonzero with a message pushed on deadlock,
 * STEP_INTERRUPTED (nothing pushed) when Ctrl-C is pending. */
#define LOOP_MAX_WAIT 1e6   /* seconds: at most one poller wait (< INT_MAX ms) */
static int loop_step(lua_State *L, strand_loop *loop, int (*done)(strand_loop *)) {
  int was_done = done(loop);
  size_t n = loop->nready;
  int anchor = 0;                    /* the anchor, fetched once for the tasks that end here */
  if (n > 0 && lua_checkstack(L, 1)) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, loop->anchor_ref);
    anchor = lua_gettop(L);
  }
  while (n-- > 0 && loop->ready_head) {
    strand_task *t = loop->ready_head;
    ready_remove(loop, t);
    task_resume(L, loop, t, anchor);
  }
  if (anchor != 0) lua_remove(L, anchor);
  double timeout = -1;
  if (loop->ready_head || done(loop)) timeout = 0;
  else if (loop->nheap > 0) {
    timeout = NODE(loop->heap[0])->when - strand_now();
    if (timeout < 0) timeout = 0;
    /* a far deadline (sleep(1e300), a timeout of years): wait in bounded slices, since the
     * pollers' timespec (time_t) and millisecond (int) conversions overflow past it */
    if (timeout > LOOP_MAX_WAIT) timeout = LOOP_MAX_WAIT;
  } else if (loop->nio_waits == 0) {
    lua_pushfstring(L, "strand: deadlock: nothing can wake the %s (%d task(s) wait forever)",
                    loop->main.waiting ? "main program's wait" : "waiting tasks",
                    (int)loop->ntasks);
    return 1;
  }
  /* A task run here ended the wait that drives the loop and nothing else is ready: no
   * zero-timeout poll now (a syscall per wake-up, e.g. per pool round trip); the next step
   * polls. At most 8 steps in a row, so that waiting I/O is never starved by a ping-pong
   * between the driver and ready tasks. */
  if (timeout == 0 && !was_done && !loop->ready_head && loop->skipped_polls < 8 && done(loop)) {
    loop->skipped_polls++;
    fire_timers(loop);
    return 0;
  }
  loop->skipped_polls = 0;
  if (interrupt_pending(L, loop)) return STEP_INTERRUPTED;
  if (loop->pstate == NULL && timeout == 0) {   /* no fd was ever watched: nothing to poll */
    fire_timers(loop);
    return 0;
  }
  if (!make_poller(L, loop)) return 1;        /* (a thread's loop: made on first need) */
  int err = loop->poller->wait(loop->pstate, timeout);
  if (err == EINTR && interrupt_pending(L, loop)) return STEP_INTERRUPTED;
  if (err && err != EINTR) {
    lua_pushfstring(L, "strand: %s wait failed: %s", loop->poller->name, strerror(err));
    return 1;
  }
  fire_timers(loop);
  return 0;
}

static int no_tasks(strand_loop *loop) { return loop->ntasks <= loop->nbackground; }

/* strand.run(fn): over when no task is left, or as soon as fn's task failed (its error is not
 * held back by tasks that would never end: the caller cancels them and raises it). */
static int run_over(strand_loop *loop) {
  strand_task *t = loop->run_task;
  return no_tasks(loop) || (t && t->status > STRAND_T_DONE);
}

/* strand.run()'s driver: until every task has finished (or the deadline passes). */
int strand_drain_run(lua_State *L, double deadline, strand_task *first) {
  strand_loop *loop = strand_loop_get(L);
  wait_begin(L, loop);                           /* raises unless we may drive */
  if (strand_task_of(L)) luaL_error(L, "strand.run: already inside a task");
  loop->driver = L;
  loop->run_task = first;
  while (!run_over(loop)) {
    if (deadline != STRAND_FOREVER && strand_now() >= deadline) break;
    int r = loop_step(L, loop, run_over);
    if (r == STEP_INTERRUPTED) break;           /* see interrupt_pending: the caller returns */
    if (r != 0) {
      loop->driver = NULL;
      loop->run_task = NULL;
      lua_error(L);
    }
  }
  int over = run_over(loop);
  loop->driver = NULL;
  loop->run_task = NULL;
  return over;
}

int strand_drain(lua_State *L, double deadline) { return strand_drain_run(L, deadline, NULL); }

/* A task that does not keep strand.run going (it is cancelled or left waiting when the rest end). */
void strand_task_background(strand_task *t) {
  if (t->background || t->status >= STRAND_T_DONE) return;
  t->background = 1;
  t->loop->nbackground++;
}

static int task_id_cmp(const void *a, const void *b) {
  lua_Integer x = (*(strand_task *const *)a)->id, y = (*(strand_task *const *)b)->id;
  return (x > y) - (x < y);
}

void strand_cancel_all(lua_State *L, int reason_idx) {
  strand_loop *loop = strand_loop_get(L);
  reason_idx = lua_absindex(L, reason_idx);
  luaL_checkstack(L, 4, NULL);
  lua_newtable(L);                               /* the tasks first: cancelling unanchors some */
  int list = lua_gettop(L), n = 0;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ANCHOR_KEY);
  lua_pushnil(L);
  while (lua_next(L, -2)) lua_rawseti(L, list, ++n);
  lua_pop(L, 1);
  /* in the order they were spawned (the list keeps them alive meanwhile) */
  strand_task **v = (strand_task **)lua_newuserdatauv(L, (size_t)n * sizeof *v + 1, 0);
  int m = 0;
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, list, i);
    strand_task *t = (strand_task *)lua_touserdata(L, -1);
    if (t && t->loop == loop) v[m++] = t;
    lua_pop(L, 1);
  }
  qsort(v, (size_t)m, sizeof *v, task_id_cmp);
  for (int i = 0; i < m; i++) strand_task_cancel(L, v[i], reason_idx);
  lua_pop(L, 2);
}

void strand_drain_uninterrupted(lua_State *L) {
  strand_loop *loop = strand_loop_get(L);
  lua_State *driver = loop->driver;
  loop->driver = L;
  loop->no_interrupt = 1;
  while (loop->ntasks > loop->nbackground) {
    if (loop_step(L, loop, no_tasks) != 0) {    /* a deadlock: nothing more can finish */
      lua_pop(L, 1);
      break;
    }
  }
  loop->no_interrupt = 0;
  loop->driver = driver;
}

/* Every idle connection has a task: with Lua's userdata header and its user value it is 136
 * bytes (a 144-byte malloc chunk); a field more would make it 144 (160). */
_Static_assert(sizeof(void *) != 8 || sizeof(strand_task) == 80, "strand_task grew");

/* fn and nargs arguments on top of L's stack -> the new task's userdata replaces them. */
strand_task *strand_task_spawn(lua_State *L, int nargs) {
  strand_loop *loop = strand_loop_get(L);
  int base = lua_gettop(L) - nargs;              /* index of fn */
  strand_task *t = (strand_task *)lua_newuserdatauv(L, sizeof *t, 1);   /* 1: the coroutine */
  memset(t, 0, sizeof *t);
  if (loop->task_mt_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, loop->task_mt_ref);
    lua_setmetatable(L, -2);
  } else {
    luaL_setmetatable(L, STRAND_TASK_META);
  }
  lua_State *co = lua_newthread(L);              /* fn args.. task co */
  if (nargs > LUA_MINSTACK - 3 && !lua_checkstack(co, nargs + 3))
    luaL_error(L, "strand.spawn: too many arguments");
  lua_setiuservalue(L, -2, 1);                   /* fn args.. task */
  lua_insert(L, base);                           /* task fn args.. */
  lua_pushcfunction(co, task_main);
  lua_pushcfunction(co, task_msgh);              /* task_main's message handler, at its 1 */
  lua_xmove(L, co, nargs + 1);                   /* task */
  t->loop = loop;
  t->co = co;
  t->id = loop->next_id++;
  t->status = STRAND_T_NEW;
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->anchor_ref);   /* task anchor */
  lua_pushvalue(L, -2);
  set_co_slot(co, anchor_add(L, loop, lua_gettop(L) - 1));
  lua_pop(L, 1);                                 /* task */
  loop->ntasks++;
  ready_push(loop, t);
  return t;
}

/* Cancel t with the reason at reason_idx (or none). */
void strand_task_cancel(lua_State *L, strand_task *t, int reason_idx) {
  strand_loop *loop = t->loop;
  if (t->status >= STRAND_T_DONE) return;
  reason_idx = lua_absindex(L, reason_idx);
  if (lua_isnone(L, reason_idx)) { lua_pushnil(L); reason_idx = lua_gettop(L); }
  strand_push_cancelled(L, reason_idx);          /* err */
  if (t->status == STRAND_T_NEW) {               /* never ran: finish it right here */
    ready_remove(loop, t);
    t->status = STRAND_T_CANCELLED;
    lua_settop(t->co, 0);
    lua_xmove(L, t->co, 1);                      /* co: err */
    unanchor_task(L, t, 0);
    loop->ntasks--;
    if (t->background) { t->background = 0; loop->nbackground--; }
    strand_join_wake_all(t, STRAND_READY);
    return;
  }
  strand_task_set_pending(L, t);
  t->cancel_pending = 1;
  if (t->waiting) strand_wake(t, STRAND_READY);
}

/* }==== */
