/*
** test_life.c -- lifetimes of the process: interrupts of waits, signal
** contexts, pools abandoned and drained at exit, wait_idle, and the
** signal mask of children of engine threads.
**
** Signals are sent to this process with kill(); only SIGUSR1 and SIGUSR2
** are used, and only while a signal context holds them (their default
** action would end the test).  The process-level behaviours (Ctrl-C in
** lua5.4, a second signal, the runner) are specs that start processes.
*/
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static tt_pool_stats stats(tt_pool *p) {
  tt_pool_stats s;
  tt_pool_stats_get(p, &s);
  return s;
}

/* {====================================================================
** Interrupts
** ===================================================================== */

/* A waiter thread: it opens a section, says so, runs one wait and
** records what it returned. */
typedef struct waiter {
  pthread_t t;
  int kind;
  void *obj;
  atomic_int ready;
  int rc;
  bool hit;
  double took;
} waiter;

enum { W_SLEEP, W_RECV, W_SEND, W_DRAIN, W_IDLE, W_GROUP, W_LATCH,
       W_SELECT };

static void *waiter_main(void *arg) {
  waiter *w = arg;
  double t0;
  tt_interrupt_begin();
  atomic_store(&w->ready, 1);
  t0 = tt_now();
  switch (w->kind) {
    case W_SLEEP:
      w->rc = tt_sleep(30, NULL);
      break;
    case W_RECV: {
      tt_obj *item = NULL;
      w->rc = tt_chan_recv(w->obj, &item, NULL, -1);
      tt_unref(item);
      break;
    }
    case W_SEND: {
      tt_bytes *b = tt_bytes_new("x", 1);
      w->rc = tt_chan_send(w->obj, &b->hdr, NULL, -1);
      if (w->rc != TT_OK) tt_unref(b);
      break;
    }
    case W_DRAIN:
      w->rc = tt_pool_drain(w->obj, NULL, -1);
      break;
    case W_IDLE:
      w->rc = tt_pool_wait_idle(w->obj, NULL, -1);
      break;
    case W_GROUP:
      w->rc = tt_group_wait(w->obj, NULL);
      break;
    case W_LATCH:
      w->rc = tt_ctx_wait(w->obj, -1) ? TT_OK : TT_EINTR;
      break;
    case W_SELECT: {
      tt_case c;
      memset(&c, 0, sizeof c);
      c.kind = TT_CASE_RECV;
      c.chan = w->obj;
      w->rc = tt_select(&c, 1, false, -1);
      break;
    }
  }
  w->took = tt_now() - t0;
  w->hit = tt_interrupt_end();
  return NULL;
}

static void start_waiter(waiter *w, int kind, void *obj) {
  memset(w, 0, sizeof *w);
  w->kind = kind;
  w->obj = obj;
  CHECK_EQ(pthread_create(&w->t, NULL, waiter_main, w), 0);
  WAIT_FOR(atomic_load(&w->ready), 10);
}

/* interrupt_waiter interrupts 'w' (an interrupt before it blocks counts
** too: the section began before it) and joins it. */
static void interrupt_waiter(waiter *w) {
  tt_interrupt();
  CHECK_EQ(pthread_join(w->t, NULL), 0);
  CHECK(w->hit);
  CHECK(w->took < 10);
}

static int block_fn(tt_ctx *ctx, void *arg, tt_obj **out) {
  tt_obj *item = NULL;
  (void)ctx;
  *out = NULL;
  tt_chan_recv(arg, &item, NULL, -1);
  tt_unref(item);
  return TT_OK;
}

