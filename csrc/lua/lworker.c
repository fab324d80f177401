/*
** lworker.c -- worker lua_States and Lua tasks on engine threads.
**
** A thread that runs Lua keeps its state in a thread-local pointer for
** its whole life: standard libraries, the submitter's package paths,
** require "tether", then, once per environment, the pool's init function
** (the state's registry remembers whose init functions it has run).
** Never shared: only the owning thread ever touches its state.
**
** Everything a task does in Lua runs under lua_pcall: a failing task,
** a result that cannot cross, even a memory error, ends as the task's
** error object, never as a panic.
*/
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "lworker.h"

#define ENVS_KEY "tether.worker.envs"   /* env id -> true, once set up */
#define TB_KEY "tether.worker.traceback"
#define ARMED_KEY "tether.worker.armed"  /* the interrupt hook is in */
#define HOOKLESS_KEY "tether.worker.hookless"  /* thread -> true */

/* How many VM instructions run between two looks at the context when a
** pool interrupts its tasks, and between two looks at the clock while
** cleanup code runs in its grace period. */
#define HOOK_COUNT 1000

/* How long __close handlers may go on once an op is interrupted. */
#define GRACE 0.1

/* How many frames down from the top the hook looks for a __close
** handler (cleanup called from deeper than that is interrupted at once). */
#define CLEANUP_DEPTH 100

/* {====================================================================
** Environments
** ===================================================================== */

struct lt_env {
  tt_obj hdr;
  uint64_t id;          /* unique for the life of the process */
  char *path, *cpath;   /* may be NULL: keep the worker's defaults */
  char *name;           /* may be NULL */
  tt_obj *init;         /* packed init function, may be NULL */
  tt_ctx *stop;         /* also interrupts the tasks when it ends, or
                        ** NULL; set before the first task */
  bool interrupt;
};

static _Atomic uint64_t env_ids;

static void env_free(tt_obj *o) {
  lt_env *e = (lt_env *)o;
  tt_unref(e->init);
  tt_unref(e->stop);
  free(e->path);
  free(e->cpath);
  free(e->name);
  free(e);
}

const tt_type lt_env_type = {"tether.Env", env_free, NULL};

/* dupstr is strdup that passes NULL through. */
static char *dupstr(const char *s) { return s != NULL ? strdup(s) : NULL; }

/* env_make allocates an environment; it never raises, and on failure
** frees what it made and leaves 'init' to the caller. */
static lt_env *env_make(const char *path, const char *cpath,
                        const char *name, tt_obj *init, bool interrupt) {
  lt_env *e = calloc(1, sizeof *e);
  if (e == NULL) return NULL;
  e->path = dupstr(path);
  e->cpath = dupstr(cpath);
  e->name = dupstr(name);
  if ((path != NULL && e->path == NULL) ||
      (cpath != NULL && e->cpath == NULL) ||
      (name != NULL && e->name == NULL)) {
    free(e->path);
    free(e->cpath);
    free(e->name);
    free(e);
    return NULL;
  }
  tt_obj_init(&e->hdr, &lt_env_type);
  e->id = atomic_fetch_add(&env_ids, 1) + 1;
  e->init = init;
  e->interrupt = interrupt;
  return e;
}

/* push_paths pushes package.path and package.cpath of 'L' (nil where
** missing); the strings stay anchored on the stack while used. */
static void push_paths(lua_State *L) {
  luaL_checkstack(L, 4, NULL);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "package");
  lua_remove(L, -2);
  if (lua_type(L, -1) == LUA_TTABLE) {
    lua_getfield(L, -1, "path");
    lua_getfield(L, -2, "cpath");
  } else {
    lua_pushnil(L);
    lua_pushnil(L);
  }
  lua_remove(L, -3);
}

lt_env *lt_env_new(lua_State *L, int init_idx, bool interrupt,
                   const char *name) {
  tt_obj *init = NULL;
  lt_env *e;
  if (init_idx != 0) init_idx = lua_absindex(L, init_idx);
  /* Everything that may raise comes before the first allocation that
  ** Lua does not own. */
  push_paths(L);
  if (init_idx != 0) {
    const char *what = name != NULL
      ? lua_pushfstring(L, "init of pool '%s'", name)
      : lua_pushliteral(L, "init of pool");
    init = lt_pack_one(L, init_idx, what);
    lua_pop(L, 1);
  }
  e = env_make(lua_tostring(L, -2), lua_tostring(L, -1), name, init,
               interrupt);
  lua_pop(L, 2);
  if (e == NULL) {
    tt_unref(init);
    luaL_error(L, "not enough memory");
  }
  return e;
}

void lt_env_watch(lt_env *e, tt_ctx *stop) {
  tt_unref(e->stop);
  e->stop = tt_ref(stop);
}

/* }==================================================================== */


/* {====================================================================
** Tasks
** ===================================================================== */

struct lt_task {
  lt_env *env;          /* one reference */
  tt_obj *call;         /* packed function and arguments */
  char *what;           /* "task 'audit'" */
  bool pass_ctx;
};

