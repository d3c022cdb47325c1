/* The few lines every test/unit/test_<module>.c needs to be its own CUnit executable:
 *
 *     static void test_something(void) { CU_ASSERT_EQUAL(1, 1); }
 *     PF_UNIT_MAIN("router", PF_UNIT_TEST(test_something), ...)
 *
 * One suite per binary, CUnit's verbose run and summary on stdout, exit status 1 on any
 * failure. An optional argument runs only the tests whose names contain it. */
#ifndef PF_TEST_UNIT_H
#define PF_TEST_UNIT_H

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

typedef struct pf_unit_test {
    const char *name;
    void (*fn)(void);
} pf_unit_test;

#define PF_UNIT_TEST(fn)                                                                           \
    { #fn, fn }

/* Like CU_ASSERT, but the failure report carries a printf-style message, so a failing row
 * of a table-driven test says which row and what was seen. Returns the condition. */
#define PF_CHECK(cond, ...) pf_unit_check((cond), __LINE__, __FILE__, __VA_ARGS__)

static inline bool pf_unit_check(bool ok, unsigned line, const char *file, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static inline bool pf_unit_check(bool ok, unsigned line, const char *file, const char *fmt, ...) {
    char msg[1024] = "";
    if (!ok) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    }
    /* CUnit copies the message, so a stack buffer is fine */
    CU_assertImplementation(ok ? CU_TRUE : CU_FALSE, line, msg, file, "", CU_FALSE);
    return ok;
}

/* Registers one suite of n tests (those whose names contain filter, if not NULL), runs
 * it and returns 0 when everything passed, 1 otherwise. */
static inline int pf_unit_run(const char *suite, const pf_unit_test *tests, size_t n,
                              const char *filter) {
    int failed = 1;
    if (CU_initialize_registry() != CUE_SUCCESS) {
        fprintf(stderr, "%s: CUnit: %s\n", suite, CU_get_error_msg());
        return 1;
    }
    CU_pSuite s = CU_add_suite(suite, NULL, NULL);
    if (!s)
        goto done;
    for (size_t i = 0; i < n; i++) {
        if (filter && !strstr(tests[i].name, filter))
            continue;
        if (!CU_add_test(s, tests[i].name, tests[i].fn))
            goto done;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (CU_basic_run_tests() != CUE_SUCCESS)
        goto done;
    failed = CU_get_number_of_failures() != 0 || CU_get_number_of_tests_failed() != 0;
done:
    if (CU_get_error() != CUE_SUCCESS)
        fprintf(stderr, "%s: CUnit: %s\n", suite, CU_get_error_msg());
    CU_cleanup_registry();
    return failed;
}

#define PF_UNIT_MAIN(suite, ...)                                                                   \
    int main(int argc, char **argv) {                                                              \
        static const pf_unit_test pf_unit_tests_[] = {__VA_ARGS__};                                \
        return pf_unit_run(suite, pf_unit_tests_,                                                  \
                           sizeof pf_unit_tests_ / sizeof pf_unit_tests_[0],                       \
                           argc > 1 ? argv[1] : NULL);                                             \
    }

#endif
