/*
** test_exec.c -- the elastic executor (tt_go, tt_exec) and task handles.
*/
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "harness.h"
#include "task.h"

static atomic_int drops;

static void count_drop(void *arg) {
  (void)arg;
  atomic_fetch_add(&drops, 1);
}

/* Task functions never use CHECK (it is not thread-safe): they record
** what they see in atomics that the test reads afterwards. */
static atomic_int bad_args;

static int fn_hello(tt_ctx *ctx, void *arg, tt_obj **out) {
  if (ctx != tt_background() || arg != (void *)&drops)
    atomic_fetch_add(&bad_args, 1);
  *out = (tt_obj *)tt_bytes_new("hello", 5);
  return TT_OK;
}

static int fn_fail_obj(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  *out = (tt_obj *)tt_error_new(TT_EFAILED, "boom", NULL);
  return TT_EFAILED;
}

static int fn_fail_code(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  (void)out;
  return TT_ETIMEOUT;
}

static int fn_fail_odd(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  (void)out;
  return -7;
}

/* fn_block waits until the gate context (its argument) is canceled. */
static int fn_block(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)out;
  tt_ctx_wait(arg, 10);
  return TT_OK;
}

TEST(go_result_and_drop) {
  int err = -1;
  tt_obj *res = NULL;
  tt_handle *h;
  atomic_store(&drops, 0);
  h = tt_go(NULL, "greet", fn_hello, &drops, count_drop, &err);
  CHECK(h != NULL);
  CHECK_EQ(err, TT_OK);
  CHECK(strcmp(tt_handle_name(h), "greet") == 0);
  CHECK(tt_latch_wait(tt_handle_latch(h), 5));
  CHECK_EQ(tt_handle_result(h, &res), TT_H_DONE);
  CHECK(res != NULL && res->type == &tt_bytes_type);
  if (res != NULL) CHECK(memcmp(((tt_bytes *)res)->data, "hello", 5) == 0);
  /* The argument is dropped before the handle resolves. */
  CHECK_EQ(atomic_load(&drops), 1);
  CHECK(!tt_handle_stop(h));
  CHECK_EQ(tt_handle_state(h), TT_H_DONE);
  CHECK_EQ(atomic_load(&bad_args), 0);
  tt_unref(res);
  tt_unref(h);
}

/* fn_ctx_value reads the "req" value of its context and whether the
** context is done. */
static int fn_ctx_value(tt_ctx *ctx, void *arg, tt_obj **out) {
  tt_key k = {NULL, "req", 3};
  (void)arg;
  if (!tt_ctx_value(ctx, &k, out) || tt_ctx_err(ctx) != 0)
    atomic_fetch_add(&bad_args, 1);
  return TT_OK;
}

/* The task gets the context given to tt_go and holds it until it ends:
** the caller may release its own reference at once. */
TEST(go_runs_with_the_given_context) {
  tt_key k = {NULL, "req", 3};
  tt_bytes *v = tt_bytes_new("r-42", 4);
  tt_ctx *req = tt_with_cancel(tt_background());
  tt_ctx *val = tt_with_value(req, &k, &v->hdr);
  tt_ctx *d = tt_without_cancel(val);
  tt_obj *res = NULL;
  tt_handle *h;
  atomic_store(&bad_args, 0);
  tt_cancel(req, NULL);  /* the request ends; the detached task does not */
  h = tt_go(d, "audit", fn_ctx_value, NULL, NULL, NULL);
  tt_unref(d);
  CHECK(h != NULL);
  CHECK(tt_latch_wait(tt_handle_latch(h), 5));
  CHECK_EQ(tt_handle_result(h, &res), TT_H_DONE);
  CHECK(res == &v->hdr);
  CHECK_EQ(atomic_load(&bad_args), 0);
  tt_unref(res);
  tt_unref(h);
  tt_unref(val);
  tt_unref(req);
  tt_unref(v);
}

TEST(go_default_name_and_describe) {
  tt_handle *h = tt_go(NULL, NULL, fn_hello, &drops, NULL, NULL);
  char buf[128];
  REQUIRE(h != NULL);
  CHECK(strcmp(tt_handle_name(h), "task") == 0);
  CHECK(tt_latch_wait(tt_handle_latch(h), 5));
  tt_describe(h, buf, sizeof buf);
  CHECK(strcmp(buf, "tether.Handle 'task' (done)") == 0);
  tt_unref(h);
}

