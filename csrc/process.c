/* process.c — forking strand processes (the child runs a Lua function on a fresh loop and
 * _exits), process handles (pidfd waited on through the loop, signals, reaping), pid/ppid/cpu. */
#include "strand.h"

#include <errno.h>
#include <fcntl.h>
#include <dlfcn.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/single_threaded.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

/* {==== process handles: a child's pid and its pidfd (readable once the child has exited) */

#define PHANDLE_META "strand.process.handle"

typedef struct phandle {
  strand_io io;           /* io.fd is the pidfd, opened at the first wait that finds the child
                             running (most joins find it gone: no pidfd_open, no close); -1
                             before that and once reaped and closed */
  pid_t pid;
  int rfd;                /* the child's results (a memfd), -1 when none or taken */
  int status;             /* raw wait status, valid once reaped */
  unsigned char reaped;
  unsigned char daemon;   /* when collected unreaped: 0 wait for it, 1 kill it, 2 leave it */
  unsigned char foreign;  /* a forked child's copy of a handle whose process ran on unreaped:
                             not this process's child (its exit status is the parent's) */
  unsigned gen;           /* forked.gen when made: another value means a forked child's copy of
                             its parent's handle (the result file is the parent's) */
} phandle;

/* A forked child's state: its carved blocks (carve_alloc) and which process it is, in one
 * page-aligned block: what a child writes first (gen, carve_next, the carve counters) and its
 * first carved blocks (its coroutine, loop, task: ~3 KiB for a start) share one page.
 * gen: how many strand forks made this process (0 in the first one; a child counts one more
 * than its parent): a handle made in another process is not ours, nor the result file it holds.
 * next, next_ud: the state's own allocator and its ud. used, high: see carve_alloc. */
#define CHILD_CARVE (64 * 1024)
#define CHILD_CARVE_MAX 1024                      /* larger blocks go to the state's allocator */
static struct {
  _Alignas(4096) lua_Alloc next;
  void *next_ud;
  size_t used, high;
  unsigned gen;
  _Alignas(16) char area[CHILD_CARVE];
} forked;
#define carve_area (forked.area)
#define carve_next (forked.next)
#define carve_next_ud (forked.next_ud)

static phandle *ph_check(lua_State *L) {
  return (phandle *)luaL_checkudata(L, 1, PHANDLE_META);
}

/* Python's exitcode: the exit status, or -N for a death by signal N. */
static int exitcode_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return 1;
}

static void ph_closefd(phandle *h) {
  if (h->io.fd < 0) return;
  int fd = h->io.fd;
  strand_io_close(&h->io);
  h->io.fd = -1;
  close(fd);
}

/* Reap without blocking (block = 0) or blocking: 1 if reaped (now or before), 0 if running,
 * -1 with errno on failure. */
static int ph_reap(phandle *h, int block) {
  if (h->reaped) return 1;
  for (;;) {
    int st = 0;
    pid_t r = waitpid(h->pid, &st, block ? 0 : WNOHANG);
    if (r == h->pid) {
      h->status = st;
      h->reaped = 1;
      ph_closefd(h);
      return 1;
    }
    if (r == 0) return 0;
    if (errno == EINTR) continue;
    if (errno == ECHILD) {             /* reaped by someone else (a SIGCHLD handler): unknown */
      h->status = 255 << 8;
      h->foreign = h->gen != forked.gen;
      h->reaped = 1;
      ph_closefd(h);
      return 1;
    }
    return -1;
  }
}

/* h:wait([timeout [, running]]) -> exitcode | nil, "timeout". Looks (waitpid, WNOHANG) before
 * each wait and after it (running: the caller just looked, the first look is skipped): a start
 * lets the child run first when both are on one CPU (l_fork), so a join right after a start
 * mostly finds it gone, and one waitpid then saves the wait's whole round through the loop
 * (the poll armed, the task parked and resumed, the wait's slot written: two heap pages, each a
 * fault after a fork). A child found running is waited for through its pidfd, opened then:
 * right after a look that found it unreaped, so the pid is still this child's (a zombie keeps
 * it). */
