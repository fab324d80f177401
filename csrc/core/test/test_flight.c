/*
** test_flight.c -- singleflight (flight.c): one run per key in flight,
** shared results and errors, callers that leave, forget, abandoned runs,
** timeouts and many keys.
**
** Where a test needs several callers waiting for one run, it waits until
** the run counts them (tt__flight_waiters), never for a while.
*/
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "harness.h"
#include "internal.h"

/* {====================================================================
** Helpers
** ===================================================================== */

/* A value type that counts its frees, to see that results are released. */
static atomic_int vals_freed;

static void val_free(tt_obj *o) {
  atomic_fetch_add(&vals_freed, 1);
  free(o);
}

static const tt_type val_type = {"test.Val", val_free, NULL, NULL};

static tt_obj *val_new(void) {
  tt_obj *o = malloc(sizeof *o);
  tt_obj_init(o, &val_type);
  return o;
}

static atomic_int drops;

static void count_drop(void *arg) {
  (void)arg;
  atomic_fetch_add(&drops, 1);
}

/* until waits (at most 5 s) for '*n' to reach 'want'. */
static bool until(atomic_int *n, int want) {
  WAIT_FOR(atomic_load(n) >= want, 5);
  return atomic_load(n) >= want;
}

static const char *message_of(tt_obj *err) {
  if (err == NULL || err->type != &tt_error_type) return "";
  return ((tt_error *)err)->message;
}

static int ok_value(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  *out = val_new();
  return TT_OK;
}

static atomic_int ran;

/* }==================================================================== */


/* {====================================================================
** Singleflight
** ===================================================================== */

/* A loader counts its runs; it may wait for 'release' or for its work
** context to end, and it records what it saw of its context. */
typedef struct loader {
  pthread_mutex_t mu;      /* protects what runs record (two may overlap) */
  atomic_int runs;
  atomic_int finished;
  tt_ctx *release;         /* wait for it (at most 5 s times th_slow)
                           ** if not NULL */
  bool wait_work;          /* wait (at most 5 s times th_slow) for
                           ** the work context */
  bool fail;               /* fail with 'error' instead of 'value' */
  tt_obj *value;
  tt_obj *error;
  pthread_t thread;        /* where the last run ran */
  atomic_int work_err;     /* tt_ctx_err(work context) at the end */
  tt_obj *work_cause;      /* its cause then (a reference) */
  bool had_deadline;
  bool had_value;
} loader;

static tt_key user_key(void) {
  tt_key k = {NULL, "user", 4};
  return k;
}

static int load(tt_ctx *ctx, void *arg, tt_obj **out) {
  loader *l = arg;
  tt_key k = user_key();
  int rc = TT_OK;
  CHECK_EQ(pthread_mutex_lock(&l->mu), 0);
  l->thread = pthread_self();
  l->had_deadline = tt_ctx_deadline(ctx, NULL);
  l->had_value = tt_ctx_value(ctx, &k, NULL);
  CHECK_EQ(pthread_mutex_unlock(&l->mu), 0);
  atomic_fetch_add(&l->runs, 1);
  if (l->release != NULL) tt_ctx_wait(l->release, 5 * th_slow());
  if (l->wait_work) tt_ctx_wait(ctx, 5 * th_slow());
  CHECK_EQ(pthread_mutex_lock(&l->mu), 0);
  atomic_store(&l->work_err, tt_ctx_err(ctx));
  tt_unref(l->work_cause);
  l->work_cause = tt_ctx_cause(ctx);
  if (l->wait_work) {
    rc = tt_ctx_err(ctx);
  } else if (l->fail) {
    *out = tt_ref(l->error);
    rc = TT_EFAILED;
  } else {
    *out = tt_ref(l->value);
  }
  CHECK_EQ(pthread_mutex_unlock(&l->mu), 0);
  atomic_store(&l->finished, 1);
  return rc;
}

static void loader_init(loader *l) {
  memset(l, 0, sizeof *l);
  CHECK_EQ(pthread_mutex_init(&l->mu, NULL), 0);
  atomic_init(&l->runs, 0);
  atomic_init(&l->finished, 0);
  atomic_init(&l->work_err, -1);
}

static void loader_fini(loader *l) {
  CHECK_EQ(pthread_mutex_destroy(&l->mu), 0);
  tt_unref(l->release);
  tt_unref(l->value);
  tt_unref(l->error);
  tt_unref(l->work_cause);
}

