/*
** test_store.c -- durable stores: the record format, the SQLite and Redis
** backends behind one interface, grouped commits under concurrent
** producers, pools that spill, and the drainer (tenant, trace and store
** id restored; allow-list; failures as dead letters).
**
** The Redis tests start a redis-server of their own on 127.0.0.1 with a
** free port and a scratch directory, and stop it by its pid.  Task
** functions never use CHECK (it is not thread-safe): they record what
** they see in atomics that the test reads afterwards.
*/
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

extern char **environ;

static char tmpdir[256];

static const char *scratch(void) {
  if (tmpdir[0] == '\0') {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tether-ctest-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) abort();
  }
  return tmpdir;
}

static tt_store *open_sqlite(const char *name, const tt_store_opts *o) {
  char url[512], msg[256];
  int err;
  tt_store *s;
  snprintf(url, sizeof url, "sqlite:%s/%s", scratch(), name);
  s = tt_store_open(url, o, &err, msg, sizeof msg);
  if (s == NULL) fprintf(stderr, "  open %s: %s\n", url, msg);
  return s;
}

/* args_of writes wire values: the integer 'n' and the string 's'. */
static void args_of(tt_buf *b, int64_t n, const char *s) {
  tt_wire_varint(b, 2);
  tt_wire_int(b, n);
  tt_wire_str(b, s, strlen(s));
}

static void record_of(tt_buf *out, const char *fn, int64_t n) {
  tt_buf args = TT_BUF_INIT;
  tt_record r;
  memset(&r, 0, sizeof r);
  args_of(&args, n, "x");
  r.pool = "p";
  r.name = "op";
  r.fn = fn;
  r.args = args.data;
  r.args_len = args.len;
  r.spilled_at = tt_wall();
  if (tt_record_encode(&r, out) != TT_OK) abort();
  tt_buf_free(&args);
}

/* {====================================================================
** The record format
** ===================================================================== */

TEST(record_round_trip) {
  tt_buf args = TT_BUF_INIT, enc = TT_BUF_INIT;
  tt_record r, *d;
  char why[128];
  memset(&r, 0, sizeof r);
  tt_wire_varint(&args, 3);
  tt_wire_table(&args, 2);
  tt_wire_str(&args, "k", 1);
  tt_wire_num(&args, 2.5);
  tt_wire_int(&args, 1);
  tt_wire_bool(&args, true);
  tt_wire_nil(&args);
  tt_wire_str(&args, "a\0b", 3);
  r.pool = "orders";
  r.name = "charge";
  r.fn = "billing.ops:charge";
  r.args = args.data;
  r.args_len = args.len;
  r.tenant = "ac\0me";
  r.tenant_len = 5;
  r.tenant_key = "tenant";
  r.has_trace = true;
  memset(r.trace.trace_id, 0xab, 16);
  memset(r.trace.span_id, 0xcd, 8);
  r.trace.flags = 1;
  r.priority = "high";
  r.has_retry = true;
  r.retry.attempts = 4;
  r.retry.backoff = 0.5;
  r.retry.factor = 3;
  r.retry.max_backoff = 9;
  r.retry.jitter = 0.25;
  r.timeout = 1.5;
  r.deadline = 1e9 + 0.25;
  r.attempt = 2;
  r.spilled_at = 1e9;
  CHECK_EQ(tt_record_encode(&r, &enc), TT_OK);
  CHECK(memcmp(enc.data, "TTRC\x01", 5) == 0);
  d = tt_record_decode(enc.data, enc.len, why, sizeof why);
  CHECK(d != NULL);
  if (d != NULL) {
    CHECK(strcmp(d->pool, "orders") == 0);
    CHECK(strcmp(d->name, "charge") == 0);
    CHECK(strcmp(d->fn, "billing.ops:charge") == 0);
    CHECK(d->args_len == args.len &&
          memcmp(d->args, args.data, args.len) == 0);
    CHECK(d->tenant_len == 5 && memcmp(d->tenant, "ac\0me", 5) == 0);
    CHECK(strcmp(d->tenant_key, "tenant") == 0);
    CHECK(d->has_trace && d->trace.flags == 1 &&
          memcmp(d->trace.trace_id, r.trace.trace_id, 16) == 0 &&
          memcmp(d->trace.span_id, r.trace.span_id, 8) == 0);
    CHECK(strcmp(d->priority, "high") == 0);
    CHECK(d->has_retry && d->retry.attempts == 4 &&
          d->retry.backoff == 0.5 && d->retry.factor == 3 &&
          d->retry.max_backoff == 9 && d->retry.jitter == 0.25);
    CHECK(d->timeout == 1.5 && d->deadline == 1e9 + 0.25);
    CHECK_EQ(d->attempt, 2);
    CHECK(d->spilled_at == 1e9);
    free(d);
  }
  tt_buf_free(&args);
  tt_buf_free(&enc);
}

