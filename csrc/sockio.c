/* sockio.c — moving bytes on strand sockets: recv/read/lines/recv_frame through the per-loop
 * scratch buffer and the socket's buffer, send/sendall/write/send_frame, sendfile, datagrams. */
#include "sock.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define FRAME_MAX_DEFAULT (64 * 1024 * 1024)   /* recv_frame() without max */
#define SENDFILE_CHUNK (1 << 30)

#define FDHOLDER_META "strand.socket.fdholder"

static int fail_errno(lua_State *L, int err) {
  if (err == EAGAIN || err == EWOULDBLOCK) return strand_fail_msg(L, "wouldblock", "EAGAIN");
  return strand_fail(L, err);
}

/* {==== reading */

/* What a read asks for; RQ_ITER marks the lines() iterator (raises instead of nil, msg). */
enum { RQ_SOME, RQ_LINE, RQ_LINEKEEP, RQ_ALL, RQ_COUNT, RQ_FRAME };
#define RQ_KIND(ctx) ((int)((ctx) & 0xff))
#define RQ_ITER 0x100

enum { M_MORE, M_OK, M_EOF, M_BIG, M_TRUNC, M_LONG };

/* Match a request of `kind` (n: count, max, or for lines the socket's maxline, 0 = none) against
 * p[0..len). M_OK sets the result p[off..off+take) and the bytes consumed, drop. M_BIG (frame over
 * max) sets take = frame length. M_LONG: the line (before its '\n') is longer than n bytes; the
 * bytes stay where they are. `from` is where to resume looking for '\n'. */
static int rq_match(int kind, size_t n, const char *p, size_t len, int eof, size_t from,
                    size_t *off, size_t *take, size_t *drop) {
  *off = 0;
  switch (kind) {
    case RQ_SOME:
      if (len == 0) return eof ? M_EOF : M_MORE;
      *take = *drop = len < n ? len : n;
      return M_OK;
    case RQ_LINE: case RQ_LINEKEEP: {
      const char *q = from < len ? (const char *)memchr(p + from, '\n', len - from) : NULL;
      if (q) {
        size_t i = (size_t)(q - p);
        if (n && i > n) return M_LONG;
        *drop = i + 1;
        if (kind == RQ_LINEKEEP) *take = i + 1;
        else *take = (i > 0 && p[i - 1] == '\r') ? i - 1 : i;
        return M_OK;
      }
      if (n && len > n) return M_LONG;  /* no '\n' in more than n bytes */
      if (!eof) return M_MORE;
      if (len == 0) return M_EOF;
      *take = *drop = len;             /* the last line, without a newline */
      return M_OK;
    }
    case RQ_ALL:
      if (!eof) return M_MORE;
      *take = *drop = len;
      return M_OK;
    case RQ_COUNT:
      if (len >= n && len > 0) { *take = *drop = n; return M_OK; }
      if (!eof) return M_MORE;
      if (len == 0) return M_EOF;
      *take = *drop = len;             /* less only at the end of the stream */
      return M_OK;
    default: {                         /* RQ_FRAME */
      if (len < 4) return !eof ? M_MORE : len ? M_TRUNC : M_EOF;
      const unsigned char *u = (const unsigned char *)p;
      size_t fl = ((size_t)u[0] << 24) | ((size_t)u[1] << 16) | ((size_t)u[2] << 8) | u[3];
      if (fl > n) { *take = fl; *drop = 4; return M_BIG; }
      if (len - 4 >= fl) { *off = 4; *take = fl; *drop = 4 + fl; return M_OK; }
      return eof ? M_TRUNC : M_MORE;
    }
  }
}

static int rfail(lua_State *L, lua_KContext ctx, const char *msg, const char *code) {
  if (ctx & RQ_ITER) {
    if (strcmp(msg, "closed") == 0) { lua_pushnil(L); return 1; }   /* the loop ends */
    return luaL_error(L, "%s", msg);
  }
  return strand_fail_msg(L, msg, code);
}

static int rfail_errno(lua_State *L, lua_KContext ctx, int err) {
  if (!(ctx & RQ_ITER)) return fail_errno(L, err);
  fail_errno(L, err);
  return luaL_error(L, "%s", lua_tostring(L, -2));
}

/* One recv(2) into buf, EINTR retried. Keeps the readiness bookkeeping: a short read drained
 * the socket (the next read waits for the poller, no syscall) unless the peer hung up (then
 * the end or an error is still to be read and no new edge would come); EAGAIN clears it too;
 * 0 on a stream marks the end. Returns the count, or -1 with errno. */
