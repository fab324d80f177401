/*
** llog.c -- tether.log: where the engine's JSON log lines go, and lines
** of the script's own through the same path.
**
** The engine formats every record (csrc/core/log.c); this file chooses
** the sink.  A channel sink turns each record into a table ({ts, level,
** msg, and the record's fields}) built in C without a Lua state
** (lt_pack_fields), so it works on any thread that logs, and offers it
** with try_send: a full (or closed) channel drops the record and counts
** it, and the logging thread never waits.  The log owns the channel's
** reference while it is the sink.
*/
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "ltether.h"

#define MAX_FIELDS 64

static _Atomic uint64_t dropped;

/* chan_sink is the sink of a channel: on the thread that logs, it packs
** the record as one table (ts in RFC 3339, level, msg, then the record's
** fields) and offers it with try_send.  A full or closed channel, or a
** failed allocation, drops the record and counts it in 'dropped': a
** logging thread never waits for a reader. */
static void chan_sink(const tt_log_record *r, void *ud) {
  tt_field small[16], *f = small;
  size_t n = r->nfields + 3, i;
  char ts[32];
  tt_buf b = TT_BUF_INIT;
  tt_obj *v;
  tt_buf_rfc3339(&b, r->ts);
  snprintf(ts, sizeof ts, "%s", b.data != NULL ? b.data : "");
  tt_buf_free(&b);
  if (n > sizeof small / sizeof small[0]) {
    f = malloc(n * sizeof *f);
    if (f == NULL) {
      atomic_fetch_add(&dropped, 1);
      return;
    }
  }
  f[0] = (tt_field)TT_FSTR("ts", ts);
  f[1] = (tt_field)TT_FSTR("level", tt_log_level_name(r->level));
  f[2] = (tt_field)TT_FSTR("msg", r->msg);
  for (i = 0; i < r->nfields; i++) f[i + 3] = r->fields[i];
  v = lt_pack_fields(f, n);
  if (f != small) free(f);
  if (v == NULL || tt_chan_try_send(ud, v) != TT_OK) {
    tt_unref(v);
    atomic_fetch_add(&dropped, 1);
  }
}

/* chan_release drops the log's reference to the channel once another
** sink replaces it. */
static void chan_release(void *ud) { tt_unref(ud); }

/* tether.log.configure{level = "info", sink = "stderr" | path | chan}
** -> true | nil, err: sets, for the whole process (every state and
** thread), the least level written and where records go; an option left
** out keeps its setting.  A file is appended to, one line per record; a
** channel gets each record as a table, offered without waiting (see
** chan_sink), and the log holds a reference to it while it is the sink.
** A file that cannot be opened is refused at run time: nil and an error
** of code 'invalid' ('no_memory' when out of memory) that names the file
** and strerror, with the level left unchanged too (it is set last).
** Raises for a non-table argument, an unknown option, a 'level' that is
** not 'debug', 'info', 'warn', 'error' or 'off', or a 'sink' of another
** kind. */
static int l_configure(lua_State *L) {
  static const char *const known[] = {"level", "sink", NULL};
  const char *level;
  luaL_checktype(L, 1, LUA_TTABLE);
  lt_checkopts(L, 1, 1, NULL, known, false);
  level = lt_optstring(L, 1, 1, "level", NULL);
  if (level != NULL && tt_log_level_parse(level) < 0)
    lt_fielderror(L, 1, "level", "must be one of 'debug', 'info', "
                                 "'warn', 'error', 'off'");
  switch (lua_getfield(L, 1, "sink")) {
    case LUA_TNIL:
      break;
    case LUA_TSTRING: {
      const char *s = lua_tostring(L, -1);
      if (strcmp(s, "stderr") == 0) {
        tt_log_set_sink(NULL, NULL);
      } else {
        int rc = tt_log_set_file(s);
        if (rc != TT_OK) {
          const char *msg = lua_pushfstring(L, "cannot open log file "
                                               "'%s': %s", s,
                                            strerror(errno));
          return lt_pusherror(L, rc == TT_ENOMEM ? TT_ENOMEM : TT_EINVAL,
                              msg);
        }
      }
      break;
    }
    default: {
      tt_chan *c = lt_testobj(L, -1, &tt_chan_type);
      if (c == NULL)
        lt_fielderror(L, 1, "sink", "must be 'stderr', a file path or a "
                                    "tether.Chan");
      tt_log_set_sink_owned(chan_sink, tt_ref(c), chan_release);
      break;
    }
  }
  lua_pop(L, 1);
  if (level != NULL) tt_log_set_level(tt_log_level_parse(level));
  lua_pushboolean(L, 1);
  return 1;
}

