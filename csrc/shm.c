/* shm.c — process-shared objects: state in one family-wide shared arena (a process-shared
 * allocator under a robust mutex), robust per-object mutexes, and wake-ups through one eventfd
 * per Lua state (per loop), relayed across processes by a futex word and a thread. */
#include "strand.h"

#include <sys/single_threaded.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* {==== the design (docs/internals.md "## Shared objects: the arena")
 *
 * The arena. One memfd mapped once, MAP_SHARED|MAP_NORESERVE, ARENA_RESERVE bytes of address
 * space, when the module is first opened. Every process forked afterwards inherits the mapping
 * at the same address, so an offset (and even a pointer) into it means the same bytes in the
 * whole family, including for objects made after the fork. The memfd is given real pages with
 * fallocate as the arena grows (running out of memory is ENOMEM from a constructor, never a
 * SIGBUS), big freed blocks are punched out again. One descriptor and one mapping in all.
 *
 * The allocator: size classes (16-byte steps to 512, then four per power of two), a free list
 * per class, carving from the top; under one robust process-shared mutex. An object is one
 * block: its head (robust mutex, per-channel wait words, storage accounting) then its state.
 * Blocks an object allocates later (queue items, dict entries) carry a 16-byte header that
 * chains them to the object, so the object's last reference frees everything it owns.
 *
 * Lifetime: each process holds its own strand_shm (so the process-local reference count is
 * duplicated by fork); the head counts processes (arefs). The atfork child handler adds one
 * for every object the child inherits (a process-local list); a process's last release
 * subtracts one and the family's last frees the blocks. A process that dies without
 * releasing (SIGKILL, _exit) leaves its count: those blocks stay until the family ends.
 *
 * Waking. Each Lua state that ever waits has a home: an eventfd registered in its loop, and a
 * home record in the arena (pid, fd, pending). For each (object, channel) it waits on, it has
 * a waiter record in the arena, linked into the channel's list under the object's mutex:
 * { fired, armed, home }. A changer calls strand_shm_signal under the mutex: when a sleeper
 * may proceed it sets `fired` on every record of the channel, and for a record that is armed
 * (a task of that state is asleep on it) and was not fired yet, wakes its home: a write to the
 * eventfd in the same process, else `pending` + a futex word of the home's process, where a
 * relay thread (started by the first fork) writes the eventfd. Armed/fired are a Dekker pair:
 * a sleeper arms, then takes `fired`; a waker sets `fired`, then reads `armed`; one of them
 * sees the other. In a state, one waiting task polls the home eventfd; when it fires it reads
 * it, takes `fired` from every armed record and wakes one task of each (the rest follow as in
 * the old per-object scheme: a leaving task wakes the next, all of them on broadcast channels).
 * A record joining a channel that is signalled now starts fired, so "signalled" keeps meaning
 * "the channel's sleepers can proceed", and nothing is written while nobody sleeps: the
 * uncontended path makes no syscall. */

/* }==== */

#define ARENA_RESERVE ((uint64_t)1 << 36)   /* 64 GiB of address space, NORESERVE, if given */
#define ARENA_FLOOR   ((uint64_t)1 << 30)   /* halved down to this where refused */
#define ARENA_STEP    ((uint64_t)1 << 18)   /* fallocate at least this much at a time */
#define PUNCH_MIN     ((uint64_t)1 << 24)   /* freed blocks from here on give their pages back */
#define NCLS          160
#define ARENA_MAGIC   0x73747261726e6131ull

typedef struct arena_hdr {
  uint64_t magic;
  pthread_mutex_t mu;
  uint64_t top;                 /* first byte never handed out */
  uint64_t size;                /* bytes the memfd holds (fallocated) */
  uint64_t freelist[NCLS];
  uint64_t intents;             /* the first strand_intent record (list, under mu) */
  uint64_t inuse;               /* bytes handed out and not freed (under mu; a test hook's) */
  uint64_t nobjects;            /* objects whose blocks are not freed (atomic; a test hook's) */
} arena_hdr;

char *strand_arena_base;        /* the same in every process of the family */
static uint64_t arena_reserve;  /* bytes of address space mapped (set once, with the base) */
uint64_t strand_arena_size(void) { return arena_reserve; }
static int arena_fd = -1;
static pthread_once_t arena_once = PTHREAD_ONCE_INIT;
static int arena_err;           /* why the arena could not be made (0: it is there) */

#define AH ((arena_hdr *)strand_arena_base)
#define AT(off) ((void *)(strand_arena_base + (off)))

static uint64_t round_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

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

/* Give the memfd real pages for [from, to): an error here rather than a SIGBUS later. */
static int commit(uint64_t from, uint64_t to) {
  for (;;) {
    if (fallocate(arena_fd, 0, (off_t)from, (off_t)(to - from)) == 0) return 0;
    if (errno == EINTR) continue;
    if (errno == EFBIG || errno == ENOSPC) return ENOMEM;
    if (errno != EOPNOTSUPP && errno != ENOSYS) return errno;
    if (ftruncate(arena_fd, (off_t)to) == 0) return 0;   /* no fallocate: sparse, still correct */
    if (errno != EINTR) return errno;
  }
}

/* Under valgrind: memcheck's leak check, at every exit of a process of the family, reads all
 * mapped readable memory word by word, and each word of a mapping past the end of its file is a
 * SIGBUS it catches and steps over (8 bytes at a time: a 64 GiB NORESERVE arena takes days, 1 GiB
 * half an hour). Its address space manager also refuses 64 GiB (EINVAL). So there the arena is
 * VG_RESERVE bytes, all given pages at once: nothing of it is past the end of the memfd. Small,
 * as every forked child scans it all again when it exits (128 MiB cost 1.5 s per child). */
#define VG_RESERVE    ((uint64_t)1 << 25)   /* 32 MiB */

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif

static int under_valgrind(void) {
#ifdef RUNNING_ON_VALGRIND
  if (RUNNING_ON_VALGRIND) return 1;
#endif
  const char *pre = getenv("LD_PRELOAD");       /* built without the header: its preloads */
  return pre != NULL && strstr(pre, "vgpreload") != NULL;
}

static void arena_make(void) {
  int fd = memfd_create("strand-arena", MFD_CLOEXEC);
  if (fd < 0) { arena_err = errno; return; }
  /* A process with less address space than 64 GiB (RLIMIT_AS) gets what it can down to
   * ARENA_FLOOR: the arena is then smaller, and full sooner (ENOMEM from a constructor, as when
   * memory runs out). */
  int vg = under_valgrind();
  uint64_t want = vg ? VG_RESERVE : ARENA_RESERVE;
  void *p;
  for (;;) {
    p = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (p != MAP_FAILED || (errno != EINVAL && errno != ENOMEM) || want <= ARENA_FLOOR) break;
    want /= 2;
  }
  if (p == MAP_FAILED) { arena_err = errno; close(fd); return; }
  arena_fd = fd;
  arena_reserve = want;
  strand_arena_base = (char *)p;
  uint64_t first = vg ? want : ARENA_STEP;
  int err = commit(0, first);
  if (err == 0) err = mutex_setup(&AH->mu);
  if (err) {
    munmap(p, want);
    close(fd);
    arena_fd = -1;
    strand_arena_base = NULL;
    arena_err = err;
    return;
  }
  AH->magic = ARENA_MAGIC;
  AH->size = first;
  AH->top = round_up(sizeof(arena_hdr), 64);
}

static void hooks_make(void);
static pthread_once_t hooks_once;

int strand_arena_init(void) {
  pthread_once(&hooks_once, hooks_make);   /* the fork hooks too: a forking area calls this first */
  pthread_once(&arena_once, arena_make);
  return arena_err;
}

static void arena_lock(void) {
  int err = pthread_mutex_lock(&AH->mu);
  if (err == EOWNERDEAD) pthread_mutex_consistent(&AH->mu);   /* carry on with what is there */
}

static void arena_unlock(void) { pthread_mutex_unlock(&AH->mu); }

