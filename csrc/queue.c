/* queue.c — FIFO, LIFO and priority queues for tasks, threads and forked processes: FIFOs in a
 * lock-free ring (unbounded ones with an ordered overflow), LIFO and priority queues in the
 * shared arena (shm.c) under its mutex; waits go through the loop. */
#include "strand.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Counts of the paths puts and gets take (bench/queue_paths.sh): only in a build made with
 * -DSTRAND_QUEUE_STATS, printed on stderr at exit when STRAND_QUEUE_STATS is set. */
#ifdef STRAND_QUEUE_STATS
#include <stdio.h>
enum { QS_PUT_RING, QS_PUT_LOCKED, QS_PUT_LOCKED_RING, QS_PUT_OVF, QS_MOVE_PUT, QS_MOVED_PUT,
       QS_GET_PLAIN, QS_GET_RING, QS_GET_LOCKED, QS_MOVE_GET, QS_MOVED_GET, QS_GET_OVF,
       QS_WAKE_GET, QS_WAKE_PUT, QS_SLEEP_GET, QS_SLEEP_PUT, QS_SPIN_GET, QS_SPIN_PUT, QS_N };
static const char *const qs_names[QS_N] = {
  "put into the ring, lock-free", "put locked (unbounded: the ring full or the overflow in use)",
  "  of which into the ring", "  of which into the overflow", "moves by putters",
  "  items moved", "get, fast path (plain value)", "get, general path (from the ring)",
  "get locked (the ring empty, the overflow not)", "moves by getters", "  items moved",
  "get straight from the overflow", "wake-ups of getters (locked)", "wake-ups of putters (locked)",
  "getter sleeps", "putter sleeps", "getter spins", "putter spins" };
static unsigned long qs_count[QS_N];
#define QSTAT(x) __atomic_add_fetch(&qs_count[x], 1, __ATOMIC_RELAXED)
#define QSTATN(x, n) __atomic_add_fetch(&qs_count[x], (unsigned long)(n), __ATOMIC_RELAXED)
__attribute__((destructor)) static void qs_print(void) {
  if (getenv("STRAND_QUEUE_STATS") == NULL) return;
  for (int i = 0; i < QS_N; i++) fprintf(stderr, "qstat %-62s %lu\n", qs_names[i], qs_count[i]);
}
#else
#define QSTAT(x) ((void)0)
#define QSTATN(x, n) ((void)0)
#endif

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

/* The locked path's journal: the one change in flight under the mutex, written before the
 * change and cleared (op = J_NONE) at its commit, so that the next locker after a holder's
 * death finishes or undoes it (q_repair). op is stored last (compiler-ordered: a killed
 * process's earlier stores are all visible to the recoverer, which takes the robust mutex). */
enum { J_NONE, J_GROW, J_PUT, J_FILLED, J_GET };
typedef struct q_journal {
  uint32_t op, pad;
  int64_t n, unfinished;  /* the count and unfinished before the change */
  q_item it;              /* put: the item; get: the item taken; grow: off = the new array,
                             len = its capacity, seq = the old array */
} q_journal;
_Static_assert(sizeof(q_journal) == 64, "q_journal: one cache line");

/* An unbounded ring's journal: the one change of its overflow (or of the ring's growth) in
 * flight under the mutex, as q_journal for the locked path (o_repair). */
enum { OJ_NONE, OJ_PUT, OJ_GROW, OJ_TAKE, OJ_MOVE, OJ_INSTALL };
#define OJ_UNSET UINT64_MAX
typedef struct o_journal {
  uint32_t op, k;         /* move: the batch's size */
  uint64_t n, first, extra;   /* ovf_n, ovf_first, ovf_extra before the change */
  uint64_t t0;            /* move: the batch's first ring position (OJ_UNSET: none claimed);
                             install: the small ring's last position; grow: the last chunk
                             before (0: none) */
  uint64_t a, b;          /* put: the item's arena block (0: none); grow: the new chunk */
} o_journal;
_Static_assert(sizeof(o_journal) == 56, "o_journal: done's line after done");

typedef struct q_state {
  int16_t kind, ring;     /* ring: a FIFO whose items are in the lock-free ring below */
  int32_t closed;
  int64_t maxsize;        /* 0: unbounded (up to the storage) */
  int64_t n;              /* items held */
  int64_t unfinished;     /* put and not yet task_done */
  union {                 /* read-mostly, on this line: */
    uint64_t seq;         /* locked path: the insertion counter (ties of equal priorities) */
    uint64_t rdesc;       /* ring: the ring now, arena offset of its slots << 20 | capacity */
  };
  union {
    uint64_t items;       /* locked path: arena offset of the item array: a ring (FIFO), a
                             stack (LIFO) or a binary heap (priority) */
    uint64_t ring_b;      /* unbounded ring: its big ring, once made (see r_grow) */
  };
  uint64_t cap;           /* slots. Ring: its capacity (maxsize) */
  union {
    uint64_t first;       /* FIFO: the oldest slot */
    uint64_t grow_max;    /* unbounded ring: the most slots it may grow to (see r_grow) */
  };
  /* the ring (see "the ring" below); each hot word on its own cache line */
  _Alignas(64) uint64_t tail;     /* next position to fill, | RING_CLOSED once closed */
  int32_t put_tid;                /* the thread that put last: is spinning worth it? */
  _Alignas(64) uint64_t head;     /* next position to take */
  int32_t get_tid;                /* the thread that took last */
  _Alignas(64) union {
    struct {
      uint64_t done;              /* ring: task_done calls so far: unfinished = puts - done */
      o_journal oj;               /* unbounded ring: the overflow's change in flight (o_repair) */
    };
    q_journal j;                  /* locked path: the change in flight (q_repair) */
  };
  /* an unbounded ring's overflow (see "the ring" below): ovf_n is read without the mutex,
   * everything is written under it */
  _Alignas(64) uint64_t ovf_n;    /* items in the overflow */
  uint64_t ovf_extra;             /* items put into the overflow and not moved to the ring */
  uint64_t ovf_head, ovf_tailc;   /* arena offsets of its first and last chunk (o_chunk) */
  uint64_t ovf_first;             /* the oldest item's number (items are numbered from 0 in
                                     the order they were appended; never reset) */
  int64_t nlocal;                 /* values held by reference (the queue has not crossed) */
  uint64_t ring_init;             /* unbounded ring: the first position ring_b's slots are
                                     initialised for (by r_grow; 0: not yet) */
} q_state;                        /* 320 bytes, a multiple of 64: the ring's slots follow */
_Static_assert(sizeof(q_state) == 320, "q_state: five cache lines");

static void q_destroy(strand_object *o);
static const char *q_cross(strand_object *o);
static const strand_objtype queue_type = { "strand.queue", q_destroy };

/* This process's view of a queue: the state's address kept beside it, so that a put or get
 * does not read it from the object's head (the mutex's cache line, which lockers write). */
typedef struct q_view {
  strand_shm s;
  q_state *st;
} q_view;
#define q_state_of(s) (((q_view *)(s))->st)

static int q_view_fill(strand_shm *s) {
  ((q_view *)s)->st = (q_state *)strand_shm_state(s);
  return 0;
}
#define q_items(s, st) ((q_item *)strand_shm_at(s, (st)->items))
#define box_obj(L) (*(strand_shm **)lua_touserdata(L, 1))

/* The queue at index 1 of a method: a sealed box (strand_object_sealed) of a queue, checked
 * without the metatable lookups of strand_shm_self, which every put and get would pay; misuse
 * falls through to strand_shm_self's errors. */
static inline strand_shm *q_self(lua_State *L) {
  strand_object *o = strand_object_sealed(L, 1);
  if (o != NULL && o->type == &queue_type) return (strand_shm *)o;
  return strand_shm_self(L);
}

/* {==== the item array (locked) */

static int q_less(const q_item *a, const q_item *b) {
  return a->prio < b->prio || (a->prio == b->prio && a->seq < b->seq);
}

/* Crash points (a test hook, process-local, set only by queue._test_die in a child that is
 * about to be lost): _exit at the n-th time point `die_point` is reached, the mutex held, as a
 * SIGKILL at that instant would. */
enum { QD_NONE, QD_GROW, QD_GROWN, QD_ALLOC, QD_FILLED, QD_SIFT_UP, QD_COUNTED, QD_GET,
       QD_SIFT_DOWN, QD_POPPED, QD_TAKEN, QD_LINK, QD_UNLINK, QD_OGROW, QD_OGROWN, QD_OPUT,
       QD_OCOUNT, QD_MOVE, QD_MOVED, QD_OTAKE, QD_INSTALL, QD_INSTALLED, QD_OFREE, QD_RGROW,
       QD_RINIT };
static const char *const die_names[] = { "none", "grow", "grown", "alloc", "filled", "sift_up",
  "counted", "get", "sift_down", "popped", "taken", "link", "unlink", "ogrow", "ogrown", "oput",
  "ocount", "move", "moved", "otake", "install", "installed", "ofree", "rgrow", "rinit", NULL };
static int die_point, die_n;
#define Q_CRASH(p) do { \
    if (__builtin_expect(die_point == (p), 0) && --die_n == 0) _exit(0); } while (0)

/* A journal store: every store before it happens before it, every one after it after it (for a
 * process killed in between, program order is what the recoverer sees). */
static inline void j_set(q_state *st, uint32_t op) {
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  __atomic_store_n(&st->j.op, op, __ATOMIC_RELAXED);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

/* Make room for one more item: 0 or an errno. The new array is published (items, then cap and
 * first) before the old one is released: a holder killed before publishing leaves the old
 * array in use and the journal names the new one, which the recoverer releases; killed after,
 * the recoverer finishes cap and first and releases the old one. */
static int q_reserve(strand_shm *s, q_state *st) {
  if ((uint64_t)st->n < st->cap) return 0;
  uint64_t cap = st->cap ? st->cap * 2 : 16, old = st->items;
  uint64_t off = strand_shm_alloc(s, cap * sizeof(q_item));
  if (off == 0) return errno;
  st->j.it.off = off;
  st->j.it.len = cap;
  st->j.it.seq = old;
  j_set(st, J_GROW);
  q_item *to = (q_item *)strand_shm_at(s, off);
  if (st->cap) {
    q_item *from = q_items(s, st);
    for (int64_t i = 0; i < st->n; i++)      /* unwrap the ring: first becomes 0 */
      to[i] = from[st->kind == Q_FIFO ? (st->first + (uint64_t)i) % st->cap : (uint64_t)i];
  }
  Q_CRASH(QD_GROW);
  __atomic_store_n(&st->items, off, __ATOMIC_RELAXED);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  st->cap = cap;
  st->first = 0;
  Q_CRASH(QD_GROWN);
  j_set(st, J_NONE);
  strand_shm_release(s, old);    /* killed before this: the old array is lost (bytes), never freed twice */
  return 0;
}

static uint64_t q_slot(q_state *st, uint64_t i) {
  return st->kind == Q_FIFO ? (st->first + i) % st->cap : i;
}

/* Put it (its block allocated and st->j.it == *it, op J_PUT): the slot at n first (journal
 * J_FILLED: from here a recoverer completes the put), then a heap's sift-up, then the count
 * (the commit). */
static void q_push(strand_shm *s, q_state *st, const q_item *it) {
  q_item *a = q_items(s, st);
  uint64_t i = (uint64_t)st->n;
  a[q_slot(st, i)] = *it;
  j_set(st, J_FILLED);
  Q_CRASH(QD_FILLED);
  if (st->kind == Q_PRIO) {
    while (i > 0 && q_less(it, &a[(i - 1) / 2])) {
      a[i] = a[(i - 1) / 2];
      i = (i - 1) / 2;
      Q_CRASH(QD_SIFT_UP);
    }
    a[i] = *it;
  }
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  st->n++;
  Q_CRASH(QD_COUNTED);
  st->unfinished++;
  j_set(st, J_NONE);
}

static q_item *q_peek(strand_shm *s, q_state *st) {
  q_item *a = q_items(s, st);
  if (st->kind == Q_FIFO) return &a[st->first];
  if (st->kind == Q_LIFO) return &a[st->n - 1];
  return &a[0];
}

/* Take the item at the front (st->j.it, journal J_GET set: until the journal is cleared a
 * recoverer puts it back). The slots past the new count are not written: a heap's sift-down
 * leaves `last` where it was. */
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
      Q_CRASH(QD_SIFT_DOWN);
    }
    a[i] = last;
  }
  Q_CRASH(QD_POPPED);
}

static int off_cmp(const void *x, const void *y) {
  uint64_t a = ((const q_item *)x)->off, b = ((const q_item *)y)->off;
  return a < b ? -1 : a > b;
}

/* A heap whose sift died: a[0..m-1] hold every item of the queue but st->j.it, some perhaps
 * twice (a sift copies an item to its new place before overwriting the old one) and it perhaps
 * once. Keep each block once, add it if absent, and heapify. */
static void q_reheap(strand_shm *s, q_state *st, uint64_t m) {
  q_item *a = q_items(s, st);
  qsort(a, m, sizeof *a, off_cmp);
  uint64_t k = 0;
  int seen = 0;
  for (uint64_t i = 0; i < m; i++) {
    if (k > 0 && a[k - 1].off == a[i].off) continue;
    if (a[i].off == st->j.it.off) seen = 1;
    a[k++] = a[i];
  }
  if (!seen && k < st->cap) a[k++] = st->j.it;
  for (uint64_t h = k / 2; h-- > 0;) {           /* heapify: sift each inner node down */
    q_item x = a[h];
    uint64_t i = h;
    for (;;) {
      uint64_t c = 2 * i + 1;
      if (c >= k) break;
      if (c + 1 < k && q_less(&a[c + 1], &a[c])) c++;
      if (!q_less(&a[c], &x)) break;
      a[i] = a[c];
      i = c;
    }
    a[i] = x;
  }
  st->n = (int64_t)k;
}

