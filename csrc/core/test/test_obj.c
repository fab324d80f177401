/*
** test_obj.c -- objects (obj.c): reference counts, frees in constant stack
** depth, walks through what objects hold, errors, byte strings, and the
** test hook that makes thread creation fail.
*/
#include <pthread.h>
#include <stdatomic.h>

#include "harness.h"

/* A value type that counts its frees and holds up to two objects, so
** that tests can build graphs of any shape. */
typedef struct node {
  tt_obj hdr;
  tt_obj *a, *b;
} node;

static atomic_long nodes_freed;

static void node_free(tt_obj *o) {
  node *n = (node *)o;
  tt_unref(n->a);
  tt_unref(n->b);
  free(n);
  atomic_fetch_add(&nodes_freed, 1);
}

static void node_traverse(tt_obj *o, tt_visit visit, void *ud) {
  node *n = (node *)o;
  visit(n->a, ud);
  visit(n->b, ud);
}

static const tt_type node_type = {"test.Node", node_free, NULL,
                                  node_traverse};

/* node_new makes a node holding 'a' and 'b' (references taken over). */
static node *node_new(tt_obj *a, tt_obj *b) {
  node *n = malloc(sizeof *n);
  tt_obj_init(&n->hdr, &node_type);
  n->a = a;
  n->b = b;
  return n;
}

#define CHAIN 1000000

static void *error_chain(void *arg) {
  tt_error *e = NULL;
  int i;
  (void)arg;
  for (i = 0; i < CHAIN; i++) {
    tt_error *w = tt_error_new(TT_EFAILED, "wrapped", (tt_obj *)e);
    tt_unref(e);
    e = w;
  }
  /* The last release frees a million errors, each the cause of the
  ** next. */
  tt_unref(e);
  return NULL;
}

TEST(million_errors_wrapping_errors_free_in_constant_stack) {
  th_on_small_stack(error_chain, NULL);
}

static void *node_chain(void *arg) {
  node *n = NULL;
  int i;
  (void)arg;
  for (i = 0; i < CHAIN; i++) {
    /* Every node holds the previous one twice over, through 'a' and
    ** through a side node in 'b'. */
    tt_obj *prev = n != NULL ? tt_ref(&n->hdr) : NULL;
    node *side = node_new(prev, NULL);
    node *next = node_new(n != NULL ? &n->hdr : NULL, &side->hdr);
    n = next;
  }
  tt_unref(n);
  return NULL;
}

TEST(a_free_that_releases_many_objects_frees_them_all) {
  atomic_store(&nodes_freed, 0);
  th_on_small_stack(node_chain, NULL);
  CHECK_EQ(atomic_load(&nodes_freed), 2L * CHAIN);
}

TEST(holds_walks_shared_objects_once_and_finds_targets) {
  tt_bytes *leaf = tt_bytes_new("leaf", 4);
  node *l = node_new(tt_ref(&leaf->hdr), NULL);
  node *r = node_new(tt_ref(&leaf->hdr), NULL);
  node *top = node_new(&l->hdr, &r->hdr);
  tt_bytes *other = tt_bytes_new("x", 1);
  node *n;
  int i;
  CHECK(tt_holds(top, leaf));
  CHECK(tt_holds(top, l));
  CHECK(tt_holds(top, top));
  CHECK(!tt_holds(top, other));
  CHECK(!tt_holds(l, r));
  CHECK(!tt_holds(NULL, leaf));
  CHECK(!tt_holds(leaf, top));  /* a type without 'traverse' holds none */
  /* A ladder of diamonds: 2^40 paths, 80 nodes.  Each node is walked
  ** once, so this answers at once. */
  n = node_new(NULL, NULL);
  for (i = 0; i < 40; i++) {
    node *x = node_new(tt_ref(&n->hdr), NULL);
    node *y = node_new(tt_ref(&n->hdr), NULL);
    tt_unref(n);
    n = node_new(&x->hdr, &y->hdr);
  }
  CHECK(!tt_holds(n, other));
  tt_unref(n);
  tt_unref(top);
  tt_unref(leaf);
  tt_unref(other);
}

TEST(static_objects_are_never_freed) {
  long before = atomic_load(&tt_canceled.hdr.refs);
  tt_unref(&tt_canceled);
  tt_ref(&tt_canceled);
  CHECK_EQ(atomic_load(&tt_canceled.hdr.refs), before);
  CHECK(tt_ref_if_live(&tt_canceled));
}

TEST(error_names) {
  CHECK(strcmp(tt_strerror(TT_CANCELED), "context canceled") == 0);
  CHECK(strcmp(tt_strerror(TT_DEADLINE), "context deadline exceeded") == 0);
  CHECK(strcmp(tt_errname(TT_EQUEUE_FULL), "queue_full") == 0);
  CHECK(strcmp(tt_errname(TT_EDEADLK), "deadlock") == 0);
  CHECK(strcmp(tt_errname(TT_NERRORS), "unknown") == 0);
}

TEST(bytes_are_nul_terminated) {
  tt_bytes *b = tt_bytes_new("a\0b", 3);
  tt_bytes *e = tt_bytes_new(NULL, 0);
  CHECK_EQ(b->len, 3);
  CHECK(memcmp(b->data, "a\0b", 4) == 0);
  CHECK_EQ(e->len, 0);
  CHECK_EQ(e->data[0], '\0');
  tt_unref(b);
  tt_unref(e);
}

static int fn_ok(tt_ctx *ctx, void *arg, tt_obj **out) {
  (void)ctx;
  (void)arg;
  (void)out;
  return TT_OK;
}

TEST(failed_thread_creation_is_reported) {
  int err = 0;
  tt_handle *h;
  tt_pool_opts o;
  /* No executor thread left, so the next task needs a new one. */
  tt_shutdown();
  tt_test_fail_threads(1);
  CHECK(tt_go(NULL, "t", fn_ok, NULL, NULL, &err) == NULL);
  CHECK_EQ(err, TT_ETHREAD);
  /* The failure was used up: the next creation works. */
  h = tt_go(NULL, "t", fn_ok, NULL, NULL, &err);
  CHECK(h != NULL);
  CHECK(tt_latch_wait(tt_handle_latch(h), 5));
  tt_unref(h);
  /* A pool whose workers cannot all start is not made. */
  memset(&o, 0, sizeof o);
  o.workers = 3;
  tt_test_fail_threads(1);
  CHECK(tt_pool_new(&o, &err) == NULL);
  CHECK_EQ(err, TT_ETHREAD);
  tt_test_fail_threads(0);
}

TEST_MAIN()
