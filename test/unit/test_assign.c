/* Load assignment over failover tiers, zones and the panic threshold (proxy/assign.c). */
#include "proxy/assign.h"
#include "test/unit/unit.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct row {
    const char *addr;
    uint32_t priority;
    const char *zone;
    bool healthy;
} row;

static pf_endpoint_set *make_set(const row *rows, size_t n) {
    pf_endpoint eps[16];
    memset(eps, 0, sizeof eps);
    for (size_t i = 0; i < n; i++) {
        pf_error err;
        config_parse_sockaddr(rows[i].addr, &eps[i].addr, &err);
        eps[i].weight = 1;
        eps[i].priority = rows[i].priority;
        eps[i].healthy = rows[i].healthy;
        snprintf(eps[i].zone, sizeof eps[i].zone, "%s", rows[i].zone ? rows[i].zone : "");
    }
    pf_endpoint_set *set = discovery_set_new(eps, n);
    set->version = 1;
    return set;
}

/* Share of traffic (0-100) an endpoint gets from a weight-honouring balancer. */
static double share_of(const pf_endpoint_set *set, const char *addr) {
    uint64_t total = 0, mine = 0;
    for (size_t i = 0; i < set->count; i++) {
        if (!set->endpoints[i].healthy)
            continue;
        total += set->endpoints[i].weight;
        if (strcmp(set->endpoints[i].addr.text, addr) == 0)
            mine = set->endpoints[i].weight;
    }
    return total ? 100.0 * (double)mine / (double)total : 0;
}

static const pf_assign_params defaults = {.panic_threshold = 50};

static void test_one_tier_without_zones_is_the_set_itself(void) {
    row rows[] = {{"10.0.0.1:80", 0, NULL, true}, {"10.0.0.2:80", 0, NULL, true}};
    pf_endpoint_set *set = make_set(rows, 2);
    bool panic;
    pf_endpoint_set *d = assign_derive(set, &defaults, &panic);
    CU_ASSERT_PTR_EQUAL(d, set);
    CU_ASSERT_FALSE(panic);
    discovery_set_unref(d);
    discovery_set_unref(set);
}

static void test_healthy_best_tier_takes_all_traffic(void) {
    row rows[] = {{"10.0.0.1:80", 0, NULL, true},
                  {"10.0.0.2:80", 0, NULL, true},
                  {"10.0.1.1:80", 1, NULL, true}};
    pf_endpoint_set *set = make_set(rows, 3);
    bool panic;
    pf_endpoint_set *d = assign_derive(set, &defaults, &panic);
    CU_ASSERT_FALSE(panic);
    CU_ASSERT_DOUBLE_EQUAL(share_of(d, "10.0.0.1:80"), 50, 0.1);
    CU_ASSERT_DOUBLE_EQUAL(share_of(d, "10.0.0.2:80"), 50, 0.1);
    CU_ASSERT_DOUBLE_EQUAL(share_of(d, "10.0.1.1:80"), 0, 0.001);
    CU_ASSERT_EQUAL(d->version, set->version);
    discovery_set_unref(d);
    discovery_set_unref(set);
}

static void test_half_healthy_tier_keeps_seventy_percent_and_spills_the_rest(void) {
    /* 1 of 2 healthy: 50% * 1.4 = 70% stays, 30% goes to the next tier. */
    row rows[] = {{"10.0.0.1:80", 0, NULL, true},
                  {"10.0.0.2:80", 0, NULL, false},
                  {"10.0.1.1:80", 1, NULL, true},
                  {"10.0.1.2:80", 1, NULL, true}};
    pf_endpoint_set *set = make_set(rows, 4);
    bool panic;
    pf_endpoint_set *d = assign_derive(set, &defaults, &panic);
    CU_ASSERT_FALSE(panic);
    CU_ASSERT_DOUBLE_EQUAL(share_of(d, "10.0.0.1:80"), 70, 0.2);
    CU_ASSERT_DOUBLE_EQUAL(share_of(d, "10.0.0.2:80"), 0, 0.001);
    CU_ASSERT_DOUBLE_EQUAL(share_of(d, "10.0.1.1:80"), 15, 0.2);
    CU_ASSERT_DOUBLE_EQUAL(share_of(d, "10.0.1.2:80"), 15, 0.2);
    discovery_set_unref(d);
    discovery_set_unref(set);
}

static void test_dead_best_tier_sends_everything_to_the_next(void) {
    row rows[] = {{"10.0.0.1:80", 0, NULL, false},
                  {"10.0.1.1:80", 5, NULL, true},
                  {"10.0.1.2:80", 5, NULL, true},
                  {"10.0.2.1:80", 9, NULL, true}};
    pf_endpoint_set *set = make_set(rows, 4);
    bool panic;
    pf_endpoint_set *d = assign_derive(set, &defaults, &panic);
    CU_ASSERT_FALSE(panic);
    CU_ASSERT_DOUBLE_EQUAL(share_of(d, "10.0.1.1:80"), 50, 0.2);
    CU_ASSERT_DOUBLE_EQUAL(share_of(d, "10.0.1.2:80"), 50, 0.2);
    CU_ASSERT_DOUBLE_EQUAL(share_of(d, "10.0.2.1:80"), 0, 0.001);
    discovery_set_unref(d);
    discovery_set_unref(set);
}

