/*
** trace.c -- spans (OpenTelemetry), the sampler, and a background
** exporter of OTLP/HTTP JSON batches (libcurl) or OTLP JSON lines to a
** file.  The identity of a span and its W3C header are tracectx.c's.
**
** DESIGN.
**
** Spans.  tt_span_start always gives a span with ids (16 random bytes of
** trace id for a new trace, 8 of span id, from a per-thread generator
** seeded from tt_random_bytes) and a child context that carries them, so
** that a traceparent propagates whether or not anything is recorded.  A
** span is recorded only when tracing is on (an exporter is configured)
** and the sampler says so: parent-based by default (a child follows its
** parent's sampled flag; a new trace is sampled with the configured
** ratio of trace ids).  A recorded span keeps its name, attributes,
** links and status in a record of its own, bounded in size (attribute
** count and value length limits), which tt_span_end moves onto the
** export queue; an unrecorded span costs its ids and its context only.
**
** Work the engine does for someone gets a span from a caller-side hook:
** each attempt of a pool op (tt_trace_pool_hook; parent: the submitter's
** span, carried by the op's context, plus a link to it, since the op is
** detached from its submitter) and each saga step and compensation
** (saga.c).  When tracing is off these cost one atomic load.  A server
** span starts the same way from a context that carries the request's
** remote span context (tt_with_span_context of a parsed traceparent),
** with kind TT_SPAN_SERVER.
**
** Export.  Ended spans are pushed on a lock-free stack (a worker ends a
** span with a compare-and-swap, and takes a lock only to wake the
** exporter when the queue stops being empty or fills a batch).  One
** exporter thread (an engine thread, started with the first recorded
** span and stopped by tt_trace_shutdown or tt_shutdown) takes all of
** them at once when a batch is full, when the first has waited the
** schedule delay, or when a flush asks, and exports them in batches; it
** writes
** each batch as one ExportTraceServiceRequest in OTLP JSON (ids in hex,
** 64-bit integers and nanosecond times as strings, enums as integers)
** and POSTs it, or appends it to the file as one line.  Workers never
** wait for it: the queue is bounded (spans and bytes) and a span that
** finds it full is dropped and counted, as are the spans of a failed
** export.  Counters are exported as metrics (tether_trace_*).
**
** Configuration comes from the standard OTEL_* environment variables,
** read once at first use, and can be replaced by tt_trace_configure.
** A configuration is immutable and reference counted: the exporter
** holds the one it exports with.
**
** Locks.  'tmu' guards the exporter's state, flush generations and the
** current configuration (spans read what they need of it from atomics);
** nothing is called under it but malloc and thread creation, and 'smu'
** (the spare records' lock, a leaf) only around a fork: the handlers
** hold both across it, and a forked child frees what it inherited.  A
** span's 'mu' guards its record while it is open; it is taken alone.
*/
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "internal.h"

#define DEF_QUEUE 2048
#define DEF_BATCH 512
#define DEF_DELAY 5.0
#define DEF_TIMEOUT 10.0
#define DEF_VALUE_LIMIT 4096
#define DEF_ATTR_LIMIT 128
#define MAX_LINKS 32
#define MAX_QUEUED_BYTES (64u << 20)
#define TT_TRACE_SDK_VERSION "0.1.0"

/* {====================================================================
** Configuration
** ===================================================================== */

enum { S_ALWAYS_ON, S_ALWAYS_OFF, S_RATIO, S_PB_ON, S_PB_OFF, S_PB_RATIO };

static const char *const sampler_names[] = {
  "always_on", "always_off", "traceidratio", "parentbased_always_on",
  "parentbased_always_off", "parentbased_traceidratio", NULL
};

typedef struct tcfg {
  _Atomic long refs;
  char *endpoint;          /* may be NULL */
  char *file;              /* may be NULL */
  int fd;                  /* of 'file', or -1 */
  char **headers;          /* "Name: value" */
  size_t nheaders;
  char *service;
  char **res_keys, **res_values;  /* extra resource attributes */
  size_t nres;
  int sampler;
  double ratio;
  int queue, batch;
  double delay, timeout;
  size_t value_limit;
  int attr_limit;
} tcfg;

static void cfg_unref(tcfg *c) {
  size_t i;
  if (c == NULL || atomic_fetch_sub(&c->refs, 1) != 1) return;
  free(c->endpoint);
  free(c->file);
  if (c->fd >= 0) close(c->fd);
  for (i = 0; i < c->nheaders; i++) free(c->headers[i]);
  free(c->headers);
  for (i = 0; i < c->nres; i++) {
    free(c->res_keys[i]);
    free(c->res_values[i]);
  }
  free(c->res_keys);
  free(c->res_values);
  free(c->service);
  free(c);
}

static pthread_mutex_t tmu = PTHREAD_MUTEX_INITIALIZER;
static tcfg *cfg;                 /* under tmu; NULL before init */
static _Atomic int trace_on;      /* an exporter and a sampler that may
                                  ** say yes: spans are recorded */
static _Atomic int samp_kind = S_PB_ON;
static _Atomic size_t lim_value = DEF_VALUE_LIMIT;  /* read by spans */
static _Atomic int lim_attrs = DEF_ATTR_LIMIT;
static _Atomic int lim_queue = DEF_QUEUE, lim_batch = DEF_BATCH;
static _Atomic uint64_t samp_bound;  /* ratio as a bound on 63 bits */

/* Counters, for stats and metrics. */
static _Atomic uint64_t n_recorded, n_exported, n_dropped, n_failed;

/* warn logs a configuration problem once per message. */
static void warn(const char *msg, const char *detail) {
  tt_field f[] = {TT_FSTR("detail", detail)};
  tt_log(TT_LOG_WARN, msg, f, 1);
}

/* process_name is "unknown_service:<executable>", OpenTelemetry's
** default service name. */
static char *default_service(void) {
  char comm[64] = "", buf[96];
  FILE *f = fopen("/proc/self/comm", "r");
  if (f != NULL) {
    if (fgets(comm, sizeof comm, f) == NULL) comm[0] = '\0';
    fclose(f);
  }
  comm[strcspn(comm, "\n")] = '\0';
  snprintf(buf, sizeof buf, comm[0] != '\0' ? "unknown_service:%s"
                                            : "unknown_service%s", comm);
  return tt__strdup(buf);
}

static bool has_crlf(const char *s) { return strpbrk(s, "\r\n") != NULL; }