TEST(interrupt_ends_every_kind_of_wait) {
  tt_chan *empty = tt_chan_new(0), *gate = tt_chan_new(0);
  tt_pool *p = tt_pool_new(&(tt_pool_opts){.workers = 1}, NULL);
  tt_pool *q = tt_pool_new(&(tt_pool_opts){.workers = 1}, NULL);
  tt_ctx *gctx = NULL, *live = tt_with_cancel(tt_background());
  tt_group *g = tt_group_new(tt_background(), TT_NO_LIMIT, &gctx);
  tt_handle *h1 = tt_pool_submit(p, tt_background(), NULL, block_fn, gate,
                                 NULL, NULL);
  tt_handle *h2 = tt_pool_submit(q, tt_background(), NULL, block_fn, gate,
                                 NULL, NULL);
  waiter w;
  CHECK_EQ(tt_group_go(g, block_fn, gate, NULL), TT_OK);
  start_waiter(&w, W_SLEEP, NULL);
  interrupt_waiter(&w);
  CHECK_EQ(w.rc, TT_EINTR);
  start_waiter(&w, W_RECV, empty);
  interrupt_waiter(&w);
  CHECK_EQ(w.rc, TT_EINTR);
  start_waiter(&w, W_SEND, empty);
  interrupt_waiter(&w);
  CHECK_EQ(w.rc, TT_EINTR);
  start_waiter(&w, W_IDLE, q);
  interrupt_waiter(&w);
  CHECK_EQ(w.rc, TT_EINTR);
  start_waiter(&w, W_DRAIN, p);
  interrupt_waiter(&w);
  CHECK_EQ(w.rc, TT_EINTR);
  start_waiter(&w, W_GROUP, g);
  interrupt_waiter(&w);
  CHECK_EQ(w.rc, TT_EINTR);
  CHECK_EQ(tt_ctx_err(gctx), 0);  /* an interrupted wait leaves gctx */
  start_waiter(&w, W_LATCH, live);
  interrupt_waiter(&w);
  CHECK_EQ(w.rc, TT_EINTR);
  start_waiter(&w, W_SELECT, empty);
  interrupt_waiter(&w);
  CHECK_EQ(w.rc, TT_SELECT_INTERRUPTED);
  tt_chan_close(gate);
  CHECK(tt_latch_wait(tt_handle_latch(h1), 10));
  CHECK(tt_latch_wait(tt_handle_latch(h2), 10));
  CHECK_EQ(tt_group_wait(g, NULL), TT_OK);
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  CHECK_EQ(tt_pool_drain(q, NULL, 10), TT_OK);
  tt_unref(h1);
  tt_unref(h2);
  tt_unref(g);
  tt_unref(gctx);
  tt_unref(live);
  tt_unref(p);
  tt_unref(q);
  tt_unref(empty);
  tt_unref(gate);
}

TEST(an_interrupted_section_stays_interrupted_the_next_does_not) {
  double t0;
  tt_interrupt_begin();
  tt_interrupt();
  CHECK_EQ(tt_sleep(30, NULL), TT_EINTR);
  t0 = tt_now();
  CHECK_EQ(tt_sleep(30, NULL), TT_EINTR);  /* sticky */
  CHECK(tt_now() - t0 < 10);
  CHECK(tt_interrupt_end());
  /* A ready case still wins in an interrupted section. */
  tt_interrupt_begin();
  CHECK_EQ(tt_sleep(0.01, NULL), TT_OK);
  CHECK(!tt_interrupt_end());
}

TEST(waits_outside_a_section_are_not_interrupted) {
  tt_interrupt();  /* nobody is in a section: nothing happens */
  CHECK_EQ(tt_sleep(0.02, NULL), TT_OK);
  CHECK(tt_interrupt_count() >= 1);
}

static void host_sigint(int sig) { (void)sig; }

