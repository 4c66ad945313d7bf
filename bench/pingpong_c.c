/* pingpong_c.c — the kernel's floor for a one-in-flight exchange between two processes (what a
 * strand process.pipe round trip is): a parent and its forked child pass an 8-byte message back
 * and forth over a pipe pair or a unix socketpair, each waiting for it in one of several ways
 * (docs/uring.md 4.7). Raw syscalls and <linux/io_uring.h>, no liburing.
 * usage: pingpong_c WAIT KIND N CPU_A CPU_B [FLAGS]
 *   WAIT  epoll   epoll_wait, then read(2)
 *         poll    io_uring POLL_ADD (one-shot, armed per wait), then read(2)
 *         read    io_uring READ (socketpair: RECV) of the message itself
 *         mpoll   io_uring multishot POLL_ADD armed once, then read(2)
 *         block   a blocking read(2) (no poller at all)
 *   KIND  pipe | unix
 *   CPU_A, CPU_B  the CPUs of the parent and the child (-1: not pinned)
 *   FLAGS letters: c COOP_TASKRUN, f TASKRUN_FLAG (+c), d SINGLE_ISSUER|DEFER_TASKRUN,
 *         t a timeout (10 s) with every wait (EXT_ARG), r registered ring fd,
 *         i IORING_ENTER_NO_IOWAIT (6.15+), s busy-poll up to SPIN us before sleeping
 *         (set SPIN in the environment; default 50), n the reply is written by an io_uring WRITE,
 *         o epoll waits for EPOLLIN|EPOLLOUT edge-triggered (as strand's epoll poller)
 * env: WORK=us each side computes that long between a message in and its next message out (a
 *      strand process runs Lua between them: ~10 us); SPIN=us (flag s)
 * Prints: wall us per round trip, then the CPU (user+sys) us per round trip of parent and child,
 * and how often the child replied from the CPU the parent then ran on (the scheduler put both
 * on one CPU: wake-affine). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif
#ifndef IORING_ENTER_REGISTERED_RING
#define IORING_ENTER_REGISTERED_RING (1U << 4)
#endif
#define ENTER_NO_IOWAIT (1U << 7)          /* IORING_ENTER_NO_IOWAIT (6.15) */
#define FEAT_NO_IOWAIT (1U << 17)          /* IORING_FEAT_NO_IOWAIT */
#ifndef IORING_SQ_TASKRUN
#define IORING_SQ_TASKRUN (1U << 1)
#endif
#ifndef IORING_POLL_ADD_MULTI
#define IORING_POLL_ADD_MULTI (1U << 0)
#endif

static void die(const char *what) { perror(what); exit(2); }

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_us(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static void pin(int cpu) {
  if (cpu < 0) return;
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  if (sched_setaffinity(0, sizeof s, &s) != 0) die("sched_setaffinity");
}

static const char *flags = "";
static int has(char c) { return strchr(flags, c) != NULL; }
static int spin_us = 50;
static int work_us = 0;          /* WORK: each side computes this long between a message in and out */

static void work(void) {
  if (work_us <= 0) return;
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  do clock_gettime(CLOCK_MONOTONIC, &b);
  while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < work_us * 1000L);
}

/* {==== a ring */
typedef struct {
  int fd, efd;                   /* efd: the fd io_uring_enter gets (the registered index) */
  unsigned eflags;
  unsigned *sq_tail, *sq_flags, sq_mask, *cq_head, *cq_tail, cq_mask, tail;
  struct io_uring_sqe *sqes;
  struct io_uring_cqe *cqes;
  int mpoll_armed;
} ring;

