/* process_c_baseline.c — the floor for bench/process_bench.lua: plain C processes.
 *
 *   process_c_baseline fork N   -> "us N": fork a child that _exits at once, waitpid it; N times
 *   process_c_baseline pipe N   -> "us N": one forked child, N request/reply round trips of a
 *                                  small message over two pipes (a pool's apply, by hand)
 *   process_c_baseline spawn N  -> "us N": posix_spawn("true") + waitpid, N times
 *   process_c_baseline pipesplit N A B -> "us N": the pipe round trip with the parent on CPU A and
 *                                  the child on CPU B (each wake-up crosses CPUs)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void reap(pid_t pid) {
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
}

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set)) { perror("sched_setaffinity"); exit(1); }
}

static int full(int fd, char *buf, size_t n, int rd) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = rd ? read(fd, buf + done, n - done) : write(fd, buf + done, n - done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    done += (size_t)r;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: %s fork|pipe|spawn N\n", argv[0]); return 2; }
  long n = atol(argv[2]);
  double t0 = now();
  if (strcmp(argv[1], "fork") == 0) {
    for (long i = 0; i < n; i++) {
      pid_t pid = fork();
      if (pid < 0) { perror("fork"); return 1; }
      if (pid == 0) _exit(0);
      reap(pid);
    }
  } else if (strcmp(argv[1], "pipe") == 0 || strcmp(argv[1], "pipesplit") == 0) {
    int split = strcmp(argv[1], "pipesplit") == 0;
    if (split && argc < 5) { fprintf(stderr, "usage: %s pipesplit N A B\n", argv[0]); return 2; }
    int req[2], rep[2];
    if (pipe(req) || pipe(rep)) { perror("pipe"); return 1; }
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 1; }
    if (pid == 0) {
      if (split) pin(atoi(argv[4]));
      close(req[1]);
      close(rep[0]);
      char m[16];
      while (full(req[0], m, sizeof m, 1) == 0) if (full(rep[1], m, sizeof m, 0)) break;
      _exit(0);
    }
    close(req[0]);
    close(rep[1]);
    char m[16] = "apply no-op";
    if (split) {
      pin(atoi(argv[3]));
      if (full(req[1], m, sizeof m, 0) || full(rep[0], m, sizeof m, 1)) { perror("io"); return 1; }
    }
    t0 = now();
    for (long i = 0; i < n; i++) {
      if (full(req[1], m, sizeof m, 0) || full(rep[0], m, sizeof m, 1)) { perror("io"); return 1; }
    }
    double dt = now() - t0;
    close(req[1]);
    reap(pid);
    printf("us %.3f\n", dt / n * 1e6);
    return 0;
  } else if (strcmp(argv[1], "spawn") == 0) {
    char *args[] = { "true", NULL };
    for (long i = 0; i < n; i++) {
      pid_t pid;
      int e = posix_spawnp(&pid, "true", NULL, NULL, args, environ);
      if (e) { fprintf(stderr, "spawn: %s\n", strerror(e)); return 1; }
      reap(pid);
    }
  } else {
    return 2;
  }
  printf("us %.3f\n", (now() - t0) / n * 1e6);
  return 0;
}
