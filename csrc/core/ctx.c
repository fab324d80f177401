/*
** ctx.c -- contexts, after Go's context.go (1.21+).
**
** Every context holds its parent.  A cancelable context (made by
** tt_with_cancel or tt_with_deadline) owns a mutex, a done latch, an error
** and a cause, and lists its live cancelable descendants that registered
** with it.  That list is weak: a child does not stay alive because its
** parent lists it, and a child freed without being canceled unlinks
** itself, so forgetting to cancel leaks nothing.
**
** Value and without_cancel contexts own no lock: a value context reports
** the error of its nearest cancelable ancestor ('canc'), a without_cancel
** context has none.
**
** Locks: one context's 'mu' at a time.  Propagation unlinks the children
** under the parent's lock, then cancels them one by one after releasing
** it, through a work list threaded through 'cnext' (no recursion, no
** allocation), so a chain of any depth cancels in constant stack.
*/
#include <stdio.h>
#include <string.h>

#include "internal.h"

enum { K_BACKGROUND, K_TODO, K_CANCEL, K_DEADLINE, K_VALUE, K_WITHOUT };

struct tt_ctx {
  tt_obj hdr;
  int kind;
  tt_ctx *parent;        /* strong reference; NULL for the roots */
  tt_ctx *canc;          /* nearest cancelable ancestor or self, or NULL */
  double deadline;       /* < 0: none; inherited from the parent */

  /* K_VALUE: the key and value (immutable after creation). */
  tt_obj *kobj;
  char *kstr;
  size_t klen;
  tt_obj *val;

  /* K_CANCEL and K_DEADLINE. */
  pthread_mutex_t mu;    /* protects 'children' and 'cause' */
  _Atomic int err;       /* 0 until the first cancel; published last */
  tt_obj *cause;         /* set by the first cancel, before 'err' */
  tt_latch done;
  tt_list children;      /* registered descendants, via their 'sib' */
  tt_list sib;           /* link in 'reg' 's children */
  tt_ctx *reg;           /* parent->canc while registered there, else
                         ** NULL; 'reg' and 'sib' are guarded by the
                         ** mutex of parent->canc, which never changes */
  tt_list afs;           /* pending after_funcs, under af_mu */
  _Atomic bool had_afs;  /* an after_func was ever put on 'afs' (set
                         ** under 'mu' and af_mu); until then 'afs' is
                         ** empty and af_mu need not be taken for it */
  tt_ctx *cnext;         /* work list link, owned by one canceler */
  bool detached;         /* made by tt__detached: the parent's
                         ** cancellation and deadline do not reach it */

  /* K_DEADLINE. */
  tt_obj *dl_cause;      /* the cause reported when the deadline passes */
  tt_tentry timer;       /* holds a reference to the context while queued */
};

static tt_ctx background_ctx = {.hdr = {-1, &tt_ctx_type},
                                .kind = K_BACKGROUND, .deadline = -1.0};
static tt_ctx todo_ctx = {.hdr = {-1, &tt_ctx_type}, .kind = K_TODO,
                          .deadline = -1.0};

tt_ctx *tt_background(void) { return &background_ctx; }
tt_ctx *tt_todo(void) { return &todo_ctx; }

static bool cancelable(const tt_ctx *c) {
  return c->kind == K_CANCEL || c->kind == K_DEADLINE;
}

/* {====================================================================
** After funcs
** ===================================================================== */

enum { AF_PENDING, AF_STARTED, AF_STOPPED };

/* af_mu guards every after_func's 'ctx' and the 'afs' lists of all
** contexts.  It is one lock for the process because a stop may race with
** the free of its context: the after_func holds no reference to it (that
** would keep a never-canceled context alive as long as the registration),
** so only a lock that outlives both can decide who unlinks.  It is taken
** after a context's 'mu' when both are held. */
static pthread_mutex_t af_mu = PTHREAD_MUTEX_INITIALIZER;

