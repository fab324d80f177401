/*
** exec.c -- the default elastic executor and task handles.
**
** DESIGN.  One process-wide FIFO queue of work items, guarded by 'E.mu',
** served by engine threads that are made on demand: a push that finds
** more queued items than idle threads starts one more thread, up to a cap
** (64).  A thread that finds nothing to do waits on 'E.cv' for a while
** (30 s) and then ends, after running the embedder's exit hook (the Lua
** binding closes the thread's lua_State there).  Nothing is ever dropped:
** at the cap, work waits in the queue for the next free thread.
**
** Threads are joinable.  One that ends puts its record on 'E.zombies',
** and whoever next pushes work (or tt__exec_shutdown) joins it, so that a
** shutdown really waits until every executor thread is gone.
**
** 'E.mu' is a leaf lock: nothing else is locked while it is held, and no
** callback runs under it.  tt_exec may therefore be called from anywhere
** (context cancellation calls it to start after_funcs), except that it
** must not be called with a lock held that a task takes: the task could
** run before tt_exec returns.
**
** Handles are defined in task.h: the executor's 'gotask' and the pool's
** 'op' both begin with one.
*/
#include <sched.h>
#include <stdio.h>
#include <string.h>

#include "task.h"

#define EXEC_MAX_THREADS 64
#define EXEC_IDLE_SECONDS 30.0


/* {====================================================================
** Handles
** ===================================================================== */

static void handle_free(tt_obj *o) {
  tt_handle *h = (tt_handle *)o;
  /* An argument still held here belongs to work that never ran and was
  ** never stopped (a record discarded by its owner): drop it all the
  ** same, so that it is dropped exactly once in every case. */
  tt__handle_drop_arg(h);
  if (h->vt != NULL && h->vt->fini != NULL) h->vt->fini(h);
  tt_unref(h->result);
  tt__latch_destroy(&h->done);
  if (h->name_owned) free(h->name);
  if (h->vt != NULL && h->vt->release != NULL)
    h->vt->release(h);
  else
    free(h);
}

static const char *const state_names[] = {
  "queued", "running", "done", "failed", "stopped"
};

static int handle_describe(tt_obj *o, char *buf, size_t n) {
  tt_handle *h = (tt_handle *)o;
  int s = atomic_load(&h->state);
  return snprintf(buf, n, "tether.Handle '%s' (%s)", h->name,
                  state_names[s]);
}

/* A handle holds its result once resolved (the state's acquire load
** pairs with the release store that publishes it). */
static void handle_traverse(tt_obj *o, tt_visit visit, void *ud) {
  tt_handle *h = (tt_handle *)o;
  if (atomic_load_explicit(&h->state, memory_order_acquire) >= TT_H_DONE)
    visit(h->result, ud);
}

const tt_type tt_handle_type = {"tether.Handle", handle_free,
                                handle_describe, handle_traverse};

bool tt__handle_init(tt_handle *h, const tt__task_vt *vt, const char *name,
                     const char *defname, char *buf, size_t bufsize,
                     tt_fn fn, void *arg, tt_drop drop) {
  const char *n = name != NULL ? name : defname;
  size_t len = strlen(n);
  bool owned = buf == NULL || len >= bufsize;
  char *copy = owned ? tt__strdup(n) : memcpy(buf, n, len + 1);
  if (copy == NULL) return false;
  tt_obj_init(&h->hdr, &tt_handle_type);
  h->name_owned = owned;
  h->vt = vt;
  atomic_init(&h->state, TT_H_QUEUED);
  h->result = NULL;
  tt__latch_init(&h->done);
  h->name = copy;
  h->fn = fn;
  h->arg = arg;
  h->drop = drop;
  return true;
}

void tt__handle_set_state(tt_handle *h, int state) {
  atomic_store_explicit(&h->state, state, memory_order_release);
}

void tt__handle_resolve(tt_handle *h, int state, tt_obj *result) {
  int s = atomic_load_explicit(&h->state, memory_order_relaxed);
  if (s >= TT_H_DONE) tt__fatal("tt__handle_resolve (resolved twice)", 0);
  h->result = result;
  /* The release store publishes 'result' to readers of the state. */
  atomic_store_explicit(&h->state, state, memory_order_release);
  tt__latch_set(&h->done);
}

void tt__handle_drop_arg(tt_handle *h) {
  tt_drop drop = h->drop;
  void *arg = h->arg;
  h->drop = NULL;
  h->arg = NULL;
  if (drop != NULL) drop(arg);
}

