/*
** ladmin.c -- tether.admin: the admin page of a program's pools
** (DESIGN section 12, docs/admin.md).
**
** The page, its JSON, the actions and their checks are the engine's
** (csrc/core/admin.c), in C, so that they run on the admin server's own
** threads without any Lua state.  This file reads the options:
** tether.admin.serve{...} returns the tether.HttpServer that serves it
** (addr, close, shutdown, stats), and tether.admin.handler{...} an admin
** to mount on an HTTP server of the application's own, whose
** admin:handle(ctx, req, res) answers the requests under its prefix.
*/
#include <string.h>

#include "ltether.h"

#define MAX_LIST 1024

/* The options both functions share, and those of serve alone. */
static const char *const serve_options[] = {
  "addr", "token", "pools", "name", "hosts", "workers", "shutdown", "tls",
  NULL
};

static const char *const handler_options[] = {
  "token", "pools", "name", "hosts", "prefix", NULL
};


/* A list read from the options: kept in a userdata on the stack, so
** that an error on the way frees nothing by hand. */
typedef struct lists {
  tt_pool *pools[MAX_LIST];
  const char *hosts[16];
} lists;

/* read_common fills 'o' from the options table at 1; strings stay valid
** while the table holds them. */
static void read_common(lua_State *L, tt_admin_opts *o, lists *ls) {
  size_t n, i;
  o->name = lt_optstring(L, 1, 1, "name", "admin");
  o->token = lt_optstring(L, 1, 1, "token", NULL);
  if (o->token != NULL && o->token[0] == '\0')
    lt_fielderror(L, 1, "token", "must not be empty");
  if (lua_getfield(L, 1, "pools") != LUA_TNIL) {
    if (!lua_istable(L, -1))
      lt_fielderror(L, 1, "pools", "must be a list of tether.Pool");
    n = lua_rawlen(L, -1);
    if (n > MAX_LIST) lt_fielderror(L, 1, "pools", "has too many pools");
    for (i = 1; i <= n; i++) {
      tt_pool *p;
      lua_rawgeti(L, -1, (lua_Integer)i);
      p = lt_pool_engine(lt_toobj(L, -1), NULL);
      if (p == NULL)
        lt_fielderror(L, 1, "pools", lua_pushfstring(L, "must be a list of "
                                                        "tether.Pool (item "
                                                        "%d is %s)",
                                                     (int)i,
                                                     luaL_typename(L, -1)));
      ls->pools[i - 1] = p;   /* the table's pools keep them alive */
      lua_pop(L, 1);
    }
    o->pools = ls->pools;
    o->npools = n;
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "hosts") != LUA_TNIL) {
    if (!lua_istable(L, -1))
      lt_fielderror(L, 1, "hosts", "must be a list of host names");
    n = lua_rawlen(L, -1);
    if (n > 16) lt_fielderror(L, 1, "hosts", "has more than 16 names");
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, (lua_Integer)i);
      if (lua_type(L, -1) != LUA_TSTRING)
        lt_fielderror(L, 1, "hosts", "must be a list of host names");
      ls->hosts[i - 1] = lua_tostring(L, -1);  /* the list keeps it */
      lua_pop(L, 1);
    }
    o->hosts = ls->hosts;
    o->nhosts = n;
  }
  lua_pop(L, 1);
}

