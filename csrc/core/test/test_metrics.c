/*
** test_metrics.c -- the metrics registry and its text format, the pool
** families fed by pool events, and the observer options they rest on
** (immediate observers, filters, release).
**
** Every pool here has a name of its own: metric series live as long as
** the process, so tests never see each other's counts.
*/
#include <stdatomic.h>
#include <unistd.h>

#include "harness.h"

static tt_key key_tenant = {NULL, "tenant", 6};

static char *text(void) {
  tt_buf b = TT_BUF_INIT;
  CHECK_EQ(tt_metrics_text(&b), TT_OK);
  return b.data != NULL ? b.data : calloc(1, 1);
}

/* has_line tells whether 'line' is a whole line of 't'. */
static bool has_line(const char *t, const char *line) {
  size_t n = strlen(line);
  const char *p = t;
  while ((p = strstr(p, line)) != NULL) {
    if ((p == t || p[-1] == '\n') && p[n] == '\n') return true;
    p += 1;
  }
  return false;
}

/* count_prefix counts the lines of 't' that start with 'prefix'. */
static int count_prefix(const char *t, const char *prefix) {
  int n = 0;
  size_t len = strlen(prefix);
  const char *p = t;
  while (*p != '\0') {
    if (strncmp(p, prefix, len) == 0) n++;
    p = strchr(p, '\n');
    if (p == NULL) break;
    p++;
  }
  return n;
}

/* value_of returns the value of the sample line that starts with
** 'series ' (the series written out in full), or -1. */
static double value_of(const char *t, const char *series) {
  size_t n = strlen(series);
  const char *p = t;
  while ((p = strstr(p, series)) != NULL) {
    if ((p == t || p[-1] == '\n') && p[n] == ' ') return atof(p + n + 1);
    p += 1;
  }
  return -1;
}

static int fn_ok(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  *out = NULL;
  return TT_OK;
}

static int fn_fail(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  *out = (tt_obj *)tt_error_new(TT_EFAILED, "boom", NULL);
  return TT_EFAILED;
}

static int fn_gate(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  *out = NULL;
  tt_ctx_wait(arg, 10);
  return TT_OK;
}

static tt_pool *new_pool(const char *name, int workers, int queue,
                         int dead_cap, int attempts) {
  tt_pool_opts o;
  tt_pool *p;
  int err = 0;
  memset(&o, 0, sizeof o);
  o.name = name;
  o.workers = workers;
  o.queue = queue;
  o.dead_cap = dead_cap;
  o.retry.attempts = attempts;
  o.tenant_key = key_tenant;
  p = tt_pool_new(&o, &err);
  CHECK(p != NULL);
  return p;
}

static tt_handle *submit(tt_pool *p, tt_ctx *parent, tt_fn fn, void *arg,
                         int *err) {
  tt_submit_opts so;
  memset(&so, 0, sizeof so);
  so.name = "job";
  return tt_pool_submit(p, parent, &so, fn, arg, NULL, err);
}

static tt_ctx *with_tenant(const char *name) {
  tt_bytes *b = tt_bytes_new(name, strlen(name));
  tt_ctx *c = tt_with_value(tt_background(), &key_tenant, &b->hdr);
  tt_unref(b);
  return c;
}

/* {====================================================================
** Pool families
** ===================================================================== */

