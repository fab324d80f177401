/*
** pool.c -- worker pools: fixed workers per priority class, bounded
** queues, per-op timeouts and shutdown, retries on the timer thread, dead
** letters, tenant quotas, idle reports, drain, and a stream of events for
** observers.
**
** DESIGN.
**
** Threads.  Each class has its own fixed set of worker threads, all
** started by tt_pool_new (not lazily: a pool that accepted work can always
** run it, and thread failures show up at creation).  A worker takes ops
** from its class's ready queue, and a class with 'lend' also takes from
** the queues of the classes listed after it once its own is empty.
** Workers end once the pool is closed and empty (drained) or being freed,
** after the embedder's exit hook; the pool's free joins them.
**
** An op's life.  Submitted ops wait in their class's ready queue (READY),
** run on a worker (RUNNING), and then complete, fail for good, become a
** dead letter (DEAD), or wait on the timer thread for a retry (WAITING)
** and go back to READY.  A queued op may be stopped.  Every attempt gets
** a fresh context, made when the attempt starts:
** with_timeout(without_cancel(parent), timeout), or with_cancel of the
** detached parent when there is no timeout, so that the pool can always
** cancel it when its shutdown context ends.
**
** Accounting.  Under 'mu', at every instant (tether.h's identity):
**   submitted = completed + failed + stopped + dead + spilled + abandoned
**               + queued + inflight
** where 'queued' counts READY and WAITING ops, 'inflight' RUNNING ones.
** An op written to the overflow store (SPILLING) counts as queued until
** the store answers: then as 'spilled', or as 'failed' (TT_ESTORE) when
** the store failed or spill_timeout ran out first, whichever comes first
** under 'mu'; so a drain waits for the commits of its spills.
** Each op that fails its last attempt is counted once, in 'dead' if the
** pool keeps dead letters, else in 'failed'.  'dead' counts ops that
** became dead letters (cumulative, like every counter but 'queued' and
** 'inflight'); a retried dead letter is a new submission (submitted and
** queued grow, 'dead' stays); 'dead_held' is how many are kept now.
** A handle is resolved under 'mu' together with the counters, so a
** thread that sees a handle resolved and then reads the stats sees it
** counted, and the drained latch is only set after every handle resolved.
** The op's argument is dropped before that, outside the lock: an op that
** ends for good (completed, stopped, failed without a dead letter) drops
** it first and is counted and resolved after, and in between it is
** OP_FINISHING, still counted where it was, so that a drain cannot end
** before every argument is dropped.
**
** Locks.  'mu' guards the pool's state.  Nothing that can call out runs
** under it: no task function, drop(), observer, tt_cancel, or tt_unref
** that could be the last reference of a user object.  It is taken before
** the timer heap's lock (tt__timer_add/del) and a latch's lock (resolving
** handles, the drained latch), as internal.h orders them.  'obs_mu' (a
** recursive mutex, so that an observer may add or remove observers)
** guards the observer list and is held while observers run; observers may
** call the pool, so 'obs_mu' comes before 'mu' and is never taken under
** it.
**
** Events are queued under 'mu', in the order the state changed, and then
** delivered by whichever thread finds no delivery under way (the
** 'delivering' flag): one thread at a time delivers in order, so an op's
** events arrive in the order of its life, without 'mu' held.
**
** Lifetime.  The pool's object reference count belongs to its users; when
** it reaches zero, pool_free closes the pool, stops queued ops, drops dead
** letters and joins the idle workers (busy ones end on their own after
** their op).  The memory lives
** on while internal references ('irefs') remain: the users' share (one),
** each worker, each op record, the idle timer and the spill timer while
** queued, the shutdown after_func while registered, and a thread
** delivering events.  This lets
** a handle outlive its pool and lets the last user reference go on one of
** the pool's own workers (that worker is detached instead of joined).
*/
#include <stdio.h>
#include <string.h>

#include "store.h"

#define POOL_MAX_WORKERS 4096
#define POOL_MAX_CLASSES 64
#define TENANT_MAX 256          /* longest tenant name kept, with its 0 */
#define TENANT_BUCKETS 64
#define MAX_DELAY 1e9           /* a retry delay never exceeds this */

/* Where an op is.  OP_FINISHING: out of every list, about to end (its
** argument is being dropped), still counted where it was.  OP_SPILLING:
** written to the overflow store, waiting for its commit (counted as
** queued, on no list). */
enum {
  OP_NEW, OP_READY, OP_WAITING, OP_RUNNING, OP_DEAD, OP_FINISHING, OP_GONE,
  OP_SPILLING
};

/* An op: a task handle plus what the pool needs to run and retry it. */
typedef struct op {
  tt_handle h;
  tt_pool *pool;           /* holds an internal reference */
  tt_list link;            /* in a ready, waiting, running or dead list;
                           ** the list holds a reference; under pool mu */
  int where;               /* OP_*; under pool mu */
  int cls;                 /* fixed */
  uint64_t id;             /* fixed once accepted */
  char *tenant;            /* fixed; NULL when the op has no tenant */
  tt_ctx *base;            /* without_cancel(parent); fixed */
  tt_retry retry;          /* fixed */
  double timeout;          /* fixed; <= 0: none */
  int attempt;             /* attempts started; under pool mu */
  double started;          /* tt_now() at the attempt's start; pool mu */
  tt_ctx *ctx;             /* the running attempt's context; pool mu */
  tt_obj *err;             /* the last failure's error; pool mu */
  tt_obj *cause;           /* and its cause; pool mu */
  int code;                /* and its code; pool mu */
  double dead_at;          /* tt_wall() when it became a dead letter */
  tt_tentry te;            /* retry delay; holds a reference while queued */
  tt_list clink;           /* on a private list of one pool thread */
  double spill_until;      /* SPILLING: when spill_timeout runs out */
  tt_ctx *cctx;            /* on_shutdown's reference to 'ctx' */
  tt_obj *stale;           /* on_shutdown: a cause to release */
  bool fin_plain;          /* on_shutdown: to end by finish_failed */
  bool fin_release;        /* on_shutdown: an evicted dead letter */
  /* A drainer's hooks (tt__pool_submit_hooked), fixed at creation: 'end'
  ** runs under 'mu' as the handle resolves, 'end_free' from op_fini. */
  void (*end)(void *ud, tt_handle *h);
  void (*end_free)(void *ud);
  void *end_ud;
  bool no_dead;            /* fixed: never a dead letter of the pool */
} op;

/* Queue-plus-running ops of one tenant, for quotas. */
typedef struct tenant_ent {
  struct tenant_ent *next;
  int count;
  char name[];
} tenant_ent;

typedef struct pclass {
  char *name;              /* fixed */
  int workers;             /* fixed */
  bool lend;               /* fixed */
  tt_list ready;           /* of op, FIFO; under pool mu */
  size_t nready;           /* under pool mu */
  int idle;                /* workers waiting on 'cv'; under pool mu */
  int wakes;               /* signals sent and not yet taken; pool mu */
  int space_waiters;       /* submitters waiting on 'space'; pool mu */
  pthread_cond_t cv;       /* idle workers of the class wait here */
  pthread_cond_t space;    /* submitters with a 'wait' wait here */
} pclass;

typedef struct worker {
  pthread_t t;
  tt_pool *pool;
  int cls;
} worker;

typedef struct observer {
  int id;
  tt_observer fn;
  void *ud;
} observer;

/* A queued event and the references that keep its fields alive. */
typedef struct evnode {
  tt_list link;
  tt_event ev;             /* 'error', 'cause', 'ctx' are references */
  tt_handle *op;           /* keeps 'name' and 'tenant' alive */
  char *sname, *stenant;   /* copies, for events without an op */
} evnode;

struct tt_pool {
  tt_obj hdr;
  _Atomic long irefs;      /* see "Lifetime" above */
  pthread_mutex_t mu;

