/*
 * test_main.c - the C test harness: runs every registered case and prints
 * a closing line "N passed, M failed" (cases); exits 1 on any failure.
 *
 * Registration: csrc/Makefile scans csrc/tests/test_*.c for definitions of
 * the form `void test_<name>(void)` at the start of a line and writes them
 * as RG_TEST_CASE(test_<name>) lines into build/.../test_registry.h, which
 * is included twice below: once for the declarations, once for the table.
 *
 * Usage: test_core [substring]   runs only the cases whose name contains it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "rg_test.h"

#define RG_TEST_CASE(name) void name(void);
#include "test_registry.h"
#undef RG_TEST_CASE

typedef struct test_case {
    const char *name;
    void (*run)(void);
} test_case;

static const test_case all_cases[] = {
#define RG_TEST_CASE(name) {#name, name},
#include "test_registry.h"
#undef RG_TEST_CASE
    {NULL, NULL} /* keeps the array non-empty when no case is registered */
};

static long checks_run = 0;
static long checks_failed_in_case = 0;
static const char *current_case = "?";

int rg_test_check(int ok, const char *file, int line, const char *format, ...)
{
    checks_run++;
    if (!ok) {
        checks_failed_in_case++;
        va_list args;
        va_start(args, format);
        fprintf(stderr, "  FAIL %s (%s:%d): ", current_case, file, line);
        vfprintf(stderr, format, args);
        fputc('\n', stderr);
        va_end(args);
    }
    return ok;
}

int rg_test_check_status(rg_status actual, rg_status expected, const char *file, int line,
                         const char *expression)
{
    return rg_test_check(actual == expected, file, line, "%s returned %d (%s), expected %d (%s)",
                         expression, (int)actual, rg_status_string(actual), (int)expected,
                         rg_status_string(expected));
}

int rg_test_check_close(double actual, double expected, double tolerance, const char *file,
                        int line, const char *expression)
{
    int ok = fabs(actual - expected) <= tolerance; /* false for NaN */
    return rg_test_check(ok, file, line, "%s = %.17g, expected %.17g (tolerance %.3g)",
                         expression, actual, expected, tolerance);
}

int rg_test_check_eq(long long actual, long long expected, const char *file, int line,
                     const char *expression)
{
    return rg_test_check(actual == expected, file, line, "%s = %lld, expected %lld", expression,
                         actual, expected);
}

int main(int argc, char **argv)
{
    /* NAME: only the cases whose name contains it; -NAME: all but those */
    const char *filter = argc > 1 ? argv[1] : NULL;
    const int exclude = filter != NULL && filter[0] == '-';
    int passed = 0, failed = 0;
    for (const test_case *tc = all_cases; tc->name != NULL; tc++) {
        if (filter != NULL && (strstr(tc->name, filter + exclude) == NULL) != exclude)
            continue;
        current_case = tc->name;
        checks_failed_in_case = 0;
        tc->run();
        if (checks_failed_in_case == 0) {
            passed++;
            printf("ok   %s\n", tc->name);
        } else {
            failed++;
            printf("FAIL %s (%ld failed checks)\n", tc->name, checks_failed_in_case);
        }
        fflush(stdout);
    }
    printf("%ld checks\n", checks_run);
    printf("%d passed, %d failed\n", passed, failed);
    if (passed + failed == 0) {
        fprintf(stderr, "no test case ran%s%s\n", filter ? " for filter " : "", filter ? filter : "");
        return 1;
    }
    return failed == 0 ? 0 : 1;
}
