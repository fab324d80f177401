/*
** lhttp.c -- tether.http: HTTP servers whose Lua handlers run on pool
** workers with their request's context (DESIGN section 9).
**
** The server, its connections, the watcher of hang-ups and the request
** lifecycle are the engine's (csrc/core/http.c).  This file turns the
** options table into tt_http_opts, packs the handler (or the routes)
** once, and gives the engine one C handler that, on a pool worker, runs
** the Lua function in the worker's state with (ctx, req, res): 'req' a
** plain table made for the call, 'res' a small object over the engine's
** request.
**
** Metrics: every server feeds the HTTP families of tether.metrics.text()
** (tt_metrics_observe_http) unless metrics = false; metrics = true also
** answers GET and HEAD /metrics with the text, in C on the worker,
** before any Lua runs.  A route of the application's own at /metrics
** wins over it; a single handler never sees /metrics then.  With tracing
** on, a matched route is the "http.route" attribute of the request's
** server span.
*/
#include <stdio.h>
#include <string.h>

#include "ltether.h"
#include "lworker.h"

#define TB_KEY "tether.http.traceback"
#define DEF_WORKERS 16
#define DEF_QUEUE 256

/* {====================================================================
** The application: what the engine's handler needs
** ===================================================================== */

typedef struct route {
  char *method;            /* NULL: any method */
  char *path;
  tt_obj *fn;              /* packed function */
} route;

/* An lh_app belongs to its server (the 'ud' of tt_http_opts) and goes
** with the server's memory. */
typedef struct lh_app {
  lt_env *env;             /* the pool's worker environment */
  tt_obj *pool_obj;        /* keeps the Lua pool alive */
  tt_obj *handler;         /* packed; NULL with routes */
  route *routes;
  int nroutes;
  bool metrics_path;       /* answer /metrics (metrics = true) */
} lh_app;

/* app_free frees an app and drops what it holds (the packed functions,
** the environment and the pool): the server calls it when it goes, or
** the box's __gc when l_server fails before the server owns the app. */
static void app_free(void *ud) {
  lh_app *a = ud;
  int i;
  if (a == NULL) return;
  for (i = 0; i < a->nroutes; i++) {
    free(a->routes[i].method);
    free(a->routes[i].path);
    tt_unref(a->routes[i].fn);
  }
  free(a->routes);
  tt_unref(a->handler);
  tt_unref(a->env);
  tt_unref(a->pool_obj);
  free(a);
}

/* find_route picks the route of a request: an exact path, with its
** method, or GET for HEAD, or any method.  NULL with '*status' 404 (no
** such path) or 405 (the path, under other methods: 'allow' lists
** them). */
static tt_obj *find_route(lh_app *a, const char *method, const char *path,
                          int *status, char *allow, size_t allowlen) {
  int i;
  tt_obj *get = NULL, *any = NULL;
  bool path_seen = false;
  size_t used = 0;
  allow[0] = '\0';
  for (i = 0; i < a->nroutes; i++) {
    route *r = &a->routes[i];
    if (strcmp(r->path, path) != 0) continue;
    path_seen = true;
    if (r->method == NULL) {
      any = r->fn;
      continue;
    }
    if (strcmp(r->method, method) == 0) return r->fn;
    if (strcmp(r->method, "GET") == 0) get = r->fn;
    if (used + strlen(r->method) + 3 < allowlen)
      used += (size_t)snprintf(allow + used, allowlen - used, "%s%s",
                               used > 0 ? ", " : "", r->method);
  }
  if (get != NULL && strcmp(method, "HEAD") == 0) return get;
  if (any != NULL) return any;
  *status = path_seen ? 405 : 404;
  return NULL;
}

/* }==================================================================== */


/* {====================================================================
** res: the response object of one request
** ===================================================================== */

typedef struct lh_res {
  tt_obj hdr;
  tt_http_req *req;
} lh_res;

/* res_free drops the response's reference to the request. */
static void res_free(tt_obj *o) {
  tt_unref(((lh_res *)o)->req);
  free(o);
}

