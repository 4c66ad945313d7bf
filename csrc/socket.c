/* socket.c — strand.socket: the socket object (creation, close, addresses, names resolved
 * off the loop), connect/bind/listen/accept, and the module table (tcp, udp, unix, pair, ...). */
#include "sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define RESOLVER_META "strand.socket.resolver"

static const char *const family_names[] = {"inet", "inet6", NULL};
static const int family_values[] = {AF_INET, AF_INET6};
static const char *const type_names[] = {"stream", "dgram", NULL};
static const int type_values[] = {SOCK_STREAM, SOCK_DGRAM};

/* {==== the object */

sock *sock_new(lua_State *L, int family, int type) {
  sock *s = (sock *)lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  strand_io_init(&s->io, -1);
  strand_buf_init(&s->rbuf);
  s->timeout = -1;
  s->maxline = SOCK_MAXLINE_DEFAULT;
  s->forkgen = sock_fork_epoch();
  s->family = family;
  s->type = type;
  luaL_setmetatable(L, SOCK_META);
  return s;
}

static void sock_adopt(sock *s, int fd) {
  strand_io_init(&s->io, fd);
}

/* A new open socket pushed, or nil, msg, code (returns 1 or 3). */
static int sock_open(lua_State *L, int family, int type) {
  sock *s = sock_new(L, family, type);
  int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return strand_fail(L, errno);
  sock_adopt(s, fd);
  return 1;
}

/* The socket's methods and metamethods hold its metatable as upvalue 1 (strand_open_socket):
 * comparing with it spares luaL_checkudata's lookup of the metatable by name on every call.
 * Any other caller (no such upvalue: an invalid index, never equal) and any value that is not
 * a socket go through luaL_checkudata, which accepts the same values and raises the same error. */
static sock *sock_udata(lua_State *L, int idx) {
  void *p = lua_touserdata(L, idx);
  if (p != NULL && lua_getmetatable(L, idx)) {
    int same = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (same) return (sock *)p;
  }
  return (sock *)luaL_checkudata(L, idx, SOCK_META);
}

sock *sock_check(lua_State *L, int idx) {
  sock *s = sock_udata(L, idx);
  if (s->io.fd < 0) luaL_error(L, "attempt to use a closed socket");
  return s;
}

double sock_deadline(const sock *s) {
  return s->timeout < 0 ? STRAND_FOREVER : strand_now() + s->timeout;
}

/* Waiters get nil, "closed"; the poller forgets the fd before close(2) may reuse its number. */
static void sock_close(sock *s) {
  int fd = s->io.fd;
  if (fd < 0) return;
  strand_io_close(&s->io);
  s->io.fd = -1;
  close(fd);                         /* Linux: the fd is gone even on EINTR; never retry */
  strand_buf_free(&s->rbuf);
  s->u.skip = 0;
  s->listening = 0;
}

/* close, __close and __gc: idempotent */
static int m_close(lua_State *L) {
  sock *s = sock_udata(L, 1);
  sock_close(s);
  lua_pushboolean(L, 1);
  return 1;
}

static const char *family_name(int f) {
  return f == AF_INET ? "inet" : f == AF_INET6 ? "inet6" : "unix";
}

static int m_tostring(lua_State *L) {
  sock *s = sock_udata(L, 1);
  if (s->io.fd < 0)
    lua_pushliteral(L, "strand.socket (closed)");
  else
    lua_pushfstring(L, "strand.socket (%s %s, fd %d)", family_name(s->family),
                    s->type == SOCK_STREAM ? "stream" : "dgram", s->io.fd);
  return 1;
}

/* }==== */

/* {==== addresses */

