/*
** test_trace.c -- spans, the sampler, the exporter (to a file, and its
** bounded queue against a collector that never answers), and the spans
** of pool attempts and saga steps.
**
** The first test reads its settings from the environment, which is read
** once, at the first use of tracing: it must stay first.
*/
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static char path[64];

/* slurp reads the whole trace file (empty string if none). */
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

/* to_file sends spans to a fresh file, sampling everything. */
static void to_file(const char *sampler, double ratio) {
  tt_trace_opts o;
  /* What earlier tests queued goes first, where they sent it. */
  CHECK_EQ(tt_trace_flush(10), TT_OK);
  memset(&o, 0, sizeof o);
  snprintf(path, sizeof path, "/tmp/tether-trace-%d.jsonl", (int)getpid());
  unlink(path);
  o.file = path;
  o.service_name = "test";
  o.sampler = sampler;
  o.sampler_arg = ratio;
  o.schedule_delay = 0.05;
  CHECK_EQ(tt_trace_configure(&o), TT_OK);
}

static void hex_of(tt_span *s, char tid[33], char sid[17]) {
  tt_span_context sc;
  tt_span_context_of(s, &sc);
  tt_hex(sc.trace_id, 16, tid);
  tt_hex(sc.span_id, 8, sid);
}

/* span_json returns the start of the exported span with id 'sid', or
** NULL. */
static const char *span_json(const char *t, const char *sid) {
  char want[64];
  snprintf(want, sizeof want, "\"spanId\":\"%s\",", sid);
  return strstr(t, want);
}

/* {====================================================================
** Settings from the environment
** ===================================================================== */

TEST(environment_settings) {
  tt_span *s;
  tt_ctx *c;
  char tid[33], sid[17], *t;
  snprintf(path, sizeof path, "/tmp/tether-trace-env-%d.jsonl",
           (int)getpid());
  unlink(path);
  setenv("TETHER_TRACES_FILE", path, 1);
  setenv("OTEL_SERVICE_NAME", "from-env", 1);
  setenv("OTEL_RESOURCE_ATTRIBUTES",
         "deployment.environment=te%20st,service.name=ignored", 1);
  setenv("OTEL_TRACES_SAMPLER", "always_on", 1);
  setenv("OTEL_BSP_SCHEDULE_DELAY", "20", 1);
  CHECK(tt_trace_enabled());
  s = tt_span_start(tt_background(), "from env", NULL, &c);
  CHECK(s != NULL && tt_span_recording(s));
  hex_of(s, tid, sid);
  CHECK(tt_span_end(s, NULL, 0));
  CHECK(!tt_span_end(s, "twice", 5));
  CHECK_EQ(tt_trace_flush(10), TT_OK);
  t = slurp();
  CHECK(strstr(t, "{\"key\":\"service.name\",\"value\":{\"stringValue\":"
                  "\"from-env\"}}") != NULL);
  CHECK(strstr(t, "{\"key\":\"deployment.environment\",\"value\":"
                  "{\"stringValue\":\"te st\"}}") != NULL);
  CHECK(strstr(t, "ignored") == NULL);
  CHECK(span_json(t, sid) != NULL);
  CHECK(strstr(t, "\"status\":{\"code\":0}") != NULL);
  free(t);
  unlink(path);
  tt_unref(s);
  tt_unref(c);
}

/* }==================================================================== */


/* {====================================================================
** Spans and the sampler
** ===================================================================== */

