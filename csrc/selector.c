/* selector.c — selectors (Python's selectors API over epoll, poll and select backends) and
 * strand.select (select.select): readiness sets whose waits are one fd of the strand loop. */
#include "strand.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <unistd.h>

/* How a select waits without blocking the loop.
 *
 * Every selector owns one epoll fd that the loop watches like a socket (a strand_io):
 * - epoll backend: that fd is the real, level-triggered set (as Python's EpollSelector), so
 *   it is readable exactly when something registered is ready.
 * - poll and select backends: it is a private, edge-triggered mirror of the registrations,
 *   built at the first wait and used only to wake up. The answer always comes from poll() or
 *   select() with timeout 0, so callers see the backend's own semantics (and its limits).
 * sel:select(t) checks with timeout 0; if nothing is ready it waits for the epoll fd to be
 * readable (a task yields, the main chunk drives the loop) and checks again. Before waiting
 * on a mirror, stale edges are drained and the check is repeated: an edge that arrives after
 * the drain always wakes the wait, one that arrived before it is seen by the check.
 * strand.select builds the same kind of mirror for one call, only if it has to wait.
 *
 * With selector.EDGE in the events (epoll backend only) a registration is edge-triggered, as
 * select.epoll with EPOLLET: reported once per change, so the caller reads until "wouldblock".
 *
 * Buffered data counts as ready for reading: a Lua file with unread bytes in its stdio
 * buffer (glibc), or an object whose :pending() returns > 0 (strand sockets) or whose
 * :dirty() returns true (LuaSocket). */

#define SEL_META   "strand.selector"
#define SCALL_META "strand.select_call"

/* per-fd flags */
#define SEL_READ     STRAND_READ
#define SEL_WRITE    STRAND_WRITE
#define SEL_EVENTS   (SEL_READ | SEL_WRITE)
#define SEL_STDIO    4      /* a Lua file: look at its stdio buffer */
#define SEL_PENDING  8      /* obj:pending() > 0 means buffered bytes */
#define SEL_DIRTY    16     /* obj:dirty() true means buffered bytes */
#define SEL_BUFFERED (SEL_STDIO | SEL_PENDING | SEL_DIRTY)
#define SEL_HIT      32     /* scratch mark during one check: buffered data seen */
#define SEL_EXCEPT   64     /* strand.select's xlist: priority data (EPOLLPRI) */
#define SEL_EDGE     128    /* epoll backend: edge-triggered registration (EPOLLET) */

#define EVENT_EDGE   4      /* selector.EDGE in the events argument */

/* uservalues of a selector */
#define UV_BYFD  1          /* fd -> key table */
#define UV_BYOBJ 2          /* registered object (not an integer) -> fd */

enum { B_EPOLL, B_POLL, B_SELECT };
static const char *const backend_names[] = { "epoll", "poll", "select", NULL };

typedef struct selector {
  int backend;
  int closed;
  int epfd;                   /* the real set (epoll) or the wake-up mirror; -1: none */
  strand_io io;               /* epfd as watched by the loop */
  int n, cap;                 /* registrations, capacity of the dense arrays */
  int *fds;                   /* dense: registered fds */
  struct pollfd *pfds;        /* poll backend: parallel to fds */
  struct epoll_event *evs;    /* epoll_wait buffer, cap entries */
  int *out;                   /* result of a check: fd, mask pairs (2 * cap) */
  int fdcap;                  /* size of the by-fd arrays */
  int *slot;                  /* by fd: 1 + index in fds, 0 = not registered */
  unsigned char *flags;       /* by fd: SEL_* */
  int nbuffered;              /* registrations with SEL_BUFFERED flags */
  fd_set rset, wset;          /* select backend */
  int maxfd;                  /* select backend: highest registered fd, -1 none */
} selector;

/* {==== objects -> fds */

static int obj_error(lua_State *L, int arg, lua_Integer elem, const char *msg) {
  if (elem > 0) msg = lua_pushfstring(L, "element %I: %s", (LUAI_UACINT)elem, msg);
  return luaL_argerror(L, arg, msg);
}

/* Pushes obj[name] and returns 1 if it is a function; pushes nothing and returns 0 if not. */
static int get_method(lua_State *L, int idx, const char *name) {
  int t = lua_type(L, idx);
  if (t == LUA_TUSERDATA) {
    if (luaL_getmetafield(L, idx, "__index") == LUA_TNIL) return 0;
    lua_pop(L, 1);
  } else if (t != LUA_TTABLE) {
    return 0;
  }
  if (lua_getfield(L, idx, name) == LUA_TFUNCTION) return 1;
  lua_pop(L, 1);
  return 0;
}

/* The fd of the object at idx: an integer fd, a Lua file, or an object with :fileno(),
 * :pollfd() (cqueues) or :getfd() (LuaSocket). *buffered (when not NULL) gets the SEL_BUFFERED
 * flags that apply. Raises an argument error naming arg (and list element elem if > 0). */
