/*
** lobj.c -- engine objects as Lua userdata, and the error type.
**
** A userdata is a box holding one pointer to an engine object and one
** reference to it (after cqueues' thread.c).  Each state keeps a
** weak-valued table from object address to userdata, so pushing the same
** object twice gives the same userdata: '==' and table keys work, across
** transfers too.
*/
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ltether.h"

#define CACHE_KEY "tether.cache"
#define TYPE_FIELD "__tether_type"

/* {====================================================================
** Boxes
** ===================================================================== */

/* to_box returns the box of a tether userdata at 'idx', or NULL for any
** other value: metamethods can be called by hand with anything, and only
** a userdata with one of our metatables holds a box. */
static tt_obj **to_box(lua_State *L, int idx) {
  bool ours;
  if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx))
    return NULL;
  ours = lua_getfield(L, -1, TYPE_FIELD) == LUA_TLIGHTUSERDATA;
  lua_pop(L, 2);
  return ours ? lua_touserdata(L, idx) : NULL;
}

/* __gc of every tether type (also callable by hand, with anything): drops the
** userdata's reference to its engine object and empties the box, so that a
** later use raises 'attempt to use a freed ...' instead of touching freed
** memory, and a later push makes a new userdata (push_box).  The object itself
** lives on while other states, channels or tasks hold it. */
static int obj_gc(lua_State *L) {
  tt_obj **box = to_box(L, 1);
  if (box != NULL && *box != NULL) {
    tt_unref(*box);
    *box = NULL;
  }
  return 0;
}

/* tostring(obj) (__tostring of every tether type): the type's description
** (tt_describe), with the object's address appended when the description has
** none, as 'tether.Chan (0/1): 0x...'; an error reads as its message alone; a
** freed userdata reads 'tether object (freed)'. */
static int obj_tostring(lua_State *L) {
  tt_obj **box = to_box(L, 1);
  char buf[256];
  if (box == NULL || *box == NULL) {
    lua_pushliteral(L, "tether object (freed)");
    return 1;
  }
  tt_describe(*box, buf, sizeof buf);
  if (strchr(buf, ':') == NULL && (*box)->type->describe != NULL &&
      (*box)->type != &tt_error_type)
    lua_pushfstring(L, "%s: %p", buf, (void *)*box);
  else
    lua_pushstring(L, buf);
  return 1;
}

/* lt_newtype: see ltether.h.  Nothing is done when the metatable already exists
** in this state, so each lt_open_* may be called again safely. */
void lt_newtype(lua_State *L, const tt_type *t, const luaL_Reg *methods,
                const luaL_Reg *meta) {
  if (!luaL_newmetatable(L, t->name)) return;  /* already made here */
  lua_pushlightuserdata(L, (void *)t);
  lua_setfield(L, -2, TYPE_FIELD);
  lua_pushcfunction(L, obj_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, obj_tostring);
  lua_setfield(L, -2, "__tostring");
  if (meta != NULL) luaL_setfuncs(L, meta, 0);
  if (methods != NULL) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
}

/* push_cache pushes this state's object cache, making it on first use. */
static void push_cache(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, CACHE_KEY) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, CACHE_KEY);
}

/* push_box pushes the one userdata of 'o' in this state (from the cache, else a
** new one), or nil for NULL; with 'take' the caller's reference is consumed
** either way.  Raises if the type was not registered here. */
static void push_box(lua_State *L, tt_obj *o, bool take) {
  tt_obj **box;
  if (o == NULL) {
    lua_pushnil(L);
    return;
  }
  push_cache(L);
  /* A userdata whose __gc was called by hand holds nothing any more: it
  ** is replaced, so the object gets a usable userdata again. */
  if (lua_rawgetp(L, -1, o) == LUA_TUSERDATA &&
      *(tt_obj **)lua_touserdata(L, -1) != NULL) {
    lua_remove(L, -2);
    if (take) tt_unref(o);
    return;
  }
  lua_pop(L, 1);
  /* Made in a safe state first (empty box), then filled: a memory error
  ** in between cannot leave a box that frees what it does not own. */
  box = lua_newuserdatauv(L, sizeof *box, 1);
  *box = NULL;
  if (luaL_getmetatable(L, o->type->name) != LUA_TTABLE) {
    lua_pop(L, 3);
    if (take) tt_unref(o);
    luaL_error(L, "tether: type '%s' is not registered", o->type->name);
    return;
  }
  lua_setmetatable(L, -2);
  *box = take ? o : tt_ref(o);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, -3, o);
  lua_remove(L, -2);
}

