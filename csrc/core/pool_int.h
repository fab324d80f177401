/*
** pool_int.h -- the internals of worker pools, shared by the files that
** implement them: pool.c (the engine: queues, workers, running ops,
** stopping and shutdown, submitting, closing and draining), pool_life.c
** (creation and freeing), pool_events.c (events and observers),
** pool_tenant.c (tenants and quotas), pool_spill.c (spilling to the
** overflow store) and pool_report.c (introspection, dead letters and
** snapshots).  Nothing here is part of tether.h.
**
** The DESIGN comment at the top of pool.c holds for all of them: an op's
** life, the accounting identity, the locks ('mu', 'obs_mu', 'spare_mu')
** and what may run under them, events, and the pool's lifetime.  The
** engine-wide lock order is internal.h's.
**
** Functions shared between the files are named tt__pool_* (external
** linkage, never exported by tether.h); the few tiny helpers on the
** submit and run paths are static inline here and named pool_*.
*/
#ifndef TT_POOL_INT_H
#define TT_POOL_INT_H

#include "store.h"

#define POOL_MAX_WORKERS 4096
#define POOL_MAX_CLASSES 64
#define TENANT_MAX 256          /* longest tenant name kept, with its 0 */
#define TENANT_BUCKETS 64
#define MAX_DELAY 1e9           /* a retry delay never exceeds this */
#define OP_NAME_INLINE 40       /* names shorter than this live in the op */
#define OP_SPARES_MAX 1024      /* op records a pool keeps for reuse */

/* Where an op is.  OP_FINISHING: out of every list, about to end (its
** argument is being dropped), still counted where it was.  OP_SPILLING:
** written to the overflow store, waiting for its commit (counted as
** queued, on no list). */
enum {
  OP_NEW, OP_READY, OP_WAITING, OP_RUNNING, OP_DEAD, OP_FINISHING, OP_GONE,
  OP_SPILLING
};

/* An op's spill form: what a named op of a pool with an overflow store
** keeps so that the exit drain can write it to the store if it is still
** queued then (tt__pool_spill_queued).  The function name and the wire
** values of the arguments share one block; the submitter's deadline is
** kept too, since the op's own context is detached from it.  Ops of pools
** without a store, closures and ops whose arguments are not plain data
** keep none. */
typedef struct spillform {
  double deadline;         /* wall clock; 0: none */
  const char *fn;          /* in the block, after 'args' */
  size_t args_len;
  unsigned char args[];
} spillform;

/* An op: a task handle plus what the pool needs to run and retry it. */
typedef struct op {
  tt_handle h;
  tt_pool *pool;           /* holds an internal reference */
  tt_list link;            /* in a ready, waiting, running or dead list;
                           ** the list holds a reference; under pool mu */
  int where;               /* OP_*; under pool mu */
  int cls;                 /* fixed */
  uint64_t id;             /* fixed once accepted */
  char *tenant;            /* fixed; NULL when the op has no tenant;
                           ** NUL-terminated, may hold NULs */
  size_t tenant_len;       /* fixed; its length */
  tt_ctx *base;            /* the submission's parent context; fixed.
                           ** Each attempt's context is detached from it
                           ** (tt__detached): its values, not its end */
  tt_retry retry;          /* fixed */
  double timeout;          /* fixed; <= 0: none */
  int attempt;             /* attempts started; under pool mu */
  double started;          /* tt_now() at the attempt's start; pool mu */
  tt_ctx *ctx;             /* the running attempt's context; pool mu */
  tt_ctx *actx;            /* the last attempt's context as its function
                           ** saw it (the pool hook's, or 'ctx'); pool mu */
  double dur;              /* the last attempt's run time; pool mu */
  tt_obj *err;             /* the last failure's error; pool mu */
  tt_obj *cause;           /* and its cause; pool mu */
  int code;                /* and its code; pool mu */
  double dead_at;          /* tt_wall() when it became a dead letter */
  tt_tentry te;            /* retry delay; holds a reference while queued */
  tt_list clink;           /* on a private list of one pool thread */
  double spill_until;      /* SPILLING: when spill_timeout runs out */
  tt_ctx *cctx;            /* tt__pool_on_shutdown's reference to 'ctx' */
  tt_obj *stale;           /* tt__pool_on_shutdown: a cause to release */
  bool fin_plain;          /* tt__pool_on_shutdown: to end by finish_failed */
  bool fin_release;        /* tt__pool_on_shutdown: an evicted dead letter */
  bool abandoned;          /* counted as abandoned while it still runs;
                           ** under pool mu */
  bool attached;           /* fixed: 'base' is the submitter's context,
                           ** run as it is (see DESIGN) */
  /* A drainer's hooks (tt__pool_submit_hooked), fixed at creation: 'end'
  ** runs under 'mu' as the handle resolves, 'end_free' from op_fini. */
  void (*end)(void *ud, tt_handle *h);
  void (*end_free)(void *ud);
  void *end_ud;
  bool no_dead;            /* fixed: never a dead letter of the pool */
  /* A batch's end report (tt_pool_submit_many): 'bend' runs under 'mu'
  ** as the handle resolves; 'bend_ud' is referenced; fixed. */
  void (*bend)(tt_obj *ud, size_t i, tt_handle *h);
  tt_obj *bend_ud;
  size_t bend_i;
  spillform *sf;           /* NULL, or owned; fixed once accepted (a
                           ** retried dead letter hands it on) */
  struct op *spare_next;   /* on the pool's list of spare records */
  char name_buf[OP_NAME_INLINE];  /* the handle's name, when it fits;
                           ** last (tt__pool_op_new clears what comes before) */
} op;

