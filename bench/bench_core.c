/*
** bench_core.c -- benchmarks of the tether engine through its C API.
**
** Each measurement prints one line "c.<metric> <value>", the format
** bench/run.sh collects; the unit is in the metric's suffix (_ns: ns per
** operation, _us: microseconds, _ms: milliseconds, _per_s: operations per
** second, _calls: a count).  The shapes are the same as the Go peers' in
** bench/go, so that run.sh can put the two side by side.
**
** Build (run.sh does it):
**   gcc -O2 -std=c11 -pthread -D_GNU_SOURCE -Icsrc/core \
**     bench/bench_core.c build/libtether.a -o build/bench_core
** run.sh adds -DHAVE_TT_GROUP, -DHAVE_TT_FLIGHT and -DHAVE_TT_OBS when
** tether.h declares the group, singleflight and metrics API, and the
** libraries the engine links (`make -s ldlibs`).
**
** Usage: bench_core [filter], where 'filter' keeps only the benchmarks whose
** name contains it.
*/
#include <sched.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tether.h"

/* {====================================================================
** Helpers
** ===================================================================== */

/* now_ns reads the monotonic clock in nanoseconds. */
static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void report(const char *metric, double value) {
  printf("c.%s %.6g\n", metric, value);
  fflush(stdout);
}

