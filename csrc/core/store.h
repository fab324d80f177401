/*
** store.h -- what the durable stores share: the backend interface that
** store.c drives from each store's own thread, and the pool hooks that
** the drainer (drain.c) uses.  The public side (tt_store_*, tt_record_*,
** tt_pool_drain_store) is in tether.h.
**
** A backend's functions run only on its store's thread, one at a time:
** a backend needs no lock of its own.  Each returns TT_OK or an error code
** (TT_ESTORE for I/O and server errors) and writes its message with
** tt__store_fail into the config's 'err'; a message never contains a
** password.
*/
#ifndef tether_store_h
#define tether_store_h

#include "task.h"

/* What a store was opened with: the parsed URL and the options with
** their defaults applied.  Owned by the store, read-only after open
** except 'err', which only the store's thread writes. */
typedef struct tt__store_cfg {
  char *url;               /* without the password: for messages */
  char *path;              /* sqlite: the file */
  char *host;              /* redis */
  int port, db;
  char *user, *password;   /* may be NULL */
  char *prefix;            /* redis: the key prefix ("tether") */
  char consumer[128];      /* redis: this process's consumer name */
  tt_store_opts o;         /* defaults applied, 'consumer' cleared */
  char err[256];           /* the last failure's message */
} tt__store_cfg;

/* One record to write, as the store's thread hands a batch to 'put'. */
typedef struct tt__put {
  const char *pool;
  const void *rec;
  size_t len;
  char id[TT_STORE_IDLEN]; /* set by 'put' */
} tt__put;

/* A reference to a stored record: its pool and id. */
typedef struct tt__idref {
  const char *pool;
  const char *id;
} tt__idref;

typedef struct tt__store_backend {
  /* open connects (or opens the file) and sets up the schema. */
  int (*open)(tt__store_cfg *cfg, void **be);
  void (*close)(void *be);
  /* put writes all 'n' records in one commit and sets their ids, or
  ** writes none and fails. */
  int (*put)(void *be, tt__put *puts, size_t n);
  int (*claim)(void *be, const char *pool, int max, tt_claim **out,
               size_t *n);
  int (*ack)(void *be, const tt__idref *ids, size_t n);
  int (*bury)(void *be, const tt__idref *id, const char *reason);
  int (*renew)(void *be, const tt__idref *ids, size_t n);
  int (*stats)(void *be, const char *pool, tt_store_stats *out);
  int (*dead_list)(void *be, const char *pool, size_t max,
                   tt_store_dead **out, size_t *n);
  int (*dead_retry)(void *be, const char *pool, const char *id);
  int (*dead_drop)(void *be, const char *pool, const char *id);
  /* idle runs when the thread has had nothing to do for a while after
  ** writing (a WAL checkpoint); may be NULL. */
  void (*idle)(void *be);
  /* pools lists the pool names that have records or dead letters in the
  ** store (malloc'd strings in a malloc'd array; nothing on failure). */
  int (*pools)(void *be, char ***out, size_t *n);
} tt__store_backend;

extern const tt__store_backend tt__sqlite_backend;
extern const tt__store_backend tt__redis_backend;

/* tt__store_fail formats a message into cfg->err and returns TT_ESTORE. */
int tt__store_fail(tt__store_cfg *cfg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* tt__store_hold and tt__store_drop take and drop an internal reference:
** the memory stays, and every call still answers (TT_ECLOSED once the
** store closed), but it does not keep the store open (metrics.c). */
void tt__store_hold(tt_store *s);
void tt__store_drop(tt_store *s);

/* tt__claim_set fills a claim with copies (false when out of memory). */
bool tt__claim_set(tt_claim *c, const char *id, const char *pool,
                   size_t plen, const void *rec, size_t len, int deliveries);

/* tt__dead_set fills a dead-letter record with copies. */
bool tt__dead_set(tt_store_dead *d, const char *id, const char *origin,
                  const char *pool, const char *reason, double at,
                  int deliveries, const void *rec, size_t len);

/* {====================================================================
** Pool hooks for the drainer (pool.c)
** ===================================================================== */

/* tt__pool_submit_hooked submits like tt_pool_submit, never spilling,
** with two extras: 'end(ud, h)' runs once when the op's handle resolves,
** under the pool's lock (so it may only take leaf locks: the store's
** queue, a channel, a latch), and 'end_free(ud)' when the op's record is
** freed; and an op that fails its last attempt ends as a plain failure,
** never as a dead letter of the pool (the drainer makes it one of the
** store).  On refusal nothing is taken: the caller keeps 'arg' and
** 'ud'. */
tt_handle *tt__pool_submit_hooked(tt_pool *p, tt_ctx *parent,
                                  const tt_submit_opts *so, tt_fn fn,
                                  void *arg, tt_drop drop,
                                  void (*end)(void *ud, tt_handle *h),
                                  void (*end_free)(void *ud), void *ud,
                                  int *err);

/* tt__pool_room returns how many more ops 'p' can hold now (its workers
** plus one class's queue, less what is queued and running, and no more
** than its default class's queue takes at this moment), or -1 once it
** is closed; '*capacity' (may be NULL) gets the total. */
int tt__pool_room(tt_pool *p, int *capacity);

/* tt__pool_has_class tells whether 'p' has a priority class 'name'. */
bool tt__pool_has_class(tt_pool *p, const char *name);

/* }==================================================================== */

#endif
