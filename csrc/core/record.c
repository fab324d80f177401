/*
** record.c -- the wire format of durable stores: plain-data values and
** records (tether.h, "Durable stores").
**
** The format belongs to the stores alone: the in-memory transfer format
** of the Lua binding may change from one build to the next, but a record
** written today must still read back after an upgrade, in another
** process, on another machine.  So every record starts with a magic and a
** version, fields are tagged (unknown tags are skipped), numbers have a
** fixed byte order, and a CRC-32 at the end tells a damaged record from a
** valid one before anything in it is trusted.
**
** Decoding never trusts a length: every read is checked against the end
** of the buffer, nesting is bounded, and a record that fails any check is
** refused with the reason, which a drainer turns into a dead letter.
*/
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define MAGIC "TTRC"
#define MAGIC_LEN 4

/* Field tags of a record (version 1). */
enum {
  F_POOL = 1, F_NAME, F_FN, F_ARGS, F_TENANT, F_TENANT_KEY, F_TRACE,
  F_PRIORITY, F_RETRY, F_TIMEOUT, F_DEADLINE, F_ATTEMPT, F_SPILLED_AT
};

/* {====================================================================
** Numbers
** ===================================================================== */

static void put_u64le(tt_buf *b, uint64_t x) {
  unsigned char c[8];
  int i;
  for (i = 0; i < 8; i++) c[i] = (unsigned char)(x >> (8 * i));
  tt_buf_add(b, c, 8);
}

static uint64_t get_u64le(const unsigned char *p) {
  uint64_t x = 0;
  int i;
  for (i = 0; i < 8; i++) x |= (uint64_t)p[i] << (8 * i);
  return x;
}

static void put_f64(tt_buf *b, double v) {
  uint64_t x;
  memcpy(&x, &v, sizeof x);
  put_u64le(b, x);
}

static double get_f64(const unsigned char *p) {
  uint64_t x = get_u64le(p);
  double v;
  memcpy(&v, &x, sizeof v);
  return v;
}

/* crc32 is the CRC-32 of zlib and Ethernet (reflected, 0xEDB88320). */
static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
  int k, j;
  for (k = 0; k < 256; k++) {
    uint32_t v = (uint32_t)k;
    for (j = 0; j < 8; j++) v = (v & 1) ? 0xEDB88320u ^ (v >> 1) : v >> 1;
    crc_table[k] = v;
  }
}

