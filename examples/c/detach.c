/*
** detach.c -- detached work from C: a request is canceled, and the work
** it started goes on under a context of its own, bounded by its own
** timeout, on the executor (tt_go) and on a pool.
**
** The nested-constructor idiom: constructors borrow their parent, so the
** inner context of tt_with_timeout(tt_without_cancel(req), ...) is held
** in a variable and released once the outer one is made.
**
** Build and run: make c-examples (make test does).  It prints what it
** saw and exits non-zero if anything is not as promised.
*/
#include <stdio.h>
#include <string.h>

#include "tether.h"

static const tt_key request_id = {NULL, "request_id", 10};

/* bad counts the promises broken; checked at the end. */
static int bad;

#define EXPECT(cond) \
  do { if (!(cond)) { bad++; \
    fprintf(stderr, "detach.c:%d: not as expected: %s\n", __LINE__, \
            #cond); } } while (0)

/* audit runs after the request is gone: it waits until the request is
** canceled (its argument), then does its work under its own context and
** returns "audited <request id>". */
static int audit(tt_ctx *ctx, void *req, tt_obj **out) {
  tt_obj *id = NULL;
  char buf[64];
  tt_ctx_wait(req, 5);
  if (tt_ctx_err(ctx) != 0) return tt_ctx_err(ctx);  /* not ours to see */
  if (!tt_ctx_value(ctx, &request_id, &id) || id == NULL) return TT_EFAILED;
  snprintf(buf, sizeof buf, "audited %s", ((tt_bytes *)id)->data);
  tt_unref(id);
  *out = (tt_obj *)tt_bytes_new(buf, strlen(buf));
  return TT_OK;
}

/* slow never finishes on its own: its context's timeout ends it. */
static int slow(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)arg;
  (void)out;
  tt_ctx_wait(ctx, 10);
  return tt_ctx_err(ctx);
}

static const char *text_of(tt_obj *o) {
  if (o == NULL) return "(none)";
  if (o->type == &tt_bytes_type) return ((tt_bytes *)o)->data;
  if (o->type == &tt_error_type) return ((tt_error *)o)->message;
  return o->type->name;
}

int main(void) {
  tt_bytes *id = tt_bytes_new("r-42", 4);
  tt_ctx *root = tt_with_cancel(tt_background());
  tt_ctx *req = tt_with_value(root, &request_id, &id->hdr);
  tt_ctx *d, *work, *bounded;
  tt_handle *h_audit, *h_slow, *h_op;
  tt_pool_opts po;
  tt_pool *pool;
  tt_obj *res;
  int err;

  /* Detach from the request and bound the work again: hold the inner
  ** context, release it once the outer ones are made. */
  d = tt_without_cancel(req);
  work = tt_with_timeout(d, 5, NULL);
  bounded = tt_with_timeout(d, 0.1, NULL);
  tt_unref(d);

  h_audit = tt_go(work, "audit", audit, req, NULL, &err);
  h_slow = tt_go(bounded, "slow", slow, NULL, NULL, &err);
  tt_unref(work);     /* the tasks hold their contexts */
  tt_unref(bounded);
  EXPECT(h_audit != NULL && h_slow != NULL);

  /* A pool detaches its ops by itself: each op's context is
  ** with_timeout(without_cancel(parent), timeout). */
  memset(&po, 0, sizeof po);
  po.name = "audit";
  po.workers = 2;
  po.timeout = 5;
  pool = tt_pool_new(&po, &err);
  EXPECT(pool != NULL);
  h_op = tt_pool_submit(pool, req, NULL, audit, req, NULL, &err);
  EXPECT(h_op != NULL);

  /* The client hangs up: the request is canceled. */
  tt_cancel(root, NULL);
  EXPECT(tt_ctx_err(req) == TT_CANCELED);

  /* The detached work still completes, with the request's values. */
  EXPECT(tt_latch_wait(tt_handle_latch(h_audit), 5));
  EXPECT(tt_handle_result(h_audit, &res) == TT_H_DONE);
  printf("tt_go after cancel: %s\n", text_of(res));
  EXPECT(res != NULL && strcmp(text_of(res), "audited r-42") == 0);
  tt_unref(res);

  EXPECT(tt_pool_drain(pool, NULL, 5) == TT_OK);
  EXPECT(tt_handle_result(h_op, &res) == TT_H_DONE);
  printf("pool op after cancel: %s\n", text_of(res));
  EXPECT(res != NULL && strcmp(text_of(res), "audited r-42") == 0);
  tt_unref(res);

  /* And it is bounded by its own timeout, not by the request. */
  EXPECT(tt_latch_wait(tt_handle_latch(h_slow), 5));
  EXPECT(tt_handle_result(h_slow, &res) == TT_H_FAILED);
  printf("bounded work: %s\n", text_of(res));
  EXPECT(res == &tt_deadline.hdr);
  tt_unref(res);

  tt_unref(h_audit);
  tt_unref(h_slow);
  tt_unref(h_op);
  tt_unref(pool);
  tt_unref(req);
  tt_unref(root);
  tt_unref(id);
  tt_shutdown();
  if (bad != 0) {
    fprintf(stderr, "detach.c: %d expectation(s) failed\n", bad);
    return 1;
  }
  printf("detach.c: all as expected\n");
  return 0;
}
