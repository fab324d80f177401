/*
** store.c -- durable stores: URLs, the store object, and the thread that
** does each store's I/O (tether.h, "Durable stores").
**
** DESIGN.
**
** Thread.  Every store has one thread, started by tt_store_open, that
** owns the backend's connection: it opens it, runs every request against
** it, and closes it.  Callers never touch the connection: they queue a
** request and either return at once (puts, async acks and dead letters)
** or wait for it on 'done_cv' (claims, stats, listings).  The thread is
** started with every signal blocked (tt__thread_start), so a write to a
** socket whose peer went away fails with EPIPE on this thread and never
** raises SIGPIPE in the process; the pending signal is then consumed
** (sigtimedwait), so that it does not linger.
**
** Group commit.  The thread takes every request queued so far in one
** go; all the puts among them are written in one commit (one fsync for
** SQLite, one pipelined round trip for Redis), then the other requests
** run in their order.  A put's callback runs once the batch committed:
** on this thread for a small batch, on the executor for a large one, so
** that resolving the spills of one batch overlaps the next commit.
** Producers never wait for a commit: while one batch commits, the next
** one gathers, so the batch grows with the load and the cost of an fsync
** is shared by every spill that arrived during the previous one.
**
** Locks.  'mu' guards the queue, 'closing' and the 'done' flags of
** requests; it is a leaf: nothing else is taken under it, and callbacks
** run without it.  It may be taken under a pool's 'mu' (the drainer's
** end hook queues acks from there), never the reverse.  Condition waits:
** the thread waits on 'cv' for work, callers on 'done_cv' for their
** requests, both under 'mu'.
*/
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

#define DEF_MAX_PAYLOAD ((size_t)1 << 20)
#define DEF_MAX_DELIVERIES 5
#define DEF_LEASE 30.0
#define DEF_TIMEOUT 5.0
#define IDLE_AFTER 1.0          /* seconds without work before 'idle' */
#define ERRLEN 256

enum {
  R_PUT, R_CLAIM, R_ACK, R_BURY, R_RENEW, R_STATS, R_DEAD_LIST,
  R_DEAD_RETRY, R_DEAD_DROP, R_SYNC, R_STATS_POOLS
};

/* A request to the store's thread.  Sync requests live on the caller's
** stack; async ones (puts, acks, dead letters) are malloc'd with their
** strings and freed by the thread. */
typedef struct sreq {
  tt_list link;
  int kind;
  bool async;
  bool done;               /* under 'mu' */
  int rc;
  char err[ERRLEN];
  /* R_PUT */
  char *pool;
  void *rec;
  size_t len;
  double deadline;
  tt_store_done cb;
  void *ud;
  /* queries */
  const char *qpool, *qid, *reason;
  int max;
  const tt__idref *ids;
  size_t nids;
  tt__idref one;           /* for async acks and dead letters */
  tt_claim *claims;
  tt_store_dead *dead;
  size_t n;
  tt_store_stats *stats;
  tt_store_pool_stats *pstats;  /* R_STATS_POOLS: 'n' of them */
} sreq;

struct tt_store {
  tt_obj hdr;
  /* Internal references: one for the users' share (dropped when the
  ** last tt_unref closes the store) and one for the thread while it
  ** runs, so that a last tt_unref made by a callback on the store's own
  ** thread cannot free the memory under it. */
  _Atomic int irefs;
  const tt__store_backend *be_vt;
  void *be;                /* the backend's state; the thread's only */
  tt__store_cfg cfg;
  pthread_t t;
  bool started;            /* the thread exists (to join) */
  pthread_mutex_t mu;
  pthread_cond_t cv, done_cv;
  tt_list q;               /* of sreq; under 'mu' */
  bool closing;            /* no new requests; under 'mu' */
  bool opened;             /* the open finished; under 'mu' */
  int open_rc;             /* its result */
  /* What this process did with the store (tt_store_counters_get). */
  _Atomic uint64_t n_written, n_claimed, n_acked, n_buried;
};

static _Thread_local char tl_err[ERRLEN];

void tt_store_error(char *buf, size_t n) {
  if (n > 0) snprintf(buf, n, "%s", tl_err);
}

static void set_tl_err(const char *msg) {
  snprintf(tl_err, sizeof tl_err, "%s", msg != NULL ? msg : "");
}

int tt__store_fail(tt__store_cfg *cfg, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cfg->err, sizeof cfg->err, fmt, ap);
  va_end(ap);
  return TT_ESTORE;
}

bool tt__claim_set(tt_claim *c, const char *id, const char *pool,
                   size_t plen, const void *rec, size_t len, int deliveries) {
  memset(c, 0, sizeof *c);
  snprintf(c->id, sizeof c->id, "%s", id);
  c->pool = malloc(plen + 1);
  c->rec = malloc(len > 0 ? len : 1);
  if (c->pool == NULL || c->rec == NULL) {
    free(c->pool);
    free(c->rec);
    c->pool = NULL;
    c->rec = NULL;
    return false;
  }
  memcpy(c->pool, pool, plen);
  c->pool[plen] = '\0';
  if (len > 0) memcpy(c->rec, rec, len);
  c->len = len;
  c->deliveries = deliveries;
  return true;
}

