/* process_faultcost.c — what one page fault of each kind a start+join takes costs on this machine
 * (bench/process_wall.sh prints it beside the phases): a write to a private page after a fork
 * while the child still maps it (a copy), the same write once the child has exited (the page is
 * made writable again, no copy), and a first write to a page never touched (a zeroed page).
 *   process_faultcost [REPS]  -> "copy US reuse US zero US" (µs per fault, minimum over REPS)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGES 256

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static void reap(pid_t pid) {
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
}

/* writes one byte to each page of m: µs per page */
static double touch(char *m) {
  double t0 = now();
  for (int i = 0; i < PAGES; i++) m[(size_t)i * 4096]++;
  return (now() - t0) / PAGES;
}

int main(int argc, char **argv) {
  int reps = argc > 1 ? atoi(argv[1]) : 7;
  size_t sz = (size_t)PAGES * 4096;
  char *m = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) { perror("mmap"); return 1; }
  memset(m, 1, sz);
  double copy = 1e9, reuse = 1e9, zero = 1e9;
  for (int r = 0; r < reps; r++) {
    int p[2];
    if (pipe(p) != 0) { perror("pipe"); return 1; }
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 1; }
    if (pid == 0) {                               /* maps every page until the parent is done */
      char c;
      while (read(p[0], &c, 1) < 0 && errno == EINTR) {}
      _exit(0);
    }
    double c = touch(m);
    while (write(p[1], "x", 1) < 0 && errno == EINTR) {}
    reap(pid);
    close(p[0]);
    close(p[1]);
    pid = fork();                                 /* write-protects every page again */
    if (pid < 0) { perror("fork"); return 1; }
    if (pid == 0) _exit(0);
    reap(pid);
    double u = touch(m);
    char *z = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (z == MAP_FAILED) { perror("mmap"); return 1; }
    double f = touch(z);
    munmap(z, sz);
    if (c < copy) copy = c;
    if (u < reuse) reuse = u;
    if (f < zero) zero = f;
  }
  printf("copy %.2f reuse %.2f zero %.2f\n", copy, reuse, zero);
  return 0;
}
