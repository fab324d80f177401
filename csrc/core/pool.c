/*
** pool.c -- worker pools: fixed workers per priority class, bounded
** queues, per-op timeouts and shutdown, retries on the timer thread, dead
** letters, tenant quotas, idle reports, drain, and a stream of events for
** observers.
**
** This file is the engine: queues, workers and accounting, running ops,
** stopping and shutdown, submitting, closing and draining; it takes
** 'mu' (and 'spare_mu', a leaf) and calls out only without it.  The rest
** is split by concern, each file saying what it holds and which locks it
** takes: pool_life.c (creation and freeing), pool_events.c (events and
** observers), pool_tenant.c (tenants and quotas), pool_spill.c (the
** overflow store), pool_report.c (introspection, dead letters,
** snapshots).  pool_int.h holds the types they share.  The DESIGN below
** holds for all of them.
**
** DESIGN.
**
** Threads.  Each class has its own fixed set of worker threads, all
** started by tt_pool_new (not lazily: a pool that accepted work can always
** run it, and thread failures show up at creation).  A worker takes ops
** from its class's ready queue, and a class with 'lend' also takes from
** the queues of the classes listed after it once its own is empty.
** Workers end once the pool is closed and empty (drained) or being freed,
** after the embedder's exit hook; the pool's free joins them, or detaches
** them while an op still runs (see "Lifetime").
**
** Handoff.  A worker that finds nothing to take spins a moment (a bounded,
** adaptive spin that yields the CPU; at most as many threads as there are
** CPUs spin at once, process-wide, and none on one CPU, see internal.h)
** before it parks on its class's condition variable.  A submission
** wakes a parked worker only when no worker that could take it is
** spinning or already woken, and a worker that takes an op and leaves
** more queued makes sure another one looks (wake_for): a
** steady stream of submissions is taken by an awake worker with no futex
** wake, and a burst still wakes as many workers as it keeps busy.  When
** the class's ops are short and its running workers already fill the
** CPUs but one, the worker that leaves work queued takes it itself
** instead, and a late check (a timer, armed at most once a millisecond)
** wakes workers for work still queued if nothing was taken meanwhile,
** and looks again while work stays queued (see wake_more).  A worker
** that ends an op takes its next one in the same hold of 'mu', and
** starts it there (see begin_locked).  A batch (tt_pool_submit_many)
** queues its ops under one hold of 'mu' without waking anyone and then
** calls wake_for once: the chain above (wake_more) wakes the workers the
** batch needs.  Each of its ops is
** otherwise accepted as a single submission is (id, counts, quota,
** SUBMITTED event); its end report ('bend') is called under 'mu' as the
** handle resolves, like a drainer's 'end' hook.
**
** An op's life.  Submitted ops wait in their class's ready queue (READY),
** run on a worker (RUNNING), and then complete, fail for good, become a
** dead letter (DEAD), or wait on the timer thread for a retry (WAITING)
** and go back to READY.  A queued op may be stopped.  Every attempt gets
** a fresh context, made when the attempt starts:
** with_timeout(without_cancel(parent), timeout), or with_cancel of the
** detached parent when there is no timeout, so that the pool can always
** cancel it when its shutdown context ends; both are made as one
** context (tt__detached).  The worker ends it when the attempt ends
** (tt__ctx_end: with TT_DEADLINE once its deadline has passed, as its
** timer would, so that a task stopped at its deadline before the timer
** thread woke leaves no context that says 'canceled').
**
** Attached ops (tt_submit_opts.attached) are the exception: their
** context is the submitter's own, given as the parent, so the pool makes
** none, never cancels it (neither at shutdown nor when the op ends: it is
** not the pool's), runs one attempt, and a failure ends as 'failed',
** never as a dead letter (the argument belongs to work whose caller has
** moved on).  Everything else (queueing, classes, quotas, stats, events)
** is the same, so the accounting identity counts them like any op.
**
** Accounting.  Under 'mu', at every instant (tether.h's identity):
**   submitted = completed + failed + stopped + dead + spilled + abandoned
**               + queued + inflight
** where 'queued' counts READY and WAITING ops, 'inflight' RUNNING ones.
** An op written to the overflow store (SPILLING) counts as queued until
** the store answers: then as 'spilled', or as 'failed' (TT_ESTORE) when
** the store failed or spill_timeout ran out first, whichever comes first
** under 'mu'; so a drain waits for the commits of its spills.  At exit,
** tt__pool_spill_queued takes queued ops that kept a spill form ('sf':
** named ops of a pool with a store) off their queues and writes them the
** same way: still queued, then SPILLING, then spilled (or failed).
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
** before every argument is dropped.  tt_pool_abandon (at exit) ends queued
** ops the same way, as 'abandoned'; a running op it cannot end: it is
** flagged 'abandoned', counted (inflight to abandoned) and resolved at
** once, stays on the running list while its worker finishes it, and its
** end then only cleans up.  'idle_w', a latch for tt_pool_wait_idle, is
** set by settle when nothing is queued or running.
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
** events arrive in the order of its life, without 'mu' held.  An event
** is queued (allocated) only if some queued observer wants its kind (its
** 'wants' filter, asked under 'mu').  Immediate observers (metrics) are
** called under 'mu' as the event happens, with nothing queued: they only
** count with atomics and never call the pool.  'mobs' mirrors the
** observer list under 'mu' for that; observe and unobserve take 'obs_mu'
** then 'mu' to change both.
**
** The pool's hook (tt_pool_opts.hook; tracing is one) runs on the worker
** around each attempt, without any lock: it may give the attempt's
** function a context of its own ('actx', a child of the attempt's
** context carrying a span), which events about the op then carry.  An
** attached op is part of its submitter's work and runs with its
** submitter's context itself: the hook is not run for it (an HTTP
** handler's context carries its request's server span, not a span of
** its own).
**
** Lifetime.  The pool's object reference count belongs to its users; when
** it reaches zero, pool_free closes the pool, stops queued ops, drops dead
** letters and joins the workers, or, while an op still runs, detaches
** them all (each ends on its own once the queue is empty and its op is
** done).  The memory lives on while internal references ('irefs')
** remain: the users' share (one), each worker, each op record, the idle
** timer, the late check and the spill timer while queued, the shutdown
** after_func while registered, and a thread delivering events.  This
** lets a handle outlive its pool and lets the last user reference go on one of
** the pool's own workers (that worker is detached instead of joined).
**
** Records.  An op is one allocation: the handle, the pool's part and the
** handle's name when it is short.  A freed record goes to the pool's
** spares (a leaf lock, 'spare_mu') for its next op, up to a full queue
** plus every worker's: ops are allocated by submitters and freed by
** workers, which glibc's allocator serves slowly.
*/
#include <sched.h>
#include <stdio.h>
#include <string.h>

#include "pool_int.h"

/* What tt_pool_wait_idle waits on: a latch set when the pool is next idle
** (nothing queued or running).  Referenced by the pool while armed and by
** each waiter. */
typedef struct idlewait {
  tt_obj hdr;
  tt_latch l;
} idlewait;

static void idlewait_free(tt_obj *o) {
  tt__latch_destroy(&((idlewait *)o)->l);
  free(o);
}

static const tt_type idlewait_type = {"tether.PoolIdle", idlewait_free,
                                      NULL, NULL};

static _Thread_local tt_pool *tl_running;     /* pool of the op this
                                              ** worker runs, if any */
static _Thread_local double tl_returned;      /* when its function last
                                              ** returned (tt_now) */

double tt__pool_fn_returned(void) { return tl_returned; }


/* {====================================================================
** Queues, workers and accounting (all under 'mu' unless said)
** ===================================================================== */