static ssize_t sock_recv1(sock *s, char *buf, size_t len) {
  if (s->io.loop && s->io.loop->poller == &strand_poller_uring && s->type == SOCK_STREAM) {
    /* STRAND_POLLER=uring; a socket open in another process too (made before a fork) reads by
     * readiness + recv(2) as under epoll: no recv request takes its bytes ahead of a reader */
    int mode = s->nonblocking ? STRAND_URING_NONBLOCK : 0;
    if (s->forkgen != sock_fork_epoch()) mode |= STRAND_URING_SHARED;
    long r = strand_uring_recv(&s->io, buf, len, mode);
    if (r != -2) {
      if (r == 0) s->eof = 1;
      return (ssize_t)r;
    }
  }
  for (;;) {
    ssize_t r = recv(s->io.fd, buf, len, 0);
    if (r >= 0) {
      if (s->type == SOCK_STREAM) {
        if (r == 0) s->eof = 1;
        else if ((size_t)r < len && !(s->io.ready & STRAND_HUP))
          strand_io_clear(&s->io, STRAND_READ);
      }
      return r;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      strand_io_clear(&s->io, STRAND_READ);
      errno = EAGAIN;
    }
    return -1;
  }
}

/* STRAND_POLLER=uring: the fd is handed to other code (fileno): cancel its multishot recv for
 * good and move the bytes it took into the read buffer, where every read and pending() see them. */
void sock_uring_detach(sock *s) {
  if (s->io.fd < 0 || s->type != SOCK_STREAM || s->io.loop == NULL ||
      s->io.loop->poller != &strand_poller_uring)
    return;
  strand_uring_disarm(&s->io, 1);
  char tmp[2048];
  size_t n;
  while ((n = strand_uring_take(&s->io, tmp, sizeof tmp)) > 0)
    if (strand_buf_append(&s->rbuf, tmp, n) != 0) break;   /* ENOMEM: the rest stays queued */
}

/* (in .data, not .bss: beside process.c's spare_rfd, on the page a start writes anyway; each
 * other page a parent writes per fork is one more page fault per process.start) */
static _Atomic uint32_t fork_epoch __attribute__((section(".data")));

uint32_t sock_fork_epoch(void) { return atomic_load_explicit(&fork_epoch, memory_order_relaxed); }

/* STRAND_POLLER=uring: a queued-bytes hand-over for strand_uring_prefork (the slots it calls this
 * for are stream sockets on the fast path, whose io is a sock's first member). */
static void sock_uring_forking(strand_io *io) {
  sock *s = (sock *)(void *)io;
  char tmp[2048];
  size_t n;
  while ((n = strand_uring_take(io, tmp, sizeof tmp)) > 0)
    if (strand_buf_append(&s->rbuf, tmp, n) != 0) break;   /* ENOMEM: the rest stays queued */
}

/* Before a fork (process.c): every socket open now will be open in two processes. From now on
 * they read by readiness + recv(2) in both, as under epoll: the kernel socket holds what comes
 * next and whichever process reads takes it. The calling loop's multishot recvs are cancelled
 * at once (else the parent's ring would go on taking bytes it may never read: a parent that
 * hands a connection to a child and only waits for it), and the bytes they took go into the
 * sockets' read buffers, which both processes keep, like any bytes read before the fork. */
void strand_sock_prefork(lua_State *L) {
  atomic_fetch_add_explicit(&fork_epoch, 1, memory_order_relaxed);
  strand_loop *loop = strand_loop_alive(L) ? strand_loop_get(L) : NULL;
  strand_uring_forking(loop);          /* other threads' io_uring loops stop their recvs now */
  if (loop == NULL) return;
  if (loop->poller == &strand_poller_uring) strand_uring_prefork(loop, sock_uring_forking);
}

static int can_read(const sock *s) {
  return s->nonblocking || strand_io_maybe(&s->io, STRAND_READ);
}

/* Discard what is left of an oversize frame: 0 when done, EAGAIN, or an errno. */
static int skip_pending(sock *s, char *scratch) {
  while (s->u.skip) {
    if (strand_buf_len(&s->rbuf)) {
      size_t d = s->u.skip < strand_buf_len(&s->rbuf) ? s->u.skip : strand_buf_len(&s->rbuf);
      strand_buf_consume(&s->rbuf, d);
      s->u.skip -= d;
      continue;
    }
    if (s->eof) { s->u.skip = 0; break; }
    if (!can_read(s)) return EAGAIN;
    ssize_t r = sock_recv1(s, scratch, s->u.skip < STRAND_SCRATCH ? s->u.skip : STRAND_SCRATCH);
    if (r > 0) s->u.skip -= (size_t)r;
    else if (r == 0) s->u.skip = 0;
    else return errno;
  }
  return 0;
}

/* An oversize frame: its header is consumed, its payload skipped (now, as far as it is here;
 * the rest by the next reads). The stream stays at a frame boundary. */