/* A caller on its own thread. */
typedef struct caller {
  tt_flight *sf;
  tt_ctx *ctx;             /* borrowed */
  loader *l;
  const char *key;
  bool cancel_abandoned;
  atomic_int *entered;     /* counted just before the call */
  int rc;
  tt_obj *result;
  bool shared;
  pthread_t t;
} caller;

static void *call_thread(void *p) {
  caller *c = p;
  if (c->entered != NULL) atomic_fetch_add(c->entered, 1);
  c->rc = tt_flight_call(c->sf, c->ctx, c->key, strlen(c->key), load, c->l,
                         count_drop, -1, c->cancel_abandoned, &c->result,
                         &c->shared);
  return NULL;
}

static void caller_start(caller *c, tt_flight *sf, tt_ctx *ctx, loader *l,
                         const char *key, atomic_int *entered) {
  memset(c, 0, sizeof *c);
  c->sf = sf;
  c->ctx = ctx;
  c->l = l;
  c->key = key;
  c->entered = entered;
  c->rc = -1;
  CHECK_EQ(pthread_create(&c->t, NULL, call_thread, c), 0);
}

static void caller_join(caller *c) {
  CHECK_EQ(pthread_join(c->t, NULL), 0);
}

#define NCALLERS 8

TEST(flight_runs_once_for_concurrent_callers) {
  tt_flight *sf = tt_flight_new();
  caller cs[NCALLERS];
  atomic_int entered;
  loader l;
  int i;
  loader_init(&l);
  l.release = tt_with_cancel(tt_background());
  l.value = val_new();
  atomic_init(&entered, 0);
  atomic_store(&drops, 0);
  CHECK(strcmp(((tt_obj *)sf)->type->name, "tether.Singleflight") == 0);
  for (i = 0; i < NCALLERS; i++)
    caller_start(&cs[i], sf, tt_background(), &l, "user:42", &entered);
  CHECK(until(&entered, NCALLERS));
  /* Every caller has joined the one run before it is released. */
  WAIT_FOR(tt__flight_waiters(sf, "user:42", 7) == NCALLERS, 5);
  CHECK_EQ(tt__flight_waiters(sf, "user:42", 7), NCALLERS);
  CHECK_EQ(tt_flight_inflight(sf), 1);
  tt_cancel(l.release, NULL);
  for (i = 0; i < NCALLERS; i++) {
    caller_join(&cs[i]);
    CHECK_EQ(cs[i].rc, TT_OK);
    CHECK(cs[i].result == l.value);
    CHECK(cs[i].shared);
    tt_unref(cs[i].result);
    /* The function ran on an engine thread, not on a caller's. */
    CHECK(!pthread_equal(l.thread, cs[i].t));
  }
  CHECK_EQ(atomic_load(&l.runs), 1);
  CHECK_EQ(atomic_load(&drops), NCALLERS);  /* every arg dropped once */
  CHECK_EQ(tt_flight_inflight(sf), 0);
  loader_fini(&l);
  tt_unref(sf);
}

TEST(flight_error_is_shared_not_cached) {
  tt_flight *sf = tt_flight_new();
  caller a, b;
  atomic_int entered;
  loader l;
  tt_obj *res;
  bool shared = true;
  loader_init(&l);
  l.release = tt_with_cancel(tt_background());
  l.fail = true;
  l.error = (tt_obj *)tt_error_new(TT_EFAILED, "db down", NULL);
  l.value = val_new();
  atomic_init(&entered, 0);
  caller_start(&a, sf, tt_background(), &l, "k", &entered);
  caller_start(&b, sf, tt_background(), &l, "k", &entered);
  CHECK(until(&entered, 2));
  WAIT_FOR(tt__flight_waiters(sf, "k", 1) == 2, 5);
  CHECK_EQ(tt__flight_waiters(sf, "k", 1), 2);
  tt_cancel(l.release, NULL);
  caller_join(&a);
  caller_join(&b);
  CHECK_EQ(a.rc, TT_EFAILED);
  CHECK_EQ(b.rc, TT_EFAILED);
  CHECK(a.result == l.error && b.result == l.error);
  CHECK(a.shared && b.shared);
  tt_unref(a.result);
  tt_unref(b.result);
  CHECK_EQ(atomic_load(&l.runs), 1);
  /* The failure was not kept: the next call runs the function again. */
  l.fail = false;
  CHECK_EQ(tt_flight_call(sf, tt_background(), "k", 1, load, &l, NULL, -1,
                          false, &res, &shared), TT_OK);
  CHECK(res == l.value);
  CHECK(!shared);
  tt_unref(res);
  CHECK_EQ(atomic_load(&l.runs), 2);
  loader_fini(&l);
  tt_unref(sf);
}

