/*
** lflight.c -- tether.singleflight in Lua (csrc/core/flight.c).
**
** local sf = tether.singleflight()
** local v, err, shared = sf:call(ctx, key, fn [, {timeout = s,
**                                cancel_when_abandoned = bool}])
** One fn(workctx) runs per key in flight, on another thread, with
** workctx = with_timeout(without_cancel(ctx), timeout).  A caller whose
** ctx ends returns nil and ctx's error at once; the others still get the
** value.  When every caller leaves, the run goes on to completion unless
** cancel_when_abandoned asked for its context to be canceled.
*/
#include "ltether.h"
#include "lworker.h"

/* tether.singleflight() -> sf: a new, empty singleflight group.  Raises
** only on a failed allocation. */
static int l_singleflight(lua_State *L) {
  tt_flight *sf = tt_flight_new();
  if (sf == NULL) return luaL_error(L, "not enough memory");
  lt_pushnew(L, sf);
  return 1;
}

/* The whole set of sf:call's options. */
static const char *const call_options[] = {
  "timeout", "cancel_when_abandoned", NULL
};

/* sf:call(ctx, key, fn [, {timeout = s, cancel_when_abandoned = bool}])
** -> v, err, shared: the result of one run of fn(workctx) per string
** 'key' in flight, shared with every caller that asked meanwhile.  The
** run is on an engine thread, with workctx = with_timeout(without_cancel(
** ctx), timeout) (0, the default: no timeout), so that no one caller's
** end cancels it.  Returns the loader's first result (the others are
** dropped) and nil; nil and its error when it raised; or, when the
** caller's 'ctx' ends first, nil and that context's error at once (the
** run goes on for the others, and is canceled once every caller left
** only with cancel_when_abandoned).  'shared' tells whether the result
** went to several callers.  'fn' is packed at each call (only the first
** caller's copy runs) and the result crosses back as a copy for each
** caller.  Raises for a non-context 'ctx', a non-string 'key', a
** non-function 'fn', an unknown or ill-typed option, or an 'fn' that
** cannot cross; raises 'interrupted!' on Ctrl-C in the main state. */
static int m_call(lua_State *L) {
  tt_flight *sf = lt_checkobj(L, 1, &tt_flight_type);
  tt_ctx *ctx = lt_checkobj(L, 2, &tt_ctx_type);
  size_t klen;
  const char *key = luaL_checklstring(L, 3, &klen);
  double timeout = 0;
  bool abandon = false, shared = false;
  tt_obj *res = NULL;
  lt_task *t;
  lt_wait w;
  int r;
  luaL_checktype(L, 4, LUA_TFUNCTION);
  if (!lua_isnoneornil(L, 5)) {
    luaL_checktype(L, 5, LUA_TTABLE);
    lt_checkopts(L, 5, 5, NULL, call_options, false);
    timeout = lt_optnumber(L, 5, 5, "timeout", 0, 0);
    abandon = lt_optboolean(L, 5, 5, "cancel_when_abandoned", false);
  }
  lua_settop(L, 4);
  t = lt_task_new(L, NULL, 4, 5, 0, true, "singleflight loader");
  lt_wait_begin(L, &w);
  r = tt_flight_call(sf, ctx, key, klen, lt_task_run, t, lt_task_drop,
                     timeout, abandon, &res, &shared);
  if (lt_wait_end(L, &w) && r == TT_EINTR) {
    tt_unref(res);
    return lt_interrupted(L);
  }
  if (r == TT_OK) {
    int n = lt_unpack(L, res);
    tt_unref(res);
    lua_settop(L, 4 + (n > 0 ? 1 : 0));
    if (n == 0) lua_pushnil(L);
    lua_pushnil(L);
    lua_pushboolean(L, shared);
    return 3;
  }
  lua_pushnil(L);
  if (res != NULL) lt_pushnew(L, res);
  else lt_pushobj(L, tt_error_for(r));
  lua_pushboolean(L, shared);
  return 3;
}

/* sf:forget(key): later calls for the string 'key' start a new run, even
** while one is in flight (its callers keep waiting for it).  Forgetting
** a key with no run in flight does nothing. */
static int m_forget(lua_State *L) {
  tt_flight *sf = lt_checkobj(L, 1, &tt_flight_type);
  size_t klen;
  const char *key = luaL_checklstring(L, 2, &klen);
  tt_flight_forget(sf, key, klen);
  return 0;
}

/* sf:inflight() -> integer: how many keys have a run in flight. */
static int m_inflight(lua_State *L) {
  tt_flight *sf = lt_checkobj(L, 1, &tt_flight_type);
  lua_pushinteger(L, (lua_Integer)tt_flight_inflight(sf));
  return 1;
}

/* sf:waiting(key) -> integer: how many callers wait for the run in
** flight for the string 'key' (0 when none is). */
static int m_waiting(lua_State *L) {
  tt_flight *sf = lt_checkobj(L, 1, &tt_flight_type);
  size_t klen;
  const char *key = luaL_checklstring(L, 2, &klen);
  lua_pushinteger(L, tt_flight_waiting(sf, key, klen));
  return 1;
}

void lt_open_flight(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"call", m_call},
    {"forget", m_forget},
    {"inflight", m_inflight},
    {"waiting", m_waiting},
    {NULL, NULL}
  };
  lt_newtype(L, &tt_flight_type, methods, NULL);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_singleflight);
  lua_setfield(L, -2, "singleflight");
}