/* The holder died (strand_shm_on_repair, under the mutex): finish or undo the journaled change.
 * A put is undone until its slot is filled, then completed; a get is undone (the item was never
 * handed out); a grow is undone until the new array is published, then completed. */
static void o_repair(strand_shm *s, q_state *st);
static void q_repair(strand_shm *s) {
  q_state *st = (q_state *)strand_shm_state(s);
  if (st->ring) {                                /* the journal shares done's line */
    if (st->maxsize == 0) o_repair(s, st);
    return;
  }
  q_journal *j = &st->j;
  switch (j->op) {
    case J_GROW:
      if (st->items == j->it.off) {
        st->cap = j->it.len;
        st->first = 0;
        j_set(st, J_NONE);
        strand_shm_release(s, j->it.seq);
      } else {
        j_set(st, J_NONE);
        strand_shm_release(s, j->it.off);
      }
      break;
    case J_PUT:                                  /* its bytes may be half copied: drop it */
      st->n = j->n;
      j_set(st, J_NONE);
      strand_shm_release(s, j->it.off);
      break;
    case J_FILLED:
      if (st->n == j->n) {
        if (st->kind == Q_PRIO) q_reheap(s, st, (uint64_t)j->n + 1);
        else st->n = j->n + 1;                   /* its slot holds it */
      }
      st->unfinished = j->unfinished + 1;
      j_set(st, J_NONE);
      break;
    case J_GET:
      if (st->kind == Q_PRIO) {
        q_reheap(s, st, (uint64_t)j->n);
      } else if (st->kind == Q_FIFO) {
        q_item *a = q_items(s, st);
        if (a[st->first].off != j->it.off || a[st->first].seq != j->it.seq)
          st->first = (st->first + st->cap - 1) % st->cap;
        st->n = j->n;
      } else {
        st->n = j->n;
      }
      j_set(st, J_NONE);
      break;
    default:
      break;
  }
}

/* }==== */

/* {==== the ring: a FIFO without the mutex
 *
 * A FIFO with 0 < maxsize <= RING_MAXCAP keeps its items in a ring of maxsize fixed slots
 * (Vyukov's bounded multi-producer multi-consumer queue): a put claims the position `tail` by
 * compare-and-swap, fills the slot and publishes it through the slot's sequence number; a get
 * claims `head` the same way and hands the slot back by advancing its sequence by the capacity.
 * Producers and consumers touch different cache lines, and none of them takes the mutex. Small
 * values (numbers, booleans, strings up to RING_INLINE bytes, small serialized values) live in
 * the slot itself; bigger ones in the arena (allocated under the mutex).
 *
 * close() sets RING_CLOSED in `tail`, so a put's compare-and-swap fails once the queue is closed:
 * no item enters after close. unfinished = tail - done, so a put writes nothing more.
 *
 * An unbounded FIFO (maxsize 0) has a ring of RING_UNBOUNDED slots and, for when it is full,
 * an ordered overflow: a chain of chunks of the same items in the arena (o_chunk), under the
 * mutex, whose length ovf_n anybody may read. The rules:
 *  - a put goes to the ring only while ovf_n == 0; if the ring is full, or ovf_n > 0, it locks,
 *    first moves up to OVF_BATCH of the oldest overflow items to the ring's tail (if that many
 *    slots are free there), then puts its item into the ring if the overflow is now empty, else
 *    appends it to the overflow. (A producer that read ovf_n == 0 just before the overflow began may
 *    still put into the ring afterwards: its own earlier items are all taken or in the ring.)
 *  - a get takes from the ring; if the ring has nothing and ovf_n > 0 it locks, moves up to
 *    OVF_GET_BATCH the same way and takes from the ring. Moves go on after close (the claim
 *    keeps the closed bit: no put claims a position). Only if nothing could move (closed before
 *    the big ring was installed) does it take the overflow's oldest item directly, and only once
 *    every ring position claimed so far has been taken (head >= tail, tail read first).
 * Why each producer's order holds, and no item is lost or taken twice: an item x of producer P
 * enters the overflow only after P's earlier items, which are either older in the overflow or
 * in the ring at positions below tail, which the lock orders before x's append. Moves go in
 * overflow order to the ring's tail, so x lands after all of them; a direct take of x waits for
 * head >= tail, so after them too. P puts into the ring again only after it read ovf_n == 0,
 * which (release/acquire, the move pushing before it uncounts) means x already left the
 * overflow, to a ring position below the one P gets, or taken. An item is in exactly one place:
 * a move pushes (the ring copies it) and then drops it from the overflow under the same lock,
 * and only lock holders read or change the overflow. close() is under the mutex too, so after
 * it nothing is appended, and a getter that sees the closed bit sees every append (the drained
 * check reads ovf_n first, then tail and head: a move after close claims its ring positions in
 * tail before it uncounts them from ovf_n). unfinished = tail + ovf_extra - done, where
 * ovf_extra counts appended items not moved (a move pushes, then uncounts: read without the
 * mutex, the sum may be too big for a moment, never too small; under it, exact).
 *
 * Waits keep shm.c's protocol, with the handshake sync.c's locks use: a waiter counts itself in
 * sleepers[ch] (sequentially consistent, under the mutex) and then looks at the ring once more;
 * a put or get changes the ring, then (after a sequentially consistent fence) looks at the
 * sleepers of the other side and only if there are any takes the mutex to signal. One of the two
 * always sees the other: no lost wake-up, and no syscall nor mutex while nobody sleeps. Because
 * gets and puts do not settle the eventfds, one may stay readable for a moment after its
 * condition went away: a woken waiter that finds nothing settles (drains it) and sleeps again.
 *
 * Before sleeping, a waiter whose peer is another thread watches the ring for a few
 * microseconds (only with more than one CPU online and nothing else ready in its loop).
 *
 * A process killed between claiming a slot and publishing it would stall the ring at that
 * slot: a getter that finds head claimed and unpublished for a slice asks the put-intent
 * records (shm.c) whether every thread that was claiming it died, and if so frees the slot
 * (r_skip_dead). The locked path journals its changes (q_journal, q_repair), an unbounded
 * ring its overflow's and its growth (o_journal, o_repair: see the overflow below). */

#define RING_INLINE 112
#define RING_MAXCAP 16384
#define OVF_BATCH 64          /* overflow items moved to the ring under one lock (a put) */
#define OVF_GET_BATCH 256     /* ... by a getter that found the ring empty */
#ifndef RING_UNBOUNDED
#define RING_UNBOUNDED 16     /* the ring of an unbounded FIFO: 2 KiB, so an empty one is small */
#endif
#define RING_CLOSED ((uint64_t)1 << 63)
#define RING_RETIRED ((uint64_t)1 << 62)      /* the small ring takes no more puts: r_grow */
#define RING_MOVING ((uint64_t)1 << 61)       /* a move owns tail (locked): o_move */
#define RING_FLAGS (RING_CLOSED | RING_RETIRED | RING_MOVING)
#define RD_CAPBITS 20
#define RING_BIG 1024                         /* the ring an unbounded FIFO grows to first */
#define RING_GROW 16                          /* then each growth multiplies it by this */
#define RING_GROW_MAX 16384                   /* up to (2 MiB; a quarter of its storage) */
#define RING_JUMP ((uint64_t)1 << 32)         /* positions skipped when it does */
#define RING_SPIN_SECONDS 30e-6
/* A getter that finds head's position claimed but not published, or a putter that finds tail's
 * slot claimed by a getter and not freed, sleeps in slices of this long, and after each (and
 * before it gives up) checks whether that producer or getter died. */
#define R_SLICE 0.05

enum { F_INT = 1, F_FLT, F_FALSE, F_TRUE, F_STR, F_SER, F_ARENA };

typedef struct r_item {
  uint32_t meta;          /* format << 24 | inline length */
  int32_t pid;            /* F_SER, F_ARENA: the process that encoded it */
  union {
    lua_Integer i;
    double d;
    struct { uint64_t off, len; } a;
    char b[RING_INLINE];
  } u;
} r_item;

typedef struct r_slot {
  uint64_t seq;           /* 2 pos: free for the put at pos; 2 pos + 1: holds the item put at
                             pos (doubled so that a ring of one slot is not ambiguous) */
  r_item it;
} r_slot;

_Static_assert(sizeof(r_slot) == 128, "ring slots are two cache lines");
_Static_assert(sizeof(q_state) % 64 == 0, "ring slots start on a cache line");

#define r_slots(st) ((r_slot *)((char *)(st) + sizeof(q_state)))   /* the first ring */
/* The ring in use and its capacity (one atomic word, so the two always match). */
static inline r_slot *r_ring(q_state *st, uint64_t *cap) {
  uint64_t d = __atomic_load_n(&st->rdesc, __ATOMIC_ACQUIRE);
  *cap = d & (((uint64_t)1 << RD_CAPBITS) - 1);
  return (r_slot *)(strand_arena_base + (d >> RD_CAPBITS));
}
/* The slot of position pos: a mask for the power-of-two rings of unbounded FIFOs (a division
 * would sit between reading head or tail and reading the slot's sequence on every put and get) */
static inline uint64_t r_idx(uint64_t pos, uint64_t cap) {
  return (cap & (cap - 1)) == 0 ? pos & (cap - 1) : pos % cap;
}
static uint64_t r_desc(const void *slots, uint64_t cap) {
  return (uint64_t)((const char *)slots - strand_arena_base) << RD_CAPBITS | cap;
}
#define A_RLX(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define A_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define F_OF(it) ((int)((it)->meta >> 24))
#define LEN_OF(it) ((size_t)((it)->meta & 0xffffffu))

static size_t r_item_size(const r_item *it) {
  switch (F_OF(it)) {
    case F_STR: case F_SER: return offsetof(r_item, u) + LEN_OF(it);
    case F_ARENA: return offsetof(r_item, u) + sizeof it->u.a;
    case F_INT: case F_FLT: return offsetof(r_item, u) + 8;
    default: return offsetof(r_item, u);
  }
}

/* Copy an item into place: bytes, if not NULL, holds its inline value (F_STR, F_SER: the
 * caller's string, copied straight into the slot) instead of it->u. */
static void r_item_copy(r_item *to, const r_item *it, const void *bytes) {
  if (bytes == NULL) {
    memcpy(to, it, r_item_size(it));
    return;
  }
  to->meta = it->meta;
  to->pid = it->pid;
  memcpy(to->u.b, bytes, LEN_OF(it));
}

static uint64_t r_tail(q_state *st) { return A_ACQ(&st->tail) & ~RING_FLAGS; }
static int r_closed(q_state *st) { return (A_ACQ(&st->tail) & RING_CLOSED) != 0; }

/* The slot at head is published: a get would find an item (unless another is faster). */
static int r_can_get(q_state *st) {
  uint64_t cap;
  r_slot *slots = r_ring(st, &cap);
  uint64_t pos = A_RLX(&st->head);
  return A_ACQ(&slots[r_idx(pos, cap)].seq) == 2 * pos + 1;
}

/* The overflow's oldest item may be taken: it is not empty and every position of the ring
 * claimed so far has been taken (read tail first: head never passes it). */
static int o_ready(q_state *st) {
  uint64_t t = r_tail(st);
  return A_ACQ(&st->ovf_n) > 0 && A_ACQ(&st->head) >= t;
}

/* Closed and nothing left nor on its way (after close nothing enters the overflow, and
 * whatever did is seen once the closed bit is). */
static int r_drained(q_state *st) {
  /* ovf_n first: a move (which may run after close) claims its ring positions before it
   * uncounts them, so an empty overflow read here means tail below counts them */
  if (A_ACQ(&st->ovf_n) != 0) return 0;
  uint64_t t = A_ACQ(&st->tail);
  return (t & RING_CLOSED) && (t & ~RING_FLAGS) == A_ACQ(&st->head);
}

/* A getter need not sleep: an item is there, or the queue is closed and drained. (Closed with
 * a put still publishing: that put wakes it. So a slot that is never published, its putter
 * killed, makes getters wait for their timeout, asleep.) */
static int r_gettable(q_state *st) {
  return r_can_get(st) || r_drained(st) || (st->maxsize == 0 && o_ready(st));
}

/* The slot at tail is free (or the queue is closed: a put would return at once). An unbounded
 * ring always takes a put (into the overflow when full). */
static int r_can_put(q_state *st) {
  uint64_t cap;
  r_slot *slots = r_ring(st, &cap);
  uint64_t pos = A_ACQ(&st->tail);
  if ((pos & RING_CLOSED) || st->maxsize == 0) return 1;
  return A_ACQ(&slots[r_idx(pos, cap)].seq) == 2 * pos;
}

/* A move could do something: the slots at tail .. tail + k - 1 are free, or the ring is
 * retired (a move may install the big one; not once closed). Closed, a move still drains the
 * overflow into the ring (which takes no put). Locked, for an unbounded ring. */
static int r_room_for(q_state *st, uint64_t k) {
  uint64_t cap;
  r_slot *slots = r_ring(st, &cap);
  uint64_t pos = A_ACQ(&st->tail);
  if (pos & (RING_RETIRED | RING_MOVING)) return (pos & RING_FLAGS) == RING_RETIRED;
  pos &= ~RING_FLAGS;
  if (k > cap) k = cap;
  pos += k - 1;
  return A_ACQ(&slots[r_idx(pos, cap)].seq) == 2 * pos;
}
static int r_room(q_state *st) { return r_room_for(st, 1); }

static int64_t r_size(q_state *st) {
  int64_t o = (int64_t)A_ACQ(&st->ovf_n);       /* first: a move fills the ring, then uncounts */
  uint64_t h = A_ACQ(&st->head), t = r_tail(st);
  uint64_t cap;
  r_ring(st, &cap);
  int64_t n = t > h ? (int64_t)(t - h) : 0;
  if (n > (int64_t)cap) n = (int64_t)cap;
  return n + o;
}

/* Items put so far: into the ring, and into the overflow (not moved). Exact under the mutex;
 * without it, never too few (the overflow is read first: a move pushes, then uncounts). */