TEST(off_spans_still_propagate) {
  tt_span *a, *b;
  tt_ctx *ca, *cb;
  tt_span_context sa, sb, got;
  CHECK_EQ(tt_trace_configure(NULL), TT_OK);
  CHECK(!tt_trace_enabled());
  a = tt_span_start(tt_background(), "a", NULL, &ca);
  CHECK(a != NULL && !tt_span_recording(a));
  tt_span_context_of(a, &sa);
  CHECK_EQ(sa.flags, 0);
  CHECK(tt_ctx_span_context(ca, &got));
  CHECK(memcmp(got.span_id, sa.span_id, 8) == 0);
  b = tt_span_start(ca, "b", NULL, &cb);
  tt_span_context_of(b, &sb);
  CHECK(memcmp(sb.trace_id, sa.trace_id, 16) == 0);
  CHECK(memcmp(sb.span_id, sa.span_id, 8) != 0);
  CHECK(tt_span_end(b, NULL, 0));
  CHECK(tt_span_end(a, "err", 3));
  tt_unref(a);
  tt_unref(b);
  tt_unref(ca);
  tt_unref(cb);
}

/* A forked child must not repeat its parent's ids: each thread's
** generator is seeded again after a fork. */
TEST(a_forked_child_makes_other_ids) {
  tt_span *a, *b;
  tt_span_context sa, sb, sc;
  int fds[2], status;
  pid_t pid;
  a = tt_span_start(tt_background(), "a", NULL, NULL);  /* seeds */
  CHECK(a != NULL);
  CHECK_EQ(pipe(fds), 0);
  pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    /* The verdict leaves through an exec, as a child's life usually
    ** goes on (and valgrind checks no leaks of a forked copy then). */
    tt_span *c = tt_span_start(tt_background(), "c", NULL, NULL);
    bool ok;
    tt_span_context_of(c, &sc);
    ok = write(fds[1], &sc, sizeof sc) == (ssize_t)sizeof sc;
    execl("/bin/sh", "sh", "-c", ok ? "exit 0" : "exit 1", (char *)NULL);
    _exit(2);
  }
  close(fds[1]);
  b = tt_span_start(tt_background(), "b", NULL, NULL);
  tt_span_context_of(a, &sa);
  tt_span_context_of(b, &sb);
  CHECK_EQ(read(fds[0], &sc, sizeof sc), (ssize_t)sizeof sc);
  CHECK_EQ(waitpid(pid, &status, 0), pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  close(fds[0]);
  CHECK(memcmp(sb.trace_id, sc.trace_id, 16) != 0);
  CHECK(memcmp(sb.span_id, sc.span_id, 8) != 0);
  CHECK(memcmp(sa.span_id, sb.span_id, 8) != 0);
  tt_unref(a);
  tt_unref(b);
}

TEST(sampler_decisions) {
  tt_span_context remote;
  tt_ctx *sampled, *unsampled, *c;
  tt_span *s;
  tt_span_context sc;
  int i, n = 0;
  CHECK_EQ(tt_traceparent_parse(
               "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
               55, &remote), TT_OK);
  sampled = tt_with_span_context(tt_background(), &remote);
  remote.flags = 0;
  unsampled = tt_with_span_context(tt_background(), &remote);
  /* Parent-based: a child follows its parent; ratio 0 for new traces. */
  to_file("parentbased_traceidratio", 0);
  s = tt_span_start(sampled, "x", NULL, &c);
  tt_span_context_of(s, &sc);
  CHECK_EQ(sc.flags, 1);
  CHECK(tt_span_recording(s));
  tt_unref(s);
  tt_unref(c);
  s = tt_span_start(unsampled, "x", NULL, NULL);
  CHECK(!tt_span_recording(s));
  tt_unref(s);
  s = tt_span_start(tt_background(), "x", NULL, NULL);
  CHECK(!tt_span_recording(s));
  tt_unref(s);
  /* A ratio of a half samples about half of the new traces. */
  to_file("traceidratio", 0.5);
  for (i = 0; i < 2000; i++) {
    s = tt_span_start(tt_background(), "x", NULL, NULL);
    tt_span_context_of(s, &sc);
    n += sc.flags & 1;
    tt_unref(s);
  }
  CHECK(n > 800 && n < 1200);
  /* always_on ignores the parent's flag. */
  to_file("always_on", 0);
  s = tt_span_start(unsampled, "x", NULL, NULL);
  CHECK(tt_span_recording(s));
  tt_unref(s);
  /* always_off records nothing and turns tracing off. */
  to_file("always_off", 0);
  CHECK(!tt_trace_enabled());
  {
    tt_trace_opts bad;
    memset(&bad, 0, sizeof bad);
    bad.sampler = "sometimes";
    CHECK_EQ(tt_trace_configure(&bad), TT_EINVAL);
    bad.sampler = "traceidratio";
    bad.sampler_arg = 2;
    CHECK_EQ(tt_trace_configure(&bad), TT_EINVAL);
  }
  tt_unref(sampled);
  tt_unref(unsampled);
  unlink(path);
}

