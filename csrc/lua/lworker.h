/*
** lworker.h -- Lua tasks on engine threads (DESIGN section 2).
**
** Each engine thread that runs a Lua task owns one lua_State, made on its
** first Lua task and closed when the thread ends (the engine's thread exit
** hook, installed by luaopen_tether_core).  A task is a function and its
** arguments packed together (lpack.c); the thread's state unpacks and
** calls it, and packs its results.
*/
#ifndef lworker_h
#define lworker_h

#include <stdbool.h>
#include <stddef.h>

#include "ltether.h"

/* An lt_env is what the tasks of one submitter or pool share: the
** package.path and package.cpath of the submitting state, an optional
** packed init function, the interrupt flag and a display name.  It is an
** engine object ("tether.Env"), reference counted; each task holds one
** reference. */
typedef struct lt_env lt_env;
extern const tt_type lt_env_type;

/* lt_env_new makes an environment from the state 'L' (its package paths).
** 'init_idx' is 0 for none, else the stack index of a function that each
** worker state runs once, before its first task of this environment;
** it is packed now and raises like lt_pack_one on refusal ("cannot
** transfer upvalue 'db' of init of pool 'x' (userdata)").  'interrupt'
** asks for the count hook that stops a task whose context is done.
** 'name' (may be NULL) is the pool's name, as messages show it: "init of
** pool 'x' failed: ...".  Raises on memory errors, leaking nothing. */
lt_env *lt_env_new(lua_State *L, int init_idx, bool interrupt,
                   const char *name);

/* lt_env_watch makes the end of 'stop' (a pool's shutdown context; may
** be NULL) interrupt the tasks of an environment with interrupts at
** once, as the end of each task's own context does.  Call it before the
** first task. */
void lt_env_watch(lt_env *e, tt_ctx *stop);

/* An lt_task is one Lua task: its function and arguments, packed. */
typedef struct lt_task lt_task;

/* lt_task_new packs the function at 'fn_idx' and the 'nargs' arguments at
** first_arg.. into a task that runs under 'env' (referenced; NULL makes a
** private environment from 'L' without init or interrupt).  The function
** may also be a string "module.path:function", resolved on the worker with
** require.  With 'pass_ctx' the function receives the task's context
** first, then the arguments.  'what' names the task in messages ("task
** 'audit'").  A value that cannot cross raises (nothing is leaked):
** "cannot transfer upvalue 'conn' of task 'audit' (userdata)". */
lt_task *lt_task_new(lua_State *L, lt_env *env, int fn_idx, int first_arg,
                     int nargs, bool pass_ctx, const char *what);

/* lt_task_of makes a task of an already packed function 'fn' (a value
** of one function, or of one "module:function" string) and packed
** arguments 'args' (may be NULL), under 'env', passing the context first;
** both are shared by reference, so that many tasks of one function pack
** it once (pool:submit_many, tether.map).  NULL when out of memory. */
lt_task *lt_task_of(lt_env *env, tt_obj *fn, tt_obj *args,
                    const char *what);

/* lt_task_run is the tt_fn of a Lua task.  It never raises and never ends
** the process: on success it stores the packed results (an lt_value of as
** many values as the function returned, possibly 0) in '*out' and returns
** TT_OK; on failure it stores a tt_error (from lt_pack_error, with the
** traceback; or a tether error raised as such, e.g. the context's error
** raised by the interrupt hook) and returns TT_EFAILED. */
int lt_task_run(tt_ctx *ctx, void *arg, tt_obj **out);

/* lt_task_drop is the tt_drop of a Lua task: it frees it. */
void lt_task_drop(void *arg);

/* lt_thread_exit closes the calling thread's worker state, if it has one.
** It is the engine's thread exit hook. */
void lt_thread_exit(void);

/* lt_thread_state returns the calling thread's worker state, making it on
** first use and running the init of 'env' (may be NULL) if this state has
** not run it yet.  On failure it returns NULL with a message in 'err'
** ("cannot create worker state: ...", "init of pool 'x' failed: ..."). */
lua_State *lt_thread_state(lt_env *env, char *err, size_t errlen);

/* lt_task_clone shares a task's packed call and environment in a new
** task (for callbacks run many times); NULL when out of memory. */
lt_task *lt_task_clone(const lt_task *t);

/* lt_task_boundary tells whether 'f' is one of this file's C functions
** that make a protected call through lt_tramp (running a task, or an
** init): lirq.c needs them to tell __close handlers from other code. */
bool lt_task_boundary(lua_CFunction f);


/* {====================================================================
** Interrupts (lirq.c)
** ===================================================================== */

/* What a worker thread knows of the interrupt of the task it runs: saved
** and restored around each task (tasks may nest on one thread). */
typedef struct lt_irq {
  tt_ctx *ctx;          /* whose end interrupts the task; NULL: none */
  tt_ctx *stop;         /* whose end interrupts it too; may be NULL */
  double deadline;      /* ctx's deadline, or HUGE_VAL */
  double fired;         /* tt_now() when first interrupted; 0: not yet */
  lua_State *yielded;   /* a coroutine the hook made yield */
  lua_State *closing;   /* a coroutine whose __close handlers run */
} lt_irq;

/* lt_tramp calls the function at 1 with the other values and returns all
** its results.  Every protected call in a worker state goes through it,
** so that a Lua function called directly by a protected call's C
** function is a __close handler run while that call unwinds. */
int lt_tramp(lua_State *L);

/* lt_irq_arm puts the interrupt hook on the main thread of 'L' and the
** stand-ins (pcall, xpcall, load, setmetatable, coroutine.resume, wrap
** and close, debug.sethook and debug.setmetatable) in its libraries, the
** first time; every thread made in 'L' afterwards inherits the hook. */
void lt_irq_arm(lua_State *L);

/* lt_irq_begin saves this thread's interrupt into '*saved' and starts
** that of a task: the end of 'ctx' (NULL: none, the task is never
** interrupted), its deadline or the end of 'stop' (may be NULL)
** interrupts it.  lt_irq_end restores '*saved'. */
void lt_irq_begin(lt_irq *saved, tt_ctx *ctx, tt_ctx *stop);
void lt_irq_end(const lt_irq *saved);

/* lt_irq_finalizers ends the interrupt of the task that ran on 'L' (may
** be NULL) and gives the finalizers that run from now on (a collection
** between tasks, the state's close) a grace period, after which the hook
** stops them. */
void lt_irq_finalizers(lua_State *L);

/* }==================================================================== */

#endif
