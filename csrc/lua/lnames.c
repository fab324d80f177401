/*
** lnames.c -- the index of package.loaded names, for the packer.
**
** Values found in package.loaded (a module, or a function, table or
** userdata one field down) cross by name.  Each state keeps a weak-keyed
** map from such values to "module\0field", built on first use and built
** again when a lookup misses and package.loaded changed since.
**
** Whether package.loaded changed is cheap to tell: the first build gives
** package.loaded (if it has no metatable of its own) a metatable whose
** __newindex stores the entry and counts it, so a module added since
** (require, or an assignment of a new key) shows as a new count, in
** constant time, where a miss otherwise walked all of package.loaded.
** Where package.loaded has a metatable of someone else's, a sum of its
** entries is compared instead (the walk).  An entry that replaces an
** existing one is not counted: a value that only a replaced entry names
** is found once the map is rebuilt for another reason.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ltransfer.h"

#define NAMES_KEY "tether.transfer.names"   /* value -> "mod\0field" */
#define COUNTS_KEY "tether.transfer.counts"    /* a 'counts' userdata */

/* What tells whether package.loaded changed since the map was built:
** how many entries its __newindex has added ('added'), how many had been
** when the map was built ('built_at'), and that metatable ('mt'); or,
** where package.loaded has someone else's metatable, the fingerprint of
** its entries when the map was built ('fp'). */
typedef struct counts {
  lua_Integer added, built_at, fp;
  const void *mt;
} counts;

/* An mname is a string key of a table, with the rank it sorts by. */
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

/* loaded_fingerprint sums what package.loaded holds (at 'loaded'), to
** tell cheaply whether modules came or went since the map was made. */
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

/* loaded_newindex is the __newindex of package.loaded's metatable: it
** stores the entry and counts it. */
static int loaded_newindex(lua_State *L) {
  counts *c = lua_touserdata(L, lua_upvalueindex(1));
  lua_settop(L, 3);
  lua_rawset(L, 1);
  c->added++;
  return 0;
}

/* push_counts pushes this state's 'counts' userdata, making it (and the
** metatable package.loaded may be given) on first use. */
static counts *push_counts(lua_State *L) {
  counts *c;
  if (lua_getfield(L, LUA_REGISTRYINDEX, COUNTS_KEY) == LUA_TUSERDATA)
    return lua_touserdata(L, -1);
  lua_pop(L, 1);
  c = lua_newuserdatauv(L, sizeof *c, 1);
  c->added = c->built_at = c->fp = 0;
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, loaded_newindex, 1);
  lua_setfield(L, -2, "__newindex");
  c->mt = lua_topointer(L, -1);
  lua_setiuservalue(L, -2, 1);  /* keeps the metatable alive */
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, COUNTS_KEY);
  return c;
}

/* What counts_adds found on package.loaded. */
enum { MT_OURS, MT_GIVEN, MT_FOREIGN };

/* counts_adds tells whether package.loaded (at 'loaded') has the
** metatable that counts its new entries (MT_OURS), had none and was given
** it now (MT_GIVEN: what was added before went uncounted), or has
** someone else's (MT_FOREIGN).  'c' is this state's counts, at the top of
** the stack. */
static int counts_adds(lua_State *L, int loaded, counts *c) {
  bool ours;
  if (!lua_getmetatable(L, loaded)) {
    lua_getiuservalue(L, -1, 1);
    lua_setmetatable(L, loaded);
    return MT_GIVEN;
  }
  ours = lua_topointer(L, -1) == c->mt;
  lua_pop(L, 1);
  return ours ? MT_OURS : MT_FOREIGN;
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
    g = lt_is_globals(L, mod);
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
  {
    counts *c = push_counts(L);
    c->fp = loaded_fingerprint(L, loaded);
    counts_adds(L, loaded, c);
    c->built_at = c->added;
    lua_pop(L, 1);
  }
  lua_pushvalue(L, map);
  lua_setfield(L, LUA_REGISTRYINDEX, NAMES_KEY);
  lua_pushvalue(L, map);
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
}

/* names_stale reports whether package.loaded changed since the map was
** built. */
static bool names_stale(lua_State *L) {
  counts *c;
  bool stale;
  luaL_checkstack(L, 6, NULL);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_type(L, -1) != LUA_TTABLE) {
    lua_pop(L, 1);
    return false;
  }
  c = push_counts(L);
  switch (counts_adds(L, lua_gettop(L) - 1, c)) {
    case MT_GIVEN:
      stale = true;
      break;
    case MT_FOREIGN:
      stale = loaded_fingerprint(L, lua_gettop(L) - 1) != c->fp;
      break;
    default:
      stale = c->added != c->built_at;
      break;
  }
  lua_pop(L, 2);
  return stale;
}

/* lt_names_init: see ltransfer.h.  Only a nil slot is pushed: the map is
** fetched (or built) by the first lt_name_of of the pack, so a pack of values
** that never cross by name costs no registry lookup. */
void lt_names_init(lua_State *L, lt_names *n) {
  lua_pushnil(L);
  n->slot = lua_gettop(L);
  n->have = false;
  n->checked = false;
}

/* lt_name_of: see ltransfer.h.  The map is fetched (or built) on the
** first lookup of a pack, and built again at most once per pack. */
const char *lt_name_of(lua_State *L, lt_names *n, int idx, size_t *len) {
  luaL_checkstack(L, 6, NULL);
  if (!n->have) {
    if (lua_getfield(L, LUA_REGISTRYINDEX, NAMES_KEY) != LUA_TTABLE) {
      lua_pop(L, 1);
      build_names(L);
      n->checked = true;
    }
    lua_replace(L, n->slot);
    n->have = true;
  }
  lua_pushvalue(L, idx);
  if (lua_rawget(L, n->slot) != LUA_TSTRING && !n->checked) {
    /* A miss: modules may have been required since the map was made.
    ** Check once per pack, and rebuild only if package.loaded changed. */
    lua_pop(L, 1);
    n->checked = true;
    if (names_stale(L)) {
      build_names(L);
      lua_replace(L, n->slot);
    }
    lua_pushvalue(L, idx);
    lua_rawget(L, n->slot);
  }
  if (lua_type(L, -1) == LUA_TSTRING) return lua_tolstring(L, -1, len);
  lua_pop(L, 1);
  return NULL;
}
