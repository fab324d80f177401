/*
** store_redis.c -- the store for several machines: Redis Streams
** ("redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=NAME]").
**
** Keys (NAME defaults to "tether"):
**
**   NAME:POOL        a stream per pool name; each entry holds the record
**                    in its field "rec"; consumer group "tether"
**   NAME:POOL:dead   the pool's dead letters: fields rec, reason, origin
**                    (the entry's id in NAME:POOL), deliveries, at
**   NAME:pools       a set of the pool names seen, so that a drainer of
**                    every pool knows which streams to read
**
** A put is XADD (pipelined: a batch of spills costs one round trip, the
** group and the set entry made on the way for a new pool).  A claim is
** XREADGROUP for new entries and, every quarter lease, XAUTOCLAIM for
** entries whose consumer has been idle longer than the lease (a drainer
** that died): the idle time of a pending entry is its lease, XCLAIM ...
** JUSTID renews it without counting a delivery, and the group's delivery
** counter (read with XPENDING for entries taken over) enforces
** max_deliveries.  An ack is XDEL then XACK, so the stream holds only work
** not yet done.
**
** The connection is hiredis's blocking API with a timeout, used only by
** the store's thread (whose signals are blocked: see store.c); once a
** call fails, the connection is dropped and made again on the next
** request.  A password is sent with AUTH and never written anywhere
** else: messages name the server by host and port.
*/
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "store.h"

#define GROUP "tether"
#define AUTOCLAIM_EVERY 0.25    /* of the lease */

/* A stream this connection has set up (its group exists). */
typedef struct known {
  char *pool;
  double autoclaimed;      /* tt_now() of the last XAUTOCLAIM */
} known;

typedef struct rs {
  tt__store_cfg *cfg;
  redisContext *c;         /* NULL while disconnected */
  known *kn;
  size_t nkn, kcap;
  /* Scratch argument vectors and strings, reset by each command. */
  const char **argv;
  size_t *argl;
  int argc, argcap;
  char **keep;
  int nkeep, keepcap;
} rs;

/* {====================================================================
** Commands
** ===================================================================== */

static void args_reset(rs *r) {
  int i;
  for (i = 0; i < r->nkeep; i++) free(r->keep[i]);
  r->nkeep = 0;
  r->argc = 0;
}

static bool arg(rs *r, const char *s, size_t n) {
  if (r->argc == r->argcap) {
    int nc = r->argcap == 0 ? 16 : r->argcap * 2;
    const char **nv = realloc(r->argv, (size_t)nc * sizeof *nv);
    size_t *nl;
    if (nv == NULL) return false;
    r->argv = nv;
    nl = realloc(r->argl, (size_t)nc * sizeof *nl);
    if (nl == NULL) return false;
    r->argl = nl;
    r->argcap = nc;
  }
  r->argv[r->argc] = s;
  r->argl[r->argc] = n;
  r->argc++;
  return true;
}

static bool args(rs *r, const char *s) { return arg(r, s, strlen(s)); }

