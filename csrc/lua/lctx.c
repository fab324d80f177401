/*
** lctx.c -- contexts in Lua: constructors, cancel functions, keys and
** after_func.
**
** Context values and causes are packed Lua values (lpack.c), so a
** context made in one state can be read in another: each state that
** reads a value gets its own copy.
*/
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ltether.h"
#include "lworker.h"

/* {====================================================================
** Cancel functions and keys (objects of the binding)
** ===================================================================== */

typedef struct lt_cancel {
  tt_obj hdr;
  tt_ctx *ctx;
  bool with_cause;       /* made by with_cancel_cause: cancel(cause) */
} lt_cancel;

static void cancel_free(tt_obj *o) {
  tt_unref(((lt_cancel *)o)->ctx);
  free(o);
}

static void cancel_traverse(tt_obj *o, tt_visit visit, void *ud) {
  visit((tt_obj *)((lt_cancel *)o)->ctx, ud);
}

static const tt_type cancel_type = {"tether.CancelFunc", cancel_free, NULL,
                                    cancel_traverse};

typedef struct lt_key {
  tt_obj hdr;
  char name[];
} lt_key;

static void key_free(tt_obj *o) { free(o); }

static int key_describe(tt_obj *o, char *buf, size_t n) {
  return snprintf(buf, n, "tether.Key(%s)", ((lt_key *)o)->name);
}

static const tt_type key_type = {"tether.Key", key_free, key_describe,
                                   NULL};

const tt_type *lt_key_type(void) { return &key_type; }

/* A cancel function made by this state's constructors is a local one: a
** small userdata with no finalizer and no entry in the object cache,
** whose user value is its context's userdata (which keeps the context
** alive as the engine object did).  It becomes an engine object (a
** tether.CancelFunc, cancel_type) only when it crosses to another state
** (lt_light_obj), where it is a boxed CancelFunc; a local one that comes
** back is that boxed one, not the same userdata.  Constructors make a
** pair of userdata per context, and the GC work of the second one, its
** finalizer and its cache entry were most of a context's cost. */
#define LOCAL_CANCEL_T "tether.CancelFunc (local)"

typedef struct local_cancel {
  bool with_cause;       /* made by with_cancel_cause: cancel(cause) */
} local_cancel;

/* local_ctx returns the context of the local cancel function at 'idx'
** (setting '*with_cause'), or NULL if it is not one; raises if its
** context's userdata was freed by hand. */
static tt_ctx *local_ctx(lua_State *L, int idx, bool *with_cause) {
  local_cancel *k = luaL_testudata(L, idx, LOCAL_CANCEL_T);
  tt_ctx *c;
  if (k == NULL) return NULL;
  lua_getiuservalue(L, idx, 1);
  c = (tt_ctx *)lt_toobj(L, -1);
  lua_pop(L, 1);
  if (c == NULL) luaL_error(L, "attempt to use a freed tether.Context");
  if (with_cause != NULL) *with_cause = k->with_cause;
  return c;
}

/* check_cancel reads the cancel function at 1, local or boxed. */
static tt_ctx *check_cancel(lua_State *L, bool *with_cause) {
  tt_ctx *c = local_ctx(L, 1, with_cause);
  lt_cancel *k;
  if (c != NULL) return c;
  k = lt_checkobj(L, 1, &cancel_type);
  *with_cause = k->with_cause;
  return k->ctx;
}

/* cancel([cause]) (__call of a cancel function, local or boxed): cancels its
** context and its descendants with tether.canceled; later calls do nothing.
** Only a cancel function of with_cancel_cause records 'cause', packed (copied)
** here, so that any state may read it back with ctx:cause(); the others ignore
** their argument.  Returns nothing; raises if 'cause' cannot cross.  Callable
** from any thread: a boxed one is how a task cancels its starter's context. */
static int cancel_call(lua_State *L) {
  bool with_cause;
  tt_ctx *c = check_cancel(L, &with_cause);
  tt_obj *cause = NULL;
  if (with_cause && !lua_isnoneornil(L, 2))
    cause = lt_pack_one(L, 2, "cancel cause");
  tt_cancel(c, cause);
  tt_unref(cause);
  return 0;
}

