// Echo server floor for io_uring: one thread, one ring set up with SINGLE_ISSUER |
// DEFER_TASKRUN, multishot accept, multishot recv into a provided-buffer ring (1024 x 16 KiB;
// Shoal starts with 256 and grows), and the received buffer sent back as is (no copy). One send in flight
// per connection (later buffers wait in order, so bytes never reorder); short sends resume.
// Raw syscalls, no liburing. Usage: echo-uring PORT
#define _GNU_SOURCE
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ENTRIES 4096
#define NBUF 1024
#define BUFSZ 16384
#define BGID 1
#define MAX_FDS 65536
enum { T_ACCEPT = 1, T_RECV = 2, T_SEND = 3 };

static struct {
  int fd;
  unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
  unsigned *cq_head, *cq_tail, *cq_mask;
  struct io_uring_sqe *sqes;
  struct io_uring_cqe *cqes;
  unsigned to_submit;
} R;

static struct io_uring_buf_ring *br;
static char *bufs;
static unsigned short br_tail;

// Per connection: a FIFO of received buffers (bid, offset, length); the head one is being sent.
struct pend { unsigned short bid; unsigned off, len; };
struct conn { struct pend q[64]; unsigned head, n; int sending, closed; };
static struct conn *conns;

static struct io_uring_sqe *sqe(void) {
  unsigned tail = *R.sq_tail;
  unsigned head = atomic_load_explicit((_Atomic unsigned *)R.sq_head, memory_order_acquire);
  if (tail - head >= ENTRIES) {  // full: submit what is queued
    syscall(__NR_io_uring_enter, R.fd, R.to_submit, 0, 0, NULL, 0);
    R.to_submit = 0;
  }
  struct io_uring_sqe *s = &R.sqes[tail & *R.sq_mask];
  memset(s, 0, sizeof *s);
  R.sq_array[tail & *R.sq_mask] = tail & *R.sq_mask;
  atomic_store_explicit((_Atomic unsigned *)R.sq_tail, tail + 1, memory_order_release);
  R.to_submit++;
  return s;
}

static uint64_t ud(int type, int fd) { return ((uint64_t)type << 32) | (uint32_t)fd; }

static void arm_recv(int fd) {
  struct io_uring_sqe *s = sqe();
  s->opcode = IORING_OP_RECV;
  s->fd = fd;
  s->flags = IOSQE_BUFFER_SELECT;
  s->buf_group = BGID;
  s->ioprio = IORING_RECV_MULTISHOT;
  s->user_data = ud(T_RECV, fd);
}

static void arm_accept(int lfd) {
  struct io_uring_sqe *s = sqe();
  s->opcode = IORING_OP_ACCEPT;
  s->fd = lfd;
  s->ioprio = IORING_ACCEPT_MULTISHOT;
  s->accept_flags = SOCK_CLOEXEC;
  s->user_data = ud(T_ACCEPT, lfd);
}

static void recycle(unsigned short bid) {
  struct io_uring_buf *b = &br->bufs[br_tail & (NBUF - 1)];
  b->addr = (uint64_t)(uintptr_t)(bufs + (size_t)bid * BUFSZ);
  b->len = BUFSZ;
  b->bid = bid;
  br_tail++;
  atomic_store_explicit((_Atomic unsigned short *)&br->tail, br_tail, memory_order_release);
}

static void start_send(int fd) {
  struct conn *c = &conns[fd];
  if (c->sending || c->n == 0) return;
  struct pend *p = &c->q[c->head];
  struct io_uring_sqe *s = sqe();
  s->opcode = IORING_OP_SEND;
  s->fd = fd;
  s->addr = (uint64_t)(uintptr_t)(bufs + (size_t)p->bid * BUFSZ + p->off);
  s->len = p->len - p->off;
  s->msg_flags = MSG_NOSIGNAL;
  s->user_data = ud(T_SEND, fd);
  c->sending = 1;
}

