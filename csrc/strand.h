/* strand.h — the internal API every C file of strand/core.so shares:
 * the loop, tasks, waits, fd readiness, timers, shareable objects, serial and errors. */
#ifndef STRAND_H
#define STRAND_H

#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include <math.h>
#include <pthread.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#if LUA_VERSION_NUM != 504
#error "strand needs Lua 5.4"
#endif

#if defined(__GNUC__)
#define STRAND_API __attribute__((visibility("hidden")))
#else
#define STRAND_API
#endif

typedef struct strand_loop strand_loop;
typedef struct strand_task strand_task;

/* {==== time */

#define STRAND_FOREVER HUGE_VAL     /* "no deadline" */

STRAND_API double strand_now(void);  /* CLOCK_MONOTONIC, seconds */
/* Optional timeout argument at index arg: nil/none -> STRAND_FOREVER, a number t >= 0
 * -> absolute deadline now+t; anything else raises an argument error naming arg. */
STRAND_API double strand_opt_deadline(lua_State *L, int arg);
/* Same, but with a default timeout (seconds, or STRAND_FOREVER) used for nil. */
STRAND_API double strand_opt_deadline_def(lua_State *L, int arg, double def_timeout);

/* A node of the loop's timer min-heap. A task's wait deadline is a bare node (its task is
 * known from it: loop.c); every other timer is a strand_timer. */
typedef struct strand_tnode {
  double when;
  size_t index;                     /* 1-based heap slot, 0 = not armed */
} strand_tnode;

/* A timer in the loop's min-heap. `fire` runs on the loop's thread when `when` passes. */
typedef struct strand_timer {
  strand_tnode node;
  void (*fire)(struct strand_timer *tm);
} strand_timer;

STRAND_API void strand_timer_start(strand_loop *loop, strand_timer *tm, double when);
STRAND_API void strand_timer_stop(strand_loop *loop, strand_timer *tm);

/* }==== */

/* {==== waits
 *
 * Every blocking operation follows one pattern (see docs/internals.md):
 *
 *   static int op_k(lua_State *L, int status, lua_KContext ctx) {
 *     int outcome = strand_resumed(L, status);   // raises if the task was cancelled
 *     for (;;) {
 *       if (outcome == STRAND_TIMEOUT) return strand_fail_msg(L, "timeout", "ETIMEDOUT");
 *       if (outcome == STRAND_CLOSED)  return strand_fail_msg(L, "closed", "ECLOSED");
 *       ...try the non-blocking syscall; EINTR -> retry; success -> push results, return...
 *       strand_io_clear(&s->io, STRAND_READ);              // on EAGAIN
 *       outcome = strand_wait_io(L, &s->io, STRAND_READ, deadline, ctx, op_k);
 *     }
 *   }
 *   static int op(lua_State *L) { ...check args...; return op_k(L, LUA_OK, 0); }
 *
 * Inside a task strand_wait_* never return: they yield (lua_yieldk) and the loop later
 * calls op_k with status LUA_YIELD. Outside a task (main chunk, a thread's top level) they
 * drive the loop until the wait is over and return the outcome. From a coroutine strand does
 * not own while the loop is being driven, or across a C boundary that cannot yield, they raise.
 * Anything the continuation needs must be on the Lua stack (it is kept across the yield) or in
 * ctx; the deadline is usually stored as a number on the stack.
 */

#define STRAND_READ   1
#define STRAND_WRITE  2
#define STRAND_HUP    4   /* in io->ready, set by edge-triggered pollers: the peer hung up or an
                               * error is pending, so a short read does not mean "drained" */

#define STRAND_READY   0   /* the awaited event happened (or: retry the operation) */
#define STRAND_TIMEOUT 1   /* the deadline passed */
#define STRAND_CLOSED  2   /* the object waited on was closed meanwhile */

/* An fd watched by the loop, embedded in the object that owns the fd. Registration with the
 * poller is lazy (first wait) and persistent; readiness is remembered (edge-triggered). */
typedef struct strand_io {
  int fd;
  unsigned ready;          /* STRAND_READ|STRAND_WRITE believed ready (cleared on EAGAIN) */
  unsigned registered;     /* internal */
  int pollidx;             /* internal (poll backend) */
  strand_loop *loop;       /* set on registration */
  strand_task *reader;     /* who waits to read, at most one */
  strand_task *writer;     /* who waits to write, at most one */
  unsigned read_only;      /* set after init: only ever waited on for reading (epoll then does
                              not report writability, which an eventfd always has) */
} strand_io;

/* No syscall; readiness starts "unknown = try it". */
STRAND_API void strand_io_init(strand_io *io, int fd);
/* Wake any waiter with STRAND_CLOSED and drop the registration. Call BEFORE close(fd).
 * Does not close the fd. Idempotent. */
