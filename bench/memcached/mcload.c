/*
 * mcload: a memcached load generator (text protocol).
 *
 *   mcload -s 127.0.0.1:11211 -c 100 -t 1 -d 1 -r 0.9 -k 100000 -K 32 -V 64 -D 10 [-R 50000] [-P]
 *
 *   -s host:port  server                          -c N   connections (default 100)
 *   -t N          threads (epoll loop each)       -d N   pipeline depth per connection (1)
 *   -r F          fraction of gets (0.9)          -k N   key space (100000)
 *   -K N          key length (32)                 -V N   value length (64)
 *   -D S          measured seconds (10)           -W S   warm-up seconds, not measured (1)
 *   -R N          fixed rate, requests/s in total (open loop; default: as fast as possible)
 *   -P            prefill every key with a set before the run
 *   -j            print one JSON line instead of text
 *
 * Closed loop (default): every connection keeps `depth` requests outstanding; latency counts
 * from the send() that carries the request.
 * Fixed rate: each connection sends on a schedule (rate / connections per second, evenly
 * spaced); latency counts from the scheduled send time, so a stalled server's queueing shows
 * in the percentiles (no coordinated omission). The worker threads' timer slack is 1 ns, so
 * that sleeping until the next send does not make every send ~50 µs late (the default slack).
 * Latencies go into a log-linear histogram (1/64 precision per power of two), reported as
 * p50/p90/p99/p99.9/max in microseconds.
 *
 * What counts: throughput (ops, gets, hits...) counts the answers received inside the measured
 * window; the latency histogram counts the requests sent (fixed rate: scheduled) inside it, and
 * after the window mcload waits for their answers (and, at a fixed rate, sends the ones still
 * due), up to 5 s; a request still unanswered then counts with the time it has waited so far
 * and in "unanswered". (Counting only what completes inside the window drops the requests a
 * stall at its end holds up: the slowest ones.)
 *
 * Build: scripts/zig cc -O2 -o mcload bench/memcached/mcload.c -lpthread
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEPTH 256
#define RBUF (256 * 1024)
#define WBUF (256 * 1024)
#define HBUCKETS (64 * 64) /* 64 sub-buckets x 64 powers of two */

typedef struct {
  uint64_t counts[HBUCKETS];
  uint64_t total;
  uint64_t max_ns;
} histogram;

static int hist_index(uint64_t ns) {
  if (ns < 64) return (int)ns;
  int p = 63 - __builtin_clzll(ns); /* >= 6 */
  int sub = (int)((ns >> (p - 6)) & 63);
  return (p - 5) * 64 + sub;
}

static uint64_t hist_value(int idx) {
  if (idx < 64) return (uint64_t)idx;
  int p = idx / 64 + 5;
  int sub = idx % 64;
  return ((uint64_t)(64 + sub) << (p - 6)) + ((1ull << (p - 6)) >> 1);
}

static void hist_add(histogram *h, uint64_t ns) {
  int i = hist_index(ns);
  if (i >= HBUCKETS) i = HBUCKETS - 1;
  h->counts[i]++;
  h->total++;
  if (ns > h->max_ns) h->max_ns = ns;
}

static void hist_merge(histogram *into, const histogram *h) {
  for (int i = 0; i < HBUCKETS; i++) into->counts[i] += h->counts[i];
  into->total += h->total;
  if (h->max_ns > into->max_ns) into->max_ns = h->max_ns;
}

static double hist_pct(const histogram *h, double pct) {
  if (h->total == 0) return 0;
  uint64_t want = (uint64_t)ceil(h->total * pct / 100.0);
  if (want == 0) want = 1;
  uint64_t seen = 0;
  for (int i = 0; i < HBUCKETS; i++) {
    seen += h->counts[i];
    /* a bucket's midpoint may lie above the largest value recorded in it */
    if (seen >= want) return (hist_value(i) < h->max_ns ? hist_value(i) : h->max_ns) / 1000.0;
  }
  return h->max_ns / 1000.0;
}