/* tostring(res) (__tostring through the engine's describe):
** "tether.HttpResponse for METHOD PATH (request id)". */
static int res_describe(tt_obj *o, char *buf, size_t n) {
  tt_http_req *r = ((lh_res *)o)->req;
  return snprintf(buf, n, "tether.HttpResponse for %s %s (%s)",
                  tt_http_req_method(r), tt_http_req_path(r),
                  tt_http_req_id(r));
}

static const tt_type res_type = {"tether.HttpResponse", res_free,
                                 res_describe, NULL};

/* check_res returns the request behind the response at 1, or raises: a
** 'res' freed when its handler returned raises here too. */
static tt_http_req *check_res(lua_State *L) {
  return ((lh_res *)lt_checkobj(L, 1, &res_type))->req;
}

/* lt_http_res_req returns the request behind the response at 'idx', or
** NULL when the value is not a handler's response (admin:handle uses
** it to answer a request in C). */
tt_http_req *lt_http_res_req(lua_State *L, int idx) {
  lh_res *r = lt_testobj(L, idx, &res_type);
  return r != NULL ? r->req : NULL;
}

/* result turns a response function's code into Lua: true; a raise for
** misuse ("http: send after the response was sent"), since that is a
** bug whatever the moment; nil and an error of code 'closed' ("http: the
** request is over") once the handler returned or the server closed; nil
** and tether.http.client_gone once the client hung up; nil and the
** engine's error otherwise. */
static int result(lua_State *L, int rc, const char *what) {
  if (rc == TT_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (rc == TT_EINVAL)
    return luaL_error(L, "http: %s after the response was sent", what);
  if (rc == TT_ENOMEM) return luaL_error(L, "not enough memory");
  if (rc == TT_ECLOSED)
    return lt_pusherror(L, rc, "http: the request is over");
  if (rc == TT_ECLIENT_GONE) {
    lua_pushnil(L);
    lt_pushobj(L, &tt_http_client_gone);
    return 2;
  }
  lua_pushnil(L);
  lt_pushnew(L, tt_error_for(rc));
  return 2;
}

/* res:status(code) -> res: sets the status of the response (200 by
** default), before it is sent; returns 'res' so that calls chain.
** Raises for a non-integer or a code outside 200 to 599 ("status code
** 200..599 expected"), and once the response was sent ("http: status
** after the response was sent"). */
static int res_status(lua_State *L) {
  tt_http_req *r = check_res(L);
  lua_Integer code = luaL_checkinteger(L, 2);
  int rc;
  luaL_argcheck(L, code >= 200 && code <= 599, 2,
                "status code 200..599 expected");
  rc = tt_http_res_status(r, (int)code);
  if (rc == TT_EINVAL)
    return luaL_error(L, "http: status after the response was sent");
  lua_settop(L, 1);
  return 1;
}

/* res:header(name, value) -> res: adds a header to the response, before
** it is sent; returns 'res' so that calls chain.  Without a
** Content-Type, a body goes as text/plain; charset=utf-8.  Raises for a
** name that is not an HTTP token ("invalid header name 'x'"),
** Content-Length or Transfer-Encoding ("header set by the server"), a
** value with CR, LF or NUL ("CR, LF or NUL in a header value": header
** injection), once the response was sent ("http: header after the
** response was sent"), and on a failed allocation. */
static int res_header(lua_State *L) {
  tt_http_req *r = check_res(L);
  const char *name = luaL_checkstring(L, 2);
  size_t vlen, i;
  const char *value = luaL_checklstring(L, 3, &vlen);
  int rc;
  luaL_argcheck(L, strpbrk(value, "\r\n") == NULL && strlen(value) == vlen,
                3, "CR, LF or NUL in a header value");
  for (i = 0; name[i] != '\0'; i++)
    if (strchr("!#$%&'*+-.^_`|~", name[i]) == NULL &&
        !((name[i] >= '0' && name[i] <= '9') ||
          (name[i] >= 'a' && name[i] <= 'z') ||
          (name[i] >= 'A' && name[i] <= 'Z')))
      break;
  if (i == 0 || name[i] != '\0')
    return luaL_argerror(L, 2, lua_pushfstring(L, "invalid header name "
                                                  "'%s'", name));
  luaL_argcheck(L, strcasecmp(name, "content-length") != 0 &&
                   strcasecmp(name, "transfer-encoding") != 0,
                2, "header set by the server");
  rc = tt_http_res_header(r, name, value);
  if (rc == TT_EINVAL)
    return luaL_error(L, "http: header after the response was sent");
  if (rc == TT_ENOMEM) return luaL_error(L, "not enough memory");
  lua_settop(L, 1);
  return 1;
}

/* res:send([body]) -> true | nil, err: sends the whole response now
** ('body' defaults to ""); the handler may go on after it (to audit,
** clean up).  True means the response was handed to the connection, not
** that the client read it.  Returns nil and tether.http.client_gone once
** the client hung up, nil and an error of code 'closed' after the
** handler returned (from a 'res' handed to another thread) or once the
** server closed.  Raises for a second send, or a send after write
** ("http: send after the response was sent"). */
static int res_send(lua_State *L) {
  tt_http_req *r = check_res(L);
  size_t len = 0;
  const char *body = luaL_optlstring(L, 2, "", &len);
  return result(L, tt_http_res_send(r, body, len), "send");
}

/* res:write(chunk) -> true | nil, err: sends a chunk of a chunked
** response; the first write sends the status and headers.  It waits
** while more than 1 MiB is unsent, until the client reads or the
** request's context ends.  Returns as res:send does; raises for a
** non-string 'chunk' and after send or finish ("http: write after the
** response was sent"). */
static int res_write(lua_State *L) {
  tt_http_req *r = check_res(L);
  size_t len;
  const char *chunk = luaL_checklstring(L, 2, &len);
  return result(L, tt_http_res_write(r, chunk, len), "write");
}

/* res:finish() -> true | nil, err: ends a chunked response (a handler
** that returns without it finishes it).  Returns as res:send does;
** raises when the response was already sent in full ("http: finish
** after the response was sent"). */
static int res_finish(lua_State *L) {
  return result(L, tt_http_res_finish(check_res(L)), "finish");
}

/* }==================================================================== */


/* {====================================================================
** Running a handler on a worker
** ===================================================================== */

/* msgh keeps the handler's traceback aside (in the registry, for the
** error object) and the error value as it is, so that a tether error
** raised by a handler stays that error. */
static int msgh(lua_State *L) {
  static const char tail[] = "\n\t[C]: in ?";
  const size_t nt = sizeof tail - 1;
  size_t len;
  const char *tb;
  luaL_traceback(L, L, NULL, 1);
  /* The last frame is the C function that runs the handler: noise. */
  tb = lua_tolstring(L, -1, &len);
  if (len >= nt && memcmp(tb + len - nt, tail, nt) == 0) {
    lua_pushlstring(L, tb, len - nt);
    lua_remove(L, -2);
  }
  lua_setfield(L, LUA_REGISTRYINDEX, TB_KEY);
  lua_settop(L, 1);
  return 1;
}

typedef struct call {
  tt_obj *fn;
  tt_ctx *ctx;
  tt_http_req *req;
  tt_obj *err;
} call;

/* set_str sets t[k] = v for the table on top. */
static void set_str(lua_State *L, const char *k, const char *v) {
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

/* push_req pushes the request as a table: method, path, query, headers
** (lower-case names; repeated ones joined with ", "), body, remote, id.
** A query argument without '=' is "", and the first of repeated ones
** wins. */
static void push_req(lua_State *L, tt_http_req *r) {
  size_t n, i, blen;
  const tt_http_pair *p;
  const char *body;
  lua_createtable(L, 0, 7);
  set_str(L, "method", tt_http_req_method(r));
  set_str(L, "path", tt_http_req_path(r));
  set_str(L, "remote", tt_http_req_remote(r));
  set_str(L, "id", tt_http_req_id(r));
  body = tt_http_req_body(r, &blen);
  lua_pushlstring(L, body, blen);
  lua_setfield(L, -2, "body");
  p = tt_http_req_query(r, &n);
  lua_createtable(L, 0, (int)n);
  for (i = 0; i < n; i++) {
    if (lua_getfield(L, -1, p[i].name) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_pushstring(L, p[i].value != NULL ? p[i].value : "");
      lua_setfield(L, -2, p[i].name);
    } else {
      lua_pop(L, 1);
    }
  }
  lua_setfield(L, -2, "query");
  p = tt_http_req_headers(r, &n);
  lua_createtable(L, 0, (int)n);
  for (i = 0; i < n; i++) {
    if (lua_getfield(L, -1, p[i].name) == LUA_TSTRING) {
      lua_pushliteral(L, ", ");
      lua_pushstring(L, p[i].value != NULL ? p[i].value : "");
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushstring(L, p[i].value != NULL ? p[i].value : "");
    }
    lua_setfield(L, -2, p[i].name);
  }
  lua_setfield(L, -2, "headers");
}

/* run_call (protected) calls the handler as fn(ctx, req, res), the
** packed function unpacked in this worker's state, and keeps a raised
** error, with its traceback, in the call for the engine (which answers
** 500 and logs it, redacted). */
static int run_call(lua_State *L) {
  call *c = lua_touserdata(L, 1);
  lh_res *res;
  int st;
  lua_settop(L, 0);
  lua_pushcfunction(L, msgh);               /* 1 */
  lt_unpack_one(L, c->fn);                  /* 2 */
  lt_pushobj(L, c->ctx);                    /* 3 */
  push_req(L, c->req);                      /* 4 */
  res = malloc(sizeof *res);
  if (res == NULL) return luaL_error(L, "not enough memory");
  tt_obj_init(&res->hdr, &res_type);
  res->req = tt_ref(c->req);
  lt_pushnew(L, res);                       /* 5 */
  lua_pushvalue(L, 5);
  lua_insert(L, 2);                         /* 2: res, kept */
  st = lua_pcall(L, 3, 0, 1);
  /* This state's 'res' lets go of the request now rather than when the
  ** worker's collector gets to it: an idle worker would otherwise keep
  ** the request, and so its server and the server's pool, alive.  A
  ** 'res' that went to another thread holds its own reference. */
  luaL_callmeta(L, 2, "__gc");
  if (st != LUA_OK) {
    const char *tb;
    lua_getfield(L, LUA_REGISTRYINDEX, TB_KEY);
    tb = lua_tostring(L, -1);
    c->err = (tt_obj *)lt_pack_error(L, 3, tb);
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, TB_KEY);
  }
  return 0;
}

/* How many requests this worker thread has run: every 16th steps its
** state's collector. */
static _Thread_local unsigned tl_calls;

/* lh_handle is the engine's handler for Lua servers, on a pool worker
** with the request's context.  /metrics (with metrics = true) is
** answered in C before any Lua runs; with routes, a request that
** matches none is answered 404, or 405 with Allow, in C too.  Otherwise
** the handler runs in the worker's own Lua state; a failure to set it up
** or a raise becomes the op's error (TT_EFAILED). */
static int lh_handle(tt_ctx *ctx, tt_http_req *req, void *ud,
                     tt_obj **err) {
  lh_app *a = ud;
  char msg[256];
  lua_State *L;
  call c;
  int top;
  if (a->metrics_path && strcmp(tt_http_req_path(req), "/metrics") == 0) {
    (void)tt_metrics_respond(req);
    return TT_OK;
  }
  c.fn = a->handler;
  if (c.fn == NULL) {
    int status = 404;
    char allow[128];
    tt_span *sp;
    c.fn = find_route(a, tt_http_req_method(req), tt_http_req_path(req),
                      &status, allow, sizeof allow);
    if (c.fn != NULL && (sp = tt_http_req_span(req)) != NULL) {
      /* Routes are exact paths: the route is the path. */
      tt_field f = TT_FSTR("http.route", tt_http_req_path(req));
      tt_span_set_attr(sp, &f);
    }
    if (c.fn == NULL) {
      const char *body = status == 405 ? "method not allowed\n"
                                       : "not found\n";
      tt_http_res_status(req, status);
      if (status == 405) tt_http_res_header(req, "Allow", allow);
      (void)tt_http_res_send(req, body, strlen(body));
      return TT_OK;
    }
  }
  L = lt_thread_state(a->env, msg, sizeof msg);
  if (L == NULL) {
    *err = (tt_obj *)tt_error_new(TT_EFAILED, msg, NULL);
    return TT_EFAILED;
  }
  c.ctx = ctx;
  c.req = req;
  c.err = NULL;
  top = lua_gettop(L);
  if (!lua_checkstack(L, 8)) {
    *err = (tt_obj *)tt_error_new(TT_EFAILED, "stack overflow", NULL);
    return TT_EFAILED;
  }
  lua_pushcfunction(L, run_call);
  lua_pushlightuserdata(L, &c);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    /* Setting the call up failed (memory, a module not found here). */
    tt_unref(c.err);
    c.err = (tt_obj *)lt_pack_error(L, -1, NULL);
  }
  lua_settop(L, top);
  /* As lt_task_run does: a step now and then returns what finished
  ** requests left behind. */
  if (++tl_calls % 16 == 0) lua_gc(L, LUA_GCSTEP, 0);
  if (c.err != NULL) {
    *err = c.err;
    return TT_EFAILED;
  }
  return TT_OK;
}

