/*
** test_admin.c -- the admin page from C: SHA-256 and base64 against their
** standards' vectors, the Content-Security-Policy against the page, and
** an admin server (tt_admin_serve) and a mounted admin (tt_admin_handle)
** answering a client on 127.0.0.1 written here over plain sockets: the
** state, an action with and without the token, Host and Origin checks,
** the read-only admin, and the refusal to bind off loopback without a
** token.
*/
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

extern const char tt__admin_page[];
extern const size_t tt__admin_page_len;

/* {====================================================================
** Digests
** ===================================================================== */

static void hex(const unsigned char *d, size_t n, char *out) {
  tt_hex(d, n, out);
}

static void sha_hex(const void *p, size_t n, char out[65]) {
  unsigned char d[32];
  tt__sha256(p, n, d);
  hex(d, 32, out);
}

TEST(sha256_matches_the_standard_vectors) {
  char h[65];
  static char million[1000000];
  sha_hex("", 0, h);
  CHECK_EQ(strcmp(h, "e3b0c44298fc1c149afbf4c8996fb924"
                     "27ae41e4649b934ca495991b7852b855"), 0);
  sha_hex("abc", 3, h);
  CHECK_EQ(strcmp(h, "ba7816bf8f01cfea414140de5dae2223"
                     "b00361a396177a9cb410ff61f20015ad"), 0);
  /* 56 bytes: the length no longer fits the first padded block. */
  sha_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, h);
  CHECK_EQ(strcmp(h, "248d6a61d20638b8e5c026930c3e6039"
                     "a33ce45964ff2167f6ecedd419db06c1"), 0);
  sha_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
          "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu", 112,
          h);
  CHECK_EQ(strcmp(h, "cf5b16a778af8380036ce59e7b0492370"
                     "b249b11e8f07a51afac45037afee9d1"), 0);
  memset(million, 'a', sizeof million);
  sha_hex(million, sizeof million, h);
  CHECK_EQ(strcmp(h, "cdc76e5c9914fb9281a1c7e284d73e67"
                     "f1809a48a497200e046d39ccc7112cd0"), 0);
}

