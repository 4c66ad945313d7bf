/* ssh.h — private to the SSH area (ssh.c, sshchan.c, sftp.c): the session object, the one way a
 * libssh2 call is retried cooperatively, and the child objects (channels, listeners, SFTP). */
#ifndef STRAND_SSH_H
#define STRAND_SSH_H

#include "strand.h"

#include <libssh2.h>
#include <libssh2_sftp.h>
#include <unistd.h>

#define SSH_SESSION_META "strand.ssh.session"
#define SSH_CHANNEL_META "strand.ssh.channel"
#define SSH_LISTENER_META "strand.ssh.listener"
#define SSH_SFTP_META "strand.ssh.sftp"
#define SSH_FILE_META "strand.ssh.sftpfile"

typedef struct ssh_sess ssh_sess;

/* libssh2 keeps the state of some non-blocking operations per session (opening channels, SFTP
 * init, remote forwards) or per SFTP session (every SFTP request), not per call: two tasks must
 * not interleave those. The Lua layer takes this lock around each such call (s:_lock()). */
typedef struct ssh_lock { int busy; strand_waitq q; } ssh_lock;

/* Every object of the area (channel, listener, sftp, sftp file) starts with this header: the
 * session it lives in and its place in the session's list of children. When the session closes
 * it frees every libssh2 handle and sets each child's `dead`. The child's userdata keeps the
 * session's userdata alive (uservalue 1), so `S` stays valid as long as the child exists. */
typedef struct ssh_child {
  ssh_sess *S;
  struct ssh_child *next, *prev;
  int dead;                       /* the session is gone: the handle was freed with it */
  int kind;                       /* SSH_K_* */
  /* one non-blocking attempt to close the handle: LIBSSH2_ERROR_EAGAIN, or done (0 / error) */
  int (*closer)(struct ssh_child *c);
  ssh_lock *lock;                 /* the lock its calls take (session's, sftp's), or NULL */
} ssh_child;

enum { SSH_K_CHANNEL, SSH_K_LISTENER, SSH_K_SFTP, SSH_K_FILE };

struct ssh_sess {
  ssh_child self;                 /* self.S == this session */
  LIBSSH2_SESSION *s;             /* NULL once closed */
  strand_io io;                   /* the transport socket (owned: closed with the session) */
  strand_waitq waiters;           /* tasks waiting while another task polls the socket */
  unsigned long progress;         /* bytes moved by the transport callbacks (any direction) */
  unsigned long received;         /* bytes recv() returned: input libssh2 consumed */
  double timeout;                 /* default timeout of operations; < 0: none */
  int tcp;                        /* the socket is TCP: re-arm TCP_QUICKACK after reads */
  int error;                      /* last transport errno seen by the callbacks */
  ssh_child *children;            /* open channels, listeners, sftp sessions and files */
  ssh_lock lock;                  /* session-level libssh2 state machines */
  pid_t pid;                      /* the process that made it: a forked child never touches the
                                   * connection it shares with its parent (ssh_forked) */
};

/* S was made by another process (this is a forked child): its connection is the parent's. */
#define ssh_forked(S) ((S)->pid != strand_shm_pid())   /* cached: no system call per send */

/* A step makes one attempt at a libssh2 operation. It returns the number of results it pushed
 * (done, success or failure), or SSH_AGAIN (it got LIBSSH2_ERROR_EAGAIN and left the stack as it
 * found it). ssh_call runs step until it is done, waiting between attempts on the direction
 * libssh2_session_block_directions names; index 1 must hold the object (its struct starts with
 * an ssh_child), the top of the stack the absolute deadline (a number). On timeout or a closed
 * session it returns nil, "timeout" / "closed". */
#define SSH_AGAIN (-1)
/* A step that keeps moving data (it never meets EAGAIN while the peer keeps up) stops after
 * SSH_TURN_BYTES and returns SSH_YIELD, its stack left ready to go on as for SSH_AGAIN: ssh_call
 * lets every other ready task of the loop run once (a cancel lands there), then calls it again. */
#define SSH_YIELD (-2)
#define SSH_TURN_BYTES (1024 * 1024)
typedef int (*ssh_step)(lua_State *L, ssh_sess *S);
STRAND_API int ssh_call(lua_State *L, ssh_step step);

/* The object at idx of metatable meta, alive (its session open); raises otherwise. */
STRAND_API void *ssh_check(lua_State *L, int idx, const char *meta);
/* Push the deadline for an optional timeout argument (the session's default when nil). */
STRAND_API void ssh_push_deadline(lua_State *L, ssh_sess *S, int arg);
/* nil, message, code for libssh2 error rc on S (message from libssh2, lowercase). */
STRAND_API int ssh_fail(lua_State *L, ssh_sess *S, int rc);
/* New child userdata of size sz (zeroed, header linked into S, uservalue = session at sidx). */
STRAND_API void *ssh_child_new(lua_State *L, size_t sz, int sidx, int kind, const char *meta);
STRAND_API void ssh_child_unlink(ssh_child *c);
/* A child went away: every task waiting on S retries (the one waiting for that child then sees
 * it closed instead of waiting for data that will never come). */
STRAND_API void ssh_kick(ssh_sess *S);

/* Methods _lock([timeout]) -> token | nil, "timeout" and _unlock() for every object type. */
STRAND_API extern const luaL_Reg ssh_lock_methods[];
/* Wake everybody waiting for a lock with STRAND_CLOSED (its object is going away). */
STRAND_API void ssh_lock_close(ssh_lock *k);

/* sshchan.c and sftp.c: metatables and methods registered by ssh.c's opener */
STRAND_API void ssh_open_channels(lua_State *L);   /* leaves nothing on the stack */
STRAND_API void ssh_open_sftp(lua_State *L);
STRAND_API extern const luaL_Reg ssh_session_chan_methods[];   /* session methods making channels */
STRAND_API extern const luaL_Reg ssh_session_sftp_methods[];

#endif
