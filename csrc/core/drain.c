/*
** drain.c -- draining a durable store into a pool (tt_pool_drain_store).
**
** DESIGN.
**
** The loop runs on the caller's thread.  It claims records only while
** the pool has room (workers plus queue, less what is queued and
** running), so a record is never leased long before it can run.  Each
** record is checked before anything of it is used: decoded (a damaged
** one fails its checksum), its module looked up in the allow-list, and
** only then made into a pool op by the embedder's 'prepare' (the Lua
** binding turns the wire values into Lua values there).  Anything that
** does not pass becomes a dead letter of the store with the reason.
**
** An op's end is seen by a hook that the pool runs as the op's handle
** resolves (under the pool's lock): it queues the acknowledgement (a
** completed op) or the dead letter (an op that failed its last attempt)
** on the store's thread, which is a leaf lock, and signals the loop
** through a channel.  So an op is acknowledged as soon as it ends, even
** after the loop returned because its context ended.
**
** Interrupts.  The loop's wait is a tt_select, so a caller in an
** interruptible section (tt_interrupt_begin: a Ctrl-C in a program's own
** wait) leaves it with TT_EINTR, as when its context ends: the ops
** already running are still acknowledged when they end, the records
** claimed but not started run out their lease.
**
** Leases.  The loop renews the leases of its running ops every third of
** the store's lease; a drainer that dies stops renewing, and its records
** are claimed again by others once the lease runs out (at least once
** delivery; the record keeps its id, the store counts its deliveries).
**
** Lifetime.  An 'item' (one claimed record) is shared by the loop and by
** its op: two references.  The 'dstate' (the channel, the store, the
** counters) is shared by the loop and every item.
*/
#include <stdio.h>
#include <string.h>

#include "store.h"

#define DEF_BATCH 64
#define BUSY_WAIT 0.01     /* the pool is full of others' work: look again */

typedef struct dstate {
  _Atomic int refs;
  tt_store *store;         /* referenced */
  tt_chan *ends;           /* a NULL item per op that ended */
  _Atomic uint64_t completed, failed;
} dstate;

typedef struct item {
  _Atomic int refs;
  dstate *d;
  tt_claim c;
  _Atomic int ended;
} item;

static void dstate_release(dstate *d) {
  if (atomic_fetch_sub(&d->refs, 1) != 1) return;
  tt_unref(d->store);
  tt_unref(d->ends);
  free(d);
}

static void item_release(item *it) {
  if (atomic_fetch_sub(&it->refs, 1) != 1) return;
  free(it->c.pool);
  free(it->c.rec);
  dstate_release(it->d);
  free(it);
}

static void item_free(void *ud) { item_release(ud); }

/* item_end runs under the pool's lock as the op's handle resolves: it
** only queues store requests and sends on a channel (leaf locks). */
static void item_end(void *ud, tt_handle *h) {
  item *it = ud;
  int st = atomic_load(&h->state);
  if (st == TT_H_DONE) {
    if (tt_store_ack_async(it->d->store, it->c.pool, it->c.id) == TT_OK)
      atomic_fetch_add(&it->d->completed, 1);
  } else if (st == TT_H_FAILED) {
    const tt_error *e = (h->result != NULL &&
                         h->result->type == &tt_error_type)
                            ? (const tt_error *)h->result : NULL;
    char why[512];
    snprintf(why, sizeof why, "failed: %s",
             e != NULL && e->message != NULL ? e->message : "error");
    if (tt_store_bury_async(it->d->store, it->c.pool, it->c.id, why) ==
        TT_OK)
      atomic_fetch_add(&it->d->failed, 1);
  }
  /* A stopped op (its pool was freed) is left to its lease. */
  atomic_store(&it->ended, 1);
  (void)tt_chan_try_send(it->d->ends, NULL);
}

static bool allowed(const tt_drain_opts *o, const char *mod) {
  int i;
  for (i = 0; i < o->nallow; i++)
    if (o->allow[i] != NULL && strcmp(o->allow[i], mod) == 0) return true;
  return false;
}