/* class of n bytes and its block size */
static int size_class(uint64_t n, uint64_t *size) {
  if (n <= 512) {
    uint64_t c = n ? (n + 15) / 16 : 1;
    *size = c * 16;
    return (int)c;
  }
  int p = 63 - __builtin_clzll(n - 1);          /* >= 9 */
  uint64_t sub = ((n - 1) >> (p - 2)) & 3;
  *size = (4 + sub + 1) << (p - 2);
  return 32 + (p - 9) * 4 + (int)sub + 1;
}

/* A block of at least n bytes (align64: 64-byte aligned): its offset, or 0 and errno. */
static uint64_t arena_alloc(uint64_t n, int align64, uint64_t *bsize) {
  if (strand_arena_base == NULL) { errno = arena_err ? arena_err : ENOMEM; return 0; }
  if (align64 && n < 513) n = 513;              /* classes from 640 up are carved 64-aligned */
  if (n > arena_reserve / 4) { errno = ENOMEM; return 0; }
  uint64_t size;
  int c = size_class(n, &size);
  arena_lock();
  uint64_t off = AH->freelist[c];
  if (off) {
    AH->freelist[c] = *(uint64_t *)AT(off);
    if (size >= PUNCH_MIN) {                    /* its pages were given back: take them again */
      int err = commit(off, off + size);
      if (err) {
        *(uint64_t *)AT(off) = AH->freelist[c];
        AH->freelist[c] = off;
        arena_unlock();
        errno = err;
        return 0;
      }
    }
  } else {
    off = round_up(AH->top, size > 512 ? 64 : 16);
    if (off + size > arena_reserve) { arena_unlock(); errno = ENOMEM; return 0; }
    if (off + size > AH->size) {
      /* small steps (committed pages count, and may be mapped whole, before use): 256 KiB or
       * 1/32 of what there is, so a big arena grows in few calls and overshoots by 3% */
      uint64_t want = round_up(off + size, ARENA_STEP);
      if (want < AH->size + AH->size / 32) want = round_up(AH->size + AH->size / 32, ARENA_STEP);
      if (want > arena_reserve) want = arena_reserve;
      int err = commit(AH->size, want);
      if (err) { arena_unlock(); errno = err; return 0; }
      AH->size = want;
    }
    AH->top = off + size;
  }
  AH->inuse += size;
  arena_unlock();
  if (bsize) *bsize = size;
  return off;
}

static void arena_free(uint64_t off, uint64_t n) {
  if (off == 0) return;
  uint64_t size;
  int c = size_class(n, &size);
  if (size >= PUNCH_MIN) {                       /* keep the first page: it holds the link */
    uint64_t page = 4096, from = round_up(off + 8, page), to = (off + size) / page * page;
    if (to > from)
      while (fallocate(arena_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)from,
                       (off_t)(to - from)) < 0 && errno == EINTR) {}
  }
  arena_lock();
  *(uint64_t *)AT(off) = AH->freelist[c];
  AH->freelist[c] = off;
  AH->inuse -= size;
  arena_unlock();
}

/* }==== */

/* {==== who we are: cached ids, forgotten in a forked child; the fork hooks */

/* each thread's own copies; initial-exec: a plain load, these ints fit the static TLS reserve.
 * (The pid per thread too: a forked child resets it on the page of thread-locals it writes
 * anyway, where a process-wide one was one more page of core.so's written at each fork.) */
static __thread int cached_pid __attribute__((tls_model("initial-exec")));
static __thread int cached_tid __attribute__((tls_model("initial-exec")));

int strand_shm_pid(void) {
  if (cached_pid) return cached_pid;
  return cached_pid = (int)getpid();
}

int strand_shm_tid(void) {
  if (cached_tid) return cached_tid;
  return cached_tid = (int)gettid();
}

/* Every strand_shm of this process, for the fork hook (it counts them in the child). */
static pthread_mutex_t objs_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t hooks_mu = PTHREAD_MUTEX_INITIALIZER;   /* the type tables below */
static strand_shm *objs;
static int family;                      /* this process forked or was forked: wakes may cross */
/* Waiters of this process with a task asleep (arm/disarm, any thread): a fork starts the relay
 * only when one sleeps now; a later sleeper starts it itself (strand_shm_wait). With family,
 * a Dekker pair (both sequentially consistent): a fork's hook stores family then reads this, a
 * sleeper counts itself then reads family, so one of the two starts the relay. */
static int nasleep;
static void relay_start(void);
static void homes_after_fork(void);

/* queue._test_hold_fork (a test hook): the next fork's child waits at the start of its fork
 * handler until the parent releases it (or 10 s), as a child not scheduled yet would. */
static int hold_rfd = -1, hold_wfd = -1;
#define HEAD_OFF(s) ((uint64_t)((char *)(s)->head - strand_arena_base))

/* From the fork on, every object this process holds has two processes: it is crossed (a queue
 * then copies what is put) and the child's family reference is counted. Both are done before
 * the fork, in the parent: done in the child's handler (before docs/reliability.md 17), a parent
 * quicker than its child put its next value into a queue by reference (the child's get failed),
 * or dropped its last view of an object and freed its blocks under the child. The offsets
 * counted are kept for the forking thread until its fork returns: strand_shm_forked(1) gives the
 * references back when no child was made. */
static uint64_t *prep_refs;             /* objs_mu: counted by fork_prepare */
static size_t prep_nrefs;
/* (initial-exec, as every thread-local of core.so: a general-dynamic one is read through
 * __tls_get_addr, whose code page of ld.so a forked child's fork_child faulted in) */
static __thread uint64_t *fork_refs __attribute__((tls_model("initial-exec")));
static __thread size_t fork_nrefs __attribute__((tls_model("initial-exec")));

/* The fork hooks write only what changes: after a fork each page either side writes is a page
 * fault (a copy while the other side lives), and these run at every fork. objs_mu is taken only
 * when another thread may exist (a single-threaded process cannot race its own fork), so a
 * child of such a process has no lock to reset. */
static int objs_locked;                 /* fork_prepare took objs_mu (and homes_mu may be held) */

static void fork_prepare(void) {
  int lock = !__libc_single_threaded;
  if (lock) pthread_mutex_lock(&objs_mu);
  if (objs_locked != lock) objs_locked = lock;
  if (objs == NULL) {                   /* nothing to count (prep_refs is NULL between forks) */
    if (prep_nrefs) prep_nrefs = 0;
    return;
  }
  size_t n = 0;
  for (strand_shm *s = objs; s; s = s->lnext) n++;
  prep_refs = n ? (uint64_t *)malloc(n * sizeof *prep_refs) : NULL;   /* NULL: kept on failure */
  prep_nrefs = 0;
  for (strand_shm *s = objs; s; s = s->lnext) {
    if (!__atomic_load_n(&s->head->crossed, __ATOMIC_RELAXED))
      __atomic_store_n(&s->head->crossed, 1, __ATOMIC_RELEASE);
    strand_shm_aref(HEAD_OFF(s), 1);
    if (prep_refs) prep_refs[prep_nrefs++] = HEAD_OFF(s);
  }
}

static void fork_parent(void) {
  if (hold_rfd >= 0) { close(hold_rfd); hold_rfd = -1; }   /* only that fork's child is held */
  if (fork_refs) free(fork_refs);       /* a fork strand_shm_forked was not told of */
  if (fork_refs != prep_refs) fork_refs = prep_refs;
  if (fork_nrefs != prep_nrefs) fork_nrefs = prep_nrefs;
  if (prep_refs) prep_refs = NULL;
  if (objs_locked) pthread_mutex_unlock(&objs_mu);
  /* (stored once: a sleeper reading family after that store starts the relay itself) */
  if (!__atomic_load_n(&family, __ATOMIC_SEQ_CST)) __atomic_store_n(&family, 1, __ATOMIC_SEQ_CST);
  /* Not for nothing: a relay makes this process multi-threaded, and glibc's fork of a
   * multi-threaded process takes every lock of the C library first and resets them in the
   * child, and the kernel's write-protection at each later fork is seen by two threads: a
   * no-op start+join cost 14 page faults and ~100 us more with it (docs/internals.md). */
  if (__atomic_load_n(&nasleep, __ATOMIC_SEQ_CST) > 0) relay_start();
}

