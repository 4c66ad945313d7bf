/* fuzz/lua_target.h — a libFuzzer target whose checks are written in Lua: include it after
 * defining TARGET_SCRIPT ("fuzz/<name>.lua", relative to the repository). The script returns
 * function(input); an error it raises is a finding (reported with its traceback, then abort()),
 * so are crashes and sanitizer reports in strand's C code underneath. One state serves 500
 * inputs (a full collection after each), then a fresh one is made, so that state left behind by
 * an input cannot pile up unnoticed. */
#include "fuzz.h"

static fuzz_mem mem;
static lua_State *state;
static int uses;

static lua_State *target_state(void) {
  if (state && uses++ < 500) return state;
  if (state) lua_close(state);
  uses = 1;
  state = fuzz_state(&mem, (size_t)-1 / 2);
  lua_getglobal(state, "debug");
  lua_getfield(state, -1, "traceback");
  lua_remove(state, -2);                          /* traceback */
  if (luaL_loadfile(state, STRAND_ROOT "/" TARGET_SCRIPT) != LUA_OK)
    fuzz_fail("cannot load %s: %s", TARGET_SCRIPT, lua_tostring(state, -1));
  if (lua_pcall(state, 0, 1, 1) != LUA_OK)
    fuzz_fail("%s: %s", TARGET_SCRIPT, lua_tostring(state, -1));
  return state;                                   /* traceback fn */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = target_state();
  lua_pushvalue(L, 2);
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, 1) != LUA_OK)
    fuzz_fail("%s", lua_tostring(L, -1));
  lua_settop(L, 2);
  lua_gc(L, LUA_GCCOLLECT);
  return 0;
}
