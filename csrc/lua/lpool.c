/*
** lpool.c -- tether.pool: worker pools in Lua.
**
** A Lua pool is a small binding object ("tether.Pool") around the
** engine's pool: it adds the Lua environment of its workers (package
** paths, init, interrupt), the idle and resume callbacks, and the log
** lines.  Queueing, retries, quotas, tiers and accounting are the
** engine's (csrc/core/pool.c).
*/
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ltether.h"
#include "lworker.h"

#define MAX_CLASSES 16
#define MAX_QUOTAS 256

typedef struct lp_pool {
  tt_obj hdr;
  tt_pool *pool;
  lt_env *env;
  lt_task *on_idle;      /* may be NULL */
  lt_task *on_resume;    /* may be NULL */
  tt_key tenant_key;     /* copy of the pool's tenant key */
  char *tenant_str;      /* owns tenant_key.str */
  int observer;          /* id from tt_pool_observe, or -1 */
  tt_chan *dlq;          /* receives each dead letter, or NULL */
  lt_env *dl_env;        /* paths, without init, for building them */
  bool quiet;            /* no log lines */
  bool overflow;         /* has an overflow store */
  char name[];
} lp_pool;

static void lp_free(tt_obj *o) {
  lp_pool *p = (lp_pool *)o;
  /* Once unobserve returns, the observer is not running and will not run
  ** again, so what it uses can go. */
  if (p->observer >= 0) tt_pool_unobserve(p->pool, p->observer);
  tt_unref(p->pool);
  if (p->on_idle != NULL) lt_task_drop(p->on_idle);
  if (p->on_resume != NULL) lt_task_drop(p->on_resume);
  tt_unref(p->env);
  tt_unref(p->dlq);
  tt_unref(p->dl_env);
  tt_unref(p->tenant_key.obj);
  free(p->tenant_str);
  free(p);
}

static int lp_describe(tt_obj *o, char *buf, size_t n) {
  lp_pool *p = (lp_pool *)o;
  tt_pool_stats s;
  tt_pool_stats_get(p->pool, &s);
  return snprintf(buf, n, "tether.Pool '%s' (%llu queued, %llu running)",
                  p->name, (unsigned long long)s.queued,
                  (unsigned long long)s.inflight);
}

static const tt_type lp_type = {"tether.Pool", lp_free, lp_describe};

tt_latch *lt_pool_latch(tt_obj *o) {
  if (o->type != &lp_type) return NULL;
  return tt_pool_drained(((lp_pool *)o)->pool);
}

static lp_pool *check_pool(lua_State *L) {
  return lt_checkobj(L, 1, &lp_type);
}

/* {====================================================================
** Events: log lines and callbacks
** ===================================================================== */

static void run_callback(void *arg) {
  tt_obj *out = NULL;
  lt_task_run(tt_background(), arg, &out);
  tt_unref(out);
  lt_task_drop(arg);
}

/* A dead letter on its way to the pool's dlq channel.  The record is
** built as a Lua table on an executor thread (which has a worker state),
** not on whichever thread delivered the event. */
typedef struct dl_job {
  tt_chan *dlq;
  lt_env *env;           /* package paths (no init) for a new state */
  tt_failure f;          /* owns its strings and references */
  char pool[64];
} dl_job;

static void dl_free(dl_job *j) {
  tt_unref(j->dlq);
  tt_unref(j->env);
  tt_unref(j->f.error);
  tt_unref(j->f.cause);
  free(j->f.name);
  free(j->f.tenant);
  free(j);
}

static void push_failure(lua_State *L, const tt_failure *f);

static int dl_build(lua_State *L) {
  dl_job *j = lua_touserdata(L, 1);
  tt_obj *v;
  push_failure(L, &j->f);
  lua_pushstring(L, j->pool);
  lua_setfield(L, -2, "pool");
  v = lt_pack_one(L, -1, "dead letter");
  if (tt_chan_try_send(j->dlq, v) != TT_OK) {
    tt_unref(v);
    return luaL_error(L, "the dlq channel of pool '%s' is full or closed",
                      j->pool);
  }
  return 0;
}

