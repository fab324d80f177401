/*
** ltransfer.c -- moving Lua values from one lua_State to another
** (DESIGN section 2).
**
** A packed value ("tether.Value") is a byte string in a small format of
** our own plus an array of engine objects it holds references to.  It
** never points into the state it came from, so any thread may unpack it
** into any state, any number of times, while the source goes on.
**
** The format is a sequence of tagged records, one per top-level value:
**
**   T_NIL, T_FALSE, T_TRUE
**   T_INT  <8 bytes lua_Integer>        T_FLT  <8 bytes lua_Number>
**   T_STR  <varint len> <bytes>
**   T_TABLE <u32 array hint> <u32 entry count> (key value)* T_END
**   T_REF  <varint id>       a table or function seen before (shared
**                            references and cycles)
**   T_OBJ  <varint k>        objs[k], an engine object shared by reference
**   T_FUNC <allg> <varint len> <bytecode> <nup> upvalue*
**   T_MOD  <varint len> <module name> '\0' <field name>
**   T_GLOBALS                the destination's global table
**
** Tables and functions get ids 1, 2, ... in the order the packer meets
** them, and the unpacker numbers them in the same order, so a T_REF needs
** no table of its own.  An upvalue of a function is U_GLOBALS, U_VALUE
** followed by a value, or U_JOIN <varint id * 256 + n>: the same upvalue
** cell as upvalue n of function id, met earlier in this value.  When
** every upvalue is the global table ('allg'), none is written.
**
** What crosses how: scalars and strings by value; plain tables as deep
** copies; engine objects by reference; values found in package.loaded
** (looked up before anything else) by name; Lua functions as bytecode
** plus upvalues, with _ENV bound to the destination's globals; nothing
** else.
**
** Packing runs inside the source state and raises on a value that cannot
** cross.  The object being built lives in a to-be-closed userdata until it
** is complete, so a refusal midway (or a memory error) frees what was
** already packed.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "ltether.h"
#include "lworker.h"

/* LT_MAXDEPTH bounds the nesting of tables and functions in one value, so
** that packing a deep structure fails with a message instead of
** overflowing the C stack. */
#define LT_MAXDEPTH 200

/* Registry keys of the tables this file keeps in each state. */
#define BOX_T "tether.transfer.box"
#define DUMPS_KEY "tether.transfer.dumps"   /* closure -> bytecode */
#define PROTOS_KEY "tether.transfer.protos" /* bytecode -> template */
#define NAMES_KEY "tether.transfer.names"   /* value -> "mod\0field" */
#define NAMESFP_KEY "tether.transfer.namesfp"

/* What transfer_roundtrip calls the values it carries. */
#define RT_WHAT "'transfer_roundtrip'"

enum {
  T_NIL, T_FALSE, T_TRUE, T_INT, T_FLT, T_STR, T_TABLE, T_END, T_REF,
  T_OBJ, T_FUNC, T_MOD, T_GLOBALS
};

enum { U_GLOBALS, U_VALUE, U_JOIN };


/* {====================================================================
** The value object
** ===================================================================== */

typedef struct lt_value {
  tt_obj hdr;
  int n;                 /* top-level values */
  int nids;              /* tables and functions that got an id */
  unsigned char *buf;    /* the records */
  size_t len, cap;
  tt_obj **objs;         /* engine objects, one reference each */
  size_t nobjs, objcap;
} lt_value;

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
      size_t i = 1;
      int shift = 0;
      while (i < v->len && shift < 64) {
        len |= (uint64_t)(b[i] & 0x7f) << shift;
        shift += 7;
        if (!(b[i++] & 0x80)) break;
      }
      if (i + len == v->len)
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

const tt_type lt_value_type = {"tether.Value", value_free, value_describe};

/* A box is a Lua-owned handle on a value being built (or carried between
** states by transfer_roundtrip): closing or collecting it drops the value
** unless the owner took it out first. */
typedef struct box {
  lt_value *v;
} box;