/* ---------------------------------------------------------------- options */
static char host[256] = "127.0.0.1";
static int port = 11211;
static int nconns = 100, nthreads = 1, depth = 1, keyspace = 100000, keylen = 32, vallen = 64;
static double get_ratio = 0.9, duration = 10, warmup = 1, rate = 0;
static int prefill = 0, json = 0;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* ---------------------------------------------------------------- connections */
typedef struct {
  int fd;
  uint64_t rng;
  /* outstanding requests, FIFO: is_get and the time they count from */
  uint8_t kind[MAX_DEPTH];
  uint64_t sent_at[MAX_DEPTH];
  int head, count;
  char *rbuf;
  int rlen;
  char *wbuf;
  int wlen, woff;
  uint64_t next_send; /* fixed rate: scheduled time of the next request */
  uint64_t interval_ns;
} conn;

typedef struct {
  int id;
  conn *conns;
  int n;
  histogram hist;
  uint64_t ops, gets, sets, hits, misses, errors, unanswered;
  pthread_t tid;
} worker;

/* 0 warm-up, 1 measuring, 2 draining (answers to the requests sent in the window), then done */
static _Atomic int phase = 0;
/* The measured window: latencies count for requests sent (scheduled) in [win_start, win_end). */
static _Atomic uint64_t win_start = UINT64_MAX, win_end = UINT64_MAX;
#define DRAIN_NS 5000000000ull
static char *value_block;

static uint64_t xorshift(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

static int make_key(char *dst, uint64_t k) {
  /* fixed-length keys: "key:" + zero-padded number */
  char num[32];
  int n = snprintf(num, sizeof num, "%llu", (unsigned long long)k);
  int pad = keylen - 4 - n;
  memcpy(dst, "key:", 4);
  int p = 4;
  for (int i = 0; i < pad; i++) dst[p++] = '0';
  memcpy(dst + p, num, n);
  return keylen;
}

static int connect_one(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, host, &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, O_NONBLOCK);
  return fd;
}

/* Appends one request to the connection's write buffer. */
/* Buffer sizes per connection: room for every outstanding request and several responses
 * whatever the value size (a fixed 256 KiB overflowed with -d 16 -V 60000). */
static int wcap = WBUF, rcap = RBUF, reqmax = 0;

static void queue_request(conn *c, uint64_t at) {
  int is_get = (double)(xorshift(&c->rng) % 1000000) / 1000000.0 < get_ratio;
  uint64_t k = xorshift(&c->rng) % (uint64_t)keyspace;
  if (c->wlen + reqmax > wcap && c->woff > 0) {
    /* compact: what is still unsent moves to the front */
    memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
    c->wlen -= c->woff;
    c->woff = 0;
  }
  if (c->wlen + reqmax > wcap) {
    fprintf(stderr, "mcload: write buffer full (internal error)\n");
    exit(1);
  }
  char *w = c->wbuf + c->wlen;
  if (is_get) {
    memcpy(w, "get ", 4);
    make_key(w + 4, k);
    memcpy(w + 4 + keylen, "\r\n", 2);
    c->wlen += 6 + keylen;
  } else {
    int n = 4;
    memcpy(w, "set ", 4);
    make_key(w + 4, k);
    n += keylen;
    n += sprintf(w + n, " 0 0 %d\r\n", vallen);
    memcpy(w + n, value_block, vallen);
    n += vallen;
    memcpy(w + n, "\r\n", 2);
    c->wlen += n + 2;
  }
  int slot = (c->head + c->count) % MAX_DEPTH;
  c->kind[slot] = (uint8_t)is_get;
  c->sent_at[slot] = at;
  c->count++;
}

static int flush_writes(conn *c) {
  while (c->woff < c->wlen) {
    ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN) return 0;
      return -1;
    }
    c->woff += (int)n;
  }
  c->woff = c->wlen = 0;
  return 0;
}

/*
 * Parses complete responses at the front of rbuf. Returns the number parsed, or -1 on a
 * protocol error. A get answers "VALUE <key> <flags> <bytes>\r\n<data>\r\nEND\r\n" or
 * "END\r\n"; a set answers "STORED\r\n".
 */