/* Scenario 10: one caller gives up, the other still gets the value, and
** the loader ran exactly once. */
TEST(flight_caller_leaves_others_get_value) {
  tt_flight *sf = tt_flight_new();
  tt_ctx *actx = tt_with_cancel(tt_background());
  caller a, b;
  atomic_int entered;
  loader l;
  loader_init(&l);
  l.release = tt_with_cancel(tt_background());
  l.value = val_new();
  atomic_init(&entered, 0);
  caller_start(&a, sf, actx, &l, "report", &entered);
  CHECK(until(&l.runs, 1));
  caller_start(&b, sf, tt_background(), &l, "report", &entered);
  CHECK(until(&entered, 2));
  WAIT_FOR(tt__flight_waiters(sf, "report", 6) == 2, 5);
  CHECK_EQ(tt__flight_waiters(sf, "report", 6), 2);
  tt_cancel(actx, NULL);
  caller_join(&a);
  CHECK_EQ(a.rc, TT_CANCELED);
  CHECK(a.result == NULL);
  CHECK(!a.shared);
  /* a returned while the work was still going on. */
  CHECK_EQ(atomic_load(&l.finished), 0);
  CHECK_EQ(tt_flight_inflight(sf), 1);
  tt_cancel(l.release, NULL);
  caller_join(&b);
  CHECK_EQ(b.rc, TT_OK);
  CHECK(b.result == l.value);
  CHECK(!b.shared);  /* only b received it */
  tt_unref(b.result);
  CHECK_EQ(atomic_load(&l.runs), 1);
  /* The work context was detached from a's cancellation. */
  CHECK_EQ(atomic_load(&l.work_err), 0);
  loader_fini(&l);
  tt_unref(actx);
  tt_unref(sf);
}

TEST(flight_forget_starts_a_new_run) {
  tt_flight *sf = tt_flight_new();
  caller a, b;
  loader l;
  loader_init(&l);
  l.release = tt_with_cancel(tt_background());
  l.value = val_new();
  caller_start(&a, sf, tt_background(), &l, "k", NULL);
  CHECK(until(&l.runs, 1));
  tt_flight_forget(sf, "k", 1);
  tt_flight_forget(sf, "other", 5);
  CHECK_EQ(tt_flight_inflight(sf), 0);
  caller_start(&b, sf, tt_background(), &l, "k", NULL);
  CHECK(until(&l.runs, 2));
  tt_cancel(l.release, NULL);
  caller_join(&a);
  caller_join(&b);
  CHECK_EQ(a.rc, TT_OK);
  CHECK_EQ(b.rc, TT_OK);
  CHECK(!a.shared && !b.shared);
  tt_unref(a.result);
  tt_unref(b.result);
  CHECK_EQ(atomic_load(&l.runs), 2);
  loader_fini(&l);
  tt_unref(sf);
}

TEST(flight_cancel_when_abandoned) {
  tt_flight *sf = tt_flight_new();
  tt_ctx *actx = tt_with_cancel(tt_background());
  caller a;
  loader l;
  loader_init(&l);
  l.wait_work = true;
  memset(&a, 0, sizeof a);
  a.sf = sf;
  a.ctx = actx;
  a.l = &l;
  a.key = "k";
  a.cancel_abandoned = true;
  CHECK_EQ(pthread_create(&a.t, NULL, call_thread, &a), 0);
  CHECK(until(&l.runs, 1));
  tt_cancel(actx, NULL);
  caller_join(&a);
  CHECK_EQ(a.rc, TT_CANCELED);
  /* The abandoned run left the table at once... */
  CHECK_EQ(tt_flight_inflight(sf), 0);
  /* ...and its work context was canceled. */
  CHECK(until(&l.finished, 1));
  CHECK_EQ(atomic_load(&l.work_err), TT_CANCELED);
  CHECK(strcmp(message_of(l.work_cause), "singleflight: every caller left")
        == 0);
  loader_fini(&l);
  tt_unref(actx);
  tt_unref(sf);
}