bool tt__dead_set(tt_store_dead *d, const char *id, const char *origin,
                  const char *pool, const char *reason, double at,
                  int deliveries, const void *rec, size_t len) {
  memset(d, 0, sizeof *d);
  snprintf(d->id, sizeof d->id, "%s", id);
  snprintf(d->origin, sizeof d->origin, "%s", origin != NULL ? origin : id);
  d->pool = tt__strdup(pool != NULL ? pool : "");
  d->reason = tt__strdup(reason != NULL ? reason : "");
  d->rec = malloc(len > 0 ? len : 1);
  if (d->pool == NULL || d->reason == NULL || d->rec == NULL) {
    free(d->pool);
    free(d->reason);
    free(d->rec);
    memset(d, 0, sizeof *d);
    return false;
  }
  if (len > 0) memcpy(d->rec, rec, len);
  d->len = len;
  d->at = at;
  d->deliveries = deliveries;
  return true;
}

void tt_claims_free(tt_claim *c, size_t n) {
  size_t i;
  if (c == NULL) return;
  for (i = 0; i < n; i++) {
    free(c[i].pool);
    free(c[i].rec);
  }
  free(c);
}

void tt_store_dead_free(tt_store_dead *d, size_t n) {
  size_t i;
  if (d == NULL) return;
  for (i = 0; i < n; i++) {
    free(d[i].pool);
    free(d[i].reason);
    free(d[i].rec);
  }
  free(d);
}


/* {====================================================================
** URLs
** ===================================================================== */

static int url_error(char *msg, size_t n, const char *why) {
  /* The URL itself is never repeated: it may hold a password. */
  if (n > 0) snprintf(msg, n, "malformed store URL: %s", why);
  return TT_EINVAL;
}

/* pct_decode decodes %XX escapes of 'n' bytes of 's' into a new string;
** NULL on a bad escape or no memory. */
static char *pct_decode(const char *s, size_t n) {
  char *d = malloc(n + 1), *o = d;
  size_t i;
  if (d == NULL) return NULL;
  for (i = 0; i < n; i++) {
    if (s[i] == '%') {
      unsigned v;
      if (i + 2 >= n || !isxdigit((unsigned char)s[i + 1]) ||
          !isxdigit((unsigned char)s[i + 2]) ||
          sscanf(s + i + 1, "%2x", &v) != 1) {
        free(d);
        return NULL;
      }
      *o++ = (char)v;
      i += 2;
    } else {
      *o++ = s[i];
    }
  }
  *o = '\0';
  return d;
}

static char *dupn(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d == NULL) return NULL;
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

static bool all_digits(const char *s, size_t n) {
  size_t i;
  if (n == 0 || n > 9) return false;
  for (i = 0; i < n; i++)
    if (!isdigit((unsigned char)s[i])) return false;
  return true;
}

static bool name_ok(const char *s, size_t n) {
  size_t i;
  if (n == 0 || n > 64) return false;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!isalnum(c) && c != '_' && c != '-' && c != '.') return false;
  }
  return true;
}

static int parse_sqlite(const char *rest, tt__store_cfg *c, char *msg,
                        size_t n) {
  char buf[4200];
  if (strncmp(rest, "//", 2) == 0) rest += 2;
  if (*rest == '\0') return url_error(msg, n, "sqlite: needs a path");
  if (strlen(rest) > 4096) return url_error(msg, n, "path too long");
  c->path = tt__strdup(rest);
  snprintf(buf, sizeof buf, "sqlite:%s", rest);
  c->url = tt__strdup(buf);
  return c->path != NULL && c->url != NULL ? TT_OK : TT_ENOMEM;
}