tt_obj *tt__task_error(int rc, tt_obj *out) {
  if (out != NULL) return out;
  if (rc <= 0 || rc >= TT_NERRORS) rc = TT_EFAILED;
  return (tt_obj *)tt_error_for(rc);
}

int tt__error_code(tt_obj *err) {
  if (err != NULL && err->type == &tt_error_type)
    return ((tt_error *)err)->code;
  return TT_EFAILED;
}

int tt_handle_state(tt_handle *h) {
  return atomic_load_explicit(&h->state, memory_order_acquire);
}

int tt_handle_result(tt_handle *h, tt_obj **result) {
  int s = atomic_load_explicit(&h->state, memory_order_acquire);
  if (result != NULL) *result = s >= TT_H_DONE ? tt_ref(h->result) : NULL;
  return s;
}

tt_latch *tt_handle_latch(tt_handle *h) { return &h->done; }

bool tt_handle_stop(tt_handle *h) {
  if (h == NULL || h->vt == NULL || h->vt->stop == NULL) return false;
  if (atomic_load(&h->state) >= TT_H_DONE) return false;
  return h->vt->stop(h);
}

const char *tt_handle_name(tt_handle *h) { return h->name; }

/* }==================================================================== */


/* {====================================================================
** The executor
** ===================================================================== */

typedef tt__work work;

/* The record of one executor thread. */
typedef struct xthread {
  tt_list link;                 /* in E.zombies once ended, under E.mu */
  pthread_t t;                  /* written under E.mu at creation */
} xthread;

static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;            /* idle threads wait here for work */
  pthread_cond_t gone;          /* signaled when a thread has ended */
  tt_list queue;                /* of work, FIFO; under 'mu' */
  _Atomic size_t qlen;          /* items in 'queue'; written under 'mu',
                                ** read without it by spinning threads */
  int threads;                  /* live threads, not counting ending ones */
  int idle;                     /* threads waiting on 'cv' */
  int spinning;                 /* threads spinning for work */
  int ending;                   /* threads running the exit hook */
  int stopping;                 /* > 0 while tt__exec_shutdown waits */
  tt_list zombies;              /* xthreads that ended, to be joined */
  int max_threads;
  double idle_seconds;
} E = {.mu = PTHREAD_MUTEX_INITIALIZER};

static pthread_once_t exec_once = PTHREAD_ONCE_INIT;
static _Thread_local bool on_executor;
static void (*_Atomic exit_hook)(void);

static void exec_init(void) {
  tt__cond_init(&E.cv);
  tt__cond_init(&E.gone);
  tt_list_init(&E.queue);
  tt_list_init(&E.zombies);
  E.max_threads = EXEC_MAX_THREADS;
  E.idle_seconds = EXEC_IDLE_SECONDS;
}

static void exec_ready(void) { TT_CHECK(pthread_once(&exec_once, exec_init)); }

void tt_set_thread_exit_hook(void (*on_exit)(void)) {
  atomic_store(&exit_hook, on_exit);
}

void tt__thread_exit_hook(void) {
  void (*f)(void) = atomic_load(&exit_hook);
  if (f != NULL) f();
}

/* spin_for_work watches the queue without the lock for a moment (a few
** pauses, then a yield of the CPU at each look: as pool workers spin,
** pool.c), so that work pushed right after the last item ended finds
** this thread awake; true if something came. */
#define SPIN_SECONDS 50e-6
#define SPIN_PAUSES 64
static bool spin_for_work(void) {
  double until;
  unsigned i;
  bool found = false;
  if (!tt__spin_enter()) return false;
  until = tt_now() + SPIN_SECONDS;
  for (i = 1;; i++) {
    if (atomic_load_explicit(&E.qlen, memory_order_relaxed) > 0) {
      found = true;
      break;
    }
    if (i < SPIN_PAUSES)
      tt__cpu_relax();
    else
      sched_yield();
    if ((i & 7) == 0 && tt_now() >= until) break;
  }
  tt__spin_exit();
  return found;
}