/* die reports a failed check and ends the program: a benchmark that does
** not do what it says must not print a number. */
static void die(const char *what) {
  fprintf(stderr, "bench_core: %s\n", what);
  exit(1);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* median sorts 'xs' in place and returns its middle element. */
static double median(double *xs, int n) {
  qsort(xs, (size_t)n, sizeof *xs, cmp_double);
  return xs[n / 2];
}

/* }==================================================================== */


/* {====================================================================
** Contexts
** ===================================================================== */

/* with_cancel on the background context, then its cancel. */
static void bench_with_cancel(void) {
  const int n = 2000000;
  tt_ctx *bg = tt_background();
  double t0;
  int i;
  for (i = 0; i < n / 10; i++) {  /* Warm up the allocator. */
    tt_ctx *c = tt_with_cancel(bg);
    tt_cancel(c, NULL);
    tt_unref(c);
  }
  t0 = now_ns();
  for (i = 0; i < n; i++) {
    tt_ctx *c = tt_with_cancel(bg);
    if (c == NULL) die("with_cancel: out of memory");
    tt_cancel(c, NULL);
    tt_unref(c);
  }
  report("with_cancel_ns", (now_ns() - t0) / n);
}

/* with_timeout of an hour (it never fires), then its cancel. */
static void bench_with_timeout(void) {
  const int n = 1000000;
  tt_ctx *bg = tt_background();
  double t0;
  int i;
  for (i = 0; i < n / 10; i++) {
    tt_ctx *c = tt_with_timeout(bg, 3600.0, NULL);
    tt_cancel(c, NULL);
    tt_unref(c);
  }
  t0 = now_ns();
  for (i = 0; i < n; i++) {
    tt_ctx *c = tt_with_timeout(bg, 3600.0, NULL);
    if (c == NULL) die("with_timeout: out of memory");
    tt_cancel(c, NULL);
    tt_unref(c);
  }
  report("with_timeout_ns", (now_ns() - t0) / n);
}

/* The detached shape: with_timeout(without_cancel(parent)) under a live
** cancelable parent, then its cancel. */
static void bench_detach_bound(void) {
  const int n = 1000000;
  tt_ctx *parent = tt_with_cancel(tt_background());
  double t0 = 0;
  int i;
  for (i = -n / 10; i < n; i++) {
    tt_ctx *w, *c;
    if (i == 0) t0 = now_ns();
    w = tt_without_cancel(parent);
    c = tt_with_timeout(w, 3600.0, NULL);
    if (c == NULL) die("detach_bound: out of memory");
    tt_cancel(c, NULL);
    tt_unref(c);
    tt_unref(w);
  }
  report("detach_bound_ns", (now_ns() - t0) / n);
  tt_cancel(parent, NULL);
  tt_unref(parent);
}

/* A lookup of the key held by the outermost of ten value layers, so that
** the lookup walks all ten. */
static void bench_value10(void) {
  const int n = 5000000;
  static const char *const names[10] = {"k0", "k1", "k2", "k3", "k4",
                                        "k5", "k6", "k7", "k8", "k9"};
  tt_ctx *layers[10];
  tt_ctx *ctx = tt_background();
  tt_key key;
  double t0 = 0;
  int i;
  for (i = 0; i < 10; i++) {
    tt_bytes *v = tt_bytes_new(names[i], 2);
    tt_key k = {NULL, names[i], 2};
    ctx = layers[i] = tt_with_value(ctx, &k, (tt_obj *)v);
    tt_unref(v);
  }
  key.obj = NULL;
  key.str = "k0";
  key.len = 2;
  for (i = -n / 10; i < n; i++) {
    tt_obj *v = NULL;
    if (i == 0) t0 = now_ns();
    if (!tt_ctx_value(ctx, &key, &v) || v == NULL)
      die("value10: key not found");
    tt_unref(v);
  }
  report("value10_ns", (now_ns() - t0) / n);
  for (i = 9; i >= 0; i--) tt_unref(layers[i]);
}

enum { PROP_ROUNDS = 15, PROP_N = 10000 };

/* time_cancel cancels 'root' and returns the time the call took in
** microseconds, checking that the 'n' descendants are all done once it
** returns, then releases them and the root. */
static double time_cancel(tt_ctx *root, tt_ctx **all, int n) {
  double t0 = now_ns(), el;
  int i;
  tt_cancel(root, NULL);
  el = now_ns() - t0;
  for (i = 0; i < n; i++) {
    if (tt_ctx_err(all[i]) != TT_CANCELED)
      die("propagation: a descendant is still live after tt_cancel");
  }
  for (i = n - 1; i >= 0; i--) tt_unref(all[i]);
  tt_unref(root);
  return el / 1e3;
}

/* A parent with 10,000 direct children is canceled. */
static void bench_prop_flat(void) {
  static tt_ctx *kids[PROP_N];
  double us[PROP_ROUNDS];
  int r, i;
  for (r = 0; r < PROP_ROUNDS; r++) {
    tt_ctx *root = tt_with_cancel(tt_background());
    for (i = 0; i < PROP_N; i++) {
      kids[i] = tt_with_cancel(root);
      if (kids[i] == NULL) die("prop_flat: out of memory");
    }
    us[r] = time_cancel(root, kids, PROP_N);
  }
  report("prop_flat_us", median(us, PROP_ROUNDS));
}

/* A root with 100 chains of 100 nested contexts (10,000 descendants) is
** canceled. */
static void bench_prop_chain(void) {
  static tt_ctx *all[PROP_N];
  double us[PROP_ROUNDS];
  int r, c, d, k;
  for (r = 0; r < PROP_ROUNDS; r++) {
    tt_ctx *root = tt_with_cancel(tt_background());
    k = 0;
    for (c = 0; c < 100; c++) {
      tt_ctx *ctx = root;
      for (d = 0; d < 100; d++) {
        ctx = all[k++] = tt_with_cancel(ctx);
        if (ctx == NULL) die("prop_chain: out of memory");
      }
    }
    us[r] = time_cancel(root, all, PROP_N);
  }
  report("prop_chain_us", median(us, PROP_ROUNDS));
}

/* }==================================================================== */


/* {====================================================================
** The seed pool
** ===================================================================== */

/* The task of the pool benchmarks does nothing and returns no result. */
static int noop_fn(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  *out = NULL;
  return TT_OK;
}

/* No-op tasks go through a pool of 5 workers and a queue of 20; a refused
** submission is retried after sched_yield.  Tasks per second are counted
** from the first submission to the end of the drain. */
static void bench_pool(void) {
  enum { ROUNDS = 5 };
  const int n = 200000;
  double rates[ROUNDS];
  int r, i;
  for (r = 0; r < ROUNDS; r++) {
    tt_pool_opts opts;
    tt_pool_stats st;
    tt_pool *p;
    double t0;
    int err = 0;
    memset(&opts, 0, sizeof opts);
    opts.name = "bench";
    opts.workers = 5;
    opts.queue = 20;
    p = tt_pool_new(&opts, &err);
    if (p == NULL) die(tt_strerror(err));
    t0 = now_ns();
    for (i = 0; i < n; i++) {
      tt_handle *h;
      while ((h = tt_pool_submit(p, tt_background(), NULL, noop_fn, NULL,
                                 NULL, &err)) == NULL) {
        if (err != TT_EQUEUE_FULL) die(tt_strerror(err));
        sched_yield();
      }
      tt_unref(h);
    }
    if (tt_pool_drain(p, NULL, -1) != TT_OK) die("pool: drain failed");
    rates[r] = n / ((now_ns() - t0) / 1e9);
    tt_pool_stats_get(p, &st);
    if (st.completed != (uint64_t)n) die("pool: tasks were lost");
    tt_unref(p);
  }
  report("pool_tasks_per_s", median(rates, ROUNDS));
}

/* }==================================================================== */


/* {====================================================================
** The cost of observability on the seed pool
** ===================================================================== */

/* Built when tether.h declares the metrics API (run.sh passes
** HAVE_TT_OBS). */
#ifdef HAVE_TT_OBS

enum { OBS_NONE, OBS_METRICS, OBS_LOGS, OBS_TRACE, OBS_N };

/* cpu_s reads the CPU time of the process (every thread), in seconds. */
static double cpu_s(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

/* obs_round runs the seed pool's shape once with observability 'mode'
** and returns tasks per second, counted up to the end of the drain and,
** with tracing, of the export of every span (serialized as OTLP JSON and
** written to /dev/null, so that the figure holds the exporter's work but
** no disk); '*cpu_us' gets the CPU time the process spent per task (all
** threads), which depends less than the rate on what else the machine
** runs. */
static double obs_round(int mode, int n, double *cpu_us) {
  tt_pool_opts opts;
  tt_pool_hook hook = tt_trace_pool_hook();
  tt_pool_stats st;
  tt_pool *p;
  double t0, c0, rate;
  int err = 0, i;
  memset(&opts, 0, sizeof opts);
  opts.name = "bench_obs";
  opts.workers = 5;
  opts.queue = 20;
  if (mode == OBS_TRACE) opts.hook = &hook;
  p = tt_pool_new(&opts, &err);
  if (p == NULL) die(tt_strerror(err));
  if (mode != OBS_NONE && tt_metrics_observe_pool(p, NULL) != TT_OK)
    die("metrics: observe failed");
  if (mode == OBS_LOGS && tt_log_observe_pool(p, false) != TT_OK)
    die("logs: observe failed");
  c0 = cpu_s();
  t0 = now_ns();
  for (i = 0; i < n; i++) {
    tt_handle *h;
    while ((h = tt_pool_submit(p, tt_background(), NULL, noop_fn, NULL,
                               NULL, &err)) == NULL) {
      if (err != TT_EQUEUE_FULL) die(tt_strerror(err));
      sched_yield();
    }
    tt_unref(h);
  }
  if (tt_pool_drain(p, NULL, -1) != TT_OK) die("obs: drain failed");
  if (mode == OBS_TRACE && tt_trace_flush(-1) != TT_OK)
    die("obs: flush failed");
  rate = n / ((now_ns() - t0) / 1e9);
  *cpu_us = (cpu_s() - c0) / n * 1e6;
  tt_pool_stats_get(p, &st);
  if (st.completed != (uint64_t)n) die("obs: tasks were lost");
  tt_unref(p);
  return rate;
}

/* The four configurations run in turn, round after round, so that each
** sees the same conditions of a shared machine; medians of 15 rounds. */
static void bench_obs(void) {
  enum { ROUNDS = 15 };
  static const char *const names[OBS_N] = {
    "obs_none_per_s", "obs_metrics_per_s", "obs_logs_per_s",
    "obs_trace_per_s"
  };
  static const char *const cpu_names[OBS_N] = {
    "obs_none_cpu_us", "obs_metrics_cpu_us", "obs_logs_cpu_us",
    "obs_trace_cpu_us"
  };
  const int n = 40000;
  double rates[OBS_N][ROUNDS], cpus[OBS_N][ROUNDS], ignore;
  tt_trace_opts to;
  tt_trace_stats ts;
  int r, m;
  memset(&to, 0, sizeof to);
  to.file = "/dev/null";
  to.sampler = "always_on";
  to.queue_size = 1 << 18;
  to.schedule_delay = 0.2;
  if (tt_trace_configure(&to) != TT_OK) die("obs: trace settings");
  tt_log_set_level(TT_LOG_INFO);
  /* Warm up the allocator and the exporter. */
  obs_round(OBS_TRACE, n / 10, &ignore);
  for (r = 0; r < ROUNDS; r++)
    for (m = 0; m < OBS_N; m++) rates[m][r] = obs_round(m, n, &cpus[m][r]);
  tt_trace_stats_get(&ts);
  if (ts.dropped != 0) die("obs: spans were dropped");
  for (m = 0; m < OBS_N; m++) report(names[m], median(rates[m], ROUNDS));
  for (m = 0; m < OBS_N; m++)
    report(cpu_names[m], median(cpus[m], ROUNDS));
  tt_trace_configure(NULL);
}

#define OBS_BENCHES {"obs", bench_obs},
#else
#define OBS_BENCHES
#endif

/* }==================================================================== */


/* {====================================================================
** Groups and singleflight
** ===================================================================== */

/* These benchmarks are built only when tether.h declares the API (run.sh
** passes HAVE_TT_GROUP and HAVE_TT_FLIGHT); otherwise their cells read
** "n/a (not built)". */
#ifdef HAVE_TT_GROUP

/* A group, two no-op tasks and wait, as errgroup.WithContext, two Go
** calls and Wait. */
static void bench_group2(void) {
  const int n = 100000;
  double t0 = 0;
  int i;
  for (i = -n / 10; i < n; i++) {
    tt_ctx *gctx = NULL;
    tt_group *g;
    if (i == 0) t0 = now_ns();
    g = tt_group_new(tt_background(), TT_NO_LIMIT, &gctx);
    if (g == NULL) die("group2: out of memory");
    if (tt_group_go(g, noop_fn, NULL, NULL) != TT_OK ||
        tt_group_go(g, noop_fn, NULL, NULL) != TT_OK)
      die("group2: cannot start a task");
    if (tt_group_wait(g, NULL) != TT_OK) die("group2: unexpected error");
    tt_unref(gctx);
    tt_unref(g);
  }
  report("group2_ns", (now_ns() - t0) / n);
}

#define GROUP_BENCHES {"group2", bench_group2},
#else
#define GROUP_BENCHES
#endif

#ifdef HAVE_TT_FLIGHT

#include <pthread.h>
#include <stdatomic.h>

enum { SF_CALLERS = 1000, SF_ROUNDS = 11 };

/* The state one round of the singleflight benchmark shares with its
** caller threads. */
typedef struct sf_round {
  tt_flight *sf;
  tt_ctx *gate;               /* canceled to let every caller go at once */
  pthread_barrier_t ready;    /* the callers and the main thread */
  pthread_barrier_t done;     /* the callers, once all have returned */
  atomic_int calls;           /* runs of the function */
  double finished[SF_CALLERS];
} sf_round;

typedef struct sf_caller {
  sf_round *round;
  int index;
} sf_caller;

/* The function under singleflight counts its runs and returns once every
** caller has joined its run (tt_flight_waiting), yielding the CPU between
** looks as Go's peer does: all the callers are parked on the one run
** before it ends. */
static int sf_fn(tt_ctx *ctx, void *arg, tt_obj **out) {
  sf_round *r = arg;
  atomic_fetch_add(&r->calls, 1);
  while (tt_flight_waiting(r->sf, "key", 3) < SF_CALLERS &&
         tt_ctx_err(ctx) == TT_OK)
    sched_yield();
  *out = NULL;
  return TT_OK;
}

static void *sf_caller_main(void *p) {
  sf_caller *c = p;
  sf_round *r = c->round;
  tt_obj *res = NULL;
  pthread_barrier_wait(&r->ready);
  tt_ctx_wait(r->gate, -1);
  if (tt_flight_call(r->sf, tt_background(), "key", 3, sf_fn, r, NULL, 1.0,
                     false, &res, NULL) != TT_OK)
    die("singleflight: the call failed");
  tt_unref(res);
  r->finished[c->index] = now_ns();
  /* No caller thread ends before the last has returned: the wall time is
  ** the singleflight's, not that of a thousand thread exits. */
  pthread_barrier_wait(&r->done);
  return NULL;
}

/* Singleflight with 1,000 caller threads on one key, released together;
** the function returns once all of them have joined its run.  Reported
** are the runs of the function and the wall time from the release until
** the last caller returned (medians over the rounds). */
static void bench_singleflight(void) {
  static pthread_t threads[SF_CALLERS];
  static sf_caller callers[SF_CALLERS];
  static sf_round round;
  double walls[SF_ROUNDS], calls[SF_ROUNDS];
  pthread_attr_t attr;
  int r, i;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 128 * 1024);
  for (r = 0; r < SF_ROUNDS; r++) {
    double t0, last;
    round.sf = tt_flight_new();
    round.gate = tt_with_cancel(tt_background());
    if (round.sf == NULL || round.gate == NULL)
      die("singleflight: out of memory");
    atomic_store(&round.calls, 0);
    pthread_barrier_init(&round.ready, NULL, SF_CALLERS + 1);
    pthread_barrier_init(&round.done, NULL, SF_CALLERS);
    for (i = 0; i < SF_CALLERS; i++) {
      callers[i].round = &round;
      callers[i].index = i;
      if (pthread_create(&threads[i], &attr, sf_caller_main, &callers[i]))
        die("singleflight: cannot create a caller thread");
    }
    pthread_barrier_wait(&round.ready);
    t0 = now_ns();
    tt_cancel(round.gate, NULL);
    for (i = 0; i < SF_CALLERS; i++) pthread_join(threads[i], NULL);
    last = t0;
    for (i = 0; i < SF_CALLERS; i++)
      if (round.finished[i] > last) last = round.finished[i];
    walls[r] = (last - t0) / 1e6;
    calls[r] = atomic_load(&round.calls);
    pthread_barrier_destroy(&round.ready);
    pthread_barrier_destroy(&round.done);
    tt_unref(round.gate);
    tt_unref(round.sf);
  }
  pthread_attr_destroy(&attr);
  report("sf_wall_ms", median(walls, SF_ROUNDS));
  report("sf_calls", median(calls, SF_ROUNDS));
}

/* The state one round of the asynchronous singleflight benchmark shares
** with its callbacks, which all run on the thread that ends the run. */
typedef struct sf_async_round {
  sf_round base;              /* 'sf' and 'calls', for sf_fn */
  int results;                /* callbacks so far */
  double last;                /* when the last one came */
  tt_ctx *all;                /* canceled by the last one */
} sf_async_round;

static void sf_async_cb(void *p, int rc, tt_obj *result, bool shared) {
  sf_async_round *r = p;
  (void)result;
  if (rc != TT_OK || !shared) die("singleflight async: wrong result");
  if (++r->results == SF_CALLERS) {
    r->last = now_ns();
    tt_cancel(r->all, NULL);
  }
}

/* sf_async_rounds runs the rounds of the asynchronous shape with every
** caller on 'ctx' and returns the median wall time in milliseconds. */
static double sf_async_rounds(tt_ctx *ctx) {
  static sf_async_round round;
  double walls[SF_ROUNDS];
  int r, i;
  for (r = -1; r < SF_ROUNDS; r++) {  /* one round to warm up */
    double t0;
    round.base.sf = tt_flight_new();
    round.all = tt_with_cancel(tt_background());
    if (round.base.sf == NULL || round.all == NULL)
      die("singleflight async: out of memory");
    atomic_store(&round.base.calls, 0);
    round.results = 0;
    t0 = now_ns();
    for (i = 0; i < SF_CALLERS; i++)
      if (tt_flight_call_async(round.base.sf, ctx, "key", 3, sf_fn,
                               &round.base, NULL, 1.0, false, sf_async_cb,
                               &round) != TT_OK)
        die("singleflight async: the call failed");
    tt_ctx_wait(round.all, -1);
    if (atomic_load(&round.base.calls) != 1)
      die("singleflight async: the function ran more than once");
    if (r >= 0) walls[r] = (round.last - t0) / 1e6;
    tt_unref(round.all);
    tt_unref(round.base.sf);
  }
  return median(walls, SF_ROUNDS);
}

/* Singleflight with 1,000 asynchronous callers (tt_flight_call_async) of
** one key, joined one after another from this thread; the function
** returns once all of them have joined its run, as in the threaded
** shape.  Reported: the wall time from the first join until the last
** callback (median over the rounds), with callers on the background
** context (nothing to watch), and on a context that can be canceled
** (each caller's context is watched, and the watch stopped when the
** result comes). */
static void bench_singleflight_async(void) {
  tt_ctx *ctx = tt_with_cancel(tt_background());
  if (ctx == NULL) die("singleflight async: out of memory");
  report("sf_async_wall_ms", sf_async_rounds(tt_background()));
  report("sf_async_ctx_wall_ms", sf_async_rounds(ctx));
  tt_cancel(ctx, NULL);
  tt_unref(ctx);
}

#define FLIGHT_BENCHES {"singleflight", bench_singleflight}, \
  {"singleflight_async", bench_singleflight_async},
#else
#define FLIGHT_BENCHES
#endif

/* }==================================================================== */


typedef struct bench {
  const char *name;
  void (*run)(void);
} bench;

static const bench benches[] = {
  {"with_cancel", bench_with_cancel},
  {"with_timeout", bench_with_timeout},
  {"detach_bound", bench_detach_bound},
  {"value10", bench_value10},
  {"prop_flat", bench_prop_flat},
  {"prop_chain", bench_prop_chain},
  {"pool", bench_pool},
  OBS_BENCHES
  GROUP_BENCHES
  FLIGHT_BENCHES
  {NULL, NULL}
};

int main(int argc, char **argv) {
  const char *filter = argc > 1 ? argv[1] : "";
  const bench *b;
  int ran = 0;
  for (b = benches; b->name != NULL; b++) {
    if (strstr(b->name, filter) == NULL) continue;
    b->run();
    ran++;
  }
  tt_shutdown();
  if (ran == 0) {
    fprintf(stderr, "bench_core: no benchmark matches '%s'\n", filter);
    return 1;
  }
  return 0;
}
