/* Unit tests for proxy/deadline.c: a deadline moved later, cleared or set again runs its
 * function once, never before the last deadline set, and a cleared one never. Real
 * libevent loops; every check is a lower bound or a count, so a slow machine only makes
 * the loops take longer. */
#include "core/error.h"
#include "core/time.h"
#include "proxy/deadline.h"
#include "test/unit/unit.h"

#include <event2/event.h>

typedef struct fired {
    int count;
    uint64_t at_ms;
    struct event_base *base;
} fired;

static void on_fire(void *arg) {
    fired *f = arg;
    f->count++;
    f->at_ms = pf_now_ms();
}

static void on_stop(evutil_socket_t fd, short what, void *arg) {
    event_base_loopbreak(arg);
}

/* Runs the loop until `ms` from now (a plain timer ends it). */
static void run_for(struct event_base *base, uint64_t ms) {
    struct event *stop = evtimer_new(base, on_stop, base);
    struct timeval tv = pf_timeval_ms(ms);
    evtimer_add(stop, &tv);
    event_base_dispatch(base);
    event_free(stop);
}

static void test_a_deadline_moved_later_runs_once_and_not_before_it(void) {
    struct event_base *base = event_base_new();
    fired f = {.base = base};
    pf_deadline d = {0};
    CU_ASSERT_EQUAL_FATAL(deadline_init(&d, base, on_fire, &f), PF_OK);
    uint64_t t0 = pf_now_ms();
    deadline_set(&d, 20);
    deadline_set(&d, 120); /* the timer stays armed for 20 ms and is moved when it fires */
    CU_ASSERT_TRUE(deadline_pending(&d));
    for (int i = 0; i < 200 && f.count == 0; i++)
        run_for(base, 20);
    CU_ASSERT_EQUAL(f.count, 1);
    CU_ASSERT_TRUE(f.at_ms >= t0 + 120);
    CU_ASSERT_FALSE(deadline_pending(&d));
    run_for(base, 60);
    CU_ASSERT_EQUAL(f.count, 1); /* once */
    deadline_free(&d);
    event_base_free(base);
}

static void test_a_deadline_moved_earlier_runs_at_the_earlier_time(void) {
    struct event_base *base = event_base_new();
    fired f = {.base = base};
    pf_deadline d = {0};
    CU_ASSERT_EQUAL_FATAL(deadline_init(&d, base, on_fire, &f), PF_OK);
    uint64_t t0 = pf_now_ms();
    deadline_set(&d, 60000);
    deadline_set(&d, 30);
    for (int i = 0; i < 200 && f.count == 0; i++)
        run_for(base, 20);
    CU_ASSERT_EQUAL(f.count, 1); /* well before the minute: the timer was moved earlier */
    CU_ASSERT_TRUE(f.at_ms >= t0 + 30);
    deadline_free(&d);
    event_base_free(base);
}

static void test_a_cleared_deadline_never_runs_and_can_be_set_again(void) {
    struct event_base *base = event_base_new();
    fired f = {.base = base};
    pf_deadline d = {0};
    CU_ASSERT_EQUAL_FATAL(deadline_init(&d, base, on_fire, &f), PF_OK);
    deadline_set(&d, 10);
    deadline_clear(&d);
    CU_ASSERT_FALSE(deadline_pending(&d));
    run_for(base, 80); /* the armed timer fires, finds nothing due */
    CU_ASSERT_EQUAL(f.count, 0);
    uint64_t t1 = pf_now_ms();
    deadline_set(&d, 10);
    for (int i = 0; i < 200 && f.count == 0; i++)
        run_for(base, 20);
    CU_ASSERT_EQUAL(f.count, 1);
    CU_ASSERT_TRUE(f.at_ms >= t1 + 10);
    deadline_free(&d);
    event_base_free(base);
}

static void test_free_is_safe_unset_and_after_a_failed_init(void) {
    pf_deadline zeroed = {0};
    deadline_free(&zeroed); /* nothing assigned: nothing to do */
    struct event_base *base = event_base_new();
    fired f = {.base = base};
    pf_deadline d = {0};
    CU_ASSERT_EQUAL_FATAL(deadline_init(&d, base, on_fire, &f), PF_OK);
    deadline_set(&d, 10);
    deadline_free(&d); /* pending: deleted from the loop */
    run_for(base, 50);
    CU_ASSERT_EQUAL(f.count, 0);
    event_base_free(base);
}

PF_UNIT_MAIN("deadline", PF_UNIT_TEST(test_a_deadline_moved_later_runs_once_and_not_before_it),
             PF_UNIT_TEST(test_a_deadline_moved_earlier_runs_at_the_earlier_time),
             PF_UNIT_TEST(test_a_cleared_deadline_never_runs_and_can_be_set_again),
             PF_UNIT_TEST(test_free_is_safe_unset_and_after_a_failed_init))
