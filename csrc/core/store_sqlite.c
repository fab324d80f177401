/*
** store_sqlite.c -- the embedded store: SQLite in WAL mode
** ("sqlite:PATH").
**
** Schema (format 1, in 'tether_meta'):
**
**   tether_ops(id INTEGER PRIMARY KEY AUTOINCREMENT, pool, rec BLOB,
**              enqueued REAL, lease_until REAL, owner TEXT, deliveries)
**   tether_dead(id INTEGER PRIMARY KEY, pool, rec, reason, at,
**               deliveries)
**
** AUTOINCREMENT keeps ids from ever being reused, so an id names one op
** for the life of the file (a worker may use it for idempotency).  Times
** are wall-clock seconds, since several processes share the file.  A
** claim sets 'lease_until' and 'owner' and counts the delivery; a row
** whose lease ran out is claimable again (its drainer died), and one
** already delivered max_deliveries times moves to 'tether_dead' instead.
**
** Every write transaction is BEGIN IMMEDIATE with a busy handler that
** waits for the lock in short steps up to the store's timeout: two
** processes then queue for the write lock instead of failing (a deferred
** BEGIN that later upgrades gets SQLITE_BUSY without waiting).  A spill
** is acknowledged only after the COMMIT of its batch returned, at
** synchronous=FULL by default.  The WAL is kept bounded by
** journal_size_limit and by a checkpoint when the store goes idle.  The
** file is created 0600 before SQLite opens it, and the WAL and shared
** memory files inherit its mode.
*/
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

#define SCHEMA_VERSION "1"

enum {
  S_INSERT, S_CLAIM_ANY, S_CLAIM_POOL, S_LEASE, S_BURY_COPY, S_DELETE,
  S_RENEW, S_DEAD_ANY, S_DEAD_POOL, S_RETRY_COPY, S_DEAD_DELETE,
  S_STATS_ANY, S_STATS_POOL, S_DEADN_ANY, S_DEADN_POOL, S_POOLS, S_COUNT
};

static const char *const sql_text[S_COUNT] = {
  "INSERT INTO tether_ops(pool, rec, enqueued) VALUES (?1, ?2, ?3)",
  "SELECT id, pool, rec, deliveries FROM tether_ops WHERE lease_until <= ?1"
  " ORDER BY id LIMIT ?2",
  "SELECT id, pool, rec, deliveries FROM tether_ops WHERE pool = ?3 AND"
  " lease_until <= ?1 ORDER BY id LIMIT ?2",
  "UPDATE tether_ops SET lease_until = ?1, owner = ?2,"
  " deliveries = deliveries + 1 WHERE id = ?3",
  "INSERT OR REPLACE INTO tether_dead(id, pool, rec, reason, at,"
  " deliveries) SELECT id, pool, rec, ?2, ?3, deliveries FROM tether_ops"
  " WHERE id = ?1",
  "DELETE FROM tether_ops WHERE id = ?1",
  "UPDATE tether_ops SET lease_until = ?1 WHERE id = ?2 AND owner = ?3",
  "SELECT id, pool, rec, reason, at, deliveries FROM tether_dead"
  " ORDER BY id LIMIT ?1",
  "SELECT id, pool, rec, reason, at, deliveries FROM tether_dead"
  " WHERE pool = ?2 ORDER BY id LIMIT ?1",
  "INSERT INTO tether_ops(id, pool, rec, enqueued) SELECT id, pool, rec,"
  " ?2 FROM tether_dead WHERE id = ?1",
  "DELETE FROM tether_dead WHERE id = ?1",
  "SELECT count(*), total(lease_until > ?1), min(enqueued)"
  " FROM tether_ops",
  "SELECT count(*), total(lease_until > ?1), min(enqueued)"
  " FROM tether_ops WHERE pool = ?2",
  "SELECT count(*) FROM tether_dead",
  "SELECT count(*) FROM tether_dead WHERE pool = ?1",
  "SELECT pool FROM tether_ops UNION SELECT pool FROM tether_dead",
};