static uint64_t r_puts(q_state *st) {
  uint64_t extra = A_ACQ(&st->ovf_extra);
  return r_tail(st) + extra;
}

/* done is read first: never negative, and too big only while a put and its task_done race
 * (whose wake-up follows) */
static int64_t r_unfinished(q_state *st) {
  uint64_t d = A_ACQ(&st->done);
  return (int64_t)(r_puts(st) - d);
}

/* Claim, fill and publish a slot: 1 done, 0 full, -1 closed. Never blocks. Before each claim
 * the thread's intent record names (queue, position), so a getter can tell a claim whose
 * producer died (r_skip_dead); it is cleared on the way out. publish 0: claim only (a test). */
static int r_push_in(q_state *st, const r_item *it, const void *bytes, strand_intent *me,
                     int publish) {
  uint64_t cap;
  r_slot *slots = r_ring(st, &cap);
  uint64_t pos = A_RLX(&st->tail);
  uint64_t qoff = (uint64_t)((char *)st - strand_arena_base);
  for (;;) {
    if (__builtin_expect((pos & RING_FLAGS) != 0, 0)) {
      if (pos & RING_CLOSED) return -1;
      return 0;                               /* growing or moving: the overflow takes it */
    }
    r_slot *x = &slots[r_idx(pos, cap)];
    int64_t dif = (int64_t)(A_ACQ(&x->seq) - 2 * pos);
    if (dif == 0) {
      if (me) {
        __atomic_store_n(&me->pos, pos + 1, __ATOMIC_RELAXED);
        __atomic_store_n(&me->obj, qoff, __ATOMIC_RELAXED);
      }
      /* release: a getter that sees the claim (tail, acquire) sees the record */
      if (__atomic_compare_exchange_n(&st->tail, &pos, pos + 1, 1, __ATOMIC_RELEASE,
                                      __ATOMIC_RELAXED)) {
        if (!publish) return 1;
        r_item_copy(&x->it, it, bytes);
        __atomic_store_n(&x->seq, 2 * pos + 1, __ATOMIC_RELEASE);
        return 1;
      }
    } else if (dif < 0) {                     /* the slot still holds an item: full */
      uint64_t now = A_RLX(&st->tail);
      if (now == pos) return 0;
      pos = now;
    } else {
      pos = A_RLX(&st->tail);
    }
  }
}

static int r_push(q_state *st, const r_item *it, const void *bytes) {
  strand_intent *me = strand_intent_fast();
  int r = r_push_in(st, it, bytes, me, 1);
  if (me) __atomic_store_n(&me->obj, 0, __ATOMIC_RELEASE);
  return r;
}

/* The position at head was claimed (head < tail) and is not published. */
static int r_head_claimed(q_state *st) {
  uint64_t cap;
  r_slot *slots = r_ring(st, &cap);
  uint64_t pos = A_ACQ(&st->head);
  return r_tail(st) > pos && A_ACQ(&slots[r_idx(pos, cap)].seq) == 2 * pos;
}

static void q_settle(strand_shm *s, int kick);

/* The put that claimed head's position died before publishing (every thread that was claiming
 * it has ended): free the slot as a get would and count that put done, so the items behind it
 * come out in order; 1 if skipped. Reads /proc: only when a getter found nothing for a while. */
static int r_skip_dead(lua_State *L, strand_shm *s, q_state *st) {
  uint64_t cap;
  r_slot *slots = r_ring(st, &cap);
  uint64_t pos = A_ACQ(&st->head);
  if (r_tail(st) <= pos) return 0;
  r_slot *x = &slots[r_idx(pos, cap)];
  if (A_ACQ(&x->seq) != 2 * pos) return 0;
  if (!strand_intent_dead((uint64_t)((char *)st - strand_arena_base), pos)) return 0;
  if (A_ACQ(&x->seq) != 2 * pos) return 0;   /* published meanwhile (its claimer was alive) */
  /* a get in progress, as r_get_once says it: should we die before freeing the slot, a putter
   * frees it (r_free_dead_get) */
  strand_intent *me = strand_intent_fast();
  if (me)
    __atomic_store_n(&me->obj, (uint64_t)((char *)st - strand_arena_base) | STRAND_INTENT_GET,
                     __ATOMIC_RELEASE);
  int won = __atomic_compare_exchange_n(&st->head, &pos, pos + 1, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED);
  if (won) __atomic_store_n(&x->seq, 2 * (pos + cap), __ATOMIC_RELEASE);
  if (me) __atomic_store_n(&me->obj, 0, __ATOMIC_RELEASE);
  if (!won) return 1;                         /* another getter moved on: look again */
  __atomic_add_fetch(&st->done, 1, __ATOMIC_SEQ_CST);
  strand_shm_changed(s);
  strand_shm_lockL(L, s);
  q_settle(s, 7);
  strand_shm_unlock(s);
  return 1;
}

/* The slot at tail is still that of the position one lap before it, and head has passed that
 * position: a getter claimed it and has not freed the slot yet (a live one is copying it out;
 * a dead one never will). The slot holds that position's item (2p + 1), or it was never
 * published and a getter is skipping it (2p: r_skip_dead). Its position in *held. */
static int r_tail_held(q_state *st, uint64_t *held) {
  uint64_t cap;
  r_slot *slots = r_ring(st, &cap);
  uint64_t t = A_ACQ(&st->tail);
  if (t & RING_FLAGS) return 0;
  t &= ~RING_FLAGS;
  if (t < cap) return 0;
  uint64_t p = t - cap, seq = A_ACQ(&slots[r_idx(t, cap)].seq);
  if ((seq != 2 * p + 1 && seq != 2 * p) || A_ACQ(&st->head) <= p) return 0;
  *held = p;
  return 1;
}

/* The getter that claimed the position at tail's slot died before freeing it (every thread with
 * a get on this queue in progress has ended: r_get_once's intent records): free the slot as
 * that get would have, and give back the arena block of its item (the item itself is lost with
 * the getter, as if it had been taken; its task_done never comes). 1 if freed (by us or by
 * another putter), 0 if not. Reads /proc: only when a putter found the ring full. */
static int r_free_dead_get(lua_State *L, strand_shm *s, q_state *st) {
  uint64_t p, cap;
  if (st->maxsize == 0 || !r_tail_held(st, &p)) return 0;
  r_slot *slots = r_ring(st, &cap);            /* (cap is read after the call sets it) */
  r_slot *x = &slots[r_idx(p, cap)];
  if (!strand_intent_dead_get((uint64_t)((char *)st - strand_arena_base), p)) return 0;
  uint64_t want = A_ACQ(&x->seq);
  if (want != 2 * p + 1 && want != 2 * p) return 1;   /* freed meanwhile */
  int arena = want == 2 * p + 1 && F_OF(&x->it) == F_ARENA;
  uint64_t block = arena ? x->it.u.a.off : 0;   /* stable while the slot stays held */
  if (!__atomic_compare_exchange_n(&x->seq, &want, 2 * (p + cap), 0, __ATOMIC_ACQ_REL,
                                   __ATOMIC_RELAXED))
    return 1;                                 /* another putter freed it: look again */
  strand_shm_changed(s);
  strand_shm_lockL(L, s);
  if (arena) strand_shm_release(s, block);
  q_settle(s, 2);
  strand_shm_unlock(s);
  return 1;
}

/* Claim the oldest published item, copy it out and free its slot: 1 done, 0 none. */
static int r_pop(q_state *st, r_item *out) {
  uint64_t cap;
  r_slot *slots = r_ring(st, &cap);
  uint64_t pos = A_RLX(&st->head);
  for (;;) {
    r_slot *x = &slots[r_idx(pos, cap)];
    int64_t dif = (int64_t)(A_ACQ(&x->seq) - (2 * pos + 1));
    if (dif == 0) {
      if (__atomic_compare_exchange_n(&st->head, &pos, pos + 1, 1, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED)) {
        memcpy(out, &x->it, r_item_size(&x->it));   /* one copy: header and value */
        __atomic_store_n(&x->seq, 2 * (pos + cap), __ATOMIC_RELEASE);
        return 1;
      }
    } else if (dif < 0) {                     /* empty (or the put there is not published yet) */
      uint64_t now = A_RLX(&st->head);
      if (now == pos) return 0;
      pos = now;
    } else {
      pos = A_RLX(&st->head);
    }
  }
}

/* {==== the overflow of an unbounded ring (locked)
 *
 * Each change is journaled in st->oj (on done's line, which only a ring uses, and only an
 * unbounded one past done) before it is made, and cleared at its commit, so that the next
 * locker after a holder's death makes it all or nothing (o_repair): an append is undone until
 * cleared (its block given back); the array's growth publishes the new array before it
 * releases the old; a direct take is undone until cleared; a move claims its whole batch of
 * ring positions with one store (tail is the mover's alone while RING_MOVING is set in it: a
 * put that sees the bit goes to the locked path, and every other writer of tail holds the
 * mutex), fills and publishes the slots, then drops the batch from the overflow: once the
 * batch is claimed the recoverer completes it (it publishes the slots not yet published, from
 * the overflow, which still holds them), before that nothing happened; the ring's growth
 * (r_install) is completed once begun. */

