/*
** signal.c -- signals as contexts, interrupts of a program's waits, and
** the one thread that turns signals into engine events.
**
** DESIGN.
**
** Signal handlers may do almost nothing: no locks, no malloc, no engine
** call.  So tether's handler ('on_signal') only reads a few atomics,
** raises a pending flag, and writes one byte to a pipe; the signal
** thread, an ordinary engine thread blocked in read(2) on that pipe,
** does the rest (cancels contexts, wakes waits).  Engine threads block
** every signal (tt__thread_start), so a signal sent to the process is
** delivered to one of the program's own threads, usually the main one.
**
** What the handler does with a signal of slot i (SIGINT, SIGTERM, SIGHUP,
** SIGUSR1, SIGUSR2), in this order:
**   1. Some signal context listens for it and is not done ('live'): mark
**      it pending and wake the signal thread, which cancels every such
**      context with a cause of code TT_ESIGNAL.  Nothing else happens:
**      the context handles the signal.
**   2. Signal contexts hold it but all are done ('held'): take the
**      default action (SIG_DFL, raised again), so that a second Ctrl-C
**      still ends a program stuck in its drain.
**   3. Nobody holds it: chain to the disposition tether found when it
**      installed its handler ('prev').  For SIGINT, when that was a
**      handler function (lua.c's, which makes the running Lua code raise
**      "interrupted!"), it is also an interrupt: the count 'int_gen'
**      grows and the signal thread wakes the interruptible waits.
**
** Interrupts.  A thread opts in with tt_interrupt_begin; until
** tt_interrupt_end, each tt_select that would block also waits on the
** current interrupt latch, and returns TT_SELECT_INTERRUPTED once
** 'int_gen' differs from its value at tt_interrupt_begin (sticky: later
** selects of the section return at once too, so that a wait made of
** several selects ends).  The signal thread fires the latch and puts a
** fresh one in its place, so an interrupt wakes the waits in progress and
** no later one.  A select takes the latch before it compares 'int_gen';
** the handler raises 'int_gen' before the thread swaps the latch: a
** signal between the two is seen either way.  The SIGINT handler is
** installed lazily, by the first interruptible select that is about to
** block ("arming"), and again whenever the host replaced it (lua.c sets
** its own handler for each chunk it runs, and its handler resets SIGINT
** to SIG_DFL when it fires).  No SIGINT handler is installed when there
** is nothing to chain to (SIG_DFL or SIG_IGN) and no context holds it:
** the default action already ends every wait.
**
** If the handler must chain to a host's handler on a thread other than
** the one that armed it (a thread of some other library that does not
** block signals), it forwards the signal to the arming thread with
** tgkill: the host's handler (lua.c's sets a hook on the main Lua state)
** expects to run there.
**
** Children.  A child process inherits the mask of the thread that made
** it.  tt__thread_start registers a pthread_atfork child handler that
** gives a child forked by an engine thread the default (empty) mask; a
** child made by posix_spawn (glibc's system and popen) runs no atfork
** handler, so the Lua binding spawns the commands of os.execute and
** io.popen in worker states itself, with the default mask.
**
** Locks.  'S_mu' guards the registrations, the saved dispositions and the
** thread's state; it is a leaf but for the engine calls made after it is
** released (tt_cancel, tt_after_func).  'I_mu' guards the current
** interrupt latch and is a leaf (taken under channel locks by tt_select,
** never the reverse).  The handler takes no lock; what it reads is atomic.
*/
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/* {====================================================================
** Slots: the signals tether handles
** ===================================================================== */

#define NSLOTS 5

static const struct {
  int sig;
  const char *name;
} slots[NSLOTS] = {
  {SIGINT, "INT"}, {SIGTERM, "TERM"}, {SIGHUP, "HUP"}, {SIGUSR1, "USR1"},
  {SIGUSR2, "USR2"},
};

static int slot_of(int sig) {
  int i;
  for (i = 0; i < NSLOTS; i++)
    if (slots[i].sig == sig) return i;
  return -1;
}