static int box_close(lua_State *L) {
  box *b = luaL_testudata(L, 1, BOX_T);
  if (b != NULL && b->v != NULL) {
    lt_value *v = b->v;
    b->v = NULL;
    tt_unref(v);
  }
  return 0;
}

/* push_box pushes an empty box, marked to be closed when the stack
** unwinds past it: on an error the value inside is freed at once. */
static box *push_box(lua_State *L) {
  box *b;
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

static bool is_globals(lua_State *L, int idx) {
  bool r;
  idx = lua_absindex(L, idx);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  r = lua_rawequal(L, -1, idx);
  lua_pop(L, 1);
  return r;
}

/* push_weak pushes the registry table 'key', making it with weak 'mode'
** on first use. */
static void push_weak(lua_State *L, const char *key, const char *mode) {
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

/* }==================================================================== */


/* {====================================================================
** Module names
**
** Values found in package.loaded (a module, or a function, table or
** userdata one field down) cross by name.  Each state keeps a weak-keyed
** map from such values to "module\0field", built on first use and built
** again when a lookup misses and package.loaded changed since.
** ===================================================================== */

typedef struct mname {
  const char *s;
  size_t len;
  int rank;
} mname;

/* std_rank orders the standard libraries first, _G before all, so that
** print is "_G.print" whatever else refers to it. */
static int std_rank(const char *s, size_t len) {
  static const char *const std[] = {
    "_G", "string", "table", "math", "io", "os", "coroutine", "utf8",
    "debug", "package", NULL
  };
  int i;
  for (i = 0; std[i] != NULL; i++)
    if (strlen(std[i]) == len && memcmp(std[i], s, len) == 0) return i;
  return 100;
}

/* mname_cmp sorts by rank, then shorter names first, then bytes: the
** order, and so the name chosen for a value, never depends on the hash
** order of a table. */
static int mname_cmp(const void *a, const void *b) {
  const mname *x = a, *y = b;
  size_t n;
  int c;
  if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
  if (x->len != y->len) return x->len < y->len ? -1 : 1;
  n = x->len;
  c = memcmp(x->s, y->s, n);
  return c;
}

/* loaded_fingerprint sums what package.loaded holds (top of the stack),
** to tell cheaply whether modules came or went since the map was made. */
static lua_Integer loaded_fingerprint(lua_State *L, int loaded) {
  uint64_t fp = 0, count = 0;
  lua_pushnil(L);
  while (lua_next(L, loaded) != 0) {
    fp += (uint64_t)(uintptr_t)lua_topointer(L, -2) * 3u +
          (uint64_t)(uintptr_t)lua_topointer(L, -1);
    count++;
    lua_pop(L, 1);
  }
  return (lua_Integer)(fp ^ (count * 0x9e3779b97f4a7c15u));
}

/* sorted_keys collects the string keys of the table at 't' (all of them,
** or only those whose value may cross by name) into a sorted array kept
** in a userdata on the stack, and returns it with its length. */
static mname *sorted_keys(lua_State *L, int t, bool fields, size_t *n) {
  size_t count = 0, k = 0;
  mname *a;
  lua_pushnil(L);
  while (lua_next(L, t) != 0) {
    count++;
    lua_pop(L, 1);
  }
  a = lua_newuserdatauv(L, count * sizeof *a + 1, 0);
  lua_pushnil(L);
  while (lua_next(L, t) != 0) {
    int vt = lua_type(L, -1);
    if (lua_type(L, -2) == LUA_TSTRING && k < count) {
      size_t len;
      const char *s = lua_tolstring(L, -2, &len);
      bool ok = len > 0;
      if (!fields)
        ok = ok && memchr(s, '\0', len) == NULL;
      else
        ok = ok && (vt == LUA_TTABLE || vt == LUA_TFUNCTION ||
                    vt == LUA_TUSERDATA);
      if (ok) {
        a[k].s = s;
        a[k].len = len;
        a[k].rank = fields ? 0 : std_rank(s, len);
        k++;
      }
    }
    lua_pop(L, 1);
  }
  qsort(a, k, sizeof *a, mname_cmp);
  *n = k;
  return a;
}

/* name_set records map[value at -1] = prefix .. field unless the value
** already has a name (an earlier one wins).  Pops the value. */
static void name_set(lua_State *L, int map, const mname *mod,
                     const mname *field) {
  lua_pushvalue(L, -1);
  if (lua_rawget(L, map) != LUA_TNIL) {
    lua_pop(L, 2);
    return;
  }
  lua_pop(L, 1);
  lua_pushlstring(L, mod->s, mod->len);
  lua_pushlstring(L, "", 1);
  if (field != NULL)
    lua_pushlstring(L, field->s, field->len);
  else
    lua_pushliteral(L, "");
  lua_concat(L, 3);
  lua_rawset(L, map);
}

/* build_names makes this state's map afresh, stores it in the registry
** and leaves it on the stack. */
static void build_names(lua_State *L) {
  int loaded, map, top = lua_gettop(L);
  size_t nmods, i, j;
  mname *mods;
  luaL_checkstack(L, 12, NULL);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  loaded = lua_gettop(L);
  lua_newtable(L);
  map = lua_gettop(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, map);
  if (lua_type(L, loaded) != LUA_TTABLE) {
    lua_setfield(L, LUA_REGISTRYINDEX, NAMES_KEY);
    lua_settop(L, top);
    lua_getfield(L, LUA_REGISTRYINDEX, NAMES_KEY);
    return;
  }
  mods = sorted_keys(L, loaded, false, &nmods);
  /* First the modules themselves: string is "string", not "_G.string". */
  for (i = 0; i < nmods; i++) {
    int t;
    lua_pushlstring(L, mods[i].s, mods[i].len);
    t = lua_rawget(L, loaded);
    if (t == LUA_TTABLE || t == LUA_TFUNCTION || t == LUA_TUSERDATA)
      name_set(L, map, &mods[i], NULL);
    else
      lua_pop(L, 1);
  }
  /* Then one field down, module by module in the same order. */
  for (i = 0; i < nmods; i++) {
    int mod;
    bool g;
    size_t nf;
    mname *fields;
    lua_pushlstring(L, mods[i].s, mods[i].len);
    if (lua_rawget(L, loaded) != LUA_TTABLE) {
      lua_pop(L, 1);
      continue;
    }
    mod = lua_gettop(L);
    /* The global table is the script's own namespace, not a module with
    ** fixed contents: only its C functions (print, pairs, ...) go by
    ** name.  A Lua function or table a script stored in a global is
    ** copied like any other value. */
    g = is_globals(L, mod);
    fields = sorted_keys(L, mod, true, &nf);
    for (j = 0; j < nf; j++) {
      lua_pushlstring(L, fields[j].s, fields[j].len);
      lua_rawget(L, mod);
      if (g && !lua_iscfunction(L, -1))
        lua_pop(L, 1);
      else
        name_set(L, map, &mods[i], &fields[j]);
    }
    lua_settop(L, mod - 1);
  }
  lua_pushinteger(L, loaded_fingerprint(L, loaded));
  lua_setfield(L, LUA_REGISTRYINDEX, NAMESFP_KEY);
  lua_pushvalue(L, map);
  lua_setfield(L, LUA_REGISTRYINDEX, NAMES_KEY);
  lua_pushvalue(L, map);
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
}

/* names_stale reports whether package.loaded changed since the map was
** built. */
static bool names_stale(lua_State *L) {
  lua_Integer fp, old;
  luaL_checkstack(L, 4, NULL);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_type(L, -1) != LUA_TTABLE) {
    lua_pop(L, 1);
    return false;
  }
  fp = loaded_fingerprint(L, lua_gettop(L));
  lua_getfield(L, LUA_REGISTRYINDEX, NAMESFP_KEY);
  old = lua_tointeger(L, -1);
  lua_pop(L, 2);
  return fp != old;
}

/* }==================================================================== */


/* {====================================================================
** Packing
** ===================================================================== */

/* A path segment says how the packer reached the value it is on, for
** the message of a refusal.  'idx' is a stack index: of the key for
** SEG_FIELD, of the function for SEG_UPVAL (with upvalue number 'n');
** 'n' is the position of a top-level value for SEG_ARG and SEG_RESULT. */
enum { SEG_WHAT, SEG_ARG, SEG_RESULT, SEG_FIELD, SEG_KEY, SEG_UPVAL };

typedef struct seg {
  int kind;
  int idx;
  int n;
} seg;

typedef struct packer {
  lua_State *L;
  lt_value *v;
  const char *what;
  int base;          /* the stack top before packing began */
  int seen;          /* table: value -> id (or -(k+1) for objs[k]) */
  int names;         /* slot of the module map (nil until needed) */
  bool have_names;
  bool checked;      /* the map was compared with package.loaded */
  int depth;
  seg path[LT_MAXDEPTH + 2];
} packer;

static _Noreturn void pk_nomem(packer *p) {
  luaL_error(p->L, "not enough memory");
  abort();  /* not reached: luaL_error does not return */
}

static void pk_grow(packer *p, size_t need) {
  lt_value *v = p->v;
  size_t cap;
  unsigned char *nb;
  if (v->cap - v->len >= need) return;
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

static void put(packer *p, const void *data, size_t n) {
  pk_grow(p, n);
  memcpy(p->v->buf + p->v->len, data, n);
  p->v->len += n;
}

static void put_byte(packer *p, int c) {
  unsigned char b = (unsigned char)c;
  put(p, &b, 1);
}

static void put_varint(packer *p, uint64_t x) {
  unsigned char tmp[10];
  int k = 0;
  do {
    tmp[k] = (unsigned char)(x & 0x7f);
    x >>= 7;
    if (x != 0) tmp[k] |= 0x80;
    k++;
  } while (x != 0);
  put(p, tmp, (size_t)k);
}

static void put_u32(packer *p, size_t at, size_t x) {
  uint32_t u = x > UINT32_MAX ? UINT32_MAX : (uint32_t)x;
  memcpy(p->v->buf + at, &u, sizeof u);
}

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
  abort();  /* not reached */
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

static void pk_mark(packer *p, int idx, lua_Integer id) {
  lua_State *L = p->L;
  lua_pushvalue(L, idx);
  lua_pushinteger(L, id);
  lua_rawset(L, p->seen);
}

/* pk_named packs the value at 'idx' by name if it has one, and says so. */
static bool pk_named(packer *p, int idx) {
  lua_State *L = p->L;
  luaL_checkstack(L, 6, NULL);
  if (!p->have_names) {
    if (lua_getfield(L, LUA_REGISTRYINDEX, NAMES_KEY) != LUA_TTABLE) {
      lua_pop(L, 1);
      build_names(L);
      p->checked = true;
    }
    lua_replace(L, p->names);
    p->have_names = true;
  }
  lua_pushvalue(L, idx);
  if (lua_rawget(L, p->names) != LUA_TSTRING && !p->checked) {
    /* A miss: modules may have been required since the map was made.
    ** Check once per pack, and rebuild only if package.loaded changed. */
    lua_pop(L, 1);
    p->checked = true;
    if (names_stale(L)) {
      build_names(L);
      lua_replace(L, p->names);
    }
    lua_pushvalue(L, idx);
    lua_rawget(L, p->names);
  }
  if (lua_type(L, -1) == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    put_byte(p, T_MOD);
    put_varint(p, len);
    put(p, s, len);
    lua_pop(L, 1);
    return true;
  }
  lua_pop(L, 1);
  return false;
}

static void pk_depth(packer *p) {
  if (p->depth > LT_MAXDEPTH) {
    char why[64];
    snprintf(why, sizeof why, "nested more than %d levels deep",
             LT_MAXDEPTH);
    refuse(p, why, true);
  }
}

static void pk_table(packer *p, int idx) {
  lua_State *L = p->L;
  lua_Integer id;
  size_t at, count = 0, narr;
  if (is_globals(L, idx)) {
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
  narr = (size_t)lua_rawlen(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    int k = lua_gettop(L) - 1;
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
  push_weak(L, DUMPS_KEY, "k");
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
  if (is_globals(L, v)) return true;
  if (strcmp(name, "_ENV") != 0 || lua_type(L, v) != LUA_TTABLE)
    return false;
  r = lua_getmetatable(L, v) != 0;
  if (r) lua_pop(L, 1);
  return r;
}

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

static void pk_userdata(packer *p, int idx) {
  lua_State *L = p->L;
  lua_Integer id;
  tt_obj *o = lt_toobj(L, idx);
  if (o != NULL) {
    lt_value *v = p->v;
    if ((id = pk_seen(p, idx)) < 0) {
      put_byte(p, T_OBJ);
      put_varint(p, (uint64_t)(-id - 1));
      return;
    }
    if (v->nobjs == v->objcap) {
      size_t cap = v->objcap != 0 ? v->objcap * 2 : 4;
      tt_obj **no = realloc(v->objs, cap * sizeof *no);
      if (no == NULL) pk_nomem(p);
      v->objs = no;
      v->objcap = cap;
    }
    /* Stored as soon as taken: the value owns the reference even if an
    ** error comes next. */
    v->objs[v->nobjs++] = tt_ref(o);
    put_byte(p, T_OBJ);
    put_varint(p, v->nobjs - 1);
    pk_mark(p, idx, -(lua_Integer)v->nobjs);
    return;
  }
  if (pk_named(p, idx)) return;
  refuse(p, "userdata", false);
}

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

/* pk_begin sets the stack up for packing: the box that owns the value
** while it is built, the table of values seen, the slot of the map of
** module names. */
static void pk_begin(lua_State *L, packer *p, const char *what) {
  box *b;
  lt_value *v;
  p->L = L;
  p->what = what != NULL ? what : "value";
  p->base = lua_gettop(L);
  p->depth = 0;
  p->have_names = false;
  p->checked = false;
  b = push_box(L);
  v = calloc(1, sizeof *v);
  if (v == NULL) luaL_error(L, "not enough memory");
  tt_obj_init(&v->hdr, &lt_value_type);
  b->v = v;
  p->v = v;
  lua_newtable(L);
  p->seen = lua_gettop(L);
  lua_pushnil(L);
  p->names = lua_gettop(L);
}

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
  box *b = lua_touserdata(L, p->base + 1);
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

tt_obj *lt_pack(lua_State *L, int first, int n, const char *what) {
  packer p;
  int i;
  first = lua_absindex(L, first);
  pk_begin(L, &p, what);
  for (i = 0; i < n; i++) pk_root(&p, first + i, SEG_ARG, i + 1);
  return pk_end(&p);
}

tt_obj *lt_pack_one(lua_State *L, int idx, const char *what) {
  packer p;
  idx = lua_absindex(L, idx);
  pk_begin(L, &p, what);
  pk_root(&p, idx, SEG_WHAT, 0);
  return pk_end(&p);
}

tt_obj *lt_pack_call(lua_State *L, int fn_idx, int first, int n,
                     const char *what) {
  packer p;
  int i;
  fn_idx = lua_absindex(L, fn_idx);
  first = lua_absindex(L, first);
  pk_begin(L, &p, what);
  pk_root(&p, fn_idx, SEG_WHAT, 0);
  for (i = 0; i < n; i++) pk_root(&p, first + i, SEG_ARG, i + 1);
  return pk_end(&p);
}

tt_obj *lt_pack_results(lua_State *L, int first, int n, const char *what) {
  packer p;
  int i;
  first = lua_absindex(L, first);
  pk_begin(L, &p, what);
  for (i = 0; i < n; i++) pk_root(&p, first + i, SEG_RESULT, i + 1);
  return pk_end(&p);
}

/* }==================================================================== */


/* {====================================================================
** Values made in C
** ===================================================================== */

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
** Unpacking
** ===================================================================== */

typedef struct unpacker {
  lua_State *L;
  const lt_value *v;
  const unsigned char *p, *end;
  int refs;          /* table: id -> table or function (0: none) */
  int nextid;
} unpacker;

static _Noreturn void up_corrupt(unpacker *u) {
  luaL_error(u->L, "corrupt tether.Value");
  abort();  /* not reached */
}

static const unsigned char *need(unpacker *u, size_t n) {
  const unsigned char *s = u->p;
  if ((size_t)(u->end - u->p) < n) up_corrupt(u);
  u->p += n;
  return s;
}

static int get_byte(unpacker *u) { return *need(u, 1); }

static uint64_t get_varint(unpacker *u) {
  uint64_t x = 0;
  int shift = 0, c;
  do {
    if (shift > 63) up_corrupt(u);
    c = get_byte(u);
    x |= (uint64_t)(c & 0x7f) << shift;
    shift += 7;
  } while (c & 0x80);
  return x;
}

static uint32_t get_u32(unpacker *u) {
  uint32_t x;
  memcpy(&x, need(u, 4), 4);
  return x;
}

static void up_value(unpacker *u);

static void up_register(unpacker *u, int idx) {
  lua_pushvalue(u->L, idx);
  lua_rawseti(u->L, u->refs, ++u->nextid);
}

static void up_table(unpacker *u) {
  lua_State *L = u->L;
  uint32_t narr = get_u32(u), count = get_u32(u);
  size_t left = (size_t)(u->end - u->p) / 2;
  int t;
  /* The sizes are hints; never trust them beyond what the bytes left
  ** could describe. */
  if (count > left) count = (uint32_t)left;
  if (narr > count) narr = count;
  luaL_checkstack(L, 6, NULL);
  lua_createtable(L, (int)(narr > INT32_MAX ? INT32_MAX : narr),
                  (int)(count - narr > INT32_MAX ? INT32_MAX
                                                 : count - narr));
  t = lua_gettop(L);
  up_register(u, t);
  while (u->p < u->end && *u->p != T_END) {
    up_value(u);
    up_value(u);
    if (lua_isnil(L, -2)) up_corrupt(u);
    lua_rawset(L, t);
  }
  need(u, 1);
}

typedef struct reader {
  const char *s;
  size_t n;
} reader;

static const char *rd_read(lua_State *L, void *ud, size_t *size) {
  reader *r = ud;
  (void)L;
  *size = r->n;
  r->n = 0;
  return *size != 0 ? r->s : NULL;
}

static void load_code(unpacker *u, const char *code, size_t len) {
  reader r;
  r.s = code;
  r.n = len;
  if (lua_load(u->L, rd_read, &r, "=(transfer)", "b") != LUA_OK)
    lua_error(u->L);
}

static void set_up(lua_State *L, int f, int i) {
  if (lua_setupvalue(L, f, i) == NULL) lua_pop(L, 1);
}

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
    push_weak(L, PROTOS_KEY, "v");
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
        if (fid < 1 || fid > u->nextid ||
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
      if (id < 1 || id > (uint64_t)u->nextid) up_corrupt(u);
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

void lt_unpack_one(lua_State *L, tt_obj *v) {
  int n = lt_unpack(L, v);
  if (n == 0)
    lua_pushnil(L);
  else if (n > 1)
    lua_pop(L, n - 1);
}

/* }==================================================================== */


/* {====================================================================
** Errors of tasks
** ===================================================================== */

/* err_message computes tostring(value) for an error, as lua.c's message
** handler does. */
static int err_message(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg != NULL) return 1;
  if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
    return 1;
  lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  return 1;
}

static int err_pack(lua_State *L) {
  tt_obj **out = lua_touserdata(L, 2);
  *out = lt_pack_one(L, 1, "error value");
  return 0;
}

static char *dupstr(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d != NULL) memcpy(d, s, n);
  return d;
}

tt_error *lt_pack_error(lua_State *L, int idx, const char *traceback) {
  tt_obj *o, *value = NULL;
  tt_error *e;
  char *msg = NULL;
  char fallback[64];
  int top = lua_gettop(L);
  idx = lua_absindex(L, idx);
  snprintf(fallback, sizeof fallback, "(error object is a %s value)",
           luaL_typename(L, idx));
  if (lua_checkstack(L, 4)) {
    o = lt_toobj(L, idx);
    if (o != NULL && o->type == &tt_error_type) return tt_ref(o);
    lua_pushcfunction(L, err_message);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING)
      msg = dupstr(lua_tostring(L, -1));
    lua_settop(L, top);
    /* The value itself goes along if it can cross, for err.value. */
    lua_pushcfunction(L, err_pack);
    lua_pushvalue(L, idx);
    lua_pushlightuserdata(L, &value);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) value = NULL;
    lua_settop(L, top);
  }
  e = tt_error_new(TT_EFAILED, msg != NULL ? msg : fallback, NULL);
  free(msg);
  if (e == NULL) {
    tt_unref(value);
    return NULL;
  }
  e->traceback = traceback != NULL ? dupstr(traceback) : NULL;
  e->value = value;
  return e;
}

/* }==================================================================== */


/* {====================================================================
** transfer_roundtrip, for tests: through a real second state and back
** ===================================================================== */

typedef struct rtrip {
  tt_obj *in;
  tt_obj *out;
  const char *path, *cpath;
} rtrip;

static void set_paths(lua_State *L, const char *path, const char *cpath) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "package") == LUA_TTABLE) {
    if (path != NULL) {
      lua_pushstring(L, path);
      lua_setfield(L, -2, "path");
    }
    if (cpath != NULL) {
      lua_pushstring(L, cpath);
      lua_setfield(L, -2, "cpath");
    }
  }
  lua_pop(L, 2);
}

