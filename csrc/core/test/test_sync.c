/*
** test_sync.c -- errgroups, singleflight and sagas.
**
** Timing: only lower bounds on durations are checked; where a test needs
** several callers to be waiting at once it waits for them to get there
** and then leaves a generous margin.
*/
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#include "harness.h"

/* {====================================================================
** Helpers
** ===================================================================== */

/* A value type that counts its frees, to see that results are released. */
static atomic_int vals_freed;

static void val_free(tt_obj *o) {
  atomic_fetch_add(&vals_freed, 1);
  free(o);
}

static const tt_type val_type = {"test.Val", val_free, NULL};

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
  int i;
  for (i = 0; i < 5000 && atomic_load(n) < want; i++) usleep(1000);
  return atomic_load(n) >= want;
}

static const char *message_of(tt_obj *err) {
  if (err == NULL || err->type != &tt_error_type) return "";
  return ((tt_error *)err)->message;
}

/* }==================================================================== */


/* {====================================================================
** Errgroups
** ===================================================================== */

/* fail_now fails at once with the error object given as its argument. */
static int fail_now(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  *out = tt_ref(arg);
  return TT_EFAILED;
}

/* fail_after_cancel waits for the group's context to end, then fails with
** its own error, which must not replace the first. */
static int fail_after_cancel(tt_ctx *ctx, void *arg, tt_obj **out) {
  tt_ctx_wait(ctx, 5);
  *out = tt_ref(arg);
  return TT_EFAILED;
}

static int ok_value(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  *out = val_new();
  return TT_OK;
}

static atomic_int ran;

static int count_run(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  (void)out;
  atomic_fetch_add(&ran, 1);
  return TT_OK;
}

TEST(group_first_error_wins_and_cancels_gctx) {
  tt_ctx *gctx;
  tt_group *g = tt_group_new(tt_background(), 0, &gctx);
  tt_error *e1 = tt_error_new(TT_EFAILED, "first", NULL);
  tt_error *e2 = tt_error_new(TT_EFAILED, "second", NULL);
  tt_obj *err, *cause;
  int i;
  CHECK(g != NULL && gctx != NULL);
  CHECK(strcmp(g != NULL ? ((tt_obj *)g)->type->name : "", "tether.Group")
        == 0);
  for (i = 0; i < 4; i++)
    CHECK_EQ(tt_group_go(g, fail_after_cancel, e2, NULL), TT_OK);
  CHECK_EQ(tt_group_go(g, fail_now, e1, NULL), TT_OK);
  CHECK_EQ(tt_group_wait(g, &err), TT_EFAILED);
  CHECK(err == &e1->hdr);
  tt_unref(err);
  CHECK_EQ(tt_ctx_err(gctx), TT_CANCELED);
  cause = tt_ctx_cause(gctx);
  CHECK(cause == &e1->hdr);
  tt_unref(cause);
  /* Waiting again reports the same first error. */
  CHECK_EQ(tt_group_wait(g, &err), TT_EFAILED);
  CHECK(err == &e1->hdr);
  tt_unref(err);
  CHECK_EQ(tt_group_wait(g, NULL), TT_EFAILED);
  tt_unref(g);
  tt_unref(gctx);
  tt_unref(e1);
  tt_unref(e2);
}

static int fail_bare(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  (void)out;
  return TT_EQUOTA;
}

TEST(group_error_without_object) {
  tt_ctx *gctx;
  tt_group *g = tt_group_new(tt_background(), 0, &gctx);
  tt_obj *err;
  CHECK_EQ(tt_group_go(g, fail_bare, NULL, NULL), TT_OK);
  CHECK_EQ(tt_group_wait(g, &err), TT_EFAILED);
  CHECK(err != NULL && err->type == &tt_error_type);
  CHECK_EQ(err != NULL ? ((tt_error *)err)->code : -1, TT_EQUOTA);
  tt_unref(err);
  tt_unref(g);
  tt_unref(gctx);
}

