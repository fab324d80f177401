/*
** http.c -- HTTP servers on libmicrohttpd whose request contexts end when
** the client hangs up (DESIGN section 9).
**
** DESIGN.
**
** Threads.  libmicrohttpd (MHD) runs one internal polling thread (epoll)
** that accepts, reads requests, calls the access handler and writes
** responses.  Handlers run on the server's pool, as attached ops whose
** context is the request context itself (tt_submit_opts.attached).  One
** watcher thread per server waits on an epoll set of the sockets of
** suspended requests for EPOLLRDHUP, the only way to learn that a client
** gave up while MHD does not look at its socket (TOOLCHAIN.md section 2).
**
** A request's life.  The access handler's first call makes the request
** record (headers, query, remote address, id); later calls collect the
** body, up to 'max_body'.  Once the request is complete it is dispatched:
** its context is made, the connection is suspended (MHD_suspend_
** connection, on MHD's thread, before anyone else can see the request),
** its socket joins the watcher's set, and the handler is submitted to the
** pool.  Whoever commits the response (tt_http_res_send or the first
** tt_http_res_write on a worker, the end of the handler, a refusal) takes
** the socket out of the watcher's set and only then resumes the
** connection; MHD calls the access handler again, which queues the
** response.  A streamed response suspends the connection again from its
** content reader whenever it runs out of data (and the socket is watched
** again meanwhile); each write resumes it.  MHD's request-completed
** callback ends the connection's part; the handler's end ends the other;
** the later of the two reports FINISHED to observers.
**
** Hang-ups.  The watcher cancels the request context with
** &tt_http_client_gone but leaves the connection suspended: the handler
** sees its context end, and whatever it answers is still sent, since a
** client that only half-closed its side still reads the answer (as Go's
** server).  A connection that fails while a streamed response is being
** written counts as a hang-up too.
**
** Deadlines.  Each request context has the request timeout as its
** deadline.  The server keeps one deadline of its own in the timer heap,
** always earlier than a new request's (keeper_fire), so that a request's
** deadline is never the earliest one, whose arrival wakes the timer
** thread: without it, every request would cost that thread a wake-up.
**
** Watcher registrations.  An epoll event may still be in the watcher's
** hands after its socket left the set (and after the request is gone), so
** an event carries no pointer: its 64 bits are a slot index and the
** slot's generation, checked under the server's lock.
**
** Closing.  tt_http_close marks the server closed (no request registers
** or suspends after that), cancels the server's base context (every
** request context descends from it), marks every live request aborted
** and resumes the suspended ones (MHD must not be stopped with suspended
** connections: the access handler and the content reader end an aborted
** request's connection), then stops MHD and the watcher.
**
** Locks.  Each request has its own 'mu' for its response state; the
** server's 'mu' guards its list of live requests, 'wmu' the watcher's
** slots and epoll set; a request's 'mu' comes first, then either of the
** server's (never both at once).  Counters and the 'closed' and
** 'draining' flags are atomics.  MHD's suspend and resume are called under the
** request's lock (so that exactly one party resumes each suspension), and
** MHD's internal locks come after ours: MHD never calls back into this
** file while holding them.  Nothing here calls tt_cancel, an observer or
** MHD_destroy_response under a lock of ours.  'obs_mu' (recursive) guards
** the observers and is held while they run, with no other lock of ours.
** Immediate observers (metrics) run before them with no lock at all:
** their slots only ever grow, published with a release store.
** 'close_mu' serializes tt_http_close, which takes the others after it.
**
** Spans.  While tracing is on, a dispatched request gets a server span
** (kind SERVER, "METHOD path"), a child of the remote span its
** traceparent header names, or the root of a new trace; the handler's
** context is a child of the request context that carries it, so that the
** ops it submits are its children, and its cancellation is the request
** context's.  The span ends with FINISHED, with the status sent (ERROR
** for 5xx).  While tracing is off it costs one atomic load.
**
** Lifetime.  The object's reference count belongs to users; its last
** reference closes the server.  The memory lives on while internal
** references ('irefs') remain: the users' share and one per request
** record, so that a handler that outlives the server still finds it.
*/
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "internal.h"

#define DEF_MAX_BODY ((size_t)1 << 20)
#define DEF_MAX_INFLIGHT 1024
#define DEF_REQUEST_TIMEOUT 30.0
#define DEF_IDLE_TIMEOUT 30
#define STREAM_MAX ((size_t)1 << 20)   /* unsent bytes before write waits */
#define STREAM_BLOCK (32 * 1024)
#define WAKE_KEY UINT64_MAX            /* the watcher's eventfd */
#define MAX_SECRETS 32

/* The sentinel cause of a request whose client hung up. */
tt_error tt_http_client_gone = {{-1, &tt_error_type}, TT_ECLIENT_GONE,
                                "client gone", NULL, NULL, NULL, 0};

const tt_key tt_http_request_id_key = {NULL, "request_id", 10};

/* A watcher slot: the request whose socket is in the epoll set, and a
** generation that changes each time the slot is freed. */
typedef struct wslot {
  tt_http_req *req;        /* NULL when free; no reference (see unwatch) */
  uint32_t gen;
  uint32_t next_free;
} wslot;

typedef struct hobserver {
  int id;
  tt_http_observer fn;
  void *ud;
} hobserver;

struct tt_http_server {
  tt_obj hdr;
  _Atomic long irefs;      /* see "Lifetime" */
  pthread_mutex_t mu;
  pthread_mutex_t close_mu;

  /* Fixed at creation. */
  char *name;
  tt_pool *pool;
  tt_http_handler handler;
  void *ud;
  void (*ud_drop)(void *);
  size_t max_body;
  int max_inflight;
  double request_timeout;
  int retry_after;
  char retry_after_s[16];
  struct MHD_Daemon *d;
  int listen_fd;           /* MHD's */
  int quiesced_fd;         /* ours after MHD_quiesce_daemon, or -1 */
  char addr[80];
  tt_ctx *base;            /* with_cancel(shutdown or background) */
  tt_ctx *shutdown;        /* may be NULL */
  tt_afterfunc *shutdown_af;
  int epfd, evfd;
  pthread_t watcher;
  bool watcher_started;
  char idprefix[12];
  _Atomic uint64_t seq;

  /* Written under 'mu', read anywhere. */
  _Atomic bool closed;     /* no request registers or suspends */
  _Atomic bool draining;   /* shutdown: no new connections, 503s */

  /* Under 'mu'. */
  tt_list live;            /* of tt_http_req, from first call to FINISHED */
  tt_latch drained;        /* set once draining with nothing active */
  tt_tentry keeper;        /* see keeper_fire; holds an internal reference
                           ** while queued */
  bool keeper_queued;

  /* Under 'wmu', the watcher's lock (taken after a request's 'mu'). */
  pthread_mutex_t wmu;
  bool stopped;            /* MHD and the watcher are gone */
  wslot *slots;
  uint32_t nslots, capslots, free_slot;   /* free_slot: UINT32_MAX none */

  /* Counters (tt_http_stats), atomic: the hot paths take no lock for
  ** them. */
  _Atomic uint64_t requests, dispatched, rejected, client_gone;
  _Atomic uint64_t active, suspended, handlers;

  /* Under 'obs_mu'. */
  pthread_mutex_t obs_mu;
  hobserver *obs;
  int nobs, obs_cap, next_obs;
  _Atomic int nobs_atomic;

  /* Immediate observers (tt_http_observe_with): written under 'obs_mu'
  ** into slots that never change once published by 'nimm' (a release
  ** store), and called without any lock. */
  hobserver imm[TT_HTTP_MAX_IMMEDIATE];
  _Atomic int nimm;
};

/* A response header set by the handler. */
typedef struct rhdr {
  char *name, *value;
} rhdr;

struct tt_http_req {
  tt_obj hdr;
  pthread_mutex_t mu;
  pthread_cond_t cv;       /* writers waiting for room in 'stream' */
  tt_http_server *srv;     /* an internal reference */
  tt_list link;            /* in srv->live; under srv->mu */
  tt_list clink;           /* on tt_http_close's private list */
  bool listed;             /* under srv->mu */

  /* Fixed after the first call (the body: once dispatched). */
  char *method, *path;
  tt_http_pair *headers, *query;
  size_t nheaders, nquery;
  char *strings;           /* storage of the pairs */
  tt_buf body;
  char remote[INET6_ADDRSTRLEN + 10];
  char id[40];
  double started;
  int fd;
  bool head;               /* a HEAD request */
  int early;               /* status decided at the first call, or 0 */
  bool too_large;          /* the body passed max_body */
  tt_ctx *cctx;            /* the cancelable request context */
  tt_ctx *ctx;             /* cctx with the request's values */

  /* Under 'mu'. */
  struct MHD_Connection *conn;   /* NULL once MHD is done with it */
  bool dispatched;         /* handed to the pool */
  bool ran;                /* the handler started, or never will */
  bool handler_done;
  bool mhd_done;
  bool suspended;          /* suspended by us, not yet resumed */
  bool counted;            /* counts in st.suspended */
  bool aborted;            /* the server closed */
  bool client_gone;
  bool finished;           /* FINISHED reported */
  bool committed;          /* a response is decided */
  bool queued;             /* ... and handed to MHD */
  bool streaming, stream_end, waker;
  bool watching;
  uint64_t wkey;
  int status;              /* set by the handler; 0: 200 */
  int sent_status;         /* the committed status, or 0 */
  rhdr *rh;
  size_t nrh, caprh;
  struct MHD_Response *resp;   /* committed, not yet queued */
  tt_buf stream;           /* unsent chunk bytes */
  size_t stream_off;
  tt_obj *error;           /* the handler's error, for FINISHED */
  tt_span *span;           /* the server span, or NULL; ended at
                           ** FINISHED */
};

