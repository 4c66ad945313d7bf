/* ssh_c_baseline.c — the plain C libssh2 client strand's SSH numbers are compared with:
 * TCP_NODELAY, TCP_QUICKACK re-armed after each read (recv callback), 1 MiB SFTP buffers.
 *   connect HOST PORT USER KEY          connect + key auth + exec "true" + close; prints seconds
 *   cmds HOST PORT USER KEY N           N sequential exec "true" on one session; prints s/command
 *   get|put HOST PORT USER KEY REMOTE LOCAL   SFTP transfer; prints "MiB/s cpu_s run_delay_s" of the
 *                                       transfer (/proc/self/schedstat: time on a CPU, and time
 *                                       runnable waiting for one)
 *   many HOST PORT USER KEY N           N sessions at once, non-blocking, one thread, poll(); each
 *                                       runs "true" and waits for its exit status (as strand's
 *                                       run does); prints "wall_seconds cpu_seconds"
 * Build: cc -O2 -o ssh_c_baseline ssh_c_baseline.c $(pkg-config --libs libssh2) */
#include <libssh2.h>
#include <libssh2_sftp.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *host, *user, *key;
static int port;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* this thread's seconds on a CPU and seconds runnable but waiting for one */
static void sched(double *oncpu, double *delay) {
  unsigned long long a = 0, b = 0;
  FILE *f = fopen("/proc/self/schedstat", "r");
  if (f) {
    if (fscanf(f, "%llu %llu", &a, &b) != 2) a = b = 0;
    fclose(f);
  }
  *oncpu = a / 1e9;
  *delay = b / 1e9;
}

static void die(const char *what) { fprintf(stderr, "ssh_c_baseline: %s\n", what); exit(1); }

static ssize_t cb_recv(libssh2_socket_t fd, void *buf, size_t len, int flags, void **abstract) {
  (void)abstract;
  ssize_t n = recv(fd, buf, len, flags);
  if (n < 0) return -errno;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
  return n;
}

static ssize_t cb_send(libssh2_socket_t fd, const void *buf, size_t len, int flags, void **abstract) {
  (void)abstract;
  ssize_t n = send(fd, buf, len, flags | MSG_NOSIGNAL);
  return n < 0 ? -errno : n;
}

