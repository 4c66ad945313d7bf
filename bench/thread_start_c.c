/* thread_start_c.c — the floor for bench/threads_bench.lua: pthread_create + pthread_join of a
 * thread that does nothing, N times. usage: thread_start_c N  -> "us N" (per start+join) */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void *body(void *arg) { return arg; }

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000;
  if (n < 1) return 2;
  double t0 = 0;
  for (long i = 0; i < n + 10; i++) {         /* 10 warm-up starts first, then n timed */
    if (i == 10) t0 = now();
    pthread_t t;
    if (pthread_create(&t, NULL, body, NULL) != 0 || pthread_join(t, NULL) != 0) return 1;
  }
  printf("us %.2f\n", (now() - t0) / (double)n * 1e6);
  return 0;
}