/* Other names tt_signal_number knows, to refuse them by name. */
static const struct {
  int sig;
  const char *name;
} others[] = {
  {SIGKILL, "KILL"}, {SIGSTOP, "STOP"}, {SIGSEGV, "SEGV"}, {SIGBUS, "BUS"},
  {SIGFPE, "FPE"}, {SIGILL, "ILL"}, {SIGABRT, "ABRT"}, {SIGTRAP, "TRAP"},
  {SIGSYS, "SYS"}, {SIGQUIT, "QUIT"}, {SIGPIPE, "PIPE"}, {SIGALRM, "ALRM"},
  {SIGCHLD, "CHLD"}, {SIGCONT, "CONT"}, {SIGTSTP, "TSTP"},
  {SIGTTIN, "TTIN"}, {SIGTTOU, "TTOU"}, {SIGWINCH, "WINCH"},
  {SIGPROF, "PROF"}, {SIGVTALRM, "VTALRM"}, {SIGXCPU, "XCPU"},
  {SIGXFSZ, "XFSZ"}, {SIGURG, "URG"}, {SIGIO, "IO"},
};

int tt_signal_number(const char *name) {
  size_t i;
  if (name == NULL) return 0;
  if (strncmp(name, "SIG", 3) == 0) name += 3;
  for (i = 0; i < NSLOTS; i++)
    if (strcmp(slots[i].name, name) == 0) return slots[i].sig;
  for (i = 0; i < sizeof others / sizeof others[0]; i++)
    if (strcmp(others[i].name, name) == 0) return others[i].sig;
  return 0;
}

const char *tt_signal_name(int sig) {
  size_t i;
  int s = slot_of(sig);
  if (s >= 0) return slots[s].name;
  for (i = 0; i < sizeof others / sizeof others[0]; i++)
    if (others[i].sig == sig) return others[i].name;
  return NULL;
}

bool tt_signal_supported(int sig) { return slot_of(sig) >= 0; }

/* }==================================================================== */


/* {====================================================================
** State
** ===================================================================== */

/* How the disposition found before tether's was made, for the handler. */
enum { PREV_DFL = 0, PREV_IGN, PREV_HANDLER, PREV_ACTION };

static pthread_mutex_t S_mu = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction prev_sa[NSLOTS];  /* under S_mu */
static tt_list regs = {&regs, &regs};     /* of tt_sigreg; under S_mu */
static bool thread_on;                    /* under S_mu */
static pthread_t thread;                  /* valid while 'thread_on' */

/* Read by the handler. */
static _Atomic int prev_kind[NSLOTS];
static _Atomic(void *) prev_fn[NSLOTS];
static _Atomic int live[NSLOTS];     /* contexts listening, not done */
static _Atomic int held[NSLOTS];     /* contexts registered, not stopped */
static _Atomic int installed[NSLOTS];
static _Atomic int pending[NSLOTS];
static _Atomic int int_pending;
static _Atomic unsigned long int_gen;
static _Atomic int wake_w = -1;      /* the pipe's write end */
static _Atomic int main_tid;         /* the thread that armed SIGINT */
static int wake_r = -1;              /* the read end; under S_mu */

/* }==================================================================== */


/* {====================================================================
** The handler (async-signal-safe code only)
** ===================================================================== */

static void poke(char b) {
  int fd = atomic_load(&wake_w);
  if (fd >= 0) {
    ssize_t r = write(fd, &b, 1);
    (void)r;  /* a full pipe already wakes the thread */
  }
}

/* take_default gives 'sig' its default action: it is blocked while a
** handler runs, so it stays pending and acts once the handler returns. */
static void take_default(int sig) {
  struct sigaction d;
  memset(&d, 0, sizeof d);
  d.sa_handler = SIG_DFL;
  sigemptyset(&d.sa_mask);
  sigaction(sig, &d, NULL);
  raise(sig);
}

static void chain(int i, int sig, siginfo_t *si, void *uc) {
  void *fn = atomic_load(&prev_fn[i]);
  switch (atomic_load(&prev_kind[i])) {
    case PREV_IGN:
      break;
    case PREV_HANDLER:
      ((void (*)(int))fn)(sig);
      break;
    case PREV_ACTION:
      ((void (*)(int, siginfo_t *, void *))fn)(sig, si, uc);
      break;
    default:
      take_default(sig);
      break;
  }
}