TEST(record_refuses_damage) {
  tt_buf enc = TT_BUF_INIT;
  char why[128], *copy;
  size_t i;
  int refused = 0;
  record_of(&enc, "m:f", 7);
  copy = malloc(enc.len);
  /* Every single flipped byte is caught (checksum, magic or version). */
  for (i = 0; i < enc.len; i++) {
    tt_record *d;
    memcpy(copy, enc.data, enc.len);
    copy[i] ^= 0x5a;
    d = tt_record_decode(copy, enc.len, why, sizeof why);
    if (d == NULL) refused++;
    free(d);
  }
  CHECK_EQ(refused, (long long)enc.len);
  /* Every truncation too. */
  refused = 0;
  for (i = 0; i < enc.len; i++) {
    tt_record *d = tt_record_decode(enc.data, i, why, sizeof why);
    if (d == NULL) refused++;
    free(d);
  }
  CHECK_EQ(refused, (long long)enc.len);
  memcpy(copy, enc.data, enc.len);
  copy[4] = 9;
  CHECK(tt_record_decode(copy, enc.len, why, sizeof why) == NULL);
  CHECK(strstr(why, "version 9 is not supported") != NULL);
  CHECK(tt_record_decode("nonsense-bytes", 14, why, sizeof why) == NULL);
  CHECK(strstr(why, "bad magic") != NULL);
  free(copy);
  tt_buf_free(&enc);
}

TEST(wire_check_refuses_bad_values) {
  tt_buf b = TT_BUF_INIT;
  char why[128];
  uint64_t n = 0;
  int i;
  /* A nil key. */
  tt_wire_varint(&b, 1);
  tt_wire_table(&b, 1);
  tt_wire_nil(&b);
  tt_wire_int(&b, 1);
  CHECK_EQ(tt_wire_check(b.data, b.len, &n, why, sizeof why), TT_EINVAL);
  CHECK(strstr(why, "nil table key") != NULL);
  tt_buf_free(&b);
  /* Too deep. */
  tt_buf_init(&b);
  tt_wire_varint(&b, 1);
  for (i = 0; i < TT_WIRE_MAXDEPTH + 1; i++) {
    tt_wire_table(&b, 1);
    tt_wire_int(&b, 1);
  }
  tt_wire_nil(&b);
  CHECK_EQ(tt_wire_check(b.data, b.len, &n, why, sizeof why), TT_EINVAL);
  tt_buf_free(&b);
  /* An unknown tag, and a table claiming more pairs than bytes. */
  CHECK_EQ(tt_wire_check("\x01\x09", 2, &n, why, sizeof why), TT_EINVAL);
  CHECK_EQ(tt_wire_check("\x01\x06\x7f", 3, &n, why, sizeof why),
           TT_EINVAL);
  /* Fine ones. */
  tt_buf_init(&b);
  args_of(&b, -5, "ok");
  CHECK_EQ(tt_wire_check(b.data, b.len, &n, why, sizeof why), TT_OK);
  CHECK_EQ(n, 2);
  tt_buf_free(&b);
  CHECK_EQ(tt_record_module("a.b:c", why, sizeof why), 3);
  CHECK(strcmp(why, "a.b") == 0);
  CHECK_EQ(tt_record_module("nocolon", why, sizeof why), -1);
  CHECK_EQ(tt_record_module(":f", why, sizeof why), -1);
}

/* }==================================================================== */


/* {====================================================================
** One store, either backend
** ===================================================================== */