TEST(pool_counters_after_a_workload) {
  tt_pool *p = new_pool("m_work", 1, 2, 10, 2);
  tt_ctx *gate = tt_with_cancel(tt_background());
  tt_handle *h[6];
  char *t;
  int err, i, refused = 0;
  CHECK_EQ(tt_metrics_observe_pool(p, NULL), TT_OK);
  /* One op holds the only worker, two wait, the rest are refused. */
  h[0] = submit(p, tt_background(), fn_gate, gate, &err);
  WAIT_FOR(tt_handle_state(h[0]) == TT_H_RUNNING, 10);
  h[1] = submit(p, tt_background(), fn_ok, NULL, &err);
  h[2] = submit(p, tt_background(), fn_fail, NULL, &err);
  for (i = 3; i < 6; i++) {
    h[i] = submit(p, tt_background(), fn_ok, NULL, &err);
    if (h[i] == NULL && err == TT_EQUEUE_FULL) refused++;
  }
  CHECK_EQ(refused, 3);
  t = text();
  CHECK_EQ(value_of(t, "tether_pool_queued{pool=\"m_work\"}"), 2);
  CHECK_EQ(value_of(t, "tether_pool_inflight{pool=\"m_work\"}"), 1);
  CHECK_EQ(value_of(t, "tether_pool_workers{pool=\"m_work\"}"), 1);
  free(t);
  tt_cancel(gate, NULL);
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  t = text();
  CHECK_EQ(value_of(t, "tether_pool_submitted_total{pool=\"m_work\"}"), 3);
  CHECK_EQ(value_of(t, "tether_pool_ops_total{pool=\"m_work\","
                       "outcome=\"completed\"}"), 2);
  CHECK_EQ(value_of(t, "tether_pool_ops_total{pool=\"m_work\","
                       "outcome=\"dead\"}"), 1);
  CHECK_EQ(value_of(t, "tether_pool_ops_total{pool=\"m_work\","
                       "outcome=\"failed\"}"), 0);
  CHECK_EQ(value_of(t, "tether_pool_ops_total{pool=\"m_work\","
                       "outcome=\"abandoned\"}"), 0);
  CHECK_EQ(value_of(t, "tether_pool_rejected_total{pool=\"m_work\","
                       "code=\"queue_full\"}"), 3);
  CHECK_EQ(value_of(t, "tether_pool_retries_total{pool=\"m_work\"}"), 1);
  /* Four attempts ran: two completions, a retried failure, a dead one. */
  CHECK_EQ(value_of(t, "tether_pool_op_duration_seconds_count"
                       "{pool=\"m_work\"}"), 4);
  CHECK_EQ(value_of(t, "tether_pool_op_duration_seconds_bucket"
                       "{pool=\"m_work\",le=\"+Inf\"}"), 4);
  CHECK(value_of(t, "tether_pool_op_duration_seconds_sum"
                    "{pool=\"m_work\"}") >= 0);
  CHECK_EQ(value_of(t, "tether_pool_queued{pool=\"m_work\"}"), 0);
  CHECK_EQ(value_of(t, "tether_pool_inflight{pool=\"m_work\"}"), 0);
  /* The workers of a drained pool are gone. */
  CHECK_EQ(value_of(t, "tether_pool_workers{pool=\"m_work\"}"), 0);
  free(t);
  for (i = 0; i < 6; i++) tt_unref(h[i]);
  tt_unref(gate);
  tt_unref(p);
}

TEST(text_format_shape) {
  tt_pool *p = new_pool("m_shape", 2, 0, -1, 1);
  tt_handle *h;
  char *t, *line;
  int err, i;
  double last = -1;
  CHECK_EQ(tt_metrics_observe_pool(p, NULL), TT_OK);
  for (i = 0; i < 20; i++) {
    h = submit(p, tt_background(), i % 4 == 0 ? fn_fail : fn_ok, NULL,
               &err);
    CHECK(h != NULL);
    tt_unref(h);
  }
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  t = text();
  /* HELP and TYPE once per family. */
  CHECK_EQ(count_prefix(t, "# TYPE tether_pool_ops_total counter\n"), 1);
  CHECK_EQ(count_prefix(t, "# HELP tether_pool_ops_total "), 1);
  CHECK(has_line(t, "# TYPE tether_pool_op_duration_seconds histogram"));
  CHECK(has_line(t, "# TYPE tether_pool_queued gauge"));
  /* Cumulative buckets, ending in +Inf, equal to _count. */
  line = t;
  for (i = 0; i < 16; i++) {
    double v;
    line = strstr(line, "tether_pool_op_duration_seconds_bucket"
                        "{pool=\"m_shape\",le=\"");
    CHECK(line != NULL);
    if (line == NULL) break;
    v = atof(strchr(line, '}') + 2);
    CHECK(v >= last);
    last = v;
    line++;
  }
  CHECK(strstr(t, "{pool=\"m_shape\",le=\"+Inf\"} 20\n") != NULL);
  CHECK_EQ(value_of(t, "tether_pool_op_duration_seconds_count"
                       "{pool=\"m_shape\"}"), 20);
  CHECK_EQ(value_of(t, "tether_pool_ops_total{pool=\"m_shape\","
                       "outcome=\"failed\"}"), 5);
  CHECK(t[strlen(t) - 1] == '\n');
  free(t);
  tt_unref(p);
}