/* __close of a cancel function ('local cancel <close>'): cancels the context,
** with no cause, when the block ends however it ends. */
static int cancel_close(lua_State *L) {
  bool with_cause;
  tt_cancel(check_cancel(L, &with_cause), NULL);
  return 0;
}

/* tostring(cancel) for a local cancel function: 'tether.CancelFunc: 0x...',
** named as the boxed one so that the two read the same. */
static int local_tostring(lua_State *L) {
  lua_pushfstring(L, "tether.CancelFunc: %p", lua_touserdata(L, 1));
  return 1;
}

/* lt_light_obj: see ltether.h. */
tt_obj *lt_light_obj(lua_State *L, int idx) {
  bool with_cause;
  tt_ctx *c = local_ctx(L, idx, &with_cause);
  lt_cancel *k;
  if (c == NULL) return NULL;
  k = malloc(sizeof *k);
  if (k == NULL) luaL_error(L, "not enough memory");
  tt_obj_init(&k->hdr, &cancel_type);
  k->ctx = tt_ref(c);
  k->with_cause = with_cause;
  return &k->hdr;
}

/* tether.key([name]) -> key: a new context key, distinct from every other key
** and from every string, so two libraries that both use 'user' cannot clash.
** 'name' (default 'key'; a number is taken as its string) only shows in
** tostring(key).  Keys are engine objects: they cross threads by reference, so
** a task reads a value with the key it was given.  Raises on a failed
** allocation. */
static int l_key(lua_State *L) {
  size_t len;
  const char *name = luaL_optlstring(L, 1, "key", &len);
  lt_key *k = malloc(sizeof *k + len + 1);
  if (k == NULL) return luaL_error(L, "not enough memory");
  tt_obj_init(&k->hdr, &key_type);
  memcpy(k->name, name, len + 1);
  lt_pushnew(L, k);
  return 1;
}

/* }==================================================================== */


/* {====================================================================
** Constructors
** ===================================================================== */

static tt_ctx *check_ctx(lua_State *L, int arg) {
  return lt_checkobj(L, arg, &tt_ctx_type);
}

/* push_pair pushes a new context and its cancel function. */
static int push_pair(lua_State *L, tt_ctx *c, bool with_cause) {
  local_cancel *k;
  if (c == NULL) return luaL_error(L, "not enough memory");
  lt_pushnew(L, c);
  k = lua_newuserdatauv(L, sizeof *k, 1);
  k->with_cause = with_cause;
  luaL_setmetatable(L, LOCAL_CANCEL_T);
  lua_pushvalue(L, -2);
  lua_setiuservalue(L, -2, 1);
  return 2;
}

/* tether.background() -> ctx: the root context, never canceled, with no
** deadline and no values; every call returns the same (static) object. */
static int l_background(lua_State *L) {
  lt_pushobj(L, tt_background());
  return 1;
}

/* tether.todo() -> ctx: a root as background(), the same object on every call,
** that marks a place where the right context is not known yet, as in Go. */
static int l_todo(lua_State *L) {
  lt_pushobj(L, tt_todo());
  return 1;
}

/* tether.with_cancel(parent) -> ctx, cancel: a child of 'parent' that cancel()
** cancels with tether.canceled, and that is canceled when 'parent' is.  Raises
** if 'parent' is not a context, and on a failed allocation.  'cancel' is a
** local cancel function (see push_pair). */
static int l_with_cancel(lua_State *L) {
  return push_pair(L, tt_with_cancel(check_ctx(L, 1)), false);
}

/* tether.with_cancel_cause(parent) -> ctx, cancel: as with_cancel, but
** cancel(cause) records 'cause' for ctx:cause() (the first cancel wins);
** ctx:err() is still tether.canceled.  Raises as with_cancel. */
static int l_with_cancel_cause(lua_State *L) {
  return push_pair(L, tt_with_cancel(check_ctx(L, 1)), true);
}

