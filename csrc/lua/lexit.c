/*
** lexit.c -- the pools of a Lua state drain when it closes, and what the
** runner needs of all pools: tether.drain_all and tether.pool_totals.
**
** Each pool made by a state that is not a worker state is tracked by the
** engine (tt_exit_track) with the state's main thread as its owner.  The
** state keeps one sentinel userdata in its registry whose finalizer
** drains that owner's pools (tt_exit_drain).  Lua calls the finalizers of
** a closing state newest first, so a new sentinel is made after each
** pool (the old one is disarmed): the drain runs before any pool's
** userdata is finalized, and waits for all of them together.  A pool
** collected while the state lives is no longer tracked (it keeps its
** usual end: queued ops stopped, running ones left to finish).  The
** engine's atexit handler covers os.exit(code) without close.
*/
#include <string.h>

#include "ltether.h"

#define SENTINEL_KEY "tether.exit.sentinel"
#define SENTINEL_TYPE "tether.ExitSentinel"

typedef struct sentinel {
  const void *owner;
  bool armed;
} sentinel;

/* The sentinel's __gc (never reachable from scripts): drains the pools of
** the closing state's owner once, for at most the largest exit_timeout
** among them; a disarmed sentinel does nothing.  The wait is not
** interruptible: the state is closing. */
static int sentinel_gc(lua_State *L) {
  sentinel *s = lua_touserdata(L, 1);
  if (s != NULL && s->armed) {
    s->armed = false;
    tt_exit_drain(s->owner, false, -1, NULL);
  }
  return 0;
}

static const void *owner_of(lua_State *L) {
  const void *o;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  o = lua_topointer(L, -1);
  lua_pop(L, 1);
  return o;
}

void lt_track_pool(lua_State *L, tt_pool *p) {
  sentinel *s;
  const void *owner;
  if (tt_engine_thread()) return;
  owner = owner_of(L);
  if (lua_getfield(L, LUA_REGISTRYINDEX, SENTINEL_KEY) == LUA_TUSERDATA) {
    s = lua_touserdata(L, -1);
    s->armed = false;
  }
  lua_pop(L, 1);
  /* The new sentinel is armed only once the pool is tracked: a memory
  ** error in between leaves the old one's work to the atexit handler. */
  s = lua_newuserdatauv(L, sizeof *s, 0);
  s->owner = owner;
  s->armed = false;
  if (luaL_newmetatable(L, SENTINEL_TYPE)) {
    lua_pushcfunction(L, sentinel_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, SENTINEL_KEY);
  if (tt_exit_track(p, owner) != TT_OK)
    luaL_error(L, "not enough memory");
  lua_getfield(L, LUA_REGISTRYINDEX, SENTINEL_KEY);
  s = lua_touserdata(L, -1);
  s->armed = true;
  lua_pop(L, 1);
}

/* tether.drain_all([seconds]) -> {pools, abandoned, spilled, seconds}:
** what the runner calls on a signal.  Closes every pool that the process
** would drain at exit (those of every state, not only this one's), waits
** until they are all drained or 'seconds' pass (default: the largest of
** their exit_timeout), puts the queued named ops of pools with an
** overflow store back in the store ('spilled'), abandons what is left
** (each op reported as at exit, a running op's context canceled), and
** forgets them, so that the exit drain finds nothing more.  'seconds' is
** how long it took.  Raises for a negative or NaN 'seconds'. */
static int l_drain_all(lua_State *L) {
  double s = lt_optseconds(L, 1, -1);
  tt_exit_report r;
  tt_exit_drain(NULL, true, s, &r);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)r.pools);
  lua_setfield(L, -2, "pools");
  lua_pushinteger(L, (lua_Integer)r.abandoned);
  lua_setfield(L, -2, "abandoned");
  lua_pushinteger(L, (lua_Integer)r.spilled);
  lua_setfield(L, -2, "spilled");
  lua_pushnumber(L, r.seconds);
  lua_setfield(L, -2, "seconds");
  return 1;
}

/* tether.pool_totals() -> {pools, submitted, completed, ...}: the stats
** of every pool the process would drain at exit, added up field by field
** as pool:stats() names them, plus 'pools', their number: what the
** runner's progress line shows.  Never raises but on a failed
** allocation. */
static int l_pool_totals(lua_State *L) {
  tt_pool_stats s;
  size_t n = tt_exit_stats(NULL, true, &s);
  lt_push_pool_stats(L, &s, 1);
  lt_setint(L, "pools", (lua_Integer)n);
  return 1;
}

void lt_open_exit(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"drain_all", l_drain_all},
    {"pool_totals", l_pool_totals},
    {NULL, NULL}
  };
  luaL_setfuncs(L, funcs, 0);
}