TEST(flight_abandoned_run_continues_by_default) {
  tt_flight *sf = tt_flight_new();
  tt_ctx *actx = tt_with_cancel(tt_background());
  caller a, b;
  loader l;
  loader_init(&l);
  l.release = tt_with_cancel(tt_background());
  l.value = val_new();
  caller_start(&a, sf, actx, &l, "k", NULL);
  CHECK(until(&l.runs, 1));
  tt_cancel(actx, NULL);
  caller_join(&a);
  CHECK_EQ(a.rc, TT_CANCELED);
  /* Nobody waits, but the run goes on, and a new caller joins it. */
  CHECK_EQ(tt_flight_inflight(sf), 1);
  caller_start(&b, sf, tt_background(), &l, "k", NULL);
  WAIT_FOR(tt__flight_waiters(sf, "k", 1) == 1, 5);
  CHECK_EQ(tt__flight_waiters(sf, "k", 1), 1);
  tt_cancel(l.release, NULL);
  caller_join(&b);
  CHECK_EQ(b.rc, TT_OK);
  CHECK(b.result == l.value);
  tt_unref(b.result);
  CHECK_EQ(atomic_load(&l.runs), 1);
  CHECK_EQ(atomic_load(&l.work_err), 0);
  loader_fini(&l);
  tt_unref(actx);
  tt_unref(sf);
}

TEST(flight_timeout_bounds_the_run_and_keeps_values) {
  tt_flight *sf = tt_flight_new();
  tt_ctx *base = tt_with_cancel(tt_background()), *ctx;
  tt_key k = user_key();
  tt_bytes *ann = tt_bytes_new("ann", 3);
  loader l;
  tt_obj *res;
  bool shared;
  double t0;
  loader_init(&l);
  l.wait_work = true;
  ctx = tt_with_value(base, &k, &ann->hdr);
  t0 = tt_now();
  CHECK_EQ(tt_flight_call(sf, ctx, "slow", 4, load, &l, NULL, 0.05, false,
                          &res, &shared), TT_EFAILED);
  CHECK(tt_now() - t0 >= 0.049);
  CHECK(res == &tt_deadline.hdr);
  CHECK(l.had_deadline);
  CHECK(l.had_value);
  CHECK_EQ(atomic_load(&l.work_err), TT_DEADLINE);
  tt_unref(res);
  /* Without a timeout the work context is just without_cancel(ctx). */
  l.wait_work = false;
  l.value = val_new();
  CHECK_EQ(tt_flight_call(sf, ctx, "fast", 4, load, &l, NULL, 0, false,
                          &res, NULL), TT_OK);
  CHECK(!l.had_deadline);
  CHECK(l.had_value);
  tt_unref(res);
  loader_fini(&l);
  tt_unref(ctx);
  tt_unref(base);
  tt_unref(ann);
  tt_unref(sf);
}

TEST(flight_done_ctx_and_bad_arguments) {
  tt_flight *sf = tt_flight_new();
  tt_ctx *done = tt_with_cancel(tt_background());
  loader l;
  tt_obj *res = &tt_canceled.hdr;
  loader_init(&l);
  tt_cancel(done, NULL);
  atomic_store(&drops, 0);
  CHECK_EQ(tt_flight_call(sf, done, "k", 1, load, &l, count_drop, -1, false,
                          &res, NULL), TT_CANCELED);
  CHECK(res == NULL);
  CHECK_EQ(tt_flight_call(sf, NULL, "k", 1, load, &l, count_drop, -1, false,
                          &res, NULL), TT_EINVAL);
  CHECK_EQ(tt_flight_call(sf, tt_background(), "k", 1, NULL, &l, count_drop,
                          -1, false, &res, NULL), TT_EINVAL);
  /* The argument passed to the call every time. */
  CHECK_EQ(atomic_load(&drops), 3);
  CHECK_EQ(atomic_load(&l.runs), 0);
  /* Keys are byte strings: embedded zeros count, the empty key works. */
  l.value = val_new();
  CHECK_EQ(tt_flight_call(sf, tt_background(), "a\0b", 3, load, &l, NULL,
                          -1, false, &res, NULL), TT_OK);
  tt_unref(res);
  CHECK_EQ(tt_flight_call(sf, tt_background(), NULL, 0, load, &l, NULL, -1,
                          false, &res, NULL), TT_OK);
  tt_unref(res);
  CHECK_EQ(atomic_load(&l.runs), 2);
  loader_fini(&l);
  tt_unref(done);
  tt_unref(sf);
}