struct tt_afterfunc {
  tt_obj hdr;
  tt_ctx *ctx;           /* weak: the context whose 'afs' holds 'link',
                         ** or NULL once off it; under af_mu */
  void (*fn)(void *);
  void *arg;
  void (*drop)(void *);
  _Atomic int state;
  bool now;              /* runs on the thread that cancels (fixed) */
  tt_list link;          /* in ctx->afs, holding a reference; under af_mu
                         ** while 'ctx' is set */
};

/* af_free drops the argument of a function that never ran and was never
** stopped: its context can never end, or was freed without ending. */
static void af_free(tt_obj *o) {
  tt_afterfunc *af = (tt_afterfunc *)o;
  if (atomic_load(&af->state) == AF_PENDING && af->drop != NULL)
    af->drop(af->arg);
  free(af);
}

const tt_type tt_afterfunc_type = {"tether.AfterFunc", af_free, NULL,
                                   NULL};

static void af_run(void *p) {
  tt_afterfunc *af = p;
  af->fn(af->arg);
  tt_unref(af);
}

/* af_start starts the function if it is still pending; it consumes one
** reference to 'af'. */
static void af_start(tt_afterfunc *af) {
  int expect = AF_PENDING;
  if (atomic_compare_exchange_strong(&af->state, &expect, AF_STARTED)) {
    /* Without a thread to run it on, running it here beats losing it. */
    if (af->now || tt_exec(af_run, af) != TT_OK) af_run(af);
    return;
  }
  tt_unref(af);
}

/* af_take moves the after_funcs of 'c' onto 'out' (each keeps the list's
** reference) and detaches them from it.  Under af_mu. */
static void af_take(tt_ctx *c, tt_list *out) {
  tt_list *l;
  while ((l = tt_list_shift(&c->afs)) != NULL) {
    tt_container_of(l, tt_afterfunc, link)->ctx = NULL;
    tt_list_push(out, l);
  }
}

static tt_afterfunc *after_func(tt_ctx *c, void (*fn)(void *), void *arg,
                                void (*drop)(void *), bool now) {
  tt_afterfunc *af = calloc(1, sizeof *af);
  tt_ctx *k = c->canc;
  if (af == NULL) return NULL;
  tt_obj_init(&af->hdr, &tt_afterfunc_type);
  af->now = now;
  af->fn = fn;
  af->arg = arg;
  af->drop = drop;
  atomic_init(&af->state, AF_PENDING);
  tt_list_init(&af->link);
  if (k == NULL) return af;  /* never done: it can only be stopped */
  tt__lock(&k->mu);
  if (atomic_load(&k->err) == 0) {
    tt__lock(&af_mu);
    atomic_store_explicit(&k->had_afs, true, memory_order_relaxed);
    tt_list_push(&k->afs, &af->link);
    af->ctx = k;
    tt_ref(af);
    tt__unlock(&af_mu);
    tt__unlock(&k->mu);
    return af;
  }
  tt__unlock(&k->mu);
  af_start(tt_ref(af));
  return af;
}

tt_afterfunc *tt_after_func(tt_ctx *c, void (*fn)(void *), void *arg,
                            void (*drop)(void *)) {
  return after_func(c, fn, arg, drop, false);
}

/* tt__after_func_now: see internal.h. */
tt_afterfunc *tt__after_func_now(tt_ctx *c, void (*fn)(void *), void *arg,
                                 void (*drop)(void *)) {
  return after_func(c, fn, arg, drop, true);
}

bool tt_afterfunc_stop(tt_afterfunc *af) {
  int expect = AF_PENDING;
  bool linked = false;
  if (!atomic_compare_exchange_strong(&af->state, &expect, AF_STOPPED))
    return false;
  tt__lock(&af_mu);
  if (af->ctx != NULL) {
    tt_list_remove(&af->link);
    af->ctx = NULL;
    linked = true;
  }
  tt__unlock(&af_mu);
  if (linked) tt_unref(af);
  if (af->drop != NULL) af->drop(af->arg);
  return true;
}

