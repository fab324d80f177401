/*
** test_group.c -- errgroups (group.c): the first error, gctx, limits,
** batches, waiting again, tasks that start tasks, detached work, and
** tasks that cannot start.
*/
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "harness.h"
#include "task.h"

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
  tt_group *g = tt_group_new(tt_background(), TT_NO_LIMIT, &gctx);
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
  tt_group *g = tt_group_new(tt_background(), TT_NO_LIMIT, &gctx);
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
  tt_group *g = tt_group_new(tt_background(), TT_NO_LIMIT, &gctx);
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
  tt_group *g = tt_group_new(parent, TT_NO_LIMIT, &gctx);
  CHECK_EQ(tt_ctx_err(gctx), 0);
  tt_cancel(parent, NULL);
  CHECK_EQ(tt_ctx_err(gctx), TT_CANCELED);
  tt_unref(gctx);
  CHECK(tt_group_new(NULL, TT_NO_LIMIT, &gctx) == NULL && gctx == NULL);
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
  tt_group *g = tt_group_new(tt_background(), TT_NO_LIMIT, &gctx);
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

/* The root task starts three leaves and ends; the leaves wait for a
** gate that opens only once the root has ended and the three leaves are
** the group's active tasks, so the wait must cover tasks that outlive
** the one that started them. */
typedef struct nest {
  tt_group *g;
  tt_ctx *gate;
} nest;

static int nested_leaf(tt_ctx *ctx, void *arg, tt_obj **out) {
  nest *n = arg;
  (void)ctx;
  (void)out;
  tt_ctx_wait(n->gate, 5);
  atomic_fetch_add(&ran, 1);
  return TT_OK;
}

static int nested_root(tt_ctx *ctx, void *arg, tt_obj **out) {
  nest *n = arg;
  int i;
  (void)ctx;
  (void)out;
  for (i = 0; i < 3; i++) tt_group_go(n->g, nested_leaf, n, NULL);
  atomic_fetch_add(&ran, 1);
  return TT_OK;
}

static void *open_gate(void *arg) {
  nest *n = arg;
  WAIT_FOR(atomic_load(&ran) == 1 && tt_group_active(n->g) == 3, 5);
  tt_cancel(n->gate, NULL);
  return NULL;
}

TEST(group_wait_covers_tasks_started_by_tasks) {
  tt_ctx *gctx;
  nest n;
  pthread_t t;
  n.g = tt_group_new(tt_background(), TT_NO_LIMIT, &gctx);
  n.gate = tt_with_cancel(tt_background());
  atomic_store(&ran, 0);
  CHECK_EQ(pthread_create(&t, NULL, open_gate, &n), 0);
  CHECK_EQ(tt_group_go(n.g, nested_root, &n, NULL), TT_OK);
  CHECK_EQ(tt_group_wait(n.g, NULL), TT_OK);
  CHECK_EQ(atomic_load(&ran), 4);
  CHECK_EQ(pthread_join(t, NULL), 0);
  tt_unref(n.gate);
  tt_unref(n.g);
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
  a->h = tt_go(a->det, "audit", audit_job, a, NULL, &err);
  return err;
}