TEST(pools_that_share_a_name_add_up_and_outlive_their_pools) {
  tt_pool *a = new_pool("m_shared", 1, 0, 0, 1);
  tt_pool *b = new_pool("m_shared", 2, 0, 0, 1);
  tt_handle *h;
  char *t;
  int err;
  CHECK_EQ(tt_metrics_observe_pool(a, NULL), TT_OK);
  CHECK_EQ(tt_metrics_observe_pool(b, NULL), TT_OK);
  h = submit(a, tt_background(), fn_ok, NULL, &err);
  tt_unref(h);
  h = submit(b, tt_background(), fn_ok, NULL, &err);
  tt_unref(h);
  h = submit(b, tt_background(), fn_ok, NULL, &err);
  tt_unref(h);
  t = text();
  CHECK_EQ(value_of(t, "tether_pool_workers{pool=\"m_shared\"}"), 3);
  free(t);
  CHECK_EQ(tt_pool_drain(a, NULL, 10), TT_OK);
  CHECK_EQ(tt_pool_drain(b, NULL, 10), TT_OK);
  tt_unref(a);
  tt_unref(b);
  t = text();
  CHECK_EQ(value_of(t, "tether_pool_ops_total{pool=\"m_shared\","
                       "outcome=\"completed\"}"), 3);
  CHECK_EQ(value_of(t, "tether_pool_workers{pool=\"m_shared\"}"), 0);
  CHECK_EQ(count_prefix(t, "tether_pool_submitted_total{pool=\"m_shared\""),
           1);
  free(t);
}

TEST(tenant_label_is_bounded) {
  tt_pool_opts o;
  tt_pool_metrics_opts mo = {true, 2};
  tt_pool *p;
  const char *tenants[] = {"acme", "globex", "initech", "umbrella", NULL};
  char *t;
  int err, i;
  memset(&o, 0, sizeof o);
  o.name = "m_tenants";
  o.workers = 1;
  o.tenant_key = key_tenant;
  p = tt_pool_new(&o, &err);
  CHECK_EQ(tt_metrics_observe_pool(p, &mo), TT_OK);
  for (i = 0; tenants[i] != NULL; i++) {
    tt_ctx *c = with_tenant(tenants[i]);
    tt_handle *h = submit(p, c, fn_ok, NULL, &err);
    tt_unref(h);
    tt_unref(c);
  }
  tt_unref(submit(p, tt_background(), fn_ok, NULL, &err));
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  t = text();
  CHECK_EQ(value_of(t, "tether_pool_submitted_total{pool=\"m_tenants\","
                       "tenant=\"acme\"}"), 1);
  CHECK_EQ(value_of(t, "tether_pool_submitted_total{pool=\"m_tenants\","
                       "tenant=\"globex\"}"), 1);
  /* The third tenant on, and ops without one, share "other". */
  CHECK_EQ(value_of(t, "tether_pool_submitted_total{pool=\"m_tenants\","
                       "tenant=\"other\"}"), 3);
  CHECK_EQ(count_prefix(t, "tether_pool_submitted_total{pool=\"m_tenants\""),
           3);
  CHECK_EQ(value_of(t, "tether_pool_ops_total{pool=\"m_tenants\","
                       "tenant=\"acme\",outcome=\"completed\"}"), 1);
  /* Gauges have no tenant. */
  CHECK_EQ(value_of(t, "tether_pool_queued{pool=\"m_tenants\"}"), 0);
  free(t);
  tt_unref(p);
}

