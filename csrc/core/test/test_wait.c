/*
** test_wait.c -- the one waiting mechanism (wait.c): latches, timer
** waitables, tt_select over latches and channels, and tt_sleep.
*/
#include <pthread.h>
#include <stdatomic.h>

#include "harness.h"
#include "internal.h"

TEST(timer_waitable) {
  double t0 = tt_now();
  tt_timer *t = tt_after(0.02);
  /* Never early (a loaded machine may be late to look). */
  CHECK(!tt_latch_is_set(tt_timer_latch(t)) || tt_now() - t0 >= 0.019);
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
  CHECK_EQ(tt_select(c, 65, true, -1), TT_SELECT_INVALID);
}

/* latch_has_waiter tells whether a select is parked on 'l'. */
static bool latch_has_waiter(tt_latch *l) {
  bool b;
  tt__lock(&l->mu);
  b = !tt_list_empty(&l->waiters);
  tt__unlock(&l->mu);
  return b;
}

/* canceler cancels its context once the select is parked on it, so that
** the select is woken, not served by its first look. */
static void *canceler(void *arg) {
  tt_ctx *c = arg;
  WAIT_FOR(latch_has_waiter(tt_ctx_done(c)), 5);
  tt_cancel(c, NULL);
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

/* A send case whose item holds the case's channel is refused before
** anything happens, whatever the other cases could do. */
TEST(select_refuses_a_send_that_makes_a_cycle) {
  tt_chan *a = tt_chan_new(1), *b = tt_chan_new(1);
  tt_bytes *x = tt_bytes_new("x", 1);
  tt_ctx *holder;
  tt_key k = {NULL, "chan", 4};
  tt_case cs[3];
  holder = tt_with_value(tt_background(), &k, (tt_obj *)a);
  memset(cs, 0, sizeof cs);
  cs[0].kind = TT_CASE_SEND;
  cs[0].chan = b;
  cs[0].item = (tt_obj *)x;
  cs[1].kind = TT_CASE_SEND;
  cs[1].chan = a;
  cs[1].item = (tt_obj *)holder;        /* holds a: a cycle */
  cs[2].kind = TT_CASE_LATCH;
  cs[2].latch = tt_ctx_done(holder);
  CHECK_EQ(tt_select(cs, 3, true, -1), TT_SELECT_INVALID);
  CHECK(tt_holds(cs[1].item, cs[1].chan));
  CHECK(!tt_holds(cs[0].item, cs[0].chan));
  CHECK_EQ(tt_chan_len(a), 0);
  CHECK_EQ(tt_chan_len(b), 0);
  /* Without the bad case, the select goes on as usual. */
  CHECK_EQ(tt_select(cs, 1, true, -1), 0);
  CHECK_EQ(tt_chan_len(b), 1);
  /* Sending the holder into another channel is fine. */
  cs[1].chan = b;
  tt_ref(holder);
  CHECK_EQ(tt_chan_try_recv(b, &cs[0].item), TT_OK);
  CHECK_EQ(tt_select(&cs[1], 1, true, -1), 0);
  tt_unref(cs[0].item);
  tt_unref(holder);
  tt_unref(a);
  tt_unref(b);
}

TEST_MAIN()