static void srv_destroy(tt_http_server *s);

static void srv_hold(tt_http_server *s) { atomic_fetch_add(&s->irefs, 1); }

static void srv_release(tt_http_server *s) {
  if (atomic_fetch_sub(&s->irefs, 1) == 1) srv_destroy(s);
}


/* {====================================================================
** Observers
** ===================================================================== */

int tt_http_observe(tt_http_server *s, tt_http_observer fn, void *ud) {
  return tt_http_observe_with(s, fn, ud, NULL);
}

int tt_http_observe_with(tt_http_server *s, tt_http_observer fn, void *ud,
                         const tt_http_observer_opts *o) {
  int id;
  if (s == NULL || fn == NULL) return -1;
  tt__lock(&s->obs_mu);
  if (o != NULL && o->immediate) {
    int n = atomic_load_explicit(&s->nimm, memory_order_relaxed);
    if (n == TT_HTTP_MAX_IMMEDIATE) {
      tt__unlock(&s->obs_mu);
      return -1;
    }
    id = ++s->next_obs;
    s->imm[n].id = id;
    s->imm[n].fn = fn;
    s->imm[n].ud = ud;
    atomic_store_explicit(&s->nimm, n + 1, memory_order_release);
    tt__unlock(&s->obs_mu);
    return id;
  }
  if (s->nobs == s->obs_cap) {
    int ncap = s->obs_cap == 0 ? 4 : s->obs_cap * 2;
    hobserver *no = realloc(s->obs, (size_t)ncap * sizeof *no);
    if (no == NULL) {
      tt__unlock(&s->obs_mu);
      return -1;
    }
    s->obs = no;
    s->obs_cap = ncap;
  }
  id = ++s->next_obs;
  s->obs[s->nobs].id = id;
  s->obs[s->nobs].fn = fn;
  s->obs[s->nobs].ud = ud;
  s->nobs++;
  atomic_store(&s->nobs_atomic, s->nobs);
  tt__unlock(&s->obs_mu);
  return id;
}

void tt_http_unobserve(tt_http_server *s, int id) {
  int i;
  if (s == NULL) return;
  tt__lock(&s->obs_mu);
  for (i = 0; i < s->nobs; i++) {
    if (s->obs[i].id == id) {
      memmove(&s->obs[i], &s->obs[i + 1],
              (size_t)(s->nobs - i - 1) * sizeof *s->obs);
      s->nobs--;
      break;
    }
  }
  atomic_store(&s->nobs_atomic, s->nobs);
  tt__unlock(&s->obs_mu);
}

/* emit calls the observers with an event about 'r'; no lock held. */
static void emit(tt_http_server *s, tt_http_req *r, int kind, int status,
                 bool gone, tt_obj *error) {
  tt_http_event ev;
  int i, nimm = atomic_load_explicit(&s->nimm, memory_order_acquire);
  if (nimm == 0 &&
      atomic_load_explicit(&s->nobs_atomic, memory_order_relaxed) == 0)
    return;
  memset(&ev, 0, sizeof ev);
  ev.kind = kind;
  ev.server = s;
  ev.server_name = s->name;
  ev.method = r->method;
  ev.path = r->path;
  ev.request_id = r->id;
  ev.status = status;
  ev.at = tt_now();
  ev.duration = ev.at - r->started;
  ev.client_gone = gone;
  ev.ctx = r->ctx;
  ev.error = error;
  for (i = 0; i < nimm; i++) s->imm[i].fn(&ev, s->imm[i].ud);
  if (atomic_load_explicit(&s->nobs_atomic, memory_order_relaxed) == 0)
    return;
  tt__lock(&s->obs_mu);
  /* Re-read the list each time: an observer may change it. */
  for (i = 0; i < s->nobs; i++) s->obs[i].fn(&ev, s->obs[i].ud);
  tt__unlock(&s->obs_mu);
}

/* }==================================================================== */


/* {====================================================================
** The watcher
** ===================================================================== */

/* watch_locked adds the request's socket to the watcher's set (request
** locked).  A failure leaves it unwatched: the request then just cannot
** learn of a hang-up. */
static void watch_locked(tt_http_req *r) {
  tt_http_server *s = r->srv;
  struct epoll_event ev;
  uint32_t idx;
  if (r->watching || r->fd < 0) return;
  tt__lock(&s->wmu);
  if (s->stopped) goto out;
  if (s->free_slot != UINT32_MAX) {
    idx = s->free_slot;
    s->free_slot = s->slots[idx].next_free;
  } else {
    if (s->nslots == s->capslots) {
      uint32_t ncap = s->capslots == 0 ? 64 : s->capslots * 2;
      wslot *ns = realloc(s->slots, (size_t)ncap * sizeof *ns);
      if (ns == NULL) goto out;
      s->slots = ns;
      s->capslots = ncap;
    }
    idx = s->nslots++;
    s->slots[idx].gen = 0;
  }
  s->slots[idx].req = r;
  r->wkey = ((uint64_t)s->slots[idx].gen << 32) | idx;
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLRDHUP | EPOLLONESHOT;
  ev.data.u64 = r->wkey;
  if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, r->fd, &ev) == 0) {
    r->watching = true;
  } else {
    s->slots[idx].req = NULL;
    s->slots[idx].gen++;
    s->slots[idx].next_free = s->free_slot;
    s->free_slot = idx;
  }
out:
  tt__unlock(&s->wmu);
}

/* unwatch_locked takes the socket out of the set (request locked); it
** must happen before the connection is resumed, after which MHD may close
** the socket and its number may be reused. */
static void unwatch_locked(tt_http_req *r) {
  tt_http_server *s = r->srv;
  uint32_t idx = (uint32_t)(r->wkey & 0xffffffffu);
  if (!r->watching) return;
  r->watching = false;
  tt__lock(&s->wmu);
  (void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, r->fd, NULL);
  s->slots[idx].req = NULL;
  s->slots[idx].gen++;
  s->slots[idx].next_free = s->free_slot;
  s->free_slot = idx;
  tt__unlock(&s->wmu);
}

/* hangup handles the watcher's event 'key': the request's client hung up
** (or half-closed its side). */
static void hangup(tt_http_server *s, uint64_t key) {
  uint32_t idx = (uint32_t)(key & 0xffffffffu);
  tt_http_req *r = NULL;
  tt_ctx *ctx = NULL;
  tt__lock(&s->wmu);
  if (idx < s->nslots && s->slots[idx].req != NULL &&
      s->slots[idx].gen == (uint32_t)(key >> 32))
    r = tt_ref(s->slots[idx].req);
  tt__unlock(&s->wmu);
  if (r == NULL) return;
  tt__lock(&r->mu);
  if (r->watching && r->wkey == key) {
    unwatch_locked(r);
    if (!r->client_gone) {
      r->client_gone = true;
      ctx = tt_ref(r->cctx);
      atomic_fetch_add(&s->client_gone, 1);
    }
  }
  tt__unlock(&r->mu);
  if (ctx != NULL) {
    tt_cancel(ctx, &tt_http_client_gone.hdr);
    tt_unref(ctx);
  }
  tt_unref(r);
}

static void *watcher_main(void *arg) {
  tt_http_server *s = arg;
  struct epoll_event evs[64];
  for (;;) {
    int i, n = epoll_wait(s->epfd, evs, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (i = 0; i < n; i++) {
      if (evs[i].data.u64 == WAKE_KEY) goto out;  /* the server stops */
      hangup(s, evs[i].data.u64);
    }
  }
out:
  return NULL;
}

/* }==================================================================== */


/* {====================================================================
** Request records
** ===================================================================== */

static void req_free(tt_obj *o) {
  tt_http_req *r = (tt_http_req *)o;
  size_t i;
  tt_http_server *s = r->srv;
  for (i = 0; i < r->nrh; i++) {
    free(r->rh[i].name);
    free(r->rh[i].value);
  }
  free(r->rh);
  free(r->headers);
  free(r->query);
  free(r->strings);
  free(r->method);
  free(r->path);
  tt_buf_free(&r->body);
  tt_buf_free(&r->stream);
  tt_unref(r->ctx);
  tt_unref(r->cctx);
  tt_unref(r->error);
  tt_unref(r->span);
  TT_CHECK(pthread_cond_destroy(&r->cv));
  TT_CHECK(pthread_mutex_destroy(&r->mu));
  free(r);
  srv_release(s);
}

static int req_describe(tt_obj *o, char *buf, size_t n) {
  tt_http_req *r = (tt_http_req *)o;
  return snprintf(buf, n, "tether.HttpRequest %s %s (%s)", r->method,
                  r->path, r->id);
}

const tt_type tt_http_req_type = {"tether.HttpRequest", req_free,
                                  req_describe, NULL};

/* What collect_pairs gathers in its two passes. */
typedef struct collect {
  tt_http_pair *pairs;
  char *p;                 /* next free byte of the string storage */
  size_t n, bytes;
  bool lower;
} collect;

static enum MHD_Result count_pair(void *cls, enum MHD_ValueKind kind,
                                  const char *key, const char *value) {
  collect *c = cls;
  (void)kind;
  c->n++;
  c->bytes += strlen(key) + 1 + (value != NULL ? strlen(value) + 1 : 0);
  return MHD_YES;
}

static enum MHD_Result fill_pair(void *cls, enum MHD_ValueKind kind,
                                 const char *key, const char *value) {
  collect *c = cls;
  size_t len = strlen(key), i;
  tt_http_pair *pr = &c->pairs[c->n++];
  (void)kind;
  for (i = 0; i < len; i++) {
    char ch = key[i];
    if (c->lower && ch >= 'A' && ch <= 'Z') ch = (char)(ch + 32);
    c->p[i] = ch;
  }
  c->p[len] = '\0';
  pr->name = c->p;
  c->p += len + 1;
  if (value != NULL) {
    len = strlen(value);
    memcpy(c->p, value, len + 1);
    pr->value = c->p;
    c->p += len + 1;
  } else {
    pr->value = NULL;
  }
  return MHD_YES;
}

/* collect_values copies the headers (names in lower case) and the query
** arguments of the connection into one allocation; false when out of
** memory. */
static bool collect_values(tt_http_req *r, struct MHD_Connection *c) {
  collect h, q;
  size_t total;
  memset(&h, 0, sizeof h);
  memset(&q, 0, sizeof q);
  MHD_get_connection_values(c, MHD_HEADER_KIND, count_pair, &h);
  MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, count_pair, &q);
  total = h.bytes + q.bytes + 1;
  r->strings = malloc(total);
  r->headers = calloc(h.n + 1, sizeof *r->headers);
  r->query = calloc(q.n + 1, sizeof *r->query);
  if (r->strings == NULL || r->headers == NULL || r->query == NULL)
    return false;
  h.pairs = r->headers;
  h.p = r->strings;
  h.lower = true;
  h.n = 0;
  MHD_get_connection_values(c, MHD_HEADER_KIND, fill_pair, &h);
  q.pairs = r->query;
  q.p = h.p;
  q.n = 0;
  MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, fill_pair, &q);
  r->nheaders = h.n;
  r->nquery = q.n;
  return true;
}