  /* Fixed at creation. */
  char *name;
  int queue_cap;
  double timeout;
  tt_retry retry;
  tt_ctx *shutdown;        /* may be NULL */
  tt_afterfunc *shutdown_af;
  bool has_tenant_key;
  tt_key tenant_key;       /* 'str' is owned, 'obj' referenced */
  bool quotas_on;
  int quota_default;
  tt_quota *quotas;        /* tenants owned */
  int nquotas;
  pclass *cls;
  int ncls;
  int defcls;              /* the class of submissions without priority */
  worker *workers;
  int nworkers;
  double idle_after;
  int dead_cap;            /* <= 0: no dead letters kept */
  int failures_cap;        /* <= 0: no failures kept */
  tt_store *overflow;      /* referenced; may be NULL */
  double spill_timeout;
  /* Under 'mu': ops waiting for their store's commit, oldest first (their
  ** deadlines are in the same order, spill_timeout being the pool's), and
  ** one timer for the oldest; it holds an internal reference while
  ** queued or firing. */
  tt_list spilling;
  tt_tentry spill_te;
  bool spill_armed;

  /* Under 'mu'. */
  bool closed;             /* refuses new work */
  bool drained;            /* closed and empty: the latch is set */
  bool quit;               /* workers end once their queues are empty */
  bool dying;              /* being freed: no retries, no dead letters */
  bool shut;               /* the shutdown context ended */
  tt_obj *shut_cause;      /* its cause, once 'shut' */
  uint64_t next_id;
  tt_pool_stats st;
  tt_list running;         /* of op */
  tt_list waiting;         /* of op, waiting for a retry */
  tt_list dead;            /* of op, oldest first */
  tenant_ent *tenants[TENANT_BUCKETS];
  tt_failure *ring;        /* recent failures, 'failures_cap' slots */
  size_t ring_head, ring_len;
  tt_tentry idle_te;       /* holds an internal reference while queued */
  bool idle_want;          /* an idle report is due at 'idle_at' */
  bool idle_queued;        /* 'idle_te' is queued or firing */
  bool idle_reported;      /* IDLE sent, RESUMING not yet */
  double idle_at;
  tt_list evq;             /* of evnode */
  bool delivering;
  pthread_cond_t ev_cv;    /* signaled when a delivery ends */
  _Atomic int nev;         /* events queued or being delivered */
  tt_latch drained_latch;

  /* Under 'obs_mu'. */
  pthread_mutex_t obs_mu;
  observer *obs;
  int nobs_arr, obs_cap, next_obs;
  _Atomic int nobs;        /* a copy of 'nobs_arr' for lock-free checks */
};

static _Thread_local tt_pool *tl_delivering;  /* delivering pool, if any */

static void pool_destroy(tt_pool *p);
static void spill_fire(tt_tentry *te);


/* {====================================================================
** Internal references
** ===================================================================== */

static void pool_hold(tt_pool *p) { atomic_fetch_add(&p->irefs, 1); }

static void pool_release(tt_pool *p) {
  if (atomic_fetch_sub(&p->irefs, 1) == 1) pool_destroy(p);
}

/* pool_release_held drops an internal reference that cannot be the last
** one, because the caller holds another (safe under 'mu'). */
static void pool_release_held(tt_pool *p) { atomic_fetch_sub(&p->irefs, 1); }

/* }==================================================================== */


/* {====================================================================
** Events
** ===================================================================== */

/* emit queues event 'e' (under 'mu'); the fields about the op come from
** 'o' (may be NULL), the kind-specific ones from 'e'. */
static void emit(tt_pool *p, op *o, tt_event e) {
  evnode *n;
  if (atomic_load_explicit(&p->nobs, memory_order_relaxed) == 0) return;
  n = calloc(1, sizeof *n);
  if (n == NULL) return;  /* events feed logs; the stats stay exact */
  e.pool = p;
  e.pool_name = p->name;
  e.at = tt_now();
  if (o != NULL) {
    n->op = tt_ref(&o->h);
    e.id = o->id;
    e.name = o->h.name;
    e.tenant = o->tenant;
    e.priority = p->cls[o->cls].name;
    e.attempt = o->attempt;
  }
  tt_ref(e.error);
  tt_ref(e.cause);
  tt_ref(e.ctx);
  n->ev = e;
  tt_list_push(&p->evq, &n->link);
  atomic_fetch_add(&p->nev, 1);
}

/* emit_rejected queues a REJECTED event; the names are copied, since
** the caller's strings do not outlive the call. */
static void emit_rejected(tt_pool *p, int code, const char *name,
                          const char *tenant, int cls) {
  evnode *n;
  if (atomic_load_explicit(&p->nobs, memory_order_relaxed) == 0) return;
  n = calloc(1, sizeof *n);
  if (n == NULL) return;
  n->sname = tt__strdup(name != NULL ? name : "op");
  n->stenant = tt__strdup(tenant);
  n->ev.kind = TT_EV_REJECTED;
  n->ev.pool = p;
  n->ev.pool_name = p->name;
  n->ev.at = tt_now();
  n->ev.name = n->sname;
  n->ev.tenant = n->stenant;
  n->ev.priority = p->cls[cls].name;
  n->ev.code = code;
  tt_list_push(&p->evq, &n->link);
  atomic_fetch_add(&p->nev, 1);
}

static void evnode_free(evnode *n) {
  tt_unref(n->ev.error);
  tt_unref(n->ev.cause);
  tt_unref(n->ev.ctx);
  tt_unref(n->op);
  free(n->sname);
  free(n->stenant);
  free(n);
}

/* deliver hands the queued events to the observers, unless another
** thread is doing so (it will deliver these too).  Call it without 'mu'. */
static void deliver(tt_pool *p) {
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
      for (i = 0; i < p->nobs_arr; i++) p->obs[i].fn(&n->ev, p->obs[i].ud);
    }
    tt__unlock(&p->obs_mu);
    while ((l = tt_list_shift(&batch)) != NULL)
      evnode_free(tt_container_of(l, evnode, link));
    atomic_fetch_sub(&p->nev, nb);
    tt__lock(&p->mu);
  }
  p->delivering = false;
  TT_CHECK(pthread_cond_broadcast(&p->ev_cv));
  tl_delivering = outer;
  tt__unlock(&p->mu);
  pool_release(p);
}

/* flush_events returns once every event queued so far was delivered
** (unless this thread is the one delivering them). */
static void flush_events(tt_pool *p) {
  deliver(p);
  if (tl_delivering == p) return;
  tt__lock(&p->mu);
  while (p->delivering) TT_CHECK(pthread_cond_wait(&p->ev_cv, &p->mu));
  tt__unlock(&p->mu);
}

int tt_pool_observe(tt_pool *p, tt_observer fn, void *ud) {
  int id;
  if (p == NULL || fn == NULL) return -1;
  tt__lock(&p->obs_mu);
  if (p->nobs_arr == p->obs_cap) {
    int ncap = p->obs_cap == 0 ? 4 : p->obs_cap * 2;
    observer *no = realloc(p->obs, (size_t)ncap * sizeof *no);
    if (no == NULL) {
      tt__unlock(&p->obs_mu);
      return -1;
    }
    p->obs = no;
    p->obs_cap = ncap;
  }
  id = ++p->next_obs;
  p->obs[p->nobs_arr].id = id;
  p->obs[p->nobs_arr].fn = fn;
  p->obs[p->nobs_arr].ud = ud;
  p->nobs_arr++;
  atomic_store(&p->nobs, p->nobs_arr);
  tt__unlock(&p->obs_mu);
  return id;
}

void tt_pool_unobserve(tt_pool *p, int id) {
  int i;
  if (p == NULL) return;
  tt__lock(&p->obs_mu);
  for (i = 0; i < p->nobs_arr; i++) {
    if (p->obs[i].id == id) {
      memmove(&p->obs[i], &p->obs[i + 1],
              (size_t)(p->nobs_arr - i - 1) * sizeof *p->obs);
      p->nobs_arr--;
      break;
    }
  }
  atomic_store(&p->nobs, p->nobs_arr);
  tt__unlock(&p->obs_mu);
}

/* }==================================================================== */


/* {====================================================================
** Tenants and quotas (all under 'mu')
** ===================================================================== */

static unsigned tenant_hash(const char *s) {
  unsigned h = 2166136261u;
  for (; *s != '\0'; s++) h = (h ^ (unsigned char)*s) * 16777619u;
  return h % TENANT_BUCKETS;
}

/* The quota bucket of an op: its tenant, or "default" without one. */
static const char *quota_key(const char *tenant) {
  return tenant != NULL ? tenant : "default";
}

static tenant_ent *tenant_find(tt_pool *p, const char *name) {
  tenant_ent *t;
  for (t = p->tenants[tenant_hash(name)]; t != NULL; t = t->next)
    if (strcmp(t->name, name) == 0) return t;
  return NULL;
}