TEST(file_export_shape) {
  tt_span *root, *child;
  tt_ctx *croot, *cchild;
  char rt[33], rs[17], ct[33], cs[17], *t;
  const char *p;
  tt_field attrs[] = {TT_FSTR("k.str", "v\"q\n"), TT_FINT("k.int", -42),
                      TT_FNUM("k.num", 1.5), TT_FBOOL("k.bool", true)};
  tt_span_opts so;
  tt_trace_stats before, after;
  tt_trace_stats_get(&before);
  to_file(NULL, 0);
  memset(&so, 0, sizeof so);
  so.kind = TT_SPAN_SERVER;
  so.attrs = attrs;
  so.nattrs = 4;
  root = tt_span_start(tt_background(), "root \xff", &so, &croot);
  child = tt_span_start(croot, "child", NULL, &cchild);
  hex_of(root, rt, rs);
  hex_of(child, ct, cs);
  CHECK(strcmp(rt, ct) == 0);
  tt_span_end(child, "it \"broke\"", (size_t)-1);
  tt_span_end(root, NULL, 0);
  CHECK_EQ(tt_trace_flush(10), TT_OK);
  t = slurp();
  {
    static const char start[] =
        "{\"resourceSpans\":[{\"resource\":{\"attributes\":[";
    CHECK(strncmp(t, start, sizeof start - 1) == 0);
  }
  CHECK(strstr(t, "\"scopeSpans\":[{\"scope\":{\"name\":\"tether\"") != NULL);
  p = span_json(t, rs);
  CHECK(p != NULL);
  if (p != NULL) {
    CHECK(strstr(p, "\"name\":\"root \\ufffd\",\"kind\":2,") != NULL);
    CHECK(strstr(p, "{\"key\":\"k.str\",\"value\":{\"stringValue\":"
                    "\"v\\\"q\\n\"}}") != NULL);
    CHECK(strstr(p, "{\"key\":\"k.int\",\"value\":{\"intValue\":\"-42\"}}")
          != NULL);
    CHECK(strstr(p, "{\"key\":\"k.num\",\"value\":{\"doubleValue\":1.5}}")
          != NULL);
    CHECK(strstr(p, "{\"key\":\"k.bool\",\"value\":{\"boolValue\":true}}")
          != NULL);
  }
  p = span_json(t, cs);
  CHECK(p != NULL);
  if (p != NULL) {
    char want[64];
    snprintf(want, sizeof want, "\"parentSpanId\":\"%s\"", rs);
    CHECK(strstr(p, want) != NULL);
    CHECK(strstr(p, "\"status\":{\"code\":2,\"message\":"
                    "\"it \\\"broke\\\"\"}") != NULL);
    CHECK(strstr(p, "\"startTimeUnixNano\":\"1") != NULL);
  }
  /* One line per batch, each ending in a newline. */
  CHECK(t[0] != '\0' && t[strlen(t) - 1] == '\n');
  free(t);
  tt_trace_stats_get(&after);
  CHECK_EQ(after.exported - before.exported, 2);
  tt_unref(root);
  tt_unref(child);
  tt_unref(croot);
  tt_unref(cchild);
  unlink(path);
}

