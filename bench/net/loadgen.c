// Echo load generator: N connections, each keeping D messages of S bytes in flight (D = 1:
// one request, wait for its echo; D > 1: pipelined). One thread, epoll. Runs WARMUP seconds,
// then measures SECONDS: echoed messages, its own CPU (getrusage) and, given a server PID, the
// server's whole-process CPU (utime + stime from /proc/PID/stat) over the same window.
// Prints one JSON line. Usage: loadgen PORT N D S WARMUP SECONDS [SERVER_PID]
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn { int fd; long long rx, tx_due, tx_done; };

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu_self(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

static double cpu_of(int pid) {
  if (pid <= 0) return 0;
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');  // the command name may contain spaces
  unsigned long long ut = 0, st = 0;
  // After ") ": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15)
  sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st);
  return (double)(ut + st) / sysconf(_SC_CLK_TCK);
}

static char *msgbuf;
static size_t S;

// Sends what is due (whole messages), as far as the socket takes it.
static int pump(struct conn *c) {
  while (c->tx_done < c->tx_due) {
    long long want = c->tx_due - c->tx_done;
    size_t off = c->tx_done % S;
    size_t len = want > 65536 ? 65536 : want;  // msgbuf holds 65536 + 2S bytes of the repeating pattern
    ssize_t w = send(c->fd, msgbuf + off, len, MSG_NOSIGNAL);
    if (w < 0) return errno == EAGAIN ? 0 : -1;
    c->tx_done += w;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 7) { fprintf(stderr, "usage: %s PORT N D S WARMUP SECONDS [SERVER_PID]\n", argv[0]); return 2; }
  int port = atoi(argv[1]), n = atoi(argv[2]), d = atoi(argv[3]);
  S = atoi(argv[4]);
  double warm = atof(argv[5]), secs = atof(argv[6]);
  int spid = argc > 7 ? atoi(argv[7]) : 0;
  msgbuf = malloc(65536 + 2 * S);
  for (size_t i = 0; i < 65536 + 2 * S; i++) msgbuf[i] = 'a' + (i % S) % 26;
  struct conn *cs = calloc(n, sizeof *cs);
  int ep = epoll_create1(0);
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  int one = 1;
  for (int i = 0; i < n; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) { perror("connect"); return 1; }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ioctl(fd, FIONBIO, &one);
    cs[i].fd = fd;
    cs[i].tx_due = (long long)d * S;
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u32 = i };
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    pump(&cs[i]);
  }
  static char rbuf[262144];
  struct epoll_event evs[512];
  double t0 = now_s(), start = t0 + warm, end = start + secs;
  int measuring = 0;
  long long base_rx = 0;
  double c0 = 0, s0 = 0;
  for (;;) {
    double t = now_s();
    if (!measuring && t >= start) {
      measuring = 1;
      for (int i = 0; i < n; i++) base_rx += cs[i].rx;
      c0 = cpu_self();
      s0 = cpu_of(spid);
      start = t;
    }
    if (measuring && t >= end) break;
    int k = epoll_wait(ep, evs, 512, 100);
    for (int j = 0; j < k; j++) {
      struct conn *c = &cs[evs[j].data.u32];
      if (evs[j].events & EPOLLIN) {
        for (;;) {
          ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
          if (r == 0) { fprintf(stderr, "server closed a connection\n"); return 1; }
          if (r < 0) { if (errno == EAGAIN) break; perror("recv"); return 1; }
          long long before = c->rx / S;
          c->rx += r;
          c->tx_due += (c->rx / S - before) * S;  // one new message per echoed one
        }
      }
      if (pump(c) < 0) { perror("send"); return 1; }
    }
  }
  double t1 = now_s();
  double c1 = cpu_self(), s1 = cpu_of(spid);
  long long rx = -base_rx;
  for (int i = 0; i < n; i++) rx += cs[i].rx;
  double wall = t1 - start;
  long long msgs = rx / S;
  printf("{\"msgs\":%lld,\"seconds\":%.4f,\"msgsPerS\":%.1f,\"clientCpuS\":%.4f,\"serverCpuS\":%.4f}\n", msgs, wall, msgs / wall, c1 - c0, spid > 0 ? s1 - s0 : -1.0);
  return 0;
}