TEST(group_clean_wait_cancels_gctx_with_canceled) {
  tt_ctx *gctx;
  tt_group *g = tt_group_new(tt_background(), 0, &gctx);
  tt_obj *err = &tt_deadline.hdr, *cause;
  int i;
  atomic_store(&vals_freed, 0);
  for (i = 0; i < 5; i++) CHECK_EQ(tt_group_go(g, ok_value, NULL, NULL), 0);
  /* Successes leave gctx alone until the wait. */
  CHECK(tt_latch_wait(tt_ctx_done(gctx), 0.05) == false);
  CHECK_EQ(tt_group_wait(g, &err), TT_OK);
  CHECK(err == NULL);
  CHECK_EQ(tt_ctx_err(gctx), TT_CANCELED);
  cause = tt_ctx_cause(gctx);
  CHECK(cause == &tt_canceled.hdr);
  tt_unref(cause);
  /* The tasks' results were discarded. */
  CHECK_EQ(atomic_load(&vals_freed), 5);
  tt_unref(g);
  tt_unref(gctx);
}

TEST(group_parent_cancel_reaches_gctx) {
  tt_ctx *parent = tt_with_cancel(tt_background()), *gctx;
  tt_group *g = tt_group_new(parent, 0, &gctx);
  CHECK_EQ(tt_ctx_err(gctx), 0);
  tt_cancel(parent, NULL);
  CHECK_EQ(tt_ctx_err(gctx), TT_CANCELED);
  tt_unref(gctx);
  CHECK(tt_group_new(NULL, 0, &gctx) == NULL && gctx == NULL);
  tt_unref(g);
  tt_unref(parent);
}

/* A limit test: each task counts itself in 'cur' and keeps the highest
** count in 'peak'.  Tasks wait (at most 2 s) until 'limit' of them run at
** once, so the peak reaches the limit whenever the limit allows it. */
typedef struct busy_args {
  int limit;
  tt_ctx *full;            /* canceled once 'limit' tasks run at once */
  atomic_int cur, peak;
} busy_args;

static int busy(tt_ctx *ctx, void *arg, tt_obj **out) {
  busy_args *b = arg;
  int n = atomic_fetch_add(&b->cur, 1) + 1, p = atomic_load(&b->peak);
  (void)ctx;
  (void)out;
  while (n > p && !atomic_compare_exchange_weak(&b->peak, &p, n)) {}
  if (n >= b->limit) tt_cancel(b->full, NULL);
  tt_ctx_wait(b->full, 2);
  usleep(2000);
  atomic_fetch_sub(&b->cur, 1);
  atomic_fetch_add(&ran, 1);
  return TT_OK;
}

TEST(group_limit_bounds_concurrency) {
  tt_ctx *gctx;
  tt_group *g = tt_group_new(tt_background(), 3, &gctx);
  busy_args b;
  int i;
  b.limit = 3;
  b.full = tt_with_cancel(tt_background());
  atomic_init(&b.cur, 0);
  atomic_init(&b.peak, 0);
  atomic_store(&ran, 0);
  for (i = 0; i < 12; i++) CHECK_EQ(tt_group_go(g, busy, &b, NULL), TT_OK);
  CHECK_EQ(tt_group_wait(g, NULL), TT_OK);
  CHECK_EQ(atomic_load(&ran), 12);
  CHECK_EQ(atomic_load(&b.peak), 3);
  tt_unref(b.full);
  tt_unref(g);
  tt_unref(gctx);
}

static int wait_release(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)out;
  tt_ctx_wait(arg, 5);
  return TT_OK;
}

