/*
** lirq.c -- interrupts of Lua tasks (DESIGN section 2).
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
**   itself, since every protected call made here goes through 'lt_tramp'),
**   or one run while a coroutine is closed.  Within GRACE seconds of the
**   first interrupt the hook leaves cleanup alone, looking again when a
**   function returns (a handler that returns is over: code after it is
**   interrupted); after that nothing is spared.
** - The hook reads the op's deadline from the clock and the pool's
**   shutdown context itself, so a task stops without waiting for the
**   timer thread or the executor to cancel its context.
*/
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include <lualib.h>

#include "lworker.h"

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


/* The interrupt of the task running on this thread, for the hook (which
** gets only the lua_State) and the stand-ins; set by lt_irq_begin. */
static _Thread_local lt_irq tl_irq;

static int w_pcall(lua_State *L);
static int w_xpcall(lua_State *L);

/* Lua's own functions that the stand-ins call.  Kept here rather than
** as upvalues or in the registry, where a task could reach them through
** the debug library; every state has the same ones. */
static _Atomic(lua_CFunction) native_load, native_setmetatable,
    native_dbsetmetatable, native_close;

/* tramp_k is lt_tramp's continuation: all the results, whether the call
** returned or was resumed after a yield. */
static int tramp_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  (void)k;
  return lua_gettop(L);
}

/* lt_tramp calls the function at 1 with the values after it and returns
** all its results (lworker.h).  It must stand between every protected
** call of a worker state and the function called, so that a Lua function
** whose caller is the protected call's own C function can only be a
** __close handler run while that call unwinds (cleanup_frame).  A
** continuation keeps it yieldable. */
int lt_tramp(lua_State *L) {
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
** made through 'lt_tramp'. */
static bool is_boundary(lua_CFunction f) {
  return f == w_pcall || f == w_xpcall || lt_task_boundary(f);
}

/* cleanup_frame tells whether the function at 'level' of 'L' is a
** __close handler: called when a block ends (Lua names it "metamethod
** 'close'"), or a Lua function called by a protected call's C function
** itself (not through 'lt_tramp'), as those handlers are when the call
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

/* is_hookless tells whether coroutine 'co' died of an interrupt where it
** could not yield (mark_hookless), with hooks off: its __close handlers
** must then not run. */
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

/* w_finish is the end of the stand-in pcall and xpcall, and their
** continuation after a yield: pcall's results (true and the function's
** results, or false and the error), except that a caught interrupt is
** raised again at once, so that no task can swallow it.  'extra' is how
** many values below the results are not results (xpcall's handler). */
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

/* pcall(f, ...) -> true, ... | false, err: Lua's pcall, through
** 'lt_tramp', in a state with interrupts.  Raises for no argument, as
** Lua's does, and raises an interrupt again instead of returning it. */
static int w_pcall(lua_State *L) {
  int status;
  luaL_checkany(L, 1);
  lua_pushboolean(L, 1);
  lua_insert(L, 1);
  lua_pushcfunction(L, lt_tramp);
  lua_insert(L, 2);
  status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, w_finish);
  return w_finish(L, status, 0);
}

