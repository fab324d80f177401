/*
** lsaga.c -- tether.saga: sagas in Lua (csrc/core/saga.c).
**
** local s = tether.saga{ name = "order", compensation_timeout = 2,
**   retry = {attempts = 3, backoff = 0.1},
**   on_compensation_failure = function(info) end,
**   dlq = chan,  -- a compensation that still fails becomes a dead letter
**   {name = "reserve", action = function(ctx, state) end,
**    compensate = function(ctx, state) end}, ... }
** local ok, err, report = s:run(ctx, state)
**
** Steps run in the calling thread, in the state that runs the saga; the
** engine decides the order, the detached contexts of compensations, their
** timeouts and retries.  A step fails by raising an error, or by
** returning nil (or false) and an error.
**
** A saga is a tether object, shared by reference like the others.  In
** the state that made it, s:run calls the step functions themselves.
** When the saga is made, the step functions are also packed (lpack.c)
** if they can cross threads, and another state that runs the saga
** unpacks them once (into its own userdata of the saga) and runs those
** copies, whose upvalues are snapshots as with every transferred
** function.  A saga whose steps cannot cross (a step holds a
** coroutine, say) stays in its state: passing it to another thread is
** refused at submit time with the reason (lt_saga_stays).
**
** Ctrl-C.  An interrupt during an action (a wait of the action raised
** "interrupted!", or lua.c's hook did in plain Lua code) makes that step
** fail like any error; the compensations then run, detached, with the
** Lua hooks put back as they were when s:run began (so lua.c's pending
** hook cannot interrupt them too), and s:run raises the action's error
** again instead of returning it: the interrupt goes on once the saga is
** undone.
*/
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ltether.h"

#define MAX_STEPS 256
#define TB_KEY "tether.saga.traceback"

typedef struct ls_saga {
  tt_obj hdr;
  tt_saga *s;
  tt_chan *dlq;          /* dead letters of failed compensations */
  tt_obj *steps;         /* the packed step functions, or NULL */
  char *stays;           /* why the steps cannot cross, or NULL */
} ls_saga;

static void ls_free(tt_obj *o) {
  ls_saga *s = (ls_saga *)o;
  tt_unref(s->s);
  tt_unref(s->dlq);
  tt_unref(s->steps);
  free(s->stays);
  free(s);
}

static void ls_traverse(tt_obj *o, tt_visit visit, void *ud) {
  visit((tt_obj *)((ls_saga *)o)->dlq, ud);
}

static const tt_type ls_type = {"tether.Saga", ls_free, NULL, ls_traverse};

/* lt_saga_stays returns why the saga 'o' cannot leave the state that
** made it ("saga 'trip' runs only in the state that made it: ..."), or
** NULL when it can, or when 'o' is not a saga: the packer refuses a saga
** with this reason. */
const char *lt_saga_stays(tt_obj *o) {
  return o->type == &ls_type ? ((ls_saga *)o)->stays : NULL;
}

/* What a run passes to the step callbacks as the engine's 'state'. */
typedef struct ls_run {
  lua_State *L;
  const char *saga;      /* the saga's name */
  int steps;             /* stack index of the steps table */
  int state;             /* stack index of the user's state */
  int hook;              /* stack index of on_compensation_failure, or 0 */
  tt_chan *dlq;          /* where compensation failures go, or NULL */
  int errslot;           /* stack index that keeps an interrupt's error */
  bool interrupted;      /* an action failed because of an interrupt */
  lt_wait hooks;         /* the Lua hooks when the run began */
} ls_run;

static _Thread_local ls_run *current;

/* msgh keeps the error value and stores a traceback beside it. */
static int msgh(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  luaL_traceback(L, L, msg, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, TB_KEY);
  lua_settop(L, 1);
  return 1;
}

/* is_interrupt tells whether the error value at 'idx' is lua.c's (or the
** binding's) "interrupted!", with or without a position. */
static bool is_interrupt(lua_State *L, int idx) {
  static const char tail[] = "interrupted!";
  size_t len, nt = sizeof tail - 1;
  const char *s;
  if (lua_type(L, idx) != LUA_TSTRING) return false;
  s = lua_tolstring(L, idx, &len);
  return len >= nt && memcmp(s + len - nt, tail, nt) == 0;
}