static void test_below_panic_threshold_every_endpoint_takes_traffic(void) {
    row rows[] = {{"10.0.0.1:80", 0, NULL, true},
                  {"10.0.0.2:80", 0, NULL, false},
                  {"10.0.0.3:80", 0, NULL, false},
                  {"10.0.0.4:80", 0, NULL, false}};
    pf_endpoint_set *set = make_set(rows, 4);
    bool panic;
    pf_endpoint_set *d = assign_derive(set, &defaults, &panic);
    CU_ASSERT_TRUE(panic);
    CU_ASSERT_EQUAL(d->healthy_count, 4);
    discovery_set_unref(d);
    pf_assign_params no_panic = {.panic_threshold = 0};
    d = assign_derive(set, &no_panic, &panic);
    CU_ASSERT_FALSE(panic);
    CU_ASSERT_EQUAL(d->healthy_count, 1);
    discovery_set_unref(d);
    discovery_set_unref(set);
}

static void test_zone_aware_stays_local_and_spills_when_local_health_drops(void) {
    row rows[] = {{"10.0.0.1:80", 0, "a", true},
                  {"10.0.0.2:80", 0, "a", true},
                  {"10.0.1.1:80", 0, "b", true},
                  {"10.0.1.2:80", 0, "b", true}};
    pf_assign_params zoned = {.panic_threshold = 0, .zone_aware = true, .local_zone = "a"};
    pf_endpoint_set *set = make_set(rows, 4);
    bool panic;
    pf_endpoint_set *d = assign_derive(set, &zoned, &panic);
    CU_ASSERT_DOUBLE_EQUAL(share_of(d, "10.0.0.1:80") + share_of(d, "10.0.0.2:80"), 100, 0.2);
    discovery_set_unref(d);
    discovery_set_unref(set);

    rows[1].healthy = false; /* local zone half healthy: 70% local, 30% spills to b */
    set = make_set(rows, 4);
    d = assign_derive(set, &zoned, &panic);
    CU_ASSERT_DOUBLE_EQUAL(share_of(d, "10.0.0.1:80"), 70, 0.2);
    CU_ASSERT_DOUBLE_EQUAL(share_of(d, "10.0.1.1:80") + share_of(d, "10.0.1.2:80"), 30, 0.2);
    discovery_set_unref(d);
    discovery_set_unref(set);
}

static void test_zone_aware_without_local_endpoints_spreads_everywhere(void) {
    row rows[] = {{"10.0.1.1:80", 0, "b", true}, {"10.0.2.1:80", 0, "c", true}};
    pf_assign_params zoned = {.panic_threshold = 0, .zone_aware = true, .local_zone = "a"};
    pf_endpoint_set *set = make_set(rows, 2);
    bool panic;
    pf_endpoint_set *d = assign_derive(set, &zoned, &panic);
    CU_ASSERT_DOUBLE_EQUAL(share_of(d, "10.0.1.1:80"), 50, 0.2);
    CU_ASSERT_DOUBLE_EQUAL(share_of(d, "10.0.2.1:80"), 50, 0.2);
    discovery_set_unref(d);
    discovery_set_unref(set);
}

static void test_cache_derives_once_per_snapshot(void) {
    row rows[] = {{"10.0.0.1:80", 0, NULL, true}, {"10.0.1.1:80", 1, NULL, true}};
    pf_endpoint_set *set = make_set(rows, 2);
    pf_assign_cache cache;
    assign_cache_init(&cache);
    bool panic;
    pf_endpoint_set *a = assign_cache_get(&cache, set, &defaults, &panic);
    pf_endpoint_set *b = assign_cache_get(&cache, set, &defaults, &panic);
    CU_ASSERT_PTR_EQUAL(a, b);
    pf_endpoint_set *next = make_set(rows, 2);
    pf_endpoint_set *c = assign_cache_get(&cache, next, &defaults, &panic);
    CU_ASSERT_PTR_NOT_EQUAL(c, a);
    discovery_set_unref(a);
    discovery_set_unref(b);
    discovery_set_unref(c);
    discovery_set_unref(set);
    discovery_set_unref(next);
    assign_cache_destroy(&cache);
}

PF_UNIT_MAIN("assign", PF_UNIT_TEST(test_one_tier_without_zones_is_the_set_itself),
             PF_UNIT_TEST(test_healthy_best_tier_takes_all_traffic),
             PF_UNIT_TEST(test_half_healthy_tier_keeps_seventy_percent_and_spills_the_rest),
             PF_UNIT_TEST(test_dead_best_tier_sends_everything_to_the_next),
             PF_UNIT_TEST(test_below_panic_threshold_every_endpoint_takes_traffic),
             PF_UNIT_TEST(test_zone_aware_stays_local_and_spills_when_local_health_drops),
             PF_UNIT_TEST(test_zone_aware_without_local_endpoints_spreads_everywhere),
             PF_UNIT_TEST(test_cache_derives_once_per_snapshot))
