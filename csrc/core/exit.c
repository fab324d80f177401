/*
** exit.c -- pools drained when their owner ends, and at exit.
**
** A tracked pool is held (one reference) in a list with its owner until
** tt_exit_drain takes it out: the Lua binding tracks the pools each Lua
** state makes and drains them when the state closes; the atexit handler,
** registered with the first pool tracked, drains whatever is left when
** the program calls exit() without closing its state (os.exit(code)).
**
** A drain marks its pools first, so two drains (a runner's on a signal,
** the state's at close) never work on one pool.  All its waits share one
** deadline, so all pools drain together: it waits, the pools still open,
** for a moment when all of them are idle (an op may hand work to another
** pool, which must still take it), then closes them all and drains each
** in the time left.  A pool that did not drain in time first puts its
** queued named ops back in its overflow store, if it has one
** (tt__pool_spill_queued: counted as spilled, nothing lost), then
** abandons what is left (tt_pool_abandon: closures and running ops;
** counted, an event, a log record per op); the drain waits for the
** store's commits of those spills (each pool's spill_timeout at most),
** and takes the pools out of the list.
** While it runs they stay listed, so that tt_exit_stats shows the drain.
**
** Lock: 'X_mu' guards the list and is a leaf: pools are closed, drained
** and released after it is released.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct tracked {
  struct tracked *next;    /* in 'list' */
  struct tracked *dnext;   /* on a drain's own list */
  tt_pool *pool;           /* one reference */
  const void *owner;
  bool draining;           /* a drain has it; under X_mu */
  bool left_over;          /* it did not drain in time; the drain's */
  uint64_t spilled0;       /* its 'spilled' count before the drain spilled */
} tracked;

static pthread_mutex_t X_mu = PTHREAD_MUTEX_INITIALIZER;
static tracked *list;      /* under X_mu, newest first */

static void at_exit(void) { tt_exit_drain(NULL, true, -1, NULL); }

static void register_once(void) {
  /* Without the handler an os.exit(code) would lose running ops silently:
  ** failing to register it is worth a line. */
  if (atexit(at_exit) != 0)
    tt_log(TT_LOG_WARN, "cannot drain pools at exit", NULL, 0);
}

int tt_exit_track(tt_pool *p, const void *owner) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  tracked *t;
  if (p == NULL) return TT_EINVAL;
  TT_CHECK(pthread_once(&once, register_once));
  t = malloc(sizeof *t);
  if (t == NULL) return TT_ENOMEM;
  t->pool = tt_ref(p);
  t->owner = owner;
  t->draining = false;
  t->dnext = NULL;
  tt__lock(&X_mu);
  t->next = list;
  list = t;
  tt__unlock(&X_mu);
  return TT_OK;
}

void tt_exit_untrack(const tt_pool *p) {
  tracked **pt, *t = NULL;
  tt__lock(&X_mu);
  for (pt = &list; *pt != NULL; pt = &(*pt)->next) {
    /* A drain that has it releases it. */
    if ((*pt)->pool == p && !(*pt)->draining) {
      t = *pt;
      *pt = t->next;
      break;
    }
  }
  tt__unlock(&X_mu);
  if (t == NULL) return;
  tt_unref(t->pool);
  free(t);
}

/* take marks the tracked pools of 'owner' (all when 'all') that no other
** drain has, and returns them as a list of the caller's. */
static tracked *take(const void *owner, bool all) {
  tracked *t, *mine = NULL;
  tt__lock(&X_mu);
  for (t = list; t != NULL; t = t->next) {
    if (t->draining || !(all || t->owner == owner)) continue;
    t->draining = true;
    t->dnext = mine;
    mine = t;
  }
  tt__unlock(&X_mu);
  return mine;
}

/* forget takes a drained entry out of the list and frees it. */
static void forget(tracked *t) {
  tracked **pt;
  tt__lock(&X_mu);
  for (pt = &list; *pt != NULL; pt = &(*pt)->next) {
    if (*pt == t) {
      *pt = t->next;
      break;
    }
  }
  tt__unlock(&X_mu);
  tt_unref(t->pool);
  free(t);
}

/* all_idle waits, until 'until', for a moment when every pool of 'mine'
** was found idle in one pass (an op of one pool may submit to another,
** so a pool may be busy again after its wait); false when time ran out
** or a wait is refused (the caller is one of the pool's own ops). */
static bool all_idle(tracked *mine, double until) {
  tracked *t;
  for (;;) {
    bool idle = true;
    for (t = mine; t != NULL; t = t->dnext) {
      tt_pool_stats s;
      double left;
      tt_pool_stats_get(t->pool, &s);
      if (s.queued == 0 && s.inflight == 0) continue;
      idle = false;
      left = until - tt_now();
      if (left <= 0 || tt_pool_wait_idle(t->pool, NULL, left) != TT_OK)
        return false;
    }
    if (idle) return true;
  }
}