STRAND_API void strand_io_close(strand_io *io);
/* After EAGAIN: the direction is not ready until the poller says so again. */
#define strand_io_clear(io, ev) ((io)->ready &= ~(unsigned)(ev))
#define strand_io_maybe(io, ev) (((io)->ready & (unsigned)(ev)) != 0)

/* Wait for readiness of io in direction ev (STRAND_READ or STRAND_WRITE), until deadline.
 * Raises "socket is already being read by another task" style errors if another task waits
 * on the same direction. See the pattern above. */
STRAND_API int strand_wait_io(lua_State *L, strand_io *io, int ev, double deadline,
                              lua_KContext ctx, lua_KFunction k);

/* Wait only for the deadline (sleep). strand_wait_timer(L, now, ...) lets every other
 * ready task run once, then resumes. */
STRAND_API int strand_wait_timer(lua_State *L, double deadline, lua_KContext ctx, lua_KFunction k);

/* A FIFO of waiting tasks owned by one loop (one OS thread): for locks between tasks, anything
 * woken from the same thread (a task's joiners are a ring of their own: strand_wait_join).
 * Zero-initialise. */
typedef struct strand_waitq { strand_task *head, *tail; } strand_waitq;
STRAND_API int strand_wait_queue(lua_State *L, strand_waitq *q, double deadline,
                                 lua_KContext ctx, lua_KFunction k);
/* Wake the first / every waiter of q with an outcome. Returns how many were woken. */
STRAND_API int strand_waitq_wake_one(strand_waitq *q, int outcome);
STRAND_API int strand_waitq_wake_all(strand_waitq *q, int outcome);

/* First statement of every continuation: LUA_OK (first call) -> STRAND_READY; LUA_YIELD ->
 * the outcome of the wait. If the task was cancelled meanwhile this raises the cancellation
 * error instead (so <close> variables and pcall handlers of the task run). */
STRAND_API int strand_resumed(lua_State *L, int status);

/* Ctrl-C: a main-program wait ended early (as STRAND_TIMEOUT) because lua.c's SIGINT hook is
 * pending; it raises "interrupted!" when the blocking call returns. A call that would raise
 * on that timeout ("timeout" from result()) returns instead when this is true. */
STRAND_API int strand_interrupted(lua_State *L);

/* The task L runs in, or NULL (main chunk, foreign coroutine). */
STRAND_API strand_task *strand_task_of(lua_State *L);
/* The loop of this Lua state (created on first use). */
STRAND_API strand_loop *strand_loop_get(lua_State *L);
/* Before the loop exists: make its poller on first need, not with the loop (threads' states). */
STRAND_API void strand_loop_defer_poller(lua_State *L);
STRAND_API int strand_loop_poller_deferred(lua_State *L);   /* strand_loop_defer_poller was called */
/* Whether this state's loop exists and is not closed (finalizers at lua_close may run after
 * the loop's own: tasks must not touch it then). */
STRAND_API int strand_loop_alive(lua_State *L);
/* A per-loop scratch buffer of STRAND_SCRATCH bytes for reads (valid until the next yield). */
#define STRAND_SCRATCH 65536
STRAND_API char *strand_loop_scratch(strand_loop *loop);

/* }==== */

/* {==== errors: "nil, message, CODE" for runtime failures */

/* Pushes nil, short lowercase message for err, errno name ("ECONNREFUSED"); returns 3. */
STRAND_API int strand_fail(lua_State *L, int err);
/* Pushes nil, msg and (if code != NULL) code; returns 2 or 3. */
STRAND_API int strand_fail_msg(lua_State *L, const char *msg, const char *code);
STRAND_API const char *strand_errmsg(int err);   /* "connection refused", "timeout", ... */
STRAND_API const char *strand_errname(int err);  /* "ECONNREFUSED" */

/* }==== */

/* {==== shareable objects: C objects used by reference from several Lua states
 * (threads) and, when their memory is MAP_SHARED, by processes forked after creation.
 *
 * The Lua side holds a "box" userdata whose first field is the strand_object pointer (then its
 * seal, see strand_object_sealed). The struct itself is process-local heap memory (so a fork
 * duplicates the refcount naturally), and may point at MAP_SHARED memory for state that
 * processes share. */

typedef struct strand_object strand_object;
typedef struct strand_objtype {
  const char *name;                        /* metatable name, e.g. "strand.queue" */
  void (*destroy)(strand_object *o);       /* the last reference went away */
} strand_objtype;
/* Optional hook of a type (shm.c): serial is encoding a reference to o (another state may see
 * it): NULL lets it cross, a message refuses (the encode raises it). strand_object_crossing
 * runs the hook of o's type, if any. */
STRAND_API void strand_objtype_on_cross(const strand_objtype *t,
                                        const char *(*cross)(strand_object *o));
STRAND_API const char *strand_object_crossing(strand_object *o);

struct strand_object {
  atomic_long refs;
  const strand_objtype *type;
};

