/*
** lpool.c -- tether.pool: worker pools in Lua.
**
** A Lua pool is a small binding object ("tether.Pool") around the
** engine's pool: it adds the Lua environment of its workers (package
** paths, init, interrupt), the idle and resume callbacks, and the log
** lines.  Queueing, retries, quotas, tiers and accounting are the
** engine's (csrc/core/pool.c).
**
** Observability is the engine's too, attached here to every pool: its
** metrics (unless metrics = false), a log line per op outcome (unless
** quiet = true), a span per attempt (the trace hook, which costs nothing
** while tracing is off), and pool:events() channels.
*/
#include <math.h>
#include <stdatomic.h>
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
  struct evcount *evc;   /* events lost by full pool:events() channels */
  bool overflow;         /* has an overflow store */
  char name[];
} lp_pool;

/* The count of events that pool:events() channels lost, shared by the
** pool object and the channels' observers, which live as long as the
** engine's pool (they may outlive the object). */
typedef struct evcount {
  _Atomic long refs;
  _Atomic uint64_t dropped;
} evcount;

static void evc_unref(evcount *c) {
  if (c != NULL && atomic_fetch_sub(&c->refs, 1) == 1) free(c);
}

static void lp_free(tt_obj *o) {
  lp_pool *p = (lp_pool *)o;
  /* Once unobserve returns, the observer is not running and will not run
  ** again, so what it uses can go. */
  if (p->observer >= 0) tt_pool_unobserve(p->pool, p->observer);
  /* Collected while its state lives: no drain at exit (see lexit.c). */
  if (p->pool != NULL) tt_exit_untrack(p->pool);
  tt_unref(p->pool);
  evc_unref(p->evc);
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

/* A pool object holds its dead-letter channel and its environment (whose
** init function may hold objects). */
static void lp_traverse(tt_obj *o, tt_visit visit, void *ud) {
  lp_pool *p = (lp_pool *)o;
  visit((tt_obj *)p->dlq, ud);
  visit((tt_obj *)p->env, ud);
}

static const tt_type lp_type = {"tether.Pool", lp_free, lp_describe,
                                lp_traverse};

tt_latch *lt_pool_latch(tt_obj *o) {
  if (o->type != &lp_type) return NULL;
  return tt_pool_drained(((lp_pool *)o)->pool);
}

tt_pool *lt_pool_engine(tt_obj *o, lt_env **env) {
  if (o == NULL || o->type != &lp_type) return NULL;
  if (env != NULL) *env = ((lp_pool *)o)->env;
  return ((lp_pool *)o)->pool;
}

static lp_pool *check_pool(lua_State *L) {
  return lt_checkobj(L, 1, &lp_type);
}

/* {====================================================================
** Events: log lines and callbacks
** ===================================================================== */

/* A run of on_idle or on_resume: the task, and what its failure is
** logged as ("on_idle failed", with the pool's name). */
typedef struct cb_job {
  lt_task *task;
  const char *msg;
  char pool[64];
} cb_job;

static void run_callback(void *arg) {
  cb_job *j = arg;
  tt_obj *out = NULL;
  if (lt_task_run(tt_background(), j->task, &out) != TT_OK)
    lt_log_failure(j->msg, j->pool, out);
  tt_unref(out);
  lt_task_drop(j->task);
  free(j);
}

/* start_callback runs 'cb' on the executor; one that cannot start is
** logged, never skipped in silence. */
static void start_callback(lp_pool *p, lt_task *cb, const char *msg) {
  cb_job *j = malloc(sizeof *j);
  if (j != NULL) {
    j->task = lt_task_clone(cb);
    j->msg = msg;
    snprintf(j->pool, sizeof j->pool, "%s", p->name);
  }
  if (j == NULL || j->task == NULL || tt_exec(run_callback, j) != TT_OK) {
    tt_field f[] = {TT_FSTR("pool", p->name), TT_FSTR("callback", msg)};
    if (j != NULL) {
      if (j->task != NULL) lt_task_drop(j->task);
      free(j);
    }
    tt_log(TT_LOG_ERROR, "callback not run", f, 2);
  }
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

/* dl_lost logs a dead letter whose copy the dlq channel will not get
** (the pool still holds the dead letter itself). */
static void dl_lost(const char *pool, const char *name, const char *why) {
  tt_field f[] = {TT_FSTR("pool", pool),
                  TT_FSTR("name", name != NULL ? name : "op"),
                  TT_FSTR("reason", why)};
  tt_log(TT_LOG_WARN, "dead letter not sent to dlq", f, 3);
}

/* dl_build, called protected in the executor thread's worker state, makes the
** dead letter's record (with 'pool') and offers it to the dlq channel without
** waiting: the pool never blocks on its dlq.  A full or closed channel raises,
** so that dl_run logs the loss (dl_lost). */
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
  if (err[0] != '\0') dl_lost(j->pool, j->f.name, err);
  dl_free(j);
}

static void send_dead_letter(lp_pool *p, const tt_event *ev) {
  dl_job *j = calloc(1, sizeof *j);
  if (j == NULL) {
    dl_lost(p->name, ev->name, "not enough memory");
    return;
  }
  snprintf(j->pool, sizeof j->pool, "%s", p->name);
  j->dlq = tt_ref(p->dlq);
  j->env = tt_ref(p->dl_env);
  j->f.id = ev->id;
  j->f.name = strdup(ev->name != NULL ? ev->name : "op");
  if (ev->tenant != NULL) {
    j->f.tenant = malloc(ev->tenant_len + 1);
    if (j->f.tenant == NULL) {
      dl_lost(p->name, ev->name, "not enough memory");
      dl_free(j);
      return;
    }
    memcpy(j->f.tenant, ev->tenant, ev->tenant_len + 1);
    j->f.tenant_len = ev->tenant_len;
  }
  j->f.error = tt_ref(ev->error);
  j->f.cause = tt_ref(ev->cause);
  j->f.code = ev->code;
  j->f.attempts = ev->attempt;
  j->f.at = tt_wall();
  if (j->f.name == NULL || tt_exec(dl_run, j) != TT_OK) {
    dl_lost(p->name, ev->name, "cannot start the copy");
    dl_free(j);
  }
}

/* lp_observe turns the idle and resume events into one log line each and
** starts the Lua callbacks on the executor; dead letters also go to the
** dlq channel if the pool has one. */
static void lp_observe(const tt_event *ev, void *ud) {
  lp_pool *p = ud;
  const char *msg, *cbmsg;
  lt_task *cb;
  if (ev->kind == TT_EV_DEAD) {
    if (p->dlq != NULL) send_dead_letter(p, ev);
    return;
  }
  if (ev->kind == TT_EV_IDLE) {
    msg = "pool idle";
    cb = p->on_idle;
    cbmsg = "on_idle failed";
  } else if (ev->kind == TT_EV_RESUMING) {
    msg = "pool resuming";
    cb = p->on_resume;
    cbmsg = "on_resume failed";
  } else {
    return;
  }
  if (!p->quiet) {
    tt_field f[] = {TT_FSTR("pool", p->name)};
    tt_log(TT_LOG_INFO, msg, f, 1);
  }
  if (cb != NULL) start_callback(p, cb, cbmsg);
}

/* }==================================================================== */


/* {====================================================================
** Tenants
** ===================================================================== */

/* A tenant is a string or a number, taken by value: a string is its name,
** compared whole (any length, any bytes); a number names the tenant
** spelled as its value in decimal, integers (and floats with an integral
** value, so 1 and 1.0) as integers.  So 1, 1.0 and "1" are one tenant,
** whose name is "1", as a quota table's key [1] or ["1"] names it.  Any
** other value (a table, a boolean, NaN) is refused: one value must always
** name the same bucket. */

/* push_number_name pushes the name of the number at 'idx'; it returns
** false (nothing pushed) for NaN. */
static bool push_number_name(lua_State *L, int idx) {
  lua_Number d;
  char buf[64];
  int prec;
  if (lua_isinteger(L, idx)) {
    lua_pushfstring(L, "%I", (LUAI_UACINT)lua_tointeger(L, idx));
    return true;
  }
  d = lua_tonumber(L, idx);
  if (isnan(d)) return false;
  if (d == floor(d) && d >= -9223372036854775808.0 &&
      d < 9223372036854775808.0) {
    lua_pushfstring(L, "%I", (LUAI_UACINT)(lua_Integer)d);
    return true;
  }
  if (isinf(d)) {
    lua_pushstring(L, d > 0 ? "inf" : "-inf");
    return true;
  }
  /* The shortest form that reads back as the same double. */
  for (prec = 15; prec <= 17; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, (double)d);
    if (strtod(buf, NULL) == (double)d) break;
  }
  lua_pushstring(L, buf);
  return true;
}