typedef struct sq {
  tt__store_cfg *cfg;
  sqlite3 *db;
  sqlite3_stmt *st[S_COUNT];
  double busy_limit;       /* seconds a lock is waited for */
  double busy_since;       /* tt_now() when the current wait began */
} sq;

/* pause_us sleeps 'us' microseconds, or less when a signal interrupts it:
** its callers wait for another process, with nothing to wake them, in
** loops bounded by time. */
static void pause_us(long us) {
  struct timespec ts;
  ts.tv_sec = us / 1000000;
  ts.tv_nsec = (us % 1000000) * 1000;
  nanosleep(&ts, NULL);
}

/* busy waits for another process's write lock in short steps.  SQLite's
** own busy timeout sleeps ever longer (up to 100 ms a step), which, with
** a producer and a drainer on one file, stalls both for far longer than
** the other actually holds the lock. */
static int busy(void *ud, int n) {
  sq *q = ud;
  if (n == 0) q->busy_since = tt_now();
  if (tt_now() - q->busy_since > q->busy_limit) return 0;
  pause_us(n < 20 ? 100 : 1000);
  return 1;
}

static int fail_db(sq *q, const char *what) {
  return tt__store_fail(q->cfg, "%s: %s", what, sqlite3_errmsg(q->db));
}

static sqlite3_stmt *stmt(sq *q, int k) {
  sqlite3_stmt *s = q->st[k];
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return s;
}

