/* poller_uring.c — PROTOTYPE io_uring backend (STRAND_POLLER=uring, docs/uring.md): readiness by
 * one-shot POLL_ADD per awaited direction, and for stream sockets read/written by sockio.c a
 * multishot recv into a provided-buffer ring and SEND SQEs; one io_uring_enter per loop wait
 * (in a request/reply exchange, a short watch of the ring before it: docs/uring.md 4.7). */
#include "strand.h"

#include <errno.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SQ_N 256
#define CQ_N 4096
/* A multishot recv whose completion finds the CQ full ends (its last CQE overflows): at 10,000
 * echo connections a 4,096-entry CQ cost 0.69 poll arms, 0.68 more requests and 1.42 CQE
 * overflows per round trip in the kernel (bench/echo_counts.sh KEV=), none with 65,536. So the
 * main state's ring gets a CQ of 2 per fd its RLIMIT_NOFILE allows (a loop round can complete a
 * recv and a send of every socket), CQ_N to CQ_MAX; a thread's (made on first need) keeps CQ_N,
 * as rings cannot grow under COOP_TASKRUN and a larger one costs setup time and memory. */
#define CQ_MAX 32768
#define NBUF 4096                /* provided buffers per group (a power of two) */
#define BUFSZ 512                /* small: a 64-byte message holds a whole buffer */
#define BGID 7                   /* group g is buffer group BGID + g */
/* The pool grows with the sockets on the fast path: a group of NBUF buffers (2 MB) more whenever
 * they would outnumber the buffers less NBUF / 2 (so 10,000 echo connections, each holding a
 * message between a reap and its reader, do not push it under ARM_MIN and into rd mode); never
 * shrinks (pages the kernel wrote stay resident). Its address range is reserved whole up front. */
#define NGRP_MAX 8
/* Flow control (docs/uring.md 3.1): a multishot recv would drain a socket into the shared pool
 * as fast as the peer sends, so the kernel socket buffer would never push back. A socket holding
 * PENDING_MAX unread buffers, or its share once the pool runs low, has its multishot cancelled
 * and reads by readiness + recv(2) ("rd" mode) until a read finds the socket drained (short or
 * EAGAIN) with the pool healthy again. ENOBUFS also sends a socket to rd mode (nobody starves). */
#define PENDING_MAX 64           /* buffers a socket may hold unread before its recv is cancelled */
#define LOW_POOL (NBUF / 2)      /* fewer free buffers than this: a socket's share is SHARE_MAX */
#define SHARE_MAX 16
#define ARM_MIN (NBUF / 4)       /* no multishot is armed with fewer free buffers than this */
#define GROW_SLACK (NBUF / 2)    /* a group more when fast sockets + this exceed the buffers */
/* The software cancel above runs only when the loop reaps completions, but the kernel runs a
 * multishot at every return from a syscall: a task that loops on syscalls without waiting (a
 * nonblocking send loop to a peer in the same loop) would let it drain the socket meanwhile. So a
 * multishot is armed with a byte limit (sqe->optlen, file_index in older headers) of MSHOT_BYTES
 * and ends by itself; it is re-armed when its last completion is reaped, while the socket holds
 * fewer than PENDING_MAX buffers: a hard bound per socket between two reaps. A kernel that refuses
 * the limit (EINVAL) gets single-shot recvs instead (one buffer per request, same re-arm rule). */
#define MSHOT_BYTES (16 * BUFSZ)

enum { OP_PIN = 1, OP_POUT, OP_RECV, OP_SEND, OP_CANCEL };

/* One cache line per slot (aligned, the array too: slot_new), as a round trip touches it at its
 * recv's completion, its read, its send and its send's completion, far apart at 10,000 sockets
 * (bench/echo_counts.sh CACHE=1); a larger slot rounds up to whole lines. */
/* A send that took less than it was given (an error, or a cancel), kept for its sendall. */
struct sfail { int slot; uint32_t seq; int res; };
#define SFAIL_MAX 1024   /* kept per loop: past it the oldest goes (sendalls cancelled for good) */

typedef struct uslot {
  _Alignas(64) strand_io *io;    /* NULL once deleted (CQEs may still come) */
  uint32_t gen;
  short nreq;                    /* requests of this slot in flight */
  unsigned char pin, pout;       /* a POLL_ADD of that direction is in flight */
  unsigned char fast;            /* sockio reads/writes it through recv/send requests */
  unsigned char recv_armed, send_busy, eof;
  unsigned char rcancel;         /* a cancel of the multishot recv is queued (flow control) */
  unsigned char rd;              /* reads by readiness + recv(2) until the socket drains (flow control) */
  unsigned char nofast;          /* disarmed for good (fileno handed out): never a multishot again */
  unsigned char grp;             /* the buffer group of the recv in flight */
  unsigned char anchored;        /* the string a send reads is u->anchors[slot + 1] */
  short rerr;                    /* a recv error to report (an errno) */
  unsigned mbytes;               /* bytes the armed multishot has taken */
  int sres;                      /* the result of the send of seq sshort (less than its slen) */
  unsigned slen;                 /* bytes the send in flight was given */
  uint32_t sseq, sseq_next;      /* the send in flight or done belongs to the sendall of seq sseq */
  uint32_t sshort;               /* a send that took less than it was given, not collected (or 0) */
  short qhead, qtail;            /* received buffers not read yet (links in ur->bq; ids < 32768) */
  unsigned short npend;          /* how many (at most the pool's NGRP_MAX * NBUF) */
  unsigned short qoff;           /* bytes of the head buffer already read (< BUFSZ) */
  int next;                      /* free list */
} uslot;
_Static_assert(sizeof(uslot) == 64, "a slot is one cache line");
_Static_assert(NGRP_MAX * NBUF <= 32768, "buffer ids fit a slot's short qhead/qtail");

typedef struct ur {
  strand_loop *loop;
  int fd;
  unsigned *sq_head, *sq_tail, sq_mask, *cq_head, *cq_tail, cq_mask;
  struct io_uring_sqe *sqes;
  struct io_uring_cqe *cqes;
  void *ring_map; size_t ring_len;
  size_t sqes_len;
  int ring_nofork, sqes_nofork;   /* MADV_DONTFORK took: a forked child has no such mapping */
  unsigned tail, to_submit;
  uslot *slots;
  int nslots, free_head;         /* slots handed out at least once (all initialised); free list */
  int capslots;                  /* slots allocated: those past nslots are not touched yet */
  long inflight;
  int closing;                   /* ur_free is draining */
  struct io_uring_buf_ring *br[NGRP_MAX];   /* br[0] NULL until a socket first reads this way */
  unsigned short br_tail[NGRP_MAX];
  int gfree[NGRP_MAX];           /* per group: buffers the kernel may still pick (in its ring) */
  int nkept[NGRP_MAX];           /* per group: free buffers kept back from the ring (gtarget) */
  int *kept;                     /* their ids, a stack per group (kept + g * NBUF) */
  int garmed[NGRP_MAX];          /* per group: recvs in flight that take from it */
  int gtarget[NGRP_MAX];         /* per group: the free buffers its ring holds at most (garmed_add) */
  int ngrp, nbuf;                /* groups registered, ngrp * NBUF */
  int nfast;                     /* live slots on the fast path (the pool grows with them) */
  int nogrow;                    /* a group could not be added: stay at ngrp */
  int nopool;                    /* the pool could not be made (RLIMIT_MEMLOCK): readiness only */
  int pool_tries;                /* bufs_init calls (the spec of nopool) */
  char *bufs;                    /* NGRP_MAX * NBUF * BUFSZ reserved; buffer id g * NBUF + bid */
  struct ubq { int next; unsigned len; } *bq;   /* per buffer: the next in its queue, its bytes
                                                   (one line for both: a reap and a read read both) */
  int nfree;                     /* provided buffers the kernel may still pick, all groups */
  long throttles, enobufs;
  int nolimit;                   /* the kernel refused a multishot recv's byte limit */
  int limit_ok;                  /* ... or accepted one (a completion with data came) */       /* times a socket went to rd mode / a multishot met ENOBUFS */
  int min_free;                  /* low-water mark of nfree */
  int anchors;                   /* registry ref of the table of send strings by slot + 1 */
  struct sfail *sfails;          /* sends that came short while their slot's sshort was taken */
  int nsfail, capsfail;          /* (not collected yet; oldest first) */
  /* the watch before sleeping (docs/uring.md 4.7) */
  unsigned *sq_flags;            /* IORING_SQ_TASKRUN: completions wait for a syscall to post */
  int watch;                     /* 1 may watch, 0 never (no TASKRUN_FLAG, STRAND_URING_SPIN=0) */
  int testfull;                  /* test hook STRAND_URING_TESTFULL=1 (get_sqe, flush) */
  int ncpu;                      /* CPUs this process may run on (0: not read yet) */
  int watch_skip, watch_fail;    /* waits left without a watch; watches in a row that failed */
  double last_wait;              /* seconds the last wait that could block took */
  long watches, watch_hits;      /* counts (stats) */
  unsigned cq_entries;           /* the CQ's size (cq_size) */
  unsigned cq_pos;               /* the next CQE to reap (ahead of *cq_head inside a reap: reap) */
  int testbusy;                  /* test hook STRAND_URING_TESTFULL=2: submits meet EBUSY (submit) */
  long busy;                     /* submits that met EBUSY or EAGAIN (stats) */
  double watch_t0;               /* a watch that failed returned at once: its wait's start (ur_wait) */
  double watch_test;             /* test hook STRAND_URING_WATCHTEST=seconds: every wait that may watches that long */
  uint32_t forks;                /* ur_forks when this ring last made its fast sockets shared (fork_seen) */
  pid_t pid;                     /* the process that made it; listed in rings while it lives (rings_*) */
  struct ur *rnext, *rprev;
  /* sends done whose writers resume later (defer_deliver) */
  struct udefer { int slot; unsigned poll, cqe; } *defer;   /* oldest first */
  uint64_t *dbits;               /* per slot: its send's completion is deferred, not delivered */
  int ndbits;                    /* words of dbits */
  int ndefer, capdefer, dhead;   /* entries dhead..ndefer-1 are live */
  unsigned npoll;                /* ur_wait's polls so far */
  int defer_ok;                  /* ur_wait is reaping: a send's completion may be deferred */
  int woke_reader;               /* ... and this reap woke a reader (or a writer with bytes) */
  long deferred, merged;         /* completions deferred; of them, delivered with the next bytes */
  unsigned long ncqe;            /* completions handled so far */
} ur;