/* Many keys at once, to grow the table. */
static void *many_keys(void *p) {
  tt_flight *sf = p;
  int i;
  for (i = 0; i < 200; i++) {
    char key[32];
    tt_obj *res;
    snprintf(key, sizeof key, "key-%d", i % 50);
    if (tt_flight_call(sf, tt_background(), key, strlen(key), ok_value,
                       NULL, NULL, -1, false, &res, NULL) == TT_OK)
      tt_unref(res);
    else
      atomic_fetch_add(&ran, 1000);
  }
  return NULL;
}

TEST(flight_many_keys) {
  tt_flight *sf = tt_flight_new();
  tt_ctx *rel = tt_with_cancel(tt_background());
  static char keys[40][16];
  pthread_t t[4];
  caller cs[40];
  int i;
  atomic_store(&ran, 0);
  for (i = 0; i < 4; i++)
    CHECK_EQ(pthread_create(&t[i], NULL, many_keys, sf), 0);
  for (i = 0; i < 4; i++) CHECK_EQ(pthread_join(t[i], NULL), 0);
  CHECK_EQ(atomic_load(&ran), 0);
  CHECK_EQ(tt_flight_inflight(sf), 0);
  /* 40 distinct keys in flight at once: the table grows under them. */
  for (i = 0; i < 40; i++) {
    loader *l = malloc(sizeof *l);
    loader_init(l);
    l->release = tt_ref(rel);
    l->value = val_new();
    snprintf(keys[i], sizeof keys[i], "k%d", i);
    caller_start(&cs[i], sf, tt_background(), l, keys[i], NULL);
  }
  WAIT_FOR(tt_flight_inflight(sf) == 40, 30);  /* 40 threads to start */
  CHECK_EQ(tt_flight_inflight(sf), 40);
  tt_cancel(rel, NULL);
  tt_unref(rel);
  for (i = 0; i < 40; i++) {
    caller_join(&cs[i]);
    CHECK_EQ(cs[i].rc, TT_OK);
    CHECK(cs[i].result == cs[i].l->value);
    tt_unref(cs[i].result);
    loader_fini(cs[i].l);
    free(cs[i].l);
  }
  tt_unref(sf);
}

/* }==================================================================== */

/* {====================================================================
** Asynchronous callers
** ===================================================================== */

/* What one async caller's callback received.  'called' is canceled by the
** first call, so that a test waits on it rather than for a while. */
typedef struct got {
  atomic_int calls;
  int rc;
  tt_obj *result;          /* a reference taken in the callback */
  bool shared;
  pthread_t thread;
  tt_ctx *called;
} got;

static void got_init(got *g) {
  memset(g, 0, sizeof *g);
  atomic_init(&g->calls, 0);
  g->rc = -1;
  g->called = tt_with_cancel(tt_background());
}

static void got_fini(got *g) {
  tt_unref(g->result);
  tt_unref(g->called);
}

/* cancel_held cancels a context that the waiting test frees as soon as
** it is done: the reference keeps it alive until the cancel returns. */
static void cancel_held(tt_ctx *ctx) {
  tt_ref(ctx);
  tt_cancel(ctx, NULL);
  tt_unref(ctx);
}

static void on_result(void *p, int rc, tt_obj *result, bool shared) {
  got *g = p;
  if (atomic_load(&g->calls) == 0) {
    g->rc = rc;
    g->result = tt_ref(result);
    g->shared = shared;
    g->thread = pthread_self();
  }
  atomic_fetch_add(&g->calls, 1);
  cancel_held(g->called);
}

/* got_wait waits (at most 5 s) for the callback. */
static bool got_wait(got *g) {
  return tt_ctx_wait(g->called, 5 * th_slow());
}

static int call_async(tt_flight *sf, tt_ctx *ctx, const char *key,
                      loader *l, bool cancel_abandoned, got *g) {
  return tt_flight_call_async(sf, ctx, key, strlen(key), load, l,
                              count_drop, -1, cancel_abandoned, on_result,
                              g);
}

#define NASYNC 5