static int obj_fd(lua_State *L, int idx, int arg, lua_Integer elem, unsigned *buffered) {
  static const char *const fdmethods[] = { "fileno", "pollfd", "getfd", NULL };
  lua_Integer fd;
  int isint;
  idx = lua_absindex(L, idx);
  if (buffered) *buffered = 0;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    fd = lua_tointegerx(L, idx, &isint);
    if (!isint) return obj_error(L, arg, elem, "file descriptor must be an integer");
  } else if (luaL_testudata(L, idx, LUA_FILEHANDLE)) {
    luaL_Stream *p = (luaL_Stream *)lua_touserdata(L, idx);
    if (p->closef == NULL) return obj_error(L, arg, elem, "attempt to use a closed file");
    fd = fileno(p->f);
    if (buffered) *buffered = SEL_STDIO;
  } else {
    const char *const *m;
    for (m = fdmethods; *m; m++)
      if (get_method(L, idx, *m)) break;
    if (*m == NULL)
      return obj_error(L, arg, elem, lua_pushfstring(L,
        "file descriptor, file or object with a fileno method expected, got %s",
        luaL_typename(L, idx)));
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);                              /* the method's result */
    fd = lua_tointegerx(L, -1, &isint);
    if (!isint) fd = -1;
    if (fd < 0)
      return obj_error(L, arg, elem, lua_pushfstring(L, "invalid file descriptor: %s (from %s)",
                                                      luaL_tolstring(L, -1, NULL), *m));
    lua_pop(L, 1);
    if (buffered) {
      if (get_method(L, idx, "pending")) { *buffered = SEL_PENDING; lua_pop(L, 1); }
      else if (get_method(L, idx, "dirty")) { *buffered = SEL_DIRTY; lua_pop(L, 1); }
    }
  }
  if (fd < 0 || fd > INT_MAX)
    return obj_error(L, arg, elem, lua_pushfstring(L, "invalid file descriptor: %I",
                                                    (LUAI_UACINT)fd));
  return (int)fd;
}

static int stdio_pending(FILE *f) {
#if defined(__GLIBC__)
  return f->_IO_read_ptr < f->_IO_read_end;
#else
  (void)f;
  return 0;
#endif
}

/* Does the object at idx hold buffered unread data? (May call its pending()/dirty().) An
 * object closed while registered raises there ("attempt to use a closed socket"): it counts
 * as holding nothing, and the kernel's view of its fd decides (see sel_check_kernel). Any other
 * error goes on (Ctrl-C's "interrupted!" is raised by a call hook right there). */
static int obj_buffered(lua_State *L, int idx, unsigned flags) {
  idx = lua_absindex(L, idx);
  if (flags & SEL_STDIO) {
    luaL_Stream *p = (luaL_Stream *)luaL_testudata(L, idx, LUA_FILEHANDLE);
    return p && p->closef && stdio_pending(p->f);
  }
  if (!get_method(L, idx, (flags & SEL_PENDING) ? "pending" : "dirty")) return 0;
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (msg == NULL || strstr(msg, "attempt to use a closed") == NULL) lua_error(L);
    lua_pop(L, 1);
    return 0;
  }
  int ready;
  if (lua_type(L, -1) == LUA_TNUMBER) ready = lua_tonumber(L, -1) > 0;
  else ready = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return ready;
}

/* }==== */

/* {==== epoll helpers */

/* Only EPOLLIN/EPOLLOUT (as Python): the kernel then reports nothing else but ERR and HUP. */
static uint32_t epoll_mask(unsigned flags) {
  uint32_t e = (flags & SEL_EDGE) ? EPOLLET : 0;
  if (flags & SEL_READ) e |= EPOLLIN;
  if (flags & SEL_WRITE) e |= EPOLLOUT;
  if (flags & SEL_EXCEPT) e |= EPOLLPRI;
  return e;
}

/* epoll_ctl for fd with the interest of flags: 0 or errno. */
static int ep_ctl(int ep, int op, int fd, unsigned flags, uint32_t extra) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = epoll_mask(flags) | extra;
  ev.data.fd = fd;
  return epoll_ctl(ep, op, fd, &ev) == 0 ? 0 : errno;
}

/* A mirror may not watch every fd: regular files (EPERM) are always ready, closed fds
 * (EBADF) are reported by poll()/select() themselves; neither ever needs a wake-up. */
static int mirror_ignorable(int err) { return err == EPERM || err == EBADF || err == ENOENT; }

/* Consume the mirror's pending edges (timeout 0). Raises on failure. */
static void mirror_drain(lua_State *L, int ep) {
  struct epoll_event evs[64];
  int n;
  do {
    n = epoll_wait(ep, evs, 64, 0);
  } while (n == 64 || (n < 0 && errno == EINTR));
  if (n < 0) luaL_error(L, "select: epoll_wait failed: %s", strerror(errno));
}

/* Before waiting on an existing mirror: the first time (*drained 0) its stale edges are drained
 * and 1 says to check again; the next time 0 says to wait (and *drained is reset for the
 * wait's retry). An edge that arrives after the drain wakes the wait; one that came before it
 * is seen by the check. */
static int mirror_recheck(lua_State *L, int ep, int *drained) {
  if (*drained) {
    *drained = 0;
    return 0;
  }
  mirror_drain(L, ep);
  *drained = 1;
  return 1;
}

/* }==== */

/* {==== selector state (no Lua inside, except raising on memory) */

static selector *sel_check(lua_State *L, int idx) {
  selector *s = (selector *)luaL_checkudata(L, idx, SEL_META);
  if (s->closed) luaL_error(L, "attempt to use a closed selector");
  return s;
}

static int grow(void **p, size_t elem, int oldn, int newn) {
  void *q = realloc(*p, elem * (size_t)newn);
  if (q == NULL) return ENOMEM;
  memset((char *)q + elem * (size_t)oldn, 0, elem * (size_t)(newn - oldn));
  *p = q;
  return 0;
}

/* Room for one more registration and for fd in the by-fd arrays. */
static void sel_reserve(lua_State *L, selector *s, int fd) {
  if (fd >= s->fdcap) {
    int cap = s->fdcap ? s->fdcap : 64;
    while (cap <= fd) cap = cap > INT_MAX / 2 ? INT_MAX : cap * 2;
    if (grow((void **)&s->slot, sizeof *s->slot, s->fdcap, cap) ||
        grow((void **)&s->flags, sizeof *s->flags, s->fdcap, cap))
      luaL_error(L, "selector: out of memory");
    s->fdcap = cap;
  }
  if (s->n == s->cap) {
    int cap = s->cap ? s->cap * 2 : 16;
    if (grow((void **)&s->fds, sizeof *s->fds, s->cap, cap) ||
        grow((void **)&s->out, 2 * sizeof *s->out, s->cap, cap) ||
        (s->backend == B_POLL && grow((void **)&s->pfds, sizeof *s->pfds, s->cap, cap)) ||
        (s->backend == B_EPOLL && grow((void **)&s->evs, sizeof *s->evs, s->cap, cap)))
      luaL_error(L, "selector: out of memory");
    s->cap = cap;
  }
}