static int parse_responses(worker *w, conn *c, uint64_t t) {
  int done = 0;
  int off = 0;
  while (c->count > 0) {
    char *p = c->rbuf + off;
    int avail = c->rlen - off;
    int is_get = c->kind[c->head];
    int used = 0, hit = 0;
    char *nl = memchr(p, '\n', avail);
    if (!nl) break;
    if (is_get) {
      if (avail >= 5 && memcmp(p, "END\r\n", 5) == 0) {
        used = 5;
      } else if (avail >= 6 && memcmp(p, "VALUE ", 6) == 0) {
        /* bytes is the last number on the line */
        char *q = nl - 1;
        while (q > p && *q != ' ') q--;
        long bytes = strtol(q + 1, NULL, 10);
        int line = (int)(nl - p) + 1;
        if (avail < line + bytes + 2 + 5) break;
        if (memcmp(p + line + bytes + 2, "END\r\n", 5) != 0) return -1;
        used = line + (int)bytes + 2 + 5;
        hit = 1;
      } else {
        w->errors++;
        used = (int)(nl - p) + 1;
      }
    } else {
      if (avail >= 8 && memcmp(p, "STORED\r\n", 8) == 0) used = 8;
      else {
        w->errors++;
        used = (int)(nl - p) + 1;
      }
    }
    off += used;
    uint64_t sent = c->sent_at[c->head];
    if (sent >= win_start && sent < win_end) hist_add(&w->hist, t > sent ? t - sent : 0);
    if (phase == 1) {
      w->ops++;
      if (is_get) {
        w->gets++;
        if (hit) w->hits++;
        else w->misses++;
      } else {
        w->sets++;
      }
    }
    c->head = (c->head + 1) % MAX_DEPTH;
    c->count--;
    done++;
  }
  if (off > 0) {
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
  }
  return done;
}

/* Draining: whether every request sent (scheduled) inside the window has been answered. */
static int drained(worker *w, uint64_t end) {
  for (int i = 0; i < w->n; i++) {
    conn *c = &w->conns[i];
    if (c->count > 0 && c->sent_at[c->head] < end) return 0;
    if (rate > 0 && c->next_send < end) return 0;
  }
  return 1;
}

/* The drain timed out: what is still unanswered counts with the time it has waited so far. */
static void count_unanswered(worker *w, uint64_t end, uint64_t t) {
  uint64_t start = win_start;
  for (int i = 0; i < w->n; i++) {
    conn *c = &w->conns[i];
    for (int k = 0; k < c->count; k++) {
      uint64_t sent = c->sent_at[(c->head + k) % MAX_DEPTH];
      if (sent >= start && sent < end) {
        hist_add(&w->hist, t - sent);
        w->unanswered++;
      }
    }
    if (rate > 0 && c->interval_ns > 0) {
      for (uint64_t s = c->next_send; s < end; s += c->interval_ns) {
        if (s < start) continue;
        hist_add(&w->hist, t - s);
        w->unanswered++;
      }
    }
  }
}

static void *run_worker(void *arg) {
  worker *w = arg;
  /* Sleeps end when due, not up to 50 µs later (the default slack, which every fixed-rate send
     would otherwise add to its latency). */
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  int ep = epoll_create1(0);
  for (int i = 0; i < w->n; i++) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &w->conns[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, w->conns[i].fd, &ev);
  }
  uint64_t start = now_ns();
  for (int i = 0; i < w->n; i++) {
    conn *c = &w->conns[i];
    if (rate > 0) {
      c->interval_ns = (uint64_t)(1e9 * nconns / rate);
      c->next_send = start + (uint64_t)(c->interval_ns * (double)(w->id * w->n + i) / nconns);
    } else {
      uint64_t ts = now_ns();
      for (int d = 0; d < depth; d++) queue_request(c, ts);
      flush_writes(c);
    }
  }
  struct epoll_event evs[512];
  uint64_t drain_until = 0;
  for (;;) {
    int draining = phase == 2;
    uint64_t end = UINT64_MAX;
    if (draining) {
      end = win_end;
      uint64_t t = now_ns();
      if (drain_until == 0) drain_until = t + DRAIN_NS;
      if (drained(w, end)) break;
      if (t >= drain_until) {
        count_unanswered(w, end, t);
        break;
      }
    }
    int n;
    if (rate > 0) {
      /* sleep until the next scheduled send (nanosecond timeout: epoll_pwait2) */
      uint64_t next = UINT64_MAX, t = now_ns();
      for (int i = 0; i < w->n; i++)
        if (w->conns[i].next_send < next) next = w->conns[i].next_send;
      uint64_t wait = next > t ? next - t : 0;
      if (wait > 1000000) wait = 1000000;
      struct timespec to = {.tv_sec = 0, .tv_nsec = (long)wait};
      n = (int)syscall(SYS_epoll_pwait2, ep, evs, 512, &to, NULL, 0);
      if (n < 0) n = 0;
    } else {
      n = epoll_wait(ep, evs, 512, 1);
    }
    uint64_t t = now_ns();
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      for (;;) {
        ssize_t r = recv(c->fd, c->rbuf + c->rlen, rcap - c->rlen, 0);
        if (r > 0) {
          c->rlen += (int)r;
          if (c->rlen == rcap) break;
          continue;
        }
        if (r == 0 || errno != EAGAIN) {
          fprintf(stderr, "mcload: connection closed by the server\n");
          exit(1);
        }
        break;
      }
      int got = parse_responses(w, c, t);
      if (got < 0) {
        fprintf(stderr, "mcload: unexpected response\n");
        exit(1);
      }
      if (rate == 0) {
        /* latency counts from the send that carries the request, not from `t`: the connections
           handled before this one in the turn would otherwise count as server time */
        if (!draining && got > 0) {
          uint64_t ts = now_ns();
          for (int k = 0; k < got; k++) queue_request(c, ts);
        }
        if (flush_writes(c) < 0) exit(1);
      }
    }
    if (rate > 0) {
      /* open loop: send whatever is due (pipelining if the server fell behind) */
      for (int i = 0; i < w->n; i++) {
        conn *c = &w->conns[i];
        int queued = 0;
        while (c->next_send <= t && c->next_send < end && c->count < MAX_DEPTH - 1 && c->wlen - c->woff + reqmax <= wcap) {
          queue_request(c, c->next_send);
          c->next_send += c->interval_ns;
          queued++;
        }
        if (queued && flush_writes(c) < 0) exit(1);
      }
    } else {
      for (int i = 0; i < w->n; i++) {
        if (w->conns[i].wlen > 0 && flush_writes(&w->conns[i]) < 0) exit(1);
      }
    }
  }
  close(ep);
  return NULL;
}

