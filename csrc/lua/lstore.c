/*
** lstore.c -- tether.store: durable stores in Lua (DESIGN section 11),
** the plain-data values that travel in their records, and the body of
** pool:drain_store.
**
** Plain data is what a record may carry: nil, booleans, numbers (integers
** stay integers), strings, and tables of those without metatables.  It is
** written as the store's own wire values (tether.h), never as the
** in-memory transfer format, and never as bytecode: a drainer that reads
** a record rebuilds values, it runs nothing but the named function of an
** allowed module.  A table met twice is written twice (a record is a
** tree); a cycle is refused.
*/
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "ltether.h"
#include "lworker.h"

#define MAX_ALLOW 256

/* {====================================================================
** Wire values
** ===================================================================== */

typedef struct wenc {
  lua_State *L;
  tt_buf *b;
  int visiting;            /* stack index of the set of open tables */
  int arg;                 /* argument number, for messages */
  char *why;
  size_t whylen;
} wenc;

/* wfail writes why an argument cannot travel ("argument #2 holds a
** function (only plain data travels)") and returns false. */
static bool wfail(wenc *e, const char *fmt, const char *s) {
  char msg[160];
  snprintf(msg, sizeof msg, fmt, s);
  snprintf(e->why, e->whylen, "argument #%d %s", e->arg, msg);
  return false;
}

/* enc_value writes the value at 'idx' as wire values, or returns false
** with the reason in 'e->why'.  A table is counted first (wire tables
** carry their size up front) and marked open while its contents are
** written, so that a table inside itself is refused while a table met
** twice side by side is simply written twice. */
static bool enc_value(wenc *e, int idx, int depth) {
  lua_State *L = e->L;
  idx = lua_absindex(L, idx);
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      tt_wire_nil(e->b);
      return true;
    case LUA_TBOOLEAN:
      tt_wire_bool(e->b, lua_toboolean(L, idx));
      return true;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx))
        tt_wire_int(e->b, (int64_t)lua_tointeger(L, idx));
      else
        tt_wire_num(e->b, (double)lua_tonumber(L, idx));
      return true;
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      tt_wire_str(e->b, s, n);
      return true;
    }
    case LUA_TTABLE: {
      lua_Integer count = 0;
      if (depth >= TT_WIRE_MAXDEPTH)
        return wfail(e, "%s", "has tables nested too deep");
      if (lua_getmetatable(L, idx)) {
        lua_pop(L, 1);
        return wfail(e, "%s", "holds a table with a metatable");
      }
      if (!lua_checkstack(L, 6))
        return wfail(e, "%s", "is too deep for the stack");
      if (lua_rawgetp(L, e->visiting, lua_topointer(L, idx)) != LUA_TNIL) {
        lua_pop(L, 1);
        return wfail(e, "%s", "holds a table that contains itself");
      }
      lua_pop(L, 1);
      lua_pushboolean(L, 1);
      lua_rawsetp(L, e->visiting, lua_topointer(L, idx));
      lua_pushnil(L);
      while (lua_next(L, idx)) {
        count++;
        lua_pop(L, 1);
      }
      tt_wire_table(e->b, (uint64_t)count);
      lua_pushnil(L);
      while (lua_next(L, idx)) {
        if (!enc_value(e, -2, depth + 1) || !enc_value(e, -1, depth + 1)) {
          lua_pop(L, 2);
          return false;
        }
        lua_pop(L, 1);
      }
      lua_pushnil(L);
      lua_rawsetp(L, e->visiting, lua_topointer(L, idx));
      return true;
    }
    default:
      return wfail(e, "holds a %s (only plain data travels)",
                   luaL_typename(L, idx));
  }
}

/* lt_wire_args writes the 'n' values from 'first' as a count and wire
** values into 'b', the arguments of a spilled op: true, or false with
** the reason in 'why' (a value that is not plain data, a cycle, nesting
** deeper than TT_WIRE_MAXDEPTH, no memory).  It never raises on a value:
** a spill that cannot be written is refused by the caller. */
bool lt_wire_args(lua_State *L, int first, int n, tt_buf *b, char *why,
                  size_t whylen) {
  wenc e;
  int i;
  bool ok = true;
  first = lua_absindex(L, first);
  luaL_checkstack(L, 8, NULL);
  lua_newtable(L);
  e.L = L;
  e.b = b;
  e.visiting = lua_gettop(L);
  e.why = why;
  e.whylen = whylen;
  tt_wire_varint(b, (uint64_t)(n < 0 ? 0 : n));
  for (i = 0; i < n && ok; i++) {
    e.arg = i + 1;
    ok = enc_value(&e, first + i, 0);
  }
  lua_pop(L, 1);
  if (ok && b->failed) {
    snprintf(why, whylen, "not enough memory");
    ok = false;
  }
  return ok;
}

