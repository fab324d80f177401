/*
** lrecord.c -- tables made in C, without a Lua state: a log record or a
** pool event becomes a packed value (the format of ltransfer.c) on the
** thread that logs or delivers it, and goes into a Lua channel from
** there.  Only what a record holds is written: one table of string keys
** and scalar values, in the records of ltransfer.h.
*/
#include <string.h>

#include "ltransfer.h"

/* put_str writes a string record: its tag, its length, its bytes. */
static void put_str(tt_buf *b, const char *s, size_t n) {
  unsigned char tmp[1 + LT_VARINT_MAX];
  tmp[0] = T_STR;
  tt_buf_add(b, tmp, 1 + lt_varint_put(tmp + 1, n));
  tt_buf_add(b, s, n);
}

/* lt_pack_fields makes a packed value of one table whose keys are the
** fields' keys (ltether.h).  It runs on the thread that logs or delivers
** an event, with no Lua state, so it writes the records by hand: a table
** header whose pair count is patched once the fields that carry a value
** are known (a NULL string or a NaN number leaves its key out, as a nil
** would), one string key and one scalar per field, then the end mark.
** One table means 'nids' is 1.  NULL when out of memory. */
tt_obj *lt_pack_fields(const tt_field *f, size_t n) {
  tt_buf b = TT_BUF_INIT;
  unsigned char tag = T_TABLE, end = T_END;
  uint32_t narr = 0, count = 0;
  size_t i, at;
  tt_obj *v;
  tt_buf_add(&b, &tag, 1);
  at = b.len;
  tt_buf_add(&b, &narr, 4);
  tt_buf_add(&b, &count, 4);
  for (i = 0; i < n; i++) {
    const tt_field *x = &f[i];
    unsigned char t;
    if (x->key == NULL) continue;
    switch (x->kind) {
      case TT_F_INT: {
        lua_Integer li = (lua_Integer)x->i;
        t = T_INT;
        put_str(&b, x->key, strlen(x->key));
        tt_buf_add(&b, &t, 1);
        tt_buf_add(&b, &li, sizeof li);
        break;
      }
      case TT_F_NUM: {
        lua_Number d = (lua_Number)x->n;
        if (d != d) continue;  /* NaN: no value, as nil */
        t = T_FLT;
        put_str(&b, x->key, strlen(x->key));
        tt_buf_add(&b, &t, 1);
        tt_buf_add(&b, &d, sizeof d);
        break;
      }
      case TT_F_BOOL:
        t = x->i ? T_TRUE : T_FALSE;
        put_str(&b, x->key, strlen(x->key));
        tt_buf_add(&b, &t, 1);
        break;
      default:
        if (x->s == NULL) continue;  /* nil */
        put_str(&b, x->key, strlen(x->key));
        put_str(&b, x->s, x->len == (size_t)-1 ? strlen(x->s) : x->len);
    }
    count++;
  }
  tt_buf_add(&b, &end, 1);
  if (b.failed) {
    tt_buf_free(&b);
    return NULL;
  }
  memcpy(b.data + at + 4, &count, 4);
  v = lt_value_from_bytes(b.data, b.len, 1, 1);
  tt_buf_free(&b);
  return v;
}