static void format_remote(tt_http_req *r, struct MHD_Connection *c) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  char ip[INET6_ADDRSTRLEN];
  snprintf(r->remote, sizeof r->remote, "?");
  if (ci == NULL || ci->client_addr == NULL) return;
  if (ci->client_addr->sa_family == AF_INET) {
    const struct sockaddr_in *a = (const void *)ci->client_addr;
    if (inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip) != NULL)
      snprintf(r->remote, sizeof r->remote, "%s:%u", ip,
               (unsigned)ntohs(a->sin_port));
  } else if (ci->client_addr->sa_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const void *)ci->client_addr;
    if (inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip) != NULL)
      snprintf(r->remote, sizeof r->remote, "[%s]:%u", ip,
               (unsigned)ntohs(a->sin6_port));
  }
}

/* req_new makes the record of a request at the access handler's first
** call; NULL when out of memory. */
static tt_http_req *req_new(tt_http_server *s, struct MHD_Connection *c,
                            const char *url, const char *method) {
  tt_http_req *r = calloc(1, sizeof *r);
  const union MHD_ConnectionInfo *ci;
  if (r == NULL) return NULL;
  tt_obj_init(&r->hdr, &tt_http_req_type);
  TT_CHECK(pthread_mutex_init(&r->mu, NULL));
  tt__cond_init(&r->cv);
  srv_hold(s);
  r->srv = s;
  tt_list_init(&r->link);
  tt_list_init(&r->clink);
  tt_buf_init(&r->body);
  tt_buf_init(&r->stream);
  r->started = tt_now();
  r->conn = c;
  r->method = tt__strdup(method);
  r->path = tt__strdup(url);
  if (r->method == NULL || r->path == NULL || !collect_values(r, c)) {
    tt_unref(r);
    return NULL;
  }
  r->head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
  ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
  r->fd = ci != NULL ? ci->connect_fd : -1;
  format_remote(r, c);
  snprintf(r->id, sizeof r->id, "%s-%llu", s->idprefix,
           (unsigned long long)(atomic_fetch_add(&s->seq, 1) + 1));
  return r;
}

const char *tt_http_req_method(tt_http_req *r) { return r->method; }
const char *tt_http_req_path(tt_http_req *r) { return r->path; }
const char *tt_http_req_remote(tt_http_req *r) { return r->remote; }
const char *tt_http_req_id(tt_http_req *r) { return r->id; }

const tt_http_pair *tt_http_req_query(tt_http_req *r, size_t *n) {
  *n = r->nquery;
  return r->query;
}

const tt_http_pair *tt_http_req_headers(tt_http_req *r, size_t *n) {
  *n = r->nheaders;
  return r->headers;
}

const char *tt_http_req_body(tt_http_req *r, size_t *len) {
  *len = r->body.len;
  return r->body.data != NULL ? r->body.data : "";
}

const char *tt_http_req_header(tt_http_req *r, const char *name) {
  size_t i;
  for (i = 0; i < r->nheaders; i++)
    if (strcmp(r->headers[i].name, name) == 0) return r->headers[i].value;
  return NULL;
}

/* }==================================================================== */


/* {====================================================================
** Committing responses (request locked unless said)
** ===================================================================== */

/* resume_locked resumes a connection we suspended; its socket leaves the
** watcher's set first. */
static void resume_locked(tt_http_req *r) {
  if (!r->suspended) return;
  unwatch_locked(r);
  r->suspended = false;
  MHD_resume_connection(r->conn);
}

/* uncount_locked ends the request's count among the suspended ones. */
static void uncount_locked(tt_http_req *r) {
  if (!r->counted) return;
  r->counted = false;
  atomic_fetch_sub(&r->srv->suspended, 1);
}

/* can_commit tells whether a response may still be committed. */
static bool can_commit(tt_http_req *r) {
  return !r->committed && r->conn != NULL && !r->aborted;
}

/* add_headers adds the handler's headers to 'resp', a text/plain
** content type if it set none and there is a body, and "Connection:
** close" while the server drains. */
static void add_headers(tt_http_req *r, struct MHD_Response *resp,
                        bool body) {
  size_t i;
  bool ctype = false;
  for (i = 0; i < r->nrh; i++) {
    if (strcasecmp(r->rh[i].name, "content-type") == 0) ctype = true;
    (void)MHD_add_response_header(resp, r->rh[i].name, r->rh[i].value);
  }
  if (!ctype && body)
    (void)MHD_add_response_header(resp, "Content-Type",
                                  "text/plain; charset=utf-8");
  if (atomic_load(&r->srv->draining))
    (void)MHD_add_response_header(resp, "Connection", "close");
}

/* commit_locked makes 'resp' the request's response and resumes the
** connection if it waits for one. */
static void commit_locked(tt_http_req *r, struct MHD_Response *resp,
                          int status) {
  r->committed = true;
  r->resp = resp;
  r->sent_status = status;
  uncount_locked(r);
  resume_locked(r);
}

/* simple_response makes a response of the server's own: a short text
** body, no cache, and Retry-After for 503s. */
static struct MHD_Response *simple_response(tt_http_server *s, int status,
                                            const char *body) {
  struct MHD_Response *resp = MHD_create_response_from_buffer(
      strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
  if (resp == NULL) return NULL;
  (void)MHD_add_response_header(resp, "Content-Type",
                                "text/plain; charset=utf-8");
  (void)MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
  (void)MHD_add_response_header(resp, "Cache-Control", "no-store");
  if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
    (void)MHD_add_response_header(resp, "Retry-After", s->retry_after_s);
  if (atomic_load(&s->draining) || atomic_load(&s->closed))
    (void)MHD_add_response_header(resp, "Connection", "close");
  return resp;
}

static const char *status_text(int status) {
  switch (status) {
    case 400: return "bad request\n";
    case 404: return "not found\n";
    case 413: return "request body too large\n";
    case 503: return "service unavailable\n";
    default: return "error\n";
  }
}

/* commit_simple_locked commits a response of the server's own. */
static void commit_simple_locked(tt_http_req *r, int status,
                                 const char *body) {
  struct MHD_Response *resp;
  if (!can_commit(r)) return;
  resp = simple_response(r->srv, status, body != NULL ? body
                                                        : status_text(status));
  if (resp == NULL) {
    /* Without memory for an answer, the connection is closed. */
    r->aborted = true;
    r->committed = true;
    uncount_locked(r);
    resume_locked(r);
    return;
  }
  commit_locked(r, resp, status);
}

/* queue_now queues a response of the server's own from MHD's thread
** (the access handler), at the first call or once the request is
** complete. */
static enum MHD_Result queue_now(tt_http_req *r, struct MHD_Connection *c,
                                 int status) {
  struct MHD_Response *resp =
      simple_response(r->srv, status, status_text(status));
  enum MHD_Result ret;
  if (resp == NULL) return MHD_NO;
  tt__lock(&r->mu);
  r->committed = true;
  r->queued = true;
  r->sent_status = status;
  tt__unlock(&r->mu);
  ret = MHD_queue_response(c, (unsigned)status, resp);
  MHD_destroy_response(resp);
  return ret;
}

/* }==================================================================== */


/* {====================================================================
** Streamed responses
** ===================================================================== */

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
  tt_http_req *r = cls;
  size_t avail;
  ssize_t n;
  (void)pos;
  tt__lock(&r->mu);
  if (r->aborted || r->conn == NULL) {
    tt__unlock(&r->mu);
    return MHD_CONTENT_READER_END_WITH_ERROR;
  }
  avail = r->stream.len - r->stream_off;
  if (avail > 0) {
    if (avail > max) avail = max;
    memcpy(buf, r->stream.data + r->stream_off, avail);
    r->stream_off += avail;
    if (r->stream_off == r->stream.len) {
      r->stream.len = r->stream_off = 0;
    } else if (r->stream_off >= STREAM_BLOCK &&
               r->stream_off >= r->stream.len / 2) {
      /* Writes may keep the buffer from ever emptying: what was sent
      ** goes, so that a long stream does not grow it without end. */
      r->stream.len -= r->stream_off;
      memmove(r->stream.data, r->stream.data + r->stream_off,
              r->stream.len);
      r->stream.data[r->stream.len] = '\0';
      r->stream_off = 0;
    }
    TT_CHECK(pthread_cond_broadcast(&r->cv));
    n = (ssize_t)avail;
  } else if (r->stream_end) {
    n = MHD_CONTENT_READER_END_OF_STREAM;
  } else {
    /* Nothing to send yet: wait, suspended, for the next write; the
    ** socket is watched meanwhile. */
    MHD_suspend_connection(r->conn);
    r->suspended = true;
    watch_locked(r);
    n = 0;
  }
  tt__unlock(&r->mu);
  return n;
}