/* wake_for makes sure a worker that can take work queued in class 'ci'
** will look at it: none is woken while one of the class's own (or of a
** lender of a higher class) is spinning for work or already woken and on
** its way, since that one will take it; else one parked worker of the
** class, or else of a lender, is signaled.  A worker that takes an op and
** leaves more queued calls this again (see tt__pool_worker_main), so a burst
** wakes workers one after another, each woken only when the queue still
** holds work nobody awake will take.  'wakes' counts signals not yet
** taken. */
static void wake_for(tt_pool *p, int ci) {
  int j;
  pclass *c = &p->cls[ci];
  if (c->spinning > 0 || c->wakes > 0) return;
  for (j = 0; j < ci; j++) {
    pclass *l = &p->cls[j];
    if (l->lend && (l->spinning > 0 || l->wakes > 0)) return;
  }
  if (c->idle > 0) {
    c->wakes++;
    TT_CHECK(pthread_cond_signal(&c->cv));
    return;
  }
  for (j = 0; j < ci; j++) {
    pclass *l = &p->cls[j];
    if (l->lend && l->idle > 0) {
      l->wakes++;
      TT_CHECK(pthread_cond_signal(&l->cv));
      return;
    }
  }
}

/* The late check.  A worker that takes an op and leaves more queued
** wakes another (wake_for) only when a second worker can help: when the
** class's ops run long (LATE_LONG on average, so that a wake costs less
** than the wait), or when fewer of its workers run ops than there are
** CPUs besides one for the submitter.  Otherwise this worker is back at
** the queue in a moment, and a woken worker would only take a CPU from
** it or from the submitter; the late check makes sure that an op that
** runs long after all does not keep queued work from idle workers: armed
** then, it fires LATE_AFTER later and, for each class that still holds
** queued work and took none meanwhile, wakes as many workers as that
** work needs; it stays armed while work is queued. */
#define LATE_LONG 20e-6
#define LATE_AFTER 1e-3

/* late_arm arms the late check unless it is armed already. */
static void late_arm(tt_pool *p) {
  int k;
  if (p->late_armed || p->dying) return;
  for (k = 0; k < p->ncls; k++) p->cls[k].late_mark = p->cls[k].takes;
  pool_hold(p);
  if (tt__timer_add(&p->late_te, tt_now() + LATE_AFTER) == TT_OK) {
    p->late_armed = true;
  } else {
    /* No timer thread: wake at once, as if ops were long. */
    pool_release_held(p);
    for (k = 0; k < p->ncls; k++)
      if (p->cls[k].nready > 0) wake_for(p, k);
  }
}

void tt__pool_late_fire(tt_tentry *te) {
  tt_pool *p = tt_container_of(te, tt_pool, late_te);
  bool queued = false;
  int k;
  tt__lock(&p->mu);
  p->late_armed = false;
  for (k = 0; k < p->ncls; k++) {
    pclass *c = &p->cls[k];
    size_t n = c->nready;
    if (n == 0) continue;
    queued = true;
    if (c->takes != c->late_mark) continue;
    /* Nothing taken for a while: every running worker is held by an op
    ** that runs long.  Wake as many as the queue holds work for. */
    wake_for(p, k);
    while (--n > 0 && c->idle > c->wakes) {
      c->wakes++;
      TT_CHECK(pthread_cond_signal(&c->cv));
    }
  }
  /* Work still queued: look again later. */
  if (queued) late_arm(p);
  tt__unlock(&p->mu);
  pool_release(p);
}

/* wake_more is wake_for for work a worker leaves queued as it takes an
** op of class 'ci' (see "The late check"). */
static void wake_more(tt_pool *p, int ci) {
  pclass *c = &p->cls[ci];
  if (c->avg_dur >= LATE_LONG || c->busy + c->spinning < tt__ncpu() - 1)
    wake_for(p, ci);
  else
    late_arm(p);
}

/* wake_space wakes the first submitter waiting for room in 'c' (pool mu
** held; the latch's lock nests inside it). */
static void wake_space(pclass *c) {
  tt_list *l = tt_list_shift(&c->space);  /* unlinks it: woken */
  if (l == NULL) return;
  tt__latch_set(&tt_container_of(l, swaiter, link)->latch);
}

void tt__pool_wake_all(tt_pool *p) {
  int i;
  for (i = 0; i < p->ncls; i++) {
    TT_CHECK(pthread_cond_broadcast(&p->cls[i].cv));
    while (!tt_list_empty(&p->cls[i].space)) wake_space(&p->cls[i]);
  }
}

static void push_ready(tt_pool *p, op *o) {
  pclass *c = &p->cls[o->cls];
  o->where = OP_READY;
  tt_list_push(&c->ready, &o->link);
  atomic_fetch_add_explicit(&c->nready, 1, memory_order_relaxed);
  wake_for(p, o->cls);
}

/* tt__pool_push_ready is push_ready for the pool's other files: the engine's
** own calls, once or more per op, go to the static one, which the compiler
** inlines. */
void tt__pool_push_ready(tt_pool *p, op *o) { push_ready(p, o); }

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

/* tt__pool_idle_arm is idle_arm for the pool's other files (see above). */
void tt__pool_idle_arm(tt_pool *p) { idle_arm(p); }

static void idle_disarm(tt_pool *p) {
  p->idle_want = false;
  if (p->idle_queued && tt__timer_del(&p->idle_te)) {
    p->idle_queued = false;
    pool_release_held(p);
  }
}

/* tt__pool_idle_disarm is idle_disarm for the pool's other files (see above).
** */
void tt__pool_idle_disarm(tt_pool *p) { idle_disarm(p); }

void tt__pool_idle_fire(tt_tentry *te) {
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
        pool_emit(p, NULL, (tt_event){.kind = TT_EV_IDLE});
      }
    }
  }
  tt__unlock(&p->mu);
  pool_deliver(p);
  if (!again) pool_release(p);
}

/* settle runs after an op left the queue or the workers: an empty pool
** is drained once closed, and otherwise may report idle later. */
static void settle(tt_pool *p) {
  if (p->st.queued != 0 || p->st.inflight != 0) return;
  /* Nothing queued: no late check needed (nor a timer thread kept). */
  if (p->late_armed && tt__timer_del(&p->late_te)) {
    p->late_armed = false;
    pool_release_held(p);
  }
  if (p->idle_w != NULL) {
    /* Not the last reference while a waiter holds one; else plain
    ** memory, safe to free under 'mu'. */
    tt__latch_set(&p->idle_w->l);
    tt_unref(p->idle_w);
    p->idle_w = NULL;
  }
  if (!p->closed) {
    idle_arm(p);
    return;
  }
  if (p->drained) return;
  p->drained = true;
  p->quit = true;
  tt__pool_wake_all(p);
  tt__latch_set(&p->drained_latch);
  pool_emit(p, NULL, (tt_event){.kind = TT_EV_DRAINED});
}

/* tt__pool_settle is settle for the pool's other files (see above). */
void tt__pool_settle(tt_pool *p) { settle(p); }

