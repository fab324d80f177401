/*
** test_chan.c -- channels (chan.c): buffered and unbuffered sends,
** close, bounds, chains of channels holding channels, and the refusal of
** sends that would make a reference cycle.
*/
#include <pthread.h>
#include <stdatomic.h>

#include "harness.h"

TEST(buffered_chan) {
  tt_chan *ch = tt_chan_new(2);
  tt_bytes *a = tt_bytes_new("a", 1), *b = tt_bytes_new("b", 1);
  tt_obj *got;
  CHECK_EQ(tt_chan_try_send(ch, (tt_obj *)a), TT_OK);
  CHECK_EQ(tt_chan_try_send(ch, (tt_obj *)b), TT_OK);
  CHECK_EQ(tt_chan_try_send(ch, NULL), TT_EQUEUE_FULL);
  CHECK_EQ(tt_chan_len(ch), 2);
  CHECK_EQ(tt_chan_recv(ch, &got, NULL, -1), TT_OK);
  CHECK(got == (tt_obj *)a);
  tt_unref(got);
  CHECK_EQ(tt_chan_close(ch), TT_OK);
  CHECK_EQ(tt_chan_close(ch), TT_ECLOSED);
  CHECK_EQ(tt_chan_send(ch, NULL, NULL, -1), TT_ECLOSED);
  CHECK_EQ(tt_chan_try_recv(ch, &got), TT_OK);
  CHECK(got == (tt_obj *)b);
  tt_unref(got);
  CHECK_EQ(tt_chan_recv(ch, &got, NULL, -1), TT_ECLOSED);
  tt_unref(ch);
}

static void *producer(void *arg) {
  tt_chan *ch = arg;
  long i;
  for (i = 1; i <= 10000; i++) {
    tt_bytes *b = tt_bytes_new(&i, sizeof i);
    if (tt_chan_send(ch, (tt_obj *)b, NULL, -1) != TT_OK) tt_unref(b);
  }
  tt_chan_close(ch);
  return NULL;
}

TEST(unbuffered_chan_between_threads) {
  tt_chan *ch = tt_chan_new(0);
  pthread_t t;
  long sum = 0, want = 10000L * 10001L / 2;
  tt_obj *got;
  CHECK_EQ(tt_chan_try_send(ch, NULL), TT_EQUEUE_FULL);
  CHECK_EQ(pthread_create(&t, NULL, producer, ch), 0);
  while (tt_chan_recv(ch, &got, NULL, -1) == TT_OK) {
    long v;
    memcpy(&v, ((tt_bytes *)got)->data, sizeof v);
    sum += v;
    tt_unref(got);
  }
  CHECK_EQ(pthread_join(t, NULL), 0);
  CHECK_EQ(sum, want);
  tt_unref(ch);
}

TEST(recv_bounded_by_context) {
  tt_chan *ch = tt_chan_new(0);
  tt_ctx *c = tt_with_timeout(tt_background(), 0.02, NULL);
  tt_obj *got;
  CHECK_EQ(tt_chan_recv(ch, &got, c, -1), TT_DEADLINE);
  CHECK_EQ(tt_chan_recv(ch, &got, NULL, 0.01), TT_ETIMEOUT);
  tt_unref(c);
  tt_unref(ch);
}

/* A value type that counts its frees: put in a channel, it shows whether
** the channel was freed. */
static atomic_long canaries_freed;

static void canary_free(tt_obj *o) {
  free(o);
  atomic_fetch_add(&canaries_freed, 1);
}

static const tt_type canary_type = {"test.Canary", canary_free, NULL, NULL};

static tt_obj *canary_new(void) {
  tt_obj *o = malloc(sizeof *o);
  tt_obj_init(o, &canary_type);
  return o;
}

#define CHAIN 1000000