static int parse_redis(const char *rest, tt__store_cfg *c, char *msg,
                       size_t n) {
  const char *end = rest + strlen(rest), *auth_end, *host, *hend, *p;
  const char *q = strchr(rest, '?');
  const char *slash;
  char buf[512];
  c->port = 6379;
  c->db = 0;
  if (q == NULL) q = end;
  slash = memchr(rest, '/', (size_t)(q - rest));
  if (slash == NULL) slash = q;
  /* Userinfo: up to the last '@' of the authority. */
  auth_end = NULL;
  for (p = rest; p < slash; p++)
    if (*p == '@') auth_end = p;
  host = rest;
  if (auth_end != NULL) {
    const char *colon = memchr(rest, ':', (size_t)(auth_end - rest));
    if (colon == NULL)
      return url_error(msg, n, "userinfo must be ':PASSWORD@' or "
                       "'USER:PASSWORD@'");
    if (colon > rest) {
      c->user = pct_decode(rest, (size_t)(colon - rest));
      if (c->user == NULL) return url_error(msg, n, "bad %-escape");
    }
    c->password = pct_decode(colon + 1, (size_t)(auth_end - colon - 1));
    if (c->password == NULL) return url_error(msg, n, "bad %-escape");
    host = auth_end + 1;
  }
  if (host < slash && *host == '[') {
    hend = memchr(host, ']', (size_t)(slash - host));
    if (hend == NULL) return url_error(msg, n, "unclosed '[' in host");
    c->host = dupn(host + 1, (size_t)(hend - host - 1));
    p = hend + 1;
  } else {
    hend = memchr(host, ':', (size_t)(slash - host));
    if (hend == NULL) hend = slash;
    c->host = dupn(host, (size_t)(hend - host));
    p = hend;
  }
  if (c->host == NULL) return TT_ENOMEM;
  if (c->host[0] == '\0') return url_error(msg, n, "redis URL needs a host");
  if (strpbrk(c->host, " \t\r\n/@?#") != NULL)
    return url_error(msg, n, "bad character in host");
  if (p < slash) {
    if (*p != ':' || !all_digits(p + 1, (size_t)(slash - p - 1)))
      return url_error(msg, n, "port must be a number");
    c->port = atoi(p + 1);
    if (c->port < 1 || c->port > 65535)
      return url_error(msg, n, "port out of range");
  }
  if (slash < q) {
    if (slash + 1 < q) {
      if (!all_digits(slash + 1, (size_t)(q - slash - 1)))
        return url_error(msg, n, "database must be a number");
      c->db = atoi(slash + 1);
    }
  }
  if (q < end) {
    p = q + 1;
    while (p < end) {
      const char *amp = memchr(p, '&', (size_t)(end - p));
      const char *eq;
      if (amp == NULL) amp = end;
      eq = memchr(p, '=', (size_t)(amp - p));
      if (eq == NULL || (size_t)(eq - p) != 6 || memcmp(p, "prefix", 6))
        return url_error(msg, n, "the only query parameter is 'prefix'");
      if (!name_ok(eq + 1, (size_t)(amp - eq - 1)))
        return url_error(msg, n, "prefix must be 1-64 letters, digits, "
                         "'_', '-' or '.'");
      free(c->prefix);
      c->prefix = dupn(eq + 1, (size_t)(amp - eq - 1));
      if (c->prefix == NULL) return TT_ENOMEM;
      p = amp + 1;
    }
  }
  if (c->prefix == NULL && (c->prefix = tt__strdup("tether")) == NULL)
    return TT_ENOMEM;
  snprintf(buf, sizeof buf, "redis://%s%s%s:%d/%d?prefix=%s",
           strchr(c->host, ':') ? "[" : "", c->host,
           strchr(c->host, ':') ? "]" : "", c->port, c->db, c->prefix);
  c->url = tt__strdup(buf);
  return c->url != NULL ? TT_OK : TT_ENOMEM;
}

static void cfg_free(tt__store_cfg *c) {
  free(c->url);
  free(c->path);
  free(c->host);
  free(c->user);
  if (c->password != NULL) {
    /* Do not leave the password in freed memory. */
    volatile char *v = c->password;
    while (*v) *v++ = 0;
    free(c->password);
  }
  free(c->prefix);
}

/* }==================================================================== */


static void store_release(tt_store *s);

/* {====================================================================
** The store's thread
** ===================================================================== */

/* drop_sigpipe consumes a SIGPIPE left pending on this thread by a write
** to a closed socket (it is blocked here, so it was never delivered). */
static void drop_sigpipe(void) {
  sigset_t set;
  struct timespec zero = {0, 0};
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  while (sigtimedwait(&set, NULL, &zero) == SIGPIPE) {
  }
}

static void req_free(sreq *r) {
  free(r->pool);
  free(r->rec);
  free(r);
}

/* A batch of answered puts whose callbacks run on the executor. */
typedef struct cbjob {
  size_t n;
  sreq *r[];
} cbjob;

static void run_callbacks(void *arg) {
  cbjob *j = arg;
  size_t i;
  for (i = 0; i < j->n; i++) {
    j->r[i]->cb(j->r[i]->ud, j->r[i]->rc, j->r[i]->err);
    req_free(j->r[i]);
  }
  free(j);
}

/* CB_OFFLOAD is the batch size from which the callbacks of a batch run on
** the executor while this thread goes on to the next commit: each
** callback takes its pool's lock and resolves a handle, work that would
** otherwise serialize with the writes. */
#define CB_OFFLOAD 32