static short poll_mask(unsigned flags) {
  return (short)(((flags & SEL_READ) ? POLLIN : 0) | ((flags & SEL_WRITE) ? POLLOUT : 0));
}

/* Record fd with flags in the user-space sets (room reserved before). */
static void sel_add(selector *s, int fd, unsigned flags) {
  int i = s->n++;
  s->fds[i] = fd;
  s->slot[fd] = i + 1;
  s->flags[fd] = (unsigned char)flags;
  if (flags & SEL_BUFFERED) s->nbuffered++;
  if (s->backend == B_POLL) {
    s->pfds[i].fd = fd;
    s->pfds[i].events = poll_mask(flags);
    s->pfds[i].revents = 0;
  } else if (s->backend == B_SELECT) {
    if (flags & SEL_READ) FD_SET(fd, &s->rset);
    if (flags & SEL_WRITE) FD_SET(fd, &s->wset);
    if (fd > s->maxfd) s->maxfd = fd;
  }
}

static void sel_set_events(selector *s, int fd, unsigned events) {
  unsigned flags = (s->flags[fd] & ~(unsigned)(SEL_EVENTS | SEL_EDGE)) | events;
  s->flags[fd] = (unsigned char)flags;
  if (s->backend == B_POLL) {
    s->pfds[s->slot[fd] - 1].events = poll_mask(flags);
  } else if (s->backend == B_SELECT) {
    FD_CLR(fd, &s->rset);
    FD_CLR(fd, &s->wset);
    if (flags & SEL_READ) FD_SET(fd, &s->rset);
    if (flags & SEL_WRITE) FD_SET(fd, &s->wset);
  }
}

static void sel_remove(selector *s, int fd) {
  int i = s->slot[fd] - 1, last = s->n - 1;
  if (s->flags[fd] & SEL_BUFFERED) s->nbuffered--;
  if (i != last) {
    s->fds[i] = s->fds[last];
    s->slot[s->fds[i]] = i + 1;
    if (s->backend == B_POLL) s->pfds[i] = s->pfds[last];
  }
  s->n--;
  s->slot[fd] = 0;
  s->flags[fd] = 0;
  if (s->backend == B_SELECT) {
    FD_CLR(fd, &s->rset);
    FD_CLR(fd, &s->wset);
    if (fd == s->maxfd) {
      s->maxfd = -1;
      for (int j = 0; j < s->n; j++)
        if (s->fds[j] > s->maxfd) s->maxfd = s->fds[j];
    }
  }
}

static void sel_release(selector *s) {
  free(s->fds); free(s->pfds); free(s->evs); free(s->out); free(s->slot); free(s->flags);
  s->fds = NULL; s->pfds = NULL; s->evs = NULL; s->out = NULL; s->slot = NULL; s->flags = NULL;
  s->n = s->cap = s->fdcap = s->nbuffered = 0;
}

/* }==== */

/* {==== checking readiness */

/* Python's mapping: any event but "in" makes WRITE, any but "out" makes READ (so errors and
 * hang-ups wake both directions), then masked by the registered events. */
static unsigned ready_mask(unsigned flags, int in, int out, int other) {
  unsigned m = 0;
  if (in || other) m |= SEL_READ;
  if (out || other) m |= SEL_WRITE;
  return m & flags & SEL_EVENTS;
}

static void key_field(lua_State *L, int idx, const char *name);

/* Mark (SEL_HIT) the READ registrations whose objects hold buffered data; returns how many.
 * Runs before the kernel check because it may call Lua. The selector is at index 1. */
static int sel_scan_buffered(lua_State *L, selector *s) {
  int hits = 0;
  lua_getiuservalue(L, 1, UV_BYFD);                        /* byfd */
  for (int i = 0; i < s->n; i++) {
    int fd = s->fds[i];
    unsigned f = s->flags[fd];
    if (!(f & SEL_BUFFERED)) continue;
    s->flags[fd] = (unsigned char)(f & ~(unsigned)SEL_HIT);    /* left over by an error */
    if (!(f & SEL_READ)) continue;
    lua_rawgeti(L, -1, fd);                                /* byfd key */
    key_field(L, -1, "fileobj");                           /* byfd key obj */
    int ready = obj_buffered(L, -1, f);
    lua_pop(L, 2);
    if (s->closed) luaL_error(L, "selector closed during select");
    if (ready && i < s->n && s->fds[i] == fd) {
      s->flags[fd] |= SEL_HIT;
      hits++;
    }
  }
  lua_pop(L, 1);
  return hits;
}

static void add_out(selector *s, int *count, int fd, unsigned mask) {
  if (s->flags[fd] & SEL_HIT) {
    s->flags[fd] &= (unsigned char)~SEL_HIT;
    mask |= s->flags[fd] & SEL_READ;
  }
  if (mask == 0) return;
  s->out[2 * *count] = fd;
  s->out[2 * *count + 1] = (int)mask;
  (*count)++;
}

