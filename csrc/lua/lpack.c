/*
** lpack.c -- packing Lua values into a tether.Value (ltransfer.h has the
** format, DESIGN section 2 the rules).
**
** Packing runs inside the source state and raises on a value that cannot
** cross, naming the path to it.  The object being built lives in a
** to-be-closed box until it is complete, so a refusal midway (or a memory
** error) frees what was already packed.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ltransfer.h"


/* A path segment says how the packer reached the value it is on, for
** the message of a refusal.  'idx' is a stack index: of the key for
** SEG_FIELD, of the function for SEG_UPVAL (with upvalue number 'n');
** 'n' is the position of a top-level value for SEG_ARG and SEG_RESULT,
** and the integer key of a field of a table's array part for
** SEG_INDEX. */
enum {
  SEG_WHAT, SEG_ARG, SEG_RESULT, SEG_FIELD, SEG_INDEX, SEG_KEY, SEG_UPVAL
};

typedef struct seg {
  int kind;
  int idx;
  int n;
} seg;

/* A packer is the state of one pack: the value being built, the table of
** values already met, and the path from the top-level value to the one
** being packed. */
typedef struct packer {
  lua_State *L;
  lt_value *v;
  const char *what;
  int base;          /* the stack top before packing began */
  int seen;          /* table: value -> id (or -(k+1) for objs[k]) */
  lt_names names;    /* the map of module names, looked up lazily */
  int depth;
  seg path[LT_MAXDEPTH + 2];
} packer;

/* pk_nomem raises the memory error of a failed allocation. */
static _Noreturn void pk_nomem(packer *p) {
  luaL_error(p->L, "not enough memory");
  /* cppcheck-suppress unreachableCode ; tells the compiler, which does not
  ** know that luaL_error never returns, that this function does not */
  abort();
}

/* pk_realloc makes room for 'need' more bytes in the value's buffer,
** doubling it; pk_grow calls it only when there is not room already. */
static void pk_realloc(packer *p, size_t need) {
  lt_value *v = p->v;
  size_t cap;
  unsigned char *nb;
  cap = v->cap != 0 ? v->cap : 64;
  while (cap - v->len < need) {
    if (cap > SIZE_MAX / 2) pk_nomem(p);
    cap *= 2;
  }
  nb = realloc(v->buf, cap);
  if (nb == NULL) pk_nomem(p);
  v->buf = nb;
  v->cap = cap;
}

static inline void pk_grow(packer *p, size_t need) {
  if (p->v->cap - p->v->len < need) pk_realloc(p, need);
}

/* put appends 'n' bytes. */
static void put(packer *p, const void *data, size_t n) {
  pk_grow(p, n);
  memcpy(p->v->buf + p->v->len, data, n);
  p->v->len += n;
}

/* put_byte appends one byte (a tag). */
static void put_byte(packer *p, int c) {
  unsigned char b = (unsigned char)c;
  put(p, &b, 1);
}

/* put_varint appends 'x' as a varint. */
static void put_varint(packer *p, uint64_t x) {
  unsigned char tmp[LT_VARINT_MAX];
  size_t n = lt_varint_put(tmp, x);
  put(p, tmp, n);
}

/* put_u32 writes 'x' (saturated) at offset 'at', in room reserved before:
** the counts of a table, known only once it is written. */
static void put_u32(packer *p, size_t at, size_t x) {
  uint32_t u = x > UINT32_MAX ? UINT32_MAX : (uint32_t)x;
  memcpy(p->v->buf + at, &u, sizeof u);
}

/* push_seg enters one level of the path. */
static void push_seg(packer *p, int kind, int idx, int n) {
  seg *s = &p->path[p->depth++];
  s->kind = kind;
  s->idx = idx;
  s->n = n;
}