/* argf adds a formatted argument, kept until the next reset. */
static bool argf(rs *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static bool argf(rs *r, const char *fmt, ...) {
  va_list ap;
  char *s;
  int n;
  va_start(ap, fmt);
  n = vasprintf(&s, fmt, ap);
  va_end(ap);
  if (n < 0) return false;
  if (r->nkeep == r->keepcap) {
    int nc = r->keepcap == 0 ? 16 : r->keepcap * 2;
    char **nk = realloc(r->keep, (size_t)nc * sizeof *nk);
    if (nk == NULL) {
      free(s);
      return false;
    }
    r->keep = nk;
    r->keepcap = nc;
  }
  r->keep[r->nkeep++] = s;
  return arg(r, s, (size_t)n);
}

static void disconnect(rs *r) {
  if (r->c != NULL) redisFree(r->c);
  r->c = NULL;
}

static int fail_io(rs *r) {
  int rc = tt__store_fail(r->cfg, "redis at %s:%d: %s", r->cfg->host,
                          r->cfg->port,
                          r->c != NULL && r->c->errstr[0] != '\0'
                              ? r->c->errstr : "connection lost");
  disconnect(r);
  return rc;
}

static int fail_reply(rs *r, const redisReply *y, const char *what) {
  return tt__store_fail(r->cfg, "redis at %s:%d: %s: %.*s", r->cfg->host,
                        r->cfg->port, what,
                        y != NULL && y->type == REDIS_REPLY_ERROR
                            ? (int)y->len : 22,
                        y != NULL && y->type == REDIS_REPLY_ERROR
                            ? y->str : "unexpected reply shape");
}

/* simple runs a command over the connection as it is (no reconnect). */
static redisReply *simple(rs *r) {
  redisReply *y = redisCommandArgv(r->c, r->argc, r->argv, r->argl);
  return y;
}

static int connect_now(rs *r) {
  struct timeval tv;
  redisReply *y;
  double t = r->cfg->o.timeout;
  tv.tv_sec = (time_t)t;
  tv.tv_usec = (suseconds_t)((t - (double)tv.tv_sec) * 1e6);
  r->c = redisConnectWithTimeout(r->cfg->host, r->cfg->port, tv);
  if (r->c == NULL)
    return tt__store_fail(r->cfg, "redis at %s:%d: not enough memory",
                          r->cfg->host, r->cfg->port);
  if (r->c->err) {
    int rc = tt__store_fail(r->cfg, "cannot connect to redis at %s:%d: %s",
                            r->cfg->host, r->cfg->port, r->c->errstr);
    disconnect(r);
    return rc;
  }
  redisSetTimeout(r->c, tv);
  redisEnableKeepAlive(r->c);
  if (r->cfg->password != NULL) {
    args_reset(r);
    args(r, "AUTH");
    if (r->cfg->user != NULL) args(r, r->cfg->user);
    args(r, r->cfg->password);
    y = simple(r);
    args_reset(r);
    if (y == NULL) return fail_io(r);
    if (y->type == REDIS_REPLY_ERROR) {
      int rc = fail_reply(r, y, "authentication failed");
      freeReplyObject(y);
      disconnect(r);
      return rc;
    }
    freeReplyObject(y);
  }
  args_reset(r);
  if (r->cfg->db != 0) {
    args(r, "SELECT");
    argf(r, "%d", r->cfg->db);
  } else {
    args(r, "PING");
  }
  y = simple(r);
  args_reset(r);
  if (y == NULL) return fail_io(r);
  if (y->type == REDIS_REPLY_ERROR) {
    int rc = fail_reply(r, y, "cannot use the server");
    freeReplyObject(y);
    disconnect(r);
    return rc;
  }
  freeReplyObject(y);
  return TT_OK;
}

static int ensure(rs *r) {
  if (r->c != NULL && r->c->err == 0) return TT_OK;
  disconnect(r);
  return connect_now(r);
}

/* command runs the command built in the argument vector and returns its
** reply, or NULL (the error is in cfg->err and the connection dropped). */
static redisReply *command(rs *r) {
  redisReply *y;
  if (ensure(r) != TT_OK) return NULL;
  y = redisCommandArgv(r->c, r->argc, r->argv, r->argl);
  if (y == NULL) fail_io(r);
  return y;
}

static bool append(rs *r) {
  return redisAppendCommandArgv(r->c, r->argc, r->argv, r->argl) ==
         REDIS_OK;
}

static redisReply *reply(rs *r) {
  void *y = NULL;
  if (r->c == NULL || redisGetReply(r->c, &y) != REDIS_OK) {
    fail_io(r);
    return NULL;
  }
  return y;
}

static bool is_err(const redisReply *y, const char *prefix) {
  return y != NULL && y->type == REDIS_REPLY_ERROR &&
         strncmp(y->str, prefix, strlen(prefix)) == 0;
}

/* }==================================================================== */


/* {====================================================================
** Streams and groups
** ===================================================================== */

static known *find_known(rs *r, const char *pool) {
  size_t i;
  for (i = 0; i < r->nkn; i++)
    if (strcmp(r->kn[i].pool, pool) == 0) return &r->kn[i];
  return NULL;
}

static known *add_known(rs *r, const char *pool) {
  known *k = find_known(r, pool);
  if (k != NULL) return k;
  if (r->nkn == r->kcap) {
    size_t nc = r->kcap == 0 ? 8 : r->kcap * 2;
    known *nk = realloc(r->kn, nc * sizeof *nk);
    if (nk == NULL) return NULL;
    r->kn = nk;
    r->kcap = nc;
  }
  k = &r->kn[r->nkn];
  k->pool = tt__strdup(pool);
  if (k->pool == NULL) return NULL;
  k->autoclaimed = 0;
  r->nkn++;
  return k;
}

static void forget_known(rs *r, const char *pool) {
  size_t i;
  for (i = 0; i < r->nkn; i++)
    if (strcmp(r->kn[i].pool, pool) == 0) {
      free(r->kn[i].pool);
      r->kn[i] = r->kn[--r->nkn];
      return;
    }
}

/* append_setup queues the commands that make a pool's stream usable: its
** group (BUSYGROUP when it exists: fine) and its name in the set. */
static bool append_setup(rs *r, const char *pool) {
  bool ok;
  args_reset(r);
  ok = args(r, "XGROUP") && args(r, "CREATE") &&
       argf(r, "%s:%s", r->cfg->prefix, pool) && args(r, GROUP) &&
       args(r, "0") && args(r, "MKSTREAM") && append(r);
  args_reset(r);
  ok = ok && args(r, "SADD") && argf(r, "%s:pools", r->cfg->prefix) &&
       args(r, pool) && append(r);
  args_reset(r);
  return ok;
}

static int check_setup_replies(rs *r) {
  redisReply *a = reply(r), *b = a != NULL ? reply(r) : NULL;
  int rc = TT_OK;
  if (a == NULL || b == NULL) rc = TT_ESTORE;
  else if (a->type == REDIS_REPLY_ERROR && !is_err(a, "BUSYGROUP"))
    rc = fail_reply(r, a, "cannot create the consumer group");
  else if (b->type == REDIS_REPLY_ERROR)
    rc = fail_reply(r, b, "cannot register the pool");
  if (a != NULL) freeReplyObject(a);
  if (b != NULL) freeReplyObject(b);
  return rc;
}

/* setup makes sure the group of 'pool' exists (once per connection). */
static int setup(rs *r, const char *pool) {
  int rc;
  if (find_known(r, pool) != NULL) return TT_OK;
  if ((rc = ensure(r)) != TT_OK) return rc;
  if (!append_setup(r, pool)) return fail_io(r);
  if ((rc = check_setup_replies(r)) != TT_OK) return rc;
  return add_known(r, pool) != NULL
             ? TT_OK : tt__store_fail(r->cfg, "not enough memory");
}

/* pools lists the pools to look at: 'pool', or every registered one.
** The names are malloc'd (free with free_pools). */
static int pools_of(rs *r, const char *pool, char ***out, size_t *n) {
  redisReply *y;
  size_t i;
  char **v;
  *out = NULL;
  *n = 0;
  if (pool != NULL) {
    v = malloc(sizeof *v);
    if (v == NULL || (v[0] = tt__strdup(pool)) == NULL) {
      free(v);
      return tt__store_fail(r->cfg, "not enough memory");
    }
    *out = v;
    *n = 1;
    return TT_OK;
  }
  args_reset(r);
  args(r, "SMEMBERS");
  argf(r, "%s:pools", r->cfg->prefix);
  y = command(r);
  args_reset(r);
  if (y == NULL) return TT_ESTORE;
  if (y->type != REDIS_REPLY_ARRAY) {
    int rc = fail_reply(r, y, "cannot list the pools");
    freeReplyObject(y);
    return rc;
  }
  v = calloc(y->elements > 0 ? y->elements : 1, sizeof *v);
  if (v == NULL) {
    freeReplyObject(y);
    return tt__store_fail(r->cfg, "not enough memory");
  }
  for (i = 0; i < y->elements; i++) {
    redisReply *e = y->element[i];
    if (e->type != REDIS_REPLY_STRING) continue;
    v[*n] = malloc(e->len + 1);
    if (v[*n] == NULL) break;
    memcpy(v[*n], e->str, e->len);
    v[*n][e->len] = '\0';
    (*n)++;
  }
  freeReplyObject(y);
  *out = v;
  return TT_OK;
}

static void free_pools(char **v, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) free(v[i]);
  free(v);
}

