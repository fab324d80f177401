/*
** test_batch.c -- tt_pool_submit_many: many ops queued under one hold of
** the pool's lock, with every guarantee of single submissions (order,
** ids, events, stats and the accounting identity, queue capacity,
** quotas, a closed pool, the overflow store) and the end reports that
** tether.map waits on.
**
** Task functions never use CHECK (it is not thread-safe): they record
** what they see in atomics that the test reads afterwards.
*/
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "harness.h"

static tt_key key_tenant = {NULL, "tenant", 6};

static atomic_int drops;
static atomic_int ran;
static atomic_int order[64];
static atomic_int norder;

static void count_drop(void *arg) {
  (void)arg;
  atomic_fetch_add(&drops, 1);
}

/* adds_up checks the accounting identity of 'p' as it stands now. */
static bool adds_up(tt_pool *p) {
  tt_pool_stats s;
  tt_pool_stats_get(p, &s);
  return th_adds_up(&s);
}

/* fn_record records the order in which ops run (its argument is the
** item's number). */
static int fn_record(tt_ctx *ctx, void *arg, tt_obj **out) {
  int k = atomic_fetch_add(&norder, 1);
  (void)ctx;
  (void)out;
  if (k < 64) atomic_store(&order[k], (int)(intptr_t)arg);
  atomic_fetch_add(&ran, 1);
  return TT_OK;
}

/* fn_gate waits until the gate context (its argument) is canceled. */
static int fn_gate(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)out;
  tt_ctx_wait(arg, 10);
  return TT_OK;
}

static int fn_fail(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  *out = (tt_obj *)tt_error_new(TT_EFAILED, "broken", NULL);
  return TT_EFAILED;
}

typedef struct evlog {
  pthread_mutex_t mu;
  int n[TT_NEVENTS];
  uint64_t last_id;
  bool ids_rise;
} evlog;

static void log_event(const tt_event *ev, void *ud) {
  evlog *l = ud;
  CHECK_EQ(pthread_mutex_lock(&l->mu), 0);
  l->n[ev->kind]++;
  if (ev->kind == TT_EV_SUBMITTED) {
    if (ev->id <= l->last_id) l->ids_rise = false;
    l->last_id = ev->id;
  }
  CHECK_EQ(pthread_mutex_unlock(&l->mu), 0);
}

static int evcount(evlog *l, int kind) {
  int c;
  CHECK_EQ(pthread_mutex_lock(&l->mu), 0);
  c = l->n[kind];
  CHECK_EQ(pthread_mutex_unlock(&l->mu), 0);
  return c;
}

/* A pool with one worker held by a gate op, so that what a batch queues
** stays queued until the gate opens. */
static tt_pool *gated_pool(int queue, tt_ctx **gate, tt_handle **gh,
                           const tt_pool_opts *base) {
  tt_pool_opts o;
  tt_pool *p;
  if (base != NULL)
    o = *base;
  else
    memset(&o, 0, sizeof o);
  o.workers = 1;
  o.queue = queue;
  p = tt_pool_new(&o, NULL);
  *gate = tt_with_cancel(tt_background());
  *gh = tt_pool_submit(p, tt_background(), NULL, fn_gate, *gate, NULL, NULL);
  while (tt_handle_state(*gh) != TT_H_RUNNING) th_sleep_us(1000);
  return p;
}

static void ops_of(tt_batch_op *ops, size_t n) {
  size_t i;
  memset(ops, 0, n * sizeof *ops);
  for (i = 0; i < n; i++) ops[i].arg = (void *)(intptr_t)(i + 1);
}