static void stream_free(void *cls) { tt_unref(cls); }

/* wake_writers runs once the request context ends: writers waiting for
** room give up. */
static void wake_writers(void *arg) {
  tt_http_req *r = arg;
  tt__lock(&r->mu);
  TT_CHECK(pthread_cond_broadcast(&r->cv));
  tt__unlock(&r->mu);
  tt_unref(r);
}

static void unref_req(void *arg) { tt_unref(arg); }

/* start_stream_locked commits a streamed response. */
static int start_stream_locked(tt_http_req *r) {
  struct MHD_Response *resp = MHD_create_response_from_callback(
      MHD_SIZE_UNKNOWN, STREAM_BLOCK, stream_read, tt_ref(r), stream_free);
  if (resp == NULL) {
    tt_unref(r);
    return TT_ENOMEM;
  }
  add_headers(r, resp, true);
  r->streaming = true;
  commit_locked(r, resp, r->status != 0 ? r->status : 200);
  return TT_OK;
}

/* }==================================================================== */


/* {====================================================================
** The response functions
** ===================================================================== */

/* gone_code is what a response function reports once the connection
** cannot take a response. */
static int gone_code(tt_http_req *r) {
  if (r->aborted) return TT_ECLOSED;
  if (r->conn == NULL) return r->client_gone ? TT_ECLIENT_GONE : TT_ECLOSED;
  return TT_OK;
}

int tt_http_res_status(tt_http_req *r, int status) {
  int rc = TT_OK;
  if (status < 200 || status > 599) return TT_EINVAL;
  tt__lock(&r->mu);
  if (r->handler_done)
    rc = TT_ECLOSED;
  else if (r->committed)
    rc = TT_EINVAL;
  else
    r->status = status;
  tt__unlock(&r->mu);
  return rc;
}

/* is_token tells whether 's' is an HTTP token (RFC 9110 tchar). */
static bool is_token(const char *s) {
  static const char extra[] = "!#$%&'*+-.^_`|~";
  if (*s == '\0') return false;
  for (; *s != '\0'; s++) {
    unsigned char c = (unsigned char)*s;
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
          (c >= 'A' && c <= 'Z') || (c != 0 && strchr(extra, c) != NULL)))
      return false;
  }
  return true;
}

int tt_http_res_header(tt_http_req *r, const char *name,
                       const char *value) {
  rhdr *h;
  int rc = TT_OK;
  if (name == NULL || value == NULL || !is_token(name) ||
      strpbrk(value, "\r\n") != NULL ||
      strcasecmp(name, "content-length") == 0 ||
      strcasecmp(name, "transfer-encoding") == 0)
    return TT_EINVAL;
  tt__lock(&r->mu);
  if (r->handler_done || r->committed) {
    rc = r->handler_done ? TT_ECLOSED : TT_EINVAL;
  } else {
    if (r->nrh == r->caprh) {
      size_t ncap = r->caprh == 0 ? 8 : r->caprh * 2;
      rhdr *n = realloc(r->rh, ncap * sizeof *n);
      if (n == NULL) {
        tt__unlock(&r->mu);
        return TT_ENOMEM;
      }
      r->rh = n;
      r->caprh = ncap;
    }
    h = &r->rh[r->nrh];
    h->name = tt__strdup(name);
    h->value = tt__strdup(value);
    if (h->name == NULL || h->value == NULL) {
      free(h->name);
      free(h->value);
      rc = TT_ENOMEM;
    } else {
      r->nrh++;
    }
  }
  tt__unlock(&r->mu);
  return rc;
}

int tt_http_res_send(tt_http_req *r, const void *body, size_t len) {
  struct MHD_Response *resp;
  int rc;
  tt__lock(&r->mu);
  /* Misuse first: it is a bug whether or not the client is still
  ** there. */
  rc = r->handler_done ? TT_ECLOSED : r->committed ? TT_EINVAL
                                                   : gone_code(r);
  if (rc != TT_OK) {
    tt__unlock(&r->mu);
    return rc;
  }
  resp = MHD_create_response_from_buffer(len, (void *)body,
                                         MHD_RESPMEM_MUST_COPY);
  if (resp == NULL) {
    tt__unlock(&r->mu);
    return TT_ENOMEM;
  }
  add_headers(r, resp, len > 0);
  commit_locked(r, resp, r->status != 0 ? r->status : 200);
  tt__unlock(&r->mu);
  return TT_OK;
}

int tt_http_res_write(tt_http_req *r, const void *chunk, size_t len) {
  int rc;
  tt__lock(&r->mu);
  if (r->handler_done)
    rc = TT_ECLOSED;
  else if (r->stream_end || (r->committed && !r->streaming))
    rc = TT_EINVAL;
  else
    rc = gone_code(r);
  if (rc == TT_OK && !r->committed) rc = start_stream_locked(r);
  if (rc != TT_OK || len == 0 || r->head) {
    tt__unlock(&r->mu);
    return rc;
  }
  /* Wait while too much is unsent: until MHD takes some, the connection
  ** goes, or the request context ends (an after_func wakes us then). */
  while (r->stream.len - r->stream_off >= STREAM_MAX && r->conn != NULL &&
         !r->aborted && tt_ctx_err(r->cctx) == 0) {
    if (!r->waker) {
      /* Registered unlocked: it may run at once. */
      tt_afterfunc *af;
      r->waker = true;
      tt__unlock(&r->mu);
      af = tt_after_func(r->cctx, wake_writers, tt_ref(r), unref_req);
      if (af == NULL) tt_unref(r);
      tt_unref(af);
      tt__lock(&r->mu);
      if (af == NULL) break;
      continue;
    }
    TT_CHECK(pthread_cond_wait(&r->cv, &r->mu));
  }
  rc = gone_code(r);
  if (rc == TT_OK && tt_ctx_err(r->cctx) != 0 &&
      r->stream.len - r->stream_off >= STREAM_MAX)
    rc = tt_ctx_err(r->cctx);
  if (rc == TT_OK) {
    tt_buf_add(&r->stream, chunk, len);
    if (r->stream.failed) {
      r->stream.failed = false;
      rc = TT_ENOMEM;
    } else {
      resume_locked(r);
    }
  }
  tt__unlock(&r->mu);
  return rc;
}

int tt_http_res_finish(tt_http_req *r) {
  int rc;
  tt__lock(&r->mu);
  if (r->handler_done)
    rc = TT_ECLOSED;
  else if (r->stream_end || (r->committed && !r->streaming))
    rc = TT_EINVAL;
  else
    rc = gone_code(r);
  if (rc == TT_OK && !r->committed) rc = start_stream_locked(r);
  if (rc == TT_OK) {
    r->stream_end = true;
    resume_locked(r);
  }
  tt__unlock(&r->mu);
  return rc;
}

/* }==================================================================== */


/* {====================================================================
** The end of a request
** ===================================================================== */

/* end_span ends the request's server span with what was sent: the
** status (none when nothing was), whether the client hung up, and status
** ERROR for a 5xx answer, with the handler's (redacted) error as its
** message when there is one. */
static void end_span(tt_http_req *r, int status, bool gone) {
  const char *msg = NULL;
  char buf[32];
  tt_field f;
  if (status > 0) {
    f = (tt_field)TT_FINT("http.response.status_code", status);
    tt_span_set_attr(r->span, &f);
  }
  if (gone) {
    f = (tt_field)TT_FBOOL("tether.client_gone", true);
    tt_span_set_attr(r->span, &f);
  }
  if (status >= 500) {
    if (r->error != NULL && r->error->type == &tt_error_type)
      msg = ((tt_error *)r->error)->message;
    if (msg == NULL) {
      snprintf(buf, sizeof buf, "HTTP %d", status);
      msg = buf;
    }
  }
  tt_span_end(r->span, msg, (size_t)-1);
}

/* maybe_finished reports FINISHED once both the connection and the
** handler (if one was to run) are done with the request. */
static void maybe_finished(tt_http_req *r) {
  tt_http_server *s = r->srv;
  bool fire = false, gone;
  int status;
  tt__lock(&r->mu);
  if (!r->finished && r->mhd_done && (!r->dispatched || r->handler_done)) {
    r->finished = true;
    fire = true;
  }
  status = r->sent_status;
  gone = r->client_gone;
  tt__unlock(&r->mu);
  if (!fire) return;
  if (r->span != NULL) end_span(r, status, gone);
  emit(s, r, TT_HTTP_EV_FINISHED, status, gone, r->error);
  tt__lock(&s->mu);
  if (r->listed) {
    tt_list_remove(&r->link);
    r->listed = false;
    atomic_fetch_sub(&s->active, 1);
  }
  if (atomic_load(&s->draining) && atomic_load(&s->active) == 0)
    tt__latch_set(&s->drained);
  tt__unlock(&s->mu);
  tt_unref(r);  /* the live list's reference */
}

