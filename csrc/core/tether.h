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
  TT_EINTR,         /* an interrupt (Ctrl-C) ended the wait */
  TT_EDEADLK,       /* the wait could never end: it was made from inside
                    ** what it waits for (a pool drained by its own op) */
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

/* A tt_visit is called by a type's 'traverse' for each object held. */
typedef void (*tt_visit)(tt_obj *held, void *ud);

/* A tt_type describes a kind of object: its name (the Lua binding uses it
** as the metatable name, e.g. "tether.Context"), how to free it once the
** last reference goes, and optionally how to describe it in one line of
** text for logs.  'describe' writes at most 'n' bytes including the
** terminating zero and returns the length it wanted, as snprintf does.
**
** 'traverse' (may be NULL: the object holds no other objects) calls
** 'visit' once for each object that 'o' holds a reference to (NULL ones
** may be passed and are skipped): a context its parent, key and value, an
** error its cause and value, a channel its buffered items and the items
** of senders waiting on it, a handle its result.  It is how a channel
** refuses a send that would make a reference cycle (tt_chan_send).  It
** may take the object's own lock and must not call into the engine
** otherwise.  It reports what the object holds at that moment.  Only
** channel sends are checked for cycles: a channel's items come and go,
** while other objects hold what they were made with, plus what is set
** once later and not checked (a context's cancel cause, a handle's
** result, a group's first error), so a cause, result or error that holds
** the very object it is set on makes a cycle that is never freed.
**
** 'free' releases what the object holds with tt_unref like any caller.
** When that drops another object's last reference, the engine frees that
** object after 'free' returns, not inside it: releases run from a work
** list, so a chain of any length (a million nested contexts, errors
** wrapping errors, channels holding channels) is freed in constant stack
** depth. */
typedef struct tt_type {
  const char *name;
  void (*free)(tt_obj *o);
  int (*describe)(tt_obj *o, char *buf, size_t n);
  void (*traverse)(tt_obj *o, tt_visit visit, void *ud);
} tt_type;

/* Every object begins with this header.  'refs' is the reference count;
** a static object (the background context, the error sentinels) has
** 'refs' equal to -1 and is never freed.  Other negative values belong to
** the engine (an object whose free is pending). */
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

/* tt_holds reports whether 'o' holds 'target', directly or through the
** objects it holds (their types' 'traverse'), or is 'target' itself.  It
** walks every object reachable from 'o' once, so its cost grows with
** what 'o' holds, not with how deep.  When memory runs out it answers
** true (the safe side for a check that refuses). */
bool tt_holds(void *o, void *target);

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
  size_t index;            /* 0, or the position (from 1) of the item a
                           ** batch's refusal is about (set by its
                           ** maker before it is shared) */
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
** may use it for context values, causes and channel items.  'data' holds
** 'len' bytes followed by a NUL byte (not counted in 'len'), so text can
** be used as a C string; the bytes themselves may contain NULs. */
typedef struct tt_bytes {
  tt_obj hdr;
  size_t len;
  char data[];
} tt_bytes;

extern const tt_type tt_bytes_type;

/* tt_bytes_new copies 'len' bytes of 'data' (may be NULL when 'len' is
** 0) and a terminating NUL; NULL when out of memory. */
tt_bytes *tt_bytes_new(const void *data, size_t len);

/* }==================================================================== */


/* {====================================================================
** Time and the timer thread
** ===================================================================== */

/* tt_now returns seconds on a monotonic clock with an arbitrary origin. */
double tt_now(void);

/* tt_wall returns seconds since the Unix epoch (for logs only). */
double tt_wall(void);

/* tt_shutdown stops the engine's idle threads (idle executor threads,
** the timer thread when no deadline is pending: a pending one must still
** fire, the signal thread when no signal context listens (the program's
** own SIGINT handler is put back; the next interruptible wait installs
** tether's again), and the trace exporter once it has sent what it
** holds) and waits for them.  Call it at the end of a C program that
** wants a clean exit under leak checkers; work still running on the
** executor is waited for.  The engine restarts its threads on the next
** use, so it may race with any other use of the engine: a deadline added
** while the timer thread stops starts a new one at once.  Called from an
** engine thread, it never waits for that thread itself. */
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

enum {
  TT_SELECT_DEFAULT = -1,
  TT_SELECT_TIMEOUT = -2,
  TT_SELECT_INVALID = -3,
  TT_SELECT_INTERRUPTED = -4
};

/* tt_select waits until one of 'n' cases can proceed and returns its index
** (0-based), choosing at random among several ready ones.  With
** 'has_default' it never blocks and returns TT_SELECT_DEFAULT if nothing is
** ready.  'timeout' < 0 waits forever; otherwise TT_SELECT_TIMEOUT is
** returned when it runs out.  It returns TT_SELECT_INVALID, doing
** nothing, for n > 64 and when a send case's item holds the case's
** channel (see tt_chan_send; tt_holds tells which case).  Inside an
** interruptible section (tt_interrupt_begin) it also returns
** TT_SELECT_INTERRUPTED when an interrupt comes instead of blocking on.
** The calling thread blocks on a condition variable; nothing polls. */
int tt_select(tt_case *cases, int n, bool has_default, double timeout);

/* tt_latch_is_set reports whether the latch has fired. */
bool tt_latch_is_set(tt_latch *l);

/* tt_latch_wait waits for the latch, at most 'timeout' seconds (< 0:
** forever) and returns true once set. */
bool tt_latch_wait(tt_latch *l, double timeout);

/* tt_sleep sleeps 'seconds', returning early with the context's error
** code when 'ctx' (may be NULL) is done first (TT_EINTR when an
** interrupt ends it); else TT_OK. */
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
** (returns its error code) or 'timeout' runs out (TT_ETIMEOUT), or an
** interrupt ends it (TT_EINTR).  Sending on a closed channel returns
** TT_ECLOSED.
**
** A send that would make a reference cycle is refused with TT_EINVAL:
** when 'item' is the channel, or holds it through the objects it holds
** (tt_holds), the channel would keep itself alive and never be freed.
** Only items whose types have a 'traverse' and hold objects are looked
** at (a walk through what they hold, under one engine-wide lock); plain
** values cost nothing more.  Items of senders waiting on a channel count
** as held by it.  TT_ENOMEM when the look runs out of memory. */
int tt_chan_send(tt_chan *c, tt_obj *item, tt_ctx *ctx,
                 double timeout);

/* tt_chan_recv receives into '*item' (a new reference or NULL).  It returns
** TT_OK, TT_ECLOSED when the channel is closed and empty, the context's
** error code, TT_ETIMEOUT, or TT_EINTR. */
int tt_chan_recv(tt_chan *c, tt_obj **item, tt_ctx *ctx,
                 double timeout);

/* tt_chan_try_send and tt_chan_try_recv never wait.  try_send returns
** TT_OK, TT_ECLOSED, TT_EQUEUE_FULL (no room, no receiver waiting), or
** TT_EINVAL for a cycle as tt_chan_send; try_recv returns TT_OK,
** TT_ECLOSED (closed and empty) or TT_ETIMEOUT (nothing there). */
int tt_chan_try_send(tt_chan *c, tt_obj *item);
int tt_chan_try_recv(tt_chan *c, tt_obj **item);

/* }==================================================================== */


/* {====================================================================
** Contexts
** ===================================================================== */

/* A tt_ctx carries a deadline, a cancellation signal and values across
** API boundaries, with the semantics of Go's context package (1.21+).
** Contexts are immutable once made and safe to use from any thread.
**
** Constructors borrow their parent: the child takes its own reference,
** and the caller still owns, and releases, the parent it passed.  So a
** constructor's result passed straight into another leaks the inner one:
** tt_with_timeout(tt_without_cancel(req), 5, NULL) loses the reference
** returned by tt_without_cancel.  Hold the inner context and release it
** once the outer one is made (the outer keeps it alive):
**
**   tt_ctx *d = tt_without_cancel(req);
**   tt_ctx *bg = tt_with_timeout(d, 5, NULL);
**   tt_unref(d);
**   ... use bg ...
**   tt_unref(bg);
*/
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

/* tt_go runs fn(ctx, arg, &out) on the default elastic executor: threads
** are made on demand up to a cap (64 by default) and idle ones are kept
** for a while (30 s); at the cap, tasks wait in a FIFO queue.  'ctx' is
** the task's context (NULL: tt_background()); the task holds a reference
** to it until it has ended, so the caller may release its own at once.
** Like Go's "go f(ctx)", tt_go only passes the context: a task that must
** stop when the context is done checks it.  To detach work from a
** request, pass a context made for it, such as
** tt_with_timeout(tt_without_cancel(req), s, NULL) (see the nested
** constructors in the Contexts section).  'name' is copied (NULL:
** "task").  Returns a handle, or NULL with '*err' (may be NULL); the
** caller then still owns 'arg'.  A failed task's result is the error
** object it stored, else a tt_error for the code it returned. */
tt_handle *tt_go(tt_ctx *ctx, const char *name, tt_fn fn, void *arg,
                 tt_drop drop, int *err);