/* w_msgh stands in for xpcall's message handler (its upvalue): an
** interrupt goes on as it is, without the user's handler, which Lua
** would run with hooks off (a handler that loops could then hold the
** task forever); anything else goes through the user's handler. */
static int w_msgh(lua_State *L) {
  if (is_interrupt(L, 1)) return 1;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

/* xpcall(f, msgh, ...) -> true, ... | false, msgh(err): Lua's xpcall,
** through 'lt_tramp', with the handler wrapped by w_msgh.  Raises for a
** non-function 'msgh', and raises an interrupt again instead of
** returning it. */
static int w_xpcall(lua_State *L) {
  int status, n = lua_gettop(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, w_msgh, 1);
  lua_replace(L, 2);          /* the handler, wrapped */
  lua_pushboolean(L, 1);
  lua_pushcfunction(L, lt_tramp);
  lua_pushvalue(L, 1);
  lua_rotate(L, 3, 3);        /* true, tramp, f below the arguments */
  status = lua_pcallk(L, n - 1, LUA_MULTRET, 2, 2, w_finish);
  return w_finish(L, status, 2);
}

/* load(chunk [, chunkname [, mode [, env]]]) -> f | nil, err: Lua's load
** (the native one, kept in 'native_load'), except that an interrupt
** raised in a reader function is raised again instead of returned as
** load's error.  Its arguments are checked here first so that an error
** names 'load' (the native function, called from C, would not know its
** own name). */
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

/* check_co returns the coroutine at 'arg', or raises "thread expected". */
static lua_State *check_co(lua_State *L, int arg) {
  luaL_checktype(L, arg, LUA_TTHREAD);
  return lua_tothread(L, arg);
}

/* coroutine.resume(co, ...) -> true, ... | false, err: Lua's, with
** resume_co: a coroutine that an interrupt reached is closed (its
** __close handlers run as cleanup) and the interrupt is raised in the
** resumer, never returned as false, err. */
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

/* w_auxwrap is the function coroutine.wrap returns (the coroutine is its
** upvalue): it resumes it with resume_co and returns its results; an
** error closes a dead coroutine and is raised again, a string error
** with the position prepended, as Lua's auxwrap does. */
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

/* coroutine.wrap(f) -> function: Lua's, whose function resumes through
** resume_co (w_auxwrap).  Raises for a non-function 'f'. */
static int w_wrap(lua_State *L) {
  lua_State *co;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  co = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  lua_pushcclosure(L, w_auxwrap, 1);
  return 1;
}

/* coroutine.close(co) -> true | false, err: Lua's (the native one), with
** the handlers run as cleanup (in their grace period).  A coroutine that
** died with hooks off is not closed: false and the interrupt's error. */
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
  mt = lua_absindex(L, mt);
  lua_pushliteral(L, "__gc");
  /* A C finalizer runs no Lua code: it is left as it is, and so is one
  ** already wrapped. */
  if (lua_rawget(L, mt) == LUA_TNIL || lua_tocfunction(L, -1) != NULL) {
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

/* setmetatable(t, mt) -> t: Lua's, with mt's Lua __gc wrapped by
** wrap_gc.  Lua's checks are made first, here, so that an error names
** 'setmetatable'; a protected metatable raises in the native function. */
static int w_setmetatable(lua_State *L) {
  int t = lua_type(L, 2);
  /* Lua's checks, made here where the function knows its name. */
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
  return call_setmetatable(L, atomic_load(&native_setmetatable));
}

/* debug.setmetatable(v, mt) -> v: Lua's, with mt's Lua __gc wrapped by
** wrap_gc. */
static int w_dbsetmetatable(lua_State *L) {
  int t = lua_type(L, 2);
  luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
  return call_setmetatable(L, atomic_load(&native_dbsetmetatable));
}

/* debug.sethook(...) always raises in a state with interrupts: it would
** remove the interrupt hook, on which the promise of interrupts rests.
** (debug.gethook is left: it shows the hook.) */
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

/* lt_irq_arm, once per state (ARMED_KEY), puts the stand-ins in the
** state's libraries, as loaded (package.loaded, so the globals and
** require give them), keeping Lua's own functions where the stand-ins
** need them, then puts the count hook on the main thread, from which
** every coroutine made later inherits it (lworker.h). */
void lt_irq_arm(lua_State *L) {
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


/* {====================================================================
** Tasks
** ===================================================================== */

/* lt_irq_begin saves this thread's interrupt and starts that of a task
** (lworker.h).  The deadline is read once here so that the hook can
** compare it with the clock itself, and stop the task without waiting
** for the timer thread to cancel its context. */
void lt_irq_begin(lt_irq *saved, tt_ctx *ctx, tt_ctx *stop) {
  double d;
  *saved = tl_irq;
  memset(&tl_irq, 0, sizeof tl_irq);
  tl_irq.deadline = HUGE_VAL;
  if (ctx == NULL) return;
  tl_irq.ctx = ctx;
  tl_irq.stop = stop;
  if (tt_ctx_deadline(ctx, &d)) tl_irq.deadline = d;
}

/* lt_irq_finalizers ends the interrupt of the task that ran on 'L' and
** gives the finalizers that run from now on GRACE seconds (lworker.h):
** they run under the background context, so only the deadline stops
** them.  The hook goes back to HOOK_COUNT after an interrupt left it
** firing at every instruction. */
void lt_irq_finalizers(lua_State *L) {
  /* An interrupted task left the hook firing at every instruction. */
  if (tl_irq.fired != 0 && L != NULL)
    lua_sethook(L, irq_hook, LUA_MASKCOUNT, HOOK_COUNT);
  memset(&tl_irq, 0, sizeof tl_irq);
  tl_irq.ctx = tt_background();
  tl_irq.deadline = tt_now() + GRACE;
}

/* lt_irq_end puts back the interrupt lt_irq_begin saved (tasks may nest
** on one thread). */
void lt_irq_end(const lt_irq *saved) {
  tl_irq = *saved;
}

/* }==================================================================== */