/* redact copies 's' into 'b' with each secret replaced. */
static void redact(tt_buf *b, const char *s, const char *const *sec,
                   const size_t *len, int n) {
  while (*s != '\0') {
    int i;
    bool hit = false;
    for (i = 0; i < n; i++) {
      if (len[i] > 0 && strncmp(s, sec[i], len[i]) == 0) {
        tt_buf_adds(b, "[redacted]");
        s += len[i];
        hit = true;
        break;
      }
    }
    if (!hit) tt_buf_addc(b, *s++);
  }
}

/* secrets lists the credentials of a request that must never reach a
** log: the Authorization and Cookie values, their credential part, and
** each cookie's value.  Longest first, so that a part never hides its
** whole.  The strings are copies in 'store'. */
static int secrets(tt_http_req *r, char *store, size_t cap,
                   const char **sec, size_t *len) {
  size_t i, used = 0;
  int n = 0, a, b;
  for (i = 0; i < r->nheaders && n < MAX_SECRETS; i++) {
    const char *v = r->headers[i].value, *p;
    if (v == NULL || (strcmp(r->headers[i].name, "authorization") != 0 &&
                      strcmp(r->headers[i].name, "cookie") != 0 &&
                      strcmp(r->headers[i].name, "proxy-authorization")
                          != 0))
      continue;
    sec[n] = v;
    len[n++] = strlen(v);
    if (r->headers[i].name[0] != 'c') {
      p = strchr(v, ' ');
      if (p != NULL && n < MAX_SECRETS) {
        while (*p == ' ') p++;
        sec[n] = p;
        len[n++] = strlen(p);
      }
      continue;
    }
    for (p = v; *p != '\0' && n < MAX_SECRETS;) {
      const char *eq = strchr(p, '='), *end;
      if (eq == NULL) break;
      end = strchr(eq, ';');
      if (end == NULL) end = eq + strlen(eq);
      if (end - eq - 1 >= 4 && used + (size_t)(end - eq) <= cap) {
        memcpy(store + used, eq + 1, (size_t)(end - eq - 1));
        sec[n] = store + used;
        len[n++] = (size_t)(end - eq - 1);
        used += (size_t)(end - eq);
      }
      p = *end == ';' ? end + 1 : end;
      while (*p == ' ') p++;
    }
  }
  for (a = 1; a < n; a++)
    for (b = a; b > 0 && len[b] > len[b - 1]; b--) {
      const char *ts = sec[b];
      size_t tl = len[b];
      sec[b] = sec[b - 1];
      len[b] = len[b - 1];
      sec[b - 1] = ts;
      len[b - 1] = tl;
    }
  return n;
}

/* redact_error returns a new reference to an error like 'err' (code,
** message, traceback) with the request's credentials replaced, and
** without its cause and value, which could hold them too.  The request's
** error is this one: its log line, the pool's line about the op, the
** events and spans all see it, and none of them a credential. */
static tt_obj *redact_error(tt_http_req *r, tt_obj *err) {
  tt_error *e = (err != NULL && err->type == &tt_error_type)
                    ? (tt_error *)err : NULL;
  const char *sec[MAX_SECRETS];
  size_t len[MAX_SECRETS];
  char store[4096], desc[512];
  tt_buf msg = TT_BUF_INIT, tb = TT_BUF_INIT;
  tt_error *out;
  int n = secrets(r, store, sizeof store, sec, len);
  if (e == NULL && err != NULL && tt_describe(err, desc, sizeof desc) < 0)
    desc[0] = '\0';
  redact(&msg, e != NULL ? e->message : err != NULL ? desc
                                                      : "handler failed",
         sec, len, n);
  if (e != NULL && e->traceback != NULL)
    redact(&tb, e->traceback, sec, len, n);
  out = tt_error_new(e != NULL ? e->code : TT_EFAILED,
                     msg.data != NULL && !msg.failed ? msg.data
                                                     : "handler failed",
                     NULL);
  if (out != NULL && tb.data != NULL && !tb.failed)
    out->traceback = tt__strdup(tb.data);
  tt_buf_free(&msg);
  tt_buf_free(&tb);
  return out != NULL ? &out->hdr : NULL;
}

/* log_failure writes the log line of a handler that failed ('err' is
** already redacted). */
static void log_failure(tt_http_req *r, tt_obj *err, int status) {
  tt_error *e = (err != NULL && err->type == &tt_error_type)
                    ? (tt_error *)err : NULL;
  tt_field f[] = {
    TT_FSTR("server", r->srv->name), TT_FSTR("method", r->method),
    TT_FSTR("path", r->path), TT_FSTR("request_id", r->id),
    TT_FINT("status", status),
    TT_FSTR("error", e != NULL ? e->message : "handler failed"),
    TT_FSTR("traceback", e != NULL && e->traceback != NULL ? e->traceback
                                                           : ""),
  };
  tt_log(TT_LOG_ERROR, "http handler failed", f, sizeof f / sizeof f[0]);
}

/* handler_end runs once the handler returned (or will never run): it
** answers what the handler left unanswered and ends the request
** context. */
static void handler_end(tt_http_req *r, bool failed, bool never) {
  tt_http_server *s = r->srv;
  int status;
  if (never) atomic_fetch_add(&s->rejected, 1);
  if (failed) {
    /* The line goes out before the answer does: a client that has its
    ** 500 can find the line. */
    tt__lock(&r->mu);
    status = can_commit(r) ? MHD_HTTP_INTERNAL_SERVER_ERROR : r->sent_status;
    tt__unlock(&r->mu);
    log_failure(r, r->error, status);
  }
  tt__lock(&r->mu);
  r->handler_done = true;
  if (never) {
    commit_simple_locked(r, MHD_HTTP_SERVICE_UNAVAILABLE, NULL);
  } else if (failed && can_commit(r)) {
    char body[48];
    snprintf(body, sizeof body, "%s\n", r->id);
    commit_simple_locked(r, MHD_HTTP_INTERNAL_SERVER_ERROR, body);
  } else if (can_commit(r)) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (resp != NULL) {
      add_headers(r, resp, false);
      commit_locked(r, resp, r->status != 0 ? r->status : 200);
    } else {
      commit_simple_locked(r, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
    }
  } else if (r->streaming && !r->stream_end) {
    r->stream_end = true;
    if (r->conn != NULL && !r->aborted) resume_locked(r);
  }
  tt__unlock(&r->mu);
  /* The handler is over: so is its context, as Go's when ServeHTTP
  ** returns (a client that hung up first keeps its cause). */
  tt_cancel(r->cctx, NULL);
  if (!never) atomic_fetch_sub(&s->handlers, 1);
  maybe_finished(r);
}

/* run_req is the pool task of a request: the handler, then its end. */
static int run_req(tt_ctx *ctx, void *arg, tt_obj **out) {
  tt_http_req *r = arg;
  tt_http_server *s = r->srv;
  tt_obj *err = NULL;
  int rc;
  tt__lock(&r->mu);
  r->ran = true;
  tt__unlock(&r->mu);
  atomic_fetch_add(&s->handlers, 1);
  rc = s->handler(ctx, r, s->ud, &err);
  if (rc != TT_OK) {
    tt_obj *clean;
    if (err == NULL) {
      tt_error *e = tt_error_for(rc);
      err = e != NULL ? &e->hdr : NULL;
    }
    /* Without memory for the clean copy, nothing of the original is
    ** kept: a credential never reaches a log. */
    clean = redact_error(r, err);
    tt_unref(err);
    err = clean;
    r->error = tt_ref(err);
  } else {
    tt_unref(err);  /* a handler's result means nothing */
    err = NULL;
  }
  handler_end(r, rc != TT_OK, false);
  *out = err;
  return rc;
}

/* drop_req is the drop of a request's task: a request whose handler
** never ran (the pool stopped it) is answered 503. */
static void drop_req(void *arg) {
  tt_http_req *r = arg;
  bool never;
  tt__lock(&r->mu);
  never = !r->ran;
  r->ran = true;
  tt__unlock(&r->mu);
  if (never) handler_end(r, false, true);
  tt_unref(r);
}

/* }==================================================================== */


/* {====================================================================
** libmicrohttpd's callbacks
** ===================================================================== */

const char *tt_http_method_label(const char *m) {
  static const char *const known[] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE",
    "PATCH", NULL
  };
  int i;
  if (m != NULL)
    for (i = 0; known[i] != NULL; i++)
      if (strcmp(m, known[i]) == 0) return known[i];
  return "OTHER";
}

tt_span *tt_http_req_span(tt_http_req *r) { return r->span; }

