/*
** internal.h -- what the engine's files share and users never see:
** an intrusive list, checked pthread calls, the waiter and latch that
** every waitable is built on, walks through what objects hold, and the
** timer thread's heap entries.
**
** Lock order, engine-wide (a lock may be taken while holding those to
** its left, never the reverse):
**
**   pool.mu -> cycle_mu -> chan.mu (by address) -> latch.mu / ctx.mu
**                                                   -> timer mu
**
** (A waiter has no lock: a claim is a compare-and-swap and a semaphore
** post.)  pool.c's 'spare_mu' and wait.c's 'spare_mu' are leaves.
**
** ctx.c's 'af_mu' (after_func registrations) is taken after a context's
** 'mu' and takes nothing else.  'cycle_mu' (obj.c) is held by a send of
** an item that holds objects while it looks for a cycle and inserts the
** item; the look takes one channel's 'mu' at a time.
**
** signal.c's 'I_mu' (the current interrupt latch) is a leaf, taken by
** tt_select before it locks any channel; 'S_mu' (signal registrations) is
** released before the engine calls it leads to (tt_cancel).  exit.c's
** 'X_mu' (pools drained at exit) is a leaf.  pool.c's idle latch is set
** under the pool's 'mu', like its drained latch.
**
** http.c: a request's 'mu' -> its server's 'mu' or 'wmu' (the watcher's;
** never both) -> libmicrohttpd's own locks (suspend and resume are
** called under the request's lock); a server's 'mu' -> the timer heap's
** (its keeper deadline); a
** server's 'obs_mu' and 'close_mu' are taken with no other lock of
** http.c held.  A writer waiting for room waits on the request's 'cv'
** under its 'mu'.
**
** Observability (metrics.c, oplog.c, log.c, trace.c):
**
**   metrics reg_mu -> pool.mu -> a metric name's tmu
**   pool.obs_mu -> log sink_lock (read) -> chan.mu
**
** A pool's queued observers run under its 'obs_mu' and may log (the
** sink lock, then a channel sink's channel) or send to a channel; its
** immediate observers (metrics) run under its 'mu' and take only a
** name's 'tmu', a leaf.  The metrics text takes 'reg_mu', then each live
** pool's 'mu' for its gauges.  trace.c's 'tmu' and a span's 'mu' are
** leaves; the exporter calls libcurl and writes files with no lock held.
** HTTP metrics are immediate HTTP observers and take no lock.  Store
** metrics: metrics.c's 'st_mu' (the attached stores) is a leaf, taken
** under 'reg_mu' while the text is made and alone elsewhere; the stores'
** figures are asked for before 'reg_mu' is taken (a synchronous store
** call waits for the store's thread, whose callbacks may free a pool,
** whose release takes 'reg_mu').
**
** A durable store's 'mu' (store.c: its request queue) is a leaf: it may
** be taken under a pool's 'mu' (a drainer's hook queues an ack as an op
** resolves) and takes nothing.  The store calls back (a spill committed)
** from its thread or an executor thread with no store lock held; the
** callback takes the pool's 'mu'.  Waits: the store's thread on its
** 'cv', callers of synchronous store calls on its 'done_cv', both under
** the store's 'mu'.
**
** A context's 'mu' is taken for one context at a time, except that
** cancel propagation takes a child's lock after releasing the parent's
** (it copies the child list first), so contexts never nest locks.
**
** Condition waits.  A thread waiting on a condition variable releases
** that variable's mutex only: every other lock it holds stays held for
** the whole wait, and joining a thread is a wait too.  So a thread waits
** (or joins) holding no engine lock but the condition's own, and never
** waits for something that only a thread waiting for it can do.  The
** waits of the engine:
**
**   waiter.sem (no lock)           tt_select; nothing else held
**   timer thread cv under timer mu the timer thread, between deadlines;
**                                  adding a timer never waits
**   E.cv, E.gone under E.mu        executor threads; tt__exec_shutdown
**   class cv under pool.mu         pool workers
**   ev_cv under pool.mu            flush_events (drain) for a delivery
**   pthread_join                   tt_shutdown (executor and timer
**                                  threads), pool frees (workers): with
**                                  no lock held, and never of itself
**
** A submitter with 'wait' (pool.c) and a tt_group_go at the limit
** (group.c) sleep on latches of their own, in tt_select, with no lock
** held: the pool's or group's lock is released first, and whoever frees
** room sets the first waiter's latch under that lock.
*/
#ifndef tether_internal_h
#define tether_internal_h

