/*
** tether.c -- luaopen_tether_core: the module table of the binding.
** Each file registers its own functions and types on it.
*/
#include "ltether.h"

LUAMOD_API int luaopen_tether_core(lua_State *L);

LUAMOD_API int luaopen_tether_core(lua_State *L) {
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
  lua_pushliteral(L, "0.1.0");
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