/* tether.log.level() -> string: the least level written now ("info" by
** default). */
static int l_level(lua_State *L) {
  lua_pushstring(L, tt_log_level_name(tt_log_get_level()));
  return 1;
}

/* tether.log.dropped() -> integer: how many records channel sinks lost
** (full or closed channels, failed allocations) since the process began,
** counted atomically by the logging threads. */
static int l_dropped(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)atomic_load(&dropped));
  return 1;
}

/* write_at is tether.log.<level>(msg [, fields]): one record of the
** script's own through the engine's log, at 'level'; nothing when that
** level is not written (then the fields are not even read, so no
** __tostring runs).  'fields' is a table of string keys: strings,
** numbers and booleans are written as they are, other values as
** tostring gives them (a __tostring that raises raises here); other keys
** are skipped, and fields past the 64th (in table order) are dropped.
** Raises for a 'msg' that is neither a string nor a number, or a
** 'fields' that is not a table. */
static int write_at(lua_State *L, int level) {
  tt_field f[MAX_FIELDS];
  size_t n = 0;
  const char *msg = luaL_checkstring(L, 1);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  if (!tt_log_enabled(level)) return 0;
  if (!lua_isnoneornil(L, 2)) {
    lua_settop(L, 2);
    lua_pushnil(L);
    while (lua_next(L, 2) != 0 && n < MAX_FIELDS) {
      tt_field *x = &f[n];
      if (lua_type(L, -2) != LUA_TSTRING) {
        lua_pop(L, 1);
        continue;
      }
      memset(x, 0, sizeof *x);
      x->key = lua_tostring(L, -2);
      switch (lua_type(L, -1)) {
        case LUA_TNUMBER:
          if (lua_isinteger(L, -1)) {
            x->kind = TT_F_INT;
            x->i = (long long)lua_tointeger(L, -1);
          } else {
            x->kind = TT_F_NUM;
            x->n = lua_tonumber(L, -1);
          }
          lua_pop(L, 1);
          break;
        case LUA_TBOOLEAN:
          x->kind = TT_F_BOOL;
          x->i = lua_toboolean(L, -1);
          lua_pop(L, 1);
          break;
        default:
          /* The string stays on the stack (anchored) until we log. */
          x->kind = TT_F_STR;
          x->s = luaL_tolstring(L, -1, &x->len);
          lua_insert(L, 3);  /* below the key */
          lua_pop(L, 1);     /* the value */
          luaL_checkstack(L, 3, NULL);
          break;
      }
      n++;
    }
  }
  tt_log(level, msg, f, n);
  return 0;
}

/* tether.log.debug(msg [, fields]), tether.log.info, tether.log.warn and
** tether.log.error: write_at at their level. */
static int l_debug(lua_State *L) { return write_at(L, TT_LOG_DEBUG); }
static int l_info(lua_State *L) { return write_at(L, TT_LOG_INFO); }
static int l_warn(lua_State *L) { return write_at(L, TT_LOG_WARN); }
static int l_error(lua_State *L) { return write_at(L, TT_LOG_ERROR); }

void lt_open_log(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"configure", l_configure},
    {"level", l_level},
    {"dropped", l_dropped},
    {"debug", l_debug},
    {"info", l_info},
    {"warn", l_warn},
    {"error", l_error},
    {NULL, NULL}
  };
  luaL_newlib(L, funcs);
  lua_setfield(L, -2, "log");
}
