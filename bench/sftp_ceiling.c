/* sftp_ceiling.c — what libssh2 1.10 itself can reach for bulk transfers, whatever the caller does:
 * the probes behind docs/ssh.md's "SFTP throughput" (transfer alone timed; prints MiB/s and the
 * client's seconds on a CPU and seconds runnable waiting for one, /proc/self/schedstat: the wall
 * time less both is the time it waited for the network, i.e. for sshd). Same socket setup as
 * ssh_c_baseline.c.
 *   get HOST PORT USER KEY REMOTE LOCAL KIB        one SFTP handle, KIB-sized reads (read-ahead 4x)
 *   mget HOST PORT USER KEY REMOTE LOCAL N         N SFTP channels on one session, each reading
 *                                                  its 1/N of the file at once (non-blocking, poll)
 *   mput HOST PORT USER KEY LOCAL REMOTE N         N SFTP channels on one session, each writing
 *                                                  its 1/N of the file, 512 KiB in flight each
 *                                                  (a sliding buffer, as strand's put)
 *   catget HOST PORT USER KEY REMOTE LOCAL         exec "cat REMOTE" and read the channel: no SFTP
 *                                                  at all, the ceiling of any protocol over a
 *                                                  libssh2 channel (an SFTP client of our own too)
 *   catput HOST PORT USER KEY LOCAL REMOTE         exec "cat > REMOTE" and write the channel
 * Build: cc -O2 -o sftp_ceiling sftp_ceiling.c $(pkg-config --libs libssh2) */
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
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int sock;
static LIBSSH2_SESSION *sess;
static double t0, c0, d0;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}


static void die(const char *what) {
  char *msg = NULL;
  if (sess) libssh2_session_last_error(sess, &msg, NULL, 0);
  fprintf(stderr, "sftp_ceiling: %s (%s)\n", what, msg ? msg : "");
  exit(1);
}

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