typedef struct wdec {
  lua_State *L;
  const unsigned char *p, *end;
} wdec;

/* dec_bad raises "malformed wire values": bytes that do not parse are
** refused whole, never half read. */
static _Noreturn void dec_bad(wdec *d) {
  luaL_error(d->L, "malformed wire values");
  /* cppcheck-suppress unreachableCode ; not reached (luaL_error does not
  ** return), but the compiler does not know it */
  abort();
}

static uint64_t dec_varint(wdec *d) {
  uint64_t x = 0;
  int shift = 0;
  while (d->p < d->end && shift < 64) {
    unsigned char c = *d->p++;
    x |= (uint64_t)(c & 0x7F) << shift;
    if (!(c & 0x80)) return x;
    shift += 7;
  }
  dec_bad(d);
}

static uint64_t dec_u64(wdec *d) {
  uint64_t x = 0;
  int i;
  if (d->end - d->p < 8) dec_bad(d);
  for (i = 0; i < 8; i++) x |= (uint64_t)d->p[i] << (8 * i);
  d->p += 8;
  return x;
}

/* dec_value pushes the next wire value.  Each length is checked against
** the bytes left before anything is allocated, and a nil or NaN key
** (which no encoder writes) is malformed rather than a Lua error. */
static void dec_value(wdec *d, int depth) {
  lua_State *L = d->L;
  int tag;
  if (d->p >= d->end || depth > TT_WIRE_MAXDEPTH) dec_bad(d);
  luaL_checkstack(L, 4, "wire values too deep");
  tag = *d->p++;
  switch (tag) {
    case TT_W_NIL: lua_pushnil(L); break;
    case TT_W_FALSE: lua_pushboolean(L, 0); break;
    case TT_W_TRUE: lua_pushboolean(L, 1); break;
    case TT_W_INT:
      lua_pushinteger(L, (lua_Integer)(int64_t)dec_u64(d));
      break;
    case TT_W_FLT: {
      uint64_t x = dec_u64(d);
      double v;
      memcpy(&v, &x, sizeof v);
      lua_pushnumber(L, (lua_Number)v);
      break;
    }
    case TT_W_STR: {
      uint64_t n = dec_varint(d);
      if ((uint64_t)(d->end - d->p) < n) dec_bad(d);
      lua_pushlstring(L, (const char *)d->p, (size_t)n);
      d->p += n;
      break;
    }
    case TT_W_TABLE: {
      uint64_t n = dec_varint(d), i;
      if (n > (uint64_t)(d->end - d->p)) dec_bad(d);
      lua_createtable(L, 0, n < 1024 ? (int)n : 1024);
      for (i = 0; i < n; i++) {
        dec_value(d, depth + 1);
        dec_value(d, depth + 1);
        if (lua_isnil(L, -2) ||
            (lua_type(L, -2) == LUA_TNUMBER &&
             lua_tonumber(L, -2) != lua_tonumber(L, -2)))
          dec_bad(d);
        lua_rawset(L, -3);
      }
      break;
    }
    default:
      dec_bad(d);
  }
}

/* lt_wire_push pushes the values of 'n' bytes written by lt_wire_args
** and returns how many; bytes that are not exactly that raise
** "malformed wire values" (callers that must not raise call it
** protected). */
int lt_wire_push(lua_State *L, const void *p, size_t n) {
  wdec d;
  uint64_t k, i;
  int top = lua_gettop(L);
  d.L = L;
  d.p = p;
  d.end = d.p + n;
  k = dec_varint(&d);
  if (k > n) dec_bad(&d);
  luaL_checkstack(L, (int)k + 4, "too many wire values");
  for (i = 0; i < k; i++) dec_value(&d, 0);
  if (d.p != d.end) dec_bad(&d);
  return lua_gettop(L) - top;
}