/* The kernel's view, without waiting: fills s->out, returns the number of ready fds. */
static int sel_check_kernel(lua_State *L, selector *s) {
  int count = 0, n;
  if (s->n == 0) return 0;
  switch (s->backend) {
    case B_EPOLL:
      do n = epoll_wait(s->epfd, s->evs, s->cap, 0); while (n < 0 && errno == EINTR);
      if (n < 0) return luaL_error(L, "select: epoll_wait failed: %s", strerror(errno));
      for (int i = 0; i < n; i++) {
        int fd = s->evs[i].data.fd;
        uint32_t e = s->evs[i].events;
        if (fd >= s->fdcap || s->slot[fd] == 0) continue;
        add_out(s, &count, fd, ready_mask(s->flags[fd], e & EPOLLIN, e & EPOLLOUT,
                                          e & ~(uint32_t)(EPOLLIN | EPOLLOUT)));
      }
      break;
    case B_POLL:
      do n = poll(s->pfds, (nfds_t)s->n, 0); while (n < 0 && errno == EINTR);
      if (n < 0) return luaL_error(L, "select: poll failed: %s", strerror(errno));
      for (int i = 0; i < s->n && n > 0; i++) {
        short r = s->pfds[i].revents;
        if (r == 0) continue;
        n--;
        int fd = s->pfds[i].fd;
        add_out(s, &count, fd, ready_mask(s->flags[fd], r & POLLIN, r & POLLOUT,
                                          r & ~(POLLIN | POLLOUT)));
      }
      break;
    default: {
      fd_set r = s->rset, w = s->wset;
      struct timeval tv;
      do {
        r = s->rset; w = s->wset;
        tv.tv_sec = 0; tv.tv_usec = 0;
        n = select(s->maxfd + 1, &r, &w, NULL, &tv);
      } while (n < 0 && errno == EINTR);
      if (n < 0 && errno == EBADF) {
        /* An object was closed before being unregistered: report its fd as ready for what
         * it was registered for (as poll's POLLNVAL does), check the others without it. */
        fd_set bad;
        FD_ZERO(&bad);
        int nbad = 0;
        for (int i = 0; i < s->n; i++)
          if (fcntl(s->fds[i], F_GETFD) < 0 && errno == EBADF) { FD_SET(s->fds[i], &bad); nbad++; }
        if (nbad == 0) return luaL_error(L, "select: select failed: %s", strerror(EBADF));
        int maxfd = -1;
        do {
          FD_ZERO(&r); FD_ZERO(&w);
          for (int i = 0; i < s->n; i++) {
            int fd = s->fds[i];
            if (FD_ISSET(fd, &bad)) continue;
            if (FD_ISSET(fd, &s->rset)) FD_SET(fd, &r);
            if (FD_ISSET(fd, &s->wset)) FD_SET(fd, &w);
            if (fd > maxfd) maxfd = fd;
          }
          tv.tv_sec = 0; tv.tv_usec = 0;
          n = maxfd < 0 ? 0 : select(maxfd + 1, &r, &w, NULL, &tv);
        } while (n < 0 && errno == EINTR);
        if (n < 0) return luaL_error(L, "select: select failed: %s", strerror(errno));
        for (int i = 0; i < s->n; i++)
          if (FD_ISSET(s->fds[i], &bad)) {
            FD_SET(s->fds[i], &r);
            FD_SET(s->fds[i], &w);
            n += 2;
          }
      }
      if (n < 0) return luaL_error(L, "select: select failed: %s", strerror(errno));
      for (int i = 0; i < s->n && n > 0; i++) {
        int fd = s->fds[i];
        unsigned m = (FD_ISSET(fd, &r) ? SEL_READ : 0) | (FD_ISSET(fd, &w) ? SEL_WRITE : 0);
        if (m) n -= (m == SEL_EVENTS) ? 2 : 1;
        add_out(s, &count, fd, m & s->flags[fd]);
      }
    }
  }
  return count;
}

/* One check: buffered objects, then the kernel. Leaves the result in s->out. */
static int sel_check_ready(lua_State *L, selector *s) {
  int hits = s->nbuffered ? sel_scan_buffered(L, s) : 0;
  int count = sel_check_kernel(L, s);
  for (int i = 0; hits > 0 && i < s->n; i++) {    /* buffered but not ready in the kernel */
    int fd = s->fds[i];
    if (s->flags[fd] & SEL_HIT) { add_out(s, &count, fd, 0); hits--; }
  }
  return count;
}

/* }==== */

/* {==== selector methods */

static int sel_iter(lua_State *L) {
  lua_rawgeti(L, 1, 0);
  lua_Integer i = lua_tointeger(L, -1) + 1;
  lua_pushinteger(L, i);
  lua_rawseti(L, 1, 0);
  if (lua_rawgeti(L, 1, 2 * i - 1) == LUA_TNIL) return 1;
  lua_rawgeti(L, 1, 2 * i);
  return 2;
}

/* Pushes iter, results where results = {key1, mask1, ..., n = count} (iter's position in [0]). */
static int sel_push_results(lua_State *L, selector *s, int count) {
  lua_pushcfunction(L, sel_iter);
  lua_createtable(L, 2 * count, 2);                       /* iter res */
  lua_getiuservalue(L, 1, UV_BYFD);                       /* iter res byfd */
  for (int i = 0; i < count; i++) {
    lua_rawgeti(L, -1, s->out[2 * i]);
    lua_rawseti(L, -3, 2 * i + 1);
    lua_pushinteger(L, s->out[2 * i + 1]);
    lua_rawseti(L, -3, 2 * i + 2);
  }
  lua_pop(L, 1);
  lua_pushinteger(L, 0);
  lua_rawseti(L, -2, 0);
  lua_pushinteger(L, count);
  lua_setfield(L, -2, "n");
  return 2;
}

static void mirror_build(lua_State *L, selector *s) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) luaL_error(L, "selector: cannot create its wake-up epoll fd: %s", strerror(errno));
  for (int i = 0; i < s->n; i++) {
    int fd = s->fds[i];
    int err = ep_ctl(ep, EPOLL_CTL_ADD, fd, s->flags[fd], EPOLLET);
    if (err && !mirror_ignorable(err)) {
      close(ep);
      luaL_error(L, "selector: cannot watch fd %d: %s", fd, strerror(err));
    }
  }
  s->epfd = ep;
  strand_io_init(&s->io, ep);
}