static void dl_run(void *arg) {
  dl_job *j = arg;
  char err[256];
  lua_State *L = lt_thread_state(j->env, err, sizeof err);
  if (L != NULL) {
    int top = lua_gettop(L);
    lua_pushcfunction(L, dl_build);
    lua_pushlightuserdata(L, j);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK)
      snprintf(err, sizeof err, "%s", lua_tostring(L, -1));
    else
      err[0] = '\0';
    lua_settop(L, top);
  }
  /* Losing a dead letter's copy is not silent: it stays in the pool's
  ** dead letters, and the loss is logged. */
  if (err[0] != '\0') {
    tt_field f[] = {TT_FSTR("pool", j->pool), TT_FSTR("name", j->f.name),
                    TT_FSTR("reason", err)};
    tt_log(TT_LOG_WARN, "dead letter not sent to dlq", f, 3);
  }
  dl_free(j);
}

static void send_dead_letter(lp_pool *p, const tt_event *ev) {
  dl_job *j = calloc(1, sizeof *j);
  if (j == NULL) return;
  snprintf(j->pool, sizeof j->pool, "%s", p->name);
  j->dlq = tt_ref(p->dlq);
  j->env = tt_ref(p->dl_env);
  j->f.id = ev->id;
  j->f.name = strdup(ev->name != NULL ? ev->name : "op");
  j->f.tenant = ev->tenant != NULL ? strdup(ev->tenant) : NULL;
  j->f.error = tt_ref(ev->error);
  j->f.cause = tt_ref(ev->cause);
  j->f.code = ev->code;
  j->f.attempts = ev->attempt;
  j->f.at = tt_wall();
  if (j->f.name == NULL || tt_exec(dl_run, j) != TT_OK) dl_free(j);
}

/* lp_observe turns the idle and resume events into one log line each and
** starts the Lua callbacks on the executor; dead letters also go to the
** dlq channel if the pool has one. */
static void lp_observe(const tt_event *ev, void *ud) {
  lp_pool *p = ud;
  const char *msg;
  lt_task *cb;
  if (ev->kind == TT_EV_DEAD) {
    if (p->dlq != NULL) send_dead_letter(p, ev);
    return;
  }
  if (ev->kind == TT_EV_IDLE) {
    msg = "pool idle";
    cb = p->on_idle;
  } else if (ev->kind == TT_EV_RESUMING) {
    msg = "pool resuming";
    cb = p->on_resume;
  } else {
    return;
  }
  if (!p->quiet) {
    tt_field f[] = {TT_FSTR("pool", p->name)};
    tt_log(TT_LOG_INFO, msg, f, 1);
  }
  if (cb != NULL) {
    lt_task *copy = lt_task_clone(cb);
    if (copy != NULL && tt_exec(run_callback, copy) != TT_OK)
      lt_task_drop(copy);
  }
}

/* }==================================================================== */


/* {====================================================================
** Options
** ===================================================================== */

/* The whole set of tether.pool's options (DESIGN section 5): a key not
** listed here raises.  Options that later features add join this list. */
static const char *const pool_options[] = {
  "name", "workers", "queue", "timeout", "shutdown", "retry", "tenant_key",
  "quotas", "priorities", "idle_after", "on_idle", "on_resume",
  "interrupt", "init", "quiet", "dlq", "dead_letters", "failures",
  "overflow", "spill_timeout", NULL
};

/* Conventional class names, highest first, for the map form of
** 'priorities' (a Lua table keeps no order). */
static const char *const rank_names[] = {
  "critical", "high", "default", "normal", "low", "bulk", NULL
};

static int class_rank(lua_State *L, int arg, int cls, const char *name) {
  int i, t = lua_getfield(L, cls, "rank");
  if (t == LUA_TNUMBER) {
    int r = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return r;
  }
  lua_pop(L, 1);
  for (i = 0; rank_names[i] != NULL; i++)
    if (strcmp(rank_names[i], name) == 0) return i;
  lua_pushfstring(L, "class '%s' needs a 'rank' (or use the list form "
                  "{ {name = ..., workers = ...}, ... })", name);
  return luaL_argerror(L, arg, lua_tostring(L, -1));
}