/* start_span starts the request's server span, a child of the remote
** span its context carries (if any), and makes the handler's context the
** child that carries it.  False when out of memory. */
static bool start_span(tt_http_server *s, tt_http_req *r) {
  const char *m = tt_http_method_label(r->method);
  bool other = strcmp(m, "OTHER") == 0;
  tt_buf name = TT_BUF_INIT;
  tt_span_opts so;
  tt_ctx *c = NULL;
  tt_field attrs[] = {
    TT_FSTR("http.request.method", other ? "_OTHER" : m),
    TT_FSTR("url.path", r->path),
    TT_FSTR("tether.server", s->name),
    TT_FSTR("tether.request_id", r->id),
    TT_FSTR("http.request.method_original", r->method),
  };
  /* OpenTelemetry's names: "GET /path", or "HTTP /path" for a method
  ** outside the standard ones, which is only an attribute. */
  tt_buf_adds(&name, other ? "HTTP" : m);
  tt_buf_addc(&name, ' ');
  tt_buf_adds(&name, r->path);
  memset(&so, 0, sizeof so);
  so.kind = TT_SPAN_SERVER;
  so.attrs = attrs;
  so.nattrs = other ? 5 : 4;
  r->span = name.failed ? NULL
                        : tt_span_start(r->ctx, name.data, &so, &c);
  tt_buf_free(&name);
  if (r->span == NULL) return false;
  tt_unref(r->ctx);
  r->ctx = c;
  return true;
}

/* request_ctx makes the request's contexts: the cancelable one under the
** server's base context, and the handler's, with the request id and the
** trace of a valid traceparent header.  False when out of memory. */
static bool request_ctx(tt_http_server *s, tt_http_req *r) {
  tt_bytes *id;
  tt_ctx *c;
  const char *tp;
  tt_span_context sc;
  r->cctx = s->request_timeout > 0
                ? tt_with_timeout(s->base, s->request_timeout, NULL)
                : tt_with_cancel(s->base);
  if (r->cctx == NULL) return false;
  id = tt_bytes_new(r->id, strlen(r->id));
  if (id == NULL) return false;
  r->ctx = tt_with_value(r->cctx, &tt_http_request_id_key, &id->hdr);
  tt_unref(id);
  if (r->ctx == NULL) return false;
  tp = tt_http_req_header(r, "traceparent");
  if (tp != NULL && tt_traceparent_parse(tp, strlen(tp), &sc) == TT_OK) {
    c = tt_with_span_context(r->ctx, &sc);
    if (c == NULL) return false;
    tt_unref(r->ctx);
    r->ctx = c;
  }
  /* The fast path: no tracing, no cost but this load. */
  if (tt_trace_enabled()) return start_span(s, r);
  return true;
}

/* reject answers 503 from the access handler. */
static enum MHD_Result reject(tt_http_server *s, tt_http_req *r,
                              struct MHD_Connection *c) {
  atomic_fetch_add(&s->rejected, 1);
  return queue_now(r, c, MHD_HTTP_SERVICE_UNAVAILABLE);
}

/* dispatch hands a complete request to its handler. */
static enum MHD_Result dispatch(tt_http_server *s, tt_http_req *r,
                               struct MHD_Connection *c) {
  tt_submit_opts so;
  tt_handle *h;
  int err = TT_OK;
  /* A request that arrived before a shutdown began (its body may still
  ** have been on its way) is served, as Go's Shutdown serves it: only the
  ** requests that arrive while draining get 503 (first_call). */
  if (atomic_load(&s->closed) ||
      atomic_load(&s->suspended) >= (uint64_t)s->max_inflight)
    return reject(s, r, c);
  if (!request_ctx(s, r)) return MHD_NO;
  memset(&so, 0, sizeof so);
  so.name = s->name;
  so.attached = true;
  tt__lock(&r->mu);
  /* Read under the request's lock: tt_http_close sets 'closed' before it
  ** takes each request's lock, so either it is seen here, or close finds
  ** this request suspended and resumes it. */
  if (atomic_load(&s->closed)) {
    tt__unlock(&r->mu);
    return MHD_NO;
  }
  atomic_fetch_add(&s->suspended, 1);
  atomic_fetch_add(&s->dispatched, 1);
  r->dispatched = true;
  r->counted = true;
  MHD_suspend_connection(c);
  r->suspended = true;
  watch_locked(r);
  tt__unlock(&r->mu);
  emit(s, r, TT_HTTP_EV_STARTED, 0, false, NULL);
  h = tt_pool_submit(s->pool, r->ctx, &so, run_req, tt_ref(r), drop_req,
                     &err);
  if (h == NULL) {
    /* A full pool (or a closed one): 503, and the request is over
    ** without a handler.  The pool is asked only now, once: a look
    ** before suspending would cost every request a second round on the
    ** pool's lock, to spare only refused ones a suspend and resume. */
    tt__lock(&r->mu);
    r->ran = true;
    tt__unlock(&r->mu);
    handler_end(r, false, true);
    tt_unref(r);  /* the task's reference, never taken */
  } else {
    tt_unref(h);
  }
  return MHD_YES;
}

/* first_call registers a new request and decides what needs no
** handler: malformed framing (400), a declared body over the limit
** (413), a draining server (503). */
static enum MHD_Result first_call(tt_http_server *s,
                                  struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  void **con_cls) {
  tt_http_req *r = req_new(s, c, url, method);
  size_t i, ncl = 0, nte = 0;
  const char *cl = NULL;
  bool draining;
  if (r == NULL) return MHD_NO;
  tt__lock(&s->mu);
  if (atomic_load(&s->closed)) {
    tt__unlock(&s->mu);
    tt_unref(r);
    return MHD_NO;
  }
  tt_list_push(&s->live, &r->link);
  r->listed = true;
  tt_ref(r);  /* the live list's */
  atomic_fetch_add(&s->requests, 1);
  atomic_fetch_add(&s->active, 1);
  draining = atomic_load(&s->draining);
  tt__unlock(&s->mu);
  *con_cls = r;  /* MHD's reference, until the request completes */
  for (i = 0; i < r->nheaders; i++) {
    if (strcmp(r->headers[i].name, "content-length") == 0) {
      ncl++;
      cl = r->headers[i].value;
    } else if (strcmp(r->headers[i].name, "transfer-encoding") == 0) {
      nte++;
    }
  }
  /* Both framings at once are how requests are smuggled past proxies. */
  if ((ncl > 0 && nte > 0) || ncl > 1 || nte > 1)
    r->early = MHD_HTTP_BAD_REQUEST;
  else if (cl != NULL && strtoull(cl, NULL, 10) > s->max_body)
    r->early = MHD_HTTP_CONTENT_TOO_LARGE;
  else if (draining)
    r->early = MHD_HTTP_SERVICE_UNAVAILABLE;
  if (r->early == 0) return MHD_YES;
  if (r->early == MHD_HTTP_SERVICE_UNAVAILABLE) return reject(s, r, c);
  return queue_now(r, c, r->early);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c,
                                 const char *url, const char *method,
                                 const char *version,
                                 const char *upload_data,
                                 size_t *upload_size, void **con_cls) {
  tt_http_server *s = cls;
  tt_http_req *r = *con_cls;
  struct MHD_Response *resp;
  enum MHD_Result ret;
  int status;
  bool aborted, answered;
  (void)version;
  if (r == NULL) return first_call(s, c, url, method, con_cls);
  tt__lock(&r->mu);
  aborted = r->aborted;
  answered = r->queued;
  resp = r->resp;
  status = r->sent_status;
  if (resp != NULL) {
    r->resp = NULL;
    r->queued = true;
  }
  tt__unlock(&r->mu);
  if (aborted) {
    if (resp != NULL) MHD_destroy_response(resp);
    return MHD_NO;
  }
  if (resp != NULL) {
    /* Resumed with the committed response. */
    ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
  }
  if (*upload_size > 0) {
    if (!r->too_large && r->early == 0) {
      if (r->body.len + *upload_size > r->srv->max_body) {
        r->too_large = true;
        tt_buf_free(&r->body);
        tt_buf_init(&r->body);
      } else {
        tt_buf_add(&r->body, upload_data, *upload_size);
        if (r->body.failed) return MHD_NO;
      }
    }
    *upload_size = 0;  /* taken (or dropped, past the limit) */
    return MHD_YES;
  }
  if (answered) return MHD_YES;  /* answered at the first call */
  /* A dispatched request is resumed only with its response. */
  if (r->dispatched) return MHD_NO;
  if (r->too_large) return queue_now(r, c, MHD_HTTP_CONTENT_TOO_LARGE);
  return dispatch(s, r, c);
}

static void on_completed(void *cls, struct MHD_Connection *c,
                         void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  tt_http_server *s = cls;
  tt_http_req *r = *con_cls;
  struct MHD_Response *resp;
  tt_ctx *ctx = NULL;
  (void)c;
  if (r == NULL) return;
  *con_cls = NULL;
  /* A connection that fails before its response went out (a streamed
  ** one, or one MHD could not finish) lost its client.  The context ends
  ** before the connection is marked gone below: a writer that wakes up
  ** to find it gone then finds the cause too. */
  tt__lock(&r->mu);
  if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK &&
      toe != MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN && !r->aborted &&
      !r->client_gone && (r->dispatched || toe ==
                          MHD_REQUEST_TERMINATED_CLIENT_ABORT)) {
    r->client_gone = true;
    if (r->cctx != NULL && !r->handler_done) ctx = tt_ref(r->cctx);
    atomic_fetch_add(&s->client_gone, 1);
  }
  tt__unlock(&r->mu);
  if (ctx != NULL) {
    tt_cancel(ctx, &tt_http_client_gone.hdr);
    tt_unref(ctx);
  }
  tt__lock(&r->mu);
  r->conn = NULL;
  r->mhd_done = true;
  resp = r->resp;
  r->resp = NULL;
  unwatch_locked(r);
  r->suspended = false;
  uncount_locked(r);
  TT_CHECK(pthread_cond_broadcast(&r->cv));
  tt__unlock(&r->mu);
  if (resp != NULL) MHD_destroy_response(resp);
  maybe_finished(r);
  tt_unref(r);  /* MHD's reference */
}