static int sel_select_k(lua_State *L, int status, lua_KContext ctx) {
  int outcome = strand_resumed(L, status);
  selector *s = sel_check(L, 1);
  double deadline = lua_tonumber(L, 2);
  int drained = 0;
  for (;;) {
    int count = sel_check_ready(L, s);
    if (count > 0 || outcome == STRAND_TIMEOUT || deadline <= strand_now())
      return sel_push_results(L, s, count);
    if (s->backend != B_EPOLL) {
      if (s->epfd < 0) mirror_build(L, s);   /* fresh: it already reports whatever became ready */
      else if (mirror_recheck(L, s->epfd, &drained)) continue;
    }
    outcome = strand_wait_io(L, &s->io, STRAND_READ, deadline, ctx, sel_select_k);
    s = sel_check(L, 1);            /* closed while waiting: raise */
  }
}

/* sel:select([timeout]) -> iterator over key, mask. nil waits forever; <= 0 only polls
 * (like Python's selectors). */
static int selm_select(lua_State *L) {
  sel_check(L, 1);
  double deadline = STRAND_FOREVER;
  if (!lua_isnoneornil(L, 2)) {
    lua_Number t = luaL_checknumber(L, 2);
    luaL_argcheck(L, t == t, 2, "timeout is NaN");
    if (t <= 0) deadline = 0;
    else if (t != HUGE_VAL) deadline = strand_now() + t;
  }
  lua_settop(L, 1);
  lua_pushnumber(L, deadline);
  return sel_select_k(L, LUA_OK, 0);
}

/* The events argument -> SEL_READ|SEL_WRITE (+ SEL_EDGE). */
static unsigned check_events(lua_State *L, int arg, const selector *s) {
  lua_Integer ev = luaL_checkinteger(L, arg);
  lua_Integer dir = ev & ~(lua_Integer)EVENT_EDGE;
  if (dir < 1 || dir > SEL_EVENTS)
    luaL_argerror(L, arg, lua_pushfstring(L, "invalid events: %I (use READ, WRITE or both)",
                                          (LUAI_UACINT)ev));
  if ((ev & EVENT_EDGE) && s->backend != B_EPOLL)
    luaL_argerror(L, arg, lua_pushfstring(L, "EDGE (edge-triggered) needs the epoll backend, "
                                          "not %s", backend_names[s->backend]));
  return (unsigned)dir | ((ev & EVENT_EDGE) ? SEL_EDGE : 0);
}

static lua_Integer public_events(unsigned flags) {
  return (flags & SEL_EVENTS) | ((flags & SEL_EDGE) ? EVENT_EDGE : 0);
}

/* The registration of the object at idx: pushes its key (or nil) and returns its fd (or -1).
 * A registered object is found by identity first, so a closed file or socket can still be
 * unregistered. */
static int sel_lookup(lua_State *L, selector *s, int idx) {
  idx = lua_absindex(L, idx);
  int fd;
  if (lua_type(L, idx) != LUA_TNUMBER) {
    lua_getiuservalue(L, 1, UV_BYOBJ);
    lua_pushvalue(L, idx);
    if (lua_rawget(L, -2) == LUA_TNUMBER) {
      fd = (int)lua_tointeger(L, -1);
      lua_pop(L, 2);
      lua_getiuservalue(L, 1, UV_BYFD);
      lua_rawgeti(L, -1, fd);
      lua_remove(L, -2);
      return fd;
    }
    lua_pop(L, 2);
  }
  fd = obj_fd(L, idx, 2, 0, NULL);
  if (fd < s->fdcap && s->slot[fd]) {
    lua_getiuservalue(L, 1, UV_BYFD);
    lua_rawgeti(L, -1, fd);
    lua_remove(L, -2);
    return fd;
  }
  lua_pushnil(L);
  return -1;
}

/* {==== keys: read-only values, as Python's SelectorKey (a namedtuple)
 * A key is a userdata whose one uservalue holds its fields; modify() makes a new key. */

#define KEY_META "strand.selector_key"

/* Push a new key for fileobj (index obj), fd, events and data (index data). */
static void key_new(lua_State *L, int obj, int fd, unsigned events, int data) {
  obj = lua_absindex(L, obj);
  data = lua_absindex(L, data);
  lua_newuserdatauv(L, 0, 1);
  luaL_setmetatable(L, KEY_META);
  lua_createtable(L, 0, 4);
  lua_pushvalue(L, obj); lua_setfield(L, -2, "fileobj");
  lua_pushinteger(L, fd); lua_setfield(L, -2, "fd");
  lua_pushinteger(L, public_events(events)); lua_setfield(L, -2, "events");
  lua_pushvalue(L, data); lua_setfield(L, -2, "data");
  lua_setiuservalue(L, -2, 1);
}

/* Push field name of the key at idx (whatever the user did). */
static void key_field(lua_State *L, int idx, const char *name) {
  lua_getiuservalue(L, idx, 1);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
}