static int ph_wait_k(lua_State *L, int status, lua_KContext ctx) {
  int outcome = strand_resumed(L, status);
  phandle *h = ph_check(L);
  double deadline = lua_tonumber(L, 2);
  int look = ctx != 2;
  for (;;) {
    int r = look ? ph_reap(h, 0) : 0;
    look = 1;
    if (r < 0) return strand_fail(L, errno);
    if (r == 1) {
      lua_pushinteger(L, exitcode_of(h->status));
      return 1;
    }
    if (outcome == STRAND_TIMEOUT) return strand_fail_msg(L, "timeout", "ETIMEDOUT");
    if (h->io.fd < 0) {
      int fd = strand_pidfd_open(h->pid);         /* close-on-exec */
      if (fd < 0) return strand_fail(L, errno);
      strand_io_init(&h->io, fd);
    }
    outcome = strand_wait_io(L, &h->io, STRAND_READ, deadline, 1, ph_wait_k);
  }
}

static int ph_wait(lua_State *L) {
  ph_check(L);
  double deadline = strand_opt_deadline(L, 2);
  int running = lua_toboolean(L, 3);
  lua_settop(L, 1);
  lua_pushnumber(L, deadline);
  return ph_wait_k(L, LUA_OK, running ? 2 : 1);
}

/* h:poll() -> exitcode | nil (still running) */
static int ph_poll(lua_State *L) {
  phandle *h = ph_check(L);
  int r = ph_reap(h, 0);
  if (r < 0) return strand_fail(L, errno);
  if (r == 0) return 0;
  lua_pushinteger(L, exitcode_of(h->status));
  return 1;
}

/* h:signal(n) -> true | nil, msg, code. After the child was reaped: nil, "process has exited".
 * Through the pidfd, so a recycled pid is never hit. */