/* mhd_log sends libmicrohttpd's messages (a client's protocol errors,
** mostly) to the log at debug level. */
static void mhd_log(void *cls, const char *fmt, va_list ap) {
  tt_http_server *s = cls;
  char buf[512];
  size_t n;
  if (!tt_log_enabled(TT_LOG_DEBUG)) return;
  vsnprintf(buf, sizeof buf, fmt, ap);
  n = strlen(buf);
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = 0;
  {
    tt_field f[] = {TT_FSTR("server", s->name), TT_FSTR("detail", buf)};
    tt_log(TT_LOG_DEBUG, "http server message", f, 2);
  }
}

/* }==================================================================== */


/* {====================================================================
** Servers
** ===================================================================== */

/* keeper_fire keeps one deadline of the server's own in the timer heap,
** always earlier than any request's (it fires every half request
** timeout): a request's deadline then never becomes the earliest one,
** which would wake the timer thread for every request. */
static void keeper_fire(tt_tentry *e) {
  tt_http_server *s = tt_container_of(e, tt_http_server, keeper);
  bool again = false;
  tt__lock(&s->mu);
  if (!atomic_load(&s->closed))
    again = tt__timer_add(e, tt_now() + s->request_timeout / 2) == TT_OK;
  s->keeper_queued = again;
  tt__unlock(&s->mu);
  if (!again) srv_release(s);
}

static void keeper_start(tt_http_server *s) {
  bool queued;
  if (s->request_timeout <= 0) return;
  s->keeper.fire = keeper_fire;
  srv_hold(s);
  tt__lock(&s->mu);
  queued =
      tt__timer_add(&s->keeper, tt_now() + s->request_timeout / 2) == TT_OK;
  s->keeper_queued = queued;
  tt__unlock(&s->mu);
  if (!queued) srv_release(s);
}

/* keeper_stop takes the keeper out of the heap, if it is there and not
** firing (a firing one sees 'closed' and ends itself). */
static void keeper_stop(tt_http_server *s) {
  bool removed;
  tt__lock(&s->mu);
  removed = s->keeper_queued && tt__timer_del(&s->keeper);
  if (removed) s->keeper_queued = false;
  tt__unlock(&s->mu);
  if (removed) srv_release(s);
}

static void srv_free(tt_obj *o);

static int srv_describe(tt_obj *o, char *buf, size_t n) {
  tt_http_server *s = (tt_http_server *)o;
  bool closed = atomic_load(&s->closed);
  return snprintf(buf, n, "tether.HttpServer '%s' %s (%s)", s->name,
                  s->addr, closed ? "closed" : "serving");
}

const tt_type tt_http_server_type = {"tether.HttpServer", srv_free,
                                     srv_describe, NULL};

const char *tt_http_addr(tt_http_server *s) { return s->addr; }
const char *tt_http_name(tt_http_server *s) { return s->name; }

void tt_http_stats_get(tt_http_server *s, tt_http_stats *out) {
  out->requests = atomic_load(&s->requests);
  out->dispatched = atomic_load(&s->dispatched);
  out->rejected = atomic_load(&s->rejected);
  out->client_gone = atomic_load(&s->client_gone);
  out->active = atomic_load(&s->active);
  out->suspended = atomic_load(&s->suspended);
  out->handlers = atomic_load(&s->handlers);
}

/* parse_addr reads "HOST:PORT" into 'ss'. */
static bool parse_addr(const char *addr, struct sockaddr_storage *ss,
                       socklen_t *len) {
  char host[INET6_ADDRSTRLEN + 2];
  const char *colon = strrchr(addr, ':'), *hs = addr;
  size_t hl;
  char *end;
  unsigned long port;
  if (colon == NULL) return false;
  port = strtoul(colon + 1, &end, 10);
  if (colon[1] == '\0' || *end != '\0' || port > 65535) return false;
  hl = (size_t)(colon - addr);
  if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']') {
    hs = addr + 1;
    hl -= 2;
  }
  if (hl >= sizeof host) return false;
  memcpy(host, hs, hl);
  host[hl] = '\0';
  memset(ss, 0, sizeof *ss);
  if (hl == 0 || strcmp(host, "localhost") == 0)
    snprintf(host, sizeof host, "127.0.0.1");
  if (strchr(host, ':') != NULL) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
    if (hs == addr) return false;  /* IPv6 needs brackets */
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) return false;
    *len = sizeof *a;
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1) return false;
    *len = sizeof *a;
  }
  return true;
}

/* read_file reads a whole PEM file; NULL (and errno) on failure. */
static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  tt_buf b = TT_BUF_INIT;
  char chunk[4096];
  size_t n;
  if (f == NULL) return NULL;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) tt_buf_add(&b, chunk, n);
  fclose(f);
  if (b.failed || b.data == NULL) {
    tt_buf_free(&b);
    errno = b.failed ? ENOMEM : EINVAL;
    return NULL;
  }
  return b.data;
}

static void on_shutdown(void *arg) {
  tt_http_server *s = arg;
  tt_obj *cause = tt_ctx_cause(s->shutdown);
  tt_http_close(s, cause);
  tt_unref(cause);
  srv_release(s);  /* the after_func's reference */
}

static void shutdown_drop(void *arg) { srv_release(arg); }

/* start_daemon starts MHD with every signal blocked in the calling
** thread, so that its thread inherits the mask: signals belong to the
** program's own threads. */
static struct MHD_Daemon *start_daemon(tt_http_server *s,
                                       const struct sockaddr *sa,
                                       const char *cert, const char *key,
                                       int idle) {
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                   MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
  sigset_t all, old;
  struct MHD_Daemon *d;
  if (sa->sa_family == AF_INET6) flags |= MHD_USE_IPv6;
  if (cert != NULL) flags |= MHD_USE_TLS;
  sigfillset(&all);
  TT_CHECK(pthread_sigmask(SIG_SETMASK, &all, &old));
  if (cert != NULL)
    d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_access, s,
        MHD_OPTION_SOCK_ADDR, sa,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)idle,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_STRICT_FOR_CLIENT, 1,
        MHD_OPTION_HTTPS_MEM_CERT, cert,
        MHD_OPTION_HTTPS_MEM_KEY, key,
        MHD_OPTION_END);
  else
    d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_access, s,
        MHD_OPTION_SOCK_ADDR, sa,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)idle,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_STRICT_FOR_CLIENT, 1,
        MHD_OPTION_END);
  TT_CHECK(pthread_sigmask(SIG_SETMASK, &old, NULL));
  return d;
}

/* bound_addr writes the address the listening socket got. */
static void bound_addr(tt_http_server *s) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  char ip[INET6_ADDRSTRLEN];
  snprintf(s->addr, sizeof s->addr, "?");
  if (getsockname(s->listen_fd, (struct sockaddr *)&ss, &len) != 0) return;
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    snprintf(s->addr, sizeof s->addr, "%s:%u", ip,
             (unsigned)ntohs(a->sin_port));
  } else {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
    snprintf(s->addr, sizeof s->addr, "[%s]:%u", ip,
             (unsigned)ntohs(a->sin6_port));
  }
}