TEST(flight_async_and_threads_share_one_run) {
  tt_flight *sf = tt_flight_new();
  caller cs[3];
  got gs[NASYNC];
  atomic_int entered;
  loader l;
  int i;
  loader_init(&l);
  l.release = tt_with_cancel(tt_background());
  l.value = val_new();
  atomic_init(&entered, 0);
  atomic_store(&drops, 0);
  /* An async caller starts the run; threads and more async callers join
  ** it, and all of them count as waiting. */
  for (i = 0; i < NASYNC; i++) got_init(&gs[i]);
  CHECK_EQ(call_async(sf, tt_background(), "k", &l, false, &gs[0]), TT_OK);
  for (i = 0; i < 3; i++)
    caller_start(&cs[i], sf, tt_background(), &l, "k", &entered);
  for (i = 1; i < NASYNC; i++) {
    tt_ctx *ctx = tt_with_cancel(tt_background());
    CHECK_EQ(call_async(sf, ctx, "k", &l, false, &gs[i]), TT_OK);
    tt_unref(ctx);  /* the join keeps what it needs */
  }
  WAIT_FOR(tt_flight_waiting(sf, "k", 1) == 3 + NASYNC, 5);
  CHECK_EQ(tt_flight_waiting(sf, "k", 1), 3 + NASYNC);
  for (i = 0; i < NASYNC; i++) CHECK_EQ(atomic_load(&gs[i].calls), 0);
  tt_cancel(l.release, NULL);
  for (i = 0; i < 3; i++) {
    caller_join(&cs[i]);
    CHECK_EQ(cs[i].rc, TT_OK);
    CHECK(cs[i].result == l.value);
    CHECK(cs[i].shared);
    tt_unref(cs[i].result);
  }
  for (i = 0; i < NASYNC; i++) {
    CHECK(got_wait(&gs[i]));
    CHECK_EQ(gs[i].rc, TT_OK);
    CHECK(gs[i].result == l.value);
    CHECK(gs[i].shared);
    /* On the thread that ran the function, after it returned. */
    CHECK(pthread_equal(gs[i].thread, l.thread));
  }
  CHECK_EQ(atomic_load(&l.runs), 1);
  CHECK_EQ(atomic_load(&drops), 3 + NASYNC);
  CHECK_EQ(tt_flight_inflight(sf), 0);
  CHECK_EQ(tt_flight_waiting(sf, "k", 1), 0);
  tt_unref(sf);
  /* Exactly once: nothing more comes once the flight is gone. */
  for (i = 0; i < NASYNC; i++) {
    CHECK_EQ(atomic_load(&gs[i].calls), 1);
    got_fini(&gs[i]);
  }
  loader_fini(&l);
}

TEST(flight_async_error_is_shared) {
  tt_flight *sf = tt_flight_new();
  got a, b;
  loader l;
  loader_init(&l);
  l.release = tt_with_cancel(tt_background());
  l.fail = true;
  l.error = (tt_obj *)tt_error_new(TT_EFAILED, "db down", NULL);
  got_init(&a);
  got_init(&b);
  CHECK_EQ(call_async(sf, tt_background(), "k", &l, false, &a), TT_OK);
  CHECK_EQ(call_async(sf, tt_background(), "k", &l, false, &b), TT_OK);
  CHECK_EQ(tt_flight_waiting(sf, "k", 1), 2);
  tt_cancel(l.release, NULL);
  CHECK(got_wait(&a));
  CHECK(got_wait(&b));
  CHECK_EQ(a.rc, TT_EFAILED);
  CHECK_EQ(b.rc, TT_EFAILED);
  CHECK(a.result == l.error && b.result == l.error);
  CHECK(a.shared && b.shared);
  CHECK_EQ(atomic_load(&l.runs), 1);
  got_fini(&a);
  got_fini(&b);
  loader_fini(&l);
  tt_unref(sf);
}