/* }==================================================================== */


/* unregister takes a cancelable context off its ancestor's children
** list, if it is still there. */
static void unregister(tt_ctx *c) {
  tt_ctx *p = c->parent->canc;
  if (p == NULL || c->detached) return;
  tt__lock(&p->mu);
  if (c->reg == p) {
    tt_list_remove(&c->sib);
    c->reg = NULL;
  }
  tt__unlock(&p->mu);
}

/* {====================================================================
** Creation and freeing
** ===================================================================== */

static void ctx_free(tt_obj *o) {
  tt_ctx *c = (tt_ctx *)o;
  if (cancelable(c)) {
    tt_list *l;
    tt_list afs;
    unregister(c);
    /* After_funcs still pending will never run: the context ends without
    ** being done.  Their arguments are dropped as their last reference
    ** goes (af_free). */
    tt_list_init(&afs);
    /* The last reference went (an acquire): a registration made by any
    ** thread is seen. */
    if (atomic_load_explicit(&c->had_afs, memory_order_relaxed)) {
      tt__lock(&af_mu);
      af_take(c, &afs);
      tt__unlock(&af_mu);
    }
    while ((l = tt_list_shift(&afs)) != NULL)
      tt_unref(tt_container_of(l, tt_afterfunc, link));
    tt_unref(c->cause);
    tt_unref(c->dl_cause);
    tt__latch_destroy(&c->done);
    TT_CHECK(pthread_mutex_destroy(&c->mu));
  }
  tt_unref(c->kobj);
  tt_unref(c->val);
  free(c->kstr);
  tt_unref(c->parent);
  free(c);
}

static int ctx_describe(tt_obj *o, char *buf, size_t n) {
  tt_ctx *c = (tt_ctx *)o;
  int e = tt_ctx_err(c);
  return snprintf(buf, n, "tether.Context (%s%s%s)", tt_ctx_kind(c),
                  e ? ", " : "", e ? tt_errname(e) : "");
}

/* A context holds its parent, its key and value, its deadline's cause and,
** once canceled, its cause (written before 'err' is published). */
static void ctx_traverse(tt_obj *o, tt_visit visit, void *ud) {
  tt_ctx *c = (tt_ctx *)o;
  visit((tt_obj *)c->parent, ud);
  visit(c->kobj, ud);
  visit(c->val, ud);
  if (cancelable(c)) {
    visit(c->dl_cause, ud);
    if (atomic_load(&c->err) != 0) visit(c->cause, ud);
  }
}

const tt_type tt_ctx_type = {"tether.Context", ctx_free, ctx_describe,
                             ctx_traverse};

/* ctx_alloc makes a context of 'kind' under 'parent'.  Value and
** without_cancel contexts are allocated without the fields only
** cancelable ones use (the struct ends with them), and nothing goes
** through calloc, which glibc serves without its per-thread cache. */
static tt_ctx *ctx_alloc(tt_ctx *parent, int kind) {
  bool canc = kind == K_CANCEL || kind == K_DEADLINE;
  size_t size = canc ? sizeof(tt_ctx) : offsetof(tt_ctx, mu);
  tt_ctx *c = malloc(size);
  if (c == NULL) return NULL;
  tt_obj_init(&c->hdr, &tt_ctx_type);
  c->kind = kind;
  c->parent = tt_ref(parent);
  c->canc = parent->canc;
  c->deadline = parent->deadline;
  c->kobj = NULL;
  c->kstr = NULL;
  c->klen = 0;
  c->val = NULL;
  if (canc) {
    c->mu = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    atomic_init(&c->err, 0);
    c->cause = NULL;
    tt__latch_init(&c->done);
    tt_list_init(&c->children);
    tt_list_init(&c->sib);
    c->reg = NULL;
    tt_list_init(&c->afs);
    atomic_init(&c->had_afs, false);
    c->cnext = NULL;
    c->detached = false;
    c->dl_cause = NULL;
    c->timer.when = 0;
    c->timer.idx = 0;
    c->timer.fire = NULL;
    c->canc = c;
  }
  return c;
}