/* }==================================================================== */


/* {====================================================================
** tether.store
** ===================================================================== */

static tt_store *check_store(lua_State *L) {
  return lt_checkobj(L, 1, &tt_store_type);
}

/* store_error pushes nil and an error of code 'rc' with the store's
** last message. */
static int store_error(lua_State *L, tt_store *s, int rc) {
  char msg[300], full[400];
  tt_store_error(msg, sizeof msg);
  if (rc == TT_ECLOSED)
    snprintf(full, sizeof full, "store %s is closed", tt_store_url(s));
  else
    snprintf(full, sizeof full, "store %s: %s", tt_store_url(s),
             msg[0] ? msg : tt_strerror(rc));
  return lt_pusherror(L, rc == TT_ECLOSED ? TT_ECLOSED : TT_ESTORE, full);
}

/* tether.store.open(url [, {max_payload, max_deliveries, lease,
** synchronous, timeout, consumer, name, metrics}]) -> store | nil, err:
** opens (or creates) the store of 'url', "sqlite:PATH" or
** "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=NAME]".  A
** malformed URL raises (the engine's TT_EINVAL: a mistake whatever the
** moment, and its message never repeats the URL, which may hold a
** password); so do an unknown option and a field of the wrong type or
** out of range (max_payload 64 to 2^30, max_deliveries 1 to 1000000,
** lease and timeout positive, synchronous 'full' or 'normal').  A server
** that cannot be reached, a refused password or a file that cannot be
** opened or is not a database returns nil and an error of code
** 'store_unavailable'.  A store is shared by reference and usable from
** any thread; its I/O runs on a thread of its own.  Its figures are in
** tether.metrics.text() while it is open, under the label store =
** opts.name or its URL without the password (unless metrics = false). */
static int l_open(lua_State *L) {
  static const char *const known[] = {
    "max_payload", "max_deliveries", "lease", "synchronous", "timeout",
    "consumer", "name", "metrics", NULL
  };
  const char *url = luaL_checkstring(L, 1), *name = NULL;
  tt_store_opts o;
  tt_store *s;
  char msg[400];
  int err = TT_OK;
  bool metrics = true;
  memset(&o, 0, sizeof o);
  if (!lua_isnoneornil(L, 2)) {
    const char *sync;
    luaL_checktype(L, 2, LUA_TTABLE);
    lt_checkopts(L, 2, 2, NULL, known, false);
    o.max_payload = (size_t)lt_optint(L, 2, 2, "max_payload", 1 << 20, 64,
                                      1 << 30);
    o.max_deliveries = lt_optint(L, 2, 2, "max_deliveries", 5, 1, 1000000);
    o.lease = lt_optnumber(L, 2, 2, "lease", 30, 0);
    if (o.lease <= 0) lt_fielderror(L, 2, "lease", "must be positive");
    o.timeout = lt_optnumber(L, 2, 2, "timeout", 5, 0);
    if (o.timeout <= 0) lt_fielderror(L, 2, "timeout", "must be positive");
    sync = lt_optstring(L, 2, 2, "synchronous", "full");
    if (strcmp(sync, "full") == 0)
      o.sync_normal = false;
    else if (strcmp(sync, "normal") == 0)
      o.sync_normal = true;
    else
      lt_fielderror(L, 2, "synchronous", "must be 'full' or 'normal'");
    o.consumer = lt_optstring(L, 2, 2, "consumer", NULL);
    name = lt_optstring(L, 2, 2, "name", NULL);
    metrics = lt_optboolean(L, 2, 2, "metrics", true);
  }
  s = tt_store_open(url, &o, &err, msg, sizeof msg);
  if (s == NULL) {
    if (err == TT_EINVAL) return luaL_argerror(L, 1, msg);
    if (err == TT_ENOMEM) return luaL_error(L, "not enough memory");
    return lt_pusherror(L, TT_ESTORE, msg);
  }
  lt_pushnew(L, s);
  if (metrics && tt_metrics_observe_store(s, name) != TT_OK)
    return luaL_error(L, "not enough memory");
  return 1;
}

