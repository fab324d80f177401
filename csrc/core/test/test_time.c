/*
** test_time.c -- the timer thread (time.c): deadlines fire in order,
** tt_shutdown stops only an idle thread, a callback on the timer thread
** may stop and restart it, and stopping never deadlocks with the pools
** that add timers under their own locks.
*/
#include <pthread.h>
#include <stdatomic.h>

#include "harness.h"
#include "internal.h"

/* A timer entry that records the order it fired in. */
typedef struct mark {
  tt_tentry e;
  int id;
} mark;

static atomic_int fired_n;
static atomic_int fired_ids[64];

static void mark_fire(tt_tentry *e) {
  mark *m = tt_container_of(e, mark, e);
  int i = atomic_fetch_add(&fired_n, 1);
  if (i < 64) atomic_store(&fired_ids[i], m->id + 1);
}

/* A blocker holds the timer thread in its callback until 'gate' ends, so
** that entries added meanwhile are all in the heap when it returns. */
typedef struct blocker {
  tt_tentry e;
  tt_ctx *gate;
  atomic_int firing;
} blocker;

static void block_fire(tt_tentry *e) {
  blocker *b = tt_container_of(e, blocker, e);
  atomic_store(&b->firing, 1);
  tt_ctx_wait(b->gate, 10);
}

/* Entries are taken earliest first, whatever the order they were added
** in, and a deleted one never fires.  They are all due when the timer
** thread looks, so the test does not depend on how fast it adds them. */
TEST(deadlines_fire_in_order) {
  static const int order[8] = {5, 2, 7, 0, 3, 6, 1, 4};
  mark m[8];
  blocker b;
  double t0 = tt_now();
  int i;
  atomic_store(&fired_n, 0);
  for (i = 0; i < 64; i++) atomic_store(&fired_ids[i], 0);
  b.e.fire = block_fire;
  b.gate = tt_with_cancel(tt_background());
  atomic_init(&b.firing, 0);
  CHECK_EQ(tt__timer_add(&b.e, t0), TT_OK);
  WAIT_FOR(atomic_load(&b.firing) == 1, 5);
  CHECK_EQ(atomic_load(&b.firing), 1);
  for (i = 0; i < 8; i++) {
    m[i].e.fire = mark_fire;
    m[i].id = order[i];
    CHECK_EQ(tt__timer_add(&m[i].e, t0 - 1 + 0.001 * order[i]), TT_OK);
  }
  CHECK(tt__timer_del(&m[0].e));   /* id 5 */
  CHECK(!tt__timer_del(&m[0].e));
  tt_cancel(b.gate, NULL);
  WAIT_FOR(atomic_load(&fired_n) == 7 && atomic_load(&fired_ids[6]) != 0, 5);
  CHECK_EQ(atomic_load(&fired_n), 7);
  for (i = 0; i < 7; i++)
    CHECK_EQ(atomic_load(&fired_ids[i]), (i < 5 ? i : i + 1) + 1);
  tt_unref(b.gate);
}

TEST(shutdown_keeps_a_pending_deadline) {
  tt_ctx *c = tt_with_timeout(tt_background(), 0.05, NULL);
  tt_shutdown();
  CHECK(tt_ctx_wait(c, 5));
  CHECK_EQ(tt_ctx_err(c), TT_DEADLINE);
  tt_unref(c);
}

/* A callback on the timer thread stops that thread (it must not wait for
** itself) and then adds a timer (which must not wait for the stop). */
typedef struct restart {
  tt_tentry e;
  tt_timer *_Atomic next;
} restart;

static void restart_fire(tt_tentry *e) {
  restart *r = tt_container_of(e, restart, e);
  tt_shutdown();
  atomic_store(&r->next, tt_after(0.01));
}

TEST(the_timer_thread_may_stop_itself_and_add_timers) {
  restart r;
  tt_ctx *done = tt_with_timeout(tt_background(), 0.02, NULL);
  tt_timer *next;
  memset(&r, 0, sizeof r);
  atomic_init(&r.next, NULL);
  r.e.fire = restart_fire;
  CHECK(tt_ctx_wait(done, 5));  /* the heap is empty again */
  CHECK_EQ(tt__timer_add(&r.e, tt_now() + 0.01), TT_OK);
  WAIT_FOR(atomic_load(&r.next) != NULL, 5);
  next = atomic_load(&r.next);
  CHECK(next != NULL);
  if (next != NULL) {
    CHECK(tt_latch_wait(tt_timer_latch(next), 5));
    tt_unref(next);
  }
  tt_unref(done);
}

