/*
** task.h -- the task handle shared by the executor (exec.c) and the pools
** (pool.c).
**
** A tt_handle is both the future a caller waits on and the start of the
** record of the work itself: an owner allocates a larger struct that
** begins with a tt_handle (the executor's 'gotask', the pool's 'op') and
** passes a small table of operations, so that tt_handle_stop reaches the
** owner and the last tt_unref frees the whole record in one place.
**
** Life of a handle: made QUEUED, moved between QUEUED and RUNNING by its
** owner (a pool op goes back to QUEUED while it waits for a retry), then
** resolved exactly once to DONE, FAILED or STOPPED with tt__handle_resolve,
** which publishes the result and sets the latch.  The task's argument is
** dropped exactly once, by tt__handle_drop_arg.
*/
#ifndef tether_task_h
#define tether_task_h

#include "internal.h"

/* What a handle's owner provides.  'stop' implements tt_handle_stop (NULL:
** the task cannot be stopped); 'fini' frees the owner's part of the record
** when the last reference goes (may be NULL), before the common part is
** freed; 'release' gives the record's memory back once everything in it
** is freed (NULL: free()), so that an owner may keep records for
** reuse. */
typedef struct tt__task_vt {
  bool (*stop)(tt_handle *h);
  void (*fini)(tt_handle *h);
  void (*release)(tt_handle *h);
} tt__task_vt;

struct tt_handle {
  tt_obj hdr;
  const tt__task_vt *vt;   /* fixed at creation */
  _Atomic int state;       /* TT_H_*; final states are never left */
  tt_obj *result;          /* written once, before 'state' turns final */
  tt_latch done;           /* set by tt__handle_resolve */
  char *name;              /* fixed at creation */
  bool name_owned;         /* 'name' was allocated for it (else it is in
                           ** the owner's record) */
  tt_fn fn;                /* fixed at creation */
  /* 'arg' and 'drop' belong to whoever holds the task (the executor's
  ** queue, a pool); they are cleared when the argument is dropped or
  ** handed to another record (a pool's retried dead letter). */
  void *arg;
  tt_drop drop;
};

/* tt__handle_init sets up the common part of a record allocated by the
** owner: one reference, state QUEUED, a copy of 'name' (NULL: 'defname'),
** made in 'buf' ('bufsize' bytes of the owner's record; may be NULL) when
** it fits there.  It returns false when out of memory; the record is then
** untouched apart from its header and may just be freed. */
bool tt__handle_init(tt_handle *h, const tt__task_vt *vt, const char *name,
                     const char *defname, char *buf, size_t bufsize,
                     tt_fn fn, void *arg, tt_drop drop);

/* tt__handle_set_state moves a handle between QUEUED and RUNNING. */
void tt__handle_set_state(tt_handle *h, int state);

/* tt__handle_resolve gives the handle its final state and result (the
** reference is taken over; may be NULL) and sets its latch.  Resolving a
** handle twice is a bug in the engine and aborts. */
void tt__handle_resolve(tt_handle *h, int state, tt_obj *result);

/* tt__handle_drop_arg drops the task's argument if it still holds one; the
** second call does nothing. */
void tt__handle_drop_arg(tt_handle *h);

/* tt__task_error turns what a failed task function left behind into the
** error object kept as the handle's result: its own error object if it
** stored one (the reference is taken over), else a fresh error for the
** code it returned (TT_EFAILED when the code is not one of ours).  It may
** return NULL when out of memory. */
tt_obj *tt__task_error(int rc, tt_obj *out);

/* tt__error_code gives the code of an error object: its 'code' if it is a
** tt_error, else TT_EFAILED. */
int tt__error_code(tt_obj *err);

/* A unit of work for the default executor, embedded in its owner's
** record: 'run' is called once on an executor thread, unless the owner
** takes the item back first. */
typedef struct tt__work {
  tt_list link;                     /* in the queue while queued */
  void (*run)(struct tt__work *w);
} tt__work;

/* tt__exec_push queues 'w' (its 'link' initialised, 'run' set) as
** tt_exec does; TT_OK, or an error and 'w' is not queued. */
int tt__exec_push(tt__work *w);

/* tt__exec_unqueue takes 'w' out of the queue if no executor thread has
** taken it yet, and says whether it did ('run' will then never be
** called). */
bool tt__exec_unqueue(tt__work *w);

/* tt__exec_tune sets the executor's thread cap (<= 0: keep) and how long
** an idle thread waits for work before it exits (< 0: keep); it returns
** nothing and affects threads from their next wait on.  Tests use it to
** saturate the executor and to watch idle threads go. */
void tt__exec_tune(int max_threads, double idle_seconds);

/* tt__exec_threads reports how many executor threads exist and how many of
** them wait for work. */
void tt__exec_threads(int *threads, int *idle);

#endif
