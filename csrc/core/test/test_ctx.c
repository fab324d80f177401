/*
** test_ctx.c -- contexts (ctx.c): cancellation, deadlines, values,
** after_func, and freeing chains of any depth.
*/
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "harness.h"

static tt_key skey(const char *s) {
  tt_key k = {NULL, s, strlen(s)};
  return k;
}

TEST(background_never_done) {
  tt_ctx *b = tt_background();
  double d;
  CHECK_EQ(tt_ctx_err(b), 0);
  CHECK(tt_ctx_done(b) == NULL);
  CHECK(!tt_ctx_deadline(b, &d));
  CHECK(tt_ctx_cause(b) == NULL);
  CHECK(tt_todo() != b);
}

TEST(cancel_is_idempotent_first_cause_wins) {
  tt_ctx *c = tt_with_cancel(tt_background());
  tt_bytes *c1 = tt_bytes_new("one", 3), *c2 = tt_bytes_new("two", 3);
  tt_obj *cause;
  CHECK_EQ(tt_ctx_err(c), 0);
  CHECK(tt_ctx_cause(c) == NULL);
  tt_cancel(c, &c1->hdr);
  tt_cancel(c, &c2->hdr);
  CHECK_EQ(tt_ctx_err(c), TT_CANCELED);
  cause = tt_ctx_cause(c);
  CHECK(cause == &c1->hdr);
  tt_unref(cause);
  CHECK(tt_latch_is_set(tt_ctx_done(c)));
  tt_unref(c);
  tt_unref(c1);
  tt_unref(c2);
}

TEST(cancel_without_cause_reports_the_error) {
  tt_ctx *c = tt_with_cancel(tt_background());
  tt_obj *cause;
  tt_cancel(c, NULL);
  cause = tt_ctx_cause(c);
  CHECK(cause == &tt_canceled.hdr);
  tt_unref(c);
}

TEST(propagation_to_descendants) {
  tt_ctx *root = tt_with_cancel(tt_background());
  tt_key k = skey("k");
  tt_ctx *v = tt_with_value(root, &k, NULL);
  tt_ctx *mid = tt_with_cancel(v);
  tt_ctx *leaf = tt_with_timeout(mid, 100, NULL);
  tt_ctx *det = tt_without_cancel(leaf);
  tt_ctx *under = tt_with_cancel(det);
  tt_cancel(root, NULL);
  CHECK_EQ(tt_ctx_err(v), TT_CANCELED);
  CHECK_EQ(tt_ctx_err(mid), TT_CANCELED);
  CHECK_EQ(tt_ctx_err(leaf), TT_CANCELED);
  CHECK_EQ(tt_ctx_err(det), 0);
  CHECK(tt_ctx_done(det) == NULL);
  CHECK_EQ(tt_ctx_err(under), 0);
  tt_unref(under);
  tt_unref(det);
  tt_unref(leaf);
  tt_unref(mid);
  tt_unref(v);
  tt_unref(root);
}

TEST(child_of_done_parent_is_done) {
  tt_ctx *p = tt_with_cancel(tt_background());
  tt_bytes *why = tt_bytes_new("why", 3);
  tt_ctx *c;
  tt_obj *cause;
  tt_cancel(p, &why->hdr);
  c = tt_with_cancel(p);
  CHECK_EQ(tt_ctx_err(c), TT_CANCELED);
  cause = tt_ctx_cause(c);
  CHECK(cause == &why->hdr);
  tt_unref(cause);
  tt_unref(c);
  tt_unref(p);
  tt_unref(why);
}

TEST(deadline_fires_with_cause_only_from_timer) {
  tt_bytes *why = tt_bytes_new("slow", 4);
  double t0 = tt_now();
  tt_ctx *a = tt_with_timeout(tt_background(), 0.02, &why->hdr);
  tt_ctx *b = tt_with_timeout(tt_background(), 10, &why->hdr);
  tt_obj *cause;
  CHECK(tt_ctx_wait(a, 5));
  CHECK(tt_now() - t0 >= 0.019);
  CHECK_EQ(tt_ctx_err(a), TT_DEADLINE);
  cause = tt_ctx_cause(a);
  CHECK(cause == &why->hdr);
  tt_unref(cause);
  tt_cancel(b, NULL);
  cause = tt_ctx_cause(b);
  CHECK(cause == &tt_canceled.hdr);
  tt_unref(cause);
  tt_unref(a);
  tt_unref(b);
  tt_unref(why);
}

TEST(past_deadline_is_done_at_once) {
  tt_ctx *a = tt_with_timeout(tt_background(), 0, NULL);
  tt_ctx *b = tt_with_deadline(tt_background(), tt_now() - 1, NULL);
  CHECK_EQ(tt_ctx_err(a), TT_DEADLINE);
  CHECK_EQ(tt_ctx_err(b), TT_DEADLINE);
  tt_unref(a);
  tt_unref(b);
}

