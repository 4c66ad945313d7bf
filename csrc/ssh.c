/* ssh.c — libssh2 sessions on a strand socket: the cooperative retry of every libssh2 call
 * (ssh_call), transport callbacks (TCP_NODELAY, TCP_QUICKACK), handshake, host keys, auth. */
#include "ssh.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_rc;
void strand_thread_os_spent(void);      /* thread.c: this OS thread ends with its state */
static void init_libssh2(void) { init_rc = libssh2_init(0); }

/* {==== transport callbacks: the session's own socket, readiness remembered by strand */

static ssize_t cb_send(libssh2_socket_t fd, const void *buf, size_t len, int flags, void **abstract) {
  ssh_sess *S = *abstract;
  if (ssh_forked(S)) { S->error = EPIPE; return -EPIPE; }   /* the parent's stream: never ours */
  for (;;) {
    ssize_t n = send(fd, buf, len, flags | MSG_NOSIGNAL);
    if (n >= 0) { S->progress += (unsigned long)n + 1; return n; }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return -EAGAIN;
    S->error = errno;
    return -errno;
  }
}

static ssize_t cb_recv(libssh2_socket_t fd, void *buf, size_t len, int flags, void **abstract) {
  ssh_sess *S = *abstract;
  if (ssh_forked(S)) { S->error = EPIPE; S->progress++; return -EPIPE; }
  for (;;) {
    ssize_t n = recv(fd, buf, len, flags);
    if (n > 0) {
      S->progress += (unsigned long)n;
      S->received += (unsigned long)n;
      if (S->tcp) {   /* Linux drops back to delayed ACKs: re-arm quick ACKs after each read */
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
      }
      return n;
    }
    if (n == 0) { S->progress++; return 0; }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return -EAGAIN;
    S->error = errno;
    S->progress++;
    return -errno;
  }
}

/* }==== */

/* {==== children and the cooperative call */

/* Idempotent: a child not (or no longer) in the list has prev == next == NULL and is not the head.
 * A child whose open failed stays linked (dead) until its __gc: that must unlink it. */
void ssh_child_unlink(ssh_child *c) {
  ssh_sess *S = c->S;
  if (S->s) ssh_kick(S);
  if (c->prev) c->prev->next = c->next;
  else if (S->children == c) S->children = c->next;
  if (c->next) c->next->prev = c->prev;
  c->next = c->prev = NULL;
}

void ssh_kick(ssh_sess *S) {
  if (S->io.reader) strand_wake(S->io.reader, STRAND_READY);
  if (S->io.writer) strand_wake(S->io.writer, STRAND_READY);
  if (S->waiters.head) strand_waitq_wake_all(&S->waiters, STRAND_READY);
}

void *ssh_child_new(lua_State *L, size_t sz, int sidx, int kind, const char *meta) {
  ssh_sess *S = ((ssh_child *)lua_touserdata(L, sidx))->S;   /* a session or another child */
  sidx = lua_absindex(L, sidx);
  ssh_child *c = lua_newuserdatauv(L, sz, 1);
  memset(c, 0, sz);
  c->S = S;
  c->kind = kind;
  c->dead = 1;                 /* until the caller has its handle: set dead = 0 then */
  lua_pushvalue(L, sidx);
  lua_setiuservalue(L, -2, 1);
  luaL_setmetatable(L, meta);
  c->next = S->children;
  if (c->next) c->next->prev = c;
  S->children = c;
  return c;
}

void *ssh_check(lua_State *L, int idx, const char *meta) {
  ssh_child *c = luaL_checkudata(L, idx, meta);
  if (c->S->s != NULL && ssh_forked(c->S))
    luaL_error(L, "attempt to use an ssh %s of the parent process in a forked child (its connection "
               "is the parent's: connect again in the child)", strcmp(meta, SSH_FILE_META) == 0
               ? "sftp file" : meta + sizeof "strand.ssh." - 1);
  if (c->dead || c->S->s == NULL)
    luaL_error(L, "attempt to use a closed %s", strcmp(meta, SSH_FILE_META) == 0 ? "sftp file"
               : meta + sizeof "strand.ssh." - 1);
  return c;
}

void ssh_push_deadline(lua_State *L, ssh_sess *S, int arg) {
  if (lua_isnoneornil(L, arg))
    lua_pushnumber(L, S->timeout < 0 ? STRAND_FOREVER : strand_now() + S->timeout);
  else
    lua_pushnumber(L, strand_opt_deadline(L, arg));
}