/* Queue-plus-running ops of one tenant, for quotas. */
typedef struct tenant_ent {
  struct tenant_ent *next;
  int count;
  size_t len;
  char name[];
} tenant_ent;

typedef struct pclass {
  char *name;              /* fixed */
  int workers;             /* fixed */
  bool lend;               /* fixed */
  tt_list ready;           /* of op, FIFO; under pool mu */
  _Atomic size_t nready;   /* written under pool mu; spinning workers
                           ** read it without */
  int idle;                /* workers waiting on 'cv'; under pool mu */
  int busy;                /* workers running an op; under pool mu */
  int wakes;               /* signals sent and not yet taken; pool mu */
  int spinning;            /* workers spinning for work; under pool mu */
  double avg_dur;          /* a moving average of its ops' run times
                           ** (s); under pool mu */
  uint64_t takes;          /* ops taken off 'ready'; under pool mu */
  uint64_t late_mark;      /* 'takes' when the late check was armed */
  tt_list space;           /* of swaiter: submitters with a 'wait',
                              FIFO; under pool mu */
  pthread_cond_t cv;       /* idle workers of the class wait here */
} pclass;

/* A swaiter is a submitter waiting for room in a class's queue.  It
** sleeps on a latch of its own, not on a condition variable, so that its
** wait is a tt_select: an interrupt (Ctrl-C in the main state) ends it
** as it ends every other wait.  Whoever frees room takes the first
** waiter off the list and sets its latch, under the pool's lock. */
typedef struct swaiter {
  tt_list link;            /* in pclass.space while it waits; pool mu */
  tt_latch latch;          /* set when it is woken */
} swaiter;

typedef struct worker {
  pthread_t t;
  tt_pool *pool;
  int cls;
  double spin;             /* how long it spins before parking (s);
                           ** only its own thread uses it */
  /* The attempt this worker starts, prepared by take under 'mu' and used
  ** by run_op; only the worker's own thread uses these. */
  tt_ctx *blank;           /* made ahead (tt__detached_blank) for the
                           ** next attempt's context, or NULL */
  tt_ctx *actx_old;        /* the op's previous 'actx', to release */
  tt_obj *cause;           /* the shutdown's cause, when 'shut' */
  bool shut;               /* taken after the shutdown context ended */
  bool begun;              /* RUNNING and STARTED done in take's hold */
} worker;

