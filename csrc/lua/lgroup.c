/*
** lgroup.c -- tether.group: errgroups in Lua (csrc/core/group.c).
**
** local g, gctx = tether.group(parent [, {limit = n}])
** g:go(fn, ...) runs fn(gctx, ...) on another thread (waiting for a slot
** when the limit is reached); g:try_go(fn, ...) returns false instead;
** g:wait() returns nil, or the first error, which canceled gctx.
*/
#include "ltether.h"
#include "lworker.h"

/* Each group remembers its context, so that tasks receive it first. */
typedef struct lg_group {
  tt_obj hdr;
  tt_group *g;
  tt_ctx *gctx;
} lg_group;

static void lg_free(tt_obj *o) {
  lg_group *g = (lg_group *)o;
  tt_unref(g->g);
  tt_unref(g->gctx);
  free(g);
}

static const tt_type lg_type = {"tether.Group", lg_free, NULL};

static lg_group *check_group(lua_State *L) {
  return lt_checkobj(L, 1, &lg_type);
}

static int l_group(lua_State *L) {
  tt_ctx *parent = lt_checkobj(L, 1, &tt_ctx_type);
  lua_Integer limit = 0;
  lg_group *g;
  if (!lua_isnoneornil(L, 2)) {
    int isint;
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_getfield(L, 2, "limit") != LUA_TNIL) {
      limit = lua_tointegerx(L, -1, &isint);
      luaL_argcheck(L, isint && limit > 0 && limit <= 1 << 20, 2,
                    "field 'limit' must be a positive integer");
    }
    lua_pop(L, 1);
  }
  g = calloc(1, sizeof *g);
  if (g == NULL) return luaL_error(L, "not enough memory");
  tt_obj_init(&g->hdr, &lg_type);
  lt_pushnew(L, g);
  g->g = tt_group_new(parent, (int)limit, &g->gctx);
  if (g->g == NULL) return luaL_error(L, "not enough memory");
  lt_pushobj(L, g->gctx);
  return 2;
}

static lt_task *make_task(lua_State *L) {
  luaL_checktype(L, 2, LUA_TFUNCTION);
  return lt_task_new(L, NULL, 2, 3, lua_gettop(L) - 2, true,
                     "task of group");
}

static int m_go(lua_State *L) {
  lg_group *g = check_group(L);
  lt_task *t = make_task(L);
  int r = tt_group_go(g->g, lt_task_run, t, lt_task_drop);
  if (r != TT_OK) {
    lt_task_drop(t);
    return lt_pusherror(L, r, NULL);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int m_try_go(lua_State *L) {
  lg_group *g = check_group(L);
  lt_task *t = make_task(L);
  bool ok = tt_group_try_go(g->g, lt_task_run, t, lt_task_drop);
  if (!ok) lt_task_drop(t);
  lua_pushboolean(L, ok);
  return 1;
}

/* g:wait() returns nil when every task succeeded, else the first error. */
static int m_wait(lua_State *L) {
  lg_group *g = check_group(L);
  tt_obj *err = NULL;
  lt_wait w;
  int r;
  lt_wait_begin(L, &w);
  r = tt_group_wait(g->g, &err);
  if (lt_wait_end(L, &w) && r == TT_EINTR) return lt_interrupted(L);
  if (r == TT_OK || err == NULL) {
    tt_unref(err);
    lua_pushnil(L);
    return 1;
  }
  if (err->type == &lt_value_type) {
    lt_unpack_one(L, err);
    tt_unref(err);
  } else {
    lt_pushnew(L, err);
  }
  return 1;
}

static int m_context(lua_State *L) {
  lt_pushobj(L, check_group(L)->gctx);
  return 1;
}

static int m_active(lua_State *L) {
  lua_pushinteger(L, tt_group_active(check_group(L)->g));
  return 1;
}

void lt_open_group(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"go", m_go},
    {"try_go", m_try_go},
    {"wait", m_wait},
    {"context", m_context},
    {"active", m_active},
    {NULL, NULL}
  };
  lt_newtype(L, &lg_type, methods, NULL);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_group);
  lua_setfield(L, -2, "group");
}
