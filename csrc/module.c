/* module.c — luaopen_strand_core: the one entry point of strand/core.so.
 * Registers the task API at the top level and each area's table under its name. */
#include "strand.h"

STRAND_API int strand_open_task(lua_State *L);  /* task.c */

typedef struct area { const char *name; int (*open)(lua_State *L); } area;

#define STRAND_AREA_ENTRY(n) { #n, strand_open_##n },
static const area areas[] = { STRAND_AREAS(STRAND_AREA_ENTRY) { NULL, NULL } };
#undef STRAND_AREA_ENTRY

__attribute__((visibility("default"))) int luaopen_strand_core(lua_State *L) {
  strand_open_task(L);                      /* core table with the task API */
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, "strand.core");
  for (const area *a = areas; a->name; a++) {
    if (a->open == NULL) continue;            /* area not built yet (weak symbol) */
    a->open(L);
    lua_setfield(L, -2, a->name);
  }
  return 1;
}