static int frame_too_large(lua_State *L, lua_KContext ctx, sock *s, const char *p, size_t len,
                           size_t fl, int buffered) {
  size_t here = len - 4 < fl ? len - 4 : fl;
  s->u.skip = fl - here;
  if (buffered) {
    strand_buf_consume(&s->rbuf, 4 + here);
  } else if (strand_buf_append(&s->rbuf, p + 4 + here, len - 4 - here) != 0) {
    return rfail_errno(L, ctx, ENOMEM);
  }
  return rfail(L, ctx, "frame too large", "EMSGSIZE");
}

/* Stack: s, n (count or max), deadline. ctx: request kind | RQ_ITER. */
static int read_k(lua_State *L, int status, lua_KContext ctx) {
  int outcome = strand_resumed(L, status);
  sock *s = (sock *)lua_touserdata(L, 1);
  int kind = RQ_KIND(ctx);
  size_t n = (size_t)lua_tointeger(L, 2);
  double deadline = lua_tonumber(L, 3);
  char *scratch = NULL;
  for (;;) {
    if (outcome == STRAND_CLOSED || s->io.fd < 0) return rfail(L, ctx, "closed", "ECLOSED");
    if (outcome == STRAND_TIMEOUT) return rfail(L, ctx, "timeout", "ETIMEDOUT");
    if (scratch == NULL)           /* the loop the fd is registered with, or this state's */
      scratch = strand_loop_scratch(s->io.loop ? s->io.loop : strand_loop_get(L));
    int err = skip_pending(s, scratch);
    if (err == 0) {
      size_t off, take, drop;
      const char *p = strand_buf_peek(&s->rbuf);
      int m = rq_match(kind, n, p, strand_buf_len(&s->rbuf), s->eof, strand_buf_scanned(&s->rbuf), &off, &take, &drop);
      switch (m) {
        case M_OK:
          lua_pushlstring(L, take ? p + off : "", take);
          strand_buf_consume(&s->rbuf, drop);
          return 1;
        case M_EOF: return rfail(L, ctx, "closed", "EOF");
        case M_TRUNC: return rfail(L, ctx, "truncated frame", "EPROTO");
        case M_BIG: return frame_too_large(L, ctx, s, p, strand_buf_len(&s->rbuf), take, 1);
        case M_LONG: return rfail(L, ctx, "line too long", "EMSGSIZE");   /* bytes stay buffered */
        default: break;
      }
      if (kind == RQ_LINE || kind == RQ_LINEKEEP) strand_buf_set_scanned(&s->rbuf, strand_buf_len(&s->rbuf));
      if (can_read(s)) {
        size_t want = STRAND_SCRATCH;
        if (kind == RQ_SOME && n < want) want = n;
        ssize_t r = sock_recv1(s, scratch, want);
        if (r > 0 && strand_buf_len(&s->rbuf) == 0) {
          /* match in the scratch buffer: the socket keeps only what is left over */
          m = rq_match(kind, n, scratch, (size_t)r, 0, 0, &off, &take, &drop);
          if (m == M_BIG) return frame_too_large(L, ctx, s, scratch, (size_t)r, take, 0);
          if (m == M_LONG) {                     /* keep the bytes: the caller decides */
            if (strand_buf_append(&s->rbuf, scratch, (size_t)r) != 0)
              return rfail_errno(L, ctx, ENOMEM);
            return rfail(L, ctx, "line too long", "EMSGSIZE");
          }
          if (m == M_OK) {
            lua_pushlstring(L, scratch + off, take);
            if (strand_buf_append(&s->rbuf, scratch + drop, (size_t)r - drop) != 0)
              return rfail_errno(L, ctx, ENOMEM);
            return 1;
          }
        }
        if (r > 0) {
          if (strand_buf_append(&s->rbuf, scratch, (size_t)r) != 0)
            return rfail_errno(L, ctx, ENOMEM);
          continue;
        }
        if (r == 0) {
          if (s->type != SOCK_STREAM && kind == RQ_SOME) {   /* an empty datagram */
            lua_pushliteral(L, "");
            return 1;
          }
          continue;
        }
        err = errno;
      } else {
        err = EAGAIN;
      }
    }
    if (err != EAGAIN) return rfail_errno(L, ctx, err);
    if (s->nonblocking) return rfail(L, ctx, "wouldblock", "EAGAIN");
    outcome = strand_wait_io(L, &s->io, STRAND_READ, deadline, ctx, read_k);
  }
}

static int start_read(lua_State *L, sock *s, lua_Integer n, lua_KContext ctx) {
  lua_settop(L, 1);
  lua_pushinteger(L, n);
  lua_pushnumber(L, sock_deadline(s));
  return read_k(L, LUA_OK, ctx);
}

/* An argument error of method `name` counted as in s:name(...) (self not counted). Lua names a
 * method only when it sees the call (not under pcall(s.recv, s, 0): "bad argument #2 to '?'"). */
