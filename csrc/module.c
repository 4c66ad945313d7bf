/* module.c — luaopen_strand_core: the one entry point of strand/core.so.
 * Registers the task API at the top level and opens each area's table on first use. */
#include "strand.h"
#include "coreapi.h"

#include <string.h>

STRAND_API int strand_open_task(lua_State *L);  /* task.c */

typedef struct area { const char *name; int (*open)(lua_State *L); } area;

#define STRAND_AREA_ENTRY(n) { #n, strand_open_##n },
static const area areas[] = { STRAND_AREAS(STRAND_AREA_ENTRY) { NULL, NULL } };
#undef STRAND_AREA_ENTRY

/* core at index ci: opens area a, stores it at core[name], leaves it on the stack. */
static void open_area(lua_State *L, int ci, const area *a) {
  int top = lua_gettop(L);
  a->open(L);
  lua_settop(L, top + 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, ci, a->name);
}

/* The SSH area is built into strand/sshcore.so (only programs that use ssh map libssh2 and
 * libcrypto): core.ssh loads it through require("strand.sshcore"), which binds it to this core. */
static int open_ssh_module(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "strand.sshcore");
  lua_call(L, 1, 1);
  return 1;
}

/* __index of the core table: an area is opened in a state the first time it is looked up, so
 * a thread's state pays only for the areas it uses (most of a thread's start was opening them). */
static int core_index(lua_State *L) {
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  const char *k = lua_tostring(L, 2);
  for (const area *a = areas; a->name; a++) {
    if (a->open != NULL && strcmp(a->name, k) == 0) {   /* NULL: area not built (weak symbol) */
      open_area(L, 1, a);
      return 1;
    }
  }
  if (strand_open_ssh == NULL && strcmp(k, "ssh") == 0) {   /* in sshcore.so, not here */
    static const area ssh_module = { "ssh", open_ssh_module };
    open_area(L, 1, &ssh_module);
    return 1;
  }
  return 0;
}

void strand_core_open_areas(lua_State *L) {
  luaL_checkstack(L, 4, NULL);
  if (lua_getfield(L, LUA_REGISTRYINDEX, "strand.core") != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  int ci = lua_gettop(L);
  for (const area *a = areas; a->name; a++) {
    if (a->open == NULL) continue;
    lua_getfield(L, ci, a->name);             /* through core_index: opens it if not yet */
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

__attribute__((visibility("default"))) int luaopen_strand_core(lua_State *L) {
  strand_open_task(L);                      /* core table with the task API */
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, "strand.core");
  lua_pushlightuserdata(L, (void *)&strand_core_api_table);   /* for strand/sshcore.so */
  lua_setfield(L, LUA_REGISTRYINDEX, STRAND_CORE_API_KEY);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, core_index);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  return 1;
}