/* host, port (inet) or path (unix) of sa: returns how many values were pushed. */
int sock_push_addr(lua_State *L, const struct sockaddr *sa, socklen_t len) {
  char host[INET6_ADDRSTRLEN];
  switch (sa->sa_family) {
    case AF_INET: {
      const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
      inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
      lua_pushstring(L, host);
      lua_pushinteger(L, ntohs(in->sin_port));
      return 2;
    }
    case AF_INET6: {
      const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
      inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
      lua_pushstring(L, host);
      lua_pushinteger(L, ntohs(in6->sin6_port));
      return 2;
    }
    case AF_UNIX: {
      const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
      size_t off = offsetof(struct sockaddr_un, sun_path);
      size_t n = len > off ? (size_t)len - off : 0;
      if (n > sizeof un->sun_path) n = sizeof un->sun_path;
      if (n > 0 && un->sun_path[0] != '\0') n = strnlen(un->sun_path, n);  /* pathname */
      lua_pushlstring(L, un->sun_path, n);   /* abstract names keep their leading NUL */
      return 1;
    }
    default:
      lua_pushnil(L);
      return 1;
  }
}

/* Port argument: an integer 0..65535 (or a string of one), or a service name ("http").
 * Returns the port, or -1 for a service name (then the string at arg is it). */
static lua_Integer check_port(lua_State *L, int arg) {
  int t = lua_type(L, arg);
  if (t == LUA_TNONE || t == LUA_TNIL) return 0;
  if (t != LUA_TNUMBER && t != LUA_TSTRING) return luaL_typeerror(L, arg, "port number or service name");
  int isint;
  lua_Integer p = lua_tointegerx(L, arg, &isint);
  if (isint) {
    if (p < 0 || p > 65535) luaL_argerror(L, arg, "port must be an integer 0..65535");
    return p;
  }
  if (t == LUA_TNUMBER || lua_isnumber(L, arg)) luaL_argerror(L, arg, "port must be an integer 0..65535");
  return -1;
}

/* host at hi for a lookup: NULL for the wildcard (nil, "*" or "" when passive). */
static const char *host_arg(lua_State *L, int hi, int passive) {
  const char *h = lua_tostring(L, hi);
  if (h && passive && (h[0] == '\0' || strcmp(h, "*") == 0)) h = NULL;
  return h;
}

/* Numeric fast path without any allocation: dotted quad or IPv6 literal. */
static int addr_numeric(int family, const char *host, lua_Integer port,
                        struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof *ss);
  if (port < 0) return 0;
  if (family == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    if (host == NULL) in->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (inet_pton(AF_INET, host, &in->sin_addr) != 1) return 0;
    *len = sizeof *in;
    return 1;
  }
  if (family == AF_INET6) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    if (host == NULL) in6->sin6_addr = in6addr_any;
    else if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1) return 0;
    *len = sizeof *in6;
    return 1;
  }
  return 0;
}

static int unix_addr(lua_State *L, int pi, struct sockaddr_un *un, socklen_t *len) {
  size_t n;
  const char *path = lua_tolstring(L, pi, &n);
  memset(un, 0, sizeof *un);
  un->sun_family = AF_UNIX;
  if (path == NULL || n >= sizeof un->sun_path) return ENAMETOOLONG;
  memcpy(un->sun_path, path, n);
  *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (n > 0 && path[0] != '\0'));
  return 0;
}

static int fail_gai(lua_State *L, int gai, int err) {
  if (gai == EAI_SYSTEM) return strand_fail(L, err);
  const char *code = "EAI_FAIL";
  switch (gai) {
    case EAI_NONAME: code = "EAI_NONAME"; break;
    case EAI_AGAIN: code = "EAI_AGAIN"; break;
    case EAI_FAMILY: code = "EAI_FAMILY"; break;
    case EAI_SERVICE: code = "EAI_SERVICE"; break;
    case EAI_MEMORY: code = "EAI_MEMORY"; break;
    case EAI_SOCKTYPE: code = "EAI_SOCKTYPE"; break;
#ifdef EAI_NODATA
    case EAI_NODATA: code = "EAI_NODATA"; break;
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY: code = "EAI_ADDRFAMILY"; break;
#endif
    default: break;
  }
  char buf[96];
  const char *m = gai_strerror(gai);
  size_t i;
  for (i = 0; m[i] && i < sizeof buf - 1; i++)
    buf[i] = (m[i] >= 'A' && m[i] <= 'Z') ? (char)(m[i] - 'A' + 'a') : m[i];
  buf[i] = '\0';
  return strand_fail_msg(L, buf, code);
}