/* {====================================================================
** Shutdown racing pools
**
** Pools add timers while holding their locks (idle ticks, retries after a
** failed attempt), and the timer thread takes those locks in its
** callbacks.  Submitters keep a pool busy (an idle tick every 0.1 ms, an
** immediate retry for every op) while the main thread calls tt_shutdown
** in a loop, for several pools in turn.  The timer thread is stopped
** whenever the heap is empty, that is while it fires the pool's only
** entry: a timer add that waited for the stopping thread under the
** pool's lock (a worker scheduling a retry, the timer thread re-arming
** the idle tick) while the stopping thread waits for a callback that
** needs that lock hangs here, and the harness's timeout fails the test.
** ===================================================================== */

#define ROUNDS 4
#define NSUBMITTERS 4

static atomic_int stress_stop;
static atomic_int stress_bad;

/* Each op fails its first attempt, so that it is retried on the timer
** thread, and succeeds on the second.  Only one attempt runs at a time,
** so its counter needs no lock. */
static int fail_once(tt_ctx *ctx, void *arg, tt_obj **out) {
  int *attempts = arg;
  (void)ctx;
  (void)out;
  return (*attempts)++ == 0 ? TT_EFAILED : TT_OK;
}

static void free_arg(void *arg) { free(arg); }

static void *submitter(void *arg) {
  tt_pool *pool = arg;
  while (!atomic_load(&stress_stop)) {
    tt_handle *h[8];
    int i, n = 0;
    for (i = 0; i < 8; i++) {
      int *attempts = calloc(1, sizeof *attempts);
      tt_submit_opts so;
      memset(&so, 0, sizeof so);
      so.name = "flaky";
      h[n] = tt_pool_submit(pool, tt_background(), &so, fail_once, attempts,
                            free_arg, NULL);
      if (h[n] != NULL)
        n++;
      else
        free(attempts);
    }
    for (i = 0; i < n; i++) {
      if (!tt_latch_wait(tt_handle_latch(h[i]), 30) ||
          tt_handle_state(h[i]) != TT_H_DONE)
        atomic_fetch_add(&stress_bad, 1);
      tt_unref(h[i]);
    }
  }
  return NULL;
}

TEST(shutdown_never_deadlocks_with_pools_adding_timers) {
  pthread_t subs[NSUBMITTERS];
  tt_pool_opts o;
  int r, i, shutdowns = 0;
  memset(&o, 0, sizeof o);
  o.name = "stress";
  o.workers = 2;
  o.queue = 64;
  o.idle_after = 0.0001;
  o.retry.attempts = 2;
  for (r = 0; r < ROUNDS; r++) {
    tt_pool *pool = tt_pool_new(&o, NULL);
    tt_pool_stats s;
    double end;
    CHECK(pool != NULL);
    if (pool == NULL) return;
    atomic_store(&stress_stop, 0);
    atomic_store(&stress_bad, 0);
    for (i = 0; i < NSUBMITTERS; i++)
      CHECK_EQ(pthread_create(&subs[i], NULL, submitter, pool), 0);
    end = tt_now() + 0.5;
    while (tt_now() < end) {
      tt_shutdown();
      shutdowns++;
    }
    atomic_store(&stress_stop, 1);
    for (i = 0; i < NSUBMITTERS; i++)
      CHECK_EQ(pthread_join(subs[i], NULL), 0);
    CHECK_EQ(atomic_load(&stress_bad), 0);
    CHECK_EQ(tt_pool_drain(pool, NULL, 10), TT_OK);
    tt_pool_stats_get(pool, &s);
    CHECK(s.submitted > 0);
    CHECK_EQ(s.completed, s.submitted);
    CHECK_EQ(s.retried, s.submitted);
    tt_unref(pool);
  }
  CHECK(shutdowns > 0);
}

/* }==================================================================== */

TEST_MAIN()