/* rt_remote runs in the second state: open it like a worker's, unpack,
** pack again. */
static int rt_remote(lua_State *L) {
  rtrip *r = lua_touserdata(L, 1);
  int n, top;
  luaL_openlibs(L);
  set_paths(L, r->path, r->cpath);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "tether");
  lua_call(L, 1, 0);
  top = lua_gettop(L);
  n = lt_unpack(L, r->in);
  r->out = lt_pack(L, top + 1, n, RT_WHAT);
  return 0;
}

static const char *package_field(lua_State *L, const char *k) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "package");
  lua_remove(L, -2);
  if (lua_type(L, -1) == LUA_TTABLE) lua_getfield(L, -1, k);
  else lua_pushnil(L);
  lua_remove(L, -2);
  return lua_tostring(L, -1);
}

static int l_roundtrip(lua_State *L) {
  int n = lua_gettop(L), st;
  rtrip r;
  box *b;
  lua_State *L2;
  b = push_box(L);
  r.in = lt_pack(L, 1, n, RT_WHAT);
  r.out = NULL;
  b->v = (lt_value *)r.in;
  r.path = package_field(L, "path");
  r.cpath = package_field(L, "cpath");
  L2 = luaL_newstate();
  if (L2 == NULL) return luaL_error(L, "cannot create a state");
  lua_pushcfunction(L2, rt_remote);
  lua_pushlightuserdata(L2, &r);
  st = lua_pcall(L2, 1, 0, 0);
  if (st != LUA_OK) {
    tt_error *e = lt_pack_error(L2, -1, NULL);
    lua_close(L2);
    if (e == NULL) return luaL_error(L, "not enough memory");
    lua_pushstring(L, e->message);
    tt_unref(e);
    return lua_error(L);
  }
  lua_close(L2);
  /* The box now owns the value that came back. */
  tt_unref(b->v);
  b->v = (lt_value *)r.out;
  lua_settop(L, n + 3);
  return lt_unpack(L, r.out);
}

void lt_open_transfer(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"transfer_roundtrip", l_roundtrip},
    {NULL, NULL}
  };
  lt_newtype(L, &lt_value_type, NULL, NULL);
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
  /* Worker threads close their lua_State as they end. */
  tt_set_thread_exit_hook(lt_thread_exit);
}

/* }==================================================================== */
