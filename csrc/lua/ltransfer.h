/*
** ltransfer.h -- what the files that move Lua values between states
** share (DESIGN section 2): the value object and its format (lvalue.c),
** the index of module names (lnames.c), packing (lpack.c) and unpacking
** (lunpack.c).  Private to those files and the test hook (ltest.c); the
** rest of the binding uses the lt_pack/lt_unpack family of ltether.h.
**
** A packed value ("tether.Value") is a byte string in a small format of
** our own plus an array of engine objects it holds references to.  It
** never points into the state it came from, so any thread may unpack it
** into any state, any number of times, while the source goes on.
**
** The format is a sequence of tagged records, one per top-level value:
**
**   T_NIL, T_FALSE, T_TRUE
**   T_INT  <8 bytes lua_Integer>        T_FLT  <8 bytes lua_Number>
**   T_STR  <varint len> <bytes>
**   T_TABLE <u32 n> <u32 count> value*n (key value)* T_END
**                            the values of keys 1..n in order, then the
**                            other entries ('count' of them, a hint)
**   T_REF  <varint id>       a table or function seen before (shared
**                            references and cycles)
**   T_OBJ  <varint k>        objs[k], an engine object shared by reference
**   T_FUNC <allg> <varint len> <bytecode> <nup> upvalue*
**   T_MOD  <varint len> <module name> '\0' <field name>
**   T_GLOBALS                the destination's global table
**
** Tables and functions get ids 1, 2, ... in the order the packer meets
** them, and the unpacker numbers them in the same order, so a T_REF needs
** no table of its own.  An upvalue of a function is U_GLOBALS, U_VALUE
** followed by a value, or U_JOIN <varint id * 256 + n>: the same upvalue
** cell as upvalue n of function id, met earlier in this value.  When
** every upvalue is the global table ('allg'), none is written.
**
** What crosses how: scalars and strings by value; plain tables as deep
** copies; engine objects by reference; values found in package.loaded
** (looked up before anything else) by name; Lua functions as bytecode
** plus upvalues, with _ENV bound to the destination's globals; nothing
** else.
*/
#ifndef ltransfer_h
#define ltransfer_h

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ltether.h"

/* LT_MAXDEPTH bounds the nesting of tables and functions in one value, so
** that packing a deep structure fails with a message instead of
** overflowing the C stack. */
#define LT_MAXDEPTH 200

/* Registry keys of the tables the transfer files keep in each state. */
#define LT_DUMPS_KEY "tether.transfer.dumps"   /* closure -> bytecode */
#define LT_PROTOS_KEY "tether.transfer.protos" /* bytecode -> template */

/* The tags of the records, and of the upvalues of a T_FUNC record. */
enum {
  T_NIL, T_FALSE, T_TRUE, T_INT, T_FLT, T_STR, T_TABLE, T_END, T_REF,
  T_OBJ, T_FUNC, T_MOD, T_GLOBALS
};

enum { U_GLOBALS, U_VALUE, U_JOIN };


/* {====================================================================
** The value object (lvalue.c)
** ===================================================================== */

/* An lt_value is the engine object of type lt_value_type.  Once built it
** is never changed, so it is shared between threads without a lock. */
typedef struct lt_value {
  tt_obj hdr;
  int n;                 /* top-level values */
  int nids;              /* tables and functions that got an id */
  unsigned char *buf;    /* the records */
  size_t len, cap;
  tt_obj **objs;         /* engine objects, one reference each */
  size_t nobjs, objcap;
} lt_value;

/* An lt_box is a Lua-owned handle on a value being built (or carried
** between states by the test hook): closing or collecting it drops the
** value unless the owner took it out first. */
typedef struct lt_box {
  lt_value *v;
} lt_box;

/* lt_push_box pushes an empty box, marked to be closed when the stack
** unwinds past it: on an error the value inside is freed at once. */
lt_box *lt_push_box(lua_State *L);

/* lt_is_globals says whether the value at 'idx' is this state's global
** table. */
bool lt_is_globals(lua_State *L, int idx);

/* lt_push_weak pushes the registry table 'key', making it with weak 'mode'
** ("k" or "v") on first use. */
void lt_push_weak(lua_State *L, const char *key, const char *mode);

/* LT_VARINT_MAX is the longest varint: 10 bytes of 7 bits hold 64. */
#define LT_VARINT_MAX 10

/* lt_varint_put writes 'x' into 'out' as a varint (7 bits a byte, least
** significant first, the high bit set on every byte but the last) and
** returns how many bytes it took.  The one encoder of the format. */
static inline size_t lt_varint_put(unsigned char out[LT_VARINT_MAX],
                                   uint64_t x) {
  size_t k = 0;
  do {
    out[k] = (unsigned char)(x & 0x7f);
    x >>= 7;
    if (x != 0) out[k] |= 0x80;
    k++;
  } while (x != 0);
  return k;
}

/* lt_varint_get reads a varint from the bytes p..end-1 into '*x' and
** returns how many bytes it took, or 0 if the bytes end first or the
** varint is longer than LT_VARINT_MAX.  The one decoder of the format. */
static inline size_t lt_varint_get(const unsigned char *p,
                                   const unsigned char *end, uint64_t *x) {
  uint64_t r = 0;
  size_t k = 0;
  int c;
  do {
    if (k == LT_VARINT_MAX || p + k >= end) return 0;
    c = p[k];
    r |= (uint64_t)(c & 0x7f) << (7 * k);
    k++;
  } while (c & 0x80);
  *x = r;
  return k;
}

/* }==================================================================== */


/* {====================================================================
** Module names (lnames.c)
** ===================================================================== */

/* An lt_names is one pack's handle on this state's map of module names:
** a stack slot that holds the map once it is needed, and whether the map
** was already compared with package.loaded during this pack. */
typedef struct lt_names {
  int slot;              /* stack index of the map (nil until needed) */
  bool have;             /* the slot holds the map */
  bool checked;          /* the map was compared with package.loaded */
} lt_names;

/* lt_names_init pushes the empty slot of 'n' (nil) and resets it. */
void lt_names_init(lua_State *L, lt_names *n);

/* lt_name_of looks the value at 'idx' up among the values found in
** package.loaded.  If it has a name, pushes it ("module\0field", or
** "module\0" for a module itself) and returns it with its length in
** '*len'; else pushes nothing and returns NULL. */
const char *lt_name_of(lua_State *L, lt_names *n, int idx, size_t *len);

/* }==================================================================== */

#endif
