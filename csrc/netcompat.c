/* netcompat.c — C helpers of the LuaSocket bridge and the servers: fromfd (adopt a duplicate),
 * wall-clock time, gethostname, hostent, getnameinfo, SIGINT/SIGTERM as bytes on a socket. */
#include "sock.h"

#include <arpa/inet.h>
#include <signal.h>
#include <stdatomic.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* compat.fromfd(fd) -> socket | nil, msg, code. The socket owns a duplicate (close-on-exec,
 * non-blocking) of fd: fd itself stays open and owned by whoever had it. Family and type are
 * read from the kernel (SO_DOMAIN, SO_TYPE); a listening socket stays listening. */
static int l_fromfd(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= 0x7fffffff, 1, "file descriptor expected");
  int family = 0, type = 0, acc = 0;
  socklen_t len = sizeof family;
  if (getsockopt((int)fd, SOL_SOCKET, SO_DOMAIN, &family, &len) != 0) return strand_fail(L, errno);
  len = sizeof type;
  if (getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return strand_fail(L, errno);
  len = sizeof acc;
  if (getsockopt((int)fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) != 0) acc = 0;
  if (family != AF_INET && family != AF_INET6 && family != AF_UNIX)
    return strand_fail_msg(L, "address family not supported", "EAFNOSUPPORT");
  if (type != SOCK_STREAM && type != SOCK_DGRAM)
    return strand_fail_msg(L, "socket type not supported", "ESOCKTNOSUPPORT");
  sock *s = sock_new(L, family, type);                    /* closed-state userdata first */
  int nfd = fcntl((int)fd, F_DUPFD_CLOEXEC, 0);
  if (nfd < 0) return strand_fail(L, errno);
  int fl = fcntl(nfd, F_GETFL);
  if (fl < 0 || fcntl(nfd, F_SETFL, fl | O_NONBLOCK) != 0) {
    int e = errno;
    close(nfd);
    return strand_fail(L, e);
  }
  strand_io_init(&s->io, nfd);
  s->listening = acc != 0;
  /* fd stays open with its owner (another socket, thread or process may read it): read as a
   * socket shared by a fork (sockio: readiness + recv(2)), never by an io_uring recv that stays
   * armed and would take bytes meant for the other reader */
  s->forkgen = sock_fork_epoch() - 1;
  return 1;
}

/* compat.realtime() -> seconds since the epoch (CLOCK_REALTIME, with fractions) */
static int l_realtime(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  return 1;
}

/* compat.gethostname() -> name | nil, msg, code */
static int l_gethostname(lua_State *L) {
  char name[257];
  name[256] = '\0';
  if (gethostname(name, 256) != 0) return strand_fail(L, errno);
  lua_pushstring(L, name);
  return 1;
}

static void push_strings(lua_State *L, char **v, int inet) {
  lua_newtable(L);
  for (int i = 0; v && v[i]; i++) {
    if (inet) {
      char buf[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, v[i], buf, sizeof buf);
      lua_pushstring(L, buf);
    } else {
      lua_pushstring(L, v[i]);
    }
    lua_rawseti(L, -2, i + 1);
  }
}

/* compat.hostent(name_or_ipv4) -> {name=, alias={...}, ip={...}} | nil, h_errno (integer).
 * Blocking (gethostbyname_r / gethostbyaddr_r): callers run it on a thread, off the loop. */
static int l_hostent(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  struct hostent he, *hp = NULL;
  char stackbuf[2048], *buf = stackbuf;
  size_t cap = sizeof stackbuf;
  int herr = 0, r;
  struct in_addr a;
  for (;;) {
    if (inet_aton(name, &a))
      r = gethostbyaddr_r(&a, sizeof a, AF_INET, &he, buf, cap, &hp, &herr);
    else
      r = gethostbyname_r(name, &he, buf, cap, &hp, &herr);
    if (r != ERANGE || cap >= (1u << 20)) break;
    cap *= 2;
    char *nb = (char *)lua_newuserdatauv(L, cap, 0);     /* freed by the GC */
    buf = nb;
  }
  if (hp == NULL) {
    lua_pushnil(L);
    lua_pushinteger(L, herr ? herr : HOST_NOT_FOUND);
    return 2;
  }
  lua_newtable(L);
  lua_pushstring(L, hp->h_name);
  lua_setfield(L, -2, "name");
  push_strings(L, hp->h_aliases, 0);
  lua_setfield(L, -2, "alias");
  push_strings(L, hp->h_addrtype == AF_INET ? hp->h_addr_list : NULL, 1);
  lua_setfield(L, -2, "ip");
  return 1;
}