static int method_argerror(lua_State *L, int arg, const char *name, const char *msg) {
  return luaL_error(L, "bad argument #%d to '%s' (%s)", arg - 1, name, msg);
}

/* s:recv([max]) -> 1..max bytes | nil, "closed" at the end of the stream */
static int m_recv(lua_State *L) {
  sock *s = sock_check(L, 1);
  lua_Integer max = luaL_optinteger(L, 2, STRAND_SCRATCH);
  if (max <= 0) return method_argerror(L, 2, "recv", "max must be > 0");
  return start_read(L, s, max, RQ_SOME);
}

/* A read format ("l", "L", "a", "*l", ... or a byte count) -> kind, count. */
static int check_format(lua_State *L, int arg, lua_Integer *n) {
  *n = 0;
  if (lua_isnoneornil(L, arg)) return RQ_LINE;
  if (lua_type(L, arg) == LUA_TNUMBER) {
    *n = luaL_checkinteger(L, arg);
    luaL_argcheck(L, *n >= 0, arg, "count must be >= 0");
    return RQ_COUNT;
  }
  const char *f = luaL_checkstring(L, arg);
  if (*f == '*') f++;
  switch (*f) {
    case 'l': return RQ_LINE;
    case 'L': return RQ_LINEKEEP;
    case 'a': return RQ_ALL;
    default: return luaL_argerror(L, arg, "invalid format (\"l\", \"L\", \"a\" or a count)");
  }
}

/* s:read([fmt]) -> like a Lua file's read: "l" (default), "L", "a", or n bytes */
static int m_read(lua_State *L) {
  sock *s = sock_check(L, 1);
  lua_Integer n;
  int kind = check_format(L, 2, &n);
  if (kind == RQ_LINE || kind == RQ_LINEKEEP) n = s->maxline;
  return start_read(L, s, n, kind);
}

static int lines_iter(lua_State *L) {
  sock *s = sock_check(L, lua_upvalueindex(1));
  int kind = (int)lua_tointeger(L, lua_upvalueindex(2));
  lua_Integer n = lua_tointeger(L, lua_upvalueindex(3));
  if (kind == RQ_LINE || kind == RQ_LINEKEEP) n = s->maxline;   /* as set now */
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(1));
  return start_read(L, s, n, (lua_KContext)kind | RQ_ITER);
}

/* s:lines([fmt]) -> iterator over s:read(fmt); ends at the end of the stream, raises on errors */
static int m_lines(lua_State *L) {
  sock_check(L, 1);
  lua_Integer n;
  int kind = check_format(L, 2, &n);
  lua_settop(L, 1);
  lua_pushinteger(L, kind);
  lua_pushinteger(L, n);
  lua_pushcclosure(L, lines_iter, 3);
  return 1;
}

/* s:recv_frame([max]) -> payload | nil, "frame too large" (payload skipped) | nil, "closed" */
static int m_recv_frame(lua_State *L) {
  sock *s = sock_check(L, 1);
  lua_Integer max = luaL_optinteger(L, 2, FRAME_MAX_DEFAULT);
  if (max < 0 || max > 0xffffffffLL) return method_argerror(L, 2, "recv_frame", "max must be 0..4294967295");
  return start_read(L, s, max, RQ_FRAME);
}

/* }==== */

/* {==== writing */

enum { SEND_ALL, SEND_WRITE, SEND_FRAME };

static int can_write(sock *s) {
  if (s->nonblocking || strand_io_maybe(&s->io, STRAND_WRITE)) return 1;
  /* STRAND_POLLER=uring: not writable while another task's sendall has its send in the ring;
   * done, it makes the socket writable (then send(2) goes after it, in order) */
  if (s->io.loop && s->io.loop->poller == &strand_poller_uring) strand_uring_settle(&s->io);
  return strand_io_maybe(&s->io, STRAND_WRITE);
}

/* sendall/send_frame: nil, msg, bytes_sent, code; write: nil, msg, code */
static int send_fail(lua_State *L, int mode, size_t sent, const char *msg, const char *code) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  if (mode == SEND_WRITE) {
    lua_pushstring(L, code);
    return 3;
  }
  lua_pushinteger(L, (lua_Integer)sent);
  lua_pushstring(L, code);
  return 4;
}

static int send_fail_errno(lua_State *L, int mode, size_t sent, int err) {
  if (err == EAGAIN || err == EWOULDBLOCK) return send_fail(L, mode, sent, "wouldblock", "EAGAIN");
  strand_fail(L, err);                     /* nil, msg, code: anchors the strings */
  return send_fail(L, mode, sent, lua_tostring(L, -2), lua_tostring(L, -1));
}

