/*
** admin.c -- the admin page: live pools, in-flight ops, failures and dead
** letters, over HTTP (DESIGN section 12).
**
** DESIGN.
**
** What it serves.  An admin (tt_admin) answers the requests under its
** prefix: the page at "/" (admin_page.c: one HTML file with its style and
** script inline), its data at "/api/state" (JSON, built here with the
** pools' snapshot functions, docs/admin.md says every field),
** "/metrics" (the registry's text) and three actions, POST
** /api/pools/ID/dead/DID/retry, .../dead/DID/drop and /api/pools/ID/drain.
** tt_admin_serve gives it an HTTP server and a pool of its own (two
** workers by default), so that an application whose pools are saturated
** still gets its page answered; tt_admin_handle lets an application
** mount it on a server of its own instead (its handlers' pool then
** answers).
**
** Which pools.  The ones given at creation (referenced for the admin's
** life), or, without a list, every pool the exit registry tracks (the
** pools the program's own Lua states made), looked up afresh at each
** request so that pools made later appear.
**
** Security, by default:
** - Actions need "Authorization: Bearer TOKEN": a header that a page of
**   another origin can neither send without a CORS preflight (never
**   answered) nor have the browser add by itself, as it would a cookie
**   or Basic credentials.  Without a token configured, actions answer
**   403: the page is read-only.  A POST whose Origin (or Sec-Fetch-Site)
**   names another origin is refused before anything else.
** - Tokens are compared as SHA-256 digests with a loop that looks at
**   every byte, so the time taken tells nothing about the token.
** - Off loopback (an admin server bound to another address, or a mounted
**   admin asked by a remote client) every route needs the token: Bearer,
**   or Basic with the token as the password (the browser's own prompt,
**   so that the page can be loaded at all); binding such an address
**   without a token is refused.
** - The Host header must name the bound address or localhost (or one of
**   the 'hosts' given): a page that rebinds its own DNS name to 127.0.0.1
**   cannot read the data.
** - Every response carries a Content-Security-Policy whose script-src and
**   style-src are the SHA-256 of the page's inline script and style
**   (computed once, from the page itself, so they cannot go stale),
**   X-Content-Type-Options: nosniff, and no-store caching.  The page
**   renders every user-controlled string as text (textContent).
** - Every action, done or refused, writes an audit log line.
**
** Locks: none of its own; the fields of an admin are fixed once it
** serves ('bound' is published with a release store before the first
** request can see it).  It takes each pool's lock through the pools'
** functions, one at a time, and the exit registry's.
*/
#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define DEF_WORKERS 2
#define DEF_QUEUE 64
#define MAX_POOLS 1024
#define MAX_HOSTS 16
#define MAX_TEXT 2000          /* bytes of an error or cause shown */
#define MAX_TRACE 8000         /* bytes of a traceback shown */
#define MAX_TENANTS 50

/* Query defaults and limits of /api/state (docs/admin.md). */
#define DEF_DEAD 20
#define DEF_FAILURES 20
#define DEF_INFLIGHT 100
#define MAX_LIMIT 1000

/* The page (admin_page.c, made from admin.html by tools/embed.lua). */
extern const char tt__admin_page[];
extern const size_t tt__admin_page_len;

struct tt_admin {
  tt_obj hdr;
  char *name;
  char *prefix;              /* "" or "/path" without a trailing '/' */
  bool has_token;
  unsigned char token[32];   /* SHA-256 of the token */
  bool all_pools;
  tt_pool **pools;           /* referenced, when !all_pools */
  size_t npools;
  char **hosts;
  size_t nhosts;
  /* Set by tt_admin_serve: the server's address decides what Host may
  ** be and whether reads need the token.  A mounted admin has none and
  ** judges each request by its client's address. */
  bool served;
  bool public_bind;          /* bound off loopback */
  bool wildcard;             /* bound to every address */
  char bound[80];
  _Atomic bool ready;
};

/* {====================================================================
** The Content-Security-Policy of the page
** ===================================================================== */

static pthread_once_t csp_once = PTHREAD_ONCE_INIT;
static char csp[512];

/* hash_between writes "sha256-BASE64" of the text between the first
** 'open' and the next 'close' of the page. */
static void hash_between(const char *open, const char *close, char *out,
                         size_t n) {
  const char *a = strstr(tt__admin_page, open), *b;
  unsigned char d[32];
  char b64[48];
  if (a == NULL) abort();   /* the page is ours: it has both */
  a += strlen(open);
  b = strstr(a, close);
  if (b == NULL) abort();
  tt__sha256(a, (size_t)(b - a), d);
  tt__base64(d, sizeof d, b64);
  snprintf(out, n, "sha256-%s", b64);
}

static void csp_init(void) {
  char script[64], style[64];
  hash_between("<script>", "</script>", script, sizeof script);
  hash_between("<style>", "</style>", style, sizeof style);
  snprintf(csp, sizeof csp,
           "default-src 'none'; script-src '%s'; style-src '%s'; "
           "connect-src 'self'; img-src 'self' data:; "
           "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
           script, style);
}

const char *tt_admin_csp(void) {
  TT_CHECK(pthread_once(&csp_once, csp_init));
  return csp;
}

/* }==================================================================== */


/* {====================================================================
** The admin object
** ===================================================================== */

static void admin_free(tt_obj *o) {
  tt_admin *a = (tt_admin *)o;
  size_t i;
  for (i = 0; i < a->npools; i++) tt_unref(a->pools[i]);
  free(a->pools);
  for (i = 0; i < a->nhosts; i++) free(a->hosts[i]);
  free(a->hosts);
  free(a->name);
  free(a->prefix);
  free(a);
}

static int admin_describe(tt_obj *o, char *buf, size_t n) {
  tt_admin *a = (tt_admin *)o;
  return snprintf(buf, n, "tether.Admin '%s' (%s)", a->name,
                  a->has_token ? "actions need the token" : "read-only");
}

