/* Unit tests for proxy/rate_limit: the token bucket's rate and burst on a simulated clock,
 * Retry-After's wait, per-key buckets evicted least recently used first within a bounded
 * table, and exactly `burst` tokens handed out to threads racing for them. */
#include "config/config.h"
#include "proxy/rate_limit_int.h"
#include "test/unit/unit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define MS 1000000ull
#define SEC 1000000000ull

static pf_config_rate_limit limit(uint32_t rps, uint32_t burst, pf_rate_key key,
                                  uint32_t max_keys) {
    pf_config_rate_limit c;
    memset(&c, 0, sizeof c);
    c.requests_per_second = rps;
    c.burst = burst;
    c.key = key;
    c.max_keys = max_keys;
    return c;
}

static void test_burst_then_the_rate_on_a_simulated_clock(void) {
    pf_config_rate_limit c = limit(10, 5, PF_RATE_KEY_NONE, 0);
    pf_rate_limiter *rl = rate_limiter_new(&c);
    CU_ASSERT_FATAL(rl != NULL);
    uint64_t t0 = 1000 * SEC;
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(rate_limiter_take(rl, NULL, 0, t0), 0);
    /* the sixth waits one interval (100 ms) */
    CU_ASSERT_EQUAL(rate_limiter_take(rl, NULL, 0, t0), 100 * MS);
    CU_ASSERT_EQUAL(rate_limiter_take(rl, NULL, 0, t0 + 40 * MS), 60 * MS);
    CU_ASSERT_EQUAL(rate_limiter_take(rl, NULL, 0, t0 + 100 * MS), 0);
    CU_ASSERT(rate_limiter_take(rl, NULL, 0, t0 + 100 * MS) > 0);
    /* one request a millisecond for 10 s: the rate, whatever the offered load */
    unsigned allowed = 0;
    uint64_t t1 = t0 + 100 * SEC; /* the bucket refilled meanwhile (to 5, no more) */
    for (uint64_t t = t1; t < t1 + 10 * SEC; t += MS)
        allowed += rate_limiter_take(rl, NULL, 0, t) == 0;
    CU_ASSERT(allowed >= 5 + 100 - 1 && allowed <= 5 + 100);
    CU_ASSERT_EQUAL(rate_limiter_capacity(rl), 0);
    rate_limiter_free(rl);
    /* burst 0 means one second's worth */
    c = limit(3, 0, PF_RATE_KEY_NONE, 0);
    rl = rate_limiter_new(&c);
    CU_ASSERT_FATAL(rl != NULL);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(rate_limiter_take(rl, NULL, 0, t0), 0);
    CU_ASSERT(rate_limiter_take(rl, NULL, 0, t0) > 0);
    rate_limiter_free(rl);
    rate_limiter_free(NULL);
}

static void test_keys_have_their_own_buckets_and_the_least_recent_goes_first(void) {
    pf_config_rate_limit c = limit(1, 1, PF_RATE_KEY_HEADER, 5); /* rounded up to 8 */
    pf_rate_limiter *rl = rate_limiter_new(&c);
    CU_ASSERT_FATAL(rl != NULL);
    CU_ASSERT_EQUAL(rate_limiter_capacity(rl), PF_RATE_WAYS);
    uint64_t t = 5 * SEC;
    char key[16];
    for (int i = 0; i < 8; i++) {
        snprintf(key, sizeof key, "k%d", i);
        CU_ASSERT_EQUAL(rate_limiter_take(rl, key, strlen(key), t + (uint64_t)i), 0);
        CU_ASSERT(rate_limiter_take(rl, key, strlen(key), t + (uint64_t)i) > 0);
    }
    /* "" (no header) is a key too */
    CU_ASSERT_EQUAL(rate_limiter_take(rl, NULL, 0, t + 10), 0); /* evicts k0, the oldest */
    CU_ASSERT(rate_limiter_take(rl, "", 0, t + 11) > 0);
    /* k1 is still limited (kept), k0 comes back with a full bucket (evicted) */
    CU_ASSERT(rate_limiter_take(rl, "k1", 2, t + 12) > 0);
    CU_ASSERT_EQUAL(rate_limiter_take(rl, "k0", 2, t + 13), 0);
    /* a thousand keys later the table still holds eight */
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "x%d", i);
        rate_limiter_take(rl, key, strlen(key), t + 100 + (uint64_t)i);
    }
    CU_ASSERT_EQUAL(rate_limiter_capacity(rl), PF_RATE_WAYS);
    rate_limiter_free(rl);
}

typedef struct racer {
    pf_rate_limiter *rl;
    _Atomic unsigned *allowed;
} racer;

static void *race(void *arg) {
    racer *r = arg;
    for (int i = 0; i < 20000; i++)
        if (rate_limiter_take(r->rl, "same", 4, 7 * SEC) == 0)
            atomic_fetch_add(r->allowed, 1);
    return NULL;
}

static void test_threads_racing_get_exactly_the_burst(void) {
    for (int keyed = 0; keyed < 2; keyed++) {
        pf_config_rate_limit c =
            limit(1, 1000, keyed ? PF_RATE_KEY_CLIENT_IP : PF_RATE_KEY_NONE, 16);
        pf_rate_limiter *rl = rate_limiter_new(&c);
        CU_ASSERT_FATAL(rl != NULL);
        _Atomic unsigned allowed = 0;
        racer r = {rl, &allowed};
        pthread_t th[4];
        for (int i = 0; i < 4; i++)
            CU_ASSERT_FATAL(pthread_create(&th[i], NULL, race, &r) == 0);
        for (int i = 0; i < 4; i++)
            pthread_join(th[i], NULL);
        PF_CHECK(atomic_load(&allowed) == 1000, "keyed %d: %u allowed", keyed,
                 atomic_load(&allowed));
        rate_limiter_free(rl);
    }
}

PF_UNIT_MAIN("rate_limit", PF_UNIT_TEST(test_burst_then_the_rate_on_a_simulated_clock),
             PF_UNIT_TEST(test_keys_have_their_own_buckets_and_the_least_recent_goes_first),
             PF_UNIT_TEST(test_threads_racing_get_exactly_the_burst))