/* tt_exec runs 'fn(arg)' on the executor with no handle (used for
** after_func and internal work).  Returns TT_OK or an error.  Never call
** it holding a lock that 'fn' takes: 'fn' may start at once. */
int tt_exec(void (*fn)(void *arg), void *arg);

/* Thread hooks let an embedder attach state to engine threads (the Lua
** binding gives each worker its own lua_State): 'on_exit' runs on an
** executor or pool worker thread just before it ends. */
void tt_set_thread_exit_hook(void (*on_exit)(void));

/* tt_engine_thread tells whether the calling thread is one the engine
** started (executor, pool worker, timer, signal thread, trace exporter),
** as opposed to one of the program's own.  Engine threads block every
** signal; a child process they fork gets the default mask back. */
bool tt_engine_thread(void);

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
** tenant.  (A quota names its tenant as a C string: a tenant whose name
** holds a NUL byte has its own bucket but takes 'quota_default'.) */
typedef struct tt_quota {
  const char *tenant;
  int limit;
} tt_quota;

/* Pool options.  Zero values mean defaults: workers 4, queue 64 (per
** class), no timeout, no shutdown context, one attempt, no quotas, one
** class named "default", no idle detection, 100 dead letters, 100 recent
** failures, an exit timeout of 5 s.
**
** - Workers are started by tt_pool_new, 'workers' of them for the one
**   class, else each class's own ('workers', if also given, must equal
**   their sum).  They end once the pool is drained or freed.
** - 'queue' bounds each class's ready queue.  Ops waiting for a retry
**   are not in it: they count as queued in the stats, in quotas and for
**   drain, but re-enter the ready queue when their delay ends whatever
**   its length, so a retry is never lost.
** - The tenant of an op is a byte string, compared whole (any length,
**   any bytes): the one its submission gives (tt_submit_opts'
**   'tenant_set'), else the value under 'tenant_key' in its parent
**   context: a tt_bytes gives its bytes, any other object its
**   tt_describe text (up to 255 bytes).  Ops without one share the quota
**   bucket "default".  A tenant's limit is its entry in 'quotas', else
**   'quota_default'.
** - dead_cap < 0 keeps no dead letters (ops that fail their last attempt
**   then count as 'failed'); failures_cap < 0 keeps no failure records.
** - 'exit_timeout' is how long tt_exit_drain may wait for the pool when
**   the program ends (< 0: not at all, what is left is abandoned at
**   once); see "Exit" below. */
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
  double exit_timeout;     /* 0: 5 s; < 0: none */
  const struct tt_pool_hook *hook;  /* copied; NULL: none */
  /* A durable store that takes the submissions which find the queue
  ** full and can travel (DESIGN section 11; referenced by the pool;
  ** NULL: none), and how long a spill may wait for the store's commit
  ** before its handle resolves TT_ESTORE (<= 0: 5 s).  With a store, an
  ** accepted op that can travel keeps a copy of its function name and
  ** arguments, so that the exit drain can write it to the store if it
  ** is still queued then; without one, ops keep nothing of the kind. */
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
  /* With 'tenant_set', the op's tenant is 'tenant_len' bytes at 'tenant'
  ** (copied; NULL: no tenant), and the pool's tenant_key is not looked
  ** up: an embedder that reads tenants its own way (the Lua binding)
  ** gives them here, to tt_pool_precheck and tt_pool_submit alike. */
  bool tenant_set;
  const char *tenant;
  size_t tenant_len;
  bool attached;           /* run with 'parent' itself (see below) */
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
** ABANDONED one still queued or running when the program ended and its
** pool could wait no longer (tt_pool_abandon, called by tt_exit_drain);
** like COMPLETED, FAILED, DEAD and STOPPED, each is an op's last event:
** a running op that is abandoned runs on, but its end emits nothing. */
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
  const char *tenant;      /* may be NULL; NUL-terminated, but it may
                           ** hold NULs: 'tenant_len' bytes */
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
  tt_ctx *ctx;             /* for events about an op: its context, as
                           ** the last attempt's function saw it (with
                           ** the span the pool's hook gave it), or the
                           ** submission's parent before any attempt (for
                           ** its values: the op is detached from it) */
  size_t tenant_len;       /* the length of 'tenant' (0 without one) */
  bool running;            /* for ABANDONED: the op was running (else
                           ** queued or waiting for a retry) */
} tt_event;

typedef void (*tt_observer)(const tt_event *ev, void *ud);

/* How an observer is called (tt_pool_observe_with).
** - 'immediate': called under the pool's lock as each event happens, on
**   the thread that changed the pool, with nothing queued or allocated;
**   it must only do quick lock-free work (atomic counters: metrics are
**   counted this way), must not call the pool and must not block.  The
**   event's strings and objects are borrowed for the call, and its 'at'
**   is 0 (no clock is read under the lock for it).
** - 'wants' (may be NULL: all): for the other observers, which kinds of
**   events they want; an event no observer wants is never queued, so an
**   observer of failures costs ops that end well nothing.  It is asked
**   under the pool's lock (again at delivery) and must be as quick.
** - 'release' (may be NULL): runs once with 'ud' when the observer is
**   gone: after tt_pool_unobserve, or when the pool's memory is freed
**   (after its last event), so that 'ud' can live as long as the pool. */
typedef struct tt_observer_opts {
  bool immediate;
  bool (*wants)(int kind, void *ud);
  void (*release)(void *ud);
} tt_observer_opts;

/* A pool hook runs on the worker around each attempt of an op, without
** any lock held.  'begin' gets the STARTED event (ctx: the attempt's
** context) and may return a child of that context for the attempt's
** function (a new reference; NULL keeps the context as it is), with
** '*state' for 'end'; 'end' runs once the function returned, with its
** result code and, on failure, its error (borrowed).  Tracing makes a
** span per attempt this way (tt_trace_pool_hook). */
typedef struct tt_pool_hook {
  tt_ctx *(*begin)(const tt_event *ev, void **state, void *ud);
  void (*end)(void *state, int rc, tt_obj *err, void *ud);
  void *ud;
} tt_pool_hook;

/* Pool counters, read in one snapshot under the pool's lock, where
**   submitted = completed + failed + stopped + dead + spilled + abandoned
**               + queued + inflight
** always holds (the accounting identity).  'queued' counts ops ready to
** run or waiting for a retry, 'inflight' running ones; the others only
** grow.  'spilled' counts accepted ops written to the durable store
** instead of the queue (or, at exit, out of the queue: see "Exit"),
** 'abandoned' ops still queued or running when the
** program ended and their pool's exit drain ran out of time
** (tt_pool_abandon; each also emits TT_EV_ABANDONED, which
** tt_log_observe_pool writes as one "abandoned at exit" log record).
** An op is counted in exactly one of the terms at any instant, so the
** identity holds at exit too.  'dead' counts ops that
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
  char *tenant;            /* may be NULL; NUL-terminated, 'tenant_len'
                           ** bytes (NULs included) */
  tt_obj *error;           /* may be NULL */
  tt_obj *cause;           /* may be NULL */
  int code;
  int attempts;
  double at;               /* tt_wall() */
  size_t tenant_len;       /* the length of 'tenant' (0 without one) */
} tt_failure;

/* tt_pool_new makes a pool and starts its workers; NULL with '*err'
** (TT_EINVAL for bad options, TT_ENOMEM, TT_ETHREAD).  'opts' may be
** NULL.
**
** The last tt_unref closes the pool, stops queued ops (their handles
** resolve TT_H_STOPPED) and drops the dead letters, but does not wait
** for running ops: a pool released without a drain must not hang on an
** op that never ends.  Their workers are detached; each finishes its op
** (whose handle resolves as usual), and the pool's memory lives until
** the last of them has ended.  When there is nothing running, the
** workers are joined before tt_unref returns.  To wait for running ops,
** drain first (tt_pool_drain). */
tt_pool *tt_pool_new(const tt_pool_opts *opts, int *err);
const char *tt_pool_name(tt_pool *p);

/* tt_pool_id returns the pool's id: unique among the pools of the process
** (ids are never reused), from 1.  Names need not be unique; ids are. */
uint64_t tt_pool_id(tt_pool *p);

/* tt_pool_observe registers an observer; it returns an id (> 0) for
** tt_pool_unobserve, or -1 when out of memory.  Observers run on engine
** threads (or a caller's, which then delivers the queued events) and must
** not block.  They may call the pool, also to (un)register observers.
** Once tt_pool_unobserve returns, the observer is not called again.  The
** event's pool may be being freed: observers must not take a reference to
** it. */
int tt_pool_observe(tt_pool *p, tt_observer fn, void *ud);
void tt_pool_unobserve(tt_pool *p, int id);

/* tt_pool_observe_with is tt_pool_observe with options (NULL: those of
** tt_pool_observe).  An immediate observer must not (un)register
** observers from its callback. */
int tt_pool_observe_with(tt_pool *p, tt_observer fn, void *ud,
                         const tt_observer_opts *opts);

/* tt_pool_workers returns how many worker threads the pool was made
** with (all classes together). */
int tt_pool_workers(tt_pool *p);