static void admin_traverse(tt_obj *o, tt_visit visit, void *ud) {
  tt_admin *a = (tt_admin *)o;
  size_t i;
  for (i = 0; i < a->npools; i++) visit((tt_obj *)a->pools[i], ud);
}

const tt_type tt_admin_type = {"tether.Admin", admin_free, admin_describe,
                               admin_traverse};

/* valid_prefix: "" or "/x..." without a trailing '/', '?', '#' or
** whitespace. */
static bool valid_prefix(const char *p) {
  size_t n = strlen(p), i;
  if (n == 0) return true;
  if (p[0] != '/' || p[n - 1] == '/') return false;
  for (i = 0; i < n; i++)
    if ((unsigned char)p[i] <= ' ' || p[i] == '?' || p[i] == '#' ||
        p[i] == 0x7f)
      return false;
  return true;
}

static bool valid_host(const char *h) {
  size_t i, n = strlen(h);
  if (n == 0 || n > 255) return false;
  for (i = 0; i < n; i++)
    if (!(isalnum((unsigned char)h[i]) || strchr("-.:[]_", h[i]) != NULL))
      return false;
  return true;
}

tt_admin *tt_admin_new(const tt_admin_opts *o, int *err, char *msg,
                       size_t msglen) {
  static const tt_admin_opts none = {0};
  tt_admin *a;
  const char *token;
  size_t i;
  if (o == NULL) o = &none;
  *err = TT_EINVAL;
  token = o->token;
  if (token == NULL) token = getenv("TETHER_ADMIN_TOKEN");
  if (token != NULL && token[0] == '\0' && o->token != NULL) {
    tt__set_msg(msg, msglen, "the token must not be empty");
    return NULL;
  }
  if (o->prefix != NULL && !valid_prefix(o->prefix)) {
    tt__set_msg(msg, msglen, "prefix '%s' must be \"\" or start with '/' and "
            "not end with one", o->prefix);
    return NULL;
  }
  if (o->nhosts > MAX_HOSTS) {
    tt__set_msg(msg, msglen, "at most %d hosts", MAX_HOSTS);
    return NULL;
  }
  for (i = 0; i < o->nhosts; i++)
    if (o->hosts[i] == NULL || !valid_host(o->hosts[i])) {
      tt__set_msg(msg, msglen, "host '%s' is not a host name or address",
              o->hosts[i] != NULL ? o->hosts[i] : "(null)");
      return NULL;
    }
  if (o->pools != NULL && o->npools > MAX_POOLS) {
    tt__set_msg(msg, msglen, "at most %d pools", MAX_POOLS);
    return NULL;
  }
  *err = TT_ENOMEM;
  tt__set_msg(msg, msglen, "not enough memory");
  a = calloc(1, sizeof *a);
  if (a == NULL) return NULL;
  tt_obj_init(&a->hdr, &tt_admin_type);
  a->name = tt__strdup(o->name != NULL ? o->name : "admin");
  a->prefix = tt__strdup(o->prefix != NULL ? o->prefix : "");
  if (a->name == NULL || a->prefix == NULL) goto fail;
  /* An empty TETHER_ADMIN_TOKEN is no token. */
  a->has_token = token != NULL && token[0] != '\0';
  if (a->has_token) tt__sha256(token, strlen(token), a->token);
  a->all_pools = o->pools == NULL;
  if (!a->all_pools && o->npools > 0) {
    a->pools = calloc(o->npools, sizeof *a->pools);
    if (a->pools == NULL) goto fail;
    for (i = 0; i < o->npools; i++) {
      if (o->pools[i] == NULL) continue;
      a->pools[a->npools++] = tt_ref(o->pools[i]);
    }
  }
  if (o->nhosts > 0) {
    a->hosts = calloc(o->nhosts, sizeof *a->hosts);
    if (a->hosts == NULL) goto fail;
    for (i = 0; i < o->nhosts; i++) {
      a->hosts[i] = tt__strdup(o->hosts[i]);
      if (a->hosts[i] == NULL) goto fail;
      a->nhosts++;
    }
  }
  (void)tt_admin_csp();
  *err = TT_OK;
  if (msg != NULL && msglen > 0) msg[0] = '\0';
  return a;
fail:
  tt_unref(a);
  return NULL;
}

bool tt_admin_readonly(tt_admin *a) { return !a->has_token; }

/* }==================================================================== */


/* {====================================================================
** Pools
** ===================================================================== */

static int pool_cmp(const void *x, const void *y) {
  uint64_t a = tt_pool_id(*(tt_pool *const *)x);
  uint64_t b = tt_pool_id(*(tt_pool *const *)y);
  return a < b ? -1 : a > b;
}

/* pools_get returns the pools shown, by id, each referenced (release
** with pools_put); NULL with '*n' 0 when there are none. */
static tt_pool **pools_get(tt_admin *a, size_t *n) {
  tt_pool **ps;
  size_t i, k;
  *n = 0;
  if (!a->all_pools) {
    if (a->npools == 0) return NULL;
    ps = malloc(a->npools * sizeof *ps);
    if (ps == NULL) return NULL;
    for (i = 0; i < a->npools; i++) ps[i] = tt_ref(a->pools[i]);
    k = a->npools;
  } else {
    /* Pools may come and go between the count and the copy. */
    size_t want = tt_exit_pools(NULL, 0);
    for (;;) {
      size_t cap = want + 8;
      if (cap > MAX_POOLS) cap = MAX_POOLS;
      ps = malloc(cap * sizeof *ps);
      if (ps == NULL) return NULL;
      want = tt_exit_pools(ps, cap);
      if (want <= cap || cap == MAX_POOLS) {
        k = want < cap ? want : cap;
        break;
      }
      for (i = 0; i < cap; i++) tt_unref(ps[i]);
      free(ps);
    }
    if (k == 0) {
      free(ps);
      return NULL;
    }
  }
  qsort(ps, k, sizeof *ps, pool_cmp);
  *n = k;
  return ps;
}