/* run_puts writes the batch's puts in one commit and calls back. */
static void run_puts(tt_store *s, sreq **puts, size_t n) {
  tt__put *pv;
  size_t i, k = 0;
  double now = tt_now();
  int rc = TT_OK;
  const char *why = NULL;
  pv = calloc(n > 0 ? n : 1, sizeof *pv);
  for (i = 0; i < n; i++) {
    sreq *r = puts[i];
    if (r->deadline >= 0 && now >= r->deadline) {
      r->rc = TT_ESTORE;
      snprintf(r->err, sizeof r->err, "the store did not write the op "
               "in time (its thread was busy)");
      continue;
    }
    r->rc = -1;  /* in this batch */
    if (pv != NULL) {
      pv[k].pool = r->pool;
      pv[k].rec = r->rec;
      pv[k].len = r->len;
      k++;
    }
  }
  if (pv == NULL) {
    rc = TT_ENOMEM;
    why = "not enough memory";
  } else if (k > 0) {
    s->cfg.err[0] = '\0';
    rc = s->be_vt->put(s->be, pv, k);
    why = s->cfg.err;
    drop_sigpipe();
  }
  if (rc == TT_OK && k > 0) atomic_fetch_add(&s->n_written, k);
  for (i = 0, k = 0; i < n; i++) {
    sreq *r = puts[i];
    if (r->rc == -1) {
      r->rc = rc;
      if (rc == TT_OK)
        snprintf(r->err, sizeof r->err, "%s", pv[k].id);
      else
        snprintf(r->err, sizeof r->err, "%s", why);
      k++;
    }
  }
  free(pv);
  if (n >= CB_OFFLOAD) {
    cbjob *j = malloc(sizeof *j + n * sizeof j->r[0]);
    if (j != NULL) {
      j->n = n;
      memcpy(j->r, puts, n * sizeof j->r[0]);
      if (tt_exec(run_callbacks, j) == TT_OK) return;
      free(j);
    }
  }
  for (i = 0; i < n; i++) {
    puts[i]->cb(puts[i]->ud, puts[i]->rc, puts[i]->err);
    req_free(puts[i]);
  }
}

/* run_acks acknowledges the batch's async acks with one call. */
static void run_acks(tt_store *s, sreq **acks, size_t n) {
  tt__idref *ids = calloc(n > 0 ? n : 1, sizeof *ids);
  size_t i;
  int rc;
  if (ids == NULL) {
    rc = TT_ENOMEM;
  } else {
    for (i = 0; i < n; i++) ids[i] = acks[i]->one;
    s->cfg.err[0] = '\0';
    rc = s->be_vt->ack(s->be, ids, n);
    drop_sigpipe();
  }
  if (rc == TT_OK) atomic_fetch_add(&s->n_acked, n);
  if (rc != TT_OK) {
    tt_field f[] = {TT_FSTR("store", s->cfg.url), TT_FINT("records", n),
                    TT_FSTR("error", s->cfg.err)};
    tt_log(TT_LOG_WARN, "store: acknowledgement failed; the records will "
           "be delivered again", f, 3);
  }
  free(ids);
  for (i = 0; i < n; i++) req_free(acks[i]);
}

/* stats_pools answers R_STATS_POOLS: the stats of each pool the store
** lists. */
static int stats_pools(tt_store *s, sreq *r) {
  const tt__store_backend *b = s->be_vt;
  char **names = NULL;
  size_t n = 0, i;
  int rc;
  r->pstats = NULL;
  r->n = 0;
  rc = b->pools(s->be, &names, &n);
  if (rc != TT_OK) return rc;
  if (n > 0 && (r->pstats = calloc(n, sizeof *r->pstats)) == NULL) {
    for (i = 0; i < n; i++) free(names[i]);
    free(names);
    return tt__store_fail(&s->cfg, "not enough memory");
  }
  /* The names now belong to the answer (tt_store_pool_stats_free). */
  for (i = 0; i < n; i++) r->pstats[i].pool = names[i];
  r->n = n;
  free(names);
  for (i = 0; i < n && rc == TT_OK; i++)
    rc = b->stats(s->be, r->pstats[i].pool, &r->pstats[i].st);
  return rc;
}

/* run_one runs any request but puts and async acks. */
static void run_one(tt_store *s, sreq *r) {
  const tt__store_backend *b = s->be_vt;
  s->cfg.err[0] = '\0';
  switch (r->kind) {
    case R_CLAIM:
      r->rc = b->claim(s->be, r->qpool, r->max, &r->claims, &r->n);
      break;
    case R_ACK:
      r->rc = b->ack(s->be, r->async ? &r->one : r->ids,
                     r->async ? 1 : r->nids);
      break;
    case R_BURY:
      r->rc = b->bury(s->be, r->async ? &r->one : r->ids, r->reason);
      break;
    case R_RENEW:
      r->rc = b->renew(s->be, r->ids, r->nids);
      break;
    case R_STATS:
      r->rc = b->stats(s->be, r->qpool, r->stats);
      break;
    case R_DEAD_LIST:
      r->rc = b->dead_list(s->be, r->qpool, (size_t)r->max, &r->dead,
                           &r->n);
      break;
    case R_DEAD_RETRY:
      r->rc = b->dead_retry(s->be, r->qpool, r->qid);
      break;
    case R_DEAD_DROP:
      r->rc = b->dead_drop(s->be, r->qpool, r->qid);
      break;
    case R_STATS_POOLS:
      r->rc = stats_pools(s, r);
      break;
    default:
      r->rc = TT_OK;
      break;
  }
  drop_sigpipe();
  if (r->rc == TT_OK) {
    if (r->kind == R_CLAIM) atomic_fetch_add(&s->n_claimed, r->n);
    if (r->kind == R_ACK) atomic_fetch_add(&s->n_acked,
                                           r->async ? 1 : r->nids);
    if (r->kind == R_BURY) atomic_fetch_add(&s->n_buried, 1);
  }
  if (r->rc != TT_OK) snprintf(r->err, sizeof r->err, "%s", s->cfg.err);
  if (r->async && r->rc != TT_OK) {
    tt_field f[] = {TT_FSTR("store", s->cfg.url),
                    TT_FSTR("id", r->one.id), TT_FSTR("error", r->err)};
    tt_log(TT_LOG_WARN, "store: dead letter not written; the record will "
           "be delivered again", f, 3);
  }
}

