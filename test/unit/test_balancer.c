/* Unit tests for proxy/balancer's round robin: equal weights, smooth weighted round robin
 * (exact proportions and nginx's interleaving), unhealthy endpoints, empty sets and the
 * reset when a new set version arrives. Sets are published through a slot, as discovery
 * does, so they carry versions. The other policies: test_balancer_load.c (least request,
 * least response time, random, slow start, churn) and test_balancer_hash.c. */
#include "test/unit/balancer_util.h"

/* The address text of a pick, or "(null)"; checks that it came from the set. */
static const char *pick(pf_balancer *b, const pf_endpoint_set *set) {
    const pf_endpoint *ep = balancer_pick(b, set, NULL);
    if (!ep)
        return "(null)";
    PF_CHECK(ep >= set->endpoints && ep < set->endpoints + set->count,
             "pick %p is not an endpoint of the set", (const void *)ep);
    return ep->addr.text;
}

/* ---- round robin ------------------------------------------------------------------- */

static void test_equal_weights_give_perfect_round_robin(void) {
    pf_endpoint_slot *slot = discovery_slot_new("rr");
    static const char *const specs[] = {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80",
                                        NULL};
    pf_endpoint_set *set = publish(slot, specs);
    CU_ASSERT_TRUE(set->equal_weights);
    pf_balancer *b = new_balancer(PF_LB_ROUND_ROBIN);
    CU_ASSERT_FATAL(b != NULL);
    enum { N = 4, ROUNDS = 250 };
    size_t seq[N * ROUNDS];
    for (size_t i = 0; i < N * ROUNDS; i++) {
        seq[i] = index_of(set, pick(b, set));
        CU_ASSERT_FATAL(seq[i] < N);
    }
    /* every window of N consecutive picks holds every endpoint once, in cyclic order */
    for (size_t i = 0; i < N * ROUNDS; i++) {
        if (i + N < N * ROUNDS)
            PF_CHECK(seq[i + N] == seq[i], "pick %zu is endpoint %zu but pick %zu was %zu", i + N,
                     seq[i + N], i, seq[i]);
        if (i > 0)
            PF_CHECK(seq[i] == (seq[i - 1] + 1) % N, "pick %zu: %zu after %zu", i, seq[i],
                     seq[i - 1]);
    }
    balancer_free(b);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

static void test_round_robin_skips_unhealthy_endpoints_evenly(void) {
    pf_endpoint_slot *slot = discovery_slot_new("rr");
    static const char *const specs[] = {"10.0.0.1:80", "10.0.0.2:80/1/down", "10.0.0.3:80/1/down",
                                        "10.0.0.4:80", "10.0.0.5:80",        NULL};
    pf_endpoint_set *set = publish(slot, specs);
    CU_ASSERT_EQUAL(set->healthy_count, 3);
    pf_balancer *b = new_balancer(PF_LB_ROUND_ROBIN);
    size_t counts[5] = {0};
    size_t prev = 5;
    for (size_t i = 0; i < 300; i++) {
        size_t k = index_of(set, pick(b, set));
        CU_ASSERT_FATAL(k < 5);
        PF_CHECK(set->endpoints[k].healthy, "pick %zu chose unhealthy %s", i,
                 set->endpoints[k].addr.text);
        PF_CHECK(k != prev, "pick %zu chose %s twice in a row", i, set->endpoints[k].addr.text);
        prev = k;
        counts[k]++;
    }
    CU_ASSERT_EQUAL(counts[0], 100);
    CU_ASSERT_EQUAL(counts[1], 0);
    CU_ASSERT_EQUAL(counts[2], 0);
    CU_ASSERT_EQUAL(counts[3], 100);
    CU_ASSERT_EQUAL(counts[4], 100);
    balancer_free(b);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

static void test_weights_of_unhealthy_endpoints_do_not_count(void) {
    /* 1,1 healthy and 7 down: equal weights among the healthy, so plain alternation */
    pf_endpoint_slot *slot = discovery_slot_new("rr");
    static const char *const specs[] = {"10.0.0.1:80/1", "10.0.0.2:80/7/down", "10.0.0.3:80/1",
                                        NULL};
    pf_endpoint_set *set = publish(slot, specs);
    CU_ASSERT_TRUE(set->equal_weights);
    CU_ASSERT_EQUAL(set->total_weight, 2);
    pf_balancer *b = new_balancer(PF_LB_ROUND_ROBIN);
    const char *first = pick(b, set);
    for (size_t i = 1; i < 100; i++) {
        const char *got = pick(b, set);
        PF_CHECK(strcmp(got, "10.0.0.2:80") != 0, "pick %zu chose the unhealthy endpoint", i);
        PF_CHECK((strcmp(got, first) == 0) == (i % 2 == 0), "pick %zu: %s (first was %s)", i, got,
                 first);
    }
    balancer_free(b);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

/* ---- smooth weighted round robin ------------------------------------------------------ */

static void test_weights_1_2_give_exact_thirds(void) {
    pf_endpoint_slot *slot = discovery_slot_new("w");
    static const char *const specs[] = {"10.0.0.1:80/1", "10.0.0.2:80/2", NULL};
    pf_endpoint_set *set = publish(slot, specs);
    CU_ASSERT_FALSE(set->equal_weights);
    CU_ASSERT_EQUAL(set->total_weight, 3);
    pf_balancer *b = new_balancer(PF_LB_ROUND_ROBIN);
    for (size_t round = 0; round < 100; round++) {
        size_t counts[2] = {0};
        for (size_t i = 0; i < 3; i++) {
            size_t k = index_of(set, pick(b, set));
            CU_ASSERT_FATAL(k < 2);
            counts[k]++;
        }
        PF_CHECK(counts[0] == 1 && counts[1] == 2, "round %zu: %zu/%zu, want 1/2", round, counts[0],
                 counts[1]);
    }
    balancer_free(b);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

static void test_weights_5_1_1_interleave_as_a_a_b_a_c_a_a(void) {
    pf_endpoint_slot *slot = discovery_slot_new("w");
    static const char *const specs[] = {"10.0.0.1:80/5", "10.0.0.2:80/1", "10.0.0.3:80/1", NULL};
    pf_endpoint_set *set = publish(slot, specs);
    pf_balancer *b = new_balancer(PF_LB_WEIGHTED_ROUND_ROBIN);
    static const char want[] = "aabacaa";
    char got[7 * 20 + 1];
    for (size_t i = 0; i < 7 * 20; i++) {
        size_t k = index_of(set, pick(b, set));
        got[i] = k < 3 ? (char)('a' + k) : '?';
    }
    got[7 * 20] = '\0';
    for (size_t round = 0; round < 20; round++)
        PF_CHECK(memcmp(got + 7 * round, want, 7) == 0, "round %zu: %.7s, want %s", round,
                 got + 7 * round, want);
    /* never the five a's in a row a naive weighted round robin would send */
    CU_ASSERT_PTR_NULL(strstr(got, "aaaaa"));
    balancer_free(b);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

static void test_weights_1_3_6_over_10000_picks_are_exactly_proportional(void) {
    pf_endpoint_slot *slot = discovery_slot_new("w");
    static const char *const specs[] = {"10.0.0.1:80/1", "10.0.0.2:80/3", "10.0.0.3:80/6", NULL};
    pf_endpoint_set *set = publish(slot, specs);
    pf_balancer *b = new_balancer(PF_LB_ROUND_ROBIN);
    size_t counts[3] = {0};
    for (size_t i = 0; i < 10000; i++) {
        size_t k = index_of(set, pick(b, set));
        CU_ASSERT_FATAL(k < 3);
        counts[k]++;
        /* and at every multiple of the total weight the split is exact */
        if ((i + 1) % 10 == 0)
            PF_CHECK(counts[0] * 10 == i + 1 && counts[1] * 10 == 3 * (i + 1) &&
                         counts[2] * 10 == 6 * (i + 1),
                     "after %zu picks: %zu/%zu/%zu", i + 1, counts[0], counts[1], counts[2]);
    }
    CU_ASSERT_EQUAL(counts[0], 1000);
    CU_ASSERT_EQUAL(counts[1], 3000);
    CU_ASSERT_EQUAL(counts[2], 6000);
    balancer_free(b);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

static void test_weighted_never_picks_unhealthy_even_the_heaviest(void) {
    pf_endpoint_slot *slot = discovery_slot_new("w");
    static const char *const specs[] = {"10.0.0.1:80/100/down", "10.0.0.2:80/1", "10.0.0.3:80/2",
                                        NULL};
    pf_endpoint_set *set = publish(slot, specs);
    CU_ASSERT_EQUAL(set->total_weight, 3);
    pf_balancer *b = new_balancer(PF_LB_ROUND_ROBIN);
    size_t counts[3] = {0};
    for (size_t i = 0; i < 300; i++) {
        size_t k = index_of(set, pick(b, set));
        CU_ASSERT_FATAL(k < 3);
        counts[k]++;
    }
    CU_ASSERT_EQUAL(counts[0], 0);
    CU_ASSERT_EQUAL(counts[1], 100);
    CU_ASSERT_EQUAL(counts[2], 200);
    balancer_free(b);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

/* ---- nothing to pick -------------------------------------------------------------------- */

static void test_no_healthy_endpoint_gives_null(void) {
    pf_balancer *b = new_balancer(PF_LB_ROUND_ROBIN);
    pf_endpoint_slot *slot = discovery_slot_new("none");

    static const char *const down[] = {"10.0.0.1:80/1/down", "10.0.0.2:80/3/down", NULL};
    pf_endpoint_set *set = publish(slot, down);
    CU_ASSERT_EQUAL(set->healthy_count, 0);
    for (int i = 0; i < 5; i++)
        CU_ASSERT_PTR_NULL(balancer_pick(b, set, NULL));
    discovery_set_unref(set);

    static const char *const empty[] = {NULL};
    set = publish(slot, empty);
    CU_ASSERT_EQUAL(set->count, 0);
    CU_ASSERT_PTR_NULL(balancer_pick(b, set, NULL));
    discovery_set_unref(set);

    CU_ASSERT_PTR_NULL(balancer_pick(b, NULL, NULL));

    /* and the balancer still works once endpoints come back */
    static const char *const back[] = {"10.0.0.1:80/1", NULL};
    set = publish(slot, back);
    CU_ASSERT_STRING_EQUAL(pick(b, set), "10.0.0.1:80");
    CU_ASSERT_STRING_EQUAL(pick(b, set), "10.0.0.1:80");
    discovery_set_unref(set);

    balancer_free(b);
    balancer_free(NULL);
    discovery_slot_free(slot);
}

/* ---- new snapshots ---------------------------------------------------------------------- */

static void test_new_set_version_resets_state_and_picks_only_new_endpoints(void) {
    pf_endpoint_slot *slot = discovery_slot_new("swap");
    pf_balancer *b = new_balancer(PF_LB_ROUND_ROBIN);

    /* leave the weighted state in the middle of a round */
    static const char *const old_specs[] = {"10.0.0.1:80/5", "10.0.0.2:80/1", "10.0.0.3:80/1",
                                            NULL};
    pf_endpoint_set *old = publish(slot, old_specs);
    for (int i = 0; i < 4; i++)
        pick(b, old);

    static const char *const new_specs[] = {"10.0.1.1:80/1", "10.0.1.2:80/3", NULL};
    pf_endpoint_set *fresh = publish(slot, new_specs);
    CU_ASSERT_NOT_EQUAL(fresh->version, old->version);
    size_t counts[2] = {0};
    for (size_t i = 0; i < 400; i++) {
        const char *got = pick(b, fresh);
        size_t k = index_of(fresh, got);
        PF_CHECK(k < 2, "pick %zu after the swap chose %s, not in the new set", i, got);
        if (k < 2)
            counts[k]++;
        /* state starts from zero with the new set: exact from the first round on */
        if ((i + 1) % 4 == 0)
            PF_CHECK(counts[0] * 4 == i + 1 && counts[1] * 4 == 3 * (i + 1),
                     "after %zu picks: %zu/%zu, want 1:3", i + 1, counts[0], counts[1]);
    }

    /* a smaller set after a bigger one, equal weights */
    static const char *const one[] = {"10.0.2.1:80", NULL};
    pf_endpoint_set *single = publish(slot, one);
    for (int i = 0; i < 10; i++)
        CU_ASSERT_STRING_EQUAL(pick(b, single), "10.0.2.1:80");

    /* and a bigger weighted set after that (the state grows) */
    static const char *const many[] = {"10.0.3.1:80/1",
                                       "10.0.3.2:80/1",
                                       "10.0.3.3:80/1",
                                       "10.0.3.4:80/1",
                                       "10.0.3.5:80/1",
                                       "10.0.3.6:80/5",
                                       NULL};
    pf_endpoint_set *big = publish(slot, many);
    size_t big_counts[6] = {0};
    for (size_t i = 0; i < 1000; i++) {
        size_t k = index_of(big, pick(b, big));
        CU_ASSERT_FATAL(k < 6);
        big_counts[k]++;
    }
    for (size_t k = 0; k < 5; k++)
        PF_CHECK(big_counts[k] == 100, "endpoint %zu: %zu picks, want 100", k, big_counts[k]);
    CU_ASSERT_EQUAL(big_counts[5], 500);

    discovery_set_unref(old);
    discovery_set_unref(fresh);
    discovery_set_unref(single);
    discovery_set_unref(big);
    balancer_free(b);
    discovery_slot_free(slot);
}

static void test_health_change_in_new_set_takes_effect_at_once(void) {
    pf_endpoint_slot *slot = discovery_slot_new("health");
    pf_balancer *b = new_balancer(PF_LB_ROUND_ROBIN);
    static const char *const up[] = {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", NULL};
    pf_endpoint_set *before = publish(slot, up);
    for (int i = 0; i < 5; i++)
        pick(b, before);
    static const char *const one_down[] = {"10.0.0.1:80", "10.0.0.2:80/1/down", "10.0.0.3:80",
                                           NULL};
    pf_endpoint_set *after = publish(slot, one_down);
    for (int i = 0; i < 50; i++)
        PF_CHECK(strcmp(pick(b, after), "10.0.0.2:80") != 0,
                 "pick %d chose the endpoint "
                 "that went down",
                 i);
    discovery_set_unref(before);
    discovery_set_unref(after);
    balancer_free(b);
    discovery_slot_free(slot);
}

static void test_balancers_of_different_workers_keep_their_own_state(void) {
    pf_endpoint_slot *slot = discovery_slot_new("workers");
    static const char *const specs[] = {"10.0.0.1:80/1", "10.0.0.2:80/2", NULL};
    pf_endpoint_set *set = publish(slot, specs);
    pf_balancer *w1 = new_balancer(PF_LB_ROUND_ROBIN), *w2 = new_balancer(PF_LB_ROUND_ROBIN);
    /* interleaved picks: each worker's own sequence is still exact */
    size_t c1[2] = {0}, c2[2] = {0};
    for (size_t i = 0; i < 300; i++) {
        c1[index_of(set, pick(w1, set)) % 2]++;
        if (i % 2 == 0)
            c2[index_of(set, pick(w2, set)) % 2]++;
    }
    CU_ASSERT_EQUAL(c1[0], 100);
    CU_ASSERT_EQUAL(c1[1], 200);
    CU_ASSERT_EQUAL(c2[0], 50);
    CU_ASSERT_EQUAL(c2[1], 100);
    balancer_free(w1);
    balancer_free(w2);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

PF_UNIT_MAIN("balancer", PF_UNIT_TEST(test_equal_weights_give_perfect_round_robin),
             PF_UNIT_TEST(test_round_robin_skips_unhealthy_endpoints_evenly),
             PF_UNIT_TEST(test_weights_of_unhealthy_endpoints_do_not_count),
             PF_UNIT_TEST(test_weights_1_2_give_exact_thirds),
             PF_UNIT_TEST(test_weights_5_1_1_interleave_as_a_a_b_a_c_a_a),
             PF_UNIT_TEST(test_weights_1_3_6_over_10000_picks_are_exactly_proportional),
             PF_UNIT_TEST(test_weighted_never_picks_unhealthy_even_the_heaviest),
             PF_UNIT_TEST(test_no_healthy_endpoint_gives_null),
             PF_UNIT_TEST(test_new_set_version_resets_state_and_picks_only_new_endpoints),
             PF_UNIT_TEST(test_health_change_in_new_set_takes_effect_at_once),
             PF_UNIT_TEST(test_balancers_of_different_workers_keep_their_own_state))