/* }==== */

/* {==== resolution: a resolver userdata holds a pool request and watches its eventfd */

typedef struct resolver {
  strand_io io;
  strand_resolve *req;
} resolver;

static int resolver_close(lua_State *L) {
  resolver *r = (resolver *)luaL_checkudata(L, 1, RESOLVER_META);
  if (r->req) {
    strand_io_close(&r->io);            /* unwatch before the worker may close the eventfd */
    strand_resolve_release(r->req);
    r->req = NULL;
  }
  return 0;
}

/* Look up host/port (stack hi, hi+1) with hints. The resolver, when one is needed, is pushed at
 * index hs, which must be the top + 1 at the first call, and marked to-be-closed. Returns 0 with
 * *res set (the caller frees it) or pushes nil, msg, code and returns 3. May yield (ctx, k). */
static int lookup(lua_State *L, const struct addrinfo *hints, int hi, int hs, double deadline,
                  int outcome, lua_KContext ctx, lua_KFunction k, struct addrinfo **res) {
  char serv[16];
  const char *host = host_arg(L, hi, hints->ai_flags & AI_PASSIVE);
  lua_Integer port = check_port(L, hi + 1);
  const char *sv = serv;
  if (port >= 0) snprintf(serv, sizeof serv, "%d", (int)port);
  else sv = lua_tostring(L, hi + 1);
  for (;;) {
    if (lua_gettop(L) < hs) {
      struct addrinfo h = *hints;
      h.ai_flags |= AI_NUMERICHOST;     /* numbers and the wildcard never need the pool */
      int gai = getaddrinfo(host, sv, &h, res);
      if (gai == 0) return 0;
      if (gai != EAI_NONAME || host == NULL) return fail_gai(L, gai, errno);
      strand_resolve *req = strand_resolve_start(host, sv, hints);
      if (req == NULL) return strand_fail(L, errno);
      resolver *r = (resolver *)lua_newuserdatauv(L, sizeof *r, 0);
      strand_io_init(&r->io, strand_resolve_fd(req));
      r->req = req;
      luaL_setmetatable(L, RESOLVER_META);
      lua_toclose(L, -1);
    } else {
      resolver *r = (resolver *)lua_touserdata(L, hs);
      int gai, err;
      if (r->req && strand_resolve_take(r->req, &gai, res, &err)) {
        strand_io_close(&r->io);
        strand_resolve_release(r->req);
        r->req = NULL;
        return gai == 0 ? 0 : fail_gai(L, gai, err);
      }
      if (r->req == NULL || outcome == STRAND_TIMEOUT)
        return strand_fail_msg(L, "timeout", "ETIMEDOUT");
    }
    resolver *r = (resolver *)lua_touserdata(L, hs);
    outcome = strand_wait_io(L, &r->io, STRAND_READ, deadline, ctx, k);
  }
}

int sock_addr(lua_State *L, sock *s, int hi, int ai, double deadline, int outcome,
              int passive, lua_KContext ctx, lua_KFunction k) {
  struct sockaddr_storage ss;
  socklen_t len = 0;
  if (lua_type(L, ai) == LUA_TSTRING) return 0;
  if (s->family == AF_UNIX) {
    int err = unix_addr(L, hi, (struct sockaddr_un *)&ss, &len);
    if (err) return strand_fail(L, err);
  } else if (lua_gettop(L) == ai &&
             addr_numeric(s->family, host_arg(L, hi, passive), check_port(L, hi + 1), &ss, &len)) {
    /* done without a lookup */
  } else {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = s->family;
    hints.ai_socktype = s->type;
    hints.ai_flags = (passive ? AI_PASSIVE : 0) | (s->family == AF_INET6 ? AI_V4MAPPED : 0);
    int n = lookup(L, &hints, hi, ai + 1, deadline, outcome, ctx, k, &res);
    if (n) return n;
    if (res == NULL || res->ai_addrlen > sizeof ss) {
      if (res) freeaddrinfo(res);
      return strand_fail_msg(L, "no address", "EAI_NODATA");
    }
    memcpy(&ss, res->ai_addr, res->ai_addrlen);
    len = res->ai_addrlen;
    freeaddrinfo(res);
  }
  lua_pushlstring(L, (const char *)&ss, len);
  lua_replace(L, ai);
  return 0;
}

