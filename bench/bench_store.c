/*
** bench_store.c -- durable overflow, measured through the C API: spills
** per second with zero loss and drain rates, for SQLite (group commit at
** synchronous=FULL) and Redis (pipelined, appendfsync everysec and
** always), each next to its floor in the same run: a plain INSERT per op
** in its own transaction, and a plain XADD per op.
**
** Usage: bench_store DIR [REDIS_PORT]
** Prints lines "c.<metric> <value>" (rates in ops/s).
**
** Spills: PRODUCERS threads submit named ops to a pool whose only worker
** is held and whose queue is full, so that every submission spills; the
** rate is from the first submission to the last handle resolved
** "spilled", and the store's depth must then equal the count (zero
** loss), else the program fails.  Drain: tt_pool_drain_store of those
** records into a pool of 2 workers running a no-op.
*/
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tether.h"

#define PRODUCERS 8

static const char *dir;

static void die(const char *what) {
  fprintf(stderr, "bench_store: %s\n", what);
  exit(1);
}

static int hold(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  *out = NULL;
  while (!atomic_load((_Atomic int *)arg)) usleep(1000);
  return TT_OK;
}

static int noop(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  *out = NULL;
  return TT_OK;
}

/* Each producer keeps at most WINDOW spills outstanding: it goes on
** submitting while earlier spills commit, and waits for the oldest one
** only when its window is full (as a service whose callers each wait
** for their own answer). */
#define WINDOW 4096

typedef struct prod {
  tt_pool *p;
  int n;
  tt_handle **h;           /* a ring of WINDOW */
  int bad;
} prod;

static void settle_one(prod *pr, tt_handle *h) {
  tt_obj *r = NULL;
  tt_latch_wait(tt_handle_latch(h), -1);
  tt_handle_result(h, &r);
  if (r == NULL || ((tt_error *)r)->code != TT_ESPILLED) pr->bad++;
  tt_unref(r);
  tt_unref(h);
}

static tt_buf args;

static void *producer(void *arg) {
  prod *pr = arg;
  tt_submit_opts so;
  int i, err;
  memset(&so, 0, sizeof so);
  so.name = "op";
  so.spill_fn = "bench:op";
  so.spill_args = args.data;
  so.spill_args_len = args.len;
  for (i = 0; i < pr->n; i++) {
    tt_handle **slot = &pr->h[i % WINDOW];
    if (*slot != NULL) settle_one(pr, *slot);
    *slot = tt_pool_submit(pr->p, tt_background(), &so, noop, NULL, NULL,
                           &err);
    if (*slot == NULL) die("a submission was refused");
  }
  for (i = 0; i < WINDOW; i++)
    if (pr->h[i] != NULL) settle_one(pr, pr->h[i]);
  return NULL;
}

/* spill_rate spills 'n' ops into 's' from PRODUCERS threads and returns
** ops/s; it fails unless every op was committed. */
static double spill_rate(tt_store *s, const char *pool, int n) {
  tt_pool_opts po;
  tt_pool *p;
  prod pr[PRODUCERS];
  pthread_t t[PRODUCERS];
  _Atomic int gate = 0;
  tt_handle *h0, *h1;
  tt_submit_opts so;
  tt_store_stats st;
  int err, i, per = n / PRODUCERS;
  double t0, t1;
  memset(&po, 0, sizeof po);
  po.name = pool;
  po.workers = 1;
  po.queue = 1;
  po.overflow = s;
  po.spill_timeout = 60;
  p = tt_pool_new(&po, &err);
  if (p == NULL) die("no pool");
  memset(&so, 0, sizeof so);
  h0 = tt_pool_submit(p, tt_background(), &so, hold, (void *)&gate, NULL,
                      &err);
  while (tt_handle_state(h0) != TT_H_RUNNING) usleep(100);
  h1 = tt_pool_submit(p, tt_background(), &so, hold, (void *)&gate, NULL,
                      &err);
  t0 = tt_now();
  for (i = 0; i < PRODUCERS; i++) {
    pr[i].p = p;
    pr[i].n = per;
    pr[i].bad = 0;
    pr[i].h = calloc(WINDOW, sizeof *pr[i].h);
    pthread_create(&t[i], NULL, producer, &pr[i]);
  }
  for (i = 0; i < PRODUCERS; i++) pthread_join(t[i], NULL);
  t1 = tt_now();
  for (i = 0; i < PRODUCERS; i++) {
    if (pr[i].bad > 0) die("a spill was not committed");
    free(pr[i].h);
  }
  atomic_store(&gate, 1);
  tt_pool_drain(p, NULL, -1);
  tt_unref(h0);
  tt_unref(h1);
  tt_unref(p);
  if (tt_store_stats_get(s, pool, &st) != TT_OK ||
      st.depth != (uint64_t)(per * PRODUCERS))
    die("lost spills: the store's depth is not the count");
  return per * PRODUCERS / (t1 - t0);
}

static int prepare(void *ud, const tt_record *r, const tt_claim *c,
                   tt_ctx **parent, tt_fn *fn, void **arg, tt_drop *drop,
                   char *why, size_t n) {
  (void)ud; (void)r; (void)c; (void)parent; (void)why; (void)n;
  *fn = noop;
  *arg = NULL;
  *drop = NULL;
  return TT_OK;
}