static void set_num(lua_State *L, const char *k, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

/* store:stats([pool]) -> {depth, leased, dead, oldest_age} | nil, err:
** the store's counts, for the ops of one pool name or of all: records
** not yet acknowledged (leased ones included), leased now, dead letters,
** and the age in seconds of the oldest record (0 with none).  Returns
** nil and an error of code 'closed' for a closed store, or
** 'store_unavailable' when the store fails.  Raises for a 'pool' that is
** not a string (or a number). */
static int m_stats(lua_State *L) {
  tt_store *s = check_store(L);
  const char *pool = luaL_optstring(L, 2, NULL);
  tt_store_stats st;
  int rc = tt_store_stats_get(s, pool, &st);
  if (rc != TT_OK) return store_error(L, s, rc);
  lua_createtable(L, 0, 4);
  lt_setint(L, "depth", (lua_Integer)st.depth);
  lt_setint(L, "leased", (lua_Integer)st.leased);
  lt_setint(L, "dead", (lua_Integer)st.dead);
  set_num(L, "oldest_age", st.oldest_age);
  return 1;
}

/* push_args (run protected) pushes the arguments of the record at 1 as
** a list, so that a record whose arguments do not parse still shows the
** rest of its dead letter. */
static int push_args(lua_State *L) {
  const tt_record *r = lua_touserdata(L, 1);
  int n, i;
  lua_settop(L, 0);
  n = lt_wire_push(L, r->args, r->args_len);
  lua_createtable(L, n, 0);
  for (i = 1; i <= n; i++) {
    lua_pushvalue(L, i);
    lua_rawseti(L, -2, i);
  }
  return 1;
}

/* push_dead pushes one dead letter as a table: {id, origin, pool,
** reason, at, deliveries, name, fn, tenant, args} (the last four when the
** record can be read). */
static void push_dead(lua_State *L, const tt_store_dead *d) {
  tt_record *r = tt_record_decode(d->rec, d->len, NULL, 0);
  lua_createtable(L, 0, 10);
  lua_pushstring(L, d->id);
  lua_setfield(L, -2, "id");
  lua_pushstring(L, d->origin);
  lua_setfield(L, -2, "origin");
  lua_pushstring(L, d->pool);
  lua_setfield(L, -2, "pool");
  lua_pushstring(L, d->reason);
  lua_setfield(L, -2, "reason");
  set_num(L, "at", d->at);
  lt_setint(L, "deliveries", d->deliveries);
  if (r != NULL) {
    lua_pushstring(L, r->name != NULL ? r->name : "op");
    lua_setfield(L, -2, "name");
    lua_pushstring(L, r->fn);
    lua_setfield(L, -2, "fn");
    if (r->tenant != NULL) {
      lua_pushlstring(L, r->tenant, r->tenant_len);
      lua_setfield(L, -2, "tenant");
    }
    lua_pushcfunction(L, push_args);
    lua_pushlightuserdata(L, r);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK)
      lua_setfield(L, -2, "args");
    else
      lua_pop(L, 1);
    free(r);
  }
}