static int exec(sq *q, const char *sql) {
  char *msg = NULL;
  if (sqlite3_exec(q->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
    tt__store_fail(q->cfg, "%s", msg != NULL ? msg : sqlite3_errmsg(q->db));
    sqlite3_free(msg);
    return TT_ESTORE;
  }
  return TT_OK;
}

static int begin(sq *q) { return exec(q, "BEGIN IMMEDIATE"); }

static int commit(sq *q) {
  if (exec(q, "COMMIT") == TT_OK) return TT_OK;
  (void)sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
  return TT_ESTORE;
}

static int rollback(sq *q, int rc) {
  (void)sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
  return rc;
}

/* id_of reads a decimal id; false for anything else. */
static bool id_of(const char *s, sqlite3_int64 *out) {
  char *end;
  long long v;
  if (s == NULL || *s == '\0') return false;
  errno = 0;
  v = strtoll(s, &end, 10);
  if (errno != 0 || *end != '\0' || v <= 0) return false;
  *out = v;
  return true;
}

/* step_done runs a statement that returns no row. */
static int step_done(sq *q, sqlite3_stmt *s, const char *what) {
  int r = sqlite3_step(s);
  sqlite3_reset(s);
  if (r != SQLITE_DONE) return fail_db(q, what);
  return TT_OK;
}

static void sq_close(void *be) {
  sq *q = be;
  int i;
  if (q == NULL) return;
  for (i = 0; i < S_COUNT; i++) sqlite3_finalize(q->st[i]);
  if (q->db != NULL) {
    /* A last checkpoint leaves a small file behind. */
    sqlite3_wal_checkpoint_v2(q->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL,
                              NULL);
    sqlite3_close(q->db);
  }
  free(q);
}

/* setup makes the database usable: WAL mode (retried while another
** process is setting the same new file up), the schema and its version. */
static int setup(sq *q) {
  const char *schema =
    "CREATE TABLE IF NOT EXISTS tether_meta(key TEXT PRIMARY KEY,"
    " value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS tether_ops("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, pool TEXT NOT NULL,"
    " rec BLOB NOT NULL, enqueued REAL NOT NULL,"
    " lease_until REAL NOT NULL DEFAULT 0, owner TEXT,"
    " deliveries INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS tether_ops_pool ON tether_ops(pool, id);"
    "CREATE TABLE IF NOT EXISTS tether_dead("
    " id INTEGER PRIMARY KEY, pool TEXT NOT NULL, rec BLOB NOT NULL,"
    " reason TEXT NOT NULL, at REAL NOT NULL,"
    " deliveries INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS tether_dead_pool ON tether_dead(pool, id);"
    "INSERT OR IGNORE INTO tether_meta VALUES ('format', '"
    SCHEMA_VERSION "');";
  double until = tt_now() + q->cfg->o.timeout;
  sqlite3_stmt *s;
  int r, i;
  for (;;) {
    char *msg = NULL;
    r = sqlite3_exec(q->db, "PRAGMA journal_mode=WAL", NULL, NULL, &msg);
    if (r == SQLITE_OK) break;
    sqlite3_free(msg);
    if ((r != SQLITE_BUSY && r != SQLITE_LOCKED) || tt_now() > until)
      return fail_db(q, "cannot use it");
    pause_us(10000);  /* another process is creating it: wait our turn */
  }
  if (exec(q, q->cfg->o.sync_normal ? "PRAGMA synchronous=NORMAL"
                                    : "PRAGMA synchronous=FULL") != TT_OK ||
      exec(q, "PRAGMA journal_size_limit=67108864") != TT_OK ||
      exec(q, "PRAGMA foreign_keys=OFF") != TT_OK)
    return TT_ESTORE;
  if (begin(q) != TT_OK) return TT_ESTORE;
  if (exec(q, schema) != TT_OK) return rollback(q, TT_ESTORE);
  if (sqlite3_prepare_v2(q->db, "SELECT value FROM tether_meta WHERE key ="
                         " 'format'", -1, &s, NULL) != SQLITE_OK)
    return rollback(q, fail_db(q, "cannot read its format"));
  r = sqlite3_step(s);
  if (r != SQLITE_ROW ||
      strcmp((const char *)sqlite3_column_text(s, 0), SCHEMA_VERSION)) {
    sqlite3_finalize(s);
    return rollback(q, tt__store_fail(q->cfg, "unknown store format "
                                      "(expected %s)", SCHEMA_VERSION));
  }
  sqlite3_finalize(s);
  if (commit(q) != TT_OK) return TT_ESTORE;
  for (i = 0; i < S_COUNT; i++)
    if (sqlite3_prepare_v3(q->db, sql_text[i], -1, SQLITE_PREPARE_PERSISTENT,
                           &q->st[i], NULL) != SQLITE_OK)
      return fail_db(q, "cannot prepare its statements");
  return TT_OK;
}

static int sq_open(tt__store_cfg *cfg, void **be) {
  sq *q = calloc(1, sizeof *q);
  struct stat st;
  int fd, rc;
  if (q == NULL) return tt__store_fail(cfg, "not enough memory");
  q->cfg = cfg;
  q->busy_limit = cfg->o.timeout;
  /* Create the file ourselves, 0600: SQLite would use 0644. */
  fd = open(cfg->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = tt__store_fail(cfg, "%s", strerror(errno));
    free(q);
    return rc;
  }
  if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
    close(fd);
    free(q);
    return tt__store_fail(cfg, "not a regular file");
  }
  close(fd);
  if (sqlite3_open_v2(cfg->path, &q->db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
      SQLITE_OK) {
    rc = tt__store_fail(cfg, "%s", q->db != NULL ? sqlite3_errmsg(q->db)
                                                 : "not enough memory");
    sq_close(q);
    return rc;
  }
  sqlite3_busy_handler(q->db, busy, q);
  sqlite3_extended_result_codes(q->db, 0);
  rc = setup(q);
  if (rc != TT_OK) {
    sq_close(q);
    return rc;
  }
  *be = q;
  return TT_OK;
}

static int sq_put(void *be, tt__put *puts, size_t n) {
  sq *q = be;
  double now = tt_wall();
  size_t i;
  if (begin(q) != TT_OK) return TT_ESTORE;
  for (i = 0; i < n; i++) {
    sqlite3_stmt *s = stmt(q, S_INSERT);
    sqlite3_bind_text(s, 1, puts[i].pool, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 2, puts[i].rec, (int)puts[i].len, SQLITE_STATIC);
    sqlite3_bind_double(s, 3, now);
    if (step_done(q, s, "cannot write") != TT_OK)
      return rollback(q, TT_ESTORE);
    snprintf(puts[i].id, sizeof puts[i].id, "%lld",
             (long long)sqlite3_last_insert_rowid(q->db));
  }
  return commit(q);
}

/* bury_row moves row 'id' to the dead letters (inside a transaction). */
static int bury_row(sq *q, sqlite3_int64 id, const char *reason) {
  sqlite3_stmt *s = stmt(q, S_BURY_COPY);
  sqlite3_bind_int64(s, 1, id);
  sqlite3_bind_text(s, 2, reason, -1, SQLITE_STATIC);
  sqlite3_bind_double(s, 3, tt_wall());
  if (step_done(q, s, "cannot write a dead letter") != TT_OK)
    return TT_ESTORE;
  s = stmt(q, S_DELETE);
  sqlite3_bind_int64(s, 1, id);
  return step_done(q, s, "cannot delete");
}

static int sq_claim(void *be, const char *pool, int max, tt_claim **out,
                    size_t *n) {
  sq *q = be;
  double now = tt_wall();
  tt_claim *c = calloc((size_t)max, sizeof *c);
  size_t got = 0;
  sqlite3_int64 *over = NULL;
  int *overn = NULL;
  size_t nover = 0, i;
  int r;
  if (c == NULL) return tt__store_fail(q->cfg, "not enough memory");
  over = calloc((size_t)max, sizeof *over);
  overn = calloc((size_t)max, sizeof *overn);
  if (over == NULL || overn == NULL) goto nomem;
  if (begin(q) != TT_OK) goto fail;
  for (;;) {
    sqlite3_stmt *s = stmt(q, pool != NULL ? S_CLAIM_POOL : S_CLAIM_ANY);
    size_t before = got;
    nover = 0;
    sqlite3_bind_double(s, 1, now);
    sqlite3_bind_int(s, 2, max - (int)got);
    if (pool != NULL) sqlite3_bind_text(s, 3, pool, -1, SQLITE_STATIC);
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
      sqlite3_int64 id = sqlite3_column_int64(s, 0);
      int deliveries = sqlite3_column_int(s, 3);
      char ids[32];
      if (deliveries >= q->cfg->o.max_deliveries) {
        overn[nover] = deliveries;
        over[nover++] = id;
        continue;
      }
      snprintf(ids, sizeof ids, "%lld", (long long)id);
      if (!tt__claim_set(&c[got], ids,
                         (const char *)sqlite3_column_text(s, 1),
                         (size_t)sqlite3_column_bytes(s, 1),
                         sqlite3_column_blob(s, 2),
                         (size_t)sqlite3_column_bytes(s, 2),
                         deliveries + 1)) {
        sqlite3_reset(s);
        rollback(q, 0);
        goto nomem;
      }
      got++;
    }
    sqlite3_reset(s);
    if (r != SQLITE_DONE) {
      fail_db(q, "cannot claim");
      rollback(q, 0);
      goto fail;
    }
    for (i = before; i < got; i++) {
      sqlite3_int64 id = strtoll(c[i].id, NULL, 10);
      s = stmt(q, S_LEASE);
      sqlite3_bind_double(s, 1, now + q->cfg->o.lease);
      sqlite3_bind_text(s, 2, q->cfg->consumer, -1, SQLITE_STATIC);
      sqlite3_bind_int64(s, 3, id);
      if (step_done(q, s, "cannot lease") != TT_OK) {
        rollback(q, 0);
        goto fail;
      }
    }
    for (i = 0; i < nover; i++) {
      char why[128];
      snprintf(why, sizeof why, "delivered %d times without being "
               "acknowledged (max_deliveries %d)", overn[i],
               q->cfg->o.max_deliveries);
      if (bury_row(q, over[i], why) != TT_OK) {
        rollback(q, 0);
        goto fail;
      }
    }
    /* Rows moved to the dead letters made room: look again. */
    if (nover == 0 || (int)got >= max) break;
  }
  if (commit(q) != TT_OK) goto fail;
  free(over);
  free(overn);
  *out = c;
  *n = got;
  return TT_OK;
nomem:
  tt__store_fail(q->cfg, "not enough memory");
fail:
  tt_claims_free(c, got);
  free(over);
  free(overn);
  return TT_ESTORE;
}

