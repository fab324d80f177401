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
** held.
*/
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

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

static void observe_duration(pseries *s, double d) {
  int i = 0;
  if (!(d >= 0)) d = 0;
  while (i < NBOUNDS && d > bounds[i]) i++;
  add(&s->buckets[i], 1);
  add(&s->sum_ns, (uint64_t)llround(d * 1e9));
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
