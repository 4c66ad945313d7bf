/* queue_c_baseline.c — the floor for bench/queue_bench.lua: a plain C bounded queue (one mutex,
 * two condition variables) moving heap copies of the same serialized payloads between threads.
 *
 *   queue_c_baseline queue PRODUCERS CONSUMERS ITEMS MAXSIZE HEXPAYLOAD  -> "items/s N"
 *   queue_c_baseline lock OPS                                           -> "ops/s N"
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct item { char *p; size_t len; } item;

static struct {
  pthread_mutex_t mu;
  pthread_cond_t not_empty, not_full;
  item *ring;
  size_t cap, first, n;
} q = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0 };

static const char *payload;
static size_t plen;
static long per_producer;
static volatile long sink;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void put(item it) {
  pthread_mutex_lock(&q.mu);
  while (q.n == q.cap) pthread_cond_wait(&q.not_full, &q.mu);
  q.ring[(q.first + q.n++) % q.cap] = it;
  pthread_cond_signal(&q.not_empty);
  pthread_mutex_unlock(&q.mu);
}

static item get(void) {
  pthread_mutex_lock(&q.mu);
  while (q.n == 0) pthread_cond_wait(&q.not_empty, &q.mu);
  item it = q.ring[q.first];
  q.first = (q.first + 1) % q.cap;
  q.n--;
  pthread_cond_signal(&q.not_full);
  pthread_mutex_unlock(&q.mu);
  return it;
}

static void *producer(void *arg) {
  (void)arg;
  for (long i = 0; i < per_producer; i++) {
    item it = { malloc(plen), plen };          /* the copy a put makes */
    if (it.p == NULL) abort();
    memcpy(it.p, payload, plen);
    put(it);
  }
  return NULL;
}

static void *consumer(void *arg) {
  (void)arg;
  char buf[4096];
  for (;;) {
    item it = get();
    if (it.p == NULL) return NULL;             /* end marker */
    memcpy(buf, it.p, it.len < sizeof buf ? it.len : sizeof buf);   /* the copy a get makes */
    sink += buf[0];
    free(it.p);
  }
}

static int hexval(int c) { return c <= '9' ? c - '0' : (c | 32) - 'a' + 10; }

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "lock") == 0) {
    long ops = atol(argv[2]);
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    double t0 = now();
    for (long i = 0; i < ops; i++) { pthread_mutex_lock(&mu); sink++; pthread_mutex_unlock(&mu); }
    printf("ops/s %.0f\n", ops / (now() - t0));
    return 0;
  }
  if (argc != 7 || strcmp(argv[1], "queue") != 0) {
    fprintf(stderr, "usage: %s queue P C ITEMS MAXSIZE HEX | lock OPS\n", argv[0]);
    return 2;
  }
  int np = atoi(argv[2]), nc = atoi(argv[3]);
  long items = atol(argv[4]);
  q.cap = (size_t)atol(argv[5]);
  if (q.cap == 0) q.cap = (size_t)(items > 0 ? items : 1);   /* 0: unbounded, as in Python */
  const char *hex = argv[6];
  plen = strlen(hex) / 2;
  char *p = malloc(plen + 1);
  q.ring = calloc(q.cap, sizeof(item));
  if (p == NULL || q.ring == NULL || np < 1 || nc < 1) return 2;
  for (size_t i = 0; i < plen; i++) p[i] = (char)(hexval(hex[2 * i]) * 16 + hexval(hex[2 * i + 1]));
  payload = p;
  per_producer = items / np;
  pthread_t th[64];
  double t0 = now();
  for (int i = 0; i < nc; i++) pthread_create(&th[i], NULL, consumer, NULL);
  for (int i = 0; i < np; i++) pthread_create(&th[nc + i], NULL, producer, NULL);
  for (int i = 0; i < np; i++) pthread_join(th[nc + i], NULL);
  for (int i = 0; i < nc; i++) put((item){ NULL, 0 });
  for (int i = 0; i < nc; i++) pthread_join(th[i], NULL);
  printf("items/s %.0f\n", (double)(per_producer * np) / (now() - t0));
  return 0;
}
