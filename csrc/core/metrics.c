/*
** metrics.c -- a registry of metric families and the Prometheus text
** format (version 0.0.4), and the pool families fed by pool events.
**
** DESIGN.
**
** The registry holds sources.  A source declares families (name, help,
** type) and, when the text is made, writes the samples of each of its
** families through a writer that knows the family: counters and gauges
** one value per label set, histograms their cumulative buckets, '+Inf',
** '_sum' and '_count'.  Families are written in the order they were first
** declared, each once with its HELP and TYPE, whichever sources declare
** it: pools are one source (below), tracing is another (trace.c), and an
** HTTP server or a durable store adds its own families the same way with
** tt_metrics_register, without a change here.  A source keeps its own
** series unique; the writer escapes label values and formats numbers.
**
** Pool metrics.  Each pool attached with tt_metrics_observe_pool has an
** immediate observer (pool.c calls it under the pool's lock as each event
** happens): it finds the series of the pool's name (and of the op's
** tenant when the tenant label is on) and adds to atomic counters,
** nothing else.  Series live in 'pname' entries, one per distinct pool
** name, which live as long as the process: counters never go back, and
** pools that share a name add up.  Gauges (queued, in flight, workers)
** are read from the live pools of a name when the text is made, with
** tt_pool_stats_get.  A pool's attachment leaves the registry when the
** pool's memory goes (the observer's release), so the text never reads a
** freed pool.
**
** HTTP metrics.  Each server attached with tt_metrics_observe_http has
** an immediate HTTP observer (called with no lock on the thread of the
** event) that adds to the atomic counters of its server name's 'hname'
** entry, which lives as long as the process, as pool names do.  The
** method is bounded (the standard ones, else OTHER) and the code is the
** status number (0..599), so a name's counters are one fixed array.
**
** Store metrics.  Each store attached with tt_metrics_observe_store is a
** 'sentry' on a list under 'st_mu', which holds an internal reference of
** the store (its memory, not its life: tt_store_close takes the entry
** off the list at once).  A store's figures come from a request to its
** thread, which may wait: they are asked for when the text is made, but
** before 'reg_mu' is taken (store_refresh), and kept in the entry; the
** store source writes what the entries hold.  So the text never waits
** for a store while holding the registry, whose lock a pool's release
** takes (and a pool may be released on a store's thread).
**
** Tenants.  With the tenant label, a name's series are kept per tenant in
** a small hash table whose lists are only ever prepended to (published
** with a release store, read without a lock); at most 'max_tenants'
** tenants get their own series, the rest share the tenant "other"; ops
** without a tenant are the tenant "default", as for quotas.  Whether a
** name has the tenant label is decided by its first pool.
**
** Locks.  'reg_mu' guards the sources, the names and the attachments; it
** is held while sources write their samples, so that once
** tt_metrics_unregister returns no collect runs.  The pool source takes a
** pool's 'mu' under it (tt_pool_stats_get): reg_mu -> pool.mu.  The
** observer runs under pool.mu and takes only a name's 'tmu' (a leaf, to
** add a tenant), never reg_mu.  Releases take reg_mu with no pool lock
** held.  'st_mu' is a leaf, taken under reg_mu by the store source and
** alone elsewhere; nothing waits under it.
*/
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "store.h"

/* {====================================================================
** The registry and the writer
** ===================================================================== */

typedef struct source {
  int id;
  tt_metric_source s;
} source;