/* The program's own SIGINT handler (lua.c's, in a script) comes back
** when the engine shuts down: the chaining handler an interruptible wait
** installed goes, and with it the signal thread, so that a program that
** shuts the engine down is left with its own threads only. */
TEST(shutdown_gives_sigint_back_to_the_program) {
  struct sigaction host, cur, old;
  memset(&host, 0, sizeof host);
  host.sa_handler = host_sigint;
  sigemptyset(&host.sa_mask);
  CHECK_EQ(sigaction(SIGINT, &host, &old), 0);
  tt_interrupt_begin();
  CHECK_EQ(tt_sleep(0.001, NULL), TT_OK);  /* parks: installs tether's */
  tt_interrupt_end();
  CHECK_EQ(sigaction(SIGINT, NULL, &cur), 0);
  CHECK((cur.sa_flags & SA_SIGINFO) != 0);  /* tether's chaining handler */
  tt_shutdown();
  CHECK_EQ(sigaction(SIGINT, NULL, &cur), 0);
  CHECK(!(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == host_sigint);
  /* The next wait installs it again, and Ctrl-C still reaches it. */
  tt_interrupt_begin();
  CHECK_EQ(tt_sleep(0.001, NULL), TT_OK);
  CHECK_EQ(sigaction(SIGINT, NULL, &cur), 0);
  CHECK((cur.sa_flags & SA_SIGINFO) != 0);
  tt_interrupt_end();
  tt_shutdown();
  CHECK_EQ(sigaction(SIGINT, &old, NULL), 0);
}

/* }==================================================================== */


/* {====================================================================
** Signal contexts
** ===================================================================== */

TEST(a_signal_cancels_its_context_with_a_signal_cause) {
  int sigs[] = {SIGUSR1, SIGUSR2}, err = -1;
  tt_sigreg *reg = NULL;
  tt_ctx *ctx = tt_signal_context(tt_background(), sigs, 2, &reg, &err);
  tt_obj *cause;
  struct sigaction cur;
  CHECK(ctx != NULL);
  CHECK_EQ(err, TT_OK);
  CHECK_EQ(tt_ctx_err(ctx), 0);
  CHECK_EQ(kill(getpid(), SIGUSR2), 0);
  CHECK(tt_ctx_wait(ctx, 10));
  CHECK_EQ(tt_ctx_err(ctx), TT_CANCELED);
  cause = tt_ctx_cause(ctx);
  CHECK(cause != NULL && cause->type == &tt_error_type);
  if (cause != NULL && cause->type == &tt_error_type) {
    tt_error *e = (tt_error *)cause;
    CHECK_EQ(e->code, TT_ESIGNAL);
    CHECK(strstr(e->message, "SIGUSR2") != NULL);
    CHECK(e->value != NULL && e->value->type == &tt_bytes_type &&
          strcmp(((tt_bytes *)e->value)->data, "USR2") == 0);
  }
  tt_unref(cause);
  tt_signal_stop(reg);
  tt_signal_stop(reg);  /* a second stop does nothing */
  /* What was there before is back. */
  CHECK_EQ(sigaction(SIGUSR1, NULL, &cur), 0);
  CHECK(!(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == SIG_DFL);
  tt_unref(reg);
  tt_unref(ctx);
}

TEST(one_signal_cancels_every_context_listening_for_it) {
  int s1[] = {SIGUSR1}, s2[] = {SIGUSR1, SIGUSR2};
  tt_sigreg *r1 = NULL, *r2 = NULL;
  tt_ctx *a = tt_signal_context(tt_background(), s1, 1, &r1, NULL);
  tt_ctx *b = tt_signal_context(tt_background(), s2, 2, &r2, NULL);
  CHECK_EQ(kill(getpid(), SIGUSR1), 0);
  CHECK(tt_ctx_wait(a, 10));
  CHECK(tt_ctx_wait(b, 10));
  tt_signal_stop(r1);
  tt_signal_stop(r2);
  tt_unref(r1);
  tt_unref(r2);
  tt_unref(a);
  tt_unref(b);
}

TEST(stop_cancels_the_context_and_a_done_parent_counts) {
  int sigs[] = {SIGUSR1};
  tt_sigreg *reg = NULL;
  tt_ctx *parent = tt_with_cancel(tt_background());
  tt_ctx *ctx = tt_signal_context(parent, sigs, 1, &reg, NULL);
  tt_cancel(parent, NULL);
  CHECK(tt_ctx_wait(ctx, 10));
  tt_signal_stop(reg);
  tt_unref(reg);
  tt_unref(ctx);
  ctx = tt_signal_context(tt_background(), sigs, 1, &reg, NULL);
  tt_signal_stop(reg);
  CHECK_EQ(tt_ctx_err(ctx), TT_CANCELED);
  tt_unref(reg);
  tt_unref(ctx);
  tt_unref(parent);
}

TEST(signals_that_cannot_be_caught_are_refused) {
  int bad[] = {SIGKILL, SIGSEGV, SIGSTOP, 0}, i, err;
  tt_sigreg *reg;
  for (i = 0; i < 4; i++) {
    err = TT_OK;
    CHECK(tt_signal_context(tt_background(), &bad[i], 1, &reg, &err) ==
          NULL);
    CHECK_EQ(err, TT_EINVAL);
    CHECK(reg == NULL);
  }
  CHECK_EQ(tt_signal_number("SIGTERM"), SIGTERM);
  CHECK_EQ(tt_signal_number("HUP"), SIGHUP);
  CHECK_EQ(tt_signal_number("NOPE"), 0);
  CHECK(strcmp(tt_signal_name(SIGUSR2), "USR2") == 0);
  CHECK(tt_signal_supported(SIGINT) && !tt_signal_supported(SIGKILL));
}

/* }==================================================================== */


/* {====================================================================
** Abandon, exit drains, wait_idle
** ===================================================================== */

typedef struct slow {
  double secs;
  atomic_int ended;
  atomic_int canceled;     /* its context was done when it ended */
  tt_pool *next;           /* submits a follow-up there, if set */
  atomic_int handed;       /* the follow-up was accepted */
} slow;

static int slow_fn(tt_ctx *ctx, void *arg, tt_obj **out) {
  slow *s = arg;
  *out = NULL;
  tt_sleep(s->secs, ctx);
  if (tt_ctx_err(ctx) != 0) atomic_store(&s->canceled, 1);
  if (s->next != NULL) {
    tt_pool *next = s->next;
    tt_handle *h;
    s->next = NULL;  /* the follow-up hands nothing on */
    h = tt_pool_submit(next, tt_background(), NULL, slow_fn, arg, NULL,
                       NULL);
    if (h != NULL) atomic_store(&s->handed, 1);
    tt_unref(h);
  }
  atomic_fetch_add(&s->ended, 1);
  return TT_OK;
}

typedef struct gated {
  tt_chan *gate;
  atomic_int ended;
  atomic_int canceled;
} gated;

static int gated_fn(tt_ctx *ctx, void *arg, tt_obj **out) {
  gated *g = arg;
  tt_obj *item = NULL;
  *out = NULL;
  tt_chan_recv(g->gate, &item, NULL, -1);
  tt_unref(item);
  if (tt_ctx_err(ctx) != 0) atomic_store(&g->canceled, 1);
  atomic_store(&g->ended, 1);
  return TT_OK;
}

static void count_abandoned(const tt_event *ev, void *ud) {
  if (ev->kind == TT_EV_ABANDONED) atomic_fetch_add((atomic_int *)ud, 1);
  if (ev->kind == TT_EV_COMPLETED) atomic_fetch_add((atomic_int *)ud, 100);
}

TEST(abandon_counts_queued_and_running_ops_once) {
  tt_chan *gate = tt_chan_new(0);
  gated g = {.gate = gate};
  atomic_int events = 0;
  tt_pool *p = tt_pool_new(&(tt_pool_opts){.workers = 1}, NULL);
  int obs = tt_pool_observe(p, count_abandoned, &events);
  tt_handle *run = tt_pool_submit(p, tt_background(), NULL, gated_fn, &g,
                                  NULL, NULL);
  tt_handle *q1 = tt_pool_submit(p, tt_background(), NULL, block_fn, gate,
                                 NULL, NULL);
  tt_handle *q2 = tt_pool_submit(p, tt_background(), NULL, block_fn, gate,
                                 NULL, NULL);
  tt_pool_stats s;
  tt_obj *res = NULL;
  WAIT_FOR(stats(p).inflight == 1, 10);
  CHECK_EQ(tt_pool_abandon(p), 3);
  s = stats(p);
  CHECK_EQ(s.abandoned, 3);
  CHECK_EQ(s.queued, 0);
  CHECK_EQ(s.inflight, 0);
  CHECK(th_adds_up(&s));
  CHECK_EQ(tt_handle_result(run, &res), TT_H_FAILED);
  CHECK(res != NULL && ((tt_error *)res)->code == TT_EABANDONED);
  tt_unref(res);
  CHECK_EQ(tt_handle_state(q1), TT_H_FAILED);
  CHECK_EQ(tt_handle_state(q2), TT_H_FAILED);
  /* The abandoned op runs on, its context canceled, and ends later;
  ** nothing is counted twice. */
  tt_chan_close(gate);
  WAIT_FOR(atomic_load(&g.ended), 10);
  CHECK_EQ(atomic_load(&g.canceled), 1);
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  s = stats(p);
  CHECK_EQ(s.completed, 0);
  CHECK_EQ(s.abandoned, 3);
  CHECK(th_adds_up(&s));
  /* One ABANDONED event each, the last: no COMPLETED after it. */
  CHECK_EQ(atomic_load(&events), 3);
  tt_pool_unobserve(p, obs);
  tt_unref(p);
  tt_unref(run);
  tt_unref(q1);
  tt_unref(q2);
  tt_unref(gate);
}

TEST(exit_drain_waits_for_running_ops_within_the_deadline) {
  static int owner;
  slow a = {.secs = 0.1}, b = {.secs = 30};
  tt_pool *p = tt_pool_new(&(tt_pool_opts){.workers = 1,
                                           .exit_timeout = 2}, NULL);
  tt_pool *q = tt_pool_new(&(tt_pool_opts){.workers = 1,
                                           .exit_timeout = -1}, NULL);
  tt_handle *ha = tt_pool_submit(p, tt_background(), NULL, slow_fn, &a,
                                 NULL, NULL);
  tt_handle *hb = tt_pool_submit(q, tt_background(), NULL, slow_fn, &b,
                                 NULL, NULL);
  tt_exit_report r;
  tt_pool_stats s;
  CHECK_EQ(tt_exit_track(p, &owner), TT_OK);
  CHECK_EQ(tt_exit_track(q, &owner), TT_OK);
  CHECK(tt_exit_stats(&owner, false, &s) == 2 && s.submitted == 2);
  WAIT_FOR(stats(q).inflight == 1, 10);
  /* One deadline for both, the largest: 'a' completes, 'b' never does. */
  tt_exit_drain(&owner, false, -1, &r);
  CHECK_EQ(r.pools, 2);
  CHECK_EQ(r.abandoned, 1);
  CHECK(r.seconds >= 1.9 && r.seconds < 10);
  CHECK_EQ(atomic_load(&a.ended), 1);
  CHECK_EQ(stats(p).completed, 1);
  CHECK_EQ(stats(q).abandoned, 1);
  CHECK_EQ(tt_exit_stats(&owner, false, &s), 0);
  /* The abandoned op saw its context canceled. */
  WAIT_FOR(atomic_load(&b.ended) == 1, 10);
  CHECK_EQ(atomic_load(&b.canceled), 1);
  tt_unref(ha);
  tt_unref(hb);
  tt_unref(p);
  tt_unref(q);
}

TEST(exit_drain_lets_an_op_hand_work_to_another_pool) {
  static int owner;
  slow a = {.secs = 0.05};
  tt_pool *p = tt_pool_new(&(tt_pool_opts){.workers = 1}, NULL);
  tt_pool *q = tt_pool_new(&(tt_pool_opts){.workers = 1}, NULL);
  tt_handle *h;
  tt_exit_report r;
  a.next = q;
  /* q is tracked first, so it is looked at first. */
  CHECK_EQ(tt_exit_track(q, &owner), TT_OK);
  CHECK_EQ(tt_exit_track(p, &owner), TT_OK);
  h = tt_pool_submit(p, tt_background(), NULL, slow_fn, &a, NULL, NULL);
  tt_exit_drain(&owner, false, 5, &r);
  CHECK_EQ(r.abandoned, 0);
  CHECK_EQ(atomic_load(&a.handed), 1);
  CHECK_EQ(atomic_load(&a.ended), 2);
  CHECK_EQ(stats(q).completed, 1);
  tt_unref(h);
  tt_unref(p);
  tt_unref(q);
}

TEST(exit_drain_with_no_time_abandons_at_once) {
  static int owner;
  tt_chan *gate = tt_chan_new(0);
  gated g = {.gate = gate};
  tt_pool *p = tt_pool_new(&(tt_pool_opts){.workers = 1,
                                           .exit_timeout = -1}, NULL);
  tt_handle *h = tt_pool_submit(p, tt_background(), NULL, gated_fn, &g,
                                NULL, NULL);
  tt_exit_report r;
  CHECK_EQ(tt_exit_track(p, &owner), TT_OK);
  WAIT_FOR(stats(p).inflight == 1, 10);
  tt_exit_drain(&owner, false, -1, &r);
  CHECK_EQ(r.abandoned, 1);
  CHECK(r.seconds < 5);
  tt_chan_close(gate);
  WAIT_FOR(atomic_load(&g.ended), 10);
  tt_unref(h);
  tt_unref(p);
  tt_unref(gate);
}

TEST(untracked_pools_are_left_alone) {
  static int owner;
  tt_pool *p = tt_pool_new(NULL, NULL);
  tt_exit_report r;
  CHECK_EQ(tt_exit_track(p, &owner), TT_OK);
  tt_exit_untrack(p);
  tt_exit_drain(&owner, false, -1, &r);
  CHECK_EQ(r.pools, 0);
  CHECK_EQ(tt_pool_exit_timeout(p), 5);
  tt_unref(p);
}

static int fail_fn(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  *out = NULL;
  return TT_EFAILED;
}

typedef struct own_wait {
  tt_pool *p;
  atomic_int rc;
} own_wait;

static int own_wait_fn(tt_ctx *ctx, void *arg, tt_obj **out) {
  own_wait *o = arg;
  (void)ctx;
  *out = NULL;
  atomic_store(&o->rc, tt_pool_wait_idle(o->p, NULL, -1));
  return TT_OK;
}

TEST(wait_idle_waits_without_closing) {
  slow a = {.secs = 0.05};
  tt_pool *p = tt_pool_new(&(tt_pool_opts){.workers = 2}, NULL);
  tt_handle *h1 = tt_pool_submit(p, tt_background(), NULL, slow_fn, &a,
                                 NULL, NULL);
  tt_handle *h2 = tt_pool_submit(p, tt_background(), NULL, fail_fn, NULL,
                                 NULL, NULL);
  tt_handle *h3;
  own_wait o = {.p = p};
  tt_failure *dl;
  size_t n = 0;
  int err;
  CHECK_EQ(tt_pool_wait_idle(p, NULL, 10), TT_OK);
  CHECK_EQ(atomic_load(&a.ended), 1);
  CHECK_EQ(stats(p).dead, 1);
  /* Still open: the dead letter can be retried, and waited for again. */
  dl = tt_pool_dead_letters(p, &n);
  CHECK_EQ(n, 1);
  h3 = n == 1 ? tt_pool_retry_dead(p, dl[0].id, &err) : NULL;
  CHECK(h3 != NULL);
  tt_failures_free(dl, n);
  CHECK_EQ(tt_pool_wait_idle(p, NULL, 10), TT_OK);
  CHECK_EQ(tt_handle_state(h3), TT_H_FAILED);
  /* From one of its own ops it is refused. */
  tt_unref(tt_pool_submit(p, tt_background(), NULL, own_wait_fn, &o, NULL,
                          NULL));
  CHECK_EQ(tt_pool_wait_idle(p, NULL, 10), TT_OK);
  CHECK_EQ(atomic_load(&o.rc), TT_EDEADLK);
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  tt_unref(h1);
  tt_unref(h2);
  tt_unref(h3);
  tt_unref(p);
}

/* }==================================================================== */


/* {====================================================================
** Children of engine threads
** ===================================================================== */

static int fork_fn(tt_ctx *ctx, void *arg, tt_obj **out) {
  pid_t pid;
  int st = -1;
  (void)ctx;
  (void)arg;
  *out = NULL;
  pid = fork();
  if (pid == 0) {
    /* The verdict leaves through an exec, as a child's life usually
    ** goes on (and valgrind checks no leaks of a forked copy then). */
    sigset_t m;
    bool blocked;
    sigprocmask(SIG_SETMASK, NULL, &m);
    blocked = sigismember(&m, SIGTERM) || sigismember(&m, SIGINT);
    execl("/bin/sh", "sh", "-c", blocked ? "exit 1" : "exit 0",
          (char *)NULL);
    _exit(2);
  }
  if (pid < 0 || waitpid(pid, &st, 0) != pid) return TT_EFAILED;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? TT_OK : TT_EFAILED;
}

TEST(a_child_forked_by_an_engine_thread_gets_the_default_mask) {
  tt_handle *h = tt_go(NULL, "fork", fork_fn, NULL, NULL, NULL);
  CHECK(tt_engine_thread() == false);
  CHECK(tt_latch_wait(tt_handle_latch(h), 10));
  CHECK_EQ(tt_handle_state(h), TT_H_DONE);
  tt_unref(h);
}

/* }==================================================================== */

TEST_MAIN()
