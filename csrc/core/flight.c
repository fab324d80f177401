/*
** flight.c -- singleflight, after golang.org/x/sync/singleflight.
**
** DESIGN.  A tt_flight maps keys (byte strings) to the call in flight for
** each, in a chained hash table.  The first caller for a key makes a
** 'call' record, links it into the table and hands the run to the
** executor; the function runs there (never on a caller's thread) with
** workctx = with_timeout(without_cancel(ctx), timeout), so it keeps the
** first caller's values but not its cancellation.  Later callers for the
** same key find the record and wait on its latch.
**
** Unlike Go's Do, a caller may leave early: it waits with tt_select on the
** call's latch and on its own context's done, and if its context ends
** first it returns that context's error.  'waiters' counts the callers
** still waiting; the run ends by recording 'delivered' = 'waiters', and
** 'shared' is 'delivered' > 1: the result went to several callers.  When
** the last waiter leaves an unfinished run, the run goes on to completion
** (a caller that comes later for the key still joins it), unless the
** caller that started it asked for cancel_when_abandoned: then workctx is
** canceled and the record leaves the table at once, so that the next
** caller starts afresh instead of joining a run that is being stopped.
**
** An asynchronous caller (tt_flight_call_async) waits without a thread: a
** 'join' record on the call's 'joins' list, counted in 'waiters' like a
** waiting thread.  The run's end takes every join off the list under
** 'mu' (they are then counted in 'delivered'), sets the latch (one
** broadcast for the threads), and calls the joins' callbacks one after
** another on its own thread with no lock held.  A join whose context can
** end also has an after_func on that context; whichever comes first
** under 'mu' decides: the run's end takes the join off the list and stops
** the after_func, or the after_func (on an executor thread) takes it off,
** counts the caller out of 'waiters' with the same abandonment rule as a
** thread that leaves, and calls the callback with the context's error.
** The after_func is registered after the join is on the list (so that a
** context that ends early finds it), and stored in the join under 'mu'
** only if the join still waits; otherwise the caller stops it itself.
**
** Results are never cached: the record leaves the table when its run
** completes (Go's doCall deletes g.m[key] if it still maps to the call),
** or earlier through tt_flight_forget.
**
** Lock order: 'mu' is taken first.  Under it, only a new work context is
** made (which may take the timer heap's lock); the executor, latches,
** cancellation, after_func registrations (a context's 'mu', then
** 'af_mu') and callbacks are reached after it is released.
*/
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* {====================================================================
** Calls
** ===================================================================== */

/* A call is one run of a function for a key.  References: the run (from
** creation until it has published its result) and each waiting caller
** hold one.  The table does not: a call is only linked while its run has
** not finished, and the run's reference covers that time. */
typedef struct call {
  tt_obj hdr;
  tt_flight *sf;           /* a reference, to unlink from the table */
  tt_list link;            /* in a bucket of sf, under sf->mu; points to
                           ** itself once unlinked (done or forgotten) */
  uint64_t hash;           /* immutable */
  char *key;               /* immutable, 'keylen' bytes */
  size_t keylen;
  tt_ctx *work;            /* immutable: the run's context */
  bool cancel_abandoned;   /* immutable: the starter's choice */
  tt_fn fn;                /* immutable; 'arg' and 'drop' are the run's */
  void *arg;
  tt_drop drop;
  int waiters;             /* callers waiting now (threads and async
                           ** joins), under sf->mu */
  tt_list joins;           /* async joins waiting, under sf->mu */
  int delivered;           /* 'waiters' when the run ended, under sf->mu */
  bool completed;          /* set once by the run, under sf->mu */
  int rc;                  /* TT_OK or TT_EFAILED, set before 'completed' */
  tt_obj *result;          /* the value or error, set before 'completed' */
  tt_latch done;           /* set after 'completed' */
} call;

static void call_free(tt_obj *o) {
  call *c = (call *)o;
  tt_unref(c->result);
  tt_unref(c->work);
  tt_unref(c->sf);
  tt__latch_destroy(&c->done);
  free(c->key);
  free(c);
}

static const tt_type call_type = {"tether.FlightCall", call_free, NULL,
                                    NULL};

/* }==================================================================== */


/* {====================================================================
** The table
** ===================================================================== */

#define MIN_BUCKETS 16

struct tt_flight {
  tt_obj hdr;
  pthread_mutex_t mu;      /* protects the fields below and calls' links */
  tt_list *buckets;        /* 'nbuckets' lists of calls, by link */
  size_t nbuckets;         /* a power of two */
  size_t count;            /* calls linked in the table */
};

static void flight_free(tt_obj *o) {
  tt_flight *sf = (tt_flight *)o;
  /* Each run holds the flight, so the table is empty by now. */
  free(sf->buckets);
  TT_CHECK(pthread_mutex_destroy(&sf->mu));
  free(sf);
}

static int flight_describe(tt_obj *o, char *buf, size_t n) {
  tt_flight *sf = (tt_flight *)o;
  size_t count;
  tt__lock(&sf->mu);
  count = sf->count;
  tt__unlock(&sf->mu);
  return snprintf(buf, n, "tether.Singleflight (%zu in flight)", count);
}

const tt_type tt_flight_type = {"tether.Singleflight", flight_free,
                                flight_describe, NULL};

tt_flight *tt_flight_new(void) {
  tt_flight *sf = calloc(1, sizeof *sf);
  size_t i;
  if (sf == NULL) return NULL;
  sf->buckets = malloc(MIN_BUCKETS * sizeof *sf->buckets);
  if (sf->buckets == NULL) {
    free(sf);
    return NULL;
  }
  for (i = 0; i < MIN_BUCKETS; i++) tt_list_init(&sf->buckets[i]);
  sf->nbuckets = MIN_BUCKETS;
  tt_obj_init(&sf->hdr, &tt_flight_type);
  TT_CHECK(pthread_mutex_init(&sf->mu, NULL));
  return sf;
}

/* hash_key is 64-bit FNV-1a. */
static uint64_t hash_key(const char *key, size_t len) {
  uint64_t h = 0xcbf29ce484222325ULL;
  size_t i;
  for (i = 0; i < len; i++) {
    h ^= (unsigned char)key[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

/* lookup finds the call in flight for a key; with sf->mu held. */
static call *lookup(tt_flight *sf, uint64_t h, const char *key, size_t len) {
  tt_list *head = &sf->buckets[h & (sf->nbuckets - 1)], *l;
  for (l = head->next; l != head; l = l->next) {
    call *c = tt_container_of(l, call, link);
    if (c->hash == h && c->keylen == len &&
        (len == 0 || memcmp(c->key, key, len) == 0))
      return c;
  }
  return NULL;
}

/* grow doubles the table when it holds more than two calls a bucket; with
** sf->mu held.  Out of memory it keeps the old table, which still
** works. */
static void grow(tt_flight *sf) {
  size_t nb = sf->nbuckets * 2, i;
  tt_list *nbk;
  if (sf->count <= sf->nbuckets * 2) return;
  nbk = malloc(nb * sizeof *nbk);
  if (nbk == NULL) return;
  for (i = 0; i < nb; i++) tt_list_init(&nbk[i]);
  for (i = 0; i < sf->nbuckets; i++) {
    tt_list *l;
    while ((l = tt_list_shift(&sf->buckets[i])) != NULL) {
      call *c = tt_container_of(l, call, link);
      tt_list_push(&nbk[c->hash & (nb - 1)], l);
    }
  }
  free(sf->buckets);
  sf->buckets = nbk;
  sf->nbuckets = nb;
}

/* unlink_call takes a call out of the table if it is still there; with
** sf->mu held. */
static void unlink_call(tt_flight *sf, call *c) {
  if (!tt_list_linked(&c->link)) return;
  tt_list_remove(&c->link);
  sf->count--;
}

/* }==================================================================== */


/* {====================================================================
** Runs and callers
** ===================================================================== */

/* A join is one asynchronous caller (tt_flight_call_async) waiting for a
** call.  References: its place on the call's 'joins' (taken over by
** whoever takes it off: the run's end, or its context's end) and its
** after_func's argument (released when that function has run or is
** stopped). */
typedef struct join {
  _Atomic int refs;
  call *c;                 /* a reference */
  tt_ctx *ctx;             /* a reference: the caller's context */
  tt_flight_cb cb;         /* immutable */
  void *cbarg;
  tt_list link;            /* in c->joins while 'waiting', under sf->mu;
                           ** then on the list of the run delivering */
  bool waiting;            /* on c->joins, under sf->mu */
  tt_afterfunc *af;        /* the context's registration (a reference),
                           ** or NULL: written under sf->mu while
                           ** 'waiting', then owned by who took it off */
} join;

static void join_unref(void *p) {
  join *j = p;
  if (atomic_fetch_sub(&j->refs, 1) != 1) return;
  tt_unref(j->ctx);
  tt_unref(j->c);
  free(j);
}

/* stop_af stops and releases a join's after_func, taken off the join
** (under sf->mu) by the caller; outside sf->mu, since a stop drops the
** join's reference. */
static void stop_af(tt_afterfunc *af) {
  if (af == NULL) return;
  tt_afterfunc_stop(af);
  tt_unref(af);
}

/* finish publishes a run's outcome ('rc' and 'result', a reference taken
** over) to every waiting caller and unlinks the call.  Threads waiting
** on the latch are woken by one broadcast; async joins get their
** callbacks here, on this thread, after the latch is set. */
static void finish(call *c, int rc, tt_obj *result) {
  tt_flight *sf = c->sf;
  tt_list joins, *l;
  bool shared;
  tt_list_init(&joins);
  tt__lock(&sf->mu);
  c->rc = rc;
  c->result = result;
  c->completed = true;
  c->delivered = c->waiters;
  unlink_call(sf, c);
  /* Every join still waiting receives the outcome: take them over with
  ** their after_funcs, which can no longer make them leave. */
  while ((l = tt_list_shift(&c->joins)) != NULL) {
    tt_container_of(l, join, link)->waiting = false;
    tt_list_push(&joins, l);
  }
  tt__unlock(&sf->mu);
  tt__latch_set(&c->done);
  shared = c->delivered > 1;
  while ((l = tt_list_shift(&joins)) != NULL) {
    join *j = tt_container_of(l, join, link);
    /* The caller that registered 'af' stored it under sf->mu only while
    ** the join was waiting (else it stops it itself), so it is final
    ** now. */
    stop_af(j->af);
    j->af = NULL;
    j->cb(j->cbarg, c->rc, c->result, shared);
    join_unref(j);
  }
}

static void run_call(void *p) {
  call *c = p;
  tt_obj *out = NULL;
  int rc = c->fn(c->work, c->arg, &out);
  if (c->drop != NULL) c->drop(c->arg);
  c->arg = NULL;
  c->drop = NULL;
  if (rc != TT_OK && out == NULL) {
    int code = rc > 0 && rc < TT_NERRORS ? rc : TT_EFAILED;
    out = (tt_obj *)tt_error_for(code);
  }
  /* As with Go's "defer cancel()": the run is over, so its context's
  ** timer is no longer needed.  Contexts the function derived from it
  ** with tt_without_cancel are not affected. */
  tt_cancel(c->work, NULL);
  finish(c, rc == TT_OK ? TT_OK : TT_EFAILED, out);
  tt_unref(c);
}

/* new_call makes the record of a run and links it; with sf->mu held.  It
** returns NULL when out of memory. */
static call *new_call(tt_flight *sf, tt_ctx *ctx, uint64_t h,
                      const char *key, size_t len, tt_fn fn, void *arg,
                      tt_drop drop, double timeout, bool cancel_abandoned) {
  call *c = calloc(1, sizeof *c);
  tt_ctx *detached;
  if (c == NULL) return NULL;
  c->key = malloc(len + 1);
  detached = tt_without_cancel(ctx);
  if (c->key == NULL || detached == NULL) goto fail;
  if (timeout > 0) {
    c->work = tt_with_timeout(detached, timeout, NULL);
    tt_unref(detached);
  } else if (cancel_abandoned) {
    /* A plain without_cancel context cannot be canceled: give the run one
    ** that can, for when every caller leaves. */
    c->work = tt_with_cancel(detached);
    tt_unref(detached);
  } else {
    c->work = detached;
  }
  if (c->work == NULL) goto fail;
  if (len > 0) memcpy(c->key, key, len);
  c->key[len] = '\0';
  c->keylen = len;
  c->hash = h;
  tt_obj_init(&c->hdr, &call_type);
  c->sf = tt_ref(sf);
  tt__latch_init(&c->done);
  tt_list_init(&c->joins);
  c->cancel_abandoned = cancel_abandoned;
  c->fn = fn;
  c->arg = arg;
  c->drop = drop;
  tt_list_push(&sf->buckets[h & (sf->nbuckets - 1)], &c->link);
  sf->count++;
  grow(sf);
  return c;
fail:
  tt_unref(detached);
  free(c->key);
  free(c);
  return NULL;
}

/* deliver gives a completed call's outcome to one caller (with sf->mu
** held, or once the call's latch is set). */
static int deliver(call *c, tt_obj **result, bool *shared) {
  if (shared != NULL) *shared = c->delivered > 1;
  if (result != NULL) *result = tt_ref(c->result);
  return c->rc;
}

/* enter finds the call in flight for a key, or makes one, and counts the
** caller in; with sf->mu held.  It returns the call with a reference for
** the caller ('*started' true when this caller made it, with the run's
** reference too), or NULL when out of memory. */
static call *enter(tt_flight *sf, tt_ctx *ctx, const char *key,
                   size_t keylen, tt_fn fn, void *arg, tt_drop drop,
                   double timeout, bool cancel_when_abandoned,
                   bool *started) {
  uint64_t h = hash_key(key, keylen);
  call *c = lookup(sf, h, key, keylen);
  *started = false;
  if (c == NULL) {
    c = new_call(sf, ctx, h, key, keylen, fn, arg, drop, timeout,
                 cancel_when_abandoned);
    if (c == NULL) return NULL;
    *started = true;
  }
  /* A new call's first reference is the run's; this is the caller's. */
  tt_ref(c);
  c->waiters++;
  return c;
}

/* start hands a new call's run to the executor, outside sf->mu, or drops
** the argument of a caller that joined a run already in flight. */
static void start(call *c, bool started, void *arg, tt_drop drop) {
  int rc;
  if (!started) {
    if (drop != NULL) drop(arg);
  } else if ((rc = tt_exec(run_call, c)) != TT_OK) {
    /* No thread to run it: the run fails at once, for every caller that
    ** has joined meanwhile too. */
    if (c->drop != NULL) c->drop(c->arg);
    c->arg = NULL;
    c->drop = NULL;
    tt_cancel(c->work, NULL);
    finish(c, TT_EFAILED, (tt_obj *)tt_error_new(rc, NULL, NULL));
    tt_unref(c);
  }
}

/* leave counts a caller out of an unfinished run; with sf->mu held.  It
** returns true when the run was abandoned and must be canceled (by
** cancel_abandoned, outside the lock). */
static bool leave(tt_flight *sf, call *c) {
  c->waiters--;
  if (c->waiters == 0 && c->cancel_abandoned) {
    unlink_call(sf, c);
    return true;
  }
  return false;
}

static void cancel_abandoned(call *c) {
  tt_error *why = tt_error_new(TT_CANCELED,
                               "singleflight: every caller left", NULL);
  tt_cancel(c->work, (tt_obj *)why);
  tt_unref(why);
}

int tt_flight_call(tt_flight *sf, tt_ctx *ctx, const char *key,
                   size_t keylen, tt_fn fn, void *arg, tt_drop drop,
                   double timeout, bool cancel_when_abandoned,
                   tt_obj **result, bool *shared) {
  call *c;
  bool started, cancel = false, interrupted = false;
  tt_case cases[2];
  int rc;

  if (result != NULL) *result = NULL;
  if (shared != NULL) *shared = false;
  if (sf == NULL || ctx == NULL || fn == NULL ||
      (key == NULL && keylen > 0)) {
    rc = TT_EINVAL;
    goto unused;
  }
  /* A caller that is already gone starts nothing and joins nothing. */
  if ((rc = tt_ctx_err(ctx)) != TT_OK) goto unused;

  tt__lock(&sf->mu);
  c = enter(sf, ctx, key, keylen, fn, arg, drop, timeout,
            cancel_when_abandoned, &started);
  tt__unlock(&sf->mu);
  if (c == NULL) {
    rc = TT_ENOMEM;
    goto unused;
  }
  start(c, started, arg, drop);

  memset(cases, 0, sizeof cases);
  cases[0].kind = TT_CASE_LATCH;
  cases[0].latch = &c->done;
  cases[1].latch = tt_ctx_done(ctx);
  cases[1].kind = cases[1].latch != NULL ? TT_CASE_LATCH : TT_CASE_NIL;
  interrupted = tt_select(cases, 2, false, -1) == TT_SELECT_INTERRUPTED;

  /* Done: the outcome was written (under 'mu') before the latch was set,
  ** and is never changed after, so a caller woken by it reads it without
  ** the lock (a thousand callers woken at once do not queue on it). */
  if (tt_latch_is_set(&c->done)) {
    rc = deliver(c, result, shared);
    tt_unref(c);
    return rc;
  }
  tt__lock(&sf->mu);
  if (c->completed) {
    /* Done, or done while the caller's context ended too: the result is
    ** there and was counted as delivered to this caller, so take it. */
    rc = deliver(c, result, shared);
  } else {
    /* The caller leaves: its context ended, or an interrupt came. */
    rc = interrupted ? TT_EINTR : tt_ctx_err(ctx);
    cancel = leave(sf, c);
  }
  tt__unlock(&sf->mu);
  if (cancel) cancel_abandoned(c);
  tt_unref(c);
  return rc;

unused:
  if (drop != NULL) drop(arg);
  return rc;
}

/* join_ctx_done runs (on an executor thread) once the context of an async
** join has ended: if the join still waits, it leaves the run and gets
** its callback with the context's error. */
static void join_ctx_done(void *p) {
  join *j = p;
  call *c = j->c;
  tt_flight *sf = c->sf;
  tt_afterfunc *af = NULL;
  bool left = false, cancel = false;
  tt__lock(&sf->mu);
  if (j->waiting) {
    tt_list_remove(&j->link);
    j->waiting = false;
    left = true;
    af = j->af;
    j->af = NULL;
    cancel = leave(sf, c);
  }
  tt__unlock(&sf->mu);
  if (left) {
    if (cancel) cancel_abandoned(c);
    tt_unref(af);  /* running now: nothing to stop */
    j->cb(j->cbarg, tt_ctx_err(j->ctx), NULL, false);
    join_unref(j);  /* the reference of its place on c->joins */
  }
  join_unref(j);  /* the after_func's */
}

int tt_flight_call_async(tt_flight *sf, tt_ctx *ctx, const char *key,
                         size_t keylen, tt_fn fn, void *arg, tt_drop drop,
                         double timeout, bool cancel_when_abandoned,
                         tt_flight_cb cb, void *cbarg) {
  call *c;
  join *j;
  tt_afterfunc *af;
  bool started, stop = false, cancel = false, waiting;
  int rc;

  if (sf == NULL || ctx == NULL || fn == NULL || cb == NULL ||
      (key == NULL && keylen > 0)) {
    rc = TT_EINVAL;
    goto unused;
  }
  if ((rc = tt_ctx_err(ctx)) != TT_OK) goto unused;
  if ((j = calloc(1, sizeof *j)) == NULL) {
    rc = TT_ENOMEM;
    goto unused;
  }
  /* Two references: its place on c->joins, and this call's own, so that
  ** the join outlives a run or a context that ends on another thread
  ** while this call still looks at it. */
  atomic_init(&j->refs, 2);
  j->ctx = tt_ref(ctx);
  j->cb = cb;
  j->cbarg = cbarg;
  tt__lock(&sf->mu);
  c = enter(sf, ctx, key, keylen, fn, arg, drop, timeout,
            cancel_when_abandoned, &started);
  if (c != NULL) {
    j->c = c;  /* the caller's reference */
    j->waiting = true;
    tt_list_push(&c->joins, &j->link);
  }
  tt__unlock(&sf->mu);
  if (c == NULL) {
    tt_unref(j->ctx);
    free(j);
    rc = TT_ENOMEM;
    goto unused;
  }
  start(c, started, arg, drop);
  /* A context that can never end needs no watch. */
  if (tt_ctx_done(ctx) == NULL) {
    join_unref(j);
    return TT_OK;
  }

  /* Watch the caller's context.  The run may have ended meanwhile (then
  ** the callback ran or runs on the run's thread, and the watch is
  ** stopped here), and the context may end before the watch is stored in
  ** the join (then its function finds the join, takes it off and
  ** releases the watch itself). */
  atomic_fetch_add(&j->refs, 1);  /* the after_func's */
  af = tt_after_func(ctx, join_ctx_done, j, join_unref);
  tt__lock(&sf->mu);
  waiting = j->waiting;
  if (af == NULL) {
    /* Out of memory: the caller cannot be told when its context ends, so
    ** it leaves now, without a callback, if the run has not ended. */
    if (waiting) {
      tt_list_remove(&j->link);
      j->waiting = false;
      cancel = leave(sf, c);
    }
  } else if (waiting) {
    j->af = af;
  } else {
    stop = true;
  }
  tt__unlock(&sf->mu);
  rc = TT_OK;
  if (af == NULL) {
    join_unref(j);  /* the after_func's, never made */
    if (waiting) {
      /* It left: no callback will come. */
      if (cancel) cancel_abandoned(c);
      join_unref(j);  /* its place on c->joins */
      rc = TT_ENOMEM;
    }
  } else if (stop) {
    stop_af(af);
  }
  join_unref(j);  /* this call's own */
  return rc;

unused:
  if (drop != NULL) drop(arg);
  return rc;
}

void tt_flight_forget(tt_flight *sf, const char *key, size_t keylen) {
  uint64_t h;
  call *c;
  if (sf == NULL || (key == NULL && keylen > 0)) return;
  h = hash_key(key, keylen);
  tt__lock(&sf->mu);
  c = lookup(sf, h, key, keylen);
  if (c != NULL) unlink_call(sf, c);
  tt__unlock(&sf->mu);
}

int tt__flight_waiters(tt_flight *sf, const char *key, size_t keylen) {
  call *c;
  int n;
  tt__lock(&sf->mu);
  c = lookup(sf, hash_key(key, keylen), key, keylen);
  n = c != NULL ? c->waiters : 0;
  tt__unlock(&sf->mu);
  return n;
}

size_t tt_flight_inflight(tt_flight *sf) {
  size_t n;
  tt__lock(&sf->mu);
  n = sf->count;
  tt__unlock(&sf->mu);
  return n;
}

int tt_flight_waiting(tt_flight *sf, const char *key, size_t keylen) {
  call *c;
  int n;
  tt__lock(&sf->mu);
  c = lookup(sf, hash_key(key, keylen), key, keylen);
  n = c != NULL ? c->waiters : 0;
  tt__unlock(&sf->mu);
  return n;
}

/* }==================================================================== */