/* opt_cause packs the optional cause at 'arg' (NULL for none or nil), so that
** whatever state reads the cause later gets its own copy. */
static tt_obj *opt_cause(lua_State *L, int arg) {
  if (lua_isnoneornil(L, arg)) return NULL;
  return lt_pack_one(L, arg, "cause");
}

/* tether.with_timeout(parent, seconds [, cause]) -> ctx, cancel: a child of
** 'parent' canceled with tether.deadline_exceeded after 'seconds' (its deadline
** is the earlier of its own and its parent's), or by cancel() before; 'cause'
** (packed now) is what ctx:cause() gives when the timer fired.  0 gives a
** context that is already done.  Raises for a negative or NaN 'seconds'
** ('non-negative number of seconds expected'), a non-context 'parent', a
** 'cause' that cannot cross, and on a failed allocation.  The timer lives on
** the engine's one timer thread: a pending timeout costs no thread. */
static int l_with_timeout(lua_State *L) {
  tt_ctx *p = check_ctx(L, 1);
  double s = lt_checkseconds(L, 2);
  tt_obj *cause = opt_cause(L, 3);
  tt_ctx *c = tt_with_timeout(p, s, cause);
  tt_unref(cause);
  return push_pair(L, c, false);
}

/* tether.with_deadline(parent, t [, cause]) -> ctx, cancel: as with_timeout,
** with an absolute deadline 't' on tether.now()'s clock; a past 't' gives a
** context that is already done.  Raises for a NaN 't' ('number expected, got
** NaN'), and otherwise as with_timeout. */
static int l_with_deadline(lua_State *L) {
  tt_ctx *p = check_ctx(L, 1);
  double t = luaL_checknumber(L, 2);
  tt_obj *cause;
  tt_ctx *c;
  luaL_argcheck(L, !isnan(t), 2, "number expected, got NaN");
  cause = opt_cause(L, 3);
  c = tt_with_deadline(p, t, cause);
  tt_unref(cause);
  return push_pair(L, c, false);
}

/* check_key reads a context key: a string or a tether.Key. */
static tt_key check_key(lua_State *L, int arg) {
  tt_key k = {NULL, NULL, 0};
  if (lua_type(L, arg) == LUA_TSTRING) {
    k.str = lua_tolstring(L, arg, &k.len);
    return k;
  }
  k.obj = lt_testobj(L, arg, &key_type);
  if (k.obj == NULL) {
    const char *msg = lua_pushfstring(L, "string or tether.Key expected, "
                                      "got %s", luaL_typename(L, arg));
    luaL_argerror(L, arg, msg);
  }
  return k;
}

/* tether.with_value(parent, key, value) -> ctx: a child of 'parent' that
** carries 'value' under 'key' (a string or a tether.Key; a string never matches
** a key object).  'value' is packed now, so each ctx:value(key), in any state,
** gets a fresh copy; nil hides an outer value of 'key'.  The child follows
** 'parent''s cancellation and has no cancel function of its own.  Raises for
** another type of key, a missing 'value' ('value expected'), a value that
** cannot cross, and on a failed allocation. */
static int l_with_value(lua_State *L) {
  tt_ctx *p = check_ctx(L, 1);
  tt_key k = check_key(L, 2);
  tt_obj *v;
  tt_ctx *c;
  luaL_checkany(L, 3);
  v = lua_isnil(L, 3) ? NULL : lt_pack_one(L, 3, "context value");
  c = tt_with_value(p, &k, v);
  tt_unref(v);
  if (c == NULL) return luaL_error(L, "not enough memory");
  lt_pushnew(L, c);
  return 1;
}

/* tether.without_cancel(parent) -> ctx: a child of 'parent' that keeps its
** values but not its cancellation, deadline or cause, so it is never done
** unless bounded again: with_timeout(without_cancel(req), s) is how work
** outlives the request that started it.  Raises if 'parent' is not a context,
** and on a failed allocation. */
static int l_without_cancel(lua_State *L) {
  tt_ctx *c = tt_without_cancel(check_ctx(L, 1));
  if (c == NULL) return luaL_error(L, "not enough memory");
  lt_pushnew(L, c);
  return 1;
}