TEST(go_failures) {
  tt_obj *res = NULL;
  tt_handle *h = tt_go(NULL, "a", fn_fail_obj, NULL, NULL, NULL);
  CHECK(tt_latch_wait(tt_handle_latch(h), 5));
  CHECK_EQ(tt_handle_result(h, &res), TT_H_FAILED);
  CHECK(res != NULL && res->type == &tt_error_type);
  if (res != NULL) {
    CHECK_EQ(((tt_error *)res)->code, TT_EFAILED);
    CHECK(strcmp(((tt_error *)res)->message, "boom") == 0);
  }
  tt_unref(res);
  tt_unref(h);

  h = tt_go(NULL, "b", fn_fail_code, NULL, NULL, NULL);
  CHECK(tt_latch_wait(tt_handle_latch(h), 5));
  CHECK_EQ(tt_handle_result(h, &res), TT_H_FAILED);
  CHECK(res != NULL && ((tt_error *)res)->code == TT_ETIMEOUT);
  tt_unref(res);
  tt_unref(h);

  h = tt_go(NULL, "c", fn_fail_odd, NULL, NULL, NULL);
  CHECK(tt_latch_wait(tt_handle_latch(h), 5));
  CHECK_EQ(tt_handle_result(h, &res), TT_H_FAILED);
  CHECK(res != NULL && ((tt_error *)res)->code == TT_EFAILED);
  tt_unref(res);
  tt_unref(h);
}

TEST(go_rejects_null_fn) {
  int err = 0;
  CHECK(tt_go(NULL, "x", NULL, NULL, NULL, &err) == NULL);
  CHECK_EQ(err, TT_EINVAL);
  CHECK_EQ(tt_exec(NULL, NULL), TT_EINVAL);
}

TEST(stop_before_start_on_saturated_executor) {
  tt_ctx *gate = tt_with_cancel(tt_background());
  tt_handle *b1, *b2, *q;
  int threads = -1;
  /* No idle threads left, and room for two only. */
  tt__exec_shutdown();
  tt__exec_tune(2, -1);
  b1 = tt_go(NULL, "b1", fn_block, gate, NULL, NULL);
  b2 = tt_go(NULL, "b2", fn_block, gate, NULL, NULL);
  WAIT_FOR(tt_handle_state(b1) == TT_H_RUNNING &&
           tt_handle_state(b2) == TT_H_RUNNING, 5);
  tt__exec_threads(&threads, NULL);
  CHECK_EQ(threads, 2);
  atomic_store(&drops, 0);
  q = tt_go(NULL, "queued", fn_hello, &drops, count_drop, NULL);
  th_sleep_us(20000);
  CHECK_EQ(tt_handle_state(q), TT_H_QUEUED);
  CHECK(tt_handle_stop(q));
  CHECK_EQ(tt_handle_state(q), TT_H_STOPPED);
  CHECK(tt_latch_is_set(tt_handle_latch(q)));
  CHECK_EQ(atomic_load(&drops), 1);
  CHECK(!tt_handle_stop(q));
  CHECK(!tt_handle_stop(b1));  /* running */
  tt_cancel(gate, NULL);
  CHECK(tt_latch_wait(tt_handle_latch(b1), 5));
  CHECK(tt_latch_wait(tt_handle_latch(b2), 5));
  CHECK_EQ(atomic_load(&drops), 1);
  tt__exec_tune(64, -1);
  tt_unref(b1);
  tt_unref(b2);
  tt_unref(q);
  tt_unref(gate);
}

static atomic_int order[64];
static atomic_int norder;

static void note_order(void *arg) {
  int i = atomic_fetch_add(&norder, 1);
  if (i < 64) atomic_store(&order[i], (int)(intptr_t)arg + 1);
}

