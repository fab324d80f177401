/*
** group.c -- errgroups, after golang.org/x/sync/errgroup.
**
** DESIGN.  A group counts its started and unfinished tasks in 'active'
** and keeps the first error.  Every task runs on the default executor
** (tt_exec) with the group's context 'gctx', a child of the parent made
** by tt_with_cancel.  The first task that fails records its error and
** cancels 'gctx' with that error as the cause (Go's errOnce plus
** cancel(err)); a wait that finds no error cancels 'gctx' with no cause,
** so that its error and cause are 'canceled' (Go's Wait calls
** cancel(g.err) with a nil error).
**
** The limit is Go's SetLimit semaphore as a counter and a queue of
** waiters: tt_group_go waits in 'slotq' while 'active' is at the limit.
** As with SetLimit, a negative limit means none and a limit of 0 admits
** no task; there tt_group_go refuses (TT_EINVAL) instead of waiting, as
** Go's Go would, for a slot that can never come.
**
** A task that was admitted but could not be started (no thread, no
** memory) fails the group as if it had run and failed: Go's Go returns
** nothing, so nobody checks a start, and the failure must reach wait.
**
** Waiting is built on latches so that a select can wait for a group too.
** A 'batch' is one run of tasks between two moments at which 'active' is
** zero: the first tt_group_go that finds the group idle opens a new
** batch, and the task that brings 'active' back to zero closes it and
** sets its latch.  tt_group_wait waits for the batch that is current when
** it is called; tasks started by other tasks while that batch is open
** join it, so a wait covers them too, as Go's WaitGroup does.
**
** A waiter does not sleep while tasks of its batch wait in the
** executor's queue: tt_group_wait takes them back, one by one, and runs
** them itself, as Go's scheduler runs goroutines on the thread that
** blocks in Wait (unless the group was told not to, tt_group_set_inline:
** the Lua binding's tasks need a Lua state of their own).  A task is on
** the group's 'queued' list from its start until an executor thread or a
** waiter takes it: whoever claims it first (an atomic flag) runs it, and
** it is freed by the last of its two holders, the executor's queue item
** and the list.
**
** Locks: 'mu' is a leaf.  Latches are set, contexts canceled and work
** handed to the executor only after 'mu' is released.
*/
#include <stdio.h>

#include "task.h"

/* {====================================================================
** Batches
** ===================================================================== */

/* A gbatch is the waitable of one batch.  Its own reference count lets a
** waiter keep the latch alive after the group has moved on to the next
** batch. */
typedef struct gbatch {
  tt_obj hdr;
  tt_latch latch;          /* set once the batch's last task has ended */
} gbatch;

static void batch_free(tt_obj *o) {
  gbatch *b = (gbatch *)o;
  tt__latch_destroy(&b->latch);
  free(b);
}

static const tt_type batch_type = {"tether.GroupBatch", batch_free, NULL,
                                     NULL};

static gbatch *batch_new(void) {
  gbatch *b = calloc(1, sizeof *b);
  if (b == NULL) return NULL;
  tt_obj_init(&b->hdr, &batch_type);
  tt__latch_init(&b->latch);
  return b;
}

/* }==================================================================== */


/* {====================================================================
** Groups
** ===================================================================== */

struct tt_group {
  tt_obj hdr;
  tt_ctx *gctx;            /* immutable; the group's reference */
  int limit;               /* immutable; < 0: no limit */
  pthread_mutex_t mu;      /* protects the fields below */
  tt_list slotq;           /* of slotw: go calls waiting at the limit */
  int active;              /* tasks started and not yet ended */
  tt_obj *err;             /* the first error; set once, then kept */
  bool failed;             /* set with 'err' (which is never NULL then) */
  gbatch *open;            /* the open batch while 'active' > 0, else NULL */
  gbatch *last;            /* the latest closed batch (set at creation) */
  tt_list queued;          /* gtasks not taken yet, by their 'glink' */
  _Atomic bool no_inline;  /* waiters never run tasks (set_inline) */
};