void strand_shm_forked(int failed) {
  if (failed)
    for (size_t i = 0; i < fork_nrefs; i++) strand_shm_aref(fork_refs[i], -1);
  if (fork_refs) {
    free(fork_refs);
    fork_refs = NULL;
  }
  if (fork_nrefs) fork_nrefs = 0;
}

static strand_shm *views_find(uint64_t off);
static int views_put(strand_shm *s);

/* this thread's intent record (0: none yet); strand_intent_fast reads it inline */
__thread uint64_t strand_intent_off __attribute__((tls_model("initial-exec")));

static void hold_child(void) {
  close(hold_wfd);
  hold_wfd = -1;
  struct pollfd p = { .fd = hold_rfd, .events = POLLIN };
  double end = strand_now() + 10;
  for (double left = 10; left > 0; left = end - strand_now())
    if (poll(&p, 1, (int)(left * 1000) + 1) >= 0 || errno != EINTR) break;
  close(hold_rfd);
  hold_rfd = -1;
}

static void fork_child(void) {
  if (hold_rfd >= 0) hold_child();
  if (cached_pid) cached_pid = 0;
  if (cached_tid) cached_tid = 0;
  if (strand_intent_off) strand_intent_off = 0;  /* the parent's thread keeps its record */
  if (prep_refs) {                              /* its references are counted already */
    free(prep_refs);
    prep_refs = NULL;
  }
  if (fork_refs) {                              /* an earlier fork's, strand_shm_forked not told */
    free(fork_refs);
    fork_refs = NULL;
  }
  if (fork_nrefs) fork_nrefs = 0;
  for (strand_shm *s = objs; s; s = s->lnext)
    if (!views_find(HEAD_OFF(s))) views_put(s);   /* a reference the parent sends finds it */
  if (objs_locked) pthread_mutex_init(&objs_mu, NULL);
  if (!family) family = 1;
  /* the parent's sleepers are not this process's: its tasks' loop is abandoned and its other
   * threads are gone, so none of them disarms here (counted, a fork of this child with no task
   * asleep would start a relay for nothing; with family set every sleeper here starts it) */
  if (nasleep) nasleep = 0;
  homes_after_fork();
}

static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;
static void hooks_make(void) {
  if (pthread_atfork(fork_prepare, fork_parent, fork_child) != 0) arena_err = ENOMEM;
}

/* }==== */

/* {==== put intents: one arena record per thread that puts into a ring (strand_intent, in the
 * family-wide list AH->intents), so a getter stuck at a position a producer claimed but never
 * published can tell whether every thread that may be claiming it has died. A record is never
 * freed: a thread's end (its key's destructor) or its process's death hands it on. */

static pthread_key_t intent_key;
static pthread_once_t intent_once = PTHREAD_ONCE_INIT;
static int intent_key_ok;

static void intent_end(void *p) {
  strand_intent *r = (strand_intent *)p;
  __atomic_store_n(&r->obj, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&r->owner, 0, __ATOMIC_RELEASE);
}

static void intent_key_make(void) { intent_key_ok = pthread_key_create(&intent_key, intent_end) == 0; }