static int key_index(lua_State *L) {
  lua_getiuservalue(L, 1, 1);
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

static int key_newindex(lua_State *L) {
  return luaL_error(L, "selector keys are read-only (sel:modify(obj, events, data) makes a new one)");
}

static int key_tostring(lua_State *L) {
  key_field(L, 1, "fd");
  key_field(L, 1, "events");
  lua_pushfstring(L, "strand.selector_key (fd %I, events %I)",
                  (LUAI_UACINT)lua_tointeger(L, -2), (LUAI_UACINT)lua_tointeger(L, -1));
  return 1;
}

/* }==== */

static int not_registered(lua_State *L, int idx) {
  return luaL_error(L, "%s is not registered", luaL_tolstring(L, idx, NULL));
}

/* sel:register(obj, events [, data]) -> key */
static int selm_register(lua_State *L) {
  selector *s = sel_check(L, 1);
  unsigned buffered;
  int fd = obj_fd(L, 2, 2, 0, &buffered);
  unsigned events = check_events(L, 3, s);
  lua_settop(L, 4);
  if (fd < s->fdcap && s->slot[fd])
    return luaL_error(L, "%s (fd %d) is already registered", luaL_tolstring(L, 2, NULL), fd);
  if (s->backend == B_SELECT && fd >= FD_SETSIZE)
    return luaL_error(L, "fd %d is too large for the select backend (FD_SETSIZE %d): "
                         "use epoll or poll", fd, FD_SETSIZE);
  if (s->backend != B_EPOLL && fcntl(fd, F_GETFD) < 0)
    return luaL_error(L, "cannot register fd %d: %s", fd, strerror(errno));
  sel_reserve(L, s, fd);
  key_new(L, 2, fd, events, 4);                            /* the key */
  lua_getiuservalue(L, 1, UV_BYFD);
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, fd);                                  /* key byfd */
  if (lua_type(L, 2) != LUA_TNUMBER) {
    lua_getiuservalue(L, 1, UV_BYOBJ);
    lua_pushvalue(L, 2);
    lua_pushinteger(L, fd);
    lua_rawset(L, -3);                                     /* key byfd byobj */
    lua_pop(L, 1);
  }
  int err = 0;
  if (s->backend == B_EPOLL) err = ep_ctl(s->epfd, EPOLL_CTL_ADD, fd, events, 0);
  else if (s->epfd >= 0) {
    err = ep_ctl(s->epfd, EPOLL_CTL_ADD, fd, events, EPOLLET);
    if (mirror_ignorable(err)) err = 0;
  }
  if (err) {                                               /* undo the Lua side */
    lua_pushnil(L);
    lua_rawseti(L, -2, fd);
    if (lua_type(L, 2) != LUA_TNUMBER) {
      lua_getiuservalue(L, 1, UV_BYOBJ);
      lua_pushvalue(L, 2);
      lua_pushnil(L);
      lua_rawset(L, -3);
    }
    if (err == EPERM)
      return luaL_error(L, "cannot register fd %d with epoll: it does not support polling "
                           "(a regular file?): use the poll or select backend", fd);
    return luaL_error(L, "cannot register fd %d: %s", fd, strerror(err));
  }
  sel_add(s, fd, events | buffered);
  lua_pop(L, 1);
  return 1;                                                /* key */
}

/* sel:modify(obj, events [, data]) -> a new key (the old one keeps its values) */
static int selm_modify(lua_State *L) {
  selector *s = sel_check(L, 1);
  unsigned events = check_events(L, 3, s);
  lua_settop(L, 4);
  int fd = sel_lookup(L, s, 2);                            /* key */
  if (fd < 0) return not_registered(L, 2);
  if ((s->flags[fd] & (SEL_EVENTS | SEL_EDGE)) != events) {
    int err = 0;
    if (s->backend == B_EPOLL) err = ep_ctl(s->epfd, EPOLL_CTL_MOD, fd, events, 0);
    else if (s->epfd >= 0) {
      err = ep_ctl(s->epfd, EPOLL_CTL_MOD, fd, events, EPOLLET);
      if (mirror_ignorable(err)) err = 0;
    }
    if (err) return luaL_error(L, "cannot modify fd %d: %s", fd, strerror(err));
    sel_set_events(s, fd, events);
  }
  key_field(L, -1, "fileobj");                             /* old obj */
  key_new(L, -1, fd, events, 4);                           /* old obj key */
  lua_getiuservalue(L, 1, UV_BYFD);
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, fd);
  lua_pop(L, 1);
  return 1;
}

/* sel:unregister(obj) -> key */
static int selm_unregister(lua_State *L) {
  selector *s = sel_check(L, 1);
  lua_settop(L, 2);
  int fd = sel_lookup(L, s, 2);                            /* key */
  if (fd < 0) return not_registered(L, 2);
  if (s->epfd >= 0) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    (void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, fd, &ev);      /* EBADF/ENOENT: closed already */
  }
  sel_remove(s, fd);
  lua_getiuservalue(L, 1, UV_BYFD);
  lua_pushnil(L);
  lua_rawseti(L, -2, fd);
  lua_getiuservalue(L, 1, UV_BYOBJ);
  key_field(L, -3, "fileobj");
  lua_pushnil(L);
  lua_rawset(L, -3);                                       /* key byfd byobj */
  lua_pop(L, 2);
  return 1;
}

/* sel:get_key(obj) -> key | nil */
static int selm_get_key(lua_State *L) {
  selector *s = sel_check(L, 1);
  lua_settop(L, 2);
  sel_lookup(L, s, 2);
  return 1;
}