static int check_family(lua_State *L, int arg) {
  return family_values[luaL_checkoption(L, arg, "inet", family_names)];
}

/* socket.getaddrinfo(host, port [, {family=, type=, passive=, timeout=}]) -> list */
static int getaddrinfo_k(lua_State *L, int status, lua_KContext ctx) {
  int outcome = strand_resumed(L, status);
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = (int)(ctx & 0xff);
  hints.ai_socktype = (int)((ctx >> 8) & 0xff);
  hints.ai_flags = (ctx & 0x10000) ? AI_PASSIVE : 0;
  int n = lookup(L, &hints, 1, 4, lua_tonumber(L, 3), outcome, ctx, getaddrinfo_k, &res);
  if (n) return n;
  lua_newtable(L);
  int i = 0;
  for (struct addrinfo *a = res; a; a = a->ai_next) {
    if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
    int dup = 0;                           /* the same address may come once per protocol */
    for (struct addrinfo *b = res; b != a && !dup; b = b->ai_next)
      dup = b->ai_addrlen == a->ai_addrlen && memcmp(b->ai_addr, a->ai_addr, a->ai_addrlen) == 0;
    if (dup) continue;
    lua_createtable(L, 0, 3);
    lua_pushstring(L, family_name(a->ai_family));
    lua_setfield(L, -2, "family");
    sock_push_addr(L, a->ai_addr, a->ai_addrlen);
    lua_setfield(L, -3, "port");
    lua_setfield(L, -2, "host");
    lua_rawseti(L, -2, ++i);
  }
  freeaddrinfo(res);
  return 1;
}

static int l_getaddrinfo(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) luaL_checkstring(L, 1);
  check_port(L, 2);
  int family = AF_UNSPEC, type = SOCK_STREAM, passive = 0;
  double deadline = STRAND_FOREVER;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    if (lua_getfield(L, 3, "family") != LUA_TNIL) family = check_family(L, -1);
    if (lua_getfield(L, 3, "type") != LUA_TNIL)
      type = type_values[luaL_checkoption(L, -1, NULL, type_names)];
    passive = lua_getfield(L, 3, "passive") != LUA_TNIL && lua_toboolean(L, -1);
    lua_getfield(L, 3, "timeout");
    deadline = strand_opt_deadline(L, -1);
  }
  if (lua_isnoneornil(L, 1) && lua_isnoneornil(L, 2))
    return luaL_argerror(L, 1, "host or port expected");
  lua_settop(L, 2);
  lua_pushnumber(L, deadline);                              /* 3: deadline */
  lua_KContext ctx = (lua_KContext)family | ((lua_KContext)type << 8) | (passive ? 0x10000 : 0);
  return getaddrinfo_k(L, LUA_OK, ctx);
}

/* }==== */

/* {==== bind, listen, connect, accept */

static void check_addr_args(lua_State *L, sock *s) {
  if (s->family == AF_UNIX) {
    luaL_checkstring(L, 2);
    lua_settop(L, 2);
    lua_pushnil(L);
  } else {
    if (!lua_isnoneornil(L, 2)) luaL_checkstring(L, 2);
    check_port(L, 3);
    lua_settop(L, 3);
  }
}