static void cancel_ctx(tt_ctx *c, int err, tt_obj *cause, bool unlink);

/* propagate ties a new cancelable child to its nearest cancelable
** ancestor: nothing to do under a root or a without_cancel, cancel at once
** under a done ancestor, else register in its children. */
static void propagate(tt_ctx *c) {
  tt_ctx *p = c->parent->canc;
  tt_obj *cause;
  int err;
  if (p == NULL) return;
  tt__lock(&p->mu);
  err = atomic_load(&p->err);
  if (err == 0) {
    tt_list_push(&p->children, &c->sib);
    c->reg = p;
    tt__unlock(&p->mu);
    return;
  }
  cause = tt_ref(p->cause);
  tt__unlock(&p->mu);
  cancel_ctx(c, err, cause, false);
  tt_unref(cause);
}

tt_ctx *tt_with_cancel(tt_ctx *parent) {
  tt_ctx *c;
  if (parent == NULL) return NULL;
  c = ctx_alloc(parent, K_CANCEL);
  if (c != NULL) propagate(c);
  return c;
}

static void deadline_fire(tt_tentry *e) {
  tt_ctx *c = tt_container_of(e, tt_ctx, timer);
  cancel_ctx(c, TT_DEADLINE, c->dl_cause, true);
  tt_unref(c);
}

/* arm queues the deadline of a new K_DEADLINE context, or ends it at
** once if the deadline has passed (or it was canceled already). */
static void arm(tt_ctx *c, double deadline, tt_obj *cause) {
  if (atomic_load(&c->err) != 0) return;
  if (deadline <= tt_now()) {
    cancel_ctx(c, TT_DEADLINE, cause, true);
    return;
  }
  tt_ref(c);
  if (tt__timer_add(&c->timer, deadline) != TT_OK) {
    /* No timer thread: better an early expiry than a missed one. */
    tt_unref(c);
    cancel_ctx(c, TT_DEADLINE, cause, true);
  }
}

tt_ctx *tt_with_deadline(tt_ctx *parent, double deadline, tt_obj *cause) {
  tt_ctx *c;
  if (parent == NULL) return NULL;
  /* The parent's deadline is sooner: behave as a plain cancel context. */
  if (parent->deadline >= 0 && parent->deadline <= deadline)
    return tt_with_cancel(parent);
  c = ctx_alloc(parent, K_DEADLINE);
  if (c == NULL) return NULL;
  c->deadline = deadline;
  c->dl_cause = tt_ref(cause);
  c->timer.fire = deadline_fire;
  propagate(c);
  arm(c, deadline, cause);
  return c;
}

/* tt__detached: see internal.h.  The context registers with no ancestor
** and inherits no deadline: it is what the two layers would be. */
tt_ctx *tt__detached(tt_ctx *parent, double timeout) {
  tt_ctx *c;
  if (parent == NULL) return NULL;
  c = ctx_alloc(parent, timeout > 0 ? K_DEADLINE : K_CANCEL);
  if (c == NULL) return NULL;
  c->detached = true;
  c->deadline = -1.0;
  if (timeout > 0) {
    c->deadline = tt_now() + timeout;
    c->timer.fire = deadline_fire;
    arm(c, c->deadline, NULL);
  }
  return c;
}

/* tt__detached_blank: see internal.h.  Until it is bound, the context
** hangs under the background, which holds nothing. */
tt_ctx *tt__detached_blank(void) {
  tt_ctx *c = ctx_alloc(&background_ctx, K_CANCEL);
  if (c != NULL) c->detached = true;
  return c;
}

