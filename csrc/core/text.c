/*
** text.c -- a growable buffer and the JSON text every engine output is
** made of: log lines, metrics, spans and the admin page's data.
**
** JSON strings must stay valid whatever a user put in a name or an error
** message (quotes, newlines, NUL bytes, invalid UTF-8), so the escaper
** validates UTF-8 itself, after RFC 3629: each ill-formed byte becomes
** U+FFFD, one replacement per byte that cannot start or continue a
** well-formed sequence.
*/
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* {====================================================================
** Buffer
** ===================================================================== */

void tt__set_msg(char *msg, size_t len, const char *fmt, ...) {
  va_list ap;
  if (msg == NULL || len == 0) return;
  va_start(ap, fmt);
  vsnprintf(msg, len, fmt, ap);
  va_end(ap);
}

void tt_buf_init(tt_buf *b) {
  b->data = NULL;
  b->len = b->cap = 0;
  b->failed = false;
}

void tt_buf_free(tt_buf *b) {
  free(b->data);
  tt_buf_init(b);
}

/* reserve makes room for 'n' more bytes and the NUL; false (and 'failed'
** set) when memory runs out or the size would overflow. */
static bool reserve(tt_buf *b, size_t n) {
  size_t want, cap;
  char *d;
  if (b->failed) return false;
  if (n > SIZE_MAX / 2 - b->len - 1) {
    b->failed = true;
    return false;
  }
  want = b->len + n + 1;
  if (want <= b->cap) return true;
  cap = b->cap < 64 ? 64 : b->cap;
  while (cap < want) cap *= 2;
  d = realloc(b->data, cap);
  if (d == NULL) {
    b->failed = true;
    return false;
  }
  b->data = d;
  b->cap = cap;
  return true;
}

char *tt__buf_room(tt_buf *b, size_t n) {
  return reserve(b, n) ? b->data + b->len : NULL;
}

void tt_buf_add(tt_buf *b, const void *p, size_t n) {
  if (!reserve(b, n)) return;
  if (n > 0) memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
}

void tt_buf_adds(tt_buf *b, const char *s) { tt_buf_add(b, s, strlen(s)); }

void tt_buf_addc(tt_buf *b, char c) { tt_buf_add(b, &c, 1); }

void tt_buf_addf(tt_buf *b, const char *fmt, ...) {
  va_list ap;
  char small[128];
  int n;
  va_start(ap, fmt);
  n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->failed = true;
    return;
  }
  if ((size_t)n < sizeof small) {
    tt_buf_add(b, small, (size_t)n);
    return;
  }
  /* Too long for the stack: format again straight into the buffer. */
  if (!reserve(b, (size_t)n)) return;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

/* }==================================================================== */


/* {====================================================================
** JSON
** ===================================================================== */

/* utf8_len returns the length of the well-formed UTF-8 sequence at 's'
** (at most 'n' bytes available), or 0 if the first byte does not start
** one (RFC 3629, table 3-7 of the Unicode standard). */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  unsigned char lo = 0x80, hi = 0xBF;
  size_t len, i;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;          /* no overlong forms */
    else if (c == 0xED) hi = 0x9F;     /* no surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;          /* no overlong forms */
    else if (c == 0xF4) hi = 0x8F;     /* nothing above U+10FFFF */
  } else
    return 0;
  if (n < len) return 0;
  if (s[1] < lo || s[1] > hi) return 0;
  for (i = 2; i < len; i++)
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  return len;
}

void tt_buf_json_str(tt_buf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0, run = 0;
  if (s == NULL) {
    tt_buf_add(b, "null", 4);
    return;
  }
  tt_buf_addc(b, '"');
  while (i < n) {
    unsigned char c = p[i];
    size_t len;
    const char *esc = NULL;
    char u[6];
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      run++;
      i++;
      continue;
    }
    if (c >= 0x80 && (len = utf8_len(p + i, n - i)) > 0) {
      run += len;
      i += len;
      continue;
    }
    /* Flush the run of bytes that need no escape, then escape this one. */
    tt_buf_add(b, p + i - run, run);
    run = 0;
    switch (c) {
      case '"': esc = "\\\""; break;
      case '\\': esc = "\\\\"; break;
      case '\n': esc = "\\n"; break;
      case '\r': esc = "\\r"; break;
      case '\t': esc = "\\t"; break;
      case '\b': esc = "\\b"; break;
      case '\f': esc = "\\f"; break;
      default: break;
    }
    if (esc != NULL)
      tt_buf_adds(b, esc);
    else if (c < 0x20) {
      memcpy(u, "\\u00", 4);
      u[4] = hex[c >> 4];
      u[5] = hex[c & 15];
      tt_buf_add(b, u, 6);
    } else
      tt_buf_adds(b, "\\ufffd");       /* an ill-formed byte */
    i++;
  }
  tt_buf_add(b, p + i - run, run);
  tt_buf_addc(b, '"');
}

void tt_buf_prom_label(tt_buf *b, const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0, run = 0;
  if (s == NULL) return;
  while (i < n) {
    unsigned char c = p[i];
    size_t len;
    if (c != '"' && c != '\\' && c != '\n' && c < 0x80) {
      run++;
      i++;
      continue;
    }
    if (c >= 0x80 && (len = utf8_len(p + i, n - i)) > 0) {
      run += len;
      i += len;
      continue;
    }
    tt_buf_add(b, p + i - run, run);
    run = 0;
    if (c == '"') tt_buf_adds(b, "\\\"");
    else if (c == '\\') tt_buf_adds(b, "\\\\");
    else if (c == '\n') tt_buf_adds(b, "\\n");
    else tt_buf_adds(b, "\xef\xbf\xbd");   /* U+FFFD */
    i++;
  }
  tt_buf_add(b, p + i - run, run);
}

void tt_buf_json_num(tt_buf *b, double v) {
  if (isnan(v) || isinf(v))
    tt_buf_add(b, "null", 4);
  else if (v == floor(v) && fabs(v) < 9007199254740992.0)
    tt_buf_addf(b, "%.0f", v);
  else
    tt_buf_addf(b, "%.17g", v);
}

void tt_buf_rfc3339(tt_buf *b, double wall) {
  struct tm tm;
  time_t sec;
  long long total;
  int ms;
  if (!(wall >= 0) || wall > 253402300799.0) wall = 0;  /* year 9999 */
  /* Round to the millisecond once, so .247 never prints as .246. */
  total = llround(wall * 1000.0);
  sec = (time_t)(total / 1000);
  ms = (int)(total % 1000);
  gmtime_r(&sec, &tm);
  tt_buf_addf(b, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
              tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
              ms);
}

/* }==================================================================== */