static void do_prefill(void) {
  int fd = connect_one();
  if (fd < 0) {
    perror("mcload: connect");
    exit(1);
  }
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  /* sets go out in batches of up to 1000 or about 4 MiB, whichever is fewer */
  size_t per = (size_t)vallen + keylen + 64;
  int most = (int)((4u << 20) / per);
  if (most < 1) most = 1;
  if (most > 1000) most = 1000;
  char *buf = malloc(per * most);
  char key[256];
  int batch = 0, pending = 0;
  size_t len = 0;
  char rb[65536];
  for (int k = 0; k < keyspace; k++) {
    make_key(key, (uint64_t)k);
    len += sprintf(buf + len, "set %.*s 0 0 %d noreply\r\n", keylen, key, vallen);
    memcpy(buf + len, value_block, vallen);
    len += vallen;
    memcpy(buf + len, "\r\n", 2);
    len += 2;
    if (++batch == most || k == keyspace - 1) {
      if (send(fd, buf, len, 0) != (ssize_t)len) {
        perror("mcload: prefill");
        exit(1);
      }
      len = 0;
      batch = 0;
      pending++;
    }
  }
  /* a final request that answers, so that every set has been processed */
  send(fd, "mn\r\n", 4, 0);
  /* (errors a set may answer, such as SERVER_ERROR out of memory, come before it: the buffer
     keeps only the last bytes read) */
  size_t got = 0;
  for (;;) {
    if (got == sizeof rb) {
      memmove(rb, rb + got - 3, 3);
      got = 3;
    }
    ssize_t r = recv(fd, rb + got, sizeof rb - got, 0);
    if (r <= 0) break;
    got += r;
    if (got >= 4 && memcmp(rb + got - 4, "MN\r\n", 4) == 0) break;
  }
  (void)pending;
  close(fd);
  free(buf);
}

static void usage(void) {
  fprintf(stderr,
          "usage: mcload [-s host:port] [-c conns] [-t threads] [-d depth] [-r get_ratio] [-k keys]\n"
          "              [-K key_len] [-V value_len] [-D seconds] [-W warmup_s] [-R rate] [-P] [-j]\n");
  exit(2);
}

