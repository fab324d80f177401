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
** Steps run in the calling thread, in the state that made the saga (the
** step functions stay there, so they may hold anything); the engine
** decides the order, the detached contexts of compensations, their
** timeouts and retries.  A step fails by raising an error, or by
** returning nil (or false) and an error.
*/
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ltether.h"

#define MAX_STEPS 256
#define TB_KEY "tether.saga.traceback"

typedef struct ls_saga {
  tt_obj hdr;
  tt_saga *s;
  tt_chan *dlq;          /* dead letters of failed compensations */
  lua_State *owner;      /* main thread of the state holding the steps */
} ls_saga;

static void ls_free(tt_obj *o) {
  ls_saga *s = (ls_saga *)o;
  tt_unref(s->s);
  tt_unref(s->dlq);
  free(s);
}

static void ls_traverse(tt_obj *o, tt_visit visit, void *ud) {
  visit((tt_obj *)((ls_saga *)o)->dlq, ud);
}

static const tt_type ls_type = {"tether.Saga", ls_free, NULL, ls_traverse};

/* What a run passes to the step callbacks as the engine's 'state'. */
typedef struct ls_run {
  lua_State *L;
  int steps;             /* stack index of the steps table */
  int state;             /* stack index of the user's state */
  int hook;              /* stack index of on_compensation_failure, or 0 */
  tt_chan *dlq;          /* where compensation failures go, or NULL */
} ls_run;

static _Thread_local ls_run *current;

static lua_State *main_thread(lua_State *L) {
  lua_State *m;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  m = lua_tothread(L, -1);
  lua_pop(L, 1);
  return m;
}

/* msgh keeps the error value and stores a traceback beside it. */
static int msgh(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  luaL_traceback(L, L, msg, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, TB_KEY);
  lua_settop(L, 1);
  return 1;
}