static void store_release(tt_store *s) {
  if (atomic_fetch_sub(&s->irefs, 1) != 1) return;
  cfg_free(&s->cfg);
  TT_CHECK(pthread_cond_destroy(&s->cv));
  TT_CHECK(pthread_cond_destroy(&s->done_cv));
  TT_CHECK(pthread_mutex_destroy(&s->mu));
  free(s);
}

static void *store_main(void *arg) {
  tt_store *s = arg;
  sreq **puts = NULL, **acks = NULL;
  size_t cap = 0;
  bool dirty = false;
  int rc;
  s->cfg.err[0] = '\0';
  rc = s->be_vt->open(&s->cfg, &s->be);
  drop_sigpipe();
  tt__lock(&s->mu);
  s->opened = true;
  s->open_rc = rc;
  TT_CHECK(pthread_cond_broadcast(&s->done_cv));
  if (rc != TT_OK) {
    tt__unlock(&s->mu);
    store_release(s);
    return NULL;
  }
  for (;;) {
    tt_list batch, *l;
    size_t np = 0, na = 0, nb = 0;
    if (tt_list_empty(&s->q) && !s->closing) {
      if (!dirty) {
        TT_CHECK(pthread_cond_wait(&s->cv, &s->mu));
      } else if (!tt__timedwait(&s->cv, &s->mu, tt_now() + IDLE_AFTER) &&
                 tt_list_empty(&s->q)) {
        tt__unlock(&s->mu);
        if (s->be_vt->idle != NULL) s->be_vt->idle(s->be);
        tt__lock(&s->mu);
        dirty = false;
      }
      continue;
    }
    if (tt_list_empty(&s->q)) break;  /* closing, and all done */
    tt_list_init(&batch);
    while ((l = tt_list_shift(&s->q)) != NULL) {
      tt_list_push(&batch, l);
      nb++;
    }
    tt__unlock(&s->mu);
    if (nb > cap) {
      sreq **np_ = realloc(puts, nb * sizeof *np_);
      sreq **na_ = np_ != NULL ? realloc(acks, nb * sizeof *na_) : NULL;
      if (np_ != NULL) puts = np_;
      if (na_ != NULL) {
        acks = na_;
        cap = nb;
      }
    }
    /* Puts first, in one commit, then the rest in order (async acks in
    ** one call): a claim in the same batch sees the puts before it. */
    for (l = batch.next; l != &batch;) {
      sreq *r = tt_container_of(l, sreq, link);
      l = l->next;
      if (cap >= nb && r->kind == R_PUT) {
        tt_list_remove(&r->link);
        puts[np++] = r;
      } else if (cap >= nb && r->kind == R_ACK && r->async) {
        tt_list_remove(&r->link);
        acks[na++] = r;
      }
    }
    if (np > 0) {
      run_puts(s, puts, np);
      dirty = true;
    }
    if (na > 0) {
      run_acks(s, acks, na);
      dirty = true;
    }
    while ((l = tt_list_shift(&batch)) != NULL) {
      sreq *r = tt_container_of(l, sreq, link);
      if (r->kind == R_PUT) {
        /* No memory for the batch arrays: one at a time. */
        run_puts(s, &r, 1);
        continue;
      }
      run_one(s, r);
      if (r->kind != R_STATS && r->kind != R_DEAD_LIST) dirty = true;
      if (r->async) {
        req_free(r);
      } else {
        tt__lock(&s->mu);
        r->done = true;
        tt__unlock(&s->mu);
      }
    }
    tt__lock(&s->mu);
    TT_CHECK(pthread_cond_broadcast(&s->done_cv));
  }
  tt__unlock(&s->mu);
  free(puts);
  free(acks);
  s->be_vt->close(s->be);
  s->be = NULL;
  drop_sigpipe();
  store_release(s);
  return NULL;
}

/* }==================================================================== */


/* {====================================================================
** The store object
** ===================================================================== */

static void store_free(tt_obj *o) {
  tt_store *s = (tt_store *)o;
  tt_store_close(s);
  store_release(s);
}