STRAND_API void strand_object_init(strand_object *o, const strand_objtype *t);  /* refs = 1 */
STRAND_API void strand_object_retain(strand_object *o);
STRAND_API void strand_object_release(strand_object *o);
/* Push a new box for o (takes ownership of one reference the caller holds). The metatable
 * o->type->name must have been created with strand_object_newmeta in this state; if it was not,
 * the area's opener is called through package.loaded["strand.core"]. */
STRAND_API void strand_object_push(lua_State *L, strand_object *o);
/* The object in the box at idx if it is of type t (raises a type error naming the argument
 * otherwise). */
STRAND_API strand_object *strand_object_check(lua_State *L, int idx, const strand_objtype *t);
/* Any strand object at idx, or NULL. */
STRAND_API strand_object *strand_object_test(lua_State *L, int idx);
/* The object of the box at idx (any type, not closed), or NULL: a box is told by a sealed word
 * (its pointer ^ a per-process random key) instead of its metatable, for hot methods. */
STRAND_API strand_object *strand_object_sealed(lua_State *L, int idx);
/* Create the metatable for t: __index = methods, __gc/__close release the box, __name = t->name,
 * __strand_object = true, plus any metamethods given. Leaves it on the stack. */
STRAND_API void strand_object_newmeta(lua_State *L, const strand_objtype *t,
                                      const luaL_Reg *methods, const luaL_Reg *metamethods);
/* Register t so that serial can find it by name when decoding in another state. */
STRAND_API void strand_objtype_register(const strand_objtype *t);
STRAND_API const strand_objtype *strand_objtype_find(const char *name);

/* }==== */

/* {==== process-shared objects (shm.c): the base of locks, queues, shared dicts...
 *
 * State lives in one family-wide shared arena (MAP_SHARED, reserved once when the module is
 * opened, inherited by every forked process: one descriptor, one mapping) under a robust
 * process-shared mutex per object. Waiting goes through each state's loop: one eventfd per Lua
 * state (its "home"), and per (state, object, channel) a waiter record in the arena linked into
 * the channel's list. The protocol, in shm.c's header comment: under the mutex a waiter checks
 * its condition and, if it must wait, counts itself in the channel's sleepers; whoever changes
 * the state calls strand_shm_signal, which fires the records of the channel while a sleeper can
 * proceed (a write to the home's eventfd, or through the home process's relay thread). Nothing
 * is written when nobody sleeps, so the uncontended path makes no syscall. Never call anything
 * that can raise while locked. */

#define STRAND_SHM_MAXCHAN 3
typedef struct strand_shm_chan {
  uint32_t sleepers;              /* tasks asleep on the channel, anywhere (see above) */
  uint32_t signalled;             /* internal: its sleepers may proceed */
  uint64_t list;                  /* internal: its waiter records */
} strand_shm_chan;

/* An object's block in the arena starts with this head; its channels follow, then (objects
 * made with a reserve) the storage accounting, then its state at stateoff16 * 16. */
typedef struct strand_shm_head {
  pthread_mutex_t mu;
  uint32_t changes;               /* bumped by every kick: what spinning waiters watch */
  int32_t last_tid;               /* the thread that locked last (any process) */
  uint32_t arefs;                 /* processes holding it */
  uint8_t shared;                 /* more than one thread has used it: worth spinning */
  uint8_t nchan, growable, stateoff16;
  uint32_t blksize;               /* bytes asked for the block */
  uint32_t crossed;               /* seen by another state or process (serial, fork) */
  uint64_t blocks;                /* chain of the blocks it allocated (offsets), 0 = none */
} strand_shm_head;

typedef struct strand_shm {
  strand_object obj;              /* first: a strand_shm is a strand_object */
  strand_shm_head *head;          /* the object's block in the arena */
  struct strand_shm *lnext, *lprev;   /* internal: this process's objects (fork accounting) */
} strand_shm;                     /* 40 bytes: a process's own view of the object */
#define strand_shm_chans(s) ((strand_shm_chan *)((s)->head + 1))
#define strand_shm_sleepers(s, ch) (strand_shm_chans(s)[ch].sleepers)
#define strand_shm_state(s) ((void *)((char *)(s)->head + (s)->head->stateoff16 * 16u))

/* References by arena offset, valid in every process of the family (serial uses them, so an
 * object made after a fork still crosses between the processes): the areas register each type
 * with the size of its process-local struct and an optional view hook (fills the struct's own
 * fields for an existing object: 0 or an errno). strand_shm_offset: the object's head offset,
 * 0 if o is not such an object. strand_shm_view: this process's object for the head at off (a
 * new reference; made if this process had none), NULL if it cannot be made. strand_shm_aref:
 * one family reference more (+1) or less (-1; the last frees the object). */
STRAND_API void strand_shm_type(const strand_objtype *t, size_t objsize, int (*view)(strand_shm *s));
/* After strand_shm_type: repair(s) runs under the mutex when a locker finds that the previous
 * holder died (EOWNERDEAD), before anything else sees the state: it finishes a journaled change. */