/* field finds field 'name' among the flat [f1, v1, f2, v2...] of an
** entry. */
static const redisReply *field(const redisReply *fields, const char *name) {
  size_t i;
  if (fields == NULL || fields->type != REDIS_REPLY_ARRAY) return NULL;
  for (i = 0; i + 1 < fields->elements; i += 2) {
    const redisReply *k = fields->element[i];
    if (k->type == REDIS_REPLY_STRING && k->len == strlen(name) &&
        memcmp(k->str, name, k->len) == 0)
      return fields->element[i + 1];
  }
  return NULL;
}

static bool entry_ok(const redisReply *e) {
  return e != NULL && e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
         e->element[0]->type == REDIS_REPLY_STRING &&
         e->element[0]->len < TT_STORE_IDLEN;
}

static void copy_id(char *dst, const redisReply *s) {
  memcpy(dst, s->str, s->len);
  dst[s->len] = '\0';
}

/* }==================================================================== */


/* {====================================================================
** The backend
** ===================================================================== */

static void rs_close(void *be);

static int rs_open(tt__store_cfg *cfg, void **be) {
  rs *r = calloc(1, sizeof *r);
  int rc;
  if (r == NULL) return tt__store_fail(cfg, "not enough memory");
  r->cfg = cfg;
  rc = connect_now(r);
  if (rc != TT_OK) {
    rs_close(r);
    return rc;
  }
  *be = r;
  return TT_OK;
}

static void rs_close(void *be) {
  rs *r = be;
  size_t i;
  if (r == NULL) return;
  disconnect(r);
  args_reset(r);
  for (i = 0; i < r->nkn; i++) free(r->kn[i].pool);
  free(r->kn);
  free(r->argv);
  free(r->argl);
  free(r->keep);
  free(r);
}

