/* sshcore.c — luaopen_strand_sshcore, the entry of strand/sshcore.so (ssh.c, sshchan.c, sftp.c,
 * linked with libssh2): binds to the core.so of the calling state and forwards into its table. */
#include "coreapi.h"

#include <dlfcn.h>

int strand_open_ssh(lua_State *L);       /* ssh.c */

/* The core this process's SSH area calls: set by the first luaopen, the same for every state
 * (one core.so per process; a second one is refused). Never reset: the module stays loaded. */
static _Atomic(const strand_core_api *) core_api;

static inline const strand_core_api *api(void) {
  return atomic_load_explicit(&core_api, memory_order_acquire);
}

/* ssh*.c call these by the names strand.h declares (hidden here, as in core.so). */
#define STRAND_CORE_FORWARD(ret, name, params, args, r) ret name params { r api()->name args; }
STRAND_CORE_IMPORTS(STRAND_CORE_FORWARD)
#undef STRAND_CORE_FORWARD

/* Keeps a module (this one, and so libssh2 and libcrypto, whose per-thread state and exit handlers
 * point into them) mapped until the process ends, whichever Lua state closes last. */
static void pin(void *code) {
  Dl_info info;
  if (dladdr(code, &info) == 0 || info.dli_fname == NULL) return;
  (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);   /* NULL: not pinned */
}

__attribute__((visibility("default"))) int luaopen_strand_sshcore(lua_State *L) {
  int top = lua_gettop(L);
  lua_getglobal(L, "require");                     /* the core of this state, loaded if not yet */
  lua_pushliteral(L, "strand.core");
  lua_call(L, 1, 1);
  if (lua_type(L, -1) == LUA_TTABLE)   /* a thread's state has a stub until a field is read */
    lua_getfield(L, -1, "now");        /* (thread.c lazy_fill): it opens the module */
  lua_settop(L, top);
  lua_getfield(L, LUA_REGISTRYINDEX, STRAND_CORE_API_KEY);
  const strand_core_api *t = (const strand_core_api *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (t == NULL)
    return luaL_error(L, "strand.sshcore: the loaded strand.core has no core API table "
                         "(core.so and sshcore.so come from different strand builds)");
  if (t->abi != STRAND_CORE_ABI || t->sum != (unsigned long)STRAND_ABI_SUM ||
      t->size != sizeof(strand_core_api))
    return luaL_error(L, "strand.sshcore: built for another strand.core (ABI %d/%I, this "
                         "sshcore.so wants %d/%I): load core.so and sshcore.so of the same build",
                      (int)t->abi, (lua_Integer)t->sum, STRAND_CORE_ABI,
                      (lua_Integer)STRAND_ABI_SUM);
  const strand_core_api *expected = NULL;
  if (!atomic_compare_exchange_strong(&core_api, &expected, t) && expected != t)
    return luaL_error(L, "strand.sshcore: another strand.core is already in use by ssh in this "
                         "process");
  pin((void *)pin);
  /* and the core.so core_api points into: unloaded (its last state closed, in a program that
   * makes states one after another), it would come back elsewhere, refused as another core */
  pin((void *)t->strand_now);
  return strand_open_ssh(L);
}
