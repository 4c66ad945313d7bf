/* queue_faultcost.c — what a first write to a never-touched page of shared memory costs here
 * (an unbounded queue's overflow grows into such pages while its producer gets ahead): a memfd
 * of 64 MiB, fallocate'd as strand's arena is, mapped shared, then written one byte per page;
 * mode 1 first populates it with MADV_POPULATE_WRITE, 64 KiB at a time.
 * usage: cc -O2 -o queue_faultcost bench/queue_faultcost.c && ./queue_faultcost 0|1 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  size_t n = (size_t)64 << 20, step = (size_t)64 << 10;
  int mode = argc > 1 ? atoi(argv[1]) : 0;
  int fd = memfd_create("faultcost", 0);
  if (fd < 0 || fallocate(fd, 0, 0, (off_t)n) != 0) { perror("memfd/fallocate"); return 1; }
  char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) { perror("mmap"); return 1; }
  double t0 = now();
  if (mode == 1)
    for (size_t off = 0; off < n; off += step)
      if (madvise(p + off, step, MADV_POPULATE_WRITE) != 0) { perror("madvise"); return 1; }
  double t1 = now();
  for (size_t i = 0; i < n; i += 4096) p[i] = 1;
  double t2 = now();
  printf("mode %d: populate %.1f ms, writes %.1f ms, %.2f us per page\n", mode, (t1 - t0) * 1e3,
         (t2 - t1) * 1e3, (t2 - t0) * 1e6 / (double)(n / 4096));
  munmap(p, n);
  close(fd);
  return 0;
}
