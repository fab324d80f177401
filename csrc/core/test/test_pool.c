/*
** test_pool.c -- worker pools: queueing, refusals, quotas, priority
** classes, retries, dead letters, causes, drain, stats, idle reports,
** events, shutdown, and attempts stopped at their deadline.
**
** Timing checks are lower bounds only; upper bounds would fail on a busy
** machine.  Task functions never use CHECK (it is not thread-safe): they
** record what they see in atomics that the test reads afterwards.
*/
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"  /* tt__after_func_now, to hold the timer thread */

static tt_key key_tenant = {NULL, "tenant", 6};

static atomic_int drops;

static void count_drop(void *arg) {
  (void)arg;
  atomic_fetch_add(&drops, 1);
}

static tt_pool_stats stats(tt_pool *p) {
  tt_pool_stats s;
  tt_pool_stats_get(p, &s);
  return s;
}

static tt_ctx *with_tenant(const char *name) {
  tt_bytes *b = tt_bytes_new(name, strlen(name));
  tt_ctx *c = tt_with_value(tt_background(), &key_tenant, &b->hdr);
  tt_unref(b);
  return c;
}

static tt_handle *submit(tt_pool *p, tt_ctx *parent, const char *name,
                         tt_fn fn, void *arg, int *err) {
  tt_submit_opts so;
  memset(&so, 0, sizeof so);
  so.name = name;
  return tt_pool_submit(p, parent, &so, fn, arg, count_drop, err);
}

static bool wait_handle(tt_handle *h) {
  return h != NULL && tt_latch_wait(tt_handle_latch(h), 10);
}

/* {====================================================================
** Task functions
** ===================================================================== */

static int fn_ok(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  (void)out;
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

/* fn_until_done returns once its op context ends, with its error. */
static int fn_until_done(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)arg;
  (void)out;
  while (tt_ctx_err(ctx) == 0) tt_ctx_wait(ctx, 0.01);
  return tt_ctx_err(ctx);
}

/* fn_graceful loops on its context and stops cleanly once it ends. */
static atomic_int graceful;

static int fn_graceful(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)arg;
  (void)out;
  while (tt_ctx_err(ctx) == 0) tt_ctx_wait(ctx, 0.01);
  atomic_fetch_add(&graceful, 1);
  return TT_OK;
}

/* }==================================================================== */


TEST(options_are_validated) {
  tt_pool_opts o;
  tt_class_opts cls[2] = {{"high", 2, false}, {"low", 2, false}};
  tt_class_opts dup[2] = {{"a", 1, false}, {"a", 1, false}};
  int err = 0;
  memset(&o, 0, sizeof o);
  o.workers = -1;
  CHECK(tt_pool_new(&o, &err) == NULL);
  CHECK_EQ(err, TT_EINVAL);
  memset(&o, 0, sizeof o);
  o.queue = -3;
  CHECK(tt_pool_new(&o, &err) == NULL);
  CHECK_EQ(err, TT_EINVAL);
  memset(&o, 0, sizeof o);
  o.classes = cls;
  o.nclasses = 2;
  o.workers = 5;
  CHECK(tt_pool_new(&o, &err) == NULL);
  CHECK_EQ(err, TT_EINVAL);
  o.classes = dup;
  o.workers = 0;
  CHECK(tt_pool_new(&o, &err) == NULL);
  CHECK_EQ(err, TT_EINVAL);
  memset(&o, 0, sizeof o);
  o.retry.attempts = 2;
  o.retry.jitter = 1.5;
  CHECK(tt_pool_new(&o, &err) == NULL);
  CHECK_EQ(err, TT_EINVAL);
  o.retry.jitter = 0;
  o.retry.backoff = -1;
  CHECK(tt_pool_new(&o, &err) == NULL);
  CHECK_EQ(err, TT_EINVAL);
  memset(&o, 0, sizeof o);
  o.classes = cls;
  o.nclasses = 2;
  o.workers = 4;
  {
    tt_pool *p = tt_pool_new(&o, &err);
    char buf[64];
    CHECK(p != NULL);
    CHECK_EQ(err, TT_OK);
    CHECK(strcmp(tt_pool_name(p), "pool") == 0);
    tt_describe(p, buf, sizeof buf);
    CHECK(strcmp(buf, "tether.Pool 'pool' (open)") == 0);
    tt_unref(p);
  }
  {
    tt_pool *p = tt_pool_new(NULL, &err);  /* all defaults */
    CHECK(p != NULL);
    tt_unref(p);
  }
}

/* Scenario 7: five workers, a queue of twenty, a hundred submissions
** retrying on queue_full; each runs exactly once. */
static atomic_int runs7[100];

static int fn_count7(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)out;
  atomic_fetch_add(&runs7[(intptr_t)arg], 1);
  th_sleep_us(500);
  return TT_OK;
}

TEST(scenario7_hundred_submissions_each_run_once) {
  tt_pool_opts o;
  tt_pool *p;
  tt_pool_stats s;
  int i, full = 0;
  memset(&o, 0, sizeof o);
  o.name = "s7";
  o.workers = 5;
  o.queue = 20;
  p = tt_pool_new(&o, NULL);
  for (i = 0; i < 100; i++) atomic_store(&runs7[i], 0);
  for (i = 0; i < 100; i++) {
    for (;;) {
      int err;
      tt_handle *h = tt_pool_submit(p, tt_background(), NULL, fn_count7,
                                    (void *)(intptr_t)i, NULL, &err);
      if (h != NULL) {
        tt_unref(h);
        break;
      }
      CHECK_EQ(err, TT_EQUEUE_FULL);
      full++;
      th_sleep_us(200);
    }
  }
  CHECK_EQ(tt_pool_drain(p, NULL, -1), TT_OK);
  for (i = 0; i < 100; i++) CHECK_EQ(atomic_load(&runs7[i]), 1);
  s = stats(p);
  CHECK_EQ(s.submitted, 100);
  CHECK_EQ(s.completed, 100);
  CHECK_EQ(s.rejected, full);
  CHECK_EQ(s.queued + s.inflight, 0);
  CHECK(th_adds_up(&s));
  tt_unref(p);
}

TEST(queue_full_refusal_keeps_nothing) {
  tt_pool_opts o;
  tt_pool *p;
  tt_ctx *gate = tt_with_cancel(tt_background());
  tt_handle *b, *q1, *q2, *r;
  tt_pool_stats s;
  int err = 0;
  double t0;
  memset(&o, 0, sizeof o);
  o.workers = 1;
  o.queue = 2;
  p = tt_pool_new(&o, NULL);
  atomic_store(&drops, 0);
  b = tt_pool_submit(p, tt_background(), NULL, fn_gate, gate, NULL, &err);
  WAIT_FOR(tt_handle_state(b) == TT_H_RUNNING, 5);
  q1 = submit(p, tt_background(), "q1", fn_ok, NULL, &err);
  q2 = submit(p, tt_background(), "q2", fn_ok, NULL, &err);
  CHECK(q1 != NULL && q2 != NULL);
  r = submit(p, tt_background(), "r", fn_ok, NULL, &err);
  CHECK(r == NULL);
  CHECK_EQ(err, TT_EQUEUE_FULL);
  CHECK_EQ(atomic_load(&drops), 0);  /* the caller still owns 'arg' */
  /* The precheck refuses the same way, and counts it once. */
  CHECK_EQ(tt_pool_precheck(p, tt_background(), NULL), TT_EQUEUE_FULL);
  s = stats(p);
  CHECK_EQ(s.rejected, 2);
  CHECK_EQ(s.submitted, 3);
  CHECK_EQ(s.queued, 2);
  CHECK_EQ(s.queued, 2);
  CHECK_EQ(s.inflight, 1);
  CHECK(th_adds_up(&s));
  /* A bounded wait for room runs out... */
  {
    tt_submit_opts so;
    memset(&so, 0, sizeof so);
    so.wait = 0.05;
    t0 = tt_now();
    r = tt_pool_submit(p, tt_background(), &so, fn_ok, NULL, NULL, &err);
    CHECK(r == NULL);
    CHECK_EQ(err, TT_EQUEUE_FULL);
    CHECK(tt_now() - t0 >= 0.05);
    /* ... or gets room once the worker moves on. */
    so.wait = 10;
    tt_cancel(gate, NULL);
    r = tt_pool_submit(p, tt_background(), &so, fn_ok, NULL, NULL, &err);
    CHECK(r != NULL);
  }
  CHECK_EQ(tt_pool_drain(p, NULL, -1), TT_OK);
  CHECK_EQ(atomic_load(&drops), 2);
  s = stats(p);
  CHECK_EQ(s.submitted, 4);
  CHECK_EQ(s.completed, 4);
  CHECK_EQ(s.rejected, 3);
  CHECK_EQ(tt_pool_precheck(p, tt_background(), NULL), TT_ECLOSED);
  tt_unref(b);
  tt_unref(q1);
  tt_unref(q2);
  tt_unref(r);
  tt_unref(gate);
  tt_unref(p);
}