lt_task *lt_task_new(lua_State *L, lt_env *env, int fn_idx, int first_arg,
                     int nargs, bool pass_ctx, const char *what) {
  tt_obj *call;
  lt_task *t;
  lt_env *own = NULL;
  if (what == NULL) what = "task";
  fn_idx = lua_absindex(L, fn_idx);
  first_arg = lua_absindex(L, first_arg);
  if (env == NULL) push_paths(L);
  call = lt_pack_call(L, fn_idx, first_arg, nargs, what);
  if (env == NULL) {
    own = env_make(lua_tostring(L, -2), lua_tostring(L, -1), NULL, NULL,
                   false);
    lua_pop(L, 2);
    env = own;
  }
  t = env != NULL ? calloc(1, sizeof *t) : NULL;
  if (t != NULL) t->what = dupstr(what);
  if (t == NULL || t->what == NULL) {
    free(t);
    tt_unref(own);
    tt_unref(call);
    luaL_error(L, "not enough memory");
    return NULL;
  }
  t->env = own != NULL ? own : tt_ref(env);
  t->call = call;
  t->pass_ctx = pass_ctx;
  return t;
}

void lt_task_drop(void *arg) {
  lt_task *t = arg;
  if (t == NULL) return;
  tt_unref(t->env);
  tt_unref(t->call);
  free(t->what);
  free(t);
}

/* }==================================================================== */


/* {====================================================================
** Worker states
** ===================================================================== */

static _Thread_local lua_State *tl_state;
static _Thread_local unsigned tl_tasks;  /* tasks run by this state */

/* The interrupt of the task running on this thread, for the hook (which
** gets only the lua_State) and the functions that stand in for pcall,
** xpcall, load and the coroutine library in a state with interrupts. */
typedef struct irq {
  tt_ctx *ctx;          /* whose end interrupts the task; NULL: none */
  tt_ctx *stop;         /* whose end interrupts it too; may be NULL */
  double deadline;      /* ctx's deadline, or HUGE_VAL */
  double fired;         /* tt_now() when first interrupted; 0: not yet */
  lua_State *yielded;   /* a coroutine the hook made yield */
  lua_State *closing;   /* a coroutine whose __close handlers run */
} irq;

static _Thread_local irq tl_irq;


/* mkerror makes a TT_EFAILED error from a format; NULL when out of
** memory. */
static tt_error *mkerror(const char *traceback, const char *fmt, ...) {
  va_list ap;
  char small[256], *msg = small;
  int n;
  tt_error *e;
  va_start(ap, fmt);
  n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) return tt_error_new(TT_EFAILED, NULL, NULL);
  if ((size_t)n >= sizeof small) {
    msg = malloc((size_t)n + 1);
    if (msg == NULL) return NULL;
    va_start(ap, fmt);
    vsnprintf(msg, (size_t)n + 1, fmt, ap);
    va_end(ap);
  }
  e = tt_error_new(TT_EFAILED, msg, NULL);
  if (msg != small) free(msg);
  if (e != NULL && traceback != NULL) e->traceback = dupstr(traceback);
  return e;
}

/* msgh is the message handler of task calls: it keeps the traceback
** aside (in the registry) and leaves the error value as it is, so that a
** tether error object raised by the task stays one.  Such an object (the
** context's error of an interrupt, among others) travels as it is, with
** no traceback, so none is made for it: luaL_traceback looks every
** function up in package.loaded, tens of microseconds that an
** interrupted op's waiters would wait. */
static int msgh(lua_State *L) {
  static const char tail[] = "\n\t[C]: in ?";
  const size_t nt = sizeof tail - 1;
  size_t len;
  const char *tb;
  int i;
  tt_obj *o = lt_toobj(L, 1);
  if (o != NULL && o->type == &tt_error_type) return 1;
  luaL_traceback(L, L, NULL, 1);
  /* The last frames are the C functions that run the task ('tramp' and
  ** run_body, or ws_env): noise. */
  for (i = 0; i < 2; i++) {
    tb = lua_tolstring(L, -1, &len);
    if (len >= nt && memcmp(tb + len - nt, tail, nt) == 0) {
      lua_pushlstring(L, tb, len - nt);
      lua_remove(L, -2);
    }
  }
  lua_setfield(L, LUA_REGISTRYINDEX, TB_KEY);
  lua_settop(L, 1);
  return 1;
}

/* take_traceback pushes the traceback kept by msgh (or nil) and clears
** it. */
static const char *take_traceback(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, TB_KEY);
  lua_pushnil(L);
  lua_setfield(L, LUA_REGISTRYINDEX, TB_KEY);
  return lua_tostring(L, -1);
}

/* The id of the environment whose package paths this thread's state
** has, so that a pool's tasks, which share one, skip the comparison. */
static _Thread_local uint64_t tl_paths_from;

/* set_path sets package[k] (the package table at -1) to 'want' unless it
** already is that. */
static void set_path(lua_State *L, const char *k, const char *want) {
  const char *cur;
  if (want == NULL) return;
  lua_getfield(L, -1, k);
  cur = lua_tostring(L, -1);
  lua_pop(L, 1);
  if (cur != NULL && strcmp(cur, want) == 0) return;
  lua_pushstring(L, want);
  lua_setfield(L, -2, k);
}