/* lt_pushobj and lt_pushnew: see ltether.h. */
void lt_pushobj(lua_State *L, void *o) { push_box(L, o, false); }
void lt_pushnew(lua_State *L, void *o) { push_box(L, o, true); }

/* lt_toobj: see ltether.h. */
tt_obj *lt_toobj(lua_State *L, int idx) {
  tt_obj **box = to_box(L, idx);
  return box != NULL ? *box : NULL;
}

/* lt_testobj: see ltether.h. */
void *lt_testobj(lua_State *L, int idx, const tt_type *t) {
  tt_obj **box = luaL_testudata(L, idx, t->name);
  return box != NULL ? *box : NULL;
}

/* lt_checkobj: see ltether.h.  A userdata whose __gc was called by hand raises
** 'attempt to use a freed <type>'. */
void *lt_checkobj(lua_State *L, int arg, const tt_type *t) {
  tt_obj **box = luaL_testudata(L, arg, t->name);
  if (box == NULL) luaL_typeerror(L, arg, t->name);
  if (*box == NULL) luaL_error(L, "attempt to use a freed %s", t->name);
  return *box;
}

/* lt_checkseconds, lt_optseconds and lt_setint: see ltether.h. */
double lt_checkseconds(lua_State *L, int arg) {
  double s = luaL_checknumber(L, arg);
  luaL_argcheck(L, !isnan(s) && s >= 0, arg,
                "non-negative number of seconds expected");
  return s;
}

double lt_optseconds(lua_State *L, int arg, double def) {
  if (lua_isnoneornil(L, arg)) return def;
  return lt_checkseconds(L, arg);
}

void lt_setint(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

/* }==================================================================== */


/* {====================================================================
** Errors
** ===================================================================== */

/* lt_pusherror: see ltether.h.  Raises 'not enough memory' when the error
** object cannot be made. */
int lt_pusherror(lua_State *L, int code, const char *message) {
  tt_error *e = tt_error_new(code, message, NULL);
  lua_pushnil(L);
  if (e == NULL) luaL_error(L, "not enough memory");
  lt_pushnew(L, e);
  return 2;
}

/* push_field_obj pushes an error's cause or value: a packed value or bytes is
** unpacked into a fresh copy for this state, any other object is pushed as
** itself. */
static void push_field_obj(lua_State *L, tt_obj *o) {
  if (o != NULL && (o->type == &lt_value_type || o->type == &tt_bytes_type))
    lt_unpack_one(L, o);
  else
    lt_pushobj(L, o);
}

/* err.code, err.message, err.cause, err.traceback, err.value, err.tenant,
** err.signal, err.id (__index of tether.Error): read-only fields.  'code' is
** the code's name; 'cause' and 'value' are copies (or the object itself);
** 'tenant' (quota_exceeded), 'signal' (signal: 'INT', 'TERM', ...) and 'id'
** (spilled: the op's id in the store) read the error's value only for their
** code.  Any other string key reads nil; a key that is neither a string nor a
** number raises (luaL_checkstring). */
static int err_index(lua_State *L) {
  tt_error *e = lt_checkobj(L, 1, &tt_error_type);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "code") == 0)
    lua_pushstring(L, tt_errname(e->code));
  else if (strcmp(k, "message") == 0)
    lua_pushstring(L, e->message);
  else if (strcmp(k, "cause") == 0)
    push_field_obj(L, e->cause);
  else if (strcmp(k, "traceback") == 0)
    lua_pushstring(L, e->traceback);
  else if (strcmp(k, "value") == 0)
    push_field_obj(L, e->value);
  else if (strcmp(k, "tenant") == 0 && e->code == TT_EQUOTA)
    push_field_obj(L, e->value);  /* a quota refusal names its tenant */
  else if (strcmp(k, "signal") == 0 && e->code == TT_ESIGNAL &&
           e->value != NULL && e->value->type == &tt_bytes_type)
    lua_pushlstring(L, ((tt_bytes *)e->value)->data,
                    ((tt_bytes *)e->value)->len);  /* "INT" */
  else if (strcmp(k, "id") == 0 && e->code == TT_ESPILLED)
    push_field_obj(L, e->value);  /* a spill names the store's id */
  else if (strcmp(k, "index") == 0 && e->index > 0)
    lua_pushinteger(L, (lua_Integer)e->index);  /* a batch's item */
  else
    lua_pushnil(L);
  return 1;
}