/* basic_cycle puts, claims, acks, buries, lists, retries and drops. */
static void basic_cycle(tt_store *s) {
  tt_buf enc = TT_BUF_INIT;
  char id1[TT_STORE_IDLEN], id2[TT_STORE_IDLEN];
  tt_claim *c = NULL;
  tt_store_stats st;
  tt_store_dead *d = NULL;
  size_t n = 0;
  record_of(&enc, "m:f", 1);
  CHECK_EQ(tt_store_put_wait(s, "p", enc.data, enc.len, id1), TT_OK);
  CHECK_EQ(tt_store_put_wait(s, "p", enc.data, enc.len, id2), TT_OK);
  CHECK(strcmp(id1, id2) != 0);
  CHECK_EQ(tt_store_stats_get(s, "p", &st), TT_OK);
  CHECK_EQ(st.depth, 2);
  CHECK_EQ(st.leased, 0);
  CHECK_EQ(tt_store_claim(s, "p", 10, &c, &n), TT_OK);
  CHECK_EQ(n, 2);
  if (n == 2) {
    CHECK(strcmp(c[0].id, id1) == 0 && strcmp(c[1].id, id2) == 0);
    CHECK(strcmp(c[0].pool, "p") == 0);
    CHECK_EQ(c[0].deliveries, 1);
    CHECK(c[0].len == enc.len && memcmp(c[0].rec, enc.data, enc.len) == 0);
    CHECK_EQ(tt_store_stats_get(s, NULL, &st), TT_OK);
    CHECK_EQ(st.leased, 2);
    CHECK_EQ(tt_store_ack(s, &c[0]), TT_OK);
    CHECK_EQ(tt_store_bury(s, &c[1], "because"), TT_OK);
  }
  tt_claims_free(c, n);
  CHECK_EQ(tt_store_claim(s, "p", 10, &c, &n), TT_OK);
  CHECK_EQ(n, 0);
  tt_claims_free(c, n);
  CHECK_EQ(tt_store_stats_get(s, "p", &st), TT_OK);
  CHECK_EQ(st.depth, 0);
  CHECK_EQ(st.dead, 1);
  CHECK_EQ(tt_store_dead_letters(s, NULL, 10, &d, &n), TT_OK);
  CHECK_EQ(n, 1);
  if (n == 1) {
    CHECK(strcmp(d[0].reason, "because") == 0);
    CHECK(strcmp(d[0].origin, id2) == 0);
    CHECK(strcmp(d[0].pool, "p") == 0);
    CHECK(d[0].len == enc.len);
    CHECK_EQ(tt_store_retry_dead(s, "p", d[0].id), TT_OK);
    CHECK_EQ(tt_store_retry_dead(s, "p", d[0].id), TT_EINVAL);
  }
  tt_store_dead_free(d, n);
  CHECK_EQ(tt_store_stats_get(s, "p", &st), TT_OK);
  CHECK_EQ(st.depth, 1);
  CHECK_EQ(st.dead, 0);
  CHECK_EQ(tt_store_claim(s, NULL, 10, &c, &n), TT_OK);
  CHECK_EQ(n, 1);
  if (n == 1) CHECK_EQ(tt_store_bury(s, &c[0], "again"), TT_OK);
  tt_claims_free(c, n);
  CHECK_EQ(tt_store_dead_letters(s, "p", 10, &d, &n), TT_OK);
  CHECK_EQ(n, 1);
  if (n == 1) {
    CHECK_EQ(tt_store_drop_dead(s, NULL, d[0].id), TT_OK);
    CHECK_EQ(tt_store_drop_dead(s, NULL, d[0].id), TT_EINVAL);
  }
  tt_store_dead_free(d, n);
  CHECK_EQ(tt_store_stats_get(s, NULL, &st), TT_OK);
  CHECK_EQ(st.depth + st.dead, 0);
  tt_buf_free(&enc);
}

/* Concurrent producers: every put answered once, ids distinct. */
enum { PRODUCERS = 8, PER_PRODUCER = 500 };

typedef struct prod {
  tt_store *s;
  _Atomic int *ok, *answered;
  char (*ids)[TT_STORE_IDLEN];
  int base;
} prod;

typedef struct putctx {
  prod *p;
  int i;
} putctx;

static void put_done(void *ud, int rc, const char *text) {
  putctx *c = ud;
  if (rc == TT_OK) {
    snprintf(c->p->ids[c->p->base + c->i], TT_STORE_IDLEN, "%s", text);
    atomic_fetch_add(c->p->ok, 1);
  }
  atomic_fetch_add(c->p->answered, 1);
  free(c);
}

static void *producer(void *arg) {
  prod *p = arg;
  tt_buf enc = TT_BUF_INIT;
  int i;
  record_of(&enc, "m:f", p->base);
  for (i = 0; i < PER_PRODUCER; i++) {
    putctx *c = malloc(sizeof *c);
    c->p = p;
    c->i = i;
    if (tt_store_put(p->s, "g", enc.data, enc.len, -1, put_done, c) !=
        TT_OK) {
      free(c);
      atomic_fetch_add(p->answered, 1);
    }
  }
  tt_buf_free(&enc);
  return NULL;
}

static int cmp_id(const void *a, const void *b) {
  return strcmp((const char *)a, (const char *)b);
}

