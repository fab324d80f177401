/*
** saga.c -- sagas: a sequence of steps, each with an action and an
** optional compensation that undoes it.
**
** DESIGN.  tt_saga_run runs the actions in order on the calling thread
** (the Lua binding calls Lua functions from them, so they must stay on
** the thread that owns the lua_State).  Before each action it looks at
** the caller's context: once that is done, no further action starts.
** When an action fails, or the context stops the saga, the compensations
** of the steps whose actions completed run in reverse order, still on the
** calling thread, each attempt under a fresh
** with_timeout(without_cancel(ctx), compensation_timeout): detached from
** the caller's cancellation (a canceled request must still be undone) but
** keeping its values, and bounded again by the timeout.  Failed attempts
** are retried by the saga's policy, sleeping between them; a compensation
** that fails its last attempt is reported, handed to the "dead letter"
** hook, and the saga goes on to undo the earlier steps.
**
** Each action and each compensation attempt is a span when tracing is on
** (trace.c): an action's parent is the caller's span, a compensation's
** too, with a link to it, since it runs detached.
**
** A tt_saga is immutable after creation except for its hook, which 'mu'
** guards; any number of runs may proceed at once on different threads.
** 'mu' is a leaf lock, and the hook is called without it.
*/
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* {====================================================================
** Sagas
** ===================================================================== */

typedef struct sstep {
  char *name;              /* a copy */
  char *cname;             /* "compensate <name>", its span's name */
  int (*action)(tt_ctx *ctx, void *state, void *ud, tt_obj **err);
  int (*compensate)(tt_ctx *ctx, void *state, void *ud, tt_obj **err);
  void *ud;
} sstep;

struct tt_saga {
  tt_obj hdr;
  char *name;              /* immutable, a copy */
  int nsteps;              /* immutable */
  sstep *steps;            /* immutable */
  double ctimeout;         /* immutable; <= 0: no compensation timeout */
  tt_retry retry;          /* immutable; normalized by tt_saga_new */
  pthread_mutex_t mu;      /* protects 'hook' and 'hook_ud' */
  void (*hook)(const char *saga, const char *step, tt_obj *err,
               int attempts, void *ud);
  void *hook_ud;
};

static void saga_free(tt_obj *o) {
  tt_saga *s = (tt_saga *)o;
  int i;
  for (i = 0; i < s->nsteps; i++) {
    free(s->steps[i].name);
    free(s->steps[i].cname);
  }
  free(s->steps);
  free(s->name);
  TT_CHECK(pthread_mutex_destroy(&s->mu));
  free(s);
}

static int saga_describe(tt_obj *o, char *buf, size_t n) {
  tt_saga *s = (tt_saga *)o;
  return snprintf(buf, n, "tether.Saga '%s' (%d steps)", s->name,
                  s->nsteps);
}

const tt_type tt_saga_type = {"tether.Saga", saga_free, saga_describe,
                               NULL};

tt_saga *tt_saga_new(const char *name, const tt_saga_step *steps,
                     int nsteps, double compensation_timeout,
                     const tt_retry *retry) {
  tt_saga *s;
  int i;
  if (nsteps < 0 || (nsteps > 0 && steps == NULL)) return NULL;
  for (i = 0; i < nsteps; i++)
    if (steps[i].action == NULL) return NULL;
  s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->name = tt__strdup(name != NULL ? name : "saga");
  s->steps = calloc(nsteps > 0 ? (size_t)nsteps : 1, sizeof *s->steps);
  if (s->name == NULL || s->steps == NULL) goto fail;
  for (; s->nsteps < nsteps; s->nsteps++) {
    const tt_saga_step *in = &steps[s->nsteps];
    sstep *st = &s->steps[s->nsteps];
    char num[32];
    if (in->name == NULL) snprintf(num, sizeof num, "step %d", s->nsteps + 1);
    st->name = tt__strdup(in->name != NULL ? in->name : num);
    if (st->name == NULL) goto fail;
    st->cname = malloc(strlen(st->name) + sizeof "compensate ");
    if (st->cname == NULL) {
      free(st->name);
      goto fail;
    }
    memcpy(st->cname, "compensate ", sizeof "compensate " - 1);
    memcpy(st->cname + sizeof "compensate " - 1, st->name,
           strlen(st->name) + 1);
    st->action = in->action;
    st->compensate = in->compensate;
    st->ud = in->ud;
  }
  s->ctimeout = compensation_timeout;
  if (retry != NULL) s->retry = *retry;
  if (s->retry.attempts < 1) s->retry.attempts = 1;
  if (!(s->retry.backoff > 0)) s->retry.backoff = 0;
  if (!(s->retry.factor > 0)) s->retry.factor = 1;
  if (!(s->retry.jitter > 0)) s->retry.jitter = 0;
  if (s->retry.jitter > 1) s->retry.jitter = 1;
  tt_obj_init(&s->hdr, &tt_saga_type);
  TT_CHECK(pthread_mutex_init(&s->mu, NULL));
  return s;
fail:
  for (i = 0; i < s->nsteps; i++) {
    free(s->steps[i].name);
    free(s->steps[i].cname);
  }
  free(s->steps);
  free(s->name);
  free(s);
  return NULL;
}

void tt_saga_set_on_compensation_failure(
    tt_saga *s,
    void (*fn)(const char *saga, const char *step, tt_obj *err,
               int attempts, void *ud),
    void *ud) {
  tt__lock(&s->mu);
  s->hook = fn;
  s->hook_ud = ud;
  tt__unlock(&s->mu);
}

const char *tt_saga_name(tt_saga *s) { return s->name; }

/* }==================================================================== */


/* {====================================================================
** Reports
** ===================================================================== */

static tt_saga_report *report_new(tt_saga *s) {
  tt_saga_report *r;
  int i;
  r = calloc(1, sizeof *r + (size_t)s->nsteps * sizeof r->steps[0]);
  if (r == NULL) return NULL;
  r->saga = tt__strdup(s->name);
  r->failed_step = -1;
  if (r->saga == NULL) goto fail;
  for (; r->nsteps < s->nsteps; r->nsteps++) {
    r->steps[r->nsteps].name = tt__strdup(s->steps[r->nsteps].name);
    if (r->steps[r->nsteps].name == NULL) goto fail;
  }
  return r;
fail:
  for (i = 0; i < r->nsteps; i++) free(r->steps[i].name);
  free(r->saga);
  free(r);
  return NULL;
}

void tt_saga_report_free(tt_saga_report *r) {
  int i;
  if (r == NULL) return;
  for (i = 0; i < r->nsteps; i++) {
    free(r->steps[i].name);
    tt_unref(r->steps[i].error);
  }
  tt_unref(r->error);
  free(r->saga);
  free(r);
}

const char *tt_saga_status_name(int status) {
  static const char *const names[] = {
    "not_run", "done", "failed", "compensated", "compensation_failed"
  };
  if (status < 0 || status > TT_STEP_COMPENSATION_FAILED) return "unknown";
  return names[status];
}

/* }==================================================================== */


/* {====================================================================
** Running
** ===================================================================== */

/* error_of turns what a failed callback left behind into an error object
** (a reference): its own, else a fresh one for the code it returned. */
static tt_obj *error_of(int rc, tt_obj *err) {
  if (err != NULL) return err;
  return (tt_obj *)tt_error_for(rc > 0 && rc < TT_NERRORS ? rc : TT_EFAILED);
}

/* retry_delay is the pause before attempt n+1, by tether.h's tt_retry
** formula: min(max_backoff, backoff * factor^(n-1)), times a random
** factor in [1 - jitter, 1 + jitter]. */
static double retry_delay(const tt_retry *p, int n) {
  double d = p->backoff;
  int i;
  for (i = 1; i < n; i++) {
    d *= p->factor;
    if (p->max_backoff > 0 && d >= p->max_backoff) break;
  }
  if (p->max_backoff > 0 && d > p->max_backoff) d = p->max_backoff;
  if (p->jitter > 0) {
    double u = (double)(tt__random() >> 11) / 9007199254740992.0;
    d *= 1 - p->jitter + 2 * p->jitter * u;
  }
  return d;
}

/* undo_step runs one step's compensation until it succeeds or its
** attempts run out, and records the outcome in 'rs'.  It returns false if
** the compensation still fails. */
static bool undo_step(tt_saga *s, const sstep *st, tt_saga_step_report *rs,
                      tt_ctx *ctx, void *state) {
  int a;
  for (a = 1;; a++) {
    tt_ctx *detached = tt_without_cancel(ctx), *cctx = detached;
    tt_obj *err = NULL;
    int rc;
    if (detached != NULL && s->ctimeout > 0) {
      cctx = tt_with_timeout(detached, s->ctimeout, NULL);
      tt_unref(detached);
    }
    if (cctx != NULL) {
      tt_field attrs[] = {TT_FSTR("tether.saga", s->name),
                          TT_FSTR("tether.step", st->name),
                          TT_FBOOL("tether.compensation", true),
                          TT_FINT("tether.attempt", a)};
      tt_ctx *sctx;
      tt_span *sp = tt__span_work(cctx, st->cname, true, attrs, 4, &sctx);
      rc = st->compensate(sctx != NULL ? sctx : cctx, state, st->ud, &err);
      tt__span_finish(sp, rc, err);
      tt_unref(sctx);
      /* Release the attempt's timer now rather than at its deadline. */
      tt_cancel(cctx, NULL);
      tt_unref(cctx);
    } else {
      rc = TT_ENOMEM;
    }
    rs->attempts = a;
    tt_unref(rs->error);
    rs->error = NULL;
    if (rc == TT_OK) {
      tt_unref(err);
      rs->status = TT_STEP_COMPENSATED;
      return true;
    }
    rs->error = error_of(rc, err);
    if (a >= s->retry.attempts) break;
    tt_sleep(retry_delay(&s->retry, a), NULL);
  }
  rs->status = TT_STEP_COMPENSATION_FAILED;
  return false;
}

/* compensate undoes steps [0, ndone) in reverse order. */
static void compensate(tt_saga *s, tt_saga_report *r, int ndone,
                       tt_ctx *ctx, void *state) {
  int i;
  for (i = ndone - 1; i >= 0; i--) {
    const sstep *st = &s->steps[i];
    tt_saga_step_report *rs = &r->steps[i];
    void (*hook)(const char *, const char *, tt_obj *, int, void *);
    void *ud;
    if (st->compensate == NULL) continue;  /* nothing to undo: stays done */
    if (undo_step(s, st, rs, ctx, state)) continue;
    r->compensation_failures++;
    tt__lock(&s->mu);
    hook = s->hook;
    ud = s->hook_ud;
    tt__unlock(&s->mu);
    if (hook != NULL) hook(s->name, st->name, rs->error, rs->attempts, ud);
  }
}

int tt_saga_run(tt_saga *s, tt_ctx *ctx, void *state,
                tt_saga_report **report) {
  tt_saga_report *r;
  int i, rc = TT_OK, ndone = 0;
  if (report != NULL) *report = NULL;
  if (s == NULL || ctx == NULL) return TT_EINVAL;
  r = report_new(s);
  if (r == NULL) return TT_ENOMEM;
  for (i = 0; i < s->nsteps; i++) {
    const sstep *st = &s->steps[i];
    tt_obj *err = NULL;
    int arc;
    if ((rc = tt_ctx_err(ctx)) != TT_OK) {
      /* The caller gave up: start nothing more, undo what ran. */
      r->failed_step = i;
      r->error = (tt_obj *)tt_error_for(rc);
      break;
    }
    {
      tt_field attrs[] = {TT_FSTR("tether.saga", s->name),
                          TT_FSTR("tether.step", st->name)};
      tt_ctx *sctx;
      tt_span *sp = tt__span_work(ctx, st->name, false, attrs, 2, &sctx);
      arc = st->action(sctx != NULL ? sctx : ctx, state, st->ud, &err);
      tt__span_finish(sp, arc, err);
      tt_unref(sctx);
    }
    if (arc == TT_OK) {
      tt_unref(err);
      r->steps[i].status = TT_STEP_DONE;
      ndone = i + 1;
      continue;
    }
    rc = TT_EFAILED;
    err = error_of(arc, err);
    r->steps[i].status = TT_STEP_FAILED;
    r->steps[i].error = tt_ref(err);
    r->failed_step = i;
    r->error = err;
    break;
  }
  if (rc != TT_OK) compensate(s, r, ndone, ctx, state);
  r->code = rc;
  if (report != NULL)
    *report = r;
  else
    tt_saga_report_free(r);
  return rc;
}

/* }==================================================================== */
