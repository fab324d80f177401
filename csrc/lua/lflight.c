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
#include <math.h>

#include "ltether.h"
#include "lworker.h"

static int l_singleflight(lua_State *L) {
  tt_flight *sf = tt_flight_new();
  if (sf == NULL) return luaL_error(L, "not enough memory");
  lt_pushnew(L, sf);
  return 1;
}

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
    if (lua_getfield(L, 5, "timeout") != LUA_TNIL) {
      timeout = lua_tonumber(L, -1);
      luaL_argcheck(L, lua_type(L, -1) == LUA_TNUMBER && !isnan(timeout) &&
                    timeout >= 0, 5,
                    "field 'timeout' must be a non-negative number");
    }
    lua_getfield(L, 5, "cancel_when_abandoned");
    abandon = lua_toboolean(L, -1);
    lua_pop(L, 2);
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

static int m_forget(lua_State *L) {
  tt_flight *sf = lt_checkobj(L, 1, &tt_flight_type);
  size_t klen;
  const char *key = luaL_checklstring(L, 2, &klen);
  tt_flight_forget(sf, key, klen);
  return 0;
}

static int m_inflight(lua_State *L) {
  tt_flight *sf = lt_checkobj(L, 1, &tt_flight_type);
  lua_pushinteger(L, (lua_Integer)tt_flight_inflight(sf));
  return 1;
}

void lt_open_flight(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"call", m_call},
    {"forget", m_forget},
    {"inflight", m_inflight},
    {NULL, NULL}
  };
  lt_newtype(L, &tt_flight_type, methods, NULL);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_singleflight);
  lua_setfield(L, -2, "singleflight");
}