static void group_commit(tt_store *s) {
  static char ids[PRODUCERS * PER_PRODUCER][TT_STORE_IDLEN];
  _Atomic int ok = 0, answered = 0;
  prod ps[PRODUCERS];
  pthread_t t[PRODUCERS];
  tt_store_stats st;
  int i, dups = 0;
  double until;
  memset(ids, 0, sizeof ids);
  for (i = 0; i < PRODUCERS; i++) {
    ps[i].s = s;
    ps[i].ok = &ok;
    ps[i].answered = &answered;
    ps[i].ids = ids;
    ps[i].base = i * PER_PRODUCER;
    CHECK_EQ(pthread_create(&t[i], NULL, producer, &ps[i]), 0);
  }
  for (i = 0; i < PRODUCERS; i++) pthread_join(t[i], NULL);
  until = tt_now() + 60;
  while (atomic_load(&answered) < PRODUCERS * PER_PRODUCER &&
         tt_now() < until)
    th_sleep_us(1000);
  CHECK_EQ(atomic_load(&ok), PRODUCERS * PER_PRODUCER);
  qsort(ids, PRODUCERS * PER_PRODUCER, TT_STORE_IDLEN, cmp_id);
  for (i = 1; i < PRODUCERS * PER_PRODUCER; i++)
    if (strcmp(ids[i], ids[i - 1]) == 0) dups++;
  CHECK_EQ(dups, 0);
  CHECK_EQ(tt_store_stats_get(s, "g", &st), TT_OK);
  CHECK_EQ(st.depth, PRODUCERS * PER_PRODUCER);
}

/* }==================================================================== */


/* {====================================================================
** Pools and the drainer
** ===================================================================== */

static tt_key tenant_key = {NULL, "tenant", 6};
static _Atomic int ran, trace_ok, tenant_ok, id_ok;
static tt_span_context want_trace;

static int op_fn(tt_ctx *ctx, void *arg, tt_obj **out) {
  tt_span_context sc;
  tt_obj *v = NULL;
  (void)arg;
  *out = NULL;
  if (tt_ctx_span_context(ctx, &sc) &&
      memcmp(sc.trace_id, want_trace.trace_id, 16) == 0 &&
      memcmp(sc.span_id, want_trace.span_id, 8) == 0)
    atomic_fetch_add(&trace_ok, 1);
  if (tt_ctx_value(ctx, &tenant_key, &v) && v != NULL &&
      v->type == &tt_bytes_type && ((tt_bytes *)v)->len == 4 &&
      memcmp(((tt_bytes *)v)->data, "acme", 4) == 0)
    atomic_fetch_add(&tenant_ok, 1);
  tt_unref(v);
  {
    tt_key k = {NULL, "tether.store_id", 15};
    v = NULL;
    if (tt_ctx_value(ctx, &k, &v) && v != NULL) atomic_fetch_add(&id_ok, 1);
    tt_unref(v);
  }
  atomic_fetch_add(&ran, 1);
  return TT_OK;
}

static int fail_fn(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  *out = (tt_obj *)tt_error_new(TT_EFAILED, "boom", NULL);
  return TT_EFAILED;
}

static int prepare(void *ud, const tt_record *r, const tt_claim *c,
                   tt_ctx **parent, tt_fn *fn, void **arg, tt_drop *drop,
                   char *why, size_t n) {
  (void)ud;
  (void)c;
  (void)parent;
  (void)why;
  (void)n;
  *fn = strcmp(r->fn, "ops:fail") == 0 ? fail_fn : op_fn;
  *arg = NULL;
  *drop = NULL;
  return TT_OK;
}

static int hold(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  *out = NULL;
  /* Bounded: a test that never opens the gate fails, not hangs. */
  WAIT_FOR(atomic_load((_Atomic int *)arg) != 0, 30);
  return TT_OK;
}