static int store_describe(tt_obj *o, char *buf, size_t n) {
  tt_store *s = (tt_store *)o;
  bool closed;
  tt__lock(&s->mu);
  closed = s->closing;
  tt__unlock(&s->mu);
  return snprintf(buf, n, "tether.Store %s (%s)", s->cfg.url,
                  closed ? "closed" : "open");
}

const tt_type tt_store_type = {"tether.Store", store_free, store_describe,
                               NULL};

tt_store *tt_store_open(const char *url, const tt_store_opts *o, int *err,
                        char *msg, size_t msglen) {
  tt_store *s;
  int rc;
  if (msglen > 0) msg[0] = '\0';
  if (url == NULL) {
    if (err != NULL) *err = TT_EINVAL;
    url_error(msg, msglen, "no URL");
    return NULL;
  }
  s = calloc(1, sizeof *s);
  if (s == NULL) {
    if (err != NULL) *err = TT_ENOMEM;
    return NULL;
  }
  tt_obj_init(&s->hdr, &tt_store_type);
  atomic_init(&s->irefs, 1);
  TT_CHECK(pthread_mutex_init(&s->mu, NULL));
  tt__cond_init(&s->cv);
  tt__cond_init(&s->done_cv);
  tt_list_init(&s->q);
  if (o != NULL) s->cfg.o = *o;
  s->cfg.o.consumer = NULL;
  if (s->cfg.o.max_payload == 0) s->cfg.o.max_payload = DEF_MAX_PAYLOAD;
  if (s->cfg.o.max_deliveries <= 0)
    s->cfg.o.max_deliveries = DEF_MAX_DELIVERIES;
  if (!(s->cfg.o.lease > 0)) s->cfg.o.lease = DEF_LEASE;
  if (!(s->cfg.o.timeout > 0)) s->cfg.o.timeout = DEF_TIMEOUT;
  if (o != NULL && o->consumer != NULL) {
    snprintf(s->cfg.consumer, sizeof s->cfg.consumer, "%s", o->consumer);
  } else {
    char host[64];
    uint64_t r = 0;
    if (gethostname(host, sizeof host) != 0) snprintf(host, 5, "host");
    host[sizeof host - 1] = '\0';
    tt_random_bytes(&r, sizeof r);
    snprintf(s->cfg.consumer, sizeof s->cfg.consumer, "%s-%ld-%08x", host,
             (long)getpid(), (unsigned)(r & 0xffffffffu));
  }
  if (strncmp(url, "sqlite:", 7) == 0) {
    s->be_vt = &tt__sqlite_backend;
    rc = parse_sqlite(url + 7, &s->cfg, msg, msglen);
  } else if (strncmp(url, "redis://", 8) == 0) {
    s->be_vt = &tt__redis_backend;
    rc = parse_redis(url + 8, &s->cfg, msg, msglen);
  } else {
    rc = url_error(msg, msglen, "unknown scheme (use sqlite:PATH or "
                   "redis://HOST:PORT)");
  }
  if (rc != TT_OK) goto fail;
  atomic_fetch_add(&s->irefs, 1);  /* the thread's */
  if (tt__thread_start(&s->t, store_main, s, false) != 0) {
    atomic_fetch_sub(&s->irefs, 1);
    rc = TT_ETHREAD;
    if (msglen > 0) snprintf(msg, msglen, "cannot start the store thread");
    goto fail;
  }
  s->started = true;
  tt__lock(&s->mu);
  while (!s->opened) TT_CHECK(pthread_cond_wait(&s->done_cv, &s->mu));
  rc = s->open_rc;
  if (rc != TT_OK) s->closing = true;
  tt__unlock(&s->mu);
  if (rc != TT_OK) {
    if (msglen > 0)
      snprintf(msg, msglen, "cannot open store %s: %s", s->cfg.url,
               s->cfg.err);
    TT_CHECK(pthread_join(s->t, NULL));
    s->started = false;
    goto fail;
  }
  if (err != NULL) *err = TT_OK;
  return s;
fail:
  if (err != NULL) *err = rc;
  tt_unref(s);
  return NULL;
}

const char *tt_store_url(tt_store *s) { return s->cfg.url; }
size_t tt_store_max_payload(tt_store *s) { return s->cfg.o.max_payload; }
double tt_store_lease(tt_store *s) { return s->cfg.o.lease; }

void tt_store_close(tt_store *s) {
  bool join;
  if (s == NULL) return;
  /* A closed store leaves the metrics at once (no wait: a refresh that
  ** holds it finds it closed). */
  tt__metrics_store_closed(s);
  tt__lock(&s->mu);
  s->closing = true;
  join = s->started;
  s->started = false;
  TT_CHECK(pthread_cond_signal(&s->cv));
  tt__unlock(&s->mu);
  if (join) {
    if (pthread_equal(pthread_self(), s->t))
      TT_CHECK(pthread_detach(s->t));  /* the last unref in a callback */
    else
      TT_CHECK(pthread_join(s->t, NULL));
  }
}

