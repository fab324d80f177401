/*
** ltrace.c -- tether.trace: spans (csrc/core/trace.c) and W3C trace
** context in Lua.
**
** A span is a tether object ("tether.Span"): it crosses into tasks by
** reference and may be finished from any thread.  Its ids read as
** fields (span.trace_id, span.span_id: lower-case hex).  Pool ops and
** saga steps get their spans from the engine; tether.trace.start makes
** the script's own, and the context it returns carries the span, so
** that ops submitted under it are its children.
*/
#include <math.h>
#include <string.h>

#include "ltether.h"

#define MAX_ATTRS 128
#define MAX_HEADERS 64

static tt_span *check_span(lua_State *L) {
  return lt_checkobj(L, 1, &tt_span_type);
}

/* read_attr reads the value at the top of the stack as the attribute
** 'key' into '*f' (a string value stays anchored where it is); false
** for a value of another type. */
static bool read_attr(lua_State *L, const char *key, tt_field *f) {
  memset(f, 0, sizeof *f);
  f->key = key;
  switch (lua_type(L, -1)) {
    case LUA_TSTRING:
      f->kind = TT_F_STR;
      f->s = lua_tolstring(L, -1, &f->len);
      return true;
    case LUA_TNUMBER:
      if (lua_isinteger(L, -1)) {
        f->kind = TT_F_INT;
        f->i = (long long)lua_tointeger(L, -1);
      } else {
        f->kind = TT_F_NUM;
        f->n = lua_tonumber(L, -1);
      }
      return true;
    case LUA_TBOOLEAN:
      f->kind = TT_F_BOOL;
      f->i = lua_toboolean(L, -1);
      return true;
    default:
      return false;
  }
}

/* attr_error raises "bad argument #arg to 'f' (attribute 'k' must be a
** string, number or boolean, got t)". */
static int attr_error(lua_State *L, int arg, int kidx) {
  const char *k = lua_type(L, kidx) == LUA_TSTRING ? lua_tostring(L, kidx)
                                                    : "?";
  return luaL_argerror(L, arg, lua_pushfstring(L, "attribute '%s' must be "
                                                  "a string, number or "
                                                  "boolean, got %s",
                                               k, luaL_typename(L, -1)));
}

/* tether.trace.start(ctx, name [, attrs]) -> ctx, span: starts a span
** named 'name', a child of the span 'ctx' carries (a remote one, or one
** of start), or the root of a new trace, and returns a child of 'ctx'
** that carries it, so that spans started and ops submitted under that
** context are its children, and the span itself (a tether object: it
** crosses into tasks by reference and may be finished on any thread).
** 'attrs' maps string names to strings, numbers or booleans.  Raises for
** a non-context 'ctx', a non-string 'name', a non-table 'attrs', a name
** that is not a string, a value of another type, or more than 128
** attributes.  A span is made (with ids) even when nothing is recorded,
** so that traceparent headers still propagate. */
static int l_start(lua_State *L) {
  tt_ctx *parent = lt_checkobj(L, 1, &tt_ctx_type);
  const char *name = luaL_checkstring(L, 2);
  tt_field attrs[MAX_ATTRS];
  tt_span_opts so;
  tt_ctx *child = NULL;
  tt_span *s;
  size_t n = 0;
  memset(&so, 0, sizeof so);
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    lua_pushnil(L);
    while (lua_next(L, 3) != 0) {
      if (lua_type(L, -2) != LUA_TSTRING)
        luaL_argerror(L, 3, "attribute names must be strings");
      luaL_argcheck(L, n < MAX_ATTRS, 3, "too many attributes (128)");
      if (!read_attr(L, lua_tostring(L, -2), &attrs[n]))
        attr_error(L, 3, -2);
      n++;
      lua_pop(L, 1);  /* the table keeps the value anchored */
    }
    so.attrs = attrs;
    so.nattrs = n;
  }
  s = tt_span_start(parent, name, &so, &child);
  if (s == NULL) return luaL_error(L, "not enough memory");
  lt_pushnew(L, child);
  lt_pushnew(L, s);
  return 2;
}