static int rs_put(void *be, tt__put *puts, size_t n) {
  rs *r = be;
  size_t i, j, nsetup = 0;
  char **fresh = NULL;
  int rc = ensure(r);
  if (rc != TT_OK) return rc;
  fresh = calloc(n, sizeof *fresh);
  if (fresh == NULL) return tt__store_fail(r->cfg, "not enough memory");
  for (i = 0; i < n; i++) {
    bool seen = find_known(r, puts[i].pool) != NULL;
    for (j = 0; j < nsetup && !seen; j++)
      seen = strcmp(fresh[j], puts[i].pool) == 0;
    if (!seen) {
      if (!append_setup(r, puts[i].pool)) {
        free(fresh);
        return fail_io(r);
      }
      fresh[nsetup++] = (char *)puts[i].pool;
    }
    args_reset(r);
    if (!args(r, "XADD") ||
        !argf(r, "%s:%s", r->cfg->prefix, puts[i].pool) || !args(r, "*") ||
        !args(r, "rec") || !arg(r, puts[i].rec, puts[i].len) ||
        !append(r)) {
      args_reset(r);
      free(fresh);
      return fail_io(r);
    }
    args_reset(r);
  }
  /* Replies come in the order of the commands: each new pool's two set-up
  ** replies come just before its first XADD's. */
  for (i = 0, j = 0; i < n && rc == TT_OK; i++) {
    redisReply *y;
    if (j < nsetup && puts[i].pool == fresh[j]) {
      rc = check_setup_replies(r);
      if (rc != TT_OK) break;
      if (add_known(r, fresh[j]) == NULL) {
        rc = tt__store_fail(r->cfg, "not enough memory");
        break;
      }
      j++;
    }
    y = reply(r);
    if (y == NULL) {
      rc = TT_ESTORE;
    } else if (y->type != REDIS_REPLY_STRING || y->len >= TT_STORE_IDLEN) {
      rc = fail_reply(r, y, "cannot add to the stream");
    } else {
      copy_id(puts[i].id, y);
    }
    if (y != NULL) freeReplyObject(y);
  }
  free(fresh);
  /* Replies left unread would answer the next command: drop the
  ** connection instead. */
  if (rc != TT_OK && i < n) disconnect(r);
  return rc;
}

/* bury_entries moves 'n' entries of stream 'pool' to its dead letters,
** with their fields as read and 'reason' (pipelined). */
static int bury_entries(rs *r, const char *pool, const redisReply **ids,
                        const redisReply **recs, const int *deliveries,
                        size_t n, const char *reason) {
  size_t i, k;
  int rc = TT_OK;
  for (i = 0; i < n; i++) {
    const redisReply *rec = recs[i];
    args_reset(r);
    if (!args(r, "XADD") || !argf(r, "%s:%s:dead", r->cfg->prefix, pool) ||
        !args(r, "*") || !args(r, "rec") ||
        !arg(r, rec != NULL && rec->type == REDIS_REPLY_STRING ? rec->str
                                                                : "",
             rec != NULL && rec->type == REDIS_REPLY_STRING ? rec->len
                                                             : 0) ||
        !args(r, "reason") || !args(r, reason) || !args(r, "origin") ||
        !arg(r, ids[i]->str, ids[i]->len) || !args(r, "deliveries") ||
        !argf(r, "%d", deliveries[i]) || !args(r, "at") ||
        !argf(r, "%.3f", tt_wall()) || !append(r))
      return fail_io(r);
    /* Deleted before acknowledged, as in rs_ack. */
    args_reset(r);
    if (!args(r, "XDEL") || !argf(r, "%s:%s", r->cfg->prefix, pool) ||
        !arg(r, ids[i]->str, ids[i]->len) || !append(r))
      return fail_io(r);
    args_reset(r);
    if (!args(r, "XACK") || !argf(r, "%s:%s", r->cfg->prefix, pool) ||
        !args(r, GROUP) || !arg(r, ids[i]->str, ids[i]->len) || !append(r))
      return fail_io(r);
    args_reset(r);
  }
  for (k = 0; k < 3 * n; k++) {
    redisReply *y = reply(r);
    if (y == NULL) return TT_ESTORE;
    if (y->type == REDIS_REPLY_ERROR && rc == TT_OK)
      rc = fail_reply(r, y, "cannot write a dead letter");
    freeReplyObject(y);
  }
  return rc;
}

/* take_entries copies the entries of an XREADGROUP or XAUTOCLAIM reply
** into claims; with 'counts' (an XPENDING reply per entry) their
** delivery counts come from there, and entries over max_deliveries are
** buried instead.  Deleted entries (no fields) are acknowledged. */
static int take_entries(rs *r, const char *pool, const redisReply *list,
                        redisReply **counts, tt_claim *c, size_t *got,
                        size_t max) {
  size_t i, nb = 0;
  const redisReply **bids = NULL, **brecs = NULL;
  int *bdel = NULL;
  int rc = TT_OK;
  if (list == NULL || list->type != REDIS_REPLY_ARRAY) return TT_OK;
  bids = calloc(list->elements + 1, sizeof *bids);
  brecs = calloc(list->elements + 1, sizeof *brecs);
  bdel = calloc(list->elements + 1, sizeof *bdel);
  if (bids == NULL || brecs == NULL || bdel == NULL) {
    rc = tt__store_fail(r->cfg, "not enough memory");
    goto done;
  }
  for (i = 0; i < list->elements && *got < max; i++) {
    const redisReply *e = list->element[i], *rec;
    int deliveries = 1;
    char id[TT_STORE_IDLEN];
    if (!entry_ok(e)) continue;
    if (counts != NULL) {
      const redisReply *p = counts[i];
      if (p != NULL && p->type == REDIS_REPLY_ARRAY && p->elements == 1 &&
          p->element[0]->type == REDIS_REPLY_ARRAY &&
          p->element[0]->elements == 4 &&
          p->element[0]->element[3]->type == REDIS_REPLY_INTEGER)
        deliveries = (int)p->element[0]->element[3]->integer;
    }
    rec = field(e->element[1], "rec");
    if (deliveries > r->cfg->o.max_deliveries) {
      bids[nb] = e->element[0];
      brecs[nb] = rec;
      bdel[nb] = deliveries;
      nb++;
      continue;
    }
    copy_id(id, e->element[0]);
    if (!tt__claim_set(&c[*got], id, pool, strlen(pool),
                       rec != NULL && rec->type == REDIS_REPLY_STRING
                           ? rec->str : "",
                       rec != NULL && rec->type == REDIS_REPLY_STRING
                           ? rec->len : 0,
                       deliveries)) {
      rc = tt__store_fail(r->cfg, "not enough memory");
      goto done;
    }
    (*got)++;
  }
  if (nb > 0) {
    char why[128];
    snprintf(why, sizeof why, "delivered more than %d times without "
             "being acknowledged (max_deliveries)",
             r->cfg->o.max_deliveries);
    rc = bury_entries(r, pool, bids, brecs, bdel, nb, why);
  }
done:
  free(bids);
  free(brecs);
  free(bdel);
  return rc;
}

