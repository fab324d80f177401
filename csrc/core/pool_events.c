/*
** pool_events.c -- a pool's events: queueing them under 'mu' as the
** state changes (and calling immediate observers there), delivering them
** in order to the observers, and adding and removing observers.
**
** Locks: emitting runs under 'mu' (the caller's).  Delivery takes 'mu'
** to take a batch off the queue, then 'obs_mu' without 'mu' while the
** observers run; observe and unobserve take 'obs_mu' then 'mu', as
** pool.c's DESIGN comment ("Events", "Locks") and internal.h order them.
*/
#include <string.h>

#include "pool_int.h"

static _Thread_local tt_pool *tl_delivering;  /* delivering pool, if any */


/* {====================================================================
** Events
** ===================================================================== */

/* tt__pool_dup_name copies 'len' bytes and a NUL; NULL stays NULL. */
char *tt__pool_dup_name(const char *s, size_t len) {
  char *d;
  if (s == NULL) return NULL;
  d = malloc(len + 1);
  if (d == NULL) return NULL;
  memcpy(d, s, len);
  d[len] = '\0';
  return d;
}

/* queue_wanted tells whether some observer that is delivered to later
** wants events of 'kind' (under 'mu'). */
static bool queue_wanted(tt_pool *p, int kind) {
  int i;
  for (i = 0; i < p->nmobs; i++) {
    const observer *ob = &p->mobs[i];
    if (ob->o.immediate) continue;
    if (ob->o.wants == NULL || ob->o.wants(kind, ob->ud)) return true;
  }
  return false;
}

/* emit_now completes event 'e' (under 'mu'), hands it to the immediate
** observers, and tells whether it must also be queued.  The clock is read
** only for a queued event: immediate observers see 'at' as 0, so that
** counting costs no clock read under the lock. */
static bool emit_now(tt_pool *p, tt_event *e) {
  int i;
  e->pool = p;
  e->pool_name = p->name;
  for (i = 0; i < p->nmobs; i++)
    if (p->mobs[i].o.immediate) p->mobs[i].fn(e, p->mobs[i].ud);
  if (!queue_wanted(p, e->kind)) return false;
  e->at = tt_now();
  return true;
}

/* tt__pool_emit queues event 'e' (under 'mu'); the fields about the op
** come from 'o' (may be NULL), the kind-specific ones from 'e'.  An event
** about an op carries the op's context: the attempt's as its function saw
** it, else (before the first attempt) the detached parent.  Callers use
** pool_emit, which skips the call when the pool has no observer. */
void tt__pool_emit(tt_pool *p, op *o, tt_event e) {
  evnode *n;
  if (atomic_load_explicit(&p->nobs, memory_order_relaxed) == 0) return;
  if (o != NULL) {
    e.id = o->id;
    e.name = o->h.name;
    e.tenant = o->tenant;
    e.tenant_len = o->tenant_len;
    e.priority = p->cls[o->cls].name;
    e.attempt = o->attempt;
    if (e.ctx == NULL) e.ctx = o->actx != NULL ? o->actx : o->base;
  }
  if (!emit_now(p, &e)) return;
  n = calloc(1, sizeof *n);
  if (n == NULL) return;  /* events feed logs; the stats stay exact */
  if (o != NULL) n->op = tt_ref(&o->h);
  tt_ref(e.error);
  tt_ref(e.cause);
  tt_ref(e.ctx);
  n->ev = e;
  tt_list_push(&p->evq, &n->link);
  atomic_fetch_add(&p->nev, 1);
}

/* tt__pool_emit_rejected queues a REJECTED event; the names are copied, since
** the caller's strings do not outlive the call. */
void tt__pool_emit_rejected(tt_pool *p, int code, const char *name,
                            const char *tenant, size_t tenant_len, int cls) {
  evnode *n;
  tt_event e;
  if (atomic_load_explicit(&p->nobs, memory_order_relaxed) == 0) return;
  memset(&e, 0, sizeof e);
  e.kind = TT_EV_REJECTED;
  e.name = name != NULL ? name : "op";
  e.tenant = tenant;
  e.tenant_len = tenant != NULL ? tenant_len : 0;
  e.priority = p->cls[cls].name;
  e.code = code;
  if (!emit_now(p, &e)) return;
  n = calloc(1, sizeof *n);
  if (n == NULL) return;
  n->sname = tt__strdup(e.name);
  n->stenant = tt__pool_dup_name(tenant, tenant_len);
  n->ev = e;
  n->ev.name = n->sname;
  n->ev.tenant = n->stenant;
  n->ev.tenant_len = n->stenant != NULL ? tenant_len : 0;
  tt_list_push(&p->evq, &n->link);
  atomic_fetch_add(&p->nev, 1);
}

void tt__pool_evnode_free(evnode *n) {
  tt_unref(n->ev.error);
  tt_unref(n->ev.cause);
  tt_unref(n->ev.ctx);
  tt_unref(n->op);
  free(n->sname);
  free(n->stenant);
  free(n);
}

