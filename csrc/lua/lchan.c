/*
** lchan.c -- channels in Lua.  Items are packed values, so a channel
** carries any transferable value between states and threads; nil is an
** item like any other.
*/
#include "ltether.h"

/* What a send that would make a reference cycle raises: the channel would
** hold itself and never be freed (tt_chan_send). */
#define CYCLE_MSG \
  "cannot send: the value holds this channel (a reference cycle)"

static tt_chan *check_chan(lua_State *L) {
  return lt_checkobj(L, 1, &tt_chan_type);
}

static tt_ctx *opt_ctx(lua_State *L, int arg) {
  if (lua_isnoneornil(L, arg)) return NULL;
  return lt_checkobj(L, arg, &tt_ctx_type);
}

/* tether.chan([capacity]) makes a channel; 0 (the default) is unbuffered. */
static int l_chan(lua_State *L) {
  lua_Integer n = luaL_optinteger(L, 1, 0);
  tt_chan *c;
  luaL_argcheck(L, n >= 0 && n <= (1 << 24), 1,
                "capacity out of range (0 to 16777216)");
  c = tt_chan_new((size_t)n);
  if (c == NULL) return luaL_error(L, "not enough memory");
  lt_pushnew(L, c);
  return 1;
}

/* ch:send(v [, ctx]) returns true once sent, or nil and the context's
** error.  Sending on a closed channel raises, as in Go, and so does
** sending a value that holds the channel itself (directly, or through
** the tether objects it holds): the two would never be freed. */
static int m_send(lua_State *L) {
  tt_chan *c = check_chan(L);
  tt_ctx *ctx;
  tt_obj *item;
  lt_wait w;
  int r;
  luaL_checkany(L, 2);
  ctx = opt_ctx(L, 3);
  item = lt_pack_one(L, 2, "channel item");
  lt_wait_begin(L, &w);
  r = tt_chan_send(c, item, ctx, -1);
  if (lt_wait_end(L, &w) && r == TT_EINTR) {
    tt_unref(item);
    return lt_interrupted(L);
  }
  if (r == TT_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  tt_unref(item);
  if (r == TT_ECLOSED) return luaL_error(L, "send on closed channel");
  if (r == TT_EINVAL) return luaL_error(L, CYCLE_MSG);
  if (r == TT_ENOMEM) return luaL_error(L, "not enough memory");
  lua_pushnil(L);
  lt_pushobj(L, tt_error_for(r));
  return 2;
}

/* ch:recv([ctx]) returns v, true; or nil, false once closed and empty; or
** nil, false and the context's error. */
static int m_recv(lua_State *L) {
  tt_chan *c = check_chan(L);
  tt_ctx *ctx = opt_ctx(L, 2);
  tt_obj *item;
  lt_wait w;
  int r;
  lt_wait_begin(L, &w);
  r = tt_chan_recv(c, &item, ctx, -1);
  if (lt_wait_end(L, &w) && r == TT_EINTR) return lt_interrupted(L);
  if (r == TT_OK) {
    lt_unpack_one(L, item);
    tt_unref(item);
    lua_pushboolean(L, 1);
    return 2;
  }
  lua_pushnil(L);
  lua_pushboolean(L, 0);
  if (r == TT_ECLOSED) return 2;
  lt_pushobj(L, tt_error_for(r));
  return 3;
}

/* ch:try_send(v) sends without waiting and returns whether it did; it
** raises as send does. */
static int m_try_send(lua_State *L) {
  tt_chan *c = check_chan(L);
  tt_obj *item;
  int r;
  luaL_checkany(L, 2);
  if (tt_chan_closed(c)) return luaL_error(L, "send on closed channel");
  item = lt_pack_one(L, 2, "channel item");
  r = tt_chan_try_send(c, item);
  if (r != TT_OK) tt_unref(item);
  if (r == TT_ECLOSED) return luaL_error(L, "send on closed channel");
  if (r == TT_EINVAL) return luaL_error(L, CYCLE_MSG);
  if (r == TT_ENOMEM) return luaL_error(L, "not enough memory");
  lua_pushboolean(L, r == TT_OK);
  return 1;
}

static int m_try_recv(lua_State *L) {
  tt_chan *c = check_chan(L);
  tt_obj *item;
  if (tt_chan_try_recv(c, &item) != TT_OK) {
    lua_pushnil(L);
    lua_pushboolean(L, 0);
    return 2;
  }
  lt_unpack_one(L, item);
  tt_unref(item);
  lua_pushboolean(L, 1);
  return 2;
}

static int m_close(lua_State *L) {
  if (tt_chan_close(check_chan(L)) != TT_OK)
    return luaL_error(L, "close of closed channel");
  return 0;
}

static int m_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)tt_chan_len(check_chan(L)));
  return 1;
}

static int m_cap(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)tt_chan_cap(check_chan(L)));
  return 1;
}

static int m_closed(lua_State *L) {
  lua_pushboolean(L, tt_chan_closed(check_chan(L)));
  return 1;
}

static int m_send_case(lua_State *L) {
  tt_chan *c = check_chan(L);
  luaL_checkany(L, 2);
  return lt_push_sendcase(L, c, 2);
}

static int meta_len(lua_State *L) { return m_len(L); }

void lt_open_chan(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"send", m_send},
    {"recv", m_recv},
    {"try_send", m_try_send},
    {"try_recv", m_try_recv},
    {"close", m_close},
    {"len", m_len},
    {"cap", m_cap},
    {"closed", m_closed},
    {"send_case", m_send_case},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__len", meta_len},
    {NULL, NULL}
  };
  lt_newtype(L, &tt_chan_type, methods, meta);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_chan);
  lua_setfield(L, -2, "chan");
}