static int quota_limit(tt_pool *p, const char *name) {
  int i;
  for (i = 0; i < p->nquotas; i++)
    if (strcmp(p->quotas[i].tenant, name) == 0) return p->quotas[i].limit;
  return p->quota_default;
}

static bool tenant_inc(tt_pool *p, const char *tname) {
  const char *key = quota_key(tname);
  tenant_ent *t;
  if (!p->quotas_on) return true;
  t = tenant_find(p, key);
  if (t == NULL) {
    size_t len = strlen(key);
    unsigned b = tenant_hash(key);
    t = malloc(sizeof *t + len + 1);
    if (t == NULL) return false;
    memcpy(t->name, key, len + 1);
    t->count = 0;
    t->next = p->tenants[b];
    p->tenants[b] = t;
  }
  t->count++;
  return true;
}

static void tenant_dec(tt_pool *p, const char *tname) {
  const char *key = quota_key(tname);
  tenant_ent **pt;
  if (!p->quotas_on) return;
  for (pt = &p->tenants[tenant_hash(key)]; *pt != NULL; pt = &(*pt)->next) {
    tenant_ent *t = *pt;
    if (strcmp(t->name, key) == 0) {
      if (--t->count == 0) {
        *pt = t->next;
        free(t);
      }
      return;
    }
  }
}

/* tenant_of writes the tenant of 'parent' into 'buf' and returns it, or
** NULL if the pool has no tenant key or the context no such value.  A
** tt_bytes value gives its bytes; any other object its description (the
** Lua binding's packed string describes itself as that string). */
static const char *tenant_of(tt_pool *p, tt_ctx *parent, char *buf,
                             size_t n) {
  tt_obj *v = NULL;
  if (!p->has_tenant_key) return NULL;
  if (!tt_ctx_value(parent, &p->tenant_key, &v) || v == NULL) return NULL;
  if (v->type == &tt_bytes_type) {
    tt_bytes *b = (tt_bytes *)v;
    size_t len = b->len < n - 1 ? b->len : n - 1;
    memcpy(buf, b->data, len);
    buf[len] = '\0';
  } else if (tt_describe(v, buf, n) < 0) {
    buf[0] = '\0';
  }
  tt_unref(v);
  return buf;
}

/* }==================================================================== */


/* {====================================================================
** Queues, workers and accounting (all under 'mu' unless said)
** ===================================================================== */

/* wake_for signals a worker that can take work queued in class 'ci': one
** of the class's own, else an idle lender of a higher class.  'wakes'
** counts signals not yet taken, so that a burst of pushes does not spend
** all its signals on the same sleeping worker. */
static void wake_for(tt_pool *p, int ci) {
  int j;
  pclass *c = &p->cls[ci];
  if (c->idle > c->wakes) {
    c->wakes++;
    TT_CHECK(pthread_cond_signal(&c->cv));
    return;
  }
  for (j = 0; j < ci; j++) {
    pclass *l = &p->cls[j];
    if (l->lend && l->idle > l->wakes) {
      l->wakes++;
      TT_CHECK(pthread_cond_signal(&l->cv));
      return;
    }
  }
}

static void wake_all(tt_pool *p) {
  int i;
  for (i = 0; i < p->ncls; i++) {
    TT_CHECK(pthread_cond_broadcast(&p->cls[i].cv));
    TT_CHECK(pthread_cond_broadcast(&p->cls[i].space));
  }
}

static void push_ready(tt_pool *p, op *o) {
  pclass *c = &p->cls[o->cls];
  o->where = OP_READY;
  tt_list_push(&c->ready, &o->link);
  c->nready++;
  wake_for(p, o->cls);
}

/* idle_arm schedules an idle report 'idle_after' from now. */
static void idle_arm(tt_pool *p) {
  if (p->idle_after <= 0 || p->dying || p->closed) return;
  p->idle_want = true;
  p->idle_at = tt_now() + p->idle_after;
  /* A queued (or firing) entry re-arms itself for the later time. */
  if (p->idle_queued) return;
  pool_hold(p);
  if (tt__timer_add(&p->idle_te, p->idle_at) == TT_OK) {
    p->idle_queued = true;
  } else {
    pool_release_held(p);
    p->idle_want = false;
  }
}

static void idle_disarm(tt_pool *p) {
  p->idle_want = false;
  if (p->idle_queued && tt__timer_del(&p->idle_te)) {
    p->idle_queued = false;
    pool_release_held(p);
  }
}

static void idle_fire(tt_tentry *te) {
  tt_pool *p = tt_container_of(te, tt_pool, idle_te);
  bool again = false;
  tt__lock(&p->mu);
  p->idle_queued = false;
  if (p->idle_want && !p->dying && !p->closed) {
    if (tt_now() < p->idle_at) {
      again = tt__timer_add(te, p->idle_at) == TT_OK;
      p->idle_queued = again;
    } else if (p->st.queued == 0 && p->st.inflight == 0) {
      p->idle_want = false;
      if (!p->idle_reported) {
        p->idle_reported = true;
        emit(p, NULL, (tt_event){.kind = TT_EV_IDLE});
      }
    }
  }
  tt__unlock(&p->mu);
  deliver(p);
  if (!again) pool_release(p);
}

/* settle runs after an op left the queue or the workers: an empty pool
** is drained once closed, and otherwise may report idle later. */
static void settle(tt_pool *p) {
  if (p->st.queued != 0 || p->st.inflight != 0) return;
  if (!p->closed) {
    idle_arm(p);
    return;
  }
  if (p->drained) return;
  p->drained = true;
  p->quit = true;
  wake_all(p);
  tt__latch_set(&p->drained_latch);
  emit(p, NULL, (tt_event){.kind = TT_EV_DRAINED});
}

/* take gives worker class 'ci' its next op, moved to RUNNING. */
static op *take(tt_pool *p, int ci) {
  int k;
  for (k = ci; k < p->ncls; k++) {
    pclass *c = &p->cls[k];
    tt_list *l;
    op *o;
    if (k > ci && !p->cls[ci].lend) break;
    l = tt_list_shift(&c->ready);
    if (l == NULL) continue;
    o = tt_container_of(l, op, link);
    c->nready--;
    if (c->space_waiters > 0) TT_CHECK(pthread_cond_signal(&c->space));
    o->where = OP_RUNNING;
    o->attempt++;
    o->started = tt_now();
    p->st.queued--;
    p->st.inflight++;
    tt_list_push(&p->running, &o->link);
    return o;
  }
  return NULL;
}

/* record_failure adds a failed attempt to the ring of recent failures;
** the error and cause of an evicted record go to '*old_err' and
** '*old_cause' for the caller to release after unlocking. */
static void record_failure(tt_pool *p, op *o, tt_obj *err, tt_obj *cause,
                           int code, tt_obj **old_err, tt_obj **old_cause) {
  tt_failure *f;
  size_t cap = (size_t)p->failures_cap;
  if (p->failures_cap <= 0 || p->dying) return;
  if (p->ring_len == cap) {
    f = &p->ring[p->ring_head];
    p->ring_head = (p->ring_head + 1) % cap;
    free(f->name);
    free(f->tenant);
    *old_err = f->error;
    *old_cause = f->cause;
  } else {
    f = &p->ring[(p->ring_head + p->ring_len) % cap];
    p->ring_len++;
  }
  f->id = o->id;
  f->name = tt__strdup(o->h.name);
  f->tenant = tt__strdup(o->tenant);
  f->error = tt_ref(err);
  f->cause = tt_ref(cause);
  f->code = code;
  f->attempts = o->attempt;
  f->at = tt_wall();
}

/* retry_delay is the wait before attempt n+1, after n attempts. */
static double retry_delay(const tt_retry *r, int n) {
  double d = r->backoff;
  int i;
  double cap = r->max_backoff > 0 ? r->max_backoff : MAX_DELAY;
  for (i = 1; i < n && d < cap; i++) d *= r->factor;
  if (d > cap) d = cap;
  if (r->jitter > 0) {
    double u = (double)(tt__random() >> 11) * (1.0 / 9007199254740992.0);
    d *= 1.0 - r->jitter + 2.0 * r->jitter * u;
  }
  if (!(d >= 0)) d = 0;
  return d;
}

/* shut_now tells whether the shutdown context has ended, even if its
** after_func has not run yet. */
static bool shut_now(tt_pool *p) {
  return p->shut || (p->shutdown != NULL && tt_ctx_err(p->shutdown) != 0);
}

