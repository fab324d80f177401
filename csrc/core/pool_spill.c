/*
** pool_spill.c -- spilling to a pool's overflow store: a submission the
** full queue refuses is written to the store (tt_pool_spill and the
** submit path's TT_ESPILLED), and at exit the queued ops that kept a
** spill form are written there too (tt__pool_spill_queued).  A spilling
** op counts as queued until the store answers or spill_timeout runs out
** (pool.c's DESIGN comment, "Accounting").
**
** Locks: 'mu' around every change of the pool's state, taken here and
** never held while calling the store (tt_store_put) or the store's
** callback runs; records are encoded without any lock.  The spill timer
** (tt__timer_add) is armed under 'mu', as internal.h orders them.
*/
#include <stdio.h>
#include <string.h>

#include "pool_int.h"


/* {====================================================================
** Spilling to the overflow store
** ===================================================================== */

/* spill_end ends a spilling op with the store's answer: committed (rc
** TT_OK, 'text' the id) or not (TT_ESTORE, 'text' the reason).  Whoever
** comes second (the commit after the timeout, or the timeout after the
** commit) finds the op gone and does nothing but log. */
static void spill_end(op *o, int rc, const char *text, bool from_timer) {
  tt_pool *p = o->pool;
  tt_obj *rec_err = NULL, *rec_cause = NULL, *old_err = NULL;
  tt_error *e;
  bool mine = false;
  char msg[320];
  if (rc == TT_OK) {
    snprintf(msg, sizeof msg, "spilled to the store of pool '%s' as id %s",
             p->name, text);
    e = tt_error_new(TT_ESPILLED, msg, NULL);
    if (e != NULL) e->value = (tt_obj *)tt_bytes_new(text, strlen(text));
  } else {
    snprintf(msg, sizeof msg, "store unavailable for pool '%s': %s",
             p->name, text != NULL && text[0] ? text : tt_strerror(rc));
    e = tt_error_new(TT_ESTORE, msg, NULL);
  }
  tt__lock(&p->mu);
  if (o->where == OP_SPILLING) {
    mine = true;
    tt_list_remove(&o->link);
    o->where = OP_GONE;
    p->st.queued--;
    if (rc == TT_OK) {
      p->st.spilled++;
      tt__pool_resolve(o, TT_H_FAILED, (tt_obj *)e);
      pool_emit(p, o, (tt_event){.kind = TT_EV_SPILLED});
    } else {
      p->st.failed++;
      old_err = o->err;
      o->err = tt_ref(e);
      o->code = TT_ESTORE;
      tt__pool_record_failure(p, o, (tt_obj *)e, (tt_obj *)e, TT_ESTORE,
                              &rec_err, &rec_cause);
      tt__pool_resolve(o, TT_H_FAILED, (tt_obj *)e);
      pool_emit(p, o, (tt_event){.kind = TT_EV_FAILED, .code = TT_ESTORE,
                                 .error = (tt_obj *)e, .cause = (tt_obj *)e});
    }
    tt__pool_settle(p);
  }
  tt__unlock(&p->mu);
  if (!mine) {
    if (rc == TT_OK && !from_timer) {
      tt_field f[] = {TT_FSTR("pool", p->name), TT_FSTR("id", text)};
      tt_log(TT_LOG_WARN, "spill committed after its spill_timeout; the "
             "op is in the store", f, 2);
    }
    tt_unref(e);
  }
  tt_unref(old_err);
  tt_unref(rec_err);
  tt_unref(rec_cause);
  pool_deliver(p);
  if (mine) tt_unref(&o->h);  /* the pool's reference */
}

/* spill_done is the store's callback (on its thread). */
static void spill_done(void *ud, int rc, const char *text) {
  op *o = ud;
  spill_end(o, rc, text, false);
  tt_unref(&o->h);  /* the callback's reference */
}