/* Stack: s, n strings at 2..n+1, deadline at n+2, bytes sent at n+3. ctx: n | mode << 16. */
static int sendall_k(lua_State *L, int status, lua_KContext ctx) {
  int outcome = strand_resumed(L, status);
  sock *s = (sock *)lua_touserdata(L, 1);
  int n = (int)(ctx & 0xffff), mode = (int)((ctx >> 16) & 0xffff);
  double deadline = lua_tonumber(L, n + 2);
  size_t sent = (size_t)lua_tointeger(L, n + 3);
  for (;;) {
    if (outcome == STRAND_CLOSED || s->io.fd < 0) return send_fail(L, mode, sent, "closed", "ECLOSED");
    if (outcome == STRAND_TIMEOUT) {
      if (s->io.loop && s->io.loop->poller == &strand_poller_uring)   /* its send's bytes count */
        sent += (size_t)strand_uring_send_abandon(&s->io, (uint32_t)((uint64_t)ctx >> 32),
                                                  lua_rawlen(L, 2) - sent);
    }
    size_t total = 0;
    for (int i = 2; i <= n + 1; i++) total += lua_rawlen(L, i);
    if (sent >= total) break;   /* all sent is success, even when the timer fired first */
    if (outcome == STRAND_TIMEOUT) return send_fail(L, mode, sent, "timeout", "ETIMEDOUT");
    if (s->io.loop && s->io.loop->poller == &strand_poller_uring && n == 1 &&
        s->type == SOCK_STREAM && !s->nonblocking) {          /* STRAND_POLLER=uring */
      long res;
      uint32_t seq = (uint32_t)((uint64_t)ctx >> 32);
      int st = strand_uring_send(L, &s->io, 2, lua_tostring(L, 2) + sent, total - sent, &res, &seq);
      ctx = (lua_KContext)((uint64_t)(ctx & 0xffffffff) | ((uint64_t)seq << 32));
      if (st == 2) {
        if (res < 0) return send_fail_errno(L, mode, sent, (int)-res);
        sent += (size_t)res;
        lua_pushinteger(L, (lua_Integer)sent);
        lua_replace(L, n + 3);
        continue;
      }
      if (st == 1) {
        outcome = strand_wait_io(L, &s->io, STRAND_WRITE, deadline, ctx, sendall_k);
        continue;
      }
    }
    if (can_write(s)) {
      ssize_t r;
      size_t asked;
      if (n == 1) {
        const char *p = lua_tostring(L, 2);
        asked = total - sent;
        r = send(s->io.fd, p + sent, asked, MSG_NOSIGNAL);
      } else {
        struct iovec iov[64];
        int k = 0;
        size_t pos = 0;
        asked = 0;
        for (int i = 2; i <= n + 1 && k < 64; i++) {
          size_t len;
          const char *p = lua_tolstring(L, i, &len);
          if (pos + len > sent) {
            size_t skip = sent > pos ? sent - pos : 0;
            iov[k].iov_base = (void *)(p + skip);
            iov[k].iov_len = len - skip;
            asked += len - skip;
            k++;
          }
          pos += len;
        }
        struct msghdr msg;
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = iov;
        msg.msg_iovlen = (size_t)k;
        r = sendmsg(s->io.fd, &msg, MSG_NOSIGNAL);
      }
      if (r >= 0) {
        sent += (size_t)r;
        lua_pushinteger(L, (lua_Integer)sent);
        lua_replace(L, n + 3);
        if ((size_t)r < asked) strand_io_clear(&s->io, STRAND_WRITE);   /* send buffer full */
        continue;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return send_fail_errno(L, mode, sent, errno);
      strand_io_clear(&s->io, STRAND_WRITE);
    }
    if (s->nonblocking) return send_fail(L, mode, sent, "wouldblock", "EAGAIN");
    outcome = strand_wait_io(L, &s->io, STRAND_WRITE, deadline, ctx, sendall_k);
  }
  if (mode == SEND_WRITE) lua_pushvalue(L, 1);
  else lua_pushboolean(L, 1);
  return 1;
}

static int start_sendall(lua_State *L, sock *s, int n, int mode) {
  lua_pushnumber(L, sock_deadline(s));
  lua_pushinteger(L, 0);
  return sendall_k(L, LUA_OK, (lua_KContext)n | ((lua_KContext)mode << 16));
}

/* s:sendall(data) -> true | nil, err, bytes_sent, code */
static int m_sendall(lua_State *L) {
  sock *s = sock_check(L, 1);
  luaL_checkstring(L, 2);
  lua_settop(L, 2);
  return start_sendall(L, s, 1, SEND_ALL);
}

/* s:write(...) -> s | nil, err, code (strings or numbers, like a Lua file) */
static int m_write(lua_State *L) {
  sock *s = sock_check(L, 1);
  int n = lua_gettop(L) - 1;
  luaL_argcheck(L, n < 0xffff, 0xffff, "too many arguments");
  for (int i = 2; i <= n + 1; i++) luaL_checklstring(L, i, NULL);
  return start_sendall(L, s, n, SEND_WRITE);
}

/* s:send_frame(data) -> true | nil, err, bytes_sent, code: 4-byte big-endian length + data */
static int m_send_frame(lua_State *L) {
  sock *s = sock_check(L, 1);
  size_t len;
  luaL_checklstring(L, 2, &len);
  luaL_argcheck(L, (unsigned long long)len <= 0xffffffffULL, 2, "frame longer than 4 GiB");
  lua_settop(L, 2);
  unsigned char h[4] = { (unsigned char)(len >> 24), (unsigned char)(len >> 16),
                         (unsigned char)(len >> 8), (unsigned char)len };
  lua_pushlstring(L, (const char *)h, 4);
  lua_insert(L, 2);
  return start_sendall(L, s, 2, SEND_FRAME);
}

/* Stack: s, data, start (0-based), length, deadline */
static int send_k(lua_State *L, int status, lua_KContext ctx) {
  int outcome = strand_resumed(L, status);
  sock *s = (sock *)lua_touserdata(L, 1);
  const char *p = lua_tostring(L, 2) + lua_tointeger(L, 3);
  size_t len = (size_t)lua_tointeger(L, 4);
  for (;;) {
    if (outcome == STRAND_CLOSED || s->io.fd < 0) return strand_fail_msg(L, "closed", "ECLOSED");
    if (outcome == STRAND_TIMEOUT) return strand_fail_msg(L, "timeout", "ETIMEDOUT");
    /* nothing to send on a stream; on a datagram socket an empty datagram is a message */
    if (len == 0 && s->type != SOCK_DGRAM) { lua_pushinteger(L, 0); return 1; }
    if (can_write(s)) {
      ssize_t r = send(s->io.fd, p, len, MSG_NOSIGNAL);
      if (r >= 0) {
        if ((size_t)r < len) strand_io_clear(&s->io, STRAND_WRITE);
        lua_pushinteger(L, r);
        return 1;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return fail_errno(L, errno);
      strand_io_clear(&s->io, STRAND_WRITE);
    }
    if (s->nonblocking) return strand_fail_msg(L, "wouldblock", "EAGAIN");
    outcome = strand_wait_io(L, &s->io, STRAND_WRITE, lua_tonumber(L, 5), ctx, send_k);
  }
}

/* s:send(data [, i [, j]]) -> bytes sent (maybe fewer than asked); i, j as in string.sub */
static int m_send(lua_State *L) {
  sock *s = sock_check(L, 1);
  size_t len;
  luaL_checklstring(L, 2, &len);
  lua_Integer i = luaL_optinteger(L, 3, 1), j = luaL_optinteger(L, 4, -1);
  lua_Integer l = (lua_Integer)len;
  if (i < 0) i = i < -l ? 1 : l + i + 1;
  else if (i == 0) i = 1;
  if (j < 0) j = l + j + 1;
  else if (j > l) j = l;
  lua_settop(L, 2);
  lua_pushinteger(L, i - 1);
  lua_pushinteger(L, i <= j ? j - i + 1 : 0);
  lua_pushnumber(L, sock_deadline(s));
  return send_k(L, LUA_OK, 0);
}

/* }==== */

/* {==== sendfile */

static int fdholder_close(lua_State *L) {
  int *fd = (int *)luaL_checkudata(L, 1, FDHOLDER_META);
  if (*fd >= 0) { close(*fd); *fd = -1; }
  return 0;
}

/* After a transfer from a Lua file, its position is just past the last byte sent. */
static void sendfile_seek(lua_State *L) {
  luaL_Stream *ls = (luaL_Stream *)luaL_testudata(L, 2, LUA_FILEHANDLE);
  if (ls && ls->closef) fseeko(ls->f, (off_t)lua_tointeger(L, 4), SEEK_SET);
}

#define SF_FALLBACK 1   /* ctx: sendfile(2) refused this file: pread + send */

/* Stack: s, file|path, file fd, offset, remaining (-1: to the end), sent, deadline [, holder] */
static int sendfile_k(lua_State *L, int status, lua_KContext ctx) {
  int outcome = strand_resumed(L, status);
  sock *s = (sock *)lua_touserdata(L, 1);
  int ffd = (int)lua_tointeger(L, 3);
  lua_Integer offset = lua_tointeger(L, 4), remaining = lua_tointeger(L, 5);
  lua_Integer sent = lua_tointeger(L, 6);
  const char *msg = NULL, *code = NULL;
  int err = 0;
  for (;;) {
    if (outcome == STRAND_CLOSED || s->io.fd < 0) { msg = "closed"; code = "ECLOSED"; break; }
    if (outcome == STRAND_TIMEOUT) { msg = "timeout"; code = "ETIMEDOUT"; break; }
    if (remaining == 0) break;
    if (can_write(s)) {
      size_t chunk = (remaining < 0 || remaining > SENDFILE_CHUNK) ? SENDFILE_CHUNK : (size_t)remaining;
      ssize_t r;
      if (!(ctx & SF_FALLBACK)) {
        off_t off = (off_t)offset;
        r = sendfile(s->io.fd, ffd, &off, chunk);
        if (r < 0 && (errno == EINVAL || errno == ENOSYS) && sent == 0) {
          ctx |= SF_FALLBACK;
          continue;
        }
      } else {
        char *buf = strand_loop_scratch(strand_loop_get(L));
        if (chunk > STRAND_SCRATCH) chunk = STRAND_SCRATCH;
        ssize_t got;
        do got = pread(ffd, buf, chunk, (off_t)offset); while (got < 0 && errno == EINTR);
        if (got < 0) { err = errno; break; }
        r = got == 0 ? 0 : send(s->io.fd, buf, (size_t)got, MSG_NOSIGNAL);
      }
      if (r > 0) {
        offset += r;
        sent += r;
        if (remaining > 0) remaining -= r;
        lua_pushinteger(L, offset);
        lua_replace(L, 4);
        lua_pushinteger(L, remaining);
        lua_replace(L, 5);
        lua_pushinteger(L, sent);
        lua_replace(L, 6);
        continue;
      }
      if (r == 0) break;                               /* the file ended */
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) { err = errno; break; }
      strand_io_clear(&s->io, STRAND_WRITE);
    }
    if (s->nonblocking) { msg = "wouldblock"; code = "EAGAIN"; break; }
    outcome = strand_wait_io(L, &s->io, STRAND_WRITE, lua_tonumber(L, 7), ctx, sendfile_k);
  }
  sendfile_seek(L);
  if (err) return send_fail_errno(L, SEND_ALL, (size_t)sent, err);
  if (msg) return send_fail(L, SEND_ALL, (size_t)sent, msg, code);
  lua_pushinteger(L, sent);
  return 1;
}

/* s:sendfile(file_or_path [, offset [, count]]) -> bytes sent | nil, err, bytes_sent, code.
 * A Lua file starts at its current position by default and is left just past what was sent. */
static int m_sendfile(lua_State *L) {
  sock *s = sock_check(L, 1);
  luaL_Stream *ls = (luaL_Stream *)luaL_testudata(L, 2, LUA_FILEHANDLE);
  if (ls == NULL) luaL_argexpected(L, lua_type(L, 2) == LUA_TSTRING, 2, "file or path");
  else luaL_argcheck(L, ls->closef != NULL, 2, "file is closed");
  lua_Integer offset = -1, count = -1;
  if (!lua_isnoneornil(L, 3)) {
    offset = luaL_checkinteger(L, 3);
    luaL_argcheck(L, offset >= 0, 3, "offset must be >= 0");
  }
  if (!lua_isnoneornil(L, 4)) {
    count = luaL_checkinteger(L, 4);
    luaL_argcheck(L, count >= 0, 4, "count must be >= 0");
  }
  lua_settop(L, 2);
  int ffd;
  int *holder = NULL;
  if (ls) {
    fflush(ls->f);
    ffd = fileno(ls->f);
    if (offset < 0) {
      off_t pos = ftello(ls->f);
      offset = pos < 0 ? 0 : (lua_Integer)pos;
    }
  } else {
    holder = (int *)lua_newuserdatauv(L, sizeof(int), 0);   /* closes the file on any exit */
    *holder = -1;
    luaL_setmetatable(L, FDHOLDER_META);
    ffd = open(lua_tostring(L, 2), O_RDONLY | O_CLOEXEC);
    if (ffd < 0) return strand_fail(L, errno);
    *holder = ffd;
    if (offset < 0) offset = 0;
  }
  if (count < 0) {
    struct stat st;
    if (fstat(ffd, &st) == 0 && S_ISREG(st.st_mode))
      count = st.st_size > offset ? (lua_Integer)st.st_size - offset : 0;
  }
  lua_pushinteger(L, ffd);                        /* 3 (or 4 with the holder at 3) */
  lua_pushinteger(L, offset);
  lua_pushinteger(L, count);
  lua_pushinteger(L, 0);
  lua_pushnumber(L, sock_deadline(s));
  if (holder) {                                   /* move the holder on top: to-be-closed */
    lua_rotate(L, 3, -1);
    lua_toclose(L, -1);
  }
  return sendfile_k(L, LUA_OK, 0);
}

/* }==== */

/* {==== datagrams */

/* Stack: s, data, host|path, port|nil, deadline, address slot [, resolver] */
static int sendto_k(lua_State *L, int status, lua_KContext ctx) {
  int outcome = strand_resumed(L, status);
  sock *s = (sock *)lua_touserdata(L, 1);
  double deadline = lua_tonumber(L, 5);
  if (lua_type(L, 6) != LUA_TSTRING) {
    if (s->io.fd < 0) return strand_fail_msg(L, "closed", "ECLOSED");
    int n = sock_addr(L, s, 3, 6, deadline, outcome, 0, ctx, sendto_k);
    if (n) return n;
    outcome = STRAND_READY;
  }
  size_t len, alen;
  const char *p = lua_tolstring(L, 2, &len);
  const char *sa = lua_tolstring(L, 6, &alen);
  for (;;) {
    if (outcome == STRAND_CLOSED || s->io.fd < 0) return strand_fail_msg(L, "closed", "ECLOSED");
    if (outcome == STRAND_TIMEOUT) return strand_fail_msg(L, "timeout", "ETIMEDOUT");
    if (can_write(s)) {
      ssize_t r = sendto(s->io.fd, p, len, MSG_NOSIGNAL, (const struct sockaddr *)sa, (socklen_t)alen);
      if (r >= 0) {
        lua_pushinteger(L, r);
        return 1;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return fail_errno(L, errno);
      strand_io_clear(&s->io, STRAND_WRITE);
    }
    if (s->nonblocking) return strand_fail_msg(L, "wouldblock", "EAGAIN");
    outcome = strand_wait_io(L, &s->io, STRAND_WRITE, deadline, ctx, sendto_k);
  }
}

/* s:sendto(data, host, port) (inet) or s:sendto(data, path) (unix) -> bytes sent */
static int m_sendto(lua_State *L) {
  sock *s = sock_check(L, 1);
  luaL_checkstring(L, 2);
  luaL_checkstring(L, 3);
  if (s->family == AF_UNIX) {
    lua_settop(L, 3);
    lua_pushnil(L);
  } else {
    luaL_checkany(L, 4);
    lua_settop(L, 4);
  }
  lua_pushnumber(L, sock_deadline(s));
  lua_pushnil(L);
  return sendto_k(L, LUA_OK, 0);
}

/* Stack: s, max, deadline */
static int recvfrom_k(lua_State *L, int status, lua_KContext ctx) {
  int outcome = strand_resumed(L, status);
  sock *s = (sock *)lua_touserdata(L, 1);
  size_t max = (size_t)lua_tointeger(L, 2);
  if (max > STRAND_SCRATCH) max = STRAND_SCRATCH;
  for (;;) {
    if (outcome == STRAND_CLOSED || s->io.fd < 0) return strand_fail_msg(L, "closed", "ECLOSED");
    if (outcome == STRAND_TIMEOUT) return strand_fail_msg(L, "timeout", "ETIMEDOUT");
    if (can_read(s)) {
      char *buf = strand_loop_scratch(strand_loop_get(L));
      struct sockaddr_storage ss;
      socklen_t alen = sizeof ss;
      ssize_t r = recvfrom(s->io.fd, buf, max, 0, (struct sockaddr *)&ss, &alen);
      if (r >= 0) {
        if (r == 0 && s->type == SOCK_STREAM) {
          s->eof = 1;
          return strand_fail_msg(L, "closed", "EOF");
        }
        lua_pushlstring(L, buf, (size_t)r);
        if (alen == 0) { lua_pushnil(L); return 2; }
        return 1 + sock_push_addr(L, (struct sockaddr *)&ss, alen);
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return fail_errno(L, errno);
      strand_io_clear(&s->io, STRAND_READ);
    }
    if (s->nonblocking) return strand_fail_msg(L, "wouldblock", "EAGAIN");
    outcome = strand_wait_io(L, &s->io, STRAND_READ, lua_tonumber(L, 3), ctx, recvfrom_k);
  }
}

/* s:recvfrom([max]) -> data, host, port (inet) | data, path (unix) */
static int m_recvfrom(lua_State *L) {
  sock *s = sock_check(L, 1);
  lua_Integer max = luaL_optinteger(L, 2, STRAND_SCRATCH);
  if (max <= 0) return method_argerror(L, 2, "recvfrom", "max must be > 0");
  lua_settop(L, 1);
  lua_pushinteger(L, max);
  lua_pushnumber(L, sock_deadline(s));
  return recvfrom_k(L, LUA_OK, 0);
}

/* }==== */

void strand_sockio_init(lua_State *L) {
  luaL_newmetatable(L, FDHOLDER_META);
  lua_pushcfunction(L, fdholder_close);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, fdholder_close);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);
}

const luaL_Reg strand_sockio_methods[] = {
  {"recv", m_recv}, {"read", m_read}, {"lines", m_lines}, {"recv_frame", m_recv_frame},
  {"send", m_send}, {"sendall", m_sendall}, {"write", m_write}, {"send_frame", m_send_frame},
  {"sendfile", m_sendfile}, {"sendto", m_sendto}, {"recvfrom", m_recvfrom},
  {NULL, NULL}
};
