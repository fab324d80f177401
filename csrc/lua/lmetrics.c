/*
** lmetrics.c -- tether.metrics: the engine's metrics (csrc/core/metrics.c)
** in the Prometheus text format.  Every tether.pool feeds them unless
** made with metrics = false.
*/
#include "ltether.h"

/* tether.metrics.text() -> the text format (0.0.4) of every family:
** "# HELP", "# TYPE", then the samples, one per line. */
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