/* Stack: s, host|path, port|nil, deadline, address slot [, resolver] */
static int bind_k(lua_State *L, int status, lua_KContext ctx) {
  int outcome = strand_resumed(L, status);
  sock *s = (sock *)lua_touserdata(L, 1);
  if (s->io.fd < 0) return strand_fail_msg(L, "closed", "ECLOSED");
  int n = sock_addr(L, s, 2, 5, lua_tonumber(L, 4), outcome, 1, ctx, bind_k);
  if (n) return n;
  if (s->io.fd < 0) return strand_fail_msg(L, "closed", "ECLOSED");
  size_t len;
  const char *sa = lua_tolstring(L, 5, &len);
  if (bind(s->io.fd, (const struct sockaddr *)sa, (socklen_t)len) != 0) return strand_fail(L, errno);
  lua_pushboolean(L, 1);
  return 1;
}

static int m_bind(lua_State *L) {
  sock *s = sock_check(L, 1);
  check_addr_args(L, s);
  lua_pushnumber(L, sock_deadline(s));
  lua_pushnil(L);
  return bind_k(L, LUA_OK, 0);
}

static int m_listen(lua_State *L) {
  sock *s = sock_check(L, 1);
  lua_Integer backlog = luaL_optinteger(L, 2, SOMAXCONN);
  luaL_argcheck(L, backlog >= 0 && backlog <= 65535, 2, "backlog must be 0..65535");
  if (listen(s->io.fd, (int)backlog) != 0) return strand_fail(L, errno);
  if (!s->listening) s->u.pause = 0;         /* a stream's skip state ends here */
  s->listening = 1;
  lua_pushboolean(L, 1);
  return 1;
}

enum { CONNECT_START, CONNECT_WAIT, CONNECT_BACKOFF };

#define UNIX_BACKOFF 0.002   /* a full UNIX backlog has no readiness event: poll at this pace */

static int connect_k(lua_State *L, int status, lua_KContext ctx) {
  int outcome = strand_resumed(L, status);
  sock *s = (sock *)lua_touserdata(L, 1);
  double deadline = lua_tonumber(L, 4);
  if (lua_type(L, 5) != LUA_TSTRING) {
    if (s->io.fd < 0) return strand_fail_msg(L, "closed", "ECLOSED");
    int n = sock_addr(L, s, 2, 5, deadline, outcome, 0, CONNECT_START, connect_k);
    if (n) return n;
    outcome = STRAND_READY;
    ctx = CONNECT_START;
  }
  size_t len;
  const char *sa = lua_tolstring(L, 5, &len);
  for (;;) {
    if (outcome == STRAND_CLOSED || s->io.fd < 0) return strand_fail_msg(L, "closed", "ECLOSED");
    int fd = s->io.fd;
    if (ctx == CONNECT_WAIT) {
      int err = 0;
      socklen_t elen = sizeof err;
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0) err = errno;
      if (err) return strand_fail(L, err);
      struct sockaddr_storage peer;
      socklen_t plen = sizeof peer;
      if (getpeername(fd, (struct sockaddr *)&peer, &plen) == 0) break;   /* connected */
      if (errno != ENOTCONN) return strand_fail(L, errno);
      if (outcome == STRAND_TIMEOUT) return strand_fail_msg(L, "timeout", "ETIMEDOUT");
    } else {
      if (ctx == CONNECT_BACKOFF && strand_now() >= deadline)
        return strand_fail_msg(L, "timeout", "ETIMEDOUT");
      if (connect(fd, (const struct sockaddr *)sa, (socklen_t)len) == 0) break;
      int err = errno;
      if (err == EISCONN) break;
      if (err == EAGAIN && s->family == AF_UNIX) {        /* listener's backlog is full */
        if (s->nonblocking) return strand_fail_msg(L, "wouldblock", "EAGAIN");
        double t = strand_now() + UNIX_BACKOFF;
        ctx = CONNECT_BACKOFF;
        outcome = strand_wait_timer(L, t < deadline ? t : deadline, ctx, connect_k);
        continue;
      }
      if (err != EINPROGRESS && err != EINTR && err != EALREADY) return strand_fail(L, err);
      if (s->nonblocking) return strand_fail_msg(L, "wouldblock", "EINPROGRESS");
      ctx = CONNECT_WAIT;
    }
    if (s->nonblocking) return strand_fail_msg(L, "wouldblock", "EALREADY");
    outcome = strand_wait_io(L, &s->io, STRAND_WRITE, deadline, ctx, connect_k);
  }
  s->io.ready |= STRAND_WRITE;
  lua_pushboolean(L, 1);
  return 1;
}