/* {==== every ring of the process: a fork from one thread (strand_uring_forking) cancels the
 * recvs of the others, whose sockets are now open in two processes too. rings_mu is held across
 * fork() (atfork) so that a child never inherits it locked; the child starts with no ring listed
 * (those are its parent's). ur_forks counts the forks of this process (and of its ancestors). */
static pthread_mutex_t rings_mu = PTHREAD_MUTEX_INITIALIZER;
static struct ur *rings;
static _Atomic uint32_t ur_forks;
static pthread_once_t rings_once = PTHREAD_ONCE_INIT;
static void rings_prepare(void) { pthread_mutex_lock(&rings_mu); }
static void rings_parent(void) { pthread_mutex_unlock(&rings_mu); }
static void rings_child(void) { pthread_mutex_init(&rings_mu, NULL); rings = NULL; }
static void rings_hooks(void) { pthread_atfork(rings_prepare, rings_parent, rings_child); }

static void rings_add(struct ur *u) {
  pthread_once(&rings_once, rings_hooks);
  u->pid = getpid();
  pthread_mutex_lock(&rings_mu);
  u->rprev = NULL;
  u->rnext = rings;
  if (rings) rings->rprev = u;
  rings = u;
  pthread_mutex_unlock(&rings_mu);
}

static void rings_remove(struct ur *u) {
  if (u->pid != getpid()) return;          /* (a parent's ring, copied by fork: not listed here) */
  pthread_mutex_lock(&rings_mu);
  if (u->rprev) u->rprev->rnext = u->rnext; else if (rings == u) rings = u->rnext;
  if (u->rnext) u->rnext->rprev = u->rprev;
  u->rnext = u->rprev = NULL;
  pthread_mutex_unlock(&rings_mu);
  u->pid = 0;
}

/* }==== */

static int refuse_setup(void) {  /* test hook: STRAND_URING_REFUSE=1 makes io_uring_setup fail */
  const char *v = getenv("STRAND_URING_REFUSE");
  return v != NULL && *v != 0 && *v != '0';
}

static int sys_enter(int fd, unsigned submit, unsigned wait, unsigned flags, void *arg, size_t argsz) {
  return (int)syscall(__NR_io_uring_enter, fd, submit, wait, flags, arg, argsz);
}

static unsigned cq_size(strand_loop *loop) {
  const char *v = getenv("STRAND_URING_CQ");          /* bench hook: the CQ's entries */
  if (v != NULL && *v != 0) {
    long n = strtol(v, NULL, 10);
    if (n >= SQ_N && n <= 65536) return (unsigned)n;      /* (the kernel wants CQ >= SQ) */
  }
  struct rlimit r;
  if (strand_loop_poller_deferred(loop->L) || getrlimit(RLIMIT_NOFILE, &r) != 0) return CQ_N;
  unsigned n = CQ_N;
  while (n < CQ_MAX && (r.rlim_cur == RLIM_INFINITY || (rlim_t)n < 2 * r.rlim_cur)) n *= 2;
  return n;
}

static void *ur_init(strand_loop *loop) {
  ur *u = (ur *)calloc(1, sizeof *u);
  if (u == NULL) return NULL;
  u->loop = loop;
  u->free_head = -1;
  u->anchors = LUA_NOREF;
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  /* COOP_TASKRUN (5.19, as provided-buffer rings): without it every completion interrupts the
   * thread (docs/uring.md run 1: 1.3-1.6x the epoll floor's CPU), so a kernel that refuses it
   * gets epoll (the loop falls back) */
  /* TASKRUN_FLAG (5.19, with COOP_TASKRUN): the kernel says in the SQ ring's flags when it holds
   * completions for us, so the watch before sleeping (ur_wait) reads memory, not syscalls */
  p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
  const char *df = getenv("STRAND_URING_DEFER");   /* experiment: SINGLE_ISSUER | DEFER_TASKRUN */
  if (df != NULL && *df != 0 && *df != '0') p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
  p.cq_entries = cq_size(loop);
  if (refuse_setup()) { free(u); errno = EPERM; return NULL; }   /* as a seccomp/sysctl refusal */
  u->fd = (int)syscall(__NR_io_uring_setup, SQ_N, &p);
  if (u->fd < 0 && errno == ENOMEM && p.cq_entries > CQ_N) {    /* memory: the usual size */
    unsigned fl = p.flags;
    memset(&p, 0, sizeof p);
    p.flags = fl;
    p.cq_entries = CQ_N;
    u->fd = (int)syscall(__NR_io_uring_setup, SQ_N, &p);
  }
  u->watch = 1;
  if (u->fd < 0 && errno == EINVAL) {          /* no TASKRUN_FLAG: no watch either */
    struct io_uring_params q;
    memset(&q, 0, sizeof q);
    q.flags = p.flags & ~(unsigned)IORING_SETUP_TASKRUN_FLAG;
    q.cq_entries = p.cq_entries;
    p = q;
    u->fd = (int)syscall(__NR_io_uring_setup, SQ_N, &p);
    u->watch = 0;
  }
  const char *sp = getenv("STRAND_URING_SPIN");    /* 0: never watch before sleeping */
  if (sp != NULL && strcmp(sp, "0") == 0) u->watch = 0;
  const char *wt = getenv("STRAND_URING_WATCHTEST");
  if (wt != NULL && *wt != 0) u->watch_test = strtod(wt, NULL);
  const char *tf = getenv("STRAND_URING_TESTFULL");  /* test hook: a full SQ, an interrupted submit */
  u->testfull = tf != NULL && (strcmp(tf, "1") == 0 || strcmp(tf, "2") == 0);
  u->testbusy = tf != NULL && strcmp(tf, "2") == 0;
  if (u->fd < 0) { int e = errno; free(u); errno = e == EINVAL ? ENOSYS : e; return NULL; }
  if (!(p.features & IORING_FEAT_SINGLE_MMAP) || !(p.features & IORING_FEAT_NODROP) ||
      !(p.features & IORING_FEAT_EXT_ARG)) {
    close(u->fd); free(u); errno = ENOSYS; return NULL;
  }
  u->cq_entries = p.cq_entries;
  size_t sqsz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  size_t cqsz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  u->ring_len = sqsz > cqsz ? sqsz : cqsz;
  u->ring_map = mmap(NULL, u->ring_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u->fd, IORING_OFF_SQ_RING);
  u->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
  u->sqes = mmap(NULL, u->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u->fd, IORING_OFF_SQES);
  if (u->ring_map == MAP_FAILED || u->sqes == MAP_FAILED) {
    int e = errno;
    if (u->ring_map != MAP_FAILED) munmap(u->ring_map, u->ring_len);
    if (u->sqes != MAP_FAILED) munmap(u->sqes, u->sqes_len);
    close(u->fd); free(u); errno = e; return NULL;
  }
  /* A forked child never uses its parent's ring (strand_uring_forked): fork leaves these
   * mappings out of the child (no page-table copy at the fork, no unmap at its exit). */
  u->ring_nofork = madvise(u->ring_map, u->ring_len, MADV_DONTFORK) == 0;
  u->sqes_nofork = madvise(u->sqes, u->sqes_len, MADV_DONTFORK) == 0;
  char *r = (char *)u->ring_map;
  u->sq_head = (unsigned *)(r + p.sq_off.head);
  u->sq_tail = (unsigned *)(r + p.sq_off.tail);
  u->sq_mask = *(unsigned *)(r + p.sq_off.ring_mask);
  u->sq_flags = (unsigned *)(r + p.sq_off.flags);
  unsigned *arr = (unsigned *)(r + p.sq_off.array);
  for (unsigned i = 0; i < p.sq_entries; i++) arr[i] = i;
  u->cq_head = (unsigned *)(r + p.cq_off.head);
  u->cq_tail = (unsigned *)(r + p.cq_off.tail);
  u->cq_mask = *(unsigned *)(r + p.cq_off.ring_mask);
  u->cqes = (struct io_uring_cqe *)(r + p.cq_off.cqes);
  u->cq_pos = *u->cq_head;
  u->tail = *u->sq_tail;
  const char *nl = getenv("STRAND_URING_NOLIMIT");   /* test hook: act as a kernel without the limit */
  u->nolimit = nl != NULL && *nl != 0 && *nl != '0';
  u->forks = atomic_load_explicit(&ur_forks, memory_order_acquire);
  rings_add(u);
  return u;
}

/* {==== submission */

static void reap(ur *u);

