/* sshchan.c — SSH channels (exec, shell, direct-tcpip, scp) and remote-forward listeners as
 * cooperative Lua objects; every libssh2 call goes through ssh_call. */
#include "ssh.h"

#include <string.h>
#include <sys/stat.h>

typedef struct chan {
  ssh_child h;
  LIBSSH2_CHANNEL *ch;
  int wstage;               /* wait(): 0 draining, 1 closing, 2 waiting for close */
  int cstage;               /* close(): 0 close, 1 free */
} chan;

typedef struct listener {
  ssh_child h;
  LIBSSH2_LISTENER *l;
  int port;
} listener;

static chan *check_chan(lua_State *L) {
  chan *c = ssh_check(L, 1, SSH_CHANNEL_META);
  if (c->ch == NULL) luaL_error(L, "attempt to use a closed channel");
  return c;
}

static int chan_closer(ssh_child *h) {
  chan *c = (chan *)h;
  if (c->ch == NULL) return 0;
  int rc = libssh2_channel_free(c->ch);
  if (rc == LIBSSH2_ERROR_EAGAIN) return rc;
  c->ch = NULL;
  return 0;
}

static int listener_closer(ssh_child *h) {
  listener *x = (listener *)h;
  if (x->l == NULL) return 0;
  int rc = libssh2_channel_forward_cancel(x->l);
  if (rc == LIBSSH2_ERROR_EAGAIN) return rc;
  x->l = NULL;
  return 0;
}

/* {==== opening: the new channel userdata sits just under the deadline (index -2) */

static int opened(lua_State *L, ssh_sess *S, LIBSSH2_CHANNEL *ch) {
  if (ch == NULL) {
    int rc = libssh2_session_last_errno(S->s);
    if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
    return ssh_fail(L, S, rc);
  }
  chan *c = lua_touserdata(L, -2);
  c->ch = ch;
  c->h.dead = 0;
  c->h.closer = chan_closer;
  lua_pushvalue(L, -2);
  return 1;
}

static int open_session_step(lua_State *L, ssh_sess *S) {
  return opened(L, S, libssh2_channel_open_session(S->s));
}

/* s:_channel([timeout]) -> channel (a "session" channel: then exec, shell or subsystem) */
static int s_channel(lua_State *L) {
  ssh_sess *S = ssh_check(L, 1, SSH_SESSION_META);
  lua_settop(L, 2);
  ssh_child_new(L, sizeof(chan), 1, SSH_K_CHANNEL, SSH_CHANNEL_META);
  ssh_push_deadline(L, S, 2);
  return ssh_call(L, open_session_step);
}

static int direct_step(lua_State *L, ssh_sess *S) {
  return opened(L, S, libssh2_channel_direct_tcpip_ex(S->s, lua_tostring(L, 2),
                                                      (int)lua_tointeger(L, 3), "127.0.0.1", 22));
}

/* s:forward(host, port [, timeout]) -> channel carrying a TCP connection made by the server */
static int s_forward(lua_State *L) {
  ssh_sess *S = ssh_check(L, 1, SSH_SESSION_META);
  luaL_checkstring(L, 2);
  lua_Integer port = luaL_checkinteger(L, 3);
  luaL_argcheck(L, port > 0 && port < 65536, 3, "port out of range");
  lua_settop(L, 4);
  ssh_child_new(L, sizeof(chan), 1, SSH_K_CHANNEL, SSH_CHANNEL_META);
  ssh_push_deadline(L, S, 4);
  return ssh_call(L, direct_step);
}

static int scp_recv_step(lua_State *L, ssh_sess *S) {
  libssh2_struct_stat st;
  memset(&st, 0, sizeof st);
  int n = opened(L, S, libssh2_scp_recv2(S->s, lua_tostring(L, 2), &st));
  if (n == 1) {
    lua_pushinteger(L, (lua_Integer)st.st_size);
    lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
    n = 3;
  }
  return n;
}