#include <pthread.h>
#include <semaphore.h>
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

/* tt__signal_atfork registers, once, the fork handler that gives a
** child forked by an engine thread the default signal mask (signal.c). */
void tt__signal_atfork(void);

/* tt__signal_shutdown stops the signal thread if no handler of tether's
** is installed (tt_shutdown). */
void tt__signal_shutdown(void);

/* tt__pool_end_threads joins the workers of a drained pool (they end
** once it is drained), or detaches them while abandoned ops still run, so
** that no finished thread is left unjoined at exit (pool.c; only while
** the caller holds a reference, never with pool_free running). */
void tt__pool_end_threads(tt_pool *p);

/* tt__pool_spill_queued writes the ops of 'p' still queued (or waiting
** for a retry) that keep a spill form (named ops with plain-data
** arguments, submitted to a pool with an overflow store) to that store,
** as a full queue would have, and returns how many it handed to the
** store: each counts as queued until the store answers, then as
** 'spilled' (TT_EV_SPILLED, its handle resolved TT_ESPILLED) or, if the
** store failed or spill_timeout ran out, as 'failed' (TT_ESTORE).  The
** exit drain calls it once its time ran out, before tt_pool_abandon
** (pool.c). */
size_t tt__pool_spill_queued(tt_pool *p);

/* tt__pool_wait_spills waits until no op of 'p' waits for its store's
** answer: at most the pool's spill_timeout (and a second more), since
** every spill has ended by then; false if time ran out. */
bool tt__pool_wait_spills(tt_pool *p);

/* tt__thread_exit_hook runs the embedder's exit hook on this thread. */
void tt__thread_exit_hook(void);

/* tt__deadline turns a relative timeout (< 0: none) into an absolute time
** on tt_now's clock (< 0: none). */
static inline double tt__deadline(double timeout) {
  return timeout < 0 ? -1.0 : tt_now() + timeout;
}

/* tt__detached makes with_timeout(without_cancel(parent), timeout) (a
** timeout <= 0: with_cancel(without_cancel(parent))) as one context
** instead of two: it keeps the parent's values, and neither the parent's
** cancellation nor its deadline reaches it.  NULL when out of memory.
** Pool attempts and flight runs are made this way. */
tt_ctx *tt__detached(tt_ctx *parent, double timeout);

/* tt__detached is also made in steps, so that a pool's worker can
** allocate the context before it knows its op and finish it under the
** pool's lock as it takes one: tt__detached_blank allocates it (NULL when
** out of memory), tt__detached_bind gives it its parent and its deadline
** (allocating nothing, taking no lock, canceling nothing), and
** tt__detached_arm, called without the pool's lock, queues that deadline
** on the timer thread (nothing without a timeout).  A blank never bound
** may simply be released. */
tt_ctx *tt__detached_blank(void);
void tt__detached_bind(tt_ctx *c, tt_ctx *parent, double timeout);
void tt__detached_arm(tt_ctx *c);

/* tt__detached_reuse turns a context made by tt__detached (or bound from
** a blank) back into a blank, when the caller holds its only reference
** and it was never canceled nor given an after_func: true if it did
** (call it where the context would be canceled and released, with no
** lock held: it releases the parent). */
bool tt__detached_reuse(tt_ctx *c);

/* tt__ctx_end ends 'c' once the work it was made for is over, as Go's
** deferred cancel does (TT_CANCELED), except that a context with a
** deadline of its own that has passed ends as its timer would a moment
** later: with TT_DEADLINE and the deadline's cause.  What the work left
** holding the context (a child, a task it started) then sees the same
** error whether the timer thread woke before the work's end or after:
** a task stopped by its deadline (an interrupt hook reads the clock
** itself) is not reported to them as canceled. */
void tt__ctx_end(tt_ctx *c);

/* tt__after_func_now is tt_after_func whose function runs on the thread
** that cancels the context (or registers it, when it is done already),
** right after the cancel and with no lock held, instead of on an executor
** thread: for the engine's own functions that must act at once and never
** block (a pool's shutdown).  The canceler may be any thread: the timer
** thread, the signal thread, a user's. */
tt_afterfunc *tt__after_func_now(tt_ctx *c, void (*fn)(void *), void *arg,
                                 void (*drop)(void *));