/* }==================================================================== */


/* {====================================================================
** Running ops
** ===================================================================== */

/* resolve gives 'o' its final state under 'mu' and tells a drainer's
** hook. */
static void resolve(op *o, int state, tt_obj *result) {
  tt__handle_resolve(&o->h, state, result);
  if (o->end != NULL) o->end(o->end_ud, &o->h);
}

static void retry_fire(tt_tentry *te) {
  op *o = tt_container_of(te, op, te);
  tt_pool *p = o->pool;
  tt__lock(&p->mu);
  if (o->where == OP_WAITING) {
    tt_list_remove(&o->link);
    push_ready(p, o);
  }
  tt__unlock(&p->mu);
  tt_unref(&o->h);  /* the timer's reference */
}

/* release_op drops the argument an op still holds and the pool's
** reference to it; for ops that left every list, after unlocking. */
static void release_op(op *o) {
  tt__handle_drop_arg(&o->h);
  tt_unref(&o->h);
}

static void op_completed(tt_pool *p, op *o, tt_obj *out, double dur) {
  tt_ctx *ctx;
  /* The argument goes before the handle resolves, so that a waiter (and
  ** a drain) sees the op entirely finished. */
  tt__handle_drop_arg(&o->h);
  tt__lock(&p->mu);
  ctx = o->ctx;
  o->ctx = NULL;
  tt_list_remove(&o->link);
  o->where = OP_GONE;
  p->st.inflight--;
  p->st.completed++;
  tenant_dec(p, o->tenant);
  resolve(o, TT_H_DONE, out);
  emit(p, o, (tt_event){.kind = TT_EV_COMPLETED, .duration = dur,
                        .ctx = ctx});
  settle(p);
  tt__unlock(&p->mu);
  /* The attempt is over: end its context, as Go's "defer cancel()" does,
  ** so its deadline leaves the timer heap now rather than when it
  ** passes. */
  tt_cancel(ctx, NULL);
  tt_unref(ctx);
  deliver(p);
  tt_unref(&o->h);  /* the running list's reference */
}

/* to_dead_locked makes 'o', which failed for good and is out of every
** list, a dead letter, if the pool keeps them (the caller has taken it
** out of 'queued' or 'inflight'); '*evicted' gets a dead letter pushed
** out by the cap, to release after unlocking.  It returns false when the
** op must end as a plain failure instead (see finish_failed). */
static bool to_dead_locked(tt_pool *p, op *o, op **evicted) {
  if (p->dead_cap <= 0 || p->dying || o->no_dead) return false;
  tenant_dec(p, o->tenant);
  resolve(o, TT_H_FAILED, tt_ref(o->err));
  o->where = OP_DEAD;
  o->dead_at = tt_wall();
  tt_list_push(&p->dead, &o->link);
  p->st.dead++;
  p->st.dead_held++;
  if (p->st.dead_held > (uint64_t)p->dead_cap) {
    op *old = tt_container_of(tt_list_shift(&p->dead), op, link);
    old->where = OP_GONE;
    p->st.dead_held--;
    p->st.dead_dropped++;
    *evicted = old;
  }
  emit(p, o, (tt_event){.kind = TT_EV_DEAD, .code = o->code,
                        .error = o->err, .cause = o->cause});
  settle(p);
  return true;
}

/* finish_failed ends an op that failed for good and is not kept: it was
** marked OP_FINISHING under the lock and still counts as queued or in
** flight, so that drain cannot finish before its argument is dropped. */
static void finish_failed(tt_pool *p, op *o, bool queued) {
  tt__handle_drop_arg(&o->h);
  tt__lock(&p->mu);
  if (queued)
    p->st.queued--;
  else
    p->st.inflight--;
  p->st.failed++;
  tenant_dec(p, o->tenant);
  o->where = OP_GONE;
  resolve(o, TT_H_FAILED, tt_ref(o->err));
  emit(p, o, (tt_event){.kind = TT_EV_FAILED, .code = o->code,
                        .error = o->err, .cause = o->cause});
  settle(p);
  tt__unlock(&p->mu);
  deliver(p);
  tt_unref(&o->h);  /* the pool's reference */
}

static void op_failed(tt_pool *p, op *o, tt_obj *err, double dur) {
  tt_ctx *ctx = o->ctx;  /* only this thread changes it while running */
  tt_obj *cause, *old_err, *old_cause;
  tt_obj *rec_err = NULL, *rec_cause = NULL;
  op *evicted = NULL;
  int code = tt__error_code(err);
  bool plain = false;
  /* A failure in a context that ended is blamed on the context. */
  if (ctx != NULL && tt_ctx_err(ctx) != 0)
    cause = tt_ctx_cause(ctx);
  else
    cause = tt_ref(err);
  tt__lock(&p->mu);
  o->ctx = NULL;
  tt_list_remove(&o->link);
  record_failure(p, o, err, cause, code, &rec_err, &rec_cause);
  old_err = o->err;
  old_cause = o->cause;
  o->err = err;
  o->cause = cause;
  o->code = code;
  if (o->attempt < o->retry.attempts && !p->dying && !shut_now(p)) {
    double delay = retry_delay(&o->retry, o->attempt);
    o->where = OP_WAITING;
    p->st.inflight--;
    p->st.queued++;
    p->st.retried++;
    tt__handle_set_state(&o->h, TT_H_QUEUED);
    emit(p, o, (tt_event){.kind = TT_EV_RETRIED, .duration = dur,
                          .delay = delay, .code = code, .error = err,
                          .cause = cause, .ctx = ctx});
    tt_ref(&o->h);  /* the timer's */
    if (tt__timer_add(&o->te, tt_now() + delay) == TT_OK) {
      tt_list_push(&p->waiting, &o->link);
    } else {
      /* No timer: retrying at once beats losing the op. */
      tt_unref(&o->h);  /* not the last: the pool holds one */
      push_ready(p, o);
    }
  } else {
    p->st.inflight--;
    if (!to_dead_locked(p, o, &evicted)) {
      p->st.inflight++;  /* until finish_failed */
      o->where = OP_FINISHING;
      plain = true;
    }
  }
  tt__unlock(&p->mu);
  if (evicted != NULL) release_op(evicted);
  tt_unref(old_err);
  tt_unref(old_cause);
  tt_unref(rec_err);
  tt_unref(rec_cause);
  tt_cancel(ctx, NULL);  /* the attempt is over, as in op_completed */
  tt_unref(ctx);
  if (plain)
    finish_failed(p, o, false);
  else
    deliver(p);
}

/* run_op runs one attempt of 'o', taken by this worker. */
static void run_op(tt_pool *p, op *o) {
  tt_ctx *ctx;
  tt_obj *out = NULL, *cause = NULL;
  bool shut;
  double t0;
  int rc;
  /* A fresh context per attempt, made now so that time spent queued or
  ** waiting for a retry does not count against the timeout. */
  if (o->timeout > 0)
    ctx = tt_with_timeout(o->base, o->timeout, NULL);
  else
    ctx = tt_with_cancel(o->base);
  tt__handle_set_state(&o->h, TT_H_RUNNING);
  tt__lock(&p->mu);
  o->ctx = ctx;
  shut = p->shut;
  if (shut) cause = tt_ref(p->shut_cause);
  emit(p, o, (tt_event){.kind = TT_EV_STARTED, .ctx = ctx});
  tt__unlock(&p->mu);
  deliver(p);
  /* The after_func may not have run yet: look at the context itself. */
  if (!shut && p->shutdown != NULL && tt_ctx_err(p->shutdown) != 0) {
    shut = true;
    cause = tt_ctx_cause(p->shutdown);
  }
  if (shut && ctx != NULL) tt_cancel(ctx, cause);
  tt_unref(cause);
  t0 = tt_now();
  if (ctx != NULL)
    rc = o->h.fn(ctx, o->h.arg, &out);
  else
    rc = TT_ENOMEM;
  if (rc == TT_OK)
    op_completed(p, o, out, tt_now() - t0);
  else
    op_failed(p, o, tt__task_error(rc, out), tt_now() - t0);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  tt_pool *p = w->pool;
  pclass *c = &p->cls[w->cls];
  tt__lock(&p->mu);
  for (;;) {
    op *o = take(p, w->cls);
    if (o != NULL) {
      tt__unlock(&p->mu);
      run_op(p, o);
      tt__lock(&p->mu);
      continue;
    }
    if (p->quit) break;
    c->idle++;
    TT_CHECK(pthread_cond_wait(&c->cv, &p->mu));
    c->idle--;
    if (c->wakes > 0) c->wakes--;
    if (c->wakes > c->idle) c->wakes = c->idle;
  }
  tt__unlock(&p->mu);
  tt__thread_exit_hook();
  pool_release(p);
  return NULL;
}