/* tostring(err) (__tostring of tether.Error): err.message, so that print(err)
** and error(err) read naturally. */
static int err_tostring(lua_State *L) {
  tt_error *e = lt_checkobj(L, 1, &tt_error_type);
  lua_pushstring(L, e->message);
  return 1;
}

/* err .. x, x .. err (__concat of tether.Error): concatenates the tostring of
** both operands, so an error joins strings on either side. */
static int err_concat(lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  luaL_tolstring(L, 2, NULL);
  lua_concat(L, 2);
  return 1;
}

/* tether.error(code [, message [, cause]]) -> err: makes an error object, for
** tasks and causes that want a code of their own.  'code' is the name of an
** error code ('timeout', 'quota_exceeded', ...); any other string gives
** 'failed'.  'message' defaults to 'code'; 'cause' (optional, nil for none) is
** packed now, so each state that reads err.cause gets a copy.  The error is
** immutable and crosses threads by reference.  Raises if 'code' is not a
** string, 'cause' cannot cross, or on a failed allocation. */
static int l_error(lua_State *L) {
  const char *code = luaL_checkstring(L, 1);
  const char *msg = luaL_optstring(L, 2, code);
  tt_obj *cause = NULL;
  tt_error *e;
  int c;
  for (c = 0; c < TT_NERRORS; c++)
    if (strcmp(tt_errname(c), code) == 0) break;
  if (c == TT_NERRORS) c = TT_EFAILED;
  if (!lua_isnoneornil(L, 3)) cause = lt_pack_one(L, 3, "error cause");
  e = tt_error_new(c, msg, cause);
  tt_unref(cause);
  if (e == NULL) return luaL_error(L, "not enough memory");
  lt_pushnew(L, e);
  return 1;
}

/* tether.type(x) -> string | nil: the kind of a tether object, in lower case
** and without its 'tether.' prefix ('context', 'chan', ...); a local cancel
** function, which is no boxed object, answers by its metatable's LT_LIGHT_TYPE
** ('cancelfunc'); nil for any other value.  Raises 'value expected' when called
** with no argument. */
static int l_type(lua_State *L) {
  tt_obj *o = lt_toobj(L, 1);
  const char *n, *dot;
  char buf[64];
  size_t i, len;
  luaL_checkany(L, 1);
  if (o == NULL) {
    if (lua_type(L, 1) != LUA_TUSERDATA ||
        luaL_getmetafield(L, 1, LT_LIGHT_TYPE) != LUA_TSTRING)
      luaL_pushfail(L);
    return 1;
  }
  n = o->type->name;
  dot = strchr(n, '.');
  n = dot != NULL ? dot + 1 : n;
  len = strlen(n);
  if (len >= sizeof buf) len = sizeof buf - 1;
  for (i = 0; i < len; i++)
    buf[i] = (char)((n[i] >= 'A' && n[i] <= 'Z') ? n[i] + 32 : n[i]);
  lua_pushlstring(L, buf, len);
  return 1;
}

/* lt_open_obj registers the tether.Error type and sets tether.error,
** tether.type and the two context errors, tether.canceled and
** tether.deadline_exceeded (one static object each in the process, so ==
** compares them in any state), into the module table on the top of the
** stack. */
void lt_open_obj(lua_State *L) {
  static const luaL_Reg meta[] = {
    {"__index", err_index},
    {"__tostring", err_tostring},
    {"__concat", err_concat},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"error", l_error},
    {"type", l_type},
    {NULL, NULL}
  };
  lt_newtype(L, &tt_error_type, NULL, meta);
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
  lt_pushobj(L, &tt_canceled);
  lua_setfield(L, -2, "canceled");
  lt_pushobj(L, &tt_deadline);
  lua_setfield(L, -2, "deadline_exceeded");
}

/* }==================================================================== */
