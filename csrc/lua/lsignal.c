/*
** lsignal.c -- signals and interrupts in Lua: tether.signal_context,
** tether.run_context, Ctrl-C in the waits of the main state, and the
** commands of worker states, which get the default signal mask.
**
** Ctrl-C.  Each blocking call of the binding runs its wait inside an
** interruptible section of the engine (lt_wait_begin/lt_wait_end), unless
** it runs on an engine thread: only the waits of a program's own states
** wake on Ctrl-C, work learns of signals through its contexts.  When the
** engine reports the wait interrupted, the call raises Lua's usual
** "interrupted!", as lua.c's own SIGINT handler makes running Lua code do.
** That handler ran too (the engine chains to it), and left a hook on the
** main Lua thread that would raise "interrupted!" a second time; the call
** puts back the hooks it found when it began, then raises once.
**
** Commands.  A child process inherits the mask of the thread that starts
** it, and engine threads block every signal; glibc's system() and popen()
** start the shell with posix_spawn, which runs no atfork handler, and
** system() also ignores SIGINT in the whole process while it waits.  So
** worker states get their own os.execute and io.popen: the same Lua
** behaviour, the shell started by posix_spawn with the default mask and
** default dispositions, and nothing changed in the parent.
*/
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lualib.h>

#include "ltether.h"

extern char **environ;

/* {====================================================================
** Interruptible waits
** ===================================================================== */

/* main_of returns the main Lua thread of L's state, where lua.c's SIGINT
** handler leaves its hook. */
static lua_State *main_of(lua_State *L) {
  lua_State *m;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  m = lua_tothread(L, -1);
  lua_pop(L, 1);
  return m;
}

/* lt_save_hooks records the hooks of L and of its state's main thread,
** so that lt_restore_hooks can take back the hook a SIGINT handler set
** while L waited. */
void lt_save_hooks(lua_State *L, lt_wait *w) {
  w->on = !tt_engine_thread();
  w->main = main_of(L);
  w->hook = lua_gethook(L);
  w->mask = lua_gethookmask(L);
  w->count = lua_gethookcount(L);
  w->mhook = lua_gethook(w->main);
  w->mmask = lua_gethookmask(w->main);
  w->mcount = lua_gethookcount(w->main);
}

/* lt_restore_hooks puts back the hooks lt_save_hooks recorded. */
void lt_restore_hooks(lua_State *L, const lt_wait *w) {
  lua_sethook(L, w->hook, w->mask, w->count);
  if (w->main != L) lua_sethook(w->main, w->mhook, w->mmask, w->mcount);
}

/* lt_wait_begin opens an interruptible wait for a blocking call of the
** binding: in a program's own state it records the hooks and enters the
** engine's interruptible section; on an engine thread it does nothing,
** so that only the main state's waits wake on Ctrl-C. */
void lt_wait_begin(lua_State *L, lt_wait *w) {
  w->on = !tt_engine_thread();
  if (!w->on) return;
  lt_save_hooks(L, w);
  tt_interrupt_begin();
}

/* lt_wait_end closes the wait lt_wait_begin opened and returns true when
** Ctrl-C interrupted it, after restoring the hooks (the caller then
** raises once, with lt_interrupted, after releasing what it held). */
bool lt_wait_end(lua_State *L, lt_wait *w) {
  if (!w->on || !tt_interrupt_end()) return false;
  lt_restore_hooks(L, w);
  return true;
}

/* lt_interrupted raises "interrupted!", lua.c's own words for Ctrl-C. */
int lt_interrupted(lua_State *L) { return luaL_error(L, "interrupted!"); }

/* }==================================================================== */


/* {====================================================================
** Signal contexts
** ===================================================================== */

