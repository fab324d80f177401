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

/* lt_push_results pushes what a resolved handle gives (h:wait, select on a
** handle) and returns how many values: a done task's results, unpacked
** (copies made in this state); nil and the error object it failed with
** (a plain failed error when its result is not one); nil and a 'stopped'
** error for a task removed before it ran.  A handle not yet resolved
** raises: callers wait for its latch first. */
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

/* h:wait([ctx]) -> ... | nil, err: waits for the task to end and returns
** its results (copies), or nil and its error: code 'failed' with
** err.traceback, the error object it raised, 'stopped' for an op removed
** before it ran, 'abandoned' for an op given up at exit.  With 'ctx', nil
** and the context's error once it is done first (the task goes on).  The
** result wins when both are ready: a task that has already ended is
** never reported as timed out.  Raises for a non-context 'ctx', and
** 'interrupted!' on Ctrl-C in the main state. */
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

/* h:stop() -> boolean: removes a task that has not started (a pool op
** still queued or waiting for a retry, a tether.go task still waiting for
** a thread) and returns true; h:wait then gives nil and a 'stopped'
** error.  Once the task has started it does nothing and returns false:
** running work ends through its context, never by force. */
static int m_stop(lua_State *L) {
  lua_pushboolean(L, tt_handle_stop(check_handle(L)));
  return 1;
}

/* h:state() -> string: "queued", "running", "done", "failed" or
** "stopped" ("unknown" only for a state the engine never gives). */
static int m_state(lua_State *L) {
  static const char *const names[] = {"queued", "running", "done",
                                      "failed", "stopped"};
  int st = tt_handle_state(check_handle(L));
  lua_pushstring(L, st >= 0 && st <= TT_H_STOPPED ? names[st] : "unknown");
  return 1;
}

/* h:name() -> string: the task's name: a pool op's name, safe_go's name,
** or file:line where tether.go's function was defined. */
static int m_name(lua_State *L) {
  lua_pushstring(L, tt_handle_name(check_handle(L)));
  return 1;
}

/* h:done() -> h: the handle itself, a waitable for tether.select
** (handles are cases already; this reads like ctx:done()). */
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

/* safe_run runs a safe_go task on its engine thread and logs its failure
** there, so that work nobody waits for still cannot fail silently. */
static int safe_run(tt_ctx *ctx, void *arg, tt_obj **out) {
  safe_task *s = arg;
  int r = lt_task_run(ctx, s->task, out);
  if (r != TT_OK) lt_log_failure("task failed", s->name, *out);
  return r;
}

/* safe_drop frees a safe_go task whether it ran or not. */
static void safe_drop(void *arg) {
  safe_task *s = arg;
  lt_task_drop(s->task);
  free(s);
}

/* spawn is the body of go and safe_go: it packs the function at 'fnarg'
** and every argument after it now (a value that cannot cross raises,
** naming "task 'name'"), and starts the task with no context of its own,
** as Go's 'go' statement.  Pushes the handle, or nil and the engine's
** error (code 'no_thread' when no thread can be made). */
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

/* tether.go(fn, ...) -> h | nil, err: runs fn(...) on a thread of the
** engine's elastic executor and returns its handle.  'fn' and the
** arguments cross by the transfer rules now, the results when it ends;
** the task gets no context unless one is passed, and is named after
** where 'fn' was defined (file:line).  Whatever it raises is its result,
** never the process's end.  Returns nil and an error of code 'no_thread'
** when no thread can be made; raises if 'fn' is not a function or a
** value cannot cross. */
static int l_go(lua_State *L) {
  lua_Debug ar;
  char name[96] = "go";
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_pushvalue(L, 1);
  if (lua_getinfo(L, ">S", &ar))
    snprintf(name, sizeof name, "%s:%d", ar.short_src, ar.linedefined);
  return spawn(L, 1, name, false);
}

/* tether.safe_go(name, fn, ...) -> h | nil, err: tether.go with a name,
** whose failure is also logged as one JSON line ("msg":"task failed",
** the name, the error and its traceback).  Raises as go does, and for a
** 'name' that is not a string (or a number). */
static int l_safe_go(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  return spawn(L, 2, name, true);
}

/* tether.shutdown(): stops the engine's idle threads (executor threads
** kept for reuse, the timer thread, the signal thread when nothing needs
** it) and waits for them, running executor tasks included, so a program
** can end with no idle thread of the engine left; they start again on
** the next use.  Returns nothing. */
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

/* tether.threads() -> integer | nil: how many threads the process has,
** read from Linux's /proc/self/status, for programs that check they
** leave none behind; nil (fail) where the file cannot be read or has no
** "Threads:" line. */
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
  if (n < 0)
    luaL_pushfail(L);
  else
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