/* push_seg_text pushes the words for one segment of a path. */
static void push_seg_text(packer *p, const seg *s) {
  lua_State *L = p->L;
  switch (s->kind) {
    case SEG_WHAT:
      lua_pushstring(L, p->what);
      break;
    case SEG_ARG:
      lua_pushfstring(L, "argument #%d of %s", s->n, p->what);
      break;
    case SEG_RESULT:
      lua_pushfstring(L, "result #%d of %s", s->n, p->what);
      break;
    case SEG_KEY:
      lua_pushliteral(L, "a key");
      break;
    case SEG_INDEX:
      lua_pushfstring(L, "field [%d]", s->n);
      break;
    case SEG_UPVAL: {
      const char *name = lua_getupvalue(L, s->idx, s->n);
      if (name != NULL && *name != '\0') {
        lua_pop(L, 1);
        lua_pushfstring(L, "upvalue '%s'", name);
      } else {
        lua_settop(L, lua_gettop(L) - (name != NULL));
        lua_pushfstring(L, "upvalue #%d", s->n);
      }
      break;
    }
    default:  /* SEG_FIELD */
      switch (lua_type(L, s->idx)) {
        case LUA_TSTRING:
          lua_pushfstring(L, "field '%s'", lua_tostring(L, s->idx));
          break;
        case LUA_TNUMBER:
        case LUA_TBOOLEAN:
          luaL_tolstring(L, s->idx, NULL);
          lua_pushfstring(L, "field [%s]", lua_tostring(L, -1));
          lua_remove(L, -2);
          break;
        default:
          lua_pushfstring(L, "field [%s]", luaL_typename(L, s->idx));
          break;
      }
      break;
  }
}

/* refuse raises "cannot transfer <path> (<why>)", the path read from the
** innermost segment out; with 'root_only' it names just the top-level
** value (a path 200 levels long helps nobody). */
static _Noreturn void refuse(packer *p, const char *why, bool root_only) {
  lua_State *L = p->L;
  int i, parts = 0;
  luaL_checkstack(L, 2 * p->depth + 8, NULL);
  lua_pushliteral(L, "cannot transfer ");
  parts++;
  for (i = root_only ? 0 : p->depth - 1; i >= 0; i--) {
    push_seg_text(p, &p->path[i]);
    parts++;
    if (i > 0) {
      lua_pushliteral(L, " of ");
      parts++;
    }
  }
  lua_pushfstring(L, " (%s)", why);
  lua_concat(L, parts + 1);
  lua_error(L);
  /* cppcheck-suppress unreachableCode ; as in pk_nomem */
  abort();
}

static void pk_value(packer *p, int idx);

/* pk_seen returns the id recorded for the value at 'idx', or 0. */
static lua_Integer pk_seen(packer *p, int idx) {
  lua_State *L = p->L;
  lua_Integer id;
  lua_pushvalue(L, idx);
  lua_rawget(L, p->seen);
  id = lua_tointeger(L, -1);
  lua_pop(L, 1);
  return id;
}

/* pk_mark records 'id' for the value at 'idx'. */
static void pk_mark(packer *p, int idx, lua_Integer id) {
  lua_State *L = p->L;
  lua_pushvalue(L, idx);
  lua_pushinteger(L, id);
  lua_rawset(L, p->seen);
}

/* pk_named packs the value at 'idx' by name if it has one, and says so. */
static bool pk_named(packer *p, int idx) {
  size_t len;
  const char *s = lt_name_of(p->L, &p->names, idx, &len);
  if (s == NULL) return false;
  put_byte(p, T_MOD);
  put_varint(p, len);
  put(p, s, len);
  lua_pop(p->L, 1);
  return true;
}

/* pk_depth refuses a value nested deeper than LT_MAXDEPTH, naming only
** the top-level value. */
static void pk_depth(packer *p) {
  if (p->depth > LT_MAXDEPTH) {
    char why[64];
    snprintf(why, sizeof why, "nested more than %d levels deep",
             LT_MAXDEPTH);
    refuse(p, why, true);
  }
}

/* pk_scalar packs the value at 'idx' if it is a scalar (nil, a boolean,
** a number, a string) and says whether it was: the inline form of
** pk_value for the elements of tables. */
static bool pk_scalar(packer *p, int idx) {
  lua_State *L = p->L;
  lt_value *v = p->v;
  unsigned char *b;
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      put_byte(p, T_NIL);
      return true;
    case LUA_TBOOLEAN:
      put_byte(p, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
      return true;
    case LUA_TNUMBER:
      pk_grow(p, 1 + 8);
      b = v->buf + v->len;
      if (lua_isinteger(L, idx)) {
        lua_Integer x = lua_tointeger(L, idx);
        b[0] = T_INT;
        memcpy(b + 1, &x, sizeof x);
      } else {
        lua_Number x = lua_tonumber(L, idx);
        b[0] = T_FLT;
        memcpy(b + 1, &x, sizeof x);
      }
      v->len += 1 + 8;
      return true;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      pk_grow(p, 1 + LT_VARINT_MAX + len);
      b = v->buf + v->len;
      b[0] = T_STR;
      v->len += 1 + lt_varint_put(b + 1, len);
      memcpy(v->buf + v->len, s, len);
      v->len += len;
      return true;
    }
    default:
      return false;
  }
}