/* span:finish([err]) -> boolean: ends the span, true the first time,
** false after (nothing changes then).  With 'err' (a string, or any
** value: tostring gives the message; nil or false: none), the span's
** status is ERROR with that message.  A recorded span then goes to the
** export queue; the exporter thread sends it, the finishing thread never
** waits. */
static int m_finish(lua_State *L) {
  tt_span *s = check_span(L);
  const char *msg = NULL;
  size_t len = 0;
  if (!lua_isnoneornil(L, 2) &&
      !(lua_type(L, 2) == LUA_TBOOLEAN && !lua_toboolean(L, 2)))
    msg = luaL_tolstring(L, 2, &len);
  lua_pushboolean(L, tt_span_end(s, msg, len));
  return 1;
}

/* span:set(name, value): sets an attribute of the span; on a span that
** is finished or not recorded, it does nothing.  Raises for a non-string
** 'name', a missing 'value', or a value that is not a string, number or
** boolean ("attribute 'k' must be a string, number or boolean, got
** table"). */
static int m_set(lua_State *L) {
  tt_span *s = check_span(L);
  const char *k = luaL_checkstring(L, 2);
  tt_field f;
  luaL_checkany(L, 3);
  lua_settop(L, 3);
  if (!read_attr(L, k, &f)) return attr_error(L, 3, 2);
  tt_span_set_attr(s, &f);
  return 0;
}

/* span:recording() -> boolean: whether the span is recorded (tracing on,
** the sampler chose it, and not yet finished), so that a script may skip
** costly attributes otherwise. */
static int m_recording(lua_State *L) {
  lua_pushboolean(L, tt_span_recording(check_span(L)));
  return 1;
}

/* span.trace_id, span.span_id, span.sampled (__index of tether.Span):
** the read-only fields, the ids in lower-case hex (32 and 16 digits),
** 'sampled' whether the sampler chose the span (its traceparent flags say
** the same); any other key is looked up among the methods, kept in the
** metatable's '__methods' since '__index' is this function.  Raises for a
** key that is not a string. */
static int span_index(lua_State *L) {
  tt_span *s = check_span(L);
  const char *k = luaL_checkstring(L, 2);
  tt_span_context sc;
  char hex[33];
  tt_span_context_of(s, &sc);
  if (strcmp(k, "trace_id") == 0) {
    tt_hex(sc.trace_id, 16, hex);
    lua_pushstring(L, hex);
  } else if (strcmp(k, "span_id") == 0) {
    tt_hex(sc.span_id, 8, hex);
    lua_pushstring(L, hex);
  } else if (strcmp(k, "sampled") == 0) {
    lua_pushboolean(L, sc.flags & 1);
  } else {
    luaL_getmetafield(L, 1, "__methods");
    lua_getfield(L, -1, k);
  }
  return 1;
}

/* tether.trace.traceparent(ctx) -> string | nil: the W3C traceparent
** header ("00-" trace id "-" span id "-" flags, 01 when sampled) of the
** span 'ctx' carries, to send with an outgoing request; nil if it
** carries none.  Raises for a non-context 'ctx'. */
static int l_traceparent(lua_State *L) {
  tt_ctx *c = lt_checkobj(L, 1, &tt_ctx_type);
  tt_span_context sc;
  char tp[TT_TRACEPARENT_LEN + 1];
  if (!tt_ctx_span_context(c, &sc)) {
    lua_pushnil(L);
    return 1;
  }
  tt_traceparent_format(&sc, tp);
  lua_pushstring(L, tp);
  return 1;
}

/* tether.trace.with_traceparent(ctx, header) -> ctx | nil, err: a child
** of 'ctx' that carries the remote span of a received traceparent
** header, so that the spans started under it continue that trace.
** Returns nil and an error of code 'invalid' ("invalid traceparent
** header") if the header is not valid W3C Trace Context: a header comes
** from outside, so its refusal is a value, not a raise.  Raises for a
** non-context 'ctx' or a non-string 'header'. */
static int l_with_traceparent(lua_State *L) {
  tt_ctx *c = lt_checkobj(L, 1, &tt_ctx_type);
  size_t n;
  const char *h = luaL_checklstring(L, 2, &n);
  tt_span_context sc;
  tt_ctx *child;
  if (tt_traceparent_parse(h, n, &sc) != TT_OK)
    return lt_pusherror(L, TT_EINVAL, "invalid traceparent header");
  child = tt_with_span_context(c, &sc);
  if (child == NULL) return luaL_error(L, "not enough memory");
  lt_pushnew(L, child);
  return 1;
}

