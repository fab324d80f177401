/*
** obj.c -- reference-counted objects, error values, byte strings and the
** small utilities every engine file uses (checked pthread helpers, the
** monotonic clock, engine threads).
*/
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

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

static _Thread_local bool engine_thread;

bool tt_engine_thread(void) { return engine_thread; }

/* What a new engine thread runs: its function, marked as ours. */
typedef struct start {
  void *(*fn)(void *);
  void *arg;
} start;

static void *thread_main(void *p) {
  start s = *(start *)p;
  free(p);
  engine_thread = true;
  return s.fn(s.arg);
}

int tt__thread_start(pthread_t *t, void *(*fn)(void *), void *arg,
                     bool detached) {
  pthread_attr_t a;
  sigset_t all, old;
  start *s = malloc(sizeof *s);
  int e;
  if (s == NULL) return ENOMEM;
  s->fn = fn;
  s->arg = arg;
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
  /* The exporter sends what it holds first (within its timeout). */
  tt_trace_shutdown(-1);
}

/* }==================================================================== */


/* {====================================================================
** Objects
** ===================================================================== */

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
    o->type->free(o);
}

bool tt_ref_if_live(void *p) {
  tt_obj *o = p;
  long n = atomic_load_explicit(&o->refs, memory_order_relaxed);
  if (n < 0) return true;
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

const tt_type tt_error_type = {"tether.Error", error_free, error_describe};

tt_error tt_canceled = {{-1, &tt_error_type}, TT_CANCELED,
                        "context canceled", NULL, NULL, NULL};
tt_error tt_deadline = {{-1, &tt_error_type}, TT_DEADLINE,
                        "context deadline exceeded", NULL, NULL, NULL};

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

const tt_type tt_bytes_type = {"tether.Bytes", bytes_free, bytes_describe};

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