STRAND_API void strand_shm_on_repair(const strand_objtype *t, void (*repair)(strand_shm *s));
STRAND_API uint64_t strand_shm_offset(strand_object *o);
STRAND_API strand_object *strand_shm_view(uint64_t off, const strand_objtype *t);
STRAND_API void strand_shm_aref(uint64_t off, int delta);
/* A forked process about to _exit: its views give back their family references (refleak). */
STRAND_API void strand_shm_exiting(void);
/* After a fork() made with strand's fork hooks, in the forking thread: failed = 1 (no child) gives
 * back the family references the hook counted for the child; 0 forgets them. */
STRAND_API void strand_shm_forked(int failed);
/* Test hook (queue._test_arena): pushes the family's live objects and the arena's bytes in use. */
STRAND_API int strand_shm_test_arena(lua_State *L);
STRAND_API int strand_shm_test_hold_fork(lua_State *L);

/* Make the family's arena now (the module's openers do; a forking area must have it before the
 * fork so that the family shares one). 0 or an errno. */
STRAND_API int strand_arena_init(void);
STRAND_API extern char *strand_arena_base;
/* bytes of address space the arena has (0 before it exists; 32 MiB under valgrind) */
STRAND_API uint64_t strand_arena_size(void);

/* A new object of objsize bytes (>= sizeof(strand_shm), zeroed) with statesize bytes of zeroed
 * shared state and nchan wait channels; reserve > 0: it may allocate storage (strand_shm_alloc)
 * up to reserve bytes, and its state is 64-byte aligned. refs = 1; the caller fills its state,
 * then strand_object_push. Returns NULL with errno (ENOMEM...) when out of memory: the
 * constructor then returns strand_shm_fail(L, t, errno) (nil, "cannot create a ...", CODE). */
STRAND_API strand_shm *strand_shm_new(lua_State *L, size_t objsize, const strand_objtype *t,
                                      size_t statesize, int nchan, size_t reserve);
STRAND_API int strand_shm_fail(lua_State *L, const strand_objtype *t, int err);
STRAND_API void strand_shm_free(strand_shm *s);   /* this process's reference and struct */
STRAND_API int strand_shm_lock(strand_shm *s);    /* 0 or an errno; a dead owner is recovered */
STRAND_API void strand_shm_lockL(lua_State *L, strand_shm *s);   /* raises instead */
STRAND_API void strand_shm_unlock(strand_shm *s);
/* Locked, after a change: should = a sleeper of ch can proceed now; kick = the change may have
 * made it so (spinning waiters look again). */
STRAND_API void strand_shm_signal(strand_shm *s, int ch, int should, int kick);
/* Unlocked, before counting yourself: push this state's waiter for (s, ch). Raises what the wait
 * would refuse (cannot yield here, foreign coroutine, pending cancellation). */
STRAND_API void strand_shm_prepare(lua_State *L, strand_shm *s, int ch);
/* Spin before sleeping: read strand_shm_changes locked, unlock, then strand_shm_spin watches it
 * for a few microseconds (when another CPU may change it and nothing else is ready here).
 * Returns 1 if it spun (re-check, then sleep), 0 if it did not. */
STRAND_API uint32_t strand_shm_changes(strand_shm *s);
STRAND_API int strand_shm_spin(lua_State *L, strand_shm *s, uint32_t seen);
/* A change made with atomics instead of under the mutex: tell spinning waiters. */
STRAND_API void strand_shm_changed(strand_shm *s);
/* Unlocked, counted in the channel's sleepers, waiter on top: wait (yields in a task; may also
 * return STRAND_READY at once, in a task too, when the channel fired meanwhile). */
STRAND_API int strand_shm_wait(lua_State *L, double deadline, lua_KContext ctx, lua_KFunction k);
/* After the wait (and after uncounting), waiter on top: pass the polling on in this state;
 * broadcast: the channel's sleepers wait for different things, all of them must look. */
STRAND_API void strand_shm_leave(lua_State *L, int broadcast);
/* Storage of an object made with reserve > 0 (locked): arena offsets, 0 = none (errno ENOSPC
 * past the reserve, ENOMEM); freed with the object at the latest. */
STRAND_API uint64_t strand_shm_alloc(strand_shm *s, size_t n);
STRAND_API void strand_shm_release(strand_shm *s, uint64_t off);
#define strand_shm_at(s, off) ((void)(s), (void *)(strand_arena_base + (off)))
/* getpid() and the kernel thread id, without a syscall after the first call (forked children
 * start over): who put an item, who owns an rlock. */
STRAND_API int strand_shm_pid(void);
STRAND_API int strand_shm_tid(void);
/* owner.c: this process's identity (pid and start time, > 0; no syscall after the first call
 * in a process), its pid, and whether the process it names has ended (gone, a zombie, or its
 * pid recycled): a lock held by a dead process is taken over. */
