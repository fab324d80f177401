/*
** lunpack.c -- unpacking a tether.Value into a state (ltransfer.h has the
** format).
**
** The unpacker trusts nothing in the bytes beyond what they could
** describe: a malformed value raises "corrupt tether.Value" instead of
** reading past its end.  Functions are loaded from their bytecode, once
** per state for those with no upvalues of their own; module names are
** resolved through package.loaded, or require.
*/
#include <stdlib.h>
#include <string.h>

#include "ltransfer.h"

/* An unpacker reads the records of one value into a state. */
typedef struct unpacker {
  lua_State *L;
  const lt_value *v;
  const unsigned char *p, *end;
  int refs;          /* table: id -> table or function (0: none) */
  int nextid;
} unpacker;

/* up_corrupt raises on bytes that are not a well-formed value. */
static _Noreturn void up_corrupt(unpacker *u) {
  luaL_error(u->L, "corrupt tether.Value");
  /* cppcheck-suppress unreachableCode ; tells the compiler, which does not
  ** know that luaL_error never returns, that this function does not */
  abort();
}

/* need takes the next 'n' bytes, raising if fewer are left. */
static const unsigned char *need(unpacker *u, size_t n) {
  const unsigned char *s = u->p;
  if ((size_t)(u->end - u->p) < n) up_corrupt(u);
  u->p += n;
  return s;
}

/* get_byte takes one byte (a tag). */
static int get_byte(unpacker *u) { return *need(u, 1); }

/* get_varint takes a varint. */
static uint64_t get_varint(unpacker *u) {
  uint64_t x;
  size_t k = lt_varint_get(u->p, u->end, &x);
  if (k == 0) up_corrupt(u);
  u->p += k;
  return x;
}

/* get_u32 takes a count written by the packer's put_u32. */
static uint32_t get_u32(unpacker *u) {
  uint32_t x;
  memcpy(&x, need(u, 4), 4);
  return x;
}

static void up_value(unpacker *u);

/* up_register gives the table or function at 'idx' the next id.  A
** value packed flat (lpack.c) says it has none to refer to again
** (nids 0): no table of them is made, and a reference is corrupt. */
static void up_register(unpacker *u, int idx) {
  ++u->nextid;
  if (u->refs == 0) return;
  lua_pushvalue(u->L, idx);
  lua_rawseti(u->L, u->refs, u->nextid);
}

/* up_table unpacks a T_TABLE record (its tag already taken). */
static void up_table(unpacker *u) {
  lua_State *L = u->L;
  uint32_t narr = get_u32(u), count = get_u32(u), i;
  size_t left = (size_t)(u->end - u->p);
  int t;
  /* Each value takes a byte at least, each other entry two: the counts
  ** are never trusted beyond what the bytes left could describe. */
  if (narr > left || narr > INT32_MAX) up_corrupt(u);
  if (count > (left - narr) / 2) count = (uint32_t)((left - narr) / 2);
  luaL_checkstack(L, 6, NULL);
  lua_createtable(L, (int)narr, (int)count);
  t = lua_gettop(L);
  up_register(u, t);
  for (i = 1; i <= narr; i++) {
    /* Integers, the common case of an array, without a call. */
    if (u->end - u->p > 8 && *u->p == T_INT) {
      lua_Integer x;
      memcpy(&x, u->p + 1, sizeof x);
      u->p += 1 + sizeof x;
      lua_pushinteger(L, x);
    } else {
      up_value(u);
    }
    if (lua_isnil(L, -1))
      lua_pop(L, 1);
    else
      lua_rawseti(L, t, (lua_Integer)i);
  }
  while (u->p < u->end && *u->p != T_END) {
    up_value(u);
    up_value(u);
    if (lua_isnil(L, -2)) up_corrupt(u);
    lua_rawset(L, t);
  }
  need(u, 1);
}

/* A reader hands lua_load a whole chunk of bytecode at once. */
typedef struct reader {
  const char *s;
  size_t n;
} reader;

/* rd_read is the lua_Reader of load_code. */
static const char *rd_read(lua_State *L, void *ud, size_t *size) {
  reader *r = ud;
  (void)L;
  *size = r->n;
  r->n = 0;
  return *size != 0 ? r->s : NULL;
}