static int ph_signal(lua_State *L) {
  phandle *h = ph_check(L);
  lua_Integer sig = luaL_checkinteger(L, 2);
  luaL_argcheck(L, sig >= 0 && sig < 65, 2, "not a signal number");
  if (h->reaped) return strand_fail_msg(L, "process has exited", "ESRCH");
  /* (no pidfd yet: the pid is still this child's while it is not reaped, a zombie keeps it) */
  if (h->io.fd < 0 || syscall(SYS_pidfd_send_signal, h->io.fd, (int)sig, NULL, 0) != 0) {
    if (h->io.fd >= 0 && errno != ENOSYS) return strand_fail(L, errno);
    if (kill(h->pid, (int)sig) != 0) return strand_fail(L, errno);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int ph_pid(lua_State *L) {
  lua_pushinteger(L, ph_check(L)->pid);
  return 1;
}

/* h:status() -> exitcode, exited normally (bool), code or signal — once reaped; else nil */
static int ph_status(lua_State *L) {
  phandle *h = ph_check(L);
  if (!h->reaped) return 0;
  lua_pushinteger(L, exitcode_of(h->status));
  if (WIFSIGNALED(h->status)) {
    lua_pushboolean(L, 0);
    lua_pushinteger(L, WTERMSIG(h->status));
  } else {
    lua_pushboolean(L, 1);
    lua_pushinteger(L, WIFEXITED(h->status) ? WEXITSTATUS(h->status) : 1);
  }
  return 3;
}

/* A result file nobody took (the process was never joined): the references its data holds to
 * shared objects are dropped (a child killed while writing left it malformed: nothing to drop,
 * serial checks the whole string first). */
static void ph_drop_result(phandle *h) {
  struct stat st;
  if (h->rfd < 0 || !h->reaped || h->gen != forked.gen || fstat(h->rfd, &st) != 0 || st.st_size < 2
      || st.st_size > ((off_t)1 << 30))
    return;
  size_t len = (size_t)st.st_size, got = 0;
  char *p = (char *)malloc(len);
  if (p == NULL) return;
  while (got < len) {
    ssize_t r = pread(h->rfd, p + got, len - got, (off_t)got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  if (got == len) strand_serial_release_shared(p, len);
  free(p);
}

/* Collected (at the latest when the Lua state closes): never leave a zombie. A daemon child is
 * killed first; any other child is waited for (Python joins non-daemon children at exit). */
static int ph_gc(lua_State *L) {
  phandle *h = (phandle *)luaL_checkudata(L, 1, PHANDLE_META);
  if (!h->reaped && h->pid > 0 && h->daemon == 2) {
    (void)ph_reap(h, 0);               /* an external program: left running, as subprocess does */
  } else if (!h->reaped && h->pid > 0) {
    if (h->daemon) {
      if (h->io.fd < 0 || syscall(SYS_pidfd_send_signal, h->io.fd, SIGKILL, NULL, 0) != 0)
        kill(h->pid, SIGKILL);
    }
    if (ph_reap(h, 1) < 0) h->reaped = 1;
  }
  ph_closefd(h);
  ph_drop_result(h);
  if (h->rfd >= 0) { close(h->rfd); h->rfd = -1; }
  return 0;
}

/* {==== result files: one memfd per running child. A file read and emptied is kept as the spare
 * for the next start (at most one per process, process-wide: any thread may start processes),
 * so a start costs no memfd_create and no file teardown. A child drops the spare it inherited
 * (the parent's, which the parent will hand to another child) without using it. */

static atomic_int spare_rfd = -1;
/* process._next_num(): the N of "Process-N", in .data beside spare_rfd (a start writes that
 * page anyway; a counter in a Lua upvalue was one more heap page written: a fault a fork) */
static lua_Integer process_num __attribute__((section(".data")));

static int rfd_take(void) {
  int fd = atomic_exchange(&spare_rfd, -1);
  if (fd >= 0) return fd;
  return memfd_create("strand-result", MFD_CLOEXEC);
}

/* fd read (used bytes in it): emptied and kept as the spare, or closed */
static void rfd_give(int fd, size_t used) {
  if (used > 0) {
    int r;
    while ((r = ftruncate(fd, 0)) != 0 && errno == EINTR) {}
    if (r != 0) { close(fd); return; }
  }
  int none = -1;
  if (!atomic_compare_exchange_strong(&spare_rfd, &none, fd)) close(fd);
}

/* In a child just forked: the spare is the parent's (the same open file), never ours. */
static void rfd_forked(void) {
  if (atomic_load_explicit(&spare_rfd, memory_order_relaxed) < 0) return;   /* (no page write) */
  int fd = atomic_exchange(&spare_rfd, -1);
  if (fd >= 0) close(fd);
}

/* }==== */

/* h:take_result() -> the bytes the child wrote to its result file (maybe ""), once; nil before
 * the child was reaped or when it had none. Read after the exit, so the child never waited. */
static int ph_take_result(lua_State *L) {
  phandle *h = ph_check(L);
  if (!h->reaped || h->rfd < 0) return 0;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  off_t off = 0;
  for (;;) {
    char *p = luaL_prepbuffer(&b);
    ssize_t r = pread(h->rfd, p, LUAL_BUFFERSIZE, off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int e = errno;
      close(h->rfd);
      h->rfd = -1;
      return strand_fail(L, e);
    }
    luaL_addsize(&b, (size_t)r);
    off += r;
    if (r < LUAL_BUFFERSIZE) break;               /* a regular file: a short read is its end */
  }
  if (h->gen == forked.gen) rfd_give(h->rfd, (size_t)off);  /* the child is gone: nobody writes it */
  else close(h->rfd);         /* a forked child's copy of its parent's handle: the parent's file */
  h->rfd = -1;
  luaL_pushresult(&b);
  return 1;
}

/* h:foreign() -> true when the handle was inherited from the parent and its process is not
 * this one's child (ph_reap found none): its status and results belong to the parent. */
static int ph_foreign(lua_State *L) {
  lua_pushboolean(L, ph_check(L)->foreign);
  return 1;
}

static int ph_setdaemon(lua_State *L) {
  ph_check(L)->daemon = (unsigned char)luaL_checkinteger(L, 2);
  return 0;
}

static const luaL_Reg ph_methods[] = {
  {"wait", ph_wait}, {"poll", ph_poll}, {"signal", ph_signal}, {"pid", ph_pid},
  {"status", ph_status}, {"set_daemon", ph_setdaemon}, {"take_result", ph_take_result},
  {"foreign", ph_foreign}, {NULL, NULL}
};

/* A handle for pid pushed (its pidfd is opened by the first wait that needs it). Returns 1. */
static int push_handle_rfd(lua_State *L, pid_t pid, int daemon, int rfd) {
  phandle *h = (phandle *)lua_newuserdatauv(L, sizeof *h, 0);
  memset(h, 0, sizeof *h);
  strand_io_init(&h->io, -1);
  h->pid = pid;
  h->rfd = rfd;
  h->daemon = (unsigned char)daemon;
  h->gen = forked.gen;
  luaL_setmetatable(L, PHANDLE_META);
  return 1;
}

static int push_handle(lua_State *L, pid_t pid, int daemon) {
  return push_handle_rfd(L, pid, daemon, -1);
}

/* }==== */

/* {==== fork */

/* fflush(NULL) when a stream has output waiting. Around every fork (before it in the parent, so
 * nothing is written twice; before _exit in the child, for what fn printed) but most starts
 * print nothing, and fflush(NULL) always takes stdio's list lock: a write to a page of libc's
 * that is a copy-on-write fault in the child each time, and two code pages of libc the child
 * would not run otherwise (~10 us a start with the exit's share, docs/internals.md "A start's
 * wall time"). glibc's list of open streams (_IO_list_all, exported) and the write pointers of
 * struct FILE (public fields) tell whether any output waits; read without the lock only while
 * no other thread exists, and a wide-oriented stream is always flushed the ordinary way. */
static void flush_stdio(void) {
#if defined(__GLIBC__)
  extern FILE *_IO_list_all;
  if (__libc_single_threaded) {
    for (FILE *f = _IO_list_all; f != NULL; f = f->_chain)
      if (f->_mode > 0 || f->_IO_write_ptr > f->_IO_write_base) {
        fflush(NULL);
        return;
      }
    return;
  }
#endif
  fflush(NULL);
}

/* glibc's malloc consolidates its fastbins (small freed chunks, spread over the whole heap)
 * before serving a large request. A child doing that right after the fork writes to tens of
 * heap pages it shares with the parent, each a copy-on-write fault (half of a no-op child's
 * faults, measured). A large block taken and freed here drains the fastbins in the parent
 * first (it touched those pages anyway); the child's fresh loop then finds none. Elsewhere a
 * harmless malloc/free pair. */
static void drain_fastbins(void) {
  void *volatile p = malloc(4096);
  free(p);
}

/* A forked child's new Lua blocks: the first CHILD_CARVE bytes of small blocks it allocates are
 * carved one after the other from a static area the parent never touches (so not mapped in it,
 * nor copied by the fork): the child's first pages are fresh ones, each written whole, instead
 * of tens of heap pages malloc's free lists point into (each a copy-on-write fault, measured:
 * bench/process_counts.sh). A carved block freed is lost (the last one carved is taken back),
 * so a long-lived child wastes at most CHILD_CARVE; the parent's blocks and any block past the
 * area go to the state's own allocator. A grandchild goes on carving where its parent stopped.
 * (carve_area, carve_next, forked.used: at the top of this file, with forked.gen.) */
static void *carve_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  char *p = (char *)ptr;
  int mine = p != NULL && p >= carve_area && p < carve_area + CHILD_CARVE;
  if (p != NULL && !mine) return carve_next(carve_next_ud, ptr, osize, nsize);
  size_t on = mine ? (osize + 15) & ~(size_t)15 : 0;
  int last = mine && p + on == carve_area + forked.used;
  if (nsize == 0) {                               /* only ours come here */
    if (last) forked.used -= on;
    return NULL;
  }
  size_t n = (nsize + 15) & ~(size_t)15;
  if (last && (size_t)(p - carve_area) + n <= CHILD_CARVE) {     /* the last block: in place */
    forked.used = (size_t)(p - carve_area) + n;
    if (forked.used > forked.high) forked.high = forked.used;
    return p;
  }
  if (mine && nsize <= osize) return p;           /* shrinking in place never fails */
  void *q;
  if (n <= CHILD_CARVE_MAX && n <= CHILD_CARVE - forked.used) {
    q = carve_area + forked.used;
    forked.used += n;
    if (forked.used > forked.high) forked.high = forked.used;
  } else {
    q = carve_next(carve_next_ud, NULL, mine ? 0 : osize, nsize);  /* (osize: the type tag) */
    if (q == NULL) return NULL;                   /* the block stays as it was */
  }
  if (mine) memcpy(q, p, osize < nsize ? osize : nsize);
  return q;
}

/* A forked child's n zeroed bytes from the carved area, never freed (loop.c: the child's loop),
 * or NULL (not a forked child, or no room): past forked.high the area was never written in this
 * process nor in those it was forked from (the Lua blocks carved and freed lie below it). */
void *strand_forked_block(size_t n) {
  if (forked.gen == 0) return NULL;
  n = (n + 15) & ~(size_t)15;
  size_t at = forked.used > forked.high ? forked.used : forked.high;
  if (n > CHILD_CARVE - at) return NULL;
  forked.used = forked.high = at + n;
  return carve_area + at;
}

int strand_forked_block_of(const void *p) {
  return (const char *)p >= carve_area && (const char *)p < carve_area + CHILD_CARVE;
}

/* carve_alloc is this module's code: a child that closes its state (os.exit(n, true)) unloads
 * the C libraries (package's __gc) before the state's last blocks are freed through it. The
 * module stays mapped for the life of the process (pinned in the parent, before the first fork,
 * as thread.c and pidwait.c do: a child inherits it and does nothing more). */
static void carve_pin(void) {
  Dl_info info;
  if (dladdr((void *)&carve_alloc, &info) && info.dli_fname)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}
static pthread_once_t carve_pinned = PTHREAD_ONCE_INIT;

static void carve_start(lua_State *L) {
  void *ud;
  lua_Alloc f = lua_getallocf(L, &ud);
  if (f == carve_alloc) return;                   /* a grandchild: carving already */
  carve_next = f;
  carve_next_ud = ud;
  lua_setallocf(L, carve_alloc, NULL);
}

/* process._fork(child_main, daemon, with_result [, current [, ...]]) -> handle, pid | nil, msg,
 * code (process.lua checks threads first). with_result: the child gets a result file (a memfd,
 * shared with the handle) as child_main's first argument, to write with process._put_result;
 * the parent reads it after the child exits (h:take_result). It never fills up, so the child
 * never waits for the parent, and the parent waits for one event only: the exit. current: what
 * process._current() gives in the child; the values after it are child_main's arguments after
 * rfd (none stored for the child to find: a write to a Lua variable is a heap page written, a
 * fault after each fork).
 * In the child: the parent's loop is abandoned for a fresh one, child_main(rfd, ...) runs
 * (protected) and its integer result is the exit status (1 if it raised); the child never
 * returns here. */
void strand_thread_os_spent(void);      /* thread.c: this OS thread ends with its state */

/* registry[&CURRENT_KEY]: the process object of this forked child (process.name), made false
 * when the module opens, so that a child only overwrites an existing entry (no rehash) */
static const char CURRENT_KEY = 'c';

static int l_fork(lua_State *L) {
  int nargs = lua_gettop(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  int daemon = lua_toboolean(L, 2);
  int rfd = -1;
  luaL_checkstack(L, 8, NULL);
  if (lua_toboolean(L, 3)) {
    rfd = rfd_take();
    if (rfd < 0) return strand_fail(L, errno);
  }
  flush_stdio();                               /* unwritten stdio output is not written twice */
  strand_arena_init();     /* before the first fork, so the family shares one arena (and objects
                              made after this fork by either side cross between them) */
  pid_t parent = daemon ? getpid() : 0;
  drain_fastbins();
  pthread_once(&carve_pinned, carve_pin);
  strand_serial_key();                 /* the family's reference key, drawn before the fork */
  strand_sock_prefork(L);              /* io_uring: sockets read as two processes' from now on */
  pid_t pid = fork();
  int e = pid < 0 ? errno : 0;        /* (read on failure only: in a child, one code page less) */
  /* The child first, when it was queued on this CPU: every page the parent writes while the
   * child still maps it is a copy (~3.5 µs here), one it writes after the child has exited is
   * only made writable again (~1.2 µs), and a short child is then gone before the parent gets
   * back (its join finds the pidfd readable: no sleep, no wake-up). Each page the parent writes
   * before its join waits (the handle, the Process table, `live`, the wait's slot, the Lua and C
   * stacks, malloc's arena: ~16) cost a copy, and the child's exit freed the original (docs/
   * internals.md "A start's wall time"). A child queued on another CPU runs there meanwhile and
   * the yield returns at once. Nothing the parent does depends on it: a scheduling hint only. */
  if (pid > 0) sched_yield();
  if (pid != 0) strand_shm_forked(pid < 0);   /* the child's object references: counted or not */
  if (pid < 0) {
    if (rfd >= 0) close(rfd);
    return strand_fail(L, e);
  }
  if (pid == 0) {
    forked.gen++;
    rfd_forked();
    if (daemon) {
      /* ends with the parent, also when the parent is SIGKILLed; the parent may already be gone */
      if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) {
        strand_shm_exiting();
        _exit(1);
      }
    }
    carve_start(L);
    /* The child runs on a coroutine of its own, made here (carved: fresh pages): its stack and
     * call frames are not L's, whose slots above the fork's frame and CallInfo nodes, allocated
     * long ago all over the heap, would each be a copied page (docs/internals.md "A start's
     * wall time"). It is not a task: it drives the fresh loop as the main thread would. */
    lua_State *co = lua_newthread(L);
    if (!lua_isnoneornil(L, 4)) {                 /* process.name()'s object */
      lua_pushvalue(L, 4);
      lua_rawsetp(L, LUA_REGISTRYINDEX, &CURRENT_KEY);
    }
    strand_loop_forked(co);
    int nextra = nargs > 4 ? nargs - 4 : 0;
    lua_pushvalue(L, 1);
    lua_xmove(L, co, 1);
    if (rfd >= 0) lua_pushinteger(co, rfd); else lua_pushnil(co);
    luaL_checkstack(co, nextra, NULL);
    for (int i = 0; i < nextra; i++) {
      lua_pushvalue(L, 5 + i);
      lua_xmove(L, co, 1);
    }
    int code = 1, nres = 0;
    int st = lua_resume(co, L, 1 + nextra, &nres);
    if (st == LUA_OK) {
      if (nres > 0 && lua_isinteger(co, -nres)) code = (int)lua_tointeger(co, -nres);
      else code = nres == 0 || lua_toboolean(co, -nres) || lua_isnil(co, -nres) ? 0 : 1;
    } else {
      const char *msg = st == LUA_YIELD ? "attempt to yield from the process's main function"
                                        : lua_tostring(co, -1);
      fprintf(stderr, "strand: process %d: %s\n", (int)getpid(), msg ? msg : "(error object)");
    }
    flush_stdio();
    strand_shm_exiting();              /* its views' family references (objects it saw) */
    _exit(code & 0xff);
  }
  if (daemon) strand_thread_os_spent();   /* its PDEATHSIG is tied to this OS thread */
  push_handle_rfd(L, pid, daemon, rfd);
  lua_pushinteger(L, pid);                     /* (h:pid(), without the call) */
  return 2;
}

static int l_next_num(lua_State *L) {
  lua_pushinteger(L, ++process_num);
  return 1;
}

/* process._current() -> the current argument of the _fork that made this process | false */
static int l_current(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CURRENT_KEY);
  return 1;
}

/* process._forkgen() -> how many strand forks made this process (forked.gen): an object made in
 * another process of the family (a pool) tells its copies by it, with no write in the child. */
static int l_forkgen(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)forked.gen);
  return 1;
}