/* A slotw is a tt_group_go waiting for a slot.  It sleeps on a latch of
** its own, not on a condition variable, so that its wait is a tt_select
** and ends on an interrupt (Ctrl-C in the main state) as every wait does.
** A task that ends takes the first waiter off 'slotq' and sets its
** latch, under the group's lock. */
typedef struct slotw {
  tt_list link;            /* in slotq while it waits; group mu */
  tt_latch latch;          /* set when a slot is free for it */
} slotw;

/* wake_slot wakes the first waiter for a slot (group mu held; the
** latch's lock nests inside it). */
static void wake_slot(tt_group *g) {
  tt_list *l = tt_list_shift(&g->slotq);  /* unlinks it: woken */
  if (l != NULL) tt__latch_set(&tt_container_of(l, slotw, link)->latch);
}

/* The error recorded when even a fresh error object cannot be made, so
** that a failure is never lost for want of memory. */
static tt_error nomem_error = {{-1, &tt_error_type}, TT_ENOMEM,
                               "errgroup: not enough memory", NULL, NULL,
                               NULL, 0};

static void group_free(tt_obj *o) {
  tt_group *g = (tt_group *)o;
  /* Tasks hold the group, so none is running; 'open' is NULL. */
  tt_unref(g->last);
  tt_unref(g->err);
  tt_unref(g->gctx);
  TT_CHECK(pthread_mutex_destroy(&g->mu));
  free(g);
}

static int group_describe(tt_obj *o, char *buf, size_t n) {
  tt_group *g = (tt_group *)o;
  int active;
  bool failed;
  tt__lock(&g->mu);
  active = g->active;
  failed = g->failed;
  tt__unlock(&g->mu);
  return snprintf(buf, n, "tether.Group (%d active%s)", active,
                  failed ? ", failed" : "");
}

/* A group holds its context and, after a failure, its first error. */
static void group_traverse(tt_obj *o, tt_visit visit, void *ud) {
  tt_group *g = (tt_group *)o;
  tt_obj *err;
  tt__lock(&g->mu);
  err = g->err;
  tt__unlock(&g->mu);
  visit((tt_obj *)g->gctx, ud);
  visit(err, ud);
}

const tt_type tt_group_type = {"tether.Group", group_free, group_describe,
                               group_traverse};

tt_group *tt_group_new(tt_ctx *parent, int limit, tt_ctx **gctx) {
  tt_group *g;
  if (gctx != NULL) *gctx = NULL;
  if (parent == NULL) return NULL;
  g = calloc(1, sizeof *g);
  if (g == NULL) return NULL;
  g->last = batch_new();
  g->gctx = tt_with_cancel(parent);
  if (g->last == NULL || g->gctx == NULL) {
    tt_unref(g->last);
    tt_unref(g->gctx);
    free(g);
    return NULL;
  }
  /* No task has run yet: waiting now returns at once. */
  tt__latch_set(&g->last->latch);
  tt_obj_init(&g->hdr, &tt_group_type);
  g->limit = limit < 0 ? -1 : limit;
  tt_list_init(&g->queued);
  atomic_init(&g->no_inline, false);
  TT_CHECK(pthread_mutex_init(&g->mu, NULL));
  tt_list_init(&g->slotq);
  if (gctx != NULL) *gctx = tt_ref(g->gctx);
  return g;
}

/* end_one ends one task (or undoes a start that the executor refused):
** it frees a slot and closes the batch if it was the last task. */
static void end_one(tt_group *g) {
  gbatch *closed = NULL;
  tt__lock(&g->mu);
  g->active--;
  if (g->limit >= 0 && g->active < g->limit) wake_slot(g);
  if (g->active == 0) {
    closed = g->open;
    g->open = NULL;
    tt_unref(g->last);
    g->last = tt_ref(closed);
  }
  tt__unlock(&g->mu);
  if (closed != NULL) {
    tt__latch_set(&closed->latch);
    tt_unref(closed);
  }
}

/* record_error keeps 'err' (a reference it takes over) if it is the
** group's first error and then cancels 'gctx' with it as the cause. */
static void record_error(tt_group *g, tt_obj *err) {
  bool first = false;
  tt__lock(&g->mu);
  if (!g->failed) {
    g->failed = true;
    g->err = err;
    first = true;
  }
  tt__unlock(&g->mu);
  if (first)
    tt_cancel(g->gctx, err);
  else
    tt_unref(err);
}