static inline void oj_set(q_state *st, uint32_t op) {
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  __atomic_store_n(&st->oj.op, op, __ATOMIC_RELAXED);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

/* The overflow is a chain of chunks of OVF_CHUNK items each (61 KiB: below the arena's
 * hole-punching size, so a released chunk keeps its pages for the next), linked from ovf_head
 * to ovf_tailc; chunk c holds the items numbered c->start .. c->start + OVF_CHUNK - 1. An append
 * that finds the last chunk full links a new one (nothing is copied, whatever the overflow's
 * length); chunks whose items have all left are released after each change's commit. */
#define OVF_CHUNK 512
typedef struct o_chunk {
  uint64_t next;          /* the next chunk (0: none) */
  uint64_t start;         /* the number of its first item */
  r_item it[OVF_CHUNK];
} o_chunk;
#define o_chunk_at(s, off) ((o_chunk *)strand_shm_at(s, off))

/* The overflow's item numbered i (held: ovf_head's start <= i < its end). */
static r_item *o_item(strand_shm *s, q_state *st, uint64_t i) {
  o_chunk *c = o_chunk_at(s, st->ovf_head);
  while (i >= c->start + OVF_CHUNK) c = o_chunk_at(s, c->next);
  return &c->it[i - c->start];
}

/* Release the chunks at the front whose items have all left (after a change's commit; the last
 * chunk stays for the next append): ovf_head moves first (one store), so a holder killed in
 * between loses a chunk (bytes until the family ends), never releases one still linked. */
static void o_shrink(strand_shm *s, q_state *st) {
  while (st->ovf_head && st->ovf_head != st->ovf_tailc) {
    o_chunk *c = o_chunk_at(s, st->ovf_head);
    if (c->start + OVF_CHUNK > st->ovf_first) break;
    uint64_t old = st->ovf_head;
    __atomic_store_n(&st->ovf_head, c->next, __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    Q_CRASH(QD_OFREE);
    strand_shm_release(s, old);
  }
}

/* Append: 0 or an errno. A full last chunk (or none) first gets a new one linked after it
 * (OJ_GROW: allocated and filled in, then linked: the old last chunk's next or ovf_head, then
 * ovf_tailc, then the journal cleared), then the item is copied in and counted (OJ_PUT, undone
 * until cleared). */
static int o_push(strand_shm *s, q_state *st, const r_item *it, const void *bytes) {
  uint64_t n = st->ovf_n, at = st->ovf_first + n;
  if (st->ovf_tailc == 0 || at == o_chunk_at(s, st->ovf_tailc)->start + OVF_CHUNK) {
    uint64_t off = strand_shm_alloc(s, sizeof(o_chunk));
    if (off == 0) return errno;
    st->oj.a = off;
    st->oj.t0 = st->ovf_tailc;
    oj_set(st, OJ_GROW);
    o_chunk *c = o_chunk_at(s, off);
    c->next = 0;
    c->start = at;
    Q_CRASH(QD_OGROW);
    if (st->ovf_tailc) o_chunk_at(s, st->ovf_tailc)->next = off;
    else st->ovf_head = off;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    st->ovf_tailc = off;
    Q_CRASH(QD_OGROWN);
    oj_set(st, OJ_NONE);
  }
  st->oj.n = n;
  st->oj.extra = st->ovf_extra;
  st->oj.a = F_OF(it) == F_ARENA ? it->u.a.off : 0;
  oj_set(st, OJ_PUT);
  o_chunk *c = o_chunk_at(s, st->ovf_tailc);
  r_item_copy(&c->it[at - c->start], it, bytes);
  Q_CRASH(QD_OPUT);
  __atomic_store_n(&st->ovf_extra, st->ovf_extra + 1, __ATOMIC_RELEASE);
  Q_CRASH(QD_OCOUNT);
  __atomic_store_n(&st->ovf_n, n + 1, __ATOMIC_RELEASE);
  oj_set(st, OJ_NONE);
  return 0;
}

/* {==== growing an unbounded ring (locked)
 *
 * An unbounded FIFO starts with a small ring (RING_UNBOUNDED slots, inline: an empty queue
 * stays small) and grows once to RING_BIG slots when producers get ahead, i.e. when a put
 * first has to use the overflow. Retire: allocate the big ring, then set RING_RETIRED in tail,
 * so no put claims a small-ring position any more (a compare-and-swap in flight fails on the
 * changed word, then sees the bit: a retired ring is "full", the put goes to the overflow).
 * Install, once every small-ring position is taken (head == tail): the big ring's positions
 * start RING_JUMP later (Q = P + 2^32; its slots are initialised for Q..), head = Q, then the
 * descriptor (release), then tail = Q without the bit, then done += RING_JUMP (after tail:
 * unfinished may read too big for a moment, never too small). A put or get still holding the
 * small ring's descriptor compares sequence numbers below 2(P+RING_UNBOUNDED) with positions
 * >= Q: "full" / "empty", never a claim; the small ring stays in the state, so a late reader
 * of it reads valid memory. Closing stops it (nothing to install into). The install is
 * journaled (OJ_INSTALL, P): a recoverer does it again while tail still has the bit (nothing
 * can have used the big ring yet), else adds RING_JUMP to done if unfinished is still above
 * 2^31 (the add was not made: unfinished is that far from any real count). */

/* ring_b's slots, free for the positions from q on */
static void r_ring_init(q_state *st, uint64_t q) {
  uint64_t big = st->ring_b & (((uint64_t)1 << RD_CAPBITS) - 1);
  r_slot *b = (r_slot *)(strand_arena_base + (st->ring_b >> RD_CAPBITS));
  for (uint64_t i = 0; i < big; i++) b[(q + i) % big].seq = 2 * (q + i);
}

static void r_grow(strand_shm *s, q_state *st) {
  if (st->maxsize != 0 || (A_ACQ(&st->tail) & RING_FLAGS)) return;
  uint64_t cap;
  r_ring(st, &cap);
  uint64_t big = cap < RING_BIG ? RING_BIG : cap * RING_GROW;
  if (big > st->grow_max) return;
  /* nor more than 1/64 of the arena (the rings a queue replaced stay until it is freed: in a
   * small arena — 32 MiB under valgrind — a few grown queues not yet collected would fill it) */
  if (big * sizeof(r_slot) > strand_arena_size() / 64) return;
  /* past the first growth, only once producers are a whole ring ahead (its slot at tail still
   * holds an item): not for a ring that merely lacks room for a move's batch */
  if (cap >= RING_BIG && r_room(st)) return;
  if (st->ring_b == 0 || A_RLX(&st->rdesc) == st->ring_b) {
    /* (else a ring made by a holder that died before retiring this one: it is used) */
    uint64_t off = strand_shm_alloc(s, big * sizeof(r_slot) + 64);
    if (off == 0) return;                     /* no room: this ring and the overflow */
    void *b = (void *)(((uintptr_t)strand_shm_at(s, off) + 63) & ~(uintptr_t)63);
    /* the ring this one replaces stays allocated (with the queue's storage, until it is
     * destroyed): a put or get may still hold its descriptor */
    st->ring_b = r_desc(b, big);
    Q_CRASH(QD_RGROW);
  }
  uint64_t p = __atomic_fetch_or(&st->tail, RING_RETIRED, __ATOMIC_SEQ_CST) & ~RING_FLAGS;
  Q_CRASH(QD_RINIT);
  /* the retired ring's last position is known now: initialise the new ring's slots for the
   * positions it will start at, here in the putter that is a ring ahead (a big ring's first
   * touch of its pages costs milliseconds), not in the getter that installs it once it has
   * taken the retired ring's items (the side that is behind). Killed midway, ring_init is not
   * set and the install initialises them. */
  r_ring_init(st, p + RING_JUMP);
  st->ring_init = p + RING_JUMP;
}

static void r_install_at(q_state *st, uint64_t p) {
  uint64_t q = p + RING_JUMP;
  /* (not yet published, nor initialised by r_grow: its holder died midway) */
  if (A_RLX(&st->rdesc) != st->ring_b && st->ring_init != q) r_ring_init(st, q);
  __atomic_store_n(&st->head, q, __ATOMIC_SEQ_CST);
  Q_CRASH(QD_INSTALL);
  __atomic_store_n(&st->rdesc, st->ring_b, __ATOMIC_SEQ_CST);
  __atomic_store_n(&st->tail, q, __ATOMIC_SEQ_CST);
  Q_CRASH(QD_INSTALLED);
  __atomic_fetch_add(&st->done, RING_JUMP, __ATOMIC_SEQ_CST);
}

static void r_install(q_state *st) {
  uint64_t t = A_ACQ(&st->tail);
  if (!(t & RING_RETIRED) || (t & RING_CLOSED)) return;
  uint64_t p = t & ~RING_FLAGS;
  if (A_ACQ(&st->head) != p) return;          /* the small ring still holds items */
  st->oj.t0 = p;
  oj_set(st, OJ_INSTALL);
  r_install_at(st, p);
  oj_set(st, OJ_NONE);
}

/* }==== */

/* Fill and publish the ring slots of positions p..p+k-1 with the overflow's oldest items (from
 * the journal's first): a move, or its recoverer (repair: only the slots not yet published;
 * none can have been claimed again, tail is still the mover's). */
static void o_fill(strand_shm *s, q_state *st, uint64_t p, uint64_t k, int repair) {
  uint64_t cap;
  r_slot *slots = r_ring(st, &cap);
  o_chunk *c = o_chunk_at(s, st->ovf_head);
  for (uint64_t i = 0; i < k; i++) {
    r_slot *x = &slots[r_idx(p + i, cap)];
    uint64_t at = st->oj.first + i;
    while (at >= c->start + OVF_CHUNK) c = o_chunk_at(s, c->next);
    if (repair && A_ACQ(&x->seq) != 2 * (p + i)) continue;   /* published (perhaps taken) */
    r_item *it = &c->it[at - c->start];
    memcpy(&x->it, it, r_item_size(it));
    __atomic_store_n(&x->seq, 2 * (p + i) + 1, __ATOMIC_RELEASE);
    Q_CRASH(QD_MOVE);
  }
}

/* Move up to max of the oldest items to the ring's tail (as far as it has room): how
 * many. After close too (tail keeps its closed bit: no put claims a position). Valid at any time: whatever the ring holds was put before them, or by a producer that
 * had none of its items in the overflow. Journaled (OJ_MOVE): RING_MOVING set in tail, then
 * the batch's bounds, then the claim (tail += k, one store), the slots filled and published,
 * the batch dropped from the overflow (first, n, then extra: counted in tail since the claim,
 * so that r_puts never counts too few), the journal cleared, the bit cleared. */
static int o_move(strand_shm *s, q_state *st, uint64_t max) {
  r_install(st);
  uint64_t n = st->ovf_n;
  if (n == 0 || (A_ACQ(&st->tail) & (RING_RETIRED | RING_MOVING))) return 0;   /* not installed */
  uint64_t cap, first = st->ovf_first, extra = st->ovf_extra;
  r_slot *slots = r_ring(st, &cap);
  st->oj.n = n;
  st->oj.first = first;
  st->oj.extra = extra;
  st->oj.t0 = OJ_UNSET;
  oj_set(st, OJ_MOVE);
  /* from here no put claims a position: tail is ours (p: after any claim made before) */
  uint64_t t0 = __atomic_fetch_or(&st->tail, RING_MOVING, __ATOMIC_SEQ_CST);
  uint64_t p = t0 & ~RING_FLAGS, closed = t0 & RING_CLOSED;   /* (close takes the mutex) */
  uint64_t k = 0;
  while (k < n && k < max && A_ACQ(&slots[r_idx(p + k, cap)].seq) == 2 * (p + k)) k++;
  if (k > 0) {
    st->oj.k = (uint32_t)k;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    st->oj.t0 = p;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    __atomic_store_n(&st->tail, (p + k) | RING_MOVING | closed, __ATOMIC_RELEASE);   /* claim */
    o_fill(s, st, p, k, 0);
    st->ovf_first = first + k;
    __atomic_store_n(&st->ovf_n, n - k, __ATOMIC_RELEASE);
    Q_CRASH(QD_MOVED);
    __atomic_store_n(&st->ovf_extra, extra - k, __ATOMIC_RELEASE);
  }
  oj_set(st, OJ_NONE);
  __atomic_store_n(&st->tail, (p + k) | closed, __ATOMIC_RELEASE);   /* puts may claim again */
  o_shrink(s, st);
  return (int)k;
}

/* Take the oldest item, if every ring item put before it is taken (o_ready): 1, else 0. For
 * when it cannot move (a closed ring takes no put). Journaled (OJ_TAKE): undone until cleared
 * (the taker died before it returned the item). */
static int o_pop(strand_shm *s, q_state *st, r_item *out) {
  if (!o_ready(st)) return 0;
  uint64_t n = st->ovf_n;
  st->oj.n = n;
  st->oj.first = st->ovf_first;
  oj_set(st, OJ_TAKE);
  r_item *x = o_item(s, st, st->ovf_first);
  memcpy(out, x, r_item_size(x));
  st->ovf_first++;
  Q_CRASH(QD_OTAKE);
  __atomic_store_n(&st->ovf_n, n - 1, __ATOMIC_RELEASE);
  oj_set(st, OJ_NONE);
  o_shrink(s, st);
  return 1;
}

/* The holder died (q_repair, under the mutex): finish or undo the overflow's journaled change,
 * then give tail back to puts. */
static void o_repair(strand_shm *s, q_state *st) {
  o_journal *j = &st->oj;
  switch (j->op) {
    case OJ_PUT:                                 /* its bytes may be half copied: not put */
      st->ovf_n = j->n;
      st->ovf_extra = j->extra;
      oj_set(st, OJ_NONE);
      if (j->a) strand_shm_release(s, j->a);
      break;
    case OJ_GROW:                                /* linked (ovf_tailc): kept, else undone */
      if (st->ovf_tailc != j->a) {
        if (j->t0) o_chunk_at(s, j->t0)->next = 0;
        else st->ovf_head = 0;
        oj_set(st, OJ_NONE);
        strand_shm_release(s, j->a);          /* (killed before this: lost, not freed twice) */
      } else {
        oj_set(st, OJ_NONE);
      }
      break;
    case OJ_TAKE:
      st->ovf_first = j->first;
      st->ovf_n = j->n;
      oj_set(st, OJ_NONE);
      break;
    case OJ_MOVE:
      if (j->t0 != OJ_UNSET && (A_RLX(&st->tail) & ~RING_FLAGS) == j->t0 + j->k) {
        o_fill(s, st, j->t0, j->k, 1);           /* claimed: complete it */
        st->ovf_first = j->first + j->k;
        st->ovf_n = j->n - j->k;
        st->ovf_extra = j->extra - j->k;
      }
      oj_set(st, OJ_NONE);
      break;
    case OJ_INSTALL:
      if (A_RLX(&st->tail) & RING_RETIRED)
        r_install_at(st, j->t0);
      else if ((int64_t)(r_puts(st) - A_RLX(&st->done)) >= (int64_t)(RING_JUMP / 2))
        __atomic_fetch_add(&st->done, RING_JUMP, __ATOMIC_SEQ_CST);
      oj_set(st, OJ_NONE);
      break;
    default:
      break;
  }
  if (A_RLX(&st->tail) & RING_MOVING) __atomic_fetch_and(&st->tail, ~RING_MOVING, __ATOMIC_SEQ_CST);
  o_shrink(s, st);
}

/* }==== */

static void r_note_tid(int32_t *where) {
  int32_t me = strand_shm_tid();
  if (A_RLX(where) != me) __atomic_store_n(where, me, __ATOMIC_RELAXED);
}

/* What a waiting putter's spin watches: the slot R_AHEAD - 1 positions after tail is free too
 * (up to a quarter of the ring). When the getter is the slower side, the putter comes back for a
 * batch of slots instead of taking each one the moment it is freed, while the getter is still
 * writing its line (measured: +5-20% items/s, 1P1C 100 B, maxsize 1000). A hint only: the put
 * tries its slot after the spin, and sleeps on r_can_put. */
#define R_AHEAD 16
static int r_can_put_ahead(q_state *st) {
  uint64_t cap;
  r_slot *slots = r_ring(st, &cap);
  uint64_t pos = A_ACQ(&st->tail);
  if ((pos & RING_CLOSED) || st->maxsize == 0) return 1;
  uint64_t k = cap / 4 < R_AHEAD ? cap / 4 : R_AHEAD;
  if (k > 1) pos += k - 1;
  return A_ACQ(&slots[r_idx(pos, cap)].seq) == 2 * pos;
}

static long online_cpus;                /* written once (the same value by any thread) */

/* Watch the ring for up to RING_SPIN_SECONDS until a waiter of ch could proceed: only when the
 * other side was last used by another thread (which may act meanwhile), with more than one CPU
 * and nothing else ready in this loop. Bounded; sched_yield now and then for an overloaded
 * machine. Returns 1 if it watched (try again), 0 if it did not. */
static int r_spin(lua_State *L, q_state *st, int ch) {
  int32_t other = A_RLX(ch == CH_GET ? &st->put_tid : &st->get_tid);
  if (other == 0 || other == strand_shm_tid()) return 0;
  long ncpu = __atomic_load_n(&online_cpus, __ATOMIC_RELAXED);
  if (ncpu == 0) {
    ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1) ncpu = 1;
    __atomic_store_n(&online_cpus, ncpu, __ATOMIC_RELAXED);
  }
  if (ncpu < 2 || strand_loop_get(L)->nready > 0) return 0;
  QSTAT(ch == CH_GET ? QS_SPIN_GET : QS_SPIN_PUT);
  double until = strand_now() + RING_SPIN_SECONDS;
  for (;;) {
    for (int i = 0; i < 64; i++) {
      /* a getter watches only the slot at head: not tail, the line every put writes */
      if (ch == CH_GET ? r_can_get(st) : r_can_put_ahead(st)) return 1;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#elif defined(__aarch64__)
      __asm__ __volatile__("yield");
#endif
    }
    if (ch == CH_GET && r_gettable(st)) return 1;   /* drained, or the overflow's turn */
    if (strand_now() >= until) return 1;
    sched_yield();
  }
}

/* }==== */

/* {==== waking (locked) */

/* After any change; kick: bit 1 << channel for the channels it may have woken. */
static void q_settle(strand_shm *s, int kick) {
  q_state *st = q_state_of(s);
  strand_shm_chan *c = strand_shm_chans(s);
  int get, put, join;
  if (st->ring) {
    get = r_gettable(st);
    put = r_can_put(st);
    join = r_unfinished(st) == 0 || r_closed(st);
  } else {
    get = st->n > 0 || st->closed;
    put = st->maxsize == 0 || st->n < st->maxsize || st->closed;
    join = st->unfinished == 0 || st->closed;
  }
  strand_shm_signal(s, CH_GET, A_RLX(&c[CH_GET].sleepers) > 0 && get, kick & 1);
  strand_shm_signal(s, CH_PUT, A_RLX(&c[CH_PUT].sleepers) > 0 && put, kick & 2);
  strand_shm_signal(s, CH_JOIN, A_RLX(&c[CH_JOIN].sleepers) > 0 && join, kick & 4);
}

/* Locked: anybody asleep on any channel (the counts are exact under the mutex). */
static int q_sleepers(strand_shm *s) {
  strand_shm_chan *c = strand_shm_chans(s);
  return A_RLX(&c[CH_GET].sleepers) | A_RLX(&c[CH_PUT].sleepers) | A_RLX(&c[CH_JOIN].sleepers);
}

/* A ring changed without the mutex: if anybody sleeps on ch, settle (and kick) it. */
static void r_wake(lua_State *L, strand_shm *s, int ch) {
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (A_RLX(&strand_shm_sleepers(s, ch)) == 0) return;
  QSTAT(ch == CH_GET ? QS_WAKE_GET : QS_WAKE_PUT);
  strand_shm_lockL(L, s);
  q_settle(s, 1 << ch);
  strand_shm_unlock(s);
}

/* Locked: count a sleeper of ch, then look once more (the other half of r_wake's handshake).
 * Returns 1 if it may sleep (counted), 0 if it should retry (not counted). */
static int q_sleep_on(strand_shm *s, int ch, int (*ready)(q_state *)) {
  __atomic_add_fetch(&strand_shm_sleepers(s, ch), 1, __ATOMIC_SEQ_CST);
  if (ready && ready(q_state_of(s))) {
    __atomic_sub_fetch(&strand_shm_sleepers(s, ch), 1, __ATOMIC_SEQ_CST);
    return 0;
  }
  return 1;
}

static void q_leave(lua_State *L, strand_shm *s, int ch) {
  strand_shm_lockL(L, s);
  __atomic_sub_fetch(&strand_shm_sleepers(s, ch), 1, __ATOMIC_SEQ_CST);
  q_settle(s, 0);
  strand_shm_unlock(s);
  strand_shm_leave(L, 0);
}

/* The start of every wait continuation: back from a sleep on ch, stop counting as a sleeper. */
static int q_resumed(lua_State *L, strand_shm *s, int ch, int status) {
  if (status != LUA_YIELD) return STRAND_READY;
  q_leave(L, s, ch);
  return strand_resumed(L, status);
}

/* Called with the lock held (released here): count as a sleeper on ch and wait, unless `ready`
 * already holds. Returns the wait's outcome, or -1 for "no need: try again now". In a task the
 * wait yields and k resumes (q_resumed leaves); from the main chunk it returns here. */
static int q_sleep(lua_State *L, strand_shm *s, int ch, int (*ready)(q_state *), double deadline,
                   lua_KContext ctx, lua_KFunction k) {
  int sleep = q_sleep_on(s, ch, ready);
  strand_shm_unlock(s);
  if (!sleep) return -1;
  if (ch != CH_JOIN) QSTAT(ch == CH_GET ? QS_SLEEP_GET : QS_SLEEP_PUT);
  int outcome = strand_shm_wait(L, deadline, ctx, k);
  q_leave(L, s, ch);
  return outcome;
}

/* Called with the lock held (released here), a waiter prepared: the first time, watch the
 * queue for a few microseconds and return -1 ("look again now"); the next time, sleep on ch
 * (q_sleep) and return the wait's outcome. *spun says which comes next. */
static int q_watch_or_sleep(lua_State *L, strand_shm *s, int ch, int *spun, double deadline,
                            lua_KContext ctx, lua_KFunction k) {
  if (!*spun) {
    uint32_t seen = strand_shm_changes(s);
    strand_shm_unlock(s);
    *spun = 1;
    strand_shm_spin(L, s, seen);
    return -1;
  }
  *spun = 0;
  return q_sleep(L, s, ch, NULL, deadline, ctx, k);
}

/* }==== */

/* {==== put */

/* {==== values by reference, while the queue has not crossed
 *
 * A queue that no other state has seen (it was never encoded by serial: passed to a thread,
 * put into a shared queue or dict, sent to a process; and no fork happened since it was made)
 * has exactly one box, in the state that made it, and only that state's tasks use it. Then a
 * value that is not a number, boolean or short string is not copied: it is kept in a table of
 * this state (weakly keyed by the box: registry[&LOCAL_KEY][box][ref] = value) and the queue
 * holds a 6-byte payload LOCAL_MAGIC 0 ref; a get gives the very value back. Crossing with such
 * values inside is refused by q_cross (the point where they would have to be copied). */

#define LOCAL_MAGIC 0xFE               /* never a serial version byte */
#define LOCAL_LEN 6
static const char LOCAL_KEY = 'L';

static int is_local(const char *p, size_t len) {
  return len == LOCAL_LEN && (unsigned char)p[0] == LOCAL_MAGIC;
}

/* Push registry[&LOCAL_KEY][box at 1] (create = make it if missing); returns its type. */
static int local_refs(lua_State *L, int create) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &LOCAL_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    if (!create) { lua_pushnil(L); return LUA_TNIL; }
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &LOCAL_KEY);
  }
  lua_pushvalue(L, 1);
  int t = lua_rawget(L, -2);
  if (t != LUA_TTABLE && create) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
    t = LUA_TTABLE;
  }
  lua_remove(L, -2);
  return t;
}