/* check_classes reads 'priorities' at 'idx' into 'cls' (names point into
** strings anchored in the options table) and returns the count. */
static int check_classes(lua_State *L, int arg, int idx, tt_class_opts *cls,
                         int *ranks) {
  int n = 0, i, j;
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx))
    lt_fielderror(L, arg, "priorities", "must be a table");
  if (lua_rawlen(L, idx) > 0) {
    /* The list form: order is priority, first = highest. */
    int len = (int)lua_rawlen(L, idx);
    luaL_argcheck(L, len <= MAX_CLASSES, arg, "too many priority classes");
    for (i = 1; i <= len; i++) {
      lua_rawgeti(L, idx, i);
      if (!lua_istable(L, -1) ||
          lua_getfield(L, -1, "name") != LUA_TSTRING)
        lt_fielderror(L, arg, "priorities", "entries must be tables with a "
                    "string 'name'");
      cls[n].name = lua_tostring(L, -1);
      lua_pop(L, 1);
      cls[n].workers = lt_optint(L, arg, lua_gettop(L), "workers", 1, 1,
                               4096);
      lua_getfield(L, -1, "lend");
      cls[n].lend = lua_toboolean(L, -1);
      lua_pop(L, 2);
      ranks[n] = n;
      n++;
    }
    return n;
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int cpos = lua_gettop(L);
    luaL_argcheck(L, n < MAX_CLASSES, arg, "too many priority classes");
    if (lua_type(L, -2) != LUA_TSTRING || !lua_istable(L, -1))
      lt_fielderror(L, arg, "priorities", "must map class names to tables");
    cls[n].name = lua_tostring(L, -2);
    cls[n].workers = lt_optint(L, arg, cpos, "workers", 1, 1, 4096);
    lua_getfield(L, cpos, "lend");
    cls[n].lend = lua_toboolean(L, -1);
    lua_pop(L, 1);
    ranks[n] = class_rank(L, arg, cpos, cls[n].name);
    n++;
    lua_pop(L, 1);
  }
  /* Sort by rank (insertion sort: a handful of classes). */
  for (i = 1; i < n; i++)
    for (j = i; j > 0 && ranks[j] < ranks[j - 1]; j--) {
      tt_class_opts tc = cls[j];
      int tr = ranks[j];
      cls[j] = cls[j - 1];
      ranks[j] = ranks[j - 1];
      cls[j - 1] = tc;
      ranks[j - 1] = tr;
    }
  for (i = 1; i < n; i++)
    if (ranks[i] == ranks[i - 1]) {
      lua_pushfstring(L, "classes '%s' and '%s' have the same rank",
                      cls[i - 1].name, cls[i].name);
      luaL_argerror(L, arg, lua_tostring(L, -1));
    }
  return n;
}

static int check_quotas(lua_State *L, int arg, int idx, tt_quota *q,
                        int *def) {
  int n = 0;
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx))
    lt_fielderror(L, arg, "quotas", "must be a table");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int isint;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    if (lua_type(L, -2) != LUA_TSTRING)
      lt_fielderror(L, arg, "quotas", "keys must be tenant names");
    if (lua_type(L, -1) != LUA_TNUMBER || !isint || v < 1 || v > 1 << 30) {
      lua_pushfstring(L, "quota of '%s' must be a positive integer, "
                      "got %s", lua_tostring(L, -2),
                      lua_type(L, -1) == LUA_TNUMBER
                          ? lua_pushfstring(L, "%s", lua_tostring(L, -1))
                          : luaL_typename(L, -1));
      luaL_argerror(L, arg, lua_tostring(L, -1));
    }
    if (strcmp(lua_tostring(L, -2), "default") == 0) {
      *def = (int)v;
    } else {
      luaL_argcheck(L, n < MAX_QUOTAS, arg, "too many quotas");
      q[n].tenant = lua_tostring(L, -2);
      q[n].limit = (int)v;
      n++;
    }
    lua_pop(L, 1);
  }
  return n;
}

