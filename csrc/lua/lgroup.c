/*
** lgroup.c -- tether.group: errgroups in Lua (csrc/core/group.c).
**
** local g, gctx = tether.group(parent [, {limit = n}])
** g:go(fn, ...) runs fn(gctx, ...) on another thread (waiting for a slot
** when the limit is reached); g:try_go(fn, ...) returns false instead;
** g:wait() returns nil, or the first error, which canceled gctx.
**
** The limit reads as Go's SetLimit: absent or negative, no limit; n > 0,
** at most n tasks at once; 0, no task at all.  With a limit of 0, Go's Go
** blocks forever; g:go raises instead ("admits no task"), since a wait
** that can never end is a bug to report, not a state to sit in, while
** g:try_go just returns false.
**
** A task that cannot be started (no thread can be made) fails the group:
** g:go returns nil and the error, and the same error is the group's
** first error, cancels gctx and is what g:wait() returns, so that work
** lost at the start is never reported as success.
*/
#include <limits.h>

#include "ltether.h"
#include "lworker.h"

#define MAX_LIMIT (1 << 20)

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

static void lg_traverse(tt_obj *o, tt_visit visit, void *ud) {
  lg_group *g = (lg_group *)o;
  visit((tt_obj *)g->g, ud);
  visit((tt_obj *)g->gctx, ud);
}

static const tt_type lg_type = {"tether.Group", lg_free, NULL, lg_traverse};

static lg_group *check_group(lua_State *L) {
  return lt_checkobj(L, 1, &lg_type);
}

/* tether.group(parent [, {limit = n}]) -> g, gctx: a group and its context, a
** child of 'parent' canceled by the group's first error (with that error as its
** cause), by a wait that finds no error, or by 'parent'.  'limit' reads as Go's
** SetLimit (see the top of this file; at most 1048576).  Raises for a
** non-context 'parent', a non-table options argument, an unknown option key, a
** 'limit' that is not an integer or is above 1048576, and on a failed
** allocation.  Tasks run in worker Lua states, so the group is set never to run
** one inline on the waiting thread. */
static int l_group(lua_State *L) {
  static const char *const options[] = {"limit", NULL};
  tt_ctx *parent = lt_checkobj(L, 1, &tt_ctx_type);
  int limit = TT_NO_LIMIT;
  lg_group *g;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lt_checkopts(L, 2, 2, NULL, options, false);
    limit = lt_optint(L, 2, 2, "limit", TT_NO_LIMIT, INT_MIN, INT_MAX);
    if (limit > MAX_LIMIT)
      lt_fielderror(L, 2, "limit", "must be at most 1048576 (negative: no "
                                   "limit)");
    if (limit < 0) limit = TT_NO_LIMIT;
  }
  g = calloc(1, sizeof *g);
  if (g == NULL) return luaL_error(L, "not enough memory");
  tt_obj_init(&g->hdr, &lg_type);
  lt_pushnew(L, g);
  g->g = tt_group_new(parent, (int)limit, &g->gctx);
  if (g->g == NULL) return luaL_error(L, "not enough memory");
  /* Tasks run in worker Lua states, never on the waiting thread. */
  tt_group_set_inline(g->g, false);
  lt_pushobj(L, g->gctx);
  return 2;
}

/* make_task packs fn (at 2) and its arguments (from 3) into a task, so that
** they cross to the worker state by the transfer rules now; the task receives
** gctx first.  Raises for a non-function 'fn' or a value that cannot cross. */
static lt_task *make_task(lua_State *L) {
  luaL_checktype(L, 2, LUA_TFUNCTION);
  return lt_task_new(L, NULL, 2, 3, lua_gettop(L) - 2, true,
                     "task of group");
}

/* g:go(fn, ...) -> true | nil, err: runs fn(gctx, ...) on another thread, first
** waiting for a slot when the group is at its limit (unbounded, as in Go); a
** task fails by raising and its results are discarded.  Returns nil and the
** error (code 'no_thread' or 'no_memory') when the task could not be started;
** that error is also the group's first error, so work lost at the start is
** never reported as success.  Raises on a group whose limit is 0 ('group admits
** no task'): no slot can ever come.  Raises for a non-function 'fn' or a value
** that cannot cross, and 'interrupted!' on Ctrl-C in the main state while it
** waits for a slot. */
static int m_go(lua_State *L) {
  lg_group *g = check_group(L);
  lt_task *t = make_task(L);
  lt_wait w;
  int r;
  lt_wait_begin(L, &w);
  r = tt_group_go(g->g, lt_task_run, t, lt_task_drop);
  if (lt_wait_end(L, &w) && r == TT_EINTR) {
    lt_task_drop(t);
    return lt_interrupted(L);
  }
  if (r != TT_OK) {
    lt_task_drop(t);
    if (r == TT_EINVAL)
      return luaL_error(L, "group admits no task (limit 0): go would wait "
                           "forever; use try_go or a limit above 0");
    return lt_pusherror(L, r, NULL);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* g:try_go(fn, ...) -> boolean: g:go without the wait: false at the limit
** (always for limit 0) or when the task could not be started, and then the task
** is dropped here.  Raises as g:go for 'fn' and its arguments. */
static int m_try_go(lua_State *L) {
  lg_group *g = check_group(L);
  lt_task *t = make_task(L);
  bool ok = tt_group_try_go(g->g, lt_task_run, t, lt_task_drop);
  if (!ok) lt_task_drop(t);
  lua_pushboolean(L, ok);
  return 1;
}

/* g:wait() -> nil | err: waits for every task started so far and returns nil,
** or the group's first error: a packed value is unpacked into this state, an
** error object is pushed as itself.  The group can be used again after wait, as
** Go's; it keeps its first error.  Raises 'interrupted!' on Ctrl-C in the main
** state. */
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

/* g:context() -> gctx: the group's context (also the second result of
** tether.group). */
static int m_context(lua_State *L) {
  lt_pushobj(L, check_group(L)->gctx);
  return 1;
}

/* g:active() -> integer: how many tasks have started and not yet ended. */
static int m_active(lua_State *L) {
  lua_pushinteger(L, tt_group_active(check_group(L)->g));
  return 1;
}

/* lt_open_group registers the tether.Group type and sets tether.group into the
** module table on the top of the stack. */
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