/* push_tenant_name pushes the name of the tenant value at 'idx', or
** raises argument error 'arg' of the calling function naming 'what'. */
static void push_tenant_name(lua_State *L, int idx, int arg,
                             const char *what) {
  int t = lua_type(L, idx);
  if (t == LUA_TSTRING) {
    lua_pushvalue(L, idx);
    return;
  }
  if (t == LUA_TNUMBER && push_number_name(L, idx)) return;
  luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a string or a "
                                           "number, got %s", what,
                                        t == LUA_TNUMBER
                                          ? "NaN" : luaL_typename(L, idx)));
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
  "exit_timeout", "metrics", "overflow", "spill_timeout", NULL
};

/* The whole set of pool:submit's options (DESIGN section 5). */
static const char *const submit_options[] = {
  "name", "retry", "priority", "timeout", "wait", NULL
};

/* check_metrics reads the 'metrics' option: true (the default), false,
** or {tenant = bool, max_tenants = n}; false if the pool has none. */
static bool check_metrics(lua_State *L, tt_pool_metrics_opts *mo) {
  static const char *const known[] = {"tenant", "max_tenants", NULL};
  bool on = true;
  memset(mo, 0, sizeof *mo);
  switch (lua_getfield(L, 1, "metrics")) {
    case LUA_TNIL: break;
    case LUA_TBOOLEAN: on = lua_toboolean(L, -1); break;
    case LUA_TTABLE:
      lt_checkopts(L, 1, -1, "metrics", known, false);
      mo->tenant = lt_optboolean(L, 1, lua_gettop(L), "metrics.tenant",
                                 false);
      mo->max_tenants = lt_optint(L, 1, lua_gettop(L),
                                  "metrics.max_tenants", 100, 1, 100000);
      break;
    default:
      lt_fielderror(L, 1, "metrics", "must be a boolean or a table");
  }
  lua_pop(L, 1);
  return on;
}

/* Conventional class names, highest first, for the map form of
** 'priorities' (a Lua table keeps no order). */
static const char *const rank_names[] = {
  "critical", "high", "default", "normal", "low", "bulk", NULL
};

static int class_rank(lua_State *L, int arg, int cls, const char *name) {
  int i, t = lua_getfield(L, cls, "rank");
  lua_pop(L, 1);
  if (t != LUA_TNIL)
    return lt_optint(L, arg, cls, "rank", 0, -(1 << 20), 1 << 20);
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
    static const char *const known[] = {"name", "workers", "lend", NULL};
    int len = (int)lua_rawlen(L, idx);
    luaL_argcheck(L, len <= MAX_CLASSES, arg, "too many priority classes");
    for (i = 1; i <= len; i++) {
      int cpos;
      lua_rawgeti(L, idx, i);
      cpos = lua_gettop(L);
      if (!lua_istable(L, cpos) ||
          lua_getfield(L, cpos, "name") != LUA_TSTRING)
        lt_fielderror(L, arg, "priorities", "entries must be tables with a "
                    "string 'name'");
      lt_checkopts(L, arg, cpos, lua_pushfstring(L, "priorities[%d]", i),
                   known, false);
      lua_pop(L, 1);
      cls[n].name = lua_tostring(L, -1);
      lua_pop(L, 1);
      cls[n].workers = lt_optint(L, arg, cpos, "workers", 1, 1, 4096);
      cls[n].lend = lt_optboolean(L, arg, cpos, "lend", false);
      lua_pop(L, 1);
      for (j = 0; j < n; j++)
        if (strcmp(cls[j].name, cls[n].name) == 0) {
          lua_pushfstring(L, "priority class '%s' is listed twice",
                          cls[n].name);
          luaL_argerror(L, arg, lua_tostring(L, -1));
        }
      ranks[n] = n;
      n++;
    }
    return n;
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    static const char *const known[] = {"workers", "lend", "rank", NULL};
    int cpos = lua_gettop(L);
    luaL_argcheck(L, n < MAX_CLASSES, arg, "too many priority classes");
    if (lua_type(L, -2) != LUA_TSTRING || !lua_istable(L, -1))
      lt_fielderror(L, arg, "priorities", "must map class names to tables");
    cls[n].name = lua_tostring(L, -2);
    lt_checkopts(L, arg, cpos,
                 lua_pushfstring(L, "priorities.%s", cls[n].name), known,
                 false);
    lua_pop(L, 1);
    cls[n].workers = lt_optint(L, arg, cpos, "workers", 1, 1, 4096);
    cls[n].lend = lt_optboolean(L, arg, cpos, "lend", false);
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

/* check_quotas reads 'quotas' at 'idx' into 'q' (names are strings
** left on the stack, one per quota, from 'names' on) and returns the
** count; the entry 'default' goes to '*def'. */
static int check_quotas(lua_State *L, int arg, int idx, tt_quota *q,
                        int *def) {
  int n = 0, i;
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx))
    lt_fielderror(L, arg, "quotas", "must be a table");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int isint;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    size_t len;
    luaL_checkstack(L, 4, "too many quotas");
    const char *name;
    if (lua_type(L, -2) != LUA_TSTRING && lua_type(L, -2) != LUA_TNUMBER)
      lt_fielderror(L, arg, "quotas", "keys must be tenants (strings or "
                    "numbers)");
    push_tenant_name(L, -2, arg, "a tenant in 'quotas'");
    name = lua_tolstring(L, -1, &len);
    if (lua_type(L, -2) != LUA_TNUMBER || !isint || v < 1 || v > 1 << 30) {
      lua_pushfstring(L, "quota of '%s' must be a positive integer, "
                      "got %s", name,
                      lua_type(L, -2) == LUA_TNUMBER
                          ? lua_pushfstring(L, "%s", lua_tostring(L, -2))
                          : luaL_typename(L, -2));
      luaL_argerror(L, arg, lua_tostring(L, -1));
    }
    if (lua_type(L, -3) == LUA_TSTRING && strcmp(name, "default") == 0 &&
        len == 7) {
      *def = (int)v;
      lua_pop(L, 2);
      continue;
    }
    if (strlen(name) != len) {
      lua_pushfstring(L, "a tenant in 'quotas' cannot hold a NUL byte "
                      "('%s...')", name);
      luaL_argerror(L, arg, lua_tostring(L, -1));
    }
    for (i = 0; i < n; i++)
      if (strcmp(q[i].tenant, name) == 0) {
        lua_pushfstring(L, "'quotas' names tenant '%s' twice", name);
        luaL_argerror(L, arg, lua_tostring(L, -1));
      }
    luaL_argcheck(L, n < MAX_QUOTAS, arg, "too many quotas");
    q[n].tenant = name;
    q[n].limit = (int)v;
    n++;
    /* The name stays on the stack below the key, anchored. */
    lua_insert(L, -3);
    lua_pop(L, 1);
  }
  return n;
}

/* }==================================================================== */


/* {====================================================================
** tether.pool{...}
** ===================================================================== */