TEST(quota_refusal_spares_other_tenants) {
  tt_pool_opts o;
  tt_quota q[1] = {{"acme", 2}};
  tt_pool *p;
  tt_ctx *gate = tt_with_cancel(tt_background());
  tt_ctx *acme = with_tenant("acme"), *other = with_tenant("other");
  tt_handle *h[6];
  tt_inflight inf[8];
  size_t n;
  int err = 0, i;
  memset(&o, 0, sizeof o);
  o.workers = 4;
  o.tenant_key = key_tenant;
  o.quotas = q;
  o.nquotas = 1;
  o.quota_default = 3;
  p = tt_pool_new(&o, NULL);
  h[0] = tt_pool_submit(p, acme, NULL, fn_gate, gate, NULL, &err);
  h[1] = tt_pool_submit(p, acme, NULL, fn_gate, gate, NULL, &err);
  CHECK(h[0] != NULL && h[1] != NULL);
  CHECK(tt_pool_submit(p, acme, NULL, fn_gate, gate, NULL, &err) == NULL);
  CHECK_EQ(err, TT_EQUOTA);
  h[2] = tt_pool_submit(p, other, NULL, fn_gate, gate, NULL, &err);
  CHECK(h[2] != NULL);
  CHECK_EQ(err, TT_OK);
  /* Ops without a tenant share the "default" bucket (quota_default). */
  h[3] = tt_pool_submit(p, tt_background(), NULL, fn_gate, gate, NULL, &err);
  h[4] = tt_pool_submit(p, tt_background(), NULL, fn_gate, gate, NULL, &err);
  h[5] = tt_pool_submit(p, tt_background(), NULL, fn_gate, gate, NULL, &err);
  CHECK(h[3] != NULL && h[4] != NULL && h[5] != NULL);
  CHECK(tt_pool_submit(p, tt_background(), NULL, fn_gate, gate, NULL,
                       &err) == NULL);
  CHECK_EQ(err, TT_EQUOTA);
  CHECK_EQ(stats(p).rejected, 2);
  WAIT_FOR(stats(p).inflight == 4, 5);
  n = tt_pool_inflight(p, inf, 8);
  CHECK_EQ(n, 4);
  {
    int nacme = 0;
    for (i = 0; i < (int)n && i < 8; i++)
      if (strcmp(inf[i].tenant, "acme") == 0) nacme++;
    CHECK_EQ(nacme, 2);
  }
  tt_cancel(gate, NULL);
  /* Once acme's ops finish, acme has room again. */
  CHECK(wait_handle(h[0]) && wait_handle(h[1]));
  {
    tt_handle *again = tt_pool_submit(p, acme, NULL, fn_ok, NULL, NULL, &err);
    CHECK(again != NULL);
    tt_unref(again);
  }
  CHECK_EQ(tt_pool_drain(p, NULL, -1), TT_OK);
  for (i = 0; i < 6; i++) tt_unref(h[i]);
  tt_unref(acme);
  tt_unref(other);
  tt_unref(gate);
  tt_unref(p);
}

TEST(flood_of_low_does_not_delay_high) {
  tt_pool_opts o;
  tt_class_opts cls[2] = {{"high", 2, false}, {"low", 2, false}};
  tt_pool *p;
  tt_ctx *gate = tt_with_cancel(tt_background());
  tt_submit_opts lo, hi;
  tt_handle *low[10], *high;
  tt_inflight inf[4];
  int i, err;
  memset(&o, 0, sizeof o);
  o.classes = cls;
  o.nclasses = 2;
  o.queue = 16;
  p = tt_pool_new(&o, NULL);
  memset(&lo, 0, sizeof lo);
  lo.priority = "low";
  memset(&hi, 0, sizeof hi);
  hi.priority = "high";
  for (i = 0; i < 10; i++) {
    low[i] = tt_pool_submit(p, tt_background(), &lo, fn_gate, gate, NULL,
                            &err);
    CHECK(low[i] != NULL);
  }
  WAIT_FOR(stats(p).inflight == 2, 5);
  high = tt_pool_submit(p, tt_background(), &hi, fn_ok, NULL, NULL, &err);
  CHECK(wait_handle(high));
  CHECK_EQ(tt_handle_state(high), TT_H_DONE);
  /* The low class is still stuck behind its gate. */
  CHECK_EQ(stats(p).inflight, 2);
  CHECK_EQ(stats(p).queued, 8);
  CHECK_EQ(tt_pool_inflight(p, inf, 4), 2);
  CHECK(strcmp(inf[0].priority, "low") == 0);
  /* Without a priority and no class named "default": the last class. */
  {
    tt_handle *d = tt_pool_submit(p, tt_background(), NULL, fn_ok, NULL,
                                  NULL, &err);
    CHECK_EQ(stats(p).queued, 9);
    tt_unref(d);
  }
  hi.priority = "nope";
  CHECK(tt_pool_submit(p, tt_background(), &hi, fn_ok, NULL, NULL,
                       &err) == NULL);
  CHECK_EQ(err, TT_EINVAL);
  tt_cancel(gate, NULL);
  CHECK_EQ(tt_pool_drain(p, NULL, -1), TT_OK);
  CHECK_EQ(stats(p).completed, 12);
  for (i = 0; i < 10; i++) tt_unref(low[i]);
  tt_unref(high);
  tt_unref(gate);
  tt_unref(p);
}

static void lend_case(bool lend) {
  tt_pool_opts o;
  tt_class_opts cls[2] = {{"high", 1, false}, {"low", 1, false}};
  tt_pool *p;
  tt_ctx *gate = tt_with_cancel(tt_background());
  tt_submit_opts lo;
  tt_handle *b, *h;
  int err;
  cls[0].lend = lend;
  memset(&o, 0, sizeof o);
  o.classes = cls;
  o.nclasses = 2;
  p = tt_pool_new(&o, NULL);
  memset(&lo, 0, sizeof lo);
  lo.priority = "low";
  b = tt_pool_submit(p, tt_background(), &lo, fn_gate, gate, NULL, &err);
  WAIT_FOR(tt_handle_state(b) == TT_H_RUNNING, 5);
  h = tt_pool_submit(p, tt_background(), &lo, fn_ok, NULL, NULL, &err);
  if (lend) {
    /* The idle high worker takes the low op. */
    CHECK(wait_handle(h));
    CHECK_EQ(tt_handle_state(h), TT_H_DONE);
  } else {
    th_sleep_us(100000);
    CHECK_EQ(tt_handle_state(h), TT_H_QUEUED);
  }
  CHECK_EQ(tt_handle_state(b), TT_H_RUNNING);
  tt_cancel(gate, NULL);
  CHECK_EQ(tt_pool_drain(p, NULL, -1), TT_OK);
  CHECK_EQ(tt_handle_state(h), TT_H_DONE);
  tt_unref(b);
  tt_unref(h);
  tt_unref(gate);
  tt_unref(p);
}

TEST(lending_class_takes_lower_work) {
  lend_case(true);
  lend_case(false);
}

/* Retries. */
static atomic_int attempts_seen;

static int fn_fail_twice(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  if (atomic_fetch_add(&attempts_seen, 1) < 2) {
    *out = (tt_obj *)tt_error_new(TT_EFAILED, "flaky", NULL);
    return TT_EFAILED;
  }
  return TT_OK;
}