/* begin_locked starts the attempt of 'o', just taken by worker 'w', in
** the same hold of 'mu' as the take: its context (bound from the blank
** the worker made ahead, when it has one) is published for the shutdown
** to cancel, and the op becomes RUNNING with its STARTED event.  A pool
** hook must see the context before STARTED and runs without the lock,
** so with a hook (and when no blank was at hand) only the context is
** made here, and run_op does the rest (w->begun false).  Nothing here
** may be the last reference of anything: the op's previous 'actx' goes
** to w->actx_old, to release after unlocking. */
static void begin_locked(tt_pool *p, worker *w, op *o) {
  tt_ctx *ctx = NULL;
  w->begun = false;
  w->shut = false;
  w->cause = NULL;
  w->actx_old = NULL;
  if (o->attached) {
    ctx = tt_ref(o->base);
  } else if (w->blank != NULL) {
    ctx = w->blank;
    w->blank = NULL;
    tt__detached_bind(ctx, o->base, o->timeout);
  } else {
    return;  /* run_op makes it (or fails the attempt) */
  }
  o->ctx = ctx;
  if (p->hook.begin != NULL && !o->attached) return;
  w->actx_old = o->actx;
  o->actx = tt_ref(ctx);
  w->shut = p->shut;
  if (w->shut) w->cause = tt_ref(p->shut_cause);
  /* Taken in this hold: it cannot have been abandoned yet. */
  tt__handle_set_state(&o->h, TT_H_RUNNING);
  pool_emit(p, o, (tt_event){.kind = TT_EV_STARTED});
  w->begun = true;
}

/* take gives worker 'w' its next op, moved to RUNNING (see
** begin_locked), and makes sure another worker looks at what it leaves
** queued. */
static op *take(tt_pool *p, worker *w) {
  int k, ci = w->cls;
  for (k = ci; k < p->ncls; k++) {
    pclass *c = &p->cls[k];
    tt_list *l;
    op *o;
    if (k > ci && !p->cls[ci].lend) break;
    l = tt_list_shift(&c->ready);
    if (l == NULL) continue;
    o = tt_container_of(l, op, link);
    atomic_fetch_sub_explicit(&c->nready, 1, memory_order_relaxed);
    c->takes++;
    wake_space(c);
    o->where = OP_RUNNING;
    o->attempt++;
    o->started = tt_now();
    p->st.queued--;
    p->st.inflight++;
    tt_list_push(&p->running, &o->link);
    p->cls[ci].busy++;
    /* More queued than this worker takes now: another may look. */
    if (atomic_load_explicit(&c->nready, memory_order_relaxed) > 0)
      wake_more(p, k);
    begin_locked(p, w, o);
    return o;
  }
  return NULL;
}

/* tt__pool_record_failure adds a failed attempt to the ring of recent failures;
** the error and cause of an evicted record go to '*old_err' and
** '*old_cause' for the caller to release after unlocking. */
void tt__pool_record_failure(tt_pool *p, op *o, tt_obj *err, tt_obj *cause,
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
  f->tenant = tt__pool_dup_name(o->tenant, o->tenant_len);
  f->tenant_len = o->tenant_len;
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
  if (o->bend != NULL) o->bend(o->bend_ud, o->bend_i, &o->h);
}

