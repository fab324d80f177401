/*
** obj.c -- reference-counted objects (freed from a work list, in constant
** stack), walks through what objects hold, error values, byte strings
** and the small utilities every engine file uses (checked pthread
** helpers, the monotonic clock, engine threads and their test hook).
*/
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* {====================================================================
** Utilities
** ===================================================================== */

_Noreturn void tt__fatal(const char *what, int err) {
  fprintf(stderr, "tether: fatal: %s failed: %s\n", what, strerror(err));
  abort();
}

double tt_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double tt_wall(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void tt__cond_init(pthread_cond_t *cv) {
  pthread_condattr_t a;
  TT_CHECK(pthread_condattr_init(&a));
  TT_CHECK(pthread_condattr_setclock(&a, CLOCK_MONOTONIC));
  TT_CHECK(pthread_cond_init(cv, &a));
  TT_CHECK(pthread_condattr_destroy(&a));
}

bool tt__timedwait(pthread_cond_t *cv, pthread_mutex_t *mu, double until) {
  struct timespec ts;
  double sec;
  int e;
  if (until < 0) {
    TT_CHECK(pthread_cond_wait(cv, mu));
    return true;
  }
  /* Clamp far deadlines so the conversion to time_t cannot overflow. */
  if (until > 1e12) until = 1e12;
  sec = floor(until);
  ts.tv_sec = (time_t)sec;
  ts.tv_nsec = (long)((until - sec) * 1e9);
  if (ts.tv_nsec >= 1000000000L) ts.tv_nsec = 999999999L;
  e = pthread_cond_timedwait(cv, mu, &ts);
  if (e == ETIMEDOUT) return false;
  if (e != 0) tt__fatal("pthread_cond_timedwait", e);
  return true;
}

/* Engine threads start here: the flag that tt_engine_thread reads is set
** before the thread's own function runs. */
typedef struct thread_start {
  void *(*fn)(void *);
  void *arg;
} thread_start;

static _Thread_local bool tl_engine;

bool tt_engine_thread(void) { return tl_engine; }

static void *thread_main(void *p) {
  thread_start s = *(thread_start *)p;
  free(p);
  tl_engine = true;
  return s.fn(s.arg);
}

/* The number of thread creations still to fail (tt_test_fail_threads). */
static _Atomic int fail_threads;

void tt_test_fail_threads(int n) {
  atomic_store(&fail_threads, n > 0 ? n : 0);
}

/* fail_this_thread consumes one pending failure, if any. */
static bool fail_this_thread(void) {
  int n = atomic_load(&fail_threads);
  while (n > 0)
    if (atomic_compare_exchange_weak(&fail_threads, &n, n - 1)) return true;
  return false;
}

int tt__thread_start(pthread_t *t, void *(*fn)(void *), void *arg,
                     bool detached) {
  pthread_attr_t a;
  sigset_t all, old;
  thread_start *s;
  int e;
  if (fail_this_thread()) return EAGAIN;
  s = malloc(sizeof *s);
  if (s == NULL) return ENOMEM;
  s->fn = fn;
  s->arg = arg;
  /* Children that engine threads fork get the default mask back. */
  tt__signal_atfork();
  TT_CHECK(pthread_attr_init(&a));
  if (detached)
    TT_CHECK(pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED));
  /* A new thread inherits the creator's mask: block everything around the
  ** creation so signals keep going to the program's own threads. */
  sigfillset(&all);
  TT_CHECK(pthread_sigmask(SIG_SETMASK, &all, &old));
  e = pthread_create(t, &a, thread_main, s);
  TT_CHECK(pthread_sigmask(SIG_SETMASK, &old, NULL));
  TT_CHECK(pthread_attr_destroy(&a));
  if (e != 0) free(s);
  return e;
}

uint64_t tt__random(void) {
  static _Thread_local uint64_t s;
  if (s == 0) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^
        (uint64_t)(uintptr_t)&s;
    if (s == 0) s = 0x9e3779b97f4a7c15ULL;
  }
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

static pthread_once_t ncpu_once = PTHREAD_ONCE_INIT;
static int ncpu = 1;
static _Atomic int spinners;

static void ncpu_init(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  ncpu = n > 0 ? (int)n : 1;
}

int tt__ncpu(void) {
  TT_CHECK(pthread_once(&ncpu_once, ncpu_init));
  return ncpu;
}

bool tt__spin_enter(void) {
  int max = tt__ncpu() > 1 ? tt__ncpu() : 0;
  int n = atomic_load_explicit(&spinners, memory_order_relaxed);
  while (n < max) {
    if (atomic_compare_exchange_weak_explicit(&spinners, &n, n + 1,
                                              memory_order_relaxed,
                                              memory_order_relaxed))
      return true;
  }
  return false;
}

void tt__spin_exit(void) {
  atomic_fetch_sub_explicit(&spinners, 1, memory_order_relaxed);
}

char *tt__strdup(const char *s) {
  size_t n;
  char *d;
  if (s == NULL) return NULL;
  n = strlen(s) + 1;
  d = malloc(n);
  if (d != NULL) memcpy(d, s, n);
  return d;
}

void tt_shutdown(void) {
  tt__exec_shutdown();
  tt__timer_shutdown();
  tt__signal_shutdown();
  /* The exporter sends what it holds first (within its timeout). */
  tt_trace_shutdown(-1);
}

/* }==================================================================== */


/* {====================================================================
** Objects
**
** Freeing.  A type's 'free' releases what the object holds with
** tt_unref, and a release that drops another object's last reference
** would free that one inside it, and so on down a chain: a million nested
** contexts would take a million stack frames.  Instead, a free that
** starts while another free runs on the same thread is deferred to a
** thread-local work list, and the outermost tt_unref runs the list until
** it is empty, so any chain is freed in constant stack depth.
**
** The list needs no memory of its own: the dead object's header holds the
** link.  Its 'type' stays (the free needs it) and its 'refs', which
** nobody counts any more, holds the next entry as -2 - (address >> 2):
** always below -1, so tt_ref_if_live (which treats -1 as static and
** anything below 1 else as dead) still sees a dying object, and the
** address comes back whole because objects are at least 4-byte aligned.
** ===================================================================== */

_Static_assert(sizeof(long) >= sizeof(void *) &&
               _Alignof(tt_obj) >= 4,
               "an object's 'refs' must be able to hold a link");

static _Thread_local tt_obj *dead_list;   /* objects waiting for 'free' */
static _Thread_local bool freeing;        /* a free runs on this thread */

static void dead_push(tt_obj *o) {
  uintptr_t next = (uintptr_t)dead_list;
  atomic_store_explicit(&o->refs, -2 - (long)(next >> 2),
                        memory_order_relaxed);
  dead_list = o;
}

static tt_obj *dead_pop(void) {
  tt_obj *o = dead_list;
  long r;
  if (o == NULL) return NULL;
  r = atomic_load_explicit(&o->refs, memory_order_relaxed);
  dead_list = (tt_obj *)((uintptr_t)(-2 - r) << 2);
  atomic_store_explicit(&o->refs, 0, memory_order_relaxed);
  return o;
}

/* obj_free frees 'o' whose last reference just went, and then every
** object that freeing it released, one after another. */
static void obj_free(tt_obj *o) {
  if (freeing) {
    dead_push(o);
    return;
  }
  freeing = true;
  do o->type->free(o);
  while ((o = dead_pop()) != NULL);
  freeing = false;
}

void tt_obj_init(tt_obj *o, const tt_type *type) {
  atomic_init(&o->refs, 1);
  o->type = type;
}

void *tt_ref(void *p) {
  tt_obj *o = p;
  if (o != NULL && atomic_load_explicit(&o->refs, memory_order_relaxed) >= 0)
    atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
  return p;
}

void tt_unref(void *p) {
  tt_obj *o = p;
  if (o == NULL || atomic_load_explicit(&o->refs, memory_order_relaxed) < 0)
    return;
  if (atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) == 1)
    obj_free(o);
}