/* }==================================================================== */


/* {====================================================================
** after_func
** ===================================================================== */

/* An after_func job: the Lua task and the name its failure is logged
** under (where the function was defined, as tether.go names tasks). */
typedef struct af_job {
  lt_task *task;
  char name[96];
} af_job;

static void af_drop(void *arg) {
  af_job *j = arg;
  lt_task_drop(j->task);
  free(j);
}

/* af_run runs the function; a failure is logged as safe_go's are, with
** the name and the traceback: no one else would hear of it. */
static void af_run(void *arg) {
  af_job *j = arg;
  tt_obj *out = NULL;
  if (lt_task_run(tt_background(), j->task, &out) != TT_OK)
    lt_log_failure("after_func failed", j->name, out);
  tt_unref(out);
  af_drop(j);
}

/* stop() -> boolean (__call of a tether.AfterFunc): true if this call prevented
** the run of after_func's function (it had not started); false once it started
** or was already stopped. */
static int af_call(lua_State *L) {
  tt_afterfunc *af = lt_checkobj(L, 1, &tt_afterfunc_type);
  lua_pushboolean(L, tt_afterfunc_stop(af));
  return 1;
}

/* tether.after_func(ctx, fn, ...) -> stop: runs fn(...) once on another thread
** when 'ctx' is done (at once if it already is), as Go's context.AfterFunc; on
** a context that can never be done, fn never runs.  'fn' and the extra
** arguments cross by the transfer rules now, as tether.go's do.  A failing fn
** is logged as one JSON line ('after_func failed') under the name 'file:line'
** of its definition, with its traceback, as safe_go's tasks are: no one else
** would hear of it.  Raises if 'ctx' is not a context, 'fn' is not a function,
** a value cannot cross, or on a failed allocation. */
static int l_after_func(lua_State *L) {
  tt_ctx *c = check_ctx(L, 1);
  char name[96] = "after_func";
  lua_Debug ar;
  lt_task *t;
  af_job *j;
  tt_afterfunc *af;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  if (lua_getinfo(L, ">S", &ar) && ar.linedefined > 0)
    snprintf(name, sizeof name, "%s:%d", ar.short_src, ar.linedefined);
  t = lt_task_new(L, NULL, 2, 3, lua_gettop(L) - 2, false, "after_func");
  j = malloc(sizeof *j);
  if (j == NULL) {
    lt_task_drop(t);
    return luaL_error(L, "not enough memory");
  }
  j->task = t;
  memcpy(j->name, name, sizeof name);
  af = tt_after_func(c, af_run, j, af_drop);
  if (af == NULL) {
    af_drop(j);
    return luaL_error(L, "not enough memory");
  }
  lt_pushnew(L, af);
  return 1;
}

/* }==================================================================== */


/* {====================================================================
** Methods
** ===================================================================== */

/* ctx:err() -> nil | err: nil while the context is not done, then the sentinel
** tether.canceled or tether.deadline_exceeded (the same objects every time, so
** they compare with ==). */
static int m_err(lua_State *L) {
  int e = tt_ctx_err(check_ctx(L, 1));
  if (e == 0) lua_pushnil(L);
  else lt_pushobj(L, tt_error_for(e));
  return 1;
}

/* ctx:cause() -> value: why the context ended: the cause given to
** cancel(cause), with_timeout or with_deadline (when its timer fired), or
** inherited from the ancestor that ended it, else ctx:err(); nil while not
** done.  A packed cause is unpacked into a fresh copy for this state; a tether
** object (an error, a signal context's 'signal' error) is pushed as itself. */
static int m_cause(lua_State *L) {
  tt_obj *c = tt_ctx_cause(check_ctx(L, 1));
  if (c != NULL && c->type == &lt_value_type) lt_unpack_one(L, c);
  else lt_pushobj(L, c);
  tt_unref(c);
  return 1;
}