/* enqueue hands 'r' to the thread; TT_ECLOSED once the store closes. */
static int enqueue(tt_store *s, sreq *r) {
  tt__lock(&s->mu);
  if (s->closing) {
    tt__unlock(&s->mu);
    return TT_ECLOSED;
  }
  tt_list_push(&s->q, &r->link);
  TT_CHECK(pthread_cond_signal(&s->cv));
  tt__unlock(&s->mu);
  return TT_OK;
}

/* call runs a sync request and waits for it. */
static int call(tt_store *s, sreq *r) {
  int rc;
  if (s == NULL) return TT_EINVAL;
  r->err[0] = '\0';
  tt__lock(&s->mu);
  if (s->closing) {
    tt__unlock(&s->mu);
    set_tl_err("the store is closed");
    return TT_ECLOSED;
  }
  tt_list_push(&s->q, &r->link);
  TT_CHECK(pthread_cond_signal(&s->cv));
  while (!r->done) TT_CHECK(pthread_cond_wait(&s->done_cv, &s->mu));
  tt__unlock(&s->mu);
  rc = r->rc;
  set_tl_err(rc == TT_OK ? "" : r->err);
  return rc;
}

int tt_store_put(tt_store *s, const char *pool, const void *rec, size_t len,
                 double deadline, tt_store_done done, void *ud) {
  sreq *r;
  int rc;
  if (s == NULL || pool == NULL || rec == NULL || done == NULL)
    return TT_EINVAL;
  if (len > s->cfg.o.max_payload) return TT_EINVAL;
  r = calloc(1, sizeof *r);
  if (r == NULL) return TT_ENOMEM;
  r->kind = R_PUT;
  r->async = true;
  r->pool = tt__strdup(pool);
  r->rec = malloc(len > 0 ? len : 1);
  if (r->pool == NULL || r->rec == NULL) {
    req_free(r);
    return TT_ENOMEM;
  }
  memcpy(r->rec, rec, len);
  r->len = len;
  r->deadline = deadline;
  r->cb = done;
  r->ud = ud;
  rc = enqueue(s, r);
  if (rc != TT_OK) req_free(r);
  return rc;
}

/* A put that someone waits for. */
typedef struct waitput {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;
  int rc;
  char text[ERRLEN];
} waitput;

static void waitput_done(void *ud, int rc, const char *text) {
  waitput *w = ud;
  tt__lock(&w->mu);
  w->rc = rc;
  snprintf(w->text, sizeof w->text, "%s", text != NULL ? text : "");
  w->done = true;
  TT_CHECK(pthread_cond_signal(&w->cv));
  tt__unlock(&w->mu);
}

int tt_store_put_wait(tt_store *s, const char *pool, const void *rec,
                      size_t len, char *id) {
  waitput w;
  int rc;
  memset(&w, 0, sizeof w);
  TT_CHECK(pthread_mutex_init(&w.mu, NULL));
  tt__cond_init(&w.cv);
  rc = tt_store_put(s, pool, rec, len, -1, waitput_done, &w);
  if (rc == TT_OK) {
    tt__lock(&w.mu);
    while (!w.done) TT_CHECK(pthread_cond_wait(&w.cv, &w.mu));
    tt__unlock(&w.mu);
    rc = w.rc;
    if (rc == TT_OK && id != NULL)
      snprintf(id, TT_STORE_IDLEN, "%.47s", w.text);
    set_tl_err(rc == TT_OK ? "" : w.text);
  } else {
    set_tl_err(rc == TT_ECLOSED ? "the store is closed"
                                : "the record is too large");
  }
  TT_CHECK(pthread_cond_destroy(&w.cv));
  TT_CHECK(pthread_mutex_destroy(&w.mu));
  return rc;
}

int tt_store_claim(tt_store *s, const char *pool, int max, tt_claim **out,
                   size_t *n) {
  sreq r;
  int rc;
  memset(&r, 0, sizeof r);
  *out = NULL;
  *n = 0;
  if (max <= 0) return TT_OK;
  r.kind = R_CLAIM;
  r.qpool = pool;
  r.max = max;
  rc = call(s, &r);
  if (rc == TT_OK) {
    *out = r.claims;
    *n = r.n;
  } else {
    tt_claims_free(r.claims, r.n);
  }
  return rc;
}

int tt_store_ack(tt_store *s, const tt_claim *c) {
  sreq r;
  tt__idref id;
  memset(&r, 0, sizeof r);
  id.pool = c->pool;
  id.id = c->id;
  r.kind = R_ACK;
  r.ids = &id;
  r.nids = 1;
  return call(s, &r);
}

int tt_store_bury(tt_store *s, const tt_claim *c, const char *reason) {
  sreq r;
  tt__idref id;
  memset(&r, 0, sizeof r);
  id.pool = c->pool;
  id.id = c->id;
  r.kind = R_BURY;
  r.ids = &id;
  r.reason = reason != NULL ? reason : "";
  return call(s, &r);
}

