/*
** tether.c -- luaopen_tether_core: the module table of the binding.
** Each file registers its own functions and types on it.
*/
#include <dlfcn.h>

#include "ltether.h"
#include "lworker.h"


/* pin keeps this library loaded for the life of the process.  When a
** state closes, Lua unloads the C libraries it loaded, but engine threads
** (workers, the executor, the timer) may still be running code from this
** one: unloading it under them would crash the exit. */
static void pin(void) {
  static atomic_flag done = ATOMIC_FLAG_INIT;
  Dl_info info;
  if (atomic_flag_test_and_set(&done)) return;
  if (dladdr((void *)luaopen_tether_core, &info) && info.dli_fname != NULL)
    /* cppcheck-suppress leakReturnValNotUsed ; the handle is never closed,
    ** on purpose: it is what keeps the library loaded */
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE);
}

#define CLOSE_KEY "tether.close"

/* on_close is the '__gc' of the close watcher (no script reaches it): it
** runs when the program's state closes (the script ended), and sends the
** spans still queued (waiting 5 s at most) before the exporter thread
** stops, so that the last spans of a script are not lost. */
static int on_close(lua_State *L) {
  (void)L;
  tt_trace_shutdown(5.0);
  return 0;
}

/* watch_close leaves, in a state of the program's own (not a worker's),
** a userdata whose '__gc' runs on_close when the state closes. */
static void watch_close(lua_State *L) {
  if (tt_engine_thread()) return;
  if (lua_getfield(L, LUA_REGISTRYINDEX, CLOSE_KEY) != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lua_newuserdatauv(L, 0, 0);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, on_close);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, CLOSE_KEY);
}

/* require "tether.core" -> module: the table of every function of the
** binding, with _VERSION; lua/tether/init.lua re-exports it, test hooks
** ("_test_*") excepted, as require "tether".  Each file registers its
** own functions and types on it.  It pins the library once per process,
** and, in a state of the program's own (not a worker state on an engine
** thread, which loads it too), watches for the state's close. */
LUAMOD_API int luaopen_tether_core(lua_State *L) {
  pin();
  watch_close(L);
  lua_newtable(L);
  lt_open_obj(L);
  lt_open_value(L);
  lt_open_testhook(L);
  lt_open_ctx(L);
  lt_open_wait(L);
  lt_open_chan(L);
  lt_open_exec(L);
  lt_open_pool(L);
  lt_open_group(L);
  lt_open_flight(L);
  lt_open_saga(L);
  /* Worker threads close their lua_State as they end. */
  tt_set_thread_exit_hook(lt_thread_exit);
  lt_open_signal(L);
  lt_open_exit(L);
  lt_open_http(L);
  lt_open_log(L);
  lt_open_trace(L);
  lt_open_metrics(L);
  lt_open_store(L);
  lt_open_admin(L);
  lua_pushliteral(L, "0.1.0");
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
