/*
** lvalue.c -- the packed value object ("tether.Value") and the helpers
** the packer and the unpacker share (ltransfer.h has the format).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ltransfer.h"

#define BOX_T "tether.transfer.box"

/* {====================================================================
** The value object
** ===================================================================== */

/* value_free drops the references the value holds and frees it (the
** engine calls it when the last reference goes). */
static void value_free(tt_obj *o) {
  lt_value *v = (lt_value *)o;
  size_t i;
  for (i = 0; i < v->nobjs; i++) tt_unref(v->objs[i]);
  free(v->objs);
  free(v->buf);
  free(v);
}

/* value_describe shows a lone string or number as itself, so that the
** engine can name a tenant (a context value) or log a cause without Lua;
** anything else is described by its shape. */
static int value_describe(tt_obj *o, char *buf, size_t n) {
  lt_value *v = (lt_value *)o;
  if (v->n == 1 && v->len > 0) {
    const unsigned char *b = v->buf;
    if (b[0] == T_STR) {
      uint64_t len = 0;
      size_t k = lt_varint_get(b + 1, b + v->len, &len);
      size_t i = 1 + k;
      if (k != 0 && i + len == v->len)
        return snprintf(buf, n, "%.*s", (int)(len > 4096 ? 4096 : len),
                        (const char *)b + i);
    } else if (b[0] == T_INT && v->len == 1 + sizeof(lua_Integer)) {
      lua_Integer x;
      memcpy(&x, b + 1, sizeof x);
      return snprintf(buf, n, LUA_INTEGER_FMT, x);
    } else if (b[0] == T_FLT && v->len == 1 + sizeof(lua_Number)) {
      lua_Number x;
      memcpy(&x, b + 1, sizeof x);
      return snprintf(buf, n, LUA_NUMBER_FMT, x);
    }
  }
  return snprintf(buf, n, "tether.Value (%d values, %zu bytes): %p", v->n,
                  v->len, (void *)v);
}

/* value_traverse visits the engine objects a packed value carries (fixed
** once packed), so that sends can refuse reference cycles. */
static void value_traverse(tt_obj *o, tt_visit visit, void *ud) {
  lt_value *v = (lt_value *)o;
  size_t i;
  for (i = 0; i < v->nobjs; i++) visit(v->objs[i], ud);
}

const tt_type lt_value_type = {"tether.Value", value_free, value_describe,
                               value_traverse};

/* lt_value_from_bytes makes a value from records written in C (lrecord.c)
** without a Lua state: a copy of the bytes, no engine objects. */
tt_obj *lt_value_from_bytes(const void *buf, size_t len, int n, int nids) {
  lt_value *v = calloc(1, sizeof *v);
  if (v == NULL) return NULL;
  tt_obj_init(&v->hdr, &lt_value_type);
  v->buf = malloc(len > 0 ? len : 1);
  if (v->buf == NULL) {
    free(v);
    return NULL;
  }
  memcpy(v->buf, buf, len);
  v->len = v->cap = len;
  v->n = n;
  v->nids = nids;
  return &v->hdr;
}

/* }==================================================================== */


/* {====================================================================
** Boxes and registry tables
** ===================================================================== */

/* box:__close() and box:__gc(): drops the packed value still inside a
** transfer box, if any, and leaves the box empty, so that an error
** raised while a value is being packed or unpacked (the box is a
** to-be-closed variable of that call) cannot leak it, and a second call
** does nothing.  Boxes are internal: no script holds one. */
static int box_close(lua_State *L) {
  lt_box *b = luaL_testudata(L, 1, BOX_T);
  if (b != NULL && b->v != NULL) {
    lt_value *v = b->v;
    b->v = NULL;
    tt_unref(v);
  }
  return 0;
}

/* lt_push_box: see ltransfer.h.  The metatable is made on first use in
** each state. */
lt_box *lt_push_box(lua_State *L) {
  lt_box *b;
  luaL_checkstack(L, 4, NULL);
  b = lua_newuserdatauv(L, sizeof *b, 0);
  b->v = NULL;
  if (luaL_newmetatable(L, BOX_T)) {
    lua_pushcfunction(L, box_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, box_close);
    lua_setfield(L, -2, "__close");
  }
  lua_setmetatable(L, -2);
  lua_toclose(L, -1);
  return b;
}

/* lt_is_globals: see ltransfer.h. */
bool lt_is_globals(lua_State *L, int idx) {
  bool r;
  idx = lua_absindex(L, idx);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  r = lua_rawequal(L, -1, idx);
  lua_pop(L, 1);
  return r;
}

/* lt_push_weak: see ltransfer.h. */
void lt_push_weak(lua_State *L, const char *key, const char *mode) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushstring(L, mode);
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, key);
}

/* lt_open_value registers the metatable of tether.Value in this state, so
** that a packed value held by a Lua userdata (a context's value, an error's
** cause) can be pushed as one. */
void lt_open_value(lua_State *L) {
  lt_newtype(L, &lt_value_type, NULL, NULL);
  lua_pop(L, 1);
}

/* }==================================================================== */