/* compat.nameinfo(host|nil, serv|nil) -> {names...}, service | nil, gai message.
 * Blocking (getaddrinfo + getnameinfo for each address): callers run it on a thread. */
static int l_nameinfo(lua_State *L) {
  const char *host = luaL_optstring(L, 1, NULL);
  const char *serv = luaL_optstring(L, 2, NULL);
  if (!host && !serv) return luaL_error(L, "host and serv cannot be both nil");
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_family = AF_UNSPEC;
  int r = getaddrinfo(host, serv, &hints, &res);
  if (r != 0) {
    lua_pushnil(L);
    lua_pushstring(L, gai_strerror(r));
    lua_pushinteger(L, r);
    return 3;
  }
  char hbuf[NI_MAXHOST], sbuf[NI_MAXSERV];
  sbuf[0] = '\0';
  lua_newtable(L);
  int i = 1;
  for (struct addrinfo *a = res; a; a = a->ai_next, i++) {
    hbuf[0] = '\0';
    getnameinfo(a->ai_addr, a->ai_addrlen, hbuf, host ? sizeof hbuf : 0,
                sbuf, serv ? sizeof sbuf : 0, 0);
    if (host) {
      lua_pushstring(L, hbuf);
      lua_rawseti(L, -2, i);
    }
  }
  freeaddrinfo(res);
  if (!serv) return 1;
  lua_pushstring(L, sbuf);
  return 2;
}

/* compat.hoststrerror(h_errno) -> message (hstrerror) */
static int l_hoststrerror(lua_State *L) {
  lua_pushstring(L, hstrerror((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* {==== signals as readable bytes (servers stop gracefully on SIGINT/SIGTERM) */

/* The write end of the watcher's socketpair: process-wide because signal dispositions are. */
static atomic_int sig_wfd = -1;
static const int watched[] = {SIGINT, SIGTERM};
static struct sigaction saved[2];

static void on_signal(int sig) {
  int e = errno;
  int fd = atomic_load(&sig_wfd);
  unsigned char b = (unsigned char)sig;
  if (fd >= 0) { ssize_t r = write(fd, &b, 1); (void)r; }   /* full buffer: a byte is enough */
  errno = e;
}

/* compat.signal_watch() -> socket | nil, msg, code. SIGINT and SIGTERM each write their number
 * as one byte to the socket returned (read it with recv). One watcher at a time: a second call
 * while one is active returns nil, "busy", "EBUSY". */
static int l_signal_watch(lua_State *L) {
  if (atomic_load(&sig_wfd) >= 0) return strand_fail_msg(L, "busy", "EBUSY");
  sock *s = sock_new(L, AF_UNIX, SOCK_STREAM);
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0)
    return strand_fail(L, errno);
  strand_io_init(&s->io, fds[0]);
  atomic_store(&sig_wfd, fds[1]);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  for (int i = 0; i < 2; i++) {
    if (sigaction(watched[i], &sa, &saved[i]) != 0) {
      int e = errno;
      for (int j = 0; j < i; j++) sigaction(watched[j], &saved[j], NULL);
      atomic_store(&sig_wfd, -1);
      close(fds[1]);
      return strand_fail(L, e);
    }
  }
  return 1;
}

/* compat.signal_unwatch() -> true. The dispositions from before signal_watch come back; the
 * watcher's socket stays the caller's to close. */
static int l_signal_unwatch(lua_State *L) {
  int fd = atomic_load(&sig_wfd);
  if (fd >= 0) {
    for (int i = 0; i < 2; i++) sigaction(watched[i], &saved[i], NULL);
    atomic_store(&sig_wfd, -1);
    close(fd);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* }==== */

static const luaL_Reg funcs[] = {
  {"signal_watch", l_signal_watch}, {"signal_unwatch", l_signal_unwatch},
  {"fromfd", l_fromfd}, {"realtime", l_realtime}, {"gethostname", l_gethostname},
  {"hostent", l_hostent}, {"nameinfo", l_nameinfo}, {"hoststrerror", l_hoststrerror},
  {NULL, NULL}
};

int strand_open_netcompat(lua_State *L) {
  luaL_newlib(L, funcs);
  return 1;
}