/* spill_arm_locked queues the pool's spill timer for the oldest spilling
** op, unless it is queued already (it then re-arms itself when it
** fires).  One timer for all spills: a spill costs no timer heap
** operation of its own. */
static void spill_arm_locked(tt_pool *p) {
  op *head;
  if (p->spill_armed || tt_list_empty(&p->spilling)) return;
  head = tt_container_of(p->spilling.next, op, link);
  pool_hold(p);
  if (tt__timer_add(&p->spill_te, head->spill_until) == TT_OK)
    p->spill_armed = true;
  else
    pool_release_held(p);  /* the store's answer still ends each spill */
}

/* spill_put hands the record in 'b' (freed here) of spilling op 'o',
** which holds a reference for the store's callback, to the store: the
** callback ends the spill, or ends it here at once when the store
** refuses the record. */
static void spill_put(tt_pool *p, op *o, tt_buf *b) {
  int rc = tt_store_put(p->overflow, p->name, b->data, b->len,
                        tt_now() + p->spill_timeout, spill_done, o);
  tt_buf_free(b);
  if (rc != TT_OK)
    spill_done(o, TT_ESTORE, rc == TT_ECLOSED ? "the store is closed"
                                              : tt_strerror(rc));
}

/* tt__pool_spill_fire ends the spills whose spill_timeout ran out and re-arms
** for the next one. */
void tt__pool_spill_fire(tt_tentry *te) {
  tt_pool *p = tt_container_of(te, tt_pool, spill_te);
  tt_list expired;
  tt_list *l;
  double now = tt_now();
  char why[96];
  tt_list_init(&expired);
  tt__lock(&p->mu);
  for (l = p->spilling.next; l != &p->spilling; l = l->next) {
    op *o = tt_container_of(l, op, link);
    if (o->spill_until > now) break;
    tt_ref(&o->h);
    tt_list_push(&expired, &o->clink);
  }
  tt__unlock(&p->mu);
  snprintf(why, sizeof why, "not committed within spill_timeout (%g s)",
           p->spill_timeout);
  while ((l = tt_list_shift(&expired)) != NULL) {
    op *o = tt_container_of(l, op, clink);
    spill_end(o, TT_ESTORE, why, true);
    tt_unref(&o->h);
  }
  tt__lock(&p->mu);
  p->spill_armed = false;
  spill_arm_locked(p);
  tt__unlock(&p->mu);
  pool_release(p);  /* the timer's reference (re-arming took another) */
}

/* wall_deadline is the deadline of 'ctx' on the wall clock, as records
** carry it (0: none). */
static double wall_deadline(tt_ctx *ctx) {
  double dl;
  return tt_ctx_deadline(ctx, &dl) ? tt_wall() + (dl - tt_now()) : 0;
}

/* record_base fills what every record of pool 'p' carries about an op
** named 'name' of tenant 'tenant' (NULL: none) whose values are those
** of 'ctx': the rest is the caller's. */
static void record_base(tt_record *r, tt_pool *p, const char *name,
                        const char *tenant, size_t tenant_len,
                        tt_ctx *ctx) {
  memset(r, 0, sizeof *r);
  r->pool = p->name;
  r->name = name;
  if (tenant != NULL) {
    r->tenant = tenant;
    r->tenant_len = tenant_len;
    if (p->tenant_key.obj == NULL) r->tenant_key = p->tenant_key.str;
  }
  r->has_trace = ctx != NULL && tt_ctx_span_context(ctx, &r->trace);
  r->has_retry = true;
  r->spilled_at = tt_wall();
}

/* tt__pool_spillform_new copies the spill form of a submission that brought one
** (NULL without one, with arguments that are not wire values, or when
** out of memory: the op then cannot go to the store at exit, and is
** abandoned there like a closure). */
spillform *tt__pool_spillform_new(const tt_submit_opts *so, tt_ctx *parent) {
  size_t fl = strlen(so->spill_fn) + 1;
  spillform *sf;
  if (so->spill_args == NULL ||
      tt_wire_check(so->spill_args, so->spill_args_len, NULL, NULL, 0) !=
          TT_OK)
    return NULL;
  sf = malloc(sizeof *sf + so->spill_args_len + fl);
  if (sf == NULL) return NULL;
  sf->deadline = wall_deadline(parent);
  sf->args_len = so->spill_args_len;
  memcpy(sf->args, so->spill_args, so->spill_args_len);
  memcpy(sf->args + sf->args_len, so->spill_fn, fl);
  sf->fn = (const char *)sf->args + sf->args_len;
  return sf;
}

