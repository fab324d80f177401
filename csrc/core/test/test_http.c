/*
** test_http.c -- HTTP servers with C handlers: answers, request
** contexts (hang-up, timeout, close, handler end), values, refusals,
** streaming, shutdown and events, against a client on 127.0.0.1 written
** here over plain sockets.
**
** Handlers never use CHECK (it is not thread-safe): they record what they
** see in atomics and contexts that the test reads afterwards.  Timing
** checks are bounds a loaded machine keeps.
*/
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

/* {====================================================================
** A client
** ===================================================================== */

static int dial(tt_http_server *s) {
  const char *addr = tt_http_addr(s);
  struct sockaddr_in a;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)atoi(strrchr(addr, ':') + 1));
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static void send_str(int fd, const char *s) {
  size_t n = strlen(s), off = 0;
  while (off < n) {
    ssize_t w = send(fd, s + off, n - off, MSG_NOSIGNAL);
    if (w <= 0) return;
    off += (size_t)w;
  }
}

/* read_all reads until the peer closes (or 10 s pass) into 'buf'. */
static size_t read_all(int fd, char *buf, size_t cap) {
  size_t n = 0;
  double end = tt_now() + 10;
  while (n + 1 < cap && tt_now() < end) {
    struct pollfd p = {fd, POLLIN, 0};
    ssize_t r;
    if (poll(&p, 1, 100) <= 0) continue;
    r = recv(fd, buf + n, cap - 1 - n, 0);
    if (r <= 0) break;
    n += (size_t)r;
  }
  buf[n] = '\0';
  return n;
}

/* request sends 'req' on a new connection and reads the whole answer
** (requests say "Connection: close"). */
static size_t request(tt_http_server *s, const char *req, char *buf,
                      size_t cap) {
  int fd = dial(s);
  size_t n;
  if (fd < 0) {
    buf[0] = '\0';
    return 0;
  }
  send_str(fd, req);
  n = read_all(fd, buf, cap);
  close(fd);
  return n;
}

static int status_of(const char *resp) {
  int st = 0;
  if (sscanf(resp, "HTTP/1.%*d %d", &st) != 1) return 0;
  return st;
}

static const char *body_of(const char *resp) {
  const char *p = strstr(resp, "\r\n\r\n");
  return p != NULL ? p + 4 : "";
}

