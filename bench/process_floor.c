/* process_floor.c — the kernel's floor for a fork from a process of strand's size: a Lua module
 * (built by bench/process_counts.sh as BUILD/bench/process_floor.so) whose run(n) forks n
 * children that _exit at once and waits for each, from inside the calling lua5.4 process (with
 * strand loaded: its libraries, heap and arena mapped), and returns microseconds per fork. The
 * same as process_c_baseline's fork mode, in the process a process.start forks. */
#define _GNU_SOURCE
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int run(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  double t0 = now();
  for (lua_Integer i = 0; i < n; i++) {
    pid_t pid = fork();
    if (pid < 0) return luaL_error(L, "fork: %d", errno);
    if (pid == 0) _exit(0);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
  }
  lua_pushnumber(L, n > 0 ? (now() - t0) / (double)n * 1e6 : 0);
  return 1;
}

int luaopen_process_floor(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, run);
  lua_setfield(L, -2, "run");
  return 1;
}