/* set_paths gives the state the package paths of 'env' (those of the
** state that submitted the task).  They change only when an environment
** with other paths comes along, so what an init function adds to them
** stays for the tasks of its pool. */
static void set_paths(lua_State *L, const lt_env *env) {
  if (tl_paths_from == env->id) return;
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "package") == LUA_TTABLE) {
    set_path(L, "path", env->path);
    set_path(L, "cpath", env->cpath);
  }
  lua_pop(L, 2);
  tl_paths_from = env->id;
}

/* {====================================================================
** Interrupts (DESIGN section 2)
**
** A pool with 'interrupt = true' stops a task whose context ends, through
** a count hook that raises the context's error inside the task.  The
** promise is exact: Lua code anywhere in the worker's state is
** interrupted, and cleanup (__close handlers) gets a grace period to
** finish.  How each way around the hook is closed:
**
** - Hooks belong to each Lua thread, and a new one inherits its
**   creator's.  The hook goes on the main thread when the state first
**   meets an environment with interrupts, before its init runs, and it
**   stays: every coroutine made later, by init or by a task, has it.  It
**   checks the context of the task running now (tl_irq), and does
**   nothing between tasks.
** - debug.sethook, which could remove it, is disabled in such a state.
** - Once an interrupt has fired, the hook fires on every instruction and
**   raises again wherever the task is, but in cleanup: pcall, xpcall,
**   load and the coroutine functions are replaced by versions that raise
**   a caught interrupt again at once, so a task that swallows it gets it
**   back before its next instruction.
** - A message handler (xpcall's) runs with hooks off when the error was
**   raised by a hook: for an interrupt, the stand-in skips the user's
**   handler, so a handler that loops cannot hold the task.
** - A coroutine is interrupted by making it yield (from the hook, when
**   it can); the stand-in resume then closes it, running its __close
**   handlers with hooks on, and raises the interrupt in the resumer.  (A
**   coroutine interrupted where it cannot yield, inside a C function
**   that called back into Lua, dies with hooks off, as Lua leaves a
**   thread whose error came from a hook; its __close handlers are then
**   never run, rather than run where nothing could stop them.)
** - Lua runs finalizers (__gc) with hooks off: setmetatable (and
**   debug.setmetatable) wrap a metatable's __gc so that it runs in a
**   coroutine of its own, which has them on.  Finalizers that run outside
**   any task (a collection after a task, the state's close) get GRACE
**   seconds.  (A __gc put into a metatable after setmetatable is not
**   seen.)
** - Cleanup is a __close handler, and anything it calls: one called when
**   a block ends (its caller's current instruction is a close or a
**   return, so Lua names it "metamethod 'close'"), one called while a
**   protected call unwinds (its caller is the C function of that call
**   itself, since every protected call made here goes through 'tramp'),
**   or one run while a coroutine is closed.  Within GRACE seconds of the
**   first interrupt the hook leaves cleanup alone, looking again when a
**   function returns (a handler that returns is over: code after it is
**   interrupted); after that nothing is spared.
** - The hook reads the op's deadline from the clock and the pool's
**   shutdown context itself, so a task stops without waiting for the
**   timer thread or the executor to cancel its context.
** ===================================================================== */

static int run_body(lua_State *L);
static int ws_env(lua_State *L);

static int w_pcall(lua_State *L);
static int w_xpcall(lua_State *L);

/* Lua's own functions that the stand-ins call.  Kept here rather than
** as upvalues or in the registry, where a task could reach them through
** the debug library; every state has the same ones. */
static _Atomic(lua_CFunction) native_load, native_setmetatable,
    native_dbsetmetatable, native_close;

/* tramp calls the function at 1 with the other values and returns all
** its results.  Protected calls go through it, so that a Lua function
** called directly by a protected call's C function is a __close handler
** run while that call unwinds. */
static int tramp_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  (void)k;
  return lua_gettop(L);
}

static int tramp(lua_State *L) {
  lua_callk(L, lua_gettop(L) - 1, LUA_MULTRET, 0, tramp_k);
  return tramp_k(L, LUA_OK, 0);
}

/* main_thread tells whether 'L' is its state's main thread. */
static bool main_thread(lua_State *L) {
  bool m;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  m = lua_tothread(L, -1) == L;
  lua_pop(L, 1);
  return m;
}

/* is_boundary tells whether 'f' is the C function of a protected call
** made through 'tramp'. */
static bool is_boundary(lua_CFunction f) {
  return f == w_pcall || f == w_xpcall || f == run_body || f == ws_env;
}