static int m_connect(lua_State *L) {
  sock *s = sock_check(L, 1);
  check_addr_args(L, s);
  if (s->family != AF_UNIX) luaL_checkstring(L, 2);
  lua_pushnumber(L, sock_deadline(s));
  lua_pushnil(L);
  return connect_k(L, LUA_OK, CONNECT_START);
}

/* After accept() failed for lack of fds or memory, the next accept() on that socket first
 * sleeps this long: a plain `while true do srv:accept() end` loop then yields to the tasks that
 * may free fds instead of spinning (the pending connection stays queued meanwhile). */
#define ACCEPT_PAUSE 0.05

enum { ACCEPT_TRY, ACCEPT_PAUSING };

/* Stack: s, deadline, the new socket (closed until accept4 succeeds) */
static int accept_k(lua_State *L, int status, lua_KContext ctx) {
  int outcome = strand_resumed(L, status);
  sock *s = (sock *)lua_touserdata(L, 1);
  double deadline = lua_tonumber(L, 2);
  for (;;) {
    if (outcome == STRAND_CLOSED || s->io.fd < 0) return strand_fail_msg(L, "closed", "ECLOSED");
    if (ctx == ACCEPT_PAUSING) {          /* the pause's own timer says TIMEOUT: go on */
      ctx = ACCEPT_TRY;
      if (strand_now() >= deadline) return strand_fail_msg(L, "timeout", "ETIMEDOUT");
    } else if (outcome == STRAND_TIMEOUT) {
      return strand_fail_msg(L, "timeout", "ETIMEDOUT");
    }
    if (s->listening && s->u.pause > 0 && !s->nonblocking) {
      if (strand_now() < s->u.pause) {
        ctx = ACCEPT_PAUSING;
        outcome = strand_wait_timer(L, s->u.pause < deadline ? s->u.pause : deadline, ctx, accept_k);
        continue;
      }
      s->u.pause = 0;
    }
    if (strand_io_maybe(&s->io, STRAND_READ) || s->nonblocking) {
      struct sockaddr_storage ss;
      socklen_t len = sizeof ss;
      int fd = accept4(s->io.fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        sock *c = (sock *)lua_touserdata(L, 3);
        sock_adopt(c, fd);
        lua_pushvalue(L, 3);
        return 1 + sock_push_addr(L, (struct sockaddr *)&ss, len);
      }
      switch (errno) {
        case EAGAIN:
#if EWOULDBLOCK != EAGAIN
        case EWOULDBLOCK:
#endif
          break;
        /* the connection died in the queue, or a network error the next accept won't see */
        case EINTR: case ECONNABORTED: case EPROTO: case ENETDOWN: case ENOPROTOOPT:
        case EHOSTDOWN: case ENONET: case EHOSTUNREACH: case EOPNOTSUPP: case ENETUNREACH:
          continue;
        case EMFILE: case ENFILE: case ENOBUFS: case ENOMEM: {
          int err = errno;                  /* out of resources: report now, pause next time */
          if (s->listening) s->u.pause = strand_now() + ACCEPT_PAUSE;
          return strand_fail(L, err);
        }
        default:
          return strand_fail(L, errno);
      }
    }
    if (s->nonblocking) {
      strand_io_clear(&s->io, STRAND_READ);
      return strand_fail_msg(L, "wouldblock", "EAGAIN");
    }
    outcome = strand_wait_io(L, &s->io, STRAND_READ, deadline, ctx, accept_k);
  }
}

static int m_accept(lua_State *L) {
  sock *s = sock_check(L, 1);
  lua_settop(L, 1);
  lua_pushnumber(L, sock_deadline(s));
  sock_new(L, s->family, s->type)->maxline = s->maxline;   /* accepted sockets inherit it */
  return accept_k(L, LUA_OK, ACCEPT_TRY);
}

/* }==== */

/* {==== module functions */