/* }==================================================================== */


/* {====================================================================
** tether.pool{...}
** ===================================================================== */

static int l_pool(lua_State *L) {
  tt_pool_opts o;
  tt_class_opts cls[MAX_CLASSES];
  int ranks[MAX_CLASSES];
  tt_quota quotas[MAX_QUOTAS];
  lp_pool *p;
  size_t nlen;
  const char *name;
  int err = TT_OK, init_idx = 0, top;
  bool interrupt;

  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lt_checkopts(L, 1, 1, NULL, pool_options, false);
  memset(&o, 0, sizeof o);
  lua_getfield(L, 1, "name");
  name = lua_isnil(L, -1) ? "pool" : lua_tolstring(L, -1, &nlen);
  if (name == NULL) lt_fielderror(L, 1, "name", "must be a string");
  nlen = strlen(name);
  o.name = name;
  o.workers = lt_optint(L, 1, 1, "workers", 0, 0, 4096);
  o.queue = lt_optint(L, 1, 1, "queue", 64, 0, 1 << 24);
  o.timeout = lt_optnumber(L, 1, 1, "timeout", 0, 0);
  o.idle_after = lt_optnumber(L, 1, 1, "idle_after", 0, 0);
  /* The engine reads 0 as "the default" and < 0 as "keep none". */
  o.dead_cap = lt_optint(L, 1, 1, "dead_letters", 100, 0, 1 << 20);
  if (o.dead_cap == 0) o.dead_cap = -1;
  o.failures_cap = lt_optint(L, 1, 1, "failures", 100, 0, 1 << 20);
  if (o.failures_cap == 0) o.failures_cap = -1;
  o.retry.attempts = 1;
  if (lua_getfield(L, 1, "retry") != LUA_TNIL)
    lt_checkretry(L, 1, -1, &o.retry);
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "shutdown") != LUA_TNIL) {
    o.shutdown = lt_testobj(L, -1, &tt_ctx_type);
    if (o.shutdown == NULL)
      lt_fielderror(L, 1, "shutdown", "must be a tether.Context");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "priorities") != LUA_TNIL) {
    o.nclasses = check_classes(L, 1, -1, cls, ranks);
    o.classes = cls;
  }
  top = lua_gettop(L);  /* keeps the class names anchored */
  if (lua_getfield(L, 1, "quotas") != LUA_TNIL) {
    o.nquotas = check_quotas(L, 1, -1, quotas, &o.quota_default);
    o.quotas = quotas;
  }
  lua_getfield(L, 1, "tenant_key");
  if (lua_type(L, -1) == LUA_TSTRING) {
    o.tenant_key.str = lua_tolstring(L, -1, &o.tenant_key.len);
  } else if (!lua_isnil(L, -1)) {
    o.tenant_key.obj = lt_testobj(L, -1, lt_key_type());
    if (o.tenant_key.obj == NULL)
      lt_fielderror(L, 1, "tenant_key", "must be a string or a tether.Key");
  }
  if (o.nquotas > 0 || o.quota_default > 0)
    if (o.tenant_key.str == NULL && o.tenant_key.obj == NULL)
      lt_fielderror(L, 1, "quotas", "need a 'tenant_key'");
  lua_getfield(L, 1, "interrupt");
  interrupt = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (lt_optfunction(L, 1, 1, "init")) init_idx = lua_gettop(L);
  if (lua_getfield(L, 1, "overflow") != LUA_TNIL) {
    o.overflow = lt_testobj(L, -1, &tt_store_type);
    if (o.overflow == NULL)
      lt_fielderror(L, 1, "overflow", "must be a tether.Store");
  }
  lua_pop(L, 1);  /* the options table keeps the store alive */
  o.spill_timeout = lt_optnumber(L, 1, 1, "spill_timeout", 5, 0);
  if (o.spill_timeout <= 0)
    lt_fielderror(L, 1, "spill_timeout", "must be positive");

  p = calloc(1, sizeof *p + nlen + 1);
  if (p == NULL) return luaL_error(L, "not enough memory");
  tt_obj_init(&p->hdr, &lp_type);
  memcpy(p->name, name, nlen + 1);
  p->observer = -1;
  p->overflow = o.overflow != NULL;
  lt_pushnew(L, p);  /* from here on, an error frees it through __gc */
  p->env = lt_env_new(L, init_idx, interrupt, name);
  if (lt_optfunction(L, 1, 1, "on_idle")) {
    p->on_idle = lt_task_new(L, NULL, lua_gettop(L), 0, 0, false,
                             "on_idle");
    lua_pop(L, 1);
  }
  if (lt_optfunction(L, 1, 1, "on_resume")) {
    p->on_resume = lt_task_new(L, NULL, lua_gettop(L), 0, 0, false,
                               "on_resume");
    lua_pop(L, 1);
  }
  lua_getfield(L, 1, "quiet");
  p->quiet = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "dlq") != LUA_TNIL) {
    tt_chan *c = lt_testobj(L, -1, &tt_chan_type);
    if (c == NULL) lt_fielderror(L, 1, "dlq", "must be a tether.Chan");
    p->dlq = tt_ref(c);
    p->dl_env = lt_env_new(L, 0, false, name);
  }
  lua_pop(L, 1);
  if (o.tenant_key.str != NULL) {
    p->tenant_str = malloc(o.tenant_key.len + 1);
    if (p->tenant_str == NULL) return luaL_error(L, "not enough memory");
    memcpy(p->tenant_str, o.tenant_key.str, o.tenant_key.len + 1);
    p->tenant_key.str = p->tenant_str;
    p->tenant_key.len = o.tenant_key.len;
  }
  p->tenant_key.obj = tt_ref(o.tenant_key.obj);
  p->pool = tt_pool_new(&o, &err);
  (void)top;
  if (p->pool == NULL) {
    if (err == TT_EINVAL)
      return luaL_argerror(L, 1, "invalid pool options (workers must "
                           "equal the sum of the priority classes')");
    return luaL_error(L, "cannot create pool '%s': %s", name,
                      tt_strerror(err));
  }
  /* Events cost the pool something only while someone observes them:
  ** observe only for what this binding does with them. */
  if (o.idle_after > 0 || p->dlq != NULL)
    p->observer = tt_pool_observe(p->pool, lp_observe, p);
  return 1;
}