TEST(fifo_at_the_cap) {
  tt_ctx *gate = tt_with_cancel(tt_background());
  tt_handle *b;
  int i;
  tt__exec_shutdown();
  tt__exec_tune(1, -1);
  atomic_store(&norder, 0);
  for (i = 0; i < 64; i++) atomic_store(&order[i], 0);
  b = tt_go(NULL, "block", fn_block, gate, NULL, NULL);
  for (i = 0; i < 32; i++)
    CHECK_EQ(tt_exec(note_order, (void *)(intptr_t)i), TT_OK);
  tt_cancel(gate, NULL);
  WAIT_FOR(atomic_load(&order[31]) != 0, 5);
  CHECK_EQ(atomic_load(&norder), 32);
  for (i = 0; i < 32; i++) CHECK_EQ(atomic_load(&order[i]), i + 1);
  tt__exec_tune(64, -1);
  tt_unref(b);
  tt_unref(gate);
}

static atomic_int counter;

static void bump(void *arg) {
  (void)arg;
  atomic_fetch_add(&counter, 1);
}

static void slow_bump(void *arg) {
  (void)arg;
  th_sleep_us(2000);
  atomic_fetch_add(&counter, 1);
}

TEST(many_tasks_none_lost_and_cap_kept) {
  int i, threads = 0;
  atomic_store(&counter, 0);
  for (i = 0; i < 500; i++)
    CHECK_EQ(tt_exec(i % 5 == 0 ? slow_bump : bump, NULL), TT_OK);
  tt__exec_threads(&threads, NULL);
  CHECK(threads <= 64);
  WAIT_FOR(atomic_load(&counter) == 500, 10);
  CHECK_EQ(atomic_load(&counter), 500);
}

static atomic_int hook_calls;

static void on_exit_hook(void) { atomic_fetch_add(&hook_calls, 1); }

TEST(idle_threads_end_with_exit_hook) {
  int threads = -1;
  tt__exec_shutdown();
  atomic_store(&hook_calls, 0);
  tt_set_thread_exit_hook(on_exit_hook);
  tt__exec_tune(-1, 0.05);
  atomic_store(&counter, 0);
  CHECK_EQ(tt_exec(bump, NULL), TT_OK);
  WAIT_FOR(atomic_load(&hook_calls) >= 1, 5);
  CHECK(atomic_load(&hook_calls) >= 1);
  CHECK_EQ(atomic_load(&counter), 1);
  tt__exec_threads(&threads, NULL);
  CHECK_EQ(threads, 0);
  tt__exec_tune(-1, 30);
  /* A shutdown waits for every thread, running the hook on each. */
  atomic_store(&hook_calls, 0);
  CHECK_EQ(tt_exec(slow_bump, NULL), TT_OK);
  CHECK_EQ(tt_exec(slow_bump, NULL), TT_OK);
  tt__exec_shutdown();
  tt__exec_threads(&threads, NULL);
  CHECK_EQ(threads, 0);
  CHECK_EQ(atomic_load(&counter), 3);
  CHECK(atomic_load(&hook_calls) >= 1);
  tt_set_thread_exit_hook(NULL);
  /* The executor starts again on the next use. */
  CHECK_EQ(tt_exec(bump, NULL), TT_OK);
  WAIT_FOR(atomic_load(&counter) == 4, 5);
  CHECK_EQ(atomic_load(&counter), 4);
}

/* A task that waits for another task: the executor must grow instead of
** queueing the second behind the first. */
static int fn_wait_other(tt_ctx *ctx, void *arg, tt_obj **out) {
  tt_handle *inner = tt_go(NULL, "inner", fn_hello, &drops, NULL, NULL);
  (void)ctx;
  (void)arg;
  (void)out;
  if (inner == NULL) return TT_EFAILED;
  tt_latch_wait(tt_handle_latch(inner), 5);
  tt_unref(inner);
  return TT_OK;
}

TEST(nested_tasks_do_not_deadlock) {
  tt_handle *h[8];
  int i;
  for (i = 0; i < 8; i++) h[i] = tt_go(NULL, "outer", fn_wait_other, NULL, NULL,
                                      NULL);
  for (i = 0; i < 8; i++) {
    CHECK(tt_latch_wait(tt_handle_latch(h[i]), 5));
    CHECK_EQ(tt_handle_state(h[i]), TT_H_DONE);
    tt_unref(h[i]);
  }
}

TEST_MAIN()