TEST(group_try_go_refuses_at_limit) {
  tt_ctx *gctx, *rel = tt_with_cancel(tt_background());
  tt_group *g = tt_group_new(tt_background(), 1, &gctx);
  tt_obj *hold;
  tt_latch *l;
  atomic_store(&drops, 0);
  CHECK(tt_group_try_go(g, wait_release, rel, count_drop));
  CHECK(!tt_group_try_go(g, wait_release, rel, count_drop));
  CHECK_EQ(tt_group_active(g), 1);
  /* The refused argument stays with the caller. */
  CHECK_EQ(atomic_load(&drops), 0);
  l = tt_group_latch(g, &hold);
  CHECK(!tt_latch_wait(l, 0.02));
  tt_cancel(rel, NULL);
  CHECK(tt_latch_wait(l, 5));
  tt_unref(hold);
  CHECK_EQ(tt_group_wait(g, NULL), TT_OK);
  CHECK_EQ(atomic_load(&drops), 1);
  CHECK(tt_group_try_go(g, wait_release, rel, count_drop));
  CHECK_EQ(tt_group_wait(g, NULL), TT_OK);
  CHECK_EQ(atomic_load(&drops), 2);
  CHECK_EQ(tt_group_active(g), 0);
  /* An idle group's latch is set. */
  l = tt_group_latch(g, &hold);
  CHECK(tt_latch_is_set(l));
  tt_unref(hold);
  tt_unref(rel);
  tt_unref(g);
  tt_unref(gctx);
}

TEST(group_wait_again_after_more_go) {
  tt_ctx *gctx;
  tt_group *g = tt_group_new(tt_background(), 0, &gctx);
  tt_error *e1 = tt_error_new(TT_EFAILED, "late", NULL);
  tt_obj *err, *cause;
  int i;
  atomic_store(&ran, 0);
  CHECK_EQ(tt_group_wait(g, &err), TT_OK);  /* nothing started yet */
  for (i = 0; i < 3; i++) CHECK_EQ(tt_group_go(g, count_run, NULL, NULL), 0);
  CHECK_EQ(tt_group_wait(g, &err), TT_OK);
  CHECK_EQ(atomic_load(&ran), 3);
  CHECK_EQ(tt_ctx_err(gctx), TT_CANCELED);
  /* More work after the wait: the group takes it and waits for it. */
  for (i = 0; i < 2; i++) CHECK_EQ(tt_group_go(g, count_run, NULL, NULL), 0);
  CHECK_EQ(tt_group_go(g, fail_now, e1, NULL), TT_OK);
  CHECK_EQ(tt_group_wait(g, &err), TT_EFAILED);
  CHECK(err == &e1->hdr);
  tt_unref(err);
  CHECK_EQ(atomic_load(&ran), 5);
  /* gctx was canceled first by the clean wait: that cause stays. */
  cause = tt_ctx_cause(gctx);
  CHECK(cause == &tt_canceled.hdr);
  tt_unref(cause);
  CHECK_EQ(tt_group_go(g, count_run, NULL, NULL), TT_OK);
  CHECK_EQ(tt_group_wait(g, &err), TT_EFAILED);
  CHECK(err == &e1->hdr);
  tt_unref(err);
  CHECK_EQ(atomic_load(&ran), 6);
  tt_unref(g);
  tt_unref(gctx);
  tt_unref(e1);
}

static int nested_leaf(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  (void)out;
  usleep(20000);
  atomic_fetch_add(&ran, 1);
  return TT_OK;
}

static int nested_root(tt_ctx *ctx, void *arg, tt_obj **out) {
  int i;
  (void)ctx;
  (void)out;
  for (i = 0; i < 3; i++) tt_group_go(arg, nested_leaf, NULL, NULL);
  atomic_fetch_add(&ran, 1);
  return TT_OK;
}

TEST(group_wait_covers_tasks_started_by_tasks) {
  tt_ctx *gctx;
  tt_group *g = tt_group_new(tt_background(), 0, &gctx);
  atomic_store(&ran, 0);
  CHECK_EQ(tt_group_go(g, nested_root, g, NULL), TT_OK);
  CHECK_EQ(tt_group_wait(g, NULL), TT_OK);
  CHECK_EQ(atomic_load(&ran), 4);
  tt_unref(g);
  tt_unref(gctx);
}