TEST(records_are_bounded) {
  tt_trace_opts o;
  tt_span *s;
  tt_field a = TT_FSTR("first", "0123456789abcdef");
  tt_field b = TT_FINT("second", 2);
  tt_field c = TT_FINT("third", 3);
  tt_field a2 = TT_FSTR("first", "again");
  char *t;
  CHECK_EQ(tt_trace_flush(10), TT_OK);
  memset(&o, 0, sizeof o);
  snprintf(path, sizeof path, "/tmp/tether-trace-%d.jsonl", (int)getpid());
  unlink(path);
  o.file = path;
  o.value_limit = 8;
  o.attr_limit = 2;
  CHECK_EQ(tt_trace_configure(&o), TT_OK);
  s = tt_span_start(tt_background(), "a long span name", NULL, NULL);
  tt_span_set_attr(s, &a);
  tt_span_set_attr(s, &b);
  tt_span_set_attr(s, &c);   /* over the count: dropped */
  tt_span_set_attr(s, &a2);  /* a key it has: replaced */
  tt_span_end(s, "a long error message", (size_t)-1);
  tt_span_set_attr(s, &c);   /* ended: nothing */
  CHECK_EQ(tt_trace_flush(10), TT_OK);
  t = slurp();
  CHECK(strstr(t, "\"name\":\"a long s\",") != NULL);
  CHECK(strstr(t, "\"attributes\":[{\"key\":\"first\",\"value\":"
                  "{\"stringValue\":\"again\"}},{\"key\":\"second\","
                  "\"value\":{\"intValue\":\"2\"}}],"
                  "\"droppedAttributesCount\":1,") != NULL);
  CHECK(strstr(t, "\"message\":\"a long e\"}") != NULL);
  free(t);
  tt_unref(s);
  unlink(path);
}

/* }==================================================================== */


/* {====================================================================
** A collector that never answers
** ===================================================================== */

TEST(full_queue_drops_and_never_blocks) {
  struct sockaddr_in a;
  socklen_t alen = sizeof a;
  struct pollfd pfd;
  int fd = socket(AF_INET, SOCK_STREAM, 0), conn = -1, i;
  char url[64];
  tt_trace_opts o;
  tt_trace_stats before, st;
  double t0;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
  CHECK(listen(fd, 16) == 0);
  CHECK(getsockname(fd, (struct sockaddr *)&a, &alen) == 0);
  snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces",
           ntohs(a.sin_port));
  memset(&o, 0, sizeof o);
  o.endpoint = url;
  o.sampler = "always_on";
  o.queue_size = 4;
  o.batch_size = 2;
  o.export_timeout = 1;
  CHECK_EQ(tt_trace_configure(&o), TT_OK);
  tt_trace_stats_get(&before);
  /* A full batch: the exporter takes it and waits for an answer that
  ** never comes (the connection is accepted, never read). */
  for (i = 0; i < 2; i++) {
    tt_span *s = tt_span_start(tt_background(), "s", NULL, NULL);
    tt_span_end(s, NULL, 0);
    tt_unref(s);
  }
  pfd.fd = fd;
  pfd.events = POLLIN;
  CHECK(poll(&pfd, 1, 10000) == 1);
  conn = accept(fd, NULL, NULL);
  CHECK(conn >= 0);
  /* Five more: two fit the bound (the two being sent count), three are
  ** dropped, and none waits. */
  t0 = tt_now();
  for (i = 0; i < 5; i++) {
    tt_span *s = tt_span_start(tt_background(), "s", NULL, NULL);
    tt_span_end(s, NULL, 0);
    tt_unref(s);
  }
  CHECK(tt_now() - t0 < 0.5);
  tt_trace_stats_get(&st);
  CHECK_EQ(st.dropped - before.dropped, 3);
  CHECK_EQ(st.queued, 4);
  /* The exports time out: every span is accounted for as dropped. */
  CHECK_EQ(tt_trace_flush(20), TT_OK);
  tt_trace_stats_get(&st);
  CHECK_EQ(st.dropped - before.dropped, 7);
  CHECK_EQ(st.failed_exports - before.failed_exports, 2);
  CHECK_EQ(st.exported - before.exported, 0);
  CHECK_EQ(st.queued, 0);
  if (conn >= 0) close(conn);
  close(fd);
  CHECK_EQ(tt_trace_configure(NULL), TT_OK);
}