static int sq_ack(void *be, const tt__idref *ids, size_t n) {
  sq *q = be;
  size_t i;
  if (begin(q) != TT_OK) return TT_ESTORE;
  for (i = 0; i < n; i++) {
    sqlite3_int64 id;
    sqlite3_stmt *s;
    if (!id_of(ids[i].id, &id)) continue;
    s = stmt(q, S_DELETE);
    sqlite3_bind_int64(s, 1, id);
    if (step_done(q, s, "cannot acknowledge") != TT_OK)
      return rollback(q, TT_ESTORE);
  }
  return commit(q);
}

static int sq_bury(void *be, const tt__idref *ref, const char *reason) {
  sq *q = be;
  sqlite3_int64 id;
  if (!id_of(ref->id, &id))
    return tt__store_fail(q->cfg, "no such record");
  if (begin(q) != TT_OK) return TT_ESTORE;
  if (bury_row(q, id, reason) != TT_OK) return rollback(q, TT_ESTORE);
  return commit(q);
}

static int sq_renew(void *be, const tt__idref *ids, size_t n) {
  sq *q = be;
  double until = tt_wall() + q->cfg->o.lease;
  size_t i;
  if (begin(q) != TT_OK) return TT_ESTORE;
  for (i = 0; i < n; i++) {
    sqlite3_int64 id;
    sqlite3_stmt *s;
    if (!id_of(ids[i].id, &id)) continue;
    s = stmt(q, S_RENEW);
    sqlite3_bind_double(s, 1, until);
    sqlite3_bind_int64(s, 2, id);
    sqlite3_bind_text(s, 3, q->cfg->consumer, -1, SQLITE_STATIC);
    if (step_done(q, s, "cannot renew a lease") != TT_OK)
      return rollback(q, TT_ESTORE);
  }
  return commit(q);
}