typedef struct errmap { int rc; const char *msg, *code; } errmap;
static const errmap errors[] = {
  { LIBSSH2_ERROR_AUTHENTICATION_FAILED, "authentication failed", "EAUTH" },
  { LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED, "authentication failed", "EAUTH" },
  { LIBSSH2_ERROR_SOCKET_DISCONNECT, "connection lost", "ECONNRESET" },
  { LIBSSH2_ERROR_SOCKET_RECV, "connection lost", "ECONNRESET" },
  { LIBSSH2_ERROR_SOCKET_SEND, "connection lost", "ECONNRESET" },
  { LIBSSH2_ERROR_CHANNEL_CLOSED, "channel closed", "ECLOSED" },
  { LIBSSH2_ERROR_CHANNEL_EOF_SENT, "channel closed", "ECLOSED" },
  { LIBSSH2_ERROR_CHANNEL_FAILURE, "channel request refused", "ECHANNEL" },
  { LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED, "channel request refused", "ECHANNEL" },
  { LIBSSH2_ERROR_TIMEOUT, "timeout", "ETIMEDOUT" },
  { LIBSSH2_ERROR_KEX_FAILURE, "key exchange failed", "EKEX" },
  { LIBSSH2_ERROR_FILE, "cannot read key file", "EKEYFILE" },
  { LIBSSH2_ERROR_PUBLICKEY_UNRECOGNIZED, "cannot read key file", "EKEYFILE" },
  { LIBSSH2_ERROR_METHOD_NOT_SUPPORTED, "method not supported", "ENOTSUP" },
  { LIBSSH2_ERROR_BAD_USE, "bad use", "EINVAL" },
  { 0, NULL, NULL }
};