/* spill_and_drain spills named ops from a full pool, then drains them
** into another pool and checks what the ops saw. */
static void spill_and_drain(tt_store *s) {
  tt_pool_opts po;
  tt_pool *p, *d;
  tt_submit_opts so;
  tt_buf args = TT_BUF_INIT;
  tt_handle *h[6];
  tt_pool_stats ps;
  tt_drain_opts dopt;
  tt_drain_report rep;
  const char *allow[] = {"ops"};
  _Atomic int gate = 0;
  tt_ctx *c1, *parent;
  tt_bytes *b;
  tt_store_stats st;
  int err, i, spilled = 0;
  atomic_store(&ran, 0);
  atomic_store(&trace_ok, 0);
  atomic_store(&tenant_ok, 0);
  atomic_store(&id_ok, 0);
  memset(&po, 0, sizeof po);
  po.name = "sp";
  po.workers = 1;
  po.queue = 1;
  po.overflow = s;
  po.tenant_key = tenant_key;
  p = tt_pool_new(&po, &err);
  CHECK(p != NULL);
  if (p == NULL) return;
  memset(&so, 0, sizeof so);
  h[0] = tt_pool_submit(p, tt_background(), &so, hold, (void *)&gate, NULL,
                        &err);
  WAIT_FOR(tt_handle_state(h[0]) == TT_H_RUNNING, 10);
  CHECK_EQ(tt_handle_state(h[0]), TT_H_RUNNING);
  h[1] = tt_pool_submit(p, tt_background(), &so, hold, (void *)&gate, NULL,
                        &err);
  b = tt_bytes_new("acme", 4);
  c1 = tt_with_value(tt_background(), &tenant_key, &b->hdr);
  tt_unref(b);
  tt_random_bytes(want_trace.trace_id, 16);
  tt_random_bytes(want_trace.span_id, 8);
  want_trace.flags = 1;
  parent = tt_with_span_context(c1, &want_trace);
  tt_unref(c1);
  args_of(&args, 3, "y");
  so.spill_fn = "ops:run";
  so.spill_args = args.data;
  so.spill_args_len = args.len;
  for (i = 2; i < 5; i++)
    h[i] = tt_pool_submit(p, parent, &so, op_fn, NULL, NULL, &err);
  so.spill_fn = "ops:fail";
  h[5] = tt_pool_submit(p, parent, &so, op_fn, NULL, NULL, &err);
  for (i = 2; i < 6; i++) {
    tt_obj *res = NULL;
    CHECK(h[i] != NULL);
    if (h[i] == NULL) continue;
    CHECK(tt_latch_wait(tt_handle_latch(h[i]), 10));
    CHECK_EQ(tt_handle_result(h[i], &res), TT_H_FAILED);
    if (res != NULL && ((tt_error *)res)->code == TT_ESPILLED) {
      tt_obj *id = ((tt_error *)res)->value;
      spilled++;
      CHECK(id != NULL && id->type == &tt_bytes_type);
    }
    tt_unref(res);
    tt_unref(h[i]);
  }
  CHECK_EQ(spilled, 4);
  tt_pool_stats_get(p, &ps);
  CHECK_EQ(ps.spilled, 4);
  CHECK(th_adds_up(&ps));
  atomic_store(&gate, 1);
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  tt_unref(h[0]);
  tt_unref(h[1]);
  tt_unref(p);
  tt_unref(parent);
  tt_buf_free(&args);

  /* With an allow-list that leaves 'ops' out, nothing runs. */
  memset(&po, 0, sizeof po);
  po.name = "drainer";
  po.workers = 2;
  po.queue = 2;
  po.tenant_key = tenant_key;
  d = tt_pool_new(&po, &err);
  memset(&dopt, 0, sizeof dopt);
  dopt.prepare = prepare;
  dopt.pool = "sp";
  CHECK_EQ(tt_pool_drain_store(d, s, NULL, &dopt, &rep), TT_OK);
  CHECK_EQ(rep.refused, 4);
  CHECK_EQ(atomic_load(&ran), 0);
  CHECK_EQ(tt_store_stats_get(s, "sp", &st), TT_OK);
  CHECK_EQ(st.dead, 4);
  {
    tt_store_dead *dl = NULL;
    size_t n = 0, k;
    CHECK_EQ(tt_store_dead_letters(s, "sp", 10, &dl, &n), TT_OK);
    for (k = 0; k < n; k++) {
      CHECK(strstr(dl[k].reason, "may not run") != NULL);
      CHECK_EQ(tt_store_retry_dead(s, "sp", dl[k].id), TT_OK);
    }
    tt_store_dead_free(dl, n);
  }
  dopt.allow = allow;
  dopt.nallow = 1;
  CHECK_EQ(tt_pool_drain_store(d, s, NULL, &dopt, &rep), TT_OK);
  CHECK_EQ(rep.claimed, 4);
  CHECK_EQ(rep.completed, 3);
  CHECK_EQ(rep.failed, 1);
  CHECK_EQ(atomic_load(&ran), 3);
  CHECK_EQ(atomic_load(&trace_ok), 3);
  CHECK_EQ(atomic_load(&tenant_ok), 3);
  CHECK_EQ(atomic_load(&id_ok), 3);
  CHECK_EQ(tt_store_stats_get(s, "sp", &st), TT_OK);
  CHECK_EQ(st.depth, 0);
  CHECK_EQ(st.dead, 1);
  tt_pool_stats_get(d, &ps);
  CHECK_EQ(ps.dead_held, 0);
  CHECK_EQ(ps.failed, 1);
  CHECK(th_adds_up(&ps));
  CHECK_EQ(tt_pool_drain(d, NULL, 10), TT_OK);
  tt_unref(d);
}

/* held waits for its gate, then says it ended. */
static _Atomic int held_ended;

static int held(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  *out = NULL;
  /* Bounded: a test that never opens the gate fails, not hangs. */
  WAIT_FOR(atomic_load((_Atomic int *)arg) != 0, 30);
  atomic_fetch_add(&held_ended, 1);
  return TT_OK;
}

static char exit_line[512];

static void keep_exit_line(const tt_log_record *rec, void *ud) {
  (void)ud;
  if (strstr(rec->line, "put back") != NULL)
    snprintf(exit_line, sizeof exit_line, "%.*s", (int)rec->len, rec->line);
}

