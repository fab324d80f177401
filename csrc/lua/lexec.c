/*
** lexec.c -- tether.go, tether.safe_go and task handles.
*/
#include <stdio.h>
#include <string.h>

#include "ltether.h"
#include "lworker.h"

/* {====================================================================
** Handles
** ===================================================================== */

static tt_handle *check_handle(lua_State *L) {
  return lt_checkobj(L, 1, &tt_handle_type);
}

int lt_push_results(lua_State *L, tt_handle *h) {
  tt_obj *res = NULL;
  int st = tt_handle_result(h, &res), n;
  switch (st) {
    case TT_H_DONE:
      n = lt_unpack(L, res);
      tt_unref(res);
      return n;
    case TT_H_FAILED:
      lua_pushnil(L);
      if (res != NULL && res->type == &tt_error_type) {
        lt_pushnew(L, res);
      } else {
        tt_unref(res);
        lt_pushnew(L, tt_error_new(TT_EFAILED, NULL, NULL));
      }
      return 2;
    case TT_H_STOPPED:
      tt_unref(res);
      lua_pushnil(L);
      lt_pushnew(L, tt_error_new(TT_ESTOPPED, NULL, NULL));
      return 2;
    default:
      tt_unref(res);
      return luaL_error(L, "handle is not resolved");
  }
}

/* h:wait([ctx]) returns the task's results, or nil and its error, or nil
** and the context's error if 'ctx' ends first. */
static int m_wait(lua_State *L) {
  tt_handle *h = check_handle(L);
  tt_ctx *ctx = lua_isnoneornil(L, 2) ? NULL
                                      : lt_checkobj(L, 2, &tt_ctx_type);
  tt_case cs[2];
  lt_wait w;
  int r;
  memset(cs, 0, sizeof cs);
  cs[0].kind = TT_CASE_LATCH;
  cs[0].latch = tt_handle_latch(h);
  if (ctx != NULL && tt_ctx_done(ctx) != NULL) {
    cs[1].kind = TT_CASE_LATCH;
    cs[1].latch = tt_ctx_done(ctx);
  }
  /* Prefer the result when both are ready. */
  lt_wait_begin(L, &w);
  r = tt_latch_is_set(cs[0].latch) ? 0 : tt_select(cs, 2, false, -1);
  if (lt_wait_end(L, &w) && r == TT_SELECT_INTERRUPTED)
    return lt_interrupted(L);
  if (r == 0) return lt_push_results(L, h);
  lua_pushnil(L);
  lt_pushobj(L, tt_error_for(tt_ctx_err(ctx)));
  return 2;
}

static int m_stop(lua_State *L) {
  lua_pushboolean(L, tt_handle_stop(check_handle(L)));
  return 1;
}

static int m_state(lua_State *L) {
  static const char *const names[] = {"queued", "running", "done",
                                      "failed", "stopped"};
  int st = tt_handle_state(check_handle(L));
  lua_pushstring(L, st >= 0 && st <= TT_H_STOPPED ? names[st] : "unknown");
  return 1;
}

static int m_name(lua_State *L) {
  lua_pushstring(L, tt_handle_name(check_handle(L)));
  return 1;
}

static int m_done(lua_State *L) {
  check_handle(L);
  lua_pushvalue(L, 1);
  return 1;
}

/* }==================================================================== */


/* {====================================================================
** go and safe_go
** ===================================================================== */

/* A safe_go task: the Lua task and the name its failure is logged under. */
typedef struct safe_task {
  lt_task *task;
  char name[];
} safe_task;

/* lt_log_failure writes one log record for a failed task: the name, the
** error and its traceback. */
void lt_log_failure(const char *what, const char *name, tt_obj *err) {
  tt_error *e = (err != NULL && err->type == &tt_error_type)
                    ? (tt_error *)err : NULL;
  tt_field f[] = {
    TT_FSTR("name", name),
    TT_FSTR("error", e != NULL ? e->message : "unknown error"),
    TT_FSTR("traceback", e != NULL && e->traceback != NULL ? e->traceback
                                                           : ""),
  };
  tt_log(TT_LOG_ERROR, what, f, sizeof f / sizeof f[0]);
}

