/* procinfo.c — core._proc: what this process holds, read from /proc inside the process (no
 * child, no pipe): open fds with their targets, OS threads with their names, children's states;
 * and the working directory (specs that must create files only in a temporary directory). */
#include "strand.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Read at most cap-1 bytes of a small /proc file into buf (NUL-terminated); -1 on failure. */
static ssize_t read_small(const char *path, char *buf, size_t cap) {
  int fd;
  do fd = open(path, O_RDONLY | O_CLOEXEC); while (fd < 0 && errno == EINTR);
  if (fd < 0) return -1;
  size_t got = 0;
  while (got < cap - 1) {
    ssize_t n = read(fd, buf + got, cap - 1 - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += (size_t)n;
  }
  close(fd);
  buf[got] = 0;
  return (ssize_t)got;
}

static int numeric(const char *s) {
  if (*s == 0) return 0;
  for (; *s; s++) if (!isdigit((unsigned char)*s)) return 0;
  return 1;
}

/* Pushes { [entry] = description }, count for the numeric entries of dir: describe(entry,
 * dirfd, buf, cap) writes an entry's description in buf, or returns < 0 to leave it out (it went
 * away meanwhile, or is the listing's own fd). nil, message when dir cannot be opened. */
typedef ssize_t (*describe_fn)(const char *entry, int dirfd, char *buf, size_t cap);

static int list_dir(lua_State *L, const char *dir, describe_fn describe) {
  DIR *d = opendir(dir);
  if (d == NULL) return strand_fail(L, errno);
  int self = dirfd(d);
  lua_newtable(L);
  lua_Integer n = 0;
  struct dirent *e;
  char buf[PATH_MAX];
  while ((e = readdir(d)) != NULL) {
    if (!numeric(e->d_name) || describe(e->d_name, self, buf, sizeof buf) < 0) continue;
    lua_pushstring(L, buf);
    lua_rawseti(L, -2, atoi(e->d_name));
    n++;
  }
  closedir(d);
  lua_pushinteger(L, n);
  return 2;
}

/* An fd's target; the directory's own fd is left out, so the listing is exactly what the
 * process held when it was read. */
static ssize_t fd_target(const char *entry, int dirfd, char *buf, size_t cap) {
  int fd = atoi(entry);
  if (fd == dirfd) return -1;
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  ssize_t len = readlink(path, buf, cap - 1);
  if (len >= 0) buf[len] = 0;                /* < 0: closed meanwhile by another thread */
  return len;
}

/* A thread's name (its comm, without the newline). */
static ssize_t thread_name(const char *entry, int dirfd, char *buf, size_t cap) {
  char path[300];
  snprintf(path, sizeof path, "/proc/self/task/%s/comm", entry);
  ssize_t len = read_small(path, buf, cap);  /* < 0: exited meanwhile */
  if (len > 0 && buf[len - 1] == '\n') buf[len - 1] = 0;
  return len;
}

/* _proc.fds() -> { [fd] = "target" }, count. nil, message on failure. */
static int l_fds(lua_State *L) { return list_dir(L, "/proc/self/fd", fd_target); }

/* _proc.threads() -> { [tid] = "name" }, count. */
static int l_threads(lua_State *L) { return list_dir(L, "/proc/self/task", thread_name); }

/* _proc.children() -> { [pid] = "state letter" }, zombies: every process whose parent is this one. */
static int l_children(lua_State *L) {
  DIR *d = opendir("/proc");
  if (d == NULL) return strand_fail(L, errno);
  pid_t me = getpid();
  lua_newtable(L);
  lua_Integer zombies = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!numeric(e->d_name)) continue;
    char path[300], stat[512];
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    if (read_small(path, stat, sizeof stat) < 0) continue;
    /* "pid (comm) S ppid ...": comm may hold spaces and parentheses, the last ')' ends it */
    char *rp = strrchr(stat, ')');
    char state;
    long ppid;
    if (rp == NULL || sscanf(rp + 1, " %c %ld", &state, &ppid) != 2) continue;
    if ((pid_t)ppid != me) continue;
    char s[2] = { state, 0 };
    lua_pushstring(L, s);
    lua_rawseti(L, -2, atoi(e->d_name));
    if (state == 'Z') zombies++;
  }
  closedir(d);
  lua_pushinteger(L, zombies);
  return 2;
}

/* _proc.getcwd() -> path; _proc.chdir(path) -> true (nil, message on failure): for specs that
 * must run code creating files by relative names inside a temporary directory. */
static int l_getcwd(lua_State *L) {
  char buf[PATH_MAX];
  if (getcwd(buf, sizeof buf) == NULL) return strand_fail(L, errno);
  lua_pushstring(L, buf);
  return 1;
}

static int l_chdir(lua_State *L) {
  if (chdir(luaL_checkstring(L, 1)) != 0) return strand_fail(L, errno);
  lua_pushboolean(L, 1);
  return 1;
}

int strand_open__proc(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"fds", l_fds}, {"threads", l_threads}, {"children", l_children},
    {"getcwd", l_getcwd}, {"chdir", l_chdir}, {NULL, NULL}
  };
  luaL_newlib(L, funcs);
  return 1;
}