/* read_pairs reads the table of string keys and string values at field
** 'field' of the options (at 1): as "k: v" headers into 'out', or as
** resource attributes into 'res'.  The strings stay anchored on the
** stack (the table, and a table of the headers made here). */
static size_t read_pairs(lua_State *L, const char *field, const char **out,
                         tt_trace_attr *res, size_t max) {
  size_t n = 0;
  int t, anchor;
  lua_getfield(L, 1, field);
  if (lua_isnil(L, -1)) return 0;
  if (!lua_istable(L, -1)) lt_fielderror(L, 1, field, "must be a table");
  t = lua_gettop(L);
  lua_newtable(L);
  anchor = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, t) != 0) {
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
      lt_fielderror(L, 1, field, "must map strings to strings");
    if (n >= max) lt_fielderror(L, 1, field, "has too many entries");
    if (out != NULL) {
      const char *k = lua_tostring(L, -2), *v = lua_tostring(L, -1);
      if (*k == '\0' || strpbrk(k, ":\r\n") != NULL ||
          strpbrk(v, "\r\n") != NULL)
        lt_fielderror(L, 1, field, "names must be non-empty with no ':', "
                                   "CR or LF, values without CR or LF");
      out[n] = lua_pushfstring(L, "%s: %s", k, v);
      lua_rawseti(L, anchor, (lua_Integer)n + 1);
    } else {
      res[n].key = lua_tostring(L, -2);
      res[n].value = lua_tostring(L, -1);
    }
    n++;
    lua_pop(L, 1);
  }
  return n;
}