/* call_step calls one step's 'field' ("action" or "compensate") as
** fn(ctx, state) on the thread running the saga, protected, and turns a
** raised error, or a nil (or false) and an error, into '*err' for the
** engine (TT_EFAILED).  An action that fails because of Ctrl-C (the
** interrupt count moved, or the error is "interrupted!") marks the run
** interrupted, keeps its error for s:run to raise again, and puts back
** the hooks, so that the compensations that follow are not interrupted
** by lua.c's pending hook. */
static int call_step(tt_ctx *ctx, void *state, void *ud, tt_obj **err,
                     const char *field) {
  ls_run *r = state;
  lua_State *L = r->L;
  unsigned long gen = tt_interrupt_count();
  bool action = field[0] == 'a';
  int base = lua_gettop(L), rc;
  lua_pushcfunction(L, msgh);
  lua_rawgeti(L, r->steps, (lua_Integer)(intptr_t)ud + 1);
  lua_getfield(L, -1, field);
  lua_remove(L, -2);
  lt_pushobj(L, ctx);
  lua_pushvalue(L, r->state);
  rc = lua_pcall(L, 2, 2, base + 1);
  if (rc != LUA_OK && action && r->hooks.on &&
      (tt_interrupt_count() != gen || is_interrupt(L, base + 2))) {
    r->interrupted = true;
    lua_pushvalue(L, base + 2);
    lua_replace(L, r->errslot);
    lt_restore_hooks(L, &r->hooks);
  }
  if (rc != LUA_OK) {
    lua_getfield(L, LUA_REGISTRYINDEX, TB_KEY);
    *err = (tt_obj *)lt_pack_error(L, base + 2, lua_tostring(L, -1));
    lua_settop(L, base);
    return TT_EFAILED;
  }
  /* The refusal convention: nil (or false) and an error. */
  if (!lua_toboolean(L, base + 2) && !lua_isnil(L, base + 3)) {
    *err = (tt_obj *)lt_pack_error(L, base + 3, NULL);
    lua_settop(L, base);
    return TT_EFAILED;
  }
  lua_settop(L, base);
  return TT_OK;
}

/* step_action and step_compensate are the engine's callbacks for a
** step. */
static int step_action(tt_ctx *ctx, void *state, void *ud, tt_obj **err) {
  return call_step(ctx, state, ud, err, "action");
}

static int step_compensate(tt_ctx *ctx, void *state, void *ud,
                           tt_obj **err) {
  return call_step(ctx, state, ud, err, "compensate");
}

/* push_err pushes an error the engine holds: a packed value as its Lua
** value again, an engine object (an error) as itself, NULL as nil. */
static void push_err(lua_State *L, tt_obj *e) {
  if (e != NULL && e->type == &lt_value_type) lt_unpack_one(L, e);
  else lt_pushobj(L, e);
}

/* {====================================================================
** Compensation failures: the dead-letter channel and the hook
** ===================================================================== */

typedef struct failure {
  ls_run *r;
  const char *step;
  tt_obj *err;
  int attempts;
} failure;

/* log_failure writes one log line for a failing callback of the saga:
** the error at 'idx' and the traceback kept by msgh. */
static void log_failure(lua_State *L, const char *msg, const char *saga,
                        int idx) {
  tt_error *e;
  idx = lua_absindex(L, idx);
  lua_getfield(L, LUA_REGISTRYINDEX, TB_KEY);
  e = lt_pack_error(L, idx, lua_tostring(L, -1));
  lua_pop(L, 1);
  lt_log_failure(msg, saga, (tt_obj *)e);
  tt_unref(e);
}

/* report_failure does the Lua side of one compensation failure (run
** protected): the record {saga, step, name, error, attempts, at} goes to
** the dead-letter channel and to on_compensation_failure.  Neither may
** change the saga's outcome, and neither fails silently: a record the
** channel cannot take, or a hook that raises, is logged.  The hook (or
** nil) is argument 2. */
static int report_failure(lua_State *L) {
  failure *f = lua_touserdata(L, 1);
  ls_run *r = f->r;
  lua_settop(L, 2);
  lua_createtable(L, 0, 6);
  lua_pushstring(L, r->saga);
  lua_setfield(L, -2, "saga");
  lua_pushstring(L, f->step);
  lua_setfield(L, -2, "step");
  lua_pushfstring(L, "%s/%s (compensation)", r->saga, f->step);
  lua_setfield(L, -2, "name");
  push_err(L, f->err);
  lua_setfield(L, -2, "error");
  lua_pushinteger(L, f->attempts);
  lua_setfield(L, -2, "attempts");
  lua_pushnumber(L, tt_wall());
  lua_setfield(L, -2, "at");
  if (r->dlq != NULL) {
    tt_obj *v = lt_pack_one(L, -1, "dead letter");
    int rc = tt_chan_try_send(r->dlq, v);
    if (rc != TT_OK) {
      tt_field fl[] = {TT_FSTR("saga", r->saga), TT_FSTR("step", f->step),
                       TT_FSTR("reason", rc == TT_ECLOSED
                                           ? "the dlq channel is closed"
                                           : "the dlq channel is full")};
      tt_unref(v);
      tt_log(TT_LOG_WARN, "dead letter not sent to dlq", fl, 3);
    }
  }
  if (!lua_isnil(L, 2)) {
    lua_pushcfunction(L, msgh);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    if (lua_pcall(L, 1, 0, 4) != LUA_OK)
      log_failure(L, "on_compensation_failure failed", r->saga, -1);
  }
  return 0;
}