/* }==================================================================== */


/* {====================================================================
** Pool attempts and saga steps
** ===================================================================== */

static atomic_int saw_own_span;
static tt_span_context parent_sc;

/* fn_check looks at the span its context carries: the attempt's own,
** in the parent's trace. */
static int fn_check(tt_ctx *ctx, void *arg, tt_obj **out) {
  tt_span_context sc;
  (void)arg;
  *out = NULL;
  if (tt_ctx_span_context(ctx, &sc) &&
      memcmp(sc.trace_id, parent_sc.trace_id, 16) == 0 &&
      memcmp(sc.span_id, parent_sc.span_id, 8) != 0)
    atomic_fetch_add(&saw_own_span, 1);
  return TT_OK;
}

static int fn_fail(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  *out = (tt_obj *)tt_error_new(TT_EFAILED, "no stock", NULL);
  return TT_EFAILED;
}

TEST(pool_attempt_spans) {
  tt_pool_hook hook;
  tt_pool_opts o;
  tt_submit_opts so;
  tt_pool *p;
  tt_span *req;
  tt_ctx *creq;
  tt_handle *h;
  char rt[33], rs[17], want[128], *t;
  const char *q;
  int err, n = 0;
  to_file(NULL, 0);
  memset(&o, 0, sizeof o);
  o.name = "traced";
  o.workers = 2;
  o.retry.attempts = 2;
  hook = tt_trace_pool_hook();
  o.hook = &hook;
  p = tt_pool_new(&o, &err);
  req = tt_span_start(tt_background(), "request", NULL, &creq);
  tt_span_context_of(req, &parent_sc);
  hex_of(req, rt, rs);
  memset(&so, 0, sizeof so);
  so.name = "check";
  h = tt_pool_submit(p, creq, &so, fn_check, NULL, NULL, &err);
  tt_unref(h);
  so.name = "charge";
  h = tt_pool_submit(p, creq, &so, fn_fail, NULL, NULL, &err);
  tt_unref(h);
  tt_span_end(req, NULL, 0);
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  CHECK_EQ(atomic_load(&saw_own_span), 1);
  CHECK_EQ(tt_trace_flush(10), TT_OK);
  t = slurp();
  /* Three attempt spans (one check, two charges), each a child of the
  ** request's span with a link to it. */
  snprintf(want, sizeof want, "\"parentSpanId\":\"%s\"", rs);
  for (q = t; (q = strstr(q, want)) != NULL; q++) n++;
  CHECK_EQ(n, 3);
  snprintf(want, sizeof want, "\"links\":[{\"traceId\":\"%s\",\"spanId\":"
           "\"%s\"", rt, rs);
  n = 0;
  for (q = t; (q = strstr(q, want)) != NULL; q++) n++;
  CHECK_EQ(n, 3);
  CHECK(strstr(t, "{\"key\":\"tether.pool\",\"value\":{\"stringValue\":"
                  "\"traced\"}}") != NULL);
  CHECK(strstr(t, "{\"key\":\"tether.attempt\",\"value\":{\"intValue\":"
                  "\"2\"}}") != NULL);
  CHECK(strstr(t, "\"status\":{\"code\":2,\"message\":\"no stock\"}") !=
        NULL);
  free(t);
  tt_unref(req);
  tt_unref(creq);
  tt_unref(p);
  unlink(path);
}

/* trace_of finds the next span named 'name' from '*at' on in 't' (then
** moves '*at' past it) and copies its trace id into 'out'. */
static bool trace_of(const char *t, const char *name, const char **at,
                     char out[33]) {
  char want[64];
  const char *q;
  snprintf(want, sizeof want, "\"name\":\"%s\"", name);
  q = strstr(*at, want);
  if (q == NULL) return false;
  *at = q + 1;
  /* A span's traceId comes before its name in the same object. */
  while (q > t && strncmp(q, "{\"traceId\":\"", 12) != 0) q--;
  memcpy(out, q + 12, 32);
  out[32] = '\0';
  return true;
}

