/* echo_c_uring.c — bench/echo.sh's echo protocol served by plain C on io_uring (raw syscalls and
 * <linux/io_uring.h>, no liburing), in variants, to see what the kernel side of an echo costs.
 * Prints "PORT n" then serves until killed. One io_uring_enter (submit + wait) per loop turn.
 * usage: echo_c_uring [-t] [-r multi|single|poll] [-s sqe|sys] [-f FLAGS] [PORT [N]]
 *   N          exit once N connections closed (bench/echo_counts.sh; 0 or none: serve until killed)
 *   -t         only check that the kernel lets us (a ring, a provided-buffer ring): exit 0 or 1
 *   -r multi   one multishot recv per connection, buffers from a provided-buffer ring (default)
 *   -r single  one recv SQE per message (buffer from the ring), armed again once its echo is sent
 *   -r poll    one multishot POLL_ADD per connection (io_uring as the readiness poller only),
 *              recv(2) into one static buffer on each POLLIN completion; implies -s sys
 *   -s sqe     the echo is a SEND SQE (default); the buffer goes back to the ring at its CQE
 *   -s sys     the echo is a direct send(2) (MSG_DONTWAIT) at the recv CQE; a short send
 *              queues a SEND SQE for the rest
 *   -f FLAGS   letters: c IORING_SETUP_COOP_TASKRUN, s SINGLE_ISSUER, d DEFER_TASKRUN (+s),
 *              r registered ring fd (IORING_REGISTER_RING_FDS), p IORING_RECVSEND_POLL_FIRST
 *              on single recvs */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif
#ifndef IORING_ENTER_REGISTERED_RING
#define IORING_ENTER_REGISTERED_RING (1U << 4)
#endif

enum { OP_ACCEPT = 1, OP_RECV, OP_SEND, OP_POLL, OP_CANCEL };
#define UD(op, fd) (((uint64_t)(op) << 32) | (uint32_t)(fd))

#define SQ_ENTRIES 4096
#define CQ_ENTRIES 65536
#define NBUFS 16384            /* provided buffers (a power of two) */
#define BUFSZ 2048
#define BGID 1
#define MAXFD 65536

static void die(const char *what) {
  perror(what);
  exit(1);
}

/* ---- the ring ---- */
static int ring_fd, enter_fd;
static unsigned enter_flags;
static unsigned *sq_head, *sq_tail, sq_mask, *cq_head, *cq_tail, cq_mask;
static struct io_uring_sqe *sqes;
static struct io_uring_cqe *cqes;
static unsigned sq_local_tail, to_submit;

static int sys_setup(unsigned n, struct io_uring_params *p) {
  return (int)syscall(__NR_io_uring_setup, n, p);
}
static int sys_enter(unsigned submit, unsigned wait, unsigned flags) {
  return (int)syscall(__NR_io_uring_enter, enter_fd, submit, wait, flags | enter_flags, NULL, 0);
}
static int sys_register(unsigned op, void *arg, unsigned n) {
  return (int)syscall(__NR_io_uring_register, ring_fd, op, arg, n);
}

static void ring_init(unsigned setup_flags, int reg_ring) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = setup_flags | IORING_SETUP_CQSIZE;
  p.cq_entries = CQ_ENTRIES;
  ring_fd = enter_fd = sys_setup(SQ_ENTRIES, &p);
  if (ring_fd < 0) die("io_uring_setup");
  if (!(p.features & IORING_FEAT_SINGLE_MMAP) || !(p.features & IORING_FEAT_NODROP)) {
    fprintf(stderr, "io_uring: kernel too old\n");
    exit(1);
  }
  size_t sqsz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  size_t cqsz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  size_t rsz = sqsz > cqsz ? sqsz : cqsz;
  char *r = mmap(NULL, rsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring_fd, IORING_OFF_SQ_RING);
  if (r == MAP_FAILED) die("mmap ring");
  sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
              MAP_SHARED | MAP_POPULATE, ring_fd, IORING_OFF_SQES);
  if (sqes == MAP_FAILED) die("mmap sqes");
  sq_head = (unsigned *)(r + p.sq_off.head);
  sq_tail = (unsigned *)(r + p.sq_off.tail);
  sq_mask = *(unsigned *)(r + p.sq_off.ring_mask);
  unsigned *arr = (unsigned *)(r + p.sq_off.array);
  for (unsigned i = 0; i < p.sq_entries; i++) arr[i] = i;    /* identity: SQE i at slot i */
  cq_head = (unsigned *)(r + p.cq_off.head);
  cq_tail = (unsigned *)(r + p.cq_off.tail);
  cq_mask = *(unsigned *)(r + p.cq_off.ring_mask);
  cqes = (struct io_uring_cqe *)(r + p.cq_off.cqes);
  sq_local_tail = *sq_tail;
  if (reg_ring) {
    struct io_uring_rsrc_update u;
    memset(&u, 0, sizeof u);
    u.offset = (unsigned)-1;
    u.data = (uint64_t)ring_fd;
    if (sys_register(IORING_REGISTER_RING_FDS, &u, 1) != 1) die("IORING_REGISTER_RING_FDS");
    enter_fd = (int)u.offset;
    enter_flags = IORING_ENTER_REGISTERED_RING;
  }
}