/* cleanup_frame tells whether the function at 'level' of 'L' is a
** __close handler: called when a block ends (Lua names it "metamethod
** 'close'"), or a Lua function called by a protected call's C function
** itself (not through 'tramp'), as those handlers are when the call
** unwinds. */
static bool cleanup_frame(lua_State *L, int level) {
  lua_Debug ar;
  lua_CFunction caller;
  if (!lua_getstack(L, level, &ar)) return false;
  lua_getinfo(L, "nS", &ar);
  if (ar.namewhat != NULL && strcmp(ar.namewhat, "metamethod") == 0 &&
      ar.name != NULL && strcmp(ar.name, "close") == 0)
    return true;
  if (strcmp(ar.what, "C") == 0) return false;
  if (!lua_getstack(L, level + 1, &ar)) return false;
  lua_getinfo(L, "f", &ar);
  caller = lua_tocfunction(L, -1);
  lua_pop(L, 1);
  return caller != NULL && is_boundary(caller);
}

/* in_cleanup tells whether 'L' runs cleanup: a __close handler, or code
** one called, within CLEANUP_DEPTH frames of the top, or anything in a
** coroutine being closed. */
static bool in_cleanup(lua_State *L) {
  lua_Debug ar;
  int level;
  if (L == tl_irq.closing) return true;
  for (level = 0; level < CLEANUP_DEPTH && lua_getstack(L, level, &ar);
       level++)
    if (cleanup_frame(L, level)) return true;
  return false;
}

/* irq_code returns the error code the running task is interrupted with,
** or 0: the context's error, or TT_DEADLINE once its deadline passed
** (which the timer thread reports a little later). */
static int irq_code(void) {
  tt_ctx *c = tl_irq.ctx;
  int code;
  if (c == NULL) return 0;
  if ((code = tt_ctx_err(c)) != 0) return code;
  /* The pool's shutdown: it cancels the task's context a moment later,
  ** from another thread. */
  if (tl_irq.stop != NULL && tt_ctx_err(tl_irq.stop) != 0)
    return TT_CANCELED;
  if (tl_irq.deadline != HUGE_VAL && tt_now() >= tl_irq.deadline)
    return TT_DEADLINE;
  return 0;
}

/* is_interrupt tells whether the value at 'idx' is the error of an
** interrupt that has fired. */
static bool is_interrupt(lua_State *L, int idx) {
  tt_obj *o;
  if (tl_irq.fired == 0 || irq_code() == 0) return false;
  o = lt_toobj(L, idx);
  return o != NULL && (o == &tt_canceled.hdr || o == &tt_deadline.hdr);
}

/* mark_hookless records that the interrupt was raised by the hook in
** coroutine 'L' where it could not yield: 'L' runs with hooks off until
** a protected call inside it catches the error. */
static void mark_hookless(lua_State *L, bool on) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, HOOKLESS_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  lua_pushthread(L);
  if (on) lua_pushboolean(L, 1);
  else lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

static bool is_hookless(lua_State *L, lua_State *co) {
  bool r = false;
  if (lua_getfield(L, LUA_REGISTRYINDEX, HOOKLESS_KEY) == LUA_TTABLE) {
    lua_pushthread(co);
    lua_xmove(co, L, 1);
    r = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return r;
}

/* irq_hook is the hook of states with interrupts: a count hook, and
** while cleanup runs in its grace period a return hook too. */
static void irq_hook(lua_State *L, lua_Debug *ar) {
  int code = irq_code();
  double now;
  if (code == 0) return;
  if (ar->event == LUA_HOOKRET) {
    /* A __close handler returns: look at the next instruction, which
    ** is cleanup again only if handlers are nested or follow. */
    if (L == tl_irq.closing || cleanup_frame(L, 0))
      lua_sethook(L, irq_hook, LUA_MASKCOUNT, 1);
    return;
  }
  now = tt_now();
  if (tl_irq.fired == 0) tl_irq.fired = now;
  if (now - tl_irq.fired < GRACE && in_cleanup(L)) {
    /* Leave it be, looking again now and then (for the end of the grace
    ** period) and when a function returns (for the end of the
    ** handler). */
    lua_sethook(L, irq_hook, LUA_MASKCOUNT | LUA_MASKRET, HOOK_COUNT);
    return;
  }
  /* From now on at every instruction, wherever the task has gone. */
  lua_sethook(L, irq_hook, LUA_MASKCOUNT, 1);
  if (!main_thread(L)) {
    if (lua_isyieldable(L)) {
      tl_irq.yielded = L;
      lua_yield(L, 0);
      return;
    }
    mark_hookless(L, true);
  }
  lt_pushobj(L, tt_error_for(code));
  lua_error(L);
}

/* w_finish is the end of the stand-in pcall and xpcall: pcall's results,
** except that a caught interrupt is raised again. */
static int w_finish(lua_State *L, int status, lua_KContext extra) {
  if (status != LUA_OK && status != LUA_YIELD) {
    if (tl_irq.fired != 0) mark_hookless(L, false);  /* hooks are back */
    if (is_interrupt(L, -1)) return lua_error(L);
    lua_pushboolean(L, 0);
    lua_pushvalue(L, -2);
    return 2;
  }
  return lua_gettop(L) - (int)extra;
}

/* pcall(f, ...) as Lua's, through 'tramp'. */
static int w_pcall(lua_State *L) {
  int status;
  luaL_checkany(L, 1);
  lua_pushboolean(L, 1);
  lua_insert(L, 1);
  lua_pushcfunction(L, tramp);
  lua_insert(L, 2);
  status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, w_finish);
  return w_finish(L, status, 0);
}