static double drain_rate(tt_store *s, const char *pool, int n) {
  tt_pool_opts po;
  tt_pool *p;
  tt_drain_opts o;
  tt_drain_report rep;
  const char *allow[] = {"bench"};
  int err;
  double t0, t1;
  memset(&po, 0, sizeof po);
  po.workers = 2;
  po.queue = 256;
  p = tt_pool_new(&po, &err);
  memset(&o, 0, sizeof o);
  o.pool = pool;
  o.allow = allow;
  o.nallow = 1;
  o.batch = 256;
  o.prepare = prepare;
  t0 = tt_now();
  if (tt_pool_drain_store(p, s, NULL, &o, &rep) != TT_OK) die("drain");
  t1 = tt_now();
  if (rep.completed != (uint64_t)n) die("drain: not every op completed");
  tt_pool_drain(p, NULL, -1);
  tt_unref(p);
  return n / (t1 - t0);
}

static tt_store *open_store(const char *url) {
  char msg[256];
  int err;
  tt_store *s = tt_store_open(url, NULL, &err, msg, sizeof msg);
  if (s == NULL) die(msg);
  return s;
}

/* The SQLite floor: one INSERT per op, each in its own transaction, at
** synchronous=FULL in WAL mode. */
static double sqlite_floor(int n) {
  char path[512];
  sqlite3 *db;
  sqlite3_stmt *st;
  tt_buf rec = TT_BUF_INIT;
  tt_record r;
  int i;
  double t0, t1;
  memset(&r, 0, sizeof r);
  r.fn = "bench:op";
  r.args = args.data;
  r.args_len = args.len;
  tt_record_encode(&r, &rec);
  snprintf(path, sizeof path, "%s/floor.db", dir);
  unlink(path);
  if (sqlite3_open(path, &db) != SQLITE_OK) die("floor open");
  sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
               "CREATE TABLE q(id INTEGER PRIMARY KEY, pool TEXT, rec BLOB,"
               " enqueued REAL)", NULL, NULL, NULL);
  sqlite3_prepare_v2(db, "INSERT INTO q(pool, rec, enqueued) VALUES "
                     "('p', ?1, ?2)", -1, &st, NULL);
  t0 = tt_now();
  for (i = 0; i < n; i++) {
    sqlite3_reset(st);
    sqlite3_bind_blob(st, 1, rec.data, (int)rec.len, SQLITE_STATIC);
    sqlite3_bind_double(st, 2, tt_wall());
    if (sqlite3_step(st) != SQLITE_DONE) die("floor insert");
  }
  t1 = tt_now();
  sqlite3_finalize(st);
  sqlite3_close(db);
  tt_buf_free(&rec);
  return n / (t1 - t0);
}

/* The Redis floor: one XADD per op, waiting for each reply. */
static double redis_floor(int port, int n) {
  redisContext *c = redisConnect("127.0.0.1", port);
  tt_buf rec = TT_BUF_INIT;
  tt_record r;
  int i;
  double t0, t1;
  if (c == NULL || c->err) die("redis floor connect");
  memset(&r, 0, sizeof r);
  r.fn = "bench:op";
  r.args = args.data;
  r.args_len = args.len;
  tt_record_encode(&r, &rec);
  t0 = tt_now();
  for (i = 0; i < n; i++) {
    redisReply *y = redisCommand(c, "XADD floor * rec %b", rec.data,
                                 rec.len);
    if (y == NULL || y->type != REDIS_REPLY_STRING) die("floor XADD");
    freeReplyObject(y);
  }
  t1 = tt_now();
  freeReplyObject(redisCommand(c, "DEL floor"));
  redisFree(c);
  tt_buf_free(&rec);
  return n / (t1 - t0);
}

static void redis_config(int port, const char *fsync) {
  redisContext *c = redisConnect("127.0.0.1", port);
  if (c == NULL || c->err) die("redis connect");
  freeReplyObject(redisCommand(c, "CONFIG SET appendfsync %s", fsync));
  redisFree(c);
}

int main(int argc, char **argv) {
  char url[600];
  tt_store *s;
  int n = 200000, port = argc > 2 ? atoi(argv[2]) : 0;
  const char *scale = getenv("BENCH_STORE_OPS");
  if (argc < 2) die("usage: bench_store DIR [REDIS_PORT]");
  dir = argv[1];
  if (scale != NULL && atoi(scale) > 0) n = atoi(scale);
  n -= n % PRODUCERS;
  /* A 64-byte-ish op: an order id and an amount. */
  tt_wire_varint(&args, 2);
  tt_wire_str(&args, "order-0000000000000000000000000000", 34);
  tt_wire_int(&args, 12345);

  snprintf(url, sizeof url, "sqlite:%s/bench.db", dir);
  unlink(url + 7);
  s = open_store(url);
  printf("c.sqlite_spill_full %.0f\n", spill_rate(s, "a", n));
  fflush(stdout);
  printf("c.sqlite_drain %.0f\n", drain_rate(s, "a", n));
  fflush(stdout);
  tt_unref(s);
  printf("c.sqlite_floor_full %.0f\n", sqlite_floor(n / 40));
  fflush(stdout);

  if (port > 0) {
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0?prefix=bench", port);
    s = open_store(url);
    redis_config(port, "everysec");
    printf("c.redis_spill_everysec %.0f\n", spill_rate(s, "e", n));
    fflush(stdout);
    printf("c.redis_drain %.0f\n", drain_rate(s, "e", n));
    fflush(stdout);
    printf("c.redis_floor_everysec %.0f\n", redis_floor(port, n / 10));
    fflush(stdout);
    redis_config(port, "always");
    printf("c.redis_spill_always %.0f\n", spill_rate(s, "w", n / 2));
    fflush(stdout);
    printf("c.redis_floor_always %.0f\n", redis_floor(port, n / 40));
    fflush(stdout);
    tt_unref(s);
  }
  tt_buf_free(&args);
  tt_shutdown();
  return 0;
}
