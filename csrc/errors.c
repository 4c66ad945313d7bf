/* errors.c — runtime failures as `nil, message, CODE`: short lowercase messages and
 * stable errno names, shared by every area. */
#include "strand.h"

#include <errno.h>
#include <string.h>
#include <ctype.h>

typedef struct errinfo { int err; const char *name; const char *msg; } errinfo;

#define E(x, m) { x, #x, m }
static const errinfo table[] = {
  E(ETIMEDOUT, "timeout"), E(ECONNREFUSED, "connection refused"),
  E(ECONNRESET, "connection reset"), E(EPIPE, "closed"), E(ENOTCONN, "not connected"),
  E(ECONNABORTED, "connection aborted"), E(EHOSTUNREACH, "host unreachable"),
  E(ENETUNREACH, "network unreachable"), E(EADDRINUSE, "address already in use"),
  E(EADDRNOTAVAIL, "address not available"), E(EAFNOSUPPORT, "address family not supported"),
  E(EACCES, "permission denied"), E(EPERM, "operation not permitted"),
  E(ENOENT, "no such file or directory"), E(EEXIST, "file exists"),
  E(EMFILE, "too many open files"), E(ENFILE, "too many open files in system"),
  E(ENOBUFS, "no buffer space available"), E(ENOMEM, "out of memory"),
  E(EAGAIN, "wouldblock"), E(EINPROGRESS, "in progress"), E(EALREADY, "already in progress"),
  E(EISCONN, "already connected"), E(EINVAL, "invalid argument"), E(EBADF, "bad file descriptor"),
  E(EMSGSIZE, "message too long"), E(ENOTSOCK, "not a socket"), E(EISDIR, "is a directory"),
  E(ENOTDIR, "not a directory"), E(ENOSPC, "no space left on device"), E(EINTR, "interrupted"),
  E(ECHILD, "no child processes"), E(ESRCH, "no such process"), E(ENOSYS, "not supported"),
  E(EOPNOTSUPP, "operation not supported"), E(EPROTONOSUPPORT, "protocol not supported"),
  E(EDEADLK, "deadlock"), E(EIO, "input/output error"), E(ENAMETOOLONG, "name too long"),
  E(ELOOP, "too many symbolic links"), E(EROFS, "read-only file system"), E(EXDEV, "cross-device link"),
  E(ENOTEMPTY, "directory not empty"), E(ESPIPE, "illegal seek"), E(EOVERFLOW, "value too large"),
  E(EDESTADDRREQ, "destination address required"), E(ENETDOWN, "network is down"),
  E(EPROTOTYPE, "wrong protocol type"), E(ENOPROTOOPT, "protocol option not available"),
  { 0, NULL, NULL }
};
#undef E

static const errinfo *find(int err) {
  for (const errinfo *e = table; e->name; e++)
    if (e->err == err) return e;
  return NULL;
}

const char *strand_errmsg(int err) {
  const errinfo *e = find(err);
  return e ? e->msg : NULL;
}

const char *strand_errname(int err) {
  const errinfo *e = find(err);
  return e ? e->name : NULL;
}

int strand_fail(lua_State *L, int err) {
  const errinfo *e = find(err);
  lua_pushnil(L);
  if (e) {
    lua_pushstring(L, e->msg);
    lua_pushstring(L, e->name);
  } else {
    char buf[128];
    const char *s = strerror(err);
    size_t i;
    for (i = 0; s[i] && i < sizeof buf - 1; i++) buf[i] = (char)tolower((unsigned char)s[i]);
    buf[i] = 0;
    lua_pushstring(L, buf);
    lua_pushfstring(L, "E%d", err);
  }
  return 3;
}

int strand_fail_msg(lua_State *L, const char *msg, const char *code) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  if (code == NULL) return 2;
  lua_pushstring(L, code);
  return 3;
}