static uint32_t crc32(const unsigned char *p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  size_t i;
  TT_CHECK(pthread_once(&crc_once, crc_init));
  for (i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

/* }==================================================================== */


/* {====================================================================
** Wire values
** ===================================================================== */

void tt_wire_varint(tt_buf *b, uint64_t x) {
  unsigned char c[10];
  int n = 0;
  do {
    c[n] = (unsigned char)(x & 0x7F);
    x >>= 7;
    if (x != 0) c[n] |= 0x80;
    n++;
  } while (x != 0);
  tt_buf_add(b, c, (size_t)n);
}

void tt_wire_nil(tt_buf *b) { tt_buf_addc(b, TT_W_NIL); }

void tt_wire_bool(tt_buf *b, bool v) {
  tt_buf_addc(b, v ? TT_W_TRUE : TT_W_FALSE);
}

void tt_wire_int(tt_buf *b, int64_t v) {
  tt_buf_addc(b, TT_W_INT);
  put_u64le(b, (uint64_t)v);
}

void tt_wire_num(tt_buf *b, double v) {
  tt_buf_addc(b, TT_W_FLT);
  put_f64(b, v);
}

void tt_wire_str(tt_buf *b, const char *s, size_t n) {
  tt_buf_addc(b, TT_W_STR);
  tt_wire_varint(b, n);
  tt_buf_add(b, s, n);
}

void tt_wire_table(tt_buf *b, uint64_t npairs) {
  tt_buf_addc(b, TT_W_TABLE);
  tt_wire_varint(b, npairs);
}

/* A reader over a byte range; 'bad' holds the first reason to refuse. */
typedef struct rd {
  const unsigned char *p, *end;
  const char *bad;
} rd;

static bool rd_varint(rd *r, uint64_t *out) {
  uint64_t x = 0;
  int shift = 0;
  while (r->p < r->end && shift < 64) {
    unsigned char c = *r->p++;
    x |= (uint64_t)(c & 0x7F) << shift;
    if (!(c & 0x80)) {
      *out = x;
      return true;
    }
    shift += 7;
  }
  r->bad = "truncated or overlong varint";
  return false;
}

static bool rd_skip(rd *r, uint64_t n) {
  if ((uint64_t)(r->end - r->p) < n) {
    r->bad = "truncated value";
    return false;
  }
  r->p += n;
  return true;
}

/* check_value walks one value; tables nest at most TT_WIRE_MAXDEPTH.
** Iterative over a small explicit stack of remaining counts, so a hostile
** record cannot overflow the C stack. */
static bool check_value(rd *r) {
  uint64_t left[TT_WIRE_MAXDEPTH + 1];
  int depth = 0;
  left[0] = 1;
  while (depth >= 0) {
    int tag;
    bool key;
    if (left[depth] == 0) {
      depth--;
      continue;
    }
    /* Inside a table, items alternate key, value: an even count left
    ** means a key comes next. */
    key = depth > 0 && left[depth] % 2 == 0;
    left[depth]--;
    if (r->p >= r->end) {
      r->bad = "truncated value";
      return false;
    }
    tag = *r->p++;
    if (key && tag == TT_W_NIL) {
      r->bad = "nil table key";
      return false;
    }
    switch (tag) {
      case TT_W_NIL: case TT_W_FALSE: case TT_W_TRUE:
        break;
      case TT_W_INT: case TT_W_FLT:
        if (!rd_skip(r, 8)) return false;
        break;
      case TT_W_STR: {
        uint64_t n;
        if (!rd_varint(r, &n) || !rd_skip(r, n)) return false;
        break;
      }
      case TT_W_TABLE: {
        uint64_t n;
        if (!rd_varint(r, &n)) return false;
        if (n > (uint64_t)(r->end - r->p) / 2) {
          r->bad = "table longer than the record";
          return false;
        }
        if (depth + 1 > TT_WIRE_MAXDEPTH) {
          r->bad = "tables nested too deep";
          return false;
        }
        left[++depth] = n * 2;
        break;
      }
      default:
        r->bad = "unknown value tag";
        return false;
    }
  }
  return true;
}

static void set_why(char *why, size_t n, const char *fmt, const char *s) {
  if (why != NULL && n > 0) snprintf(why, n, fmt, s);
}

int tt_wire_check(const void *p, size_t n, uint64_t *count, char *why,
                  size_t whylen) {
  rd r;
  uint64_t k, i;
  r.p = p;
  r.end = r.p + n;
  r.bad = NULL;
  if (!rd_varint(&r, &k)) goto bad;
  if (k > n) {
    r.bad = "more values than bytes";
    goto bad;
  }
  for (i = 0; i < k; i++)
    if (!check_value(&r)) goto bad;
  if (r.p != r.end) {
    r.bad = "bytes after the last value";
    goto bad;
  }
  if (count != NULL) *count = k;
  return TT_OK;
bad:
  set_why(why, whylen, "%s", r.bad != NULL ? r.bad : "malformed values");
  return TT_EINVAL;
}

/* }==================================================================== */


/* {====================================================================
** Records
** ===================================================================== */

static void field(tt_buf *b, int tag, const void *p, size_t n) {
  tt_buf_addc(b, (char)tag);
  tt_wire_varint(b, n);
  tt_buf_add(b, p, n);
}

static void field_str(tt_buf *b, int tag, const char *s) {
  if (s != NULL) field(b, tag, s, strlen(s));
}

static void field_f64(tt_buf *b, int tag, double v) {
  tt_buf_addc(b, (char)tag);
  tt_wire_varint(b, 8);
  put_f64(b, v);
}

int tt_record_encode(const tt_record *r, tt_buf *out) {
  size_t start = out->len;
  uint32_t crc;
  unsigned char c[4];
  int i;
  if (r == NULL || r->fn == NULL || r->args == NULL) return TT_EINVAL;
  tt_buf_add(out, MAGIC, MAGIC_LEN);
  tt_buf_addc(out, TT_RECORD_VERSION);
  field_str(out, F_POOL, r->pool);
  field_str(out, F_NAME, r->name);
  field_str(out, F_FN, r->fn);
  field(out, F_ARGS, r->args, r->args_len);
  if (r->tenant != NULL) field(out, F_TENANT, r->tenant, r->tenant_len);
  field_str(out, F_TENANT_KEY, r->tenant_key);
  if (r->has_trace) {
    char tp[TT_TRACEPARENT_LEN + 1];
    tt_traceparent_format(&r->trace, tp);
    field(out, F_TRACE, tp, TT_TRACEPARENT_LEN);
  }
  field_str(out, F_PRIORITY, r->priority);
  if (r->has_retry) {
    tt_buf_addc(out, F_RETRY);
    tt_wire_varint(out, 4 * 8 + 8);
    put_u64le(out, (uint64_t)(r->retry.attempts < 0 ? 0
                                                   : r->retry.attempts));
    put_f64(out, r->retry.backoff);
    put_f64(out, r->retry.factor);
    put_f64(out, r->retry.max_backoff);
    put_f64(out, r->retry.jitter);
  }
  if (r->timeout != 0) field_f64(out, F_TIMEOUT, r->timeout);
  if (r->deadline != 0) field_f64(out, F_DEADLINE, r->deadline);
  if (r->attempt > 0) {
    tt_buf_addc(out, F_ATTEMPT);
    tt_wire_varint(out, 8);
    put_u64le(out, (uint64_t)r->attempt);
  }
  field_f64(out, F_SPILLED_AT, r->spilled_at);
  if (out->failed) return TT_ENOMEM;
  crc = crc32((const unsigned char *)out->data + start, out->len - start);
  for (i = 0; i < 4; i++) c[i] = (unsigned char)(crc >> (8 * i));
  tt_buf_add(out, c, 4);
  return out->failed ? TT_ENOMEM : TT_OK;
}

/* A field found while decoding: where its bytes are. */
typedef struct span {
  const unsigned char *p;
  size_t n;
  bool set;
} span;

/* copy_str copies a span into the block at '*cur' as a C string; a
** string field with a NUL inside is refused. */
static const char *copy_str(char **cur, const span *s) {
  char *d = *cur;
  if (!s->set) return NULL;
  memcpy(d, s->p, s->n);
  d[s->n] = '\0';
  *cur += s->n + 1;
  return d;
}

static bool has_nul(const span *s) {
  return s->set && memchr(s->p, '\0', s->n) != NULL;
}

static bool finite_nonneg(double v) { return v == v && v >= 0 && v < 1e300; }

tt_record *tt_record_decode(const void *buf, size_t n, char *why,
                            size_t whylen) {
  const unsigned char *p = buf;
  span f[F_SPILLED_AT + 1];
  rd r;
  tt_record *out;
  char *cur;
  size_t total = sizeof *out;
  uint32_t want, got;
  int i;
  memset(f, 0, sizeof f);
  if (p == NULL || n < MAGIC_LEN + 1 + 4 || memcmp(p, MAGIC, MAGIC_LEN)) {
    set_why(why, whylen, "%s", "not a tether record (bad magic)");
    return NULL;
  }
  if (p[MAGIC_LEN] != TT_RECORD_VERSION) {
    char v[16];
    snprintf(v, sizeof v, "%d", p[MAGIC_LEN]);
    set_why(why, whylen, "record format version %s is not supported", v);
    return NULL;
  }
  want = 0;
  for (i = 0; i < 4; i++) want |= (uint32_t)p[n - 4 + (size_t)i] << (8 * i);
  got = crc32(p, n - 4);
  if (want != got) {
    set_why(why, whylen, "%s", "bad checksum (the record is damaged)");
    return NULL;
  }
  r.p = p + MAGIC_LEN + 1;
  r.end = p + n - 4;
  r.bad = NULL;
  while (r.p < r.end) {
    int tag = *r.p++;
    uint64_t len;
    if (!rd_varint(&r, &len)) break;
    if ((uint64_t)(r.end - r.p) < len) {
      r.bad = "truncated field";
      break;
    }
    if (tag >= 1 && tag <= F_SPILLED_AT) {
      f[tag].p = r.p;
      f[tag].n = (size_t)len;
      f[tag].set = true;
    }
    r.p += len;
  }
  if (r.bad != NULL) {
    set_why(why, whylen, "%s", r.bad);
    return NULL;
  }
  if (!f[F_FN].set || !f[F_ARGS].set) {
    set_why(why, whylen, "%s", "record without a function or arguments");
    return NULL;
  }
  for (i = 1; i <= F_SPILLED_AT; i++) {
    bool text = i == F_POOL || i == F_NAME || i == F_FN ||
                i == F_TENANT_KEY || i == F_TRACE || i == F_PRIORITY;
    if (text && has_nul(&f[i])) {
      set_why(why, whylen, "%s", "string field with a NUL byte");
      return NULL;
    }
  }
  if ((f[F_TIMEOUT].set && f[F_TIMEOUT].n != 8) ||
      (f[F_DEADLINE].set && f[F_DEADLINE].n != 8) ||
      (f[F_SPILLED_AT].set && f[F_SPILLED_AT].n != 8) ||
      (f[F_ATTEMPT].set && f[F_ATTEMPT].n != 8) ||
      (f[F_RETRY].set && f[F_RETRY].n != 40) ||
      (f[F_TRACE].set && f[F_TRACE].n != TT_TRACEPARENT_LEN)) {
    set_why(why, whylen, "%s", "field of the wrong size");
    return NULL;
  }
  if (tt_wire_check(f[F_ARGS].p, f[F_ARGS].n, NULL, why, whylen) != TT_OK)
    return NULL;
  for (i = 1; i <= F_SPILLED_AT; i++)
    if (f[i].set) total += f[i].n + 1;
  out = calloc(1, total);
  if (out == NULL) {
    set_why(why, whylen, "%s", "not enough memory");
    return NULL;
  }
  cur = (char *)(out + 1);
  out->pool = copy_str(&cur, &f[F_POOL]);
  out->name = copy_str(&cur, &f[F_NAME]);
  out->fn = copy_str(&cur, &f[F_FN]);
  out->args = copy_str(&cur, &f[F_ARGS]);
  out->args_len = f[F_ARGS].n;
  out->tenant = copy_str(&cur, &f[F_TENANT]);
  out->tenant_len = f[F_TENANT].n;
  out->tenant_key = copy_str(&cur, &f[F_TENANT_KEY]);
  out->priority = copy_str(&cur, &f[F_PRIORITY]);
  if (f[F_TRACE].set) {
    if (tt_traceparent_parse((const char *)f[F_TRACE].p, f[F_TRACE].n,
                             &out->trace) != TT_OK) {
      free(out);
      set_why(why, whylen, "%s", "malformed trace context");
      return NULL;
    }
    out->has_trace = true;
  }
  if (f[F_RETRY].set) {
    const unsigned char *q = f[F_RETRY].p;
    uint64_t att = get_u64le(q);
    out->has_retry = true;
    out->retry.attempts = att > 1000000 ? 1000000 : (int)att;
    out->retry.backoff = get_f64(q + 8);
    out->retry.factor = get_f64(q + 16);
    out->retry.max_backoff = get_f64(q + 24);
    out->retry.jitter = get_f64(q + 32);
    if (!finite_nonneg(out->retry.backoff) ||
        !finite_nonneg(out->retry.factor) ||
        !finite_nonneg(out->retry.max_backoff) ||
        !(out->retry.jitter >= 0 && out->retry.jitter <= 1)) {
      free(out);
      set_why(why, whylen, "%s", "invalid retry policy");
      return NULL;
    }
  }
  if (f[F_TIMEOUT].set) out->timeout = get_f64(f[F_TIMEOUT].p);
  if (f[F_DEADLINE].set) out->deadline = get_f64(f[F_DEADLINE].p);
  if (f[F_SPILLED_AT].set) out->spilled_at = get_f64(f[F_SPILLED_AT].p);
  if (f[F_ATTEMPT].set) {
    uint64_t a = get_u64le(f[F_ATTEMPT].p);
    out->attempt = a > 1000000 ? 1000000 : (int)a;
  }
  if (!(out->timeout == out->timeout) || out->timeout < 0 ||
      !(out->deadline == out->deadline) ||
      !(out->spilled_at == out->spilled_at)) {
    free(out);
    set_why(why, whylen, "%s", "invalid time field");
    return NULL;
  }
  return out;
}

int tt_record_module(const char *fn, char *out, size_t n) {
  const char *colon;
  size_t len;
  if (fn == NULL) return -1;
  colon = strrchr(fn, ':');
  if (colon == NULL || colon == fn || colon[1] == '\0') return -1;
  len = (size_t)(colon - fn);
  if (len + 1 > n) return -1;
  memcpy(out, fn, len);
  out[len] = '\0';
  return (int)len;
}

/* }==================================================================== */