/* tt_pool_submit never blocks (unless opts->wait > 0): it returns a handle,
** or NULL with '*err' set to TT_EQUEUE_FULL, TT_EQUOTA, TT_ECLOSED,
** TT_EINVAL (unknown priority, bad retry policy), TT_ENOMEM, or TT_EINTR
** (an interrupt ended the wait for room, in an interruptible section).
** The op's context is with_timeout(without_cancel(parent), timeout),
** made afresh for each attempt as it starts, also canceled when the
** pool's shutdown context ends (with that context's cause; at once for
** attempts that start after it ended).  A refused submission takes
** nothing: the caller still owns 'arg'.  Refusals (not
** TT_EINVAL/TT_ENOMEM) count in 'rejected' and emit TT_EV_REJECTED.
** Ops get increasing ids from 1.
**
** An attempt fails when 'fn' returns non-zero.  Its cause is the op
** context's cause if that context ended (&tt_deadline for a timeout),
** else the error itself.  While attempts remain it is retried after the
** policy's delay, on the timer thread; a canceled parent does not stop
** retries, but the end of the shutdown context does: the op then fails
** for good with the shutdown's cause.  An op that fails its last attempt
** becomes a dead letter (its handle resolves TT_H_FAILED).
**
** With opts->attached, the op is not detached: its context is 'parent'
** itself (the same object, referenced), for work that belongs to its
** submitter's lifetime, such as an HTTP handler whose context is its
** request's.  The pool then adds no timeout ('timeout' is ignored), never
** cancels that context (not when its shutdown context ends, not when the
** op ends), runs one attempt ('retry' is ignored), and an op that fails
** counts as 'failed', never as a dead letter; the pool's hook is not run
** for it (its context is its submitter's, with the submitter's span).  It
** is queued, counted and observed like any other op. */
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

/* One op of a batch (tt_pool_submit_many): its argument and, for a pool
** with an overflow store and a batch with opts->spill_fn, the op's
** arguments as wire values (tt_submit_opts' 'spill_args'; NULL: this op
** cannot travel). */
typedef struct tt_batch_op {
  void *arg;
  const void *spill_args;
  size_t spill_args_len;
} tt_batch_op;

/* What a batch's submitter learns as its ops end: 'end' is called as the
** handle of each accepted op resolves (whatever its final state, even
** when the pool abandons it at exit), with 'index0' plus the op's
** position in the batch.  It runs under the pool's lock and may only
** take leaf locks (set a latch, tt_chan_try_send); the pool never calls
** it for a refused op.  Each accepted op holds a reference to 'ud'. */
typedef struct tt_batch_end {
  void (*end)(tt_obj *ud, size_t i, tt_handle *h);
  tt_obj *ud;
  size_t index0;
} tt_batch_end;

/* tt_pool_submit_many submits the 'n' ops of 'ops', in order, each as
** tt_pool_submit(p, parent, opts, fn, ops[i].arg, drop) would, and
** returns how many it accepted: ops 0..k-1, whose handles are in
** hs[0..k-1] (new references), and whose arguments are the pool's.  It
** stops at the first refusal, whose code goes to '*err' (TT_OK when all
** were accepted); the caller keeps the arguments of ops k..n-1.  Unlike n
** calls of tt_pool_submit, the ops are queued under one hold of the
** pool's lock (per up to TT_BATCH_CHUNK ops) and the workers are woken
** once for them, not once per op; everything else is the same: each op
** has its own id, counts in every stat, emits its own SUBMITTED event,
** is checked against the queue's capacity, the tenant's quota and a
** 'wait' for room (which bounds the whole call), and, with an overflow
** store, an op that finds the queue full spills to it when it brought
** spill_args (its argument is then dropped and its handle resolves
** when the store answers), else is refused TT_EQUEUE_FULL.  'be' (may be
** NULL) reports each accepted op's end; a batch with 'be' never spills. */
size_t tt_pool_submit_many(tt_pool *p, tt_ctx *parent,
                           const tt_submit_opts *opts, tt_fn fn,
                           tt_drop drop, const tt_batch_op *ops, size_t n,
                           const tt_batch_end *be, tt_handle **hs,
                           int *err);

/* How many ops tt_pool_submit_many queues per hold of the pool's lock. */
#define TT_BATCH_CHUNK 256

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
** waiting (TT_EINTR when an interrupt ended the wait).  On TT_OK every
** handle is resolved and every event delivered.  Once drained, the
** workers end.
**
** Called from inside one of the pool's own ops, it would wait for that
** op, that is for itself, forever: it returns TT_EDEADLK at once and
** changes nothing (the pool stays open).  Every call that waits for a
** pool to empty makes the same check. */
int tt_pool_drain(tt_pool *p, tt_ctx *ctx, double timeout);

/* tt_pool_wait_idle waits until nothing is queued, waiting for a retry
** or running, without closing the pool (new work may come meanwhile, and
** is waited for too), until 'ctx' (may be NULL) is done or 'timeout'
** (< 0: none) runs out.  It returns TT_OK, the context's error code,
** TT_ETIMEOUT, TT_EINTR, or TT_EDEADLK when called from one of the
** pool's own ops (which would wait for itself, as tt_pool_drain says).
** On TT_OK every op that ended has its handle resolved and its events
** delivered. */
int tt_pool_wait_idle(tt_pool *p, tt_ctx *ctx, double timeout);

/* tt_pool_abandon closes the pool and gives up on what it still holds:
** each op still queued (or waiting for a retry) or running is counted in
** 'abandoned', emits TT_EV_ABANDONED as its last event, has its handle
** resolved TT_H_FAILED with an error of code TT_EABANDONED (the event
** says whether it was running; tt_log_observe_pool turns it into one
** log record "abandoned at exit" with the state "queued" or "running").
** A queued op's argument is dropped; a
** running op's context is canceled (its cause the abandoned error) and
** it runs on, but whatever it ends with is no longer counted.  Returns how
** many ops were abandoned. */
size_t tt_pool_abandon(tt_pool *p);

/* tt_pool_exit_timeout returns the pool's exit timeout in seconds (0 when
** it has none). */
double tt_pool_exit_timeout(tt_pool *p);

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

/* What a pool is doing, for an operator's view (the admin page):
** tt_pool_snapshot reads, in one snapshot under the pool's lock, its
** stats, its state, and per priority class the workers (busy running an
** op, idle waiting for one) and the ops ready in its queue.  It fills
** '*info' and up to 'max' entries of 'cls' (may be NULL), and returns
** the number of classes.  A class's name belongs to the pool (valid
** while the caller holds a reference to it). */
typedef struct tt_pool_class_info {
  const char *name;
  int workers;
  int busy;
  int idle;
  size_t queued;           /* ready ops in the class's queue */
  bool lend;
} tt_pool_class_info;

typedef struct tt_pool_info {
  tt_pool_stats stats;
  int nclasses;
  int queue_cap;           /* ready ops each class's queue holds */
  size_t waiting;          /* queued ops in no class's queue: waiting
                           ** for a retry or for a spill's commit */
  bool closed;             /* refuses new work */
  bool drained;            /* closed and empty */
  bool idle;               /* nothing queued or running */
  bool quotas;             /* tenants' ops are counted against quotas */
  double timeout;          /* per op, seconds; 0: none */
  int dead_cap;            /* dead letters kept at most; 0: none */
  int failures_cap;        /* recent failures kept; 0: none */
} tt_pool_info;

size_t tt_pool_snapshot(tt_pool *p, tt_pool_info *info,
                        tt_pool_class_info *cls, size_t max);

/* tt_pool_op_id returns the id of the op whose handle 'h' is (as events,
** in-flight lists and dead letters name it), or 0 if 'h' is not a pool
** op's handle. */
uint64_t tt_pool_op_id(tt_handle *h);

/* tt_pool_tenants lists the quota buckets in use (ops queued or running
** per tenant, counted only when the pool has quotas), the busiest first:
** a malloc'd array of at most 'max' (free it with tt_pool_tenants_free),
** its length in '*n' and the number of buckets in use in '*total'.
** 'name' holds 'len' bytes (NULs included) and a NUL; ops without a
** tenant count under "default"; 'limit' is the bucket's quota (0: none). */
typedef struct tt_pool_tenant {
  char *name;
  size_t len;
  int active;
  int limit;
} tt_pool_tenant;

tt_pool_tenant *tt_pool_tenants(tt_pool *p, size_t max, size_t *n,
                                size_t *total);
void tt_pool_tenants_free(tt_pool_tenant *t, size_t n);

/* tt_pool_dead_page and tt_pool_failures_page are tt_pool_dead_letters
** and tt_pool_failures a page at a time, newest first: at most 'max'
** records from 'offset' (0: the newest), with the number kept in
** '*total', so that a pool holding a million dead letters can be looked
** at without copying them all.  NULL with '*n' 0 when the page is empty
** (or memory ran out).  Free with tt_failures_free. */
tt_failure *tt_pool_dead_page(tt_pool *p, size_t offset, size_t max,
                              size_t *n, size_t *total);