/* dechunk decodes a chunked body in place and returns it; a malformed
** one gives "(malformed)". */
static char *dechunk(const char *in) {
  static char out[4096];
  size_t n = 0;
  for (;;) {
    char *end;
    unsigned long len = strtoul(in, &end, 16);
    if (end == in || strncmp(end, "\r\n", 2) != 0) return "(malformed)";
    if (len == 0) break;
    in = end + 2;
    if (n + len >= sizeof out || strlen(in) < len + 2) return "(malformed)";
    memcpy(out + n, in, len);
    n += len;
    in += len;
    if (strncmp(in, "\r\n", 2) != 0) return "(malformed)";
    in += 2;
  }
  out[n] = '\0';
  return out;
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: x\r\n" \
                  "Connection: close\r\n\r\n"

/* }==================================================================== */


/* {====================================================================
** Handlers and what they saw
** ===================================================================== */

typedef struct seen {
  atomic_int calls;
  atomic_int err;            /* the context's error after the wait */
  _Atomic(tt_obj *) cause;   /* a reference, or NULL */
  atomic_int same_ctx;       /* the handler's ctx carried the id */
  atomic_int after;          /* the context's error once it returned */
  tt_ctx *gate;              /* may be NULL */
  tt_ctx *started;           /* canceled once the handler started */
  _Atomic(tt_ctx *) ctx;     /* a reference to the last request ctx */
  char id[64];
  tt_span_context sc;
  atomic_int has_sc;
  double wait;
} seen;

static tt_ctx *cancelable(tt_ctx **cancel_me) {
  *cancel_me = tt_with_cancel(tt_background());
  return *cancel_me;
}

static void seen_init(seen *w) {
  memset(w, 0, sizeof *w);
  w->wait = 10;
}

static void seen_free(seen *w) {
  tt_unref(atomic_load(&w->cause));
  tt_unref(atomic_load(&w->ctx));
  tt_unref(w->gate);
}

/* keep_ctx remembers the handler's context, to look at it after. */
static void keep_ctx(seen *w, tt_ctx *ctx) {
  tt_unref(atomic_exchange(&w->ctx, (tt_ctx *)tt_ref(ctx)));
}

static int h_hello(tt_ctx *ctx, tt_http_req *r, void *ud, tt_obj **err) {
  seen *w = ud;
  (void)err;
  keep_ctx(w, ctx);
  atomic_fetch_add(&w->calls, 1);
  tt_http_res_header(r, "X-Test", "yes");
  return tt_http_res_send(r, "hello", 5);
}

static int h_nothing(tt_ctx *ctx, tt_http_req *r, void *ud, tt_obj **err) {
  seen *w = ud;
  (void)r;
  (void)err;
  keep_ctx(w, ctx);
  atomic_fetch_add(&w->calls, 1);
  return TT_OK;
}

/* h_fail fails with an error that quotes the request's credentials. */
static int h_fail(tt_ctx *ctx, tt_http_req *r, void *ud, tt_obj **err) {
  seen *w = ud;
  char msg[256];
  const char *auth = tt_http_req_header(r, "authorization");
  const char *cookie = tt_http_req_header(r, "cookie");
  (void)ctx;
  snprintf(w->id, sizeof w->id, "%s", tt_http_req_id(r));
  snprintf(msg, sizeof msg, "boom: %s; %s", auth != NULL ? auth : "-",
           cookie != NULL ? cookie : "-");
  atomic_fetch_add(&w->calls, 1);
  *err = &tt_error_new(TT_EFAILED, msg, NULL)->hdr;
  return TT_EFAILED;
}

/* A log sink that keeps the last line. */
static char last_line[2048];
static atomic_int nlines;

static void keep_line(const tt_log_record *rec, void *ud) {
  (void)ud;
  snprintf(last_line, sizeof last_line, "%.*s", (int)rec->len, rec->line);
  atomic_fetch_add(&nlines, 1);
}

/* h_wait waits for its context (or the test's gate) to end, and records
** what it saw. */
static int h_wait(tt_ctx *ctx, tt_http_req *r, void *ud, tt_obj **err) {
  seen *w = ud;
  tt_case cs[2];
  tt_obj *v = NULL;
  int n = 1;
  (void)err;
  keep_ctx(w, ctx);
  if (tt_ctx_value(ctx, &tt_http_request_id_key, &v) && v != NULL &&
      v->type == &tt_bytes_type &&
      strcmp(((tt_bytes *)v)->data, tt_http_req_id(r)) == 0)
    atomic_store(&w->same_ctx, 1);
  tt_unref(v);
  if (tt_ctx_span_context(ctx, &w->sc)) atomic_store(&w->has_sc, 1);
  atomic_fetch_add(&w->calls, 1);
  if (w->started != NULL) tt_cancel(w->started, NULL);
  memset(cs, 0, sizeof cs);
  cs[0].kind = TT_CASE_LATCH;
  cs[0].latch = tt_ctx_done(ctx);
  if (w->gate != NULL) {
    cs[1].kind = TT_CASE_LATCH;
    cs[1].latch = tt_ctx_done(w->gate);
    n = 2;
  }
  tt_select(cs, n, false, w->wait);
  atomic_store(&w->err, tt_ctx_err(ctx));
  tt_unref(atomic_exchange(&w->cause, tt_ctx_cause(ctx)));
  /* Whether the late answer still reaches a client is not its concern. */
  (void)tt_http_res_send(r, "late", 4);
  return TT_OK;
}

/* h_stream writes three chunks and returns without finishing. */
static int h_stream(tt_ctx *ctx, tt_http_req *r, void *ud, tt_obj **err) {
  seen *w = ud;
  (void)ctx;
  (void)err;
  atomic_fetch_add(&w->calls, 1);
  tt_http_res_header(r, "Content-Type", "text/plain");
  tt_http_res_write(r, "one ", 4);
  tt_http_res_write(r, "two ", 4);
  tt_http_res_write(r, "three", 5);
  return TT_OK;
}

/* h_bigstream writes 4 MiB in chunks of 32 KiB: more than the 1 MiB a
** writer may have unsent, so it waits for the client now and then.  On
** /endless it writes until a write fails (at most 1 GiB). */
static int h_bigstream(tt_ctx *ctx, tt_http_req *r, void *ud,
                       tt_obj **err) {
  static char chunk[32 * 1024];
  seen *w = ud;
  int i, rc = TT_OK;
  int n = strcmp(tt_http_req_path(r), "/endless") == 0 ? 32768 : 128;
  (void)err;
  memset(chunk, 'z', sizeof chunk);
  for (i = 0; i < n && rc == TT_OK; i++)
    rc = tt_http_res_write(r, chunk, sizeof chunk);
  atomic_store(&w->err, rc);
  tt_unref(atomic_exchange(&w->cause, tt_ctx_cause(ctx)));
  atomic_fetch_add(&w->calls, 1);
  return TT_OK;
}

/* h_echo answers the method, path, a query argument, a header and the
** body; it also checks what the response functions refuse. */
static int h_echo(tt_ctx *ctx, tt_http_req *r, void *ud, tt_obj **err) {
  seen *w = ud;
  char out[512];
  size_t nq, blen, i;
  const tt_http_pair *q = tt_http_req_query(r, &nq);
  const char *body = tt_http_req_body(r, &blen), *a = "-";
  const char *h = tt_http_req_header(r, "x-name");
  int bad = 0;
  (void)ctx;
  (void)err;
  for (i = 0; i < nq; i++)
    if (strcmp(q[i].name, "a") == 0) a = q[i].value;
  bad += tt_http_res_header(r, "X-Bad", "a\r\nInjected: 1") == TT_EINVAL;
  bad += tt_http_res_header(r, "Bad Name", "v") == TT_EINVAL;
  bad += tt_http_res_header(r, "Content-Length", "3") == TT_EINVAL;
  bad += tt_http_res_status(r, 99) == TT_EINVAL;
  atomic_store(&w->err, bad);
  tt_http_res_status(r, 201);
  snprintf(out, sizeof out, "%s %s a=%s h=%s body=%.*s", tt_http_req_method(r),
           tt_http_req_path(r), a, h != NULL ? h : "-", (int)blen, body);
  atomic_fetch_add(&w->calls, 1);
  tt_http_res_send(r, out, strlen(out));
  /* A second answer is refused; the handler may go on. */
  if (tt_http_res_send(r, "x", 1) == TT_EINVAL &&
      tt_http_res_header(r, "X-Late", "1") == TT_EINVAL)
    atomic_store(&w->after, 1);
  return TT_OK;
}

/* }==================================================================== */


/* {====================================================================
** Set-up
** ===================================================================== */

static tt_pool *pool_of(int workers, int queue) {
  tt_pool_opts po;
  memset(&po, 0, sizeof po);
  po.name = "http";
  po.workers = workers;
  po.queue = queue;
  return tt_pool_new(&po, NULL);
}

static tt_http_server *serve(tt_pool *p, tt_http_handler h, seen *w,
                             const tt_http_opts *extra) {
  tt_http_opts o;
  int err = -1;
  char msg[128];
  tt_http_server *s;
  if (extra != NULL)
    o = *extra;
  else
    memset(&o, 0, sizeof o);
  o.pool = p;
  o.handler = h;
  o.ud = w;
  s = tt_http_new(&o, &err, msg, sizeof msg);
  if (s == NULL) fprintf(stderr, "  tt_http_new: %s\n", msg);
  return s;
}

static tt_http_stats stats(tt_http_server *s) {
  tt_http_stats st;
  tt_http_stats_get(s, &st);
  return st;
}

/* }==================================================================== */


TEST(hello_and_empty_answers) {
  tt_pool *p = pool_of(2, 8);
  seen w;
  char buf[4096];
  tt_http_server *s;
  seen_init(&w);
  s = serve(p, h_hello, &w, NULL);
  CHECK(s != NULL);
  if (s == NULL) return;
  CHECK(strncmp(tt_http_addr(s), "127.0.0.1:", 10) == 0);
  CHECK(atoi(strrchr(tt_http_addr(s), ':') + 1) > 0);
  request(s, GET("/"), buf, sizeof buf);
  CHECK_EQ(status_of(buf), 200);
  CHECK(strcmp(body_of(buf), "hello") == 0);
  CHECK(strstr(buf, "X-Test: yes\r\n") != NULL);
  CHECK(strstr(buf, "Content-Type: text/plain; charset=utf-8") != NULL);
  CHECK_EQ(atomic_load(&w.calls), 1);
  /* The handler has returned: its context ends, canceled. */
  WAIT_FOR(tt_ctx_err(atomic_load(&w.ctx)) != 0, 10);
  CHECK_EQ(tt_ctx_err(atomic_load(&w.ctx)), TT_CANCELED);
  tt_unref(s);
  seen_free(&w);

  seen_init(&w);
  s = serve(p, h_nothing, &w, NULL);
  request(s, GET("/"), buf, sizeof buf);
  CHECK_EQ(status_of(buf), 200);
  CHECK(strstr(buf, "Content-Length: 0\r\n") != NULL);
  CHECK(strcmp(body_of(buf), "") == 0);
  request(s, "HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
          buf, sizeof buf);
  CHECK_EQ(status_of(buf), 200);
  CHECK_EQ(atomic_load(&w.calls), 2);
  tt_unref(s);
  seen_free(&w);
  tt_unref(p);
}

TEST(request_fields_and_refusals) {
  tt_pool *p = pool_of(2, 8);
  seen w;
  char buf[4096];
  tt_http_server *s;
  seen_init(&w);
  s = serve(p, h_echo, &w, NULL);
  request(s, "POST /x%20y?a=1&b HTTP/1.1\r\nHost: x\r\nX-Name: v\r\n"
             "Content-Length: 4\r\nConnection: close\r\n\r\nbody",
          buf, sizeof buf);
  CHECK_EQ(status_of(buf), 201);
  CHECK(strcmp(body_of(buf), "POST /x y a=1 h=v body=body") == 0);
  CHECK(strstr(buf, "Injected") == NULL);
  CHECK_EQ(atomic_load(&w.err), 4);
  WAIT_FOR(atomic_load(&w.after) == 1, 10);
  CHECK_EQ(atomic_load(&w.after), 1);
  tt_unref(s);
  seen_free(&w);
  tt_unref(p);
}

TEST(handler_error_answers_500_with_the_id) {
  tt_pool *p = pool_of(2, 8);
  seen w;
  char buf[4096], want[80];
  tt_http_server *s;
  tt_http_stats st;
  seen_init(&w);
  tt_log_set_sink(keep_line, NULL);
  s = serve(p, h_fail, &w, NULL);
  request(s, "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"
             "Cookie: sid=0123456789; lang=en\r\n"
             "Connection: close\r\n\r\n", buf, sizeof buf);
  CHECK_EQ(status_of(buf), 500);
  /* The line was written before the answer went out. */
  CHECK_EQ(atomic_load(&nlines), 1);
  tt_log_set_sink(NULL, NULL);
  CHECK(strstr(last_line, "\"msg\":\"http handler failed\"") != NULL);
  CHECK(strstr(last_line, "\"status\":500") != NULL);
  CHECK(strstr(last_line, "boom: [redacted]; [redacted]") != NULL);
  CHECK(strstr(last_line, "s3cret") == NULL);
  CHECK(strstr(last_line, "0123456789") == NULL);
  CHECK(strstr(last_line, w.id) != NULL);
  snprintf(want, sizeof want, "%s\n", w.id);
  CHECK(w.id[0] != '\0');
  CHECK(strcmp(body_of(buf), want) == 0);
  WAIT_FOR(stats(s).active == 0, 10);
  st = stats(s);
  CHECK_EQ(st.requests, 1);
  CHECK_EQ(st.dispatched, 1);
  CHECK_EQ(st.active, 0);
  tt_unref(s);
  seen_free(&w);
  tt_unref(p);
}

TEST(hang_up_cancels_with_client_gone) {
  tt_pool *p = pool_of(2, 8);
  seen w;
  tt_ctx *started = tt_with_cancel(tt_background());
  tt_http_server *s;
  int fd;
  seen_init(&w);
  w.started = started;
  s = serve(p, h_wait, &w, NULL);
  fd = dial(s);
  send_str(fd, GET("/slow"));
  CHECK(tt_ctx_wait(started, 10));
  CHECK_EQ(stats(s).suspended, 1);
  close(fd);
  WAIT_FOR(atomic_load(&w.cause) != NULL, 10);
  CHECK(atomic_load(&w.cause) == &tt_http_client_gone.hdr);
  CHECK_EQ(atomic_load(&w.err), TT_CANCELED);
  CHECK_EQ(atomic_load(&w.same_ctx), 1);
  WAIT_FOR(stats(s).active == 0, 10);
  CHECK_EQ(stats(s).client_gone, 1);
  CHECK_EQ(stats(s).suspended, 0);
  CHECK_EQ(stats(s).active, 0);
  tt_unref(s);
  tt_unref(started);
  seen_free(&w);
  tt_unref(p);
}

TEST(request_timeout_and_trace) {
  tt_pool *p = pool_of(2, 8);
  seen w;
  tt_http_opts o;
  char buf[4096];
  tt_http_server *s;
  seen_init(&w);
  memset(&o, 0, sizeof o);
  o.request_timeout = 0.05;
  s = serve(p, h_wait, &w, &o);
  request(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
             "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-"
             "00f067aa0ba902b7-01\r\n\r\n", buf, sizeof buf);
  CHECK_EQ(status_of(buf), 200);
  CHECK(strcmp(body_of(buf), "late") == 0);
  CHECK_EQ(atomic_load(&w.err), TT_DEADLINE);
  CHECK_EQ(atomic_load(&w.has_sc), 1);
  CHECK_EQ(w.sc.trace_id[0], 0x4b);
  CHECK_EQ(w.sc.span_id[7], 0xb7);
  CHECK(w.sc.remote);
  tt_unref(s);
  seen_free(&w);
  tt_unref(p);
}

TEST(close_cancels_in_flight_requests) {
  tt_pool *p = pool_of(2, 8);
  seen w;
  tt_ctx *started = tt_with_cancel(tt_background());
  tt_http_server *s;
  tt_error *cause = tt_error_new(TT_ECLOSED, "going away", NULL);
  char buf[256];
  int fd;
  seen_init(&w);
  w.started = started;
  s = serve(p, h_wait, &w, NULL);
  fd = dial(s);
  send_str(fd, GET("/"));
  CHECK(tt_ctx_wait(started, 10));
  tt_http_close(s, &cause->hdr);
  WAIT_FOR(atomic_load(&w.cause) != NULL, 10);
  CHECK(atomic_load(&w.cause) == &cause->hdr);
  /* The connection was closed with no answer. */
  CHECK_EQ(read_all(fd, buf, sizeof buf), 0);
  close(fd);
  CHECK(dial(s) < 0);
  tt_unref(s);
  tt_unref(cause);
  tt_unref(started);
  seen_free(&w);
  tt_unref(p);
}

typedef struct shut_arg {
  tt_http_server *s;
  atomic_int rc;
  tt_ctx *done;
} shut_arg;

static void *shut_thread(void *arg) {
  shut_arg *a = arg;
  atomic_store(&a->rc, tt_http_shutdown(a->s, NULL, 10));
  tt_cancel(a->done, NULL);
  return NULL;
}

TEST(shutdown_drains) {
  tt_pool *p = pool_of(2, 8);
  seen w;
  tt_ctx *started = tt_with_cancel(tt_background());
  tt_http_server *s;
  tt_ctx *gate;
  shut_arg sa;
  pthread_t t;
  char buf[1024];
  int fd;
  seen_init(&w);
  w.started = started;
  w.gate = cancelable(&gate);
  s = serve(p, h_wait, &w, NULL);
  fd = dial(s);
  send_str(fd, GET("/"));
  CHECK(tt_ctx_wait(started, 10));
  sa.s = s;
  atomic_init(&sa.rc, -1);
  sa.done = tt_with_cancel(tt_background());
  CHECK_EQ(pthread_create(&t, NULL, shut_thread, &sa), 0);
  /* Draining: new connections are refused, the request still runs. */
  WAIT_FOR(dial(s) < 0, 10);
  CHECK(tt_ctx_err(sa.done) == 0);
  tt_cancel(gate, NULL);
  CHECK(tt_ctx_wait(sa.done, 10));
  CHECK_EQ(atomic_load(&sa.rc), TT_OK);
  read_all(fd, buf, sizeof buf);
  CHECK_EQ(status_of(buf), 200);
  CHECK(strcmp(body_of(buf), "late") == 0);
  CHECK(atomic_load(&w.cause) == NULL);  /* the gate ended the wait */
  close(fd);
  pthread_join(t, NULL);
  tt_unref(sa.done);
  tt_unref(s);
  tt_unref(started);
  seen_free(&w);
  tt_unref(p);
}

TEST(full_pool_answers_503) {
  tt_pool *p = pool_of(1, 1);
  seen w;
  tt_ctx *started = tt_with_cancel(tt_background());
  tt_http_server *s;
  tt_ctx *gate;
  char buf[1024];
  int fd1, fd2;
  seen_init(&w);
  w.started = started;
  w.gate = cancelable(&gate);
  s = serve(p, h_wait, &w, NULL);
  fd1 = dial(s);
  send_str(fd1, GET("/1"));
  CHECK(tt_ctx_wait(started, 10));
  fd2 = dial(s);
  send_str(fd2, GET("/2"));          /* queued: the one worker is busy */
  WAIT_FOR(stats(s).suspended == 2, 10);
  request(s, GET("/3"), buf, sizeof buf);
  CHECK_EQ(status_of(buf), 503);
  CHECK(strstr(buf, "Retry-After: 1\r\n") != NULL);
  CHECK_EQ(stats(s).rejected, 1);
  tt_cancel(gate, NULL);
  read_all(fd1, buf, sizeof buf);
  CHECK_EQ(status_of(buf), 200);
  read_all(fd2, buf, sizeof buf);
  CHECK_EQ(status_of(buf), 200);
  close(fd1);
  close(fd2);
  tt_unref(s);
  tt_unref(started);
  seen_free(&w);
  tt_unref(p);
}

TEST(bad_framing_and_big_bodies) {
  tt_pool *p = pool_of(2, 8);
  seen w;
  tt_http_opts o;
  char buf[4096];
  tt_http_server *s;
  seen_init(&w);
  memset(&o, 0, sizeof o);
  o.max_body = 8;
  s = serve(p, h_echo, &w, &o);
  request(s, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
             "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
             "4\r\nbody\r\n0\r\n\r\n", buf, sizeof buf);
  CHECK_EQ(status_of(buf), 400);
  request(s, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
             "Connection: close\r\n\r\n", buf, sizeof buf);
  CHECK_EQ(status_of(buf), 413);
  request(s, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
             "Connection: close\r\n\r\n6\r\nabcdef\r\n6\r\nghijkl\r\n"
             "0\r\n\r\n", buf, sizeof buf);
  CHECK_EQ(status_of(buf), 413);
  request(s, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n"
             "Connection: close\r\n\r\n12345678", buf, sizeof buf);
  CHECK_EQ(status_of(buf), 201);
  CHECK_EQ(atomic_load(&w.calls), 1);
  tt_unref(s);
  seen_free(&w);
  tt_unref(p);
}

TEST(streamed_response) {
  tt_pool *p = pool_of(2, 8);
  seen w;
  char buf[4096];
  tt_http_server *s;
  seen_init(&w);
  s = serve(p, h_stream, &w, NULL);
  request(s, GET("/"), buf, sizeof buf);
  CHECK_EQ(status_of(buf), 200);
  CHECK(strstr(buf, "Transfer-Encoding: chunked\r\n") != NULL);
  CHECK(strcmp(dechunk(body_of(buf)), "one two three") == 0);
  tt_unref(s);
  seen_free(&w);
  tt_unref(p);
}

/* count_body reads a response to its end and returns the size of its
** chunked body (the chunk sizes added up), or -1 if malformed. */
static long count_body(int fd) {
  static char buf[8 << 20];
  size_t n = read_all(fd, buf, sizeof buf);
  const char *p = strstr(buf, "\r\n\r\n");
  long total = 0;
  if (p == NULL) return -1;
  p += 4;
  for (;;) {
    char *end;
    unsigned long len = strtoul(p, &end, 16);
    if (end == p || strncmp(end, "\r\n", 2) != 0) return -1;
    if (len == 0) return total;
    p = end + 2 + len;
    if ((size_t)(p - buf) + 2 > n || strncmp(p, "\r\n", 2) != 0) return -1;
    p += 2;
    total += (long)len;
  }
}

TEST(long_stream_waits_for_the_client) {
  tt_pool *p = pool_of(2, 8);
  seen w;
  tt_http_server *s;
  int fd;
  seen_init(&w);
  s = serve(p, h_bigstream, &w, NULL);
  fd = dial(s);
  send_str(fd, GET("/"));
  CHECK_EQ(count_body(fd), 128L * 32 * 1024);
  close(fd);
  WAIT_FOR(atomic_load(&w.calls) == 1, 10);
  CHECK_EQ(atomic_load(&w.err), TT_OK);
  CHECK(atomic_load(&w.cause) == NULL);
  /* A client that leaves in the middle: the writer learns it, and so
  ** does the request context. */
  fd = dial(s);
  send_str(fd, GET("/endless"));
  {
    char some[4096];
    struct pollfd pf = {fd, POLLIN, 0};
    CHECK(poll(&pf, 1, 10000) == 1);
    CHECK(recv(fd, some, sizeof some, 0) > 0);
  }
  close(fd);
  WAIT_FOR(atomic_load(&w.calls) == 2, 10);
  CHECK(atomic_load(&w.err) != TT_OK);
  CHECK(atomic_load(&w.cause) == &tt_http_client_gone.hdr);
  WAIT_FOR(stats(s).active == 0, 10);
  CHECK_EQ(stats(s).client_gone, 1);
  tt_unref(s);
  seen_free(&w);
  tt_unref(p);
}

/* Events: each request gives one STARTED (if dispatched) and one
** FINISHED, with its status. */
typedef struct evlog {
  atomic_int started, finished, gone, last_status;
} evlog;

static void on_event(const tt_http_event *ev, void *ud) {
  evlog *l = ud;
  if (ev->kind == TT_HTTP_EV_STARTED) {
    atomic_fetch_add(&l->started, 1);
  } else {
    atomic_fetch_add(&l->finished, 1);
    if (ev->client_gone) atomic_fetch_add(&l->gone, 1);
    atomic_store(&l->last_status, ev->status);
  }
}

TEST(events) {
  tt_pool *p = pool_of(2, 8);
  seen w;
  evlog l;
  char buf[4096];
  tt_http_server *s;
  int id;
  seen_init(&w);
  memset(&l, 0, sizeof l);
  s = serve(p, h_hello, &w, NULL);
  id = tt_http_observe(s, on_event, &l);
  CHECK(id > 0);
  request(s, GET("/"), buf, sizeof buf);
  /* FINISHED comes once the handler's op has ended too, which may be
  ** after its answer reached the client: wait for it, so that the last
  ** status is the second request's. */
  WAIT_FOR(atomic_load(&l.finished) == 1, 10);
  request(s, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
             "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
          buf, sizeof buf);
  WAIT_FOR(atomic_load(&l.finished) == 2, 10);
  CHECK_EQ(atomic_load(&l.started), 1);
  CHECK_EQ(atomic_load(&l.finished), 2);
  CHECK_EQ(atomic_load(&l.last_status), 400);
  tt_http_unobserve(s, id);
  request(s, GET("/"), buf, sizeof buf);
  CHECK_EQ(atomic_load(&l.started), 1);
  tt_unref(s);
  seen_free(&w);
  tt_unref(p);
}

TEST(bad_options) {
  tt_pool *p = pool_of(1, 1);
  tt_http_opts o;
  int err = 0;
  char msg[128];
  tt_http_server *s, *s2;
  seen w;
  memset(&o, 0, sizeof o);
  o.pool = p;
  o.handler = h_hello;
  o.addr = "nonsense";
  CHECK(tt_http_new(&o, &err, msg, sizeof msg) == NULL);
  CHECK_EQ(err, TT_EINVAL);
  CHECK(strstr(msg, "bad address") != NULL);
  o.addr = "127.0.0.1:0";
  o.tls_cert = "/nonexistent/cert.pem";
  o.tls_key = "/nonexistent/key.pem";
  CHECK(tt_http_new(&o, &err, msg, sizeof msg) == NULL);
  CHECK(strstr(msg, "cannot read") != NULL);
  /* A port in use. */
  seen_init(&w);
  s = serve(p, h_hello, &w, NULL);
  o.tls_cert = o.tls_key = NULL;
  o.addr = tt_http_addr(s);
  s2 = tt_http_new(&o, &err, msg, sizeof msg);
  CHECK(s2 == NULL);
  CHECK_EQ(err, TT_ECLOSED);
  tt_unref(s2);
  tt_unref(s);
  seen_free(&w);
  tt_unref(p);
}

/* {====================================================================
** Metrics and spans of requests
** ===================================================================== */

/* metric reads the value of 'series' (written out in full) from the
** metrics text, or -1. */
static double metric(const char *series) {
  tt_buf b = TT_BUF_INIT;
  size_t n = strlen(series);
  const char *p;
  double v = -1;
  CHECK_EQ(tt_metrics_text(&b), TT_OK);
  for (p = b.data; p != NULL && (p = strstr(p, series)) != NULL; p++)
    if ((p == b.data || p[-1] == '\n') && p[n] == ' ') {
      v = atof(p + n + 1);
      break;
    }
  tt_buf_free(&b);
  return v;
}

/* h_mix answers /fail with a failure, /metrics with the metrics text,
** /wait once its context ends, and anything else with "hello". */
static int h_mix(tt_ctx *ctx, tt_http_req *r, void *ud, tt_obj **err) {
  const char *path = tt_http_req_path(r);
  seen *w = ud;
  if (strcmp(path, "/fail") == 0) {
    *err = &tt_error_new(TT_EFAILED, "broken", NULL)->hdr;
    return TT_EFAILED;
  }
  if (strcmp(path, "/metrics") == 0) return tt_metrics_respond(r);
  if (strcmp(path, "/wait") == 0) {
    if (w->started != NULL) tt_cancel(w->started, NULL);
    tt_ctx_wait(ctx, 10);
    return TT_OK;
  }
  return tt_http_res_send(r, "hello", 5);
}

static void count_finished(const tt_http_event *ev, void *ud) {
  if (ev->kind == TT_HTTP_EV_FINISHED) atomic_fetch_add((atomic_int *)ud, 1);
}

TEST(metrics_of_requests) {
  tt_pool *p = pool_of(2, 8);
  tt_http_opts o;
  tt_http_observer_opts im = {true};
  tt_http_server *s;
  atomic_int finished = 0;
  char buf[65536];
  seen w;
  int i, fd, id;
  seen_init(&w);
  memset(&o, 0, sizeof o);
  o.name = "ctest_metrics";
  s = serve(p, h_mix, &w, &o);
  CHECK_EQ(tt_metrics_observe_http(s), TT_OK);
  /* An immediate observer cannot be taken back; a server takes four. */
  id = tt_http_observe_with(s, count_finished, &finished, &im);
  CHECK(id > 0);
  tt_http_unobserve(s, id);
  CHECK(tt_http_observe_with(s, count_finished, &finished, &im) > 0);
  CHECK(tt_http_observe_with(s, count_finished, &finished, &im) > 0);
  CHECK_EQ(tt_http_observe_with(s, count_finished, &finished, &im), -1);
  for (i = 0; i < 3; i++) request(s, GET("/"), buf, sizeof buf);
  request(s, "POST /fail HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
             "Connection: close\r\n\r\n", buf, sizeof buf);
  CHECK_EQ(status_of(buf), 500);
  request(s, "BREW / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
          buf, sizeof buf);
  CHECK_EQ(status_of(buf), 200);
  /* A client that hangs up while its handler waits. */
  w.started = tt_with_cancel(tt_background());
  fd = dial(s);
  send_str(fd, GET("/wait"));
  tt_ctx_wait(w.started, 10);
  close(fd);
  WAIT_FOR(atomic_load(&finished) == 3 * 6, 10);
  CHECK_EQ(atomic_load(&finished), 3 * 6);
  CHECK_EQ(metric("tether_http_requests_total{server=\"ctest_metrics\","
                  "method=\"GET\",code=\"200\"}"), 4);
  CHECK_EQ(metric("tether_http_requests_total{server=\"ctest_metrics\","
                  "method=\"POST\",code=\"500\"}"), 1);
  CHECK_EQ(metric("tether_http_requests_total{server=\"ctest_metrics\","
                  "method=\"OTHER\",code=\"200\"}"), 1);
  CHECK_EQ(metric("tether_http_client_gone_total{server="
                  "\"ctest_metrics\"}"), 1);
  CHECK_EQ(metric("tether_http_request_duration_seconds_count{server="
                  "\"ctest_metrics\"}"), 6);
  CHECK_EQ(metric("tether_http_request_duration_seconds_bucket{server="
                  "\"ctest_metrics\",le=\"+Inf\"}"), 6);
  /* /metrics: the text with its content type, GET and HEAD only. */
  request(s, GET("/metrics"), buf, sizeof buf);
  CHECK_EQ(status_of(buf), 200);
  CHECK(strstr(buf, "Content-Type: " TT_METRICS_CONTENT_TYPE "\r\n") !=
        NULL);
  CHECK(strstr(body_of(buf), "# TYPE tether_http_requests_total counter\n"
                             "tether_http_requests_total{server=\"ctest_"
                             "metrics\",method=\"GET\",code=\"200\"} 4\n")
        != NULL);
  request(s, "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
             "\r\n", buf, sizeof buf);
  CHECK_EQ(status_of(buf), 200);
  CHECK_EQ(strlen(body_of(buf)), 0);
  request(s, "DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
             "\r\n", buf, sizeof buf);
  CHECK_EQ(status_of(buf), 405);
  CHECK(strstr(buf, "Allow: GET, HEAD\r\n") != NULL);
  WAIT_FOR(metric("tether_http_requests_total{server=\"ctest_metrics\","
                  "method=\"DELETE\",code=\"405\"}") == 1, 10);
  CHECK_EQ(metric("tether_http_requests_total{server=\"ctest_metrics\","
                  "method=\"DELETE\",code=\"405\"}"), 1);
  tt_unref(w.started);
  w.started = NULL;
  tt_unref(s);
  seen_free(&w);
  tt_unref(p);
}

/* What the span test's handler and op saw. */
static tt_span_context handler_sc, op_sc;
static atomic_int span_seen, op_ran;
static tt_pool *span_ops;

static int fn_op(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)arg;
  (void)out;
  if (tt_ctx_span_context(ctx, &op_sc)) atomic_store(&op_ran, 1);
  return TT_OK;
}