static void pools_put(tt_pool **ps, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) tt_unref(ps[i]);
  free(ps);
}

/* }==================================================================== */


/* {====================================================================
** JSON of /api/state
** ===================================================================== */

typedef struct query {
  long pool;                 /* -1: every pool */
  size_t offset, limit;      /* dead letters */
  size_t foffset, flimit;    /* recent failures */
  size_t ioffset, ilimit;    /* in-flight ops */
} query;

static bool authorized(tt_admin *a, tt_http_req *r, bool basic);

static void json_key(tt_buf *b, const char *k) {
  tt_buf_addc(b, '"');
  tt_buf_adds(b, k);
  tt_buf_adds(b, "\":");
}

static void json_u64(tt_buf *b, const char *k, uint64_t v) {
  json_key(b, k);
  tt_buf_addf(b, "%llu,", (unsigned long long)v);
}

static void json_num(tt_buf *b, const char *k, double v) {
  json_key(b, k);
  tt_buf_json_num(b, v);
  tt_buf_addc(b, ',');
}

static void json_bool(tt_buf *b, const char *k, bool v) {
  json_key(b, k);
  tt_buf_adds(b, v ? "true," : "false,");
}

static void json_strn(tt_buf *b, const char *k, const char *s, size_t n) {
  json_key(b, k);
  tt_buf_json_str(b, s, n);
  tt_buf_addc(b, ',');
}

static void json_str(tt_buf *b, const char *k, const char *s) {
  json_strn(b, k, s, s != NULL ? strlen(s) : 0);
}

/* json_text writes a string of at most 'max' bytes (a longer one is cut
** and ends in "..."; a cut inside a UTF-8 sequence becomes U+FFFD). */
static void json_text(tt_buf *b, const char *k, const char *s, size_t max) {
  size_t n;
  if (s == NULL) {
    json_str(b, k, NULL);
    return;
  }
  n = strlen(s);
  if (n <= max) {
    json_strn(b, k, s, n);
    return;
  }
  {
    tt_buf t = TT_BUF_INIT;
    tt_buf_add(&t, s, max);
    tt_buf_adds(&t, "...");
    json_strn(b, k, t.data != NULL ? t.data : "", t.len);
    tt_buf_free(&t);
  }
}

/* end_obj replaces a trailing comma with 'close'. */
static void end_obj(tt_buf *b, char close) {
  if (b->len > 0 && b->data[b->len - 1] == ',')
    b->data[b->len - 1] = close;
  else
    tt_buf_addc(b, close);
}

/* obj_text writes an error or cause object as text (null for NULL). */
static void obj_text(tt_buf *b, const char *k, tt_obj *o, size_t max) {
  char small[MAX_TEXT + 1];
  if (o == NULL) {
    json_str(b, k, NULL);
    return;
  }
  if (o->type == &tt_error_type) {
    json_text(b, k, ((tt_error *)o)->message, max);
    return;
  }
  tt_describe(o, small, sizeof small);
  json_text(b, k, small, max);
}

static void json_failure(tt_buf *b, const tt_failure *f) {
  tt_error *e = f->error != NULL && f->error->type == &tt_error_type
                    ? (tt_error *)f->error : NULL;
  tt_buf_addc(b, '{');
  json_u64(b, "id", f->id);
  json_str(b, "name", f->name);
  if (f->tenant != NULL)
    json_strn(b, "tenant", f->tenant, f->tenant_len);
  else
    json_str(b, "tenant", NULL);
  if (f->error != NULL)
    obj_text(b, "error", f->error, MAX_TEXT);
  else
    json_str(b, "error", tt_strerror(f->code));
  json_str(b, "code", tt_errname(f->code));
  obj_text(b, "cause", f->cause, MAX_TEXT);
  json_text(b, "traceback", e != NULL ? e->traceback : NULL, MAX_TRACE);
  json_u64(b, "attempt", (uint64_t)(f->attempts > 0 ? f->attempts : 0));
  json_num(b, "at", f->at);
  end_obj(b, '}');
}

/* json_page writes {"total":..,"offset":..,"limit":..,"items":[...]}. */
static void json_failures(tt_buf *b, const char *k, tt_failure *f, size_t n,
                          size_t total, size_t offset, size_t limit) {
  size_t i;
  json_key(b, k);
  tt_buf_addc(b, '{');
  json_u64(b, "total", total);
  json_u64(b, "offset", offset);
  json_u64(b, "limit", limit);
  json_key(b, "items");
  tt_buf_addc(b, '[');
  for (i = 0; i < n; i++) {
    if (i > 0) tt_buf_addc(b, ',');
    json_failure(b, &f[i]);
  }
  tt_buf_adds(b, "]},");
  tt_failures_free(f, n);
}

static void json_stats(tt_buf *b, const tt_pool_stats *s) {
  json_key(b, "stats");
  tt_buf_addc(b, '{');
  json_u64(b, "submitted", s->submitted);
  json_u64(b, "completed", s->completed);
  json_u64(b, "failed", s->failed);
  json_u64(b, "retried", s->retried);
  json_u64(b, "stopped", s->stopped);
  json_u64(b, "dead", s->dead);
  json_u64(b, "rejected", s->rejected);
  json_u64(b, "queued", s->queued);
  json_u64(b, "inflight", s->inflight);
  json_u64(b, "spilled", s->spilled);
  json_u64(b, "abandoned", s->abandoned);
  json_u64(b, "dead_held", s->dead_held);
  json_u64(b, "dead_dropped", s->dead_dropped);
  end_obj(b, '}');
  tt_buf_addc(b, ',');
}