typedef struct observer {
  int id;
  tt_observer fn;
  void *ud;
  tt_observer_opts o;
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
  uint64_t id;             /* unique in the process, from 1 */
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
  double exit_timeout;     /* seconds tt_exit_drain may wait; >= 0 */
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
  _Atomic bool quit;       /* workers end once their queues are empty
                           ** (spinning workers read it without 'mu') */
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
  tt_tentry late_te;       /* the late check of queued work (pool.c's
                           ** "Handoff"); holds an internal reference
                           ** while queued */
  bool late_armed;         /* 'late_te' is queued or firing */
  bool idle_want;          /* an idle report is due at 'idle_at' */
  bool idle_queued;        /* 'idle_te' is queued or firing */
  bool idle_reported;      /* IDLE sent, RESUMING not yet */
  double idle_at;
  tt_list evq;             /* of evnode */
  bool delivering;
  pthread_cond_t ev_cv;    /* signaled when a delivery ends */
  _Atomic int nev;         /* events queued or being delivered */
  tt_latch drained_latch;
  struct idlewait *idle_w; /* set when the pool is next idle; made by the
                           ** first waiter, dropped by settle */

  tt_pool_hook hook;       /* fixed; 'begin' NULL: none */

  /* Spare op records, kept for reuse (one malloc and free per op less,
  ** and no record freed by one thread and allocated by another through
  ** the allocator, which is slow in glibc); under 'spare_mu', a leaf. */
  pthread_mutex_t spare_mu;
  op *spares;
  int nspares, spares_max;

  /* Under 'obs_mu'. */
  pthread_mutex_t obs_mu;
  observer *obs;
  int nobs_arr, obs_cap, next_obs;
  _Atomic int nobs;        /* a copy of 'nobs_arr' for lock-free checks */

  /* Under 'mu': a copy of the observer list, for emit (which cannot take
  ** 'obs_mu'), kept in step by observe and unobserve. */
  observer *mobs;
  int nmobs, mobs_cap;
};


/* A submission's settings, resolved against the pool's by first_look. */
typedef struct sub {
  char tbuf[TENANT_MAX];
  tt_obj *thold;           /* keeps 'tenant' alive; release it at the end */
  const char *tenant, *name;
  size_t tenant_len;
  tt_retry retry;
  double timeout, until;
  int ci;
} sub;

/* pool_refused sets '*err' (when given) to 'rc' and returns NULL: a
** submission refused. */
static inline tt_handle *pool_refused(int *err, int rc) {
  if (err != NULL) *err = rc;
  return NULL;
}

/* pool_can_spill tells whether a submission may go to the overflow
** store. */
static inline bool pool_can_spill(tt_pool *p, const tt_submit_opts *so) {
  return p->overflow != NULL && so != NULL && so->spill_fn != NULL;
}

/* {====================================================================
** Internal references
** ===================================================================== */

/* tt__pool_destroy frees the memory of 'p' once its last internal
** reference went (pool.c). */
void tt__pool_destroy(tt_pool *p);

static inline void pool_hold(tt_pool *p) {
  atomic_fetch_add(&p->irefs, 1);
}

static inline void pool_release(tt_pool *p) {
  if (atomic_fetch_sub(&p->irefs, 1) == 1) tt__pool_destroy(p);
}

/* pool_release_held drops an internal reference that cannot be the last
** one, because the caller holds another (safe under 'mu'). */
static inline void pool_release_held(tt_pool *p) {
  atomic_fetch_sub(&p->irefs, 1);
}

/* }==================================================================== */

/* {====================================================================
** Shared functions, by the file that defines them
** ===================================================================== */

/* pool.c: queues, workers and accounting (under 'mu' unless said). */
void tt__pool_wake_all(tt_pool *p);
void tt__pool_push_ready(tt_pool *p, op *o);
void tt__pool_idle_arm(tt_pool *p);
void tt__pool_idle_disarm(tt_pool *p);
void tt__pool_idle_fire(tt_tentry *te);
void tt__pool_late_fire(tt_tentry *te);
void tt__pool_settle(tt_pool *p);
void tt__pool_record_failure(tt_pool *p, op *o, tt_obj *err, tt_obj *cause,
                             int code, tt_obj **old_err, tt_obj **old_cause);
void *tt__pool_worker_main(void *arg);

