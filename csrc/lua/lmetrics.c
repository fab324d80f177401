/*
** lmetrics.c -- tether.metrics: the engine's metrics (csrc/core/metrics.c)
** in the Prometheus text format.  Every tether.pool feeds them unless
** made with metrics = false.
*/
#include "ltether.h"

/* tether.metrics.text() -> string: every family of the process in the
** Prometheus text format 0.0.4: for each its "# HELP" and "# TYPE"
** lines, then its samples, one per line, label values escaped.  Gauges
** are read from the live pools, servers and stores now.  Raises only on
** a failed allocation. */
static int l_text(lua_State *L) {
  tt_buf b = TT_BUF_INIT;
  if (tt_metrics_text(&b) != TT_OK) {
    tt_buf_free(&b);
    return luaL_error(L, "not enough memory");
  }
  lua_pushlstring(L, b.data != NULL ? b.data : "", b.len);
  tt_buf_free(&b);
  return 1;
}

void lt_open_metrics(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"text", l_text},
    {NULL, NULL}
  };
  luaL_newlib(L, funcs);
  lua_setfield(L, -2, "metrics");
}