/* parent_of rebuilds the submitter's context: deadline, tenant, trace,
** and the record's store id. */
static tt_ctx *parent_of(const tt_record *r, const tt_claim *c) {
  static const tt_key id_key = {NULL, "tether.store_id", 15};
  tt_ctx *ctx = tt_ref(tt_background()), *next;
  tt_bytes *b;
  if (r->deadline != 0) {
    next = tt_with_deadline(ctx, tt_now() + (r->deadline - tt_wall()),
                            NULL);
    tt_unref(ctx);
    if ((ctx = next) == NULL) return NULL;
  }
  if (r->tenant != NULL && r->tenant_key != NULL) {
    tt_key k;
    k.obj = NULL;
    k.str = r->tenant_key;
    k.len = strlen(r->tenant_key);
    b = tt_bytes_new(r->tenant, r->tenant_len);
    next = b != NULL ? tt_with_value(ctx, &k, &b->hdr) : NULL;
    tt_unref(b);
    tt_unref(ctx);
    if ((ctx = next) == NULL) return NULL;
  }
  if (r->has_trace) {
    next = tt_with_span_context(ctx, &r->trace);
    tt_unref(ctx);
    if ((ctx = next) == NULL) return NULL;
  }
  b = tt_bytes_new(c->id, strlen(c->id));
  next = b != NULL ? tt_with_value(ctx, &id_key, &b->hdr) : NULL;
  tt_unref(b);
  tt_unref(ctx);
  return next;
}

/* The loop's state. */
typedef struct loop {
  tt_pool *p;
  tt_store *s;
  const tt_drain_opts *o;
  dstate *d;
  item **fl;               /* running ops' items */
  int nfl, limit;
  tt_claim *backlog;       /* claimed, refused by a full pool for now */
  size_t nback, backcap;
  tt_drain_report rep;
} loop;

/* refuse makes a claimed record a dead letter with 'why'. */
static int refuse(loop *l, const tt_claim *c, const char *why) {
  int rc = tt_store_bury(l->s, c, why);
  if (rc == TT_OK) l->rep.refused++;
  return rc;
}

/* push_backlog moves claim 'c' to the backlog. */
static int push_backlog(loop *l, tt_claim *c) {
  if (l->nback == l->backcap) {
    size_t nc = l->backcap == 0 ? 8 : l->backcap * 2;
    tt_claim *nb = realloc(l->backlog, nc * sizeof *nb);
    if (nb == NULL) return TT_ENOMEM;
    l->backlog = nb;
    l->backcap = nc;
  }
  l->backlog[l->nback++] = *c;
  memset(c, 0, sizeof *c);  /* moved */
  return TT_OK;
}