/* w_msgh stands in for a message handler (its upvalue): an interrupt
** goes on as it is, anything else goes through the user's handler. */
static int w_msgh(lua_State *L) {
  if (is_interrupt(L, 1)) return 1;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

/* xpcall(f, msgh, ...) as Lua's, through 'tramp', with w_msgh. */
static int w_xpcall(lua_State *L) {
  int status, n = lua_gettop(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, w_msgh, 1);
  lua_replace(L, 2);          /* the handler, wrapped */
  lua_pushboolean(L, 1);
  lua_pushcfunction(L, tramp);
  lua_pushvalue(L, 1);
  lua_rotate(L, 3, 3);        /* true, tramp, f below the arguments */
  status = lua_pcallk(L, n - 1, LUA_MULTRET, 2, 2, w_finish);
  return w_finish(L, status, 2);
}

/* w_load is Lua's load, except that an interrupt raised in a
** reader function is raised again instead of returned. */
static int w_load(lua_State *L) {
  /* Lua's load checks these too, but would not know its own name. */
  if (lua_type(L, 1) != LUA_TSTRING) luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_optstring(L, 2, NULL);
  luaL_optstring(L, 3, NULL);
  lua_pushcfunction(L, atomic_load(&native_load));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  if (lua_gettop(L) >= 2 && lua_isnil(L, 1) && is_interrupt(L, 2)) {
    lua_settop(L, 2);
    return lua_error(L);
  }
  return lua_gettop(L);
}

/* close_co closes coroutine 'co' (runs its pending __close handlers) as
** cleanup, and returns the status of that. */
static int close_co(lua_State *L, lua_State *co) {
  lua_State *saved = tl_irq.closing;
  int st;
  (void)L;
  tl_irq.closing = co;
#if LUA_VERSION_RELEASE_NUM >= 50406
  st = lua_closethread(co, L);
#else
  st = lua_resetthread(co);
#endif
  tl_irq.closing = saved;
  return st;
}

/* resume_co resumes 'co' with the 'narg' values on top of 'L', as Lua's
** auxresume: the count of results moved to 'L', or -1 with an error
** value on 'L'.  An interrupt that reached 'co' (its hook made it yield,
** or the error killed it) closes it and is raised in 'L'. */
static int resume_co(lua_State *L, lua_State *co, int narg) {
  int status, nres;
  if (!lua_checkstack(co, narg)) {
    lua_pushliteral(L, "too many arguments to resume");
    return -1;
  }
  lua_xmove(L, co, narg);
  status = lua_resume(co, L, narg, &nres);
  if (status == LUA_YIELD && tl_irq.yielded == co) {
    tl_irq.yielded = NULL;
    lua_pop(co, nres);
    close_co(L, co);
    lt_pushobj(L, tt_error_for(irq_code() != 0 ? irq_code()
                                              : TT_CANCELED));
    return lua_error(L);
  }
  if (status == LUA_OK || status == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushliteral(L, "too many results to resume");
      return -1;
    }
    lua_xmove(co, L, nres);
    return nres;
  }
  if (is_interrupt(co, -1)) {
    /* Killed by the interrupt: its __close handlers run now, unless it
    ** died with hooks off. */
    if (!is_hookless(L, co)) close_co(L, co);
    lt_pushobj(L, tt_error_for(irq_code()));
    return lua_error(L);
  }
  lua_xmove(co, L, 1);
  return -1;
}

static lua_State *check_co(lua_State *L, int arg) {
  luaL_checktype(L, arg, LUA_TTHREAD);
  return lua_tothread(L, arg);
}

/* coroutine.resume(co, ...) as Lua's, with resume_co. */
static int w_resume(lua_State *L) {
  lua_State *co = check_co(L, 1);
  int r = resume_co(L, co, lua_gettop(L) - 1);
  if (r < 0) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -(r + 1));
  return r + 1;
}

static int w_auxwrap(lua_State *L) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  int r = resume_co(L, co, lua_gettop(L));
  if (r < 0) {
    int stat = lua_status(co);
    if (stat != LUA_OK && stat != LUA_YIELD) {
      stat = close_co(L, co);
      lua_xmove(co, L, 1);
    }
    if (stat != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
      luaL_where(L, 1);
      lua_insert(L, -2);
      lua_concat(L, 2);
    }
    return lua_error(L);
  }
  return r;
}

/* coroutine.wrap(f) as Lua's, with resume_co. */
static int w_wrap(lua_State *L) {
  lua_State *co;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  co = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  lua_pushcclosure(L, w_auxwrap, 1);
  return 1;
}

/* coroutine.close(co) is Lua's, with the handlers run as
** cleanup; a coroutine that died with hooks off is not closed. */
static int w_close(lua_State *L) {
  lua_State *co = check_co(L, 1);
  if (is_hookless(L, co)) {
    lua_pushboolean(L, 0);
    lt_pushobj(L, tt_error_for(irq_code() != 0 ? irq_code()
                                              : TT_CANCELED));
    return 2;
  }
  lua_pushcfunction(L, atomic_load(&native_close));
  lua_insert(L, 1);
  {
    lua_State *saved = tl_irq.closing;
    tl_irq.closing = co;
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    tl_irq.closing = saved;
  }
  return lua_gettop(L);
}

