/* coreapi.h — the table of core.so's internal functions that strand/sshcore.so calls (the SSH
 * area is a module of its own so that only programs using ssh map libssh2 and libcrypto). */
#ifndef STRAND_COREAPI_H
#define STRAND_COREAPI_H

#include "strand.h"

/* Bump when the list below changes meaning. STRAND_ABI_SUM is the Makefile's checksum of
 * strand.h and this header (struct layouts both modules share); 0 in builds without it. */
#define STRAND_CORE_ABI 1
#ifndef STRAND_ABI_SUM
#define STRAND_ABI_SUM 0
#endif

/* X(return type, name, (parameters), (arguments), return or nothing) for each function of core.so
 * that sshcore uses. */
#define STRAND_CORE_IMPORTS(X) \
  X(double, strand_now, (void), (), return) \
  X(double, strand_opt_deadline, (lua_State *L, int arg), (L, arg), return) \
  X(void, strand_io_init, (strand_io *io, int fd), (io, fd), ) \
  X(void, strand_io_close, (strand_io *io), (io), ) \
  X(int, strand_wait_io, (lua_State *L, strand_io *io, int ev, double deadline, \
                          lua_KContext ctx, lua_KFunction k), (L, io, ev, deadline, ctx, k), return) \
  X(int, strand_wait_queue, (lua_State *L, strand_waitq *q, double deadline, \
                             lua_KContext ctx, lua_KFunction k), (L, q, deadline, ctx, k), return) \
  X(int, strand_waitq_wake_all, (strand_waitq *q, int outcome), (q, outcome), return) \
  X(void, strand_wake, (strand_task *t, int outcome), (t, outcome), ) \
  X(int, strand_resumed, (lua_State *L, int status), (L, status), return) \
  X(strand_loop *, strand_loop_get, (lua_State *L), (L), return) \
  X(char *, strand_loop_scratch, (strand_loop *loop), (loop), return) \
  X(int, strand_fail, (lua_State *L, int err), (L, err), return) \
  X(int, strand_fail_msg, (lua_State *L, const char *msg, const char *code), (L, msg, code), return) \
  X(void, strand_thread_os_spent, (void), (), ) \
  X(int, strand_shm_pid, (void), (), return) \
  X(int, strand_wait_timer, (lua_State *L, double deadline, lua_KContext ctx, lua_KFunction k), \
    (L, deadline, ctx, k), return)

typedef struct strand_core_api {
  unsigned abi;                   /* STRAND_CORE_ABI */
  unsigned long sum;              /* STRAND_ABI_SUM */
  size_t size;                    /* sizeof(strand_core_api) */
#define STRAND_CORE_FIELD(ret, name, params, args, r) ret (*name) params;
  STRAND_CORE_IMPORTS(STRAND_CORE_FIELD)
#undef STRAND_CORE_FIELD
} strand_core_api;

/* Registry key of a light userdata pointing at core.so's table (set by luaopen_strand_core). */
#define STRAND_CORE_API_KEY "strand.coreapi"

STRAND_API void strand_thread_os_spent(void);   /* thread.c: this OS thread ends with its state */
extern const strand_core_api strand_core_api_table __attribute__((visibility("hidden")));

#endif
