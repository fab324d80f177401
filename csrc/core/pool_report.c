/*
** pool_report.c -- what a pool tells about itself: its counters, the ops
** running now, recent failures and dead letters (whole or a page at a
** time), retrying and dropping a dead letter, and the snapshots and
** per-tenant counts of an operator's view (the admin page).
**
** Locks: each function takes the pool's 'mu' to copy what it reports and
** copies strings and references under it; nothing that can call out
** (drop(), tt_unref of a user object, an observer) runs under it.
** Retrying a dead letter resubmits it as pool.c's submit path does.
*/
#include <stdio.h>
#include <string.h>

#include "pool_int.h"


/* {====================================================================
** Introspection and dead letters
** ===================================================================== */

void tt_pool_stats_get(tt_pool *p, tt_pool_stats *out) {
  tt__lock(&p->mu);
  *out = p->st;
  tt__unlock(&p->mu);
}

static void copy_str(char *dst, size_t n, const char *src) {
  snprintf(dst, n, "%s", src != NULL ? src : "");
}

size_t tt_pool_inflight(tt_pool *p, tt_inflight *out, size_t max) {
  size_t n = 0;
  tt_list *l;
  tt__lock(&p->mu);
  for (l = p->running.next; l != &p->running; l = l->next) {
    op *o = tt_container_of(l, op, link);
    tt_inflight *r;
    if (o->abandoned) continue;
    if (n++ >= max || out == NULL) continue;
    r = &out[n - 1];
    r->id = o->id;
    copy_str(r->name, sizeof r->name, o->h.name);
    copy_str(r->tenant, sizeof r->tenant, o->tenant);
    copy_str(r->priority, sizeof r->priority, p->cls[o->cls].name);
    r->started = o->started;
    r->attempt = o->attempt;
  }
  tt__unlock(&p->mu);
  return n;
}

static void copy_failure(tt_failure *d, const tt_failure *s) {
  *d = *s;
  d->name = tt__strdup(s->name);
  d->tenant = tt__pool_dup_name(s->tenant, s->tenant_len);
  tt_ref(d->error);
  tt_ref(d->cause);
}

tt_failure *tt_pool_failures(tt_pool *p, size_t *n) {
  tt_failure *a = NULL;
  size_t i, len;
  tt__lock(&p->mu);
  len = p->ring_len;
  if (len > 0) a = calloc(len, sizeof *a);
  if (a != NULL) {
    for (i = 0; i < len; i++)
      copy_failure(&a[i],
                   &p->ring[(p->ring_head + i) % (size_t)p->failures_cap]);
  }
  tt__unlock(&p->mu);
  *n = a != NULL ? len : 0;
  return a;
}

tt_failure *tt_pool_dead_letters(tt_pool *p, size_t *n) {
  tt_failure *a = NULL;
  size_t i = 0, len;
  tt_list *l;
  tt__lock(&p->mu);
  len = (size_t)p->st.dead_held;
  if (len > 0) a = calloc(len, sizeof *a);
  if (a != NULL) {
    for (l = p->dead.next; l != &p->dead; l = l->next, i++) {
      op *o = tt_container_of(l, op, link);
      tt_failure f;
      f.id = o->id;
      f.name = o->h.name;
      f.tenant = o->tenant;
      f.tenant_len = o->tenant_len;
      f.error = o->err;
      f.cause = o->cause;
      f.code = o->code;
      f.attempts = o->attempt;
      f.at = o->dead_at;
      copy_failure(&a[i], &f);
    }
  }
  tt__unlock(&p->mu);
  *n = a != NULL ? len : 0;
  return a;
}

void tt_failures_free(tt_failure *f, size_t n) {
  size_t i;
  if (f == NULL) return;
  for (i = 0; i < n; i++) {
    free(f[i].name);
    free(f[i].tenant);
    tt_unref(f[i].error);
    tt_unref(f[i].cause);
  }
  free(f);
}

static op *find_dead(tt_pool *p, uint64_t id) {
  tt_list *l;
  for (l = p->dead.next; l != &p->dead; l = l->next) {
    op *o = tt_container_of(l, op, link);
    if (o->id == id) return o;
  }
  return NULL;
}