bool tt_ref_if_live(void *p) {
  tt_obj *o = p;
  long n = atomic_load_explicit(&o->refs, memory_order_relaxed);
  if (n == -1) return true;  /* static */
  while (n > 0) {
    if (atomic_compare_exchange_weak_explicit(&o->refs, &n, n + 1,
                                              memory_order_acquire,
                                              memory_order_relaxed))
      return true;
  }
  return false;
}

int tt_describe(void *p, char *buf, size_t n) {
  tt_obj *o = p;
  if (o == NULL) return snprintf(buf, n, "nil");
  if (o->type->describe != NULL) return o->type->describe(o, buf, n);
  return snprintf(buf, n, "%s: %p", o->type->name, p);
}

/* }==================================================================== */


/* {====================================================================
** Walks through what objects hold
**
** A walk is a breadth-first search over the types' 'traverse': 'seen'
** lists every object met, in order, each with a reference (a channel may
** be emptied by a receiver while the walk goes on: the reference keeps
** its items alive), and serves as the queue; 'set' is a hash set of the
** objects of the current search, so that shared objects and diamonds are
** visited once.
** ===================================================================== */

static size_t ptr_hash(const void *p, size_t cap) {
  uint64_t h = (uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ULL;
  return (size_t)(h >> 32) & (cap - 1);
}

void tt__walk_init(tt__walk *w) {
  /* The inline arrays need no clearing: 'seen' is filled in order, and
  ** each search clears the set it uses. */
  w->nseen = w->setlen = w->from = 0;
  w->target = NULL;
  w->found = w->nomem = false;
  w->seen = w->inl_seen;
  w->seencap = sizeof w->inl_seen / sizeof w->inl_seen[0];
  w->set = w->inl_set;
  w->setcap = sizeof w->inl_set / sizeof w->inl_set[0];
}

/* set_put adds 'o' to a set of 'cap' slots (a power of two, never full);
** false if it was there. */
static bool set_put(tt_obj **set, size_t cap, tt_obj *o) {
  size_t i = ptr_hash(o, cap);
  while (set[i] != NULL) {
    if (set[i] == o) return false;
    i = (i + 1) & (cap - 1);
  }
  set[i] = o;
  return true;
}

/* set_grow doubles the set when it is half full, rebuilding it from the
** objects of the current search; false when out of memory. */
static bool set_grow(tt__walk *w) {
  size_t ncap = w->setcap * 2, i;
  tt_obj **ns;
  if (w->setlen * 2 < w->setcap) return true;
  ns = calloc(ncap, sizeof *ns);
  if (ns == NULL) return false;
  for (i = w->from; i < w->nseen; i++) set_put(ns, ncap, w->seen[i]);
  if (w->set != w->inl_set) free(w->set);
  w->set = ns;
  w->setcap = ncap;
  return true;
}

static bool seen_push(tt__walk *w, tt_obj *o) {
  if (w->nseen == w->seencap) {
    size_t ncap = w->seencap * 2;
    tt_obj **ns = w->seen == w->inl_seen ? malloc(ncap * sizeof *ns)
                                         : realloc(w->seen,
                                                   ncap * sizeof *ns);
    if (ns == NULL) return false;
    if (w->seen == w->inl_seen)
      memcpy(ns, w->inl_seen, w->nseen * sizeof *ns);
    w->seen = ns;
    w->seencap = ncap;
  }
  w->seen[w->nseen++] = tt_ref(o);
  return true;
}

static void walk_visit(tt_obj *o, void *ud) {
  tt__walk *w = ud;
  if (o == NULL || w->found || w->nomem) return;
  if (o == w->target) {
    w->found = true;
    return;
  }
  if (!set_grow(w)) {
    w->nomem = true;
    return;
  }
  if (!set_put(w->set, w->setcap, o)) return;
  w->setlen++;
  if (!seen_push(w, o)) w->nomem = true;
}

int tt__walk_reaches(tt__walk *w, tt_obj *from, tt_obj *target,
                     bool *found) {
  size_t i;
  memset(w->set, 0, w->setcap * sizeof *w->set);
  w->setlen = 0;
  w->from = w->nseen;
  w->target = target;
  w->found = from == target;
  w->nomem = false;
  walk_visit(from, w);
  for (i = w->from; i < w->nseen && !w->found && !w->nomem; i++) {
    tt_obj *o = w->seen[i];
    if (o->type->traverse != NULL) o->type->traverse(o, walk_visit, w);
  }
  *found = w->found;
  return w->nomem ? TT_ENOMEM : TT_OK;
}

void tt__walk_end(tt__walk *w) {
  size_t i;
  for (i = 0; i < w->nseen; i++) tt_unref(w->seen[i]);
  if (w->seen != w->inl_seen) free(w->seen);
  if (w->set != w->inl_set) free(w->set);
  tt__walk_init(w);
}

/* cppcheck-suppress constParameter ; a tt_visit, whose type fixes the
** signature (cppcheck 2.10 does not see the function passed as one) */
static void any_visit(tt_obj *o, void *ud) {
  if (o != NULL) *(bool *)ud = true;
}

bool tt__holds_any(tt_obj *o) {
  bool any = false;
  if (o != NULL && o->type->traverse != NULL)
    o->type->traverse(o, any_visit, &any);
  return any;
}

bool tt_holds(void *o, void *target) {
  tt__walk w;
  bool found = false;
  int rc;
  if (o == NULL) return false;
  tt__walk_init(&w);
  rc = tt__walk_reaches(&w, o, target, &found);
  tt__walk_end(&w);
  return rc != TT_OK || found;
}

/* The cycle lock: sends of items that hold objects look and insert under
** it, so that two of them cannot each miss the cycle the other makes. */
static pthread_mutex_t cycle_mu = PTHREAD_MUTEX_INITIALIZER;

void tt__cycle_lock(void) { tt__lock(&cycle_mu); }
void tt__cycle_unlock(void) { tt__unlock(&cycle_mu); }

/* }==================================================================== */


/* {====================================================================
** Errors
** ===================================================================== */

static const struct { const char *name, *msg; } errtab[TT_NERRORS] = {
  {"ok", "no error"},
  {"canceled", "context canceled"},
  {"deadline_exceeded", "context deadline exceeded"},
  {"no_memory", "not enough memory"},
  {"invalid", "invalid argument"},
  {"closed", "closed"},
  {"queue_full", "queue full"},
  {"quota_exceeded", "quota exceeded"},
  {"timeout", "timeout"},
  {"failed", "task failed"},
  {"stopped", "task stopped"},
  {"no_thread", "cannot create thread"},
  {"spilled", "spilled to the durable store"},
  {"store_unavailable", "durable store unavailable"},
  {"abandoned", "abandoned at exit"},
  {"signal", "signal received"},
  {"client_gone", "client gone"},
  {"interrupted", "interrupted"},
  {"deadlock", "the wait could never end"},
};

const char *tt_strerror(int code) {
  if (code < 0 || code >= TT_NERRORS) return "unknown error";
  return errtab[code].msg;
}

const char *tt_errname(int code) {
  if (code < 0 || code >= TT_NERRORS) return "unknown";
  return errtab[code].name;
}

static void error_free(tt_obj *o) {
  tt_error *e = (tt_error *)o;
  tt_unref(e->cause);
  tt_unref(e->value);
  free(e->message);
  free(e->traceback);
  free(e);
}

static int error_describe(tt_obj *o, char *buf, size_t n) {
  return snprintf(buf, n, "%s", ((tt_error *)o)->message);
}

static void error_traverse(tt_obj *o, tt_visit visit, void *ud) {
  tt_error *e = (tt_error *)o;
  visit(e->cause, ud);
  visit(e->value, ud);
}

const tt_type tt_error_type = {"tether.Error", error_free, error_describe,
                               error_traverse};

tt_error tt_canceled = {{-1, &tt_error_type}, TT_CANCELED,
                        "context canceled", NULL, NULL, NULL, 0};
tt_error tt_deadline = {{-1, &tt_error_type}, TT_DEADLINE,
                        "context deadline exceeded", NULL, NULL, NULL, 0};

tt_error *tt_error_new(int code, const char *message, tt_obj *cause) {
  tt_error *e = calloc(1, sizeof *e);
  if (e == NULL) return NULL;
  e->message = tt__strdup(message != NULL ? message : tt_strerror(code));
  if (e->message == NULL) {
    free(e);
    return NULL;
  }
  tt_obj_init(&e->hdr, &tt_error_type);
  e->code = code;
  e->cause = tt_ref(cause);
  return e;
}

tt_error *tt_error_for(int code) {
  if (code == TT_CANCELED) return &tt_canceled;
  if (code == TT_DEADLINE) return &tt_deadline;
  return tt_error_new(code, NULL, NULL);
}

/* }==================================================================== */


/* {====================================================================
** Byte strings
** ===================================================================== */

static void bytes_free(tt_obj *o) { free(o); }

static int bytes_describe(tt_obj *o, char *buf, size_t n) {
  tt_bytes *b = (tt_bytes *)o;
  return snprintf(buf, n, "%.*s", (int)(b->len > 4096 ? 4096 : b->len),
                  b->data);
}

const tt_type tt_bytes_type = {"tether.Bytes", bytes_free, bytes_describe,
                               NULL};

tt_bytes *tt_bytes_new(const void *data, size_t len) {
  tt_bytes *b = malloc(sizeof *b + len + 1);
  if (b == NULL) return NULL;
  tt_obj_init(&b->hdr, &tt_bytes_type);
  b->len = len;
  if (len > 0) memcpy(b->data, data, len);
  b->data[len] = '\0';
  return b;
}

/* }==================================================================== */