static int sq_stats(void *be, const char *pool, tt_store_stats *out) {
  sq *q = be;
  double now = tt_wall();
  sqlite3_stmt *s = stmt(q, pool != NULL ? S_STATS_POOL : S_STATS_ANY);
  int r;
  sqlite3_bind_double(s, 1, now);
  if (pool != NULL) sqlite3_bind_text(s, 2, pool, -1, SQLITE_STATIC);
  r = sqlite3_step(s);
  if (r != SQLITE_ROW) {
    sqlite3_reset(s);
    return fail_db(q, "cannot count");
  }
  out->depth = (uint64_t)sqlite3_column_int64(s, 0);
  out->leased = (uint64_t)sqlite3_column_double(s, 1);
  out->oldest_age = sqlite3_column_type(s, 2) == SQLITE_NULL
                        ? 0 : now - sqlite3_column_double(s, 2);
  if (out->oldest_age < 0) out->oldest_age = 0;
  sqlite3_reset(s);
  s = stmt(q, pool != NULL ? S_DEADN_POOL : S_DEADN_ANY);
  if (pool != NULL) sqlite3_bind_text(s, 1, pool, -1, SQLITE_STATIC);
  r = sqlite3_step(s);
  if (r != SQLITE_ROW) {
    sqlite3_reset(s);
    return fail_db(q, "cannot count");
  }
  out->dead = (uint64_t)sqlite3_column_int64(s, 0);
  sqlite3_reset(s);
  return TT_OK;
}

/* sq_pools lists the pools with records or dead letters (the indexes on
** pool answer it). */
static int sq_pools(void *be, char ***out, size_t *n) {
  sq *q = be;
  sqlite3_stmt *s = stmt(q, S_POOLS);
  char **v = NULL;
  size_t got = 0, cap = 0, i;
  int r;
  while ((r = sqlite3_step(s)) == SQLITE_ROW) {
    const char *p = (const char *)sqlite3_column_text(s, 0);
    if (got == cap) {
      size_t nc = cap == 0 ? 8 : cap * 2;
      char **nv = realloc(v, nc * sizeof *nv);
      if (nv == NULL) break;
      v = nv;
      cap = nc;
    }
    if ((v[got] = tt__strdup(p != NULL ? p : "")) == NULL) break;
    got++;
  }
  sqlite3_reset(s);
  if (r != SQLITE_DONE) {
    for (i = 0; i < got; i++) free(v[i]);
    free(v);
    return r == SQLITE_ROW ? tt__store_fail(q->cfg, "not enough memory")
                           : fail_db(q, "cannot list the pools");
  }
  *out = v;
  *n = got;
  return TT_OK;
}