/* }==================================================================== */


/* {====================================================================
** Stopping, shutdown
** ===================================================================== */

/* unqueue_locked takes a READY or WAITING op off its queue and marks it
** OP_FINISHING; it still counts as queued until finish_stop. */
static void unqueue_locked(tt_pool *p, op *o) {
  if (o->where == OP_READY) {
    pclass *c = &p->cls[o->cls];
    c->nready--;
    if (c->space_waiters > 0) TT_CHECK(pthread_cond_signal(&c->space));
  } else if (tt__timer_del(&o->te)) {
    tt_unref(&o->h);  /* the timer's; not the last: the pool holds one */
  }
  tt_list_remove(&o->link);
  o->where = OP_FINISHING;
}

/* finish_stop drops the argument of an unqueued op, then counts it and
** resolves it as STOPPED. */
static void finish_stop(tt_pool *p, op *o) {
  tt__handle_drop_arg(&o->h);
  tt__lock(&p->mu);
  o->where = OP_GONE;
  p->st.queued--;
  p->st.stopped++;
  tenant_dec(p, o->tenant);
  resolve(o, TT_H_STOPPED, NULL);
  emit(p, o, (tt_event){.kind = TT_EV_STOPPED});
  settle(p);
  tt__unlock(&p->mu);
  deliver(p);
  tt_unref(&o->h);  /* the pool's reference */
}

static bool op_stop(tt_handle *h) {
  op *o = (op *)h;
  tt_pool *p = o->pool;
  bool queued;
  tt__lock(&p->mu);
  queued = o->where == OP_READY || o->where == OP_WAITING;
  if (queued) unqueue_locked(p, o);
  tt__unlock(&p->mu);
  if (queued) finish_stop(p, o);
  return queued;
}

static void op_fini(tt_handle *h) {
  op *o = (op *)h;
  tt_unref(o->base);
  tt_unref(o->ctx);
  tt_unref(o->err);
  tt_unref(o->cause);
  free(o->tenant);
  if (o->end_free != NULL) o->end_free(o->end_ud);
  if (o->pool != NULL) pool_release(o->pool);
}

static const tt__task_vt op_vt = {op_stop, op_fini};

/* on_shutdown runs (on the executor) when the shutdown context ends:
** running ops see their contexts canceled with its cause, and ops waiting
** for a retry fail for good, with that cause. */
static void on_shutdown(void *arg) {
  tt_pool *p = arg;
  tt_obj *cause = tt_ctx_cause(p->shutdown);
  tt_list cancel, plain, stale;
  tt_list *l;
  tt_list_init(&cancel);
  tt_list_init(&plain);
  tt_list_init(&stale);
  tt__lock(&p->mu);
  if (!p->shut) {
    p->shut = true;
    p->shut_cause = cause;
    cause = NULL;
    for (l = p->running.next; l != &p->running; l = l->next) {
      op *o = tt_container_of(l, op, link);
      if (o->ctx == NULL) continue;  /* it will look at 'shut' itself */
      o->cctx = tt_ref(o->ctx);
      tt_ref(&o->h);
      tt_list_push(&cancel, &o->clink);
    }
    while (!tt_list_empty(&p->waiting)) {
      op *o = tt_container_of(p->waiting.next, op, link);
      op *evicted = NULL;
      unqueue_locked(p, o);
      /* The old cause is released after unlocking, through 'stale'. */
      o->stale = o->cause;
      o->cause = tt_ref(p->shut_cause);
      tt_ref(&o->h);
      tt_list_push(&stale, &o->clink);
      p->st.queued--;
      if (!to_dead_locked(p, o, &evicted)) {
        p->st.queued++;  /* until finish_failed */
        o->fin_plain = true;
      }
      if (evicted != NULL) {
        /* Dead letters made here a moment ago are already on 'stale'. */
        if (tt_list_linked(&evicted->clink))
          evicted->fin_release = true;
        else
          tt_list_push(&plain, &evicted->clink);
      }
    }
    settle(p);
  }
  tt__unlock(&p->mu);
  tt_unref(cause);
  while ((l = tt_list_shift(&cancel)) != NULL) {
    op *o = tt_container_of(l, op, clink);
    tt_cancel(o->cctx, p->shut_cause);
    tt_unref(o->cctx);
    o->cctx = NULL;
    tt_unref(&o->h);
  }
  while ((l = tt_list_shift(&stale)) != NULL) {
    op *o = tt_container_of(l, op, clink);
    tt_unref(o->stale);
    o->stale = NULL;
    if (o->fin_plain)
      finish_failed(p, o, true);
    else if (o->fin_release)
      release_op(o);
    tt_unref(&o->h);  /* the reference of 'stale' */
  }
  while ((l = tt_list_shift(&plain)) != NULL)
    release_op(tt_container_of(l, op, clink));
  deliver(p);
  pool_release(p);  /* the after_func's reference */
}

static void shutdown_drop(void *arg) { pool_release(arg); }

/* }==================================================================== */


/* {====================================================================
** Creation and freeing
** ===================================================================== */

static int retry_norm(const tt_retry *in, tt_retry *out) {
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
  return retry_norm(&o->retry, &r);
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

const tt_type tt_pool_type = {"tether.Pool", pool_free, pool_describe};

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
  p->idle_te.fire = idle_fire;
  p->spill_te.fire = spill_fire;
  tt_list_init(&p->spilling);
  p->queue_cap = o->queue > 0 ? o->queue : 64;
  p->timeout = o->timeout;
  retry_norm(&o->retry, &p->retry);
  p->quota_default = o->quota_default;
  p->idle_after = o->idle_after;
  p->dead_cap = o->dead_cap == 0 ? 100 : o->dead_cap;
  p->failures_cap = o->failures_cap == 0 ? 100 : o->failures_cap;
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
    tt__cond_init(&c->space);
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
  pool_destroy(p);
  return NULL;
}

/* pool_destroy frees the memory once the last internal reference went;
** by then nothing is queued, running or kept but the failure ring. */
static void pool_destroy(tt_pool *p) {
  size_t i;
  tt_list *l;
  int k;
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
    evnode_free(tt_container_of(l, evnode, link));
  if (p->cls != NULL) {
    for (k = 0; k < p->ncls; k++) {
      free(p->cls[k].name);
      TT_CHECK(pthread_cond_destroy(&p->cls[k].cv));
      TT_CHECK(pthread_cond_destroy(&p->cls[k].space));
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
  tt_unref(p->overflow);
  free(p->workers);
  free(p->obs);
  free(p->name);
  tt__latch_destroy(&p->drained_latch);
  TT_CHECK(pthread_cond_destroy(&p->ev_cv));
  TT_CHECK(pthread_mutex_destroy(&p->obs_mu));
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
      if (tt__thread_start(&w->t, worker_main, w, false) != 0) {
        pool_release_held(p);
        rc = TT_ETHREAD;
        goto unwind;
      }
      p->nworkers++;
    }
  }
  if (p->shutdown != NULL && tt_ctx_done(p->shutdown) != NULL) {
    pool_hold(p);
    p->shutdown_af = tt_after_func(p->shutdown, on_shutdown, p,
                                   shutdown_drop);
    if (p->shutdown_af == NULL) {
      pool_release_held(p);
      rc = TT_ENOMEM;
      goto unwind;
    }
  }
  tt__lock(&p->mu);
  idle_arm(p);  /* a pool that never gets work reports idle too */
  tt__unlock(&p->mu);
  if (err != NULL) *err = TT_OK;
  return p;
unwind:
  tt__lock(&p->mu);
  p->quit = true;
  p->dying = true;
  p->closed = true;
  wake_all(p);
  tt__unlock(&p->mu);
  join_workers(p);
  pool_release(p);
refuse:
  if (err != NULL) *err = rc;
  return NULL;
}

