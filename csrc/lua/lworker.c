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
** error object, never as a panic.  The tasks of pools with interrupts
** run under lirq.c's hook, from before their init.
*/
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

/* env_free frees an environment once its last task (or pool) drops it, with the
** init function and the stop context it holds. */
static void env_free(tt_obj *o) {
  lt_env *e = (lt_env *)o;
  tt_unref(e->init);
  tt_unref(e->stop);
  free(e->path);
  free(e->cpath);
  free(e->name);
  free(e);
}

/* env_traverse reports the packed init function to the engine's reference-cycle
** check: the tether objects its upvalues hold are held by the environment (the
** 'stop' context is not reported). */
static void env_traverse(tt_obj *o, tt_visit visit, void *ud) {
  visit(((lt_env *)o)->init, ud);
}

const tt_type lt_env_type = {"tether.Env", env_free, NULL, env_traverse};

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

/* lt_env_new: see lworker.h.  The paths are pushed and the init function packed
** before the environment is allocated, so that a refusal raised there leaks
** nothing; only the final allocation can fail after, and it frees the packed
** init before raising. */
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

/* lt_env_watch: see lworker.h.  Not locked: it must be called before the
** environment's first task, while no worker reads 'stop'. */
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
  tt_obj *more;         /* packed arguments after those, or NULL */
  bool pass_ctx;
  char what[];          /* "task 'audit'" */
};

/* task_alloc allocates a task with room for 'what' in it (one malloc per
** task); NULL when out of memory. */
static lt_task *task_alloc(const char *what) {
  size_t len = strlen(what);
  lt_task *t = malloc(sizeof *t + len + 1);
  if (t != NULL) memcpy(t->what, what, len + 1);
  return t;
}

/* lt_task_new: see lworker.h.  Without 'env' the task gets a private
** environment with the submitting state's package paths, so that a tether.go
** task can require what its submitter can.  Packing (which may raise) comes
** before any allocation that Lua does not own. */
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
  t = env != NULL ? task_alloc(what) : NULL;
  if (t == NULL) {
    tt_unref(own);
    tt_unref(call);
    luaL_error(L, "not enough memory");
    return NULL;
  }
  t->env = own != NULL ? own : tt_ref(env);
  t->call = call;
  t->more = NULL;
  t->pass_ctx = pass_ctx;
  return t;
}

/* lt_task_of: see lworker.h. */
lt_task *lt_task_of(lt_env *env, tt_obj *fn, tt_obj *args,
                    const char *what) {
  lt_task *t = task_alloc(what);
  if (t == NULL) return NULL;
  t->env = tt_ref(env);
  t->call = tt_ref(fn);
  t->more = tt_ref(args);
  t->pass_ctx = true;
  return t;
}

/* lt_task_drop: see lworker.h.  NULL is allowed, so that error paths need not
** check. */
void lt_task_drop(void *arg) {
  lt_task *t = arg;
  if (t == NULL) return;
  tt_unref(t->env);
  tt_unref(t->call);
  tt_unref(t->more);
  free(t);
}

/* }==================================================================== */


/* {====================================================================
** Errors of tasks
** ===================================================================== */

/* err_message computes tostring(value) for an error, as lua.c's message
** handler does. */
static int err_message(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg != NULL) return 1;
  if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
    return 1;
  lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  return 1;
}

/* err_pack packs the error value for err.value (run protected: a value
** that cannot cross is simply left behind). */
static int err_pack(lua_State *L) {
  tt_obj **out = lua_touserdata(L, 2);
  *out = lt_pack_one(L, 1, "error value");
  return 0;
}

/* lt_pack_error: see ltether.h. */
tt_error *lt_pack_error(lua_State *L, int idx, const char *traceback) {
  tt_obj *o, *value = NULL;
  tt_error *e;
  char *msg = NULL;
  char fallback[64];
  int top = lua_gettop(L);
  bool room = lua_checkstack(L, 4);
  idx = lua_absindex(L, idx);
  /* A tether error (an interrupt's, among others) goes as it is, before
  ** any formatting: an interrupted op's waiter is waiting for it. */
  if (room && (o = lt_toobj(L, idx)) != NULL && o->type == &tt_error_type)
    return tt_ref(o);
  snprintf(fallback, sizeof fallback, "(error object is a %s value)",
           luaL_typename(L, idx));
  if (room) {
    lua_pushcfunction(L, err_message);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING)
      msg = dupstr(lua_tostring(L, -1));
    lua_settop(L, top);
    /* The value itself goes along if it can cross, for err.value. */
    lua_pushcfunction(L, err_pack);
    lua_pushvalue(L, idx);
    lua_pushlightuserdata(L, &value);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) value = NULL;
    lua_settop(L, top);
  }
  e = tt_error_new(TT_EFAILED, msg != NULL ? msg : fallback, NULL);
  free(msg);
  if (e == NULL) {
    tt_unref(value);
    return NULL;
  }
  e->traceback = traceback != NULL ? dupstr(traceback) : NULL;
  e->value = value;
  return e;
}