static void open_session(const char *host, int port, const char *user, const char *key) {
  sock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0) die("socket");
  int one = 1;
  setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((unsigned short)port) };
  inet_pton(AF_INET, host, &a.sin_addr);
  if (connect(sock, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
  sess = libssh2_session_init();
  if (!sess) die("session_init");
  libssh2_session_callback_set(sess, LIBSSH2_CALLBACK_RECV, (void *)cb_recv);
  libssh2_session_callback_set(sess, LIBSSH2_CALLBACK_SEND, (void *)cb_send);
  if (libssh2_session_handshake(sess, sock)) die("handshake");
  if (libssh2_userauth_publickey_fromfile(sess, user, NULL, key, NULL)) die("auth");
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

static void start(void) { t0 = now(); sched(&c0, &d0); }

static void report(long long bytes) {
  double dt = now() - t0, c1, d1;
  sched(&c1, &d1);
  printf("%.1f %.3f %.3f\n", bytes / 1048576.0 / dt, c1 - c0, d1 - d0);
}

static void wait_socket(void) {
  int d = libssh2_session_block_directions(sess);
  struct pollfd p = { .fd = sock, .events = (short)(((d & LIBSSH2_SESSION_BLOCK_INBOUND) ? POLLIN : 0) |
                                                    ((d & LIBSSH2_SESSION_BLOCK_OUTBOUND) ? POLLOUT : 0)) };
  if (p.events == 0) p.events = POLLIN;
  if (poll(&p, 1, 10000) <= 0 && errno != EINTR) die("poll: nothing for 10 s");
}

static void get(const char *remote, const char *local, size_t cap) {
  LIBSSH2_SFTP *sftp = libssh2_sftp_init(sess);
  if (!sftp) die("sftp_init");
  LIBSSH2_SFTP_HANDLE *h = libssh2_sftp_open(sftp, remote, LIBSSH2_FXF_READ, 0);
  if (!h) die("sftp_open");
  int fd = open(local, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die("open local");
  char *buf = malloc(cap);
  long long total = 0;
  ssize_t n;
  start();
  while ((n = libssh2_sftp_read(h, buf, cap)) > 0) {
    if (write(fd, buf, (size_t)n) != n) die("write");
    total += n;
  }
  if (n < 0) die("sftp_read");
  close(fd);
  report(total);
  free(buf);
}

typedef struct part { LIBSSH2_SFTP *sftp; LIBSSH2_SFTP_HANDLE *h; long long off, end; int done; char *buf; } part;

/* N handles, each on its own SFTP channel (libssh2 keeps one request state per SFTP session),
 * each reading its range; read-ahead past a range's end is wasted (at most 4 MiB a part) */
static void mget(const char *remote, const char *local, int nparts) {
  const size_t cap = 1 << 20;
  part *ps = calloc((size_t)nparts, sizeof *ps);
  LIBSSH2_SFTP_ATTRIBUTES st;
  for (int i = 0; i < nparts; i++) {
    ps[i].sftp = libssh2_sftp_init(sess);
    if (!ps[i].sftp) die("sftp_init");
    ps[i].h = libssh2_sftp_open(ps[i].sftp, remote, LIBSSH2_FXF_READ, 0);
    if (!ps[i].h) die("sftp_open");
    ps[i].buf = malloc(cap);
  }
  if (libssh2_sftp_fstat(ps[0].h, &st)) die("fstat");
  long long size = (long long)st.filesize, chunk = (size + nparts - 1) / nparts;
  for (int i = 0; i < nparts; i++) {
    ps[i].off = i * chunk;
    ps[i].end = ps[i].off + chunk < size ? ps[i].off + chunk : size;
    libssh2_sftp_seek64(ps[i].h, (libssh2_uint64_t)ps[i].off);
  }
  int fd = open(local, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die("open local");
  libssh2_session_set_blocking(sess, 0);
  long long total = 0;
  int left = nparts;
  start();
  while (left > 0) {
    int moved = 0;
    for (int i = 0; i < nparts; i++) {
      part *p = &ps[i];
      if (p->done) continue;
      size_t want = cap;
      ssize_t n = libssh2_sftp_read(p->h, p->buf, want);
      if (n == LIBSSH2_ERROR_EAGAIN) continue;
      if (n < 0) die("sftp_read");
      moved = 1;
      if (n == 0) { p->done = 1; left--; continue; }
      if (p->off + n > p->end) n = (ssize_t)(p->end - p->off);
      if (pwrite(fd, p->buf, (size_t)n, p->off) != n) die("pwrite");
      p->off += n;
      total += n;
      if (p->off >= p->end) { p->done = 1; left--; }
    }
    if (!moved) wait_socket();
  }
  close(fd);
  report(total);
  libssh2_session_set_blocking(sess, 1);   /* the handles' read-ahead is dropped at exit */
}

typedef struct wpart {
  LIBSSH2_SFTP *sftp; LIBSSH2_SFTP_HANDLE *h; long long pos, end; int done;
  char *buf; size_t off, len;        /* buf[off..len): read from the file, not acknowledged yet */
} wpart;

static void mput(const char *local, const char *remote, int nparts) {
  const size_t cap = 1 << 20, inflight = 512 * 1024;
  wpart *ps = calloc((size_t)nparts, sizeof *ps);
  int fd = open(local, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("open local");
  long long size = lseek(fd, 0, SEEK_END), chunk = (size + nparts - 1) / nparts;
  for (int i = 0; i < nparts; i++) {
    ps[i].sftp = libssh2_sftp_init(sess);
    if (!ps[i].sftp) die("sftp_init");
    unsigned long fl = LIBSSH2_FXF_WRITE | LIBSSH2_FXF_CREAT | (i == 0 ? LIBSSH2_FXF_TRUNC : 0);
    ps[i].h = libssh2_sftp_open(ps[i].sftp, remote, fl, 0644);
    if (!ps[i].h) die("sftp_open");
    ps[i].buf = malloc(cap);
    ps[i].pos = i * chunk;
    ps[i].end = ps[i].pos + chunk < size ? ps[i].pos + chunk : size;
    libssh2_sftp_seek64(ps[i].h, (libssh2_uint64_t)ps[i].pos);
  }
  libssh2_session_set_blocking(sess, 0);
  long long total = 0;
  int left = nparts;
  start();
  while (left > 0) {
    int moved = 0;
    for (int i = 0; i < nparts; i++) {
      wpart *p = &ps[i];
      if (p->done) continue;
      if (p->off >= cap / 2) {
        memmove(p->buf, p->buf + p->off, p->len - p->off);
        p->len -= p->off;
        p->off = 0;
      }
      long long unread = p->end - (p->pos + (long long)(p->len - p->off));
      if (p->len < cap && unread > 0) {
        size_t want = cap - p->len < (size_t)unread ? cap - p->len : (size_t)unread;
        ssize_t n = pread(fd, p->buf + p->len, want, p->pos + (long long)(p->len - p->off));
        if (n <= 0) die("pread");
        p->len += (size_t)n;
      }
      if (p->off == p->len) { p->done = 1; left--; moved = 1; continue; }
      size_t give = p->len - p->off < inflight ? p->len - p->off : inflight;
      ssize_t w = libssh2_sftp_write(p->h, p->buf + p->off, give);
      if (w == LIBSSH2_ERROR_EAGAIN || w == 0) continue;
      if (w < 0) die("sftp_write");
      moved = 1;
      p->off += (size_t)w;
      p->pos += w;
      total += w;
    }
    if (!moved) wait_socket();
  }
  libssh2_session_set_blocking(sess, 1);
  for (int i = 0; i < nparts; i++) libssh2_sftp_close(ps[i].h);   /* all acknowledged */
  close(fd);
  report(total);
}

static void catget(const char *remote, const char *local) {
  LIBSSH2_CHANNEL *ch = libssh2_channel_open_session(sess);
  if (!ch) die("channel");
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "cat '%s'", remote);
  if (libssh2_channel_exec(ch, cmd)) die("exec");
  int fd = open(local, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die("open local");
  size_t cap = 1 << 20;
  char *buf = malloc(cap);
  long long total = 0;
  ssize_t n;
  start();
  while ((n = libssh2_channel_read(ch, buf, cap)) > 0) {
    if (write(fd, buf, (size_t)n) != n) die("write");
    total += n;
  }
  if (n < 0) die("channel_read");
  close(fd);
  report(total);
  free(buf);
}

static void catput(const char *local, const char *remote) {
  LIBSSH2_CHANNEL *ch = libssh2_channel_open_session(sess);
  if (!ch) die("channel");
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "cat > '%s'", remote);
  if (libssh2_channel_exec(ch, cmd)) die("exec");
  int fd = open(local, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("open local");
  size_t cap = 1 << 20;
  char *buf = malloc(cap);
  long long total = 0;
  ssize_t n;
  start();
  while ((n = read(fd, buf, cap)) > 0) {
    for (ssize_t o = 0; o < n; ) {
      ssize_t w = libssh2_channel_write(ch, buf + o, (size_t)(n - o));
      if (w < 0) die("channel_write");
      o += w;
    }
    total += n;
  }
  libssh2_channel_send_eof(ch);
  libssh2_channel_wait_eof(ch);     /* the remote cat has everything */
  close(fd);
  report(total);
  free(buf);
}

int main(int argc, char **argv) {
  if (argc < 8) die("usage: get|mget|mput|catget|catput HOST PORT USER KEY A B [N]");
  libssh2_init(0);
  open_session(argv[2], atoi(argv[3]), argv[4], argv[5]);
  const char *m = argv[1];
  if (strcmp(m, "get") == 0 && argc > 8) get(argv[6], argv[7], (size_t)atoi(argv[8]) * 1024);
  else if (strcmp(m, "mget") == 0 && argc > 8) mget(argv[6], argv[7], atoi(argv[8]));
  else if (strcmp(m, "mput") == 0 && argc > 8) mput(argv[6], argv[7], atoi(argv[8]));
  else if (strcmp(m, "catget") == 0) catget(argv[6], argv[7]);
  else if (strcmp(m, "catput") == 0) catput(argv[6], argv[7]);
  else die("bad arguments");
  libssh2_session_disconnect(sess, "bye");
  libssh2_session_free(sess);
  close(sock);
  libssh2_exit();
  return 0;
}