/* Scenario 9: a group task hands audit work to a detached context
** (tt_without_cancel(gctx)) and tt_go; another task fails.  The group
** fails and gctx is canceled, but the audit still completes with a live
** context. */
typedef struct audit {
  tt_ctx *gctx;            /* to observe the group's failure */
  tt_ctx *det;
  atomic_int live_after_fail;
  atomic_int finished;
  tt_handle *h;            /* written by the spawning task */
} audit;

static int audit_job(tt_ctx *ctx, void *arg, tt_obj **out) {
  audit *a = arg;
  (void)ctx;
  /* Wait for the group to fail, then go on working. */
  tt_ctx_wait(a->gctx, 5);
  if (tt_ctx_err(a->gctx) != 0 && tt_ctx_err(a->det) == 0)
    atomic_store(&a->live_after_fail, 1);
  if (tt_sleep(0.02, a->det) == TT_OK) atomic_store(&a->finished, 1);
  *out = val_new();
  return TT_OK;
}

static int spawn_audit(tt_ctx *ctx, void *arg, tt_obj **out) {
  audit *a = arg;
  int err;
  (void)out;
  a->det = tt_without_cancel(ctx);
  a->h = tt_go("audit", audit_job, a, NULL, &err);
  return err;
}

TEST(group_detached_work_outlives_failure) {
  tt_ctx *gctx;
  tt_group *g = tt_group_new(tt_background(), 0, &gctx);
  tt_error *e1 = tt_error_new(TT_EFAILED, "payment declined", NULL);
  audit a;
  tt_obj *err, *res;
  memset(&a, 0, sizeof a);
  a.gctx = gctx;
  CHECK_EQ(tt_group_go(g, spawn_audit, &a, NULL), TT_OK);
  CHECK_EQ(tt_group_go(g, fail_now, e1, NULL), TT_OK);
  CHECK_EQ(tt_group_wait(g, &err), TT_EFAILED);
  CHECK(err == &e1->hdr);
  tt_unref(err);
  CHECK_EQ(tt_ctx_err(gctx), TT_CANCELED);
  CHECK(a.h != NULL);
  if (a.h != NULL) {
    CHECK(tt_latch_wait(tt_handle_latch(a.h), 5));
    CHECK_EQ(tt_handle_result(a.h, &res), TT_H_DONE);
    tt_unref(res);
    tt_unref(a.h);
  }
  CHECK_EQ(atomic_load(&a.live_after_fail), 1);
  CHECK_EQ(atomic_load(&a.finished), 1);
  CHECK_EQ(tt_ctx_err(a.det), 0);
  tt_unref(a.det);
  tt_unref(g);
  tt_unref(gctx);
  tt_unref(e1);
}

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
  tt_ctx *release;         /* wait for it (at most 5 s) if not NULL */
  bool wait_work;          /* wait (at most 5 s) for the work context */
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
  if (l->release != NULL) tt_ctx_wait(l->release, 5);
  if (l->wait_work) tt_ctx_wait(ctx, 5);
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
  usleep(100000);  /* let every caller reach the wait */
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
  usleep(100000);
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
  usleep(50000);
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
  usleep(50000);
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
  for (i = 0; i < 5000 && tt_flight_inflight(sf) < 40; i++) usleep(1000);
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
** Sagas
** ===================================================================== */

/* How one step behaves. */
typedef struct sbeh {
  int idx;
  bool fail_action;
  bool cancel_in_action;   /* cancel the trail's context first */
  int comp_fail_times;     /* the compensation fails this often; -1: always */
  bool comp_wait;          /* the compensation waits for its context */
  int comp_calls;
} sbeh;