/* ctx:done() -> ctx | nil: nil for a context that can never be done
** (background, todo, without_cancel and values over them), so that a select
** case on it never fires, as Go's nil channel; else the context itself, a
** waitable that fires once it is done. */
static int m_done(lua_State *L) {
  tt_ctx *c = check_ctx(L, 1);
  if (tt_ctx_done(c) == NULL) lua_pushnil(L);
  else lua_pushvalue(L, 1);
  return 1;
}

/* ctx:deadline() -> number | nil: the deadline on tether.now()'s clock, or nil
** when there is none. */
static int m_deadline(lua_State *L) {
  double d;
  if (tt_ctx_deadline(check_ctx(L, 1), &d)) lua_pushnumber(L, d);
  else lua_pushnil(L);
  return 1;
}

/* ctx:value(key) -> value: a fresh copy of the value under 'key' in this
** context or its nearest ancestor that has one, or nil (also when a nil value
** hides an outer one).  Raises for a key that is neither a string nor a
** tether.Key. */
static int m_value(lua_State *L) {
  tt_ctx *c = check_ctx(L, 1);
  tt_key k = check_key(L, 2);
  tt_obj *v;
  if (!tt_ctx_value(c, &k, &v) || v == NULL) {
    lua_pushnil(L);
    return 1;
  }
  lt_unpack_one(L, v);
  tt_unref(v);
  return 1;
}

/* ctx:wait([timeout]) -> boolean: blocks until the context is done (true) or
** 'timeout' seconds pass (false); without a timeout it may wait forever (on
** background(), it does).  Raises for a negative or NaN timeout, and
** 'interrupted!' on Ctrl-C in the main state. */
static int m_wait(lua_State *L) {
  tt_ctx *c = check_ctx(L, 1);
  double t = lt_optseconds(L, 2, -1);
  lt_wait w;
  bool done;
  lt_wait_begin(L, &w);
  done = tt_ctx_wait(c, t);
  if (lt_wait_end(L, &w) && !done) return lt_interrupted(L);
  lua_pushboolean(L, done);
  return 1;
}

/* }==================================================================== */

/* lt_open_ctx registers the Context, CancelFunc (boxed and local), Key and
** AfterFunc types and sets the context functions into the module table on the
** top of the stack. */
void lt_open_ctx(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"err", m_err},
    {"cause", m_cause},
    {"done", m_done},
    {"deadline", m_deadline},
    {"value", m_value},
    {"wait", m_wait},
    {NULL, NULL}
  };
  static const luaL_Reg cancel_meta[] = {
    {"__call", cancel_call},
    {"__close", cancel_close},
    {NULL, NULL}
  };
  static const luaL_Reg af_meta[] = {
    {"__call", af_call},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"background", l_background},
    {"todo", l_todo},
    {"with_cancel", l_with_cancel},
    {"with_cancel_cause", l_with_cancel_cause},
    {"with_timeout", l_with_timeout},
    {"with_deadline", l_with_deadline},
    {"with_value", l_with_value},
    {"without_cancel", l_without_cancel},
    {"after_func", l_after_func},
    {"key", l_key},
    {NULL, NULL}
  };
  lt_newtype(L, &tt_ctx_type, methods, NULL);
  lt_newtype(L, &cancel_type, NULL, cancel_meta);
  if (luaL_newmetatable(L, LOCAL_CANCEL_T)) {
    luaL_setfuncs(L, cancel_meta, 0);
    lua_pushcfunction(L, local_tostring);
    lua_setfield(L, -2, "__tostring");
    /* Errors and tether.type name it as the boxed one. */
    lua_pushliteral(L, "tether.CancelFunc");
    lua_setfield(L, -2, "__name");
    lua_pushliteral(L, "cancelfunc");
    lua_setfield(L, -2, LT_LIGHT_TYPE);
  }
  lua_pop(L, 1);
  lt_newtype(L, &key_type, NULL, NULL);
  lt_newtype(L, &tt_afterfunc_type, NULL, af_meta);
  lua_pop(L, 4);
  luaL_setfuncs(L, funcs, 0);
}
