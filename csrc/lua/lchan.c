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

/* tether.chan([capacity]) -> ch: makes a channel with room for 'capacity'
** items; 0, the default, is unbuffered (a send waits for a receiver).
** Raises for a capacity outside 0 to 16777216, and on a failed
** allocation. */
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

/* ch:send(v [, ctx]) -> true | nil, err: sends 'v', packed now (a copy of
** a table, the same object for a tether object), waiting for room or,
** unbuffered, for a receiver; nil and the context's error if 'ctx' ends
** first.  Sending on a closed channel raises, as in Go (also when the
** channel closes while the send waits), and so does sending a value that
** holds the channel itself (directly, or through the tether objects it
** holds): the two would never be freed.  A value that cannot cross
** raises when packed.  Raises 'interrupted!' on Ctrl-C in the main
** state. */
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

/* ch:recv([ctx]) -> v, true | nil, false [, err]: receives the next
** item; nil, false once the channel is closed and empty, or nil, false
** and the context's error if 'ctx' ends first.  Raises 'interrupted!'
** on Ctrl-C in the main state. */
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

/* ch:try_send(v) -> boolean: sends without waiting and returns whether
** it did (false when there is no room, or no waiting receiver on an
** unbuffered channel).  It raises as ch:send does: on a closed channel,
** for a reference cycle, or for a value that cannot cross.  The closed
** check comes first so that a closed channel raises before 'v' is
** packed. */
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

/* ch:try_recv() -> v, true | nil, false: receives without waiting; nil,
** false when no item is ready (or the channel is closed and empty). */
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

/* ch:close(): closes the channel.  Receivers get the items left, then
** nil, false; senders, waiting or later, raise.  Closing it a second
** time raises 'close of closed channel', as in Go. */
static int m_close(lua_State *L) {
  if (tt_chan_close(check_chan(L)) != TT_OK)
    return luaL_error(L, "close of closed channel");
  return 0;
}

/* ch:len() -> integer: the number of items waiting in the channel. */
static int m_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)tt_chan_len(check_chan(L)));
  return 1;
}

/* ch:cap() -> integer: the channel's capacity (0: unbuffered). */
static int m_cap(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)tt_chan_cap(check_chan(L)));
  return 1;
}

/* ch:closed() -> boolean: whether ch:close() was called. */
static int m_closed(lua_State *L) {
  lua_pushboolean(L, tt_chan_closed(check_chan(L)));
  return 1;
}

/* ch:send_case(v) -> case: a tether.SendCase for tether.select that
** sends 'v' on this channel.  'v' is packed now, when the case is made,
** so a value that cannot cross raises here; a case sends at most once. */
static int m_send_case(lua_State *L) {
  tt_chan *c = check_chan(L);
  luaL_checkany(L, 2);
  return lt_push_sendcase(L, c, 2);
}

/* #ch (__len): the same as ch:len(). */
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