/* What the saga did, in order: action i logs i + 1, compensation i logs
** -(i + 1). */
typedef struct trail {
  int ev[64];
  int n;
  tt_ctx *cancel;
  int comp_live;           /* compensations that saw a live context */
  int comp_values;         /* compensations that saw the "user" value */
  int deadlines;           /* compensations whose context had a deadline */
  bool other_thread;       /* a callback ran off the calling thread */
  pthread_t self;
} trail;

static int act(tt_ctx *ctx, void *state, void *ud, tt_obj **err) {
  trail *tr = state;
  sbeh *b = ud;
  (void)ctx;
  if (!pthread_equal(pthread_self(), tr->self)) tr->other_thread = true;
  tr->ev[tr->n++] = b->idx + 1;
  if (b->cancel_in_action) tt_cancel(tr->cancel, NULL);
  if (b->fail_action) {
    *err = (tt_obj *)tt_error_new(TT_EFAILED, "boom", NULL);
    return TT_EFAILED;
  }
  return TT_OK;
}

static int undo(tt_ctx *ctx, void *state, void *ud, tt_obj **err) {
  trail *tr = state;
  sbeh *b = ud;
  tt_key k = user_key();
  if (!pthread_equal(pthread_self(), tr->self)) tr->other_thread = true;
  tr->ev[tr->n++] = -(b->idx + 1);
  if (tt_ctx_err(ctx) == 0) tr->comp_live++;
  if (tt_ctx_value(ctx, &k, NULL)) tr->comp_values++;
  if (tt_ctx_deadline(ctx, NULL)) tr->deadlines++;
  b->comp_calls++;
  if (b->comp_wait) {
    tt_ctx_wait(ctx, 5);
    return tt_ctx_err(ctx);
  }
  if (b->comp_fail_times < 0 || b->comp_calls <= b->comp_fail_times) {
    *err = (tt_obj *)tt_error_new(TT_EFAILED, "undo failed", NULL);
    return TT_EFAILED;
  }
  return TT_OK;
}

static void trail_init(trail *tr, sbeh *bs, int n) {
  int i;
  memset(tr, 0, sizeof *tr);
  tr->self = pthread_self();
  memset(bs, 0, (size_t)n * sizeof *bs);
  for (i = 0; i < n; i++) bs[i].idx = i;
}

static void steps_init(tt_saga_step *st, sbeh *bs, int n) {
  static const char *const names[] = {"reserve", "charge", "ship", "mail"};
  int i;
  for (i = 0; i < n; i++) {
    st[i].name = names[i];
    st[i].action = act;
    st[i].compensate = undo;
    st[i].ud = &bs[i];
  }
}

/* The dead letter hook records its calls. */
static struct {
  int calls;
  char saga[32], step[32];
  tt_obj *err;
  int attempts;
  void *ud;
} dead;

static void on_dead(const char *saga, const char *step, tt_obj *err,
                    int attempts, void *ud) {
  dead.calls++;
  snprintf(dead.saga, sizeof dead.saga, "%s", saga);
  snprintf(dead.step, sizeof dead.step, "%s", step);
  tt_unref(dead.err);
  dead.err = tt_ref(err);
  dead.attempts = attempts;
  dead.ud = ud;
}

static void dead_reset(void) {
  tt_unref(dead.err);
  memset(&dead, 0, sizeof dead);
}

static bool ev_is(const trail *tr, const int *want, int n) {
  int i;
  if (tr->n != n) return false;
  for (i = 0; i < n; i++)
    if (tr->ev[i] != want[i]) return false;
  return true;
}

