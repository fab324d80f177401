/*
** pool_life.c -- a pool's creation and freeing: checking the options,
** allocating the pool and starting every worker (tt_pool_new), the last
** user reference (pool_free: close, stop what is queued, join or detach
** the workers) and the last internal one (tt__pool_destroy), and the
** accessors of what is fixed at creation.  pool.c's DESIGN comment,
** "Threads" and "Lifetime", says why it is so.
**
** Locks: creation takes 'mu' only to arm the first idle report.
** pool_free takes 'mu' to close the pool and take its queued ops and dead
** letters off their lists, then stops and drops them, stops the shutdown
** context's after_func, delivers the last events and joins or detaches
** the workers without it.  tt__pool_destroy runs when nobody else can
** reach the pool, and takes no lock.
*/
#include <stdio.h>
#include <string.h>

#include "pool_int.h"

/* The last pool id given out. */
static _Atomic uint64_t pool_ids;


/* {====================================================================
** Creation and freeing
** ===================================================================== */

int tt__pool_retry_norm(const tt_retry *in, tt_retry *out) {
  tt_retry r = *in;
  if (r.attempts < 0 || !(r.backoff >= 0) || !(r.factor >= 0) ||
      !(r.max_backoff >= 0) || !(r.jitter >= 0 && r.jitter <= 1))
    return TT_EINVAL;
  if (r.attempts == 0) r.attempts = 1;
  if (r.factor == 0) r.factor = 2;
  *out = r;
  return TT_OK;
}

static int check_opts(const tt_pool_opts *o) {
  int i, j, sum = 0;
  tt_retry r;
  if (o->workers < 0 || o->queue < 0 || o->nclasses < 0 || o->nquotas < 0)
    return TT_EINVAL;
  if (o->timeout != o->timeout || o->idle_after != o->idle_after ||
      o->exit_timeout != o->exit_timeout ||
      o->spill_timeout != o->spill_timeout)
    return TT_EINVAL;
  if ((o->nclasses > 0 && o->classes == NULL) ||
      (o->nquotas > 0 && o->quotas == NULL) ||
      o->nclasses > POOL_MAX_CLASSES)
    return TT_EINVAL;
  for (i = 0; i < o->nclasses; i++) {
    const tt_class_opts *c = &o->classes[i];
    if (c->name == NULL || c->workers < 1 || c->workers > POOL_MAX_WORKERS)
      return TT_EINVAL;
    for (j = 0; j < i; j++)
      if (strcmp(o->classes[j].name, c->name) == 0) return TT_EINVAL;
    sum += c->workers;
  }
  if (o->nclasses > 0 && o->workers > 0 && sum != o->workers)
    return TT_EINVAL;
  if (sum > POOL_MAX_WORKERS || o->workers > POOL_MAX_WORKERS)
    return TT_EINVAL;
  for (i = 0; i < o->nquotas; i++)
    if (o->quotas[i].tenant == NULL) return TT_EINVAL;
  if (o->tenant_key.obj == NULL && o->tenant_key.str == NULL &&
      o->tenant_key.len != 0)
    return TT_EINVAL;
  return tt__pool_retry_norm(&o->retry, &r);
}

static int pool_describe(tt_obj *o, char *buf, size_t n) {
  tt_pool *p = (tt_pool *)o;
  const char *state;
  tt__lock(&p->mu);
  state = p->drained ? "drained" : p->closed ? "closed" : "open";
  tt__unlock(&p->mu);
  return snprintf(buf, n, "tether.Pool '%s' (%s)", p->name, state);
}

static void pool_free(tt_obj *obj);

const tt_type tt_pool_type = {"tether.Pool", pool_free, pool_describe,
                               NULL};