/* check_signal reads the signal at argument 'arg': a name ("INT",
** "SIGINT", any case) or a number. */
static int check_signal(lua_State *L, int arg) {
  char name[16];
  const char *s;
  size_t len, i;
  int sig;
  if (lua_type(L, arg) == LUA_TNUMBER) {
    lua_Integer n = luaL_checkinteger(L, arg);
    sig = n > 0 && n < 65 ? (int)n : 0;
    s = sig != 0 ? tt_signal_name(sig) : NULL;
    if (s == NULL) {
      lua_pushfstring(L, "unknown signal %d", (int)n);
      return luaL_argerror(L, arg, lua_tostring(L, -1));
    }
  } else {
    s = lua_tolstring(L, arg, &len);
    if (s == NULL) return luaL_typeerror(L, arg, "signal name");
    for (i = 0; i < len && i < sizeof name - 1; i++)
      name[i] = (char)((s[i] >= 'a' && s[i] <= 'z') ? s[i] - 32 : s[i]);
    name[i] = '\0';
    sig = len < sizeof name ? tt_signal_number(name) : 0;
    if (sig == 0) {
      lua_pushfstring(L, "unknown signal '%s'", s);
      return luaL_argerror(L, arg, lua_tostring(L, -1));
    }
    s = tt_signal_name(sig);
  }
  if (sig == SIGKILL || sig == SIGSTOP) {
    lua_pushfstring(L, "signal '%s' cannot be caught", s);
    return luaL_argerror(L, arg, lua_tostring(L, -1));
  }
  if (!tt_signal_supported(sig)) {
    lua_pushfstring(L, "signal '%s' is not supported (INT, TERM, HUP, "
                    "USR1 and USR2 are)", s);
    return luaL_argerror(L, arg, lua_tostring(L, -1));
  }
  return sig;
}

/* push_signal_pair pushes a signal context and its stop, taking over the
** references; a NULL context raises "cannot start the signal thread" or
** "not enough memory", as the engine's error says. */
static int push_signal_pair(lua_State *L, tt_ctx *ctx, tt_sigreg *reg,
                            int err) {
  if (ctx == NULL) {
    if (err == TT_ETHREAD)
      return luaL_error(L, "cannot start the signal thread");
    return luaL_error(L, "not enough memory");
  }
  lt_pushnew(L, ctx);
  lt_pushnew(L, reg);
  return 2;
}

/* tether.signal_context(parent, sig, ...) -> ctx, stop: as Go's
** signal.NotifyContext, a child of 'parent' canceled by the first of the
** signals to arrive, its cause an error of code "signal" whose 'signal'
** names it ("TERM").  Signals are names ("INT", "SIGTERM", "term") or
** numbers, 1 to 16 of them, among INT, TERM, HUP, USR1 and USR2.  While
** the context waits, those signals cancel it instead of interrupting
** waits; once it is done, until stop(), they take their default action
** (a second Ctrl-C ends a program stuck in its drain).  stop()
** unregisters it and restores the previous dispositions.  Raises for a
** non-context 'parent', no signal, more than 16, an unknown one, one
** that cannot be caught (KILL, STOP), an unsupported one, and when the
** engine's signal thread cannot start. */
static int l_signal_context(lua_State *L) {
  tt_ctx *parent = lt_checkobj(L, 1, &tt_ctx_type);
  int sigs[16], n = lua_gettop(L) - 1, i, err = TT_OK;
  tt_sigreg *reg = NULL;
  tt_ctx *ctx;
  if (n < 1) return luaL_typeerror(L, 2, "signal name");
  luaL_argcheck(L, n <= 16, 18, "too many signals");
  for (i = 0; i < n; i++) sigs[i] = check_signal(L, i + 2);
  ctx = tt_signal_context(parent, sigs, n, &reg, &err);
  return push_signal_pair(L, ctx, reg, err);
}

/* stop() (__call) and <close> (__close) of a tether.SignalStop:
** unregisters the signal context and restores the signals' previous
** dispositions; later calls do nothing.  The context itself is left as
** it is (done or not). */
static int stop_call(lua_State *L) {
  tt_signal_stop(lt_checkobj(L, 1, &tt_sigreg_type));
  return 0;
}