TEST(base64_round_trips_and_refuses_bad_input) {
  static const char *const plain[] = {"", "f", "fo", "foo", "foob",
                                      "fooba", "foobar"};
  static const char *const coded[] = {"", "Zg==", "Zm8=", "Zm9v",
                                      "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
  char out[32], back[32];
  size_t i;
  for (i = 0; i < sizeof plain / sizeof plain[0]; i++) {
    long n;
    CHECK_EQ(tt__base64(plain[i], strlen(plain[i]), out), strlen(coded[i]));
    CHECK_EQ(strcmp(out, coded[i]), 0);
    n = tt__unbase64(coded[i], strlen(coded[i]), back, sizeof back);
    CHECK_EQ(n, (long)strlen(plain[i]));
    CHECK_EQ(memcmp(back, plain[i], strlen(plain[i])), 0);
  }
  CHECK_EQ(tt__unbase64("Zm9v!", 5, back, sizeof back), -1);
  CHECK_EQ(tt__unbase64("Zm=9v", 5, back, sizeof back), -1);
  CHECK_EQ(tt__unbase64("Zm9vYmFy", 8, back, 5), -1);
}

/* hash_of returns "sha256-BASE64" of the page's text between 'open' and
** 'close'. */
static void hash_of(const char *open, const char *close, char *out) {
  const char *a = strstr(tt__admin_page, open) + strlen(open);
  const char *b = strstr(a, close);
  unsigned char d[32];
  char b64[48];
  tt__sha256(a, (size_t)(b - a), d);
  tt__base64(d, 32, b64);
  sprintf(out, "sha256-%s", b64);
}

TEST(csp_names_the_page_inline_script_and_style) {
  char script[64], style[64], want[512];
  hash_of("<script>", "</script>", script);
  hash_of("<style>", "</style>", style);
  snprintf(want, sizeof want,
           "default-src 'none'; script-src '%s'; style-src '%s'; "
           "connect-src 'self'; img-src 'self' data:; "
           "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
           script, style);
  CHECK_EQ(strcmp(tt_admin_csp(), want), 0);
  CHECK_EQ(strlen(tt__admin_page), tt__admin_page_len);
}

/* }==================================================================== */


/* {====================================================================
** A client
** ===================================================================== */

static int dial(const char *addr) {
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

/* request sends one request ("Connection: close") and returns the
** answer's status; the whole answer goes to 'buf'. */
static int request(const char *addr, const char *method, const char *path,
                   const char *host, const char *extra, char *buf,
                   size_t cap) {
  char req[1024];
  size_t n = 0, off = 0, len;
  double end = tt_now() + 10;
  int fd = dial(addr), st = 0;
  buf[0] = '\0';
  if (fd < 0) return -1;
  len = (size_t)snprintf(req, sizeof req,
                         "%s %s HTTP/1.1\r\nHost: %s\r\n%s"
                         "Content-Length: 0\r\nConnection: close\r\n\r\n",
                         method, path, host, extra != NULL ? extra : "");
  while (off < len) {
    ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
    if (w <= 0) break;
    off += (size_t)w;
  }
  while (n + 1 < cap && tt_now() < end) {
    struct pollfd p = {fd, POLLIN, 0};
    ssize_t r;
    if (poll(&p, 1, 100) <= 0) continue;
    r = recv(fd, buf + n, cap - 1 - n, 0);
    if (r <= 0) break;
    n += (size_t)r;
  }
  buf[n] = '\0';
  close(fd);
  if (sscanf(buf, "HTTP/1.%*d %d", &st) != 1) return 0;
  return st;
}

/* }==================================================================== */


/* {====================================================================
** Servers
** ===================================================================== */

static int fail_op(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  *out = (tt_obj *)tt_error_new(TT_EFAILED, "<b>broken</b> \"op\"", NULL);
  return TT_EFAILED;
}

/* dead_pool makes a pool holding 'n' dead letters (ids 1..n). */
static tt_pool *dead_pool(const char *name, int n) {
  tt_pool_opts o;
  tt_pool *p;
  int i, err;
  tt_pool_stats s;
  memset(&o, 0, sizeof o);
  o.name = name;
  o.workers = 1;
  p = tt_pool_new(&o, &err);
  for (i = 0; i < n; i++) {
    tt_submit_opts so = {.name = "doomed"};
    tt_unref(tt_pool_submit(p, tt_background(), &so, fail_op, NULL, NULL,
                            &err));
  }
  WAIT_FOR((tt_pool_stats_get(p, &s), s.dead == (uint64_t)n), 10);
  CHECK_EQ(s.dead_held, (uint64_t)n);
  return p;
}

TEST(serves_state_and_actions_with_the_token) {
  tt_pool *p = dead_pool("c-pool", 2);
  tt_admin_serve_opts o;
  tt_http_server *s;
  tt_pool_stats st;
  char buf[65536], host[64], path[128], msg[256];
  int err;
  memset(&o, 0, sizeof o);
  o.admin.token = "c-token";
  o.admin.pools = &p;
  o.admin.npools = 1;
  s = tt_admin_serve(&o, &err, msg, sizeof msg);
  CHECK(s != NULL);
  if (s == NULL) {
    tt_unref(p);
    return;
  }
  snprintf(host, sizeof host, "%s", tt_http_addr(s));
  CHECK_EQ(request(host, "GET", "/api/state", host, NULL, buf, sizeof buf),
           200);
  CHECK(strstr(buf, "\"name\":\"c-pool\"") != NULL);
  CHECK(strstr(buf, "\"dead_held\":2") != NULL);
  /* The error is text in a JSON string, quotes escaped. */
  CHECK(strstr(buf, "\"error\":\"<b>broken</b> \\\"op\\\"\"") != NULL);
  CHECK(strstr(buf, "X-Content-Type-Options: nosniff") != NULL);
  CHECK_EQ(request(host, "GET", "/", host, NULL, buf, sizeof buf), 200);
  CHECK(strstr(buf, "Content-Security-Policy: default-src 'none'") != NULL);
  snprintf(path, sizeof path, "/api/pools/%llu/dead/1/retry",
           (unsigned long long)tt_pool_id(p));
  CHECK_EQ(request(host, "POST", path, host, NULL, buf, sizeof buf), 401);
  CHECK_EQ(request(host, "POST", path, host,
                   "Authorization: Bearer c-tokeN\r\n", buf, sizeof buf),
           401);
  CHECK_EQ(request(host, "POST", path, host,
                   "Authorization: Bearer c-token\r\n"
                   "Origin: http://evil.example\r\n", buf, sizeof buf),
           403);
  CHECK_EQ(request(host, "GET", "/api/state", "evil.example", NULL, buf,
                   sizeof buf), 421);
  tt_pool_stats_get(p, &st);
  CHECK_EQ(st.dead_held, 2u);
  CHECK_EQ(request(host, "POST", path, host,
                   "Authorization: Bearer c-token\r\n", buf, sizeof buf),
           200);
  CHECK(strstr(buf, "\"op\":3") != NULL);
  WAIT_FOR((tt_pool_stats_get(p, &st), st.dead == 3), 10);
  CHECK_EQ(st.dead_held, 2u);    /* failed again, under a new id */
  CHECK_EQ(st.submitted, 3u);
  tt_http_close(s, NULL);
  tt_unref(s);
  CHECK_EQ(tt_pool_drain(p, NULL, 10), TT_OK);
  tt_unref(p);
}

TEST(read_only_without_a_token_and_loopback_only) {
  tt_pool *p = dead_pool("ro-pool", 1);
  tt_admin_serve_opts o;
  tt_http_server *s;
  char buf[65536], host[64], path[128], msg[256];
  int err;
  memset(&o, 0, sizeof o);
  o.admin.pools = &p;
  o.admin.npools = 1;
  /* The environment may not hold a token for this test. */
  unsetenv("TETHER_ADMIN_TOKEN");
  /* Every address, on purpose: without a token it must be refused before
  ** anything is bound. */
  o.addr = "0.0.0.0:0";
  CHECK(tt_admin_serve(&o, &err, msg, sizeof msg) == NULL);
  CHECK_EQ(err, TT_EINVAL);
  CHECK(strstr(msg, "needs a token") != NULL);
  o.addr = NULL;
  s = tt_admin_serve(&o, &err, msg, sizeof msg);
  CHECK(s != NULL);
  if (s != NULL) {
    snprintf(host, sizeof host, "%s", tt_http_addr(s));
    CHECK_EQ(request(host, "GET", "/api/state", host, NULL, buf,
                     sizeof buf), 200);
    CHECK(strstr(buf, "\"actions\":false") != NULL);
    snprintf(path, sizeof path, "/api/pools/%llu/dead/1/drop",
             (unsigned long long)tt_pool_id(p));
    CHECK_EQ(request(host, "POST", path, host,
                     "Authorization: Bearer anything\r\n", buf, sizeof buf),
             403);
    tt_http_close(s, NULL);
    tt_unref(s);
  }
  tt_unref(p);
}

/* A mounted admin next to an application's own route. */
static int app_handler(tt_ctx *ctx, tt_http_req *req, void *ud,
                       tt_obj **err) {
  (void)err;
  if (tt_admin_handle(ud, ctx, req)) return TT_OK;
  tt_http_res_send(req, "app", 3);
  return TT_OK;
}

TEST(mounts_under_a_prefix) {
  tt_pool *p = dead_pool("mounted", 1), *web;
  tt_admin_opts ao;
  tt_admin *a;
  tt_pool_opts po;
  tt_http_opts ho;
  tt_http_server *s;
  char buf[65536], host[64], msg[256];
  int err;
  memset(&ao, 0, sizeof ao);
  ao.prefix = "/ops";
  ao.token = "m";
  ao.pools = &p;
  ao.npools = 1;
  a = tt_admin_new(&ao, &err, msg, sizeof msg);
  CHECK(a != NULL);
  ao.prefix = "/ops/";
  CHECK(tt_admin_new(&ao, &err, msg, sizeof msg) == NULL);
  CHECK_EQ(err, TT_EINVAL);
  memset(&po, 0, sizeof po);
  po.workers = 2;
  web = tt_pool_new(&po, &err);
  memset(&ho, 0, sizeof ho);
  ho.pool = web;
  ho.handler = app_handler;
  ho.ud = a;
  s = tt_http_new(&ho, &err, msg, sizeof msg);
  CHECK(s != NULL);
  if (s != NULL) {
    snprintf(host, sizeof host, "%s", tt_http_addr(s));
    CHECK_EQ(request(host, "GET", "/ops/api/state", "localhost:9", NULL,
                     buf, sizeof buf), 200);
    CHECK(strstr(buf, "\"name\":\"mounted\"") != NULL);
    CHECK_EQ(request(host, "GET", "/ops", host, NULL, buf, sizeof buf),
             308);
    CHECK_EQ(request(host, "GET", "/opsx", host, NULL, buf, sizeof buf),
             200);
    CHECK(strcmp(strstr(buf, "\r\n\r\n") + 4, "app") == 0);
    CHECK_EQ(request(host, "GET", "/ops/", "evil.example", NULL, buf,
                     sizeof buf), 421);
    tt_http_close(s, NULL);
    tt_unref(s);
  }
  tt_unref(web);
  tt_unref(a);
  tt_unref(p);
}

/* }==================================================================== */

TEST_MAIN()
