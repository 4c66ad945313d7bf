/* echo_client.c — the load generator of bench/echo.sh: N connections to 127.0.0.1:PORT, each
 * sending a message and waiting for its full echo before the next; prints round trips/s.
 * With -i it only opens N connections and holds them idle for SECONDS (memory measurements).
 * With -p PID (the server's) it also prints, over the measured window only (connections made),
 * the server's CPU seconds (utime+stime), its VmRSS in KiB at the end, the largest VmRSS sampled
 * every 0.1 s over the window, how many round trips were done when that peak was first seen, and
 * the largest VmRSS sampled before the window's last fifth (of its round trips with -n, else of
 * its seconds; below the peak: the memory was still growing at the end):
 *   "TRIPS_PER_S TRIPS SECONDS SERVER_CPU_S SERVER_RSS_KIB PEAK_RSS_KIB TRIPS_AT_PEAK PEAK45_KIB"
 * With -R too it prints every sample to stderr as "SECONDS TRIPS KIB" (the RSS over the run).
 * With -n TRIPS the run stops after TRIPS round trips in all, or after SECONDS if that comes first
 * (a window of work rather than of time: a collector's cycles follow the allocations).
 * With -P DEPTH each connection keeps DEPTH messages in flight, written as one batch (pipelining,
 * as redis-benchmark -P does), each message ending in '\n', and sends the next batch once the whole
 * batch came back: a server answering message by message then does more work per message than the
 * load generator (bench/server_bench.sh PIPELINE=).
 * usage: echo_client [-i] [-p PID [-R]] [-n TRIPS] [-P DEPTH] PORT NCONN SECONDS [MSGSIZE] */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct conn { int fd; size_t got; } conn;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

static int dial(int port) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) die("setsockopt");
  return fd;
}

/* utime+stime of process pid in seconds (all its threads), or -1. */
static double proc_cpu(int pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');              /* comm may hold spaces: fields follow the last ')' */
  unsigned long ut, st;
  if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
    return -1;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long proc_rss_kib(int pid) {
  char path[64], line[256];
  long v = -1;
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld", &v) == 1) break;
  fclose(f);
  return v;
}

static void send_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("write");
    }
    p += w;
    n -= (size_t)w;
  }
}

int main(int argc, char **argv) {
  int idle = 0, spid = 0, depth = 1, trace = 0;
  long long target = 0;
  for (;;) {
    if (argc > 1 && strcmp(argv[1], "-i") == 0) { idle = 1; argv++; argc--; }
    else if (argc > 1 && strcmp(argv[1], "-R") == 0) { trace = 1; argv++; argc--; }
    else if (argc > 2 && strcmp(argv[1], "-n") == 0) { target = atoll(argv[2]); argv += 2; argc -= 2; }
    else if (argc > 2 && strcmp(argv[1], "-P") == 0) { depth = atoi(argv[2]); argv += 2; argc -= 2; }
    else if (argc > 2 && strcmp(argv[1], "-p") == 0) { spid = atoi(argv[2]); argv += 2; argc -= 2; }
    else break;
  }
  if (argc < 4) {
    fprintf(stderr, "usage: echo_client [-i] [-p PID [-R]] [-n TRIPS] [-P DEPTH] PORT NCONN SECONDS [MSGSIZE]\n");
    return 2;
  }
  int port = atoi(argv[1]), n = atoi(argv[2]);
  double secs = atof(argv[3]);
  size_t msgsize = argc > 4 ? (size_t)atoi(argv[4]) : 64;
  if (n < 1 || msgsize < 1 || msgsize > 65536 || depth < 1 || depth > 1024 ||
      msgsize * (size_t)depth > 65536 || target < 0) return 2;
  size_t batch = msgsize * (size_t)depth;

  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  conn *c = (conn *)calloc((size_t)n, sizeof *c);
  char *msg = (char *)malloc(batch);
  char buf[65536];
  if (c == NULL || msg == NULL) die("malloc");
  memset(msg, 'e', batch);
  if (depth > 1)
    for (int i = 1; i <= depth; i++) msg[(size_t)i * msgsize - 1] = '\n';
  for (int i = 0; i < n; i++) c[i].fd = dial(port);
  if (idle) {
    printf("holding %d connections\n", n);
    fflush(stdout);
    usleep((useconds_t)(secs * 1e6));
    return 0;
  }

  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  for (int i = 0; i < n; i++) {
    struct epoll_event ev;
    ev.events = EPOLLIN;
    ev.data.u32 = (uint32_t)i;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev) != 0) die("epoll_ctl");
  }
  long long trips = 0;
  double cpu0 = spid ? proc_cpu(spid) : 0;
  double t0 = now(), end = t0 + secs, next_sample = t0;
  long peak = -1, peak45 = -1;
  long long peak_trips = 0;
  for (int i = 0; i < n; i++) send_all(c[i].fd, msg, batch);
  struct epoll_event evs[256];
  for (;;) {
    double t = now();
    if (spid && t >= next_sample) {         /* epoll_wait's 100 ms timeout bounds the gap */
      long v = proc_rss_kib(spid);
      if (v > peak) { peak = v; peak_trips = trips; }
      if ((target > 0 ? (double)trips < 0.8 * (double)target : t - t0 < 0.8 * secs) && v > peak45) peak45 = v;
      if (trace) fprintf(stderr, "%.2f %lld %ld\n", t - t0, trips, v);
      next_sample += 0.1;
      if (next_sample < t) next_sample = t + 0.1;
    }
    if (t >= end || (target > 0 && trips >= target)) break;
    int k = epoll_wait(ep, evs, 256, 100);
    if (k < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int e = 0; e < k; e++) {
      conn *x = &c[evs[e].data.u32];
      ssize_t r = read(x->fd, buf, sizeof buf);
      if (r == 0) { fprintf(stderr, "server closed a connection\n"); return 1; }
      if (r < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        die("read");
      }
      x->got += (size_t)r;
      while (x->got >= batch) {
        x->got -= batch;
        trips += depth;
        if (x->got == 0) send_all(x->fd, msg, batch);
      }
    }
  }
  double dt = now() - t0;
  if (spid) {
    double cpu1 = proc_cpu(spid);
    long rss = proc_rss_kib(spid);
    if (rss > peak) { peak = rss; peak_trips = trips; }
    printf("%.0f %lld %.6f %.4f %ld %ld %lld %ld\n", (double)trips / dt, trips, dt,
           cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1.0, rss, peak, peak_trips, peak45);
  } else {
    printf("%.0f\n", (double)trips / dt);
  }
  return 0;
}