static void json_inflight(tt_buf *b, tt_pool *p, const query *q,
                          double now, double wall) {
  size_t cap = (size_t)tt_pool_workers(p) + 1, total, i, n;
  tt_inflight *r;
  json_key(b, "inflight");
  tt_buf_addc(b, '{');
  if (cap > q->ioffset + q->ilimit) cap = q->ioffset + q->ilimit;
  r = cap > 0 ? calloc(cap, sizeof *r) : NULL;
  total = tt_pool_inflight(p, r, r != NULL ? cap : 0);
  n = total < cap ? total : cap;
  if (r == NULL) n = 0;
  json_u64(b, "total", total);
  json_u64(b, "offset", q->ioffset);
  json_u64(b, "limit", q->ilimit);
  json_key(b, "items");
  tt_buf_addc(b, '[');
  for (i = q->ioffset; i < n; i++) {
    double age = now - r[i].started;
    if (i > q->ioffset) tt_buf_addc(b, ',');
    tt_buf_addc(b, '{');
    json_u64(b, "id", r[i].id);
    json_str(b, "name", r[i].name);
    json_str(b, "tenant", r[i].tenant[0] != '\0' ? r[i].tenant : NULL);
    json_str(b, "class", r[i].priority);
    json_u64(b, "attempt", (uint64_t)(r[i].attempt > 0 ? r[i].attempt : 0));
    json_num(b, "age", age > 0 ? age : 0);
    json_num(b, "started_at", wall - (age > 0 ? age : 0));
    end_obj(b, '}');
  }
  tt_buf_adds(b, "]},");
  free(r);
}

static void json_tenants(tt_buf *b, tt_pool *p, bool quotas) {
  size_t n = 0, total = 0, i;
  tt_pool_tenant *t;
  json_key(b, "tenants");
  if (!quotas) {
    tt_buf_adds(b, "null,");
    return;
  }
  t = tt_pool_tenants(p, MAX_TENANTS, &n, &total);
  tt_buf_addc(b, '{');
  json_u64(b, "total", total);
  json_key(b, "items");
  tt_buf_addc(b, '[');
  for (i = 0; i < n; i++) {
    if (i > 0) tt_buf_addc(b, ',');
    tt_buf_addc(b, '{');
    json_strn(b, "tenant", t[i].name, t[i].len);
    json_u64(b, "active", (uint64_t)t[i].active);
    json_key(b, "limit");
    if (t[i].limit > 0)
      tt_buf_addf(b, "%d,", t[i].limit);
    else
      tt_buf_adds(b, "null,");
    end_obj(b, '}');
  }
  tt_buf_adds(b, "]},");
  tt_pool_tenants_free(t, n);
}

static void json_store(tt_buf *b, tt_pool *p) {
  tt_store *s = tt_pool_overflow(p);
  tt_store_stats st;
  json_key(b, "store");
  if (s == NULL) {
    tt_buf_adds(b, "null,");
    return;
  }
  tt_buf_addc(b, '{');
  json_str(b, "url", tt_store_url(s));
  if (tt_store_stats_get(s, tt_pool_name(p), &st) == TT_OK) {
    json_u64(b, "depth", st.depth);
    json_u64(b, "leased", st.leased);
    json_u64(b, "dead", st.dead);
    json_num(b, "oldest_age", st.oldest_age);
    json_str(b, "error", NULL);
  } else {
    char why[256];
    tt_store_error(why, sizeof why);
    json_str(b, "error", why);
  }
  end_obj(b, '}');
  tt_buf_addc(b, ',');
}

static void json_pool(tt_buf *b, tt_pool *p, const query *q, double now,
                      double wall) {
  tt_pool_class_info cls[64];
  tt_pool_info info;
  size_t ncls = tt_pool_snapshot(p, &info, cls, 64), i, n, total;
  int busy = 0, idle = 0, workers = 0;
  tt_failure *f;
  if (ncls > 64) ncls = 64;
  tt_buf_addc(b, '{');
  json_u64(b, "id", tt_pool_id(p));
  json_str(b, "name", tt_pool_name(p));
  json_str(b, "state", info.drained ? "drained"
                       : info.closed ? "draining" : "open");
  json_bool(b, "idle", info.idle);
  for (i = 0; i < ncls; i++) {
    workers += cls[i].workers;
    busy += cls[i].busy;
    idle += cls[i].idle;
  }
  json_key(b, "workers");
  tt_buf_addf(b, "{\"total\":%d,\"busy\":%d,\"idle\":%d},", workers, busy,
              idle);
  json_u64(b, "queue_capacity", (uint64_t)info.queue_cap);
  json_u64(b, "waiting", info.waiting);
  json_key(b, "classes");
  tt_buf_addc(b, '[');
  for (i = 0; i < ncls; i++) {
    if (i > 0) tt_buf_addc(b, ',');
    tt_buf_addc(b, '{');
    json_str(b, "name", cls[i].name);
    json_u64(b, "workers", (uint64_t)cls[i].workers);
    json_u64(b, "busy", (uint64_t)cls[i].busy);
    json_u64(b, "idle", (uint64_t)cls[i].idle);
    json_u64(b, "queued", cls[i].queued);
    json_bool(b, "lend", cls[i].lend);
    end_obj(b, '}');
  }
  tt_buf_adds(b, "],");
  json_key(b, "timeout");
  if (info.timeout > 0) {
    tt_buf_json_num(b, info.timeout);
    tt_buf_addc(b, ',');
  } else {
    tt_buf_adds(b, "null,");
  }
  json_u64(b, "dead_capacity", (uint64_t)info.dead_cap);
  json_u64(b, "failures_capacity", (uint64_t)info.failures_cap);
  json_stats(b, &info.stats);
  json_inflight(b, p, q, now, wall);
  f = tt_pool_failures_page(p, q->foffset, q->flimit, &n, &total);
  json_failures(b, "failures", f, n, total, q->foffset, q->flimit);
  f = tt_pool_dead_page(p, q->offset, q->limit, &n, &total);
  json_failures(b, "dead", f, n, total, q->offset, q->limit);
  json_tenants(b, p, info.quotas);
  json_store(b, p);
  end_obj(b, '}');
}