/* pool_free runs when the last user reference goes: it closes the pool,
** stops what is queued, drops the dead letters, waits for the running
** ops and joins the workers. */
static void pool_free(tt_obj *obj) {
  tt_pool *p = (tt_pool *)obj;
  tt_list stopped, dead;
  tt_list *l;
  bool busy;
  int i;
  /* Ops taken off the pool's lists here go on local lists through their
  ** 'link' ('clink' may be in use by on_shutdown). */
  tt_list_init(&stopped);
  tt_list_init(&dead);
  tt__lock(&p->mu);
  p->closed = true;
  p->dying = true;
  p->quit = true;
  for (i = 0; i < p->ncls; i++) {
    while (!tt_list_empty(&p->cls[i].ready)) {
      op *o = tt_container_of(p->cls[i].ready.next, op, link);
      unqueue_locked(p, o);
      tt_list_push(&stopped, &o->link);
    }
  }
  while (!tt_list_empty(&p->waiting)) {
    op *o = tt_container_of(p->waiting.next, op, link);
    unqueue_locked(p, o);
    tt_list_push(&stopped, &o->link);
  }
  while ((l = tt_list_shift(&p->dead)) != NULL) {
    op *o = tt_container_of(l, op, link);
    o->where = OP_GONE;
    p->st.dead_held--;
    tt_list_push(&dead, &o->link);
  }
  idle_disarm(p);
  wake_all(p);
  settle(p);
  busy = p->st.inflight > 0;
  tt__unlock(&p->mu);
  while ((l = tt_list_shift(&stopped)) != NULL)
    finish_stop(p, tt_container_of(l, op, link));
  while ((l = tt_list_shift(&dead)) != NULL)
    release_op(tt_container_of(l, op, link));
  deliver(p);
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
  deliver(p);
  pool_release(p);
}

const char *tt_pool_name(tt_pool *p) { return p->name; }

/* }==================================================================== */


/* {====================================================================
** Submitting
** ===================================================================== */

static int class_index(tt_pool *p, const char *name) {
  int i;
  if (name == NULL) return p->defcls;
  for (i = 0; i < p->ncls; i++)
    if (strcmp(p->cls[i].name, name) == 0) return i;
  return -1;
}

/* quota_ok tells under 'mu' whether quota bucket 'qkey' has room. */
static bool quota_ok(tt_pool *p, const char *qkey) {
  if (p->quotas_on) {
    int limit = quota_limit(p, qkey);
    tenant_ent *t = tenant_find(p, qkey);
    if (limit > 0 && t != NULL && t->count >= limit) return false;
  }
  return true;
}

/* admit decides under 'mu' whether one more op fits class 'c' and quota
** bucket 'qkey', waiting for queue space until 'until' (< 0: not at
** all).  Only the ready queue counts against the capacity: ops waiting
** for a retry re-enter it when their delay ends, whatever its length. */
static int admit(tt_pool *p, pclass *c, const char *qkey, double until) {
  for (;;) {
    if (p->closed) return TT_ECLOSED;
    if (c->nready < (size_t)p->queue_cap) break;
    if (until < 0 || tt_now() >= until) return TT_EQUEUE_FULL;
    c->space_waiters++;
    tt__timedwait(&c->space, &p->mu, until);
    c->space_waiters--;
  }
  return quota_ok(p, qkey) ? TT_OK : TT_EQUOTA;
}

/* accept_locked puts op 'o' (its argument already in place) into the
** pool; it fails only for want of memory, and then changes nothing. */
static int accept_locked(tt_pool *p, op *o) {
  if (!tenant_inc(p, o->tenant)) return TT_ENOMEM;
  o->id = ++p->next_id;
  idle_disarm(p);
  if (p->idle_reported) {
    p->idle_reported = false;
    emit(p, NULL, (tt_event){.kind = TT_EV_RESUMING});
  }
  p->st.submitted++;
  p->st.queued++;
  tt_ref(&o->h);  /* the pool's */
  emit(p, o, (tt_event){.kind = TT_EV_SUBMITTED});
  push_ready(p, o);
  return TT_OK;
}

/* op_new makes an op that holds no argument yet; it takes over 'base'
** on success only. */
static op *op_new(tt_pool *p, const char *name, tt_fn fn, int cls,
                  const char *tenant, tt_ctx *base, const tt_retry *retry,
                  double timeout) {
  op *o = calloc(1, sizeof *o);
  if (o == NULL) return NULL;
  if (!tt__handle_init(&o->h, &op_vt, name, "op", fn, NULL, NULL)) {
    free(o);
    return NULL;
  }
  pool_hold(p);
  o->pool = p;
  tt_list_init(&o->link);
  tt_list_init(&o->clink);
  o->te.fire = retry_fire;
  o->cls = cls;
  o->retry = *retry;
  o->timeout = timeout;
  if (tenant != NULL) {
    o->tenant = tt__strdup(tenant);
    if (o->tenant == NULL) {
      tt_unref(&o->h);
      return NULL;  /* the caller keeps 'base' */
    }
  }
  o->base = base;
  return o;
}

static tt_handle *refused(int *err, int rc) {
  if (err != NULL) *err = rc;
  return NULL;
}

/* A submission's settings, resolved against the pool's by first_look. */
typedef struct sub {
  char tbuf[TENANT_MAX];
  const char *tenant, *name;
  tt_retry retry;
  double timeout, until;
  int ci;
} sub;

/* settle_sub resolves a submission's settings against the pool's. */
static int settle_sub(tt_pool *p, tt_ctx *parent, const tt_submit_opts *so,
                      sub *s) {
  s->name = so != NULL ? so->name : NULL;
  s->until = -1;
  if (p == NULL || parent == NULL) return TT_EINVAL;
  s->ci = class_index(p, so != NULL ? so->priority : NULL);
  if (s->ci < 0) return TT_EINVAL;
  s->retry = p->retry;
  s->timeout = p->timeout;
  if (so != NULL) {
    if (so->retry != NULL && retry_norm(so->retry, &s->retry) != TT_OK)
      return TT_EINVAL;
    if (so->timeout != so->timeout || so->wait != so->wait)
      return TT_EINVAL;
    if (so->timeout != 0) s->timeout = so->timeout;
    if (so->wait > 0) s->until = tt_now() + so->wait;
  }
  s->tenant = tenant_of(p, parent, s->tbuf, sizeof s->tbuf);
  return TT_OK;
}

/* can_spill tells whether a submission may go to the overflow store. */
static bool can_spill(tt_pool *p, const tt_submit_opts *so) {
  return p->overflow != NULL && so != NULL && so->spill_fn != NULL;
}

/* reject_locked counts and emits a refusal. */
static void reject_locked(tt_pool *p, int rc, const sub *s) {
  p->st.rejected++;
  emit_rejected(p, rc, s->name, s->tenant, s->ci);
}

/* first_look resolves a submission's settings and takes the cheap first
** look at the pool (closed, queue room, quota), so that a refusal
** allocates nothing; a refusal is counted and emitted here.  A
** submission that would spill gets TT_ESPILLED (counted later). */
static int first_look(tt_pool *p, tt_ctx *parent, const tt_submit_opts *so,
                      sub *s) {
  int rc = settle_sub(p, parent, so, s);
  if (rc != TT_OK) return rc;
  tt__lock(&p->mu);
  rc = admit(p, &p->cls[s->ci], quota_key(s->tenant), s->until);
  if (rc == TT_EQUEUE_FULL && can_spill(p, so))
    rc = quota_ok(p, quota_key(s->tenant)) ? TT_ESPILLED : TT_EQUOTA;
  if (rc != TT_OK && rc != TT_ESPILLED) reject_locked(p, rc, s);
  tt__unlock(&p->mu);
  if (rc != TT_OK && rc != TT_ESPILLED) deliver(p);
  return rc;
}

int tt_pool_precheck(tt_pool *p, tt_ctx *parent, const tt_submit_opts *so) {
  sub s;
  /* A bounded wait for room is the submission's own business. */
  if (so != NULL && so->wait > 0) return TT_OK;
  return first_look(p, parent, so, &s);
}

/* {====================================================================
** Spilling to the overflow store
** ===================================================================== */

