// How the size of each io_uring submission affects O_DIRECT random writes at a fixed queue depth.
//
// Keeps QD requests of BS bytes in flight on FILE (which must exist and be at least SIZE bytes).
// Each loop waits for one completion, reaps all that are ready, and queues one new write per
// completion; EVERY decides when the new writes reach the kernel: 0 submits them all in the
// next io_uring_enter (what a loop that batches a whole turn does), N > 0 submits after every
// N queued writes. The ring uses SINGLE_ISSUER | DEFER_TASKRUN like Shoal's reactor.
//
//   cc -O2 -o submit-batching bench/fs/submit-batching.c -luring   (Debian: liburing-dev)
//   ./submit-batching FILE [EVERY=0] [SECONDS=3] [QD=32] [SIZE_MIB=512] [BS=4096]
//
// Prints: every=N iops=... enters=... (one line).
#define _GNU_SOURCE
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static unsigned long long rng = 88172645463325252ull;
static unsigned long long next_random(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s FILE [EVERY=0] [SECONDS=3] [QD=32] [SIZE_MIB=512] [BS=4096]\n", argv[0]);
    return 2;
  }
  const int every = argc > 2 ? atoi(argv[2]) : 0;
  const double seconds = argc > 3 ? atof(argv[3]) : 3;
  const int qd = argc > 4 ? atoi(argv[4]) : 32;
  const long long size = (argc > 5 ? atoll(argv[5]) : 512) << 20;
  const int bs = argc > 6 ? atoi(argv[6]) : 4096;
  if (every < 0 || seconds <= 0 || qd < 1 || qd > 1024 || bs < 512 || size < bs) {
    fprintf(stderr, "bad arguments\n");
    return 2;
  }
  const int fd = open(argv[1], O_RDWR | O_DIRECT);
  if (fd < 0) {
    perror("open");
    return 1;
  }
  struct io_uring ring;
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  int rc = io_uring_queue_init_params(2048, &ring, &p);
  if (rc < 0) {
    fprintf(stderr, "io_uring_queue_init_params: %s\n", strerror(-rc));
    return 1;
  }
  const long long blocks = size / bs;
  void **bufs = calloc((size_t)qd, sizeof *bufs);
  int *ready = calloc((size_t)qd, sizeof *ready);
  for (int i = 0; i < qd; i++) {
    if (posix_memalign(&bufs[i], 4096, (size_t)bs) != 0) return 1;
    memset(bufs[i], 0x5a, (size_t)bs);
  }
  for (int i = 0; i < qd; i++) {
    struct io_uring_sqe *s = io_uring_get_sqe(&ring);
    io_uring_prep_write(s, fd, bufs[i], (unsigned)bs, (next_random() % (unsigned long long)blocks) * (unsigned long long)bs);
    s->user_data = (unsigned long long)i;
  }
  long long ops = 0, enters = 0;
  const double start = now(), end = start + seconds;
  while (now() < end) {
    rc = io_uring_submit_and_wait(&ring, 1);
    enters++;
    if (rc < 0) {
      fprintf(stderr, "io_uring_submit_and_wait: %s\n", strerror(-rc));
      return 1;
    }
    struct io_uring_cqe *c;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&ring, head, c) {
      if (c->res != bs) {
        fprintf(stderr, "write returned %d\n", c->res);
        return 1;
      }
      ready[n++] = (int)c->user_data;
    }
    io_uring_cq_advance(&ring, n);
    for (unsigned k = 0; k < n; k++) {
      ops++;
      struct io_uring_sqe *s = io_uring_get_sqe(&ring);
      io_uring_prep_write(s, fd, bufs[ready[k]], (unsigned)bs, (next_random() % (unsigned long long)blocks) * (unsigned long long)bs);
      s->user_data = (unsigned long long)ready[k];
      if (every > 0 && (k + 1) % (unsigned)every == 0 && k + 1 < n) {
        io_uring_submit(&ring);
        enters++;
      }
    }
  }
  printf("every=%d iops=%.0f enters=%lld\n", every, (double)ops / (now() - start), enters);
  io_uring_queue_exit(&ring);
  return 0;
}