static void on_signal(int sig, siginfo_t *si, void *uc) {
  int saved = errno, i = slot_of(sig);
  if (i < 0) goto out;
  if (atomic_load(&live[i]) > 0) {
    atomic_store(&pending[i], 1);
    poke(1);
  } else if (atomic_load(&held[i]) > 0) {
    take_default(sig);
  } else if (sig == SIGINT && atomic_load(&prev_kind[i]) >= PREV_HANDLER) {
    int mt = atomic_load(&main_tid);
    if (mt != 0 && (int)syscall(SYS_gettid) != mt) {
      syscall(SYS_tgkill, (int)getpid(), mt, sig);
      goto out;
    }
    chain(i, sig, si, uc);
    atomic_fetch_add(&int_gen, 1);
    atomic_store(&int_pending, 1);
    poke(1);
  } else {
    chain(i, sig, si, uc);
  }
out:
  errno = saved;
}

static bool is_ours(const struct sigaction *sa) {
  return (sa->sa_flags & SA_SIGINFO) && sa->sa_sigaction == on_signal;
}

static bool is_function(const struct sigaction *sa) {
  if (sa->sa_flags & SA_SIGINFO) return sa->sa_sigaction != NULL;
  return sa->sa_handler != SIG_DFL && sa->sa_handler != SIG_IGN;
}

/* }==================================================================== */


/* {====================================================================
** Registrations (signal contexts)
** ===================================================================== */

#define MAX_SIGS NSLOTS

struct tt_sigreg {
  tt_obj hdr;
  tt_ctx *ctx;             /* fixed */
  int slot[MAX_SIGS];      /* fixed */
  int n;                   /* fixed */
  bool live;               /* listening and not done; under S_mu */
  bool stopped;            /* under S_mu */
  tt_list link;            /* in 'regs' (which holds a reference) */
  tt_list flink;           /* on the signal thread's private list */
};

static void reg_free(tt_obj *o) {
  tt_sigreg *r = (tt_sigreg *)o;
  tt_unref(r->ctx);
  free(r);
}

static int reg_describe(tt_obj *o, char *buf, size_t n) {
  tt_sigreg *r = (tt_sigreg *)o;
  char names[64] = "";
  int i;
  for (i = 0; i < r->n; i++) {
    if (i > 0) strcat(names, " ");
    strcat(names, slots[r->slot[i]].name);
  }
  return snprintf(buf, n, "tether.SignalStop (%s)", names);
}

const tt_type tt_sigreg_type = {"tether.SignalStop", reg_free,
                                reg_describe, NULL};

/* unlive takes a registration that stops listening out of the counts the
** handler reads (under S_mu). */
static void unlive(tt_sigreg *r) {
  int i;
  if (!r->live) return;
  r->live = false;
  for (i = 0; i < r->n; i++) atomic_fetch_sub(&live[r->slot[i]], 1);
}

/* }==================================================================== */


/* {====================================================================
** The signal thread
** ===================================================================== */

/* The interrupt latch: fired and replaced at each interrupt. */
typedef struct ilatch {
  tt_obj hdr;
  tt_latch l;
} ilatch;

static void ilatch_free(tt_obj *o) {
  tt__latch_destroy(&((ilatch *)o)->l);
  free(o);
}

static const tt_type ilatch_type = {"tether.Interrupt", ilatch_free, NULL,
                                    NULL};

static pthread_mutex_t I_mu = PTHREAD_MUTEX_INITIALIZER;
static ilatch *cur_latch;  /* under I_mu; NULL until a wait needs one */

static void fire_interrupt(void) {
  ilatch *old;
  tt__lock(&I_mu);
  old = cur_latch;
  cur_latch = NULL;
  tt__unlock(&I_mu);
  if (old == NULL) return;
  tt__latch_set(&old->l);
  tt_unref(old);
}