/* A million channels, each holding the next, and a canary in the last:
** the release of the first frees them all in constant stack. */
static void *chan_chain(void *arg) {
  tt_chan *head = tt_chan_new(1), *tail = head;
  int i;
  (void)arg;
  for (i = 0; i < CHAIN; i++) {
    tt_chan *n = tt_chan_new(1);
    CHECK_EQ(tt_chan_try_send(tail, (tt_obj *)n), TT_OK);
    tail = n;  /* held by the channel before it */
  }
  CHECK_EQ(tt_chan_try_send(tail, canary_new()), TT_OK);
  tt_unref(head);
  return NULL;
}

TEST(million_channels_holding_channels_free_in_constant_stack) {
  atomic_store(&canaries_freed, 0);
  th_on_small_stack(chan_chain, NULL);
  CHECK_EQ(atomic_load(&canaries_freed), 1);
}

TEST(a_channel_cannot_hold_itself) {
  tt_chan *c = tt_chan_new(2);
  tt_obj *got;
  long refs = atomic_load(&((tt_obj *)c)->refs);
  CHECK_EQ(tt_chan_try_send(c, (tt_obj *)c), TT_EINVAL);
  CHECK_EQ(tt_chan_send(c, (tt_obj *)c, NULL, -1), TT_EINVAL);
  CHECK_EQ(tt_chan_send(c, (tt_obj *)c, NULL, 0), TT_EINVAL);
  CHECK_EQ(tt_chan_len(c), 0);
  CHECK_EQ(atomic_load(&((tt_obj *)c)->refs), refs);
  /* The channel still works. */
  CHECK_EQ(tt_chan_try_send(c, NULL), TT_OK);
  CHECK_EQ(tt_chan_try_recv(c, &got), TT_OK);
  tt_unref(c);
}

TEST(sends_that_close_a_cycle_are_refused) {
  tt_chan *a = tt_chan_new(1), *b = tt_chan_new(1), *c = tt_chan_new(1);
  tt_chan *d;
  tt_key k = {NULL, "k", 1};
  tt_ctx *ctx;
  tt_error *e;
  /* a holds b, b holds c: c may not hold a or b. */
  CHECK_EQ(tt_chan_try_send(a, tt_ref((tt_obj *)b)), TT_OK);
  CHECK_EQ(tt_chan_try_send(b, tt_ref((tt_obj *)c)), TT_OK);
  CHECK_EQ(tt_chan_try_send(c, (tt_obj *)a), TT_EINVAL);
  CHECK_EQ(tt_chan_try_send(c, (tt_obj *)b), TT_EINVAL);
  /* Through a context's value and an error's cause. */
  ctx = tt_with_value(tt_background(), &k, (tt_obj *)a);
  e = tt_error_new(TT_EFAILED, "holds a context", (tt_obj *)ctx);
  CHECK_EQ(tt_chan_try_send(c, (tt_obj *)ctx), TT_EINVAL);
  CHECK_EQ(tt_chan_try_send(c, (tt_obj *)e), TT_EINVAL);
  CHECK_EQ(tt_chan_send(a, (tt_obj *)e, NULL, 0.01), TT_EINVAL);
  CHECK(tt_holds(e, c));
  /* An item that holds other channels only is fine. */
  d = tt_chan_new(1);
  CHECK_EQ(tt_chan_try_send(d, tt_ref((tt_obj *)e)), TT_OK);
  tt_unref(d);
  tt_unref(e);
  tt_unref(ctx);
  tt_unref(a);
  tt_unref(b);
  tt_unref(c);
}

/* 200k attempted cycles, each refused: both channels of each pair are
** freed, which the canary in the first one shows.  Accepting the sends
** would leak every pair. */
TEST(refused_cycles_leave_nothing_behind) {
  int i, n = 200000;
  atomic_store(&canaries_freed, 0);
  for (i = 0; i < n; i++) {
    tt_chan *a = tt_chan_new(2), *b = tt_chan_new(1);
    CHECK_EQ(tt_chan_try_send(a, canary_new()), TT_OK);
    CHECK_EQ(tt_chan_try_send(a, tt_ref((tt_obj *)b)), TT_OK);
    if (tt_chan_try_send(b, (tt_obj *)a) == TT_OK) tt_ref(a);
    tt_unref(a);
    tt_unref(b);
  }
  CHECK_EQ(atomic_load(&canaries_freed), n);
}