TEST(batch_runs_in_order_with_one_event_each) {
  tt_ctx *gate;
  tt_handle *gh, *hs[40];
  tt_batch_op ops[40];
  evlog log;
  size_t k, i;
  int err;
  tt_pool *p = gated_pool(64, &gate, &gh, NULL);
  memset(&log, 0, sizeof log);
  log.ids_rise = true;
  CHECK_EQ(pthread_mutex_init(&log.mu, NULL), 0);
  tt_pool_observe(p, log_event, &log);
  atomic_store(&ran, 0);
  atomic_store(&norder, 0);
  atomic_store(&drops, 0);
  ops_of(ops, 40);
  k = tt_pool_submit_many(p, tt_background(), NULL, fn_record, count_drop,
                          ops, 40, NULL, hs, &err);
  CHECK_EQ(k, 40);
  CHECK_EQ(err, TT_OK);
  CHECK(adds_up(p));
  tt_cancel(gate, NULL);
  for (i = 0; i < k; i++) {
    CHECK(tt_latch_wait(tt_handle_latch(hs[i]), 10));
    CHECK_EQ(tt_handle_state(hs[i]), TT_H_DONE);
    CHECK(tt_pool_op_id(hs[i]) > tt_pool_op_id(gh));
    if (i > 0) CHECK(tt_pool_op_id(hs[i]) > tt_pool_op_id(hs[i - 1]));
    tt_unref(hs[i]);
  }
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  /* One worker: the ops ran in the order of the list. */
  for (i = 0; i < 40; i++) CHECK_EQ(atomic_load(&order[i]), (int)i + 1);
  CHECK_EQ(atomic_load(&drops), 40);
  CHECK_EQ(evcount(&log, TT_EV_SUBMITTED), 40);  /* the gate came before */
  CHECK_EQ(evcount(&log, TT_EV_COMPLETED), 41);
  CHECK(log.ids_rise);
  CHECK(adds_up(p));
  tt_unref(gh);
  tt_unref(gate);
  tt_unref(p);
  CHECK_EQ(pthread_mutex_destroy(&log.mu), 0);
}

TEST(batch_longer_than_a_chunk) {
  enum { N = TT_BATCH_CHUNK * 3 + 7 };
  tt_pool_opts o;
  tt_pool *p;
  tt_handle **hs = calloc(N, sizeof *hs);
  tt_batch_op *ops = calloc(N, sizeof *ops);
  tt_pool_stats st;
  size_t k, i;
  int err;
  memset(&o, 0, sizeof o);
  o.workers = 2;
  o.queue = N;
  p = tt_pool_new(&o, NULL);
  atomic_store(&drops, 0);
  ops_of(ops, N);
  k = tt_pool_submit_many(p, tt_background(), NULL, fn_record, count_drop,
                          ops, N, NULL, hs, &err);
  CHECK_EQ(k, N);
  CHECK_EQ(err, TT_OK);
  CHECK_EQ(tt_pool_drain(p, NULL, 30), TT_OK);
  tt_pool_stats_get(p, &st);
  CHECK_EQ(st.submitted, N);
  CHECK_EQ(st.completed, N);
  CHECK_EQ(atomic_load(&drops), N);
  for (i = 0; i < k; i++) tt_unref(hs[i]);
  tt_unref(p);
  free(hs);
  free(ops);
}

TEST(batch_stops_at_a_full_queue) {
  tt_ctx *gate;
  tt_handle *gh, *hs[10];
  tt_batch_op ops[10];
  tt_pool_stats st;
  size_t k, i;
  int err;
  tt_pool *p = gated_pool(4, &gate, &gh, NULL);
  atomic_store(&drops, 0);
  ops_of(ops, 10);
  k = tt_pool_submit_many(p, tt_background(), NULL, fn_record, count_drop,
                          ops, 10, NULL, hs, &err);
  CHECK_EQ(k, 4);
  CHECK_EQ(err, TT_EQUEUE_FULL);
  tt_pool_stats_get(p, &st);
  CHECK_EQ(st.rejected, 1);
  CHECK_EQ(st.submitted, 5);
  CHECK(adds_up(p));
  /* The refused ops' arguments are still the caller's. */
  CHECK_EQ(atomic_load(&drops), 0);
  tt_cancel(gate, NULL);
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  CHECK_EQ(atomic_load(&drops), 4);
  for (i = 0; i < k; i++) tt_unref(hs[i]);
  /* A closed pool takes none. */
  k = tt_pool_submit_many(p, tt_background(), NULL, fn_record, count_drop,
                          ops, 10, NULL, hs, &err);
  CHECK_EQ(k, 0);
  CHECK_EQ(err, TT_ECLOSED);
  /* Nothing to submit is no refusal; a bad argument is. */
  CHECK_EQ(tt_pool_submit_many(p, tt_background(), NULL, fn_record, NULL,
                               ops, 0, NULL, hs, &err), 0);
  CHECK_EQ(err, TT_OK);
  CHECK_EQ(tt_pool_submit_many(p, tt_background(), NULL, NULL, NULL, ops, 1,
                               NULL, hs, &err), 0);
  CHECK_EQ(err, TT_EINVAL);
  tt_unref(gh);
  tt_unref(gate);
  tt_unref(p);
}