STRAND_API int64_t strand_owner_self(void);
STRAND_API int strand_owner_pid(int64_t id);
STRAND_API int strand_owner_dead(int64_t id);
/* shm.c: this thread's put-intent record (NULL if none can be had): a ring put stores pos + 1
 * and the queue's arena offset here before claiming a position, and clears obj once published;
 * strand_intent_dead(obj, pos): some thread was claiming it and every such thread has died. */
/* 64 bytes (pad): the written words (obj, pos) of two threads' records never share a cache line
 * (a producer's and a consumer's records side by side bounced one line on every put and get). */
typedef struct strand_intent { uint64_t obj, pos; int64_t owner; uint64_t next, pad[4]; } strand_intent;
STRAND_API strand_intent *strand_intent_mine(void);
STRAND_API int strand_intent_dead(uint64_t obj, uint64_t pos);
/* A ring get stores the queue's offset | STRAND_INTENT_GET in obj (pos untouched) before it
 * claims and clears obj once the slot it took is free again; strand_intent_dead_get(obj, pos):
 * some get on obj was in progress (it may have claimed pos) and every such getter has died. */
#define STRAND_INTENT_GET ((uint64_t)1 << 63)
STRAND_API int strand_intent_dead_get(uint64_t obj, uint64_t pos);
/* A test hook (shm.c): the home records on s's wait lists name pid and fd; how many. */
STRAND_API int strand_shm_test_forge_homes(strand_shm *s, int pid, int fd);
/* A test hook (shm.c): s's storage blocks and their bytes (*used); -1 if its list is corrupt. */
STRAND_API int64_t strand_shm_test_blocks(strand_shm *s, uint64_t *used);
/* A test hook (shm.c): this process _exits the n-th time an object's storage list is half
 * changed at point 1 (a block being linked) or 2 (a block being unlinked). */
STRAND_API void strand_shm_test_die(int point, int n);
/* This thread's record without a call (0 until strand_intent_mine made it; a forked child
 * forgets the parent's): for the per-put and per-get stores. */
extern __thread uint64_t strand_intent_off __attribute__((tls_model("initial-exec")));
static inline strand_intent *strand_intent_fast(void) {
  uint64_t off = strand_intent_off;
  return off ? (strand_intent *)(strand_arena_base + off) : strand_intent_mine();
}
/* Methods as closures over their metatable (upvalue 1): strand_shm_newmeta makes the metatable
 * of t (strand_object_newmeta) with __index = methods and __close = close (if given), leaving
 * the metatable and the method table on the stack; strand_shm_self checks index 1 in them. */
STRAND_API void strand_shm_newmeta(lua_State *L, const strand_objtype *t, const luaL_Reg *methods,
                                   lua_CFunction close);
STRAND_API strand_shm *strand_shm_self(lua_State *L);

/* }==== */

/* {==== serial (serial.c): Lua values <-> flat byte strings, for threads and processes */

#define STRAND_SERIAL_FUNCTIONS 1   /* encode/decode Lua functions (bytecode) */
#define STRAND_SERIAL_NOADOPT 0x100 /* decode: the string keeps its object references (the
                                       values retain their own), e.g. read without taking */

/* Encode the n values at stack indices first..first+n-1 into one string pushed on the stack.
 * Raises "<path>: cannot copy a C function" and the like. strand objects are encoded by
 * reference and the string holds one reference to each (adopted by decode, or dropped by
 * strand_serial_release). */
STRAND_API void strand_serial_encode(lua_State *L, int first, int n, int flags);
/* Decode p[0..len) and push the values; returns how many. On malformed input pushes nothing
 * but an error message and returns -1. Never raises on bad input (memory errors aside). */
STRAND_API int strand_serial_decode(lua_State *L, const char *p, size_t len, int flags);
/* Drop the object references held by an encoded string that will never be decoded. */
STRAND_API void strand_serial_release(const char *p, size_t len);
/* Draw this process's object-reference key now (once): a fork must come after it, so that the
 * family shares one key (a child drawing its own could not read its parent's references). */
STRAND_API void strand_serial_key(void);
/* Drop only its family-wide references (shared objects by arena offset): for a string another
 * process encoded (its process-local references are that process's). */
STRAND_API void strand_serial_release_shared(const char *p, size_t len);
/* The string's object references are all by arena offset (locks, queues, dicts...: valid in
 * every process of the family), none by pointer (valid in this process only): 1, else 0. */
STRAND_API int strand_serial_family_only(const char *p, size_t len);
int strand_serial_family_or_nil(lua_State *L);
/* The list {t[i..j], n = j-i+1} as one value (after a leading true when lead), the bytes
 * strand_serial_encode gives for that table, without making it (pool map chunks). */
STRAND_API void strand_serial_encode_list(lua_State *L, int t, lua_Integer i, lua_Integer j,
                                          int lead, int flags);