/* Replace the value at idx by a local payload. */
static void local_put(lua_State *L, strand_shm *s, int idx) {
  local_refs(L, 1);
  lua_pushvalue(L, idx);
  int ref = luaL_ref(L, -2);
  lua_pop(L, 1);
  char b[LOCAL_LEN] = { (char)LOCAL_MAGIC, 0 };
  memcpy(b + 2, &ref, 4);
  lua_pushlstring(L, b, LOCAL_LEN);
  lua_replace(L, idx);
  q_state_of(s)->nlocal++;
}

/* Take the value of a local payload: push it (1), or nil, message (2) in a state that does not
 * hold it (a forked process whose parent put it). The box is at 1. */
static int local_take(lua_State *L, strand_shm *s, const char *p, int push) {
  int ref;
  memcpy(&ref, p + 2, 4);
  if (local_refs(L, 0) != LUA_TTABLE) {
    lua_pop(L, 1);
    if (!push) return 0;
    return strand_fail_msg(L, "cannot get a value put by reference in another process", NULL);
  }
  if (push) lua_rawgeti(L, -1, ref);
  luaL_unref(L, push ? -2 : -1, ref);
  lua_remove(L, push ? -2 : -1);
  q_state_of(s)->nlocal--;
  return 1;
}

static const char *q_cross(strand_object *o) {
  strand_shm *s = (strand_shm *)o;
  if (__atomic_load_n(&s->head->crossed, __ATOMIC_ACQUIRE)) return NULL;
  if (q_state_of(s)->nlocal > 0)
    return "cannot pass a strand.queue holding values put by reference to another thread or "
           "process (get them first)";
  __atomic_store_n(&s->head->crossed, 1, __ATOMIC_RELEASE);
  return NULL;
}

/* The value at idx, to put: by reference while the queue has not crossed, else copied by the
 * copy rule (raises on what cannot be copied: the put is where the value must cross). */
static void q_payload(lua_State *L, strand_shm *s, int idx, int nowait) {
  if (!__atomic_load_n(&s->head->crossed, __ATOMIC_ACQUIRE)) {
    local_put(L, s, idx);
    return;
  }
  /* "bad argument #1 to 'put' (value.x: cannot copy a coroutine)" (the value is idx - 1) */
  strand_serial_encode_arg(L, idx, 1, STRAND_SERIAL_FUNCTIONS, nowait ? "put_nowait" : "put",
                           idx - 1);
  lua_replace(L, idx);
}

/* }==== */

/* While a put waits, its encoded value (which holds references to the strand objects in it)
 * is owned by a guard: if the task is cancelled or dropped, collecting the guard releases them. */
#define GUARD_META "strand.queue.guard"

static int guard_gc(lua_State *L) {
  int *armed = (int *)lua_touserdata(L, 1);
  if (*armed) {
    *armed = 0;
    size_t len;
    lua_settop(L, 1);
    lua_getiuservalue(L, 1, 2);                 /* the queue's box */
    lua_getiuservalue(L, 1, 1);
    const char *p = lua_tolstring(L, -1, &len);
    strand_object *o = strand_object_test(L, 2);
    if (p && is_local(p, len)) {
      if (o) {
        lua_pushvalue(L, 2);
        lua_replace(L, 1);                      /* local_take wants the box at 1 */
        local_take(L, (strand_shm *)o, p, 0);
      }
    } else if (p) {
      strand_serial_release(p, len);
    }
  }
  return 0;
}

/* The value was not put: its references go (now, or by the guard's hand). */
static void payload_drop(lua_State *L, int release) {
  if (lua_type(L, 5) == LUA_TUSERDATA) *(int *)lua_touserdata(L, 5) = 0;
  if (release) {
    size_t len;
    const char *p = lua_tolstring(L, 2, &len);
    if (is_local(p, len)) local_take(L, box_obj(L), p, 0);
    else strand_serial_release(p, len);
  }
}

/* The encoded value at 2 is owned by a new guard at 5 until it is put or dropped. */
static void guard_payload(lua_State *L) {
  int *armed = (int *)lua_newuserdatauv(L, sizeof(int), 2);
  *armed = 0;
  if (luaL_newmetatable(L, GUARD_META)) {
    lua_pushcfunction(L, guard_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 2);
  *armed = 1;
  lua_replace(L, 5);
}

/* put: stack 1 self, 2 encoded value, 3 deadline, 4 priority, 5 guard|nil, [6 waiter];
 * ctx: 1 for put_nowait */
static int q_put_k(lua_State *L, int status, lua_KContext nowait) {
  strand_shm *s = box_obj(L);
  q_state *st = q_state_of(s);
  int outcome = q_resumed(L, s, CH_PUT, status);
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
      it.seq = st->seq++;
      st->j.n = st->n;                          /* the journal (q_repair) */
      st->j.unfinished = st->unfinished;
      st->j.it = it;
      j_set(st, J_PUT);
      Q_CRASH(QD_ALLOC);
      memcpy(strand_shm_at(s, it.off), p, len);
      q_push(s, st, &it);                       /* counts it, clears the journal */
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
      guard_payload(L);
      strand_shm_prepare(L, s, CH_PUT);
      continue;
    }
    int o = q_watch_or_sleep(L, s, CH_PUT, &spun, deadline, nowait, q_put_k);
    if (o >= 0) outcome = o;
  }
}

/* {==== put into a ring */

/* Numbers, booleans and short strings (value at idx, of type t) go into a slot as they are: 1,
 * with a string's bytes left where they are (*bytes; NULL for the others); anything else: 0. */
static int r_encode_plain(lua_State *L, int idx, int t, r_item *it, const char **bytes) {
  size_t len;
  it->pid = 0;                       /* every byte r_item_size counts is defined (copied as a
                                        Lua string when a put has to wait) */
  *bytes = NULL;
  switch (t) {
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) { it->meta = (uint32_t)F_INT << 24; it->u.i = lua_tointeger(L, idx); }
      else { it->meta = (uint32_t)F_FLT << 24; it->u.d = lua_tonumber(L, idx); }
      return 1;
    case LUA_TBOOLEAN:
      it->meta = (uint32_t)(lua_toboolean(L, idx) ? F_TRUE : F_FALSE) << 24;
      return 1;
    case LUA_TSTRING:
      *bytes = lua_tolstring(L, idx, &len);
      if (len > RING_INLINE) return 0;
      it->meta = (uint32_t)F_STR << 24 | (uint32_t)len;
      return 1;
    default:
      return 0;
  }
}

/* An unbounded ring's locked put (the queue not closed): help the overflow drain, then the
 * ring if the overflow is empty, else the overflow. 0 or an errno. */
static int r_put_locked(strand_shm *s, q_state *st, const r_item *it, const void *bytes) {
  /* help it drain, when a batch fits: moving the one or two slots a getter just freed would
   * write the lines it is reading, and claim tail for each */
  if (st->ovf_n && r_room_for(st, OVF_BATCH)) {
    int moved = o_move(s, st, OVF_BATCH);
    QSTAT(QS_MOVE_PUT);
    QSTATN(QS_MOVED_PUT, moved);
    (void)moved;
  }
  if (st->ovf_n == 0 && r_push(st, it, bytes) > 0) {
    QSTAT(QS_PUT_LOCKED_RING);
    return 0;
  }
  QSTAT(QS_PUT_OVF);
  r_grow(s, st);                                /* producers got ahead: a bigger ring */
  return o_push(s, st, it, bytes);
}

/* Put into a ring: 1 done (wake the getters), 2 done into the overflow (woken), 0 full,
 * -1 closed, -2 no storage (*err). */
static inline __attribute__((always_inline))
int r_put_item(lua_State *L, strand_shm *s, q_state *st, const r_item *it, const void *bytes,
               int *err) {
  if (st->maxsize) return r_push(st, it, bytes);
  if (A_ACQ(&st->ovf_n) == 0) {
    int r = r_push(st, it, bytes);
    if (r != 0) {
      if (r > 0) QSTAT(QS_PUT_RING);
      return r;
    }
  }
  QSTAT(QS_PUT_LOCKED);
  strand_shm_lockL(L, s);                       /* full, or the overflow is in use */
  if (st->closed) {
    strand_shm_unlock(s);
    return -1;
  }
  *err = r_put_locked(s, st, it, bytes);
  /* as r_wake after a put into the ring: only getters can have been waiting for it (under the
   * mutex, where they count themselves, the count is exact) */
  if (*err == 0 && A_RLX(&strand_shm_sleepers(s, CH_GET)) > 0) {
    QSTAT(QS_WAKE_GET);
    q_settle(s, 1);
  }
  strand_shm_unlock(s);
  return *err ? -2 : 2;
}