/* tether.pool(options) -> pool: makes a pool of worker threads, each with its
** own Lua state, and starts them, with the options of DESIGN section 5
** (pool_options[]; every one optional; docs/api.md has the table).  Raises for
** a non-table argument, an unknown key (naming the nearest known one), a field
** of the wrong type or out of range, 'quotas' without 'tenant_key', 'workers'
** that differs from the classes' sum, a 'shutdown' that is not a context, a
** 'dlq' that is not a channel, an 'overflow' that is neither a store nor false,
** a 'spill_timeout' that is not positive, an 'init' or callback that cannot
** cross, and when the pool cannot be made ('cannot create pool ...').  Each
** invalid combination raises with its own message.  Across threads: 'init',
** 'on_idle' and 'on_resume' are transferred now (their upvalues are snapshots);
** 'shutdown', 'dlq' and 'overflow' are shared by reference. */
static int l_pool(lua_State *L) {
  tt_pool_opts o;
  tt_class_opts cls[MAX_CLASSES];
  int ranks[MAX_CLASSES];
  tt_quota quotas[MAX_QUOTAS];
  tt_pool_metrics_opts mo;
  tt_pool_hook hook;
  lp_pool *p;
  size_t nlen;
  const char *name;
  int err = TT_OK, init_idx = 0, top, ot;
  bool interrupt, metrics;

  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lt_checkopts(L, 1, 1, NULL, pool_options, false);
  memset(&o, 0, sizeof o);
  name = lt_optstring(L, 1, 1, "name", "pool");
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
  /* The engine reads 0 as "the default" (5 s) and < 0 as "none". */
  o.exit_timeout = lt_optnumber(L, 1, 1, "exit_timeout", 5, 0);
  if (o.exit_timeout == 0) o.exit_timeout = -1;
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
    int i, sum = 0;
    o.nclasses = check_classes(L, 1, -1, cls, ranks);
    o.classes = cls;
    for (i = 0; i < o.nclasses; i++) sum += cls[i].workers;
    if (o.workers > 0 && o.workers != sum)
      lt_fielderror(L, 1, "workers", lua_pushfstring(L, "(%d) must equal "
                    "the sum of the priority classes' workers (%d), or be "
                    "left out", o.workers, sum));
    if (sum > 4096)
      luaL_argerror(L, 1, lua_pushfstring(L, "the priority classes have %d "
                                             "workers in all; at most 4096",
                                          sum));
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
      lt_fielderror(L, 1, "quotas", "needs a 'tenant_key'");
  interrupt = lt_optboolean(L, 1, 1, "interrupt", false);
  metrics = check_metrics(L, &mo);
  /* A span per attempt; one atomic load while tracing is off. */
  hook = tt_trace_pool_hook();
  o.hook = &hook;
  if (lt_optfunction(L, 1, 1, "init")) init_idx = lua_gettop(L);
  /* No 'overflow': the process's default store, if one is set
  ** (tether.store.default); false: none. */
  ot = lua_getfield(L, 1, "overflow");
  if (ot == LUA_TNIL) {
    lua_pop(L, 1);
    lt_push_default_store(L);
  }
  if (lua_toboolean(L, -1)) {
    o.overflow = lt_testobj(L, -1, &tt_store_type);
    if (o.overflow == NULL)
      lt_fielderror(L, 1, "overflow", "must be a tether.Store or false");
  } else if (ot != LUA_TNIL && !lua_isboolean(L, -1)) {
    lt_fielderror(L, 1, "overflow", "must be a tether.Store or false");
  }
  /* Stays on the stack, which keeps the store alive. */
  o.spill_timeout = lt_optnumber(L, 1, 1, "spill_timeout", 5, 0);
  if (o.spill_timeout <= 0)
    lt_fielderror(L, 1, "spill_timeout", "must be positive");

  p = calloc(1, sizeof *p + nlen + 1);
  if (p == NULL) return luaL_error(L, "not enough memory");
  tt_obj_init(&p->hdr, &lp_type);
  memcpy(p->name, name, nlen + 1);
  p->observer = -1;
  p->evc = calloc(1, sizeof *p->evc);
  if (p->evc == NULL) {
    free(p);
    return luaL_error(L, "not enough memory");
  }
  atomic_init(&p->evc->refs, 1);
  p->overflow = o.overflow != NULL;
  lt_pushnew(L, p);  /* from here on, an error frees it through __gc */
  p->env = lt_env_new(L, init_idx, interrupt, name);
  if (interrupt) lt_env_watch(p->env, o.shutdown);
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
  p->quiet = lt_optboolean(L, 1, 1, "quiet", false);
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
    /* Every invalid combination the engine knows is refused above with
    ** its own message; this one is a last resort. */
    if (err == TT_EINVAL)
      return luaL_argerror(L, 1, "invalid pool options");
    return luaL_error(L, "cannot create pool '%s': %s", name,
                      tt_strerror(err));
  }
  lt_track_pool(L, p->pool);
  /* Events cost the pool something only while someone observes them:
  ** observe only for what this binding does with them. */
  if (o.idle_after > 0 || p->dlq != NULL)
    p->observer = tt_pool_observe(p->pool, lp_observe, p);
  if ((metrics && tt_metrics_observe_pool(p->pool, &mo) != TT_OK) ||
      tt_log_observe_pool(p->pool, p->quiet) != TT_OK)
    return luaL_error(L, "not enough memory");
  return 1;
}

/* lt_pool_new: tether.pool for the binding's other files (lhttp.c's server
** pools); see ltether.h. */
int lt_pool_new(lua_State *L) { return l_pool(L); }

/* }==================================================================== */


/* {====================================================================
** Methods
** ===================================================================== */

/* refuse pushes nil and the refusal error with a message that says
** which pool (and tenant) refused.  'tenant' is the stack index of the
** op's tenant value (0 or nil: no tenant) and 'tname' of its name. */
static int refuse(lua_State *L, lp_pool *p, int tenant, int tname,
                  int code) {
  tt_error *e;
  const char *msg;
  tt_obj *tv = NULL;
  if (code == TT_EQUOTA) {
    msg = lua_pushfstring(L, "quota exceeded: tenant '%s' of pool '%s'",
                          tname != 0 && lua_isstring(L, tname)
                            ? lua_tostring(L, tname) : "default",
                          p->name);
    if (tenant != 0 && !lua_isnil(L, tenant))
      tv = lt_pack_one(L, tenant, "tenant");
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
    tt_unref(tv);
    return luaL_error(L, "not enough memory");
  }
  e->value = tv;
  lua_pushnil(L);
  lt_pushnew(L, e);
  return 2;
}

/* read_tenant pushes the tenant value of 'parent' and its name (nil and
** nil without one) and points so->tenant at the name, which stays on the
** stack as long as the submission needs it.  A tenant that is neither a
** string nor a number raises: a wrong type is a programming error. */
static void read_tenant(lua_State *L, lp_pool *p, tt_ctx *parent,
                        tt_submit_opts *so) {
  tt_obj *v = NULL;
  luaL_checkstack(L, 4, NULL);
  so->tenant_set = true;
  so->tenant = NULL;
  so->tenant_len = 0;
  if (p->tenant_key.str == NULL && p->tenant_key.obj == NULL) {
    so->tenant_set = false;  /* the pool has no tenants */
    lua_pushnil(L);
    lua_pushnil(L);
    return;
  }
  if (!tt_ctx_value(parent, &p->tenant_key, &v) || v == NULL) {
    lua_pushnil(L);
    lua_pushnil(L);
    return;
  }
  if (v->type == &lt_value_type) {
    lt_pushnew(L, v);  /* owns the reference, even if unpacking raises */
    lt_unpack_one(L, v);
    lua_remove(L, -2);
  } else {
    lt_unpack_one(L, v);
    tt_unref(v);
  }
  push_tenant_name(L, -1, 2, "the context's tenant");
  so->tenant = lua_tolstring(L, -1, &so->tenant_len);
}

/* task_what writes "task 'NAME'" into 'buf' (as snprintf would, cut to
** 'n' bytes; without its cost on every submission). */
static void task_what(char *buf, size_t n, const char *name) {
  static const char pre[] = "task '";
  size_t len = strlen(name), k = sizeof pre - 1;
  if (len > n - k - 2) len = n - k - 2;
  memcpy(buf, pre, k);
  memcpy(buf + k, name, len);
  buf[k + len] = '\'';
  buf[k + len + 1] = '\0';
}

/* spill writes a named op to the pool's overflow store (the queue was
** full); arguments that are not plain data keep it out: the submission
** is then refused, or queued if room appeared meanwhile. */
static int spill(lua_State *L, lp_pool *p, tt_ctx *parent,
                 tt_submit_opts *so, int nargs, int tenant) {
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
      task_what(what, sizeof what, so->name != NULL ? so->name : "op");
      t = lt_task_new(L, p->env, 4, 5, nargs, true, what);
      h = tt_pool_submit(p->pool, parent, so, lt_task_run, t, lt_task_drop,
                         &err);
      if (h != NULL) {
        lt_pushnew(L, h);
        return 1;
      }
      lt_task_drop(t);
    }
    if (err != TT_EQUEUE_FULL) return refuse(L, p, tenant, tenant + 1, err);
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
    return refuse(L, p, tenant, tenant + 1, err);
  }
  lt_pushnew(L, h);
  return 1;
}