/* Items of a parked sender count as held: while a sender waits to put x
** into c, c may not go into x. */
typedef struct parked {
  tt_chan *c, *x;
  int rc;
} parked;

static void *park_send(void *arg) {
  parked *p = arg;
  p->rc = tt_chan_send(p->c, tt_ref(p->x), NULL, 5);
  return NULL;
}

TEST(items_of_parked_senders_count_as_held) {
  parked p = {tt_chan_new(0), tt_chan_new(1), -1};
  pthread_t t;
  tt_obj *got;
  CHECK_EQ(pthread_create(&t, NULL, park_send, &p), 0);
  WAIT_FOR(tt_holds(p.c, p.x), 5);
  CHECK(tt_holds(p.c, p.x));
  CHECK_EQ(tt_chan_try_send(p.x, (tt_obj *)p.c), TT_EINVAL);
  CHECK_EQ(tt_chan_recv(p.c, &got, NULL, 5), TT_OK);
  CHECK(got == (tt_obj *)p.x);
  CHECK_EQ(pthread_join(t, NULL), 0);
  CHECK_EQ(p.rc, TT_OK);
  /* Received: c holds nothing now, and x may hold c. */
  CHECK_EQ(tt_chan_try_send(p.x, tt_ref((tt_obj *)p.c)), TT_OK);
  tt_unref(got);
  tt_unref(p.x);
  tt_unref(p.c);
}

/* Two threads race to close one cycle, a into b and b into a, many times:
** the look and the insert happen under one lock, so at most one of each
** pair of sends succeeds. */
typedef struct racer {
  pthread_barrier_t *go;
  tt_chan **from, **to;
  int rounds;
  atomic_int *wins;
} racer;

static void *race(void *arg) {
  racer *r = arg;
  int i;
  for (i = 0; i < r->rounds; i++) {
    pthread_barrier_wait(r->go);
    if (tt_chan_try_send(*r->to, tt_ref((tt_obj *)(*r->from))) == TT_OK)
      atomic_fetch_add(&r->wins[i], 1);
    else
      tt_unref(*r->from);
    pthread_barrier_wait(r->go);
  }
  return NULL;
}

#define ROUNDS 2000

TEST(racing_sends_cannot_close_a_cycle_together) {
  static atomic_int wins[ROUNDS];
  pthread_barrier_t go;
  tt_chan *a, *b;
  racer ra, rb;
  pthread_t ta, tb;
  int i, both = 0;
  CHECK_EQ(pthread_barrier_init(&go, NULL, 3), 0);
  for (i = 0; i < ROUNDS; i++) atomic_store(&wins[i], 0);
  ra = (racer){&go, &a, &b, ROUNDS, wins};
  rb = (racer){&go, &b, &a, ROUNDS, wins};
  a = tt_chan_new(1);
  b = tt_chan_new(1);
  CHECK_EQ(pthread_create(&ta, NULL, race, &ra), 0);
  CHECK_EQ(pthread_create(&tb, NULL, race, &rb), 0);
  for (i = 0; i < ROUNDS; i++) {
    tt_obj *got;
    pthread_barrier_wait(&go);   /* the two sends race */
    pthread_barrier_wait(&go);   /* both are done */
    if (atomic_load(&wins[i]) > 1) both++;
    /* Empty both channels for the next round. */
    while (tt_chan_try_recv(a, &got) == TT_OK) tt_unref(got);
    while (tt_chan_try_recv(b, &got) == TT_OK) tt_unref(got);
  }
  CHECK_EQ(pthread_join(ta, NULL), 0);
  CHECK_EQ(pthread_join(tb, NULL), 0);
  CHECK_EQ(both, 0);
  tt_unref(a);
  tt_unref(b);
  CHECK_EQ(pthread_barrier_destroy(&go), 0);
}

TEST_MAIN()