/* An async caller whose context ends leaves with its error; the others
** still get the value. */
TEST(flight_async_ctx_ends_first) {
  tt_flight *sf = tt_flight_new();
  tt_ctx *actx = tt_with_cancel(tt_background());
  got a, b;
  caller t;
  loader l;
  loader_init(&l);
  l.release = tt_with_cancel(tt_background());
  l.value = val_new();
  got_init(&a);
  got_init(&b);
  CHECK_EQ(call_async(sf, actx, "k", &l, false, &a), TT_OK);
  CHECK_EQ(call_async(sf, tt_background(), "k", &l, false, &b), TT_OK);
  caller_start(&t, sf, tt_background(), &l, "k", NULL);
  WAIT_FOR(tt_flight_waiting(sf, "k", 1) == 3, 5);
  CHECK_EQ(tt_flight_waiting(sf, "k", 1), 3);
  tt_cancel(actx, NULL);
  CHECK(got_wait(&a));
  CHECK_EQ(a.rc, TT_CANCELED);
  CHECK(a.result == NULL);
  CHECK(!a.shared);
  /* It left while the run goes on. */
  CHECK_EQ(atomic_load(&l.finished), 0);
  CHECK_EQ(tt_flight_waiting(sf, "k", 1), 2);
  CHECK_EQ(atomic_load(&b.calls), 0);
  tt_cancel(l.release, NULL);
  caller_join(&t);
  CHECK(got_wait(&b));
  CHECK_EQ(t.rc, TT_OK);
  CHECK_EQ(b.rc, TT_OK);
  CHECK(b.result == l.value && t.result == l.value);
  CHECK(b.shared && t.shared);  /* delivered to two callers */
  tt_unref(t.result);
  CHECK_EQ(atomic_load(&l.runs), 1);
  CHECK_EQ(atomic_load(&l.work_err), 0);
  CHECK_EQ(atomic_load(&a.calls), 1);
  got_fini(&a);
  got_fini(&b);
  loader_fini(&l);
  tt_unref(actx);
  tt_unref(sf);
}

TEST(flight_async_cancel_when_abandoned) {
  tt_flight *sf = tt_flight_new();
  tt_ctx *actx = tt_with_cancel(tt_background());
  tt_ctx *bctx = tt_with_cancel(tt_background());
  got a, b;
  loader l;
  loader_init(&l);
  l.wait_work = true;
  got_init(&a);
  got_init(&b);
  CHECK_EQ(call_async(sf, actx, "k", &l, true, &a), TT_OK);
  CHECK_EQ(call_async(sf, bctx, "k", &l, false, &b), TT_OK);
  CHECK(until(&l.runs, 1));
  tt_cancel(actx, NULL);
  CHECK(got_wait(&a));
  CHECK_EQ(a.rc, TT_CANCELED);
  /* One caller is still there: the run goes on. */
  CHECK_EQ(tt_flight_inflight(sf), 1);
  CHECK_EQ(tt_flight_waiting(sf, "k", 1), 1);
  CHECK_EQ(atomic_load(&l.finished), 0);
  tt_cancel(bctx, NULL);
  CHECK(got_wait(&b));
  CHECK_EQ(b.rc, TT_CANCELED);
  CHECK(b.result == NULL);
  /* Every caller left: the run left the table and was canceled. */
  CHECK_EQ(tt_flight_inflight(sf), 0);
  CHECK(until(&l.finished, 1));
  CHECK_EQ(atomic_load(&l.work_err), TT_CANCELED);
  CHECK(strcmp(message_of(l.work_cause), "singleflight: every caller left")
        == 0);
  CHECK_EQ(atomic_load(&a.calls), 1);
  CHECK_EQ(atomic_load(&b.calls), 1);
  got_fini(&a);
  got_fini(&b);
  loader_fini(&l);
  tt_unref(actx);
  tt_unref(bctx);
  tt_unref(sf);
}

TEST(flight_async_forget) {
  tt_flight *sf = tt_flight_new();
  got a, b;
  loader l;
  loader_init(&l);
  l.release = tt_with_cancel(tt_background());
  l.value = val_new();
  got_init(&a);
  got_init(&b);
  CHECK_EQ(call_async(sf, tt_background(), "k", &l, false, &a), TT_OK);
  tt_flight_forget(sf, "k", 1);
  CHECK_EQ(tt_flight_inflight(sf), 0);
  CHECK_EQ(tt_flight_waiting(sf, "k", 1), 0);
  CHECK_EQ(call_async(sf, tt_background(), "k", &l, false, &b), TT_OK);
  CHECK(until(&l.runs, 2));
  tt_cancel(l.release, NULL);
  CHECK(got_wait(&a));
  CHECK(got_wait(&b));
  CHECK_EQ(a.rc, TT_OK);
  CHECK_EQ(b.rc, TT_OK);
  CHECK(!a.shared && !b.shared);  /* each run had one caller */
  CHECK_EQ(atomic_load(&l.runs), 2);
  got_fini(&a);
  got_fini(&b);
  loader_fini(&l);
  tt_unref(sf);
}