static void state_json(tt_admin *a, const query *q, bool authed,
                       tt_buf *b) {
  size_t n, i;
  tt_pool **ps = pools_get(a, &n);
  double now = tt_now(), wall = tt_wall();
  bool first = true;
  tt_buf_addc(b, '{');
  json_u64(b, "version", 1);
  json_num(b, "now", wall);
  json_u64(b, "pid", (uint64_t)getpid());
  json_str(b, "name", a->name);
  json_bool(b, "actions", a->has_token);
  json_bool(b, "authorized", authed);
  json_bool(b, "reads_need_token", a->served && a->public_bind);
  json_key(b, "pools");
  tt_buf_addc(b, '[');
  for (i = 0; i < n; i++) {
    if (q->pool >= 0 && tt_pool_id(ps[i]) != (uint64_t)q->pool) continue;
    if (!first) tt_buf_addc(b, ',');
    first = false;
    json_pool(b, ps[i], q, now, wall);
  }
  tt_buf_adds(b, "]}\n");
  pools_put(ps, n);
}

/* }==================================================================== */


/* {====================================================================
** Requests
** ===================================================================== */

/* respond sends a whole response with the headers every admin response
** carries. */
static void respond(tt_http_req *r, int status, const char *ctype,
                    const char *body, size_t len) {
  tt_http_res_status(r, status);
  tt_http_res_header(r, "Content-Security-Policy", tt_admin_csp());
  tt_http_res_header(r, "X-Content-Type-Options", "nosniff");
  tt_http_res_header(r, "X-Frame-Options", "DENY");
  tt_http_res_header(r, "Referrer-Policy", "no-referrer");
  tt_http_res_header(r, "Cache-Control", "no-store");
  tt_http_res_header(r, "Content-Type", ctype);
  (void)tt_http_res_send(r, body, len);
}

#define JSON_TYPE "application/json; charset=utf-8"

/* respond_error answers {"error": code, "message": msg}. */
static void respond_error(tt_http_req *r, int status, const char *code,
                          const char *message) {
  tt_buf b = TT_BUF_INIT;
  tt_buf_addc(&b, '{');
  json_str(&b, "error", code);
  json_str(&b, "message", message);
  end_obj(&b, '}');
  tt_buf_addc(&b, '\n');
  if (b.failed) {
    respond(r, 500, "text/plain; charset=utf-8", "out of memory\n", 14);
  } else {
    respond(r, status, JSON_TYPE, b.data, b.len);
  }
  tt_buf_free(&b);
}

static bool loopback_host(const char *h, size_t n) {
  if (n == 9 && strncasecmp(h, "localhost", 9) == 0) return true;
  if (n == 5 && memcmp(h, "[::1]", 5) == 0) return true;
  if (n == 3 && memcmp(h, "::1", 3) == 0) return true;
  if (n >= 4 && memcmp(h, "127.", 4) == 0) return true;
  if (n >= 11 && memcmp(h, "::ffff:127.", 11) == 0) return true;
  return false;
}

/* host_part splits "host:port" (or "[v6]:port") and returns the host's
** length; '*port' points at the port (NULL without one). */
static size_t host_part(const char *h, const char **port) {
  const char *c;
  *port = NULL;
  if (h[0] == '[') {
    c = strchr(h, ']');
    if (c == NULL) return strlen(h);
    if (c[1] == ':') *port = c + 2;
    return (size_t)(c - h) + 1;
  }
  c = strrchr(h, ':');
  if (c == NULL) return strlen(h);
  *port = c + 1;
  return (size_t)(c - h);
}

/* remote_loopback: the client connects from this machine. */
static bool remote_loopback(tt_http_req *r) {
  const char *port, *rem = tt_http_req_remote(r);
  size_t n;
  if (rem == NULL) return false;
  n = host_part(rem, &port);
  return loopback_host(rem, n);
}

/* host_ok checks the Host header (DNS rebinding). */
static bool host_ok(tt_admin *a, const char *h) {
  const char *port, *bport;
  size_t n, i, bn;
  if (h == NULL || h[0] == '\0') return false;
  n = host_part(h, &port);
  for (i = 0; i < a->nhosts; i++) {
    /* An entry with a port names one address, one without any port. */
    const char *e = a->hosts[i], *eport;
    size_t en = host_part(e, &eport);
    if (strcasecmp(h, e) == 0) return true;
    if (eport == NULL && en == n && strncasecmp(h, e, n) == 0) return true;
  }
  if (!a->served) return loopback_host(h, n);
  if (a->wildcard) return true;
  if (strcasecmp(h, a->bound) == 0) return true;
  /* localhost, with the bound port. */
  bn = host_part(a->bound, &bport);
  (void)bn;
  return n == 9 && strncasecmp(h, "localhost", 9) == 0 && port != NULL &&
         bport != NULL && strcmp(port, bport) == 0;
}

/* token_eq compares a candidate with the token in constant time: both
** are hashed, and every byte of the digests is looked at. */
static bool token_eq(tt_admin *a, const char *s, size_t n) {
  unsigned char d[32];
  unsigned diff = 0;
  size_t i;
  if (!a->has_token) return false;
  tt__sha256(s, n, d);
  for (i = 0; i < sizeof d; i++) diff |= (unsigned)(d[i] ^ a->token[i]);
  return diff == 0;
}