int ssh_fail(lua_State *L, ssh_sess *S, int rc) {
  const char *detail = NULL;
  int len = 0;
  if (S->s) libssh2_session_last_error(S->s, (char **)&detail, &len, 0);
  /* libssh2 says why the server refused to open a channel: "Channel open failure (connect
   * failed)", "(administratively prohibited)", "(resource shortage)"... (a refused request on an
   * open channel, such as the SFTP subsystem, shares the code but not the text) */
  static const char open_failure[] = "Channel open failure";
  if (rc == LIBSSH2_ERROR_CHANNEL_FAILURE && detail && len >= (int)sizeof open_failure - 1 &&
      memcmp(detail, open_failure, sizeof open_failure - 1) == 0) {
    const char *why = memchr(detail, '(', (size_t)len);
    const char *end = why ? memchr(why, ')', (size_t)(detail + len - why)) : NULL;
    lua_pushnil(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "channel open refused");
    if (end) {
      luaL_addchar(&b, ' ');
      luaL_addlstring(&b, why, (size_t)(end - why + 1));
    }
    luaL_pushresult(&b);
    lua_pushliteral(L, "ECHANNEL");
    return 3;
  }
  for (const errmap *e = errors; e->msg; e++)
    if (e->rc == rc) {
      if (rc == LIBSSH2_ERROR_FILE || rc == LIBSSH2_ERROR_PUBLICKEY_UNRECOGNIZED ||
          rc == LIBSSH2_ERROR_KEX_FAILURE || rc == LIBSSH2_ERROR_METHOD_NOT_SUPPORTED) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", e->msg, detail && len ? detail : "?");
        lua_pushstring(L, e->code);
        return 3;
      }
      return strand_fail_msg(L, e->msg, e->code);
    }
  lua_pushnil(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  if (detail && len > 0) {
    for (int i = 0; i < len && i < 200; i++)
      luaL_addchar(&b, i == 0 ? (char)tolower((unsigned char)detail[i]) : detail[i]);
  } else {
    lua_pushfstring(L, "ssh error %d", rc);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  lua_pushstring(L, "ESSH");
  return 3;
}

/* Nobody polls the socket any more (the poller left, timed out or was cancelled): let the queued
 * tasks retry, one of them becomes the poller. */
static void wake_if_unpolled(ssh_sess *S) {
  if (S->waiters.head && S->io.reader == NULL && S->io.writer == NULL)
    strand_waitq_wake_all(&S->waiters, STRAND_READY);
}

static int call_k(lua_State *L, int status, lua_KContext ctx);

static int sess_wait(lua_State *L, ssh_sess *S, double deadline, lua_KContext ctx) {
  int dirs = libssh2_session_block_directions(S->s);
  int ev = (dirs & LIBSSH2_SESSION_BLOCK_OUTBOUND) ? STRAND_WRITE : STRAND_READ;
  strand_task *busy = ev == STRAND_READ ? S->io.reader : S->io.writer;
  if (busy) return strand_wait_queue(L, &S->waiters, deadline, ctx, call_k);
  return strand_wait_io(L, &S->io, ev, deadline, ctx, call_k);
}

static int call_k(lua_State *L, int status, lua_KContext ctx) {
  ssh_step step = (ssh_step)ctx;
  ssh_child *c = lua_touserdata(L, 1);
  ssh_sess *S = c->S;
  if (status == LUA_YIELD) wake_if_unpolled(S);
  int outcome = strand_resumed(L, status);
  for (;;) {
    if (outcome == STRAND_TIMEOUT) return strand_fail_msg(L, "timeout", "ETIMEDOUT");
    if (outcome == STRAND_CLOSED || S->s == NULL || c->dead)
      return strand_fail_msg(L, "closed", "ECLOSED");
    unsigned long before = S->progress, got = S->received;
    int n = step(L, S);
    if (S->progress != before && S->waiters.head)
      strand_waitq_wake_all(&S->waiters, STRAND_READY);
    /* The step read input (libssh2 drains the transport in any call, a channel write too): what
     * the task polling the socket waits for may now sit decoded in libssh2, and the socket, now
     * drained, would never wake it (a relay's reader of a ProxyJump hop slept so until its
     * timeout while its writer kept the input flowing): it looks again. */
    if (S->received != got && S->io.reader) strand_wake(S->io.reader, STRAND_READY);
    if (n == SSH_YIELD) {                /* a turn's worth moved: the others' turn (ssh.h) */
      outcome = strand_wait_timer(L, 0, ctx, call_k);
      continue;
    }
    if (n != SSH_AGAIN) return n;
    /* The step read from the socket and still says EAGAIN. What it read sits decoded in libssh2
     * (a step making two calls sees the first drain packets the second needed: EOF on stdout
     * while the stderr read came back EAGAIN), and the socket may now stay quiet for good: try
     * again before waiting. Bounded: each retry needs new bytes from the socket (EOF is not counted).
     * After the others' turn, as for SSH_YIELD: each call starts its turn count afresh, so while the
     * peer kept the socket fed, calls made at once ran on without a turn (3.7 MiB was seen). */
    if (S->received != got) {
      outcome = strand_wait_timer(L, 0, ctx, call_k);
      continue;
    }
    double deadline = lua_tonumber(L, -1);
    if (deadline <= strand_now()) return strand_fail_msg(L, "timeout", "ETIMEDOUT");
    outcome = sess_wait(L, S, deadline, ctx);
    wake_if_unpolled(S);
  }
}

int ssh_call(lua_State *L, ssh_step step) {
  return call_k(L, LUA_OK, (lua_KContext)(intptr_t)step);
}

/* }==== */

/* {==== locks (see ssh.h): cooperative, between the tasks of one thread */

static int lock_k(lua_State *L, int status, lua_KContext ctx) {
  ssh_lock *k = (ssh_lock *)ctx;
  int outcome = strand_resumed(L, status);
  for (;;) {
    if (outcome == STRAND_TIMEOUT) return strand_fail_msg(L, "timeout", "ETIMEDOUT");
    if (outcome == STRAND_CLOSED) return strand_fail_msg(L, "closed", "ECLOSED");
    if (!k->busy) {
      k->busy = 1;
      lua_pushboolean(L, 1);
      return 1;
    }
    outcome = strand_wait_queue(L, &k->q, lua_tonumber(L, 2), ctx, lock_k);
  }
}

/* x:_lock([timeout]) -> true | nil, "timeout" */
static int m_lock(lua_State *L) {
  ssh_child *c = lua_touserdata(L, 1);
  luaL_argcheck(L, c != NULL, 1, "ssh object expected");
  if (c->lock == NULL) { lua_pushboolean(L, 1); return 1; }
  double deadline = strand_opt_deadline(L, 2);
  lua_settop(L, 1);
  lua_pushnumber(L, deadline);
  return lock_k(L, LUA_OK, (lua_KContext)(intptr_t)c->lock);
}

/* x:_unlock(): every waiter looks again (one woken and then cancelled must not strand the rest) */
static int m_unlock(lua_State *L) {
  ssh_child *c = lua_touserdata(L, 1);
  luaL_argcheck(L, c != NULL, 1, "ssh object expected");
  if (c->lock) {
    c->lock->busy = 0;
    if (c->lock->q.head) strand_waitq_wake_all(&c->lock->q, STRAND_READY);
  }
  return 0;
}

void ssh_lock_close(ssh_lock *k) {
  k->busy = 0;
  if (k->q.head) strand_waitq_wake_all(&k->q, STRAND_CLOSED);
}

const luaL_Reg ssh_lock_methods[] = { { "_lock", m_lock }, { "_unlock", m_unlock }, { NULL, NULL } };

/* }==== */

/* {==== the session object */

static ssh_sess *check_sess(lua_State *L) { return ssh_check(L, 1, SSH_SESSION_META); }

/* Free every libssh2 handle now, without waiting (the socket is shut down first, so nothing
 * libssh2 tries to send on the way can block or linger). Idempotent. */
static void sess_free(ssh_sess *S) {
  if (S->s == NULL) {   /* never got a libssh2 session (or already freed): only the fd */
    strand_io_close(&S->io);
    if (S->io.fd >= 0) { close(S->io.fd); S->io.fd = -1; }
    return;
  }
  /* no send can block or linger: shut the socket down (in a forked child the connection is the
   * parent's: the transport callbacks refuse every send and receive there instead) */
  if (S->io.fd >= 0 && !ssh_forked(S)) (void)shutdown(S->io.fd, SHUT_RDWR);
  for (ssh_child *c = S->children; c; c = c->next) {
    if (c->kind == SSH_K_SFTP) {
      /* the sftp struct is not freed by libssh2_session_free: shut it down (fails fast now) */
      LIBSSH2_SFTP **sp = (LIBSSH2_SFTP **)(c + 1);
      if (*sp) (void)libssh2_sftp_shutdown(*sp);
      *sp = NULL;
    }
  }
  while (S->children) {
    ssh_child *c = S->children;
    c->dead = 1;
    ssh_child_unlink(c);
  }
  libssh2_session_set_blocking(S->s, 0);
  (void)libssh2_session_free(S->s);
  S->s = NULL;
  strand_io_close(&S->io);
  strand_waitq_wake_all(&S->waiters, STRAND_CLOSED);
  ssh_lock_close(&S->lock);
  if (S->io.fd >= 0) { close(S->io.fd); S->io.fd = -1; }
}

static int sess_gc(lua_State *L) {
  ssh_sess *S = luaL_checkudata(L, 1, SSH_SESSION_META);
  sess_free(S);
  return 0;
}

/* core.ssh.init() -> true | nil, err: initialise libssh2 (and its crypto) now rather than on the
 * first connect; once per process, thread-safe */
static int l_init(lua_State *L) {
  pthread_once(&init_once, init_libssh2);
  if (init_rc != 0) return strand_fail_msg(L, "libssh2 initialisation failed", "ESSH");
  lua_pushboolean(L, 1);
  return 1;
}

/* core.ssh.session(fd, timeout, is_tcp) -> session: a new session over a dup of fd (the caller
 * closes its own socket). The handshake is s:_handshake(). */
static int l_session(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  double timeout = luaL_optnumber(L, 2, -1);
  int tcp = lua_toboolean(L, 3);
  pthread_once(&init_once, init_libssh2);
  if (init_rc != 0) return strand_fail_msg(L, "libssh2 initialisation failed", "ESSH");
  ssh_sess *S = lua_newuserdatauv(L, sizeof *S, 1);
  memset(S, 0, sizeof *S);
  S->self.S = S;
  S->self.kind = -1;
  S->self.lock = &S->lock;
  S->pid = strand_shm_pid();
  strand_io_init(&S->io, -1);
  S->timeout = timeout;
  luaL_setmetatable(L, SSH_SESSION_META);
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (nfd < 0) return strand_fail(L, errno);
  strand_io_init(&S->io, nfd);
  int fl = fcntl(nfd, F_GETFL);
  if (fl < 0 || fcntl(nfd, F_SETFL, fl | O_NONBLOCK) < 0) return strand_fail(L, errno);
  S->tcp = tcp;
  if (tcp) {
    int one = 1;
    (void)setsockopt(nfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  S->s = libssh2_session_init_ex(NULL, NULL, NULL, S);
  if (S->s == NULL) return strand_fail(L, ENOMEM);
  strand_thread_os_spent();         /* libcrypto's per-thread state: no next start on this one */
  libssh2_session_set_blocking(S->s, 0);
  libssh2_session_flag(S->s, LIBSSH2_FLAG_COMPRESS, 0);
  libssh2_session_callback_set(S->s, LIBSSH2_CALLBACK_SEND, (void *)cb_send);
  libssh2_session_callback_set(S->s, LIBSSH2_CALLBACK_RECV, (void *)cb_recv);
  return 1;
}

static int handshake_step(lua_State *L, ssh_sess *S) {
  int rc = libssh2_session_handshake(S->s, S->io.fd);
  if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
  if (rc) return ssh_fail(L, S, rc);
  lua_pushboolean(L, 1);
  return 1;
}

static int m_handshake(lua_State *L) {
  ssh_sess *S = check_sess(L);
  lua_settop(L, 2);
  ssh_push_deadline(L, S, 2);
  return ssh_call(L, handshake_step);
}

static const char *keytype_name(int t) {
  switch (t) {
    case LIBSSH2_HOSTKEY_TYPE_RSA: return "ssh-rsa";
    case LIBSSH2_HOSTKEY_TYPE_DSS: return "ssh-dss";
#ifdef LIBSSH2_HOSTKEY_TYPE_ECDSA_256
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_256: return "ecdsa-sha2-nistp256";
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_384: return "ecdsa-sha2-nistp384";
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: return "ecdsa-sha2-nistp521";
#endif
#ifdef LIBSSH2_HOSTKEY_TYPE_ED25519
    case LIBSSH2_HOSTKEY_TYPE_ED25519: return "ssh-ed25519";
#endif
    default: return "unknown";
  }
}

static int knownhost_keybit(int t) {
  switch (t) {
    case LIBSSH2_HOSTKEY_TYPE_RSA: return LIBSSH2_KNOWNHOST_KEY_SSHRSA;
    case LIBSSH2_HOSTKEY_TYPE_DSS: return LIBSSH2_KNOWNHOST_KEY_SSHDSS;
#ifdef LIBSSH2_HOSTKEY_TYPE_ECDSA_256
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_256: return LIBSSH2_KNOWNHOST_KEY_ECDSA_256;
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_384: return LIBSSH2_KNOWNHOST_KEY_ECDSA_384;
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: return LIBSSH2_KNOWNHOST_KEY_ECDSA_521;
#endif
#ifdef LIBSSH2_HOSTKEY_TYPE_ED25519
    case LIBSSH2_HOSTKEY_TYPE_ED25519: return LIBSSH2_KNOWNHOST_KEY_ED25519;
#endif
    default: return LIBSSH2_KNOWNHOST_KEY_UNKNOWN;
  }
}

static void push_base64(lua_State *L, const unsigned char *p, size_t n, int pad) {
  static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned)p[i] << 16;
    if (i + 1 < n) v |= (unsigned)p[i + 1] << 8;
    if (i + 2 < n) v |= p[i + 2];
    luaL_addchar(&b, tab[(v >> 18) & 63]);
    luaL_addchar(&b, tab[(v >> 12) & 63]);
    if (i + 1 < n) luaL_addchar(&b, tab[(v >> 6) & 63]); else if (pad) luaL_addchar(&b, '=');
    if (i + 2 < n) luaL_addchar(&b, tab[v & 63]); else if (pad) luaL_addchar(&b, '=');
  }
  luaL_pushresult(&b);
}

/* s:hostkey() -> key (raw blob), type name, "SHA256:..." fingerprint */
static int m_hostkey(lua_State *L) {
  ssh_sess *S = check_sess(L);
  size_t len;
  int type;
  const char *key = libssh2_session_hostkey(S->s, &len, &type);
  if (key == NULL) return strand_fail_msg(L, "no host key yet", "ESSH");
  lua_pushlstring(L, key, len);
  lua_pushstring(L, keytype_name(type));
  const char *h = libssh2_hostkey_hash(S->s, LIBSSH2_HOSTKEY_HASH_SHA256);
  if (h == NULL) return strand_fail_msg(L, "no host key yet", "ESSH");
  lua_pushliteral(L, "SHA256:");
  push_base64(L, (const unsigned char *)h, 32, 0);
  lua_concat(L, 2);
  lua_pushinteger(L, type);
  return 4;
}

/* s:_knownhost(path, host, port, add) -> "match" | "mismatch" | "notfound" (| true when added) */
static int m_knownhost(lua_State *L) {
  ssh_sess *S = check_sess(L);
  const char *path = luaL_checkstring(L, 2);
  const char *host = luaL_checkstring(L, 3);
  int port = (int)luaL_checkinteger(L, 4);
  int add = lua_toboolean(L, 5);
  size_t len;
  int type;
  const char *key = libssh2_session_hostkey(S->s, &len, &type);
  if (key == NULL) return strand_fail_msg(L, "no host key yet", "ESSH");
  LIBSSH2_KNOWNHOSTS *kh = libssh2_knownhost_init(S->s);
  if (kh == NULL) return strand_fail(L, ENOMEM);
  int rc = libssh2_knownhost_readfile(kh, path, LIBSSH2_KNOWNHOST_FILE_OPENSSH);
  if (rc < 0 && access(path, F_OK) == 0) {
    libssh2_knownhost_free(kh);
    lua_pushnil(L);
    lua_pushfstring(L, "cannot read known_hosts file %s", path);
    lua_pushliteral(L, "EKNOWNHOSTS");
    return 3;
  }
  int mask = LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW | knownhost_keybit(type);
  if (add) {
    char name[300];
    if (port == 22) snprintf(name, sizeof name, "%s", host);
    else snprintf(name, sizeof name, "[%s]:%d", host, port);
    rc = libssh2_knownhost_addc(kh, name, NULL, key, len, NULL, 0, mask, NULL);
    if (rc == 0) {
      /* created 0600 if missing; libssh2 rewrites the whole file */
      int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      if (fd >= 0) close(fd);
      rc = libssh2_knownhost_writefile(kh, path, LIBSSH2_KNOWNHOST_FILE_OPENSSH);
    }
    libssh2_knownhost_free(kh);
    if (rc) {
      lua_pushnil(L);
      lua_pushfstring(L, "cannot write known_hosts file %s", path);
      lua_pushliteral(L, "EKNOWNHOSTS");
      return 3;
    }
    lua_pushboolean(L, 1);
    return 1;
  }
  rc = libssh2_knownhost_checkp(kh, host, port, key, len, mask, NULL);
  libssh2_knownhost_free(kh);
  switch (rc) {
    case LIBSSH2_KNOWNHOST_CHECK_MATCH: lua_pushliteral(L, "match"); break;
    case LIBSSH2_KNOWNHOST_CHECK_MISMATCH: lua_pushliteral(L, "mismatch"); break;
    case LIBSSH2_KNOWNHOST_CHECK_NOTFOUND: lua_pushliteral(L, "notfound"); break;
    default: return strand_fail_msg(L, "cannot check the host key", "EKNOWNHOSTS");
  }
  return 1;
}

/* s:_authlist(user [, timeout]) -> "publickey,password" | true (already authenticated) */
static int authlist_step(lua_State *L, ssh_sess *S) {
  size_t ul;
  const char *user = lua_tolstring(L, 2, &ul);
  char *list = libssh2_userauth_list(S->s, user, (unsigned)ul);
  if (list) { lua_pushstring(L, list); return 1; }
  if (libssh2_userauth_authenticated(S->s)) { lua_pushboolean(L, 1); return 1; }
  int rc = libssh2_session_last_errno(S->s);
  if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
  return ssh_fail(L, S, rc);
}

static int m_authlist(lua_State *L) {
  ssh_sess *S = check_sess(L);
  luaL_checkstring(L, 2);
  lua_settop(L, 3);
  ssh_push_deadline(L, S, 3);
  return ssh_call(L, authlist_step);
}

static int auth_result(lua_State *L, ssh_sess *S, int rc) {
  if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
  if (rc) return ssh_fail(L, S, rc);
  lua_pushboolean(L, 1);
  return 1;
}

/* s:_auth_password(user, password [, timeout]) */
static int authpw_step(lua_State *L, ssh_sess *S) {
  size_t ul, pl;
  const char *user = lua_tolstring(L, 2, &ul), *pw = lua_tolstring(L, 3, &pl);
  return auth_result(L, S, libssh2_userauth_password_ex(S->s, user, (unsigned)ul, pw, (unsigned)pl, NULL));
}

static int m_auth_password(lua_State *L) {
  ssh_sess *S = check_sess(L);
  luaL_checkstring(L, 2);
  luaL_checkstring(L, 3);
  lua_settop(L, 4);
  ssh_push_deadline(L, S, 4);
  return ssh_call(L, authpw_step);
}

/* s:_auth_key(user, private_path, public_path|nil, passphrase|nil [, timeout]) */
static int authkey_step(lua_State *L, ssh_sess *S) {
  size_t ul;
  const char *user = lua_tolstring(L, 2, &ul);
  return auth_result(L, S, libssh2_userauth_publickey_fromfile_ex(S->s, user, (unsigned)ul,
                      lua_tostring(L, 4), lua_tostring(L, 3), lua_tostring(L, 5)));
}

static int m_auth_key(lua_State *L) {
  ssh_sess *S = check_sess(L);
  luaL_checkstring(L, 2);
  luaL_checkstring(L, 3);
  luaL_optstring(L, 4, NULL);
  luaL_optstring(L, 5, NULL);
  lua_settop(L, 6);
  ssh_push_deadline(L, S, 6);
  return ssh_call(L, authkey_step);
}

/* keyboard-interactive: every prompt is answered with the password (index 3 of the calling
 * stack, reachable through the session while the call runs) */
typedef struct kbd_ctx { const char *pw; size_t len; } kbd_ctx;
static _Thread_local kbd_ctx *kbd_current;

static LIBSSH2_USERAUTH_KBDINT_RESPONSE_FUNC(kbdint_cb) {
  (void)name; (void)name_len; (void)instruction; (void)instruction_len; (void)prompts;
  (void)abstract;
  for (int i = 0; i < num_prompts; i++) {
    responses[i].text = NULL;
    responses[i].length = 0;
    if (kbd_current == NULL) continue;
    char *t = malloc(kbd_current->len + 1);
    if (t == NULL) continue;
    memcpy(t, kbd_current->pw, kbd_current->len);
    t[kbd_current->len] = 0;
    responses[i].text = t;
    responses[i].length = (unsigned)kbd_current->len;
  }
}

static int authkbd_step(lua_State *L, ssh_sess *S) {
  size_t ul;
  kbd_ctx k;
  const char *user = lua_tolstring(L, 2, &ul);
  k.pw = lua_tolstring(L, 3, &k.len);
  kbd_current = &k;
  int rc = libssh2_userauth_keyboard_interactive_ex(S->s, user, (unsigned)ul, kbdint_cb);
  kbd_current = NULL;
  return auth_result(L, S, rc);
}

static int m_auth_kbdint(lua_State *L) {
  ssh_sess *S = check_sess(L);
  luaL_checkstring(L, 2);
  luaL_checkstring(L, 3);
  lua_settop(L, 4);
  ssh_push_deadline(L, S, 4);
  return ssh_call(L, authkbd_step);
}

/* s:_auth_agent(user [, timeout]): tries each identity the agent holds. The agent itself is a
 * local UNIX socket that libssh2 talks to synchronously (short local round trips). */
typedef struct agent_box { LIBSSH2_AGENT *a; struct libssh2_agent_publickey *id; int listed; } agent_box;

static int agent_box_gc(lua_State *L) {
  agent_box *b = lua_touserdata(L, 1);
  if (b->a) { libssh2_agent_disconnect(b->a); libssh2_agent_free(b->a); b->a = NULL; }
  return 0;
}

static int authagent_step(lua_State *L, ssh_sess *S) {
  agent_box *b = lua_touserdata(L, 3);
  const char *user = lua_tostring(L, 2);
  if (b->a == NULL) {
    b->a = libssh2_agent_init(S->s);
    if (b->a == NULL) return strand_fail_msg(L, "no ssh agent", "ENOAGENT");
    if (libssh2_agent_connect(b->a) || libssh2_agent_list_identities(b->a))
      return strand_fail_msg(L, "no ssh agent", "ENOAGENT");
    if (libssh2_agent_get_identity(b->a, &b->id, NULL) != 0)
      return strand_fail_msg(L, "authentication failed: the agent holds no key", "EAUTH");
  }
  for (;;) {
    int rc = libssh2_agent_userauth(b->a, user, b->id);
    if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
    if (rc == 0) { lua_pushboolean(L, 1); return 1; }
    struct libssh2_agent_publickey *prev = b->id;
    if (libssh2_agent_get_identity(b->a, &b->id, prev) != 0)
      return strand_fail_msg(L, "authentication failed", "EAUTH");
  }
}

static int m_auth_agent(lua_State *L) {
  ssh_sess *S = check_sess(L);
  luaL_checkstring(L, 2);
  lua_settop(L, 2);
  agent_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  lua_newtable(L);
  lua_pushcfunction(L, agent_box_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  ssh_push_deadline(L, S, 4);   /* index 4 is none: the session's default */
  int n = ssh_call(L, authagent_step);
  return n;
}

/* s:_keepalive(interval) configures; s:_keepalive_send() -> seconds to the next one */
static int keepalive_step(lua_State *L, ssh_sess *S) {
  int next = 0;
  int rc = libssh2_keepalive_send(S->s, &next);
  if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
  if (rc) return ssh_fail(L, S, rc);
  lua_pushinteger(L, next);
  return 1;
}

static int m_keepalive(lua_State *L) {
  ssh_sess *S = check_sess(L);
  libssh2_keepalive_config(S->s, 1, (unsigned)luaL_checkinteger(L, 2));
  return 0;
}

static int m_keepalive_send(lua_State *L) {
  ssh_sess *S = check_sess(L);
  lua_settop(L, 1);
  ssh_push_deadline(L, S, 2);
  return ssh_call(L, keepalive_step);
}

static int disconnect_step(lua_State *L, ssh_sess *S) {
  int rc = libssh2_session_disconnect(S->s, "bye");
  if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
  lua_pushboolean(L, 1);
  return 1;
}

/* A disconnect that yielded comes back through call_k, which returns straight to Lua: the Lua
 * layer's close() calls s:_free() after s:_bye(). */
static int m_bye(lua_State *L) {
  ssh_sess *S = luaL_checkudata(L, 1, SSH_SESSION_META);
  if (S->s == NULL || ssh_forked(S)) { lua_pushboolean(L, 1); return 1; }   /* child: no goodbye */
  lua_settop(L, 1);
  lua_pushnumber(L, strand_now() + 1.0);
  return ssh_call(L, disconnect_step);
}

/* Close every channel, listener, SFTP file and SFTP session of S, newest first (files before
 * their sftp), each cooperatively; what is left when the deadline passes is freed by sess_free. */
static int close_children_step(lua_State *L, ssh_sess *S) {
  while (S->children) {
    ssh_child *c = S->children;
    if (c->closer && c->closer(c) == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
    c->dead = 1;
    ssh_child_unlink(c);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* s:_close_children() -> true (bounded: 1 s) */
static int m_close_children(lua_State *L) {
  ssh_sess *S = luaL_checkudata(L, 1, SSH_SESSION_META);
  if (S->s == NULL || ssh_forked(S)) { lua_pushboolean(L, 1); return 1; }
  lua_settop(L, 1);
  lua_pushnumber(L, strand_now() + 1.0);
  return ssh_call(L, close_children_step);
}

static int m_free(lua_State *L) {
  ssh_sess *S = luaL_checkudata(L, 1, SSH_SESSION_META);
  sess_free(S);
  return 0;
}

static int m_closed(lua_State *L) {
  ssh_sess *S = luaL_checkudata(L, 1, SSH_SESSION_META);
  lua_pushboolean(L, S->s == NULL);
  return 1;
}

static int m_authenticated(lua_State *L) {
  ssh_sess *S = check_sess(L);
  lua_pushboolean(L, libssh2_userauth_authenticated(S->s));
  return 1;
}

static int m_settimeout(lua_State *L) {
  ssh_sess *S = check_sess(L);
  double t = luaL_optnumber(L, 2, -1);
  if (!lua_isnoneornil(L, 2))
    luaL_argcheck(L, t >= 0 && t == t, 2, "timeout must be a number >= 0 or nil");
  S->timeout = t;
  return 0;
}

static int m_fileno(lua_State *L) {
  ssh_sess *S = check_sess(L);
  lua_pushinteger(L, S->io.fd);
  return 1;
}

static int sess_tostring(lua_State *L) {
  ssh_sess *S = luaL_checkudata(L, 1, SSH_SESSION_META);
  lua_pushfstring(L, "ssh session (%s)", S->s ? "open" : "closed");
  return 1;
}

static const luaL_Reg sess_methods[] = {
  { "_handshake", m_handshake }, { "hostkey", m_hostkey }, { "_knownhost", m_knownhost },
  { "_authlist", m_authlist }, { "_auth_password", m_auth_password }, { "_auth_key", m_auth_key },
  { "_auth_kbdint", m_auth_kbdint }, { "_auth_agent", m_auth_agent },
  { "_keepalive", m_keepalive }, { "_keepalive_send", m_keepalive_send },
  { "_bye", m_bye }, { "_free", m_free }, { "_close_children", m_close_children }, { "closed", m_closed },
  { "authenticated", m_authenticated }, { "settimeout", m_settimeout }, { "fileno", m_fileno },
  { NULL, NULL }
};

/* }==== */

/* ssh._errname(errno) -> "ENOENT" ... (the code of a local file's failure, as io.open reports it) */
static int l_errname(lua_State *L) {
  strand_fail(L, (int)luaL_checkinteger(L, 1));
  return 1;
}

int strand_open_ssh(lua_State *L) {
  luaL_newmetatable(L, SSH_SESSION_META);
  lua_newtable(L);
  luaL_setfuncs(L, sess_methods, 0);
  luaL_setfuncs(L, ssh_session_chan_methods, 0);
  luaL_setfuncs(L, ssh_session_sftp_methods, 0);
  luaL_setfuncs(L, ssh_lock_methods, 0);
  lua_setfield(L, -2, "methods");
  lua_pushcfunction(L, sess_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, sess_gc);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, sess_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_getfield(L, -1, "methods");
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  ssh_open_channels(L);
  ssh_open_sftp(L);
  lua_newtable(L);
  lua_pushcfunction(L, l_session);
  lua_setfield(L, -2, "session");
  lua_pushcfunction(L, l_init);
  lua_setfield(L, -2, "init");
  lua_pushcfunction(L, l_errname);
  lua_setfield(L, -2, "_errname");
  lua_pushinteger(L, LIBSSH2_VERSION_NUM);
  lua_setfield(L, -2, "libssh2_version_num");
  lua_pushstring(L, libssh2_version(0));
  lua_setfield(L, -2, "libssh2_version");
  /* the session metatable, so the Lua layer can add methods written in Lua */
  luaL_getmetatable(L, SSH_SESSION_META);
  lua_setfield(L, -2, "session_meta");
  return 1;
}