TEST(saga_compensates_in_reverse) {
  sbeh bs[3];
  tt_saga_step st[3];
  trail tr;
  tt_saga *s;
  tt_saga_report *r;
  static const int want[] = {1, 2, 3, -2, -1};
  trail_init(&tr, bs, 3);
  steps_init(st, bs, 3);
  bs[2].fail_action = true;
  s = tt_saga_new("order", st, 3, 1, NULL);
  CHECK(s != NULL);
  CHECK(strcmp(((tt_obj *)s)->type->name, "tether.Saga") == 0);
  CHECK_EQ(tt_saga_run(s, tt_background(), &tr, &r), TT_EFAILED);
  CHECK(ev_is(&tr, want, 5));
  CHECK(!tr.other_thread);
  CHECK(r != NULL);
  CHECK(strcmp(r->saga, "order") == 0);
  CHECK_EQ(r->code, TT_EFAILED);
  CHECK_EQ(r->failed_step, 2);
  CHECK(strcmp(message_of(r->error), "boom") == 0);
  CHECK_EQ(r->nsteps, 3);
  CHECK_EQ(r->compensation_failures, 0);
  CHECK_EQ(r->steps[0].status, TT_STEP_COMPENSATED);
  CHECK_EQ(r->steps[1].status, TT_STEP_COMPENSATED);
  CHECK_EQ(r->steps[2].status, TT_STEP_FAILED);
  CHECK_EQ(r->steps[0].attempts, 1);
  CHECK_EQ(r->steps[2].attempts, 0);
  CHECK(r->steps[0].error == NULL);
  CHECK(r->steps[2].error == r->error);
  CHECK(strcmp(r->steps[1].name, "charge") == 0);
  CHECK(tr.deadlines == 2);  /* the compensation timeout applied */
  CHECK(strcmp(tt_saga_status_name(r->steps[2].status), "failed") == 0);
  tt_saga_report_free(r);
  tt_unref(s);
}

TEST(saga_success_runs_no_compensation) {
  sbeh bs[3];
  tt_saga_step st[3];
  trail tr;
  tt_saga *s;
  tt_saga_report *r;
  static const int want[] = {1, 2, 3};
  int i;
  trail_init(&tr, bs, 3);
  steps_init(st, bs, 3);
  st[1].name = NULL;
  s = tt_saga_new(NULL, st, 3, 0, NULL);
  CHECK_EQ(tt_saga_run(s, tt_background(), &tr, &r), TT_OK);
  CHECK(ev_is(&tr, want, 3));
  CHECK_EQ(r->failed_step, -1);
  CHECK(r->error == NULL);
  CHECK(strcmp(r->saga, "saga") == 0);
  CHECK(strcmp(r->steps[1].name, "step 2") == 0);
  for (i = 0; i < 3; i++) CHECK_EQ(r->steps[i].status, TT_STEP_DONE);
  tt_saga_report_free(r);
  /* The report is optional, and a saga may run again. */
  CHECK_EQ(tt_saga_run(s, tt_background(), &tr, NULL), TT_OK);
  CHECK_EQ(tr.n, 6);
  CHECK_EQ(tt_saga_run(s, NULL, &tr, &r), TT_EINVAL);
  CHECK(r == NULL);
  tt_unref(s);
  st[0].action = NULL;
  CHECK(tt_saga_new("bad", st, 3, 0, NULL) == NULL);
}

TEST(saga_compensates_with_live_ctx_after_cancel) {
  sbeh bs[3];
  tt_saga_step st[3];
  trail tr;
  tt_saga *s;
  tt_saga_report *r;
  tt_key k = user_key();
  tt_bytes *ann = tt_bytes_new("ann", 3);
  tt_ctx *base = tt_with_cancel(tt_background());
  tt_ctx *ctx = tt_with_value(base, &k, &ann->hdr);
  static const int want[] = {1, 2, 3, -2, -1};
  trail_init(&tr, bs, 3);
  steps_init(st, bs, 3);
  tr.cancel = base;
  /* The request is canceled while the third step runs, which fails. */
  bs[2].cancel_in_action = true;
  bs[2].fail_action = true;
  s = tt_saga_new("order", st, 3, 0, NULL);
  CHECK_EQ(tt_saga_run(s, ctx, &tr, &r), TT_EFAILED);
  CHECK_EQ(tt_ctx_err(ctx), TT_CANCELED);
  CHECK(ev_is(&tr, want, 5));
  /* Detached: each compensation saw a live context with the values. */
  CHECK_EQ(tr.comp_live, 2);
  CHECK_EQ(tr.comp_values, 2);
  CHECK_EQ(tr.deadlines, 0);  /* no compensation timeout given */
  CHECK_EQ(r->steps[0].status, TT_STEP_COMPENSATED);
  CHECK_EQ(r->steps[1].status, TT_STEP_COMPENSATED);
  tt_saga_report_free(r);
  tt_unref(s);
  tt_unref(ctx);
  tt_unref(base);
  tt_unref(ann);
}