TEST(batch_waits_for_room) {
  tt_pool_opts o;
  tt_pool *p;
  tt_handle *hs[50];
  tt_batch_op ops[50];
  tt_submit_opts so;
  size_t k, i;
  int err;
  memset(&o, 0, sizeof o);
  o.workers = 2;
  o.queue = 3;
  p = tt_pool_new(&o, NULL);
  ops_of(ops, 50);
  memset(&so, 0, sizeof so);
  so.wait = 30;
  /* Far more than the queue holds: each op waits for room, which the
  ** workers make as they take the ops already queued. */
  k = tt_pool_submit_many(p, tt_background(), &so, fn_record, NULL, ops, 50,
                          NULL, hs, &err);
  CHECK_EQ(k, 50);
  CHECK_EQ(err, TT_OK);
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  for (i = 0; i < k; i++) tt_unref(hs[i]);
  tt_unref(p);
}

TEST(batch_counts_against_quotas) {
  tt_pool_opts o;
  tt_ctx *gate, *parent;
  tt_handle *gh, *hs[6];
  tt_batch_op ops[6];
  tt_bytes *b = tt_bytes_new("acme", 4);
  size_t k, i;
  int err;
  tt_pool *p;
  memset(&o, 0, sizeof o);
  o.tenant_key = key_tenant;
  o.quota_default = 3;
  p = gated_pool(16, &gate, &gh, &o);
  parent = tt_with_value(tt_background(), &key_tenant, &b->hdr);
  tt_unref(b);
  ops_of(ops, 6);
  k = tt_pool_submit_many(p, parent, NULL, fn_record, NULL, ops, 6, NULL, hs,
                          &err);
  CHECK_EQ(k, 3);
  CHECK_EQ(err, TT_EQUOTA);
  CHECK(adds_up(p));
  tt_cancel(gate, NULL);
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  for (i = 0; i < k; i++) tt_unref(hs[i]);
  tt_unref(parent);
  tt_unref(gh);
  tt_unref(gate);
  tt_unref(p);
}

/* An end report: the indices in the order the ops ended. */
typedef struct ends {
  tt_obj hdr;
  pthread_mutex_t mu;
  size_t n, at[16];
  int state[16];
} ends;

static void ends_free(tt_obj *o) {
  ends *e = (ends *)o;
  CHECK_EQ(pthread_mutex_destroy(&e->mu), 0);
  free(e);
}

static const tt_type ends_type = {"test.Ends", ends_free, NULL, NULL};

static void on_end(tt_obj *ud, size_t i, tt_handle *h) {
  ends *e = (ends *)ud;
  CHECK_EQ(pthread_mutex_lock(&e->mu), 0);
  if (e->n < 16) {
    e->state[e->n] = tt_handle_state(h);
    e->at[e->n++] = i;
  }
  CHECK_EQ(pthread_mutex_unlock(&e->mu), 0);
}