/* The root context of tether.run_context: one for the process. */
static pthread_mutex_t run_mu = PTHREAD_MUTEX_INITIALIZER;
static tt_ctx *run_ctx;        /* under run_mu; lives for the process */
static tt_sigreg *run_reg;

/* tether.run_context() -> ctx, stop: the script's root context, the one
** signal context of the process that SIGINT and SIGTERM cancel, made by
** the first call and returned by every later one (from any state or
** thread, hence the lock).  Under `tether run` the runner makes it first
** and drains every pool on it; its stop() is the runner's.  Raises as
** signal_context does when it cannot be made (a later call tries
** again). */
static int l_run_context(lua_State *L) {
  int sigs[2] = {SIGINT, SIGTERM}, err = TT_OK;
  tt_ctx *ctx;
  tt_sigreg *reg;
  if (pthread_mutex_lock(&run_mu) != 0)
    return luaL_error(L, "cannot lock the run context");
  if (run_ctx == NULL)
    run_ctx = tt_signal_context(tt_background(), sigs, 2, &run_reg, &err);
  ctx = tt_ref(run_ctx);
  reg = tt_ref(run_reg);
  if (pthread_mutex_unlock(&run_mu) != 0) {
    tt_unref(ctx);
    tt_unref(reg);
    return luaL_error(L, "cannot unlock the run context");
  }
  return push_signal_pair(L, ctx, reg, err);
}

/* }==================================================================== */


/* {====================================================================
** Commands of worker states
** ===================================================================== */