/* process._put_result(rfd, data) -> true | nil, msg, code: the child's results, all of them */
static int l_put_result(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  size_t len;
  const char *p = luaL_checklstring(L, 2, &len);
  off_t off = 0;              /* from the start, whatever the (shared) file offset: files are reused */
  while (len > 0) {
    ssize_t w = pwrite(fd, p, len, off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return strand_fail(L, errno);
    p += w;
    off += w;
    len -= (size_t)w;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* process._exit(code): end this process now (no atexit handlers, no Lua state close) */
static int l_exit(lua_State *L) {
  int code = (int)luaL_optinteger(L, 1, 0);
  flush_stdio();
  strand_shm_exiting();
  _exit(code & 0xff);
  return 0;
}

/* process._encode(v) -> string | nil when v holds a strand object that is not in the family's
 * arena (its references are dropped): values for another process of ours, functions included
 * (the channel is strand's own); locks, queues, dicts... cross by arena offset. */
static int encode_values(lua_State *L, int first, int n) {
  strand_serial_encode(L, first, n, STRAND_SERIAL_FUNCTIONS);
  return strand_serial_family_or_nil(L);
}

static int l_encode(lua_State *L) {
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  return encode_values(L, 1, 1);
}

/* process._encodev(...) -> string | nil: the values themselves, as _encode does one value
 * (serial.decode gives them all back). No table around them: a job's arguments and results
 * cross without one more table to build, walk and look up among the loaded modules. */
static int l_encodev(lua_State *L) { return encode_values(L, 1, lua_gettop(L)); }

/* process._encodeargs(fname, argno, ...) -> as _encodev, but a value that cannot be copied raises
 * "bad argument #N to 'fname' (value...: cannot copy ...)", N = argno for the first value. */
static int l_encodeargs(lua_State *L) {
  const char *fname = luaL_checkstring(L, 1);
  int argno = (int)luaL_checkinteger(L, 2);
  strand_serial_encode_arg(L, 3, lua_gettop(L) - 2, STRAND_SERIAL_FUNCTIONS, fname, argno);
  return strand_serial_family_or_nil(L);
}

/* process._encode_list(t, i, j [, lead [, fname, argno]]) -> string | nil (as _encode): the list
 * {t[i..j], n = j-i+1}, after a leading true when lead, without making that table (map chunks
 * and their results: serial.c's strand_serial_encode_list); with fname (no lead), an item that
 * cannot be copied raises "bad argument #argno to 'fname' (value[k]: ...)", k its key in t. */
static int l_encode_list(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer i = luaL_checkinteger(L, 2), j = luaL_checkinteger(L, 3);
  int lead = lua_toboolean(L, 4);
  const char *fname = lua_tostring(L, 5);
  int argno = (int)luaL_optinteger(L, 6, 1);
  lua_settop(L, 5);
  if (fname != NULL && !lead)
    strand_serial_encode_list_arg(L, 1, i, j, STRAND_SERIAL_FUNCTIONS, fname, argno);
  else
    strand_serial_encode_list(L, 1, i, j, lead, STRAND_SERIAL_FUNCTIONS);
  return strand_serial_family_or_nil(L);
}

/* Decoding the data of strand's process channels (a pool job's result, a process's outcome, a
 * pipe message): each string is decoded once, so the values adopt its object references (no
 * NOADOPT); a decode that fails drops them (_decode_at), as nothing will decode it again. Only
 * family references (by arena offset) are in such strings: _encode refuses any other.
 * process._decode_into(data, offset, dest, first) -> count | nil | false, msg: data from byte
 * offset on (a result after its id) holding "true, list" goes straight into dest[first...];
 * nil: other data (decode it as usual); false, msg: malformed (the references stay with the
 * string: the caller decodes it with _decode_at, which settles them) */
static int l_decode_into(lua_State *L) {
  size_t len;
  const char *p = luaL_checklstring(L, 1, &len);
  lua_Integer off = luaL_checkinteger(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_Integer first = luaL_checkinteger(L, 4);
  luaL_argcheck(L, off >= 1 && (size_t)off <= len + 1, 2, "out of range");
  int n = strand_serial_decode_into(L, p + off - 1, len - (size_t)(off - 1),
                                    STRAND_SERIAL_FUNCTIONS, 3, first);
  if (n == -1) { lua_pushnil(L); return 1; }
  if (n == -2) { lua_pushboolean(L, 0); lua_insert(L, -2); return 2; }
  lua_pushinteger(L, n);
  return 1;
}

/* process._decode_at(data, offset) -> the values in data from byte offset on (functions
 * allowed: strand's own channel) | nil, msg when malformed: serial.decode without the copy
 * data:sub(offset) makes (a pool result after its id), adopting the references (above) */
static int l_decode_at(lua_State *L) {
  size_t len;
  const char *p = luaL_checklstring(L, 1, &len);
  lua_Integer off = luaL_checkinteger(L, 2);
  luaL_argcheck(L, off >= 1 && (size_t)off <= len + 1, 2, "out of range");
  lua_settop(L, 1);
  int n = strand_serial_decode(L, p + off - 1, len - (size_t)(off - 1), STRAND_SERIAL_FUNCTIONS);
  if (n >= 0) return n;
  /* values made before the failure hold their own references: the string's go now */
  strand_serial_release_shared(p + off - 1, len - (size_t)(off - 1));
  lua_pushnil(L);
  lua_insert(L, -2);
  return 2;
}

/* process._release(data) -> nothing: drop the references of an encoded string of ours (a pool
 * job's arguments) that will not be decoded, or that was decoded without adopting (NOADOPT) */
static int l_release(lua_State *L) {
  size_t len;
  const char *p = luaL_checklstring(L, 1, &len);
  strand_serial_release(p, len);
  return 0;
}

/* process._table(narr) -> a table with room for narr items (map's results, a chunk's): filled
 * in any order without a rehash */
static int l_table(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  lua_createtable(L, n > 0 && n < (1 << 26) ? (int)n : 0, 0);
  return 1;
}

/* process._background(task): the task (a pool's reader) does not keep strand.run going */
static int l_background(lua_State *L) {
  strand_task *t = (strand_task *)luaL_checkudata(L, 1, STRAND_TASK_META);
  strand_task_background(t);
  return 0;
}

/* process._spare_fd() -> the spare result file's descriptor | nil (spec/support/helper.lua: an
 * fd that stays open between starts is not a leak) */
static int l_spare_fd(lua_State *L) {
  int fd = atomic_load(&spare_rfd);
  if (fd < 0) return 0;
  lua_pushinteger(L, fd);
  return 1;
}

static int l_pid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

static int l_ppid(lua_State *L) {
  lua_pushinteger(L, getppid());
  return 1;
}

static int l_cpu_count(lua_State *L) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  lua_pushinteger(L, n > 0 ? n : 1);
  return 1;
}

/* }==== */

STRAND_API int strand_spawn_exec(lua_State *L);    /* spawn.c */
STRAND_API int strand_pool_link(lua_State *L);     /* poollink.c */
STRAND_API int strand_pool_run_job(lua_State *L);
STRAND_API int strand_pool_result(lua_State *L);
STRAND_API int strand_pool_result_max(lua_State *L);

static const luaL_Reg funcs[] = {
  {"_fork", l_fork}, {"_exit", l_exit}, {"_put_result", l_put_result}, {"_spawn", strand_spawn_exec},
  {"_current", l_current}, {"_next_num", l_next_num},
  {"_encode", l_encode}, {"_encodev", l_encodev}, {"_encodeargs", l_encodeargs}, {"_forkgen", l_forkgen},
  {"_background", l_background},
  {"_encode_list", l_encode_list}, {"_decode_into", l_decode_into}, {"_table", l_table},
  {"_decode_at", l_decode_at}, {"_release", l_release},
  {"_link", strand_pool_link}, {"_run_job", strand_pool_run_job},
  {"_result", strand_pool_result}, {"_result_max", strand_pool_result_max},
  {"_spare_fd", l_spare_fd},
  {"pid", l_pid}, {"ppid", l_ppid}, {"cpu_count", l_cpu_count}, {NULL, NULL}
};

STRAND_API int strand_process_push_handle(lua_State *L, pid_t pid, int daemon);
int strand_process_push_handle(lua_State *L, pid_t pid, int daemon) {
  return push_handle(L, pid, daemon);
}

int strand_open_process(lua_State *L) {
  luaL_newmetatable(L, PHANDLE_META);
  lua_pushcfunction(L, ph_gc);
  lua_setfield(L, -2, "__gc");
  luaL_newlib(L, ph_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &CURRENT_KEY) == LUA_TNIL) {
    lua_pushboolean(L, 0);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &CURRENT_KEY);
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