TEST(child_deadline_is_the_earlier) {
  tt_ctx *p = tt_with_timeout(tt_background(), 1, NULL);
  tt_ctx *c = tt_with_timeout(p, 100, NULL);
  tt_ctx *d = tt_with_timeout(p, 0.5, NULL);
  double pd, cd, dd;
  CHECK(tt_ctx_deadline(p, &pd));
  CHECK(tt_ctx_deadline(c, &cd));
  CHECK(tt_ctx_deadline(d, &dd));
  CHECK(cd == pd);
  CHECK(dd < pd);
  tt_unref(d);
  tt_unref(c);
  tt_unref(p);
}

TEST(values_shadow_outward) {
  tt_key k = skey("user"), other = skey("usera");
  tt_bytes *k2obj = tt_bytes_new("", 0);
  tt_key objk = {&k2obj->hdr, NULL, 0};
  tt_bytes *v1 = tt_bytes_new("ann", 3), *v2 = tt_bytes_new("bob", 3);
  tt_ctx *a = tt_with_value(tt_background(), &k, &v1->hdr);
  tt_ctx *b = tt_with_value(a, &k, &v2->hdr);
  tt_ctx *c = tt_with_value(b, &k, NULL);
  tt_ctx *d = tt_without_cancel(b);
  tt_ctx *e = tt_with_value(d, &objk, &v1->hdr);
  tt_obj *got;
  CHECK(tt_ctx_value(a, &k, &got) && got == &v1->hdr);
  tt_unref(got);
  CHECK(tt_ctx_value(b, &k, &got) && got == &v2->hdr);
  tt_unref(got);
  CHECK(tt_ctx_value(c, &k, &got) && got == NULL);
  CHECK(tt_ctx_value(d, &k, &got) && got == &v2->hdr);
  tt_unref(got);
  CHECK(!tt_ctx_value(b, &other, &got));
  CHECK(tt_ctx_value(e, &objk, &got) && got == &v1->hdr);
  tt_unref(got);
  CHECK(!tt_ctx_value(b, &objk, &got));
  tt_unref(e);
  tt_unref(d);
  tt_unref(c);
  tt_unref(b);
  tt_unref(a);
  tt_unref(v1);
  tt_unref(v2);
  tt_unref(k2obj);
}

TEST(million_dropped_children_leave_parent_clean) {
  tt_ctx *p = tt_with_cancel(tt_background());
  int i;
  for (i = 0; i < 1000000; i++) {
    tt_ctx *c = tt_with_cancel(p);
    tt_unref(c);
  }
  /* Each child unlinked itself: canceling the parent walks nothing. */
  tt_cancel(p, NULL);
  CHECK_EQ(tt_ctx_err(p), TT_CANCELED);
  tt_unref(p);
}

static atomic_int af_runs;

static void af_fn(void *arg) {
  (void)arg;
  atomic_fetch_add(&af_runs, 1);
}

TEST(after_func_runs_once_and_stop) {
  tt_ctx *c = tt_with_cancel(tt_background());
  tt_afterfunc *a = tt_after_func(c, af_fn, NULL, NULL);
  tt_afterfunc *b = tt_after_func(c, af_fn, NULL, NULL);
  int i;
  atomic_store(&af_runs, 0);
  CHECK(tt_afterfunc_stop(b));
  CHECK(!tt_afterfunc_stop(b));
  tt_cancel(c, NULL);
  tt_cancel(c, NULL);
  for (i = 0; i < 500 && atomic_load(&af_runs) < 1; i++) th_sleep_us(1000);
  th_sleep_us(10000);
  CHECK_EQ(atomic_load(&af_runs), 1);
  CHECK(!tt_afterfunc_stop(a));
  tt_unref(a);
  tt_unref(b);
  tt_unref(c);
}

TEST(after_func_on_never_canceled) {
  tt_afterfunc *a = tt_after_func(tt_background(), af_fn, NULL, NULL);
  CHECK(tt_afterfunc_stop(a));
  tt_unref(a);
}

/* A million contexts, each the parent of the next (values, cancelable
** ones registered with their ancestor, detached ones), whose values hold
** errors: the last release frees the whole chain in constant stack. */
#define CHAIN 1000000

static void *ctx_chain(void *arg) {
  tt_key k = skey("depth");
  tt_ctx *c = tt_with_cancel(tt_background());
  tt_obj *got = NULL;
  int i;
  (void)arg;
  for (i = 0; i < CHAIN; i++) {
    tt_ctx *n;
    if (i % 3 == 0) {
      tt_error *e = tt_error_new(TT_EFAILED, "value", NULL);
      n = tt_with_value(c, &k, &e->hdr);
      tt_unref(e);
    } else if (i % 3 == 1) {
      n = tt_with_cancel(c);
    } else {
      n = tt_without_cancel(c);
    }
    tt_unref(c);
    c = n;
  }
  CHECK(tt_ctx_value(c, &k, &got) && got != NULL);
  tt_unref(got);
  tt_unref(c);
  return NULL;
}

TEST(million_nested_contexts_free_in_constant_stack) {
  th_on_small_stack(ctx_chain, NULL);
}

TEST_MAIN()