/* spawn_sh starts "/bin/sh -c cmd" with the default signal mask and
** default dispositions; 'dup_from'/'dup_to' (-1: none) make one pipe end
** the child's stdin or stdout.  Returns the pid or -1 with errno set. */
static pid_t spawn_sh(const char *cmd, int dup_from, int dup_to) {
  static const int deflt[] = {SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGUSR1,
                              SIGUSR2, SIGPIPE};
  posix_spawnattr_t at;
  posix_spawn_file_actions_t fa;
  sigset_t none, def;
  char *argv[4];
  pid_t pid = -1;
  size_t i;
  int e;
  argv[0] = (char *)"sh";
  argv[1] = (char *)"-c";
  argv[2] = (char *)cmd;
  argv[3] = NULL;
  sigemptyset(&none);
  sigemptyset(&def);
  for (i = 0; i < sizeof deflt / sizeof deflt[0]; i++)
    sigaddset(&def, deflt[i]);
  if ((e = posix_spawnattr_init(&at)) != 0) {
    errno = e;
    return -1;
  }
  if ((e = posix_spawn_file_actions_init(&fa)) != 0) {
    posix_spawnattr_destroy(&at);
    errno = e;
    return -1;
  }
  e = posix_spawnattr_setsigmask(&at, &none);
  if (e == 0) e = posix_spawnattr_setsigdefault(&at, &def);
  if (e == 0)
    e = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
  if (e == 0 && dup_from >= 0)
    e = posix_spawn_file_actions_adddup2(&fa, dup_from, dup_to);
  if (e == 0) e = posix_spawn(&pid, "/bin/sh", &fa, &at, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  if (e != 0) {
    errno = e;
    return -1;
  }
  return pid;
}

/* wait_child waits for 'pid' and returns its wait status, or -1 with
** errno set. */
static int wait_child(pid_t pid) {
  int st = 0;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return -1;
  return st;
}

/* os.execute([cmd]) in a worker state, as Lua's: true (or fail), "exit"
** or "signal", and the code; with no command, whether a shell exists.
** The shell starts with the default signal mask and dispositions
** (spawn_sh), and nothing in the process is changed while it runs. */
static int w_execute(lua_State *L) {
  const char *cmd = luaL_optstring(L, 1, NULL);
  pid_t pid;
  int st;
  if (cmd == NULL) {
    lua_pushboolean(L, access("/bin/sh", X_OK) == 0);
    return 1;
  }
  pid = spawn_sh(cmd, -1, -1);
  if (pid < 0) return luaL_fileresult(L, 0, NULL);
  st = wait_child(pid);
  if (st < 0) return luaL_fileresult(L, 0, NULL);
  errno = 0;
  return luaL_execresult(L, st);
}

/* A stream of io.popen: liolib's, with the child's pid. */
typedef struct wproc {
  luaL_Stream s;
  pid_t pid;
} wproc;

/* The close function of a w_popen stream (file:close() and io.close):
** closes the stream and waits for the child, then returns as Lua's
** pclose does (true or fail, "exit" or "signal", the code). */
static int w_pclose(lua_State *L) {
  wproc *p = (wproc *)luaL_checkudata(L, 1, LUA_FILEHANDLE);
  int st;
  fclose(p->s.f);
  st = wait_child(p->pid);
  if (st < 0) return luaL_fileresult(L, 0, NULL);
  errno = 0;
  return luaL_execresult(L, st);
}

/* io.popen(cmd [, mode]) in a worker state, as Lua's: a file handle on
** a pipe to the shell's stdout ("r", the default) or stdin ("w"), or
** fail, a message and errno.  Raises for another mode ("invalid mode").
** The handle is made closed first (liolib's __gc skips it), so that an
** error on the way leaks neither the pipe nor the child. */
static int w_popen(lua_State *L) {
  const char *cmd = luaL_checkstring(L, 1);
  const char *mode = luaL_optstring(L, 2, "r");
  bool rd = mode[0] == 'r';
  int fds[2], mine, theirs;
  wproc *p;
  pid_t pid;
  luaL_argcheck(L, (mode[0] == 'r' || mode[0] == 'w') && mode[1] == '\0',
                2, "invalid mode");
  /* A closed stream first (liolib's __gc skips it), then the resources. */
  p = (wproc *)lua_newuserdatauv(L, sizeof *p, 0);
  p->s.f = NULL;
  p->s.closef = NULL;
  luaL_setmetatable(L, LUA_FILEHANDLE);
  if (pipe2(fds, O_CLOEXEC) != 0) return luaL_fileresult(L, 0, cmd);
  mine = rd ? fds[0] : fds[1];
  theirs = rd ? fds[1] : fds[0];
  pid = spawn_sh(cmd, theirs, rd ? 1 : 0);
  close(theirs);
  if (pid < 0) {
    int e = errno;
    close(mine);
    errno = e;
    return luaL_fileresult(L, 0, cmd);
  }
  p->s.f = fdopen(mine, mode);
  if (p->s.f == NULL) {
    int e = errno;
    close(mine);
    wait_child(pid);
    errno = e;
    return luaL_fileresult(L, 0, cmd);
  }
  p->pid = pid;
  p->s.closef = w_pclose;
  return 1;
}

/* use_spawn puts the two functions in the os and io tables of this
** state. */
static void use_spawn(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, LUA_OSLIBNAME) == LUA_TTABLE) {
    lua_pushcfunction(L, w_execute);
    lua_setfield(L, -2, "execute");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, -1, LUA_IOLIBNAME) == LUA_TTABLE &&
      luaL_getmetatable(L, LUA_FILEHANDLE) == LUA_TTABLE) {
    lua_pop(L, 1);
    lua_pushcfunction(L, w_popen);
    lua_setfield(L, -2, "popen");
  } else {
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
}

/* }==================================================================== */


void lt_open_signal(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"signal_context", l_signal_context},
    {"run_context", l_run_context},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__call", stop_call},
    {"__close", stop_call},
    {NULL, NULL}
  };
  lt_newtype(L, &tt_sigreg_type, NULL, meta);
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
  if (tt_engine_thread()) use_spawn(L);
}
