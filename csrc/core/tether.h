/*
** tether.h -- the public interface of the tether engine.
**
** tether gives programs Go-style contexts whose cancellation can be cut
** (tt_without_cancel) and bounded again (tt_with_timeout), and the
** machinery for detached work built on them: an elastic executor, worker
** pools with retries, dead letters, quotas and priority tiers, groups,
** singleflight and sagas.
**
** This header is plain C11 and pthreads.  It never mentions Lua: the Lua
** binding in csrc/lua is one user of it, a C program linking libtether.a
** is another.
**
** Conventions.
** - Every object starts with a 'tt_obj' header and is reference counted.
**   A function that returns an object returns a new reference; the caller
**   releases it with 'tt_unref'.  Functions that take an object borrow it
**   unless they say they take ownership.
** - Values the engine carries without understanding them (context values,
**   causes, channel items, task results and errors) are objects too:
**   the embedder defines their 'tt_type'.
** - Functions that can fail at run time return an int error code from the
**   TT_E* list below (0 is success).  Misuse (a NULL context, a negative
**   capacity) is the caller's bug and is reported as TT_EINVAL where it is
**   cheap to detect.
** - Times are seconds as doubles on the monotonic clock of 'tt_now'.
**   A negative timeout means "no timeout".
*/
#ifndef tether_h
#define tether_h

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* {====================================================================
** Errors
** ===================================================================== */

enum {
  TT_OK = 0,
  TT_CANCELED,      /* "context canceled" */
  TT_DEADLINE,      /* "context deadline exceeded" */
  TT_ENOMEM,        /* out of memory */
  TT_EINVAL,        /* invalid argument */
  TT_ECLOSED,       /* the channel or pool is closed */
  TT_EQUEUE_FULL,   /* the pool's queue is full */
  TT_EQUOTA,        /* the tenant is over its quota */
  TT_ETIMEOUT,      /* a bounded wait ran out */
  TT_EFAILED,       /* a task failed (its error object says why) */
  TT_ESTOPPED,      /* a task was stopped before it ran */
  TT_ETHREAD,       /* a thread could not be created */
  TT_ESPILLED,      /* the op went to the pool's durable store */
  TT_ESTORE,        /* the durable store could not take the op in time */
  TT_EABANDONED,    /* the op was still queued or running at exit */
  TT_ESIGNAL,       /* a signal canceled the context */
  TT_ECLIENT_GONE,  /* the HTTP client hung up before the response */
  TT_NERRORS
};

/* tt_strerror returns the message of an error code, Go's words for the
** two context errors. */
const char *tt_strerror(int code);

/* tt_errname returns the short machine name of an error code, as found
** in 'err.code' on the Lua side: "canceled", "deadline_exceeded",
** "queue_full", "quota_exceeded", "closed", ... */
const char *tt_errname(int code);

/* }==================================================================== */


/* {====================================================================
** Objects
** ===================================================================== */

typedef struct tt_obj tt_obj;
typedef struct tt_ctx tt_ctx;

/* A tt_type describes a kind of object: its name (the Lua binding uses it
** as the metatable name, e.g. "tether.Context"), how to free it once the
** last reference goes, and optionally how to describe it in one line of
** text for logs.  'describe' writes at most 'n' bytes including the
** terminating zero and returns the length it wanted, as snprintf does. */
typedef struct tt_type {
  const char *name;
  void (*free)(tt_obj *o);
  int (*describe)(tt_obj *o, char *buf, size_t n);
} tt_type;

/* Every object begins with this header.  'refs' is the reference count;
** a static object (the background context, the error sentinels) has
** 'refs' below zero and is never freed. */
struct tt_obj {
  _Atomic long refs;
  const tt_type *type;
};

/* tt_obj_init sets up the header of a newly allocated object with one
** reference. */
void tt_obj_init(tt_obj *o, const tt_type *type);

/* tt_ref adds a reference to 'o' (any tether object; NULL is allowed and
** ignored) and returns it. */
void *tt_ref(void *o);

/* tt_unref drops a reference; the last one frees the object.  NULL is
** ignored. */
void tt_unref(void *o);

/* tt_ref_if_live adds a reference only if the count is still above zero
** (the object is not being freed).  It is how weak lists (a parent's list
** of children) take hold of an entry safely. */
bool tt_ref_if_live(void *o);

/* tt_describe writes a one-line description of any object, using its
** type's 'describe' or else its type name. */
int tt_describe(void *o, char *buf, size_t n);

/* A tt_error is an error value: a code from the list above, a message,
** and an optional cause (any object).  The two context errors are static
** sentinels, so they compare equal by pointer. */
typedef struct tt_error {
  tt_obj hdr;
  int code;
  char *message;
  tt_obj *cause;
  char *traceback;         /* may be NULL: where a task failed */
  tt_obj *value;           /* may be NULL: the value a task raised */
} tt_error;

extern const tt_type tt_error_type;
extern tt_error tt_canceled;   /* "context canceled" */
extern tt_error tt_deadline;   /* "context deadline exceeded" */

/* tt_error_new makes an error object; 'message' is copied (NULL uses
** tt_strerror(code)); 'cause' is referenced.  NULL when out of memory. */
tt_error *tt_error_new(int code, const char *message, tt_obj *cause);

/* tt_error_for returns a new reference to the sentinel of TT_CANCELED or
** TT_DEADLINE, or a fresh error object for other codes. */
tt_error *tt_error_for(int code);

/* A tt_bytes is the simplest value: a copy of a byte string.  C users
** may use it for context values, causes and channel items. */
typedef struct tt_bytes {
  tt_obj hdr;
  size_t len;
  char data[];
} tt_bytes;

extern const tt_type tt_bytes_type;
tt_bytes *tt_bytes_new(const void *data, size_t len);

/* }==================================================================== */


/* {====================================================================
** Time and the timer thread
** ===================================================================== */

/* tt_now returns seconds on a monotonic clock with an arbitrary origin. */
double tt_now(void);

/* tt_wall returns seconds since the Unix epoch (for logs only). */
double tt_wall(void);

/* tt_shutdown stops the engine's idle threads (idle executor threads, and
** the timer thread when no deadline is pending: a pending one must still
** fire) and waits for them.  Call it at the end of a C program that wants
** a clean exit under leak checkers; work still running is waited for.
** The engine restarts its threads on the next use. */
void tt_shutdown(void);

/* }==================================================================== */


/* {====================================================================
** Waiting
** ===================================================================== */

/* A tt_latch is a one-shot event: it starts unset and is set once.  The
** engine's waitables (a context's done, a timer, a task handle, a group,
** a drain) all contain one, so one select serves them all. */
typedef struct tt_latch tt_latch;

/* A timer waitable: set once its deadline passes.  tt_after(s) makes
** one that fires 's' seconds from now. */
typedef struct tt_timer tt_timer;
extern const tt_type tt_timer_type;
tt_timer *tt_after(double seconds);
tt_latch *tt_timer_latch(tt_timer *t);

/* A channel of objects, buffered (cap > 0) or unbuffered (cap == 0).  A
** NULL item is allowed.  Any thread may use it. */
typedef struct tt_chan tt_chan;
extern const tt_type tt_chan_type;

enum {
  TT_CASE_NIL = 0,  /* never fires, like Go's nil channel */
  TT_CASE_LATCH,    /* fires once 'latch' is set */
  TT_CASE_RECV,     /* receive from 'chan' */
  TT_CASE_SEND      /* send 'item' on 'chan' */
};

/* A tt_case is one arm of tt_select.  For TT_CASE_SEND, 'item' is the
** object to send: on success the channel owns that reference; otherwise
** the caller keeps it.  For TT_CASE_RECV, on success 'item' holds the
** received reference (or NULL) and 'ok' is false if the channel was closed
** and empty.  A send that fires because the channel is closed sets
** 'closed'. */
typedef struct tt_case {
  int kind;
  tt_latch *latch;
  tt_chan *chan;
  tt_obj *item;
  bool ok;
  bool closed;
} tt_case;

enum { TT_SELECT_DEFAULT = -1, TT_SELECT_TIMEOUT = -2 };

/* tt_select waits until one of 'n' cases can proceed and returns its index
** (0-based), choosing at random among several ready ones.  With
** 'has_default' it never blocks and returns TT_SELECT_DEFAULT if nothing is
** ready.  'timeout' < 0 waits forever; otherwise TT_SELECT_TIMEOUT is
** returned when it runs out.  It returns -3 (TT_EINVAL sense) for n > 64.
** The calling thread blocks on a condition variable; nothing polls. */
int tt_select(tt_case *cases, int n, bool has_default, double timeout);

/* tt_latch_is_set reports whether the latch has fired. */
bool tt_latch_is_set(tt_latch *l);

/* tt_latch_wait waits for the latch, at most 'timeout' seconds (< 0:
** forever) and returns true once set. */
bool tt_latch_wait(tt_latch *l, double timeout);

/* tt_sleep sleeps 'seconds', returning early with the context's error
** code when 'ctx' (may be NULL) is done first; else TT_OK. */
int tt_sleep(double seconds, tt_ctx *ctx);

/* Channels. */
tt_chan *tt_chan_new(size_t cap);
size_t tt_chan_len(tt_chan *c);
size_t tt_chan_cap(tt_chan *c);
bool tt_chan_closed(tt_chan *c);

/* tt_chan_close closes the channel: waiting receivers get ok = false once
** the buffer is empty, waiting and later senders get TT_ECLOSED.  Closing
** twice returns TT_ECLOSED. */
int tt_chan_close(tt_chan *c);

/* tt_chan_send sends 'item' (ownership passes to the channel on TT_OK).
** It waits while there is no room, until 'ctx' (may be NULL) is done
** (returns its error code) or 'timeout' runs out (TT_ETIMEOUT).  Sending
** on a closed channel returns TT_ECLOSED. */
int tt_chan_send(tt_chan *c, tt_obj *item, tt_ctx *ctx,
                 double timeout);

/* tt_chan_recv receives into '*item' (a new reference or NULL).  It returns
** TT_OK, TT_ECLOSED when the channel is closed and empty, the context's
** error code, or TT_ETIMEOUT. */
int tt_chan_recv(tt_chan *c, tt_obj **item, tt_ctx *ctx,
                 double timeout);

/* tt_chan_try_send and tt_chan_try_recv never wait.  try_send returns
** TT_OK, TT_ECLOSED or TT_EQUEUE_FULL (no room, no receiver waiting);
** try_recv returns TT_OK, TT_ECLOSED (closed and empty) or TT_ETIMEOUT
** (nothing there). */
int tt_chan_try_send(tt_chan *c, tt_obj *item);
int tt_chan_try_recv(tt_chan *c, tt_obj **item);

/* }==================================================================== */


/* {====================================================================
** Contexts
** ===================================================================== */

/* A tt_ctx carries a deadline, a cancellation signal and values across
** API boundaries, with the semantics of Go's context package (1.21+).
** Contexts are immutable once made and safe to use from any thread. */
extern const tt_type tt_ctx_type;

/* A key of a context value: either a byte string ('obj' == NULL; compared
** by content) or an object ('obj' != NULL; compared by identity, and a
** string never matches an object key). */
typedef struct tt_key {
  tt_obj *obj;
  const char *str;
  size_t len;
} tt_key;

/* tt_background returns the root context: never canceled, no values, no
** deadline.  tt_todo is the same, under another name for code that has not
** decided which context to use.  Both are static. */
tt_ctx *tt_background(void);
tt_ctx *tt_todo(void);

/* tt_with_cancel returns a child of 'parent' that is canceled by
** tt_cancel, or when the parent is.  If the parent is already done, the
** child is done at creation with the parent's error and cause.  NULL when
** out of memory. */
tt_ctx *tt_with_cancel(tt_ctx *parent);

/* tt_with_deadline returns a child canceled at 'deadline' (on tt_now's
** clock) with TT_DEADLINE, or earlier by tt_cancel or by its parent.  If
** the parent's deadline is earlier, the child just follows the parent.
** 'cause' (may be NULL) is the cause reported when the deadline passes,
** and only then.  A deadline already past gives a done child. */
tt_ctx *tt_with_deadline(tt_ctx *parent, double deadline, tt_obj *cause);

/* tt_with_timeout is tt_with_deadline(parent, tt_now() + seconds, cause). */
tt_ctx *tt_with_timeout(tt_ctx *parent, double seconds, tt_obj *cause);

/* tt_with_value returns a child that holds 'value' (may be NULL: then the
** key is shadowed by an explicit absence) under 'key'.  The key's string is
** copied, its object and the value are referenced. */
tt_ctx *tt_with_value(tt_ctx *parent, const tt_key *key, tt_obj *value);

/* tt_without_cancel returns a child that keeps the parent's values but is
** never canceled: it has no deadline, no error and no cause, and its done
** is nil. */
tt_ctx *tt_without_cancel(tt_ctx *parent);

/* tt_cancel cancels a context made by tt_with_cancel, tt_with_deadline or
** tt_with_timeout, and all its descendants, with TT_CANCELED and 'cause'
** (NULL: the cause is the error itself).  After the first call, further
** calls do nothing: the first cancel wins.  On other contexts it does
** nothing.  Propagation takes O(descendants) and runs no callback under a
** lock. */
void tt_cancel(tt_ctx *c, tt_obj *cause);

/* tt_ctx_err returns 0 while the context is live, then TT_CANCELED or
** TT_DEADLINE.  It is one atomic load on the hot path. */
int tt_ctx_err(tt_ctx *c);

/* tt_ctx_cause returns a new reference to the cause of a done context: the
** one given to tt_cancel or to the deadline constructor, else the error
** sentinel.  NULL while the context is live or if it can never be done. */
tt_obj *tt_ctx_cause(tt_ctx *c);

/* tt_ctx_deadline stores the deadline in '*at' and returns true if the
** context has one. */
bool tt_ctx_deadline(tt_ctx *c, double *at);

/* tt_ctx_value looks 'key' up from 'c' outwards.  It returns true if some
** context on the way holds the key, with '*value' a new reference (NULL if
** the nearest holder stored NULL). */
bool tt_ctx_value(tt_ctx *c, const tt_key *key, tt_obj **value);

/* tt_ctx_done returns the latch set when the context is done, or NULL for
** a context that can never be canceled (the done channel is nil). */
tt_latch *tt_ctx_done(tt_ctx *c);

/* tt_ctx_wait waits until the context is done, at most 'timeout' seconds
** (< 0: forever).  It returns true once done. */
bool tt_ctx_wait(tt_ctx *c, double timeout);

/* tt_ctx_kind names the kind of context for display: "background",
** "todo", "cancel", "deadline", "value", "without_cancel". */
const char *tt_ctx_kind(tt_ctx *c);

/* A tt_afterfunc is the registration of tt_after_func. */
typedef struct tt_afterfunc tt_afterfunc;
extern const tt_type tt_afterfunc_type;

/* tt_after_func arranges for 'fn(arg)' to run on the executor once 'c' is
** done (at once if it already is).  'drop(arg)' (may be NULL) runs instead
** if it never will: stopped in time, or the context freed while never done.
** It returns the registration, whose stop is tt_afterfunc_stop. */
tt_afterfunc *tt_after_func(tt_ctx *c, void (*fn)(void *arg), void *arg,
                            void (*drop)(void *arg));

/* tt_afterfunc_stop prevents the run.  It returns true if it did so, false
** if the function already started or was already stopped. */
bool tt_afterfunc_stop(tt_afterfunc *af);

/* }==================================================================== */


/* {====================================================================
** Tasks, handles and the executor
** ===================================================================== */

/* A task function.  It runs on an engine thread with the task's context
** (never NULL) and its argument.  It returns TT_OK and stores its result
** (a new reference, may be NULL) in '*out', or returns non-zero and stores
** its error object (may be NULL) in '*out'. */
typedef int (*tt_fn)(tt_ctx *ctx, void *arg, tt_obj **out);

/* A task's argument is dropped once, when the engine is done with it
** (after the last attempt, or when the task is stopped, or when a dead
** letter is dropped).  A refused submission drops nothing: the caller
** still owns the argument.  The argument is dropped before the handle
** resolves (a pool's dead letter keeps it until retried or dropped). */
typedef void (*tt_drop)(void *arg);

/* A tt_handle is the future of a task: it becomes resolved exactly once
** with one of the final states below. */
typedef struct tt_handle tt_handle;
extern const tt_type tt_handle_type;

enum {
  TT_H_QUEUED = 0,  /* waiting for a worker (or a retry's delay) */
  TT_H_RUNNING,
  TT_H_DONE,        /* completed: the result is the value */
  TT_H_FAILED,      /* failed (or dead-lettered): the result is the error */
  TT_H_STOPPED      /* removed before it ran by tt_handle_stop */
};

int tt_handle_state(tt_handle *h);

/* tt_handle_result returns the state and a new reference to the result
** (the value for TT_H_DONE, the error for TT_H_FAILED). */
int tt_handle_result(tt_handle *h, tt_obj **result);

/* tt_handle_latch is set once the handle is resolved. */
tt_latch *tt_handle_latch(tt_handle *h);

/* tt_handle_stop removes a task that has not started (also one waiting
** for a retry) and returns true; once it started it does nothing and
** returns false.  A stopped task's handle resolves TT_H_STOPPED with no
** result. */
bool tt_handle_stop(tt_handle *h);

/* tt_handle_name returns the task's name (owned by the handle). */
const char *tt_handle_name(tt_handle *h);

/* tt_go runs 'fn' on the default elastic executor with the background
** context: threads are made on demand up to a cap (64 by default) and idle
** ones are kept for a while (30 s); at the cap, tasks wait in a FIFO
** queue.  'name' is copied (NULL: "task").  Returns a handle, or NULL with
** '*err' (may be NULL); the caller then still owns 'arg'.  A failed task's
** result is the error object it stored, else a tt_error for the code it
** returned. */
tt_handle *tt_go(const char *name, tt_fn fn, void *arg, tt_drop drop,
                 int *err);

/* tt_exec runs 'fn(arg)' on the executor with no handle (used for
** after_func and internal work).  Returns TT_OK or an error.  Never call
** it holding a lock that 'fn' takes: 'fn' may start at once. */
int tt_exec(void (*fn)(void *arg), void *arg);

/* Thread hooks let an embedder attach state to engine threads (the Lua
** binding gives each worker its own lua_State): 'on_exit' runs on an
** executor or pool worker thread just before it ends. */
void tt_set_thread_exit_hook(void (*on_exit)(void));

/* }==================================================================== */


/* {====================================================================
** Pools
** ===================================================================== */

typedef struct tt_pool tt_pool;
extern const tt_type tt_pool_type;
typedef struct tt_store tt_store;   /* a durable store (see below) */

/* A retry policy.  The delay before attempt n+1 is
** min(max_backoff, backoff * factor^(n-1)), times a random factor in
** [1 - jitter, 1 + jitter].  attempts = 1 means no retry; 0 counts as 1,
** factor 0 as 2, max_backoff 0 as no cap.  Negative values and a jitter
** outside 0..1 are TT_EINVAL. */
typedef struct tt_retry {
  int attempts;
  double backoff;
  double factor;
  double max_backoff;
  double jitter;
} tt_retry;

/* A priority class: its name, its own workers (at least 1), and whether
** its idle workers may take queued work of lower classes (those listed
** after it).  Names must be distinct. */
typedef struct tt_class_opts {
  const char *name;
  int workers;
  bool lend;
} tt_class_opts;

/* A tenant quota: at most 'limit' queued plus running ops (<= 0: no
** limit).  The tenant "default" names the bucket of ops without a
** tenant. */
typedef struct tt_quota {
  const char *tenant;
  int limit;
} tt_quota;

/* Pool options.  Zero values mean defaults: workers 4, queue 64 (per
** class), no timeout, no shutdown context, one attempt, no quotas, one
** class named "default", no idle detection, 100 dead letters, 100 recent
** failures.
**
** - Workers are started by tt_pool_new, 'workers' of them for the one
**   class, else each class's own ('workers', if also given, must equal
**   their sum).  They end once the pool is drained or freed.
** - 'queue' bounds each class's ready queue.  Ops waiting for a retry
**   are not in it: they count as queued in the stats, in quotas and for
**   drain, but re-enter the ready queue when their delay ends whatever
**   its length, so a retry is never lost.
** - The tenant of an op is the value under 'tenant_key' in its parent
**   context: a tt_bytes gives its bytes, any other object its
**   tt_describe text (up to 255 bytes).  Ops without one share the quota
**   bucket "default".  A tenant's limit is its entry in 'quotas', else
**   'quota_default'.
** - dead_cap < 0 keeps no dead letters (ops that fail their last attempt
**   then count as 'failed'); failures_cap < 0 keeps no failure records. */
typedef struct tt_pool_opts {
  const char *name;
  int workers;
  int queue;
  double timeout;          /* per op, seconds; <= 0 means none */
  tt_ctx *shutdown;        /* may be NULL */
  tt_retry retry;
  tt_key tenant_key;       /* str == NULL and obj == NULL: no tenants */
  int quota_default;       /* <= 0: unlimited */
  const tt_quota *quotas;
  int nquotas;
  const tt_class_opts *classes;
  int nclasses;
  double idle_after;       /* <= 0: no idle reports */
  int dead_cap;
  int failures_cap;
  /* A durable store that takes the submissions which find the queue
  ** full and can travel (DESIGN section 11; referenced by the pool;
  ** NULL: none), and how long a spill may wait for the store's commit
  ** before its handle resolves TT_ESTORE (<= 0: 5 s). */
  tt_store *overflow;
  double spill_timeout;
} tt_pool_opts;

/* Per-submission options; NULL fields and zero values take the pool's.
** Without a priority an op goes to the class named "default" if there is
** one, else to the last (lowest) class. */
typedef struct tt_submit_opts {
  const char *name;        /* copied; NULL: "op" */
  const tt_retry *retry;
  const char *priority;
  double timeout;          /* 0: the pool's; < 0: none */
  double wait;             /* > 0: wait up to this long for queue space */
  /* The op in a form that can travel to the pool's overflow store:
  ** "module:function" and its arguments as wire values (tt_wire_*).
  ** 'spill_fn' NULL: the op cannot travel (a closure). */
  const char *spill_fn;
  const void *spill_args;
  size_t spill_args_len;
} tt_submit_opts;

/* Pool events, delivered to observers off the pool's lock, one thread at
** a time, in the order the pool's state changed.  Each failed attempt
** gives exactly one of RETRIED (another attempt is scheduled), FAILED or
** DEAD (the op failed for good, kept as a dead letter or not), so that
** the events of each kind count like the stats of the same name.  An op
** submitted after an IDLE report is preceded by one RESUMING.  SPILLED
** ends an op that went to the pool's durable store instead of its queue,
** ABANDONED one still queued or running when the process exited; like
** COMPLETED, FAILED, DEAD and STOPPED, each is an op's last event. */
enum {
  TT_EV_SUBMITTED = 0, TT_EV_STARTED, TT_EV_RETRIED, TT_EV_COMPLETED,
  TT_EV_FAILED, TT_EV_DEAD, TT_EV_STOPPED, TT_EV_REJECTED, TT_EV_IDLE,
  TT_EV_RESUMING, TT_EV_DRAINED, TT_EV_SPILLED, TT_EV_ABANDONED,
  TT_NEVENTS
};

typedef struct tt_event {
  int kind;
  tt_pool *pool;
  const char *pool_name;
  uint64_t id;             /* op id (0 for pool-level events) */
  const char *name;        /* op name */
  const char *tenant;      /* may be NULL */
  const char *priority;    /* class name */
  int attempt;             /* attempts started so far (0 before the
                           ** first) */
  double at;               /* tt_now() */
  double duration;         /* for COMPLETED/FAILED/DEAD: run time */
  double delay;            /* for RETRIED: the backoff chosen */
  int code;                /* for RETRIED/FAILED/DEAD/REJECTED: code */
  tt_obj *error;           /* for RETRIED/FAILED/DEAD: the error
                           ** (borrowed) */
  tt_obj *cause;           /* for RETRIED/FAILED/DEAD: the op context's
                           ** cause if it ended, else the error; the
                           ** shutdown's cause for an op whose retry the
                           ** shutdown prevented */
  tt_ctx *ctx;             /* the op's context where there is one */
} tt_event;

typedef void (*tt_observer)(const tt_event *ev, void *ud);

/* Pool counters, read in one snapshot under the pool's lock, where
**   submitted = completed + failed + stopped + dead + spilled + abandoned
**               + queued + inflight
** always holds (the accounting identity).  'queued' counts ops ready to
** run or waiting for a retry, 'inflight' running ones; the others only
** grow.  'spilled' counts accepted ops written to the durable store
** instead of the queue, 'abandoned' ops left queued or running when the
** process exited.  'dead' counts ops that
** became dead letters, 'dead_held' those kept now (retried or dropped
** ones leave it, and so do 'dead_dropped' ones, pushed out by dead_cap).
** A retried dead letter is a new submission.  'rejected' counts refused
** submissions (closed, queue full, quota), 'retried' retries scheduled. */
typedef struct tt_pool_stats {
  uint64_t submitted, completed, failed, retried, stopped, dead, rejected;
  uint64_t queued, inflight;
  uint64_t spilled, abandoned;
  uint64_t dead_held, dead_dropped;
} tt_pool_stats;

/* One running op, as listed by tt_pool_inflight. */
typedef struct tt_inflight {
  uint64_t id;
  char name[64];
  char tenant[64];
  char priority[32];
  double started;
  int attempt;
} tt_inflight;

/* A failure record: a recent failure, or a dead letter. */
typedef struct tt_failure {
  uint64_t id;
  char *name;
  char *tenant;            /* may be NULL */
  tt_obj *error;           /* may be NULL */
  tt_obj *cause;           /* may be NULL */
  int code;
  int attempts;
  double at;               /* tt_wall() */
} tt_failure;

/* tt_pool_new makes a pool and starts its workers; NULL with '*err'
** (TT_EINVAL for bad options, TT_ENOMEM, TT_ETHREAD).  'opts' may be
** NULL.  The last tt_unref closes the pool, stops queued ops, drops the
** dead letters, waits for running ops and joins the workers. */
tt_pool *tt_pool_new(const tt_pool_opts *opts, int *err);
const char *tt_pool_name(tt_pool *p);

/* tt_pool_observe registers an observer; it returns an id (> 0) for
** tt_pool_unobserve, or -1 when out of memory.  Observers run on engine
** threads (or a caller's, which then delivers the queued events) and must
** not block.  They may call the pool, also to (un)register observers.
** Once tt_pool_unobserve returns, the observer is not called again.  The
** event's pool may be being freed: observers must not take a reference to
** it. */
int tt_pool_observe(tt_pool *p, tt_observer fn, void *ud);
void tt_pool_unobserve(tt_pool *p, int id);

/* tt_pool_submit never blocks (unless opts->wait > 0): it returns a handle,
** or NULL with '*err' set to TT_EQUEUE_FULL, TT_EQUOTA, TT_ECLOSED,
** TT_EINVAL (unknown priority, bad retry policy) or TT_ENOMEM.  The op's
** context is with_timeout(without_cancel(parent), timeout), made afresh
** for each attempt as it starts, also canceled when the pool's shutdown
** context ends (with that context's cause; at once for attempts that
** start after it ended).  A refused submission takes nothing: the caller
** still owns 'arg'.  Refusals (not TT_EINVAL/TT_ENOMEM) count in
** 'rejected' and emit TT_EV_REJECTED.  Ops get increasing ids from 1.
**
** An attempt fails when 'fn' returns non-zero.  Its cause is the op
** context's cause if that context ended (&tt_deadline for a timeout),
** else the error itself.  While attempts remain it is retried after the
** policy's delay, on the timer thread; a canceled parent does not stop
** retries, but the end of the shutdown context does: the op then fails
** for good with the shutdown's cause.  An op that fails its last attempt
** becomes a dead letter (its handle resolves TT_H_FAILED). */
tt_handle *tt_pool_submit(tt_pool *p, tt_ctx *parent,
                          const tt_submit_opts *opts, tt_fn fn, void *arg,
                          tt_drop drop, int *err);

/* tt_pool_precheck takes the same cheap first look as tt_pool_submit
** (closed, queue room, tenant quota) without submitting anything, so a
** binding can refuse before it prepares an argument.  A refusal is counted
** and emitted as tt_pool_submit's would be, so the caller must not submit
** after one; TT_OK promises nothing (another submitter may take the room
** first, and tt_pool_submit looks again). */
int tt_pool_precheck(tt_pool *p, tt_ctx *parent, const tt_submit_opts *so);

/* With an overflow store, a submission that finds its class's queue full
** goes to the store instead of being refused, if it can travel
** ('spill_fn' and 'spill_args' set): tt_pool_submit then drops 'arg' at
** once and returns a handle that resolves TT_H_FAILED with an error of
** code TT_ESPILLED once the store committed the op (the error's 'value'
** is a tt_bytes of the store's id), or TT_ESTORE if the store failed or
** did not commit within the pool's spill_timeout.  The submission counts
** as queued until then, and then as 'spilled' (event TT_EV_SPILLED) or
** 'failed' (TT_EV_FAILED).  Submit never waits for the commit.  A
** tenant over its quota is refused as usual; an op whose record is
** larger than the store's max_payload is refused with TT_EQUEUE_FULL.
**
** tt_pool_precheck returns TT_ESPILLED (counting nothing) when the
** submission would go to the store now; a binding may then skip
** preparing the op to run and call tt_pool_spill, which writes it to
** the store whatever the queue's length (TT_EINVAL without a store or
** without 'spill_fn'; refusals as above). */
tt_handle *tt_pool_spill(tt_pool *p, tt_ctx *parent,
                         const tt_submit_opts *so, int *err);

/* tt_pool_drain closes the pool to new work and waits for queued and
** running ops (also those waiting for a retry), until 'ctx' (may be NULL)
** is done or 'timeout' (< 0: none) runs out.  It returns TT_OK, the
** context's error code or TT_ETIMEOUT; it may be called again to keep
** waiting.  On TT_OK every handle is resolved and every event delivered.
** Once drained, the workers end. */
int tt_pool_drain(tt_pool *p, tt_ctx *ctx, double timeout);

/* tt_pool_close closes the pool to new work without waiting. */
void tt_pool_close(tt_pool *p);

/* tt_pool_drained is set when the pool is closed and empty. */
tt_latch *tt_pool_drained(tt_pool *p);

void tt_pool_stats_get(tt_pool *p, tt_pool_stats *out);

/* tt_pool_inflight fills up to 'max' records and returns how many ops are
** running (may exceed 'max'). */
size_t tt_pool_inflight(tt_pool *p, tt_inflight *out, size_t max);

/* tt_pool_failures and tt_pool_dead_letters return a malloc'd array of
** copies (free it with tt_failures_free) and its length in '*n'. */
tt_failure *tt_pool_failures(tt_pool *p, size_t *n);
tt_failure *tt_pool_dead_letters(tt_pool *p, size_t *n);
void tt_failures_free(tt_failure *f, size_t n);

/* tt_pool_retry_dead resubmits the dead letter 'id' (a fresh set of
** attempts, same name, tenant, class, parent values and policy) as a new
** submission with a new id, and returns its new handle, or NULL with
** '*err': TT_EINVAL if there is no such dead letter, or a refusal as for
** tt_pool_submit (the dead letter then stays).  tt_pool_drop_dead forgets
** it (dropping its argument) and returns true if it was there. */
tt_handle *tt_pool_retry_dead(tt_pool *p, uint64_t id, int *err);
bool tt_pool_drop_dead(tt_pool *p, uint64_t id);

/* tt_pool_overflow returns the pool's overflow store (borrowed), or
** NULL. */
tt_store *tt_pool_overflow(tt_pool *p);

/* }==================================================================== */


/* {====================================================================
** Groups, singleflight and sagas
** ===================================================================== */

/* A tt_group is an errgroup, after golang.org/x/sync/errgroup: a set of
** tasks that run on the default executor with a shared context, whose
** first failure cancels that context and is what waiting reports.  Any
** thread may use a group.  Its type is named "tether.Group". */
typedef struct tt_group tt_group;
extern const tt_type tt_group_type;

/* tt_group_new returns a group whose tasks run with the context stored in
** '*gctx' (a new reference, also held by the group): a child of 'parent'
** made by tt_with_cancel.  At most 'limit' tasks run at once (<= 0: no
** limit), as Go's SetLimit.  It returns NULL (and '*gctx' NULL) if
** 'parent' is NULL or memory runs out.
**
** 'gctx' is canceled by the group's first error, with that error as its
** cause, or by a tt_group_wait that finds no error, with no cause (its
** cause is then tt_canceled), or by the parent. */
tt_group *tt_group_new(tt_ctx *parent, int limit, tt_ctx **gctx);

/* tt_group_go runs fn(gctx, arg, &out) on the default executor.  When the
** group is at its limit, it first waits until a task ends; the wait is
** unbounded, as in Go, so a task that calls tt_group_go on its own group
** at the limit can wait forever.  It returns TT_OK (the group then owns
** 'arg' and calls 'drop(arg)', if 'drop' is not NULL, once 'fn' has
** returned), or TT_EINVAL, TT_ENOMEM or TT_ETHREAD, and then the caller
** keeps 'arg'.
**
** A task succeeds by returning TT_OK: its result '*out' (may be NULL) is
** discarded.  It fails by returning non-zero, with its error object in
** '*out'; if it left '*out' NULL the error is tt_error_for(code) (code
** TT_EFAILED when not one of ours).  The first failure of the group is
** kept and cancels gctx with that error as the cause; later ones are
** dropped.
**
** tt_group_go may be called at any time, by any thread, also from tasks
** of the group and after tt_group_wait returned: the group then has a
** new batch of tasks to wait for (as Go's zero Group), and gctx may
** already be canceled. */
int tt_group_go(tt_group *g, tt_fn fn, void *arg, tt_drop drop);

/* tt_group_try_go is tt_group_go that never waits: it returns false,
** leaving 'arg' with the caller, when the group is at its limit (or the
** task could not be started), and true once the task is started. */
bool tt_group_try_go(tt_group *g, tt_fn fn, void *arg, tt_drop drop);

/* tt_group_wait waits until every task started before the call has ended,
** with the tasks started while those ran (by them or by other threads),
** then cancels gctx (a no-op when a failure already did).  It returns
** TT_OK with '*err' NULL, or TT_EFAILED with '*err' a new reference to
** the group's first error ('err' may be NULL).  It may be called again,
** also by several threads at once and after more tt_group_go calls: it
** waits for the tasks started since, and the first error stays the first
** error for the group's whole life.  The wait is not bounded; use
** tt_group_latch in a select to bound it. */
int tt_group_wait(tt_group *g, tt_obj **err);

/* tt_group_latch returns the latch of the group's current batch: set once
** every task started so far (and those they start) has ended, or already
** set when no task is running.  It refers to that batch only: tasks
** started after the batch ended belong to the next one, so call it again
** to wait for them.  '*hold' receives a new reference that keeps the
** latch alive; release it with tt_unref when done with the latch.  Unlike
** tt_group_wait, it does not cancel gctx; follow it with tt_group_wait to
** get the error. */
tt_latch *tt_group_latch(tt_group *g, tt_obj **hold);

/* tt_group_active returns how many tasks are started and not yet ended. */
int tt_group_active(tt_group *g);

/* A tt_flight is a singleflight group, after golang.org/x/sync/
** singleflight: it runs at most one function per key at a time and gives
** its result to every caller that asked for that key meanwhile.  Any
** thread may use it.  Its type is named "tether.Singleflight". */
typedef struct tt_flight tt_flight;
extern const tt_type tt_flight_type;

/* tt_flight_new returns an empty singleflight group, or NULL when out of
** memory. */
tt_flight *tt_flight_new(void);

/* tt_flight_call returns the result of fn for 'key' (a byte string of
** 'keylen' bytes; it may contain zeros).  If no run for the key is in
** flight, it starts fn(workctx, arg, &out) on the default executor, never
** on the calling thread, with workctx =
** tt_with_timeout(tt_without_cancel(ctx), timeout), or just
** tt_without_cancel(ctx) when 'timeout' <= 0: the run keeps ctx's values
** but not its cancellation or deadline.  If a run is in flight, the call
** waits for that run instead, and its own 'fn', 'timeout' and
** 'cancel_when_abandoned' are ignored.
**
** 'arg' always passes to the call: 'drop(arg)' (if 'drop' is not NULL)
** runs once fn has returned, or before tt_flight_call returns when 'arg'
** is not used (a run was in flight, ctx was already done, or an error).
**
** It returns TT_OK with '*result' a new reference to the value (may be
** NULL), or TT_EFAILED with '*result' a new reference to the error object
** the run failed with (tt_error_for(code) if fn left '*out' NULL; TT_EFAILED
** also when the run could not be started).  A failed result goes, as an
** error, to every caller waiting at that moment, and is not cached: no
** result is.  The key leaves the group when its run ends, so the next
** call runs fn again.  '*shared' (may be NULL) is true when the result
** went to more than one caller, as x/sync's 'shared'.
**
** A caller whose ctx ends first returns at once with tt_ctx_err(ctx) and
** '*result' NULL, while the run goes on for the others; a ctx already
** done at the call returns at once without starting or joining a run.
** When every caller has left a run, it still goes on to completion by
** default (a later caller for the key joins it; if none does, its result
** goes to nobody).  With 'cancel_when_abandoned' set by the caller that
** started the run, workctx is canceled (its cause an error "singleflight:
** every caller left") when the last waiting caller leaves, and the key
** leaves the group at once, so the next call starts a new run.
**
** Other results: TT_EINVAL (NULL 'sf', 'ctx' or 'fn') and TT_ENOMEM. */
int tt_flight_call(tt_flight *sf, tt_ctx *ctx, const char *key,
                   size_t keylen, tt_fn fn, void *arg, tt_drop drop,
                   double timeout, bool cancel_when_abandoned,
                   tt_obj **result, bool *shared);

/* tt_flight_forget makes later calls for 'key' start a new run even if
** one is in flight, as x/sync's Forget.  Callers already waiting for the
** old run keep waiting for it.  Forgetting a key not in flight does
** nothing. */
void tt_flight_forget(tt_flight *sf, const char *key, size_t keylen);

/* tt_flight_inflight returns how many keys have a run in flight. */
size_t tt_flight_inflight(tt_flight *sf);

/* A tt_saga_step is one step of a saga: its name (copied by tt_saga_new;
** NULL gives "step N"), its action, the compensation that undoes a
** completed action (NULL: nothing to undo), and 'ud', passed to both.
** Each callback returns TT_OK, or non-zero with an error object (a new
** reference, may be NULL) in '*err'.  They run on the thread that calls
** tt_saga_run; 'state' is that call's. */
typedef struct tt_saga_step {
  const char *name;
  int (*action)(tt_ctx *ctx, void *state, void *ud, tt_obj **err);
  int (*compensate)(tt_ctx *ctx, void *state, void *ud, tt_obj **err);
  void *ud;
} tt_saga_step;

/* The status of a step in a saga report. */
enum {
  TT_STEP_NOT_RUN = 0,          /* its action never started */
  TT_STEP_DONE,                 /* its action completed (and was not
                                ** undone: the saga succeeded, or the step
                                ** has no compensation) */
  TT_STEP_FAILED,               /* its action failed */
  TT_STEP_COMPENSATED,          /* completed, then undone */
  TT_STEP_COMPENSATION_FAILED   /* completed, and every attempt to undo
                                ** it failed */
};

/* What one step did in one run of a saga.  'error' (a reference owned by
** the report, or NULL) is the action's error for TT_STEP_FAILED and the
** last compensation error for TT_STEP_COMPENSATION_FAILED.  'attempts'
** counts the compensation attempts made (0 when none ran). */
typedef struct tt_saga_step_report {
  char *name;
  int status;
  int attempts;
  tt_obj *error;
} tt_saga_step_report;

/* The report of one run of a saga, made by tt_saga_run and freed by the
** caller with tt_saga_report_free.  'code' is what tt_saga_run returned.
** 'failed_step' is the index of the step whose action failed, or of the
** step the saga stopped before because its context was done (that step
** is TT_STEP_NOT_RUN), or -1 when every step completed.  'error' (a
** reference owned by the report, or NULL on success) is the failure: the
** action's error, or the context's error sentinel.  The count
** 'compensation_failures' is of steps left TT_STEP_COMPENSATION_FAILED. */
typedef struct tt_saga_report {
  char *saga;
  int code;
  int failed_step;
  tt_obj *error;
  int compensation_failures;
  int nsteps;
  tt_saga_step_report steps[];
} tt_saga_report;

/* A tt_saga is a sequence of steps whose completed actions are undone,
** in reverse order, when a later one fails.  It is immutable after
** creation (but for its hook) and may be run by several threads at once.
** Its type is named "tether.Saga". */
typedef struct tt_saga tt_saga;
extern const tt_type tt_saga_type;

/* tt_saga_new makes a saga named 'name' (copied; NULL gives "saga") from
** 'nsteps' steps (copied).  Each attempt at a compensation gets
** 'compensation_timeout' seconds (<= 0: no limit), and a compensation is
** attempted as the policy 'retry' says (copied; NULL or attempts < 1: one
** attempt), waiting between attempts by tt_retry's formula.  It returns
** NULL if a step has no action, 'nsteps' < 0, or memory runs out. */
tt_saga *tt_saga_new(const char *name, const tt_saga_step *steps,
                     int nsteps, double compensation_timeout,
                     const tt_retry *retry);

/* tt_saga_run runs the saga's actions in order on the calling thread,
** each with 'ctx' and 'state'.  Before each action it checks 'ctx': once
** ctx is done, no further action starts.  When an action fails, or ctx
** stopped the saga, the compensations of the steps whose actions
** completed run in reverse order, also on the calling thread, even if ctx
** is done: each attempt gets a fresh
** tt_with_timeout(tt_without_cancel(ctx), compensation_timeout), which
** keeps ctx's values.  Failed attempts are retried by the saga's policy,
** the calling thread sleeping in between.  A compensation that fails its
** last attempt is recorded in the report and passed to the hook set by
** tt_saga_set_on_compensation_failure, and the earlier steps are still
** compensated.
**
** It returns TT_OK when every action completed, TT_EFAILED when one
** failed, or ctx's error code (TT_CANCELED, TT_DEADLINE) when ctx stopped
** the saga; TT_EINVAL and TT_ENOMEM before running anything.  If 'report'
** is not NULL, '*report' receives the run's report (NULL only for
** TT_EINVAL and TT_ENOMEM). */
int tt_saga_run(tt_saga *s, tt_ctx *ctx, void *state,
                tt_saga_report **report);

/* tt_saga_report_free frees a report and releases its errors.  NULL is
** ignored. */
void tt_saga_report_free(tt_saga_report *r);

/* tt_saga_status_name names a step status for display: "not_run",
** "done", "failed", "compensated", "compensation_failed". */
const char *tt_saga_status_name(int status);

/* tt_saga_name returns the saga's name (owned by the saga). */
const char *tt_saga_name(tt_saga *s);

/* tt_saga_set_on_compensation_failure sets the function called, on the
** thread running the saga, each time a compensation fails its last
** attempt, with the saga's and the step's names, the last error
** (borrowed; may be NULL), the attempts made and 'ud'.  It is how an
** embedder turns such a failure into a dead letter.  Any thread may call
** it at any time: a later call replaces the hook (NULL removes it) for
** every failure reached after it. */
void tt_saga_set_on_compensation_failure(
    tt_saga *s,
    void (*fn)(const char *saga, const char *step, tt_obj *err,
               int attempts, void *ud),
    void *ud);

/* }==================================================================== */

/* {====================================================================
** Text: a growable buffer, JSON strings
** ===================================================================== */

/* A tt_buf is a growable byte buffer, kept NUL-terminated.  Appending
** never fails loudly: when memory runs out, 'failed' is set, later
** appends do nothing, and the caller checks 'failed' once at the end.
** Initialise with TT_BUF_INIT or tt_buf_init; free with tt_buf_free. */
typedef struct tt_buf {
  char *data;              /* NULL until the first append */
  size_t len, cap;
  bool failed;
} tt_buf;

#define TT_BUF_INIT {NULL, 0, 0, false}

void tt_buf_init(tt_buf *b);
void tt_buf_free(tt_buf *b);
void tt_buf_add(tt_buf *b, const void *p, size_t n);
void tt_buf_adds(tt_buf *b, const char *s);
void tt_buf_addc(tt_buf *b, char c);
void tt_buf_addf(tt_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* tt_buf_json_str appends 'n' bytes of 's' as a quoted JSON string that
** is valid whatever the bytes are: quotes, backslashes and control
** characters (NUL included) are escaped, and each byte that is not part
** of well-formed UTF-8 (overlong forms, surrogates, code points above
** U+10FFFF, truncated sequences) becomes U+FFFD.  A NULL 's' appends
** null. */
void tt_buf_json_str(tt_buf *b, const char *s, size_t n);

/* tt_buf_json_num appends a number as JSON: integers exactly, others
** with enough digits to read back the same double; NaN and infinities,
** which JSON lacks, become null. */
void tt_buf_json_num(tt_buf *b, double v);

/* tt_buf_rfc3339 appends a wall-clock time (seconds since the Unix
** epoch) as an RFC 3339 UTC timestamp with milliseconds,
** "2026-11-30T06:44:27.123Z". */
void tt_buf_rfc3339(tt_buf *b, double wall);

/* }==================================================================== */


/* {====================================================================
** Logs: one JSON line per record
** ===================================================================== */

/* Levels, least to most severe; TT_LOG_OFF silences everything. */
enum { TT_LOG_DEBUG = 0, TT_LOG_INFO, TT_LOG_WARN, TT_LOG_ERROR,
       TT_LOG_OFF };

/* A field of a log record.  'len' is the length of 's' for TT_F_STR
** ((size_t)-1: up to its NUL).  A NULL string is written as null. */
enum { TT_F_STR = 0, TT_F_INT, TT_F_NUM, TT_F_BOOL };

typedef struct tt_field {
  const char *key;
  int kind;
  const char *s;
  size_t len;
  long long i;
  double n;
} tt_field;

/* Field constructors, for arrays written in place:
**   tt_field f[] = {TT_FSTR("pool", name), TT_FINT("id", id)}; */
#define TT_FSTR(k, v) {(k), TT_F_STR, (v), (size_t)-1, 0, 0}
#define TT_FSTRN(k, v, l) {(k), TT_F_STR, (v), (l), 0, 0}
#define TT_FINT(k, v) {(k), TT_F_INT, NULL, 0, (long long)(v), 0}
#define TT_FNUM(k, v) {(k), TT_F_NUM, NULL, 0, 0, (double)(v)}
#define TT_FBOOL(k, v) {(k), TT_F_BOOL, NULL, 0, (long long)!!(v), 0}

/* A record as a sink sees it: 'line' is its JSON text, one object on one
** line ending in '\n' ({"ts":"<RFC 3339>","level":"error","msg":...,
** then the fields in order}), 'len' its length. */
typedef struct tt_log_record {
  double ts;               /* tt_wall() */
  int level;
  const char *msg;
  const tt_field *fields;
  size_t nfields;
  const char *line;
  size_t len;
} tt_log_record;

typedef void (*tt_log_sink)(const tt_log_record *r, void *ud);

/* tt_log writes one record if 'level' is enabled: every engine message
** (an op failed or dead, a pool idle, ...) goes through it.  Any thread
** may call it; each record reaches the sink whole. */
void tt_log(int level, const char *msg, const tt_field *fields, size_t n);

/* tt_log_enabled is true when records of 'level' are written, so a
** caller can skip building fields. */
bool tt_log_enabled(int level);

/* tt_log_set_level sets the least level written (TT_LOG_INFO by
** default); tt_log_get_level returns it. */
void tt_log_set_level(int level);
int tt_log_get_level(void);

/* tt_log_set_sink replaces where records go (NULL: stderr, the default)
** and returns once no thread still runs the previous sink, so its 'ud'
** may be freed then.  A sink runs on the logging thread, must not block
** for long, and must not call tt_log_set_sink. */
void tt_log_set_sink(tt_log_sink fn, void *ud);

/* tt_log_level_name names a level ("debug", "info", "warn", "error",
** "off"); tt_log_level_parse reads a name back (-1 if unknown). */
const char *tt_log_level_name(int level);
int tt_log_level_parse(const char *name);

/* }==================================================================== */


/* {====================================================================
** Trace context (W3C Trace Context)
** ===================================================================== */

/* The identity of a span as it travels between processes: a 16-byte
** trace id, an 8-byte span id (neither all zeros) and the trace flags
** (bit 0: sampled).  'remote' is true when it came from another process
** (a traceparent header). */
typedef struct tt_span_context {
  uint8_t trace_id[16];
  uint8_t span_id[8];
  uint8_t flags;
  bool remote;
} tt_span_context;

#define TT_TRACEPARENT_LEN 55   /* "00-" 32 "-" 16 "-" 2 */

/* tt_traceparent_parse reads a traceparent header value of 'n' bytes as
** W3C Trace Context level 1 says: version 00 is exactly 55 characters of
** lower-case hex and dashes; a later version may be longer if a '-'
** follows the flags; version ff, upper-case hex, and all-zero trace or
** span ids are invalid.  Surrounding spaces and tabs are ignored.  It
** returns TT_OK (with 'remote' set) or TT_EINVAL. */
int tt_traceparent_parse(const char *s, size_t n, tt_span_context *out);

/* tt_traceparent_format writes the version-00 header of 'sc' into 'out'
** (TT_TRACEPARENT_LEN characters and a NUL). */
void tt_traceparent_format(const tt_span_context *sc,
                           char out[TT_TRACEPARENT_LEN + 1]);

/* tt_hex writes 'n' bytes as lower-case hex and a NUL into 'out' (2n + 1
** bytes). */
void tt_hex(const uint8_t *p, size_t n, char *out);

/* tt_random_bytes fills 'p' from the kernel's random source (getrandom);
** ids of traces and spans come from it.  Returns TT_OK or TT_EINVAL if
** the source failed. */
int tt_random_bytes(void *p, size_t n);

/* A context carries the current span's identity as a value under
** tt_trace_key (an object key nothing else can name).
** tt_with_span_context returns a child of 'parent' that carries 'sc';
** tt_ctx_span_context copies the nearest one into '*out' and returns
** true, or false when the context carries none. */
extern const tt_key tt_trace_key;
tt_ctx *tt_with_span_context(tt_ctx *parent, const tt_span_context *sc);
bool tt_ctx_span_context(tt_ctx *c, tt_span_context *out);

/* The value object under tt_trace_key ("tether.SpanContext"). */
typedef struct tt_spanctx {
  tt_obj hdr;
  tt_span_context sc;
} tt_spanctx;
extern const tt_type tt_spanctx_type;

/* }==================================================================== */

/* {====================================================================
** Durable stores: records, the store, and draining (DESIGN section 11)
** ===================================================================== */

/* Wire values.  The arguments of an op that travels are plain data
** written in a small format of the store's own, independent of the
** in-memory transfer format: a varint count of values, then each value
** as a tag byte and its body:
**
**   TT_W_NIL, TT_W_FALSE, TT_W_TRUE          no body
**   TT_W_INT   8 bytes, a little-endian two's complement integer
**   TT_W_FLT   8 bytes, a little-endian IEEE 754 double
**   TT_W_STR   varint length, the bytes
**   TT_W_TABLE varint count of pairs, then key and value of each
**
** Varints are LEB128 (7 bits a byte, low first, at most 10 bytes).
** Tables nest at most TT_WIRE_MAXDEPTH deep; keys are never nil.  There
** is no code, no reference and no object: nothing in a record can run. */
enum { TT_W_NIL = 0, TT_W_FALSE, TT_W_TRUE, TT_W_INT, TT_W_FLT, TT_W_STR,
       TT_W_TABLE };
#define TT_WIRE_MAXDEPTH 100

void tt_wire_varint(tt_buf *b, uint64_t x);
void tt_wire_nil(tt_buf *b);
void tt_wire_bool(tt_buf *b, bool v);
void tt_wire_int(tt_buf *b, int64_t v);
void tt_wire_num(tt_buf *b, double v);
void tt_wire_str(tt_buf *b, const char *s, size_t n);
void tt_wire_table(tt_buf *b, uint64_t npairs);

/* tt_wire_check validates 'n' bytes of wire values (a count, then the
** values) and stores the count in '*count'.  It returns TT_OK, or
** TT_EINVAL with the reason in 'why' (may be NULL). */
int tt_wire_check(const void *p, size_t n, uint64_t *count, char *why,
                  size_t whylen);

/* A record is one op as a store keeps it.  Encoded, it is the magic
** "TTRC", a format version byte (TT_RECORD_VERSION), fields as (tag
** byte, varint length, bytes), and a CRC-32 of everything before it (4
** bytes, little-endian); unknown field tags are skipped, so later minor
** additions stay readable.  Times are wall-clock seconds (tt_wall), so
** they mean the same in another process or on another machine. */
#define TT_RECORD_VERSION 1

typedef struct tt_record {
  const char *pool;        /* the pool it was spilled from */
  const char *name;        /* the op's name (NULL: "op") */
  const char *fn;          /* "module:function" (required) */
  const void *args;        /* wire values (required) */
  size_t args_len;
  const char *tenant;      /* may be NULL */
  size_t tenant_len;
  const char *tenant_key;  /* the string key it was under, may be NULL */
  bool has_trace;
  tt_span_context trace;   /* the submitter's span */
  const char *priority;    /* class name, may be NULL */
  bool has_retry;
  tt_retry retry;
  double timeout;          /* per attempt, seconds; 0: the pool's */
  double deadline;         /* the submitter's deadline (wall); 0: none */
  int attempt;             /* attempts made before it was written */
  double spilled_at;       /* wall-clock time of the spill */
} tt_record;

/* tt_record_encode appends the encoding of 'r' to 'out' and returns TT_OK
** (TT_EINVAL without fn or args, TT_ENOMEM). */
int tt_record_encode(const tt_record *r, tt_buf *out);

/* tt_record_decode reads a record written by tt_record_encode: it returns
** one malloc'd block (free it with free) whose strings are NUL-terminated
** copies, or NULL with the reason in 'why' ("bad checksum", "record
** format version 7 is not supported", ...). */
tt_record *tt_record_decode(const void *p, size_t n, char *why,
                            size_t whylen);

/* tt_record_module writes the module part of "module:function" into
** 'out' and returns its length, or -1 if 'fn' is not of that form. */
int tt_record_module(const char *fn, char *out, size_t n);

/* A tt_store is a durable queue of records, one per pool name, opened
** from a URL:
**
**   sqlite:PATH        SQLite in WAL mode; the file is created 0600
**   redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=NAME]
**                      Redis Streams: stream NAME:POOL (NAME defaults
**                      to "tether") with consumer group "tether", dead
**                      letters in NAME:POOL:dead
**
** Each store does its I/O on a thread of its own (signals blocked there,
** so a broken connection never raises SIGPIPE in the process): writes
** are queued and grouped, many spills sharing one commit.  Passwords
** never appear in a description, a message or a log line.  Any thread
** may use a store.  Its type is named "tether.Store". */
extern const tt_type tt_store_type;

typedef struct tt_store_opts {
  size_t max_payload;      /* largest record in bytes; 0: 1 MiB */
  int max_deliveries;      /* deliveries before a dead letter; 0: 5 */
  double lease;            /* seconds a claim lasts unrenewed; 0: 30 */
  bool sync_normal;        /* SQLite: synchronous=NORMAL, not FULL */
  double timeout;          /* connect, I/O and lock waits, s; 0: 5 */
  const char *consumer;    /* Redis consumer; NULL: host-pid-random */
} tt_store_opts;

/* tt_store_open opens the store of 'url' and returns it, or NULL with
** '*err' TT_EINVAL (a malformed URL) or TT_ESTORE (unreachable server,
** a file that is not a database, ...) and the reason in 'msg'. */
tt_store *tt_store_open(const char *url, const tt_store_opts *o, int *err,
                        char *msg, size_t msglen);

/* tt_store_url returns the store's URL without its password (owned by
** the store). */
const char *tt_store_url(tt_store *s);

size_t tt_store_max_payload(tt_store *s);
double tt_store_lease(tt_store *s);

/* tt_store_close writes what is queued, closes the connection and ends
** the store's thread; later calls fail with TT_ECLOSED.  The last
** tt_unref closes too. */
void tt_store_close(tt_store *s);

/* tt_store_put queues a record for pool 'pool' and returns at once; the
** store's thread commits it together with the others queued meanwhile
** and then calls 'done(ud, rc, text)' (on that thread or an executor
** thread, with no store lock held): TT_OK and the store's id, or
** TT_ESTORE and the reason.  A
** put still queued at 'deadline' (tt_now's clock; < 0: none) is not
** written and fails with TT_ESTORE.  It returns TT_OK, or an error
** (then 'done' is never called). */
typedef void (*tt_store_done)(void *ud, int rc, const char *text);
int tt_store_put(tt_store *s, const char *pool, const void *rec, size_t len,
                 double deadline, tt_store_done done, void *ud);

/* tt_store_put_wait is tt_store_put that waits for the commit and copies
** the id into 'id' (at least TT_STORE_IDLEN bytes). */
#define TT_STORE_IDLEN 48
int tt_store_put_wait(tt_store *s, const char *pool, const void *rec,
                      size_t len, char *id);

/* A claimed record: the store's id, its pool, the bytes as stored, and
** how many times it was delivered (this one included). */
typedef struct tt_claim {
  char id[TT_STORE_IDLEN];
  char *pool;
  void *rec;
  size_t len;
  int deliveries;
} tt_claim;

/* tt_store_claim leases up to 'max' records of 'pool' (NULL: of every
** pool) for the store's lease, oldest first, taking over records whose
** lease ran out (a drainer that died); a record delivered more than
** max_deliveries times becomes a dead letter instead.  '*out' is a
** malloc'd array (tt_claims_free), '*n' its length (0: nothing to
** claim).  Returns TT_OK, TT_ESTORE or TT_ECLOSED. */
int tt_store_claim(tt_store *s, const char *pool, int max, tt_claim **out,
                   size_t *n);
void tt_claims_free(tt_claim *c, size_t n);

/* tt_store_ack deletes a claimed record (its work is done);
** tt_store_bury makes it a dead letter with 'reason'; tt_store_renew
** extends the leases of 'n' claims.  The _async forms queue the request
** and return at once (errors are logged: the lease then runs out and the
** record is delivered again); tt_store_sync waits until every request
** queued before it is done. */
int tt_store_ack(tt_store *s, const tt_claim *c);
int tt_store_bury(tt_store *s, const tt_claim *c, const char *reason);
int tt_store_ack_async(tt_store *s, const char *pool, const char *id);
int tt_store_bury_async(tt_store *s, const char *pool, const char *id,
                        const char *reason);
int tt_store_renew(tt_store *s, const tt_claim *const *c, size_t n);
int tt_store_sync(tt_store *s);

/* What tt_store_stats reports, for one pool or all. */
typedef struct tt_store_stats {
  uint64_t depth;          /* records not yet acknowledged (with leased) */
  uint64_t leased;         /* of those, claimed by a drainer now */
  uint64_t dead;           /* dead letters */
  double oldest_age;       /* seconds since the oldest record was
                           ** written; 0 when there is none */
} tt_store_stats;

int tt_store_stats_get(tt_store *s, const char *pool, tt_store_stats *out);

/* A dead letter of a store: its id (SQLite: the op's own id; Redis: the
** entry of the dead-letter stream), pool, the reason, when it was made
** (wall clock), the deliveries it had and the record as stored. */
typedef struct tt_store_dead {
  char id[TT_STORE_IDLEN];
  char origin[TT_STORE_IDLEN];  /* the op's id when it was queued */
  char *pool;
  char *reason;
  double at;
  int deliveries;
  void *rec;
  size_t len;
} tt_store_dead;

/* tt_store_dead_letters lists at most 'max' dead letters of 'pool' (NULL:
** all), oldest first; free with tt_store_dead_free.  tt_store_retry_dead
** puts one back in its queue (SQLite keeps its id, Redis gives a new
** one), tt_store_drop_dead forgets it; both return TT_OK, TT_EINVAL (no
** such dead letter), TT_ESTORE or TT_ECLOSED. */
int tt_store_dead_letters(tt_store *s, const char *pool, size_t max,
                          tt_store_dead **out, size_t *n);
void tt_store_dead_free(tt_store_dead *d, size_t n);
int tt_store_retry_dead(tt_store *s, const char *pool, const char *id);
int tt_store_drop_dead(tt_store *s, const char *pool, const char *id);

/* tt_store_error copies the message of the last failure seen by the
** calling thread's store calls into 'buf' (never a password). */
void tt_store_error(char *buf, size_t n);

/* Draining a store into a pool.  'prepare' turns a decoded record into
** the pool task that runs it, on the thread that called
** tt_pool_drain_store: TT_OK with '*fn', '*arg' and '*drop', or an error
** with the reason in 'why' (the record then becomes a dead letter with
** that reason).  '*parent' holds the parent context the core made (with
** the record's tenant, trace, deadline and the value "tether.store_id");
** prepare may replace it with a child (the old reference is then its to
** release). */
typedef int (*tt_drain_prepare)(void *ud, const tt_record *r,
                                const tt_claim *c, tt_ctx **parent,
                                tt_fn *fn, void **arg, tt_drop *drop,
                                char *why, size_t whylen);

typedef struct tt_drain_opts {
  const char *pool;            /* claim this pool's records; NULL: all */
  const char *const *allow;    /* modules whose functions may run */
  int nallow;
  int batch;                   /* most records per claim; 0: 64 */
  tt_drain_prepare prepare;
  void *ud;
} tt_drain_opts;

/* What one tt_pool_drain_store call did. */
typedef struct tt_drain_report {
  uint64_t claimed;        /* records taken from the store */
  uint64_t completed;      /* ran and acknowledged */
  uint64_t failed;         /* failed every attempt: now dead letters */
  uint64_t refused;        /* never ran: corrupted, not allowed, ... */
} tt_drain_report;

/* tt_pool_drain_store claims records from 's' while 'p' has room (its
** workers plus its queue), runs each as an op of 'p' (its name, retry
** policy less the attempts already made, priority class if 'p' has it,
** timeout), renews their leases while they run, and acknowledges each
** when it ends: a completed op's record is deleted, one that failed its
** last attempt becomes a dead letter of the store with its error (not a
** dead letter of the pool).  Only functions of modules in 'o->allow'
** run; any other record becomes a dead letter with that reason, and so
** does a corrupted one.  It returns TT_OK once nothing is left to claim
** and every claimed op ended (and its acknowledgement is written), or
** the context's error code when 'ctx' (may be NULL) ends first (ops
** already running are still acknowledged when they end), or TT_ESTORE,
** TT_ECLOSED, TT_EINVAL.  'rep' (may be NULL) receives the counts. */
int tt_pool_drain_store(tt_pool *p, tt_store *s, tt_ctx *ctx,
                        const tt_drain_opts *o, tt_drain_report *rep);

/* }==================================================================== */

#ifdef __cplusplus
}
#endif

#endif