/* pk_table packs the table at 'idx': the global table as itself, a table
** met before as a reference, a module's by name, a plain one as a deep
** copy; a table with a metatable is refused. */
static void pk_table(packer *p, int idx) {
  lua_State *L = p->L;
  lua_Integer id;
  size_t at, count = 0, narr = 0;
  if (lt_is_globals(L, idx)) {
    put_byte(p, T_GLOBALS);
    return;
  }
  if ((id = pk_seen(p, idx)) > 0) {
    put_byte(p, T_REF);
    put_varint(p, (uint64_t)id);
    return;
  }
  if (pk_named(p, idx)) return;
  if (lua_getmetatable(L, idx)) {
    lua_pop(L, 1);
    refuse(p, "table with a metatable", false);
  }
  pk_depth(p);
  id = ++p->v->nids;
  pk_mark(p, idx, id);
  put_byte(p, T_TABLE);
  at = p->v->len;
  pk_grow(p, 8);
  p->v->len += 8;
  /* One traversal.  It meets the array part first, in order: as long as
  ** the keys are 1, 2, 3, ... their values are written by position, with
  ** no keys (and scalars inline); from the first other key on (a hole
  ** ends the run), every entry is written whole.  Each key comes once,
  ** so none of the entries after the run has a key within it. */
  luaL_checkstack(L, 10, NULL);
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    int k = lua_gettop(L) - 1;
    if (count == 0 && lua_isinteger(L, k) &&
        lua_tointeger(L, k) == (lua_Integer)narr + 1 && narr < INT32_MAX) {
      narr++;
      if (!pk_scalar(p, k + 1)) {
        push_seg(p, SEG_INDEX, 0, (int)narr);
        pk_value(p, k + 1);
        p->depth--;
      }
      lua_pop(L, 1);
      continue;
    }
    push_seg(p, SEG_KEY, k, 0);
    pk_value(p, k);
    p->depth--;
    push_seg(p, SEG_FIELD, k, 0);
    pk_value(p, k + 1);
    p->depth--;
    lua_pop(L, 1);
    count++;
  }
  put_byte(p, T_END);
  put_u32(p, at, narr);
  put_u32(p, at + 4, count);
}

/* A dumper collects lua_dump's output in a luaL_Buffer that it opens on
** the first write, after lua_dump has read the function off the top
** (lstrlib's str_dump does the same). */
typedef struct dumper {
  bool init;
  luaL_Buffer b;
} dumper;

/* dump_writer is the lua_Writer of push_dump. */
static int dump_writer(lua_State *L, const void *b, size_t size, void *ud) {
  dumper *d = ud;
  if (!d->init) {
    d->init = true;
    luaL_buffinit(L, &d->b);
  }
  luaL_addlstring(&d->b, b, size);
  return 0;
}

/* push_dump pushes the bytecode of the Lua function at 'idx', from this
** state's cache when that closure was dumped before.  Debug information
** is kept: tracebacks and upvalue names need it. */
static void push_dump(lua_State *L, int idx) {
  dumper d;
  luaL_checkstack(L, 6, NULL);
  lt_push_weak(L, LT_DUMPS_KEY, "k");
  lua_pushvalue(L, idx);
  if (lua_rawget(L, -2) == LUA_TSTRING) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  d.init = false;
  if (lua_dump(L, dump_writer, &d, 0) != 0)
    luaL_error(L, "unable to dump given function");
  if (d.init)
    luaL_pushresult(&d.b);
  else
    lua_pushliteral(L, "");
  lua_remove(L, -2);                  /* the function copy */
  lua_pushvalue(L, idx);
  lua_pushvalue(L, -2);
  lua_rawset(L, -4);                  /* cache[f] = code */
  lua_remove(L, -2);                  /* the cache */
}