TEST(hostile_names_are_escaped) {
  static const char name[] = "m_\"quoted\"\\back\nline\xff\xc3\x28";
  tt_pool *p = new_pool(name, 1, 0, 0, 1);
  char *t;
  CHECK_EQ(tt_metrics_observe_pool(p, NULL), TT_OK);
  t = text();
  CHECK(strstr(t, "tether_pool_workers{pool=\"m_\\\"quoted\\\"\\\\back"
                  "\\nline\xef\xbf\xbd\xef\xbf\xbd(\"} 1\n") != NULL);
  free(t);
  tt_unref(p);
}

/* }==================================================================== */


/* {====================================================================
** The registry
** ===================================================================== */

static const tt_metric_family extra_families[] = {
  {"test_things_total", "Things.\nWith a second line \\ and a slash.",
   TT_METRIC_COUNTER},
  {"tether_pool_workers", "Another help, ignored.", TT_METRIC_GAUGE},
  {"test_size_seconds", "A histogram.", TT_METRIC_HISTOGRAM},
};

static void extra_collect(tt_metric_writer *w, int f, void *ud) {
  static const double b[2] = {0.5, 1};
  const uint64_t counts[3] = {1, 0, 2};
  tt_metric_label l = {"kind", "x", (size_t)-1};
  (void)ud;
  if (f == 0) tt_metric_count(w, &l, 1, 7);
  if (f == 1) tt_metric_value(w, &l, 1, 1.5);
  if (f == 2) tt_metric_histogram(w, &l, 1, b, 2, counts, 12.25);
}

TEST(sources_add_families_and_share_names) {
  tt_metric_source s = {extra_families, 3, extra_collect, NULL};
  int id = tt_metrics_register(&s);
  char *t;
  CHECK(id > 0);
  t = text();
  CHECK(has_line(t, "# HELP test_things_total Things.\\nWith a second "
                    "line \\\\ and a slash."));
  CHECK(has_line(t, "test_things_total{kind=\"x\"} 7"));
  /* A family another source declared: written with it, help once. */
  CHECK_EQ(count_prefix(t, "# HELP tether_pool_workers "), 1);
  CHECK(strstr(t, "Another help") == NULL);
  CHECK(has_line(t, "tether_pool_workers{kind=\"x\"} 1.5"));
  CHECK(strstr(t, "tether_pool_workers{kind=\"x\"} 1.5") >
        strstr(t, "# TYPE tether_pool_workers gauge"));
  CHECK(strstr(t, "tether_pool_workers{kind=\"x\"} 1.5") <
        strstr(t, "# TYPE test_things_total"));
  CHECK(has_line(t, "test_size_seconds_bucket{kind=\"x\",le=\"0.5\"} 1"));
  CHECK(has_line(t, "test_size_seconds_bucket{kind=\"x\",le=\"1\"} 1"));
  CHECK(has_line(t, "test_size_seconds_bucket{kind=\"x\",le=\"+Inf\"} 3"));
  CHECK(has_line(t, "test_size_seconds_sum{kind=\"x\"} 12.25"));
  CHECK(has_line(t, "test_size_seconds_count{kind=\"x\"} 3"));
  free(t);
  tt_metrics_unregister(id);
  t = text();
  CHECK(strstr(t, "test_things_total") == NULL);
  CHECK(strstr(t, "# TYPE tether_pool_workers gauge") != NULL);
  free(t);
  CHECK_EQ(tt_metrics_register(NULL), -1);
}

/* }==================================================================== */


/* {====================================================================
** Observer options
** ===================================================================== */

typedef struct seen {
  atomic_int calls, released, completed, failed;
  _Atomic double fail_duration;
  atomic_int fail_ctx;
} seen;