TEST(flight_async_refusals_call_nothing) {
  tt_flight *sf = tt_flight_new();
  tt_ctx *done = tt_with_cancel(tt_background());
  got g;
  loader l;
  loader_init(&l);
  got_init(&g);
  tt_cancel(done, NULL);
  atomic_store(&drops, 0);
  CHECK_EQ(call_async(sf, done, "k", &l, false, &g), TT_CANCELED);
  CHECK_EQ(tt_flight_call_async(sf, tt_background(), "k", 1, load, &l,
                                count_drop, -1, false, NULL, &g),
           TT_EINVAL);
  CHECK_EQ(tt_flight_call_async(sf, tt_background(), "k", 1, NULL, &l,
                                count_drop, -1, false, on_result, &g),
           TT_EINVAL);
  CHECK_EQ(atomic_load(&drops), 3);
  CHECK_EQ(atomic_load(&l.runs), 0);
  CHECK_EQ(tt_flight_inflight(sf), 0);
  CHECK_EQ(atomic_load(&g.calls), 0);
  got_fini(&g);
  loader_fini(&l);
  tt_unref(done);
  tt_unref(sf);
}

/* A callback that calls again for its key starts a new run: the ended
** run is no longer in the table when the callbacks come. */
typedef struct again {
  tt_flight *sf;
  atomic_int runs;
  got second;
  int first_rc;
} again;

static int count_run(tt_ctx *ctx, void *arg, tt_obj **out) {
  again *a = arg;
  (void)ctx;
  atomic_fetch_add(&a->runs, 1);
  *out = val_new();
  return TT_OK;
}

static void call_again(void *p, int rc, tt_obj *result, bool shared) {
  again *a = p;
  (void)result;
  (void)shared;
  a->first_rc = rc;
  CHECK_EQ(tt_flight_call_async(a->sf, tt_background(), "k", 1, count_run,
                                a, NULL, -1, false, on_result, &a->second),
           TT_OK);
}

TEST(flight_async_callback_calls_again) {
  again a;
  memset(&a, 0, sizeof a);
  a.sf = tt_flight_new();
  atomic_init(&a.runs, 0);
  a.first_rc = -1;
  got_init(&a.second);
  CHECK_EQ(tt_flight_call_async(a.sf, tt_background(), "k", 1, count_run,
                                &a, NULL, -1, false, call_again, &a),
           TT_OK);
  CHECK(got_wait(&a.second));
  CHECK_EQ(a.first_rc, TT_OK);
  CHECK_EQ(a.second.rc, TT_OK);
  CHECK(a.second.result != NULL);
  CHECK_EQ(atomic_load(&a.runs), 2);
  got_fini(&a.second);
  tt_unref(a.sf);
}

/* A context canceled while the run ends: each caller gets one callback,
** the value or the context's error, never both. */
typedef struct race {
  atomic_int calls;
  atomic_int oks;
  tt_ctx *all;             /* canceled by the last callback */
  int want;
} race;

static void on_race(void *p, int rc, tt_obj *result, bool shared) {
  race *r = p;
  (void)shared;
  if (rc == TT_OK) {
    CHECK(result != NULL);
    atomic_fetch_add(&r->oks, 1);
  } else {
    CHECK_EQ(rc, TT_CANCELED);
    CHECK(result == NULL);
  }
  if (atomic_fetch_add(&r->calls, 1) + 1 == r->want) cancel_held(r->all);
}

TEST(flight_async_cancel_races_the_run) {
  enum { N = 300 };
  tt_flight *sf = tt_flight_new();
  race r;
  int i;
  atomic_init(&r.calls, 0);
  atomic_init(&r.oks, 0);
  r.all = tt_with_cancel(tt_background());
  r.want = N;
  for (i = 0; i < N; i++) {
    tt_ctx *ctx = tt_with_cancel(tt_background());
    char key[16];
    snprintf(key, sizeof key, "k%d", i % 4);
    CHECK_EQ(tt_flight_call_async(sf, ctx, key, strlen(key), ok_value, NULL,
                                  NULL, -1, i % 2 == 0, on_race, &r),
             TT_OK);
    tt_cancel(ctx, NULL);
    tt_unref(ctx);
  }
  CHECK(tt_ctx_wait(r.all, 30 * th_slow()));
  CHECK_EQ(atomic_load(&r.calls), N);
  tt_unref(r.all);
  tt_unref(sf);
}

/* }==================================================================== */

TEST_MAIN()