static void *exec_main(void *arg) {
  xthread *self = arg;
  bool spun = false;            /* spun in vain since the last item */
  on_executor = true;
  tt__lock(&E.mu);
  for (;;) {
    tt_list *l = tt_list_shift(&E.queue);
    bool woke;
    if (l != NULL) {
      work *w = tt_container_of(l, work, link);
      E.qlen--;
      tt__unlock(&E.mu);
      w->run(w);
      tt__lock(&E.mu);
      spun = false;
      continue;
    }
    if (E.stopping > 0) break;
    if (!spun) {
      /* A push finds a spinning thread awake and signals nobody. */
      E.spinning++;
      tt__unlock(&E.mu);
      spun = !spin_for_work();
      tt__lock(&E.mu);
      E.spinning--;
      continue;
    }
    spun = false;
    E.idle++;
    woke = tt__timedwait(&E.cv, &E.mu, tt_now() + E.idle_seconds);
    E.idle--;
    /* Idle for the whole period: end, unless work came in meanwhile. */
    if (!woke && tt_list_empty(&E.queue)) break;
  }
  E.threads--;
  E.ending++;
  tt__unlock(&E.mu);
  tt__thread_exit_hook();
  tt__lock(&E.mu);
  E.ending--;
  tt_list_push(&E.zombies, &self->link);
  TT_CHECK(pthread_cond_broadcast(&E.gone));
  tt__unlock(&E.mu);
  return NULL;
}

/* exec_reap joins the threads that have ended. */
static void exec_reap(void) {
  tt_list done;
  tt_list *l;
  tt_list_init(&done);
  tt__lock(&E.mu);
  while ((l = tt_list_shift(&E.zombies)) != NULL) tt_list_push(&done, l);
  tt__unlock(&E.mu);
  while ((l = tt_list_shift(&done)) != NULL) {
    xthread *x = tt_container_of(l, xthread, link);
    TT_CHECK(pthread_join(x->t, NULL));
    free(x);
  }
}

/* exec_spawn starts one more thread; called with E.mu held, so that the
** record's 't' is written before the thread can end and be joined. */
static int exec_spawn(void) {
  xthread *x = malloc(sizeof *x);
  if (x == NULL) return TT_ENOMEM;
  tt_list_init(&x->link);
  if (tt__thread_start(&x->t, exec_main, x, false) != 0) {
    free(x);
    return TT_ETHREAD;
  }
  E.threads++;
  return TT_OK;
}

/* exec_push queues 'w', starting a thread when the idle ones cannot take
** every queued item.  Failing to start one is an error only when there is
** no thread at all to take the work later. */
static int exec_push(work *w) {
  int rc = TT_OK;
  bool reap, wake = false;
  exec_ready();
  tt__lock(&E.mu);
  if (E.qlen + 1 > (size_t)(E.idle + E.spinning) &&
      E.threads < E.max_threads) {
    rc = exec_spawn();
    if (rc != TT_OK && E.threads > 0) rc = TT_OK;
  }
  if (rc == TT_OK) {
    tt_list_push(&E.queue, &w->link);
    E.qlen++;
    /* A spinning thread takes it without a signal. */
    wake = E.idle > 0 && E.qlen > (size_t)E.spinning;
  }
  reap = !tt_list_empty(&E.zombies);
  tt__unlock(&E.mu);
  /* After the unlock, so that the woken thread does not find E.mu held;
  ** a thread that took the item meanwhile makes it a spurious wake-up. */
  if (wake) TT_CHECK(pthread_cond_signal(&E.cv));
  if (reap) exec_reap();
  return rc;
}

int tt__exec_push(tt__work *w) { return exec_push(w); }

bool tt__exec_unqueue(tt__work *w) {
  bool queued;
  tt__lock(&E.mu);
  queued = tt_list_linked(&w->link);
  if (queued) {
    tt_list_remove(&w->link);
    E.qlen--;
  }
  tt__unlock(&E.mu);
  return queued;
}

/* A tt_exec item: the function and its argument. */
typedef struct xfn {
  work w;
  void (*fn)(void *arg);
  void *arg;
} xfn;

static void xfn_run(work *w) {
  xfn *x = tt_container_of(w, xfn, w);
  void (*fn)(void *) = x->fn;
  void *arg = x->arg;
  free(x);
  fn(arg);
}

int tt_exec(void (*fn)(void *arg), void *arg) {
  xfn *x;
  int rc;
  if (fn == NULL) return TT_EINVAL;
  x = malloc(sizeof *x);
  if (x == NULL) return TT_ENOMEM;
  tt_list_init(&x->w.link);
  x->w.run = xfn_run;
  x->fn = fn;
  x->arg = arg;
  rc = exec_push(&x->w);
  if (rc != TT_OK) free(x);
  return rc;
}