static void count_all(const tt_event *ev, void *ud) {
  seen *s = ud;
  atomic_fetch_add(&s->calls, 1);
  if (ev->kind == TT_EV_COMPLETED) atomic_fetch_add(&s->completed, 1);
  if (ev->kind == TT_EV_DEAD || ev->kind == TT_EV_FAILED) {
    atomic_fetch_add(&s->failed, 1);
    atomic_store(&s->fail_duration, ev->duration);
    atomic_store(&s->fail_ctx, ev->ctx != NULL);
  }
}

static bool only_failures(int kind, void *ud) {
  (void)ud;
  return kind == TT_EV_FAILED || kind == TT_EV_DEAD;
}

static void count_release(void *ud) {
  atomic_fetch_add(&((seen *)ud)->released, 1);
}

static int fn_slow_fail(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)arg;
  tt_sleep(0.02, ctx);
  *out = NULL;
  return TT_EFAILED;
}

TEST(filters_immediate_observers_and_release) {
  tt_pool *p = new_pool("m_obs", 1, 0, 0, 1);
  tt_observer_opts filt = {false, only_failures, count_release};
  tt_observer_opts imm = {true, NULL, count_release};
  seen a, b, c;
  tt_handle *h;
  int err, id;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  memset(&c, 0, sizeof c);
  CHECK(tt_pool_observe_with(p, count_all, &a, &filt) > 0);
  CHECK(tt_pool_observe_with(p, count_all, &b, &imm) > 0);
  id = tt_pool_observe_with(p, count_all, &c, &filt);
  tt_unref(submit(p, tt_background(), fn_ok, NULL, &err));
  h = submit(p, tt_background(), fn_slow_fail, NULL, &err);
  CHECK(h != NULL);
  CHECK(tt_latch_wait(tt_handle_latch(h), 10));
  tt_unref(h);
  tt_pool_unobserve(p, id);
  CHECK_EQ(atomic_load(&c.released), 1);
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  /* The filtered observer saw the failure only, with its run time and
  ** the op's context. */
  CHECK_EQ(atomic_load(&a.calls), 1);
  CHECK_EQ(atomic_load(&a.failed), 1);
  CHECK(atomic_load(&a.fail_duration) >= 0.015);
  CHECK_EQ(atomic_load(&a.fail_ctx), 1);
  /* The immediate one saw everything: 2 submitted, 2 started, an end
  ** each, and drained. */
  CHECK_EQ(atomic_load(&b.calls), 7);
  CHECK_EQ(atomic_load(&b.completed), 1);
  CHECK_EQ(atomic_load(&a.released), 0);
  tt_unref(p);
  /* Released with the pool's memory. */
  CHECK_EQ(atomic_load(&a.released), 1);
  CHECK_EQ(atomic_load(&b.released), 1);
  CHECK_EQ(atomic_load(&c.released), 1);
}

/* }==================================================================== */

/* {====================================================================
** Store families
** ===================================================================== */