/* w_gc runs a finalizer (its upvalue) on the object at 1, in a coroutine
** of its own: Lua runs finalizers with hooks off, a new coroutine has
** them on (inherited from this one), so the interrupt reaches it.  An
** error goes on as the finalizer's (Lua makes it a warning). */
static int w_gc(lua_State *L) {
  lua_State *co;
  int nres, st;
  if (!lua_isfunction(L, lua_upvalueindex(1))) return 0;
  co = lua_newthread(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 2);
  st = lua_resume(co, L, 1, &nres);
  if (st == LUA_YIELD && tl_irq.yielded == co) {
    tl_irq.yielded = NULL;
    close_co(L, co);
    return 0;
  }
  if (st != LUA_OK && st != LUA_YIELD) {
    lua_xmove(co, L, 1);
    return lua_error(L);
  }
  return 0;
}

/* wrap_gc makes the __gc field of the metatable at 'mt' run through
** w_gc.  (A __gc put into a metatable after it was set is not seen: Lua
** runs that one with hooks off.) */
static void wrap_gc(lua_State *L, int mt) {
  lua_CFunction f;
  mt = lua_absindex(L, mt);
  lua_pushliteral(L, "__gc");
  if (lua_rawget(L, mt) == LUA_TNIL ||
      ((f = lua_tocfunction(L, -1)) != NULL && f == w_gc)) {
    lua_pop(L, 1);
    return;
  }
  lua_pushcclosure(L, w_gc, 1);
  lua_pushliteral(L, "__gc");
  lua_insert(L, -2);
  lua_rawset(L, mt);
}

/* setmetatable and debug.setmetatable as Lua's, with wrap_gc. */
static int call_setmetatable(lua_State *L, lua_CFunction native) {
  if (lua_istable(L, 2)) wrap_gc(L, 2);
  lua_pushcfunction(L, native);
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

static int w_setmetatable(lua_State *L) {
  int t = lua_type(L, 2);
  /* Lua's checks, made here where the function knows its name. */
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
  return call_setmetatable(L, atomic_load(&native_setmetatable));
}

static int w_dbsetmetatable(lua_State *L) {
  int t = lua_type(L, 2);
  luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
  return call_setmetatable(L, atomic_load(&native_dbsetmetatable));
}

/* debug.sethook stands disabled: it would remove the interrupt hook. */
static int w_sethook(lua_State *L) {
  return luaL_error(L, "debug.sethook is disabled in a pool with "
                       "interrupt = true (the interrupt hook is in use)");
}

/* replace sets table[name] (the table at -1) to the C function 'f',
** keeping Lua's function in '*native' if it is asked for. */
static void replace(lua_State *L, const char *name, lua_CFunction f,
                    _Atomic(lua_CFunction) *native) {
  if (native != NULL) {
    lua_CFunction old;
    lua_getfield(L, -1, name);
    old = lua_tocfunction(L, -1);
    lua_pop(L, 1);
    if (old == NULL || old == f) return;  /* not Lua's: leave it */
    atomic_store(native, old);
  }
  lua_pushcfunction(L, f);
  lua_setfield(L, -2, name);
}

/* arm_state puts the interrupt hook on the main thread of 'L' and the
** stand-ins in its libraries, once. */
static void arm_state(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, ARMED_KEY) != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, HOOKLESS_KEY);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, LUA_GNAME) == LUA_TTABLE) {
    replace(L, "pcall", w_pcall, NULL);
    replace(L, "xpcall", w_xpcall, NULL);
    replace(L, "load", w_load, &native_load);
    replace(L, "setmetatable", w_setmetatable, &native_setmetatable);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, -1, LUA_COLIBNAME) == LUA_TTABLE) {
    replace(L, "resume", w_resume, NULL);
    replace(L, "wrap", w_wrap, NULL);
    replace(L, "close", w_close, &native_close);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, -1, LUA_DBLIBNAME) == LUA_TTABLE) {
    replace(L, "sethook", w_sethook, NULL);
    replace(L, "setmetatable", w_dbsetmetatable, &native_dbsetmetatable);
  }
  lua_pop(L, 2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  lua_sethook(lua_tothread(L, -1), irq_hook, LUA_MASKCOUNT, HOOK_COUNT);
  lua_pop(L, 1);
  lua_pushboolean(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, ARMED_KEY);
}

/* }==================================================================== */


/* ws_open sets up a new worker state (run protected). */
static int ws_open(lua_State *L) {
  lt_env *env = lua_touserdata(L, 1);
  luaL_openlibs(L);
  tl_paths_from = 0;
  if (env != NULL) set_paths(L, env);
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, ENVS_KEY);
  /* The binding's types are registered straight from this library, with
  ** no search of package.cpath: a new state is cheaper that way.  The Lua
  ** facade ("tether") is required later, only if a value names it. */
  luaL_requiref(L, "tether.core", luaopen_tether_core, 0);
  lua_pop(L, 1);
  lua_gc(L, LUA_GCGEN, 0, 0);
  return 0;
}