/* strand_serial_encode / strand_serial_encode_list (no lead) whose refusal names an argument of
 * the caller: "bad argument #N to 'fname' (value[3].x: cannot copy a coroutine)", N = argno for
 * the first value (the list), one more for each further value. fname must outlive the call. */
STRAND_API void strand_serial_encode_arg(lua_State *L, int first, int n, int flags,
                                         const char *fname, int argno);
STRAND_API void strand_serial_encode_list_arg(lua_State *L, int t, lua_Integer i, lua_Integer j,
                                              int flags, const char *fname, int argno);
/* Data of the form "true, list" without back-references: the list's items stored (raw) in the
 * table at dest from dest[first] on; returns how many. -1 (nothing pushed) for any other
 * data (decode it the usual way); -2 with a message pushed when malformed. */
STRAND_API int strand_serial_decode_into(lua_State *L, const char *p, size_t len, int flags,
                                         int dest, lua_Integer first);
/* A list as strand_serial_encode_list encodes it (without a lead), read item by item (a pool
 * worker's map chunk, poollink.c). open: 1 when p[0..len) is one such list without
 * back-references (l->count items), else 0 (decode it the usual way). next pushes the next item
 * (objects retained as with NOADOPT: the string keeps its references) and end reads the list's
 * own fields and checks that nothing follows; both raise "malformed serial data: ..." (call them
 * protected) and need nilslot, a stack slot holding nil. */
typedef struct strand_serial_list { const char *p, *end; uint32_t count, nrec; } strand_serial_list;
STRAND_API int strand_serial_list_open(const char *p, size_t len, strand_serial_list *l);
STRAND_API void strand_serial_list_next(lua_State *L, strand_serial_list *l, int flags, int nilslot);
STRAND_API void strand_serial_list_end(lua_State *L, strand_serial_list *l, int flags, int nilslot);
/* Writing "true, list" of count items (what strand_serial_encode_list with lead gives) piece by
 * piece: its head (STRAND_SERIAL_LIST_HEAD bytes), each plain item (put_plain: the value at idx
 * if it is nil, a boolean, a number or a string, written to o[0..room); returns the bytes
 * written, 0 for any other value, or more than room, writing nothing, when it needs that much),
 * then its tail (the n field, at most STRAND_SERIAL_LIST_TAIL bytes). */
#define STRAND_SERIAL_LIST_HEAD 13
#define STRAND_SERIAL_LIST_TAIL 13
STRAND_API size_t strand_serial_list_head(char *o, uint32_t count);
STRAND_API size_t strand_serial_put_plain(lua_State *L, int idx, char *o, size_t room);
STRAND_API size_t strand_serial_list_tail(char *o, uint32_t count);

/* }==== */

/* {==== loop internals: shared by loop.c, task.c and the pollers only */

struct strand_task {
  strand_loop *loop;
  lua_State *co;                  /* NULL for the loop's main pseudo-task */
  lua_Integer id;
  unsigned char status;           /* STRAND_T_* */
  unsigned char waiting;          /* a wait is armed */
  unsigned char outcome;          /* outcome of the last wait */
  unsigned char cancel_pending;   /* deliver the cancel object at the next resume/wait */
  unsigned char observed;         /* joined or result() taken: no unjoined-error report */
  unsigned char inready;          /* linked in the ready queue */
  unsigned char bare;             /* last yielded with a bare coroutine.yield */
  unsigned char background;       /* does not keep strand.run going (a pool's reader) */
  /* (no counts: a NEW task's first resume takes all of co's stack but its function, and a
   * finished one's results are all of co's stack) */
  union {                         /* a task is in the ready queue or in a wait_q, never both */
    struct { strand_task *next, *prev; };     /* ready queue (inready) */
    struct { strand_task *qnext, *qprev; };   /* links in wait_q */
  };
  strand_tnode deadline;          /* the wait's deadline (a node of the loop's timer heap) */
  union {                         /* one wait at a time */
    strand_io *wait_io;           /* io waited on, if any */
    uintptr_t wait_qt;            /* or the queue waited in, its address | 1, or the task whose
                                     joiners it is among, its address | 3 (loop.c) */
  };
  strand_task *joiners;           /* tasks joining this one: a ring (the last is the first's
                                     qprev), strand_wait_join */
};   /* kept small: every idle connection has one */

/* Wait (as strand_wait_queue) until t's joiners are woken: strand_join_wake_all(t), when t ends. */
STRAND_API int strand_wait_join(lua_State *L, strand_task *t, double deadline,
                                lua_KContext ctx, lua_KFunction k);
STRAND_API int strand_join_wake_all(strand_task *t, int outcome);

enum { STRAND_T_NEW, STRAND_T_READY, STRAND_T_RUNNING, STRAND_T_WAITING,
       STRAND_T_DONE, STRAND_T_FAILED, STRAND_T_CANCELLED };