static void drop_queue(int fd) {
  struct conn *c = &conns[fd];
  while (c->n) { recycle(c->q[c->head].bid); c->head = (c->head + 1) & 63; c->n--; }
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: %s PORT\n", argv[0]); return 2; }
  conns = calloc(MAX_FDS, sizeof *conns);
  struct io_uring_params p = { .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE, .cq_entries = ENTRIES * 4 };
  R.fd = syscall(__NR_io_uring_setup, ENTRIES, &p);
  if (R.fd < 0) { perror("io_uring_setup"); return 1; }
  size_t sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  size_t cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  if (cq_sz > sq_sz) sq_sz = cq_sz;  // IORING_FEAT_SINGLE_MMAP
  char *sq = mmap(0, sq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, R.fd, IORING_OFF_SQ_RING);
  char *cq = sq;
  R.sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, R.fd, IORING_OFF_SQES);
  R.sq_head = (unsigned *)(sq + p.sq_off.head);
  R.sq_tail = (unsigned *)(sq + p.sq_off.tail);
  R.sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
  R.sq_array = (unsigned *)(sq + p.sq_off.array);
  R.cq_head = (unsigned *)(cq + p.cq_off.head);
  R.cq_tail = (unsigned *)(cq + p.cq_off.tail);
  R.cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
  R.cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);

  br = mmap(0, NBUF * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  bufs = mmap(0, (size_t)NBUF * BUFSZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  struct io_uring_buf_reg reg = { .ring_addr = (uint64_t)(uintptr_t)br, .ring_entries = NBUF, .bgid = BGID };
  if (syscall(__NR_io_uring_register, R.fd, IORING_REGISTER_PBUF_RING, &reg, 1)) { perror("register pbuf ring"); return 1; }
  for (int i = 0; i < NBUF; i++) recycle(i);

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // inherited by accepted sockets
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 4096)) { perror("listen"); return 1; }
  arm_accept(lfd);
  printf("ready\n");
  fflush(stdout);

  for (;;) {
    int rc = syscall(__NR_io_uring_enter, R.fd, R.to_submit, 1, IORING_ENTER_GETEVENTS, NULL, 0);
    if (rc < 0 && errno != EINTR && errno != EBUSY && errno != EAGAIN) { perror("io_uring_enter"); return 1; }
    if (rc >= 0) R.to_submit = 0;
    unsigned head = *R.cq_head;
    unsigned tail = atomic_load_explicit((_Atomic unsigned *)R.cq_tail, memory_order_acquire);
    for (; head != tail; head++) {
      struct io_uring_cqe *e = &R.cqes[head & *R.cq_mask];
      int type = e->user_data >> 32;
      int fd = (int)(uint32_t)e->user_data;
      int res = e->res;
      unsigned flags = e->flags;
      if (type == T_ACCEPT) {
        if (res >= 0) {
          if (res < MAX_FDS) { memset(&conns[res], 0, sizeof conns[res]); arm_recv(res); } else close(res);
        }
        if (!(flags & IORING_CQE_F_MORE)) arm_accept(lfd);
      } else if (type == T_RECV) {
        struct conn *c = &conns[fd];
        if (res > 0 && (flags & IORING_CQE_F_BUFFER)) {
          unsigned short bid = flags >> IORING_CQE_BUFFER_SHIFT;
          if (c->closed || c->n == 64) { recycle(bid); }
          else {
            c->q[(c->head + c->n) & 63] = (struct pend){ bid, 0, res };
            c->n++;
            start_send(fd);
          }
          if (!(flags & IORING_CQE_F_MORE) && !c->closed) arm_recv(fd);
        } else if (res == -ENOBUFS) {
          arm_recv(fd);
        } else if (!(flags & IORING_CQE_F_MORE)) {
          c->closed = 1;
          if (!c->sending) { drop_queue(fd); close(fd); }
        }
      } else if (type == T_SEND) {
        struct conn *c = &conns[fd];
        c->sending = 0;
        struct pend *pq = &c->q[c->head];
        if (res > 0 && !c->closed) {
          pq->off += res;
          if (pq->off == pq->len) { recycle(pq->bid); c->head = (c->head + 1) & 63; c->n--; }
          start_send(fd);
        } else {
          c->closed = 1;
          drop_queue(fd);
          close(fd);
        }
      }
    }
    atomic_store_explicit((_Atomic unsigned *)R.cq_head, head, memory_order_release);
  }
}
