/*
** lwait.c -- tether.select, timers, sleep and the clock.
**
** A select case is any waitable: a context (its done), a timer, a task
** handle, a pool (drained), a channel (a receive), a send case made by
** ch:send_case(v), nil (never fires) or tether.default.
*/
#include <stdatomic.h>
#include <string.h>

#include "ltether.h"

/* The most cases one select takes (the engine's limit, tt_select). */
#define MAX_CASES 64
#define LT_STR_(x) #x
#define LT_STR(x) LT_STR_(x)

/* The binding's send case: a channel and the packed item to send.  The
** case keeps its reference to the item for its whole life (a select hands
** the channel a reference of its own), so that what it holds is fixed
** and a walk through it ('traverse') never races with a send. */
typedef struct lt_sendcase {
  tt_obj hdr;
  tt_chan *chan;
  tt_obj *item;          /* fixed once made */
  atomic_bool used;      /* set once the item was sent */
} lt_sendcase;

static void sendcase_free(tt_obj *o) {
  lt_sendcase *s = (lt_sendcase *)o;
  tt_unref(s->chan);
  tt_unref(s->item);
  free(s);
}

static void sendcase_traverse(tt_obj *o, tt_visit visit, void *ud) {
  lt_sendcase *s = (lt_sendcase *)o;
  visit((tt_obj *)s->chan, ud);
  visit(s->item, ud);
}

static const tt_type sendcase_type = {"tether.SendCase", sendcase_free,
                                      NULL, sendcase_traverse};

/* The default marker is one static object shared by every state. */
static const tt_type default_type = {"tether.Default", NULL, NULL,
                                     NULL};
static tt_obj default_obj = {-1, &default_type};

/* lt_push_sendcase pushes a new send case of 'c' that sends the value at
** 'idx', packed now (ch:send_case in lchan.c); a value that cannot cross
** raises, and so does a failed allocation. */
int lt_push_sendcase(lua_State *L, tt_chan *c, int idx) {
  /* Packed first: a refusal raises before anything is made. */
  tt_obj *item = lt_pack_one(L, idx, "channel item");
  lt_sendcase *s = calloc(1, sizeof *s);
  if (s == NULL) {
    tt_unref(item);
    return luaL_error(L, "not enough memory");
  }
  tt_obj_init(&s->hdr, &sendcase_type);
  s->chan = tt_ref(c);
  s->item = item;
  atomic_init(&s->used, false);
  lt_pushnew(L, s);
  return 1;
}

/* tether.now() -> number: seconds on the monotonic clock of every
** deadline (CLOCK_MONOTONIC): only differences mean something. */
static int l_now(lua_State *L) {
  lua_pushnumber(L, tt_now());
  return 1;
}

/* tether.after(seconds) -> timer: a tether.Timer, a waitable for
** tether.select that fires once, 'seconds' from now.  It has no methods
** (its tostring says pending or fired); dropping it forgets it.  Timers
** live on the engine's one timer thread, started on first use: raises
** when that thread cannot be started, and for a negative, NaN or
** non-number 'seconds'. */
static int l_after(lua_State *L) {
  tt_timer *t = tt_after(lt_checkseconds(L, 1));
  if (t == NULL) return luaL_error(L, "cannot start the timer thread");
  lt_pushnew(L, t);
  return 1;
}

