/*
** test_oplog.c -- log sinks (a file, a sink that owns its state) and the
** log line of each op outcome.
*/
#include <stdatomic.h>
#include <unistd.h>

#include "harness.h"

static char path[64];

static char *slurp(void) {
  FILE *f = fopen(path, "rb");
  char *d;
  long n;
  if (f == NULL) return calloc(1, 1);
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  d = calloc(1, (size_t)n + 1);
  if (fread(d, 1, (size_t)n, f) != (size_t)n) d[0] = '\0';
  fclose(f);
  return d;
}

static int count(const char *t, const char *s) {
  int n = 0;
  const char *p = t;
  while ((p = strstr(p, s)) != NULL) {
    n++;
    p++;
  }
  return n;
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
  *out = (tt_obj *)tt_error_new(TT_EFAILED, "bad \"input\"\n", NULL);
  return TT_EFAILED;
}

static atomic_int released;

static void count_release(void *ud) {
  (void)ud;
  atomic_fetch_add(&released, 1);
}

static void drop_sink(const tt_log_record *r, void *ud) {
  (void)r;
  (void)ud;
}

TEST(file_sink_appends_lines) {
  tt_field f[] = {TT_FSTR("k", "v")};
  char *t;
  int i;
  snprintf(path, sizeof path, "/tmp/tether-log-%d.jsonl", (int)getpid());
  unlink(path);
  CHECK_EQ(tt_log_set_file(path), TT_OK);
  for (i = 0; i < 3; i++) tt_log(TT_LOG_WARN, "hello", f, 1);
  /* A second file sink replaces the first (closing it), appending. */
  CHECK_EQ(tt_log_set_file(path), TT_OK);
  tt_log(TT_LOG_ERROR, "again", NULL, 0);
  tt_log(TT_LOG_DEBUG, "hidden", NULL, 0);
  t = slurp();
  CHECK_EQ(count(t, "\"msg\":\"hello\",\"k\":\"v\"}\n"), 3);
  CHECK_EQ(count(t, "\"level\":\"error\",\"msg\":\"again\"}\n"), 1);
  CHECK_EQ(count(t, "hidden"), 0);
  CHECK_EQ(count(t, "\n"), 4);
  free(t);
  CHECK_EQ(tt_log_set_file("/nonexistent/dir/x.log"), TT_EINVAL);
  tt_log_set_sink_owned(drop_sink, NULL, count_release);
  CHECK_EQ(atomic_load(&released), 0);
  tt_log_set_sink(NULL, NULL);
  CHECK_EQ(atomic_load(&released), 1);
  unlink(path);
}

TEST(op_outcomes_log_one_line_each) {
  tt_pool_opts o;
  tt_submit_opts so;
  tt_pool *p;
  char *t;
  int err;
  snprintf(path, sizeof path, "/tmp/tether-oplog-%d.jsonl", (int)getpid());
  unlink(path);
  CHECK_EQ(tt_log_set_file(path), TT_OK);
  memset(&o, 0, sizeof o);
  o.name = "logged";
  o.workers = 1;
  o.retry.attempts = 2;
  p = tt_pool_new(&o, &err);
  CHECK_EQ(tt_log_observe_pool(p, false), TT_OK);
  memset(&so, 0, sizeof so);
  so.name = "fine";
  tt_unref(tt_pool_submit(p, tt_background(), &so, fn_ok, NULL, NULL, &err));
  so.name = "broken";
  tt_unref(tt_pool_submit(p, tt_background(), &so, fn_fail, NULL, NULL,
                          &err));
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  tt_unref(p);
  /* At debug, ops that end well have a line too. */
  tt_log_set_level(TT_LOG_DEBUG);
  p = tt_pool_new(&o, &err);
  CHECK_EQ(tt_log_observe_pool(p, false), TT_OK);
  so.name = "fine";
  tt_unref(tt_pool_submit(p, tt_background(), &so, fn_ok, NULL, NULL, &err));
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  tt_unref(p);
  tt_log_set_level(TT_LOG_INFO);
  tt_log_set_sink(NULL, NULL);
  t = slurp();
  CHECK_EQ(count(t, "\n"), 3);
  CHECK(strstr(t, "\"level\":\"warn\",\"msg\":\"op attempt failed\","
                  "\"pool\":\"logged\",\"op\":\"broken\",\"id\":2,"
                  "\"tenant\":null,\"attempt\":1,\"outcome\":\"retried\","
                  "\"duration_ms\":") != NULL);
  CHECK(strstr(t, "\"level\":\"error\",\"msg\":\"op dead\",\"pool\":"
                  "\"logged\",\"op\":\"broken\",\"id\":2,\"tenant\":null,"
                  "\"attempt\":2,\"outcome\":\"dead\",\"duration_ms\":")
        != NULL);
  CHECK_EQ(count(t, "\"error\":\"bad \\\"input\\\"\\n\",\"trace_id\":null,"
                    "\"span_id\":null,\"state\":null}\n"), 2);
  CHECK_EQ(count(t, "\"msg\":\"op completed\""), 1);
  CHECK(strstr(t, "\"outcome\":\"completed\"") != NULL);
  free(t);
  unlink(path);
}

TEST_MAIN()