/* A readiness backend (ae-style vtable). */
typedef struct strand_poller {
  const char *name;
  void *(*init)(strand_loop *loop);                 /* NULL + errno on failure */
  int (*add)(void *p, strand_io *io);               /* start watching io->fd: 0 or errno */
  void (*interest)(void *p, strand_io *io);         /* io->reader/writer changed */
  void (*del)(void *p, strand_io *io);
  int (*wait)(void *p, double timeout);             /* timeout < 0: forever; calls strand_io_event */
  void (*free)(void *p);
} strand_poller;

STRAND_API extern const strand_poller strand_poller_epoll;
STRAND_API extern const strand_poller strand_poller_poll;
/* PROTOTYPE (docs/uring.md), STRAND_POLLER=uring: io_uring readiness plus, for stream sockets,
 * reads from a multishot recv and SEND SQEs. strand_uring_recv: like recv(2) (-1 + errno), or
 * -2: not this way, use recv(2). strand_uring_send: -1 not this way; 1 a send is in flight (wait
 * for STRAND_WRITE); 2 done, *res its result (-errno or bytes); the string at sidx is anchored
 * until the CQE. *seq (0: none yet) names the caller's send across its waits (its result stays
 * for it while other tasks send); another task's send in flight is reaped, or waited for while
 * the socket is full (strand_wait_io raises "already writing" if its owner waits).
 * strand_uring_send_abandon: the sendall of seq (len bytes asked) gave up (timeout): its send is
 * cancelled, the bytes it took before are returned. */
STRAND_API extern const strand_poller strand_poller_uring;
/* mode: STRAND_URING_NONBLOCK (setblocking(false): never waits), STRAND_URING_SHARED (the socket is
 * open in another process: its multishot is cancelled for good, queued bytes come first, then -2) */
#define STRAND_URING_NONBLOCK 1
#define STRAND_URING_SHARED 2
STRAND_API long strand_uring_recv(strand_io *io, char *buf, size_t len, int mode);
/* Before a fork: cancel the loop's multishot recvs for good (bounded wait) and hand each fast-path
 * socket's queued bytes to take(io). strand_sock_prefork: the same for the calling state's loop,
 * and every socket made so far reads as shared (sockio.c; process.c calls it before fork). */
STRAND_API void strand_uring_prefork(strand_loop *loop, void (*take)(strand_io *io));
STRAND_API void strand_sock_prefork(lua_State *L);
/* strand_uring_forking: before a fork, whatever the caller's poller: every other io_uring loop
 * of the process stops its recvs now (their sockets are the child's too). loop: the caller's or NULL. */
STRAND_API void strand_uring_forking(strand_loop *loop);
/* strand_uring_disarm: cancel the fd's multishot recv and wait (bounded) for its end; what it took
 * stays queued (strand_uring_take copies it out). forever: the fd is handed out, never re-armed. */
STRAND_API void strand_uring_disarm(strand_io *io, int forever);
STRAND_API size_t strand_uring_take(strand_io *io, char *buf, size_t len);
/* loop.c, in a forked child: what of the parent's ring stays (queued bytes, read once more here) */
STRAND_API void *strand_uring_forked(void *pstate);
/* poller_epoll.c, in a forked child: closes the parent's epoll fd, frees nothing */
STRAND_API void strand_epoll_forked(void *pstate);
STRAND_API int strand_uring_send(lua_State *L, strand_io *io, int sidx, const char *p, size_t len,
                                 long *res, uint32_t *seq);
STRAND_API long strand_uring_send_abandon(strand_io *io, uint32_t seq, size_t len);
/* a send in flight on io (another task's sendall): submitted and reaped if done (io is then
 * writable); 1 while still in flight. sockio.c's writers by send(2) call it before they wait. */
STRAND_API int strand_uring_settle(strand_io *io);

/* For a poller's wait: timeout (seconds, < 0: forever) as the timespec ppoll and epoll_pwait2
 * take, filled in *ts; NULL for forever. */
static inline struct timespec *strand_wait_timespec(double timeout, struct timespec *ts) {
  if (timeout < 0) return NULL;
  ts->tv_sec = (time_t)timeout;
  ts->tv_nsec = (long)((timeout - (double)ts->tv_sec) * 1e9);
  if (ts->tv_nsec >= 1000000000L) ts->tv_nsec = 999999999L;
  return ts;
}

/* From a poller: io became ready for ev (STRAND_READ|STRAND_WRITE). */
STRAND_API void strand_io_event(strand_io *io, unsigned ev);