/* binds_globals says whether upvalue 'name' of a function, whose value is
** at 'v', is to be bound to the destination's global table rather than
** copied: the global table itself, and an _ENV that is a table with a
** metatable, an environment layered over the globals (as busted and many
** sandboxes make: it could not cross anyway).  A plain table as _ENV is
** copied like any upvalue, so that a function loaded into a sandbox with
** load(code, name, "t", env) stays in its sandbox on the other side. */
static bool binds_globals(lua_State *L, const char *name, int v) {
  bool r;
  if (lt_is_globals(L, v)) return true;
  if (strcmp(name, "_ENV") != 0 || lua_type(L, v) != LUA_TTABLE)
    return false;
  r = lua_getmetatable(L, v) != 0;
  if (r) lua_pop(L, 1);
  return r;
}

/* pk_function packs the function at 'idx': by name if it has one, else a
** Lua function as its bytecode and upvalues (none when all of them are
** the global table); a C function is refused. */
static void pk_function(packer *p, int idx) {
  lua_State *L = p->L;
  lua_Integer id;
  int nup, i;
  bool allg = true;
  size_t len;
  const char *code;
  if ((id = pk_seen(p, idx)) > 0) {
    put_byte(p, T_REF);
    put_varint(p, (uint64_t)id);
    return;
  }
  /* By name before anything else: a module's function may hold upvalues
  ** that could never cross (a C function's, a file handle). */
  if (pk_named(p, idx)) return;
  if (lua_iscfunction(L, idx)) refuse(p, "C function", false);
  pk_depth(p);
  id = ++p->v->nids;
  pk_mark(p, idx, id);
  for (nup = 0; ; nup++) {
    const char *name = lua_getupvalue(L, idx, nup + 1);
    if (name == NULL) break;
    if (!binds_globals(L, name, lua_gettop(L))) allg = false;
    lua_pop(L, 1);
  }
  push_dump(L, idx);
  code = lua_tolstring(L, -1, &len);
  put_byte(p, T_FUNC);
  put_byte(p, allg);
  put_varint(p, len);
  put(p, code, len);
  put_byte(p, nup);
  lua_pop(L, 1);
  if (allg) return;
  for (i = 1; i <= nup; i++) {
    const char *name = lua_getupvalue(L, idx, i);
    if (binds_globals(L, name, lua_gettop(L))) {
      put_byte(p, U_GLOBALS);
    } else {
      /* Two closures that share a local share its cell after the
      ** transfer too (a counter and its reader). */
      lua_pushlightuserdata(L, lua_upvalueid(L, idx, i));
      lua_pushvalue(L, -1);
      if (lua_rawget(L, p->seen) == LUA_TNUMBER) {
        put_byte(p, U_JOIN);
        put_varint(p, (uint64_t)lua_tointeger(L, -1));
        lua_pop(L, 2);
      } else {
        lua_pop(L, 1);
        lua_pushinteger(L, id * 256 + i);
        lua_rawset(L, p->seen);
        put_byte(p, U_VALUE);
        push_seg(p, SEG_UPVAL, idx, i);
        pk_value(p, lua_gettop(L));
        p->depth--;
      }
    }
    lua_pop(L, 1);
  }
}

/* pk_userdata packs the userdata at 'idx': an engine object by
** reference, one found in package.loaded by name; any other is refused. */
static void pk_userdata(packer *p, int idx) {
  lua_State *L = p->L;
  lua_Integer id;
  tt_obj *o = lt_toobj(L, idx);
  bool light = false;
  if (o == NULL && (id = pk_seen(p, idx)) < 0) {
    /* A light value met before in this pack: its object is there. */
    put_byte(p, T_OBJ);
    put_varint(p, (uint64_t)(-id - 1));
    return;
  }
  if (o == NULL) light = (o = lt_light_obj(L, idx)) != NULL;
  if (o != NULL) {
    lt_value *v = p->v;
    const char *stays = lt_saga_stays(o);
    if (stays != NULL) {
      if (light) tt_unref(o);
      refuse(p, stays, false);
    }
    if (!light && (id = pk_seen(p, idx)) < 0) {
      put_byte(p, T_OBJ);
      put_varint(p, (uint64_t)(-id - 1));
      return;
    }
    if (v->nobjs == v->objcap) {
      size_t cap = v->objcap != 0 ? v->objcap * 2 : 4;
      tt_obj **no = realloc(v->objs, cap * sizeof *no);
      if (no == NULL) {
        if (light) tt_unref(o);
        pk_nomem(p);
      }
      v->objs = no;
      v->objcap = cap;
    }
    /* Stored as soon as taken: the value owns the reference even if an
    ** error comes next (a light value's object is a new one). */
    v->objs[v->nobjs++] = light ? o : tt_ref(o);
    put_byte(p, T_OBJ);
    put_varint(p, v->nobjs - 1);
    pk_mark(p, idx, -(lua_Integer)v->nobjs);
    return;
  }
  if (pk_named(p, idx)) return;
  refuse(p, "userdata", false);
}