/* Submits everything queued (flags: 0, or IORING_ENTER_GETEVENTS): 0 or an errno. EBUSY (a kernel
 * whose CQ overflowed and cannot post its backlog, io_uring_enter(2): nothing more is taken until
 * we make room) and EAGAIN (no memory for requests just now) are answered by reaping what the CQ
 * holds before the next try, never by retrying blind (a spin for ever on a full CQ); EINTR retries.
 * Bounded: SUBMIT_TRIES tries in a row without progress give the errno back. Test hook
 * STRAND_URING_TESTFULL=2: a submit meets EBUSY while the CQ holds completions not reaped. */
#define SUBMIT_TRIES 64
static void fork_seen(ur *u);

static int submit(ur *u, unsigned flags) {
  int hook = u->testfull, tries = 0;   /* test hook: the first submit is interrupted */
  fork_seen(u);                        /* (a recv queued before a fork is not submitted after it) */
  while (u->to_submit > 0) {
    int k;
    if (hook) { errno = EINTR; k = -1; hook = 0; }
    else if (u->testbusy && u->cq_pos != __atomic_load_n(u->cq_tail, __ATOMIC_ACQUIRE)) { errno = EBUSY; k = -1; }
    else k = sys_enter(u->fd, u->to_submit, 0, flags, NULL, 0);
    if (k < 0) {
      int e = errno;
      if (e != EINTR && e != EAGAIN && e != EBUSY) return e;
      if (++tries >= SUBMIT_TRIES) return e;
      if (e != EINTR) { u->busy++; reap(u); }
      continue;
    }
    tries = 0;
    u->to_submit -= (unsigned)k;
  }
  return 0;
}

static int flush(ur *u) { return submit(u, 0); }

/* Submits what is queued, waits up to ns for a completion and reaps what came (the bounded
 * waits of a drain and of a disarm). */
static void wait_reap(ur *u, long ns) {
  struct __kernel_timespec ts = { 0, ns };
  struct io_uring_getevents_arg arg;
  memset(&arg, 0, sizeof arg);
  arg.ts = (uint64_t)(uintptr_t)&ts;
  fork_seen(u);
  int k = sys_enter(u->fd, u->to_submit, 1, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg, sizeof arg);
  if (k > 0) u->to_submit -= (unsigned)k;
  reap(u);
}

/* (A full SQ is submitted first: errno is kept, as a caller may be between a syscall and its
 * errno, e.g. rd_recv's EAGAIN then a re-arm.) STRAND_URING_TESTFULL=1: full when anything is
 * queued. */
static struct io_uring_sqe *get_sqe(ur *u) {
  if (u->tail - __atomic_load_n(u->sq_head, __ATOMIC_ACQUIRE) >= SQ_N ||
      (u->testfull && u->to_submit > 0)) {
    int saved = errno;
    flush(u);
    /* still full: submit gave up (EBUSY or EAGAIN SUBMIT_TRIES times, having reaped between):
     * wait a little for completions (they free kernel memory and CQ room), then try again */
    while (u->tail - __atomic_load_n(u->sq_head, __ATOMIC_ACQUIRE) >= SQ_N)
      if (flush(u) != 0) wait_reap(u, 1000000);
    errno = saved;
  }
  struct io_uring_sqe *s = &u->sqes[u->tail & u->sq_mask];
  memset(s, 0, sizeof *s);
  return s;
}

static void put_sqe(ur *u, int slot, int op) {
  struct io_uring_sqe *s = &u->sqes[u->tail & u->sq_mask];
  s->user_data = ((uint64_t)op << 56) | ((uint64_t)(u->slots[slot].gen & 0xffffff) << 32) | (uint32_t)slot;
  u->tail++;
  u->to_submit++;
  __atomic_store_n(u->sq_tail, u->tail, __ATOMIC_RELEASE);
  u->slots[slot].nreq++;
  u->inflight++;
}

/* }==== */

/* {==== slots */

/* A freed slot is reused first; else the next never-used one, initialised only now: the array
 * doubles, but the part not handed out yet is never written (at 10,000 sockets a 16,384-slot
 * array touched whole was ~40 bytes of RSS more per socket). */
static int slot_new(ur *u, strand_io *io) {
  int i;
  uint32_t gen = 0;
  if (u->free_head >= 0) {
    i = u->free_head;
    u->free_head = u->slots[i].next;
    gen = u->slots[i].gen;
  } else {
    if (u->nslots == u->capslots) {
      int n = u->capslots ? u->capslots * 2 : 64;
      uslot *ns = (uslot *)aligned_alloc(_Alignof(uslot), (size_t)n * sizeof *ns);
      if (ns == NULL) return -1;
      if (u->nslots) memcpy(ns, u->slots, (size_t)u->nslots * sizeof *ns);
      free(u->slots);
      u->slots = ns;
      u->capslots = n;
    }
    i = u->nslots++;
  }
  uslot *s = &u->slots[i];
  memset(s, 0, sizeof *s);
  s->gen = gen;
  s->io = io;
  s->qhead = s->qtail = -1;
  s->next = -1;
  return i;
}

static void buf_put(ur *u, int bid);
static void defer_clear(ur *u, int i);

/* Drops the anchor of slot i's send string (its CQE came, or the slot goes). */
static void unanchor(ur *u, int i) {
  lua_State *L = u->loop->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, u->anchors);
  lua_pushnil(L);
  lua_rawseti(L, -2, i + 1);
  lua_pop(L, 1);
  u->slots[i].anchored = 0;
}

static void slot_maybe_free(ur *u, int i) {
  uslot *s = &u->slots[i];
  if (s->io != NULL || s->nreq > 0) return;
  while (s->qhead >= 0) { int b = s->qhead; s->qhead = u->bq[b].next; buf_put(u, b); }
  if (s->anchored) unanchor(u, i);
  if (s->fast) { s->fast = 0; u->nfast--; }
  for (int k = 0; k < u->nsfail; k++)     /* (a sendall that never collected its failure) */
    if (u->sfails[k].slot == i) {
      memmove(u->sfails + k, u->sfails + k + 1, (size_t)(u->nsfail - k - 1) * sizeof *u->sfails);
      u->nsfail--;
      k--;
    }
  s->gen++;
  s->next = u->free_head;
  u->free_head = i;
}

/* A send of seq came short with res: kept until its sendall collects it (sfail_take), whatever
 * other sendalls' sends do meanwhile (a later failure never masks an earlier one). */
static void sfail_put(ur *u, int i, uint32_t seq, int res) {
  uslot *s = &u->slots[i];
  if (s->sshort == 0) { s->sshort = seq; s->sres = res; return; }
  if (u->nsfail == u->capsfail && u->capsfail < SFAIL_MAX) {
    int cap = u->capsfail ? u->capsfail * 2 : 8;
    struct sfail *a = (struct sfail *)realloc(u->sfails, (size_t)cap * sizeof *a);
    if (a != NULL) { u->sfails = a; u->capsfail = cap; }
  }
  if (u->nsfail == u->capsfail) {      /* full (or out of memory): the oldest goes */
    if (u->nsfail == 0) { s->sshort = seq; s->sres = res; return; }
    memmove(u->sfails, u->sfails + 1, (size_t)(u->nsfail - 1) * sizeof *u->sfails);
    u->nsfail--;
  }
  u->sfails[u->nsfail].slot = i;
  u->sfails[u->nsfail].seq = seq;
  u->sfails[u->nsfail].res = res;
  u->nsfail++;
}

/* 1 and *res when slot i's send of seq came short (the record goes), else 0 (it went whole). */
static int sfail_take(ur *u, int i, uint32_t seq, int *res) {
  uslot *s = &u->slots[i];
  if (s->sshort == seq) { *res = s->sres; s->sshort = 0; return 1; }
  for (int k = 0; k < u->nsfail; k++)
    if (u->sfails[k].slot == i && u->sfails[k].seq == seq) {
      *res = u->sfails[k].res;
      memmove(u->sfails + k, u->sfails + k + 1, (size_t)(u->nsfail - k - 1) * sizeof *u->sfails);
      u->nsfail--;
      return 1;
    }
  return 0;
}

/* }==== */

/* {==== provided buffers */

static void arm_recv(ur *u, int i);

/* A group's ring is FIFO: the kernel takes the buffer freed longest ago, so with all NBUF buffers
 * in it even one connection's exchanges cycle through every one and make the whole group (2 MB)
 * resident (bench/slow_readers_rss.lua, docs/uring.md 4.8). So a ring holds only what its recvs
 * can take before the loop reaps again — RING_MIN more than MSHOT_BYTES' worth per recv armed on
 * it — and the other free buffers are kept back on a stack (the last freed, warm, goes in first).
 * A loop with many recvs armed has them all in its rings, as before. */
#define RING_MIN 256
static void garmed_add(ur *u, int g, int d) {
  u->garmed[g] += d;
  long t = RING_MIN + (long)(MSHOT_BYTES / BUFSZ) * u->garmed[g];
  u->gtarget[g] = t < NBUF ? (int)t : NBUF;
}

/* bid: g * NBUF + the id within group g */
static inline __attribute__((always_inline)) void ring_put(ur *u, int g, int bid) {
  struct io_uring_buf *b = &u->br[g]->bufs[u->br_tail[g] & (NBUF - 1)];
  b->addr = (uint64_t)(uintptr_t)(u->bufs + (size_t)bid * BUFSZ);
  b->len = BUFSZ;
  b->bid = (unsigned short)(bid & (NBUF - 1));
  u->br_tail[g]++;
  u->gfree[g]++;
  __atomic_store_n(&u->br[g]->tail, u->br_tail[g], __ATOMIC_RELEASE);
}

