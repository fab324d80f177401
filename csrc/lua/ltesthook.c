/*
** ltesthook.c -- tether.core._test_transfer_roundtrip, a hook for the
** specs: not part of the API (its name begins with '_test_', as every
** hook of the specs does), and used by no other code.
**
** _test_transfer_roundtrip(...) packs its arguments, unpacks them in a
** second, fresh lua_State (opened as a worker's is), packs them there
** again and unpacks the result here: a value goes through both directions
** of a real transfer, as a task's arguments and results do, without a
** thread or a pool in between (spec/04-transfer_spec.lua).
**
** It is compiled into the module rather than into a test-only build so
** that the specs exercise the very objects that ship, with one build of
** the binding; the hook itself is harmless (it touches only the state it
** makes and closes).
*/
#include <lualib.h>

#include "ltransfer.h"

/* What _test_transfer_roundtrip calls the values it carries. */
#define RT_WHAT "'_test_transfer_roundtrip'"

/* An rtrip is what the two states share: the packed values each way and
** the package paths the second state gets. */
typedef struct rtrip {
  tt_obj *in;
  tt_obj *out;
  const char *path, *cpath;
} rtrip;

/* set_paths gives the state package.path and package.cpath (NULL: keep
** the default). */
static void set_paths(lua_State *L, const char *path, const char *cpath) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "package") == LUA_TTABLE) {
    if (path != NULL) {
      lua_pushstring(L, path);
      lua_setfield(L, -2, "path");
    }
    if (cpath != NULL) {
      lua_pushstring(L, cpath);
      lua_setfield(L, -2, "cpath");
    }
  }
  lua_pop(L, 2);
}

/* rt_remote runs in the second state: open it like a worker's, unpack,
** pack again. */
static int rt_remote(lua_State *L) {
  rtrip *r = lua_touserdata(L, 1);
  int n, top;
  luaL_openlibs(L);
  set_paths(L, r->path, r->cpath);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "tether");
  lua_call(L, 1, 0);
  top = lua_gettop(L);
  n = lt_unpack(L, r->in);
  r->out = lt_pack(L, top + 1, n, RT_WHAT);
  return 0;
}

/* package_field pushes package[k] (nil if there is no package table) and
** returns it as a string, or NULL. */
static const char *package_field(lua_State *L, const char *k) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "package");
  lua_remove(L, -2);
  if (lua_type(L, -1) == LUA_TTABLE) lua_getfield(L, -1, k);
  else lua_pushnil(L);
  lua_remove(L, -2);
  return lua_tostring(L, -1);
}

/* _test_transfer_roundtrip(...) returns its arguments after a round trip
** through a second state; it raises what either side raises (a refusal
** names the values "'_test_transfer_roundtrip'"). */
static int l_roundtrip(lua_State *L) {
  int n = lua_gettop(L), st;
  rtrip r;
  lt_box *b;
  lua_State *L2;
  b = lt_push_box(L);
  r.in = lt_pack(L, 1, n, RT_WHAT);
  r.out = NULL;
  b->v = (lt_value *)r.in;
  r.path = package_field(L, "path");
  r.cpath = package_field(L, "cpath");
  L2 = luaL_newstate();
  if (L2 == NULL) return luaL_error(L, "cannot create a state");
  lua_pushcfunction(L2, rt_remote);
  lua_pushlightuserdata(L2, &r);
  st = lua_pcall(L2, 1, 0, 0);
  if (st != LUA_OK) {
    tt_error *e = lt_pack_error(L2, -1, NULL);
    lua_close(L2);
    if (e == NULL) return luaL_error(L, "not enough memory");
    lua_pushstring(L, e->message);
    tt_unref(e);
    return lua_error(L);
  }
  lua_close(L2);
  /* The box now owns the value that came back. */
  tt_unref(b->v);
  b->v = (lt_value *)r.out;
  lua_settop(L, n + 3);
  return lt_unpack(L, r.out);
}

/* lt_open_testhook adds _test_transfer_roundtrip to the module table (on
** the top of the stack). */
void lt_open_testhook(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"_test_transfer_roundtrip", l_roundtrip},
    {NULL, NULL}
  };
  luaL_setfuncs(L, funcs, 0);
}
