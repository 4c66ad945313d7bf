/* poller_poll.c — the portable readiness backend (STRAND_POLLER=poll): a pollfd array holding
 * only the directions somebody waits for; level-triggered, so interest follows the waiters. */
#include "strand.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>

typedef struct pl {
  struct pollfd *fds;
  strand_io **ios;
  size_t n, cap;
} pl;

static void *pl_init(strand_loop *loop) {
  return calloc(1, sizeof(pl));
}

static int pl_add(void *pv, strand_io *io) {
  pl *p = (pl *)pv;
  if (p->n == p->cap) {
    size_t cap = p->cap ? p->cap * 2 : 64;
    struct pollfd *f = (struct pollfd *)realloc(p->fds, cap * sizeof *f);
    if (f == NULL) return ENOMEM;
    p->fds = f;
    strand_io **s = (strand_io **)realloc(p->ios, cap * sizeof *s);
    if (s == NULL) return ENOMEM;
    p->ios = s;
    p->cap = cap;
  }
  p->fds[p->n].fd = -1;                  /* nobody waits yet: poll() skips negative fds */
  p->fds[p->n].events = 0;
  p->fds[p->n].revents = 0;
  p->ios[p->n] = io;
  io->pollidx = (int)p->n++;
  return 0;
}

static void pl_interest(void *pv, strand_io *io) {
  pl *p = (pl *)pv;
  if (io->pollidx < 0) return;
  short ev = 0;
  if (io->reader) ev |= POLLIN;
  if (io->writer) ev |= POLLOUT;
  p->fds[io->pollidx].events = ev;
  p->fds[io->pollidx].fd = ev ? io->fd : -1;
}

static void pl_del(void *pv, strand_io *io) {
  pl *p = (pl *)pv;
  size_t i = (size_t)io->pollidx;
  if (io->pollidx < 0 || i >= p->n) return;
  p->n--;
  if (i != p->n) {
    p->fds[i] = p->fds[p->n];
    p->ios[i] = p->ios[p->n];
    p->ios[i]->pollidx = (int)i;
  }
  io->pollidx = -1;
}

static int pl_wait(void *pv, double timeout) {
  pl *p = (pl *)pv;
  struct timespec ts;
  int n = ppoll(p->fds, (nfds_t)p->n, strand_wait_timespec(timeout, &ts), NULL);
  if (n < 0) return errno;
  for (size_t i = 0; i < p->n && n > 0; i++) {
    short r = p->fds[i].revents;
    if (r == 0) continue;
    p->fds[i].revents = 0;
    n--;
    unsigned ev = 0;
    if (r & (POLLIN | POLLHUP | POLLERR | POLLPRI | POLLNVAL)) ev |= STRAND_READ;
    if (r & (POLLOUT | POLLHUP | POLLERR | POLLNVAL)) ev |= STRAND_WRITE;
    strand_io_event(p->ios[i], ev);
  }
  return 0;
}

static void pl_free(void *pv) {
  pl *p = (pl *)pv;
  free(p->fds);
  free(p->ios);
  free(p);
}

const strand_poller strand_poller_poll = {
  "poll", pl_init, pl_add, pl_interest, pl_del, pl_wait, pl_free
};