static void ring_init(ring *r) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  if (has('c')) p.flags |= IORING_SETUP_COOP_TASKRUN;
  if (has('f')) p.flags |= IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
  if (has('d')) p.flags |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  r->fd = (int)syscall(__NR_io_uring_setup, 64, &p);
  if (r->fd < 0) die("io_uring_setup");
  if (has('i') && !(p.features & FEAT_NO_IOWAIT)) { fprintf(stderr, "no IORING_FEAT_NO_IOWAIT\n"); exit(3); }
  size_t sqsz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  size_t cqsz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  size_t len = sqsz > cqsz ? sqsz : cqsz;
  char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
  r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
  if (m == MAP_FAILED || r->sqes == MAP_FAILED) die("mmap");
  r->sq_tail = (unsigned *)(m + p.sq_off.tail);
  r->sq_flags = (unsigned *)(m + p.sq_off.flags);
  r->sq_mask = *(unsigned *)(m + p.sq_off.ring_mask);
  unsigned *arr = (unsigned *)(m + p.sq_off.array);
  for (unsigned i = 0; i < p.sq_entries; i++) arr[i] = i;
  r->cq_head = (unsigned *)(m + p.cq_off.head);
  r->cq_tail = (unsigned *)(m + p.cq_off.tail);
  r->cq_mask = *(unsigned *)(m + p.cq_off.ring_mask);
  r->cqes = (struct io_uring_cqe *)(m + p.cq_off.cqes);
  r->tail = *r->sq_tail;
  r->efd = r->fd;
  r->eflags = has('i') ? ENTER_NO_IOWAIT : 0;
  if (has('r')) {
    struct io_uring_rsrc_update up;
    memset(&up, 0, sizeof up);
    up.offset = -1U;
    up.data = (uint64_t)r->fd;
    if (syscall(__NR_io_uring_register, r->fd, 20 /* IORING_REGISTER_RING_FDS */, &up, 1) != 1) die("register ring fd");
    r->efd = (int)up.offset;
    r->eflags |= IORING_ENTER_REGISTERED_RING;
  }
}

static struct io_uring_sqe *sqe(ring *r) {
  struct io_uring_sqe *s = &r->sqes[r->tail & r->sq_mask];
  memset(s, 0, sizeof *s);
  return s;
}

static void push(ring *r) {
  r->tail++;
  __atomic_store_n(r->sq_tail, r->tail, __ATOMIC_RELEASE);
}

static int enter(ring *r, unsigned submit, unsigned wait) {
  unsigned fl = r->eflags | (wait || has('d') ? IORING_ENTER_GETEVENTS : 0);
  struct __kernel_timespec ts = { 10, 0 };
  struct io_uring_getevents_arg arg;
  memset(&arg, 0, sizeof arg);
  void *ap = NULL;
  size_t as = 0;
  if (has('t') && wait) { arg.ts = (uint64_t)(uintptr_t)&ts; fl |= IORING_ENTER_EXT_ARG; ap = &arg; as = sizeof arg; }
  for (;;) {
    int k = (int)syscall(__NR_io_uring_enter, r->efd, submit, wait, fl, ap, as);
    if (k >= 0 || errno != EINTR) return k;
  }
}

/* one CQE: its res (busy-polls first with 's') */
static int cqe_wait(ring *r, unsigned submit) {
  if (has('s')) {
    if (submit) { enter(r, submit, 0); submit = 0; }
    double end = now() + spin_us * 1e-6;
    while (*r->cq_head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE) && now() < end) {
      /* task work runs only at a syscall (COOP) unless the kernel interrupts us; with the flag,
       * a syscall only when the kernel says it has some */
      if (has('f')) {
        if (__atomic_load_n(r->sq_flags, __ATOMIC_ACQUIRE) & IORING_SQ_TASKRUN) enter(r, 0, 0);
      } else if (has('c') || has('d')) enter(r, 0, 0);
    }
  }
  while (*r->cq_head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE) || submit) {
    if (enter(r, submit, 1) < 0 && errno != ETIME) die("io_uring_enter");
    submit = 0;
  }
  unsigned h = *r->cq_head;
  int res = r->cqes[h & r->cq_mask].res;
  __atomic_store_n(r->cq_head, h + 1, __ATOMIC_RELEASE);
  return res;
}
/* }==== */