/* }==================================================================== */


/* {====================================================================
** Methods
** ===================================================================== */

/* tenant_of reads the tenant of 'parent' for an error message. */
static void push_tenant(lua_State *L, lp_pool *p, tt_ctx *parent) {
  tt_obj *v = NULL;
  if ((p->tenant_key.str != NULL || p->tenant_key.obj != NULL) &&
      tt_ctx_value(parent, &p->tenant_key, &v) && v != NULL) {
    lt_unpack_one(L, v);
    tt_unref(v);
  } else {
    lua_pushliteral(L, "default");
  }
}

/* refuse pushes nil and the refusal error with a message that says
** which pool (and tenant) refused. */
static int refuse(lua_State *L, lp_pool *p, tt_ctx *parent, int code) {
  tt_error *e;
  const char *msg;
  tt_obj *tenant = NULL;
  if (code == TT_EQUOTA) {
    push_tenant(L, p, parent);
    msg = lua_pushfstring(L, "quota exceeded: tenant '%s' of pool '%s'",
                          luaL_tolstring(L, -1, NULL), p->name);
    tenant = lt_pack_one(L, -3, "tenant");
  } else if (code == TT_EQUEUE_FULL && p->overflow) {
    msg = lua_pushfstring(L, "queue full: pool '%s' (only named ops "
                          "\"module:function\" with plain-data arguments "
                          "spill to its store)", p->name);
  } else if (code == TT_EQUEUE_FULL) {
    msg = lua_pushfstring(L, "queue full: pool '%s'", p->name);
  } else if (code == TT_ECLOSED) {
    msg = lua_pushfstring(L, "pool '%s' is closed", p->name);
  } else {
    msg = lua_pushfstring(L, "pool '%s': %s", p->name, tt_strerror(code));
  }
  e = tt_error_new(code, msg, NULL);
  if (e == NULL) {
    tt_unref(tenant);
    return luaL_error(L, "not enough memory");
  }
  e->value = tenant;
  lua_pushnil(L);
  lt_pushnew(L, e);
  return 2;
}