typedef struct evlog {
  pthread_mutex_t mu;
  int n;
  struct {
    int kind;
    uint64_t id;
    int attempt;
    double delay;
    double at;
    char priority[16];
  } e[512];
} evlog;

static void log_event(const tt_event *ev, void *ud) {
  evlog *l = ud;
  pthread_mutex_lock(&l->mu);
  if (l->n < 512) {
    l->e[l->n].kind = ev->kind;
    l->e[l->n].id = ev->id;
    l->e[l->n].attempt = ev->attempt;
    l->e[l->n].delay = ev->delay;
    l->e[l->n].at = ev->at;
    snprintf(l->e[l->n].priority, sizeof l->e[l->n].priority, "%s",
             ev->priority != NULL ? ev->priority : "");
    l->n++;
  }
  pthread_mutex_unlock(&l->mu);
}

static evlog *evlog_new(void) {
  evlog *l = calloc(1, sizeof *l);
  pthread_mutex_init(&l->mu, NULL);
  return l;
}

static void evlog_free(evlog *l) {
  pthread_mutex_destroy(&l->mu);
  free(l);
}

static int evlog_count(evlog *l, int kind) {
  int i, c = 0;
  pthread_mutex_lock(&l->mu);
  for (i = 0; i < l->n; i++) c += l->e[i].kind == kind;
  pthread_mutex_unlock(&l->mu);
  return c;
}

TEST(retries_with_backoff) {
  tt_pool_opts o;
  tt_pool *p;
  tt_handle *h;
  tt_retry pol = {3, 0.05, 2, 0, 0};
  tt_retry two = {2, 0.01, 1, 0, 0};
  tt_submit_opts so;
  tt_failure *dl;
  evlog *log = evlog_new();
  size_t n;
  double t0;
  int i, err, retried = 0;
  memset(&o, 0, sizeof o);
  o.workers = 2;
  o.retry = pol;
  p = tt_pool_new(&o, NULL);
  tt_pool_observe(p, log_event, log);
  /* Succeeds on the third attempt, after 0.05 s and 0.1 s of delay. */
  atomic_store(&attempts_seen, 0);
  t0 = tt_now();
  h = submit(p, tt_background(), "flaky", fn_fail_twice, NULL, &err);
  CHECK(wait_handle(h));
  CHECK(tt_now() - t0 >= 0.15);
  CHECK_EQ(tt_handle_state(h), TT_H_DONE);
  CHECK_EQ(atomic_load(&attempts_seen), 3);
  tt_unref(h);
  /* Always failing: three attempts, then a dead letter. */
  h = submit(p, tt_background(), "doomed", fn_fail, NULL, &err);
  CHECK(wait_handle(h));
  CHECK_EQ(tt_handle_state(h), TT_H_FAILED);
  tt_unref(h);
  /* A per-submission policy: two attempts. */
  memset(&so, 0, sizeof so);
  so.name = "short";
  so.retry = &two;
  h = tt_pool_submit(p, tt_background(), &so, fn_fail, NULL, NULL, &err);
  CHECK(wait_handle(h));
  tt_unref(h);
  CHECK_EQ(tt_pool_drain(p, NULL, -1), TT_OK);
  dl = tt_pool_dead_letters(p, &n);
  CHECK_EQ(n, 2);
  if (n == 2) {
    CHECK(strcmp(dl[0].name, "doomed") == 0);
    CHECK_EQ(dl[0].attempts, 3);
    CHECK(strcmp(dl[1].name, "short") == 0);
    CHECK_EQ(dl[1].attempts, 2);
    CHECK_EQ(dl[0].code, TT_EFAILED);
    CHECK(dl[0].tenant == NULL);
  }
  tt_failures_free(dl, n);
  CHECK_EQ(stats(p).retried, 2 + 2 + 1);
  CHECK_EQ(stats(p).dead, 2);
  CHECK_EQ(stats(p).completed, 1);
  CHECK_EQ(stats(p).failed, 0);
  /* The delays chosen follow the policy exactly without jitter. */
  pthread_mutex_lock(&log->mu);
  for (i = 0; i < log->n; i++) {
    if (log->e[i].kind != TT_EV_RETRIED || log->e[i].id != 1) continue;
    if (log->e[i].attempt == 1) CHECK(log->e[i].delay == 0.05);
    if (log->e[i].attempt == 2) CHECK(log->e[i].delay == 0.1);
    retried++;
  }
  pthread_mutex_unlock(&log->mu);
  CHECK_EQ(retried, 2);
  CHECK_EQ(evlog_count(log, TT_EV_RETRIED), 5);
  CHECK_EQ(evlog_count(log, TT_EV_DEAD), 2);
  {
    tt_failure *f = tt_pool_failures(p, &n);
    CHECK_EQ(n, 2 + 3 + 2);
    tt_failures_free(f, n);
  }
  tt_unref(p);
  evlog_free(log);
}

TEST(retry_jitter_and_cap) {
  tt_pool_opts o;
  tt_pool *p;
  tt_handle *h;
  evlog *log = evlog_new();
  int i, err;
  memset(&o, 0, sizeof o);
  o.workers = 1;
  o.retry.attempts = 4;
  o.retry.backoff = 0.01;
  o.retry.factor = 10;
  o.retry.max_backoff = 0.02;
  o.retry.jitter = 0.5;
  p = tt_pool_new(&o, NULL);
  tt_pool_observe(p, log_event, log);
  h = submit(p, tt_background(), "j", fn_fail, NULL, &err);
  CHECK(wait_handle(h));
  tt_unref(h);
  CHECK_EQ(tt_pool_drain(p, NULL, -1), TT_OK);
  pthread_mutex_lock(&log->mu);
  for (i = 0; i < log->n; i++) {
    if (log->e[i].kind != TT_EV_RETRIED) continue;
    if (log->e[i].attempt == 1)
      CHECK(log->e[i].delay >= 0.005 && log->e[i].delay <= 0.015);
    else
      CHECK(log->e[i].delay >= 0.01 && log->e[i].delay <= 0.03);
  }
  pthread_mutex_unlock(&log->mu);
  CHECK_EQ(evlog_count(log, TT_EV_RETRIED), 3);
  tt_unref(p);
  evlog_free(log);
}

TEST(stop_a_waiting_retry) {
  tt_pool_opts o;
  tt_pool *p;
  tt_handle *h;
  tt_pool_stats s;
  int err;
  memset(&o, 0, sizeof o);
  o.workers = 1;
  o.retry.attempts = 5;
  o.retry.backoff = 30;
  p = tt_pool_new(&o, NULL);
  atomic_store(&drops, 0);
  h = submit(p, tt_background(), "later", fn_fail, NULL, &err);
  WAIT_FOR(stats(p).retried == 1, 5);
  s = stats(p);
  CHECK_EQ(s.queued, 1);
  CHECK_EQ(s.inflight, 0);
  CHECK_EQ(tt_handle_state(h), TT_H_QUEUED);
  CHECK(tt_handle_stop(h));
  CHECK_EQ(tt_handle_state(h), TT_H_STOPPED);
  CHECK(!tt_handle_stop(h));
  CHECK_EQ(atomic_load(&drops), 1);
  s = stats(p);
  CHECK_EQ(s.queued, 0);
  CHECK_EQ(s.stopped, 1);
  CHECK(th_adds_up(&s));
  /* Nothing left: drain returns at once. */
  CHECK_EQ(tt_pool_drain(p, NULL, 1), TT_OK);
  tt_unref(h);
  tt_unref(p);
}

/* Dead letters. */
static atomic_int heal;

static int fn_fail_unless_healed(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  if (atomic_load(&heal)) return TT_OK;
  *out = (tt_obj *)tt_error_new(TT_EFAILED, "sick", NULL);
  return TT_EFAILED;
}