/* s:_scp_recv(path [, timeout]) -> channel, size, mode */
static int s_scp_recv(lua_State *L) {
  ssh_sess *S = ssh_check(L, 1, SSH_SESSION_META);
  luaL_checkstring(L, 2);
  lua_settop(L, 3);
  ssh_child_new(L, sizeof(chan), 1, SSH_K_CHANNEL, SSH_CHANNEL_META);
  ssh_push_deadline(L, S, 3);
  return ssh_call(L, scp_recv_step);
}

static int scp_send_step(lua_State *L, ssh_sess *S) {
  return opened(L, S, libssh2_scp_send64(S->s, lua_tostring(L, 2), (int)lua_tointeger(L, 3),
                                         (libssh2_int64_t)lua_tointeger(L, 4), 0, 0));
}

/* s:_scp_send(path, mode, size [, timeout]) -> channel */
static int s_scp_send(lua_State *L) {
  ssh_sess *S = ssh_check(L, 1, SSH_SESSION_META);
  luaL_checkstring(L, 2);
  luaL_checkinteger(L, 3);
  luaL_checkinteger(L, 4);
  lua_settop(L, 5);
  ssh_child_new(L, sizeof(chan), 1, SSH_K_CHANNEL, SSH_CHANNEL_META);
  ssh_push_deadline(L, S, 5);
  return ssh_call(L, scp_send_step);
}

static int listen_step(lua_State *L, ssh_sess *S) {
  int bound = 0;
  LIBSSH2_LISTENER *l = libssh2_channel_forward_listen_ex(S->s, lua_tostring(L, 2),
                                                          (int)lua_tointeger(L, 3), &bound, 16);
  if (l == NULL) {
    int rc = libssh2_session_last_errno(S->s);
    if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
    return ssh_fail(L, S, rc);
  }
  listener *x = lua_touserdata(L, -2);
  x->l = l;
  x->port = bound ? bound : (int)lua_tointeger(L, 3);
  x->h.dead = 0;
  x->h.closer = listener_closer;
  lua_pushvalue(L, -2);
  lua_pushinteger(L, x->port);
  return 2;
}

/* s:_listen(host, port [, timeout]) -> listener, bound port (the server listens, we accept) */
static int s_listen(lua_State *L) {
  ssh_sess *S = ssh_check(L, 1, SSH_SESSION_META);
  luaL_checkstring(L, 2);
  lua_Integer port = luaL_checkinteger(L, 3);
  luaL_argcheck(L, port >= 0 && port < 65536, 3, "port out of range");
  lua_settop(L, 4);
  ssh_child_new(L, sizeof(listener), 1, SSH_K_LISTENER, SSH_LISTENER_META);
  ssh_push_deadline(L, S, 4);
  return ssh_call(L, listen_step);
}

const luaL_Reg ssh_session_chan_methods[] = {
  { "_channel", s_channel }, { "forward", s_forward }, { "_scp_recv", s_scp_recv },
  { "_scp_send", s_scp_send }, { "_listen", s_listen }, { NULL, NULL }
};

/* }==== */

/* {==== channel requests before the process starts */

static int request_result(lua_State *L, ssh_sess *S, int rc) {
  if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
  if (rc) return ssh_fail(L, S, rc);
  lua_pushboolean(L, 1);
  return 1;
}

static int setenv_step(lua_State *L, ssh_sess *S) {
  chan *c = lua_touserdata(L, 1);
  size_t nl, vl;
  const char *n = lua_tolstring(L, 2, &nl), *v = lua_tolstring(L, 3, &vl);
  return request_result(L, S, libssh2_channel_setenv_ex(c->ch, n, (unsigned)nl, v, (unsigned)vl));
}

static int c_setenv(lua_State *L) {
  chan *c = check_chan(L);
  luaL_checkstring(L, 2);
  luaL_checkstring(L, 3);
  lua_settop(L, 4);
  ssh_push_deadline(L, c->h.S, 4);
  return ssh_call(L, setenv_step);
}