TEST(attempts_without_a_caller_span_share_a_trace) {
  tt_pool_hook hook = tt_trace_pool_hook();
  tt_pool_opts o;
  tt_submit_opts so;
  tt_pool *p;
  char a1[33], a2[33], b1[33], *t;
  const char *at;
  int err;
  to_file(NULL, 0);
  memset(&o, 0, sizeof o);
  o.name = "rooted";
  o.workers = 1;
  o.retry.attempts = 2;
  o.hook = &hook;
  p = tt_pool_new(&o, &err);
  memset(&so, 0, sizeof so);
  so.name = "flaky";
  tt_unref(tt_pool_submit(p, tt_background(), &so, fn_fail, NULL, NULL,
                          &err));
  so.name = "other";
  tt_unref(tt_pool_submit(p, tt_background(), &so, fn_fail, NULL, NULL,
                          &err));
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  CHECK_EQ(tt_trace_flush(10), TT_OK);
  t = slurp();
  at = t;
  CHECK(trace_of(t, "flaky", &at, a1));
  CHECK(trace_of(t, "flaky", &at, a2));
  at = t;
  CHECK(trace_of(t, "other", &at, b1));
  CHECK(strcmp(a1, a2) == 0);
  CHECK(strcmp(a1, b1) != 0);
  CHECK(strstr(t, "\"parentSpanId\"") == NULL);
  free(t);
  tt_unref(p);
  unlink(path);
}

static int step_ok(tt_ctx *ctx, void *state, void *ud, tt_obj **err) {
  (void)ctx;
  (void)state;
  (void)ud;
  *err = NULL;
  return TT_OK;
}

static int step_fail(tt_ctx *ctx, void *state, void *ud, tt_obj **err) {
  (void)ctx;
  (void)state;
  (void)ud;
  *err = (tt_obj *)tt_error_new(TT_EFAILED, "declined", NULL);
  return TT_EFAILED;
}

TEST(saga_step_spans) {
  tt_saga_step steps[] = {
    {"reserve", step_ok, step_ok, NULL},
    {"charge", step_fail, NULL, NULL},
  };
  tt_saga *s = tt_saga_new("order", steps, 2, 1, NULL);
  tt_span *req;
  tt_ctx *creq;
  char rt[33], rs[17], want[160], *t;
  const char *q;
  to_file(NULL, 0);
  req = tt_span_start(tt_background(), "request", NULL, &creq);
  hex_of(req, rt, rs);
  CHECK_EQ(tt_saga_run(s, creq, NULL, NULL), TT_EFAILED);
  tt_span_end(req, NULL, 0);
  CHECK_EQ(tt_trace_flush(10), TT_OK);
  t = slurp();
  CHECK(strstr(t, "\"name\":\"reserve\"") != NULL);
  CHECK(strstr(t, "\"name\":\"charge\"") != NULL);
  q = strstr(t, "\"name\":\"compensate reserve\"");
  CHECK(q != NULL);
  /* The compensation is detached: its parent is linked too. */
  snprintf(want, sizeof want, "\"links\":[{\"traceId\":\"%s\",\"spanId\":"
           "\"%s\"", rt, rs);
  CHECK(q != NULL && strstr(q, want) != NULL);
  CHECK(strstr(t, "\"status\":{\"code\":2,\"message\":\"declined\"}") !=
        NULL);
  CHECK(strstr(t, "{\"key\":\"tether.compensation\",\"value\":"
                  "{\"boolValue\":true}}") != NULL);
  free(t);
  tt_unref(req);
  tt_unref(creq);
  tt_unref(s);
  unlink(path);
  CHECK_EQ(tt_trace_configure(NULL), TT_OK);
}

/* }==================================================================== */

TEST_MAIN()
