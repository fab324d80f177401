/*
** test_saga.c -- sagas (saga.c): compensations in reverse order on the
** calling thread, detached from the run's cancellation, bounded by their
** timeout, retried by policy, and reported.
*/
#include <pthread.h>
#include <stdbool.h>

#include "harness.h"

static const char *message_of(tt_obj *err) {
  if (err == NULL || err->type != &tt_error_type) return "";
  return ((tt_error *)err)->message;
}

static tt_key user_key(void) {
  tt_key k = {NULL, "user", 4};
  return k;
}

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
  REQUIRE(s != NULL);
  CHECK(strcmp(((tt_obj *)s)->type->name, "tether.Saga") == 0);
  CHECK_EQ(tt_saga_run(s, tt_background(), &tr, &r), TT_EFAILED);
  CHECK(ev_is(&tr, want, 5));
  CHECK(!tr.other_thread);
  REQUIRE(r != NULL);
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