tt_http_server *tt_http_new(const tt_http_opts *o, int *err, char *msg,
                            size_t msglen) {
  tt_http_server *s;
  struct sockaddr_storage ss;
  socklen_t sslen;
  pthread_mutexattr_t ma;
  char *cert = NULL, *key = NULL;
  const union MHD_DaemonInfo *di;
  struct epoll_event ev;
  unsigned char rnd[4];
  int rc = TT_EINVAL, idle;
  if (o == NULL || o->pool == NULL || o->handler == NULL) {
    tt__set_msg(msg, msglen, "a pool and a handler are required");
    goto refuse;
  }
  if (!parse_addr(o->addr != NULL ? o->addr : "127.0.0.1:0", &ss, &sslen)) {
    tt__set_msg(msg, msglen, "bad address '%s' (expected 'HOST:PORT')",
            o->addr);
    goto refuse;
  }
  if ((o->tls_cert == NULL) != (o->tls_key == NULL) ||
      o->max_inflight < 0 || o->idle_timeout < 0 || o->retry_after < 0 ||
      o->request_timeout != o->request_timeout) {
    tt__set_msg(msg, msglen, "invalid options");
    goto refuse;
  }
  if (o->tls_cert != NULL) {
    cert = read_file(o->tls_cert);
    if (cert == NULL) {
      tt__set_msg(msg, msglen, "cannot read '%s': %s", o->tls_cert,
              strerror(errno));
      goto refuse;
    }
    key = read_file(o->tls_key);
    if (key == NULL) {
      tt__set_msg(msg, msglen, "cannot read '%s': %s", o->tls_key,
              strerror(errno));
      free(cert);
      goto refuse;
    }
  }
  rc = TT_ENOMEM;
  s = calloc(1, sizeof *s);
  if (s == NULL) goto refuse_tls;
  tt_obj_init(&s->hdr, &tt_http_server_type);
  atomic_init(&s->irefs, 1);
  TT_CHECK(pthread_mutex_init(&s->mu, NULL));
  TT_CHECK(pthread_mutex_init(&s->wmu, NULL));
  TT_CHECK(pthread_mutex_init(&s->close_mu, NULL));
  TT_CHECK(pthread_mutexattr_init(&ma));
  TT_CHECK(pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE));
  TT_CHECK(pthread_mutex_init(&s->obs_mu, &ma));
  TT_CHECK(pthread_mutexattr_destroy(&ma));
  tt__latch_init(&s->drained);
  tt_list_init(&s->live);
  s->free_slot = UINT32_MAX;
  s->epfd = s->evfd = s->listen_fd = s->quiesced_fd = -1;
  s->stopped = true;  /* until MHD and the watcher run */
  s->name = tt__strdup(o->name != NULL ? o->name : "http");
  s->pool = tt_ref(o->pool);
  s->handler = o->handler;
  s->ud = o->ud;
  s->max_body = o->max_body > 0 ? o->max_body : DEF_MAX_BODY;
  s->max_inflight = o->max_inflight > 0 ? o->max_inflight
                                        : DEF_MAX_INFLIGHT;
  s->request_timeout = o->request_timeout == 0 ? DEF_REQUEST_TIMEOUT
                                               : o->request_timeout;
  s->retry_after = o->retry_after > 0 ? o->retry_after : 1;
  snprintf(s->retry_after_s, sizeof s->retry_after_s, "%d", s->retry_after);
  idle = o->idle_timeout > 0 ? o->idle_timeout : DEF_IDLE_TIMEOUT;
  s->shutdown = tt_ref(o->shutdown);
  s->base = tt_with_cancel(o->shutdown != NULL ? o->shutdown
                                               : tt_background());
  if (s->name == NULL || s->base == NULL) goto unwind;
  if (tt_random_bytes(rnd, sizeof rnd) != TT_OK) {
    uint64_t x = tt__random();
    memcpy(rnd, &x, sizeof rnd);
  }
  tt_hex(rnd, sizeof rnd, s->idprefix);
  s->epfd = epoll_create1(EPOLL_CLOEXEC);
  s->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (s->epfd < 0 || s->evfd < 0) {
    rc = TT_ETHREAD;
    tt__set_msg(msg, msglen, "cannot create the watcher: %s", strerror(errno));
    goto unwind;
  }
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN;
  ev.data.u64 = WAKE_KEY;
  if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->evfd, &ev) != 0) {
    rc = TT_ETHREAD;
    goto unwind;
  }
  if (tt__thread_start(&s->watcher, watcher_main, s, false) != 0) {
    rc = TT_ETHREAD;
    tt__set_msg(msg, msglen, "cannot start the watcher thread");
    goto unwind;
  }
  s->watcher_started = true;
  s->stopped = false;
  s->d = start_daemon(s, (const struct sockaddr *)&ss, cert, key, idle);
  if (s->d == NULL) {
    rc = TT_ECLOSED;
    tt__set_msg(msg, msglen, "cannot serve on '%s'%s",
            o->addr != NULL ? o->addr : "127.0.0.1:0",
            cert != NULL ? " (check the certificate and the key)"
                         : " (address in use?)");
    goto unwind;
  }
  di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_LISTEN_FD);
  s->listen_fd = di != NULL ? di->listen_fd : -1;
  bound_addr(s);
  keeper_start(s);
  if (s->shutdown != NULL && tt_ctx_done(s->shutdown) != NULL) {
    srv_hold(s);
    s->shutdown_af = tt_after_func(s->shutdown, on_shutdown, s,
                                   shutdown_drop);
    if (s->shutdown_af == NULL) {
      srv_release(s);
      goto unwind;
    }
  }
  if (cert != NULL) {
    /* MHD keeps its own copies of the certificate and the key. */
    memset(key, 0, strlen(key));
    free(cert);
    free(key);
  }
  s->ud_drop = o->ud_drop;  /* from here on, the server owns 'ud' */
  if (err != NULL) *err = TT_OK;
  return s;
unwind:
  tt_http_close(s, NULL);
  tt_unref(s);
refuse_tls:
  if (key != NULL) memset(key, 0, strlen(key));
  free(cert);
  free(key);
refuse:
  if (err != NULL) *err = rc;
  return NULL;
}

void tt_http_close(tt_http_server *s, tt_obj *cause) {
  tt_list mine, *l;
  tt_error *own = NULL;
  uint64_t one = 1;
  tt__lock(&s->close_mu);
  tt__lock(&s->mu);
  if (atomic_load(&s->closed)) {
    tt__unlock(&s->mu);
    tt__unlock(&s->close_mu);
    return;
  }
  atomic_store(&s->closed, true);
  tt_list_init(&mine);
  for (l = s->live.next; l != &s->live; l = l->next) {
    tt_http_req *r = tt_container_of(l, tt_http_req, link);
    tt_list_push(&mine, &r->clink);
    tt_ref(r);
  }
  tt__unlock(&s->mu);
  /* Every suspended connection must be resumed before MHD stops (it
  ** aborts otherwise); the callbacks end those of aborted requests.
  ** Requests are aborted before their contexts end, so that a handler
  ** that wakes up finds its connection closed rather than answers. */
  for (l = mine.next; l != &mine; l = l->next) {
    tt_http_req *r = tt_container_of(l, tt_http_req, clink);
    tt__lock(&r->mu);
    r->aborted = true;
    if (r->conn != NULL) resume_locked(r);
    uncount_locked(r);
    TT_CHECK(pthread_cond_broadcast(&r->cv));
    tt__unlock(&r->mu);
  }
  if (cause == NULL) {
    own = tt_error_new(TT_ECLOSED, "http: server closed", NULL);
    cause = &own->hdr;
  }
  if (s->base != NULL) tt_cancel(s->base, cause);
  tt_unref(own);
  while ((l = tt_list_shift(&mine)) != NULL)
    tt_unref(tt_container_of(l, tt_http_req, clink));
  if (s->d != NULL) MHD_stop_daemon(s->d);
  s->d = NULL;
  if (s->quiesced_fd >= 0) close(s->quiesced_fd);
  s->quiesced_fd = -1;
  if (s->watcher_started) {
    ssize_t w;
    do w = write(s->evfd, &one, sizeof one);
    while (w < 0 && errno == EINTR);
    TT_CHECK(pthread_join(s->watcher, NULL));
    s->watcher_started = false;
  }
  tt__lock(&s->wmu);
  s->stopped = true;
  tt__unlock(&s->wmu);
  tt__lock(&s->mu);
  tt__latch_set(&s->drained);
  tt__unlock(&s->mu);
  if (s->shutdown_af != NULL) {
    tt_afterfunc_stop(s->shutdown_af);  /* if stopped, drop releases */
    tt_unref(s->shutdown_af);
    s->shutdown_af = NULL;
  }
  keeper_stop(s);
  tt__unlock(&s->close_mu);
}

int tt_http_shutdown(tt_http_server *s, tt_ctx *ctx, double timeout) {
  tt_case cs[2];
  int n = 1, r;
  bool first = false, idle;
  tt__lock(&s->mu);
  if (!atomic_load(&s->draining) && !atomic_load(&s->closed)) {
    atomic_store(&s->draining, true);
    first = true;
  }
  idle = atomic_load(&s->active) == 0;
  if (idle) tt__latch_set(&s->drained);
  tt__unlock(&s->mu);
  if (first) {
    /* Stop accepting; shutting the listening socket down makes new
    ** connections fail at once rather than wait in the backlog.  It is
    ** closed after MHD stops (its thread may still look at it). */
    tt__lock(&s->close_mu);
    if (s->d != NULL) {
      int fd = MHD_quiesce_daemon(s->d);
      if (fd >= 0) {
        s->quiesced_fd = fd;
        (void)shutdown(fd, SHUT_RDWR);
      }
    }
    tt__unlock(&s->close_mu);
  }
  memset(cs, 0, sizeof cs);
  cs[0].kind = TT_CASE_LATCH;
  cs[0].latch = &s->drained;
  if (ctx != NULL && tt_ctx_done(ctx) != NULL) {
    cs[1].kind = TT_CASE_LATCH;
    cs[1].latch = tt_ctx_done(ctx);
    n = 2;
  }
  r = tt_latch_is_set(&s->drained) ? 0 : tt_select(cs, n, false, timeout);
  if (r == 0 || tt_latch_is_set(&s->drained)) {
    tt_http_close(s, NULL);
    return TT_OK;
  }
  if (r == 1) return tt_ctx_err(ctx) != 0 ? tt_ctx_err(ctx) : TT_CANCELED;
  if (r == TT_SELECT_TIMEOUT) return TT_ETIMEOUT;
  if (r == TT_SELECT_INTERRUPTED) return TT_EINTR;
  return TT_EINVAL;
}

/* srv_free runs when the last user reference goes: the server closes. */
static void srv_free(tt_obj *o) {
  tt_http_server *s = (tt_http_server *)o;
  tt_http_close(s, NULL);
  srv_release(s);
}

/* srv_destroy frees the memory once the last request record went. */
static void srv_destroy(tt_http_server *s) {
  if (s->ud_drop != NULL) s->ud_drop(s->ud);
  if (s->epfd >= 0) close(s->epfd);
  if (s->evfd >= 0) close(s->evfd);
  tt_unref(s->base);
  tt_unref(s->shutdown);
  tt_unref(s->pool);
  free(s->slots);
  free(s->obs);
  free(s->name);
  tt__latch_destroy(&s->drained);
  TT_CHECK(pthread_mutex_destroy(&s->obs_mu));
  TT_CHECK(pthread_mutex_destroy(&s->close_mu));
  TT_CHECK(pthread_mutex_destroy(&s->wmu));
  TT_CHECK(pthread_mutex_destroy(&s->mu));
  free(s);
}

/* }==================================================================== */
