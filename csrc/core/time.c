/*
** time.c -- the timer thread: one thread and a binary min-heap of
** deadlines serve every context deadline, retry backoff, idle tick and
** timer waitable in the process.
**
** The thread starts on the first tt__timer_add and sleeps on a condition
** variable until the earliest deadline (or a new, earlier one).  Entries
** are popped under 'mu' and fired after it is released, so a 'fire'
** callback may add or delete entries freely.
*/
#include <string.h>

#include "internal.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv;            /* signaled when the earliest changes */
static pthread_cond_t stopped_cv;    /* signaled when a stop completes */
static tt_tentry **heap;             /* 1-based, guarded by 'mu' */
static size_t heap_len, heap_cap;    /* guarded by 'mu' */
static bool running, stopping;       /* guarded by 'mu' */
static pthread_t thread;             /* valid while 'running' */
static pthread_once_t cv_once = PTHREAD_ONCE_INIT;

static void init_cv(void) {
  tt__cond_init(&cv);
  tt__cond_init(&stopped_cv);
}

static void heap_swap(size_t a, size_t b) {
  tt_tentry *t = heap[a];
  heap[a] = heap[b];
  heap[b] = t;
  heap[a]->idx = a;
  heap[b]->idx = b;
}

static void heap_up(size_t i) {
  while (i > 1 && heap[i]->when < heap[i / 2]->when) {
    heap_swap(i, i / 2);
    i /= 2;
  }
}

static void heap_down(size_t i) {
  for (;;) {
    size_t l = 2 * i, r = l + 1, m = i;
    if (l <= heap_len && heap[l]->when < heap[m]->when) m = l;
    if (r <= heap_len && heap[r]->when < heap[m]->when) m = r;
    if (m == i) return;
    heap_swap(i, m);
    i = m;
  }
}

/* heap_remove takes slot 'i' out and restores the heap property. */
static void heap_remove(size_t i) {
  tt_tentry *e = heap[i];
  if (i != heap_len) {
    heap_swap(i, heap_len);
    heap_len--;
    heap_up(i);
    heap_down(i);
  } else {
    heap_len--;
  }
  e->idx = 0;
}

static void *timer_main(void *arg) {
  (void)arg;
  tt__lock(&mu);
  while (!stopping) {
    double now;
    if (heap_len == 0) {
      tt__timedwait(&cv, &mu, -1);
      continue;
    }
    now = tt_now();
    if (heap[1]->when > now) {
      tt__timedwait(&cv, &mu, heap[1]->when);
      continue;
    }
    {
      tt_tentry *e = heap[1];
      heap_remove(1);
      tt__unlock(&mu);
      e->fire(e);
      tt__lock(&mu);
    }
  }
  tt__unlock(&mu);
  return NULL;
}

int tt__timer_add(tt_tentry *e, double when) {
  TT_CHECK(pthread_once(&cv_once, init_cv));
  tt__lock(&mu);
  /* A thread being stopped takes no new entries: wait until it is gone,
  ** then start another. */
  while (stopping) tt__timedwait(&stopped_cv, &mu, -1);
  if (!running) {
    int err;
    err = tt__thread_start(&thread, timer_main, NULL, false);
    if (err != 0) {
      tt__unlock(&mu);
      return TT_ETHREAD;
    }
    running = true;
  }
  if (heap_len + 1 >= heap_cap) {
    size_t ncap = heap_cap == 0 ? 64 : heap_cap * 2;
    tt_tentry **nh = realloc(heap, ncap * sizeof *nh);
    if (nh == NULL) {
      tt__unlock(&mu);
      return TT_ENOMEM;
    }
    heap = nh;
    heap_cap = ncap;
  }
  e->when = when;
  heap[++heap_len] = e;
  e->idx = heap_len;
  heap_up(heap_len);
  /* Wake the thread only when the earliest deadline changed. */
  if (e->idx == 1) TT_CHECK(pthread_cond_signal(&cv));
  tt__unlock(&mu);
  return TT_OK;
}

bool tt__timer_del(tt_tentry *e) {
  bool removed = false;
  tt__lock(&mu);
  if (e->idx != 0) {
    heap_remove(e->idx);
    removed = true;
  }
  tt__unlock(&mu);
  return removed;
}

void tt__timer_shutdown(void) {
  TT_CHECK(pthread_once(&cv_once, init_cv));
  tt__lock(&mu);
  /* A thread with deadlines still to fire is not idle: it stays, or they
  ** would never fire.  Only an idle timer thread is stopped. */
  if (!running || stopping || heap_len > 0) {
    tt__unlock(&mu);
    return;
  }
  stopping = true;
  TT_CHECK(pthread_cond_signal(&cv));
  tt__unlock(&mu);
  TT_CHECK(pthread_join(thread, NULL));
  tt__lock(&mu);
  running = false;
  stopping = false;
  free(heap);
  heap = NULL;
  heap_cap = 0;
  TT_CHECK(pthread_cond_broadcast(&stopped_cv));
  tt__unlock(&mu);
}
