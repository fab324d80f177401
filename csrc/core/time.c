/*
** time.c -- the timer thread: one thread and a binary min-heap of
** deadlines serve every context deadline, retry backoff, idle tick and
** timer waitable in the process.
**
** The thread starts on the first tt__timer_add and sleeps on its
** condition variable until the earliest deadline, or for IDLE_PERIOD
** when that is sooner (or the heap is empty).  It records the time it
** sleeps until ('until'), and an add wakes it only for a deadline earlier
** than that: a deadline that is canceled long before it is due (the
** usual fate of a timeout) costs a heap insert and delete under 'mu' and
** no wake-up.  Deleting never wakes it: it wakes at 'until', finds a
** later deadline or none, and sleeps again.  Its timer slack is set
** small, so that a deadline fires within microseconds rather than the
** default 50.  Entries are popped under 'mu' and fired after it is
** released, so a 'fire' callback may add or delete entries freely.
**
** Adding never waits.  Callers add entries while holding their own locks
** (a pool adds its idle tick and retries under its 'mu'), and the timer
** thread itself adds from inside 'fire' callbacks that take those locks:
** an add that waited for anything the timer thread does would deadlock
** (a thread never waits for itself).
**
** Stopping, after libuv's threadpool: tt__timer_shutdown posts an exit
** message to the running thread (its record's 'exit', read under 'mu')
** and joins it.  The record is detached from the heap first, so an add
** made meanwhile (by the exiting thread finishing a 'fire', or by any
** other thread) starts a new thread at once instead of waiting for the
** old one to end.  The exiting thread fires nothing more: it finishes
** the callback it is in, if any, and returns.  Each thread has its own
** condition variable, so a wake-up meant for the new thread cannot be
** taken by the old one.
*/
#include <string.h>
#include <sys/prctl.h>

#include "internal.h"

/* The longest the timer thread sleeps at a time, in seconds.  Bounding it
** lets adds of deadlines later than that wake nobody. */
#define IDLE_PERIOD 1.0

/* The timer thread's timer slack, in nanoseconds. */
#define TIMER_SLACK_NS 1000

/* The record of one timer thread. */
typedef struct tthread {
  pthread_t t;
  pthread_cond_t cv;       /* signaled when the earliest entry changes,
                           ** and to post 'exit' */
  bool exit;               /* the exit message; under 'mu' */
  double until;            /* when its current sleep ends (< 0: it is
                           ** awake, checking the heap); under 'mu' */
  bool detached;           /* nobody joins it: it frees its record */
} tthread;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static tt_tentry **heap;             /* 1-based, guarded by 'mu' */
static size_t heap_len, heap_cap;    /* guarded by 'mu' */
static tthread *cur;                 /* the thread serving the heap, or
                                     ** NULL; guarded by 'mu' */

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

static void tthread_free(tthread *t) {
  TT_CHECK(pthread_cond_destroy(&t->cv));
  free(t);
}

static void *timer_main(void *arg) {
  tthread *self = arg;
  bool detached;
  /* Best effort: a kernel without it keeps the default slack. */
  (void)prctl(PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0);
  tt__lock(&mu);
  while (!self->exit) {
    double now = tt_now();
    if (heap_len == 0 || heap[1]->when > now) {
      double until = now + IDLE_PERIOD;
      if (heap_len > 0 && heap[1]->when < until) until = heap[1]->when;
      self->until = until;
      tt__timedwait(&self->cv, &mu, until);
      self->until = -1;
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
  detached = self->detached;
  tt__unlock(&mu);
  if (detached) tthread_free(self);
  return NULL;
}

/* start_thread makes the thread that serves the heap; under 'mu'. */
static int start_thread(void) {
  tthread *t = calloc(1, sizeof *t);
  if (t == NULL) return TT_ENOMEM;
  tt__cond_init(&t->cv);
  t->until = -1;
  if (tt__thread_start(&t->t, timer_main, t, false) != 0) {
    tthread_free(t);
    return TT_ETHREAD;
  }
  cur = t;
  return TT_OK;
}

int tt__timer_add(tt_tentry *e, double when) {
  int rc;
  tt__lock(&mu);
  if (cur == NULL && (rc = start_thread()) != TT_OK) {
    tt__unlock(&mu);
    return rc;
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
  /* Wake the thread only when it sleeps past the new deadline; awake,
  ** it looks at the heap before it sleeps again. */
  if (e->idx == 1 && cur->until >= 0 && when < cur->until)
    TT_CHECK(pthread_cond_signal(&cur->cv));
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
  tthread *t;
  tt__lock(&mu);
  /* A thread with deadlines still to fire is not idle: it stays, or they
  ** would never fire.  Only an idle timer thread is stopped. */
  if (cur == NULL || heap_len > 0) {
    tt__unlock(&mu);
    return;
  }
  t = cur;
  cur = NULL;
  t->exit = true;
  /* Called from a 'fire' callback, the thread would wait for itself:
  ** it is left to end on its own. */
  t->detached = pthread_equal(t->t, pthread_self());
  TT_CHECK(pthread_cond_signal(&t->cv));
  /* The heap is empty and the exiting thread never looks at it again. */
  free(heap);
  heap = NULL;
  heap_cap = 0;
  tt__unlock(&mu);
  if (t->detached) {
    TT_CHECK(pthread_detach(t->t));
    return;
  }
  TT_CHECK(pthread_join(t->t, NULL));
  tthread_free(t);
}