/* load_code pushes the function loaded from 'code' (binary chunks only),
** raising if it does not load. */
static void load_code(unpacker *u, const char *code, size_t len) {
  reader r;
  r.s = code;
  r.n = len;
  if (lua_load(u->L, rd_read, &r, "=(transfer)", "b") != LUA_OK)
    lua_error(u->L);
}

/* set_up pops a value into upvalue 'i' of the function at 'f' (or just
** pops it when there is no such upvalue). */
static void set_up(lua_State *L, int f, int i) {
  if (lua_setupvalue(L, f, i) == NULL) lua_pop(L, 1);
}

/* up_function unpacks a T_FUNC record (its tag already taken). */
static void up_function(unpacker *u) {
  lua_State *L = u->L;
  int allg = get_byte(u), nup, f, i;
  size_t len = (size_t)get_varint(u);
  const char *code = (const char *)need(u, len);
  nup = get_byte(u);
  luaL_checkstack(L, 8, NULL);
  if (allg) {
    /* A function whose upvalues are all the global table has nothing of
    ** its own: the template loaded once per state serves every task.
    ** The cache holds templates weakly, so unused ones go. */
    int cache;
    lt_push_weak(L, LT_PROTOS_KEY, "v");
    cache = lua_gettop(L);
    lua_pushlstring(L, code, len);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, cache) != LUA_TFUNCTION) {
      lua_pop(L, 1);
      load_code(u, code, len);
      f = lua_gettop(L);
      for (i = 1; i <= nup; i++) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
        set_up(L, f, i);
      }
      lua_pushvalue(L, -2);
      lua_pushvalue(L, f);
      lua_rawset(L, cache);
    }
    lua_replace(L, cache);
    lua_pop(L, 1);
    up_register(u, lua_gettop(L));
    return;
  }
  /* A template is never handed out when a function has upvalues of its
  ** own: it would be shared by every task, so each gets a fresh load. */
  load_code(u, code, len);
  f = lua_gettop(L);
  up_register(u, f);
  for (i = 1; i <= nup; i++) {
    switch (get_byte(u)) {
      case U_GLOBALS:
        lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
        set_up(L, f, i);
        break;
      case U_JOIN: {
        uint64_t x = get_varint(u);
        lua_Integer fid = (lua_Integer)(x >> 8);
        int n = (int)(x & 0xff);
        if (u->refs == 0 || fid < 1 || fid > u->nextid ||
            lua_rawgeti(L, u->refs, fid) != LUA_TFUNCTION ||
            lua_iscfunction(L, -1) || lua_getupvalue(L, -1, n) == NULL)
          up_corrupt(u);
        lua_pop(L, 1);
        lua_upvaluejoin(L, f, i, -1, n);
        lua_pop(L, 1);
        break;
      }
      case U_VALUE:
        up_value(u);
        set_up(L, f, i);
        break;
      default:
        up_corrupt(u);
    }
  }
}

/* up_module resolves "module\0field": package.loaded first, else
** require, then the field. */
static void up_module(unpacker *u) {
  lua_State *L = u->L;
  size_t len = (size_t)get_varint(u), modlen;
  const char *s = (const char *)need(u, len);
  const char *sep = memchr(s, '\0', len);
  if (sep == NULL) up_corrupt(u);
  modlen = (size_t)(sep - s);
  luaL_checkstack(L, 6, NULL);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushlstring(L, s, modlen);
  if (lua_type(L, -2) != LUA_TTABLE || lua_rawget(L, -2) == LUA_TNIL) {
    lua_settop(L, lua_gettop(L) - 1);
    if (lua_getglobal(L, "require") != LUA_TFUNCTION)
      luaL_error(L, "cannot load module '%s': no 'require' in this state",
                 lua_pushlstring(L, s, modlen));
    lua_pushlstring(L, s, modlen);
    lua_call(L, 1, 1);
  }
  lua_remove(L, -2);
  if (len > modlen + 1) {
    lua_pushlstring(L, sep + 1, len - modlen - 1);
    if (lua_gettable(L, -2) == LUA_TNIL) {
      const char *mod = lua_pushlstring(L, s, modlen);
      const char *field = lua_pushlstring(L, sep + 1, len - modlen - 1);
      luaL_error(L, "cannot transfer '%s.%s': module '%s' has no field "
                 "'%s' here", mod, field, mod, field);
    }
    lua_remove(L, -2);
  }
}