/* store:dead_letters([pool [, max]]) -> {record, ...} | nil, err: the
** store's dead letters, of one pool name or of all, oldest first, at
** most 'max' (default 1000), each as push_dead makes it.  Returns nil,
** err as store:stats does; raises for a negative or non-integer 'max'
** or a non-string 'pool'. */
static int m_dead_letters(lua_State *L) {
  tt_store *s = check_store(L);
  const char *pool = luaL_optstring(L, 2, NULL);
  lua_Integer max = luaL_optinteger(L, 3, 1000);
  tt_store_dead *d = NULL;
  size_t n = 0, i;
  int rc;
  luaL_argcheck(L, max >= 0, 3, "must not be negative");
  rc = tt_store_dead_letters(s, pool, (size_t)max, &d, &n);
  if (rc != TT_OK) return store_error(L, s, rc);
  lua_createtable(L, (int)n, 0);
  for (i = 0; i < n; i++) {
    push_dead(L, &d[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  tt_store_dead_free(d, n);
  return 1;
}

/* dead_ref reads a dead letter's id and pool: a table from dead_letters
** (its 'id' and 'pool' fields; one without an id raises "dead letter
** without an id"), or an id (string or integer) and an optional pool
** name. */
static const char *dead_ref(lua_State *L, const char **pool) {
  const char *id;
  *pool = NULL;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "pool");
    *pool = lua_tostring(L, -1);
    lua_getfield(L, 2, "id");
    id = lua_tostring(L, -1);
    if (id == NULL) luaL_argerror(L, 2, "dead letter without an id");
    return id;
  }
  id = luaL_checkstring(L, 2);
  *pool = luaL_optstring(L, 3, NULL);
  return id;
}

/* dead_result pushes the result of retry_dead and drop_dead: true; nil
** and an error of code 'invalid' ("no such dead letter"); or nil, err as
** store:stats. */
static int dead_result(lua_State *L, tt_store *s, int rc) {
  if (rc == TT_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (rc == TT_EINVAL) return lt_pusherror(L, TT_EINVAL, "no such dead letter");
  return store_error(L, s, rc);
}

/* store:retry_dead(dl | id [, pool]) -> true | nil, err: puts a dead
** letter back in its queue, with a fresh count of deliveries (SQLite
** keeps its id, Redis gives it a new one).  Returns nil, err of code
** 'invalid' when there is no such dead letter, or as store:stats; raises
** for a record without an id, or an id that is neither a string nor a
** number. */
static int m_retry_dead(lua_State *L) {
  tt_store *s = check_store(L);
  const char *pool, *id = dead_ref(L, &pool);
  return dead_result(L, s, tt_store_retry_dead(s, pool, id));
}

/* store:drop_dead(dl | id [, pool]) -> true | nil, err: forgets a dead
** letter; returns and raises as store:retry_dead does. */
static int m_drop_dead(lua_State *L) {
  tt_store *s = check_store(L);
  const char *pool, *id = dead_ref(L, &pool);
  return dead_result(L, s, tt_store_drop_dead(s, pool, id));
}

/* The process's default overflow store (tether.store.default): taken by
** every pool made without an 'overflow' option, in any Lua state. */
static pthread_mutex_t def_mu = PTHREAD_MUTEX_INITIALIZER;
static tt_store *def_store;    /* under def_mu; holds a reference */

/* lt_push_default_store pushes the process's default overflow store, or
** nil, taking a reference for the new userdata under the lock, so that a
** concurrent tether.store.default(false) cannot free it meanwhile.
** tether.pool calls it for a pool made without an 'overflow' option. */
void lt_push_default_store(lua_State *L) {
  tt_store *s;
  if (pthread_mutex_lock(&def_mu) != 0)
    luaL_error(L, "cannot lock the default store");
  s = tt_ref(def_store);
  if (pthread_mutex_unlock(&def_mu) != 0) {
    tt_unref(s);
    luaL_error(L, "cannot unlock the default store");
  }
  if (s != NULL)
    lt_pushnew(L, s);
  else
    lua_pushnil(L);
}

/* tether.store.default([store | false]) -> store | nil: the overflow
** store of every pool made from now on without an 'overflow' option, in
** any Lua state of the process, a task's or an op's too (pools made
** earlier keep theirs; a pool with 'overflow = false' takes none).  A
** store sets it, false clears it, nothing (or nil) only reads it, as
** io.output does; each call returns the default as it is now.  The
** default holds a reference, so the store stays open (store:close()
** still closes it).  `tether run --store URL` sets it before the script
** runs.  Raises for anything but a store, false or nil ("tether.Store or
** false expected"). */
static int l_default(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) {
    tt_store *s = NULL, *old;
    if (!lua_isboolean(L, 1) || lua_toboolean(L, 1)) {
      s = lt_testobj(L, 1, &tt_store_type);
      luaL_argexpected(L, s != NULL, 1, "tether.Store or false");
    }
    if (pthread_mutex_lock(&def_mu) != 0)
      return luaL_error(L, "cannot lock the default store");
    old = def_store;
    def_store = tt_ref(s);
    if (pthread_mutex_unlock(&def_mu) != 0)
      return luaL_error(L, "cannot unlock the default store");
    tt_unref(old);
  }
  lt_push_default_store(L);
  return 1;
}

/* store:close(): writes what is queued, closes the connection and ends
** the store's thread.  Later calls do nothing; later uses return nil and
** an error of code 'closed', and a spill to a closed store resolves
** 'store_unavailable'.  The object itself lives on while referenced. */
static int m_close(lua_State *L) {
  tt_store_close(check_store(L));
  return 0;
}

/* store:url() -> string: the store's URL without its password, with the
** defaults filled in (a Redis URL gets its port, db and prefix). */
static int m_url(lua_State *L) {
  lua_pushstring(L, tt_store_url(check_store(L)));
  return 1;
}

/* }==================================================================== */


/* {====================================================================
** pool:drain_store
** ===================================================================== */

typedef struct pjob {
  const tt_record *r;
  const tt_claim *c;
  lt_env *env;
  lt_task *task;
  tt_obj *deliveries;
} pjob;

/* prep_body makes the task of a record: the function's name and its
** arguments rebuilt from wire values (run protected). */
static int prep_body(lua_State *L) {
  pjob *j = lua_touserdata(L, 1);
  char what[160];
  int top, n;
  lua_settop(L, 0);
  lua_pushinteger(L, j->c->deliveries);
  j->deliveries = lt_pack_one(L, 1, "context value");
  lua_settop(L, 0);
  top = lua_gettop(L);
  lua_pushstring(L, j->r->fn);
  n = lt_wire_push(L, j->r->args, j->r->args_len);
  snprintf(what, sizeof what, "task '%s'",
           j->r->name != NULL ? j->r->name : "op");
  j->task = lt_task_new(L, j->env, top + 1, top + 2, n, true, what);
  return 0;
}

typedef struct pctx {
  lua_State *L;
  lt_env *env;
} pctx;

/* prepare is the drain's hook for each claimed record, on the draining
** thread: it makes the record's task (prep_body, protected) and gives
** its context the value "tether.deliveries".  A record that cannot be
** prepared (its arguments do not parse, its task cannot be made)
** returns TT_EINVAL with the reason, and the engine makes it a dead
** letter of the store instead of raising in the drainer. */
static int prepare(void *ud, const tt_record *r, const tt_claim *c,
                   tt_ctx **parent, tt_fn *fn, void **arg, tt_drop *drop,
                   char *why, size_t whylen) {
  static const tt_key dkey = {NULL, "tether.deliveries", 17};
  pctx *pc = ud;
  lua_State *L = pc->L;
  pjob j;
  tt_ctx *nc;
  lua_Hook hook;
  int top = lua_gettop(L), mask, count, st;
  memset(&j, 0, sizeof j);
  j.r = r;
  j.c = c;
  j.env = pc->env;
  if (!lua_checkstack(L, 3)) {
    snprintf(why, whylen, "cannot prepare the op: stack overflow");
    return TT_EINVAL;
  }
  lua_pushcfunction(L, prep_body);
  lua_pushlightuserdata(L, &j);
  /* Hooks off while the op is prepared: a Ctrl-C leaves lua.c's hook
  ** on this state, which would fire in the call below and bury a sound
  ** record as "interrupted!" (and swallow the Ctrl-C); an interrupt
  ** pool's hook has nothing to stop here either.  Both are put back. */
  hook = lua_gethook(L);
  mask = lua_gethookmask(L);
  count = lua_gethookcount(L);
  lua_sethook(L, NULL, 0, 0);
  st = lua_pcall(L, 1, 0, 0);
  lua_sethook(L, hook, mask, count);
  if (st != LUA_OK) {
    snprintf(why, whylen, "cannot prepare the op: %s",
             lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                             : "error");
    lua_settop(L, top);
    if (j.task != NULL) lt_task_drop(j.task);
    tt_unref(j.deliveries);
    return TT_EINVAL;
  }
  lua_settop(L, top);
  nc = tt_with_value(*parent, &dkey, j.deliveries);
  tt_unref(j.deliveries);
  if (nc != NULL) {
    tt_unref(*parent);
    *parent = nc;
  }
  *fn = lt_task_run;
  *arg = j.task;
  *drop = lt_task_drop;
  return TT_OK;
}

/* push_report pushes a drain's report: {claimed, completed, failed,
** refused}. */
static void push_report(lua_State *L, const tt_drain_report *rep) {
  lua_createtable(L, 0, 4);
  lt_setint(L, "claimed", (lua_Integer)rep->claimed);
  lt_setint(L, "completed", (lua_Integer)rep->completed);
  lt_setint(L, "failed", (lua_Integer)rep->failed);
  lt_setint(L, "refused", (lua_Integer)rep->refused);
}

/* lt_drain_store is pool:drain_store(store [, ctx [, {pool, allow,
** batch}]]) -> true, report | nil, err [, report] (lpool.c's m_drain_store
** calls it): claims the store's records while 'pool' has room and runs
** each as an op of the pool, with its function 'module:fn' required in
** the worker, only for modules on 'allow' (none by default: nothing
** runs, every record becomes a dead letter), and acknowledges each as it
** ends.  True and the report once nothing is left to claim and every
** claimed op has ended.  When 'ctx' ends first: nil, the context's error
** and the report so far (the ops it started go on and are acknowledged
** as they end).  Nil and an error of code 'closed' when the pool is
** closed ("the pool is closed") or the store is; 'store_unavailable'
** when the store fails.  Raises for a non-store 'store', a non-context
** 'ctx', an unknown option, an 'allow' that is not a list of at most 256
** strings, a 'batch' outside 1 to 4096, and 'interrupted!' on Ctrl-C in
** the main state. */
int lt_drain_store(lua_State *L, tt_pool *pool, lt_env *env) {
  static const char *const known[] = {"pool", "allow", "batch", NULL};
  tt_store *s = lt_checkobj(L, 2, &tt_store_type);
  tt_ctx *ctx = lua_isnoneornil(L, 3) ? NULL
                                      : lt_checkobj(L, 3, &tt_ctx_type);
  const char *allow[MAX_ALLOW];
  tt_drain_opts o;
  tt_drain_report rep;
  pctx pc;
  lt_wait w;
  int rc;
  memset(&o, 0, sizeof o);
  if (!lua_isnoneornil(L, 4)) {
    luaL_checktype(L, 4, LUA_TTABLE);
    lt_checkopts(L, 4, 4, NULL, known, false);
    o.pool = lt_optstring(L, 4, 4, "pool", NULL);
    o.batch = lt_optint(L, 4, 4, "batch", 64, 1, 4096);
    if (lua_getfield(L, 4, "allow") != LUA_TNIL) {
      lua_Integer i, n;
      if (!lua_istable(L, -1))
        lt_fielderror(L, 4, "allow", "must be a list of module names");
      n = (lua_Integer)lua_rawlen(L, -1);
      if (n > MAX_ALLOW) lt_fielderror(L, 4, "allow", "is too long");
      for (i = 1; i <= n; i++) {
        if (lua_rawgeti(L, -1, i) != LUA_TSTRING)
          lt_fielderror(L, 4, "allow", "must be a list of module names");
        allow[o.nallow++] = lua_tostring(L, -1);  /* anchored in the list */
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);  /* the list stays anchored in the options table */
  }
  o.allow = allow;
  pc.L = L;
  pc.env = env;
  o.prepare = prepare;
  o.ud = &pc;
  /* A Ctrl-C ends the wait as it ends every wait of the main state. */
  lt_wait_begin(L, &w);
  rc = tt_pool_drain_store(pool, s, ctx, &o, &rep);
  if (lt_wait_end(L, &w) && rc == TT_EINTR) return lt_interrupted(L);
  if (rc != TT_OK) {
    if (rc == TT_CANCELED || rc == TT_DEADLINE) {
      /* What it did until then, too: the ops it started go on. */
      lua_pushnil(L);
      lt_pushnew(L, tt_error_for(rc));
      push_report(L, &rep);
      return 3;
    }
    if (rc == TT_ECLOSED && tt_store_sync(s) == TT_OK)
      return lt_pusherror(L, TT_ECLOSED, "the pool is closed");
    return store_error(L, s, rc);
  }
  lua_pushboolean(L, 1);
  push_report(L, &rep);
  return 2;
}

/* }==================================================================== */

void lt_open_store(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"stats", m_stats},
    {"dead_letters", m_dead_letters},
    {"retry_dead", m_retry_dead},
    {"drop_dead", m_drop_dead},
    {"close", m_close},
    {"url", m_url},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"open", l_open},
    {"default", l_default},
    {NULL, NULL}
  };
  lt_newtype(L, &tt_store_type, methods, NULL);
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  lua_setfield(L, -2, "store");
}
