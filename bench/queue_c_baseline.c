/* queue_c_baseline.c — the floor for bench/queue_bench.lua: the strongest simple C queue, a ring
 * preallocated once (one mutex, two condition variables) whose slots hold the items inline
 * (the same serialized payloads strand.queue moves, up to SLOT bytes): a put copies the item into
 * its slot, a get copies it out; no malloc per item. A slot is two whole cache lines (64-aligned,
 * as strand's ring slots): with a 132-byte stride the getter reading one item shared a line with
 * the putter writing the next, which made the unbounded 100-byte case 3-10x slower. The mutex is
 * glibc's adaptive one (it spins a little before it sleeps): with a plain one, 1P/1C swung 3x
 * between runs (a lock word left "contended" makes every unlock a futex wake: 0.22 futex calls
 * per item in the slow runs, 0.003 in the fast ones); adaptive is faster and steadier, so it is
 * the floor. A condition variable is signalled only when someone waits on it.
 *
 * Timing as bench/queue_strand.lua's: the exchange runs twice, the first (a quarter of the
 * items) as a warm-up; the second is timed from the first producer's first put to the last
 * consumer's end (each side reads the clock itself: thread start is not in it).
 *
 *   queue_c_baseline queue PRODUCERS CONSUMERS ITEMS MAXSIZE HEXPAYLOAD  -> "items/s N"
 *   queue_c_baseline lock OPS                                           -> "ops/s N"
 * MAXSIZE 0 = unbounded, as in Python: the ring then holds every item (producers never wait),
 * preallocated and touched before the clock starts. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLOT 124                       /* inline bytes per item (100-byte strings + header fit) */
typedef struct item { unsigned len; char data[SLOT]; } __attribute__((aligned(64))) item;
_Static_assert(sizeof(item) == 128, "an item is two cache lines");

static struct {
  pthread_mutex_t mu;
  pthread_cond_t not_empty, not_full;
  item *ring;
  size_t cap, first, n;
  unsigned nput_waiting, nget_waiting;
} q = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
        NULL, 0, 0, 0, 0, 0 };

static const char *payload;
static unsigned plen;
static long per_producer;
static volatile long sink;
static pthread_mutex_t tmu = PTHREAD_MUTEX_INITIALIZER;
static double t_first, t_last;          /* the timed round: first put, last consumer's end */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* len == 0: the end marker. Signals only when someone waits (as a tuned queue would). */
static void put(const char *p, unsigned len) {
  pthread_mutex_lock(&q.mu);
  while (q.n == q.cap) {
    q.nput_waiting++;
    pthread_cond_wait(&q.not_full, &q.mu);
    q.nput_waiting--;
  }
  item *it = &q.ring[(q.first + q.n++) % q.cap];
  it->len = len;
  memcpy(it->data, p, len);
  if (q.nget_waiting) pthread_cond_signal(&q.not_empty);
  pthread_mutex_unlock(&q.mu);
}

static unsigned get(char *out) {
  pthread_mutex_lock(&q.mu);
  while (q.n == 0) {
    q.nget_waiting++;
    pthread_cond_wait(&q.not_empty, &q.mu);
    q.nget_waiting--;
  }
  item *it = &q.ring[q.first];
  unsigned len = it->len;
  memcpy(out, it->data, len);
  q.first = (q.first + 1) % q.cap;
  q.n--;
  if (q.nput_waiting) pthread_cond_signal(&q.not_full);
  pthread_mutex_unlock(&q.mu);
  return len;
}

static void *producer(void *arg) {
  (void)arg;
  double t = now();
  pthread_mutex_lock(&tmu);
  if (t_first == 0 || t < t_first) t_first = t;
  pthread_mutex_unlock(&tmu);
  for (long i = 0; i < per_producer; i++) put(payload, plen);
  return NULL;
}

static void *consumer(void *arg) {
  (void)arg;
  char buf[SLOT];
  for (;;) {
    unsigned len = get(buf);
    if (len == 0) break;                       /* end marker */
    sink += buf[0];
  }
  double t = now();
  pthread_mutex_lock(&tmu);
  if (t > t_last) t_last = t;
  pthread_mutex_unlock(&tmu);
  return NULL;
}

/* One exchange of `items` items: 0, or 1 if a thread could not start. */
static int round_of(int np, int nc, long items) {
  pthread_t th[64];
  per_producer = items / np;
  t_first = t_last = 0;
  for (int i = 0; i < nc; i++)
    if (pthread_create(&th[i], NULL, consumer, NULL) != 0) return 1;
  for (int i = 0; i < np; i++)
    if (pthread_create(&th[nc + i], NULL, producer, NULL) != 0) return 1;
  for (int i = 0; i < np; i++) pthread_join(th[nc + i], NULL);
  for (int i = 0; i < nc; i++) put("", 0);
  for (int i = 0; i < nc; i++) pthread_join(th[i], NULL);
  return 0;
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
  const char *hex = argv[6];
  size_t hl = strlen(hex) / 2;
  if (np < 1 || nc < 1 || np + nc > 64 || items < 1 || hl < 1 || hl > SLOT) return 2;
  plen = (unsigned)hl;
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
#ifdef PTHREAD_MUTEX_ADAPTIVE_NP
  pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
  if (pthread_mutex_init(&q.mu, &ma) != 0) return 2;
  q.cap = (size_t)atol(argv[5]);
  if (q.cap == 0) q.cap = (size_t)(items + nc);   /* unbounded: room for all */
  char *p = malloc(plen);
  q.ring = aligned_alloc(64, q.cap * sizeof(item));
  if (p == NULL || q.ring == NULL) return 2;
  for (unsigned i = 0; i < plen; i++) p[i] = (char)(hexval(hex[2 * i]) * 16 + hexval(hex[2 * i + 1]));
  payload = p;
  /* touch the ring once, so neither side pays its first page faults in the timed part */
  memset(q.ring, 0, q.cap * sizeof(item));
  long warm = items / 4 < np ? np : items / 4;
  if (round_of(np, nc, warm) != 0) return 1;  /* the warm-up */
  q.first = 0;                                  /* (drained: the timed round starts at slot 0) */
  if (round_of(np, nc, items) != 0) return 1;
  printf("items/s %.0f\n", (double)(per_producer * np) / (t_last - t_first));
  free(q.ring);
  free(p);
  return 0;
}