/* autoclaim takes over entries of 'pool' idle longer than the lease. */
static int autoclaim(rs *r, const char *pool, tt_claim *c, size_t *got,
                     size_t max) {
  redisReply *y, **counts = NULL;
  const redisReply *list;
  size_t i, n;
  int rc;
  args_reset(r);
  args(r, "XAUTOCLAIM");
  argf(r, "%s:%s", r->cfg->prefix, pool);
  args(r, GROUP);
  args(r, r->cfg->consumer);
  argf(r, "%lld", (long long)(r->cfg->o.lease * 1000));
  args(r, "0-0");
  args(r, "COUNT");
  argf(r, "%zu", max - *got);
  y = command(r);
  args_reset(r);
  if (y == NULL) return TT_ESTORE;
  if (y->type != REDIS_REPLY_ARRAY || y->elements < 2) {
    rc = fail_reply(r, y, "cannot take over pending entries");
    freeReplyObject(y);
    return rc;
  }
  list = y->element[1];
  n = list->type == REDIS_REPLY_ARRAY ? list->elements : 0;
  if (n == 0) {
    freeReplyObject(y);
    return TT_OK;
  }
  counts = calloc(n, sizeof *counts);
  if (counts == NULL) {
    freeReplyObject(y);
    return tt__store_fail(r->cfg, "not enough memory");
  }
  /* The delivery count of each entry taken over, in one round trip. */
  for (i = 0; i < n; i++) {
    const redisReply *e = list->element[i];
    args_reset(r);
    if (!entry_ok(e)) {
      args(r, "PING");
    } else {
      args(r, "XPENDING");
      argf(r, "%s:%s", r->cfg->prefix, pool);
      args(r, GROUP);
      arg(r, e->element[0]->str, e->element[0]->len);
      arg(r, e->element[0]->str, e->element[0]->len);
      args(r, "1");
    }
    if (!append(r)) {
      args_reset(r);
      rc = fail_io(r);
      goto out;
    }
  }
  args_reset(r);
  for (i = 0; i < n; i++) {
    counts[i] = reply(r);
    if (counts[i] == NULL) {
      rc = TT_ESTORE;
      goto out;
    }
  }
  /* Entries deleted meanwhile come back without fields: acknowledge. */
  for (i = 0; i < n; i++) {
    const redisReply *e = list->element[i];
    redisReply *a;
    if (!entry_ok(e) || e->element[1]->type == REDIS_REPLY_ARRAY) continue;
    args_reset(r);
    args(r, "XACK");
    argf(r, "%s:%s", r->cfg->prefix, pool);
    args(r, GROUP);
    arg(r, e->element[0]->str, e->element[0]->len);
    a = command(r);
    args_reset(r);
    if (a == NULL) {
      rc = TT_ESTORE;
      goto out;
    }
    freeReplyObject(a);
  }
  rc = take_entries(r, pool, list, counts, c, got, max);
out:
  if (counts != NULL)
    for (i = 0; i < n; i++)
      if (counts[i] != NULL) freeReplyObject(counts[i]);
  free(counts);
  freeReplyObject(y);
  return rc;
}

static int read_new(rs *r, const char *pool, tt_claim *c, size_t *got,
                    size_t max, bool *again) {
  redisReply *y;
  size_t i;
  int rc = TT_OK;
  *again = false;
  args_reset(r);
  args(r, "XREADGROUP");
  args(r, "GROUP");
  args(r, GROUP);
  args(r, r->cfg->consumer);
  args(r, "COUNT");
  argf(r, "%zu", max - *got);
  args(r, "STREAMS");
  argf(r, "%s:%s", r->cfg->prefix, pool);
  args(r, ">");
  y = command(r);
  args_reset(r);
  if (y == NULL) return TT_ESTORE;
  if (is_err(y, "NOGROUP")) {
    /* The stream or group went away (deleted by hand): set it up again
    ** and let the caller retry. */
    forget_known(r, pool);
    freeReplyObject(y);
    *again = true;
    return TT_OK;
  }
  if (y->type == REDIS_REPLY_NIL) {
    freeReplyObject(y);
    return TT_OK;
  }
  if (y->type != REDIS_REPLY_ARRAY) {
    rc = fail_reply(r, y, "cannot read the stream");
    freeReplyObject(y);
    return rc;
  }
  for (i = 0; i < y->elements && rc == TT_OK; i++) {
    const redisReply *s = y->element[i];
    if (s->type == REDIS_REPLY_ARRAY && s->elements == 2)
      rc = take_entries(r, pool, s->element[1], NULL, c, got, max);
  }
  freeReplyObject(y);
  return rc;
}

