/* object.c — shareable C objects (queues, locks, shared dicts...) seen from several Lua
 * states through boxes: reference counts, metatables, and the type registry serial uses. */
#include "strand.h"

#include <pthread.h>
#include <string.h>
#include <sys/auxv.h>

/* seal: obj ^ box_key, so that strand_object_sealed can tell a box from any other userdata of
 * the same size without looking at its metatable (box_key: random per process, never 0) */
typedef struct box { strand_object *obj; uintptr_t seal; } box;

static uintptr_t box_key;                 /* written once (box_key_once), then read-only */
static pthread_once_t box_key_once = PTHREAD_ONCE_INIT;
static void box_key_make(void) {
  uintptr_t k = (uintptr_t)&box_key * 0x9E3779B97F4A7C15u;
  const unsigned char *r = (const unsigned char *)getauxval(AT_RANDOM);   /* 16 bytes */
  if (r != NULL) {
    uintptr_t x;
    memcpy(&x, r + 8, sizeof x);
    k ^= x;
  }
  box_key = k | 1;
}

void strand_object_init(strand_object *o, const strand_objtype *t) {
  atomic_init(&o->refs, 1);
  o->type = t;
}

void strand_object_retain(strand_object *o) {
  atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
}

void strand_object_release(strand_object *o) {
  if (atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) == 1)
    o->type->destroy(o);
}

void strand_object_push(lua_State *L, strand_object *o) {
  pthread_once(&box_key_once, box_key_make);
  box *b = (box *)lua_newuserdatauv(L, sizeof(box), 0);
  b->obj = NULL;
  b->seal = box_key;
  if (luaL_getmetatable(L, o->type->name) != LUA_TTABLE) {   /* its area is not open here yet */
    lua_pop(L, 1);
    strand_core_open_areas(L);
    luaL_getmetatable(L, o->type->name);
  }
  if (!lua_istable(L, -1)) {
    lua_pop(L, 2);
    strand_object_release(o);
    luaL_error(L, "strand: type %s is not loaded in this state", o->type->name);
  }
  lua_setmetatable(L, -2);
  b->obj = o;
  b->seal = (uintptr_t)o ^ box_key;
}

strand_object *strand_object_sealed(lua_State *L, int idx) {
  box *b = (box *)lua_touserdata(L, idx);
  if (b == NULL || lua_rawlen(L, idx) != sizeof(box)) return NULL;   /* light: 0 */
  strand_object *o = b->obj;
  return o != NULL && b->seal == ((uintptr_t)o ^ box_key) ? o : NULL;
}

strand_object *strand_object_test(lua_State *L, int idx) {
  box *b = (box *)lua_touserdata(L, idx);
  if (b == NULL || !lua_getmetatable(L, idx)) return NULL;
  int ok = lua_getfield(L, -1, "__strand_object") == LUA_TBOOLEAN;
  lua_pop(L, 2);
  return ok ? b->obj : NULL;
}

strand_object *strand_object_check(lua_State *L, int idx, const strand_objtype *t) {
  box *b = (box *)luaL_testudata(L, idx, t->name);
  if (b == NULL) luaL_typeerror(L, idx, t->name);
  if (b->obj == NULL) luaL_argerror(L, idx, "object is closed");
  return b->obj;
}

static int box_gc(lua_State *L) {
  box *b = (box *)lua_touserdata(L, 1);
  if (b && b->obj) {
    strand_object *o = b->obj;
    b->obj = NULL;
    b->seal = box_key;
    strand_object_release(o);
  }
  return 0;
}

void strand_object_newmeta(lua_State *L, const strand_objtype *t,
                           const luaL_Reg *methods, const luaL_Reg *metamethods) {
  strand_objtype_register(t);
  if (!luaL_newmetatable(L, t->name)) return;   /* already made in this state */
  lua_pushcfunction(L, box_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "__strand_object");
  if (metamethods) luaL_setfuncs(L, metamethods, 0);
  if (methods) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
}

/* {==== type registry: process-wide, written once per type at module load */

#define MAX_TYPES 64
static pthread_mutex_t types_lock = PTHREAD_MUTEX_INITIALIZER;
static const strand_objtype *types[MAX_TYPES];   /* shared by every thread: type names */
static int ntypes;

void strand_objtype_register(const strand_objtype *t) {
  pthread_mutex_lock(&types_lock);
  int i;
  for (i = 0; i < ntypes; i++)
    if (types[i] == t) break;
  if (i == ntypes && ntypes < MAX_TYPES) types[ntypes++] = t;
  pthread_mutex_unlock(&types_lock);
}

const strand_objtype *strand_objtype_find(const char *name) {
  const strand_objtype *r = NULL;
  pthread_mutex_lock(&types_lock);
  for (int i = 0; i < ntypes; i++)
    if (strcmp(types[i]->name, name) == 0) { r = types[i]; break; }
  pthread_mutex_unlock(&types_lock);
  return r;
}

/* }==== */