/* on_failure is the engine's hook for a compensation that failed its
** last attempt, on the thread running the saga. */
static void on_failure(const char *saga, const char *step, tt_obj *err,
                       int attempts, void *ud) {
  ls_run *r = current;
  lua_State *L;
  failure f;
  int top;
  (void)saga;
  (void)ud;
  if (r == NULL || (r->hook == 0 && r->dlq == NULL)) return;
  L = r->L;
  top = lua_gettop(L);
  f.r = r;
  f.step = step;
  f.err = err;
  f.attempts = attempts;
  /* Run protected: a Lua error must not unwind through the engine. */
  lua_pushcfunction(L, report_failure);
  lua_pushlightuserdata(L, &f);
  if (r->hook != 0) lua_pushvalue(L, r->hook);
  else lua_pushnil(L);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    tt_field fl[] = {TT_FSTR("saga", r->saga), TT_FSTR("step", step),
                     TT_FSTR("error", lua_tostring(L, -1))};
    tt_log(TT_LOG_ERROR, "compensation failure not reported", fl, 3);
  }
  lua_settop(L, top);
}

/* }==================================================================== */


/* {====================================================================
** tether.saga{...}
** ===================================================================== */

/* The whole set of a saga's options, and of each step's. */
static const char *const saga_options[] = {
  "name", "compensation_timeout", "retry", "on_compensation_failure",
  "dlq", NULL
};
static const char *const step_options[] = {
  "name", "action", "compensate", NULL
};

/* pack_steps packs the steps table at 1 into '*out' (run protected: a
** step that cannot cross raises, and the saga then stays local). */
static int pack_steps(lua_State *L) {
  tt_obj **out = lua_touserdata(L, 2);
  *out = lt_pack_one(L, 1, lua_tostring(L, 3));
  return 0;
}