/* pool_alloc makes a pool with its locks, lists and copies of the
** options, and no threads; NULL when out of memory. */
static tt_pool *pool_alloc(const tt_pool_opts *o) {
  tt_pool *p = calloc(1, sizeof *p);
  pthread_mutexattr_t ma;
  int i, nw = 0;
  if (p == NULL) return NULL;
  tt_obj_init(&p->hdr, &tt_pool_type);
  atomic_init(&p->irefs, 1);
  TT_CHECK(pthread_mutex_init(&p->mu, NULL));
  TT_CHECK(pthread_mutex_init(&p->spare_mu, NULL));
  TT_CHECK(pthread_mutexattr_init(&ma));
  TT_CHECK(pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE));
  TT_CHECK(pthread_mutex_init(&p->obs_mu, &ma));
  TT_CHECK(pthread_mutexattr_destroy(&ma));
  tt__cond_init(&p->ev_cv);
  tt__latch_init(&p->drained_latch);
  tt_list_init(&p->running);
  tt_list_init(&p->waiting);
  tt_list_init(&p->dead);
  tt_list_init(&p->evq);
  p->idle_te.fire = tt__pool_idle_fire;
  p->late_te.fire = tt__pool_late_fire;
  p->spill_te.fire = tt__pool_spill_fire;
  tt_list_init(&p->spilling);
  p->queue_cap = o->queue > 0 ? o->queue : 64;
  p->timeout = o->timeout;
  tt__pool_retry_norm(&o->retry, &p->retry);
  if (o->hook != NULL) p->hook = *o->hook;
  p->quota_default = o->quota_default;
  p->idle_after = o->idle_after;
  p->dead_cap = o->dead_cap == 0 ? 100 : o->dead_cap;
  p->failures_cap = o->failures_cap == 0 ? 100 : o->failures_cap;
  p->id = atomic_fetch_add(&pool_ids, 1) + 1;
  p->exit_timeout = o->exit_timeout == 0 ? 5.0
                    : o->exit_timeout < 0 ? 0.0 : o->exit_timeout;
  p->overflow = tt_ref(o->overflow);
  p->spill_timeout = o->spill_timeout > 0 ? o->spill_timeout : 5.0;
  p->name = tt__strdup(o->name != NULL ? o->name : "pool");
  if (p->name == NULL) goto fail;
  p->ncls = o->nclasses > 0 ? o->nclasses : 1;
  p->cls = calloc((size_t)p->ncls, sizeof *p->cls);
  if (p->cls == NULL) goto fail;
  for (i = 0; i < p->ncls; i++) {
    pclass *c = &p->cls[i];
    tt_list_init(&c->ready);
    tt__cond_init(&c->cv);
    tt_list_init(&c->space);
    if (o->nclasses > 0) {
      c->name = tt__strdup(o->classes[i].name);
      c->workers = o->classes[i].workers;
      c->lend = o->classes[i].lend;
    } else {
      c->name = tt__strdup("default");
      c->workers = o->workers > 0 ? o->workers : 4;
    }
    if (c->name == NULL) goto fail;
    nw += c->workers;
  }
  /* Without a priority, ops go to the class named "default", else to the
  ** last (lowest) one. */
  p->defcls = p->ncls - 1;
  for (i = 0; i < p->ncls; i++)
    if (strcmp(p->cls[i].name, "default") == 0) p->defcls = i;
  /* Enough spares for a full queue and every worker busy. */
  p->spares_max = p->ncls * p->queue_cap + nw;
  if (p->spares_max > OP_SPARES_MAX) p->spares_max = OP_SPARES_MAX;
  p->workers = calloc((size_t)nw, sizeof *p->workers);
  if (p->workers == NULL) goto fail;
  if (o->nquotas > 0) {
    p->quotas = calloc((size_t)o->nquotas, sizeof *p->quotas);
    if (p->quotas == NULL) goto fail;
    for (i = 0; i < o->nquotas; i++) {
      p->quotas[i].limit = o->quotas[i].limit;
      p->quotas[i].tenant = tt__strdup(o->quotas[i].tenant);
      if (p->quotas[i].tenant == NULL) goto fail;
      p->nquotas = i + 1;
      if (o->quotas[i].limit > 0) p->quotas_on = true;
    }
  }
  if (p->quota_default > 0) p->quotas_on = true;
  if (o->tenant_key.obj != NULL || o->tenant_key.str != NULL) {
    p->has_tenant_key = true;
    p->tenant_key.obj = tt_ref(o->tenant_key.obj);
    if (o->tenant_key.str != NULL) {
      char *s = malloc(o->tenant_key.len + 1);
      if (s == NULL) goto fail;
      memcpy(s, o->tenant_key.str, o->tenant_key.len);
      s[o->tenant_key.len] = '\0';
      p->tenant_key.str = s;
      p->tenant_key.len = o->tenant_key.len;
    }
  }
  if (p->failures_cap > 0) {
    p->ring = calloc((size_t)p->failures_cap, sizeof *p->ring);
    if (p->ring == NULL) goto fail;
  }
  p->shutdown = tt_ref(o->shutdown);
  return p;