static int rs_claim(void *be, const char *pool, int max, tt_claim **out,
                    size_t *n) {
  rs *r = be;
  char **pv;
  size_t np, i, got = 0;
  tt_claim *c;
  int rc = pools_of(r, pool, &pv, &np);
  double now = tt_now();
  if (rc != TT_OK) return rc;
  c = calloc((size_t)max, sizeof *c);
  if (c == NULL) {
    free_pools(pv, np);
    return tt__store_fail(r->cfg, "not enough memory");
  }
  for (i = 0; i < np && got < (size_t)max && rc == TT_OK; i++) {
    known *k;
    bool again;
    int tries = 0;
    rc = setup(r, pv[i]);
    if (rc != TT_OK) break;
    k = find_known(r, pv[i]);
    if (k != NULL &&
        now - k->autoclaimed >= r->cfg->o.lease * AUTOCLAIM_EVERY) {
      k->autoclaimed = now;
      rc = autoclaim(r, pv[i], c, &got, (size_t)max);
      if (rc != TT_OK) break;
    }
    do {
      if (got >= (size_t)max) break;
      rc = read_new(r, pv[i], c, &got, (size_t)max, &again);
      if (again) rc = setup(r, pv[i]);
    } while (rc == TT_OK && again && ++tries < 2);
  }
  free_pools(pv, np);
  if (rc != TT_OK) {
    /* What was read stays pending under this consumer: its lease runs
    ** out and another claim takes it over. */
    tt_claims_free(c, got);
    return rc;
  }
  *out = c;
  *n = got;
  return TT_OK;
}

/* per_stream appends 'cmd KEY [GROUP] [extra] ids...' for each pool among
** 'ids' and reads the replies. */
static int per_stream(rs *r, const tt__idref *ids, size_t n,
                      const char *cmd, bool group, bool claim,
                      const char *what) {
  size_t i, j, sent = 0;
  char *done = calloc(n > 0 ? n : 1, 1);
  int rc = ensure(r);
  if (done == NULL) return tt__store_fail(r->cfg, "not enough memory");
  if (rc != TT_OK) {
    free(done);
    return rc;
  }
  for (i = 0; i < n; i++) {
    if (done[i]) continue;
    args_reset(r);
    args(r, cmd);
    argf(r, "%s:%s", r->cfg->prefix, ids[i].pool);
    if (group) args(r, GROUP);
    if (claim) {
      args(r, r->cfg->consumer);
      args(r, "0");
    }
    for (j = i; j < n; j++) {
      if (done[j] || strcmp(ids[j].pool, ids[i].pool) != 0) continue;
      done[j] = 1;
      args(r, ids[j].id);
    }
    if (claim) args(r, "JUSTID");
    if (!append(r)) {
      args_reset(r);
      free(done);
      return fail_io(r);
    }
    sent++;
  }
  args_reset(r);
  free(done);
  for (i = 0; i < sent; i++) {
    redisReply *y = reply(r);
    if (y == NULL) return TT_ESTORE;
    if (y->type == REDIS_REPLY_ERROR && rc == TT_OK)
      rc = fail_reply(r, y, what);
    freeReplyObject(y);
  }
  return rc;
}

/* rs_ack deletes first, then acknowledges: a process that dies in
** between leaves a pending entry that no longer exists, which the next
** XAUTOCLAIM drops from the group; the other order would leave an
** entry acknowledged but never deleted, counted in the depth forever. */
static int rs_ack(void *be, const tt__idref *ids, size_t n) {
  rs *r = be;
  int rc = per_stream(r, ids, n, "XDEL", false, false, "cannot delete");
  if (rc != TT_OK) return rc;
  return per_stream(r, ids, n, "XACK", true, false, "cannot acknowledge");
}

static int rs_renew(void *be, const tt__idref *ids, size_t n) {
  return per_stream(be, ids, n, "XCLAIM", true, true, "cannot renew");
}

