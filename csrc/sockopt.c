/* sockopt.c — the settings and names of strand sockets: setoption/getoption, timeouts,
 * blocking mode, shutdown, getsockname/getpeername, fileno. */
#include "sock.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>

enum { OPT_BOOL, OPT_INT, OPT_LINGER };

typedef struct sockopt { const char *name; int level, optname, kind; } sockopt;

static const sockopt options[] = {
  {"reuseaddr", SOL_SOCKET, SO_REUSEADDR, OPT_BOOL},
  {"reuseport", SOL_SOCKET, SO_REUSEPORT, OPT_BOOL},
  {"nodelay", IPPROTO_TCP, TCP_NODELAY, OPT_BOOL},
  {"keepalive", SOL_SOCKET, SO_KEEPALIVE, OPT_BOOL},
  {"rcvbuf", SOL_SOCKET, SO_RCVBUF, OPT_INT},
  {"sndbuf", SOL_SOCKET, SO_SNDBUF, OPT_INT},
  {"linger", SOL_SOCKET, SO_LINGER, OPT_LINGER},
  {"broadcast", SOL_SOCKET, SO_BROADCAST, OPT_BOOL},
  {"ipv6only", IPPROTO_IPV6, IPV6_V6ONLY, OPT_BOOL},
  {NULL, 0, 0, 0}
};

static const sockopt *check_option(lua_State *L, int arg) {
  const char *name = luaL_checkstring(L, arg);
  for (const sockopt *o = options; o->name; o++)
    if (strcmp(o->name, name) == 0) return o;
  luaL_argerror(L, arg, lua_pushfstring(L, "unknown option '%s'", name));
  return NULL;
}

/* "maxline" is strand's own: the longest line read("l"/"L") and lines() accept (bytes before
 * the '\n'; default 64 KiB; 0 or false: no limit). Longer: nil, "line too long", bytes kept. */
static int is_maxline(lua_State *L, int arg) {
  const char *name = lua_tostring(L, arg);
  return name != NULL && strcmp(name, "maxline") == 0;
}

/* s:setoption(name, value) -> true | nil, msg, code. Booleans for flags, integers for the
 * buffer sizes, seconds or false for linger, bytes (or false) for maxline. */