typedef struct {
  const char *wait;
  int kind_unix;
  int rfd, wfd;
  int ep;
  ring r;
} side;

static int ioctl_nonblock(int fd, int on) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return -1;
  return fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

static void side_init(side *s) {
  if (!strcmp(s->wait, "epoll")) {
    s->ep = epoll_create1(EPOLL_CLOEXEC);
    /* o: as strand's epoll poller registers a socket, both directions, edge-triggered (a
     * unix socket's writer is woken when its peer reads: a second, early wake-up) */
    struct epoll_event ev = { .events = has('o') ? EPOLLIN | EPOLLOUT | EPOLLET : EPOLLIN, .data.fd = s->rfd };
    if (s->ep < 0 || epoll_ctl(s->ep, EPOLL_CTL_ADD, s->rfd, &ev) != 0) die("epoll");
  } else if (strcmp(s->wait, "block") != 0) {
    ring_init(&s->r);
  }
  if (strcmp(s->wait, "block") != 0) {
    int fl = 1;
    if (ioctl_nonblock(s->rfd, fl) != 0) die("nonblock");
  }
}

static ssize_t rd(int fd, void *b, size_t n) {
  for (;;) {
    ssize_t k = read(fd, b, n);
    if (k >= 0 || errno != EINTR) return k;
  }
}

/* one message in: waits as s->wait says */
static void get(side *s, char *buf) {
  const char *w = s->wait;
  if (!strcmp(w, "block")) { if (rd(s->rfd, buf, 8) != 8) die("read"); return; }
  if (!strcmp(w, "epoll")) {
    for (;;) {
      ssize_t k = rd(s->rfd, buf, 8);
      if (k == 8) return;
      if (k >= 0 || errno != EAGAIN) die("read");
      if (has('s')) {
        double end = now() + spin_us * 1e-6;
        struct epoll_event ev;
        int n = 0;
        while (now() < end && (n = epoll_wait(s->ep, &ev, 1, 0)) == 0) {}
        if (n > 0) continue;
      }
      struct epoll_event ev;
      if (epoll_wait(s->ep, &ev, 1, has('t') ? 10000 : -1) < 0 && errno != EINTR) die("epoll_wait");
    }
  }
  if (!strcmp(w, "read")) {
    struct io_uring_sqe *e = sqe(&s->r);
    e->opcode = s->kind_unix ? IORING_OP_RECV : IORING_OP_READ;
    e->fd = s->rfd;
    e->addr = (uint64_t)(uintptr_t)buf;
    e->len = 8;
    if (!s->kind_unix) e->off = (uint64_t)-1;
    push(&s->r);
    int res = cqe_wait(&s->r, 1);
    if (res != 8) { fprintf(stderr, "read res %d\n", res); exit(2); }
    return;
  }
  /* poll / mpoll: readiness from the ring, then read(2) */
  for (;;) {
    ssize_t k = rd(s->rfd, buf, 8);
    if (k == 8) return;
    if (k >= 0 || errno != EAGAIN) die("read");
    unsigned submit = 0;
    if (!strcmp(w, "poll") || !s->r.mpoll_armed) {
      struct io_uring_sqe *e = sqe(&s->r);
      e->opcode = IORING_OP_POLL_ADD;
      e->fd = s->rfd;
      e->poll32_events = POLLIN;
      if (!strcmp(w, "mpoll")) { e->len = IORING_POLL_ADD_MULTI; s->r.mpoll_armed = 1; }
      push(&s->r);
      submit = 1;
    }
    int res = cqe_wait(&s->r, submit);
    if (res < 0) { fprintf(stderr, "poll res %d\n", res); exit(2); }
    if (!strcmp(w, "mpoll") && !(s->r.cqes[(*s->r.cq_head - 1) & s->r.cq_mask].flags & IORING_CQE_F_MORE))
      s->r.mpoll_armed = 0;
  }
}