/* sel:get_map() -> a new table fileobj -> key */
static int selm_get_map(lua_State *L) {
  selector *s = sel_check(L, 1);
  lua_createtable(L, 0, s->n);
  lua_getiuservalue(L, 1, UV_BYFD);
  for (int i = 0; i < s->n; i++) {
    lua_rawgeti(L, -1, s->fds[i]);                         /* map byfd key */
    key_field(L, -1, "fileobj");
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
  lua_pop(L, 1);
  return 1;
}

/* sel:fileno() -> the epoll fd (epoll backend only: it is readable when a select would
 * return something, so a selector can itself be registered in another one). */
static int selm_fileno(lua_State *L) {
  selector *s = sel_check(L, 1);
  if (s->backend != B_EPOLL)
    return luaL_error(L, "the %s backend has no pollable fd", backend_names[s->backend]);
  lua_pushinteger(L, s->epfd);
  return 1;
}

static int selm_backend(lua_State *L) {
  selector *s = (selector *)luaL_checkudata(L, 1, SEL_META);
  lua_pushstring(L, backend_names[s->backend]);
  return 1;
}

/* close, __close and __gc: wake a task waiting in select (it raises), drop the loop's watch
 * before closing the fd, forget every registration. Idempotent. */
static int selm_close(lua_State *L) {
  selector *s = (selector *)luaL_checkudata(L, 1, SEL_META);
  if (s->closed) return 0;
  s->closed = 1;
  strand_io_close(&s->io);
  if (s->epfd >= 0) close(s->epfd);
  s->epfd = -1;
  sel_release(s);
  lua_pushnil(L); lua_setiuservalue(L, 1, UV_BYFD);
  lua_pushnil(L); lua_setiuservalue(L, 1, UV_BYOBJ);
  return 0;
}

static int selm_tostring(lua_State *L) {
  selector *s = (selector *)luaL_checkudata(L, 1, SEL_META);
  if (s->closed) lua_pushfstring(L, "strand.selector (%s, closed)", backend_names[s->backend]);
  else lua_pushfstring(L, "strand.selector (%s, %d registered)", backend_names[s->backend], s->n);
  return 1;
}

static int selm_len(lua_State *L) {
  selector *s = (selector *)luaL_checkudata(L, 1, SEL_META);
  lua_pushinteger(L, s->n);
  return 1;
}

/* selector.new([backend]) */
static int sel_new(lua_State *L) {
  int backend = luaL_checkoption(L, 1, "epoll", backend_names);
  selector *s = (selector *)lua_newuserdatauv(L, sizeof *s, 2);
  memset(s, 0, sizeof *s);
  s->backend = backend;
  s->closed = 1;                                           /* until the fd exists */
  s->epfd = -1;
  s->maxfd = -1;
  FD_ZERO(&s->rset);
  FD_ZERO(&s->wset);
  strand_io_init(&s->io, -1);
  luaL_setmetatable(L, SEL_META);
  lua_newtable(L); lua_setiuservalue(L, -2, UV_BYFD);
  lua_newtable(L); lua_setiuservalue(L, -2, UV_BYOBJ);
  if (backend == B_EPOLL) {
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (s->epfd < 0) return strand_fail(L, errno);
    strand_io_init(&s->io, s->epfd);
  }
  s->closed = 0;
  return 1;
}

/* }==== */

/* {==== strand.select(rlist, wlist, xlist [, timeout]) */

typedef struct select_call {
  int epfd;                   /* wake-up mirror, built only if the call must wait */
  strand_io io;
  int n;
  unsigned char *flags;       /* per entry: SEL_* (points into this block) */
  struct pollfd pfds[];       /* one per list element: rlist, then wlist, then xlist */
} select_call;

static int scall_close(lua_State *L) {
  select_call *c = (select_call *)luaL_checkudata(L, 1, SCALL_META);
  strand_io_close(&c->io);
  if (c->epfd >= 0) close(c->epfd);
  c->epfd = -1;
  return 0;
}

#define SC_IN   (POLLIN | POLLRDNORM | POLLRDBAND)
#define SC_OUT  (POLLOUT | POLLWRNORM | POLLWRBAND)

/* Which list an entry belongs to, from its flags. */
static int scall_ready(const select_call *c, int i) {
  short r = c->pfds[i].revents;
  unsigned f = c->flags[i];
  if (f & SEL_READ) return (r & (SC_IN | POLLHUP | POLLERR)) || (f & SEL_HIT);
  if (f & SEL_WRITE) return (r & (SC_OUT | POLLERR)) != 0;
  return (r & POLLPRI) != 0;
}

/* One check without waiting: returns how many entries are ready. Stack: r w x deadline call */
static int scall_check(lua_State *L, select_call *c) {
  int i, n, count = 0;
  for (i = 0; i < c->n; i++) {                   /* buffered data first (may call Lua) */
    c->flags[i] &= (unsigned char)~SEL_HIT;
    if ((c->flags[i] & SEL_READ) && (c->flags[i] & SEL_BUFFERED)) {
      lua_rawgeti(L, 1, i + 1);
      if (obj_buffered(L, -1, c->flags[i])) c->flags[i] |= SEL_HIT;
      lua_pop(L, 1);
    }
  }
  do n = poll(c->pfds, (nfds_t)c->n, 0); while (n < 0 && errno == EINTR);
  if (n < 0) return luaL_error(L, "select: poll failed: %s", strerror(errno));
  for (i = 0; i < c->n; i++) {
    if (c->pfds[i].revents & POLLNVAL) {
      int list = (c->flags[i] & SEL_READ) ? 1 : (c->flags[i] & SEL_WRITE) ? 2 : 3;
      lua_Integer base = list == 1 ? 0 : list == 2 ? (lua_Integer)lua_rawlen(L, 1)
                                       : (lua_Integer)(lua_rawlen(L, 1) + lua_rawlen(L, 2));
      return obj_error(L, list, i + 1 - base, "bad file descriptor (closed?)");
    }
    if (scall_ready(c, i)) count++;
  }
  return count;
}

static void scall_mirror(lua_State *L, select_call *c) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) luaL_error(L, "select: cannot create its wake-up epoll fd: %s", strerror(errno));
  c->epfd = ep;                                  /* closed by __close from now on */
  for (int i = 0; i < c->n; i++) {
    int fd = c->pfds[i].fd;
    unsigned f = c->flags[i] & (SEL_EVENTS | SEL_EXCEPT);
    int err = ep_ctl(ep, EPOLL_CTL_ADD, fd, f, EPOLLET);
    if (err == EEXIST) {                         /* the same fd in several lists or twice */
      for (int j = 0; j < i; j++)
        if (c->pfds[j].fd == fd) f |= c->flags[j] & (SEL_EVENTS | SEL_EXCEPT);
      err = ep_ctl(ep, EPOLL_CTL_MOD, fd, f, EPOLLET);
    }
    if (err && !mirror_ignorable(err))
      luaL_error(L, "select: cannot watch fd %d: %s", fd, strerror(err));
  }
  strand_io_init(&c->io, ep);
}

