// Echo server baseline: one thread, epoll (level-triggered), non-blocking sockets. Reads up to
// 64 KiB per readiness and writes it back; bytes a short write left are kept per connection and
// written on EPOLLOUT (reading pauses meanwhile). Usage: echo-epoll PORT
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FDS 65536
#define BUF 65536

struct conn { char *pending; size_t off, len; };
static struct conn conns[MAX_FDS];

static void drop(int ep, int fd) {
  epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
  close(fd);
  free(conns[fd].pending);
  memset(&conns[fd], 0, sizeof conns[fd]);
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: %s PORT\n", argv[0]); return 2; }
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 4096)) { perror("listen"); return 1; }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd };
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  static char buf[BUF];
  struct epoll_event events[256];
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    int n = epoll_wait(ep, events, 256, -1);
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      if (fd == lfd) {
        for (;;) {
          int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) break;
          if (c >= MAX_FDS) { close(c); continue; }
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct epoll_event cev = { .events = EPOLLIN, .data.fd = c };
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        }
        continue;
      }
      struct conn *k = &conns[fd];
      if (k->len > 0) {  // EPOLLOUT: finish the pending write, then read again
        ssize_t w = write(fd, k->pending + k->off, k->len - k->off);
        if (w < 0 && errno != EAGAIN) { drop(ep, fd); continue; }
        if (w > 0) k->off += w;
        if (k->off == k->len) {
          k->off = k->len = 0;
          struct epoll_event cev = { .events = EPOLLIN, .data.fd = fd };
          epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
        }
        continue;
      }
      ssize_t r = read(fd, buf, BUF);
      if (r == 0 || (r < 0 && errno != EAGAIN)) { drop(ep, fd); continue; }
      if (r < 0) continue;
      ssize_t w = write(fd, buf, r);
      if (w < 0 && errno != EAGAIN) { drop(ep, fd); continue; }
      if (w < 0) w = 0;
      if (w < r) {
        k->pending = realloc(k->pending, r - w);
        memcpy(k->pending, buf + w, r - w);
        k->off = 0;
        k->len = r - w;
        struct epoll_event cev = { .events = EPOLLOUT, .data.fd = fd };
        epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
      }
    }
  }
}