static int l_tcp(lua_State *L) {
  return sock_open(L, check_family(L, 1), SOCK_STREAM);
}

static int l_udp(lua_State *L) {
  return sock_open(L, check_family(L, 1), SOCK_DGRAM);
}

static int check_type(lua_State *L, int arg) {
  return type_values[luaL_checkoption(L, arg, "stream", type_names)];
}

static int l_unix(lua_State *L) {
  return sock_open(L, AF_UNIX, check_type(L, 1));
}

static int l_pair(lua_State *L) {
  int type = check_type(L, 1);
  sock *a = sock_new(L, AF_UNIX, type);
  sock *b = sock_new(L, AF_UNIX, type);
  int fds[2];
  if (socketpair(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0)
    return strand_fail(L, errno);
  sock_adopt(a, fds[0]);
  sock_adopt(b, fds[1]);
  return 2;
}

/* Whether a socket at path is served: a stream connect is refused only when nobody is bound there
 * (a live datagram socket answers EPROTOTYPE, a live listener accepts or has a full backlog). 0: stale
 * (or gone), 1: live, -errno: cannot tell. */
static int socket_file_live(const char *path) {
  struct sockaddr_un a;
  size_t len = strlen(path);
  if (len >= sizeof a.sun_path) return -ENAMETOOLONG;
  memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  memcpy(a.sun_path, path, len);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
  int err = rc == 0 ? 0 : errno;
  close(fd);
  if (rc == 0 || err == EAGAIN || err == EINPROGRESS || err == EPROTOTYPE || err == EINTR) return 1;
  if (err == ECONNREFUSED || err == ENOENT) return 0;
  return -err;
}

/* Remove a stale UNIX socket file (never anything else, never one a live socket is bound to):
 * true | nil, msg, code ("address already in use" when live). */
static int l_unlink_socket(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  if (path[0] == '\0' || lstat(path, &st) != 0) {     /* abstract name, or nothing there */
    lua_pushboolean(L, 1);
    return 1;
  }
  if (!S_ISSOCK(st.st_mode)) return strand_fail(L, EEXIST);
  int live = socket_file_live(path);
  if (live == 1) return strand_fail(L, EADDRINUSE);
  if (live < 0) return strand_fail(L, -live);
  if (unlink(path) != 0 && errno != ENOENT) return strand_fail(L, errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* }==== */

static const luaL_Reg sock_methods[] = {
  {"close", m_close}, {"bind", m_bind}, {"listen", m_listen}, {"connect", m_connect},
  {"accept", m_accept}, {NULL, NULL}
};

static const luaL_Reg sock_metamethods[] = {
  {"__gc", m_close}, {"__close", m_close}, {"__tostring", m_tostring}, {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"tcp", l_tcp}, {"udp", l_udp}, {"unix", l_unix}, {"pair", l_pair},
  {"getaddrinfo", l_getaddrinfo}, {"_unlink_socket", l_unlink_socket}, {NULL, NULL}
};

/* Writing to a peer that has gone raises SIGPIPE, which kills by default: send() uses
 * MSG_NOSIGNAL, but sendfile(2) cannot, so SIGPIPE is ignored process-wide at load unless the
 * program installed its own disposition. Such writes return nil, "closed" (EPIPE) instead. */
static void ignore_sigpipe(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL &&
      !(sa.sa_flags & SA_SIGINFO))
    signal(SIGPIPE, SIG_IGN);
}

int strand_open_socket(lua_State *L) {
  ignore_sigpipe();
  luaL_newmetatable(L, SOCK_META);              /* mt; every function gets it as upvalue 1 */
  lua_pushvalue(L, -1);
  luaL_setfuncs(L, sock_metamethods, 1);
  lua_newtable(L);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, sock_methods, 1);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, strand_sockio_methods, 1);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, strand_sockopt_methods, 1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);

  strand_sockio_init(L);
  luaL_newmetatable(L, RESOLVER_META);
  lua_pushcfunction(L, resolver_close);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, resolver_close);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);

  luaL_newlib(L, funcs);
  return 1;
}
