/* pidwait.c — a descriptor that becomes readable when a child exits: the pidfd, or where the
 * kernel (before 5.3) or valgrind (3.19) lacks pidfd_open, an eventfd a short-lived thread sets. */
#include "strand.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

typedef struct pidwait {
  pid_t pid;
  int efd;                /* the thread's own descriptor of the eventfd (a dup of the caller's) */
  struct pidwait *next, *prev;   /* the process's records whose thread runs (under mu) */
} pidwait;

/* A forked child has none of the threads: it frees their records and closes their descriptors
 * (else they stay there, owned by nobody, until it exits). */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pidwait *live;
static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;

static void fork_prepare(void) { pthread_mutex_lock(&mu); }
static void fork_parent(void) { pthread_mutex_unlock(&mu); }
static void fork_child(void) {
  while (live) {
    pidwait *w = live;
    live = w->next;
    close(w->efd);
    free(w);
  }
  pthread_mutex_init(&mu, NULL);
}
static void hooks_make(void) { pthread_atfork(fork_prepare, fork_parent, fork_child); }

static void unlink_live(pidwait *w) {
  if (w->prev) w->prev->next = w->next; else live = w->next;
  if (w->next) w->next->prev = w->prev;
}

/* Waits (without reaping: WNOWAIT) until the child has exited or is gone, then sets the eventfd. */
static void *pidwait_main(void *arg) {
  pidwait *w = (pidwait *)arg;
  siginfo_t si;
  while (waitid(P_PID, (id_t)w->pid, &si, WEXITED | WNOWAIT) != 0 && errno == EINTR) {}
  uint64_t one = 1;
  while (write(w->efd, &one, sizeof one) < 0 && errno == EINTR) {}
  pthread_mutex_lock(&mu);
  unlink_live(w);
  pthread_mutex_unlock(&mu);
  close(w->efd);
  free(w);
  return NULL;
}

/* A waiting thread may still run (its child ends late) when the Lua state closes and unloads
 * this module: keep the module mapped for the life of the process, as thread.c does. */
static void pin_module(void) {
  Dl_info info;
  if (dladdr((void *)&pidwait_main, &info) && info.dli_fname)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE | RTLD_NOLOAD);
}

/* The fallback: an eventfd (close-on-exec) set once pid has exited. -1 with errno on failure. */
static int pidwait_open(int pid) {
  static pthread_once_t pinned = PTHREAD_ONCE_INIT;
  pthread_once(&pinned, pin_module);
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return -1;
  pidwait *w = (pidwait *)malloc(sizeof *w);
  if (w == NULL) { close(fd); errno = ENOMEM; return -1; }
  w->pid = pid;
  w->efd = fcntl(fd, F_DUPFD_CLOEXEC, 0);     /* the caller may close fd before the child ends */
  if (w->efd < 0) { int e = errno; free(w); close(fd); errno = e; return -1; }
  pthread_once(&hooks_once, hooks_make);
  pthread_attr_t a;
  pthread_t th;
  sigset_t all, old;
  pthread_mutex_lock(&mu);                      /* linked before its thread may unlink it */
  w->prev = NULL;
  w->next = live;
  if (live) live->prev = w;
  live = w;
  int rc = pthread_attr_init(&a);
  if (rc == 0) {
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 64 * 1024);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);   /* signals stay with the program's threads */
    rc = pthread_create(&th, &a, pidwait_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&a);
    if (rc == 0) pthread_setname_np(th, "strand-pidwait");
  }
  if (rc != 0) unlink_live(w);
  pthread_mutex_unlock(&mu);
  if (rc != 0) {
    close(w->efd); free(w); close(fd);
    errno = rc;
    return -1;
  }
  return fd;
}

STRAND_API int strand_pidfd_open(int pid) {
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);     /* O_CLOEXEC by definition */
  if (fd >= 0 || errno != ENOSYS) return fd;
  return pidwait_open(pid);
}