/* tt__detached_bind: see internal.h.  The context is still private to
** its maker, so plain stores suffice; whoever it is handed to next gets
** it under a lock. */
void tt__detached_bind(tt_ctx *c, tt_ctx *parent, double timeout) {
  c->parent = tt_ref(parent);  /* replaces the background: no reference */
  c->deadline = -1.0;
  if (timeout > 0) {
    c->kind = K_DEADLINE;
    c->deadline = tt_now() + timeout;
    c->timer.fire = deadline_fire;
  }
}

/* tt__detached_reuse: see internal.h.  With the last reference in the
** caller's hands (an acquire: every other holder's use is done), no
** descendant, waiter, after_func or timer entry can see the context
** again: ending it would change nothing anyone can observe. */
bool tt__detached_reuse(tt_ctx *c) {
  if (!cancelable(c) || !c->detached ||
      atomic_load_explicit(&c->hdr.refs, memory_order_acquire) != 1 ||
      atomic_load(&c->err) != 0 ||
      atomic_load_explicit(&c->had_afs, memory_order_relaxed))
    return false;
  tt_unref(c->parent);
  c->parent = &background_ctx;
  c->kind = K_CANCEL;
  c->deadline = -1.0;
  c->timer.when = 0;
  c->timer.idx = 0;
  c->timer.fire = NULL;
  return true;
}

/* tt__detached_arm: see internal.h. */
void tt__detached_arm(tt_ctx *c) {
  if (c->kind == K_DEADLINE) arm(c, c->deadline, NULL);
}

tt_ctx *tt_with_timeout(tt_ctx *parent, double seconds, tt_obj *cause) {
  return tt_with_deadline(parent, tt_now() + seconds, cause);
}

tt_ctx *tt_with_value(tt_ctx *parent, const tt_key *key, tt_obj *value) {
  tt_ctx *c;
  if (parent == NULL || key == NULL) return NULL;
  c = ctx_alloc(parent, K_VALUE);
  if (c == NULL) return NULL;
  if (key->obj == NULL) {
    c->kstr = malloc(key->len + 1);
    if (c->kstr == NULL) {
      tt_unref(c);
      return NULL;
    }
    if (key->len > 0) memcpy(c->kstr, key->str, key->len);
    c->kstr[key->len] = '\0';
    c->klen = key->len;
  }
  c->kobj = tt_ref(key->obj);
  c->val = tt_ref(value);
  return c;
}

tt_ctx *tt_without_cancel(tt_ctx *parent) {
  tt_ctx *c;
  if (parent == NULL) return NULL;
  c = ctx_alloc(parent, K_WITHOUT);
  if (c == NULL) return NULL;
  c->canc = NULL;
  c->deadline = -1.0;
  return c;
}

/* }==================================================================== */


/* {====================================================================
** Cancellation
** ===================================================================== */

/* cancel_one cancels 'c' alone: it records the error and cause, fires the
** done latch, starts the after_funcs and detaches the registered children
** onto the work list '*work' (each with a reference).  It returns false if
** 'c' was already canceled. */
static bool cancel_one(tt_ctx *c, int err, tt_obj *cause, tt_ctx **work) {
  tt_list afs, *l;
  tt__lock(&c->mu);
  if (atomic_load(&c->err) != 0) {
    tt__unlock(&c->mu);
    return false;  /* already canceled: the first cancel wins */
  }
  c->cause = tt_ref(cause != NULL ? cause : (tt_obj *)tt_error_for(err));
  atomic_store(&c->err, err);
  while ((l = tt_list_shift(&c->children)) != NULL) {
    tt_ctx *ch = tt_container_of(l, tt_ctx, sib);
    /* A child whose count reached zero is being freed; it is off the
    ** list now, and its free will not touch us again. */
    if (tt_ref_if_live(ch)) {
      ch->reg = NULL;
      ch->cnext = *work;
      *work = ch;
    }
  }
  tt_list_init(&afs);
  if (atomic_load_explicit(&c->had_afs, memory_order_relaxed)) {
    tt__lock(&af_mu);
    af_take(c, &afs);
    tt__unlock(&af_mu);
  }
  tt__unlock(&c->mu);
  tt__latch_set(&c->done);
  while ((l = tt_list_shift(&afs)) != NULL)
    af_start(tt_container_of(l, tt_afterfunc, link));
  if (c->kind == K_DEADLINE && tt__timer_del(&c->timer)) tt_unref(c);
  return true;
}