fail:
  tt__pool_destroy(p);
  return NULL;
}

/* tt__pool_destroy frees the memory once the last internal reference went;
** by then nothing is queued, running or kept but the failure ring. */
void tt__pool_destroy(tt_pool *p) {
  size_t i;
  tt_list *l;
  int k;
  /* Observers still registered are gone with the pool: they hear of it
  ** first, while the pool can still be read (its last event is behind
  ** them). */
  for (k = 0; k < p->nobs_arr; k++)
    if (p->obs[k].o.release != NULL) p->obs[k].o.release(p->obs[k].ud);
  for (i = 0; i < p->ring_len; i++) {
    tt_failure *f = &p->ring[(p->ring_head + i) % (size_t)p->failures_cap];
    free(f->name);
    free(f->tenant);
    tt_unref(f->error);
    tt_unref(f->cause);
  }
  free(p->ring);
  for (k = 0; k < TENANT_BUCKETS; k++) {
    while (p->tenants[k] != NULL) {
      tenant_ent *t = p->tenants[k];
      p->tenants[k] = t->next;
      free(t);
    }
  }
  while ((l = tt_list_shift(&p->evq)) != NULL)
    tt__pool_evnode_free(tt_container_of(l, evnode, link));
  if (p->cls != NULL) {
    for (k = 0; k < p->ncls; k++) {
      free(p->cls[k].name);
      TT_CHECK(pthread_cond_destroy(&p->cls[k].cv));
    }
    free(p->cls);
  }
  if (p->quotas != NULL) {
    for (k = 0; k < p->nquotas; k++) free((char *)p->quotas[k].tenant);
    free(p->quotas);
  }
  free((char *)p->tenant_key.str);
  tt_unref(p->tenant_key.obj);
  tt_unref(p->shut_cause);
  tt_unref(p->shutdown);
  tt_unref(p->idle_w);
  tt_unref(p->overflow);
  while (p->spares != NULL) {
    op *o = p->spares;
    p->spares = o->spare_next;
    free(o);
  }
  free(p->workers);
  free(p->obs);
  free(p->mobs);
  free(p->name);
  tt__latch_destroy(&p->drained_latch);
  TT_CHECK(pthread_cond_destroy(&p->ev_cv));
  TT_CHECK(pthread_mutex_destroy(&p->obs_mu));
  TT_CHECK(pthread_mutex_destroy(&p->spare_mu));
  TT_CHECK(pthread_mutex_destroy(&p->mu));
  free(p);
}

/* join_workers waits for the workers to end; the calling thread, if it
** is one of them, is detached instead (it ends on its own later). */
static void join_workers(tt_pool *p) {
  int i;
  pthread_t self = pthread_self();
  for (i = 0; i < p->nworkers; i++) {
    if (pthread_equal(p->workers[i].t, self))
      TT_CHECK(pthread_detach(self));
    else
      TT_CHECK(pthread_join(p->workers[i].t, NULL));
  }
  p->nworkers = 0;
}

tt_pool *tt_pool_new(const tt_pool_opts *opts, int *err) {
  tt_pool_opts zero;
  tt_pool *p;
  int rc, i, j;
  if (opts == NULL) {
    memset(&zero, 0, sizeof zero);
    opts = &zero;
  }
  rc = check_opts(opts);
  if (rc != TT_OK) goto refuse;
  p = pool_alloc(opts);
  rc = TT_ENOMEM;
  if (p == NULL) goto refuse;
  for (i = 0; i < p->ncls; i++) {
    for (j = 0; j < p->cls[i].workers; j++) {
      worker *w = &p->workers[p->nworkers];
      w->pool = p;
      w->cls = i;
      pool_hold(p);
      if (tt__thread_start(&w->t, tt__pool_worker_main, w, false) != 0) {
        pool_release_held(p);
        rc = TT_ETHREAD;
        goto unwind;
      }
      p->nworkers++;
    }
  }
  if (p->shutdown != NULL && tt_ctx_done(p->shutdown) != NULL) {
    pool_hold(p);
    /* On the canceling thread: running ops see their contexts end at
    ** once, not after an executor thread's wake-up. */
    p->shutdown_af = tt__after_func_now(p->shutdown, tt__pool_on_shutdown, p,
                                        tt__pool_shutdown_drop);
    if (p->shutdown_af == NULL) {
      pool_release_held(p);
      rc = TT_ENOMEM;
      goto unwind;
    }
  }
  tt__lock(&p->mu);
  tt__pool_idle_arm(p);  /* a pool that never gets work reports idle too */
  tt__unlock(&p->mu);
  if (err != NULL) *err = TT_OK;
  return p;
unwind:
  tt__lock(&p->mu);
  p->quit = true;
  p->dying = true;
  p->closed = true;
  tt__pool_wake_all(p);
  tt__unlock(&p->mu);
  join_workers(p);
  pool_release(p);
refuse:
  if (err != NULL) *err = rc;
  return NULL;
}

