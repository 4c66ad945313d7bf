/* resolve.c — name resolution off the loop: getaddrinfo on a small, lazily started pool of
 * pthreads shared by the whole process; each request signals its waiter through an eventfd. */
#include "sock.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define POOL_MAX 4          /* worker threads at most */
#define POOL_IDLE 10        /* seconds an idle worker lingers before it exits */

struct strand_resolve {
  strand_resolve *next;     /* in the queue */
  char *host, *serv;        /* owned copies, may be NULL */
  struct addrinfo hints;
  struct addrinfo *res;
  int gai, err;             /* getaddrinfo's result, errno for EAI_SYSTEM */
  int efd;                  /* eventfd: readable once done */
  int done, abandoned;
};

/* The pool: the only mutable state shared by threads in this area, under `lock`. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work = PTHREAD_COND_INITIALIZER;
static strand_resolve *qhead, *qtail;
static int nthreads, nidle;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void req_free(strand_resolve *r) {
  if (r->res) freeaddrinfo(r->res);
  if (r->efd >= 0) close(r->efd);
  free(r->host);
  free(r->serv);
  free(r);
}

/* A forked child has none of the parent's workers: start afresh (requests queued at fork time
 * are served once the child's next lookup starts a worker). */
static void after_fork_child(void) {
  pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t c = PTHREAD_COND_INITIALIZER;
  lock = m;
  work = c;
  nthreads = nidle = 0;
}

/* Workers run code of this shared object: keep it mapped even if Lua unloads the module
 * (lua_close dlcloses C libraries while an idle worker may still be waiting). */
static void pool_setup(void) {
  Dl_info info;
  if (dladdr((void *)&pool_setup, &info) && info.dli_fname)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
  pthread_atfork(NULL, NULL, after_fork_child);
}

static void *worker(void *arg) {
  (void)arg;
  pthread_setname_np(pthread_self(), "strand-resolv");   /* known to the specs' leak checks */
  pthread_mutex_lock(&lock);
  for (;;) {
    while (qhead == NULL) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_sec += POOL_IDLE;
      nidle++;
      int rc = pthread_cond_timedwait(&work, &lock, &ts);
      nidle--;
      if (rc == ETIMEDOUT && qhead == NULL) {
        nthreads--;
        pthread_mutex_unlock(&lock);
        return NULL;
      }
    }
    strand_resolve *r = qhead;
    qhead = r->next;
    if (qhead == NULL) qtail = NULL;
    r->next = NULL;
    pthread_mutex_unlock(&lock);

    struct addrinfo *res = NULL;
    int gai = getaddrinfo(r->host, r->serv, &r->hints, &res);
    int err = errno;

    pthread_mutex_lock(&lock);
    r->res = res;
    r->gai = gai;
    r->err = err;
    r->done = 1;
    if (r->abandoned) {
      req_free(r);
    } else {
      uint64_t one = 1;
      ssize_t n;
      do n = write(r->efd, &one, sizeof one); while (n < 0 && errno == EINTR);
      /* n < 0 only if the counter would overflow: it is read never, written once. */
    }
  }
}

static char *dup_or_null(const char *s, int *fail) {
  if (s == NULL) return NULL;
  char *d = strdup(s);
  if (d == NULL) *fail = 1;
  return d;
}

strand_resolve *strand_resolve_start(const char *host, const char *serv,
                                     const struct addrinfo *hints) {
  pthread_once(&once, pool_setup);
  strand_resolve *r = (strand_resolve *)calloc(1, sizeof *r);
  if (r == NULL) { errno = ENOMEM; return NULL; }
  int fail = 0;
  r->efd = -1;
  r->host = dup_or_null(host, &fail);
  r->serv = dup_or_null(serv, &fail);
  r->hints = *hints;
  r->hints.ai_addr = NULL;
  r->hints.ai_canonname = NULL;
  r->hints.ai_next = NULL;
  if (fail) { req_free(r); errno = ENOMEM; return NULL; }
  r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (r->efd < 0) { int e = errno; req_free(r); errno = e; return NULL; }

  pthread_mutex_lock(&lock);
  if (qtail) qtail->next = r; else qhead = r;
  qtail = r;
  int err = 0;
  if (nidle == 0 && nthreads < POOL_MAX) {
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    err = pthread_create(&th, &attr, worker, NULL);
    pthread_attr_destroy(&attr);
    if (err == 0) nthreads++;
  } else {
    pthread_cond_signal(&work);
  }
  if (err && nthreads == 0) {             /* nobody would ever serve it: take it back */
    strand_resolve *p = NULL, *q = qhead;
    while (q != r) { p = q; q = q->next; }
    if (p) p->next = NULL; else qhead = NULL;
    qtail = p;
    pthread_mutex_unlock(&lock);
    req_free(r);
    errno = err;
    return NULL;
  }
  pthread_mutex_unlock(&lock);
  return r;
}

int strand_resolve_fd(const strand_resolve *r) {
  return r->efd;
}

int strand_resolve_take(strand_resolve *r, int *gai, struct addrinfo **res, int *err) {
  pthread_mutex_lock(&lock);
  int done = r->done;
  if (done) {
    *gai = r->gai;
    *res = r->res;
    r->res = NULL;
    *err = r->err;
  }
  pthread_mutex_unlock(&lock);
  return done;
}

void strand_resolve_release(strand_resolve *r) {
  pthread_mutex_lock(&lock);
  int unlink_it = 0;
  if (!r->done) {
    strand_resolve *p = NULL, *q = qhead;      /* still queued: nobody will run it */
    while (q && q != r) { p = q; q = q->next; }
    if (q) {
      if (p) p->next = r->next; else qhead = r->next;
      if (qtail == r) qtail = p;
      unlink_it = 1;
    } else {
      r->abandoned = 1;                        /* a worker has it: the worker frees it */
    }
  }
  int free_now = r->done || unlink_it;
  pthread_mutex_unlock(&lock);
  if (free_now) req_free(r);
}
