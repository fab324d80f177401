/*
** log.c -- the engine's log: one JSON object per line, to stderr unless
** the embedder sets a sink.
**
** A record is formatted once, on the thread that logs it, into a buffer
** of its own, and handed to the sink whole, so that lines from several
** threads never interleave.  The sink is read under a read lock held
** while it runs: tt_log_set_sink takes the write lock, so once it returns
** no thread still runs the old sink and its state may be freed.
**
** Lock order: 'sink_lock' is a leaf for the engine (a sink must not set
** the sink); the default sink takes stdio's stderr lock inside it.
**
** A file sink (tt_log_set_file) opens its file with O_APPEND and writes
** each record with one write(2): the kernel appends it whole at the end
** of the file, so lines from several threads, and from several processes
** sharing the file, never interleave.  Replacing a sink releases the
** old one's state (a file sink's file is closed) once no thread still
** writes to it.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static _Atomic int level = TT_LOG_INFO;
static pthread_rwlock_t sink_lock = PTHREAD_RWLOCK_INITIALIZER;
static tt_log_sink sink_fn;     /* NULL: stderr; under 'sink_lock' */
static void *sink_ud;           /* under 'sink_lock' */
static void (*sink_release)(void *ud);  /* under 'sink_lock' */

static const char *const level_names[] = {"debug", "info", "warn", "error",
                                          "off"};

const char *tt_log_level_name(int l) {
  if (l < TT_LOG_DEBUG || l > TT_LOG_OFF) return "info";
  return level_names[l];
}

int tt_log_level_parse(const char *name) {
  int l;
  if (name == NULL) return -1;
  for (l = TT_LOG_DEBUG; l <= TT_LOG_OFF; l++)
    if (strcmp(name, level_names[l]) == 0) return l;
  return -1;
}

void tt_log_set_level(int l) {
  if (l < TT_LOG_DEBUG) l = TT_LOG_DEBUG;
  if (l > TT_LOG_OFF) l = TT_LOG_OFF;
  atomic_store(&level, l);
}

int tt_log_get_level(void) { return atomic_load(&level); }

bool tt_log_enabled(int l) {
  return l < TT_LOG_OFF && l >= atomic_load_explicit(&level,
                                                     memory_order_relaxed);
}

void tt_log_set_sink_owned(tt_log_sink fn, void *ud,
                           void (*release)(void *ud)) {
  void (*old_release)(void *);
  void *old_ud;
  /* The write lock waits for the threads still in the old sink. */
  TT_CHECK(pthread_rwlock_wrlock(&sink_lock));
  old_release = sink_release;
  old_ud = sink_ud;
  sink_fn = fn;
  sink_ud = ud;
  sink_release = release;
  TT_CHECK(pthread_rwlock_unlock(&sink_lock));
  if (old_release != NULL) old_release(old_ud);
}

void tt_log_set_sink(tt_log_sink fn, void *ud) {
  tt_log_set_sink_owned(fn, ud, NULL);
}

/* write_all writes 'n' bytes with as few writes as the kernel allows: one
** for a regular file opened O_APPEND, which the kernel appends whole. */
static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    p += w;
    n -= (size_t)w;
  }
}

/* A file sink's state. */
typedef struct file_sink_ud {
  int fd;
} file_sink_ud;

static void file_sink(const tt_log_record *r, void *ud) {
  write_all(((file_sink_ud *)ud)->fd, r->line, r->len);
}

static void file_release(void *ud) {
  file_sink_ud *f = ud;
  close(f->fd);
  free(f);
}

int tt_log_set_file(const char *path) {
  file_sink_ud *f;
  int fd;
  if (path == NULL) {
    errno = EINVAL;
    return TT_EINVAL;
  }
  fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) return TT_EINVAL;
  f = malloc(sizeof *f);
  if (f == NULL) {
    close(fd);
    return TT_ENOMEM;
  }
  f->fd = fd;
  tt_log_set_sink_owned(file_sink, f, file_release);
  return TT_OK;
}

/* write_stderr writes the whole line with as few writes as the kernel
** allows, bypassing stdio's buffer so a line is never split by another
** thread's output through the same FILE. */
static void write_stderr(const char *p, size_t n) {
  flockfile(stderr);
  fflush(stderr);
  write_all(STDERR_FILENO, p, n);
  funlockfile(stderr);
}

/* format writes the record's JSON line into 'b'. */
static void format(tt_buf *b, const tt_log_record *r) {
  size_t i;
  tt_buf_adds(b, "{\"ts\":\"");
  tt_buf_rfc3339(b, r->ts);
  tt_buf_adds(b, "\",\"level\":\"");
  tt_buf_adds(b, tt_log_level_name(r->level));
  tt_buf_adds(b, "\",\"msg\":");
  tt_buf_json_str(b, r->msg, r->msg != NULL ? strlen(r->msg) : 0);
  for (i = 0; i < r->nfields; i++) {
    const tt_field *f = &r->fields[i];
    tt_buf_addc(b, ',');
    tt_buf_json_str(b, f->key, strlen(f->key));
    tt_buf_addc(b, ':');
    switch (f->kind) {
      case TT_F_INT: tt_buf_addf(b, "%lld", f->i); break;
      case TT_F_NUM: tt_buf_json_num(b, f->n); break;
      case TT_F_BOOL: tt_buf_adds(b, f->i ? "true" : "false"); break;
      default:
        tt_buf_json_str(b, f->s, f->s == NULL ? 0
                        : f->len == (size_t)-1 ? strlen(f->s) : f->len);
    }
  }
  tt_buf_adds(b, "}\n");
}

void tt_log(int l, const char *msg, const tt_field *fields, size_t n) {
  tt_log_record r;
  tt_buf b = TT_BUF_INIT;
  if (!tt_log_enabled(l)) return;
  r.ts = tt_wall();
  r.level = l;
  r.msg = msg != NULL ? msg : "";
  r.fields = fields;
  r.nfields = n;
  r.line = NULL;           /* set below, from the formatted buffer */
  r.len = 0;
  format(&b, &r);
  if (b.failed) {
    /* Out of memory: say so in a line that needs no allocation. */
    static const char oom[] =
        "{\"level\":\"error\",\"msg\":\"log record lost: no memory\"}\n";
    tt_buf_free(&b);
    write_stderr(oom, sizeof oom - 1);
    return;
  }
  r.line = b.data;
  r.len = b.len;
  TT_CHECK(pthread_rwlock_rdlock(&sink_lock));
  if (sink_fn != NULL)
    sink_fn(&r, sink_ud);
  else
    write_stderr(r.line, r.len);
  TT_CHECK(pthread_rwlock_unlock(&sink_lock));
  tt_buf_free(&b);
}