/* tt__random returns a thread-local pseudo-random 64-bit number
** (xorshift; not for secrets). */
uint64_t tt__random(void);

char *tt__strdup(const char *s);

/* tt__set_msg formats a message into the caller's buffer 'msg' of 'len'
** bytes (truncated to fit), for the engine calls that explain a refusal
** in words (text.c); a NULL or empty buffer is left alone. */
void tt__set_msg(char *msg, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* tt__buf_room makes room for 'n' more bytes (and the NUL) at the end of
** 'b' and returns where they go, or NULL ('failed' set): a writer that
** knows a bound on what it writes fills the room, then sets 'len' and
** the NUL itself (text.c). */
char *tt__buf_room(tt_buf *b, size_t n);

/* tt__metrics_store_closed takes a store out of the metrics as it closes
** (metrics.c; it never waits). */
void tt__metrics_store_closed(const tt_store *s);

/* digest.c: tt__sha256 writes the SHA-256 of 'len' bytes into 'out';
** tt__base64 writes the base64 of 'len' bytes (with padding) and a NUL
** into 'out' (4 * ((len + 2) / 3) + 1 bytes) and returns its length;
** tt__unbase64 decodes 'len' characters into at most 'max' bytes and
** returns how many, or -1 for malformed input or too little room. */
void tt__sha256(const void *data, size_t len, unsigned char out[32]);
size_t tt__base64(const void *data, size_t len, char *out);
long tt__unbase64(const char *s, size_t len, void *out, size_t max);

/* }==================================================================== */


/* {====================================================================
** Spinning before parking
** ===================================================================== */

/* A thread about to park (a pool worker with no work, a waiter) may spin
** for a few microseconds first: a handoff that arrives meanwhile then
** costs no futex wake and no context switch on either side.  A spinner
** pauses a few times and then yields the CPU at each look, so that the
** thread it waits for runs even when it shares the spinner's CPU (with 2
** CPUs and a woken thread placed next to its waker, it often does); at
** most as many threads as there are CPUs spin at once, process-wide, and
** none on one CPU.  tt__spin_enter claims a spinning slot (false: park at
** once); tt__spin_exit gives it back. */
bool tt__spin_enter(void);
void tt__spin_exit(void);

/* tt__ncpu is the number of online CPUs, read once. */
int tt__ncpu(void);

/* tt__cpu_relax tells the CPU that this is a spin loop. */
static inline void tt__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

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
** (with a compare-and-swap) owns the wake-up, and must then wake it
** (tt__wake) while still holding the lock of the waitable that fired
** (for a channel, after the handoff).  A waiter first spins, watching
** 'fired', and sets 'sleeping' only before it sleeps on its semaphore
** 'sem': a claim that finds it spinning costs nothing more, and one that
** finds it asleep one post (no lock, so the woken thread finds nothing
** held).  Waiters are never freed (a thread's goes to a list for the next
** thread when it ends), so a wake-up that comes late reaches a live
** waiter and is at worst a spurious wake-up of its next wait, which looks
** at 'fired' again. */
typedef struct tt_waiter {
  sem_t sem;
  _Atomic int fired;
  _Atomic bool sleeping;   /* set before waiting on 'sem' */
  struct tt_waiter *next;  /* on the list of waiters of ended threads */
} tt_waiter;

/* A tt_wnode is a waiter's registration on one waitable (Go's sudog). */
typedef struct tt_wnode {
  tt_list link;
  tt_waiter *w;
  int idx;
  tt_case *c;      /* for channel cases: where the item goes or comes from */
} tt_wnode;

/* Interrupts, for tt_select (signal.c).  tt__interrupt_active is true
** inside an interruptible section of the calling thread;
** tt__interrupt_pending is true (and marks the section interrupted) once
** an interrupt came since the section began; tt__interrupt_latch returns
** the latch the next interrupt sets, '*hold' a reference that keeps it
** alive (NULL when out of memory), after installing the SIGINT handler if
** it is due. */
bool tt__interrupt_active(void);
bool tt__interrupt_pending(void);
void tt__interrupt_hit(void);
tt_latch *tt__interrupt_latch(tt_obj **hold);

/* tt__claim tries to wake 'w' for case 'idx'; true if this call did. */
bool tt__claim(tt_waiter *w, int idx);

/* tt__wake wakes 'w', claimed (its 'fired' set) by the caller, if it
** sleeps. */
void tt__wake(tt_waiter *w);

/* A latch is set without its lock when nobody waits: 'nwait' counts the
** parked waiters, raised under 'mu' before a waiter looks at 'set', and
** the setter reads it after setting 'set' (both sequentially
** consistent), so either the waiter sees the latch set or the setter sees
** the waiter and takes 'mu' to wake it.  A select that waits for this
** latch alone sleeps on 'set' itself (a futex, on Linux) and counts
** itself in 'fwait' the same way: the setter then wakes all of them with
** one call, however many they are. */
struct tt_latch {
  pthread_mutex_t mu;     /* protects 'waiters' */
  _Atomic int set;        /* 0 until the latch fires, then 1 forever */
  _Atomic int nwait;      /* waiters registered and not yet gone */
  _Atomic int fwait;      /* waiters asleep on 'set', or about to be */
  tt_list waiters;        /* of tt_wnode, guarded by 'mu' */
};

void tt__latch_init(tt_latch *l);
void tt__latch_destroy(tt_latch *l);

/* tt__latch_set fires the latch and wakes every registered waiter; true if
** this call set it (the first one). */
bool tt__latch_set(tt_latch *l);

/* }==================================================================== */


/* {====================================================================
** Walks through what objects hold (obj.c)
** ===================================================================== */

/* A tt__walk searches the objects reachable from one object through the
** types' 'traverse'.  Each object it meets keeps a reference until
** tt__walk_end, which may free objects: call it with no engine lock
** held.  Several searches may share one walk (one per send case). */
typedef struct tt__walk {
  tt_obj **seen;           /* every object met, one reference each */
  size_t nseen, seencap;
  tt_obj **set;            /* the current search's objects (hash set) */
  size_t setlen, setcap;
  size_t from;             /* where the current search starts in 'seen' */
  tt_obj *target;
  bool found, nomem;
  tt_obj *inl_seen[32];
  tt_obj *inl_set[64];
} tt__walk;

void tt__walk_init(tt__walk *w);

/* tt__walk_reaches searches from 'from' for 'target' (found also when
** 'from' is 'target'); it returns TT_OK with '*found' set, or TT_ENOMEM. */
int tt__walk_reaches(tt__walk *w, tt_obj *from, tt_obj *target,
                     bool *found);

void tt__walk_end(tt__walk *w);

/* tt__holds_any is true when 'o' holds at least one object now. */
bool tt__holds_any(tt_obj *o);

/* The lock under which sends of object-holding items look for cycles. */
void tt__cycle_lock(void);
void tt__cycle_unlock(void);

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
** Spans of engine work (trace.c)
** ===================================================================== */

/* tt__span_work starts a span for work the engine does for a caller (a
** pool attempt, a saga step), with '*child' the context for that work,
** or returns NULL with '*child' NULL at the cost of one atomic load when
** tracing is off.  'detached' links the parent span too. */
tt_span *tt__span_work(tt_ctx *ctx, const char *name, bool detached,
                       const tt_field *attrs, size_t nattrs,
                       tt_ctx **child);

/* tt__span_finish ends a span of work with its result (status ERROR and
** the error's message unless rc is TT_OK) and drops the reference;
** NULL is ignored. */
void tt__span_finish(tt_span *s, int rc, tt_obj *err);

/* tt__pool_fn_returned is the time (tt_now) at which the function of
** the attempt this worker ran last returned, 0 on other threads
** (pool.c): a pool hook's 'end' runs right after, and the span of the
** attempt ends then, without reading the clock again. */
double tt__pool_fn_returned(void);

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

/* tt__send_looks tells whether a send of 'item' must look for a
** reference cycle (under the cycle lock) before it inserts the item. */
bool tt__send_looks(tt_obj *item);

/* }==================================================================== */


/* {====================================================================
** Introspection for the engine's tests
** ===================================================================== */

/* tt__flight_waiters counts the callers waiting now for the run in
** flight for 'key' (0 when none is), so that a test can tell when every
** caller has joined a run. */
int tt__flight_waiters(tt_flight *sf, const char *key, size_t keylen);

/* }==================================================================== */
#endif
