/*
** harness.h -- a small test harness for the engine's C tests.
**
** TEST(name) defines a test and registers it (a constructor adds it to a
** list, so a file needs no test table); CHECK(cond) and CHECK_EQ(a, b)
** record a failure with its line and let the test go on; main() comes
** from TEST_MAIN() and prints one last line "N passed, N failed".  A
** test name given on the command line runs that test only.
**
** Every test runs under a timeout, so that a test that hangs (a deadlock
** is what several of them look for) fails instead of stopping the suite:
** SIGALRM names the test on stderr and ends the process with status 3.
** The timeout is TETHER_TEST_TIMEOUT seconds when that is set (make
** check sets it for valgrind), else 60, or 300 in a sanitized build.
**
** WAIT_FOR(cond, secs) polls a condition that no latch or channel can
** report (a count inside the engine) for at most 'secs' seconds; the
** check that follows it fails if the time ran out.
*/
#ifndef tether_harness_h
#define tether_harness_h

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tether.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TH_DEFAULT_TIMEOUT 300
#else
#define TH_DEFAULT_TIMEOUT 60
#endif

typedef struct th_test {
  const char *name;
  void (*fn)(void);
  struct th_test *next;
} th_test;

static th_test *th_tests, **th_tail = &th_tests;
static int th_failed_checks;
static const char *volatile th_current = "(none)";

#define TEST(name) \
  static void test_##name(void); \
  static th_test th_rec_##name = {#name, test_##name, NULL}; \
  __attribute__((constructor)) static void th_reg_##name(void) { \
    *th_tail = &th_rec_##name; th_tail = &th_rec_##name.next; } \
  static void test_##name(void)

#define CHECK(cond) \
  do { if (!(cond)) { th_failed_checks++; \
    fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, \
            #cond); } } while (0)

/* REQUIRE is a CHECK that ends the test when it fails, for what the rest
** of the test depends on (a pointer it dereferences). */
#define REQUIRE(cond) \
  do { if (!(cond)) { th_failed_checks++; \
    fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, \
            #cond); return; } } while (0)

#define CHECK_EQ(a, b) \
  do { long long th_a = (long long)(a), th_b = (long long)(b); \
    if (th_a != th_b) { th_failed_checks++; \
      fprintf(stderr, "  %s:%d: %s == %s: got %lld, want %lld\n", \
              __FILE__, __LINE__, #a, #b, th_a, th_b); } } while (0)

/* th_sleep_us sleeps about 'us' microseconds (usleep is obsolescent). */
static inline void th_sleep_us(long us) {
  struct timespec ts;
  ts.tv_sec = us / 1000000;
  ts.tv_nsec = (us % 1000000) * 1000;
  nanosleep(&ts, NULL);
}

/* th_adds_up tells whether a pool's stats satisfy the accounting
** identity of tether.h, which every pool test checks after its ops. */
static inline bool th_adds_up(const tt_pool_stats *s) {
  return s->submitted == s->completed + s->failed + s->stopped + s->dead +
                         s->spilled + s->abandoned + s->queued +
                         s->inflight;
}

/* th_nap sleeps about a millisecond, for WAIT_FOR's polling only. */
static inline void th_nap(void) { th_sleep_us(1000); }

static inline unsigned th_timeout(void);

/* th_slow is how much slower than a plain build this run is allowed to
** be: the per-test timeout over a plain build's 60 s (5 under the
** sanitizers, 10 under valgrind, whose harness sets TETHER_TEST_TIMEOUT
** to 600), never below 1.  Bounded waits scale by it, so that a loaded
** machine running valgrind, which serialises every thread, is not
** mistaken for a bug. */
static inline double th_slow(void) {
  double f = (double)th_timeout() / 60.0;
  return f > 1 ? f : 1;
}

/* WAIT_FOR polls 'cond' for at most 'secs' seconds (times th_slow). */
#define WAIT_FOR(cond, secs) \
  do { double wf_end = tt_now() + (secs) * th_slow(); \
    while (!(cond) && tt_now() < wf_end) th_nap(); } while (0)

/* th_on_small_stack runs fn(arg) on a thread with a 256 KiB stack, for
** tests of code that must run in constant stack depth: a recursion once
** per link of a long chain would overflow it, whatever the main thread's
** stack limit is. */
static inline void th_on_small_stack(void *(*fn)(void *), void *arg) {
  pthread_attr_t a;
  pthread_t t;
  CHECK_EQ(pthread_attr_init(&a), 0);
  CHECK_EQ(pthread_attr_setstacksize(&a, 256 * 1024), 0);
  CHECK_EQ(pthread_create(&t, &a, fn, arg), 0);
  CHECK_EQ(pthread_join(t, NULL), 0);
  CHECK_EQ(pthread_attr_destroy(&a), 0);
}

/* th_write writes a string with write(2), which a signal handler may. */
static inline void th_write(const char *s) {
  size_t n = strlen(s);
  while (n > 0) {
    ssize_t w = write(2, s, n);
    if (w <= 0) return;
    s += w;
    n -= (size_t)w;
  }
}

static inline void th_on_alarm(int sig) {
  (void)sig;
  th_write("TIMEOUT ");
  th_write(th_current);
  th_write(": the test did not end in time (TETHER_TEST_TIMEOUT)\n");
  _exit(3);
}

/* th_timeout returns the per-test timeout in seconds. */
static inline unsigned th_timeout(void) {
  const char *e = getenv("TETHER_TEST_TIMEOUT");
  long n = e != NULL ? strtol(e, NULL, 10) : 0;
  return n > 0 ? (unsigned)n : TH_DEFAULT_TIMEOUT;
}

#define TEST_MAIN() \
  int main(int argc, char **argv) { \
    int passed = 0, failed = 0; th_test *t; \
    unsigned limit = th_timeout(); \
    struct sigaction sa; \
    memset(&sa, 0, sizeof sa); \
    sa.sa_handler = th_on_alarm; \
    sigaction(SIGALRM, &sa, NULL); \
    for (t = th_tests; t != NULL; t = t->next) { \
      int before = th_failed_checks; \
      if (argc > 1 && strcmp(argv[1], t->name) != 0) continue; \
      th_current = t->name; \
      alarm(limit); \
      t->fn(); \
      alarm(0); \
      if (th_failed_checks == before) { passed++; \
        printf("PASS %s\n", t->name); } \
      else { failed++; printf("FAIL %s\n", t->name); } \
      fflush(stdout); \
    } \
    th_current = "(shutdown)"; \
    alarm(limit); \
    tt_shutdown(); \
    alarm(0); \
    printf("%d passed, %d failed\n", passed, failed); \
    return failed == 0 ? 0 : 1; \
  }

#endif
