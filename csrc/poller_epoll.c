/* poller_epoll.c — the default readiness backend: every fd registered once, edge-triggered,
 * for both directions; no epoll_ctl per wait. Timeouts with nanosecond resolution. */
#include "strand.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#define MAXEVENTS 256

typedef struct ep {
  int fd;
  int no_pwait2;                 /* the kernel lacks epoll_pwait2: fall back to ms timeouts */
  struct epoll_event events[MAXEVENTS];
} ep;

/* the kernel's answer, once for the process (every loop would ask again: a thread's, a forked
 * child's; valgrind 3.19, which lacks the call, warns at each) */
static int lacks_pwait2;

static void *ep_init(strand_loop *loop) {
  ep *p = (ep *)calloc(1, sizeof *p);
  if (p == NULL) return NULL;
  p->no_pwait2 = __atomic_load_n(&lacks_pwait2, __ATOMIC_RELAXED);
  p->fd = epoll_create1(EPOLL_CLOEXEC);
  if (p->fd < 0) { int e = errno; free(p); errno = e; return NULL; }
  return p;
}

static int ep_add(void *pv, strand_io *io) {
  ep *p = (ep *)pv;
  struct epoll_event ev;
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  if (io->read_only) ev.events &= ~(uint32_t)EPOLLOUT;
  ev.data.ptr = io;
  if (epoll_ctl(p->fd, EPOLL_CTL_ADD, io->fd, &ev) == 0) return 0;
  if (errno == EEXIST && epoll_ctl(p->fd, EPOLL_CTL_MOD, io->fd, &ev) == 0) return 0;
  return errno;
}

static void ep_del(void *pv, strand_io *io) {
  ep *p = (ep *)pv;
  struct epoll_event ev = {0};
  (void)epoll_ctl(p->fd, EPOLL_CTL_DEL, io->fd, &ev);   /* ENOENT/EBADF: already gone */
}

static int ep_wait(void *pv, double timeout) {
  ep *p = (ep *)pv;
  int n = 0;
  if (!p->no_pwait2) {
    struct timespec ts;
    n = epoll_pwait2(p->fd, p->events, MAXEVENTS, strand_wait_timespec(timeout, &ts), NULL);
    if (n < 0 && errno == ENOSYS) {
      p->no_pwait2 = 1;
      __atomic_store_n(&lacks_pwait2, 1, __ATOMIC_RELAXED);
    }
  }
  if (p->no_pwait2) {
    int ms = timeout < 0 ? -1 : (int)(timeout * 1000.0 + 0.999);
    n = epoll_wait(p->fd, p->events, MAXEVENTS, ms);
  }
  if (n < 0) return errno;
  for (int i = 0; i < n; i++) {
    uint32_t e = p->events[i].events;
    unsigned ev = 0;
    if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI)) ev |= STRAND_READ;
    if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) ev |= STRAND_WRITE;
    if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) ev |= STRAND_HUP;
    strand_io_event((strand_io *)p->events[i].data.ptr, ev);
  }
  return 0;
}

static void ep_free(void *pv) {
  ep *p = (ep *)pv;
  close(p->fd);
  free(p);
}

/* In a forked child: the parent's epoll instance is let go (its fd closed), the state is not
 * freed (loop.c keeps it: a free would write pages shared with the parent). */
void strand_epoll_forked(void *pv) {
  close(((ep *)pv)->fd);
}

const strand_poller strand_poller_epoll = {
  "epoll", ep_init, ep_add, NULL, ep_del, ep_wait, ep_free
};