/* tether.sleep(seconds [, ctx]) -> true | nil, err: true after 'seconds'
** seconds, or nil and the context's error if 'ctx' ends first.  Raises
** for a negative or NaN 'seconds' or a non-context 'ctx', and
** 'interrupted!' on Ctrl-C in the main state. */
static int l_sleep(lua_State *L) {
  double s = lt_checkseconds(L, 1);
  tt_ctx *c = lua_isnoneornil(L, 2) ? NULL
                                    : lt_checkobj(L, 2, &tt_ctx_type);
  lt_wait w;
  int r;
  lt_wait_begin(L, &w);
  r = tt_sleep(s, c);
  if (lt_wait_end(L, &w)) return lt_interrupted(L);
  if (r == TT_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lt_pushobj(L, tt_error_for(r));
  return 2;
}

static tt_latch *latch_of(tt_obj *o) {
  if (o->type == &tt_ctx_type) return tt_ctx_done((tt_ctx *)o);
  if (o->type == &tt_timer_type) return tt_timer_latch((tt_timer *)o);
  if (o->type == &tt_handle_type) return tt_handle_latch((tt_handle *)o);
  return lt_pool_latch(o);
}

/* tether.select(case1, case2, ...) -> i, ...: waits for the first case
** that can proceed (one at random among several ready, as in Go), does
** it, and returns its 1-based index, then what it yields: for a channel,
** the value (a copy) and true, or nil, false once closed and empty; for
** a context (or ctx:done()), its error; for a handle, its results as
** h:wait gives them; for a timer, a pool (drained) or a send case, true.
** For tether.default (fires when nothing else is ready) it returns only
** the index; a nil case never fires, as Go's nil channel.  Without a
** default and with no case that can fire it waits forever.  Raises for
** more than 64 cases ("too many cases (at most 64)", the engine's limit),
** a value that is not a case ("waitable expected"), two defaults, a send
** case used before, a send case whose value holds its channel (a
** reference cycle, found by the engine before anything is done), a send
** case whose channel is closed ("send on closed channel"), and
** 'interrupted!' on Ctrl-C in the main state.  Each send case offers the
** channel a reference of its own, taken only once nothing can raise, so
** a case keeps its item for its whole life; a case that sent is marked
** used. */
static int l_select(lua_State *L) {
  tt_case cs[MAX_CASES];
  lt_wait w;
  int n = lua_gettop(L), i, r, def = 0;
  bool interrupted;
  luaL_argcheck(L, n <= MAX_CASES, MAX_CASES + 1,
                "too many cases (at most " LT_STR(MAX_CASES) ")");
  memset(cs, 0, sizeof cs);
  for (i = 0; i < n; i++) {
    int arg = i + 1;
    tt_obj *o;
    if (lua_isnil(L, arg)) continue;
    o = lt_toobj(L, arg);
    if (o == &default_obj) {
      luaL_argcheck(L, def == 0, arg, "more than one default case");
      def = arg;
      continue;
    }
    if (o == NULL) luaL_typeerror(L, arg, "waitable");
    if (o->type == &tt_chan_type) {
      cs[i].kind = TT_CASE_RECV;
      cs[i].chan = (tt_chan *)o;
    } else if (o->type == &sendcase_type) {
      lt_sendcase *s = (lt_sendcase *)o;
      luaL_argcheck(L, !atomic_load(&s->used), arg,
                    "send case already used");
      cs[i].kind = TT_CASE_SEND;
      cs[i].chan = s->chan;
      cs[i].item = s->item;  /* referenced below, once nothing raises */
    } else if (o->type == &tt_ctx_type || o->type == &tt_timer_type ||
               o->type == &tt_handle_type || lt_pool_latch(o) != NULL) {
      cs[i].kind = TT_CASE_LATCH;
      cs[i].latch = latch_of(o);
    } else {
      luaL_typeerror(L, arg, "waitable");
    }
  }
  /* Each send case offers the channel a reference of its own. */
  for (i = 0; i < n; i++)
    if (cs[i].kind == TT_CASE_SEND) tt_ref(cs[i].item);
  lt_wait_begin(L, &w);
  r = tt_select(cs, n, def != 0, -1);
  interrupted = lt_wait_end(L, &w) && r == TT_SELECT_INTERRUPTED;
  /* The references of the cases that did not send go back. */
  for (i = 0; i < n; i++)
    if (cs[i].kind == TT_CASE_SEND && (i != r || cs[i].closed))
      tt_unref(cs[i].item);
  if (interrupted) return lt_interrupted(L);
  if (r == TT_SELECT_INVALID) {
    /* Nothing was done: find the send case whose value holds its
    ** channel (a reference cycle, tt_chan_send). */
    for (i = 0; i < n; i++)
      if (cs[i].kind == TT_CASE_SEND && tt_holds(cs[i].item, cs[i].chan))
        return luaL_argerror(L, i + 1, "cannot send: the value holds its "
                             "channel (a reference cycle)");
    return luaL_error(L, "cannot send: a value holds its channel (a "
                      "reference cycle)");
  }
  if (r == TT_SELECT_DEFAULT) {
    lua_pushinteger(L, def);
    return 1;
  }
  lua_pushinteger(L, r + 1);
  switch (cs[r].kind) {
    case TT_CASE_RECV:
      if (!cs[r].ok) {
        lua_pushnil(L);
        lua_pushboolean(L, 0);
        return 3;
      }
      lt_unpack_one(L, cs[r].item);
      tt_unref(cs[r].item);
      lua_pushboolean(L, 1);
      return 3;
    case TT_CASE_SEND: {
      lt_sendcase *s = (lt_sendcase *)lt_toobj(L, r + 1);
      if (cs[r].closed) return luaL_error(L, "send on closed channel");
      atomic_store(&s->used, true);
      lua_pushboolean(L, 1);
      return 2;
    }
    default: {
      tt_obj *o = lt_toobj(L, r + 1);
      if (o->type == &tt_ctx_type) {
        lt_pushobj(L, tt_error_for(tt_ctx_err((tt_ctx *)o)));
        return 2;
      }
      if (o->type == &tt_handle_type)
        return 1 + lt_push_results(L, (tt_handle *)o);
      lua_pushboolean(L, 1);
      return 2;
    }
  }
}

void lt_open_wait(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"now", l_now},
    {"after", l_after},
    {"sleep", l_sleep},
    {"select", l_select},
    {NULL, NULL}
  };
  static const luaL_Reg timer_methods[] = {
    {NULL, NULL}
  };
  lt_newtype(L, &tt_timer_type, timer_methods, NULL);
  lt_newtype(L, &sendcase_type, NULL, NULL);
  lt_newtype(L, &default_type, NULL, NULL);
  lua_pop(L, 3);
  luaL_setfuncs(L, funcs, 0);
  lt_pushobj(L, &default_obj);
  lua_setfield(L, -2, "default");
}