/* spill_end ends a spilling op with the store's answer: committed (rc
** TT_OK, 'text' the id) or not (TT_ESTORE, 'text' the reason).  Whoever
** comes second (the commit after the timeout, or the timeout after the
** commit) finds the op gone and does nothing but log. */
static void spill_end(op *o, int rc, const char *text, bool from_timer) {
  tt_pool *p = o->pool;
  tt_obj *rec_err = NULL, *rec_cause = NULL, *old_err = NULL;
  tt_error *e;
  bool mine = false;
  char msg[320];
  if (rc == TT_OK) {
    snprintf(msg, sizeof msg, "spilled to the store of pool '%s' as id %s",
             p->name, text);
    e = tt_error_new(TT_ESPILLED, msg, NULL);
    if (e != NULL) e->value = (tt_obj *)tt_bytes_new(text, strlen(text));
  } else {
    snprintf(msg, sizeof msg, "store unavailable for pool '%s': %s",
             p->name, text != NULL && text[0] ? text : tt_strerror(rc));
    e = tt_error_new(TT_ESTORE, msg, NULL);
  }
  tt__lock(&p->mu);
  if (o->where == OP_SPILLING) {
    mine = true;
    tt_list_remove(&o->link);
    o->where = OP_GONE;
    p->st.queued--;
    if (rc == TT_OK) {
      p->st.spilled++;
      resolve(o, TT_H_FAILED, (tt_obj *)e);
      emit(p, o, (tt_event){.kind = TT_EV_SPILLED});
    } else {
      p->st.failed++;
      old_err = o->err;
      o->err = tt_ref(e);
      o->code = TT_ESTORE;
      record_failure(p, o, (tt_obj *)e, (tt_obj *)e, TT_ESTORE, &rec_err,
                     &rec_cause);
      resolve(o, TT_H_FAILED, (tt_obj *)e);
      emit(p, o, (tt_event){.kind = TT_EV_FAILED, .code = TT_ESTORE,
                            .error = (tt_obj *)e, .cause = (tt_obj *)e});
    }
    settle(p);
  }
  tt__unlock(&p->mu);
  if (!mine) {
    if (rc == TT_OK && !from_timer) {
      tt_field f[] = {TT_FSTR("pool", p->name), TT_FSTR("id", text)};
      tt_log(TT_LOG_WARN, "spill committed after its spill_timeout; the "
             "op is in the store", f, 2);
    }
    tt_unref(e);
  }
  tt_unref(old_err);
  tt_unref(rec_err);
  tt_unref(rec_cause);
  deliver(p);
  if (mine) tt_unref(&o->h);  /* the pool's reference */
}

/* spill_done is the store's callback (on its thread). */
static void spill_done(void *ud, int rc, const char *text) {
  op *o = ud;
  spill_end(o, rc, text, false);
  tt_unref(&o->h);  /* the callback's reference */
}

/* spill_arm_locked queues the pool's spill timer for the oldest spilling
** op, unless it is queued already (it then re-arms itself when it
** fires).  One timer for all spills: a spill costs no timer heap
** operation of its own. */
static void spill_arm_locked(tt_pool *p) {
  op *head;
  if (p->spill_armed || tt_list_empty(&p->spilling)) return;
  head = tt_container_of(p->spilling.next, op, link);
  pool_hold(p);
  if (tt__timer_add(&p->spill_te, head->spill_until) == TT_OK)
    p->spill_armed = true;
  else
    pool_release_held(p);  /* the store's answer still ends each spill */
}

/* spill_fire ends the spills whose spill_timeout ran out and re-arms for
** the next one. */
static void spill_fire(tt_tentry *te) {
  tt_pool *p = tt_container_of(te, tt_pool, spill_te);
  tt_list expired;
  tt_list *l;
  double now = tt_now();
  char why[96];
  tt_list_init(&expired);
  tt__lock(&p->mu);
  for (l = p->spilling.next; l != &p->spilling; l = l->next) {
    op *o = tt_container_of(l, op, link);
    if (o->spill_until > now) break;
    tt_ref(&o->h);
    tt_list_push(&expired, &o->clink);
  }
  tt__unlock(&p->mu);
  snprintf(why, sizeof why, "not committed within spill_timeout (%g s)",
           p->spill_timeout);
  while ((l = tt_list_shift(&expired)) != NULL) {
    op *o = tt_container_of(l, op, clink);
    spill_end(o, TT_ESTORE, why, true);
    tt_unref(&o->h);
  }
  tt__lock(&p->mu);
  p->spill_armed = false;
  spill_arm_locked(p);
  tt__unlock(&p->mu);
  pool_release(p);  /* the timer's reference (re-arming took another) */
}

/* do_spill writes a submission to the overflow store: it encodes the
** record on the calling thread, accepts the op as SPILLING and hands the
** record to the store's thread; the handle resolves later. */
static tt_handle *do_spill(tt_pool *p, tt_ctx *parent,
                           const tt_submit_opts *so, const sub *s,
                           int *err) {
  tt_record r;
  tt_buf b = TT_BUF_INIT;
  op *o;
  double dl;
  int rc;
  if (so->spill_args == NULL ||
      tt_wire_check(so->spill_args, so->spill_args_len, NULL, NULL, 0) !=
          TT_OK)
    return refused(err, TT_EINVAL);
  memset(&r, 0, sizeof r);
  r.pool = p->name;
  r.name = s->name;
  r.fn = so->spill_fn;
  r.args = so->spill_args;
  r.args_len = so->spill_args_len;
  if (s->tenant != NULL) {
    r.tenant = s->tenant;
    r.tenant_len = strlen(s->tenant);
    if (p->tenant_key.obj == NULL) r.tenant_key = p->tenant_key.str;
  }
  r.has_trace = tt_ctx_span_context(parent, &r.trace);
  r.priority = so->priority;
  r.has_retry = true;
  r.retry = s->retry;
  r.timeout = s->timeout > 0 ? s->timeout : 0;
  if (tt_ctx_deadline(parent, &dl)) r.deadline = tt_wall() + (dl - tt_now());
  r.spilled_at = tt_wall();
  if (tt_record_encode(&r, &b) != TT_OK) {
    tt_buf_free(&b);
    return refused(err, TT_ENOMEM);
  }
  o = b.len <= tt_store_max_payload(p->overflow)
          ? op_new(p, s->name, NULL, s->ci, s->tenant, NULL, &s->retry,
                   s->timeout)
          : NULL;
  if (o == NULL && b.len <= tt_store_max_payload(p->overflow)) {
    tt_buf_free(&b);
    return refused(err, TT_ENOMEM);
  }
  tt__lock(&p->mu);
  if (o == NULL)
    rc = TT_EQUEUE_FULL;  /* too large to spill */
  else if (p->closed)
    rc = TT_ECLOSED;
  else
    rc = quota_ok(p, quota_key(s->tenant)) ? TT_OK : TT_EQUOTA;
  if (rc != TT_OK) {
    reject_locked(p, rc, s);
  } else {
    o->id = ++p->next_id;
    idle_disarm(p);
    if (p->idle_reported) {
      p->idle_reported = false;
      emit(p, NULL, (tt_event){.kind = TT_EV_RESUMING});
    }
    p->st.submitted++;
    p->st.queued++;
    o->where = OP_SPILLING;
    o->spill_until = tt_now() + p->spill_timeout;
    tt_list_push(&p->spilling, &o->link);
    tt_ref(&o->h);  /* the pool's */
    tt_ref(&o->h);  /* the store callback's */
    emit(p, o, (tt_event){.kind = TT_EV_SUBMITTED});
    spill_arm_locked(p);
  }
  tt__unlock(&p->mu);
  deliver(p);
  if (rc != TT_OK) {
    tt_buf_free(&b);
    if (o != NULL) tt_unref(&o->h);
    return refused(err, rc);
  }
  rc = tt_store_put(p->overflow, p->name, b.data, b.len,
                    tt_now() + p->spill_timeout, spill_done, o);
  tt_buf_free(&b);
  if (rc != TT_OK)
    spill_done(o, TT_ESTORE, rc == TT_ECLOSED ? "the store is closed"
                                              : tt_strerror(rc));
  if (err != NULL) *err = TT_OK;
  return &o->h;
}

tt_handle *tt_pool_spill(tt_pool *p, tt_ctx *parent,
                         const tt_submit_opts *so, int *err) {
  sub s;
  int rc;
  if (p == NULL || !can_spill(p, so) || so->spill_args == NULL)
    return refused(err, TT_EINVAL);
  rc = settle_sub(p, parent, so, &s);
  if (rc != TT_OK) return refused(err, rc);
  return do_spill(p, parent, so, &s, err);
}

tt_store *tt_pool_overflow(tt_pool *p) { return p->overflow; }

