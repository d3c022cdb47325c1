/* The proxy's pure decisions that need no event loop: which worker, if any, is stalled
 * (proxy_stalled_worker, behind /healthz). */
#include "proxy/proxy.h"
#include "test/unit/unit.h"

#include <stdint.h>

static void test_stalled_worker_is_the_silent_longest_past_the_limit(void) {
    static const struct {
        uint64_t beats[4];
        size_t n;
        uint64_t now;
        long expect;
    } rows[] = {
        {{0}, 0, 100000, -1},                             /* no workers */
        {{99500, 99000, 99900, 99999}, 4, 100000, -1},    /* all beat within the limit */
        {{95000, 99000}, 2, 100000, -1},                  /* exactly the limit: not yet */
        {{94999, 99000}, 2, 100000, 0},                   /* one past it */
        {{99000, 80000, 90000, 99000}, 4, 100000, 1},     /* two stalled: the longest */
        {{0, 0, 0, 0}, 4, 100000, -1},                    /* not started */
        {{0, 1000, 0, 0}, 4, 100000, 1},                  /* started and silent */
        {{100000, 100500, 99999, 100001}, 4, 100000, -1}, /* beats after now was read */
        {{UINT64_MAX, 1, 0, 0}, 2, UINT64_MAX - 1, 1},    /* no overflow at the ends */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        long got = proxy_stalled_worker(rows[i].beats, rows[i].n, rows[i].now, 5000);
        PF_CHECK(got == rows[i].expect, "row %zu: %ld, expected %ld", i, got, rows[i].expect);
    }
}

PF_UNIT_MAIN("proxy", PF_UNIT_TEST(test_stalled_worker_is_the_silent_longest_past_the_limit))
