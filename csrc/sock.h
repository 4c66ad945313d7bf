/* sock.h — private to the socket area (socket.c, sockio.c, sockopt.c, buffer.c, resolve.c):
 * the socket object, the byte buffer and the resolver pool. Other areas use only strand.h. */
#ifndef STRAND_SOCK_H
#define STRAND_SOCK_H

#include "strand.h"

#include <netdb.h>
#include <sys/socket.h>

/* {==== byte buffer (buffer.c): a Lua-free growable FIFO; holds no memory while empty */

/* One block holds the bookkeeping and the bytes, so an idle socket's buffer is one NULL pointer
 * (an idle connection holds no read memory at all) and a busy one is one allocation. */
typedef struct strand_bufblk {
  size_t head, len, cap;    /* bytes live at data[head .. head+len) */
  size_t scanned;           /* leading bytes known to hold no '\n' (reset by every consume) */
  char data[];
} strand_bufblk;

typedef struct strand_buf { strand_bufblk *blk; } strand_buf;   /* NULL while empty */

STRAND_API void strand_buf_init(strand_buf *b);
STRAND_API void strand_buf_free(strand_buf *b);
/* Append n bytes; 0 or ENOMEM (the buffer is unchanged then). */
STRAND_API int strand_buf_append(strand_buf *b, const char *p, size_t n);
/* Drop the first n bytes (n <= len); the memory goes back when the buffer empties. */
STRAND_API void strand_buf_consume(strand_buf *b, size_t n);
/* Index of the first byte c at or after `from`, or -1. */
STRAND_API ptrdiff_t strand_buf_find(const strand_buf *b, char c, size_t from);
#define strand_buf_len(b) ((b)->blk ? (b)->blk->len : (size_t)0)
#define strand_buf_scanned(b) ((b)->blk ? (b)->blk->scanned : (size_t)0)
#define strand_buf_set_scanned(b, n) do { if ((b)->blk) (b)->blk->scanned = (n); } while (0)
#define strand_buf_peek(b) ((b)->blk ? (b)->blk->data + (b)->blk->head : (const char *)NULL)

/* }==== */

/* {==== resolver (resolve.c): getaddrinfo on a small per-process thread pool.
 * A request is shared by its waiter and a worker; whoever lets go last frees it. */

typedef struct strand_resolve strand_resolve;

/* Queue a lookup (host may be NULL). NULL + errno on failure. */
STRAND_API strand_resolve *strand_resolve_start(const char *host, const char *serv,
                                                const struct addrinfo *hints);
/* Readable (eventfd) once the lookup is done. */
STRAND_API int strand_resolve_fd(const strand_resolve *r);
/* 0 while running; else 1 with *gai getaddrinfo's result code, *res handed over to the caller
 * (freeaddrinfo) and *err the errno for EAI_SYSTEM. */
STRAND_API int strand_resolve_take(strand_resolve *r, int *gai, struct addrinfo **res, int *err);
/* The waiter is gone (done or not): the request is freed now or by its worker. */
STRAND_API void strand_resolve_release(strand_resolve *r);

/* }==== */

/* {==== the socket object (userdata "strand.socket") */

#define SOCK_META "strand.socket"

typedef struct sock {
  strand_io io;             /* io.fd is the socket; -1 once closed (or not yet opened) */
  strand_buf rbuf;          /* bytes received but not read yet (NULL while none) */
  double timeout;           /* default timeout of blocking calls (seconds); < 0: none */
  union {                   /* a stream skips, a listener pauses; never both (`listening`) */
    size_t skip;            /* stream: bytes of an oversize frame still to discard */
    double pause;           /* listener out of fds: no accept before this time (0: none) */
  } u;
  uint32_t maxline;         /* read("l"/"L"), lines(): the longest line accepted (0: no limit) */
  uint32_t forkgen;         /* sock_fork_epoch() when made: older, it is shared with a forked process */
  unsigned char family;     /* AF_INET, AF_INET6, AF_UNIX */
  unsigned char type;       /* SOCK_STREAM, SOCK_DGRAM */
  unsigned char nonblocking;  /* setblocking(false): never wait */
  unsigned char eof;        /* stream: the peer finished sending */
  unsigned char listening;  /* listen() succeeded: u.pause is in use */
} sock;   /* kept small: an idle connection is this, its task and nothing else */

#define SOCK_MAXLINE_DEFAULT 65536   /* as asyncio's stream limit */

/* sockio.c: STRAND_POLLER=uring, before the fd is handed out (fileno) */
STRAND_API void sock_uring_detach(sock *s);
/* sockio.c: counts this process's forks (a child inherits the count): a socket made before the
 * latest one is open in another process too (strand_sock_prefork). */
STRAND_API uint32_t sock_fork_epoch(void);

/* socket.c */
STRAND_API sock *sock_check(lua_State *L, int idx);        /* open socket or raise */
STRAND_API double sock_deadline(const sock *s);           /* from the default timeout */
STRAND_API sock *sock_new(lua_State *L, int family, int type);  /* closed-state userdata pushed */
STRAND_API int sock_push_addr(lua_State *L, const struct sockaddr *sa, socklen_t len);
/* Resolve host (at hi) and port (hi+1) into slot ai (sockaddr bytes as a string). The slot must
 * be the top of the stack at the first call; a resolver may be pushed above it. Returns 0 once
 * the slot holds an address; else pushes nil, msg, code and returns 3. May yield (ctx, k). */
STRAND_API int sock_addr(lua_State *L, sock *s, int hi, int ai, double deadline, int outcome,
                         int passive, lua_KContext ctx, lua_KFunction k);

/* sockio.c, sockopt.c: methods registered by socket.c */
STRAND_API extern const luaL_Reg strand_sockio_methods[];
STRAND_API extern const luaL_Reg strand_sockopt_methods[];
STRAND_API void strand_sockio_init(lua_State *L);        /* metatables sockio.c needs */

/* }==== */

#endif