tt_failure *tt_pool_failures_page(tt_pool *p, size_t offset, size_t max,
                                  size_t *n, size_t *total);

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

#define TT_NO_LIMIT (-1)   /* a group limit: no limit */

/* tt_group_new returns a group whose tasks run with the context stored in
** '*gctx' (a new reference, also held by the group): a child of 'parent'
** made by tt_with_cancel.  At most 'limit' tasks run at once, as Go's
** SetLimit: a negative limit (TT_NO_LIMIT) means no limit, and 0 admits
** no task at all.  It returns NULL (and '*gctx' NULL) if 'parent' is NULL
** or memory runs out.
**
** 'gctx' is canceled by the group's first error, with that error as its
** cause, or by a tt_group_wait that finds no error, with no cause (its
** cause is then tt_canceled), or by the parent. */
tt_group *tt_group_new(tt_ctx *parent, int limit, tt_ctx **gctx);

/* tt_group_go runs fn(gctx, arg, &out) on the default executor.  When the
** group is at its limit, it first waits until a task ends; the wait is
** unbounded, as in Go, so a task that calls tt_group_go on its own group
** at the limit can wait forever.  A group whose limit is 0 admits no
** task: there Go's Go would wait forever for a slot that never comes, so
** tt_group_go returns TT_EINVAL at once instead.  The wait for a slot is
** a wait of the engine: in an interruptible section (tt_interrupt_begin)
** an interrupt ends it with TT_EINTR.  It returns TT_OK (the group then
** owns 'arg' and calls 'drop(arg)', if 'drop' is not NULL, once 'fn' has
** returned), or TT_EINVAL, TT_EINTR, TT_ENOMEM or TT_ETHREAD, and then
** the caller keeps 'arg'.
**
** A task that cannot be started (TT_ETHREAD: no thread could be made;
** TT_ENOMEM) fails the group as a task that ran and failed would: its
** error (that code, "cannot create thread") is the group's first error
** if no other came before, cancels gctx, and is what tt_group_wait
** returns.  As in Go, callers need not check what tt_group_go returns to
** learn that work was lost.
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
** leaving 'arg' with the caller, when the group is at its limit (always,
** for a limit of 0) or the task could not be started (which also fails
** the group, as for tt_group_go), and true once the task is started. */
bool tt_group_try_go(tt_group *g, tt_fn fn, void *arg, tt_drop drop);

/* tt_group_wait waits until every task started before the call has ended,
** with the tasks started while those ran (by them or by other threads),
** then cancels gctx (a no-op when a failure already did).  It returns
** TT_OK with '*err' NULL, or TT_EFAILED with '*err' a new reference to
** the group's first error ('err' may be NULL), or TT_EINTR when an
** interrupt ended the wait (tt_interrupt_begin; gctx is then left as it
** is).  It may be called again,
** also by several threads at once and after more tt_group_go calls: it
** waits for the tasks started since, and the first error stays the first
** error for the group's whole life.  The wait is not bounded; use
** tt_group_latch in a select to bound it.  Rather than sleep while
** tasks of the group wait for an executor thread, tt_group_wait takes
** them and runs them on the calling thread, as Go's scheduler runs
** goroutines on the thread that blocks (see tt_group_set_inline). */
int tt_group_wait(tt_group *g, tt_obj **err);

/* tt_group_set_inline says whether tt_group_wait may run tasks of 'g' on
** the waiting thread (the default) or must leave every task to the
** executor's threads, for tasks that need a thread of their own (the Lua
** binding's: each runs in a worker's Lua state).  Call it before the
** first tt_group_go. */
void tt_group_set_inline(tt_group *g, bool on);

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
** Other results: TT_EINVAL (NULL 'sf', 'ctx' or 'fn'), TT_ENOMEM, and
** TT_EINTR when an interrupt made the caller leave (tt_interrupt_begin). */
int tt_flight_call(tt_flight *sf, tt_ctx *ctx, const char *key,
                   size_t keylen, tt_fn fn, void *arg, tt_drop drop,
                   double timeout, bool cancel_when_abandoned,
                   tt_obj **result, bool *shared);

/* A tt_flight_cb receives the outcome of an asynchronous singleflight
** call (tt_flight_call_async): 'rc' and 'result' as tt_flight_call would
** return them, and 'shared'. */
typedef void (*tt_flight_cb)(void *cbarg, int rc, tt_obj *result,
                             bool shared);

/* tt_flight_call_async is tt_flight_call without a waiting thread: the
** caller joins the run for 'key' (or starts it, on the default executor,
** exactly as tt_flight_call does, with the same 'fn', 'arg', 'drop',
** 'timeout' and 'cancel_when_abandoned' rules) and returns at once;
** cb(cbarg, rc, result, shared) then tells the outcome.  An async caller
** counts in tt_flight_waiting and in 'shared' like a waiting thread, and
** results are not cached either.
**
** It returns TT_OK when the caller joined a run: cb is then called
** exactly once, possibly before tt_flight_call_async returns.  Otherwise
** cb is never called and it returns TT_EINVAL (NULL 'sf', 'ctx', 'fn' or
** 'cb'), TT_ENOMEM, or tt_ctx_err(ctx) when ctx was already done.
**
** cb is called with 'rc' TT_OK or TT_EFAILED and the run's value or error
** when the run ends: on the thread that ended it (the executor thread
** that ran fn, or the caller's when the run could not be started), after
** the outcome is published to every caller and with no lock of the
** engine held.  If ctx ends first, cb is called instead, on an executor
** thread (as tt_after_func's functions are), with 'rc' tt_ctx_err(ctx),
** 'result' NULL and 'shared' false: the caller has then left the run, as
** a tt_flight_call whose ctx ended (when every caller has left, a run
** started with 'cancel_when_abandoned' is canceled).
**
** 'result' is lent for the duration of cb (it may be NULL): take a
** reference with tt_ref to keep it.  cb must not block: the callbacks of
** a run's async callers are called one after another on one thread, and
** the executor's threads are shared.  It may call into the flight again
** without blocking (tt_flight_call_async for the same key then starts a
** new run). */
int tt_flight_call_async(tt_flight *sf, tt_ctx *ctx, const char *key,
                         size_t keylen, tt_fn fn, void *arg, tt_drop drop,
                         double timeout, bool cancel_when_abandoned,
                         tt_flight_cb cb, void *cbarg);

/* tt_flight_forget makes later calls for 'key' start a new run even if
** one is in flight, as x/sync's Forget.  Callers already waiting for the
** old run keep waiting for it.  Forgetting a key not in flight does
** nothing. */
void tt_flight_forget(tt_flight *sf, const char *key, size_t keylen);

/* tt_flight_inflight returns how many keys have a run in flight. */
size_t tt_flight_inflight(tt_flight *sf);

/* tt_flight_waiting returns how many callers wait for the run in flight
** for 'key' (0 when none is), threads and async callers alike: each of
** them will get its result, unless its own context ends first. */
int tt_flight_waiting(tt_flight *sf, const char *key, size_t keylen);

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
** Signals, interrupts and exit
** ===================================================================== */


/* Signals.  tether handles SIGINT, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2
** (tt_signal_supported); others, SIGKILL and SIGSEGV among them, cannot
** make signal contexts.  tt_signal_number reads a name ("INT" or
** "SIGINT") and returns the number, 0 for an unknown name;
** tt_signal_name gives the short name of a number ("INT"), NULL if
** unknown. */
bool tt_signal_supported(int sig);
int tt_signal_number(const char *name);
const char *tt_signal_name(int sig);

/* A tt_sigreg is the registration of a signal context; its type is named
** "tether.SignalStop". */
typedef struct tt_sigreg tt_sigreg;
extern const tt_type tt_sigreg_type;

/* tt_signal_context returns a child of 'parent' (tt_with_cancel) that the
** first of the 'n' signals in 'sigs' to arrive cancels, as Go's
** signal.NotifyContext: its cause is an error of code TT_ESIGNAL whose
** message names the signal ("received signal SIGINT") and whose 'value' is
** a tt_bytes with the short name ("INT").  '*reg' receives the
** registration (a new reference), whose tt_signal_stop restores the
** previous disposition.  While the context listens, the signals go to it
** only (for SIGINT: no interrupt, no host handler).  Once it is done (by a
** signal or otherwise) and until it is stopped, those signals take their
** default action: a second Ctrl-C ends a program stuck in its drain.
** Several contexts may listen for one signal; it cancels them all.  One
** engine thread receives the signals; handlers do nothing but wake it.
** Returns NULL with '*err': TT_EINVAL for a signal tt_signal_supported
** refuses (or no signal), TT_ENOMEM, TT_ETHREAD. */
tt_ctx *tt_signal_context(tt_ctx *parent, const int *sigs, int n,
                          tt_sigreg **reg, int *err);

/* tt_signal_stop unregisters: the context stops listening and is
** canceled (with TT_CANCELED, if it was not done), and each of its
** signals that no other context holds gets back the disposition it had
** before tether's.  Further calls do nothing. */
void tt_signal_stop(tt_sigreg *reg);