static tcfg *cfg_new(const tt_trace_opts *o) {
  tcfg *c = calloc(1, sizeof *c);
  size_t i;
  if (c == NULL) return NULL;
  atomic_init(&c->refs, 1);
  c->fd = -1;
  c->sampler = S_PB_RATIO;
  c->ratio = 1.0;
  c->queue = o->queue_size > 0 ? o->queue_size : DEF_QUEUE;
  c->batch = o->batch_size > 0 ? o->batch_size : DEF_BATCH;
  if (c->batch > c->queue) c->batch = c->queue;
  c->delay = o->schedule_delay > 0 ? o->schedule_delay : DEF_DELAY;
  c->timeout = o->export_timeout > 0 ? o->export_timeout : DEF_TIMEOUT;
  c->value_limit = o->value_limit > 0 ? (size_t)o->value_limit
                                      : DEF_VALUE_LIMIT;
  c->attr_limit = o->attr_limit > 0 ? o->attr_limit : DEF_ATTR_LIMIT;
  if (o->sampler != NULL) {
    for (i = 0; sampler_names[i] != NULL; i++)
      if (strcmp(o->sampler, sampler_names[i]) == 0) break;
    if (sampler_names[i] == NULL) goto bad;
    c->sampler = (int)i;
    if (c->sampler == S_RATIO || c->sampler == S_PB_RATIO) {
      if (!(o->sampler_arg >= 0 && o->sampler_arg <= 1)) goto bad;
      c->ratio = o->sampler_arg;
    }
  }
  if (o->endpoint != NULL &&
      (has_crlf(o->endpoint) ||
       (c->endpoint = tt__strdup(o->endpoint)) == NULL))
    goto bad;
  if (o->file != NULL) {
    c->file = tt__strdup(o->file);
    if (c->file == NULL) goto bad;
    c->fd = open(o->file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (c->fd < 0) goto bad;
  }
  if (o->nheaders > 0) {
    c->headers = calloc(o->nheaders, sizeof *c->headers);
    if (c->headers == NULL) goto bad;
    for (i = 0; i < o->nheaders; i++) {
      const char *h = o->headers[i];
      if (h == NULL || has_crlf(h) || strchr(h, ':') == NULL) goto bad;
      if ((c->headers[i] = tt__strdup(h)) == NULL) goto bad;
      c->nheaders = i + 1;
    }
  }
  c->service = o->service_name != NULL ? tt__strdup(o->service_name)
                                       : default_service();
  if (c->service == NULL) goto bad;
  if (o->nresource > 0) {
    c->res_keys = calloc(o->nresource, sizeof *c->res_keys);
    c->res_values = calloc(o->nresource, sizeof *c->res_values);
    if (c->res_keys == NULL || c->res_values == NULL) goto bad;
    for (i = 0; i < o->nresource; i++) {
      c->res_keys[i] = tt__strdup(o->resource[i].key);
      c->res_values[i] = tt__strdup(o->resource[i].value);
      c->nres = i + 1;
      if (c->res_keys[i] == NULL || c->res_values[i] == NULL) goto bad;
    }
  }
  return c;
bad:
  cfg_unref(c);
  return NULL;
}

/* apply makes 'c' the configuration (taking its reference). */
static void apply(tcfg *c) {
  tcfg *old;
  uint64_t bound = c->ratio >= 1 ? UINT64_MAX >> 1
                   : (uint64_t)(c->ratio * 9223372036854775808.0);
  /* Parent-based samplers still record the children of sampled
  ** parents, whatever they do with new traces. */
  int on = (c->endpoint != NULL || c->fd >= 0) &&
           c->sampler != S_ALWAYS_OFF &&
           !(c->sampler == S_RATIO && c->ratio <= 0);
  tt__lock(&tmu);
  old = cfg;
  cfg = c;
  atomic_store(&samp_bound, bound);
  atomic_store(&samp_kind, c->sampler);
  atomic_store(&lim_value, c->value_limit);
  atomic_store(&lim_attrs, c->attr_limit);
  atomic_store(&lim_queue, c->queue);
  atomic_store(&lim_batch, c->batch);
  atomic_store(&trace_on, on);
  tt__unlock(&tmu);
  cfg_unref(old);
}

/* {====== The environment ====== */

static const char *env(const char *a, const char *b) {
  const char *v = getenv(a);
  if ((v == NULL || *v == '\0') && b != NULL) v = getenv(b);
  return v != NULL && *v != '\0' ? v : NULL;
}

/* env_ms reads a duration in milliseconds as seconds (0: not set). */
static double env_ms(const char *a, const char *b) {
  const char *v = env(a, b);
  char *end;
  double d;
  if (v == NULL) return 0;
  d = strtod(v, &end);
  if (*end != '\0' || !(d > 0)) {
    warn("ignored a bad OTEL_* duration (milliseconds)", v);
    return 0;
  }
  return d / 1000;
}

static int env_int(const char *a) {
  const char *v = env(a, NULL);
  char *end;
  long n;
  if (v == NULL) return 0;
  n = strtol(v, &end, 10);
  if (*end != '\0' || n <= 0 || n > 1 << 24) {
    warn("ignored a bad OTEL_* count", v);
    return 0;
  }
  return (int)n;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* decode trims and percent-decodes [s, s+n) into a new string. */
static char *decode(const char *s, size_t n) {
  char *d;
  size_t i, j = 0;
  while (n > 0 && isspace((unsigned char)*s)) s++, n--;
  while (n > 0 && isspace((unsigned char)s[n - 1])) n--;
  d = malloc(n + 1);
  if (d == NULL) return NULL;
  for (i = 0; i < n; i++) {
    if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 &&
        hexval(s[i + 2]) >= 0) {
      d[j++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
      i += 2;
    } else {
      d[j++] = s[i];
    }
  }
  d[j] = '\0';
  return d;
}

/* A list of key=value pairs, as OTEL_EXPORTER_OTLP_HEADERS and
** OTEL_RESOURCE_ATTRIBUTES write them. */
typedef struct kvlist {
  char **k, **v;
  size_t n;
} kvlist;

static void kv_free(kvlist *l) {
  size_t i;
  for (i = 0; i < l->n; i++) {
    free(l->k[i]);
    free(l->v[i]);
  }
  free(l->k);
  free(l->v);
  memset(l, 0, sizeof *l);
}

static void kv_parse(const char *s, kvlist *l, const char *what) {
  memset(l, 0, sizeof *l);
  while (s != NULL && *s != '\0') {
    const char *end = strchr(s, ','), *eq;
    size_t len = end != NULL ? (size_t)(end - s) : strlen(s);
    eq = memchr(s, '=', len);
    if (eq == NULL) {
      if (len > 0) warn(what, "an entry has no '='");
    } else {
      char **nk = realloc(l->k, (l->n + 1) * sizeof *nk), **nv;
      if (nk == NULL) break;
      l->k = nk;
      nv = realloc(l->v, (l->n + 1) * sizeof *nv);
      if (nv == NULL) break;
      l->v = nv;
      l->k[l->n] = decode(s, (size_t)(eq - s));
      l->v[l->n] = decode(eq + 1, len - (size_t)(eq - s) - 1);
      if (l->k[l->n] == NULL || l->v[l->n] == NULL || l->k[l->n][0] == 0) {
        free(l->k[l->n]);
        free(l->v[l->n]);
      } else {
        l->n++;
      }
    }
    s = end != NULL ? end + 1 : NULL;
  }
}

/* from_env reads the standard variables into a configuration. */
static tcfg *from_env(void) {
  tt_trace_opts o;
  const char *v, *which;
  char *endpoint = NULL, **hdrs = NULL;
  kvlist h, r;
  tt_trace_attr *res = NULL;
  tcfg *c;
  size_t i, nres = 0;
  memset(&o, 0, sizeof o);
  o.sampler_arg = 1;
  memset(&h, 0, sizeof h);
  memset(&r, 0, sizeof r);
  v = env("OTEL_SDK_DISABLED", NULL);
  which = env("OTEL_TRACES_EXPORTER", NULL);
  if ((v != NULL && strcasecmp(v, "true") == 0) ||
      (which != NULL && strcmp(which, "none") == 0)) {
    /* Nothing is exported: the defaults, with no destination. */
  } else {
    if (which != NULL && strcmp(which, "otlp") != 0)
      warn("OTEL_TRACES_EXPORTER: only otlp is supported", which);
    if ((v = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", NULL)) != NULL) {
      endpoint = tt__strdup(v);
    } else if ((v = env("OTEL_EXPORTER_OTLP_ENDPOINT", NULL)) != NULL) {
      size_t n = strlen(v);
      endpoint = malloc(n + sizeof "/v1/traces");
      if (endpoint != NULL) {
        memcpy(endpoint, v, n);
        if (n > 0 && v[n - 1] == '/') n--;
        memcpy(endpoint + n, "/v1/traces", sizeof "/v1/traces");
      }
    }
    o.endpoint = endpoint;
    o.file = env("TETHER_TRACES_FILE", NULL);
    v = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL");
    if (v != NULL && strcmp(v, "http/json") != 0)
      warn("OTLP protocol: only http/json is sent", v);
  }
  kv_parse(env("OTEL_EXPORTER_OTLP_TRACES_HEADERS",
               "OTEL_EXPORTER_OTLP_HEADERS"), &h,
           "OTEL_EXPORTER_OTLP_HEADERS: ignored an entry");
  if (h.n > 0 && (hdrs = calloc(h.n, sizeof *hdrs)) != NULL) {
    for (i = 0; i < h.n; i++) {
      size_t n = strlen(h.k[i]) + strlen(h.v[i]) + 3;
      if ((hdrs[o.nheaders] = malloc(n)) == NULL) continue;
      snprintf(hdrs[o.nheaders], n, "%s: %s", h.k[i], h.v[i]);
      if (has_crlf(hdrs[o.nheaders]) || strchr(h.k[i], ':') != NULL) {
        warn("OTEL_EXPORTER_OTLP_HEADERS: ignored a bad header", h.k[i]);
        free(hdrs[o.nheaders]);
        continue;
      }
      o.nheaders++;
    }
    o.headers = (const char *const *)hdrs;
  }
  kv_parse(env("OTEL_RESOURCE_ATTRIBUTES", NULL), &r,
           "OTEL_RESOURCE_ATTRIBUTES: ignored an entry");
  if (r.n > 0 && (res = calloc(r.n, sizeof *res)) != NULL) {
    for (i = 0; i < r.n; i++) {
      if (strcmp(r.k[i], "service.name") == 0) {
        o.service_name = r.v[i];
        continue;
      }
      res[nres].key = r.k[i];
      res[nres].value = r.v[i];
      nres++;
    }
    o.resource = res;
    o.nresource = nres;
  }
  if ((v = env("OTEL_SERVICE_NAME", NULL)) != NULL) o.service_name = v;
  if ((v = env("OTEL_TRACES_SAMPLER", NULL)) != NULL) {
    for (i = 0; sampler_names[i] != NULL; i++)
      if (strcmp(v, sampler_names[i]) == 0) break;
    if (sampler_names[i] != NULL) o.sampler = v;
    else warn("OTEL_TRACES_SAMPLER: unknown sampler ignored", v);
  }
  if ((v = env("OTEL_TRACES_SAMPLER_ARG", NULL)) != NULL) {
    char *end;
    double d = strtod(v, &end);
    if (*end == '\0' && d >= 0 && d <= 1) {
      o.sampler_arg = d;
      if (o.sampler == NULL) o.sampler = "parentbased_traceidratio";
    } else {
      warn("OTEL_TRACES_SAMPLER_ARG: not a ratio in [0, 1]", v);
    }
  }
  o.schedule_delay = env_ms("OTEL_BSP_SCHEDULE_DELAY", NULL);
  o.export_timeout = env_ms("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                            "OTEL_EXPORTER_OTLP_TIMEOUT");
  o.queue_size = env_int("OTEL_BSP_MAX_QUEUE_SIZE");
  o.batch_size = env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE");
  o.value_limit = env_int("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT");
  if (o.value_limit == 0)
    o.value_limit = env_int("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT");
  o.attr_limit = env_int("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT");
  c = cfg_new(&o);
  if (c == NULL && o.file != NULL) {
    warn("TETHER_TRACES_FILE: cannot open the file", o.file);
    o.file = NULL;
    c = cfg_new(&o);
  }
  if (c == NULL) {
    /* A bad endpoint: trace nothing rather than fail. */
    warn("tracing is off: bad OTEL_* settings", endpoint);
    memset(&o, 0, sizeof o);
    c = cfg_new(&o);
  }
  for (i = 0; i < o.nheaders; i++) free(hdrs[i]);
  free(hdrs);
  free(res);
  free(endpoint);
  kv_free(&h);
  kv_free(&r);
  return c;
}

/* }====== */

static void register_metrics(void);

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init(void) {
  tcfg *c = from_env();
  if (c != NULL) apply(c);
  register_metrics();
}

static void ensure_init(void) { TT_CHECK(pthread_once(&init_once, init)); }

int tt_trace_configure(const tt_trace_opts *o) {
  tcfg *c;
  tt_trace_opts def;
  ensure_init();
  if (o == NULL) {
    memset(&def, 0, sizeof def);
    o = &def;
  }
  c = cfg_new(o);
  if (c == NULL) return TT_EINVAL;
  apply(c);
  return TT_OK;
}

bool tt_trace_enabled(void) {
  ensure_init();
  return atomic_load_explicit(&trace_on, memory_order_relaxed) != 0;
}

/* }==================================================================== */


/* {====================================================================
** Spans
** ===================================================================== */

/* A string of a record: 'len' bytes at offset 'off' of its text. */
typedef struct sstr {
  size_t off, len;
} sstr;

typedef struct sattr {
  sstr key;
  int kind;                /* TT_F_* */
  sstr s;                  /* for TT_F_STR */
  long long i;
  double n;
} sattr;

#define SMALL_ATTRS 6

/* A link: the ids of another span. */
typedef struct slink {
  uint8_t trace_id[16];
  uint8_t span_id[8];
} slink;

/* A recorded span, from its start to its export.  Its strings (name,
** attribute keys and values, status message) live in one buffer,
** 'text', so that a span costs a few allocations, not one per string. */
typedef struct srec {
  struct srec *next;       /* in the queue (a stack, newest first) */
  tt_list link;            /* in the exporter's batch */
  tt_span_context sc;
  uint8_t parent[8];
  bool has_parent, parent_remote;
  int kind;
  uint64_t start_ns, end_ns;
  int status;              /* 0 unset, 2 error */
  tt_buf text;
  sstr name, message;
  sattr small[SMALL_ATTRS];
  sattr *attrs;            /* 'small', or allocated past it */
  int nattrs, attr_cap, dropped_attrs;
  slink small_links[2];
  slink *links;            /* 'small_links', or allocated past them */
  int nlinks, link_cap, dropped_links;
  size_t value_limit;
  int attr_limit;
  size_t bytes;            /* about what it holds, for the queue bound */
} srec;

struct tt_span {
  tt_obj hdr;
  pthread_mutex_t mu;      /* guards 'rec' and 'ended' */
  tt_span_context sc;      /* fixed */
  srec *rec;               /* NULL when not recorded, or once ended */
  bool ended;
};

/* Spare records.  A record is allocated on the thread that starts its
** span and released on the exporter's, at the rate ops run: through
** malloc, every span paid for an allocation on one thread and a free on
** another (the allocator's slow paths: the worker's arena, which the
** exporter's frees shrink, grows again a page at a time).  Released
** records are kept instead, with their text buffers, and the next spans
** reuse them: at most as many as the export queue may hold (its bound
** already lets that many records live at once).  'smu' guards the list;
** it is a leaf, held for a few pointer moves (a span takes it once to
** get a record, the exporter once per batch to give them back). */
#define SPARE_TEXT 512      /* a spare keeps a text buffer up to this */

static pthread_mutex_t smu = PTHREAD_MUTEX_INITIALIZER;
static srec *spares;         /* under smu, linked by 'next' */
static size_t nspares;       /* under smu */

/* rec_alloc gives a record whose text is empty, or NULL. */
static srec *rec_alloc(void) {
  srec *r;
  tt__lock(&smu);
  r = spares;
  if (r != NULL) {
    spares = r->next;
    nspares--;
  }
  tt__unlock(&smu);
  if (r == NULL) {
    r = malloc(sizeof *r);
    if (r != NULL) tt_buf_init(&r->text);
  } else {
    r->text.len = 0;
    r->text.failed = false;
  }
  return r;
}

/* rec_clear frees what a record holds past itself, but a text buffer of
** a spare's size. */
static void rec_clear(srec *r) {
  if (r->attrs != r->small) free(r->attrs);
  if (r->links != r->small_links) free(r->links);
  if (r->text.failed || r->text.cap > SPARE_TEXT) tt_buf_free(&r->text);
}

static void rec_destroy(srec *r) {
  rec_clear(r);
  tt_buf_free(&r->text);
  free(r);
}

/* spare_room tells how many more spares may be kept. */
static size_t spare_room(void) {
  size_t cap = (size_t)atomic_load_explicit(&lim_queue,
                                            memory_order_relaxed), n;
  tt__lock(&smu);
  n = nspares;
  tt__unlock(&smu);
  return n < cap ? cap - n : 0;
}

/* rec_release keeps the 'n' records of the chain 'head'...'tail'
** (linked by 'next') as spares; the caller has checked the room. */
static void rec_release(srec *head, srec *tail, size_t n) {
  if (head == NULL) return;
  tt__lock(&smu);
  tail->next = spares;
  spares = head;
  nspares += n;
  tt__unlock(&smu);
}

static void rec_free(srec *r) {
  if (r == NULL) return;
  if (spare_room() == 0) {
    rec_destroy(r);
    return;
  }
  rec_clear(r);
  r->next = NULL;
  rec_release(r, r, 1);
}

/* rec_str returns the bytes of a string of the record. */
static const char *rec_str(const srec *r, sstr s) {
  return r->text.data != NULL ? r->text.data + s.off : "";
}

static void span_free(tt_obj *o) {
  tt_span *s = (tt_span *)o;
  rec_free(s->rec);  /* never ended: never exported */
  TT_CHECK(pthread_mutex_destroy(&s->mu));
  free(s);
}

static int span_describe(tt_obj *o, char *buf, size_t n) {
  tt_span *s = (tt_span *)o;
  char tid[33], sid[17];
  tt_hex(s->sc.trace_id, 16, tid);
  tt_hex(s->sc.span_id, 8, sid);
  return snprintf(buf, n, "tether.Span %s-%s%s", tid, sid,
                  (s->sc.flags & 1) ? " (sampled)" : "");
}

const tt_type tt_span_type = {"tether.Span", span_free, span_describe,
                              NULL};

/* Ids come from a per-thread xoshiro256** generator, seeded once per
** thread from the kernel (tt_random_bytes): 32 random bytes of seed give
** ids no other process or thread can predict or repeat, and an id then
** costs a few arithmetic instructions instead of a share of a system
** call.  A forked child would continue its parent's sequences, so every
** thread reseeds once the fork generation it was seeded in has passed. */
typedef struct idgen {
  uint64_t s[4];
  unsigned gen;            /* fork generation of the seed */
  bool seeded;
} idgen;

static _Atomic unsigned fork_gen;
static pthread_once_t idgen_once = PTHREAD_ONCE_INIT;

static void idgen_forked(void) { atomic_fetch_add(&fork_gen, 1); }

static void idgen_init(void) {
  TT_CHECK(pthread_atfork(NULL, NULL, idgen_forked));
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static void idgen_seed(idgen *g, unsigned gen) {
  int i;
  if (tt_random_bytes(g->s, sizeof g->s) != TT_OK) {
    /* No kernel randomness: a weaker seed beats none. */
    for (i = 0; i < 4; i++) g->s[i] = tt__random();
  }
  if ((g->s[0] | g->s[1] | g->s[2] | g->s[3]) == 0)
    g->s[0] = 0x9e3779b97f4a7c15ULL;  /* the one state it cannot leave */
  g->gen = gen;
  g->seeded = true;
}

static uint64_t idgen_next(idgen *g) {
  uint64_t r = rotl(g->s[1] * 5, 7) * 9, t = g->s[1] << 17;
  g->s[2] ^= g->s[0];
  g->s[3] ^= g->s[1];
  g->s[1] ^= g->s[2];
  g->s[0] ^= g->s[3];
  g->s[2] ^= t;
  g->s[3] = rotl(g->s[3], 45);
  return r;
}

/* random_id fills 'p' with 'n' (8 or 16) random bytes, not all zero. */
static void random_id(uint8_t *p, size_t n) {
  static _Thread_local idgen g;
  unsigned gen;
  size_t i;
  bool zero;
  TT_CHECK(pthread_once(&idgen_once, idgen_init));
  gen = atomic_load_explicit(&fork_gen, memory_order_relaxed);
  if (!g.seeded || g.gen != gen) idgen_seed(&g, gen);
  do {
    zero = true;
    for (i = 0; i < n; i += 8) {
      uint64_t r = idgen_next(&g);
      memcpy(p + i, &r, n - i < 8 ? n - i : 8);
      if (r != 0) zero = false;
    }
  } while (zero);
}

/* Span times are Unix nanoseconds read as the monotonic clock plus an
** offset to the wall clock: one clock read per time, and a span never
** ends before it starts when the wall clock is set back.  The exporter
** measures the offset again before each export. */
static _Atomic int64_t wall_offset;
static _Atomic bool wall_known;

static int64_t clock_ns(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void measure_offset(void) {
  atomic_store(&wall_offset,
               clock_ns(CLOCK_REALTIME) - clock_ns(CLOCK_MONOTONIC));
  atomic_store(&wall_known, true);
}

static uint64_t wall_ns(void) {
  if (!atomic_load_explicit(&wall_known, memory_order_acquire))
    measure_offset();
  return (uint64_t)(clock_ns(CLOCK_MONOTONIC) +
                    atomic_load_explicit(&wall_offset,
                                         memory_order_relaxed));
}

/* wall_of_mono converts a time of tt_now (the monotonic clock, in
** seconds) to Unix nanoseconds, as wall_ns would have read it then. */
static uint64_t wall_of_mono(double at) {
  if (!atomic_load_explicit(&wall_known, memory_order_acquire))
    measure_offset();
  return (uint64_t)((int64_t)(at * 1e9 + 0.5) +
                    atomic_load_explicit(&wall_offset,
                                         memory_order_relaxed));
}

/* sample decides a new span's sampled flag. */
static bool sample(const tt_span_context *parent, const uint8_t *trace_id) {
  int k = atomic_load_explicit(&samp_kind, memory_order_relaxed);
  uint64_t x = 0;
  int i;
  if (!atomic_load_explicit(&trace_on, memory_order_relaxed))
    return parent != NULL && (parent->flags & 1);
  if (parent != NULL && k >= S_PB_ON) return (parent->flags & 1) != 0;
  if (k == S_ALWAYS_ON || k == S_PB_ON) return true;
  if (k == S_ALWAYS_OFF || k == S_PB_OFF) return false;
  /* The trace id's last 8 bytes as a number, against the ratio. */
  for (i = 8; i < 16; i++) x = (x << 8) | trace_id[i];
  return (x >> 1) < atomic_load_explicit(&samp_bound, memory_order_relaxed);
}

/* clip returns how many bytes of a string of 'n' bytes a record keeps. */
static size_t clip(const srec *r, size_t n) {
  return n > r->value_limit ? r->value_limit : n;
}

/* rec_link adds a link (at most MAX_LINKS; the others are counted). */
static void rec_link(srec *r, const tt_span_context *sc) {
  if (r->nlinks == r->link_cap) {
    int ncap = r->link_cap * 2;
    slink *nl = ncap <= MAX_LINKS ? malloc((size_t)ncap * sizeof *nl)
                                  : NULL;
    if (nl == NULL) {
      r->dropped_links++;
      return;
    }
    memcpy(nl, r->links, (size_t)r->nlinks * sizeof *nl);
    if (r->links != r->small_links) free(r->links);
    r->links = nl;
    r->link_cap = ncap;
    r->bytes += (size_t)ncap * sizeof *nl;
  }
  memcpy(r->links[r->nlinks].trace_id, sc->trace_id, 16);
  memcpy(r->links[r->nlinks].span_id, sc->span_id, 8);
  r->nlinks++;
}

/* text_add keeps 'n' bytes of 's' (clipped to the value limit) in the
** record's text. */
static sstr text_add(srec *r, const char *s, size_t n) {
  sstr t;
  n = clip(r, n);
  t.off = r->text.len;
  tt_buf_add(&r->text, s, n);
  t.len = r->text.failed ? 0 : n;
  if (r->text.failed) t.off = 0;
  r->bytes += t.len;
  return t;
}

static void rec_attr(srec *r, const tt_field *f) {
  sattr *a = NULL;
  size_t klen;
  int i;
  if (f == NULL || f->key == NULL) return;
  klen = clip(r, strlen(f->key));
  for (i = 0; i < r->nattrs; i++)
    if (r->attrs[i].key.len == klen &&
        memcmp(rec_str(r, r->attrs[i].key), f->key, klen) == 0) {
      a = &r->attrs[i];  /* replaced; the old bytes stay unused */
      break;
    }
  if (a == NULL) {
    if (r->nattrs >= r->attr_limit) {
      r->dropped_attrs++;
      return;
    }
    if (r->nattrs == r->attr_cap) {
      int ncap = r->attr_cap * 2;
      sattr *na = malloc((size_t)ncap * sizeof *na);
      if (na == NULL) {
        r->dropped_attrs++;
        return;
      }
      memcpy(na, r->attrs, (size_t)r->nattrs * sizeof *na);
      if (r->attrs != r->small) free(r->attrs);
      r->attrs = na;
      r->attr_cap = ncap;
    }
    a = &r->attrs[r->nattrs++];
    a->key = text_add(r, f->key, klen);
    r->bytes += sizeof *a;
  }
  a->kind = f->kind;
  a->i = f->i;
  a->n = f->n;
  a->s.off = a->s.len = 0;
  if (f->kind == TT_F_STR && f->s != NULL)
    a->s = text_add(r, f->s, f->len == (size_t)-1 ? strlen(f->s) : f->len);
}

/* span_start is tt_span_start, for a parent whose span context the
** caller has read ('pp', NULL for none), starting at 'start_ns' (Unix
** nanoseconds; 0: now). */
static tt_span *span_start(tt_ctx *parent, const tt_span_context *pp,
                           const char *name, const tt_span_opts *o,
                           tt_ctx **child, uint64_t start_ns) {
  tt_span *s;
  srec *r = NULL;
  size_t i;
  if (child != NULL) *child = NULL;
  s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  tt_obj_init(&s->hdr, &tt_span_type);
  TT_CHECK(pthread_mutex_init(&s->mu, NULL));
  if (pp != NULL) memcpy(s->sc.trace_id, pp->trace_id, 16);
  else if (o != NULL && o->trace_id != NULL)
    memcpy(s->sc.trace_id, o->trace_id, 16);
  else random_id(s->sc.trace_id, 16);
  random_id(s->sc.span_id, 8);
  s->sc.flags = sample(pp, s->sc.trace_id) ? 1 : 0;
  s->sc.remote = false;
  if ((s->sc.flags & 1) &&
      atomic_load_explicit(&trace_on, memory_order_relaxed)) {
    r = rec_alloc();
    if (r != NULL) {
      /* Only what needs a value: the arrays' unused slots stay as they
      ** are, to save zeroing them for every span. */
      r->has_parent = r->parent_remote = false;
      r->status = 0;
      r->message.off = r->message.len = 0;
      r->nattrs = r->dropped_attrs = 0;
      r->nlinks = r->dropped_links = 0;
      r->links = r->small_links;
      r->link_cap = 2;
      r->end_ns = 0;
      r->value_limit = atomic_load_explicit(&lim_value,
                                            memory_order_relaxed);
      r->attr_limit = atomic_load_explicit(&lim_attrs, memory_order_relaxed);
      r->attrs = r->small;
      r->attr_cap = SMALL_ATTRS;
      r->bytes = sizeof *r;
      r->sc = s->sc;
      if (pp != NULL) {
        memcpy(r->parent, pp->span_id, 8);
        r->has_parent = true;
        r->parent_remote = pp->remote;
      }
      if (name == NULL) name = "span";
      r->name = text_add(r, name, strlen(name));
      r->kind = o != NULL && o->kind > 0 ? o->kind : TT_SPAN_INTERNAL;
      r->start_ns = start_ns != 0 ? start_ns : wall_ns();
      if (o != NULL) {
        for (i = 0; i < o->nattrs; i++) rec_attr(r, &o->attrs[i]);
        if (o->link_parent && pp != NULL) rec_link(r, pp);
        for (i = 0; i < o->nlinks; i++) rec_link(r, &o->links[i]);
      }
      s->rec = r;
    }
  }
  if (child != NULL) {
    /* The span itself is the value the child carries (tracectx.c reads
    ** its ids): one object fewer per span. */
    *child = tt_with_value(parent, &tt_trace_key, &s->hdr);
    if (*child == NULL) {
      tt_unref(s);
      return NULL;
    }
  }
  return s;
}

tt_span *tt_span_start(tt_ctx *parent, const char *name,
                       const tt_span_opts *o, tt_ctx **child) {
  tt_span_context psc;
  ensure_init();
  if (child != NULL) *child = NULL;
  if (parent == NULL) return NULL;
  return span_start(parent, tt_ctx_span_context(parent, &psc) ? &psc : NULL,
                    name, o, child, 0);
}

void tt_span_context_of(tt_span *s, tt_span_context *out) {
  if (s != NULL) *out = s->sc;
  else memset(out, 0, sizeof *out);
}

bool tt_span_recording(tt_span *s) {
  bool r;
  tt__lock(&s->mu);
  r = s->rec != NULL;
  tt__unlock(&s->mu);
  return r;
}

void tt_span_set_attr(tt_span *s, const tt_field *f) {
  if (s == NULL) return;
  tt__lock(&s->mu);
  if (s->rec != NULL) rec_attr(s->rec, f);
  tt__unlock(&s->mu);
}

void tt_span_add_link(tt_span *s, const tt_span_context *sc) {
  if (s == NULL || sc == NULL) return;
  tt__lock(&s->mu);
  if (s->rec != NULL) {
    rec_link(s->rec, sc);
  }
  tt__unlock(&s->mu);
}

static void enqueue(srec *r);

/* span_end is tt_span_end at 'end_ns' (Unix nanoseconds; 0: now). */
static bool span_end(tt_span *s, const char *error, size_t len,
                     uint64_t end_ns) {
  srec *r;
  if (s == NULL) return false;
  tt__lock(&s->mu);
  if (s->ended) {
    tt__unlock(&s->mu);
    return false;
  }
  s->ended = true;
  r = s->rec;
  s->rec = NULL;
  tt__unlock(&s->mu);
  if (r == NULL) return true;
  r->end_ns = end_ns != 0 ? end_ns : wall_ns();
  if (r->end_ns < r->start_ns) r->end_ns = r->start_ns;
  if (error != NULL) {
    r->status = 2;
    r->message = text_add(r, error, len == (size_t)-1 ? strlen(error) : len);
  }
  enqueue(r);
  return true;
}

bool tt_span_end(tt_span *s, const char *error, size_t len) {
  return span_end(s, error, len, 0);
}

/* }==================================================================== */


/* {====================================================================
** The queue and the exporter thread
** ===================================================================== */

/* The queue.  Workers push ended spans with a compare-and-swap, newest
** first, and count them; the exporter takes them all at once (an
** exchange) and puts them back in order.  So ending a span takes no lock,
** except to wake the exporter when the queue stops being empty or fills
** a batch.  'qstate' counts the spans queued or being exported and
** their bytes, against the bounds: one word, so that a span's end
** changes both with one atomic add (the count in the high half, the
** bytes, far below 4 GiB, in the low one). */
static srec *_Atomic queue;
static _Atomic uint64_t qstate;
#define Q_ONE ((uint64_t)1 << 32)
#define Q_LEN(q) ((size_t)((q) >> 32))
#define Q_BYTES(q) ((size_t)((q) & 0xffffffffu))
static _Atomic double first_at;           /* when the queue was last empty */
static _Atomic bool running;              /* the exporter; set under tmu */
static bool stopping;                     /* under tmu */
static pthread_t exporter;                /* under tmu */
/* A flush waits for an exporter's take made after it asked: that take
** holds every span ended before.  Generations, under tmu. */
static uint64_t flush_asked, flush_done;
static pthread_cond_t work_cv, done_cv;   /* exporter waits; flushers */
static pthread_once_t cv_once = PTHREAD_ONCE_INIT;

static void *exporter_main(void *arg);
static void at_exit_flush(void);
static void fork_prepare(void);
static void fork_parent(void);
static void fork_child(void);

/* cv_init runs once, before the first span is queued, without 'tmu'
** (fork takes the handlers' lock and then 'tmu': never the reverse). */
static void cv_init(void) {
  tt__cond_init(&work_cv);
  tt__cond_init(&done_cv);
  atexit(at_exit_flush);
  TT_CHECK(pthread_atfork(fork_prepare, fork_parent, fork_child));
}

/* A forked child has no exporter thread (only the forking thread
** survives a fork): it forgets the parent's, and what it had queued, so
** that its first span starts one of its own and a flush never waits for
** a thread that is not there.  'tmu' and then 'smu' are held across
** the fork. */
static void fork_prepare(void) {
  tt__lock(&tmu);
  tt__lock(&smu);
}

static void fork_parent(void) {
  tt__unlock(&smu);
  tt__unlock(&tmu);
}

static void fork_child(void) {
  tt__unlock(&smu);
  srec *r = atomic_exchange(&queue, NULL);
  while (r != NULL) {
    srec *next = r->next;
    rec_free(r);
    r = next;
  }
  atomic_store(&running, false);
  stopping = false;
  atomic_store(&qstate, 0);
  flush_done = flush_asked;
  tt__unlock(&tmu);
}

/* start starts the exporter thread if it is not running; false if it
** cannot. */
static bool start(void) {
  bool ok;
  tt__lock(&tmu);
  if (!atomic_load(&running) && !stopping &&
      tt__thread_start(&exporter, exporter_main, NULL, false) == 0)
    atomic_store(&running, true);
  ok = atomic_load(&running);
  tt__unlock(&tmu);
  return ok;
}

static void enqueue(srec *r) {
  size_t cap = (size_t)atomic_load_explicit(&lim_queue,
                                            memory_order_relaxed);
  size_t batch = (size_t)atomic_load_explicit(&lim_batch,
                                              memory_order_relaxed);
  uint64_t add = Q_ONE + r->bytes, q;
  size_t n;
  srec *head;
  TT_CHECK(pthread_once(&cv_once, cv_init));
  if (!atomic_load(&running) && !start()) goto drop;
  /* A record past the bound alone never counts (nor carries into the
  ** count's half). */
  if (r->bytes > MAX_QUEUED_BYTES) goto drop;
  q = atomic_fetch_add(&qstate, add) + add;
  n = Q_LEN(q);
  if (n > cap || Q_BYTES(q) > MAX_QUEUED_BYTES) {
    atomic_fetch_sub(&qstate, add);
    goto drop;
  }
  if (n == 1) atomic_store(&first_at, tt_now());
  head = atomic_load_explicit(&queue, memory_order_relaxed);
  do {
    r->next = head;
  } while (!atomic_compare_exchange_weak_explicit(
               &queue, &head, r, memory_order_release,
               memory_order_relaxed));
  atomic_fetch_add(&n_recorded, 1);
  /* The exporter sleeps without a deadline while the queue is empty, and
  ** until the oldest span's delay otherwise: wake it for a first span
  ** and for a full batch. */
  if (n == 1 || n == batch) {
    tt__lock(&tmu);
    TT_CHECK(pthread_cond_signal(&work_cv));
    tt__unlock(&tmu);
  }
  return;
drop:
  atomic_fetch_add(&n_dropped, 1);
  rec_free(r);
}

/* {====== OTLP JSON ====== */

/* The JSON of a span is written straight into the body's buffer: room
** for a bound on what it takes is reserved once (SPAN_ROOM, plus the
** strings and each attribute and link), and the parts are copied into
** it without a call per part, since a span is exported at the rate ops
** run.  Only a string that needs escapes and a fractional number go
** through text.c's writers (the room is reserved again after them). */
#define SPAN_ROOM 512     /* the fixed parts, numbers and ids included */
#define ATTR_ROOM 96      /* an attribute but its strings */
#define LINK_ROOM 128

typedef struct jw {
  tt_buf *b;
  char *p;                 /* the end of what is written, in the room */
  size_t room;             /* what each reservation asks for */
} jw;

/* jw_reserve reserves the room again at the end of what is written;
** false when memory runs out (the buffer is marked failed). */
static bool jw_reserve(jw *w) {
  w->p = tt__buf_room(w->b, w->room);
  return w->p != NULL;
}

/* jw_commit makes what is written part of the buffer. */
static void jw_commit(jw *w) {
  w->b->len = (size_t)(w->p - w->b->data);
  w->b->data[w->b->len] = '\0';
}

/* W_LIT writes a string literal (only a literal: its size is taken). */
#define W_LIT(w, s) w_add((w), ("" s ""), sizeof(s) - 1)

static void w_add(jw *w, const char *s, size_t n) {
  memcpy(w->p, s, n);
  w->p += n;
}

static const char pairs[] =
  "00010203040506070809101112131415161718192021222324252627282930313233"
  "34353637383940414243444546474849505152535455565758596061626364656667"
  "6869707172737475767778798081828384858687888990919293949596979899";

/* put8 writes 'v' (below 10^8) as 8 digits at 'd': two independent
** halves of two pairs each, in 32-bit arithmetic. */
static void put8(char *d, uint32_t v) {
  uint32_t a = v / 10000, b = v % 10000;
  memcpy(d, pairs + a / 100 * 2, 2);
  memcpy(d + 2, pairs + a % 100 * 2, 2);
  memcpy(d + 4, pairs + b / 100 * 2, 2);
  memcpy(d + 6, pairs + b % 100 * 2, 2);
}

/* w_u64 writes 'v' in decimal, 8 digits at a time (a span has two
** 19-digit times). */
static void w_u64(jw *w, uint64_t v) {
  char d[24];
  int i = (int)sizeof d;
  uint32_t x;
  while (v >= 100000000) {
    uint64_t q = v / 100000000;
    i -= 8;
    put8(d + i, (uint32_t)(v - q * 100000000));
    v = q;
  }
  x = (uint32_t)v;
  while (x >= 100) {
    i -= 2;
    memcpy(d + i, pairs + x % 100 * 2, 2);
    x /= 100;
  }
  if (x >= 10) {
    i -= 2;
    memcpy(d + i, pairs + x * 2, 2);
  } else {
    d[--i] = (char)('0' + x);
  }
  w_add(w, d + i, sizeof d - (size_t)i);
}

static void w_i64(jw *w, long long v) {
  if (v < 0) {
    W_LIT(w, "-");
    w_u64(w, (uint64_t)0 - (uint64_t)v);
  } else {
    w_u64(w, (uint64_t)v);
  }
}

/* w_hex writes "<hex of n bytes>" with its quotes. */
static void w_hex(jw *w, const uint8_t *b, size_t n) {
  static const char digits[] = "0123456789abcdef";
  size_t i;
  char *p = w->p;
  *p++ = '"';
  for (i = 0; i < n; i++) {
    *p++ = digits[b[i] >> 4];
    *p++ = digits[b[i] & 15];
  }
  *p++ = '"';
  w->p = p;
}

/* plain tells the bytes a JSON string holds as they are: printable
** ASCII but the quote and the backslash (one table look-up a byte). */
static bool plain(const char *s, size_t n) {
  static const uint8_t ok[256] = {
    ['\x20'] = 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,    /* '"' */
    ['0'] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    ['@'] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    ['P'] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,        /* '\\' */
    ['`'] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    ['p'] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,        /* DEL */
  };
  const unsigned char *p = (const unsigned char *)s;
  unsigned all = 1;
  size_t i;
  for (i = 0; i < n; i++) all &= ok[p[i]];
  return all != 0;
}

/* w_str writes a string of the record as a JSON string (its length is
** counted in the room); false when memory runs out. */
static bool w_str(jw *w, const char *s, size_t n) {
  if (plain(s, n)) {
    *w->p++ = '"';
    memcpy(w->p, s, n);
    w->p += n;
    *w->p++ = '"';
    return true;
  }
  jw_commit(w);
  tt_buf_json_str(w->b, s, n);
  return jw_reserve(w);
}

/* w_num writes a finite number as JSON, through text.c's writer. */
static bool w_num(jw *w, double v) {
  jw_commit(w);
  tt_buf_json_num(w->b, v);
  return jw_reserve(w);
}

static void json_attr_str(tt_buf *b, const char *k, const char *v) {
  tt_buf_adds(b, "{\"key\":");
  tt_buf_json_str(b, k, strlen(k));
  tt_buf_adds(b, ",\"value\":{\"stringValue\":");
  tt_buf_json_str(b, v, strlen(v));
  tt_buf_adds(b, "}}");
}

static bool json_attrs(jw *w, const srec *r) {
  const sattr *a = r->attrs;
  int i, n = r->nattrs;
  W_LIT(w, "[");
  for (i = 0; i < n; i++) {
    if (i > 0) W_LIT(w, ",");
    W_LIT(w, "{\"key\":");
    if (!w_str(w, rec_str(r, a[i].key), a[i].key.len)) return false;
    W_LIT(w, ",\"value\":{");
    switch (a[i].kind) {
      case TT_F_INT:
        W_LIT(w, "\"intValue\":\"");
        w_i64(w, a[i].i);
        W_LIT(w, "\"}}");
        break;
      case TT_F_NUM:
        /* JSON has no NaN or infinities; OTLP JSON spells them so. */
        if (isnan(a[i].n)) {
          W_LIT(w, "\"doubleValue\":\"NaN\"}}");
        } else if (isinf(a[i].n)) {
          if (a[i].n > 0) W_LIT(w, "\"doubleValue\":\"Infinity\"}}");
          else W_LIT(w, "\"doubleValue\":\"-Infinity\"}}");
        } else {
          W_LIT(w, "\"doubleValue\":");
          if (!w_num(w, a[i].n)) return false;
          W_LIT(w, "}}");
        }
        break;
      case TT_F_BOOL:
        if (a[i].i) W_LIT(w, "\"boolValue\":true}}");
        else W_LIT(w, "\"boolValue\":false}}");
        break;
      default:
        W_LIT(w, "\"stringValue\":");
        if (!w_str(w, rec_str(r, a[i].s), a[i].s.len)) return false;
        W_LIT(w, "}}");
    }
  }
  W_LIT(w, "]");
  return true;
}

/* json_span writes one span; false when memory runs out. */
static bool json_span(tt_buf *b, const srec *r) {
  jw w;
  int i;
  /* The record's text holds every string it writes, each once, and
  ** each gets its two quotes. */
  w.b = b;
  w.room = SPAN_ROOM + r->text.len + 2 * (2 * (size_t)r->nattrs + 2) +
           (size_t)r->nattrs * ATTR_ROOM + (size_t)r->nlinks * LINK_ROOM;
  if (!jw_reserve(&w)) return false;
  W_LIT(&w, "{\"traceId\":");
  w_hex(&w, r->sc.trace_id, 16);
  W_LIT(&w, ",\"spanId\":");
  w_hex(&w, r->sc.span_id, 8);
  if (r->has_parent) {
    W_LIT(&w, ",\"parentSpanId\":");
    w_hex(&w, r->parent, 8);
  }
  /* The trace flags, and whether the parent is remote (bit 9), which
  ** bit 8 says is known. */
  W_LIT(&w, ",\"flags\":");
  w_u64(&w, 0x100u | (r->parent_remote ? 0x200u : 0) | r->sc.flags);
  W_LIT(&w, ",\"name\":");
  if (!w_str(&w, rec_str(r, r->name), r->name.len)) return false;
  W_LIT(&w, ",\"kind\":");
  w_u64(&w, (uint64_t)r->kind);
  W_LIT(&w, ",\"startTimeUnixNano\":\"");
  w_u64(&w, r->start_ns);
  W_LIT(&w, "\",\"endTimeUnixNano\":\"");
  w_u64(&w, r->end_ns);
  W_LIT(&w, "\",\"attributes\":");
  if (!json_attrs(&w, r)) return false;
  if (r->dropped_attrs > 0) {
    W_LIT(&w, ",\"droppedAttributesCount\":");
    w_u64(&w, (uint64_t)r->dropped_attrs);
  }
  W_LIT(&w, ",\"links\":[");
  for (i = 0; i < r->nlinks; i++) {
    if (i > 0) W_LIT(&w, ",");
    W_LIT(&w, "{\"traceId\":");
    w_hex(&w, r->links[i].trace_id, 16);
    W_LIT(&w, ",\"spanId\":");
    w_hex(&w, r->links[i].span_id, 8);
    W_LIT(&w, ",\"attributes\":[]}");
  }
  W_LIT(&w, "]");
  if (r->dropped_links > 0) {
    W_LIT(&w, ",\"droppedLinksCount\":");
    w_u64(&w, (uint64_t)r->dropped_links);
  }
  if (r->status == 2) {
    W_LIT(&w, ",\"status\":{\"code\":2,\"message\":");
    if (!w_str(&w, rec_str(r, r->message), r->message.len)) return false;
    W_LIT(&w, "}}");
  } else {
    W_LIT(&w, ",\"status\":{\"code\":0}}");
  }
  jw_commit(&w);
  return true;
}

/* json_request writes one ExportTraceServiceRequest of the spans of
** 'batch'. */
static void json_request(tt_buf *b, const tcfg *c, tt_list *batch) {
  tt_list *l;
  size_t i;
  tt_buf_adds(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
  json_attr_str(b, "service.name", c->service);
  tt_buf_addc(b, ',');
  json_attr_str(b, "telemetry.sdk.name", "tether");
  tt_buf_addc(b, ',');
  json_attr_str(b, "telemetry.sdk.version", TT_TRACE_SDK_VERSION);
  for (i = 0; i < c->nres; i++) {
    tt_buf_addc(b, ',');
    json_attr_str(b, c->res_keys[i], c->res_values[i]);
  }
  tt_buf_adds(b, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"tether\","
                 "\"version\":\"" TT_TRACE_SDK_VERSION "\"},\"spans\":[");
  for (l = batch->next; l != batch; l = l->next) {
    if (l != batch->next) tt_buf_addc(b, ',');
    if (!json_span(b, tt_container_of(l, srec, link))) break;
  }
  tt_buf_adds(b, "]}]}]}");
}

/* }====== */

/* {====== Sending ====== */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static bool curl_ok;

static void curl_init(void) {
  curl_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

static size_t discard(char *p, size_t size, size_t n, void *ud) {
  (void)p;
  (void)ud;
  return size * n;
}

/* post sends one request body; true on a 2xx answer. */
static bool post(CURL **h, const tcfg *c, const tt_buf *body) {
  struct curl_slist *hl = NULL, *t;
  long code = 0;
  CURLcode rc;
  size_t i;
  TT_CHECK(pthread_once(&curl_once, curl_init));
  if (!curl_ok) return false;
  if (*h == NULL && (*h = curl_easy_init()) == NULL) return false;
  curl_easy_reset(*h);
  if ((t = curl_slist_append(hl, "Content-Type: application/json")) != NULL)
    hl = t;
  /* No "Expect: 100-continue" round trip before each body. */
  if ((t = curl_slist_append(hl, "Expect:")) != NULL) hl = t;
  for (i = 0; i < c->nheaders; i++)
    if ((t = curl_slist_append(hl, c->headers[i])) != NULL) hl = t;
  curl_easy_setopt(*h, CURLOPT_URL, c->endpoint);
  curl_easy_setopt(*h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(*h, CURLOPT_HTTPHEADER, hl);
  curl_easy_setopt(*h, CURLOPT_POST, 1L);
  curl_easy_setopt(*h, CURLOPT_POSTFIELDS, body->data);
  curl_easy_setopt(*h, CURLOPT_POSTFIELDSIZE_LARGE,
                   (curl_off_t)body->len);
  curl_easy_setopt(*h, CURLOPT_TIMEOUT_MS, (long)(c->timeout * 1000));
  curl_easy_setopt(*h, CURLOPT_WRITEFUNCTION, discard);
  curl_easy_setopt(*h, CURLOPT_PROTOCOLS_STR, "http,https");
  rc = curl_easy_perform(*h);
  if (rc == CURLE_OK) curl_easy_getinfo(*h, CURLINFO_RESPONSE_CODE, &code);
  curl_slist_free_all(hl);
  return rc == CURLE_OK && code >= 200 && code < 300;
}

/* write_line appends the body and a newline with one write. */
static bool write_line(const tcfg *c, tt_buf *body) {
  const char *p;
  size_t n;
  tt_buf_addc(body, '\n');
  if (body->failed) return false;
  p = body->data;
  n = body->len;
  while (n > 0) {
    ssize_t w = write(c->fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= (size_t)w;
  }
  return true;
}

/* export_batch sends the spans of 'batch' (then frees them); it runs on
** the exporter thread without any lock. */
static void export_batch(CURL **h, tt_buf *body, tcfg *c, tt_list *batch,
                         size_t n) {
  tt_list *l;
  srec *head = NULL, *tail = NULL;
  size_t room, kept = 0;
  bool ok = false;
  /* The body's buffer is the exporter's, kept from batch to batch. */
  body->len = 0;
  body->failed = false;
  if (c != NULL && (c->endpoint != NULL || c->fd >= 0)) {
    json_request(body, c, batch);
    if (!body->failed) {
      ok = true;
      if (c->fd >= 0) ok = write_line(c, body) && ok;
      if (c->endpoint != NULL) ok = post(h, c, body) && ok;
    }
  }
  if (body->failed) tt_buf_free(body);
  if (ok) {
    atomic_fetch_add(&n_exported, n);
  } else {
    atomic_fetch_add(&n_dropped, n);
    atomic_fetch_add(&n_failed, 1);
  }
  /* The records go back as spares, as many as there is room for. */
  room = spare_room();
  while ((l = tt_list_shift(batch)) != NULL) {
    srec *r = tt_container_of(l, srec, link);
    if (kept == room) {
      rec_destroy(r);
      continue;
    }
    rec_clear(r);
    r->next = head;
    if (head == NULL) tail = r;
    head = r;
    kept++;
  }
  rec_release(head, tail, kept);
}

/* }====== */

/* take moves every queued span onto 'list', oldest first. */
static void take(tt_list *list) {
  srec *r = atomic_exchange_explicit(&queue, NULL, memory_order_acquire);
  tt_list_init(list);
  /* Newest first on the stack: each goes in front of the one after. */
  for (; r != NULL; r = r->next) {
    r->link.next = list->next;
    r->link.prev = list;
    list->next->prev = &r->link;
    list->next = &r->link;
  }
}

/* export_all exports what 'list' holds, a batch at a time, then forgets
** it: the spans stop counting against the bounds. */
static void export_all(CURL **h, tt_buf *body, tt_list *list) {
  while (!tt_list_empty(list)) {
    tt_list batch;
    size_t n = 0, bytes = 0, want;
    tcfg *c;
    tt__lock(&tmu);
    c = cfg;
    if (c != NULL) atomic_fetch_add(&c->refs, 1);
    tt__unlock(&tmu);
    want = c != NULL ? (size_t)c->batch : DEF_BATCH;
    tt_list_init(&batch);
    while (n < want && !tt_list_empty(list)) {
      srec *r = tt_container_of(tt_list_shift(list), srec, link);
      bytes += r->bytes;
      tt_list_push(&batch, &r->link);
      n++;
    }
    export_batch(h, body, c, &batch, n);
    cfg_unref(c);
    atomic_fetch_sub(&qstate, Q_ONE * n + bytes);
  }
}

static void *exporter_main(void *arg) {
  CURL *h = NULL;
  tt_buf body = TT_BUF_INIT;
  (void)arg;
  tt__lock(&tmu);
  for (;;) {
    tt_list list;
    size_t n = Q_LEN(atomic_load(&qstate));
    size_t want = (size_t)atomic_load(&lim_batch);
    double delay = cfg != NULL ? cfg->delay : DEF_DELAY;
    uint64_t asked = flush_asked;
    bool flushing = asked != flush_done;
    if (n == 0 && !flushing) {
      if (stopping) break;
      tt__timedwait(&work_cv, &tmu, -1);
      continue;
    }
    if (!flushing && !stopping && n < want &&
        tt_now() < atomic_load(&first_at) + delay) {
      tt__timedwait(&work_cv, &tmu, atomic_load(&first_at) + delay);
      continue;
    }
    tt__unlock(&tmu);
    measure_offset();
    take(&list);
    atomic_store(&first_at, tt_now());
    export_all(&h, &body, &list);
    tt__lock(&tmu);
    /* A take after the flushes that were asked holds their spans. */
    if (flushing) {
      flush_done = asked;
      TT_CHECK(pthread_cond_broadcast(&done_cv));
    }
  }
  atomic_store(&running, false);
  TT_CHECK(pthread_cond_broadcast(&done_cv));
  tt__unlock(&tmu);
  if (h != NULL) curl_easy_cleanup(h);
  tt_buf_free(&body);
  return NULL;
}

int tt_trace_flush(double timeout) {
  double until = timeout < 0 ? -1 : tt_now() + timeout;
  uint64_t want;
  int rc = TT_OK;
  TT_CHECK(pthread_once(&cv_once, cv_init));
  tt__lock(&tmu);
  if (atomic_load(&running)) {
    want = ++flush_asked;
    TT_CHECK(pthread_cond_signal(&work_cv));
    while (atomic_load(&running) && flush_done < want) {
      if (!tt__timedwait(&done_cv, &tmu, until)) {
        rc = TT_ETIMEOUT;
        break;
      }
    }
  }
  tt__unlock(&tmu);
  return rc;
}

int tt_trace_shutdown(double timeout) {
  int rc = tt_trace_flush(timeout);
  bool join = false;
  pthread_t t;
  if (rc != TT_OK) return rc;
  TT_CHECK(pthread_once(&cv_once, cv_init));
  tt__lock(&tmu);
  if (atomic_load(&running) && !stopping) {
    stopping = true;
    join = true;
    t = exporter;
    TT_CHECK(pthread_cond_signal(&work_cv));
  }
  tt__unlock(&tmu);
  if (join) {
    TT_CHECK(pthread_join(t, NULL));
    tt__lock(&tmu);
    stopping = false;
    tt__unlock(&tmu);
  }
  return TT_OK;
}

/* at_exit_flush sends what is queued when the process exits without the
** module's close path (os.exit without closing the state); bounded by
** the export timeout, so that an unreachable collector cannot hold the
** exit for long. */
static void at_exit_flush(void) {
  double t = DEF_TIMEOUT;
  tt__lock(&tmu);
  if (cfg != NULL) t = cfg->timeout;
  tt__unlock(&tmu);
  tt_trace_flush(t < 5 ? t : 5);
}

void tt_trace_stats_get(tt_trace_stats *out) {
  out->recorded = atomic_load(&n_recorded);
  out->exported = atomic_load(&n_exported);
  out->dropped = atomic_load(&n_dropped);
  out->failed_exports = atomic_load(&n_failed);
  out->queued = Q_LEN(atomic_load(&qstate));
}

/* }==================================================================== */


/* {====================================================================
** Pool attempts, and metrics
** ===================================================================== */

/* mix is splitmix64's finalizer. */
static uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

static tt_ctx *pool_begin(const tt_event *ev, void **state, void *ud) {
  tt_span_opts so;
  tt_span_context sc, *psc = NULL;
  tt_ctx *child = NULL;
  uint8_t tid[16];
  uint64_t salt = (uint64_t)(uintptr_t)ud, hi, lo;
  int i;
  tt_field attrs[4] = {
    TT_FSTR("tether.pool", ev->pool_name),
    TT_FSTR("tether.op", ev->name),
    TT_FINT("tether.attempt", ev->attempt),
    TT_FSTR("tether.tenant", ev->tenant),
  };
  *state = NULL;
  /* The fast path: no tracing, no cost but this load. */
  if (!tt_trace_enabled()) return NULL;
  memset(&so, 0, sizeof so);
  so.kind = TT_SPAN_INTERNAL;
  so.attrs = attrs;
  so.nattrs = ev->tenant != NULL ? 4 : 3;
  /* An op is detached from its submitter: parent and link. */
  so.link_parent = true;
  if (tt_ctx_span_context(ev->ctx, &sc)) {
    psc = &sc;
  } else {
    /* No submitter's span: the attempts of the op still share one
    ** trace, whose id comes from the pool's salt and the op's id. */
    hi = mix(salt ^ mix(ev->id));
    lo = mix(hi ^ salt ^ 0x5bd1e995u);
    for (i = 0; i < 8; i++) {
      tid[i] = (uint8_t)(hi >> (56 - 8 * i));
      tid[8 + i] = (uint8_t)(lo >> (56 - 8 * i));
    }
    so.trace_id = tid;
  }
  /* The pool read the clock for the event: the span starts then. */
  *state = span_start(ev->ctx, psc, ev->name, &so, &child,
                      ev->at > 0 ? wall_of_mono(ev->at) : 0);
  return child;
}

/* span_finish is tt__span_finish at 'end_ns' (0: now). */
static void span_finish(tt_span *s, int rc, tt_obj *err, uint64_t end_ns) {
  const char *msg = NULL;
  char desc[512];
  if (s == NULL) return;
  if (rc != TT_OK) {
    if (err != NULL && err->type == &tt_error_type)
      msg = ((tt_error *)err)->message;
    else if (err != NULL && tt_describe(err, desc, sizeof desc) >= 0)
      msg = desc;
    if (msg == NULL) msg = tt_strerror(rc > 0 && rc < TT_NERRORS ? rc
                                                                  : TT_EFAILED);
  }
  span_end(s, msg, (size_t)-1, end_ns);
  tt_unref(s);
}

void tt__span_finish(tt_span *s, int rc, tt_obj *err) {
  span_finish(s, rc, err, 0);
}

tt_span *tt__span_work(tt_ctx *ctx, const char *name, bool detached,
                       const tt_field *attrs, size_t nattrs,
                       tt_ctx **child) {
  tt_span_opts so;
  *child = NULL;
  if (!tt_trace_enabled()) return NULL;
  memset(&so, 0, sizeof so);
  so.kind = TT_SPAN_INTERNAL;
  so.attrs = attrs;
  so.nattrs = nattrs;
  so.link_parent = detached;
  return tt_span_start(ctx, name, &so, child);
}

static void pool_end(void *state, int rc, tt_obj *err, void *ud) {
  /* The pool read the clock as the attempt's function returned. */
  double at = state != NULL ? tt__pool_fn_returned() : 0;
  (void)ud;
  span_finish(state, rc, err, at > 0 ? wall_of_mono(at) : 0);
}

tt_pool_hook tt_trace_pool_hook(void) {
  tt_pool_hook h;
  uint64_t salt;
  random_id((uint8_t *)&salt, sizeof salt);
  h.begin = pool_begin;
  h.end = pool_end;
  h.ud = (void *)(uintptr_t)salt;
  return h;
}

static const tt_metric_family trace_families[] = {
  {"tether_trace_spans_exported_total",
   "Spans the exporter delivered.", TT_METRIC_COUNTER},
  {"tether_trace_spans_dropped_total",
   "Spans lost: the export queue was full or an export failed.",
   TT_METRIC_COUNTER},
  {"tether_trace_export_failures_total",
   "Exports (batches) that failed.", TT_METRIC_COUNTER},
  {"tether_trace_spans_queued",
   "Spans waiting for the exporter.", TT_METRIC_GAUGE},
};

static void trace_collect(tt_metric_writer *w, int f, void *ud) {
  tt_trace_stats st;
  (void)ud;
  tt_trace_stats_get(&st);
  switch (f) {
    case 0: tt_metric_count(w, NULL, 0, st.exported); break;
    case 1: tt_metric_count(w, NULL, 0, st.dropped); break;
    case 2: tt_metric_count(w, NULL, 0, st.failed_exports); break;
    default: tt_metric_count(w, NULL, 0, st.queued); break;
  }
}

static void register_metrics(void) {
  tt_metric_source s;
  s.families = trace_families;
  s.nfamilies = (int)(sizeof trace_families / sizeof trace_families[0]);
  s.collect = trace_collect;
  s.ud = NULL;
  tt_metrics_register(&s);
}

/* }==================================================================== */
