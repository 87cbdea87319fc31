/*
 * rg_test.h - the checks of the C test harness (csrc/tests/test_main.c).
 *
 * Writing tests: in any csrc/tests/test_<area>.c, define cases as
 *
 *     void test_<area>_<what>(void)
 *     {
 *         RG_CHECK(x == 3);
 *         RG_CHECK_STATUS(rg_thing_do(...), RG_OK);
 *         RG_CHECK_CLOSE(value, 0.25, 1e-12);
 *     }
 *
 * with `void test_...(void)` at the start of a line and not static: the
 * Makefile finds such definitions by pattern and registers them, so no list
 * has to be edited. A case passes when none of its checks fails; a failed
 * check prints file:line and goes on (it does not end the case).
 */
#ifndef RG_TEST_H
#define RG_TEST_H

#include <math.h>

#include "rg_common.h"

/* Records one check; prints the message (printf format) when ok == 0.
 * Returns ok so that a case can stop early: if (!RG_CHECK(p)) return; */
int rg_test_check(int ok, const char *file, int line, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

#define RG_CHECK(condition) \
    rg_test_check((condition) ? 1 : 0, __FILE__, __LINE__, "%s", #condition)

/* `call` must return `expected` (both rg_status). */
#define RG_CHECK_STATUS(call, expected)                                                     \
    rg_test_check_status((call), (expected), __FILE__, __LINE__, #call)

/* |actual - expected| <= tolerance, both as doubles; NaN never passes. */
#define RG_CHECK_CLOSE(actual, expected, tolerance)                                          \
    rg_test_check_close((double)(actual), (double)(expected), (double)(tolerance), __FILE__,  \
                        __LINE__, #actual)

/* Integer equality with both values printed on failure. */
#define RG_CHECK_EQ(actual, expected)                                                        \
    rg_test_check_eq((long long)(actual), (long long)(expected), __FILE__, __LINE__, #actual)

int rg_test_check_status(rg_status actual, rg_status expected, const char *file, int line,
                         const char *expression);
int rg_test_check_close(double actual, double expected, double tolerance, const char *file,
                        int line, const char *expression);
int rg_test_check_eq(long long actual, long long expected, const char *file, int line,
                     const char *expression);

#endif /* RG_TEST_H */