/* tt_sigreg_context returns the registration's context (borrowed). */
tt_ctx *tt_sigreg_context(tt_sigreg *reg);

/* Interrupts.  Between tt_interrupt_begin and tt_interrupt_end (sections
** nest), the calling thread's waits (tt_select, and every wait built on
** it: sleeps, channel operations, handles, drains, groups, singleflight)
** also end when an interrupt comes: tt_select returns
** TT_SELECT_INTERRUPTED, the others TT_EINTR (tt_latch_wait and
** tt_ctx_wait return false).  Once interrupted, every later wait of the
** section ends at once.  An interrupt is a call of tt_interrupt, or a
** SIGINT when the program had a SIGINT handler of its own (lua.c's): a
** wait of a section that is about to block installs tether's handler,
** which calls the program's first and then interrupts the waits in
** progress.  tt_interrupt_end returns true if a wait of the section was
** interrupted.  Waits of engine threads are never interrupted this way:
** work learns of signals through contexts. */
void tt_interrupt_begin(void);
bool tt_interrupt_end(void);

/* tt_interrupt interrupts every wait of an interruptible section in
** progress, on any thread.  Not for signal handlers. */
void tt_interrupt(void);

/* tt_interrupt_count counts the interrupts so far (both kinds). */
unsigned long tt_interrupt_count(void);

/* Exit.  A pool registered with tt_exit_track is drained when its owner
** ends.  tt_exit_drain lets every pool of the owner drain together,
** under one deadline, the largest exit timeout among them: it waits,
** the pools still open (an op may hand work to another pool), until all
** of them are idle at once, then closes them all and waits for each to
** drain in the time left; then, in a pool that did not drain in time,
** the ops still queued that can travel (named ops with plain-data
** arguments) go to the pool's overflow store if it has one, as a full
** queue would send them (each counted as spilled, TT_EV_SPILLED, its
** handle resolved TT_ESPILLED; the drain waits for the store's commits,
** at most the pool's spill_timeout, and logs one record "queued ops put
** back in the store at exit" per pool), and it abandons what is left,
** closures and running ops (tt_pool_abandon: each op counted and
** reported as one log record "abandoned at exit").  The first
** tt_exit_track also registers an atexit handler that does this for
** every owner, so a program that calls exit() without closing anything
** loses nothing silently.  The Lua binding tracks the pools a Lua state
** makes, with the state as the owner, and drains them when the state
** closes. */

/* tt_exit_track registers 'p' (a reference is held until it is drained
** or untracked) under 'owner' (any pointer; NULL is an owner too).
** Returns TT_OK or TT_ENOMEM. */
int tt_exit_track(tt_pool *p, const void *owner);

/* tt_exit_untrack forgets 'p' (nothing happens at exit) if tracked. */
void tt_exit_untrack(const tt_pool *p);

/* What one tt_exit_drain did. */
typedef struct tt_exit_report {
  size_t pools;            /* pools drained or abandoned */
  size_t abandoned;        /* ops abandoned */
  double seconds;          /* time spent */
  size_t spilled;          /* queued ops put back in overflow stores */
} tt_exit_report;

/* tt_exit_drain drains the tracked pools of 'owner' (every owner when
** 'all' is true) as described above, with 'timeout' seconds as the
** deadline (< 0: the largest exit timeout of those pools), and forgets
** them.  Waits are not interruptible.  'rep' (may be NULL) receives what
** happened. */
void tt_exit_drain(const void *owner, bool all, double timeout,
                   tt_exit_report *rep);

/* tt_exit_stats adds up the stats of the tracked pools of 'owner' (every
** owner when 'all') into '*sum' and returns how many there are. */
size_t tt_exit_stats(const void *owner, bool all, tt_pool_stats *sum);

/* tt_exit_pools fills 'out' with up to 'max' of the tracked pools (of
** every owner: the pools a program's own Lua states made), each a new
** reference for the caller to release, in no particular order, and
** returns how many are tracked. */
size_t tt_exit_pools(tt_pool **out, size_t max);

/* }==================================================================== */


/* {====================================================================
** HTTP servers (http.c, on libmicrohttpd)
** ===================================================================== */

/* A tt_http_server serves HTTP/1.1 on one address: each request whose
** headers and body have arrived is handed to a handler that runs on a
** worker of the server's pool, with the request's context as its own
** context (an attached op: see tt_pool_submit).  While the handler runs
** and no response has been committed, the request is suspended in
** libmicrohttpd and one watcher thread per server polls its socket for a
** hang-up (EPOLLRDHUP); a client that hangs up cancels the request
** context with the cause &tt_http_client_gone.  The request context is
** also canceled with TT_DEADLINE after the request timeout, with the
** server's cause when the server closes, and with tt_canceled once the
** handler returns (as Go's request context when ServeHTTP returns).
**
** Bad input never reaches a handler: a request with both Content-Length
** and Transfer-Encoding, or several Content-Length headers, gets 400; a
** body over 'max_body' 413; a full pool, or more than 'max_inflight'
** requests waiting for a response, 503 with Retry-After; libmicrohttpd
** answers malformed request lines and headers itself and closes
** connections that stay silent for 'idle_timeout' seconds.  The type is
** named "tether.HttpServer". */
typedef struct tt_http_server tt_http_server;
extern const tt_type tt_http_server_type;

/* A tt_http_req is one request and its response, as a handler sees it
** ("tether.HttpRequest").  The request's fields are fixed before the
** handler runs; the response functions may be called from any thread
** while the request lives (a reference keeps it, also after the handler
** returned: the functions then report TT_ECLOSED). */
typedef struct tt_http_req tt_http_req;
extern const tt_type tt_http_req_type;

/* tt_http_client_gone is the cause of a request context whose client
** hung up (code TT_ECLIENT_GONE, message "client gone"); a static
** sentinel, compared by pointer. */
extern tt_error tt_http_client_gone;

/* The key of the request id in request contexts: the string
** "request_id"; the value is a tt_bytes. */
extern const tt_key tt_http_request_id_key;

/* A handler.  It runs on a worker of the server's pool with the request
** context 'ctx', the request, and the 'ud' of the server's options.  It
** returns TT_OK, or non-zero with an error object (a new reference, may
** be NULL) in '*err': the client then gets 500 with the request id as
** the whole body, if no response was committed yet, and the error goes
** to the log.  A handler that commits nothing answers 200 with an empty
** body (or the status it set, with the headers it set). */
typedef int (*tt_http_handler)(tt_ctx *ctx, tt_http_req *req, void *ud,
                               tt_obj **err);

/* Server options.  Zero values mean defaults. */
typedef struct tt_http_opts {
  const char *name;          /* copied; NULL: "http" (logs, events) */
  const char *addr;          /* "HOST:PORT": an IPv4 literal, [IPv6]
                             ** or "localhost"; ":PORT" is loopback too;
                             ** port 0 picks a free one.  NULL:
                             ** "127.0.0.1:0" */
  tt_pool *pool;             /* required; referenced */
  tt_http_handler handler;   /* required */
  void *ud;
  void (*ud_drop)(void *ud); /* may be NULL: runs once the server's
                             ** memory goes, after every request */
  size_t max_body;           /* bytes; 0: 1 MiB */
  int max_inflight;          /* requests waiting for a response; 0:
                             ** 1024 */
  double request_timeout;    /* seconds; 0: 30; < 0: none */
  int idle_timeout;          /* seconds a connection may stay silent;
                             ** 0: 30; libmicrohttpd's connection
                             ** timeout, always set */
  int retry_after;           /* seconds in the Retry-After of 503s;
                             ** 0: 1 */
  tt_ctx *shutdown;          /* may be NULL: when it ends, the server
                             ** closes with its cause */
  const char *tls_cert;      /* PEM files, both or neither: HTTPS */
  const char *tls_key;
} tt_http_opts;

/* tt_http_new starts a server: it binds and listens before it returns.
** On failure it returns NULL with '*err' (TT_EINVAL for bad options,
** TT_ECLOSED when the address cannot be bound, TT_ENOMEM, TT_ETHREAD)
** and a message in 'msg' (may be NULL; 'msglen' bytes); the caller then
** keeps 'ud'. */
tt_http_server *tt_http_new(const tt_http_opts *opts, int *err, char *msg,
                            size_t msglen);

/* tt_http_addr returns the bound address, "127.0.0.1:PORT" (owned by the
** server). */
const char *tt_http_addr(tt_http_server *s);
const char *tt_http_name(tt_http_server *s);

/* tt_http_close stops the server at once, as Go's Server.Close: it
** stops listening, cancels every request context with 'cause'
** (referenced; NULL: an error with code TT_ECLOSED, "http: server
** closed"), closes every connection (a handler still running finds its
** response functions report TT_ECLOSED) and returns once libmicrohttpd
** and the watcher have stopped.  Later calls do nothing.  It must not be
** called from an observer or a libmicrohttpd callback. */
void tt_http_close(tt_http_server *s, tt_obj *cause);