static int rs_bury(void *be, const tt__idref *ref, const char *reason) {
  rs *r = be;
  redisReply *y, *p;
  const redisReply *id, *rec = NULL;
  int deliveries = 1, rc;
  if ((rc = ensure(r)) != TT_OK) return rc;
  args_reset(r);
  args(r, "XRANGE");
  argf(r, "%s:%s", r->cfg->prefix, ref->pool);
  args(r, ref->id);
  args(r, ref->id);
  if (!append(r)) return fail_io(r);
  args_reset(r);
  args(r, "XPENDING");
  argf(r, "%s:%s", r->cfg->prefix, ref->pool);
  args(r, GROUP);
  args(r, ref->id);
  args(r, ref->id);
  args(r, "1");
  if (!append(r)) return fail_io(r);
  args_reset(r);
  y = reply(r);
  p = y != NULL ? reply(r) : NULL;
  if (y == NULL || p == NULL) {
    if (y != NULL) freeReplyObject(y);
    return TT_ESTORE;
  }
  if (y->type != REDIS_REPLY_ARRAY || y->elements != 1 ||
      !entry_ok(y->element[0])) {
    freeReplyObject(y);
    freeReplyObject(p);
    return tt__store_fail(r->cfg, "no such record");
  }
  id = y->element[0]->element[0];
  rec = field(y->element[0]->element[1], "rec");
  if (p->type == REDIS_REPLY_ARRAY && p->elements == 1 &&
      p->element[0]->type == REDIS_REPLY_ARRAY &&
      p->element[0]->elements == 4 &&
      p->element[0]->element[3]->type == REDIS_REPLY_INTEGER)
    deliveries = (int)p->element[0]->element[3]->integer;
  rc = bury_entries(r, ref->pool, &id, &rec, &deliveries, 1, reason);
  freeReplyObject(y);
  freeReplyObject(p);
  return rc;
}

static int rs_stats(void *be, const char *pool, tt_store_stats *out) {
  rs *r = be;
  char **pv;
  size_t np, i;
  double now = tt_wall(), oldest = 0;
  int rc = pools_of(r, pool, &pv, &np);
  if (rc != TT_OK) return rc;
  for (i = 0; i < np && rc == TT_OK; i++) {
    redisReply *y[4];
    int k;
    args_reset(r);
    args(r, "XLEN");
    argf(r, "%s:%s", r->cfg->prefix, pv[i]);
    if (!append(r)) rc = fail_io(r);
    args_reset(r);
    args(r, "XPENDING");
    argf(r, "%s:%s", r->cfg->prefix, pv[i]);
    args(r, GROUP);
    if (rc == TT_OK && !append(r)) rc = fail_io(r);
    args_reset(r);
    args(r, "XLEN");
    argf(r, "%s:%s:dead", r->cfg->prefix, pv[i]);
    if (rc == TT_OK && !append(r)) rc = fail_io(r);
    args_reset(r);
    args(r, "XRANGE");
    argf(r, "%s:%s", r->cfg->prefix, pv[i]);
    args(r, "-");
    args(r, "+");
    args(r, "COUNT");
    args(r, "1");
    if (rc == TT_OK && !append(r)) rc = fail_io(r);
    args_reset(r);
    if (rc != TT_OK) break;
    for (k = 0; k < 4; k++) y[k] = reply(r);
    if (y[0] == NULL || y[1] == NULL || y[2] == NULL || y[3] == NULL) {
      rc = TT_ESTORE;
    } else {
      if (y[0]->type == REDIS_REPLY_INTEGER)
        out->depth += (uint64_t)y[0]->integer;
      /* No group yet (NOGROUP): nothing is leased. */
      if (y[1]->type == REDIS_REPLY_ARRAY && y[1]->elements >= 1 &&
          y[1]->element[0]->type == REDIS_REPLY_INTEGER)
        out->leased += (uint64_t)y[1]->element[0]->integer;
      if (y[2]->type == REDIS_REPLY_INTEGER)
        out->dead += (uint64_t)y[2]->integer;
      if (y[3]->type == REDIS_REPLY_ARRAY && y[3]->elements == 1 &&
          entry_ok(y[3]->element[0])) {
        double ms = strtod(y[3]->element[0]->element[0]->str, NULL);
        double age = now - ms / 1000.0;
        if (age > oldest) oldest = age;
      }
    }
    for (k = 0; k < 4; k++)
      if (y[k] != NULL) freeReplyObject(y[k]);
  }
  free_pools(pv, np);
  out->oldest_age = oldest > 0 ? oldest : 0;
  return rc;
}

static const char *str_of(const redisReply *v, char *buf, size_t n) {
  if (v == NULL || v->type != REDIS_REPLY_STRING) return "";
  snprintf(buf, n, "%.*s", (int)v->len, v->str);
  return buf;
}

/* rs_pools lists the registered pools (the set NAME:pools). */
static int rs_pools(void *be, char ***out, size_t *n) {
  return pools_of(be, NULL, out, n);
}