static void cancel_ctx(tt_ctx *c, int err, tt_obj *cause, bool unlink) {
  tt_ctx *work = NULL;
  if (!cancel_one(c, err, cause, &work)) return;
  /* Go's removeChild: a context canceled on its own leaves its parent's
  ** list, so the parent does not keep it. */
  if (unlink) unregister(c);
  while (work != NULL) {
    tt_ctx *ch = work;
    work = ch->cnext;
    ch->cnext = NULL;
    cancel_one(ch, err, cause, &work);
    tt_unref(ch);
  }
}

void tt_cancel(tt_ctx *c, tt_obj *cause) {
  if (c == NULL || !cancelable(c)) return;
  cancel_ctx(c, TT_CANCELED, cause, true);
}

/* tt__ctx_end: see internal.h.  The clock is read only for a context with
** a deadline of its own; the timer's later fire finds it done and does
** nothing (the first cancel wins). */
void tt__ctx_end(tt_ctx *c) {
  if (c == NULL || !cancelable(c)) return;
  if (c->kind == K_DEADLINE && c->deadline >= 0 && tt_now() >= c->deadline)
    cancel_ctx(c, TT_DEADLINE, c->dl_cause, true);
  else
    cancel_ctx(c, TT_CANCELED, NULL, true);
}

/* }==================================================================== */


/* {====================================================================
** Queries
** ===================================================================== */

int tt_ctx_err(tt_ctx *c) {
  return c->canc != NULL ? atomic_load(&c->canc->err) : 0;
}

tt_obj *tt_ctx_cause(tt_ctx *c) {
  tt_obj *cause;
  tt_ctx *k = c->canc;
  if (k == NULL || atomic_load(&k->err) == 0) return NULL;
  tt__lock(&k->mu);
  cause = tt_ref(k->cause);
  tt__unlock(&k->mu);
  return cause;
}

bool tt_ctx_deadline(tt_ctx *c, double *at) {
  if (c->deadline < 0) return false;
  if (at != NULL) *at = c->deadline;
  return true;
}

bool tt_ctx_value(tt_ctx *c, const tt_key *key, tt_obj **value) {
  for (; c != NULL; c = c->parent) {
    if (c->kind != K_VALUE) continue;
    if (key->obj != NULL ? c->kobj == key->obj
                         : (c->kobj == NULL && c->klen == key->len &&
                            memcmp(c->kstr, key->str, key->len) == 0)) {
      if (value != NULL) *value = tt_ref(c->val);
      return true;
    }
  }
  if (value != NULL) *value = NULL;
  return false;
}

tt_latch *tt_ctx_done(tt_ctx *c) {
  return c->canc != NULL ? &c->canc->done : NULL;
}

bool tt_ctx_wait(tt_ctx *c, double timeout) {
  tt_latch *l = tt_ctx_done(c);
  if (l == NULL) {
    /* Never done: waiting is a sleep for the whole timeout. */
    if (timeout >= 0) tt_sleep(timeout, NULL);
    else tt_latch_wait(NULL, -1);
    return false;
  }
  return tt_latch_wait(l, timeout);
}

const char *tt_ctx_kind(tt_ctx *c) {
  static const char *const names[] = {"background", "todo", "cancel",
                                      "deadline", "value", "without_cancel"};
  return names[c->kind];
}

/* }==================================================================== */
