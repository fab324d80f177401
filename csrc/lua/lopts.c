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

/* nearest returns the known option closest to 'key'. */
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

int lt_fielderror(lua_State *L, int arg, const char *field,
                  const char *what) {
  return luaL_argerror(L, arg, lua_pushfstring(L, "field '%s' %s", field,
                                               what));
}

double lt_optnumber(lua_State *L, int arg, int idx, const char *field,
                    double def, double min) {
  double v;
  int t = lua_getfield(L, idx, field);
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

int lt_optint(lua_State *L, int arg, int idx, const char *field, int def,
              int min, int max) {
  int isint, t = lua_getfield(L, idx, field);
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

bool lt_optfunction(lua_State *L, int arg, int idx, const char *field) {
  int t = lua_getfield(L, idx, field);
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

bool lt_optboolean(lua_State *L, int arg, int idx, const char *field,
                   bool def) {
  int t = lua_getfield(L, idx, field);
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

const char *lt_optstring(lua_State *L, int arg, int idx, const char *field,
                         const char *def) {
  int t = lua_getfield(L, idx, field);
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

void lt_checkretry(lua_State *L, int arg, int idx, tt_retry *r) {
  static const char *const known[] = {"attempts", "backoff", "factor",
                                      "max_backoff", "jitter", NULL};
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx))
    lt_fielderror(L, arg, "retry", lua_pushfstring(L, "must be a table, "
                                                      "got %s",
                                                   luaL_typename(L, idx)));
  lt_checkopts(L, arg, idx, "retry", known, false);
  r->attempts = lt_optint(L, arg, idx, "attempts", 1, 1, 1000000);
  r->backoff = lt_optnumber(L, arg, idx, "backoff", 0.1, 0);
  r->factor = lt_optnumber(L, arg, idx, "factor", 2, 1);
  r->max_backoff = lt_optnumber(L, arg, idx, "max_backoff", 3600, 0);
  r->jitter = lt_optnumber(L, arg, idx, "jitter", 0, 0);
  if (r->jitter > 1)
    lt_fielderror(L, arg, "jitter", "must be between 0 and 1");
}