/* Submits what is queued without waiting (the SQ is full). */
static void flush(void) {
  while (to_submit > 0) {
    int k = sys_enter(to_submit, 0, 0);
    if (k < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EBUSY) continue;
      die("io_uring_enter");
    }
    to_submit -= (unsigned)k;
  }
}

static struct io_uring_sqe *get_sqe(void) {
  if (sq_local_tail - __atomic_load_n(sq_head, __ATOMIC_ACQUIRE) >= SQ_ENTRIES) flush();
  struct io_uring_sqe *s = &sqes[sq_local_tail & sq_mask];
  memset(s, 0, sizeof *s);
  return s;
}
static void put_sqe(void) {
  sq_local_tail++;
  to_submit++;
  __atomic_store_n(sq_tail, sq_local_tail, __ATOMIC_RELEASE);
}

/* ---- provided buffers ---- */
static struct io_uring_buf_ring *br;
static char *bufs;
static unsigned short br_tail;

static void buf_put(unsigned bid) {
  struct io_uring_buf *b = &br->bufs[br_tail & (NBUFS - 1)];
  b->addr = (uint64_t)(uintptr_t)(bufs + (size_t)bid * BUFSZ);
  b->len = BUFSZ;
  b->bid = (unsigned short)bid;
  br_tail++;
  __atomic_store_n(&br->tail, br_tail, __ATOMIC_RELEASE);
}