/* signal_error makes the cause of a context canceled by 'slot'. */
static tt_obj *signal_error(int i) {
  char msg[64];
  tt_error *e;
  snprintf(msg, sizeof msg, "received signal SIG%s", slots[i].name);
  e = tt_error_new(TT_ESIGNAL, msg, NULL);
  if (e != NULL)
    e->value = (tt_obj *)tt_bytes_new(slots[i].name, strlen(slots[i].name));
  return (tt_obj *)e;
}

/* deliver cancels every context listening for slot 'i'. */
static void deliver(int i) {
  tt_list fire, *l;
  tt_obj *cause;
  tt_list_init(&fire);
  tt__lock(&S_mu);
  for (l = regs.next; l != &regs; l = l->next) {
    tt_sigreg *r = tt_container_of(l, tt_sigreg, link);
    int k;
    if (!r->live) continue;
    for (k = 0; k < r->n; k++)
      if (r->slot[k] == i) break;
    if (k == r->n) continue;
    unlive(r);
    tt_ref(r);
    tt_list_push(&fire, &r->flink);
  }
  tt__unlock(&S_mu);
  if (tt_list_empty(&fire)) return;
  cause = signal_error(i);
  while ((l = tt_list_shift(&fire)) != NULL) {
    tt_sigreg *r = tt_container_of(l, tt_sigreg, flink);
    tt_cancel(r->ctx, cause);
    tt_unref(r);
  }
  tt_unref(cause);
}

static void *sig_main(void *arg) {
  char buf[64];
  bool quit = false;
  int fd = (int)(intptr_t)arg;
  while (!quit) {
    ssize_t n = read(fd, buf, sizeof buf), k;
    int i;
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (k = 0; k < n; k++)
      if (buf[k] == 'q') quit = true;
    for (i = 0; i < NSLOTS; i++)
      if (atomic_exchange(&pending[i], 0)) deliver(i);
    if (atomic_exchange(&int_pending, 0)) fire_interrupt();
  }
  return NULL;
}

/* start_thread makes the pipe (once, for the life of the process: the
** handler may write to it at any time) and starts the thread; under
** S_mu. */
static int start_thread(void) {
  if (thread_on) return TT_OK;
  if (wake_r < 0) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return TT_ENOMEM;
    if (fcntl(fds[1], F_SETFL, O_NONBLOCK) != 0) {
      close(fds[0]);
      close(fds[1]);
      return TT_ENOMEM;
    }
    wake_r = fds[0];
    atomic_store(&wake_w, fds[1]);
  }
  if (tt__thread_start(&thread, sig_main, (void *)(intptr_t)wake_r,
                       false) != 0)
    return TT_ETHREAD;
  thread_on = true;
  return TT_OK;
}

static void restore(int i);

void tt__signal_shutdown(void) {
  int i;
  tt__lock(&S_mu);
  if (thread_on) {
    /* A handler that only chains to the program's own (Ctrl-C in waits)
    ** goes back to the program: the next interruptible wait installs it
    ** again.  Handlers that signal contexts hold stay, and so does the
    ** thread that serves them. */
    for (i = 0; i < NSLOTS; i++)
      if (atomic_load(&held[i]) == 0) restore(i);
    for (i = 0; i < NSLOTS; i++)
      if (atomic_load(&installed[i])) break;
    if (i == NSLOTS) {
      poke('q');
      TT_CHECK(pthread_join(thread, NULL));
      thread_on = false;
    }
  }
  tt__unlock(&S_mu);
}

/* }==================================================================== */


/* {====================================================================
** Installing and restoring dispositions (under S_mu)
** ===================================================================== */