/* pool_free runs when the last user reference goes: it closes the pool,
** stops what is queued and drops the dead letters; it joins the workers
** when no op is running, and otherwise detaches them without waiting for
** the running ops (tether.h). */
static void pool_free(tt_obj *obj) {
  tt_pool *p = (tt_pool *)obj;
  tt_list stopped, dead;
  tt_list *l;
  bool busy;
  int i;
  /* Ops taken off the pool's lists here go on local lists through their
  ** 'link' ('clink' may be in use by tt__pool_on_shutdown). */
  tt_list_init(&stopped);
  tt_list_init(&dead);
  tt__lock(&p->mu);
  p->closed = true;
  p->dying = true;
  p->quit = true;
  for (i = 0; i < p->ncls; i++) {
    while (!tt_list_empty(&p->cls[i].ready)) {
      op *o = tt_container_of(p->cls[i].ready.next, op, link);
      tt__pool_unqueue_locked(p, o);
      tt_list_push(&stopped, &o->link);
    }
  }
  while (!tt_list_empty(&p->waiting)) {
    op *o = tt_container_of(p->waiting.next, op, link);
    tt__pool_unqueue_locked(p, o);
    tt_list_push(&stopped, &o->link);
  }
  while ((l = tt_list_shift(&p->dead)) != NULL) {
    op *o = tt_container_of(l, op, link);
    o->where = OP_GONE;
    p->st.dead_held--;
    tt_list_push(&dead, &o->link);
  }
  tt__pool_idle_disarm(p);
  tt__pool_wake_all(p);
  tt__pool_settle(p);
  /* Abandoned ops still run, though no longer counted. */
  busy = !tt_list_empty(&p->running);
  tt__unlock(&p->mu);
  while ((l = tt_list_shift(&stopped)) != NULL)
    tt__pool_finish_stop(p, tt_container_of(l, op, link));
  while ((l = tt_list_shift(&dead)) != NULL)
    tt__pool_release_op(tt_container_of(l, op, link));
  pool_deliver(p);
  if (p->shutdown_af != NULL) {
    tt_afterfunc_stop(p->shutdown_af);  /* if stopped, drop releases */
    tt_unref(p->shutdown_af);
    p->shutdown_af = NULL;
  }
  /* Ops still running are not waited for: a pool dropped without a drain
  ** (or a program exiting) must not hang on an op that never ends.  The
  ** workers finish their op and end on their own; each holds an internal
  ** reference, so the memory outlives them. */
  if (busy) {
    for (i = 0; i < p->nworkers; i++)
      TT_CHECK(pthread_detach(p->workers[i].t));
    p->nworkers = 0;
  } else {
    join_workers(p);
  }
  pool_deliver(p);
  pool_release(p);
}

void tt__pool_end_threads(tt_pool *p) {
  bool busy;
  int i;
  tt__lock(&p->mu);
  busy = !p->quit || !tt_list_empty(&p->running);
  tt__unlock(&p->mu);
  if (!busy) {
    join_workers(p);
    return;
  }
  /* Abandoned ops still run: their workers end on their own. */
  for (i = 0; i < p->nworkers; i++)
    TT_CHECK(pthread_detach(p->workers[i].t));
  p->nworkers = 0;
}

const char *tt_pool_name(tt_pool *p) { return p->name; }

uint64_t tt_pool_id(tt_pool *p) { return p->id; }

int tt_pool_workers(tt_pool *p) {
  int i, n = 0;
  for (i = 0; i < p->ncls; i++) n += p->cls[i].workers;  /* fixed */
  return n;
}

/* }==================================================================== */