/* start runs one claimed record: TT_OK when it is running, was refused,
** or waits in the backlog; else a store error. */
static int start(loop *l, tt_claim *c) {
  char why[512], mod[256];
  tt_record *r = tt_record_decode(c->rec, c->len, why, sizeof why);
  tt_submit_opts so;
  tt_retry retry;
  tt_ctx *parent;
  tt_fn fn = NULL;
  void *arg = NULL;
  tt_drop drop = NULL;
  tt_handle *h;
  item *it;
  int rc, err = TT_OK;
  if (r == NULL) {
    char reason[600];
    snprintf(reason, sizeof reason, "corrupted record: %s", why);
    return refuse(l, c, reason);
  }
  if (tt_record_module(r->fn, mod, sizeof mod) < 0) {
    free(r);
    return refuse(l, c, "bad function name (expected 'module:function')");
  }
  if (!allowed(l->o, mod)) {
    char reason[400];
    if (l->o->nallow == 0)
      snprintf(reason, sizeof reason, "module '%s' may not run: the "
               "drainer has no allow-list", mod);
    else
      snprintf(reason, sizeof reason, "module '%s' is not on the "
               "drainer's allow-list", mod);
    free(r);
    return refuse(l, c, reason);
  }
  parent = parent_of(r, c);
  if (parent == NULL) {
    free(r);
    return TT_ENOMEM;
  }
  why[0] = '\0';
  rc = l->o->prepare(l->o->ud, r, c, &parent, &fn, &arg, &drop, why,
                     sizeof why);
  if (rc != TT_OK || fn == NULL) {
    tt_unref(parent);
    free(r);
    return refuse(l, c, why[0] ? why : "cannot prepare the op");
  }
  memset(&so, 0, sizeof so);
  so.name = r->name;
  if (r->has_retry) {
    retry = r->retry;
    retry.attempts = retry.attempts - r->attempt;
    if (retry.attempts < 1) retry.attempts = 1;
    so.retry = &retry;
  }
  if (r->priority != NULL && tt__pool_has_class(l->p, r->priority))
    so.priority = r->priority;
  so.timeout = r->timeout;
  it = calloc(1, sizeof *it);
  if (it == NULL ||
      !tt__claim_set(&it->c, c->id, c->pool, strlen(c->pool), "", 0,
                     c->deliveries)) {
    free(it);
    if (drop != NULL) drop(arg);
    tt_unref(parent);
    free(r);
    return TT_ENOMEM;
  }
  atomic_init(&it->refs, 2);  /* the loop's and the op's */
  atomic_fetch_add(&l->d->refs, 1);
  it->d = l->d;
  h = tt__pool_submit_hooked(l->p, parent, &so, fn, arg, drop, item_end,
                             item_free, it, &err);
  tt_unref(parent);
  free(r);
  if (h == NULL) {
    if (drop != NULL) drop(arg);
    atomic_store(&it->refs, 1);
    item_release(it);
    /* Full for now: try again later (the lease is renewed meanwhile). */
    if (err == TT_EQUEUE_FULL || err == TT_EQUOTA) return push_backlog(l, c);
    return err;
  }
  tt_unref(h);
  l->fl[l->nfl++] = it;
  return TT_OK;
}

/* reap forgets the items whose ops ended. */
static void reap(loop *l) {
  int i, k = 0;
  tt_obj *x;
  while (tt_chan_try_recv(l->d->ends, &x) == TT_OK) tt_unref(x);
  for (i = 0; i < l->nfl; i++) {
    if (atomic_load(&l->fl[i]->ended))
      item_release(l->fl[i]);
    else
      l->fl[k++] = l->fl[i];
  }
  l->nfl = k;
}

static int renew(loop *l) {
  size_t n = (size_t)l->nfl + l->nback, k = 0, i;
  const tt_claim **v;
  int rc;
  if (n == 0) return TT_OK;
  v = calloc(n, sizeof *v);
  if (v == NULL) return TT_ENOMEM;
  for (i = 0; i < (size_t)l->nfl; i++)
    if (!atomic_load(&l->fl[i]->ended)) v[k++] = &l->fl[i]->c;
  for (i = 0; i < l->nback; i++) v[k++] = &l->backlog[i];
  rc = tt_store_renew(l->s, v, k);
  free(v);
  return rc;
}

/* retry_backlog starts the records that found the pool full, while
** there is room; those that find it full again go back. */
static int retry_backlog(loop *l) {
  size_t i, n = l->nback;
  tt_claim *old = l->backlog;
  int rc = TT_OK;
  l->backlog = NULL;
  l->nback = l->backcap = 0;
  for (i = 0; i < n; i++) {
    if (rc == TT_OK && l->nfl < l->limit)
      rc = start(l, &old[i]);
    else if (rc == TT_OK)
      rc = push_backlog(l, &old[i]);
  }
  tt_claims_free(old, n);  /* what was not moved */
  return rc;
}