TEST(dead_letters_retry_drop_and_cap) {
  tt_pool_opts o;
  tt_pool *p;
  tt_ctx *acme = with_tenant("acme");
  tt_handle *h[3], *again;
  tt_failure *dl;
  tt_pool_stats s;
  size_t n;
  int i, err;
  memset(&o, 0, sizeof o);
  o.workers = 1;
  o.dead_cap = 2;
  o.tenant_key = key_tenant;
  p = tt_pool_new(&o, NULL);
  atomic_store(&heal, 0);
  atomic_store(&drops, 0);
  for (i = 0; i < 3; i++) {
    char name[16];
    snprintf(name, sizeof name, "d%d", i);
    h[i] = submit(p, acme, name, fn_fail_unless_healed, NULL, &err);
    CHECK(wait_handle(h[i]));
    CHECK_EQ(tt_handle_state(h[i]), TT_H_FAILED);
  }
  s = stats(p);
  CHECK_EQ(s.dead, 3);
  CHECK_EQ(s.dead_held, 2);
  CHECK_EQ(s.dead_dropped, 1);
  CHECK(th_adds_up(&s));
  /* The oldest was pushed out, its argument dropped. */
  WAIT_FOR(atomic_load(&drops) == 1, 5);
  CHECK_EQ(atomic_load(&drops), 1);
  dl = tt_pool_dead_letters(p, &n);
  CHECK_EQ(n, 2);
  if (n == 2) {
    CHECK(strcmp(dl[0].name, "d1") == 0);
    CHECK(strcmp(dl[1].name, "d2") == 0);
    CHECK(dl[0].tenant != NULL && strcmp(dl[0].tenant, "acme") == 0);
    CHECK_EQ(dl[0].attempts, 1);
    CHECK(dl[0].error != NULL && dl[0].cause == dl[0].error);
    CHECK(dl[0].at > 1e9);
  }
  /* Retry one: a new submission, which now succeeds. */
  atomic_store(&heal, 1);
  again = tt_pool_retry_dead(p, dl[0].id, &err);
  CHECK(again != NULL);
  CHECK(wait_handle(again));
  CHECK_EQ(tt_handle_state(again), TT_H_DONE);
  CHECK(strcmp(tt_handle_name(again), "d1") == 0);
  s = stats(p);
  CHECK_EQ(s.submitted, 4);
  CHECK_EQ(s.completed, 1);
  CHECK_EQ(s.dead_held, 1);
  CHECK(th_adds_up(&s));
  CHECK(tt_pool_retry_dead(p, dl[0].id, &err) == NULL);
  CHECK_EQ(err, TT_EINVAL);
  /* Drop the other. */
  CHECK(tt_pool_drop_dead(p, dl[1].id));
  CHECK(!tt_pool_drop_dead(p, dl[1].id));
  CHECK_EQ(stats(p).dead_held, 0);
  CHECK_EQ(tt_pool_drain(p, NULL, -1), TT_OK);
  CHECK_EQ(atomic_load(&drops), 3);
  tt_failures_free(dl, n);
  for (i = 0; i < 3; i++) tt_unref(h[i]);
  tt_unref(again);
  tt_unref(acme);
  tt_unref(p);
}

TEST(no_dead_letters_counts_failed) {
  tt_pool_opts o;
  tt_pool *p;
  tt_handle *h;
  size_t n;
  int err;
  memset(&o, 0, sizeof o);
  o.workers = 1;
  o.dead_cap = -1;
  o.failures_cap = -1;
  p = tt_pool_new(&o, NULL);
  h = submit(p, tt_background(), "f", fn_fail, NULL, &err);
  CHECK(wait_handle(h));
  CHECK_EQ(tt_handle_state(h), TT_H_FAILED);
  CHECK_EQ(stats(p).failed, 1);
  CHECK_EQ(stats(p).dead, 0);
  CHECK(tt_pool_dead_letters(p, &n) == NULL);
  CHECK_EQ(n, 0);
  CHECK(tt_pool_failures(p, &n) == NULL);
  CHECK_EQ(n, 0);
  tt_unref(h);
  tt_unref(p);
}

/* Causes: a timeout gives the deadline sentinel, the shutdown its cause. */
static atomic_int saw_canceled_at_start;

static int fn_check_start(tt_ctx *ctx, void *arg, tt_obj **out) {
  tt_obj *cause = tt_ctx_cause(ctx);
  (void)out;
  if (tt_ctx_err(ctx) == TT_CANCELED && cause == arg)
    atomic_fetch_add(&saw_canceled_at_start, 1);
  tt_unref(cause);
  return TT_OK;
}

TEST(causes_of_timeouts_and_shutdown) {
  tt_pool_opts o;
  tt_pool *p;
  tt_ctx *sd = tt_with_cancel(tt_background());
  tt_bytes *why = tt_bytes_new("maintenance", 11);
  tt_handle *t, *s, *late;
  tt_failure *dl;
  tt_obj *res = NULL;
  size_t n, i;
  int err;
  double t0;
  memset(&o, 0, sizeof o);
  o.workers = 2;
  o.timeout = 5;
  o.shutdown = sd;
  p = tt_pool_new(&o, NULL);
  {
    tt_submit_opts so;
    memset(&so, 0, sizeof so);
    so.name = "slow";
    so.timeout = 0.05;
    t0 = tt_now();
    t = tt_pool_submit(p, tt_background(), &so, fn_until_done, NULL, NULL,
                       &err);
  }
  CHECK(wait_handle(t));
  CHECK(tt_now() - t0 >= 0.05);
  CHECK_EQ(tt_handle_result(t, &res), TT_H_FAILED);
  CHECK(res == &tt_deadline.hdr);
  tt_unref(res);
  s = submit(p, tt_background(), "stuck", fn_until_done, NULL, &err);
  WAIT_FOR(tt_handle_state(s) == TT_H_RUNNING, 5);
  tt_cancel(sd, &why->hdr);
  CHECK(wait_handle(s));
  CHECK_EQ(tt_handle_state(s), TT_H_FAILED);
  /* After the shutdown ended, new attempts start canceled. */
  atomic_store(&saw_canceled_at_start, 0);
  late = tt_pool_submit(p, tt_background(), NULL, fn_check_start, why,
                        NULL, &err);
  CHECK(wait_handle(late));
  CHECK_EQ(atomic_load(&saw_canceled_at_start), 1);
  CHECK_EQ(tt_pool_drain(p, NULL, -1), TT_OK);
  dl = tt_pool_dead_letters(p, &n);
  CHECK_EQ(n, 2);
  for (i = 0; i < n; i++) {
    if (strcmp(dl[i].name, "slow") == 0) {
      CHECK(dl[i].cause == &tt_deadline.hdr);
      CHECK_EQ(dl[i].code, TT_DEADLINE);
    } else {
      CHECK(strcmp(dl[i].name, "stuck") == 0);
      CHECK(dl[i].cause == &why->hdr);
      CHECK_EQ(dl[i].code, TT_CANCELED);
    }
  }
  tt_failures_free(dl, n);
  tt_unref(t);
  tt_unref(s);
  tt_unref(late);
  tt_unref(p);
  tt_unref(sd);
  tt_unref(why);
}

TEST(shutdown_cancels_running_ops_gracefully) {
  tt_pool_opts o;
  tt_pool *p;
  tt_ctx *sd = tt_with_cancel(tt_background());
  tt_ctx *parent = tt_with_cancel(tt_background());
  tt_handle *h[3];
  int i, err;
  memset(&o, 0, sizeof o);
  o.workers = 3;
  o.shutdown = sd;
  p = tt_pool_new(&o, NULL);
  atomic_store(&graceful, 0);
  for (i = 0; i < 3; i++)
    h[i] = tt_pool_submit(p, parent, NULL, fn_graceful, NULL, NULL, &err);
  WAIT_FOR(stats(p).inflight == 3, 5);
  /* A canceled parent does not reach the ops: they are detached. */
  tt_cancel(parent, NULL);
  th_sleep_us(30000);
  CHECK_EQ(stats(p).inflight, 3);
  tt_cancel(sd, NULL);
  for (i = 0; i < 3; i++) {
    CHECK(wait_handle(h[i]));
    CHECK_EQ(tt_handle_state(h[i]), TT_H_DONE);
    tt_unref(h[i]);
  }
  CHECK_EQ(atomic_load(&graceful), 3);
  CHECK_EQ(tt_pool_drain(p, NULL, -1), TT_OK);
  tt_unref(p);
  tt_unref(parent);
  tt_unref(sd);
}