/* tt_http_shutdown stops accepting connections and waits until every
** request has finished (its handler returned and its response was sent),
** then closes the server, as Go's Server.Shutdown; responses sent
** meanwhile close their connections, and a request that arrives on an
** open connection gets 503.  It returns TT_OK, or the error code of 'ctx'
** (may be NULL) or TT_ETIMEOUT ('timeout' < 0: none) if that ends first,
** or TT_EINTR when an interrupt ends the wait (tt_interrupt_begin): the
** server then goes on draining without accepting, and may be waited for
** again or closed. */
int tt_http_shutdown(tt_http_server *s, tt_ctx *ctx, double timeout);

/* Counters of a server.  'active' requests have arrived and not yet
** finished (their handler returned and their response was sent or their
** connection closed); 'suspended' ones were handed to a handler and wait
** for a response; 'handlers' are running.  The others only grow:
** 'requests' counts requests whose headers arrived, 'dispatched' those
** handed to a handler, 'rejected' the 503s, 'client_gone' the requests
** whose client hung up before their response was sent.  Each counter is
** read atomically, the set is not one snapshot. */
typedef struct tt_http_stats {
  uint64_t requests, dispatched, rejected, client_gone;
  uint64_t active, suspended, handlers;
} tt_http_stats;

void tt_http_stats_get(tt_http_server *s, tt_http_stats *out);

/* A name and value of a request header (lower-case name) or query
** argument (value NULL when the argument had no '='). */
typedef struct tt_http_pair {
  const char *name;
  const char *value;
} tt_http_pair;

/* The request: method as sent ("GET"), path (percent-decoded, without
** the query), the query arguments (decoded), the headers in arrival
** order, the body, the remote address ("127.0.0.1:PORT"), the request id
** (unique per process, as also found under tt_http_request_id_key). */
const char *tt_http_req_method(tt_http_req *r);
const char *tt_http_req_path(tt_http_req *r);
const tt_http_pair *tt_http_req_query(tt_http_req *r, size_t *n);
const tt_http_pair *tt_http_req_headers(tt_http_req *r, size_t *n);
const char *tt_http_req_body(tt_http_req *r, size_t *len);
const char *tt_http_req_remote(tt_http_req *r);
const char *tt_http_req_id(tt_http_req *r);

/* tt_http_req_header returns the first value of a header ('name' in
** lower case), or NULL. */
const char *tt_http_req_header(tt_http_req *r, const char *name);

/* The response.  tt_http_res_status (200..599) and tt_http_res_header
** (a name that is not an HTTP token, CR or LF in the value, and
** Content-Length and Transfer-Encoding, which the server sets, are
** TT_EINVAL) apply to the response not yet committed.
** tt_http_res_send commits the whole response at once (the handler may
** go on running).  tt_http_res_write commits the status and headers at
** its first call and sends a chunked body, one chunk per call, waiting
** while more than 1 MiB is unsent until the request context ends (then
** it returns that context's error code); tt_http_res_finish ends it (a
** handler that returns ends it too).  HEAD requests get the headers
** only.  They return TT_OK; TT_EINVAL for misuse (a second send, a
** header or a write after send, a write after finish); TT_ECLOSED once
** the handler has returned or the server closed; TT_ECLIENT_GONE when
** the connection failed or ended under a response. */
int tt_http_res_status(tt_http_req *r, int status);
int tt_http_res_header(tt_http_req *r, const char *name,
                       const char *value);
int tt_http_res_send(tt_http_req *r, const void *body, size_t len);
int tt_http_res_write(tt_http_req *r, const void *chunk, size_t len);
int tt_http_res_finish(tt_http_req *r);

/* HTTP events, delivered to observers on the thread where they happen
** (libmicrohttpd's thread or a pool worker), with no server lock held,
** one observer list per server.  STARTED: a request is handed to its
** handler ('ctx' is its context).  FINISHED: once per request whose
** headers arrived, when its handler (if any) has returned and its
** connection is done with it: 'status' is what was sent (0 if nothing
** was), 'duration' the seconds since its headers arrived, 'client_gone'
** whether the client hung up first, 'error' the handler's error (or
** NULL).  Metrics and request spans are observers. */
enum { TT_HTTP_EV_STARTED = 0, TT_HTTP_EV_FINISHED };

typedef struct tt_http_event {
  int kind;
  tt_http_server *server;
  const char *server_name;
  const char *method;
  const char *path;
  const char *request_id;
  int status;
  double at;                 /* tt_now() */
  double duration;
  bool client_gone;
  tt_ctx *ctx;               /* borrowed; NULL if never dispatched */
  tt_obj *error;             /* borrowed; may be NULL */
} tt_http_event;

typedef void (*tt_http_observer)(const tt_http_event *ev, void *ud);

/* tt_http_observe registers an observer and returns its id (> 0), or -1
** when out of memory; once tt_http_unobserve returns, the observer is not
** called again.  Observers must not block, and must not close the
** server. */
int tt_http_observe(tt_http_server *s, tt_http_observer fn, void *ud);
void tt_http_unobserve(tt_http_server *s, int id);

/* How an HTTP observer is called (tt_http_observe_with).  An 'immediate'
** observer is called before the others, on the thread of the event, with
** no lock at all: it must only do quick lock-free work (metrics count
** with atomics this way).  It cannot be removed (tt_http_unobserve
** ignores its id): it and its 'ud' must last as long as the server.  A
** server takes at most TT_HTTP_MAX_IMMEDIATE of them. */
#define TT_HTTP_MAX_IMMEDIATE 4

typedef struct tt_http_observer_opts {
  bool immediate;
} tt_http_observer_opts;

/* tt_http_observe_with registers an observer as 'o' says (NULL: as
** tt_http_observe) and returns its id (> 0), or -1 (out of memory, or
** too many immediate observers). */
int tt_http_observe_with(tt_http_server *s, tt_http_observer fn, void *ud,
                         const tt_http_observer_opts *o);

/* tt_http_method_label returns 'method' if it is one of the standard
** methods (GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH;
** case-sensitive, as methods are), else "OTHER": the bounded form used in
** metric labels and span names.  The string is static. */
const char *tt_http_method_label(const char *method);

/* tt_http_req_span returns the request's server span (borrowed: it lives
** as long as the request), or NULL when tracing was off as the request
** was dispatched.  A handler may add attributes to it, such as the route
** that matched ("http.route"); it ends when the request finishes. */
typedef struct tt_span tt_span;
tt_span *tt_http_req_span(tt_http_req *r);

/* }==================================================================== */

/* {====================================================================
** The admin page (admin.c; DESIGN section 12, docs/admin.md)
** ===================================================================== */

/* A tt_admin answers the admin page's requests: the page at "/", its
** data at "/api/state" (JSON), "/metrics", and the actions POST
** /api/pools/ID/dead/DID/retry, .../dead/DID/drop and /api/pools/ID/drain,
** which need the token ("Authorization: Bearer TOKEN"; without a token
** the admin is read-only).  Its type is named "tether.Admin". */
typedef struct tt_admin tt_admin;
extern const tt_type tt_admin_type;

/* Admin options.  Zero values mean defaults. */
typedef struct tt_admin_opts {
  const char *name;          /* copied; NULL: "admin" (audit lines) */
  const char *token;         /* NULL: the environment's
                             ** TETHER_ADMIN_TOKEN, if set and not
                             ** empty; else none (read-only) */
  tt_pool *const *pools;     /* the pools shown (referenced); NULL:
                             ** every pool tt_exit_pools lists, looked
                             ** up at each request */
  size_t npools;
  const char *prefix;        /* where it is mounted: "" (NULL) or
                             ** "/path", no trailing '/' */
  const char *const *hosts;  /* more names the Host header may give,
                             ** "name" (any port) or "name:port" */
  size_t nhosts;
} tt_admin_opts;

/* tt_admin_new makes an admin; NULL with '*err' (TT_EINVAL for bad
** options, TT_ENOMEM) and a message in 'msg' (may be NULL). */
tt_admin *tt_admin_new(const tt_admin_opts *o, int *err, char *msg,
                       size_t msglen);

/* tt_admin_handle answers a request whose path is under the admin's
** prefix and returns true; it returns false, sending nothing, for any
** other path, so that an HTTP handler can mount the admin next to its
** own routes.  A mounted admin accepts a Host header that names a
** loopback address (any port) or one of its 'hosts', and needs the token
** for every route when the client is not on loopback. */
bool tt_admin_handle(tt_admin *a, tt_ctx *ctx, tt_http_req *req);

/* tt_admin_readonly is true when the admin has no token (no actions). */
bool tt_admin_readonly(tt_admin *a);

/* tt_admin_csp returns the Content-Security-Policy of every admin
** response (the SHA-256 of the page's inline script and style). */
const char *tt_admin_csp(void);

/* Options of an admin server of its own. */
typedef struct tt_admin_serve_opts {
  tt_admin_opts admin;
  const char *addr;          /* as tt_http_opts; NULL: "127.0.0.1:0" */
  int workers;               /* threads of its own pool; 0: 2 */
  tt_ctx *shutdown;          /* may be NULL: when it ends, it closes */
  const char *tls_cert;      /* PEM files, both or neither: HTTPS */
  const char *tls_key;
} tt_admin_serve_opts;