int tt_pool_drain_store(tt_pool *p, tt_store *s, tt_ctx *ctx,
                        const tt_drain_opts *o, tt_drain_report *rep) {
  loop l;
  double every, next_renew;
  int rc = TT_OK, cap, room, i;
  if (rep != NULL) memset(rep, 0, sizeof *rep);
  if (p == NULL || s == NULL || o == NULL || o->prepare == NULL ||
      (o->nallow > 0 && o->allow == NULL))
    return TT_EINVAL;
  memset(&l, 0, sizeof l);
  l.p = p;
  l.s = s;
  l.o = o;
  room = tt__pool_room(p, &cap);
  if (room < 0) return TT_ECLOSED;
  l.limit = cap < 1 ? 1 : cap;
  l.fl = calloc((size_t)l.limit, sizeof *l.fl);
  l.d = calloc(1, sizeof *l.d);
  if (l.fl == NULL || l.d == NULL) {
    free(l.fl);
    free(l.d);
    return TT_ENOMEM;
  }
  atomic_init(&l.d->refs, 1);
  l.d->store = tt_ref(s);
  /* Each op sends once; at most 'limit' run at a time from this call. */
  l.d->ends = tt_chan_new((size_t)l.limit + 1);
  if (l.d->ends == NULL) {
    free(l.fl);
    dstate_release(l.d);
    return TT_ENOMEM;
  }
  every = tt_store_lease(s) / 3;
  next_renew = tt_now() + every;
  for (;;) {
    tt_case cs[2];
    int nc = 1, r;
    double wait;
    reap(&l);
    if (ctx != NULL && tt_ctx_err(ctx) != 0) {
      rc = tt_ctx_err(ctx);
      break;
    }
    if (tt_now() >= next_renew) {
      next_renew = tt_now() + every;
      rc = renew(&l);
      if (rc != TT_OK) break;
    }
    room = tt__pool_room(p, NULL);
    if (room < 0) {
      rc = TT_ECLOSED;
      break;
    }
    if (room > l.limit - l.nfl) room = l.limit - l.nfl;
    if (room > 0 && l.nback > 0) {
      int before = l.nfl;
      rc = retry_backlog(&l);
      if (rc != TT_OK) break;
      if (l.nfl > before) continue;
      room = 0;  /* still full: wait a little */
    }
    if (room > 0) {
      tt_claim *cl = NULL;
      size_t ncl = 0, k;
      int want = room < (o->batch > 0 ? o->batch : DEF_BATCH)
                     ? room : (o->batch > 0 ? o->batch : DEF_BATCH);
      rc = tt_store_claim(s, o->pool, want, &cl, &ncl);
      if (rc != TT_OK) break;
      l.rep.claimed += ncl;
      for (k = 0; k < ncl && rc == TT_OK; k++) rc = start(&l, &cl[k]);
      /* Records not started (an error above) run out their lease. */
      tt_claims_free(cl, ncl);
      if (rc != TT_OK) break;
      if (ncl > 0) continue;
      if (l.nfl == 0 && l.nback == 0) break;  /* nothing left: done */
    }
    /* Wait for an op to end, the context, or the next renewal. */
    memset(cs, 0, sizeof cs);
    cs[0].kind = TT_CASE_RECV;
    cs[0].chan = l.d->ends;
    if (ctx != NULL && tt_ctx_done(ctx) != NULL) {
      cs[1].kind = TT_CASE_LATCH;
      cs[1].latch = tt_ctx_done(ctx);
      nc = 2;
    }
    wait = next_renew - tt_now();
    if ((l.nfl == 0 || l.nback > 0) && wait > BUSY_WAIT) wait = BUSY_WAIT;
    if (wait < 0) wait = 0;
    r = tt_select(cs, nc, false, wait);
    if (r == 0) tt_unref(cs[0].item);
    if (r == TT_SELECT_INTERRUPTED) {
      rc = TT_EINTR;
      break;
    }
  }
  if (rc == TT_OK) {
    /* Every op ended: make sure their acknowledgements are written. */
    rc = tt_store_sync(s);
  }
  for (i = 0; i < l.nfl; i++) item_release(l.fl[i]);
  free(l.fl);
  tt_claims_free(l.backlog, l.nback);
  l.rep.completed = atomic_load(&l.d->completed);
  l.rep.failed = atomic_load(&l.d->failed);
  dstate_release(l.d);
  if (rep != NULL) *rep = l.rep;
  return rc;
}