int main(int argc, char **argv) {
  int opt;
  while ((opt = getopt(argc, argv, "s:c:t:d:r:k:K:V:D:W:R:Pjh")) != -1) {
    switch (opt) {
      case 's': {
        char *colon = strrchr(optarg, ':');
        if (!colon) usage();
        *colon = 0;
        snprintf(host, sizeof host, "%s", optarg);
        port = atoi(colon + 1);
        break;
      }
      case 'c': nconns = atoi(optarg); break;
      case 't': nthreads = atoi(optarg); break;
      case 'd': depth = atoi(optarg); break;
      case 'r': get_ratio = atof(optarg); break;
      case 'k': keyspace = atoi(optarg); break;
      case 'K': keylen = atoi(optarg); break;
      case 'V': vallen = atoi(optarg); break;
      case 'D': duration = atof(optarg); break;
      case 'W': warmup = atof(optarg); break;
      case 'R': rate = atof(optarg); break;
      case 'P': prefill = 1; break;
      case 'j': json = 1; break;
      default: usage();
    }
  }
  if (nconns < 1 || nthreads < 1 || depth < 1 || depth >= MAX_DEPTH || keylen < 12 || keylen > 250 || vallen < 1) usage();
  if (nthreads > nconns) nthreads = nconns;
  value_block = malloc(vallen);
  for (int i = 0; i < vallen; i++) value_block[i] = 'a' + i % 26;
  if (prefill) do_prefill();

  worker *ws = calloc(nthreads, sizeof(worker));
  reqmax = vallen + keylen + 64;
  if ((depth + 2) * reqmax > wcap) wcap = (depth + 2) * reqmax;
  if (4 * reqmax > rcap) rcap = 4 * reqmax;
  conn *all = calloc(nconns, sizeof(conn));
  for (int i = 0; i < nconns; i++) {
    all[i].fd = connect_one();
    if (all[i].fd < 0) {
      perror("mcload: connect");
      return 1;
    }
    all[i].rng = 0x9e3779b97f4a7c15ull * (i + 1);
    all[i].rbuf = malloc(rcap);
    all[i].wbuf = malloc(wcap);
  }
  int per = nconns / nthreads, extra = nconns % nthreads, at = 0;
  for (int t = 0; t < nthreads; t++) {
    ws[t].id = t;
    ws[t].n = per + (t < extra);
    ws[t].conns = all + at;
    at += ws[t].n;
    pthread_create(&ws[t].tid, NULL, run_worker, &ws[t]);
  }
  struct timespec ts;
  ts.tv_sec = (time_t)warmup;
  ts.tv_nsec = (long)((warmup - ts.tv_sec) * 1e9);
  nanosleep(&ts, NULL);
  uint64_t t0 = now_ns();
  win_start = t0;
  phase = 1;
  ts.tv_sec = (time_t)duration;
  ts.tv_nsec = (long)((duration - ts.tv_sec) * 1e9);
  nanosleep(&ts, NULL);
  uint64_t t1 = now_ns();
  win_end = t1;
  phase = 2;
  histogram h = {0};
  uint64_t ops = 0, gets = 0, sets = 0, hits = 0, misses = 0, errors = 0, unanswered = 0;
  for (int t = 0; t < nthreads; t++) {
    pthread_join(ws[t].tid, NULL);
    hist_merge(&h, &ws[t].hist);
    ops += ws[t].ops;
    gets += ws[t].gets;
    sets += ws[t].sets;
    hits += ws[t].hits;
    misses += ws[t].misses;
    errors += ws[t].errors;
    unanswered += ws[t].unanswered;
  }
  double secs = (t1 - t0) / 1e9;
  if (json) {
    printf("{\"ops\":%llu,\"seconds\":%.3f,\"ops_per_s\":%.0f,\"gets\":%llu,\"sets\":%llu,\"hits\":%llu,\"misses\":%llu,"
           "\"errors\":%llu,\"unanswered\":%llu,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f}\n",
           (unsigned long long)ops, secs, ops / secs, (unsigned long long)gets, (unsigned long long)sets,
           (unsigned long long)hits, (unsigned long long)misses, (unsigned long long)errors, (unsigned long long)unanswered, hist_pct(&h, 50),
           hist_pct(&h, 90), hist_pct(&h, 99), hist_pct(&h, 99.9), h.max_ns / 1000.0);
  } else {
    printf("ops %llu in %.2fs: %.0f ops/s (gets %llu, hits %llu, misses %llu, sets %llu, errors %llu, unanswered %llu)\n",
           (unsigned long long)ops, secs, ops / secs, (unsigned long long)gets, (unsigned long long)hits,
           (unsigned long long)misses, (unsigned long long)sets, (unsigned long long)errors,
           (unsigned long long)unanswered);
    printf("latency us: p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n", hist_pct(&h, 50), hist_pct(&h, 90),
           hist_pct(&h, 99), hist_pct(&h, 99.9), h.max_ns / 1000.0);
  }
  return 0;
}