TEST(group_detached_work_outlives_failure) {
  tt_ctx *gctx;
  tt_group *g = tt_group_new(tt_background(), TT_NO_LIMIT, &gctx);
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
** Start failures and limits
** ===================================================================== */

static int code_of(tt_obj *err) {
  return err != NULL && err->type == &tt_error_type ? ((tt_error *)err)->code
                                                    : -1;
}

/* A task that cannot start (no thread can be made) fails the group: its
** error is the first error, cancels gctx and is what wait returns, even
** for a caller that never looked at what go returned. */
TEST(group_start_failure_is_the_groups_error) {
  tt_ctx *gctx;
  tt_group *g = tt_group_new(tt_background(), TT_NO_LIMIT, &gctx);
  tt_obj *err, *cause, *again;
  atomic_store(&drops, 0);
  atomic_store(&ran, 0);
  tt_shutdown();  /* no executor thread left: the task needs a new one */
  tt_test_fail_threads(1);
  CHECK_EQ(tt_group_go(g, count_run, NULL, count_drop), TT_ETHREAD);
  CHECK_EQ(atomic_load(&drops), 0);  /* the caller keeps its argument */
  CHECK_EQ(tt_group_active(g), 0);
  CHECK_EQ(tt_ctx_err(gctx), TT_CANCELED);
  CHECK_EQ(tt_group_wait(g, &err), TT_EFAILED);
  CHECK_EQ(code_of(err), TT_ETHREAD);
  cause = tt_ctx_cause(gctx);
  CHECK(cause == err);
  tt_unref(cause);
  /* Later tasks run; the first error stays the group's. */
  CHECK_EQ(tt_group_go(g, count_run, NULL, NULL), TT_OK);
  CHECK_EQ(tt_group_wait(g, &again), TT_EFAILED);
  CHECK(again == err);
  CHECK_EQ(atomic_load(&ran), 1);
  tt_unref(again);
  tt_unref(err);
  tt_unref(g);
  tt_unref(gctx);
}

TEST(group_try_go_start_failure_fails_the_group_too) {
  tt_ctx *gctx;
  tt_group *g = tt_group_new(tt_background(), 2, &gctx);
  tt_error *first = tt_error_new(TT_EFAILED, "first", NULL);
  tt_obj *err;
  /* An earlier failure stays the first error. */
  CHECK_EQ(tt_group_go(g, fail_now, first, NULL), TT_OK);
  CHECK_EQ(tt_group_wait(g, NULL), TT_EFAILED);
  tt_shutdown();
  tt_test_fail_threads(1);
  CHECK(!tt_group_try_go(g, count_run, NULL, NULL));
  CHECK_EQ(tt_group_active(g), 0);
  CHECK_EQ(tt_group_wait(g, &err), TT_EFAILED);
  CHECK(err == &first->hdr);
  tt_unref(err);
  tt_unref(g);
  tt_unref(gctx);
  /* On a group without a failure, it is the error. */
  g = tt_group_new(tt_background(), 2, &gctx);
  tt_shutdown();
  tt_test_fail_threads(1);
  CHECK(!tt_group_try_go(g, count_run, NULL, NULL));
  CHECK_EQ(tt_group_wait(g, &err), TT_EFAILED);
  CHECK_EQ(code_of(err), TT_ETHREAD);
  tt_unref(err);
  tt_unref(g);
  tt_unref(gctx);
  tt_unref(first);
}

/* As Go's SetLimit(0): no task is admitted.  Go's Go would block forever;
** tt_group_go refuses at once, and the refusal is not the group's
** error. */
TEST(group_limit_zero_admits_no_task) {
  tt_ctx *gctx;
  tt_group *g = tt_group_new(tt_background(), 0, &gctx);
  atomic_store(&drops, 0);
  CHECK_EQ(tt_group_go(g, count_run, NULL, count_drop), TT_EINVAL);
  CHECK(!tt_group_try_go(g, count_run, NULL, count_drop));
  CHECK_EQ(atomic_load(&drops), 0);
  CHECK_EQ(tt_group_active(g), 0);
  CHECK_EQ(tt_group_wait(g, NULL), TT_OK);
  tt_unref(g);
  tt_unref(gctx);
}

/* As Go's SetLimit(-1): a negative limit is no limit. */
TEST(group_negative_limit_is_no_limit) {
  tt_ctx *gctx, *gate = tt_with_cancel(tt_background());
  tt_group *g = tt_group_new(tt_background(), -5, &gctx);
  int i;
  for (i = 0; i < 8; i++)
    CHECK(tt_group_try_go(g, wait_release, gate, NULL));
  WAIT_FOR(tt_group_active(g) == 8, 5);
  CHECK_EQ(tt_group_active(g), 8);
  tt_cancel(gate, NULL);
  CHECK_EQ(tt_group_wait(g, NULL), TT_OK);
  tt_unref(gate);
  tt_unref(g);
  tt_unref(gctx);
}

/* note_thread records the thread it runs on. */
static pthread_t ran_on;
static atomic_int noted;

static int note_thread(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  (void)out;
  ran_on = pthread_self();
  atomic_fetch_add(&noted, 1);
  return TT_OK;
}

/* Tasks that wait for an executor thread run on the waiting thread, as
** goroutines run on the thread that blocks in Go's Wait; a group told not
** to leaves them to the executor. */
TEST(group_wait_runs_queued_tasks_itself) {
  tt_ctx *gctx, *gate = tt_with_cancel(tt_background());
  tt_group *g;
  tt_handle *b;
  /* The executor's only thread is busy until the gate opens. */
  tt__exec_shutdown();
  tt__exec_tune(1, -1);
  b = tt_go(NULL, "busy", wait_release, gate, NULL, NULL);
  WAIT_FOR(tt_handle_state(b) == TT_H_RUNNING, 5);
  CHECK_EQ(tt_handle_state(b), TT_H_RUNNING);
  atomic_store(&noted, 0);
  g = tt_group_new(tt_background(), TT_NO_LIMIT, &gctx);
  CHECK_EQ(tt_group_go(g, note_thread, NULL, NULL), TT_OK);
  CHECK_EQ(tt_group_go(g, note_thread, NULL, NULL), TT_OK);
  CHECK_EQ(tt_group_wait(g, NULL), TT_OK);
  CHECK_EQ(atomic_load(&noted), 2);
  CHECK(pthread_equal(ran_on, pthread_self()));
  tt_unref(g);
  tt_unref(gctx);
  /* Not inline: the task waits for the busy thread. */
  g = tt_group_new(tt_background(), TT_NO_LIMIT, &gctx);
  tt_group_set_inline(g, false);
  CHECK_EQ(tt_group_go(g, note_thread, NULL, NULL), TT_OK);
  CHECK_EQ(tt_group_active(g), 1);
  CHECK_EQ(atomic_load(&noted), 2);
  tt_cancel(gate, NULL);
  CHECK_EQ(tt_group_wait(g, NULL), TT_OK);
  CHECK_EQ(atomic_load(&noted), 3);
  CHECK(!pthread_equal(ran_on, pthread_self()));
  CHECK(tt_latch_wait(tt_handle_latch(b), 5));
  tt__exec_tune(64, -1);
  tt_unref(b);
  tt_unref(g);
  tt_unref(gctx);
  tt_unref(gate);
}

/* }==================================================================== */

TEST_MAIN()
