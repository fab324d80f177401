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

/* tt_shutdown stops the engine's threads (the timer thread and idle
** executor threads) and frees what they hold.  Call it at the end of a C
** program that wants a clean exit under leak checkers; work still running
** is waited for.  The engine restarts its threads on the next use. */
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
** letter is dropped). */
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
** returns false. */
bool tt_handle_stop(tt_handle *h);

/* tt_handle_name returns the task's name (owned by the handle). */
const char *tt_handle_name(tt_handle *h);

/* tt_go runs 'fn' on the default elastic executor with the background
** context: threads are made on demand up to a cap (64 by default) and idle
** ones are kept for a while.  Returns a handle, or NULL with '*err'. */
tt_handle *tt_go(const char *name, tt_fn fn, void *arg, tt_drop drop,
                 int *err);

/* tt_exec runs 'fn(arg)' on the executor with no handle (used for
** after_func and internal work).  Returns TT_OK or an error. */
int tt_exec(void (*fn)(void *arg), void *arg);

/* Thread hooks let an embedder attach state to engine threads (the Lua
** binding gives each worker its own lua_State): 'on_exit' runs on a
** worker thread just before it ends. */
void tt_set_thread_exit_hook(void (*on_exit)(void));

/* }==================================================================== */


/* {====================================================================
** Pools
** ===================================================================== */

typedef struct tt_pool tt_pool;
extern const tt_type tt_pool_type;

/* A retry policy.  The delay before attempt n+1 is
** min(max_backoff, backoff * factor^(n-1)), times a random factor in
** [1 - jitter, 1 + jitter].  attempts = 1 means no retry. */
typedef struct tt_retry {
  int attempts;
  double backoff;
  double factor;
  double max_backoff;
  double jitter;
} tt_retry;

/* A priority class: its name, its own workers, and whether its idle workers
** may take queued work of lower classes (those listed after it). */
typedef struct tt_class_opts {
  const char *name;
  int workers;
  bool lend;
} tt_class_opts;

/* A tenant quota: at most 'limit' queued plus running ops. */
typedef struct tt_quota {
  const char *tenant;
  int limit;
} tt_quota;

/* Pool options.  Zero values mean defaults: workers 4, queue 64 (per
** class), no timeout, no shutdown context, one attempt, no quotas, one
** class named "default", no idle detection, 100 dead letters, 100 recent
** failures. */
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
} tt_pool_opts;

/* Per-submission options; NULL fields and zero values take the pool's. */
typedef struct tt_submit_opts {
  const char *name;
  const tt_retry *retry;
  const char *priority;
  double timeout;          /* 0: the pool's */
  double wait;             /* > 0: wait up to this long for queue space */
} tt_submit_opts;

/* Pool events, delivered to observers off the pool's lock. */
enum {
  TT_EV_SUBMITTED = 0, TT_EV_STARTED, TT_EV_RETRIED, TT_EV_COMPLETED,
  TT_EV_FAILED, TT_EV_DEAD, TT_EV_STOPPED, TT_EV_REJECTED, TT_EV_IDLE,
  TT_EV_RESUMING, TT_EV_DRAINED, TT_NEVENTS
};

typedef struct tt_event {
  int kind;
  tt_pool *pool;
  const char *pool_name;
  uint64_t id;             /* op id (0 for pool-level events) */
  const char *name;        /* op name */
  const char *tenant;      /* may be NULL */
  const char *priority;    /* class name */
  int attempt;             /* 1-based */
  double at;               /* tt_now() */
  double duration;         /* for COMPLETED/FAILED/DEAD: run time */
  double delay;            /* for RETRIED: the backoff chosen */
  int code;                /* for FAILED/DEAD/REJECTED: error code */
  tt_obj *error;           /* for FAILED/DEAD: the error (borrowed) */
  tt_obj *cause;           /* for FAILED/DEAD: the op context's cause */
  tt_ctx *ctx;             /* the op's context where there is one */
} tt_event;

typedef void (*tt_observer)(const tt_event *ev, void *ud);

typedef struct tt_pool_stats {
  uint64_t submitted, completed, failed, retried, stopped, dead, rejected;
  uint64_t queued, inflight;
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

tt_pool *tt_pool_new(const tt_pool_opts *opts, int *err);
const char *tt_pool_name(tt_pool *p);

/* tt_pool_observe registers an observer; it returns an id for
** tt_pool_unobserve.  Observers run on engine threads and must not block. */
int tt_pool_observe(tt_pool *p, tt_observer fn, void *ud);
void tt_pool_unobserve(tt_pool *p, int id);

/* tt_pool_submit never blocks (unless opts->wait > 0): it returns a handle,
** or NULL with '*err' set to TT_EQUEUE_FULL, TT_EQUOTA, TT_ECLOSED,
** TT_EINVAL (unknown priority) or TT_ENOMEM.  The op's context is
** with_timeout(without_cancel(parent), timeout), also canceled when the
** pool's shutdown context ends (with that context's cause).  A refused
** submission takes nothing: the caller still owns 'arg'. */
tt_handle *tt_pool_submit(tt_pool *p, tt_ctx *parent,
                          const tt_submit_opts *opts, tt_fn fn, void *arg,
                          tt_drop drop, int *err);

/* tt_pool_drain closes the pool to new work and waits for queued and
** running ops, until 'ctx' (may be NULL) is done or 'timeout' runs out.
** It returns TT_OK, the context's error code or TT_ETIMEOUT; it may be
** called again to keep waiting. */
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
** attempts) and returns its new handle, or NULL with '*err'.
** tt_pool_drop_dead forgets it and returns true if it was there. */
tt_handle *tt_pool_retry_dead(tt_pool *p, uint64_t id, int *err);
bool tt_pool_drop_dead(tt_pool *p, uint64_t id);

/* }==================================================================== */

#ifdef __cplusplus
}
#endif

#endif