static int safe_run(tt_ctx *ctx, void *arg, tt_obj **out) {
  safe_task *s = arg;
  int r = lt_task_run(ctx, s->task, out);
  if (r != TT_OK) lt_log_failure("task failed", s->name, *out);
  return r;
}

static void safe_drop(void *arg) {
  safe_task *s = arg;
  lt_task_drop(s->task);
  free(s);
}

static int spawn(lua_State *L, int fnarg, const char *name, bool safe) {
  int nargs = lua_gettop(L) - fnarg, err = TT_OK;
  char what[160];
  lt_task *t;
  tt_handle *h;
  luaL_checktype(L, fnarg, LUA_TFUNCTION);
  snprintf(what, sizeof what, "task '%s'", name);
  t = lt_task_new(L, NULL, fnarg, fnarg + 1, nargs, false, what);
  if (safe) {
    size_t len = strlen(name);
    safe_task *s = malloc(sizeof *s + len + 1);
    if (s == NULL) {
      lt_task_drop(t);
      return luaL_error(L, "not enough memory");
    }
    s->task = t;
    memcpy(s->name, name, len + 1);
    h = tt_go(NULL, name, safe_run, s, safe_drop, &err);
    if (h == NULL) safe_drop(s);
  } else {
    h = tt_go(NULL, name, lt_task_run, t, lt_task_drop, &err);
    if (h == NULL) lt_task_drop(t);
  }
  if (h == NULL) return lt_pusherror(L, err, NULL);
  lt_pushnew(L, h);
  return 1;
}

/* tether.go(fn, ...) runs fn(...) on the default executor. */
static int l_go(lua_State *L) {
  lua_Debug ar;
  char name[96] = "go";
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_pushvalue(L, 1);
  if (lua_getinfo(L, ">S", &ar))
    snprintf(name, sizeof name, "%s:%d", ar.short_src, ar.linedefined);
  return spawn(L, 1, name, false);
}

/* tether.safe_go(name, fn, ...) is go, and a failure is also logged as one
** structured line on stderr with the name, error and traceback. */
static int l_safe_go(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  return spawn(L, 2, name, true);
}

/* tether.shutdown() stops the engine's idle threads (executor threads
** kept for reuse, the timer thread) and waits for them, so a program can
** end with no thread of ours left; they start again on the next use. */
static int l_shutdown(lua_State *L) {
  (void)L;
  tt_shutdown();
  return 0;
}

/* tether.core._test_fail_threads(n) makes the engine's next 'n' thread
** creations fail (0: none), for specs that reach what happens when no
** thread can be made.  Test-only: not part of the documented API. */
static int l_test_fail_threads(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0 && n <= 1000000, 1, "out of range (0 to 1000000)");
  tt_test_fail_threads((int)n);
  return 0;
}

/* tether.threads() counts the threads of the process (Linux), for
** programs that check they leave none behind. */
static int l_threads(lua_State *L) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  lua_Integer n = -1;
  if (f == NULL) {
    luaL_pushfail(L);
    return 1;
  }
  while (fgets(line, sizeof line, f) != NULL)
    if (strncmp(line, "Threads:", 8) == 0) n = atoi(line + 8);
  fclose(f);
  lua_pushinteger(L, n);
  return 1;
}

/* }==================================================================== */

void lt_open_exec(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"wait", m_wait},
    {"stop", m_stop},
    {"state", m_state},
    {"name", m_name},
    {"done", m_done},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"go", l_go},
    {"safe_go", l_safe_go},
    {"shutdown", l_shutdown},
    {"threads", l_threads},
    {"_test_fail_threads", l_test_fail_threads},
    {NULL, NULL}
  };
  lt_newtype(L, &tt_handle_type, methods, NULL);
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
}