tt_handle *tt_pool_retry_dead(tt_pool *p, uint64_t id, int *err) {
  op *old, *o;
  int rc;
  tt__lock(&p->mu);
  old = find_dead(p, id);
  if (old != NULL) tt_ref(&old->h);
  tt__unlock(&p->mu);
  if (old == NULL) return pool_refused(err, TT_EINVAL);
  o = tt__pool_op_new(p, old->h.name, old->h.fn, old->cls, old->tenant,
                      old->tenant_len, tt_ref(old->base), &old->retry,
                      old->timeout);
  if (o == NULL) {
    tt_unref(old->base);
    tt_unref(&old->h);
    return pool_refused(err, TT_ENOMEM);
  }
  tt__lock(&p->mu);
  if (old->where != OP_DEAD) {
    rc = TT_EINVAL;  /* dropped or retried meanwhile */
  } else {
    rc = tt__pool_admit(p, &p->cls[old->cls], old->tenant, old->tenant_len, -1);
    if (rc == TT_OK) {
      o->h.arg = old->h.arg;
      o->h.drop = old->h.drop;
      rc = tt__pool_accept_locked(p, o);
      if (rc == TT_OK) {
        /* The argument moved to the new op; the old record goes. */
        old->h.arg = NULL;
        old->h.drop = NULL;
        o->sf = old->sf;
        old->sf = NULL;
        tt_list_remove(&old->link);
        old->where = OP_GONE;
        p->st.dead_held--;
      } else {
        o->h.arg = NULL;
        o->h.drop = NULL;
      }
    } else {
      p->st.rejected++;
      tt__pool_emit_rejected(p, rc, old->h.name, old->tenant, old->tenant_len,
                             old->cls);
    }
  }
  tt__unlock(&p->mu);
  pool_deliver(p);
  if (rc == TT_OK) tt_unref(&old->h);  /* the dead list's reference */
  tt_unref(&old->h);
  if (rc != TT_OK) {
    tt_unref(&o->h);
    return pool_refused(err, rc);
  }
  if (err != NULL) *err = TT_OK;
  return &o->h;
}

bool tt_pool_drop_dead(tt_pool *p, uint64_t id) {
  op *o;
  tt__lock(&p->mu);
  o = find_dead(p, id);
  if (o != NULL) {
    tt_list_remove(&o->link);
    o->where = OP_GONE;
    p->st.dead_held--;
  }
  tt__unlock(&p->mu);
  if (o == NULL) return false;
  tt__pool_release_op(o);
  return true;
}

/* }==================================================================== */


/* {====================================================================
** Snapshots for an operator's view (the admin page)
** ===================================================================== */

size_t tt_pool_snapshot(tt_pool *p, tt_pool_info *info,
                        tt_pool_class_info *cls, size_t max) {
  size_t i, ready = 0;
  memset(info, 0, sizeof *info);
  tt__lock(&p->mu);
  info->stats = p->st;
  for (i = 0; i < (size_t)p->ncls; i++) {
    pclass *c = &p->cls[i];
    ready += c->nready;
    if (i >= max || cls == NULL) continue;
    cls[i].name = c->name;
    cls[i].workers = c->workers;
    cls[i].busy = c->busy;
    cls[i].idle = c->idle + c->spinning;  /* spinning: waiting too */
    cls[i].queued = c->nready;
    cls[i].lend = c->lend;
  }
  info->waiting = (size_t)p->st.queued > ready
                      ? (size_t)p->st.queued - ready : 0;
  info->closed = p->closed;
  info->drained = p->drained;
  info->idle = p->st.queued == 0 && p->st.inflight == 0;
  tt__unlock(&p->mu);
  /* Fixed at creation. */
  info->nclasses = p->ncls;
  info->queue_cap = p->queue_cap;
  info->quotas = p->quotas_on;
  info->timeout = p->timeout > 0 ? p->timeout : 0;
  info->dead_cap = p->dead_cap > 0 ? p->dead_cap : 0;
  info->failures_cap = p->failures_cap > 0 ? p->failures_cap : 0;
  return (size_t)p->ncls;
}

/* A tenant bucket and its count, as tt_pool_tenants sorts them. */
typedef struct tcount {
  const tenant_ent *t;
  int count;
} tcount;

static int tcount_cmp(const void *a, const void *b) {
  const tcount *x = a, *y = b;
  size_t n = x->t->len < y->t->len ? x->t->len : y->t->len;
  int c;
  if (x->count != y->count) return x->count > y->count ? -1 : 1;
  c = memcmp(x->t->name, y->t->name, n);
  if (c != 0) return c;
  return x->t->len < y->t->len ? -1 : x->t->len > y->t->len;
}