/* tether.saga{name, compensation_timeout, retry, on_compensation_failure,
** dlq, step1, step2, ...} -> saga: a saga of 1 to 256 steps, the list
** part of the table, each {name, action = function(ctx, state),
** compensate = function(ctx, state)} ('action' required).  'name' is
** "saga" by default; 'compensation_timeout' (seconds, 0: none) bounds
** each compensation attempt; 'retry' is the retry policy of
** compensations (one attempt by default); 'on_compensation_failure' and
** 'dlq' (a channel) receive the record of each compensation that failed
** its last attempt.  Everything raises, nothing returns nil, err: an
** unknown option, in the saga's table or a step's ("[2].compensation"),
** no steps or more than 256, a step that is not a table, has no function
** 'action', or a 'compensate' or 'name' of the wrong type, a 'dlq' that
** is not a channel, a bad retry policy.  The steps are copied into a
** table of the saga's own, so later changes to the user's tables do not
** change it, and packed for other threads when they can cross; when they
** cannot, the saga stays in this state and records why (lt_saga_stays)
** instead of raising: it is still good here. */
static int l_saga(lua_State *L) {
  tt_saga_step steps[MAX_STEPS];
  const char *name;
  double ctimeout;
  tt_retry retry;
  lua_Integer n, i;
  ls_saga *s;
  int own;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lt_checkopts(L, 1, 1, NULL, saga_options, true);
  n = (lua_Integer)lua_rawlen(L, 1);
  luaL_argcheck(L, n >= 1, 1, "a saga needs at least one step");
  luaL_argcheck(L, n <= MAX_STEPS, 1, "too many steps");
  name = lt_optstring(L, 1, 1, "name", "saga");
  ctimeout = lt_optnumber(L, 1, 1, "compensation_timeout", 0, 0);
  retry.attempts = 1;
  retry.backoff = 0.1;
  retry.factor = 2;
  retry.max_backoff = 3600;
  retry.jitter = 0;
  if (lua_getfield(L, 1, "retry") != LUA_TNIL)
    lt_checkretry(L, 1, -1, &retry);
  lua_pop(L, 1);
  if (lt_optfunction(L, 1, 1, "on_compensation_failure")) lua_pop(L, 1);
  if (lua_getfield(L, 1, "dlq") != LUA_TNIL &&
      lt_testobj(L, -1, &tt_chan_type) == NULL)
    lt_fielderror(L, 1, "dlq", "must be a tether.Chan");
  lua_pop(L, 1);
  /* The steps go into a table of our own, {{action = f, compensate =
  ** g}, ..., hook = h}, so later changes to the user's tables do not
  ** change the saga. */
  lua_createtable(L, (int)n, 1);
  own = lua_gettop(L);
  for (i = 1; i <= n; i++) {
    int t = lua_rawgeti(L, 1, i), st = lua_gettop(L);
    if (t != LUA_TTABLE) {
      lua_pushfstring(L, "step %d must be a table, got %s", (int)i,
                      luaL_typename(L, -1));
      return luaL_argerror(L, 1, lua_tostring(L, -1));
    }
    lt_checkopts(L, 1, st, lua_pushfstring(L, "[%d]", (int)i), step_options,
                 false);
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    if (lua_getfield(L, st, "action") != LUA_TFUNCTION) {
      lua_pushfstring(L, "step %d needs a function 'action'", (int)i);
      return luaL_argerror(L, 1, lua_tostring(L, -1));
    }
    lua_setfield(L, -2, "action");
    lua_getfield(L, st, "compensate");
    if (!lua_isnil(L, -1) && !lua_isfunction(L, -1)) {
      lua_pushfstring(L, "step %d: 'compensate' must be a function",
                      (int)i);
      return luaL_argerror(L, 1, lua_tostring(L, -1));
    }
    steps[i - 1].compensate = lua_isnil(L, -1) ? NULL : step_compensate;
    lua_setfield(L, -2, "compensate");
    if (lua_getfield(L, st, "name") != LUA_TNIL && !lua_isstring(L, -1)) {
      lua_pushfstring(L, "step %d: 'name' must be a string", (int)i);
      return luaL_argerror(L, 1, lua_tostring(L, -1));
    }
    steps[i - 1].name = lua_tostring(L, -1);  /* copied by tt_saga_new */
    lua_pop(L, 1);
    steps[i - 1].action = step_action;
    steps[i - 1].ud = (void *)(intptr_t)(i - 1);
    lua_rawseti(L, own, i);
    lua_pop(L, 1);  /* the user's step */
  }
  lua_getfield(L, 1, "on_compensation_failure");
  lua_setfield(L, own, "hook");
  s = calloc(1, sizeof *s);
  if (s == NULL) return luaL_error(L, "not enough memory");
  tt_obj_init(&s->hdr, &ls_type);
  lt_pushnew(L, s);
  lua_getfield(L, 1, "dlq");
  s->dlq = tt_ref(lt_testobj(L, -1, &tt_chan_type));
  lua_pop(L, 1);
  s->s = tt_saga_new(name, steps, (int)n, ctimeout, &retry);
  if (s->s == NULL) return luaL_error(L, "not enough memory");
  tt_saga_set_on_compensation_failure(s->s, on_failure, NULL);
  lua_pushvalue(L, own);
  lua_setiuservalue(L, -2, 1);
  /* Packed now, while the functions are at hand: the state that runs
  ** the saga elsewhere cannot reach them. */
  lua_pushcfunction(L, pack_steps);
  lua_pushvalue(L, own);
  lua_pushlightuserdata(L, &s->steps);
  lua_pushfstring(L, "saga '%s'", name);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
    const char *why = lua_pushfstring(L, "saga '%s' runs only in the "
                                         "state that made it: %s", name,
                                      lua_tostring(L, -1));
    s->stays = strdup(why);
    if (s->stays == NULL) return luaL_error(L, "not enough memory");
    lua_pop(L, 2);
  }
  return 1;
}

/* }==================================================================== */


/* {====================================================================
** s:run
** ===================================================================== */