/* A gtask is one task of a group, owned by the executor's queue item and
** then by the thread that runs it (an executor thread or a waiter). */
typedef struct gtask {
  tt__work w;              /* in the executor's queue */
  tt_list glink;           /* in the group's 'queued' until taken */
  _Atomic int refs;        /* the queue item's and the list's */
  _Atomic bool claimed;    /* taken to run, by a thread of either */
  tt_group *g;             /* a reference */
  tt_fn fn;
  void *arg;
  tt_drop drop;
} gtask;

/* gtask_unref drops one of the task's two holders; the last frees it and
** lets go of the group (which a holder that did not run the task may
** still lock). */
static void gtask_unref(gtask *t) {
  if (atomic_fetch_sub(&t->refs, 1) == 1) {
    tt_group *g = t->g;
    free(t);
    tt_unref(g);
  }
}

/* gtask_run runs a task that the calling thread claimed. */
static void gtask_run(gtask *t) {
  tt_group *g = t->g;
  tt_obj *out = NULL;
  int rc = t->fn(g->gctx, t->arg, &out);
  if (t->drop != NULL) t->drop(t->arg);
  if (rc == TT_OK) {
    tt_unref(out);  /* task results are discarded */
  } else {
    if (out == NULL) {
      int code = rc > 0 && rc < TT_NERRORS ? rc : TT_EFAILED;
      out = (tt_obj *)tt_error_for(code);
      if (out == NULL) out = &nomem_error.hdr;
    }
    /* The error is recorded (and gctx canceled) before the task counts
    ** as ended, so a wait that returns sees both. */
    record_error(g, out);
  }
  end_one(g);
}

/* gtask_exec runs a task on the executor thread that took its queue
** item, unless a waiter claimed it first. */
static void gtask_exec(tt__work *w) {
  gtask *t = tt_container_of(w, gtask, w);
  tt_group *g = t->g;
  bool listed;
  tt__lock(&g->mu);
  listed = tt_list_linked(&t->glink);
  if (listed) tt_list_remove(&t->glink);
  tt__unlock(&g->mu);
  if (listed) gtask_unref(t);  /* the list's; the queue item's is held */
  if (!atomic_exchange(&t->claimed, true)) gtask_run(t);
  gtask_unref(t);
}

/* start_failed records that an admitted task could not start: it is the
** group's error if it is the first, and cancels gctx. */
static void start_failed(tt_group *g, int rc) {
  tt_obj *err = (tt_obj *)tt_error_new(rc, NULL, NULL);
  record_error(g, err != NULL ? err : &nomem_error.hdr);
}

/* start claims a slot (waiting for one unless 'try') and hands the task
** to the executor.  It returns TT_OK, TT_EQUEUE_FULL (try at the limit)
** or an error, in which case the caller keeps 'arg'; a start that fails
** for want of a thread or of memory is also the group's error. */
static int start(tt_group *g, tt_fn fn, void *arg, tt_drop drop, bool try) {
  gtask *t;
  int rc;
  if (g == NULL || fn == NULL) return TT_EINVAL;
  /* A group that admits no task would make this call wait forever. */
  if (g->limit == 0) return try ? TT_EQUEUE_FULL : TT_EINVAL;
  t = malloc(sizeof *t);
  if (t == NULL) {
    start_failed(g, TT_ENOMEM);
    return TT_ENOMEM;
  }
  tt__lock(&g->mu);
  while (g->limit > 0 && g->active >= g->limit) {
    slotw w;
    bool set;
    if (try) {
      tt__unlock(&g->mu);
      free(t);
      return TT_EQUEUE_FULL;
    }
    tt__latch_init(&w.latch);
    tt_list_push(&g->slotq, &w.link);
    tt__unlock(&g->mu);
    set = tt_latch_wait(&w.latch, -1);
    tt__lock(&g->mu);
    if (tt_list_linked(&w.link)) tt_list_remove(&w.link);
    tt__latch_destroy(&w.latch);
    if (!set) {
      /* Interrupted.  A slot it may have been woken for goes to the
      ** next waiter. */
      if (g->active < g->limit) wake_slot(g);
      tt__unlock(&g->mu);
      free(t);
      return TT_EINTR;
    }
  }
  if (g->active == 0) {
    g->open = batch_new();
    if (g->open == NULL) {
      tt__unlock(&g->mu);
      free(t);
      start_failed(g, TT_ENOMEM);
      return TT_ENOMEM;
    }
  }
  g->active++;
  t->g = tt_ref(g);
  t->fn = fn;
  t->arg = arg;
  t->drop = drop;
  tt_list_init(&t->w.link);
  t->w.run = gtask_exec;
  tt_list_init(&t->glink);
  atomic_init(&t->refs, 2);
  atomic_init(&t->claimed, false);
  tt_list_push(&g->queued, &t->glink);
  tt__unlock(&g->mu);
  rc = tt__exec_push(&t->w);
  if (rc != TT_OK) {
    tt__lock(&g->mu);
    tt_list_remove(&t->glink);
    tt__unlock(&g->mu);
    free(t);
    /* Recorded before the task counts as ended, as a task's own failure
    ** is, so that a wait that returns sees it. */
    start_failed(g, rc);
    end_one(g);
    tt_unref(g);
  }
  return rc;
}