/* Put serialized bytes: as r_put_item. */
static int r_push_encoded(lua_State *L, strand_shm *s, q_state *st, const char *p, size_t len,
                          int *err) {
  r_item it;
  it.pid = strand_shm_pid();
  if (len <= RING_INLINE) {
    it.meta = (uint32_t)F_SER << 24 | (uint32_t)len;
    memcpy(it.u.b, p, len);
    return r_put_item(L, s, st, &it, NULL, err);
  }
  if (!r_can_put(st)) return 0;                 /* no arena round trip for a full ring */
  strand_shm_lockL(L, s);
  uint64_t off = strand_shm_alloc(s, len);
  *err = errno;
  strand_shm_unlock(s);
  if (off == 0) return -2;
  memcpy(strand_shm_at(s, off), p, len);        /* the block is ours until it is put */
  it.meta = (uint32_t)F_ARENA << 24;
  it.u.a.off = off;
  it.u.a.len = len;
  int r = r_put_item(L, s, st, &it, NULL, err);
  if (r <= 0) {
    strand_shm_lockL(L, s);
    strand_shm_release(s, off);
    strand_shm_unlock(s);
  }
  return r;
}

/* stack 1 self, 2 payload (the r_item's bytes if plain, else the serialized value), 3 deadline,
 * 4 plain, 5 guard|nil, [6 waiter]; ctx: 1 for put_nowait */
static int r_put_k(lua_State *L, int status, lua_KContext ctx) {
  strand_shm *s = box_obj(L);
  q_state *st = q_state_of(s);
  int outcome = q_resumed(L, s, CH_PUT, status);
  lua_KContext nowait = ctx & 1;
  int capped = (ctx & 2) != 0;                  /* the wait was cut to a slice */
  size_t len;
  const char *p = lua_tolstring(L, 2, &len);
  double deadline = lua_tonumber(L, 3);
  int plain = lua_toboolean(L, 4);
  int spun = 0;
  for (;;) {
    int err = 0, r;
    if (plain) {
      r_item it;
      memcpy(&it, p, len);
      r = r_put_item(L, s, st, &it, NULL, &err);
    } else {
      r = r_push_encoded(L, s, st, p, len, &err);
    }
    if (r > 0) {
      r_note_tid(&st->put_tid);
      if (r == 1) r_wake(L, s, CH_GET);
      payload_drop(L, 0);
      lua_pushboolean(L, 1);
      return 1;
    }
    if (r == -2) {
      payload_drop(L, 1);
      if (err == ENOSPC) return strand_fail_msg(L, "queue storage full", "ENOSPC");
      return strand_fail(L, err);
    }
    if (r < 0) {
      payload_drop(L, !plain);
      return strand_fail_msg(L, "closed", NULL);
    }
    int expired = nowait || (outcome == STRAND_TIMEOUT && !capped) || deadline <= strand_now();
    if ((expired || outcome == STRAND_TIMEOUT) && r_free_dead_get(L, s, st)) {
      outcome = STRAND_READY;
      continue;
    }
    if (expired) {
      payload_drop(L, !plain);
      return strand_fail_msg(L, nowait ? "full" : "timeout", NULL);
    }
    outcome = STRAND_READY;
    if (!spun) {                                /* first, a few microseconds of watching */
      spun = 1;
      if (r_spin(L, st, CH_PUT)) continue;
    }
    if (lua_gettop(L) < 6) {                    /* first wait: guard the value, get a waiter */
      if (!plain) guard_payload(L);
      strand_shm_prepare(L, s, CH_PUT);
    }
    /* a getter holds the slot at tail: sleep in slices, and after each see if it died */
    double until = deadline;
    uint64_t held;
    capped = 0;
    if (r_tail_held(st, &held)) {
      double slice = strand_now() + R_SLICE;
      if (slice < until) { until = slice; capped = 1; }
    }
    strand_shm_lockL(L, s);
    int o = q_sleep(L, s, CH_PUT, r_can_put, until, nowait | (capped ? 2 : 0), r_put_k);
    if (o < 0) continue;
    outcome = o;
    spun = 0;
  }
}

static int r_put_start(lua_State *L, strand_shm *s, q_state *st, int nowait, int top, int t) {
  double deadline = nowait ? 0 : top < 3 ? STRAND_FOREVER : strand_opt_deadline(L, 3);
  r_item it;
  const char *bytes;
  if (r_encode_plain(L, 2, t, &it, &bytes)) {
    int err = 0;
    int r = r_put_item(L, s, st, &it, bytes, &err);   /* the fast path: no Lua value is made,
                                                         a string is copied once, into place */
    if (r > 0) {
      r_note_tid(&st->put_tid);
      if (r == 1) r_wake(L, s, CH_GET);
      lua_pushboolean(L, 1);
      return 1;
    }
    if (r == -2) {
      if (err == ENOSPC) return strand_fail_msg(L, "queue storage full", "ENOSPC");
      return strand_fail(L, err);
    }
    if (r < 0) return strand_fail_msg(L, "closed", NULL);
    uint64_t held;
    if (nowait && !r_tail_held(st, &held)) return strand_fail_msg(L, "full", NULL);
    if (bytes) memcpy(it.u.b, bytes, LEN_OF(&it));
    lua_settop(L, 1);
    lua_pushlstring(L, (const char *)&it, r_item_size(&it));
    lua_pushnumber(L, deadline);
    lua_pushboolean(L, 1);
  } else {
    lua_settop(L, 2);
    q_payload(L, s, 2, nowait);                 /* raises on what cannot cross */
    lua_pushnumber(L, deadline);
    lua_pushboolean(L, 0);
  }
  lua_pushnil(L);
  return r_put_k(L, LUA_OK, nowait);
}

/* }==== */

static int q_put_start(lua_State *L, int nowait) {
  int top = lua_gettop(L);
  strand_shm *s = q_self(L);
  q_state *st = q_state_of(s);
  int t = lua_type(L, 2);
  if (t == LUA_TNONE) luaL_checkany(L, 2);
  if (t == LUA_TNIL) luaL_argerror(L, 2, "cannot put nil into a queue");
  if (st->ring) return r_put_start(L, s, st, nowait, top, t);
  double prio = 0, deadline;
  int targ = 3;
  if (st->kind == Q_PRIO) {
    prio = luaL_checknumber(L, 3);
    luaL_argcheck(L, prio == prio, 3, "priority is NaN");
    targ = 4;
  }
  deadline = nowait ? 0 : strand_opt_deadline(L, targ);
  lua_settop(L, 2);
  q_payload(L, s, 2, nowait);                   /* raises on what cannot cross */
  lua_pushnumber(L, deadline);
  lua_pushnumber(L, prio);
  lua_pushnil(L);
  return q_put_k(L, LUA_OK, nowait);
}

/* put(v): a plain value into a ring at once (no deadline to read), else as q_put_start (which
 * checks the arguments, tries again, then waits) */
static int q_put(lua_State *L) {
  strand_shm *s = q_self(L);
  q_state *st = q_state_of(s);
  if (st->ring && lua_gettop(L) == 2) {
    r_item it;
    const char *bytes;
    int t = lua_type(L, 2);
    if (t != LUA_TNIL && r_encode_plain(L, 2, t, &it, &bytes)) {
      int err = 0;
      int r = r_put_item(L, s, st, &it, bytes, &err);
      if (r > 0) {
        r_note_tid(&st->put_tid);
        if (r == 1) r_wake(L, s, CH_GET);
        lua_pushboolean(L, 1);
        return 1;
      }
    }                                           /* (not put: the general path decides) */
  }
  return q_put_start(L, 0);
}
static int q_put_nowait(lua_State *L) { return q_put_start(L, 1); }

/* {==== put_many: a batch for one call
 *
 * q:put_many(t [, timeout]): t[1], ..., t[#t] in order, each as q:put(v, timeout) puts it; on a
 * ring, items that fit at once go in without a method call each and the getters are looked for
 * once per run of them (always before a put that has to wait). Stack: 1 self, 2 t, 3 timeout,
 * 4 #t; a put's results from 5. */

static int q_put_many_from(lua_State *L, lua_Integer i);

/* A put of item i raised (the error on top): a message (an item that cannot be copied) raised
 * again naming put_many, the item and how many were put before it; any other error (a
 * cancellation, out of memory) raised as it is. */
static int q_put_many_raise(lua_State *L, lua_Integer i, int status) {
  if (status == LUA_ERRRUN && lua_type(L, -1) == LUA_TSTRING) {
    size_t l;
    const char *m = lua_tolstring(L, -1, &l);
    static const char put[] = "bad argument #1 to 'put' (";    /* put's own naming, taken off */
    if (l > sizeof put && memcmp(m, put, sizeof put - 1) == 0 && m[l - 1] == ')') {
      lua_pushlstring(L, m + sizeof put - 1, l - sizeof put);
      m = lua_tostring(L, -1);
    }
    return luaL_error(L, "bad argument #1 to 'put_many' (item %I: %s; %I put before it)", i, m,
                      i - 1);
  }
  return lua_error(L);
}

/* After the put of item i (results from 5): on to i + 1, or nil, message, how many were put. */
static int q_put_many_k(lua_State *L, int status, lua_KContext i) {
  if (status != LUA_OK && status != LUA_YIELD) return q_put_many_raise(L, (lua_Integer)i, status);
  if (!lua_toboolean(L, 5)) {
    lua_settop(L, 6);
    lua_pushinteger(L, (lua_Integer)i - 1);
    return 3;
  }
  lua_settop(L, 4);
  return q_put_many_from(L, (lua_Integer)i + 1);
}