/* tether.trace.configure{endpoint, file, headers, service_name,
** resource, sampler, ratio, queue_size, batch_size, schedule_delay,
** export_timeout} -> true | nil, err: replaces the whole configuration,
** that read from the OTEL_* environment variables too; an option left
** out takes its default (0 or NULL here: the engine's), so configure{}
** turns recording off, as does having neither 'endpoint' nor 'file'.
** A 'ratio' given without a 'sampler' selects
** "parentbased_traceidratio".  Returns nil and an error of code 'invalid'
** when the engine refuses the settings ("cannot open trace file 'P'", or
** "invalid trace settings", an endpoint with CR or LF say), the
** configuration then unchanged.  Raises for a non-table argument, an
** unknown option, an unknown sampler, a ratio outside 0 to 1, a
** 'headers' or 'resource' that is not a table of strings to strings
** (header names non-empty, without ':', CR or LF; values without CR or
** LF), more than 64 of either, or a field of the wrong type or out of
** range. */
static int l_configure(lua_State *L) {
  static const char *const known[] = {
    "endpoint", "file", "headers", "service_name", "resource", "sampler",
    "ratio", "queue_size", "batch_size", "schedule_delay", "export_timeout",
    NULL
  };
  const char *headers[MAX_HEADERS];
  tt_trace_attr res[MAX_HEADERS];
  tt_trace_opts o;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lt_checkopts(L, 1, 1, NULL, known, false);
  memset(&o, 0, sizeof o);
  o.endpoint = lt_optstring(L, 1, 1, "endpoint", NULL);
  o.file = lt_optstring(L, 1, 1, "file", NULL);
  o.service_name = lt_optstring(L, 1, 1, "service_name", NULL);
  o.sampler = lt_optstring(L, 1, 1, "sampler", NULL);
  o.sampler_arg = lt_optnumber(L, 1, 1, "ratio", 1, 0);
  if (o.sampler_arg > 1) lt_fielderror(L, 1, "ratio", "must be at most 1");
  if (lua_getfield(L, 1, "ratio") != LUA_TNIL && o.sampler == NULL)
    o.sampler = "parentbased_traceidratio";
  lua_pop(L, 1);
  if (o.sampler != NULL) {
    static const char *const samplers[] = {
      "always_on", "always_off", "traceidratio", "parentbased_always_on",
      "parentbased_always_off", "parentbased_traceidratio", NULL
    };
    int i;
    for (i = 0; samplers[i] != NULL; i++)
      if (strcmp(samplers[i], o.sampler) == 0) break;
    if (samplers[i] == NULL)
      lt_fielderror(L, 1, "sampler", "must be one of 'always_on', "
                    "'always_off', 'traceidratio', 'parentbased_always_on'"
                    ", 'parentbased_always_off', "
                    "'parentbased_traceidratio'");
  }
  o.queue_size = lt_optint(L, 1, 1, "queue_size", 0, 1, 1 << 24);
  o.batch_size = lt_optint(L, 1, 1, "batch_size", 0, 1, 1 << 24);
  o.schedule_delay = lt_optnumber(L, 1, 1, "schedule_delay", 0, 0);
  o.export_timeout = lt_optnumber(L, 1, 1, "export_timeout", 0, 0);
  o.nheaders = read_pairs(L, "headers", headers, NULL, MAX_HEADERS);
  o.headers = headers;
  o.nresource = read_pairs(L, "resource", NULL, res, MAX_HEADERS);
  o.resource = res;
  if (tt_trace_configure(&o) != TT_OK) {
    const char *msg = o.file != NULL
      ? lua_pushfstring(L, "cannot open trace file '%s'", o.file)
      : "invalid trace settings";
    return lt_pusherror(L, TT_EINVAL, msg);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* tether.trace.flush([timeout]) -> true | nil, err: true once every span
** finished before the call is exported (or dropped); nil and an error of
** code 'timeout' ("trace flush timed out") after 'timeout' seconds
** (default: none; each export is bounded by export_timeout).  Not ended
** by Ctrl-C: the wait is bounded anyway.  Raises for a negative or NaN
** 'timeout'. */
static int l_flush(lua_State *L) {
  double t = lt_optseconds(L, 1, -1);
  if (tt_trace_flush(t) != TT_OK)
    return lt_pusherror(L, TT_ETIMEOUT, "trace flush timed out");
  lua_pushboolean(L, 1);
  return 1;
}

/* tether.trace.shutdown([timeout]) -> true | nil, err: flushes as
** tether.trace.flush does, returning and raising as it does, and stops
** the exporter thread (a later recorded span starts it again). */
static int l_shutdown(lua_State *L) {
  double t = lt_optseconds(L, 1, -1);
  if (tt_trace_shutdown(t) != TT_OK)
    return lt_pusherror(L, TT_ETIMEOUT, "trace flush timed out");
  lua_pushboolean(L, 1);
  return 1;
}

/* tether.trace.enabled() -> boolean: whether spans are recorded at all
** (an exporter is configured and the sampler may say yes). */
static int l_enabled(lua_State *L) {
  lua_pushboolean(L, tt_trace_enabled());
  return 1;
}

/* tether.trace.stats() -> {recorded, exported, dropped, failed_exports,
** queued}: the exporter's counters since the process began: spans
** finished and queued, exported, dropped (a full queue, a failed
** export), batches that failed, and spans waiting now. */
static int l_stats(lua_State *L) {
  tt_trace_stats st;
  tt_trace_stats_get(&st);
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, (lua_Integer)st.recorded);
  lua_setfield(L, -2, "recorded");
  lua_pushinteger(L, (lua_Integer)st.exported);
  lua_setfield(L, -2, "exported");
  lua_pushinteger(L, (lua_Integer)st.dropped);
  lua_setfield(L, -2, "dropped");
  lua_pushinteger(L, (lua_Integer)st.failed_exports);
  lua_setfield(L, -2, "failed_exports");
  lua_pushinteger(L, (lua_Integer)st.queued);
  lua_setfield(L, -2, "queued");
  return 1;
}

void lt_open_trace(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"finish", m_finish},
    {"set", m_set},
    {"recording", m_recording},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"start", l_start},
    {"traceparent", l_traceparent},
    {"with_traceparent", l_with_traceparent},
    {"configure", l_configure},
    {"flush", l_flush},
    {"shutdown", l_shutdown},
    {"enabled", l_enabled},
    {"stats", l_stats},
    {NULL, NULL}
  };
  lt_newtype(L, &tt_span_type, methods, NULL);
  /* Fields first, then the methods: '__index' is a function. */
  if (lua_getfield(L, -1, "__methods") == LUA_TNIL) {
    lua_getfield(L, -2, "__index");
    lua_setfield(L, -3, "__methods");
    lua_pushcfunction(L, span_index);
    lua_setfield(L, -3, "__index");
  }
  lua_pop(L, 2);
  luaL_newlib(L, funcs);
  lua_setfield(L, -2, "trace");
}
