/* spawn.c — starting external programs with posix_spawn: argv, env, cwd and the child's
 * stdin/stdout/stderr; every other descriptor strand holds is O_CLOEXEC and stays behind. */
#include "strand.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

STRAND_API int strand_process_push_handle(lua_State *L, pid_t pid, int daemon);   /* process.c */

/* A NULL-terminated array of the strings t[1..n] kept alive in a userdata at the top. */
static char **string_array(lua_State *L, int t, const char *what, int arg) {
  lua_Integer n = luaL_len(L, t);
  if (n < 0 || n > 100000) luaL_argerror(L, arg, "too many elements");
  char **a = (char **)lua_newuserdatauv(L, sizeof(char *) * ((size_t)n + 1), 0);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, t, i);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "bad argument #%d to 'spawn' (%s[%d] must be a string)", arg, what, (int)i);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (strlen(s) != len)
      luaL_error(L, "bad argument #%d to 'spawn' (%s[%d] contains a zero byte)", arg, what, (int)i);
    a[i - 1] = (char *)s;               /* the string stays referenced by t */
    lua_pop(L, 1);
  }
  a[n] = NULL;
  return a;
}

/* process._spawn(argv, env|nil, cwd|nil, fd0, fd1, fd2) -> handle | nil, msg, code
 * fdN == -1: the child inherits this process's fd N; -2: /dev/null; else fdN (a socket end,
 * made blocking here) is dup2'ed onto N. env is an
 * array of "K=V" strings (nil: this process's environment). The child starts with every
 * signal at its default disposition (this process ignores SIGPIPE) and none blocked. */
int strand_spawn_exec(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  char **argv = string_array(L, 1, "argv", 1);
  if (argv[0] == NULL) return luaL_argerror(L, 1, "argv is empty");
  char **envp = environ;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    envp = string_array(L, 2, "env", 2);
  }
  const char *cwd = luaL_optstring(L, 3, NULL);
  int fds[3], devnull = -1;
  for (int i = 0; i < 3; i++) {
    fds[i] = (int)luaL_checkinteger(L, 4 + i);
    if (fds[i] == -2) {                         /* "null" */
      if (devnull < 0) {
        do devnull = open("/dev/null", O_RDWR | O_CLOEXEC); while (devnull < 0 && errno == EINTR);
        if (devnull < 0) return strand_fail(L, errno);
      }
      fds[i] = devnull;
    } else if (fds[i] >= 0) {
      /* the child end of a socketpair: the child reads and writes it blocking (O_NONBLOCK
       * belongs to the open file, which the child shares after dup2) */
      int fl = fcntl(fds[i], F_GETFL);
      if (fl < 0 || fcntl(fds[i], F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int e = errno;
        if (devnull >= 0) close(devnull);
        return strand_fail(L, e);
      }
    }
  }

  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  int err = posix_spawn_file_actions_init(&fa);
  if (err) {
    if (devnull >= 0) close(devnull);
    return strand_fail(L, err);
  }
  err = posix_spawnattr_init(&attr);
  if (err) {
    posix_spawn_file_actions_destroy(&fa);
    if (devnull >= 0) close(devnull);
    return strand_fail(L, err);
  }
  for (int i = 0; i < 3 && !err; i++)
    if (fds[i] >= 0) err = posix_spawn_file_actions_adddup2(&fa, fds[i], i);
  if (!err && cwd) err = posix_spawn_file_actions_addchdir_np(&fa, cwd);
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  if (!err) err = posix_spawnattr_setsigdefault(&attr, &all);
  if (!err) err = posix_spawnattr_setsigmask(&attr, &none);
  if (!err) err = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  if (!err) {
    if (strchr(argv[0], '/')) err = posix_spawn(&pid, argv[0], &fa, &attr, argv, envp);
    else err = posix_spawnp(&pid, argv[0], &fa, &attr, argv, envp);
  }
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (devnull >= 0) close(devnull);
  if (err) {
    lua_pushnil(L);
    lua_pushfstring(L, "cannot run %s: %s", argv[0], strand_errmsg(err));
    lua_pushstring(L, strand_errname(err));
    return 3;
  }
  return strand_process_push_handle(L, pid, 2);
}