static int install(int i, const struct sigaction *cur) {
  struct sigaction sa;
  int k, rc = start_thread();
  if (rc != TT_OK) return rc;
  prev_sa[i] = *cur;
  if (cur->sa_flags & SA_SIGINFO) {
    atomic_store(&prev_fn[i], (void *)cur->sa_sigaction);
    atomic_store(&prev_kind[i],
                 cur->sa_sigaction != NULL ? PREV_ACTION : PREV_DFL);
  } else {
    atomic_store(&prev_fn[i], (void *)cur->sa_handler);
    atomic_store(&prev_kind[i], cur->sa_handler == SIG_DFL ? PREV_DFL
                                : cur->sa_handler == SIG_IGN ? PREV_IGN
                                : PREV_HANDLER);
  }
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_signal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART | (cur->sa_flags & SA_ONSTACK);
  sigemptyset(&sa.sa_mask);
  for (k = 0; k < NSLOTS; k++) sigaddset(&sa.sa_mask, slots[k].sig);
  if (sigaction(slots[i].sig, &sa, NULL) != 0) return TT_EINVAL;
  atomic_store(&installed[i], 1);
  return TT_OK;
}

/* ensure makes sure tether's handler is the one installed for slot 'i',
** saving what was there before; 'always' installs it even over SIG_DFL
** and SIG_IGN (for a signal context). */
static int ensure(int i, bool always) {
  struct sigaction cur;
  if (sigaction(slots[i].sig, NULL, &cur) != 0) return TT_EINVAL;
  if (is_ours(&cur)) return TT_OK;
  atomic_store(&installed[i], 0);
  if (!always && !is_function(&cur)) return TT_OK;
  return install(i, &cur);
}

/* restore puts back what tether found, if tether's handler is still the
** one installed (a host may have replaced it since). */
static void restore(int i) {
  struct sigaction cur;
  if (!atomic_load(&installed[i])) return;
  atomic_store(&installed[i], 0);
  if (sigaction(slots[i].sig, NULL, &cur) == 0 && is_ours(&cur))
    sigaction(slots[i].sig, &prev_sa[i], NULL);
}

/* }==================================================================== */


/* {====================================================================
** Signal contexts
** ===================================================================== */

static void on_ctx_done(void *arg) {
  tt_sigreg *r = arg;
  tt__lock(&S_mu);
  unlive(r);
  tt__unlock(&S_mu);
  tt_unref(r);
}

static void drop_reg(void *arg) { tt_unref(arg); }

tt_ctx *tt_signal_context(tt_ctx *parent, const int *sigs, int n,
                          tt_sigreg **reg, int *err) {
  tt_sigreg *r;
  tt_ctx *ctx;
  tt_afterfunc *af;
  int i, k, rc = TT_OK;
  if (reg != NULL) *reg = NULL;
  if (parent == NULL || sigs == NULL || n < 1 || reg == NULL) {
    rc = TT_EINVAL;
    goto refuse;
  }
  r = calloc(1, sizeof *r);
  if (r == NULL) {
    rc = TT_ENOMEM;
    goto refuse;
  }
  tt_obj_init(&r->hdr, &tt_sigreg_type);
  tt_list_init(&r->link);
  tt_list_init(&r->flink);
  for (i = 0; i < n; i++) {
    int s = slot_of(sigs[i]);
    if (s < 0) {
      free(r);
      rc = TT_EINVAL;
      goto refuse;
    }
    for (k = 0; k < r->n; k++)
      if (r->slot[k] == s) break;
    if (k == r->n) r->slot[r->n++] = s;
  }
  ctx = tt_with_cancel(parent);
  if (ctx == NULL) {
    free(r);
    rc = TT_ENOMEM;
    goto refuse;
  }
  r->ctx = tt_ref(ctx);
  tt__lock(&S_mu);
  for (k = 0; k < r->n && rc == TT_OK; k++) rc = ensure(r->slot[k], true);
  if (rc != TT_OK) {
    for (k = 0; k < r->n; k++)
      if (atomic_load(&held[r->slot[k]]) == 0) restore(r->slot[k]);
    tt__unlock(&S_mu);
    tt_unref(ctx);
    tt_unref(r);
    goto refuse;
  }
  /* Counted as live before anything can make it done: on_ctx_done, which
  ** may run at once, takes it out again. */
  r->live = true;
  for (k = 0; k < r->n; k++) {
    atomic_fetch_add(&held[r->slot[k]], 1);
    atomic_fetch_add(&live[r->slot[k]], 1);
  }
  tt_list_push(&regs, &r->link);
  tt_ref(r);  /* the list's */
  tt__unlock(&S_mu);
  af = tt_after_func(ctx, on_ctx_done, tt_ref(r), drop_reg);
  if (af == NULL) {
    tt_unref(r);
    tt_signal_stop(r);
    tt_unref(ctx);
    tt_unref(r);
    rc = TT_ENOMEM;
    goto refuse;
  }
  tt_unref(af);
  *reg = r;
  if (err != NULL) *err = TT_OK;
  return ctx;
refuse:
  if (err != NULL) *err = rc;
  return NULL;
}