TEST(shutdown_ends_waiting_retries) {
  tt_pool_opts o;
  tt_pool *p;
  tt_ctx *sd = tt_with_cancel(tt_background());
  tt_bytes *why = tt_bytes_new("bye", 3);
  tt_handle *h;
  tt_failure *dl;
  size_t n;
  int err;
  memset(&o, 0, sizeof o);
  o.workers = 1;
  o.shutdown = sd;
  o.retry.attempts = 3;
  o.retry.backoff = 30;
  p = tt_pool_new(&o, NULL);
  h = submit(p, tt_background(), "r", fn_fail, NULL, &err);
  WAIT_FOR(stats(p).retried == 1, 5);
  tt_cancel(sd, &why->hdr);
  CHECK(wait_handle(h));
  CHECK_EQ(tt_handle_state(h), TT_H_FAILED);
  CHECK_EQ(tt_pool_drain(p, NULL, 5), TT_OK);
  dl = tt_pool_dead_letters(p, &n);
  CHECK_EQ(n, 1);
  if (n == 1) {
    CHECK(dl[0].cause == &why->hdr);
    CHECK_EQ(dl[0].attempts, 1);
  }
  tt_failures_free(dl, n);
  {
    tt_pool_stats s = stats(p);
    CHECK_EQ(s.dead, 1);
    CHECK_EQ(s.queued, 0);
    CHECK(th_adds_up(&s));
  }
  tt_unref(h);
  tt_unref(p);
  tt_unref(sd);
  tt_unref(why);
}

/* Ops waiting for a retry count as queued: for quotas, and for drain. */
TEST(waiting_retries_count_for_quota_and_drain) {
  tt_pool_opts o;
  tt_quota q[1] = {{"acme", 1}};
  tt_pool *p;
  tt_ctx *acme = with_tenant("acme");
  tt_handle *h, *d;
  tt_failure *dl;
  size_t n;
  int err;
  double t0;
  memset(&o, 0, sizeof o);
  o.workers = 1;
  o.tenant_key = key_tenant;
  o.quotas = q;
  o.nquotas = 1;
  o.retry.attempts = 2;
  o.retry.backoff = 0.1;
  p = tt_pool_new(&o, NULL);
  atomic_store(&attempts_seen, 1);  /* fn_fail_twice: fails once more */
  t0 = tt_now();
  h = tt_pool_submit(p, acme, NULL, fn_fail_twice, NULL, NULL, &err);
  WAIT_FOR(stats(p).retried == 1, 5);
  CHECK(tt_pool_submit(p, acme, NULL, fn_ok, NULL, NULL, &err) == NULL);
  CHECK_EQ(err, TT_EQUOTA);
  /* A dead letter to retry after closing. */
  d = tt_pool_submit(p, tt_background(),
                     &(tt_submit_opts){.retry = &(tt_retry){1, 0, 0, 0, 0}},
                     fn_fail, NULL, NULL, &err);
  CHECK(wait_handle(d));
  CHECK_EQ(tt_pool_drain(p, NULL, -1), TT_OK);
  CHECK(tt_now() - t0 >= 0.1);
  CHECK_EQ(tt_handle_state(h), TT_H_DONE);
  CHECK_EQ(stats(p).completed, 1);
  dl = tt_pool_dead_letters(p, &n);
  CHECK_EQ(n, 1);
  if (n == 1) {
    CHECK(tt_pool_retry_dead(p, dl[0].id, &err) == NULL);
    CHECK_EQ(err, TT_ECLOSED);
  }
  CHECK_EQ(stats(p).dead_held, 1);  /* a refused retry keeps it */
  tt_failures_free(dl, n);
  tt_unref(h);
  tt_unref(d);
  tt_unref(acme);
  tt_unref(p);
}

/* Scenario 11: drain with a budget. */
TEST(drain_with_budget_then_later) {
  tt_pool_opts o;
  tt_pool *p;
  tt_ctx *gate = tt_with_cancel(tt_background());
  tt_ctx *budget;
  tt_handle *h[4], *late;
  tt_pool_stats s;
  int i, err;
  double t0;
  memset(&o, 0, sizeof o);
  o.workers = 2;
  p = tt_pool_new(&o, NULL);
  for (i = 0; i < 4; i++)
    h[i] = tt_pool_submit(p, tt_background(), NULL, fn_gate, gate, NULL,
                          &err);
  budget = tt_with_timeout(tt_background(), 0.05, NULL);
  t0 = tt_now();
  CHECK_EQ(tt_pool_drain(p, budget, -1), TT_DEADLINE);
  CHECK(tt_now() - t0 >= 0.04);
  s = stats(p);
  CHECK_EQ(s.inflight, 2);
  CHECK_EQ(s.queued, 2);
  CHECK(th_adds_up(&s));
  CHECK_EQ(tt_pool_drain(p, NULL, 0.02), TT_ETIMEOUT);
  CHECK(!tt_latch_is_set(tt_pool_drained(p)));
  late = tt_pool_submit(p, tt_background(), NULL, fn_ok, NULL, NULL, &err);
  CHECK(late == NULL);
  CHECK_EQ(err, TT_ECLOSED);
  tt_cancel(gate, NULL);
  CHECK_EQ(tt_pool_drain(p, NULL, -1), TT_OK);
  CHECK(tt_latch_is_set(tt_pool_drained(p)));
  s = stats(p);
  CHECK_EQ(s.completed, 4);
  CHECK_EQ(s.rejected, 1);
  CHECK(th_adds_up(&s));
  for (i = 0; i < 4; i++) {
    CHECK_EQ(tt_handle_state(h[i]), TT_H_DONE);
    tt_unref(h[i]);
  }
  tt_unref(budget);
  tt_unref(gate);
  tt_unref(p);
}

/* Scenario 19: stop handles. */
TEST(stop_queued_ops) {
  tt_pool_opts o;
  tt_pool *p;
  tt_ctx *gate = tt_with_cancel(tt_background());
  tt_handle *b, *h[10];
  int i, err;
  memset(&o, 0, sizeof o);
  o.workers = 1;
  p = tt_pool_new(&o, NULL);
  atomic_store(&drops, 0);
  b = tt_pool_submit(p, tt_background(), NULL, fn_gate, gate, NULL, &err);
  WAIT_FOR(tt_handle_state(b) == TT_H_RUNNING, 5);
  for (i = 0; i < 10; i++)
    h[i] = submit(p, tt_background(), "q", fn_ok, NULL, &err);
  for (i = 0; i < 10; i += 2) CHECK(tt_handle_stop(h[i]));
  CHECK_EQ(atomic_load(&drops), 5);
  CHECK(!tt_handle_stop(b));
  tt_cancel(gate, NULL);
  CHECK_EQ(tt_pool_drain(p, NULL, -1), TT_OK);
  CHECK_EQ(stats(p).completed, 6);
  CHECK_EQ(stats(p).stopped, 5);
  for (i = 0; i < 10; i++) {
    CHECK_EQ(tt_handle_state(h[i]), i % 2 == 0 ? TT_H_STOPPED : TT_H_DONE);
    CHECK(!tt_handle_stop(h[i]));
    tt_unref(h[i]);
  }
  CHECK_EQ(atomic_load(&drops), 10);
  tt_unref(b);
  tt_unref(gate);
  tt_unref(p);
}

/* The invariant, checked from another thread under a mixed workload. */
typedef struct checker {
  tt_pool *p;
  atomic_int stop;
  atomic_int bad, seen;
} checker;

static void *check_loop(void *arg) {
  checker *c = arg;
  while (!atomic_load(&c->stop)) {
    tt_pool_stats s;
    tt_pool_stats_get(c->p, &s);
    if (!th_adds_up(&s)) atomic_fetch_add(&c->bad, 1);
    atomic_fetch_add(&c->seen, 1);
  }
  return NULL;
}

static atomic_int mixed_n;

static int fn_mixed(tt_ctx *ctx, void *arg, tt_obj **out) {
  int k = atomic_fetch_add(&mixed_n, 1);
  (void)ctx;
  (void)arg;
  if (k % 3 == 0) {
    *out = (tt_obj *)tt_error_new(TT_EFAILED, "mixed", NULL);
    return TT_EFAILED;
  }
  if (k % 7 == 0) th_sleep_us(200);
  return TT_OK;
}