static int q_put_many_from(lua_State *L, lua_Integer i) {
  strand_shm *s = box_obj(L);
  q_state *st = q_state_of(s);
  lua_Integer n = lua_tointeger(L, 4);
  int pending = 0;                              /* put into the ring, getters not looked for */
  for (; i <= n; i++) {
    if (st->ring && st->maxsize == 0 && A_ACQ(&st->ovf_n) > 0) {
      /* an unbounded ring's overflow in use: a run of plain items under one lock */
      lua_Integer i0 = i;
      strand_shm_lockL(L, s);
      if (!st->closed) {
        for (; i <= n && i < i0 + OVF_BATCH; i++) {
          r_item it;
          const char *bytes;
          int t = lua_rawgeti(L, 2, i);
          int ok = r_encode_plain(L, 5, t, &it, &bytes) && r_put_locked(s, st, &it, bytes) == 0;
          lua_settop(L, 4);
          if (!ok) break;                       /* that one by put (it reports failures) */
        }
      }
      if (i > i0 && A_RLX(&strand_shm_sleepers(s, CH_GET)) > 0) q_settle(s, 1);
      strand_shm_unlock(s);
      if (i > i0) {
        i--;                                    /* (the loop's i++) */
        continue;
      }
    }
    if (st->ring) {
      int t = lua_rawgeti(L, 2, i);
      r_item it;
      const char *bytes;
      int err = 0;
      if (r_encode_plain(L, 5, t, &it, &bytes)) {
        int r = r_put_item(L, s, st, &it, bytes, &err);
        lua_settop(L, 4);
        if (r > 0) {
          pending |= r == 1;
          continue;
        }
      }
      lua_settop(L, 4);
    }
    if (pending) {                              /* before a put that may wait for a getter */
      r_note_tid(&st->put_tid);
      r_wake(L, s, CH_GET);
      pending = 0;
    }
    lua_pushcfunction(L, q_put);
    lua_pushvalue(L, 1);
    lua_rawgeti(L, 2, i);
    lua_pushvalue(L, 3);
    int st = lua_pcallk(L, 3, LUA_MULTRET, 0, (lua_KContext)i, q_put_many_k);
    if (st != LUA_OK) return q_put_many_raise(L, i, st);
    if (!lua_toboolean(L, 5)) {
      lua_settop(L, 6);
      lua_pushinteger(L, i - 1);
      return 3;
    }
    lua_settop(L, 4);
  }
  if (pending) {
    r_note_tid(&st->put_tid);
    r_wake(L, s, CH_GET);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int q_put_many(lua_State *L) {
  strand_shm *s = q_self(L);
  luaL_argcheck(L, q_state_of(s)->kind != Q_PRIO, 1, "a priority queue takes put(v, priority)");
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_isnoneornil(L, 3)) strand_opt_deadline(L, 3);   /* raises on a bad timeout now */
  lua_settop(L, 3);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
  for (lua_Integer i = 1; i <= n; i++) {        /* nothing is put if one cannot be */
    if (lua_rawgeti(L, 2, i) == LUA_TNIL)
      luaL_argerror(L, 2, lua_pushfstring(L, "item %d is nil", (int)i));
    lua_pop(L, 1);
  }
  lua_pushinteger(L, n);
  return q_put_many_from(L, 1);
}

/* }==== */

/* }==== */

/* {==== get and join */

/* Push the value serialized in p[0..len) by process pid: its count, or nil, message. */
static int q_decode(lua_State *L, const char *p, size_t len, int pid) {
  if (is_local(p, len)) return local_take(L, box_obj(L), p, 1);
  /* our own encoding: the value takes its references over; another process's: the
   * references it holds are that process's, ours are taken afresh */
  int mine = pid == strand_shm_pid();
  int n = strand_serial_decode(L, p, len,
                               STRAND_SERIAL_FUNCTIONS | (mine ? 0 : STRAND_SERIAL_NOADOPT));
  if (n < 0 && mine) strand_serial_release(p, len);
  if (!mine) strand_serial_release_shared(p, len);   /* family references: ours to drop */
  if (n < 0) {
    lua_pushfstring(L, "bad queue item: %s", lua_tostring(L, -1));
    return strand_fail_msg(L, lua_tostring(L, -1), "EINVAL");
  }
  return n;
}

/* Take an item from a ring and push it: its count (or nil, message); -1 if there was none.
 * Around the lock-free pop, the thread's intent record says "a get on this queue" (obj |
 * STRAND_INTENT_GET), so that a putter stuck at a slot a getter claimed and never freed can
 * tell whether that getter died (r_free_dead_get): one store and a release fence (a compiler
 * barrier on x86) before the claim, one store after. */
static int r_get_once_w(lua_State *L, strand_shm *s, q_state *st, int wake);
static int r_get_once(lua_State *L, strand_shm *s, q_state *st) {
  return r_get_once_w(L, s, st, 1);
}

/* The fast path of a get: the slot at head holds a plain value (a number, a boolean, a string
 * of up to RING_INLINE bytes). Its Lua value is made first, straight from the slot (no copy of
 * the slot on the way), and the position claimed after: a collector step inside
 * lua_pushlstring runs with nothing claimed, and a memory error there leaves the item in the
 * queue. The claim (head's compare-and-swap from pos) succeeds only if no other getter claimed
 * pos since we saw it published, so its slot was not freed and refilled while we read it; when
 * it fails (another getter took it, and what we read may be torn: the length is checked before
 * it is used, so the read stays inside the slot) the value is dropped and the next position
 * tried. 1: pushed and taken (the intent record said "a get" around the claim, as in
 * r_get_once); 0: nothing published at head, or not plain (r_get_once's general path). */
static inline __attribute__((always_inline))
int r_take_plain(lua_State *L, q_state *st, strand_intent *me) {
  uint64_t cap;
  r_slot *slots = r_ring(st, &cap);
  uint64_t pos = A_RLX(&st->head);
  for (;;) {
    r_slot *x = &slots[r_idx(pos, cap)];
    if (A_ACQ(&x->seq) != 2 * pos + 1) return 0;
    uint32_t meta = A_RLX(&x->it.meta);
    switch (meta >> 24) {
      case F_INT: lua_pushinteger(L, A_RLX(&x->it.u.i)); break;
      case F_STR:
        if ((meta & 0xffffffu) > RING_INLINE) return 0;      /* torn: the general path */
        lua_pushlstring(L, x->it.u.b, meta & 0xffffffu);
        break;
      case F_FLT: lua_pushnumber(L, x->it.u.d); break;
      case F_FALSE: lua_pushboolean(L, 0); break;
      case F_TRUE: lua_pushboolean(L, 1); break;
      default: return 0;
    }
    if (me) {
      __atomic_store_n(&me->obj, (uint64_t)((char *)st - strand_arena_base) | STRAND_INTENT_GET,
                       __ATOMIC_RELEASE);
      __atomic_thread_fence(__ATOMIC_RELEASE);
    }
    int won = __atomic_compare_exchange_n(&st->head, &pos, pos + 1, 0, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED);
    if (won) __atomic_store_n(&x->seq, 2 * (pos + cap), __ATOMIC_RELEASE);
    if (me) __atomic_store_n(&me->obj, 0, __ATOMIC_RELEASE);
    if (won) return 1;
    lua_pop(L, 1);                              /* pos: head as the failed claim read it */
  }
}

/* As r_get_once; wake 0: a bounded ring's waiting putters are not looked for (the caller does
 * it once for a batch: get_many). */
static inline __attribute__((always_inline))
int r_get_once_w(lua_State *L, strand_shm *s, q_state *st, int wake) {
  r_item it;
  strand_intent *me = strand_intent_fast();
  if (r_take_plain(L, st, me)) {
    QSTAT(QS_GET_PLAIN);
    if (st->maxsize && wake) r_wake(L, s, CH_PUT);
    r_note_tid(&st->get_tid);
    return 1;
  }
  if (me) {
    /* release (a plain store on x86): a putter that reads this record sees the slots this
     * thread freed before, so it never frees one of them again */
    __atomic_store_n(&me->obj, (uint64_t)((char *)st - strand_arena_base) | STRAND_INTENT_GET,
                     __ATOMIC_RELEASE);
    /* with r_pop's claim after it: a putter that sees head moved (acquire) sees the record */
    __atomic_thread_fence(__ATOMIC_RELEASE);
  }
  int popped = r_pop(st, &it);
  if (me) __atomic_store_n(&me->obj, 0, __ATOMIC_RELEASE);
  if (popped) {
    QSTAT(QS_GET_RING);
    if (st->maxsize && wake) r_wake(L, s, CH_PUT);   /* an unbounded ring has no waiting putters */
  } else {
    if (st->maxsize || A_ACQ(&st->ovf_n) == 0) return -1;
    QSTAT(QS_GET_LOCKED);
    strand_shm_lockL(L, s);
    int moved = r_room(st) ? o_move(s, st, OVF_GET_BATCH) : 0;   /* (none into a full ring) */
    QSTAT(QS_MOVE_GET);
    QSTATN(QS_MOVED_GET, moved);
    int got = r_pop(st, &it);
    if (!got && o_pop(s, st, &it)) {
      got = 1;
      QSTAT(QS_GET_OVF);
    }
    /* more moved: other getters may go on; nobody asleep (exact under the mutex): no settle */
    if ((got || moved) && q_sleepers(s)) q_settle(s, moved > 1);
    strand_shm_unlock(s);
    if (!got) return -1;
  }
  r_note_tid(&st->get_tid);
  switch (F_OF(&it)) {
    case F_INT: lua_pushinteger(L, it.u.i); return 1;
    case F_FLT: lua_pushnumber(L, it.u.d); return 1;
    case F_FALSE: lua_pushboolean(L, 0); return 1;
    case F_TRUE: lua_pushboolean(L, 1); return 1;
    case F_STR: lua_pushlstring(L, it.u.b, LEN_OF(&it)); return 1;
    case F_SER: return q_decode(L, it.u.b, LEN_OF(&it), (int)it.pid);
    default: break;
  }
  /* F_ARENA: copy it out, give the block back, then decode (which may raise) */
  size_t len = (size_t)it.u.a.len;
  char *scratch = strand_loop_scratch(strand_loop_get(L));
  char *buf = len <= STRAND_SCRATCH ? scratch : (char *)malloc(len);
  const char *from = (const char *)strand_shm_at(s, it.u.a.off);
  if (buf) memcpy(buf, from, len);
  else if (it.pid == strand_shm_pid()) strand_serial_release(from, len);
  strand_shm_lockL(L, s);
  strand_shm_release(s, it.u.a.off);
  strand_shm_unlock(s);
  if (buf == NULL) return strand_fail(L, ENOMEM);
  int n = q_decode(L, buf, len, (int)it.pid);
  if (buf != scratch) free(buf);
  return n;
}


/* get from a ring: stack 1 self, 2 deadline, [3 waiter]; ctx: 1 for get_nowait, | 2 when the
 * wait was cut to a slice */
static int r_get_k(lua_State *L, int status, lua_KContext ctx) {
  strand_shm *s = box_obj(L);
  q_state *st = q_state_of(s);
  int outcome = q_resumed(L, s, CH_GET, status);
  double deadline = lua_tonumber(L, 2);
  lua_KContext nowait = ctx & 1;
  int capped = (ctx & 2) != 0;
  int spun = 0;
  for (;;) {
    int n = r_get_once(L, s, st);
    if (n >= 0) return n;
    if (r_drained(st)) return strand_fail_msg(L, "closed", NULL);
    int expired = nowait || (outcome == STRAND_TIMEOUT && !capped) || deadline <= strand_now();
    if ((expired || outcome == STRAND_TIMEOUT) && r_skip_dead(L, s, st)) {
      outcome = STRAND_READY;
      continue;
    }
    if (expired) return strand_fail_msg(L, nowait ? "empty" : "timeout", NULL);
    outcome = STRAND_READY;
    if (!spun) {                                /* first, a few microseconds of watching */
      spun = 1;
      if (r_spin(L, st, CH_GET)) continue;
    }
    if (lua_gettop(L) < 3) strand_shm_prepare(L, s, CH_GET);
    double until = deadline;
    capped = 0;
    if (r_head_claimed(st)) {
      double slice = strand_now() + R_SLICE;
      if (slice < until) { until = slice; capped = 1; }
    }
    strand_shm_lockL(L, s);
    int o = q_sleep(L, s, CH_GET, r_gettable, until, nowait | (capped ? 2 : 0), r_get_k);
    if (o < 0) continue;
    outcome = o;
    spun = 0;
  }
}

/* get: stack 1 self, 2 deadline, [3 waiter]; ctx: 1 for get_nowait */
static int q_get_k(lua_State *L, int status, lua_KContext nowait) {
  strand_shm *s = box_obj(L);
  q_state *st = q_state_of(s);
  int outcome = q_resumed(L, s, CH_GET, status);
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
      st->j.n = st->n;                          /* the journal (q_repair): undone until cleared */
      st->j.it = it;
      j_set(st, J_GET);
      Q_CRASH(QD_GET);
      q_pop(s, st);
      j_set(st, J_NONE);
      Q_CRASH(QD_TAKEN);
      strand_shm_release(s, it.off);            /* killed before this: the block is lost (bytes) */
      q_settle(s, 2);
      strand_shm_unlock(s);
      int n = q_decode(L, buf, it.len, (int)it.pid);
      if (buf != scratch) free(buf);
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
    int o = q_watch_or_sleep(L, s, CH_GET, &spun, deadline, nowait, q_get_k);
    if (o >= 0) outcome = o;
  }
}

static int q_get_start(lua_State *L, int nowait) {
  int top = lua_gettop(L);
  strand_shm *s = q_self(L);
  q_state *st = q_state_of(s);
  double deadline = nowait ? 0 : top < 2 ? STRAND_FOREVER : strand_opt_deadline(L, 2);
  if (st->ring) {
    int n = r_get_once(L, s, st);               /* the fast path: an item is there (pushed on
                                                   top: the arguments may stay below it) */
    if (n >= 0) return n;
    lua_settop(L, 1);
    lua_pushnumber(L, deadline);
    return r_get_k(L, LUA_OK, nowait);
  }
  lua_settop(L, 1);
  lua_pushnumber(L, deadline);
  return q_get_k(L, LUA_OK, nowait);
}

/* get(): an item at once (r_get_once inline, no deadline to read), else as q_get_start (which
 * checks a timeout argument, looks once more, then waits) */
static int q_get(lua_State *L) {
  strand_shm *s = q_self(L);
  q_state *st = q_state_of(s);
  if (st->ring && lua_gettop(L) == 1) {
    int n = r_get_once_w(L, s, st, 1);
    if (n >= 0) return n;
  }
  return q_get_start(L, 0);
}
static int q_get_nowait(lua_State *L) { return q_get_start(L, 1); }

/* {==== get_many: a batch for one call
 *
 * q:get_many(max [, timeout]): the first item waited for as q:get(timeout) waits, then as many
 * more as are there at once, up to max, in order, in a new table (one method call and, on a
 * bounded ring, one look for waiting putters per batch instead of per item). Stack: 1 self,
 * 2 max, 3 timeout, 4 the table. */

/* Take up to max - (already in the table) items without waiting into the table at 4: how many
 * are in it now. An item that cannot be decoded (taken: it is gone, as with get) ends the batch:
 * its nil, message [, code] are left on top (-1 - count returned). */
static lua_Integer many_drain(lua_State *L, lua_Integer k, lua_Integer max) {
  strand_shm *s = box_obj(L);
  q_state *st = q_state_of(s);
  lua_Integer k0 = k;
  int failed = 0;
  while (k < max) {
    int n;
    if (st->ring) {
      n = r_get_once_w(L, s, st, 0);
      if (n < 0) break;
    } else {
      lua_pushcfunction(L, q_get_nowait);
      lua_pushvalue(L, 1);
      lua_call(L, 1, LUA_MULTRET);
      n = lua_gettop(L) - 4;
      if (lua_isnil(L, 5)) {
        const char *e = lua_tostring(L, 6);
        if (e != NULL && (strcmp(e, "empty") == 0 || strcmp(e, "closed") == 0)) {
          lua_settop(L, 4);
          break;
        }
      }
    }
    if (n == 1 && !lua_isnil(L, -1)) {
      lua_rawseti(L, 4, ++k);
      continue;
    }
    failed = 1;                                 /* nil, message [, code]: the top n, */
    int junk = lua_gettop(L) - 4 - n;           /* moved down to 5 (a decode leaves its own */
    for (int j = 0; j < junk; j++) lua_remove(L, 5);   /* message below them) */
    break;
  }
  /* (a bad item was taken too: its slot is free for a waiting putter) */
  if (st->ring && st->maxsize && (k > k0 || failed)) r_wake(L, s, CH_PUT);
  return failed ? -1 - k : k;
}

/* The end of a batch: the table, or (nothing taken but a bad item) that item's failure; a bad
 * item after others: the table and its message. */
static int many_return(lua_State *L, lua_Integer k) {
  if (k >= 0) {
    lua_settop(L, 4);
    return 1;
  }
  k = -1 - k;
  if (k == 0) return lua_gettop(L) - 4;         /* nil, message [, code] */
  lua_pushvalue(L, 4);
  lua_pushvalue(L, 6);                          /* the table, the message */
  return 2;
}

static int q_get_many_k(lua_State *L, int status, lua_KContext max) {
  (void)status;
  if (lua_isnil(L, 5)) return lua_gettop(L) - 4; /* nil, "timeout" | "closed" | a bad item's */
  lua_settop(L, 5);
  lua_rawseti(L, 4, 1);
  return many_return(L, many_drain(L, 1, (lua_Integer)max));
}

static int q_get_many(lua_State *L) {
  q_self(L);
  lua_Integer max = luaL_checkinteger(L, 2);
  luaL_argcheck(L, max >= 1, 2, "must be at least 1");
  if (!lua_isnoneornil(L, 3)) strand_opt_deadline(L, 3);   /* raises on a bad timeout now */
  lua_settop(L, 3);
  lua_createtable(L, max < 64 ? (int)max : 64, 0);
  lua_Integer k = many_drain(L, 0, max);
  if (k != 0) return many_return(L, k);
  /* nothing there: wait for the first as get does (it may yield: continued in q_get_many_k) */
  lua_pushcfunction(L, q_get);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 3);
  lua_callk(L, 2, LUA_MULTRET, (lua_KContext)max, q_get_many_k);
  return q_get_many_k(L, LUA_OK, (lua_KContext)max);
}