/* pk_value packs the value at 'idx', whatever its type. */
static void pk_value(packer *p, int idx) {
  lua_State *L = p->L;
  luaL_checkstack(L, 8, NULL);
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      put_byte(p, T_NIL);
      break;
    case LUA_TBOOLEAN:
      put_byte(p, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
      break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        lua_Integer i = lua_tointeger(L, idx);
        put_byte(p, T_INT);
        put(p, &i, sizeof i);
      } else {
        lua_Number d = lua_tonumber(L, idx);
        put_byte(p, T_FLT);
        put(p, &d, sizeof d);
      }
      break;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      put_byte(p, T_STR);
      put_varint(p, len);
      put(p, s, len);
      break;
    }
    case LUA_TTABLE:
      pk_table(p, idx);
      break;
    case LUA_TFUNCTION:
      pk_function(p, idx);
      break;
    case LUA_TUSERDATA:
      pk_userdata(p, idx);
      break;
    case LUA_TLIGHTUSERDATA:
      refuse(p, "light userdata", false);
      break;
    default:
      refuse(p, luaL_typename(L, idx), false);
      break;
  }
}

/* {====================================================================
** The flat path
** ===================================================================== */

/* A flat pack is one whose values are all scalars (nil, booleans,
** numbers, strings), except maybe a Lua function first whose upvalues
** are scalars or the global table, which has no name and whose bytecode
** this state has dumped before: most task calls and most results.  It
** needs none of the general packer's machinery (the box, the table of
** values seen, the path for messages) and makes no Lua allocation: it is
** written straight into a value object, and anything else sends the
** caller to the general packer, which starts over. */

/* A flat buffer grows with malloc; 'nomem' once an allocation failed. */
typedef struct flatbuf {
  unsigned char *buf;
  size_t len, cap;
  bool nomem;
} flatbuf;

/* fb_put appends 'n' bytes, doubling the buffer as needed.  It never
** raises, since the buffer and the value are malloc'd memory no Lua error
** would free: a failed allocation (or a size that would overflow) sets
** 'nomem', later puts do nothing, and pk_flat frees both before it raises
** the memory error.  fb_byte and fb_varint append a byte (a tag) and a
** varint. */
static void fb_put(flatbuf *b, const void *data, size_t n) {
  if (b->nomem) return;
  if (b->cap - b->len < n) {
    size_t cap = b->cap != 0 ? b->cap : 64;
    unsigned char *nb;
    while (cap - b->len < n) {
      if (cap > SIZE_MAX / 2) {
        b->nomem = true;
        return;
      }
      cap *= 2;
    }
    nb = realloc(b->buf, cap);
    if (nb == NULL) {
      b->nomem = true;
      return;
    }
    b->buf = nb;
    b->cap = cap;
  }
  memcpy(b->buf + b->len, data, n);
  b->len += n;
}

static void fb_byte(flatbuf *b, int c) {
  unsigned char x = (unsigned char)c;
  fb_put(b, &x, 1);
}

static void fb_varint(flatbuf *b, uint64_t x) {
  unsigned char tmp[LT_VARINT_MAX];
  fb_put(b, tmp, lt_varint_put(tmp, x));
}

/* is_scalar says whether the value at 'idx' crosses flat. */
static bool is_scalar(lua_State *L, int idx) {
  int t = lua_type(L, idx);
  return t == LUA_TNIL || t == LUA_TBOOLEAN || t == LUA_TNUMBER ||
         t == LUA_TSTRING;
}