static void bufs_init(void) {
  br = mmap(NULL, NBUFS * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  bufs = mmap(NULL, (size_t)NBUFS * BUFSZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (br == MAP_FAILED || bufs == MAP_FAILED) die("mmap buffers");
  struct io_uring_buf_reg reg;
  memset(&reg, 0, sizeof reg);
  reg.ring_addr = (uint64_t)(uintptr_t)br;
  reg.ring_entries = NBUFS;
  reg.bgid = BGID;
  if (sys_register(IORING_REGISTER_PBUF_RING, &reg, 1) != 0) die("IORING_REGISTER_PBUF_RING");
  br_tail = 0;
  for (unsigned i = 0; i < NBUFS; i++) buf_put(i);
}

/* ---- connections (indexed by fd) ---- */
typedef struct conn {
  int inflight;            /* SQEs of this fd not yet completed for good (multishot: until !F_MORE) */
  unsigned char recv_armed, sending, closing, starved;
  int qhead, qtail;        /* FIFO of received buffers waiting to be echoed (next_bid links) */
  unsigned soff;           /* bytes of the head buffer already sent */
} conn;
static conn *conns;
static int *next_bid;
static unsigned *len_bid;
static int starved_head = -1, *starved_next;   /* connections waiting for a free buffer */

enum { R_MULTI, R_SINGLE, R_POLL } rmode = R_MULTI;
enum { S_SQE, S_SYS } smode = S_SQE;
static int poll_first;

static void arm_recv(int fd) {
  conn *c = &conns[fd];
  struct io_uring_sqe *s = get_sqe();
  if (rmode == R_POLL) {
    s->opcode = IORING_OP_POLL_ADD;
    s->fd = fd;
    s->poll32_events = POLLIN;
    s->len = IORING_POLL_ADD_MULTI;
    s->user_data = UD(OP_POLL, fd);
  } else {
    s->opcode = IORING_OP_RECV;
    s->fd = fd;
    s->flags = IOSQE_BUFFER_SELECT;
    s->buf_group = BGID;
    s->ioprio = rmode == R_MULTI ? IORING_RECV_MULTISHOT : (poll_first ? IORING_RECVSEND_POLL_FIRST : 0);
    s->user_data = UD(OP_RECV, fd);
  }
  put_sqe();
  c->recv_armed = 1;
  c->inflight++;
}

static void queue_send(int fd, int bid, unsigned off, unsigned len) {
  struct io_uring_sqe *s = get_sqe();
  s->opcode = IORING_OP_SEND;
  s->fd = fd;
  s->addr = (uint64_t)(uintptr_t)(bufs + (size_t)bid * BUFSZ + off);
  s->len = len - off;
  s->msg_flags = MSG_NOSIGNAL;
  s->user_data = UD(OP_SEND, fd);
  put_sqe();
  conns[fd].sending = 1;
  conns[fd].inflight++;
}

static void cancel_recv(int fd) {
  struct io_uring_sqe *s = get_sqe();
  s->opcode = IORING_OP_ASYNC_CANCEL;
  s->fd = -1;
  s->addr = UD(rmode == R_POLL ? OP_POLL : OP_RECV, fd);
  s->user_data = UD(OP_CANCEL, fd);
  put_sqe();
  conns[fd].inflight++;
}

/* A buffer is free again: back to the ring, and a starved connection may recv again. */
static void buf_free(int bid) {
  buf_put((unsigned)bid);
  if (starved_head >= 0) {
    int fd = starved_head;
    starved_head = starved_next[fd];
    conns[fd].starved = 0;
    if (!conns[fd].closing) arm_recv(fd);
  }
}

static void drop_queue(conn *c) {
  while (c->qhead >= 0) {
    int b = c->qhead;
    c->qhead = next_bid[b];
    buf_free(b);
  }
  c->qtail = -1;
}

/* The connection ends: stop its recv, and close the fd once nothing of it is in flight (so no
 * late CQE can name a reused fd). */
static long closed_total, exit_after;

static void conn_close(int fd) {
  conn *c = &conns[fd];
  if (!c->closing) {
    c->closing = 1;
    if (c->recv_armed) cancel_recv(fd);
  }
  if (c->inflight == 0 && !c->sending) {
    if (c->starved) {                         /* rare: unlink it from the starved list */
      int *pp = &starved_head;
      while (*pp != fd) pp = &starved_next[*pp];
      *pp = starved_next[fd];
      c->starved = 0;
    }
    drop_queue(c);
    close(fd);
    if (++closed_total == exit_after) exit(0);
  }
}

/* Sends the head of fd's queue: by a SEND SQE, or directly (the rest of a short send by SQE). */
static void send_head(int fd) {
  conn *c = &conns[fd];
  while (c->qhead >= 0 && !c->sending && !c->closing) {
    int b = c->qhead;
    if (smode == S_SYS) {
      ssize_t w = send(fd, bufs + (size_t)b * BUFSZ + c->soff, len_bid[b] - c->soff, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && errno != EAGAIN) { conn_close(fd); return; }
      if (w > 0) c->soff += (unsigned)w;
      if (c->soff < len_bid[b]) { queue_send(fd, b, c->soff, len_bid[b]); return; }
      c->soff = 0;
      c->qhead = next_bid[b];
      if (c->qhead < 0) c->qtail = -1;
      buf_free(b);
      if (rmode == R_SINGLE && c->qhead < 0) arm_recv(fd);
    } else {
      queue_send(fd, b, c->soff, len_bid[b]);
    }
  }
}

static void on_recv(int fd, int res, unsigned flags) {
  conn *c = &conns[fd];
  int more = (flags & IORING_CQE_F_MORE) != 0;
  if (!more) { c->recv_armed = 0; c->inflight--; }
  if (res > 0) {
    int b = (int)(flags >> IORING_CQE_BUFFER_SHIFT);
    if (c->closing) { buf_free(b); conn_close(fd); return; }
    len_bid[b] = (unsigned)res;
    next_bid[b] = -1;
    if (c->qtail >= 0) next_bid[c->qtail] = b; else c->qhead = b;
    c->qtail = b;
    if (!more && rmode == R_MULTI) arm_recv(fd);
    if (!c->sending) send_head(fd);
    return;
  }
  if (res == -ENOBUFS && !c->closing) {       /* no free buffer: recv again when one is freed */
    if (!c->recv_armed && !c->starved) { c->starved = 1; starved_next[fd] = starved_head; starved_head = fd; }
    return;
  }
  conn_close(fd);                             /* EOF, error or cancelled */
}

static char pbuf[65536];

static void on_poll(int fd, int res, unsigned flags) {
  conn *c = &conns[fd];
  if (!(flags & IORING_CQE_F_MORE)) { c->recv_armed = 0; c->inflight--; }
  if (c->closing) { conn_close(fd); return; }
  if (res < 0) { conn_close(fd); return; }
  ssize_t r = recv(fd, pbuf, sizeof pbuf, MSG_DONTWAIT);
  if (r < 0 && (errno == EAGAIN || errno == EINTR)) goto rearm;
  if (r <= 0) { conn_close(fd); return; }
  for (size_t off = 0; off < (size_t)r;) {   /* small echoes fit the send buffer */
    ssize_t w = send(fd, pbuf + off, (size_t)r - off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) { conn_close(fd); return; }
    off += (size_t)w;
  }
rearm:
  if (!c->recv_armed) arm_recv(fd);
}

static void on_send(int fd, int res) {
  conn *c = &conns[fd];
  c->inflight--;
  c->sending = 0;
  int b = c->qhead;
  if (res < 0 || c->closing) { conn_close(fd); return; }
  c->soff += (unsigned)res;
  if (c->soff < len_bid[b]) { queue_send(fd, b, c->soff, len_bid[b]); return; }
  c->soff = 0;
  c->qhead = next_bid[b];
  if (c->qhead < 0) c->qtail = -1;
  buf_free(b);
  if (c->qhead >= 0) send_head(fd);
  else if (rmode == R_SINGLE) arm_recv(fd);
}

static void arm_accept(int lfd) {
  struct io_uring_sqe *s = get_sqe();
  s->opcode = IORING_OP_ACCEPT;
  s->fd = lfd;
  s->accept_flags = SOCK_CLOEXEC;
  s->ioprio = IORING_ACCEPT_MULTISHOT;
  s->user_data = UD(OP_ACCEPT, lfd);
  put_sqe();
}

static void on_accept(int lfd, int res, unsigned flags) {
  if (!(flags & IORING_CQE_F_MORE)) arm_accept(lfd);
  if (res < 0) return;
  if (res >= MAXFD) { close(res); return; }
  conn *c = &conns[res];
  memset(c, 0, sizeof *c);
  c->qhead = c->qtail = -1;
  arm_recv(res);
}

int main(int argc, char **argv) {
  unsigned setup = 0;
  int reg_ring = 0, check = 0, opt;
  while ((opt = getopt(argc, argv, "tr:s:f:")) != -1) {
    if (opt == 't') check = 1;
    else if (opt == 'r') rmode = !strcmp(optarg, "single") ? R_SINGLE : !strcmp(optarg, "poll") ? R_POLL : R_MULTI;
    else if (opt == 's') smode = !strcmp(optarg, "sys") ? S_SYS : S_SQE;
    else if (opt == 'f') {
      for (const char *f = optarg; *f; f++) {
        if (*f == 'c') setup |= IORING_SETUP_COOP_TASKRUN;
        else if (*f == 's') setup |= IORING_SETUP_SINGLE_ISSUER;
        else if (*f == 'd') setup |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
        else if (*f == 'r') reg_ring = 1;
        else if (*f == 'p') poll_first = 1;
      }
    } else {
      fprintf(stderr, "usage: echo_c_uring [-t] [-r multi|single|poll] [-s sqe|sys] [-f csdrp] [PORT [N]]\n");
      return 2;
    }
  }
  if (rmode == R_POLL) smode = S_SYS;
  if (check) {
    ring_init(IORING_SETUP_COOP_TASKRUN, 0);
    bufs_init();
    return 0;
  }
  signal(SIGPIPE, SIG_IGN);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("socket");
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)(optind < argc ? atoi(argv[optind]) : 0));
  if (optind + 1 < argc) exit_after = atol(argv[optind + 1]);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0) die("bind");
  if (listen(lfd, 4096) != 0) die("listen");
  socklen_t alen = sizeof a;
  getsockname(lfd, (struct sockaddr *)&a, &alen);

  conns = calloc(MAXFD, sizeof *conns);
  starved_next = calloc(MAXFD, sizeof *starved_next);
  next_bid = calloc(NBUFS, sizeof *next_bid);
  len_bid = calloc(NBUFS, sizeof *len_bid);
  if (!conns || !starved_next || !next_bid || !len_bid) die("calloc");
  ring_init(setup, reg_ring);
  if (rmode != R_POLL) bufs_init();
  arm_accept(lfd);
  printf("PORT %d\n", ntohs(a.sin_port));
  fflush(stdout);

  for (;;) {
    int k = sys_enter(to_submit, 1, IORING_ENTER_GETEVENTS);
    if (k < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EBUSY) continue;
      die("io_uring_enter");
    }
    to_submit -= (unsigned)k;
    unsigned head = *cq_head, tail = __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE);
    while (head != tail) {
      for (; head != tail; head++) {
        struct io_uring_cqe *e = &cqes[head & cq_mask];
        uint64_t ud = e->user_data;
        int fd = (int)(uint32_t)ud, res = e->res;
        unsigned flags = e->flags;
        switch ((int)(ud >> 32)) {
          case OP_ACCEPT: on_accept(fd, res, flags); break;
          case OP_RECV: on_recv(fd, res, flags); break;
          case OP_POLL: on_poll(fd, res, flags); break;
          case OP_SEND: on_send(fd, res); break;
          case OP_CANCEL: conns[fd].inflight--; conn_close(fd); break;
        }
      }
      __atomic_store_n(cq_head, head, __ATOMIC_RELEASE);
      tail = __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE);
    }
  }
}