/* spill writes a named op to the pool's overflow store (the queue was
** full); arguments that are not plain data keep it out: the submission
** is then refused, or queued if room appeared meanwhile. */
static int spill(lua_State *L, lp_pool *p, tt_ctx *parent,
                 tt_submit_opts *so, int nargs) {
  tt_buf b = TT_BUF_INIT;
  char why[200];
  int err = TT_OK;
  tt_handle *h;
  if (!lt_wire_args(L, 5, nargs, &b, why, sizeof why)) {
    const char *msg;
    tt_buf_free(&b);
    so->spill_fn = NULL;
    err = tt_pool_precheck(p->pool, parent, so);
    if (err == TT_OK) {
      char what[160];
      lt_task *t;
      snprintf(what, sizeof what, "task '%s'", so->name ? so->name : "op");
      t = lt_task_new(L, p->env, 4, 5, nargs, true, what);
      h = tt_pool_submit(p->pool, parent, so, lt_task_run, t, lt_task_drop,
                         &err);
      if (h != NULL) {
        lt_pushnew(L, h);
        return 1;
      }
      lt_task_drop(t);
    }
    if (err != TT_EQUEUE_FULL) return refuse(L, p, parent, err);
    msg = lua_pushfstring(L, "queue full: pool '%s' (the op cannot spill "
                          "to its store: %s)", p->name, why);
    return lt_pusherror(L, TT_EQUEUE_FULL, msg);
  }
  so->spill_args = b.data;
  so->spill_args_len = b.len;
  h = tt_pool_spill(p->pool, parent, so, &err);
  tt_buf_free(&b);
  if (h == NULL) {
    if (err == TT_EQUEUE_FULL) {
      const char *msg = lua_pushfstring(
          L, "queue full: pool '%s' (the op's record is larger than its "
          "store's max_payload of %d bytes)", p->name,
          (int)tt_store_max_payload(tt_pool_overflow(p->pool)));
      return lt_pusherror(L, TT_EQUEUE_FULL, msg);
    }
    if (err == TT_EINVAL) return luaL_error(L, "cannot spill the op");
    return refuse(L, p, parent, err);
  }
  lt_pushnew(L, h);
  return 1;
}

/* pool:submit(parent, name_or_opts, fn, ...) -> handle | nil, err */
static int m_submit(lua_State *L) {
  lp_pool *p = check_pool(L);
  tt_ctx *parent = lt_checkobj(L, 2, &tt_ctx_type);
  tt_submit_opts so;
  tt_retry retry;
  char what[160];
  int nargs = lua_gettop(L) - 4, err = TT_OK;
  lt_task *t;
  tt_handle *h;
  memset(&so, 0, sizeof so);
  if (nargs < 0) nargs = 0;
  if (lua_type(L, 3) == LUA_TSTRING) {
    so.name = lua_tostring(L, 3);
  } else if (lua_istable(L, 3)) {
    if (lua_getfield(L, 3, "name") == LUA_TSTRING)
      so.name = lua_tostring(L, -1);
    else if (!lua_isnil(L, -1))
      lt_fielderror(L, 3, "name", "must be a string");
    lua_pop(L, 1);  /* the string stays anchored in the options table */
    if (lua_getfield(L, 3, "retry") != LUA_TNIL) {
      lt_checkretry(L, 3, -1, &retry);
      so.retry = &retry;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 3, "priority") == LUA_TSTRING)
      so.priority = lua_tostring(L, -1);
    else if (!lua_isnil(L, -1))
      lt_fielderror(L, 3, "priority", "must be a string");
    lua_pop(L, 1);
    so.timeout = lt_optnumber(L, 3, 3, "timeout", 0, 0);
    so.wait = lt_optnumber(L, 3, 3, "wait", 0, 0);
  } else {
    const char *msg = lua_pushfstring(L, "string or table expected, got %s",
                                      luaL_typename(L, 3));
    return luaL_argerror(L, 3, msg);
  }
  if (lua_type(L, 4) != LUA_TSTRING) luaL_checktype(L, 4, LUA_TFUNCTION);
  /* A named op may travel to the overflow store when the queue is full. */
  if (p->overflow && lua_type(L, 4) == LUA_TSTRING)
    so.spill_fn = lua_tostring(L, 4);
  /* Refuse before packing anything: callers retry on queue_full, and a
  ** refusal should cost them little. */
  err = tt_pool_precheck(p->pool, parent, &so);
  if (err == TT_ESPILLED)
    return spill(L, p, parent, &so, nargs);
  if (err == TT_OK) {
    snprintf(what, sizeof what, "task '%s'", so.name ? so.name : "op");
    t = lt_task_new(L, p->env, 4, 5, nargs, true, what);
    h = tt_pool_submit(p->pool, parent, &so, lt_task_run, t, lt_task_drop,
                       &err);
    if (h == NULL) lt_task_drop(t);
  } else {
    h = NULL;
  }
  if (h == NULL) {
    if (err == TT_EINVAL && so.priority != NULL) {
      const char *msg = lua_pushfstring(L, "unknown priority class '%s'",
                                        so.priority);
      return luaL_argerror(L, 3, msg);
    }
    return refuse(L, p, parent, err);
  }
  lt_pushnew(L, h);
  return 1;
}