tt_pool_tenant *tt_pool_tenants(tt_pool *p, size_t max, size_t *n,
                                size_t *total) {
  tcount *all = NULL;
  tt_pool_tenant *out = NULL;
  size_t cnt = 0, cap = 0, i, k = 0;
  *n = 0;
  *total = 0;
  tt__lock(&p->mu);
  for (i = 0; i < TENANT_BUCKETS; i++) {
    const tenant_ent *t;
    for (t = p->tenants[i]; t != NULL; t = t->next) {
      if (cnt == cap) {
        size_t ncap = cap > 0 ? cap * 2 : 16;
        tcount *na = realloc(all, ncap * sizeof *na);
        if (na == NULL) goto out;
        all = na;
        cap = ncap;
      }
      all[cnt].t = t;
      all[cnt].count = t->count;
      cnt++;
    }
  }
  *total = cnt;
  if (cnt == 0 || max == 0) goto out;
  /* The busiest first: those are the ones near their limit. */
  qsort(all, cnt, sizeof *all, tcount_cmp);
  if (max > cnt) max = cnt;
  out = calloc(max, sizeof *out);
  if (out == NULL) goto out;
  for (k = 0; k < max; k++) {
    const tenant_ent *t = all[k].t;
    out[k].name = tt__pool_dup_name(t->name, t->len);
    if (out[k].name == NULL) break;
    out[k].len = t->len;
    out[k].active = all[k].count;
    out[k].limit = tt__pool_quota_limit(p, t->name, t->len);
    if (out[k].limit < 0) out[k].limit = 0;
  }
out:
  tt__unlock(&p->mu);
  free(all);
  if (out != NULL && k == 0) {
    free(out);
    out = NULL;
  }
  *n = out != NULL ? k : 0;
  return out;
}

void tt_pool_tenants_free(tt_pool_tenant *t, size_t n) {
  size_t i;
  if (t == NULL) return;
  for (i = 0; i < n; i++) free(t[i].name);
  free(t);
}

/* dead_record fills a failure record of dead letter 'o' (borrowed
** fields, for copy_failure). */
static void dead_record(op *o, tt_failure *f) {
  f->id = o->id;
  f->name = o->h.name;
  f->tenant = o->tenant;
  f->tenant_len = o->tenant_len;
  f->error = o->err;
  f->cause = o->cause;
  f->code = o->code;
  f->attempts = o->attempt;
  f->at = o->dead_at;
}

tt_failure *tt_pool_dead_page(tt_pool *p, size_t offset, size_t max,
                              size_t *n, size_t *total) {
  tt_failure *a = NULL;
  size_t len, count = 0, i;
  tt_list *l;
  *n = 0;
  tt__lock(&p->mu);
  len = (size_t)p->st.dead_held;
  *total = len;
  if (offset < len && max > 0) {
    count = len - offset < max ? len - offset : max;
    a = calloc(count, sizeof *a);
  }
  if (a != NULL) {
    /* Newest first: the page starts 'offset' records from the newest
    ** end.  A far page is reached from the oldest end, so that no walk
    ** is longer than half the list. */
    if (offset <= len / 2) {
      l = p->dead.prev;
      for (i = 0; i < offset; i++) l = l->prev;
    } else {
      l = p->dead.next;
      for (i = 0; i < len - offset - 1; i++) l = l->next;
    }
    for (i = 0; i < count; i++, l = l->prev) {
      tt_failure f;
      dead_record(tt_container_of(l, op, link), &f);
      copy_failure(&a[i], &f);
    }
  }
  tt__unlock(&p->mu);
  *n = a != NULL ? count : 0;
  return a;
}

tt_failure *tt_pool_failures_page(tt_pool *p, size_t offset, size_t max,
                                  size_t *n, size_t *total) {
  tt_failure *a = NULL;
  size_t len, count = 0, i;
  *n = 0;
  tt__lock(&p->mu);
  len = p->ring_len;
  *total = len;
  if (offset < len && max > 0) {
    count = len - offset < max ? len - offset : max;
    a = calloc(count, sizeof *a);
  }
  if (a != NULL) {
    for (i = 0; i < count; i++) {
      size_t k = (p->ring_head + len - 1 - offset - i) %
                 (size_t)p->failures_cap;
      copy_failure(&a[i], &p->ring[k]);
    }
  }
  tt__unlock(&p->mu);
  *n = a != NULL ? count : 0;
  return a;
}

/* }==================================================================== */