/* Pushes the three result lists: the ready objects, in the order they were given. */
static int scall_results(lua_State *L, select_call *c) {
  int i = 0;
  for (int list = 1; list <= 3; list++) {
    int len = (int)lua_rawlen(L, list), k = 0;
    lua_createtable(L, 0, 0);
    for (int e = 1; e <= len; e++, i++) {
      if (!scall_ready(c, i)) continue;
      lua_rawgeti(L, list, e);
      lua_rawseti(L, -2, ++k);
    }
  }
  return 3;
}

static int select_k(lua_State *L, int status, lua_KContext ctx) {
  int outcome = strand_resumed(L, status);
  double deadline = lua_tonumber(L, 4);
  select_call *c = (select_call *)lua_touserdata(L, 5);
  int drained = 0;
  for (;;) {
    int count = c->n ? scall_check(L, c) : 0;
    if (count > 0 || outcome == STRAND_TIMEOUT || deadline <= strand_now())
      return scall_results(L, c);
    if (c->n == 0) {                             /* nothing to watch: a cooperative sleep */
      outcome = strand_wait_timer(L, deadline, ctx, select_k);
      continue;
    }
    if (c->epfd < 0) scall_mirror(L, c);         /* fresh: it reports whatever became ready */
    else if (mirror_recheck(L, c->epfd, &drained)) continue;
    outcome = strand_wait_io(L, &c->io, STRAND_READ, deadline, ctx, select_k);
  }
}

static int l_select(lua_State *L) {
  int total = 0;
  for (int list = 1; list <= 3; list++) {
    if (lua_isnoneornil(L, list)) {
      lua_newtable(L);
      lua_replace(L, list);
    }
    luaL_checktype(L, list, LUA_TTABLE);
    lua_Unsigned len = lua_rawlen(L, list);
    if (len > (lua_Unsigned)(INT_MAX / 2 - total)) return luaL_argerror(L, list, "list too long");
    total += (int)len;
  }
  double deadline = STRAND_FOREVER;
  if (!lua_isnoneornil(L, 4)) {
    lua_Number t = luaL_checknumber(L, 4);
    luaL_argcheck(L, t >= 0, 4, "timeout must be non-negative");
    if (t != HUGE_VAL) deadline = strand_now() + t;
  }
  lua_settop(L, 3);
  lua_pushnumber(L, deadline);                                   /* 4 */
  size_t size = sizeof(select_call) + (size_t)total * (sizeof(struct pollfd) + 1);
  select_call *c = (select_call *)lua_newuserdatauv(L, size, 0);  /* 5 */
  memset(c, 0, size);
  c->epfd = -1;
  strand_io_init(&c->io, -1);
  c->flags = (unsigned char *)(c->pfds + total);
  luaL_setmetatable(L, SCALL_META);
  lua_toclose(L, 5);
  static const unsigned kind[3] = { SEL_READ, SEL_WRITE, SEL_EXCEPT };
  static const short pev[3] = { SC_IN, SC_OUT, POLLPRI };
  for (int list = 1, i = 0; list <= 3; list++) {
    int len = (int)lua_rawlen(L, list);
    for (int e = 1; e <= len; e++, i++) {
      unsigned buffered;
      lua_rawgeti(L, list, e);
      c->pfds[i].fd = obj_fd(L, -1, list, e, list == 1 ? &buffered : NULL);
      c->pfds[i].events = pev[list - 1];
      c->flags[i] = (unsigned char)(kind[list - 1] | (list == 1 ? buffered : 0));
      lua_pop(L, 1);
    }
  }
  c->n = total;
  return select_k(L, LUA_OK, 0);
}

/* }==== */

static const luaL_Reg sel_methods[] = {
  {"register", selm_register}, {"modify", selm_modify}, {"unregister", selm_unregister},
  {"get_key", selm_get_key}, {"get_map", selm_get_map}, {"select", selm_select},
  {"fileno", selm_fileno}, {"backend", selm_backend}, {"close", selm_close},
  {NULL, NULL}
};

static const luaL_Reg sel_metamethods[] = {
  {"__gc", selm_close}, {"__close", selm_close}, {"__tostring", selm_tostring},
  {"__len", selm_len}, {"__index", NULL}, {NULL, NULL}
};

/* a key's fields are read-only; __metatable (false) is set beside these */
static const luaL_Reg key_metamethods[] = {
  {"__index", key_index}, {"__newindex", key_newindex}, {"__tostring", key_tostring},
  {NULL, NULL}
};

static const luaL_Reg scall_metamethods[] = {
  {"__close", scall_close}, {"__gc", scall_close}, {NULL, NULL}
};

static const luaL_Reg sel_funcs[] = {
  {"new", sel_new}, {"select", l_select}, {NULL, NULL}
};

static void createmeta(lua_State *L) {
  luaL_newmetatable(L, SEL_META);
  luaL_setfuncs(L, sel_metamethods, 0);
  luaL_newlib(L, sel_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newmetatable(L, KEY_META);
  luaL_setfuncs(L, key_metamethods, 0);
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
  luaL_newmetatable(L, SCALL_META);
  luaL_setfuncs(L, scall_metamethods, 0);
  lua_pop(L, 1);
}

int strand_open_selector(lua_State *L) {
  createmeta(L);
  luaL_newlib(L, sel_funcs);
  lua_pushinteger(L, SEL_READ);  lua_setfield(L, -2, "READ");
  lua_pushinteger(L, SEL_WRITE); lua_setfield(L, -2, "WRITE");
  lua_pushinteger(L, SEL_READ);  lua_setfield(L, -2, "EVENT_READ");
  lua_pushinteger(L, SEL_WRITE); lua_setfield(L, -2, "EVENT_WRITE");
  lua_pushinteger(L, EVENT_EDGE); lua_setfield(L, -2, "EDGE");
  return 1;
}