TEST(saga_stops_when_ctx_done_between_steps) {
  sbeh bs[3];
  tt_saga_step st[3];
  trail tr;
  tt_saga *s;
  tt_saga_report *r;
  tt_ctx *ctx = tt_with_cancel(tt_background());
  static const int want[] = {1, 2, -2, -1};
  trail_init(&tr, bs, 3);
  steps_init(st, bs, 3);
  tr.cancel = ctx;
  bs[1].cancel_in_action = true;  /* succeeds, but the caller gave up */
  s = tt_saga_new("order", st, 3, 1, NULL);
  CHECK_EQ(tt_saga_run(s, ctx, &tr, &r), TT_CANCELED);
  CHECK(ev_is(&tr, want, 4));
  CHECK_EQ(tr.comp_live, 2);
  CHECK_EQ(r->code, TT_CANCELED);
  CHECK_EQ(r->failed_step, 2);
  CHECK(r->error == &tt_canceled.hdr);
  CHECK_EQ(r->steps[2].status, TT_STEP_NOT_RUN);
  CHECK_EQ(r->steps[1].status, TT_STEP_COMPENSATED);
  CHECK_EQ(r->steps[0].status, TT_STEP_COMPENSATED);
  tt_saga_report_free(r);
  /* Already done before the first step: nothing runs. */
  trail_init(&tr, bs, 3);
  CHECK_EQ(tt_saga_run(s, ctx, &tr, &r), TT_CANCELED);
  CHECK_EQ(tr.n, 0);
  CHECK_EQ(r->failed_step, 0);
  tt_saga_report_free(r);
  tt_unref(s);
  tt_unref(ctx);
}

TEST(saga_compensation_timeout_is_bounded) {
  sbeh bs[2];
  tt_saga_step st[2];
  trail tr;
  tt_saga *s;
  tt_saga_report *r;
  tt_retry retry = {2, 0.01, 1, 0, 0};
  int tag;
  double t0;
  dead_reset();
  trail_init(&tr, bs, 2);
  steps_init(st, bs, 2);
  bs[0].comp_wait = true;
  bs[1].fail_action = true;
  s = tt_saga_new("order", st, 2, 0.05, &retry);
  tt_saga_set_on_compensation_failure(s, on_dead, &tag);
  t0 = tt_now();
  CHECK_EQ(tt_saga_run(s, tt_background(), &tr, &r), TT_EFAILED);
  /* Two attempts of 0.05 s each, and a pause between them. */
  CHECK(tt_now() - t0 >= 0.1);
  CHECK_EQ(bs[0].comp_calls, 2);
  CHECK_EQ(r->steps[0].status, TT_STEP_COMPENSATION_FAILED);
  CHECK_EQ(r->steps[0].attempts, 2);
  CHECK(r->steps[0].error == &tt_deadline.hdr);
  CHECK_EQ(r->compensation_failures, 1);
  CHECK_EQ(dead.calls, 1);
  CHECK(strcmp(dead.saga, "order") == 0);
  CHECK(strcmp(dead.step, "reserve") == 0);
  CHECK(dead.err == &tt_deadline.hdr);
  CHECK_EQ(dead.attempts, 2);
  CHECK(dead.ud == &tag);
  tt_saga_report_free(r);
  tt_unref(s);
  dead_reset();
}