TEST(stats_add_up_under_load) {
  tt_pool_opts o;
  tt_pool *p;
  checker c;
  pthread_t t;
  tt_pool_stats s;
  int i, err, accepted = 0;
  memset(&o, 0, sizeof o);
  o.workers = 4;
  o.queue = 16;
  o.retry.attempts = 2;
  o.retry.backoff = 0.001;
  o.dead_cap = 10;
  p = tt_pool_new(&o, NULL);
  c.p = p;
  atomic_init(&c.stop, 0);
  atomic_init(&c.bad, 0);
  atomic_init(&c.seen, 0);
  atomic_store(&mixed_n, 0);
  pthread_create(&t, NULL, check_loop, &c);
  for (i = 0; i < 400; i++) {
    tt_handle *h = submit(p, tt_background(), "m", fn_mixed, NULL, &err);
    if (h == NULL) {
      th_sleep_us(100);
      continue;
    }
    accepted++;
    if (i % 5 == 0) tt_handle_stop(h);
    tt_unref(h);
  }
  CHECK_EQ(tt_pool_drain(p, NULL, -1), TT_OK);
  atomic_store(&c.stop, 1);
  pthread_join(t, NULL);
  CHECK_EQ(atomic_load(&c.bad), 0);
  CHECK(atomic_load(&c.seen) > 10);
  s = stats(p);
  CHECK(th_adds_up(&s));
  CHECK_EQ(s.submitted, accepted);
  CHECK_EQ(s.queued + s.inflight, 0);
  CHECK_EQ(s.dead_held + s.dead_dropped, s.dead);
  tt_unref(p);
}

/* fn_release cancels the gate context given as its argument. */
static int fn_release(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)out;
  tt_cancel(arg, NULL);
  return TT_OK;
}

/* A worker that runs short ops leaves queued work to itself instead of
** waking another (see pool.c's "The late check"); an op that then runs
** long must still not hold the work queued behind it while another
** worker is idle.  Each round queues a gate op that waits (10 s at most)
** for the op queued after it: that one must run meanwhile, on the other
** worker. */
TEST(long_op_after_short_ones_does_not_hold_queued_work) {
  tt_pool_opts o;
  tt_pool *p;
  int r, i;
  memset(&o, 0, sizeof o);
  o.workers = 2;
  o.queue = 64;
  p = tt_pool_new(&o, NULL);
  for (r = 0; r < 20; r++) {
    tt_handle *ha, *hb;
    tt_ctx *gate = tt_with_cancel(tt_background());
    /* Short ops first: the class's ops are short on average. */
    for (i = 0; i < 50; i++) {
      tt_handle *h = tt_pool_submit(p, tt_background(), NULL, fn_ok, NULL,
                                    NULL, NULL);
      if (i == 49) CHECK(wait_handle(h));
      tt_unref(h);
    }
    ha = tt_pool_submit(p, tt_background(), NULL, fn_gate, gate, NULL,
                        NULL);
    hb = tt_pool_submit(p, tt_background(), NULL, fn_release, gate, NULL,
                        NULL);
    CHECK(wait_handle(hb));
    CHECK(wait_handle(ha));
    /* The gate opened because the second op ran, not by its timeout. */
    CHECK_EQ(tt_ctx_err(gate), TT_CANCELED);
    tt_unref(ha);
    tt_unref(hb);
    tt_unref(gate);
  }
  CHECK_EQ(tt_pool_drain(p, NULL, -1), TT_OK);
  tt_unref(p);
}

/* Scenario 21: idle and resume. */
TEST(idle_then_resuming) {
  tt_pool_opts o;
  tt_pool *p;
  evlog *log = evlog_new();
  tt_handle *h;
  int i, err, idle_at = -1, res_at = -1, sub_at = -1;
  memset(&o, 0, sizeof o);
  o.workers = 1;
  o.idle_after = 0.05;
  p = tt_pool_new(&o, NULL);
  tt_pool_observe(p, log_event, log);
  WAIT_FOR(evlog_count(log, TT_EV_IDLE) == 1, 5);
  th_sleep_us(150000);
  CHECK_EQ(evlog_count(log, TT_EV_IDLE), 1);  /* once, not per period */
  h = submit(p, tt_background(), "wake", fn_ok, NULL, &err);
  CHECK(wait_handle(h));
  tt_unref(h);
  WAIT_FOR(evlog_count(log, TT_EV_IDLE) == 2, 5);
  CHECK_EQ(evlog_count(log, TT_EV_IDLE), 2);
  CHECK_EQ(evlog_count(log, TT_EV_RESUMING), 1);
  pthread_mutex_lock(&log->mu);
  for (i = 0; i < log->n; i++) {
    if (log->e[i].kind == TT_EV_IDLE && idle_at < 0) idle_at = i;
    if (log->e[i].kind == TT_EV_RESUMING) res_at = i;
    if (log->e[i].kind == TT_EV_SUBMITTED) sub_at = i;
  }
  pthread_mutex_unlock(&log->mu);
  CHECK(idle_at >= 0 && idle_at < res_at && res_at < sub_at);
  tt_unref(p);
  evlog_free(log);
}

/* Each op's events come in the order of its life. */
TEST(events_in_order_per_op) {
  tt_pool_opts o;
  tt_pool *p;
  evlog *log = evlog_new();
  tt_ctx *gate = tt_with_cancel(tt_background());
  tt_handle *b, *h[12];
  uint64_t id;
  int i, err;
  memset(&o, 0, sizeof o);
  o.workers = 1;
  o.queue = 12;
  o.retry.attempts = 2;
  o.retry.backoff = 0.001;
  p = tt_pool_new(&o, NULL);
  tt_pool_observe(p, log_event, log);
  b = tt_pool_submit(p, tt_background(), NULL, fn_gate, gate, NULL, &err);
  WAIT_FOR(tt_handle_state(b) == TT_H_RUNNING, 5);
  for (i = 0; i < 12; i++)
    h[i] = submit(p, tt_background(), "e", i % 2 ? fn_fail : fn_ok, NULL,
                  &err);
  CHECK(submit(p, tt_background(), "x", fn_ok, NULL, &err) == NULL);
  CHECK(tt_handle_stop(h[0]));
  tt_cancel(gate, NULL);
  CHECK_EQ(tt_pool_drain(p, NULL, -1), TT_OK);
  /* Drain returned: every event was delivered. */
  CHECK_EQ(evlog_count(log, TT_EV_DRAINED), 1);
  CHECK_EQ(evlog_count(log, TT_EV_REJECTED), 1);
  CHECK_EQ(evlog_count(log, TT_EV_SUBMITTED), 13);
  CHECK_EQ(evlog_count(log, TT_EV_STOPPED), 1);
  CHECK_EQ(evlog_count(log, TT_EV_COMPLETED), 6);
  CHECK_EQ(evlog_count(log, TT_EV_RETRIED), 6);
  CHECK_EQ(evlog_count(log, TT_EV_DEAD), 6);
  for (id = 1; id <= 13; id++) {
    int seq[8] = {0}, ns = 0, want_ok[] = {TT_EV_SUBMITTED, TT_EV_STARTED,
                                     TT_EV_COMPLETED};
    int want_fail[] = {TT_EV_SUBMITTED, TT_EV_STARTED, TT_EV_RETRIED,
                       TT_EV_STARTED, TT_EV_DEAD};
    int want_stop[] = {TT_EV_SUBMITTED, TT_EV_STOPPED};
    const int *want;
    int nwant, k;
    pthread_mutex_lock(&log->mu);
    for (i = 0; i < log->n; i++)
      if (log->e[i].id == id && ns < 8) seq[ns++] = log->e[i].kind;
    pthread_mutex_unlock(&log->mu);
    if (id == 1) {
      want = want_ok;
      nwant = 3;
    } else if (id == 2) {
      want = want_stop;
      nwant = 2;
    } else if ((id - 2) % 2 == 1) {
      want = want_fail;
      nwant = 5;
    } else {
      want = want_ok;
      nwant = 3;
    }
    CHECK_EQ(ns, nwant);
    for (k = 0; k < ns && k < nwant; k++) CHECK_EQ(seq[k], want[k]);
  }
  for (i = 0; i < 12; i++) tt_unref(h[i]);
  tt_unref(b);
  tt_unref(gate);
  tt_unref(p);
  evlog_free(log);
}