/* tether.admin.serve([{addr, token, pools, name, hosts, workers, shutdown,
** tls}]) -> server: starts an HTTP server of its own that serves the
** admin page at '/' and returns it, a tether.HttpServer (addr, name,
** close, shutdown, stats work as for any server).  Its requests run on a
** pool of its own (C threads, no Lua state), which the page does not
** list and which is not drained at exit, so that a saturated application
** pool never makes the page answer 503.  'addr' defaults to
** "127.0.0.1:0"; 'token' to TETHER_ADMIN_TOKEN (read by the engine when
** the admin is made; none: read-only); 'pools' to every pool the
** program's own states make, looked up at each request; 'workers' is 1
** to 64 (2); 'shutdown' is a context that closes the server when it
** ends; 'tls' is {cert = path, key = path}.  The pools and the context
** are held by reference while the server lives.  Every refusal raises:
** an unknown or ill-typed option, an empty token, a malformed host,
** addr, TLS file or an address off loopback without a token (the
** engine's TT_EINVAL, as an argument error); an address that cannot be
** bound raises "admin server 'NAME': cannot serve on ...". */
static int l_serve(lua_State *L) {
  tt_admin_serve_opts o;
  tt_http_server *s;
  lists *ls;
  char msg[256];
  int err = TT_OK;
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lt_checkopts(L, 1, 1, NULL, serve_options, false);
  memset(&o, 0, sizeof o);
  ls = lua_newuserdatauv(L, sizeof *ls, 0);   /* 2 */
  read_common(L, &o.admin, ls);
  o.addr = lt_optstring(L, 1, 1, "addr", "127.0.0.1:0");
  o.workers = lt_optint(L, 1, 1, "workers", 2, 1, 64);
  lt_server_options(L, &o.shutdown, &o.tls_cert, &o.tls_key);
  s = tt_admin_serve(&o, &err, msg, sizeof msg);
  if (s == NULL) {
    if (err == TT_EINVAL) return luaL_argerror(L, 1, msg);
    return luaL_error(L, "admin server '%s': %s", o.admin.name, msg);
  }
  lt_pushnew(L, s);
  return 1;
}

/* tether.admin.handler([{token, pools, name, hosts, prefix}]) -> admin:
** the admin page to mount on an HTTP server of the application's own,
** under 'prefix' ("" by default: every path is the admin's), through
** admin:handle.  It runs on that server's pool and shares its
** saturation.  The options it shares with serve mean the same; raises as
** serve does for them, and for a malformed 'prefix' (it must be "" or
** start with '/' and not end with one).  An admin is an engine object,
** shared by reference: every worker state of the server uses the same
** one. */
static int l_handler(lua_State *L) {
  tt_admin_opts o;
  tt_admin *a;
  lists *ls;
  char msg[256];
  int err = TT_OK;
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lt_checkopts(L, 1, 1, NULL, handler_options, false);
  memset(&o, 0, sizeof o);
  ls = lua_newuserdatauv(L, sizeof *ls, 0);
  read_common(L, &o, ls);
  o.prefix = lt_optstring(L, 1, 1, "prefix", "");
  a = tt_admin_new(&o, &err, msg, sizeof msg);
  if (a == NULL) {
    if (err == TT_EINVAL) return luaL_argerror(L, 1, msg);
    return luaL_error(L, "admin '%s': %s", o.name, msg);
  }
  lt_pushnew(L, a);
  return 1;
}

/* admin:handle(ctx, req, res) -> boolean: for a server's handler.  When
** the request's path is the admin's prefix or under it, answers it (the
** page, the JSON, an action or an error) in C and returns true;
** otherwise returns false and sends nothing, so that the handler goes on
** with its own routes.  The request is read from 'res' (the engine's
** request behind it); 'req' is only checked to be a table.  Raises for a
** non-context 'ctx', a non-table 'req', or a 'res' that is not a
** handler's response ("the handler's res expected"). */
static int m_handle(lua_State *L) {
  tt_admin *a = lt_checkobj(L, 1, &tt_admin_type);
  tt_ctx *ctx = lt_checkobj(L, 2, &tt_ctx_type);
  tt_http_req *req;
  luaL_checktype(L, 3, LUA_TTABLE);
  req = lt_http_res_req(L, 4);
  luaL_argcheck(L, req != NULL, 4, "the handler's res expected");
  lua_pushboolean(L, tt_admin_handle(a, ctx, req));
  return 1;
}

/* admin:readonly() -> boolean: true when the admin has no token (neither
** the option nor TETHER_ADMIN_TOKEN when it was made): its actions then
** answer 403 read_only. */
static int m_readonly(lua_State *L) {
  lua_pushboolean(L, tt_admin_readonly(lt_checkobj(L, 1, &tt_admin_type)));
  return 1;
}

void lt_open_admin(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"handle", m_handle},
    {"readonly", m_readonly},
    {NULL, NULL}
  };
  lt_newtype(L, &tt_admin_type, methods, NULL);
  lua_pop(L, 1);
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, l_serve);
  lua_setfield(L, -2, "serve");
  lua_pushcfunction(L, l_handler);
  lua_setfield(L, -2, "handler");
  lua_setfield(L, -2, "admin");
}
