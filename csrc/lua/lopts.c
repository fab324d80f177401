/*
** lopts.c -- options tables, read the same way by every function of the
** binding that takes one (tether.pool, pool:submit, tether.saga, ...).
**
** Strict: a key that is not a known option raises, naming it and the
** nearest known one, so a misspelled option never silently falls back to
** a default.  Fields are read with their type and range checked, and
** every error is an argument error of the calling function in Lua's own
** words: "bad argument #1 to 'pool' (unknown option 'worker'; did you
** mean 'workers'?)", "bad argument #1 to 'pool' (field 'queue' must be
** an integer, got string)".
*/
#include <math.h>
#include <string.h>

#include "ltether.h"

/* distance is the edit distance between 'a' and 'b' (insertions,
** deletions, substitutions and swaps of neighbours each count one),
** capped at 99 for long strings. */
static int distance(const char *a, const char *b) {
  enum { MAX = 48 };
  int d[MAX + 1][MAX + 1];
  size_t la = strlen(a), lb = strlen(b), i, j;
  if (la > MAX || lb > MAX) return 99;
  for (i = 0; i <= la; i++) d[i][0] = (int)i;
  for (j = 0; j <= lb; j++) d[0][j] = (int)j;
  for (i = 1; i <= la; i++)
    for (j = 1; j <= lb; j++) {
      int best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
      if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
          d[i - 2][j - 2] + 1 < best)
        best = d[i - 2][j - 2] + 1;
      d[i][j] = best;
    }
  return d[la][lb];
}

/* nearest returns the known option closest to 'key' (the first of equals
** in 'known' order).  It always names one, however far: a suggestion
** that misses is cheaper than none.  'known' must not be empty. */
static const char *nearest(const char *key, const char *const known[]) {
  const char *best = known[0];
  int bestd = 1 << 30, i;
  for (i = 0; known[i] != NULL; i++) {
    int dd = distance(key, known[i]);
    if (dd < bestd) {
      bestd = dd;
      best = known[i];
    }
  }
  return best;
}

/* lt_checkopts checks every key of the options table at 'idx' against
** the NULL-terminated list 'known' and raises an argument error of
** argument 'arg' (in the caller's numbering, so a method's receiver is
** not counted) for the first key that is not in it: "unknown option
** 'worker'; did you mean 'workers'?", with 'prefix' and a dot before
** both names for a nested table ("retry.attempt").  A key that is not a
** string raises "option names are strings, got number [in prefix]",
** except integer keys when 'allow_array' lets a list part through.  It
** reads no value: callers check it first, then read each field with the
** lt_opt* readers below.  lua_next's order decides which of several bad
** keys is named. */
void lt_checkopts(lua_State *L, int arg, int idx, const char *prefix,
                  const char *const known[], bool allow_array) {
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    int i;
    lua_pop(L, 1);  /* the value */
    if (lua_type(L, -1) != LUA_TSTRING) {
      if (allow_array && lua_isinteger(L, -1)) continue;
      luaL_argerror(L, arg, lua_pushfstring(L, "option names are strings, "
                                               "got %s%s%s",
                                            luaL_typename(L, -1),
                                            prefix ? " in " : "",
                                            prefix ? prefix : ""));
    }
    for (i = 0; known[i] != NULL; i++)
      if (strcmp(lua_tostring(L, -1), known[i]) == 0) break;
    if (known[i] == NULL) {
      const char *key = lua_tostring(L, -1);
      luaL_argerror(L, arg,
                    lua_pushfstring(L, "unknown option '%s%s%s'; did you "
                                       "mean '%s%s%s'?",
                                    prefix ? prefix : "", prefix ? "." : "",
                                    key, prefix ? prefix : "",
                                    prefix ? "." : "", nearest(key, known)));
    }
  }
}

/* lt_fielderror raises "bad argument #arg to 'f' (field 'name' what)",
** 'what' being the rest of the sentence ("must be a number, got
** string"); it never returns, and is declared int so that a caller can
** write 'return lt_fielderror(...)'. */
int lt_fielderror(lua_State *L, int arg, const char *field,
                  const char *what) {
  return luaL_argerror(L, arg, lua_pushfstring(L, "field '%s' %s", field,
                                               what));
}

/* leaf is the key a field name reads: the part after its last dot, so
** that a nested table's reader can pass "retry.jitter" and have errors
** name the field as the user wrote it, while the key read is "jitter". */
static const char *leaf(const char *field) {
  const char *dot = strrchr(field, '.');
  return dot != NULL ? dot + 1 : field;
}

/* lt_optnumber reads t[field] of the table at 'idx' as a number: nil
** gives 'def'; a value that is not a number (a numeric string included)
** raises "field 'f' must be a number, got string"; NaN or a value below
** 'min' raises "field 'f' must be at least min" (min printed as an
** integer).  Infinity passes.  Here and in the readers below, a 'field'
** with dots ("retry.jitter") reads the key after the last dot and names
** the whole path in its errors. */
double lt_optnumber(lua_State *L, int arg, int idx, const char *field,
                    double def, double min) {
  double v;
  int t = lua_getfield(L, idx, leaf(field));
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return def;
  }
  if (t != LUA_TNUMBER)
    lt_fielderror(L, arg, field, lua_pushfstring(L, "must be a number, got "
                                                    "%s",
                                                 luaL_typename(L, -1)));
  v = lua_tonumber(L, -1);
  if (isnan(v) || v < min)
    lt_fielderror(L, arg, field, lua_pushfstring(L, "must be at least %I",
                                                 (LUAI_UACINT)min));
  lua_pop(L, 1);
  return v;
}

