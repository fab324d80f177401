/*
** harness.h -- a small test harness for the engine's C tests.
**
** TEST(name) defines a test and registers it (a constructor adds it to a
** list, so a file needs no test table); CHECK(cond) and CHECK_EQ(a, b)
** record a failure with its line and let the test go on; main() comes
** from TEST_MAIN() and prints one last line "N passed, N failed".
*/
#ifndef tether_harness_h
#define tether_harness_h

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tether.h"

typedef struct th_test {
  const char *name;
  void (*fn)(void);
  struct th_test *next;
} th_test;

static th_test *th_tests, **th_tail = &th_tests;
static int th_failed_checks;

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

#define CHECK_EQ(a, b) \
  do { long long th_a = (long long)(a), th_b = (long long)(b); \
    if (th_a != th_b) { th_failed_checks++; \
      fprintf(stderr, "  %s:%d: %s == %s: got %lld, want %lld\n", \
              __FILE__, __LINE__, #a, #b, th_a, th_b); } } while (0)

#define TEST_MAIN() \
  int main(int argc, char **argv) { \
    int passed = 0, failed = 0; th_test *t; \
    for (t = th_tests; t != NULL; t = t->next) { \
      int before = th_failed_checks; \
      if (argc > 1 && strcmp(argv[1], t->name) != 0) continue; \
      t->fn(); \
      if (th_failed_checks == before) { passed++; \
        printf("PASS %s\n", t->name); } \
      else { failed++; printf("FAIL %s\n", t->name); } \
    } \
    tt_shutdown(); \
    printf("%d passed, %d failed\n", passed, failed); \
    return failed == 0 ? 0 : 1; \
  }

#endif