/* }==== */

static int q_unfinished(q_state *st) {
  return (st->ring ? r_unfinished(st) : st->unfinished) == 0;
}

static int q_is_closed(q_state *st) { return st->ring ? r_closed(st) : st->closed; }

static int q_joinable(q_state *st) { return q_unfinished(st) || q_is_closed(st); }

/* join([timeout]): stack 1 self, 2 deadline, [3 waiter] */
static int q_join_k(lua_State *L, int status, lua_KContext ctx) {
  strand_shm *s = box_obj(L);
  q_state *st = q_state_of(s);
  int outcome = q_resumed(L, s, CH_JOIN, status);
  double deadline = lua_tonumber(L, 2);
  for (;;) {
    strand_shm_lockL(L, s);
    if (q_unfinished(st)) {
      strand_shm_unlock(s);
      lua_pushboolean(L, 1);
      return 1;
    }
    if (q_is_closed(st) || outcome == STRAND_TIMEOUT || deadline <= strand_now()) {
      int closed = q_is_closed(st);
      strand_shm_unlock(s);
      return strand_fail_msg(L, closed ? "closed" : "timeout", NULL);
    }
    if (lua_gettop(L) < 3) {
      strand_shm_unlock(s);
      strand_shm_prepare(L, s, CH_JOIN);
      continue;
    }
    int o = q_sleep(L, s, CH_JOIN, q_joinable, deadline, ctx, q_join_k);
    if (o >= 0) outcome = o;
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
  if (st->ring) {
    uint64_t d = A_ACQ(&st->done);
    do {
      if (d >= r_puts(st)) return luaL_error(L, "task_done() called too many times");
    } while (!__atomic_compare_exchange_n(&st->done, &d, d + 1, 1, __ATOMIC_SEQ_CST,
                                          __ATOMIC_ACQUIRE));
    r_wake(L, s, CH_JOIN);
    return 0;
  }
  strand_shm_lockL(L, s);
  int ok = st->unfinished > 0;
  if (ok && --st->unfinished == 0) q_settle(s, 4);
  strand_shm_unlock(s);
  if (!ok) return luaL_error(L, "task_done() called too many times");
  return 0;
}

/* }==== */

/* {==== the rest */

/* close(): every waiter returns nil, "closed"; items already in are still delivered.
 * No waiter of any process can miss it: the closed bit is set and q_settle runs under the
 * mutex, and a waiter counts itself in sleepers and takes its last look (r_gettable /
 * r_can_put / q_joinable, which all see the bit) under the same mutex; so either it saw the
 * bit and does not sleep, or close saw it counted and fired its record (kick 7: every channel,
 * signalled or not). A fired record of a task not yet asleep is taken when it arms (the
 * armed/fired pair, shm.c); one of another process reaches it through that process's relay,
 * which is running before any process forked after it starts (relay_start: this wake-up was
 * the one lost when a child inherited a lock of the relay's start-up). */
static int q_close(lua_State *L) {
  strand_shm *s = strand_shm_self(L);
  q_state *st = q_state_of(s);
  strand_shm_lockL(L, s);
  if (!st->closed) {
    st->closed = 1;
    if (st->ring) __atomic_fetch_or(&st->tail, RING_CLOSED, __ATOMIC_SEQ_CST);
    q_settle(s, 7);
  }
  strand_shm_unlock(s);
  return 0;
}

static int q_field(lua_State *L, int which) {
  strand_shm *s = strand_shm_self(L);
  q_state *st = q_state_of(s);
  int64_t n, max = st->maxsize;
  int closed;
  if (st->ring) {
    n = r_size(st);
    closed = r_closed(st);
  } else {
    strand_shm_lockL(L, s);
    n = st->n;
    closed = st->closed;
    strand_shm_unlock(s);
  }
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
static void r_item_release(strand_shm *s, const r_item *it, int pid) {
  void (*rel)(const char *, size_t) =
    it->pid == pid ? strand_serial_release : strand_serial_release_shared;
  if (F_OF(it) == F_SER) rel(it->u.b, LEN_OF(it));
  else if (F_OF(it) == F_ARENA) rel((const char *)strand_shm_at(s, it->u.a.off), it->u.a.len);
}

static void q_destroy(strand_object *o) {
  strand_shm *s = (strand_shm *)o;
  q_state *st = q_state_of(s);
  int pid = strand_shm_pid();
  if (st->ring) {
    /* nobody else uses it here any more; other processes may, but only this process's
     * references are released (they are this process's to drop) */
    uint64_t t = r_tail(st), rcap;
    r_slot *rs = r_ring(st, &rcap);
    for (uint64_t pos = A_ACQ(&st->head); pos < t; pos++) {
      r_slot *x = &rs[pos % rcap];
      if (A_ACQ(&x->seq) == 2 * pos + 1) r_item_release(s, &x->it, pid);
    }
    if (st->maxsize == 0 && strand_shm_lock(s) == 0) {
      o_chunk *c = st->ovf_n ? o_chunk_at(s, st->ovf_head) : NULL;
      for (uint64_t i = st->ovf_first; i < st->ovf_first + st->ovf_n; i++) {
        while (i >= c->start + OVF_CHUNK) c = o_chunk_at(s, c->next);
        r_item_release(s, &c->it[i - c->start], pid);
      }
      strand_shm_unlock(s);
    }
  } else if (strand_shm_lock(s) == 0) {
    q_item *a = st->cap ? q_items(s, st) : NULL;
    for (int64_t i = 0; i < st->n; i++) {
      q_item *it = &a[st->kind == Q_FIFO ? (st->first + (uint64_t)i) % st->cap : (uint64_t)i];
      (it->pid == pid ? strand_serial_release : strand_serial_release_shared)(
        (const char *)strand_shm_at(s, it->off), it->len);
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
  /* a bounded FIFO gets the ring when its slots fit well within the storage; an unbounded one
   * a ring of RING_UNBOUNDED slots (fewer with a small storage) and the overflow */
  size_t slots = (size_t)max;
  if (max == 0) {
    slots = reserve / 4 / sizeof(r_slot);
    if (slots > RING_UNBOUNDED) slots = RING_UNBOUNDED;
  }
  size_t ringsize = slots * sizeof(r_slot);
  int ring = kind == Q_FIFO && slots > 0 && slots <= RING_MAXCAP && ringsize <= reserve / 4;
  strand_shm *s = strand_shm_new(L, sizeof(q_view), &queue_type,
                                 sizeof(q_state) + (ring ? ringsize : 0), 3, reserve);
  if (s == NULL) return strand_shm_fail(L, &queue_type, errno);
  q_view_fill(s);
  q_state *st = q_state_of(s);
  st->kind = kind;
  st->maxsize = max;
  if (ring) {
    st->ring = 1;
    st->cap = (uint64_t)slots;
    if (max == 0) {                           /* growth: within a quarter of the storage */
      st->grow_max = reserve / 4 / sizeof(r_slot);
      if (st->grow_max > RING_GROW_MAX) st->grow_max = RING_GROW_MAX;
    }
    for (uint64_t i = 0; i < st->cap; i++) r_slots(st)[i].seq = 2 * i;
    st->rdesc = r_desc(r_slots(st), st->cap);
  }
  strand_object_push(L, &s->obj);
  return 1;
}

/* _test_claim(q): a test hook, what a producer killed mid-put leaves: claim the ring's next
 * position (intent record and all) without publishing it -> true | nil, "full" / "closed" */
static int l_test_claim(lua_State *L) {
  strand_object *o = strand_object_test(L, 1);
  luaL_argcheck(L, o != NULL && o->type == &queue_type, 1, "strand.queue expected");
  q_state *st = q_state_of((strand_shm *)o);
  luaL_argcheck(L, st->ring, 1, "a FIFO queue with a ring expected");
  r_item it;
  memset(&it, 0, sizeof it);
  it.meta = (uint32_t)F_TRUE << 24;
  int r = r_push_in(st, &it, NULL, strand_intent_mine(), 0);   /* the record keeps naming it */
  if (r > 0) { lua_pushboolean(L, 1); return 1; }
  return strand_fail_msg(L, r < 0 ? "closed" : "full", NULL);
}

/* _test_take(q): a test hook, what a getter killed mid-get leaves: claim the ring's head
 * position (intent record and all) without freeing its slot -> true | nil, "empty" */
static int l_test_take(lua_State *L) {
  strand_object *o = strand_object_test(L, 1);
  luaL_argcheck(L, o != NULL && o->type == &queue_type, 1, "strand.queue expected");
  q_state *st = q_state_of((strand_shm *)o);
  luaL_argcheck(L, st->ring, 1, "a FIFO queue with a ring expected");
  uint64_t cap;
  r_slot *slots = r_ring(st, &cap);
  strand_intent *me = strand_intent_mine();
  uint64_t pos = A_ACQ(&st->head);
  if (me)
    __atomic_store_n(&me->obj, (uint64_t)((char *)st - strand_arena_base) | STRAND_INTENT_GET,
                     __ATOMIC_SEQ_CST);
  if (A_ACQ(&slots[r_idx(pos, cap)].seq) != 2 * pos + 1 ||
      !__atomic_compare_exchange_n(&st->head, &pos, pos + 1, 0, __ATOMIC_SEQ_CST,
                                   __ATOMIC_RELAXED)) {
    if (me) __atomic_store_n(&me->obj, 0, __ATOMIC_RELEASE);
    return strand_fail_msg(L, "empty", NULL);
  }
  lua_pushboolean(L, 1);                      /* the record keeps naming it */
  return 1;
}

/* _test_forge_homes(q, pid, fd): a test hook, the home records waiting on q name process pid
 * and descriptor fd (a dead waiter's records once its pid is recycled) -> how many */
static int l_test_forge_homes(lua_State *L) {
  strand_object *o = strand_object_test(L, 1);
  luaL_argcheck(L, o != NULL && o->type == &queue_type, 1, "strand.queue expected");
  int pid = (int)luaL_checkinteger(L, 2), fd = (int)luaL_checkinteger(L, 3);
  lua_pushinteger(L, strand_shm_test_forge_homes((strand_shm *)o, pid, fd));
  return 1;
}

/* _test_die(point [, n]): a test hook, this process _exits the n-th time (default 1) it
 * reaches the named crash point of the locked path, the mutex held (run it in a child only);
 * "link" and "unlink": in the middle of a change of the queue's storage list (shm.c) */
static int l_test_die(lua_State *L) {
  int point = luaL_checkoption(L, 1, NULL, die_names);
  lua_Integer n = luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, n >= 1 && n <= 1 << 30, 2, "must be from 1 to 2^30");
  if (point == QD_LINK || point == QD_UNLINK) {   /* inside the storage list (shm.c) */
    strand_shm_test_die(point == QD_LINK ? 1 : 2, (int)n);
    return 0;
  }
  die_n = (int)n;
  die_point = point;
  return 0;
}

/* _test_blocks(q): a test hook, the queue's storage blocks and bytes in use, an unbounded
 * FIFO's overflow chunks and the rings it grew to (each kept until the queue is destroyed) ->
 * n, bytes, chunks, rings | nil, "corrupt" if its block list is not a consistent doubly linked
 * list */
static int l_test_blocks(lua_State *L) {
  strand_object *o = strand_object_test(L, 1);
  luaL_argcheck(L, o != NULL && o->type == &queue_type, 1, "strand.queue expected");
  uint64_t used;
  int64_t n = strand_shm_test_blocks((strand_shm *)o, &used);
  if (n < 0) return strand_fail_msg(L, "corrupt", NULL);
  lua_pushinteger(L, (lua_Integer)n);
  lua_pushinteger(L, (lua_Integer)used);
  q_state *st = q_state_of((strand_shm *)o);
  lua_Integer chunks = 0;                       /* an unbounded ring's overflow chunks */
  lua_Integer rings = 0;                        /* ... and the rings it grew to (r_grow) */
  if (st->ring && st->maxsize == 0) {
    for (uint64_t c = st->ovf_head; c; c = o_chunk_at((strand_shm *)o, c)->next) chunks++;
    if (st->ring_b)                             /* RING_BIG, then RING_GROW times more each */
      for (uint64_t cap = st->ring_b & (((uint64_t)1 << RD_CAPBITS) - 1); cap >= RING_BIG;
           cap /= RING_GROW)
        rings++;
  }
  lua_pushinteger(L, chunks);
  lua_pushinteger(L, rings);
  return 4;
}

static int l_new(lua_State *L) { return q_new(L, Q_FIFO); }
static int l_lifo(lua_State *L) { return q_new(L, Q_LIFO); }
static int l_priority(lua_State *L) { return q_new(L, Q_PRIO); }

int strand_open_queue(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"put", q_put}, {"get", q_get}, {"put_nowait", q_put_nowait}, {"get_nowait", q_get_nowait},
    {"get_many", q_get_many}, {"put_many", q_put_many},
    {"qsize", q_qsize}, {"empty", q_empty}, {"full", q_full}, {"maxsize", q_maxsize},
    {"task_done", q_task_done}, {"join", q_join}, {"close", q_close}, {"closed", q_closed},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"new", l_new}, {"lifo", l_lifo}, {"priority", l_priority}, {"_test_claim", l_test_claim},
    {"_test_take", l_test_take}, {"_test_forge_homes", l_test_forge_homes},
    {"_test_die", l_test_die}, {"_test_blocks", l_test_blocks},
    {"_test_arena", strand_shm_test_arena},
    {"_test_hold_fork", strand_shm_test_hold_fork},
    {NULL, NULL}
  };
  strand_objtype_on_cross(&queue_type, q_cross);
  strand_shm_type(&queue_type, sizeof(q_view), q_view_fill);
  strand_shm_on_repair(&queue_type, q_repair);
  strand_shm_newmeta(L, &queue_type, methods, NULL);   /* mt methods */
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, q_len, 1);
  lua_setfield(L, -3, "__len");
  lua_pop(L, 2);
  luaL_newlib(L, funcs);
  return 1;
}

/* }==== */
