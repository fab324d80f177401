/*
** test_ctx.c -- contexts, the timer thread, select and channels.
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
  for (i = 0; i < 500 && atomic_load(&af_runs) < 1; i++) usleep(1000);
  usleep(10000);
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

TEST(timer_waitable) {
  double t0 = tt_now();
  tt_timer *t = tt_after(0.02);
  CHECK(!tt_latch_is_set(tt_timer_latch(t)));
  CHECK(tt_latch_wait(tt_timer_latch(t), 5));
  CHECK(tt_now() - t0 >= 0.019);
  tt_unref(t);
}

TEST(select_default_and_nil) {
  tt_case c[2];
  memset(c, 0, sizeof c);
  c[0].kind = TT_CASE_NIL;
  c[1].kind = TT_CASE_LATCH;
  c[1].latch = tt_ctx_done(tt_background());
  CHECK_EQ(tt_select(c, 2, true, -1), TT_SELECT_DEFAULT);
  CHECK_EQ(tt_select(c, 2, false, 0.01), TT_SELECT_TIMEOUT);
}

TEST(buffered_chan) {
  tt_chan *ch = tt_chan_new(2);
  tt_bytes *a = tt_bytes_new("a", 1), *b = tt_bytes_new("b", 1);
  tt_obj *got;
  CHECK_EQ(tt_chan_try_send(ch, &a->hdr), TT_OK);
  CHECK_EQ(tt_chan_try_send(ch, &b->hdr), TT_OK);
  CHECK_EQ(tt_chan_try_send(ch, NULL), TT_EQUEUE_FULL);
  CHECK_EQ(tt_chan_len(ch), 2);
  CHECK_EQ(tt_chan_recv(ch, &got, NULL, -1), TT_OK);
  CHECK(got == &a->hdr);
  tt_unref(got);
  CHECK_EQ(tt_chan_close(ch), TT_OK);
  CHECK_EQ(tt_chan_close(ch), TT_ECLOSED);
  CHECK_EQ(tt_chan_send(ch, NULL, NULL, -1), TT_ECLOSED);
  CHECK_EQ(tt_chan_try_recv(ch, &got), TT_OK);
  CHECK(got == &b->hdr);
  tt_unref(got);
  CHECK_EQ(tt_chan_recv(ch, &got, NULL, -1), TT_ECLOSED);
  tt_unref(ch);
}

static void *producer(void *arg) {
  tt_chan *ch = arg;
  long i;
  for (i = 1; i <= 10000; i++) {
    tt_bytes *b = tt_bytes_new(&i, sizeof i);
    if (tt_chan_send(ch, &b->hdr, NULL, -1) != TT_OK) tt_unref(b);
  }
  tt_chan_close(ch);
  return NULL;
}

TEST(unbuffered_chan_between_threads) {
  tt_chan *ch = tt_chan_new(0);
  pthread_t t;
  long sum = 0, want = 10000L * 10001L / 2;
  tt_obj *got;
  CHECK_EQ(tt_chan_try_send(ch, NULL), TT_EQUEUE_FULL);
  CHECK_EQ(pthread_create(&t, NULL, producer, ch), 0);
  while (tt_chan_recv(ch, &got, NULL, -1) == TT_OK) {
    long v;
    memcpy(&v, ((tt_bytes *)got)->data, sizeof v);
    sum += v;
    tt_unref(got);
  }
  CHECK_EQ(pthread_join(t, NULL), 0);
  CHECK_EQ(sum, want);
  tt_unref(ch);
}

TEST(recv_bounded_by_context) {
  tt_chan *ch = tt_chan_new(0);
  tt_ctx *c = tt_with_timeout(tt_background(), 0.02, NULL);
  tt_obj *got;
  CHECK_EQ(tt_chan_recv(ch, &got, c, -1), TT_DEADLINE);
  CHECK_EQ(tt_chan_recv(ch, &got, NULL, 0.01), TT_ETIMEOUT);
  tt_unref(c);
  tt_unref(ch);
}

static void *canceler(void *arg) {
  usleep(20000);
  tt_cancel(arg, NULL);
  return NULL;
}

TEST(select_wakes_on_cancel_from_other_thread) {
  tt_ctx *c = tt_with_cancel(tt_background());
  tt_chan *ch = tt_chan_new(0);
  pthread_t t;
  tt_case cs[2];
  memset(cs, 0, sizeof cs);
  cs[0].kind = TT_CASE_RECV;
  cs[0].chan = ch;
  cs[1].kind = TT_CASE_LATCH;
  cs[1].latch = tt_ctx_done(c);
  CHECK_EQ(pthread_create(&t, NULL, canceler, c), 0);
  CHECK_EQ(tt_select(cs, 2, false, 5), 1);
  CHECK_EQ(pthread_join(t, NULL), 0);
  tt_unref(c);
  tt_unref(ch);
}

TEST(sleep_interrupted) {
  tt_ctx *c = tt_with_timeout(tt_background(), 0.01, NULL);
  CHECK_EQ(tt_sleep(5, c), TT_DEADLINE);
  CHECK_EQ(tt_sleep(0.001, NULL), TT_OK);
  tt_unref(c);
}

TEST(error_names) {
  CHECK(strcmp(tt_strerror(TT_CANCELED), "context canceled") == 0);
  CHECK(strcmp(tt_strerror(TT_DEADLINE), "context deadline exceeded") == 0);
  CHECK(strcmp(tt_errname(TT_EQUEUE_FULL), "queue_full") == 0);
}

TEST_MAIN()
