/*
** ltether.h -- what the files of the Lua binding share.
**
** Every engine object reaches Lua as a full userdata holding one pointer
** (a box, after cqueues): the userdata owns one reference, '__gc' drops
** it.  Each lua_State keeps a weak table from object pointer to its
** userdata, so an object has one userdata per state and '==' works.
*/
#ifndef ltether_h
#define ltether_h

#include <lua.h>
#include <lauxlib.h>
#include <stdbool.h>
#include <stdlib.h>

#include "../core/tether.h"

/* {====================================================================
** Objects (lobj.c)
** ===================================================================== */

/* lt_newtype creates the metatable of an engine type, named after
** 't->name' ("tether.Context"), with 'methods' in '__index' (may be NULL)
** and 'meta' as metamethods; '__name', '__gc' (which drops the
** userdata's reference) and '__tostring' are set for every type, '__close'
** only where 'meta' gives one (a cancel function cancels).  The metatable
** is left on the stack. */
void lt_newtype(lua_State *L, const tt_type *t, const luaL_Reg *methods,
                const luaL_Reg *meta);

/* lt_pushobj pushes the userdata of 'o' in this state (making one, with a
** new reference, if there is none yet) or nil for NULL.  The type must
** have been registered with lt_newtype in this state. */
void lt_pushobj(lua_State *L, void *o);

/* lt_pushnew is lt_pushobj for an object whose reference the caller hands
** over (it was just made): the caller's reference is consumed. */
void lt_pushnew(lua_State *L, void *o);

/* lt_toobj returns the engine object of a tether userdata at 'idx' (any
** type), or NULL for any other value. */
tt_obj *lt_toobj(lua_State *L, int idx);

/* Some tether values of a state are light userdata of their own, not
** boxes (lctx.c's local cancel functions): their metatable's field
** LT_LIGHT_TYPE holds what tether.type says of them, and lt_light_obj
** makes the engine object that stands for one when it crosses to another
** state (a new reference), or returns NULL for any other value. */
#define LT_LIGHT_TYPE "__tether_light"
tt_obj *lt_light_obj(lua_State *L, int idx);

/* lt_checkobj returns the object at argument 'arg' if it is of type 't',
** else raises "bad argument #arg to 'f' (tether.Context expected, got
** string)". */
void *lt_checkobj(lua_State *L, int arg, const tt_type *t);

/* lt_testobj is lt_checkobj without the error: NULL if not of type 't'. */
void *lt_testobj(lua_State *L, int idx, const tt_type *t);

/* lt_pusherror pushes nil and an error object for 'code' and returns 2,
** the "refusal" convention: return lt_pusherror(L, TT_EQUEUE_FULL, msg). */
int lt_pusherror(lua_State *L, int code, const char *message);

/* lt_checkseconds reads a number of seconds at 'arg'; a negative, NaN or
** non-number raises.  lt_optseconds is the same for an optional one: nil
** or none gives 'def'. */
double lt_checkseconds(lua_State *L, int arg);
double lt_optseconds(lua_State *L, int arg, double def);

/* lt_setint sets t[k] = v in the table on top of the stack, for the
** binding's tables of counts. */
void lt_setint(lua_State *L, const char *k, lua_Integer v);

/* }==================================================================== */


/* {====================================================================
** Options tables (lopts.c): one strict reader for the whole binding
** ===================================================================== */

/* lt_checkopts raises if the table at 'idx' (argument 'arg' of the
** calling function) has a key not in 'known' (NULL-terminated): "unknown
** option 'worker'; did you mean 'workers'?".  'prefix' (may be NULL)
** names a nested table ("retry") in the message; with 'allow_array',
** integer keys (a list part) are allowed too.  Every function that takes
** an options table calls it before reading the fields. */
void lt_checkopts(lua_State *L, int arg, int idx, const char *prefix,
                  const char *const known[], bool allow_array);

/* lt_fielderror raises "bad argument #arg to 'f' (field 'name' what)". */
int lt_fielderror(lua_State *L, int arg, const char *field,
                  const char *what);

/* Readers of t[field] for the table at 'idx': absent (nil) gives 'def';
** a value of the wrong type or out of range raises a field error.
** lt_optfunction leaves the function on the stack and returns true, or
** returns false (nothing pushed) when absent; lt_optstring's result
** lives as long as the table holds it. */
double lt_optnumber(lua_State *L, int arg, int idx, const char *field,
                    double def, double min);
int lt_optint(lua_State *L, int arg, int idx, const char *field, int def,
              int min, int max);
bool lt_optfunction(lua_State *L, int arg, int idx, const char *field);
bool lt_optboolean(lua_State *L, int arg, int idx, const char *field,
                   bool def);