/* pool.c: running, stopping and shutdown. */
void tt__pool_resolve(op *o, int state, tt_obj *result);
void tt__pool_release_op(op *o);
void tt__pool_unqueue_locked(tt_pool *p, op *o);
void tt__pool_finish_stop(tt_pool *p, op *o);
void tt__pool_on_shutdown(void *arg);
void tt__pool_shutdown_drop(void *arg);

/* pool.c: submitting. */
int tt__pool_admit(tt_pool *p, pclass *c, const char *tenant,
                   size_t tenant_len, double until);
int tt__pool_accept_locked(tt_pool *p, op *o);
op *tt__pool_op_new(tt_pool *p, const char *name, tt_fn fn, int cls,
                    const char *tenant, size_t tenant_len, tt_ctx *base,
                    const tt_retry *retry, double timeout);
int tt__pool_settle_sub(tt_pool *p, tt_ctx *parent, const tt_submit_opts *so,
                        sub *s);
void tt__pool_reject_locked(tt_pool *p, int rc, const sub *s);

/* pool_life.c. */
int tt__pool_retry_norm(const tt_retry *in, tt_retry *out);

/* pool_events.c.  Queueing (emit) runs under 'mu'; delivery without it. */
char *tt__pool_dup_name(const char *s, size_t len);
void tt__pool_emit(tt_pool *p, op *o, tt_event e);
void tt__pool_emit_rejected(tt_pool *p, int code, const char *name,
                            const char *tenant, size_t tenant_len, int cls);
void tt__pool_evnode_free(evnode *n);
void tt__pool_deliver(tt_pool *p);
void tt__pool_flush_events(tt_pool *p);

/* pool_emit is tt__pool_emit, without the call when nobody observes the
** pool: it runs on every change of an op's state. */
static inline void pool_emit(tt_pool *p, op *o, tt_event e) {
  if (atomic_load_explicit(&p->nobs, memory_order_relaxed) == 0) return;
  tt__pool_emit(p, o, e);
}

/* pool_deliver is tt__pool_deliver, without the call when no event is
** queued. */
static inline void pool_deliver(tt_pool *p) {
  if (atomic_load(&p->nev) == 0) return;
  tt__pool_deliver(p);
}

/* pool_tenant.c (all under 'mu'). */
int tt__pool_quota_limit(tt_pool *p, const char *name, size_t len);
bool tt__pool_tenant_inc(tt_pool *p, const char *tname, size_t tlen);
void tt__pool_tenant_dec(tt_pool *p, const char *tname, size_t tlen);
const char *tt__pool_tenant_of(tt_pool *p, tt_ctx *parent, char *buf,
                               size_t n, size_t *len, tt_obj **hold);
bool tt__pool_quota_ok(tt_pool *p, const char *tenant, size_t tenant_len);

/* pool_tenant_inc, pool_tenant_dec and pool_quota_ok are their tt__pool_
** functions without the call for a pool without quotas, and
** pool_tenant_of without it for a pool without a tenant key: each runs
** once or twice for every op. */
static inline bool pool_tenant_inc(tt_pool *p, const char *tname,
                                   size_t tlen) {
  return !p->quotas_on || tt__pool_tenant_inc(p, tname, tlen);
}

static inline void pool_tenant_dec(tt_pool *p, const char *tname,
                                   size_t tlen) {
  if (p->quotas_on) tt__pool_tenant_dec(p, tname, tlen);
}

static inline bool pool_quota_ok(tt_pool *p, const char *tenant,
                                 size_t tenant_len) {
  return !p->quotas_on || tt__pool_quota_ok(p, tenant, tenant_len);
}

static inline const char *pool_tenant_of(tt_pool *p, tt_ctx *parent,
                                         char *buf, size_t n, size_t *len,
                                         tt_obj **hold) {
  if (!p->has_tenant_key) {
    *hold = NULL;
    *len = 0;
    return NULL;
  }
  return tt__pool_tenant_of(p, parent, buf, n, len, hold);
}

/* pool_spill.c. */
void tt__pool_spill_fire(tt_tentry *te);
spillform *tt__pool_spillform_new(const tt_submit_opts *so, tt_ctx *parent);
tt_handle *tt__pool_do_spill(tt_pool *p, tt_ctx *parent,
                             const tt_submit_opts *so, const sub *s, int *err);

/* }==================================================================== */

#endif
