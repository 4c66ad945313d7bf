/* forkrun.c — a test harness for cross-process wake-ups (spec/scale_spec.lua): runs a Lua
 * script whose global forkrun(code, encoded) forks; the child runs code in a fresh Lua state
 * (a fresh loop) with the values serial.decode(encoded) gives, and exits 0 if it returned true.
 * waitpid(pid) gives the child's exit code (-signal if killed). */
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int child_main(const char *code, const char *enc, size_t enclen) {
  lua_State *L = luaL_newstate();
  if (L == NULL) return 3;
  luaL_openlibs(L);
  int rc = 1;
  if (luaL_loadstring(L, "local code, enc = ...\n"
                         "local serial = require 'strand.serial'\n"
                         "local args = table.pack(serial.decode(enc, {functions = true}))\n"
                         "assert(args[1] ~= nil, args[2])\n"
                         "local f = assert(load(code))\n"
                         "return f(table.unpack(args, 1, args.n))") != LUA_OK) {
    fprintf(stderr, "child: %s\n", lua_tostring(L, -1));
    return 2;
  }
  lua_pushstring(L, code);
  lua_pushlstring(L, enc, enclen);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) fprintf(stderr, "child: %s\n", lua_tostring(L, -1));
  else rc = lua_toboolean(L, -1) ? 0 : 1;
  lua_close(L);
  return rc;
}

static int l_forkrun(lua_State *L) {
  const char *code = luaL_checkstring(L, 1);
  size_t enclen;
  const char *enc = luaL_checklstring(L, 2, &enclen);
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) return luaL_error(L, "fork: %s", strerror(errno));
  if (pid == 0) _exit(child_main(code, enc, enclen));
  lua_pushinteger(L, pid);
  return 1;
}

static int l_waitpid(lua_State *L) {
  pid_t pid = (pid_t)luaL_checkinteger(L, 1);
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return luaL_error(L, "waitpid: %s", strerror(errno));
  lua_pushinteger(L, WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st));
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: forkrun script.lua\n"); return 2; }
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  lua_register(L, "forkrun", l_forkrun);
  lua_register(L, "waitpid", l_waitpid);
  if (luaL_dofile(L, argv[1]) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    lua_close(L);
    return 1;
  }
  lua_close(L);
  return 0;
}
