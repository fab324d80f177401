/*
** wait.c -- the one waiting mechanism: latches, timer waitables and
** tt_select over any mix of latches and channel operations.
**
** tt_select follows Go's runtime select: it locks the channels of its
** cases in address order, tries every case once in a random order, and
** otherwise parks a node (Go's sudog) on each waitable and sleeps on its
** thread's condition variable.  Whoever wakes it first wins a
** compare-and-swap on 'fired'; every other wake-up attempt fails that CAS
** and moves on.  While a select holds its channels' locks no channel
** operation can claim it, so its own pass is race-free; latches claim it
** with the same CAS at any time.
**
** A send case whose item holds objects first looks for a reference cycle
** under the cycle lock (see chan.c), and keeps that lock until its item
** is in a buffer or parked.
*/
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define MAX_CASES 64

/* {====================================================================
** Waiters and latches
** ===================================================================== */

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

/* futex_wake_all wakes every thread asleep on 'addr'. */
static void futex_wake_all(_Atomic int *addr) {
  syscall(SYS_futex, (int *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL,
          0);
}

/* futex_wait sleeps while '*addr' is 'val', until woken or the monotonic
** time 'until' (< 0: none); false on timeout. */
static bool futex_wait(_Atomic int *addr, int val, double until) {
  struct timespec ts;
  double sec;
  if (until >= 0) {
    if (until > 1e12) until = 1e12;
    sec = floor(until);
    ts.tv_sec = (time_t)sec;
    ts.tv_nsec = (long)((until - sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) ts.tv_nsec = 999999999L;
  }
  if (syscall(SYS_futex, (int *)addr, FUTEX_WAIT_BITSET_PRIVATE, val,
              until >= 0 ? &ts : NULL, NULL, FUTEX_BITSET_MATCH_ANY) == 0)
    return true;
  return errno != ETIMEDOUT;  /* EAGAIN, EINTR: look again */
}
#define HAVE_FUTEX 1
#else
#define HAVE_FUTEX 0
static void futex_wake_all(_Atomic int *addr) { (void)addr; }
#endif

/* Each thread's waiter, made on its first wait.  When the thread ends,
** its waiter goes to 'spare' (a key's destructor) for the next new
** thread; waiters are never freed (see tt_waiter). */
static _Thread_local tt_waiter *self;
static pthread_mutex_t spare_mu = PTHREAD_MUTEX_INITIALIZER;
static tt_waiter *spare;
static pthread_key_t self_key;
static pthread_once_t self_once = PTHREAD_ONCE_INIT;

static void waiter_gone(void *p) {
  tt_waiter *w = p;
  self = NULL;  /* a later wait on this thread (another key's destructor)
                ** takes a waiter of its own */
  tt__lock(&spare_mu);
  w->next = spare;
  spare = w;
  tt__unlock(&spare_mu);
}

static void self_key_init(void) {
  TT_CHECK(pthread_key_create(&self_key, waiter_gone));
}

static tt_waiter *self_waiter(void) {
  tt_waiter *w = self;
  if (w == NULL) {
    TT_CHECK(pthread_once(&self_once, self_key_init));
    tt__lock(&spare_mu);
    w = spare;
    if (w != NULL) spare = w->next;
    tt__unlock(&spare_mu);
    if (w == NULL) {
      w = malloc(sizeof *w);
      if (w == NULL) tt__fatal("malloc (a thread's waiter)", ENOMEM);
      if (sem_init(&w->sem, 0, 0) != 0) tt__fatal("sem_init", errno);
      atomic_init(&w->sleeping, false);
    }
    w->next = NULL;
    TT_CHECK(pthread_setspecific(self_key, w));
    self = w;
  }
  atomic_store(&w->fired, -1);
  return w;
}

void tt__wake(tt_waiter *w) {
  /* The waiter sets 'sleeping' and then reads 'fired'; the claimer set
  ** 'fired' and reads 'sleeping' now: one of them sees the other.  A
  ** post the waiter no longer needs stays in the semaphore and makes a
  ** later wait look at 'fired' once more. */
  if (atomic_load(&w->sleeping) && sem_post(&w->sem) != 0)
    tt__fatal("sem_post", errno);
}

/* sleep_until waits on the waiter's semaphore until a post or the
** monotonic time 'until' (< 0: none); false on timeout. */
static bool sleep_until(tt_waiter *w, double until) {
  struct timespec ts;
  double sec;
  int r;
  if (until < 0) {
    r = sem_wait(&w->sem);
  } else {
    if (until > 1e12) until = 1e12;
    sec = floor(until);
    ts.tv_sec = (time_t)sec;
    ts.tv_nsec = (long)((until - sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) ts.tv_nsec = 999999999L;
    r = sem_clockwait(&w->sem, CLOCK_MONOTONIC, &ts);
  }
  if (r == 0) return true;
  if (errno == ETIMEDOUT) return false;
  if (errno != EINTR) tt__fatal("sem_wait", errno);
  return true;  /* a signal handler ran: look again */
}

bool tt__claim(tt_waiter *w, int idx) {
  int expect = -1;
  if (!atomic_compare_exchange_strong(&w->fired, &expect, idx)) return false;
  tt__wake(w);
  return true;
}

void tt__latch_init(tt_latch *l) {
  l->mu = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
  atomic_init(&l->set, 0);
  atomic_init(&l->nwait, 0);
  atomic_init(&l->fwait, 0);
  tt_list_init(&l->waiters);
}

void tt__latch_destroy(tt_latch *l) {
  TT_CHECK(pthread_mutex_destroy(&l->mu));
}

bool tt__latch_set(tt_latch *l) {
  tt_list *n;
  if (atomic_exchange(&l->set, 1) != 0) return false;
  if (atomic_load(&l->fwait) > 0) futex_wake_all(&l->set);
  /* Nobody parked: nobody to wake (see struct tt_latch). */
  if (atomic_load(&l->nwait) == 0) return true;
  tt__lock(&l->mu);
  while ((n = tt_list_shift(&l->waiters)) != NULL) {
    tt_wnode *wn = tt_container_of(n, tt_wnode, link);
    tt__claim(wn->w, wn->idx);
  }
  tt__unlock(&l->mu);
  return true;
}

bool tt_latch_is_set(tt_latch *l) { return atomic_load(&l->set) != 0; }

bool tt_latch_wait(tt_latch *l, double timeout) {
  tt_case c;
  memset(&c, 0, sizeof c);
  c.kind = TT_CASE_LATCH;
  c.latch = l;
  return tt_select(&c, 1, false, timeout) == 0;
}

/* }==================================================================== */


/* {====================================================================
** Timer waitables
** ===================================================================== */

struct tt_timer {
  tt_obj hdr;
  tt_latch latch;
  tt_tentry entry;       /* holds a reference to the timer while queued */
};

static void timer_free(tt_obj *o) {
  tt_timer *t = (tt_timer *)o;
  tt__latch_destroy(&t->latch);
  free(t);
}

static int timer_describe(tt_obj *o, char *buf, size_t n) {
  tt_timer *t = (tt_timer *)o;
  return snprintf(buf, n, "tether.Timer (%s)",
                  tt_latch_is_set(&t->latch) ? "fired" : "pending");
}

const tt_type tt_timer_type = {"tether.Timer", timer_free, timer_describe,
                                NULL};

static void timer_fire(tt_tentry *e) {
  tt_timer *t = tt_container_of(e, tt_timer, entry);
  tt__latch_set(&t->latch);
  tt_unref(t);
}

tt_timer *tt_after(double seconds) {
  tt_timer *t = calloc(1, sizeof *t);
  if (t == NULL) return NULL;
  tt_obj_init(&t->hdr, &tt_timer_type);
  tt__latch_init(&t->latch);
  t->entry.fire = timer_fire;
  if (!(seconds > 0)) {
    tt__latch_set(&t->latch);
    return t;
  }
  tt_ref(t);
  if (tt__timer_add(&t->entry, tt_now() + seconds) != TT_OK) {
    tt_unref(t);
    tt_unref(t);
    return NULL;
  }
  return t;
}

tt_latch *tt_timer_latch(tt_timer *t) { return &t->latch; }

/* }==================================================================== */


/* {====================================================================
** Select
** ===================================================================== */

/* How long a waiter spins before it sleeps: adaptive per thread, between
** SPIN_MIN and SPIN_MAX seconds (doubled when a spin saw the claim,
** halved when not), a few pauses and then a yield of the CPU at each
** look, as pool workers spin (pool.c). */
#define SPIN_MAX 50e-6
#define SPIN_MIN 2e-6
#define SPIN_PAUSES 64

static _Thread_local double tl_spin = SPIN_MAX;

/* spin_while watches '*p' while it holds 'val', until the spin budget or
** 'until' (< 0: none) runs out, if a spinning slot is free
** (tt__spin_enter): a waiter's claim ('fired' leaves -1), a latch ('set'
** leaves 0). */
static void spin_while(_Atomic int *p, int val, double until) {
  double end;
  unsigned i;
  if (!tt__spin_enter()) return;
  end = tt_now() + tl_spin;
  if (until >= 0 && until < end) end = until;
  for (i = 1;; i++) {
    if (atomic_load_explicit(p, memory_order_acquire) != val) {
      tl_spin = tl_spin * 2 > SPIN_MAX ? SPIN_MAX : tl_spin * 2;
      break;
    }
    if (i < SPIN_PAUSES)
      tt__cpu_relax();
    else
      sched_yield();
    if ((i & 7) == 0 && tt_now() >= end) {
      tl_spin = tl_spin / 2 < SPIN_MIN ? SPIN_MIN : tl_spin / 2;
      break;
    }
  }
  tt__spin_exit();
}

static int cmp_chan(const void *a, const void *b) {
  uintptr_t x = (uintptr_t)*(tt_chan *const *)a;
  uintptr_t y = (uintptr_t)*(tt_chan *const *)b;
  return x < y ? -1 : x > y;
}

/* sort_chans writes the distinct channels of the cases into 'order', in
** address order, and returns how many there are. */
static int sort_chans(tt_case *cases, int n, tt_chan **order) {
  int i, k = 0, m = 0;
  for (i = 0; i < n; i++)
    if (cases[i].kind == TT_CASE_RECV || cases[i].kind == TT_CASE_SEND)
      order[k++] = cases[i].chan;
  qsort(order, (size_t)k, sizeof *order, cmp_chan);
  for (i = 0; i < k; i++)
    if (m == 0 || order[m - 1] != order[i]) order[m++] = order[i];
  return m;
}

/* lock_all locks each channel of 'order' once, in address order (the
** order that keeps two selects over the same channels from
** deadlocking). */
static void lock_all(tt_chan **order, int m) {
  int i;
  for (i = 0; i < m; i++) tt__chan_lock(order[i]);
}

static void unlock_all(tt_chan **order, int m) {
  int i;
  for (i = m - 1; i >= 0; i--) tt__chan_unlock(order[i]);
}

/* pass1 tries every case once, in the order 'perm', with the channels
** locked; it returns the index of the case it completed, or -1. */
static int pass1(tt_case *cases, int n, const int *perm) {
  int i;
  for (i = 0; i < n; i++) {
    tt_case *c = &cases[perm[i]];
    switch (c->kind) {
      case TT_CASE_LATCH:
        if (c->latch != NULL && tt_latch_is_set(c->latch)) return perm[i];
        break;
      case TT_CASE_RECV:
      case TT_CASE_SEND:
        if (tt__chan_try(c->chan, c)) return perm[i];
        break;
      default:
        break;
    }
  }
  return -1;
}

/* park_latch registers node 'nd' on latch 'l', or claims the wake-up at
** once if the latch is set. */
static void park_latch(tt_latch *l, tt_wnode *nd, tt_waiter *w, int idx) {
  tt__lock(&l->mu);
  atomic_fetch_add(&l->nwait, 1);
  if (tt_latch_is_set(l))
    tt__claim(w, idx);
  else
    tt_list_push(&l->waiters, &nd->link);
  tt__unlock(&l->mu);
}

/* unpark_latch takes 'nd' off latch 'l'.  The node of the latch that
** woke the waiter ('fired') is off it already: the latch's setter took it
** off before the claim (or the park claimed at once and never put it
** on), and never looks at it after, so its lock is not needed. */
static void unpark_latch(tt_latch *l, tt_wnode *nd, bool fired) {
  if (fired) {
    atomic_fetch_sub(&l->nwait, 1);
    return;
  }
  tt__lock(&l->mu);
  tt_list_remove(&nd->link);
  atomic_fetch_sub(&l->nwait, 1);
  tt__unlock(&l->mu);
}

/* look_for_cycles takes the cycle lock and walks the items of the send
** cases that hold objects, when there are any; it returns false (the lock
** released) if an item reaches its own channel or memory ran out.
** '*looked' says whether the lock is held and 'w' must be ended. */
static bool look_for_cycles(tt_case *cases, int n, tt__walk *w,
                            bool *looked) {
  int i;
  *looked = false;
  for (i = 0; i < n; i++) {
    tt_case *c = &cases[i];
    bool found = false;
    if (c->kind != TT_CASE_SEND || !tt__send_looks(c->item)) continue;
    if (!*looked) {
      tt__cycle_lock();
      tt__walk_init(w);
      *looked = true;
    }
    if (tt__walk_reaches(w, c->item, (tt_obj *)c->chan, &found) != TT_OK ||
        found) {
      tt__cycle_unlock();
      tt__walk_end(w);
      *looked = false;
      return false;
    }
  }
  return true;
}

/* wait_latch_alone waits for latch 'l', the only case that can fire, by
** sleeping on its 'set' (see struct tt_latch) after a spin: 'idx' once it
** is set, or TT_SELECT_TIMEOUT at 'until' (< 0: never). */
static int wait_latch_alone(tt_latch *l, int idx, double until) {
#if HAVE_FUTEX
  bool timed_out = false;
  spin_while(&l->set, 0, until);
  if (tt_latch_is_set(l)) return idx;
  atomic_fetch_add(&l->fwait, 1);
  while (!tt_latch_is_set(l) && !timed_out)
    timed_out = !futex_wait(&l->set, 0, until);
  atomic_fetch_sub(&l->fwait, 1);
  return tt_latch_is_set(l) ? idx : TT_SELECT_TIMEOUT;
#else
  (void)l;
  (void)idx;
  (void)until;
  return TT_SELECT_INVALID;
#endif
}

/* alone returns the index of the one latch case of 'cases' when every
** other case is nil, or -1. */
static int alone(tt_case *cases, int n) {
  int i, found = -1;
  for (i = 0; i < n; i++) {
    if (cases[i].kind == TT_CASE_NIL ||
        (cases[i].kind == TT_CASE_LATCH && cases[i].latch == NULL))
      continue;
    if (cases[i].kind != TT_CASE_LATCH || found >= 0) return -1;
    found = i;
  }
  return found;
}

int tt_select(tt_case *cases, int n, bool has_default, double timeout) {
  tt_chan *order[MAX_CASES];
  int perm[MAX_CASES];
  tt_wnode nodes[MAX_CASES + 1];
  tt_waiter *w;
  tt__walk walk;
  tt_latch *ilatch = NULL;   /* the interrupt latch, in a section */
  tt_obj *ihold = NULL;
  double until;
  int i, m, fired;
  bool looked;

  if (n < 0 || n > MAX_CASES) return TT_SELECT_INVALID;
  until = tt__deadline(timeout);
  /* A random poll order (Fisher-Yates) makes the choice among ready cases
  ** fair, as in Go. */
  for (i = 0; i < n; i++) perm[i] = i;
  for (i = n - 1; i > 0; i--) {
    int j = (int)(tt__random() % (uint64_t)(i + 1)), t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  m = sort_chans(cases, n, order);
  /* In an interruptible section, the interrupt latch is taken first,
  ** with no lock held (taking it may install the SIGINT handler): an
  ** interrupt after this point sets that latch, and one before it is
  ** pending. */
  if (tt__interrupt_active()) {
    ilatch = tt__interrupt_latch(&ihold);
    if (tt__interrupt_pending()) {
      tt_unref(ihold);
      return TT_SELECT_INTERRUPTED;
    }
  }
  /* A wait for one latch alone, outside an interruptible section (a
  ** thousand singleflight callers, a handle's waiter), sleeps on the
  ** latch itself. */
  if (HAVE_FUTEX && ilatch == NULL && !has_default && timeout != 0 &&
      (i = alone(cases, n)) >= 0) {
    if (tt_latch_is_set(cases[i].latch)) return i;
    return wait_latch_alone(cases[i].latch, i, until);
  }
  /* Sends of items that hold objects keep the cycle lock until their
  ** items are in a buffer or parked, where the next look sees them. */
  if (!look_for_cycles(cases, n, &walk, &looked)) {
    tt_unref(ihold);
    return TT_SELECT_INVALID;
  }

  /* Pass 1: is anything ready now? */
  lock_all(order, m);
  fired = pass1(cases, n, perm);
  if (fired >= 0 || has_default || timeout == 0) {
    if (fired < 0) fired = has_default ? TT_SELECT_DEFAULT : TT_SELECT_TIMEOUT;
    unlock_all(order, m);
    goto done;
  }

  /* Pass 2: park a node on every waitable. */
  w = self_waiter();
  for (i = 0; i < n; i++) {
    tt_case *c = &cases[i];
    tt_wnode *nd = &nodes[i];
    tt_list_init(&nd->link);
    nd->w = w;
    nd->idx = i;
    nd->c = c;
    if (c->kind == TT_CASE_RECV || c->kind == TT_CASE_SEND)
      tt__chan_park(c->chan, nd);
    else if (c->kind == TT_CASE_LATCH && c->latch != NULL)
      park_latch(c->latch, nd, w, i);
  }
  if (ilatch != NULL) {
    tt_list_init(&nodes[n].link);
    nodes[n].w = w;
    nodes[n].idx = n;
    nodes[n].c = NULL;
    park_latch(ilatch, &nodes[n], w, n);
  }
  unlock_all(order, m);
  if (looked) {
    tt__cycle_unlock();
    tt__walk_end(&walk);
    looked = false;
  }

  /* Sleep until some waitable claims us or the time runs out; a claim
  ** that comes within a few microseconds finds us spinning and costs
  ** neither side a trip through the kernel. */
  spin_while(&w->fired, -1, until);
  atomic_store(&w->sleeping, true);
  while (atomic_load(&w->fired) == -1) {
    if (!sleep_until(w, until)) {
      int expect = -1;
      atomic_compare_exchange_strong(&w->fired, &expect, TT_SELECT_TIMEOUT);
    }
  }
  atomic_store(&w->sleeping, false);
  fired = atomic_load(&w->fired);

  /* Unpark from everything.  Taking each waitable's lock again also waits
  ** out a claimer that is still signaling us. */
  lock_all(order, m);
  for (i = 0; i < n; i++)
    if (cases[i].kind == TT_CASE_RECV || cases[i].kind == TT_CASE_SEND)
      tt__chan_unpark(cases[i].chan, &nodes[i]);
  unlock_all(order, m);
  for (i = 0; i < n; i++) {
    tt_case *c = &cases[i];
    if (c->kind == TT_CASE_LATCH && c->latch != NULL)
      unpark_latch(c->latch, &nodes[i], fired == i);
  }
  if (ilatch != NULL) unpark_latch(ilatch, &nodes[n], fired == n);
  if (fired == n && ilatch != NULL) {
    tt__interrupt_hit();
    fired = TT_SELECT_INTERRUPTED;
  }
done:
  if (looked) {
    tt__cycle_unlock();
    tt__walk_end(&walk);
  }
  tt_unref(ihold);
  return fired;
}

int tt_sleep(double seconds, tt_ctx *ctx) {
  tt_case c;
  int r;
  memset(&c, 0, sizeof c);
  c.kind = TT_CASE_LATCH;
  c.latch = ctx != NULL ? tt_ctx_done(ctx) : NULL;
  if (c.latch == NULL) c.kind = TT_CASE_NIL;
  if (!(seconds > 0)) seconds = 0;
  r = tt_select(&c, 1, false, seconds);
  if (r == TT_SELECT_INTERRUPTED) return TT_EINTR;
  return r == 0 ? tt_ctx_err(ctx) : TT_OK;
}

/* }==================================================================== */
