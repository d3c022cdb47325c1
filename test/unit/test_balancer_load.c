/* Unit tests for the load-aware and random policies of proxy/balancer: random shares,
 * least request (power of two choices: no herding, busy endpoints avoided, weights shape
 * concurrency), least response time (peak EWMA: slow endpoints starve, spikes count at
 * once, recovery decays, new endpoints are tried), slow start for every policy, and every
 * policy under endpoint churn, from one thread and from several. Random draws use fixed
 * seeds; time is a fake clock the tests move. */
#include "core/time.h"
#include "test/unit/balancer_util.h"

#include <pthread.h>

static uint64_t fake_now_us;

static uint64_t fake_clock(void) {
    return fake_now_us;
}

static pf_balancer *new_balancer_clocked(const pf_config_cluster *cfg) {
    pf_balancer_group *g = balancer_group_new(cfg);
    CU_ASSERT_FATAL(g != NULL);
    balancer_group_set_clock(g, fake_clock);
    pf_balancer *b = balancer_new(g);
    CU_ASSERT_FATAL(b != NULL);
    balancer_group_unref(g);
    balancer_seed(b, 7);
    return b;
}

static void set_active(const pf_endpoint_set *set, size_t i, uint64_t n) {
    atomic_store(&set->endpoints[i].stats->active_requests, n);
}

/* ---- random ------------------------------------------------------------------------- */