static void put(side *s, const char *buf) {
  if (has('n') && strcmp(s->wait, "epoll") && strcmp(s->wait, "block")) {
    struct io_uring_sqe *e = sqe(&s->r);
    e->opcode = s->kind_unix ? IORING_OP_SEND : IORING_OP_WRITE;
    e->fd = s->wfd;
    e->addr = (uint64_t)(uintptr_t)buf;
    e->len = 8;
    if (!s->kind_unix) e->off = (uint64_t)-1;
    push(&s->r);
    if (cqe_wait(&s->r, 1) != 8) die("ring write");
    return;
  }
  for (;;) {
    ssize_t k = write(s->wfd, buf, 8);
    if (k == 8) return;
    if (k < 0 && errno == EINTR) continue;
    die("write");
  }
}


int main(int argc, char **argv) {
  if (argc < 6) { fprintf(stderr, "usage: pingpong_c WAIT pipe|unix N CPU_A CPU_B [FLAGS]\n"); return 2; }
  const char *wait = argv[1];
  int kind_unix = !strcmp(argv[2], "unix");
  long n = atol(argv[3]);
  int ca = atoi(argv[4]), cb = atoi(argv[5]);
  if (argc > 6) flags = argv[6];
  const char *sp = getenv("SPIN");
  if (sp) spin_us = atoi(sp);
  const char *wk = getenv("WORK");
  if (wk) work_us = atoi(wk);
  int a2b[2], b2a[2];            /* [0] read end, [1] write end */
  if (kind_unix) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
    a2b[0] = sv[1]; a2b[1] = sv[0]; b2a[0] = sv[0]; b2a[1] = sv[1];
  } else if (pipe2(a2b, O_CLOEXEC) != 0 || pipe2(b2a, O_CLOEXEC) != 0) die("pipe2");
  int cpipe[2];                  /* the child's CPU time back to the parent */
  if (pipe(cpipe) != 0) die("pipe");
  pid_t pid = fork();
  if (pid < 0) die("fork");
  char buf[8] = "ping1234";
  if (pid == 0) {
    pin(cb);
    side s = { .wait = wait, .kind_unix = kind_unix, .rfd = a2b[0], .wfd = b2a[1] };
    side_init(&s);
    double c0 = cpu_us();
    for (long i = 0; i < n + 100; i++) {
      get(&s, buf);
      work();
      buf[0] = (char)sched_getcpu();     /* the reply says where the child ran */
      put(&s, buf);
      if (i == 99) c0 = cpu_us();
    }
    double c = (cpu_us() - c0) / (double)n;
    if (write(cpipe[1], &c, sizeof c) != sizeof c) _exit(2);
    _exit(0);
  }
  pin(ca);
  side s = { .wait = wait, .kind_unix = kind_unix, .rfd = b2a[0], .wfd = a2b[1] };
  side_init(&s);
  for (int i = 0; i < 100; i++) { put(&s, buf); get(&s, buf); }   /* warm up */
  double c0 = cpu_us(), t0 = now();
  long same = 0;
  for (long i = 0; i < n; i++) {
    put(&s, buf);
    get(&s, buf);
    same += buf[0] == (char)sched_getcpu();
    work();
  }
  double wall = (now() - t0) / (double)n * 1e6, pc = (cpu_us() - c0) / (double)n;
  double cc = 0;
  if (rd(cpipe[0], &cc, sizeof cc) != sizeof cc) die("child cpu");
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
  printf("%-6s %-4s %-6s wall %7.2f us  cpu parent %6.2f child %6.2f us per round trip, same CPU %3.0f%%\n",
         wait, argv[2], *flags ? flags : "-", wall, pc, cc, 100.0 * (double)same / (double)n);
  return 0;
}