/* lt_optint reads t[field] as an integer between 'min' and 'max': nil
** gives 'def'; anything lua_tointegerx cannot make an integer raises
** "field 'f' must be an integer, got T" (so 2.5 raises, while 2.0 and the
** string "2" pass, as Lua's own integer arguments do); a value out of
** range raises "field 'f' must be between min and max". */
int lt_optint(lua_State *L, int arg, int idx, const char *field, int def,
              int min, int max) {
  int isint, t = lua_getfield(L, idx, leaf(field));
  lua_Integer v;
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return def;
  }
  v = lua_tointegerx(L, -1, &isint);
  if (!isint)
    lt_fielderror(L, arg, field, lua_pushfstring(L, "must be an integer, "
                                                    "got %s",
                                                 luaL_typename(L, -1)));
  if (v < min || v > max)
    lt_fielderror(L, arg, field, lua_pushfstring(L, "must be between %d "
                                                    "and %d", min, max));
  lua_pop(L, 1);
  return (int)v;
}

/* lt_optfunction reads t[field] as a function: false, with nothing
** pushed, when it is nil; true with the function left on the stack (the
** caller packs or references it from there); any other type raises
** "field 'f' must be a function, got T". */
bool lt_optfunction(lua_State *L, int arg, int idx, const char *field) {
  int t = lua_getfield(L, idx, leaf(field));
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return false;
  }
  if (t != LUA_TFUNCTION)
    lt_fielderror(L, arg, field, lua_pushfstring(L, "must be a function, "
                                                    "got %s",
                                                 luaL_typename(L, -1)));
  return true;  /* left on the stack */
}

/* lt_optboolean reads t[field] as a boolean: nil gives 'def'; any other
** type raises "field 'f' must be a boolean, got T" (no truthiness: 1 or
** "yes" is a mistake, not true). */
bool lt_optboolean(lua_State *L, int arg, int idx, const char *field,
                   bool def) {
  int t = lua_getfield(L, idx, leaf(field));
  bool v = def;
  if (t == LUA_TBOOLEAN)
    v = lua_toboolean(L, -1);
  else if (t != LUA_TNIL)
    lt_fielderror(L, arg, field, lua_pushfstring(L, "must be a boolean, "
                                                    "got %s",
                                                 luaL_typename(L, -1)));
  lua_pop(L, 1);
  return v;
}

/* lt_optstring reads t[field] as a string: nil gives 'def'; any other
** type, a number included, raises "field 'f' must be a string, got T".
** The result points into the table's own string, so it stays valid as
** long as the table holds it. */
const char *lt_optstring(lua_State *L, int arg, int idx, const char *field,
                         const char *def) {
  int t = lua_getfield(L, idx, leaf(field));
  const char *v = def;
  if (t == LUA_TSTRING)
    v = lua_tostring(L, -1);  /* the table keeps it alive */
  else if (t != LUA_TNIL)
    lt_fielderror(L, arg, field, lua_pushfstring(L, "must be a string, "
                                                    "got %s",
                                                 luaL_typename(L, -1)));
  lua_pop(L, 1);
  return v;
}

/* lt_checkretry reads the retry policy table at 'idx' into '*r': the one
** reader of policies for pools, submissions and sagas, so that each has
** the same keys, limits and defaults: attempts 1 to 1000000 (1), backoff
** >= 0 (0.1 s), factor >= 1 (2), max_backoff >= 0 (3600 s), jitter 0 to 1
** (0).  A value that is not a table raises "field 'retry' must be a
** table, got T"; an unknown key raises "unknown option 'retry.attempt';
** did you mean 'retry.attempts'?", and the field errors of its keys name
** the key with the same prefix ("field 'retry.jitter' must be between 0
** and 1"). */
void lt_checkretry(lua_State *L, int arg, int idx, tt_retry *r) {
  static const char *const known[] = {"attempts", "backoff", "factor",
                                      "max_backoff", "jitter", NULL};
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx))
    lt_fielderror(L, arg, "retry", lua_pushfstring(L, "must be a table, "
                                                      "got %s",
                                                   luaL_typename(L, idx)));
  lt_checkopts(L, arg, idx, "retry", known, false);
  r->attempts = lt_optint(L, arg, idx, "retry.attempts", 1, 1, 1000000);
  r->backoff = lt_optnumber(L, arg, idx, "retry.backoff", 0.1, 0);
  r->factor = lt_optnumber(L, arg, idx, "retry.factor", 2, 1);
  r->max_backoff = lt_optnumber(L, arg, idx, "retry.max_backoff", 3600, 0);
  r->jitter = lt_optnumber(L, arg, idx, "retry.jitter", 0, 0);
  if (r->jitter > 1)
    lt_fielderror(L, arg, "retry.jitter", "must be between 0 and 1");
}