/* }==================================================================== */


/* {====================================================================
** tether.http.server{...}
** ===================================================================== */

/* The whole set of tether.http.server's options (DESIGN section 9): a
** key not listed here raises. */
static const char *const server_options[] = {
  "name", "addr", "handler", "routes", "pool", "max_body", "max_inflight",
  "request_timeout", "idle_timeout", "shutdown", "tls", "metrics", NULL
};

static const char *const tls_options[] = {"cert", "key", NULL};

/* lt_server_options reads the options every server of the binding shares
** from the table at index 1: 'shutdown' (a tether.Context, or nil) and
** 'tls' ({cert = PATH, key = PATH}, both required), raising as argument
** #1's errors.  A tls table stays on the stack, so that its strings stay
** anchored while the server is made. */
void lt_server_options(lua_State *L, tt_ctx **shutdown, const char **cert,
                       const char **key) {
  *shutdown = NULL;
  *cert = *key = NULL;
  if (lua_getfield(L, 1, "shutdown") != LUA_TNIL) {
    *shutdown = lt_testobj(L, -1, &tt_ctx_type);
    if (*shutdown == NULL)
      lt_fielderror(L, 1, "shutdown", "must be a tether.Context");
  }
  lua_pop(L, 1);  /* the option table keeps it */
  if (lua_getfield(L, 1, "tls") != LUA_TNIL) {
    int tls = lua_gettop(L);
    if (!lua_istable(L, tls))
      lt_fielderror(L, 1, "tls", "must be a table {cert = ..., key = ...}");
    lt_checkopts(L, 1, tls, "tls", tls_options, false);
    *cert = lt_optstring(L, 1, tls, "tls.cert", NULL);
    *key = lt_optstring(L, 1, tls, "tls.key", NULL);
    if (*cert == NULL || *key == NULL)
      lt_fielderror(L, 1, "tls", "needs both 'cert' and 'key'");
  } else {
    lua_pop(L, 1);
  }
}