static int rs_dead_list(void *be, const char *pool, size_t max,
                        tt_store_dead **out, size_t *n) {
  rs *r = be;
  char **pv;
  size_t np, i, j, got = 0, cap = 0;
  tt_store_dead *d = NULL;
  int rc = pools_of(r, pool, &pv, &np);
  if (rc != TT_OK) return rc;
  for (i = 0; i < np && got < max && rc == TT_OK; i++) {
    redisReply *y;
    args_reset(r);
    args(r, "XRANGE");
    argf(r, "%s:%s:dead", r->cfg->prefix, pv[i]);
    args(r, "-");
    args(r, "+");
    args(r, "COUNT");
    argf(r, "%zu", max - got);
    y = command(r);
    args_reset(r);
    if (y == NULL) {
      rc = TT_ESTORE;
      break;
    }
    if (y->type != REDIS_REPLY_ARRAY) {
      rc = fail_reply(r, y, "cannot list dead letters");
      freeReplyObject(y);
      break;
    }
    for (j = 0; j < y->elements && got < max; j++) {
      const redisReply *e = y->element[j], *f, *rec;
      char id[TT_STORE_IDLEN], origin[TT_STORE_IDLEN], reason[512];
      char num[64], at[64];
      if (!entry_ok(e)) continue;
      if (got == cap) {
        size_t nc = cap == 0 ? 16 : cap * 2;
        tt_store_dead *nd = realloc(d, nc * sizeof *nd);
        if (nd == NULL) break;
        d = nd;
        cap = nc;
      }
      f = e->element[1];
      copy_id(id, e->element[0]);
      str_of(field(f, "origin"), origin, sizeof origin);
      rec = field(f, "rec");
      if (!tt__dead_set(&d[got], id, origin[0] ? origin : id, pv[i],
                        str_of(field(f, "reason"), reason, sizeof reason),
                        strtod(str_of(field(f, "at"), at, sizeof at), NULL),
                        atoi(str_of(field(f, "deliveries"), num,
                                    sizeof num)),
                        rec != NULL && rec->type == REDIS_REPLY_STRING
                            ? rec->str : "",
                        rec != NULL && rec->type == REDIS_REPLY_STRING
                            ? rec->len : 0))
        break;
      got++;
    }
    freeReplyObject(y);
  }
  free_pools(pv, np);
  if (rc != TT_OK) {
    tt_store_dead_free(d, got);
    return rc;
  }
  *out = d;
  *n = got;
  return TT_OK;
}

/* find_dead locates dead letter 'id' (in 'pool', or in any pool): its
** entry's reply, and the pool in '*which' (malloc'd). */
static int find_dead(rs *r, const char *pool, const char *id,
                     redisReply **entry, char **which) {
  char **pv;
  size_t np, i;
  int rc = pools_of(r, pool, &pv, &np);
  *entry = NULL;
  *which = NULL;
  if (rc != TT_OK) return rc;
  for (i = 0; i < np; i++) {
    redisReply *y;
    args_reset(r);
    args(r, "XRANGE");
    argf(r, "%s:%s:dead", r->cfg->prefix, pv[i]);
    args(r, id);
    args(r, id);
    y = command(r);
    args_reset(r);
    if (y == NULL) {
      rc = TT_ESTORE;
      break;
    }
    if (y->type == REDIS_REPLY_ERROR) {
      /* An id that is not a stream id: no such dead letter. */
      freeReplyObject(y);
      rc = TT_EINVAL;
      break;
    }
    if (y->type == REDIS_REPLY_ARRAY && y->elements == 1 &&
        entry_ok(y->element[0])) {
      *entry = y;
      *which = pv[i];
      pv[i] = NULL;
      break;
    }
    freeReplyObject(y);
  }
  free_pools(pv, np);
  if (rc == TT_OK && *entry == NULL) rc = TT_EINVAL;
  return rc;
}

static int del_dead(rs *r, const char *pool, const char *id) {
  redisReply *y;
  int rc = TT_OK;
  args_reset(r);
  args(r, "XDEL");
  argf(r, "%s:%s:dead", r->cfg->prefix, pool);
  args(r, id);
  y = command(r);
  args_reset(r);
  if (y == NULL) return TT_ESTORE;
  if (y->type != REDIS_REPLY_INTEGER) rc = fail_reply(r, y, "cannot drop");
  else if (y->integer == 0) rc = TT_EINVAL;
  freeReplyObject(y);
  return rc;
}

static int rs_dead_retry(void *be, const char *pool, const char *id) {
  rs *r = be;
  redisReply *e, *y;
  const redisReply *rec;
  char *which;
  int rc = find_dead(r, pool, id, &e, &which);
  if (rc != TT_OK) return rc;
  rec = field(e->element[0]->element[1], "rec");
  rc = setup(r, which);
  if (rc == TT_OK) {
    args_reset(r);
    args(r, "XADD");
    argf(r, "%s:%s", r->cfg->prefix, which);
    args(r, "*");
    args(r, "rec");
    arg(r, rec != NULL && rec->type == REDIS_REPLY_STRING ? rec->str : "",
        rec != NULL && rec->type == REDIS_REPLY_STRING ? rec->len : 0);
    y = command(r);
    args_reset(r);
    if (y == NULL) {
      rc = TT_ESTORE;
    } else {
      if (y->type != REDIS_REPLY_STRING) rc = fail_reply(r, y, "cannot retry");
      freeReplyObject(y);
    }
  }
  if (rc == TT_OK) rc = del_dead(r, which, id);
  freeReplyObject(e);
  free(which);
  return rc;
}

static int rs_dead_drop(void *be, const char *pool, const char *id) {
  rs *r = be;
  redisReply *e;
  char *which;
  int rc = find_dead(r, pool, id, &e, &which);
  if (rc != TT_OK) return rc;
  freeReplyObject(e);
  rc = del_dead(r, which, id);
  free(which);
  return rc;
}

const tt__store_backend tt__redis_backend = {
  rs_open, rs_close, rs_put, rs_claim, rs_ack, rs_bury, rs_renew, rs_stats,
  rs_dead_list, rs_dead_retry, rs_dead_drop, NULL, rs_pools
};

/* }==================================================================== */