/* fb_scalar writes the scalar at 'idx' as pk_value would. */
static void fb_scalar(lua_State *L, flatbuf *b, int idx) {
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      fb_byte(b, T_NIL);
      break;
    case LUA_TBOOLEAN:
      fb_byte(b, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
      break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        lua_Integer i = lua_tointeger(L, idx);
        fb_byte(b, T_INT);
        fb_put(b, &i, sizeof i);
      } else {
        lua_Number d = lua_tonumber(L, idx);
        fb_byte(b, T_FLT);
        fb_put(b, &d, sizeof d);
      }
      break;
    default: {  /* a string */
      size_t len;
      const char *str = lua_tolstring(L, idx, &len);
      fb_byte(b, T_STR);
      fb_varint(b, len);
      fb_put(b, str, len);
      break;
    }
  }
}

/* flat_function checks that the function at 'fn' crosses flat; it then
** leaves its bytecode on the stack and sets '*nup' and '*allg', else
** leaves the stack as it was and returns false. */
static bool flat_function(lua_State *L, int fn, int *nup, bool *allg) {
  lt_names names;
  size_t len;
  int top = lua_gettop(L), i;
  if (lua_type(L, fn) != LUA_TFUNCTION || lua_iscfunction(L, fn))
    return false;
  *allg = true;
  for (i = 1;; i++) {
    const char *name = lua_getupvalue(L, fn, i);
    if (name == NULL) break;
    if (!binds_globals(L, name, lua_gettop(L))) {
      *allg = false;
      if (!is_scalar(L, -1)) {
        lua_settop(L, top);
        return false;
      }
    }
    lua_pop(L, 1);
  }
  *nup = i - 1;
  if (*nup > 255) return false;
  /* A function with a name crosses by its name. */
  lt_names_init(L, &names);
  if (lt_name_of(L, &names, fn, &len) != NULL) {
    lua_settop(L, top);
    return false;
  }
  lua_settop(L, top);
  /* Only bytecode dumped before: a dump allocates, which may raise. */
  lt_push_weak(L, LT_DUMPS_KEY, "k");
  lua_pushvalue(L, fn);
  if (lua_rawget(L, -2) != LUA_TSTRING) {
    lua_settop(L, top);
    return false;
  }
  lua_remove(L, -2);
  return true;
}

/* pk_flat packs the function at 'fn' (0: none) and the 'n' values at
** first.. flat, or returns NULL when they do not cross flat.  Everything
** that may raise comes before the value's first allocation. */
static tt_obj *pk_flat(lua_State *L, int fn, int first, int n) {
  flatbuf b = {NULL, 0, 0, false};
  lt_value *v;
  int i, nup = 0, top = lua_gettop(L);
  bool allg = true;
  luaL_checkstack(L, 12, NULL);
  for (i = 0; i < n; i++)
    if (!is_scalar(L, first + i)) return NULL;
  if (fn != 0 && !flat_function(L, fn, &nup, &allg)) return NULL;
  v = malloc(sizeof *v);
  if (v == NULL) goto nomem;
  if (fn != 0) {
    size_t len;
    const char *code = lua_tolstring(L, -1, &len);
    fb_byte(&b, T_FUNC);
    fb_byte(&b, allg);
    fb_varint(&b, len);
    fb_put(&b, code, len);
    fb_byte(&b, nup);
    if (!allg) {
      for (i = 1; i <= nup; i++) {
        const char *name = lua_getupvalue(L, fn, i);
        if (binds_globals(L, name, lua_gettop(L))) {
          fb_byte(&b, U_GLOBALS);
        } else {
          fb_byte(&b, U_VALUE);
          fb_scalar(L, &b, lua_gettop(L));
        }
        lua_pop(L, 1);
      }
    }
  }
  for (i = 0; i < n; i++) fb_scalar(L, &b, first + i);
  lua_settop(L, top);
  if (b.nomem) goto nomem;
  tt_obj_init(&v->hdr, &lt_value_type);
  v->n = n + (fn != 0);
  v->nids = 0;  /* nothing in it is referred to again */
  v->buf = b.buf;
  v->len = b.len;
  v->cap = b.cap;
  v->objs = NULL;
  v->nobjs = v->objcap = 0;
  return &v->hdr;
nomem:
  free(b.buf);
  free(v);
  lua_settop(L, top);
  luaL_error(L, "not enough memory");
  return NULL;
}

/* }==================================================================== */