struct strand_loop {
  long refs;                      /* the Lua box + every registered io */
  int closed;                     /* the Lua state is closing */
  lua_State *L;                   /* main thread of the owning state */
  lua_State *driver;              /* who drives the loop right now (NULL: nobody) */
  const strand_poller *poller;
  void *pstate;
  strand_task main;               /* pseudo-task: waits made outside any task */
  strand_task *current;           /* task being resumed */
  strand_task *ready_head, *ready_tail;
  size_t nready;
  uintptr_t *heap;                /* strand_tnode addresses; bit 0 set: a task's deadline */
  size_t nheap, capheap;
  size_t ntasks;                  /* tasks not finished */
  size_t nio_waits;               /* armed io waits */
  lua_Integer next_id;
  char *scratch;
  int no_interrupt;               /* strand.run cleaning up after Ctrl-C: drive on regardless */
  int forked;                     /* abandoned by a forked child (strand_loop_forked) */
  size_t nbackground;             /* unfinished tasks marked background */
  int anchor_ref;                 /* registry ref of the anchor table (loop.c) */
  lua_Integer anchor_len, anchor_free;   /* its slots in use or free; head of the free ones */
  int task_mt_ref;                /* registry ref of strand.task's metatable, or LUA_NOREF */
  unsigned skipped_polls;         /* zero-timeout polls skipped in a row (loop_step) */
  strand_task *run_task;          /* strand.run(fn)'s task while it drains: its failure ends it */
};

/* loop.c, for process.c: in a forked child, abandon the parent's loop and make a fresh one. */
STRAND_API void strand_loop_forked(lua_State *L);
/* loop.c: t no longer keeps strand.run (strand_drain) going. */
STRAND_API void strand_task_background(strand_task *t);

/* loop.c, used by task.c */
STRAND_API strand_task *strand_task_spawn(lua_State *L, int nargs);  /* fn + nargs on stack -> task pushed */
STRAND_API void strand_task_cancel(lua_State *L, strand_task *t, int reason_idx);
STRAND_API int strand_push_task(lua_State *L, strand_task *t);    /* userdata of a live task, or nil */
/* The pending cancellation of t: push it (nil if none) / set it from the top (popped). */
STRAND_API void strand_task_push_pending(lua_State *L, strand_task *t);
STRAND_API void strand_task_set_pending(lua_State *L, strand_task *t);
STRAND_API void strand_wake(strand_task *t, int outcome);
STRAND_API int strand_drain(lua_State *L, double deadline);       /* drive until no task is left */
/* strand_drain that also stops once `first` has failed or been cancelled (strand.run(fn)):
 * 1 when over, 0 when a pending Ctrl-C stopped it. */
STRAND_API int strand_drain_run(lua_State *L, double deadline, strand_task *first);
/* Cancel every task of this state's loop with the reason at reason_idx (strand.run after Ctrl-C). */
STRAND_API void strand_cancel_all(lua_State *L, int reason_idx);
/* strand_drain without a deadline that a pending Ctrl-C does not stop, and that stops quietly
 * at a deadlock (for the cleanup after Ctrl-C). */
STRAND_API void strand_drain_uninterrupted(lua_State *L);
STRAND_API void strand_push_cancelled(lua_State *L, int reason_idx);  /* a new cancellation error */
STRAND_API int strand_is_cancelled(lua_State *L, int idx);
#define STRAND_TASK_META "strand.task"
#define STRAND_CANCELLED_META "strand.cancelled"

/* }==== */

/* {==== area openers: each pushes its table; module.c puts it at core[name].
 * Weak so that the tree links while an area is being written. */

#define STRAND_AREAS(X) \
  X(socket) X(selector) X(serial) X(thread) X(sync) X(queue) X(shared) \
  X(process) X(ssh) X(netcompat) \
  X(_proc)   /* procinfo.c: what the process holds, for the specs' leak checks */ \
  X(_uring)  /* poller_uring.c: the io_uring buffer pool's figures, for the flow-control specs */

#define STRAND_DECLARE_OPENER(name) \
  STRAND_API int strand_open_##name(lua_State *L) __attribute__((weak));
STRAND_AREAS(STRAND_DECLARE_OPENER)
#undef STRAND_DECLARE_OPENER

/* module.c: areas open in a state on first use of core[name]; this opens all of them now
 * (an object copied into a state whose area is not open yet needs its metatable). */
STRAND_API void strand_core_open_areas(lua_State *L);

/* chunk.c: luaL_loadbuffer for the Lua source embedded in C (src must be a static array): the
 * first load in the process compiles it, later ones (other threads' states) load its bytecode. */
STRAND_API int strand_load_chunk(lua_State *L, const char *src, size_t len, const char *name);
/* chunk.c: the standard Lua searcher, except that "strand" and "strand.*" files are compiled
 * once per process (bytecode kept while the file is unchanged). Threads' states use it. */
STRAND_API int strand_chunk_searcher(lua_State *L);

/* pidwait.c: a close-on-exec descriptor readable once child pid has exited (it is not reaped):
 * the pidfd, or without pidfd_open (ENOSYS: old kernels, valgrind) an eventfd set by a thread. */
STRAND_API int strand_pidfd_open(int pid);

/* }==== */

#endif