/* push_report pushes the report of a run: {saga, ok, failed_step, error,
** compensation_failures, steps = {{name, status, attempts, error}, ...}}
** ('failed_step' absent when no step failed). */
static void push_report(lua_State *L, tt_saga_report *r) {
  int i;
  lua_createtable(L, 0, 6);
  lua_pushstring(L, r->saga);
  lua_setfield(L, -2, "saga");
  lua_pushboolean(L, r->code == TT_OK);
  lua_setfield(L, -2, "ok");
  if (r->failed_step >= 0) {
    lua_pushstring(L, r->steps[r->failed_step].name);
    lua_setfield(L, -2, "failed_step");
  }
  push_err(L, r->error);
  lua_setfield(L, -2, "error");
  lua_pushinteger(L, r->compensation_failures);
  lua_setfield(L, -2, "compensation_failures");
  lua_createtable(L, r->nsteps, 0);
  for (i = 0; i < r->nsteps; i++) {
    lua_createtable(L, 0, 4);
    lua_pushstring(L, r->steps[i].name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, tt_saga_status_name(r->steps[i].status));
    lua_setfield(L, -2, "status");
    lua_pushinteger(L, r->steps[i].attempts);
    lua_setfield(L, -2, "attempts");
    push_err(L, r->steps[i].error);
    lua_setfield(L, -2, "error");
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "steps");
}

/* push_steps pushes the steps table of the saga at 1 in this state: the
** one kept in its userdata, or, in a state that did not make the saga,
** the packed steps unpacked (and kept there for the next run). */
static void push_steps(lua_State *L, ls_saga *s) {
  if (lua_getiuservalue(L, 1, 1) == LUA_TTABLE) return;
  lua_pop(L, 1);
  if (s->steps == NULL)
    luaL_error(L, "%s", s->stays != NULL
                          ? s->stays
                          : "saga runs only in the state that made it");
  lt_unpack_one(L, s->steps);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, 1, 1);
}

/* s:run(ctx [, state]) -> true, nil, report | nil, err, report: runs the
** actions in order on this thread, each as action(ctx, state) ('state'
** is passed as it is, shared by the steps).  Before each action the
** engine checks 'ctx': once it is done, no further action starts and the
** saga fails with its error.  When an action fails, the compensations of
** the steps whose actions completed run in reverse order, each under
** with_timeout(without_cancel(ctx), compensation_timeout), retried by
** the saga's policy, so they run even when the caller has gone.  'err'
** is the failing step's error (an error object; a string raised or
** returned has code 'failed'); the report is push_report's.  It may be
** called from any thread, and several at once: each state runs its own
** copies of the steps.  Raises for a non-context 'ctx', in a state that
** cannot have the steps, and, after the compensations ran, with the
** action's own error when Ctrl-C interrupted it ('interrupted!'). */
static int m_run(lua_State *L) {
  ls_saga *s = lt_checkobj(L, 1, &ls_type);
  tt_ctx *ctx = lt_checkobj(L, 2, &tt_ctx_type);
  tt_saga_report *rep = NULL;
  ls_run run, *saved;
  int rc;
  lua_settop(L, 3);
  push_steps(L, s);
  run.L = L;
  run.saga = tt_saga_name(s->s);
  run.steps = lua_gettop(L);
  run.state = 3;
  lua_getfield(L, run.steps, "hook");
  run.hook = lua_isnil(L, -1) ? 0 : lua_gettop(L);
  run.dlq = s->dlq;
  lua_pushnil(L);
  run.errslot = lua_gettop(L);
  run.interrupted = false;
  lt_save_hooks(L, &run.hooks);
  saved = current;
  current = &run;
  rc = tt_saga_run(s->s, ctx, &run, &rep);
  current = saved;
  if (rep == NULL) return luaL_error(L, "not enough memory");
  if (run.interrupted) {
    /* Undone: now the interrupt goes on. */
    tt_saga_report_free(rep);
    lua_pushvalue(L, run.errslot);
    return lua_error(L);
  }
  if (rc == TT_OK) {
    lua_pushboolean(L, 1);
    lua_pushnil(L);
  } else {
    lua_pushnil(L);
    push_err(L, rep->error);
  }
  push_report(L, rep);
  tt_saga_report_free(rep);
  return 3;
}

/* }==================================================================== */

void lt_open_saga(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"run", m_run},
    {NULL, NULL}
  };
  lt_newtype(L, &ls_type, methods, NULL);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_saga);
  lua_setfield(L, -2, "saga");
}