static void buf_put(ur *u, int bid) {
  int g = bid / NBUF;
  u->nfree++;
  if (u->gfree[g] >= u->gtarget[g]) u->kept[g * NBUF + u->nkept[g]++] = bid;
  else ring_put(u, g, bid);
}

/* Group g's ring back to its target from the buffers kept back (a recv armed on it, one taken). */
static void ring_topup(ur *u, int g) {
  while (u->gfree[g] < u->gtarget[g] && u->nkept[g] > 0) ring_put(u, g, u->kept[g * NBUF + --u->nkept[g]]);
}

static void buf_free(ur *u, int bid) { buf_put(u, bid); }

#define BUFS_LEN ((size_t)NGRP_MAX * NBUF * BUFSZ)
#define BR_LEN (NBUF * sizeof(struct io_uring_buf))

/* Registers group ngrp (its ring and NBUF buffers): 0 or an errno. */
static int grp_add(ur *u) {
  int g = u->ngrp;
  if (g >= NGRP_MAX) return ENOSPC;
  struct io_uring_buf_ring *br = mmap(NULL, BR_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (br == MAP_FAILED) return errno;
  struct io_uring_buf_reg reg;
  memset(&reg, 0, sizeof reg);
  reg.ring_addr = (uint64_t)(uintptr_t)br;
  reg.ring_entries = NBUF;
  reg.bgid = (unsigned short)(BGID + g);
  if (syscall(__NR_io_uring_register, u->fd, IORING_REGISTER_PBUF_RING, &reg, 1) != 0) {
    int e = errno;
    munmap(br, BR_LEN);
    return e;
  }
  u->br[g] = br;
  u->br_tail[g] = 0;
  u->gfree[g] = 0;
  u->nkept[g] = 0;
  garmed_add(u, g, 0);
  u->ngrp = g + 1;
  u->nbuf = u->ngrp * NBUF;
  for (int b = NBUF - 1; b >= 0; b--) buf_put(u, g * NBUF + b);   /* (the lowest ids first) */
  return 0;
}

static int bufs_init(ur *u) {
  u->pool_tries++;
  const char *np = getenv("STRAND_URING_NOPOOL");    /* test hook: the pool's registration fails */
  if (np != NULL && *np != 0 && *np != '0') { u->bufs = NULL; return EPERM; }
  u->bufs = mmap(NULL, BUFS_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  u->bq = (struct ubq *)calloc((size_t)NGRP_MAX * NBUF, sizeof *u->bq);
  u->kept = (int *)calloc((size_t)NGRP_MAX * NBUF, sizeof *u->kept);
  int e = (u->bufs == MAP_FAILED || !u->bq || !u->kept) ? ENOMEM : grp_add(u);
  if (e != 0) {
    if (u->bufs != MAP_FAILED) munmap(u->bufs, BUFS_LEN);
    free(u->bq); free(u->kept);
    u->bufs = NULL; u->bq = NULL; u->kept = NULL;
    return e;
  }
  u->min_free = u->nfree;
  return 0;
}

static void fork_seen(ur *u);

/* A socket went on the fast path: a group more when they would outnumber the buffers. */
static void fast_add(ur *u, uslot *s) {
  fork_seen(u);                 /* (first: the sockets made before a fork go off it, not this one) */
  s->fast = 1;
  u->nfast++;
  while (!u->nogrow && u->nfast + GROW_SLACK > u->nbuf && u->ngrp < NGRP_MAX)
    if (grp_add(u) != 0) u->nogrow = 1;
}

/* The group a new recv takes from: the one fewest recvs take from (a multishot stays armed for
 * many messages, so its group is its share of the pool for a while), then the one with the most
 * free buffers. */
static int grp_pick(const ur *u) {
  int best = 0;
  for (int g = 1; g < u->ngrp; g++)
    if (u->garmed[g] < u->garmed[best] ||
        (u->garmed[g] == u->garmed[best] && u->gfree[g] + u->nkept[g] > u->gfree[best] + u->nkept[best]))
      best = g;
  return best;
}

/* }==== */

static void arm_poll(ur *u, int i, int op) {
  struct io_uring_sqe *e = get_sqe(u);
  e->opcode = IORING_OP_POLL_ADD;
  e->fd = u->slots[i].io->fd;
  e->poll32_events = op == OP_PIN ? (POLLIN | POLLRDHUP | POLLPRI) : POLLOUT;
  put_sqe(u, i, op);
  if (op == OP_PIN) u->slots[i].pin = 1; else u->slots[i].pout = 1;
}

static void arm_recv(ur *u, int i) {
  struct io_uring_sqe *e = get_sqe(u);
  e->opcode = IORING_OP_RECV;
  e->fd = u->slots[i].io->fd;
  e->flags = IOSQE_BUFFER_SELECT;
  int g = grp_pick(u);
  u->slots[i].grp = (unsigned char)g;
  garmed_add(u, g, 1);
  if (u->nkept[g] > 0) ring_topup(u, g);
  e->buf_group = (unsigned short)(BGID + g);
  e->ioprio = IORING_RECV_MULTISHOT;
  if (u->nolimit) e->ioprio = 0;               /* single-shot: at most one buffer */
  else e->file_index = MSHOT_BYTES;           /* the multishot's total byte limit */
  put_sqe(u, i, OP_RECV);
  u->slots[i].mbytes = 0;
  u->slots[i].recv_armed = 1;
  u->slots[i].rcancel = 0;                     /* (no cancel of this one is queued yet) */
}

static void cancel_op(ur *u, int i, int op) {
  struct io_uring_sqe *e = get_sqe(u);
  e->opcode = IORING_OP_ASYNC_CANCEL;
  e->fd = -1;
  e->addr = ((uint64_t)op << 56) | ((uint64_t)(u->slots[i].gen & 0xffffff) << 32) | (uint32_t)i;
  put_sqe(u, i, OP_CANCEL);
}

/* A fork since this ring last looked (one made by another thread: strand_uring_forking, which
 * cancelled our recvs): every socket on the fast path now is open in two processes, so none arms
 * a recv again (sockio reads them by readiness + recv(2): STRAND_URING_SHARED) and one armed since
 * is cancelled. Checked wherever a recv would be armed, and before a socket joins the fast path
 * (one that joins after the fork is not shared and keeps it). */
static void fork_seen(ur *u) {
  uint32_t n = atomic_load_explicit(&ur_forks, memory_order_acquire);
  if (n == u->forks) return;
  u->forks = n;
  /* a recv queued but not submitted yet (its SQE is still ours: the fork's SYNC_CANCEL could not
   * reach it) would be armed after the fork: it becomes a no-op (its CQE counted as a cancel's),
   * and a reader that waited for it is woken to read by readiness */
  for (unsigned k = u->tail - u->to_submit; k != u->tail; k++) {
    struct io_uring_sqe *e = &u->sqes[k & u->sq_mask];
    uint64_t ud = e->user_data;
    if ((int)(ud >> 56) != OP_RECV) continue;
    memset(e, 0, sizeof *e);
    e->opcode = IORING_OP_NOP;
    e->user_data = (ud & ~((uint64_t)0xff << 56)) | ((uint64_t)OP_CANCEL << 56);
    uslot *s = &u->slots[(uint32_t)ud];
    if (s->recv_armed) { s->recv_armed = s->rcancel = 0; garmed_add(u, s->grp, -1); }
    if (s->io != NULL) {
      if (!s->rd) { s->rd = 1; u->throttles++; }
      if (s->io->reader) strand_io_event(s->io, STRAND_READ);
    }
  }
  for (int i = 0; i < u->nslots; i++) {
    uslot *s = &u->slots[i];
    if (s->io == NULL || !s->fast) continue;
    s->nofast = 1;
    if (!s->rd) { s->rd = 1; u->throttles++; }
    if (s->recv_armed && !s->rcancel) { s->rcancel = 1; cancel_op(u, i, OP_RECV); }
  }
}

static int ur_add(void *pv, strand_io *io) {
  ur *u = (ur *)pv;
  int i = slot_new(u, io);
  if (i < 0) return ENOMEM;
  io->pollidx = i;
  return 0;
}

static void ur_interest(void *pv, strand_io *io) {
  ur *u = (ur *)pv;
  if (io->pollidx < 0 || u->fd < 0) return;          /* (fd < 0: a forked child's leftover) */
  uslot *s = &u->slots[io->pollidx];
  if (io->reader && (!s->fast || s->rd) && !s->pin) arm_poll(u, io->pollidx, OP_PIN);
  if (io->reader && s->fast && !s->rd && !s->recv_armed && s->qhead < 0 && !s->eof && !s->rerr) {
    fork_seen(u);
    if (s->nofast) { if (!s->pin) arm_poll(u, io->pollidx, OP_PIN); }
    else if (u->nfree >= ARM_MIN) arm_recv(u, io->pollidx);
    else { s->rd = 1; u->throttles++; if (!s->pin) arm_poll(u, io->pollidx, OP_PIN); }
  }
  if (io->writer && !s->pout && !s->send_busy) arm_poll(u, io->pollidx, OP_POUT);
}

static void ur_del(void *pv, strand_io *io) {
  ur *u = (ur *)pv;
  int i = io->pollidx;
  if (i < 0 || u->fd < 0) return;
  io->pollidx = -1;
  uslot *s = &u->slots[i];
  s->io = NULL;
  defer_clear(u, i);
  /* held while the cancels are queued: a get_sqe that reaps (SQ full) may complete the slot's last
   * request, which must not free it between two cancels */
  s->nreq++;
  if (s->pin) cancel_op(u, i, OP_PIN);
  if (s->pout) cancel_op(u, i, OP_POUT);
  if (s->recv_armed) cancel_op(u, i, OP_RECV);
  if (s->send_busy) cancel_op(u, i, OP_SEND);
  s->nreq--;
  int cancels = s->nreq > 0;
  slot_maybe_free(u, i);
  /* the fd is closed next, but a request holds the file open (no FIN) until its cancel has run:
   * submit now, not at the next wait, which may never come (a program that closes and exits) */
  if (cancels) submit(u, IORING_ENTER_GETEVENTS);   /* (gives up after SUBMIT_TRIES: the next wait submits) */
}

/* {==== completions */


/* A request/reply server's task waits for its send's completion, then reads the next request,
 * which is seldom there yet: two resumes per exchange, each touching the task, its coroutine, its
 * stack and the socket again (at 10,000 connections, cache misses). So in a busy loop (the round
 * woke readers: the next poll comes right after them and returns at least their sends) a send's
 * completion wakes its writer only when the socket's next bytes come (its recv's completion:
 * then the task resumes once, finds its sendall done and its next read's bytes queued), or once
 * the loop has handled 2 completions per fast socket (+ DEFER_CQES) since, as every other
 * connection had its turn, or after DEFER_POLLS polls (none of which blocks meanwhile). At once
 * when another writer needs the socket (strand_uring_settle, strand_uring_send) or when a poll's
 * completions woke no reader (a lone exchange: no poll is added). */
#define DEFER_POLLS 16
#define DEFER_CQES 64
static inline int defer_isset(const ur *u, int i) {
  return i / 64 < u->ndbits && (u->dbits[i / 64] >> (i % 64) & 1);
}

static void defer_clear(ur *u, int i) {
  if (i / 64 < u->ndbits) u->dbits[i / 64] &= ~((uint64_t)1 << (i % 64));
}

/* Whether slot i's completion was deferred (no more: the caller delivers it). */
static inline int defer_take(ur *u, int i) {
  if (!defer_isset(u, i)) return 0;
  u->dbits[i / 64] &= ~((uint64_t)1 << (i % 64));
  return 1;
}

static int defer_push(ur *u, int i) {
  if (i / 64 >= u->ndbits) {              /* (a bit per slot: the hot path reads no slot for it) */
    int n = u->nslots / 64 + 1;
    uint64_t *b = (uint64_t *)realloc(u->dbits, (size_t)n * sizeof *b);
    if (b == NULL) return 0;                         /* delivered now */
    memset(b + u->ndbits, 0, (size_t)(n - u->ndbits) * sizeof *b);
    u->dbits = b;
    u->ndbits = n;
  }
  if (u->ndefer == u->capdefer) {
    int cap = u->capdefer ? u->capdefer * 2 : 64;
    struct udefer *a = (struct udefer *)realloc(u->defer, (size_t)cap * sizeof *a);
    if (a == NULL) return 0;                         /* delivered now */
    u->defer = a;
    u->capdefer = cap;
  }
  u->deferred++;
  u->defer[u->ndefer].slot = i;
  u->defer[u->ndefer].poll = u->npoll;
  u->defer[u->ndefer].cqe = (unsigned)u->ncqe;
  u->ndefer++;
  u->dbits[i / 64] |= (uint64_t)1 << (i % 64);
  return 1;
}

/* Slot i's deferred completion, if it still has one (once: the list may name a slot twice). */
static inline void defer_fire(ur *u, int i) {
  if (!defer_take(u, i)) return;
  strand_io *io = u->slots[i].io;
  if (io != NULL && !u->closing) strand_io_event(io, STRAND_WRITE);
}

/* After ur_wait: the deferred completions old enough (above), or all once a poll's completions
 * woke no reader, are delivered; those delivered already (a recv's completion) leave the list. Oldest first, so only
 * its head is looked at. (A delivery may arm requests, and a full SQ reap: defer_ok is 0 then,
 * nothing is added.) */
static void defer_deliver(ur *u) {
  int all = !u->woke_reader, k = u->dhead;
  for (; k < u->ndefer; k++) {
    struct udefer d = u->defer[k];
    if (defer_isset(u, d.slot) && !all && u->npoll - d.poll < DEFER_POLLS &&
        (unsigned)u->ncqe - d.cqe < 2u * (unsigned)u->nfast + DEFER_CQES)
      break;
    defer_fire(u, d.slot);
  }
  if (k == u->ndefer) { u->dhead = u->ndefer = 0; return; }
  u->dhead = k;
  if (k >= 64 && k >= u->ndefer / 2) {    /* (the list moves down now and then) */
    memmove(u->defer, u->defer + k, (size_t)(u->ndefer - k) * sizeof *u->defer);
    u->ndefer -= k;
    u->dhead = 0;
  }
}

static void on_cqe(ur *u, uint64_t ud, int res, unsigned flags) {
  int op = (int)(ud >> 56), i = (int)(uint32_t)ud;
  if (op == 0 || i < 0 || i >= u->nslots) return;      /* the cancel-all of ur_free */
  uslot *s = &u->slots[i];
  int more = (flags & IORING_CQE_F_MORE) != 0;
  if (!more) { s->nreq--; u->inflight--; }
  strand_io *io = u->closing ? NULL : s->io;   /* closing: bookkeeping only, no wake-ups */
  switch (op) {
    case OP_PIN: case OP_POUT: {
      if (op == OP_PIN) s->pin = 0; else s->pout = 0;
      if (io == NULL || res == -ECANCELED) break;
      unsigned ev = 0;
      if (res < 0) ev = STRAND_READ | STRAND_WRITE | STRAND_HUP;
      else {
        if (res & (POLLIN | POLLRDHUP | POLLHUP | POLLERR | POLLPRI)) ev |= STRAND_READ;
        if (res & (POLLOUT | POLLHUP | POLLERR)) ev |= STRAND_WRITE;
        if (res & (POLLRDHUP | POLLHUP | POLLERR)) ev |= STRAND_HUP;
        /* the direction asked for is worth a retry whatever the mask says: a wake-up may report
         * only POLLRDHUP (a socket shut down for reading, woken by its peer's reads) */
        ev |= op == OP_PIN ? STRAND_READ : STRAND_WRITE;
      }
      if (ev) strand_io_event(io, ev);
      break;
    }
    case OP_RECV:
      if (!more) { s->recv_armed = s->rcancel = 0; garmed_add(u, s->grp, -1); }
      if (res == -EINVAL && !u->limit_ok && !u->nolimit) {   /* no byte limit on this kernel */
        u->nolimit = 1;
        if (io != NULL && !s->recv_armed) arm_recv(u, i);
        break;
      }
      if (res > 0) {
        u->limit_ok = 1;
        s->mbytes += (unsigned)res;
        if (more && s->mbytes > MSHOT_BYTES && !u->nolimit) u->nolimit = 1;   /* limit ignored */
      }
      if (res > 0 && (flags & IORING_CQE_F_BUFFER)) {
        int b = s->grp * NBUF + (int)(flags >> IORING_CQE_BUFFER_SHIFT);
        u->nfree--;
        u->gfree[s->grp]--;
        if (u->nkept[s->grp] > 0) ring_topup(u, s->grp);
        if (u->nfree < u->min_free) u->min_free = u->nfree;
        if (io == NULL) { buf_free(u, b); break; }
        u->bq[b].len = (unsigned)res;
        u->bq[b].next = -1;
        if (s->qtail >= 0) u->bq[s->qtail].next = b; else s->qhead = b;
        s->qtail = b;
        s->npend++;
        int over = s->npend >= PENDING_MAX || (u->nfree < LOW_POOL && s->npend >= SHARE_MAX);
        /* (rd and rcancel before the cancel is queued: a full SQ's submit may reap, and the
         * recv's last CQE, handled there, must neither re-arm it nor leave rcancel set) */
        if (over && !s->rd) { s->rd = 1; u->throttles++; }
        if (over && s->recv_armed && !s->rcancel) {                       /* flow control */
          s->rcancel = 1;
          cancel_op(u, i, OP_RECV);
        }
        /* the limit ended it: on while under budget (in rd mode the reader re-arms) */
        if (!s->recv_armed && !s->rd && !s->nofast && u->nfree >= ARM_MIN && (fork_seen(u), !s->nofast)) arm_recv(u, i);
        unsigned ev = STRAND_READ;
        if (defer_take(u, i)) {         /* its writer resumes with the bytes here */
          ev |= STRAND_WRITE;
          u->merged++;
          u->woke_reader = 1;
        } else if (io->reader) u->woke_reader = 1;
        strand_io_event(io, ev);
      } else if (io != NULL) {
        if (res == 0) s->eof = 1;
        else if (res == -ENOBUFS || res == -ECANCELED) {
          /* the pool ran dry, or cancelled (flow control, disarm, or a cancel meant for the
           * previous recv): from now on readiness + recv(2); a waiting reader retries */
          if (res == -ENOBUFS) { u->enobufs++; if (u->nkept[s->grp] > 0) ring_topup(u, s->grp); }
          if (!s->rd) { s->rd = 1; u->throttles++; }
          if (!io->reader || s->qhead >= 0) break;
        } else s->rerr = -res;
        strand_io_event(io, STRAND_READ | (defer_take(u, i) ? STRAND_WRITE : 0u));
      }
      break;
    case OP_SEND:
      s->send_busy = 0;
      if (s->anchored) unanchor(u, i);
      if (res != (int)s->slen) sfail_put(u, i, s->sseq, res);   /* kept for its sendall */
      if (io == NULL) break;
      if (u->defer_ok && res == (int)s->slen && defer_push(u, i)) break;
      strand_io_event(io, STRAND_WRITE);
      break;
    default: break;                      /* OP_CANCEL */
  }
  slot_maybe_free(u, i);
}

/* Re-entrant: a completion's handler may queue a request, and a full SQ's submit reaps (submit);
 * the inner reap goes on from u->cq_pos, past the CQE being handled (each read before its handler). */
static void reap(ur *u) {
  unsigned tail = __atomic_load_n(u->cq_tail, __ATOMIC_ACQUIRE), pos = u->cq_pos;
  while ((int)(tail - pos) > 0) {
    do {
      struct io_uring_cqe *e = &u->cqes[pos & u->cq_mask];
      u->cq_pos = ++pos;
      u->ncqe++;
      on_cqe(u, e->user_data, e->res, e->flags);
      pos = u->cq_pos;
    } while ((int)(tail - pos) > 0);
    __atomic_store_n(u->cq_head, pos, __ATOMIC_RELEASE);
    tail = __atomic_load_n(u->cq_tail, __ATOMIC_ACQUIRE);
  }
}


static int ur_wait_once(ur *u, double timeout);

/* {==== the watch before sleeping (docs/uring.md 4.7)
 * A task asleep in io_uring_enter is woken from another CPU; in a VM whose idle vCPUs halt, each
 * such wake-up costs tens of microseconds (the vCPU is woken through the host) on both sides of a
 * one-in-flight exchange. So when the last wait was short (a peer answering), few requests are in
 * flight and the machine has two CPUs or more, the loop first watches the ring for twice the last
 * wait (WATCH_SECONDS to WATCH_MAX): the CQ tail, and the SQ flags' IORING_SQ_TASKRUN
 * (COOP_TASKRUN holds completions until we enter the kernel; then one io_uring_enter posts them).
 * A watch that saw nothing, or saw a completion only after time off the CPU, doubles the number
 * of waits that skip it (up to 2^WATCH_BACKOFF_MAX - 1); one that saw a completion come in resets
 * it: a program whose peers answer slowly, or a peer sharing this CPU (which cannot answer while
 * we watch), pays a failed watch rarely. STRAND_URING_SPIN=0: never. */
#define WATCH_SECONDS 30e-6       /* the shortest watch */
#define WATCH_MAX 200e-6          /* the longest */
#define WATCH_SHORT 1e-3          /* a wait shorter than this was a peer answering */
#define WATCH_BACKOFF_MAX 8
/* Only a loop with few requests in flight watches (a request/reply with one peer or a few): a
 * server with many sockets armed has completions coming anyway and waits rarely, and a watch
 * would add a system call (the submission before it) to each of those waits. */
#define WATCH_INFLIGHT_MAX 8

static int cq_ready(ur *u) { return *u->cq_head != __atomic_load_n(u->cq_tail, __ATOMIC_ACQUIRE); }

/* The machine's CPUs: with one, a peer can only answer when we sleep. (Not this process's
 * affinity: a process pinned to one CPU may talk to one pinned to another; a peer sharing our
 * CPU makes the watches fail, and the backoff makes them rare.) */
static int watch_cpus(ur *u) {
  if (u->ncpu == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    u->ncpu = n > 0 ? (int)n : 1;
  }
  return u->ncpu;
}

/* Whether a wait may watch first: a short one is timed (t0) for the next wait's decision. */
static int watch_may(const ur *u, double timeout) {
  long n = u->inflight + (long)u->to_submit;
  return u->watch && timeout != 0 && n > 0 && n <= WATCH_INFLIGHT_MAX;   /* n 0: nothing could come */
}

/* Whether this wait watches first: up to limit seconds (0: no). */
static double watch_limit(ur *u, double timeout) {
  if (u->watch_test > 0) return timeout > 0 && timeout < u->watch_test ? timeout : u->watch_test;
  if (u->last_wait >= WATCH_SHORT) return 0;
  if (u->watch_skip > 0) { u->watch_skip--; return 0; }
  if (watch_cpus(u) < 2) return 0;
  /* twice the last wait: after a wait that slept (the peer's answer came late, since it had to
   * be woken) long enough for an answer from a peer that sleeps too, so that a pair where one
   * side slept once goes back to both watching */
  double lim = 2 * u->last_wait;
  if (lim < WATCH_SECONDS) lim = WATCH_SECONDS;
  if (lim > WATCH_MAX) lim = WATCH_MAX;
  return timeout > 0 && timeout < lim ? timeout : lim;
}

/* Submits what is queued, then watches up to limit seconds: 1 when completions came while it
 * watched, 2 when they came after this thread was off the CPU a while (WATCH_GAP: preempted,
 * likely by the very peer that answered, which shares this CPU and would have answered as soon
 * had we slept), 3 when they were there at once (the wait would not have slept either: says
 * nothing about watching), 0 when none came. */
#define WATCH_GAP 5e-6
static int watch(ur *u, double limit) {
  u->watches++;
  double t = strand_now(), until = t + limit;
  int off = 0;
  if (u->to_submit > 0) {
    /* one submission (the wait after a failed watch deals with EBUSY, EINTR, a partial one) */
    int k = sys_enter(u->fd, u->to_submit, 0, 0, NULL, 0);
    if (k < 0) return 0;
    u->to_submit -= (unsigned)k;
    if (u->to_submit > 0) return 0;
    double t1 = strand_now();                 /* (the return from a system call may switch) */
    if (t1 - t > WATCH_GAP) off = 1;
    t = t1;
  }
  if (cq_ready(u)) return off ? 2 : 3;
  for (;;) {
    for (int i = 0; i < 32; i++) {
      int got = cq_ready(u);
      if (!got && (__atomic_load_n(u->sq_flags, __ATOMIC_ACQUIRE) & IORING_SQ_TASKRUN)) {
        sys_enter(u->fd, 0, 0, IORING_ENTER_GETEVENTS, NULL, 0);     /* posts them */
        got = cq_ready(u);
      }
      if (got) return off || strand_now() - t > WATCH_GAP ? 2 : 1;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#elif defined(__aarch64__)
      __asm__ __volatile__("yield");
#endif
    }
    double t1 = strand_now();
    if (t1 - t > WATCH_GAP) off = 1;
    if (t1 >= until) return 0;
    t = t1;
  }
}

/* }==== */

static int ur_wait_poll(ur *u, double timeout);

static int ur_wait(void *pv, double timeout) {
  ur *u = (ur *)pv;
  fork_seen(u);                         /* (before this wait submits what is queued) */
  if (u->ndefer > 0) timeout = 0;    /* deferred writers: no poll blocks meanwhile */
  u->npoll++;
  u->woke_reader = 0;
  u->defer_ok = 1;
  int r = ur_wait_poll(u, timeout);
  u->defer_ok = 0;
  if (u->ndefer > 0) defer_deliver(u);
  return r;
}

static int ur_wait_poll(ur *u, double timeout) {
  double t0 = 0, limit;
  if (u->watch_t0 != 0) { t0 = u->watch_t0; u->watch_t0 = 0; limit = 0; }   /* the sleep after it */
  else limit = watch_may(u, timeout) ? (t0 = strand_now(), watch_limit(u, timeout)) : 0;
  if (limit > 0 && !cq_ready(u)) {
    int w = watch(u, limit);
    if (w == 0 || w == 2) {                       /* backs off */
      if (u->watch_fail < WATCH_BACKOFF_MAX) u->watch_fail++;
      u->watch_skip = (1 << u->watch_fail) - 1;
    }
    if (w != 0) {
      if (w == 1) { u->watch_hits++; u->watch_fail = 0; }   /* (3: no change) */
      u->last_wait = strand_now() - t0;
      reap(u);
      return 0;
    }
    /* nothing came: back to the loop, which checks Ctrl-C before it waits again (a SIGINT that
     * landed during the watch would else be seen only after the sleep's next event), fires the
     * timers and comes back to sleep, the watch's start kept for last_wait */
    u->watch_t0 = t0;
    return 0;
  }
  int r = ur_wait_once(u, timeout);
  if (t0 != 0) u->last_wait = strand_now() - t0;
  return r;
}

static int ur_wait_once(ur *u, double timeout) {
  struct __kernel_timespec ts;
  struct io_uring_getevents_arg arg;
  memset(&arg, 0, sizeof arg);
  unsigned flags = IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG;
  unsigned want = 1;
  if (timeout == 0) {
    want = 0;
  } else if (timeout > 0) {
    ts.tv_sec = (long long)timeout;
    ts.tv_nsec = (long long)((timeout - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000LL) ts.tv_nsec = 999999999LL;
    arg.ts = (uint64_t)(uintptr_t)&ts;
  }
  if (*u->cq_head != __atomic_load_n(u->cq_tail, __ATOMIC_ACQUIRE)) want = 0;   /* already there */
  int k = sys_enter(u->fd, u->to_submit, want, flags, &arg, sizeof arg);
  int err = 0;
  if (k >= 0) u->to_submit -= (unsigned)k;
  else if (errno != ETIME && errno != EINTR && errno != EAGAIN && errno != EBUSY) err = errno;
  else if (errno == EINTR) err = EINTR;
  reap(u);
  return err;
}

/* A forked child abandons its parent's loop (loop.c strand_loop_forked): the ring, its fd and
 * the registered buffer ring go, but the child's copies of the slots and the buffers stay (never
 * freed, as the old loop struct), so that bytes queued before the fork are still read first
 * (forked_take). Returns what stays as the old loop's pstate. */
void *strand_uring_forked(void *pv) {
  ur *u = (ur *)pv;
  /* (an address range fork left out may already hold a mapping the child made: not unmapped) */
  if (!u->sqes_nofork) munmap(u->sqes, u->sqes_len);
  if (!u->ring_nofork) munmap(u->ring_map, u->ring_len);
  u->sqes = NULL; u->ring_map = NULL;
  close(u->fd);
  u->fd = -1;
  for (int g = 0; g < u->ngrp; g++) { munmap(u->br[g], BR_LEN); u->br[g] = NULL; }
  u->closing = 1;
  return u;
}

static void ur_free(void *pv) {
  ur *u = (ur *)pv;
  rings_remove(u);                       /* (before its fd closes: strand_uring_forking reads it) */
  u->closing = 1;
  if (!u->loop->forked && u->inflight > 0) {
    /* the state is closing: stop every request and wait (bounded) for their CQEs, so that no
     * send reads a Lua string and no recv writes a buffer after they are freed */
    struct io_uring_sqe *e = get_sqe(u);
    e->opcode = IORING_OP_ASYNC_CANCEL;
    e->fd = -1;
    e->cancel_flags = IORING_ASYNC_CANCEL_ANY;
    e->user_data = 0;
    u->tail++; u->to_submit++;
    __atomic_store_n(u->sq_tail, u->tail, __ATOMIC_RELEASE);
    for (int round = 0; round < 20 && u->inflight > 0; round++) wait_reap(u, 50000000);
  }
  /* (in a forked child the requests are the parent's: unmap and close only) */
  if (u->sqes != NULL) munmap(u->sqes, u->sqes_len);
  if (u->ring_map != NULL) munmap(u->ring_map, u->ring_len);
  if (u->fd >= 0) close(u->fd);
  for (int g = 0; g < u->ngrp; g++) if (u->br[g]) munmap(u->br[g], BR_LEN);
  if (u->bufs) {
    munmap(u->bufs, BUFS_LEN);
    free(u->bq); free(u->kept);
  }
  free(u->sfails);
  free(u->defer);
  free(u->dbits);
  free(u->slots);
  free(u);
}

/* }==== */

/* {==== the socket fast path (sockio.c) */

static ur *fast_ur(strand_io *io) {
  strand_loop *loop = io->loop;
  if (loop == NULL || loop->poller != &strand_poller_uring || loop->pstate == NULL || loop->forked ||
      loop->closed || io->pollidx < 0)
    return NULL;
  return (ur *)loop->pstate;
}

/* One recv(2) for a socket in rd mode (flow control): a read that finds the socket drained (short
 * or EAGAIN) with the pool healthy goes back to the multishot, armed at once when it drained. */
static long rd_recv(ur *u, strand_io *io, uslot *s, char *buf, size_t len) {
  for (;;) {
    ssize_t r = recv(io->fd, buf, len, 0);
    if (r < 0 && errno == EINTR) continue;
    int drained = (r >= 0 && (size_t)r < len) || (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    if (r < 0 && errno == EWOULDBLOCK) errno = EAGAIN;
    if (r == 0) s->eof = 1;
    if (drained && r != 0 && !s->nofast && u->nfree >= LOW_POOL && !s->recv_armed && s->qhead < 0) {
      s->rd = 0;
      if (r < 0) arm_recv(u, io->pollidx);        /* the reader waits next: the multishot serves it */
    }
    if (r < 0 && errno == EAGAIN) io->ready &= ~(unsigned)STRAND_READ;
    else if (r > 0 && (size_t)r < len && !(io->ready & STRAND_HUP)) io->ready &= ~(unsigned)STRAND_READ;
    return (long)r;
  }
}

/* Copies up to len bytes of s's first queued buffer into buf and returns how many; a buffer read
 * to its end leaves the queue, and goes back to the pool when give (not in a forked child, whose
 * copy of the pool is no ring's). */
static size_t q_take(ur *u, uslot *s, char *buf, size_t len, int give) {
  int b = s->qhead;
  size_t n = u->bq[b].len - s->qoff;
  if (n > len) n = len;
  memcpy(buf, u->bufs + (size_t)b * BUFSZ + s->qoff, n);
  s->qoff = (unsigned short)(s->qoff + n);
  if (s->qoff == u->bq[b].len) {
    s->qoff = 0;
    s->qhead = u->bq[b].next;
    if (s->qhead < 0) s->qtail = -1;
    if (give) { s->npend--; buf_free(u, b); }
  }
  return n;
}

/* In a forked child: bytes the parent's multishot had queued before the fork are in the child's
 * copy of the pool (as the read buffer's are): read them first, without touching the ring (the
 * parent's). Then recv(2), as the fd is registered with the child's own loop. */
static long forked_take(strand_io *io, char *buf, size_t len) {
  ur *u = (ur *)io->loop->pstate;
  if (u == NULL || io->pollidx < 0 || io->pollidx >= u->nslots || u->bufs == NULL) return -2;
  uslot *s = &u->slots[io->pollidx];
  if (s->io != io || s->qhead < 0) return -2;
  size_t n = q_take(u, s, buf, len, 0);
  io->ready |= STRAND_READ;
  return (long)n;
}

long strand_uring_recv(strand_io *io, char *buf, size_t len, int mode) {
  ur *u = fast_ur(io);
  if (u == NULL) {
    if (io->loop && io->loop->forked && io->loop->poller == &strand_poller_uring) return forked_take(io, buf, len);
    return -2;
  }
  uslot *s = &u->slots[io->pollidx];
  if (!s->fast) {
    if (mode != 0 || s->nofast) return -2;
    if (u->bufs == NULL && (u->nopool || bufs_init(u) != 0)) {   /* no provided buffers: readiness */
      u->nopool = 1;           /* for good: not a 16 MiB map, a refused register and unmaps per read */
      return -2;
    }
    fast_add(u, s);
    s->rd = 1;                 /* first a recv(2): data may be in the socket already */
    return rd_recv(u, io, s, buf, len);
  }
  if ((mode & STRAND_URING_SHARED) && !s->nofast) strand_uring_disarm(io, 1);   /* after a fork */
  else if ((mode & STRAND_URING_NONBLOCK) && s->recv_armed) strand_uring_disarm(io, 0);  /* setblocking(false) */
  if (s->qhead >= 0) {
    size_t n = q_take(u, s, buf, len, 1);
    if (s->qhead >= 0 || s->eof || s->rerr || s->rd) io->ready |= STRAND_READ;
    else io->ready &= ~(unsigned)STRAND_READ;
    return (long)n;
  }
  if (s->rerr) { errno = s->rerr; s->rerr = 0; return -1; }
  if (s->eof) return 0;
  if (mode != 0) return -2;
  if (s->rd) return rd_recv(u, io, s, buf, len);
  if (!s->recv_armed) {
    if (u->nfree >= ARM_MIN) arm_recv(u, io->pollidx);
    else { s->rd = 1; u->throttles++; return rd_recv(u, io, s, buf, len); }
  }
  io->ready &= ~(unsigned)STRAND_READ;
  errno = EAGAIN;
  return -1;
}

/* Cancel a socket's multishot recv and wait (bounded) for its last completion, so that nothing
 * more is taken from the fd; what it took stays queued for the next strand read. forever: never
 * arm one again (the fd was handed out). */
void strand_uring_disarm(strand_io *io, int forever) {
  ur *u = fast_ur(io);
  if (u == NULL) return;
  int i = io->pollidx;
  uslot *s = &u->slots[i];
  if (forever) s->nofast = 1;
  if (!s->fast) return;
  if (!s->rd) { s->rd = 1; u->throttles++; }
  if (!s->recv_armed) return;
  /* (rcancel first: cancel_op's get_sqe may reap, and the recv's last CQE clears it) */
  if (!s->rcancel) { s->rcancel = 1; cancel_op(u, i, OP_RECV); }
  for (int round = 0; round < 40 && s->recv_armed; round++) wait_reap(u, 25000000);
}

/* Before a fork (strand_sock_prefork, whatever the calling state's poller): counts it (every ring
 * makes its fast sockets shared at its next arm: fork_seen) and cancels the recvs of every other
 * ring of this process now (IORING_REGISTER_SYNC_CANCEL, matched by opcode: Linux 6.6; an older
 * kernel refuses it and those rings only stop at their next arm), so that a thread asleep with a
 * multishot armed takes nothing that comes after the fork: it is the child's as much (epoll's
 * semantics). The calling loop's own recvs: strand_uring_prefork. */
void strand_uring_forking(strand_loop *loop) {
  atomic_fetch_add_explicit(&ur_forks, 1, memory_order_acq_rel);
  ur *self = loop != NULL && loop->poller == &strand_poller_uring && !loop->forked ? (ur *)loop->pstate : NULL;
  pid_t me = getpid();
  pthread_once(&rings_once, rings_hooks);
  pthread_mutex_lock(&rings_mu);
  for (ur *o = rings; o != NULL; o = o->rnext) {
    if (o == self || o->fd < 0 || o->pid != me) continue;
    struct {                             /* io_uring_sync_cancel_reg with its opcode (6.6 headers) */
      uint64_t addr; int32_t fd; uint32_t flags; struct __kernel_timespec timeout;
      uint8_t opcode; uint8_t pad[7]; uint64_t pad2[3];
    } r;
    memset(&r, 0, sizeof r);
    r.fd = -1;
    r.flags = IORING_ASYNC_CANCEL_ALL | IORING_ASYNC_CANCEL_OP;
    r.opcode = IORING_OP_RECV;
    r.timeout.tv_nsec = 100000000;       /* a poll-armed recv goes at once; bounded all the same */
    while (syscall(__NR_io_uring_register, o->fd, IORING_REGISTER_SYNC_CANCEL, &r, 1) < 0 && errno == EINTR) {}
  }
  pthread_mutex_unlock(&rings_mu);
}

void strand_uring_prefork(strand_loop *loop, void (*take)(strand_io *io)) {
  if (loop->pstate == NULL || loop->forked || loop->closed) return;
  ur *u = (ur *)loop->pstate;
  if (u->fd < 0) return;
  u->forks = atomic_load_explicit(&ur_forks, memory_order_acquire);   /* (walked here, below) */
  int armed = 0;
  for (int i = 0; i < u->nslots; i++) {
    uslot *s = &u->slots[i];
    if (s->io == NULL || !s->fast) continue;
    s->nofast = 1;
    if (!s->rd) { s->rd = 1; u->throttles++; }
    if (s->recv_armed) {
      armed++;
      if (!s->rcancel) { s->rcancel = 1; cancel_op(u, i, OP_RECV); }
    }
  }
  for (int round = 0; round < 40 && armed > 0; round++) {
    wait_reap(u, 25000000);
    armed = 0;
    for (int i = 0; i < u->nslots; i++) if (u->slots[i].io && u->slots[i].recv_armed) armed++;
  }
  for (int i = 0; i < u->nslots; i++)
    if (u->slots[i].io && u->slots[i].fast && u->slots[i].qhead >= 0) take(u->slots[i].io);
}

/* Copies up to len queued bytes (taken by a multishot, not read yet) into buf: 0 when none. */
size_t strand_uring_take(strand_io *io, char *buf, size_t len) {
  ur *u = fast_ur(io);
  if (u == NULL) return 0;
  uslot *s = &u->slots[io->pollidx];
  size_t got = 0;
  while (s->qhead >= 0 && got < len) got += q_take(u, s, buf + got, len - got, 1);
  return got;
}

int strand_uring_send(lua_State *L, strand_io *io, int sidx, const char *p, size_t len, long *res,
                      uint32_t *seq) {
  ur *u = fast_ur(io);
  if (u == NULL) return -1;
  uslot *s = &u->slots[io->pollidx];
  if (!s->fast) return -1;
  unsigned want = (unsigned)(len > 0x7fffffff ? 0x7fffffff : len);
  if (*seq != 0) {
    /* our send was issued: one send at a time per socket, so unless it is the one in flight it
     * is done, whatever other sendalls (other tasks) sent since; all of it unless it came short */
    if (s->send_busy && s->sseq == *seq) return 1;
    int r;
    *res = sfail_take(u, io->pollidx, *seq, &r) ? r : (long)want;
    *seq = 0;
    return 2;
  }
  /* another task's send (or an abandoned one's): reaped if done, as a write after another task's
   * completed write goes on at once under epoll; still in flight, the socket is full: wait
   * (strand_wait_io raises "already writing" while its owner waits) */
  defer_fire(u, io->pollidx);          /* (a deferred writer resumes now: we take over) */
  if (s->send_busy && strand_uring_settle(io)) return 1;
  struct io_uring_sqe *e = get_sqe(u);
  e->opcode = IORING_OP_SEND;
  e->fd = io->fd;
  e->addr = (uint64_t)(uintptr_t)p;
  e->len = want;
  e->msg_flags = MSG_NOSIGNAL | MSG_WAITALL;
  put_sqe(u, io->pollidx, OP_SEND);
  s->send_busy = 1;
  s->slen = want;
  if (++s->sseq_next == 0) s->sseq_next = 1;
  s->sseq = *seq = s->sseq_next;
  /* the kernel reads it until the CQE: anchored in the loop's table by slot (a luaL_ref and
   * luaL_unref per send cost ~525 instructions per echo, this ~100) */
  if (u->anchors == LUA_NOREF) {
    lua_createtable(L, 64, 0);
    u->anchors = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, u->anchors);
  lua_pushvalue(L, sidx);
  lua_rawseti(L, -2, io->pollidx + 1);
  lua_pop(L, 1);
  s->anchored = 1;
  io->ready &= ~(unsigned)STRAND_WRITE;
  return 1;
}

/* A send in flight on io (another task's): submits what is queued and reaps what is done (the
 * completion makes io writable). 1 while it is still in flight (the socket is full). */
int strand_uring_settle(strand_io *io) {
  ur *u = fast_ur(io);
  if (u == NULL) return 0;
  defer_fire(u, io->pollidx);          /* its writer resumes now: another one wants the socket */
  if (!u->slots[io->pollidx].send_busy) return 0;
  fork_seen(u);
  int k = sys_enter(u->fd, u->to_submit, 0, IORING_ENTER_GETEVENTS, NULL, 0);
  if (k > 0) u->to_submit -= (unsigned)k;
  reap(u);
  return u->slots[io->pollidx].send_busy;
}

/* A send's waiter gave up (timeout): cancel its send and wait (bounded) for the CQE, which drops
 * the anchor and says how much of it the kernel took before the cancel (part of a string too big
 * for the socket buffer): those bytes are sent, as a send(2) that returned them. */
long strand_uring_send_abandon(strand_io *io, uint32_t seq, size_t len) {
  ur *u = fast_ur(io);
  if (u == NULL || seq == 0) return 0;
  uslot *s = &u->slots[io->pollidx];
  if (s->send_busy && s->sseq == seq) {
    cancel_op(u, io->pollidx, OP_SEND);
    for (int round = 0; round < 40 && s->send_busy && s->sseq == seq; round++) wait_reap(u, 25000000);
    if (s->send_busy && s->sseq == seq) return 0;   /* (not come in 1 s: counted as unsent) */
  }
  int r;
  if (!sfail_take(u, io->pollidx, seq, &r)) return (long)(len > 0x7fffffff ? 0x7fffffff : len);   /* done whole first */
  return r > 0 ? r : 0;
}

/* }==== */

const strand_poller strand_poller_uring = {
  "uring", ur_init, ur_add, ur_interest, ur_del, ur_wait, ur_free
};

/* core._uring.stats() -> table: the calling state's loop's provided-buffer pool (flow-control
 * specs): nbuf, free, min_free (low-water mark), throttles, enobufs, recv (how reads are armed),
 * pending_max, cq (the CQ's entries), busy, ring, armed (recvs in flight), deferred (send
 * completions whose writer resumed later) and deferred_merged (... with the socket's next bytes);
 * nil when the loop is not on io_uring. */
static int l_stats(lua_State *L) {
  strand_loop *loop = strand_loop_get(L);
  if (loop->poller != &strand_poller_uring || loop->pstate == NULL) { lua_pushnil(L); return 1; }
  ur *u = (ur *)loop->pstate;
  fork_seen(u);
  int k = sys_enter(u->fd, u->to_submit, 0, IORING_ENTER_GETEVENTS, NULL, 0);  /* run task work */
  if (k > 0) u->to_submit -= (unsigned)k;
  reap(u);                       /* counts what the kernel took so far (wake-ups as at a wait) */
  lua_createtable(L, 0, 18);
  lua_pushinteger(L, u->nbuf); lua_setfield(L, -2, "nbuf");
  lua_pushinteger(L, u->nfree); lua_setfield(L, -2, "free");
  lua_pushinteger(L, u->bufs ? u->min_free : 0); lua_setfield(L, -2, "min_free");
  lua_pushinteger(L, u->ngrp); lua_setfield(L, -2, "groups");
  lua_pushinteger(L, u->pool_tries); lua_setfield(L, -2, "pool_tries");
  lua_pushinteger(L, u->nfast); lua_setfield(L, -2, "fast");
  lua_pushinteger(L, (lua_Integer)u->throttles); lua_setfield(L, -2, "throttles");
  lua_pushinteger(L, (lua_Integer)u->enobufs); lua_setfield(L, -2, "enobufs");
  lua_pushstring(L, u->nolimit ? "single-shot" : u->limit_ok ? "multishot-limited" : "untried");
  lua_setfield(L, -2, "recv");
  lua_pushinteger(L, PENDING_MAX); lua_setfield(L, -2, "pending_max");
  lua_pushinteger(L, MSHOT_BYTES / BUFSZ); lua_setfield(L, -2, "mshot_bufs");
  lua_pushinteger(L, (lua_Integer)u->watches); lua_setfield(L, -2, "watches");
  lua_pushinteger(L, (lua_Integer)u->watch_hits); lua_setfield(L, -2, "watch_hits");
  lua_pushboolean(L, u->watch); lua_setfield(L, -2, "watch");
  lua_pushinteger(L, u->cq_entries); lua_setfield(L, -2, "cq");
  lua_pushinteger(L, (lua_Integer)u->busy); lua_setfield(L, -2, "busy");
  int ring = 0;
  for (int g = 0; g < u->ngrp; g++) ring += u->gfree[g];
  lua_pushinteger(L, ring); lua_setfield(L, -2, "ring");      /* free buffers in the rings */
  int armed = 0;
  for (int g = 0; g < u->ngrp; g++) armed += u->garmed[g];
  lua_pushinteger(L, armed); lua_setfield(L, -2, "armed");    /* recvs in flight */
  lua_pushinteger(L, (lua_Integer)u->deferred); lua_setfield(L, -2, "deferred");
  lua_pushinteger(L, (lua_Integer)u->merged); lua_setfield(L, -2, "deferred_merged");
  return 1;
}

int strand_open__uring(lua_State *L) {
  static const luaL_Reg fns[] = { { "stats", l_stats }, { NULL, NULL } };
  luaL_newlib(L, fns);
  return 1;
}