TEST(saga_compensation_retries_are_counted) {
  sbeh bs[3];
  tt_saga_step st[3];
  trail tr;
  tt_saga *s;
  tt_saga_report *r;
  tt_retry retry = {3, 0.01, 2, 1, 0};
  static const int want[] = {1, 2, 3, -1, -1, -1};
  double t0;
  dead_reset();
  trail_init(&tr, bs, 3);
  steps_init(st, bs, 3);
  bs[0].comp_fail_times = 2;
  st[1].compensate = NULL;  /* nothing to undo */
  bs[2].fail_action = true;
  s = tt_saga_new("order", st, 3, 1, &retry);
  tt_saga_set_on_compensation_failure(s, on_dead, NULL);
  t0 = tt_now();
  CHECK_EQ(tt_saga_run(s, tt_background(), &tr, &r), TT_EFAILED);
  /* Pauses of 0.01 then 0.02 s before attempts 2 and 3. */
  CHECK(tt_now() - t0 >= 0.029);
  CHECK(ev_is(&tr, want, 6));
  CHECK_EQ(r->steps[0].status, TT_STEP_COMPENSATED);
  CHECK_EQ(r->steps[0].attempts, 3);
  CHECK(r->steps[0].error == NULL);
  CHECK_EQ(r->steps[1].status, TT_STEP_DONE);
  CHECK_EQ(r->steps[1].attempts, 0);
  CHECK_EQ(r->compensation_failures, 0);
  CHECK_EQ(dead.calls, 0);
  tt_saga_report_free(r);
  tt_unref(s);
}

TEST(saga_failed_compensation_is_reported_and_others_go_on) {
  sbeh bs[3];
  tt_saga_step st[3];
  trail tr;
  tt_saga *s;
  tt_saga_report *r;
  tt_retry retry = {2, 0, 0, 0, 0};
  static const int want[] = {1, 2, 3, -2, -2, -1};
  dead_reset();
  trail_init(&tr, bs, 3);
  steps_init(st, bs, 3);
  bs[1].comp_fail_times = -1;
  bs[2].fail_action = true;
  s = tt_saga_new("order", st, 3, 1, &retry);
  tt_saga_set_on_compensation_failure(s, on_dead, NULL);
  CHECK_EQ(tt_saga_run(s, tt_background(), &tr, &r), TT_EFAILED);
  CHECK(ev_is(&tr, want, 6));
  CHECK_EQ(r->steps[1].status, TT_STEP_COMPENSATION_FAILED);
  CHECK_EQ(r->steps[1].attempts, 2);
  CHECK(strcmp(message_of(r->steps[1].error), "undo failed") == 0);
  CHECK_EQ(r->steps[0].status, TT_STEP_COMPENSATED);
  CHECK_EQ(r->compensation_failures, 1);
  CHECK_EQ(dead.calls, 1);
  CHECK(strcmp(dead.step, "charge") == 0);
  CHECK(dead.err == r->steps[1].error);
  CHECK_EQ(dead.attempts, 2);
  CHECK(strcmp(tt_saga_status_name(r->steps[1].status),
               "compensation_failed") == 0);
  tt_saga_report_free(r);
  /* Without the hook the failure is still reported. */
  tt_saga_set_on_compensation_failure(s, NULL, NULL);
  trail_init(&tr, bs, 3);
  bs[1].comp_fail_times = -1;
  bs[2].fail_action = true;
  CHECK_EQ(tt_saga_run(s, tt_background(), &tr, &r), TT_EFAILED);
  CHECK_EQ(r->compensation_failures, 1);
  CHECK_EQ(dead.calls, 1);
  tt_saga_report_free(r);
  tt_unref(s);
  dead_reset();
}

/* }==================================================================== */

TEST_MAIN()
