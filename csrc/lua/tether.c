/*
** tether.c -- luaopen_tether_core: the module table of the binding.
** Each file registers its own functions and types on it.
*/
#include <dlfcn.h>

#include "ltether.h"


/* pin keeps this library loaded for the life of the process.  When a
** state closes, Lua unloads the C libraries it loaded, but engine threads
** (workers, the executor, the timer) may still be running code from this
** one: unloading it under them would crash the exit. */
static void pin(void) {
  static atomic_flag done = ATOMIC_FLAG_INIT;
  Dl_info info;
  if (atomic_flag_test_and_set(&done)) return;
  if (dladdr((void *)luaopen_tether_core, &info) && info.dli_fname != NULL)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE);
}

LUAMOD_API int luaopen_tether_core(lua_State *L) {
  pin();
  lua_newtable(L);
  lt_open_obj(L);
  lt_open_transfer(L);
  lt_open_ctx(L);
  lt_open_wait(L);
  lt_open_chan(L);
  lt_open_exec(L);
  lt_open_pool(L);
  lt_open_group(L);
  lt_open_flight(L);
  lt_open_saga(L);
  lt_open_store(L);
  lua_pushliteral(L, "0.1.0");
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