/* Scenario 20: the in-flight listing. */
TEST(inflight_lists_running_ops) {
  tt_pool_opts o;
  tt_pool *p;
  tt_ctx *gate = tt_with_cancel(tt_background());
  tt_ctx *acme = with_tenant("acme");
  tt_handle *h;
  tt_inflight inf[2];
  double t0 = tt_now();
  int err;
  memset(&o, 0, sizeof o);
  o.workers = 2;
  o.tenant_key = key_tenant;
  p = tt_pool_new(&o, NULL);
  h = tt_pool_submit(p, acme, &(tt_submit_opts){.name = "report"}, fn_gate,
                     gate, NULL, &err);
  WAIT_FOR(tt_handle_state(h) == TT_H_RUNNING, 5);
  CHECK_EQ(tt_pool_inflight(p, inf, 2), 1);
  CHECK_EQ(inf[0].id, 1);
  CHECK(strcmp(inf[0].name, "report") == 0);
  CHECK(strcmp(inf[0].tenant, "acme") == 0);
  CHECK(strcmp(inf[0].priority, "default") == 0);
  CHECK(inf[0].started >= t0 && inf[0].started <= tt_now());
  CHECK_EQ(inf[0].attempt, 1);
  CHECK_EQ(tt_pool_inflight(p, NULL, 0), 1);
  tt_cancel(gate, NULL);
  CHECK_EQ(tt_pool_drain(p, NULL, -1), TT_OK);
  CHECK_EQ(tt_pool_inflight(p, inf, 2), 0);
  tt_unref(h);
  tt_unref(acme);
  tt_unref(gate);
  tt_unref(p);
}

/* Freeing a pool with work: queued ops stop at once, the unref does not
** wait for the running ones, which finish later on their workers; then
** the workers end (each runs the exit hook). */
static atomic_int hook_calls;

static void on_exit_hook(void) { atomic_fetch_add(&hook_calls, 1); }

/* open_gate_later cancels the gate; it owns a reference to it. */
static void open_gate_later(void *arg) {
  th_sleep_us(50000);
  tt_cancel(arg, NULL);
  tt_unref(arg);
}

TEST(free_with_work_does_not_wait) {
  tt_pool_opts o;
  tt_pool *p;
  tt_ctx *gate = tt_with_cancel(tt_background());
  tt_handle *h[5];
  int i, err;
  memset(&o, 0, sizeof o);
  o.workers = 2;
  atomic_store(&hook_calls, 0);
  tt_set_thread_exit_hook(on_exit_hook);
  p = tt_pool_new(&o, NULL);
  atomic_store(&drops, 0);
  for (i = 0; i < 5; i++)
    h[i] = tt_pool_submit(p, tt_background(), NULL, fn_gate, gate,
                          count_drop, &err);
  WAIT_FOR(stats(p).inflight == 2, 5);
  CHECK_EQ(tt_exec(open_gate_later, tt_ref(gate)), TT_OK);
  tt_unref(p);
  /* The unref returned at once: the queued ops are stopped already. */
  for (i = 2; i < 5; i++) CHECK_EQ(tt_handle_state(h[i]), TT_H_STOPPED);
  for (i = 0; i < 5; i++) CHECK(tt_latch_wait(tt_handle_latch(h[i]), 10));
  WAIT_FOR(atomic_load(&hook_calls) == 2, 10);
  CHECK_EQ(atomic_load(&hook_calls), 2);
  CHECK_EQ(atomic_load(&drops), 5);
  for (i = 0; i < 5; i++) {
    CHECK_EQ(tt_handle_state(h[i]), i < 2 ? TT_H_DONE : TT_H_STOPPED);
    CHECK(!tt_handle_stop(h[i]));  /* the handle outlives its pool */
    tt_unref(h[i]);
  }
  tt_set_thread_exit_hook(NULL);
  tt_unref(gate);
}

TEST(drained_pool_workers_end) {
  tt_pool_opts o;
  tt_pool *p;
  memset(&o, 0, sizeof o);
  o.workers = 3;
  atomic_store(&hook_calls, 0);
  tt_set_thread_exit_hook(on_exit_hook);
  p = tt_pool_new(&o, NULL);
  CHECK_EQ(tt_pool_drain(p, NULL, -1), TT_OK);
  WAIT_FOR(atomic_load(&hook_calls) == 3, 5);
  CHECK_EQ(atomic_load(&hook_calls), 3);
  tt_unref(p);
  tt_set_thread_exit_hook(NULL);
}

/* The last reference may go inside one of the pool's own ops. */
static int fn_release_pool(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)out;
  th_sleep_us(20000);
  tt_unref(arg);
  return TT_OK;
}

TEST(last_unref_on_own_worker) {
  tt_pool_opts o;
  tt_pool *p;
  tt_handle *h;
  int err;
  memset(&o, 0, sizeof o);
  o.workers = 2;
  p = tt_pool_new(&o, NULL);
  h = tt_pool_submit(p, tt_background(), NULL, fn_release_pool, tt_ref(p),
                     NULL, &err);
  tt_unref(p);
  CHECK(wait_handle(h));
  CHECK_EQ(tt_handle_state(h), TT_H_DONE);
  tt_unref(h);
}

/* Observers may call the pool, and stop being called once removed. */
static void nested_observer(const tt_event *ev, void *ud) {
  tt_pool_stats s;
  (void)ud;
  tt_pool_stats_get(ev->pool, &s);
}

/* An op that drains its own pool would wait for itself, forever: the
** drain returns TT_EDEADLK at once and leaves the pool open.  Draining
** another pool from an op is an ordinary wait. */
typedef struct self_drain {
  tt_pool *own, *other;
  atomic_int own_rc, other_rc, submit_rc;
} self_drain;

static int fn_drain_pools(tt_ctx *ctx, void *arg, tt_obj **out) {
  self_drain *s = arg;
  int err = -1;
  tt_handle *h;
  (void)ctx;
  (void)out;
  atomic_store(&s->own_rc, tt_pool_drain(s->own, NULL, 2));
  /* Still open: the op may submit more work to its pool. */
  h = tt_pool_submit(s->own, tt_background(), NULL, fn_ok, NULL, NULL,
                     &err);
  atomic_store(&s->submit_rc, err);
  tt_unref(h);
  atomic_store(&s->other_rc, tt_pool_drain(s->other, NULL, 5));
  return TT_OK;
}

TEST(drain_from_an_op_of_the_pool_is_refused) {
  self_drain s;
  tt_pool_opts o;
  tt_handle *h;
  memset(&o, 0, sizeof o);
  o.workers = 1;
  o.name = "self";
  s.own = tt_pool_new(&o, NULL);
  o.name = "other";
  s.other = tt_pool_new(&o, NULL);
  atomic_init(&s.own_rc, -1);
  atomic_init(&s.other_rc, -1);
  atomic_init(&s.submit_rc, -1);
  h = submit(s.own, tt_background(), "drainer", fn_drain_pools, &s, NULL);
  CHECK(wait_handle(h));
  /* Refused, not timed out after the op's 2 s bound. */
  CHECK_EQ(atomic_load(&s.own_rc), TT_EDEADLK);
  CHECK_EQ(atomic_load(&s.submit_rc), TT_OK);
  CHECK_EQ(atomic_load(&s.other_rc), TT_OK);
  /* From outside, the drain waits for both ops as usual. */
  CHECK_EQ(tt_pool_drain(s.own, NULL, 5), TT_OK);
  CHECK_EQ(stats(s.own).completed, 2);
  tt_unref(h);
  tt_unref(s.own);
  tt_unref(s.other);
}