/* read_routes packs the routes table at 'idx' into 'a': keys "METHOD
** /path" or "/path" (any method), values functions, each packed once
** (so two routes that share an upvalue get a copy each).  Raises for an
** empty or non-table 'routes', a key or value of another type, a path
** that does not start with '/' or holds a space, a function that cannot
** cross, and on a failed allocation. */
static void read_routes(lua_State *L, int idx, lh_app *a) {
  int n = 0;
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx)) lt_fielderror(L, 1, "routes", "must be a table");
  lua_pushnil(L);
  while (lua_next(L, idx)) n++, lua_pop(L, 1);
  if (n == 0) lt_fielderror(L, 1, "routes", "must not be empty");
  a->routes = calloc((size_t)n, sizeof *a->routes);
  if (a->routes == NULL) luaL_error(L, "not enough memory");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    route *r = &a->routes[a->nroutes];
    const char *key, *sp, *path;
    char what[200];
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TFUNCTION)
      lt_fielderror(L, 1, "routes", "must map \"METHOD /path\" to functions");
    key = lua_tostring(L, -2);
    sp = strchr(key, ' ');
    path = sp != NULL ? sp + 1 : key;
    if (path[0] != '/' || strchr(path, ' ') != NULL) {
      lua_pushfstring(L, "bad route '%s' (expected \"METHOD /path\" or "
                      "\"/path\")", key);
      luaL_argerror(L, 1, lua_tostring(L, -1));
    }
    snprintf(what, sizeof what, "route '%s'", key);
    r->path = strdup(path);
    if (sp != NULL) {
      r->method = malloc((size_t)(sp - key) + 1);
      if (r->method != NULL) {
        memcpy(r->method, key, (size_t)(sp - key));
        r->method[sp - key] = '\0';
      }
    }
    if (r->path == NULL || (sp != NULL && r->method == NULL)) {
      free(r->path);
      free(r->method);
      luaL_error(L, "not enough memory");
    }
    a->nroutes++;
    r->fn = lt_pack_one(L, -1, what);
    lua_pop(L, 1);
  }
}