/* up_value unpacks one record and pushes its value. */
static void up_value(unpacker *u) {
  lua_State *L = u->L;
  luaL_checkstack(L, 4, NULL);
  switch (get_byte(u)) {
    case T_NIL:
      lua_pushnil(L);
      break;
    case T_FALSE:
      lua_pushboolean(L, 0);
      break;
    case T_TRUE:
      lua_pushboolean(L, 1);
      break;
    case T_INT: {
      lua_Integer i;
      memcpy(&i, need(u, sizeof i), sizeof i);
      lua_pushinteger(L, i);
      break;
    }
    case T_FLT: {
      lua_Number d;
      memcpy(&d, need(u, sizeof d), sizeof d);
      lua_pushnumber(L, d);
      break;
    }
    case T_STR: {
      size_t len = (size_t)get_varint(u);
      lua_pushlstring(L, (const char *)need(u, len), len);
      break;
    }
    case T_TABLE:
      up_table(u);
      break;
    case T_REF: {
      uint64_t id = get_varint(u);
      if (u->refs == 0 || id < 1 || id > (uint64_t)u->nextid)
        up_corrupt(u);
      lua_rawgeti(L, u->refs, (lua_Integer)id);
      break;
    }
    case T_OBJ: {
      uint64_t k = get_varint(u);
      if (k >= u->v->nobjs) up_corrupt(u);
      lt_pushobj(L, u->v->objs[k]);
      break;
    }
    case T_FUNC:
      up_function(u);
      break;
    case T_MOD:
      up_module(u);
      break;
    case T_GLOBALS:
      lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
      break;
    default:
      up_corrupt(u);
  }
}

/* lt_unpack: see ltether.h.  An object that is not a tether.Value (made by a C
** user of the engine) is one value: a tt_bytes is pushed as a Lua string,
** anything else as its userdata.  A tether.Value pushes its 'n' values, with a
** table of ids on the stack meanwhile only when tables or functions in it got
** ids ('nids'), so that a shared table or a cycle comes out shared here too; a
** flat pack has none.  Raises 'too many values to unpack' when the stack cannot
** grow, 'corrupt tether.Value' on malformed bytes, and whatever a require of a
** named module raises. */
int lt_unpack(lua_State *L, tt_obj *o) {
  unpacker u;
  const lt_value *v;
  int i;
  if (o == NULL) return 0;
  if (o->type != &lt_value_type) {
    /* Objects made by C users of the engine: byte strings read as Lua
    ** strings, anything else as its userdata. */
    luaL_checkstack(L, 2, NULL);
    if (o->type == &tt_bytes_type)
      lua_pushlstring(L, ((tt_bytes *)o)->data, ((tt_bytes *)o)->len);
    else
      lt_pushobj(L, o);
    return 1;
  }
  v = (const lt_value *)o;
  luaL_checkstack(L, v->n + 4, "too many values to unpack");
  u.L = L;
  u.v = v;
  u.p = v->buf;
  u.end = v->buf + v->len;
  u.refs = 0;
  u.nextid = 0;
  if (v->nids > 0) {
    lua_createtable(L, v->nids, 0);
    u.refs = lua_gettop(L);
  }
  for (i = 0; i < v->n; i++) up_value(&u);
  if (u.refs != 0) lua_remove(L, u.refs);
  return v->n;
}

/* lt_unpack_one: see ltether.h.  It pushes exactly one value: the first, or nil
** for NULL or an empty value; the others are dropped. */
void lt_unpack_one(lua_State *L, tt_obj *v) {
  int n = lt_unpack(L, v);
  if (n == 0)
    lua_pushnil(L);
  else if (n > 1)
    lua_pop(L, n - 1);
}