typedef struct wsenv {
  lt_env *env;
  tt_error *err;        /* init failed: why */
} wsenv;

/* ws_env sets an environment up in this state: its package paths, then,
** the first time it is seen here, its init function (run protected).
** Only environments with an init are remembered: the private environment
** of each tether.go task must not grow the table. */
static int ws_env(lua_State *L) {
  wsenv *w = lua_touserdata(L, 1);
  lt_env *env = w->env;
  lua_settop(L, 1);
  set_paths(L, env);
  /* Before init: a coroutine it makes inherits the hook. */
  if (env->interrupt) arm_state(L);
  if (env->init == NULL) return 0;
  if (lua_getfield(L, LUA_REGISTRYINDEX, ENVS_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, ENVS_KEY);
  }
  if (lua_rawgeti(L, 2, (lua_Integer)env->id) != LUA_TNIL) return 0;
  lua_pop(L, 1);
  lua_pushcfunction(L, msgh);
  lua_pushcfunction(L, tramp);
  lt_unpack_one(L, env->init);
  if (lua_pcall(L, 1, 0, 3) != LUA_OK) {
    int ev = lua_gettop(L);
    const char *tb = take_traceback(L);
    tt_error *inner = lt_pack_error(L, ev, tb);
    const char *name = env->name != NULL ? env->name : "?";
    w->err = inner != NULL
      ? mkerror(inner->traceback, "init of pool '%s' failed: %s", name,
                inner->message)
      : NULL;
    tt_unref(inner);
    return 0;
  }
  lua_pushboolean(L, 1);
  lua_rawseti(L, 2, (lua_Integer)env->id);
  return 0;
}

/* state_error makes an error from the error value at the top of 'L',
** with 'prefix' before its message, that no longer depends on the state
** (which may be about to close). */
static tt_error *state_error(lua_State *L, const char *prefix) {
  tt_error *e, *r;
  if (lua_type(L, -1) == LUA_TSTRING)
    return mkerror(NULL, "%s%s", prefix, lua_tostring(L, -1));
  e = lt_pack_error(L, -1, NULL);
  if (e == NULL) return NULL;
  r = mkerror(NULL, "%s%s", prefix, e->message);
  tt_unref(e);
  return r;
}

/* ensure_state returns this thread's state with 'env' set up, or NULL
** and the reason in '*err' (may be NULL when out of memory). */
static lua_State *ensure_state(lt_env *env, tt_error **err) {
  lua_State *L = tl_state;
  *err = NULL;
  if (L == NULL) {
    L = luaL_newstate();
    if (L == NULL) {
      *err = mkerror(NULL, "cannot create worker state: not enough memory");
      return NULL;
    }
    lua_pushcfunction(L, ws_open);
    lua_pushlightuserdata(L, env);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      *err = state_error(L, "cannot create worker state: ");
      lua_close(L);
      return NULL;
    }
    tl_state = L;
  }
  if (env != NULL) {
    int top = lua_gettop(L);
    wsenv w;
    w.env = env;
    w.err = NULL;
    if (!lua_checkstack(L, 3)) {
      *err = mkerror(NULL, "init of pool '%s' failed: stack overflow",
                     env->name != NULL ? env->name : "?");
      return NULL;
    }
    lua_pushcfunction(L, ws_env);
    lua_pushlightuserdata(L, &w);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      char prefix[128];
      snprintf(prefix, sizeof prefix, "init of pool '%s' failed: ",
               env->name != NULL ? env->name : "?");
      tt_unref(w.err);
      w.err = state_error(L, prefix);
      if (w.err == NULL) w.err = tt_error_for(TT_ENOMEM);
    }
    lua_settop(L, top);
    if (w.err != NULL) {
      *err = w.err;
      return NULL;
    }
  }
  return L;
}

lua_State *lt_thread_state(lt_env *env, char *err, size_t errlen) {
  tt_error *e = NULL;
  lua_State *L = ensure_state(env, &e);
  if (L == NULL && err != NULL && errlen > 0)
    snprintf(err, errlen, "%s", e != NULL ? e->message
                                           : "not enough memory");
  tt_unref(e);
  return L;
}

/* bound_finalizers gives the finalizers that run outside any task (in a
** collection after a task, when the state closes) GRACE seconds, after
** which the interrupt hook stops them, in a state that has it. */
static void bound_finalizers(void) {
  memset(&tl_irq, 0, sizeof tl_irq);
  tl_irq.ctx = tt_background();
  tl_irq.deadline = tt_now() + GRACE;
}

void lt_thread_exit(void) {
  lua_State *L = tl_state;
  if (L == NULL) return;
  tl_state = NULL;
  tl_paths_from = 0;
  bound_finalizers();
  lua_close(L);
  memset(&tl_irq, 0, sizeof tl_irq);
}

/* }==================================================================== */


/* {====================================================================
** Running a task
** ===================================================================== */

typedef struct run {
  lt_task *task;
  tt_ctx *ctx;
  tt_obj *out;
  int rc;
} run;

