/*
** test_text.c -- the text buffer and JSON strings (text.c), log records
** (log.c) and W3C trace context (tracectx.c).
*/
#include <math.h>

#include "harness.h"

/* json returns 's' (n bytes) as a JSON string, in a static buffer. */
static const char *json(const char *s, size_t n) {
  static char out[256];
  tt_buf b = TT_BUF_INIT;
  tt_buf_json_str(&b, s, n);
  snprintf(out, sizeof out, "%s", b.failed ? "<failed>" : b.data);
  tt_buf_free(&b);
  return out;
}

#define JSON_IS(lit, want) CHECK(strcmp(json(lit, sizeof lit - 1), want) == 0)

TEST(buf_grows_and_formats) {
  tt_buf b = TT_BUF_INIT;
  int i;
  for (i = 0; i < 1000; i++) tt_buf_addf(&b, "%d,", i);
  CHECK(!b.failed);
  CHECK(strncmp(b.data, "0,1,2,", 6) == 0);
  CHECK_EQ(b.data[b.len], 0);
  tt_buf_addf(&b, "%300s", "x");          /* longer than the stack copy */
  CHECK_EQ(b.data[b.len - 1], 'x');
  CHECK_EQ(strlen(b.data), b.len);
  tt_buf_free(&b);
  CHECK(b.data == NULL && b.len == 0);
}

TEST(json_escapes_quotes_controls_and_nul) {
  JSON_IS("plain", "\"plain\"");
  JSON_IS("a\"b\\c", "\"a\\\"b\\\\c\"");
  JSON_IS("l1\nl2\r\t", "\"l1\\nl2\\r\\t\"");
  JSON_IS("nul\0byte", "\"nul\\u0000byte\"");
  JSON_IS("\x01\x1f", "\"\\u0001\\u001f\"");
  CHECK(strcmp(json(NULL, 0), "null") == 0);
}

TEST(json_keeps_good_utf8_and_replaces_bad_bytes) {
  JSON_IS("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
          "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
  JSON_IS("\xff", "\"\\ufffd\"");                  /* never a lead byte */
  JSON_IS("\xc0\xaf", "\"\\ufffd\\ufffd\"");       /* overlong */
  JSON_IS("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"");  /* surrogate */
  JSON_IS("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
  JSON_IS("ab\xe2\x82", "\"ab\\ufffd\\ufffd\"");  /* truncated at the end */
}

TEST(json_numbers_and_times) {
  tt_buf b = TT_BUF_INIT;
  tt_buf_json_num(&b, 42);
  tt_buf_addc(&b, ' ');
  tt_buf_json_num(&b, 0.25);
  tt_buf_addc(&b, ' ');
  tt_buf_json_num(&b, NAN);
  tt_buf_addc(&b, ' ');
  tt_buf_rfc3339(&b, 1796019233.247);
  CHECK(strcmp(b.data, "42 0.25 null 2026-11-30T06:13:53.247Z") == 0);
  tt_buf_free(&b);
}

static tt_buf got;
static int got_level;

static void capture(const tt_log_record *r, void *ud) {
  (void)ud;
  got_level = r->level;
  tt_buf_add(&got, r->line, r->len);
}

TEST(log_records_are_json_lines_at_or_above_the_level) {
  tt_field f[] = {TT_FSTR("pool", "p\"1"), TT_FINT("id", 7),
                  TT_FNUM("duration_ms", 1.5), TT_FBOOL("ok", 0),
                  TT_FSTRN("error", "a\0b", 3), TT_FSTR("tenant", NULL)};
  tt_buf_init(&got);
  tt_log_set_sink(capture, NULL);
  CHECK_EQ(tt_log_get_level(), TT_LOG_INFO);
  tt_log(TT_LOG_DEBUG, "hidden", NULL, 0);
  CHECK_EQ(got.len, 0);
  CHECK(!tt_log_enabled(TT_LOG_DEBUG) && tt_log_enabled(TT_LOG_WARN));
  tt_log(TT_LOG_WARN, "op failed", f, sizeof f / sizeof f[0]);
  CHECK_EQ(got_level, TT_LOG_WARN);
  CHECK(strncmp(got.data, "{\"ts\":\"", 7) == 0);
  CHECK(strstr(got.data, "Z\",\"level\":\"warn\",\"msg\":\"op failed\","
                         "\"pool\":\"p\\\"1\",\"id\":7,\"duration_ms\":1.5,"
                         "\"ok\":false,\"error\":\"a\\u0000b\","
                         "\"tenant\":null}\n") != NULL);
  tt_log_set_level(TT_LOG_OFF);
  got.len = 0;
  tt_log(TT_LOG_ERROR, "silenced", NULL, 0);
  CHECK_EQ(got.len, 0);
  tt_log_set_level(TT_LOG_INFO);
  tt_log_set_sink(NULL, NULL);
  tt_buf_free(&got);
  CHECK_EQ(tt_log_level_parse("error"), TT_LOG_ERROR);
  CHECK_EQ(tt_log_level_parse("loud"), -1);
}

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

TEST(traceparent_round_trips) {
  tt_span_context sc;
  char out[TT_TRACEPARENT_LEN + 1];
  char hex[33];
  CHECK_EQ(tt_traceparent_parse(TP, strlen(TP), &sc), TT_OK);
  CHECK(sc.remote);
  CHECK_EQ(sc.flags, 1);
  tt_hex(sc.trace_id, 16, hex);
  CHECK(strcmp(hex, "4bf92f3577b34da6a3ce929d0e0e4736") == 0);
  tt_traceparent_format(&sc, out);
  CHECK(strcmp(out, TP) == 0);
  CHECK_EQ(tt_traceparent_parse(" " TP "\t", strlen(TP) + 2, &sc), TT_OK);
  /* A later version may carry more fields after a dash. */
  {
    static const char later[] =
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
    CHECK_EQ(tt_traceparent_parse(later, sizeof later - 1, &sc), TT_OK);
  }
}

TEST(traceparent_refuses_what_the_standard_refuses) {
  static const char *bad[] = {
    "",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
    "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
  };
  size_t i;
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    tt_span_context sc;
    int r = tt_traceparent_parse(bad[i], strlen(bad[i]), &sc);
    if (r != TT_EINVAL) fprintf(stderr, "  accepted: '%s'\n", bad[i]);
    CHECK_EQ(r, TT_EINVAL);
  }
}

TEST(contexts_carry_the_span_context) {
  tt_span_context sc, got_sc;
  tt_ctx *c, *d;
  CHECK(!tt_ctx_span_context(tt_background(), &got_sc));
  CHECK_EQ(tt_random_bytes(sc.trace_id, 16), TT_OK);
  CHECK_EQ(tt_random_bytes(sc.span_id, 8), TT_OK);
  sc.flags = 1;
  sc.remote = false;
  c = tt_with_span_context(tt_background(), &sc);
  d = tt_without_cancel(c);
  CHECK(tt_ctx_span_context(d, &got_sc));
  CHECK(memcmp(got_sc.trace_id, sc.trace_id, 16) == 0);
  CHECK(memcmp(got_sc.span_id, sc.span_id, 8) == 0);
  /* A string key of the same name never reaches the trace. */
  {
    tt_key k = {NULL, "tether.TraceKey", 15};
    tt_obj *v = NULL;
    CHECK(!tt_ctx_value(d, &k, &v));
  }
  tt_unref(d);
  tt_unref(c);
}

TEST_MAIN()
