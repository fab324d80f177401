/*
** chan.c -- channels: a ring buffer plus queues of parked receivers and
** senders, after Go's runtime/chan.go.
**
** A parked node belongs to a waiter inside tt_select.  A channel
** operation that finds a parked counterpart claims it (tt__claim) and
** completes the handoff while holding the channel's lock; a counterpart
** whose waiter was already woken by another case is dropped from the
** queue and skipped.
**
** Reference cycles.  Objects are freed by reference counting, so a
** channel that holds itself, or an object that holds it, would never be
** freed.  Contexts, errors and packed values hold a fixed set of objects
** from the moment they are made, so such a cycle can only be closed by a
** send: a send whose item reaches the channel (tt__send_looks, then a
** walk through the types' 'traverse') is refused with TT_EINVAL.  Items
** that hold no object (a byte string, a packed plain Lua value) skip the
** look; the others look and insert under the engine-wide cycle lock, so
** that two sends racing to close one cycle cannot both miss it.  Items of
** parked senders count as held by the channel (chan_traverse).
*/
#include <stdio.h>
#include <string.h>

#include "internal.h"

struct tt_chan {
  tt_obj hdr;
  pthread_mutex_t mu;    /* protects everything below */
  size_t cap;            /* buffer capacity; 0 for an unbuffered channel */
  size_t len, head;      /* items in the ring, index of the oldest */
  tt_obj **buf;          /* 'cap' slots */
  bool closed;
  tt_list recvq;         /* parked receivers (tt_wnode) */
  tt_list sendq;         /* parked senders (tt_wnode) */
};

static void chan_free(tt_obj *o) {
  tt_chan *c = (tt_chan *)o;
  size_t i;
  for (i = 0; i < c->len; i++) tt_unref(c->buf[(c->head + i) % c->cap]);
  TT_CHECK(pthread_mutex_destroy(&c->mu));
  free(c->buf);
  free(c);
}

static int chan_describe(tt_obj *o, char *buf, size_t n) {
  tt_chan *c = (tt_chan *)o;
  return snprintf(buf, n, "tether.Chan (%zu/%zu%s)", tt_chan_len(c), c->cap,
                  tt_chan_closed(c) ? ", closed" : "");
}

/* A channel holds its buffered items, and the items of the senders parked
** on it count as held too: they go into the buffer without another look
** when a receiver makes room. */
static void chan_traverse(tt_obj *o, tt_visit visit, void *ud) {
  tt_chan *c = (tt_chan *)o;
  tt_list *l;
  size_t i;
  tt__lock(&c->mu);
  for (i = 0; i < c->len; i++) visit(c->buf[(c->head + i) % c->cap], ud);
  for (l = c->sendq.next; l != &c->sendq; l = l->next)
    visit(tt_container_of(l, tt_wnode, link)->c->item, ud);
  tt__unlock(&c->mu);
}

const tt_type tt_chan_type = {"tether.Chan", chan_free, chan_describe,
                              chan_traverse};

tt_chan *tt_chan_new(size_t cap) {
  tt_chan *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  if (cap > 0) {
    c->buf = calloc(cap, sizeof *c->buf);
    if (c->buf == NULL) {
      free(c);
      return NULL;
    }
  }
  tt_obj_init(&c->hdr, &tt_chan_type);
  TT_CHECK(pthread_mutex_init(&c->mu, NULL));
  c->cap = cap;
  tt_list_init(&c->recvq);
  tt_list_init(&c->sendq);
  return c;
}

void tt__chan_lock(tt_chan *c) { tt__lock(&c->mu); }
void tt__chan_unlock(tt_chan *c) { tt__unlock(&c->mu); }

/* claim_one takes the first parked node of 'q' whose waiter it can claim,
** dropping nodes whose waiters were claimed by another case. */
static tt_wnode *claim_one(tt_list *q) {
  tt_list *l;
  while ((l = tt_list_shift(q)) != NULL) {
    tt_wnode *n = tt_container_of(l, tt_wnode, link);
    int expect = -1;
    if (atomic_compare_exchange_strong(&n->w->fired, &expect, n->idx))
      return n;
  }
  return NULL;
}

/* wake signals a waiter claimed by claim_one, after the handoff is done. */
static void wake(tt_wnode *n) { tt__wake(n->w); }

bool tt__chan_try(tt_chan *c, tt_case *cs) {
  tt_wnode *n;
  if (cs->kind == TT_CASE_RECV) {
    if (c->len > 0) {
      cs->item = c->buf[c->head];
      c->buf[c->head] = NULL;
      c->head = (c->head + 1) % c->cap;
      c->len--;
      cs->ok = true;
      /* A parked sender may now move its item into the freed slot. */
      if ((n = claim_one(&c->sendq)) != NULL) {
        c->buf[(c->head + c->len) % c->cap] = n->c->item;
        c->len++;
        wake(n);
      }
      return true;
    }
    if ((n = claim_one(&c->sendq)) != NULL) {
      cs->item = n->c->item;
      cs->ok = true;
      wake(n);
      return true;
    }
    if (c->closed) {
      cs->item = NULL;
      cs->ok = false;
      return true;
    }
    return false;
  }
  /* A send. */
  if (c->closed) {
    cs->closed = true;
    return true;
  }
  if ((n = claim_one(&c->recvq)) != NULL) {
    n->c->item = cs->item;
    n->c->ok = true;
    wake(n);
    return true;
  }
  if (c->len < c->cap) {
    c->buf[(c->head + c->len) % c->cap] = cs->item;
    c->len++;
    return true;
  }
  return false;
}