struct tt_metric_writer {
  tt_buf *b;
  const tt_metric_family *f;
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static source *sources;        /* under reg_mu */
static int nsources, sources_cap, next_source;

static void pool_source_init(void);
static void store_refresh(void);

int tt_metrics_register(const tt_metric_source *src) {
  int id;
  if (src == NULL || src->collect == NULL || src->nfamilies < 0 ||
      (src->nfamilies > 0 && src->families == NULL))
    return -1;
  pool_source_init();
  tt__lock(&reg_mu);
  if (nsources == sources_cap) {
    int ncap = sources_cap == 0 ? 8 : sources_cap * 2;
    source *ns = realloc(sources, (size_t)ncap * sizeof *ns);
    if (ns == NULL) {
      tt__unlock(&reg_mu);
      return -1;
    }
    sources = ns;
    sources_cap = ncap;
  }
  id = ++next_source;
  sources[nsources].id = id;
  sources[nsources].s = *src;
  nsources++;
  tt__unlock(&reg_mu);
  return id;
}

void tt_metrics_unregister(int id) {
  int i;
  tt__lock(&reg_mu);
  for (i = 0; i < nsources; i++) {
    if (sources[i].id == id) {
      memmove(&sources[i], &sources[i + 1],
              (size_t)(nsources - i - 1) * sizeof *sources);
      nsources--;
      break;
    }
  }
  tt__unlock(&reg_mu);
}

static const char *const type_names[] = {"counter", "gauge", "histogram"};

/* add_help writes a HELP text, escaped as the format says (backslash and
** newline only). */
static void add_help(tt_buf *b, const char *s) {
  for (; *s != '\0'; s++) {
    if (*s == '\\') tt_buf_adds(b, "\\\\");
    else if (*s == '\n') tt_buf_adds(b, "\\n");
    else tt_buf_addc(b, *s);
  }
}

/* shortest writes 'v' into 'out' with the fewest digits that read back
** the same double (0.0025, not 0.0025000000000000001). */
static void shortest(char *out, size_t n, double v) {
  int prec;
  if (v == floor(v) && fabs(v) < 9007199254740992.0) {
    snprintf(out, n, "%.0f", v);
    return;
  }
  for (prec = 1; prec < 17; prec++) {
    snprintf(out, n, "%.*g", prec, v);
    if (strtod(out, NULL) == v) return;
  }
  snprintf(out, n, "%.17g", v);
}

/* add_value writes a sample value: integers exactly, others with enough
** digits to read back the same double, and the format's own words for
** infinities and NaN. */
static void add_value(tt_buf *b, double v) {
  char s[64];
  if (isnan(v)) tt_buf_adds(b, "NaN");
  else if (isinf(v)) tt_buf_adds(b, v > 0 ? "+Inf" : "-Inf");
  else if (v == floor(v) && fabs(v) < 9007199254740992.0)
    tt_buf_addf(b, "%.0f", v);
  else {
    shortest(s, sizeof s, v);
    tt_buf_adds(b, s);
  }
}

/* add_series writes "name{labels,extra="value"}" ('suffix' appended to
** the name, 'extra' may be NULL). */
static void add_series(tt_buf *b, const char *name, const char *suffix,
                       const tt_metric_label *l, int n, const char *extra,
                       const char *extra_value) {
  int i;
  bool first = true;
  tt_buf_adds(b, name);
  tt_buf_adds(b, suffix);
  if (n == 0 && extra == NULL) return;
  tt_buf_addc(b, '{');
  for (i = 0; i < n; i++) {
    const char *v = l[i].value != NULL ? l[i].value : "";
    size_t len = l[i].value == NULL ? 0
                 : l[i].len == (size_t)-1 ? strlen(v) : l[i].len;
    if (!first) tt_buf_addc(b, ',');
    first = false;
    tt_buf_adds(b, l[i].name);
    tt_buf_adds(b, "=\"");
    tt_buf_prom_label(b, v, len);
    tt_buf_addc(b, '"');
  }
  if (extra != NULL) {
    if (!first) tt_buf_addc(b, ',');
    tt_buf_adds(b, extra);
    tt_buf_adds(b, "=\"");
    tt_buf_adds(b, extra_value);
    tt_buf_addc(b, '"');
  }
  tt_buf_addc(b, '}');
}

void tt_metric_value(tt_metric_writer *w, const tt_metric_label *labels,
                     int n, double v) {
  if (w->f->type == TT_METRIC_HISTOGRAM) return;
  add_series(w->b, w->f->name, "", labels, n, NULL, NULL);
  tt_buf_addc(w->b, ' ');
  add_value(w->b, v);
  tt_buf_addc(w->b, '\n');
}

void tt_metric_count(tt_metric_writer *w, const tt_metric_label *labels,
                     int n, uint64_t v) {
  if (w->f->type == TT_METRIC_HISTOGRAM) return;
  add_series(w->b, w->f->name, "", labels, n, NULL, NULL);
  tt_buf_addf(w->b, " %llu\n", (unsigned long long)v);
}

void tt_metric_histogram(tt_metric_writer *w, const tt_metric_label *labels,
                         int n, const double *bounds, int nbounds,
                         const uint64_t *counts, double sum) {
  uint64_t cum = 0;
  char le[64];
  int i;
  if (w->f->type != TT_METRIC_HISTOGRAM) return;
  for (i = 0; i <= nbounds; i++) {
    cum += counts[i];
    if (i < nbounds) shortest(le, sizeof le, bounds[i]);
    else snprintf(le, sizeof le, "+Inf");
    add_series(w->b, w->f->name, "_bucket", labels, n, "le", le);
    tt_buf_addf(w->b, " %llu\n", (unsigned long long)cum);
  }
  add_series(w->b, w->f->name, "_sum", labels, n, NULL, NULL);
  tt_buf_addc(w->b, ' ');
  add_value(w->b, sum);
  tt_buf_addc(w->b, '\n');
  add_series(w->b, w->f->name, "_count", labels, n, NULL, NULL);
  tt_buf_addf(w->b, " %llu\n", (unsigned long long)cum);
}

/* first_declared tells whether family 'fi' of source 'si' is the first
** declaration of its name (earlier sources, or earlier in its own). */
static bool first_declared(int si, int fi) {
  const char *name = sources[si].s.families[fi].name;
  int i, j;
  for (i = 0; i <= si; i++) {
    int nf = i == si ? fi : sources[i].s.nfamilies;
    for (j = 0; j < nf; j++)
      if (strcmp(sources[i].s.families[j].name, name) == 0) return false;
  }
  return true;
}

int tt_metrics_text(tt_buf *out) {
  int si, fi, i, j;
  pool_source_init();
  store_refresh();  /* with no lock: it waits for the stores */
  tt__lock(&reg_mu);
  for (si = 0; si < nsources; si++) {
    for (fi = 0; fi < sources[si].s.nfamilies; fi++) {
      const tt_metric_family *f = &sources[si].s.families[fi];
      tt_metric_writer w;
      if (!first_declared(si, fi)) continue;
      tt_buf_adds(out, "# HELP ");
      tt_buf_adds(out, f->name);
      tt_buf_addc(out, ' ');
      add_help(out, f->help != NULL ? f->help : "");
      tt_buf_adds(out, "\n# TYPE ");
      tt_buf_adds(out, f->name);
      tt_buf_addc(out, ' ');
      tt_buf_adds(out, type_names[f->type >= 0 && f->type <= 2 ? f->type
                                                                : 0]);
      tt_buf_addc(out, '\n');
      /* Then every source's samples of this family, in source order. */
      w.b = out;
      for (i = si; i < nsources; i++) {
        for (j = 0; j < sources[i].s.nfamilies; j++) {
          if (strcmp(sources[i].s.families[j].name, f->name) != 0)
            continue;
          w.f = &sources[i].s.families[j];
          sources[i].s.collect(&w, j, sources[i].s.ud);
          break;
        }
      }
    }
  }
  tt__unlock(&reg_mu);
  return out->failed ? TT_ENOMEM : TT_OK;
}

/* }==================================================================== */


/* {====================================================================
** Pool series
** ===================================================================== */

#define NBOUNDS 15
#define TBUCKETS 64
#define MAX_TENANTS_DEFAULT 100

/* Bounds of the op duration histogram, in seconds. */
static const double bounds[NBOUNDS] = {
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
  30, 60
};

/* The outcome label of tether_pool_ops_total, one per event kind that
** ends an op. */
enum { OUT_COMPLETED, OUT_FAILED, OUT_DEAD, OUT_STOPPED, OUT_SPILLED,
       OUT_ABANDONED, NOUT };
static const char *const outcome_names[NOUT] = {
  "completed", "failed", "dead", "stopped", "spilled", "abandoned"
};

/* The counters of one label set (a pool name, or a name and a tenant). */
typedef struct pseries {
  struct pseries *_Atomic hnext;   /* in its hash bucket */
  struct pseries *_Atomic anext;   /* in the name's list, newest first */
  _Atomic uint64_t submitted, retries;
  _Atomic uint64_t ops[NOUT];
  _Atomic uint64_t rejected[TT_NERRORS];
  _Atomic uint64_t buckets[NBOUNDS + 1];  /* per bucket, not cumulative */
  _Atomic uint64_t sum_ns;
  size_t tlen;
  char tenant[];                   /* "" without the tenant label */
} pseries;

typedef struct pattach pattach;

/* Everything about one pool name. */
typedef struct pname {
  struct pname *next;              /* registry list; under reg_mu */
  pattach *live;                   /* live pools of this name; reg_mu */
  bool tenant_mode;                /* fixed by the first pool */
  int max_tenants;                 /* fixed by the first pool */
  pthread_mutex_t tmu;             /* adding tenant series */
  int ntenants;                    /* under tmu */
  pseries *plain;                  /* without the tenant label */
  pseries *_Atomic all;            /* every series, newest first */
  pseries *_Atomic hash[TBUCKETS];
  size_t len;
  char name[];
} pname;

struct pattach {
  pattach *next;                   /* in the name's 'live'; reg_mu */
  tt_pool *pool;
  pname *ent;
  int workers;
  _Atomic bool drained;
};

static pname *names, *names_tail;  /* under reg_mu, oldest first */

static pseries *series_new(const char *tenant, size_t tlen) {
  pseries *s = calloc(1, sizeof *s + tlen + 1);
  if (s == NULL) return NULL;
  memcpy(s->tenant, tenant, tlen);
  s->tenant[tlen] = '\0';
  s->tlen = tlen;
  return s;
}

/* publish puts a new series at the head of the name's list. */
static void publish(pname *e, pseries *s) {
  pseries *head = atomic_load_explicit(&e->all, memory_order_relaxed);
  atomic_store_explicit(&s->anext, head, memory_order_relaxed);
  atomic_store_explicit(&e->all, s, memory_order_release);
}

static unsigned thash(const char *s, size_t n) {
  unsigned h = 2166136261u;
  size_t i;
  for (i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h % TBUCKETS;
}

static pseries *hash_find(pname *e, unsigned b, const char *t, size_t n) {
  pseries *s = atomic_load_explicit(&e->hash[b], memory_order_acquire);
  for (; s != NULL;
       s = atomic_load_explicit(&s->hnext, memory_order_acquire))
    if (s->tlen == n && memcmp(s->tenant, t, n) == 0) return s;
  return NULL;
}

/* insert makes the series of tenant 't' in bucket 'b' (under tmu). */
static pseries *insert(pname *e, unsigned b, const char *t, size_t n) {
  pseries *s = series_new(t, n);
  if (s == NULL) return NULL;
  atomic_store_explicit(&s->hnext,
                        atomic_load_explicit(&e->hash[b],
                                             memory_order_relaxed),
                        memory_order_relaxed);
  atomic_store_explicit(&e->hash[b], s, memory_order_release);
  publish(e, s);
  return s;
}

/* tenant_series returns the series of tenant 't' of name 'e', making it
** if need be; NULL only when out of memory.  Past 'max_tenants', new
** tenants share the series "other" (which a tenant of that name shares
** too: a label set is never written twice). */
static pseries *tenant_series(pname *e, const char *t) {
  size_t n;
  unsigned b;
  pseries *s;
  if (t == NULL) t = "default";
  n = strlen(t);
  b = thash(t, n);
  if ((s = hash_find(e, b, t, n)) != NULL) return s;
  tt__lock(&e->tmu);
  if ((s = hash_find(e, b, t, n)) == NULL) {
    if (e->ntenants < e->max_tenants) {
      if ((s = insert(e, b, t, n)) != NULL) e->ntenants++;
    } else {
      unsigned ob = thash("other", 5);
      s = hash_find(e, ob, "other", 5);
      if (s == NULL) s = insert(e, ob, "other", 5);
    }
  }
  tt__unlock(&e->tmu);
  return s;
}

static void add(_Atomic uint64_t *c, uint64_t n) {
  atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* observe adds an observation of 'd' seconds to a histogram's buckets
** (not cumulative) and sum. */
static void observe(_Atomic uint64_t *buckets, _Atomic uint64_t *sum_ns,
                    double d) {
  int i = 0;
  if (!(d >= 0)) d = 0;
  while (i < NBOUNDS && d > bounds[i]) i++;
  add(&buckets[i], 1);
  add(sum_ns, (uint64_t)llround(d * 1e9));
}

static void observe_duration(pseries *s, double d) {
  observe(s->buckets, &s->sum_ns, d);
}

/* pool_event is the immediate observer of an attached pool: under the
** pool's lock, atomics only (and, once per new tenant, its series). */
static void pool_event(const tt_event *ev, void *ud) {
  pattach *a = ud;
  pname *e = a->ent;
  pseries *s;
  int out = -1;
  switch (ev->kind) {
    case TT_EV_COMPLETED: out = OUT_COMPLETED; break;
    case TT_EV_FAILED: out = OUT_FAILED; break;
    case TT_EV_DEAD: out = OUT_DEAD; break;
    case TT_EV_STOPPED: out = OUT_STOPPED; break;
    case TT_EV_SPILLED: out = OUT_SPILLED; break;
    case TT_EV_ABANDONED: out = OUT_ABANDONED; break;
    case TT_EV_SUBMITTED: case TT_EV_RETRIED: case TT_EV_REJECTED: break;
    case TT_EV_DRAINED:
      atomic_store_explicit(&a->drained, true, memory_order_relaxed);
      return;
    default: return;
  }
  s = e->tenant_mode ? tenant_series(e, ev->tenant) : e->plain;
  if (s == NULL) return;
  switch (ev->kind) {
    case TT_EV_SUBMITTED: add(&s->submitted, 1); return;
    case TT_EV_RETRIED:
      add(&s->retries, 1);
      observe_duration(s, ev->duration);
      return;
    case TT_EV_REJECTED:
      if (ev->code > 0 && ev->code < TT_NERRORS)
        add(&s->rejected[ev->code], 1);
      return;
    default: break;
  }
  add(&s->ops[out], 1);
  /* Attempts that ran have a duration; stops and spills did not run. */
  if (out == OUT_COMPLETED || out == OUT_FAILED || out == OUT_DEAD)
    observe_duration(s, ev->duration);
}

/* pool_gone runs when the pool's memory goes: its attachment leaves the
** registry. */
static void pool_gone(void *ud) {
  pattach *a = ud, **pa;
  tt__lock(&reg_mu);
  for (pa = &a->ent->live; *pa != NULL; pa = &(*pa)->next)
    if (*pa == a) {
      *pa = a->next;
      break;
    }
  tt__unlock(&reg_mu);
  free(a);
}

/* find_name returns the entry of 'name', making it (under reg_mu). */
static pname *find_name(const char *name, bool tenant, int max_tenants) {
  size_t n = strlen(name);
  pname *e;
  for (e = names; e != NULL; e = e->next)
    if (e->len == n && memcmp(e->name, name, n) == 0) return e;
  e = calloc(1, sizeof *e + n + 1);
  if (e == NULL) return NULL;
  memcpy(e->name, name, n + 1);
  e->len = n;
  e->tenant_mode = tenant;
  e->max_tenants = max_tenants;
  TT_CHECK(pthread_mutex_init(&e->tmu, NULL));
  if (!tenant) {
    e->plain = series_new("", 0);
    if (e->plain == NULL) {
      TT_CHECK(pthread_mutex_destroy(&e->tmu));
      free(e);
      return NULL;
    }
    publish(e, e->plain);
  }
  if (names_tail != NULL) names_tail->next = e;
  else names = e;
  names_tail = e;
  return e;
}

int tt_metrics_observe_pool(tt_pool *p, const tt_pool_metrics_opts *o) {
  tt_observer_opts oo;
  pattach *a;
  bool tenant = o != NULL && o->tenant;
  int maxt = o != NULL && o->max_tenants > 0 ? o->max_tenants
                                             : MAX_TENANTS_DEFAULT;
  if (p == NULL) return TT_EINVAL;
  pool_source_init();
  a = calloc(1, sizeof *a);
  if (a == NULL) return TT_ENOMEM;
  a->pool = p;
  a->workers = tt_pool_workers(p);
  tt__lock(&reg_mu);
  a->ent = find_name(tt_pool_name(p), tenant, maxt);
  if (a->ent != NULL) {
    a->next = a->ent->live;
    a->ent->live = a;
  }
  tt__unlock(&reg_mu);
  if (a->ent == NULL) {
    free(a);
    return TT_ENOMEM;
  }
  memset(&oo, 0, sizeof oo);
  oo.immediate = true;
  oo.release = pool_gone;
  if (tt_pool_observe_with(p, pool_event, a, &oo) < 0) {
    pool_gone(a);
    return TT_ENOMEM;
  }
  return TT_OK;
}

/* }==================================================================== */


/* {====================================================================
** The pool source
** ===================================================================== */

enum { F_SUBMITTED, F_OPS, F_REJECTED, F_RETRIES, F_DURATION, F_QUEUED,
       F_INFLIGHT, F_WORKERS, NFAMILIES };

static const tt_metric_family pool_families[NFAMILIES] = {
  {"tether_pool_submitted_total",
   "Ops accepted by the pool (refusals count in "
   "tether_pool_rejected_total).", TT_METRIC_COUNTER},
  {"tether_pool_ops_total",
   "Ops that ended, by outcome.", TT_METRIC_COUNTER},
  {"tether_pool_rejected_total",
   "Submissions the pool refused, by error code.", TT_METRIC_COUNTER},
  {"tether_pool_retries_total",
   "Failed attempts that were scheduled for a retry.", TT_METRIC_COUNTER},
  {"tether_pool_op_duration_seconds",
   "Run time of each attempt of an op.", TT_METRIC_HISTOGRAM},
  {"tether_pool_queued",
   "Ops waiting for a worker or for a retry.", TT_METRIC_GAUGE},
  {"tether_pool_inflight",
   "Ops running on a worker.", TT_METRIC_GAUGE},
  {"tether_pool_workers",
   "Worker threads of the pools that have not drained.", TT_METRIC_GAUGE},
};

/* The codes always shown for rejections (others once they happened). */
static bool shown_code(int code, uint64_t v) {
  return v > 0 || code == TT_EQUEUE_FULL || code == TT_EQUOTA ||
         code == TT_ECLOSED;
}

static uint64_t get(_Atomic uint64_t *c) {
  return atomic_load_explicit(c, memory_order_relaxed);
}

/* collect_series writes one series' samples of family 'f'. */
static void collect_series(tt_metric_writer *w, int f, pname *e,
                           pseries *s) {
  tt_metric_label l[3];
  int n = 1, k;
  l[0].name = "pool";
  l[0].value = e->name;
  l[0].len = e->len;
  if (e->tenant_mode) {
    l[1].name = "tenant";
    l[1].value = s->tenant;
    l[1].len = s->tlen;
    n = 2;
  }
  switch (f) {
    case F_SUBMITTED: tt_metric_count(w, l, n, get(&s->submitted)); break;
    case F_RETRIES: tt_metric_count(w, l, n, get(&s->retries)); break;
    case F_OPS:
      for (k = 0; k < NOUT; k++) {
        l[n].name = "outcome";
        l[n].value = outcome_names[k];
        l[n].len = (size_t)-1;
        tt_metric_count(w, l, n + 1, get(&s->ops[k]));
      }
      break;
    case F_REJECTED:
      for (k = 1; k < TT_NERRORS; k++) {
        uint64_t v = get(&s->rejected[k]);
        if (!shown_code(k, v)) continue;
        l[n].name = "code";
        l[n].value = tt_errname(k);
        l[n].len = (size_t)-1;
        tt_metric_count(w, l, n + 1, v);
      }
      break;
    case F_DURATION: {
      uint64_t counts[NBOUNDS + 1];
      for (k = 0; k <= NBOUNDS; k++) counts[k] = get(&s->buckets[k]);
      tt_metric_histogram(w, l, n, bounds, NBOUNDS, counts,
                          (double)get(&s->sum_ns) / 1e9);
      break;
    }
    default: break;
  }
}

static pseries *next_series(pseries *s) {
  return atomic_load_explicit(&s->anext, memory_order_acquire);
}

static void pool_collect(tt_metric_writer *w, int f, void *ud) {
  pname *e;
  (void)ud;
  for (e = names; e != NULL; e = e->next) {
    if (f == F_QUEUED || f == F_INFLIGHT || f == F_WORKERS) {
      tt_metric_label l = {"pool", e->name, e->len};
      uint64_t v = 0;
      pattach *a;
      for (a = e->live; a != NULL; a = a->next) {
        tt_pool_stats st;
        if (f == F_WORKERS) {
          if (!atomic_load_explicit(&a->drained, memory_order_relaxed))
            v += (uint64_t)a->workers;
          continue;
        }
        tt_pool_stats_get(a->pool, &st);
        v += f == F_QUEUED ? st.queued : st.inflight;
      }
      tt_metric_count(w, &l, 1, v);
    } else {
      /* The list is newest first and only grows at its head: walk it
      ** twice from one snapshot of the head, and write oldest first. */
      pseries *head = atomic_load_explicit(&e->all, memory_order_acquire);
      pseries *small[64], **arr = small, *s;
      size_t n = 0, i;
      for (s = head; s != NULL; s = next_series(s)) n++;
      if (n > 64 && (arr = malloc(n * sizeof *arr)) == NULL) continue;
      for (s = head, i = n; s != NULL; s = next_series(s)) arr[--i] = s;
      for (i = 0; i < n; i++) collect_series(w, f, e, arr[i]);
      if (arr != small) free(arr);
    }
  }
}

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void pool_source_register(void) {
  tt_metric_source s;
  s.families = pool_families;
  s.nfamilies = NFAMILIES;
  s.collect = pool_collect;
  s.ud = NULL;
  tt__lock(&reg_mu);
  /* Registered first, by hand: tt_metrics_register calls this. */
  sources = calloc(8, sizeof *sources);
  if (sources != NULL) {
    sources_cap = 8;
    sources[0].id = ++next_source;
    sources[0].s = s;
    nsources = 1;
  }
  tt__unlock(&reg_mu);
}

static void pool_source_init(void) {
  TT_CHECK(pthread_once(&pool_once, pool_source_register));
}

/* }==================================================================== */


/* {====================================================================
** HTTP series and their source
** ===================================================================== */

#define NMETHODS 10
#define NSTATUS 600

/* The method label: the standard methods, then OTHER (the last). */
static const char *const method_names[NMETHODS] = {
  "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE",
  "PATCH", "OTHER"
};

/* The counters of one server name; they live as long as the process. */
typedef struct hname {
  struct hname *next;              /* registry list; under reg_mu */
  _Atomic uint64_t requests[NMETHODS][NSTATUS];  /* by status number */
  _Atomic uint64_t client_gone;
  _Atomic uint64_t buckets[NBOUNDS + 1];
  _Atomic uint64_t sum_ns;
  size_t len;
  char name[];
} hname;

static hname *hnames, *hnames_tail;  /* under reg_mu, oldest first */

static int method_index(const char *m) {
  int i;
  if (m == NULL) return NMETHODS - 1;
  for (i = 0; i < NMETHODS - 1; i++)
    if (strcmp(m, method_names[i]) == 0) return i;
  return NMETHODS - 1;
}

/* http_event is the immediate observer of an attached server: no lock,
** atomics only. */
static void http_event(const tt_http_event *ev, void *ud) {
  hname *e = ud;
  int st;
  if (ev->kind != TT_HTTP_EV_FINISHED) return;
  st = ev->status > 0 && ev->status < NSTATUS ? ev->status : 0;
  add(&e->requests[method_index(ev->method)][st], 1);
  if (ev->client_gone) add(&e->client_gone, 1);
  observe(e->buckets, &e->sum_ns, ev->duration);
}

enum { H_REQUESTS, H_GONE, H_DURATION, NHFAMILIES };

static const tt_metric_family http_families[NHFAMILIES] = {
  {"tether_http_requests_total",
   "HTTP requests that finished, by method (standard ones, else OTHER) "
   "and status code (0: nothing was sent).", TT_METRIC_COUNTER},
  {"tether_http_client_gone_total",
   "HTTP requests whose client hung up before the response was sent.",
   TT_METRIC_COUNTER},
  {"tether_http_request_duration_seconds",
   "Time from a request's headers to its end (handler returned, response "
   "sent).", TT_METRIC_HISTOGRAM},
};

static void http_collect(tt_metric_writer *w, int f, void *ud) {
  hname *e;
  int m, st, k;
  (void)ud;
  for (e = hnames; e != NULL; e = e->next) {
    tt_metric_label l[3] = {{"server", e->name, e->len},
                            {"method", NULL, (size_t)-1},
                            {"code", NULL, (size_t)-1}};
    switch (f) {
      case H_REQUESTS:
        for (m = 0; m < NMETHODS; m++)
          for (st = 0; st < NSTATUS; st++) {
            uint64_t v = get(&e->requests[m][st]);
            char code[16];
            if (v == 0) continue;
            snprintf(code, sizeof code, "%d", st);
            l[1].value = method_names[m];
            l[2].value = code;
            tt_metric_count(w, l, 3, v);
          }
        break;
      case H_GONE:
        tt_metric_count(w, l, 1, get(&e->client_gone));
        break;
      case H_DURATION: {
        uint64_t counts[NBOUNDS + 1];
        for (k = 0; k <= NBOUNDS; k++) counts[k] = get(&e->buckets[k]);
        tt_metric_histogram(w, l, 1, bounds, NBOUNDS, counts,
                            (double)get(&e->sum_ns) / 1e9);
        break;
      }
      default: break;
    }
  }
}

static pthread_once_t http_once = PTHREAD_ONCE_INIT;

static void http_source_register(void) {
  tt_metric_source src;
  memset(&src, 0, sizeof src);
  src.families = http_families;
  src.nfamilies = NHFAMILIES;
  src.collect = http_collect;
  tt_metrics_register(&src);
}

int tt_metrics_observe_http(tt_http_server *s) {
  tt_http_observer_opts oo;
  const char *name;
  size_t n;
  hname *e;
  if (s == NULL) return TT_EINVAL;
  TT_CHECK(pthread_once(&http_once, http_source_register));
  name = tt_http_name(s);
  n = strlen(name);
  tt__lock(&reg_mu);
  for (e = hnames; e != NULL; e = e->next)
    if (e->len == n && memcmp(e->name, name, n) == 0) break;
  if (e == NULL && (e = calloc(1, sizeof *e + n + 1)) != NULL) {
    memcpy(e->name, name, n + 1);
    e->len = n;
    if (hnames_tail != NULL) hnames_tail->next = e;
    else hnames = e;
    hnames_tail = e;
  }
  tt__unlock(&reg_mu);
  if (e == NULL) return TT_ENOMEM;
  memset(&oo, 0, sizeof oo);
  oo.immediate = true;
  return tt_http_observe_with(s, http_event, e, &oo) < 0 ? TT_ENOMEM : TT_OK;
}

int tt_metrics_respond(tt_http_req *r) {
  static const char nomem[] = "not enough memory\n";
  static const char nomethod[] = "method not allowed\n";
  const char *m = tt_http_req_method(r);
  tt_buf b = TT_BUF_INIT;
  int rc;
  if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0) {
    tt_http_res_status(r, 405);
    tt_http_res_header(r, "Allow", "GET, HEAD");
    return tt_http_res_send(r, nomethod, sizeof nomethod - 1);
  }
  if (tt_metrics_text(&b) != TT_OK) {
    tt_buf_free(&b);
    tt_http_res_status(r, 500);
    return tt_http_res_send(r, nomem, sizeof nomem - 1);
  }
  tt_http_res_header(r, "Content-Type", TT_METRICS_CONTENT_TYPE);
  rc = tt_http_res_send(r, b.data != NULL ? b.data : "", b.len);
  tt_buf_free(&b);
  return rc;
}

/* }==================================================================== */


/* {====================================================================
** Store series and their source
** ===================================================================== */

#define MAX_STORE_POOLS 256

/* An attached store. */
typedef struct sentry {
  struct sentry *next;             /* under st_mu */
  tt_store *store;                 /* an internal hold (tt__store_hold) */
  int refs;                        /* st_mu: the list's, each refresh's */
  bool listed;                     /* st_mu: the store is open */
  bool answered;                   /* st_mu: the last refresh had figures */
  tt_store_pool_stats *rows;       /* st_mu: by pool name */
  size_t nrows;
  char label[];
} sentry;

static pthread_mutex_t st_mu = PTHREAD_MUTEX_INITIALIZER;
static sentry *stores;             /* under st_mu, oldest first */
static _Atomic int nstores;        /* listed ones, for a quick look */

static void entry_free(sentry *e) {
  tt_store_pool_stats_free(e->rows, e->nrows);
  tt__store_drop(e->store);
  free(e);
}

/* unlist takes 'e' off the list (st_mu held); true if its memory is then
** to be freed (with no lock held). */
static bool unlist(sentry *e) {
  sentry **pe;
  if (!e->listed) return false;
  for (pe = &stores; *pe != NULL; pe = &(*pe)->next)
    if (*pe == e) {
      *pe = e->next;
      break;
    }
  e->listed = false;
  atomic_fetch_sub(&nstores, 1);
  return --e->refs == 0;
}

void tt__metrics_store_closed(const tt_store *s) {
  sentry *e, *next, *gone = NULL;
  if (atomic_load(&nstores) == 0) return;
  tt__lock(&st_mu);
  for (e = stores; e != NULL; e = next) {
    next = e->next;
    if (e->store == s && unlist(e)) {
      e->next = gone;
      gone = e;
    }
  }
  tt__unlock(&st_mu);
  for (; gone != NULL; gone = next) {
    next = gone->next;
    entry_free(gone);
  }
}

static int row_cmp(const void *a, const void *b) {
  return strcmp(((const tt_store_pool_stats *)a)->pool,
                ((const tt_store_pool_stats *)b)->pool);
}

/* merge makes 'rows' (taken) the entry's figures, with a zero row for
** each pool of the earlier figures that the store no longer lists, so
** that a series once seen stays (st_mu held). */
static void merge(sentry *e, tt_store_pool_stats *rows, size_t n) {
  size_t i, j, extra = 0, m;
  tt_store_pool_stats *all;
  for (i = 0; i < e->nrows; i++) {
    for (j = 0; j < n; j++)
      if (strcmp(e->rows[i].pool, rows[j].pool) == 0) break;
    if (j == n) extra++;
  }
  all = extra == 0 ? rows : realloc(rows, (n + extra) * sizeof *all);
  if (all == NULL) {
    all = rows;
    extra = 0;
  }
  m = n;
  for (i = 0; i < e->nrows && extra > 0; i++) {
    for (j = 0; j < n; j++)
      if (strcmp(e->rows[i].pool, all[j].pool) == 0) break;
    if (j < n) continue;
    memset(&all[m], 0, sizeof all[m]);
    all[m].pool = e->rows[i].pool;  /* moved */
    e->rows[i].pool = NULL;
    m++;
  }
  for (i = 0; i < e->nrows; i++) free(e->rows[i].pool);
  free(e->rows);
  if (m > 0) qsort(all, m, sizeof *all, row_cmp);
  while (m > MAX_STORE_POOLS) free(all[--m].pool);
  e->rows = all;
  e->nrows = m;
  e->answered = true;
}

/* store_refresh asks each attached store for its figures, with no lock
** held while it waits. */
static void store_refresh(void) {
  sentry *small[16], **v = small, *e;
  size_t n = 0, cap = 0, i;
  if (atomic_load(&nstores) == 0) return;
  tt__lock(&st_mu);
  for (e = stores; e != NULL; e = e->next) cap++;
  if (cap > 16 && (v = malloc(cap * sizeof *v)) == NULL) {
    v = small;
    cap = 16;
  }
  for (e = stores; e != NULL && n < cap; e = e->next) {
    e->refs++;
    v[n++] = e;
  }
  tt__unlock(&st_mu);
  for (i = 0; i < n; i++) {
    tt_store_pool_stats *rows = NULL;
    size_t nr = 0;
    bool drop;
    int rc;
    e = v[i];
    rc = tt_store_stats_pools(e->store, &rows, &nr);
    tt__lock(&st_mu);
    if (rc == TT_OK) {
      merge(e, rows, nr);
    } else {
      tt_store_pool_stats_free(rows, nr);
      e->answered = false;
      /* Closed before it was attached: this refresh's reference keeps
      ** it until below. */
      if (rc == TT_ECLOSED) (void)unlist(e);
    }
    drop = --e->refs == 0;
    tt__unlock(&st_mu);
    if (drop) entry_free(e);
  }
  if (v != small) free(v);
}

enum { SF_UP, SF_DEPTH, SF_LEASED, SF_DEAD, SF_AGE, SF_WRITTEN, SF_CLAIMED,
       SF_ACKED, SF_BURIED, NSFAMILIES };

static const tt_metric_family store_families[NSFAMILIES] = {
  {"tether_store_up",
   "1 if the durable store answered when these figures were made, else 0 "
   "(its gauges are then left out).", TT_METRIC_GAUGE},
  {"tether_store_depth",
   "Records in the durable store not yet acknowledged (leased ones "
   "included).", TT_METRIC_GAUGE},
  {"tether_store_leased",
   "Records claimed by a drainer now.", TT_METRIC_GAUGE},
  {"tether_store_dead",
   "Dead letters in the durable store.", TT_METRIC_GAUGE},
  {"tether_store_oldest_age_seconds",
   "Age of the oldest record in the durable store (0 when empty).",
   TT_METRIC_GAUGE},
  {"tether_store_records_written_total",
   "Records this process wrote into the store (spills).",
   TT_METRIC_COUNTER},
  {"tether_store_records_claimed_total",
   "Records this process claimed from the store.", TT_METRIC_COUNTER},
  {"tether_store_records_acked_total",
   "Records this process acknowledged (their ops ended).",
   TT_METRIC_COUNTER},
  {"tether_store_records_buried_total",
   "Records this process made dead letters of the store.",
   TT_METRIC_COUNTER},
};

/* first_of tells whether 'e' is the first listed entry of its label:
** stores attached under one label are written once (st_mu held). */
static bool first_of(sentry *e) {
  sentry *o;
  for (o = stores; o != e; o = o->next)
    if (strcmp(o->label, e->label) == 0) return false;
  return true;
}

static void store_collect(tt_metric_writer *w, int f, void *ud) {
  sentry *e, *o;
  size_t i;
  (void)ud;
  tt__lock(&st_mu);
  for (e = stores; e != NULL; e = e->next) {
    tt_metric_label l[2] = {{"store", e->label, (size_t)-1},
                            {"pool", NULL, 0}};
    if (!first_of(e)) continue;
    if (f == SF_UP) {
      tt_metric_count(w, l, 1, e->answered ? 1 : 0);
    } else if (f < SF_WRITTEN) {
      if (!e->answered) continue;
      for (i = 0; i < e->nrows; i++) {
        const tt_store_stats *st = &e->rows[i].st;
        l[1].value = e->rows[i].pool;
        l[1].len = (size_t)-1;
        switch (f) {
          case SF_DEPTH: tt_metric_count(w, l, 2, st->depth); break;
          case SF_LEASED: tt_metric_count(w, l, 2, st->leased); break;
          case SF_DEAD: tt_metric_count(w, l, 2, st->dead); break;
          default: tt_metric_value(w, l, 2, st->oldest_age); break;
        }
      }
    } else {
      /* Counters of every store of the label add up. */
      uint64_t v = 0;
      for (o = e; o != NULL; o = o->next) {
        tt_store_counters c;
        if (strcmp(o->label, e->label) != 0) continue;
        tt_store_counters_get(o->store, &c);
        v += f == SF_WRITTEN ? c.written : f == SF_CLAIMED ? c.claimed
             : f == SF_ACKED ? c.acked : c.buried;
      }
      tt_metric_count(w, l, 1, v);
    }
  }
  tt__unlock(&st_mu);
}

static pthread_once_t store_once = PTHREAD_ONCE_INIT;

static void store_source_register(void) {
  tt_metric_source src;
  memset(&src, 0, sizeof src);
  src.families = store_families;
  src.nfamilies = NSFAMILIES;
  src.collect = store_collect;
  tt_metrics_register(&src);
}

int tt_metrics_observe_store(tt_store *s, const char *name) {
  const char *label;
  size_t n;
  sentry *e, **pe;
  if (s == NULL) return TT_EINVAL;
  label = name != NULL ? name : tt_store_url(s);
  n = strlen(label);
  e = calloc(1, sizeof *e + n + 1);
  if (e == NULL) return TT_ENOMEM;
  memcpy(e->label, label, n + 1);
  TT_CHECK(pthread_once(&store_once, store_source_register));
  tt__store_hold(s);
  e->store = s;
  e->refs = 1;
  e->listed = true;
  tt__lock(&st_mu);
  for (pe = &stores; *pe != NULL; pe = &(*pe)->next) {}
  *pe = e;
  atomic_fetch_add(&nstores, 1);
  tt__unlock(&st_mu);
  return TT_OK;
}

/* }==================================================================== */