enum { AUTH_NONE, AUTH_BEARER, AUTH_BASIC };

/* authorized tells whether the request carries the token: as "Bearer
** TOKEN", or (with 'basic') as the password of "Basic". */
static bool authorized(tt_admin *a, tt_http_req *r, bool basic) {
  const char *h = tt_http_req_header(r, "authorization");
  size_t n;
  if (h == NULL || !a->has_token) return false;
  while (*h == ' ') h++;
  if (strncasecmp(h, "Bearer ", 7) == 0) {
    h += 7;
    while (*h == ' ') h++;
    n = strlen(h);
    while (n > 0 && h[n - 1] == ' ') n--;
    return token_eq(a, h, n);
  }
  if (basic && strncasecmp(h, "Basic ", 6) == 0) {
    char dec[512];
    long len;
    const char *colon;
    bool ok;
    h += 6;
    while (*h == ' ') h++;
    n = strlen(h);
    while (n > 0 && h[n - 1] == ' ') n--;
    len = tt__unbase64(h, n, dec, sizeof dec - 1);
    if (len < 0) return false;
    dec[len] = '\0';
    colon = memchr(dec, ':', (size_t)len);
    if (colon == NULL) return false;
    ok = token_eq(a, colon + 1, (size_t)(dec + len - colon - 1));
    memset(dec, 0, sizeof dec);
    return ok;
  }
  return false;
}

/* foreign_origin: a browser says the request comes from a page of
** another origin than the one the Host header names. */
static bool foreign_origin(tt_http_req *r) {
  const char *o = tt_http_req_header(r, "origin");
  const char *site = tt_http_req_header(r, "sec-fetch-site");
  const char *host = tt_http_req_header(r, "host");
  const char *rest;
  if (site != NULL && strcmp(site, "same-origin") != 0 &&
      strcmp(site, "none") != 0)
    return true;
  if (o == NULL) return false;
  if (host == NULL) return true;
  if (strncmp(o, "http://", 7) == 0)
    rest = o + 7;
  else if (strncmp(o, "https://", 8) == 0)
    rest = o + 8;
  else
    return true;   /* "null" and anything else */
  return strcasecmp(rest, host) != 0;
}