/* }==================================================================== */

/* A drainer's hooks for one submission (tt__pool_submit_hooked). */
typedef struct hooks {
  void (*end)(void *ud, tt_handle *h);
  void (*end_free)(void *ud);
  void *ud;
} hooks;

/* submit is tt_pool_submit, with hooks ('hk' may be NULL); a hooked
** submission never spills. */
static tt_handle *submit(tt_pool *p, tt_ctx *parent,
                         const tt_submit_opts *so, tt_fn fn, void *arg,
                         tt_drop drop, const hooks *hk, int *err) {
  sub s;
  const char *tenant, *name;
  int ci, rc;
  tt_ctx *base;
  op *o;
  tt_submit_opts plain;
  if (fn == NULL) return refused(err, TT_EINVAL);
  if (hk != NULL && so != NULL && so->spill_fn != NULL) {
    plain = *so;
    plain.spill_fn = NULL;
    so = &plain;
  }
  rc = first_look(p, parent, so, &s);
  if (rc == TT_ESPILLED) {
    tt_handle *h;
    if (so->spill_args == NULL) {
      /* It would spill, but did not bring its arguments as wire values:
      ** a plain refusal. */
      tt__lock(&p->mu);
      reject_locked(p, TT_EQUEUE_FULL, &s);
      tt__unlock(&p->mu);
      deliver(p);
      return refused(err, TT_EQUEUE_FULL);
    }
    h = do_spill(p, parent, so, &s, err);
    if (h != NULL && drop != NULL) drop(arg);  /* it never runs here */
    return h;
  }
  if (rc != TT_OK) return refused(err, rc);
  tenant = s.tenant;
  name = s.name;
  ci = s.ci;
  base = tt_without_cancel(parent);
  if (base == NULL) return refused(err, TT_ENOMEM);
  o = op_new(p, name, fn, ci, tenant, base, &s.retry, s.timeout);
  if (o == NULL) {
    tt_unref(base);
    return refused(err, TT_ENOMEM);
  }
  if (hk != NULL) {
    o->no_dead = true;
    o->end = hk->end;
    o->end_ud = hk->ud;
  }
  /* Look again: others may have taken the room meanwhile. */
  tt__lock(&p->mu);
  rc = admit(p, &p->cls[ci], quota_key(tenant), s.until);
  if (rc == TT_OK) {
    o->h.arg = arg;
    o->h.drop = drop;
    rc = accept_locked(p, o);
    if (rc != TT_OK) {
      o->h.arg = NULL;
      o->h.drop = NULL;
    }
  } else if (!(rc == TT_EQUEUE_FULL && can_spill(p, so) &&
               so->spill_args != NULL)) {
    reject_locked(p, rc, &s);
  }
  tt__unlock(&p->mu);
  deliver(p);
  if (rc == TT_EQUEUE_FULL && can_spill(p, so) && so->spill_args != NULL) {
    tt_handle *h;
    tt_unref(&o->h);  /* holds no argument */
    h = do_spill(p, parent, so, &s, err);
    if (h != NULL && drop != NULL) drop(arg);
    return h;
  }
  if (rc != TT_OK) {
    o->end = NULL;    /* the caller keeps its hooks */
    tt_unref(&o->h);  /* holds no argument: the caller keeps it */
    return refused(err, rc);
  }
  /* Set only now: a refused op must not free the caller's 'ud'. */
  if (hk != NULL) o->end_free = hk->end_free;
  if (err != NULL) *err = TT_OK;
  return &o->h;
}

tt_handle *tt_pool_submit(tt_pool *p, tt_ctx *parent,
                          const tt_submit_opts *so, tt_fn fn, void *arg,
                          tt_drop drop, int *err) {
  return submit(p, parent, so, fn, arg, drop, NULL, err);
}

tt_handle *tt__pool_submit_hooked(tt_pool *p, tt_ctx *parent,
                                  const tt_submit_opts *so, tt_fn fn,
                                  void *arg, tt_drop drop,
                                  void (*end)(void *ud, tt_handle *h),
                                  void (*end_free)(void *ud), void *ud,
                                  int *err) {
  hooks hk;
  hk.end = end;
  hk.end_free = end_free;
  hk.ud = ud;
  return submit(p, parent, so, fn, arg, drop, &hk, err);
}

int tt__pool_room(tt_pool *p, int *capacity) {
  int i, cap = p->queue_cap, room;
  long busy;
  for (i = 0; i < p->ncls; i++) cap += p->cls[i].workers;
  tt__lock(&p->mu);
  if (p->closed) {
    tt__unlock(&p->mu);
    return -1;
  }
  busy = (long)(p->st.queued + p->st.inflight);
  tt__unlock(&p->mu);
  if (capacity != NULL) *capacity = cap;
  room = cap - (int)(busy > cap ? cap : busy);
  return room;
}

bool tt__pool_has_class(tt_pool *p, const char *name) {
  return class_index(p, name) >= 0;
}

/* }==================================================================== */


/* {====================================================================
** Closing and draining
** ===================================================================== */

void tt_pool_close(tt_pool *p) {
  tt__lock(&p->mu);
  if (!p->closed) {
    p->closed = true;
    idle_disarm(p);
    wake_all(p);  /* submitters waiting for room get TT_ECLOSED */
    settle(p);
  }
  tt__unlock(&p->mu);
  deliver(p);
}

tt_latch *tt_pool_drained(tt_pool *p) { return &p->drained_latch; }

int tt_pool_drain(tt_pool *p, tt_ctx *ctx, double timeout) {
  tt_case cs[2];
  int n = 1, r;
  if (p == NULL) return TT_EINVAL;
  tt_pool_close(p);
  memset(cs, 0, sizeof cs);
  cs[0].kind = TT_CASE_LATCH;
  cs[0].latch = &p->drained_latch;
  if (ctx != NULL && tt_ctx_done(ctx) != NULL) {
    cs[1].kind = TT_CASE_LATCH;
    cs[1].latch = tt_ctx_done(ctx);
    n = 2;
  }
  r = tt_latch_is_set(&p->drained_latch) ? 0
                                          : tt_select(cs, n, false, timeout);
  /* Drained wins a tie with the context. */
  if (r == 0 || tt_latch_is_set(&p->drained_latch)) {
    flush_events(p);
    return TT_OK;
  }
  if (r == 1) return tt_ctx_err(ctx) != 0 ? tt_ctx_err(ctx) : TT_CANCELED;
  if (r == TT_SELECT_TIMEOUT) return TT_ETIMEOUT;
  return TT_EINVAL;
}

/* }==================================================================== */


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
  for (l = p->running.next; l != &p->running; l = l->next, n++) {
    op *o = tt_container_of(l, op, link);
    tt_inflight *r;
    if (n >= max || out == NULL) continue;
    r = &out[n];
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
  d->tenant = tt__strdup(s->tenant);
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
  if (old == NULL) return refused(err, TT_EINVAL);
  o = op_new(p, old->h.name, old->h.fn, old->cls, old->tenant,
             tt_ref(old->base), &old->retry, old->timeout);
  if (o == NULL) {
    tt_unref(old->base);
    tt_unref(&old->h);
    return refused(err, TT_ENOMEM);
  }
  tt__lock(&p->mu);
  if (old->where != OP_DEAD) {
    rc = TT_EINVAL;  /* dropped or retried meanwhile */
  } else {
    rc = admit(p, &p->cls[old->cls], quota_key(old->tenant), -1);
    if (rc == TT_OK) {
      o->h.arg = old->h.arg;
      o->h.drop = old->h.drop;
      rc = accept_locked(p, o);
      if (rc == TT_OK) {
        /* The argument moved to the new op; the old record goes. */
        old->h.arg = NULL;
        old->h.drop = NULL;
        tt_list_remove(&old->link);
        old->where = OP_GONE;
        p->st.dead_held--;
      } else {
        o->h.arg = NULL;
        o->h.drop = NULL;
      }
    } else {
      p->st.rejected++;
      emit_rejected(p, rc, old->h.name, old->tenant, old->cls);
    }
  }
  tt__unlock(&p->mu);
  deliver(p);
  if (rc == TT_OK) tt_unref(&old->h);  /* the dead list's reference */
  tt_unref(&old->h);
  if (rc != TT_OK) {
    tt_unref(&o->h);
    return refused(err, rc);
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
  release_op(o);
  return true;
}

/* }==================================================================== */