/* handle_code waits for 'h' and returns the code of its error (0 when it
** did not fail). */
static int handle_code(tt_handle *h) {
  tt_obj *res = NULL;
  int code = 0;
  CHECK(tt_latch_wait(tt_handle_latch(h), 10));
  if (tt_handle_result(h, &res) == TT_H_FAILED && res != NULL &&
      res->type == &tt_error_type)
    code = ((tt_error *)res)->code;
  tt_unref(res);
  return code;
}

/* exit_spill: when an exit drain runs out of time, the queued named ops
** of a pool with a store go to the store (spilled: counted, resolved,
** one log record), a queued closure and the running op are abandoned,
** and the ops drained later keep their tenant and trace. */
static void exit_spill(tt_store *s) {
  static int owner;
  tt_pool_opts po;
  tt_pool *p, *d;
  tt_submit_opts so;
  tt_buf args = TT_BUF_INIT;
  tt_handle *h[5];
  tt_pool_stats ps;
  tt_exit_report r;
  tt_drain_opts dopt;
  tt_drain_report rep;
  const char *allow[] = {"ops"};
  _Atomic int gate = 0;
  tt_ctx *c1, *parent;
  tt_bytes *b;
  tt_store_stats st;
  int err, i;
  double until;
  atomic_store(&ran, 0);
  atomic_store(&trace_ok, 0);
  atomic_store(&tenant_ok, 0);
  atomic_store(&held_ended, 0);
  memset(&po, 0, sizeof po);
  po.name = "ex";
  po.workers = 1;
  po.queue = 8;
  po.overflow = s;
  po.tenant_key = tenant_key;
  po.exit_timeout = -1;
  p = tt_pool_new(&po, &err);
  CHECK(p != NULL);
  if (p == NULL) return;
  memset(&so, 0, sizeof so);
  h[0] = tt_pool_submit(p, tt_background(), &so, held, (void *)&gate, NULL,
                        &err);
  WAIT_FOR(tt_handle_state(h[0]) == TT_H_RUNNING, 10);
  CHECK_EQ(tt_handle_state(h[0]), TT_H_RUNNING);
  /* A closure: it cannot travel. */
  h[1] = tt_pool_submit(p, tt_background(), &so, held, (void *)&gate, NULL,
                        &err);
  b = tt_bytes_new("acme", 4);
  c1 = tt_with_value(tt_background(), &tenant_key, &b->hdr);
  tt_unref(b);
  tt_random_bytes(want_trace.trace_id, 16);
  tt_random_bytes(want_trace.span_id, 8);
  want_trace.flags = 1;
  parent = tt_with_span_context(c1, &want_trace);
  tt_unref(c1);
  args_of(&args, 3, "y");
  so.spill_fn = "ops:run";
  so.spill_args = args.data;
  so.spill_args_len = args.len;
  for (i = 2; i < 5; i++)
    h[i] = tt_pool_submit(p, parent, &so, op_fn, NULL, NULL, &err);
  tt_buf_free(&args);  /* the ops keep copies */
  tt_pool_stats_get(p, &ps);
  CHECK_EQ(ps.queued, 4);
  CHECK_EQ(ps.spilled, 0);
  CHECK_EQ(tt_exit_track(p, &owner), TT_OK);
  exit_line[0] = '\0';
  tt_log_set_sink(keep_exit_line, NULL);
  tt_exit_drain(&owner, false, 0, &r);
  tt_log_set_sink(NULL, NULL);
  CHECK_EQ(r.pools, 1);
  CHECK_EQ(r.spilled, 3);
  CHECK_EQ(r.abandoned, 2);
  CHECK(strstr(exit_line, "\"msg\":\"queued ops put back in the store at "
               "exit\",\"pool\":\"ex\",\"ops\":3") != NULL);
  CHECK_EQ(handle_code(h[0]), TT_EABANDONED);
  CHECK_EQ(handle_code(h[1]), TT_EABANDONED);
  for (i = 2; i < 5; i++) CHECK_EQ(handle_code(h[i]), TT_ESPILLED);
  tt_pool_stats_get(p, &ps);
  CHECK_EQ(ps.spilled, 3);
  CHECK_EQ(ps.abandoned, 2);
  CHECK_EQ(ps.queued + ps.inflight, 0);
  CHECK(th_adds_up(&ps));
  CHECK_EQ(tt_store_stats_get(s, "ex", &st), TT_OK);
  CHECK_EQ(st.depth, 3);
  /* The abandoned op runs on until its gate opens. */
  atomic_store(&gate, 1);
  until = tt_now() + 10;
  while (atomic_load(&held_ended) < 1 && tt_now() < until) th_sleep_us(1000);
  CHECK_EQ(atomic_load(&held_ended), 1);
  for (i = 0; i < 5; i++) tt_unref(h[i]);
  tt_unref(p);
  tt_unref(parent);

  memset(&po, 0, sizeof po);
  po.name = "drainer";
  po.workers = 2;
  po.queue = 2;
  po.tenant_key = tenant_key;
  d = tt_pool_new(&po, &err);
  memset(&dopt, 0, sizeof dopt);
  dopt.prepare = prepare;
  dopt.pool = "ex";
  dopt.allow = allow;
  dopt.nallow = 1;
  CHECK_EQ(tt_pool_drain_store(d, s, NULL, &dopt, &rep), TT_OK);
  CHECK_EQ(rep.completed, 3);
  CHECK_EQ(atomic_load(&ran), 3);
  CHECK_EQ(atomic_load(&trace_ok), 3);
  CHECK_EQ(atomic_load(&tenant_ok), 3);
  CHECK_EQ(tt_pool_drain(d, NULL, 10), TT_OK);
  tt_unref(d);
}