/* async_req makes an async request that carries copies of its strings. */
static int async_req(tt_store *s, int kind, const char *pool,
                     const char *id, const char *reason) {
  size_t lp = strlen(pool) + 1, li = strlen(id) + 1;
  size_t lr = reason != NULL ? strlen(reason) + 1 : 0;
  sreq *r;
  char *p;
  int rc;
  if (s == NULL) return TT_EINVAL;
  r = calloc(1, sizeof *r);
  if (r == NULL) return TT_ENOMEM;
  r->pool = p = malloc(lp + li + lr);  /* freed with the request */
  if (p == NULL) {
    free(r);
    return TT_ENOMEM;
  }
  memcpy(p, pool, lp);
  memcpy(p + lp, id, li);
  if (lr > 0) memcpy(p + lp + li, reason, lr);
  r->kind = kind;
  r->async = true;
  r->one.pool = p;
  r->one.id = p + lp;
  r->reason = lr > 0 ? p + lp + li : "";
  rc = enqueue(s, r);
  if (rc != TT_OK) req_free(r);
  return rc;
}

int tt_store_ack_async(tt_store *s, const char *pool, const char *id) {
  return async_req(s, R_ACK, pool, id, NULL);
}

int tt_store_bury_async(tt_store *s, const char *pool, const char *id,
                        const char *reason) {
  return async_req(s, R_BURY, pool, id, reason != NULL ? reason : "");
}

int tt_store_renew(tt_store *s, const tt_claim *const *c, size_t n) {
  sreq r;
  tt__idref *ids;
  size_t i;
  int rc;
  if (n == 0) return TT_OK;
  ids = calloc(n, sizeof *ids);
  if (ids == NULL) return TT_ENOMEM;
  for (i = 0; i < n; i++) {
    ids[i].pool = c[i]->pool;
    ids[i].id = c[i]->id;
  }
  memset(&r, 0, sizeof r);
  r.kind = R_RENEW;
  r.ids = ids;
  r.nids = n;
  rc = call(s, &r);
  free(ids);
  return rc;
}

int tt_store_sync(tt_store *s) {
  sreq r;
  memset(&r, 0, sizeof r);
  r.kind = R_SYNC;
  return call(s, &r);
}

int tt_store_stats_get(tt_store *s, const char *pool, tt_store_stats *out) {
  sreq r;
  memset(&r, 0, sizeof r);
  memset(out, 0, sizeof *out);
  r.kind = R_STATS;
  r.qpool = pool;
  r.stats = out;
  return call(s, &r);
}

int tt_store_stats_pools(tt_store *s, tt_store_pool_stats **out,
                         size_t *n) {
  sreq r;
  int rc;
  memset(&r, 0, sizeof r);
  *out = NULL;
  *n = 0;
  r.kind = R_STATS_POOLS;
  rc = call(s, &r);
  if (rc == TT_OK) {
    *out = r.pstats;
    *n = r.n;
  } else {
    tt_store_pool_stats_free(r.pstats, r.n);
  }
  return rc;
}

void tt_store_pool_stats_free(tt_store_pool_stats *p, size_t n) {
  size_t i;
  if (p == NULL) return;
  for (i = 0; i < n; i++) free(p[i].pool);
  free(p);
}

void tt_store_counters_get(tt_store *s, tt_store_counters *out) {
  out->written = atomic_load(&s->n_written);
  out->claimed = atomic_load(&s->n_claimed);
  out->acked = atomic_load(&s->n_acked);
  out->buried = atomic_load(&s->n_buried);
}

void tt__store_hold(tt_store *s) { atomic_fetch_add(&s->irefs, 1); }

void tt__store_drop(tt_store *s) { store_release(s); }

int tt_store_dead_letters(tt_store *s, const char *pool, size_t max,
                          tt_store_dead **out, size_t *n) {
  sreq r;
  int rc;
  memset(&r, 0, sizeof r);
  *out = NULL;
  *n = 0;
  r.kind = R_DEAD_LIST;
  r.qpool = pool;
  r.max = max > (size_t)1 << 30 ? 1 << 30 : (int)max;
  rc = call(s, &r);
  if (rc == TT_OK) {
    *out = r.dead;
    *n = r.n;
  } else {
    tt_store_dead_free(r.dead, r.n);
  }
  return rc;
}

int tt_store_retry_dead(tt_store *s, const char *pool, const char *id) {
  sreq r;
  memset(&r, 0, sizeof r);
  if (id == NULL) return TT_EINVAL;
  r.kind = R_DEAD_RETRY;
  r.qpool = pool;
  r.qid = id;
  return call(s, &r);
}

int tt_store_drop_dead(tt_store *s, const char *pool, const char *id) {
  sreq r;
  memset(&r, 0, sizeof r);
  if (id == NULL) return TT_EINVAL;
  r.kind = R_DEAD_DROP;
  r.qpool = pool;
  r.qid = id;
  return call(s, &r);
}

/* }==================================================================== */