TEST(batch_reports_each_end_once) {
  tt_ctx *gate;
  tt_handle *gh, *hs[4];
  tt_batch_op ops[4];
  tt_batch_end be;
  ends *e = calloc(1, sizeof *e);
  size_t k, i;
  int err;
  tt_pool *p = gated_pool(8, &gate, &gh, NULL);
  tt_obj_init(&e->hdr, &ends_type);
  CHECK_EQ(pthread_mutex_init(&e->mu, NULL), 0);
  ops_of(ops, 4);
  be.end = on_end;
  be.ud = &e->hdr;
  be.index0 = 10;
  k = tt_pool_submit_many(p, tt_background(), NULL, fn_fail, NULL, ops, 2,
                          &be, hs, &err);
  CHECK_EQ(k, 2);
  be.index0 = 12;
  k = tt_pool_submit_many(p, tt_background(), NULL, fn_record, NULL, ops, 2,
                          &be, hs + 2, &err);
  CHECK_EQ(k, 2);
  /* A stopped op ends too. */
  CHECK(tt_handle_stop(hs[3]));
  tt_cancel(gate, NULL);
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  CHECK_EQ(e->n, 4);
  /* The stop came first; then, one worker, the order of the queue. */
  CHECK_EQ(e->at[0], 13);
  CHECK_EQ(e->state[0], TT_H_STOPPED);
  CHECK_EQ(e->at[1], 10);
  CHECK_EQ(e->state[1], TT_H_FAILED);
  CHECK_EQ(e->at[2], 11);
  CHECK_EQ(e->at[3], 12);
  CHECK_EQ(e->state[3], TT_H_DONE);
  for (i = 0; i < 4; i++) tt_unref(hs[i]);
  tt_unref(gh);
  tt_unref(gate);
  tt_unref(p);
  /* The ops' references to the report went with them. */
  CHECK_EQ(atomic_load(&e->hdr.refs), 1);
  tt_unref(e);
}

TEST(batch_spills_what_the_queue_cannot_take) {
  char dir[] = "/tmp/tether-batch-XXXXXX", url[300], msg[256];
  tt_pool_opts o;
  tt_store *s;
  tt_ctx *gate;
  tt_handle *gh, *hs[6];
  tt_batch_op ops[6];
  tt_submit_opts so;
  tt_buf args[6];
  tt_pool_stats st;
  size_t k, i;
  int err, spilled = 0;
  tt_pool *p;
  REQUIRE(mkdtemp(dir) != NULL);
  snprintf(url, sizeof url, "sqlite:%s/s.db", dir);
  s = tt_store_open(url, NULL, &err, msg, sizeof msg);
  REQUIRE(s != NULL);
  memset(&o, 0, sizeof o);
  o.name = "bp";
  o.overflow = s;
  p = gated_pool(2, &gate, &gh, &o);
  atomic_store(&drops, 0);
  ops_of(ops, 6);
  for (i = 0; i < 6; i++) {
    tt_buf_init(&args[i]);
    tt_wire_varint(&args[i], 1);
    tt_wire_int(&args[i], (int64_t)i);
    ops[i].spill_args = args[i].data;
    ops[i].spill_args_len = args[i].len;
  }
  ops[5].spill_args = NULL;  /* this one cannot travel */
  memset(&so, 0, sizeof so);
  so.name = "job";
  so.spill_fn = "jobs:run";
  k = tt_pool_submit_many(p, tt_background(), &so, fn_record, count_drop,
                          ops, 6, NULL, hs, &err);
  /* Two queued, three spilled, the last refused. */
  CHECK_EQ(k, 5);
  CHECK_EQ(err, TT_EQUEUE_FULL);
  CHECK_EQ(atomic_load(&drops), 3);  /* spilled ops never run here */
  for (i = 2; i < k; i++) {
    tt_obj *res = NULL;
    CHECK(tt_latch_wait(tt_handle_latch(hs[i]), 10));
    CHECK_EQ(tt_handle_result(hs[i], &res), TT_H_FAILED);
    if (res != NULL && ((tt_error *)res)->code == TT_ESPILLED) spilled++;
    tt_unref(res);
  }
  CHECK_EQ(spilled, 3);
  tt_pool_stats_get(p, &st);
  CHECK_EQ(st.spilled, 3);
  CHECK_EQ(st.rejected, 1);
  CHECK(adds_up(p));
  tt_cancel(gate, NULL);
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  CHECK(adds_up(p));
  for (i = 0; i < k; i++) tt_unref(hs[i]);
  for (i = 0; i < 6; i++) tt_buf_free(&args[i]);
  tt_unref(gh);
  tt_unref(gate);
  tt_unref(p);
  tt_unref(s);
  snprintf(url, sizeof url, "rm -rf '%s'", dir);
  CHECK_EQ(system(url), 0);
}

TEST_MAIN()