static int pty_step(lua_State *L, ssh_sess *S) {
  chan *c = lua_touserdata(L, 1);
  size_t tl;
  const char *term = lua_tolstring(L, 2, &tl);
  return request_result(L, S, libssh2_channel_request_pty_ex(c->ch, term, (unsigned)tl, NULL, 0,
                        (int)lua_tointeger(L, 3), (int)lua_tointeger(L, 4), 0, 0));
}

/* ch:_pty(term, cols, rows [, timeout]) */
static int c_pty(lua_State *L) {
  chan *c = check_chan(L);
  luaL_checkstring(L, 2);
  luaL_checkinteger(L, 3);
  luaL_checkinteger(L, 4);
  lua_settop(L, 5);
  ssh_push_deadline(L, c->h.S, 5);
  return ssh_call(L, pty_step);
}

static int process_step(lua_State *L, ssh_sess *S) {
  chan *c = lua_touserdata(L, 1);
  size_t rl, ml = 0;
  const char *req = lua_tolstring(L, 2, &rl), *msg = lua_tolstring(L, 3, &ml);
  return request_result(L, S, libssh2_channel_process_startup(c->ch, req, (unsigned)rl, msg,
                                                               (unsigned)ml));
}

/* ch:_process("exec"|"shell"|"subsystem", command|nil [, timeout]) */
static int c_process(lua_State *L) {
  chan *c = check_chan(L);
  luaL_checkstring(L, 2);
  luaL_optstring(L, 3, NULL);
  lua_settop(L, 4);
  ssh_push_deadline(L, c->h.S, 4);
  return ssh_call(L, process_step);
}

/* }==== */

/* {==== data */