/* tt__pool_deliver hands the queued events to the observers, unless
** another thread is doing so (it will deliver these too).  Call it
** without 'mu'; callers use pool_deliver, which skips the call when
** nothing is queued. */
void tt__pool_deliver(tt_pool *p) {
  tt_pool *outer;
  if (atomic_load(&p->nev) == 0) return;
  tt__lock(&p->mu);
  if (p->delivering || tt_list_empty(&p->evq)) {
    tt__unlock(&p->mu);
    return;
  }
  p->delivering = true;
  pool_hold(p);
  outer = tl_delivering;
  tl_delivering = p;
  while (!tt_list_empty(&p->evq)) {
    tt_list batch;
    tt_list *l;
    int nb = 0;
    tt_list_init(&batch);
    while ((l = tt_list_shift(&p->evq)) != NULL) {
      tt_list_push(&batch, l);
      nb++;
    }
    tt__unlock(&p->mu);
    tt__lock(&p->obs_mu);
    for (l = batch.next; l != &batch; l = l->next) {
      evnode *n = tt_container_of(l, evnode, link);
      int i;
      /* Re-read the list each time: an observer may change it. */
      for (i = 0; i < p->nobs_arr; i++) {
        const observer *ob = &p->obs[i];
        if (ob->o.immediate) continue;
        if (ob->o.wants != NULL && !ob->o.wants(n->ev.kind, ob->ud))
          continue;
        ob->fn(&n->ev, ob->ud);
      }
    }
    tt__unlock(&p->obs_mu);
    while ((l = tt_list_shift(&batch)) != NULL)
      tt__pool_evnode_free(tt_container_of(l, evnode, link));
    atomic_fetch_sub(&p->nev, nb);
    tt__lock(&p->mu);
  }
  p->delivering = false;
  TT_CHECK(pthread_cond_broadcast(&p->ev_cv));
  tl_delivering = outer;
  tt__unlock(&p->mu);
  pool_release(p);
}

/* tt__pool_flush_events returns once every event queued so far was delivered
** (unless this thread is the one delivering them). */
void tt__pool_flush_events(tt_pool *p) {
  tt__pool_deliver(p);
  if (tl_delivering == p) return;
  tt__lock(&p->mu);
  while (p->delivering) TT_CHECK(pthread_cond_wait(&p->ev_cv, &p->mu));
  tt__unlock(&p->mu);
}

/* grow_obs makes room for one more entry in '*a' (of '*cap'). */
static bool grow_obs(observer **a, int n, int *cap) {
  observer *na;
  int ncap;
  if (n < *cap) return true;
  ncap = *cap == 0 ? 4 : *cap * 2;
  na = realloc(*a, (size_t)ncap * sizeof *na);
  if (na == NULL) return false;
  *a = na;
  *cap = ncap;
  return true;
}

int tt_pool_observe_with(tt_pool *p, tt_observer fn, void *ud,
                         const tt_observer_opts *opts) {
  observer ob;
  if (p == NULL || fn == NULL) return -1;
  memset(&ob, 0, sizeof ob);
  ob.fn = fn;
  ob.ud = ud;
  if (opts != NULL) ob.o = *opts;
  tt__lock(&p->obs_mu);
  tt__lock(&p->mu);
  if (!grow_obs(&p->obs, p->nobs_arr, &p->obs_cap) ||
      !grow_obs(&p->mobs, p->nmobs, &p->mobs_cap)) {
    tt__unlock(&p->mu);
    tt__unlock(&p->obs_mu);
    return -1;
  }
  ob.id = ++p->next_obs;
  p->obs[p->nobs_arr++] = ob;
  p->mobs[p->nmobs++] = ob;
  atomic_store(&p->nobs, p->nobs_arr);
  tt__unlock(&p->mu);
  tt__unlock(&p->obs_mu);
  return ob.id;
}

int tt_pool_observe(tt_pool *p, tt_observer fn, void *ud) {
  return tt_pool_observe_with(p, fn, ud, NULL);
}

/* remove_obs takes the entry 'id' out of 'a' into '*out'; false if there
** is none. */
static bool remove_obs(observer *a, int *n, int id, observer *out) {
  int i;
  for (i = 0; i < *n; i++) {
    if (a[i].id == id) {
      *out = a[i];
      memmove(&a[i], &a[i + 1], (size_t)(*n - i - 1) * sizeof *a);
      (*n)--;
      return true;
    }
  }
  return false;
}

void tt_pool_unobserve(tt_pool *p, int id) {
  observer ob, mob;
  bool found;
  if (p == NULL) return;
  tt__lock(&p->obs_mu);
  tt__lock(&p->mu);
  found = remove_obs(p->obs, &p->nobs_arr, id, &ob);
  remove_obs(p->mobs, &p->nmobs, id, &mob);
  atomic_store(&p->nobs, p->nobs_arr);
  tt__unlock(&p->mu);
  tt__unlock(&p->obs_mu);
  if (found && ob.o.release != NULL) ob.o.release(ob.ud);
}

/* }==================================================================== */