strand_intent *strand_intent_mine(void) {
  if (strand_intent_off) return (strand_intent *)AT(strand_intent_off);
  if (strand_arena_base == NULL) return NULL;
  pthread_once(&intent_once, intent_key_make);
  if (!intent_key_ok) return NULL;
  int64_t me = strand_owner_self();
  uint64_t off = 0;
  int64_t was = 0;
  arena_lock();
  for (uint64_t o = AH->intents; o; o = ((strand_intent *)AT(o))->next) {
    strand_intent *r = (strand_intent *)AT(o);
    if (__atomic_load_n(&r->owner, __ATOMIC_ACQUIRE) == 0) { off = o; break; }
  }
  /* none free: take over one of a process that ended (threads of a process that exits or is
   * killed never free theirs), but not one naming a claim: a getter needs it to skip that */
  int tries = 0;
  for (uint64_t o = AH->intents; o && off == 0 && tries < 64; o = ((strand_intent *)AT(o))->next) {
    strand_intent *r = (strand_intent *)AT(o);
    int64_t w = __atomic_load_n(&r->owner, __ATOMIC_ACQUIRE);
    if (w == 0 || __atomic_load_n(&r->obj, __ATOMIC_ACQUIRE) != 0) continue;
    tries++;
    if (kill(strand_owner_pid(w), 0) < 0 && errno == ESRCH) { off = o; was = w; }
  }
  arena_unlock();
  if (off == 0) {
    off = arena_alloc(sizeof(strand_intent), 0, NULL);
    if (off == 0) return NULL;
    strand_intent *r = (strand_intent *)AT(off);
    r->obj = r->pos = 0;
    r->owner = me;
    arena_lock();
    r->next = AH->intents;
    __atomic_store_n(&AH->intents, off, __ATOMIC_RELEASE);
    arena_unlock();
  } else {
    strand_intent *r = (strand_intent *)AT(off);
    /* another thread may have taken it meanwhile */
    if (!__atomic_compare_exchange_n(&r->owner, &was, me, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
      return strand_intent_mine();
    r->obj = r->pos = 0;
  }
  if (pthread_setspecific(intent_key, AT(off)) != 0) {
    intent_end(AT(off));
    return NULL;
  }
  strand_intent_off = off;
  return (strand_intent *)AT(off);
}

/* 1 when some record names obj (and, unless any_pos, position pos) and every one naming it
 * belongs to a dead process; 0 when none does or one is alive (it may still finish) */
static int intents_dead(uint64_t obj, int any_pos, uint64_t pos) {
  if (strand_arena_base == NULL) return 0;
  int dead = 0;
  for (uint64_t o = __atomic_load_n(&AH->intents, __ATOMIC_ACQUIRE); o;
       o = ((strand_intent *)AT(o))->next) {
    strand_intent *r = (strand_intent *)AT(o);
    int64_t owner = __atomic_load_n(&r->owner, __ATOMIC_ACQUIRE);
    if (owner == 0 || __atomic_load_n(&r->obj, __ATOMIC_ACQUIRE) != obj ||
        (!any_pos && __atomic_load_n(&r->pos, __ATOMIC_ACQUIRE) != pos + 1))
      continue;
    if (!strand_owner_dead(owner)) return 0;
    dead = 1;
  }
  return dead;
}

int strand_intent_dead(uint64_t obj, uint64_t pos) { return intents_dead(obj, 0, pos); }

/* a get in progress may be at any position */
int strand_intent_dead_get(uint64_t obj, uint64_t pos) {
  (void)pos;
  return intents_dead(obj | STRAND_INTENT_GET, 1, 0);
}

/* }==== */

/* {==== objects: one arena block each */

typedef struct store_acct { uint64_t used, budget; } store_acct;

/* a block allocated by an object: chained to it (so that its last reference frees it), then
 * the bytes asked for (header included), then the data */
typedef struct blk_hdr { uint64_t next, prev, n; } blk_hdr;
#define BLK_HDR sizeof(blk_hdr)

#define CHANS(s) strand_shm_chans(s)
#define ACCT(s) ((store_acct *)(CHANS(s) + (s)->head->nchan))

static size_t head_size(int nchan, int growable) {
  return sizeof(struct strand_shm_head) + (size_t)nchan * sizeof(strand_shm_chan) +
         (growable ? sizeof(store_acct) : 0);
}

/* This process's view of each object by head offset (objs_mu): a decoded reference finds the
 * one strand_shm of its object here, or makes it. Linear probing, backward-shift deletion. */
static strand_shm **views;
static size_t nviews, capviews;

static size_t view_slot(uint64_t off) { return (size_t)((off >> 4) * 0x9E3779B97F4A7C15ull); }

static strand_shm *views_find(uint64_t off) {
  if (capviews == 0) return NULL;
  for (size_t i = view_slot(off) & (capviews - 1);; i = (i + 1) & (capviews - 1)) {
    if (views[i] == NULL) return NULL;
    if (HEAD_OFF(views[i]) == off) return views[i];
  }
}

static int views_put(strand_shm *s) {
  if (2 * (nviews + 1) > capviews) {
    size_t ncap = capviews ? capviews * 2 : 1024;
    strand_shm **nv = (strand_shm **)calloc(ncap, sizeof *nv);
    if (nv == NULL) return ENOMEM;
    for (size_t j = 0; j < capviews; j++) {
      if (views[j] == NULL) continue;
      size_t i = view_slot(HEAD_OFF(views[j])) & (ncap - 1);
      while (nv[i]) i = (i + 1) & (ncap - 1);
      nv[i] = views[j];
    }
    free(views);
    views = nv;
    capviews = ncap;
  }
  size_t i = view_slot(HEAD_OFF(s)) & (capviews - 1);
  while (views[i]) i = (i + 1) & (capviews - 1);
  views[i] = s;
  nviews++;
  return 0;
}

static void views_del(strand_shm *s) {
  if (capviews == 0) return;
  size_t i = view_slot(HEAD_OFF(s)) & (capviews - 1);
  while (views[i] && views[i] != s) i = (i + 1) & (capviews - 1);
  if (views[i] == NULL) return;
  views[i] = NULL;
  if (--nviews == 0) {
    /* the last one: give the table back (nothing of ours may outlive the objects, since the
     * module is unloaded at lua_close and its statics with it: that is a leak to memcheck) */
    free(views);
    views = NULL;
    capviews = 0;
    return;
  }
  for (size_t j = (i + 1) & (capviews - 1); views[j]; j = (j + 1) & (capviews - 1)) {
    size_t home = view_slot(HEAD_OFF(views[j])) & (capviews - 1);
    /* move j back to i if its home is not in (i, j] (cyclically) */
    if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
      views[i] = views[j];
      views[j] = NULL;
      i = j;
    }
  }
}

/* map: also findable by offset now (a view made by decode); others are added when serial
 * first encodes them by offset, and all of them in a forked child */
static int objs_link(strand_shm *s, int map) {
  pthread_mutex_lock(&objs_mu);
  int err = map ? views_put(s) : 0;
  if (err == 0) {
    s->lprev = NULL;
    s->lnext = objs;
    if (objs) objs->lprev = s;
    objs = s;
  }
  pthread_mutex_unlock(&objs_mu);
  return err;
}

static int exiting;                     /* strand_shm_exiting ran (objs_mu): views hold no aref */

/* 1 when s still holds its family reference (the process is not exiting) */
static int objs_unlink(strand_shm *s) {
  pthread_mutex_lock(&objs_mu);
  views_del(s);
  if (s->lprev) s->lprev->lnext = s->lnext; else objs = s->lnext;
  if (s->lnext) s->lnext->lprev = s->lprev;
  int holds = !exiting;
  pthread_mutex_unlock(&objs_mu);
  return holds;
}

strand_shm *strand_shm_new(lua_State *L, size_t objsize, const strand_objtype *t,
                           size_t statesize, int nchan, size_t reserve) {
  if (nchan > STRAND_SHM_MAXCHAN) luaL_error(L, "strand: %s: too many wait channels", t->name);
  pthread_once(&hooks_once, hooks_make);
  int err = strand_arena_init();
  if (err) { errno = err; return NULL; }
  int big = reserve > 0;                        /* queues, dicts: 64-aligned state, accounting */
  size_t hs = round_up(head_size(nchan, big), big ? 64 : 16);
  uint64_t bsize = 0;
  strand_shm *s = (strand_shm *)calloc(1, objsize);
  if (s == NULL) { errno = ENOMEM; return NULL; }
  uint64_t off = arena_alloc(hs + statesize, big, &bsize);
  if (off == 0) {
    /* unreachable objects still hold blocks until collected: collect, then retry once */
    lua_gc(L, LUA_GCCOLLECT);
    off = arena_alloc(hs + statesize, big, &bsize);
    if (off == 0) { err = errno; free(s); errno = err; return NULL; }
  }
  s->head = (strand_shm_head *)AT(off);
  memset(s->head, 0, hs + statesize);
  if ((err = mutex_setup(&s->head->mu)) != 0) {
    arena_free(off, bsize);
    free(s);
    errno = err;
    return NULL;
  }
  s->head->arefs = 1;
  s->head->nchan = (uint8_t)nchan;
  s->head->growable = (uint8_t)big;
  s->head->blksize = (uint32_t)bsize;   /* the class size: frees into the right list */
  if (big) ACCT(s)->budget = reserve;
  s->head->stateoff16 = (uint8_t)(hs / 16);
  strand_object_init(&s->obj, t);
  if ((err = objs_link(s, 0)) != 0) {
    arena_free(off, bsize);
    free(s);
    errno = err;
    return NULL;
  }
  __atomic_add_fetch(&AH->nobjects, 1, __ATOMIC_RELAXED);
  return s;
}

int strand_shm_fail(lua_State *L, const strand_objtype *t, int err) {
  lua_pushnil(L);
  lua_pushfstring(L, "cannot create a %s: %s", t->name,
                  strand_errmsg(err) ? strand_errmsg(err) : strerror(err));
  lua_pushstring(L, strand_errname(err) ? strand_errname(err) : "ENOMEM");
  return 3;
}

/* One family reference more or less (delta -1: the last frees the object's blocks). */
void strand_shm_aref(uint64_t off, int delta) {
  strand_shm_head *h = (strand_shm_head *)AT(off);
  if (delta > 0) { __atomic_add_fetch(&h->arefs, 1, __ATOMIC_ACQ_REL); return; }
  if (__atomic_sub_fetch(&h->arefs, 1, __ATOMIC_ACQ_REL) != 0) return;
  uint64_t b = h->blocks;
  while (b) {
    blk_hdr *x = (blk_hdr *)AT(b);
    uint64_t next = x->next;
    arena_free(b, x->n);
    b = next;
  }
  arena_free(off, h->blksize);
  __atomic_sub_fetch(&AH->nobjects, 1, __ATOMIC_RELAXED);
}

/* This process's view goes; the family's last reference frees the blocks. */
void strand_shm_free(strand_shm *s) {
  if (objs_unlink(s)) strand_shm_aref(HEAD_OFF(s), -1);
  free(s);
}

/* This process is about to _exit (a forked child's end, process._exit): each of its views
 * gives back the family reference it holds (one per object: made, decoded, or inherited at
 * the fork), so what it saw is freed once the rest of the family lets go. A view released
 * later (another thread of the process, in the instant before _exit) gives back nothing. */
void strand_shm_exiting(void) {
  if (strand_arena_base == NULL) return;
  /* (locked only when another thread may exist, as fork_prepare: a forked child that ran no
   * other code of libc's pthread_mutex_lock page took a code page fault for it here) */
  int lock = !__libc_single_threaded;
  if (lock) pthread_mutex_lock(&objs_mu);
  if (!exiting && objs != NULL) {     /* (none: no page of core.so's written at every exit) */
    exiting = 1;
    for (strand_shm *s = objs; s; s = s->lnext) strand_shm_aref(HEAD_OFF(s), -1);
  }
  if (lock) pthread_mutex_unlock(&objs_mu);
}

/* queue._test_arena() -> objects, bytes: the family's objects not freed yet and the arena's
 * bytes handed out (objects, their storage, wait records); a test hook (spec/leak_spec.lua) */
int strand_shm_test_arena(lua_State *L) {
  if (strand_arena_init() != 0) { lua_pushinteger(L, 0); lua_pushinteger(L, 0); return 2; }
  lua_pushinteger(L, (lua_Integer)__atomic_load_n(&AH->nobjects, __ATOMIC_ACQUIRE));
  arena_lock();
  uint64_t b = AH->inuse;
  arena_unlock();
  lua_pushinteger(L, (lua_Integer)b);
  return 2;
}

/* queue._test_hold_fork(true): the next fork's child is held at the start of its fork handler
 * (before it touches any object) until queue._test_hold_fork(false) in the parent; a test hook
 * (spec/crossproc_spec.lua). -> true | nil, msg */
int strand_shm_test_hold_fork(lua_State *L) {
  if (hold_wfd >= 0) { close(hold_wfd); hold_wfd = -1; }     /* releases a child held */
  if (hold_rfd >= 0) { close(hold_rfd); hold_rfd = -1; }
  if (lua_toboolean(L, 1)) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return strand_fail(L, errno);
    hold_rfd = fds[0];
    hold_wfd = fds[1];
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* {==== references by offset: the same object in every process of the family */

#define NTYPES 16
static struct {
  const strand_objtype *t;
  size_t objsize;
  int (*view)(strand_shm *s);
  void (*repair)(strand_shm *s);        /* locked, after a holder's death: make it consistent */
} types[NTYPES];

void strand_shm_on_repair(const strand_objtype *t, void (*repair)(strand_shm *s)) {
  pthread_mutex_lock(&hooks_mu);
  for (int i = 0; i < NTYPES; i++)
    if (__atomic_load_n(&types[i].t, __ATOMIC_ACQUIRE) == t) types[i].repair = repair;
  pthread_mutex_unlock(&hooks_mu);
}

static void type_repair(strand_shm *s);

void strand_shm_type(const strand_objtype *t, size_t objsize, int (*view)(strand_shm *s)) {
  pthread_mutex_lock(&hooks_mu);
  for (int i = 0; i < NTYPES; i++) {
    if (__atomic_load_n(&types[i].t, __ATOMIC_ACQUIRE) == t) break;
    if (types[i].t == NULL) {
      types[i].objsize = objsize;
      types[i].view = view;
      __atomic_store_n(&types[i].t, t, __ATOMIC_RELEASE);
      break;
    }
  }
  pthread_mutex_unlock(&hooks_mu);
}

static int type_index(const strand_objtype *t);
static void type_repair(strand_shm *s) {
  int ti = type_index(s->obj.type);
  void (*fn)(strand_shm *) = ti < 0 ? NULL : __atomic_load_n(&types[ti].repair, __ATOMIC_ACQUIRE);
  if (fn) fn(s);
}

static int type_index(const strand_objtype *t) {
  for (int i = 0; i < NTYPES; i++) {
    const strand_objtype *x = __atomic_load_n(&types[i].t, __ATOMIC_ACQUIRE);
    if (x == NULL) return -1;
    if (x == t) return i;
  }
  return -1;
}

uint64_t strand_shm_offset(strand_object *o) {
  if (strand_arena_base == NULL || type_index(o->type) < 0) return 0;
  strand_shm *s = (strand_shm *)o;
  pthread_mutex_lock(&objs_mu);
  int err = views_find(HEAD_OFF(s)) ? 0 : views_put(s);   /* a decode here must find it */
  pthread_mutex_unlock(&objs_mu);
  return err ? 0 : HEAD_OFF(s);         /* 0: encoded by pointer (this process only) */
}

strand_object *strand_shm_view(uint64_t off, const strand_objtype *t) {
  int ti = type_index(t);
  if (ti < 0 || strand_arena_base == NULL || off == 0 || off >= arena_reserve) return NULL;
  pthread_mutex_lock(&objs_mu);
  strand_shm *s = views_find(off);
  if (s && s->obj.type == t) {
    strand_object_retain(&s->obj);
    pthread_mutex_unlock(&objs_mu);
    return &s->obj;
  }
  pthread_mutex_unlock(&objs_mu);
  if (s) return NULL;                   /* another type at that offset: not ours to take */
  s = (strand_shm *)calloc(1, types[ti].objsize);
  if (s == NULL) return NULL;
  s->head = (strand_shm_head *)AT(off);
  strand_object_init(&s->obj, t);
  strand_shm_aref(off, 1);
  if ((types[ti].view && types[ti].view(s) != 0) || objs_link(s, 1) != 0) {
    strand_shm_aref(off, -1);
    free(s);
    return NULL;
  }
  return &s->obj;
}

/* }==== */

/* }==== */

/* {==== the storage of growable objects (locked): offsets in the arena, 0 = none (errno) */

/* A test hook (process-local, set only in a child that is about to be lost): _exit the n-th
 * time the storage list is half changed (point 1: a block's back link made, the block not yet
 * linked; 2: a block unlinked, its successor's back link not yet changed). */
static int blk_die_point, blk_die_n;
#define BLK_CRASH(p) do { \
    if (__builtin_expect(blk_die_point == (p), 0) && --blk_die_n == 0) _exit(0); } while (0)

void strand_shm_test_die(int point, int n) {
  blk_die_n = n;
  blk_die_point = point;
}

uint64_t strand_shm_alloc(strand_shm *s, size_t n) {
  strand_shm_head *h = s->head;
  if (!h->growable) { errno = ENOSPC; return 0; }
  store_acct *a = ACCT(s);
  uint64_t size;
  size_class(n + BLK_HDR, &size);
  if (a->used + size > a->budget) { errno = ENOSPC; return 0; }
  uint64_t b = arena_alloc(n + BLK_HDR, 0, NULL);
  if (b == 0) return 0;
  blk_hdr *x = (blk_hdr *)AT(b);
  x->prev = 0;
  x->next = h->blocks;
  x->n = n + BLK_HDR;                         /* whole before it is linked: see blocks_repair */
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  if (h->blocks) ((blk_hdr *)AT(h->blocks))->prev = b;
  BLK_CRASH(1);
  __atomic_store_n(&h->blocks, b, __ATOMIC_RELAXED);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  a->used += size;
  return b + BLK_HDR;
}

/* A holder died (under the mutex): the forward chain of s's blocks is whole at every instant
 * (a block is complete before the one store that links it; unlinking is one store, and a
 * block unlinked but not freed is only lost), but its back links and `used` may be half
 * changed: both are made again from the chain. */
static void blocks_repair(strand_shm *s) {
  strand_shm_head *h = s->head;
  if (!h->growable) return;
  uint64_t prev = 0, used = 0;
  for (uint64_t b = h->blocks; b; b = ((blk_hdr *)AT(b))->next) {
    blk_hdr *x = (blk_hdr *)AT(b);
    uint64_t size;
    x->prev = prev;
    size_class(x->n, &size);
    used += size;
    prev = b;
  }
  ACCT(s)->used = used;
}

void strand_shm_release(strand_shm *s, uint64_t off) {
  if (off == 0) return;
  strand_shm_head *h = s->head;
  uint64_t b = off - BLK_HDR;
  blk_hdr *x = (blk_hdr *)AT(b);
  if (x->prev) __atomic_store_n(&((blk_hdr *)AT(x->prev))->next, x->next, __ATOMIC_RELAXED);
  else __atomic_store_n(&h->blocks, x->next, __ATOMIC_RELAXED);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);    /* unlinked (one store) before anything else */
  BLK_CRASH(2);
  if (x->next) ((blk_hdr *)AT(x->next))->prev = x->prev;
  uint64_t n = x->n, size;
  size_class(n, &size);
  ACCT(s)->used -= size;
  arena_free(b, n);
}

/* }==== */

static struct shm_home *home_make(lua_State *L, int *errp);

/* {==== crossing hooks: written at module open (the same values by every state) */

#define NHOOKS 16
static struct { const strand_objtype *t; const char *(*cross)(strand_object *o); } hooks[NHOOKS];

void strand_objtype_on_cross(const strand_objtype *t, const char *(*cross)(strand_object *o)) {
  pthread_mutex_lock(&hooks_mu);
  for (int i = 0; i < NHOOKS; i++) {
    if (__atomic_load_n(&hooks[i].t, __ATOMIC_ACQUIRE) == t) break;
    if (hooks[i].t == NULL) {
      hooks[i].cross = cross;
      __atomic_store_n(&hooks[i].t, t, __ATOMIC_RELEASE);
      break;
    }
  }
  pthread_mutex_unlock(&hooks_mu);
}

const char *strand_object_crossing(strand_object *o) {
  for (int i = 0; i < NHOOKS; i++) {
    const strand_objtype *t = __atomic_load_n(&hooks[i].t, __ATOMIC_ACQUIRE);
    if (t == NULL) return NULL;
    if (t == o->type) return hooks[i].cross(o);
  }
  return NULL;
}

/* }==== */

/* {==== boxes and metatables */

strand_shm *strand_shm_self(lua_State *L) {
  if (!lua_getmetatable(L, 1) || !lua_rawequal(L, -1, lua_upvalueindex(1))) {
    int none = lua_isnone(L, 1);       /* before pushing: the name would stand in for argument 1 */
    lua_getfield(L, lua_upvalueindex(1), "__name");
    const char *tn = lua_tostring(L, -1);
    if (none) luaL_argerror(L, 1, lua_pushfstring(L, "%s expected, got no value", tn));
    luaL_typeerror(L, 1, tn);
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
  pthread_once(&hooks_once, hooks_make);
  strand_arena_init();                 /* now, before any fork: the family shares it */
  int err;                             /* this state's wake-up eventfd lives as long as it */
  home_make(L, &err);                  /* (if it cannot be made now, the first wait says why) */
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

/* {==== wake records in the arena */

typedef struct home_rec {
  int32_t pid;                  /* the process whose loop polls fd */
  int32_t fd;                   /* its eventfd (a number in that process) */
  uint32_t pending;             /* a wake relayed through the process's futex */
  uint32_t pad;
  uint64_t proc;                /* offset of that process's futex word */
  int64_t owner;                /* that process's identity (pid and start time: owner.c) */
} home_rec;

typedef struct wait_rec {
  uint64_t next, prev;          /* in the channel's list (object's mutex) */
  uint64_t home;                /* offset of the home_rec */
  uint32_t fired;               /* a sleeper of this state may proceed */
  uint32_t armed;               /* a task of this state sleeps on it */
} wait_rec;

static uint64_t proc_word_off;          /* this process's futex word (0: not made yet) */
static int proc_word_pid;

/* Our own home: write its eventfd. Compared by identity, not pid: a process SIGKILLed while
 * asleep leaves its records on the wait lists, and once its pid is recycled by another process
 * of the family, that one must not write 8 bytes into whatever its descriptor of that number
 * is (it takes the futex path: the dead process's word, which nobody waits on). */
static void home_wake(home_rec *hr) {
  if (hr->pid == strand_shm_pid() && hr->owner == strand_owner_self()) {
    uint64_t one = 1;
    /* EAGAIN would mean the counter is near 2^64: readable anyway, which is all we want */
    while (write(hr->fd, &one, sizeof one) < 0 && errno == EINTR) {}
    return;
  }
  if (__atomic_exchange_n(&hr->pending, 1, __ATOMIC_SEQ_CST)) return;
  uint32_t *word = (uint32_t *)AT(hr->proc);
  __atomic_store_n(word, 1, __ATOMIC_SEQ_CST);
  syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static void fire_list(uint64_t r) {
  while (r) {
    wait_rec *w = (wait_rec *)AT(r);
    if (__atomic_exchange_n(&w->fired, 1, __ATOMIC_SEQ_CST) == 0 &&
        __atomic_load_n(&w->armed, __ATOMIC_SEQ_CST))
      home_wake((home_rec *)AT(w->home));
    r = w->next;
  }
}

/* A test hook: every home record on s's wait lists now names process pid and descriptor fd,
 * what a dead process's records look like once its pid is recycled (by a process of the
 * family, with fd open for something else). Returns how many. */
int strand_shm_test_forge_homes(strand_shm *s, int pid, int fd) {
  int n = 0;
  if (strand_shm_lock(s) != 0) return 0;
  for (int ch = 0; ch < s->head->nchan; ch++)
    for (uint64_t r = CHANS(s)[ch].list; r; r = ((wait_rec *)AT(r))->next) {
      home_rec *hr = (home_rec *)AT(((wait_rec *)AT(r))->home);
      hr->pid = pid;
      hr->fd = fd;
      n++;
    }
  strand_shm_unlock(s);
  return n;
}

/* A test hook: s's storage blocks (its list walked under the mutex, every back link checked,
 * at most 2^24) and the bytes they count in *used; -1 if the list is inconsistent. */
int64_t strand_shm_test_blocks(strand_shm *s, uint64_t *used) {
  int64_t n = 0;
  *used = 0;
  if (strand_shm_lock(s) != 0) return -1;
  if (s->head->growable) {
    *used = ACCT(s)->used;
    uint64_t prev = 0, sum = 0;
    for (uint64_t b = s->head->blocks; b; b = ((blk_hdr *)AT(b))->next) {
      blk_hdr *x = (blk_hdr *)AT(b);
      uint64_t size;
      if (x->prev != prev || ++n > ((int64_t)1 << 24)) { n = -1; break; }
      size_class(x->n, &size);
      sum += size;
      prev = b;
    }
    if (n >= 0 && sum != *used) n = -1;
  }
  strand_shm_unlock(s);
  return n;
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
     * Whoever sleeps looks once more: every channel is signalled and fired. */
    err = pthread_mutex_consistent(&s->head->mu);
    if (err) { pthread_mutex_unlock(&s->head->mu); return err; }
    blocks_repair(s);                   /* the storage list's back links and bytes */
    type_repair(s);                     /* a type that journals its changes finishes them */
    for (int ch = 0; ch < s->head->nchan; ch++) {
      CHANS(s)[ch].signalled = 1;
      fire_list(CHANS(s)[ch].list);
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

/* {==== wake signals (locked) */

void strand_shm_signal(strand_shm *s, int ch, int should, int kick) {
  strand_shm_chan *c = &CHANS(s)[ch];
  if (kick) __atomic_add_fetch(&s->head->changes, 1, __ATOMIC_RELEASE);
  if (should) {
    /* on a change that may have let sleepers in, and when the channel becomes signalled: an
     * edge, as the eventfd of each object used to give to edge-triggered pollers. Within a
     * state the woken tasks pass it on (strand_shm_leave). */
    if (kick || !c->signalled) {
      c->signalled = 1;
      fire_list(c->list);
    }
  } else {
    c->signalled = 0;
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

/* {==== homes: one eventfd per Lua state, and the relay of each process */

typedef struct shm_waiter shm_waiter;

typedef struct shm_home {
  int refs;                     /* the registry box + every waiter of this state */
  int pid;                      /* the process it was made in */
  int fd;
  uint64_t rec;                 /* its home_rec in the arena */
  strand_io io;                 /* fd as seen by this state's loop */
  strand_task *poller;          /* the task polling io, or NULL */
  shm_waiter *armed;            /* waiters with a task asleep, in this state */
  struct shm_home *pnext, *pprev;   /* this process's homes (for the relay) */
} shm_home;

struct shm_waiter {
  strand_shm *obj;              /* a reference: keeps the record's object alive */
  shm_home *home;               /* a reference */
  uint64_t rec;                 /* its wait_rec in the arena, linked into the channel's list */
  int ch, pid, nwait;           /* nwait: tasks of this state asleep on it */
  strand_waitq q;               /* those of them that do not poll */
  shm_waiter *anext, *aprev;    /* in home->armed while nwait > 0 */
};

static pthread_mutex_t homes_mu = PTHREAD_MUTEX_INITIALIZER;
static shm_home *homes;                 /* this process's */
static int relay_pid;                   /* the process whose relay runs (0: none) */

static uint32_t *proc_word(void) { return (uint32_t *)AT(proc_word_off); }

/* Set by the relay once it is in relay_main (its start-up done); relay_start waits for it. */
static uint32_t relay_up;

static void *relay_main(void *arg) {
  (void)arg;
  uint32_t *word = proc_word();
  __atomic_store_n(&relay_up, 1, __ATOMIC_RELEASE);
  syscall(SYS_futex, &relay_up, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
  for (;;) {
    if (__atomic_exchange_n(word, 0, __ATOMIC_SEQ_CST) == 0) {
      syscall(SYS_futex, word, FUTEX_WAIT, 0, NULL, NULL, 0);
      continue;
    }
    pthread_mutex_lock(&homes_mu);
    for (shm_home *h = homes; h; h = h->pnext) {
      home_rec *hr = (home_rec *)AT(h->rec);
      if (__atomic_exchange_n(&hr->pending, 0, __ATOMIC_SEQ_CST)) {
        uint64_t one = 1;
        while (write(h->fd, &one, sizeof one) < 0 && errno == EINTR) {}
      }
    }
    pthread_mutex_unlock(&homes_mu);
  }
  return NULL;
}

/* This process's futex word (homes_mu held). 0 or an errno. */
static int proc_word_make(void) {
  int pid = strand_shm_pid();
  if (proc_word_off && proc_word_pid == pid) return 0;
  uint64_t off = arena_alloc(16, 0, NULL);
  if (off == 0) return errno;
  memset(AT(off), 0, 16);
  proc_word_off = off;
  proc_word_pid = pid;
  return 0;
}

/* The relay runs code of this shared object for the life of the process: keep it mapped even
 * when Lua closes its state and unloads the module (as pidwait.c and thread.c do), or a relay
 * woken (or still starting) after that jumps into unmapped code. */
static void relay_pin_module(void) {
  Dl_info info;
  if (dladdr((void *)&relay_main, &info) && info.dli_fname)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

/* Until the relay's start-up is over, a bounded wait (50 x 100 ms; a thread that got no CPU
 * for 5 s starts on its own: we only stop waiting for it). */
static void relay_wait_up(void) {
  struct timespec slice = { 0, 100 * 1000 * 1000 };
  for (int i = 0; i < 50 && !__atomic_load_n(&relay_up, __ATOMIC_ACQUIRE); i++)
    syscall(SYS_futex, &relay_up, FUTEX_WAIT_PRIVATE, 0, &slice, NULL, 0);
}

/* Start this process's relay once it may be woken from another one (homes_mu not held).
 * It returns only once the thread has started (relay_wait_up): it is called from the fork
 * hook in the parent, and the parent may fork again at once. A thread still starting holds
 * locks of the C library or of an allocator interposed on it (ASan's, which has no atfork
 * handler: a child forked then inherits it locked, its own relay hangs on it at start-up, and
 * no wake-up from another process ever reaches that child). Once in relay_main the relay
 * takes no lock but homes_mu, which a forked child re-initialises. */
static void relay_start(void) {
  if (!__atomic_load_n(&family, __ATOMIC_ACQUIRE) || strand_arena_base == NULL) return;
  int pid = strand_shm_pid();
  pthread_mutex_lock(&homes_mu);
  if (relay_pid != pid && proc_word_make() == 0) {
    pthread_attr_t a;
    pthread_t th;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);   /* signals stay with the program's threads */
    if (pthread_attr_init(&a) == 0) {
      pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
      pthread_attr_setstacksize(&a, 64 * 1024);
      static pthread_once_t pinned = PTHREAD_ONCE_INIT;
      pthread_once(&pinned, relay_pin_module);
      __atomic_store_n(&relay_up, 0, __ATOMIC_RELAXED);
      if (pthread_create(&th, &a, relay_main, NULL) == 0) {
        relay_pid = pid;
        relay_wait_up();
        pthread_setname_np(th, "strand-relay");
        /* wakes that came before the relay was there */
        __atomic_store_n(proc_word(), 1, __ATOMIC_SEQ_CST);
        syscall(SYS_futex, proc_word(), FUTEX_WAKE, 1, NULL, NULL, 0);
      }
      pthread_attr_destroy(&a);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
  pthread_mutex_unlock(&homes_mu);
}

static void homes_after_fork(void) {
  if (homes) homes = NULL;               /* the parent's; the child's states make new ones */
  if (objs_locked) pthread_mutex_init(&homes_mu, NULL);   /* another thread may have held it */
  if (relay_pid) relay_pid = 0;
}

static void home_unref(shm_home *h) {
  if (--h->refs > 0) return;
  if (h->pid == strand_shm_pid()) {
    pthread_mutex_lock(&homes_mu);
    if (h->pprev) h->pprev->pnext = h->pnext; else homes = h->pnext;
    if (h->pnext) h->pnext->pprev = h->pprev;
    pthread_mutex_unlock(&homes_mu);
    strand_io_close(&h->io);            /* leaves the poller before the fd closes */
    arena_free(h->rec, sizeof(home_rec));
  }
  close(h->fd);                         /* a forked child closes only its copy */
  free(h);
}

#define HOME_META "strand.shm.home"
static const char HOME_KEY = 'H';      /* registry[&HOME_KEY] = home box */

static int home_gc(lua_State *L) {
  shm_home **b = (shm_home **)lua_touserdata(L, 1);
  if (*b) { shm_home *h = *b; *b = NULL; home_unref(h); }
  return 0;
}

/* This state's home (made on first use, and again in a forked child): NULL and an errno. */
static shm_home *home_make(lua_State *L, int *errp) {
  int pid = strand_shm_pid();
  if (strand_arena_base == NULL) { *errp = arena_err ? arena_err : ENOMEM; return NULL; }
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &HOME_KEY) == LUA_TUSERDATA) {
    shm_home *h = *(shm_home **)lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (h && h->pid == pid) return h;
  } else {
    lua_pop(L, 1);
  }
  shm_home *h = (shm_home *)calloc(1, sizeof *h);
  if (h == NULL) { *errp = ENOMEM; return NULL; }
  h->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (h->fd < 0) {
    *errp = errno;
    free(h);
    return NULL;
  }
  pthread_mutex_lock(&homes_mu);
  int err = proc_word_make();
  h->rec = err ? 0 : arena_alloc(sizeof(home_rec), 0, NULL);
  if (!err && h->rec == 0) err = errno;
  if (!err) {
    home_rec *hr = (home_rec *)AT(h->rec);
    hr->pid = pid;
    hr->owner = strand_owner_self();
    hr->fd = h->fd;
    hr->pending = 0;
    hr->proc = proc_word_off;
    h->pnext = homes;
    if (homes) homes->pprev = h;
    homes = h;
  }
  pthread_mutex_unlock(&homes_mu);
  if (err) {
    close(h->fd);
    free(h);
    *errp = err;
    return NULL;
  }
  h->pid = pid;
  h->refs = 1;
  strand_io_init(&h->io, h->fd);
  shm_home **b = (shm_home **)lua_newuserdatauv(L, sizeof *b, 0);
  *b = h;
  if (luaL_newmetatable(L, HOME_META)) {
    lua_pushcfunction(L, home_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &HOME_KEY);   /* an inherited one is collected: its copy */
  return h;
}

static shm_home *home_get(lua_State *L) {
  int err = 0;
  shm_home *h = home_make(L, &err);
  if (h == NULL) luaL_error(L, "strand: cannot wait: %s", strerror(err));
  return h;
}

/* }==== */

/* {==== waiting through the loop */

#define WAITER_META "strand.shm.waiter"
static const char WAITERS_KEY = 'W';   /* registry[&WAITERS_KEY] = { [chan] = waiter } (weak) */

static int waiter_gc(lua_State *L) {
  shm_waiter *w = (shm_waiter *)lua_touserdata(L, 1);
  if (w->obj) {
    strand_shm *s = w->obj;
    w->obj = NULL;
    if (w->pid == strand_shm_pid() && w->rec) {
      /* out of the channel's list before the home (and its fd) can go */
      int err = strand_shm_lock(s);
      wait_rec *r = (wait_rec *)AT(w->rec);
      strand_shm_chan *c = &CHANS(s)[w->ch];
      if (r->prev) ((wait_rec *)AT(r->prev))->next = r->next; else c->list = r->next;
      if (r->next) ((wait_rec *)AT(r->next))->prev = r->prev;
      if (err == 0) strand_shm_unlock(s);
      arena_free(w->rec, sizeof(wait_rec));
    }
    if (w->home) home_unref(w->home);
    w->home = NULL;
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
  luaL_checkstack(L, 6, NULL);
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
  void *key = &CHANS(s)[ch];
  if (lua_rawgetp(L, -1, key) == LUA_TUSERDATA) {
    shm_waiter *w = (shm_waiter *)lua_touserdata(L, -1);
    if (w->pid == strand_shm_pid() && w->obj == s) {
      lua_remove(L, -2);
      return;
    }
    /* This state was forked (the record is the parent's), or the key's object is gone and
     * its memory reused: a new waiter replaces it */
  }
  lua_pop(L, 1);
  shm_home *h = home_get(L);
  shm_waiter *w = (shm_waiter *)lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w);
  if (luaL_newmetatable(L, WAITER_META)) {
    lua_pushcfunction(L, waiter_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);                             /* waiters w */
  w->pid = strand_shm_pid();
  w->ch = ch;
  w->rec = arena_alloc(sizeof(wait_rec), 0, NULL);
  if (w->rec == 0) luaL_error(L, "strand: cannot wait: out of memory");
  strand_object_retain(&s->obj);
  w->obj = s;
  h->refs++;
  w->home = h;
  wait_rec *r = (wait_rec *)AT(w->rec);
  memset(r, 0, sizeof *r);
  r->home = h->rec;
  strand_shm_lockL(L, s);
  strand_shm_chan *c = &CHANS(s)[ch];
  r->next = c->list;
  if (c->list) ((wait_rec *)AT(c->list))->prev = w->rec;
  c->list = w->rec;
  if (c->signalled) r->fired = 1;        /* joining a channel whose sleepers may proceed */
  strand_shm_unlock(s);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, -3, key);
  lua_remove(L, -2);                                   /* w */
}

static void arm(shm_waiter *w) {
  if (w->nwait++ > 0) return;
  __atomic_add_fetch(&nasleep, 1, __ATOMIC_SEQ_CST);
  shm_home *h = w->home;
  w->aprev = NULL;
  w->anext = h->armed;
  if (h->armed) h->armed->aprev = w;
  h->armed = w;
  __atomic_store_n(&((wait_rec *)AT(w->rec))->armed, 1, __ATOMIC_SEQ_CST);
}

static void disarm(shm_waiter *w) {
  if (w->nwait == 0 || --w->nwait > 0) return;
  shm_home *h = w->home;
  __atomic_store_n(&((wait_rec *)AT(w->rec))->armed, 0, __ATOMIC_SEQ_CST);
  if (w->aprev) w->aprev->anext = w->anext; else h->armed = w->anext;
  if (w->anext) w->anext->aprev = w->aprev;
  w->anext = w->aprev = NULL;
  __atomic_sub_fetch(&nasleep, 1, __ATOMIC_SEQ_CST);
}

/* The poller of h: drain the eventfd, then take every armed record's `fired` and wake a task
 * of it. Returns 1 if mine (the poller's own waiter) fired. */
static int dispatch(shm_home *h, shm_waiter *mine) {
  uint64_t v;
  while (read(h->fd, &v, sizeof v) < 0 && errno == EINTR) {}
  int me = 0;
  for (shm_waiter *w = h->armed; w; w = w->anext) {
    if (!__atomic_exchange_n(&((wait_rec *)AT(w->rec))->fired, 0, __ATOMIC_SEQ_CST)) continue;
    if (w == mine) me = 1;
    else strand_waitq_wake_one(&w->q, STRAND_READY);
  }
  return me;
}

/* The poller leaves: another sleeping task of this state takes over (it re-checks first). */
static void poller_leave(shm_home *h, strand_task *me) {
  if (h->poller != me) return;
  h->poller = NULL;
  for (shm_waiter *w = h->armed; w; w = w->anext)
    if (w->q.head) { strand_waitq_wake_one(&w->q, STRAND_READY); return; }
}

/* Stack while a poller waits: ..., waiter, k, ctx, deadline */
static int poll_k(lua_State *L, int status, lua_KContext unused) {
  (void)status; (void)unused;
  lua_KFunction k = (lua_KFunction)(uintptr_t)lua_touserdata(L, -3);
  lua_KContext ctx = (lua_KContext)lua_tointeger(L, -2);
  double deadline = lua_tonumber(L, -1);
  shm_waiter *w = (shm_waiter *)lua_touserdata(L, -4);
  strand_task *me = self_task(L);
  shm_home *h = w->home;
  if (me->outcome == STRAND_READY && !me->cancel_pending && h->poller == me &&
      !dispatch(h, w) && deadline > strand_now())
    return strand_wait_io(L, &h->io, STRAND_READ, deadline, 0, poll_k);   /* not for me yet */
  lua_pop(L, 3);
  if (h->poller == me) h->poller = NULL;   /* strand_shm_leave hands polling over */
  return k(L, LUA_YIELD, ctx);
}

int strand_shm_wait(lua_State *L, double deadline, lua_KContext ctx, lua_KFunction k) {
  shm_waiter *w = (shm_waiter *)lua_touserdata(L, -1);
  shm_home *h = w->home;
  strand_task *me = self_task(L);
  arm(w);
  if (__atomic_load_n(&family, __ATOMIC_SEQ_CST) && relay_pid != strand_shm_pid())
    relay_start();
  /* a poller whose wait failed before it was registered never comes back to hand over */
  if (h->poller && h->poller != me && h->poller->wait_io != &h->io) h->poller = NULL;
  if (h->poller != NULL && h->poller != me) {
    /* fired while nobody of this state slept on it (so nobody was woken): the poller must
     * look at it; only the poller takes `fired` (a newcomer is not entitled to it) */
    if (__atomic_load_n(&((wait_rec *)AT(w->rec))->fired, __ATOMIC_SEQ_CST)) {
      uint64_t one = 1;
      while (write(h->fd, &one, sizeof one) < 0 && errno == EINTR) {}
    }
    return strand_wait_queue(L, &w->q, deadline, ctx, k);
  }
  h->poller = me;
  for (;;) {
    if (dispatch(h, w)) {               /* fired meanwhile: look again now */
      h->poller = NULL;                 /* strand_shm_leave hands polling over */
      me->outcome = STRAND_READY;
      return STRAND_READY;
    }
    if (me->co) {                       /* in a task: yields, poll_k continues */
      lua_pushlightuserdata(L, (void *)(uintptr_t)k);
      lua_pushinteger(L, (lua_Integer)ctx);
      lua_pushnumber(L, deadline);
      return strand_wait_io(L, &h->io, STRAND_READ, deadline, 0, poll_k);
    }
    int outcome = strand_wait_io(L, &h->io, STRAND_READ, deadline, ctx, k);
    if (outcome != STRAND_READY || deadline <= strand_now()) {
      if (h->poller == me) h->poller = NULL;
      return outcome;
    }
  }
}

void strand_shm_leave(lua_State *L, int broadcast) {
  shm_waiter *w = (shm_waiter *)lua_touserdata(L, -1);
  strand_task *me = self_task(L);
  shm_home *h = w->home;
  disarm(w);
  /* nobody polls for the tasks still asleep here (the last poller left, or the task it handed
   * over to is not going back to sleep): hand over again */
  if (h->poller == me || h->poller == NULL) poller_leave(h, h->poller);
  /* a broadcast wakes every task of the state asleep on it (they wait for different things;
   * the dispatcher woke one); otherwise the next changer fires again whoever can proceed */
  if (broadcast && me->outcome == STRAND_READY) strand_waitq_wake_all(&w->q, STRAND_READY);
}

/* }==== */
