/* owner.c — who holds a lock across the process family: a process's identity (pid and start
 * time, so a recycled pid is not mistaken for it) and whether that process has ended. */
#include "strand.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define PID_BITS 22                     /* PID_MAX_LIMIT is 2^22 */
#define PID_MASK (((int64_t)1 << PID_BITS) - 1)
#define START_MASK (((int64_t)1 << 40) - 1)

/* The start time (clock ticks since boot) of process pid from /proc/pid/stat, and its state
 * letter: 0 if it is gone (or /proc cannot say: -1). */
static int proc_stat(int pid, uint64_t *start, char *state) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  int fd;
  do fd = open(path, O_RDONLY | O_CLOEXEC); while (fd < 0 && errno == EINTR);
  if (fd < 0) return errno == ENOENT || errno == ESRCH ? 0 : -1;
  ssize_t n;
  size_t got = 0;
  while (got < sizeof buf - 1 && (n = read(fd, buf + got, sizeof buf - 1 - got)) != 0) {
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      close(fd);
      return e == ESRCH ? 0 : -1;       /* it ended while we read */
    }
    got += (size_t)n;
  }
  close(fd);
  buf[got] = '\0';
  char *p = strrchr(buf, ')');          /* the command name may hold spaces and parentheses */
  if (p == NULL || p[1] != ' ') return -1;
  p += 2;
  *state = *p;
  /* fields after the name: 3 state ... 22 starttime */
  for (int field = 3; field < 22; field++) {
    p = strchr(p, ' ');
    if (p == NULL) return -1;
    p++;
  }
  unsigned long long st = 0;
  if (sscanf(p, "%llu", &st) != 1) return -1;
  *start = st;
  return 1;
}

static int64_t cached;                  /* this process's identity; a child's pid differs */

int64_t strand_owner_self(void) {
  int pid = strand_shm_pid();
  int64_t id = __atomic_load_n(&cached, __ATOMIC_RELAXED);
  if (id && (id & PID_MASK) == pid) return id;
  uint64_t start = 0;
  char state;
  if (proc_stat(pid, &start, &state) != 1) start = 0;   /* no /proc: the pid alone */
  id = (int64_t)((start & (uint64_t)START_MASK) << PID_BITS) | pid;
  __atomic_store_n(&cached, id, __ATOMIC_RELAXED);
  return id;
}

int strand_owner_pid(int64_t id) { return (int)(id & PID_MASK); }

int strand_owner_dead(int64_t id) {
  if (id <= 0) return 0;
  int pid = (int)(id & PID_MASK);
  if (pid == strand_shm_pid()) return 0;
  uint64_t start = 0;
  char state = 0;
  int r = proc_stat(pid, &start, &state);
  if (r == 0) return 1;
  if (r < 0) return kill(pid, 0) < 0 && errno == ESRCH;
  if ((int64_t)(start & (uint64_t)START_MASK) != (id >> PID_BITS) && (id >> PID_BITS) != 0)
    return 1;                           /* the pid was recycled */
  return state == 'Z' || state == 'X';  /* killed, not reaped yet */
}