void tt__chan_park(tt_chan *c, tt_wnode *n) {
  tt_list_push(n->c->kind == TT_CASE_RECV ? &c->recvq : &c->sendq, &n->link);
}

void tt__chan_unpark(tt_chan *c, tt_wnode *n) {
  (void)c;
  tt_list_remove(&n->link);
}

int tt_chan_close(tt_chan *c) {
  tt_wnode *n;
  tt__lock(&c->mu);
  if (c->closed) {
    tt__unlock(&c->mu);
    return TT_ECLOSED;
  }
  c->closed = true;
  while ((n = claim_one(&c->recvq)) != NULL) {
    n->c->item = NULL;
    n->c->ok = false;
    wake(n);
  }
  while ((n = claim_one(&c->sendq)) != NULL) {
    n->c->closed = true;
    wake(n);
  }
  tt__unlock(&c->mu);
  return TT_OK;
}

size_t tt_chan_len(tt_chan *c) {
  size_t n;
  tt__lock(&c->mu);
  n = c->len;
  tt__unlock(&c->mu);
  return n;
}

size_t tt_chan_cap(tt_chan *c) { return c->cap; }

bool tt_chan_closed(tt_chan *c) {
  bool b;
  tt__lock(&c->mu);
  b = c->closed;
  tt__unlock(&c->mu);
  return b;
}

/* {====================================================================
** Blocking operations, as selects of one or two cases
** ===================================================================== */

static int chan_op(tt_chan *c, tt_case *op, tt_ctx *ctx, double timeout) {
  tt_case cs[2];
  int n = 1, r;
  cs[0] = *op;
  if (ctx != NULL && tt_ctx_done(ctx) != NULL) {
    memset(&cs[1], 0, sizeof cs[1]);
    cs[1].kind = TT_CASE_LATCH;
    cs[1].latch = tt_ctx_done(ctx);
    n = 2;
  }
  (void)c;
  r = tt_select(cs, n, false, timeout);
  *op = cs[0];
  if (r == 0) return TT_OK;
  if (r == 1) return tt_ctx_err(ctx);
  if (r == TT_SELECT_INTERRUPTED) return TT_EINTR;
  if (r == TT_SELECT_INVALID) return TT_EINVAL;
  return TT_ETIMEOUT;
}

int tt_chan_send(tt_chan *c, tt_obj *item, tt_ctx *ctx, double timeout) {
  tt_case op;
  int r;
  memset(&op, 0, sizeof op);
  op.kind = TT_CASE_SEND;
  op.chan = c;
  op.item = item;
  r = chan_op(c, &op, ctx, timeout);
  if (r == TT_OK && op.closed) return TT_ECLOSED;
  return r;
}

int tt_chan_recv(tt_chan *c, tt_obj **item, tt_ctx *ctx, double timeout) {
  tt_case op;
  int r;
  memset(&op, 0, sizeof op);
  op.kind = TT_CASE_RECV;
  op.chan = c;
  r = chan_op(c, &op, ctx, timeout);
  *item = NULL;
  if (r != TT_OK) return r;
  if (!op.ok) return TT_ECLOSED;
  *item = op.item;
  return TT_OK;
}

bool tt__send_looks(tt_obj *item) {
  if (item == NULL || item->type->traverse == NULL) return false;
  /* A channel holds nothing yet perhaps, but it may by the time the send
  ** is done: it always looks, under the lock. */
  return item->type == &tt_chan_type || tt__holds_any(item);
}

int tt_chan_try_send(tt_chan *c, tt_obj *item) {
  tt_case op;
  tt__walk w;
  bool done, look = tt__send_looks(item), cycle = false;
  int rc = TT_OK;
  memset(&op, 0, sizeof op);
  op.kind = TT_CASE_SEND;
  op.item = item;
  if (look) {
    tt__cycle_lock();
    tt__walk_init(&w);
    rc = tt__walk_reaches(&w, item, &c->hdr, &cycle);
  }
  if (rc == TT_OK && !cycle) {
    tt__lock(&c->mu);
    done = tt__chan_try(c, &op);
    tt__unlock(&c->mu);
    if (!done)
      rc = TT_EQUEUE_FULL;
    else if (op.closed)
      rc = TT_ECLOSED;
  } else if (rc == TT_OK) {
    rc = TT_EINVAL;
  }
  if (look) {
    tt__cycle_unlock();
    tt__walk_end(&w);
  }
  return rc;
}

int tt_chan_try_recv(tt_chan *c, tt_obj **item) {
  tt_case op;
  bool done;
  memset(&op, 0, sizeof op);
  op.kind = TT_CASE_RECV;
  tt__lock(&c->mu);
  done = tt__chan_try(c, &op);
  tt__unlock(&c->mu);
  *item = NULL;
  if (!done) return TT_ETIMEOUT;
  if (!op.ok) return TT_ECLOSED;
  *item = op.item;
  return TT_OK;
}

/* }==================================================================== */