/* use_pool sets the app's pool from the 'pool' option: a tether.Pool, or
** the options of a new one (by default a pool of its own). */
static tt_pool *use_pool(lua_State *L, lh_app *a, const char *name) {
  tt_pool *p;
  lt_env *env = NULL;
  int t = lua_getfield(L, 1, "pool");
  if (t == LUA_TNIL || t == LUA_TTABLE) {
    int opts = lua_gettop(L);
    lua_pushcfunction(L, lt_pool_new);
    if (t == LUA_TNIL) {
      lua_createtable(L, 0, 3);
      lua_pushstring(L, name);
      lua_setfield(L, -2, "name");
      lua_pushinteger(L, DEF_WORKERS);
      lua_setfield(L, -2, "workers");
      lua_pushinteger(L, DEF_QUEUE);
      lua_setfield(L, -2, "queue");
    } else {
      lua_pushvalue(L, opts);
    }
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
      /* "bad argument #1 to '?' (why)" becomes a field error. */
      const char *m = lua_tostring(L, -1), *open;
      if (m == NULL) m = "invalid pool options";
      open = strchr(m, '(');
      if (open != NULL && m[strlen(m) - 1] == ')')
        m = lua_pushlstring(L, open + 1, strlen(open + 1) - 1);
      lt_fielderror(L, 1, "pool", m);
    }
    lua_replace(L, opts);
  }
  p = lt_pool_engine(lt_toobj(L, -1), &env);
  if (p == NULL)
    lt_fielderror(L, 1, "pool", "must be a tether.Pool or a table of pool "
                  "options");
  a->pool_obj = tt_ref(lt_toobj(L, -1));
  a->env = tt_ref(env);
  lua_pop(L, 1);
  return p;
}