/* pk_begin sets the stack up for packing: the box that owns the value
** while it is built, the table of values seen, the slot of the map of
** module names. */
static void pk_begin(lua_State *L, packer *p, const char *what) {
  lt_box *b;
  lt_value *v;
  p->L = L;
  p->what = what != NULL ? what : "value";
  p->base = lua_gettop(L);
  p->depth = 0;
  b = lt_push_box(L);
  v = calloc(1, sizeof *v);
  if (v == NULL) luaL_error(L, "not enough memory");
  tt_obj_init(&v->hdr, &lt_value_type);
  b->v = v;
  p->v = v;
  lua_newtable(L);
  p->seen = lua_gettop(L);
  lt_names_init(L, &p->names);
}

/* pk_root packs one top-level value; 'kind' and 'n' say how a refusal
** names it. */
static void pk_root(packer *p, int idx, int kind, int n) {
  push_seg(p, kind, idx, n);
  pk_value(p, idx);
  p->depth--;
  p->v->n++;
}

/* pk_end takes the finished value out of its box and restores the
** stack (closing the now empty box). */
static tt_obj *pk_end(packer *p) {
  lua_State *L = p->L;
  lt_box *b = lua_touserdata(L, p->base + 1);
  lt_value *v = b->v;
  b->v = NULL;
  if (v->cap > v->len + 256) {
    unsigned char *nb = realloc(v->buf, v->len);
    if (nb != NULL) {
      v->buf = nb;
      v->cap = v->len;
    }
  }
  /* Close the box's slot on its own before lowering the top: Lua 5.4.4's
  ** lua_settop keeps a stale stack pointer when a __close handler it runs
  ** reallocates the stack (fixed in 5.4.5); lua_closeslot does not. */
  lua_closeslot(L, p->base + 1);
  lua_settop(L, p->base);
  return &v->hdr;
}

/* lt_pack: see ltether.h (each top-level value is "argument #i").  The flat
** pack (pk_flat) is tried first; the general packer runs only when it declines,
** and starts over. */
tt_obj *lt_pack(lua_State *L, int first, int n, const char *what) {
  packer p;
  tt_obj *o;
  int i;
  first = lua_absindex(L, first);
  if ((o = pk_flat(L, 0, first, n)) != NULL) return o;
  pk_begin(L, &p, what);
  for (i = 0; i < n; i++) pk_root(&p, first + i, SEG_ARG, i + 1);
  return pk_end(&p);
}

/* lt_pack_one: see ltether.h (the value is named by 'what' itself).  The flat
** pack (pk_flat) is tried first; the general packer runs only when it declines,
** and starts over. */
tt_obj *lt_pack_one(lua_State *L, int idx, const char *what) {
  packer p;
  tt_obj *o;
  idx = lua_absindex(L, idx);
  if ((o = pk_flat(L, 0, idx, 1)) != NULL) return o;
  pk_begin(L, &p, what);
  pk_root(&p, idx, SEG_WHAT, 0);
  return pk_end(&p);
}

/* lt_pack_call: see ltether.h (the function first, then its arguments).  The
** flat pack (pk_flat) is tried first; the general packer runs only when it
** declines, and starts over. */
tt_obj *lt_pack_call(lua_State *L, int fn_idx, int first, int n,
                     const char *what) {
  packer p;
  tt_obj *o;
  int i;
  fn_idx = lua_absindex(L, fn_idx);
  first = lua_absindex(L, first);
  if ((o = pk_flat(L, fn_idx, first, n)) != NULL) return o;
  pk_begin(L, &p, what);
  pk_root(&p, fn_idx, SEG_WHAT, 0);
  for (i = 0; i < n; i++) pk_root(&p, first + i, SEG_ARG, i + 1);
  return pk_end(&p);
}

/* lt_pack_results: see ltether.h (each value is "result #i").  The flat pack
** (pk_flat) is tried first; the general packer runs only when it declines, and
** starts over. */
tt_obj *lt_pack_results(lua_State *L, int first, int n, const char *what) {
  packer p;
  tt_obj *o;
  int i;
  first = lua_absindex(L, first);
  if ((o = pk_flat(L, 0, first, n)) != NULL) return o;
  pk_begin(L, &p, what);
  for (i = 0; i < n; i++) pk_root(&p, first + i, SEG_RESULT, i + 1);
  return pk_end(&p);
}
