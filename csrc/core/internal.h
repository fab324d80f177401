/*
** internal.h -- what the engine's files share and users never see:
** an intrusive list, checked pthread calls, the waiter and latch that
** every waitable is built on, and the timer thread's heap entries.
**
** Lock order, engine-wide (a lock may be taken while holding those to
** its left, never the reverse):
**
**   pool.mu -> chan.mu (by address) -> latch.mu / ctx.mu -> waiter.mu
**                                       -> timer heap mu
**
** ctx.c's 'af_mu' (after_func registrations) is taken after a context's
** 'mu' and takes nothing else.
**
** A durable store's 'mu' (store.c: its request queue) is a leaf: it may
** be taken under a pool's 'mu' (a drainer's hook queues an ack as an op
** resolves) and takes nothing.  The store calls back (a spill committed)
** from its thread or an executor thread with no store lock held; the
** callback takes the pool's 'mu'.  Waits: the store's thread on its 'cv', callers of synchronous
** store calls on its 'done_cv', both under the store's 'mu'.
**
** A context's 'mu' is taken for one context at a time, except that
** cancel propagation takes a child's lock after releasing the parent's
** (it copies the child list first), so contexts never nest locks.
*/
#ifndef tether_internal_h
#define tether_internal_h

#include <pthread.h>
#include <stdlib.h>

#include "tether.h"

/* {====================================================================
** Checked pthread calls
** ===================================================================== */

/* tt__fatal reports a failed call that cannot fail in a correct program
** (unlocking a mutex we hold, say) and aborts: carrying on would corrupt
** state silently. */
_Noreturn void tt__fatal(const char *what, int err);

#define TT_CHECK(call) \
  do { int tt__e = (call); if (tt__e != 0) tt__fatal(#call, tt__e); } \
  while (0)

#define tt__lock(m) TT_CHECK(pthread_mutex_lock(m))
#define tt__unlock(m) TT_CHECK(pthread_mutex_unlock(m))

/* tt__cond_init makes a condition variable on the monotonic clock, so
** timed waits agree with tt_now. */
void tt__cond_init(pthread_cond_t *cv);

/* tt__timedwait waits on 'cv' until the monotonic time 'until'
** (< 0: forever); returns false on timeout. */
bool tt__timedwait(pthread_cond_t *cv, pthread_mutex_t *mu, double until);

/* tt__thread_start starts a detached-or-joinable engine thread with all
** signals blocked (signals belong to the program's main thread).
** Returns 0 or the pthread error. */
int tt__thread_start(pthread_t *t, void *(*fn)(void *), void *arg,
                     bool detached);

/* tt__thread_exit_hook runs the embedder's exit hook on this thread. */
void tt__thread_exit_hook(void);

/* tt__deadline turns a relative timeout (< 0: none) into an absolute time
** on tt_now's clock (< 0: none). */
static inline double tt__deadline(double timeout) {
  return timeout < 0 ? -1.0 : tt_now() + timeout;
}

/* tt__random returns a thread-local pseudo-random 64-bit number
** (xorshift; not for secrets). */
uint64_t tt__random(void);

char *tt__strdup(const char *s);

/* }==================================================================== */


/* {====================================================================
** Intrusive doubly linked list (after libuv's queue.h)
** ===================================================================== */

typedef struct tt_list {
  struct tt_list *prev, *next;
} tt_list;

#define tt_container_of(p, type, field) \
  ((type *)((char *)(p) - offsetof(type, field)))

static inline void tt_list_init(tt_list *l) { l->prev = l->next = l; }
static inline bool tt_list_empty(const tt_list *l) { return l->next == l; }

static inline void tt_list_push(tt_list *head, tt_list *n) {
  n->prev = head->prev;
  n->next = head;
  head->prev->next = n;
  head->prev = n;
}

static inline void tt_list_remove(tt_list *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = n;
}

/* A node that was removed (or never linked) points at itself. */
static inline bool tt_list_linked(const tt_list *n) { return n->next != n; }

static inline tt_list *tt_list_shift(tt_list *head) {
  tt_list *n;
  if (tt_list_empty(head)) return NULL;
  n = head->next;
  tt_list_remove(n);
  return n;
}

/* }==================================================================== */


/* {====================================================================
** Waiters and latches
** ===================================================================== */

/* A tt_waiter is one blocked caller of tt_select (each thread has one).
** 'fired' is -1 while it waits; whoever moves it from -1 to a case index
** (with a compare-and-swap) owns the wake-up, and must then signal 'cv'
** while still holding the lock of the waitable that fired, so that the
** waiter, which takes that lock again to unregister, outlives the
** signal. */
typedef struct tt_waiter {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  _Atomic int fired;
} tt_waiter;

/* A tt_wnode is a waiter's registration on one waitable (Go's sudog). */
typedef struct tt_wnode {
  tt_list link;
  tt_waiter *w;
  int idx;
  tt_case *c;      /* for channel cases: where the item goes or comes from */
} tt_wnode;

/* tt__claim tries to wake 'w' for case 'idx'; true if this call did. */
bool tt__claim(tt_waiter *w, int idx);

struct tt_latch {
  pthread_mutex_t mu;     /* protects 'waiters' */
  _Atomic int set;        /* 0 until the latch fires, then 1 forever */
  tt_list waiters;        /* of tt_wnode, guarded by 'mu' */
};

void tt__latch_init(tt_latch *l);
void tt__latch_destroy(tt_latch *l);

/* tt__latch_set fires the latch and wakes every registered waiter; true if
** this call set it (the first one). */
bool tt__latch_set(tt_latch *l);

/* }==================================================================== */


/* {====================================================================
** Timer thread
** ===================================================================== */

/* A tt_tentry is a deadline on the timer thread's min-heap.  The owner
** embeds it and keeps it alive until 'fire' has returned or tt__timer_del
** returned true.  'fire' runs on the timer thread with no engine lock
** held. */
typedef struct tt_tentry {
  double when;
  size_t idx;              /* 1-based heap slot; 0 when not queued */
  void (*fire)(struct tt_tentry *e);
} tt_tentry;

/* tt__timer_add queues 'e' to fire at 'when'.  Returns TT_OK or an error
** (the timer thread could not start, or no memory). */
int tt__timer_add(tt_tentry *e, double when);

/* tt__timer_del removes 'e' if it has not been taken off the heap to fire;
** true if removed (then 'fire' will not run). */
bool tt__timer_del(tt_tentry *e);

void tt__timer_shutdown(void);
void tt__exec_shutdown(void);

/* }==================================================================== */



/* {====================================================================
** Channel internals used by tt_select (chan.c)
** ===================================================================== */

void tt__chan_lock(tt_chan *c);
void tt__chan_unlock(tt_chan *c);

/* tt__chan_try attempts case 'cs' without waiting, with the channel
** locked; it completes the case and returns true, or returns false. */
bool tt__chan_try(tt_chan *c, tt_case *cs);

/* tt__chan_park queues a waiter's node on the channel's receive or send
** queue; tt__chan_unpark removes it if a counterpart has not.  Both with
** the channel locked. */
void tt__chan_park(tt_chan *c, tt_wnode *n);
void tt__chan_unpark(tt_chan *c, tt_wnode *n);

/* }==================================================================== */
#endif