void tt_signal_stop(tt_sigreg *r) {
  int k;
  bool was;
  if (r == NULL) return;
  tt__lock(&S_mu);
  was = r->stopped;
  if (!was) {
    r->stopped = true;
    unlive(r);
    for (k = 0; k < r->n; k++)
      if (atomic_fetch_sub(&held[r->slot[k]], 1) == 1) restore(r->slot[k]);
    tt_list_remove(&r->link);
  }
  tt__unlock(&S_mu);
  if (was) return;
  tt_cancel(r->ctx, NULL);
  tt_unref(r);  /* the list's */
}

tt_ctx *tt_sigreg_context(tt_sigreg *r) { return r->ctx; }

/* }==================================================================== */


/* {====================================================================
** Interrupts
** ===================================================================== */

static _Thread_local int tl_depth;
static _Thread_local unsigned long tl_gen0;
static _Thread_local bool tl_hit;

void tt_interrupt_begin(void) {
  if (tl_depth++ == 0) {
    tl_gen0 = atomic_load(&int_gen);
    tl_hit = false;
  }
}

bool tt_interrupt_end(void) {
  bool hit = tl_hit;
  if (tl_depth > 0 && --tl_depth == 0) tl_hit = false;
  return hit;
}

void tt_interrupt(void) {
  atomic_fetch_add(&int_gen, 1);
  fire_interrupt();
}

unsigned long tt_interrupt_count(void) { return atomic_load(&int_gen); }

bool tt__interrupt_active(void) { return tl_depth > 0; }

void tt__interrupt_hit(void) {
  if (tl_depth > 0) tl_hit = true;
}

bool tt__interrupt_pending(void) {
  if (tl_depth == 0 || atomic_load(&int_gen) == tl_gen0) return false;
  tl_hit = true;
  return true;
}

/* arm installs the SIGINT handler for interrupts when the host's needs
** chaining (see DESIGN), and for a signal context whose handler the host
** replaced. */
static void arm(void) {
  struct sigaction cur;
  int i = 0;  /* SIGINT's slot */
  if (sigaction(SIGINT, NULL, &cur) != 0 || is_ours(&cur)) return;
  if (!is_function(&cur) && atomic_load(&held[i]) == 0) return;
  atomic_store(&main_tid, (int)syscall(SYS_gettid));
  tt__lock(&S_mu);
  ensure(i, atomic_load(&held[i]) > 0);
  tt__unlock(&S_mu);
}

tt_latch *tt__interrupt_latch(tt_obj **hold) {
  ilatch *l;
  arm();
  tt__lock(&I_mu);
  if (cur_latch == NULL) {
    cur_latch = calloc(1, sizeof *cur_latch);
    if (cur_latch != NULL) {
      tt_obj_init(&cur_latch->hdr, &ilatch_type);
      tt__latch_init(&cur_latch->l);
    }
  }
  l = tt_ref(cur_latch);
  tt__unlock(&I_mu);
  *hold = (tt_obj *)l;
  return l != NULL ? &l->l : NULL;
}

/* }==================================================================== */


/* {====================================================================
** Children
** ===================================================================== */

/* A child forked by an engine thread starts with that thread's mask,
** every signal blocked: it gets the default mask back. */
static void child_mask(void) {
  sigset_t none;
  if (!tt_engine_thread()) return;
  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &none, NULL);
}

static void atfork_once(void) {
  TT_CHECK(pthread_atfork(NULL, NULL, child_mask));
}

void tt__signal_atfork(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  TT_CHECK(pthread_once(&once, atfork_once));
}

/* }==================================================================== */