/* tt__pool_do_spill writes a submission to the overflow store: it encodes the
** record on the calling thread, accepts the op as SPILLING and hands the
** record to the store's thread; the handle resolves later. */
tt_handle *tt__pool_do_spill(tt_pool *p, tt_ctx *parent,
                             const tt_submit_opts *so, const sub *s,
                             int *err) {
  tt_record r;
  tt_buf b = TT_BUF_INIT;
  op *o;
  int rc;
  if (so->spill_args == NULL ||
      tt_wire_check(so->spill_args, so->spill_args_len, NULL, NULL, 0) !=
          TT_OK)
    return pool_refused(err, TT_EINVAL);
  record_base(&r, p, s->name, s->tenant, s->tenant_len, parent);
  r.fn = so->spill_fn;
  r.args = so->spill_args;
  r.args_len = so->spill_args_len;
  r.priority = so->priority;
  r.retry = s->retry;
  r.timeout = s->timeout > 0 ? s->timeout : 0;
  r.deadline = wall_deadline(parent);
  if (tt_record_encode(&r, &b) != TT_OK) {
    tt_buf_free(&b);
    return pool_refused(err, TT_ENOMEM);
  }
  o = b.len <= tt_store_max_payload(p->overflow)
          ? tt__pool_op_new(p, s->name, NULL, s->ci, s->tenant,
                            s->tenant_len, NULL, &s->retry, s->timeout)
          : NULL;
  if (o == NULL && b.len <= tt_store_max_payload(p->overflow)) {
    tt_buf_free(&b);
    return pool_refused(err, TT_ENOMEM);
  }
  tt__lock(&p->mu);
  if (o == NULL)
    rc = TT_EQUEUE_FULL;  /* too large to spill */
  else if (p->closed)
    rc = TT_ECLOSED;
  else
    rc = pool_quota_ok(p, s->tenant, s->tenant_len) ? TT_OK : TT_EQUOTA;
  if (rc != TT_OK) {
    tt__pool_reject_locked(p, rc, s);
  } else {
    o->id = ++p->next_id;
    tt__pool_idle_disarm(p);
    if (p->idle_reported) {
      p->idle_reported = false;
      pool_emit(p, NULL, (tt_event){.kind = TT_EV_RESUMING});
    }
    p->st.submitted++;
    p->st.queued++;
    o->where = OP_SPILLING;
    o->spill_until = tt_now() + p->spill_timeout;
    tt_list_push(&p->spilling, &o->link);
    tt_ref(&o->h);  /* the pool's */
    tt_ref(&o->h);  /* the store callback's */
    pool_emit(p, o, (tt_event){.kind = TT_EV_SUBMITTED});
    spill_arm_locked(p);
  }
  tt__unlock(&p->mu);
  pool_deliver(p);
  if (rc != TT_OK) {
    tt_buf_free(&b);
    if (o != NULL) tt_unref(&o->h);
    return pool_refused(err, rc);
  }
  spill_put(p, o, &b);
  if (err != NULL) *err = TT_OK;
  return &o->h;
}

tt_handle *tt_pool_spill(tt_pool *p, tt_ctx *parent,
                         const tt_submit_opts *so, int *err) {
  sub s;
  tt_handle *h;
  int rc;
  if (p == NULL || !pool_can_spill(p, so) || so->spill_args == NULL)
    return pool_refused(err, TT_EINVAL);
  rc = tt__pool_settle_sub(p, parent, so, &s);
  h = rc == TT_OK ? tt__pool_do_spill(p, parent, so, &s, err)
                  : pool_refused(err, rc);
  tt_unref(s.thold);
  return h;
}