/* }==================================================================== */


/* {====================================================================
** SQLite
** ===================================================================== */

TEST(sqlite_cycle) {
  tt_store *s = open_sqlite("cycle.db", NULL);
  char path[512];
  struct stat stt;
  CHECK(s != NULL);
  if (s == NULL) return;
  basic_cycle(s);
  snprintf(path, sizeof path, "%s/cycle.db", scratch());
  CHECK(stat(path, &stt) == 0 && (stt.st_mode & 0777) == 0600);
  tt_unref(s);
}

TEST(sqlite_group_commit) {
  tt_store *s = open_sqlite("group.db", NULL);
  CHECK(s != NULL);
  if (s == NULL) return;
  group_commit(s);
  tt_unref(s);
}

TEST(sqlite_spill_and_drain) {
  tt_store *s = open_sqlite("drain.db", NULL);
  CHECK(s != NULL);
  if (s == NULL) return;
  spill_and_drain(s);
  tt_store_close(s);
  CHECK_EQ(tt_store_sync(s), TT_ECLOSED);
  tt_unref(s);
}

TEST(sqlite_exit_puts_queued_ops_back) {
  tt_store *s = open_sqlite("exit.db", NULL);
  CHECK(s != NULL);
  if (s == NULL) return;
  exit_spill(s);
  tt_unref(s);
}

TEST(sqlite_lease_runs_out) {
  tt_store_opts o;
  tt_store *s;
  tt_buf enc = TT_BUF_INIT;
  tt_claim *c = NULL;
  size_t n = 0;
  char id[TT_STORE_IDLEN];
  memset(&o, 0, sizeof o);
  o.lease = 0.2;
  o.max_deliveries = 2;
  s = open_sqlite("lease.db", &o);
  CHECK(s != NULL);
  if (s == NULL) return;
  record_of(&enc, "m:f", 1);
  CHECK_EQ(tt_store_put_wait(s, "p", enc.data, enc.len, id), TT_OK);
  CHECK_EQ(tt_store_claim(s, "p", 1, &c, &n), TT_OK);
  CHECK_EQ(n, 1);
  tt_claims_free(c, n);
  /* Leased: nothing to claim until the lease runs out. */
  CHECK_EQ(tt_store_claim(s, "p", 1, &c, &n), TT_OK);
  CHECK_EQ(n, 0);
  tt_claims_free(c, n);
  tt_sleep(0.3, NULL);
  CHECK_EQ(tt_store_claim(s, "p", 1, &c, &n), TT_OK);
  CHECK_EQ(n, 1);
  if (n == 1) {
    CHECK(strcmp(c[0].id, id) == 0);
    CHECK_EQ(c[0].deliveries, 2);
  }
  tt_claims_free(c, n);
  tt_sleep(0.3, NULL);
  /* Delivered max_deliveries times: a dead letter now. */
  CHECK_EQ(tt_store_claim(s, "p", 1, &c, &n), TT_OK);
  CHECK_EQ(n, 0);
  tt_claims_free(c, n);
  {
    tt_store_stats st;
    CHECK_EQ(tt_store_stats_get(s, "p", &st), TT_OK);
    CHECK_EQ(st.dead, 1);
    CHECK_EQ(st.depth, 0);
  }
  tt_buf_free(&enc);
  tt_unref(s);
}