static int h_span(tt_ctx *ctx, tt_http_req *r, void *ud, tt_obj **err) {
  tt_span *sp = tt_http_req_span(r);
  tt_span_context own;
  tt_submit_opts so;
  tt_handle *h;
  int e;
  bool down = strcmp(tt_http_req_path(r), "/down") == 0;
  (void)ud;
  (void)err;
  tt_span_context_of(sp, &own);
  /* The handler's context carries the server span itself. */
  if (!down && sp != NULL && tt_ctx_span_context(ctx, &handler_sc) &&
      memcmp(own.span_id, handler_sc.span_id, 8) == 0)
    atomic_store(&span_seen, 1);
  memset(&so, 0, sizeof so);
  so.name = "audit";
  if (!down) {
    h = tt_pool_submit(span_ops, ctx, &so, fn_op, NULL, NULL, &e);
    tt_unref(h);
  }
  tt_http_res_status(r, down ? 503 : 201);
  return tt_http_res_send(r, "ok", 2);
}

TEST(server_span_is_the_parent_of_the_handler_ops) {
  tt_pool *p = pool_of(2, 8);
  tt_pool_opts po;
  tt_pool_hook hook;
  tt_trace_opts to;
  tt_http_opts o;
  tt_http_server *s;
  char path[128], buf[4096], sid[17], want[160], *t = NULL;
  FILE *f;
  long n;
  int err;
  snprintf(path, sizeof path, "/tmp/tether-http-spans-%d.jsonl",
           (int)getpid());
  unlink(path);
  memset(&to, 0, sizeof to);
  to.file = path;
  to.sampler = "parentbased_always_on";
  to.schedule_delay = 0.05;
  CHECK_EQ(tt_trace_configure(&to), TT_OK);
  memset(&po, 0, sizeof po);
  po.name = "ctest_audit";
  po.workers = 1;
  hook = tt_trace_pool_hook();
  po.hook = &hook;
  span_ops = tt_pool_new(&po, &err);
  memset(&o, 0, sizeof o);
  o.name = "ctest_spans";
  s = serve(p, h_span, NULL, &o);
  request(s, "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
             "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-"
             "00f067aa0ba902b7-01\r\nConnection: close\r\n\r\n",
          buf, sizeof buf);
  CHECK_EQ(status_of(buf), 201);
  request(s, GET("/down"), buf, sizeof buf);
  CHECK_EQ(status_of(buf), 503);
  CHECK_EQ(tt_http_shutdown(s, NULL, 10), TT_OK);
  CHECK_EQ(tt_pool_drain(span_ops, NULL, 10), TT_OK);
  CHECK_EQ(atomic_load(&span_seen), 1);
  CHECK_EQ(atomic_load(&op_ran), 1);
  CHECK_EQ(tt_trace_flush(10), TT_OK);
  f = fopen(path, "rb");
  CHECK(f != NULL);
  if (f != NULL) {
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    t = calloc(1, (size_t)n + 1);
    if (fread(t, 1, (size_t)n, f) != (size_t)n) t[0] = '\0';
    fclose(f);
  }
  if (t == NULL) t = calloc(1, 1);
  /* The server span: the remote parent, kind SERVER, its attributes. */
  tt_hex(handler_sc.span_id, 8, sid);
  snprintf(want, sizeof want, "{\"traceId\":\"4bf92f3577b34da6a3ce929d0e0e"
           "4736\",\"spanId\":\"%s\",\"parentSpanId\":\"00f067aa0ba902b7\","
           "\"flags\":769,\"name\":\"POST /orders\",\"kind\":2,", sid);
  CHECK(strstr(t, want) != NULL);
  CHECK(strstr(t, "{\"key\":\"http.response.status_code\",\"value\":"
                  "{\"intValue\":\"201\"}}") != NULL);
  CHECK(strstr(t, "{\"key\":\"url.path\",\"value\":{\"stringValue\":"
                  "\"/orders\"}}") != NULL);
  CHECK(strstr(t, "{\"key\":\"tether.server\",\"value\":{\"stringValue\":"
                  "\"ctest_spans\"}}") != NULL);
  /* The op the handler submitted: its child, with a link to it. */
  snprintf(want, sizeof want, "\"parentSpanId\":\"%s\",\"flags\":257,"
           "\"name\":\"audit\"", sid);
  CHECK(strstr(t, want) != NULL);
  snprintf(want, sizeof want, "\"links\":[{\"traceId\":\"4bf92f3577b34da6a"
           "3ce929d0e0e4736\",\"spanId\":\"%s\"", sid);
  CHECK(strstr(t, want) != NULL);
  /* No span of the handler's own attempt: the server span is its. */
  CHECK(strstr(t, "\"name\":\"ctest_spans\"") == NULL);
  /* A 503 is an error; a request without traceparent starts a trace. */
  CHECK(strstr(t, "\"name\":\"GET /down\",\"kind\":2,") != NULL);
  CHECK(strstr(t, "\"status\":{\"code\":2,\"message\":\"HTTP 503\"}") !=
        NULL);
  free(t);
  CHECK_EQ(tt_trace_configure(NULL), TT_OK);
  if (getenv("KEEP_SPANS") == NULL) unlink(path);
  tt_unref(s);
  tt_unref(span_ops);
  tt_unref(p);
}

/* }==================================================================== */

TEST_MAIN()