static void test_random_shares_follow_weights_and_skip_unhealthy(void) {
    pf_endpoint_slot *slot = discovery_slot_new("random");
    static const char *const specs[] = {"10.0.0.1:80/1", "10.0.0.2:80/2",       "10.0.0.3:80/3",
                                        "10.0.0.4:80/4", "10.0.0.5:80/50/down", NULL};
    pf_endpoint_set *set = publish(slot, specs);
    pf_balancer *b = new_balancer(PF_LB_RANDOM);
    enum { N = 100000 };
    size_t counts[5] = {0};
    for (size_t i = 0; i < N; i++)
        counts[pick_index(b, set, NULL)]++;
    CU_ASSERT_EQUAL(counts[4], 0);
    for (size_t k = 0; k < 4; k++) {
        double share = (double)counts[k] / N, want = (double)(k + 1) / 10.0;
        PF_CHECK(share > want - 0.01 && share < want + 0.01, "endpoint %zu: share %.4f, want %.2f",
                 k, share, want);
    }
    balancer_free(b);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

/* ---- least request ---------------------------------------------------------------------- */

static void test_least_request_idle_picks_spread_evenly_without_herding(void) {
    /* All idle and equal: a "pick the minimum" balancer would send every sequential request
     * to the same endpoint; two random choices spread them. */
    pf_endpoint_slot *slot = discovery_slot_new("lr");
    static const char *const specs[] = {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80",
                                        NULL};
    pf_endpoint_set *set = publish(slot, specs);
    pf_balancer *b = new_balancer(PF_LB_LEAST_REQUEST);
    enum { N = 4000 };
    size_t counts[4] = {0}, run = 0, longest = 0, prev = 4;
    for (size_t i = 0; i < N; i++) {
        size_t k = pick_index(b, set, NULL);
        CU_ASSERT_FATAL(k < 4);
        counts[k]++;
        run = k == prev ? run + 1 : 1;
        longest = run > longest ? run : longest;
        prev = k;
    }
    for (size_t k = 0; k < 4; k++)
        PF_CHECK(counts[k] > 900 && counts[k] < 1100, "endpoint %zu: %zu of %d picks", k, counts[k],
                 N);
    PF_CHECK(longest <= 12, "the same endpoint %zu times in a row", longest);
    balancer_free(b);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

static void test_least_request_never_picks_the_busiest_endpoint(void) {
    pf_endpoint_slot *slot = discovery_slot_new("lr");
    static const char *const specs[] = {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", NULL};
    pf_endpoint_set *set = publish(slot, specs);
    pf_balancer *b = new_balancer(PF_LB_LEAST_REQUEST);
    set_active(set, 0, 10);
    set_active(set, 1, 1);
    size_t counts[3] = {0};
    for (size_t i = 0; i < 3000; i++)
        counts[pick_index(b, set, NULL)]++;
    /* the busiest loses every pair it is in; 1 loses to 2 but wins against 0 */
    CU_ASSERT_EQUAL(counts[0], 0);
    PF_CHECK(counts[1] > 800 && counts[1] < 1200, "endpoint 1: %zu picks", counts[1]);
    PF_CHECK(counts[2] > 1800 && counts[2] < 2200, "endpoint 2: %zu picks", counts[2]);
    balancer_free(b);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

/* Runs `steps` picks against simulated in-flight requests: each pick adds one to its
 * endpoint, and once `concurrency` are in flight a random one of them completes. Two
 * balancers (two workers) share the counts, as workers do. Returns the spread between the
 * most and least loaded endpoint (by load/weight), averaged over the steps after warm-up,
 * and adds the time-averaged active count per endpoint to avg. */
static double simulate_concurrency(pf_balancer *w1, pf_balancer *w2, const pf_endpoint_set *set,
                                   size_t concurrency, size_t steps, double *avg) {
    size_t inflight[256], n = 0;
    CU_ASSERT_FATAL(concurrency < ARRAY_LEN(inflight));
    uint64_t rng = 12345;
    double spread = 0;
    for (size_t step = 0; step < steps; step++) {
        size_t k = pick_index(step % 2 ? w2 : w1, set, NULL);
        CU_ASSERT_FATAL(k < set->count);
        atomic_fetch_add(&set->endpoints[k].stats->active_requests, 1);
        inflight[n++] = k;
        if (n >= concurrency) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t j = (size_t)((rng >> 33) % n);
            atomic_fetch_sub(&set->endpoints[inflight[j]].stats->active_requests, 1);
            inflight[j] = inflight[--n];
        }
        double lo = 1e18, hi = 0;
        for (size_t i = 0; i < set->count; i++) {
            double load = (double)atomic_load(&set->endpoints[i].stats->active_requests) /
                          set->endpoints[i].weight;
            lo = load < lo ? load : lo;
            hi = load > hi ? load : hi;
            avg[i] += (double)atomic_load(&set->endpoints[i].stats->active_requests) / steps;
        }
        if (step > concurrency * 2)
            spread += (hi - lo) / (double)(steps - concurrency * 2 - 1);
    }
    while (n > 0)
        atomic_fetch_sub(&set->endpoints[inflight[--n]].stats->active_requests, 1);
    return spread;
}

static void test_least_request_keeps_concurrency_level_across_workers(void) {
    pf_endpoint_slot *slot = discovery_slot_new("lr");
    static const char *const specs[] = {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80",
                                        "10.0.0.4:80", "10.0.0.5:80", NULL};
    pf_endpoint_set *set = publish(slot, specs);
    pf_balancer *w1 = new_balancer(PF_LB_LEAST_REQUEST), *w2 = new_balancer(PF_LB_LEAST_REQUEST);
    balancer_seed(w2, 99);
    double avg[5] = {0};
    double spread = simulate_concurrency(w1, w2, set, 50, 20000, avg);
    /* 50 in flight over 5 endpoints: 10 each; two choices keep them within a few */
    PF_CHECK(spread < 4, "most and least loaded %.2f apart on average", spread);
    for (size_t i = 0; i < 5; i++)
        PF_CHECK(avg[i] > 8.5 && avg[i] < 11.5, "endpoint %zu: %.2f in flight on average", i,
                 avg[i]);
    /* and round robin under the same random completions drifts much further apart */
    pf_balancer *r1 = new_balancer(PF_LB_ROUND_ROBIN), *r2 = new_balancer(PF_LB_ROUND_ROBIN);
    double rr_avg[5] = {0};
    double rr_spread = simulate_concurrency(r1, r2, set, 50, 20000, rr_avg);
    PF_CHECK(rr_spread > 1.5 * spread, "round robin spread %.2f, least request %.2f", rr_spread,
             spread);
    balancer_free(w1);
    balancer_free(w2);
    balancer_free(r1);
    balancer_free(r2);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

static void test_least_request_weights_shape_idle_share_and_concurrency(void) {
    pf_endpoint_slot *slot = discovery_slot_new("lr");
    static const char *const specs[] = {"10.0.0.1:80/1", "10.0.0.2:80/3", NULL};
    pf_endpoint_set *set = publish(slot, specs);
    pf_balancer *b = new_balancer(PF_LB_LEAST_REQUEST);
    size_t counts[2] = {0};
    for (size_t i = 0; i < 8000; i++)
        counts[pick_index(b, set, NULL)]++;
    PF_CHECK(counts[0] > 1800 && counts[0] < 2200, "idle: weight 1 got %zu of 8000", counts[0]);
    double avg[2] = {0};
    pf_balancer *b2 = new_balancer(PF_LB_LEAST_REQUEST);
    simulate_concurrency(b, b2, set, 40, 20000, avg);
    double ratio = avg[1] / avg[0];
    PF_CHECK(ratio > 2.5 && ratio < 3.5, "in flight %.2f vs %.2f, want about 1:3", avg[0], avg[1]);
    balancer_free(b);
    balancer_free(b2);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

/* ---- least response time ------------------------------------------------------------------ */

/* Sequential requests: each pick is answered after latency_us[k] of fake time. */
static void run_sequential(pf_balancer *b, const pf_endpoint_set *set, const uint64_t *latency_us,
                           size_t n, size_t *counts) {
    for (size_t i = 0; i < n; i++) {
        const pf_endpoint *ep = balancer_pick(b, set, NULL);
        CU_ASSERT_FATAL(ep != NULL);
        size_t k = (size_t)(ep - set->endpoints);
        counts[k]++;
        fake_now_us += latency_us[k];
        balancer_on_response(b, ep, latency_us[k]);
    }
}

static void test_least_response_time_sends_a_slow_endpoint_little(void) {
    pf_endpoint_slot *slot = discovery_slot_new("ewma");
    static const char *const specs[] = {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", NULL};
    pf_endpoint_set *set = publish(slot, specs);
    pf_config_cluster cfg = cluster_config(PF_LB_LEAST_RESPONSE_TIME);
    pf_balancer *b = new_balancer_clocked(&cfg);
    fake_now_us = 1000000;
    static const uint64_t latency[] = {50000, 1000, 1000}; /* endpoint 0 is 50x slower */
    size_t counts[3] = {0};
    run_sequential(b, set, latency, 3000, counts);
    PF_CHECK(counts[0] <= 30, "the slow endpoint got %zu of 3000", counts[0]);
    PF_CHECK(counts[1] > 1200 && counts[2] > 1200, "fast ones got %zu and %zu", counts[1],
             counts[2]);
    /* round robin, for contrast, gives it its third */
    pf_balancer *rr = new_balancer(PF_LB_ROUND_ROBIN);
    size_t rr_counts[3] = {0};
    run_sequential(rr, set, latency, 3000, rr_counts);
    CU_ASSERT_EQUAL(rr_counts[0], 1000);
    balancer_free(rr);
    balancer_free(b);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

static void test_least_response_time_spike_counts_at_once_and_recovery_decays(void) {
    pf_endpoint_slot *slot = discovery_slot_new("ewma");
    static const char *const specs[] = {"10.0.0.1:80", "10.0.0.2:80", NULL};
    pf_endpoint_set *set = publish(slot, specs);
    pf_config_cluster cfg = cluster_config(PF_LB_LEAST_RESPONSE_TIME);
    cfg.ewma_decay_ms = 10000;
    pf_balancer *b = new_balancer_clocked(&cfg);
    fake_now_us = 1000000;
    const pf_endpoint *a = &set->endpoints[0], *s = &set->endpoints[1];
    CU_ASSERT_PTR_NOT_NULL(balancer_pick(b, set, NULL)); /* feedback follows picks */
    for (int i = 0; i < 20; i++) {
        balancer_on_response(b, a, 1000);
        balancer_on_response(b, s, 1000);
        fake_now_us += 1000;
    }
    /* one slow answer from s: from the next pick on, a wins every comparison */
    balancer_on_response(b, s, 100000);
    size_t counts[2] = {0};
    static const uint64_t latency[] = {1000, 1000};
    run_sequential(b, set, latency, 200, counts);
    CU_ASSERT_EQUAL(counts[1], 0);
    /* recovery decays: 5 s later s still costs 100 ms x e^-0.5, far above a's 1 ms */
    fake_now_us += 5000000;
    memset(counts, 0, sizeof counts);
    run_sequential(b, set, latency, 100, counts);
    CU_ASSERT_EQUAL(counts[1], 0);
    /* after a minute without a sample it is back under 1 ms and tried again */
    fake_now_us += 60000000;
    memset(counts, 0, sizeof counts);
    run_sequential(b, set, latency, 100, counts);
    PF_CHECK(counts[1] > 0, "s not tried again after its spike decayed");
    balancer_free(b);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

static void test_least_response_time_tries_new_endpoints_and_keeps_averages_across_sets(void) {
    pf_endpoint_slot *slot = discovery_slot_new("ewma");
    static const char *const two[] = {"10.0.0.1:80", "10.0.0.2:80", NULL};
    pf_endpoint_set *v1 = publish(slot, two);
    pf_config_cluster cfg = cluster_config(PF_LB_LEAST_RESPONSE_TIME);
    pf_balancer *b = new_balancer_clocked(&cfg);
    fake_now_us = 1000000;
    static const uint64_t latency1[] = {30000, 1000};
    size_t counts[3] = {0};
    run_sequential(b, v1, latency1, 500, counts);
    /* a feedback for an endpoint of the old set arriving after the swap still counts */
    const pf_endpoint *old_fast = balancer_pick(b, v1, NULL);
    CU_ASSERT_STRING_EQUAL(old_fast->addr.text, "10.0.0.2:80");

    static const char *const three[] = {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", NULL};
    pf_endpoint_set *v2 = publish(slot, three);
    CU_ASSERT_EQUAL(pick_index(b, v2, NULL) < 3, true);
    balancer_on_response(b, old_fast, 90000); /* .2 turns slow, reported through the v1 pointer */
    /* .1 is still known slow (carried over), .2 now slower (the late report counted): .2
     * loses every pair; the new .3, unobserved, is tried and then wins every pair it is in
     * (two of three); .1 keeps the pairs without .3 */
    memset(counts, 0, sizeof counts);
    static const uint64_t latency2[] = {30000, 90000, 1000};
    run_sequential(b, v2, latency2, 300, counts);
    CU_ASSERT_EQUAL(counts[1], 0);
    PF_CHECK(counts[2] > 170 && counts[2] < 230, "new endpoint got %zu of 300 (others %zu, %zu)",
             counts[2], counts[0], counts[1]);
    balancer_free(b);
    discovery_set_unref(v1);
    discovery_set_unref(v2);
    discovery_slot_free(slot);
}

/* ---- slow start ----------------------------------------------------------------------- */

/* Publishes {a, b} (the first set: no ramp), then {a, b, c}: c is new. Returns the second
 * set; *joined_us is c's first_seen in the balancers' clock. */
static pf_endpoint_set *publish_with_newcomer(pf_endpoint_slot *slot, uint64_t *joined_us) {
    static const char *const two[] = {"10.0.0.1:80", "10.0.0.2:80", NULL};
    pf_endpoint_set *first = publish(slot, two);
    CU_ASSERT_EQUAL(atomic_load(&first->endpoints[0].stats->first_seen_ms), 0);
    discovery_set_unref(first);
    static const char *const three[] = {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", NULL};
    pf_endpoint_set *set = publish(slot, three);
    uint64_t seen = atomic_load(&set->endpoints[2].stats->first_seen_ms);
    CU_ASSERT_NOT_EQUAL(seen, 0);
    CU_ASSERT_EQUAL(atomic_load(&set->endpoints[0].stats->first_seen_ms), 0);
    *joined_us = seen * 1000;
    return set;
}

/* Share of the newcomer (index 2) over n picks at each of the offsets into the window. */
static void check_ramp(pf_lb_policy policy, bool with_keys) {
    pf_endpoint_slot *slot = discovery_slot_new("slow");
    uint64_t joined;
    pf_endpoint_set *set = publish_with_newcomer(slot, &joined);
    pf_config_cluster cfg = cluster_config(policy);
    cfg.slow_start_ms = 10000;
    pf_balancer *b = new_balancer_clocked(&cfg);
    /* weight share of c at 0%, 50%, 100% of the window: 0.1/2.1, 0.5/2.5, 1/3 */
    static const struct {
        uint64_t offset_ms;
        double want;
    } points[] = {{0, 0.1 / 2.1}, {5000, 0.5 / 2.5}, {10000, 1.0 / 3.0}, {60000, 1.0 / 3.0}};
    bool was_on_c[3000] = {false};
    for (size_t p = 0; p < ARRAY_LEN(points); p++) {
        fake_now_us = joined + points[p].offset_ms * 1000;
        size_t on_c = 0, n = 3000;
        for (size_t i = 0; i < n; i++) {
            pf_pick_context ctx = {.hash = balancer_hash(&i, sizeof i), .has_hash = true};
            size_t k = pick_index(b, set, with_keys ? &ctx : NULL);
            on_c += k == 2;
            if (with_keys) {
                /* a key that moved to c stays there while the ramp goes on */
                PF_CHECK(!was_on_c[i] || k == 2, "%s: key %zu left c at %llu ms",
                         config_lb_policy_name(policy), i, (unsigned long long)points[p].offset_ms);
                was_on_c[i] = k == 2;
            }
        }
        /* hash policies ramp by admitting a growing share of c's own keys (a third) */
        double ramp = points[p].offset_ms >= 10000 ? 1.0 : points[p].offset_ms / 10000.0;
        double want = with_keys ? (ramp < 0.1 ? 0.1 : ramp) / 3.0 : points[p].want;
        double share = (double)on_c / n;
        PF_CHECK(share > want - 0.04 && share < want + 0.04,
                 "%s at %llu ms: c has %.3f of picks, want about %.3f",
                 config_lb_policy_name(policy), (unsigned long long)points[p].offset_ms, share,
                 want);
    }
    balancer_free(b);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

static void test_slow_start_ramps_a_new_endpoint_under_every_policy(void) {
    check_ramp(PF_LB_ROUND_ROBIN, false);
    check_ramp(PF_LB_RANDOM, false);
    check_ramp(PF_LB_LEAST_REQUEST, false);
    check_ramp(PF_LB_LEAST_RESPONSE_TIME, false);
    check_ramp(PF_LB_RING_HASH, true);
    check_ramp(PF_LB_MAGLEV, true);
}

static void test_slow_start_ramps_a_recovered_endpoint(void) {
    pf_endpoint_slot *slot = discovery_slot_new("slow");
    static const char *const specs[] = {"10.0.0.1:80", "10.0.0.2:80", NULL};
    pf_endpoint_set *set = publish(slot, specs);
    pf_config_cluster cfg = cluster_config(PF_LB_ROUND_ROBIN);
    cfg.slow_start_ms = 1000;
    pf_balancer *b = new_balancer_clocked(&cfg);
    /* health checking marks the hook when it brings an endpoint back */
    atomic_store(&set->endpoints[1].stats->healthy_since_ms, 500000);
    fake_now_us = 500000 * 1000ull + 250000; /* a quarter into the window */
    size_t counts[2] = {0};
    for (size_t i = 0; i < 1250; i++)
        counts[pick_index(b, set, NULL)]++;
    /* weight 0.25 against 1: a fifth */
    PF_CHECK(counts[1] > 230 && counts[1] < 270, "recovered endpoint got %zu of 1250", counts[1]);
    /* without slow start it gets its half at once */
    pf_balancer *plain = new_balancer(PF_LB_ROUND_ROBIN);
    memset(counts, 0, sizeof counts);
    for (size_t i = 0; i < 1000; i++)
        counts[pick_index(plain, set, NULL)]++;
    CU_ASSERT_EQUAL(counts[1], 500);
    balancer_free(plain);
    balancer_free(b);
    discovery_set_unref(set);
    discovery_slot_free(slot);
}

/* ---- churn ------------------------------------------------------------------------------ */

static const pf_lb_policy all_policies[] = {PF_LB_ROUND_ROBIN,   PF_LB_WEIGHTED_ROUND_ROBIN,
                                            PF_LB_LEAST_REQUEST, PF_LB_LEAST_RESPONSE_TIME,
                                            PF_LB_RANDOM,        PF_LB_RING_HASH,
                                            PF_LB_MAGLEV};

/* A random subset of ten addresses with random weights and health. */
static pf_endpoint_set *publish_random(pf_endpoint_slot *slot, uint64_t *rng) {
    pf_endpoint eps[10];
    size_t n = 0;
    for (int i = 0; i < 10; i++) {
        *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t r = *rng >> 20;
        if (r % 3 == 0)
            continue;
        char spec[64];
        snprintf(spec, sizeof spec, "10.0.0.%d:80/%u%s", i + 1, (unsigned)(r / 3 % 5) + 1,
                 r / 15 % 4 == 0 ? "/down" : "");
        eps[n++] = endpoint(spec);
    }
    pf_endpoint_set *set = discovery_set_new(eps, n);
    CU_ASSERT_FATAL(set != NULL);
    discovery_slot_publish(slot, set); /* an equal set is dropped; fine */
    return discovery_slot_acquire(slot);
}

static void test_every_policy_under_churn_picks_only_current_healthy_endpoints(void) {
    for (size_t p = 0; p < ARRAY_LEN(all_policies); p++) {
        pf_endpoint_slot *slot = discovery_slot_new("churn");
        pf_config_cluster cfg = cluster_config(all_policies[p]);
        cfg.slow_start_ms = 50;
        cfg.hash_table_size = all_policies[p] == PF_LB_MAGLEV ? 251 : 16;
        pf_balancer *b = new_balancer_for(&cfg);
        uint64_t rng = p + 1;
        pf_endpoint_set *prev = NULL;
        const pf_endpoint *in_flight = NULL; /* from prev, answered after the swap */
        for (int swap = 0; swap < 300; swap++) {
            pf_endpoint_set *set = publish_random(slot, &rng);
            if (in_flight)
                balancer_on_response(b, in_flight, 1000 + (uint64_t)swap);
            for (uint64_t i = 0; i < 40; i++) {
                pf_pick_context ctx = {.hash = lb_test_key(i, swap), .has_hash = i % 5 != 0};
                const pf_endpoint *ep = balancer_pick(b, set, &ctx);
                if (set->healthy_count == 0) {
                    CU_ASSERT_PTR_NULL(ep);
                    continue;
                }
                if (!PF_CHECK(ep && ep >= set->endpoints && ep < set->endpoints + set->count &&
                                  ep->healthy,
                              "%s swap %d: pick is not a healthy endpoint of the current set",
                              config_lb_policy_name(all_policies[p]), swap))
                    break;
                balancer_on_response(b, ep, 500 + i);
                in_flight = ep;
            }
            discovery_set_unref(prev);
            prev = set;
            if (set->healthy_count == 0)
                in_flight = NULL;
        }
        balancer_free(b);
        discovery_set_unref(prev);
        discovery_slot_free(slot);
    }
}

/* Two worker threads pick (and report latencies) while the main thread publishes new sets:
 * the hash tables are shared through the group, everything else is per worker. */
typedef struct worker_arg {
    pf_balancer *b;
    pf_endpoint_slot *slot;
    _Atomic bool *stop;
    size_t picks, bad;
} worker_arg;

static void *churn_worker(void *p) {
    worker_arg *a = p;
    pf_set_cache cache;
    discovery_cache_init(&cache, a->slot);
    for (uint64_t i = 0; !atomic_load(a->stop); i++) {
        pf_endpoint_set *set = discovery_cache_get(&cache);
        pf_pick_context ctx = {.hash = lb_test_key(i, 0), .has_hash = true};
        const pf_endpoint *ep = balancer_pick(a->b, set, &ctx);
        a->picks++;
        if (set && set->healthy_count > 0 &&
            !(ep && ep >= set->endpoints && ep < set->endpoints + set->count && ep->healthy))
            a->bad++;
        if (ep)
            balancer_on_response(a->b, ep, 100 + i % 1000);
    }
    discovery_cache_release(&cache);
    return NULL;
}

static void test_every_policy_under_churn_from_worker_threads(void) {
    for (size_t p = 0; p < ARRAY_LEN(all_policies); p++) {
        pf_endpoint_slot *slot = discovery_slot_new("threads");
        pf_config_cluster cfg = cluster_config(all_policies[p]);
        cfg.slow_start_ms = 20;
        cfg.hash_table_size = all_policies[p] == PF_LB_MAGLEV ? 1009 : 64;
        pf_balancer_group *g = balancer_group_new(&cfg);
        CU_ASSERT_FATAL(g != NULL);
        _Atomic bool stop = false;
        worker_arg args[2];
        pthread_t threads[2];
        uint64_t rng = 77 + p;
        discovery_set_unref(publish_random(slot, &rng));
        for (int t = 0; t < 2; t++) {
            args[t] = (worker_arg){balancer_new(g), slot, &stop, 0, 0};
            CU_ASSERT_FATAL(args[t].b != NULL);
            CU_ASSERT_FATAL(pthread_create(&threads[t], NULL, churn_worker, &args[t]) == 0);
        }
        balancer_group_unref(g);
        for (int swap = 0; swap < 200; swap++) {
            discovery_set_unref(publish_random(slot, &rng));
            for (volatile int spin = 0; spin < 20000; spin++)
                ;
        }
        atomic_store(&stop, true);
        for (int t = 0; t < 2; t++) {
            pthread_join(threads[t], NULL);
            PF_CHECK(args[t].bad == 0, "%s: worker %d made %zu bad picks of %zu",
                     config_lb_policy_name(all_policies[p]), t, args[t].bad, args[t].picks);
            balancer_free(args[t].b);
        }
        discovery_slot_free(slot);
    }
}

PF_UNIT_MAIN(
    "balancer_load", PF_UNIT_TEST(test_random_shares_follow_weights_and_skip_unhealthy),
    PF_UNIT_TEST(test_least_request_idle_picks_spread_evenly_without_herding),
    PF_UNIT_TEST(test_least_request_never_picks_the_busiest_endpoint),
    PF_UNIT_TEST(test_least_request_keeps_concurrency_level_across_workers),
    PF_UNIT_TEST(test_least_request_weights_shape_idle_share_and_concurrency),
    PF_UNIT_TEST(test_least_response_time_sends_a_slow_endpoint_little),
    PF_UNIT_TEST(test_least_response_time_spike_counts_at_once_and_recovery_decays),
    PF_UNIT_TEST(test_least_response_time_tries_new_endpoints_and_keeps_averages_across_sets),
    PF_UNIT_TEST(test_slow_start_ramps_a_new_endpoint_under_every_policy),
    PF_UNIT_TEST(test_slow_start_ramps_a_recovered_endpoint),
    PF_UNIT_TEST(test_every_policy_under_churn_picks_only_current_healthy_endpoints),
    PF_UNIT_TEST(test_every_policy_under_churn_from_worker_threads))