TEST(open_errors) {
  char msg[256];
  int err = 0;
  char path[512];
  FILE *f;
  CHECK(tt_store_open("redis://:hunter2@h:notaport", NULL, &err, msg,
                      sizeof msg) == NULL);
  CHECK_EQ(err, TT_EINVAL);
  CHECK(strstr(msg, "malformed store URL") != NULL);
  CHECK(strstr(msg, "hunter2") == NULL);
  CHECK(tt_store_open("ftp://x", NULL, &err, msg, sizeof msg) == NULL);
  CHECK_EQ(err, TT_EINVAL);
  snprintf(path, sizeof path, "%s/junk.db", scratch());
  f = fopen(path, "w");
  fputs("this file holds no database at all, only words; ", f);
  fputs("SQLite reads its first page and gives up.", f);
  fclose(f);
  {
    char url[600];
    snprintf(url, sizeof url, "sqlite:%s", path);
    CHECK(tt_store_open(url, NULL, &err, msg, sizeof msg) == NULL);
    CHECK_EQ(err, TT_ESTORE);
    CHECK(strstr(msg, "not a database") != NULL);
  }
}

/* }==================================================================== */


/* {====================================================================
** Redis
** ===================================================================== */

static pid_t redis_pid;
static int redis_port;

/* start_redis starts a redis-server of the test's own and waits until a
** store can open it (bounded). */
static tt_store *start_redis(const char *prefix) {
  char url[256], msg[256] = "it exited at once", dir[300], port[16];
  int err, tries, rc;
  double until;
  tt_store *s = NULL;
  snprintf(dir, sizeof dir, "%s/redis", scratch());
  mkdir(dir, 0700);
  for (tries = 0; tries < 10 && redis_pid == 0; tries++) {
    char *argv[] = {"redis-server", "--port", port, "--bind", "127.0.0.1",
                    "--dir", dir, "--appendonly", "yes", "--save", "",
                    "--loglevel", "warning", NULL};
    posix_spawn_file_actions_t fa;
    int st;
    uint32_t r = 0;
    tt_random_bytes(&r, sizeof r);
    redis_port = 20000 + (int)(r % 39000);
    snprintf(port, sizeof port, "%d", redis_port);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    if ((rc = posix_spawnp(&redis_pid, "redis-server", &fa, NULL, argv,
                           environ)) != 0) {
      posix_spawn_file_actions_destroy(&fa);
      snprintf(msg, sizeof msg, "%s", strerror(rc));
      redis_pid = 0;
      break;
    }
    posix_spawn_file_actions_destroy(&fa);
    until = tt_now() + 10;
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0?prefix=%s",
             redis_port, prefix);
    while (tt_now() < until) {
      if (waitpid(redis_pid, &st, WNOHANG) == redis_pid) {
        redis_pid = 0;  /* the port was taken: another one */
        break;
      }
      s = tt_store_open(url, NULL, &err, msg, sizeof msg);
      if (s != NULL) return s;
      th_sleep_us(20000);
    }
  }
  fprintf(stderr, "  cannot start redis-server: %s\n", msg);
  return NULL;
}

static tt_store *open_redis(const char *prefix) {
  char url[256], msg[256];
  int err;
  snprintf(url, sizeof url, "redis://127.0.0.1:%d/0?prefix=%s", redis_port,
           prefix);
  return tt_store_open(url, NULL, &err, msg, sizeof msg);
}

TEST(redis_cycle_group_commit_and_drain) {
  tt_store *s = start_redis("c1");
  CHECK(s != NULL);
  if (s == NULL) return;
  basic_cycle(s);
  tt_unref(s);
  s = open_redis("c2");
  CHECK(s != NULL);
  if (s != NULL) group_commit(s);
  tt_unref(s);
  s = open_redis("c3");
  CHECK(s != NULL);
  if (s != NULL) spill_and_drain(s);
  tt_unref(s);
}

TEST(redis_fails_cleanly_when_the_server_dies) {
  tt_buf enc = TT_BUF_INIT;
  char id[TT_STORE_IDLEN];
  tt_store *s;
  if (redis_pid == 0) return;  /* the test above reported it */
  s = open_redis("c4");
  CHECK(s != NULL);
  if (s == NULL) return;
  record_of(&enc, "m:f", 1);
  CHECK_EQ(tt_store_put_wait(s, "p", enc.data, enc.len, id), TT_OK);
  /* The server goes away: calls fail (no SIGPIPE reaches the process),
  ** and work again once it is back. */
  kill(redis_pid, SIGKILL);
  waitpid(redis_pid, NULL, 0);
  redis_pid = 0;
  CHECK_EQ(tt_store_put_wait(s, "p", enc.data, enc.len, id), TT_ESTORE);
  CHECK_EQ(tt_store_put_wait(s, "p", enc.data, enc.len, id), TT_ESTORE);
  tt_unref(s);
  tt_buf_free(&enc);
}

/* }==================================================================== */

static void cleanup(void) {
  char cmd[400];
  if (redis_pid != 0) {
    kill(redis_pid, SIGTERM);
    waitpid(redis_pid, NULL, 0);
  }
  if (tmpdir[0] != '\0') {
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "  cannot remove %s\n", tmpdir);
  }
}

__attribute__((constructor)) static void at_start(void) { atexit(cleanup); }

TEST_MAIN()