/* }==================================================================== */


/* {====================================================================
** Worker states
** ===================================================================== */

static _Thread_local lua_State *tl_state;
static _Thread_local unsigned tl_tasks;  /* tasks run by this state */

/* mkerror makes a TT_EFAILED error from a format; NULL when out of
** memory. */
static tt_error *mkerror(const char *traceback, const char *fmt, ...) {
  va_list ap;
  char small[256], *big = NULL;
  const char *msg = small;
  int n;
  tt_error *e;
  va_start(ap, fmt);
  n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) return tt_error_new(TT_EFAILED, NULL, NULL);
  if ((size_t)n >= sizeof small) {  /* it did not fit: format it again */
    big = malloc((size_t)n + 1);
    if (big == NULL) return NULL;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    msg = big;
  }
  e = tt_error_new(TT_EFAILED, msg, NULL);
  free(big);
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

static int run_body(lua_State *L);
static int ws_env(lua_State *L);

/* lt_task_boundary: see lworker.h.  run_body runs a task and ws_env runs an
** init; both call through lt_tramp. */
bool lt_task_boundary(lua_CFunction f) {
  return f == run_body || f == ws_env;
}

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
  if (env->interrupt) lt_irq_arm(L);
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
  lua_pushcfunction(L, lt_tramp);
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

/* lt_thread_state: see lworker.h.  The error object from ensure_state is turned
** into a message in 'err' here, for callers that report a message (lhttp.c's
** handler threads, lpool.c's dead-letter sends). */
lua_State *lt_thread_state(lt_env *env, char *err, size_t errlen) {
  tt_error *e = NULL;
  lua_State *L = ensure_state(env, &e);
  if (L == NULL && err != NULL && errlen > 0)
    snprintf(err, errlen, "%s", e != NULL ? e->message
                                           : "not enough memory");
  tt_unref(e);
  return L;
}

/* lt_thread_exit: see lworker.h.  The thread-local pointers are cleared before
** the state closes, so that nothing run while it closes takes it for a live
** state; its finalizers run under the interrupt hook with a grace period, so
** one that spins cannot keep the thread from ending. */
void lt_thread_exit(void) {
  lua_State *L = tl_state;
  if (L == NULL) return;
  lt_irq saved;
  tl_state = NULL;
  tl_paths_from = 0;
  /* The state's close runs its finalizers: they get a grace period. */
  lt_irq_begin(&saved, NULL, NULL);
  lt_irq_finalizers(L);
  lua_close(L);
  lt_irq_end(&saved);
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
  if (t->more != NULL) n += lt_unpack(L, t->more);
  if (lua_type(L, 3) == LUA_TSTRING) resolve_named(L, 3);
  if (t->pass_ctx) {
    luaL_checkstack(L, 2, NULL);
    lt_pushobj(L, r->ctx);
    lua_insert(L, 4);
    n++;
  }
  lua_pushcfunction(L, lt_tramp);
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

/* lt_task_run: see lworker.h.  The task runs in this thread's worker state
** (made on first use, with 'env''s init run once), inside run_body under
** lua_pcall: a failing task, a result that cannot cross or a memory error all
** end as '*out', a tt_error, never as a panic.  The interrupt of the task (its
** context with an interrupting environment, and the environment's stop context)
** covers the state's set-up too. */
int lt_task_run(tt_ctx *ctx, void *arg, tt_obj **out) {
  lt_task *t = arg;
  tt_error *err = NULL;
  lt_irq saved_irq;
  lua_State *L;
  run r;
  int top, st;
  *out = NULL;
  /* Saved and restored: a task may run another task on this same thread
  ** (nested, on top of this state's stack).  Set before the state is
  ** made ready: a spinning init is interrupted too. */
  lt_irq_begin(&saved_irq, t->env->interrupt ? ctx : NULL, t->env->stop);
  L = ensure_state(t->env, &err);
  if (L == NULL) {
    lt_irq_end(&saved_irq);
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
  /* A step now and then returns what finished tasks left behind (their
  ** userdata hold references to contexts and channels) even in a worker
  ** that allocates too little to trigger the collector itself; the state
  ** runs the generational collector, so a step is a cheap minor one.
  ** Its finalizers get a grace period. */
  lt_irq_finalizers(L);
  if (++tl_tasks % 16 == 0) lua_gc(L, LUA_GCSTEP, 0);
  lt_irq_end(&saved_irq);
  *out = r.out;
  return r.rc;
}

/* }==================================================================== */

/* lt_task_clone makes another task with the same packed call and
** environment (both shared by reference), for callbacks that run many
** times.  NULL when out of memory. */
lt_task *lt_task_clone(const lt_task *t) {
  lt_task *c = task_alloc(t->what);
  if (c == NULL) return NULL;
  c->env = tt_ref(t->env);
  c->call = tt_ref(t->call);
  c->more = tt_ref(t->more);
  c->pass_ctx = t->pass_ctx;
  return c;
}