/* tt_admin_serve starts an HTTP server (tt_http_new) that serves an
** admin on a pool of its own, so that the page answers however busy the
** application's pools are.  Binding an address that is not loopback
** without a token is refused (TT_EINVAL); off loopback every route
** needs the token (Bearer, or Basic with the token as the password),
** and the Host header must name the bound address or localhost (with
** the bound port) or one of the 'hosts'.  NULL with '*err' and a
** message as tt_http_new. */
tt_http_server *tt_admin_serve(const tt_admin_serve_opts *o, int *err,
                               char *msg, size_t msglen);

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

/* tt_buf_prom_label appends 'n' bytes of 's' as the inside of a label
** value of the Prometheus text format (the quotes are the caller's):
** backslash, double quote and newline escaped as the format says, and
** each byte that is not part of well-formed UTF-8 replaced by U+FFFD,
** since Prometheus refuses such values.  NULL appends nothing. */
void tt_buf_prom_label(tt_buf *b, const char *s, size_t n);

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

/* tt_log_set_sink_owned is tt_log_set_sink for a sink whose 'ud' the log
** then owns: 'release(ud)' (may be NULL) runs once a later call replaced
** it and no thread still runs it. */
void tt_log_set_sink_owned(tt_log_sink fn, void *ud,
                           void (*release)(void *ud));

/* tt_log_set_file makes records go to the file at 'path' (created 0640
** if need be), appended one line per record with one write each, so
** that lines of several threads and processes sharing the file never
** interleave.  It returns TT_OK, or TT_EINVAL with errno saying why the
** file could not be opened (the sink is then unchanged), or TT_ENOMEM.
** A later tt_log_set_sink or tt_log_set_file closes the file. */
int tt_log_set_file(const char *path);

/* tt_log_observe_pool makes the pool's op outcomes log lines (oplog.c):
** an attempt that failed and will be retried at warn, an op failed, dead
** or abandoned at error, and at debug an op completed, stopped or
** spilled.  Each line has the fields pool, op, id, tenant, attempt,
** outcome, duration_ms, error, trace_id, span_id and state ("queued" or
** "running" for an abandoned op; null where they do not apply).  With
** 'quiet', only abandoned ops are logged: work lost at exit is never
** silent.  It costs nothing for events whose lines are not enabled.
** Returns TT_OK, TT_EINVAL or TT_ENOMEM. */
int tt_log_observe_pool(tt_pool *p, bool quiet);

/* tt_log_level_name names a level ("debug", "info", "warn", "error",
** "off"); tt_log_level_parse reads a name back (-1 if unknown). */
const char *tt_log_level_name(int level);
int tt_log_level_parse(const char *name);

/* }==================================================================== */


/* {====================================================================
** Metrics: a registry of families, the Prometheus text format
** ===================================================================== */

/* Metric types, as the text format names them. */
enum { TT_METRIC_COUNTER = 0, TT_METRIC_GAUGE, TT_METRIC_HISTOGRAM };

/* A family: its name (base units; a counter's ends in "_total"), one
** line of help, and its type. */
typedef struct tt_metric_family {
  const char *name;
  const char *help;
  int type;
} tt_metric_family;

/* A label of a sample: 'len' bytes of 'value' ((size_t)-1: up to its
** NUL).  Values may be any bytes: the writer escapes them. */
typedef struct tt_metric_label {
  const char *name;
  const char *value;
  size_t len;
} tt_metric_label;

/* A tt_metric_writer writes the samples of one family while the text is
** made; sources get one in their 'collect'. */
typedef struct tt_metric_writer tt_metric_writer;

/* tt_metric_count writes one sample of a counter or gauge with an exact
** integer value; tt_metric_value one with any value (NaN and infinities
** as the format spells them). */
void tt_metric_count(tt_metric_writer *w, const tt_metric_label *labels,
                     int n, uint64_t v);
void tt_metric_value(tt_metric_writer *w, const tt_metric_label *labels,
                     int n, double v);

/* tt_metric_histogram writes one histogram series: 'counts' has
** nbounds + 1 entries, the observations in each bucket (not cumulative;
** the last one above the last bound); the writer makes the cumulative
** '_bucket' lines with 'le', the '+Inf' bucket, '_sum' and '_count'. */
void tt_metric_histogram(tt_metric_writer *w, const tt_metric_label *labels,
                         int n, const double *bounds, int nbounds,
                         const uint64_t *counts, double sum);

/* A source of metrics: its families (an array that must outlive the
** registration, typically static) and the function that writes the
** samples of family 'family' (an index into 'families'), called while
** the text is made, under the registry's lock: it must not call the
** registry.  A source keeps its series unique (no label set twice). */
typedef struct tt_metric_source {
  const tt_metric_family *families;
  int nfamilies;
  void (*collect)(tt_metric_writer *w, int family, void *ud);
  void *ud;
} tt_metric_source;

/* tt_metrics_register adds a source (the struct is copied) and returns
** its id (> 0), or -1 (bad source, no memory).  Families of the same
** name from several sources are written together, under the first
** one's help and type.  tt_metrics_unregister removes it; once it
** returns, the source's collect is not running and will not run. */
int tt_metrics_register(const tt_metric_source *src);
void tt_metrics_unregister(int id);

/* tt_metrics_text appends the text format (0.0.4) of every family to
** 'out': "# HELP" and "# TYPE" once per family, then its samples.
** Returns TT_OK or TT_ENOMEM. */
int tt_metrics_text(tt_buf *out);

/* Options of a pool's metrics: 'tenant' adds a tenant label to the
** counters and the histogram, for at most 'max_tenants' tenants (<= 0:
** 100); later ones share the tenant "other", and ops without a tenant
** are the tenant "default".  The first pool of a name decides for the
** name. */
typedef struct tt_pool_metrics_opts {
  bool tenant;
  int max_tenants;
} tt_pool_metrics_opts;

/* tt_metrics_observe_pool feeds the pool families from the pool's events
** for the rest of the pool's life: tether_pool_submitted_total,
** tether_pool_ops_total{outcome}, tether_pool_rejected_total{code},
** tether_pool_retries_total, tether_pool_op_duration_seconds (each
** attempt's run time), and the gauges tether_pool_queued,
** tether_pool_inflight and tether_pool_workers; every series has the
** label 'pool' (its name), and pools that share a name add up.
** Counting is an immediate observer: atomic adds under the pool's lock,
** nothing allocated per op.  Returns TT_OK, TT_EINVAL or TT_ENOMEM.
** Attach a pool once. */
int tt_metrics_observe_pool(tt_pool *p, const tt_pool_metrics_opts *o);

/* tt_metrics_observe_http feeds the HTTP families from the server's
** events for the rest of its life (an immediate observer: atomic adds,
** no lock, nothing allocated): tether_http_requests_total{server,
** method,code} (the method as tt_http_method_label gives it, the code as
** the status number sent, "0" when nothing was),
** tether_http_client_gone_total{server} and the histogram
** tether_http_request_duration_seconds{server} (from the request's
** headers to its end).  Servers that share a name add up.  Returns
** TT_OK, TT_EINVAL or TT_ENOMEM.  Attach a server once. */
int tt_metrics_observe_http(tt_http_server *s);

/* tt_metrics_respond answers a request with the metrics text: GET and
** HEAD get 200 with the text and the content type
** TT_METRICS_CONTENT_TYPE, other methods 405 with "Allow: GET, HEAD".
** It returns what the response function returned. */
#define TT_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
int tt_metrics_respond(tt_http_req *r);

/* tt_metrics_observe_store adds the store's families while it is open:
** the gauges tether_store_depth, tether_store_leased, tether_store_dead
** and tether_store_oldest_age_seconds, labels {store, pool}, read from
** the store (tt_store_stats_pools) each time the text is made, before
** the registry's lock is taken; and the counters
** tether_store_records_written_total, _claimed_total, _acked_total and
** _buried_total, label {store} (tt_store_counters_get).  The store label
** is 'name', or the store's URL without its password when 'name' is
** NULL.  A pool once seen keeps its series (at 0) while the store is
** open; at most 256 pools per store.  The store leaves the text when it
** closes (tt_store_close, or its last reference).  A store that does not
** answer leaves its gauges out of that text.  Returns TT_OK, TT_EINVAL
** or TT_ENOMEM.  Attach a store once. */
int tt_metrics_observe_store(tt_store *s, const char *name);

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

/* The value object under tt_trace_key ("tether.SpanContext"), made by
** tt_with_span_context; a span started by tt_span_start is also such a
** value, for the contexts it gives (tt_ctx_span_context reads both). */
typedef struct tt_spanctx {
  tt_obj hdr;
  tt_span_context sc;
} tt_spanctx;
extern const tt_type tt_spanctx_type;

/* }==================================================================== */


/* {====================================================================
** Traces: spans, sampling, export (OpenTelemetry)
** ===================================================================== */