tt_store *tt_pool_overflow(tt_pool *p) { return p->overflow; }

/* respill writes 'o', a queued op with a spill form that its caller took
** off its queue (OP_FINISHING, still counted as queued), to the store, as
** tt__pool_do_spill would have: from here on it is SPILLING and ends when the
** store answers.  A record that cannot be made (no memory, over the
** store's max_payload) puts the op back in its queue; false then. */
static bool respill(tt_pool *p, op *o) {
  const spillform *sf = o->sf;
  tt_record r;
  tt_buf b = TT_BUF_INIT;
  /* Nobody else touches an op off every list: its fields are stable. */
  record_base(&r, p, o->h.name, o->tenant, o->tenant_len, o->base);
  r.fn = sf->fn;
  r.args = sf->args;
  r.args_len = sf->args_len;
  r.priority = p->ncls > 1 ? p->cls[o->cls].name : NULL;
  r.retry = o->retry;
  r.timeout = o->timeout > 0 ? o->timeout : 0;
  r.deadline = sf->deadline;
  r.attempt = o->attempt;
  if (tt_record_encode(&r, &b) != TT_OK ||
      b.len > tt_store_max_payload(p->overflow)) {
    tt_buf_free(&b);
    tt__lock(&p->mu);
    tt__pool_push_ready(p, o);
    tt__unlock(&p->mu);
    return false;
  }
  /* As for any op that leaves, the argument goes before the handle
  ** resolves. */
  tt__handle_drop_arg(&o->h);
  tt__lock(&p->mu);
  pool_tenant_dec(p, o->tenant, o->tenant_len);
  o->where = OP_SPILLING;
  o->spill_until = tt_now() + p->spill_timeout;
  tt_list_push(&p->spilling, &o->link);  /* keeps the pool's reference */
  tt_ref(&o->h);  /* the store callback's */
  spill_arm_locked(p);
  tt__unlock(&p->mu);
  spill_put(p, o, &b);
  return true;
}

/* take_spillable moves the ops of 'from' that keep a spill form to the
** private list 'to' (under 'mu'). */
static void take_spillable(tt_pool *p, tt_list *from, tt_list *to) {
  tt_list *l = from->next;
  while (l != from) {
    op *o = tt_container_of(l, op, link);
    l = l->next;
    if (o->sf == NULL) continue;
    tt__pool_unqueue_locked(p, o);
    tt_list_push(to, &o->clink);
  }
}

size_t tt__pool_spill_queued(tt_pool *p) {
  tt_list mine, *l;
  size_t n = 0;
  int k;
  if (p->overflow == NULL) return 0;
  tt_list_init(&mine);
  tt__lock(&p->mu);
  for (k = 0; k < p->ncls; k++) take_spillable(p, &p->cls[k].ready, &mine);
  take_spillable(p, &p->waiting, &mine);
  tt__unlock(&p->mu);
  while ((l = tt_list_shift(&mine)) != NULL)
    if (respill(p, tt_container_of(l, op, clink))) n++;
  return n;
}

bool tt__pool_wait_spills(tt_pool *p) {
  double until = tt_now() + p->spill_timeout + 1;
  for (;;) {
    tt_case c;
    op *o;
    bool done;
    double left;
    tt__lock(&p->mu);
    if (tt_list_empty(&p->spilling)) {
      tt__unlock(&p->mu);
      tt__pool_flush_events(p);
      return true;
    }
    o = tt_container_of(p->spilling.next, op, link);
    tt_ref(&o->h);
    tt__unlock(&p->mu);
    left = until - tt_now();
    if (left > 0) {
      memset(&c, 0, sizeof c);
      c.kind = TT_CASE_LATCH;
      c.latch = &o->h.done;
      (void)tt_select(&c, 1, false, left);
    }
    done = tt_latch_is_set(&o->h.done);
    tt_unref(&o->h);
    if (!done) return false;
  }
}

/* }==================================================================== */