TEST(store_gauges_and_counters_while_open) {
  char dir[] = "/tmp/tether-mstore-XXXXXX", url[160], msg[256];
  char id[TT_STORE_IDLEN], path[128], *t;
  tt_store_pool_stats *ps = NULL;
  tt_claim *c = NULL;
  size_t n = 0;
  tt_store *s;
  int err = 0, i;
  CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/q.db", dir);
  snprintf(url, sizeof url, "sqlite:%s", path);
  s = tt_store_open(url, NULL, &err, msg, sizeof msg);
  CHECK(s != NULL);
  if (s == NULL) return;
  CHECK_EQ(tt_metrics_observe_store(s, "ctest_store"), TT_OK);
  for (i = 0; i < 3; i++)
    CHECK_EQ(tt_store_put_wait(s, "a", "rec", 3, id), TT_OK);
  CHECK_EQ(tt_store_put_wait(s, "b", "rec", 3, id), TT_OK);
  /* The stats of every pool in one request. */
  CHECK_EQ(tt_store_stats_pools(s, &ps, &n), TT_OK);
  CHECK_EQ(n, 2);
  if (n == 2) {
    CHECK(strcmp(ps[0].pool, "a") == 0 || strcmp(ps[1].pool, "a") == 0);
    CHECK_EQ(ps[0].st.depth + ps[1].st.depth, 4);
  }
  tt_store_pool_stats_free(ps, n);
  /* One of a's claimed and acknowledged, one claimed and left leased;
  ** b's made a dead letter. */
  CHECK_EQ(tt_store_claim(s, "a", 2, &c, &n), TT_OK);
  CHECK_EQ(n, 2);
  if (n == 2) CHECK_EQ(tt_store_ack(s, &c[0]), TT_OK);
  tt_claims_free(c, n);
  CHECK_EQ(tt_store_claim(s, "b", 1, &c, &n), TT_OK);
  if (n == 1) CHECK_EQ(tt_store_bury(s, &c[0], "test"), TT_OK);
  tt_claims_free(c, n);
  t = text();
  CHECK(has_line(t, "tether_store_up{store=\"ctest_store\"} 1"));
  CHECK(has_line(t, "tether_store_depth{store=\"ctest_store\",pool=\"a\"} "
                    "2"));
  CHECK(has_line(t, "tether_store_leased{store=\"ctest_store\",pool=\"a\"} "
                    "1"));
  CHECK(has_line(t, "tether_store_depth{store=\"ctest_store\",pool=\"b\"} "
                    "0"));
  CHECK(has_line(t, "tether_store_dead{store=\"ctest_store\",pool=\"b\"} "
                    "1"));
  CHECK(value_of(t, "tether_store_oldest_age_seconds{store=\"ctest_store\","
                    "pool=\"a\"}") >= 0);
  CHECK(has_line(t, "tether_store_records_written_total{store=\"ctest_"
                    "store\"} 4"));
  CHECK(has_line(t, "tether_store_records_claimed_total{store=\"ctest_"
                    "store\"} 3"));
  CHECK(has_line(t, "tether_store_records_acked_total{store=\"ctest_"
                    "store\"} 1"));
  CHECK(has_line(t, "tether_store_records_buried_total{store=\"ctest_"
                    "store\"} 1"));
  CHECK(has_line(t, "# TYPE tether_store_depth gauge"));
  CHECK(has_line(t, "# TYPE tether_store_records_written_total counter"));
  free(t);
  /* A pool that empties keeps its series, at 0. */
  CHECK_EQ(tt_store_put_wait(s, "c", "rec", 3, id), TT_OK);
  t = text();
  CHECK(has_line(t, "tether_store_depth{store=\"ctest_store\",pool=\"c\"} "
                    "1"));
  free(t);
  CHECK_EQ(tt_store_claim(s, "c", 1, &c, &n), TT_OK);
  if (n == 1) CHECK_EQ(tt_store_ack(s, &c[0]), TT_OK);
  tt_claims_free(c, n);
  t = text();
  CHECK(has_line(t, "tether_store_depth{store=\"ctest_store\",pool=\"c\"} "
                    "0"));
  free(t);
  /* Closed, it leaves the text. */
  tt_store_close(s);
  t = text();
  CHECK(strstr(t, "store=\"ctest_store\"") == NULL);
  CHECK(has_line(t, "# TYPE tether_store_depth gauge"));
  free(t);
  tt_unref(s);
  /* Without a name, the label is the URL. */
  s = tt_store_open(url, NULL, &err, msg, sizeof msg);
  CHECK(s != NULL);
  if (s == NULL) return;
  CHECK_EQ(tt_metrics_observe_store(s, NULL), TT_OK);
  t = text();
  snprintf(msg, sizeof msg, "tether_store_up{store=\"%s\"} 1", url);
  CHECK(has_line(t, msg));
  free(t);
  /* Its last reference closes it: gone too. */
  tt_unref(s);
  t = text();
  CHECK(strstr(t, url) == NULL);
  free(t);
  unlink(path);
  snprintf(path, sizeof path, "%s/q.db-wal", dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/q.db-shm", dir);
  unlink(path);
  rmdir(dir);
}

/* }==================================================================== */

TEST_MAIN()