/* read_submit reads what pool:submit and pool:submit_many share:
** argument 3, the op's name or a table of submit_options[] (its strings
** stay anchored in it), into '*so' (and '*retry', which so->retry may
** point to), and checks argument 4, a function or "module:function",
** which, with an overflow store, makes the op one that may spill. */
static void read_submit(lua_State *L, lp_pool *p, tt_submit_opts *so,
                        tt_retry *retry) {
  memset(so, 0, sizeof *so);
  if (lua_type(L, 3) == LUA_TSTRING) {
    so->name = lua_tostring(L, 3);
  } else if (lua_istable(L, 3)) {
    lt_checkopts(L, 3, 3, NULL, submit_options, false);
    so->name = lt_optstring(L, 3, 3, "name", NULL);
    if (lua_getfield(L, 3, "retry") != LUA_TNIL) {
      lt_checkretry(L, 3, -1, retry);
      so->retry = retry;
    }
    lua_pop(L, 1);
    so->priority = lt_optstring(L, 3, 3, "priority", NULL);
    so->timeout = lt_optnumber(L, 3, 3, "timeout", 0, 0);
    so->wait = lt_optnumber(L, 3, 3, "wait", 0, 0);
  } else {
    const char *msg = lua_pushfstring(L, "string or table expected, got %s",
                                      luaL_typename(L, 3));
    luaL_argerror(L, 3, msg);
  }
  if (lua_type(L, 4) != LUA_TSTRING) luaL_checktype(L, 4, LUA_TFUNCTION);
  /* A named op may travel to the overflow store when the queue is full. */
  if (p->overflow && lua_type(L, 4) == LUA_TSTRING)
    so->spill_fn = lua_tostring(L, 4);
}

/* no_class raises for a priority class the pool does not have. */
static int no_class(lua_State *L, const tt_submit_opts *so) {
  return luaL_argerror(L, 3, lua_pushfstring(L, "unknown priority class "
                                                "'%s'", so->priority));
}

/* pool:submit(parent, name_or_opts, fn, ...) -> h | nil, err: runs fn(ctx, ...)
** on a worker of the pool, where ctx is with_timeout(without_cancel(parent),
** timeout), made afresh for each attempt and also canceled when the pool's
** shutdown context ends.  'name_or_opts' is the op's name or a table {name,
** retry, priority, timeout, wait} (submit_options[]); 'fn' is a function,
** transferred with the arguments by the transfer rules, or a string
** 'module:function' called by name in the worker (and, with an overflow store,
** one that may spill).  It never blocks (unless opts.wait asks for a bounded
** wait for queue space): a refusal returns at once, before anything is packed,
** as nil and an error of code queue_full, quota_exceeded (with err.tenant) or
** closed (see refuse).  The tenant is the value under the pool's tenant_key in
** 'parent' (a string or a number).  Raises for a non-context 'parent', a
** 'name_or_opts' that is neither a string nor a table, an unknown option or
** priority class, a tenant of another type, a 'fn' that is neither a function
** nor a string, a value that cannot cross, and 'interrupted!' on Ctrl-C in the
** main state during a 'wait'. */
static int m_submit(lua_State *L) {
  lp_pool *p = check_pool(L);
  tt_ctx *parent = lt_checkobj(L, 2, &tt_ctx_type);
  tt_submit_opts so;
  tt_retry retry;
  char what[160];
  int nargs = lua_gettop(L) - 4, err = TT_OK, tenant;
  lt_task *t;
  tt_handle *h;
  lt_wait w;
  bool interrupted;
  if (nargs < 0) nargs = 0;
  read_submit(L, p, &so, &retry);
  /* The tenant and its name go on top of the task's arguments, which
  ** lt_task_new reads by position. */
  read_tenant(L, p, parent, &so);
  tenant = lua_gettop(L) - 1;
  /* Refuse before packing anything: callers retry on queue_full, and a
  ** refusal should cost them little. */
  err = tt_pool_precheck(p->pool, parent, &so);
  if (err == TT_ESPILLED)
    return spill(L, p, parent, &so, nargs, tenant);
  if (err == TT_OK) {
    /* With a store, a named op whose arguments are plain data keeps
    ** them as wire values too (a string on top of the stack, so that an
    ** error below leaks nothing): the exit drain may write it to the
    ** store. */
    if (so.spill_fn != NULL) {
      tt_buf b = TT_BUF_INIT;
      char why[200];
      if (lt_wire_args(L, 5, nargs, &b, why, sizeof why)) {
        lua_pushlstring(L, b.data, b.len);
        tt_buf_free(&b);
        so.spill_args = lua_tolstring(L, -1, &so.spill_args_len);
      } else {
        tt_buf_free(&b);
      }
    }
    task_what(what, sizeof what, so.name != NULL ? so.name : "op");
    t = lt_task_new(L, p->env, 4, 5, nargs, true, what);
    /* A 'wait' for room ends on Ctrl-C in the main state (the section
    ** costs nothing to a submit that never waits). */
    if (so.wait > 0) lt_wait_begin(L, &w);
    h = tt_pool_submit(p->pool, parent, &so, lt_task_run, t, lt_task_drop,
                       &err);
    interrupted = so.wait > 0 && lt_wait_end(L, &w) && h == NULL &&
                  err == TT_EINTR;
    if (h == NULL) lt_task_drop(t);
    if (interrupted) return lt_interrupted(L);
  } else {
    h = NULL;
  }
  if (h == NULL) {
    if (err == TT_EINVAL && so.priority != NULL) return no_class(L, &so);
    return refuse(L, p, tenant, tenant + 1, err);
  }
  lt_pushnew(L, h);
  return 1;
}

/* {====================================================================
** Batches: pool:submit_many and tether.map
** ===================================================================== */

/* A batch is the tasks of one call (the function packed once and shared,
** each item packed on its own), their spill forms and their ops'
** handles, in C arrays owned by one userdata per call (not one per
** item), whose __gc releases what is left in them when the call returns
** or raises.  ops[i].arg is the task of item i + 1 until the pool takes
** it (then NULL). */
typedef struct batch {
  tt_obj *fn;              /* the packed function */
  tt_batch_op *ops;        /* 'n' */
  tt_buf *wire;            /* 'n' spill forms, or NULL */
  tt_handle **hs;          /* 'n' handles (NULL: none) */
  size_t n;
  tt_obj *ends;            /* tether.map's end report, or NULL */
  tt_ctx *mctx;            /* tether.map's context for its ops, or NULL:
                           ** canceled when the call ends */
} batch;

#define BATCH_T "tether.batch"

static int batch_gc(lua_State *L) {
  batch *b = luaL_checkudata(L, 1, BATCH_T);
  size_t i;
  for (i = 0; i < b->n; i++) {
    if (b->ops != NULL) lt_task_drop(b->ops[i].arg);
    if (b->hs != NULL) tt_unref(b->hs[i]);
    if (b->wire != NULL) tt_buf_free(&b->wire[i]);
  }
  free(b->ops);
  free(b->hs);
  free(b->wire);
  tt_unref(b->fn);
  tt_unref(b->ends);
  if (b->mctx != NULL) tt_cancel(b->mctx, NULL);
  tt_unref(b->mctx);
  memset(b, 0, sizeof *b);
  return 0;
}

/* item_what writes "item #I of WHAT" into 'buf'. */
static void item_what(char *buf, size_t size, size_t i, const char *what) {
  snprintf(buf, size, "item #%zu of %s", i, what);
}