static int sq_dead_list(void *be, const char *pool, size_t max,
                        tt_store_dead **out, size_t *n) {
  sq *q = be;
  sqlite3_stmt *s = stmt(q, pool != NULL ? S_DEAD_POOL : S_DEAD_ANY);
  tt_store_dead *d = NULL;
  size_t got = 0, cap = 0;
  int r;
  sqlite3_bind_int64(s, 1, (sqlite3_int64)max);
  if (pool != NULL) sqlite3_bind_text(s, 2, pool, -1, SQLITE_STATIC);
  while ((r = sqlite3_step(s)) == SQLITE_ROW) {
    char ids[32];
    if (got == cap) {
      size_t nc = cap == 0 ? 16 : cap * 2;
      tt_store_dead *nd = realloc(d, nc * sizeof *nd);
      if (nd == NULL) break;
      d = nd;
      cap = nc;
    }
    snprintf(ids, sizeof ids, "%lld", (long long)sqlite3_column_int64(s, 0));
    if (!tt__dead_set(&d[got], ids, ids,
                      (const char *)sqlite3_column_text(s, 1),
                      (const char *)sqlite3_column_text(s, 3),
                      sqlite3_column_double(s, 4), sqlite3_column_int(s, 5),
                      sqlite3_column_blob(s, 2),
                      (size_t)sqlite3_column_bytes(s, 2)))
      break;
    got++;
  }
  sqlite3_reset(s);
  if (r != SQLITE_DONE) {
    tt_store_dead_free(d, got);
    return r == SQLITE_ROW ? tt__store_fail(q->cfg, "not enough memory")
                           : fail_db(q, "cannot list dead letters");
  }
  *out = d;
  *n = got;
  return TT_OK;
}

static int sq_dead_retry(void *be, const char *pool, const char *ids) {
  sq *q = be;
  sqlite3_int64 id;
  sqlite3_stmt *s;
  (void)pool;
  if (!id_of(ids, &id)) return TT_EINVAL;
  if (begin(q) != TT_OK) return TT_ESTORE;
  s = stmt(q, S_RETRY_COPY);
  sqlite3_bind_int64(s, 1, id);
  sqlite3_bind_double(s, 2, tt_wall());
  if (step_done(q, s, "cannot retry") != TT_OK)
    return rollback(q, TT_ESTORE);
  if (sqlite3_changes(q->db) == 0) return rollback(q, TT_EINVAL);
  s = stmt(q, S_DEAD_DELETE);
  sqlite3_bind_int64(s, 1, id);
  if (step_done(q, s, "cannot retry") != TT_OK)
    return rollback(q, TT_ESTORE);
  return commit(q);
}

static int sq_dead_drop(void *be, const char *pool, const char *ids) {
  sq *q = be;
  sqlite3_int64 id;
  sqlite3_stmt *s;
  (void)pool;
  if (!id_of(ids, &id)) return TT_EINVAL;
  if (begin(q) != TT_OK) return TT_ESTORE;
  s = stmt(q, S_DEAD_DELETE);
  sqlite3_bind_int64(s, 1, id);
  if (step_done(q, s, "cannot drop") != TT_OK)
    return rollback(q, TT_ESTORE);
  if (sqlite3_changes(q->db) == 0) return rollback(q, TT_EINVAL);
  return commit(q);
}

/* sq_idle checkpoints the WAL into the database and truncates it, with a
** short busy timeout: a busy file is checkpointed next time. */
static void sq_idle(void *be) {
  sq *q = be;
  q->busy_limit = 0.05;
  sqlite3_wal_checkpoint_v2(q->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL,
                            NULL);
  q->busy_limit = q->cfg->o.timeout;
}

const tt__store_backend tt__sqlite_backend = {
  sq_open, sq_close, sq_put, sq_claim, sq_ack, sq_bury, sq_renew, sq_stats,
  sq_dead_list, sq_dead_retry, sq_dead_drop, sq_idle, sq_pools
};