static int read_step(lua_State *L, ssh_sess *S) {
  chan *c = lua_touserdata(L, 1);
  size_t n = (size_t)lua_tointeger(L, 2);
  int stream = (int)lua_tointeger(L, 3);
  char *buf = strand_loop_scratch(strand_loop_get(L));
  ssize_t r = libssh2_channel_read_ex(c->ch, stream, buf, n);
  if (r > 0) { lua_pushlstring(L, buf, (size_t)r); return 1; }
  if (r == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
  /* 0: the remote end sent EOF (or closed) and this stream holds nothing more. The other stream
   * may still hold data, and then libssh2_channel_eof() says no; a 0 with neither is spurious. */
  if (r == 0) {
    if (libssh2_channel_eof(c->ch) || libssh2_poll_channel_read(c->ch, stream == 0))
      return strand_fail_msg(L, "closed", "EOF");
    return SSH_AGAIN;
  }
  return ssh_fail(L, S, (int)r);
}

static int chan_read(lua_State *L, int stream) {
  chan *c = check_chan(L);
  lua_Integer n = luaL_optinteger(L, 2, STRAND_SCRATCH);
  luaL_argcheck(L, n > 0, 2, "must be positive");
  if (n > STRAND_SCRATCH) n = STRAND_SCRATCH;
  lua_settop(L, 3);
  ssh_push_deadline(L, c->h.S, 3);    /* index 4 */
  lua_pushinteger(L, n);
  lua_replace(L, 2);
  lua_pushinteger(L, stream);
  lua_replace(L, 3);
  return ssh_call(L, read_step);
}

/* ch:read([max [, timeout]]) -> 1..max bytes of stdout | nil, "closed", "EOF" at its end */
static int c_read(lua_State *L) { return chan_read(L, 0); }
static int c_read_stderr(lua_State *L) { return chan_read(L, SSH_EXTENDED_DATA_STDERR); }

static int pump_step(lua_State *L, ssh_sess *S) {
  chan *c = lua_touserdata(L, 1);
  char *buf = strand_loop_scratch(strand_loop_get(L));
  ssize_t r1 = libssh2_channel_read_ex(c->ch, 0, buf, STRAND_SCRATCH);
  if (r1 < 0 && r1 != LIBSSH2_ERROR_EAGAIN) return ssh_fail(L, S, (int)r1);
  if (r1 > 0) lua_pushlstring(L, buf, (size_t)r1);
  ssize_t r2 = libssh2_channel_read_ex(c->ch, SSH_EXTENDED_DATA_STDERR, buf, STRAND_SCRATCH);
  if (r2 < 0 && r2 != LIBSSH2_ERROR_EAGAIN) {
    if (r1 > 0) lua_pop(L, 1);
    return ssh_fail(L, S, (int)r2);
  }
  if (r1 > 0 || r2 > 0) {
    if (r1 <= 0) lua_pushliteral(L, "");
    if (r2 > 0) lua_pushlstring(L, buf, (size_t)r2); else lua_pushliteral(L, "");
    return 2;
  }
  if (r1 == 0 && r2 == 0) return strand_fail_msg(L, "closed", "EOF");
  return SSH_AGAIN;
}

/* ch:_pump([timeout]) -> stdout bytes, stderr bytes (either may be "") | nil, "closed", "EOF" */
static int c_pump(lua_State *L) {
  chan *c = check_chan(L);
  lua_settop(L, 2);
  ssh_push_deadline(L, c->h.S, 2);
  return ssh_call(L, pump_step);
}

static int write_step(lua_State *L, ssh_sess *S) {
  chan *c = lua_touserdata(L, 1);
  size_t len;
  const char *d = lua_tolstring(L, 2, &len);
  size_t off = (size_t)lua_tointeger(L, 3), turn = off;
  int stream = (int)lua_tointeger(L, 4);
  while (off < len) {
    if (off - turn >= SSH_TURN_BYTES) {   /* a long write: the others' turn first (ssh.h) */
      lua_pushinteger(L, (lua_Integer)off);
      lua_replace(L, 3);
      return SSH_YIELD;
    }
    ssize_t r = libssh2_channel_write_ex(c->ch, stream, d + off, len - off);
    if (r == LIBSSH2_ERROR_EAGAIN) {
      /* libssh2 says EAGAIN for a full window even when the remote end has closed the channel
       * (a command that exited without reading its input): no window adjust will ever come.
       * libssh2_channel_eof() says no while output is unread, so ask wait_closed, which without
       * blocking gives 0 once the remote EOF and CLOSE were read (EAGAIN, or "not in EOF
       * state", before) */
      if (libssh2_channel_window_write_ex(c->ch, NULL) == 0 && libssh2_channel_wait_closed(c->ch) == 0)
        return ssh_fail(L, S, LIBSSH2_ERROR_CHANNEL_CLOSED);
      lua_pushinteger(L, (lua_Integer)off);
      lua_replace(L, 3);
      return SSH_AGAIN;
    }
    if (r < 0) return ssh_fail(L, S, (int)r);
    off += (size_t)r;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* ch:write(data [, timeout]) -> true | nil, err (writes everything) */
static int c_write(lua_State *L) {
  chan *c = check_chan(L);
  luaL_checkstring(L, 2);
  lua_settop(L, 3);
  ssh_push_deadline(L, c->h.S, 3);   /* 4 */
  lua_pushinteger(L, 0);
  lua_replace(L, 3);
  lua_pushinteger(L, 0);             /* stream */
  lua_insert(L, 4);                  /* 1 ch, 2 data, 3 offset, 4 stream, 5 deadline */
  return ssh_call(L, write_step);
}

static int eof_step(lua_State *L, ssh_sess *S) {
  chan *c = lua_touserdata(L, 1);
  return request_result(L, S, libssh2_channel_send_eof(c->ch));
}

/* ch:send_eof([timeout]): no more input for the remote process */
static int c_send_eof(lua_State *L) {
  chan *c = check_chan(L);
  lua_settop(L, 2);
  ssh_push_deadline(L, c->h.S, 2);
  return ssh_call(L, eof_step);
}

static int c_eof(lua_State *L) {
  chan *c = check_chan(L);
  lua_pushboolean(L, libssh2_channel_eof(c->ch));
  return 1;
}

/* exit status and signal name (nil when none) */
static int push_exit(lua_State *L, ssh_sess *S, chan *c) {
  char *sig = NULL, *msg = NULL, *lang = NULL;
  size_t sl = 0, ml = 0, ll = 0;
  int code = libssh2_channel_get_exit_status(c->ch);
  if (libssh2_channel_get_exit_signal(c->ch, &sig, &sl, &msg, &ml, &lang, &ll) == 0 && sig && sl) {
    lua_pushboolean(L, 0);   /* a process killed by a signal has no exit code */
    lua_pushlstring(L, sig, sl);
  } else {
    lua_pushinteger(L, code);
    lua_pushnil(L);
  }
  if (sig) libssh2_free(S->s, sig);
  if (msg) libssh2_free(S->s, msg);
  if (lang) libssh2_free(S->s, lang);
  return 2;
}

static int wait_step(lua_State *L, ssh_sess *S) {
  chan *c = lua_touserdata(L, 1);
  char *buf = strand_loop_scratch(strand_loop_get(L));
  size_t dropped = 0;
  for (;;) {
    int rc;
    switch (c->wstage) {
      case 0: {   /* discard what was not read, until the remote end sends EOF */
        if (dropped >= SSH_TURN_BYTES) return SSH_YIELD;   /* output keeps coming: the others' turn */
        ssize_t r1 = libssh2_channel_read_ex(c->ch, 0, buf, STRAND_SCRATCH);
        ssize_t r2 = libssh2_channel_read_ex(c->ch, SSH_EXTENDED_DATA_STDERR, buf, STRAND_SCRATCH);
        if (r1 > 0) dropped += (size_t)r1;
        if (r2 > 0) dropped += (size_t)r2;
        if (r1 > 0 || r2 > 0) continue;
        if (r1 < 0 && r1 != LIBSSH2_ERROR_EAGAIN) return ssh_fail(L, S, (int)r1);
        if (r2 < 0 && r2 != LIBSSH2_ERROR_EAGAIN) return ssh_fail(L, S, (int)r2);
        if (r1 != 0 || r2 != 0) return SSH_AGAIN;   /* both 0: EOF and nothing left */
        c->wstage = 1;
        continue;
      }
      case 1:
        rc = libssh2_channel_close(c->ch);
        if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
        if (rc) return ssh_fail(L, S, rc);
        c->wstage = 2;
        continue;
      case 2:
        rc = libssh2_channel_wait_closed(c->ch);
        if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
        if (rc) return ssh_fail(L, S, rc);
        c->wstage = 3;
        continue;
      default:
        return push_exit(L, S, c);
    }
  }
}

/* ch:wait([timeout]) -> exit code, nil | false, signal name ("KILL"): waits for the remote process to end (output not
 * read yet is discarded, so a full window cannot stall it) */
static int c_wait(lua_State *L) {
  chan *c = check_chan(L);
  lua_settop(L, 2);
  ssh_push_deadline(L, c->h.S, 2);
  return ssh_call(L, wait_step);
}

static void chan_release(chan *c) {
  if (c->ch && !c->h.dead) (void)libssh2_channel_free(c->ch);
  c->ch = NULL;
  ssh_child_unlink(&c->h);   /* also a dead one: a failed open leaves its child linked */
  c->h.dead = 1;
}

static int close_step(lua_State *L, ssh_sess *S) {
  chan *c = lua_touserdata(L, 1);
  if (c->cstage == 0) {
    int rc = c->wstage >= 2 ? 0 : libssh2_channel_close(c->ch);
    if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
    c->cstage = 1;
  }
  int rc = libssh2_channel_free(c->ch);
  if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
  c->ch = NULL;
  ssh_child_unlink(&c->h);
  c->h.dead = 1;
  lua_pushboolean(L, 1);
  return 1;
}

/* ch:close() -> true: closes and frees the channel (bounded: 2 s, then freed anyway). Idempotent. */
static int c_close(lua_State *L) {
  chan *c = luaL_checkudata(L, 1, SSH_CHANNEL_META);
  if (c->ch == NULL || c->h.dead || c->h.S->s == NULL) {
    c->ch = NULL;
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_settop(L, 1);
  lua_pushnumber(L, strand_now() + 2.0);
  return ssh_call(L, close_step);
}

static int c_gc(lua_State *L) {
  chan *c = luaL_checkudata(L, 1, SSH_CHANNEL_META);
  chan_release(c);
  return 0;
}

static int c_closed(lua_State *L) {
  chan *c = luaL_checkudata(L, 1, SSH_CHANNEL_META);
  lua_pushboolean(L, c->ch == NULL || c->h.dead);
  return 1;
}

static int c_tostring(lua_State *L) {
  chan *c = luaL_checkudata(L, 1, SSH_CHANNEL_META);
  lua_pushfstring(L, "ssh channel (%s)", c->ch && !c->h.dead ? "open" : "closed");
  return 1;
}

/* }==== */

/* {==== listeners (remote forwarding) */

static int accept_step(lua_State *L, ssh_sess *S) {
  listener *x = lua_touserdata(L, 1);
  return opened(L, S, libssh2_channel_forward_accept(x->l));
}

static int cancel_step(lua_State *L, ssh_sess *S) {
  listener *x = lua_touserdata(L, 1);
  int rc = libssh2_channel_forward_cancel(x->l);
  if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
  x->l = NULL;
  ssh_child_unlink(&x->h);
  x->h.dead = 1;
  lua_pushboolean(L, 1);
  return 1;
}

static int l_close(lua_State *L) {
  listener *x = luaL_checkudata(L, 1, SSH_LISTENER_META);
  if (x->l == NULL || x->h.dead || x->h.S->s == NULL) {
    x->l = NULL;
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_settop(L, 1);
  lua_pushnumber(L, strand_now() + 2.0);
  return ssh_call(L, cancel_step);
}

static int l_gc(lua_State *L) {
  listener *x = luaL_checkudata(L, 1, SSH_LISTENER_META);
  /* the forward is cancelled by libssh2_session_free; only unlink here */
  ssh_child_unlink(&x->h);   /* also a dead one: a failed listen leaves its child linked */
  x->h.dead = 1;
  return 0;
}

static int l_port(lua_State *L) {
  listener *x = luaL_checkudata(L, 1, SSH_LISTENER_META);
  lua_pushinteger(L, x->port);
  return 1;
}

/* }==== */

static const luaL_Reg chan_methods[] = {
  { "_setenv", c_setenv }, { "_pty", c_pty }, { "_process", c_process },
  { "read", c_read }, { "read_stderr", c_read_stderr }, { "_pump", c_pump },
  { "write", c_write }, { "send_eof", c_send_eof }, { "eof", c_eof }, { "wait", c_wait },
  { "close", c_close }, { "closed", c_closed }, { NULL, NULL }
};

/* l:accept([timeout]) -> channel for the next connection made to the remote port */
static int l_accept_entry(lua_State *L) {
  listener *x = ssh_check(L, 1, SSH_LISTENER_META);
  if (x->l == NULL) luaL_error(L, "attempt to use a closed listener");
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, 1);        /* 3: session */
  ssh_child_new(L, sizeof(chan), 3, SSH_K_CHANNEL, SSH_CHANNEL_META);
  lua_remove(L, 3);
  ssh_push_deadline(L, x->h.S, 2);
  return ssh_call(L, accept_step);
}

static const luaL_Reg listener_methods[] = {
  { "accept", l_accept_entry }, { "close", l_close }, { "port", l_port }, { NULL, NULL }
};

static void newmeta(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                    lua_CFunction close, lua_CFunction tostring) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "methods");
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, close);
  lua_setfield(L, -2, "__close");
  if (tostring) {
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
}

void ssh_open_channels(lua_State *L) {
  newmeta(L, SSH_CHANNEL_META, chan_methods, c_gc, c_gc, c_tostring);
  newmeta(L, SSH_LISTENER_META, listener_methods, l_gc, l_gc, NULL);
}