static int tcp_connect(int nonblock) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((unsigned short)port) };
  inet_pton(AF_INET, host, &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
  if (nonblock) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

static LIBSSH2_SESSION *new_session(void) {
  LIBSSH2_SESSION *s = libssh2_session_init();
  if (!s) die("session_init");
  libssh2_session_callback_set(s, LIBSSH2_CALLBACK_RECV, (void *)cb_recv);
  libssh2_session_callback_set(s, LIBSSH2_CALLBACK_SEND, (void *)cb_send);
  return s;
}

static LIBSSH2_SESSION *open_blocking(int *fdp) {
  int fd = tcp_connect(0);
  LIBSSH2_SESSION *s = new_session();
  if (libssh2_session_handshake(s, fd)) die("handshake");
  if (libssh2_userauth_publickey_fromfile(s, user, NULL, key, NULL)) die("auth");
  *fdp = fd;
  return s;
}

static void run_true(LIBSSH2_SESSION *s) {
  LIBSSH2_CHANNEL *ch = libssh2_channel_open_session(s);
  if (!ch) die("channel");
  if (libssh2_channel_exec(ch, "true")) die("exec");
  char buf[4096];
  while (libssh2_channel_read(ch, buf, sizeof buf) > 0) {}
  libssh2_channel_close(ch);
  libssh2_channel_wait_closed(ch);
  libssh2_channel_free(ch);
}

static void close_session(LIBSSH2_SESSION *s, int fd) {
  libssh2_session_disconnect(s, "bye");
  libssh2_session_free(s);
  close(fd);
}

static void transfer(int put, const char *remote, const char *local) {
  int fd;
  LIBSSH2_SESSION *s = open_blocking(&fd);
  LIBSSH2_SFTP *sftp = libssh2_sftp_init(s);
  if (!sftp) die("sftp_init");
  size_t cap = 1 << 20;
  char *buf = malloc(cap);
  double t0 = now(), c0, d0, c1, d1;
  sched(&c0, &d0);
  long long total = 0;
  if (!put) {
    LIBSSH2_SFTP_HANDLE *h = libssh2_sftp_open(sftp, remote, LIBSSH2_FXF_READ, 0);
    if (!h) die("sftp_open");
    FILE *out = fopen(local, "wb");
    ssize_t n;
    while ((n = libssh2_sftp_read(h, buf, cap)) > 0) { fwrite(buf, 1, (size_t)n, out); total += n; }
    if (n < 0) die("sftp_read");
    fclose(out);
    libssh2_sftp_close(h);
  } else {
    LIBSSH2_SFTP_HANDLE *h = libssh2_sftp_open(sftp, remote, LIBSSH2_FXF_WRITE | LIBSSH2_FXF_CREAT |
                                               LIBSSH2_FXF_TRUNC, 0644);
    if (!h) die("sftp_open");
    FILE *in = fopen(local, "rb");
    size_t n;
    while ((n = fread(buf, 1, cap, in)) > 0) {
      char *p = buf;
      while (n > 0) {
        ssize_t w = libssh2_sftp_write(h, p, n);
        if (w < 0) die("sftp_write");
        p += w; n -= (size_t)w; total += w;
      }
    }
    fclose(in);
    libssh2_sftp_close(h);
  }
  double dt = now() - t0;
  sched(&c1, &d1);
  printf("%.1f %.3f %.3f\n", total / 1048576.0 / dt, c1 - c0, d1 - d0);
  libssh2_sftp_shutdown(sftp);
  close_session(s, fd);
  free(buf);
}

/* {==== many sessions, non-blocking, one thread */

typedef struct conn { int fd, stage; LIBSSH2_SESSION *s; LIBSSH2_CHANNEL *ch; } conn;

static int step(conn *c) {   /* 1: done, 0: would block */
  int rc;
  char buf[4096];
  for (;;) {
    switch (c->stage) {
      case 0: rc = libssh2_session_handshake(c->s, c->fd); break;
      case 1: rc = libssh2_userauth_publickey_fromfile(c->s, user, NULL, key, NULL); break;
      case 2:
        c->ch = libssh2_channel_open_session(c->s);
        rc = c->ch ? 0 : libssh2_session_last_errno(c->s);
        break;
      case 3: rc = libssh2_channel_exec(c->ch, "true"); break;
      case 4: {
        ssize_t n = libssh2_channel_read(c->ch, buf, sizeof buf);
        if (n > 0) continue;
        rc = (int)n;
        break;
      }
      case 5: rc = libssh2_channel_close(c->ch); break;
      case 6:   /* as strand's run(): the exit status, which comes with the server's close */
        rc = libssh2_channel_wait_closed(c->ch);
        if (rc == 0 && libssh2_channel_get_exit_status(c->ch) != 0) die("many: exit status");
        break;
      case 7: rc = libssh2_channel_free(c->ch); break;
      case 8: rc = libssh2_session_disconnect(c->s, "bye"); break;
      default: return 1;
    }
    if (rc == LIBSSH2_ERROR_EAGAIN) return 0;
    if (rc < 0) die("many: step failed");
    c->stage++;
  }
}

static void many(int n) {
  conn *cs = calloc((size_t)n, sizeof *cs);
  struct pollfd *pf = calloc((size_t)n, sizeof *pf);
  double t0 = now();
  for (int i = 0; i < n; i++) {
    cs[i].fd = tcp_connect(1);
    cs[i].s = new_session();
    libssh2_session_set_blocking(cs[i].s, 0);
  }
  int left = n;
  for (int i = 0; i < n; i++) if (step(&cs[i])) { cs[i].stage = 99; left--; }
  while (left > 0) {
    int m = 0;
    int idx[4096];
    for (int i = 0; i < n; i++) {
      if (cs[i].stage == 99 || cs[i].stage > 8) continue;
      int d = libssh2_session_block_directions(cs[i].s);
      pf[m].fd = cs[i].fd;
      pf[m].events = (short)(((d & LIBSSH2_SESSION_BLOCK_INBOUND) ? POLLIN : 0) |
                             ((d & LIBSSH2_SESSION_BLOCK_OUTBOUND) ? POLLOUT : 0));
      if (pf[m].events == 0) pf[m].events = POLLIN;
      idx[m++] = i;
    }
    if (poll(pf, (nfds_t)m, 10000) < 0 && errno != EINTR) die("poll");
    for (int k = 0; k < m; k++) {
      if (!pf[k].revents) continue;
      conn *c = &cs[idx[k]];
      if (step(c)) { c->stage = 99; left--; }
    }
  }
  for (int i = 0; i < n; i++) { libssh2_session_free(cs[i].s); close(cs[i].fd); }
  double wall = now() - t0;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("%.3f %.3f\n", wall, ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
         ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
  free(cs);
  free(pf);
}

/* }==== */

int main(int argc, char **argv) {
  if (argc < 6) die("usage: connect|cmds|get|put|many HOST PORT USER KEY [...]");
  host = argv[2]; port = atoi(argv[3]); user = argv[4]; key = argv[5];
  libssh2_init(0);
  const char *mode = argv[1];
  if (strcmp(mode, "connect") == 0) {
    double t0 = now();
    int fd;
    LIBSSH2_SESSION *s = open_blocking(&fd);
    run_true(s);
    close_session(s, fd);
    printf("%.4f\n", now() - t0);
  } else if (strcmp(mode, "cmds") == 0 && argc > 6) {
    int n = atoi(argv[6]), fd;
    LIBSSH2_SESSION *s = open_blocking(&fd);
    double t0 = now();
    for (int i = 0; i < n; i++) run_true(s);
    printf("%.5f\n", (now() - t0) / n);
    close_session(s, fd);
  } else if ((strcmp(mode, "get") == 0 || strcmp(mode, "put") == 0) && argc > 7) {
    transfer(mode[0] == 'p', argv[6], argv[7]);
  } else if (strcmp(mode, "many") == 0 && argc > 6) {
    many(atoi(argv[6]));
  } else {
    die("bad arguments");
  }
  libssh2_exit();
  return 0;
}