/* resolve_named replaces the string "module.path:function" at 'idx' by
** require("module.path").function. */
static void resolve_named(lua_State *L, int idx) {
  const char *s = lua_tostring(L, idx);
  const char *colon = strrchr(s, ':');
  if (colon == NULL || colon == s || colon[1] == '\0')
    luaL_error(L, "bad task function '%s' (expected 'module:function')",
               s);
  lua_getglobal(L, "require");
  lua_pushlstring(L, s, (size_t)(colon - s));
  lua_call(L, 1, 1);
  if (lua_getfield(L, -1, colon + 1) == LUA_TNIL)
    luaL_error(L, "module '%s' has no function '%s'",
               lua_pushlstring(L, s, (size_t)(colon - s)), colon + 1);
  lua_replace(L, idx);
  lua_pop(L, 1);
}

/* run_body does a task's work, protected: unpack, call (through
** 'tramp'), pack. */
static int run_body(lua_State *L) {
  run *r = lua_touserdata(L, 1);
  lt_task *t = r->task;
  int n, st, nres;
  lua_settop(L, 1);
  lua_pushcfunction(L, msgh);               /* 2 */
  n = lt_unpack(L, t->call);                /* 3: fn, 4..: args */
  if (n < 1) return luaL_error(L, "%s has no function", t->what);
  if (lua_type(L, 3) == LUA_TSTRING) resolve_named(L, 3);
  if (t->pass_ctx) {
    luaL_checkstack(L, 2, NULL);
    lt_pushobj(L, r->ctx);
    lua_insert(L, 4);
    n++;
  }
  lua_pushcfunction(L, tramp);
  lua_insert(L, 3);
  st = lua_pcall(L, n, LUA_MULTRET, 2);
  if (st != LUA_OK) {
    int ev = lua_gettop(L);
    const char *tb = take_traceback(L);
    r->out = (tt_obj *)lt_pack_error(L, ev, tb);
    r->rc = TT_EFAILED;
    return 0;
  }
  nres = lua_gettop(L) - 2;
  r->out = lt_pack_results(L, 3, nres, t->what);
  r->rc = TT_OK;
  return 0;
}

int lt_task_run(tt_ctx *ctx, void *arg, tt_obj **out) {
  lt_task *t = arg;
  tt_error *err = NULL;
  irq saved_irq;
  lua_State *L;
  run r;
  int top, st;
  *out = NULL;
  /* Saved and restored: a task may run another task on this same thread
  ** (nested, on top of this state's stack).  Set before the state is
  ** made ready: a spinning init is interrupted too. */
  saved_irq = tl_irq;
  memset(&tl_irq, 0, sizeof tl_irq);
  tl_irq.deadline = HUGE_VAL;
  if (t->env->interrupt) {
    double d;
    tl_irq.ctx = ctx;
    tl_irq.stop = t->env->stop;
    if (tt_ctx_deadline(ctx, &d)) tl_irq.deadline = d;
  }
  L = ensure_state(t->env, &err);
  if (L == NULL) {
    tl_irq = saved_irq;
    *out = (tt_obj *)err;
    return TT_EFAILED;
  }
  top = lua_gettop(L);
  r.task = t;
  r.ctx = ctx;
  r.out = NULL;
  r.rc = TT_EFAILED;
  if (!lua_checkstack(L, 3)) {
    r.out = (tt_obj *)mkerror(NULL, "%s failed: stack overflow", t->what);
  } else {
    lua_pushcfunction(L, run_body);
    lua_pushlightuserdata(L, &r);
    st = lua_pcall(L, 1, 0, 0);
    if (st != LUA_OK) {
      /* Unpacking failed (a module not found here), a result could not
      ** cross, or memory ran out: the message says which. */
      tt_unref(r.out);
      r.out = (tt_obj *)lt_pack_error(L, -1, NULL);
      r.rc = TT_EFAILED;
    }
  }
  lua_settop(L, top);
  /* An interrupted task left the hook firing at every instruction. */
  if (tl_irq.fired != 0)
    lua_sethook(L, irq_hook, LUA_MASKCOUNT, HOOK_COUNT);
  /* A step now and then returns what finished tasks left behind (their
  ** userdata hold references to contexts and channels) even in a worker
  ** that allocates too little to trigger the collector itself; the state
  ** runs the generational collector, so a step is a cheap minor one. */
  if (++tl_tasks % 16 == 0) {
    bound_finalizers();
    lua_gc(L, LUA_GCSTEP, 0);
  }
  tl_irq = saved_irq;
  *out = r.out;
  return r.rc;
}

/* }==================================================================== */

/* lt_task_clone makes another task with the same packed call and
** environment (both shared by reference), for callbacks that run many
** times.  NULL when out of memory. */
lt_task *lt_task_clone(const lt_task *t) {
  lt_task *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  c->what = dupstr(t->what);
  if (c->what == NULL) {
    free(c);
    return NULL;
  }
  c->env = tt_ref(t->env);
  c->call = tt_ref(t->call);
  c->pass_ctx = t->pass_ctx;
  return c;
}