/* pool:drain([ctx]) -> true | nil, err.  Only the context bounds the
** wait, so drain(tether.with_timeout(...)) reads naturally (the cancel
** function that comes along is ignored). */
static int m_drain(lua_State *L) {
  lp_pool *p = check_pool(L);
  tt_ctx *ctx = lua_isnoneornil(L, 2) ? NULL
                                      : lt_checkobj(L, 2, &tt_ctx_type);
  int r = tt_pool_drain(p->pool, ctx, -1);
  if (r == TT_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lt_pushnew(L, tt_error_for(r));
  return 2;
}

static int m_close(lua_State *L) {
  tt_pool_close(check_pool(L)->pool);
  return 0;
}

static int m_name(lua_State *L) {
  lua_pushstring(L, check_pool(L)->name);
  return 1;
}

static void set_int(lua_State *L, const char *k, unsigned long long v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

static int m_stats(lua_State *L) {
  tt_pool_stats s;
  tt_pool_stats_get(check_pool(L)->pool, &s);
  lua_createtable(L, 0, 13);
  set_int(L, "submitted", s.submitted);
  set_int(L, "completed", s.completed);
  set_int(L, "failed", s.failed);
  set_int(L, "retried", s.retried);
  set_int(L, "stopped", s.stopped);
  set_int(L, "dead", s.dead);
  set_int(L, "rejected", s.rejected);
  set_int(L, "queued", s.queued);
  set_int(L, "inflight", s.inflight);
  set_int(L, "spilled", s.spilled);
  set_int(L, "abandoned", s.abandoned);
  set_int(L, "dead_held", s.dead_held);
  set_int(L, "dead_dropped", s.dead_dropped);
  return 1;
}

static int m_inflight(lua_State *L) {
  lp_pool *p = check_pool(L);
  tt_inflight buf[256];
  size_t n = tt_pool_inflight(p->pool, buf, 256), i;
  if (n > 256) n = 256;
  lua_createtable(L, (int)n, 0);
  for (i = 0; i < n; i++) {
    lua_createtable(L, 0, 6);
    set_int(L, "id", buf[i].id);
    lua_pushstring(L, buf[i].name);
    lua_setfield(L, -2, "name");
    if (buf[i].tenant[0] != '\0') {
      lua_pushstring(L, buf[i].tenant);
      lua_setfield(L, -2, "tenant");
    }
    lua_pushstring(L, buf[i].priority);
    lua_setfield(L, -2, "priority");
    lua_pushnumber(L, buf[i].started);
    lua_setfield(L, -2, "started");
    set_int(L, "attempt", (unsigned long long)buf[i].attempt);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static void push_cause(lua_State *L, tt_obj *c) {
  if (c != NULL && c->type == &lt_value_type) lt_unpack_one(L, c);
  else lt_pushobj(L, c);
}

/* push_failure pushes a failure record or dead letter as a table:
** {id, name, tenant, error, traceback, code, cause, attempts, at}. */
static void push_failure(lua_State *L, const tt_failure *f) {
  tt_error *e = (f->error != NULL && f->error->type == &tt_error_type)
                    ? (tt_error *)f->error : NULL;
  lua_createtable(L, 0, 10);
  set_int(L, "id", f->id);
  lua_pushstring(L, f->name);
  lua_setfield(L, -2, "name");
  lua_pushstring(L, f->tenant);
  lua_setfield(L, -2, "tenant");
  lua_pushstring(L, e != NULL ? e->message : tt_strerror(f->code));
  lua_setfield(L, -2, "error");
  lua_pushstring(L, e != NULL ? e->traceback : NULL);
  lua_setfield(L, -2, "traceback");
  lua_pushstring(L, tt_errname(f->code));
  lua_setfield(L, -2, "code");
  push_cause(L, f->cause);
  lua_setfield(L, -2, "cause");
  set_int(L, "attempts", (unsigned long long)f->attempts);
  lua_pushnumber(L, f->at);
  lua_setfield(L, -2, "at");
}

static int push_failures(lua_State *L, tt_failure *f, size_t n) {
  size_t i;
  lua_createtable(L, (int)n, 0);
  for (i = 0; i < n; i++) {
    push_failure(L, &f[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  tt_failures_free(f, n);
  return 1;
}

static int m_failures(lua_State *L) {
  size_t n = 0;
  tt_failure *f = tt_pool_failures(check_pool(L)->pool, &n);
  return push_failures(L, f, n);
}

static int m_dead_letters(lua_State *L) {
  size_t n = 0;
  tt_failure *f = tt_pool_dead_letters(check_pool(L)->pool, &n);
  return push_failures(L, f, n);
}

static uint64_t check_id(lua_State *L, int arg) {
  lua_Integer id;
  if (lua_istable(L, arg)) {
    lua_getfield(L, arg, "id");
    lua_replace(L, arg);
  }
  id = luaL_checkinteger(L, arg);
  luaL_argcheck(L, id > 0, arg, "dead letter id expected");
  return (uint64_t)id;
}

static int m_retry_dead(lua_State *L) {
  lp_pool *p = check_pool(L);
  int err = TT_OK;
  tt_handle *h = tt_pool_retry_dead(p->pool, check_id(L, 2), &err);
  if (h == NULL) return lt_pusherror(L, err, NULL);
  lt_pushnew(L, h);
  return 1;
}

static int m_drop_dead(lua_State *L) {
  lp_pool *p = check_pool(L);
  lua_pushboolean(L, tt_pool_drop_dead(p->pool, check_id(L, 2)));
  return 1;
}

/* pool:drain_store(store [, ctx [, {pool = NAME, allow = {"mod", ...},
** batch = n}]]) -> true, report | nil, err: runs the store's records on
** this pool until nothing is left to claim (DESIGN section 11). */
static int m_drain_store(lua_State *L) {
  lp_pool *p = check_pool(L);
  return lt_drain_store(L, p->pool, p->env);
}

static int m_drained(lua_State *L) {
  check_pool(L);
  lua_pushvalue(L, 1);
  return 1;
}

/* }==================================================================== */

void lt_open_pool(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"submit", m_submit},
    {"drain", m_drain},
    {"close", m_close},
    {"name", m_name},
    {"stats", m_stats},
    {"inflight", m_inflight},
    {"failures", m_failures},
    {"dead_letters", m_dead_letters},
    {"retry_dead", m_retry_dead},
    {"drop_dead", m_drop_dead},
    {"drained", m_drained},
    {"drain_store", m_drain_store},
    {NULL, NULL}
  };
  lt_newtype(L, &lp_type, methods, NULL);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_pool);
  lua_setfield(L, -2, "pool");
}