const char *lt_optstring(lua_State *L, int arg, int idx, const char *field,
                         const char *def);

/* lt_checkretry reads a retry policy table ({attempts, backoff, factor,
** max_backoff, jitter}) at 'idx' into '*r': the one reader of retry
** policies for pools, submissions and sagas, with one set of limits and
** defaults: attempts 1..1000000 (1), backoff >= 0 (0.1 s), factor >= 1
** (2), max_backoff >= 0 (3600 s), jitter 0..1 (0).  An unknown key
** raises ("unknown option 'retry.attempt'; did you mean
** 'retry.attempts'?"). */
void lt_checkretry(lua_State *L, int arg, int idx, tt_retry *r);

/* }==================================================================== */


/* {====================================================================
** Transfer of values between states (lvalue.c, lpack.c, lunpack.c;
** their private header is ltransfer.h)
** ===================================================================== */

/* The type of a packed sequence of Lua values ("tether.Value"): the
** engine carries these as context values, causes, channel items, task
** functions, arguments and results. */
extern const tt_type lt_value_type;

/* lt_pack packs the 'n' values at stack positions first..first+n-1 into a
** new value object, by the rules of DESIGN section 2.  A value that cannot
** cross raises a Lua error naming its path, e.g. "cannot transfer upvalue
** 'conn' of task 'audit' (userdata)"; 'what' names the whole ("task
** 'audit'", "channel item", "context value"). */
tt_obj *lt_pack(lua_State *L, int first, int n, const char *what);

/* lt_unpack pushes the values of a packed object and returns how many.  A
** NULL object pushes nothing and returns 0.  It raises if a module named
** in the pack cannot be required here. */
int lt_unpack(lua_State *L, tt_obj *v);

/* lt_pack_one / lt_unpack_one handle a single value (nil for NULL). */
tt_obj *lt_pack_one(lua_State *L, int idx, const char *what);
void lt_unpack_one(lua_State *L, tt_obj *v);

/* lt_pack_fields (lrecord.c) makes, without a Lua state (on any thread),
** a value of one table with the fields as keys: strings, integers,
** numbers and booleans; a NULL string or a NaN number leaves its key out.
** Log records and pool events reach Lua channels this way.  NULL when
** out of memory. */
tt_obj *lt_pack_fields(const tt_field *f, size_t n);

/* lt_value_from_bytes (lvalue.c) makes a value of 'n' top-level values
** from records written in the format of ltransfer.h ('nids' tables and
** functions, no engine objects), copying the bytes; NULL when out of
** memory. */
tt_obj *lt_value_from_bytes(const void *buf, size_t len, int n, int nids);

/* lt_pack_error turns the error value at 'idx' (and a traceback, may be
** NULL) into a tt_error and never raises: a tether error object is kept
** as it is; any other value becomes code TT_EFAILED with message
** tostring(value), the traceback, and the value packed if it can be. */
tt_error *lt_pack_error(lua_State *L, int idx, const char *traceback);

/* lt_pack_call packs a function (at 'fn_idx') and its 'n' arguments (at
** first..first+n-1) as one value of n + 1 values.  Refusals name the
** function as 'what' itself ("upvalue 'conn' of task 'audit'") and the
** arguments by position ("argument #2 of task 'audit'"). */
tt_obj *lt_pack_call(lua_State *L, int fn_idx, int first, int n,
                     const char *what);

/* lt_pack_results is lt_pack for the results of a task: refusals say
** "result #1 of task 'audit'". */
tt_obj *lt_pack_results(lua_State *L, int first, int n, const char *what);

/* }==================================================================== */


/* {====================================================================
** Registration (one function per file, called by luaopen_tether_core
** with the module table on the top of the stack)
** ===================================================================== */

int luaopen_tether_core(lua_State *L);
void lt_open_obj(lua_State *L);
void lt_open_ctx(lua_State *L);
void lt_open_wait(lua_State *L);
void lt_open_chan(lua_State *L);
void lt_open_value(lua_State *L);
void lt_open_testhook(lua_State *L);
void lt_open_exec(lua_State *L);
void lt_open_pool(lua_State *L);
void lt_open_group(lua_State *L);
void lt_open_flight(lua_State *L);
void lt_open_saga(lua_State *L);
void lt_open_signal(lua_State *L);
void lt_open_exit(lua_State *L);
void lt_open_http(lua_State *L);
void lt_open_log(lua_State *L);
void lt_open_trace(lua_State *L);
void lt_open_metrics(lua_State *L);
void lt_open_store(lua_State *L);
void lt_open_admin(lua_State *L);

/* }==================================================================== */