/* Span kinds, as OTLP numbers them. */
enum { TT_SPAN_INTERNAL = 1, TT_SPAN_SERVER, TT_SPAN_CLIENT,
       TT_SPAN_PRODUCER, TT_SPAN_CONSUMER };

/* A tt_span is one span ("tether.Span"), reference counted.  Any thread
** may use it. */
typedef struct tt_span tt_span;
extern const tt_type tt_span_type;

/* How a span starts: its kind (0: internal), attributes (copied; the
** tt_field shapes of logs: strings, integers, numbers, booleans), links
** to other spans, 'link_parent' to link the parent span too (work
** detached from its caller, as a pool op is), and 'trace_id' (16 bytes;
** NULL: random), the trace of a span that has no parent. */
typedef struct tt_span_opts {
  int kind;
  const tt_field *attrs;
  size_t nattrs;
  const tt_span_context *links;
  size_t nlinks;
  bool link_parent;
  const uint8_t *trace_id;
} tt_span_opts;

/* tt_span_start starts a span named 'name' (copied) whose parent is the
** span 'parent' carries (tt_ctx_span_context; none: the span starts a
** new trace), and stores in '*child' (may be NULL) a child of 'parent'
** that carries the new span, so that work under it has it as parent and
** tt_traceparent_format of it gives the header to send.  It always gives
** a span with ids (NULL only when out of memory or 'parent' is NULL): a
** span is recorded and exported only if tracing is on and the sampler
** samples it, but its ids propagate either way, with the sampled flag
** the sampler chose.  A server span starts from a context that carries
** the request's remote span context (tt_with_span_context of a parsed
** traceparent), with kind TT_SPAN_SERVER.  'o' may be NULL. */
tt_span *tt_span_start(tt_ctx *parent, const char *name,
                       const tt_span_opts *o, tt_ctx **child);

/* tt_span_set_attr sets an attribute (a later value of the same key
** replaces the earlier one); tt_span_add_link adds a link.  Both do
** nothing once the span ended or when it is not recorded. */
void tt_span_set_attr(tt_span *s, const tt_field *attr);
void tt_span_add_link(tt_span *s, const tt_span_context *sc);

/* tt_span_end ends the span, with status ERROR and 'error' ('len' bytes,
** (size_t)-1: up to its NUL) as the message when 'error' is not NULL,
** else with the status unset, and queues it for export if it is
** recorded.  Only the first call ends it: it returns true, later ones
** false.  A span freed without an end is never exported. */
bool tt_span_end(tt_span *s, const char *error, size_t len);

/* tt_span_context_of copies the span's identity; tt_span_recording tells
** whether it is recorded (and not yet ended). */
void tt_span_context_of(tt_span *s, tt_span_context *out);
bool tt_span_recording(tt_span *s);

/* A resource attribute of the exported spans. */
typedef struct tt_trace_attr {
  const char *key;
  const char *value;
} tt_trace_attr;

/* Tracing settings.  Zero values are defaults; every string is copied.
** - 'endpoint': the OTLP/HTTP traces URL (".../v1/traces"); batches are
**   POSTed there as OTLP JSON with libcurl, with 'headers' ("Name:
**   value" each; no CR or LF).
** - 'file': a path; each batch is appended to it as one line of OTLP JSON
**   (one write each).  Both may be given; with neither, nothing is
**   recorded (ids still propagate).
** - 'service_name' (default "unknown_service:<executable>") and
**   'resource', the resource's attributes.
** - 'sampler': "parentbased_traceidratio" (the default), "always_on",
**   "always_off", "traceidratio", "parentbased_always_on",
**   "parentbased_always_off"; 'sampler_arg' is the ratio of the two
**   ratio samplers when 'sampler' names one (without a 'sampler', the
**   ratio is 1).
** - The batch processor: 'queue_size' spans at most wait (2048; a span
**   that finds the queue full is dropped and counted), 'batch_size' per
**   export (512), 'schedule_delay' seconds at most before a partial batch
**   goes (5), 'export_timeout' seconds per export (10).
** - Limits: 'value_limit' bytes of a string attribute, a name or a status
**   message (4096), 'attr_limit' attributes per span (128). */
typedef struct tt_trace_opts {
  const char *endpoint;
  const char *file;
  const char *const *headers;
  size_t nheaders;
  const char *service_name;
  const tt_trace_attr *resource;
  size_t nresource;
  const char *sampler;
  double sampler_arg;
  int queue_size, batch_size;
  double schedule_delay, export_timeout;
  int value_limit, attr_limit;
} tt_trace_opts;

/* Until tt_trace_configure is called, the settings come from the standard
** environment variables, read at the first use of tracing:
** OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (or OTEL_EXPORTER_OTLP_ENDPOINT +
** "/v1/traces"), OTEL_EXPORTER_OTLP[_TRACES]_HEADERS ("k=v,k2=v2",
** percent-decoded), OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT (ms),
** OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER and
** OTEL_TRACES_SAMPLER_ARG, OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_MAX_QUEUE_SIZE,
** OTEL_BSP_MAX_EXPORT_BATCH_SIZE, OTEL_[SPAN_]ATTRIBUTE_VALUE_LENGTH_LIMIT,
** OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT, OTEL_SDK_DISABLED and
** OTEL_TRACES_EXPORTER=none; and TETHER_TRACES_FILE for the file.  Only
** http/json is sent (another OTEL_EXPORTER_OTLP_PROTOCOL is warned about).
** Bad values are logged and ignored.
**
** tt_trace_configure replaces the settings ('o' NULL: nothing exported)
** and returns TT_OK, or TT_EINVAL (unknown sampler, ratio outside 0..1,
** a header without ':' or with CR/LF, a file that cannot be opened:
** errno says why) leaving them as they were. */
int tt_trace_configure(const tt_trace_opts *o);

/* tt_trace_enabled tells whether spans may be recorded (an exporter is
** set and the sampler is not always off): when false, the spans of pool
** ops and saga steps cost one atomic load. */
bool tt_trace_enabled(void);

/* tt_trace_flush waits until every span ended before the call has been
** exported (or dropped), at most 'timeout' seconds (< 0: no limit);
** TT_OK or TT_ETIMEOUT.  tt_trace_shutdown flushes, then stops the
** exporter thread (tt_shutdown does too); the next recorded span starts
** it again.  At exit, what is queued is flushed, within the export
** timeout (at most 5 s), by an atexit hook. */
int tt_trace_flush(double timeout);
int tt_trace_shutdown(double timeout);

/* Counters of the exporter: spans recorded (queued), exported, dropped
** (queue full, or a failed export), failed exports, and queued now. */
typedef struct tt_trace_stats {
  uint64_t recorded, exported, dropped, failed_exports, queued;
} tt_trace_stats;
void tt_trace_stats_get(tt_trace_stats *out);

/* tt_trace_pool_hook returns a pool hook (for tt_pool_opts.hook; one per
** pool) that makes a span per attempt of an op: named after the op, its
** parent the submitter's span (carried by the op's context) and a link
** to it, attributes tether.pool, tether.op, tether.attempt and
** tether.tenant, status ERROR with the error's message when the attempt
** fails.  The op's function gets a context that carries the span.  The
** attempts of an op submitted without a span share one new trace (its id
** derived from the op's id and a random salt of the hook). */
tt_pool_hook tt_trace_pool_hook(void);

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

/* tt_store_stats_pools reports the stats of each pool that has records
** or dead letters in the store, in one request to the store's thread:
** '*out' (free with tt_store_pool_stats_free) gets '*n' of them.  Returns
** TT_OK, TT_ESTORE or TT_ECLOSED. */
typedef struct tt_store_pool_stats {
  char *pool;
  tt_store_stats st;
} tt_store_pool_stats;

int tt_store_stats_pools(tt_store *s, tt_store_pool_stats **out,
                         size_t *n);
void tt_store_pool_stats_free(tt_store_pool_stats *p, size_t n);

/* Counters of what this process did with a store: records written (the
** spills of pools and other puts), claimed, acknowledged, and made dead
** letters.  Each is read atomically. */
typedef struct tt_store_counters {
  uint64_t written, claimed, acked, buried;
} tt_store_counters;

void tt_store_counters_get(tt_store *s, tt_store_counters *out);

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
** already running are still acknowledged when they end), TT_EINTR when
** an interrupt ends the wait (tt_interrupt_begin; the same), or
** TT_ESTORE, TT_ECLOSED, TT_EINVAL.  'rep' (may be NULL) receives the
** counts. */
int tt_pool_drain_store(tt_pool *p, tt_store *s, tt_ctx *ctx,
                        const tt_drain_opts *o, tt_drain_report *rep);

/* }==================================================================== */


/* {====================================================================
** Test-only hooks: for the engine's and the binding's own tests, not
** part of the API (they may change or go without notice)
** ===================================================================== */

/* tt_test_fail_threads makes the next 'n' thread creations of the engine
** (executor, pool workers, the timer thread) fail as if the system had
** no thread to give, so that tests reach the paths that handle it; 0
** turns it off.  Any thread may call it. */
void tt_test_fail_threads(int n);

/* }==================================================================== */

#ifdef __cplusplus
}
#endif

#endif