static int call_step(tt_ctx *ctx, void *state, void *ud, tt_obj **err,
                     const char *field) {
  ls_run *r = state;
  lua_State *L = r->L;
  int base = lua_gettop(L), rc;
  lua_pushcfunction(L, msgh);
  lua_rawgeti(L, r->steps, (lua_Integer)(intptr_t)ud + 1);
  lua_getfield(L, -1, field);
  lua_remove(L, -2);
  lt_pushobj(L, ctx);
  lua_pushvalue(L, r->state);
  rc = lua_pcall(L, 2, 2, base + 1);
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

static int step_action(tt_ctx *ctx, void *state, void *ud, tt_obj **err) {
  return call_step(ctx, state, ud, err, "action");
}

static int step_compensate(tt_ctx *ctx, void *state, void *ud,
                           tt_obj **err) {
  return call_step(ctx, state, ud, err, "compensate");
}

static void push_err(lua_State *L, tt_obj *e) {
  if (e != NULL && e->type == &lt_value_type) lt_unpack_one(L, e);
  else lt_pushobj(L, e);
}

/* on_failure calls the saga's on_compensation_failure with a table
** {saga, step, error, attempts}; its own errors are ignored (a report
** hook must not change the saga's outcome). */
static void on_failure(const char *saga, const char *step, tt_obj *err,
                       int attempts, void *ud) {
  ls_run *r = current;
  lua_State *L;
  (void)ud;
  if (r == NULL || (r->hook == 0 && r->dlq == NULL)) return;
  L = r->L;
  lua_createtable(L, 0, 5);
  lua_pushstring(L, saga);
  lua_setfield(L, -2, "saga");
  lua_pushstring(L, step);
  lua_setfield(L, -2, "step");
  lua_pushfstring(L, "%s/%s (compensation)", saga, step);
  lua_setfield(L, -2, "name");
  push_err(L, err);
  lua_setfield(L, -2, "error");
  lua_pushinteger(L, attempts);
  lua_setfield(L, -2, "attempts");
  lua_pushnumber(L, tt_wall());
  lua_setfield(L, -2, "at");
  /* The dead-letter channel gets a copy; a full one loses nothing the
  ** report does not also hold. */
  if (r->dlq != NULL) {
    tt_obj *v = lt_pack_one(L, -1, "dead letter");
    if (tt_chan_try_send(r->dlq, v) != TT_OK) tt_unref(v);
  }
  if (r->hook != 0) {
    lua_pushvalue(L, r->hook);
    lua_insert(L, -2);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
  } else {
    lua_pop(L, 1);
  }
}

static void check_retry(lua_State *L, tt_retry *r) {
  r->attempts = 1;
  r->backoff = 0.1;
  r->factor = 2;
  r->max_backoff = 30;
  r->jitter = 0;
  if (lua_getfield(L, 1, "retry") == LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  luaL_argcheck(L, lua_istable(L, -1), 1, "field 'retry' must be a table");
  if (lua_getfield(L, -1, "attempts") != LUA_TNIL) {
    int isint;
    lua_Integer n = lua_tointegerx(L, -1, &isint);
    luaL_argcheck(L, isint && n >= 1 && n <= 1000, 1,
                  "field 'retry.attempts' must be an integer from 1 to 1000");
    r->attempts = (int)n;
  }
  lua_pop(L, 1);
#define NUMFIELD(f, min, max) \
  if (lua_getfield(L, -1, #f) != LUA_TNIL) { \
    double v = lua_tonumber(L, -1); \
    luaL_argcheck(L, lua_type(L, -1) == LUA_TNUMBER && !isnan(v) && \
                  v >= (min) && v <= (max), 1, \
                  "field 'retry." #f "' out of range"); \
    r->f = v; \
  } \
  lua_pop(L, 1)
  NUMFIELD(backoff, 0, 1e9);
  NUMFIELD(factor, 1, 1e9);
  NUMFIELD(max_backoff, 0, 1e9);
  NUMFIELD(jitter, 0, 1);
#undef NUMFIELD
  lua_pop(L, 1);
}

static int l_saga(lua_State *L) {
  tt_saga_step steps[MAX_STEPS];
  const char *name;
  double ctimeout = 0;
  tt_retry retry;
  lua_Integer n, i;
  ls_saga *s;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  n = (lua_Integer)lua_rawlen(L, 1);
  luaL_argcheck(L, n >= 1, 1, "a saga needs at least one step");
  luaL_argcheck(L, n <= MAX_STEPS, 1, "too many steps");
  lua_getfield(L, 1, "name");
  name = lua_isnil(L, -1) ? "saga" : lua_tostring(L, -1);
  luaL_argcheck(L, name != NULL, 1, "field 'name' must be a string");
  if (lua_getfield(L, 1, "compensation_timeout") != LUA_TNIL) {
    ctimeout = lua_tonumber(L, -1);
    luaL_argcheck(L, lua_type(L, -1) == LUA_TNUMBER && !isnan(ctimeout) &&
                  ctimeout >= 0, 1, "field 'compensation_timeout' must be "
                  "a non-negative number");
  }
  lua_pop(L, 1);
  check_retry(L, &retry);
  lua_getfield(L, 1, "on_compensation_failure");
  luaL_argcheck(L, lua_isnil(L, -1) || lua_isfunction(L, -1), 1,
                "field 'on_compensation_failure' must be a function");
  lua_pop(L, 1);
  lua_getfield(L, 1, "dlq");
  luaL_argcheck(L, lua_isnil(L, -1) ||
                lt_testobj(L, -1, &tt_chan_type) != NULL, 1,
                "field 'dlq' must be a tether.Chan");
  lua_pop(L, 1);
  /* Copy the steps into a table of our own, so later changes to the
  ** user's table do not change the saga. */
  lua_createtable(L, (int)n, 0);
  for (i = 1; i <= n; i++) {
    int t = lua_rawgeti(L, 1, i);
    if (t != LUA_TTABLE) {
      lua_pushfstring(L, "step %d must be a table, got %s", (int)i,
                      luaL_typename(L, -1));
      return luaL_argerror(L, 1, lua_tostring(L, -1));
    }
    if (lua_getfield(L, -1, "action") != LUA_TFUNCTION) {
      lua_pushfstring(L, "step %d needs a function 'action'", (int)i);
      return luaL_argerror(L, 1, lua_tostring(L, -1));
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "compensate");
    if (!lua_isnil(L, -1) && !lua_isfunction(L, -1)) {
      lua_pushfstring(L, "step %d: 'compensate' must be a function",
                      (int)i);
      return luaL_argerror(L, 1, lua_tostring(L, -1));
    }
    steps[i - 1].compensate = lua_isnil(L, -1) ? NULL : step_compensate;
    lua_pop(L, 1);
    lua_getfield(L, -1, "name");
    steps[i - 1].name = lua_tostring(L, -1);  /* copied by tt_saga_new */
    lua_pop(L, 1);
    steps[i - 1].action = step_action;
    steps[i - 1].ud = (void *)(intptr_t)(i - 1);
    lua_rawseti(L, -2, i);
  }
  lua_getfield(L, 1, "on_compensation_failure");
  lua_setfield(L, -2, "on_compensation_failure");
  s = calloc(1, sizeof *s);
  if (s == NULL) return luaL_error(L, "not enough memory");
  tt_obj_init(&s->hdr, &ls_type);
  s->owner = main_thread(L);
  lt_pushnew(L, s);
  lua_getfield(L, 1, "dlq");
  s->dlq = tt_ref(lt_testobj(L, -1, &tt_chan_type));
  lua_pop(L, 1);
  s->s = tt_saga_new(name, steps, (int)n, ctimeout, &retry);
  if (s->s == NULL) return luaL_error(L, "not enough memory");
  tt_saga_set_on_compensation_failure(s->s, on_failure, NULL);
  lua_pushvalue(L, -2);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

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

/* s:run(ctx [, state]) -> true, nil, report | nil, err, report */
static int m_run(lua_State *L) {
  ls_saga *s = lt_checkobj(L, 1, &ls_type);
  tt_ctx *ctx = lt_checkobj(L, 2, &tt_ctx_type);
  tt_saga_report *rep = NULL;
  ls_run run, *saved;
  int rc;
  lua_settop(L, 3);
  if (s->owner != main_thread(L) ||
      lua_getiuservalue(L, 1, 1) != LUA_TTABLE)
    return luaL_error(L, "saga '%s' runs only in the state that made it",
                      tt_saga_name(s->s));
  run.L = L;
  run.steps = lua_gettop(L);
  run.state = 3;
  lua_getfield(L, run.steps, "on_compensation_failure");
  run.hook = lua_isnil(L, -1) ? 0 : lua_gettop(L);
  run.dlq = s->dlq;
  saved = current;
  current = &run;
  rc = tt_saga_run(s->s, ctx, &run, &rep);
  current = saved;
  if (rep == NULL) return luaL_error(L, "not enough memory");
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