/* lwait.c: push a send case for ch:send_case(v) (the value at 'idx'). */
int lt_push_sendcase(lua_State *L, tt_chan *c, int idx);

/* lexec.c: push what a resolved handle yields (its results, or nil and
** its error) and return how many values. */
int lt_push_results(lua_State *L, tt_handle *h);

/* lctx.c: the type of tether.key objects. */
const tt_type *lt_key_type(void);

/* lpool.c: the drained latch of a Lua pool object, or NULL if 'o' is not
** one. */
tt_latch *lt_pool_latch(tt_obj *o);

/* lsaga.c: why the object 'o' cannot cross to another state (a saga
** whose steps cannot be copied), or NULL when it can. */
const char *lt_saga_stays(tt_obj *o);

/* The environment of a pool's worker states (lworker.h). */
typedef struct lt_env lt_env;

/* lpool.c: the engine pool of a Lua pool object and, in '*env' (may be
** NULL), the environment of its workers (borrowed); NULL if 'o' is not
** a Lua pool. */
tt_pool *lt_pool_engine(tt_obj *o, lt_env **env);

/* lpool.c: tether.pool itself, for modules that make a pool from an
** options table (the table at index 1; the pool is returned). */
int lt_pool_new(lua_State *L);

/* lstore.c: plain-data arguments as the stores' wire values.
** lt_wire_args appends 'n' values at first.. to 'b' (a count, then each
** value) and returns true, or false with the reason in 'why' ("argument
** #2 holds a function (only plain data travels)"); it never raises but
** for memory errors.  lt_wire_push pushes the values of a wire buffer and
** returns how many; it raises on malformed input. */
bool lt_wire_args(lua_State *L, int first, int n, tt_buf *b, char *why,
                  size_t whylen);
int lt_wire_push(lua_State *L, const void *p, size_t n);

/* lstore.c: the body of pool:drain_store(store [, ctx [, opts]]) for
** the engine pool 'pool' whose workers run under 'env' (arguments at 2,
** 3, 4 of the Lua call). */
int lt_drain_store(lua_State *L, tt_pool *pool, lt_env *env);

/* lstore.c: pushes the process's default overflow store
** (tether.store.default), or nil; l_pool reads it for a pool made
** without an 'overflow' option. */
void lt_push_default_store(lua_State *L);

/* lhttp.c: the engine request behind a handler's 'res' at 'idx', or NULL
** if the value is not one (the admin page mounts on HTTP servers with
** it). */
tt_http_req *lt_http_res_req(lua_State *L, int idx);

/* lhttp.c: reads the options every server shares ('shutdown', 'tls')
** from the options table at index 1 (tether.http.server and
** tether.admin.serve). */
void lt_server_options(lua_State *L, tt_ctx **shutdown, const char **cert,
                       const char **key);

/* lpool.c: pushes a table of the counters of 's', named as pool:stats()
** names them, with room for 'extra' more fields the caller adds. */
void lt_push_pool_stats(lua_State *L, const tt_pool_stats *s, int extra);

/* lexec.c: one structured log line on stderr for a failed task. */
void lt_log_failure(const char *what, const char *name, tt_obj *err);

/* {====================================================================
** Interruptible waits (lsignal.c)
** ===================================================================== */

/* Every blocking call of the binding brackets its wait:
**
**   lt_wait w;
**   lt_wait_begin(L, &w);
**   r = tt_...(...);
**   if (lt_wait_end(L, &w)) { release what the call holds;
**                             return lt_interrupted(L); }
**
** On a program's own thread (not an engine thread) the wait then also
** ends on Ctrl-C; lt_wait_end returns true when it did, after putting back
** the Lua hooks found at lt_wait_begin (lua.c's handler, which ran too,
** left one), and lt_interrupted raises Lua's usual "interrupted!". */
typedef struct lt_wait {
  bool on;
  lua_State *main;
  lua_Hook hook, mhook;
  int mask, count, mmask, mcount;
} lt_wait;

void lt_wait_begin(lua_State *L, lt_wait *w);
bool lt_wait_end(lua_State *L, lt_wait *w);
int lt_interrupted(lua_State *L);

/* lt_save_hooks records the Lua hooks of 'L' and of its main thread (and,
** in 'on', whether this thread is a program's own); lt_restore_hooks
** puts them back.  s:run uses them around an interrupted step. */
void lt_save_hooks(lua_State *L, lt_wait *w);
void lt_restore_hooks(lua_State *L, const lt_wait *w);

/* lexit.c: track a pool made by 'L' so that it drains when the state
** closes (nothing on engine threads). */
void lt_track_pool(lua_State *L, tt_pool *p);

/* }==================================================================== */

#endif