#define APPBOX "tether.http.AppBox"

/* appbox_gc is the box's __gc: it frees an app that no server took. */
static int appbox_gc(lua_State *L) {
  lh_app **box = luaL_checkudata(L, 1, APPBOX);
  app_free(*box);
  *box = NULL;
  return 0;
}

/* tether.http.server{handler | routes, addr, pool, max_body,
** max_inflight, request_timeout, idle_timeout, shutdown, tls, name,
** metrics} -> server: starts a server, which is serving when this
** returns.  Each request runs handler(ctx, req, res) (or its route's
** function) on a worker of 'pool' (a tether.Pool, or pool options for a
** new one; by default a pool of its own, 16 workers and a queue of 256,
** named after the server) as an attached op: its context is the
** request's, which ends when the handler returns, the client hangs up,
** 'request_timeout' passes (30 s; 0: none) or the server stops.  The
** handler or the routes are packed once, here; each worker runs a copy.
** 'pool' and 'shutdown' are shared by reference.  Defaults: name
** "http", addr "127.0.0.1:0", max_body 1 MiB, max_inflight 1024,
** idle_timeout 30 s.  'metrics': nil counts the server in the metrics,
** true also serves /metrics (unless a route of its own is there), false
** neither.  Everything wrong raises: an unknown option (in the table,
** 'pool' or 'tls'), neither or both of 'handler' and 'routes', a bad
** route, a field of the wrong type or out of range, a handler that
** cannot cross, a 'tls' without both files; the engine's refusals of
** the address or the TLS files (TT_EINVAL) raise as argument errors, and
** an address that cannot be bound raises "http server 'NAME': ...". */
static int l_server(lua_State *L) {
  tt_http_opts o;
  lh_app *a, **box;
  tt_http_server *s;
  char msg[256];
  int err = TT_OK, top, metrics, i;
  bool has_handler, has_routes;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lt_checkopts(L, 1, 1, NULL, server_options, false);
  memset(&o, 0, sizeof o);
  o.name = lt_optstring(L, 1, 1, "name", "http");
  o.addr = lt_optstring(L, 1, 1, "addr", "127.0.0.1:0");
  /* A whole number of bytes: a fraction or math.huge is a mistake, and
  ** 1 GiB is the same ceiling as a store's max_payload. */
  o.max_body = (size_t)lt_optint(L, 1, 1, "max_body", 1 << 20, 1, 1 << 30);
  o.max_inflight = lt_optint(L, 1, 1, "max_inflight", 1024, 1, 1 << 24);
  o.request_timeout = lt_optnumber(L, 1, 1, "request_timeout", 30, 0);
  if (o.request_timeout == 0) o.request_timeout = -1;  /* 0: none */
  o.idle_timeout = lt_optint(L, 1, 1, "idle_timeout", 30, 1, 86400);
  /* metrics: nil counts, true counts and serves /metrics, false
  ** neither. */
  metrics = lua_getfield(L, 1, "metrics");
  if (metrics == LUA_TBOOLEAN)
    metrics = lua_toboolean(L, -1) ? 1 : 0;
  else if (metrics == LUA_TNIL)
    metrics = -1;
  else
    lt_fielderror(L, 1, "metrics", lua_pushfstring(L, "must be a boolean, "
                                                      "got %s",
                                                   luaL_typename(L, -1)));
  lua_pop(L, 1);
  lt_server_options(L, &o.shutdown, &o.tls_cert, &o.tls_key);
  top = lua_gettop(L);  /* keeps the tls table (and its strings) */
  lua_getfield(L, 1, "handler");
  has_handler = !lua_isnil(L, -1);
  if (has_handler && !lua_isfunction(L, -1))
    lt_fielderror(L, 1, "handler", "must be a function");
  lua_pop(L, 1);
  lua_getfield(L, 1, "routes");
  has_routes = !lua_isnil(L, -1);
  lua_pop(L, 1);
  if (has_handler == has_routes)
    return luaL_argerror(L, 1, has_handler
                                   ? "'handler' and 'routes' exclude each "
                                     "other"
                                   : "a 'handler' or 'routes' is needed");

  /* The app is held by a box until the server owns it, so that an error
  ** on the way frees it (the box's __gc). */
  box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  if (luaL_newmetatable(L, APPBOX)) {
    lua_pushcfunction(L, appbox_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  a = *box = calloc(1, sizeof *a);
  if (a == NULL) return luaL_error(L, "not enough memory");
  o.pool = use_pool(L, a, o.name);
  if (has_handler) {
    char what[200];
    snprintf(what, sizeof what, "handler of http server '%s'", o.name);
    lua_getfield(L, 1, "handler");
    a->handler = lt_pack_one(L, -1, what);
    lua_pop(L, 1);
  } else {
    lua_getfield(L, 1, "routes");
    read_routes(L, -1, a);
    lua_pop(L, 1);
  }
  a->metrics_path = metrics == 1;
  for (i = 0; i < a->nroutes; i++)
    if (strcmp(a->routes[i].path, "/metrics") == 0) a->metrics_path = false;
  o.handler = lh_handle;
  o.ud = a;
  o.ud_drop = app_free;
  s = tt_http_new(&o, &err, msg, sizeof msg);
  if (s != NULL) *box = NULL;  /* the server owns the app now */
  lua_settop(L, top);
  if (s == NULL) {
    if (err == TT_EINVAL) return luaL_argerror(L, 1, msg);
    return luaL_error(L, "http server '%s': %s", o.name, msg);
  }
  lt_pushnew(L, s);
  if (metrics != 0 && tt_metrics_observe_http(s) != TT_OK)
    return luaL_error(L, "not enough memory");
  return 1;
}

/* }==================================================================== */


/* {====================================================================
** Server methods
** ===================================================================== */

static tt_http_server *check_server(lua_State *L) {
  return lt_checkobj(L, 1, &tt_http_server_type);
}

/* server:addr() -> string: the address the server listens on, with the
** port it was given ("127.0.0.1:PORT" when port 0 picked one). */
static int srv_addr(lua_State *L) {
  lua_pushstring(L, tt_http_addr(check_server(L)));
  return 1;
}

/* server:name() -> string: the server's name (option 'name'). */
static int srv_name(lua_State *L) {
  lua_pushstring(L, tt_http_name(check_server(L)));
  return 1;
}

/* server:close([cause]): stops at once, as Go's Server.Close: stops
** listening, cancels the context of every request in flight with
** 'cause' (any transferable value, packed now; default an error "http:
** server closed") and closes every connection; a handler still running
** finds res:send returning nil, err (code 'closed').  Later calls do
** nothing.  Raises if 'cause' cannot cross. */
static int srv_close(lua_State *L) {
  tt_http_server *s = check_server(L);
  tt_obj *cause = NULL;
  if (!lua_isnoneornil(L, 2)) cause = lt_pack_one(L, 2, "close cause");
  tt_http_close(s, cause);
  tt_unref(cause);
  return 0;
}

/* server:shutdown([ctx]) -> true | nil, err: stops gracefully, as Go's
** Server.Shutdown: stops accepting, lets the requests in flight finish
** (their responses say Connection: close), then closes.  With 'ctx',
** nil and its error once it is done first; the server goes on draining
** (close stops it).  Raises for a non-context 'ctx', and 'interrupted!'
** on Ctrl-C in the main state. */
static int srv_shutdown(lua_State *L) {
  tt_http_server *s = check_server(L);
  tt_ctx *ctx = lua_isnoneornil(L, 2) ? NULL
                                      : lt_checkobj(L, 2, &tt_ctx_type);
  lt_wait w;
  int rc;
  lt_wait_begin(L, &w);
  rc = tt_http_shutdown(s, ctx, -1);
  if (lt_wait_end(L, &w) && rc == TT_EINTR) return lt_interrupted(L);
  if (rc == TT_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lt_pushnew(L, tt_error_for(rc));
  return 2;
}

/* server:stats() -> {requests, dispatched, rejected, client_gone,
** active, suspended, handlers}: the counters of requests received,
** dispatched to a handler, answered 503 and whose client hung up, and
** the gauges of requests in progress, waiting for their response, and
** handlers running. */
static int srv_stats(lua_State *L) {
  tt_http_stats st;
  tt_http_stats_get(check_server(L), &st);
  lua_createtable(L, 0, 7);
  lt_setint(L, "requests", st.requests);
  lt_setint(L, "dispatched", st.dispatched);
  lt_setint(L, "rejected", st.rejected);
  lt_setint(L, "client_gone", st.client_gone);
  lt_setint(L, "active", st.active);
  lt_setint(L, "suspended", st.suspended);
  lt_setint(L, "handlers", st.handlers);
  return 1;
}

/* }==================================================================== */

void lt_open_http(lua_State *L) {
  static const luaL_Reg srv_methods[] = {
    {"addr", srv_addr},
    {"name", srv_name},
    {"close", srv_close},
    {"shutdown", srv_shutdown},
    {"stats", srv_stats},
    {NULL, NULL}
  };
  static const luaL_Reg res_methods[] = {
    {"status", res_status},
    {"header", res_header},
    {"send", res_send},
    {"write", res_write},
    {"finish", res_finish},
    {NULL, NULL}
  };
  lt_newtype(L, &tt_http_server_type, srv_methods, NULL);
  lt_newtype(L, &res_type, res_methods, NULL);
  lua_pop(L, 2);
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, l_server);
  lua_setfield(L, -2, "server");
  lt_pushobj(L, &tt_http_client_gone);
  lua_setfield(L, -2, "client_gone");
  lua_setfield(L, -2, "http");
}