static int m_setoption(lua_State *L) {
  sock *s = sock_check(L, 1);
  if (is_maxline(L, 2)) {
    lua_Integer n = 0;
    if (!(lua_type(L, 3) == LUA_TBOOLEAN && !lua_toboolean(L, 3))) {
      n = luaL_checkinteger(L, 3);
      luaL_argcheck(L, n >= 0 && n <= 0xffffffffLL, 3, "maxline must be 0..4294967295 (0: no limit)");
    }
    s->maxline = (uint32_t)n;
    lua_pushboolean(L, 1);
    return 1;
  }
  const sockopt *o = check_option(L, 2);
  int v = 0;
  struct linger lg;
  const void *val = &v;
  socklen_t len = sizeof v;
  switch (o->kind) {
    case OPT_BOOL:
      if (lua_type(L, 3) == LUA_TNUMBER) v = lua_tointeger(L, 3) != 0;
      else { luaL_checktype(L, 3, LUA_TBOOLEAN); v = lua_toboolean(L, 3); }
      break;
    case OPT_INT: {
      lua_Integer n = luaL_checkinteger(L, 3);
      luaL_argcheck(L, n >= 0 && n <= 0x7fffffff, 3, "size out of range");
      v = (int)n;
      break;
    }
    default:                                     /* OPT_LINGER */
      memset(&lg, 0, sizeof lg);
      if (lua_isnoneornil(L, 3) || (lua_type(L, 3) == LUA_TBOOLEAN && !lua_toboolean(L, 3))) {
        lg.l_onoff = 0;
      } else {
        lua_Integer secs = luaL_checkinteger(L, 3);
        luaL_argcheck(L, secs >= 0 && secs <= 0x7fffffff, 3, "seconds must be >= 0 (or false)");
        lg.l_onoff = 1;
        lg.l_linger = (int)secs;
      }
      val = &lg;
      len = sizeof lg;
      break;
  }
  if (setsockopt(s->io.fd, o->level, o->optname, val, len) != 0) return strand_fail(L, errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* s:getoption(name) -> value | nil, msg, code */
static int m_getoption(lua_State *L) {
  sock *s = sock_check(L, 1);
  if (is_maxline(L, 2)) {
    lua_pushinteger(L, (lua_Integer)s->maxline);
    return 1;
  }
  const sockopt *o = check_option(L, 2);
  if (o->kind == OPT_LINGER) {
    struct linger lg;
    socklen_t len = sizeof lg;
    if (getsockopt(s->io.fd, o->level, o->optname, &lg, &len) != 0) return strand_fail(L, errno);
    if (lg.l_onoff) lua_pushinteger(L, lg.l_linger);
    else lua_pushboolean(L, 0);
    return 1;
  }
  int v = 0;
  socklen_t len = sizeof v;
  if (getsockopt(s->io.fd, o->level, o->optname, &v, &len) != 0) return strand_fail(L, errno);
  if (o->kind == OPT_BOOL) lua_pushboolean(L, v != 0);
  else lua_pushinteger(L, v);
  return 1;
}

/* s:settimeout(seconds|nil): the default timeout of this socket's blocking calls */
static int m_settimeout(lua_State *L) {
  sock *s = sock_check(L, 1);
  if (lua_isnoneornil(L, 2)) {
    s->timeout = -1;
  } else {
    lua_Number t = luaL_checknumber(L, 2);
    luaL_argcheck(L, t >= 0 && t == t, 2, "timeout must be >= 0 or nil");
    s->timeout = t == HUGE_VAL ? -1 : t;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int m_gettimeout(lua_State *L) {
  sock *s = sock_check(L, 1);
  if (s->timeout < 0) lua_pushnil(L);
  else lua_pushnumber(L, s->timeout);
  return 1;
}

/* s:setblocking(false): calls never wait and return nil, "wouldblock" instead */
static int m_setblocking(lua_State *L) {
  sock *s = sock_check(L, 1);
  luaL_checktype(L, 2, LUA_TBOOLEAN);
  s->nonblocking = !lua_toboolean(L, 2);
  lua_pushboolean(L, 1);
  return 1;
}

static int m_shutdown(lua_State *L) {
  static const char *const hows[] = {"r", "w", "rw", NULL};
  static const int howv[] = {SHUT_RD, SHUT_WR, SHUT_RDWR};
  sock *s = sock_check(L, 1);
  int how = howv[luaL_checkoption(L, 2, "rw", hows)];
  if (shutdown(s->io.fd, how) != 0) return strand_fail(L, errno);
  lua_pushboolean(L, 1);
  return 1;
}

static int push_name(lua_State *L, int peer) {
  sock *s = sock_check(L, 1);
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  int r = peer ? getpeername(s->io.fd, (struct sockaddr *)&ss, &len)
               : getsockname(s->io.fd, (struct sockaddr *)&ss, &len);
  if (r != 0) return strand_fail(L, errno);
  return sock_push_addr(L, (struct sockaddr *)&ss, len);
}

/* s:getsockname() / s:getpeername() -> host, port (inet) | path (unix) */
static int m_getsockname(lua_State *L) { return push_name(L, 0); }
static int m_getpeername(lua_State *L) { return push_name(L, 1); }

static int m_fileno(lua_State *L) {
  sock *s = sock_check(L, 1);
  sock_uring_detach(s);                      /* STRAND_POLLER=uring: nothing read behind its back */
  lua_pushinteger(L, s->io.fd);
  return 1;
}

/* s:dirty() -> true when read() has buffered bytes (ready without any new data; LuaSocket's name) */
static int m_dirty(lua_State *L) {
  lua_pushboolean(L, strand_buf_len(&sock_check(L, 1)->rbuf) > 0);
  return 1;
}

/* s:pending() -> bytes buffered by read() and not consumed yet (selectors count them as ready) */
static int m_pending(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)strand_buf_len(&sock_check(L, 1)->rbuf));
  return 1;
}

const luaL_Reg strand_sockopt_methods[] = {
  {"setoption", m_setoption}, {"getoption", m_getoption}, {"settimeout", m_settimeout},
  {"gettimeout", m_gettimeout}, {"setblocking", m_setblocking}, {"shutdown", m_shutdown},
  {"getsockname", m_getsockname}, {"getpeername", m_getpeername}, {"fileno", m_fileno},
  {"dirty", m_dirty}, {"pending", m_pending}, {NULL, NULL}
};