/* tt__pool_resolve is resolve for the pool's other files (see above). */
void tt__pool_resolve(op *o, int state, tt_obj *result) {
  resolve(o, state, result);
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

/* tt__pool_release_op is release_op for the pool's other files (see above). */
void tt__pool_release_op(op *o) { release_op(o); }

/* note_dur adds an attempt's run time to its class's average (an
** exponential one, weighing the last eight or so). */
static void note_dur(pclass *c, double dur) {
  c->avg_dur += (dur - c->avg_dur) * 0.125;
}

/* op_completed ends an attempt of 'o' that succeeded, on worker 'w', and
** in the same hold of 'mu' takes the worker's next op (returned; NULL
** when none was queued): a worker that keeps up with its queue takes the
** lock once per op. */
static op *op_completed(tt_pool *p, worker *w, op *o, tt_obj *out,
                        double dur) {
  tt_ctx *ctx, *actx;
  op *next;
  /* The argument goes before the handle resolves, so that a waiter (and
  ** a drain) sees the op entirely finished. */
  tt__handle_drop_arg(&o->h);
  /* The next attempt's context, made before the lock is taken. */
  if (w->blank == NULL) w->blank = tt__detached_blank();
  tt__lock(&p->mu);
  p->cls[w->cls].busy--;
  ctx = o->ctx;
  o->ctx = NULL;
  tt_list_remove(&o->link);
  o->where = OP_GONE;
  if (o->abandoned) {
    /* Counted and resolved when it was abandoned. */
    tt__unlock(&p->mu);
    tt_unref(out);
    tt_cancel(ctx, NULL);
    tt_unref(ctx);
    tt_unref(&o->h);
    return NULL;
  }
  p->st.inflight--;
  p->st.completed++;
  pool_tenant_dec(p, o->tenant, o->tenant_len);
  o->dur = dur;
  note_dur(&p->cls[o->cls], dur);
  resolve(o, TT_H_DONE, out);
  pool_emit(p, o, (tt_event){.kind = TT_EV_COMPLETED, .duration = dur});
  /* Its last event is out: the op needs its attempt's context no more. */
  actx = o->actx;
  o->actx = NULL;
  settle(p);
  next = take(p, w);
  tt__unlock(&p->mu);
  tt_unref(actx);
  /* The attempt is over: end its context, as Go's "defer cancel()" does,
  ** so its deadline leaves the timer heap now rather than when it
  ** passes (or with TT_DEADLINE if it has passed: tt__ctx_end); or,
  ** when nothing else holds it, keep it as the worker's next blank
  ** (ending it would change nothing anyone can see).  An attached op's
  ** context is its submitter's to end. */
  if (o->attached) {
    tt_unref(ctx);
  } else if (w->blank == NULL && tt__detached_reuse(ctx)) {
    w->blank = ctx;
  } else {
    tt__ctx_end(ctx);
    tt_unref(ctx);
  }
  pool_deliver(p);
  tt_unref(&o->h);  /* the running list's reference */
  return next;
}

/* to_dead_locked makes 'o', which failed for good and is out of every
** list, a dead letter, if the pool keeps them (the caller has taken it
** out of 'queued' or 'inflight'); '*evicted' gets a dead letter pushed
** out by the cap, to release after unlocking.  It returns false when the
** op must end as a plain failure instead (see finish_failed). */
static bool to_dead_locked(tt_pool *p, op *o, op **evicted) {
  if (p->dead_cap <= 0 || p->dying || o->attached || o->no_dead)
    return false;
  pool_tenant_dec(p, o->tenant, o->tenant_len);
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
  pool_emit(p, o, (tt_event){.kind = TT_EV_DEAD, .code = o->code,
                             .duration = o->dur, .error = o->err,
                             .cause = o->cause});
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
  pool_tenant_dec(p, o->tenant, o->tenant_len);
  o->where = OP_GONE;
  resolve(o, TT_H_FAILED, tt_ref(o->err));
  pool_emit(p, o, (tt_event){.kind = TT_EV_FAILED, .code = o->code,
                             .duration = o->dur, .error = o->err,
                             .cause = o->cause});
  settle(p);
  tt__unlock(&p->mu);
  pool_deliver(p);
  tt_unref(&o->h);  /* the pool's reference */
}

static void op_failed(tt_pool *p, worker *w, op *o, tt_obj *err,
                      double dur) {
  tt_ctx *ctx = o->ctx;  /* only this thread changes it while running */
  tt_obj *cause, *old_err, *old_cause;
  tt_obj *rec_err = NULL, *rec_cause = NULL;
  op *evicted = NULL;
  int code = tt__error_code(err);
  bool plain = false;
  bool attached = o->attached;  /* 'o' may be gone once unlocked */
  /* A failure in a context that ended is blamed on the context. */
  if (ctx != NULL && tt_ctx_err(ctx) != 0)
    cause = tt_ctx_cause(ctx);
  else
    cause = tt_ref(err);
  tt__lock(&p->mu);
  p->cls[w->cls].busy--;
  o->ctx = NULL;
  tt_list_remove(&o->link);
  if (o->abandoned) {
    /* Counted and resolved when it was abandoned. */
    o->where = OP_GONE;
    tt__unlock(&p->mu);
    tt__handle_drop_arg(&o->h);
    tt_unref(err);
    tt_unref(cause);
    tt_cancel(ctx, NULL);
    tt_unref(ctx);
    tt_unref(&o->h);
    return;
  }
  note_dur(&p->cls[o->cls], dur);
  tt__pool_record_failure(p, o, err, cause, code, &rec_err, &rec_cause);
  old_err = o->err;
  old_cause = o->cause;
  o->err = err;
  o->cause = cause;
  o->code = code;
  o->dur = dur;
  if (o->attempt < o->retry.attempts && !p->dying && !shut_now(p)) {
    double delay = retry_delay(&o->retry, o->attempt);
    o->where = OP_WAITING;
    p->st.inflight--;
    p->st.queued++;
    p->st.retried++;
    tt__handle_set_state(&o->h, TT_H_QUEUED);
    pool_emit(p, o, (tt_event){.kind = TT_EV_RETRIED, .duration = dur,
                               .delay = delay, .code = code, .error = err,
                               .cause = cause});
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
  /* As in op_completed.  An attempt stopped by its deadline before the
  ** timer thread woke (an interrupt hook reads the clock itself) ends
  ** its context with TT_DEADLINE here, as the timer would have. */
  if (!attached) tt__ctx_end(ctx);
  tt_unref(ctx);
  if (plain)
    finish_failed(p, o, false);
  else
    pool_deliver(p);
}

/* hook_begin lets the pool's hook derive the context the attempt's
** function gets; it returns a new reference (that context, or 'ctx'). */
static tt_ctx *hook_begin(tt_pool *p, op *o, tt_ctx *ctx, void **state) {
  tt_event ev;
  tt_ctx *actx = NULL;
  *state = NULL;
  if (p->hook.begin != NULL && ctx != NULL && !o->attached) {
    memset(&ev, 0, sizeof ev);
    ev.kind = TT_EV_STARTED;
    ev.pool = p;
    ev.pool_name = p->name;
    ev.id = o->id;
    ev.name = o->h.name;
    ev.tenant = o->tenant;
    ev.priority = p->cls[o->cls].name;
    ev.attempt = o->attempt;  /* set by take() on this thread */
    ev.at = tt_now();
    ev.ctx = ctx;
    actx = p->hook.begin(&ev, state, p->hook.ud);
  }
  return actx != NULL ? actx : tt_ref(ctx);
}

/* run_op runs one attempt of 'o', taken by worker 'w' (see take), and
** ends it; it returns the worker's next op when the end took one (see
** op_completed), else NULL. */
static op *run_op(tt_pool *p, worker *w, op *o) {
  tt_ctx *ctx, *actx;
  tt_obj *out = NULL, *cause, *err;
  void *hstate = NULL;
  bool shut, hooked = p->hook.begin != NULL && !o->attached;
  double t0, dur;
  int rc;
  /* Only this thread changes o->ctx while the op runs. */
  ctx = o->ctx;
  if (ctx != NULL && !o->attached) tt__detached_arm(ctx);
  if (w->begun) {
    /* Started in take's hold. */
    actx = ctx;
    shut = w->shut;
    cause = w->cause;
    tt_unref(w->actx_old);
  } else {
    tt_ctx *old_actx;
    /* A fresh context per attempt, made as the attempt starts so that
    ** time spent queued or waiting for a retry does not count against
    ** the timeout: by take when the worker had a blank, else now. */
    if (ctx == NULL) ctx = tt__detached(o->base, o->timeout);
    actx = hook_begin(p, o, ctx, &hstate);
    tt__lock(&p->mu);
    o->ctx = ctx;
    old_actx = o->actx;
    o->actx = actx;
    shut = p->shut;
    cause = shut ? tt_ref(p->shut_cause) : NULL;
    if (o->abandoned) {
      /* Abandoned between its take and now: its handle is resolved (its
      ** state stays final), and its context ends at once. */
      shut = true;
      tt_unref(cause);
      cause = (tt_obj *)tt_error_for(TT_EABANDONED);
    } else {
      tt__handle_set_state(&o->h, TT_H_RUNNING);
      pool_emit(p, o, (tt_event){.kind = TT_EV_STARTED});
    }
    tt__unlock(&p->mu);
    tt_unref(old_actx);
  }
  pool_deliver(p);
  /* The after_func may not have run yet: look at the context itself. */
  if (!shut && p->shutdown != NULL && tt_ctx_err(p->shutdown) != 0) {
    shut = true;
    cause = tt_ctx_cause(p->shutdown);
  }
  if (shut && ctx != NULL && !o->attached) tt_cancel(ctx, cause);
  tt_unref(cause);
  /* Without a hook, the take's clock reading serves as the start. */
  t0 = hooked ? tt_now() : o->started;
  tl_running = p;
  if (actx != NULL)
    rc = o->h.fn(actx, o->h.arg, &out);
  else
    rc = TT_ENOMEM;
  tl_running = NULL;
  tl_returned = tt_now();
  dur = tl_returned - t0;
  err = rc == TT_OK ? NULL : tt__task_error(rc, out);
  if (p->hook.end != NULL && ctx != NULL && !o->attached)
    p->hook.end(hstate, rc, err, p->hook.ud);
  if (rc == TT_OK) return op_completed(p, w, o, out, dur);
  op_failed(p, w, o, err, dur);
  return NULL;
}

/* work_visible tells, without the lock, whether a worker of class 'ci'
** has something to take (or should end). */
static bool work_visible(tt_pool *p, int ci) {
  int k;
  if (atomic_load_explicit(&p->quit, memory_order_relaxed)) return true;
  for (k = ci; k < p->ncls; k++) {
    if (k > ci && !p->cls[ci].lend) break;
    if (atomic_load_explicit(&p->cls[k].nready, memory_order_relaxed) > 0)
      return true;
  }
  return false;
}

/* spin_for_work watches the queues of worker 'w' without the lock for at
** most w->spin seconds; true if work showed up.  After a few pauses it
** yields the CPU at each look instead: when the thread that would submit
** the work shares this CPU (the usual case with 2 CPUs and a woken
** worker placed next to its waker), a spin that only paused would keep
** it from running for the whole budget, and then park in vain.  The
** budget adapts: it doubles (up to SPIN_MAX) when a spin found work and
** halves (down to SPIN_MIN) when it did not, so a worker whose work comes
** in bursts spins and one whose work is rare hardly does. */
#define SPIN_MAX 50e-6
#define SPIN_MIN 2e-6
#define SPIN_PAUSES 64
static bool spin_for_work(tt_pool *p, worker *w) {
  double until = tt_now() + w->spin;
  unsigned i;
  for (i = 1;; i++) {
    if (work_visible(p, w->cls)) {
      w->spin = w->spin * 2 > SPIN_MAX ? SPIN_MAX : w->spin * 2;
      return true;
    }
    if (i < SPIN_PAUSES)
      tt__cpu_relax();
    else
      sched_yield();
    if ((i & 7) == 0 && tt_now() >= until) break;
  }
  w->spin = w->spin / 2 < SPIN_MIN ? SPIN_MIN : w->spin / 2;
  return false;
}

void *tt__pool_worker_main(void *arg) {
  worker *w = arg;
  tt_pool *p = w->pool;
  pclass *c = &p->cls[w->cls];
  bool spun = false;      /* spun in vain since the last op or wake */
  w->spin = SPIN_MAX;
  w->blank = tt__detached_blank();
  tt__lock(&p->mu);
  for (;;) {
    op *o = take(p, w);
    if (o != NULL) {
      tt__unlock(&p->mu);
      /* Each end of an op may take the next one in its hold of 'mu'. */
      do o = run_op(p, w, o); while (o != NULL);
      if (w->blank == NULL) w->blank = tt__detached_blank();
      tt__lock(&p->mu);
      spun = false;
      continue;
    }
    if (p->quit) break;
    /* Spin a moment before parking: a submission that comes meanwhile
    ** finds this worker awake and wakes nobody.  After a spin in vain,
    ** the take above has looked once more under the lock, so nothing
    ** pushed before the park below is missed. */
    if (!spun && tt__spin_enter()) {
      c->spinning++;
      tt__unlock(&p->mu);
      spun = !spin_for_work(p, w);
      if (w->blank == NULL) w->blank = tt__detached_blank();
      tt__lock(&p->mu);
      c->spinning--;
      tt__spin_exit();
      continue;
    }
    spun = false;
    c->idle++;
    TT_CHECK(pthread_cond_wait(&c->cv, &p->mu));
    c->idle--;
    if (c->wakes > 0) c->wakes--;
    if (c->wakes > c->idle) c->wakes = c->idle;
  }
  tt__unlock(&p->mu);
  tt_unref(w->blank);
  w->blank = NULL;
  tt__thread_exit_hook();
  pool_release(p);
  return NULL;
}

/* }==================================================================== */


/* {====================================================================
** Stopping, shutdown
** ===================================================================== */

/* tt__pool_unqueue_locked takes a READY or WAITING op off its queue and marks
** it OP_FINISHING; it still counts as queued until tt__pool_finish_stop. */
void tt__pool_unqueue_locked(tt_pool *p, op *o) {
  if (o->where == OP_READY) {
    pclass *c = &p->cls[o->cls];
    atomic_fetch_sub_explicit(&c->nready, 1, memory_order_relaxed);
    wake_space(c);
  } else if (tt__timer_del(&o->te)) {
    tt_unref(&o->h);  /* the timer's; not the last: the pool holds one */
  }
  tt_list_remove(&o->link);
  o->where = OP_FINISHING;
}

/* tt__pool_finish_stop drops the argument of an unqueued op, then counts it and
** resolves it as STOPPED. */
void tt__pool_finish_stop(tt_pool *p, op *o) {
  tt__handle_drop_arg(&o->h);
  tt__lock(&p->mu);
  o->where = OP_GONE;
  p->st.queued--;
  p->st.stopped++;
  pool_tenant_dec(p, o->tenant, o->tenant_len);
  resolve(o, TT_H_STOPPED, NULL);
  pool_emit(p, o, (tt_event){.kind = TT_EV_STOPPED});
  settle(p);
  tt__unlock(&p->mu);
  pool_deliver(p);
  tt_unref(&o->h);  /* the pool's reference */
}

static bool op_stop(tt_handle *h) {
  op *o = (op *)h;
  tt_pool *p = o->pool;
  bool queued;
  tt__lock(&p->mu);
  queued = o->where == OP_READY || o->where == OP_WAITING;
  if (queued) tt__pool_unqueue_locked(p, o);
  tt__unlock(&p->mu);
  if (queued) tt__pool_finish_stop(p, o);
  return queued;
}

static void op_fini(tt_handle *h) {
  op *o = (op *)h;
  tt_unref(o->base);
  tt_unref(o->ctx);
  tt_unref(o->actx);
  tt_unref(o->err);
  tt_unref(o->cause);
  free(o->tenant);
  free(o->sf);
  if (o->end_free != NULL) o->end_free(o->end_ud);
  tt_unref(o->bend_ud);
}

/* op_release keeps the freed record for the pool's next op (or frees it)
** and then lets go of the pool. */
static void op_release(tt_handle *h) {
  op *o = (op *)h;
  tt_pool *p = o->pool;
  tt__lock(&p->spare_mu);
  if (p->nspares < p->spares_max) {
    o->spare_next = p->spares;
    p->spares = o;
    p->nspares++;
    o = NULL;
  }
  tt__unlock(&p->spare_mu);
  free(o);
  pool_release(p);
}

static const tt__task_vt op_vt = {op_stop, op_fini, op_release};

uint64_t tt_pool_op_id(tt_handle *h) {
  /* The id is fixed once the op was accepted, before its handle is
  ** returned. */
  return h != NULL && h->vt == &op_vt ? ((op *)h)->id : 0;
}

/* tt__pool_on_shutdown runs when the shutdown context ends, on the thread that
** cancels it: running ops see their contexts canceled with its cause, and
** ops waiting for a retry fail for good, with that cause. */
void tt__pool_on_shutdown(void *arg) {
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
      /* An op with no context yet looks at 'shut' itself; an attached
      ** op's context is not the pool's to cancel. */
      if (o->ctx == NULL || o->attached) continue;
      o->cctx = tt_ref(o->ctx);
      tt_ref(&o->h);
      tt_list_push(&cancel, &o->clink);
    }
    while (!tt_list_empty(&p->waiting)) {
      op *o = tt_container_of(p->waiting.next, op, link);
      op *evicted = NULL;
      tt__pool_unqueue_locked(p, o);
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
  pool_deliver(p);
  pool_release(p);  /* the after_func's reference */
}

void tt__pool_shutdown_drop(void *arg) { pool_release(arg); }

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

/* tt__pool_admit decides under 'mu' whether one more op fits class 'c' and
** quota bucket 'qkey', waiting for queue space until 'until' (< 0: not at all).
** Only the ready queue counts against the capacity: ops waiting for a retry
** re-enter it when their delay ends, whatever its length.  The bucket is that
** of 'tenant' (NULL: no tenant). */
int tt__pool_admit(tt_pool *p, pclass *c, const char *tenant,
                   size_t tenant_len, double until) {
  for (;;) {
    swaiter w;
    double now;
    bool set;
    if (p->closed) return TT_ECLOSED;
    if (atomic_load_explicit(&c->nready, memory_order_relaxed) <
        (size_t)p->queue_cap)
      break;
    now = tt_now();
    if (until < 0 || now >= until) return TT_EQUEUE_FULL;
    tt__latch_init(&w.latch);
    tt_list_push(&c->space, &w.link);
    tt__unlock(&p->mu);
    set = tt_latch_wait(&w.latch, until - now);
    tt__lock(&p->mu);
    /* Still linked: nobody woke it (a timeout or an interrupt). */
    if (tt_list_linked(&w.link)) tt_list_remove(&w.link);
    tt__latch_destroy(&w.latch);
    if (!set && tt__interrupt_pending()) {
      /* Room this waiter may have been woken for goes to the next. */
      if (c->nready < (size_t)p->queue_cap) wake_space(c);
      return TT_EINTR;
    }
  }
  if (pool_quota_ok(p, tenant, tenant_len)) return TT_OK;
  wake_space(c);  /* the room it leaves may serve another waiter */
  return TT_EQUOTA;
}

/* accept_op puts op 'o' (its argument already in place) into the pool,
** waking a worker for it if 'wake' (a batch wakes once for all its ops);
** it fails only for want of memory, and then changes nothing. */
static int accept_op(tt_pool *p, op *o, bool wake) {
  if (!pool_tenant_inc(p, o->tenant, o->tenant_len)) return TT_ENOMEM;
  o->id = ++p->next_id;
  idle_disarm(p);
  if (p->idle_reported) {
    p->idle_reported = false;
    pool_emit(p, NULL, (tt_event){.kind = TT_EV_RESUMING});
  }
  p->st.submitted++;
  p->st.queued++;
  tt_ref(&o->h);  /* the pool's */
  pool_emit(p, o, (tt_event){.kind = TT_EV_SUBMITTED});
  if (wake) {
    push_ready(p, o);
  } else {
    pclass *c = &p->cls[o->cls];
    o->where = OP_READY;
    tt_list_push(&c->ready, &o->link);
    atomic_fetch_add_explicit(&c->nready, 1, memory_order_relaxed);
  }
  return TT_OK;
}

/* tt__pool_accept_locked is accept_op, with its wake, for the pool's other
** files. */
int tt__pool_accept_locked(tt_pool *p, op *o) { return accept_op(p, o, true); }

/* tt__pool_op_new makes an op that holds no argument yet; it takes over 'base'
** on success only. */
op *tt__pool_op_new(tt_pool *p, const char *name, tt_fn fn, int cls,
                    const char *tenant, size_t tenant_len, tt_ctx *base,
                    const tt_retry *retry, double timeout) {
  op *o;
  tt__lock(&p->spare_mu);
  o = p->spares;
  if (o != NULL) {
    p->spares = o->spare_next;
    p->nspares--;
  }
  tt__unlock(&p->spare_mu);
  if (o == NULL && (o = malloc(sizeof *o)) == NULL) return NULL;
  memset(o, 0, offsetof(op, name_buf));
  if (!tt__handle_init(&o->h, &op_vt, name, "op", o->name_buf,
                       sizeof o->name_buf, fn, NULL, NULL)) {
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
    o->tenant = tt__pool_dup_name(tenant, tenant_len);
    o->tenant_len = tenant_len;
    if (o->tenant == NULL) {
      tt_unref(&o->h);
      return NULL;  /* the caller keeps 'base' */
    }
  }
  o->base = base;
  return o;
}

/* tt__pool_settle_sub resolves a submission's settings against the pool's. */
int tt__pool_settle_sub(tt_pool *p, tt_ctx *parent, const tt_submit_opts *so,
                        sub *s) {
  s->name = so != NULL ? so->name : NULL;
  s->until = -1;
  s->thold = NULL;
  if (p == NULL || parent == NULL) return TT_EINVAL;
  s->ci = class_index(p, so != NULL ? so->priority : NULL);
  if (s->ci < 0) return TT_EINVAL;
  s->retry = p->retry;
  s->timeout = p->timeout;
  if (so != NULL) {
    if (so->retry != NULL && tt__pool_retry_norm(so->retry, &s->retry) != TT_OK)
      return TT_EINVAL;
    if (so->timeout != so->timeout || so->wait != so->wait)
      return TT_EINVAL;
    if (so->timeout != 0) s->timeout = so->timeout;
    if (so->wait > 0) s->until = tt_now() + so->wait;
  }
  if (so != NULL && so->tenant_set) {
    s->tenant = so->tenant;
    s->tenant_len = so->tenant != NULL ? so->tenant_len : 0;
  } else {
    s->tenant = pool_tenant_of(p, parent, s->tbuf, sizeof s->tbuf,
                               &s->tenant_len, &s->thold);
  }
  return TT_OK;
}

/* tt__pool_reject_locked counts and emits a refusal. */
void tt__pool_reject_locked(tt_pool *p, int rc, const sub *s) {
  p->st.rejected++;
  tt__pool_emit_rejected(p, rc, s->name, s->tenant, s->tenant_len, s->ci);
}

/* first_look resolves a submission's settings and takes the cheap first
** look at the pool (closed, queue room, quota), so that a refusal
** allocates nothing; a refusal is counted and emitted here.  A
** submission that would spill gets TT_ESPILLED (counted later).  With
** 'quick', a queue with room in sight (read without the lock) is taken
** as a yes, and the look under the lock that accepts the op decides. */
static int first_look(tt_pool *p, tt_ctx *parent, const tt_submit_opts *so,
                      sub *s, bool quick) {
  int rc = tt__pool_settle_sub(p, parent, so, s);
  if (rc != TT_OK) return rc;
  /* Room in sight: the look under the lock that accepts the op decides
  ** (and refuses, counts and emits as this one would), so that an
  ** accepted submission takes the lock once.  Only a refusal seen here
  ** spares the op's record. */
  if (quick && atomic_load_explicit(&p->cls[s->ci].nready,
                                    memory_order_relaxed) <
                   (size_t)p->queue_cap)
    return TT_OK;
  tt__lock(&p->mu);
  rc = tt__pool_admit(p, &p->cls[s->ci], s->tenant, s->tenant_len, s->until);
  if (rc == TT_EQUEUE_FULL && pool_can_spill(p, so))
    rc = pool_quota_ok(p, s->tenant, s->tenant_len) ? TT_ESPILLED : TT_EQUOTA;
  if (rc != TT_OK && rc != TT_ESPILLED) tt__pool_reject_locked(p, rc, s);
  tt__unlock(&p->mu);
  if (rc != TT_OK && rc != TT_ESPILLED) pool_deliver(p);
  return rc;
}

int tt_pool_precheck(tt_pool *p, tt_ctx *parent, const tt_submit_opts *so) {
  sub s;
  int rc;
  /* A bounded wait for room is the submission's own business. */
  if (so != NULL && so->wait > 0) return TT_OK;
  rc = first_look(p, parent, so, &s, false);
  tt_unref(s.thold);
  return rc;
}

/* A drainer's hooks for one submission (tt__pool_submit_hooked). */
typedef struct hooks {
  void (*end)(void *ud, tt_handle *h);
  void (*end_free)(void *ud);
  void *ud;
} hooks;

/* submit_sub is tt_pool_submit, with hooks ('hk' may be NULL), and the
** submission's settings in '*s' (their tenant held until the caller
** releases s->thold); a hooked submission never spills. */
static tt_handle *submit_sub(tt_pool *p, tt_ctx *parent,
                             const tt_submit_opts *so, tt_fn fn, void *arg,
                             tt_drop drop, const hooks *hk, sub *s,
                             int *err) {
  int rc;
  tt_ctx *base;
  op *o;
  tt_submit_opts plain;
  if (hk != NULL && so != NULL && so->spill_fn != NULL) {
    plain = *so;
    plain.spill_fn = NULL;
    so = &plain;
  }
  rc = first_look(p, parent, so, s, true);
  if (rc == TT_ESPILLED) {
    tt_handle *h;
    if (so->spill_args == NULL) {
      /* It would spill, but did not bring its arguments as wire values:
      ** a plain refusal. */
      tt__lock(&p->mu);
      tt__pool_reject_locked(p, TT_EQUEUE_FULL, s);
      tt__unlock(&p->mu);
      pool_deliver(p);
      return pool_refused(err, TT_EQUEUE_FULL);
    }
    h = tt__pool_do_spill(p, parent, so, s, err);
    if (h != NULL && drop != NULL) drop(arg);  /* it never runs here */
    return h;
  }
  if (rc != TT_OK) return pool_refused(err, rc);
  if (so != NULL && so->attached) {
    /* An attached op runs with its submitter's context itself: one
    ** attempt, no timeout of the pool's. */
    base = tt_ref(parent);
    s->retry.attempts = 1;
    s->timeout = 0;
  } else {
    base = tt_ref(parent);
  }
  o = tt__pool_op_new(p, s->name, fn, s->ci, s->tenant, s->tenant_len, base,
                      &s->retry, s->timeout);
  if (o == NULL) {
    tt_unref(base);
    return pool_refused(err, TT_ENOMEM);
  }
  o->attached = so != NULL && so->attached;
  /* A named op of a pool with a store keeps its spill form: the exit
  ** drain may write it to the store. */
  if (pool_can_spill(p, so) && !o->attached)
    o->sf = tt__pool_spillform_new(so, parent);
  if (hk != NULL) {
    o->no_dead = true;
    o->end = hk->end;
    o->end_ud = hk->ud;
  }
  /* Look again: others may have taken the room meanwhile. */
  tt__lock(&p->mu);
  rc = tt__pool_admit(p, &p->cls[s->ci], o->tenant, o->tenant_len, s->until);
  if (rc == TT_OK) {
    o->h.arg = arg;
    o->h.drop = drop;
    rc = tt__pool_accept_locked(p, o);
    if (rc != TT_OK) {
      o->h.arg = NULL;
      o->h.drop = NULL;
    }
  } else if (!(rc == TT_EQUEUE_FULL && pool_can_spill(p, so) &&
               so->spill_args != NULL)) {
    tt__pool_reject_locked(p, rc, s);
  }
  tt__unlock(&p->mu);
  pool_deliver(p);
  if (rc == TT_EQUEUE_FULL && pool_can_spill(p, so) && so->spill_args != NULL) {
    tt_handle *h;
    tt_unref(&o->h);  /* holds no argument */
    h = tt__pool_do_spill(p, parent, so, s, err);
    if (h != NULL && drop != NULL) drop(arg);
    return h;
  }
  if (rc != TT_OK) {
    o->end = NULL;    /* the caller keeps its hooks */
    tt_unref(&o->h);  /* holds no argument: the caller keeps it */
    return pool_refused(err, rc);
  }
  /* Set only now: a refused op must not free the caller's 'ud'. */
  if (hk != NULL) o->end_free = hk->end_free;
  if (err != NULL) *err = TT_OK;
  return &o->h;
}

/* submit runs submit_sub and releases what held the tenant. */
static tt_handle *submit(tt_pool *p, tt_ctx *parent,
                         const tt_submit_opts *so, tt_fn fn, void *arg,
                         tt_drop drop, const hooks *hk, int *err) {
  sub s;
  tt_handle *h;
  s.thold = NULL;
  if (fn == NULL) return pool_refused(err, TT_EINVAL);
  h = submit_sub(p, parent, so, fn, arg, drop, hk, &s, err);
  tt_unref(s.thold);
  return h;
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

/* batch_records makes up to 'want' op records for ops[0..] of a batch
** (no argument in them yet; NULL-free prefix), each with its spill form
** and end report; it returns how many it made (0: out of memory). */
static size_t batch_records(tt_pool *p, tt_ctx *parent,
                            const tt_submit_opts *so, tt_fn fn,
                            const tt_batch_op *ops, size_t want,
                            const tt_batch_end *be, size_t at, sub *s,
                            op **recs) {
  bool attached = so != NULL && so->attached;
  size_t k;
  for (k = 0; k < want; k++) {
    op *o = tt__pool_op_new(p, s->name, fn, s->ci, s->tenant, s->tenant_len,
                            parent, &s->retry, s->timeout);
    if (o == NULL) break;
    tt_ref(parent);  /* taken over by the op */
    o->attached = attached;
    if (pool_can_spill(p, so) && !attached && be == NULL) {
      tt_submit_opts one = *so;
      one.spill_args = ops[k].spill_args;
      one.spill_args_len = ops[k].spill_args_len;
      o->sf = tt__pool_spillform_new(&one, parent);
    }
    if (be != NULL) {
      o->bend = be->end;
      o->bend_ud = tt_ref(be->ud);
      o->bend_i = be->index0 + at + k;
    }
    recs[k] = o;
  }
  return k;
}

/* batch_spill writes op 'b' of a batch, which found the queue full, to
** the overflow store as submit_sub would; its handle or NULL. */
static tt_handle *batch_spill(tt_pool *p, tt_ctx *parent,
                              const tt_submit_opts *so, tt_drop drop,
                              const tt_batch_op *b, const sub *s, int *err) {
  tt_submit_opts one = *so;
  tt_handle *h;
  one.spill_args = b->spill_args;
  one.spill_args_len = b->spill_args_len;
  h = tt__pool_do_spill(p, parent, &one, s, err);
  if (h != NULL && drop != NULL) drop(b->arg);  /* it never runs here */
  return h;
}

/* tt_pool_submit_many: see tether.h.  Per chunk, the records are made
** without the lock (no more than the queue has room for, at least one),
** then each op is admitted and accepted under one hold of 'mu' without a
** wake, and one wake_for follows: a worker that takes an op and leaves
** more queued wakes the next (see "Handoff"), so the batch costs the
** submitter one signal.  Before an admission that may wait for room,
** the ops already queued get their wake, or nobody would make room. */
size_t tt_pool_submit_many(tt_pool *p, tt_ctx *parent,
                           const tt_submit_opts *so, tt_fn fn,
                           tt_drop drop, const tt_batch_op *ops, size_t n,
                           const tt_batch_end *be, tt_handle **hs,
                           int *err) {
  op *recs[TT_BATCH_CHUNK];
  size_t done = 0;
  sub s;
  int rc;
  bool spill_ok;
  s.thold = NULL;
  if (err != NULL) *err = TT_OK;
  if (n == 0) return 0;
  if (p == NULL || fn == NULL || ops == NULL || hs == NULL) {
    (void)pool_refused(err, TT_EINVAL);
    return 0;
  }
  rc = tt__pool_settle_sub(p, parent, so, &s);
  if (so != NULL && so->attached) {
    s.retry.attempts = 1;  /* as submit_sub: one attempt, no timeout */
    s.timeout = 0;
  }
  spill_ok = be == NULL && pool_can_spill(p, so);
  while (rc == TT_OK && done < n) {
    pclass *c = &p->cls[s.ci];
    size_t want = n - done, made, got = 0, i, nr;
    bool spill = false;
    nr = atomic_load_explicit(&c->nready, memory_order_relaxed);
    if (want > TT_BATCH_CHUNK) want = TT_BATCH_CHUNK;
    if (nr < (size_t)p->queue_cap && want > (size_t)p->queue_cap - nr)
      want = (size_t)p->queue_cap - nr;
    else if (nr >= (size_t)p->queue_cap)
      want = 1;  /* full now: it waits, spills or is refused */
    made = batch_records(p, parent, so, fn, ops + done, want, be, done, &s,
                         recs);
    if (made == 0) {
      rc = TT_ENOMEM;
      break;
    }
    tt__lock(&p->mu);
    for (i = 0; i < made; i++) {
      op *o = recs[i];
      if (got > 0 && atomic_load_explicit(&c->nready, memory_order_relaxed) >=
                         (size_t)p->queue_cap)
        wake_for(p, s.ci);
      rc = tt__pool_admit(p, c, o->tenant, o->tenant_len, s.until);
      if (rc == TT_OK) {
        o->h.arg = ops[done + i].arg;
        o->h.drop = drop;
        rc = accept_op(p, o, false);
        if (rc != TT_OK) {
          o->h.arg = NULL;
          o->h.drop = NULL;
          break;
        }
        hs[done + i] = &o->h;
        recs[i] = NULL;
        got++;
        continue;
      }
      if (rc == TT_EQUEUE_FULL && spill_ok &&
          ops[done + i].spill_args != NULL) {
        spill = true;
        rc = TT_OK;
      } else {
        tt__pool_reject_locked(p, rc, &s);
      }
      break;
    }
    if (got > 0) wake_for(p, s.ci);
    tt__unlock(&p->mu);
    pool_deliver(p);
    /* Records not used hold no argument: the caller keeps those. */
    for (i = got; i < made; i++) tt_unref(&recs[i]->h);
    done += got;
    if (spill) {
      tt_handle *h = batch_spill(p, parent, so, drop, &ops[done], &s, &rc);
      if (h == NULL) break;
      hs[done++] = h;
      rc = TT_OK;
    }
  }
  tt_unref(s.thold);
  if (err != NULL) *err = rc;
  return done;
}

int tt__pool_room(tt_pool *p, int *capacity) {
  int i, cap = p->queue_cap, room;
  long busy, free_q;
  for (i = 0; i < p->ncls; i++) cap += p->cls[i].workers;
  tt__lock(&p->mu);
  if (p->closed) {
    tt__unlock(&p->mu);
    return -1;
  }
  busy = (long)(p->st.queued + p->st.inflight);
  /* An idle worker frees its queue slot only once it has taken its op:
  ** what the queue takes now bounds the room too. */
  free_q = (long)p->queue_cap - (long)p->cls[p->defcls].nready;
  tt__unlock(&p->mu);
  if (capacity != NULL) *capacity = cap;
  room = cap - (int)(busy > cap ? cap : busy);
  if (room > free_q) room = free_q > 0 ? (int)free_q : 0;
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
    tt__pool_wake_all(p);  /* submitters waiting for room get TT_ECLOSED */
    settle(p);
  }
  tt__unlock(&p->mu);
  pool_deliver(p);
}

tt_latch *tt_pool_drained(tt_pool *p) { return &p->drained_latch; }

/* wait_check is the first step of every call that waits for the pool to
** empty: an op of the pool that waits for it waits for itself, since it
** is running until it returns. */
static int wait_check(const tt_pool *p) {
  return tl_running == p ? TT_EDEADLK : TT_OK;
}

int tt_pool_drain(tt_pool *p, tt_ctx *ctx, double timeout) {
  tt_case cs[2];
  int n = 1, r;
  if (p == NULL) return TT_EINVAL;
  if ((r = wait_check(p)) != TT_OK) return r;
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
    tt__pool_flush_events(p);
    return TT_OK;
  }
  if (r == 1) return tt_ctx_err(ctx) != 0 ? tt_ctx_err(ctx) : TT_CANCELED;
  if (r == TT_SELECT_TIMEOUT) return TT_ETIMEOUT;
  if (r == TT_SELECT_INTERRUPTED) return TT_EINTR;
  return TT_EINVAL;
}

double tt_pool_exit_timeout(tt_pool *p) { return p->exit_timeout; }

int tt_pool_wait_idle(tt_pool *p, tt_ctx *ctx, double timeout) {
  tt_case cs[2];
  idlewait *iw;
  int n = 1, r;
  if (p == NULL) return TT_EINVAL;
  if ((r = wait_check(p)) != TT_OK) return r;
  tt__lock(&p->mu);
  if (p->st.queued == 0 && p->st.inflight == 0) {
    tt__unlock(&p->mu);
    tt__pool_flush_events(p);
    return TT_OK;
  }
  if (p->idle_w == NULL) {
    p->idle_w = calloc(1, sizeof *p->idle_w);
    if (p->idle_w == NULL) {
      tt__unlock(&p->mu);
      return TT_ENOMEM;
    }
    tt_obj_init(&p->idle_w->hdr, &idlewait_type);
    tt__latch_init(&p->idle_w->l);
  }
  iw = tt_ref(p->idle_w);
  tt__unlock(&p->mu);
  memset(cs, 0, sizeof cs);
  cs[0].kind = TT_CASE_LATCH;
  cs[0].latch = &iw->l;
  if (ctx != NULL && tt_ctx_done(ctx) != NULL) {
    cs[1].kind = TT_CASE_LATCH;
    cs[1].latch = tt_ctx_done(ctx);
    n = 2;
  }
  r = tt_select(cs, n, false, timeout);
  /* Idle wins a tie with the context. */
  if (tt_latch_is_set(&iw->l)) r = 0;
  tt_unref(iw);
  if (r == 0) {
    tt__pool_flush_events(p);
    return TT_OK;
  }
  if (r == 1) return tt_ctx_err(ctx) != 0 ? tt_ctx_err(ctx) : TT_CANCELED;
  if (r == TT_SELECT_TIMEOUT) return TT_ETIMEOUT;
  if (r == TT_SELECT_INTERRUPTED) return TT_EINTR;
  return TT_EINVAL;
}

/* An abandoned op, until its context is canceled. */
typedef struct gone {
  op *o;                   /* holds a reference */
  tt_ctx *ctx;             /* a running op's context, to cancel */
  bool running;
} gone;

size_t tt_pool_abandon(tt_pool *p) {
  gone *gs = NULL;
  size_t ng = 0, cap, i;
  tt_obj *err;
  tt_list *l;
  int k;
  if (p == NULL) return 0;
  err = (tt_obj *)tt_error_new(TT_EABANDONED, NULL, NULL);
  tt__lock(&p->mu);
  if (!p->closed) {
    p->closed = true;
    idle_disarm(p);
    tt__pool_wake_all(p);
  }
  cap = (size_t)(p->st.queued + p->st.inflight);
  if (cap > 0) gs = calloc(cap, sizeof *gs);
  if (gs == NULL) cap = 0;
  /* Queued ops leave their queues now (OP_FINISHING, still counted as
  ** queued) and end below, once their arguments are dropped. */
  for (k = 0; k < p->ncls && ng < cap; k++) {
    while (!tt_list_empty(&p->cls[k].ready) && ng < cap) {
      op *o = tt_container_of(p->cls[k].ready.next, op, link);
      tt__pool_unqueue_locked(p, o);
      gs[ng++].o = o;  /* takes over the queue's reference */
    }
  }
  while (!tt_list_empty(&p->waiting) && ng < cap) {
    op *o = tt_container_of(p->waiting.next, op, link);
    tt__pool_unqueue_locked(p, o);
    gs[ng++].o = o;
  }
  /* Running ops are given up on at once; their workers go on. */
  for (l = p->running.next; l != &p->running && ng < cap; l = l->next) {
    op *o = tt_container_of(l, op, link);
    if (o->abandoned) continue;
    o->abandoned = true;
    p->st.inflight--;
    p->st.abandoned++;
    pool_tenant_dec(p, o->tenant, o->tenant_len);
    tt__handle_resolve(&o->h, TT_H_FAILED, tt_ref(err));
    if (o->bend != NULL) o->bend(o->bend_ud, o->bend_i, &o->h);
    pool_emit(p, o, (tt_event){.kind = TT_EV_ABANDONED, .code = TT_EABANDONED,
                               .error = err, .ctx = o->ctx, .running = true});
    tt_ref(&o->h);
    gs[ng].o = o;
    gs[ng].ctx = tt_ref(o->ctx);
    gs[ng].running = true;
    ng++;
  }
  settle(p);
  tt__unlock(&p->mu);
  for (i = 0; i < ng; i++) {
    op *o = gs[i].o;
    if (gs[i].running) continue;
    tt__handle_drop_arg(&o->h);
    tt__lock(&p->mu);
    o->where = OP_GONE;
    p->st.queued--;
    p->st.abandoned++;
    pool_tenant_dec(p, o->tenant, o->tenant_len);
    tt__handle_resolve(&o->h, TT_H_FAILED, tt_ref(err));
    if (o->bend != NULL) o->bend(o->bend_ud, o->bend_i, &o->h);
    pool_emit(p, o, (tt_event){.kind = TT_EV_ABANDONED, .code = TT_EABANDONED,
                               .error = err});
    settle(p);
    tt__unlock(&p->mu);
  }
  pool_deliver(p);
  for (i = 0; i < ng; i++) {
    if (gs[i].running) tt_cancel(gs[i].ctx, err);
    tt_unref(gs[i].ctx);
    tt_unref(&gs[i].o->h);
  }
  free(gs);
  tt_unref(err);
  return ng;
}

/* }==================================================================== */