/* spill_and_abandon gives up on what pool 't' still holds: its queued
** named ops go back to its overflow store, the rest is abandoned. */
static void spill_and_abandon(tracked *t, tt_exit_report *r) {
  tt_pool_stats s;
  tt_pool_stats_get(t->pool, &s);
  t->spilled0 = s.spilled;
  (void)tt__pool_spill_queued(t->pool);
  r->abandoned += tt_pool_abandon(t->pool);
}

/* spills_done waits for the store's answers to what pool 't' spilled at
** exit, counts what went to the store and says so in one log record. */
static void spills_done(tracked *t, tt_exit_report *r) {
  tt_pool_stats s;
  size_t n;
  (void)tt__pool_wait_spills(t->pool);
  tt_pool_stats_get(t->pool, &s);
  n = (size_t)(s.spilled - t->spilled0);
  r->spilled += n;
  if (n > 0) {
    tt_store *st = tt_pool_overflow(t->pool);
    tt_field f[] = {TT_FSTR("pool", tt_pool_name(t->pool)),
                    TT_FINT("ops", n),
                    TT_FSTR("store", st != NULL ? tt_store_url(st) : "")};
    tt_log(TT_LOG_INFO, "queued ops put back in the store at exit", f, 3);
  }
}

void tt_exit_drain(const void *owner, bool all, double timeout,
                   tt_exit_report *rep) {
  tracked *mine = take(owner, all), *t, *done = NULL;
  double t0 = tt_now(), until;
  tt_exit_report r;
  memset(&r, 0, sizeof r);
  if (timeout < 0) {
    timeout = 0;
    for (t = mine; t != NULL; t = t->dnext)
      if (tt_pool_exit_timeout(t->pool) > timeout)
        timeout = tt_pool_exit_timeout(t->pool);
  }
  until = t0 + timeout;
  /* First the pools stay open, so that work an op hands to another pool
  ** still gets in; then they close together, and each drains what it
  ** holds in the time left. */
  all_idle(mine, until);
  for (t = mine; t != NULL; t = t->dnext) tt_pool_close(t->pool);
  for (t = mine; t != NULL; t = t->dnext) {
    double left = until - tt_now();
    /* A pool that did not drain in time gives up what it holds: its
    ** queued named ops go back to its store, if it has one, and the rest
    ** is abandoned. */
    t->left_over = tt_pool_drain(t->pool, NULL, left > 0 ? left : 0) !=
                   TT_OK;
    if (t->left_over) spill_and_abandon(t, &r);
  }
  /* The spills of every pool are under way together; their commits are
  ** waited for before the process may end. */
  while (mine != NULL) {
    t = mine;
    mine = t->dnext;
    if (t->left_over) spills_done(t, &r);
    t->dnext = done;
    done = t;
  }
  while (done != NULL) {
    t = done;
    done = t->dnext;
    tt__pool_end_threads(t->pool);
    r.pools++;
    forget(t);
  }
  r.seconds = tt_now() - t0;
  if (rep != NULL) *rep = r;
}

size_t tt_exit_stats(const void *owner, bool all, tt_pool_stats *sum) {
  tt_pool **ps = NULL;
  size_t n = 0, i, cap = 0;
  tracked *t;
  tt_pool_stats s;
  *sum = (tt_pool_stats){0};
  /* References are taken under the lock, the stats read after it. */
  tt__lock(&X_mu);
  for (t = list; t != NULL; t = t->next)
    if (all || t->owner == owner) cap++;
  if (cap > 0) ps = malloc(cap * sizeof *ps);
  if (ps != NULL)
    for (t = list; t != NULL; t = t->next)
      if (all || t->owner == owner) ps[n++] = tt_ref(t->pool);
  tt__unlock(&X_mu);
  for (i = 0; i < n; i++) {
    tt_pool_stats_get(ps[i], &s);
    sum->submitted += s.submitted;
    sum->completed += s.completed;
    sum->failed += s.failed;
    sum->retried += s.retried;
    sum->stopped += s.stopped;
    sum->dead += s.dead;
    sum->rejected += s.rejected;
    sum->queued += s.queued;
    sum->inflight += s.inflight;
    sum->spilled += s.spilled;
    sum->abandoned += s.abandoned;
    sum->dead_held += s.dead_held;
    sum->dead_dropped += s.dead_dropped;
    tt_unref(ps[i]);
  }
  free(ps);
  return n;
}

size_t tt_exit_pools(tt_pool **out, size_t max) {
  size_t n = 0;
  tracked *t;
  tt__lock(&X_mu);
  for (t = list; t != NULL; t = t->next, n++)
    if (n < max && out != NULL) out[n] = tt_ref(t->pool);
  tt__unlock(&X_mu);
  return n;
}