/* parse_u64 reads a whole decimal number (no sign, at most 18 digits). */
static bool parse_u64(const char *s, size_t n, uint64_t *out) {
  uint64_t v = 0;
  size_t i;
  if (n == 0 || n > 18) return false;
  for (i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  *out = v;
  return true;
}

/* read_query reads the query of /api/state; false with 'bad' naming the
** argument that is not a number in range. */
static bool read_query(tt_http_req *r, query *q, const char **bad) {
  size_t n, i;
  const tt_http_pair *p = tt_http_req_query(r, &n);
  q->pool = -1;
  q->offset = q->foffset = q->ioffset = 0;
  q->limit = DEF_DEAD;
  q->flimit = DEF_FAILURES;
  q->ilimit = DEF_INFLIGHT;
  for (i = 0; i < n; i++) {
    static const char *const names[] = {
      "pool", "offset", "limit", "failures_offset", "failures_limit",
      "inflight_offset", "inflight_limit", NULL
    };
    uint64_t v;
    int k;
    for (k = 0; names[k] != NULL; k++)
      if (strcmp(p[i].name, names[k]) == 0) break;
    if (names[k] == NULL) continue;   /* unknown arguments are ignored */
    if (p[i].value == NULL ||
        !parse_u64(p[i].value, strlen(p[i].value), &v) ||
        (k != 0 && k % 2 == 0 && v > MAX_LIMIT) || v > 1000000000) {
      *bad = names[k];
      return false;
    }
    switch (k) {
      case 0: q->pool = (long)v; break;
      case 1: q->offset = (size_t)v; break;
      case 2: q->limit = (size_t)v; break;
      case 3: q->foffset = (size_t)v; break;
      case 4: q->flimit = (size_t)v; break;
      case 5: q->ioffset = (size_t)v; break;
      default: q->ilimit = (size_t)v; break;
    }
  }
  return true;
}

static void serve_state(tt_admin *a, tt_http_req *r) {
  query q;
  const char *bad = NULL;
  tt_buf b = TT_BUF_INIT;
  char msg[96];
  if (!read_query(r, &q, &bad)) {
    snprintf(msg, sizeof msg, "'%s' must be a whole number (limits: 0..%d)",
             bad, MAX_LIMIT);
    respond_error(r, 400, "bad_query", msg);
    return;
  }
  state_json(a, &q, authorized(a, r, true), &b);
  if (b.failed)
    respond_error(r, 500, "no_memory", "not enough memory");
  else
    respond(r, 200, JSON_TYPE, b.data, b.len);
  tt_buf_free(&b);
}

static void serve_metrics(tt_http_req *r) {
  tt_buf b = TT_BUF_INIT;
  tt_metrics_text(&b);
  if (b.failed)
    respond_error(r, 500, "no_memory", "not enough memory");
  else
    respond(r, 200, "text/plain; version=0.0.4; charset=utf-8",
            b.data != NULL ? b.data : "", b.len);
  tt_buf_free(&b);
}

/* An action as the audit line tells it. */
typedef struct action {
  const char *what;          /* "retry", "drop", "drain" */
  uint64_t pool_id;
  uint64_t dead_id;          /* 0 for drain */
  tt_pool *pool;             /* NULL until found */
  uint64_t new_id;           /* the retried op's id */
} action;

static void audit(tt_admin *a, tt_http_req *r, const action *ac,
                  int status, const char *result) {
  tt_field f[] = {
    TT_FSTR("admin", a->name),
    TT_FSTR("action", ac->what),
    TT_FINT("pool_id", ac->pool_id),
    TT_FSTR("pool", ac->pool != NULL ? tt_pool_name(ac->pool) : NULL),
    TT_FINT("dead_id", ac->dead_id),
    TT_FINT("op_id", ac->new_id),
    TT_FINT("status", status),
    TT_FSTR("result", result),
    TT_FSTR("remote", tt_http_req_remote(r)),
    TT_FSTR("request_id", tt_http_req_id(r)),
  };
  size_t n = sizeof f / sizeof f[0];
  if (ac->dead_id == 0) f[4] = (tt_field)TT_FSTR("dead_id", NULL);
  if (ac->new_id == 0) f[5] = (tt_field)TT_FSTR("op_id", NULL);
  tt_log(status < 300 ? TT_LOG_INFO : TT_LOG_WARN,
         status < 300 ? "admin action" : "admin action refused", f, n);
}

/* refuse_action answers an action that is not done, and audits it. */
static void refuse_action(tt_admin *a, tt_http_req *r, const action *ac,
                          int status, const char *code, const char *msg) {
  audit(a, r, ac, status, code);
  if (status == 401)
    tt_http_res_header(r, "WWW-Authenticate",
                       "Bearer realm=\"tether admin\"");
  respond_error(r, status, code, msg);
}

/* parse_action reads "/api/pools/ID/dead/DID/retry|drop" and
** "/api/pools/ID/drain" into 'ac'. */
static bool parse_action(const char *path, action *ac) {
  const char *p = path + 11, *e;   /* after "/api/pools/" */
  memset(ac, 0, sizeof *ac);
  e = strchr(p, '/');
  if (e == NULL || !parse_u64(p, (size_t)(e - p), &ac->pool_id)) return false;
  p = e;
  if (strcmp(p, "/drain") == 0) {
    ac->what = "drain";
    return true;
  }
  if (strncmp(p, "/dead/", 6) != 0) return false;
  p += 6;
  e = strchr(p, '/');
  if (e == NULL || !parse_u64(p, (size_t)(e - p), &ac->dead_id)) return false;
  if (strcmp(e, "/retry") == 0)
    ac->what = "retry";
  else if (strcmp(e, "/drop") == 0)
    ac->what = "drop";
  else
    return false;
  return true;
}

static void serve_action(tt_admin *a, tt_http_req *r, action *ac) {
  tt_pool **ps;
  size_t n, i;
  tt_buf b = TT_BUF_INIT;
  int status = 200;
  /* The pool first, so that every audit line names it. */
  ps = pools_get(a, &n);
  for (i = 0; i < n; i++)
    if (tt_pool_id(ps[i]) == ac->pool_id) ac->pool = ps[i];
  /* A page of another origin never acts, token or not. */
  if (foreign_origin(r)) {
    refuse_action(a, r, ac, 403, "foreign_origin",
                  "actions are refused from another origin");
    pools_put(ps, n);
    return;
  }
  if (!a->has_token) {
    refuse_action(a, r, ac, 403, "read_only",
                  "no token is configured: the admin is read-only (set "
                  "TETHER_ADMIN_TOKEN)");
    pools_put(ps, n);
    return;
  }
  if (!authorized(a, r, false)) {
    refuse_action(a, r, ac, 401, "unauthorized",
                  "actions need 'Authorization: Bearer <token>'");
    pools_put(ps, n);
    return;
  }
  if (ac->pool == NULL) {
    refuse_action(a, r, ac, 404, "no_pool", "no such pool");
    pools_put(ps, n);
    return;
  }
  if (strcmp(ac->what, "drain") == 0) {
    tt_pool_close(ac->pool);
  } else if (strcmp(ac->what, "drop") == 0) {
    if (!tt_pool_drop_dead(ac->pool, ac->dead_id)) {
      refuse_action(a, r, ac, 404, "no_dead_letter", "no such dead letter");
      pools_put(ps, n);
      return;
    }
  } else {
    int err = TT_OK;
    tt_handle *h = tt_pool_retry_dead(ac->pool, ac->dead_id, &err);
    if (h == NULL) {
      if (err == TT_EINVAL)
        refuse_action(a, r, ac, 404, "no_dead_letter",
                      "no such dead letter");
      else
        refuse_action(a, r, ac, 409, tt_errname(err), tt_strerror(err));
      pools_put(ps, n);
      return;
    }
    ac->new_id = tt_pool_op_id(h);
    tt_unref(h);
  }
  audit(a, r, ac, status, "ok");
  tt_buf_addc(&b, '{');
  json_bool(&b, "ok", true);
  json_str(&b, "action", ac->what);
  json_u64(&b, "pool", ac->pool_id);
  if (ac->dead_id != 0) json_u64(&b, "dead", ac->dead_id);
  if (ac->new_id != 0) json_u64(&b, "op", ac->new_id);
  end_obj(&b, '}');
  tt_buf_addc(&b, '\n');
  respond(r, status, JSON_TYPE, b.data != NULL ? b.data : "{}", b.len);
  tt_buf_free(&b);
  pools_put(ps, n);
}

bool tt_admin_handle(tt_admin *a, tt_ctx *ctx, tt_http_req *r) {
  const char *path = tt_http_req_path(r), *method = tt_http_req_method(r);
  size_t plen = strlen(a->prefix);
  bool get, public_client;
  (void)ctx;
  if (plen > 0) {
    if (strncmp(path, a->prefix, plen) != 0 ||
        (path[plen] != '\0' && path[plen] != '/'))
      return false;
    path += plen;
  }
  if (a->served && !atomic_load_explicit(&a->ready, memory_order_acquire)) {
    respond_error(r, 503, "starting", "the admin server is starting");
    return true;
  }
  if (!host_ok(a, tt_http_req_header(r, "host"))) {
    respond_error(r, 421, "misdirected",
                  "the Host header names neither this server's address "
                  "nor localhost");
    return true;
  }
  if (path[0] == '\0') {
    /* "/admin" -> "/admin/": the page's links are relative. */
    tt_buf b = TT_BUF_INIT;
    tt_buf_adds(&b, a->prefix);
    tt_buf_addc(&b, '/');
    tt_http_res_header(r, "Location", b.data != NULL ? b.data : "/");
    tt_buf_free(&b);
    respond(r, 308, "text/plain; charset=utf-8", "", 0);
    return true;
  }
  get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
  public_client = a->served ? a->public_bind : !remote_loopback(r);
  if (strncmp(path, "/api/pools/", 11) == 0) {
    action ac;
    if (!parse_action(path, &ac)) {
      respond_error(r, 404, "not_found", "no such action");
      return true;
    }
    if (strcmp(method, "POST") != 0) {
      tt_http_res_header(r, "Allow", "POST");
      respond_error(r, 405, "method_not_allowed", "actions are POSTs");
      return true;
    }
    serve_action(a, r, &ac);
    return true;
  }
  if (strcmp(path, "/") != 0 && strcmp(path, "/api/state") != 0 &&
      strcmp(path, "/metrics") != 0) {
    respond_error(r, 404, "not_found", "not found");
    return true;
  }
  if (!get) {
    tt_http_res_header(r, "Allow", "GET, HEAD");
    respond_error(r, 405, "method_not_allowed", "use GET");
    return true;
  }
  if (public_client && !authorized(a, r, true)) {
    /* Off loopback, reads need the token too; the page's own request
    ** gets the browser's prompt (any user name, the token as the
    ** password). */
    tt_http_res_header(r, "WWW-Authenticate",
                       strcmp(path, "/") == 0
                           ? "Basic realm=\"tether admin\", charset=\"UTF-8\""
                           : "Bearer realm=\"tether admin\"");
    respond_error(r, 401, "unauthorized",
                  "off loopback, every route needs the token");
    return true;
  }
  if (strcmp(path, "/") == 0)
    respond(r, 200, "text/html; charset=utf-8", tt__admin_page,
            tt__admin_page_len);
  else if (strcmp(path, "/api/state") == 0)
    serve_state(a, r);
  else
    serve_metrics(r);
  return true;
}

/* }==================================================================== */


/* {====================================================================
** An admin server of its own
** ===================================================================== */

static int serve_handler(tt_ctx *ctx, tt_http_req *req, void *ud,
                         tt_obj **err) {
  (void)err;
  if (!tt_admin_handle(ud, ctx, req))
    respond_error(req, 404, "not_found", "not found");
  return TT_OK;
}

static void serve_drop(void *ud) { tt_unref(ud); }

/* classify tells whether "HOST:PORT" is a loopback or wildcard address
** (as http.c reads it: an empty host and "localhost" are loopback). */
static void classify(const char *addr, bool *loopback, bool *wildcard) {
  const char *port;
  size_t n = host_part(addr, &port);
  *loopback = n == 0 || loopback_host(addr, n);
  *wildcard = (n == 7 && memcmp(addr, "0.0.0.0", 7) == 0) ||
              (n == 4 && memcmp(addr, "[::]", 4) == 0);
}

tt_http_server *tt_admin_serve(const tt_admin_serve_opts *o, int *err,
                               char *msg, size_t msglen) {
  tt_admin *a;
  tt_pool *pool;
  tt_pool_opts po;
  tt_http_opts ho;
  tt_http_server *s;
  const char *addr = o->addr != NULL ? o->addr : "127.0.0.1:0";
  bool loopback, wildcard;
  if (o->workers < 0 || o->workers > 64) {
    *err = TT_EINVAL;
    tt__set_msg(msg, msglen, "workers must be 1..64");
    return NULL;
  }
  {
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon[1] == '\0' ||
        strspn(colon + 1, "0123456789") != strlen(colon + 1)) {
      *err = TT_EINVAL;
      tt__set_msg(msg, msglen, "addr '%s' must be HOST:PORT", addr);
      return NULL;
    }
  }
  a = tt_admin_new(&o->admin, err, msg, msglen);
  if (a == NULL) return NULL;
  classify(addr, &loopback, &wildcard);
  if (!loopback && !a->has_token) {
    *err = TT_EINVAL;
    tt__set_msg(msg, msglen, "binding %s (not loopback) needs a token (the "
            "token option or TETHER_ADMIN_TOKEN)", addr);
    tt_unref(a);
    return NULL;
  }
  a->served = true;
  a->public_bind = !loopback;
  a->wildcard = wildcard;
  memset(&po, 0, sizeof po);
  po.name = a->name;
  po.workers = o->workers > 0 ? o->workers : DEF_WORKERS;
  po.queue = DEF_QUEUE;
  po.dead_cap = -1;
  po.failures_cap = -1;
  pool = tt_pool_new(&po, err);
  if (pool == NULL) {
    tt__set_msg(msg, msglen, "cannot make the admin's pool: %s",
            tt_strerror(*err));
    tt_unref(a);
    return NULL;
  }
  memset(&ho, 0, sizeof ho);
  ho.name = a->name;
  ho.addr = addr;
  ho.pool = pool;
  ho.handler = serve_handler;
  ho.ud = a;
  ho.ud_drop = serve_drop;
  ho.max_inflight = DEF_QUEUE;
  ho.request_timeout = 30;
  ho.shutdown = o->shutdown;
  ho.tls_cert = o->tls_cert;
  ho.tls_key = o->tls_key;
  s = tt_http_new(&ho, err, msg, msglen);
  tt_unref(pool);
  if (s == NULL) {
    tt_unref(a);
    return NULL;
  }
  snprintf(a->bound, sizeof a->bound, "%s", tt_http_addr(s));
  atomic_store_explicit(&a->ready, true, memory_order_release);
  return s;
}

/* }==================================================================== */