void tt__exec_shutdown(void) {
  exec_ready();
  tt__lock(&E.mu);
  E.stopping++;
  TT_CHECK(pthread_cond_broadcast(&E.cv));
  /* Threads finish the queue before they end.  An executor thread cannot
  ** wait for itself: called from one, this only asks the others to go. */
  while (!on_executor && (E.threads > 0 || E.ending > 0))
    TT_CHECK(pthread_cond_wait(&E.gone, &E.mu));
  E.stopping--;
  tt__unlock(&E.mu);
  exec_reap();
}

void tt__exec_tune(int max_threads, double idle_seconds) {
  exec_ready();
  tt__lock(&E.mu);
  if (max_threads > 0) E.max_threads = max_threads;
  if (idle_seconds >= 0) E.idle_seconds = idle_seconds;
  /* Idle threads wait again with the new period. */
  TT_CHECK(pthread_cond_broadcast(&E.cv));
  tt__unlock(&E.mu);
}

void tt__exec_threads(int *threads, int *idle) {
  exec_ready();
  tt__lock(&E.mu);
  if (threads != NULL) *threads = E.threads;
  if (idle != NULL) *idle = E.idle;
  tt__unlock(&E.mu);
}

/* }==================================================================== */


/* {====================================================================
** tt_go
** ===================================================================== */

/* A task of tt_go: a handle, its queue item and its context.  The queue
** (then the running thread) holds one reference to the handle, the caller
** another.  'ctx' is a reference held until the task has ended or was
** stopped. */
typedef struct gotask {
  tt_handle h;
  work w;
  tt_ctx *ctx;
} gotask;

/* go_release_ctx lets go of the task's context once it is done with it;
** the context is gone before the handle resolves, as the argument is. */
static void go_release_ctx(gotask *t) {
  tt_ctx *c = t->ctx;
  t->ctx = NULL;
  tt_unref(c);
}

static bool go_stop(tt_handle *h) {
  gotask *t = (gotask *)h;
  bool queued;
  tt__lock(&E.mu);
  queued = tt_list_linked(&t->w.link);
  if (queued) {
    tt_list_remove(&t->w.link);
    E.qlen--;
  }
  tt__unlock(&E.mu);
  if (!queued) return false;
  tt__handle_drop_arg(h);
  go_release_ctx(t);
  tt__handle_resolve(h, TT_H_STOPPED, NULL);
  tt_unref(h);
  return true;
}

static const tt__task_vt go_vt = {go_stop, NULL, NULL};

static void go_run(work *w) {
  gotask *t = tt_container_of(w, gotask, w);
  tt_obj *out = NULL;
  int rc;
  tt__handle_set_state(&t->h, TT_H_RUNNING);
  rc = t->h.fn(t->ctx, t->h.arg, &out);
  /* The argument goes before the handle resolves, so that a waiter sees
  ** the task entirely finished. */
  tt__handle_drop_arg(&t->h);
  go_release_ctx(t);
  if (rc == TT_OK)
    tt__handle_resolve(&t->h, TT_H_DONE, out);
  else
    tt__handle_resolve(&t->h, TT_H_FAILED, tt__task_error(rc, out));
  tt_unref(&t->h);
}

tt_handle *tt_go(tt_ctx *ctx, const char *name, tt_fn fn, void *arg,
                 tt_drop drop, int *err) {
  gotask *t;
  int rc;
  if (fn == NULL) {
    if (err != NULL) *err = TT_EINVAL;
    return NULL;
  }
  t = calloc(1, sizeof *t);
  if (t == NULL || !tt__handle_init(&t->h, &go_vt, name, "task", NULL, 0,
                                    fn, arg, drop)) {
    free(t);
    if (err != NULL) *err = TT_ENOMEM;
    return NULL;
  }
  tt_list_init(&t->w.link);
  t->w.run = go_run;
  t->ctx = tt_ref(ctx != NULL ? ctx : tt_background());
  tt_ref(&t->h);  /* the queue's reference */
  rc = exec_push(&t->w);
  if (rc != TT_OK) {
    /* Refused: the caller keeps its argument. */
    t->h.arg = NULL;
    t->h.drop = NULL;
    go_release_ctx(t);
    tt_unref(&t->h);
    tt_unref(&t->h);
    if (err != NULL) *err = rc;
    return NULL;
  }
  if (err != NULL) *err = TT_OK;
  return &t->h;
}

/* }==================================================================== */