/* push_batch packs the function at 'fn' once and each element of the
** sequence at 'list' (1..n) on its own into the tasks of a new batch,
** left on the stack: an item that cannot cross raises before anything
** is submitted ("cannot transfer item #3 of task 'x' (thread)").  With
** 'wire', each item that is plain data also gets its spill form, the
** wire values pool:submit would give the same item as its argument. */
static batch *push_batch(lua_State *L, lp_pool *p, int fn, int list,
                         size_t n, const char *what, bool wire) {
  batch *b = lua_newuserdatauv(L, sizeof *b, 0);
  char iwhat[200], why[200];
  size_t i;
  memset(b, 0, sizeof *b);
  if (luaL_newmetatable(L, BATCH_T)) {
    lua_pushcfunction(L, batch_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  if (n == 0) return b;
  b->ops = calloc(n, sizeof *b->ops);
  b->hs = calloc(n, sizeof *b->hs);
  b->wire = wire ? calloc(n, sizeof *b->wire) : NULL;
  if (b->ops == NULL || b->hs == NULL || (wire && b->wire == NULL)) {
    free(b->ops);
    free(b->hs);
    free(b->wire);
    b->ops = NULL;
    b->hs = NULL;
    b->wire = NULL;
    luaL_error(L, "not enough memory");
  }
  b->n = n;
  b->fn = lt_pack_one(L, fn, what);
  for (i = 0; i < n; i++) {
    tt_obj *v;
    item_what(iwhat, sizeof iwhat, i + 1, what);
    lua_rawgeti(L, list, (lua_Integer)i + 1);
    v = lt_pack_one(L, -1, iwhat);
    b->ops[i].arg = lt_task_of(p->env, b->fn, v, what);
    tt_unref(v);
    if (b->ops[i].arg == NULL) luaL_error(L, "not enough memory");
    if (wire && lt_wire_args(L, lua_gettop(L), 1, &b->wire[i], why,
                             sizeof why)) {
      b->ops[i].spill_args = b->wire[i].data;
      b->ops[i].spill_args_len = b->wire[i].len;
    }
    lua_pop(L, 1);
  }
  return b;
}

/* set_index gives the refusal on the top of the stack, new and not yet
** shared, the position of the item it refused (err.index). */
static void set_index(lua_State *L, size_t i) {
  tt_error *e = lt_checkobj(L, -1, &tt_error_type);
  e->index = i;
}

/* pool:submit_many(parent, name_or_opts, fn, list) -> handles [, err]:
** submits fn(ctx, item) for each item of the sequence 'list', in order, as
** pool:submit(parent, name_or_opts, fn, item) would, with the function
** packed once for all of them and the ops queued together (one hold of
** the pool's lock, one wake of its workers).  It stops at the first
** refusal: 'handles' holds the handles of the items submitted (a prefix
** of the list: handles[i] is list[i]'s) and 'err' the refusal of item
** #handles + 1 (err.index; nil when all went in).  With an overflow
** store, an item of a named op that finds the queue full spills to it,
** as pool:submit's would.  Raises as pool:submit does, and for an item
** that cannot cross, before any is submitted; a 'wait' bounds the whole
** call. */
static int m_submit_many(lua_State *L) {
  lp_pool *p = check_pool(L);
  tt_ctx *parent = lt_checkobj(L, 2, &tt_ctx_type);
  tt_submit_opts so;
  tt_retry retry;
  char what[160];
  size_t n, k, i;
  int err = TT_OK, tenant, handles;
  lt_wait w;
  bool interrupted;
  batch *b;
  memset(&w, 0, sizeof w);
  read_submit(L, p, &so, &retry);
  luaL_checktype(L, 5, LUA_TTABLE);
  lua_settop(L, 5);
  n = (size_t)lua_rawlen(L, 5);
  task_what(what, sizeof what, so.name != NULL ? so.name : "op");
  b = push_batch(L, p, 4, 5, n, what, so.spill_fn != NULL);
  read_tenant(L, p, parent, &so);
  tenant = lua_gettop(L) - 1;
  lua_createtable(L, n > INT32_MAX ? INT32_MAX : (int)n, 0);
  handles = lua_gettop(L);
  if (so.wait > 0) lt_wait_begin(L, &w);
  k = tt_pool_submit_many(p->pool, parent, &so, lt_task_run, lt_task_drop,
                          b->ops, n, NULL, b->hs, &err);
  interrupted = so.wait > 0 && lt_wait_end(L, &w) && err == TT_EINTR;
  for (i = 0; i < k; i++) {
    b->ops[i].arg = NULL;  /* the pool's now */
    lt_pushnew(L, b->hs[i]);
    b->hs[i] = NULL;
    lua_rawseti(L, handles, (lua_Integer)i + 1);
  }
  if (interrupted) return lt_interrupted(L);
  if (k == n) return 1;
  if (err == TT_EINVAL && so.priority != NULL) return no_class(L, &so);
  refuse(L, p, tenant, tenant + 1, err);  /* nil, err */
  set_index(L, k + 1);
  lua_pushvalue(L, handles);
  lua_replace(L, -3);
  return 2;
}

/* What tether.map waits on: the items whose ops ended, in the order
** they ended, appended by the pool as each op's handle resolves (under
** the pool's lock, which orders the ends; a channel's lock, which the
** lock order allows under it, wakes the map's loop).  A slot is taken
** with an atomic count and then published: an unpublished slot reads
** NOEND, and its writer's send, which comes after, wakes the loop
** again. */
#define NOEND ((size_t)-1)

typedef struct mapends {
  tt_obj hdr;
  tt_chan *wake;           /* one NULL item: something ended */
  _Atomic size_t n;        /* slots taken */
  _Atomic size_t *at;      /* item indices (0-based) in end order */
} mapends;

static void mapends_free(tt_obj *o) {
  mapends *m = (mapends *)o;
  tt_unref(m->wake);
  free(m->at);
  free(m);
}

static const tt_type mapends_type = {"tether.MapEnds", mapends_free, NULL,
                                     NULL};

static void map_end(tt_obj *ud, size_t i, tt_handle *h) {
  mapends *m = (mapends *)ud;
  size_t k = atomic_fetch_add(&m->n, 1);
  (void)h;
  atomic_store_explicit(&m->at[k], i, memory_order_release);
  (void)tt_chan_try_send(m->wake, NULL);
}

/* The whole set of tether.map's options. */
static const char *const map_options[] = {"ordered", NULL};

/* A tether.map in progress (the Lua stack holds its tables). */
typedef struct mapstate {
  bool ordered;
  int results, errors, index;  /* stack indices */
  size_t k;                    /* outcomes stored so far */
  bool failed;
} mapstate;

/* map_put stores the outcome of item 'i' (0-based) from the values on
** the top of the stack: 'nv' values, a result and, if 'err', an error
** on top (nil or an error); it pops them. */
static void map_put(lua_State *L, mapstate *ms, size_t i, int nv) {
  lua_Integer at = ms->ordered ? (lua_Integer)i + 1
                               : (lua_Integer)++ms->k;
  if (!ms->ordered) {
    lua_pushinteger(L, (lua_Integer)i + 1);
    lua_rawseti(L, ms->index, at);
  }
  if (nv >= 2 && !lua_isnil(L, -1)) {
    ms->failed = true;
    lua_rawseti(L, ms->errors, at);
    lua_pop(L, 1);  /* the result, nil */
    return;
  }
  if (nv >= 2) lua_pop(L, 1);  /* no error */
  lua_rawseti(L, ms->results, at);
}

/* map_take stores the outcome of the ended op of item 'i'. */
static void map_take(lua_State *L, mapstate *ms, tt_handle *h, size_t i) {
  int top = lua_gettop(L), n = lt_push_results(L, h);
  if (tt_handle_state(h) == TT_H_DONE) {
    lua_settop(L, top + (n >= 1 ? 1 : 0));
    if (n < 1) lua_pushnil(L);
    map_put(L, ms, i, 1);
  } else {
    lua_settop(L, top + 2);  /* nil, err */
    map_put(L, ms, i, 2);
  }
}

/* map_fail stores 'code' (a context's error) as the error of item 'i'. */
static void map_fail(lua_State *L, mapstate *ms, size_t i, int code) {
  lua_pushnil(L);
  lt_pushnew(L, tt_error_for(code));
  map_put(L, ms, i, 2);
}

/* map_wait waits until an op ends, 'ctx' ends (NULL: not watched) or a
** Ctrl-C (then true). */
static bool map_wait(lua_State *L, mapends *m, tt_ctx *ctx) {
  tt_case cs[2];
  lt_wait w;
  int r;
  memset(cs, 0, sizeof cs);
  cs[0].kind = TT_CASE_RECV;
  cs[0].chan = m->wake;
  cs[1].latch = ctx != NULL ? tt_ctx_done(ctx) : NULL;
  cs[1].kind = cs[1].latch != NULL ? TT_CASE_LATCH : TT_CASE_NIL;
  lt_wait_begin(L, &w);
  r = tt_select(cs, 2, false, -1);
  return lt_wait_end(L, &w) && r == TT_SELECT_INTERRUPTED;
}

/* tether.map(pool, ctx, fn, list [, {ordered = true}]) -> results, errors
** [, index]: runs fn(opctx, item) on the pool for each item of the
** sequence 'list', with the function packed once, and waits for all of
** them.  The ops are attached to a child of 'ctx' (opctx; its end
** cancels them, as an errgroup's), run one attempt each, and never more
** of them are outstanding than the pool's queue holds, so that the map
** alone never finds it full; it submits more as they end.  results[i] is
** the first value fn returned for list[i], errors[i] its error (the op's
** failure, or a refusal that waiting does not lift: closed, over quota);
** 'errors' is nil when no item failed.  With ordered = false, results
** and errors are instead in the order the ops ended and index[k] is the
** item of the k-th.  When 'ctx' ends first, the ops still queued are
** stopped, map waits for those running (their context is canceled), and
** every item that did not complete or fail before gets ctx's error.
** Raises for bad arguments, an unknown option, an item that cannot
** cross, and 'interrupted!' on Ctrl-C (the map's ops are then canceled
** and stopped). */
static int l_map(lua_State *L) {
  lp_pool *p = check_pool(L);
  tt_ctx *ctx = lt_checkobj(L, 2, &tt_ctx_type), *mctx;
  tt_submit_opts so;
  tt_batch_end be;
  tt_pool_info info;
  mapstate ms;
  mapends *m;
  char what[160];
  size_t n, next = 0, out = 0, seen = 0, cap, i;
  int err, tenant;
  bool ended = false;
  batch *b;
  if (lua_type(L, 3) != LUA_TSTRING) luaL_checktype(L, 3, LUA_TFUNCTION);
  luaL_checktype(L, 4, LUA_TTABLE);
  memset(&ms, 0, sizeof ms);
  ms.ordered = true;
  if (!lua_isnoneornil(L, 5)) {
    luaL_checktype(L, 5, LUA_TTABLE);
    lt_checkopts(L, 5, 5, NULL, map_options, false);
    ms.ordered = lt_optboolean(L, 5, 5, "ordered", true);
  }
  lua_settop(L, 5);
  n = (size_t)lua_rawlen(L, 4);
  task_what(what, sizeof what, "map");
  b = push_batch(L, p, 3, 4, n, what, false);          /* 6 */
  memset(&so, 0, sizeof so);
  read_tenant(L, p, ctx, &so);                          /* 7, 8 */
  tenant = 7;
  lua_createtable(L, n > INT32_MAX ? INT32_MAX : (int)n, 0);
  ms.results = lua_gettop(L);
  lua_newtable(L);
  ms.errors = lua_gettop(L);
  lua_newtable(L);
  ms.index = lua_gettop(L);
  /* The end report and the ops' context belong to the batch. */
  m = calloc(1, sizeof *m);
  if (m == NULL) return luaL_error(L, "not enough memory");
  tt_obj_init(&m->hdr, &mapends_type);
  b->ends = &m->hdr;
  m->wake = tt_chan_new(1);
  m->at = malloc((n > 0 ? n : 1) * sizeof *m->at);
  if (m->wake == NULL || m->at == NULL)
    return luaL_error(L, "not enough memory");
  for (i = 0; i < n; i++) atomic_init(&m->at[i], NOEND);
  mctx = b->mctx = tt_with_cancel(ctx);
  if (mctx == NULL) return luaL_error(L, "not enough memory");
  so.attached = true;
  be.end = map_end;
  be.ud = &m->hdr;
  tt_pool_snapshot(p->pool, &info, NULL, 0);
  cap = info.queue_cap > 0 ? (size_t)info.queue_cap : 1;
  ended = tt_ctx_err(ctx) != TT_OK;
  for (;;) {
    /* Feed: at most 'cap' outstanding. */
    while (!ended && next < n && out < cap) {
      size_t want = n - next, k;
      if (want > cap - out) want = cap - out;
      be.index0 = next;
      k = tt_pool_submit_many(p->pool, mctx, &so, lt_task_run, lt_task_drop,
                              b->ops + next, want, &be, b->hs + next, &err);
      for (i = next; i < next + k; i++) b->ops[i].arg = NULL;
      next += k;
      out += k;
      if (err == TT_OK) continue;
      if (err == TT_EQUEUE_FULL && out > 0) break;  /* room comes */
      if (err == TT_EQUEUE_FULL) {
        /* Others fill the queue: wait for room a moment, then look
        ** again (ctx and Ctrl-C end the wait). */
        tt_submit_opts wso = so;
        lt_wait w;
        bool intr;
        wso.wait = 0.05;
        be.index0 = next;
        lt_wait_begin(L, &w);
        k = tt_pool_submit_many(p->pool, mctx, &wso, lt_task_run,
                                lt_task_drop, b->ops + next, 1, &be,
                                b->hs + next, &err);
        intr = lt_wait_end(L, &w) && err == TT_EINTR;
        if (k == 1) {
          b->ops[next].arg = NULL;
          next++;
          out++;
        } else if (intr) {
          tt_cancel(mctx, NULL);
          return lt_interrupted(L);
        }
        if (tt_ctx_err(ctx) != TT_OK) ended = true;
        continue;
      }
      /* A refusal that waiting does not lift is the item's error. */
      if (err == TT_EINVAL || err == TT_ENOMEM)
        return luaL_error(L, "tether.map: %s", tt_strerror(err));
      refuse(L, p, tenant, tenant + 1, err);  /* nil, err */
      set_index(L, next + 1);
      map_put(L, &ms, next, 2);
      next++;
    }
    if (out == 0 && (next >= n || ended)) break;
    if (out > 0 &&
        atomic_load_explicit(&m->at[seen], memory_order_acquire) == NOEND &&
        map_wait(L, m, ended ? NULL : ctx)) {
      /* Ctrl-C: the map's ops end with it. */
      tt_cancel(mctx, NULL);
      for (i = 0; i < next; i++)
        if (b->hs[i] != NULL) (void)tt_handle_stop(b->hs[i]);
      return lt_interrupted(L);
    }
    /* Take what ended, in the order it ended. */
    while (seen < n) {
      size_t at = atomic_load_explicit(&m->at[seen], memory_order_acquire);
      if (at == NOEND) break;
      seen++;
      out--;
      if (ended && tt_handle_state(b->hs[at]) != TT_H_DONE)
        map_fail(L, &ms, at, tt_ctx_err(ctx));
      else
        map_take(L, &ms, b->hs[at], at);
      tt_unref(b->hs[at]);
      b->hs[at] = NULL;
    }
    if (!ended && tt_ctx_err(ctx) != TT_OK) {
      /* ctx ended: stop what is queued, cancel what runs (their
      ** context is a child of ctx's), and wait for them. */
      ended = true;
      tt_cancel(mctx, NULL);
      for (i = 0; i < next; i++)
        if (b->hs[i] != NULL) (void)tt_handle_stop(b->hs[i]);
    }
  }
  if (ended) {
    /* The items never submitted. */
    for (i = next; i < n; i++) map_fail(L, &ms, i, tt_ctx_err(ctx));
  }
  tt_cancel(mctx, NULL);
  lua_pushvalue(L, ms.results);
  if (ms.failed)
    lua_pushvalue(L, ms.errors);
  else
    lua_pushnil(L);
  if (ms.ordered) return 2;
  lua_pushvalue(L, ms.index);
  return 3;
}

/* }==================================================================== */


/* pool:drain([ctx]) -> true | nil, err: closes the pool to new work and waits
** until every queued, retrying and running op has ended.  Only the context
** bounds the wait, so drain(tether.with_timeout(...)) reads naturally (the
** cancel function that comes along is ignored); when it ends first, nil and its
** error, and the ops go on.  Raises for a non-context 'ctx', and 'interrupted!'
** on Ctrl-C in the main state.  Called from one of the pool's own ops it
** raises: the op would wait for itself forever. */
static int m_drain(lua_State *L) {
  lp_pool *p = check_pool(L);
  tt_ctx *ctx = lua_isnoneornil(L, 2) ? NULL
                                      : lt_checkobj(L, 2, &tt_ctx_type);
  lt_wait w;
  int r;
  lt_wait_begin(L, &w);
  r = tt_pool_drain(p->pool, ctx, -1);
  if (lt_wait_end(L, &w) && r == TT_EINTR) return lt_interrupted(L);
  if (r == TT_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  /* The op that calls it would wait for itself: a bug, not a refusal. */
  if (r == TT_EDEADLK)
    return luaL_error(L, "drain called from an op of pool '%s'", p->name);
  lua_pushnil(L);
  lt_pushnew(L, tt_error_for(r));
  return 2;
}

/* pool:wait_idle([ctx]) -> true | nil, err: waits until nothing is queued,
** waiting for a retry, or running, without closing the pool (so that dead
** letters can be retried after a batch); nil and the context's error when 'ctx'
** ends first.  Raises for a non-context 'ctx', and 'interrupted!' on Ctrl-C in
** the main state.  From one of the pool's own ops, it raises: the op would wait
** for itself. */
static int m_wait_idle(lua_State *L) {
  lp_pool *p = check_pool(L);
  tt_ctx *ctx = lua_isnoneornil(L, 2) ? NULL
                                      : lt_checkobj(L, 2, &tt_ctx_type);
  lt_wait w;
  int r;
  lt_wait_begin(L, &w);
  r = tt_pool_wait_idle(p->pool, ctx, -1);
  if (lt_wait_end(L, &w) && r == TT_EINTR) return lt_interrupted(L);
  if (r == TT_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (r == TT_EDEADLK)
    return luaL_error(L, "wait_idle called from an op of pool '%s'",
                      p->name);
  lua_pushnil(L);
  lt_pushnew(L, tt_error_for(r));
  return 2;
}

/* pool:close(): closes the pool to new work without waiting: later submissions
** are refused with 'closed'; queued and running ops go on.  Returns nothing. */
static int m_close(lua_State *L) {
  tt_pool_close(check_pool(L)->pool);
  return 0;
}

/* pool:name() -> string: the pool's name (names need not be unique: pool:id()
** is). */
static int m_name(lua_State *L) {
  lua_pushstring(L, check_pool(L)->name);
  return 1;
}

/* pool:id() -> integer: unique among the pools of the process (from 1, never
** reused), as the admin page's actions name pools. */
static int m_id(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)tt_pool_id(check_pool(L)->pool));
  return 1;
}

/* lt_push_pool_stats: see ltether.h. */
void lt_push_pool_stats(lua_State *L, const tt_pool_stats *st, int extra) {
  lua_createtable(L, 0, 13 + extra);
  lt_setint(L, "submitted", st->submitted);
  lt_setint(L, "completed", st->completed);
  lt_setint(L, "failed", st->failed);
  lt_setint(L, "retried", st->retried);
  lt_setint(L, "stopped", st->stopped);
  lt_setint(L, "dead", st->dead);
  lt_setint(L, "rejected", st->rejected);
  lt_setint(L, "queued", st->queued);
  lt_setint(L, "inflight", st->inflight);
  lt_setint(L, "spilled", st->spilled);
  lt_setint(L, "abandoned", st->abandoned);
  lt_setint(L, "dead_held", st->dead_held);
  lt_setint(L, "dead_dropped", st->dead_dropped);
}

/* pool:stats() -> table: the pool's counters (submitted, completed, failed,
** retried, stopped, dead, rejected, queued, inflight, spilled, abandoned,
** dead_held, dead_dropped), read in one snapshot so that submitted = completed
** + failed + stopped + dead + spilled + abandoned + queued + inflight always
** holds, and events_dropped, the events the pool:events() channels could not
** take (read apart, from this binding's counter). */
static int m_stats(lua_State *L) {
  tt_pool_stats s;
  tt_pool_stats_get(check_pool(L)->pool, &s);
  lt_push_pool_stats(L, &s, 1);
  lt_setint(L, "events_dropped",
          atomic_load(&check_pool(L)->evc->dropped));
  return 1;
}

/* pool:inflight() -> {record, ...}: the running ops, at most 256 (more may run:
** the rest are left out), each {id, name, tenant, priority, started, attempt}:
** no 'tenant' field without one; 'started' is on tether.now()'s clock;
** 'attempt' counts from 1.  The records are copied out of the engine into a
** buffer first, and the tables made from it. */
static int m_inflight(lua_State *L) {
  lp_pool *p = check_pool(L);
  tt_inflight buf[256];
  size_t n = tt_pool_inflight(p->pool, buf, 256), i;
  if (n > 256) n = 256;
  lua_createtable(L, (int)n, 0);
  for (i = 0; i < n; i++) {
    lua_createtable(L, 0, 6);
    lt_setint(L, "id", buf[i].id);
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
    lt_setint(L, "attempt", (unsigned long long)buf[i].attempt);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* push_cause pushes a record's cause: a packed value is unpacked into a fresh
** copy for this state, an object (an error) is pushed as itself. */
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
  lt_setint(L, "id", f->id);
  lua_pushstring(L, f->name);
  lua_setfield(L, -2, "name");
  if (f->tenant != NULL) {
    lua_pushlstring(L, f->tenant, f->tenant_len);
    lua_setfield(L, -2, "tenant");
  }
  lua_pushstring(L, e != NULL ? e->message : tt_strerror(f->code));
  lua_setfield(L, -2, "error");
  lua_pushstring(L, e != NULL ? e->traceback : NULL);
  lua_setfield(L, -2, "traceback");
  lua_pushstring(L, tt_errname(f->code));
  lua_setfield(L, -2, "code");
  push_cause(L, f->cause);
  lua_setfield(L, -2, "cause");
  lt_setint(L, "attempts", (unsigned long long)f->attempts);
  lua_pushnumber(L, f->at);
  lua_setfield(L, -2, "at");
}

/* push_failures pushes the list of 'n' records 'f' (oldest first) and frees
** them: they are copies the engine made for this call. */
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

/* pool:failures() -> {record, ...}: the most recent failed attempts (up to the
** pool's 'failures' option), oldest first, each a record as pool:dead_letters()
** gives, whose 'attempts' is that attempt's number. */
static int m_failures(lua_State *L) {
  size_t n = 0;
  tt_failure *f = tt_pool_failures(check_pool(L)->pool, &n);
  return push_failures(L, f, n);
}

/* pool:dead_letters() -> {record, ...}: the dead letters kept (up to the pool's
** 'dead_letters' option), oldest first, {id, name, tenant, error, traceback,
** code, cause, attempts, at} each: 'at' is wall-clock time, for logs. */
static int m_dead_letters(lua_State *L) {
  size_t n = 0;
  tt_failure *f = tt_pool_dead_letters(check_pool(L)->pool, &n);
  return push_failures(L, f, n);
}

/* check_id reads a dead letter's id at 'arg': an integer, or a record whose
** 'id' field is one (the table is replaced by the id).  Raises for anything
** that is not a positive integer. */
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

/* refuse_dead is refuse for a dead letter that could not be retried:
** its tenant is the dead letter's. */
static int refuse_dead(lua_State *L, lp_pool *p, uint64_t id, int code) {
  size_t n = 0, i;
  tt_failure *f = code == TT_EQUOTA ? tt_pool_dead_letters(p->pool, &n)
                                    : NULL;
  int top = lua_gettop(L);
  lua_pushnil(L);
  for (i = 0; i < n; i++)
    if (f[i].id == id && f[i].tenant != NULL)
      lua_pushlstring(L, f[i].tenant, f[i].tenant_len);
  tt_failures_free(f, n);
  if (lua_gettop(L) == top + 1) lua_pushnil(L);
  lua_settop(L, top + 2);
  return refuse(L, p, top + 2, top + 2, code);
}

/* pool:retry_dead(id_or_record) -> h | nil, err: resubmits a dead letter as a
** new op (a new id, a fresh set of attempts; the same name, tenant, class,
** parent values and policy) and forgets it.  An id the pool does not hold
** (never a dead letter, or already retried or dropped) gives nil and an error
** of code 'invalid'; a refusal (queue_full, quota_exceeded with the dead
** letter's tenant, closed) leaves the dead letter where it is.  Raises for an
** id that is not a positive integer. */
static int m_retry_dead(lua_State *L) {
  lp_pool *p = check_pool(L);
  int err = TT_OK;
  uint64_t id = check_id(L, 2);
  tt_handle *h = tt_pool_retry_dead(p->pool, id, &err);
  if (h == NULL) {
    if (err == TT_EINVAL)
      /* cppcheck-suppress invalidLengthModifierError ; Lua's own %I */
      return lt_pusherror(L, err, lua_pushfstring(L, "no dead letter with "
                                                     "id %I in pool '%s'",
                                                  (lua_Integer)id,
                                                  p->name));
    return refuse_dead(L, p, id, err);
  }
  lt_pushnew(L, h);
  return 1;
}

/* pool:drop_dead(id_or_record) -> boolean: true if the dead letter was there;
** it is forgotten, with its arguments.  Raises as retry_dead for a bad id. */
static int m_drop_dead(lua_State *L) {
  lp_pool *p = check_pool(L);
  lua_pushboolean(L, tt_pool_drop_dead(p->pool, check_id(L, 2)));
  return 1;
}

/* {====== pool:events([capacity]) ====== */

/* A channel that receives the pool's events. */
typedef struct evsub {
  tt_chan *ch;
  evcount *evc;                /* one reference */
  bool done;                   /* closed after DRAINED; delivery thread */
} evsub;

static const char *const kind_names[TT_NEVENTS] = {
  "submitted", "started", "retried", "completed", "failed", "dead",
  "stopped", "rejected", "idle", "resuming", "drained", "spilled",
  "abandoned"
};

/* ev_send offers one event to the channel as a table {kind, pool, id,
** name, tenant, priority, attempt, at, duration, delay, error, code};
** a full channel drops it and counts. */
static void ev_send(const tt_event *ev, void *ud) {
  evsub *s = ud;
  tt_field f[12];
  size_t n = 0;
  const char *error = NULL;
  char desc[512];
  tt_obj *v;
  int r;
  if (s->done) return;
  if (ev->error != NULL) {
    if (ev->error->type == &tt_error_type)
      error = ((tt_error *)ev->error)->message;
    else if (tt_describe(ev->error, desc, sizeof desc) >= 0)
      error = desc;
  }
  f[n++] = (tt_field)TT_FSTR("kind", kind_names[ev->kind]);
  f[n++] = (tt_field)TT_FSTR("pool", ev->pool_name);
  if (ev->id != 0) {
    f[n++] = (tt_field)TT_FINT("id", ev->id);
    f[n++] = (tt_field)TT_FINT("attempt", ev->attempt);
  }
  f[n++] = (tt_field)TT_FSTR("name", ev->name);
  f[n++] = (tt_field)TT_FSTRN("tenant", ev->tenant, ev->tenant_len);
  f[n++] = (tt_field)TT_FSTR("priority", ev->priority);
  f[n++] = (tt_field)TT_FNUM("at", ev->at);
  if (ev->kind == TT_EV_COMPLETED || ev->kind == TT_EV_RETRIED ||
      ((ev->kind == TT_EV_FAILED || ev->kind == TT_EV_DEAD) &&
       ev->attempt > 0))
    f[n++] = (tt_field)TT_FNUM("duration", ev->duration);
  if (ev->kind == TT_EV_RETRIED)
    f[n++] = (tt_field)TT_FNUM("delay", ev->delay);
  f[n++] = (tt_field)TT_FSTR("error", error);
  if (ev->code != 0) f[n++] = (tt_field)TT_FSTR("code",
                                                 tt_errname(ev->code));
  v = lt_pack_fields(f, n);
  r = v != NULL ? tt_chan_try_send(s->ch, v) : TT_ENOMEM;
  if (r != TT_OK) {
    tt_unref(v);
    /* A channel its reader closed wants no more; anything else lost an
    ** event. */
    if (r != TT_ECLOSED) atomic_fetch_add(&s->evc->dropped, 1);
  }
  if (ev->kind == TT_EV_DRAINED) {
    /* Nothing more will happen to ops: readers see the end. */
    s->done = true;
    tt_chan_close(s->ch);
  }
}

/* ev_release frees an events subscription when the engine drops its observer
** (with the engine's pool): the channel and the shared counter of dropped
** events are released here, never by the Lua pool object. */
static void ev_release(void *ud) {
  evsub *s = ud;
  tt_unref(s->ch);
  evc_unref(s->evc);
  free(s);
}

/* pool:events([capacity]) -> ch: a new channel (of 'capacity' items, default
** 1024) that receives each event of the pool from now on as a table (see
** ev_send), closed once the pool has drained, so that a reader's loop ends.
** The pool never waits for it: when it is full, events are dropped and counted
** in stats().events_dropped; a channel its reader closed stops them without
** counting.  The tables are packed on the thread where the event happened, so
** any state reads them.  Raises for a capacity out of range (1 to 16777216) and
** on a failed allocation. */
static int m_events(lua_State *L) {
  lp_pool *p = check_pool(L);
  lua_Integer cap = luaL_optinteger(L, 2, 1024);
  tt_observer_opts oo;
  tt_chan *ch;
  evsub *s;
  luaL_argcheck(L, cap >= 1 && cap <= (1 << 24), 2,
                "capacity out of range (1 to 16777216)");
  ch = tt_chan_new((size_t)cap);
  if (ch == NULL) return luaL_error(L, "not enough memory");
  lt_pushnew(L, ch);
  s = calloc(1, sizeof *s);
  if (s == NULL) return luaL_error(L, "not enough memory");
  s->ch = tt_ref(ch);
  s->evc = p->evc;
  atomic_fetch_add(&s->evc->refs, 1);
  memset(&oo, 0, sizeof oo);
  oo.release = ev_release;
  /* The observer lives as long as the engine's pool. */
  if (tt_pool_observe_with(p->pool, ev_send, s, &oo) < 0) {
    ev_release(s);
    return luaL_error(L, "not enough memory");
  }
  return 1;
}

/* }====== */

/* pool:drain_store(store [, ctx [, {pool = NAME, allow = {"mod", ...}, batch =
** n}]]) -> true, report | nil, err [, report]: runs the store's records on this
** pool until nothing is left to claim (DESIGN section 11); when 'ctx' ends
** first, the report of what it claimed until then comes third (the ops it
** started go on, and are acknowledged as they end).  Only modules on 'allow'
** run.  nil, err of code 'closed' or 'store_unavailable' when the pool or store
** is closed or the store fails.  Raises for a non-store 'store', a non-context
** 'ctx', a bad option, and 'interrupted!' on Ctrl-C in the main state.  The
** body is lstore.c's lt_drain_store. */
static int m_drain_store(lua_State *L) {
  lp_pool *p = check_pool(L);
  return lt_drain_store(L, p->pool, p->env);
}

/* pool:drained() -> pool: the pool itself, a waitable for tether.select that
** fires once the pool is closed and empty (pools are cases already). */
static int m_drained(lua_State *L) {
  check_pool(L);
  lua_pushvalue(L, 1);
  return 1;
}

/* }==================================================================== */

/* lt_open_pool registers the tether.Pool type and sets tether.pool into the
** module table on the top of the stack. */
void lt_open_pool(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"submit", m_submit},
    {"submit_many", m_submit_many},
    {"drain", m_drain},
    {"wait_idle", m_wait_idle},
    {"close", m_close},
    {"name", m_name},
    {"id", m_id},
    {"stats", m_stats},
    {"inflight", m_inflight},
    {"failures", m_failures},
    {"dead_letters", m_dead_letters},
    {"retry_dead", m_retry_dead},
    {"drop_dead", m_drop_dead},
    {"drained", m_drained},
    {"events", m_events},
    {"drain_store", m_drain_store},
    {NULL, NULL}
  };
  lt_newtype(L, &lp_type, methods, NULL);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_pool);
  lua_setfield(L, -2, "pool");
  lua_pushcfunction(L, l_map);
  lua_setfield(L, -2, "map");
}
