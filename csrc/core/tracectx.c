/*
** tracectx.c -- W3C Trace Context: the traceparent header, and the span
** identity a context carries.  Spans themselves, sampling and export
** build on this.
*/
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "internal.h"

/* {====================================================================
** Hex and random ids
** ===================================================================== */

void tt_hex(const uint8_t *p, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  size_t i;
  for (i = 0; i < n; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  out[2 * n] = '\0';
}

int tt_random_bytes(void *p, size_t n) {
  char *c = p;
  while (n > 0) {
    ssize_t r = getrandom(c, n, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return TT_EINVAL;
    }
    c += r;
    n -= (size_t)r;
  }
  return TT_OK;
}

/* unhex reads 'n' bytes of lower-case hex (2n characters) from 's'; false
** on any other character, upper case included, as the header demands. */
static bool unhex(const char *s, uint8_t *out, size_t n) {
  size_t i;
  for (i = 0; i < 2 * n; i++) {
    char c = s[i];
    int v;
    if (c >= '0' && c <= '9') v = c - '0';
    else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    else return false;
    if (i % 2 == 0) out[i / 2] = (uint8_t)(v << 4);
    else out[i / 2] |= (uint8_t)v;
  }
  return true;
}

static bool all_zero(const uint8_t *p, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (p[i] != 0) return false;
  return true;
}

/* }==================================================================== */


/* {====================================================================
** traceparent
** ===================================================================== */

int tt_traceparent_parse(const char *s, size_t n, tt_span_context *out) {
  uint8_t version;
  tt_span_context sc;
  while (n > 0 && (*s == ' ' || *s == '\t')) s++, n--;
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
  if (n < TT_TRACEPARENT_LEN) return TT_EINVAL;
  if (!unhex(s, &version, 1) || version == 0xff) return TT_EINVAL;
  /* Version 00 has exactly four fields; a later version may add fields
  ** after a dash, which a version-00 reader ignores. */
  if (version == 0 && n != TT_TRACEPARENT_LEN) return TT_EINVAL;
  if (n > TT_TRACEPARENT_LEN && s[TT_TRACEPARENT_LEN] != '-')
    return TT_EINVAL;
  if (s[2] != '-' || s[35] != '-' || s[52] != '-') return TT_EINVAL;
  if (!unhex(s + 3, sc.trace_id, 16) || !unhex(s + 36, sc.span_id, 8) ||
      !unhex(s + 53, &sc.flags, 1))
    return TT_EINVAL;
  if (all_zero(sc.trace_id, 16) || all_zero(sc.span_id, 8))
    return TT_EINVAL;
  sc.remote = true;
  *out = sc;
  return TT_OK;
}

void tt_traceparent_format(const tt_span_context *sc,
                           char out[TT_TRACEPARENT_LEN + 1]) {
  memcpy(out, "00-", 3);
  tt_hex(sc->trace_id, 16, out + 3);
  out[35] = '-';
  tt_hex(sc->span_id, 8, out + 36);
  out[52] = '-';
  tt_hex(&sc->flags, 1, out + 53);
}

/* }==================================================================== */


/* {====================================================================
** The span identity in a context
** ===================================================================== */

static void spanctx_free(tt_obj *o) { free(o); }

static int spanctx_describe(tt_obj *o, char *buf, size_t n) {
  char tp[TT_TRACEPARENT_LEN + 1];
  tt_traceparent_format(&((tt_spanctx *)o)->sc, tp);
  return snprintf(buf, n, "%s", tp);
}

const tt_type tt_spanctx_type = {"tether.SpanContext", spanctx_free,
                                 spanctx_describe, NULL};

/* The key is a static object that nothing else can name: no user value
** can shadow the trace by accident. */
static const tt_type trace_key_type = {"tether.TraceKey", NULL, NULL, NULL};
static tt_obj trace_key_obj = {-1, &trace_key_type};
const tt_key tt_trace_key = {&trace_key_obj, NULL, 0};

tt_ctx *tt_with_span_context(tt_ctx *parent, const tt_span_context *sc) {
  tt_spanctx *v;
  tt_ctx *c;
  if (parent == NULL || sc == NULL) return NULL;
  v = malloc(sizeof *v);
  if (v == NULL) return NULL;
  tt_obj_init(&v->hdr, &tt_spanctx_type);
  v->sc = *sc;
  c = tt_with_value(parent, &tt_trace_key, &v->hdr);
  tt_unref(v);
  return c;
}

bool tt_ctx_span_context(tt_ctx *c, tt_span_context *out) {
  tt_obj *v = NULL;
  if (c == NULL || !tt_ctx_value(c, &tt_trace_key, &v)) return false;
  /* A span started by trace.c is its own value: its ids never change. */
  if (v != NULL && v->type == &tt_span_type) {
    tt_span_context_of((tt_span *)v, out);
    tt_unref(v);
    return true;
  }
  if (v == NULL || v->type != &tt_spanctx_type) {
    tt_unref(v);
    return false;
  }
  *out = ((tt_spanctx *)v)->sc;
  tt_unref(v);
  return true;
}

/* }==================================================================== */