TEST(observers_can_use_the_pool_and_unregister) {
  tt_pool_opts o;
  tt_pool *p;
  evlog *log = evlog_new();
  tt_handle *h;
  int id, id2, err, before;
  memset(&o, 0, sizeof o);
  o.workers = 1;
  p = tt_pool_new(&o, NULL);
  id = tt_pool_observe(p, log_event, log);
  id2 = tt_pool_observe(p, nested_observer, NULL);
  CHECK(id > 0 && id2 > id);
  h = submit(p, tt_background(), "a", fn_ok, NULL, &err);
  CHECK(wait_handle(h));
  tt_unref(h);
  WAIT_FOR(evlog_count(log, TT_EV_COMPLETED) == 1, 5);
  tt_pool_unobserve(p, id);
  before = evlog_count(log, TT_EV_SUBMITTED);
  h = submit(p, tt_background(), "b", fn_ok, NULL, &err);
  CHECK(wait_handle(h));
  tt_unref(h);
  CHECK_EQ(tt_pool_drain(p, NULL, -1), TT_OK);
  CHECK_EQ(evlog_count(log, TT_EV_SUBMITTED), before);
  tt_unref(p);
  evlog_free(log);
}

/* Attached ops run with their parent itself: no context of the pool's,
** no timeout, no retry, no dead letter, and the pool never cancels it. */
static _Atomic(tt_ctx *) attached_seen;

static int fn_attached(tt_ctx *ctx, void *arg, tt_obj **out) {
  atomic_store(&attached_seen, ctx);
  if (arg != NULL) tt_ctx_wait(arg, 10);  /* a gate */
  *out = (tt_obj *)tt_error_new(TT_EFAILED, "attached failure", NULL);
  return TT_EFAILED;
}

TEST(attached_ops_run_with_their_parent) {
  tt_ctx *shut = tt_with_cancel(tt_background());
  tt_ctx *parent = tt_with_cancel(tt_background());
  tt_ctx *gate = tt_with_cancel(tt_background());
  tt_pool_opts o;
  tt_submit_opts so;
  tt_pool *p;
  tt_handle *h;
  tt_pool_stats s;
  int err = 0;
  memset(&o, 0, sizeof o);
  o.workers = 1;
  o.timeout = 0.01;
  o.shutdown = shut;
  o.retry.attempts = 3;
  p = tt_pool_new(&o, NULL);
  memset(&so, 0, sizeof so);
  so.name = "attached";
  so.attached = true;
  h = tt_pool_submit(p, parent, &so, fn_attached, gate, NULL, &err);
  CHECK(h != NULL);
  WAIT_FOR(atomic_load(&attached_seen) != NULL, 10);
  CHECK(atomic_load(&attached_seen) == parent);
  /* The pool's shutdown does not reach an attached op's context, and
  ** its own timeout does not apply. */
  tt_cancel(shut, NULL);
  tt_ctx_wait(parent, 0.05);
  CHECK_EQ(tt_ctx_err(parent), 0);
  tt_cancel(gate, NULL);
  CHECK(wait_handle(h));
  CHECK_EQ(tt_handle_state(h), TT_H_FAILED);
  CHECK_EQ(tt_ctx_err(parent), 0);  /* not ended with the op either */
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  tt_pool_stats_get(p, &s);
  CHECK_EQ(s.submitted, 1);
  CHECK_EQ(s.failed, 1);
  CHECK_EQ(s.retried, 0);
  CHECK_EQ(s.dead, 0);
  CHECK(th_adds_up(&s));
  tt_unref(h);
  tt_unref(p);
  tt_unref(parent);
  tt_unref(gate);
  tt_unref(shut);
}

/* An attempt that stops itself at its deadline, as the interrupt hook of
** a Lua pool stops a busy task by reading the clock, resolves at once
** with TT_DEADLINE without the timer thread, and its context ends with
** TT_DEADLINE too (not TT_CANCELED) for what holds it: here a child made
** by the task.  The timer thread is held in an after-func meanwhile, so
** nothing but the pool's own end of the attempt can end that context.
** Retries and accounting see the same outcome as with the timer. */
static _Atomic(tt_ctx *) own_child[2];
static atomic_int own_attempts;

static int fn_own_deadline(tt_ctx *ctx, void *arg, tt_obj **out) {
  int slot = atomic_fetch_add(&own_attempts, 1);
  double d;
  (void)arg;
  (void)out;
  if (slot < 2) atomic_store(&own_child[slot], tt_with_cancel(ctx));
  if (!tt_ctx_deadline(ctx, &d)) return TT_EINVAL;
  while (tt_now() < d) sched_yield();
  return TT_DEADLINE;
}

static tt_ctx *timer_held, *timer_release;

static void hold_timer(void *arg) {
  (void)arg;
  tt_cancel(timer_held, NULL);
  tt_ctx_wait(timer_release, 10);  /* bounded: a failure must not hang */
}

TEST(deadline_stop_without_the_timer_thread) {
  tt_pool_opts o;
  tt_pool_stats s;
  tt_retry twice = {.attempts = 2, .backoff = 0.001};
  tt_submit_opts so;
  tt_ctx *hold;
  tt_afterfunc *af;
  tt_pool *p;
  tt_handle *h, *r;
  tt_obj *res = NULL;
  tt_failure *dl;
  size_t n, i;
  int err;
  timer_held = tt_with_cancel(tt_background());
  timer_release = tt_with_cancel(tt_background());
  hold = tt_with_timeout(tt_background(), 0.001, NULL);
  af = tt__after_func_now(hold, hold_timer, NULL, NULL);
  CHECK(af != NULL);
  CHECK(tt_ctx_wait(timer_held, 10));  /* the timer thread is held now */
  memset(&o, 0, sizeof o);
  o.workers = 1;
  o.timeout = 0.02;
  o.dead_cap = 10;
  p = tt_pool_new(&o, NULL);
  h = tt_pool_submit(p, tt_background(), NULL, fn_own_deadline, NULL, NULL,
                     &err);
  CHECK(wait_handle(h));
  CHECK_EQ(tt_handle_result(h, &res), TT_H_FAILED);
  CHECK(res == &tt_deadline.hdr);
  tt_unref(res);
  CHECK(atomic_load(&own_child[0]) != NULL);
  CHECK(tt_ctx_wait(atomic_load(&own_child[0]), 10));
  CHECK_EQ(tt_ctx_err(atomic_load(&own_child[0])), TT_DEADLINE);
  CHECK(!tt_latch_is_set(tt_ctx_done(timer_release)));
  /* With a retry left, the stopped attempt is retried (after the timer
  ** thread is back: the backoff is its to fire). */
  memset(&so, 0, sizeof so);
  so.name = "retried";
  so.retry = &twice;
  r = tt_pool_submit(p, tt_background(), &so, fn_own_deadline, NULL, NULL,
                     &err);
  CHECK(r != NULL);
  WAIT_FOR(atomic_load(&own_child[1]) != NULL, 10);
  CHECK(tt_ctx_wait(atomic_load(&own_child[1]), 10));
  CHECK_EQ(tt_ctx_err(atomic_load(&own_child[1])), TT_DEADLINE);
  tt_cancel(timer_release, NULL);
  CHECK(wait_handle(r));
  CHECK_EQ(tt_handle_result(r, &res), TT_H_FAILED);
  CHECK(res == &tt_deadline.hdr);
  tt_unref(res);
  CHECK_EQ(atomic_load(&own_attempts), 3);
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  tt_pool_stats_get(p, &s);
  CHECK_EQ(s.submitted, 2);
  CHECK_EQ(s.retried, 1);
  CHECK_EQ(s.dead, 2);
  CHECK(th_adds_up(&s));
  dl = tt_pool_dead_letters(p, &n);
  CHECK_EQ(n, 2);
  for (i = 0; i < n; i++) {
    CHECK_EQ(dl[i].code, TT_DEADLINE);
    CHECK(dl[i].cause == &tt_deadline.hdr);
  }
  tt_failures_free(dl, n);
  tt_unref(atomic_load(&own_child[0]));
  tt_unref(atomic_load(&own_child[1]));
  tt_unref(h);
  tt_unref(r);
  tt_unref(p);
  tt_unref(af);
  tt_unref(hold);
  tt_unref(timer_held);
  tt_unref(timer_release);
}

TEST_MAIN()