int tt_group_go(tt_group *g, tt_fn fn, void *arg, tt_drop drop) {
  return start(g, fn, arg, drop, false);
}

bool tt_group_try_go(tt_group *g, tt_fn fn, void *arg, tt_drop drop) {
  return start(g, fn, arg, drop, true) == TT_OK;
}

/* current returns a reference to the batch a wait would wait for. */
static gbatch *current(tt_group *g) {
  gbatch *b;
  tt__lock(&g->mu);
  b = tt_ref(g->open != NULL ? g->open : g->last);
  tt__unlock(&g->mu);
  return b;
}

/* run_queued runs, on the calling thread, the tasks of the group that no
** executor thread has taken yet, until batch 'b' is over or none is
** left. */
static void run_queued(tt_group *g, gbatch *b) {
  if (atomic_load(&g->no_inline)) return;
  while (!tt_latch_is_set(&b->latch)) {
    gtask *t = NULL;
    tt__lock(&g->mu);
    if (!tt_list_empty(&g->queued))
      t = tt_container_of(tt_list_shift(&g->queued), gtask, glink);
    tt__unlock(&g->mu);
    if (t == NULL) return;
    /* The list's reference is ours now.  An executor thread that claimed
    ** it first runs it; one that took its queue item after our claim
    ** only drops it. */
    if (!atomic_exchange(&t->claimed, true)) {
      if (tt__exec_unqueue(&t->w)) gtask_unref(t);  /* never to run */
      gtask_run(t);
    }
    gtask_unref(t);
  }
}

void tt_group_set_inline(tt_group *g, bool on) {
  atomic_store(&g->no_inline, !on);
}

int tt_group_wait(tt_group *g, tt_obj **err) {
  gbatch *b;
  tt_obj *first;
  if (err != NULL) *err = NULL;
  if (g == NULL) return TT_EINVAL;
  b = current(g);
  run_queued(g, b);
  if (!tt_latch_wait(&b->latch, -1)) {
    /* Interrupted: the tasks run on, and gctx is left as it is. */
    tt_unref(b);
    return TT_EINTR;
  }
  tt_unref(b);
  tt__lock(&g->mu);
  first = tt_ref(g->err);
  tt__unlock(&g->mu);
  /* After a failure gctx is already canceled with the error as its
  ** cause, and this does nothing. */
  tt_cancel(g->gctx, first);
  if (first == NULL) return TT_OK;
  if (err != NULL)
    *err = first;
  else
    tt_unref(first);
  return TT_EFAILED;
}

tt_latch *tt_group_latch(tt_group *g, tt_obj **hold) {
  gbatch *b = current(g);
  *hold = &b->hdr;
  return &b->latch;
}

int tt_group_active(tt_group *g) {
  int n;
  tt__lock(&g->mu);
  n = g->active;
  tt__unlock(&g->mu);
  return n;
}

/* }==================================================================== */
