/*
** oplog.c -- one log line per op outcome, written from pool events.
**
** An observer like any other (DESIGN section 10): it asks only for the
** events it may log, so that at the default level an op that ends well
** costs the pool nothing here (the pool queues no event nobody wants).
** Lines about ops that end badly are written at warn (an attempt failed
** and will be retried) or error (failed, dead, abandoned); those about
** ops that end well (completed, stopped, spilled) at debug.  Every line
** carries the same fields, null where they do not apply: pool, op, id,
** tenant, attempt, outcome, duration_ms, error, trace_id, span_id (the
** span of the op's attempt when tracing made one, else the submitter's)
** and state (of an abandoned op: "queued" or "running").  A quiet pool
** logs only its abandoned ops: work lost at exit is never silent.
*/
#include <math.h>
#include <string.h>

#include "internal.h"

/* The level of each event kind's line, or -1 for kinds never logged. */
static int level_of(int kind) {
  switch (kind) {
    case TT_EV_RETRIED: return TT_LOG_WARN;
    case TT_EV_FAILED: case TT_EV_DEAD: case TT_EV_ABANDONED:
      return TT_LOG_ERROR;
    case TT_EV_COMPLETED: case TT_EV_STOPPED: case TT_EV_SPILLED:
      return TT_LOG_DEBUG;
    default: return -1;
  }
}

/* 'ud' is non-NULL for a quiet pool. */
/* cppcheck-suppress constParameter ; an observer's 'wants', whose type
** fixes the signature (cppcheck 2.10 does not see it used as one) */
static bool wants(int kind, void *ud) {
  int l = level_of(kind);
  if (ud != NULL && kind != TT_EV_ABANDONED) return false;
  return l >= 0 && tt_log_enabled(l);
}

static void line(const tt_event *ev, void *ud) {
  static const char *const msgs[TT_NEVENTS] = {
    [TT_EV_RETRIED] = "op attempt failed", [TT_EV_FAILED] = "op failed",
    [TT_EV_DEAD] = "op dead", [TT_EV_ABANDONED] = "abandoned at exit",
    [TT_EV_COMPLETED] = "op completed", [TT_EV_STOPPED] = "op stopped",
    [TT_EV_SPILLED] = "op spilled",
  };
  static const char *const outcomes[TT_NEVENTS] = {
    [TT_EV_RETRIED] = "retried", [TT_EV_FAILED] = "failed",
    [TT_EV_DEAD] = "dead", [TT_EV_ABANDONED] = "abandoned",
    [TT_EV_COMPLETED] = "completed", [TT_EV_STOPPED] = "stopped",
    [TT_EV_SPILLED] = "spilled",
  };
  int l = level_of(ev->kind);
  tt_span_context sc;
  char tid[33], sid[17];
  const char *error = NULL;
  char desc[512];
  bool ran, traced;
  if (!wants(ev->kind, ud)) return;
  ran = ev->kind == TT_EV_COMPLETED || ev->kind == TT_EV_RETRIED ||
        ((ev->kind == TT_EV_FAILED || ev->kind == TT_EV_DEAD) &&
         ev->attempt > 0);
  if (ev->error != NULL) {
    if (ev->error->type == &tt_error_type)
      error = ((tt_error *)ev->error)->message;
    else if (tt_describe(ev->error, desc, sizeof desc) >= 0)
      error = desc;
  } else if (ev->kind == TT_EV_FAILED || ev->kind == TT_EV_DEAD) {
    error = tt_strerror(ev->code != 0 ? ev->code : TT_EFAILED);
  }
  traced = ev->ctx != NULL && tt_ctx_span_context(ev->ctx, &sc);
  if (traced) {
    tt_hex(sc.trace_id, 16, tid);
    tt_hex(sc.span_id, 8, sid);
  }
  {
    tt_field f[] = {
      TT_FSTR("pool", ev->pool_name),
      TT_FSTR("op", ev->name),
      TT_FINT("id", ev->id),
      TT_FSTRN("tenant", ev->tenant, ev->tenant_len),
      TT_FINT("attempt", ev->attempt),
      TT_FSTR("outcome", outcomes[ev->kind]),
      TT_FNUM("duration_ms", ran ? ev->duration * 1e3 : NAN),
      TT_FSTR("error", error),
      TT_FSTR("trace_id", traced ? tid : NULL),
      TT_FSTR("span_id", traced ? sid : NULL),
      TT_FSTR("state", ev->kind != TT_EV_ABANDONED ? NULL
                       : ev->running ? "running" : "queued"),
    };
    tt_log(l, msgs[ev->kind], f, sizeof f / sizeof f[0]);
  }
}

int tt_log_observe_pool(tt_pool *p, bool quiet) {
  static char quiet_mark;
  tt_observer_opts o;
  memset(&o, 0, sizeof o);
  o.wants = wants;
  if (p == NULL) return TT_EINVAL;
  return tt_pool_observe_with(p, line, quiet ? &quiet_mark : NULL, &o) > 0
             ? TT_OK : TT_ENOMEM;
}
